#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "httpresp.h"
#include "json.h"
#include "log.h"

#define RELAXED memory_order_relaxed
#define SERVER_STACK (256 * 1024)
#define DRAIN_MS 1000            /* after the answer: reading what the client still sends */
#define ACCEPT_PAUSE_MS 100      /* after accept() ran out of descriptors or memory */
#define LISTEN_BACKLOG 128       /* waiting connections; a burst past the slots queues here */

/* Upper bounds, compared in whole microseconds (a duration is rounded to them once, so
 * 0.005 s lands in le="0.005" exactly) and written in seconds with %g. */
static const uint64_t bucket_us[METRICS_NBUCKETS] = {
    5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000,
    30000000, 60000000,
};

double metrics_clock(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Monotonic milliseconds: the server's deadlines, and the health clock unless a test
 * brings its own. */
static int64_t mono_ms(void *ctx)
{
    (void)ctx;
    return (int64_t)(metrics_clock() * 1000);
}

/* ------------------------------------------------------------------------- set-up ------ */

static int name_ok(const char *s, size_t cap)
{
    return s && *s && strlen(s) < cap;
}

/* The row of region r among the configured ones; the last row, "other", when none is r. */
static size_t region_row(const struct metrics *m, const char *r)
{
    size_t k = 0;

    while (k < m->nregions && (!r || strcmp(m->regions[k], r) != 0))
        k++;
    return k;
}

int metrics_init(struct metrics *m, const struct metrics_options *o, struct lerr *e)
{
    /* Lock-free integer atomics are stored as plain integers, so zeroed memory is a valid
     * zero for every counter. */
    memset(m, 0, sizeof *m);
    if (o->nregions > METRICS_MAX_REGIONS)
        return lerr_set(e, LERR_INVALID, "metrics: %zu regions, at most %d", o->nregions,
                        METRICS_MAX_REGIONS);
    if (!name_ok(o->version, sizeof m->version))
        return lerr_set(e, LERR_INVALID, "metrics: the version must be 1 to %zu bytes",
                        sizeof m->version - 1);
    strcpy(m->version, o->version);
    for (size_t i = 0; i < o->nregions; i++) {
        if (!name_ok(o->regions[i], METRICS_NAME_MAX))
            return lerr_set(e, LERR_INVALID, "metrics: region names must be 1 to %d bytes",
                            METRICS_NAME_MAX - 1);
        /* "other" already has its own row, the one unknown regions count in */
        if (strcmp(o->regions[i], "other") != 0 && region_row(m, o->regions[i]) == m->nregions)
            strcpy(m->regions[m->nregions++], o->regions[i]);
    }
    strcpy(m->regions[m->nregions], "other");
    for (int h = 0; h < METRICS_NHISTS; h++)
        strcpy(m->hist[h][METRICS_MAX_OPERATIONS].operation, "other");
    m->stale_ms = ((int64_t)(o->long_poll_seconds > 0 ? o->long_poll_seconds : 0) * 3 + 30) * 1000;
    m->clock_ms = o->clock_ms ? o->clock_ms : mono_ms;
    m->clock_ctx = o->clock_ctx;
    atomic_store(&m->good_ms, m->clock_ms(m->clock_ctx));
    return 0;
}

/* ---------------------------------------------------------------------- counting ------- */

void metrics_count(struct metrics *m, enum metrics_counter c, uint64_t n)
{
    if (m && (unsigned)c < METRICS_NCOUNTERS)
        atomic_fetch_add_explicit(&m->counter[c], n, RELAXED);
}

void metrics_count_region(struct metrics *m, enum metrics_region_counter c, const char *region)
{
    if (m && (unsigned)c < METRICS_NREGION_COUNTERS)
        atomic_fetch_add_explicit(&m->by_region[c][region_row(m, region)], 1, RELAXED);
}

void metrics_set(struct metrics *m, enum metrics_counter gauge, int64_t value)
{
    if (m && (unsigned)gauge <= METRICS_IN_FLIGHT)
        atomic_store_explicit(&m->counter[gauge], (uint64_t)value, RELAXED);
}

/* The series of op, naming a free slot on first use. Slots fill in order; the thread whose
 * compare-and-swap takes a slot from 0 (free) to 1 writes the name and publishes it with
 * 2 (release). A thread that finds 1 waits for 2 (the copy of a short name) before it
 * compares, so one name never gets two series: that would make the whole exposition
 * invalid. */
static struct metrics_series *series_get(struct metrics *m, enum metrics_hist h, const char *op)
{
    struct metrics_series *s = m->hist[h];
    int named = name_ok(op, METRICS_NAME_MAX) && strcmp(op, "other") != 0;

    for (size_t i = 0; named && i < METRICS_MAX_OPERATIONS; i++) {
        int ready = atomic_load_explicit(&s[i].ready, memory_order_acquire);
        if (ready == 0 && atomic_compare_exchange_strong(&s[i].ready, &ready, 1)) {
            strcpy(s[i].operation, op);
            atomic_store_explicit(&s[i].ready, 2, memory_order_release);
            return &s[i];
        }
        while (ready == 1) {     /* the namer may have been preempted: let it run */
            sched_yield();
            ready = atomic_load_explicit(&s[i].ready, memory_order_acquire);
        }
        if (strcmp(s[i].operation, op) == 0)
            return &s[i];
    }
    atomic_store_explicit(&s[METRICS_MAX_OPERATIONS].ready, 2, memory_order_release);
    return &s[METRICS_MAX_OPERATIONS];
}

void metrics_observe(struct metrics *m, enum metrics_hist h, const char *operation, double seconds)
{
    struct metrics_series *s;
    uint64_t us = 0;
    size_t b = 0;

    if (!m || (unsigned)h >= METRICS_NHISTS)
        return;
    if (seconds > 1e9)           /* also keeps the conversion below defined */
        seconds = 1e9;
    if (seconds > 0)             /* false for NaN too */
        us = (uint64_t)(seconds * 1e6 + 0.5);  /* rounded; no libm needed */
    while (b < METRICS_NBUCKETS && us > bucket_us[b])
        b++;
    s = series_get(m, h, operation);
    atomic_fetch_add_explicit(&s->bucket[b], 1, RELAXED);
    atomic_fetch_add_explicit(&s->sum_us, us, RELAXED);
}

/* ------------------------------------------------------------------------ health ------- */

void metrics_receive_result(struct metrics *m, int ok)
{
    if (m && !ok)
        atomic_fetch_add(&m->failures, 1);
    if (m && ok) {
        atomic_store(&m->good_ms, m->clock_ms(m->clock_ctx));
        atomic_store(&m->ever_received, 1);
        atomic_store(&m->failures, 0);
    }
}

void metrics_receive_idle(struct metrics *m, int idle)
{
    /* Only the end of an idle time restarts the clock: a daemon that says "not idle"
     * before every receive must not keep a stale health fresh. */
    if (m && atomic_exchange(&m->idle, idle ? 1 : 0) && !idle)
        atomic_store(&m->good_ms, m->clock_ms(m->clock_ctx));
}

int metrics_health(const struct metrics *m, int64_t now_ms, char *reason, size_t cap)
{
    unsigned failures = atomic_load(&m->failures);
    int64_t quiet = now_ms - atomic_load(&m->good_ms);
    int ever = atomic_load(&m->ever_received);

    if (failures >= METRICS_HEALTH_FAILURES) {
        snprintf(reason, cap, "the last %u receives from SQS failed", failures);
        return -1;
    }
    if (!atomic_load(&m->idle) && quiet > m->stale_ms) {
        snprintf(reason, cap, "no successful receive from SQS %s %" PRId64 " s%s (limit %"
                 PRId64 " s)", ever ? "for" : "in the", quiet / 1000,
                 ever ? "" : " since the start", m->stale_ms / 1000);
        return -1;
    }
    snprintf(reason, cap, "ok");
    return 0;
}

/* --------------------------------------------------------------------- rendering ------- */

enum family_kind { FAMILY_INFO, FAMILY_PLAIN, FAMILY_REGIONS, FAMILY_PAIR, FAMILY_HISTOGRAM };

/* Every metric, in the order of the exposition. index is into counter[] (PLAIN; PAIR's
 * two values), by_region[] (REGIONS: one sample per region) or hist[] (HISTOGRAM). */
static const struct family {
    const char *name, *type;
    enum family_kind kind;
    int index;
    const char *label, *values[2], *help;
} families[] = {
    { "lambdo_build_info", "gauge", FAMILY_INFO, 0, "version", { 0 },
      "The running lambdo's version (always 1)." },
    { "lambdo_messages_received_total", "counter", FAMILY_PLAIN, METRICS_RECEIVED, NULL, { 0 },
      "Messages received from SQS." },
    { "lambdo_messages_deleted_total", "counter", FAMILY_PLAIN, METRICS_DELETED, NULL, { 0 },
      "Messages deleted from SQS once their work was done." },
    { "lambdo_messages_invalid_total", "counter", FAMILY_PLAIN, METRICS_INVALID, NULL, { 0 },
      "Messages refused by validation (left for the dead-letter queue)." },
    { "lambdo_messages_returned_total", "counter", FAMILY_PLAIN, METRICS_RETURNED, NULL, { 0 },
      "Messages handed back to the queue to run again." },
    { "lambdo_machines_created_total", "counter", FAMILY_REGIONS, METRICS_MACHINES_CREATED,
      "region", { 0 }, "Fly Machines created, by region." },
    { "lambdo_machines_failed_total", "counter", FAMILY_REGIONS, METRICS_MACHINES_FAILED,
      "region", { 0 }, "Machine create attempts that failed, by region tried." },
    { "lambdo_fly_rate_limited_total", "counter", FAMILY_PLAIN, METRICS_FLY_RATE_LIMITED, NULL,
      { 0 }, "Fly Machines API answers 429 (rate limited)." },
    { "lambdo_machines_in_flight", "gauge", FAMILY_PLAIN, METRICS_IN_FLIGHT, NULL, { 0 },
      "Groups holding a Machine slot (running Machines in exit mode, creates in create mode)." },
    { "lambdo_pool_machines", "gauge", FAMILY_PAIR, METRICS_POOL_IDLE, "state", { "idle", "busy" },
      "LAMBDO_POOL: pooled Machines free (idle) and in use by a group (busy)." },
    { "lambdo_pool_dispatches_total", "counter", FAMILY_PAIR, METRICS_POOL_WARM, "via",
      { "warm", "new" }, "LAMBDO_POOL: groups sent to a pooled Machine already there (warm) or "
      "created for them (new)." },
    { "lambdo_sqs_request_seconds", "histogram", FAMILY_HISTOGRAM, METRICS_SQS, "operation",
      { 0 }, "Duration of SQS API requests (each attempt), by operation." },
    { "lambdo_fly_request_seconds", "histogram", FAMILY_HISTOGRAM, METRICS_FLY, "operation",
      { 0 }, "Duration of Fly Machines API requests (each attempt), by operation." },
};

static uint64_t load(const atomic_uint_fast64_t *a)
{
    return atomic_load_explicit((atomic_uint_fast64_t *)a, RELAXED);
}

/* A labelled sample's name: name, suffix, {label="value" and more (",le=..." or "")}. The
 * value has backslash, double quote and newline escaped as the format asks; other bytes
 * outside printable ASCII become '?', so that the text is always valid UTF-8. */
static void put_series(struct json_buf *o, const struct family *f, const char *suffix,
                       const char *value, const char *more)
{
    json_buf_fmt(o, "%s%s{%s=\"", f->name, suffix, f->label);
    for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
        if (*p == '\\' || *p == '"' || *p == '\n')
            json_buf_fmt(o, "\\%c", *p == '\n' ? 'n' : *p);
        else
            json_buf_fmt(o, "%c", *p >= 0x20 && *p < 0x7f ? *p : '?');
    }
    json_buf_fmt(o, "\"%s}", more);
}

