#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
#define RENDER_MAX_CAP (1 << 20)

/* Upper bounds, in seconds as written and in microseconds as compared: a duration is
 * rounded to whole microseconds once, so 0.005 s lands in le="0.005" exactly. */
static const char *const bucket_le[METRICS_NBUCKETS] = {
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "60",
};
static const uint64_t bucket_us[METRICS_NBUCKETS] = {
    5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000,
    30000000, 60000000,
};

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t default_clock(void *ctx)
{
    (void)ctx;
    return mono_ms();
}

double metrics_clock(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t health_now(const struct metrics *m)
{
    return m->clock_ms(m->clock_ctx);
}

/* ------------------------------------------------------------------------- set-up ------ */

static int name_ok(const char *s, size_t cap)
{
    return s && *s && strlen(s) < cap;
}

static int region_known(const struct metrics *m, const char *r)
{
    for (size_t i = 0; i < m->nregions; i++)
        if (strcmp(m->regions[i], r) == 0)
            return 1;
    return 0;
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
    snprintf(m->version, sizeof m->version, "%s", o->version);
    for (size_t i = 0; i < o->nregions; i++) {
        if (!name_ok(o->regions[i], METRICS_NAME_MAX))
            return lerr_set(e, LERR_INVALID, "metrics: region names must be 1 to %d bytes",
                            METRICS_NAME_MAX - 1);
        /* "other" already has its own row: the one unknown regions count in */
        if (strcmp(o->regions[i], "other") == 0 || region_known(m, o->regions[i]))
            continue;
        snprintf(m->regions[m->nregions++], METRICS_NAME_MAX, "%s", o->regions[i]);
    }
    for (int h = 0; h < METRICS_NHISTS; h++)
        snprintf(m->hist[h][METRICS_MAX_OPERATIONS].operation, METRICS_NAME_MAX, "other");
    m->stale_ms = ((int64_t)(o->long_poll_seconds > 0 ? o->long_poll_seconds : 0) * 3 + 30) * 1000;
    m->clock_ms = o->clock_ms ? o->clock_ms : default_clock;
    m->clock_ctx = o->clock_ctx;
    atomic_store(&m->good_ms, health_now(m));
    pthread_mutex_init(&m->register_mu, NULL);
    return 0;
}

void metrics_destroy(struct metrics *m)
{
    metrics_stop(m);
    pthread_mutex_destroy(&m->register_mu);
}

/* ---------------------------------------------------------------------- counting ------- */

void metrics_count(struct metrics *m, enum metrics_counter c, uint64_t n)
{
    if (m && (unsigned)c < METRICS_NCOUNTERS)
        atomic_fetch_add_explicit(&m->counter[c], n, RELAXED);
}

void metrics_count_region(struct metrics *m, enum metrics_region_counter c, const char *region)
{
    size_t i = METRICS_MAX_REGIONS;  /* "other" */

    if (!m || (unsigned)c >= METRICS_NREGION_COUNTERS)
        return;
    for (size_t k = 0; region && k < m->nregions; k++) {
        if (strcmp(m->regions[k], region) == 0) {
            i = k;
            break;
        }
    }
    atomic_fetch_add_explicit(&m->by_region[c][i], 1, RELAXED);
}

void metrics_set_in_flight(struct metrics *m, int64_t n)
{
    if (m)
        atomic_store_explicit(&m->in_flight, n, RELAXED);
}

/* A registered series named op; the acquire pairs with the release in series_get, so a
 * ready series' name is complete when read. */
static struct metrics_series *series_lookup(struct metrics_series *s, const char *op)
{
    for (size_t i = 0; i < METRICS_MAX_OPERATIONS; i++) {
        if (!atomic_load_explicit(&s[i].ready, memory_order_acquire))
            return NULL;  /* slots fill in order: the rest are free */
        if (strcmp(s[i].operation, op) == 0)
            return &s[i];
    }
    return NULL;
}

/* The series of op, registering it on first use. Only registration locks, and its second
 * lookup under the lock keeps two threads from registering one name twice (a duplicate
 * series would make the whole exposition invalid). */
static struct metrics_series *series_get(struct metrics *m, enum metrics_hist h, const char *op)
{
    struct metrics_series *s = m->hist[h], *found;

    if (!name_ok(op, METRICS_NAME_MAX) || strcmp(op, "other") == 0) {
        found = &s[METRICS_MAX_OPERATIONS];
        atomic_store_explicit(&found->ready, 1, memory_order_release);
        return found;
    }
    if ((found = series_lookup(s, op)))
        return found;
    pthread_mutex_lock(&m->register_mu);
    if (!(found = series_lookup(s, op))) {
        for (size_t i = 0; i < METRICS_MAX_OPERATIONS && !found; i++) {
            if (!atomic_load_explicit(&s[i].ready, RELAXED)) {
                snprintf(s[i].operation, METRICS_NAME_MAX, "%s", op);
                atomic_store_explicit(&s[i].ready, 1, memory_order_release);
                found = &s[i];
            }
        }
        if (!found) {
            found = &s[METRICS_MAX_OPERATIONS];
            atomic_store_explicit(&found->ready, 1, memory_order_release);
        }
    }
    pthread_mutex_unlock(&m->register_mu);
    return found;
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
        atomic_store(&m->good_ms, health_now(m));
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
        atomic_store(&m->good_ms, health_now(m));
}

int metrics_health(const struct metrics *m, int64_t now_ms, char *reason, size_t cap)
{
    unsigned failures = atomic_load(&m->failures);
    int64_t quiet;

    if (failures >= METRICS_HEALTH_FAILURES) {
        snprintf(reason, cap, "the last %u receives from SQS failed", failures);
        return -1;
    }
    quiet = now_ms - atomic_load(&m->good_ms);
    if (!atomic_load(&m->idle) && quiet > m->stale_ms) {
        if (atomic_load(&m->ever_received))
            snprintf(reason, cap, "no successful receive from SQS for %" PRId64
                     " s (limit %" PRId64 " s)", quiet / 1000, m->stale_ms / 1000);
        else
            snprintf(reason, cap, "no successful receive from SQS in the %" PRId64
                     " s since the start (limit %" PRId64 " s)", quiet / 1000,
                     m->stale_ms / 1000);
        return -1;
    }
    snprintf(reason, cap, "ok");
    return 0;
}

/* --------------------------------------------------------------------- rendering ------- */

struct out {
    char *buf;
    size_t cap, len;
    int full;                    /* something did not fit */
};

static void out_printf(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void out_printf(struct out *o, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (o->full)
        return;
    va_start(ap, fmt);
    n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= o->cap - o->len)
        o->full = 1;
    else
        o->len += (size_t)n;
}

static void out_char(struct out *o, char c)
{
    if (o->len + 1 < o->cap)
        o->buf[o->len++] = c;
    else
        o->full = 1;
}

/* A label value: backslash, double quote and newline escaped as the format asks. Other
 * bytes outside printable ASCII become '?', so that the text is always valid UTF-8. */
static void out_label(struct out *o, const char *v)
{
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if (*p == '\\' || *p == '"') {
            out_char(o, '\\');
            out_char(o, (char)*p);
        } else if (*p == '\n') {
            out_char(o, '\\');
            out_char(o, 'n');
        } else {
            out_char(o, *p >= 0x20 && *p < 0x7f ? (char)*p : '?');
        }
    }
}

