/*
 * tls.h - trust anchors and client engine set-up for BearSSL.
 *
 * The PEM bundle named by SSL_CERT_FILE, else /etc/ssl/certs/ca-certificates.crt, is
 * decoded into BearSSL trust anchors at start-up; every TLS connection then shares them
 * read-only. Certificates are always verified: there is deliberately no way to turn
 * verification off. A host name is checked by BearSSL against the DNS names (or CN) and sent
 * as SNI. An IPv4 or IPv6 literal host is not a name (RFC 6125 6.2.1, RFC 6066 3): no SNI is
 * sent, and the certificate must hold it as an iPAddress subjectAltName, checked here.
 *
 * Profile: TLS 1.2 only, ECDHE (ECDSA or RSA certificates) with ChaCha20-Poly1305 or
 * AES-GCM. That is what AWS and Fly serve, and it keeps CBC, 3DES, RSA key exchange and
 * TLS 1.0/1.1 out of the static binary.
 */
#ifndef LAMBDO_TLS_H
#define LAMBDO_TLS_H

#include <pthread.h>
#include <stddef.h>
#include <bearssl.h>
#include "err.h"

#define TLS_DEFAULT_CA_FILE "/etc/ssl/certs/ca-certificates.crt"

struct tls_anchors {
    br_x509_trust_anchor *anchors;
    size_t count;
    unsigned char *arena;   /* owned: every anchor's DN and key bytes, in one block */
};

/* Loads the CA bundle from path, or if path is NULL or "" from the default (the caller
 * reads $SSL_CERT_FILE: config.c's ca_file).
 * A missing or unreadable file, or one with no usable certificate, is an error naming the
 * file. Certificates BearSSL cannot use (unsupported key type) are skipped. Returns 0 or
 * -1 with e set. */
int tls_anchors_load(struct tls_anchors *ta, const char *path, struct lerr *e);

void tls_anchors_free(struct tls_anchors *ta);

#define TLS_EE_MAX 8192  /* an IP host's certificate is kept this far for its SAN check */

/* One client connection's BearSSL state (about 60 KB, no allocation inside). Kept per
 * server across reconnections, so that the previous session can be resumed. */
struct tls_client {
    br_ssl_client_context cc;
    br_x509_minimal_context xc;
    br_x509_class x509;          /* xc's methods, three of them wrapped (IP hosts) */
    unsigned char ip[16];        /* the host as an address (ip_len 4 or 16), 0: a name */
    size_t ip_len;
    unsigned char ee[TLS_EE_MAX];  /* the server's own certificate, when ip_len */
    size_t ee_len;               /* the EE certificate's bytes so far, kept or not */
    unsigned char ibuf[BR_SSL_BUFSIZE_INPUT];
    unsigned char obuf[BR_SSL_BUFSIZE_OUTPUT];
};

/* Configures tc with the profile above and the anchors (not NULL; shared, not copied:
 * they must outlive tc). Never fails. */
void tls_client_init(struct tls_client *tc, const struct tls_anchors *ta);

/* Readies tc for a new connection to host (SNI and the certificate's name or address
 * check), mixing in fresh entropy from getrandom() so no /dev/urandom is needed, and
 * offering the session of the previous connection for resumption. Returns 0 or -1. */
int tls_client_reset(struct tls_client *tc, const char *host, struct lerr *e);

/* The last session of each server (host and port, a few of them), shared by all of a
 * process's tls_clients, so that a new connection resumes the session another one (another
 * thread's) negotiated instead of a full handshake: no certificate chain to verify, no
 * ECDHE. The very first handshake with a server goes alone: the others wait for its session
 * (up to TLS_SESSIONS_WAIT_S); later ones never wait, so that a server without session IDs
 * does not make them go one at a time. Caller-allocated, mutex-protected. The master secrets in it stay in
 * memory and are wiped by tls_sessions_free. A resumed session skips the certificate check:
 * the clients sharing one must trust the same anchors. */
#define TLS_SESSIONS_MAX 4
#define TLS_SESSIONS_WAIT_S 1
struct tls_sessions {
    pthread_mutex_t mu;
    pthread_cond_t kept;   /* a handshake ended */
    struct tls_session {
        char host[256];    /* as checked against the certificate; "" while free */
        unsigned port;
        int busy;          /* a first handshake with it is in flight */
        br_ssl_session_parameters params;
    } slot[TLS_SESSIONS_MAX];
    unsigned next;         /* the slot a new server takes, in turn */
};

void tls_sessions_init(struct tls_sessions *s);
void tls_sessions_free(struct tls_sessions *s);

/* host: a struct url's (at most 255 bytes).
 * Before tls_client_reset, when tc has no session of its own (a new connection slot): gives
 * it the session s keeps for host:port to offer, waiting for the one a handshake in flight
 * will bring; with none, this handshake is the one the others wait for. Nothing when s is
 * NULL. tls_sessions_keep must follow. */
void tls_sessions_offer(struct tls_sessions *s, struct tls_client *tc, const char *host,
                        unsigned port);

/* After the handshake: when it succeeded (ok), keeps tc's session as host:port's in s,
 * replacing the one kept before; either way, wakes those waiting for it. Nothing when s is
 * NULL. */
void tls_sessions_keep(struct tls_sessions *s, const struct tls_client *tc, const char *host,
                       unsigned port, int ok);

/* Translates a BearSSL error code (br_ssl_engine_last_error) into a lerr with its own kind
 * and a message naming host: certificate not trusted (LERR_TLS_UNTRUSTED), name mismatch
 * (LERR_TLS_NAME), alert received (LERR_TLS_ALERT, with the alert number)... Returns -1. */
int tls_error(struct lerr *e, int br_err, const char *host);

#endif
