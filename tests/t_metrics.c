/* metrics: the exposition text byte for byte for a known state, label escaping, histogram
 * buckets (bounds inclusive, cumulative, +Inf = _count), operation overflow into "other",
 * health on a fake clock, the request parser and the answers (table), addresses, eight
 * threads counting at once, and the server on loopback (answers, a second server on a
 * taken port, stop with a client still connected). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "metrics.h"

/* ---- helpers ----------------------------------------------------------------------- */

static int64_t fake_clock(void *ctx)
{
    return *(const int64_t *)ctx;
}

static void init(struct metrics *m, const char *const *regions, size_t n, int64_t *clock)
{
    struct metrics_options o = { regions, n, "1.2.3", 10, clock ? fake_clock : NULL, clock };
    struct lerr e = { 0 };

    if (metrics_init(m, &o, &e) != 0)
        fail_msg("metrics_init: %s", e.msg);
}

/* The exposition text, valid until the next call. */
static char *render(const struct metrics *m)
{
    static char *text;
    size_t n = 0;

    free(text);
    text = metrics_render(m, &n);
    assert_non_null(text);
    assert_true(n > 0);
    assert_int_equal(strlen(text), n);
    return text;
}

/* The value of the sample line that starts with `series ` (name and labels, exactly). */
static double sample(const char *text, const char *series)
{
    size_t n = strlen(series);

    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    }
    fail_msg("no sample %s in:\n%s", series, text);
    return NAN;
}

static int has_line_starting(const char *text, const char *prefix)
{
    size_t n = strlen(prefix);

    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, prefix, n) == 0)
            return 1;
    return 0;
}

/* ---- rendering --------------------------------------------------------------------- */

static const char *const IAD_ORD[] = { "iad", "ord" };

