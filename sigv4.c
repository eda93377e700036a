/*
 * sigv4.c - AWS Signature Version 4 header signing.
 *
 * Nothing here allocates. sigv4_sign() streams the canonical request straight into
 * SHA-256, so there is no buffer to size and no limit on headers or query parameters;
 * sorting is done by repeatedly picking the next-larger element, which needs no scratch
 * array and is cheap for the handful of headers and parameters a real request carries.
 * The same writer fills a caller's buffer for sigv4_canonical_request(), so what the
 * tests compare is byte for byte what gets signed.
 */
#include "sigv4.h"
#include "text.h"

#include <limits.h>
#include <string.h>
#include <time.h>

#include <bearssl_hash.h>
#include <bearssl_hmac.h>

#define SIGV4_ALGORITHM "AWS4-HMAC-SHA256"
#define SIGV4_MAX_NAME 64   /* region, service: real ones are under 32 characters */

static const char HEX_UPPER[] = "0123456789ABCDEF";
static const char HEX_LOWER[] = "0123456789abcdef";

/* ---- output: a caller's buffer, or a running SHA-256 ---------------------------------- */

struct sink {
    char *buf;                /* buffer mode: holds cap - 1 bytes and a NUL */
    size_t cap;
    size_t len;               /* bytes written so far, counted past cap to report the need */
    br_sha256_context *sha;   /* hash mode when set */
    size_t staged;            /* hash mode: bytes of stage not yet hashed */
    char stage[128];          /* most output comes a byte at a time: batch it for SHA-256 */
};

static void sink_flush(struct sink *s)
{
    if (s->sha && s->staged) {
        br_sha256_update(s->sha, s->stage, s->staged);
        s->staged = 0;
    }
}

static void sink_put(struct sink *s, const void *data, size_t n)
{
    if (s->sha) {
        if (n > sizeof s->stage - s->staged)
            sink_flush(s);
        if (n > sizeof s->stage) {
            br_sha256_update(s->sha, data, n);
        } else {
            memcpy(s->stage + s->staged, data, n);
            s->staged += n;
        }
    } else if (s->len < s->cap && n < s->cap - s->len) {
        memcpy(s->buf + s->len, data, n);
    }
    s->len += n;
}

static void sink_putc(struct sink *s, char c)
{
    if (s->sha && s->staged < sizeof s->stage) {
        s->stage[s->staged++] = c;
        s->len++;
        return;
    }
    sink_put(s, &c, 1);
}

static void sink_puts(struct sink *s, const char *str)
{
    sink_put(s, str, strlen(str));
}

static void sink_hex(struct sink *s, const unsigned char *bytes, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        sink_putc(s, HEX_LOWER[bytes[i] >> 4]);
        sink_putc(s, HEX_LOWER[bytes[i] & 15]);
    }
}

/* NUL-terminates a buffer sink; -1 when it did not fit. */
static int sink_finish(struct sink *s, const char *what, struct lerr *e)
{
    if (s->len >= s->cap || s->len > INT_MAX)
        return lerr_set(e, LERR_TOO_LARGE, "%s needs %zu bytes, the buffer holds %zu", what,
                        s->len + 1, s->cap);
    s->buf[s->len] = '\0';
    return (int)s->len;
}

static void hex_encode(const unsigned char *bytes, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = HEX_LOWER[bytes[i] >> 4];
        out[2 * i + 1] = HEX_LOWER[bytes[i] & 15];
    }
    out[2 * n] = '\0';
}

static void sha256_hex(const void *data, size_t len, char out[65])
{
    br_sha256_context sha;
    unsigned char hash[32];

    br_sha256_init(&sha);
    br_sha256_update(&sha, data, len);
    br_sha256_out(&sha, hash);
    hex_encode(hash, sizeof hash, out);
}

/* ---- URI encoding ------------------------------------------------------------------------ */

static int is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_' || c == '.' || c == '~';
}

struct range {
    const char *p, *end;
};

/* Yields the canonical URI encoding of a range one byte at a time, so that two encodings
 * can be compared for sorting without being stored anywhere. */
