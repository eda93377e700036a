#include "fly.h"
#include "metrics.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "json.h"
#include "log.h"

/* ---- base64 ---------------------------------------------------------------------------- */

size_t fly_base64_len(size_t n)
{
    return (n / 3 + (n % 3 != 0)) * 4;
}

size_t fly_base64_encode(const void *in, size_t n, char *out)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *s = in;
    size_t o = 0, i = 0;

    for (; n - i >= 3; i += 3) {
        unsigned long v = (unsigned long)s[i] << 16 | (unsigned long)s[i + 1] << 8 | s[i + 2];
        out[o++] = abc[v >> 18];
        out[o++] = abc[v >> 12 & 63];
        out[o++] = abc[v >> 6 & 63];
        out[o++] = abc[v & 63];
    }
    if (n - i == 1) {
        out[o++] = abc[s[i] >> 2];
        out[o++] = abc[(s[i] & 3) << 4];
        out[o++] = '=';
        out[o++] = '=';
    } else if (n - i == 2) {
        out[o++] = abc[s[i] >> 2];
        out[o++] = abc[(s[i] & 3) << 4 | s[i + 1] >> 4];
        out[o++] = abc[(s[i + 1] & 15) << 2];
        out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

/* ---- the create body ------------------------------------------------------------------- */

/* A growing JSON text. After a failed allocation every write is a no-op and failed is
 * set, so the builder below checks once, at the end. */
struct jbuf {
    char *p;
    size_t len, cap;
    int failed;
};

static char *jb_room(struct jbuf *b, size_t more)
{
    size_t need, cap;
    char *p;

    if (b->failed)
        return NULL;
    if (more > SIZE_MAX / 2 - b->len) {
        b->failed = 1;
        return NULL;
    }
    need = b->len + more + 1;
    if (need > b->cap) {
        for (cap = b->cap ? b->cap : 256; cap < need; cap *= 2)
            ;
        if (!(p = realloc(b->p, cap))) {
            b->failed = 1;
            return NULL;
        }
        b->p = p;
        b->cap = cap;
    }
    return b->p + b->len;
}

static void jb_raw(struct jbuf *b, const char *s)
{
    size_t n = strlen(s);
    char *p = jb_room(b, n);

    if (p) {
        memcpy(p, s, n);
        b->len += n;
    }
}

/* A JSON string: quotes, backslashes and control bytes escaped; other bytes as they are
 * (the strings here are checked ASCII or UTF-8). */
static void jb_str(struct jbuf *b, const char *s)
{
    jb_raw(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];

        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            esc[2] = '\0';
        } else if (c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
        } else {
            esc[0] = (char)c;
            esc[1] = '\0';
        }
        jb_raw(b, esc);
    }
    jb_raw(b, "\"");
}

static void jb_int(struct jbuf *b, int v)
{
    char num[16];

    snprintf(num, sizeof num, "%d", v);
    jb_raw(b, num);
}

static void jb_base64(struct jbuf *b, const void *in, size_t n)
{
    char *p;

    jb_raw(b, "\"");
    if ((p = jb_room(b, fly_base64_len(n))))
        b->len += fly_base64_encode(in, n, p);
    jb_raw(b, "\"");
}

static void jb_guest(struct jbuf *b, const struct preset *p)
{
    jb_raw(b, "{\"cpu_kind\":");
    jb_str(b, p->cpu_kind);
    jb_raw(b, ",\"cpus\":");
    jb_int(b, p->cpus);
    jb_raw(b, ",\"memory_mb\":");
    jb_int(b, p->memory_mb);
    if (p->gpus > 0) {
        jb_raw(b, ",\"gpus\":");
        jb_int(b, p->gpus);
        jb_raw(b, ",\"gpu_kind\":");
        jb_str(b, p->gpu_kind);
    }
    jb_raw(b, "}");
}

/* init.cmd from the command attribute: re-serialized, which is safe because it holds
 * only strings (no number can change on the way through a double). */
static int jb_command(struct jbuf *b, const char *command, struct lerr *e)
{
    cJSON *arr = json_parse(command, strlen(command)), *item;
    int i = 0;

    if (!cJSON_IsArray(arr)) {
        cJSON_Delete(arr);
        return lerr_set(e, LERR_INVALID, "command is not a JSON array of strings");
    }
    jb_raw(b, ",\"init\":{\"cmd\":[");
    cJSON_ArrayForEach(item, arr) {
        if (!cJSON_IsString(item)) {
            cJSON_Delete(arr);
            return lerr_set(e, LERR_INVALID, "command element %d is not a string", i + 1);
        }
        if (i++)
            jb_raw(b, ",");
        jb_str(b, item->valuestring);
    }
    jb_raw(b, "]}");
    cJSON_Delete(arr);
    return 0;
}

