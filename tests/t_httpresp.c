/* HTTP/1.1 response parsing: one table of whole responses, each also checked fed one byte
 * at a time, split at every point, and as every prefix; then the limits that need big
 * generated inputs, header lookup and the chunked decoder's own contract. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "httpresp.h"

enum want { DONE, INCOMPLETE, ERROR };

struct tcase {
    const char *name;
    const char *in; size_t in_len;
    int head_req;               /* the request was HEAD */
    int at_eof;                 /* the connection is closed after the input */
    size_t cap;                 /* body cap; 0: DEFAULT_CAP */
    enum want want;
    enum lerr_kind kind;        /* ERROR: expected kind */
    const char *msg;            /* ERROR: expected substring of the message */
    int status;                 /* DONE: the rest */
    enum httpresp_framing framing;
    unsigned long long content_length;
    int keep_alive;
    const char *body; size_t body_len;
    size_t consumed;            /* 0: the whole input */
};

#define DEFAULT_CAP 4096
#define IN(s) .in = (s), .in_len = sizeof(s) - 1
#define BODY(s) .body = (s), .body_len = sizeof(s) - 1
#define BAD(k, m) .want = ERROR, .kind = (k), .msg = (m)
#define MAL(m) BAD(LERR_MALFORMED, m)

#define OK200 "HTTP/1.1 200 OK\r\n"
#define TE_CHUNKED OK200 "Transfer-Encoding: chunked\r\n\r\n"

