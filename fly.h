/*
 * fly.h - creating a Fly Machine for a group of events (Machines API, POST
 * /v1/apps/{app}/machines).
 *
 * The Machine runs the group's image with its size preset spelled out as a guest, its
 * command (if any) as init.cmd, and the events file written to /tmp/events.json (named
 * by $EVENTS_PATH); it destroys itself when its process exits and is never restarted.
 * Nothing here knows of SQS.
 *
 * What an answer means (fly_classify):
 *   2xx                           created: the Machine exists
 *   429                           rate limited: wait Retry-After (whole seconds, capped at
 *                                 FLY_RETRY_AFTER_MAX_MS; absent or an HTTP date: a 1, 2,
 *                                 4, 8, 16 s backoff) and retry the same region, at most
 *                                 FLY_RATE_LIMIT_RETRIES times; then stop, since Fly's rate
 *                                 limits are not per region
 *   5xx (503 is Fly's "insufficient capacity"), 408, and any answer whose JSON says
 *   "status": "insufficient_capacity", or a 409 or 412 whose error says "insufficient"
 *   (Fly's words for a full host)  try the next region
 *   any other status              give up: the request itself is wrong (bad image, token,
 *                                 app); Fly's "error" text goes in the message
 * A connection failure or timeout tries the next region too (the request may have
 * been processed: delivery is at least once); a cancel, an untrusted certificate or a
 * name mismatch stops at once, since no other region would fare differently.
 *
 * The token is a secret: it goes in the Authorization header and nowhere else, never
 * in a log line or an error message.
 */
#ifndef LAMBDO_FLY_H
#define LAMBDO_FLY_H

#include <stddef.h>
#include "err.h"
#include "http.h"
#include "preset.h"
#include "url.h"

#define FLY_EVENTS_PATH "/tmp/events.json"
#define FLY_RETRY_AFTER_MAX_MS 30000  /* cap on a 429's wait */
#define FLY_RATE_LIMIT_RETRIES 5      /* 429 retries of one region, after the first try */
#define FLY_CREATE_TIMEOUT_MS 60000   /* one create request, connection included */

/* Where Machines are created. */
struct fly_target {
    const struct url *base;  /* API base: https://api.machines.dev, or one with a path
                                prefix (http://host:4280/prefix); no query */
    const char *app;
    const char *token;       /* "FlyV1 fm2_..." or a bare token (sent as "Bearer <token>") */
    const int *stop_fd;      /* optional, NULL for none: an fd that becomes readable when
                                lambdo is stopping. It ends the waits between 429 retries
                                and keeps another region from being tried, but does not
                                abort a request in flight, which Fly may already be acting
                                on (http->cancel_fd, if set, aborts those too). */
};

/* What to run. */
struct fly_machine_spec {
    const char *image;
    const struct preset *preset;
    const char *command;     /* JSON array of strings, checked by group_check; or NULL */
    const char *events;      /* the events file, any bytes (sent base64-encoded) */
    size_t events_len;
    const char *group_id;    /* goes in metadata.lambdo_group */
};

/* The Machine Fly created. */
struct fly_machine {
    char id[64];             /* "" if the answer did not say */
    char instance_id[64];
    char region[32];
    int status;              /* the last HTTP status seen, 0 if none (connection error) */
};

enum fly_outcome {
    FLY_CREATED,
    FLY_NEXT_REGION,
    FLY_RETRY,               /* rate limited: wait, then the same region again */
    FLY_GIVE_UP,
};

struct fly_answer {
    enum fly_outcome outcome;
    int retry_after_ms;      /* FLY_RETRY: Retry-After in ms (capped), -1 when absent or
                                not a number of seconds */
    struct fly_machine machine;  /* FLY_CREATED: id, instance_id, region from the answer */
    char error[200];         /* Fly's "error" (or the start of a non-JSON body): one line
                                of printable ASCII, truncated with "..."; "" when none */
};

/* Characters of the base64 encoding of n bytes (no NUL counted). */
size_t fly_base64_len(size_t n);

/* Standard base64 (RFC 4648, with padding) of in[0..n) into out, which has room for
 * fly_base64_len(n) + 1 bytes; NUL-terminates. Returns the length written. */
size_t fly_base64_encode(const void *in, size_t n, char *out);

/* The create request body, region omitted when NULL, into a new NUL-terminated buffer
 * the caller frees with free(). Returns 0, or -1 with LERR_INVALID (no image or preset,
 * a command that is not a JSON array of strings) or LERR_NOMEM. */
int fly_create_body(const struct fly_machine_spec *spec, const char *region, char **out,
                    size_t *len, struct lerr *e);

/* Retry-After as milliseconds: a whole number of seconds (capped at
 * FLY_RETRY_AFTER_MAX_MS), or -1 when value is NULL, empty, an HTTP date or garbage. */
int fly_retry_after_ms(const char *value, size_t len);

/* Classifies an answer to a create request (see the top of this file). body may be NULL;
 * retry_after is the Retry-After header value or NULL. Pure; never fails. */
void fly_classify(int status, const char *body, size_t body_len, const char *retry_after,
                  size_t retry_after_len, struct fly_answer *a);

/* The Authorization header value for token into a new buffer (free with fly_secret_free).
 * "FlyV1 ..." and "Bearer ..." tokens are used as they are, others get "Bearer ".
 * LERR_INVALID for an empty token or one with control characters (header injection);
 * the message never contains the token. */
int fly_auth_header(const char *token, char **out, struct lerr *e);

/* Wipes and frees a buffer that held a secret. NULL is fine. */
void fly_secret_free(char *s);

/* The create URL: base's scheme and authority, its path without trailing slashes, then
 * /v1/apps/<app, percent-encoded>/machines. LERR_INVALID if base has a query, app is
 * empty, or the path does not fit. */
int fly_machines_url(const struct url *base, const char *app, struct url *out, struct lerr *e);

/* Creates the Machine, trying regions[0..nregions) in order (with nregions 0: once,
 * letting Fly choose the region), as described at the top of this file. Once t->stop_fd
 * or http->cancel_fd is readable, no new attempt starts and a wait between 429 retries
 * ends early: LERR_CANCELLED.
 * Every attempt is logged (region, status, Fly's error; never the token).
 * Returns 0 with out filled, or -1 with e set: LERR_HTTP for an answer that gave up
 * or for the last of the regions' failures (the message says every region failed and
 * why the last one did), that failure's own kind for a connection error, LERR_CANCELLED,
 * LERR_INVALID, LERR_NOMEM. out->status is the last HTTP status either way. */
int fly_create_machine(struct http_client *http, const struct fly_target *t,
                       const struct fly_machine_spec *spec, const char *const *regions,
                       size_t nregions, struct fly_machine *out, struct lerr *e);

#endif
