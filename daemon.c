#include "daemon.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "creds.h"
#include "err.h"
#include "fly.h"
#include "group.h"
#include "http.h"
#include "local.h"
#include "log.h"
#include "metrics.h"
#include "pool.h"
#include "ratelimit.h"
#include "sqs.h"
#include "tls.h"

#define EXIT_FAILED 1
#define EXIT_USAGE 2

#define RECEIVE_BACKOFF_BASE_MS 1000u   /* after a failed ReceiveMessage: full jitter */
#define RECEIVE_BACKOFF_MAX_MS 30000u
#define WINDOW_MAX_BATCHES 128         /* 1000 events per Machine at 10 a receive, and room */
#define JOB_STACK (256 * 1024)
#define WAIT_MAX_S 60                  /* Fly's wait endpoint takes at most 60 s a call */
#define POOL_LEASE_TTL_S 60            /* a lambdo that dies holds its leases this long at most */
#define POOL_SKIP_MS 2000              /* a Machine another holds or that runs: others first */
#define POOL_TRIES 8                   /* Machines one group tries before it goes back */

struct daemon {
    const struct config *cfg;
    struct tls_anchors anchors;
    struct tls_sessions sessions;      /* every client's, so that a worker's first connection
                                          resumes the session another thread negotiated */
    int signal_fd;
    struct creds_provider creds;       /* thread-safe; refreshes itself */
    struct http_client receive_http;   /* the long poll: cancelled by a stop signal */
    struct sqs_client receiver;
    struct http_client main_http;      /* the main thread's other calls: not cancelled */
    struct sqs_client main_sqs;        /* its deletes and visibility changes (a client per
                                          thread: its signing key is derived once a day) */
    struct ratelimit create_rl, get_rl;
    struct fly_target fly;             /* shared, read-only after start-up */
    struct fly_target follow;          /* fly without stop_fd, for following a Machine after
                                          its create: during the shutdown grace time these
                                          calls are how lambdo learns that it finished (a
                                          wait in flight is still ended by the signal,
                                          through the client's cancel_fd, until stopping) */
    struct metrics metrics;            /* counted by every thread; served if configured */
    struct pool pool;                  /* LAMBDO_POOL: the warm Machines */

    pthread_mutex_t mu;                /* guards what follows */
    pthread_cond_t changed;            /* a job ended, or the stop was seen: for the main thread */
    pthread_cond_t work;               /* a job was queued, or the workers are to quit */
    struct job *queue, **queue_tail;   /* jobs waiting for a worker, oldest first */
    int jobs;                          /* queued or running */
    int running;                       /* jobs a worker runs: they hold a Machine slot */
    int workers;                       /* worker threads, started as jobs need them */
    int quitting;                      /* the workers are to end once the queue is empty */
    int64_t stop_at_ms;                /* when the stop signal was first seen, 0 before */
    int first_receive_done;
    int once;                          /* --once: stop when the queue answers empty */
    unsigned long unhandled;           /* --once: messages not handled that have no entry
                                          in the book (out of memory) */
    struct once_msg *book;             /* --once: every message that failed, newest first */
    struct job *held;                  /* --once: messages kept out of the rest of the run
                                          (main thread only) */
};

/* --once: what became of one message in this run, so that messages are counted, not
 * deliveries, and one that failed ONCE_TRIES times is not tried again. */
struct once_msg {
    struct once_msg *next;
    int failures;                      /* 0: handled (at its last try) */
    int64_t hidden_until_ms;           /* failed: when the queue shows it again */
    char id[];
};

#define ONCE_TRIES 2                   /* --once: a failed message is tried once more */

struct job_msg {
    const char *id;
    const char *receipt;
};

/* A group to run, in one allocation with its strings (but the events). */
struct job {
    struct daemon *d;
    char gid[GROUP_ID_LEN + 1];
    struct fly_machine_spec spec;      /* its Machine (the local backend's child takes its
                                          command, events and context file too) */
    char *events, *meta;               /* the files spec points to, owned */
    int64_t visible_until_ms;          /* when the messages' visibility runs out */
    struct job *next;                  /* in d->queue or d->held */
    char pool_key[GROUP_ID_LEN + 1];   /* LAMBDO_POOL: its Machines' key */
    struct pool_machine *pm;           /* LAMBDO_POOL: the Machine it holds, or NULL */
    struct fly_target follow;          /* d->follow, or a pooled Machine's (its limits, nonce) */
    int killed;                        /* job_kill destroyed its Machine */
    struct http_client *http;          /* its thread's: the main thread's, then a worker's */
    struct sqs_client *sqs;            /* that thread's, on that HTTP client */
    int beating;                       /* queued: the main thread heartbeats it, under mu */
    size_t count;
    struct job_msg msgs[];
};

/* ---------------------------------------------------------------------------------------- */

static int64_t now_ms(void)
{
    return ratelimit_now_ns() / 1000000;
}

/* When the stop signal was first seen (the first caller to see it records it), or 0 before
 * it came. The signal stays pending (nobody reads the signalfd), so every thread can poll it. */
static int64_t daemon_stopping(struct daemon *d)
{
    struct pollfd p = { .fd = d->signal_fd, .events = POLLIN };
    int64_t at;

    if (poll(&p, 1, 0) <= 0)
        return 0;
    pthread_mutex_lock(&d->mu);
    if (!d->stop_at_ms) {
        d->stop_at_ms = now_ms();
        pthread_cond_broadcast(&d->changed);
    }
    at = d->stop_at_ms;
    pthread_mutex_unlock(&d->mu);
    return at;
}

/* ------------------------------------------------------------------ --once book -------- */

/* --once: the book's entry for a message, added if new and add is set; NULL if out of
 * memory or not there. Under mu. Only failed messages are added: a long run with few
 * failures keeps the book, and these scans, short. */
static struct once_msg *once_entry(struct daemon *d, const char *id, int add)
{
    struct once_msg *m;

    for (m = d->book; m; m = m->next)
        if (strcmp(m->id, id) == 0)
            return m;
    if (!add || !(m = calloc(1, sizeof *m + strlen(id) + 1)))
        return NULL;
    strcpy(m->id, id);
    m->next = d->book;
    d->book = m;
    return m;
}

/* --once: a message was handled to the end (failures 0), or failed once more (+1, hidden
 * in the queue until hidden_until), or can never be (ONCE_TRIES: invalid). */
static void once_record(struct daemon *d, const char *id, int failures, int64_t hidden_until)
{
    struct once_msg *m;

    if (!d->once)
        return;
    pthread_mutex_lock(&d->mu);
    m = once_entry(d, id, failures != 0);
    if (!m && failures)
        d->unhandled++;
    else if (m) {
        m->failures = failures == 1 ? m->failures + 1 : failures;
        m->hidden_until_ms = failures == 1 ? hidden_until : 0;
    }
    pthread_mutex_unlock(&d->mu);
}

/* --once: whether a message just received is kept out of the rest of the run (it failed
 * ONCE_TRIES times); from now on d->held accounts for it. */
static int once_held(struct daemon *d, const char *id)
{
    struct once_msg *m;
    int held;

    if (!d->once)
        return 0;
    pthread_mutex_lock(&d->mu);
    m = once_entry(d, id, 0);
    held = m && m->failures >= ONCE_TRIES;
    if (held)
        m->hidden_until_ms = 0;
    pthread_mutex_unlock(&d->mu);
    return held;
}

/* --once: failed messages that the queue still hides after `after`, as far as this run
 * knows; with INT64_MIN, every message not handled (those out of the book too), each
 * counted once. */
static long once_failed(struct daemon *d, int64_t after)
{
    long n;

    pthread_mutex_lock(&d->mu);
    n = after == INT64_MIN ? (long)d->unhandled : 0;
    for (struct once_msg *m = d->book; m; m = m->next)
        n += m->failures > 0 && m->hidden_until_ms > after;
    pthread_mutex_unlock(&d->mu);
    return n;
}

/* ---------------------------------------------------------------- acknowledging -------- */

/* A thread's HTTP client (its TLS sessions shared) and an SQS client of the daemon's
 * queue on it. */