static void test_render_exact(void **state)
{
    static const char want[] =
        "# HELP lambdo_build_info The running lambdo's version (always 1).\n"
        "# TYPE lambdo_build_info gauge\n"
        "lambdo_build_info{version=\"1.2.3\"} 1\n"
        "# HELP lambdo_messages_received_total Messages received from SQS.\n"
        "# TYPE lambdo_messages_received_total counter\n"
        "lambdo_messages_received_total 12\n"
        "# HELP lambdo_messages_deleted_total Messages deleted from SQS once their work was done.\n"
        "# TYPE lambdo_messages_deleted_total counter\n"
        "lambdo_messages_deleted_total 9\n"
        "# HELP lambdo_messages_invalid_total Messages refused by validation (left for the "
        "dead-letter queue).\n"
        "# TYPE lambdo_messages_invalid_total counter\n"
        "lambdo_messages_invalid_total 1\n"
        "# HELP lambdo_messages_returned_total Messages handed back to the queue to run again.\n"
        "# TYPE lambdo_messages_returned_total counter\n"
        "lambdo_messages_returned_total 2\n"
        "# HELP lambdo_machines_created_total Fly Machines created, by region.\n"
        "# TYPE lambdo_machines_created_total counter\n"
        "lambdo_machines_created_total{region=\"iad\"} 2\n"
        "lambdo_machines_created_total{region=\"ord\"} 1\n"
        "lambdo_machines_created_total{region=\"other\"} 1\n"
        "# HELP lambdo_machines_failed_total Machine create attempts that failed, by region "
        "tried.\n"
        "# TYPE lambdo_machines_failed_total counter\n"
        "lambdo_machines_failed_total{region=\"iad\"} 1\n"
        "lambdo_machines_failed_total{region=\"ord\"} 0\n"
        "lambdo_machines_failed_total{region=\"other\"} 0\n"
        "# HELP lambdo_fly_rate_limited_total Fly Machines API answers 429 (rate limited).\n"
        "# TYPE lambdo_fly_rate_limited_total counter\n"
        "lambdo_fly_rate_limited_total 3\n"
        "# HELP lambdo_machines_in_flight Groups holding a Machine slot (running Machines in "
        "exit mode, creates in create mode).\n"
        "# TYPE lambdo_machines_in_flight gauge\n"
        "lambdo_machines_in_flight 4\n"
        "# HELP lambdo_pool_machines LAMBDO_POOL: pooled Machines free (idle) and in use by a "
        "group (busy).\n"
        "# TYPE lambdo_pool_machines gauge\n"
        "lambdo_pool_machines{state=\"idle\"} 2\n"
        "lambdo_pool_machines{state=\"busy\"} 5\n"
        "# HELP lambdo_pool_dispatches_total LAMBDO_POOL: groups sent to a pooled Machine already "
        "there (warm) or created for them (new).\n"
        "# TYPE lambdo_pool_dispatches_total counter\n"
        "lambdo_pool_dispatches_total{via=\"warm\"} 7\n"
        "lambdo_pool_dispatches_total{via=\"new\"} 1\n"
        "# HELP lambdo_sqs_request_seconds Duration of SQS API requests (each attempt), by "
        "operation.\n"
        "# TYPE lambdo_sqs_request_seconds histogram\n"
        "lambdo_sqs_request_seconds_bucket{operation=\"ReceiveMessage\",le=\"0.005\"} 0\n"
        "lambdo_sqs_request_seconds_bucket{operation=\"ReceiveMessage\",le=\"0.01\"} 0\n"
        "lambdo_sqs_request_seconds_bucket{operation=\"ReceiveMessage\",le=\"0.025\"} 0\n"
        "lambdo_sqs_request_seconds_bucket{operation=\"ReceiveMessage\",le=\"0.05\"} 0\n"
        "lambdo_sqs_request_seconds_bucket{operation=\"ReceiveMessage\",le=\"0.1\"} 0\n"
        "lambdo_sqs_request_seconds_bucket{operation=\"ReceiveMessage\",le=\"0.25\"} 1\n"
        "lambdo_sqs_request_seconds_bucket{operation=\"ReceiveMessage\",le=\"0.5\"} 1\n"
        "lambdo_sqs_request_seconds_bucket{operation=\"ReceiveMessage\",le=\"1\"} 1\n"
        "lambdo_sqs_request_seconds_bucket{operation=\"ReceiveMessage\",le=\"2.5\"} 1\n"
        "lambdo_sqs_request_seconds_bucket{operation=\"ReceiveMessage\",le=\"5\"} 1\n"
        "lambdo_sqs_request_seconds_bucket{operation=\"ReceiveMessage\",le=\"10\"} 1\n"
        "lambdo_sqs_request_seconds_bucket{operation=\"ReceiveMessage\",le=\"30\"} 2\n"
        "lambdo_sqs_request_seconds_bucket{operation=\"ReceiveMessage\",le=\"60\"} 2\n"
        "lambdo_sqs_request_seconds_bucket{operation=\"ReceiveMessage\",le=\"+Inf\"} 2\n"
        "lambdo_sqs_request_seconds_sum{operation=\"ReceiveMessage\"} 20.120000\n"
        "lambdo_sqs_request_seconds_count{operation=\"ReceiveMessage\"} 2\n"
        "# HELP lambdo_fly_request_seconds Duration of Fly Machines API requests (each "
        "attempt), by operation.\n"
        "# TYPE lambdo_fly_request_seconds histogram\n"
        "lambdo_fly_request_seconds_bucket{operation=\"create\",le=\"0.005\"} 0\n"
        "lambdo_fly_request_seconds_bucket{operation=\"create\",le=\"0.01\"} 0\n"
        "lambdo_fly_request_seconds_bucket{operation=\"create\",le=\"0.025\"} 0\n"
        "lambdo_fly_request_seconds_bucket{operation=\"create\",le=\"0.05\"} 0\n"
        "lambdo_fly_request_seconds_bucket{operation=\"create\",le=\"0.1\"} 0\n"
        "lambdo_fly_request_seconds_bucket{operation=\"create\",le=\"0.25\"} 0\n"
        "lambdo_fly_request_seconds_bucket{operation=\"create\",le=\"0.5\"} 0\n"
        "lambdo_fly_request_seconds_bucket{operation=\"create\",le=\"1\"} 0\n"
        "lambdo_fly_request_seconds_bucket{operation=\"create\",le=\"2.5\"} 1\n"
        "lambdo_fly_request_seconds_bucket{operation=\"create\",le=\"5\"} 1\n"
        "lambdo_fly_request_seconds_bucket{operation=\"create\",le=\"10\"} 1\n"
        "lambdo_fly_request_seconds_bucket{operation=\"create\",le=\"30\"} 1\n"
        "lambdo_fly_request_seconds_bucket{operation=\"create\",le=\"60\"} 1\n"
        "lambdo_fly_request_seconds_bucket{operation=\"create\",le=\"+Inf\"} 1\n"
        "lambdo_fly_request_seconds_sum{operation=\"create\"} 1.500000\n"
        "lambdo_fly_request_seconds_count{operation=\"create\"} 1\n";
    struct metrics m;

    init(&m, IAD_ORD, 2, NULL);
    metrics_count(&m, METRICS_RECEIVED, 12);
    metrics_count(&m, METRICS_DELETED, 9);
    metrics_count(&m, METRICS_INVALID, 1);
    metrics_count(&m, METRICS_RETURNED, 2);
    metrics_count(&m, METRICS_FLY_RATE_LIMITED, 3);
    metrics_count_region(&m, METRICS_MACHINES_CREATED, "iad");
    metrics_count_region(&m, METRICS_MACHINES_CREATED, "iad");
    metrics_count_region(&m, METRICS_MACHINES_CREATED, "ord");
    metrics_count_region(&m, METRICS_MACHINES_CREATED, "syd");
    metrics_count_region(&m, METRICS_MACHINES_FAILED, "iad");
    metrics_set(&m, METRICS_IN_FLIGHT, 4);
    metrics_set(&m, METRICS_POOL_IDLE, 9);
    metrics_set(&m, METRICS_POOL_BUSY, 9);
    metrics_set(&m, METRICS_POOL_IDLE, 2);  /* a gauge: the last value, not a sum */
    metrics_set(&m, METRICS_POOL_BUSY, 5);
    metrics_count(&m, METRICS_POOL_WARM, 7);
    metrics_count(&m, METRICS_POOL_NEW, 1);
    metrics_observe(&m, METRICS_SQS, "ReceiveMessage", 0.12);
    metrics_observe(&m, METRICS_SQS, "ReceiveMessage", 20.0);
    metrics_observe(&m, METRICS_FLY, "create", 1.5);
    assert_string_equal(render(&m), want);
    metrics_destroy(&m);
}

/* A fresh state: every counter, every configured region and "other" at 0; histograms
 * have their HELP and TYPE but no series until an operation is observed. */
static void test_render_empty(void **state)
{
    struct metrics m;
    const char *t;

    init(&m, NULL, 0, NULL);
    t = render(&m);
    assert_int_equal(sample(t, "lambdo_messages_received_total"), 0);
    assert_int_equal(sample(t, "lambdo_machines_created_total{region=\"other\"}"), 0);
    assert_int_equal(sample(t, "lambdo_machines_in_flight"), 0);
    assert_true(has_line_starting(t, "# TYPE lambdo_sqs_request_seconds histogram\n"));
    assert_false(has_line_starting(t, "lambdo_sqs_request_seconds_bucket"));
    metrics_set(&m, METRICS_IN_FLIGHT, -1);  /* a gauge may go below 0 if the daemon says so */
    assert_true(sample(render(&m), "lambdo_machines_in_flight") == -1);
    metrics_destroy(&m);
}