/* A sample's value and line end: a gauge may go below 0 (in flight), a counter not. */
static void put_value(struct json_buf *o, const struct family *f, uint64_t v)
{
    if (f->type[0] == 'g')
        json_buf_fmt(o, " %" PRId64 "\n", (int64_t)v);
    else
        json_buf_fmt(o, " %" PRIu64 "\n", v);
}

static void put_histogram(struct json_buf *o, const struct family *f,
                          const struct metrics_series *s)
{
    uint64_t cum = 0, sum = load(&s->sum_us);
    char le[32];

    /* Cumulative from per-bucket counts read once each: the +Inf bucket and _count are
     * the same number even while other threads observe. */
    for (int b = 0; b <= METRICS_NBUCKETS; b++) {
        cum += load(&s->bucket[b]);
        if (b < METRICS_NBUCKETS)
            snprintf(le, sizeof le, ",le=\"%g\"", (double)bucket_us[b] / 1e6);
        else
            snprintf(le, sizeof le, ",le=\"+Inf\"");
        put_series(o, f, "_bucket", s->operation, le);
        put_value(o, f, cum);
    }
    put_series(o, f, "_sum", s->operation, "");
    json_buf_fmt(o, " %" PRIu64 ".%06" PRIu64 "\n", sum / 1000000, sum % 1000000);
    put_series(o, f, "_count", s->operation, "");
    put_value(o, f, cum);
}

