#include "tls.h"
#include "text.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* ---- the little DER needed for a trust anchor (and an IP host's check) ------------------
 *
 * A trust anchor is the certificate's subject DN (as encoded), public key and CA flag.
 * BearSSL's PEM and X.509 decoders find them with byte-at-a-time virtual machines: even
 * compiled at -O3 they take 16 and 8 ms for the 144 certificates of a Debian bundle, where
 * this whole load takes 2 ms. These functions walk the same fields directly. Nothing here
 * checks signatures or dates: anchors are trusted by configuration, and BearSSL never
 * checks an anchor's own dates either. */

/* A view of DER bytes: the loader's own, decoded in place, or a client's copy of a
 * server's certificate (not const: an anchor points at them). */
struct der {
    unsigned char *p;
    size_t len;
};

/* Takes the next element off d: tag (low-tag-number form), definite length. val is its
 * content. Returns the tag, -1 if bad. */
static int der_next(struct der *d, struct der *val)
{
    size_t i = 2, len;
    int tag;

    if (d->len < 2 || (d->p[0] & 0x1f) == 0x1f)
        return -1;
    tag = d->p[0];
    len = d->p[1];
    if (len & 0x80) {
        size_t n = len & 0x7f;
        if (n == 0 || n > 4 || d->len < 2 + n)
            return -1;  /* indefinite length is BER, not DER */
        len = 0;
        for (size_t k = 0; k < n; k++)
            len = len << 8 | d->p[i++];
    }
    if (len > d->len - i)
        return -1;
    val->p = d->p + i;
    val->len = len;
    d->p += i + len;
    d->len -= i + len;
    return tag;
}

static int der_oid_is(const struct der *oid, const char *bytes, size_t n)
{
    return oid->len == n && memcmp(oid->p, bytes, n) == 0;
}

/* An INTEGER as an unsigned big-endian number, leading zeros dropped. A negative one (top
 * bit set) is no RSA modulus or exponent: refused, as BearSSL's own decoder does. */
static int der_uint(struct der *d, unsigned char **p, size_t *len)
{
    struct der v;

    if (der_next(d, &v) != 0x02 || v.len == 0 || (v.p[0] & 0x80))
        return -1;
    while (v.len > 1 && v.p[0] == 0) {
        v.p++;
        v.len--;
    }
    *p = v.p;
    *len = v.len;
    return 0;
}

#define OID_RSA        "\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01"
#define OID_EC         "\x2a\x86\x48\xce\x3d\x02\x01"
#define OID_P256       "\x2a\x86\x48\xce\x3d\x03\x01\x07"
#define OID_P384       "\x2b\x81\x04\x00\x22"
#define OID_P521       "\x2b\x81\x04\x00\x23"
#define OID_BASIC_CONS "\x55\x1d\x13"
#define OID_SAN        "\x55\x1d\x11"
#define OID_IS(o, s) der_oid_is(o, s, sizeof s - 1)

/* SubjectPublicKeyInfo: RSA or named-curve EC; anything else is unsupported (-1). */
static int ta_spki(struct der spki, br_x509_pkey *k)
{
    struct der alg, oid, bits, param, rsa;

    if (der_next(&spki, &alg) != 0x30 || der_next(&alg, &oid) != 0x06 ||
        der_next(&spki, &bits) != 0x03 || bits.len < 2 || bits.p[0] != 0)
        return -1;
    bits.p++;
    bits.len--;
    if (OID_IS(&oid, OID_RSA)) {
        k->key_type = BR_KEYTYPE_RSA;
        return der_next(&bits, &rsa) != 0x30 ||
               der_uint(&rsa, &k->key.rsa.n, &k->key.rsa.nlen) < 0 ||
               der_uint(&rsa, &k->key.rsa.e, &k->key.rsa.elen) < 0 ? -1 : 0;
    }
    if (!OID_IS(&oid, OID_EC) || der_next(&alg, &param) != 0x06)
        return -1;
    k->key_type = BR_KEYTYPE_EC;
    k->key.ec.q = bits.p;
    k->key.ec.qlen = bits.len;
    k->key.ec.curve = OID_IS(&param, OID_P256)   ? BR_EC_secp256r1
                      : OID_IS(&param, OID_P384) ? BR_EC_secp384r1
                      : OID_IS(&param, OID_P521) ? BR_EC_secp521r1
                                                 : 0;
    return k->key.ec.curve ? 0 : -1;
}

