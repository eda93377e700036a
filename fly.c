#include "fly.h"
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "httpresp.h"
#include "json.h"
#include "text.h"
#include "log.h"

/* ---- base64 ---------------------------------------------------------------------------- */

/* Characters of the base64 encoding of n bytes (no NUL counted); n / 3 and n % 3, as the
 * encoder has them, so that the compiler computes them once for both. */
#define BASE64_LEN(n) (((n) / 3 + ((n) % 3 != 0)) * 4)

/* The two base64 characters of every 12 bits: two lookups for three bytes instead of four
 * (the events file is most of a create's bytes). Filled before main, so threads only read. */
static char pairs[4096][2];

__attribute__((constructor)) static void base64_pairs(void)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    for (int i = 0; i < 4096; i++) {
        pairs[i][0] = abc[i >> 6];
        pairs[i][1] = abc[i & 63];
    }
}

/* Standard base64 (RFC 4648, with padding) of in[0..n) into out, which has room for
 * BASE64_LEN(n) + 1 bytes; NUL-terminates. Returns the length written. */
static size_t base64_encode(const void *in, size_t n, char *out)
{
    const unsigned char *s = in, *end = s + n - n % 3;
    char *o = out;

    for (; s < end; s += 3, o += 4) {
        unsigned v = (unsigned)s[0] << 16 | (unsigned)s[1] << 8 | s[2];
        memcpy(o, pairs[v >> 12], 2);
        memcpy(o + 2, pairs[v & 4095], 2);
    }
    if (n % 3) {
        /* the last one or two bytes, zero-padded; '=' stands for each byte missing */
        unsigned v = (unsigned)s[0] << 16 | (n % 3 == 2 ? (unsigned)s[1] << 8 : 0);

        memcpy(o, pairs[v >> 12], 2);
        memcpy(o + 2, n % 3 == 2 ? pairs[v & 4095] : "==", 2);
        o[3] = '=';
        o += 4;
    }
    *o = '\0';
    return (size_t)(o - out);
}

/* ---- the create body ------------------------------------------------------------------- */

/* init.cmd from the command attribute: re-serialized, which is safe because it holds
 * only strings (no number can change on the way through a double). */
static int jb_command(struct json_buf *b, const char *command, struct lerr *e)
{
    cJSON *arr = json_parse(command, strlen(command)), *item;
    int i = 0;

    if (!cJSON_IsArray(arr)) {
        cJSON_Delete(arr);
        return lerr_set(e, LERR_INVALID, "command is not a JSON array of strings");
    }
    json_buf_lit(b, ",\"init\":{\"cmd\":[");
    cJSON_ArrayForEach(item, arr) {
        if (!cJSON_IsString(item)) {
            cJSON_Delete(arr);
            return lerr_set(e, LERR_INVALID, "command element %d is not a string", i + 1);
        }
        json_buf_lit(b, i++ ? "," : "");
        json_buf_string(b, item->valuestring, strlen(item->valuestring));
    }
    json_buf_lit(b, "]}");
    cJSON_Delete(arr);
    return 0;
}

/* sep, then {"guest_path":path,"raw_value":base64 of data}: a file in the Machine, any
 * bytes. */
static void jb_file(struct json_buf *b, const char *sep, const char *path, const char *data,
                    size_t len)
{
    char *p;

    json_buf_fmt(b, "%s{\"guest_path\":\"%s\",\"raw_value\":\"", sep, path);
    if ((p = json_buf_room(b, BASE64_LEN(len))))
        b->len += base64_encode(data, len, p);
    json_buf_lit(b, "\"}");
}

int fly_create_body(const struct fly_machine_spec *spec, const char *region, char **out,
                    size_t *len, struct lerr *e)
{
    const char *group = spec->group_id ? spec->group_id : "";
    struct json_buf b = { 0 };

    *out = NULL;
    if (!spec->image || !spec->image[0] || !spec->preset)
        return lerr_set(e, LERR_INVALID, "a Machine needs an image and a size preset");
    /* one allocation in the common case: the events dominate (a failure is sticky: b.oom,
     * checked at the end) */
    json_buf_room(&b, BASE64_LEN(spec->events_len) + BASE64_LEN(spec->meta_len) + 1024);
    json_buf_lit(&b, "{");
    if (region) {
        json_buf_lit(&b, "\"region\":");
        json_buf_string(&b, region, strlen(region));
        json_buf_lit(&b, ",");
    }
    if (spec->skip_launch)
        json_buf_lit(&b, "\"skip_launch\":true,");
    json_buf_lit(&b, "\"config\":{\"image\":");
    json_buf_string(&b, spec->image, strlen(spec->image));
    /* the preset's words come from its table: nothing to escape */
    json_buf_fmt(&b, ",\"guest\":{\"cpu_kind\":\"%s\",\"cpus\":%d,\"memory_mb\":%d",
                 spec->preset->cpu_kind, spec->preset->cpus, spec->preset->memory_mb);
    if (spec->preset->gpus > 0)
        json_buf_fmt(&b, ",\"gpus\":%d,\"gpu_kind\":\"%s\"", spec->preset->gpus,
                     spec->preset->gpu_kind);
    json_buf_lit(&b, "}");
    if (!spec->events) {
        /* a pool Machine waiting for its first group: the files come with the update */
        json_buf_lit(&b, ",\"env\":{}");
    } else {
        json_buf_lit(&b, ",\"env\":{\"EVENTS_PATH\":\"" FLY_EVENTS_PATH "\"");
        if (spec->meta)
            json_buf_lit(&b, ",\"EVENTS_META_PATH\":\"" FLY_EVENTS_META_PATH "\"");
        json_buf_lit(&b, "},\"files\":[");
        jb_file(&b, "", FLY_EVENTS_PATH, spec->events, spec->events_len);
        if (spec->meta)
            jb_file(&b, ",", FLY_EVENTS_META_PATH, spec->meta, spec->meta_len);
        json_buf_lit(&b, "]");
    }
    /* a pool Machine stops after its group and waits for the next one */
    json_buf_lit(&b, spec->pool_key ? ",\"restart\":{\"policy\":\"no\"}"
                                    : ",\"auto_destroy\":true,\"restart\":{\"policy\":\"no\"}");
    if (spec->command && jb_command(&b, spec->command, e) < 0) {
        free(b.p);
        return -1;
    }
    json_buf_lit(&b, ",\"metadata\":{\"managed_by\":\"lambdo\",\"lambdo_group\":");
    json_buf_string(&b, group, strlen(group));
    if (spec->pool_key) {
        json_buf_lit(&b, ",\"lambdo_pool\":");
        json_buf_string(&b, spec->pool_key, strlen(spec->pool_key));
    }
    json_buf_lit(&b, "}}}");
    if (b.oom) {
        free(b.p);
        return lerr_set(e, LERR_NOMEM, "create body: out of memory");
    }
    *out = b.p;
    *len = b.len;
    return 0;
}

