/*
 * fly.h - creating a Fly Machine for a group of events (Machines API, POST
 * /v1/apps/{app}/machines), then following it to its end (wait, exit code, stop, delete).
 *
 * The Machine runs the group's image with its size preset spelled out as a guest, its
 * command (if any) as init.cmd, the events file written to /tmp/events.json (named by
 * $EVENTS_PATH) and the context file to /tmp/events.meta.json ($EVENTS_META_PATH); it
 * destroys itself when its process exits and is never restarted.
 * Nothing here knows of SQS.
 *
 * What an answer to a create means (fly_classify with created: outcomes in brackets):
 *   2xx                           created [OK]: the Machine exists; but without a usable id
 *                                 (a top-level string of at most 60 printable characters,
 *                                 in an answer that is one whole JSON object) give up
 *                                 [FAILED]: a Machine lambdo cannot wait for, stop or
 *                                 destroy is no create to acknowledge (it may run: at
 *                                 least once)
 *   429                           rate limited [RATE_LIMITED]: wait Retry-After (whole
 *                                 seconds, capped at FLY_RETRY_AFTER_MAX_MS; absent or an
 *                                 HTTP date: a 1, 2, 4, 8, 16, 30, 30... s backoff) and
 *                                 retry the same region, at most FLY_RATE_LIMIT_RETRIES
 *                                 times; then stop, since Fly's rate limits are not per
 *                                 region. Never a region's failure: another region would
 *                                 be limited just the same
 *   5xx (503 is Fly's "insufficient capacity"), 408, and any answer whose JSON says
 *   "status": "insufficient_capacity", or a 409 or 412 whose error says "insufficient"
 *   (Fly's words for a full host)  try the next region [RETRY_LATER]
 *   any other status              give up [FAILED]: the request itself is wrong (bad image,
 *                                 token, app); Fly's "error" text goes in the message
 * A connection failure or timeout tries the next region too (the request may have
 * been processed: delivery is at least once); a cancel, an untrusted certificate or a
 * name mismatch stops at once, since no other region would fare differently.
 *
 * The token is a secret: it goes in the Authorization header and nowhere else, never
 * in a log line or an error message.
 *
 * Every request (create, wait, show, events, stop, delete, update, lease, list, the app)
 * goes through one loop in fly.c: a token, the request, and on a 429 the wait and the retry.
 *
 * Rate limits: Fly limits the Machines API per app and per action. A target may carry
 * two shared token buckets (ratelimit.h): every create takes a token of create_rl before
 * each POST, every other call (wait, show, events, stop, delete) one of get_rl. A 429
 * penalizes the bucket of its kind for Retry-After (or the backoff), so every thread of
 * the app pauses, not just the one that was told; the request is then retried, and a 429
 * never counts as a region's failure. A target for one Machine may also carry that
 * Machine's own buckets (t->limits, Fly's per-Machine limits): a call on that Machine then
 * takes its token there instead of get_rl (update, lease, stop/delete and the gets each
 * have theirs), and sends t->lease_nonce, when set, as fly-machine-lease-nonce.
 *
 * A warm pool (LAMBDO_POOL) keeps stopped Machines: created with skip_launch and no
 * auto_destroy (metadata.lambdo_pool), found again with fly_list_pool, then per group
 * leased (fly_lease_acquire), updated with the group's files (fly_update_machine, which
 * starts it), waited for, and released (fly_lease_release).
 *
 * After the create (the "exit" acknowledgement mode), a Machine is followed with:
 *   fly_wait_machine     GET .../machines/{id}/wait?state=..&timeout=..[&instance_id=..]
 *   fly_machine_exit     GET .../machines/{id} (its "events"; .../events if it has none)
 *   fly_stop_machine     POST .../machines/{id}/stop
 *   fly_destroy_machine  DELETE .../machines/{id}[?force=true]
 * What their answers mean (fly_classify without created):
 *   2xx                       ok (wait: the state was reached)
 *   404, 410                  gone: Fly no longer knows the Machine (auto_destroy removes
 *                             it soon after it exits)
 *   another 4xx whose error says "destroyed" or "not found"
 *                             gone too: that is how a wait for "stopped" may answer for a
 *                             Machine that is already destroyed (lenient on purpose)
 *   408                       timed out: the wait did not see the state in time (for the
 *                             other calls, a retry-later failure)
 *   429                       rate limited: penalize get_rl, wait, retry (at most
 *                             FLY_RATE_LIMIT_RETRIES times)
 *   5xx                       retry later: Fly's trouble
 *   any other status          failed: the request itself is wrong (401 bad token...)
 */
