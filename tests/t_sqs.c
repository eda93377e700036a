/* sqs: request bodies (read back with cJSON), ReceiveMessage answers (bodies byte for
 * byte, attributes, per-message problems, malformed answers), error answers, batch
 * results, backoff bounds, and the client end to end against a scripted HTTP server on
 * 127.0.0.1 (signing, retries, per-entry retries, stale handles, cancel). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <bearssl.h>

#include "cJSON.h"
#include "log.h"
#include "json.h"
#include "ratelimit.h"
#include "sqs.h"

#define QUEUE "https://sqs.us-east-1.amazonaws.com/123456789012/jobs"
#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

static void assert_contains(const char *haystack, const char *needle)
{
    if (!strstr(haystack, needle))
        fail_msg("\"%s\" does not contain \"%s\"", haystack, needle);
}

static long long mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void md5_hex(const void *data, size_t len, char out[33])
{
    unsigned char sum[16];
    br_md5_context ctx;

    br_md5_init(&ctx);
    br_md5_update(&ctx, data, len);
    br_md5_out(&ctx, sum);
    for (int i = 0; i < 16; i++)
        snprintf(out + 2 * i, 3, "%02x", sum[i]);
}

/* ======================================================================================
 * Request bodies
 * ==================================================================================== */

static cJSON *body_json(const char *s, size_t len)
{
    cJSON *j;

    assert_non_null(s);
    assert_int_equal(strlen(s), len);
    j = cJSON_ParseWithLength(s, len);
    assert_non_null(j);
    assert_true(cJSON_IsObject(j));
    return j;
}

static int members(const cJSON *o)
{
    int n = 0;
    const cJSON *it;

    cJSON_ArrayForEach(it, o)
        n++;
    return n;
}

static void assert_names(const cJSON *o, const char *key, const char *const *want, int n)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, key);

    assert_true(cJSON_IsArray(arr));
    assert_int_equal(cJSON_GetArraySize(arr), n);
    for (int i = 0; i < n; i++) {
        const cJSON *s = cJSON_GetArrayItem(arr, i);
        assert_true(cJSON_IsString(s));
        assert_string_equal(s->valuestring, want[i]);
    }
}

static void assert_number(const cJSON *o, const char *key, int want)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

    assert_true(cJSON_IsNumber(v));
    assert_int_equal(v->valueint, want);
    assert_true(v->valuedouble == (double)want);
}

static void assert_str(const cJSON *o, const char *key, const char *want)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

    assert_true(cJSON_IsString(v));
    assert_string_equal(v->valuestring, want);
}

static void test_receive_request(void **state)
{
    /* Exactly what the context file needs: SQS returns only what is named. */
    static const char *const attrs[] = { "All" };
    static const char *const sys[] = { "ApproximateReceiveCount", "SentTimestamp",
                                       "ApproximateFirstReceiveTimestamp", "MessageGroupId",
                                       "MessageDeduplicationId", "SequenceNumber" };
    static const struct sqs_receive_opts cases[] = {
        { 1, 0, -1 }, { 10, 20, 300 }, { 5, 0, 0 }, { 10, 20, 43200 }, { 3, 7, -1 },
    };
    /* A queue URL is the caller's text: it must arrive as exactly that string. */
    const char *queue = "http://localhost:4566/000000000000/q\"\\\x01";

    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        struct lerr e = { 0 };
        size_t len = 0;
        char *s = sqs_receive_request(queue, &cases[i], &len, &e);
        cJSON *j = body_json(s, len);

        assert_str(j, "QueueUrl", queue);
        assert_number(j, "MaxNumberOfMessages", cases[i].max_messages);
        assert_number(j, "WaitTimeSeconds", cases[i].wait_seconds);
        if (cases[i].visibility_timeout >= 0)
            assert_number(j, "VisibilityTimeout", cases[i].visibility_timeout);
        else
            assert_null(cJSON_GetObjectItemCaseSensitive(j, "VisibilityTimeout"));
        assert_names(j, "MessageAttributeNames", attrs, 1);
        assert_names(j, "MessageSystemAttributeNames", sys, 6);
        assert_names(j, "AttributeNames", sys, 6);
        assert_int_equal(members(j), cases[i].visibility_timeout >= 0 ? 7 : 6);
        cJSON_Delete(j);
        free(s);
    }
}

static void test_receive_request_invalid(void **state)
{
    static const struct {
        const char *queue;
        struct sqs_receive_opts o;
        const char *why;
    } cases[] = {
        { QUEUE, { 0, 20, -1 }, "MaxNumberOfMessages must be 1 to 10, got 0" },
        { QUEUE, { 11, 20, -1 }, "MaxNumberOfMessages must be 1 to 10, got 11" },
        { QUEUE, { 1, -1, -1 }, "WaitTimeSeconds must be 0 to 20, got -1" },
        { QUEUE, { 1, 21, -1 }, "WaitTimeSeconds must be 0 to 20, got 21" },
        { QUEUE, { 1, 20, -2 }, "VisibilityTimeout must be 0 to 43200 (or -1), got -2" },
        { QUEUE, { 1, 20, 43201 }, "VisibilityTimeout must be 0 to 43200 (or -1), got 43201" },
        { NULL, { 1, 20, -1 }, "no queue URL" },
        { "", { 1, 20, -1 }, "no queue URL" },
        { "https://q/\xff", { 1, 20, -1 }, "the queue URL is not UTF-8" },
    };

    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        struct lerr e = { 0 };
        size_t len = 0;

        assert_null(sqs_receive_request(cases[i].queue, &cases[i].o, &len, &e));
        assert_int_equal(e.kind, LERR_INVALID);
        assert_contains(e.msg, "SQS ReceiveMessage: ");
        assert_contains(e.msg, cases[i].why);
    }
}

static void assert_entries(const cJSON *j, const char *const *ids, const char *const *handles,
                           const int *vis, int n)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "Entries");

    assert_true(cJSON_IsArray(arr));
    assert_int_equal(cJSON_GetArraySize(arr), n);
    for (int i = 0; i < n; i++) {
        const cJSON *it = cJSON_GetArrayItem(arr, i);
        assert_str(it, "Id", ids[i]);
        assert_str(it, "ReceiptHandle", handles[i]);
        if (vis)
            assert_number(it, "VisibilityTimeout", vis[i]);
        assert_int_equal(members(it), vis ? 3 : 2);
    }
}

static void test_batch_request(void **state)
{
    struct sqs_entry en[4] = {
        { .receipt_handle = "AQEB+/=\"quoted\"\\", .visibility_timeout = 0 },
        { .receipt_handle = "done", .status = SQS_ENTRY_OK },
        { .receipt_handle = "h2", .visibility_timeout = 43200 },
        { .receipt_handle = "h3", .visibility_timeout = 30, .status = SQS_ENTRY_STALE },
    };
    static const char *const ids[] = { "m0", "m2" };
    const char *handles[] = { en[0].receipt_handle, "h2" };
    static const int vis[] = { 0, 43200 };
    struct lerr e = { 0 };
    size_t len = 0;
    char *s;
    cJSON *j;

    /* Only the pending entries go out, each named by its index. */
    s = sqs_batch_request(SQS_OP_DELETE, QUEUE, en, 4, &len, &e);
    j = body_json(s, len);
    assert_str(j, "QueueUrl", QUEUE);
    assert_entries(j, ids, handles, NULL, 2);
    assert_int_equal(members(j), 2);
    cJSON_Delete(j);
    free(s);

    s = sqs_batch_request(SQS_OP_CHANGE_VISIBILITY, QUEUE, en, 4, &len, &e);
    j = body_json(s, len);
    assert_str(j, "QueueUrl", QUEUE);
    assert_entries(j, ids, handles, vis, 2);
    assert_int_equal(members(j), 2);
    cJSON_Delete(j);
    free(s);
}

static void test_batch_request_ten(void **state)
{
    struct sqs_entry en[10];
    char handles[10][8];
    const char *ids[10], *hp[10];
    char idbuf[10][4];
    struct lerr e = { 0 };
    size_t len = 0;
    char *s;
    cJSON *j;

    memset(en, 0, sizeof en);
    for (int i = 0; i < 10; i++) {
        snprintf(handles[i], sizeof handles[i], "h%d", i);
        snprintf(idbuf[i], sizeof idbuf[i], "m%d", i);
        en[i].receipt_handle = hp[i] = handles[i];
        ids[i] = idbuf[i];
    }
    s = sqs_batch_request(SQS_OP_DELETE, QUEUE, en, 10, &len, &e);
    j = body_json(s, len);
    assert_entries(j, ids, hp, NULL, 10);
    cJSON_Delete(j);
    free(s);
}

static void test_batch_request_invalid(void **state)
{
    static const struct {
        enum sqs_batch_op op;
        const char *queue;
        size_t n;
        const char *handle1;
        int vis1;
        enum sqs_entry_status status;
        const char *why;
    } cases[] = {
        { SQS_OP_DELETE, QUEUE, 0, "h", 0, 0, "SQS DeleteMessageBatch: 0 entries (1 to 10 allowed)" },
        { SQS_OP_DELETE, QUEUE, 11, "h", 0, 0, "SQS DeleteMessageBatch: 11 entries (1 to 10 allowed)" },
        { SQS_OP_DELETE, NULL, 2, "h", 0, 0, "SQS DeleteMessageBatch: no queue URL" },
        { SQS_OP_DELETE, "https://q/\xff", 2, "h", 0, 0, "the queue URL is not UTF-8" },
        { SQS_OP_DELETE, QUEUE, 2, NULL, 0, 0, "entry 1 has no receipt handle" },
        { SQS_OP_DELETE, QUEUE, 2, "", 0, 0, "entry 1 has no receipt handle" },
        { SQS_OP_CHANGE_VISIBILITY, QUEUE, 2, "h", -1, 0,
          "SQS ChangeMessageVisibilityBatch: entry 1: VisibilityTimeout must be 0 to 43200, got -1" },
        { SQS_OP_CHANGE_VISIBILITY, QUEUE, 2, "h", 43201, 0, "got 43201" },
        { SQS_OP_DELETE, QUEUE, 2, "h", 0, SQS_ENTRY_OK, "no pending entry to send" },
        /* SendMessage carries one message: a second would make a second request body */
        { SQS_OP_SEND, QUEUE, 2, "h", 0, 0, "SQS SendMessage: 2 entries (1 to 1 allowed)" },
    };

    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        struct sqs_entry en[11];
        struct lerr e = { 0 };
        size_t len = 0;

        memset(en, 0, sizeof en);
        for (int k = 0; k < 11; k++) {
            en[k].receipt_handle = "h";
            en[k].status = cases[i].status;
        }
        en[1].receipt_handle = cases[i].handle1;
        en[1].visibility_timeout = cases[i].vis1;
        assert_null(sqs_batch_request(cases[i].op, cases[i].queue, en, cases[i].n, &len, &e));
        assert_int_equal(e.kind, LERR_INVALID);
        assert_contains(e.msg, cases[i].why);
    }
}

/* ======================================================================================
 * ReceiveMessage answers
 * ==================================================================================== */

/* Bodies as they appear in the answer (JSON string contents) and the exact bytes they
 * stand for; the bytes and MD5s were computed by Python's json and hashlib, decoding
 * lone surrogates with "surrogatepass". */
static const struct body_case {
    const char *name, *json, *bytes;
    size_t len;
    const char *md5;
    int lone;
} bodies[] = {
    { "plain", "{\\\"event\\\":\\\"hello\\\"}", "{\"event\":\"hello\"}", 17, "690987f4983a74691f434987cf81ca6a", 0 },
    { "escapes", "a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t", "a\"b\\c/d\010\014\012\015\011", 12, "ffa72f73c2c4b5191e4b86014dacec72", 0 },
    { "nul", "x\\u0000y\\u0000", "x\000y\000", 4, "15b4db07bbf402f68df85e800413ebc7", 0 },
    { "bmp", "caf\\u00e9 \\u20AC", "caf\303\251 \342\202\254", 9, "dbc9e678d340fe742ac6184cbd21a9ff", 0 },
    { "pair", "\\ud83d\\ude00!", "\360\237\230\200!", 5, "4545f9008834dc3fac1a61491364dad1", 0 },
    { "raw_utf8", "\360\237\230\200 \303\251", "\360\237\230\200 \303\251", 7, "37d3d6c8d1b1cd94d674ebdc7f4287a2", 0 },
    { "huge_numbers", "{\\\"n\\\":123456789012345678901234567890.123456789e-400,\\\"m\\\":-0.0E+1}", "{\"n\":123456789012345678901234567890.123456789e-400,\"m\":-0.0E+1}", 63, "c8e7eb3f74af742e0b50ddd13212f437", 0 },
    { "lone_high", "a\\ud800b", "a\355\240\200b", 5, "aaa30609243ce2e41d28b6d40e8775d5", 1 },
    { "lone_low", "\\udc00", "\355\260\200", 3, "5d0033f43ae67e27b0359cca90c6340a", 1 },
    { "high_then_ascii", "\\ud800\\u0041", "\355\240\200A", 4, "d1a604f7f6e75bf9704abc823916cfa0", 1 },
    { "high_at_end", "x\\ud83d", "x\355\240\275", 4, "916146ff9085775cefdaf3575c65def0", 1 },
    { "empty", "", "", 0, "d41d8cd98f00b204e9800998ecf8427e", 0 },
};