/* ---- answers --------------------------------------------------------------------------- */

/* Text from a server as one short line of printable ASCII: control bytes and runs of
 * spaces become one space, other bytes '?', and the end is cut with "...". */
static void one_line(char *out, size_t cap, const char *s, size_t n)
{
    size_t o = 0, i;
    int space = 1;  /* drops leading spaces */

    for (i = 0; i < n && o + 4 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20) {
            if (!space)
                out[o++] = ' ';
            space = 1;
            continue;
        }
        out[o++] = c < 0x7F ? (char)c : '?';
        space = 0;
    }
    while (o > 0 && out[o - 1] == ' ')
        o--;
    if (i < n) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

/* Retry-After as milliseconds: a whole number of seconds (capped at
 * FLY_RETRY_AFTER_MAX_MS), or -1 when value is NULL, empty, an HTTP date or garbage. */
static int retry_after_ms(const char *value, size_t len)
{
    unsigned long secs = 0;
    size_t i = 0;

    if (!value)
        return -1;
    while (len > 0 && (value[len - 1] == ' ' || value[len - 1] == '\t'))
        len--;
    while (i < len && (value[i] == ' ' || value[i] == '\t'))
        i++;
    if (i == len)
        return -1;
    for (; i < len; i++) {
        if (value[i] < '0' || value[i] > '9')
            return -1;  /* an HTTP date, or garbage */
        if (secs <= FLY_RETRY_AFTER_MAX_MS / 1000)
            secs = secs * 10 + (unsigned long)(value[i] - '0');
    }
    return secs >= FLY_RETRY_AFTER_MAX_MS / 1000 ? FLY_RETRY_AFTER_MAX_MS : (int)secs * 1000;
}

static const cJSON *field(const cJSON *obj, const char *name)
{
    return cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, name) : NULL;
}

/* A string value, one_line-cleaned, into out; out is left alone when v is no string. */
static void text_into(const cJSON *v, char *out, size_t cap)
{
    if (cJSON_IsString(v))
        one_line(out, cap, v->valuestring, strlen(v->valuestring));
}

/* A result before any answer: a failure, until an answer says otherwise. */
static void result_init(struct fly_call_result *r)
{
    memset(r, 0, sizeof *r);
    r->outcome = FLY_CALL_FAILED;
    r->retry_after_ms = -1;
}

/* ---- a create's answer: three strings out of an echo of the whole request ------------ */

/* Fly's answer to a create repeats the config, the events file's base64 included: building
 * all of it with cJSON cost more than writing the request. The object is walked with json.c
 * instead, every other value stepped over, and only three top-level strings are decoded.
 * Returns 0 when the whole object was read; the id is then usable when one_line kept it
 * as it was (printable ASCII that fits). */
static int created_answer(const char *s, size_t n, struct fly_machine *m)
{
    static const char *const names[] = { "id", "instance_id", "region" };
    char *const out[] = { m->id, m->instance_id, m->region };
    const size_t cap[] = { sizeof m->id, sizeof m->instance_id, sizeof m->region };
    struct json j;
    char raw[sizeof m->id];
    size_t len;
    int state = 0, rc, i;

    json_init(&j, s, n);
    if (json_peek(&j) != '{')
        return -1;
    while ((rc = json_member_of(&j, &state, names, 3, &i)) == 1) {
        if (i < 0 || json_peek(&j) != '"') {
            rc = json_skip(&j);
        } else if ((rc = json_string(&j, raw, sizeof raw, &len)) == 0) {
            one_line(out[i], cap[i], raw, len < sizeof raw ? len : sizeof raw - 1);
            if (i == 0 && (len >= sizeof raw || strlen(m->id) != len || memcmp(m->id, raw, len)))
                m->id[0] = '\0';
        }
        if (rc < 0)
            return -1;
    }
    return rc;
}

void fly_classify(int status, const char *body, size_t body_len, const char *retry_after,
                  size_t retry_after_len, struct fly_machine *created,
                  struct fly_call_result *r)
{
    cJSON *j;
    const cJSON *st;