static void put_family(struct json_buf *o, const struct metrics *m, const struct family *f)
{
    /* json_buf_fmt writes at most 255 bytes a call: the longest HELP and TYPE pair is 173 */
    json_buf_fmt(o, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, f->type);
    if (f->kind == FAMILY_INFO) {
        put_series(o, f, "", m->version, "");
        put_value(o, f, 1);
    } else if (f->kind == FAMILY_PLAIN) {
        json_buf_lit(o, f->name);
        put_value(o, f, load(&m->counter[f->index]));
    }
    for (size_t i = 0; f->kind == FAMILY_REGIONS && i <= m->nregions; i++) {
        put_series(o, f, "", m->regions[i], "");
        put_value(o, f, load(&m->by_region[f->index][i]));
    }
    for (int i = 0; f->kind == FAMILY_PAIR && i < 2; i++) {
        put_series(o, f, "", f->values[i], "");
        put_value(o, f, load(&m->counter[f->index + i]));
    }
    for (int i = 0; f->kind == FAMILY_HISTOGRAM && i <= METRICS_MAX_OPERATIONS; i++) {
        const struct metrics_series *s = &m->hist[f->index][i];
        if (atomic_load_explicit((atomic_int *)&s->ready, memory_order_acquire) == 2)
            put_histogram(o, f, s);
    }
}