/* Finds the extension oid (without a zero byte, as OID_BASIC_CONS and OID_SAN) among a
 * certificate's extensions (the content of its [3]).
 * Returns 1 with val set to the extension's value, 0 if it is absent, -1 if malformed. */
static int der_find_ext(struct der exts, const char *oid, struct der *val)
{
    struct der seq, ext, id, v;
    int found = 0;

    if (der_next(&exts, &seq) != 0x30)
        return -1;
    while (seq.len > 0) {
        int tag;
        if (der_next(&seq, &ext) != 0x30 || der_next(&ext, &id) != 0x06)
            return -1;
        tag = der_next(&ext, &v);
        if (tag == 0x01)  /* critical */
            tag = der_next(&ext, &v);
        if (tag != 0x04)
            return -1;
        if (!found && der_oid_is(&id, oid, strlen(oid))) {
            *val = v;
            found = 1;
        }
    }
    return found;
}

/* Splits a certificate, after which nothing may follow, into the TBS fields used here:
 * the subject (whole element), the SubjectPublicKeyInfo and the extensions (length 0 when
 * there are none). Returns 0, or -1 if it is malformed. */
static int cert_fields(unsigned char *der, size_t len, struct der *subject,
                       struct der *spki, struct der *exts)
{
    struct der in = { der, len }, cert, tbs, skip, x;
    int tag;

    *exts = (struct der){ NULL, 0 };
    if (der_next(&in, &cert) != 0x30 || in.len != 0 || der_next(&cert, &tbs) != 0x30)
        return -1;
    tag = der_next(&tbs, &skip);
    if (tag == 0xa0)  /* [0] version */
        tag = der_next(&tbs, &skip);
    if (tag != 0x02 ||                                   /* serialNumber */
        der_next(&tbs, &skip) != 0x30 ||                 /* signature */
        der_next(&tbs, &skip) != 0x30 ||                 /* issuer */
        der_next(&tbs, &skip) != 0x30)                   /* validity */
        return -1;
    subject->p = tbs.p;  /* the whole element, header included: the anchor's DN */
    if (der_next(&tbs, &skip) != 0x30 || der_next(&tbs, spki) != 0x30)
        return -1;
    subject->len = (size_t)(skip.p + skip.len - subject->p);
    while (tbs.len > 0) {
        tag = der_next(&tbs, &x);
        if (tag < 0)
            return -1;
        if (tag == 0xa3)
            *exts = x;
    }
    return 0;
}

/* Certificate -> subject DN, key and CA flag (basicConstraints). Returns 0, or -1 for a
 * certificate that is malformed or has a key BearSSL cannot use. */
static int ta_parse_cert(unsigned char *der, size_t len, br_x509_trust_anchor *a)
{
    struct der subject, spki, exts, val, bc, v;
    int rc;

    memset(a, 0, sizeof *a);
    /* Nothing may follow the certificate: OpenSSL's "TRUSTED CERTIFICATE" form appends
     * trust settings there, which can reject the certificate for TLS servers. Ignoring
     * them would trust what the bundle says not to, so such entries are not anchors. */
    if (cert_fields(der, len, &subject, &spki, &exts) < 0 || ta_spki(spki, &a->pkey) < 0)
        return -1;
    a->dn.data = subject.p;
    a->dn.len = subject.len;
    rc = exts.len ? der_find_ext(exts, OID_BASIC_CONS, &val) : 0;
    if (rc <= 0)
        return rc;
    if (der_next(&val, &bc) != 0x30)
        return -1;
    if (bc.len > 0 && der_next(&bc, &v) == 0x01 && v.len == 1 && v.p[0])
        a->flags = BR_X509_TA_CA;
    return 0;
}

/* ---- trust anchors ---------------------------------------------------------------------
 *
 * The bundle is read into one buffer and each certificate's base64 is decoded in place
 * there; the anchors point at their DN and key inside it. Once all are found, those bytes
 * (a third of a Debian bundle) move to an arena of their exact size and the bundle is
 * freed. Three allocations, however big the bundle. */