    result_init(r);
    r->status = status;
    if (created)
        memset(created, 0, sizeof *created);
    if (status >= 200 && status < 300) {
        r->outcome = FLY_CALL_OK;
        if (created && (!body || created_answer(body, body_len, created) != 0 ||
                        !created->id[0])) {
            /* Nothing to wait for, stop or destroy: a failed create, never a Machine id "" */
            memset(created, 0, sizeof *created);
            snprintf(r->error, sizeof r->error, "the answer names no usable Machine id");
            r->outcome = FLY_CALL_FAILED;
        }
    } else {
        j = body && body_len ? json_parse(body, body_len) : NULL;
        st = field(j, "status");
        /* what went wrong, in Fly's words: the answer's "error", else the start of the body */
        text_into(field(j, "error"), r->error, sizeof r->error);
        if (!r->error[0] && body)
            one_line(r->error, sizeof r->error, body, body_len);
        if (status == 429) {
            r->outcome = FLY_CALL_RATE_LIMITED;
            r->retry_after_ms = retry_after_ms(retry_after, retry_after_len);
        } else if (status >= 500 || (created && (status == 408 ||
                   (cJSON_IsString(st) && strcmp(st->valuestring, "insufficient_capacity") == 0) ||
                   ((status == 409 || status == 412) && strcasestr(r->error, "insufficient"))))) {
            /* Fly says a host or region is full in several ways: 503, a "status" of
             * "insufficient_capacity", and 409/412 answers like "insufficient memory" */
            r->outcome = FLY_CALL_RETRY_LATER;
        } else if (status == 408) {
            r->outcome = FLY_CALL_TIMED_OUT;
        } else if (!created && (status == 404 || status == 410 ||
                                (status >= 400 && (strcasestr(r->error, "destroyed") ||
                                                   strcasestr(r->error, "not found"))))) {
            /* beyond 404 and 410, how Fly may word "that Machine no longer exists": a wait
             * for "stopped" on a destroyed Machine, for one */
            r->outcome = FLY_CALL_GONE;
        }  /* else FAILED, as result_init left it: the request itself is wrong */
        cJSON_Delete(j);
    }
    if (created)
        created->status = status;
}

/* ---- request parts --------------------------------------------------------------------- */

/* The Authorization header value for token into a new buffer (call_end wipes and frees
 * it). "FlyV1 ..." and "Bearer ..." tokens are used as they are, others get "Bearer ".
 * LERR_INVALID for an empty token or one with control characters (header injection);
 * the message never contains the token. */
static int auth_header(const char *token, char **out, struct lerr *e)
{
    const char *scheme = "Bearer ";
    size_t n;

    *out = NULL;
    if (!token || !token[0])
        return lerr_set(e, LERR_INVALID, "the Fly token is empty");
    if (!text_clean(token, 0x20, NULL))
        return lerr_set(e, LERR_INVALID, "the Fly token has a control character");
    if (strncmp(token, "FlyV1 ", 6) == 0 || strncasecmp(token, "Bearer ", 7) == 0)
        scheme = "";
    n = strlen(scheme) + strlen(token) + 1;
    if (!(*out = malloc(n)))
        return lerr_set(e, LERR_NOMEM, "Authorization header: out of memory");
    snprintf(*out, n, "%s%s", scheme, token);
    return 0;
}

int fly_app_url(const struct url *base, const char *app, const char *path, struct url *out,
                struct lerr *e)
{
    char enc[3 * 64 + 1];
    size_t plen = strlen(base->path);
    int n;

    if (!app || !app[0])
        return lerr_set(e, LERR_INVALID, "the Fly app name is empty");
    if (strchr(base->path, '?'))
        return lerr_set(e, LERR_INVALID, "the Fly API URL must not have a query");
    if (text_pct_encode(app, enc, sizeof enc) < 0)
        return lerr_set(e, LERR_INVALID, "the Fly app name is too long");
    while (plen > 0 && base->path[plen - 1] == '/')
        plen--;
    *out = *base;
    n = snprintf(out->path, sizeof out->path, "%.*s/v1/apps/%s%s", (int)plen, base->path, enc,
                 path);
    if (n < 0 || (size_t)n >= sizeof out->path)
        return lerr_set(e, LERR_INVALID, "the Fly API URL's path is too long");
    return 0;
}

int fly_machine_url(const struct url *base, const char *app, const char *machine_id,
                    const char *action, const char *query, struct url *out, struct lerr *e)
{
    char enc[3 * 64 + 1], path[1024];
    int n;

    if (!machine_id || !machine_id[0])
        return lerr_set(e, LERR_INVALID, "the Machine id is empty");
    if (text_pct_encode(machine_id, enc, sizeof enc) < 0)
        return lerr_set(e, LERR_INVALID, "the Machine id is too long");
    n = snprintf(path, sizeof path, "/machines/%s%s%s%s%s", enc, action ? "/" : "",
                 action ? action : "", query ? "?" : "", query ? query : "");
    if (n < 0 || (size_t)n >= sizeof path)
        return lerr_set(e, LERR_INVALID, "the Fly API URL's path is too long");
    return fly_app_url(base, app, path, out, e);
}

/* ---- the network part ------------------------------------------------------------------ */

enum step { STEP_DONE, STEP_NEXT, STEP_STOP };

/* Before each request (rl not NULL): a token of rl, waiting for it if need be; without
 * rl: a pause of ms (0: only a look). Either ends once the client's cancel_fd or the
 * target's stop_fd is readable (an unset one is -1, which the wait ignores). */
static int pace(const struct http_client *http, const struct fly_target *t,
                struct ratelimit *rl, int ms, struct lerr *e)
{
    const int fds[2] = { http->cancel_fd, t->stop_fd ? *t->stop_fd : -1 };

    return ratelimit_wait_idle(rl, ms, fds, 2, t->idle, t->idle_ctx, e);
}

/* A connection problem that no other region would fix. */
static int transport_final(enum lerr_kind kind)
{
    return kind == LERR_CANCELLED || kind == LERR_NOMEM || kind == LERR_INVALID ||
           kind == LERR_TLS_UNTRUSTED || kind == LERR_TLS_NAME;
}