int fly_create_body(const struct fly_machine_spec *spec, const char *region, char **out,
                    size_t *len, struct lerr *e)
{
    struct jbuf b = { 0 };

    *out = NULL;
    if (!spec->image || !spec->image[0] || !spec->preset)
        return lerr_set(e, LERR_INVALID, "a Machine needs an image and a size preset");
    /* one allocation in the common case: the events dominate */
    if (!jb_room(&b, fly_base64_len(spec->events_len) + 1024))
        return lerr_set(e, LERR_NOMEM, "create body: out of memory");
    jb_raw(&b, "{");
    if (region) {
        jb_raw(&b, "\"region\":");
        jb_str(&b, region);
        jb_raw(&b, ",");
    }
    jb_raw(&b, "\"config\":{\"image\":");
    jb_str(&b, spec->image);
    jb_raw(&b, ",\"guest\":");
    jb_guest(&b, spec->preset);
    jb_raw(&b, ",\"env\":{\"EVENTS_PATH\":\"" FLY_EVENTS_PATH "\"}");
    jb_raw(&b, ",\"files\":[{\"guest_path\":\"" FLY_EVENTS_PATH "\",\"raw_value\":");
    jb_base64(&b, spec->events, spec->events_len);
    jb_raw(&b, "}],\"auto_destroy\":true,\"restart\":{\"policy\":\"no\"}");
    if (spec->command && jb_command(&b, spec->command, e) < 0) {
        free(b.p);
        return -1;
    }
    jb_raw(&b, ",\"metadata\":{\"managed_by\":\"lambdo\",\"lambdo_group\":");
    jb_str(&b, spec->group_id ? spec->group_id : "");
    jb_raw(&b, "}}}");
    if (b.failed) {
        free(b.p);
        return lerr_set(e, LERR_NOMEM, "create body: out of memory");
    }
    b.p[b.len] = '\0';
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

static void copy_field(char *out, size_t cap, const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);

    if (cJSON_IsString(v))
        one_line(out, cap, v->valuestring, strlen(v->valuestring));
}

/* What went wrong, in Fly's words: the answer's "error", else the start of the body. */
static void error_text(char *out, size_t cap, const cJSON *j, const char *body, size_t len)
{
    copy_field(out, cap, j, "error");
    if (!out[0] && body)
        one_line(out, cap, body, len);
}

int fly_retry_after_ms(const char *value, size_t len)
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

/* Fly says a host or region is full in several ways: 503, a "status" of
 * "insufficient_capacity", and 409/412 answers like "insufficient memory available". */
static int capacity_error(int status, const cJSON *j, const char *error)
{
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "status");

    if (cJSON_IsString(st) && strcmp(st->valuestring, "insufficient_capacity") == 0)
        return 1;
    return (status == 409 || status == 412) && strcasestr(error, "insufficient");
}

/* An id lambdo can follow the Machine by: a string that copy_field keeps as it is. */
static int usable_id(const cJSON *j, const char *copied)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "id");

    return copied[0] && cJSON_IsString(v) && strcmp(v->valuestring, copied) == 0;
}

void fly_classify(int status, const char *body, size_t body_len, const char *retry_after,
                  size_t retry_after_len, struct fly_answer *a)
{
    cJSON *j = body && body_len ? json_parse(body, body_len) : NULL;

    memset(a, 0, sizeof *a);
    a->retry_after_ms = -1;
    a->machine.status = status;
    if (status >= 200 && status < 300) {
        copy_field(a->machine.id, sizeof a->machine.id, j, "id");
        if (usable_id(j, a->machine.id)) {
            a->outcome = FLY_CREATED;
            copy_field(a->machine.instance_id, sizeof a->machine.instance_id, j, "instance_id");
            copy_field(a->machine.region, sizeof a->machine.region, j, "region");
            cJSON_Delete(j);
            return;
        }
        /* Nothing to wait for, stop or destroy: a failed create, never a Machine id "" */
        a->machine.id[0] = '\0';
        snprintf(a->error, sizeof a->error, "the answer names no usable Machine id");
        a->outcome = FLY_GIVE_UP;
        cJSON_Delete(j);
        return;
    }
    error_text(a->error, sizeof a->error, j, body, body_len);
    if (status == 429) {
        a->outcome = FLY_RETRY;
        a->retry_after_ms = fly_retry_after_ms(retry_after, retry_after_len);
    } else if (status >= 500 || status == 408 || capacity_error(status, j, a->error)) {
        a->outcome = FLY_NEXT_REGION;
    } else {
        a->outcome = FLY_GIVE_UP;
    }
    cJSON_Delete(j);
}

/* ---- request parts --------------------------------------------------------------------- */

int fly_auth_header(const char *token, char **out, struct lerr *e)
{
    const char *scheme = "Bearer ";
    size_t n;

    *out = NULL;
    if (!token || !token[0])
        return lerr_set(e, LERR_INVALID, "the Fly token is empty");
    for (const unsigned char *p = (const unsigned char *)token; *p; p++)
        if (*p < 0x20 || *p == 0x7F)
            return lerr_set(e, LERR_INVALID, "the Fly token has a control character");
    if (strncmp(token, "FlyV1 ", 6) == 0 || strncasecmp(token, "Bearer ", 7) == 0)
        scheme = "";
    n = strlen(scheme) + strlen(token) + 1;
    if (!(*out = malloc(n)))
        return lerr_set(e, LERR_NOMEM, "Authorization header: out of memory");
    snprintf(*out, n, "%s%s", scheme, token);
    return 0;
}