static void out_family(struct out *o, const char *name, const char *type, const char *help)
{
    out_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void out_labelled(struct out *o, const char *name, const char *label, const char *value,
                         uint64_t n)
{
    out_printf(o, "%s{%s=\"", name, label);
    out_label(o, value);
    out_printf(o, "\"} %" PRIu64 "\n", n);
}

static uint64_t load(const atomic_uint_fast64_t *a)
{
    return atomic_load_explicit((atomic_uint_fast64_t *)a, RELAXED);
}

static void render_counters(const struct metrics *m, struct out *o)
{
    static const struct { const char *name, *help; } c[METRICS_NCOUNTERS] = {
        [METRICS_RECEIVED] = { "lambdo_messages_received_total",
                               "Messages received from SQS." },
        [METRICS_DELETED] = { "lambdo_messages_deleted_total",
                              "Messages deleted from SQS once their work was done." },
        [METRICS_INVALID] = { "lambdo_messages_invalid_total",
                              "Messages refused by validation (left for the dead-letter queue)." },
        [METRICS_RETURNED] = { "lambdo_messages_returned_total",
                               "Messages handed back to the queue to run again." },
        [METRICS_FLY_RATE_LIMITED] = { "lambdo_fly_rate_limited_total",
                                       "Fly Machines API answers 429 (rate limited)." },
    };

    for (int i = 0; i < METRICS_NCOUNTERS; i++) {
        if (i == METRICS_FLY_RATE_LIMITED)
            continue;  /* with the other Fly numbers, below */
        out_family(o, c[i].name, "counter", c[i].help);
        out_printf(o, "%s %" PRIu64 "\n", c[i].name, load(&m->counter[i]));
    }
}

static void render_regions(const struct metrics *m, struct out *o,
                           enum metrics_region_counter c, const char *name, const char *help)
{
    out_family(o, name, "counter", help);
    for (size_t i = 0; i < m->nregions; i++)
        out_labelled(o, name, "region", m->regions[i], load(&m->by_region[c][i]));
    out_labelled(o, name, "region", "other", load(&m->by_region[c][METRICS_MAX_REGIONS]));
}

static void render_series(const struct metrics_series *s, const char *name, struct out *o)
{
    uint64_t cum = 0, sum = load(&s->sum_us);

    /* Cumulative from per-bucket counts read once each: the +Inf bucket and _count are
     * the same number even while other threads observe. */
    for (int b = 0; b <= METRICS_NBUCKETS; b++) {
        cum += load(&s->bucket[b]);
        out_printf(o, "%s_bucket{operation=\"", name);
        out_label(o, s->operation);
        out_printf(o, "\",le=\"%s\"} %" PRIu64 "\n",
                   b < METRICS_NBUCKETS ? bucket_le[b] : "+Inf", cum);
    }
    out_printf(o, "%s_sum{operation=\"", name);
    out_label(o, s->operation);
    out_printf(o, "\"} %" PRIu64 ".%06" PRIu64 "\n", sum / 1000000, sum % 1000000);
    out_printf(o, "%s_count{operation=\"", name);
    out_label(o, s->operation);
    out_printf(o, "\"} %" PRIu64 "\n", cum);
}

static void render_hist(const struct metrics *m, struct out *o, enum metrics_hist h,
                        const char *name, const char *help)
{
    out_family(o, name, "histogram", help);
    for (int i = 0; i <= METRICS_MAX_OPERATIONS; i++) {
        const struct metrics_series *s = &m->hist[h][i];
        if (atomic_load_explicit((atomic_int *)&s->ready, memory_order_acquire))
            render_series(s, name, o);
    }
}

int metrics_render(const struct metrics *m, char *buf, size_t cap)
{
    struct out o = { buf, cap, 0, cap == 0 };

    out_family(&o, "lambdo_build_info", "gauge", "The running lambdo's version (always 1).");
    out_labelled(&o, "lambdo_build_info", "version", m->version, 1);
    render_counters(m, &o);
    render_regions(m, &o, METRICS_MACHINES_CREATED, "lambdo_machines_created_total",
                   "Fly Machines created, by region.");
    render_regions(m, &o, METRICS_MACHINES_FAILED, "lambdo_machines_failed_total",
                   "Machine create attempts that failed, by region tried.");
    out_family(&o, "lambdo_fly_rate_limited_total", "counter",
               "Fly Machines API answers 429 (rate limited).");
    out_printf(&o, "lambdo_fly_rate_limited_total %" PRIu64 "\n",
               load(&m->counter[METRICS_FLY_RATE_LIMITED]));
    out_family(&o, "lambdo_machines_in_flight", "gauge",
               "Groups holding a Machine slot (running Machines in exit mode, creates in "
               "create mode).");
    out_printf(&o, "lambdo_machines_in_flight %" PRId64 "\n",
               (int64_t)atomic_load_explicit((atomic_int_fast64_t *)&m->in_flight, RELAXED));
    render_hist(m, &o, METRICS_SQS, "lambdo_sqs_request_seconds",
                "Duration of SQS API requests (each attempt), by operation.");
    render_hist(m, &o, METRICS_FLY, "lambdo_fly_request_seconds",
                "Duration of Fly Machines API requests (each attempt), by operation.");
    if (o.full)
        return -1;
    buf[o.len] = '\0';
    return (int)o.len;
}

/* --------------------------------------------------------------- request parsing ------- */

/* RFC 9110 tchar: what a method or a header name is made of. */
static int is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* The line at pos: [*start, *end) without its CR LF or LF; *next after it. 0 when no LF
 * has arrived yet, -1 for a CR that does not end the line. */
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

/* Whether a request line that has not ended yet can still become a valid one (or an
 * empty line before it): turns a TLS handshake or other binary away at once instead of
 * after the read timeout. Never 0 for what more bytes could make valid: the server
 * answers 400 as soon as this says no. */
static int prefix_plausible(const char *p, size_t n)
{
    size_t i = 0;

    while (i < n && is_tchar((unsigned char)p[i]))
        i++;
    if (i == n || (p[i] == '\r' && i + 1 == n))  /* a CR whose LF is on its way */
        return 1;
    if (i == 0 || p[i] != ' ')
        return 0;
    for (i++; i < n; i++)
        if ((unsigned char)p[i] < 0x20 && !(p[i] == '\r' && i + 1 == n))
            return 0;
    return 1;
}

static enum metrics_parse parse_request_line(const char *p, size_t n, struct metrics_request *r)
{
    size_t i = 0, t;

    while (i < n && is_tchar((unsigned char)p[i]))
        i++;
    if (i == 0 || i == n || p[i] != ' ')
        return METRICS_PARSE_BAD;
    r->method = p;
    r->method_len = i;
    t = ++i;
    while (i < n && (unsigned char)p[i] > 0x20 && (unsigned char)p[i] < 0x7f)
        i++;
    if (i == t || i == n || p[i] != ' ' || p[t] != '/')
        return METRICS_PARSE_BAD;
    r->path = p + t;
    r->path_len = i - t;
    for (size_t q = t; q < i; q++)
        if (p[q] == '?') {
            r->path_len = q - t;
            break;
        }
    p += i + 1;
    n -= i + 1;
    if (n != 8 || memcmp(p, "HTTP/", 5) != 0 || p[6] != '.' || p[5] < '0' || p[5] > '9' ||
        p[7] < '0' || p[7] > '9')
        return METRICS_PARSE_BAD;
    if (p[5] != '1')
        return p[5] >= '2' ? METRICS_PARSE_VERSION : METRICS_PARSE_BAD;
    r->minor = p[7] - '0';
    return METRICS_PARSE_OK;
}

/* One header line: a name, a colon, a value without NUL. No leading white space: that
 * would be obs-fold, which RFC 9112 lets a server refuse. */
static enum metrics_parse parse_field(const char *p, size_t n, struct metrics_request *r)
{
    size_t i = 0;

    while (i < n && is_tchar((unsigned char)p[i]))
        i++;
    if (i == 0 || i == n || p[i] != ':' || memchr(p, '\0', n))
        return METRICS_PARSE_BAD;
    if (i == 4 && strncasecmp(p, "host", 4) == 0)
        r->has_host = 1;
    return METRICS_PARSE_OK;
}

enum metrics_parse metrics_parse_request(const char *buf, size_t len, struct metrics_request *r)
{
    size_t pos = 0, end, next;
    int rc, blank = 0;

    memset(r, 0, sizeof *r);
    /* RFC 9112 2.2: empty lines before the request line are ignored (a few) */
    while ((rc = next_line(buf, len, pos, &end, &next)) == 1 && end == pos && blank < 4) {
        pos = next;
        blank++;
    }
    if (rc == 0)
        return prefix_plausible(buf + pos, len - pos) ? METRICS_PARSE_INCOMPLETE
                                                       : METRICS_PARSE_BAD;
    if (rc < 0 || end == pos)
        return METRICS_PARSE_BAD;
    if ((rc = parse_request_line(buf + pos, end - pos, r)) != METRICS_PARSE_OK)
        return rc;
    for (pos = next;; pos = next) {
        if ((rc = next_line(buf, len, pos, &end, &next)) <= 0)
            return rc == 0 ? METRICS_PARSE_INCOMPLETE : METRICS_PARSE_BAD;
        if (end == pos)
            break;
        if (parse_field(buf + pos, end - pos, r) != METRICS_PARSE_OK)
            return METRICS_PARSE_BAD;
    }
    if (r->minor >= 1 && !r->has_host)
        return METRICS_PARSE_BAD;
    r->head_len = next;
    return METRICS_PARSE_OK;
}

/* ----------------------------------------------------------------------- answering ----- */

struct answer {
    int status;
    const char *phrase;
    const char *type;            /* Content-Type */
    const char *extra;           /* more header lines, each ending in CRLF, or "" */
    const char *body;
    size_t body_len;
    int head_only;
};

static char *answer_build(const struct answer *a, size_t *out_len)
{
    char head[512];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\n%sConnection: close\r\n\r\n",
                     a->status, a->phrase, a->type, a->body_len, a->extra);
    size_t body = a->head_only ? 0 : a->body_len;
    char *out = malloc((size_t)n + body + 1);

    if (!out)
        return NULL;
    memcpy(out, head, (size_t)n);
    if (body)
        memcpy(out + n, a->body, body);
    out[(size_t)n + body] = '\0';
    *out_len = (size_t)n + body;
    return out;
}