static const struct tcase cases[] = {
    /* ---- good responses ---- */
    { "content-length", IN(OK200 "Content-Length: 5\r\n\r\nhello"), .want = DONE,
      .status = 200, .framing = HTTPRESP_BODY_LENGTH, .content_length = 5, .keep_alive = 1,
      BODY("hello") },
    { "content-length zero", IN(OK200 "Content-Length: 0\r\n\r\n"), .want = DONE,
      .status = 200, .framing = HTTPRESP_BODY_LENGTH, .keep_alive = 1 },
    { "content-length leading zeros", IN(OK200 "Content-Length: 003\r\n\r\nabc"),
      .want = DONE, .status = 200, .framing = HTTPRESP_BODY_LENGTH, .content_length = 3,
      .keep_alive = 1, BODY("abc") },
    { "pipelined next response left alone",
      IN(OK200 "Content-Length: 2\r\n\r\nhiHTTP/1.1 204 No Content\r\n\r\n"), .want = DONE,
      .status = 200, .framing = HTTPRESP_BODY_LENGTH, .content_length = 2, .keep_alive = 1,
      BODY("hi"), .consumed = sizeof(OK200 "Content-Length: 2\r\n\r\nhi") - 1 },
    { "repeated equal content-length",
      IN(OK200 "Content-Length: 3\r\nX: y\r\nContent-Length: 3\r\n\r\nabc"), .want = DONE,
      .status = 200, .framing = HTTPRESP_BODY_LENGTH, .content_length = 3, .keep_alive = 1,
      BODY("abc") },
    { "content-length list of one value", IN(OK200 "Content-Length: 3 ,3,  03\r\n\r\nabc"),
      .want = DONE, .status = 200, .framing = HTTPRESP_BODY_LENGTH, .content_length = 3,
      .keep_alive = 1, BODY("abc") },
    { "body exactly at the cap", IN(OK200 "Content-Length: 5\r\n\r\nhello"), .cap = 5,
      .want = DONE, .status = 200, .framing = HTTPRESP_BODY_LENGTH, .content_length = 5,
      .keep_alive = 1, BODY("hello") },
    { "chunked", IN(TE_CHUNKED "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), .want = DONE,
      .status = 200, .framing = HTTPRESP_BODY_CHUNKED, .keep_alive = 1, BODY("hello world") },
    { "chunked with extensions and trailers",
      IN(TE_CHUNKED "4;name=value\r\nWiki\r\n5 ; a=\"q;x\" ;b\r\npedia\r\n"
                    "E\t;x\r\n in\r\n\r\nchunks.\r\n0;last\r\nExpires: never\r\nX-T:\r\n\r\n"),
      .want = DONE, .status = 200, .framing = HTTPRESP_BODY_CHUNKED, .keep_alive = 1,
      BODY("Wikipedia in\r\n\r\nchunks.") },
    { "chunked hex case and leading zeros",
      IN(TE_CHUNKED "00A\r\n0123456789\r\nb\r\nabcdefghijk\r\n000\r\n\r\n"), .want = DONE,
      .status = 200, .framing = HTTPRESP_BODY_CHUNKED, .keep_alive = 1,
      BODY("0123456789abcdefghijk") },
    { "chunked with 16 hex digits", IN(TE_CHUNKED "0000000000000003\r\nabc\r\n0\r\n\r\n"),
      .want = DONE, .status = 200, .framing = HTTPRESP_BODY_CHUNKED, .keep_alive = 1,
      BODY("abc") },
    { "chunked empty body", IN(TE_CHUNKED "0\r\n\r\n"), .want = DONE, .status = 200,
      .framing = HTTPRESP_BODY_CHUNKED, .keep_alive = 1 },
    { "chunked body exactly at the cap", IN(TE_CHUNKED "3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
      .cap = 5, .want = DONE, .status = 200, .framing = HTTPRESP_BODY_CHUNKED,
      .keep_alive = 1, BODY("abcde") },
    { "chunked coding name case and empty list elements",
      IN(OK200 "Transfer-Encoding: , Chunked ,\r\n\r\n1\r\nx\r\n0\r\n\r\n"), .want = DONE,
      .status = 200, .framing = HTTPRESP_BODY_CHUNKED, .keep_alive = 1, BODY("x") },
    { "chunked then pipelined bytes",
      IN(TE_CHUNKED "1\r\nx\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n"), .want = DONE, .status = 200,
      .framing = HTTPRESP_BODY_CHUNKED, .keep_alive = 1, BODY("x"),
      .consumed = sizeof(TE_CHUNKED "1\r\nx\r\n0\r\n\r\n") - 1 },
    { "chunked binary data", IN(TE_CHUNKED "4\r\n\0\r\n\xff\r\n0\r\n\r\n"), .want = DONE,
      .status = 200, .framing = HTTPRESP_BODY_CHUNKED, .keep_alive = 1, BODY("\0\r\n\xff") },
    { "HEAD request: no body despite content-length",
      IN(OK200 "Content-Length: 1000\r\n\r\n"), .head_req = 1, .want = DONE, .status = 200,
      .framing = HTTPRESP_BODY_NONE, .keep_alive = 1 },
    { "HEAD request: no body despite chunked", IN(TE_CHUNKED), .head_req = 1, .want = DONE,
      .status = 200, .framing = HTTPRESP_BODY_NONE, .keep_alive = 1 },
    { "HEAD request: bytes after the head are not body",
      IN(OK200 "Content-Length: 3\r\n\r\nabc"), .head_req = 1, .want = DONE, .status = 200,
      .framing = HTTPRESP_BODY_NONE, .keep_alive = 1,
      .consumed = sizeof(OK200 "Content-Length: 3\r\n\r\n") - 1 },
    { "204", IN("HTTP/1.1 204 No Content\r\nDate: x\r\n\r\n"), .want = DONE, .status = 204,
      .framing = HTTPRESP_BODY_NONE, .keep_alive = 1 },
    { "304 with content-length", IN("HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n"),
      .want = DONE, .status = 304, .framing = HTTPRESP_BODY_NONE, .keep_alive = 1 },
    { "100 continue, final response left alone",
      IN("HTTP/1.1 100 Continue\r\n\r\n" OK200 "Content-Length: 0\r\n\r\n"), .want = DONE,
      .status = 100, .framing = HTTPRESP_BODY_NONE, .keep_alive = 1,
      .consumed = sizeof("HTTP/1.1 100 Continue\r\n\r\n") - 1 },
    { "103 early hints", IN("HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"),
      .want = DONE, .status = 103, .framing = HTTPRESP_BODY_NONE, .keep_alive = 1 },
    { "HTTP/1.0 is not persistent", IN("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx"),
      .want = DONE, .status = 200, .framing = HTTPRESP_BODY_LENGTH, .content_length = 1,
      .keep_alive = 0, BODY("x") },
    { "HTTP/1.0 with keep-alive",
      IN("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\nx"),
      .want = DONE, .status = 200, .framing = HTTPRESP_BODY_LENGTH, .content_length = 1,
      .keep_alive = 1, BODY("x") },
    { "HTTP/1.0 keep-alive and close", IN("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n"
                                          "Connection: close\r\nContent-Length: 0\r\n\r\n"),
      .want = DONE, .status = 200, .framing = HTTPRESP_BODY_LENGTH, .keep_alive = 0 },
    { "HTTP/1.1 connection close",
      IN(OK200 "Connection: close\r\nContent-Length: 1\r\n\r\nx"), .want = DONE,
      .status = 200, .framing = HTTPRESP_BODY_LENGTH, .content_length = 1, .keep_alive = 0,
      BODY("x") },
    { "connection close in a token list",
      IN(OK200 "Connection: Upgrade,  CLOSE \r\nContent-Length: 0\r\n\r\n"), .want = DONE,
      .status = 200, .framing = HTTPRESP_BODY_LENGTH, .keep_alive = 0 },
    { "connection token that only contains close",
      IN(OK200 "Connection: closed, xclose\r\nContent-Length: 0\r\n\r\n"), .want = DONE,
      .status = 200, .framing = HTTPRESP_BODY_LENGTH, .keep_alive = 1 },
    { "HTTP/1.9 treated as 1.1", IN("HTTP/1.9 200 OK\r\nContent-Length: 0\r\n\r\n"),
      .want = DONE, .status = 200, .framing = HTTPRESP_BODY_LENGTH, .keep_alive = 1 },
    { "close-delimited at eof", IN(OK200 "Server: x\r\n\r\nall of\r\nthis"), .at_eof = 1,
      .want = DONE, .status = 200, .framing = HTTPRESP_BODY_UNTIL_CLOSE, .keep_alive = 0,
      BODY("all of\r\nthis") },
    { "close-delimited empty at eof", IN("HTTP/1.0 404 Not Found\r\n\r\n"), .at_eof = 1,
      .want = DONE, .status = 404, .framing = HTTPRESP_BODY_UNTIL_CLOSE, .keep_alive = 0 },
    { "odd spacing in field values",
      IN(OK200 "Content-Length:5\r\nX-A: \t a b \t \r\nX-Empty:\r\nX-Sp:   \r\n\r\nhello"),
      .want = DONE, .status = 200, .framing = HTTPRESP_BODY_LENGTH, .content_length = 5,
      .keep_alive = 1, BODY("hello") },
    { "content-length with trailing whitespace", IN(OK200 "Content-Length: \t5\t \r\n\r\nhello"),
      .want = DONE, .status = 200, .framing = HTTPRESP_BODY_LENGTH, .content_length = 5,
      .keep_alive = 1, BODY("hello") },
    { "obs-text in values and reason",
      IN("HTTP/1.1 200 \xc3\x89tat\r\nX: caf\xc3\xa9\x80\xff\r\nContent-Length: 0\r\n\r\n"),
      .want = DONE, .status = 200, .framing = HTTPRESP_BODY_LENGTH, .keep_alive = 1 },
    { "every token character in a name",
      IN(OK200 "!#$%&'*+-.^_`|~09azAZ: v\r\nContent-Length: 0\r\n\r\n"), .want = DONE,
      .status = 200, .framing = HTTPRESP_BODY_LENGTH, .keep_alive = 1 },
    { "empty reason after space", IN("HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n"),
      .want = DONE, .status = 200, .framing = HTTPRESP_BODY_LENGTH, .keep_alive = 1 },
    { "no reason, no space", IN("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n"), .want = DONE,
      .status = 200, .framing = HTTPRESP_BODY_LENGTH, .keep_alive = 1 },
    { "status 599", IN("HTTP/1.1 599 X\r\nContent-Length: 0\r\n\r\n"), .want = DONE,
      .status = 599, .framing = HTTPRESP_BODY_LENGTH, .keep_alive = 1 },
    { "a 500 is a response like any other",
      IN("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops"), .want = DONE,
      .status = 500, .framing = HTTPRESP_BODY_LENGTH, .content_length = 4, .keep_alive = 1,
      BODY("oops") },
    { "huge content-length in a HEAD response",
      IN(OK200 "Content-Length: 18446744073709551615\r\n\r\n"), .head_req = 1, .want = DONE,
      .status = 200, .framing = HTTPRESP_BODY_NONE, .keep_alive = 1 },

    /* ---- incomplete ---- */
    { "empty input", IN(""), .want = INCOMPLETE },
    { "partial version", IN("HTTP/1"), .want = INCOMPLETE },
    { "status line only", IN(OK200), .want = INCOMPLETE },
    { "CR at the end", IN(OK200 "X: y\r"), .want = INCOMPLETE },
    { "no empty line", IN(OK200 "Content-Length: 0\r\n"), .want = INCOMPLETE },
    { "truncated body", IN(OK200 "Content-Length: 10\r\n\r\nhello"), .want = INCOMPLETE },
    { "truncated body at eof", IN(OK200 "Content-Length: 10\r\n\r\nhello"), .at_eof = 1,
      .want = INCOMPLETE },
    { "truncated chunk data", IN(TE_CHUNKED "5\r\nhel"), .want = INCOMPLETE },
    { "truncated chunk size line", IN(TE_CHUNKED "5;ext"), .want = INCOMPLETE },
    { "chunked without the final empty line", IN(TE_CHUNKED "5\r\nhello\r\n0\r\n"),
      .want = INCOMPLETE },
    { "chunked in the middle of a trailer", IN(TE_CHUNKED "0\r\nX-T: 1"), .want = INCOMPLETE },
    { "chunked no last chunk at eof", IN(TE_CHUNKED "5\r\nhello\r\n"), .at_eof = 1,
      .want = INCOMPLETE },
    { "close-delimited before eof", IN(OK200 "\r\nsome body"), .want = INCOMPLETE },

    /* ---- malformed status lines ---- */
    { "not HTTP", IN("HTTX/1.1 200 OK\r\n\r\n"), MAL("not an HTTP status line") },
    { "lower-case name", IN("http/1.1 200 OK\r\n\r\n"), MAL("not an HTTP status line") },
    { "wrong after one byte", IN("<"), MAL("not an HTTP status line") },
    { "leading empty line", IN("\r\n" OK200 "\r\n"), MAL("not an HTTP status line") },
    { "HTTP/2", IN("HTTP/2 200 OK\r\n\r\n"), MAL("unsupported HTTP version") },
    { "HTTP/2 seen early", IN("HTTP/2"), MAL("unsupported HTTP version") },
    { "HTTP/0.9", IN("HTTP/0.9 200 OK\r\n\r\n"), MAL("unsupported HTTP version") },
    { "minor version not a digit", IN("HTTP/1.x 200 OK\r\n\r\n"), MAL("bad HTTP version") },
    { "two-digit minor version", IN("HTTP/1.10 200 OK\r\n\r\n"), MAL("bad HTTP version") },
    { "no space after version", IN("HTTP/1.1\r\n\r\n"), MAL("bad HTTP version") },
    { "two spaces after version", IN("HTTP/1.1  200 OK\r\n\r\n"), MAL("bad status code") },
    { "two-digit status", IN("HTTP/1.1 20 OK\r\n\r\n"), MAL("bad status code") },
    { "two-digit status at end of line", IN("HTTP/1.1 20\r\n\r\n"), MAL("bad status code") },
    { "four-digit status", IN("HTTP/1.1 2000 OK\r\n\r\n"), MAL("bad status code") },
    { "status with a letter", IN("HTTP/1.1 2x0 OK\r\n\r\n"), MAL("bad status code") },
    { "status below 100", IN("HTTP/1.1 099 X\r\n\r\n"), MAL("status code out of range") },
    { "status above 599", IN("HTTP/1.1 600 X\r\n\r\n"), MAL("status code out of range") },
    { "tab instead of space before reason", IN("HTTP/1.1 200\tOK\r\n\r\n"),
      MAL("bad status code") },
    { "control character in reason", IN("HTTP/1.1 200 O\x01K\r\n\r\n"),
      MAL("control character in reason phrase") },
    { "NUL in reason", IN("HTTP/1.1 200 O\0K\r\n\r\n"),
      MAL("control character in reason phrase") },
    { "bare LF after status line", IN("HTTP/1.1 200 OK\nContent-Length: 0\n\n"),
      MAL("bare LF line ending") },
    { "CR not followed by LF", IN("HTTP/1.1 200 OK\rX"), MAL("CR not followed by LF") },

    /* ---- malformed header fields ---- */
    { "bare LF after a field", IN(OK200 "X: y\n\r\n"), MAL("bare LF line ending") },
    { "bare LF as the empty line", IN(OK200 "X: y\r\n\n"), MAL("bare LF line ending") },
    { "CR without LF in the empty line", IN(OK200 "\rX"), MAL("CR not followed by LF") },
    { "folded header", IN(OK200 "X: a\r\n b\r\n\r\n"), MAL("obsolete line folding") },
    { "folded with a tab", IN(OK200 "X: a\r\n\tb\r\n\r\n"), MAL("obsolete line folding") },
    { "whitespace line after the status line", IN(OK200 " X: a\r\n\r\n"),
      MAL("obsolete line folding") },
    { "space before colon", IN(OK200 "Content-Length : 5\r\n\r\nhello"),
      MAL("whitespace between header field name and colon") },
    { "tab before colon", IN(OK200 "X\t: 5\r\n\r\n"),
      MAL("whitespace between header field name and colon") },
    { "no colon", IN(OK200 "Foo\r\n\r\n"), MAL("header field without colon") },
    { "empty name", IN(OK200 ": v\r\n\r\n"), MAL("empty header field name") },
    { "non-token byte in name", IN(OK200 "Fo@o: v\r\n\r\n"),
      MAL("bad character in header field name") },
    { "obs-text in name", IN(OK200 "Caf\xc3\xa9: v\r\n\r\n"),
      MAL("bad character in header field name") },
    { "control character in value", IN(OK200 "X: a\x01" "b\r\n\r\n"),
      MAL("control character in header field value") },
    { "DEL in value", IN(OK200 "X: a\x7f\r\n\r\n"), MAL("control character in header field value") },
    { "NUL in value", IN(OK200 "X: a\0b\r\n\r\n"), MAL("control character in header field value") },
    { "CR inside value", IN(OK200 "X: a\rb\r\n\r\n"), MAL("CR not followed by LF") },

    /* ---- framing ---- */
    { "content-length not a number", IN(OK200 "Content-Length: 5a\r\n\r\nhello"),
      MAL("bad Content-Length") },
    { "negative content-length", IN(OK200 "Content-Length: -1\r\n\r\n"), MAL("bad Content-Length") },
    { "content-length with plus sign", IN(OK200 "Content-Length: +5\r\n\r\nhello"),
      MAL("bad Content-Length") },
    { "empty content-length", IN(OK200 "Content-Length:\r\n\r\n"), MAL("bad Content-Length") },
    { "content-length list with empty element", IN(OK200 "Content-Length: 5,\r\n\r\nhello"),
      MAL("bad Content-Length") },
    { "content-length with inner space", IN(OK200 "Content-Length: 1 0\r\n\r\n"),
      MAL("bad Content-Length") },
    { "content-length overflow", IN(OK200 "Content-Length: 18446744073709551616\r\n\r\n"),
      MAL("Content-Length out of range") },
    { "content-length overflow, many digits",
      IN(OK200 "Content-Length: 99999999999999999999999999\r\n\r\n"),
      MAL("Content-Length out of range") },
    { "conflicting content-length headers",
      IN(OK200 "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
      MAL("conflicting Content-Length values") },
    { "conflicting content-length list", IN(OK200 "Content-Length: 5, 6\r\n\r\nhello!"),
      MAL("conflicting Content-Length values") },
    { "conflict seen before the head ends", IN(OK200 "content-length: 1\r\nCONTENT-LENGTH: 2\r\n"),
      MAL("conflicting Content-Length values") },
    { "transfer-encoding then content-length",
      IN(OK200 "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
      MAL("both Transfer-Encoding and Content-Length") },
    { "content-length then transfer-encoding",
      IN(OK200 "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
      MAL("both Transfer-Encoding and Content-Length") },
    { "TE and CL refused even for 204",
      IN("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n"),
      MAL("both Transfer-Encoding and Content-Length") },
    { "TE and CL refused even for HEAD",
      IN(OK200 "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n"), .head_req = 1,
      MAL("both Transfer-Encoding and Content-Length") },
    { "transfer-encoding gzip", IN(OK200 "Transfer-Encoding: gzip\r\n\r\n"),
      MAL("unsupported Transfer-Encoding") },
    { "gzip then chunked", IN(OK200 "Transfer-Encoding: gzip, chunked\r\n\r\n"),
      MAL("unsupported Transfer-Encoding") },
    { "chunked not last", IN(OK200 "Transfer-Encoding: chunked, gzip\r\n\r\n"),
      MAL("unsupported Transfer-Encoding") },
    { "chunked not last across fields",
      IN(OK200 "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n"),
      MAL("unsupported Transfer-Encoding") },
    { "chunked with a parameter", IN(OK200 "Transfer-Encoding: chunked;q=1\r\n\r\n"),
      MAL("unsupported Transfer-Encoding") },
    { "chunked twice", IN(OK200 "Transfer-Encoding: chunked, chunked\r\n\r\n"),
      MAL("chunked applied more than once") },
    { "chunked twice across fields",
      IN(OK200 "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
      MAL("chunked applied more than once") },
    { "empty transfer-encoding", IN(OK200 "Transfer-Encoding: ,\r\n\r\n"),
      MAL("empty Transfer-Encoding") },
    { "transfer-encoding in HTTP/1.0",
      IN("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
      MAL("Transfer-Encoding in an HTTP/1.0 response") },
    { "huge content-length", IN(OK200 "Content-Length: 18446744073709551615\r\n\r\n"),
      BAD(LERR_TOO_LARGE, "response body exceeds 4096 bytes") },
    { "content-length over the cap", IN(OK200 "Content-Length: 6\r\n\r\nhello!"), .cap = 5,
      BAD(LERR_TOO_LARGE, "response body exceeds 5 bytes") },
    { "content-length over the cap, body not yet here", IN(OK200 "Content-Length: 6\r\n\r\n"),
      .cap = 5, BAD(LERR_TOO_LARGE, "response body exceeds 5 bytes") },
    { "close-delimited over the cap before eof", IN(OK200 "\r\nhello!"), .cap = 5,
      BAD(LERR_TOO_LARGE, "response body exceeds 5 bytes") },

    /* ---- malformed chunked bodies ---- */
    { "empty chunk size", IN(TE_CHUNKED "\r\nhello\r\n0\r\n\r\n"), MAL("bad chunk size") },
    { "non-hex chunk size", IN(TE_CHUNKED "g\r\n"), MAL("bad chunk size") },
    { "0x chunk size", IN(TE_CHUNKED "0x5\r\nhello\r\n0\r\n\r\n"), MAL("bad chunk size") },
    { "negative chunk size", IN(TE_CHUNKED "-5\r\nhello\r\n0\r\n\r\n"), MAL("bad chunk size") },
    { "space then CR after chunk size", IN(TE_CHUNKED "5 \r\nhello\r\n0\r\n\r\n"),
      MAL("bad chunk size") },
    { "space inside chunk size", IN(TE_CHUNKED "1 0\r\n"), MAL("bad chunk size") },
    { "17 hex digits", IN(TE_CHUNKED "00000000000000001\r\nx\r\n0\r\n\r\n"),
      MAL("more than 16 hex digits") },
    { "chunk size over the cap", IN(TE_CHUNKED "FFFFFFFFFFFFFFFF\r\n"),
      BAD(LERR_TOO_LARGE, "response body exceeds 4096 bytes") },
    { "chunk size over the cap, seen early", IN(TE_CHUNKED "10000"),
      BAD(LERR_TOO_LARGE, "response body exceeds 4096 bytes") },
    { "chunks over the cap together", IN(TE_CHUNKED "3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n"),
      .cap = 5, BAD(LERR_TOO_LARGE, "response body exceeds 5 bytes") },
    { "bare LF after chunk size", IN(TE_CHUNKED "5\nhello\r\n0\r\n\r\n"), MAL("bad chunk size") },
    { "CR without LF after chunk size", IN(TE_CHUNKED "5\rhello\r\n0\r\n\r\n"),
      MAL("bad chunk size line (CR not followed by LF)") },
    { "control character in chunk extension", IN(TE_CHUNKED "5;a\x01\r\nhello\r\n0\r\n\r\n"),
      MAL("control character in chunk extension") },
    { "bare LF in chunk extension", IN(TE_CHUNKED "5;a\nhello\r\n0\r\n\r\n"),
      MAL("bare LF line ending") },
    { "chunk data too long", IN(TE_CHUNKED "5\r\nhello!\r\n0\r\n\r\n"),
      MAL("missing CRLF after chunk data") },
    { "chunk data ends in bare LF", IN(TE_CHUNKED "5\r\nhello\n0\r\n\r\n"),
      MAL("missing CRLF after chunk data") },
    { "chunk data CR without LF", IN(TE_CHUNKED "5\r\nhello\rX0\r\n\r\n"),
      MAL("missing CRLF after chunk data") },
    { "folded trailer", IN(TE_CHUNKED "0\r\nX: 1\r\n 2\r\n\r\n"),
      MAL("obsolete line folding in trailer") },
    { "trailer without colon", IN(TE_CHUNKED "0\r\nbad\r\n\r\n"), MAL("bad trailer field") },
    { "trailer with space before colon", IN(TE_CHUNKED "0\r\nX : 1\r\n\r\n"),
      MAL("bad trailer field") },
    { "control character in trailer", IN(TE_CHUNKED "0\r\nX: \x02\r\n\r\n"),
      MAL("control character in trailer field") },
    { "bare LF ending the trailer section", IN(TE_CHUNKED "0\r\n\n"),
      MAL("bare LF line ending") },
    { "CR without LF ending the trailer section", IN(TE_CHUNKED "0\r\n\rX"),
      MAL("CR not followed by LF after trailer section") },
    { "CR without LF ending a trailer field", IN(TE_CHUNKED "0\r\nX: 1\rX"),
      MAL("CR not followed by LF in trailer") },
    { "bare LF after last chunk", IN(TE_CHUNKED "0\n\r\n"), MAL("bad chunk size") },
};

/* ---- what a run produced, whichever way the input was fed ---- */

struct outcome {
    int rc;
    enum lerr_kind kind;
    char msg[sizeof ((struct lerr *)0)->msg];
    int status;
    enum httpresp_framing framing;
    unsigned long long content_length;
    int keep_alive;
    size_t num_headers;
    size_t body_len;
    char body[DEFAULT_CAP];
};

static size_t case_cap(const struct tcase *t)
{
    return t->cap ? t->cap : DEFAULT_CAP;
}

/* Whatever the answer, nothing the parser returns may point outside the input. */
static void check_head_pointers(const struct httpresp_head *h, const char *buf, size_t len)
{
    assert_true(h->num_headers <= HTTPRESP_MAX_HEADERS);
    assert_true(h->reason >= buf && h->reason + h->reason_len <= buf + len);
    for (size_t i = 0; i < h->num_headers; i++) {
        const struct httpresp_header *f = &h->headers[i];

        assert_true(f->name_len > 0);
        assert_true(f->name >= buf && f->name + f->name_len <= buf + len);
        assert_true(f->value >= buf && f->value + f->value_len <= buf + len);
    }
}

static void record_head(struct outcome *o, const struct httpresp_head *h)
{
    o->status = h->status;
    o->framing = h->framing;
    o->content_length = h->content_length;
    o->keep_alive = h->keep_alive;
    o->num_headers = h->num_headers;
}

static void record_error(struct outcome *o, const struct lerr *e)
{
    o->rc = HTTPRESP_ERROR;
    o->kind = e->kind;
    memcpy(o->msg, e->msg, sizeof o->msg);
}

static struct outcome *one_shot(const struct tcase *t, size_t len, int at_eof)
{
    struct outcome *o = calloc(1, sizeof *o);
    struct httpresp_head h;
    struct lerr e;

    assert_non_null(o);
    lerr_clear(&e);
    o->rc = httpresp_parse(t->in, len, t->head_req, at_eof, &h, o->body, case_cap(t),
                           &o->body_len, &e);
    if (o->rc == HTTPRESP_ERROR) {
        record_error(o, &e);
    } else if (o->rc > 0) {
        assert_true((size_t)o->rc <= len);
        assert_true(o->body_len <= case_cap(t));
        check_head_pointers(&h, t->in, len);
        record_head(o, &h);
    } else {
        assert_int_equal(o->rc, HTTPRESP_INCOMPLETE);
    }
    return o;
}

/* The way the client reads: the head parser over a growing buffer until it answers, then
 * the rest, piece by piece, through the chunked decoder. The first piece ends at `first`,
 * later ones are `step` bytes long. Non-chunked bodies have nothing incremental to them and
 * come from httpresp_parse (whose prefixes test_prefixes checks). */
static struct outcome *streamed(const struct tcase *t, size_t first, size_t step)
{
    struct outcome *o = calloc(1, sizeof *o);
    struct httpresp_chunked d = { 0 };
    struct httpresp_head h;
    struct lerr e;
    size_t n = t->in_len, got = 0, fed;
    int rc = HTTPRESP_INCOMPLETE;

    assert_non_null(o);
    lerr_clear(&e);
    while (rc == HTTPRESP_INCOMPLETE && got < n) {
        got = got == 0 ? first : got + step;
        if (got > n)
            got = n;
        rc = httpresp_parse_head(t->in, got, t->head_req, &h, &e);
    }
    if (n == 0)
        rc = httpresp_parse_head(t->in, 0, t->head_req, &h, &e);
    if (rc == HTTPRESP_ERROR) {
        record_error(o, &e);
        return o;
    }
    o->rc = rc;
    if (rc == HTTPRESP_INCOMPLETE)
        return o;
    check_head_pointers(&h, t->in, got);
    record_head(o, &h);
    if (h.framing != HTTPRESP_BODY_CHUNKED) {
        struct outcome *whole = one_shot(t, n, t->at_eof);

        if (whole->rc > 0) {
            assert_int_equal(whole->status, o->status);
            assert_int_equal(whole->framing, o->framing);
            assert_true(whole->content_length == o->content_length);
            assert_int_equal(whole->keep_alive, o->keep_alive);
            assert_int_equal(whole->num_headers, o->num_headers);
        }
        free(o);
        return whole;
    }

    /* The first piece is what the read that completed the head brought after it. */
    fed = (size_t)rc;
    while (fed < n) {
        size_t end = got > fed ? got : (n - fed > step ? fed + step : n);
        size_t piece = end - fed, out;
        char *p = malloc(piece);

        assert_non_null(p);
        memcpy(p, t->in + fed, piece);
        rc = httpresp_chunked_decode(&d, p, piece, p, &out, case_cap(t), &e);
        if (rc != HTTPRESP_ERROR) {
            assert_true(o->body_len + out <= case_cap(t));
            memcpy(o->body + o->body_len, p, out);
            o->body_len += out;
        }
        if (rc >= 0) {
            /* What the decoder did not take is the input's own next bytes, left alone
             * by the output written in place before them. */
            assert_true((size_t)rc <= piece - out);
            assert_memory_equal(p + piece - rc, t->in + fed + piece - rc, (size_t)rc);
            o->rc = (int)(fed + piece - (size_t)rc);
            free(p);
            return o;
        }
        free(p);
        if (rc == HTTPRESP_ERROR) {
            record_error(o, &e);
            return o;
        }
        fed = end;
    }
    o->rc = HTTPRESP_INCOMPLETE;
    return o;
}

static void assert_same(const struct tcase *t, const struct outcome *a, const struct outcome *b,
                        const char *how)
{
    if (a->rc != b->rc || (a->rc == HTTPRESP_ERROR && strcmp(a->msg, b->msg) != 0))
        fail_msg("%s: %s: rc %d (%s) vs %d (%s)", t->name, how, a->rc, a->msg, b->rc, b->msg);
    if (a->rc == HTTPRESP_ERROR) {
        assert_int_equal(a->kind, b->kind);
    } else if (a->rc > 0) {
        assert_int_equal(a->status, b->status);
        assert_int_equal(a->framing, b->framing);
        assert_true(a->content_length == b->content_length);
        assert_int_equal(a->keep_alive, b->keep_alive);
        assert_int_equal(a->num_headers, b->num_headers);
        assert_int_equal(a->body_len, b->body_len);
        assert_memory_equal(a->body, b->body, a->body_len);
    }
}

static void check_case(const struct tcase *t, const struct outcome *o)
{
    switch (t->want) {
    case DONE:
        if (o->rc <= 0)
            fail_msg("%s: expected success, got %d (%s)", t->name, o->rc, o->msg);
        assert_int_equal(o->rc, t->consumed ? t->consumed : t->in_len);
        assert_int_equal(o->status, t->status);
        assert_int_equal(o->framing, t->framing);
        assert_true(o->content_length == t->content_length);
        assert_int_equal(o->keep_alive, t->keep_alive);
        assert_int_equal(o->body_len, t->body_len);
        if (t->body_len)
            assert_memory_equal(o->body, t->body, t->body_len);
        break;
    case INCOMPLETE:
        if (o->rc != HTTPRESP_INCOMPLETE)
            fail_msg("%s: expected incomplete, got %d (%s)", t->name, o->rc, o->msg);
        break;
    case ERROR:
        if (o->rc != HTTPRESP_ERROR)
            fail_msg("%s: expected error \"%s\", got %d", t->name, t->msg, o->rc);
        if (o->kind != t->kind || !strstr(o->msg, t->msg))
            fail_msg("%s: expected %s \"%s\", got %s \"%s\"", t->name, lerr_kind_name(t->kind),
                     t->msg, lerr_kind_name(o->kind), o->msg);
        if (t->kind == LERR_MALFORMED)
            assert_non_null(strstr(o->msg, "malformed response: "));
        break;
    }
}

static void test_table(void **state)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct outcome *o = one_shot(&cases[i], cases[i].in_len, cases[i].at_eof);

        check_case(&cases[i], o);
        free(o);
    }
}

static void test_one_byte_at_a_time(void **state)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct outcome *o = streamed(&cases[i], 1, 1);

        check_case(&cases[i], o);
        free(o);
    }
}

/* Two pieces split at every point, and a few piece sizes that cut chunk framing in odd
 * places: always the answer of the whole. */
static void test_every_split(void **state)
{
    static const size_t steps[] = { 2, 3, 7 };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct tcase *t = &cases[i];
        struct outcome *whole = one_shot(t, t->in_len, t->at_eof);

        for (size_t k = 1; k < t->in_len; k++) {
            struct outcome *o = streamed(t, k, t->in_len);

            assert_same(t, whole, o, "split in two");
            free(o);
        }
        for (size_t s = 0; s < sizeof steps / sizeof steps[0]; s++) {
            struct outcome *o = streamed(t, steps[s], steps[s]);

            assert_same(t, whole, o, "fixed-size pieces");
            free(o);
        }
        free(whole);
    }
}

/* Missing bytes are never an error, and nothing is decided before it can be. */
static void test_prefixes(void **state)
{
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct tcase *t = &cases[i];
        struct outcome *whole = one_shot(t, t->in_len, 0);

        for (size_t k = 0; k < t->in_len; k++) {
            struct outcome *o = one_shot(t, k, 0);

            if (o->rc != HTTPRESP_INCOMPLETE)
                assert_same(t, whole, o, "prefix");
            free(o);
        }
        free(whole);
    }
}

/* ---- generated inputs for the limits ---- */

struct gen {
    char *buf;
    size_t len, cap;
};

static void gen_add(struct gen *g, const char *s, size_t n)
{
    if (g->len + n > g->cap) {
        g->cap = (g->len + n) * 2;
        g->buf = realloc(g->buf, g->cap);
        assert_non_null(g->buf);
    }
    memcpy(g->buf + g->len, s, n);
    g->len += n;
}

static void gen_str(struct gen *g, const char *s)
{
    gen_add(g, s, strlen(s));
}

/* A head of exactly `size` bytes: status line, one padding field, Content-Length: 0. */
static void gen_head_of_size(struct gen *g, size_t size)
{
    static const char pre[] = OK200 "X-Pad: ", post[] = "\r\nContent-Length: 0\r\n\r\n";
    size_t pad = size - (sizeof pre - 1) - (sizeof post - 1);

    g->len = 0;
    gen_str(g, pre);
    for (size_t i = 0; i < pad; i++)
        gen_add(g, "p", 1);
    gen_str(g, post);
    assert_int_equal(g->len, size);
}

static void test_head_size_limit(void **state)
{
    struct gen g = { 0 };
    struct httpresp_head h;
    struct lerr e;

    gen_head_of_size(&g, HTTPRESP_MAX_HEAD);
    assert_int_equal(httpresp_parse_head(g.buf, g.len, 0, &h, &e), HTTPRESP_MAX_HEAD);
    assert_int_equal(httpresp_parse_head(g.buf, g.len - 1, 0, &h, &e), HTTPRESP_INCOMPLETE);

    gen_head_of_size(&g, HTTPRESP_MAX_HEAD + 1);
    assert_int_equal(httpresp_parse_head(g.buf, g.len, 0, &h, &e), HTTPRESP_ERROR);
    assert_int_equal(e.kind, LERR_TOO_LARGE);
    assert_string_equal(e.msg, "response head exceeds 65536 bytes");
    /* Known as soon as the cap is reached without the end of the head. */
    assert_int_equal(httpresp_parse_head(g.buf, HTTPRESP_MAX_HEAD, 0, &h, &e), HTTPRESP_ERROR);
    assert_int_equal(e.kind, LERR_TOO_LARGE);
    assert_int_equal(httpresp_parse_head(g.buf, HTTPRESP_MAX_HEAD - 1, 0, &h, &e),
                     HTTPRESP_INCOMPLETE);
    /* A malformed byte before the cap is still reported as such. */
    g.buf[20] = '\x01';
    assert_int_equal(httpresp_parse_head(g.buf, g.len, 0, &h, &e), HTTPRESP_ERROR);
    assert_int_equal(e.kind, LERR_MALFORMED);
    free(g.buf);
}

static void gen_fields(struct gen *g, int count)
{
    char line[64];

    g->len = 0;
    gen_str(g, OK200);
    for (int i = 0; i < count - 1; i++) {
        snprintf(line, sizeof line, "X-Field-%d: %d\r\n", i, i);
        gen_str(g, line);
    }
    gen_str(g, "Content-Length: 0\r\n\r\n");
}

static void test_header_count_limit(void **state)
{
    struct gen g = { 0 };
    struct httpresp_head h;
    struct lerr e;
    size_t n;

    gen_fields(&g, HTTPRESP_MAX_HEADERS);
    assert_int_equal(httpresp_parse_head(g.buf, g.len, 0, &h, &e), (int)g.len);
    assert_int_equal(h.num_headers, HTTPRESP_MAX_HEADERS);
    assert_memory_equal(httpresp_header(&h, "x-field-62", &n), "62", 2);
    assert_int_equal(n, 2);
    assert_int_equal(h.framing, HTTPRESP_BODY_LENGTH);

    gen_fields(&g, HTTPRESP_MAX_HEADERS + 1);
    assert_int_equal(httpresp_parse_head(g.buf, g.len, 0, &h, &e), HTTPRESP_ERROR);
    assert_int_equal(e.kind, LERR_TOO_LARGE);
    assert_string_equal(e.msg, "response has more than 64 header fields");
    /* ...as soon as the first byte of the field too many is there. */
    assert_int_equal(httpresp_parse_head(g.buf, g.len - strlen("ontent-Length: 0\r\n\r\n"), 0,
                                         &h, &e), HTTPRESP_ERROR);
    assert_int_equal(e.kind, LERR_TOO_LARGE);
    free(g.buf);
}

/* Framing lines cost the decoder nothing to hold, but they cannot go on forever. */
static void test_chunk_line_limits(void **state)
{
    struct gen g = { 0 };
    struct httpresp_chunked d = { 0 };
    struct lerr e;
    size_t len;

    gen_str(&g, "1;");
    while (g.len < HTTPRESP_MAX_HEAD)
        gen_add(&g, "e", 1);
    assert_int_equal(httpresp_chunked_decode(&d, g.buf, g.len, g.buf, &len, 100, &e),
                     HTTPRESP_INCOMPLETE);
    assert_int_equal(httpresp_chunked_decode(&d, g.buf + 2, 1, g.buf + 2, &len, 100, &e),
                     HTTPRESP_ERROR);
    assert_int_equal(e.kind, LERR_TOO_LARGE);
    assert_string_equal(e.msg, "chunk size line exceeds 65536 bytes");

    memset(&d, 0, sizeof d);
    g.len = 0;
    gen_str(&g, "0\r\n");
    while (g.len < HTTPRESP_MAX_HEAD + 10)
        gen_str(&g, "X: 1\r\n");
    assert_int_equal(httpresp_chunked_decode(&d, g.buf, g.len, g.buf, &len, 100, &e),
                     HTTPRESP_ERROR);
    assert_int_equal(e.kind, LERR_TOO_LARGE);
    assert_string_equal(e.msg, "trailer section exceeds 65536 bytes");

    /* The cap is per size line: many short ones add up to more, and that is fine. */
    memset(&d, 0, sizeof d);
    g.len = 0;
    while (g.len <= 2 * HTTPRESP_MAX_HEAD)
        gen_str(&g, "1;padding-padding-padding-padding\r\nx\r\n");
    gen_str(&g, "0;padding-padding\r\nT: 1\r\n\r\n");
    assert_int_equal(httpresp_chunked_decode(&d, g.buf, g.len, g.buf, &len, g.len, &e), 0);
    assert_true(len > 3000);
    free(g.buf);
}

/* A body of many chunks, each larger than a typical read. */
static void test_large_chunked_body(void **state)
{
    struct gen g = { 0 }, want = { 0 };
    struct httpresp_head h;
    struct lerr e;
    char *body = malloc(40000), line[32];
    size_t body_len;

    assert_non_null(body);
    gen_str(&g, TE_CHUNKED);
    for (int i = 0; i < 9; i++) {
        size_t n = 1000 + 577 * (size_t)i;

        snprintf(line, sizeof line, "%zx;i=%d\r\n", n, i);
        gen_str(&g, line);
        for (size_t j = 0; j < n; j++) {
            char c = (char)('a' + (i + j) % 26);

            gen_add(&g, &c, 1);
            gen_add(&want, &c, 1);
        }
        gen_str(&g, "\r\n");
    }
    gen_str(&g, "0\r\n\r\n");
    assert_int_equal(httpresp_parse(g.buf, g.len, 0, 0, &h, body, 40000, &body_len, &e),
                     (int)g.len);
    assert_true(want.len > 4 * 4096 && want.len < 40000);
    assert_int_equal(body_len, want.len);
    assert_memory_equal(body, want.buf, want.len);
    /* The same with a cap one byte short. */
    assert_int_equal(httpresp_parse(g.buf, g.len, 0, 0, &h, body, want.len - 1, &body_len, &e),
                     HTTPRESP_ERROR);
    assert_int_equal(e.kind, LERR_TOO_LARGE);
    free(body);
    free(g.buf);
    free(want.buf);
}

/* ---- header lookup and the parsed head ---- */

static void test_header_lookup(void **state)
{
    static const char in[] = "HTTP/1.1 404 Not  Found \r\nContent-Type: text/plain\r\n"
                             "X-Dup: first\r\nx-dup: second\r\nX-Empty:  \r\nContent-Length: 0\r\n\r\n";
    struct httpresp_head h;
    struct lerr e;
    const char *v;
    size_t n = 99;

    assert_int_equal(httpresp_parse_head(in, sizeof in - 1, 0, &h, &e), (int)sizeof in - 1);
    assert_int_equal(h.minor_version, 1);
    assert_int_equal(h.status, 404);
    assert_int_equal(h.reason_len, strlen("Not  Found "));
    assert_memory_equal(h.reason, "Not  Found ", h.reason_len);
    assert_int_equal(h.num_headers, 5);

    v = httpresp_header(&h, "content-type", &n);
    assert_int_equal(n, strlen("text/plain"));
    assert_memory_equal(v, "text/plain", n);
    v = httpresp_header(&h, "CONTENT-TYPE", &n);
    assert_memory_equal(v, "text/plain", n);
    v = httpresp_header(&h, "X-DUP", &n);
    assert_int_equal(n, 5);
    assert_memory_equal(v, "first", 5);
    v = httpresp_header(&h, "x-empty", &n);
    assert_non_null(v);
    assert_int_equal(n, 0);
    assert_null(httpresp_header(&h, "content-typ", &n));
    assert_int_equal(n, 0);
    assert_null(httpresp_header(&h, "content-type-x", NULL));
    assert_non_null(httpresp_header(&h, "Content-Length", NULL));
}

static void test_minor_version_and_trimming(void **state)
{
    static const char in[] = "HTTP/1.0 200\r\nX-A:\t  a  b\t \r\nConnection: keep-alive\r\n"
                             "Content-Length: 0\r\n\r\n";
    struct httpresp_head h;
    struct lerr e;
    size_t n;
    const char *v;

    assert_int_equal(httpresp_parse_head(in, sizeof in - 1, 0, &h, &e), (int)sizeof in - 1);
    assert_int_equal(h.minor_version, 0);
    assert_int_equal(h.reason_len, 0);
    v = httpresp_header(&h, "x-a", &n);
    assert_int_equal(n, 4);
    assert_memory_equal(v, "a  b", 4);
    assert_int_equal(h.keep_alive, 1);
}

/* ---- the chunked decoder's own contract ---- */

static void test_chunked_leftover(void **state)
{
    char buf[] = "3\r\nabc\r\n0\r\nT: x\r\n\r\nNEXT";
    struct httpresp_chunked d = { 0 };
    struct lerr e;
    size_t len;

    /* In place: the body at the start, the bytes after the encoding untouched at the end. */
    assert_int_equal(httpresp_chunked_decode(&d, buf, sizeof buf - 1, buf, &len, 3, &e), 4);
    assert_int_equal(len, 3);
    assert_memory_equal(buf, "abc", 3);
    assert_memory_equal(buf + sizeof buf - 5, "NEXT", 4);
    /* Once done, everything fed is left over. */
    assert_int_equal(httpresp_chunked_decode(&d, buf, 2, buf, &len, 3, &e), 2);
    assert_int_equal(len, 0);
    assert_memory_equal(buf, "ab", 2);
}

static void test_chunked_error_keeps_decoded_output(void **state)
{
    char buf[] = "3\r\nabc\r\n2\r\nde!!";
    struct httpresp_chunked d = { 0 };
    struct lerr e;
    size_t len;

    assert_int_equal(httpresp_chunked_decode(&d, buf, sizeof buf - 1, buf, &len, 100, &e),
                     HTTPRESP_ERROR);
    assert_int_equal(e.kind, LERR_MALFORMED);
    assert_string_equal(e.msg, "malformed response: missing CRLF after chunk data");
    assert_int_equal(len, 5);
    assert_memory_equal(buf, "abcde", 5);
}

static void test_chunked_cap_zero(void **state)
{
    char ok[] = "0\r\n\r\n", bad[] = "1\r\nx\r\n0\r\n\r\n";
    struct httpresp_chunked d = { 0 };
    struct lerr e;
    size_t len;

    assert_int_equal(httpresp_chunked_decode(&d, ok, sizeof ok - 1, ok, &len, 0, &e), 0);
    assert_int_equal(len, 0);
    memset(&d, 0, sizeof d);
    assert_int_equal(httpresp_chunked_decode(&d, bad, sizeof bad - 1, bad, &len, 0, &e),
                     HTTPRESP_ERROR);
    assert_int_equal(e.kind, LERR_TOO_LARGE);
    assert_string_equal(e.msg, "response body exceeds 0 bytes");
    assert_int_equal(len, 0);
}

static void test_chunked_empty_input(void **state)
{
    struct httpresp_chunked d = { 0 };
    struct lerr e;
    char c = 'x';
    size_t len = 99;

    assert_int_equal(httpresp_chunked_decode(&d, &c, 0, &c, &len, 10, &e), HTTPRESP_INCOMPLETE);
    assert_int_equal(len, 0);
    assert_int_equal(c, 'x');
}

/* The token syntax the client checks its methods and header names with: the same table
 * the parser reads field names with. */
static void test_is_token(void **state)
{
    static const char *const good[] = { "GET", "X-Amz-Target", "a", "!#$%&'*+-.^_`|~09AZaz" };
    static const char *const bad[] = { "", "X Y", "X:", "\x7f", "caf\xc3\xa9", "a\tb", "(x)",
                                       "a/b", "a\"b", "a@b", "[x]", "{x}", "a,b", "a;b" };

    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        assert_true(httpresp_is_token(good[i]));
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(httpresp_is_token(bad[i]));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_one_byte_at_a_time),
        cmocka_unit_test(test_every_split),
        cmocka_unit_test(test_prefixes),
        cmocka_unit_test(test_head_size_limit),
        cmocka_unit_test(test_header_count_limit),
        cmocka_unit_test(test_chunk_line_limits),
        cmocka_unit_test(test_large_chunked_body),
        cmocka_unit_test(test_header_lookup),
        cmocka_unit_test(test_minor_version_and_trimming),
        cmocka_unit_test(test_chunked_leftover),
        cmocka_unit_test(test_chunked_error_keeps_decoded_output),
        cmocka_unit_test(test_chunked_cap_zero),
        cmocka_unit_test(test_chunked_empty_input),
        cmocka_unit_test(test_is_token),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