static void test_receive_bodies(void **state)
{
    for (size_t i = 0; i < N_ELEMS(bodies); i++) {
        const struct body_case *c = &bodies[i];
        struct sqs_batch b;
        struct lerr e = { 0 };
        char json[512];
        const struct sqs_message *m;

        snprintf(json, sizeof json,
                 "{\"Messages\":[{\"MessageId\":\"id-%s\",\"ReceiptHandle\":\"rh\","
                 "\"MD5OfBody\":\"%s\",\"Body\":\"%s\"}]}", c->name, c->md5, c->json);
        if (sqs_parse_receive(json, strlen(json), &b, &e) != 0)
            fail_msg("%s: %s", c->name, e.msg);
        assert_int_equal(b.count, 1);
        m = &b.messages[0];
        assert_int_equal(m->body_len, c->len);
        assert_memory_equal(m->body, c->bytes, c->len);
        assert_int_equal(m->body[m->body_len], '\0');
        assert_string_equal(m->md5_of_body, c->md5);
        /* The MD5 matches the exact bytes: no MD5 flag, whatever the body holds. */
        assert_int_equal(m->flags, c->lone ? SQS_MSG_BAD_UNICODE : 0u);
        if (c->lone)
            assert_contains(m->problem, "unpaired UTF-16 surrogate");
        else
            assert_string_equal(m->problem, "");
        sqs_batch_free(&b);
        assert_null(b.mem);
        assert_int_equal(b.count, 0);
    }
}

struct msg_want {
    const char *id, *handle, *body;
    const char *image, *size, *command;
    unsigned long count;
    unsigned flags;
    const char *problem;  /* NULL: must be "" */
    const char *problem2; /* a second substring, or NULL */
};

struct recv_case {
    const char *name, *json;
    size_t count;
    struct msg_want m[2];
};

#define MD5_HELLO "5d41402abc4b2a76b9719d911017c592"
#define MSG_HEAD(id) "{\"MessageId\":\"" id "\",\"ReceiptHandle\":\"rh-" id "\",\"MD5OfBody\":\"" \
                     MD5_HELLO "\",\"Body\":\"hello\""
#define ATTRS(x) ",\"MessageAttributes\":{" x "}"
#define STR(name, v) "\"" name "\":{\"DataType\":\"String\",\"StringValue\":\"" v "\"}"

static const struct recv_case recv_cases[] = {
    { "empty object", "{}", 0, { { 0 } } },
    { "empty list", "{\"Messages\":[]}", 0, { { 0 } } },
    { "null list", "{\"Messages\":null}", 0, { { 0 } } },
    { "whitespace and unknown members",
      " \n{ \"ResponseMetadata\" : {\"RequestId\":\"r\", \"n\":[1,-2.5e3,0,0.5E-1,true,false,null,{},[[]]]} ,"
      "\t\"Messages\" : [ ] }\r\n", 0, { { 0 } } },
    { "everything",
      "{\"Messages\":[{\"MessageId\":\"id-1\",\"ReceiptHandle\":\"AQEB+x/y=\",\"MD5OfBody\":\""
      MD5_HELLO "\",\"Body\":\"hello\",\"Attributes\":{\"SenderId\":\"AIDA\",\"ApproximateReceiveCount\":\"3\","
      "\"SentTimestamp\":\"1700000000000\"},\"MD5OfMessageAttributes\":\"ignored\","
      "\"MessageAttributes\":{" STR("image", "nginx:1.25") ","
      "\"size\":{\"StringValue\":\"shared-cpu-1x\",\"StringListValues\":[],\"BinaryListValues\":[],\"DataType\":\"String\"},"
      STR("command", "[\\\"echo\\\",\\\"hi\\\"]") ","
      "\"other\":{\"DataType\":\"Number\",\"StringValue\":\"1\"}}}]}",
      1, { { "id-1", "AQEB+x/y=", "hello", "nginx:1.25", "shared-cpu-1x", "[\"echo\",\"hi\"]", 3, 0, NULL, NULL } } },
    { "no attributes", "{\"Messages\":[" MSG_HEAD("a") "}]}",
      1, { { "a", "rh-a", "hello", NULL, NULL, NULL, 0, 0, NULL, NULL } } },
    { "null attributes", "{\"Messages\":[" MSG_HEAD("a") ",\"Attributes\":null,\"MessageAttributes\":null}]}",
      1, { { "a", "rh-a", "hello", NULL, NULL, NULL, 0, 0, NULL, NULL } } },
    { "Number DataType",
      "{\"Messages\":[" MSG_HEAD("a") ATTRS(STR("image", "img") ",\"size\":{\"DataType\":\"Number\",\"StringValue\":\"2\"}") "}]}",
      1, { { "a", "rh-a", "hello", "img", NULL, NULL, 0, SQS_MSG_BAD_ATTRIBUTE,
             "message attribute size has DataType Number; only String is accepted", NULL } } },
    { "BinaryValue",
      "{\"Messages\":[" MSG_HEAD("a") ATTRS("\"image\":{\"DataType\":\"Binary\",\"BinaryValue\":\"aGk=\"}") "}]}",
      1, { { "a", "rh-a", "hello", NULL, NULL, NULL, 0, SQS_MSG_BAD_ATTRIBUTE,
             "message attribute image has DataType Binary; only String is accepted", NULL } } },
    { "no StringValue",
      "{\"Messages\":[" MSG_HEAD("a") ATTRS("\"command\":{\"DataType\":\"String\"}") "}]}",
      1, { { "a", "rh-a", "hello", NULL, NULL, NULL, 0, SQS_MSG_BAD_ATTRIBUTE,
             "message attribute command has no StringValue", NULL } } },
    { "null StringValue",
      "{\"Messages\":[" MSG_HEAD("a") ATTRS("\"command\":{\"DataType\":\"String\",\"StringValue\":null}") "}]}",
      1, { { "a", "rh-a", "hello", NULL, NULL, NULL, 0, SQS_MSG_BAD_ATTRIBUTE,
             "message attribute command has no StringValue", NULL } } },
    { "no DataType",
      "{\"Messages\":[" MSG_HEAD("a") ATTRS("\"image\":{\"StringValue\":\"img\"}") "}]}",
      1, { { "a", "rh-a", "hello", NULL, NULL, NULL, 0, SQS_MSG_BAD_ATTRIBUTE,
             "message attribute image has no DataType", NULL } } },
    { "attribute null",
      "{\"Messages\":[" MSG_HEAD("a") ATTRS("\"image\":null") "}]}",
      1, { { "a", "rh-a", "hello", NULL, NULL, NULL, 0, SQS_MSG_BAD_ATTRIBUTE,
             "message attribute image has no DataType", NULL } } },
    { "null DataType, members after it still read",
      "{\"Messages\":[" MSG_HEAD("a") ATTRS("\"image\":{\"DataType\":null,\"StringValue\":\"img\",\"x\":[1]},"
                                           STR("size", "s")) "}]}",
      1, { { "a", "rh-a", "hello", NULL, "s", NULL, 0, SQS_MSG_BAD_ATTRIBUTE,
             "message attribute image has no DataType", NULL } } },
    { "DataType holding a NUL",
      "{\"Messages\":[" MSG_HEAD("a") ATTRS("\"image\":{\"DataType\":\"String\\u0000\",\"StringValue\":\"img\"}") "}]}",
      1, { { "a", "rh-a", "hello", NULL, NULL, NULL, 0, SQS_MSG_BAD_ATTRIBUTE,
             "message attribute image has DataType (a type holding NUL); only String", NULL } } },
    { "long custom String type",
      "{\"Messages\":[" MSG_HEAD("a") ATTRS("\"image\":{\"DataType\":\"String.abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz\",\"StringValue\":\"img\"}") "}]}",
      1, { { "a", "rh-a", "hello", "img", NULL, NULL, 0, 0, NULL, NULL } } },
    { "long other type, shortened in the problem",
      "{\"Messages\":[" MSG_HEAD("a") ATTRS("\"image\":{\"DataType\":\"Binary.abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz\",\"BinaryValue\":\"aGk=\"}") "}]}",
      1, { { "a", "rh-a", "hello", NULL, NULL, NULL, 0, SQS_MSG_BAD_ATTRIBUTE,
             "message attribute image has DataType Binary.abcdefghijklmnopqrstuvwxyzabcdefghijk...; only", NULL } } },
    { "custom String type",
      "{\"Messages\":[" MSG_HEAD("a") ATTRS("\"image\":{\"DataType\":\"String.ref\",\"StringValue\":\"img\"}") "}]}",
      1, { { "a", "rh-a", "hello", "img", NULL, NULL, 0, 0, NULL, NULL } } },
    { "type that only starts like String",
      "{\"Messages\":[" MSG_HEAD("a") ATTRS("\"image\":{\"DataType\":\"Strings\",\"StringValue\":\"img\"}") "}]}",
      1, { { "a", "rh-a", "hello", NULL, NULL, NULL, 0, SQS_MSG_BAD_ATTRIBUTE,
             "image has DataType Strings;", NULL } } },
    { "NUL in a value",
      "{\"Messages\":[" MSG_HEAD("a") ATTRS(STR("image", "img\\u0000:latest")) "}]}",
      1, { { "a", "rh-a", "hello", NULL, NULL, NULL, 0, SQS_MSG_BAD_ATTRIBUTE,
             "message attribute image contains a NUL character", NULL } } },
    { "escaped value",
      "{\"Messages\":[" MSG_HEAD("a") ATTRS(STR("command", "[\\\"caf\\u00e9\\\"]")) "}]}",
      1, { { "a", "rh-a", "hello", NULL, NULL, "[\"caf\303\251\"]", 0, 0, NULL, NULL } } },
    { "two problems",
      "{\"Messages\":[" MSG_HEAD("a") ATTRS("\"size\":{\"DataType\":\"Number\",\"StringValue\":\"2\"},"
                                           "\"image\":{\"DataType\":\"String\"}") "}]}",
      1, { { "a", "rh-a", "hello", NULL, NULL, NULL, 0, SQS_MSG_BAD_ATTRIBUTE,
             "message attribute size has DataType Number; only String is accepted; message "
             "attribute image has no StringValue", NULL } } },
    { "attribute names are exact",
      "{\"Messages\":[" MSG_HEAD("a") ATTRS(STR("Image", "x") "," STR("image ", "y")) "}]}",
      1, { { "a", "rh-a", "hello", NULL, NULL, NULL, 0, 0, NULL, NULL } } },
    { "receive count not a number",
      "{\"Messages\":[" MSG_HEAD("a") ",\"Attributes\":{\"ApproximateReceiveCount\":\"3x\"}}]}",
      1, { { "a", "rh-a", "hello", NULL, NULL, NULL, 0, 0, NULL, NULL } } },
    { "receive count as a JSON number",
      "{\"Messages\":[" MSG_HEAD("a") ",\"Attributes\":{\"ApproximateReceiveCount\":7}}]}",
      1, { { "a", "rh-a", "hello", NULL, NULL, NULL, 0, 0, NULL, NULL } } },
    { "MD5 mismatch marks only that message",
      "{\"Messages\":[{\"MessageId\":\"bad\",\"ReceiptHandle\":\"r1\",\"MD5OfBody\":\"" MD5_HELLO
      "\",\"Body\":\"hellO\"}," MSG_HEAD("good") "}]}",
      2, { { "bad", "r1", "hellO", NULL, NULL, NULL, 0, SQS_MSG_MD5_MISMATCH,
             "MD5OfBody " MD5_HELLO " does not match the body received (MD5 ", NULL },
           { "good", "rh-good", "hello", NULL, NULL, NULL, 0, 0, NULL, NULL } } },
    { "MD5 missing",
      "{\"Messages\":[{\"MessageId\":\"a\",\"ReceiptHandle\":\"r\",\"Body\":\"hello\"}]}",
      1, { { "a", "r", "hello", NULL, NULL, NULL, 0, SQS_MSG_MD5_MISMATCH,
             "message has no MD5OfBody", NULL } } },
    { "MD5 in upper case",
      "{\"Messages\":[{\"MessageId\":\"a\",\"ReceiptHandle\":\"r\",\"MD5OfBody\":"
      "\"5D41402ABC4B2A76B9719D911017C592\",\"Body\":\"hello\"}]}",
      1, { { "a", "r", "hello", NULL, NULL, NULL, 0, 0, NULL, NULL } } },
    { "MD5 and attribute problems together",
      "{\"Messages\":[{\"MessageId\":\"a\",\"ReceiptHandle\":\"r\",\"MD5OfBody\":\"00\",\"Body\":\"hello\""
      ATTRS("\"size\":{\"DataType\":\"Number\",\"StringValue\":\"2\"}") "}]}",
      1, { { "a", "r", "hello", NULL, NULL, NULL, 0, SQS_MSG_MD5_MISMATCH | SQS_MSG_BAD_ATTRIBUTE,
             "size has DataType Number", "; MD5OfBody 00 does not match" } } },
    { "escaped member names",
      "{\"M\\u0065ssages\":[{\"MessageId\":\"a\",\"Receipt\\u0048andle\":\"r\",\"MD5OfBody\":\""
      MD5_HELLO "\",\"B\\u006fdy\":\"hello\"}]}",
      1, { { "a", "r", "hello", NULL, NULL, NULL, 0, 0, NULL, NULL } } },
    { "member order does not matter",
      "{\"Messages\":[{\"Body\":\"hello\",\"MessageAttributes\":{" STR("image", "i") "},\"MD5OfBody\":\""
      MD5_HELLO "\",\"Attributes\":{\"ApproximateReceiveCount\":\"12\"},\"ReceiptHandle\":\"r\",\"MessageId\":\"a\"}]}",
      1, { { "a", "r", "hello", "i", NULL, NULL, 12, 0, NULL, NULL } } },
};

