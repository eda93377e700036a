/*
 * creds.h - AWS credentials, found in the order of the AWS SDKs' default chain:
 *
 *  1. the environment: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (both or neither),
 *     AWS_SESSION_TOKEN optional;
 *  2. web identity: AWS_ROLE_ARN with AWS_WEB_IDENTITY_TOKEN_FILE (AWS_ROLE_SESSION_NAME
 *     optional, else "lambdo-<16 hex>"), exchanged for temporary credentials with STS
 *     AssumeRoleWithWebIdentity, an unsigned Query API call to
 *     https://sts.<region>.amazonaws.com/ (AWS_ENDPOINT_URL_STS, else AWS_ENDPOINT_URL,
 *     overrides it, as in the SDKs). The token file is read again at every exchange. When
 *     it is missing or its token (a JWT) has expired and the Fly API socket exists
 *     (/.fly/api inside a Fly Machine; LAMBDO_FLY_API_SOCKET overrides the path), a fresh
 *     token comes from POST /v1/tokens/oidc over that socket, audience sts.amazonaws.com.
 *     Inside a Fly Machine AWS_ROLE_ARN alone is enough: Fly's init sets the rest;
 *  3. the shared files: ~/.aws/credentials, then ~/.aws/config (AWS_SHARED_CREDENTIALS_FILE,
 *     AWS_CONFIG_FILE; "~/" is $HOME), profile AWS_PROFILE or "default" ([NAME] in the
 *     credentials file, [profile NAME] or [default] in the config file); static keys only
 *     (aws_access_key_id, aws_secret_access_key, aws_session_token). A profile set in the
 *     credentials file wins over the same profile in the config file as a whole.
 * The config file's `region` for the profile is read whatever the source, for callers that
 * have no AWS_REGION.
 *
 * Configuration errors (half a key pair, a named profile that does not exist, a malformed
 * file, no credentials anywhere) and the first STS exchange happen in creds_init, so they
 * show at start-up. Temporary credentials are refreshed before they expire: once less than
 * max(a quarter of their lifetime, min(5 minutes, half their lifetime)) remains, by the
 * first thread that asks; the others keep using the current credentials meanwhile (or
 * wait, when those have expired). A failed refresh while the current credentials are
 * still valid logs a warning, and is tried again CREDS_RETRY_S (or CREDS_RETRY_SOON_S
 * close to expiry) later; once they have expired, creds_get fails.
 *
 * Thread safety: creds_get may be called from any number of threads; each caller gets its
 * own copy. Secrets (keys, session tokens, web identity tokens) are never logged, put in an
 * error message or an argv; buffers that held them are wiped.
 *
 * The parsers (STS's XML answer, ISO 8601 times, a JWT's exp claim, the INI files) are
 * pure and exposed for the unit tests and the fuzzer.
 *
 * Not here: signing requests with the credentials (sigv4.c), HTTP and TLS for the STS call
 * (http.c), the HTTP answer of the Fly socket (httpresp.c), the configuration (config.c;
 * config_value reads a variable), reading a file whole (text.c).
 */
#ifndef LAMBDO_CREDS_H
#define LAMBDO_CREDS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include "config.h"
#include "err.h"
#include "sigv4.h"
#include "tls.h"
#include "url.h"

#define CREDS_KEY_ID_MAX 128          /* buffer sizes, NUL included */
#define CREDS_SECRET_MAX 128
#define CREDS_TOKEN_MAX 8192          /* STS does not bound its session tokens; ~1 KB seen */
#define CREDS_WEB_TOKEN_MAX 20000     /* STS's limit for WebIdentityToken */
#define CREDS_REGION_MAX 64
#define CREDS_SOURCE_NAME_MAX 2200
#define CREDS_FILE_MAX (1024 * 1024)  /* larger shared files are refused */

#define CREDS_DEFAULT_FLY_SOCKET "/.fly/api"
#define CREDS_STS_DURATION_S 3600     /* DurationSeconds asked of STS */
#define CREDS_STS_ATTEMPTS 3          /* per exchange: 5xx, throttling, connection errors */
#define CREDS_RETRY_S 30              /* after a failed refresh, while plenty of time remains */
#define CREDS_RETRY_SOON_S 5          /* ... with 2 minutes or less left, or expired */
#define CREDS_EXPIRY_SKEW_S 30        /* credentials this close to expiry count as expired:
                                         a request signed now must still arrive in time */
