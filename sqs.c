#include "sqs.h"
#include "creds.h"
#include "metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <bearssl.h>

#include "httpresp.h"
#include "json.h"
#include "log.h"
#include "ratelimit.h"
#include "text.h"

#define SQS_CONTENT_TYPE "application/x-amz-json-1.0"

/* The long poll itself may take wait_seconds; this much more covers the round trip. */
#define SQS_RECEIVE_SLACK_MS 10000

/* The message attributes lambdo reads itself; the others go to the context file. */
static const char *const sqs_attr_names[] = { "image", "size", "command" };
/* The system attributes asked for, in the order of the context file's names (ctx_names). */
#define SQS_SYSTEM_ATTRS 6
static const char *const sqs_system_attrs[SQS_SYSTEM_ATTRS] = {
    "ApproximateReceiveCount", "SentTimestamp", "ApproximateFirstReceiveTimestamp",
    "MessageGroupId", "MessageDeduplicationId", "SequenceNumber" };

/* ======================================================================================
 * Request bodies, written by hand
 *
 * A body must reach the queue byte for byte, so requests are written here rather than
 * through cJSON (which wants NUL-terminated copies): a string goes into a JSON string
 * that escapes only '"', '\\' and control bytes and copies everything else, UTF-8
 * included. Bodies are checked first (sqs_text_check), so the request is valid JSON and
 * SQS decodes the string to exactly the bytes given.
 * ==================================================================================== */

/* Closes the request's object. The buffer stops growing after an allocation failure,
 * which is found here, once. */
static char *sb_finish(struct json_buf *b, size_t *len, struct lerr *e)
{
    json_buf_lit(b, "}");
    if (b->oom || !b->p) {
        free(b->p);
        lerr_set(e, LERR_NOMEM, "out of memory building an SQS request");
        return NULL;
    }
    *len = b->len;
    return b->p;
}

/* Every request starts with the queue: {"QueueUrl":"...". The queue URL is the caller's
 * text, sent as it is: it only needs to be UTF-8 for the request to be JSON (control
 * bytes are escaped). */
static int sb_queue(struct json_buf *b, const char *queue_url, const char *op, struct lerr *e)
{
    size_t len = queue_url ? strlen(queue_url) : 0;
    unsigned cp;

    if (len == 0)
        return lerr_set(e, LERR_INVALID, "SQS %s: no queue URL", op);
    for (size_t i = 0, n; i < len; i += n)
        if ((n = text_utf8_next((const unsigned char *)queue_url + i, len - i, &cp)) == 0)
            return lerr_set(e, LERR_INVALID, "SQS %s: the queue URL is not UTF-8", op);
    json_buf_lit(b, "{\"QueueUrl\":");
    json_buf_string(b, queue_url, len);
    return 0;
}

/* ,"key":["name",...] */
static void sb_names(struct json_buf *b, const char *key, const char *const *names, size_t n)
{
    json_buf_fmt(b, ",\"%s\":[", key);
    for (size_t i = 0; i < n; i++) {
        json_buf_lit(b, i ? "," : "");
        json_buf_string(b, names[i], strlen(names[i]));
    }
    json_buf_lit(b, "]");
}

char *sqs_receive_request(const char *queue_url, const struct sqs_receive_opts *o, size_t *len,
                          struct lerr *e)
{
    /* Each number is checked, then written when it is not -1 (the queue's default). */
    const struct {
        const char *name;
        int value, min, max;
    } nums[] = {
        { "MaxNumberOfMessages", o->max_messages, 1, SQS_MAX_MESSAGES },
        { "WaitTimeSeconds", o->wait_seconds, 0, SQS_MAX_WAIT },
        { "VisibilityTimeout", o->visibility_timeout, -1, SQS_MAX_VISIBILITY },
    };
    struct json_buf b = { 0 };

    if (sb_queue(&b, queue_url, "ReceiveMessage", e) < 0)
        return NULL;
    for (size_t i = 0; i < 3; i++) {
        if (nums[i].value < nums[i].min || nums[i].value > nums[i].max) {
            free(b.p);
            lerr_set(e, LERR_INVALID, "SQS ReceiveMessage: %s must be %d to %d%s, got %d",
                     nums[i].name, nums[i].min < 0 ? 0 : nums[i].min, nums[i].max,
                     nums[i].min < 0 ? " (or -1)" : "", nums[i].value);
            return NULL;
        }
        if (nums[i].value >= 0)
            json_buf_fmt(&b, ",\"%s\":%d", nums[i].name, nums[i].value);
    }
    /* Exactly what the context file (sqs_message.context) holds: SQS returns only what is
     * named. Every message attribute is asked for: all go into the context file. */
    json_buf_lit(&b, ",\"MessageAttributeNames\":[\"All\"]");
    sb_names(&b, "MessageSystemAttributeNames", sqs_system_attrs, SQS_SYSTEM_ATTRS);
    /* The deprecated name of the same list: SQS accepts both, and emulators written
     * before MessageSystemAttributeNames existed only know this one. */
    sb_names(&b, "AttributeNames", sqs_system_attrs, SQS_SYSTEM_ATTRS);
    return sb_finish(&b, len, e);
}

/* ======================================================================================
 * Error answers and what is worth retrying
 * ==================================================================================== */

/* 1 for codes worth retrying: throttling and internal errors. */
static int sqs_code_retryable(const char *code)
{
    /* The throttling and transient codes of the AWS SDKs' retry strategy, plus SQS's own
     * (RequestThrottled, KmsThrottled, OverLimit: too many messages in flight, which
     * clears as they are deleted). */
    static const char *const codes[] = {
        "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
        "RequestThrottledException", "TooManyRequestsException",
        "ProvisionedThroughputExceededException", "TransactionInProgressException",
        "RequestLimitExceeded", "BandwidthLimitExceeded", "LimitExceededException",
        "SlowDown", "PriorRequestNotComplete", "EC2ThrottledException", "KmsThrottled",
        "OverLimit", "InternalError", "InternalFailure", "ServiceUnavailable",
        "ServiceUnavailableException", "RequestTimeout", "RequestTimeoutException",
    };

    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (strcmp(code, codes[i]) == 0)
            return 1;
    return 0;
}

/* Text for a person: control bytes (newlines of an HTML page) become spaces. */
static void sqs_set_text(char *out, size_t cap, const char *s, size_t len)
{
    size_t n = 0;

    for (size_t i = 0; i < len && n + 1 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7f)
            ch = ' ';
        if (ch == ' ' && (n == 0 || out[n - 1] == ' '))
            continue;
        out[n++] = (char)ch;
    }
    while (n > 0 && out[n - 1] == ' ')
        n--;
    out[n] = '\0';
}

/* "com.amazon.coral.service#SignatureDoesNotMatch:http://internal..." and
 * "AWS.SimpleQueueService.NonExistentQueue" both name just the code. */
static void sqs_set_code(char *out, size_t cap, const char *s, size_t len)
{
    static const char legacy[] = "AWS.SimpleQueueService.";
    const char *end = s + len, *p;

    if ((p = memchr(s, ':', len)))
        end = p;
    for (p = s; p < end; p++)
        if (*p == '#')
            s = p + 1;
    if ((size_t)(end - s) > sizeof legacy - 1 && memcmp(s, legacy, sizeof legacy - 1) == 0)
        s += sizeof legacy - 1;
    sqs_set_text(out, cap, s, (size_t)(end - s));
}

/* Notes why an entry is not done (yet), in SQS's words or a transport error's, into fields
 * of an entry's sizes (c->last_error's are the same). */
static void sqs_why(char *code_out, char *message_out, const char *code, const char *message)
{
    sqs_set_code(code_out, sizeof ((struct sqs_entry *)0)->code, code, strlen(code));
    sqs_set_text(message_out, sizeof ((struct sqs_entry *)0)->message, message, strlen(message));
}

static const char *sqs_json_string(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);

    return cJSON_IsString(v) && v->valuestring ? v->valuestring : NULL;
}

