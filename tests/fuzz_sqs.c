/* Fuzzes the three parsers of SQS answers: ReceiveMessage, error answers and batch
 * results. Beyond "no crash, no leak" (the sanitizers), it checks what a caller relies on:
 *   - every parsed message has its id, receipt handle and body, the body NUL-terminated
 *     at body_len, and the MD5 flag set exactly when MD5OfBody is not the body's MD5;
 *   - a message's body is what decoding its JSON string gives: whenever cJSON also accepts
 *     the answer and the message object has a single "Body" member, cJSON's decoding of it
 *     equals ours up to the first NUL (cJSON cannot carry a NUL), and its length equals
 *     ours when the body holds none; likewise image/size/command match cJSON's reading;
 *   - error and batch parsing leave short, NUL-terminated, control-free texts and valid
 *     entry states. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <bearssl.h>

#include "cJSON.h"
#include "log.h"
#include "json.h"
#include "sqs.h"

static void check(int ok)
{
    if (!ok)
        abort();
}

static void check_text(const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);

    check(n < cap);
    for (size_t i = 0; i < n; i++)
        check((unsigned char)s[i] >= 0x20);
}

static int md5_matches(const struct sqs_message *m)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char sum[16];
    char want[33];
    br_md5_context ctx;

    br_md5_init(&ctx);
    br_md5_update(&ctx, m->body, m->body_len);
    br_md5_out(&ctx, sum);
    for (int i = 0; i < 16; i++) {
        want[2 * i] = hex[sum[i] >> 4];
        want[2 * i + 1] = hex[sum[i] & 15];
    }
    want[32] = '\0';
    return strcasecmp(want, m->md5_of_body) == 0;
}

/* cJSON takes the first of duplicate members and we take the last: compare only where
 * there is one. */
static int count_members(const cJSON *obj, const char *name)
{
    const cJSON *it;
    int n = 0;

    cJSON_ArrayForEach(it, obj)
        n += it->string && strcmp(it->string, name) == 0;
    return n;
}

/* One attribute as cJSON reads it: its StringValue when it is a usable String, else NULL.
 * *unsure when duplicate members make the two parsers' views legitimately differ. */
static const char *cjson_attribute(const cJSON *attrs, const char *name, int *unsure)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(attrs, name), *type, *value;

    if (count_members(attrs, name) > 1)
        *unsure = 1;
    if (!cJSON_IsObject(a))
        return NULL;
    if (count_members(a, "DataType") > 1 || count_members(a, "StringValue") > 1)
        *unsure = 1;
    type = cJSON_GetObjectItemCaseSensitive(a, "DataType");
    value = cJSON_GetObjectItemCaseSensitive(a, "StringValue");
    if (!cJSON_IsString(type) || !cJSON_IsString(value))
        return NULL;
    if (strcmp(type->valuestring, "String") != 0 && strncmp(type->valuestring, "String.", 7) != 0)
        return NULL;
    return value->valuestring;
}

/* nul_escape: the answer holds "\u0000", so a member name may be one that cJSON cuts short
 * ("image\u0000" reads as "image") and we do not; then only what we accept is checked. */
static void check_attributes(const cJSON *msg, const struct sqs_message *m, int nul_escape)
{
    const cJSON *attrs = cJSON_GetObjectItemCaseSensitive(msg, "MessageAttributes");
    const char *ours[] = { m->image, m->size, m->command };
    const char *names[] = { "image", "size", "command" };

    if (count_members(msg, "MessageAttributes") != 1)
        return;
    for (int i = 0; i < 3; i++) {
        int unsure = 0;
        const char *theirs = cjson_attribute(attrs, names[i], &unsure);
        if (unsure)
            continue;
        if (ours[i])
            check(theirs && strcmp(theirs, ours[i]) == 0);
        else if (theirs && !nul_escape)  /* a NUL that made us refuse it is flagged */
            check(m->flags & SQS_MSG_BAD_ATTRIBUTE);
    }
}

/* Our body against cJSON's decoding of the same answer. */
static void check_against_cjson(const uint8_t *data, size_t size, const struct sqs_batch *b)
{
    cJSON *root = cJSON_ParseWithLength((const char *)data, size);
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(root, "Messages");
    int nul_escape = memmem(data, size, "\\u0000", 6) != NULL;

    /* With "\u0000" in the answer, cJSON may have read a member name such as
     * "Messages\u0000" as "Messages" (it cuts names at the NUL) where we see another
     * member: a different list is then no disagreement. */
    if (cJSON_IsArray(list) && count_members(root, "Messages") == 1 &&
        !(nul_escape && (size_t)cJSON_GetArraySize(list) != b->count)) {
        check((size_t)cJSON_GetArraySize(list) == b->count);
        for (size_t i = 0; i < b->count; i++) {
            const cJSON *msg = cJSON_GetArrayItem(list, (int)i);
            const cJSON *body = cJSON_GetObjectItemCaseSensitive(msg, "Body");
            const struct sqs_message *m = &b->messages[i];
            size_t clen;

            check_attributes(msg, m, nul_escape);
            if (count_members(msg, "Body") != 1 || !cJSON_IsString(body))
                continue;
            clen = strlen(body->valuestring);
            if (memchr(m->body, '\0', m->body_len))
                check(clen <= m->body_len && memcmp(body->valuestring, m->body, clen) == 0 &&
                      m->body[clen] == '\0');
            else
                check(clen == m->body_len && memcmp(body->valuestring, m->body, clen) == 0);
        }
    }
    cJSON_Delete(root);
}