static void check_message(const char *name, const struct sqs_message *m, const struct msg_want *w)
{
    if (strcmp(m->message_id, w->id) != 0)
        fail_msg("%s: message id %s, want %s", name, m->message_id, w->id);
    assert_string_equal(m->receipt_handle, w->handle);
    assert_int_equal(m->body_len, strlen(w->body));
    assert_memory_equal(m->body, w->body, m->body_len + 1);
    if (w->image)
        assert_string_equal(m->image, w->image);
    else
        assert_null(m->image);
    if (w->size)
        assert_string_equal(m->size, w->size);
    else
        assert_null(m->size);
    if (w->command)
        assert_string_equal(m->command, w->command);
    else
        assert_null(m->command);
    assert_int_equal(m->receive_count, w->count);
    if (m->flags != w->flags)
        fail_msg("%s: flags %#x, want %#x (%s)", name, m->flags, w->flags, m->problem);
    if (w->problem)
        assert_contains(m->problem, w->problem);
    else
        assert_string_equal(m->problem, "");
    if (w->problem2)
        assert_contains(m->problem, w->problem2);
}

static void test_receive_answers(void **state)
{
    for (size_t i = 0; i < N_ELEMS(recv_cases); i++) {
        const struct recv_case *c = &recv_cases[i];
        struct sqs_batch b;
        struct lerr e = { 0 };

        if (sqs_parse_receive(c->json, strlen(c->json), &b, &e) != 0)
            fail_msg("%s: %s", c->name, e.msg);
        if (b.count != c->count)
            fail_msg("%s: %zu messages, want %zu", c->name, b.count, c->count);
        for (size_t k = 0; k < c->count; k++)
            check_message(c->name, &b.messages[k], &c->m[k]);
        sqs_batch_free(&b);
        sqs_batch_free(&b);  /* twice is harmless */
    }
}

/* FIFO queues: each message's MessageGroupId, NULL when absent. */
static void test_receive_group_id(void **state)
{
    static const char json[] =
        "{\"Messages\":[" MSG_HEAD("a") ",\"Attributes\":{\"MessageGroupId\":\"tenant-7\","
        "\"ApproximateReceiveCount\":\"2\"}}," MSG_HEAD("b") ",\"Attributes\":{\"MessageGroupId\":"
        "null}}," MSG_HEAD("c") "}]}";
    struct sqs_batch b;
    struct lerr e = { 0 };

    assert_int_equal(sqs_parse_receive(json, strlen(json), &b, &e), 0);
    assert_int_equal(b.count, 3);
    assert_string_equal(b.messages[0].message_group_id, "tenant-7");
    assert_int_equal(b.messages[0].receive_count, 2);
    assert_null(b.messages[1].message_group_id);
    assert_null(b.messages[2].message_group_id);
    sqs_batch_free(&b);
}

static char *answer_of(int n);

/* Each message's entry of the context file, exactly. */
static const struct {
    const char *name, *json, *context;
    unsigned flags;
} context_cases[] = {
    { "standard queue, no attributes",
      "{\"Messages\":[" MSG_HEAD("a") ",\"Attributes\":{\"SentTimestamp\":\"1733360000000\","
      "\"ApproximateReceiveCount\":\"2\",\"ApproximateFirstReceiveTimestamp\":\"1733360000123\","
      "\"SenderId\":\"AIDA\"}}]}",
      "{\"messageId\":\"a\",\"receiveCount\":2,\"sentTimestamp\":1733360000000,"
      "\"firstReceiveTimestamp\":1733360000123,\"messageAttributes\":{}}", 0 },
    { "FIFO queue, and attributes of every type but image, size and command",
      "{\"Messages\":[" MSG_HEAD("f") ",\"Attributes\":{\"MessageGroupId\":\"g1\","
      "\"MessageDeduplicationId\":\"d\\\"1\",\"SequenceNumber\":\"18849496460467696128\","
      "\"ApproximateReceiveCount\":\"1\",\"SentTimestamp\":\"1\",\"ApproximateFirstReceiveTimestamp\":\"0\"}"
      ATTRS(STR("image", "img") "," STR("tenant", "ac\\u00e9\\\"me\\n") ","
            "\"n\":{\"DataType\":\"Number.float\",\"StringValue\":\"4.2e1\"},"
            "\"blob\":{\"DataType\":\"Binary\",\"BinaryValue\":\"AAEC\",\"StringListValues\":[]},"
            STR("size", "performance-1x") ",\"caf\\u00e9\\\\\":{\"DataType\":\"String\",\"StringValue\":\"\"}")
      "}]}",
      "{\"messageId\":\"f\",\"receiveCount\":1,\"sentTimestamp\":1,\"firstReceiveTimestamp\":0,"
      "\"messageGroupId\":\"g1\",\"deduplicationId\":\"d\\\"1\",\"sequenceNumber\":\"18849496460467696128\","
      "\"messageAttributes\":{\"tenant\":{\"type\":\"String\",\"value\":\"ac\xc3\xa9\\\"me\\n\"},"
      "\"n\":{\"type\":\"Number.float\",\"value\":\"4.2e1\"},"
      "\"blob\":{\"type\":\"Binary\",\"value\":\"AAEC\"},"
      "\"caf\xc3\xa9\\\\\":{\"type\":\"String\",\"value\":\"\"}}}", 0 },
    { "numbers that are not digits are left out; an id is escaped",
      "{\"Messages\":[{\"MessageId\":\"a\\\"b\\\\\",\"ReceiptHandle\":\"r\",\"MD5OfBody\":\"" MD5_HELLO
      "\",\"Body\":\"hello\",\"Attributes\":{\"ApproximateReceiveCount\":\"3x\","
      "\"SentTimestamp\":\"-1\",\"ApproximateFirstReceiveTimestamp\":12,\"MessageGroupId\":null}}]}",
      "{\"messageId\":\"a\\\"b\\\\\",\"messageAttributes\":{}}", 0 },
    { "an attribute value that is not Unicode refuses the message",
      "{\"Messages\":[" MSG_HEAD("a") ATTRS(STR("ok", "1") "," STR("t", "x\\ud800")) "}]}",
      "{\"messageId\":\"a\",\"messageAttributes\":{\"ok\":{\"type\":\"String\",\"value\":\"1\"}}}",
      SQS_MSG_BAD_ATTRIBUTE },
    { "an attribute holding NUL refuses the message",
      "{\"Messages\":[" MSG_HEAD("a") ATTRS(STR("t", "x\\u0000")) "}]}",
      "{\"messageId\":\"a\",\"messageAttributes\":{}}", SQS_MSG_BAD_ATTRIBUTE },
};

static void test_receive_context(void **state)
{
    for (size_t i = 0; i < N_ELEMS(context_cases); i++) {
        struct sqs_batch b;
        struct lerr e = { 0 };

        if (sqs_parse_receive(context_cases[i].json, strlen(context_cases[i].json), &b, &e) != 0)
            fail_msg("%s: %s", context_cases[i].name, e.msg);
        assert_int_equal(b.count, 1);
        if (b.messages[0].context_len != strlen(context_cases[i].context) ||
            memcmp(b.messages[0].context, context_cases[i].context, b.messages[0].context_len))
            fail_msg("%s: context\n%.*s\nwant\n%s", context_cases[i].name,
                     (int)b.messages[0].context_len, b.messages[0].context,
                     context_cases[i].context);
        if (b.messages[0].flags != context_cases[i].flags)
            fail_msg("%s: flags %#x (%s)", context_cases[i].name, b.messages[0].flags,
                     b.messages[0].problem);
        assert_int_equal(json_items(b.messages[0].context, b.messages[0].context_len, NULL,
                                    NULL, NULL, NULL), 0);
        sqs_batch_free(&b);
    }
}

/* Every message of a batch gets its own entry, each pointing at the right one. */
static void test_receive_context_batch(void **state)
{
    char *json = answer_of(10), want[128];
    struct sqs_batch b;
    struct lerr e = { 0 };

    assert_int_equal(sqs_parse_receive(json, strlen(json), &b, &e), 0);
    assert_int_equal(b.count, 10);
    for (int i = 0; i < 10; i++) {
        snprintf(want, sizeof want, "{\"messageId\":\"id-%d\",\"receiveCount\":%d,"
                 "\"messageAttributes\":{}}", i, i + 1);
        assert_int_equal(b.messages[i].context_len, strlen(want));
        assert_memory_equal(b.messages[i].context, want, strlen(want));
    }
    sqs_batch_free(&b);
    free(json);
}

static char *answer_of(int n)
{
    size_t cap = 256 + (size_t)n * 256, len;
    char *s = malloc(cap);

    assert_non_null(s);
    len = (size_t)snprintf(s, cap, "{\"Messages\":[");
    for (int i = 0; i < n; i++) {
        char body[32], md5[33];
        snprintf(body, sizeof body, "{\"n\":%d}", i);
        md5_hex(body, strlen(body), md5);
        len += (size_t)snprintf(s + len, cap - len,
                                "%s{\"MessageId\":\"id-%d\",\"ReceiptHandle\":\"rh-%d\",\"MD5OfBody\":\"%s\","
                                "\"Body\":\"{\\\"n\\\":%d}\",\"Attributes\":{\"ApproximateReceiveCount\":\"%d\"},"
                                "\"MessageAttributes\":{\"image\":{\"DataType\":\"String\",\"StringValue\":\"img%d\"}}}",
                                i ? "," : "", i, i, md5, i, i + 1, i);
    }
    snprintf(s + len, cap - len, "]}");
    return s;
}

static void test_receive_ten(void **state)
{
    char *json = answer_of(10);
    struct sqs_batch b;
    struct lerr e = { 0 };

    assert_int_equal(sqs_parse_receive(json, strlen(json), &b, &e), 0);
    assert_int_equal(b.count, 10);
    for (int i = 0; i < 10; i++) {
        char want[32];
        const struct sqs_message *m = &b.messages[i];
        snprintf(want, sizeof want, "id-%d", i);
        assert_string_equal(m->message_id, want);
        snprintf(want, sizeof want, "rh-%d", i);
        assert_string_equal(m->receipt_handle, want);
        snprintf(want, sizeof want, "{\"n\":%d}", i);
        assert_int_equal(m->body_len, strlen(want));
        assert_memory_equal(m->body, want, m->body_len);
        snprintf(want, sizeof want, "img%d", i);
        assert_string_equal(m->image, want);
        assert_int_equal(m->receive_count, (unsigned long)i + 1);
        assert_int_equal(m->flags, 0);
    }
    sqs_batch_free(&b);
    free(json);

    json = answer_of(11);
    assert_int_equal(sqs_parse_receive(json, strlen(json), &b, &e), -1);
    assert_int_equal(e.kind, LERR_MALFORMED);
    assert_contains(e.msg, "more than 10 messages");
    assert_null(b.mem);
    free(json);
}

#define GOOD_MSG "{\"MessageId\":\"id-1\",\"ReceiptHandle\":\"r\",\"MD5OfBody\":\"" MD5_HELLO "\",\"Body\":\"hello\"}"

