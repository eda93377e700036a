/* libFuzzer target for fly.c's readers of Fly's answers: fly_classify (creates, and
 * wait, show, stop, delete; a 429's Retry-After), fly_parse_exit (a Machine or its event
 * list), fly_parse_lease, fly_parse_pool_list, and the Machine URL builder fed with
 * hostile ids.
 *
 * Input: two bytes of status (big-endian, taken modulo 700), a length byte and that many
 * bytes of Retry-After value, then the body (everything left). Every buffer handed to
 * fly.c is a copy of exactly its length, without a NUL, so a read past it is caught.
 *
 * Invariants: no crash or leak; every output string NUL-terminated inside its array and
 * printable ASCII; the classifications are total and agree with the status class; the
 * exit fields are consistent (a known code is 0..255 and implies an exit event); a lease's
 * nonce is 1..FLY_NONCE_MAX-1 printable characters, or "" with LERR_MALFORMED; a pool list
 * has *n entries exactly when it returns 0 (NULL when none), each with a non-empty id and
 * pool key and never a destroyed state; a URL
 * path holds only unreserved characters, '%' escapes and the few separators we write,
 * and the escaped id decodes back to the id. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cJSON.h"
#include "fly.h"

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "invariant broken: %s\n", what);
        abort();
    }
}

/* s is NUL-terminated within cap bytes and printable ASCII. */
static void check_text(const char *s, size_t cap, const char *what)
{
    const char *end = memchr(s, '\0', cap);

    check(end != NULL, what);
    for (const char *p = s; p < end; p++)
        check(*p >= 0x20 && *p < 0x7F, what);
}

static char *copy(const uint8_t *p, size_t n)
{
    char *s = malloc(n ? n : 1);

    if (!s)
        abort();
    memcpy(s, p, n);
    return s;
}

static void check_retry_after(int ms)
{
    check(ms == -1 || (ms >= 0 && ms <= FLY_RETRY_AFTER_MAX_MS), "retry_after_ms range");
    check(ms == -1 || ms == FLY_RETRY_AFTER_MAX_MS || ms % 1000 == 0,
          "retry_after_ms whole seconds");
}

/* Retry-After as a 429's classification reads it. */
static int retry_after_ms(const char *ra, size_t ra_len)
{
    struct fly_call_result r;

    fly_classify(429, NULL, 0, ra, ra_len, NULL, &r);
    return r.retry_after_ms;
}

static void fuzz_classify(int status, const char *body, size_t len, const char *ra,
                          size_t ra_len)
{
    struct fly_call_result a;
    struct fly_machine m;
    int ra_ms = retry_after_ms(ra, ra_len);

    check_retry_after(ra_ms);
    memset(&a, 0x5A, sizeof a);
    memset(&m, 0x5A, sizeof m);
    fly_classify(status, body, len, ra, ra_len, &m, &a);
    check(a.outcome == FLY_CALL_OK || a.outcome == FLY_CALL_RETRY_LATER ||
          a.outcome == FLY_CALL_RATE_LIMITED || a.outcome == FLY_CALL_FAILED,
          "create outcome in range");
    if (a.outcome == FLY_CALL_OK)
        check(status >= 200 && status < 300 && m.id[0], "created: a 2xx with an id");
    else if (status >= 200 && status < 300)
        check(a.outcome == FLY_CALL_FAILED, "a 2xx without a usable id gives up");
    check((status == 429) == (a.outcome == FLY_CALL_RATE_LIMITED), "429 iff retry");
    if (status >= 500 || status == 408)
        check(a.outcome == FLY_CALL_RETRY_LATER, "5xx and 408 try the next region");
    check(a.retry_after_ms == (a.outcome == FLY_CALL_RATE_LIMITED ? ra_ms : -1),
          "retry_after_ms");
    check(m.status == status, "status kept");
    check_text(a.error, sizeof a.error, "create error");
    check_text(m.id, sizeof m.id, "machine id");
    check_text(m.instance_id, sizeof m.instance_id, "instance id");
    check_text(m.region, sizeof m.region, "region");
    if (a.outcome == FLY_CALL_OK)
        check(a.error[0] == '\0', "no error text for a created Machine");
    else
        check(!m.id[0] && !m.region[0], "a Machine only when created");
}