static void fuzz_receive(const uint8_t *data, size_t size)
{
    struct sqs_batch b;
    struct lerr e = { 0 };

    if (sqs_parse_receive((const char *)data, size, &b, &e) < 0) {
        check(e.kind == LERR_MALFORMED && e.msg[0] && !b.mem && b.count == 0);
        return;
    }
    check(b.count <= SQS_MAX_MESSAGES);
    for (size_t i = 0; i < b.count; i++) {
        const struct sqs_message *m = &b.messages[i];
        check(m->message_id && m->receipt_handle && m->receipt_handle[0] && m->body);
        check(m->body[m->body_len] == '\0' && m->md5_of_body);
        check(!(m->flags & ~(SQS_MSG_MD5_MISMATCH | SQS_MSG_BAD_ATTRIBUTE | SQS_MSG_BAD_UNICODE)));
        check(((m->flags & SQS_MSG_MD5_MISMATCH) != 0) == !md5_matches(m));
        check((m->flags != 0) == (m->problem[0] != '\0'));
        check(strnlen(m->problem, sizeof m->problem) < sizeof m->problem);
        /* Attribute values handed on are whole C strings. */
        check(!m->image || strlen(m->image) < size);
        /* The context entry is strict JSON, an object, whatever the answer held (but a
         * message id that is not text, which SQS never sends: it is copied as it is). */
        check(m->context && m->context_len >= 2 && m->context[0] == '{');
        check(sqs_text_check(m->message_id, strlen(m->message_id), NULL, NULL) < 0 ||
              json_items(m->context, m->context_len, NULL, NULL, NULL, NULL) == 0);
    }
    check_against_cjson(data, size, &b);
    sqs_batch_free(&b);
}

static void fuzz_error(const uint8_t *data, size_t size)
{
    /* The first two bytes split the input into the two headers and the body. */
    size_t a = size > 0 ? data[0] % (size + 1) : 0, bl = size > 1 ? data[1] % (size + 1) : 0;
    size_t et = a < size ? a : size, qe = bl < size - et ? bl : size - et;
    const char *s = (const char *)data;
    struct http_response resp = { .head.status = 400 + (size ? data[0] % 200 : 0),
                                  .body = (char *)s + et + qe, .body_len = size - et - qe };
    struct sqs_api_error ae;
    struct lerr e = { 0 };
    int r;

    /* the headers as the HTTP client hands them on; one of length 0 is left out */
    if (et)
        resp.head.headers[resp.head.num_headers++] =
            (struct httpresp_header){ "X-Amzn-ErrorType", 16, s, et };
    if (qe)
        resp.head.headers[resp.head.num_headers++] =
            (struct httpresp_header){ "X-Amzn-Query-Error", 18, s + et, qe };
    r = sqs_parse_error("ReceiveMessage", &resp, &ae, &e);

    check_text(ae.code, sizeof ae.code);
    check_text(ae.message, sizeof ae.message);
    check(ae.retryable == 0 || ae.retryable == 1);
    check(!strchr(ae.code, '#') && !strchr(ae.code, ':'));
    check(r == -1 && e.kind == LERR_HTTP);
}

static void fuzz_batch(const uint8_t *data, size_t size)
{
    struct sqs_entry en[SQS_MAX_MESSAGES];
    struct lerr e = { 0 };

    memset(en, 0, sizeof en);
    for (int i = 0; i < SQS_MAX_MESSAGES; i++) {
        en[i].receipt_handle = "h";
        en[i].status = i % 4 == 3 ? SQS_ENTRY_OK : SQS_ENTRY_PENDING;
    }
    if (sqs_parse_batch_result(SQS_OP_DELETE, (const char *)data, size, en, SQS_MAX_MESSAGES, &e) < 0)
        check(e.kind == LERR_MALFORMED);
    for (int i = 0; i < SQS_MAX_MESSAGES; i++) {
        check(en[i].status <= SQS_ENTRY_FAILED);
        if (i % 4 == 3)  /* not sent: nothing in the answer may touch it */
            check(en[i].status == SQS_ENTRY_OK && !en[i].code[0]);
        check_text(en[i].code, sizeof en[i].code);
        check_text(en[i].message, sizeof en[i].message);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_setup(LOG_LEVEL_ERROR, 0);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_receive(data, size);
    fuzz_error(data, size);
    fuzz_batch(data, size);
    return 0;
}