static const struct {
    const char *json, *why;
} recv_bad[] = {
    { "", "SQS ReceiveMessage answer is not a JSON object (it is empty)" },
    { " \r\n", "(it is empty)" },
    { "<?xml version=\"1.0\"?>\n<ReceiveMessageResponse>",
      "SQS ReceiveMessage answer is not a JSON object (it starts with \"<?xml version=\"1.0\"?> "
      "<ReceiveMessageRe\")" },
    { "[]", "is not a JSON object (it starts with \"[]\")" },
    { "null", "is not a JSON object" },
    { "{\"Messages\":{}}", "SQS ReceiveMessage answer: Messages is not an array" },
    { "{\"Messages\":\"x\"}", "Messages is not an array" },
    { "{\"Messages\":[1]}", "SQS ReceiveMessage answer: Messages[0] is not an object" },
    { "{\"Messages\":[" GOOD_MSG ",[]]}", "Messages[1] is not an object" },
    { "{\"Messages\":[{\"MessageId\":5,\"ReceiptHandle\":\"r\",\"Body\":\"b\"}]}",
      "SQS ReceiveMessage answer: Messages[0].MessageId is not a string" },
    { "{\"Messages\":[{\"ReceiptHandle\":\"r\",\"Body\":\"b\"}]}",
      "SQS ReceiveMessage answer: Messages[0] has no MessageId" },
    { "{\"Messages\":[{\"MessageId\":\"id-1\",\"Body\":\"b\"}]}",
      "SQS ReceiveMessage answer: message id-1 has no ReceiptHandle" },
    { "{\"Messages\":[{\"MessageId\":\"id-1\",\"ReceiptHandle\":\"\",\"Body\":\"b\"}]}",
      "message id-1 has no ReceiptHandle" },
    { "{\"Messages\":[{\"MessageId\":\"id-1\",\"ReceiptHandle\":null,\"Body\":\"b\"}]}",
      "message id-1 has no ReceiptHandle" },
    { "{\"Messages\":[" GOOD_MSG ",{\"MessageId\":\"id-2\",\"Body\":\"b\"}]}",
      "message id-2 has no ReceiptHandle" },
    { "{\"Messages\":[{\"MessageId\":\"id-1\",\"ReceiptHandle\":\"r\"}]}",
      "SQS ReceiveMessage answer: message id-1 has no Body" },
    { "{\"Messages\":[{\"MessageId\":\"id-1\",\"ReceiptHandle\":\"r\",\"Body\\u0000\":\"b\"}]}",
      "message id-1 has no Body" },
    /* names read in place: one longer than any wanted name is none of them, whatever it
     * starts with; a name is checked like any string */
    { "{\"Messages\":[{\"MessageId\":\"id-1\",\"ReceiptHandle\":\"r\",\"Body"
      "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\":\"b\"}]}",
      "message id-1 has no Body" },
    { "{\"Messages\":[{\"MessageId\":\"id-1\",\"Body\nx\":\"b\"}]}",
      "control character in string at byte 38" },
    { "{\"Messages\":[{\"MessageId\":\"id-1\",\"Body", "unexpected end at byte 38" },
    { "{\"Messages\":[{\"MessageId\":\"id-1\",\"Body\":5}]}",
      "Messages[0].Body is not a string" },
    { "{\"Messages\":[{\"MessageId\":\"id-1\",\"ReceiptHandle\":\"r\",\"Body\":5}]}",
      "Messages[0].Body is not a string" },
    { "{\"Messages\":[{\"MessageId\":\"id-1\",\"ReceiptHandle\":true,\"Body\":\"b\"}]}",
      "Messages[0].ReceiptHandle is not a string" },
    { "{\"Messages\":[{\"MessageId\":\"a\",\"MessageAttributes\":[]}]}",
      "Messages[0].MessageAttributes is not an object" },
    { "{\"Messages\":[{\"MessageId\":\"a\",\"Attributes\":\"x\"}]}",
      "Messages[0].Attributes is not an object" },
    { "{\"Messages\":[{\"MessageAttributes\":{\"image\":\"x\"}}]}",
      "Messages[0].MessageAttributes value is not an object" },
    { "{\"Messages\":[{\"MessageAttributes\":{\"image\":{\"DataType\":5}}}]}",
      "Messages[0].MessageAttributes DataType is not a string" },
    { "{\"Messages\":[{\"MessageAttributes\":{\"image\":{\"StringValue\":[]}}}]}",
      "Messages[0].MessageAttributes StringValue is not a string" },
    { "{\"Messages\":[", "SQS ReceiveMessage answer is not valid JSON: unexpected end at byte 13" },
    { "{\"Messages\":[{\"MessageId\":\"a\"", "unexpected end at byte 29" },
    { "{\"Messages\":[{\"MessageId\":\"a", "unexpected end" },
    { "{\"Messages\":[{\"MessageId\":\"a\\", "unterminated string" },
    { "{\"Messages\"", "unexpected end" },
    { "{} x", "SQS ReceiveMessage answer is not valid JSON: unexpected data after the object at byte 3" },
    { "{}{}", "unexpected data after the object" },
    { "{\"Messages\":[{\"Body\":\"a\nb\"}]}", "control character in string at byte 23" },
    { "{\"Messages\":[{\"Body\":\"a\tb\"}]}", "control character in string" },
    { "{\"Messages\":[{\"Body\":\"\\x\"}]}", "bad escape in string" },
    { "{\"Messages\":[{\"Body\":\"\\'\"}]}", "bad escape in string" },
    { "{\"Messages\":[{\"Body\":\"\\u12G4\"}]}", "bad \\u escape" },
    { "{\"Messages\":[{\"Body\":\"\\u12\"}]}", "bad \\u escape" },
    { "{\"x\":-}", "expected a digit" },
    { "{\"x\":1.}", "expected a digit after the decimal point" },
    { "{\"x\":1e}", "expected a digit in the exponent" },
    { "{\"x\":1e+}", "expected a digit in the exponent" },
    { "{\"x\":.5}", "unexpected character" },
    { "{\"x\":+1}", "unexpected character" },
    { "{\"x\":01}", "leading zero in number" },
    { "{\"x\":tru}", "unexpected character" },
    { "{\"x\":nul}", "unexpected character" },
    { "{\"x\":True}", "unexpected character" },
    { "{\"x\" 1}", "expected ':'" },
    { "{1:2}", "expected a string key" },
    { "{'x':2}", "expected a string key" },
    { "{\"x\":1,}", "expected a string key" },
    { "{\"x\":[1,]}", "unexpected character" },
    { "{\"x\":[1 2]}", "expected ',' or ']'" },
    { "{\"x\":1 \"y\":2}", "expected ',' or '}'" },
    { "{\"Messages\":[" GOOD_MSG " " GOOD_MSG "]}", "expected ',' or ']'" },
};

static void test_receive_malformed(void **state)
{
    for (size_t i = 0; i < N_ELEMS(recv_bad); i++) {
        struct sqs_batch b;
        struct lerr e = { 0 };

        if (sqs_parse_receive(recv_bad[i].json, strlen(recv_bad[i].json), &b, &e) != -1)
            fail_msg("accepted: %s", recv_bad[i].json);
        assert_int_equal(e.kind, LERR_MALFORMED);
        assert_contains(e.msg, recv_bad[i].why);
        assert_null(b.mem);
        assert_null(b.messages);
        assert_int_equal(b.count, 0);
    }
}

/* The parser reads exactly len bytes: a valid prefix of a longer buffer is an answer, and
 * nothing past len is looked at. */
static void test_receive_length_bound(void **state)
{
    const char *s = "{\"Messages\":[]}garbage";
    struct sqs_batch b;
    struct lerr e = { 0 };

    assert_int_equal(sqs_parse_receive(s, 15, &b, &e), 0);
    assert_int_equal(b.count, 0);
    sqs_batch_free(&b);
    assert_int_equal(sqs_parse_receive(s, 14, &b, &e), -1);
    assert_contains(e.msg, "unexpected end");
}

static void test_receive_nesting(void **state)
{
    /* Unknown members are skipped whatever they hold, up to 64 levels deep. */
    for (int depth = 63; depth <= 66; depth++) {
        size_t cap = (size_t)depth * 8 + 32, n = 0;
        char *s = malloc(cap);
        struct sqs_batch b;
        struct lerr e = { 0 };
        int r;

        assert_non_null(s);
        n += (size_t)snprintf(s + n, cap - n, "{\"x\":");
        for (int i = 0; i < depth; i++)
            n += (size_t)snprintf(s + n, cap - n, "[");
        for (int i = 0; i < depth; i++)
            n += (size_t)snprintf(s + n, cap - n, "]");
        n += (size_t)snprintf(s + n, cap - n, ",\"Messages\":[]}");
        r = sqs_parse_receive(s, n, &b, &e);
        if (depth <= 64) {
            assert_int_equal(r, 0);
            sqs_batch_free(&b);
        } else {
            assert_int_equal(r, -1);
            assert_contains(e.msg, "nested too deeply");
        }
        free(s);
    }
}

/* ======================================================================================
 * Error answers
 * ==================================================================================== */

static const struct err_case {
    const char *name;
    int status;
    const char *etype, *qerr, *body;
    const char *code, *message;
    int retryable;
    const char *text;  /* the error text sqs_parse_error writes for ReceiveMessage */
} err_cases[] = {
    { "type with prefix", 400, NULL, NULL,
      "{\"__type\":\"com.amazon.coral.service#SignatureDoesNotMatch\",\"message\":\"The request "
      "signature we calculated does not match the signature you provided.\"}",
      "SignatureDoesNotMatch",
      "The request signature we calculated does not match the signature you provided.", 0,
      "SQS ReceiveMessage failed: SignatureDoesNotMatch: The request signature we calculated "
      "does not match the signature you provided. (HTTP 400)" },
    { "type without prefix, Message", 400, NULL, "AWS.SimpleQueueService.NonExistentQueue;Sender",
      "{\"__type\":\"QueueDoesNotExist\",\"Message\":\"The specified queue does not exist.\"}",
      "QueueDoesNotExist", "The specified queue does not exist.", 0,
      "SQS ReceiveMessage failed: QueueDoesNotExist: The specified queue does not exist. (HTTP 400)" },
    { "message wins over Message", 400, NULL, NULL,
      "{\"Message\":\"second\",\"message\":\"first\",\"__type\":\"a.b#InvalidParameterValue\"}",
      "InvalidParameterValue", "first", 0, NULL },
    { "query error header only", 400, NULL, "AWS.SimpleQueueService.NonExistentQueue;Sender", "",
      "NonExistentQueue", "", 0, "SQS ReceiveMessage failed: NonExistentQueue (HTTP 400)" },
    { "query error header without fault", 400, NULL, "AWS.SimpleQueueService.OverLimit", "{}",
      "OverLimit", "", 1, NULL },
    { "errortype header with coral suffix", 400,
      "ThrottlingException:http://internal.amazon.com/coral/com.amazon.coral.availability/",
      NULL, "{\"message\":\"Rate exceeded\"}", "ThrottlingException", "Rate exceeded", 1,
      "SQS ReceiveMessage failed: ThrottlingException: Rate exceeded (HTTP 400)" },
    { "body type wins over headers", 403, "AccessDeniedException",
      "AWS.SimpleQueueService.Other;Sender", "{\"__type\":\"com.amazonaws.sqs#InvalidSecurity\"}",
      "InvalidSecurity", "", 0, "SQS ReceiveMessage failed: InvalidSecurity (HTTP 403)" },
    { "code member", 403, NULL, NULL,
      "{\"code\":\"AccessDenied\",\"message\":\"Access to the resource is denied.\"}",
      "AccessDenied", "Access to the resource is denied.", 0, NULL },
    { "__type not a string", 400, "UnknownOperationException", NULL, "{\"__type\":5}",
      "UnknownOperationException", "", 0, NULL },
    { "throttled", 400, NULL, NULL,
      "{\"__type\":\"com.amazonaws.sqs#RequestThrottled\",\"message\":\"Rate exceeded\"}",
      "RequestThrottled", "Rate exceeded", 1, NULL },
    { "KMS throttled", 400, NULL, NULL, "{\"__type\":\"com.amazonaws.sqs#KmsThrottled\"}",
      "KmsThrottled", "", 1, NULL },
    { "5xx with a code", 500, NULL, NULL, "{\"__type\":\"InternalError\"}", "InternalError", "",
      1, "SQS ReceiveMessage failed: InternalError (HTTP 500)" },
    { "5xx HTML", 503, NULL, NULL, "<html>\n<body>Service  Unavailable</body>\n</html>\n", "",
      "<html> <body>Service Unavailable</body> </html>", 1,
      "SQS ReceiveMessage failed: HTTP 503: <html> <body>Service Unavailable</body> </html>" },
    { "empty body", 403, NULL, NULL, "", "", "empty answer", 0,
      "SQS ReceiveMessage failed: HTTP 403: empty answer" },
    { "429 empty", 429, NULL, NULL, "", "", "empty answer", 1, NULL },
    { "JSON but not an object", 400, NULL, NULL, "\"oops\"", "", "\"oops\"", 0,
      "SQS ReceiveMessage failed: HTTP 400: \"oops\"" },
    { "object without code or message", 400, NULL, NULL, "{\"x\":1}", "", "", 0,
      "SQS ReceiveMessage failed: HTTP 400" },
    { "a code in a header, spaced out", 400, " Throttling\r\n", NULL, "", "Throttling", "", 1,
      "SQS ReceiveMessage failed: Throttling (HTTP 400)" },
    { "control characters in message", 400, NULL, NULL,
      "{\"__type\":\"X\",\"message\":\"line1\\nline2\\u0000\"}", "X", "line1 line2", 0, NULL },
    { "clock skew is not retried", 400, NULL, NULL,
      "{\"__type\":\"com.amazon.coral.service#RequestExpired\",\"message\":\"Request has expired.\"}",
      "RequestExpired", "Request has expired.", 0, NULL },
};

/* What sqs_call hands sqs_parse_error: the status, the two headers when given, the body. */
static int parse_error(int status, const char *etype, const char *qerr, const char *body,
                       struct sqs_api_error *ae, struct lerr *e)
{
    struct http_response r = { .head.status = status, .body = (char *)body,
                               .body_len = strlen(body) };
    const char *names[2] = { "X-Amzn-ErrorType", "X-Amzn-Query-Error" };
    const char *values[2] = { etype, qerr };

    for (size_t i = 0; i < 2; i++)
        if (values[i])
            r.head.headers[r.head.num_headers++] = (struct httpresp_header){
                names[i], strlen(names[i]), values[i], strlen(values[i]) };
    return sqs_parse_error("ReceiveMessage", &r, ae, e);
}