/* Finds every BEGIN/END CERTIFICATE block in the file (modified in place), decodes its
 * base64 and keeps the certificate. Text outside the blocks is ignored, as openssl does.
 * tests/tool_httpc --ca-check compares the result with BearSSL's PEM and X.509 decoders. */
static int ta_decode(struct tls_anchors *ta, const char *path, unsigned char *buf, size_t len,
                     struct lerr *e)
{
    static const char begin[] = "-----BEGIN ", end[] = "-----END ";
    unsigned char *p = buf, *lim = buf + len;
    size_t seen = 0;  /* certificate blocks, anchors or not */

    for (;;) {
        unsigned char *b = memmem(p, (size_t)(lim - p), begin, sizeof begin - 1), *label, *q;
        if (!b)
            return 0;
        label = b + sizeof begin - 1;
        q = memmem(label, (size_t)(lim - label), "-----", 5);
        if (!q || memchr(label, '\n', (size_t)(q - label)))
            return lerr_set(e, LERR_INVALID, "%s is not a valid PEM file (bad BEGIN line after "
                            "certificate %zu)", path, seen);
        size_t label_len = (size_t)(q - label);
        unsigned char *body = q + 5;
        unsigned char *stop = memmem(body, (size_t)(lim - body), end, sizeof end - 1);
        if (!stop)
            return lerr_set(e, LERR_INVALID, "%s is not a valid PEM file (no END line after "
                            "certificate %zu)", path, seen);
        p = stop + sizeof end - 1;
        if ((label_len != 11 || memcmp(label, "CERTIFICATE", 11) != 0) &&
            (label_len != 16 || memcmp(label, "X509 CERTIFICATE", 16) != 0))
            continue;
        seen++;
        long der_len = text_base64_decode(body, (size_t)(stop - body), body, 0);
        if (der_len < 0)
            return lerr_set(e, LERR_INVALID, "%s is not a valid PEM file (bad base64 in "
                            "certificate %zu)", path, seen);
        /* One that cannot be an anchor (malformed, or a key type BearSSL does not do, such
         * as Ed25519) is skipped: one odd entry in a system bundle must not stop the program. */
        if (ta_parse_cert(body, (size_t)der_len, &ta->anchors[ta->count]) == 0)
            ta->count++;
    }
}

/* Copies an anchor's DN and key bytes to dst and points the anchor at the copies; with dst
 * NULL, only counts them. Returns the byte count. */
static size_t ta_copy(br_x509_trust_anchor *a, unsigned char *dst)
{
    unsigned char **part[3] = { &a->dn.data, &a->pkey.key.ec.q, NULL };
    size_t len[3] = { a->dn.len, a->pkey.key.ec.qlen, 0 }, n = 0;

    if (a->pkey.key_type == BR_KEYTYPE_RSA) {
        part[1] = &a->pkey.key.rsa.n;
        len[1] = a->pkey.key.rsa.nlen;
        part[2] = &a->pkey.key.rsa.e;
        len[2] = a->pkey.key.rsa.elen;
    }
    for (int i = 0; i < 3 && part[i]; i++) {
        if (dst) {
            memcpy(dst + n, *part[i], len[i]);
            *part[i] = dst + n;
        }
        n += len[i];
    }
    return n;
}

int tls_anchors_load(struct tls_anchors *ta, const char *path, struct lerr *e)
{
    char *text = NULL;
    unsigned char *file;
    size_t file_len = 0, cap = 0, size = 0;
    int rc;

    memset(ta, 0, sizeof *ta);
    if (!path || !*path)
        path = TLS_DEFAULT_CA_FILE;
    /* up to 64 MiB: a system bundle is about 200 KB */
    rc = text_read_file(path, "CA bundle ", 64 << 20, TEXT_READ_REGULAR, &text, &file_len, e);
    file = (unsigned char *)text;
    /* Room for an anchor per BEGIN line: no certificate block has fewer. */
    for (unsigned char *p = file; rc == 0 && (p = memmem(p, (size_t)(file + file_len - p),
                                                         "-----BEGIN ", 11)); p += 11)
        cap++;
    if (rc == 0 && !(ta->anchors = malloc((cap ? cap : 1) * sizeof *ta->anchors)))
        rc = lerr_set(e, LERR_NOMEM, "out of memory reading %s", path);
    if (rc == 0)
        rc = ta_decode(ta, path, file, file_len, e);
    if (rc == 0 && ta->count == 0)
        rc = lerr_set(e, LERR_INVALID, "CA bundle %s has no usable certificate", path);
    for (size_t i = 0; rc == 0 && i < ta->count; i++)
        size += ta_copy(&ta->anchors[i], NULL);
    if (rc == 0 && !(ta->arena = malloc(size)))
        rc = lerr_set(e, LERR_NOMEM, "out of memory reading %s", path);
    for (size_t i = 0, at = 0; rc == 0 && i < ta->count; i++)
        at += ta_copy(&ta->anchors[i], ta->arena + at);
    free(text);
    if (rc < 0)
        tls_anchors_free(ta);  /* ta is left empty */
    return rc;
}