/* 1, 2, 4, 8, 16, 30, 30... s: for a 429 without a usable Retry-After. */
static int backoff_ms(int retry)
{
    int ms = 1000 << (retry < 5 ? retry : 5);

    return ms < FLY_RETRY_AFTER_MAX_MS ? ms : FLY_RETRY_AFTER_MAX_MS;
}

/* One request to Fly: what the caller asks (the fields up to max_retries, set by its
 * initializer), then what call_open fills in. Every kind (create, wait, show, events, stop,
 * destroy, update, lease, list, the app) goes through send_paced. */
struct call {
    const char *method;
    const char *what;              /* "create", "wait", "show"...: the metrics' operation */
    const char *machine_id;        /* a call on this Machine (unless app_path is set) */
    const char *action;            /* NULL or "wait", "stop"...: the Machine's path after it */
    const char *query;             /* NULL, or the query (encoded) */
    struct ratelimit *rl;          /* whose tokens it takes, NULL: none */
    const char *app_path;          /* NULL: a call on the Machine; else one on the app: ""
                                      (the app itself) or "/machines" */
    unsigned accept;               /* the outcomes that are no failure (bits 1 << outcome) */
    const char *body;              /* NULL, or a JSON body of body_len bytes */
    size_t body_len;
    int timeout_ms;                /* 0: FLY_CALL_TIMEOUT_MS */
    int max_retries;               /* 429 retries before giving up; -1: as long as Fly says;
                                      0: FLY_RATE_LIMIT_RETRIES */
    struct http_client *http;
    const struct fly_target *t;
    struct url url;
    struct http_header headers[3]; /* Authorization, then the lease nonce, Content-Type */
    struct http_request req;
    char who[160];                 /* what logs and errors call it: "Machine m1: wait" */
    int prepaid;                   /* the first request's token was taken already */
    struct fly_machine *created;   /* a create's: the Machine its answer names */
    int keep;                      /* an OK answer is kept in resp (the caller frees it) */
    struct http_response resp;     /* the answer, freed by send_paced unless kept */
};

#define ACCEPT(o) (1u << FLY_CALL_##o)

/* Makes c ready to send: its URL and name, the token's Authorization header (freed by
 * call_end), on a Machine the target's lease nonce, with a body its Content-Type. */
static int call_open(struct call *c, struct http_client *http, const struct fly_target *t,
                     struct lerr *e)
{
    char *auth = NULL;
    size_t n = 1;

    if ((c->app_path ? fly_app_url(t->base, t->app, c->app_path, &c->url, e)
                     : fly_machine_url(t->base, t->app, c->machine_id, c->action, c->query,
                                       &c->url, e)) < 0 ||
        auth_header(t->token, &auth, e) < 0)
        return -1;
    c->http = http;
    c->t = t;
    c->headers[0] = (struct http_header){ "Authorization", auth };
    if (!c->app_path && t->lease_nonce)
        c->headers[n++] = (struct http_header){ "fly-machine-lease-nonce", t->lease_nonce };
    if (c->body)
        c->headers[n++] = (struct http_header){ "Content-Type", "application/json" };
    c->req = (struct http_request){ c->method, &c->url, c->headers, n, c->body, c->body_len,
                                    c->timeout_ms ? c->timeout_ms : FLY_CALL_TIMEOUT_MS };
    if (!c->max_retries)
        c->max_retries = FLY_RATE_LIMIT_RETRIES;
    /* the app itself is named by its name alone */
    if (!c->app_path)
        snprintf(c->who, sizeof c->who, "Machine %s: %s", c->machine_id, c->what);
    else
        snprintf(c->who, sizeof c->who, "Fly app %s%s%s", t->app, c->app_path[0] ? ": " : "",
                 c->app_path[0] ? c->what : "");
    return 0;
}

/* The token was in the Authorization header: wiped before it is freed. */
static void call_end(struct call *c)
{
    text_wipe_free((char *)c->headers[0].value, strlen(c->headers[0].value));
}

/* Sends the request, each time after a token of c->rl, until an answer that is not a
 * 429 (each 429 waits Retry-After or the backoff), or the last retry's 429 (rl penalized
 * so that the other threads hear of it). Returns 0 with r, the answer's classification
 * (the answer itself kept in c->resp when c->keep is set and it is OK); or -1 with e set
 * (no answer, or a stop) and r->outcome saying whether a later try may do better,
 * r->status the last HTTP status seen. */