static void test_error_answers(void **state)
{
    for (size_t i = 0; i < N_ELEMS(err_cases); i++) {
        const struct err_case *c = &err_cases[i];
        struct sqs_api_error ae;
        struct lerr e = { 0 };

        memset(&ae, 0x55, sizeof ae);
        assert_int_equal(parse_error(c->status, c->etype, c->qerr, c->body, &ae, &e), -1);
        if (strcmp(ae.code, c->code) != 0)
            fail_msg("%s: code \"%s\", want \"%s\"", c->name, ae.code, c->code);
        if (strcmp(ae.message, c->message) != 0)
            fail_msg("%s: message \"%s\", want \"%s\"", c->name, ae.message, c->message);
        assert_int_equal(ae.status, c->status);
        if (ae.retryable != c->retryable)
            fail_msg("%s: retryable %d", c->name, ae.retryable);
        assert_int_equal(e.kind, LERR_HTTP);
        if (c->text)
            assert_string_equal(e.msg, c->text);
        else
            assert_contains(e.msg, "SQS ReceiveMessage failed: ");
    }
}

static void test_error_long_fields(void **state)
{
    char body[2048], type[300];
    struct sqs_api_error ae;
    struct lerr e = { 0 };

    memset(type, 'T', sizeof type - 1);
    type[sizeof type - 1] = '\0';
    snprintf(body, sizeof body, "{\"__type\":\"x#%s\",\"message\":\"%0900d\"}", type, 0);
    parse_error(400, NULL, NULL, body, &ae, &e);
    assert_int_equal(strlen(ae.code), sizeof ae.code - 1);
    assert_int_equal(strlen(ae.message), sizeof ae.message - 1);
    assert_int_equal(ae.code[0], 'T');
}

static void test_code_retryable(void **state)
{
    static const char *const yes[] = { "ThrottlingException", "RequestThrottled", "Throttling",
                                       "TooManyRequestsException", "KmsThrottled", "OverLimit",
                                       "InternalError", "InternalFailure", "ServiceUnavailable",
                                       "RequestTimeout" };
    static const char *const no[] = { "", "SignatureDoesNotMatch", "QueueDoesNotExist",
                                      "NonExistentQueue", "InvalidParameterValue", "AccessDenied",
                                      "ReceiptHandleIsInvalid", "throttlingexception",
                                      "ThrottlingExceptionX" };

    /* The code alone decides, as an HTTP 400 answer's __type (the last case: no code). */
    for (size_t i = 0; i < N_ELEMS(yes) + N_ELEMS(no) + 1; i++) {
        const char *code = i < N_ELEMS(yes) ? yes[i] : i - N_ELEMS(yes) < N_ELEMS(no)
                           ? no[i - N_ELEMS(yes)] : NULL;
        char body[100];
        struct sqs_api_error ae;
        struct lerr e = { 0 };

        snprintf(body, sizeof body, "{\"__type\":\"%s\"}", code ? code : "");
        if (!code)
            snprintf(body, sizeof body, "{}");
        parse_error(400, NULL, NULL, body, &ae, &e);
        if (ae.retryable != (i < N_ELEMS(yes)))
            fail_msg("code %s: retryable %d", code ? code : "(none)", ae.retryable);
    }
}

/* ======================================================================================
 * Batch answers
 * ==================================================================================== */

#define P SQS_ENTRY_PENDING
#define OK SQS_ENTRY_OK
#define ST SQS_ENTRY_STALE
#define F SQS_ENTRY_FAILED

static const struct batch_case {
    const char *name;
    size_t n;
    enum sqs_entry_status before[4];
    const char *json;
    int rc;
    enum sqs_entry_status after[4];
    const char *codes[4];
} batch_cases[] = {
    { "all ok", 3, { P, P, P }, "{\"Successful\":[{\"Id\":\"m0\"},{\"Id\":\"m2\"},{\"Id\":\"m1\"}],\"Failed\":[]}",
      0, { OK, OK, OK }, { "", "", "" } },
    { "no Failed member", 1, { P }, "{\"Successful\":[{\"Id\":\"m0\"}]}", 0, { OK }, { "" } },
    { "null members", 1, { P }, "{\"Successful\":null,\"Failed\":null}", 0, { P }, { "" } },
    { "sender and receiver faults", 4, { P, P, P, P },
      "{\"Successful\":[{\"Id\":\"m0\"}],\"Failed\":["
      "{\"Id\":\"m1\",\"SenderFault\":true,\"Code\":\"InvalidParameterValue\",\"Message\":\"bad\"},"
      "{\"Id\":\"m2\",\"SenderFault\":false,\"Code\":\"InternalError\",\"Message\":\"oops\"},"
      "{\"Id\":\"m3\",\"SenderFault\":true,\"Code\":\"RequestThrottled\",\"Message\":\"slow down\"}]}",
      0, { OK, F, P, P }, { "", "InvalidParameterValue", "InternalError", "RequestThrottled" } },
    { "receiver fault with an unknown code", 1, { P },
      "{\"Failed\":[{\"Id\":\"m0\",\"SenderFault\":false,\"Code\":\"Whatever\"}]}", 0, { P },
      { "Whatever" } },
    { "no SenderFault counts as ours", 1, { P },
      "{\"Failed\":[{\"Id\":\"m0\",\"Code\":\"Whatever\"}]}", 0, { F }, { "Whatever" } },
    { "stale handles", 4, { P, P, P, P },
      "{\"Failed\":["
      "{\"Id\":\"m0\",\"SenderFault\":true,\"Code\":\"ReceiptHandleIsInvalid\",\"Message\":\"The input receipt handle is invalid.\"},"
      "{\"Id\":\"m1\",\"SenderFault\":true,\"Code\":\"InvalidParameterValue\",\"Message\":"
      "\"Value AQEB for parameter ReceiptHandle is invalid. Reason: The receipt handle has expired.\"},"
      "{\"Id\":\"m2\",\"SenderFault\":true,\"Code\":\"MessageNotInflight\"},"
      "{\"Id\":\"m3\",\"SenderFault\":true,\"Code\":\"InvalidParameterValue\",\"Message\":\"Value x for parameter ReceiptHandle is invalid.\"}]}",
      0, { ST, ST, ST, F },
      { "ReceiptHandleIsInvalid", "InvalidParameterValue", "MessageNotInflight", "InvalidParameterValue" } },
    { "ids not sent are ignored", 3, { P, OK, P },
      "{\"Successful\":[{\"Id\":\"m1\"},{\"Id\":\"m3\"},{\"Id\":\"m01\"},{\"Id\":\"x\"},{\"Id\":\"m\"},"
      "{\"Id\":\"m-1\"},{\"Id\":5},{},\"m0\",{\"Id\":\"m99999999999999999999\"}],"
      "\"Failed\":[{\"Id\":\"m1\",\"SenderFault\":true,\"Code\":\"X\"},{\"Id\":\"m9\",\"Code\":\"X\"}]}",
      0, { P, OK, P }, { "", "", "" } },
    { "not JSON", 1, { P }, "<xml/>", -1, { P }, { "" } },
    { "not an object", 1, { P }, "[]", -1, { P }, { "" } },
    { "Successful not an array", 1, { P }, "{\"Successful\":{}}", -1, { P }, { "" } },
    { "Failed not an array", 1, { P }, "{\"Failed\":\"m0\"}", -1, { P }, { "" } },
    { "Failed entry not an object", 1, { P }, "{\"Failed\":[1]}", -1, { P }, { "" } },
};

static void test_batch_answers(void **state)
{
    for (size_t i = 0; i < N_ELEMS(batch_cases); i++) {
        const struct batch_case *c = &batch_cases[i];
        struct sqs_entry en[4];
        struct lerr e = { 0 };
        int rc;

        memset(en, 0, sizeof en);
        for (size_t k = 0; k < c->n; k++) {
            en[k].receipt_handle = "h";
            en[k].status = c->before[k];
        }
        rc = sqs_parse_batch_result(SQS_OP_DELETE, c->json, strlen(c->json), en, c->n, &e);
        if (rc != c->rc)
            fail_msg("%s: rc %d (%s)", c->name, rc, e.msg);
        if (rc < 0) {
            assert_int_equal(e.kind, LERR_MALFORMED);
            assert_contains(e.msg, "SQS batch answer: ");
        }
        for (size_t k = 0; k < c->n; k++) {
            if (en[k].status != c->after[k])
                fail_msg("%s: entry %zu status %d, want %d", c->name, k, en[k].status,
                         c->after[k]);
            assert_string_equal(en[k].code, c->codes[k]);
        }
    }
}

static void test_batch_answer_messages(void **state)
{
    const char *json = "{\"Failed\":[{\"Id\":\"m0\",\"SenderFault\":true,\"Code\":"
                       "\"AWS.SimpleQueueService.TooManyEntriesInBatchRequest\",\"Message\":\"Too\\nmany\"}]}";
    struct sqs_entry en[1] = { { .receipt_handle = "h" } };
    struct lerr e = { 0 };

    assert_int_equal(sqs_parse_batch_result(SQS_OP_DELETE, json, strlen(json), en, 1, &e), 0);
    assert_int_equal(en[0].status, SQS_ENTRY_FAILED);
    assert_string_equal(en[0].code, "TooManyEntriesInBatchRequest");
    assert_string_equal(en[0].message, "Too many");
}

/* ======================================================================================
 * Backoff and sleep
 * ==================================================================================== */

static void test_backoff_bounds(void **state)
{
    static const struct {
        unsigned base, cap;
    } cases[] = { { 100, 20000 }, { 1, 1 }, { 0, 100 }, { 5000, 1000 }, { 100, 100 },
                  { 3, 4000000000u }, { 4000000000u, 4000000000u } };

    for (size_t c = 0; c < N_ELEMS(cases); c++) {
        for (unsigned attempt = 0; attempt < 70; attempt++) {
            uint64_t ceiling = cases[c].base, rng = attempt * 7919u + c;
            unsigned lo = UINT32_MAX, hi = 0;

            for (unsigned i = 0; i < attempt && ceiling < cases[c].cap; i++)
                ceiling *= 2;
            if (ceiling > cases[c].cap)
                ceiling = cases[c].cap;
            for (int draw = 0; draw < 2000; draw++) {
                unsigned ms = sqs_backoff_ms(attempt, cases[c].base, cases[c].cap, &rng);
                if (ms > ceiling)
                    fail_msg("base %u cap %u attempt %u: %u > %llu", cases[c].base,
                             cases[c].cap, attempt, ms, (unsigned long long)ceiling);
                lo = ms < lo ? ms : lo;
                hi = ms > hi ? ms : hi;
            }
            /* Full jitter: the draws spread over the whole range, not one fixed delay. */
            assert_true(lo <= ceiling / 10);
            assert_true(hi >= ceiling - ceiling / 10);
        }
    }
}

static void test_backoff_seed(void **state)
{
    uint64_t a = 42, b = 42, c = 43;
    int same = 1, differs = 0;

    for (int i = 0; i < 100; i++) {
        unsigned x = sqs_backoff_ms(10, 100, 20000, &a), y = sqs_backoff_ms(10, 100, 20000, &b);
        same &= x == y;
        differs |= x != sqs_backoff_ms(10, 100, 20000, &c);
    }
    assert_true(same);
    assert_true(differs);
    assert_int_not_equal(a, 42);
}

/* The backoff's sleep: ratelimit_wait_idle without a bucket, ended early by cancel_fd. */
static void test_sleep(void **state)
{
    struct lerr e = { 0 };
    long long t0 = mono_ms();
    int fds[2];

    assert_int_equal(ratelimit_wait_idle(NULL, 60, NULL, 0, NULL, NULL, &e), 0);
    assert_true(mono_ms() - t0 >= 60);
    assert_int_equal(ratelimit_wait_idle(NULL, 0, NULL, 0, NULL, NULL, &e), 0);

    assert_int_equal(pipe(fds), 0);
    t0 = mono_ms();
    /* not cancelled: the full time */
    assert_int_equal(ratelimit_wait_idle(NULL, 50, &fds[0], 1, NULL, NULL, &e), 0);
    assert_true(mono_ms() - t0 >= 50);
    assert_int_equal(write(fds[1], "x", 1), 1);
    t0 = mono_ms();
    assert_int_equal(ratelimit_wait_idle(NULL, 20000, &fds[0], 1, NULL, NULL, &e), -1);
    assert_int_equal(e.kind, LERR_CANCELLED);
    assert_true(mono_ms() - t0 < 1000);
    close(fds[0]);
    close(fds[1]);
}

struct delayed_write {
    int fd, ms;
};

static void *write_later(void *arg)
{
    const struct delayed_write *d = arg;

    usleep((useconds_t)d->ms * 1000);
    if (write(d->fd, "x", 1) != 1)
        abort();
    return NULL;
}

static void test_sleep_woken(void **state)
{
    struct lerr e = { 0 };
    struct delayed_write d;
    pthread_t th;
    long long t0, took;
    int fds[2];

    assert_int_equal(pipe(fds), 0);
    d = (struct delayed_write){ fds[1], 100 };
    t0 = mono_ms();
    assert_int_equal(pthread_create(&th, NULL, write_later, &d), 0);
    assert_int_equal(ratelimit_wait_idle(NULL, 20000, &fds[0], 1, NULL, NULL, &e), -1);
    took = mono_ms() - t0;
    pthread_join(th, NULL);
    assert_int_equal(e.kind, LERR_CANCELLED);
    assert_true(took >= 90 && took < 2000);
    close(fds[0]);
    close(fds[1]);
}

/* ======================================================================================
 * The client against a scripted server
 * ==================================================================================== */

