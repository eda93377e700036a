#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define RELAXED memory_order_relaxed
#define SERVER_STACK (256 * 1024)
#define DRAIN_MS 1000            /* after the answer: reading what the client still sends */
#define ACCEPT_PAUSE_MS 100      /* after accept() ran out of descriptors or memory */
#define LISTEN_BACKLOG 128       /* waiting connections; a burst past the slots queues here */
#define RENDER_FIRST_CAP 16384

/* Upper bounds, in seconds as written and in microseconds as compared: a duration is
 * rounded to whole microseconds once, so 0.005 s lands in le="0.005" exactly. */
static const char *const bucket_le[METRICS_NBUCKETS] = {
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60",
};
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

void metrics_set_pool(struct metrics *m, int idle, int busy)
{
    if (m) {
        atomic_store_explicit(&m->counter[METRICS_POOL_IDLE], (uint64_t)idle, RELAXED);
        atomic_store_explicit(&m->counter[METRICS_POOL_BUSY], (uint64_t)busy, RELAXED);
    }
}

void metrics_set_in_flight(struct metrics *m, int64_t n)
{
    if (m)
        atomic_store_explicit(&m->in_flight, n, RELAXED);
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

void metrics_observe(struct metrics *m, enum metrics_hist h, const char *operation,
                     double seconds)
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
    if (!m)
        return;
    if (ok) {
        atomic_store(&m->good_ms, m->clock_ms(m->clock_ctx));
        atomic_store(&m->ever_received, 1);
        atomic_store(&m->failures, 0);
    } else {
        atomic_fetch_add(&m->failures, 1);
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

enum family_kind { FAMILY_BUILD_INFO, FAMILY_COUNTER, FAMILY_BY_REGION, FAMILY_IN_FLIGHT,
                   FAMILY_HISTOGRAM, FAMILY_PAIR_COUNTER, FAMILY_PAIR_GAUGE };

static const char *const family_type[] = { "gauge", "counter", "counter", "gauge", "histogram",
                                           "counter", "gauge" };

/* Every metric, in the order of the exposition; index is into counter[], by_region[] or
 * hist[], as kind says. */
static const struct family {
    const char *name;
    enum family_kind kind;
    int index;
    const char *help;
} families[] = {
    { "lambdo_build_info", FAMILY_BUILD_INFO, 0, "The running lambdo's version (always 1)." },
    { "lambdo_messages_received_total", FAMILY_COUNTER, METRICS_RECEIVED,
      "Messages received from SQS." },
    { "lambdo_messages_deleted_total", FAMILY_COUNTER, METRICS_DELETED,
      "Messages deleted from SQS once their work was done." },
    { "lambdo_messages_invalid_total", FAMILY_COUNTER, METRICS_INVALID,
      "Messages refused by validation (left for the dead-letter queue)." },
    { "lambdo_messages_returned_total", FAMILY_COUNTER, METRICS_RETURNED,
      "Messages handed back to the queue to run again." },
    { "lambdo_machines_created_total", FAMILY_BY_REGION, METRICS_MACHINES_CREATED,
      "Fly Machines created, by region." },
    { "lambdo_machines_failed_total", FAMILY_BY_REGION, METRICS_MACHINES_FAILED,
      "Machine create attempts that failed, by region tried." },
    { "lambdo_fly_rate_limited_total", FAMILY_COUNTER, METRICS_FLY_RATE_LIMITED,
      "Fly Machines API answers 429 (rate limited)." },
    { "lambdo_machines_in_flight", FAMILY_IN_FLIGHT, 0,
      "Groups holding a Machine slot (running Machines in exit mode, creates in create mode)." },
    { "lambdo_pool_machines", FAMILY_PAIR_GAUGE, METRICS_POOL_IDLE,
      "LAMBDO_POOL: pooled Machines free (idle) and in use by a group (busy)." },
    { "lambdo_pool_dispatches_total", FAMILY_PAIR_COUNTER, METRICS_POOL_WARM,
      "LAMBDO_POOL: groups sent to a pooled Machine already there (warm) or created for them (new)." },
    { "lambdo_sqs_request_seconds", FAMILY_HISTOGRAM, METRICS_SQS,
      "Duration of SQS API requests (each attempt), by operation." },
    { "lambdo_fly_request_seconds", FAMILY_HISTOGRAM, METRICS_FLY,
      "Duration of Fly Machines API requests (each attempt), by operation." },
};

/* The PAIR families' label, then its values for counter[index] and counter[index + 1]. */
static const char *const pair_labels[METRICS_NCOUNTERS][3] = {
    [METRICS_POOL_WARM] = { "via", "warm", "new" },
    [METRICS_POOL_IDLE] = { "state", "idle", "busy" },
};

static uint64_t load(const atomic_uint_fast64_t *a)
{
    return atomic_load_explicit((atomic_uint_fast64_t *)a, RELAXED);
}

/* Text into buf[0..cap); len counts all of it, so len >= cap says it did not fit. */
struct out {
    char *buf;
    size_t cap, len;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(struct out *o, const char *fmt, ...)
{
    size_t room = o->len < o->cap ? o->cap - o->len : 0;
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(room ? o->buf + o->len : NULL, room, fmt, ap);
    va_end(ap);
    o->len += n > 0 ? (size_t)n : 0;
}

/* Starts a labelled sample: name, suffix, '{', label="value"; the caller closes the brace.
 * The value has backslash, double quote and newline escaped as the format asks; other
 * bytes outside printable ASCII become '?', so that the text is always valid UTF-8. */
static void put_series(struct out *o, const char *name, const char *suffix, const char *label,
                       const char *value)
{
    put(o, "%s%s{%s=\"", name, suffix, label);
    for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
        if (*p == '\\' || *p == '"' || *p == '\n')
            put(o, "\\%c", *p == '\n' ? 'n' : *p);
        else
            put(o, "%c", *p >= 0x20 && *p < 0x7f ? *p : '?');
    }
    put(o, "\"");
}

static void put_histogram(struct out *o, const char *name, const struct metrics_series *s)
{
    uint64_t cum = 0, sum = load(&s->sum_us);

    /* Cumulative from per-bucket counts read once each: the +Inf bucket and _count are
     * the same number even while other threads observe. */
    for (int b = 0; b <= METRICS_NBUCKETS; b++) {
        cum += load(&s->bucket[b]);
        put_series(o, name, "_bucket", "operation", s->operation);
        put(o, ",le=\"%s\"} %" PRIu64 "\n", b < METRICS_NBUCKETS ? bucket_le[b] : "+Inf",
                cum);
    }
    put_series(o, name, "_sum", "operation", s->operation);
    put(o, "} %" PRIu64 ".%06" PRIu64 "\n", sum / 1000000, sum % 1000000);
    put_series(o, name, "_count", "operation", s->operation);
    put(o, "} %" PRIu64 "\n", cum);
}

static void put_family(struct out *o, const struct metrics *m, const struct family *f)
{
    put(o, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, family_type[f->kind]);
    switch (f->kind) {
    case FAMILY_BUILD_INFO:
        put_series(o, f->name, "", "version", m->version);
        put(o, "} 1\n");
        break;
    case FAMILY_COUNTER:
        put(o, "%s %" PRIu64 "\n", f->name, load(&m->counter[f->index]));
        break;
    case FAMILY_BY_REGION:
        for (size_t i = 0; i <= m->nregions; i++) {
            put_series(o, f->name, "", "region", m->regions[i]);
            put(o, "} %" PRIu64 "\n", load(&m->by_region[f->index][i]));
        }
        break;
    case FAMILY_IN_FLIGHT:
        put(o, "%s %" PRId64 "\n", f->name,
                (int64_t)atomic_load_explicit((atomic_int_fast64_t *)&m->in_flight, RELAXED));
        break;
    case FAMILY_PAIR_COUNTER:
    case FAMILY_PAIR_GAUGE:
        for (int i = 0; i < 2; i++) {
            put_series(o, f->name, "", pair_labels[f->index][0], pair_labels[f->index][1 + i]);
            put(o, "} %" PRIu64 "\n", load(&m->counter[f->index + i]));
        }
        break;
    case FAMILY_HISTOGRAM:
        for (int i = 0; i <= METRICS_MAX_OPERATIONS; i++) {
            const struct metrics_series *s = &m->hist[f->index][i];
            if (atomic_load_explicit((atomic_int *)&s->ready, memory_order_acquire) == 2)
                put_histogram(o, f->name, s);
        }
        break;
    }
}

int metrics_render(const struct metrics *m, char *buf, size_t cap)
{
    struct out o = { buf, cap, 0 };

    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++)
        put_family(&o, m, &families[i]);
    return o.len < cap && o.len <= INT_MAX ? (int)o.len : -1;
}

/* The exposition text in a new buffer (free()); NULL when out of memory. */
static char *render_text(const struct metrics *m)
{
    for (size_t cap = RENDER_FIRST_CAP;; cap *= 2) {
        char *buf = malloc(cap);
        if (!buf || metrics_render(m, buf, cap) >= 0)
            return buf;
        free(buf);
    }
}

/* --------------------------------------------------------------- request parsing ------- */

/* How many RFC 9110 tchar (what a method or a header name is made of) p[0..n) starts with. */
static size_t token_len(const char *p, size_t n)
{
    size_t i = 0;

    while (i < n && ((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z') ||
                     (p[i] >= '0' && p[i] <= '9') || (p[i] && strchr("!#$%&'*+-.^_`|~", p[i]))))
        i++;
    return i;
}

/* The line at pos ends at *end (without its CR LF or LF); the next starts at *next. 0 when
 * no LF has arrived yet, -1 for a CR that does not end the line. */
static int next_line(const char *buf, size_t len, size_t pos, size_t *end, size_t *next)
{
    const char *nl = memchr(buf + pos, '\n', len - pos);
    size_t e;

    if (!nl)
        return 0;
    e = (size_t)(nl - buf);
    *next = e + 1;
    if (e > pos && buf[e - 1] == '\r')
        e--;
    if (memchr(buf + pos, '\r', e - pos))
        return -1;
    *end = e;
    return 1;
}

/* The request line p[0..n) or, whole 0, the start of one still arriving: BAD as soon as
 * the bytes at hand cannot begin a valid line (a TLS handshake or other binary is turned
 * away at once, not after the read timeout), INCOMPLETE while more bytes could make one.
 * Every verdict on a start is the verdict on the whole line. */
static enum metrics_parse parse_request_line(const char *p, size_t n, int whole,
                                             struct metrics_request *r)
{
    static const char version[] = "HTTP/9.9";   /* '9': any digit */
    enum metrics_parse more = whole ? METRICS_PARSE_BAD : METRICS_PARSE_INCOMPLETE;
    size_t t = token_len(p, n) + 1, i = t, k = 0;
    const char *v;

    if (t > n)
        return more;
    if (t == 1 || p[t - 1] != ' ' || (t < n && p[t] != '/'))
        return METRICS_PARSE_BAD;
    while (i < n && (unsigned char)p[i] > 0x20 && (unsigned char)p[i] < 0x7f)
        i++;
    if (i == n)
        return more;
    if (i == t || p[i] != ' ' || n - i - 1 > 8)
        return METRICS_PARSE_BAD;
    for (v = p + i + 1; k < n - i - 1; k++)
        if (version[k] == '9' ? v[k] < '0' || v[k] > '9' : v[k] != version[k])
            return METRICS_PARSE_BAD;
    if (k < 8 || !whole)
        return more;
    if (v[5] != '1')
        return v[5] >= '2' ? METRICS_PARSE_VERSION : METRICS_PARSE_BAD;
    r->method = p;
    r->method_len = t - 1;
    r->path = p + t;
    r->path_len = strcspn(r->path, "? ");  /* the target ends at p[i], a space */
    r->minor = v[7] - '0';
    return METRICS_PARSE_OK;
}

enum metrics_parse metrics_parse_request(const char *buf, size_t len, struct metrics_request *r)
{
    size_t pos = 0, end, next, name;
    int rc, blank = 0, has_host = 0;

    memset(r, 0, sizeof *r);
    /* RFC 9112 2.2: empty lines before the request line are ignored (a few) */
    while ((rc = next_line(buf, len, pos, &end, &next)) == 1 && end == pos && blank < 4) {
        pos = next;
        blank++;
    }
    if (rc == 0)                 /* a CR at the end: its LF is on its way */
        return parse_request_line(buf + pos, len - pos - (len > pos && buf[len - 1] == '\r'), 0,
                                  r);
    if (rc < 0 || end == pos)
        return METRICS_PARSE_BAD;
    if ((rc = parse_request_line(buf + pos, end - pos, 1, r)) != METRICS_PARSE_OK)
        return rc;
    /* Header lines: a name, a colon, a value without NUL. No leading white space: that
     * would be obs-fold, which RFC 9112 lets a server refuse. */
    for (pos = next; (rc = next_line(buf, len, pos, &end, &next)) == 1 && end > pos; pos = next) {
        name = token_len(buf + pos, end - pos);
        if (name == 0 || name == end - pos || buf[pos + name] != ':' ||
            memchr(buf + pos, '\0', end - pos))
            return METRICS_PARSE_BAD;
        has_host |= name == 4 && strncasecmp(buf + pos, "host", 4) == 0;
    }
    if (rc <= 0)
        return rc == 0 ? METRICS_PARSE_INCOMPLETE : METRICS_PARSE_BAD;
    if (r->minor >= 1 && !has_host)  /* RFC 9112 3.2 */
        return METRICS_PARSE_BAD;
    r->head_len = next;
    return METRICS_PARSE_OK;
}

/* ----------------------------------------------------------------------- answering ----- */

struct answer {
    int status;
    const char *phrase;
    const char *body;            /* NUL-terminated */
};

/* Status line, headers (Allow with 405, as RFC 9110 asks), and the body unless head_only:
 * HEAD gets the headers GET would have, Content-Length included. type NULL: plain text. */
static char *answer_build(const struct answer *a, const char *type, int head_only,
                          size_t *out_len)
{
    size_t body = strlen(a->body);
    char head[512];
    int n = snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
                     "Content-Length: %zu\r\nCache-Control: no-store\r\n%sConnection: close"
                     "\r\n\r\n", a->status, a->phrase, type ? type : "text/plain; charset=utf-8",
                     body, a->status == 405 ? "Allow: GET, HEAD\r\n" : "");
    char *out;

    if (head_only)
        body = 0;
    if (!(out = malloc((size_t)n + body + 1)))
        return NULL;
    memcpy(out, head, (size_t)n);
    memcpy(out + n, a->body, body);
    *out_len = (size_t)n + body;
    out[*out_len] = '\0';
    return out;
}

static int is(const char *s, size_t len, const char *want)
{
    return len == strlen(want) && memcmp(s, want, len) == 0;
}

char *metrics_respond(const struct metrics *m, const char *buf, size_t len, int too_large,
                      int64_t now_ms, size_t *out_len, int *status)
{
    static const struct answer bad = { 400, "Bad Request", "bad request\n" },
        large = { 431, "Request Header Fields Too Large", "request head too large\n" },
        version = { 505, "HTTP Version Not Supported", "HTTP/1.x only\n" },
        not_found = { 404, "Not Found", "not found: try /metrics or /healthz\n" },
        not_allowed = { 405, "Method Not Allowed", "method not allowed: GET or HEAD\n" };
    struct metrics_request r;
    enum metrics_parse p = too_large ? METRICS_PARSE_BAD : metrics_parse_request(buf, len, &r);
    /* garbage, or a head that ended early: 400 */
    struct answer a = too_large ? large : p == METRICS_PARSE_VERSION ? version : bad;
    char reason[256], text[300], *body = NULL, *out;
    const char *type = NULL;
    int head = p == METRICS_PARSE_OK && is(r.method, r.method_len, "HEAD");

    if (p == METRICS_PARSE_OK) {
        if (!is(r.path, r.path_len, "/metrics") && !is(r.path, r.path_len, "/healthz")) {
            a = not_found;
        } else if (!head && !is(r.method, r.method_len, "GET")) {
            a = not_allowed;
        } else if (is(r.path, r.path_len, "/healthz")) {
            int sick = metrics_health(m, now_ms, reason, sizeof reason) < 0;
            snprintf(text, sizeof text, sick ? "unhealthy: %s\n" : "%s\n", reason);
            a = (struct answer){ sick ? 503 : 200, sick ? "Service Unavailable" : "OK", text };
        } else {
            if (!(body = render_text(m)))
                return NULL;
            a = (struct answer){ 200, "OK", body };
            type = "text/plain; version=0.0.4; charset=utf-8";
        }
    }
    out = answer_build(&a, type, head, out_len);
    free(body);
    if (status)
        *status = out ? a.status : 0;
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
    if (hl >= sizeof host)
        return addr_bad(e, s, "host too long");
    memcpy(host, s, hl);
    host[hl] = '\0';
    if (hl == 0) {
        a->family = AF_UNSPEC;
    } else if (host[0] == '[' && host[hl - 1] == ']') {
        host[hl - 1] = '\0';
        a->family = AF_INET6;
        if (inet_pton(AF_INET6, host + 1, a->ip) != 1)
            return addr_bad(e, s, "not an IPv6 address in brackets");
    } else if (strchr(host, ':')) {
        return addr_bad(e, s, "an IPv6 address goes in brackets, e.g. [::1]:9090");
    } else if (strcmp(host, "localhost") == 0) {
        a->family = AF_INET;
        memcpy(a->ip, "\x7f\0\0\x01", 4);
    } else if (inet_pton(AF_INET, host, a->ip) == 1) {
        a->family = AF_INET;
    } else {
        return addr_bad(e, s, "the host must be an IP address, localhost, or empty for every "
                        "interface");
    }
    return 0;
}

/* ------------------------------------------------------------------------ the server --- */

/* METRICS_MAX_CONNECTIONS threads, each accepting a connection and serving it to the end:
 * straight-line code for a connection (read its head, answer, drain), a slow client holds
 * up only its own thread, and more connections than threads wait in the listen backlog.
 * Every thread watches the stop eventfd, so stopping ends them all at once. */
struct metrics_server {
    struct metrics *m;
    int listen_fd;
    int stop_fd;                 /* an eventfd, readable once stopping */
    int port;
    size_t nthreads;
    pthread_t thread[METRICS_MAX_CONNECTIONS];
};

/* errno after a failed non-blocking call says: try again when poll says so. */
static int again(void)
{
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
}

/* Waits until fd can do events or deadline (mono_ms) passes: 1 ready, 0 out of time, -1
 * stopping. */
static int conn_wait(const struct metrics_server *s, int fd, short events, int64_t deadline)
{
    struct pollfd p[2] = { { .fd = fd, .events = events },
                           { .fd = s->stop_fd, .events = POLLIN } };
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
        if ((n = recv(fd, in + len, METRICS_HEAD_MAX - len, MSG_DONTWAIT)) < 0 && again())
            continue;
        if (n <= 0)
            return 0;            /* closed or broken before a whole request: no one to answer */
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

/* Sends the answer within METRICS_WRITE_TIMEOUT_MS. All of it sent: says so (FIN), then
 * reads until the client closes, so that the kernel does not answer bytes it still sends
 * (a body, a pipelined request) with a reset that could destroy the answer before the
 * client read it. */
static void conn_write(const struct metrics_server *s, int fd, const char *out, size_t len,
                       char *scratch)
{
    int64_t deadline = mono_ms(NULL) + METRICS_WRITE_TIMEOUT_MS;
    ssize_t n;

    for (size_t sent = 0; sent < len; sent += (size_t)n)
        if (conn_wait(s, fd, POLLOUT, deadline) <= 0 ||
            (n = send(fd, out + sent, len - sent, MSG_NOSIGNAL | MSG_DONTWAIT)) <= 0)
            return;
    shutdown(fd, SHUT_WR);
    deadline = mono_ms(NULL) + DRAIN_MS;
    while (conn_wait(s, fd, POLLIN, deadline) > 0 &&
           recv(fd, scratch, METRICS_HEAD_MAX, MSG_DONTWAIT) > 0)
        ;
}

/* One connection, from its head to its close. */
static void conn_serve(const struct metrics_server *s, int fd)
{
    const struct metrics *m = s->m;
    char in[METRICS_HEAD_MAX], *out;
    size_t len, out_len;
    int too_large = 0, status = 0;

    if ((len = conn_read(s, fd, in, &too_large)) > 0) {
        out = metrics_respond(m, in, len, too_large, m->clock_ms(m->clock_ctx), &out_len,
                              &status);
        if (out) {
            log_debug("metrics: answered %d", status);
            conn_write(s, fd, out, out_len, in);
        } else {
            log_warn("metrics: out of memory for an answer");
        }
        free(out);
    }
    close(fd);
}

static void *server_main(void *arg)
{
    struct metrics_server *s = arg;
    struct pollfd p[2] = { { .fd = s->stop_fd, .events = POLLIN },
                           { .fd = s->listen_fd, .events = POLLIN } };
    int fd;

    for (;;) {
        if (poll(p, 2, -1) < 0) {
            log_error("metrics: poll: %s; a metrics server thread stops", strerror(errno));
            break;
        }
        if (p[0].revents)
            break;
        /* Every idle thread wakes for a connection; those that lose the race get EAGAIN. */
        if ((fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
            conn_serve(s, fd);
            continue;
        }
        /* Out of descriptors or memory: the pending connection would wake poll at once,
         * over and over, so accepting pauses a moment instead. */
        if (!again() && errno != ECONNABORTED && errno != EPROTO) {
            log_warn("metrics: accept: %s", strerror(errno));
            poll(p, 1, ACCEPT_PAUSE_MS);
        }
    }
    return NULL;
}

static const char *bind_problem(int err)
{
    switch (err) {
    case EADDRINUSE:
        return "the port is already in use (another lambdo, or another program?)";
    case EACCES:
        return "permission denied (ports below 1024 need privileges)";
    case EADDRNOTAVAIL:
        return "not an address of this machine";
    default:
        return strerror(err);
    }
}

/* A listening socket on a's port, or -1 with errno set. family AF_INET6 with a->family
 * AF_UNSPEC is the IPv6 wildcard taking IPv4 too. */
static int listen_on(const struct metrics_addr *a, int family)
{
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)a->port) };
    struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6, .sin6_port = sin.sin_port };
    int fd, one = 1, v6only = a->family == AF_INET6, saved;

    if (a->family == AF_INET)
        memcpy(&sin.sin_addr, a->ip, 4);     /* else INADDR_ANY */
    if (a->family == AF_INET6)
        memcpy(&sin6.sin6_addr, a->ip, 16);  /* else in6addr_any */
    if ((fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0)
        return -1;
    /* SO_REUSEADDR: a restart does not wait for TIME_WAIT; a port someone listens on
     * still fails with EADDRINUSE on Linux. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        (family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only) < 0) ||
        (family == AF_INET ? bind(fd, (struct sockaddr *)&sin, sizeof sin)
                           : bind(fd, (struct sockaddr *)&sin6, sizeof sin6)) < 0 ||
        listen(fd, LISTEN_BACKLOG) < 0) {
        saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

static int server_listen(struct metrics_server *s, const struct metrics_addr *a,
                         const char *text, struct lerr *e)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int fd = listen_on(a, a->family == AF_INET ? AF_INET : AF_INET6);

    if (fd < 0 && a->family == AF_UNSPEC &&
        (errno == EAFNOSUPPORT || errno == EADDRNOTAVAIL))
        fd = listen_on(a, AF_INET);  /* no IPv6 here: every IPv4 interface, then */
    if (fd < 0)
        return lerr_set(e, LERR_IO, "metrics address %s: cannot listen: %s", text,
                        bind_problem(errno));
    s->listen_fd = fd;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
        return lerr_set(e, LERR_IO, "metrics address %s: getsockname: %s", text,
                        strerror(errno));
    s->port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                            : ((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
}

/* Stops the threads started (every one wakes at once), then closes the sockets. */
static void server_free(struct metrics_server *s)
{
    uint64_t one = 1;

    while (s->nthreads && write(s->stop_fd, &one, sizeof one) < 0 && errno == EINTR)
        ;
    for (size_t i = 0; i < s->nthreads; i++)
        pthread_join(s->thread[i], NULL);
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    if (s->stop_fd >= 0)
        close(s->stop_fd);
    free(s);
}

/* The threads, with every signal blocked (a SIGTERM must reach the daemon's signalfd, not
 * kill the process from a thread that does not expect it) and a small stack. */
static int server_start(struct metrics_server *s, struct lerr *e)
{
    pthread_attr_t attr;
    sigset_t all, old;
    int rc = 0;

    if ((s->stop_fd = eventfd(0, EFD_CLOEXEC)) < 0)
        return lerr_set(e, LERR_IO, "metrics: eventfd: %s", strerror(errno));
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
    s->listen_fd = s->stop_fd = -1;
    if (server_listen(s, &a, addr, e) < 0 || server_start(s, e) < 0) {
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
    if (!m->server)
        return;
    server_free(m->server);
    m->server = NULL;
}