int sqs_parse_error(const char *op, const struct http_response *resp, struct sqs_api_error *out,
                    struct lerr *e)
{
    size_t et_len, qe_len;
    cJSON *root = resp->body_len ? json_parse(resp->body, resp->body_len) : NULL;
    const char *et = httpresp_header(&resp->head, "X-Amzn-ErrorType", &et_len);
    const char *qe = httpresp_header(&resp->head, "X-Amzn-Query-Error", &qe_len);
    const char *code, *msg, *colon;

    memset(out, 0, sizeof *out);
    out->status = resp->head.status;
    /* (an answer that is not an object has none of these members) */
    code = sqs_json_string(root, "__type");
    if (!code)
        code = sqs_json_string(root, "code");
    msg = sqs_json_string(root, "message");
    if (!msg)
        msg = sqs_json_string(root, "Message");
    if (code && *code) {
        sqs_set_code(out->code, sizeof out->code, code, strlen(code));
    } else if (et_len) {
        sqs_set_code(out->code, sizeof out->code, et, et_len);
    } else if (qe_len) {
        const char *semi = memchr(qe, ';', qe_len);
        sqs_set_code(out->code, sizeof out->code, qe, semi ? (size_t)(semi - qe) : qe_len);
    }
    if (msg)
        sqs_set_text(out->message, sizeof out->message, msg, strlen(msg));
    /* a proxy's page says more than nothing */
    else if (!cJSON_IsObject(root) && resp->body_len)
        sqs_set_text(out->message, sizeof out->message, resp->body, resp->body_len);
    else if (!resp->body_len && !out->code[0])
        snprintf(out->message, sizeof out->message, "empty answer");
    cJSON_Delete(root);
    out->retryable = out->status >= 500 || out->status == 429 || sqs_code_retryable(out->code);
    colon = out->message[0] ? ": " : "";
    if (out->code[0])
        return lerr_set(e, LERR_HTTP, "SQS %s failed: %s%s%s (HTTP %d)", op, out->code, colon,
                        out->message, out->status);
    return lerr_set(e, LERR_HTTP, "SQS %s failed: HTTP %d%s%s", op, out->status, colon, out->message);
}

/* ======================================================================================
 * Backoff
 * ==================================================================================== */

/* splitmix64: tiny, and good enough to spread retries apart. */
static uint64_t sqs_rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

unsigned sqs_backoff_ms(unsigned attempt, unsigned base_ms, unsigned cap_ms, uint64_t *rng)
{
    unsigned ceiling = base_ms < cap_ms ? base_ms : cap_ms;

    for (unsigned i = 0; i < attempt && ceiling < cap_ms; i++)
        ceiling = ceiling > cap_ms / 2 ? cap_ms : ceiling * 2;
    return (unsigned)(sqs_rng_next(rng) % ((uint64_t)ceiling + 1));
}

/* ======================================================================================
 * The client
 * ==================================================================================== */

void sqs_client_init(struct sqs_client *c, struct http_client *http, const struct url *endpoint,
                     const char *queue_url, const char *region,
                     const struct sigv4_credentials *creds)
{
    memset(c, 0, sizeof *c);
    c->http = http;
    c->endpoint = *endpoint;
    snprintf(c->endpoint.path, sizeof c->endpoint.path, "/");
    c->queue_url = queue_url;
    c->region = region;
    if (creds)
        c->creds = *creds;
    c->receive_attempts = SQS_RECEIVE_ATTEMPTS;
    c->receive_max = SQS_MAX_MESSAGES;
    c->batch_attempts = SQS_BATCH_ATTEMPTS;
    c->backoff_base_ms = SQS_BACKOFF_BASE_MS;
    c->backoff_cap_ms = SQS_BACKOFF_CAP_MS;
    /* Without entropy the jitter still differs between processes and runs. */
    if (getrandom(&c->rng, sizeof c->rng, GRND_NONBLOCK) != (ssize_t)sizeof c->rng)
        c->rng = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)c;
}

/* Connection-level failures where the server may simply be busy or restarting. */
static int sqs_kind_retryable(enum lerr_kind kind)
{
    return kind == LERR_TIMEOUT || kind == LERR_CLOSED || kind == LERR_CONNECT ||
           kind == LERR_REFUSED || kind == LERR_DNS || kind == LERR_IO;
}

static void sqs_note_local(struct sqs_client *c, const struct lerr *e, int retryable)
{
    memset(&c->last_error, 0, sizeof c->last_error);
    sqs_set_text(c->last_error.message, sizeof c->last_error.message, e->msg, strlen(e->msg));
    c->last_error.retryable = retryable;
}

/* What a whole-request failure is called: SQS's code, or the error's kind. */
static const char *sqs_call_code(const struct sqs_client *c, const struct lerr *e)
{
    return c->last_error.code[0] ? c->last_error.code : lerr_kind_name(e->kind);
}

/* One signed POST, with the provider's current credentials when there is a provider (they
 * may have been refreshed since the last call), else the fixed ones. 2xx: 0 with resp to
 * free. Otherwise -1, c->last_error filled. */
static int sqs_call(struct sqs_client *c, const char *op, const char *body, size_t len,
                    int timeout_ms, struct http_response *resp, struct lerr *e)
{
    char target[64], date[17];
    const struct sigv4_header sh[] = {
        { "Host", c->endpoint.authority },
        { "X-Amz-Target", target },
        { "Content-Type", SQS_CONTENT_TYPE },
    };
    const struct sigv4_request sr = { "POST", "/", NULL, sh, 3, body, len };
    const struct sigv4_params sp = { c->region, "sqs", date, 1, 0, &c->sigv4_key };
    struct http_header hh[2 + SIGV4_MAX_ADDED] = { { "X-Amz-Target", target },
                                                   { "Content-Type", SQS_CONTENT_TYPE } };
    struct http_request req = { "POST", &c->endpoint, hh, 2, body, len, timeout_ms };
    struct creds_snapshot snap;  /* outlives http_do: the token header points into it */
    struct sigv4_credentials cred = c->creds;
    struct sigv4_signature sig;
    double t0;
    int rc;

    if (c->provider && creds_get(c->provider, &snap, e) < 0) {
        lerr_wrap(e, "SQS %s", op);
        sqs_note_local(c, e, 1);  /* STS may answer again later */
        return -1;
    }
    if (c->provider)
        creds_sigv4(&snap, &cred);
    snprintf(target, sizeof target, "AmazonSQS.%s", op);
    sigv4_format_date(time(NULL), date);
    rc = sigv4_sign(&sr, &cred, &sp, &sig, e);
    if (rc < 0) {
        lerr_wrap(e, "SQS %s: signing the request", op);
    } else {
        for (size_t i = 0; i < sig.num_added && i < SIGV4_MAX_ADDED; i++)
            hh[req.num_headers++] = (struct http_header){ sig.added[i].name, sig.added[i].value };
        t0 = metrics_clock();
        rc = http_do(c->http, &req, resp, e);
        metrics_observe(c->metrics, METRICS_SQS, op, metrics_clock() - t0);
        if (rc < 0)
            lerr_wrap(e, "SQS %s failed", op);
    }
    if (c->provider)
        creds_snapshot_wipe(&snap);
    if (rc < 0) {
        /* (signing fails only on bad input: LERR_INVALID, LERR_TOO_LARGE, never retried) */
        sqs_note_local(c, e, sqs_kind_retryable(e->kind));
        return -1;
    }
    if (resp->head.status >= 200 && resp->head.status < 300)
        return 0;
    rc = sqs_parse_error(op, resp, &c->last_error, e);
    http_response_free(resp);
    return rc;
}

/* Waits before retry number attempt (0 for the first), logging why. */
static int sqs_backoff(struct sqs_client *c, unsigned attempt, unsigned attempts,
                       const struct lerr *why, struct lerr *e)
{
    unsigned ms = sqs_backoff_ms(attempt, c->backoff_base_ms, c->backoff_cap_ms, &c->rng);

    log_warn("%s; retrying in %u ms (attempt %u of %u)", why->msg, ms, attempt + 2, attempts);
    if (ratelimit_wait_idle(NULL, (int)ms, &c->http->cancel_fd, 1, NULL, NULL, e) < 0) {
        lerr_wrap(e, "cancelled while waiting to retry");
        sqs_note_local(c, e, 0);
        return -1;
    }
    return 0;
}

