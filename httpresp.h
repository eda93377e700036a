/*
 * httpresp.h - pure HTTP/1.1 response parsing over (buffer, length), and the token and
 * field-value syntax that the client's requests share with it.
 *
 * No I/O, no allocation: the caller owns every byte; parsed strings point into the
 * caller's buffer. Every function answers one of three things: complete (with a length),
 * HTTPRESP_INCOMPLETE (give me more bytes and call again with the longer buffer), or
 * HTTPRESP_ERROR (with a specific lerr of kind LERR_MALFORMED or LERR_TOO_LARGE).
 *
 * Missing bytes are never an error, but input that is already wrong is refused at once:
 * for any prefix of an input the answer is either HTTPRESP_INCOMPLETE or exactly the
 * answer (error message included) for the whole input (for httpresp_parse: at_eof false).
 * Lines end in CRLF only; a bare LF is an error. Returned lengths never exceed the input;
 * a length over INT_MAX, which an int cannot return, is LERR_TOO_LARGE.
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
    unsigned long long content_length;   /* for HTTPRESP_BODY_LENGTH; 0 otherwise (read a
                                            HEAD response's header with httpresp_header) */
    int keep_alive;             /* connection may be reused after this response: HTTP/1.1
                                   without "Connection: close", HTTP/1.0 only with
                                   "Connection: keep-alive"; never for UNTIL_CLOSE */
};

/* Parses a status line and headers. request_was_head: the request method was HEAD
 * (no body whatever the headers say). Returns the length of the head including the
 * final CRLF CRLF (> 0), HTTPRESP_INCOMPLETE, or HTTPRESP_ERROR; bytes after the head
 * (the start of the body) are not looked at. Stateless: call again over the whole,
 * longer buffer when more bytes arrive. Each call rescans from the start, so a reader
 * may skip calls until the new bytes hold an LF or the buffer reaches HTTPRESP_MAX_HEAD:
 * that can delay an error, never miss the end of the head. Unless it returns > 0, *h is
 * partly written and meaningless.
 * Status line: "HTTP/1." DIGIT SP 3DIGIT, then SP and a reason phrase (possibly empty),
 * or directly CRLF. Field lines: token ":" OWS value OWS CRLF.
 * Refused (LERR_MALFORMED): bad status line or version (HTTP/2, HTTP/1.10...), status
 * outside 100-599, obsolete line folding, headers without colon or with whitespace
 * before it, control characters (anything but VCHAR, obs-text, SP, HTAB) in values or
 * the reason, bare LF, a Content-Length that is not a number, overflows, or conflicts
 * with another (repeats and "5, 5" lists of one value are accepted), Transfer-Encoding
 * other than a single chunked (any other coding, or chunked twice), both Content-Length
 * and Transfer-Encoding, Transfer-Encoding in an HTTP/1.0 response. These field checks
 * apply whatever the status, even where the framing ignores the fields (HEAD, 1xx...).
 * Refused (LERR_TOO_LARGE): more than HTTPRESP_MAX_HEADERS headers, a head over
 * HTTPRESP_MAX_HEAD bytes (reported as soon as HTTPRESP_MAX_HEAD bytes without the end
 * of the head are in the buffer).
 * Framing per RFC 9112 section 6.3: HEAD request, 1xx, 204, 304: BODY_NONE; else
 * Transfer-Encoding: BODY_CHUNKED; else Content-Length: BODY_LENGTH; else UNTIL_CLOSE. */
int httpresp_parse_head(const char *buf, size_t len, int request_was_head,
                        struct httpresp_head *h, struct lerr *e);

/* 1 when s is a token (RFC 9110 section 5.6.2), the syntax of methods and field names
 * (the client checks its requests' with it); "" is not. */
int httpresp_is_token(const char *s);

/* 1 when s may be a field value: no control character (CR, LF... DEL) but HTAB, which in a
 * request would split it. The bytes a response's field values are checked against. */
int httpresp_is_field_value(const char *s);

/* Whether c is an RFC 9110 tchar: what a method, a field name or a token is made of. */
int httpresp_is_tchar(unsigned char c);

/* Case-insensitive lookup; the first field of that name wins. Returns the value (not
 * NUL-terminated, *value_len set; value_len may be NULL) or NULL (*value_len = 0). */
const char *httpresp_header(const struct httpresp_head *h, const char *name, size_t *value_len);

/* Incremental chunked decoding. Zero-initialise; feed the bytes that follow the head, split
 * anywhere. decode reads src[0..len) and writes the body bytes it decodes to dst, *out of
 * them (dst may be src: decoding in place, the output never overtakes the input; otherwise
 * dst has room for what max_body still allows). Returns:
 *   >= 0  the body is complete; the value is how many bytes of src, at its end, follow the
 *         chunked encoding (trailers included), unread (normally 0; a pipelined next
 *         response otherwise). Further calls return all input that way.
 *   HTTPRESP_INCOMPLETE  need more input; all of it was consumed
 *   HTTPRESP_ERROR       LERR_MALFORMED: bad chunk size (empty, not hex, more than 16
 *                        digits, leading zeros included), missing CRLF after chunk data,
 *                        bad extension or trailer bytes, bare LF;
 *                        LERR_TOO_LARGE: body total over max_body (reported as soon as a
 *                        chunk size shows it), a chunk-size line or the trailer section
 *                        over HTTPRESP_MAX_HEAD bytes.
 *                        *out is the output decoded before the error.
 * Chunk extensions (BWS ";" ... up to CRLF) are skipped, their bytes checked like field
 * values. Trailer fields are checked like header lines, then discarded. */
struct httpresp_chunked {
    int state;
    unsigned long long remaining;  /* bytes left in the current chunk */
    unsigned long long total;      /* body bytes decoded so far */
    size_t line_len;               /* bytes of the current size line, or of the whole
                                      trailer section, seen so far */
};
int httpresp_chunked_decode(struct httpresp_chunked *d, const char *src, size_t len, char *dst,
                            size_t *out, unsigned long long max_body, struct lerr *e);

/* Whole-response convenience over the two above, for tests and the fuzzer: parses head and
 * body of a complete response held in buf. body_out (capacity body_cap) receives the body
 * (decoded if chunked); *body_len is its length (meaningful on success only). Returns the
 * total bytes of the response consumed (> 0; bytes after it are left alone),
 * HTTPRESP_INCOMPLETE, or HTTPRESP_ERROR. A body over body_cap is LERR_TOO_LARGE
 * ("response body exceeds N bytes"), as soon as a length or chunk size shows it.
 * For HTTPRESP_BODY_UNTIL_CLOSE, at_eof says the connection is closed, so everything
 * after the head is the body; without at_eof such a response is INCOMPLETE. A truncated
 * head, Content-Length or chunked body is INCOMPLETE even at_eof: the caller knows the
 * connection is gone and reports it. */
int httpresp_parse(const char *buf, size_t len, int request_was_head, int at_eof,
                   struct httpresp_head *h, char *body_out, size_t body_cap, size_t *body_len,
                   struct lerr *e);

#endif