static int path_is(const struct metrics_request *r, const char *p)
{
    return r->path_len == strlen(p) && memcmp(r->path, p, r->path_len) == 0;
}

static int method_is(const struct metrics_request *r, const char *meth)
{
    return r->method_len == strlen(meth) && memcmp(r->method, meth, r->method_len) == 0;
}

/* The exposition text in a buffer that grows until it fits; NULL when out of memory. */
static char *render_alloc(const struct metrics *m, size_t *len)
{
    for (size_t cap = RENDER_FIRST_CAP; cap <= RENDER_MAX_CAP; cap *= 2) {
        char *buf = malloc(cap);
        int n;

        if (!buf)
            return NULL;
        if ((n = metrics_render(m, buf, cap)) >= 0) {
            *len = (size_t)n;
            return buf;
        }
        free(buf);
    }
    return NULL;
}

static void answer_text(struct answer *a, int status, const char *phrase, const char *body)
{
    *a = (struct answer){ status, phrase, "text/plain; charset=utf-8", "", body, strlen(body),
                          0 };
}

/* A parsed request: which page, or 404, or 405. */
static char *respond_route(const struct metrics *m, const struct metrics_request *r,
                           int64_t now_ms, struct answer *a, size_t *out_len)
{
    char reason[256], text[300], *body = NULL, *out;
    int head = method_is(r, "HEAD");

    if (!path_is(r, "/metrics") && !path_is(r, "/healthz")) {
        answer_text(a, 404, "Not Found", "not found: try /metrics or /healthz\n");
    } else if (!method_is(r, "GET") && !head) {
        answer_text(a, 405, "Method Not Allowed", "method not allowed: GET or HEAD\n");
        a->extra = "Allow: GET, HEAD\r\n";
    } else if (path_is(r, "/healthz")) {
        int bad = metrics_health(m, now_ms, reason, sizeof reason) < 0;
        snprintf(text, sizeof text, bad ? "unhealthy: %s\n" : "%s\n", reason);
        answer_text(a, bad ? 503 : 200, bad ? "Service Unavailable" : "OK", text);
    } else {
        if (!(body = render_alloc(m, &a->body_len)))
            return NULL;
        a->status = 200;
        a->phrase = "OK";
        a->type = "text/plain; version=0.0.4; charset=utf-8";
        a->extra = "";
        a->body = body;
    }
    a->head_only = head;  /* HEAD: the headers GET would have, Content-Length included */
    out = answer_build(a, out_len);
    free(body);
    return out;
}