struct uri_enc {
    const unsigned char *p, *end;
    int decode;              /* query parts are decoded first: "%e1", "%E1" and a raw byte
                                all end up as "%E1", as the server will see them */
    char hold[2];            /* hex digits still owed after a '%' */
    int held;
};

static void uri_enc_init(struct uri_enc *it, struct range r, int decode)
{
    it->p = (const unsigned char *)r.p;
    it->end = (const unsigned char *)r.end;
    it->decode = decode;
    it->held = 0;
}

static int uri_enc_next(struct uri_enc *it)
{
    unsigned char c;

    if (it->held == 2) {
        it->held = 1;
        return it->hold[0];
    }
    if (it->held == 1) {
        it->held = 0;
        return it->hold[1];
    }
    if (it->p >= it->end)
        return -1;
    c = *it->p++;
    /* A '%' not followed by two hex digits is a literal '%' and is encoded as "%25". */
    if (it->decode && c == '%' && it->end - it->p >= 2 && text_hex_digit(it->p[0]) >= 0 &&
        text_hex_digit(it->p[1]) >= 0) {
        c = (unsigned char)(text_hex_digit(it->p[0]) << 4 | text_hex_digit(it->p[1]));
        it->p += 2;
    }
    if (is_unreserved(c))
        return c;
    it->hold[0] = HEX_UPPER[c >> 4];
    it->hold[1] = HEX_UPPER[c & 15];
    it->held = 2;
    return '%';
}

static void sink_uri(struct sink *s, struct range r, int decode)
{
    struct uri_enc it;
    int c;

    uri_enc_init(&it, r, decode);
    while ((c = uri_enc_next(&it)) >= 0)
        sink_putc(s, (char)c);
}

static int uri_cmp(struct range a, struct range b)
{
    struct uri_enc ia, ib;
    int ca, cb;

    uri_enc_init(&ia, a, 1);
    uri_enc_init(&ib, b, 1);
    do {
        ca = uri_enc_next(&ia);
        cb = uri_enc_next(&ib);
    } while (ca == cb && ca >= 0);
    return ca - cb;
}

/* ---- canonical path ------------------------------------------------------------------------ */

/* Next '/'-separated segment of [*cur, end); 0 when there is none left. */
static int path_next(const char **cur, const char *end, struct range *seg)
{
    const char *p = *cur, *slash;

    if (p > end)
        return 0;
    slash = memchr(p, '/', (size_t)(end - p));
    seg->p = p;
    seg->end = slash ? slash : end;
    *cur = seg->end + 1;
    return 1;
}

static int seg_is(struct range seg, const char *s)
{
    size_t n = strlen(s);
    return (size_t)(seg.end - seg.p) == n && memcmp(seg.p, s, n) == 0;
}

/* Whether a segment outlives the ".." segments that follow it. Removing dot segments
 * with a stack would mean rewinding output already fed to SHA-256, so each segment is
 * checked on its own: it is popped once the ".."s after it outnumber the segments they
 * first have to pop. Quadratic in the segment count, which is tiny in practice. */
static int seg_survives(const char *after, const char *end)
{
    struct range seg;
    size_t depth = 1;

    while (path_next(&after, end, &seg)) {
        if (seg.p == seg.end || seg_is(seg, "."))
            continue;
        if (seg_is(seg, "..")) {
            if (--depth == 0)
                return 0;
        } else {
            depth++;
        }
    }
    return 1;
}

/* Path normalization as botocore and the JS SDK do it: empty and "." segments dropped,
 * ".." removes the segment before it (never above the root), a leading and a trailing
 * slash kept. Each segment is then URI-encoded: the path given is already encoded as
 * sent, so this is the double encoding AWS wants for every service but S3. */