void fly_secret_free(char *s)
{
    if (s) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

/* s percent-encoded (all but RFC 3986's unreserved characters) into out[cap].
 * Returns -1 when it does not fit. */
static int pct_encode(const char *s, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;

    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (o + 4 > cap)
            return -1;
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            strchr("-._~", *p)) {
            out[o++] = (char)*p;
        } else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    out[o] = '\0';
    return 0;
}

int fly_machines_url(const struct url *base, const char *app, struct url *out, struct lerr *e)
{
    char enc[3 * 64 + 1];
    size_t plen = strlen(base->path);
    int n;

    if (!app || !app[0])
        return lerr_set(e, LERR_INVALID, "the Fly app name is empty");
    if (strchr(base->path, '?'))
        return lerr_set(e, LERR_INVALID, "the Fly API URL must not have a query");
    if (pct_encode(app, enc, sizeof enc) < 0)
        return lerr_set(e, LERR_INVALID, "the Fly app name is too long");
    while (plen > 0 && base->path[plen - 1] == '/')
        plen--;
    *out = *base;
    n = snprintf(out->path, sizeof out->path, "%.*s/v1/apps/%s/machines", (int)plen, base->path,
                 enc);
    if (n < 0 || (size_t)n >= sizeof out->path)
        return lerr_set(e, LERR_INVALID, "the Fly API URL's path is too long");
    return 0;
}

int fly_machine_url(const struct url *base, const char *app, const char *machine_id,
                    const char *action, const char *query, struct url *out, struct lerr *e)
{
    char enc[3 * 64 + 1];
    size_t len;
    int n;

    if (fly_machines_url(base, app, out, e) < 0)
        return -1;
    if (!machine_id || !machine_id[0])
        return lerr_set(e, LERR_INVALID, "the Machine id is empty");
    if (pct_encode(machine_id, enc, sizeof enc) < 0)
        return lerr_set(e, LERR_INVALID, "the Machine id is too long");
    len = strlen(out->path);
    n = snprintf(out->path + len, sizeof out->path - len, "/%s%s%s%s%s", enc,
                 action ? "/" : "", action ? action : "", query ? "?" : "", query ? query : "");
    if (n < 0 || (size_t)n >= sizeof out->path - len)
        return lerr_set(e, LERR_INVALID, "the Fly API URL's path is too long");
    return 0;
}

/* ---- the network part ------------------------------------------------------------------ */

enum step { STEP_DONE, STEP_NEXT, STEP_STOP, STEP_RETRY };

/* The fds whose readability means "stop": the client's cancel_fd and the target's
 * stop_fd, those that are set. Returns how many. */
static nfds_t stop_fds(const struct http_client *http, const struct fly_target *t,
                       struct pollfd p[2])
{
    nfds_t n = 0;

    if (http->cancel_fd >= 0)
        p[n++] = (struct pollfd){ http->cancel_fd, POLLIN, 0 };
    if (t->stop_fd && *t->stop_fd >= 0)
        p[n++] = (struct pollfd){ *t->stop_fd, POLLIN, 0 };
    return n;
}

/* Sleeps ms milliseconds (0: just looks) unless a stop fd becomes readable first. */
static int fly_sleep(const struct http_client *http, const struct fly_target *t, int ms,
                     struct lerr *e)
{
    struct timespec t0, now;
    struct pollfd p[2];
    nfds_t nfds = stop_fds(http, t, p);

    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        long left;
        int n;

        clock_gettime(CLOCK_MONOTONIC, &now);
        left = ms - ((now.tv_sec - t0.tv_sec) * 1000L + (now.tv_nsec - t0.tv_nsec) / 1000000L);
        n = poll(p, nfds, left <= 0 ? 0 : left > 1000 && t->idle ? 1000 : (int)left);
        if (n > 0)
            return lerr_set(e, LERR_CANCELLED, "stopping: Fly request abandoned");
        if (n < 0 && errno != EINTR)
            return lerr_set(e, LERR_IO, "poll: %s", strerror(errno));
        if (left <= 0)
            return 0;
        if (t->idle)
            t->idle(t->idle_ctx);
    }
}

/* The stop fds as a list, for ratelimit_take_fds. Returns how many. */
static size_t stop_fd_list(const struct http_client *http, const struct fly_target *t,
                           int fds[2])
{
    size_t n = 0;

    if (http->cancel_fd >= 0)
        fds[n++] = http->cancel_fd;
    if (t->stop_fd && *t->stop_fd >= 0)
        fds[n++] = *t->stop_fd;
    return n;
}

/* Before each request: a token of rl (waiting for it if need be), and none once
 * stopping. Without a limiter, only the stop check. */
static int pace(const struct http_client *http, const struct fly_target *t,
                struct ratelimit *rl, struct lerr *e)
{
    int fds[2];

    if (!rl)
        return fly_sleep(http, t, 0, e);
    return ratelimit_take_idle(rl, fds, stop_fd_list(http, t, fds), t->idle, t->idle_ctx, e);
}