#define MAX_REQ 16

struct canned {
    int status;            /* 0: close the connection without answering */
    const char *headers;   /* extra header lines, each ending in \r\n, or NULL */
    const char *body;
    int delay_ms;
};

struct fake {
    int lfd, stop[2];
    unsigned short port;
    pthread_t th;
    pthread_mutex_t mu;
    const struct canned *script;
    size_t nscript, nreq;
    char *head[MAX_REQ], *body[MAX_REQ];
    size_t body_len[MAX_REQ];
};

static size_t content_length(const char *head)
{
    const char *p = head;

    while ((p = strchr(p, '\n'))) {
        p++;
        if (strncasecmp(p, "Content-Length:", 15) == 0)
            return (size_t)strtoul(p + 15, NULL, 10);
    }
    return 0;
}

/* Reads one request; 0, or -1 at EOF or stop. */
static int fake_read(struct fake *f, int fd, char **head, char **body, size_t *body_len)
{
    size_t cap = 65536, len = 0, hlen = 0, blen = 0;
    char *buf = malloc(cap + 1), *end;

    if (!buf)
        return -1;
    for (;;) {
        struct pollfd p[2] = { { fd, POLLIN, 0 }, { f->stop[0], POLLIN, 0 } };
        ssize_t n;

        buf[len] = '\0';
        if (!hlen && (end = strstr(buf, "\r\n\r\n"))) {
            hlen = (size_t)(end - buf) + 4;
            blen = content_length(buf);
        }
        if (hlen && len >= hlen + blen)
            break;
        if (poll(p, 2, -1) < 0 || p[1].revents || len == cap)
            goto fail;
        n = read(fd, buf + len, cap - len);
        if (n <= 0)
            goto fail;
        len += (size_t)n;
    }
    *head = strndup(buf, hlen);
    *body = malloc(blen + 1);
    memcpy(*body, buf + hlen, blen);
    (*body)[blen] = '\0';
    *body_len = blen;
    free(buf);
    return 0;
fail:
    free(buf);
    return -1;
}

static void fake_answer(int fd, const struct canned *c)
{
    char head[1024];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d Canned\r\nContent-Type: application/x-amz-json-1.0\r\n"
                     "x-amzn-RequestId: 00000000-0000-0000-0000-000000000000\r\n%s"
                     "Content-Length: %zu\r\n\r\n",
                     c->status, c->headers ? c->headers : "", strlen(c->body));

    if (write(fd, head, (size_t)n) != n ||
        write(fd, c->body, strlen(c->body)) != (ssize_t)strlen(c->body))
        return;
}

static void *fake_main(void *arg)
{
    static const struct canned exhausted = { 599, NULL, "{\"__type\":\"ScriptExhausted\"}", 0 };
    struct fake *f = arg;

    for (;;) {
        struct pollfd p[2] = { { f->lfd, POLLIN, 0 }, { f->stop[0], POLLIN, 0 } };
        int fd;

        if (poll(p, 2, -1) < 0 || p[1].revents)
            break;
        fd = accept(f->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        for (;;) {
            char *head, *body;
            size_t blen, idx;
            const struct canned *c;

            if (fake_read(f, fd, &head, &body, &blen) < 0)
                break;
            pthread_mutex_lock(&f->mu);
            idx = f->nreq++;
            if (idx < MAX_REQ) {
                f->head[idx] = head;
                f->body[idx] = body;
                f->body_len[idx] = blen;
            } else {
                free(head);
                free(body);
            }
            c = idx < f->nscript ? &f->script[idx] : &exhausted;
            pthread_mutex_unlock(&f->mu);
            if (c->delay_ms)
                usleep((useconds_t)c->delay_ms * 1000);
            if (c->status == 0)
                break;
            fake_answer(fd, c);
        }
        close(fd);
    }
    return NULL;
}

static void fake_start(struct fake *f, const struct canned *script, size_t n)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t sl = sizeof sa;

    memset(f, 0, sizeof *f);
    f->script = script;
    f->nscript = n;
    pthread_mutex_init(&f->mu, NULL);
    assert_int_equal(pipe(f->stop), 0);
    f->lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(f->lfd >= 0);
    assert_int_equal(bind(f->lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(f->lfd, 8), 0);
    assert_int_equal(getsockname(f->lfd, (struct sockaddr *)&sa, &sl), 0);
    f->port = ntohs(sa.sin_port);
    assert_int_equal(pthread_create(&f->th, NULL, fake_main, f), 0);
}

static size_t fake_count(struct fake *f)
{
    size_t n;

    pthread_mutex_lock(&f->mu);
    n = f->nreq;
    pthread_mutex_unlock(&f->mu);
    return n;
}

static void fake_stop(struct fake *f)
{
    assert_int_equal(write(f->stop[1], "x", 1), 1);
    pthread_join(f->th, NULL);
    close(f->lfd);
    close(f->stop[0]);
    close(f->stop[1]);
    for (size_t i = 0; i < f->nreq && i < MAX_REQ; i++) {
        free(f->head[i]);
        free(f->body[i]);
    }
    pthread_mutex_destroy(&f->mu);
}

/* A header's value from a recorded request head, copied into out ("" when absent). */
static const char *req_header(const char *head, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    const char *p = head;

    out[0] = '\0';
    while ((p = strstr(p, "\r\n"))) {
        p += 2;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1, *end = strstr(v, "\r\n");
            while (*v == ' ')
                v++;
            snprintf(out, cap, "%.*s", (int)(end - v), v);
            break;
        }
    }
    return out;
}

#define AKID "AKIDEXAMPLE"
#define SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define TOKEN "IQoJb3JpZ2luX2VjEXAMPLETOKEN"

struct env {
    struct fake f;
    struct http_client http;
    struct sqs_client c;
    char queue[128];
};

static void env_start(struct env *v, const struct canned *script, size_t n)
{
    const struct sigv4_credentials creds = { AKID, SECRET, TOKEN };
    char url[64];
    struct url ep;
    struct lerr e = { 0 };

    fake_start(&v->f, script, n);
    snprintf(url, sizeof url, "http://127.0.0.1:%u/000000000000/jobs", v->f.port);
    snprintf(v->queue, sizeof v->queue, "%s", url);
    /* The endpoint's path is not used: every call goes to "/". */
    assert_int_equal(url_parse(url, &ep, &e), 0);
    http_client_init(&v->http, NULL);
    sqs_client_init(&v->c, &v->http, &ep, v->queue, "us-east-1", &creds);
    assert_int_equal(v->c.receive_attempts, SQS_RECEIVE_ATTEMPTS);
    assert_int_equal(v->c.batch_attempts, SQS_BATCH_ATTEMPTS);
    assert_int_equal(v->c.backoff_base_ms, SQS_BACKOFF_BASE_MS);
    assert_int_equal(v->c.backoff_cap_ms, SQS_BACKOFF_CAP_MS);
    v->c.backoff_base_ms = 2;
    v->c.backoff_cap_ms = 10;
}

static void env_stop(struct env *v)
{
    http_client_close(&v->http);
    fake_stop(&v->f);
}

/* The request i as received: POST /, the operation's target, JSON content type, and an
 * Authorization that is what SigV4 gives for exactly these headers and body. No secret. */
static cJSON *check_request(struct env *v, size_t i, const char *op)
{
    const char *head = v->f.head[i], *body = v->f.body[i];
    char host[300], target[80], ctype[80], date[40], token[80], auth[2200], want[80];
    struct sigv4_signature sig;
    struct lerr e = { 0 };
    struct tm tm = { 0 };
    time_t t;
    const char *signed_auth = NULL;

    assert_true(i < v->f.nreq);
    assert_true(strncmp(head, "POST / HTTP/1.1\r\n", 17) == 0);
    snprintf(want, sizeof want, "AmazonSQS.%s", op);
    assert_string_equal(req_header(head, "X-Amz-Target", target, sizeof target), want);
    assert_string_equal(req_header(head, "Content-Type", ctype, sizeof ctype),
                        "application/x-amz-json-1.0");
    snprintf(want, sizeof want, "127.0.0.1:%u", v->f.port);
    assert_string_equal(req_header(head, "Host", host, sizeof host), want);
    assert_string_equal(req_header(head, "X-Amz-Security-Token", token, sizeof token), TOKEN);
    req_header(head, "X-Amz-Date", date, sizeof date);
    assert_int_equal(strlen(date), 16);
    assert_non_null(strptime(date, "%Y%m%dT%H%M%SZ", &tm));
    t = timegm(&tm);
    assert_true(t > time(NULL) - 60 && t <= time(NULL) + 1);
    req_header(head, "Authorization", auth, sizeof auth);
    assert_true(strncmp(auth, "AWS4-HMAC-SHA256 Credential=" AKID "/", 29) == 0);
    assert_contains(auth, "/us-east-1/sqs/aws4_request");
    assert_contains(auth, "content-type;host;x-amz-date;x-amz-security-token;x-amz-target");
    {
        const struct sigv4_header hs[] = {
            { "Host", host }, { "X-Amz-Target", target }, { "Content-Type", ctype },
            { "X-Amz-Date", date }, { "X-Amz-Security-Token", token },
        };
        const struct sigv4_request sr = { "POST", "/", NULL, hs, 5, body, v->f.body_len[i] };
        const struct sigv4_params sp = { "us-east-1", "sqs", date, 1, 0, NULL };
        const struct sigv4_credentials creds = { AKID, SECRET, TOKEN };

        assert_int_equal(sigv4_sign(&sr, &creds, &sp, &sig, &e), 0);
        for (size_t k = 0; k < sig.num_added; k++)
            if (strcmp(sig.added[k].name, "Authorization") == 0)
                signed_auth = sig.added[k].value;
        assert_non_null(signed_auth);
        assert_string_equal(auth, signed_auth);
    }
    assert_null(strstr(head, SECRET));
    assert_null(memmem(body, v->f.body_len[i], SECRET, strlen(SECRET)));
    {
        cJSON *j = body_json(body, v->f.body_len[i]);
        assert_str(j, "QueueUrl", v->queue);
        return j;
    }
}

#define ONE_MESSAGE "{\"Messages\":[{\"MessageId\":\"id-1\",\"ReceiptHandle\":\"rh-1\",\"MD5OfBody\":\"" \
                    MD5_HELLO "\",\"Body\":\"hello\"}]}"
#define E500 { 500, NULL, "{\"__type\":\"com.amazonaws.sqs#InternalError\",\"message\":\"We encountered an internal error.\"}", 0 }

static void test_client_receive(void **state)
{
    static const struct canned script[] = { { 200, NULL, ONE_MESSAGE, 0 } };
    const struct sqs_receive_opts o = { 10, 0, 120 };
    struct env v;
    struct sqs_batch b;
    struct lerr e = { 0 };
    cJSON *j;

    env_start(&v, script, 1);
    assert_int_equal(sqs_receive(&v.c, &o, &b, &e), 0);
    assert_int_equal(b.count, 1);
    assert_string_equal(b.messages[0].message_id, "id-1");
    assert_string_equal(b.messages[0].receipt_handle, "rh-1");
    assert_int_equal(b.messages[0].body_len, 5);
    sqs_batch_free(&b);
    assert_int_equal(fake_count(&v.f), 1);
    j = check_request(&v, 0, "ReceiveMessage");
    assert_number(j, "MaxNumberOfMessages", 10);
    assert_number(j, "WaitTimeSeconds", 0);
    assert_number(j, "VisibilityTimeout", 120);
    cJSON_Delete(j);
    env_stop(&v);
}

static void test_client_receive_retries(void **state)
{
    static const struct canned script[] = {
        E500,
        { 400, NULL, "{\"__type\":\"com.amazonaws.sqs#RequestThrottled\",\"message\":\"Rate exceeded\"}", 0 },
        { 200, NULL, "{}", 0 },
    };
    const struct sqs_receive_opts o = { 1, 0, -1 };
    struct env v;
    struct sqs_batch b;
    struct lerr e = { 0 };

    env_start(&v, script, N_ELEMS(script));
    assert_int_equal(sqs_receive(&v.c, &o, &b, &e), 0);
    assert_int_equal(b.count, 0);
    sqs_batch_free(&b);
    assert_int_equal(fake_count(&v.f), 3);
    cJSON_Delete(check_request(&v, 2, "ReceiveMessage"));
    env_stop(&v);
}

static void test_client_receive_gives_up(void **state)
{
    static const struct canned script[] = {
        { 503, NULL, "<html>busy</html>", 0 }, { 503, NULL, "<html>busy</html>", 0 },
        { 503, NULL, "<html>busy</html>", 0 }, { 200, NULL, "{}", 0 },
    };
    const struct sqs_receive_opts o = { 1, 0, -1 };
    struct env v;
    struct sqs_batch b;
    struct lerr e = { 0 };

    env_start(&v, script, N_ELEMS(script));
    assert_int_equal(sqs_receive(&v.c, &o, &b, &e), -1);
    assert_int_equal(e.kind, LERR_HTTP);
    assert_string_equal(e.msg, "SQS ReceiveMessage failed: HTTP 503: <html>busy</html>");
    assert_int_equal(fake_count(&v.f), SQS_RECEIVE_ATTEMPTS);
    assert_true(v.c.last_error.retryable);
    assert_int_equal(v.c.last_error.status, 503);
    assert_null(b.mem);
    env_stop(&v);
}

