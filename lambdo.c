/*
 * lambdo - turns messages on an Amazon SQS queue into Fly.io Machines.
 *
 * This file is the command line and the main loop: receive, validate, group, create,
 * delete, repeat. Everything it calls is in its own module; the only state is the
 * configuration (immutable after start-up) and the struct daemon on main's stack.
 *
 * Shutdown: SIGTERM and SIGINT are blocked and read through a signalfd. That fd is the
 * receive client's cancel_fd, so a pending signal aborts the long poll at once, while the
 * clients that create Machines and delete messages have none: a create or delete that has
 * started is finished, so nothing is lost or done twice by the stop.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "cJSON.h"
#include "config.h"
#include "fly.h"
#include "group.h"
#include "http.h"
#include "log.h"
#include "sqs.h"
#include "tls.h"

#define EXIT_FAILED 1
#define EXIT_USAGE 2

/* A group's events file may not exceed this; SQS bodies are at most 1 MiB each. */
#define MAX_EVENTS_FILE (12u * 1024 * 1024)
/* Back-off after a failed ReceiveMessage: doubles from 1 s up to this. */
#define RECEIVE_BACKOFF_MAX_MS 30000u

static const char usage[] =
    "usage: lambdo [--help | --version]\n"
    "\n"
    "Long-polls an SQS queue and runs each group of events (same image, size and command)\n"
    "in a Fly Machine whose /tmp/events.json holds the group's message bodies, byte for byte.\n"
    "Messages are deleted once their Machine was created.\n"
    "\n"
    "Configuration (environment):\n"
    "  LAMBDO_SQS_QUEUE_URL             queue URL (required)\n"
    "  LAMBDO_FLY_TOKEN | FLY_API_TOKEN   Fly API token (required)\n"
    "  LAMBDO_FLY_APP | FLY_APP_NAME    app the Machines are created in (required)\n"
    "  LAMBDO_FLY_REGION | FLY_REGION   primary region (required unless LAMBDO_FLY_REGIONS)\n"
    "  LAMBDO_FLY_REGIONS               comma list of regions tried after the primary\n"
    "  LAMBDO_FLY_API_URL               Machines API base (https://api.machines.dev)\n"
    "  LAMBDO_SQS_LONG_POLL_SECONDS     0 to 20 (10)\n"
    "  LAMBDO_EVENTS_PER_MACHINE        1 to 10 (5)\n"
    "  LAMBDO_VISIBILITY_TIMEOUT        seconds a received message stays hidden (30)\n"
    "  LAMBDO_ENV                       production: JSON log lines (local)\n"
    "  LAMBDO_LOG_LEVEL                 debug, info, warn, error (info)\n"
    "  AWS_REGION | AWS_DEFAULT_REGION  signing region (from the queue URL's host)\n"
    "  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN   credentials\n"
    "  AWS_ENDPOINT_URL_SQS | AWS_ENDPOINT_URL   SQS endpoint override (emulators)\n"
    "  SSL_CERT_FILE                    CA bundle (/etc/ssl/certs/ca-certificates.crt)\n"
    "\n"
    "Exit status: 0 ok or stopped by SIGTERM/SIGINT, 1 failure, 2 usage or configuration.\n";

struct daemon {
    const struct config *cfg;
    struct tls_anchors anchors;
    struct http_client receive_http;  /* cancelled by a stop signal */
    struct http_client ack_http;      /* deletes: finished even while stopping */
    struct http_client fly_http;      /* creates: finished even while stopping */
    struct sqs_client receiver;
    struct sqs_client acker;
    struct fly_target fly;
    int signal_fd;
    int first_receive_done;
};

static const char *env_get(const char *name, void *ctx)
{
    (void)ctx;
    return getenv(name);
}

static int stop_requested(const struct daemon *d)
{
    struct pollfd p = { .fd = d->signal_fd, .events = POLLIN };

    return poll(&p, 1, 0) > 0;
}