static void path_write(struct sink *s, const char *path, int normalize)
{
    const char *end, *cur;
    struct range seg;
    size_t kept = 0;

    if (!path || !*path) {
        sink_putc(s, '/');
        return;
    }
    end = path + strlen(path);
    if (!normalize) {
        /* S3: the path as sent is the object key encoded once, and is signed as is. */
        sink_put(s, path, (size_t)(end - path));
        return;
    }
    if (*path == '/')
        sink_putc(s, '/');
    cur = path;
    while (path_next(&cur, end, &seg)) {
        if (seg.p == seg.end || seg_is(seg, ".") || seg_is(seg, ".."))
            continue;
        if (!seg_survives(seg.end + 1, end))
            continue;
        if (kept++)
            sink_putc(s, '/');
        sink_uri(s, seg, 0);
    }
    if (kept && end[-1] == '/')
        sink_putc(s, '/');
}

/* ---- canonical query ------------------------------------------------------------------------ */

/* Next non-empty '&'-separated parameter; a parameter without '=' has an empty value. */
static int query_next(const char **cur, const char *end, struct range *key, struct range *val)
{
    const char *p = *cur, *stop, *eq;

    while (p < end && *p == '&')
        p++;
    if (p >= end)
        return 0;
    stop = memchr(p, '&', (size_t)(end - p));
    if (!stop)
        stop = end;
    eq = memchr(p, '=', (size_t)(stop - p));
    key->p = p;
    key->end = eq ? eq : stop;
    val->p = eq ? eq + 1 : stop;
    val->end = stop;
    *cur = stop;
    return 1;
}

/* Orders by encoded key, then encoded value, then position, so that identical parameters
 * are still distinct and each is written exactly once. */
static int param_cmp(struct range ak, struct range av, struct range bk, struct range bv)
{
    int r = uri_cmp(ak, bk);

    if (r == 0)
        r = uri_cmp(av, bv);
    if (r == 0)
        r = (ak.p > bk.p) - (ak.p < bk.p);
    return r;
}

static void query_write(struct sink *s, const char *query)
{
    struct range last_k = { 0 }, last_v = { 0 }, k, v;
    const char *end;
    int have_last = 0;

    if (!query)
        return;
    end = query + strlen(query);
    for (;;) {
        struct range best_k = { 0 }, best_v = { 0 };
        int have_best = 0;

        for (const char *cur = query; query_next(&cur, end, &k, &v);) {
            if (have_last && param_cmp(k, v, last_k, last_v) <= 0)
                continue;
            if (!have_best || param_cmp(k, v, best_k, best_v) < 0) {
                best_k = k;
                best_v = v;
                have_best = 1;
            }
        }
        if (!have_best)
            return;
        if (have_last)
            sink_putc(s, '&');
        sink_uri(s, best_k, 1);
        sink_putc(s, '=');
        sink_uri(s, best_v, 1);
        last_k = best_k;
        last_v = best_v;
        have_last = 1;
    }
}

/* ---- canonical headers ------------------------------------------------------------------------ */

static unsigned char lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

/* Compares header names as their lowercase forms, which is the canonical order. */
static int name_cmp(const char *a, const char *b)
{
    const unsigned char *x = (const unsigned char *)a, *y = (const unsigned char *)b;

    while (*x && lower(*x) == lower(*y)) {
        x++;
        y++;
    }
    return lower(*x) - lower(*y);
}

static int name_has_prefix(const char *name, const char *prefix)
{
    for (; *prefix; name++, prefix++)
        if (lower((unsigned char)*name) != (unsigned char)*prefix)
            return 0;
    return 1;
}

/* Headers left unsigned, the same set as the AWS JS SDK: hop-by-hop headers and those
 * proxies, browsers and tracing rewrite in flight (a signed one would break the
 * signature), and a stale Authorization from an earlier attempt. */
static int header_signed(const char *name)
{
    static const char *const unsigned_names[] = {
        "authorization", "cache-control", "connection", "expect", "from", "keep-alive",
        "max-forwards", "pragma", "referer", "te", "trailer", "transfer-encoding",
        "upgrade", "user-agent", "x-amzn-trace-id",
    };

    unsigned char first = lower((unsigned char)*name);

    for (size_t i = 0; i < sizeof unsigned_names / sizeof unsigned_names[0]; i++)
        if (unsigned_names[i][0] == first && name_cmp(name, unsigned_names[i]) == 0)
            return 0;
    return !name_has_prefix(name, "proxy-") && !name_has_prefix(name, "sec-");
}