static void test_client_receive_not_retried(void **state)
{
    static const struct canned script[] = {
        { 400, "x-amzn-query-error: AWS.SimpleQueueService.NonExistentQueue;Sender\r\n",
          "{\"__type\":\"com.amazonaws.sqs#QueueDoesNotExist\",\"message\":\"The specified queue does not exist.\"}", 0 },
        { 200, NULL, "{}", 0 },
    };
    const struct sqs_receive_opts o = { 1, 0, -1 };
    struct env v;
    struct sqs_batch b;
    struct lerr e = { 0 };

    env_start(&v, script, N_ELEMS(script));
    assert_int_equal(sqs_receive(&v.c, &o, &b, &e), -1);
    assert_int_equal(e.kind, LERR_HTTP);
    assert_string_equal(e.msg, "SQS ReceiveMessage failed: QueueDoesNotExist: The specified "
                               "queue does not exist. (HTTP 400)");
    assert_int_equal(fake_count(&v.f), 1);
    assert_false(v.c.last_error.retryable);
    assert_string_equal(v.c.last_error.code, "QueueDoesNotExist");
    env_stop(&v);
}

static void test_client_receive_error_header_only(void **state)
{
    static const struct canned script[] = {
        { 400, "x-amzn-query-error: AWS.SimpleQueueService.NonExistentQueue;Sender\r\n", "", 0 },
    };
    const struct sqs_receive_opts o = { 1, 0, -1 };
    struct env v;
    struct sqs_batch b;
    struct lerr e = { 0 };

    env_start(&v, script, N_ELEMS(script));
    assert_int_equal(sqs_receive(&v.c, &o, &b, &e), -1);
    assert_string_equal(e.msg, "SQS ReceiveMessage failed: NonExistentQueue (HTTP 400)");
    env_stop(&v);
}

static void test_client_receive_dropped(void **state)
{
    static const struct canned script[] = { { 0, NULL, "", 0 }, { 200, NULL, ONE_MESSAGE, 0 } };
    const struct sqs_receive_opts o = { 1, 0, -1 };
    struct env v;
    struct sqs_batch b;
    struct lerr e = { 0 };

    env_start(&v, script, N_ELEMS(script));
    assert_int_equal(sqs_receive(&v.c, &o, &b, &e), 0);
    assert_int_equal(b.count, 1);
    sqs_batch_free(&b);
    assert_int_equal(fake_count(&v.f), 2);
    env_stop(&v);
}

static void test_client_receive_malformed(void **state)
{
    static const struct canned script[] = { { 200, NULL, "<ReceiveMessageResponse/>", 0 },
                                            { 200, NULL, "{}", 0 } };
    const struct sqs_receive_opts o = { 1, 0, -1 };
    struct env v;
    struct sqs_batch b;
    struct lerr e = { 0 };

    env_start(&v, script, N_ELEMS(script));
    assert_int_equal(sqs_receive(&v.c, &o, &b, &e), -1);
    assert_int_equal(e.kind, LERR_MALFORMED);
    assert_contains(e.msg, "not a JSON object (it starts with \"<ReceiveMessageResponse/>\")");
    assert_int_equal(fake_count(&v.f), 1);
    assert_false(v.c.last_error.retryable);
    assert_int_equal(v.c.last_error.status, 200);
    env_stop(&v);
}

/* The long poll keeps the server silent for up to WaitTimeSeconds: a client whose
 * per-wait limit is shorter must not time out, and gets its limit back afterwards. */
static void test_client_receive_long_poll(void **state)
{
    static const struct canned script[] = { { 200, NULL, ONE_MESSAGE, 700 } };
    const struct sqs_receive_opts o = { 1, 1, -1 };
    struct env v;
    struct sqs_batch b;
    struct lerr e = { 0 };

    env_start(&v, script, 1);
    v.http.io_timeout_ms = 200;
    if (sqs_receive(&v.c, &o, &b, &e) != 0)
        fail_msg("%s", e.msg);
    assert_int_equal(b.count, 1);
    sqs_batch_free(&b);
    assert_int_equal(v.http.io_timeout_ms, 200);
    env_stop(&v);
}

static void test_client_receive_refused(void **state)
{
    const struct sigv4_credentials creds = { AKID, SECRET, NULL };
    const struct sqs_receive_opts o = { 1, 0, -1 };
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t sl = sizeof sa;
    struct http_client http;
    struct sqs_client c;
    struct sqs_batch b;
    struct lerr e = { 0 };
    struct url ep;
    char url[64];
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    /* A port that was free a moment ago and has no listener. */
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    close(fd);
    snprintf(url, sizeof url, "http://127.0.0.1:%u/", ntohs(sa.sin_port));
    assert_int_equal(url_parse(url, &ep, &e), 0);
    http_client_init(&http, NULL);
    sqs_client_init(&c, &http, &ep, url, "us-east-1", &creds);
    c.backoff_base_ms = 1;
    assert_int_equal(sqs_receive(&c, &o, &b, &e), -1);
    assert_int_equal(e.kind, LERR_REFUSED);
    assert_contains(e.msg, "SQS ReceiveMessage failed: ");
    assert_true(c.last_error.retryable);
    assert_int_equal(c.last_error.status, 0);
    http_client_close(&http);
}

static int seed_with_long_first_delay(void)
{
    for (int seed = 1;; seed++) {
        uint64_t rng = (uint64_t)seed;
        if (sqs_backoff_ms(0, 10000, 20000, &rng) >= 5000)
            return seed;
    }
}

static void test_client_cancel_wakes_backoff(void **state)
{
    static const struct canned script[] = { E500, E500, E500 };
    const struct sqs_receive_opts o = { 1, 0, -1 };
    struct delayed_write d;
    struct env v;
    struct sqs_batch b;
    struct lerr e = { 0 };
    pthread_t th;
    long long t0, took;
    int fds[2];

    env_start(&v, script, N_ELEMS(script));
    assert_int_equal(pipe(fds), 0);
    v.http.cancel_fd = fds[0];
    v.c.backoff_base_ms = 10000;
    v.c.backoff_cap_ms = 20000;
    v.c.rng = (uint64_t)seed_with_long_first_delay();
    d = (struct delayed_write){ fds[1], 150 };
    t0 = mono_ms();
    assert_int_equal(pthread_create(&th, NULL, write_later, &d), 0);
    assert_int_equal(sqs_receive(&v.c, &o, &b, &e), -1);
    took = mono_ms() - t0;
    pthread_join(th, NULL);
    assert_int_equal(e.kind, LERR_CANCELLED);
    assert_true(took < 3000);
    assert_int_equal(fake_count(&v.f), 1);
    assert_false(v.c.last_error.retryable);
    env_stop(&v);
    close(fds[0]);
    close(fds[1]);
}

static void entries_init(struct sqs_entry *en, size_t n, char handles[][16], char ids[][16])
{
    memset(en, 0, n * sizeof *en);
    for (size_t i = 0; i < n; i++) {
        snprintf(handles[i], 16, "rh-%u", (unsigned)i);
        snprintf(ids[i], 16, "id-%u", (unsigned)i);
        en[i].receipt_handle = handles[i];
        en[i].message_id = ids[i];
        en[i].visibility_timeout = (int)i * 30;
        /* Whatever the caller left here is reset by the call. */
        en[i].status = SQS_ENTRY_FAILED;
        snprintf(en[i].code, sizeof en[i].code, "stale junk");
    }
}

/* Ids of the entries in request i, joined by commas. */
static void request_ids(struct env *v, size_t i, const char *op, char *out, size_t cap)
{
    cJSON *j = check_request(v, i, op);
    const cJSON *it;
    size_t n = 0;

    out[0] = '\0';
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(j, "Entries")) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "Id");
        n += (size_t)snprintf(out + n, cap - n, "%s%s", n ? "," : "", id->valuestring);
    }
    cJSON_Delete(j);
}

static void test_client_delete_ok(void **state)
{
    static const struct canned script[] = {
        { 200, NULL, "{\"Successful\":[{\"Id\":\"m0\"},{\"Id\":\"m1\"},{\"Id\":\"m2\"}]}", 0 },
    };
    struct sqs_entry en[3];
    char h[3][16], ids[3][16], got[64];
    struct env v;
    struct lerr e = { 0 };

    env_start(&v, script, 1);
    entries_init(en, 3, h, ids);
    assert_int_equal(sqs_batch_call(&v.c, SQS_OP_DELETE, en, 3, &e), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(en[i].status, SQS_ENTRY_OK);
        assert_string_equal(en[i].code, "");
    }
    assert_int_equal(fake_count(&v.f), 1);
    request_ids(&v, 0, "DeleteMessageBatch", got, sizeof got);
    assert_string_equal(got, "m0,m1,m2");
    env_stop(&v);
}

static void test_client_delete_retries_entries(void **state)
{
    static const struct canned script[] = {
        { 200, NULL, "{\"Successful\":[{\"Id\":\"m0\"}],\"Failed\":["
                     "{\"Id\":\"m1\",\"SenderFault\":false,\"Code\":\"InternalError\"},"
                     "{\"Id\":\"m3\",\"SenderFault\":true,\"Code\":\"RequestThrottled\"}]}", 0 },
        { 200, NULL, "{\"Successful\":[{\"Id\":\"m1\"},{\"Id\":\"m2\"}]}", 0 },
        { 200, NULL, "{\"Successful\":[{\"Id\":\"m3\"}]}", 0 },
    };
    struct sqs_entry en[4];
    char h[4][16], ids[4][16], got[64];
    struct env v;
    struct lerr e = { 0 };

    env_start(&v, script, N_ELEMS(script));
    entries_init(en, 4, h, ids);
    if (sqs_batch_call(&v.c, SQS_OP_DELETE, en, 4, &e) != 0)
        fail_msg("%s", e.msg);
    for (int i = 0; i < 4; i++)
        assert_int_equal(en[i].status, SQS_ENTRY_OK);
    assert_int_equal(fake_count(&v.f), 3);
    request_ids(&v, 0, "DeleteMessageBatch", got, sizeof got);
    assert_string_equal(got, "m0,m1,m2,m3");
    /* m2 went unmentioned: it is sent again, with the ones SQS failed on its side. */
    request_ids(&v, 1, "DeleteMessageBatch", got, sizeof got);
    assert_string_equal(got, "m1,m2,m3");
    request_ids(&v, 2, "DeleteMessageBatch", got, sizeof got);
    assert_string_equal(got, "m3");
    env_stop(&v);
}

static void test_client_delete_sender_fault(void **state)
{
    static const struct canned script[] = {
        { 200, NULL, "{\"Successful\":[{\"Id\":\"m0\"}],\"Failed\":[{\"Id\":\"m1\",\"SenderFault\":true,"
                     "\"Code\":\"InvalidParameterValue\",\"Message\":\"Bad handle.\"}]}", 0 },
    };
    struct sqs_entry en[2];
    char h[2][16], ids[2][16];
    struct env v;
    struct lerr e = { 0 };

    env_start(&v, script, 1);
    entries_init(en, 2, h, ids);
    assert_int_equal(sqs_batch_call(&v.c, SQS_OP_DELETE, en, 2, &e), -1);
    assert_int_equal(e.kind, LERR_HTTP);
    assert_string_equal(e.msg, "SQS DeleteMessageBatch: 1 of 2 entries failed; message id-1: "
                               "InvalidParameterValue: Bad handle.");
    assert_int_equal(en[0].status, SQS_ENTRY_OK);
    assert_int_equal(en[1].status, SQS_ENTRY_FAILED);
    assert_string_equal(en[1].code, "InvalidParameterValue");
    assert_string_equal(en[1].message, "Bad handle.");
    assert_int_equal(fake_count(&v.f), 1);
    assert_string_equal(v.c.last_error.code, "InvalidParameterValue");
    env_stop(&v);
}

static void test_client_delete_stale(void **state)
{
    static const struct canned script[] = {
        { 200, NULL, "{\"Successful\":[{\"Id\":\"m1\"}],\"Failed\":[{\"Id\":\"m0\",\"SenderFault\":true,"
                     "\"Code\":\"ReceiptHandleIsInvalid\",\"Message\":\"The input receipt handle is invalid.\"}]}", 0 },
    };
    struct sqs_entry en[2];
    char h[2][16], ids[2][16], logged[4096] = "";
    struct env v;
    struct lerr e = { 0 };
    FILE *tmp = tmpfile();
    int saved = dup(2);
    size_t n;

    /* The stale handle is reported on stderr: capture it. */
    assert_non_null(tmp);
    log_setup(LOG_LEVEL_WARN, 0);
    fflush(stderr);
    dup2(fileno(tmp), 2);
    env_start(&v, script, 1);
    entries_init(en, 2, h, ids);
    assert_int_equal(sqs_batch_call(&v.c, SQS_OP_DELETE, en, 2, &e), 0);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    log_setup(LOG_LEVEL_ERROR, 0);
    rewind(tmp);
    n = fread(logged, 1, sizeof logged - 1, tmp);
    logged[n] = '\0';
    fclose(tmp);
    assert_int_equal(en[0].status, SQS_ENTRY_STALE);
    assert_string_equal(en[0].code, "ReceiptHandleIsInvalid");
    assert_int_equal(en[1].status, SQS_ENTRY_OK);
    assert_int_equal(fake_count(&v.f), 1);
    assert_contains(logged, "warn");
    assert_contains(logged, "SQS DeleteMessageBatch: message id-0: receipt handle no longer valid "
                            "(ReceiptHandleIsInvalid: The input receipt handle is invalid.)");
    env_stop(&v);
}

