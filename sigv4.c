/*
 * sigv4.c - AWS Signature Version 4 header signing.
 *
 * Nothing here allocates. sigv4_sign() writes the canonical request into a buffer on the
 * stack (SIGV4_MAX_CANONICAL) and hashes it; the same writer fills a caller's buffer for
 * sigv4_canonical_request(), so what the tests compare is byte for byte what gets signed.
 * Having the text at hand keeps the canonical form simple: ".." takes back the segment
 * written before it, and query parameters are sorted in place as they are written. The
 * signed headers are sorted once, as pointers on the stack (at most SIGV4_MAX_HEADERS).
 * The signing key is derived only when the caller's struct sigv4_key holds another day,
 * region, service or secret.
 */
#include "sigv4.h"
#include "text.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <bearssl_hash.h>

#define SIGV4_ALGORITHM "AWS4-HMAC-SHA256"

/* ---- output: a buffer that counts what did not fit ------------------------------------------ */

/* Once a write did not fit (with the NUL), len is cap or past it and stays there: nothing
 * more is written, and sink_finish() fails. What buf holds up to len is exactly what was
 * written while it fit. A cap of 0 fits nothing, not even the NUL. */
struct sink {
    char *buf;
    size_t cap;               /* bytes buf takes, the NUL included */
    size_t len;               /* bytes written, or that would have been */
};

static void sink_put(struct sink *s, const char *str, size_t n)
{
    if (s->len < s->cap && n < s->cap - s->len)
        memcpy(s->buf + s->len, str, n);
    s->len += n;
}

/* A byte at a time (names lowercased, URI encoding): no memcpy() call per byte. */
static void sink_putc(struct sink *s, char c)
{
    if (s->len + 1 < s->cap)
        s->buf[s->len] = c;
    s->len++;
}

static void sink_puts(struct sink *s, const char *str)
{
    sink_put(s, str, strlen(str));
}

static void sink_hash(struct sink *s, const unsigned char hash[32])
{
    char hex[65];

    text_hex_encode(hash, 32, hex);
    sink_put(s, hex, 64);
}

/* NUL-terminates the buffer; -1 when it did not fit. */
static int sink_finish(struct sink *s, const char *what, struct lerr *e)
{
    if (s->len >= s->cap || s->len > INT_MAX)
        return lerr_set(e, LERR_TOO_LARGE, "%s needs more than %zu bytes", what, s->cap);
    s->buf[s->len] = '\0';
    return (int)s->len;
}

/* SHA-256 of a followed by the string b. */
static void sha256_of(const void *a, size_t alen, const char *b, unsigned char out[32])
{
    br_sha256_context sha;

    br_sha256_init(&sha);
    br_sha256_update(&sha, a, alen);
    br_sha256_update(&sha, b, strlen(b));
    br_sha256_out(&sha, out);
    explicit_bzero(&sha, sizeof sha);   /* it may have hashed a secret */
}

/* ---- URI encoding ------------------------------------------------------------------------ */

struct range {
    const char *p, *end;
};

/* Writes r %XX-encoded. Query parts are decoded first ("%e1", "%E1" and a raw byte all end
 * up as "%E1", as the server will see them); a '%' not followed by two hex digits is a
 * literal '%'. */
static void sink_uri(struct sink *s, struct range r, int decode)
{
    while (r.p < r.end) {
        unsigned char c = (unsigned char)*r.p++;
        char enc[3];

        if (decode && c == '%' && r.end - r.p >= 2 && text_hex_digit(r.p[0]) >= 0 &&
            text_hex_digit(r.p[1]) >= 0) {
            c = (unsigned char)(text_hex_digit(r.p[0]) << 4 | text_hex_digit(r.p[1]));
            r.p += 2;
        }
        sink_put(s, enc, text_pct_byte(c, enc));
    }
}

/* ---- canonical path ------------------------------------------------------------------------ */