/* Sends body, which the caller built (NULL when that failed: e says why) and this frees,
 * until it is answered, fails for good or attempts (0 counts as 1) are used up. */
static int sqs_call_retry(struct sqs_client *c, const char *op, char *body, size_t len,
                          int timeout_ms, unsigned attempts, struct http_response *resp,
                          struct lerr *e)
{
    int r = -1;

    if (!body) {
        sqs_note_local(c, e, 0);
        return -1;
    }
    for (unsigned attempt = 0;; attempt++) {
        r = sqs_call(c, op, body, len, timeout_ms, resp, e);
        if (r == 0 || !c->last_error.retryable || attempt + 1 >= attempts ||
            sqs_backoff(c, attempt, attempts, e, e) < 0)
            break;
    }
    free(body);
    return r;
}

/* Frees the answer, once read: r is what reading it returned. An answer that cannot be
 * read fails the call, and trying again would not help. */
static int sqs_answer_read(struct sqs_client *c, struct http_response *resp, int r,
                           const struct lerr *e)
{
    if (r < 0) {
        sqs_note_local(c, e, 0);
        c->last_error.status = resp->head.status;
    }
    http_response_free(resp);
    return r;
}

int sqs_receive(struct sqs_client *c, const struct sqs_receive_opts *o, struct sqs_batch *b,
                struct lerr *e)
{
    struct sqs_receive_opts fewer = *o;
    struct http_response resp;
    int timeout_ms = o->wait_seconds * 1000 + SQS_RECEIVE_SLACK_MS, r;
    int saved_io = c->http->io_timeout_ms;
    size_t len, saved_max = c->http->max_body;
    char *body;

    /* SQS sends nothing until a message arrives or wait_seconds pass, so the client's
     * per-wait limit must outlast the long poll too, not only the request's deadline. */
    if (saved_io < timeout_ms)
        c->http->io_timeout_ms = timeout_ms;
    if (saved_max < SQS_RECEIVE_MAX_BODY)
        c->http->max_body = SQS_RECEIVE_MAX_BODY;
    for (;;) {
        if (c->receive_max >= 1 && fewer.max_messages > c->receive_max)
            fewer.max_messages = c->receive_max;
        memset(b, 0, sizeof *b);
        body = sqs_receive_request(c->queue_url, &fewer, &len, e);
        r = sqs_call_retry(c, "ReceiveMessage", body, len, timeout_ms, c->receive_attempts,
                           &resp, e);
        if (r == 0)
            r = sqs_answer_read(c, &resp, sqs_parse_receive(resp.body, resp.body_len, b, e), e);
        if (r == 0 || e->kind != LERR_TOO_LARGE || fewer.max_messages <= 1)
            break;
        c->receive_max = (fewer.max_messages + 1) / 2;
        log_warn("%s; asking for at most %d messages from now on (the messages of that answer "
                 "return after their visibility timeout)", e->msg, c->receive_max);
    }
    c->http->io_timeout_ms = saved_io;
    c->http->max_body = saved_max;
    return r;
}

/* ======================================================================================
 * The ReceiveMessage answer, read with json.c's scanner
 *
 * cJSON hands back a string as a NUL-terminated copy and forgets its length, so a body
 * holding \u0000 would come back cut short. Bodies must reach the Machine byte for byte,
 * so every string is decoded with its length, straight into the batch's one allocation.
 * The scanner is lenient about strings here (json.h): a body's bytes are not ours to
 * judge, and a lone surrogate costs only its own message.
 * ==================================================================================== */

#define RX "SQS ReceiveMessage answer"
#define RX_MAX_DEPTH 64

/* Reading an answer. Decoded strings go to the arena, in the batch's allocation: every
 * string kept comes from a distinct quoted span of the answer, and decoding never makes a
 * string longer than its escaped form, so the decoded strings and their NULs fit in as
 * many bytes as the answer has: the arena cannot run out. */
struct rx {
    struct json j;
    struct lerr *e;
    char *arena;
    size_t left;
    struct json_buf ctx;                   /* the messages' context entries, one after
                                              another: the batch keeps it */
    size_t ctx_at[SQS_MAX_MESSAGES];       /* where each message's entry starts in ctx */
    struct json_buf attrs;                 /* scratch: one message's other attributes */
    const char *sys[SQS_SYSTEM_ATTRS];     /* scratch: one message's system attributes */
    size_t sys_len[SQS_SYSTEM_ATTRS];      /* (sqs_system_attrs), in the arena, or NULL */
};

/* A message attribute's name is at most 256 characters (SQS's limit). */
#define SQS_ATTR_NAME_MAX 256

/* An optional member: 0 when its value is null (consumed), 1 when it starts with open
 * ('{', '[' or '"'), else -1 naming the member and the type it should have. */
static int rx_optional(struct rx *x, int open, int index, const char *name)
{
    int c = json_peek(&x->j);
    const char *type = open == '{' ? "an object" : open == '[' ? "an array" : "a string";

    if (c == open)
        return 1;
    if (c == 'n' || c == -1)  /* null, or an error for what is not */
        return json_skip(&x->j);
    if (index < 0)
        return lerr_set(x->e, LERR_MALFORMED, RX ": %s is not %s", name, type);
    return lerr_set(x->e, LERR_MALFORMED, RX ": Messages[%d].%s is not %s", index, name, type);
}

/* A string member decoded into the arena; NULL when the value is null. */
static int rx_keep(struct rx *x, int index, const char *name, const char **s, size_t *len)
{
    int r = rx_optional(x, '"', index, name);
    size_t n;

    *s = NULL;
    if (r <= 0)
        return r;
    if (json_string(&x->j, x->arena, x->left, &n) < 0)
        return -1;
    if (n >= x->left)  /* cannot happen (see struct rx); refuse rather than trust it */
        return lerr_set(x->e, LERR_MALFORMED, RX ": string too long");
    *s = x->arena;
    if (len)
        *len = n;
    x->arena += n + 1;
    x->left -= n + 1;
    return 0;
}

__attribute__((format(printf, 3, 4)))
static void msg_problem(struct sqs_message *m, unsigned flag, const char *fmt, ...)
{
    size_t n = strlen(m->problem);
    va_list ap;

    m->flags |= flag;
    if (n > 0 && n + 2 < sizeof m->problem) {
        memcpy(m->problem + n, "; ", 3);
        n += 2;
    }
    va_start(ap, fmt);  /* full: only the NUL that is there is written */
    vsnprintf(m->problem + n, sizeof m->problem - n, fmt, ap);
    va_end(ap);
}

/* image, size or command: a String whose StringValue goes to *out. */
static void rx_attribute(struct sqs_message *m, const char *name, const char *const got[3],
                         const size_t len[3], const char **out)
{
    const char *type = got[0] && strlen(got[0]) != len[0] ? "(a type holding NUL)" : got[0];

    *out = NULL;
    if (!type)
        msg_problem(m, SQS_MSG_BAD_ATTRIBUTE, "message attribute %s has no DataType", name);
    /* "String" and custom string types ("String.url") carry their value in StringValue;
     * "String\u0000" is no String */
    else if (type != got[0] || (strcmp(type, "String") != 0 && strncmp(type, "String.", 7) != 0))
        msg_problem(m, SQS_MSG_BAD_ATTRIBUTE,
                    "message attribute %s has DataType %.*s%s; only String is accepted", name,
                    strlen(type) < 48 ? 48 : 44, type, strlen(type) < 48 ? "" : "...");
    else if (!got[1])
        msg_problem(m, SQS_MSG_BAD_ATTRIBUTE, "message attribute %s has no StringValue", name);
    else if (strlen(got[1]) != len[1])
        msg_problem(m, SQS_MSG_BAD_ATTRIBUTE, "message attribute %s contains a NUL character",
                    name);
    else
        *out = got[1];
}