void tls_anchors_free(struct tls_anchors *ta)
{
    free(ta->anchors);
    free(ta->arena);
    memset(ta, 0, sizeof *ta);
}

/* ---- IP-address hosts ------------------------------------------------------------------
 *
 * BearSSL matches a server name against DNS names and the CN only, and would take an IP
 * literal for one. An IP host is given to it as no name at all (then it checks none and
 * sends no SNI), and three of its X.509 engine's methods, wrapped here, keep the chain's
 * first certificate, the server's own, to match the address against its iPAddress SANs once
 * BearSSL has found the chain trusted. */

static struct tls_client *x509_tc(const br_x509_class *const *ctx)
{
    return (struct tls_client *)((uintptr_t)ctx - offsetof(struct tls_client, xc));
}

static void x509_start_chain(const br_x509_class **ctx, const char *server_name)
{
    x509_tc(ctx)->ee_len = 0;
    br_x509_minimal_vtable.start_chain(ctx, server_name);
}

/* BearSSL counts the chain's certificates at their end: 0 while the first, the EE one,
 * comes. Its bytes are counted whole, and kept while they fit. */
static void x509_append(const br_x509_class **ctx, const unsigned char *buf, size_t len)
{
    struct tls_client *tc = x509_tc(ctx);

    if (tc->ip_len && tc->xc.num_certs == 0) {
        if (tc->ee_len + len <= sizeof tc->ee)
            memcpy(tc->ee + tc->ee_len, buf, len);
        tc->ee_len += len;
    }
    br_x509_minimal_vtable.append(ctx, buf, len);
}

/* Once BearSSL has found the chain trusted, an IP host must be one of the iPAddress
 * entries ([7]) of the EE certificate's subjectAltName. */
static unsigned x509_end_chain(const br_x509_class **ctx)
{
    struct tls_client *tc = x509_tc(ctx);
    unsigned err = br_x509_minimal_vtable.end_chain(ctx);
    struct der subject, spki, exts, san, names, name;
    int tag;

    if (err || !tc->ip_len)
        return err;
    if (tc->ee_len > sizeof tc->ee)
        return BR_ERR_X509_LIMIT_EXCEEDED;
    if (cert_fields(tc->ee, tc->ee_len, &subject, &spki, &exts) < 0 ||
        der_find_ext(exts, OID_SAN, &san) <= 0 || der_next(&san, &names) != 0x30)
        return BR_ERR_X509_BAD_SERVER_NAME;
    while ((tag = der_next(&names, &name)) >= 0)
        if (tag == 0x87 && name.len == tc->ip_len && memcmp(name.p, tc->ip, tc->ip_len) == 0)
            return 0;
    return BR_ERR_X509_BAD_SERVER_NAME;
}

/* Sets tc->ip from host when host is an address literal: IPv6, or IPv4 in any form the
 * resolver takes as one (inet_aton: "127.1" too), so that no such host passes as a name. */
static void tls_host_ip(struct tls_client *tc, const char *host)
{
    struct in_addr a4;

    tc->ip_len = 0;
    if (inet_pton(AF_INET6, host, tc->ip) == 1) {
        tc->ip_len = 16;
    } else if (inet_aton(host, &a4)) {
        memcpy(tc->ip, &a4, sizeof a4);
        tc->ip_len = sizeof a4;
    }
}

/* ---- elliptic curves --------------------------------------------------------------------- */

