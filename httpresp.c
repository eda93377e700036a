/*
 * httpresp.c - HTTP/1.1 response heads (RFC 9112) and chunked bodies, over caller buffers.
 *
 * The head parser keeps no state between calls: the caller runs it again over the whole
 * buffer each time more bytes arrive. Heads are small and capped, so the rescan is cheap,
 * and statelessness makes the property the client relies on easy to keep: bytes are
 * checked strictly left to right and every check fails at the first byte that proves the
 * input wrong, so any prefix of an input gives either INCOMPLETE or exactly the answer
 * (error message included) the whole input gives.
 *
 * The chunked decoder does keep state, one byte of the framing at a time, so a body of
 * any size streams through a small buffer however the reads happen to be split.
 */
#include "httpresp.h"
#include "text.h"

#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

/* lerr_set() returns -1, so `return lerr_set(...)` doubles as `return HTTPRESP_ERROR`. */
_Static_assert(HTTPRESP_ERROR == -1, "HTTPRESP_ERROR must equal lerr_set's return value");
_Static_assert(HTTPRESP_MAX_HEAD < INT_MAX, "head lengths are returned as int");

/* ---- character classes (RFC 9110 section 5.6.2 and 5.5) --------------------------------- */

/* One bit per ASCII code: digits, letters and "!#$%&'*+-.^_`|~". A table, because every
 * byte of every header name goes through it. */
int httpresp_is_tchar(unsigned char c)
{
    static const uint32_t bits[4] = { 0, 0x03ff6cfa, 0xc7fffffe, 0x57ffffff };

    return c < 128 && (bits[c >> 5] >> (c & 31) & 1);
}

int httpresp_is_token(const char *s)
{
    const char *p = s;

    while (httpresp_is_tchar((unsigned char)*p))
        p++;
    return p > s && *p == '\0';
}