static void clients_open(struct daemon *d, struct http_client *http, struct sqs_client *s)
{
    http_client_init(http, &d->anchors);
    http->sessions = &d->sessions;
    sqs_client_init(s, http, &d->cfg->sqs_endpoint, d->cfg->queue_url, d->cfg->aws_region,
                    NULL);
    s->provider = &d->creds;
    s->metrics = &d->metrics;
}

/* Deletes messages (counted METRICS_DELETED), or else changes their visibility, 10 at a
 * time, on the thread's SQS client, whose HTTP client a stop does not cancel (a delete or a
 * visibility change that has started is finished), counting each message it was done for in
 * `counted` (METRICS_NCOUNTERS: not counted, for heartbeats). Returns the number of messages
 * for which it failed (stale handles are not failures: logged). */
static size_t batch_all(struct daemon *d, struct sqs_client *s, const char *gid,
                        const struct job_msg *msgs, size_t count, int visibility,
                        enum metrics_counter counted)
{
    int delete = counted == METRICS_DELETED;
    size_t failed = 0;

    for (size_t off = 0; off < count; off += SQS_MAX_MESSAGES) {
        struct sqs_entry en[SQS_MAX_MESSAGES];
        size_t n = count - off < SQS_MAX_MESSAGES ? count - off : SQS_MAX_MESSAGES;
        struct lerr e;

        for (size_t i = 0; i < n; i++)
            en[i] = (struct sqs_entry){ .receipt_handle = msgs[off + i].receipt,
                                        .message_id = msgs[off + i].id,
                                        .visibility_timeout = visibility };
        sqs_batch_call(s, delete ? SQS_OP_DELETE : SQS_OP_CHANGE_VISIBILITY, en, n, &e);
        for (size_t i = 0; i < n; i++) {
            if (en[i].status == SQS_ENTRY_OK)
                metrics_count(&d->metrics, counted, 1);
            if (en[i].status == SQS_ENTRY_STALE) {
                log_warn("group %s: message %s: %s: %s (received again elsewhere; it may run "
                         "twice)", gid, en[i].message_id, en[i].code, en[i].message);
            } else if (en[i].status != SQS_ENTRY_OK) {
                failed++;
                log_error("group %s: message %s was not %s: %s: %s (it comes back after the "
                          "visibility timeout)", gid, en[i].message_id,
                          delete ? "deleted" : "returned", en[i].code, en[i].message);
            }
        }
    }
    return failed;
}

/* What a runner leaves its job's messages to: job_end does it, the one acknowledgement
 * path of every backend. */
enum job_end {
    JOB_DONE,    /* handled (the Machine was created, or exited 0): deleted */
    JOB_RETURN,  /* stopping: back to the queue at once */
    JOB_RETRY,   /* failed: back after LAMBDO_RETRY_DELAY */
    JOB_LEFT,    /* failed: they come back after the visibility timeout */
};

static void job_end(struct job *j, enum job_end how)
{
    int back = how == JOB_RETURN || how == JOB_RETRY;
    int delay = how == JOB_RETRY ? j->d->cfg->retry_delay : 0;
    int ok = how == JOB_DONE &&
             batch_all(j->d, j->sqs, j->gid, j->msgs, j->count, 0, METRICS_DELETED) == 0;
    /* --once: handed back, visible again after `delay` seconds; a failure not returned,
     * hidden till its visibility runs out */
    int64_t hidden_until = back ? now_ms() + (int64_t)delay * 1000 : j->visible_until_ms;

    if (ok)
        log_debug("group %s: %zu messages deleted", j->gid, j->count);
    /* the outcome is in the book before the messages go back: the receiver must know of a
     * failure by the time it can receive them again */
    for (size_t i = 0; i < j->count; i++)
        once_record(j->d, j->msgs[i].id, ok ? 0 : 1, hidden_until);
    if (back && batch_all(j->d, j->sqs, j->gid, j->msgs, j->count, delay, METRICS_RETURNED) == 0)
        log_info("group %s: %zu messages returned to the queue (visible in %d s)", j->gid,
                 j->count, delay);
}

/* Milliseconds until messages visible until `until` need a heartbeat: when a third of
 * their visibility has passed. */
static int64_t keepalive_due(const struct daemon *d, int64_t until)
{
    return until - (int64_t)d->cfg->visibility_timeout * 1000 * 2 / 3 - now_ms();
}

/* Keeps a job's messages hidden: once due, extend their visibility to a full
 * LAMBDO_VISIBILITY_TIMEOUT from now. Called between every wait, and (ctx: the job) by
 * fly.c, ratelimit.c and local.c while they wait (rate limit, 429, a child). */
static void pool_lease_refresh(struct job *j);

static void job_keepalive(void *ctx)
{
    struct job *j = ctx;
    int vis = j->d->cfg->visibility_timeout;
    int64_t t = now_ms();

    pool_lease_refresh(j);
    if (keepalive_due(j->d, j->visible_until_ms) > 0)
        return;
    if (batch_all(j->d, j->sqs, j->gid, j->msgs, j->count, vis, METRICS_NCOUNTERS) == 0)
        j->visible_until_ms = t + (int64_t)vis * 1000;
}

/* ------------------------------------------------------------------------- a job ------- */

static void job_free(struct job *j)
{
    free(j->events);
    free(j->meta);
    free(j);
}

/* JOB_DONE when the Machine was created, else what becomes of the messages. */
static enum job_end job_create(struct job *j, const struct fly_machine_spec *spec,
                               struct fly_machine *m)
{
    struct daemon *d = j->d;
    struct fly_target t = d->fly;
    struct lerr e;

    t.idle = job_keepalive;
    t.idle_ctx = j;
    t.create_prepaid = 1;
    t.unlimited_429_retries = 1;
    /* The turn is taken first, with heartbeats while waiting for it (job_keepalive). */
    if (ratelimit_wait_idle(&d->create_rl, 0, &d->signal_fd, 1, job_keepalive, j, &e) < 0 ||
        fly_create_machine(j->http, &t, spec, d->cfg->regions, d->cfg->num_regions, m,
                           &e) < 0) {
        if (e.kind != LERR_CANCELLED) {
            log_error("group %s (%zu events, image %s): no Machine created: %s; its messages "
                      "return after the visibility timeout", j->gid, j->count, j->spec.image,
                      e.msg);
            return JOB_LEFT;
        }
        log_info("group %s: stopping before its Machine was created", j->gid);
        return JOB_RETURN;
    }
    metrics_count_region(&d->metrics, METRICS_MACHINES_CREATED, m->region);
    log_info("group %s: %smachine %s created in %s for %zu events (image %s, size %s)", j->gid,
             spec->skip_launch ? "stopped pooled " : "", m->id, m->region, j->count, spec->image,
             spec->preset->name);
    return JOB_DONE;
}

/* Destroys a Machine that ran past LAMBDO_MACHINE_TIMEOUT. */
static void job_kill(struct job *j, const struct fly_machine *m)
{
    struct lerr e;

    if (fly_stop_machine(j->http, &j->follow, m->id, NULL, &e) < 0)
        log_warn("group %s: stopping machine %s: %s", j->gid, m->id, e.msg);
    if (fly_destroy_machine(j->http, &j->follow, m->id, 1, NULL, &e) < 0)
        log_warn("group %s: destroying machine %s: %s", j->gid, m->id, e.msg);
    j->killed = 1;
}

enum follow { FOLLOW_EXITED, FOLLOW_TIMEOUT, FOLLOW_SHUTDOWN };

/* Seconds for the next wait: the Fly maximum, the next heartbeat, the lease's refresh and
 * the deadline (the Machine's or the shutdown's), whichever comes first; at least 1. */
static int wait_seconds(const struct job *j, int64_t deadline)
{
    int64_t t = now_ms(), ms = deadline - t;

    if (ms > (int64_t)WAIT_MAX_S * 1000)
        ms = (int64_t)WAIT_MAX_S * 1000;
    if (keepalive_due(j->d, j->visible_until_ms) < ms)
        ms = keepalive_due(j->d, j->visible_until_ms);
    if (j->pm && j->pm->nonce[0] && j->pm->lease_due_ms - t < ms)
        ms = j->pm->lease_due_ms - t;
    return ms < 1000 ? 1 : (int)((ms + 999) / 1000);
}