/* After a 429, the wait before the retry. With a limiter, every thread pauses: the
 * penalty makes the next pace() wait (and that wait ends on a stop). */
static int rate_limited_wait(const struct http_client *http, const struct fly_target *t,
                             struct ratelimit *rl, int ms, struct lerr *e)
{
    if (!rl)
        return fly_sleep(http, t, ms, e);
    ratelimit_penalize(rl, ms);
    return 0;
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

struct attempt {
    struct http_client *http;
    const struct fly_target *t;
    const struct http_request *req;
    const char *group;    /* for log lines */
    const char *region;   /* NULL: Fly chooses */
    int prepaid;          /* the caller already took the first create token */
};

static const char *region_name(const struct attempt *at)
{
    return at->region ? at->region : "any region";
}

/* What an answer means for this create: done, next region, stop, or STEP_RETRY. */
static enum step answer_step(const struct attempt *at, const struct fly_answer *a,
                             struct fly_machine *out, struct lerr *e)
{
    switch (a->outcome) {
    case FLY_CREATED:
        *out = a->machine;
        if (!out->region[0] && at->region)
            snprintf(out->region, sizeof out->region, "%s", at->region);
        log_info("fly: group %s: created Machine %s in %s (HTTP %d)", at->group, out->id,
                 out->region[0] ? out->region : region_name(at), a->machine.status);
        return STEP_DONE;
    case FLY_NEXT_REGION:
        log_warn("fly: group %s: %s: HTTP %d: %s; trying the next region", at->group,
                 region_name(at), a->machine.status, a->error);
        lerr_set(e, LERR_HTTP, "%s: HTTP %d: %s", region_name(at), a->machine.status, a->error);
        return STEP_NEXT;
    case FLY_GIVE_UP:
        log_warn("fly: group %s: %s: HTTP %d: %s; not retrying", at->group, region_name(at),
                 a->machine.status, a->error);
        lerr_set(e, LERR_HTTP, "Fly refused the Machine in %s: HTTP %d: %s", region_name(at),
                 a->machine.status, a->error);
        return STEP_STOP;
    case FLY_RETRY:
        break;
    }
    return STEP_RETRY;
}

/* One region: the first try, and its 429 retries. */
static enum step create_in_region(struct attempt *at, struct fly_machine *out,
                                  struct lerr *e)
{
    for (int retry = 0;; retry++) {
        struct http_response resp;
        struct fly_answer a;
        const char *ra;
        size_t ra_len = 0;
        enum step step;
        int wait;
        double t0;

        if (at->prepaid)
            at->prepaid = 0;
        else if (pace(at->http, at->t, at->t->create_rl, e) < 0) {
            log_warn("fly: group %s: %s: %s", at->group, region_name(at), e->msg);
            return STEP_STOP;
        }
        t0 = metrics_clock();
        if (http_do(at->http, at->req, &resp, e) < 0) {
            int final = transport_final(e->kind);
            metrics_observe(at->t->metrics, METRICS_FLY, "create", metrics_clock() - t0);
            if (e->kind != LERR_CANCELLED)
                metrics_count_region(at->t->metrics, METRICS_MACHINES_FAILED, at->region);
            out->status = 0;
            log_warn("fly: group %s: %s: %s%s", at->group, region_name(at), e->msg,
                     final ? "" : "; trying the next region");
            lerr_wrap(e, "%s", region_name(at));
            return final ? STEP_STOP : STEP_NEXT;
        }
        metrics_observe(at->t->metrics, METRICS_FLY, "create", metrics_clock() - t0);
        ra = http_response_header(&resp, "Retry-After", &ra_len);
        fly_classify(resp.status, resp.body, resp.body_len, ra, ra_len, &a);
        http_response_free(&resp);
        out->status = a.machine.status;
        if (a.outcome == FLY_RETRY)
            metrics_count(at->t->metrics, METRICS_FLY_RATE_LIMITED, 1);
        else if (a.outcome != FLY_CREATED)
            metrics_count_region(at->t->metrics, METRICS_MACHINES_FAILED, at->region);
        if ((step = answer_step(at, &a, out, e)) != STEP_RETRY)
            return step;
        wait = a.retry_after_ms >= 0 ? a.retry_after_ms : backoff_ms(retry);
        if (!at->t->unlimited_429_retries && retry == FLY_RATE_LIMIT_RETRIES) {
            /* the other creators still have to hear of it */
            if (at->t->create_rl)
                ratelimit_penalize(at->t->create_rl, wait);
            log_warn("fly: group %s: %s: still rate limited after %d retries; giving up",
                     at->group, region_name(at), retry);
            lerr_set(e, LERR_HTTP, "%s: still rate limited (HTTP 429) after %d retries",
                     region_name(at), retry);
            return STEP_STOP;
        }
        log_warn("fly: group %s: %s: rate limited (HTTP 429); retry %d of %d in %d ms",
                 at->group, region_name(at), retry + 1, FLY_RATE_LIMIT_RETRIES, wait);
        if (rate_limited_wait(at->http, at->t, at->t->create_rl, wait, e) < 0)
            return STEP_STOP;
    }
}

static void region_list(char *out, size_t cap, const char *const *regions, size_t n)
{
    size_t o = 0;

    out[0] = '\0';
    for (size_t i = 0; i < n && o < cap; i++)
        o += (size_t)snprintf(out + o, cap - o, "%s%s", i ? ", " : "", regions[i]);
}

int fly_create_machine(struct http_client *http, const struct fly_target *t,
                       const struct fly_machine_spec *spec, const char *const *regions,
                       size_t nregions, struct fly_machine *out, struct lerr *e)
{
    struct url url;
    struct http_header headers[2] = { { "Authorization", NULL },
                                      { "Content-Type", "application/json" } };
    struct http_request req = { "POST", &url, headers, 2, NULL, 0, FLY_CREATE_TIMEOUT_MS };
    struct attempt at = { http, t, &req, spec->group_id ? spec->group_id : "-", NULL,
                          t->create_prepaid };
    char *auth = NULL, tried[128];
    enum step step = STEP_STOP;

    memset(out, 0, sizeof *out);
    if (fly_machines_url(t->base, t->app, &url, e) < 0 || fly_auth_header(t->token, &auth, e) < 0)
        return -1;
    headers[0].value = auth;
    for (size_t r = 0; r < (nregions ? nregions : 1); r++) {
        char *body = NULL;
        size_t len = 0;

        at.region = nregions ? regions[r] : NULL;
        step = STEP_STOP;
        /* a stop lets the request in flight finish, but starts no other */
        if (fly_sleep(http, t, 0, e) < 0) {
            log_warn("fly: group %s: stopping: not trying %s", at.group, region_name(&at));
            break;
        }
        if (fly_create_body(spec, at.region, &body, &len, e) < 0)
            break;
        req.body = body;
        req.body_len = len;
        step = create_in_region(&at, out, e);
        free(body);
        if (step != STEP_NEXT)
            break;
    }
    fly_secret_free(auth);
    if (step == STEP_DONE)
        return 0;
    if (step == STEP_NEXT) {
        region_list(tried, sizeof tried, regions, nregions);
        lerr_wrap(e, "no region could create the Machine (tried %s); last",
                  nregions ? tried : "any region");
    }
    return -1;
}

/* ---- following a Machine: its answers (pure) ------------------------------------------- */

/* How Fly may word "that Machine no longer exists" outside a 404: a wait for "stopped"
 * on a destroyed Machine, for one. */
static int says_gone(const char *error)
{
    return strcasestr(error, "destroyed") || strcasestr(error, "not found");
}

void fly_classify_call(int status, const char *body, size_t body_len, const char *retry_after,
                       size_t retry_after_len, struct fly_call_result *r)
{
    cJSON *j;

    memset(r, 0, sizeof *r);
    r->status = status;
    r->retry_after_ms = -1;
    if (status >= 200 && status < 300) {
        r->outcome = FLY_CALL_OK;
        return;
    }
    j = body && body_len ? json_parse(body, body_len) : NULL;
    error_text(r->error, sizeof r->error, j, body, body_len);
    cJSON_Delete(j);
    if (status == 404 || status == 410) {
        r->outcome = FLY_CALL_GONE;
    } else if (status == 408) {
        r->outcome = FLY_CALL_TIMED_OUT;
    } else if (status == 429) {
        r->outcome = FLY_CALL_RATE_LIMITED;
        r->retry_after_ms = fly_retry_after_ms(retry_after, retry_after_len);
    } else if (status >= 500) {
        r->outcome = FLY_CALL_RETRY_LATER;
    } else if (status >= 400 && says_gone(r->error)) {
        r->outcome = FLY_CALL_GONE;
    } else {
        r->outcome = FLY_CALL_FAILED;
    }
}

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

static const cJSON *field(const cJSON *obj, const char *name)
{
    return cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, name) : NULL;
}