char *metrics_respond(const struct metrics *m, const char *buf, size_t len, int too_large,
                      int64_t now_ms, size_t *out_len, int *status)
{
    struct metrics_request r;
    struct answer a;
    enum metrics_parse p = too_large ? METRICS_PARSE_BAD : metrics_parse_request(buf, len, &r);
    char *out;

    if (p == METRICS_PARSE_OK) {
        out = respond_route(m, &r, now_ms, &a, out_len);
    } else {
        if (too_large)
            answer_text(&a, 431, "Request Header Fields Too Large", "request head too large\n");
        else if (p == METRICS_PARSE_VERSION)
            answer_text(&a, 505, "HTTP Version Not Supported", "HTTP/1.x only\n");
        else  /* garbage, or a head that ended early */
            answer_text(&a, 400, "Bad Request", "bad request\n");
        out = answer_build(&a, out_len);
    }
    if (status)
        *status = out ? a.status : 0;
    return out;
}

/* ----------------------------------------------------------------------- addresses ----- */

static int parse_port(const char *s, int *port)
{
    long v = 0;

    if (!*s || strlen(s) > 5)
        return -1;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (*p - '0');
    }
    if (v > 65535)
        return -1;
    *port = (int)v;
    return 0;
}

int metrics_addr_parse(const char *s, struct metrics_addr *a, struct lerr *e)
{
    char host[64];
    const char *colon;
    size_t hl;

    memset(a, 0, sizeof *a);
    if (!s || !*s)
        return lerr_set(e, LERR_INVALID, "metrics address is empty (want host:port, e.g. "
                        "127.0.0.1:9090, [::1]:9090 or :9090)");
    colon = strrchr(s, ':');
    if (!colon)
        return lerr_set(e, LERR_INVALID, "metrics address \"%.64s\" has no port (want "
                        "host:port, e.g. 127.0.0.1:9090 or :9090)", s);
    if (parse_port(colon + 1, &a->port) < 0)
        return lerr_set(e, LERR_INVALID, "metrics address \"%.64s\": the port must be a "
                        "number from 0 to 65535", s);
    hl = (size_t)(colon - s);
    if (hl >= sizeof host)
        return lerr_set(e, LERR_INVALID, "metrics address \"%.64s\": host too long", s);
    memcpy(host, s, hl);
    host[hl] = '\0';
    if (hl == 0) {
        a->family = AF_UNSPEC;
    } else if (host[0] == '[' && host[hl - 1] == ']') {
        host[hl - 1] = '\0';
        a->family = AF_INET6;
        if (inet_pton(AF_INET6, host + 1, a->ip) != 1)
            return lerr_set(e, LERR_INVALID, "metrics address \"%.64s\": not an IPv6 address "
                            "in brackets", s);
    } else if (strchr(host, ':')) {
        return lerr_set(e, LERR_INVALID, "metrics address \"%.64s\": an IPv6 address goes in "
                        "brackets, e.g. [::1]:9090", s);
    } else if (strcmp(host, "localhost") == 0) {
        a->family = AF_INET;
        memcpy(a->ip, "\x7f\0\0\x01", 4);
    } else if (inet_pton(AF_INET, host, a->ip) == 1) {
        a->family = AF_INET;
    } else {
        return lerr_set(e, LERR_INVALID, "metrics address \"%.64s\": the host must be an IP "
                        "address, localhost, or empty for every interface", s);
    }
    return 0;
}

