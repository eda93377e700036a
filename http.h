/*
 * http.h - a small HTTP/1.1 client over plain TCP and BearSSL TLS 1.2.
 *
 * A struct http_client is caller-allocated and keeps one persistent keep-alive connection
 * per origin (scheme, host, port), up to HTTP_MAX_CONNS origins (the least recently used
 * is closed to make room), reusing it across requests. An idle connection that the server
 * has closed (readable before the request: EOF, reset, close_notify) is replaced before
 * sending. When a reused connection turns out to have been closed by the server as the
 * request went out (EOF, reset or close_notify before any byte of a response), the request
 * is sent once more on a fresh connection: that is safe because the server cannot have
 * processed it. It is never resent when a response had started or on a fresh connection.
 * A response with "Connection: close", an HTTP/1.0 response without keep-alive, a body
 * delimited by the close, or bytes after the response end the connection.
 *
 * Over TLS, a body delimited by the close must end with close_notify: a bare EOF may have
 * cut it short, and is an error (LERR_MALFORMED), never a complete body.
 *
 * Limits: connect_timeout_ms for each connect() (a timeout ends the attempt; a refused
 * address moves on to the next one), io_timeout_ms for each wait for the socket (TLS
 * handshake, sending, each read of the response), and a deadline for all of it: the
 * request's timeout_ms, else the client's request_timeout_ms. Every request has one, so
 * that a server trickling a byte within each io_timeout_ms cannot hold a caller (and a
 * shutdown waiting for it) forever. Name resolution (getaddrinfo) is outside them: it
 * cannot be interrupted and has the resolver's own timeouts. cancel_fd aborts any wait,
 * and a request started while it is already readable.
 *
 * A client keeps its request buffer and one response buffer (each up to HTTP_KEEP_BUF)
 * between requests, and reads TLS records from the socket in large reads, so that a
 * request in steady state allocates nothing and costs few system calls.
 *
 * One client is used by one thread at a time. Nothing knows of SQS or Fly here.
 */
#ifndef LAMBDO_HTTP_H
#define LAMBDO_HTTP_H

#include <stddef.h>
#include "err.h"
#include "httpresp.h"
#include "tls.h"
#include "url.h"

#define HTTP_MAX_CONNS 4
#define HTTP_DEFAULT_MAX_BODY (8u * 1024 * 1024)
#define HTTP_DEFAULT_REQUEST_TIMEOUT_MS 30000
#define HTTP_KEEP_BUF (256u * 1024)  /* bigger buffers (rare) are freed after use */

struct http_header {
    const char *name;
    const char *value;
};

struct http_request {
    const char *method;                 /* "GET", "POST", "HEAD"... */
    const struct url *url;
    const struct http_header *headers;  /* extra headers. The client writes Host,
                                           Content-Length (when there is a body, or for
                                           POST/PUT/PATCH) and User-Agent unless given;
                                           Host, Content-Length, Connection and
                                           Transfer-Encoding here are refused, and so are
                                           control characters in a value (LERR_INVALID).
                                           Never logged: they carry tokens. */
    size_t num_headers;
    const char *body;
    size_t body_len;
    int timeout_ms;                     /* whole request (connect, TLS, send, response);
                                           0: the client's request_timeout_ms */
};

struct http_response {
    struct httpresp_head head;  /* status; header strings point into buf (httpresp_header) */
    char *buf;                  /* owned: the head, then the body */
    char *body;                 /* in buf, NUL-terminated for convenience (not counted) */
    size_t body_len;
    size_t buf_cap;                 /* private: buf's size */
    struct http_client *owner;      /* private: where buf goes back when freed */
};

struct http_conn;  /* private to http.c */

struct http_client {
    const struct tls_anchors *anchors;  /* shared, read-only; may be NULL for http:// only */
    struct tls_sessions *sessions;      /* shared with the process's other clients, so that
                                           each server's session is resumed by all; NULL
                                           (http_client_init's): each slot resumes its own */
    int connect_timeout_ms;             /* default 10000 */
    int io_timeout_ms;                  /* per read/write wait, default 30000 */
    int request_timeout_ms;             /* deadline of a request without its own timeout_ms,
                                           HTTP_DEFAULT_REQUEST_TIMEOUT_MS */
    size_t max_body;                    /* default HTTP_DEFAULT_MAX_BODY */
    int cancel_fd;                      /* -1, or an fd that becomes readable to abort any
                                           wait with LERR_CANCELLED (a shutdown pipe) */
    struct http_conn *conns[HTTP_MAX_CONNS];
    unsigned long lru_clock;            /* private: ticks once per request */
    struct http_buf {                   /* private: the buffers kept between requests, */
        char *p;                        /* so that steady state allocates nothing big */
        size_t len, cap;
    } req, spare;
    /* statistics, for tests and benchmarks */
    unsigned long connections_opened;
    unsigned long requests_sent;        /* sends, a resend on a new connection included */
    unsigned long buffers_allocated;    /* request and response buffers (re)allocated */
};

/* Zeroes the client and sets defaults; anchors may be NULL. Never fails. */
void http_client_init(struct http_client *c, const struct tls_anchors *anchors);

/* Closes every connection and frees them and the kept buffers. The client can be reused
 * after this. Free its responses first: a freed response hands its buffer back. */
void http_client_close(struct http_client *c);

/* Sends req and reads the whole response. 1xx responses are skipped; HEAD, 204 and 304
 * have no body. A status >= 400 is a successful exchange: the caller decides.
 * Errors have their own kinds: LERR_DNS, LERR_REFUSED, LERR_CONNECT, LERR_TIMEOUT,
 * LERR_CLOSED, LERR_TLS_UNTRUSTED, LERR_TLS_NAME, LERR_TLS_ALERT, LERR_TLS,
 * LERR_MALFORMED, LERR_TOO_LARGE, LERR_CANCELLED. On error resp holds nothing to free. */
int http_do(struct http_client *c, const struct http_request *req, struct http_response *resp,
            struct lerr *e);

/* Frees resp; its buffer goes back to the client (same thread) for the next response. */
void http_response_free(struct http_response *resp);

#endif
