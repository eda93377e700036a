/*
 * httpresp.h - pure HTTP/1.1 response parsing over (buffer, length).
 *
 * No I/O, no allocation: the caller owns every byte; parsed strings point into the
 * caller's buffer. Every function answers one of three things: complete (with a length),
 * HTTPRESP_INCOMPLETE (give me more bytes and call again with the longer buffer), or
 * HTTPRESP_ERROR (with a specific lerr of kind LERR_MALFORMED or LERR_TOO_LARGE).
 */
#ifndef LAMBDO_HTTPRESP_H
#define LAMBDO_HTTPRESP_H

#include <stddef.h>
#include "err.h"

#define HTTPRESP_ERROR      (-1)
#define HTTPRESP_INCOMPLETE (-2)

#define HTTPRESP_MAX_HEADERS   64
#define HTTPRESP_MAX_HEAD      (64 * 1024)   /* status line + headers */

struct httpresp_header {
    const char *name;  size_t name_len;
    const char *value; size_t value_len;   /* leading/trailing spaces and tabs removed */
};

enum httpresp_framing {
    HTTPRESP_BODY_NONE,        /* HEAD, 1xx, 204, 304 */
    HTTPRESP_BODY_LENGTH,      /* Content-Length */
    HTTPRESP_BODY_CHUNKED,     /* Transfer-Encoding: chunked */
    HTTPRESP_BODY_UNTIL_CLOSE, /* neither: the body ends when the server closes */
};

struct httpresp_head {
    int minor_version;          /* HTTP/1.<minor> */
    int status;                 /* 100..599 */
    const char *reason; size_t reason_len;
    struct httpresp_header headers[HTTPRESP_MAX_HEADERS];
    size_t num_headers;
    enum httpresp_framing framing;
    unsigned long long content_length;   /* for HTTPRESP_BODY_LENGTH */
    int keep_alive;             /* connection may be reused after this response */
};

/* Parses a status line and headers. request_was_head: the request method was HEAD
 * (no body whatever the headers say). Returns the length of the head including the
 * final CRLF CRLF (> 0), HTTPRESP_INCOMPLETE, or HTTPRESP_ERROR.
 * Refused: bad status line or version, status outside 100-599, obsolete line folding,
 * headers without colon or with whitespace before it, control characters, more than
 * HTTPRESP_MAX_HEADERS headers, a head over HTTPRESP_MAX_HEAD bytes, a Content-Length
 * that is not a number or conflicts with another, Transfer-Encoding other than chunked
 * (or chunked not last), both Content-Length and Transfer-Encoding. */
int httpresp_parse_head(const char *buf, size_t len, int request_was_head,
                        struct httpresp_head *h, struct lerr *e);

/* Case-insensitive lookup. Returns the value (not NUL-terminated, *value_len set) or NULL. */
const char *httpresp_header(const struct httpresp_head *h, const char *name, size_t *value_len);

/* Incremental, in-place chunked decoding. Zero-initialise; feed the bytes that follow the
 * head. decode rewrites buf[0..*len) so that its first *len bytes (output) are the body
 * bytes decoded so far in this call; returns:
 *   >= 0  the body is complete; the value is how many bytes after the end of the chunked
 *         encoding (trailers included) remain in buf, undecoded, at buf + *len (normally 0)
 *   HTTPRESP_INCOMPLETE  need more input; all of it was consumed
 *   HTTPRESP_ERROR       bad chunk size, missing CRLF, or total over max_body (LERR_TOO_LARGE)
 * Trailers are read and discarded. */
struct httpresp_chunked {
    int state;
    unsigned long long remaining;  /* bytes left in the current chunk */
    unsigned long long total;      /* body bytes decoded so far */
    size_t line_len;               /* bytes of the current size/trailer line seen */
    int size_digits;
};
int httpresp_chunked_decode(struct httpresp_chunked *d, char *buf, size_t *len,
                            unsigned long long max_body, struct lerr *e);

/* Whole-response convenience over the two above, for tests and the fuzzer: parses head and
 * body of a complete response held in buf. body_out (capacity body_cap) receives the body
 * (decoded if chunked). Returns the total bytes of the response consumed (> 0),
 * HTTPRESP_INCOMPLETE, or HTTPRESP_ERROR. For HTTPRESP_BODY_UNTIL_CLOSE, at_eof says the
 * connection is closed, so everything after the head is the body. */
int httpresp_parse(const char *buf, size_t len, int request_was_head, int at_eof,
                   struct httpresp_head *h, char *body_out, size_t body_cap, size_t *body_len,
                   struct lerr *e);

#endif