/* X25519 with BearSSL's Curve25519 code, P-256, P-384 and P-521 with its generic prime-curve
 * code, instead of its default set, which adds a P-256-only implementation: 7.9 KB less. The
 * price is paid once per connection, in ECDSA checks of P-256 chains: a handshake with the
 * test chain takes 46 M instructions instead of 24 M (callgrind), about 1 ms more CPU. */
static const br_ec_impl *tls_ec_for(int curve)
{
    return curve == BR_EC_curve25519 ? &br_ec_c25519_m31 : &br_ec_prime_i31;
}

static const unsigned char *tls_ec_generator(int curve, size_t *len)
{
    return tls_ec_for(curve)->generator(curve, len);
}

static const unsigned char *tls_ec_order(int curve, size_t *len)
{
    return tls_ec_for(curve)->order(curve, len);
}

static size_t tls_ec_xoff(int curve, size_t *len)
{
    return tls_ec_for(curve)->xoff(curve, len);
}

static uint32_t tls_ec_mul(unsigned char *g, size_t glen, const unsigned char *x, size_t xlen,
                           int curve)
{
    return tls_ec_for(curve)->mul(g, glen, x, xlen, curve);
}

static size_t tls_ec_mulgen(unsigned char *r, const unsigned char *x, size_t xlen, int curve)
{
    return tls_ec_for(curve)->mulgen(r, x, xlen, curve);
}

/* ECDSA only: never on Curve25519. */
static uint32_t tls_ec_muladd(unsigned char *a, const unsigned char *b, size_t len,
                              const unsigned char *x, size_t xlen, const unsigned char *y,
                              size_t ylen, int curve)
{
    return br_ec_prime_i31.muladd(a, b, len, x, xlen, y, ylen, curve);
}

static const br_ec_impl tls_ec = {
    (uint32_t)1 << BR_EC_secp256r1 | (uint32_t)1 << BR_EC_secp384r1 |
        (uint32_t)1 << BR_EC_secp521r1 | (uint32_t)1 << BR_EC_curve25519,
    tls_ec_generator, tls_ec_order, tls_ec_xoff, tls_ec_mul, tls_ec_mulgen, tls_ec_muladd,
};

/* ---- client engine ---------------------------------------------------------------------- */

void tls_client_init(struct tls_client *tc, const struct tls_anchors *ta)
{
    /* TLS 1.2 with ECDHE and AEAD only: what AWS and Fly offer, and every suite has
     * forward secrecy. ChaCha20 first: as fast as AES-GCM without AES-NI, and
     * constant-time everywhere. */
    static const uint16_t suites[] = {
        BR_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        BR_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        BR_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        BR_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        BR_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        BR_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    };
    /* SHA-1 and SHA-224 stay for certificate chains that still use them; MD5 is left
     * out (BearSSL's X.509 engine refuses it anyway). */
    static const br_hash_class *const hashes[] = {
        [br_sha1_ID] = &br_sha1_vtable,     [br_sha224_ID] = &br_sha224_vtable,
        [br_sha256_ID] = &br_sha256_vtable, [br_sha384_ID] = &br_sha384_vtable,
        [br_sha512_ID] = &br_sha512_vtable,
    };
    br_ssl_client_context *cc = &tc->cc;

    br_ssl_client_zero(cc);
    br_ssl_engine_set_versions(&cc->eng, BR_TLS12, BR_TLS12);
    br_x509_minimal_init(&tc->xc, &br_sha256_vtable, ta->anchors, ta->count);
    br_ssl_engine_set_suites(&cc->eng, suites, sizeof suites / sizeof suites[0]);
    /* RSA with BearSSL's i31 code, which its EC code links anyway, rather than the 64-bit
     * i62 default: 1.6 KB less, and an RSA check with e = 65537 is cheap either way. */
    br_ssl_client_set_rsapub(cc, br_rsa_i31_public);
    br_ssl_engine_set_rsavrfy(&cc->eng, br_rsa_i31_pkcs1_vrfy);
    br_ssl_engine_set_ec(&cc->eng, &tls_ec);
    br_ssl_engine_set_ecdsa(&cc->eng, br_ecdsa_i31_vrfy_asn1);
    br_x509_minimal_set_rsa(&tc->xc, br_ssl_engine_get_rsavrfy(&cc->eng));
    br_x509_minimal_set_ecdsa(&tc->xc, br_ssl_engine_get_ec(&cc->eng),
                              br_ssl_engine_get_ecdsa(&cc->eng));
    for (int id = br_sha1_ID; id <= br_sha512_ID; id++) {
        br_ssl_engine_set_hash(&cc->eng, id, hashes[id]);
        br_x509_minimal_set_hash(&tc->xc, id, hashes[id]);
    }
    /* BearSSL's X.509 engine with the three methods above in front of its own: its
     * functions never look at the vtable they are called through. */
    tc->x509 = br_x509_minimal_vtable;
    tc->x509.start_chain = x509_start_chain;
    tc->x509.append = x509_append;
    tc->x509.end_chain = x509_end_chain;
    tc->xc.vtable = &tc->x509;
    br_ssl_engine_set_x509(&cc->eng, &tc->xc.vtable);
    br_ssl_engine_set_prf_sha256(&cc->eng, &br_tls12_sha256_prf);
    br_ssl_engine_set_prf_sha384(&cc->eng, &br_tls12_sha384_prf);
    br_ssl_engine_set_default_aes_gcm(&cc->eng);
#if defined __x86_64__ && defined __SIZEOF_INT128__
    /* What BearSSL's default picks here, without linking its fallbacks for CPUs that
     * lack SSE2 or a 64-bit multiplication, which no x86_64 does: 2 KB. */
    br_ssl_engine_set_chapol(&cc->eng, &br_sslrec_in_chapol_vtable, &br_sslrec_out_chapol_vtable);
    br_ssl_engine_set_chacha20(&cc->eng, &br_chacha20_sse2_run);
    br_ssl_engine_set_poly1305(&cc->eng, &br_poly1305_ctmulq_run);
#else
    br_ssl_engine_set_default_chapol(&cc->eng);
#endif
    br_ssl_engine_set_buffers_bidi(&cc->eng, tc->ibuf, sizeof tc->ibuf, tc->obuf, sizeof tc->obuf);
}