static void test_client_delete_bounded(void **state)
{
    static const struct canned script[] = {
        { 200, NULL, "{\"Failed\":[{\"Id\":\"m0\",\"SenderFault\":false,\"Code\":\"InternalError\",\"Message\":\"try again\"}]}", 0 },
        { 200, NULL, "{\"Failed\":[{\"Id\":\"m0\",\"SenderFault\":false,\"Code\":\"InternalError\",\"Message\":\"try again\"}]}", 0 },
        { 200, NULL, "{\"Failed\":[{\"Id\":\"m0\",\"SenderFault\":false,\"Code\":\"InternalError\",\"Message\":\"try again\"}]}", 0 },
        { 200, NULL, "{\"Failed\":[{\"Id\":\"m0\",\"SenderFault\":false,\"Code\":\"InternalError\",\"Message\":\"try again\"}]}", 0 },
        { 200, NULL, "{\"Failed\":[{\"Id\":\"m0\",\"SenderFault\":false,\"Code\":\"InternalError\",\"Message\":\"try again\"}]}", 0 },
        { 200, NULL, "{\"Successful\":[{\"Id\":\"m0\"}]}", 0 },
    };
    struct sqs_entry en[1];
    char h[1][16], ids[1][16];
    struct env v;
    struct lerr e = { 0 };

    env_start(&v, script, N_ELEMS(script));
    entries_init(en, 1, h, ids);
    assert_int_equal(sqs_batch_call(&v.c, SQS_OP_DELETE, en, 1, &e), -1);
    assert_string_equal(e.msg, "SQS DeleteMessageBatch: 1 of 1 entries failed; message id-0: "
                               "InternalError: try again");
    assert_int_equal(en[0].status, SQS_ENTRY_FAILED);
    assert_int_equal(fake_count(&v.f), SQS_BATCH_ATTEMPTS);
    env_stop(&v);
}

/* An entry the answers never mention is not taken for done: it is retried, then failed. */
static void test_client_delete_not_reported(void **state)
{
    static const struct canned script[] = {
        { 200, NULL, "{\"Successful\":[{\"Id\":\"m1\"}]}", 0 },
        { 200, NULL, "{\"Successful\":[]}", 0 }, { 200, NULL, "{}", 0 },
        { 200, NULL, "{\"Failed\":[]}", 0 }, { 200, NULL, "{\"Successful\":[]}", 0 },
    };
    static const struct canned garbage[] = { { 200, NULL, "<html>proxy</html>", 0 } };
    struct sqs_entry en[2];
    char h[2][16], ids[2][16];
    struct env v;
    struct lerr e = { 0 };

    env_start(&v, script, N_ELEMS(script));
    entries_init(en, 2, h, ids);
    assert_int_equal(sqs_batch_call(&v.c, SQS_OP_DELETE, en, 2, &e), -1);
    assert_string_equal(e.msg, "SQS DeleteMessageBatch: 1 of 2 entries failed; message id-0: "
                               "NotReported: the answer did not mention this entry");
    assert_int_equal(en[0].status, SQS_ENTRY_FAILED);
    assert_int_equal(en[1].status, SQS_ENTRY_OK);
    assert_int_equal(fake_count(&v.f), SQS_BATCH_ATTEMPTS);
    env_stop(&v);

    /* An answer that is not what SQS sends is an error, not "nothing failed". */
    env_start(&v, garbage, N_ELEMS(garbage));
    entries_init(en, 2, h, ids);
    assert_int_equal(sqs_batch_call(&v.c, SQS_OP_DELETE, en, 2, &e), -1);
    assert_int_equal(e.kind, LERR_MALFORMED);
    assert_string_equal(e.msg, "SQS DeleteMessageBatch: SQS batch answer: not a JSON object");
    assert_int_equal(en[0].status, SQS_ENTRY_FAILED);
    assert_int_equal(en[1].status, SQS_ENTRY_FAILED);
    assert_string_equal(en[1].code, "malformed");
    assert_int_equal(fake_count(&v.f), 1);
    env_stop(&v);
}

static void test_client_delete_whole_request(void **state)
{
    static const struct canned script[] = {
        E500, { 200, NULL, "{\"Successful\":[{\"Id\":\"m0\"},{\"Id\":\"m1\"}]}", 0 },
    };
    static const struct canned always[] = { E500, E500, E500, E500, E500, E500 };
    static const struct canned denied[] = {
        { 400, NULL, "{\"__type\":\"com.amazon.coral.service#AccessDeniedException\",\"message\":\"No.\"}", 0 },
    };
    struct sqs_entry en[2];
    char h[2][16], ids[2][16];
    struct env v;
    struct lerr e = { 0 };

    env_start(&v, script, N_ELEMS(script));
    entries_init(en, 2, h, ids);
    assert_int_equal(sqs_batch_call(&v.c, SQS_OP_DELETE, en, 2, &e), 0);
    assert_int_equal(en[0].status, SQS_ENTRY_OK);
    assert_int_equal(en[1].status, SQS_ENTRY_OK);
    assert_int_equal(fake_count(&v.f), 2);
    env_stop(&v);

    env_start(&v, always, N_ELEMS(always));
    entries_init(en, 2, h, ids);
    assert_int_equal(sqs_batch_call(&v.c, SQS_OP_DELETE, en, 2, &e), -1);
    assert_string_equal(e.msg, "SQS DeleteMessageBatch failed: InternalError: We encountered an "
                               "internal error. (HTTP 500)");
    assert_int_equal(fake_count(&v.f), SQS_BATCH_ATTEMPTS);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(en[i].status, SQS_ENTRY_FAILED);
        assert_string_equal(en[i].code, "InternalError");
        assert_string_equal(en[i].message, e.msg);
    }
    assert_true(v.c.last_error.retryable);
    env_stop(&v);

    env_start(&v, denied, N_ELEMS(denied));
    entries_init(en, 2, h, ids);
    assert_int_equal(sqs_batch_call(&v.c, SQS_OP_DELETE, en, 2, &e), -1);
    assert_string_equal(e.msg, "SQS DeleteMessageBatch failed: AccessDeniedException: No. (HTTP 400)");
    assert_int_equal(fake_count(&v.f), 1);
    assert_int_equal(en[0].status, SQS_ENTRY_FAILED);
    assert_string_equal(en[0].code, "AccessDeniedException");
    assert_false(v.c.last_error.retryable);
    env_stop(&v);
}

static void test_client_delete_invalid(void **state)
{
    struct sqs_entry en[1] = { { .receipt_handle = NULL } };
    struct env v;
    struct lerr e = { 0 };

    env_start(&v, NULL, 0);
    assert_int_equal(sqs_batch_call(&v.c, SQS_OP_DELETE, en, 1, &e), -1);
    assert_int_equal(e.kind, LERR_INVALID);
    assert_int_equal(en[0].status, SQS_ENTRY_FAILED);  /* nothing sent; the entry says why */
    assert_string_equal(en[0].code, "invalid");
    assert_string_equal(en[0].message, "SQS DeleteMessageBatch: entry 0 has no receipt handle");
    assert_int_equal(sqs_batch_call(&v.c, SQS_OP_DELETE, en, 0, &e), -1);
    assert_int_equal(e.kind, LERR_INVALID);
    assert_int_equal(fake_count(&v.f), 0);
    env_stop(&v);
}

/* SendMessage (lambdo send BODY) goes through the batch rounds as a batch of one: retried
 * as a whole, its answer's MD5s checked, and a mismatch named with the message's id. */
static void test_client_send(void **state)
{
    static const struct canned script[] = {
        E500,
        { 200, NULL, "{\"MessageId\":\"id-1\",\"MD5OfMessageBody\":\"" MD5_HELLO "\"}", 0 },
        { 200, NULL, "{\"MessageId\":\"id-2\",\"MD5OfMessageBody\":\"00000000000000000000000000000000\"}", 0 },
    };
    struct sqs_entry en = { .body = "hello", .body_len = 5 };
    struct env v;
    struct lerr e = { 0 };
    cJSON *j;

    env_start(&v, script, 3);
    assert_int_equal(sqs_batch_call(&v.c, SQS_OP_SEND, &en, 1, &e), 0);
    assert_int_equal(en.status, SQS_ENTRY_OK);
    assert_string_equal(en.sent_id, "id-1");
    assert_int_equal(fake_count(&v.f), 2);
    j = check_request(&v, 1, "SendMessage");
    assert_str(j, "MessageBody", "hello");
    assert_null(cJSON_GetObjectItemCaseSensitive(j, "Entries"));
    cJSON_Delete(j);
    assert_int_equal(sqs_batch_call(&v.c, SQS_OP_SEND, &en, 1, &e), -1);
    assert_int_equal(e.kind, LERR_HTTP);
    assert_string_equal(en.code, "MD5Mismatch");
    assert_contains(e.msg, "SQS SendMessage: message id-2: MD5Mismatch: MD5OfMessageBody 0000");
    assert_string_equal(v.c.last_error.code, "MD5Mismatch");
    assert_int_equal(fake_count(&v.f), 3);
    env_stop(&v);
}

static void test_client_change_visibility(void **state)
{
    static const struct canned script[] = {
        { 200, NULL, "{\"Successful\":[{\"Id\":\"m0\"}],\"Failed\":[{\"Id\":\"m1\",\"SenderFault\":true,"
                     "\"Code\":\"MessageNotInflight\",\"Message\":\"not in flight\"}]}", 0 },
    };
    struct sqs_entry en[2];
    char h[2][16], ids[2][16];
    struct env v;
    struct lerr e = { 0 };
    cJSON *j;
    const cJSON *arr;

    env_start(&v, script, 1);
    entries_init(en, 2, h, ids);
    assert_int_equal(sqs_batch_call(&v.c, SQS_OP_CHANGE_VISIBILITY, en, 2, &e), 0);
    assert_int_equal(en[0].status, SQS_ENTRY_OK);
    assert_int_equal(en[1].status, SQS_ENTRY_STALE);
    j = check_request(&v, 0, "ChangeMessageVisibilityBatch");
    arr = cJSON_GetObjectItemCaseSensitive(j, "Entries");
    assert_int_equal(cJSON_GetArraySize(arr), 2);
    assert_str(cJSON_GetArrayItem(arr, 1), "Id", "m1");
    assert_str(cJSON_GetArrayItem(arr, 1), "ReceiptHandle", "rh-1");
    assert_number(cJSON_GetArrayItem(arr, 0), "VisibilityTimeout", 0);
    assert_number(cJSON_GetArrayItem(arr, 1), "VisibilityTimeout", 30);
    cJSON_Delete(j);
    env_stop(&v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_receive_request),
        cmocka_unit_test(test_receive_request_invalid),
        cmocka_unit_test(test_batch_request),
        cmocka_unit_test(test_batch_request_ten),
        cmocka_unit_test(test_batch_request_invalid),
        cmocka_unit_test(test_receive_bodies),
        cmocka_unit_test(test_receive_answers),
        cmocka_unit_test(test_receive_group_id),
        cmocka_unit_test(test_receive_context),
        cmocka_unit_test(test_receive_context_batch),
        cmocka_unit_test(test_receive_ten),
        cmocka_unit_test(test_receive_malformed),
        cmocka_unit_test(test_receive_length_bound),
        cmocka_unit_test(test_receive_nesting),
        cmocka_unit_test(test_error_answers),
        cmocka_unit_test(test_error_long_fields),
        cmocka_unit_test(test_code_retryable),
        cmocka_unit_test(test_batch_answers),
        cmocka_unit_test(test_batch_answer_messages),
        cmocka_unit_test(test_backoff_bounds),
        cmocka_unit_test(test_backoff_seed),
        cmocka_unit_test(test_sleep),
        cmocka_unit_test(test_sleep_woken),
        cmocka_unit_test(test_client_receive),
        cmocka_unit_test(test_client_receive_retries),
        cmocka_unit_test(test_client_receive_gives_up),
        cmocka_unit_test(test_client_receive_not_retried),
        cmocka_unit_test(test_client_receive_error_header_only),
        cmocka_unit_test(test_client_receive_dropped),
        cmocka_unit_test(test_client_receive_malformed),
        cmocka_unit_test(test_client_receive_long_poll),
        cmocka_unit_test(test_client_receive_refused),
        cmocka_unit_test(test_client_cancel_wakes_backoff),
        cmocka_unit_test(test_client_delete_ok),
        cmocka_unit_test(test_client_delete_retries_entries),
        cmocka_unit_test(test_client_delete_sender_fault),
        cmocka_unit_test(test_client_delete_stale),
        cmocka_unit_test(test_client_delete_bounded),
        cmocka_unit_test(test_client_delete_not_reported),
        cmocka_unit_test(test_client_delete_whole_request),
        cmocka_unit_test(test_client_delete_invalid),
        cmocka_unit_test(test_client_change_visibility),
        cmocka_unit_test(test_client_send),
    };

    /* Retries and stale handles log warnings; the tests that check them turn them on. */
    log_setup(LOG_LEVEL_ERROR, 0);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