/* Waits for the Machine to stop, heartbeating the messages, until it exits, runs past
 * LAMBDO_MACHINE_TIMEOUT, or the shutdown deadline passes. */
static enum follow job_follow(struct job *j, const struct fly_machine *m, int64_t started)
{
    struct daemon *d = j->d;
    const struct config *cfg = d->cfg;
    int64_t timeout_at = cfg->machine_timeout ? started + (int64_t)cfg->machine_timeout * 1000
                                              : INT64_MAX;

    for (;;) {
        int64_t stop_at = daemon_stopping(d);  /* 0: not stopping */
        int64_t end = stop_at ? stop_at + (int64_t)cfg->shutdown_timeout * 1000 : INT64_MAX;
        struct fly_call_result w;
        struct lerr e;
        int rc;

        if (now_ms() >= timeout_at)
            return FOLLOW_TIMEOUT;
        if (now_ms() >= end)
            return FOLLOW_SHUTDOWN;
        job_keepalive(j);
        /* Before a stop, a wait is cancelled by the signal; during the shutdown grace time
         * it must not be, or it would end at once, over and over. */
        j->http->cancel_fd = stop_at ? -1 : d->signal_fd;
        rc = fly_wait_machine(j->http, &j->follow, m->id, m->instance_id, "stopped",
                              wait_seconds(j, timeout_at < end ? timeout_at : end), &w, &e);
        j->http->cancel_fd = -1;
        if (rc == 0 && (w.outcome == FLY_CALL_OK || w.outcome == FLY_CALL_GONE))
            return FOLLOW_EXITED;
        if (rc < 0 && e.kind != LERR_CANCELLED) {
            log_warn("group %s: waiting for machine %s: %s; trying again", j->gid, m->id, e.msg);
            /* once stopping, the pending signal no longer cuts a pause short */
            ratelimit_wait_idle(NULL, stop_at ? 200 : 1000, &d->signal_fd, !stop_at, NULL,
                                NULL, &e);
        }
    }
}

/* Exit mode: the messages are deleted only when the Machine exited 0. */
static enum job_end job_exit_outcome(struct job *j, const struct fly_machine *m, int64_t started)
{
    struct daemon *d = j->d;
    struct fly_exit x;
    struct lerr e;
    enum follow f = job_follow(j, m, started);
    char how[48] = ": exit code unknown";  /* exit_code is 0..255 (fly.h) */
    double secs;

    if (f == FOLLOW_SHUTDOWN) {
        log_warn("group %s: stopping while machine %s still runs; its %zu messages go back to "
                 "the queue", j->gid, m->id, j->count);
        return JOB_RETURN;
    }
    if (f == FOLLOW_TIMEOUT) {
        log_error("group %s: machine %s ran past LAMBDO_MACHINE_TIMEOUT (%d s); destroying it",
                  j->gid, m->id, d->cfg->machine_timeout);
        job_kill(j, m);
        return JOB_RETRY;
    }
    if (fly_machine_exit(j->http, &j->follow, m->id, &x, &e) < 0) {
        x.known = 0;
        log_warn("group %s: cannot read machine %s's exit: %s", j->gid, m->id, e.msg);
    }
    secs = (double)(now_ms() - started) / 1000.0;
    if (x.known && x.exit_code == 0) {
        log_info("group %s: machine %s in %s exited 0 after %.1f s; deleting %zu messages",
                 j->gid, m->id, m->region, secs, j->count);
        return JOB_DONE;
    }
    if (x.known)
        snprintf(how, sizeof how, " exited %d%s", x.exit_code,
                 x.oom_killed ? " (out of memory)" : "");
    log_warn("group %s: machine %s in %s%s after %.1f s; %zu messages go back to the queue",
             j->gid, m->id, m->region, how, secs, j->count);
    return JOB_RETRY;
}

/* LAMBDO_BACKEND=local: the group runs as a child process; its exit status acknowledges
 * like a Machine's in exit mode, whatever LAMBDO_ACK says (config.c), so that a child that
 * fails never loses its messages. Returns 0 when the messages were handled to the end. */
static enum job_end job_run_local(struct job *j)
{
    const struct config *cfg = j->d->cfg;
    struct local_result res;
    struct local_run r;
    char **argv = NULL;
    struct lerr e;
    int rc;

    if (local_command_resolve(j->spec.command, cfg->local_command, &argv, &e) < 0) {
        log_error("group %s: %s; %zu messages go back to the queue", j->gid, e.msg, j->count);
        return JOB_RETRY;
    }
    r = (struct local_run){
        .argv = (const char *const *)argv, .events = j->events,
        .events_len = j->spec.events_len, .meta = j->meta, .meta_len = j->spec.meta_len,
        .group_id = j->gid, .event_count = j->count, .timeout_s = cfg->machine_timeout,
        .stop_fd = j->d->signal_fd, .shutdown_grace_s = cfg->shutdown_timeout,
        .idle = job_keepalive, .ctx = j,
    };
    rc = local_run_group(&r, &res, &e);
    free(argv);
    if (rc < 0) {
        log_error("group %s: cannot run locally: %s", j->gid, e.msg);
        return JOB_RETRY;
    }
    if (res.stopped) {
        log_warn("group %s: %s; %zu messages go back to the queue", j->gid, res.reason, j->count);
        return JOB_RETURN;
    }
    if (local_result_ok(&res)) {
        log_info("group %s: process %d exited 0 after %.1f s; deleting %zu messages", j->gid,
                 res.pid, res.seconds, j->count);
        return JOB_DONE;
    }
    log_warn("group %s: %s (after %.1f s); %zu messages go back to the queue", j->gid,
             res.reason, res.seconds, j->count);
    return JOB_RETRY;
}


/* ------------------------------------------------------------------ the warm pool ------ */

/* lambdo_pool_machines, after each change a job makes and each round of the main thread. */
static void pool_gauges(struct daemon *d)
{
    int idle, busy;

    pool_counts(&d->pool, &idle, &busy);
    metrics_set(&d->metrics, METRICS_POOL_IDLE, idle);
    metrics_set(&d->metrics, METRICS_POOL_BUSY, busy);
}

/* Calls on the job's pooled Machine take its own rate limits and, while leased, send the
 * nonce; with stop, a stop signal ends their waits (before the Machine runs). */
static struct fly_target pool_target(struct job *j, int stop)
{
    struct fly_target t = stop ? j->d->fly : j->d->follow;

    t.limits = &j->pm->limits;
    t.lease_nonce = j->pm->nonce[0] ? j->pm->nonce : NULL;
    t.idle = job_keepalive;
    t.idle_ctx = j;
    return t;
}

/* Takes pm's lease, its nonce into nonce (pm->nonce, or a refresh's own buffer: the call
 * clears it first), and sets when to refresh it: at half the time left until it expires
 * (Fly's clock, unix seconds; 0 unknown), and at least every half TTL whatever the clocks
 * say. The three lease calls (job, refresh, reaper) go through here. */
static int pool_lease_take(struct http_client *http, const struct fly_target *t,
                           struct pool_machine *pm, char nonce[FLY_NONCE_MAX],
                           struct fly_call_result *r, struct lerr *e)
{
    long long exp, left;

    if (fly_lease_acquire(http, t, pm->id, POOL_LEASE_TTL_S, nonce, &exp, r, e) < 0)
        return -1;
    left = exp ? exp - (long long)time(NULL) : POOL_LEASE_TTL_S;
    if (left > POOL_LEASE_TTL_S)
        left = POOL_LEASE_TTL_S;
    pm->lease_due_ms = now_ms() + (left < 2 ? 2 : left) * 500;
    return 0;
}

/* Keeps the job's lease through a long run (called with its heartbeats). A failed refresh
 * is tried again a second later; the lease outlives it by half its TTL. */