/* Never inlined (the product is link-time optimised): bench/callgrind-guard tells a
 * handshake's instructions from the steady state's by this function's inclusive cost. */
__attribute__((noinline)) int tls_client_reset(struct tls_client *tc, const char *host,
                                               struct lerr *e)
{
    unsigned char seed[32];

    /* getrandom() rather than BearSSL's own /dev/urandom reader: a FROM scratch image
     * has no /dev. Fresh entropy is mixed in for every connection. Up to 256 bytes come
     * whole and uninterrupted once the kernel's pool is ready (it may block until then). */
    if (getrandom(seed, sizeof seed, 0) != (ssize_t)sizeof seed)
        return lerr_set(e, LERR_TLS, "cannot get random bytes for TLS: getrandom: %s",
                        strerror(errno));
    br_ssl_engine_inject_entropy(&tc->cc.eng, seed, sizeof seed);
    memset(seed, 0, sizeof seed);
    tls_host_ip(tc, host);
    /* resume_session = 1: when this context already talked to host and the server
     * gave a session ID, the next handshake is abbreviated (no certificate, no ECDHE). */
    if (!br_ssl_client_reset(&tc->cc, tc->ip_len ? NULL : host, 1))
        return tls_error(e, br_ssl_engine_last_error(&tc->cc.eng), host);
    return 0;
}

/* ---- sessions shared by the process's connections --------------------------------------- */

void tls_sessions_init(struct tls_sessions *s)
{
    *s = (struct tls_sessions){ .mu = PTHREAD_MUTEX_INITIALIZER, .kept = PTHREAD_COND_INITIALIZER };
}

void tls_sessions_free(struct tls_sessions *s)
{
    explicit_bzero(s->slot, sizeof s->slot);
    pthread_cond_destroy(&s->kept);
    pthread_mutex_destroy(&s->mu);
}

/* host:port's slot; else, with add, a new one in place of the oldest server's (wiped). */
static struct tls_session *tls_session_at(struct tls_sessions *s, const char *host,
                                          unsigned port, int add)
{
    struct tls_session *t;

    for (int i = 0; i < TLS_SESSIONS_MAX; i++)
        if (s->slot[i].port == port && strcmp(s->slot[i].host, host) == 0)
            return &s->slot[i];
    if (!add)
        return NULL;
    t = &s->slot[s->next++ % TLS_SESSIONS_MAX];
    explicit_bzero(t, sizeof *t);
    strcpy(t->host, host);
    t->port = port;
    return t;
}

