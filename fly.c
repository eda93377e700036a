#include "fly.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "cJSON.h"
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
    cJSON *arr = cJSON_ParseWithLength(command, strlen(command)), *item;
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

void fly_classify(int status, const char *body, size_t body_len, const char *retry_after,
                  size_t retry_after_len, struct fly_answer *a)
{
    cJSON *j = body && body_len ? cJSON_ParseWithLength(body, body_len) : NULL;

    memset(a, 0, sizeof *a);
    a->retry_after_ms = -1;
    a->machine.status = status;
    if (status >= 200 && status < 300) {
        a->outcome = FLY_CREATED;
        copy_field(a->machine.id, sizeof a->machine.id, j, "id");
        copy_field(a->machine.instance_id, sizeof a->machine.instance_id, j, "instance_id");
        copy_field(a->machine.region, sizeof a->machine.region, j, "region");
        cJSON_Delete(j);
        return;
    }
    copy_field(a->error, sizeof a->error, j, "error");
    if (!a->error[0] && body)
        one_line(a->error, sizeof a->error, body, body_len);
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

int fly_machines_url(const struct url *base, const char *app, struct url *out, struct lerr *e)
{
    static const char hex[] = "0123456789ABCDEF";
    char enc[3 * 64 + 1];
    size_t plen = strlen(base->path), o = 0;
    int n;

    if (!app || !app[0])
        return lerr_set(e, LERR_INVALID, "the Fly app name is empty");
    if (strchr(base->path, '?'))
        return lerr_set(e, LERR_INVALID, "the Fly API URL must not have a query");
    for (const unsigned char *p = (const unsigned char *)app; *p; p++) {
        if (o + 4 > sizeof enc)
            return lerr_set(e, LERR_INVALID, "the Fly app name is too long");
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            strchr("-._~", *p)) {
            enc[o++] = (char)*p;
        } else {
            enc[o++] = '%';
            enc[o++] = hex[*p >> 4];
            enc[o++] = hex[*p & 15];
        }
    }
    enc[o] = '\0';
    while (plen > 0 && base->path[plen - 1] == '/')
        plen--;
    *out = *base;
    n = snprintf(out->path, sizeof out->path, "%.*s/v1/apps/%s/machines", (int)plen, base->path,
                 enc);
    if (n < 0 || (size_t)n >= sizeof out->path)
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
        n = poll(p, nfds, left > 0 ? (int)left : 0);
        if (n > 0)
            return lerr_set(e, LERR_CANCELLED, "stopping: Machine create abandoned");
        if (n < 0 && errno != EINTR)
            return lerr_set(e, LERR_IO, "poll: %s", strerror(errno));
        if (left <= 0)
            return 0;
    }
}

/* A connection problem that no other region would fix. */
static int transport_final(enum lerr_kind kind)
{
    return kind == LERR_CANCELLED || kind == LERR_NOMEM || kind == LERR_INVALID ||
           kind == LERR_TLS_UNTRUSTED || kind == LERR_TLS_NAME;
}

/* 1, 2, 4, 8, 16 s: for a 429 without a usable Retry-After. */
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
        if (out->id[0])
            log_info("fly: group %s: created Machine %s in %s (HTTP %d)", at->group, out->id,
                     out->region[0] ? out->region : region_name(at), a->machine.status);
        else
            log_warn("fly: group %s: %s: HTTP %d, but the answer names no Machine id",
                     at->group, region_name(at), a->machine.status);
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
static enum step create_in_region(const struct attempt *at, struct fly_machine *out,
                                  struct lerr *e)
{
    for (int retry = 0;; retry++) {
        struct http_response resp;
        struct fly_answer a;
        const char *ra;
        size_t ra_len = 0;
        enum step step;
        int wait;

        if (http_do(at->http, at->req, &resp, e) < 0) {
            int final = transport_final(e->kind);
            out->status = 0;
            log_warn("fly: group %s: %s: %s%s", at->group, region_name(at), e->msg,
                     final ? "" : "; trying the next region");
            lerr_wrap(e, "%s", region_name(at));
            return final ? STEP_STOP : STEP_NEXT;
        }
        ra = http_response_header(&resp, "Retry-After", &ra_len);
        fly_classify(resp.status, resp.body, resp.body_len, ra, ra_len, &a);
        http_response_free(&resp);
        out->status = a.machine.status;
        if ((step = answer_step(at, &a, out, e)) != STEP_RETRY)
            return step;
        if (retry == FLY_RATE_LIMIT_RETRIES) {
            log_warn("fly: group %s: %s: still rate limited after %d retries; giving up",
                     at->group, region_name(at), retry);
            lerr_set(e, LERR_HTTP, "%s: still rate limited (HTTP 429) after %d retries",
                     region_name(at), retry);
            return STEP_STOP;
        }
        wait = a.retry_after_ms >= 0 ? a.retry_after_ms : backoff_ms(retry);
        log_warn("fly: group %s: %s: rate limited (HTTP 429); retry %d of %d in %d ms",
                 at->group, region_name(at), retry + 1, FLY_RATE_LIMIT_RETRIES, wait);
        if (fly_sleep(at->http, at->t, wait, e) < 0)
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
    struct attempt at = { http, t, &req, spec->group_id ? spec->group_id : "-", NULL };
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
