#include "json.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include "text.h"

/* ---- the strict scanner ---------------------------------------------------------------- */

static int json_fail(struct json *j, const unsigned char *at, const char *why)
{
    j->err_at = (size_t)(at - j->start);
    j->why = why;
    return -1;
}

void json_init(struct json *j, const char *s, size_t len)
{
    memset(j, 0, sizeof *j);
    j->start = j->p = (const unsigned char *)(s ? s : "");
    j->end = j->start + (s ? len : 0);
    j->max_depth = JSON_MAX_DEPTH;
}

int json_peek(struct json *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        j->p++;
    return j->p < j->end ? *j->p : -1;
}

/* The code unit of the 4 hex digits at p, or -1 when there are not 4 before end. */
static long hex4(const unsigned char *p, const unsigned char *end)
{
    long v = 0;

    for (int i = 0; i < 4; i++) {
        int d = p + i < end ? text_hex_digit(p[i]) : -1;

        if (d < 0)
            return -1;
        v = v << 4 | d;
    }
    return v;
}

/* The escape at p (its backslash): its bytes into out (*n of them, a surrogate pair joined
 * into one code point), and what follows it; NULL on an error. A lone surrogate cannot be
 * turned into UTF-8 (and cJSON refuses it), unless lenient (see json.h). */
static const unsigned char *json_unescape(struct json *j, const unsigned char *p,
                                          unsigned char out[4], unsigned *n)
{
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    const unsigned char *q = p + 6;
    const char *hit;
    long u, lo;

    if (p + 1 == j->end)
        return json_fail(j, p, "unterminated string"), NULL;
    if (p[1] != 'u') {
        if (!(hit = memchr(from, p[1], sizeof from - 1)))
            return json_fail(j, p, "bad escape in string"), NULL;
        out[0] = (unsigned char)to[hit - from];
        *n = 1;
        return p + 2;
    }
    if ((u = hex4(p + 2, j->end)) < 0)
        return json_fail(j, p, "bad \\u escape in string"), NULL;
    if (u >= 0xD800 && u <= 0xDBFF && j->end - q >= 2 && q[0] == '\\' && q[1] == 'u' &&
        (lo = hex4(q + 2, j->end)) >= 0xDC00 && lo <= 0xDFFF) {
        u = 0x10000 + ((u - 0xD800) << 10 | (lo - 0xDC00));
        q += 6;
    } else if (u >= 0xD800 && u <= 0xDFFF) {
        if (!j->lenient)
            return json_fail(j, p, "unpaired surrogate in \\u escape"), NULL;
        j->lone++;
    }
    *n = text_utf8_put((unsigned long)u, out);
    return q;
}

/* Appends s[0..n) to out[0..cap) as far as it fits; *len counts it all. */
static void json_put(char *out, size_t cap, size_t *len, const void *s, size_t n)
{
    if (out && *len < cap)
        memcpy(out + *len, s, n < cap - *len ? n : cap - *len);
    *len += n;
}

/* 1 when none of the 8 bytes at p needs a look: no '"', '\\', control or non-ASCII byte.
 * Strings are most of an SQS answer, and their bytes mostly plain ASCII: eight at a time
 * is what keeps reading them cheap (a zero byte in x is found as (x - 1) & ~x & 0x80);
 * inlined, or a call per eight bytes costs as much as the test (-Os would not). */
static inline __attribute__((always_inline)) int json_plain8(const unsigned char *p)
{
    const uint64_t ones = 0x0101010101010101u, high = ones * 0x80;
    uint64_t v, q, b;

    memcpy(&v, p, 8);
    q = v ^ ones * '"';
    b = v ^ ones * '\\';
    return !((((q - ones) & ~q) | ((b - ones) & ~b) | (v - ones * 0x20) | v) & high);
}