static void fuzz_classify_call(int status, const char *body, size_t len, const char *ra,
                               size_t ra_len)
{
    struct fly_call_result r;
    enum fly_call_outcome want;

    memset(&r, 0x5A, sizeof r);
    fly_classify(status, body, len, ra, ra_len, NULL, &r);
    check(r.outcome >= FLY_CALL_OK && r.outcome <= FLY_CALL_FAILED, "call outcome in range");
    check(r.status == status, "call status kept");
    check_text(r.error, sizeof r.error, "call error");
    if (status >= 200 && status < 300)
        want = FLY_CALL_OK;
    else if (status == 404 || status == 410)
        want = FLY_CALL_GONE;
    else if (status == 408)
        want = FLY_CALL_TIMED_OUT;
    else if (status == 429)
        want = FLY_CALL_RATE_LIMITED;
    else if (status >= 500)
        want = FLY_CALL_RETRY_LATER;
    else if (status >= 400)
        want = r.outcome == FLY_CALL_GONE ? FLY_CALL_GONE : FLY_CALL_FAILED;
    else
        want = FLY_CALL_FAILED;
    check(r.outcome == want, "call outcome agrees with the status");
    check(r.retry_after_ms == (status == 429 ? retry_after_ms(ra, ra_len) : -1),
          "call retry_after_ms");
    if (r.outcome == FLY_CALL_OK)
        check(r.error[0] == '\0', "no error text for a 2xx");
}

static void fuzz_parse_exit(const char *body, size_t len)
{
    struct fly_exit x;
    struct lerr e = { 0 };
    cJSON *j = len ? cJSON_ParseWithLength(body, len) : NULL;
    int rc, readable = cJSON_IsObject(j) || cJSON_IsArray(j);

    cJSON_Delete(j);
    memset(&x, 0x5A, sizeof x);
    rc = fly_parse_exit(body, len, &x, &e);
    check(rc == 0 || rc == -1, "parse_exit returns 0 or -1");
    check((rc == 0) == readable, "parse_exit fails only on non-JSON or a scalar");
    if (rc < 0)
        check(e.kind == LERR_MALFORMED, "parse_exit's error kind");
    check(x.outcome == FLY_CALL_OK && x.status == 0, "pure parse");
    check(x.exited == 0 || x.exited == 1, "exited is a flag");
    check(x.known == 0 || x.known == 1, "known is a flag");
    check(x.oom_killed == 0 || x.oom_killed == 1, "oom_killed is a flag");
    check_text(x.state, sizeof x.state, "exit state");
    if (x.known)
        check(x.exited && x.exit_code >= 0 && x.exit_code <= 255, "a known code is 0..255");
    else
        check(x.exit_code == 0, "no code when unknown");
    if (!x.exited)
        check(!x.known && !x.oom_killed, "nothing without an exit event");
}

static void fuzz_parse_lease(const char *body, size_t len)
{
    char nonce[FLY_NONCE_MAX];
    long long at = 42;
    struct lerr e = { 0 };
    int rc;

    memset(nonce, 0x5A, sizeof nonce);
    rc = fly_parse_lease(body, len, nonce, &at, &e);
    check(rc == 0 || (rc == -1 && e.kind == LERR_MALFORMED), "parse_lease's result");
    check_text(nonce, sizeof nonce, "lease nonce");
    check((rc == 0) == (nonce[0] != '\0'), "a nonce exactly when it succeeds");
    check(at >= 0, "expires_at is never negative");
}