static int send_paced(struct call *c, struct fly_call_result *r, struct lerr *e)
{
    int create = c->created != NULL, wait = 0;

    for (int retry = 0;; retry++) {
        const char *ra;
        size_t ra_len = 0;
        int rc;
        double t0;

        r->outcome = FLY_CALL_FAILED;  /* a stop: even after a 429, do not retry */
        if (c->prepaid)
            c->prepaid = 0;
        else if (pace(c->http, c->t, c->rl, wait, e) < 0)
            return -1;
        t0 = metrics_clock();
        rc = http_do(c->http, &c->req, &c->resp, e);
        metrics_observe(c->t->metrics, METRICS_FLY, c->what, metrics_clock() - t0);
        if (rc < 0) {
            /* no answer this time: nothing of an earlier 429 stays */
            fly_classify(0, NULL, 0, NULL, 0, c->created, r);
            r->outcome = transport_final(e->kind) ? FLY_CALL_FAILED : FLY_CALL_RETRY_LATER;
            log_debug("fly: %s: %s", c->who, e->msg);
            return -1;
        }
        ra = httpresp_header(&c->resp.head, "Retry-After", &ra_len);
        fly_classify(c->resp.head.status, c->resp.body, c->resp.body_len, ra, ra_len, c->created,
                     r);
        log_debug("fly: %s: HTTP %d%s%s", c->who, r->status, r->error[0] ? ": " : "", r->error);
        if (!c->keep || r->outcome != FLY_CALL_OK)
            http_response_free(&c->resp);
        if (r->outcome != FLY_CALL_RATE_LIMITED)
            return 0;
        metrics_count(c->t->metrics, METRICS_FLY_RATE_LIMITED, 1);
        wait = r->retry_after_ms >= 0 ? r->retry_after_ms : backoff_ms(retry);
        /* with a limiter every thread pauses: the penalty makes the next pace() wait (even
         * after the last retry, so that the other threads hear of it); without one, the
         * next pace() pauses for wait itself */
        if (c->rl)
            ratelimit_penalize_at(c->rl, ratelimit_now_ns(), wait);
        if (retry == c->max_retries)
            return 0;
        /* a create's 429 is worth a warning (in its own words); the other calls' are debug */
        log_write(create ? LOG_LEVEL_WARN : LOG_LEVEL_DEBUG, "fly: %s: rate limited%s; retry %d "
                  "of %d in %d ms", c->who, create ? " (HTTP 429)" : "", retry + 1,
                  FLY_RATE_LIMIT_RETRIES, wait);
    }
}

static const char *region_name(const char *region)
{
    return region ? region : "any region";
}

/* One region: the first try, and its 429 retries. */
static enum step create_in_region(struct call *c, const char *group, const char *region,
                                  struct fly_machine *out, struct lerr *e)
{
    struct fly_call_result r;
    int answered = send_paced(c, &r, e) == 0;
    int next = r.outcome == FLY_CALL_RETRY_LATER;

    if (r.outcome == FLY_CALL_OK) {
        if (!out->region[0] && region)
            snprintf(out->region, sizeof out->region, "%s", region);
        log_info("fly: group %s: created Machine %s in %s (HTTP %d)", group, out->id,
                 out->region[0] ? out->region : region_name(region), out->status);
        return STEP_DONE;
    }
    if (r.outcome == FLY_CALL_RATE_LIMITED) {
        log_warn("fly: %s: still rate limited after %d retries; giving up", c->who,
                 c->max_retries);
        lerr_set(e, LERR_HTTP, "%s: still rate limited (HTTP 429) after %d retries",
                 region_name(region), c->max_retries);
        return STEP_STOP;
    }
    if (answered || e->kind != LERR_CANCELLED)
        metrics_count_region(c->t->metrics, METRICS_MACHINES_FAILED, region);
    if (answered)
        lerr_set(e, LERR_HTTP, "HTTP %d: %s", r.status, r.error);
    log_warn("fly: %s: %s%s", c->who, e->msg, next ? "; trying the next region"
             : answered ? "; not retrying" : "");
    lerr_wrap(e, answered && !next ? "Fly refused the Machine in %s" : "%s", region_name(region));
    return next ? STEP_NEXT : STEP_STOP;
}

int fly_create_machine(struct http_client *http, const struct fly_target *t,
                       const struct fly_machine_spec *spec, const char *const *regions,
                       size_t nregions, struct fly_machine *out, struct lerr *e)
{
    const char *group = spec->group_id ? spec->group_id : "-";
    char tried[128] = "";
    enum step step = STEP_STOP;
    /* the body differs by region: each attempt sets its own (call_open sees one, for the
     * Content-Type) */
    struct call c = { "POST", "create", NULL, NULL, NULL, t->create_rl, "/machines",
                      .body = "", .timeout_ms = FLY_CREATE_TIMEOUT_MS,
                      .max_retries = t->unlimited_429_retries ? -1 : FLY_RATE_LIMIT_RETRIES };

    memset(out, 0, sizeof *out);
    if (call_open(&c, http, t, e) < 0)
        return -1;
    c.prepaid = t->create_prepaid;
    c.created = out;
    for (size_t i = 0; i < (nregions ? nregions : 1); i++) {
        const char *region = nregions ? regions[i] : NULL;
        char *body = NULL;

        snprintf(c.who, sizeof c.who, "group %s: %s", group, region_name(region));
        step = STEP_STOP;
        /* a stop lets the request in flight finish, but starts no other (the first
         * request's own pace() looks, or the caller's, with create_prepaid) */
        if (i > 0 && pace(http, t, NULL, 0, e) < 0) {
            log_warn("fly: group %s: stopping: not trying %s", group, region_name(region));
            break;
        }
        if (fly_create_body(spec, region, &body, &c.req.body_len, e) < 0)
            break;
        c.req.body = body;
        step = create_in_region(&c, group, region, out, e);
        free(body);
        if (step != STEP_NEXT)
            break;
        snprintf(tried + strlen(tried), sizeof tried - strlen(tried), "%s%s", i ? ", " : "",
                 region_name(region));
    }
    call_end(&c);
    if (step == STEP_NEXT)
        lerr_wrap(e, "no region could create the Machine (tried %s); last", tried);
    return step == STEP_DONE ? 0 : -1;
}

/* ---- following a Machine: its answers (pure) ------------------------------------------- */

/* v is a JSON number with a whole value in [lo, hi] (which excludes NaN and infinities;
 * the range is checked before the cast, so the cast is defined). */
static int whole(const cJSON *v, double lo, double hi, long long *out)
{
    double d;

    if (!cJSON_IsNumber(v))
        return 0;
    d = v->valuedouble;
    if (!(d >= lo && d <= hi) || d != (double)(long long)d)
        return 0;
    *out = (long long)d;
    return 1;
}

/* The latest "exit" event: the greatest timestamp (events without a usable one count as
 * older than all others), the first of equals since Fly lists the newest first. */