#ifndef LAMBDO_FLY_H
#define LAMBDO_FLY_H

#include <stddef.h>
#include "err.h"
#include "http.h"
#include "preset.h"
#include "ratelimit.h"
#include "url.h"

struct metrics;

#define FLY_EVENTS_PATH "/tmp/events.json"
#define FLY_EVENTS_META_PATH "/tmp/events.meta.json"  /* the context file, EVENTS_META_PATH */
#define FLY_RETRY_AFTER_MAX_MS 30000  /* cap on a 429's wait */
#define FLY_RATE_LIMIT_RETRIES 20     /* 429 retries of one request, after the first try;
                                         generous: a 429 is Fly pacing us, not a failure */
#define FLY_CREATE_TIMEOUT_MS 60000   /* one create request, connection included */
#define FLY_CALL_TIMEOUT_MS 30000     /* one show, events, stop or delete request */
#define FLY_WAIT_MAX_S 60             /* Fly's longest wait */
#define FLY_WAIT_SLACK_MS 15000       /* a wait request may take timeout_s plus this */

/* Fly's limits per Machine: each action (update, lease, start/stop/delete) 1 per second,
 * burst 3; the gets (show, wait, events, show lease) 5 per second, burst 10 (the figures
 * are written once, in fly_machine_limits_init). */
struct fly_machine_limits {
    struct ratelimit update;  /* Machines_update */
    struct ratelimit lease;   /* lease acquire, refresh and release */
    struct ratelimit other;   /* start, stop, delete */
    struct ratelimit get;     /* show, wait, events, show lease */
};

/* Full buckets with Fly's figures above (figures ratelimit_init accepts: it cannot fail). */
void fly_machine_limits_init(struct fly_machine_limits *l);
void fly_machine_limits_destroy(struct fly_machine_limits *l);

#define FLY_NONCE_MAX 64     /* a lease nonce, NUL included */
#define FLY_POOL_KEY_MAX 40

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
    struct ratelimit *create_rl;  /* creates' shared bucket, NULL: unlimited */
    struct ratelimit *get_rl;     /* every other call's shared bucket, NULL: unlimited */
    void (*idle)(void *ctx);      /* NULL, or called about once a second while a call waits
                                     for a token or after a 429: lambdo keeps the group's
                                     messages hidden from there */
    void *idle_ctx;
    struct metrics *metrics;      /* NULL, or where request durations, 429s and failed
                                     creates (by region) are counted */
    int unlimited_429_retries;    /* fly_create_machine: retry 429s for as long as Fly says
                                     so (the caller keeps its messages alive through idle and
                                     a stop still ends the waits), instead of giving up after
                                     FLY_RATE_LIMIT_RETRIES: a 429 is no failed attempt */
    int create_prepaid;           /* fly_create_machine: the caller already took create_rl's
                                     token for the first request (it waited for it before
                                     borrowing a connection, so that no connection idles in
                                     the queue and outlives the server's keep-alive) */
    const char *lease_nonce;           /* NULL, or sent as fly-machine-lease-nonce on every
                                          call on one Machine (never logged) */
    struct fly_machine_limits *limits; /* NULL, or the Machine's own buckets: a call on one
                                          Machine (update, lease, start, stop, delete, show,
                                          wait, events) then takes its token there INSTEAD
                                          of get_rl; a 429 penalizes that bucket */
};