char *metrics_render(const struct metrics *m, size_t *len)
{
    struct json_buf o = { 0 };  /* json.c's growing text buffer: no JSON written here */

    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++)
        put_family(&o, m, &families[i]);
    if (o.oom) {
        free(o.p);
        return NULL;
    }
    *len = o.len;
    return o.p;
}

/* --------------------------------------------------------------- request parsing ------- */

/* 2 for the CR LF, 1 for the LF at buf[i], else 0 (in the scanned part, a CR is always
 * followed by its LF). */
static size_t line_end(const char *buf, size_t n, size_t i)
{
    return i >= n ? 0 : buf[i] == '\n' ? 1 : buf[i] == '\r' ? 2 : 0;
}

/* Left to right, with a verdict as soon as a byte cannot continue a valid head: a TLS
 * handshake or other binary is refused at once, not after the read timeout, and a verdict
 * on the bytes at hand is the verdict on whatever follows them. Every check stops at the
 * byte it refuses (BAD) or at the end of the bytes at hand (INCOMPLETE). */
enum metrics_parse metrics_parse_request(const char *buf, size_t len, struct metrics_request *r)
{
    static const char version[] = "HTTP/9.9";   /* '9': any digit */
    size_t n = 0, i = 0, k, name;
    const char *v, *query;
    int has_host = 0;

