/*
 * Fuzz target for httpresp.c. Input: four parameter bytes, then the response.
 *   byte 0  bit 0: the request was HEAD; bit 1: the connection is at EOF
 *   byte 1  body cap, one of caps[] (so small caps and the TOO_LARGE paths get hit)
 *   byte 2-3  seed of the piece sizes used to feed the response incrementally
 * ASCII parameters keep seeds readable: "00a0HTTP/1.1 200 OK..." is GET, not at EOF,
 * cap 4096.
 *
 * Beyond "no crash", it checks what callers rely on: lengths within the input, header
 * pointers inside the buffer, every prefix INCOMPLETE or the whole input's answer, and
 * the same response fed in fuzzer-chosen pieces (head parser over a growing buffer, then
 * chunked decoder piece by piece) giving the same result, error message and body.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "httpresp.h"

static const size_t caps[8] = { 0, 1, 5, 64, 4096, 100000, 3, 1 << 20 };

struct result {
    int rc;
    struct lerr e;
    struct httpresp_head h;
    char *body;
    size_t body_len;
};

static void check(int ok)
{
    if (!ok)
        abort();
}

static void check_head(const struct httpresp_head *h, const char *buf, size_t len)
{
    check(h->minor_version >= 0 && h->minor_version <= 9);
    check(h->status >= 100 && h->status <= 599);
    check(h->num_headers <= HTTPRESP_MAX_HEADERS);
    check(h->reason >= buf && h->reason_len <= len && h->reason + h->reason_len <= buf + len);
    for (size_t i = 0; i < h->num_headers; i++) {
        const struct httpresp_header *f = &h->headers[i];

        check(f->name_len > 0 && f->name >= buf && f->name + f->name_len <= buf + len);
        check(f->value >= buf && f->value + f->value_len <= buf + len);
    }
    if (h->framing == HTTPRESP_BODY_UNTIL_CLOSE)
        check(!h->keep_alive);
    if (h->framing != HTTPRESP_BODY_LENGTH)
        check(h->content_length == 0);
    if (h->status < 200 || h->status == 204 || h->status == 304)
        check(h->framing == HTTPRESP_BODY_NONE);
}

static void check_error(const struct lerr *e)
{
    check(e->kind == LERR_MALFORMED || e->kind == LERR_TOO_LARGE);
    check(e->msg[0] != '\0');
}

static void parse_whole(const char *buf, size_t len, int head_req, int at_eof, size_t cap,
                        struct result *r)
{
    lerr_clear(&r->e);
    r->rc = httpresp_parse(buf, len, head_req, at_eof, &r->h, r->body, cap, &r->body_len,
                           &r->e);
    if (r->rc == HTTPRESP_ERROR) {
        check_error(&r->e);
    } else if (r->rc > 0) {
        check((size_t)r->rc <= len && r->body_len <= cap && r->body_len <= len);
        check_head(&r->h, buf, len);
        if (r->h.framing == HTTPRESP_BODY_LENGTH)
            check(r->body_len == r->h.content_length);
    } else {
        check(r->rc == HTTPRESP_INCOMPLETE);
    }
}

static void check_same(const struct result *a, const struct result *b)
{
    check(a->rc == b->rc);
    if (a->rc == HTTPRESP_ERROR) {
        check(a->e.kind == b->e.kind && strcmp(a->e.msg, b->e.msg) == 0);
    } else if (a->rc > 0) {
        check(a->h.status == b->h.status && a->h.framing == b->h.framing);
        check(a->h.content_length == b->h.content_length && a->h.keep_alive == b->h.keep_alive);
        check(a->h.num_headers == b->h.num_headers);
        check(a->body_len == b->body_len && memcmp(a->body, b->body, a->body_len) == 0);
    }
}

/* Piece sizes from the seed: mostly tiny (to cut framing everywhere), sometimes large. */
static size_t next_piece(uint32_t *seed)
{
    *seed ^= *seed << 13;
    *seed ^= *seed >> 17;
    *seed ^= *seed << 5;
    switch (*seed >> 29) {
    case 0: return 1 + (*seed & 1023);
    case 1: case 2: return 1 + (*seed & 15);
    default: return 1 + (*seed & 3);
    }
}