static void test_label_escaping(void **state)
{
    static const char *const odd[] = { "a\"b\\c\nd", "caf\xc3\xa9\t" };
    struct metrics m;
    const char *t;

    init(&m, odd, 2, NULL);
    metrics_count_region(&m, METRICS_MACHINES_CREATED, "a\"b\\c\nd");
    metrics_observe(&m, METRICS_FLY, "we\"ird\\op\n", 0.001);
    t = render(&m);
    assert_int_equal(sample(t, "lambdo_machines_created_total{region=\"a\\\"b\\\\c\\nd\"}"), 1);
    /* bytes outside printable ASCII become '?': the text stays valid UTF-8 */
    assert_int_equal(sample(t, "lambdo_machines_created_total{region=\"caf???\"}"), 0);
    assert_int_equal(
        sample(t, "lambdo_fly_request_seconds_count{operation=\"we\\\"ird\\\\op\\n\"}"), 1);
    metrics_destroy(&m);
}

/* ---- histograms -------------------------------------------------------------------- */

static void test_buckets(void **state)
{
    static const struct { double s; const char *le; } obs[] = {
        { 0, "0.005" }, { -3, "0.005" }, { NAN, "0.005" }, { 0.005, "0.005" },
        { 0.0050004, "0.005" },  /* rounds to 5000 us */
        { 0.0050006, "0.01" }, { 0.01, "0.01" }, { 0.3, "0.5" }, { 1, "1" }, { 59.9, "60" },
        { 60, "60" }, { 60.001, "+Inf" }, { INFINITY, "+Inf" }, { 1e300, "+Inf" },
    };
    static const char *const les[] = { "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5",
                                       "1", "2.5", "5", "10", "30", "60", "+Inf" };
    struct metrics m;
    const char *t;
    double prev = 0;
    char series[128];

    init(&m, NULL, 0, NULL);
    for (size_t i = 0; i < sizeof obs / sizeof obs[0]; i++)
        metrics_observe(&m, METRICS_SQS, "op", obs[i].s);
    t = render(&m);
    for (size_t i = 0; i < sizeof les / sizeof les[0]; i++) {
        size_t want = 0;
        double got;
        /* cumulative: every observation whose bucket is this one or below */
        for (size_t k = 0; k < sizeof obs / sizeof obs[0]; k++)
            for (size_t j = 0; j <= i; j++)
                want += strcmp(obs[k].le, les[j]) == 0;
        snprintf(series, sizeof series,
                 "lambdo_sqs_request_seconds_bucket{operation=\"op\",le=\"%s\"}", les[i]);
        got = sample(t, series);
        assert_int_equal((size_t)got, want);
        assert_true(got >= prev);
        prev = got;
    }
    assert_int_equal(sample(t, "lambdo_sqs_request_seconds_count{operation=\"op\"}"), prev);
    assert_int_equal(prev, sizeof obs / sizeof obs[0]);
    /* the sum in microseconds: 0.005 + 0.005 + 0.005001 + 0.01 + 0.3 + 1 + 59.9 + 60 +
     * 60.001 + 1e9 + 1e9 (infinite and huge durations are capped at 1e9 s) */
    assert_true(has_line_starting(t, "lambdo_sqs_request_seconds_sum{operation=\"op\"} "
                                     "2000000181.226001\n"));
    metrics_destroy(&m);
}

static void test_operations_overflow(void **state)
{
    struct metrics m;
    const char *t;
    char op[32];
    char longname[METRICS_NAME_MAX + 1], series[128];

    init(&m, NULL, 0, NULL);
    for (int i = 0; i < METRICS_MAX_OPERATIONS + 3; i++) {
        snprintf(op, sizeof op, "op%d", i);
        metrics_observe(&m, METRICS_FLY, op, 0.1);
    }
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    metrics_observe(&m, METRICS_FLY, longname, 0.1);
    metrics_observe(&m, METRICS_FLY, NULL, 0.1);
    metrics_observe(&m, METRICS_FLY, "", 0.1);
    metrics_observe(&m, METRICS_FLY, "other", 0.1);
    metrics_observe(&m, METRICS_FLY, "op0", 0.1);
    t = render(&m);
    assert_int_equal(sample(t, "lambdo_fly_request_seconds_count{operation=\"op0\"}"), 2);
    snprintf(series, sizeof series, "lambdo_fly_request_seconds_count{operation=\"op%d\"}",
             METRICS_MAX_OPERATIONS - 1);
    assert_int_equal(sample(t, series), 1);
    /* 3 past the limit, the long name, NULL, "", and "other" itself */
    assert_int_equal(sample(t, "lambdo_fly_request_seconds_count{operation=\"other\"}"), 7);
    assert_false(has_line_starting(t, "lambdo_fly_request_seconds_count{operation=\"op12\"}"));
    assert_false(has_line_starting(t, "lambdo_sqs_request_seconds_count"));
    metrics_destroy(&m);
}

/* Every label slot used with the longest names: the text stays well within what the
 * server's buffer grows to. */