static const cJSON *latest_exit(const cJSON *events)
{
    const cJSON *ev, *best = NULL;
    long long best_ts = -2;

    cJSON_ArrayForEach(ev, events) {
        const cJSON *type = field(ev, "type");
        long long ts;

        if (!cJSON_IsString(type) || strcmp(type->valuestring, "exit") != 0)
            continue;
        if (!whole(field(ev, "timestamp"), 0, 9e15, &ts))
            ts = -1;
        if (ts > best_ts) {
            best = ev;
            best_ts = ts;
        }
    }
    return best;
}

/* The exit event's request.exit_event: the spec types request as an object, its example
 * shows a JSON text, so both are read; without exit_event, the request itself is tried.
 * The exit code is the first of exit_code and guest_exit_code that is a real exit status
 * (0..255): Fly writes -1 for "none". */
static void read_exit(const cJSON *ev, struct fly_exit *out)
{
    const cJSON *req = field(ev, "request"), *x;
    cJSON *parsed = NULL;
    long long v;

    if (cJSON_IsString(req))
        req = parsed = json_parse(req->valuestring, strlen(req->valuestring));
    x = field(req, "exit_event");
    if (!cJSON_IsObject(x))
        x = req;
    if (whole(field(x, "exit_code"), 0, 255, &v) ||
        whole(field(x, "guest_exit_code"), 0, 255, &v)) {
        out->known = 1;
        out->exit_code = (int)v;
    }
    out->oom_killed = cJSON_IsTrue(field(x, "oom_killed"));
    cJSON_Delete(parsed);
}

int fly_parse_exit(const char *json, size_t len, struct fly_exit *out, struct lerr *e)
{
    cJSON *j = json && len ? json_parse(json, len) : NULL;
    const cJSON *events = cJSON_IsArray(j) ? j : field(j, "events"), *ev;
    const cJSON *state = field(j, "state");
    int ok = cJSON_IsObject(j) || cJSON_IsArray(j);

    memset(out, 0, sizeof *out);
    out->outcome = FLY_CALL_OK;
    /* neither an object nor a list has no state nor events: nothing is read below */
    text_into(state, out->state, sizeof out->state);
    if (cJSON_IsArray(events)) {
        out->has_events = 1;
        if ((ev = latest_exit(events))) {
            out->exited = 1;
            read_exit(ev, out);
        }
    }
    cJSON_Delete(j);
    return ok ? 0 : lerr_set(e, LERR_MALFORMED, "the Machine's answer is not a JSON object or "
                                                 "list");
}

/* ---- following a Machine: the requests ------------------------------------------------- */

/* The bucket a call on one Machine takes: that Machine's own of the kind, else get_rl. */
#define BUCKET(t, kind) ((t)->limits ? &(t)->limits->kind : (t)->get_rl)

/* Opens, sends and ends the call. Returns 0 when the answer's outcome is one of c->accept
 * (an OK answer kept in c->resp for the caller to free when c->keep is set); else -1 with
 * e set and r->outcome saying whether a later try may do better (a 408 outside a wait is
 * a timeout like any other: retry later). r may be NULL. */
static int call_send(struct call *c, struct http_client *http, const struct fly_target *t,
                     struct fly_call_result *r, struct lerr *e)
{
    struct fly_call_result tmp;
    int rc;

    if (!r)
        r = &tmp;
    result_init(r);
    if (call_open(c, http, t, e) < 0)
        return -1;
    rc = send_paced(c, r, e);
    call_end(c);
    if (rc < 0)
        return lerr_wrap(e, "%s", c->who);
    if (c->accept & 1u << r->outcome)
        return 0;
    if (r->outcome == FLY_CALL_RATE_LIMITED) {
        r->outcome = FLY_CALL_RETRY_LATER;
        return lerr_set(e, LERR_HTTP, "%s: still rate limited (HTTP 429) after %d retries",
                        c->who, c->max_retries);
    }
    if (r->outcome == FLY_CALL_TIMED_OUT)
        r->outcome = FLY_CALL_RETRY_LATER;
    return lerr_set(e, LERR_HTTP, "%s: HTTP %d%s%s", c->who, r->status, r->error[0] ? ": " : "",
                    r->error);
}

/* Ends the reading of a kept answer: frees it, and returns what its reader (rc) came to:
 * 0, or -1 (e set) when the reader refused it, which is Fly's trouble, not ours: retry later. */
static int answer_read(struct call *c, struct fly_call_result *r, int rc, struct lerr *e)
{
    http_response_free(&c->resp);
    if (rc == 0)
        return 0;
    r->outcome = FLY_CALL_RETRY_LATER;
    return lerr_wrap(e, "%s: HTTP %d", c->who, r->status);
}

int fly_wait_machine(struct http_client *http, const struct fly_target *t,
                     const char *machine_id, const char *instance_id, const char *state,
                     int timeout_s, struct fly_call_result *out, struct lerr *e)
{
    char query[320], inst[3 * 64 + 1] = "";
    struct call c = { "GET", "wait", machine_id, "wait", query, BUCKET(t, get),
                      .accept = ACCEPT(OK) | ACCEPT(TIMED_OUT) | ACCEPT(GONE) };
    int saved = http->io_timeout_ms, rc;

    result_init(out);
    if (!state || (strcmp(state, "started") && strcmp(state, "stopped") &&
                   strcmp(state, "destroyed")))
        return lerr_set(e, LERR_INVALID, "wait: the state must be started, stopped or destroyed");
    if (timeout_s < 1 || timeout_s > FLY_WAIT_MAX_S)
        return lerr_set(e, LERR_INVALID, "wait: the timeout must be 1 to %d s", FLY_WAIT_MAX_S);
    if (instance_id && text_pct_encode(instance_id, inst, sizeof inst) < 0)
        return lerr_set(e, LERR_INVALID, "wait: the instance id is too long");
    snprintf(query, sizeof query, "state=%s&timeout=%d%s%s", state, timeout_s,
             inst[0] ? "&instance_id=" : "", inst);
    c.timeout_ms = timeout_s * 1000 + FLY_WAIT_SLACK_MS;
    /* Fly answers only when the wait ends: the reads must outlast it */
    if (saved < c.timeout_ms)
        http->io_timeout_ms = c.timeout_ms;
    rc = call_send(&c, http, t, out, e);
    http->io_timeout_ms = saved;
    return rc;
}