static void fuzz_parse_pool_list(const char *body, size_t len)
{
    struct fly_pool_machine *m = (void *)1;
    size_t n = 7;
    struct lerr e = { 0 };
    int rc = fly_parse_pool_list(body, len, &m, &n, &e);

    check(rc == 0 || (rc == -1 && (e.kind == LERR_MALFORMED || e.kind == LERR_NOMEM)),
          "parse_pool_list's result");
    check((n == 0) == (m == NULL), "an array exactly when there are entries");
    check(rc == 0 || n == 0, "no entries on an error");
    for (size_t i = 0; i < n; i++) {
        check_text(m[i].id, sizeof m[i].id, "pool id");
        check_text(m[i].instance_id, sizeof m[i].instance_id, "pool instance id");
        check_text(m[i].state, sizeof m[i].state, "pool state");
        check_text(m[i].region, sizeof m[i].region, "pool region");
        check_text(m[i].pool_key, sizeof m[i].pool_key, "pool key");
        check(m[i].id[0] && m[i].pool_key[0], "an id and a key");
        check(strcmp(m[i].state, "destroyed") && strcmp(m[i].state, "destroying"),
              "no destroyed Machine");
    }
    free(m);
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* The id (the body's first bytes, up to a NUL) in a Machine URL. */
static void fuzz_machine_url(const uint8_t *p, size_t n)
{
    static const char prefix[] = "/base/v1/apps/my-app/machines/";
    struct url base, u;
    struct lerr e = { 0 };
    char id[300], back[300];
    size_t len = n < sizeof id - 1 ? n : sizeof id - 1, o = 0;
    const char *s;
    int rc;

    memcpy(id, p, len);
    id[len] = '\0';
    if (url_parse("http://127.0.0.1:4280/base/", &base, &e) < 0)
        abort();
    rc = fly_machine_url(&base, "my-app", id, "wait", "state=stopped&timeout=1", &u, &e);
    if (rc < 0) {
        check(e.kind == LERR_INVALID, "URL error kind");
        check(!id[0] || strlen(id) * 3 > 3 * 64 - 3, "only empty or long ids are refused");
        return;
    }
    check(memchr(u.path, '\0', sizeof u.path) != NULL, "path NUL-terminated");
    check(strncmp(u.path, prefix, sizeof prefix - 1) == 0, "path prefix");
    for (s = u.path; *s; s++)
        check((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              strchr("-._~%/?=&", *s), "path characters");
    /* decode the id back: up to the "/wait" we added */
    for (s = u.path + sizeof prefix - 1; *s && *s != '/'; s++) {
        if (*s == '%') {
            check(hexval(s[1]) >= 0 && hexval(s[2]) >= 0, "escape");
            back[o++] = (char)(hexval(s[1]) << 4 | hexval(s[2]));
            s += 2;
        } else {
            back[o++] = *s;
        }
    }
    back[o] = '\0';
    check(strcmp(back, id) == 0, "the id decodes back");
    check(strcmp(s, "/wait?state=stopped&timeout=1") == 0, "action and query");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t ra_len, body_len;
    int status;
    char *ra, *body;

    if (size < 3)
        return 0;
    status = (data[0] << 8 | data[1]) % 700;
    ra_len = data[2] < size - 3 ? data[2] : size - 3;
    body_len = size - 3 - ra_len;
    ra = copy(data + 3, ra_len);
    body = copy(data + 3 + ra_len, body_len);

    fuzz_classify(status, body, body_len, data[2] ? ra : NULL, ra_len);
    fuzz_classify_call(status, body, body_len, data[2] ? ra : NULL, ra_len);
    fuzz_parse_exit(body, body_len);
    fuzz_parse_lease(body, body_len);
    fuzz_parse_pool_list(body, body_len);
    fuzz_machine_url(data + 3 + ra_len, body_len);
    free(ra);
    free(body);
    return 0;
}
