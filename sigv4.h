/*
 * sigv4.h - AWS Signature Version 4 (header signing). Pure: no I/O, no clock, no globals.
 *
 * The caller describes the request exactly as it will be sent, sigv4_sign() computes the
 * signature and hands back the headers to add (X-Amz-Date, X-Amz-Security-Token when a
 * session token is given, x-amz-content-sha256 when asked, and Authorization). SHA-256
 * and HMAC come from BearSSL. The secret key is only ever fed to HMAC and SHA-256, never
 * formatted. Nothing is allocated: the canonical request is built on the stack, at most
 * SIGV4_MAX_CANONICAL bytes (headers, path and query; the payload is hashed apart).
 * Deriving the signing key takes 4 HMACs: a caller signing many requests keeps a struct
 * sigv4_key, which sigv4_sign() reuses for as long as the day, region, service and secret
 * stay the same.
 * Owns the canonical form, the string to sign and the keys. Not: the clock (the caller
 * gives the date), where credentials come from, sending the request.
 *
 * Canonical form, as the AWS test vectors and the AWS SDKs have it:
 *  - path: with normalize_path, empty and "." segments are dropped, ".." removes the
 *    segment before it, a leading and a trailing '/' are kept (botocore and the JS SDK do
 *    the same), and every byte but A-Z a-z 0-9 - _ . ~ of each segment is %XX-encoded.
 *    The path given is the one sent, already encoded, so this is AWS's "double encoding"
 *    ("%20" is signed as "%2520"). Without normalize_path (S3) it is signed as given.
 *    An empty or NULL path is "/".
 *  - query: split on '&' (empty pieces ignored) and the first '='; a piece without '='
 *    has an empty value. Keys and values are percent-decoded ('+' is a plus, a '%' not
 *    followed by two hex digits a literal '%'), re-encoded as above and sorted by key,
 *    then value.
 *  - headers: names lowercased and sorted; values trimmed, runs of spaces, tabs and line
 *    breaks folded to one space; a repeated name's values joined with ',' in the order
 *    given. Not signed, as in the AWS JS SDK: Authorization, Cache-Control, Connection,
 *    Expect, From, Keep-Alive, Max-Forwards, Pragma, Referer, TE, Trailer,
 *    Transfer-Encoding, Upgrade, User-Agent, X-Amzn-Trace-Id, Proxy-*, Sec-* (hop-by-hop
 *    or rewritten in flight).
 *  - payload hash: the request's own x-amz-content-sha256 value when it carries one
 *    (UNSIGNED-PAYLOAD...), else the SHA-256 of the payload.
 */
#ifndef LAMBDO_SIGV4_H
#define LAMBDO_SIGV4_H

#include <stddef.h>
#include <time.h>
#include <bearssl_hmac.h>
#include "err.h"

#define SIGV4_MAX_NAME 64       /* region, service: real ones are under 32 characters */
#define SIGV4_MAX_HEADERS 64    /* signed headers of one request, added ones included */
#define SIGV4_MAX_CANONICAL 16384 /* the canonical request without the payload: an SQS one
                                     is about 400 bytes */

struct sigv4_header {
    const char *name;
    const char *value;
};

struct sigv4_credentials {
    const char *access_key_id;
    const char *secret_access_key;
    const char *session_token;      /* NULL when there is none */
};

struct sigv4_request {
    const char *method;
    const char *path;                /* raw path as sent, without the query; "/" for SQS */
    const char *query;               /* raw query without '?', or NULL */
    const struct sigv4_header *headers;  /* as sent; must include Host */
    size_t num_headers;
    const void *payload;             /* may be NULL when payload_len is 0 */
    size_t payload_len;
};

/* The signing key of one day, region and service, and which of them and which secret it
 * came from (the SHA-256 of "YYYYMMDD/region/service/aws4_request" + secret: the secret
 * itself is not kept). Zeroed to start. Like the signing it serves, one thread at a time.
 * It is as good as the secret for that day: never log or copy it out. */
struct sigv4_key {
    unsigned char scope_secret_hash[32];
    br_hmac_key_context hmac;                  /* the key, ready for HMAC-SHA256 */
};

struct sigv4_params {
    const char *region;              /* "us-east-1" */
    const char *service;             /* "sqs" */
    const char *amz_date;            /* "YYYYMMDDTHHMMSSZ" (see sigv4_format_date); may be
                                        NULL when the request carries X-Amz-Date */
    int normalize_path;              /* 1 for every service but S3 */
    int add_content_sha256;          /* also sign and return x-amz-content-sha256 */
    struct sigv4_key *key;           /* NULL (derive the key every time), or a cache that
                                        sigv4_sign() uses and refreshes */
};

#define SIGV4_MAX_ADDED 4

struct sigv4_signature {
    char amz_date[17];
    char content_sha256[65];         /* hex SHA-256 of the payload (also when the request
                                        carries its own x-amz-content-sha256) */
    char authorization[2048];
    struct sigv4_header added[SIGV4_MAX_ADDED];  /* point into this struct or the inputs */
    size_t num_added;
};

/* Formats t as "YYYYMMDDTHHMMSSZ" (UTC). A time outside years 0-9999 (a broken clock)
 * gives "00000000T000000Z", which AWS refuses visibly. */
void sigv4_format_date(time_t t, char out[17]);

/* Signs the request. Headers named in added[] are included in the canonical request unless
 * the request already carries them (a request that already has X-Amz-Date is signed with
 * that date). added[] lists X-Amz-Date, X-Amz-Security-Token, x-amz-content-sha256 (those
 * added) and Authorization, in that order. req, p and out are the caller's and never NULL
 * (nor headers, nor payload when payload_len is not 0). Returns 0, or -1 with e set: LERR_INVALID
 * (no Host, a malformed header name, date, region, service or access key id, a control
 * byte in the session token), LERR_TOO_LARGE (more than SIGV4_MAX_HEADERS signed headers,
 * a canonical request longer than SIGV4_MAX_CANONICAL - 1 bytes, or a list of signed
 * headers that does not fit in authorization); then out->num_added is 0. */
int sigv4_sign(const struct sigv4_request *req, const struct sigv4_credentials *cred,
               const struct sigv4_params *p, struct sigv4_signature *out, struct lerr *e);

/* The intermediate steps, exposed for the test vectors. Each writes a NUL-terminated
 * string into buf (capacity cap) and returns its length, or -1 with e set (LERR_TOO_LARGE
 * when cap is too small, saying so; nothing is written past cap).
 * sigv4_canonical_request() adds X-Amz-Date and x-amz-content-sha256 as sigv4_sign()
 * would, but knows no session token: give it the request with sigv4_sign()'s added[]
 * headers (Authorization aside) on it to get exactly what was signed.
 * sigv4_string_to_sign() uses p->amz_date, which must then be sigv4_sign()'s out->amz_date.
 * sigv4_signing_key() uses the first 8 characters of date8, so amz_date may be passed. */
int sigv4_canonical_request(const struct sigv4_request *req, const struct sigv4_params *p,
                            char *buf, size_t cap, struct lerr *e);
int sigv4_string_to_sign(const char *canonical_request, const struct sigv4_params *p,
                         char *buf, size_t cap, struct lerr *e);
void sigv4_signing_key(const char *secret_access_key, const char *date8, const char *region,
                       const char *service, unsigned char key[32]);

#endif