    memset(r, 0, sizeof *r);
    /* Only the bytes before the first CR without its LF are scanned: a CR that does not
     * end a line is BAD, a last one waits for its LF. */
    while (n < len && (buf[n] != '\r' || (n + 1 < len && buf[n + 1] == '\n')))
        n++;
    /* RFC 9112 2.2: a few empty lines before the request line */
    for (int blank = 0; blank < 4 && (k = line_end(buf, n, i)) > 0; blank++)
        i += k;
    r->method = buf + i;
    while (i < n && httpresp_is_tchar((unsigned char)buf[i]))
        i++;
    r->method_len = (size_t)(buf + i - r->method);
    if (i == n || r->method_len == 0 || buf[i] != ' ')
        goto stop;
    /* origin form only: "/path?query" */
    r->path = buf + ++i;
    while (i < n && (unsigned char)buf[i] > ' ' && (unsigned char)buf[i] < 0x7f &&
           (buf + i > r->path || buf[i] == '/'))
        i++;
    if (i == n || buf + i == r->path || buf[i] != ' ')
        goto stop;
    query = memchr(r->path, '?', (size_t)(buf + i - r->path));
    r->path_len = (size_t)((query ? query : buf + i) - r->path);
    v = buf + ++i;
    for (k = 0; k < 8 && i < n; k++, i++)
        if (version[k] == '9' ? buf[i] < '0' || buf[i] > '9' : buf[i] != version[k])
            goto stop;
    if (i == n || (k = line_end(buf, n, i)) == 0 || v[5] == '0')
        goto stop;
    if (v[5] > '1')
        return METRICS_PARSE_VERSION;
    r->minor = v[7] - '0';
    /* field lines up to the empty one; no white space first: that would be obs-fold,
     * which RFC 9112 lets a server refuse */
    for (i += k; (k = line_end(buf, n, i)) == 0; i += k) {
        name = i;
        while (i < n && httpresp_is_tchar((unsigned char)buf[i]))
            i++;
        if (i == n || i == name || buf[i] != ':')
            goto stop;
        has_host |= i - name == 4 && strncasecmp(buf + name, "host", 4) == 0;
        while (i < n && buf[i] != '\0' && line_end(buf, n, i) == 0)
            i++;
        if ((k = line_end(buf, n, i)) == 0)   /* out of bytes, or a NUL */
            goto stop;
    }
    if (r->minor == 0 || has_host) {   /* RFC 9112 3.2 */
        r->head_len = i + k;
        return METRICS_PARSE_OK;
    }
stop:
    /* at a byte refused, or at a lone CR: BAD; out of bytes: INCOMPLETE */
    return i < n || n + 1 < len ? METRICS_PARSE_BAD : METRICS_PARSE_INCOMPLETE;
}

/* ----------------------------------------------------------------------- answering ----- */

static int is(const char *s, size_t len, const char *want)
{
    return len == strlen(want) && memcmp(s, want, len) == 0;
}

char *metrics_respond(const struct metrics *m, const char *buf, size_t len, int too_large,
                      int64_t now_ms, size_t *out_len, int *status)
{
    static const struct answer {
        int status;
        const char *phrase, *body;   /* body NULL: made here */
    } answers[] = {
        { 200, "OK", NULL },
        { 400, "Bad Request", "bad request\n" },
        { 404, "Not Found", "not found: try /metrics or /healthz\n" },
        { 405, "Method Not Allowed", "method not allowed: GET or HEAD\n" },
        { 431, "Request Header Fields Too Large", "request head too large\n" },
        { 503, "Service Unavailable", NULL },
        { 505, "HTTP Version Not Supported", "HTTP/1.x only\n" },
    };
    const struct answer *a = answers;
    struct metrics_request r;
    enum metrics_parse p = too_large ? METRICS_PARSE_BAD : metrics_parse_request(buf, len, &r);
    int head = p == METRICS_PARSE_OK && is(r.method, r.method_len, "HEAD");
    int health = p == METRICS_PARSE_OK && is(r.path, r.path_len, "/healthz"), code;
    const char *type = "text/plain; charset=utf-8", *body;
    char reason[256], text[300], *rendered = NULL, *out;
    size_t cap;

    if (p != METRICS_PARSE_OK) {
        /* garbage, or a head that ended early: 400 */
        code = too_large ? 431 : p == METRICS_PARSE_VERSION ? 505 : 400;
    } else if (!health && !is(r.path, r.path_len, "/metrics")) {
        code = 404;
    } else if (!head && !is(r.method, r.method_len, "GET")) {
        code = 405;
    } else if (health) {
        code = metrics_health(m, now_ms, reason, sizeof reason) < 0 ? 503 : 200;
        snprintf(text, sizeof text, code == 503 ? "unhealthy: %s\n" : "%s\n", reason);
    } else if (!(rendered = metrics_render(m, &cap))) {
        return NULL;
    } else {
        code = 200;
        type = "text/plain; version=0.0.4; charset=utf-8";
    }
    while (a->status != code)
        a++;
    body = a->body ? a->body : rendered ? rendered : text;
    /* HEAD gets the headers GET would have, Content-Length included; Allow with 405, as
     * RFC 9110 asks */
    cap = strlen(body) + 512;
    if ((out = malloc(cap)))
        *out_len = (size_t)snprintf(out, cap, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
                                    "Content-Length: %zu\r\nCache-Control: no-store\r\n%s"
                                    "Connection: close\r\n\r\n%s", code, a->phrase, type,
                                    strlen(body), code == 405 ? "Allow: GET, HEAD\r\n" : "",
                                    head ? "" : body);
    free(rendered);
    if (status)
        *status = out ? code : 0;
    return out;
}