/* As the client reads: head over a growing buffer, then chunked pieces. */
static void parse_pieces(const char *buf, size_t len, int head_req, int at_eof, size_t cap,
                         uint32_t seed, const struct result *whole, struct result *r)
{
    struct httpresp_chunked d = { 0 };
    size_t got = 0, fed;
    char *scratch;

    lerr_clear(&r->e);
    r->body_len = 0;
    r->rc = HTTPRESP_INCOMPLETE;
    do {
        size_t step = next_piece(&seed);

        got = len - got > step ? got + step : len;
        r->rc = httpresp_parse_head(buf, got, head_req, &r->h, &r->e);
        /* Prefixes: nothing is decided before it can be. */
        if (r->rc != HTTPRESP_INCOMPLETE) {
            check(r->rc == HTTPRESP_ERROR || (size_t)r->rc <= got);
            break;
        }
    } while (got < len);
    if (r->rc == HTTPRESP_ERROR) {
        check_error(&r->e);
        return;
    }
    if (r->rc == HTTPRESP_INCOMPLETE)
        return;
    check_head(&r->h, buf, got);
    if (r->h.framing != HTTPRESP_BODY_CHUNKED) {
        /* Nothing incremental about the rest: take the whole-input answer's body. */
        if (whole->rc > 0) {
            memcpy(r->body, whole->body, whole->body_len);
            r->body_len = whole->body_len;
        }
        r->rc = whole->rc;
        r->e = whole->e;
        return;
    }

    scratch = malloc(len + 1);
    check(scratch != NULL);
    fed = (size_t)r->rc;
    while (fed < len) {
        size_t step = next_piece(&seed);
        size_t end = got > fed ? got : (len - fed > step ? fed + step : len);
        size_t piece = end - fed, out;
        int rc;

        /* in place, as the client decodes */
        memcpy(scratch, buf + fed, piece);
        rc = httpresp_chunked_decode(&d, scratch, piece, scratch, &out, cap, &r->e);
        check(out <= piece);
        if (rc == HTTPRESP_ERROR) {
            check_error(&r->e);
            r->rc = rc;
            free(scratch);
            return;
        }
        check(r->body_len + out <= cap);
        memcpy(r->body + r->body_len, scratch, out);
        r->body_len += out;
        if (rc >= 0) {
            check((size_t)rc <= piece - out);
            check(memcmp(scratch + piece - rc, buf + end - rc, (size_t)rc) == 0);
            r->rc = (int)(end - (size_t)rc);
            free(scratch);
            return;
        }
        check(rc == HTTPRESP_INCOMPLETE);
        fed = end;
    }
    r->rc = HTTPRESP_INCOMPLETE;
    free(scratch);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct result *whole, *part;
    const char *buf;
    size_t len, cap, room;
    int head_req, at_eof;
    uint32_t seed;

    if (size < 4)
        return 0;
    head_req = data[0] & 1;
    at_eof = (data[0] >> 1) & 1;
    cap = caps[data[1] & 7];
    seed = ((uint32_t)data[2] << 8 | data[3]) + 1; /* xorshift must not start at 0 */
    /* A copy of exactly the response, so ASan sees any read past its end. */
    len = size - 4;
    buf = len ? memcpy(malloc(len), data + 4, len) : NULL;
    check(len == 0 || buf != NULL);

    whole = calloc(1, sizeof *whole);
    part = calloc(1, sizeof *part);
    check(whole && part);
    /* A body is never longer than the input, whatever the cap. */
    room = (cap < len ? cap : len) + 1;
    whole->body = malloc(room);
    part->body = malloc(room);
    check(whole->body && part->body);

    parse_whole(buf, len, head_req, at_eof, cap, whole);
    parse_pieces(buf, len, head_req, at_eof, cap, seed, whole, part);
    check_same(whole, part);

    /* Every prefix at a few fuzzer-chosen points: INCOMPLETE or the whole's answer. */
    if (len > 0) {
        struct result *whole0 = calloc(1, sizeof *whole0), *pre = calloc(1, sizeof *pre);

        check(whole0 && pre);
        whole0->body = malloc(room);
        pre->body = malloc(room);
        check(whole0->body && pre->body);
        parse_whole(buf, len, head_req, 0, cap, whole0);
        for (int i = 0; i < 8; i++) {
            size_t k = (size_t)(next_piece(&seed) * 7919u + (unsigned)i) % len;

            parse_whole(buf, k, head_req, 0, cap, pre);
            if (pre->rc != HTTPRESP_INCOMPLETE)
                check_same(whole0, pre);
        }
        free(whole0->body);
        free(pre->body);
        free(whole0);
        free(pre);
    }

    free(whole->body);
    free(part->body);
    free(whole);
    free(part);
    free((void *)buf);
    return 0;
}