/* Any other attribute, for the context file: ,"name":{"type":...,"value":...} into x->attrs.
 * The value is the StringValue, or the BinaryValue (base64, as SQS sends it). Text SQS
 * itself would refuse (a lone surrogate, a NUL) would make the context file unreadable:
 * the message is refused instead, as for a body. */
static void rx_user_attribute(struct rx *x, struct sqs_message *m, const char *name,
                              const char *const got[3], const size_t len[3])
{
    size_t vi = got[1] ? 1 : 2;

    if (!got[0] || !got[vi])
        return;  /* nothing to say about it (SQS always sends both) */
    if (sqs_text_check(name, strlen(name), NULL, NULL) < 0) {
        msg_problem(m, SQS_MSG_BAD_ATTRIBUTE, "a message attribute's name is not Unicode text "
                    "SQS allows");
    } else if (sqs_text_check(got[0], len[0], NULL, NULL) < 0 ||
               sqs_text_check(got[vi], len[vi], NULL, NULL) < 0) {
        msg_problem(m, SQS_MSG_BAD_ATTRIBUTE, "message attribute %.60s: its type or value is "
                    "not Unicode text SQS allows", name);
    } else {
        json_buf_lit(&x->attrs, x->attrs.len ? "," : "");
        json_buf_string(&x->attrs, name, strlen(name));
        json_buf_lit(&x->attrs, ":{\"type\":");
        json_buf_string(&x->attrs, got[0], len[0]);
        json_buf_lit(&x->attrs, ",\"value\":");
        json_buf_string(&x->attrs, got[vi], len[vi]);
        json_buf_lit(&x->attrs, "}");
    }
}

/* The object at p (null: nothing to read): the string of each member named names[k]
 * decoded into s[k] and len[k] (left as the caller set them when the member is absent).
 * Another value is an error naming labels[k]; without labels, it is skipped, as are the
 * members not named. */
static int rx_strings(struct rx *x, int index, const char *what, const char *const *names,
                      const char *const *labels, size_t n, const char **s, size_t *len)
{
    int state = 0, k, r = rx_optional(x, '{', index, what);

    while (r > 0 && (r = json_member_of(&x->j, &state, names, n, &k)) > 0) {
        if (k >= 0 && (labels || json_peek(&x->j) == '"')) {
            if (rx_keep(x, index, labels ? labels[k] : what, &s[k], &len[k]) < 0)
                return -1;
        } else if (json_skip(&x->j) < 0) {
            return -1;
        }
    }
    return r;
}

/* {name: {"DataType": ..., "StringValue": ..., "BinaryValue": ...}, ...}, each value's
 * strings decoded into got[] (NULL when absent) and len[]. */
static int rx_message_attributes(struct rx *x, int index, struct sqs_message *m)
{
    static const char *const fields[] = { "DataType", "StringValue", "BinaryValue" };
    static const char *const labels[] = { "MessageAttributes DataType",
                                          "MessageAttributes StringValue",
                                          "MessageAttributes BinaryValue" };
    const char **slots[] = { &m->image, &m->size, &m->command };
    char name[SQS_ATTR_NAME_MAX + 1];
    int state = 0, k, r = rx_optional(x, '{', index, "MessageAttributes");

    if (r <= 0)
        return r;
    while ((r = json_member(&x->j, &state, name, sizeof name)) > 0) {
        const char *got[3] = { NULL, NULL, NULL };
        size_t len[3] = { 0, 0, 0 };

        if (!name[0]) {  /* a name SQS cannot send: too long, a NUL */
            if (json_skip(&x->j) < 0)
                return -1;
            continue;
        }
        if (rx_strings(x, index, "MessageAttributes value", fields, labels, 3, got, len) < 0)
            return -1;
        for (k = 0; k < 3 && strcmp(name, sqs_attr_names[k]) != 0; k++)
            ;
        if (k < 3)
            rx_attribute(m, name, got, len, slots[k]);
        else
            rx_user_attribute(x, m, name, got, len);
    }
    return r;
}