/* ----------------------------------------------------------------------- addresses ----- */

static int addr_bad(struct lerr *e, const char *s, const char *why)
{
    return lerr_set(e, LERR_INVALID, "metrics address \"%.64s\": %s", s, why);
}

int metrics_addr_parse(const char *s, struct metrics_addr *a, struct lerr *e)
{
    char host[64];
    const char *colon = s ? strrchr(s, ':') : NULL;
    size_t hl = colon ? (size_t)(colon - s) : 0, pl = colon ? strlen(colon + 1) : 0;

    memset(a, 0, sizeof *a);
    if (!s || !*s)
        return addr_bad(e, "", "empty (want host:port, e.g. 127.0.0.1:9090, [::1]:9090 or :9090)");
    if (!colon)
        return addr_bad(e, s, "no port (want host:port, e.g. 127.0.0.1:9090 or :9090)");
    if (pl == 0 || pl > 5 || strspn(colon + 1, "0123456789") != pl ||
        (a->port = atoi(colon + 1)) > 65535)
        return addr_bad(e, s, "the port must be a number from 0 to 65535");
    if ((size_t)snprintf(host, sizeof host, "%.*s", (int)hl, s) >= sizeof host)
        return addr_bad(e, s, "host too long");
    a->family = hl == 0 ? AF_UNSPEC : host[0] == '[' ? AF_INET6 : AF_INET;
    if (a->family == AF_INET6 && host[hl - 1] == ']') {
        host[hl - 1] = '\0';
        if (inet_pton(AF_INET6, host + 1, a->ip) != 1)
            return addr_bad(e, s, "not an IPv6 address in brackets");
    } else if (a->family == AF_INET6 || strchr(host, ':')) {
        return addr_bad(e, s, "an IPv6 address goes in brackets, e.g. [::1]:9090");
    } else if (strcmp(host, "localhost") == 0) {
        memcpy(a->ip, "\x7f\0\0\x01", 4);
    } else if (hl && inet_pton(AF_INET, host, a->ip) != 1) {
        return addr_bad(e, s, "the host must be an IP address, localhost, or empty for every "
                        "interface");
    }
    return 0;
}

/* ------------------------------------------------------------------------ the server --- */

/* METRICS_MAX_CONNECTIONS threads, each accepting a connection and serving it to the end:
 * straight-line code for a connection (read its head, answer, drain), a slow client holds
 * up only its own thread, and more connections than threads wait in the listen backlog.
 * Stopping shuts the listening socket down: on Linux that wakes every accept and poll on it
 * with POLLHUP (which poll reports whatever events were asked), so every thread watches
 * that one descriptor and stopping ends them all at once. */
struct metrics_server {
    struct metrics *m;
    int listen_fd;
    int port;
    size_t nthreads;
    pthread_t thread[METRICS_MAX_CONNECTIONS];
};

/* Waits until fd can do events or deadline (mono_ms) passes: 1 ready, 0 out of time, -1
 * stopping. */
static int conn_wait(const struct metrics_server *s, int fd, short events, int64_t deadline)
{
    struct pollfd p[2] = { { .fd = fd, .events = events }, { .fd = s->listen_fd } };
    int64_t left = deadline - mono_ms(NULL);
    int n;

    if (left <= 0 || (n = poll(p, 2, (int)left)) == 0)
        return 0;
    return n < 0 || p[1].revents ? -1 : 1;
}

/* Reads the request head into in[METRICS_HEAD_MAX]. Returns its length once the parser has
 * a verdict or in is full (*too_large: without a verdict), or 0: the client closed, sent
 * too slowly, or the server stops. */
