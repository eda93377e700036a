/*
 * metrics.h - Prometheus metrics and a health check over HTTP (LAMBDO_METRICS_ADDR).
 *
 * The numbers live in a caller-allocated `struct metrics` that the daemon owns and hands
 * to whoever counts (job threads, the SQS and Fly clients). Every update is a relaxed C11
 * atomic add, so counting never blocks and never takes a lock; the first observation of a
 * new `operation` label claims its slot with a compare-and-swap (a handful of times per
 * process).
 *
 * Owns: the numbers, /healthz's verdict, the exposition text, the request parser and the
 * small server. Not: what is counted when (the daemon, sqs.c and fly.c decide that).
 *
 * Served on threads of its own, so the poll loop never waits for a scrape:
 *   GET /metrics   Prometheus text exposition format 0.0.4
 *   GET /healthz   200 "ok" while receiving from SQS works; 503 and the reason after
 *                  METRICS_HEALTH_FAILURES failed receives in a row, or when no receive has
 *                  succeeded for 3 x the long poll + 30 s (not counting time the daemon
 *                  chose not to receive: metrics_receive_idle)
 * HEAD works for both (no body); other methods get 405 with "Allow: GET, HEAD", other
 * paths 404 (a query string is ignored). Every answer carries "Connection: close".
 *
 * The server is METRICS_MAX_CONNECTIONS threads, each accepting on the one listening socket
 * and serving that connection to its end: at most that many connections at a time (more
 * wait in the listen backlog), each of which must deliver its request head (at most
 * METRICS_HEAD_MAX bytes, else 431) within METRICS_READ_TIMEOUT_MS and take its answer
 * within METRICS_WRITE_TIMEOUT_MS, so a slow or silent client holds one slot for at most
 * a few seconds and never blocks the others.
 *
 * Addresses (metrics_addr_parse):
 *   127.0.0.1:9090    one IPv4 address       [::1]:9090   one IPv6 address
 *   localhost:9090    127.0.0.1              :9090        every interface, IPv4 and IPv6
 *   0.0.0.0:9090      every IPv4 interface   [::]:9090    every IPv6 interface only
 * Host names other than localhost are refused (no DNS at start-up); port 0 lets the
 * kernel choose one (metrics_port tells which; for tests).
 */
#ifndef LAMBDO_METRICS_H
#define LAMBDO_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define METRICS_MAX_REGIONS 16        /* as CONFIG_MAX_REGIONS; any other region: "other" */
#define METRICS_MAX_OPERATIONS 12     /* operation labels per histogram; more: "other" */
#define METRICS_NAME_MAX 32           /* region and operation names, NUL included */
#define METRICS_NBUCKETS 13           /* .005 .01 .025 .05 .1 .25 .5 1 2.5 5 10 30 60 */
#define METRICS_HEALTH_FAILURES 3     /* failed receives in a row that make /healthz 503 */
#define METRICS_HEAD_MAX 8192         /* request line and headers */
#define METRICS_READ_TIMEOUT_MS 2000  /* to deliver the request head, from accept */
#define METRICS_WRITE_TIMEOUT_MS 2000 /* to take the answer */
#define METRICS_MAX_CONNECTIONS 8

enum metrics_counter {
    METRICS_RECEIVED,         /* lambdo_messages_received_total: messages ReceiveMessage gave */
    METRICS_DELETED,          /* lambdo_messages_deleted_total: deleted (done) */
    METRICS_INVALID,          /* lambdo_messages_invalid_total: refused by validation */
    METRICS_RETURNED,         /* lambdo_messages_returned_total: handed back to the queue */
    METRICS_FLY_RATE_LIMITED, /* lambdo_fly_rate_limited_total: Fly answers 429 */
    METRICS_POOL_WARM,        /* lambdo_pool_dispatches_total{via="warm"}: groups sent to a
                                 pooled Machine that was there */
    METRICS_POOL_NEW,         /* {via="new"}: to one created for them */
    METRICS_POOL_IDLE,        /* lambdo_pool_machines{state="idle"}: a gauge, metrics_set */
    METRICS_POOL_BUSY,        /* {state="busy"} */
    METRICS_NCOUNTERS,
    METRICS_IN_FLIGHT = METRICS_NCOUNTERS /* lambdo_machines_in_flight: a gauge (metrics_set)
                                             that may go below 0; never counted */
};

