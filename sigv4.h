/*
 * sigv4.h - AWS Signature Version 4 (header signing). Pure: no I/O, no clock, no globals.
 *
 * The caller describes the request exactly as it will be sent, sigv4_sign() computes the
 * signature and hands back the headers to add (X-Amz-Date, X-Amz-Security-Token when a
 * session token is given, x-amz-content-sha256 when asked, and Authorization). SHA-256
 * and HMAC come from BearSSL. The secret key is only ever fed to HMAC, never formatted.
 */
#ifndef LAMBDO_SIGV4_H
#define LAMBDO_SIGV4_H

#include <stddef.h>
#include <time.h>
#include "err.h"

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
    const void *payload;
    size_t payload_len;
};

struct sigv4_params {
    const char *region;              /* "us-east-1" */
    const char *service;             /* "sqs" */
    const char *amz_date;            /* "YYYYMMDDTHHMMSSZ" (see sigv4_format_date) */
    int normalize_path;              /* 1 for every service but S3 */
    int add_content_sha256;          /* also sign and return x-amz-content-sha256 */
};

#define SIGV4_MAX_ADDED 4

struct sigv4_signature {
    char amz_date[17];
    char content_sha256[65];         /* hex SHA-256 of the payload */
    char authorization[2048];
    struct sigv4_header added[SIGV4_MAX_ADDED];  /* point into this struct or the inputs */
    size_t num_added;
};

/* Formats t as "YYYYMMDDTHHMMSSZ" (UTC). */
void sigv4_format_date(time_t t, char out[17]);

/* Signs the request. Headers named in added[] are included in the canonical request unless
 * the request already carries them (a request that already has X-Amz-Date is signed with
 * that date). Returns 0, or -1 with e set (LERR_INVALID, LERR_TOO_LARGE). */
int sigv4_sign(const struct sigv4_request *req, const struct sigv4_credentials *cred,
               const struct sigv4_params *p, struct sigv4_signature *out, struct lerr *e);

/* The intermediate steps, exposed for the test vectors. Each writes a NUL-terminated
 * string into buf (capacity cap) and returns its length, or -1 with e set. */
int sigv4_canonical_request(const struct sigv4_request *req, const struct sigv4_params *p,
                            char *buf, size_t cap, struct lerr *e);
int sigv4_string_to_sign(const char *canonical_request, const struct sigv4_params *p,
                         char *buf, size_t cap, struct lerr *e);
void sigv4_signing_key(const char *secret_access_key, const char *date8, const char *region,
                       const char *service, unsigned char key[32]);

#endif