static int is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Trims the value and collapses each run of spaces, tabs and line breaks (a folded,
 * multi-line value) into one space. */
static void value_write(struct sink *s, const char *value)
{
    int gap = 0, started = 0;

    for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
        if (is_space(*p)) {
            gap = 1;
            continue;
        }
        if (gap && started)
            sink_putc(s, ' ');
        sink_putc(s, (char)*p);
        gap = 0;
        started = 1;
    }
}

/* The request's headers followed by those the signer adds. */
struct view {
    const struct sigv4_header *h;
    size_t n;
    struct sigv4_header extra[3];
    size_t nextra;
    int added_date, added_token, added_sha;
    char date[17];                   /* the X-Amz-Date that is signed */
    char payload_hash[65];           /* SHA-256 of the payload */
    const char *given_sha;           /* the request's own x-amz-content-sha256, if any */
    const char *method, *path, *query;
    int normalize;
};

static const struct sigv4_header *view_at(const struct view *v, size_t i)
{
    return i < v->n ? &v->h[i] : &v->extra[i - v->n];
}

/* Writes the canonical header block ("name:v1,v2\n"...) or, with !full, the signed
 * header list ("a;b;c"). Names are visited in order by picking the next larger one;
 * the values of a repeated name keep the order they were given in. */
static void headers_write(struct sink *s, const struct view *v, int full)
{
    size_t total = v->n + v->nextra;
    const char *last = NULL;

    for (;;) {
        const char *next = NULL;
        int first = 1;

        for (size_t i = 0; i < total; i++) {
            const char *name = view_at(v, i)->name;
            /* Order first: the costlier header_signed() only runs for a new candidate. */
            if ((last && name_cmp(name, last) <= 0) || (next && name_cmp(name, next) >= 0))
                continue;
            if (header_signed(name))
                next = name;
        }
        if (!next)
            return;
        if (last && !full)
            sink_putc(s, ';');
        for (const char *c = next; *c; c++)
            sink_putc(s, (char)lower((unsigned char)*c));
        if (full) {
            sink_putc(s, ':');
            for (size_t i = 0; i < total; i++) {
                const struct sigv4_header *h = view_at(v, i);
                if (name_cmp(h->name, next) != 0)
                    continue;
                if (!first)
                    sink_putc(s, ',');
                value_write(s, h->value);
                first = 0;
            }
            sink_putc(s, '\n');
        }
        last = next;
    }
}

static void canonical_write(struct sink *s, const struct view *v)
{
    sink_puts(s, v->method);
    sink_putc(s, '\n');
    path_write(s, v->path, v->normalize);
    sink_putc(s, '\n');
    query_write(s, v->query);
    sink_putc(s, '\n');
    headers_write(s, v, 1);
    sink_putc(s, '\n');
    headers_write(s, v, 0);
    sink_putc(s, '\n');
    /* A request that carries x-amz-content-sha256 (UNSIGNED-PAYLOAD, say) is signed with
     * that value as its payload hash: that is what the server checks against. */
    if (v->given_sha)
        value_write(s, v->given_sha);
    else
        sink_puts(s, v->payload_hash);
}

/* ---- validation and setup ------------------------------------------------------------------ */

static int date_valid(const char *d)
{
    static const char shape[] = "ddddddddTddddddZ";

    for (size_t i = 0; i < sizeof shape - 1; i++) {
        if (shape[i] == 'd' ? !(d[i] >= '0' && d[i] <= '9') : d[i] != shape[i])
            return 0;
    }
    return d[sizeof shape - 1] == '\0';
}

/* A token character in the HTTP sense would be stricter; this rejects what would break
 * the header syntax or the canonical form (separators, spaces, control bytes). */
static int name_valid(const char *name)
{
    if (!name || !*name)
        return 0;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p <= ' ' || *p == ':' || *p == 0x7f)
            return 0;
    return 1;
}

/* Region and service go into the credential scope, separated by '/'. */
static int scope_part_valid(const char *s)
{
    size_t n = 0;

    if (!s)
        return 0;
    for (; s[n]; n++) {
        unsigned char c = (unsigned char)s[n];
        if (!is_unreserved(c) || n >= SIGV4_MAX_NAME)
            return 0;
    }
    return n > 0;
}

