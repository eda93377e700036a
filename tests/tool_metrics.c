/*
 * tool_metrics - the metrics server on an address, fed updates from stdin, for
 * tests/metrics.test.mjs.
 *
 *   tool_metrics [--regions iad,ord] [--long-poll S] [--version V] [--debug] ADDR
 *
 * Once listening it prints "listening PORT" on stdout. Then each stdin line is one
 * update, answered "ok" (or "error ..." for a line it does not know):
 *   count received|deleted|invalid|returned|rate_limited N
 *   created REGION | failed REGION          a Machine created / a create failed there
 *   in_flight N
 *   observe sqs|fly OPERATION SECONDS
 *   receive ok|fail                         a ReceiveMessage outcome
 *   idle 1|0
 *   advance MS                              moves the health clock forward
 * At the end of stdin it goes on serving. SIGTERM or SIGINT stops the server
 * (metrics_destroy), prints "stopped" and exits 0.
 * Exit status 2 for usage or a bad address, 1 when the server cannot start (the error
 * on stderr as "error KIND: MESSAGE").
 */
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"

struct clock {
    atomic_int_fast64_t offset_ms;   /* written by main, read by the server thread */
};

static int64_t tool_clock(void *ctx)
{
    struct clock *c = ctx;
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + atomic_load(&c->offset_ms);
}

static int usage(void)
{
    fprintf(stderr, "usage: tool_metrics [--regions a,b] [--long-poll S] [--version V] "
                    "[--debug] ADDR\n");
    return 2;
}

static int counter_named(const char *name, enum metrics_counter *c)
{
    static const char *const names[METRICS_NCOUNTERS] = {
        [METRICS_RECEIVED] = "received", [METRICS_DELETED] = "deleted",
        [METRICS_INVALID] = "invalid",   [METRICS_RETURNED] = "returned",
        [METRICS_FLY_RATE_LIMITED] = "rate_limited",
    };

    for (int i = 0; i < METRICS_NCOUNTERS; i++)
        if (names[i] && strcmp(name, names[i]) == 0) {
            *c = (enum metrics_counter)i;
            return 0;
        }
    return -1;
}

/* One command line; 0 done, -1 not understood. */
static int command(struct metrics *m, struct clock *clk, char *line)
{
    char *verb = strtok(line, " \t\r\n"), *a = strtok(NULL, " \t\r\n"),
         *b = strtok(NULL, " \t\r\n"), *c = strtok(NULL, " \t\r\n");
    enum metrics_counter ctr;

    if (!verb || !a)
        return -1;
    if (strcmp(verb, "count") == 0 && b && counter_named(a, &ctr) == 0)
        metrics_count(m, ctr, strtoull(b, NULL, 10));
    else if (strcmp(verb, "created") == 0)
        metrics_count_region(m, METRICS_MACHINES_CREATED, a);
    else if (strcmp(verb, "failed") == 0)
        metrics_count_region(m, METRICS_MACHINES_FAILED, a);
    else if (strcmp(verb, "in_flight") == 0)
        metrics_set(m, METRICS_IN_FLIGHT, strtoll(a, NULL, 10));
    else if (strcmp(verb, "observe") == 0 && b && c &&
             (strcmp(a, "sqs") == 0 || strcmp(a, "fly") == 0))
        metrics_observe(m, strcmp(a, "sqs") == 0 ? METRICS_SQS : METRICS_FLY, b, strtod(c, NULL));
    else if (strcmp(verb, "receive") == 0)
        metrics_receive_result(m, strcmp(a, "ok") == 0);
    else if (strcmp(verb, "idle") == 0)
        metrics_receive_idle(m, atoi(a));
    else if (strcmp(verb, "advance") == 0)
        atomic_fetch_add(&clk->offset_ms, strtoll(a, NULL, 10));
    else
        return -1;
    return 0;
}

/* Reads what stdin has and runs every whole line. Returns 0, or -1 at its end. */
static int read_commands(struct metrics *m, struct clock *clk, char *buf, size_t cap,
                         size_t *len)
{
    ssize_t n = read(0, buf + *len, cap - 1 - *len);
    char *nl;

    if (n <= 0)
        return -1;
    *len += (size_t)n;
    buf[*len] = '\0';
    while ((nl = strchr(buf, '\n'))) {
        size_t used = (size_t)(nl - buf) + 1;
        *nl = '\0';
        if (command(m, clk, buf) == 0)
            printf("ok\n");
        else
            printf("error: unknown command\n");
        fflush(stdout);
        memmove(buf, buf + used, *len - used + 1);
        *len -= used;
    }
    if (*len == cap - 1)
        *len = 0;  /* a line longer than the buffer: dropped */
    return 0;
}

int main(int argc, char **argv)
{
    const char *regions[METRICS_MAX_REGIONS], *addr = NULL, *version = "0.0.0-test";
    char region_buf[256] = "", line[4096];
    size_t nregions = 0, len = 0;
    int long_poll = 10, sfd, in_open = 1;
    struct clock clk = { 0 };
    struct metrics m;
    struct lerr e;
    sigset_t set;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--regions") == 0 && i + 1 < argc)
            snprintf(region_buf, sizeof region_buf, "%s", argv[++i]);
        else if (strcmp(argv[i], "--long-poll") == 0 && i + 1 < argc)
            long_poll = atoi(argv[++i]);
        else if (strcmp(argv[i], "--version") == 0 && i + 1 < argc)
            version = argv[++i];
        else if (strcmp(argv[i], "--debug") == 0)
            log_setup(LOG_LEVEL_DEBUG, 0);
        else if (argv[i][0] == '-' && argv[i][1] == '-')
            return usage();
        else
            addr = argv[i];
    }
    if (!addr)
        return usage();
    for (char *r = strtok(region_buf, ","); r && nregions < METRICS_MAX_REGIONS;
         r = strtok(NULL, ","))
        regions[nregions++] = r;

    /* As the daemon does: signals blocked before any thread starts, read from a signalfd. */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);
    sfd = signalfd(-1, &set, SFD_CLOEXEC);

    {
        struct metrics_options o = { regions, nregions, version, long_poll, tool_clock, &clk };
        if (metrics_init(&m, &o, &e) < 0) {
            fprintf(stderr, "error %s: %s\n", lerr_kind_name(e.kind), e.msg);
            return 2;
        }
    }
    if (metrics_serve(&m, addr, &e) < 0) {
        fprintf(stderr, "error %s: %s\n", lerr_kind_name(e.kind), e.msg);
        metrics_destroy(&m);
        close(sfd);
        return e.kind == LERR_INVALID ? 2 : 1;
    }
    printf("listening %d\n", metrics_port(&m));
    fflush(stdout);
    for (;;) {
        struct pollfd p[2] = { { .fd = sfd, .events = POLLIN },
                               { .fd = in_open ? 0 : -1, .events = POLLIN } };
        if (poll(p, 2, -1) < 0)
            continue;
        if (p[0].revents)
            break;
        if (p[1].revents && read_commands(&m, &clk, line, sizeof line, &len) < 0)
            in_open = 0;
    }
    metrics_destroy(&m);
    close(sfd);
    printf("stopped\n");
    return 0;
}