/* The latest "exit" event: the greatest timestamp (events without a usable one count as
 * older than all others), the first of equals since Fly lists the newest first. */
static const cJSON *latest_exit(const cJSON *events, long long *ts_out)
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
    *ts_out = best_ts;
    return best;
}

/* exit_event's fields into out. The exit code is the first of exit_code and
 * guest_exit_code that is a real exit status (0..255): Fly writes -1 for "none". */
static void read_exit_event(const cJSON *x, struct fly_exit *out)
{
    long long v;

    if (whole(field(x, "exit_code"), 0, 255, &v) ||
        whole(field(x, "guest_exit_code"), 0, 255, &v)) {
        out->known = 1;
        out->exit_code = (int)v;
    }
    out->oom_killed = cJSON_IsTrue(field(x, "oom_killed"));
    out->requested_stop = cJSON_IsTrue(field(x, "requested_stop"));
    if (whole(field(x, "signal"), 1, 255, &v) || whole(field(x, "guest_signal"), 1, 255, &v))
        out->signal = (int)v;
    copy_field(out->exited_at, sizeof out->exited_at, x, "exited_at");
}

/* The exit event's request.exit_event. The spec types request as an object, its example
 * shows a JSON text: both are read. Without exit_event, the request itself is tried. */
static void read_exit(const cJSON *ev, struct fly_exit *out)
{
    const cJSON *req = field(ev, "request"), *x;
    cJSON *parsed = NULL;

    if (cJSON_IsString(req))
        req = parsed = json_parse(req->valuestring, strlen(req->valuestring));
    x = field(req, "exit_event");
    read_exit_event(cJSON_IsObject(x) ? x : req, out);
    cJSON_Delete(parsed);
}