static void pool_lease_refresh(struct job *j)
{
    struct pool_machine *pm = j->pm;
    struct fly_call_result r;
    struct fly_target t;
    char nonce[FLY_NONCE_MAX];
    struct lerr e;

    if (!pm || !pm->nonce[0] || now_ms() < pm->lease_due_ms)
        return;
    t = pool_target(j, 0);
    t.idle = NULL;  /* no heartbeat inside a heartbeat */
    if (pool_lease_take(j->http, &t, pm, nonce, &r, &e) == 0)
        return;
    log_warn("group %s: machine %s: refreshing its lease: %s", j->gid, pm->id, e.msg);
    pm->lease_due_ms = now_ms() + 1000;
}

/* The Machine is no use to this job: dropped from the pool when gone, else left for the
 * others to try after a while (its lease, if any, expires or was released). */
static void pool_give_up(struct job *j, int gone, const char *why)
{
    log_info("group %s: pooled machine %s %s; %s", j->gid, j->pm->id, why,
             gone ? "dropped from the pool" : "trying another");
    if (gone)
        pool_drop(&j->d->pool, j->pm);
    else
        pool_skip(&j->d->pool, j->pm, now_ms() + POOL_SKIP_MS);
    j->pm = NULL;
}

/* Releases this lambdo's lease on pm (Fly refuses the next holder's calls until it is
 * released or expired). A failure only delays the next holder: the lease expires. */
static void pool_unlease(struct daemon *d, struct http_client *http, struct pool_machine *pm)
{
    struct fly_target t = d->follow;
    struct lerr e;

    t.limits = &pm->limits;
    t.lease_nonce = pm->nonce;
    if (fly_lease_release(http, &t, pm->id, NULL, &e) < 0)
        log_warn("pool: machine %s: releasing its lease: %s", pm->id, e.msg);
    pm->nonce[0] = '\0';
}

/* The app's pooled Machines of key (every key with NULL) that this pool does not know yet
 * are taken in: a restarted lambdo finds its pool, one instance another's Machines. Returns
 * how many, or -1 when Fly could not list them. */
