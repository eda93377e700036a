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
    /* in the order of enum lerr_kind */
    static const char *const names[] = {
        "none", "nomem", "invalid", "io", "dns", "refused", "connect", "timeout", "closed",
        "tls-untrusted", "tls-name", "tls-alert", "tls", "malformed", "too-large", "cancelled",
        "http",
    };
    _Static_assert(sizeof names / sizeof names[0] == LERR_HTTP + 1, "a name for every kind");

    return (unsigned)kind < sizeof names / sizeof names[0] ? names[kind] : "unknown";
}