/* What to run. */
struct fly_machine_spec {
    const char *image;
    const struct preset *preset;
    const char *command;     /* JSON array of strings, checked by group_check; or NULL */
    const char *events;      /* the events file, any bytes (sent base64-encoded) */
    size_t events_len;
    const char *group_id;    /* goes in metadata.lambdo_group */
    const char *meta;        /* the context file (sent base64-encoded), or NULL: none, */
    size_t meta_len;         /* and no EVENTS_META_PATH */
    const char *pool_key;    /* NULL, or a pooled Machine: config.metadata gets "lambdo_pool":
                                key, and no "auto_destroy" (it stops after a group and waits
                                for the next one); restart policy "no" as always */
    int skip_launch;         /* create it stopped: top-level "skip_launch": true. events may
                                then be NULL: no files, no EVENTS_PATH/EVENTS_META_PATH env */
};

/* The Machine Fly created. */
struct fly_machine {
    char id[64];             /* never "" once created */
    char instance_id[64];
    char region[32];
    int status;              /* the last HTTP status seen, 0 if none (connection error) */
};

/* What an answer means (fly_classify). A create's answer has no TIMED_OUT nor GONE. */
enum fly_call_outcome {
    FLY_CALL_OK,            /* 2xx; for a wait: the state was reached; for a create: the
                               answer names a usable Machine id */
    FLY_CALL_TIMED_OUT,     /* 408: the wait ended before the state; ask again */
    FLY_CALL_GONE,          /* 404, 410, or an error saying destroyed / not found */
    FLY_CALL_RATE_LIMITED,  /* 429 (the calls below retry it; they never end with it) */
    FLY_CALL_RETRY_LATER,   /* 5xx, a connection error or timeout: try again later; for a
                               create: try the next region */
    FLY_CALL_FAILED,        /* any other answer, a cancel, a bad argument: do not retry
                               (a create gives up) */
};

/* What a call's answer was. */
struct fly_call_result {
    enum fly_call_outcome outcome;
    int status;              /* the last HTTP status, 0 if none (connection error) */
    int retry_after_ms;      /* 429: Retry-After in ms (capped), -1 when absent */
    char error[200];         /* Fly's "error" (or the start of a non-JSON body) for a
                                status >= 300: one line of printable ASCII; "" when none */
};

/* The create request body, region omitted when NULL, into a new NUL-terminated buffer
 * the caller frees with free(). Returns 0, or -1 with LERR_INVALID (no image or preset,
 * a command that is not a JSON array of strings) or LERR_NOMEM. */
int fly_create_body(const struct fly_machine_spec *spec, const char *region, char **out,
                    size_t *len, struct lerr *e);

/* Classifies an answer (see the top of this file): to a create when created is not NULL
 * (with FLY_CALL_OK, the Machine the answer names goes there; otherwise it is cleared and
 * only its status set), else to a wait, show, events, stop, delete or app request. body
 * may be NULL; retry_after is the Retry-After header value or NULL: with a 429,
 * r->retry_after_ms is a whole number of seconds (capped at FLY_RETRY_AFTER_MAX_MS) as
 * ms, or -1 when it is NULL, empty, an HTTP date or garbage. Pure; never fails. */
void fly_classify(int status, const char *body, size_t body_len, const char *retry_after,
                  size_t retry_after_len, struct fly_machine *created,
                  struct fly_call_result *r);

/* An API URL: base's scheme and authority, its path without trailing slashes, then
 * /v1/apps/<app, percent-encoded>, then path (encoded already): "" for the app itself
 * (Apps_show), "/machines" for its Machines (create, list). LERR_INVALID if base has a
 * query, app is empty, or the path does not fit. */
int fly_app_url(const struct url *base, const char *app, const char *path, struct url *out,
                struct lerr *e);