#define CREDS_TOKEN_EXP_MARGIN_S 60   /* a web identity token this close to its exp is
                                         replaced from the Fly socket when there is one */

/* One copy of the credentials, owned by the caller. Wipe it with creds_snapshot_wipe.
 * The session token comes last: creds_get copies, and creds_snapshot_wipe wipes, up to its
 * NUL (most of its 8 KB is unused, and every SQS request takes a copy); every writer
 * leaves only zeros or nothing at all past it. */
struct creds_snapshot {
    char access_key_id[CREDS_KEY_ID_MAX];
    char secret_access_key[CREDS_SECRET_MAX];
    int64_t expiration;                   /* Unix time; 0: does not expire */
    char session_token[CREDS_TOKEN_MAX];  /* "" when there is none */
};

/* For the tests: a clock (Unix seconds) and a replacement for the STS exchange, which
 * gets the web identity token as read from the file or the Fly socket. */
struct creds_hooks {
    int64_t (*now)(void *ctx);   /* NULL: time() */
    int (*exchange)(void *ctx, const char *web_token, struct creds_snapshot *out,
                    struct lerr *e);  /* NULL: the real STS call */
    void *ctx;
};

/* Caller-allocated (about 22 KB); source_name may be read, the rest is private to creds.c. */
struct creds_provider {
    /* "" until creds_init succeeds, then "environment", "web identity (role
     * arn:aws:iam::123456789012:role/x)" or "shared file profile default
     * (/root/.aws/credentials)": never a secret, for the start-up log line */
    char source_name[CREDS_SOURCE_NAME_MAX];
    struct creds_hooks hooks;

    /* web identity: fixed after creds_init */
    char role_arn[2048];                  /* "" for static keys (nothing to refresh) */
    char session_name[65];
    char token_file[4096];                /* "" when only the Fly socket is used */
    char fly_socket[108];                 /* sockaddr_un.sun_path */
    struct url sts;
    const struct tls_anchors *anchors;    /* not owned */

    pthread_mutex_t mu;                   /* guards what follows */
    pthread_cond_t refreshed;             /* a refresh ended */
    int refreshing;                       /* a thread is refreshing (outside the lock) */
    struct creds_snapshot cur;
    int64_t refresh_at;                   /* refresh from then on (temporary only) */
    int64_t retry_at;                     /* after a failed refresh: not again before */
    struct lerr last_error;               /* why the last refresh failed */
    unsigned long exchanges;              /* successful fetches, the first included */
};

/* Finds the credentials as above, reading variables through get (getenv in lambdo), and
 * loads them once. region names the STS endpoint (sts.<region>.amazonaws.com): pass
 * AWS_REGION's value, or NULL for the config file's region, else the global endpoint.
 * anchors: for an https STS endpoint (not owned, must outlive p; may be NULL otherwise).
 * Returns 0, or -1 with e set: LERR_INVALID for configuration errors (the message names
 * the variable, file or profile), else what the STS exchange or the Fly socket said
 * ("STS AssumeRoleWithWebIdentity failed: InvalidIdentityToken: ... (HTTP 400)").
 * After a failure there is nothing to free. */
#define creds_init(p, get, ctx, region, anchors, e) \
    creds_init_hooks(p, get, ctx, region, anchors, NULL, e)
/* The same with test hooks (copied; hooks may be NULL). */
int creds_init_hooks(struct creds_provider *p, config_getenv_fn get, void *ctx,
                     const char *region, const struct tls_anchors *anchors,
                     const struct creds_hooks *hooks, struct lerr *e);
/* The config file's region for the profile, read the same way, for configuration code
 * that needs a region before the provider exists (AWS_REGION unset, and a queue URL that
 * names none). Returns 1 with out set, 0 when there is none (no file, no such profile, no
 * region), or -1 with e set when the file cannot be read or parsed, or the region does
 * not fit in cap. Reads files only; no network. */
int creds_config_region(config_getenv_fn get, void *ctx, char *out, size_t cap, struct lerr *e);

/* Copies the current credentials into *out, refreshing them first when due (see above).
 * Returns 0, or -1 with e set when they have expired and cannot be refreshed (the STS or
 * Fly socket error, prefixed with "AWS credentials expired at <time>"). Thread-safe. */
int creds_get(struct creds_provider *p, struct creds_snapshot *out, struct lerr *e);