/* Waits ms, or less if a stop signal arrives. */
static void pause_ms(const struct daemon *d, unsigned ms)
{
    struct pollfd p = { .fd = d->signal_fd, .events = POLLIN };

    while (poll(&p, 1, (int)ms) < 0 && errno == EINTR)
        ;
}

static int signals_open(struct lerr *e)
{
    sigset_t set;
    int fd;

    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0 ||
        (fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK)) < 0)
        return lerr_set(e, LERR_IO, "cannot set up signal handling: %s", strerror(errno));
    signal(SIGPIPE, SIG_IGN);
    return fd;
}

static int daemon_open(struct daemon *d, const struct config *cfg, struct lerr *e)
{
    struct sigv4_credentials creds = {
        .access_key_id = cfg->aws_access_key_id,
        .secret_access_key = cfg->aws_secret_access_key,
        .session_token = cfg->aws_session_token,
    };

    memset(d, 0, sizeof *d);
    d->cfg = cfg;
    d->signal_fd = -1;
    if (tls_anchors_load(&d->anchors, cfg->ca_file, e) < 0)
        return -1;
    if ((d->signal_fd = signals_open(e)) < 0)
        return -1;
    http_client_init(&d->receive_http, &d->anchors);
    http_client_init(&d->ack_http, &d->anchors);
    http_client_init(&d->fly_http, &d->anchors);
    d->receive_http.cancel_fd = d->signal_fd;
    sqs_client_init(&d->receiver, &d->receive_http, &cfg->sqs_endpoint, cfg->queue_url,
                    cfg->aws_region, &creds);
    sqs_client_init(&d->acker, &d->ack_http, &cfg->sqs_endpoint, cfg->queue_url,
                    cfg->aws_region, &creds);
    d->fly.base = &cfg->fly_api;
    d->fly.app = cfg->fly_app;
    d->fly.token = cfg->fly_token;
    d->fly.stop_fd = &d->signal_fd;  /* a stop ends 429 waits, never a request in flight */
    return 0;
}

static void daemon_close(struct daemon *d)
{
    http_client_close(&d->receive_http);
    http_client_close(&d->ack_http);
    http_client_close(&d->fly_http);
    tls_anchors_free(&d->anchors);
    if (d->signal_fd >= 0)
        close(d->signal_fd);
}

/* Deletes the group's messages; every entry that could not be deleted is logged (its
 * message will come back and run again: at least once, never lost). */
static void delete_group(struct daemon *d, const struct sqs_batch *b, const size_t *idx,
                         size_t n, const char *gid)
{
    struct sqs_entry entries[SQS_MAX_MESSAGES];
    struct lerr e;

    memset(entries, 0, sizeof entries);
    for (size_t i = 0; i < n; i++) {
        entries[i].receipt_handle = b->messages[idx[i]].receipt_handle;
        entries[i].message_id = b->messages[idx[i]].message_id;
    }
    sqs_delete_batch(&d->acker, entries, n, &e);
    for (size_t i = 0; i < n; i++) {
        if (entries[i].status == SQS_ENTRY_STALE)
            log_warn("group %s: message %s was not deleted: %s: %s (it was received again "
                     "elsewhere; it may run twice)", gid, entries[i].message_id, entries[i].code,
                     entries[i].message);
        else if (entries[i].status != SQS_ENTRY_OK)
            log_error("group %s: message %s was not deleted: %s: %s (it will run again after "
                      "the visibility timeout)", gid, entries[i].message_id, entries[i].code,
                      entries[i].message);
    }
}

/* Hands messages back to the queue at once instead of after the visibility timeout. */
static void release_messages(struct daemon *d, const struct sqs_batch *b, const size_t *idx,
                             size_t n)
{
    struct sqs_entry entries[SQS_MAX_MESSAGES];
    struct lerr e;

    if (n == 0)
        return;
    memset(entries, 0, sizeof entries);
    for (size_t i = 0; i < n; i++) {
        entries[i].receipt_handle = b->messages[idx[i]].receipt_handle;
        entries[i].message_id = b->messages[idx[i]].message_id;
        entries[i].visibility_timeout = 0;
    }
    if (sqs_change_visibility_batch(&d->acker, entries, n, &e) < 0)
        log_warn("could not return %zu messages to the queue early (%s); they return after "
                 "the visibility timeout", n, e.msg);
}

