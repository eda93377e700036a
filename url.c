#include "url.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Host names are restricted to what DNS and the Host header can carry, so nothing a
 * caller puts in a URL can smuggle a space, CR or LF into the request line or headers. */
static int url_host_char(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '.' || ch == '_';
}

static int url_ipv6_char(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F') ||
           ch == ':' || ch == '.';
}

/* The path goes verbatim into the request line: controls, spaces and DEL would let it
 * end the line early or inject headers. Non-ASCII bytes are refused too: a URL on the
 * wire must be percent-encoded. */
static int url_path_char(unsigned char ch)
{
    return ch > 0x20 && ch < 0x7f;
}

static int url_scheme(const char **s, struct url *u, struct lerr *e)
{
    if (strncasecmp(*s, "https://", 8) == 0) {
        u->tls = 1;
        u->port = 443;
        *s += 8;
        return 0;
    }
    if (strncasecmp(*s, "http://", 7) == 0) {
        u->tls = 0;
        u->port = 80;
        *s += 7;
        return 0;
    }
    return lerr_set(e, LERR_INVALID, "URL must start with http:// or https://");
}

/* Parses host[:port] from the n bytes at a (the authority, userinfo already refused). */
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
        for (size_t i = 0; i < hlen; i++)
            if (!url_ipv6_char((unsigned char)host[i]))
                return lerr_set(e, LERR_INVALID, "URL has an invalid IPv6 address");
        if (hlen < 2 || !memchr(host, ':', hlen))
            return lerr_set(e, LERR_INVALID, "URL has an invalid IPv6 address");
        colon = close + 1 < end ? close + 1 : NULL;
        if (colon && *colon != ':')
            return lerr_set(e, LERR_INVALID, "URL has characters after the IPv6 address");
    } else {
        colon = memchr(a, ':', n);
        hlen = colon ? (size_t)(colon - a) : n;
        for (size_t i = 0; i < hlen; i++)
            if (!url_host_char((unsigned char)a[i]))
                return lerr_set(e, LERR_INVALID, "URL host has an invalid character");
    }
    if (hlen == 0)
        return lerr_set(e, LERR_INVALID, "URL has no host");
    if (hlen >= sizeof u->host)
        return lerr_set(e, LERR_INVALID, "URL host is longer than %zu bytes", sizeof u->host - 1);
    for (size_t i = 0; i < hlen; i++) {
        char ch = host[i];
        u->host[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
    }
    u->host[hlen] = '\0';

    if (colon) {
        unsigned long port = 0;
        const char *p = colon + 1;
        if (p == end)
            return lerr_set(e, LERR_INVALID, "URL has an empty port");
        for (; p < end; p++) {
            if (*p < '0' || *p > '9')
                return lerr_set(e, LERR_INVALID, "URL port is not a number");
            port = port * 10 + (unsigned long)(*p - '0');
            if (port > 65535)
                return lerr_set(e, LERR_INVALID, "URL port is out of range (1-65535)");
        }
        if (port == 0)
            return lerr_set(e, LERR_INVALID, "URL port is out of range (1-65535)");
        u->port = (unsigned short)port;
    }
    return 0;
}

static void url_authority(struct url *u)
{
    int v6 = strchr(u->host, ':') != NULL;
    int dflt = u->port == (u->tls ? 443 : 80);

    if (dflt)
        snprintf(u->authority, sizeof u->authority, v6 ? "[%s]" : "%s", u->host);
    else
        snprintf(u->authority, sizeof u->authority, v6 ? "[%s]:%u" : "%s:%u", u->host,
                 (unsigned)u->port);
}

static int url_path(const char *p, struct url *u, struct lerr *e)
{
    size_t n = strcspn(p, "#"), off = 0;

    for (size_t i = 0; i < n; i++)
        if (!url_path_char((unsigned char)p[i]))
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
    if (url_scheme(&s, u, e) < 0)
        return -1;
    alen = strcspn(s, "/?#");
    if (memchr(s, '@', alen))
        return lerr_set(e, LERR_INVALID, "URL must not contain credentials (user@host)");
    if (url_host_port(s, alen, u, e) < 0)
        return -1;
    url_authority(u);
    return url_path(s + alen, u, e);
}