/* One GET of a Machine (action NULL) or its events, parsed by fly_parse_exit into out.
 * Returns 0 with out->outcome OK or GONE, else -1. */
static int exit_get(struct http_client *http, const struct fly_target *t,
                    const char *machine_id, const char *action, struct fly_exit *out,
                    struct lerr *e)
{
    struct call c = { "GET", action ? action : "show", machine_id, action, NULL, BUCKET(t, get),
                      .accept = ACCEPT(OK) | ACCEPT(GONE), .keep = 1 };
    struct fly_call_result r;
    int rc = call_send(&c, http, t, &r, e);

    if (rc == 0 && r.outcome == FLY_CALL_OK)
        rc = answer_read(&c, &r, fly_parse_exit(c.resp.body, c.resp.body_len, out, e), e);
    out->outcome = r.outcome;
    out->status = r.status;
    return rc;
}

int fly_machine_exit(struct http_client *http, const struct fly_target *t,
                     const char *machine_id, struct fly_exit *out, struct lerr *e)
{
    char state[sizeof out->state];

    memset(out, 0, sizeof *out);
    if (exit_get(http, t, machine_id, NULL, out, e) < 0)
        return -1;
    if (out->outcome == FLY_CALL_GONE || out->has_events)
        return 0;
    /* a Machine without its events: ask for them (the list has no state: keep the show's) */
    memcpy(state, out->state, sizeof state);
    if (exit_get(http, t, machine_id, "events", out, e) < 0)
        return -1;
    memcpy(out->state, state, sizeof state);
    return 0;
}

int fly_stop_machine(struct http_client *http, const struct fly_target *t,
                     const char *machine_id, struct fly_call_result *out, struct lerr *e)
{
    struct call c = { "POST", "stop", machine_id, "stop", NULL, BUCKET(t, other),
                      .accept = ACCEPT(OK) | ACCEPT(GONE) };

    return call_send(&c, http, t, out, e);
}

int fly_destroy_machine(struct http_client *http, const struct fly_target *t,
                        const char *machine_id, int force, struct fly_call_result *out,
                        struct lerr *e)
{
    struct call c = { "DELETE", "destroy", machine_id, NULL, force ? "force=true" : NULL,
                      BUCKET(t, other), .accept = ACCEPT(OK) | ACCEPT(GONE) };

    return call_send(&c, http, t, out, e);
}

/* ---- a warm pool ---------------------------------------------------------------------- */

void fly_machine_limits_init(struct fly_machine_limits *l)
{
    struct ratelimit *const b[] = { &l->update, &l->lease, &l->other, &l->get };
    struct lerr e;

    /* Fly's figures (fly.h): the actions 1 a second, burst 3; the gets 5, burst 10. Figures
     * ratelimit_init accepts (it refuses only a rate <= 0 or a burst < 1): none fails, so
     * there is never a half-made set to unwind, nor an error to report */
    for (int i = 0; i < 4; i++)
        ratelimit_init(b[i], i < 3 ? 1.0 : 5.0, i < 3 ? 3 : 10, &e);
}

void fly_machine_limits_destroy(struct fly_machine_limits *l)
{
    ratelimit_destroy(&l->update);
    ratelimit_destroy(&l->lease);
    ratelimit_destroy(&l->other);
    ratelimit_destroy(&l->get);
}

/* v is a string of 1..cap-1 printable ASCII characters: copied into out. */
static int printable_into(const cJSON *v, char *out, size_t cap)
{
    size_t n = cJSON_IsString(v) ? strlen(v->valuestring) : 0;

    if (n == 0 || n >= cap)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (v->valuestring[i] < 0x20 || v->valuestring[i] > 0x7E)
            return 0;
    memcpy(out, v->valuestring, n + 1);
    return 1;
}

int fly_update_machine(struct http_client *http, const struct fly_target *t,
                       const char *machine_id, const struct fly_machine_spec *spec,
                       struct fly_machine *out, struct fly_call_result *r, struct lerr *e)
{
    struct call c = { "POST", "update", machine_id, NULL, NULL, BUCKET(t, update),
                      .accept = ACCEPT(OK), .timeout_ms = FLY_CREATE_TIMEOUT_MS, .keep = 1 };
    char *body = NULL;
    int rc;

    memset(out, 0, sizeof *out);
    if (fly_create_body(spec, NULL, &body, &c.body_len, e) < 0) {
        result_init(r);
        return lerr_wrap(e, "Machine %s: update", machine_id);
    }
    c.body = body;
    rc = call_send(&c, http, t, r, e);
    free(body);
    out->status = r->status;
    if (rc < 0)
        return -1;
    if (created_answer(c.resp.body, c.resp.body_len, out) < 0)
        rc = lerr_set(e, LERR_MALFORMED, "not a Machine");
    if (answer_read(&c, r, rc, e) < 0)
        return -1;
    if (!out->id[0])  /* the answer named none (or none usable): it is still this one */
        snprintf(out->id, sizeof out->id, "%s", machine_id);
    return 0;
}