enum metrics_region_counter {
    METRICS_MACHINES_CREATED, /* lambdo_machines_created_total{region} */
    METRICS_MACHINES_FAILED,  /* lambdo_machines_failed_total{region}: failed create attempts */
    METRICS_NREGION_COUNTERS
};

enum metrics_hist {
    METRICS_SQS,              /* lambdo_sqs_request_seconds{operation} */
    METRICS_FLY,              /* lambdo_fly_request_seconds{operation} */
    METRICS_NHISTS
};

/* One histogram series: one operation label. */
struct metrics_series {
    atomic_int ready;                           /* 0 free, 1 being named, 2 named */
    char operation[METRICS_NAME_MAX];
    atomic_uint_fast64_t bucket[METRICS_NBUCKETS + 1]; /* per bucket, not cumulative; the
                                                   last one: above the largest bound */
    atomic_uint_fast64_t sum_us;                /* microseconds */
};

struct metrics_server;

struct metrics {
    char version[64];
    char regions[METRICS_MAX_REGIONS + 1][METRICS_NAME_MAX]; /* then "other" */
    size_t nregions;                            /* "other" not counted */
    atomic_uint_fast64_t counter[METRICS_NCOUNTERS + 1];   /* then in flight, an int64_t */
    atomic_uint_fast64_t by_region[METRICS_NREGION_COUNTERS][METRICS_MAX_REGIONS + 1];
    /* [METRICS_MAX_OPERATIONS] is "other", the overflow */
    struct metrics_series hist[METRICS_NHISTS][METRICS_MAX_OPERATIONS + 1];

    /* health */
    int64_t stale_ms;                           /* 3 x long poll + 30 s */
    int64_t (*clock_ms)(void *ctx);             /* monotonic milliseconds */
    void *clock_ctx;
    atomic_int_fast64_t good_ms;                /* last successful receive or idle end */
    atomic_int ever_received;
    atomic_uint failures;                       /* failed receives in a row */
    atomic_int idle;

    struct metrics_server *server;              /* NULL unless serving */
};

struct metrics_options {
    const char *const *regions;     /* the configured regions, primary first */
    size_t nregions;                /* at most METRICS_MAX_REGIONS */
    const char *version;            /* lambdo_build_info{version} */
    int long_poll_seconds;          /* LAMBDO_SQS_LONG_POLL_SECONDS */
    int64_t (*clock_ms)(void *ctx); /* NULL: CLOCK_MONOTONIC; tests pass a fake */
    void *clock_ctx;
};

/* Sets every number to 0. LERR_INVALID for too many regions, or a region or version
 * name that is empty or too long (region names are at most METRICS_NAME_MAX - 1 bytes);
 * duplicate regions are counted once. Undo with metrics_destroy. */
int metrics_init(struct metrics *m, const struct metrics_options *o, struct lerr *e);

/* Stops the server's threads and closes its sockets if it runs: connections in progress
 * are dropped (every thread wakes at once; none waits out its timeout). metrics_init
 * itself takes nothing to free; once more does nothing. */
void metrics_destroy(struct metrics *m);

/* ---- counting: any thread; m may be NULL (nothing counted) --------------------------- */

/* n more of c. c == METRICS_NCOUNTERS counts nothing: a caller that handles several
 * kinds of batch (deletes, returns, heartbeats) can pass it for the kind not counted. */
void metrics_count(struct metrics *m, enum metrics_counter c, uint64_t n);

/* One more for region; a region not configured (or NULL, "") counts as "other". */
void metrics_count_region(struct metrics *m, enum metrics_region_counter c, const char *region);

/* A gauge's value: METRICS_POOL_IDLE and METRICS_POOL_BUSY (lambdo_pool_machines, the warm
 * pool's free and busy Machines), METRICS_IN_FLIGHT (lambdo_machines_in_flight, the daemon's
 * count of groups holding a Machine slot). */