/* ------------------------------------------------------------------------ the server --- */

enum conn_state { CONN_FREE, CONN_READ, CONN_WRITE, CONN_DRAIN };

struct conn {
    int fd;
    enum conn_state state;
    int64_t deadline;            /* mono_ms */
    size_t in_len;
    char *out;
    size_t out_len, out_off;
    char in[METRICS_HEAD_MAX];
};

struct metrics_server {
    struct metrics *m;
    int listen_fd;
    int stop_rd, stop_wr;        /* a byte in the pipe: stop */
    int port;
    char shown[80];              /* the address, for log lines */
    pthread_t thread;
    int64_t accept_paused_until;
    struct conn conns[METRICS_MAX_CONNECTIONS];
};

static void conn_close(struct conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    free(c->out);
    c->fd = -1;
    c->out = NULL;
    c->state = CONN_FREE;
}

/* All of the answer sent: say so (FIN), then read until the client closes, so that the
 * kernel does not answer bytes it still sends (a body, a pipelined request) with a reset
 * that could destroy the answer before the client read it. */
static void conn_sent(struct conn *c, int64_t now)
{
    shutdown(c->fd, SHUT_WR);
    free(c->out);
    c->out = NULL;
    c->state = CONN_DRAIN;
    c->deadline = now + DRAIN_MS;
}

