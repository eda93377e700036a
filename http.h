/*
 * http.h - a small HTTP/1.1 client over plain TCP and BearSSL TLS 1.2.
 *
 * A struct http_client is caller-allocated and keeps one persistent keep-alive connection
 * per origin (scheme, host, port), up to HTTP_MAX_CONNS origins, reusing it across
 * requests. When a reused connection turns out to have been closed by the server while
 * idle (EOF or reset before any byte of a response), the request is sent once more on a
 * fresh connection: that is safe because the server cannot have processed it. It is
 * never resent when a response had started or a fresh connection failed.
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

struct http_header {
    const char *name;
    const char *value;
};

struct http_request {
    const char *method;                 /* "GET", "POST", "HEAD"... */
    const struct url *url;
    const struct http_header *headers;  /* extra headers; Host, Content-Length, Connection
                                           and User-Agent are added by the client */
    size_t num_headers;
    const char *body;
    size_t body_len;
    int timeout_ms;                     /* whole request; 0: the client's default */
};

struct http_response {
    int status;
    struct httpresp_head head;  /* header strings point into head_buf */
    char *head_buf;             /* owned */
    char *body;                 /* owned, NUL-terminated for convenience (not counted) */
    size_t body_len;
};

struct http_conn;  /* private to http.c */

struct http_client {
    const struct tls_anchors *anchors;  /* shared, read-only; may be NULL for http:// only */
    int connect_timeout_ms;             /* default 10000 */
    int io_timeout_ms;                  /* per read/write wait, default 30000 */
    size_t max_body;                    /* default HTTP_DEFAULT_MAX_BODY */
    int cancel_fd;                      /* -1, or an fd that becomes readable to abort any
                                           wait with LERR_CANCELLED (a shutdown pipe) */
    struct http_conn *conns[HTTP_MAX_CONNS];
    /* statistics, for tests and benchmarks */
    unsigned long connections_opened;
    unsigned long requests_sent;
};

/* Zeroes the client and sets defaults; anchors may be NULL. Never fails. */
void http_client_init(struct http_client *c, const struct tls_anchors *anchors);

/* Closes every connection and frees them. The client can be reused after this. */
void http_client_close(struct http_client *c);

/* Sends req and reads the whole response. 1xx responses are skipped; HEAD, 204 and 304
 * have no body. A status >= 400 is a successful exchange: the caller decides.
 * Errors have their own kinds: LERR_DNS, LERR_REFUSED, LERR_CONNECT, LERR_TIMEOUT,
 * LERR_CLOSED, LERR_TLS_UNTRUSTED, LERR_TLS_NAME, LERR_TLS_ALERT, LERR_TLS,
 * LERR_MALFORMED, LERR_TOO_LARGE, LERR_CANCELLED. On error resp holds nothing to free. */
int http_do(struct http_client *c, const struct http_request *req, struct http_response *resp,
            struct lerr *e);

/* Case-insensitive header lookup; returns a pointer into the response (value_len set). */
const char *http_response_header(const struct http_response *resp, const char *name,
                                 size_t *value_len);

void http_response_free(struct http_response *resp);

#endif