/* Creates the Machine, trying regions[0..nregions) in order (with nregions 0: once,
 * letting Fly choose the region), as described at the top of this file. Each POST first
 * takes a t->create_rl token; a 429 penalizes t->create_rl and retries the same region.
 * Once t->stop_fd or http->cancel_fd is readable, no new attempt starts and a wait for a
 * token or between 429 retries ends early: LERR_CANCELLED.
 * Every attempt is logged (region, status, Fly's error; never the token).
 * Returns 0 with out filled, or -1 with e set: LERR_HTTP for an answer that gave up
 * or for the last of the regions' failures (the message says every region failed and
 * why the last one did), that failure's own kind for a connection error, LERR_CANCELLED,
 * LERR_INVALID, LERR_NOMEM. out->status is the last HTTP status either way. */
int fly_create_machine(struct http_client *http, const struct fly_target *t,
                       const struct fly_machine_spec *spec, const char *const *regions,
                       size_t nregions, struct fly_machine *out, struct lerr *e);

/* ---- following a Machine -------------------------------------------------------------- */

/* How a Machine's process ended, from its latest "exit" event. */
struct fly_exit {
    enum fly_call_outcome outcome;  /* OK, GONE, or what the failure was */
    int status;              /* the last HTTP status, 0 if none */
    int has_events;          /* the answer had an event list (maybe empty) */
    int exited;              /* an exit event was found */
    int known;               /* exit_code is the process's exit status (0..255). 0: no
                                exit event yet, or it has no usable code: the caller
                                counts that as a failure */
    int exit_code;
    int oom_killed;          /* the kernel's OOM killer ended it */
    char state[24];          /* the Machine's "state" ("stopped", "started"...) when the
                                answer was a Machine object, "" otherwise (one_line-cleaned) */
};

/* The URL of one Machine: fly_app_url's with "/machines", then /<machine_id> (percent-encoded),
 * then /<action> when action is not NULL ("wait", "stop", "events"), then ?<query> when
 * query is not NULL (the caller encodes it). LERR_INVALID for an empty or too long id,
 * or as fly_app_url. */
int fly_machine_url(const struct url *base, const char *app, const char *machine_id,
                    const char *action, const char *query, struct url *out, struct lerr *e);

/* Reads a Machine (Machines_show's object) or its event list (Machines_list_events'
 * array) and fills out from the latest event of type "exit": the greatest "timestamp",
 * the first of equals in the list (Fly lists newest first). Its request.exit_event
 * (an object, or a JSON text of one) gives exit_code (guest_exit_code when absent)
 * and oom_killed. Lenient: no events, events that
 * are not an array, odd fields: out->known = 0 and still 0 returned. Returns -1 with
 * LERR_MALFORMED only when json is not JSON, or neither an object nor an array.
 * out->has_events says whether there was an event list at all (a Machine object may come
 * without: fly_machine_exit then asks for .../events). Pure; out->outcome is FLY_CALL_OK
 * and out->status 0. */
int fly_parse_exit(const char *json, size_t len, struct fly_exit *out, struct lerr *e);

/* Waits (one request) for the Machine to reach state ("started", "stopped" or
 * "destroyed") for at most timeout_s seconds (1..FLY_WAIT_MAX_S). instance_id may be
 * NULL or "" (then not sent). Returns 0 when the answer says where the Machine is:
 * out->outcome FLY_CALL_OK (reached), FLY_CALL_TIMED_OUT (not yet: call again) or
 * FLY_CALL_GONE (Fly no longer knows it; with state "stopped" or "destroyed" it most
 * likely exited: fly_machine_exit tells). Returns -1 otherwise, with out->outcome
 * FLY_CALL_RETRY_LATER (e: LERR_HTTP for a 5xx or 408, or the connection error's kind)
 * or FLY_CALL_FAILED (LERR_HTTP for another status, LERR_CANCELLED, LERR_INVALID...).
 * Takes t->get_rl tokens (t->limits->get when set); a 429 penalizes that bucket and
 * retries. While the request runs, http->io_timeout_ms is raised to timeout_s +
 * FLY_WAIT_SLACK_MS if it is lower (and restored): Fly answers only when the wait ends.
 * Set http->cancel_fd to end a wait in flight at once on a stop; t->stop_fd alone ends
 * only the waits between requests. */
