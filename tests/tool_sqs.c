/*
 * tool_sqs - one SQS call from the command line, for the integration tests (against an
 * emulator such as fauxqs, or a scripted server).
 *
 *   tool_sqs [options] receive
 *   tool_sqs [options] delete HANDLE...
 *   tool_sqs [options] visibility SECONDS HANDLE...
 *     --queue URL             queue URL (else $LAMBDO_SQS_QUEUE_URL)
 *     --endpoint URL          endpoint (else $AWS_ENDPOINT_URL_SQS, $AWS_ENDPOINT_URL, the
 *                             queue URL's origin)
 *     --region R              (else $AWS_REGION, $AWS_DEFAULT_REGION, us-east-1)
 *     --max N --wait S --visibility-timeout V    ReceiveMessage options (10, 0, -1)
 *     --backoff-base-ms N --backoff-cap-ms N     retry pacing (100, 20000)
 *     --io-timeout-ms N       the HTTP client's per-wait limit
 *     --cancel-after-ms N     cancel_fd is a timerfd that fires after N ms
 * Credentials: $AWS_ACCESS_KEY_ID, $AWS_SECRET_ACCESS_KEY, $AWS_SESSION_TOKEN.
 *
 * Output, one JSON object on stdout:
 *   receive:  {"ok":true,"messages":[{"message_id","receipt_handle","body" (when it holds
 *             no NUL),"body_hex","body_len","md5_of_body","image","size","command"
 *             (null when absent),"receive_count","flags","problem"}]}
 *   batch:    {"ok":bool,"entries":[{"status":"ok"|"stale"|"failed","code","message"}]}
 *   failure:  "ok":false plus "error","kind","status","code","retryable"
 * Exit status 0 when ok, 1 on failure, 2 on usage errors.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "cJSON.h"
#include "sqs.h"
#include "tls.h"

struct opts {
    const char *queue, *endpoint, *region, *cmd;
    struct sqs_receive_opts receive;
    int backoff_base_ms, backoff_cap_ms, io_timeout_ms, cancel_after_ms, visibility;
    char **handles;
    int num_handles;
};

static int usage(const char *why)
{
    fprintf(stderr, "tool_sqs: %s\nusage: tool_sqs [--queue URL] [--endpoint URL] [--region R] "
                    "[--max N] [--wait S] [--visibility-timeout V] [--backoff-base-ms N] "
                    "[--backoff-cap-ms N] [--io-timeout-ms N] [--cancel-after-ms N]\n"
                    "         receive | delete HANDLE... | visibility SECONDS HANDLE...\n",
            why);
    return 2;
}

static const char *env(const char *a, const char *b)
{
    const char *v = getenv(a);

    if ((!v || !*v) && b)
        v = getenv(b);
    return v && *v ? v : NULL;
}

static int opt_int(const char *s, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);

    if (!*s || *end || v < -1 || v > 1000000000)
        return -1;
    *out = (int)v;
    return 0;
}

static int parse(int argc, char **argv, struct opts *o)
{
    static const char *const names[] = { "--max", "--wait", "--visibility-timeout",
                                         "--backoff-base-ms", "--backoff-cap-ms",
                                         "--io-timeout-ms", "--cancel-after-ms" };
    int *slots[] = { &o->receive.max_messages, &o->receive.wait_seconds,
                     &o->receive.visibility_timeout, &o->backoff_base_ms, &o->backoff_cap_ms,
                     &o->io_timeout_ms, &o->cancel_after_ms };
    int i = 1;

    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        size_t k;
        if (i + 1 >= argc)
            return usage("option without a value");
        if (strcmp(argv[i], "--queue") == 0) {
            o->queue = argv[i + 1];
            continue;
        }
        if (strcmp(argv[i], "--endpoint") == 0) {
            o->endpoint = argv[i + 1];
            continue;
        }
        if (strcmp(argv[i], "--region") == 0) {
            o->region = argv[i + 1];
            continue;
        }
        for (k = 0; k < sizeof names / sizeof names[0] && strcmp(argv[i], names[k]) != 0; k++)
            ;
        if (k == sizeof names / sizeof names[0] || opt_int(argv[i + 1], slots[k]) < 0)
            return usage("unknown option or bad number");
    }
    if (i >= argc)
        return usage("no command");
    o->cmd = argv[i++];
    if (strcmp(o->cmd, "visibility") == 0) {
        if (i >= argc || opt_int(argv[i], &o->visibility) < 0)
            return usage("visibility needs SECONDS");
        i++;
    } else if (strcmp(o->cmd, "receive") != 0 && strcmp(o->cmd, "delete") != 0) {
        return usage("unknown command");
    }
    o->handles = argv + i;
    o->num_handles = argc - i;
    if (strcmp(o->cmd, "receive") == 0 ? o->num_handles != 0
                                       : o->num_handles < 1 || o->num_handles > SQS_MAX_MESSAGES)
        return usage("receive takes no handle; delete and visibility take 1 to 10");
    return 0;
}

static void print_json(cJSON *root)
{
    char *s = cJSON_PrintUnformatted(root);

    if (s)
        puts(s);
    free(s);
    cJSON_Delete(root);
}

static int fail(cJSON *root, const struct sqs_client *c, const struct lerr *e)
{
    cJSON_AddFalseToObject(root, "ok");
    cJSON_AddStringToObject(root, "error", e->msg);
    cJSON_AddStringToObject(root, "kind", lerr_kind_name(e->kind));
    cJSON_AddNumberToObject(root, "status", c ? c->last_error.status : 0);
    cJSON_AddStringToObject(root, "code", c ? c->last_error.code : "");
    cJSON_AddBoolToObject(root, "retryable", c && c->last_error.retryable);
    print_json(root);
    return 1;
}

static void add_string_or_null(cJSON *o, const char *name, const char *v)
{
    if (v)
        cJSON_AddStringToObject(o, name, v);
    else
        cJSON_AddNullToObject(o, name);
}

static cJSON *message_json(const struct sqs_message *m)
{
    cJSON *o = cJSON_CreateObject();
    char *hex = malloc(m->body_len * 2 + 1);

    cJSON_AddStringToObject(o, "message_id", m->message_id);
    cJSON_AddStringToObject(o, "receipt_handle", m->receipt_handle);
    if (!memchr(m->body, '\0', m->body_len))
        cJSON_AddStringToObject(o, "body", m->body);
    if (hex) {
        for (size_t i = 0; i < m->body_len; i++)
            snprintf(hex + 2 * i, 3, "%02x", (unsigned char)m->body[i]);
        hex[m->body_len * 2] = '\0';
        cJSON_AddStringToObject(o, "body_hex", hex);
        free(hex);
    }
    cJSON_AddNumberToObject(o, "body_len", (double)m->body_len);
    cJSON_AddStringToObject(o, "md5_of_body", m->md5_of_body);
    add_string_or_null(o, "image", m->image);
    add_string_or_null(o, "size", m->size);
    add_string_or_null(o, "command", m->command);
    cJSON_AddNumberToObject(o, "receive_count", (double)m->receive_count);
    cJSON_AddNumberToObject(o, "flags", m->flags);
    cJSON_AddStringToObject(o, "problem", m->problem);
    return o;
}

static int run_receive(struct sqs_client *c, const struct opts *o)
{
    cJSON *root = cJSON_CreateObject(), *list;
    struct sqs_batch b;
    struct lerr e = { 0 };

    if (sqs_receive(c, &o->receive, &b, &e) < 0)
        return fail(root, c, &e);
    cJSON_AddTrueToObject(root, "ok");
    list = cJSON_AddArrayToObject(root, "messages");
    for (size_t i = 0; i < b.count; i++)
        cJSON_AddItemToArray(list, message_json(&b.messages[i]));
    sqs_batch_free(&b);
    print_json(root);
    return 0;
}

static int run_batch(struct sqs_client *c, const struct opts *o)
{
    static const char *const status[] = { "pending", "ok", "stale", "failed" };
    struct sqs_entry en[SQS_MAX_MESSAGES];
    cJSON *root = cJSON_CreateObject(), *list;
    struct lerr e = { 0 };
    int r;

    memset(en, 0, sizeof en);
    for (int i = 0; i < o->num_handles; i++) {
        en[i].receipt_handle = o->handles[i];
        en[i].visibility_timeout = o->visibility;
    }
    r = sqs_batch_call(c, strcmp(o->cmd, "delete") == 0 ? SQS_OP_DELETE
                                                        : SQS_OP_CHANGE_VISIBILITY,
                       en, (size_t)o->num_handles, &e);
    list = cJSON_AddArrayToObject(root, "entries");
    for (int i = 0; i < o->num_handles; i++) {
        cJSON *it = cJSON_CreateObject();
        cJSON_AddStringToObject(it, "status", status[en[i].status]);
        cJSON_AddStringToObject(it, "code", en[i].code);
        cJSON_AddStringToObject(it, "message", en[i].message);
        cJSON_AddItemToArray(list, it);
    }
    if (r < 0)
        return fail(root, c, &e);
    cJSON_AddTrueToObject(root, "ok");
    print_json(root);
    return 0;
}

int main(int argc, char **argv)
{
    struct opts o = { .receive = { 10, 0, -1 }, .backoff_base_ms = -1, .backoff_cap_ms = -1,
                      .io_timeout_ms = -1, .cancel_after_ms = -1 };
    struct sigv4_credentials creds;
    struct tls_anchors ta = { 0 };
    struct http_client http;
    struct sqs_client c;
    struct url ep;
    struct lerr e = { 0 };
    int r;

    r = parse(argc, argv, &o);
    if (r)
        return r;
    if (!o.queue)
        o.queue = env("LAMBDO_SQS_QUEUE_URL", NULL);
    if (!o.endpoint)
        o.endpoint = env("AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL");
    if (!o.region)
        o.region = env("AWS_REGION", "AWS_DEFAULT_REGION");
    creds = (struct sigv4_credentials){ env("AWS_ACCESS_KEY_ID", NULL),
                                        env("AWS_SECRET_ACCESS_KEY", NULL),
                                        env("AWS_SESSION_TOKEN", NULL) };
    if (!o.queue || !creds.access_key_id || !creds.secret_access_key)
        return usage("needs a queue URL, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY");
    if (url_parse(o.endpoint ? o.endpoint : o.queue, &ep, &e) < 0)
        return fail(cJSON_CreateObject(), NULL, &e);
    if (ep.tls && tls_anchors_load(&ta, getenv("SSL_CERT_FILE"), &e) < 0)
        return fail(cJSON_CreateObject(), NULL, &e);
    http_client_init(&http, ep.tls ? &ta : NULL);
    if (o.io_timeout_ms >= 0)
        http.io_timeout_ms = o.io_timeout_ms;
    if (o.cancel_after_ms >= 0) {
        struct itimerspec its = { .it_value = { o.cancel_after_ms / 1000,
                                                (long)(o.cancel_after_ms % 1000) * 1000000 } };
        if (o.cancel_after_ms == 0)
            its.it_value.tv_nsec = 1;  /* zero would disarm the timer */
        http.cancel_fd = timerfd_create(CLOCK_MONOTONIC, 0);
        if (http.cancel_fd < 0 || timerfd_settime(http.cancel_fd, 0, &its, NULL) < 0)
            return usage("timerfd failed");
    }
    sqs_client_init(&c, &http, &ep, o.queue, o.region ? o.region : "us-east-1", &creds);
    if (o.backoff_base_ms >= 0)
        c.backoff_base_ms = (unsigned)o.backoff_base_ms;
    if (o.backoff_cap_ms >= 0)
        c.backoff_cap_ms = (unsigned)o.backoff_cap_ms;
    r = strcmp(o.cmd, "receive") == 0 ? run_receive(&c, &o) : run_batch(&c, &o);
    http_client_close(&http);
    if (http.cancel_fd >= 0)
        close(http.cancel_fd);
    tls_anchors_free(&ta);
    return r;
}