static int view_init(struct view *v, const struct sigv4_request *req,
                     const struct sigv4_params *p, const char *token, struct lerr *e)
{
    const char *given_date = NULL;
    int has_host = 0, has_token = 0;

    memset(v, 0, sizeof *v);
    if (!req || !p)
        return lerr_set(e, LERR_INVALID, "sigv4: no request or parameters");
    if (!name_valid(req->method))
        return lerr_set(e, LERR_INVALID, "sigv4: the method is missing or malformed");
    if (req->num_headers && !req->headers)
        return lerr_set(e, LERR_INVALID, "sigv4: %zu headers but no header array",
                        req->num_headers);
    if (req->payload_len && !req->payload)
        return lerr_set(e, LERR_INVALID, "sigv4: a payload length but no payload");
    for (size_t i = 0; i < req->num_headers; i++) {
        const struct sigv4_header *h = &req->headers[i];
        if (!name_valid(h->name) || !h->value)
            return lerr_set(e, LERR_INVALID, "sigv4: header %zu has a malformed name or no value",
                            i);
        has_host |= name_cmp(h->name, "host") == 0;
        has_token |= name_cmp(h->name, "x-amz-security-token") == 0;
        if (!given_date && name_cmp(h->name, "x-amz-date") == 0)
            given_date = h->value;
        if (!v->given_sha && name_cmp(h->name, "x-amz-content-sha256") == 0)
            v->given_sha = h->value;
    }
    if (!has_host)
        return lerr_set(e, LERR_INVALID, "sigv4: the request has no Host header");

    if (given_date) {
        struct sink ds = { .buf = v->date, .cap = sizeof v->date };
        value_write(&ds, given_date);
        if (sink_finish(&ds, "X-Amz-Date", e) < 0 || !date_valid(v->date))
            return lerr_set(e, LERR_INVALID, "sigv4: the request's X-Amz-Date is not "
                                             "YYYYMMDDTHHMMSSZ");
    } else {
        if (!p->amz_date || !date_valid(p->amz_date))
            return lerr_set(e, LERR_INVALID, "sigv4: amz_date is not YYYYMMDDTHHMMSSZ");
        memcpy(v->date, p->amz_date, sizeof v->date);
        v->extra[v->nextra++] = (struct sigv4_header){ "X-Amz-Date", v->date };
        v->added_date = 1;
    }
    if (token && *token && !has_token) {
        v->extra[v->nextra++] = (struct sigv4_header){ "X-Amz-Security-Token", token };
        v->added_token = 1;
    }
    sha256_hex(req->payload ? req->payload : "", req->payload_len, v->payload_hash);
    if (!v->given_sha && p->add_content_sha256) {
        v->extra[v->nextra++] = (struct sigv4_header){ "x-amz-content-sha256", v->payload_hash };
        v->added_sha = 1;
    }
    v->h = req->headers;
    v->n = req->num_headers;
    v->method = req->method;
    v->path = req->path;
    v->query = req->query;
    v->normalize = p->normalize_path;
    return 0;
}

static int scope_check(const struct sigv4_params *p, struct lerr *e)
{
    if (!p)
        return lerr_set(e, LERR_INVALID, "sigv4: no parameters");
    if (!scope_part_valid(p->region))
        return lerr_set(e, LERR_INVALID, "sigv4: the region is missing or malformed");
    if (!scope_part_valid(p->service))
        return lerr_set(e, LERR_INVALID, "sigv4: the service is missing or malformed");
    return 0;
}

/* ---- signing ------------------------------------------------------------------------------ */

static void hmac_sha256(const void *key, size_t key_len, const void *data, size_t len,
                        unsigned char out[32])
{
    br_hmac_key_context kc;
    br_hmac_context hc;

    br_hmac_key_init(&kc, &br_sha256_vtable, key, key_len);
    br_hmac_init(&hc, &kc, 0);
    br_hmac_update(&hc, data, len);
    br_hmac_out(&hc, out);
    /* Both contexts hold the key's pads: as good as the key itself. */
    explicit_bzero(&kc, sizeof kc);
    explicit_bzero(&hc, sizeof hc);
}