/* One Machine for one group; on success its messages are deleted. */
static void run_group(struct daemon *d, const struct sqs_batch *b, const struct event *ev,
                      const size_t *ev_msg, const struct group *g)
{
    size_t msg_idx[SQS_MAX_MESSAGES];
    char gid[GROUP_ID_LEN + 1];
    struct fly_machine machine;
    struct fly_machine_spec spec;
    char *events;
    size_t events_len;
    struct lerr e;

    for (size_t i = 0; i < g->count; i++)
        msg_idx[i] = ev_msg[g->members[i]];
    group_id(ev, g, gid);
    if (group_events_json_alloc(ev, g, MAX_EVENTS_FILE, &events, &events_len, &e) < 0) {
        log_error("group %s (%zu events): %s; its messages return after the visibility timeout",
                  gid, g->count, e.msg);
        return;
    }
    memset(&spec, 0, sizeof spec);
    spec.image = g->image;
    spec.preset = g->preset;
    spec.command = g->command;
    spec.events = events;
    spec.events_len = events_len;
    spec.group_id = gid;
    if (fly_create_machine(&d->fly_http, &d->fly, &spec, d->cfg->regions, d->cfg->num_regions,
                           &machine, &e) < 0) {
        log_error("group %s (%zu events, image %s): no Machine created: %s; its messages return "
                  "after the visibility timeout", gid, g->count, g->image, e.msg);
        free(events);
        return;
    }
    free(events);
    log_info("group %s: machine %s created in %s for %zu events (image %s, size %s)", gid,
             machine.id, machine.region, g->count, g->image, g->preset->name);
    delete_group(d, b, msg_idx, g->count, gid);
}

/* Messages SQS itself flagged (MD5 mismatch, unusable attributes) never reach grouping. */
static size_t collect_events(const struct sqs_batch *b, struct event *ev, size_t *ev_msg)
{
    size_t n = 0;

    for (size_t i = 0; i < b->count; i++) {
        const struct sqs_message *m = &b->messages[i];
        if (m->flags) {
            log_warn("message %s is invalid (receive %lu): %s; not dispatched, not deleted",
                     m->message_id, m->receive_count, m->problem);
            continue;
        }
        ev[n] = (struct event){ .id = m->message_id, .body = m->body, .body_len = m->body_len,
                                .image = m->image, .size = m->size, .command = m->command };
        ev_msg[n++] = i;
    }
    return n;
}

static void dispatch_batch(struct daemon *d, const struct sqs_batch *b)
{
    struct event ev[SQS_MAX_MESSAGES];
    size_t ev_msg[SQS_MAX_MESSAGES], members[SQS_MAX_MESSAGES];
    struct group groups[SQS_MAX_MESSAGES];
    struct lerr verdicts[SQS_MAX_MESSAGES], e;
    struct group_plan plan = { .groups = groups, .members = members, .verdicts = verdicts };
    size_t n = collect_events(b, ev, ev_msg);

    if (n == 0)
        return;
    if (group_build(ev, n, (size_t)d->cfg->events_per_machine, &plan, &e) < 0) {
        log_error("cannot group %zu messages: %s", n, e.msg);
        return;
    }
    for (size_t i = 0; i < n; i++)
        if (verdicts[i].kind != LERR_NONE)
            log_warn("message %s is invalid (receive %lu): %s; not dispatched, not deleted",
                     ev[i].id, b->messages[ev_msg[i]].receive_count, verdicts[i].msg);
    for (size_t gi = 0; gi < plan.ngroups; gi++) {
        if (stop_requested(d)) {
            size_t idx[SQS_MAX_MESSAGES], k = 0;
            for (size_t r = gi; r < plan.ngroups; r++)
                for (size_t m = 0; m < groups[r].count; m++)
                    idx[k++] = ev_msg[groups[r].members[m]];
            log_info("stopping: %zu messages not dispatched are returned to the queue", k);
            release_messages(d, b, idx, k);
            return;
        }
        run_group(d, b, ev, ev_msg, &groups[gi]);
    }
}