void tls_sessions_offer(struct tls_sessions *s, struct tls_client *tc, const char *host,
                        unsigned port)
{
    struct tls_session *t;
    struct timespec until;

    /* A tc serves one server for its life: a session of its own is that server's. */
    if (!s || tc->cc.eng.session.session_id_len)
        return;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += TLS_SESSIONS_WAIT_S;
    pthread_mutex_lock(&s->mu);
    while ((t = tls_session_at(s, host, port, 0)) && t->busy &&
           pthread_cond_timedwait(&s->kept, &s->mu, &until) == 0)
        continue;
    /* Only the very first handshake with a server is waited for: once one has ended, a
     * server that gave no session ID (or a failed first try) must not make every later
     * handshake go one at a time. */
    if (t && t->params.session_id_len)
        br_ssl_engine_set_session_parameters(&tc->cc.eng, &t->params);
    else if (!t)
        tls_session_at(s, host, port, 1)->busy = 1;
    pthread_mutex_unlock(&s->mu);
}

void tls_sessions_keep(struct tls_sessions *s, const struct tls_client *tc, const char *host,
                       unsigned port, int ok)
{
    struct tls_session *t;

    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    if ((t = tls_session_at(s, host, port, ok)) && ok)
        br_ssl_engine_get_session_parameters(&tc->cc.eng, &t->params);
    if (t)
        t->busy = 0;
    pthread_cond_broadcast(&s->kept);
    pthread_mutex_unlock(&s->mu);
}

/* ---- errors ------------------------------------------------------------------------------ */

static const char *tls_err_name(int err)
{
#define N(x) [BR_ERR_##x] = "BR_ERR_" #x
    static const char *const names[] = {
        N(OK),                     N(BAD_PARAM),              N(BAD_STATE),
        N(UNSUPPORTED_VERSION),    N(BAD_VERSION),            N(BAD_LENGTH),
        N(TOO_LARGE),              N(BAD_MAC),                N(NO_RANDOM),
        N(UNKNOWN_TYPE),           N(UNEXPECTED),             N(BAD_CCS),
        N(BAD_ALERT),              N(BAD_HANDSHAKE),          N(OVERSIZED_ID),
        N(BAD_CIPHER_SUITE),       N(BAD_COMPRESSION),        N(BAD_FRAGLEN),
        N(BAD_SECRENEG),           N(EXTRA_EXTENSION),        N(BAD_SNI),
        N(BAD_HELLO_DONE),         N(LIMIT_EXCEEDED),         N(BAD_FINISHED),
        N(RESUME_MISMATCH),        N(INVALID_ALGORITHM),      N(BAD_SIGNATURE),
        N(WRONG_KEY_USAGE),        N(NO_CLIENT_AUTH),         N(IO),
        N(X509_INVALID_VALUE),     N(X509_TRUNCATED),         N(X509_EMPTY_CHAIN),
        N(X509_INNER_TRUNC),       N(X509_BAD_TAG_CLASS),     N(X509_BAD_TAG_VALUE),
        N(X509_INDEFINITE_LENGTH), N(X509_EXTRA_ELEMENT),     N(X509_UNEXPECTED),
        N(X509_NOT_CONSTRUCTED),   N(X509_NOT_PRIMITIVE),     N(X509_PARTIAL_BYTE),
        N(X509_BAD_BOOLEAN),       N(X509_OVERFLOW),          N(X509_BAD_DN),
        N(X509_BAD_TIME),          N(X509_UNSUPPORTED),       N(X509_LIMIT_EXCEEDED),
        N(X509_WRONG_KEY_TYPE),    N(X509_BAD_SIGNATURE),     N(X509_TIME_UNKNOWN),
        N(X509_EXPIRED),           N(X509_DN_MISMATCH),       N(X509_BAD_SERVER_NAME),
        N(X509_CRITICAL_EXTENSION), N(X509_NOT_CA),           N(X509_FORBIDDEN_KEY_USAGE),
        N(X509_WEAK_PUBLIC_KEY),   N(X509_NOT_TRUSTED),
    };
#undef N

    if (err >= 0 && (size_t)err < sizeof names / sizeof names[0] && names[err])
        return names[err];
    return "unknown";
}