int fly_wait_machine(struct http_client *http, const struct fly_target *t,
                     const char *machine_id, const char *instance_id, const char *state,
                     int timeout_s, struct fly_call_result *out, struct lerr *e);

/* Reads how the Machine's process ended (fly_parse_exit). Returns 0 with out->outcome
 * FLY_CALL_OK (out->known says whether the code is known) or FLY_CALL_GONE (known = 0,
 * state "": a 404); -1 otherwise, as
 * fly_wait_machine (LERR_MALFORMED, outcome FLY_CALL_RETRY_LATER, for an answer that is
 * not a Machine). Takes t->get_rl tokens (t->limits->get when set). */
int fly_machine_exit(struct http_client *http, const struct fly_target *t,
                     const char *machine_id, struct fly_exit *out, struct lerr *e);

/* Asks Fly to stop the Machine (its stop signal, then SIGKILL after its stop timeout).
 * Returns 0 when Fly accepted (FLY_CALL_OK) or no longer knows the Machine
 * (FLY_CALL_GONE: nothing left to stop); -1 otherwise, as fly_wait_machine (a 408 is
 * FLY_CALL_RETRY_LATER here). Takes t->get_rl tokens (t->limits->other when set). out may
 * be NULL. */
int fly_stop_machine(struct http_client *http, const struct fly_target *t,
                     const char *machine_id, struct fly_call_result *out, struct lerr *e);

/* Destroys the Machine; with force, even a running one (?force=true). Returns 0 when
 * Fly accepted or no longer knows the Machine (FLY_CALL_GONE); -1 otherwise, as
 * fly_stop_machine. Takes t->get_rl tokens (t->limits->other when set). out may be NULL. */
int fly_destroy_machine(struct http_client *http, const struct fly_target *t,
                        const char *machine_id, int force, struct fly_call_result *out,
                        struct lerr *e);

/* ---- a warm pool (LAMBDO_POOL): Machines kept stopped, leased, updated per group ---- */

/* POST .../machines/{id} (Machines_update) with the config fly_create_body writes for spec
 * (no region; skip_launch as spec says), t->lease_nonce in the header. Fly starts a stopped
 * Machine that is updated (unless skip_launch). Returns 0 with out filled from the answer
 * (id, instance_id = the new version's, region; id is machine_id when the answer has none)
 * and r->outcome FLY_CALL_OK; -1 otherwise with r: FLY_CALL_GONE (404/410/"not found"),
 * FLY_CALL_RETRY_LATER (5xx, connection; a 2xx that is not a JSON object: LERR_MALFORMED),
 * FLY_CALL_FAILED (any other 4xx: r->status 409 is a lease held by another, 400/422 a config
 * Fly refused, e.g. an image it cannot resolve; r->error has Fly's words). 429s are retried
 * as every call does. Takes the token of t->limits->update (or t->get_rl without limits).
 * r may not be NULL. */
int fly_update_machine(struct http_client *http, const struct fly_target *t,
                       const char *machine_id, const struct fly_machine_spec *spec,
                       struct fly_machine *out, struct fly_call_result *r, struct lerr *e);

/* The nonce and expiry of a lease answer: {"status":"success","data":{"nonce":..,
 * "expires_at": unix seconds, ...}} (the live API's shape, which fly-go decodes; the test
 * Fly API answers it). expires_at 0 when absent or not a number. LERR_MALFORMED without a
 * usable nonce (a string of 1..FLY_NONCE_MAX-1 printable ASCII characters). Pure. */
int fly_parse_lease(const char *json, size_t len, char nonce[FLY_NONCE_MAX],
                    long long *expires_at, struct lerr *e);

