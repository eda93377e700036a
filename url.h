/*
 * url.h - parse http:// and https:// URLs. Pure; no allocation.
 */
#ifndef LAMBDO_URL_H
#define LAMBDO_URL_H

#include "err.h"

struct url {
    int tls;                 /* 1 for https */
    char host[256];          /* without brackets for IPv6 literals ("::1"), lowercased */
    unsigned short port;     /* explicit, or 80 / 443 */
    char authority[272];     /* Host header value: host[:port] with brackets for IPv6,
                                port only when it is not the scheme's default */
    char path[4096];         /* path and query, starting with '/'; "/" when absent.
                                The fragment is dropped. Bytes are kept as given. */
};

/* Parses s. Accepts http and https (case-insensitive), optional userinfo is refused
 * (credentials never go in URLs), IPv6 literals in brackets, ports 1-65535.
 * Returns 0, or -1 with e set (LERR_INVALID) naming what is wrong. */
int url_parse(const char *s, struct url *u, struct lerr *e);

#endif