static void conn_write(struct conn *c, int64_t now)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) {
            conn_close(c);
            return;
        }
        c->out_off += (size_t)n;
    }
    conn_sent(c, now);
}

static void conn_answer(struct metrics_server *s, struct conn *c, int too_large, int64_t now)
{
    int status = 0;

    c->out = metrics_respond(s->m, c->in, c->in_len, too_large, health_now(s->m), &c->out_len,
                             &status);
    if (!c->out) {
        log_warn("metrics: out of memory for an answer");
        conn_close(c);
        return;
    }
    log_debug("metrics: answered %d", status);
    c->out_off = 0;
    c->state = CONN_WRITE;
    c->deadline = now + METRICS_WRITE_TIMEOUT_MS;
    conn_write(c, now);
}

static void conn_read(struct metrics_server *s, struct conn *c, int64_t now)
{
    struct metrics_request r;
    enum metrics_parse p;
    ssize_t n = recv(c->fd, c->in + c->in_len, sizeof c->in - c->in_len, MSG_DONTWAIT);

    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    if (n <= 0) {                /* closed or broken before a whole request: no one to answer */
        conn_close(c);
        return;
    }
    c->in_len += (size_t)n;
    p = metrics_parse_request(c->in, c->in_len, &r);
    if (p != METRICS_PARSE_INCOMPLETE)
        conn_answer(s, c, 0, now);
    else if (c->in_len == sizeof c->in)
        conn_answer(s, c, 1, now);
}