static int is_ws(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* What a field value, reason phrase or chunk extension may hold: VCHAR, obs-text, SP, HTAB.
 * Everything else is a control character (DEL included). */
static int is_text(unsigned char c)
{
    return c >= 0x21 ? c != 0x7f : is_ws(c);  /* the common case first */
}

int httpresp_is_field_value(const char *s)
{
    while (*s && is_text((unsigned char)*s))
        s++;
    return *s == '\0';
}

/* s[0..n) equals the NUL-terminated word, ignoring ASCII case. */
static int equals_word(const char *s, size_t n, const char *word)
{
    return strlen(word) == n && strncasecmp(s, word, n) == 0;
}

static int malformed(struct lerr *e, const char *what)
{
    return lerr_set(e, LERR_MALFORMED, "malformed response: %s", what);
}

/* Comma-separated list elements (RFC 9110 section 5.6.1): the next element of s[*pos..n)
 * with surrounding OWS removed, possibly empty. Returns 0 when the list is exhausted. */
static int list_next(const char *s, size_t n, size_t *pos, const char **elem, size_t *elem_len)
{
    size_t start = *pos, end = *pos;

    if (*pos > n)
        return 0;
    while (end < n && s[end] != ',')
        end++;
    *pos = end + 1;
    while (start < end && is_ws((unsigned char)s[start]))
        start++;
    while (end > start && is_ws((unsigned char)s[end - 1]))
        end--;
    *elem = s + start;
    *elem_len = end - start;
    return 1;
}

/* ---- the head ------------------------------------------------------------------------------ */

struct scan {
    const unsigned char *p;
    size_t pos;
    size_t lim;  /* min(len, HTTPRESP_MAX_HEAD): bytes past the cap are never looked at */
    struct lerr *e;
};

/* What the header fields say about framing and connection reuse, gathered line by line. */
struct fields {
    int have_length, te_chunked, conn_close, conn_keep_alive;
    unsigned long long length;
};

/* The bytes ran out before the head did: more may come, unless the cap is reached, in
 * which case no amount of further input can make the head acceptable. */
static int scan_short(const struct scan *s)
{
    if (s->lim >= HTTPRESP_MAX_HEAD)
        return lerr_set(s->e, LERR_TOO_LARGE, "response head exceeds %d bytes", HTTPRESP_MAX_HEAD);
    return HTTPRESP_INCOMPLETE;
}

/* After a CR: only LF may follow. */
static int scan_lf(struct scan *s)
{
    if (s->pos == s->lim)
        return scan_short(s);
    if (s->p[s->pos] != '\n')
        return malformed(s->e, "CR not followed by LF");
    s->pos++;
    return 0;
}

/* A byte that is not allowed where it stands, inside a line of text. */
static int bad_text_byte(struct lerr *e, unsigned char c, const char *where)
{
    if (c == '\n')
        return malformed(e, "bare LF line ending (CRLF required)");
    return lerr_set(e, LERR_MALFORMED, "malformed response: control character in %s", where);
}

/* Text up to the CR that ends the line, then the LF: *end is set past the last byte that is
 * not white space (OWS after a field value is not part of it). */
static int scan_text_line(struct scan *s, const char *where, size_t *end)
{
    *end = s->pos;
    for (;;) {
        unsigned char c;

        if (s->pos == s->lim)
            return scan_short(s);
        c = s->p[s->pos++];
        if (c == '\r')
            return scan_lf(s);
        if (!is_text(c))
            return bad_text_byte(s->e, c, where);
        if (!is_ws(c))
            *end = s->pos;
    }
}

/* "HTTP/1." DIGIT SP 3DIGIT [SP reason] CRLF. The SP before an empty reason is required by
 * RFC 9112 but some servers omit it; accepting its absence is harmless. */
static int parse_status_line(struct scan *s, struct httpresp_head *h)
{
    static const char pattern[] = "HTTP/1.# ###";  /* '#': a digit */
    const unsigned char *p = s->p;
    size_t end;
    int rc;

    for (size_t i = 0; pattern[i]; i++) {
        unsigned char c;

        if (s->pos == s->lim)
            return scan_short(s);
        c = p[s->pos++];
        if (pattern[i] == '#' ? c < '0' || c > '9' : c != (unsigned char)pattern[i])
            return malformed(s->e, i < 5 ? "not an HTTP status line"
                                   : i < 7 ? "unsupported HTTP version (HTTP/1.x required)"
                                   : i < 9 ? "bad HTTP version"
                                   : "bad status code (three digits required)");
    }
    h->minor_version = p[7] - '0';
    h->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    if (h->status < 100 || h->status > 599)
        return malformed(s->e, "status code out of range 100-599");
    if (s->pos == s->lim)
        return scan_short(s);
    if (p[s->pos] == ' ')
        s->pos++;
    else if (p[s->pos] != '\r')
        return malformed(s->e, "bad status code (three digits required)");
    h->reason = (const char *)p + s->pos;
    rc = scan_text_line(s, "reason phrase", &end);
    h->reason_len = (size_t)((const char *)p + s->pos - h->reason) - 2;  /* CRLF */
    return rc;
}

/* One field line, starting at a byte that is neither CR nor whitespace:
 * token ":" OWS value OWS CRLF. */
static int parse_field_line(struct scan *s, struct httpresp_header *f)
{
    size_t start = s->pos, value_end;
    unsigned char c;
    int rc;

    while (s->pos < s->lim && httpresp_is_tchar(s->p[s->pos]))
        s->pos++;
    if (s->pos == s->lim)
        return scan_short(s);
    c = s->p[s->pos];
    if (is_ws(c))
        return malformed(s->e, "whitespace between header field name and colon");
    if (c == '\r' || c == '\n')
        return malformed(s->e, "header field without colon");
    if (c != ':')
        return malformed(s->e, "bad character in header field name");
    if (s->pos == start)
        return malformed(s->e, "empty header field name");
    f->name = (const char *)s->p + start;
    f->name_len = s->pos - start;
    s->pos++;
    while (s->pos < s->lim && is_ws(s->p[s->pos]))
        s->pos++;
    start = s->pos;
    rc = scan_text_line(s, "header field value", &value_end);
    f->value = (const char *)s->p + start;
    f->value_len = value_end - start;
    return rc;
}

/* Content-Length = 1*DIGIT, possibly repeated as a list ("5, 5") by careless proxies. */
static int note_content_length(struct fields *fl, const struct httpresp_header *f, struct lerr *e)
{
    const char *elem;
    size_t pos = 0, n, i;

    while (list_next(f->value, f->value_len, &pos, &elem, &n)) {
        unsigned long long v = 0;

        if (n == 0)
            return malformed(e, "bad Content-Length");
        for (i = 0; i < n; i++) {
            unsigned d = (unsigned char)elem[i] - '0';

            if (d > 9)
                return malformed(e, "bad Content-Length");
            if (v > (ULLONG_MAX - d) / 10)
                return malformed(e, "Content-Length out of range");
            v = v * 10 + d;
        }
        if (fl->have_length && v != fl->length)
            return malformed(e, "conflicting Content-Length values");
        fl->have_length = 1;
        fl->length = v;
    }
    return 0;
}

/* The request never offers other codings (no TE header), so RFC 9112 section 7 allows the
 * server only chunked, once. Anything else would hand the caller still-encoded bytes as
 * the body, so it is refused rather than read until close. */
static int note_transfer_encoding(struct fields *fl, const struct httpresp_head *h,
                                  const struct httpresp_header *f, struct lerr *e)
{
    const char *elem;
    size_t pos = 0, n;
    int before = fl->te_chunked;

    /* RFC 9112 section 6.1: Transfer-Encoding in HTTP/1.0 means faulty framing. */
    if (h->minor_version == 0)
        return malformed(e, "Transfer-Encoding in an HTTP/1.0 response");
    while (list_next(f->value, f->value_len, &pos, &elem, &n)) {
        if (n == 0)
            continue;
        if (!equals_word(elem, n, "chunked"))
            return malformed(e, "unsupported Transfer-Encoding (only chunked is accepted)");
        if (fl->te_chunked)
            return malformed(e, "chunked applied more than once");
        fl->te_chunked = 1;
    }
    /* Every coding is chunked, and only once: this field named none. */
    if (fl->te_chunked == before)
        return malformed(e, "empty Transfer-Encoding");
    return 0;
}

static void note_connection(struct fields *fl, const struct httpresp_header *f)
{
    const char *elem;
    size_t pos = 0, n;

    while (list_next(f->value, f->value_len, &pos, &elem, &n)) {
        if (equals_word(elem, n, "close"))
            fl->conn_close = 1;
        else if (equals_word(elem, n, "keep-alive"))
            fl->conn_keep_alive = 1;
    }
}

/* Checks a field as soon as its line is complete, so a bad length fails right away. */
static int note_field(struct fields *fl, const struct httpresp_head *h,
                      const struct httpresp_header *f, struct lerr *e)
{
    int rc = 0;

    if (equals_word(f->name, f->name_len, "content-length"))
        rc = note_content_length(fl, f, e);
    else if (equals_word(f->name, f->name_len, "transfer-encoding"))
        rc = note_transfer_encoding(fl, h, f, e);
    else if (equals_word(f->name, f->name_len, "connection"))
        note_connection(fl, f);
    /* Either framing may be a smuggler's decoy for the other. */
    if (rc == 0 && fl->have_length && fl->te_chunked)
        rc = malformed(e, "both Transfer-Encoding and Content-Length");
    return rc;
}

/* RFC 9112 section 6.3, and section 9.3 for persistence. Fields were validated whatever the
 * status: a 204 with both Content-Length and Transfer-Encoding is still a smuggling sign. */
static void decide_framing(struct httpresp_head *h, const struct fields *fl, int request_was_head)
{
    if (request_was_head || h->status < 200 || h->status == 204 || h->status == 304)
        h->framing = HTTPRESP_BODY_NONE;
    else if (fl->te_chunked)
        h->framing = HTTPRESP_BODY_CHUNKED;
    else
        h->framing = fl->have_length ? HTTPRESP_BODY_LENGTH : HTTPRESP_BODY_UNTIL_CLOSE;
    h->content_length = h->framing == HTTPRESP_BODY_LENGTH ? fl->length : 0;

    h->keep_alive = h->framing != HTTPRESP_BODY_UNTIL_CLOSE && !fl->conn_close &&
                    (h->minor_version >= 1 || fl->conn_keep_alive);
}

int httpresp_parse_head(const char *buf, size_t len, int request_was_head,
                        struct httpresp_head *h, struct lerr *e)
{
    struct scan s = { (const unsigned char *)buf, 0,
                      len < HTTPRESP_MAX_HEAD ? len : HTTPRESP_MAX_HEAD, e };
    struct fields fl = { 0 };
    int rc;

    h->num_headers = 0;
    rc = parse_status_line(&s, h);
    if (rc < 0)
        return rc;

    /* Field lines up to the CR of the empty line that ends the head. */
    while (s.pos < s.lim && s.p[s.pos] != '\r') {
        if (is_ws(s.p[s.pos]))
            return malformed(e, "obsolete line folding in header");
        if (s.p[s.pos] == '\n')
            return malformed(e, "bare LF line ending (CRLF required)");
        if (h->num_headers == HTTPRESP_MAX_HEADERS)
            return lerr_set(e, LERR_TOO_LARGE, "response has more than %d header fields",
                            HTTPRESP_MAX_HEADERS);
        rc = parse_field_line(&s, &h->headers[h->num_headers]);
        if (rc == 0)
            rc = note_field(&fl, h, &h->headers[h->num_headers], e);
        if (rc < 0)
            return rc;
        h->num_headers++;
    }
    if (s.pos == s.lim)
        return scan_short(&s);
    s.pos++;
    rc = scan_lf(&s);
    if (rc < 0)
        return rc;
    decide_framing(h, &fl, request_was_head);
    return (int)s.pos;
}

const char *httpresp_header(const struct httpresp_head *h, const char *name, size_t *value_len)
{
    size_t i = 0, unused;

    if (!value_len)
        value_len = &unused;
    while (i < h->num_headers && !equals_word(h->headers[i].name, h->headers[i].name_len, name))
        i++;
    *value_len = i < h->num_headers ? h->headers[i].value_len : 0;
    return i < h->num_headers ? h->headers[i].value : NULL;
}

/* ---- chunked bodies (RFC 9112 section 7.1) ------------------------------------------------- */

enum {
    CH_SIZE,          /* chunk-size hex digits; 0 so that a zeroed decoder starts here */
    CH_SIZE_WS,       /* BWS after the size, which only a ';' may end */
    CH_EXT,           /* chunk extensions, skipped up to the CR */
    CH_SIZE_LF,       /* CR of the size line seen */
    CH_DATA,
    CH_DATA_CR,       /* the CRLF that ends chunk data */
    CH_DATA_LF,
    CH_TRAILER,       /* start of a trailer field line, or of the final empty line */
    CH_TRAILER_NAME,
    CH_TRAILER_VALUE,
    CH_TRAILER_LF,
    CH_END_LF,        /* CR of the final empty line seen */
    CH_DONE,
};

static int body_too_large(struct lerr *e, unsigned long long max_body)
{
    return lerr_set(e, LERR_TOO_LARGE, "response body exceeds %llu bytes", max_body);
}

/* The CR or LF that each of these states wants, where it leads, and what its absence is. */
static const struct {
    unsigned char want, next;
    const char *why;
} line_ends[] = {
    [CH_SIZE_LF] = { '\n', CH_DATA, "bad chunk size line (CR not followed by LF)" },
    [CH_DATA_CR] = { '\r', CH_DATA_LF, "missing CRLF after chunk data" },
    [CH_DATA_LF] = { '\n', CH_SIZE, "missing CRLF after chunk data" },
    [CH_TRAILER_LF] = { '\n', CH_TRAILER, "CR not followed by LF in trailer" },
    [CH_END_LF] = { '\n', CH_DONE, "CR not followed by LF after trailer section" },
};

/* Every state but CH_DATA (copied in bulk by the caller) and CH_DONE advances one byte. */
static int chunked_byte(struct httpresp_chunked *d, unsigned char c,
                        unsigned long long max_body, struct lerr *e)
{
    int v = text_hex_digit(c);

    /* Lines of chunk framing cost no memory here, but a peer could send them forever. */
    if ((d->state < CH_SIZE_LF || d->state >= CH_TRAILER) && ++d->line_len > HTTPRESP_MAX_HEAD)
        return lerr_set(e, LERR_TOO_LARGE, "%s exceeds %d bytes",
                        d->state < CH_SIZE_LF ? "chunk size line" : "trailer section",
                        HTTPRESP_MAX_HEAD);
    switch (d->state) {
    case CH_SIZE:
        if (v >= 0) {
            /* The size line's bytes so far are its digits, this one included. */
            if (d->line_len > 16)
                return malformed(e, "bad chunk size (more than 16 hex digits)");
            d->remaining = d->remaining << 4 | (unsigned)v;
            /* More digits only make the size larger, so the cap can be judged already. */
            if (d->total > max_body || d->remaining > max_body - d->total)
                return body_too_large(e, max_body);
            return 0;
        }
        if (d->line_len == 1)  /* no digit before this byte */
            return malformed(e, "bad chunk size");
        /* The digits are done: what may follow is what may follow white space. */
        /* fall through */
    case CH_SIZE_WS:
        if (c == ';')
            d->state = CH_EXT;
        else if (is_ws(c))
            d->state = CH_SIZE_WS;
        else if (c == '\r' && d->state == CH_SIZE)
            d->state = CH_SIZE_LF;
        else
            return malformed(e, "bad chunk size");
        return 0;
    case CH_EXT:
    case CH_TRAILER_VALUE:
        if (c == '\r')
            d->state = d->state == CH_EXT ? CH_SIZE_LF : CH_TRAILER_LF;
        else if (!is_text(c))
            return bad_text_byte(e, c, d->state == CH_EXT ? "chunk extension" : "trailer field");
        return 0;
    case CH_TRAILER:
        if (c == '\r')
            d->state = CH_END_LF;
        else if (httpresp_is_tchar(c))
            d->state = CH_TRAILER_NAME;
        else if (is_ws(c))
            return malformed(e, "obsolete line folding in trailer");
        else if (c == '\n')
            return malformed(e, "bare LF line ending (CRLF required)");
        else
            return malformed(e, "bad trailer field");
        return 0;
    case CH_TRAILER_NAME:
        if (c == ':')
            d->state = CH_TRAILER_VALUE;
        else if (!httpresp_is_tchar(c))
            return malformed(e, "bad trailer field");
        return 0;
    default: /* a line's CR or LF */
        if (c != line_ends[d->state].want)
            return malformed(e, line_ends[d->state].why);
        if (d->state == CH_SIZE_LF)
            d->line_len = 0;
        d->state = line_ends[d->state].next;
        if (d->state == CH_DATA && d->remaining == 0)
            d->state = CH_TRAILER;  /* the last chunk: the trailer section follows */
        return 0;
    }
}

int httpresp_chunked_decode(struct httpresp_chunked *d, const char *src, size_t len, char *dst,
                            size_t *out, unsigned long long max_body, struct lerr *e)
{
    size_t in = 0;

    *out = 0;
    while (in < len && d->state != CH_DONE) {
        if (d->state == CH_DATA) {
            size_t k = len - in < d->remaining ? len - in : (size_t)d->remaining;

            memmove(dst + *out, src + in, k);
            in += k;
            *out += k;
            d->remaining -= k;
            d->total += k;
            if (d->remaining == 0)
                d->state = CH_DATA_CR;
            continue;
        }
        if (chunked_byte(d, (unsigned char)src[in++], max_body, e) < 0)
            return HTTPRESP_ERROR;
    }
    if (d->state != CH_DONE)
        return HTTPRESP_INCOMPLETE;
    if (len - in > INT_MAX)
        return lerr_set(e, LERR_TOO_LARGE, "more than %d bytes after the chunked body", INT_MAX);
    return (int)(len - in);
}

/* ---- whole responses ----------------------------------------------------------------------- */

static int consumed(size_t n, struct lerr *e)
{
    if (n > INT_MAX)
        return lerr_set(e, LERR_TOO_LARGE, "response exceeds %d bytes", INT_MAX);
    return (int)n;
}

int httpresp_parse(const char *buf, size_t len, int request_was_head, int at_eof,
                   struct httpresp_head *h, char *body_out, size_t body_cap, size_t *body_len,
                   struct lerr *e)
{
    struct httpresp_chunked d = { 0 };
    int head_len = httpresp_parse_head(buf, len, request_was_head, h, e);
    size_t avail;
    unsigned long long n;

    *body_len = 0;
    if (head_len < 0 || h->framing == HTTPRESP_BODY_NONE)
        return head_len;
    avail = len - (size_t)head_len;
    if (h->framing == HTTPRESP_BODY_CHUNKED) {
        /* The decoder holds the body to body_cap, so it always fits in body_out. */
        int rest = httpresp_chunked_decode(&d, buf + head_len, avail, body_out, body_len,
                                           body_cap, e);
        return rest < 0 ? rest : consumed(len - (size_t)rest, e);
    }
    /* LENGTH, or UNTIL_CLOSE: all that follows the head, once the server closed */
    n = h->framing == HTTPRESP_BODY_LENGTH ? h->content_length : avail;
    if (n > body_cap)
        return body_too_large(e, body_cap);
    if (h->framing == HTTPRESP_BODY_LENGTH ? avail < n : !at_eof)
        return HTTPRESP_INCOMPLETE;
    if (n > 0)
        memcpy(body_out, buf + head_len, (size_t)n);
    *body_len = (size_t)n;
    return consumed((size_t)head_len + *body_len, e);
}