/* Points out's strings at s (valid while s is); session_token NULL when s has none. */
void creds_sigv4(const struct creds_snapshot *s, struct sigv4_credentials *out);

void creds_snapshot_wipe(struct creds_snapshot *s);

/* Wipes the credentials and destroys the lock. */
void creds_free(struct creds_provider *p);

/* --- pure parts, for the tests and the fuzzer ----------------------------------------- */

/* What an STS Query API answer said. */
struct creds_sts_answer {
    int is_error;                 /* an ErrorResponse */
    char error_code[64];          /* "InvalidIdentityToken" (cut to fit) */
    char error_message[256];      /* STS's text, cut to fit; "" when absent */
    struct creds_snapshot creds;  /* when !is_error: every field, Expiration included */
};

/* Parses an AssumeRoleWithWebIdentityResponse (the values at .../
 * AssumeRoleWithWebIdentityResult/Credentials/{AccessKeyId,SecretAccessKey,SessionToken,
 * Expiration}; elements of those names elsewhere are ignored) or an ErrorResponse
 * (Error/Code, Error/Message). The XML accepted is a strict subset: an optional XML
 * declaration, elements with attributes, text, the five named entities and numeric
 * character references, CDATA, comments; no DOCTYPE, no other processing instruction,
 * no text beside child elements, at most 16 levels (their names 1 KB in all), text of at
 * most 8192 bytes.
 * Returns 0, or -1 with e set (LERR_MALFORMED, LERR_TOO_LARGE) naming what is wrong:
 * malformed XML, an unexpected root element, a missing, repeated, empty or unusable
 * field. Messages never quote a secret. */
int creds_sts_parse(const char *xml, size_t len, struct creds_sts_answer *out, struct lerr *e);

/* "2026-11-27T21:00:00Z", fractions of a second and a "+hh:mm"/"-hh:mm" offset allowed,
 * to Unix time. Returns 0 or -1 (LERR_INVALID). */
int creds_parse_time(const char *s, size_t len, int64_t *out, struct lerr *e);

/* The exp claim of a JWT (header.payload.signature, base64url payload with or without
 * padding). Returns 0, or -1 (LERR_INVALID) when token is not a JWT or has no numeric exp. */
int creds_jwt_exp(const char *token, size_t len, int64_t *exp, struct lerr *e);

/* The INI dialect of the AWS shared files, over a buffer: lines end in LF or CRLF;
 * "[section]" (name trimmed); "key = value" (both trimmed; a ';' or '#' after whitespace
 * starts a comment); whole-line comments with '#' or ';'; blank lines. An indented line
 * after a key with an empty value is a sub-setting ("s3 =" then "  max_concurrent_requests
 * = 10"): skipped. fn gets each setting in order (duplicates included: the consumer lets
 * later ones win) and may stop the parse by returning -1 with e set. Returns 0, or -1 with
 * e set (LERR_MALFORMED "line N: ...", never quoting the line). */
typedef int (*creds_ini_fn)(void *ctx, const char *section, size_t section_len,
                            const char *key, size_t key_len, const char *value,
                            size_t value_len, struct lerr *e);
int creds_ini_parse(const char *buf, size_t len, creds_ini_fn fn, void *ctx, struct lerr *e);

/* One profile of one shared file: keys compared case-insensitively, later settings and
 * sections win. */
#define CREDS_HAVE_KEY_ID  0x1u
#define CREDS_HAVE_SECRET  0x2u
#define CREDS_HAVE_TOKEN   0x4u
#define CREDS_HAVE_REGION  0x8u
#define CREDS_HAVE_OTHER   0x10u  /* role_arn, sso_*, credential_process...: unsupported */
struct creds_profile {
    int found;                    /* the profile's section is in the file */
    unsigned have;                /* CREDS_HAVE_*, for non-empty values */
    struct creds_snapshot creds;  /* expiration 0: static keys */
    char region[CREDS_REGION_MAX];
};

/* config_file: sections are "[profile NAME]" or "[default]" (the config file), else
 * "[NAME]" (the credentials file). Returns 0, or -1 with e set: the INI errors above, or
 * LERR_INVALID "profile P: KEY ..." for a value too long or holding spaces or control
 * characters, or a region that is not a region name. */
int creds_profile_parse(const char *buf, size_t len, int config_file, const char *profile,
                        struct creds_profile *out, struct lerr *e);

#endif