/* fly_parse_exit, also telling whether the answer had an event list at all. */
static int parse_exit(const char *json, size_t len, struct fly_exit *out, int *has_events,
                      struct lerr *e)
{
    cJSON *j = json && len ? json_parse(json, len) : NULL;
    const cJSON *events, *ev;
    long long ts;

    memset(out, 0, sizeof *out);
    out->outcome = FLY_CALL_OK;
    out->signal = -1;
    *has_events = 0;
    if (!j)
        return lerr_set(e, LERR_MALFORMED, "the Machine's answer is not JSON");
    if (cJSON_IsObject(j)) {
        copy_field(out->region, sizeof out->region, j, "region");
        copy_field(out->state, sizeof out->state, j, "state");
        events = cJSON_GetObjectItemCaseSensitive(j, "events");
    } else if (cJSON_IsArray(j)) {
        events = j;
    } else {
        cJSON_Delete(j);
        return lerr_set(e, LERR_MALFORMED, "the Machine's answer is neither an object nor a list");
    }
    if (cJSON_IsArray(events)) {
        *has_events = 1;
        if ((ev = latest_exit(events, &ts))) {
            out->exited = 1;
            out->timestamp_ms = ts > 0 ? ts : 0;
            read_exit(ev, out);
        }
    }
    cJSON_Delete(j);
    return 0;
}

int fly_parse_exit(const char *json, size_t len, struct fly_exit *out, struct lerr *e)
{
    int has_events;

    return parse_exit(json, len, out, &has_events, e);
}

/* ---- following a Machine: the requests ------------------------------------------------- */

struct call {
    struct http_client *http;
    const struct fly_target *t;
    const char *method;
    const char *what;        /* names the call in logs and errors: "wait", "stop"... */
    const char *machine_id;
    int timeout_ms;
};

/* Sends the request, each time after a get_rl token, until an answer that is not a 429.
 * Returns 0 with resp (to free) and r, its classification; or -1 with e set and
 * r->outcome saying whether a later try may do better. */
static int call_send(const struct call *c, const struct url *url, struct http_response *resp,
                     struct fly_call_result *r, struct lerr *e)
{
    struct http_header headers[1] = { { "Authorization", NULL } };
    struct http_request req = { c->method, url, headers, 1, NULL, 0, c->timeout_ms };
    struct ratelimit *rl = c->t->get_rl;
    char *auth = NULL;
    int rc = -1;

    memset(r, 0, sizeof *r);
    r->retry_after_ms = -1;
    r->outcome = FLY_CALL_FAILED;
    if (fly_auth_header(c->t->token, &auth, e) < 0)
        return -1;
    headers[0].value = auth;
    for (int retry = 0;; retry++) {
        const char *ra;
        size_t ra_len = 0;
        int wait, rc_do;
        double t0;

        if (pace(c->http, c->t, rl, e) < 0) {
            r->outcome = FLY_CALL_FAILED;  /* a stop: even after a 429, do not retry */
            break;
        }
        t0 = metrics_clock();
        rc_do = http_do(c->http, &req, resp, e);
        metrics_observe(c->t->metrics, METRICS_FLY, c->what, metrics_clock() - t0);
        if (rc_do < 0) {
            /* no answer this time: nothing of an earlier 429 stays */
            memset(r, 0, sizeof *r);
            r->retry_after_ms = -1;
            r->outcome = transport_final(e->kind) ? FLY_CALL_FAILED : FLY_CALL_RETRY_LATER;
            log_debug("fly: Machine %s: %s: %s", c->machine_id, c->what, e->msg);
            break;
        }
        ra = http_response_header(resp, "Retry-After", &ra_len);
        fly_classify_call(resp->status, resp->body, resp->body_len, ra, ra_len, r);
        log_debug("fly: Machine %s: %s: HTTP %d%s%s", c->machine_id, c->what, r->status,
                  r->error[0] ? ": " : "", r->error);
        if (r->outcome != FLY_CALL_RATE_LIMITED) {
            rc = 0;
            break;
        }
        metrics_count(c->t->metrics, METRICS_FLY_RATE_LIMITED, 1);
        http_response_free(resp);
        wait = r->retry_after_ms >= 0 ? r->retry_after_ms : backoff_ms(retry);
        if (retry == FLY_RATE_LIMIT_RETRIES) {
            if (rl)
                ratelimit_penalize(rl, wait);
            r->outcome = FLY_CALL_RETRY_LATER;
            lerr_set(e, LERR_HTTP, "still rate limited (HTTP 429) after %d retries", retry);
            break;
        }
        log_debug("fly: Machine %s: %s: rate limited; retry %d of %d in %d ms", c->machine_id,
                  c->what, retry + 1, FLY_RATE_LIMIT_RETRIES, wait);
        if (rate_limited_wait(c->http, c->t, rl, wait, e) < 0) {
            r->outcome = FLY_CALL_FAILED;
            break;
        }
    }
    fly_secret_free(auth);
    if (rc < 0)
        lerr_wrap(e, "Machine %s: %s", c->machine_id, c->what);
    return rc;
}