/* 1 to max_digits decimal digits, strictly; -1 for anything else (it counts as absent). */
static long sqs_parse_count(const char *s, size_t len, size_t max_digits)
{
    long v = 0;

    if (!s || len == 0 || len > max_digits)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* The message's entry of the context file, into x->ctx: the counts and times as JSON
 * numbers when SQS gave digits, the FIFO strings when it gave them, and the attributes
 * rx_user_attribute collected. */
static void rx_context(struct rx *x, const struct sqs_message *m)
{
    static const char *const ctx_names[SQS_SYSTEM_ATTRS] = {
        ",\"receiveCount\":", ",\"sentTimestamp\":", ",\"firstReceiveTimestamp\":",
        ",\"messageGroupId\":", ",\"deduplicationId\":", ",\"sequenceNumber\":" };

    json_buf_lit(&x->ctx, "{\"messageId\":");
    json_buf_string(&x->ctx, m->message_id, strlen(m->message_id));
    /* No printf here: this runs for every message, and formatting was a twentieth of the
     * steady state's instructions. The values are NUL-terminated in the arena (rx_keep). */
    for (int k = 0; k < SQS_SYSTEM_ATTRS; k++) {
        const char *v = x->sys[k];

        if (k < 3 && sqs_parse_count(v, x->sys_len[k], 18) < 0)
            continue;
        if (k >= 3 && (!v || sqs_text_check(v, x->sys_len[k], NULL, NULL) < 0))
            continue;
        json_buf_lit(&x->ctx, ctx_names[k]);
        if (k >= 3) {
            json_buf_string(&x->ctx, v, x->sys_len[k]);
            continue;
        }
        while (v[0] == '0' && v[1])  /* SQS's digits, as a JSON number: no leading zero */
            v++;
        json_buf_lit(&x->ctx, v);
    }
    json_buf_lit(&x->ctx, ",\"messageAttributes\":{");
    if (x->attrs.len)
        json_buf_lit(&x->ctx, x->attrs.p);
    json_buf_lit(&x->ctx, "}}");
}

/* The MD5 of data[0..len) as 32 lowercase hex characters. */
static void sqs_md5_hex(const char *data, size_t len, char out[33])
{
    unsigned char sum[br_md5_SIZE];
    br_md5_context ctx;

    br_md5_init(&ctx);
    br_md5_update(&ctx, data, len);
    br_md5_out(&ctx, sum);
    text_hex_encode(sum, sizeof sum, out);
}

/* The AWS SDKs refuse a message whose MD5OfBody does not match; here it only marks the
 * message, so one damaged message does not cost the others their turn. */
static void sqs_check_md5(struct sqs_message *m)
{
    char md5[33];

    if (!m->md5_of_body) {
        m->md5_of_body = "";
        msg_problem(m, SQS_MSG_MD5_MISMATCH, "message has no MD5OfBody to check the body with");
        return;
    }
    sqs_md5_hex(m->body, m->body_len, md5);
    if (strcasecmp(md5, m->md5_of_body) != 0)
        msg_problem(m, SQS_MSG_MD5_MISMATCH,
                    "MD5OfBody %.40s does not match the body received (MD5 %s): damaged in transit",
                    m->md5_of_body, md5);
}

static int rx_message(struct rx *x, int index, struct sqs_message *m)
{
    /* The strings first, in the order of strings[]. */
    static const char *const names[] = { "MessageId", "ReceiptHandle", "MD5OfBody", "Body",
                                         "Attributes", "MessageAttributes" };
    const char **strings[] = { &m->message_id, &m->receipt_handle, &m->md5_of_body, &m->body };
    int state = 0, r = 0, k, lone = 0;
    long count;

    if (json_peek(&x->j) == -1)
        return json_skip(&x->j);
    memset(x->sys, 0, sizeof x->sys);
    x->attrs.len = 0;
    if (json_peek(&x->j) != '{')
        return lerr_set(x->e, LERR_MALFORMED, RX ": Messages[%d] is not an object", index);
    while (r == 0 && (r = json_member_of(&x->j, &state, names, 6, &k)) > 0) {
        unsigned lone_before = x->j.lone;

        if (k >= 0 && k < 4)
            r = rx_keep(x, index, names[k], strings[k], k == 3 ? &m->body_len : NULL);
        else if (k == 4)  /* (a value that is not a string is no problem of the message's) */
            r = rx_strings(x, index, "Attributes", sqs_system_attrs, NULL, SQS_SYSTEM_ATTRS,
                           x->sys, x->sys_len);
        else if (k == 5)
            r = rx_message_attributes(x, index, m);
        else
            r = json_skip(&x->j);
        if (k == 3)
            lone = x->j.lone != lone_before;
    }
    if (r < 0)
        return -1;
    if (!m->message_id)
        return lerr_set(x->e, LERR_MALFORMED, RX ": Messages[%d] has no MessageId", index);
    if (!m->receipt_handle || !*m->receipt_handle)
        return lerr_set(x->e, LERR_MALFORMED, RX ": message %.80s has no ReceiptHandle",
                        m->message_id);
    if (!m->body)
        return lerr_set(x->e, LERR_MALFORMED, RX ": message %.80s has no Body", m->message_id);
    if (lone)
        msg_problem(m, SQS_MSG_BAD_UNICODE,
                    "body holds an unpaired UTF-16 surrogate (\\ud800-\\udfff), which is not "
                    "Unicode text");
    sqs_check_md5(m);
    count = sqs_parse_count(x->sys[0], x->sys_len[0], 18);
    m->receive_count = count > 0 ? (unsigned long)count : 0;
    m->message_group_id = x->sys[3];  /* NUL-terminated in the arena, NULL when absent */
    x->ctx_at[index] = x->ctx.len;
    rx_context(x, m);
    m->context_len = x->ctx.len - x->ctx_at[index];
    return 0;
}

static int rx_messages(struct rx *x, struct sqs_batch *b)
{
    int state = 0, r = rx_optional(x, '[', -1, "Messages");

    while (r > 0 && (r = json_element(&x->j, &state)) > 0) {
        if (b->count == SQS_MAX_MESSAGES)
            return lerr_set(x->e, LERR_MALFORMED, RX ": more than %d messages",
                            SQS_MAX_MESSAGES);
        if (rx_message(x, (int)b->count, &b->messages[b->count]) < 0)
            return -1;
        b->count++;
    }
    return r;
}

void sqs_batch_free(struct sqs_batch *b)
{
    free(b->mem);
    free(b->context_mem);
    memset(b, 0, sizeof *b);
}

int sqs_parse_receive(const char *json, size_t len, struct sqs_batch *b, struct lerr *e)
{
    size_t msgs = SQS_MAX_MESSAGES * sizeof(struct sqs_message);
    static const char *const names[] = { "Messages" };
    struct rx x = { .e = e, .left = len + 1 };
    int state = 0, k, r = 0;

    memset(b, 0, sizeof *b);
    if (len > SIZE_MAX - msgs - 1)
        return lerr_set(e, LERR_TOO_LARGE, RX " too large");
    b->mem = calloc(1, msgs + len + 1);
    if (!b->mem)
        return lerr_set(e, LERR_NOMEM, "out of memory reading an SQS ReceiveMessage answer");
    b->messages = b->mem;
    json_init(&x.j, json, len);
    x.j.max_depth = RX_MAX_DEPTH;
    x.j.lenient = 1;
    x.arena = (char *)b->mem + msgs;
    if (json_peek(&x.j) != '{') {
        char start[40];
        sqs_set_text(start, sizeof start, (const char *)x.j.p, (size_t)(x.j.end - x.j.p));
        r = lerr_set(e, LERR_MALFORMED, RX " is not a JSON object (%s%s%s)",
                     start[0] ? "it starts with \"" : "it is empty", start, start[0] ? "\"" : "");
    }
    while (r == 0 && (r = json_member_of(&x.j, &state, names, 1, &k)) > 0)
        r = k == 0 ? rx_messages(&x, b) : json_skip(&x.j);
    if (r == 0 && json_peek(&x.j) != -1)
        r = lerr_set(e, LERR_MALFORMED, RX " is not valid JSON: unexpected data after the "
                     "object at byte %zu", (size_t)(x.j.p - x.j.start));
    if (r == 0 && (x.ctx.oom || x.attrs.oom))
        r = lerr_set(e, LERR_NOMEM, "out of memory reading an SQS ReceiveMessage answer");
    /* The readers return the scanner's -1 as it is (x.j.why set): its error is put in the
     * answer's words once, here. At the very end, the answer was cut short. */
    if (r < 0 && x.j.why)
        lerr_set(e, LERR_MALFORMED, RX " is not valid JSON: %s at byte %zu",
                 x.j.err_at == len ? "unexpected end" : x.j.why, x.j.err_at);
    free(x.attrs.p);
    b->context_mem = x.ctx.p;
    if (r < 0) {
        sqs_batch_free(b);
        return -1;
    }
    for (size_t i = 0; i < b->count; i++)
        b->messages[i].context = x.ctx.p + x.ctx_at[i];
    return 0;
}

/* ======================================================================================
 * SendMessage and SendMessageBatch (lambdo send)
 * ==================================================================================== */

int sqs_text_check(const char *s, size_t len, size_t *err_at, const char **why)
{
    const unsigned char *p = (const unsigned char *)s;
    const char *bad = NULL;
    size_t i = 0;

    while (i < len && !bad) {
        unsigned cp;
        size_t n = text_utf8_next(p + i, len - i, &cp);

        if (n == 0)
            bad = "invalid UTF-8";
        else if (cp < 0x20 && cp != '\t' && cp != '\n' && cp != '\r')
            bad = "a control character, which SQS does not accept";
        else if (cp == 0xfffe || cp == 0xffff)
            bad = "U+FFFE or U+FFFF, which SQS does not accept";
        else
            i += n;
    }
    if (!bad)
        return 0;
    if (err_at)
        *err_at = i;
    if (why)
        *why = bad;
    return -1;
}

size_t sqs_send_size(const struct sqs_entry *en)
{
    const char *values[3] = { en->image, en->size, en->command };
    size_t n = en->body_len;

    for (size_t i = 0; i < 3; i++)
        if (values[i])
            n += strlen(sqs_attr_names[i]) + strlen("String") + strlen(values[i]);
    return n;
}

int sqs_fifo_id_check(const char *id, const char *what, struct lerr *e)
{
    size_t n = strlen(id);

    if (n == 0 || n > 128)
        return lerr_set(e, LERR_INVALID, "%s must be 1 to 128 characters, got %zu", what, n);
    for (size_t i = 0; i < n; i++)
        if (id[i] <= ' ' || id[i] > '~')  /* letters, digits, punctuation: SQS's rule */
            return lerr_set(e, LERR_INVALID, "%s \"%.40s\" has a character SQS refuses at "
                            "byte %zu (only ASCII letters, digits and punctuation)", what, id, i);
    return 0;
}

/* What SQS would refuse about an entry, found before anything is sent. */
static int sqs_send_entry_check(const struct sqs_entry *en, struct lerr *e)
{
    const char *values[3] = { en->image, en->size, en->command };
    const char *why;
    size_t at, size = sqs_send_size(en);

    if (!en->body || en->body_len == 0)
        return lerr_set(e, LERR_INVALID, "message body is empty (SQS needs at least one "
                        "character)");
    if (sqs_text_check(en->body, en->body_len, &at, &why) < 0)
        return lerr_set(e, LERR_INVALID, "message body has %s at byte %zu", why, at);
    for (size_t i = 0; i < 3; i++) {
        if (!values[i])
            continue;
        if (!values[i][0])
            return lerr_set(e, LERR_INVALID, "message attribute %s is empty (SQS needs a value)",
                            sqs_attr_names[i]);
        if (sqs_text_check(values[i], strlen(values[i]), &at, &why) < 0)
            return lerr_set(e, LERR_INVALID, "message attribute %s has %s at byte %zu",
                            sqs_attr_names[i], why, at);
    }
    if (size > SQS_MAX_MESSAGE_BYTES)
        return lerr_set(e, LERR_INVALID, "message of %zu bytes (body and attributes) is over "
                        "SQS's limit of %d", size, SQS_MAX_MESSAGE_BYTES);
    if (en->group_id && sqs_fifo_id_check(en->group_id, "group id", e) < 0)
        return -1;
    if (en->dedup_id && sqs_fifo_id_check(en->dedup_id, "deduplication id", e) < 0)
        return -1;
    return 0;
}

/* MD5OfMessageAttributes as SQS computes it: for each attribute, in byte order of the
 * names, length-prefixed (4 bytes, big-endian) name and DataType, the transport type
 * byte (1 for String), then the length-prefixed value. */
static void sqs_md5_field(br_md5_context *ctx, const char *s)
{
    size_t n = strlen(s);
    unsigned char len[4] = { (unsigned char)(n >> 24), (unsigned char)(n >> 16),
                             (unsigned char)(n >> 8), (unsigned char)n };

    br_md5_update(ctx, len, 4);
    br_md5_update(ctx, s, n);
}

/* The MD5 SQS reports for the entry's attributes (MD5OfMessageAttributes), as 32
 * lowercase hex characters; "" when the entry has none. */
static void sqs_attributes_md5(const struct sqs_entry *en, char out[33])
{
    /* sqs_attr_names in byte order: command, image, size */
    const char *names[3] = { "command", "image", "size" };
    const char *values[3] = { en->command, en->image, en->size };
    unsigned char sum[br_md5_SIZE], one = 1;
    br_md5_context ctx;

    out[0] = '\0';
    if (!en->command && !en->image && !en->size)
        return;
    br_md5_init(&ctx);
    for (size_t i = 0; i < 3; i++) {
        if (!values[i])
            continue;
        sqs_md5_field(&ctx, names[i]);
        sqs_md5_field(&ctx, "String");
        br_md5_update(&ctx, &one, 1);
        sqs_md5_field(&ctx, values[i]);
    }
    br_md5_out(&ctx, sum);
    text_hex_encode(sum, sizeof sum, out);
}

/* A message SQS accepted. The SDKs check the MD5s SQS computed of what it stored; so do
 * we: a mismatch means the message on the queue is not the one sent. */
static void sqs_send_accepted(struct sqs_entry *en, const cJSON *item)
{
    const char *message_id = sqs_json_string(item, "MessageId");
    const char *md5_body = sqs_json_string(item, "MD5OfMessageBody");
    const char *md5_attrs = sqs_json_string(item, "MD5OfMessageAttributes");
    char body[33], attrs[33], why[200];

    en->status = SQS_ENTRY_OK;
    en->code[0] = en->message[0] = '\0';
    sqs_set_text(en->sent_id, sizeof en->sent_id, message_id, strlen(message_id));
    sqs_md5_hex(en->body, en->body_len, body);
    sqs_attributes_md5(en, attrs);
    if (md5_body && strcasecmp(body, md5_body) != 0)
        snprintf(why, sizeof why, "MD5OfMessageBody %.40s is not the MD5 of the body sent "
                 "(%s): the message stored is not the one sent", md5_body, body);
    else if (md5_attrs && attrs[0] && strcasecmp(attrs, md5_attrs) != 0)
        snprintf(why, sizeof why, "MD5OfMessageAttributes %.40s is not the MD5 of the "
                 "attributes sent (%s)", md5_attrs, attrs);
    else
        return;
    en->status = SQS_ENTRY_FAILED;
    sqs_why(en->code, en->message, "MD5Mismatch", why);
}

/* ======================================================================================
 * The entry calls: DeleteMessageBatch, ChangeMessageVisibilityBatch, SendMessageBatch,
 * and SendMessage, a batch of one without the list
 *
 * One request writer, one answer reader and one retry loop serve the four; an
 * operation's table says what differs: receipt handles or messages (checked and written
 * by sb_receipt or sb_message), a list or one entry. A
 * Successful item makes a receipt entry OK, and a message sent OK once its MD5s match
 * (sqs_send_accepted). SendMessage's answer is its one Successful item.
 * ==================================================================================== */

struct sqs_batch_ops {
    const char *name;    /* the operation, as X-Amz-Target names it */
    const char *answer;  /* how errors about its answer begin */
    int receipts;        /* its entries are receipt handles, which can go stale */
    int single;          /* one entry, written and answered without Entries (SendMessage) */
};

static const struct sqs_batch_ops sqs_ops[] = {
    [SQS_OP_DELETE] = { "DeleteMessageBatch", "SQS batch answer", 1, 0 },
    [SQS_OP_CHANGE_VISIBILITY] = { "ChangeMessageVisibilityBatch", "SQS batch answer", 1, 0 },
    [SQS_OP_SEND_BATCH] = { "SendMessageBatch", "SQS SendMessageBatch answer", 0, 0 },
    [SQS_OP_SEND] = { "SendMessage", "SQS SendMessage answer", 0, 1 },
};

/* How many entries are in state s; *first: the first of them (n when none). */
static size_t sqs_count(const struct sqs_entry *entries, size_t n, enum sqs_entry_status s,
                        size_t *first)
{
    size_t k = 0;

    *first = n;
    for (size_t i = 0; i < n; i++)
        if (entries[i].status == s && k++ == 0)
            *first = i;
    return k;
}

/* How log lines and errors name an entry: its message, or its place in the batch. */
static void sqs_label(const struct sqs_batch_ops *o, const struct sqs_entry *entries, size_t i,
                      char *out, size_t cap)
{
    const char *id = o->receipts ? entries[i].message_id : entries[i].sent_id;

    if (o->receipts || o->single)
        snprintf(out, cap, "message %s", id ? id : "(unnamed)");
    else
        snprintf(out, cap, "entry %zu", i);
}

/* Entries are named by their index in the caller's array ("m0".."m9": at most 10), so an
 * answer maps straight back to its entry, and retries of a subset keep their names. */
_Static_assert(SQS_MAX_MESSAGES <= 10, "entry ids are one digit");

/* "m<index>" of an entry that was sent (still pending), else -1 ("m01" is not m1). */
static long sqs_entry_index(const cJSON *item, const struct sqs_entry *entries, size_t n)
{
    const char *id = cJSON_IsObject(item) ? sqs_json_string(item, "Id") : NULL;
    size_t i;

    if (!id || id[0] != 'm' || id[1] < '0' || id[1] > '9' || id[2])
        return -1;
    i = (size_t)(id[1] - '0');
    return i < n && entries[i].status == SQS_ENTRY_PENDING ? (long)i : -1;
}

/* --- what differs: receipt handles ------------------------------------------------- */

static int sb_receipt(const struct sqs_batch_ops *o, struct json_buf *b,
                      const struct sqs_entry *en, size_t i, struct lerr *e)
{
    if (!en->receipt_handle || !*en->receipt_handle)
        return lerr_set(e, LERR_INVALID, "SQS %s: entry %zu has no receipt handle", o->name, i);
    if (o == &sqs_ops[SQS_OP_CHANGE_VISIBILITY] &&
        (en->visibility_timeout < 0 || en->visibility_timeout > SQS_MAX_VISIBILITY))
        return lerr_set(e, LERR_INVALID,
                        "SQS %s: entry %zu: VisibilityTimeout must be 0 to %d, got %d", o->name,
                        i, SQS_MAX_VISIBILITY, en->visibility_timeout);
    json_buf_lit(b, ",\"ReceiptHandle\":");
    json_buf_string(b, en->receipt_handle, strlen(en->receipt_handle));
    if (o == &sqs_ops[SQS_OP_CHANGE_VISIBILITY])
        json_buf_fmt(b, ",\"VisibilityTimeout\":%d", en->visibility_timeout);
    return 0;
}

/* The receipt handle no longer names a message in flight: it was received again (so it
 * is someone else's now) or its visibility timeout ran out. */
static int sqs_stale(const char *code, const char *message)
{
    return strcmp(code, "ReceiptHandleIsInvalid") == 0 || strcmp(code, "MessageNotInflight") == 0 ||
           strcmp(code, "InvalidReceiptHandle") == 0 ||
           (strncmp(code, "InvalidParameterValue", 21) == 0 &&
            strcasestr(message, "receipt handle") && strcasestr(message, "expired"));
}

/* --- what differs: messages to send ------------------------------------------------ */

/* ,"MessageBody":...,"MessageAttributes":{...} of entry i, once checked. */
static int sb_message(const struct sqs_batch_ops *o, struct json_buf *b,
                      const struct sqs_entry *en, size_t i, struct lerr *e)
{
    const char *values[3] = { en->image, en->size, en->command };
    int first = 1;

    if (sqs_send_entry_check(en, e) < 0) {
        if (o->single)
            return lerr_wrap(e, "SQS %s", o->name);
        return lerr_wrap(e, "SQS %s: entry %zu", o->name, i);
    }
    json_buf_lit(b, ",\"MessageBody\":");
    json_buf_string(b, en->body, en->body_len);
    for (size_t k = 0; k < 3; k++) {
        if (!values[k])
            continue;
        /* the names are sqs_attr_names': nothing to escape */
        json_buf_fmt(b, "%s\"%s\":{\"DataType\":\"String\",\"StringValue\":",
                     first ? ",\"MessageAttributes\":{" : ",", sqs_attr_names[k]);
        first = 0;
        json_buf_string(b, values[k], strlen(values[k]));
        json_buf_lit(b, "}");
    }
    if (!first)
        json_buf_lit(b, "}");
    if (en->group_id) {  /* checked: printable ASCII, nothing to escape but '"' and '\\' */
        json_buf_lit(b, ",\"MessageGroupId\":");
        json_buf_string(b, en->group_id, strlen(en->group_id));
    }
    if (en->dedup_id) {
        json_buf_lit(b, ",\"MessageDeduplicationId\":");
        json_buf_string(b, en->dedup_id, strlen(en->dedup_id));
    }
    return 0;
}


/* --- the request ------------------------------------------------------------------- */

/* The pending entries, each checked before it is written: nothing is sent that SQS would
 * refuse. */
char *sqs_batch_request(enum sqs_batch_op op, const char *queue_url,
                        const struct sqs_entry *entries, size_t n, size_t *len, struct lerr *e)
{
    const struct sqs_batch_ops *o = &sqs_ops[op];
    struct json_buf b = { 0 };
    size_t sent = 0, max = o->single ? 1 : SQS_MAX_MESSAGES;

    if (n < 1 || n > max) {
        lerr_set(e, LERR_INVALID, "SQS %s: %zu entries (1 to %zu allowed)", o->name, n, max);
        return NULL;
    }
    if (sb_queue(&b, queue_url, o->name, e) < 0)
        return NULL;
    json_buf_lit(&b, o->single ? "" : ",\"Entries\":[");
    for (size_t i = 0; i < n; i++) {
        /* not json_buf_fmt: every entry of every delete goes through here */
        char id[] = { 'm', (char)('0' + i), '"', '\0' };

        if (entries[i].status != SQS_ENTRY_PENDING)
            continue;
        if (!o->single) {
            json_buf_lit(&b, sent ? ",{\"Id\":\"" : "{\"Id\":\"");
            json_buf_lit(&b, id);
        }
        /* each entry checked, then written: what SQS would refuse is never sent */
        if ((o->receipts ? sb_receipt : sb_message)(o, &b, &entries[i], i, e) < 0) {
            free(b.p);
            return NULL;
        }
        json_buf_lit(&b, o->single ? "" : "}");
        sent++;
    }
    if (sent == 0) {
        free(b.p);
        lerr_set(e, LERR_INVALID, "SQS %s: no pending entry to send", o->name);
        return NULL;
    }
    json_buf_lit(&b, o->single ? "" : "]");
    return sb_finish(&b, len, e);
}


/* --- the answer -------------------------------------------------------------------- */

/* The answer's Successful and Failed lists (NULL when absent or null); -1 when either is
 * something else, or holds an item that cannot be applied: nothing is applied then.
 * SendMessage's answer is itself the one Successful item. */
static int sqs_answer_lists(const struct sqs_batch_ops *o, const cJSON *root,
                            const cJSON *lists[2], struct lerr *e)
{
    const cJSON *item;
    const char *id;

    if (!cJSON_IsObject(root))
        return lerr_set(e, LERR_MALFORMED, "%s: not a JSON object", o->answer);
    if (o->single) {
        id = sqs_json_string(root, "MessageId");
        return id && *id ? 0 : lerr_set(e, LERR_MALFORMED, "%s: no MessageId", o->answer);
    }
    for (int f = 0; f < 2; f++) {
        lists[f] = cJSON_GetObjectItemCaseSensitive(root, f ? "Failed" : "Successful");
        if (lists[f] && !cJSON_IsNull(lists[f]) && !cJSON_IsArray(lists[f]))
            return lerr_set(e, LERR_MALFORMED, "%s: Successful or Failed is not an array",
                            o->answer);
        cJSON_ArrayForEach(item, lists[f]) {
            id = cJSON_IsObject(item) ? sqs_json_string(item, "MessageId") : NULL;
            if (f && !cJSON_IsObject(item))
                return lerr_set(e, LERR_MALFORMED, "%s: a Failed entry is not an object",
                                o->answer);
            if (!f && !o->receipts && (!id || !*id))
                return lerr_set(e, LERR_MALFORMED, "%s: a Successful entry has no MessageId",
                                o->answer);
        }
    }
    return 0;
}

/* A Failed item: STALE, FAILED, or still pending when SQS's side failed (throttled or
 * internal), worth a retry. Without SenderFault, the fault is assumed ours. */
static void sqs_apply_failed(const struct sqs_batch_ops *o, const cJSON *item,
                             struct sqs_entry *entries, size_t i)
{
    const cJSON *fault = cJSON_GetObjectItemCaseSensitive(item, "SenderFault");
    const char *code = sqs_json_string(item, "Code"), *message = sqs_json_string(item, "Message");
    struct sqs_entry *en = &entries[i];
    char label[160];

    sqs_why(en->code, en->message, code ? code : "", message ? message : "");
    if (o->receipts && sqs_stale(en->code, en->message)) {
        en->status = SQS_ENTRY_STALE;
        sqs_label(o, entries, i, label, sizeof label);
        log_warn("SQS %s: %s: receipt handle no longer valid (%s: %s); the message was received "
                 "again or is no longer in flight", o->name, label, en->code, en->message);
    } else if ((!cJSON_IsBool(fault) || cJSON_IsTrue(fault)) && !sqs_code_retryable(en->code)) {
        en->status = SQS_ENTRY_FAILED;
    }
}

int sqs_parse_batch_result(enum sqs_batch_op op, const char *json, size_t len,
                           struct sqs_entry *entries, size_t n, struct lerr *e)
{
    const struct sqs_batch_ops *o = &sqs_ops[op];
    cJSON *root = json_parse(json, len);
    const cJSON *lists[2] = { NULL, NULL }, *item;
    int r = sqs_answer_lists(o, root, lists, e);

    if (r == 0 && o->single)  /* the answer is about the one entry, whatever its state */
        sqs_send_accepted(entries, root);
    for (int f = 0; r == 0 && f < 2; f++) {
        cJSON_ArrayForEach(item, lists[f]) {
            long i = sqs_entry_index(item, entries, n);
            if (i < 0)
                log_warn("%s: ignoring a %s entry with an Id that was not sent", o->answer,
                         f ? "Failed" : "Successful");
            else if (f)
                sqs_apply_failed(o, item, entries, (size_t)i);
            else if (o->receipts)
                entries[i].status = SQS_ENTRY_OK;
            else
                sqs_send_accepted(&entries[i], item);
        }
    }
    cJSON_Delete(root);
    return r;
}

/* --- the rounds -------------------------------------------------------------------- */

/* Gives the still-pending entries why: a whole-request failure, "" to start a round, or
 * (keep set: only to those that do not say why already) what the answer left out. */
static void sqs_pending_why(struct sqs_entry *entries, size_t n, int keep, const char *code,
                            const char *message)
{
    for (size_t i = 0; i < n; i++)
        if (entries[i].status == SQS_ENTRY_PENDING && !(keep && entries[i].code[0]))
            sqs_why(entries[i].code, entries[i].message, code, message);
}

/* One round: send the pending entries, apply the answer. 0 when the exchange worked
 * (some entries may still be pending), -1 when the request failed as a whole: the
 * pending entries then say why. */
static int sqs_batch_round(struct sqs_client *c, enum sqs_batch_op op, struct sqs_entry *entries,
                           size_t n, struct lerr *e)
{
    const struct sqs_batch_ops *o = &sqs_ops[op];
    struct http_response resp;
    size_t len;
    char *body;
    int r;

    sqs_pending_why(entries, n, 0, "", "");
    body = sqs_batch_request(op, c->queue_url, entries, n, &len, e);
    r = sqs_call_retry(c, o->name, body, len, 0, 1, &resp, e);
    if (r == 0) {
        r = sqs_parse_batch_result(op, resp.body, resp.body_len, entries, n, e);
        if (r < 0 && o->receipts)  /* "SQS batch answer" does not say which */
            lerr_wrap(e, "SQS %s", o->name);
        r = sqs_answer_read(c, &resp, r, e);
    }
    if (r < 0) {
        sqs_pending_why(entries, n, 0, sqs_call_code(c, e), e->msg);
        return -1;
    }
    sqs_pending_why(entries, n, 1, "NotReported", "the answer did not mention this entry");
    return 0;
}

/* "<k> of <n> entries <what>; entry 3: <code>: <message>", about the first entry in
 * state s (SendMessage: "message <id>: <code>: <message>"). */
static int sqs_entries_error(const struct sqs_batch_ops *o, struct sqs_entry *entries, size_t n,
                             enum sqs_entry_status s, const char *what, struct lerr *e)
{
    size_t i, k = sqs_count(entries, n, s, &i);
    char label[160];

    sqs_label(o, entries, i, label, sizeof label);
    if (o->single)
        return lerr_set(e, LERR_HTTP, "SQS %s: %s: %s: %s", o->name, label, entries[i].code,
                        entries[i].message);
    return lerr_set(e, LERR_HTTP, "SQS %s: %zu of %zu entries %s; %s: %s: %s", o->name, k, n,
                    what, label, entries[i].code, entries[i].message);
}

int sqs_batch_call(struct sqs_client *c, enum sqs_batch_op op, struct sqs_entry *entries,
                   size_t n, struct lerr *e)
{
    const struct sqs_batch_ops *o = &sqs_ops[op];
    unsigned attempts = c->batch_attempts ? c->batch_attempts : 1;
    int whole_failed = 0;
    struct lerr why;
    size_t i;

    for (i = 0; i < n; i++) {
        entries[i].status = SQS_ENTRY_PENDING;
        entries[i].sent_id[0] = '\0';
    }
    memset(&c->last_error, 0, sizeof c->last_error);
    for (unsigned attempt = 0; attempt < attempts; attempt++) {
        whole_failed = sqs_batch_round(c, op, entries, n, e) < 0;
        if (whole_failed && !c->last_error.retryable)
            break;
        if (!whole_failed && sqs_count(entries, n, SQS_ENTRY_PENDING, &i) == 0)
            break;
        if (whole_failed)
            why = *e;
        else
            sqs_entries_error(o, entries, n, SQS_ENTRY_PENDING, "not done yet", &why);
        if (attempt + 1 < attempts && sqs_backoff(c, attempt, attempts, &why, e) < 0) {
            whole_failed = 1;
            sqs_pending_why(entries, n, 0, sqs_call_code(c, e), e->msg);
            break;
        }
    }
    for (i = 0; i < n; i++)
        if (entries[i].status == SQS_ENTRY_PENDING)
            entries[i].status = SQS_ENTRY_FAILED;
    if (whole_failed)
        return -1;  /* e already says why, in SQS's words */
    if (sqs_count(entries, n, SQS_ENTRY_FAILED, &i) == 0)
        return 0;
    sqs_why(c->last_error.code, c->last_error.message, entries[i].code, entries[i].message);
    c->last_error.retryable = 0;
    return sqs_entries_error(o, entries, n, SQS_ENTRY_FAILED, "failed", e);
}

/* ======================================================================================
 * GetQueueAttributes (lambdo check)
 * ==================================================================================== */

/* The attributes asked for: the three counts, in the order of sqs_parse_attributes,
 * RedrivePolicy, FifoQueue and ContentBasedDeduplication (FIFO queues only). */
static const char *const sqs_queue_attrs[] = {
    "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed", "RedrivePolicy", "FifoQueue",
    "ContentBasedDeduplication",
};

char *sqs_attributes_request(const char *queue_url, size_t *len, struct lerr *e)
{
    struct json_buf b = { 0 };

    if (sb_queue(&b, queue_url, "GetQueueAttributes", e) < 0)
        return NULL;
    sb_names(&b, "AttributeNames", sqs_queue_attrs, text_ends_with(queue_url, ".fifo") ? 6 : 4);
    return sb_finish(&b, len, e);
}

/* RedrivePolicy is itself JSON text: {"deadLetterTargetArn":"arn:...","maxReceiveCount":5}
 * (the count a number, or a string in older answers). */
static void sqs_read_redrive(const char *policy, struct sqs_queue_info *out)
{
    cJSON *j = json_parse(policy, strlen(policy));
    const cJSON *count = cJSON_GetObjectItemCaseSensitive(j, "maxReceiveCount");
    const char *arn = cJSON_IsObject(j) ? sqs_json_string(j, "deadLetterTargetArn") : NULL;

    if (arn)
        sqs_set_text(out->dead_letter_arn, sizeof out->dead_letter_arn, arn, strlen(arn));
    if (cJSON_IsNumber(count) && count->valuedouble >= 0 && count->valuedouble < 1e9)
        out->max_receive_count = (long)count->valuedouble;
    else if (cJSON_IsString(count))
        out->max_receive_count = sqs_parse_count(count->valuestring,
                                                 strlen(count->valuestring), 9);
    cJSON_Delete(j);
}

int sqs_parse_attributes(const char *json, size_t len, struct sqs_queue_info *out,
                         struct lerr *e)
{
    cJSON *root = json_parse(json, len);
    const cJSON *attrs = cJSON_GetObjectItemCaseSensitive(root, "Attributes");
    long *counts[] = { &out->visible, &out->in_flight, &out->delayed };
    const char *v;

    memset(out, 0, sizeof *out);
    out->max_receive_count = -1;
    if (!cJSON_IsObject(root) || (attrs && !cJSON_IsObject(attrs) && !cJSON_IsNull(attrs))) {
        cJSON_Delete(root);
        return lerr_set(e, LERR_MALFORMED, "SQS GetQueueAttributes answer: not a JSON object "
                        "with an Attributes object");
    }
    /* SQS sends every attribute as a string: a count is decimal digits, else unknown (-1) */
    for (size_t i = 0; i < 3; i++) {
        v = sqs_json_string(attrs, sqs_queue_attrs[i]);
        *counts[i] = sqs_parse_count(v, v ? strlen(v) : 0, 18);
    }
    v = sqs_json_string(attrs, sqs_queue_attrs[3]);
    if (v && *v) {
        out->has_redrive = 1;
        sqs_read_redrive(v, out);
    }
    v = sqs_json_string(attrs, sqs_queue_attrs[4]);
    out->fifo = v && strcmp(v, "true") == 0;
    v = sqs_json_string(attrs, sqs_queue_attrs[5]);
    out->content_dedup = v && strcmp(v, "true") == 0;
    cJSON_Delete(root);
    return 0;
}

/* Fills out only on success: the callers read nothing of it after a failure. */
int sqs_get_queue_attributes(struct sqs_client *c, struct sqs_queue_info *out,
                             struct lerr *e)
{
    struct http_response resp;
    size_t len;
    char *body;

    memset(&c->last_error, 0, sizeof c->last_error);
    body = sqs_attributes_request(c->queue_url, &len, e);
    if (sqs_call_retry(c, "GetQueueAttributes", body, len, 0, c->receive_attempts, &resp, e) < 0)
        return -1;
    return sqs_answer_read(c, &resp, sqs_parse_attributes(resp.body, resp.body_len, out, e), e);
}