/* Next non-empty piece of [*cur, end) between sep characters; 0 when there is none left.
 * Empty pieces carry nothing: an empty path segment is dropped, and so is "&&". */
static int piece_next(const char **cur, const char *end, char sep, struct range *r)
{
    const char *p = *cur, *stop;

    while (p < end && *p == sep)
        p++;
    if (p >= end)
        return 0;
    stop = memchr(p, sep, (size_t)(end - p));
    r->p = p;
    r->end = stop ? stop : end;
    *cur = r->end;
    return 1;
}

/* Path normalization as botocore and the JS SDK do it: empty and "." segments dropped,
 * ".." removes the segment before it (never above the root), a leading and a trailing
 * slash kept. Each segment is then URI-encoded: the path given is already encoded as
 * sent, so this is the double encoding AWS wants for every service but S3. Every segment
 * kept is written with a '/' after it, so ".." takes back what follows the '/' before. */
static void path_write(struct sink *s, const char *path, int normalize)
{
    const char *end, *cur;
    struct range seg;
    size_t root, n;

    if (!path || !*path)
        path = "/";
    if (!normalize) {
        /* S3: the path as sent is the object key encoded once, and is signed as is. */
        sink_puts(s, path);
        return;
    }
    end = path + strlen(path);
    if (*path == '/')
        sink_putc(s, '/');
    root = s->len;
    for (cur = path; piece_next(&cur, end, '/', &seg) && s->len < s->cap;) {
        n = (size_t)(seg.end - seg.p);
        if (n > 2 || memcmp(seg.p, "..", n) != 0) {
            sink_uri(s, seg, 0);
            sink_putc(s, '/');
        } else if (n == 2 && s->len > root) {
            s->len--;
            while (s->len > root && s->buf[s->len - 1] != '/')
                s->len--;
        }
    }
    if (s->len > root && end[-1] != '/')
        s->len--;               /* the last segment's '/' */
}

/* ---- canonical query ------------------------------------------------------------------------ */

/* Encoded parameters ("key=value&") compare by key, then value: '&' and '=' below every
 * byte an encoding holds, so a key or value sorts before those it is the start of. */
static int param_rank(char c)
{
    return c == '&' ? 0 : c == '=' ? 1 : (unsigned char)c;
}

static int param_cmp(const char *a, const char *b)
{
    while (*a == *b && *a != '&') {
        a++;
        b++;
    }
    return param_rank(*a) - param_rank(*b);
}

static void reverse(char *p, char *q)
{
    while (p + 1 < q) {
        char c = *p;
        *p++ = *--q;
        *q = c;
    }
}

/* Each parameter (a piece without '=' has an empty value) is encoded at the end, then
 * rotated into place before the first larger one: an insertion sort in the buffer itself,
 * cheap for the handful a real request carries. */
static void query_write(struct sink *s, const char *query)
{
    const char *cur = query, *end = query ? query + strlen(query) : NULL, *eq;
    size_t first = s->len, at, start;
    struct range k, v;

    while (cur && piece_next(&cur, end, '&', &k)) {
        eq = memchr(k.p, '=', (size_t)(k.end - k.p));
        v = (struct range){ eq ? eq + 1 : k.end, k.end };
        k.end = eq ? eq : k.end;
        start = s->len;
        sink_uri(s, k, 1);
        sink_putc(s, '=');
        sink_uri(s, v, 1);
        sink_putc(s, '&');
        if (s->len >= s->cap)
            return;
        for (at = first; at < start && param_cmp(s->buf + at, s->buf + start) <= 0;)
            at = (size_t)((char *)memchr(s->buf + at, '&', start - at) - s->buf) + 1;
        reverse(s->buf + at, s->buf + start);
        reverse(s->buf + start, s->buf + s->len);
        reverse(s->buf + at, s->buf + s->len);
    }
    if (s->len > first)
        s->len--;               /* the last '&' */
}

/* ---- canonical headers ------------------------------------------------------------------------ */