static size_t conn_read(const struct metrics_server *s, int fd, char *in, int *too_large)
{
    static const char timeout[] = "HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n"
                                  "Connection: close\r\n\r\n";
    int64_t deadline = mono_ms(NULL) + METRICS_READ_TIMEOUT_MS;
    struct metrics_request r;
    size_t len = 0;
    ssize_t n;
    int ready;

    while ((ready = conn_wait(s, fd, POLLIN, deadline)) > 0) {
        /* closed or broken before a whole request: no one to answer (the threads block
         * every signal, so no EINTR; poll said there is something to read) */
        if ((n = recv(fd, in + len, METRICS_HEAD_MAX - len, MSG_DONTWAIT)) <= 0)
            return 0;
        len += (size_t)n;
        *too_large = metrics_parse_request(in, len, &r) == METRICS_PARSE_INCOMPLETE;
        if (!*too_large || len == METRICS_HEAD_MAX)
            return len;
    }
    /* Out of time: a client that sent part of a request hears 408 if its socket takes it
     * at once; one that sent nothing is just dropped. */
    if (ready == 0 && len > 0) {
        log_debug("metrics: a client sent part of a request and then nothing");
        send(fd, timeout, sizeof timeout - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    return 0;
}

/* One connection, from its head to its close. All of the answer sent within
 * METRICS_WRITE_TIMEOUT_MS: says so (FIN), then reads until the client closes, so that the
 * kernel does not answer bytes it still sends (a body, a pipelined request) with a reset
 * that could destroy the answer before the client read it. */
static void conn_serve(const struct metrics_server *s, int fd)
{
    const struct metrics *m = s->m;
    char in[METRICS_HEAD_MAX], *out = NULL;
    size_t len, out_len = 0, sent = 0;
    int too_large = 0, status = 0;
    int64_t deadline;
    ssize_t n = 0;

    if ((len = conn_read(s, fd, in, &too_large)) > 0 &&
        !(out = metrics_respond(m, in, len, too_large, m->clock_ms(m->clock_ctx), &out_len,
                                &status)))
        log_warn("metrics: out of memory for an answer");
    if (out)
        log_debug("metrics: answered %d", status);
    deadline = mono_ms(NULL) + METRICS_WRITE_TIMEOUT_MS;
    for (; sent < out_len; sent += (size_t)n)
        if (conn_wait(s, fd, POLLOUT, deadline) <= 0 ||
            (n = send(fd, out + sent, out_len - sent, MSG_NOSIGNAL | MSG_DONTWAIT)) <= 0)
            break;
    if (out && sent == out_len) {
        shutdown(fd, SHUT_WR);
        deadline = mono_ms(NULL) + DRAIN_MS;
        while (conn_wait(s, fd, POLLIN, deadline) > 0 && recv(fd, in, sizeof in, MSG_DONTWAIT) > 0)
            ;
    }
    free(out);
    close(fd);
}

static void *server_main(void *arg)
{
    struct metrics_server *s = arg;
    struct pollfd p = { .fd = s->listen_fd, .events = POLLIN };
    int fd;

    while (poll(&p, 1, -1) >= 0 && !(p.revents & POLLHUP)) {
        /* Every idle thread wakes for a connection; those that lose the race get EAGAIN
         * (EINVAL: stopping began since poll). */
        if ((fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
            conn_serve(s, fd);
        } else if (errno != EAGAIN && errno != ECONNABORTED && errno != EPROTO && errno != EINVAL) {
            /* Out of descriptors or memory: the pending connection would wake poll at
             * once, over and over, so accepting pauses a moment instead. */
            log_warn("metrics: accept: %s", strerror(errno));
            conn_wait(s, -1, 0, mono_ms(NULL) + ACCEPT_PAUSE_MS);  /* poll skips fd -1 */
        }
    }
    if (!(p.revents & POLLHUP))
        log_error("metrics: poll: %s; a metrics server thread stops", strerror(errno));
    return NULL;
}

/* A listening socket on a's port, or -1 with errno set. family AF_INET6 with a->family
 * AF_UNSPEC is the IPv6 wildcard taking IPv4 too. */
static int listen_on(struct metrics_server *s, const struct metrics_addr *a, int family)
{
    union {
        struct sockaddr sa;
        struct sockaddr_in in;   /* sin_port and sin6_port are at the same place */
        struct sockaddr_in6 in6;
    } sa = { .in6 = { .sin6_family = (sa_family_t)family, .sin6_port = htons((uint16_t)a->port) } };
    socklen_t sl = family == AF_INET ? sizeof sa.in : sizeof sa.in6;
    int fd, one = 1, v6only = a->family == AF_INET6;

    if (a->family == AF_INET)
        memcpy(&sa.in.sin_addr, a->ip, 4);     /* else INADDR_ANY */
    if (a->family == AF_INET6)
        memcpy(&sa.in6.sin6_addr, a->ip, 16);  /* else in6addr_any */
    if ((fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0)
        return -1;
    /* SO_REUSEADDR: a restart does not wait for TIME_WAIT; a port someone listens on
     * still fails with EADDRINUSE on Linux. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        (family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only) < 0) ||
        bind(fd, &sa.sa, sl) < 0 || listen(fd, LISTEN_BACKLOG) < 0 ||
        getsockname(fd, &sa.sa, &sl) < 0) {
        close(fd);               /* leaves errno alone: it succeeds (musl, glibc) */
        return -1;
    }
    s->port = ntohs(sa.in.sin_port);
    return s->listen_fd = fd;
}

/* Stops the threads started (the shutdown wakes every one at once), then closes the socket
 * (-1 when listening failed: the shutdown fails harmlessly). */
static void server_free(struct metrics_server *s)
{
    shutdown(s->listen_fd, SHUT_RDWR);
    for (size_t i = 0; i < s->nthreads; i++)
        pthread_join(s->thread[i], NULL);
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    free(s);
}

/* The threads, with every signal blocked (a SIGTERM must reach the daemon's signalfd, not
 * kill the process from a thread that does not expect it) and a small stack. */
static int server_start(struct metrics_server *s, struct lerr *e)
{
    pthread_attr_t attr;
    sigset_t all, old;
    int rc = 0;

    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, SERVER_STACK);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    while (rc == 0 && s->nthreads < METRICS_MAX_CONNECTIONS)
        if ((rc = pthread_create(&s->thread[s->nthreads], &attr, server_main, s)) == 0)
            s->nthreads++;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    return rc ? lerr_set(e, LERR_IO, "metrics: cannot start a thread: %s", strerror(rc)) : 0;
}

int metrics_serve(struct metrics *m, const char *addr, struct lerr *e)
{
    struct metrics_addr a;
    struct metrics_server *s;

    if (m->server)
        return lerr_set(e, LERR_INVALID, "metrics: already serving");
    if (metrics_addr_parse(addr, &a, e) < 0)
        return -1;
    if (!(s = calloc(1, sizeof *s)))
        return lerr_set(e, LERR_NOMEM, "metrics: out of memory");
    s->m = m;
    s->listen_fd = -1;
    if (listen_on(s, &a, a.family == AF_INET ? AF_INET : AF_INET6) < 0 && a.family == AF_UNSPEC &&
        (errno == EAFNOSUPPORT || errno == EADDRNOTAVAIL))
        listen_on(s, &a, AF_INET);  /* no IPv6 here: every IPv4 interface, then */
    if (s->listen_fd < 0) {
        lerr_set(e, LERR_IO, "metrics address %s: cannot listen: %s", addr,
                 errno == EADDRINUSE ? "the port is already in use (another lambdo, or another "
                                       "program?)"
                 : errno == EACCES ? "permission denied (ports below 1024 need privileges)"
                 : errno == EADDRNOTAVAIL ? "not an address of this machine" : strerror(errno));
    }
    if (s->listen_fd < 0 || server_start(s, e) < 0) {
        server_free(s);
        return -1;
    }
    m->server = s;
    log_info("metrics: serving /metrics and /healthz on %.*s:%d",
             (int)(strrchr(addr, ':') - addr), addr, s->port);
    return 0;
}

int metrics_port(const struct metrics *m)
{
    return m->server ? m->server->port : 0;
}

void metrics_destroy(struct metrics *m)
{
    if (m->server)
        server_free(m->server);
    m->server = NULL;
}