void metrics_set(struct metrics *m, enum metrics_counter gauge, int64_t value);

/* One request's duration. NaN and negative durations count as 0. */
void metrics_observe(struct metrics *m, enum metrics_hist h, const char *operation, double seconds);

/* Monotonic seconds, for timing: t0 = metrics_clock(); ...; metrics_clock() - t0. */
double metrics_clock(void);

/* ---- health --------------------------------------------------------------------------- */

/* The outcome of one ReceiveMessage (after its own retries): ok 1 or 0. */
void metrics_receive_result(struct metrics *m, int ok);

/* idle 1: the daemon does not receive on purpose (every Machine slot is taken), so the
 * time without a receive is not held against it; idle 0: receiving again, the clock of
 * "no successful receive for..." starts over now. */
void metrics_receive_idle(struct metrics *m, int idle);

/* 0 when healthy (reason "ok"), -1 when not, with the reason ("the last 3 receives from
 * SQS failed", "no successful receive from SQS for 75 s (limit 60 s)"). Pure. */
int metrics_health(const struct metrics *m, int64_t now_ms, char *reason, size_t cap);

/* ---- rendering and answering (pure) ---------------------------------------------------- */

/* The exposition text in a new NUL-terminated buffer (free()), its length in *len; NULL when
 * out of memory. 3 to 8 KiB in practice; about 53 KiB with every label slot used and every
 * name as long as allowed. */
char *metrics_render(const struct metrics *m, size_t *len);

enum metrics_parse {
    METRICS_PARSE_OK,          /* a complete request head */
    METRICS_PARSE_INCOMPLETE,  /* no empty line yet: read more */
    METRICS_PARSE_BAD,         /* not HTTP/1.x: answer 400 */
    METRICS_PARSE_VERSION,     /* HTTP/2 or later on a text connection: answer 505 */
};

struct metrics_request {
    const char *method;        /* into the buffer, not NUL-terminated */
    size_t method_len;
    const char *path;          /* the target without its query */
    size_t path_len;
    int minor;                 /* HTTP/1.<minor> */
    size_t head_len;           /* bytes up to and including the empty line */
};

/* Parses the request head at the start of buf[0..len): request line (after at most a
 * few empty lines), header fields up to the first empty line. Lines end with CRLF or LF.
 * The target must be in origin form ("/path?query"). An HTTP/1.1 request without Host
 * is BAD (RFC 9112 3.2). Pure; the caller enforces METRICS_HEAD_MAX. */
enum metrics_parse metrics_parse_request(const char *buf, size_t len, struct metrics_request *r);

/* The whole answer (status line, headers, body unless HEAD) to the request head in
 * buf[0..len), or to a head that did not arrive: too_large 1 answers 431. now_ms is the
 * health clock's time. Returns a new buffer (free()) and its length in *out_len, or NULL
 * when out of memory. *status (may be NULL) gets the status code. */
char *metrics_respond(const struct metrics *m, const char *buf, size_t len, int too_large,
                      int64_t now_ms, size_t *out_len, int *status);

/* ---- the server ------------------------------------------------------------------------ */

struct metrics_addr {
    int family;                /* AF_INET, AF_INET6, or AF_UNSPEC for ":port" (every
                                  interface, IPv6 and IPv4) */
    unsigned char ip[16];      /* 4 bytes for AF_INET */
    int port;                  /* 0..65535; 0: the kernel chooses */
};

/* Parses an address as described at the top of this file. LERR_INVALID quoting it.
 * Pure: config.c calls it to check LAMBDO_METRICS_ADDR before anything starts. */
int metrics_addr_parse(const char *s, struct metrics_addr *a, struct lerr *e);

/* Listens on addr and starts the server threads (which block every signal: they stay
 * for the daemon's signalfd). LERR_INVALID for a bad address, LERR_IO when the socket
 * cannot be had (the port is taken: "address already in use"); both name the address.
 * LERR_INVALID too if m is already serving. */
int metrics_serve(struct metrics *m, const char *addr, struct lerr *e);

/* The port the server listens on (the chosen one for port 0), or 0 when not serving. */
int metrics_port(const struct metrics *m);

#endif