/* ASCII's tolower(), inlined: header names are compared and written a byte at a time. */
static unsigned char lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

/* Compares header names as their lowercase forms, which is the canonical order; with
 * prefix set, only as far as b goes. Inlined, unlike strcasecmp(): every header of every
 * request goes through it several times. */
static int name_cmp(const char *a, const char *b, int prefix)
{
    const unsigned char *x = (const unsigned char *)a, *y = (const unsigned char *)b;

    while (*x && lower(*x) == lower(*y)) {
        x++;
        y++;
    }
    return prefix && !*y ? 0 : lower(*x) - lower(*y);
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

    int first = lower((unsigned char)*name);

    for (size_t i = 0; i < sizeof unsigned_names / sizeof unsigned_names[0]; i++)
        if (unsigned_names[i][0] == first && name_cmp(name, unsigned_names[i], 0) == 0)
            return 0;
    return name_cmp(name, "proxy-", 1) != 0 && name_cmp(name, "sec-", 1) != 0;
}

#define SPACES " \t\r\n"

/* Trims the value and collapses each run of spaces, tabs and line breaks (a folded,
 * multi-line value) into one space. */
static void value_write(struct sink *s, const char *value)
{
    const char *p = value + strspn(value, SPACES);

    while (*p) {
        size_t word = strcspn(p, SPACES);

        sink_put(s, p, word);
        p += word;
        p += strspn(p, SPACES);
        if (*p)
            sink_putc(s, ' ');
    }
}

/* The request as signed: its signed headers and those the signer adds, sorted by
 * lowercase name (a repeated name's values keep the order they were given in). */
struct view {
    const struct sigv4_header *sorted[SIGV4_MAX_HEADERS];
    size_t n;
    struct sigv4_header extra[3];    /* X-Amz-Date, X-Amz-Security-Token, x-amz-content-sha256
                                        when added, in that order */
    size_t nextra;
    const char *payload_hash;        /* the request's own x-amz-content-sha256, else the
                                        SHA-256 of the payload */
    const struct sigv4_request *req;
};

static int view_add(struct view *v, const struct sigv4_header *h, struct lerr *e)
{
    size_t i = v->n;

    if (!header_signed(h->name))
        return 0;
    if (v->n == SIGV4_MAX_HEADERS)
        return lerr_set(e, LERR_TOO_LARGE, "sigv4: more than %d signed headers",
                        SIGV4_MAX_HEADERS);
    /* Insertion sort: stable, and the headers come nearly sorted and few. */
    for (; i > 0 && name_cmp(v->sorted[i - 1]->name, h->name, 0) > 0; i--)
        v->sorted[i] = v->sorted[i - 1];
    v->sorted[i] = h;
    v->n++;
    return 0;
}

/* The canonical header block ("name:v1,v2" for each name, a line each; Host makes it never
 * empty) or, without values, the signed header list ("a;b;c"). */
static void headers_write(struct sink *s, const struct view *v, int values)
{
    for (size_t i = 0; i < v->n; i++) {
        int repeated = i > 0 && name_cmp(v->sorted[i - 1]->name, v->sorted[i]->name, 0) == 0;

        if (repeated && !values)
            continue;
        if (i > 0)
            sink_putc(s, repeated ? ',' : values ? '\n' : ';');
        if (!repeated) {
            for (const char *c = v->sorted[i]->name; *c; c++)
                sink_putc(s, (char)lower((unsigned char)*c));
            if (values)
                sink_putc(s, ':');
        }
        if (values)
            value_write(s, v->sorted[i]->value);
    }
}

