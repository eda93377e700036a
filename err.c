#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int lerr_set(struct lerr *e, enum lerr_kind kind, const char *fmt, ...)
{
    va_list ap;

    if (!e)
        return -1;
    e->kind = kind;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

int lerr_wrap(struct lerr *e, const char *fmt, ...)
{
    char old[sizeof e->msg];
    va_list ap;
    int n;

    if (!e)
        return -1;
    memcpy(old, e->msg, sizeof old);
    va_start(ap, fmt);
    n = vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    /* ": " and as much of the old message as fits; truncation is fine for a log line. */
    if (n >= 0 && (size_t)n + 3 < sizeof e->msg)
        snprintf(e->msg + n, sizeof e->msg - (size_t)n, ": %.*s", (int)sizeof old - n - 3, old);
    return -1;
}

void lerr_clear(struct lerr *e)
{
    e->kind = LERR_NONE;
    e->msg[0] = '\0';
}

const char *lerr_kind_name(enum lerr_kind kind)
{
    static const char *const names[] = {
        [LERR_NONE] = "none",           [LERR_NOMEM] = "nomem",
        [LERR_INVALID] = "invalid",     [LERR_IO] = "io",
        [LERR_DNS] = "dns",             [LERR_REFUSED] = "refused",
        [LERR_CONNECT] = "connect",     [LERR_TIMEOUT] = "timeout",
        [LERR_CLOSED] = "closed",       [LERR_TLS_UNTRUSTED] = "tls-untrusted",
        [LERR_TLS_NAME] = "tls-name",   [LERR_TLS_ALERT] = "tls-alert",
        [LERR_TLS] = "tls",             [LERR_MALFORMED] = "malformed",
        [LERR_TOO_LARGE] = "too-large", [LERR_CANCELLED] = "cancelled",
        [LERR_HTTP] = "http",
    };

    if ((unsigned)kind < sizeof names / sizeof names[0] && names[kind])
        return names[kind];
    return "unknown";
}