static long pool_list(struct daemon *d, struct http_client *http, const char *key)
{
    struct fly_pool_machine *list = NULL;
    size_t n = 0, kept = 0;
    struct lerr e;

    if (fly_list_pool(http, &d->fly, &list, &n, &e) < 0) {
        log_warn("pool: cannot list the app's machines: %s", e.msg);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if (!key || strcmp(list[i].pool_key, key) == 0)
            list[kept++] = list[i];
    kept = pool_adopt(&d->pool, list, kept, now_ms());
    free(list);
    return (long)kept;
}

/* Leases the Machine; one found afterwards not stopped (another lambdo's run, or one whose
 * instance died with its lease) is left alone. 0, or -1 when another Machine is to be
 * tried. fresh: created by this job, so stopped. */
static int pool_lease(struct job *j, int fresh)
{
    struct pool_machine *pm = j->pm;
    struct fly_target t = pool_target(j, 1);
    struct fly_call_result r;
    struct fly_exit x;
    struct lerr e;
    int gone;

    if (pm->nonce[0]) {  /* HELD: still ours */
        pool_lease_refresh(j);
        return 0;
    }
    if (pool_lease_take(j->http, &t, pm, pm->nonce, &r, &e) < 0) {
        pool_give_up(j, r.outcome == FLY_CALL_GONE, r.status == 409 ? "is leased by another"
                                                                    : e.msg);
        return -1;
    }
    if (fresh)
        return 0;
    t.lease_nonce = pm->nonce;
    /* a gone Machine has no state: never "stopped" */
    if (fly_machine_exit(j->http, &t, pm->id, &x, &e) == 0 && strcmp(x.state, "stopped") == 0)
        return 0;
    /* Fly may show a destroyed Machine for a while before it answers 404 */
    gone = x.outcome == FLY_CALL_GONE || strncmp(x.state, "destroy", 7) == 0;
    pool_unlease(j->d, j->http, j->pm);
    pool_give_up(j, gone, gone ? "is gone" : "is not stopped");
    return -1;
}

/* Creates the job's pooled Machine, stopped (the update runs it); as job_create. */
static enum job_end pool_create(struct job *j)
{
    struct fly_machine_spec spec = j->spec;
    struct fly_machine m;
    enum job_end how;

    spec.events = spec.meta = NULL;  /* they come with the update */
    spec.events_len = spec.meta_len = 0;
    spec.skip_launch = 1;
    if ((how = job_create(j, &spec, &m)) != JOB_DONE) {
        pool_drop(&j->d->pool, j->pm);
        j->pm = NULL;
        return how;
    }
    pool_created(&j->d->pool, j->pm, m.id);
    return JOB_DONE;
}

/* Updates the leased Machine with the job's events, which starts it. 0 when it runs, 1 when
 * another Machine is to be tried, -1 when the group failed (its messages go back). */
static int pool_update(struct job *j, struct fly_machine *m)
{
    struct fly_target t = pool_target(j, 1);
    struct fly_call_result r;
    struct lerr e;

    if (fly_update_machine(j->http, &t, j->pm->id, &j->spec, m, &r, &e) == 0)
        return 0;
    if (r.outcome == FLY_CALL_GONE || r.status == 409) {
        pool_give_up(j, r.outcome == FLY_CALL_GONE, r.status == 409 ? "lost its lease" : "is gone");
        return 1;
    }
    if (r.outcome == FLY_CALL_RETRY_LATER) {
        /* it may have started with the events after all: left to the check after a lease */
        pool_give_up(j, 0, e.msg);
        return -1;
    }
    /* Fly refused the config (an image it cannot pull...): this Machine is replaced */
    log_error("group %s (%zu events, image %s): machine %s refused the update: %s; it leaves "
              "the pool", j->gid, j->count, j->spec.image, j->pm->id, e.msg);
    if (fly_destroy_machine(j->http, &t, j->pm->id, 1, NULL, &e) < 0)
        log_warn("group %s: destroying machine %s: %s", j->gid, j->pm->id, e.msg);
    pool_drop(&j->d->pool, j->pm);
    j->pm = NULL;
    return -1;
}

/* While a job waits for a pooled Machine: its heartbeats; nonzero once lambdo stops. */
static int pool_wait_idle(void *ctx)
{
    struct job *j = ctx;

    job_keepalive(j);
    return daemon_stopping(j->d) != 0;
}

/* LAMBDO_POOL: the group runs on a stopped Machine of its key, leased and updated: JOB_DONE
 * once it runs (j->pm, m), else what becomes of the messages. */
static enum job_end job_run_pool(struct job *j, struct fly_machine *m)
{
    struct daemon *d = j->d;

    j->spec.pool_key = j->pool_key;  /* its Machines carry the key */
    for (int tries = 0; tries < POOL_TRIES; tries++) {
        enum pool_take take = pool_acquire(&d->pool, j->pool_key, now_ms, pool_wait_idle, j,
                                           &j->pm);
        int fresh = take == POOL_TAKE_CREATE, rc;

        if (take == POOL_TAKE_STOP) {
            log_info("group %s: stopping while it waited for a pooled machine", j->gid);
            return JOB_RETURN;
        }
        /* before a create: Machines another lambdo made count toward N, and may be free */
        if (fresh && pool_list(d, j->http, j->pool_key) > 0) {
            pool_drop(&d->pool, j->pm);  /* the slot: another lambdo's Machines fill it */
            j->pm = NULL;
            continue;
        }
        if (fresh && (rc = pool_create(j)) != JOB_DONE)
            return rc;
        if (pool_lease(j, fresh) < 0)
            continue;
        if ((rc = pool_update(j, m)) > 0)
            continue;
        if (rc < 0)
            return JOB_RETRY;
        metrics_count(&d->metrics, fresh ? METRICS_POOL_NEW : METRICS_POOL_WARM, 1);
        pool_gauges(d);
        log_info("group %s: pooled machine %s runs %zu events (image %s, size %s)", j->gid,
                 m->id, j->count, j->spec.image, j->spec.preset->name);
        j->follow = pool_target(j, 0);
        return JOB_DONE;
    }
    log_error("group %s: no pooled machine took it after %d tries; %zu messages go back to the "
              "queue", j->gid, POOL_TRIES, j->count);
    return JOB_RETRY;
}

/* After the acknowledgement the pooled Machine is free again (create mode: once it stopped),
 * its lease kept for a job of its key that waits here, else released. */
static void pool_release(struct job *j, const struct fly_machine *m, int64_t started)
{
    struct daemon *d = j->d;

    if (!d->cfg->ack_on_exit && job_follow(j, m, started) == FOLLOW_TIMEOUT)
        job_kill(j, m);
    if (j->killed) {
        pool_drop(&d->pool, j->pm);
    } else {
        /* stopping, the Machine may still run: whoever takes it next leases and looks */
        if (!pool_wanted(&d->pool, j->pool_key) || daemon_stopping(d))
            pool_unlease(d, j->http, j->pm);
        pool_put(&d->pool, j->pm, now_ms());
    }
    j->pm = NULL;
    pool_gauges(d);
}

/* Runs one job to its end: every backend's run ends in one acknowledgement (job_end), its
 * messages deleted or handed back; a pooled Machine is given back after it. */
static void job_run(struct job *j, int stopping)
{
    const struct config *cfg = j->d->cfg;
    struct fly_machine m;
    int64_t started = now_ms();
    enum job_end how;

    if (stopping) {
        log_info("group %s: stopping before it started; %zu messages go back to the queue",
                 j->gid, j->count);
        how = JOB_RETURN;
    } else if (cfg->backend_local) {
        how = job_run_local(j);
    } else {
        how = cfg->pool ? job_run_pool(j, &m) : job_create(j, &j->spec, &m);
        if (how == JOB_DONE && cfg->ack_on_exit)
            how = job_exit_outcome(j, &m, started);
    }
    job_end(j, how);
    if (j->pm)
        pool_release(j, &m, started);
}

/* A worker runs queued jobs one after the other until daemon_drain: a thread per job
 * would map, touch and unmap a stack for each. A job running holds a Machine slot. */
static void *worker_main(void *arg)
{
    struct daemon *d = arg;
    struct http_client http;           /* its keep-alive connections serve every job */
    struct sqs_client sqs;

    clients_open(d, &http, &sqs);
    pthread_mutex_lock(&d->mu);
    while (!d->quitting || d->queue) {
        struct job *j = d->queue;
        int stopping = d->stop_at_ms != 0;

        if (!j || j->beating) {
            pthread_cond_wait(&d->work, &d->mu);
            continue;
        }
        if (!(d->queue = j->next))
            d->queue_tail = &d->queue;
        d->running += !stopping;
        metrics_set(&d->metrics, METRICS_IN_FLIGHT, d->running);
        pthread_mutex_unlock(&d->mu);
        j->http = &http;
        j->sqs = &sqs;
        job_run(j, stopping);
        job_free(j);
        pthread_mutex_lock(&d->mu);
        d->running -= !stopping;
        d->jobs--;
        metrics_set(&d->metrics, METRICS_IN_FLIGHT, d->running);
        pthread_cond_broadcast(&d->changed);
    }
    /* closed under mu: daemon_drain must not free what it uses (the anchors) before */
    http_client_close(&http);
    explicit_bzero(&sqs.sigv4_key, sizeof sqs.sigv4_key);
    d->workers--;
    pthread_cond_broadcast(&d->changed);
    pthread_mutex_unlock(&d->mu);
    return NULL;
}

/* ------------------------------------------------------------- the receiving side ------- */

/* Messages received so far and not yet dispatched (more than one batch with a window). */
struct window {
    struct sqs_batch batches[WINDOW_MAX_BATCHES];
    size_t nbatches;
    size_t nmessages;
    size_t bytes;
    int64_t opened_ms;
    int64_t visible_until_ms;          /* of the oldest messages, heartbeats included */
};

/* Copies s to *p, past which *p moves. */
static char *job_copy(char **p, const char *s)
{
    char *copy = *p;
    size_t n = strlen(s) + 1;

    memcpy(copy, s, n);
    *p += n;
    return copy;
}

/* A job for n messages, msg[members[i]] (msg[i] without members), in one allocation with
 * its strings copied out of the batch memory; NULL if out of memory. */
static struct job *job_alloc(struct daemon *d, struct sqs_message *const *msg,
                             const size_t *members, size_t n, const char *image,
                             const char *command, int64_t visible_until)
{
    size_t bytes = strlen(image) + 1 + (command ? strlen(command) + 1 : 0);
    struct job *j;
    char *p;

    for (size_t i = 0; i < n; i++) {
        const struct sqs_message *m = msg[members ? members[i] : i];
        bytes += strlen(m->message_id) + strlen(m->receipt_handle) + 2;
    }
    if (!(j = calloc(1, sizeof *j + n * sizeof j->msgs[0] + bytes)))
        return NULL;
    p = (char *)&j->msgs[n];
    j->d = d;
    j->count = n;
    j->visible_until_ms = visible_until;
    j->http = &d->main_http;
    j->sqs = &d->main_sqs;
    j->follow = d->follow;
    j->spec.group_id = j->gid;
    j->spec.image = job_copy(&p, image);
    j->spec.command = command ? job_copy(&p, command) : NULL;
    for (size_t i = 0; i < n; i++) {
        const struct sqs_message *m = msg[members ? members[i] : i];
        j->msgs[i].id = job_copy(&p, m->message_id);
        j->msgs[i].receipt = job_copy(&p, m->receipt_handle);
    }
    return j;
}

/* Queues a job for a worker, starting one unless every job has one already. */
static void job_start(struct daemon *d, struct job *j)
{
    int rc = 0;

    pthread_mutex_lock(&d->mu);
    if (d->jobs >= d->workers && d->workers < d->cfg->max_machines) {
        pthread_attr_t attr;
        pthread_t t;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, JOB_STACK);
        rc = pthread_create(&t, &attr, worker_main, d);
        pthread_attr_destroy(&attr);
        d->workers += rc == 0;
    }
    if (d->workers) {
        j->next = NULL;
        *d->queue_tail = j;
        d->queue_tail = &j->next;
        d->jobs++;
        pthread_cond_signal(&d->work);
        j = NULL;
    }
    pthread_mutex_unlock(&d->mu);
    if (j) {
        log_error("group %s: cannot start a thread (%s); its messages return after the "
                  "visibility timeout", j->gid, strerror(rc));
        job_end(j, JOB_LEFT);
        job_free(j);
    }
}

/* Starts a job for one group (a Machine's events). */
static void dispatch_group(struct daemon *d, const struct event *ev, const struct group *g,
                           struct sqs_message *const *msg, int64_t visible_until)
{
    struct job *j = job_alloc(d, msg, g->members, g->count, g->image, g->command, visible_until);
    struct lerr e;

    if (j && group_files_alloc(ev, g, &j->events, &j->spec.events_len, &j->meta,
                               &j->spec.meta_len, &e) == 0) {
        j->spec.events = j->events;
        j->spec.meta = j->meta;
        j->spec.preset = g->preset;
        group_id(ev, g, j->gid);
        if (d->cfg->pool)  /* a SHA-256 per group: only when there is a pool */
            group_key(g, j->pool_key);
        job_start(d, j);
    } else {
        if (j)
            job_free(j);
        log_error("out of memory for a group of %zu events; they return after the "
                  "visibility timeout", g->count);
    }
}

/* --once: keeps messages out of the rest of the run, hidden by heartbeats (main_keepalive)
 * until once_release hands them back: a message that cannot succeed neither runs again
 * nor counts as in flight elsewhere. Out of memory, they return after the visibility
 * timeout and are held again then. Main thread only. */
static void once_hold(struct daemon *d, struct sqs_message *const *m, size_t n,
                      int64_t visible_until)
{
    struct job *j;

    if (!n || !(j = job_alloc(d, m, NULL, n, "", NULL, visible_until)))
        return;
    snprintf(j->gid, sizeof j->gid, "held");
    j->next = d->held;
    d->held = j;
}

/* The main thread heartbeats the messages it holds (--once) and the queued jobs', whose
 * workers are not free yet; a worker leaves a job alone while it is being heartbeated. */