/* Writes and NUL-terminates the canonical request; -1 when it did not fit. */
static int canonical_write(struct sink *s, const struct view *v, int normalize, struct lerr *e)
{
    sink_puts(s, v->req->method);
    sink_putc(s, '\n');
    path_write(s, v->req->path, normalize);
    sink_putc(s, '\n');
    query_write(s, v->req->query);
    sink_putc(s, '\n');
    headers_write(s, v, 1);
    sink_puts(s, "\n\n");
    headers_write(s, v, 0);
    sink_putc(s, '\n');
    /* A request that carries x-amz-content-sha256 (UNSIGNED-PAYLOAD, say) is signed with
     * that value as its payload hash: that is what the server checks against. */
    value_write(s, v->payload_hash);
    return sink_finish(s, "sigv4: the canonical request", e);
}

/* ---- validation and setup ------------------------------------------------------------------ */

/* YYYYMMDDTHHMMSSZ */
static int date_valid(const char *d)
{
    return strspn(d, "0123456789") == 8 && d[8] == 'T' && strspn(d + 9, "0123456789") == 6 &&
           d[15] == 'Z' && d[16] == '\0';
}

/* Non-empty, and no space either. A token in the HTTP sense would be stricter. */
static int word_valid(const char *s, const char *bad)
{
    return s && *s && text_clean(s, '!', bad);
}

/* Region and service go into the credential scope, separated by '/'. */
static int scope_part_valid(const char *s)
{
    size_t n = s ? strspn(s, TEXT_UNRESERVED) : 0;

    return n > 0 && n <= SIGV4_MAX_NAME && !s[n];
}

/* Checks the request and builds its view. The X-Amz-Date signed goes to date, the SHA-256
 * of the payload to payload_hash. */
static int view_init(struct view *v, const struct sigv4_request *req,
                     const struct sigv4_params *p, const char *token, char date[17],
                     char payload_hash[65], struct lerr *e)
{
    /* Headers the signer looks for, by index: their value when the request has them; all
     * but Host are added, with these values, when it does not (an empty one is not). */
    static const char *const names[] = { "Host", "X-Amz-Date", "X-Amz-Security-Token",
                                         "x-amz-content-sha256" };
    const char *found[4] = { NULL };
    const char *added[4] = { NULL, date, token, p->add_content_sha256 ? payload_hash : NULL };
    struct sink ds = { .buf = date, .cap = 17 };
    unsigned char hash[32];

    v->n = v->nextra = 0;
    if (!word_valid(req->method, ":"))
        return lerr_set(e, LERR_INVALID, "sigv4: the method is missing or malformed");
    for (size_t i = 0; i < req->num_headers; i++) {
        const struct sigv4_header *h = &req->headers[i];
        if (!word_valid(h->name, ":") || !h->value)
            return lerr_set(e, LERR_INVALID, "sigv4: header %zu has a malformed name or no value",
                            i);
        for (size_t k = 0; k < sizeof found / sizeof found[0]; k++)
            if (!found[k] && name_cmp(h->name, names[k], 0) == 0)
                found[k] = h->value;
        if (view_add(v, h, e) < 0)
            return -1;
    }
    if (!found[0])
        return lerr_set(e, LERR_INVALID, "sigv4: the request has no Host header");
    /* the request's own date wins over the one given */
    value_write(&ds, found[1] ? found[1] : p->amz_date ? p->amz_date : "");
    if (sink_finish(&ds, "X-Amz-Date", e) < 0 || !date_valid(date))
        return lerr_set(e, LERR_INVALID, "sigv4: %s is not YYYYMMDDTHHMMSSZ",
                        found[1] ? "the request's X-Amz-Date" : "amz_date");
    sha256_of(req->payload ? req->payload : "", req->payload_len, "", hash);
    text_hex_encode(hash, sizeof hash, payload_hash);
    for (size_t k = 1; k < sizeof added / sizeof added[0]; k++)
        if (!found[k] && added[k] && *added[k]) {
            v->extra[v->nextra] = (struct sigv4_header){ names[k], added[k] };
            if (view_add(v, &v->extra[v->nextra++], e) < 0)
                return -1;
        }
    v->payload_hash = found[3] ? found[3] : payload_hash;
    v->req = req;
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
    size_t slen = strlen(secret_access_key), klen = 4 + slen;

    /* HMAC uses a key longer than its 64-byte block as its SHA-256, so "AWS4" + secret is
     * hashed rather than copied when it would not fit: any secret length, no allocation. */
    if (klen <= sizeof k) {
        memcpy(k, "AWS4", 4);
        memcpy(k + 4, secret_access_key, slen);
    } else {
        sha256_of("AWS4", 4, secret_access_key, k);
        klen = 32;
    }
    hmac_sha256(k, klen, date8, strnlen(date8, 8), key);
    explicit_bzero(k, sizeof k);
    hmac_sha256(key, 32, region, strlen(region), key);
    hmac_sha256(key, 32, service, strlen(service), key);
    hmac_sha256(key, 32, "aws4_request", 12, key);
}