static void test_render_max(void **state)
{
    const char *regions[METRICS_MAX_REGIONS];
    char names[METRICS_MAX_REGIONS][METRICS_NAME_MAX];
    struct metrics m;
    char op[METRICS_NAME_MAX], *text;
    size_t n;

    for (int i = 0; i < METRICS_MAX_REGIONS; i++) {
        /* distinct, as long as allowed, and every byte but two escaped */
        snprintf(names[i], METRICS_NAME_MAX, "%02d", i);
        memset(names[i] + 2, '"', METRICS_NAME_MAX - 3);
        names[i][METRICS_NAME_MAX - 1] = '\0';
        regions[i] = names[i];
    }
    init(&m, regions, METRICS_MAX_REGIONS, NULL);
    assert_int_equal(m.nregions, METRICS_MAX_REGIONS);
    for (int h = 0; h < METRICS_NHISTS; h++)
        for (int i = 0; i <= METRICS_MAX_OPERATIONS; i++) {
            memset(op, '\\', sizeof op - 1);
            op[sizeof op - 1] = '\0';
            op[0] = (char)('A' + i);
            metrics_observe(&m, h, i == METRICS_MAX_OPERATIONS ? "other" : op, 1e9);
        }
    for (int c = 0; c < METRICS_NCOUNTERS; c++)
        metrics_count(&m, c, UINT64_MAX);
    text = metrics_render(&m, &n);
    assert_non_null(text);
    print_message("largest exposition: %zu bytes\n", n);
    assert_true(n > 0 && n < (1 << 17));
    free(text);
    metrics_destroy(&m);
}

/* ---- set-up ------------------------------------------------------------------------ */