void sigv4_signing_key(const char *secret_access_key, const char *date8, const char *region,
                       const char *service, unsigned char key[32])
{
    unsigned char k[64];
    size_t slen = strlen(secret_access_key), klen;

    /* HMAC uses a key longer than its 64-byte block as its SHA-256, so "AWS4" + secret is
     * hashed rather than copied when it would not fit: any secret length, no allocation. */
    if (4 + slen <= sizeof k) {
        memcpy(k, "AWS4", 4);
        memcpy(k + 4, secret_access_key, slen);
        klen = 4 + slen;
    } else {
        br_sha256_context sha;
        br_sha256_init(&sha);
        br_sha256_update(&sha, "AWS4", 4);
        br_sha256_update(&sha, secret_access_key, slen);
        br_sha256_out(&sha, k);
        explicit_bzero(&sha, sizeof sha);
        klen = 32;
    }
    hmac_sha256(k, klen, date8, strnlen(date8, 8), key);
    explicit_bzero(k, sizeof k);
    hmac_sha256(key, 32, region, strlen(region), key);
    hmac_sha256(key, 32, service, strlen(service), key);
    hmac_sha256(key, 32, "aws4_request", 12, key);
}

static void sts_write(struct sink *s, const char *date, const char *region,
                      const char *service, const unsigned char creq_hash[32])
{
    sink_puts(s, SIGV4_ALGORITHM "\n");
    sink_puts(s, date);
    sink_putc(s, '\n');
    sink_put(s, date, 8);
    sink_putc(s, '/');
    sink_puts(s, region);
    sink_putc(s, '/');
    sink_puts(s, service);
    sink_puts(s, "/aws4_request\n");
    sink_hex(s, creq_hash, 32);
}

static void put_digits(char *out, int value, int n)
{
    while (n-- > 0) {
        out[n] = (char)('0' + value % 10);
        value /= 10;
    }
}

void sigv4_format_date(time_t t, char out[17])
{
    struct tm tm;

    /* Only a broken clock gets here; an all-zero date is refused by AWS in plain sight. */
    if (!gmtime_r(&t, &tm) || tm.tm_year < -1900 || tm.tm_year > 9999 - 1900) {
        memcpy(out, "00000000T000000Z", 17);
        return;
    }
    put_digits(out, tm.tm_year + 1900, 4);
    put_digits(out + 4, tm.tm_mon + 1, 2);
    put_digits(out + 6, tm.tm_mday, 2);
    out[8] = 'T';
    put_digits(out + 9, tm.tm_hour, 2);
    put_digits(out + 11, tm.tm_min, 2);
    put_digits(out + 13, tm.tm_sec, 2);
    out[15] = 'Z';
    out[16] = '\0';
}

int sigv4_canonical_request(const struct sigv4_request *req, const struct sigv4_params *p,
                            char *buf, size_t cap, struct lerr *e)
{
    struct sink s = { .buf = buf, .cap = cap };
    struct view v;

    if (!buf || !cap)
        return lerr_set(e, LERR_INVALID, "sigv4: no output buffer");
    if (view_init(&v, req, p, NULL, e) < 0)
        return -1;
    canonical_write(&s, &v);
    return sink_finish(&s, "sigv4: the canonical request", e);
}

int sigv4_string_to_sign(const char *canonical_request, const struct sigv4_params *p,
                         char *buf, size_t cap, struct lerr *e)
{
    struct sink s = { .buf = buf, .cap = cap };
    br_sha256_context sha;
    unsigned char hash[32];

    if (!buf || !cap || !canonical_request)
        return lerr_set(e, LERR_INVALID, "sigv4: no canonical request or output buffer");
    if (scope_check(p, e) < 0)
        return -1;
    if (!p->amz_date || !date_valid(p->amz_date))
        return lerr_set(e, LERR_INVALID, "sigv4: amz_date is not YYYYMMDDTHHMMSSZ");
    br_sha256_init(&sha);
    br_sha256_update(&sha, canonical_request, strlen(canonical_request));
    br_sha256_out(&sha, hash);
    sts_write(&s, p->amz_date, p->region, p->service, hash);
    return sink_finish(&s, "sigv4: the string to sign", e);
}