/* "YYYYMMDD/region/service/aws4_request" */
static void scope_write(struct sink *s, const char *date, const struct sigv4_params *p)
{
    sink_put(s, date, 8);
    sink_putc(s, '/');
    sink_puts(s, p->region);
    sink_putc(s, '/');
    sink_puts(s, p->service);
    sink_puts(s, "/aws4_request");
}

/* Makes k hold the signing key of this scope and secret, deriving it only when it held
 * another one. */
static void key_refresh(struct sigv4_key *k, const char *secret, const char *date,
                        const struct sigv4_params *p)
{
    char scope[8 + 2 * SIGV4_MAX_NAME + 16];
    struct sink s = { .buf = scope, .cap = sizeof scope };
    unsigned char hash[32], key[32];

    scope_write(&s, date, p);   /* fits: region and service are at most SIGV4_MAX_NAME long */
    /* Which scope and secret, without keeping the secret. The scope can only end at its
     * "/aws4_request" (region and service hold no '/'), so no other pair hashes alike. */
    sha256_of(scope, s.len, secret, hash);
    if (memcmp(k->scope_secret_hash, hash, sizeof hash) != 0) {
        sigv4_signing_key(secret, date, p->region, p->service, key);
        br_hmac_key_init(&k->hmac, &br_sha256_vtable, key, sizeof key);
        explicit_bzero(key, sizeof key);
        memcpy(k->scope_secret_hash, hash, sizeof hash);
    }
    explicit_bzero(hash, sizeof hash);
}