static void test_init(void **state)
{
    static const char *const dup[] = { "iad", "ord", "iad", "other", "ord", "ams" };
    static const char *const empty[] = { "iad", "" };
    char longname[METRICS_NAME_MAX + 1];
    const char *const toolong[] = { longname };
    const char *many[METRICS_MAX_REGIONS + 1];
    struct metrics_options o = { dup, 6, "v", 0, NULL, NULL };
    struct metrics m;
    struct lerr e = { 0 };

    assert_int_equal(metrics_init(&m, &o, &e), 0);
    metrics_count(&m, METRICS_NCOUNTERS, 5);  /* the "count nothing" kind */
    assert_int_equal(m.nregions, 3);
    assert_string_equal(m.regions[2], "ams");
    assert_int_equal(m.stale_ms, 30000);
    metrics_count_region(&m, METRICS_MACHINES_FAILED, "other");
    metrics_count_region(&m, METRICS_MACHINES_FAILED, NULL);
    assert_int_equal(sample(render(&m), "lambdo_machines_failed_total{region=\"other\"}"), 2);
    metrics_destroy(&m);

    o.regions = empty;
    o.nregions = 2;
    assert_int_equal(metrics_init(&m, &o, &e), -1);
    assert_int_equal(e.kind, LERR_INVALID);
    memset(longname, 'r', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    o.regions = toolong;
    o.nregions = 1;
    assert_int_equal(metrics_init(&m, &o, &e), -1);
    assert_non_null(strstr(e.msg, "region"));
    for (int i = 0; i <= METRICS_MAX_REGIONS; i++)
        many[i] = "x";
    o.regions = many;
    o.nregions = METRICS_MAX_REGIONS + 1;
    assert_int_equal(metrics_init(&m, &o, &e), -1);
    o.nregions = 0;
    o.version = "";
    assert_int_equal(metrics_init(&m, &o, &e), -1);
    assert_non_null(strstr(e.msg, "version"));

    /* NULL metrics: counting is a no-op, so callers without metrics need no checks */
    metrics_count(NULL, METRICS_RECEIVED, 1);
    metrics_count_region(NULL, METRICS_MACHINES_CREATED, "iad");
    metrics_observe(NULL, METRICS_SQS, "x", 1);
    metrics_set(NULL, METRICS_IN_FLIGHT, 1);
    metrics_receive_result(NULL, 1);
    metrics_receive_idle(NULL, 1);
}

/* ---- health ------------------------------------------------------------------------ */

static void assert_health(const struct metrics *m, int64_t now, int want, const char *words)
{
    char reason[256];
    int rc = metrics_health(m, now, reason, sizeof reason);

    if (rc != want || !strstr(reason, words))
        fail_msg("at %lld ms: health %d \"%s\", want %d with \"%s\"", (long long)now, rc,
                 reason, want, words);
}

static void test_health(void **state)
{
    int64_t now = 1000000;
    struct metrics m;

    init(&m, NULL, 0, &now);  /* long poll 10 s: stale after 3 x 10 + 30 = 60 s */
    assert_int_equal(m.stale_ms, 60000);
    assert_health(&m, now, 0, "ok");
    now += 60000;
    assert_health(&m, now, 0, "ok");           /* the limit itself is still fine */
    now += 1;
    assert_health(&m, now, -1, "no successful receive from SQS in the 60 s since the start");
    metrics_receive_result(&m, 1);
    assert_health(&m, now, 0, "ok");
    metrics_receive_result(&m, 0);
    metrics_receive_result(&m, 0);
    assert_health(&m, now, 0, "ok");
    metrics_receive_result(&m, 0);
    assert_health(&m, now, -1, "the last 3 receives from SQS failed");
    metrics_receive_result(&m, 0);
    assert_health(&m, now, -1, "the last 4 receives from SQS failed");
    metrics_receive_result(&m, 1);
    assert_health(&m, now, 0, "ok");
    now += 75000;
    assert_health(&m, now, -1, "no successful receive from SQS for 75 s (limit 60 s)");
    metrics_receive_result(&m, 1);

    /* every slot taken: not receiving is the daemon's choice, however long */
    metrics_receive_idle(&m, 1);
    now += 3600000;
    assert_health(&m, now, 0, "ok");
    metrics_receive_idle(&m, 1);
    metrics_receive_idle(&m, 0);               /* the clock starts over here */
    now += 59000;
    metrics_receive_idle(&m, 0);               /* saying it again does not restart it */
    assert_health(&m, now, 0, "ok");
    now += 2000;
    assert_health(&m, now, -1, "for 61 s");
    /* failures count even while idle */
    metrics_receive_idle(&m, 1);
    for (int i = 0; i < METRICS_HEALTH_FAILURES; i++)
        metrics_receive_result(&m, 0);
    assert_health(&m, now, -1, "receives from SQS failed");
    metrics_destroy(&m);
}

static void test_health_short_poll(void **state)
{
    int64_t now = 0;
    struct metrics_options o = { NULL, 0, "v", 20, fake_clock, &now };
    struct metrics m;
    struct lerr e;

    assert_int_equal(metrics_init(&m, &o, &e), 0);
    assert_int_equal(m.stale_ms, 90000);
    metrics_destroy(&m);
    o.long_poll_seconds = 0;
    assert_int_equal(metrics_init(&m, &o, &e), 0);
    assert_int_equal(m.stale_ms, 30000);
    metrics_destroy(&m);
}

/* ---- requests ---------------------------------------------------------------------- */

struct parse_case {
    const char *in;
    enum metrics_parse want;
    const char *method, *path;  /* when OK */
    int minor;
};

static const struct parse_case parse_cases[] = {
    { "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", METRICS_PARSE_OK, "GET", "/metrics", 1 },
    { "GET /metrics HTTP/1.0\r\n\r\n", METRICS_PARSE_OK, "GET", "/metrics", 0 },
    { "HEAD /healthz?verbose=1 HTTP/1.1\nhost:x\n\n", METRICS_PARSE_OK, "HEAD", "/healthz", 1 },
    { "\r\n\r\nGET / HTTP/1.1\r\nHOST: a\r\nAccept: */*\r\nX-Empty:\r\n\r\n", METRICS_PARSE_OK,
      "GET", "/", 1 },
    { "DELETE /metrics HTTP/1.1\r\nHost: x\r\nUser-Agent: caf\xc3\xa9\r\n\r\n", METRICS_PARSE_OK,
      "DELETE", "/metrics", 1 },
    { "GET /?x HTTP/1.9\r\nHost: x\r\n\r\n", METRICS_PARSE_OK, "GET", "/", 9 },
    /* incomplete */
    { "", METRICS_PARSE_INCOMPLETE, NULL, NULL, 0 },
    { "G", METRICS_PARSE_INCOMPLETE, NULL, NULL, 0 },
    { "GET /metrics HTT", METRICS_PARSE_INCOMPLETE, NULL, NULL, 0 },
    { "GET /metrics HTTP/1.1\r\n", METRICS_PARSE_INCOMPLETE, NULL, NULL, 0 },
    { "GET /metrics HTTP/1.1\r\nHost: x\r\n", METRICS_PARSE_INCOMPLETE, NULL, NULL, 0 },
    { "GET /metrics HTTP/1.1\r\nHost: x\r\n\r", METRICS_PARSE_INCOMPLETE, NULL, NULL, 0 },
    { "\r\n", METRICS_PARSE_INCOMPLETE, NULL, NULL, 0 },
    { "\r", METRICS_PARSE_INCOMPLETE, NULL, NULL, 0 },       /* the LF may follow */
    { "\r\n\r", METRICS_PARSE_INCOMPLETE, NULL, NULL, 0 },
    { "GET\r", METRICS_PARSE_INCOMPLETE, NULL, NULL, 0 },
    { "GET / HTTP/1.1\r", METRICS_PARSE_INCOMPLETE, NULL, NULL, 0 },
    /* bad */
    { "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", METRICS_PARSE_BAD, NULL, NULL, 0 },  /* TLS */
    { " GET / HTTP/1.1\r\n", METRICS_PARSE_BAD, NULL, NULL, 0 },
    { "GET\r\n\r\n", METRICS_PARSE_BAD, NULL, NULL, 0 },
    { "GET /\r\n\r\n", METRICS_PARSE_BAD, NULL, NULL, 0 },               /* HTTP/0.9 */
    { "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", METRICS_PARSE_BAD, NULL, NULL, 0 },
    { "GET / HTTP/1.1 \r\nHost: x\r\n\r\n", METRICS_PARSE_BAD, NULL, NULL, 0 },
    { "GET metrics HTTP/1.1\r\nHost: x\r\n\r\n", METRICS_PARSE_BAD, NULL, NULL, 0 },
    { "GET http://x/metrics HTTP/1.1\r\nHost: x\r\n\r\n", METRICS_PARSE_BAD, NULL, NULL, 0 },
    { "GET * HTTP/1.1\r\nHost: x\r\n\r\n", METRICS_PARSE_BAD, NULL, NULL, 0 },
    { "GET / HTTP/1.1\r\n\r\n", METRICS_PARSE_BAD, NULL, NULL, 0 },     /* no Host */
    { "GET / HTTP/1.1\r\nHost x\r\n\r\n", METRICS_PARSE_BAD, NULL, NULL, 0 },
    { "GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", METRICS_PARSE_BAD, NULL, NULL, 0 },
    { "GET / HTTP/1.1\r\n: x\r\n\r\n", METRICS_PARSE_BAD, NULL, NULL, 0 },
    { "GET / HTTP/1.1\r\nHo st: x\r\n\r\n", METRICS_PARSE_BAD, NULL, NULL, 0 },
    { "GET / HTTP/1.1\rHost: x\r\n\r\n", METRICS_PARSE_BAD, NULL, NULL, 0 },
    { "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", METRICS_PARSE_BAD, NULL, NULL, 0 },
    { "GET / HTTP/1.1\r\nHost: x\r\n\r\r\n", METRICS_PARSE_BAD, NULL, NULL, 0 },
    { "GET / http/1.1\r\nHost: x\r\n\r\n", METRICS_PARSE_BAD, NULL, NULL, 0 },
    { "GET / HTTP/1.10\r\nHost: x\r\n\r\n", METRICS_PARSE_BAD, NULL, NULL, 0 },
    { "GET / HTTP/0.9\r\n\r\n", METRICS_PARSE_BAD, NULL, NULL, 0 },
    { "GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n", METRICS_PARSE_BAD, NULL, NULL, 0 },
    { "GE\x7fT / HTTP/1.1\r\n", METRICS_PARSE_BAD, NULL, NULL, 0 },
    { "GET /\x01", METRICS_PARSE_BAD, NULL, NULL, 0 },                   /* early */
    { "\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", METRICS_PARSE_BAD, NULL, NULL, 0 },
    /* version */
    { "GET / HTTP/2.0\r\n\r\n", METRICS_PARSE_VERSION, NULL, NULL, 0 },
    { "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", METRICS_PARSE_BAD, NULL, NULL, 0 },  /* '*' first */
};

static void test_parse_table(void **state)
{
    for (size_t i = 0; i < sizeof parse_cases / sizeof parse_cases[0]; i++) {
        const struct parse_case *c = &parse_cases[i];
        struct metrics_request r;
        enum metrics_parse got = metrics_parse_request(c->in, strlen(c->in), &r);

        if (got != c->want)
            fail_msg("case %zu \"%s\": got %d, want %d", i, c->in, got, c->want);
        if (got != METRICS_PARSE_OK)
            continue;
        assert_int_equal(r.method_len, strlen(c->method));
        assert_memory_equal(r.method, c->method, r.method_len);
        assert_int_equal(r.path_len, strlen(c->path));
        assert_memory_equal(r.path, c->path, r.path_len);
        assert_int_equal(r.minor, c->minor);
        assert_int_equal(r.head_len, strlen(c->in));
    }
}

/* Bytes after the head (a body, a pipelined request) are not part of it. */
static void test_parse_head_len(void **state)
{
    static const char in[] = "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
    struct metrics_request r;

    assert_int_equal(metrics_parse_request(in, sizeof in - 1, &r), METRICS_PARSE_OK);
    assert_int_equal(r.head_len, sizeof in - 4);
    /* the parser never reads past len: a head cut short is incomplete */
    assert_int_equal(metrics_parse_request(in, 30, &r), METRICS_PARSE_INCOMPLETE);
}

struct respond_case {
    const char *in;
    int too_large;
    int status;
    const char *has[3];       /* substrings of the answer */
    const char *body;         /* the exact body, or NULL to skip */
};

static const struct respond_case respond_cases[] = {
    { "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 0, 200,
      { "HTTP/1.1 200 OK\r\n", "Content-Length: 3\r\n", "Connection: close\r\n" }, "ok\n" },
    { "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 0, 200,
      { "HTTP/1.1 200 OK\r\n", "Content-Length: 3\r\n", "Connection: close\r\n" }, "" },
    { "GET /metrics?x=1 HTTP/1.0\r\n\r\n", 0, 200,
      { "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n", "Connection: close\r\n",
        "lambdo_build_info{version=\"1.2.3\"} 1\n" }, NULL },
    { "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 0, 404,
      { "HTTP/1.1 404 Not Found\r\n", "Connection: close\r\n", NULL },
      "not found: try /metrics or /healthz\n" },
    { "GET /metrics/ HTTP/1.1\r\nHost: x\r\n\r\n", 0, 404, { NULL }, NULL },
    { "HEAD /nope HTTP/1.1\r\nHost: x\r\n\r\n", 0, 404, { "Content-Length: 36\r\n" }, "" },
    { "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 0, 405,
      { "HTTP/1.1 405 Method Not Allowed\r\n", "Allow: GET, HEAD\r\n", "Connection: close\r\n" },
      "method not allowed: GET or HEAD\n" },
    { "get /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 0, 405, { "Allow: GET, HEAD\r\n" }, NULL },
    { "OPTIONS /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 0, 405, { "Allow: GET, HEAD\r\n" }, NULL },
    { "GET / HTTP/2.0\r\n\r\n", 0, 505, { "HTTP/1.1 505 HTTP Version Not Supported\r\n" }, NULL },
    { "\x16\x03\x01", 0, 400, { "HTTP/1.1 400 Bad Request\r\n", "Connection: close\r\n" },
      "bad request\n" },
    { "GET /metrics HTTP/1.1\r\nHost: x\r\nX: ", 1, 431,
      { "HTTP/1.1 431 Request Header Fields Too Large\r\n", "Connection: close\r\n" },
      "request head too large\n" },
};

static void test_respond_table(void **state)
{
    int64_t now = 0;
    struct metrics m;

    init(&m, IAD_ORD, 2, &now);
    for (size_t i = 0; i < sizeof respond_cases / sizeof respond_cases[0]; i++) {
        const struct respond_case *c = &respond_cases[i];
        size_t len = 0;
        int status = 0;
        char *out = metrics_respond(&m, c->in, strlen(c->in), c->too_large, now, &len, &status);
        const char *body;

        assert_non_null(out);
        assert_int_equal(strlen(out), len);
        if (status != c->status)
            fail_msg("case %zu: status %d, want %d:\n%s", i, status, c->status, out);
        for (int k = 0; k < 3 && c->has[k]; k++)
            if (!strstr(out, c->has[k]))
                fail_msg("case %zu: no \"%s\" in:\n%s", i, c->has[k], out);
        body = strstr(out, "\r\n\r\n") + 4;
        if (c->body)
            assert_string_equal(body, c->body);
        if (status != 405)
            assert_null(strstr(out, "Allow:"));
        free(out);
    }
    metrics_destroy(&m);
}

/* /healthz turns 503 with the reason, and the metrics' Content-Length is the body's. */
static void test_respond_health_and_length(void **state)
{
    static const char get[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    static const char met[] = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    int64_t now = 0;
    struct metrics m;
    size_t len;
    int status;
    char *out, want[64];

    init(&m, NULL, 0, &now);
    for (int i = 0; i < 3; i++)
        metrics_receive_result(&m, 0);
    out = metrics_respond(&m, get, sizeof get - 1, 0, now, &len, &status);
    assert_int_equal(status, 503);
    assert_non_null(strstr(out, "HTTP/1.1 503 Service Unavailable\r\n"));
    assert_string_equal(strstr(out, "\r\n\r\n") + 4,
                        "unhealthy: the last 3 receives from SQS failed\n");
    free(out);
    out = metrics_respond(&m, met, sizeof met - 1, 0, now, &len, &status);
    snprintf(want, sizeof want, "Content-Length: %zu\r\n", strlen(strstr(out, "\r\n\r\n") + 4));
    assert_non_null(strstr(out, want));
    free(out);
    metrics_destroy(&m);
}

/* ---- addresses --------------------------------------------------------------------- */

static void test_addr(void **state)
{
    static const struct { const char *in; int family; const char *ip; int port; } good[] = {
        { "127.0.0.1:9090", AF_INET, "127.0.0.1", 9090 },
        { "localhost:9090", AF_INET, "127.0.0.1", 9090 },
        { "0.0.0.0:1", AF_INET, "0.0.0.0", 1 },
        { "[::1]:9090", AF_INET6, "::1", 9090 },
        { "[::]:65535", AF_INET6, "::", 65535 },
        { "[fdaa:0:1::3]:9091", AF_INET6, "fdaa:0:1::3", 9091 },
        { ":9090", AF_UNSPEC, NULL, 9090 },
        { ":0", AF_UNSPEC, NULL, 0 },
        { "10.0.0.1:09090", AF_INET, "10.0.0.1", 9090 },
    };
    static const struct { const char *in, *why; } bad[] = {
        { "", "empty" }, { "9090", "no port" }, { "127.0.0.1", "no port" },
        { "127.0.0.1:", "port" }, { "127.0.0.1:65536", "port" }, { "127.0.0.1:-1", "port" },
        { "127.0.0.1:90a", "port" }, { "127.0.0.1:123456", "port" }, { "::1:9090", "brackets" },
        { "[::1:9090", "brackets" }, { "[127.0.0.1]:9090", "IPv6" },
        { "example.com:9090", "IP address" }, { "256.0.0.1:9090", "IP address" },
        { "[fe80::1%eth0]:9090", "IPv6" }, { " 127.0.0.1:9090", "IP address" },
    };
    struct metrics_addr a;
    struct lerr e = { 0 };

    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        unsigned char ip[16] = { 0 };
        if (metrics_addr_parse(good[i].in, &a, &e) != 0)
            fail_msg("%s: %s", good[i].in, e.msg);
        assert_int_equal(a.family, good[i].family);
        assert_int_equal(a.port, good[i].port);
        if (good[i].ip) {
            assert_int_equal(inet_pton(good[i].family, good[i].ip, ip), 1);
            assert_memory_equal(a.ip, ip, good[i].family == AF_INET ? 4 : 16);
        }
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (metrics_addr_parse(bad[i].in, &a, &e) == 0)
            fail_msg("%s: accepted", bad[i].in);
        assert_int_equal(e.kind, LERR_INVALID);
        if (!strstr(e.msg, bad[i].why))
            fail_msg("%s: \"%s\" lacks \"%s\"", bad[i].in, e.msg, bad[i].why);
        if (*bad[i].in && !strstr(e.msg, bad[i].in))
            fail_msg("%s: \"%s\" does not quote the address", bad[i].in, e.msg);
    }
    assert_int_equal(metrics_addr_parse(NULL, &a, &e), -1);
}

/* ---- threads ----------------------------------------------------------------------- */

#define THREADS 8
#define ROUNDS 20000

static void *hammer(void *arg)
{
    struct metrics *m = arg;
    static const char *const ops[] = { "create", "wait", "get", "stop" };
    static const char *const regions[] = { "iad", "ord", "nowhere" };

    for (int i = 0; i < ROUNDS; i++) {
        metrics_count(m, METRICS_RECEIVED, 1);
        metrics_count(m, METRICS_DELETED, 2);
        metrics_count_region(m, METRICS_MACHINES_CREATED, regions[i % 3]);
        metrics_observe(m, METRICS_FLY, ops[i % 4], 0.001 * (i % 100));
        metrics_receive_result(m, i % 2);
    }
    return NULL;
}

/* While they count, a reader renders: each snapshot is valid (cumulative buckets, the
 * +Inf bucket equal to _count). */
static void test_threads(void **state)
{
    pthread_t t[THREADS];
    struct metrics m;
    const char *text;
    uint64_t sum_us = 0;
    char sum[128];

    init(&m, IAD_ORD, 2, NULL);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hammer, &m), 0);
    for (int k = 0; k < 20; k++) {
        text = render(&m);
        for (int op = 0; op < 4; op++) {
            static const char *const ops[] = { "create", "wait", "get", "stop" };
            char a[128], b[128], label[64];
            snprintf(label, sizeof label, "operation=\"%s\"", ops[op]);
            if (!strstr(text, label))
                continue;  /* not observed yet */
            snprintf(a, sizeof a, "lambdo_fly_request_seconds_bucket{operation=\"%s\",le=\"+Inf\"}",
                     ops[op]);
            snprintf(b, sizeof b, "lambdo_fly_request_seconds_count{operation=\"%s\"}", ops[op]);
            assert_true(sample(text, a) == sample(text, b));
        }
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    text = render(&m);
    assert_int_equal(sample(text, "lambdo_messages_received_total"), THREADS * ROUNDS);
    assert_int_equal(sample(text, "lambdo_messages_deleted_total"), 2 * THREADS * ROUNDS);
    {
        double iad = sample(text, "lambdo_machines_created_total{region=\"iad\"}");
        double ord = sample(text, "lambdo_machines_created_total{region=\"ord\"}");
        double other = sample(text, "lambdo_machines_created_total{region=\"other\"}");
        assert_int_equal(iad, THREADS * ((ROUNDS + 2) / 3));
        assert_int_equal(ord, THREADS * ((ROUNDS + 1) / 3));
        assert_int_equal(iad + ord + other, THREADS * ROUNDS);
    }
    assert_int_equal(sample(text, "lambdo_fly_request_seconds_count{operation=\"create\"}"),
                     THREADS * ROUNDS / 4);
    /* each operation registered exactly once */
    assert_int_equal(strstr(strstr(text, "_count{operation=\"wait\"}") + 1,
                            "_count{operation=\"wait\"}"), NULL);
    for (int i = 0; i < ROUNDS; i++)
        if (i % 4 == 0)
            sum_us += (uint64_t)(1000 * (i % 100));
    sum_us *= THREADS;
    snprintf(sum, sizeof sum, "lambdo_fly_request_seconds_sum{operation=\"create\"} %llu.%06llu\n",
             (unsigned long long)(sum_us / 1000000), (unsigned long long)(sum_us % 1000000));
    assert_true(has_line_starting(text, sum));
    metrics_destroy(&m);
}

/* ---- the server on loopback --------------------------------------------------------- */

static int connect_to(int port)
{
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    return fd;
}

/* Sends req and reads the whole answer (the server closes). */
static char *exchange(int port, const char *req)
{
    static char buf[1 << 17];
    size_t len = 0;
    int fd = connect_to(port);
    ssize_t n;

    assert_int_equal(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
    while ((n = recv(fd, buf + len, sizeof buf - 1 - len, 0)) > 0)
        len += (size_t)n;
    assert_int_equal(n, 0);
    buf[len] = '\0';
    close(fd);
    return buf;
}

static void test_server(void **state)
{
    struct metrics m, other;
    struct lerr e = { 0 };
    char addr[32], *ans;
    int port, idle;

    init(&m, IAD_ORD, 2, NULL);
    assert_int_equal(metrics_port(&m), 0);
    if (metrics_serve(&m, "127.0.0.1:0", &e) != 0)
        fail_msg("metrics_serve: %s", e.msg);
    port = metrics_port(&m);
    assert_true(port > 0);
    assert_int_equal(metrics_serve(&m, "127.0.0.1:0", &e), -1);  /* already serving */

    metrics_count(&m, METRICS_RECEIVED, 5);
    ans = exchange(port, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_non_null(strstr(ans, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(ans, "\nlambdo_messages_received_total 5\n"));
    ans = exchange(port, "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_non_null(strstr(ans, "\r\n\r\nok\n"));
    /* a body the server never reads: drained, so the answer is not lost to a reset */
    ans = exchange(port, "POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    assert_non_null(strstr(ans, "HTTP/1.1 405 "));

    /* the same port again */
    init(&other, NULL, 0, NULL);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    assert_int_equal(metrics_serve(&other, addr, &e), -1);
    assert_int_equal(e.kind, LERR_IO);
    assert_non_null(strstr(e.msg, addr));
    assert_non_null(strstr(e.msg, "already in use"));
    assert_int_equal(metrics_serve(&other, "nowhere:1", &e), -1);
    assert_int_equal(e.kind, LERR_INVALID);
    metrics_destroy(&other);

    /* stop with a silent client connected: nothing leaks, the client sees the close */
    idle = connect_to(port);
    {
        struct pollfd p = { .fd = idle, .events = POLLIN };
        char c;
        poll(&p, 1, 100);
        metrics_destroy(&m);
        assert_int_equal(metrics_port(&m), 0);
        assert_int_equal(poll(&p, 1, 2000), 1);
        assert_true(recv(idle, &c, 1, 0) <= 0);
    }
    close(idle);
    metrics_destroy(&m);  /* twice is fine */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_exact),
        cmocka_unit_test(test_render_empty),
        cmocka_unit_test(test_label_escaping),
        cmocka_unit_test(test_buckets),
        cmocka_unit_test(test_operations_overflow),
        cmocka_unit_test(test_render_max),
        cmocka_unit_test(test_init),
        cmocka_unit_test(test_health),
        cmocka_unit_test(test_health_short_poll),
        cmocka_unit_test(test_parse_table),
        cmocka_unit_test(test_parse_head_len),
        cmocka_unit_test(test_respond_table),
        cmocka_unit_test(test_respond_health_and_length),
        cmocka_unit_test(test_addr),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_server),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
