/*
 * libFuzzer target for the CA bundle loader of tls.c (tls_anchors_load): PEM scanning,
 * in-place base64 and the small DER reader that turns certificates into trust anchors.
 * tls.c only loads from a path, so every input goes through a memfd and /proc/self/fd/N.
 *
 * Two kinds of input, told apart by their content:
 *   - one containing "-----BEGIN ": a PEM bundle, loaded exactly as given;
 *   - anything else: ONE certificate in DER, which the fuzzer wraps in a PEM block itself
 *     (BearSSL's br_pem_encode), so that mutations reach the DER reader directly instead
 *     of having to survive base64 first.
 *
 * Checks, beyond "no crash" under ASan and UBSan (abort on failure):
 *   - a failed load reports LERR_INVALID or LERR_NOMEM with a message, and leaves ta empty;
 *   - a successful load has 1 <= count <= the number of BEGIN lines with a label tls.c
 *     takes ("CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE");
 *   - every anchor: key type RSA or EC, only the CA flag, a known curve, non-empty DN and
 *     key parts lying inside the arena allocation and not overlapping each other, the DN a
 *     whole DER SEQUENCE (header length = dn.len), RSA integers without leading zeros;
 *   - differential, for every certificate (the DER of the second kind of input, and each
 *     certificate object BearSSL's own br_pem_decoder finds in the first): where both
 *     tls.c and br_x509_decoder accept it, same DN bytes, same key type, same modulus and
 *     exponent (leading zeros aside) or same curve and point, and tls.c never calls CA a
 *     certificate BearSSL does not;
 *   - for one input in 16 whose certificate tls.c accepts, 260 copies of it in one bundle
 *     give 260 anchors identical to the single one.
 *
 * Where the two disagree on whether a certificate is usable at all, that is a leniency (or
 * strictness) of tls.c, not memory unsafety: it is reported, not aborted on. So are the
 * differences of the PEM layers (tls.c finds BEGIN mid-line, refuses a whole bundle for one
 * bad block...). With FUZZ_TLS_FINDINGS=dir in the environment, the first example of each
 * kind is written there and named on stderr:
 *   lenient-<BearSSL error>.der  tls.c makes an anchor, br_x509_decoder refuses the DER
 *   strict.der                   br_x509_decoder accepts, tls.c skips the certificate
 *   ca-dropped.der               BearSSL says CA, tls.c does not (narrower trust)
 *   pem-layer.pem                the whole bundle's anchors are not those of the
 *                                certificates br_pem_decoder finds, one by one
 *   pem-refused.pem              tls.c refuses the bundle, br_pem_decoder finds usable
 *                                certificates in it
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "tls.h"

/* The size of the arena allocation: exact under ASan (which the fuzz build always has),
 * at least that size otherwise. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#include <sanitizer/allocator_interface.h>
#define allocated_size(p) __sanitizer_get_allocated_size(p)
#endif
#endif
#ifndef allocated_size
#include <malloc.h>
#define allocated_size(p) malloc_usable_size(p)
#endif

#define COPIES 260

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_tls: invariant broken: %s\n", what);
        abort();
    }
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    check(p != NULL, "malloc");
    return p;
}

/* ---- loading through a memfd ------------------------------------------------------------ */

