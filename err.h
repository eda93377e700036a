/*
 * err.h - the one error convention of lambdo.
 *
 * A function that can fail returns 0 on success and -1 on failure. On failure it has
 * described what went wrong in a caller-owned `struct lerr`: a kind that code can branch
 * on (retry a timeout, give up on an untrusted certificate) and a message written for
 * the person reading the log. Callers that only pass the failure up return -1 and leave
 * the lerr as it is; callers that add context use lerr_wrap().
 *
 * Messages never contain secrets: code that holds a token or key never formats it.
 */
#ifndef LAMBDO_ERR_H
#define LAMBDO_ERR_H

#include <stddef.h>

/* Keep the connection kinds (REFUSED..CLOSED) and the TLS kinds (TLS_UNTRUSTED..TLS) next to
 * each other: cli.c names a failure's class by these ranges. */
enum lerr_kind {
    LERR_NONE = 0,
    LERR_NOMEM,         /* allocation failed */
    LERR_INVALID,       /* bad argument or input (URL, configuration, JSON...) */
    LERR_IO,            /* a system call failed (errno text in the message) */
    LERR_DNS,           /* name resolution failed */
    LERR_REFUSED,       /* connection refused */
    LERR_CONNECT,       /* other connect failure (unreachable, reset during connect) */
    LERR_TIMEOUT,       /* connect, read or write timed out */
    LERR_CLOSED,        /* peer closed the connection */
    LERR_TLS_UNTRUSTED, /* certificate chain does not lead to a trust anchor */
    LERR_TLS_NAME,      /* certificate does not match the host name */
    LERR_TLS_ALERT,     /* peer sent a TLS alert */
    LERR_TLS,           /* any other TLS failure */
    LERR_MALFORMED,     /* the peer's response is not valid HTTP (or not the expected format) */
    LERR_TOO_LARGE,     /* a size cap was exceeded */
    LERR_CANCELLED,     /* the operation was cancelled (shutdown requested) */
    LERR_HTTP,          /* an HTTP-level failure reported by the server */
};

struct lerr {
    enum lerr_kind kind;
    char msg[320];
};

/* Sets kind and a printf-style message. Always returns -1, so `return lerr_set(...)`. */
int lerr_set(struct lerr *e, enum lerr_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes the existing message with context ("fetching x: <old message>"); keeps kind.
 * Always returns -1. */
int lerr_wrap(struct lerr *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Resets to LERR_NONE with an empty message. */
void lerr_clear(struct lerr *e);

/* Short stable name of a kind ("timeout", "tls-untrusted"...), for logs and tests. */
const char *lerr_kind_name(enum lerr_kind kind);

#endif
