/*
 * tls.h - trust anchors for BearSSL, loaded once.
 *
 * The PEM bundle named by SSL_CERT_FILE, else /etc/ssl/certs/ca-certificates.crt, is
 * decoded into BearSSL trust anchors at start-up; every TLS connection then shares them
 * read-only. Certificates are always verified: there is deliberately no way to turn
 * verification off.
 */
#ifndef LAMBDO_TLS_H
#define LAMBDO_TLS_H

#include <stddef.h>
#include <bearssl.h>
#include "err.h"

#define TLS_DEFAULT_CA_FILE "/etc/ssl/certs/ca-certificates.crt"

struct tls_anchors {
    br_x509_trust_anchor *anchors;
    size_t count;
};

/* Loads the CA bundle from path, or if path is NULL from $SSL_CERT_FILE, else the default.
 * A missing or unreadable file, or one with no usable certificate, is an error naming the
 * file. Returns 0 or -1 with e set. */
int tls_anchors_load(struct tls_anchors *ta, const char *path, struct lerr *e);

void tls_anchors_free(struct tls_anchors *ta);

/* Translates a BearSSL error code (br_ssl_engine_last_error) into a lerr with its own kind
 * and a message naming host: certificate not trusted, name mismatch, alert received... */
int tls_error(struct lerr *e, int br_err, const char *host);

#endif