/* The access key id is printed in the Authorization header and must not break it. */
static int credentials_check(const struct sigv4_credentials *cred, struct lerr *e)
{
    if (!cred || !cred->access_key_id || !*cred->access_key_id)
        return lerr_set(e, LERR_INVALID, "sigv4: no access key id");
    for (const unsigned char *c = (const unsigned char *)cred->access_key_id; *c; c++)
        if (*c <= ' ' || *c == '/' || *c == ',' || *c == 0x7f)
            return lerr_set(e, LERR_INVALID, "sigv4: the access key id is malformed");
    if (!cred->secret_access_key || !*cred->secret_access_key)
        return lerr_set(e, LERR_INVALID, "sigv4: no secret access key");
    if (cred->session_token)
        for (const unsigned char *c = (const unsigned char *)cred->session_token; *c; c++)
            if (*c < ' ' || *c == 0x7f)
                return lerr_set(e, LERR_INVALID,
                                "sigv4: the session token contains a control character");
    return 0;
}

int sigv4_sign(const struct sigv4_request *req, const struct sigv4_credentials *cred,
               const struct sigv4_params *p, struct sigv4_signature *out, struct lerr *e)
{
    br_sha256_context sha;
    struct sink hs = { .sha = &sha }, sts, authz;
    unsigned char hash[32], key[32];
    char sts_buf[64 + 2 * SIGV4_MAX_NAME + 128];
    struct view v;

    if (!out)
        return lerr_set(e, LERR_INVALID, "sigv4: no output");
    memset(out, 0, sizeof *out);
    if (credentials_check(cred, e) < 0 || scope_check(p, e) < 0 ||
        view_init(&v, req, p, cred->session_token, e) < 0)
        return -1;

    br_sha256_init(&sha);
    canonical_write(&hs, &v);
    sink_flush(&hs);
    br_sha256_out(&sha, hash);

    sts = (struct sink){ .buf = sts_buf, .cap = sizeof sts_buf };
    sts_write(&sts, v.date, p->region, p->service, hash);
    if (sink_finish(&sts, "sigv4: the string to sign", e) < 0)
        return -1;   /* cannot happen: scope parts are bounded */
    sigv4_signing_key(cred->secret_access_key, v.date, p->region, p->service, key);
    hmac_sha256(key, sizeof key, sts_buf, sts.len, hash);
    explicit_bzero(key, sizeof key);

    authz = (struct sink){ .buf = out->authorization, .cap = sizeof out->authorization };
    sink_puts(&authz, SIGV4_ALGORITHM " Credential=");
    sink_puts(&authz, cred->access_key_id);
    sink_putc(&authz, '/');
    sink_put(&authz, v.date, 8);
    sink_putc(&authz, '/');
    sink_puts(&authz, p->region);
    sink_putc(&authz, '/');
    sink_puts(&authz, p->service);
    sink_puts(&authz, "/aws4_request, SignedHeaders=");
    headers_write(&authz, &v, 0);
    sink_puts(&authz, ", Signature=");
    sink_hex(&authz, hash, sizeof hash);
    if (sink_finish(&authz, "sigv4: the Authorization header", e) < 0) {
        memset(out, 0, sizeof *out);
        return -1;
    }

    memcpy(out->amz_date, v.date, sizeof out->amz_date);
    memcpy(out->content_sha256, v.payload_hash, sizeof out->content_sha256);
    if (v.added_date)
        out->added[out->num_added++] = (struct sigv4_header){ "X-Amz-Date", out->amz_date };
    if (v.added_token)
        out->added[out->num_added++] =
            (struct sigv4_header){ "X-Amz-Security-Token", cred->session_token };
    if (v.added_sha)
        out->added[out->num_added++] =
            (struct sigv4_header){ "x-amz-content-sha256", out->content_sha256 };
    out->added[out->num_added++] = (struct sigv4_header){ "Authorization", out->authorization };
    return 0;
}