static void main_keepalive(struct daemon *d)
{
    for (struct job *j = d->held; j; j = j->next)
        job_keepalive(j);
    pthread_mutex_lock(&d->mu);
    for (struct job *j = d->queue; j; j = j->next) {
        if (keepalive_due(d, j->visible_until_ms) > 0)
            continue;
        j->beating = 1;
        pthread_mutex_unlock(&d->mu);
        job_keepalive(j);
        pthread_mutex_lock(&d->mu);
        j->beating = 0;
        pthread_cond_broadcast(&d->work);
    }
    pthread_mutex_unlock(&d->mu);
}

/* The end of a --once run: the held messages go back to the queue. */
static void once_release(struct daemon *d)
{
    d->once = 0;  /* the book is closed: job_end leaves the held messages' entries as they are */
    while (d->held) {
        struct job *j = d->held;
        d->held = j->next;
        job_end(j, JOB_RETRY);
        job_free(j);
    }
}

#define WINDOW_MAX_MESSAGES (WINDOW_MAX_BATCHES * SQS_MAX_MESSAGES)

/* The window's messages as events, and their grouping: the main thread's scratch, static
 * so that nothing is allocated per window (pages untouched cost nothing). */
static struct plan {
    struct event ev[WINDOW_MAX_MESSAGES];
    struct sqs_message *msg[WINDOW_MAX_MESSAGES];   /* ev[i]'s message */
    struct sqs_message *held[WINDOW_MAX_MESSAGES];  /* not run: invalid, or (--once) failed
                                                       too often */
    size_t n, nheld;
    struct group_plan gp;
    struct group groups[WINDOW_MAX_MESSAGES];
    struct lerr verdicts[WINDOW_MAX_MESSAGES];
    size_t members[WINDOW_MAX_MESSAGES];
    size_t part_of[WINDOW_MAX_MESSAGES];            /* group_fifo_order's storage, */
    size_t returned[WINDOW_MAX_MESSAGES];           /* and its answer */
    struct job_msg returning[WINDOW_MAX_MESSAGES];  /* those messages, for SQS */
} plan;

/* An invalid message is not dispatched, not deleted: held (--once) instead. */
static void hold_invalid(struct daemon *d, struct plan *p, struct sqs_message *m,
                         const char *why)
{
    metrics_count(&d->metrics, METRICS_INVALID, 1);
    once_record(d, m->message_id, ONCE_TRIES, 0);  /* no second try: it would fail the same */
    log_warn("message %s is invalid (receive %lu): %s; not dispatched, not deleted",
             m->message_id, m->receive_count, why);
    p->held[p->nheld++] = m;
}

/* Groups the window's messages. Dispatching, the messages sqs.c flagged and (--once)
 * those that failed too often go to held instead, logged. */
static struct plan *plan_build(struct daemon *d, const struct window *w, int dispatching)
{
    struct plan *p = &plan;
    struct lerr e;

    p->n = p->nheld = 0;
    p->gp = (struct group_plan){ .groups = p->groups, .members = p->members,
                                 .verdicts = p->verdicts };
    for (size_t b = 0; b < w->nbatches; b++) {
        for (size_t i = 0; i < w->batches[b].count; i++) {
            struct sqs_message *m = &w->batches[b].messages[i];
            if (dispatching && m->flags) {
                hold_invalid(d, p, m, m->problem);
                continue;
            }
            if (dispatching && once_held(d, m->message_id)) {
                log_warn("--once: message %s failed %d times; it is not run again and goes "
                         "back to the queue at the end", m->message_id, ONCE_TRIES);
                p->held[p->nheld++] = m;
                continue;
            }
            p->ev[p->n] = (struct event){ .id = m->message_id, .body = m->body,
                                          .body_len = m->body_len, .image = m->image,
                                          .size = m->size, .command = m->command,
                                          .fifo_group = m->message_group_id,
                                          .context = m->context,
                                          .context_len = m->context_len };
            p->msg[p->n++] = m;
        }
    }
    /* it fails only on bad arguments: the storage is there, config.c bounds
     * events_per_machine */
    group_build(p->ev, p->n, (size_t)d->cfg->events_per_machine,
                (size_t)d->cfg->max_events_bytes, &p->gp, &e);
    return p;
}

/* FIFO queues: the messages that would run out of their group's order (group.h) go back
 * at once; SQS hands them out again, in order, once the group's earlier ones are deleted. */
static void fifo_return(struct daemon *d, struct plan *p)
{
    size_t n = group_fifo_order(p->ev, p->n, p->groups, p->gp.ngroups, p->part_of,
                                p->returned);

    for (size_t i = 0; i < n; i++) {
        const struct sqs_message *msg = p->msg[p->returned[i]];
        p->returning[i] = (struct job_msg){ msg->message_id, msg->receipt_handle };
        log_info("message %s of FIFO group %s returned: the group's earlier messages run in "
                 "another Machine or are still in flight; SQS delivers it after them",
                 msg->message_id, msg->message_group_id);
    }
    batch_all(d, &d->main_sqs, "fifo", p->returning, n, 0, METRICS_NCOUNTERS);
}

/* Validates, groups and dispatches everything in the window. */
static void window_dispatch(struct daemon *d, struct window *w)
{
    struct plan *p = plan_build(d, w, 1);

    for (size_t i = 0; i < p->n; i++)
        if (p->verdicts[i].kind != LERR_NONE)
            hold_invalid(d, p, p->msg[i], p->verdicts[i].msg);
    if (d->cfg->fifo)
        fifo_return(d, p);
    for (size_t gi = 0; gi < p->gp.ngroups; gi++)
        if (p->groups[gi].count)
            dispatch_group(d, p->ev, &p->groups[gi], p->msg, w->visible_until_ms);
    if (d->once)
        once_hold(d, p->held, p->nheld, w->visible_until_ms);
    for (size_t b = 0; b < w->nbatches; b++)
        sqs_batch_free(&w->batches[b]);
    memset(w, 0, sizeof *w);
}

/* Messages waiting in the batching window are kept hidden like a job's: once a third of
 * their visibility has passed, all of them get a full LAMBDO_VISIBILITY_TIMEOUT again. */
static void window_keepalive(struct daemon *d, struct window *w)
{
    int vis = d->cfg->visibility_timeout;
    int64_t t = now_ms();

    if (!w->nmessages || keepalive_due(d, w->visible_until_ms) > 0)
        return;
    for (size_t b = 0; b < w->nbatches; b++) {
        struct job_msg m[SQS_MAX_MESSAGES];
        for (size_t i = 0; i < w->batches[b].count; i++)
            m[i] = (struct job_msg){ w->batches[b].messages[i].message_id,
                                     w->batches[b].messages[i].receipt_handle };
        batch_all(d, &d->main_sqs, "window", m, w->batches[b].count, vis, METRICS_NCOUNTERS);
    }
    w->visible_until_ms = t + (int64_t)vis * 1000;
}

/* With a batching window: is some group already full, or the window over? */
static int window_ready(struct daemon *d, const struct window *w)
{
    const struct config *cfg = d->cfg;
    struct plan *p;

    if (!w->nmessages)
        return 0;
    if (!cfg->batch_window_ms || now_ms() - w->opened_ms >= cfg->batch_window_ms ||
        w->nbatches == WINDOW_MAX_BATCHES || w->bytes >= (size_t)cfg->max_events_bytes)
        return 1;
    /* Count per (image, size, command) the cheap way: group what we have. */
    p = plan_build(d, w, 0);
    for (size_t g = 0; g < p->gp.ngroups; g++)
        if (p->groups[g].count >= (size_t)cfg->events_per_machine)
            return 1;
    return 0;
}

/* At the cap, receiving would take messages that cannot start: wait for a job to end.
 * Returns the free Machine slots as the receiver sees them (jobs queued count). */