int fly_parse_lease(const char *json, size_t len, char nonce[FLY_NONCE_MAX],
                    long long *expires_at, struct lerr *e)
{
    cJSON *j = json && len ? json_parse(json, len) : NULL;
    const cJSON *data = field(j, "data");
    int ok;

    nonce[0] = '\0';
    ok = printable_into(field(data, "nonce"), nonce, FLY_NONCE_MAX);
    if (!whole(field(data, "expires_at"), 0, 9e15, expires_at))
        *expires_at = 0;
    cJSON_Delete(j);
    return ok ? 0 : lerr_set(e, LERR_MALFORMED, "the lease answer has no usable nonce");
}

int fly_lease_acquire(struct http_client *http, const struct fly_target *t,
                      const char *machine_id, int ttl_s, char nonce[FLY_NONCE_MAX],
                      long long *expires_at, struct fly_call_result *r, struct lerr *e)
{
    struct fly_call_result tmp, *rr = r ? r : &tmp;
    char query[32], body[32];
    struct call c = { "POST", "lease", machine_id, "lease", query, BUCKET(t, lease),
                      .accept = ACCEPT(OK), .body = body, .keep = 1 };
    int rc;

    nonce[0] = '\0';
    *expires_at = 0;
    snprintf(query, sizeof query, "ttl=%d", ttl_s);
    c.body_len = (size_t)snprintf(body, sizeof body, "{\"ttl\":%d}", ttl_s);
    if (call_send(&c, http, t, rr, e) < 0)
        return -1;
    rc = fly_parse_lease(c.resp.body, c.resp.body_len, nonce, expires_at, e);
    if (answer_read(&c, rr, rc, e) < 0)
        return -1;
    log_debug("fly: %s: lease taken until %lld", c.who, *expires_at);
    return 0;
}

int fly_lease_release(struct http_client *http, const struct fly_target *t,
                      const char *machine_id, struct fly_call_result *r, struct lerr *e)
{
    struct call c = { "DELETE", "release", machine_id, "lease", NULL, BUCKET(t, lease),
                      .accept = ACCEPT(OK) | ACCEPT(GONE) };

    return call_send(&c, http, t, r, e);
}

/* One list entry, when it is a live pooled Machine of lambdo's. */
static int pool_entry(const cJSON *m, struct fly_pool_machine *p)
{
    const cJSON *meta = field(field(m, "config"), "metadata");
    const cJSON *owner = field(meta, "managed_by");

    memset(p, 0, sizeof *p);
    if (!cJSON_IsString(owner) || strcmp(owner->valuestring, "lambdo") ||
        !printable_into(field(meta, "lambdo_pool"), p->pool_key, sizeof p->pool_key) ||
        !printable_into(field(m, "id"), p->id, sizeof p->id))
        return 0;
    text_into(field(m, "state"), p->state, sizeof p->state);
    text_into(field(m, "instance_id"), p->instance_id, sizeof p->instance_id);
    text_into(field(m, "region"), p->region, sizeof p->region);
    return strcmp(p->state, "destroyed") && strcmp(p->state, "destroying");
}

int fly_parse_pool_list(const char *json, size_t len, struct fly_pool_machine **out, size_t *n,
                        struct lerr *e)
{
    cJSON *j = json && len ? json_parse(json, len) : NULL;
    int size = cJSON_GetArraySize(j);
    const cJSON *m;
    int rc = 0;

    *out = NULL;
    *n = 0;
    if (!cJSON_IsArray(j))
        rc = lerr_set(e, LERR_MALFORMED, "the Machine list is not a JSON array");
    else if (size > 0 && !(*out = malloc((size_t)size * sizeof **out)))
        rc = lerr_set(e, LERR_NOMEM, "the Machine list: out of memory");
    else
        cJSON_ArrayForEach(m, j)
            *n += (size_t)pool_entry(m, *out + *n);
    cJSON_Delete(j);
    if (*n == 0) {
        free(*out);
        *out = NULL;
    }
    return rc;
}

int fly_list_pool(struct http_client *http, const struct fly_target *t,
                  struct fly_pool_machine **out, size_t *n, struct lerr *e)
{
    struct call c = { "GET", "list", NULL, NULL, NULL, t->get_rl, "/machines",
                      .accept = ACCEPT(OK), .keep = 1 };
    struct fly_call_result r;
    int rc;

    *out = NULL;
    *n = 0;
    if (call_send(&c, http, t, &r, e) < 0)
        return -1;
    rc = fly_parse_pool_list(c.resp.body, c.resp.body_len, out, n, e);
    http_response_free(&c.resp);
    return rc < 0 ? lerr_wrap(e, "%s", c.who) : 0;
}

/* ---- the app (lambdo check) ------------------------------------------------------------ */

int fly_get_app(struct http_client *http, const struct fly_target *t,
                struct fly_call_result *out, struct lerr *e)
{
    struct call c = { "GET", "app", NULL, NULL, NULL, t->get_rl, "", ACCEPT(OK),
                      .max_retries = FLY_APP_RATE_LIMIT_RETRIES };

    return call_send(&c, http, t, out, e);
}

/* ---- lambdo check ---------------------------------------------------------------------- */

int fly_lease_held(struct http_client *http, const struct fly_target *t, const char *machine_id)
{
    struct call c = { "GET", "show lease", machine_id, "lease", NULL, BUCKET(t, get),
                      .accept = ACCEPT(OK) | ACCEPT(GONE) };
    struct fly_call_result r;
    struct lerr e;

    if (call_send(&c, http, t, &r, &e) < 0)
        return -1;
    return r.outcome == FLY_CALL_OK;  /* 404: no lease */
}