/* Returns 0 to go on, -1 when lambdo should exit with a failure. */
static int receive_once(struct daemon *d, unsigned *backoff_ms)
{
    struct sqs_receive_opts o = {
        .max_messages = SQS_MAX_MESSAGES,
        .wait_seconds = d->cfg->long_poll_seconds,
        .visibility_timeout = d->cfg->visibility_timeout,
    };
    struct sqs_batch b = { 0 };
    struct lerr e;

    if (sqs_receive(&d->receiver, &o, &b, &e) < 0) {
        if (e.kind == LERR_CANCELLED)
            return 0;
        /* Wrong credentials or a missing queue at start-up will not mend themselves: say so
         * and exit, so a deploy fails visibly. Later, the same errors may be passing (a
         * rotated key, a recreated queue), so keep trying. */
        if (!d->first_receive_done && !d->receiver.last_error.retryable) {
            log_error("%s", e.msg);
            return -1;
        }
        log_error("%s; retrying in %u ms", e.msg, *backoff_ms);
        pause_ms(d, *backoff_ms);
        *backoff_ms = *backoff_ms * 2 > RECEIVE_BACKOFF_MAX_MS ? RECEIVE_BACKOFF_MAX_MS
                                                               : *backoff_ms * 2;
        return 0;
    }
    d->first_receive_done = 1;
    *backoff_ms = 1000;
    if (b.count > 0) {
        log_debug("received %zu messages", b.count);
        dispatch_batch(d, &b);
    }
    sqs_batch_free(&b);
    return 0;
}

static int daemon_run(struct daemon *d)
{
    unsigned backoff_ms = 1000;
    char regions[256] = "";

    for (size_t i = 0; i < d->cfg->num_regions; i++) {
        if (i)
            strncat(regions, ",", sizeof regions - strlen(regions) - 1);
        strncat(regions, d->cfg->regions[i], sizeof regions - strlen(regions) - 1);
    }
    log_info("lambdo %s starting: queue %s, app %s, regions %s, api %s://%s%s", LAMBDO_VERSION,
             d->cfg->queue_url, d->cfg->fly_app, regions, d->cfg->fly_api.tls ? "https" : "http",
             d->cfg->fly_api.authority, strcmp(d->cfg->fly_api.path, "/") ? d->cfg->fly_api.path : "");
    while (!stop_requested(d))
        if (receive_once(d, &backoff_ms) < 0)
            return EXIT_FAILED;
    log_info("stopped by signal");
    return 0;
}

int main(int argc, char **argv)
{
    struct config cfg;
    struct daemon d;
    struct lerr e;
    int status;

    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        printf("lambdo %s (BearSSL %s, cJSON %s)\n", LAMBDO_VERSION, LAMBDO_BEARSSL_VERSION,
               cJSON_Version());
        return 0;
    }
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs(usage, stdout);
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "lambdo: unknown argument \"%s\"\n%s", argv[1], usage);
        return EXIT_USAGE;
    }
    if (config_load(&cfg, env_get, NULL, &e) < 0) {
        fprintf(stderr, "lambdo: configuration: %s\n", e.msg);
        return EXIT_USAGE;
    }
    log_setup(cfg.log_level, cfg.json_logs);
    if (daemon_open(&d, &cfg, &e) < 0) {
        fprintf(stderr, "lambdo: %s\n", e.msg);
        daemon_close(&d);
        return e.kind == LERR_INVALID || e.kind == LERR_IO ? EXIT_USAGE : EXIT_FAILED;
    }
    status = daemon_run(&d);
    daemon_close(&d);
    return status;
}