static int daemon_wait_for_slot(struct daemon *d)
{
    int waited = 0, free_slots;

    pthread_mutex_lock(&d->mu);
    while (d->jobs >= d->cfg->max_machines && !d->stop_at_ms) {
        struct timespec until;
        /* not receiving is our choice here: /healthz must not hold it against us */
        if (!waited++)
            metrics_receive_idle(&d->metrics, 1);
        clock_gettime(CLOCK_REALTIME, &until);  /* 200 ms from now */
        until.tv_sec += until.tv_nsec >= 800000000L;
        until.tv_nsec = (until.tv_nsec + 200000000L) % 1000000000L;
        pthread_cond_timedwait(&d->changed, &d->mu, &until);
        pthread_mutex_unlock(&d->mu);
        daemon_stopping(d);
        main_keepalive(d);
        pthread_mutex_lock(&d->mu);
    }
    free_slots = d->cfg->max_machines - d->jobs;
    pthread_mutex_unlock(&d->mu);
    if (waited)
        metrics_receive_idle(&d->metrics, 0);
    return free_slots;
}

/* What a round of the main loop found: go on, the queue answered empty (--once), a stop
 * signal came, lambdo cannot go on (exit 1), or (--once) the run is done. */
enum round { ROUND_FAILED = -1, ROUND_ON, ROUND_EMPTY, ROUND_STOP, ROUND_DONE };

/* Receives into the window: ROUND_ON, ROUND_EMPTY, ROUND_STOP or ROUND_FAILED. The receive
 * is where the main thread sees a stop: its client's cancel_fd is the signalfd, which
 * http_do looks at before each request (no separate look per loop). */
static enum round receive_once(struct daemon *d, struct window *w, int free_slots,
                               unsigned *failures)
{
    const struct config *cfg = d->cfg;
    int room = free_slots * cfg->events_per_machine;
    struct sqs_receive_opts o = {
        .max_messages = room < SQS_MAX_MESSAGES ? (room < 1 ? 1 : room) : SQS_MAX_MESSAGES,
        .wait_seconds = cfg->long_poll_seconds,
        .visibility_timeout = cfg->visibility_timeout,
    };
    struct sqs_batch b = { 0 };
    struct lerr e;
    unsigned backoff_ms;

    if (d->once && o.wait_seconds > 1)
        o.wait_seconds = 1;  /* --once: a one-second long poll that answers empty means empty */
    if (w->nmessages && cfg->batch_window_ms) {
        int64_t left = w->opened_ms + cfg->batch_window_ms - now_ms();
        int64_t beat = keepalive_due(d, w->visible_until_ms);
        if (beat < left)
            left = beat;
        if (left < (int64_t)o.wait_seconds * 1000)
            o.wait_seconds = left <= 0 ? 0 : (int)((left + 999) / 1000);
    }
    if (sqs_receive(&d->receiver, &o, &b, &e) < 0) {
        /* http_do saw the stop before the request; a receive that failed before its
         * request (credentials) did not look: a stop outranks its failure */
        if (daemon_stopping(d))
            return ROUND_STOP;
        if (e.kind == LERR_CANCELLED)
            return ROUND_ON;
        metrics_receive_result(&d->metrics, 0);
        /* Wrong credentials or a missing queue at start-up will not mend themselves: say so
         * and exit, so a deploy fails visibly. Later the same errors may be passing (a key
         * being rotated, a queue being recreated), so keep trying. */
        if (!d->first_receive_done && !d->receiver.last_error.retryable) {
            log_error("%s", e.msg);
            return ROUND_FAILED;
        }
        /* Full jitter, so that many lambdos that lost SQS together do not return in step. */
        backoff_ms = sqs_backoff_ms(*failures, RECEIVE_BACKOFF_BASE_MS, RECEIVE_BACKOFF_MAX_MS,
                                    &d->receiver.rng);
        log_error("%s; retrying in %u ms", e.msg, backoff_ms);
        ratelimit_wait_idle(NULL, (int)backoff_ms, &d->signal_fd, 1, NULL, NULL, &e);
        (*failures)++;
        return ROUND_ON;
    }
    d->first_receive_done = 1;
    *failures = 0;
    metrics_receive_result(&d->metrics, 1);
    metrics_count(&d->metrics, METRICS_RECEIVED, b.count);
    if (b.count == 0) {
        sqs_batch_free(&b);
        return d->once ? ROUND_EMPTY : ROUND_ON;
    }
    log_debug("received %zu messages", b.count);
    if (!w->nmessages) {
        w->opened_ms = now_ms();
        w->visible_until_ms = w->opened_ms + (int64_t)cfg->visibility_timeout * 1000;
    }
    for (size_t i = 0; i < b.count; i++)
        w->bytes += b.messages[i].body_len + 1;
    w->nmessages += b.count;
    w->batches[w->nbatches++] = b;
    return ROUND_ON;
}

/* --once, the queue answered empty: done when no job runs (a failed one returns its
 * messages, to be tried once more) and nothing is in flight but this run's own: the held
 * messages and failed ones still hidden by LAMBDO_RETRY_DELAY (their retry is not waited
 * for). Anything else in flight (received by a run that died, say) comes back and is
 * handled in this run. ROUND_DONE, ROUND_ON (not yet), or ROUND_FAILED when SQS cannot say. */
static enum round once_done(struct daemon *d, long *waiting)
{
    struct sqs_queue_info q;
    struct lerr e;
    long ours;
    int jobs;

    pthread_mutex_lock(&d->mu);
    jobs = d->jobs;
    pthread_mutex_unlock(&d->mu);
    if (jobs)
        return ROUND_ON;
    ours = once_failed(d, now_ms());
    for (struct job *j = d->held; j; j = j->next)
        ours += (long)j->count;
    if (sqs_get_queue_attributes(&d->receiver, &q, &e) < 0) {
        if (e.kind == LERR_CANCELLED)
            return ROUND_ON;
        log_error("--once: cannot tell whether messages are still in flight: %s", e.msg);
        return ROUND_FAILED;
    }
    if (q.in_flight <= ours)
        return ROUND_DONE;
    if (q.in_flight - ours != *waiting)
        log_info("--once: the queue answered empty, but %ld messages are in flight; waiting "
                 "for them", q.in_flight - ours);
    *waiting = q.in_flight - ours;
    return ROUND_ON;
}


/* ------------------------------------------------------- the warm pool, main thread ----- */

/* A Machine idle for LAMBDO_POOL_IDLE_SECONDS is destroyed (leased first, so that no other
 * lambdo is acting on it; Fly refuses to destroy one that runs, without force); a HELD one
 * that no job took gives its lease up. Main thread, between receives. */
static void pool_maintain(struct daemon *d)
{
    int64_t idle_ms = (int64_t)d->cfg->pool_idle_seconds * 1000;
    struct pool_machine *pm;

    while ((pm = pool_reap(&d->pool, now_ms(), idle_ms))) {
        struct fly_target t = d->follow;
        struct fly_call_result r;
        struct lerr e;
        int destroy = now_ms() - pm->idle_since_ms >= idle_ms;

        t.limits = &pm->limits;
        if (destroy && !pm->nonce[0] &&
            pool_lease_take(&d->main_http, &t, pm, pm->nonce, &r, &e) < 0) {
            if (r.outcome == FLY_CALL_GONE)
                pool_drop(&d->pool, pm);
            else
                pool_skip(&d->pool, pm, now_ms() + idle_ms);  /* another lambdo uses it */
            continue;
        }
        t.lease_nonce = pm->nonce;
        if (destroy && fly_destroy_machine(&d->main_http, &t, pm->id, 0, &r, &e) == 0) {
            log_info("pool: machine %s (key %s) idle for %d s: destroyed", pm->id, pm->key,
                     d->cfg->pool_idle_seconds);
            pool_drop(&d->pool, pm);
            continue;
        }
        if (destroy)
            log_warn("pool: destroying idle machine %s: %s", pm->id, e.msg);
        pool_unlease(d, &d->main_http, pm);
        pool_put(&d->pool, pm, destroy ? now_ms() : pm->idle_since_ms);
    }
    pool_gauges(d);
}


/* ------------------------------------------------------------------ start and stop ----- */

static int signals_open(struct lerr *e)
{
    sigset_t set;
    int fd;

    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    /* Blocked before any thread starts, so every thread inherits the mask and the signal
     * stays pending for the signalfd instead of killing the process. */
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0 ||
        (fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK)) < 0)
        return lerr_set(e, LERR_IO, "cannot set up signal handling: %s", strerror(errno));
    signal(SIGPIPE, SIG_IGN);
    return fd;
}