/* An answer that is none of the call's successes. A 408 outside a wait is a timeout
 * like any other: retry later. */
static int call_failed(const struct call *c, struct fly_call_result *r, struct lerr *e)
{
    if (r->outcome == FLY_CALL_TIMED_OUT)
        r->outcome = FLY_CALL_RETRY_LATER;
    return lerr_set(e, LERR_HTTP, "Machine %s: %s: HTTP %d%s%s", c->machine_id, c->what,
                    r->status, r->error[0] ? ": " : "", r->error);
}

static int valid_state(const char *state)
{
    return state && (strcmp(state, "started") == 0 || strcmp(state, "stopped") == 0 ||
                     strcmp(state, "destroyed") == 0);
}

int fly_wait_machine(struct http_client *http, const struct fly_target *t,
                     const char *machine_id, const char *instance_id, const char *state,
                     int timeout_s, struct fly_call_result *out, struct lerr *e)
{
    struct call c = { http, t, "GET", "wait", machine_id ? machine_id : "", 0 };
    struct http_response resp;
    struct url url;
    char query[320], inst[3 * 64 + 1] = "";
    int saved, rc;

    memset(out, 0, sizeof *out);
    out->outcome = FLY_CALL_FAILED;
    out->retry_after_ms = -1;
    if (!valid_state(state))
        return lerr_set(e, LERR_INVALID, "wait: the state must be started, stopped or destroyed");
    if (timeout_s < 1 || timeout_s > FLY_WAIT_MAX_S)
        return lerr_set(e, LERR_INVALID, "wait: the timeout must be 1 to %d s", FLY_WAIT_MAX_S);
    c.timeout_ms = timeout_s * 1000 + FLY_WAIT_SLACK_MS;
    if (instance_id && pct_encode(instance_id, inst, sizeof inst) < 0)
        return lerr_set(e, LERR_INVALID, "wait: the instance id is too long");
    snprintf(query, sizeof query, "state=%s&timeout=%d%s%s", state, timeout_s,
             inst[0] ? "&instance_id=" : "", inst);
    if (fly_machine_url(t->base, t->app, machine_id, "wait", query, &url, e) < 0)
        return -1;
    /* Fly answers only when the wait ends: the reads must outlast it */
    saved = http->io_timeout_ms;
    if (saved < c.timeout_ms)
        http->io_timeout_ms = c.timeout_ms;
    rc = call_send(&c, &url, &resp, out, e);
    http->io_timeout_ms = saved;
    if (rc < 0)
        return -1;
    http_response_free(&resp);
    if (out->outcome == FLY_CALL_OK || out->outcome == FLY_CALL_TIMED_OUT ||
        out->outcome == FLY_CALL_GONE)
        return 0;
    return call_failed(&c, out, e);
}

/* One GET of a Machine or its events, parsed by parse_exit into out. Returns 0 with
 * out->outcome OK or GONE, else -1. */
static int exit_get(const struct call *c, const char *action, struct fly_exit *out,
                    int *has_events, struct lerr *e)
{
    struct fly_call_result r;
    struct http_response resp;
    struct url url;
    int rc;

    *has_events = 0;
    if (fly_machine_url(c->t->base, c->t->app, c->machine_id, action, NULL, &url, e) < 0)
        return -1;
    if (call_send(c, &url, &resp, &r, e) < 0) {
        out->outcome = r.outcome;
        out->status = r.status;
        return -1;
    }
    if (r.outcome != FLY_CALL_OK) {
        http_response_free(&resp);
        out->status = r.status;
        out->outcome = r.outcome;
        if (r.outcome == FLY_CALL_GONE) {
            out->gone = 1;
            return 0;
        }
        rc = call_failed(c, &r, e);
        out->outcome = r.outcome;
        return rc;
    }
    rc = parse_exit(resp.body, resp.body_len, out, has_events, e);
    http_response_free(&resp);
    out->status = r.status;
    if (rc < 0) {
        out->outcome = FLY_CALL_RETRY_LATER;
        return lerr_wrap(e, "Machine %s: %s", c->machine_id, c->what);
    }
    return 0;
}