/* Reads and drops what the client sends after its answer; a bounded amount per wake-up,
 * so that a client sending as fast as it can does not keep the loop from the others. */
static void conn_drain(struct conn *c)
{
    char scratch[4096];
    ssize_t n = 0;

    for (int i = 0; i < 16; i++)
        if ((n = recv(c->fd, scratch, sizeof scratch, MSG_DONTWAIT)) <= 0)
            break;
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
        conn_close(c);
}

/* Out of time: a client that sent part of a request hears 408 if its socket takes it at
 * once; one that sent nothing, or that does not read its answer, is just dropped. */
static void conn_expire(struct conn *c)
{
    static const char timeout[] = "HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n"
                                  "Connection: close\r\n\r\n";

    if (c->state == CONN_READ && c->in_len > 0 &&
        send(c->fd, timeout, sizeof timeout - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
        log_debug("metrics: a client sent part of a request and then nothing");
    conn_close(c);
}

/* One connection for the free slot c: 1 taken, 0 none waiting, -1 accept failed for lack
 * of descriptors or memory: the pending connection would wake poll at once, over and
 * over, so accepting pauses a moment instead. */
static int accept_one(struct metrics_server *s, struct conn *c, int64_t now)
{
    for (;;) {
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd >= 0) {
            c->fd = fd;
            c->state = CONN_READ;
            c->in_len = 0;
            c->deadline = now + METRICS_READ_TIMEOUT_MS;
            return 1;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        if (errno != EINTR && errno != ECONNABORTED && errno != EPROTO) {
            log_warn("metrics: accept: %s", strerror(errno));
            s->accept_paused_until = now + ACCEPT_PAUSE_MS;
            return -1;
        }
        /* that connection is already gone: the next one */
    }
}

static void server_accept(struct metrics_server *s, int64_t now)
{
    for (size_t i = 0; i < METRICS_MAX_CONNECTIONS; i++)
        if (s->conns[i].state == CONN_FREE && accept_one(s, &s->conns[i], now) <= 0)
            return;
}

static void conn_step(struct metrics_server *s, struct conn *c, int64_t now)
{
    switch (c->state) {
    case CONN_READ:
        conn_read(s, c, now);
        break;
    case CONN_WRITE:
        conn_write(c, now);
        break;
    case CONN_DRAIN:
        conn_drain(c);
        break;
    case CONN_FREE:
        break;
    }
}

/* The poll set: [0] the stop pipe, [1] the listening socket (fd -1 while every slot is
 * taken or accepting is paused), then one per connection slot. Returns poll's timeout. */
static int server_pollset(const struct metrics_server *s, struct pollfd *p, int64_t now)
{
    int64_t wake = -1;
    int slot_free = 0;

    p[0] = (struct pollfd){ .fd = s->stop_rd, .events = POLLIN };
    for (size_t i = 0; i < METRICS_MAX_CONNECTIONS; i++) {
        const struct conn *c = &s->conns[i];
        p[2 + i] = (struct pollfd){ .fd = -1 };
        if (c->state == CONN_FREE) {
            slot_free = 1;
            continue;
        }
        p[2 + i].fd = c->fd;
        p[2 + i].events = c->state == CONN_WRITE ? POLLOUT : POLLIN;
        if (wake < 0 || c->deadline < wake)
            wake = c->deadline;
    }
    p[1] = (struct pollfd){ .fd = -1, .events = POLLIN };
    if (slot_free && now >= s->accept_paused_until)
        p[1].fd = s->listen_fd;
    else if (slot_free && (wake < 0 || s->accept_paused_until < wake))
        wake = s->accept_paused_until;
    if (wake < 0)
        return -1;
    return wake <= now ? 0 : (int)(wake - now);
}

static void *server_main(void *arg)
{
    struct metrics_server *s = arg;
    struct pollfd p[2 + METRICS_MAX_CONNECTIONS];

    for (;;) {
        int64_t now = mono_ms();
        int timeout = server_pollset(s, p, now);

        if (poll(p, 2 + METRICS_MAX_CONNECTIONS, timeout) < 0 && errno != EINTR) {
            log_error("metrics: poll: %s; the metrics server stops", strerror(errno));
            break;
        }
        if (p[0].revents)
            break;
        now = mono_ms();
        for (size_t i = 0; i < METRICS_MAX_CONNECTIONS; i++) {
            struct conn *c = &s->conns[i];
            if (c->state != CONN_FREE && p[2 + i].revents)
                conn_step(s, c, now);
            if (c->state != CONN_FREE && now >= c->deadline)
                conn_expire(c);
        }
        if (p[1].fd >= 0 && p[1].revents)
            server_accept(s, now);
    }
    for (size_t i = 0; i < METRICS_MAX_CONNECTIONS; i++)
        conn_close(&s->conns[i]);
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

/* A listening socket for a, or -1 with errno set. family AF_UNSPEC is the IPv6 wildcard
 * taking IPv4 too; callers fall back to IPv4 alone when the host has no IPv6. */
static int listen_on(const struct metrics_addr *a, int family)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    int fd, one = 1, v6only = a->family == AF_INET6, saved;

    memset(&ss, 0, sizeof ss);
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)a->port);
        if (a->family == AF_INET)
            memcpy(&sin->sin_addr, a->ip, 4);  /* else INADDR_ANY, zeroed */
        sl = sizeof *sin;
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)a->port);
        if (a->family == AF_INET6)
            memcpy(&sin6->sin6_addr, a->ip, 16);  /* else in6addr_any, zeroed */
        sl = sizeof *sin6;
        family = AF_INET6;
    }
    if ((fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0)
        return -1;
    /* SO_REUSEADDR: a restart does not wait for TIME_WAIT; a port someone listens on
     * still fails with EADDRINUSE on Linux. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        (family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only) < 0) ||
        bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
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
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
        close(fd);
        return lerr_set(e, LERR_IO, "metrics address %s: getsockname: %s", text,
                        strerror(errno));
    }
    s->listen_fd = fd;
    s->port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                            : ((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
}

static void server_free(struct metrics_server *s)
{
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    if (s->stop_rd >= 0)
        close(s->stop_rd);
    if (s->stop_wr >= 0)
        close(s->stop_wr);
    free(s);
}

/* The server thread blocks every signal: a SIGTERM must reach the daemon's signalfd, not
 * kill the process from a thread that does not expect it. */
static int server_start(struct metrics_server *s, struct lerr *e)
{
    pthread_attr_t attr;
    sigset_t all, old;
    int rc;

    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, SERVER_STACK);
    rc = pthread_create(&s->thread, &attr, server_main, s);
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return lerr_set(e, LERR_IO, "metrics: cannot start a thread: %s", strerror(rc));
    return 0;
}

