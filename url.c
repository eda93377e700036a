#include "url.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Host names are restricted to what DNS and the Host header can carry, so nothing a
 * caller puts in a URL can smuggle a space, CR or LF into the request line or headers. */
#define DIGITS "0123456789"
#define HOST_CHARS DIGITS "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-._"
#define IPV6_CHARS DIGITS "abcdefABCDEF:."

/* Parses host[:port] from the n bytes at a (the authority, userinfo already refused).
 * a is NUL-terminated further on, so strspn may look past n: that only makes it longer. */
static int url_host_port(const char *a, size_t n, struct url *u, struct lerr *e)
{
    const char *host = a, *end = a + n, *colon;
    size_t hlen;

    if (n > 0 && a[0] == '[') {
        const char *close = memchr(a, ']', n);
        if (!close)
            return lerr_set(e, LERR_INVALID, "URL has an IPv6 address without closing ']'");
        host = a + 1;
        hlen = (size_t)(close - host);
        if (strspn(host, IPV6_CHARS) < hlen || hlen < 2 || !memchr(host, ':', hlen))
            return lerr_set(e, LERR_INVALID, "URL has an invalid IPv6 address");
        colon = close + 1 < end ? close + 1 : NULL;
        if (colon && *colon != ':')
            return lerr_set(e, LERR_INVALID, "URL has characters after the IPv6 address");
    } else {
        colon = memchr(a, ':', n);
        hlen = colon ? (size_t)(colon - a) : n;
        if (strspn(a, HOST_CHARS) < hlen)
            return lerr_set(e, LERR_INVALID, "URL host has an invalid character");
    }
    if (hlen == 0)
        return lerr_set(e, LERR_INVALID, "URL has no host");
    if (hlen >= sizeof u->host)
        return lerr_set(e, LERR_INVALID, "URL host is longer than %zu bytes", sizeof u->host - 1);
    for (size_t i = 0; i < hlen; i++)
        u->host[i] = (char)tolower((unsigned char)host[i]);
    u->host[hlen] = '\0';

    if (colon) {
        unsigned long port = 0;
        const char *p = colon + 1;
        if (p == end)
            return lerr_set(e, LERR_INVALID, "URL has an empty port");
        if (strspn(p, DIGITS) < (size_t)(end - p))
            return lerr_set(e, LERR_INVALID, "URL port is not a number");
        while (p < end && port <= 65535)
            port = port * 10 + (unsigned long)(*p++ - '0');
        if (port == 0 || port > 65535)
            return lerr_set(e, LERR_INVALID, "URL port is out of range (1-65535)");
        u->port = (unsigned short)port;
    }
    return 0;
}

static int url_path(const char *p, struct url *u, struct lerr *e)
{
    size_t n = strcspn(p, "#"), off = 0;

    /* The path goes verbatim into the request line: controls, spaces and DEL would let it
     * end the line early or inject headers. Non-ASCII bytes are refused too: a URL on the
     * wire must be percent-encoded. */
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] <= 0x20 || (unsigned char)p[i] >= 0x7f)
            return lerr_set(e, LERR_INVALID,
                            "URL path has a space, control or non-ASCII byte (percent-encode it)");
    if (n == 0 || p[0] != '/')
        u->path[off++] = '/';  /* "http://h" and "http://h?q" */
    if (off + n >= sizeof u->path)
        return lerr_set(e, LERR_INVALID, "URL path is longer than %zu bytes", sizeof u->path - 1);
    memcpy(u->path + off, p, n);
    u->path[off + n] = '\0';
    return 0;
}

int url_parse(const char *s, struct url *u, struct lerr *e)
{
    size_t alen;

    memset(u, 0, sizeof *u);
    if (!s)
        return lerr_set(e, LERR_INVALID, "URL is missing");
    u->tls = strncasecmp(s, "https://", 8) == 0;
    if (!u->tls && strncasecmp(s, "http://", 7) != 0)
        return lerr_set(e, LERR_INVALID, "URL must start with http:// or https://");
    u->port = u->tls ? 443 : 80;
    s += u->tls ? 8 : 7;
    alen = strcspn(s, "/?#");
    if (memchr(s, '@', alen))
        return lerr_set(e, LERR_INVALID, "URL must not contain credentials (user@host)");
    if (url_host_port(s, alen, u, e) < 0)
        return -1;
    /* The Host header: brackets for IPv6, the port only when it is not the scheme's. */
    snprintf(u->authority, sizeof u->authority, strchr(u->host, ':') ? "[%s]:%u" : "%s:%u",
             u->host, (unsigned)u->port);
    if (u->port == (u->tls ? 443 : 80))
        *strrchr(u->authority, ':') = '\0';
    return url_path(s + alen, u, e);
}