int json_string(struct json *j, char *out, size_t cap, size_t *len)
{
    const unsigned char *p, *run;
    size_t n = 0;

    if (json_peek(j) != '"')
        return json_fail(j, j->p, j->p == j->end ? "unexpected end" : "expected a string");
    /* Plain bytes are copied in runs, up to the next quote or backslash. */
    for (p = run = j->p + 1;;) {
        unsigned char c, esc[4];
        unsigned k, cp;
        size_t m;

        while (j->end - p >= 8 && json_plain8(p))
            p += 8;
        /* at most 7 plain bytes before what stopped the eight-byte test */
        while (p < j->end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\')
            p++;
        if (p == j->end)
            return json_fail(j, p, "unterminated string");
        c = *p;
        if (c == '"' || c == '\\') {
            json_put(out, cap, &n, run, (size_t)(p - run));
            if (c == '"')
                break;
            if (!(p = json_unescape(j, p, esc, &k)))
                return -1;
            json_put(out, cap, &n, esc, k);
            run = p;
        } else if (c < 0x20) {
            return json_fail(j, p, "control character in string");
        } else if (j->lenient) {
            p++;
        } else if ((m = text_utf8_next(p, (size_t)(j->end - p), &cp))) {
            p += m;
        } else {
            return json_fail(j, p, "invalid UTF-8");
        }
    }
    j->p = p + 1;
    if (out && n < cap)
        out[n] = '\0';
    if (len)
        *len = n;
    return 0;
}

static const unsigned char *json_digits(const unsigned char *p, const unsigned char *end)
{
    while (p < end && *p >= '0' && *p <= '9')
        p++;
    return p;
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int json_number(struct json *j)
{
    const unsigned char *p = j->p + (*j->p == '-'), *q, *end = j->end;

    q = json_digits(p, end);
    if (q == p)
        return json_fail(j, p, "expected a digit");
    if (*p == '0' && q - p > 1)
        return json_fail(j, p, "leading zero in number");
    p = q;
    if (p < end && *p == '.') {
        q = json_digits(p + 1, end);
        if (q == p + 1)
            return json_fail(j, q, "expected a digit after the decimal point");
        p = q;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p += 1 + (p + 1 < end && (p[1] == '+' || p[1] == '-'));
        q = json_digits(p, end);
        if (q == p)
            return json_fail(j, p, "expected a digit in the exponent");
        p = q;
    }
    j->p = p;
    return 0;
}

/* A value that is not an array or an object, starting with c at p. */
static int json_scalar(struct json *j, int c)
{
    /* the only word c can start */
    const char *word = c == 't' ? "true" : c == 'f' ? "false" : "null";
    size_t n = strlen(word);

    if (c == '"' || c == -1)  /* at the end, json_string says "unexpected end" */
        return json_string(j, NULL, 0, NULL);
    if (c == '-' || (c >= '0' && c <= '9'))
        return json_number(j);
    if ((size_t)(j->end - j->p) >= n && memcmp(j->p, word, n) == 0) {
        j->p += n;
        return 0;
    }
    return json_fail(j, j->p, "unexpected character");
}

/* Steps through an object (obj) or an array: *state is 0 before its opening bracket, which
 * is then checked and read. 1 when a value comes next (an object's member name and colon
 * read, the name into key when key is not NULL), 0 after the closing bracket, -1. */
static int json_next(struct json *j, int *state, int obj, char *key, size_t cap)
{
    int c = json_peek(j), first = !*state;
    size_t n;

    if (first) {
        if (c != (obj ? '{' : '['))
            return json_fail(j, j->p, obj ? "expected an object" : "expected an array");
        j->p++;
        *state = 1;
        c = json_peek(j);
    }
    if (c == (obj ? '}' : ']')) {
        j->p++;
        return 0;
    }
    if (!first) {
        if (c != ',')
            return json_fail(j, j->p, c == -1 ? "unexpected end"
                                      : obj ? "expected ',' or '}'" : "expected ',' or ']'");
        j->p++;
    }
    if (!obj)
        return 1;
    c = json_peek(j);
    if (c != '"')
        return json_fail(j, j->p, c == -1 ? "unexpected end" : "expected a string key");
    if (json_string(j, key, cap, &n) < 0)
        return -1;
    if (key && (n >= cap || strlen(key) != n))
        key[0] = '\0';
    if (json_peek(j) != ':')
        return json_fail(j, j->p, "expected ':'");
    j->p++;
    return 1;
}

int json_member(struct json *j, int *state, char *key, size_t cap)
{
    return json_next(j, state, 1, key, cap);
}

int json_member_of(struct json *j, int *state, const char *const *names, size_t n, int *which)
{
    char key[64];
    int r = json_member(j, state, key, sizeof key);

    *which = -1;
    for (size_t i = 0; r > 0 && i < n && *which < 0; i++)
        if (key[0] == names[i][0] && strcmp(key, names[i]) == 0)
            *which = (int)i;
    return r;
}

int json_element(struct json *j, int *state)
{
    return json_next(j, state, 0, NULL, 0);
}

/* One value at p, checked; depth containers are open around it. item, when not NULL, is
 * called for each element (member value) of the container at p. The recursion is bounded
 * by max_depth (at most JSON_MAX_DEPTH): a frame of a few dozen bytes per level, well
 * within a job thread's stack. */
static int json_value(struct json *j, unsigned depth, json_item_fn item, void *ctx)
{
    int c = json_peek(j), state = 0, r;
    const unsigned char *at;

    if (c != '[' && c != '{')
        return json_scalar(j, c);
    if (depth >= j->max_depth || depth >= JSON_MAX_DEPTH)
        return json_fail(j, j->p, "nested too deeply");
    while ((r = json_next(j, &state, c == '{', NULL, 0)) > 0) {
        json_peek(j);
        at = j->p;
        if (json_value(j, depth + 1, NULL, NULL) < 0)
            return -1;
        if (item)
            item(ctx, (size_t)(at - j->start), (size_t)(j->p - at));
    }
    return r;
}

int json_skip(struct json *j)
{
    return json_value(j, 0, NULL, NULL);
}

int json_items(const char *s, size_t len, json_item_fn item, void *ctx, size_t *err_at,
               const char **why)
{
    struct json j;

    json_init(&j, s, len);
    if (json_value(&j, 0, item, ctx) == 0 && json_peek(&j) == -1)
        return 0;
    if (!j.why)
        json_fail(&j, j.p, "unexpected data after the JSON value");
    if (err_at)
        *err_at = j.err_at;
    if (why)
        *why = j.why;
    return -1;
}

/* ---- cJSON, under a lock ---------------------------------------------------------------- */

static pthread_mutex_t json_mu = PTHREAD_MUTEX_INITIALIZER;

cJSON *json_parse(const char *s, size_t len)
{
    cJSON *j;

    pthread_mutex_lock(&json_mu);
    j = cJSON_ParseWithLength(s, len);
    pthread_mutex_unlock(&json_mu);
    return j;
}

/* ---- writing ------------------------------------------------------------------------- */

char *json_buf_room(struct json_buf *b, size_t n)
{
    size_t cap = b->cap ? b->cap : 512;
    char *p;

    if (b->oom)
        return NULL;
    if (b->cap - b->len > n)
        return b->p + b->len;
    while (cap - b->len <= n && cap <= SIZE_MAX / 2)
        cap *= 2;
    if (cap - b->len <= n || !(p = realloc(b->p, cap))) {
        b->oom = 1;
        return NULL;
    }
    b->p = p;
    b->cap = cap;
    return p + b->len;
}

static void json_buf_put(struct json_buf *b, const char *s, size_t n)
{
    char *p = json_buf_room(b, n);

    if (!p)
        return;
    memcpy(p, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void json_buf_lit(struct json_buf *b, const char *s)
{
    json_buf_put(b, s, strlen(s));
}

void json_buf_fmt(struct json_buf *b, const char *fmt, ...)
{
    char s[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(s, sizeof s, fmt, ap);
    va_end(ap);
    json_buf_lit(b, s);
}

void json_buf_string(struct json_buf *b, const char *s, size_t n)
{
    size_t run = 0;

    json_buf_put(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];

        if (ch >= 0x20 && ch != '"' && ch != '\\')
            continue;
        json_buf_put(b, s + run, i - run);
        run = i + 1;
        if (ch == '\n' || ch == '\r' || ch == '\t')
            json_buf_lit(b, ch == '\n' ? "\\n" : ch == '\r' ? "\\r" : "\\t");
        else
            json_buf_fmt(b, ch >= 0x20 ? "\\%c" : "\\u%04x", ch);
    }
    json_buf_put(b, s + run, n - run);
    json_buf_put(b, "\"", 1);
}