int fly_machine_exit(struct http_client *http, const struct fly_target *t,
                     const char *machine_id, struct fly_exit *out, struct lerr *e)
{
    struct call c = { http, t, "GET", "show", machine_id ? machine_id : "", FLY_CALL_TIMEOUT_MS };
    struct fly_exit ev;
    int has_events;

    memset(out, 0, sizeof *out);
    out->outcome = FLY_CALL_FAILED;
    out->signal = -1;
    if (exit_get(&c, NULL, out, &has_events, e) < 0)
        return -1;
    if (out->gone || has_events)
        return 0;
    /* a Machine without its events: ask for them */
    c.what = "events";
    memset(&ev, 0, sizeof ev);
    ev.signal = -1;
    if (exit_get(&c, "events", &ev, &has_events, e) < 0) {
        out->outcome = ev.outcome;
        out->status = ev.status;
        return -1;
    }
    if (!ev.region[0])
        memcpy(ev.region, out->region, sizeof ev.region);
    if (!ev.state[0])
        memcpy(ev.state, out->state, sizeof ev.state);
    *out = ev;
    return 0;
}

/* A stop or delete: 0 when Fly accepted it or no longer knows the Machine. */
static int machine_action(struct http_client *http, const struct fly_target *t,
                          const char *method, const char *what, const char *machine_id,
                          const char *action, const char *query, struct fly_call_result *out,
                          struct lerr *e)
{
    struct call c = { http, t, method, what, machine_id ? machine_id : "", FLY_CALL_TIMEOUT_MS };
    struct fly_call_result tmp, *r = out ? out : &tmp;
    struct http_response resp;
    struct url url;

    memset(r, 0, sizeof *r);
    r->outcome = FLY_CALL_FAILED;
    r->retry_after_ms = -1;
    if (fly_machine_url(t->base, t->app, machine_id, action, query, &url, e) < 0 ||
        call_send(&c, &url, &resp, r, e) < 0)
        return -1;
    http_response_free(&resp);
    if (r->outcome == FLY_CALL_OK || r->outcome == FLY_CALL_GONE)
        return 0;
    return call_failed(&c, r, e);
}

int fly_stop_machine(struct http_client *http, const struct fly_target *t,
                     const char *machine_id, struct fly_call_result *out, struct lerr *e)
{
    return machine_action(http, t, "POST", "stop", machine_id, "stop", NULL, out, e);
}

int fly_destroy_machine(struct http_client *http, const struct fly_target *t,
                        const char *machine_id, int force, struct fly_call_result *out,
                        struct lerr *e)
{
    return machine_action(http, t, "DELETE", "destroy", machine_id, NULL,
                          force ? "force=true" : NULL, out, e);
}

/* ---- the app (lambdo check) ------------------------------------------------------------ */

int fly_app_url(const struct url *base, const char *app, struct url *out, struct lerr *e)
{
    static const char suffix[] = "/machines";

    if (fly_machines_url(base, app, out, e) < 0)
        return -1;
    out->path[strlen(out->path) - (sizeof suffix - 1)] = '\0';
    return 0;
}

/* An answer other than 2xx, as the error the caller shows. */
static int app_failed(const struct fly_target *t, struct fly_call_result *r, struct lerr *e)
{
    if (r->outcome == FLY_CALL_RATE_LIMITED || r->outcome == FLY_CALL_TIMED_OUT)
        r->outcome = FLY_CALL_RETRY_LATER;
    return lerr_set(e, LERR_HTTP, "Fly app %s: HTTP %d%s%s", t->app, r->status,
                    r->error[0] ? ": " : "", r->error);
}

int fly_get_app(struct http_client *http, const struct fly_target *t,
                struct fly_call_result *out, struct lerr *e)
{
    struct http_header headers[1] = { { "Authorization", NULL } };
    struct http_response resp;
    struct url url;
    char *auth = NULL;
    int rc = -1;

    memset(out, 0, sizeof *out);
    out->outcome = FLY_CALL_FAILED;
    out->retry_after_ms = -1;
    if (fly_app_url(t->base, t->app, &url, e) < 0 || fly_auth_header(t->token, &auth, e) < 0)
        return -1;
    headers[0].value = auth;
    for (int retry = 0;; retry++) {
        const struct http_request req = { "GET", &url, headers, 1, NULL, 0, FLY_CALL_TIMEOUT_MS };
        const char *ra;
        size_t ra_len = 0;

        if (pace(http, t, t->get_rl, e) < 0)
            break;
        if (http_do(http, &req, &resp, e) < 0) {
            out->status = 0;
            out->outcome = transport_final(e->kind) ? FLY_CALL_FAILED : FLY_CALL_RETRY_LATER;
            lerr_wrap(e, "Fly app %s", t->app);
            break;
        }
        ra = http_response_header(&resp, "Retry-After", &ra_len);
        fly_classify_call(resp.status, resp.body, resp.body_len, ra, ra_len, out);
        http_response_free(&resp);
        if (out->outcome == FLY_CALL_OK) {
            rc = 0;
            break;
        }
        if (out->outcome != FLY_CALL_RATE_LIMITED || retry == FLY_APP_RATE_LIMIT_RETRIES) {
            app_failed(t, out, e);
            break;
        }
        if (rate_limited_wait(http, t, t->get_rl, out->retry_after_ms >= 0 ? out->retry_after_ms
                                                                            : backoff_ms(retry),
                              e) < 0)
            break;
    }
    fly_secret_free(auth);
    return rc;
}