/* POST .../machines/{id}/lease?ttl=S (S = ttl_s, also in the JSON body {"ttl":S}). With
 * t->lease_nonce set it is a refresh of that lease (the same nonce comes back). Returns 0
 * with the nonce and expires_at; -1 otherwise with r as fly_update_machine (409: held by
 * another, FLY_CALL_FAILED; 404: FLY_CALL_GONE; an answer without a usable nonce:
 * LERR_MALFORMED, FLY_CALL_RETRY_LATER). Takes t->limits->lease. r may be NULL. The nonce
 * is never logged. */
int fly_lease_acquire(struct http_client *http, const struct fly_target *t,
                      const char *machine_id, int ttl_s, char nonce[FLY_NONCE_MAX],
                      long long *expires_at, struct fly_call_result *r, struct lerr *e);

/* DELETE .../machines/{id}/lease with t->lease_nonce. 0 when released or when there was no
 * lease (404: it expired); -1 otherwise (r as above). Takes t->limits->lease. r may be
 * NULL. */
int fly_lease_release(struct http_client *http, const struct fly_target *t,
                      const char *machine_id, struct fly_call_result *r, struct lerr *e);

/* One pooled Machine as a list shows it. */
struct fly_pool_machine {
    char id[64];
    char instance_id[64];
    char state[24];
    char region[32];
    char pool_key[FLY_POOL_KEY_MAX];
};

/* The Machines of a Machines_list answer (a JSON array of Machine objects) whose
 * config.metadata has "managed_by": "lambdo" and a string "lambdo_pool" (1..FLY_POOL_KEY_MAX-1
 * printable characters), in a new array (free()) of *n entries (NULL when 0); Machines in
 * state "destroyed" or "destroying" are left out. Other Machines and odd entries (no id of
 * 1..63 printable characters) are skipped. LERR_MALFORMED when the answer is not a JSON
 * array; LERR_NOMEM. Pure. */
int fly_parse_pool_list(const char *json, size_t len, struct fly_pool_machine **out, size_t *n,
                        struct lerr *e);

/* GET .../machines (Machines_list) and fly_parse_pool_list. Takes t->get_rl. 0 or -1 (e;
 * the connection error's kind, LERR_HTTP with the status, LERR_MALFORMED). The answer
 * echoes every Machine's config, files included: it must fit the client's max_body. */
int fly_list_pool(struct http_client *http, const struct fly_target *t,
                  struct fly_pool_machine **out, size_t *n, struct lerr *e);

/* ---- the app (lambdo check) ------------------------------------------------------------ */

#define FLY_APP_RATE_LIMIT_RETRIES 3  /* a check is a quick look, not work that must get done */

/* GET {base}/v1/apps/{app} (Apps_show), one request (a 429 is waited out and retried, up
 * to FLY_APP_RATE_LIMIT_RETRIES times, taking t->get_rl tokens when set, as every call
 * does; the last 429 ends as a failure with out->status 429): proves the token,
 * the app and the connection. Returns 0 when Fly answered 2xx (out->outcome FLY_CALL_OK).
 * Otherwise -1 with e set: LERR_HTTP with out->status and Fly's out->error (401: the
 * token was refused; 404: no such app, or one the token may not see), or the connection
 * error's own kind with out->status 0 (LERR_TLS_UNTRUSTED, LERR_TLS_NAME, LERR_REFUSED,
 * LERR_DNS, LERR_TIMEOUT...). The token never appears in e. */
int fly_get_app(struct http_client *http, const struct fly_target *t,
                struct fly_call_result *out, struct lerr *e);

/* GET .../machines/{id}/lease (lambdo check): 1 when a lease is held on the Machine, 0 when
 * none is (404), -1 when Fly could not say. Takes t->get_rl. */
int fly_lease_held(struct http_client *http, const struct fly_target *t, const char *machine_id);

#endif