static int load(const void *buf, size_t len, struct tls_anchors *ta, struct lerr *e)
{
    char path[64];
    const unsigned char *p = buf;
    int fd = memfd_create("fuzz_tls", MFD_CLOEXEC), rc;

    check(fd >= 0, "memfd_create");
    for (size_t off = 0; off < len;) {
        ssize_t n = write(fd, p + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        check(n > 0, "write to memfd");
        off += (size_t)n;
    }
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    lerr_clear(e);
    rc = tls_anchors_load(ta, path, e);
    close(fd);
    if (rc < 0) {
        check(rc == -1, "load returns 0 or -1");
        check(e->kind == LERR_INVALID || e->kind == LERR_NOMEM, "error kind of a bad bundle");
        check(e->msg[0] != '\0' && strstr(e->msg, path) != NULL, "error message names file");
        check(ta->anchors == NULL && ta->arena == NULL && ta->count == 0, "ta empty on error");
    } else {
        check(rc == 0, "load returns 0 or -1");
    }
    return rc;
}

/* PEM text of one DER object, as BearSSL writes it. */
static char *pem_of(const unsigned char *der, size_t len, size_t *out_len)
{
    size_t n = br_pem_encode(NULL, der, len, "CERTIFICATE", BR_PEM_LINE64);
    char *pem = xmalloc(n + 1);

    check(br_pem_encode(pem, der, len, "CERTIFICATE", BR_PEM_LINE64) == n, "pem encode");
    *out_len = n;
    return pem;
}

/* ---- invariants of a loaded set ---------------------------------------------------------- */

struct span {
    const unsigned char *p;
    size_t len;
};

static int span_cmp(const void *a, const void *b)
{
    const struct span *x = a, *y = b;
    return x->p < y->p ? -1 : x->p > y->p;
}

/* The length a DER header announces, header included; 0 if the header is not DER-like. */
static size_t der_total(const unsigned char *p, size_t len)
{
    size_t n, v = 0;

    if (len < 2)
        return 0;
    if (p[1] < 0x80)
        return 2 + (size_t)p[1];
    n = p[1] & 0x7f;
    if (n == 0 || n > 4 || len < 2 + n)
        return 0;
    for (size_t i = 0; i < n; i++)
        v = v << 8 | p[2 + i];
    return 2 + n + v;
}

static void check_set(const struct tls_anchors *ta, size_t max_count)
{
    size_t arena_size, nspans = 0;
    struct span *spans;

    check(ta->count >= 1, "a loaded bundle has an anchor");
    check(ta->count <= max_count, "no more anchors than certificate BEGIN lines");
    check(ta->anchors != NULL && ta->arena != NULL, "anchors and arena allocated");
    arena_size = allocated_size(ta->arena);
    spans = xmalloc(3 * ta->count * sizeof *spans);
    for (size_t i = 0; i < ta->count; i++) {
        const br_x509_trust_anchor *a = &ta->anchors[i];
        const br_x509_pkey *k = &a->pkey;

        check((a->flags & ~(unsigned)BR_X509_TA_CA) == 0, "only the CA flag");
        check(a->dn.len > 0, "DN not empty");
        check(a->dn.data[0] == 0x30 && der_total(a->dn.data, a->dn.len) == a->dn.len,
              "DN is one whole DER SEQUENCE");
        spans[nspans++] = (struct span){ a->dn.data, a->dn.len };
        if (k->key_type == BR_KEYTYPE_RSA) {
            check(k->key.rsa.nlen > 0 && k->key.rsa.elen > 0, "RSA n and e not empty");
            check(k->key.rsa.nlen == 1 || k->key.rsa.n[0] != 0, "RSA n without leading zero");
            check(k->key.rsa.elen == 1 || k->key.rsa.e[0] != 0, "RSA e without leading zero");
            spans[nspans++] = (struct span){ k->key.rsa.n, k->key.rsa.nlen };
            spans[nspans++] = (struct span){ k->key.rsa.e, k->key.rsa.elen };
        } else {
            check(k->key_type == BR_KEYTYPE_EC, "key type RSA or EC");
            check(k->key.ec.curve == BR_EC_secp256r1 || k->key.ec.curve == BR_EC_secp384r1 ||
                      k->key.ec.curve == BR_EC_secp521r1,
                  "EC curve P-256, P-384 or P-521");
            check(k->key.ec.qlen > 0, "EC point not empty");
            spans[nspans++] = (struct span){ k->key.ec.q, k->key.ec.qlen };
        }
    }
    /* Every part inside the one arena block, and no two parts overlapping. */
    qsort(spans, nspans, sizeof *spans, span_cmp);
    for (size_t i = 0; i < nspans; i++) {
        check(spans[i].p >= ta->arena && spans[i].len <= arena_size &&
                  (size_t)(spans[i].p - ta->arena) <= arena_size - spans[i].len,
              "anchor bytes inside the arena");
        check(i == 0 || spans[i - 1].p + spans[i - 1].len <= spans[i].p,
              "anchor parts do not overlap");
    }
    free(spans);
}

static int same(const unsigned char *a, size_t alen, const unsigned char *b, size_t blen)
{
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

/* An unsigned big-endian integer without its leading zeros (zero itself becomes empty). */
static struct span strip(const unsigned char *p, size_t len)
{
    while (len > 0 && p[0] == 0) {
        p++;
        len--;
    }
    return (struct span){ p, len };
}

static int same_int(const unsigned char *a, size_t alen, const unsigned char *b, size_t blen)
{
    struct span x = strip(a, alen), y = strip(b, blen);
    return same(x.p, x.len, y.p, y.len);
}

static int same_anchor(const br_x509_trust_anchor *a, const br_x509_trust_anchor *b)
{
    if (a->flags != b->flags || a->pkey.key_type != b->pkey.key_type ||
        !same(a->dn.data, a->dn.len, b->dn.data, b->dn.len))
        return 0;
    if (a->pkey.key_type == BR_KEYTYPE_RSA)
        return same(a->pkey.key.rsa.n, a->pkey.key.rsa.nlen, b->pkey.key.rsa.n,
                    b->pkey.key.rsa.nlen) &&
               same(a->pkey.key.rsa.e, a->pkey.key.rsa.elen, b->pkey.key.rsa.e,
                    b->pkey.key.rsa.elen);
    return a->pkey.key.ec.curve == b->pkey.key.ec.curve &&
           same(a->pkey.key.ec.q, a->pkey.key.ec.qlen, b->pkey.key.ec.q, b->pkey.key.ec.qlen);
}

/* ---- findings that are reported, not aborted on ------------------------------------------ */

static const char *x509_err_name(int err)
{
    static const char *const names[] = {
        "OK", "INVALID_VALUE", "TRUNCATED", "EMPTY_CHAIN", "INNER_TRUNC", "BAD_TAG_CLASS",
        "BAD_TAG_VALUE", "INDEFINITE_LENGTH", "EXTRA_ELEMENT", "UNEXPECTED", "NOT_CONSTRUCTED",
        "NOT_PRIMITIVE", "PARTIAL_BYTE", "BAD_BOOLEAN", "OVERFLOW", "BAD_DN", "BAD_TIME",
        "UNSUPPORTED", "LIMIT_EXCEEDED",
    };
    int i = err - BR_ERR_X509_OK;
    return i >= 0 && (size_t)i < sizeof names / sizeof names[0] ? names[i] : "OTHER";
}

static void finding(const char *kind, const char *ext, const void *p, size_t len)
{
    static char seen[64][48];
    static size_t nseen;
    const char *dir = getenv("FUZZ_TLS_FINDINGS");
    char path[512];
    FILE *f;

    if (!dir)
        return;
    for (size_t i = 0; i < nseen; i++)
        if (strcmp(seen[i], kind) == 0)
            return;
    if (nseen < 64)
        snprintf(seen[nseen++], sizeof seen[0], "%s", kind);
    snprintf(path, sizeof path, "%s/%s.%s", dir, kind, ext);
    f = fopen(path, "wb");
    if (f) {
        fwrite(p, 1, len, f);
        fclose(f);
    }
    fprintf(stderr, "fuzz_tls: finding %s (%zu bytes): %s\n", kind, len, path);
}

/* ---- one certificate: tls.c against br_x509_decoder ------------------------------------- */

struct ref {
    br_x509_decoder_context x509;
    unsigned char *dn;
    size_t dn_len;
};

static void ref_dn(void *ctx, const void *buf, size_t len)
{
    struct ref *r = ctx;
    memcpy(r->dn + r->dn_len, buf, len);  /* dn has room for the whole certificate */
    r->dn_len += len;
}

/* Loads der alone with tls.c (0 or 1 anchor, kept in *ta on success) and compares with
 * BearSSL's decoder. Returns the load's result. */
static int check_cert(const unsigned char *der, size_t len, struct tls_anchors *ta)
{
    static struct ref r;
    struct lerr e;
    size_t pem_len;
    char *pem = pem_of(der, len, &pem_len);
    int rc = load(pem, pem_len, ta, &e);
    const br_x509_pkey *pk;
    const br_x509_trust_anchor *a = rc == 0 ? &ta->anchors[0] : NULL;
    char kind[48];

    free(pem);
    if (rc == 0)
        check_set(ta, 1);
    else
        check(e.kind == LERR_INVALID, "one certificate: only 'no usable certificate'");

    r.dn = xmalloc(len);
    r.dn_len = 0;
    br_x509_decoder_init(&r.x509, ref_dn, &r);
    br_x509_decoder_push(&r.x509, der, len);
    pk = br_x509_decoder_get_pkey(&r.x509);

    if (a && pk) {
        check(same(r.dn, r.dn_len, a->dn.data, a->dn.len), "same DN as BearSSL");
        check(pk->key_type == a->pkey.key_type, "same key type as BearSSL");
        if (pk->key_type == BR_KEYTYPE_RSA) {
            check(same_int(pk->key.rsa.n, pk->key.rsa.nlen, a->pkey.key.rsa.n,
                           a->pkey.key.rsa.nlen),
                  "same RSA modulus as BearSSL");
            check(same_int(pk->key.rsa.e, pk->key.rsa.elen, a->pkey.key.rsa.e,
                           a->pkey.key.rsa.elen),
                  "same RSA exponent as BearSSL");
        } else {
            check(pk->key.ec.curve == a->pkey.key.ec.curve, "same curve as BearSSL");
            check(same(pk->key.ec.q, pk->key.ec.qlen, a->pkey.key.ec.q, a->pkey.key.ec.qlen),
                  "same EC point as BearSSL");
        }
        /* Calling CA what BearSSL does not would widen trust: a bug. The reverse only
         * narrows it (seen with a repeated basicConstraints). */
        if (a->flags & BR_X509_TA_CA)
            check(br_x509_decoder_isCA(&r.x509), "CA only where BearSSL says CA");
        else if (br_x509_decoder_isCA(&r.x509))
            finding("ca-dropped", "der", der, len);
    } else if (a) {
        int err = br_x509_decoder_last_error(&r.x509);
        snprintf(kind, sizeof kind, "lenient-%s", x509_err_name(err));
        finding(kind, "der", der, len);
    } else if (pk) {
        finding("strict", "der", der, len);
    }
    free(r.dn);
    return rc;
}

/* 260 copies of a certificate tls.c accepts: the same anchor 260 times. */
static void check_copies(const unsigned char *der, size_t len, const br_x509_trust_anchor *one)
{
    struct tls_anchors ta;
    struct lerr e;
    size_t pem_len;
    char *pem = pem_of(der, len, &pem_len), *all = xmalloc(COPIES * pem_len);

    for (size_t i = 0; i < COPIES; i++)
        memcpy(all + i * pem_len, pem, pem_len);
    check(load(all, COPIES * pem_len, &ta, &e) == 0, "copies load");
    check(ta.count == COPIES, "one anchor per copy");
    check_set(&ta, COPIES);
    for (size_t i = 0; i < COPIES; i++)
        check(same_anchor(&ta.anchors[i], one), "every copy the same anchor");
    tls_anchors_free(&ta);
    free(all);
    free(pem);
}

/* ---- a PEM bundle --------------------------------------------------------------------------- */

static size_t count_str(const uint8_t *p, size_t len, const char *s)
{
    size_t n = 0, sl = strlen(s);

    for (const uint8_t *q = p, *end = p + len; q < end;) {
        const uint8_t *hit = memmem(q, (size_t)(end - q), s, sl);
        if (!hit)
            break;
        n++;
        q = hit + 1;
    }
    return n;
}

struct objects {
    unsigned char *der;  /* the object being decoded */
    size_t len, cap;
    int in_cert;
};

static void obj_append(void *ctx, const void *buf, size_t len)
{
    struct objects *o = ctx;

    if (o->len + len > o->cap) {
        o->cap = (o->len + len) * 2;
        o->der = realloc(o->der, o->cap);
        check(o->der != NULL, "realloc");
    }
    memcpy(o->der + o->len, buf, len);
    o->len += len;
}

static void check_bundle(const uint8_t *data, size_t size)
{
    struct tls_anchors whole, *each = NULL;
    struct lerr e;
    size_t markers = count_str(data, size, "-----BEGIN CERTIFICATE-----") +
                     count_str(data, size, "-----BEGIN X509 CERTIFICATE-----") +
                     count_str(data, size, "-----BEGIN TRUSTED CERTIFICATE-----");
    size_t neach = 0, cap = markers + 1, total = 0;
    struct objects o = { 0 };
    br_pem_decoder_context pem;
    int rc = load(data, size, &whole, &e);

    if (rc == 0)
        check_set(&whole, markers);

    /* Every certificate object BearSSL's PEM decoder sees, checked on its own. */
    br_pem_decoder_init(&pem);
    each = xmalloc(cap * sizeof *each);
    for (const uint8_t *p = data, *end = data + size; p < end || o.in_cert;) {
        size_t n = br_pem_decoder_push(&pem, p, (size_t)(end - p));
        p += n;
        switch (br_pem_decoder_event(&pem)) {
        case BR_PEM_BEGIN_OBJ: {
            const char *name = br_pem_decoder_name(&pem);
            o.in_cert = strcmp(name, "CERTIFICATE") == 0 ||
                        strcmp(name, "X509 CERTIFICATE") == 0 ||
                        strcmp(name, "TRUSTED CERTIFICATE") == 0;
            o.len = 0;
            br_pem_decoder_setdest(&pem, o.in_cert ? obj_append : NULL, &o);
            break;
        }
        case BR_PEM_END_OBJ:
            if (o.in_cert) {
                struct tls_anchors one;
                if (check_cert(o.der, o.len, &one) == 0) {
                    if (neach == cap) {  /* BearSSL takes labels tls.c does not */
                        cap *= 2;
                        each = realloc(each, cap * sizeof *each);
                        check(each != NULL, "realloc");
                    }
                    each[neach++] = one;
                    total += one.count;
                }
            }
            o.in_cert = 0;
            break;
        case BR_PEM_ERROR:
            o.in_cert = 0;
            break;
        default:
            if (n == 0)  /* input used up, no event: an object cut short */
                o.in_cert = 0;
            break;
        }
    }

    /* The whole bundle against its parts: the PEM layers of tls.c and BearSSL differ (BEGIN
     * mid-line, case of the label, base64 details...), so a difference is only reported. */
    if (rc == 0) {
        int same_set = whole.count == total;
        for (size_t i = 0, k = 0; same_set && i < neach; i++)
            for (size_t j = 0; same_set && j < each[i].count; j++, k++)
                same_set = same_anchor(&whole.anchors[k], &each[i].anchors[j]);
        if (!same_set)
            finding("pem-layer", "pem", data, size);
        tls_anchors_free(&whole);
    } else if (total > 0) {
        finding("pem-refused", "pem", data, size);
    }
    for (size_t i = 0; i < neach; i++)
        tls_anchors_free(&each[i]);
    free(each);
    free(o.der);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char begin[] = "-----BEGIN ";

    if (memmem(data, size, begin, sizeof begin - 1)) {
        check_bundle(data, size);
    } else {
        struct tls_anchors ta;
        uint32_t h = 2166136261u;

        if (check_cert(data, size, &ta) == 0) {
            for (size_t i = 0; i < size; i++)
                h = (h ^ data[i]) * 16777619u;
            if ((h & 15) == 0)
                check_copies(data, size, &ta.anchors[0]);
            tls_anchors_free(&ta);
        }
    }
    return 0;
}