/* RFC 8446 name of a TLS alert number ("protocol_version"). The names are kept in place,
 * not as pointers into a table indexed by number: 650 bytes of binary instead of 1.4 KB. */
static const char *tls_alert_name(int alert)
{
    static const struct {
        unsigned char number;
        char name[24];
    } names[] = {
        { 0, "close_notify" },              { 10, "unexpected_message" },
        { 20, "bad_record_mac" },           { 22, "record_overflow" },
        { 40, "handshake_failure" },        { 42, "bad_certificate" },
        { 43, "unsupported_certificate" },  { 44, "certificate_revoked" },
        { 45, "certificate_expired" },      { 46, "certificate_unknown" },
        { 47, "illegal_parameter" },        { 48, "unknown_ca" },
        { 49, "access_denied" },            { 50, "decode_error" },
        { 51, "decrypt_error" },            { 70, "protocol_version" },
        { 71, "insufficient_security" },    { 80, "internal_error" },
        { 86, "inappropriate_fallback" },   { 90, "user_canceled" },
        { 100, "no_renegotiation" },        { 109, "missing_extension" },
        { 110, "unsupported_extension" },   { 112, "unrecognized_name" },
        { 116, "certificate_required" },    { 120, "no_application_protocol" },
    };

    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (names[i].number == alert)
            return names[i].name;
    return "unknown alert";
}

int tls_error(struct lerr *e, int br_err, const char *host)
{
    /* The errors a user meets and can act on say what happened; the first row whose range
     * holds br_err wins, and the last holds them all. */
    static const struct {
        int lo, hi;
        enum lerr_kind kind;
        const char *before, *after;  /* around the host */
    } said[] = {
        { BR_ERR_X509_NOT_TRUSTED, BR_ERR_X509_NOT_TRUSTED, LERR_TLS_UNTRUSTED,
          "certificate for ", " is not trusted: no known CA issued it" },
        { BR_ERR_X509_BAD_SERVER_NAME, BR_ERR_X509_BAD_SERVER_NAME, LERR_TLS_NAME,
          "certificate presented by ", " is not valid for that host" },
        { BR_ERR_X509_EXPIRED, BR_ERR_X509_EXPIRED, LERR_TLS_UNTRUSTED,
          "certificate for ", " has expired or is not yet valid" },
        { BR_ERR_UNSUPPORTED_VERSION, BR_ERR_UNSUPPORTED_VERSION, LERR_TLS,
          "TLS with ", " failed: the server does not speak TLS 1.2" },
        { BR_ERR_BAD_CIPHER_SUITE, BR_ERR_BAD_CIPHER_SUITE, LERR_TLS,
          "TLS with ", " failed: no common cipher suite" },
        { BR_ERR_X509_LIMIT_EXCEEDED, BR_ERR_X509_LIMIT_EXCEEDED, LERR_TLS,
          "TLS with ", " failed" },
        /* A certificate refused for what it says (its signature, key, usage, extensions...),
         * save one too big for BearSSL to hold (the row above). */
        { BR_ERR_X509_UNSUPPORTED, BR_ERR_X509_WEAK_PUBLIC_KEY, LERR_TLS_UNTRUSTED,
          "certificate for ", " is rejected" },
        { INT_MIN, INT_MAX, LERR_TLS, "TLS with ", " failed" },
    };
    size_t i = 0;
    int a = br_err & 0xff;  /* the alert, after BR_ERR_SEND_FATAL_ALERT or _RECV_ (512, 256) */

    if (br_err >= BR_ERR_SEND_FATAL_ALERT)
        return lerr_set(e, LERR_TLS, "TLS with %s failed: we sent alert %d (%s)", host, a,
                        tls_alert_name(a));
    if (br_err >= BR_ERR_RECV_FATAL_ALERT)
        return lerr_set(e, LERR_TLS_ALERT, "%s sent TLS alert %d (%s)", host, a, tls_alert_name(a));
    while (br_err < said[i].lo || br_err > said[i].hi)
        i++;
    return lerr_set(e, said[i].kind, "%s%s%s (BearSSL error %d: %s)", said[i].before, host,
                    said[i].after, br_err, tls_err_name(br_err));
}