int metrics_serve(struct metrics *m, const char *addr, struct lerr *e)
{
    struct metrics_addr a;
    struct metrics_server *s;
    int fds[2];

    if (m->server)
        return lerr_set(e, LERR_INVALID, "metrics: already serving");
    if (metrics_addr_parse(addr, &a, e) < 0)
        return -1;
    if (!(s = calloc(1, sizeof *s)))
        return lerr_set(e, LERR_NOMEM, "metrics: out of memory");
    s->m = m;
    s->listen_fd = s->stop_rd = s->stop_wr = -1;
    for (size_t i = 0; i < METRICS_MAX_CONNECTIONS; i++)
        s->conns[i].fd = -1;
    if (server_listen(s, &a, addr, e) < 0) {
        server_free(s);
        return -1;
    }
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0) {
        lerr_set(e, LERR_IO, "metrics: pipe: %s", strerror(errno));
        server_free(s);
        return -1;
    }
    s->stop_rd = fds[0];
    s->stop_wr = fds[1];
    snprintf(s->shown, sizeof s->shown, "%.*s:%d", (int)(strrchr(addr, ':') - addr), addr,
             s->port);
    if (server_start(s, e) < 0) {
        server_free(s);
        return -1;
    }
    m->server = s;
    log_info("metrics: serving /metrics and /healthz on %s", s->shown);
    return 0;
}

int metrics_port(const struct metrics *m)
{
    return m->server ? m->server->port : 0;
}

void metrics_stop(struct metrics *m)
{
    struct metrics_server *s = m->server;

    if (!s)
        return;
    while (write(s->stop_wr, "x", 1) < 0 && errno == EINTR)
        ;
    pthread_join(s->thread, NULL);
    server_free(s);
    m->server = NULL;
}