static int daemon_open(struct daemon *d, const struct config *cfg, struct lerr *e)
{
    struct metrics_options mo = { cfg->regions, cfg->num_regions, LAMBDO_VERSION,
                                  cfg->long_poll_seconds, NULL, NULL };

    *d = (struct daemon){ .cfg = cfg, .signal_fd = -1, .mu = PTHREAD_MUTEX_INITIALIZER,
                          .changed = PTHREAD_COND_INITIALIZER, .work = PTHREAD_COND_INITIALIZER,
                          .queue_tail = &d->queue };
    tls_sessions_init(&d->sessions);
    pool_init(&d->pool, cfg->pool);
    if (ratelimit_init(&d->create_rl, cfg->fly_create_rate, cfg->fly_create_burst, e) < 0 ||
        ratelimit_init(&d->get_rl, cfg->fly_get_rate, cfg->fly_get_burst, e) < 0)
        return -1;
    if (tls_anchors_load(&d->anchors, cfg->ca_file, e) < 0)
        return cfg->ca_file ? lerr_wrap(e, "SSL_CERT_FILE") : -1;
    if (creds_init(&d->creds, config_env, NULL, cfg->aws_region, &d->anchors, e) < 0)
        return -1;
    log_info("AWS credentials: %s", d->creds.source_name);
    if ((d->signal_fd = signals_open(e)) < 0)
        return -1;
    /* Child processes must inherit nothing of ours but what local.c hands them. */
    if (cfg->backend_local && local_seal(e) < 0)
        return -1;
    clients_open(d, &d->receive_http, &d->receiver);
    clients_open(d, &d->main_http, &d->main_sqs);
    d->receive_http.cancel_fd = d->signal_fd;
    /* A stop ends 429 waits, never a request in flight. */
    d->fly = (struct fly_target){ .base = &cfg->fly_api, .app = cfg->fly_app,
                                  .token = cfg->fly_token, .stop_fd = &d->signal_fd,
                                  .create_rl = &d->create_rl, .get_rl = &d->get_rl,
                                  .metrics = &d->metrics };
    d->follow = d->fly;
    d->follow.stop_fd = NULL;
    if (metrics_init(&d->metrics, &mo, e) < 0)
        return -1;
    if (cfg->metrics_addr && metrics_serve(&d->metrics, cfg->metrics_addr, e) < 0)
        return lerr_wrap(e, "LAMBDO_METRICS_ADDR");
    if (cfg->pool) {
        long found;
        /* A restarted lambdo finds its pool again: the app's Machines that carry lambdo's
         * pool metadata. Without the list, it starts with an empty pool. */
        if ((found = pool_list(d, &d->main_http, NULL)) >= 0)
            log_info("pool: up to %d machines per image, size and command; %ld pooled "
                     "machines found in app %s", cfg->pool, found, cfg->fly_app);
        pool_gauges(d);
    }
    return 0;
}

static void daemon_close(struct daemon *d)
{
    /* the leases of Machines kept for a next job are given up (the Machines stay,
     * stopped, for the next lambdo): the workers have ended */
    for (struct pool_machine *pm = d->pool.list; pm; pm = pm->next)
        if (pm->nonce[0])
            pool_unlease(d, &d->main_http, pm);
    pool_destroy(&d->pool);
    metrics_destroy(&d->metrics);  /* stops the server: every job thread has ended */
    http_client_close(&d->receive_http);
    http_client_close(&d->main_http);
    explicit_bzero(&d->main_sqs.sigv4_key, sizeof d->main_sqs.sigv4_key);
    explicit_bzero(&d->receiver.sigv4_key, sizeof d->receiver.sigv4_key);
    creds_free(&d->creds);
    tls_anchors_free(&d->anchors);
    tls_sessions_free(&d->sessions);
    ratelimit_destroy(&d->create_rl);
    ratelimit_destroy(&d->get_rl);
    if (d->signal_fd >= 0)
        close(d->signal_fd);
    while (d->book) {
        struct once_msg *m = d->book;
        d->book = m->next;
        free(m);
    }
    pthread_cond_destroy(&d->changed);
    pthread_cond_destroy(&d->work);
    pthread_mutex_destroy(&d->mu);
}

/* After a stop: jobs finish what they started (creates, deletes; in exit mode they wait
 * for their Machines up to LAMBDO_SHUTDOWN_TIMEOUT, then hand the messages back). */
static void daemon_drain(struct daemon *d)
{
    pthread_mutex_lock(&d->mu);
    if (d->jobs)
        log_info("stopping: waiting for %d groups in flight", d->jobs);
    d->quitting = 1;
    pthread_cond_broadcast(&d->work);
    while (d->workers > 0)
        pthread_cond_wait(&d->changed, &d->mu);
    pthread_mutex_unlock(&d->mu);
}

static void log_start(const struct config *cfg)
{
    if (cfg->backend_local) {
        log_info("lambdo %s starting: queue %s, backend local (command %s), ack on exit (a "
                 "group's messages are deleted only once its process exited 0, whatever "
                 "LAMBDO_ACK says), up to %d processes", LAMBDO_VERSION, cfg->queue_url,
                 cfg->local_command ? cfg->local_command : "from each message",
                 cfg->max_machines);
        return;
    }
    log_info("lambdo %s starting: queue %s, app %s, regions %s, api %s://%s%s, ack on %s%s, "
             "up to %d machines", LAMBDO_VERSION, cfg->queue_url, cfg->fly_app, cfg->region_list,
             cfg->fly_api.tls ? "https" : "http", cfg->fly_api.authority,
             strcmp(cfg->fly_api.path, "/") ? cfg->fly_api.path : "",
             cfg->ack_on_exit ? "exit" : "create", cfg->fifo && !cfg->ack_given
             ? " (the default on a FIFO queue: it keeps each message group's order across "
               "Machines)" : "", cfg->max_machines);
}

int daemon_run(const struct config *cfg, int once)
{
    struct window w = { 0 };
    unsigned failures = 0;  /* failed receives in a row */
    long waiting = 0;       /* --once: messages in flight elsewhere, last seen */
    struct daemon d;
    struct lerr e;
    enum round r;
    int status = 0;

    if (daemon_open(&d, cfg, &e) < 0) {
        log_error("%s", e.msg);
        daemon_close(&d);
        return e.kind == LERR_INVALID || e.kind == LERR_IO ? EXIT_USAGE : EXIT_FAILED;
    }
    d.once = once;
    log_start(cfg);
    for (;;) {
        r = receive_once(&d, &w, daemon_wait_for_slot(&d), &failures);
        if (r == ROUND_EMPTY && !w.nmessages)
            r = once_done(&d, &waiting);
        if (r != ROUND_ON && r != ROUND_EMPTY)
            break;
        if (r == ROUND_EMPTY)
            w.opened_ms = 0;  /* --once and nothing more to come: close the window now */
        main_keepalive(&d);
        if (cfg->pool)
            pool_maintain(&d);
        if (window_ready(&d, &w))
            window_dispatch(&d, &w);
        else
            window_keepalive(&d, &w);
    }
    if (w.nmessages) {
        /* Received but not dispatched (the window was open): hand them back now. */
        log_info("stopping: %zu messages waiting in the batching window go back to the queue",
                 w.nmessages);
        window_dispatch(&d, &w);
    }
    daemon_drain(&d);
    once_release(&d);
    if (r == ROUND_FAILED) {
        status = EXIT_FAILED;
    } else if (once) {
        long unhandled = once_failed(&d, INT64_MIN);
        if (unhandled)
            log_error("--once: %ld messages were not handled", unhandled);
        else if (r != ROUND_DONE)
            log_error("--once: stopped by signal before the queue was empty");
        else
            log_info("--once: the queue is empty and every message was handled");
        status = unhandled || r != ROUND_DONE ? EXIT_FAILED : 0;
    } else {
        log_info("stopped by signal");
    }
    daemon_close(&d);
    return status;
}