void sigv4_format_date(time_t t, char out[17])
{
    struct tm tm;
    char buf[80];   /* what the compiler sees %d can take; the range check makes it 16 */

    /* Only a broken clock gets here; an all-zero date is refused by AWS in plain sight. */
    if (!gmtime_r(&t, &tm) || tm.tm_year < -1900 || tm.tm_year > 9999 - 1900) {
        memcpy(out, "00000000T000000Z", 17);
        return;
    }
    snprintf(buf, sizeof buf, "%04d%02d%02dT%02d%02d%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
    memcpy(out, buf, 17);
}

int sigv4_canonical_request(const struct sigv4_request *req, const struct sigv4_params *p,
                            char *buf, size_t cap, struct lerr *e)
{
    struct sink s = { .buf = buf, .cap = cap };
    char date[17], payload_hash[65];
    struct view v;

    if (view_init(&v, req, p, NULL, date, payload_hash, e) < 0)
        return -1;
    return canonical_write(&s, &v, p->normalize_path, e);
}

int sigv4_string_to_sign(const char *canonical_request, const struct sigv4_params *p,
                         char *buf, size_t cap, struct lerr *e)
{
    struct sink s = { .buf = buf, .cap = cap };
    unsigned char hash[32];

    /* checked before anything is written: sigv4_sign() relies on it for its key cache */
    if (!scope_part_valid(p->region))
        return lerr_set(e, LERR_INVALID, "sigv4: the region is missing or malformed");
    if (!scope_part_valid(p->service))
        return lerr_set(e, LERR_INVALID, "sigv4: the service is missing or malformed");
    if (!p->amz_date || !date_valid(p->amz_date))
        return lerr_set(e, LERR_INVALID, "sigv4: amz_date is not YYYYMMDDTHHMMSSZ");
    sha256_of(canonical_request, strlen(canonical_request), "", hash);
    sink_puts(&s, SIGV4_ALGORITHM "\n");
    sink_puts(&s, p->amz_date);
    sink_putc(&s, '\n');
    scope_write(&s, p->amz_date, p);
    sink_putc(&s, '\n');
    sink_hash(&s, hash);
    return sink_finish(&s, "sigv4: the string to sign", e);
}

/* The access key id is printed in the Authorization header and must not break it. */
static int credentials_check(const struct sigv4_credentials *cred, struct lerr *e)
{
    if (!cred || !word_valid(cred->access_key_id, "/,"))
        return lerr_set(e, LERR_INVALID, "sigv4: the access key id is missing or malformed");
    if (!cred->secret_access_key || !*cred->secret_access_key)
        return lerr_set(e, LERR_INVALID, "sigv4: no secret access key");
    if (cred->session_token && !text_clean(cred->session_token, ' ', NULL))
        return lerr_set(e, LERR_INVALID, "sigv4: the session token contains a control character");
    return 0;
}

/* In the order AWS defines it: checks, canonical request, string to sign, its HMAC with the
 * day's key, Authorization (the date signed is out->amz_date: it may be the request's own).
 * A failure at any step leaves out zeroed. */
int sigv4_sign(const struct sigv4_request *req, const struct sigv4_credentials *cred,
               const struct sigv4_params *p, struct sigv4_signature *out, struct lerr *e)
{
    struct sigv4_key own = { 0 };    /* the key of this request alone, without a cache */
    struct sigv4_key *k = p->key ? p->key : &own;
    struct sigv4_params dated = *p;  /* the date signed may be the request's own */
    char creq[SIGV4_MAX_CANONICAL], sts[64 + 2 * SIGV4_MAX_NAME + 128];
    struct sink cs = { .buf = creq, .cap = sizeof creq };
    struct sink authz = { .buf = out->authorization, .cap = sizeof out->authorization };
    br_hmac_context hc;
    unsigned char hash[32];
    struct view v;
    int n;

    dated.amz_date = out->amz_date;
    if (credentials_check(cred, e) < 0 ||
        view_init(&v, req, p, cred->session_token, out->amz_date, out->content_sha256, e) < 0 ||
        canonical_write(&cs, &v, p->normalize_path, e) < 0 ||
        (n = sigv4_string_to_sign(creq, &dated, sts, sizeof sts, e)) < 0)
        goto fail;
    key_refresh(k, cred->secret_access_key, out->amz_date, p);
    br_hmac_init(&hc, &k->hmac, 0);
    br_hmac_update(&hc, sts, (size_t)n);   /* fits: scope parts are bounded */
    br_hmac_out(&hc, hash);
    explicit_bzero(&hc, sizeof hc);
    explicit_bzero(&own, sizeof own);

    sink_puts(&authz, SIGV4_ALGORITHM " Credential=");
    sink_puts(&authz, cred->access_key_id);
    sink_putc(&authz, '/');
    scope_write(&authz, out->amz_date, p);
    sink_puts(&authz, ", SignedHeaders=");
    headers_write(&authz, &v, 0);
    sink_puts(&authz, ", Signature=");
    sink_hash(&authz, hash);
    if (sink_finish(&authz, "sigv4: the Authorization header", e) < 0)
        goto fail;
    memcpy(out->added, v.extra, v.nextra * sizeof *v.extra);
    out->added[v.nextra] = (struct sigv4_header){ "Authorization", out->authorization };
    out->num_added = v.nextra + 1;
    return 0;
fail:
    explicit_bzero(&own, sizeof own);
    memset(out, 0, sizeof *out);
    return -1;
}
