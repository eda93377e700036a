/* fly: the preset table, base64, the create body (parsed back and checked field by field),
 * answer classification, Retry-After, the Authorization header and URL, and the create
 * call itself against a scripted HTTP server on 127.0.0.1 (region fallback, 429 retries,
 * giving up, cancel, and that the token never reaches a log line or an error); then
 * following a Machine: the exit-event parser and call classification (tables), and wait,
 * exit, stop and destroy against the scripted server, with the rate limiters. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cJSON.h"
#include "fly.h"
#include "log.h"

static void assert_has(const char *msg, const char *want)
{
    if (!strstr(msg, want))
        fail_msg("\"%s\" lacks \"%s\"", msg, want);
}

/* ---- presets ----------------------------------------------------------------------------- */

static void test_presets(void **state)
{
    static const struct preset want[] = {
        { "shared-cpu-1x", "shared", 1, 256, 0, NULL },
        { "shared-cpu-2x", "shared", 2, 512, 0, NULL },
        { "shared-cpu-4x", "shared", 4, 1024, 0, NULL },
        { "shared-cpu-6x", "shared", 6, 1536, 0, NULL },
        { "shared-cpu-8x", "shared", 8, 2048, 0, NULL },
        { "performance-1x", "performance", 1, 2048, 0, NULL },
        { "performance-2x", "performance", 2, 4096, 0, NULL },
        { "performance-4x", "performance", 4, 8192, 0, NULL },
        { "performance-6x", "performance", 6, 12288, 0, NULL },
        { "performance-8x", "performance", 8, 16384, 0, NULL },
        { "performance-10x", "performance", 10, 20480, 0, NULL },
        { "performance-12x", "performance", 12, 24576, 0, NULL },
        { "performance-14x", "performance", 14, 28672, 0, NULL },
        { "performance-16x", "performance", 16, 32768, 0, NULL },
        { "a100-40gb", "performance", 8, 32768, 1, "a100-pcie-40gb" },
        { "a100-80gb", "performance", 8, 32768, 1, "a100-sxm4-80gb" },
        { "l40s", "performance", 8, 32768, 1, "l40s" },
        { "a10", "performance", 8, 32768, 1, "a10" },
    };
    size_t n = sizeof want / sizeof want[0];

    for (size_t i = 0; i < n; i++) {
        const struct preset *p = preset_find(want[i].name);
        if (!p)
            fail_msg("%s not found", want[i].name);
        assert_string_equal(p->name, want[i].name);
        assert_string_equal(p->cpu_kind, want[i].cpu_kind);
        assert_int_equal(p->cpus, want[i].cpus);
        assert_int_equal(p->memory_mb, want[i].memory_mb);
        assert_int_equal(p->gpus, want[i].gpus);
        if (want[i].gpu_kind)
            assert_string_equal(p->gpu_kind, want[i].gpu_kind);
        else
            assert_null(p->gpu_kind);
        assert_ptr_equal(preset_at((unsigned)i), p);
    }
    assert_null(preset_at((unsigned)n));
    assert_null(preset_find("performance-3x"));
    assert_null(preset_find("Performance-2x"));
    assert_null(preset_find(""));
    assert_null(preset_find(NULL));
    assert_non_null(preset_find(PRESET_DEFAULT));
}

/* ---- base64 ------------------------------------------------------------------------------ */

static int b64_value(char c)
{
    const char *abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const char *p = c ? strchr(abc, c) : NULL;
    return p ? (int)(p - abc) : -1;
}

/* A strict decoder for the tests: padding required, nothing else accepted. */
static size_t b64_decode(const char *s, unsigned char *out)
{
    size_t n = strlen(s), o = 0;

    assert_int_equal(n % 4, 0);
    for (size_t i = 0; i < n; i += 4) {
        int a = b64_value(s[i]), b = b64_value(s[i + 1]);
        int c = s[i + 2] == '=' ? 0 : b64_value(s[i + 2]);
        int d = s[i + 3] == '=' ? 0 : b64_value(s[i + 3]);
        assert_true(a >= 0 && b >= 0 && c >= 0 && d >= 0);
        out[o++] = (unsigned char)(a << 2 | b >> 4);
        if (s[i + 2] != '=')
            out[o++] = (unsigned char)((b & 15) << 4 | c >> 2);
        if (s[i + 3] != '=')
            out[o++] = (unsigned char)((c & 3) << 6 | d);
        if (s[i + 2] == '=' || s[i + 3] == '=')
            assert_int_equal(i + 4, n);
    }
    return o;
}

/* ---- create body ------------------------------------------------------------------------- */

static cJSON *body_parse(const struct fly_machine_spec *spec, const char *region, char **text)
{
    struct lerr e = { 0 };
    size_t len = 0;
    cJSON *j;

    if (fly_create_body(spec, region, text, &len, &e) != 0)
        fail_msg("fly_create_body: %s", e.msg);
    assert_int_equal(strlen(*text), len);
    j = cJSON_ParseWithLength(*text, len);
    if (!j)
        fail_msg("not JSON: %s", *text);
    return j;
}

static cJSON *get(const cJSON *obj, const char *name)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!v)
        fail_msg("no \"%s\"", name);
    return v;
}

static const char *get_str(const cJSON *obj, const char *name)
{
    cJSON *v = get(obj, name);
    assert_true(cJSON_IsString(v));
    return v->valuestring;
}

/* obj has exactly these keys. */
static void assert_keys(const cJSON *obj, const char *const *keys)
{
    size_t want = 0;

    for (; keys[want]; want++)
        get(obj, keys[want]);
    assert_int_equal(cJSON_GetArraySize(obj), want);
}

/* The base64 of in[0..n) as the create body carries it: the events file's raw_value. */
static void events_base64(const void *in, size_t n, char *out, size_t cap)
{
    struct fly_machine_spec spec = { "img", preset_find("a10"), NULL, in, n, "g", NULL, 0,
                                     NULL, 0 };
    char *text;
    cJSON *j = body_parse(&spec, NULL, &text);
    const cJSON *file = cJSON_GetArrayItem(get(get(j, "config"), "files"), 0);

    assert_string_equal(get_str(file, "guest_path"), "/tmp/events.json");
    assert_true(strlen(get_str(file, "raw_value")) < cap);
    strcpy(out, get_str(file, "raw_value"));
    cJSON_Delete(j);
    free(text);
}

static void test_base64_rfc4648(void **state)
{
    static const char *const vec[][2] = {
        { "", "" },         { "f", "Zg==" },        { "fo", "Zm8=" },
        { "foo", "Zm9v" },  { "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" },
        { "foobar", "Zm9vYmFy" },
    };
    char out[64];

    for (size_t i = 0; i < sizeof vec / sizeof vec[0]; i++) {
        memset(out, 'X', sizeof out);
        events_base64(vec[i][0], strlen(vec[i][0]), out, sizeof out);
        assert_string_equal(out, vec[i][1]);
    }
}

static void test_base64_every_byte(void **state)
{
    unsigned char in[259], back[259];
    char out[400];

    for (size_t i = 0; i < sizeof in; i++)
        in[i] = (unsigned char)(255 - i * 7);
    /* every length from 0 to 259, so every padding case and every byte value meet */
    for (size_t n = 0; n <= sizeof in; n++) {
        events_base64(in, n, out, sizeof out);
        assert_int_equal(strlen(out), (n + 2) / 3 * 4);
        assert_int_equal(b64_decode(out, back), n);
        assert_memory_equal(back, in, n);
    }
    events_base64("\xff\xff\xff\x00\x00\x00\xfb\xff", 8, out, sizeof out);
    assert_string_equal(out, "////AAAA+/8=");
}

/* not valid JSON on purpose: the file goes through as bytes, whatever they are */
static const char events[] =
    "[{\"n\":12345678901234567890.123456789e-5},\"\\u00e9\xc3\xa9\",\0\xff]";

static void test_body_shape(void **state)
{
    static const char *const top_keys[] = { "region", "config", NULL };
    static const char *const config_keys[] = { "image", "guest", "env", "files", "auto_destroy",
                                               "restart", "metadata", NULL };
    struct fly_machine_spec spec = { "registry.fly.io/app:v1", preset_find("shared-cpu-2x"), NULL,
                                     events, sizeof events - 1, "0123456789abcdef", NULL, 0,
                                         NULL, 0 };
    char *text;
    cJSON *j = body_parse(&spec, "iad", &text), *config, *guest, *files, *file;
    unsigned char back[sizeof events];

    assert_keys(j, top_keys);
    assert_string_equal(get_str(j, "region"), "iad");
    config = get(j, "config");
    assert_keys(config, config_keys);
    assert_null(cJSON_GetObjectItemCaseSensitive(config, "size"));
    assert_null(cJSON_GetObjectItemCaseSensitive(config, "init"));
    assert_string_equal(get_str(config, "image"), "registry.fly.io/app:v1");

    guest = get(config, "guest");
    assert_string_equal(get_str(guest, "cpu_kind"), "shared");
    assert_int_equal(get(guest, "cpus")->valueint, 2);
    assert_int_equal(get(guest, "memory_mb")->valueint, 512);
    assert_null(cJSON_GetObjectItemCaseSensitive(guest, "gpus"));
    assert_null(cJSON_GetObjectItemCaseSensitive(guest, "gpu_kind"));

    /* no context file given: no second file, no EVENTS_META_PATH */
    assert_int_equal(cJSON_GetArraySize(get(config, "env")), 1);
    assert_string_equal(get_str(get(config, "env"), "EVENTS_PATH"), "/tmp/events.json");

    files = get(config, "files");
    assert_true(cJSON_IsArray(files));
    assert_int_equal(cJSON_GetArraySize(files), 1);
    file = cJSON_GetArrayItem(files, 0);
    assert_int_equal(cJSON_GetArraySize(file), 2);
    assert_string_equal(get_str(file, "guest_path"), "/tmp/events.json");
    assert_int_equal(b64_decode(get_str(file, "raw_value"), back), sizeof events - 1);
    assert_memory_equal(back, events, sizeof events - 1);

    assert_true(cJSON_IsTrue(get(config, "auto_destroy")));
    assert_int_equal(cJSON_GetArraySize(get(config, "restart")), 1);
    assert_string_equal(get_str(get(config, "restart"), "policy"), "no");
    assert_int_equal(cJSON_GetArraySize(get(config, "metadata")), 2);
    assert_string_equal(get_str(get(config, "metadata"), "managed_by"), "lambdo");
    assert_string_equal(get_str(get(config, "metadata"), "lambdo_group"), "0123456789abcdef");
    cJSON_Delete(j);
    free(text);
}

/* The whole text once, so that a change of shape is a deliberate one. */
static void test_body_exact(void **state)
{
    struct fly_machine_spec spec = { "alpine", preset_find("a100-40gb"), "[ \"sh\", \"-c\" ]",
                                     "[1]", 3, "g1", "[{}]", 4, NULL, 0 };
    struct lerr e = { 0 };
    char *text;
    size_t len;

    assert_int_equal(fly_create_body(&spec, "ord", &text, &len, &e), 0);
    assert_string_equal(text,
        "{\"region\":\"ord\",\"config\":{\"image\":\"alpine\","
        "\"guest\":{\"cpu_kind\":\"performance\",\"cpus\":8,\"memory_mb\":32768,"
        "\"gpus\":1,\"gpu_kind\":\"a100-pcie-40gb\"},"
        "\"env\":{\"EVENTS_PATH\":\"/tmp/events.json\","
        "\"EVENTS_META_PATH\":\"/tmp/events.meta.json\"},"
        "\"files\":[{\"guest_path\":\"/tmp/events.json\",\"raw_value\":\"WzFd\"},"
        "{\"guest_path\":\"/tmp/events.meta.json\",\"raw_value\":\"W3t9XQ==\"}],"
        "\"auto_destroy\":true,\"restart\":{\"policy\":\"no\"},"
        "\"init\":{\"cmd\":[\"sh\",\"-c\"]},"
        "\"metadata\":{\"managed_by\":\"lambdo\",\"lambdo_group\":\"g1\"}}}");
    free(text);
}

static void test_body_guest_every_preset(void **state)
{
    for (unsigned i = 0; preset_at(i); i++) {
        const struct preset *p = preset_at(i);
        struct fly_machine_spec spec = { "img", p, NULL, "[]", 2, "g", NULL, 0, NULL, 0 };
        char *text;
        cJSON *j = body_parse(&spec, NULL, &text), *guest;

        assert_null(cJSON_GetObjectItemCaseSensitive(j, "region"));
        guest = get(get(j, "config"), "guest");
        assert_string_equal(get_str(guest, "cpu_kind"), p->cpu_kind);
        assert_int_equal(get(guest, "cpus")->valueint, p->cpus);
        assert_int_equal(get(guest, "memory_mb")->valueint, p->memory_mb);
        if (p->gpus) {
            assert_int_equal(get(guest, "gpus")->valueint, p->gpus);
            assert_string_equal(get_str(guest, "gpu_kind"), p->gpu_kind);
        } else {
            assert_int_equal(cJSON_GetArraySize(guest), 3);
        }
        cJSON_Delete(j);
        free(text);
    }
}

static void test_body_command(void **state)
{
    static const char *const cmds[] = {
        "[\"node\",\"index.js\"]",
        "  [ \"node\" ,\n \"index.js\" ] ",
        "[\"\\u006eode\",\"index\\u002ejs\"]",
    };

    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        struct fly_machine_spec spec = { "img", preset_find("performance-1x"), cmds[i], "[]", 2,
                                         "g", NULL, 0, NULL, 0 };
        char *text;
        cJSON *j = body_parse(&spec, "iad", &text), *init, *cmd;

        init = get(get(j, "config"), "init");
        assert_int_equal(cJSON_GetArraySize(init), 1);
        cmd = get(init, "cmd");
        assert_int_equal(cJSON_GetArraySize(cmd), 2);
        assert_string_equal(cJSON_GetArrayItem(cmd, 0)->valuestring, "node");
        assert_string_equal(cJSON_GetArrayItem(cmd, 1)->valuestring, "index.js");
        assert_has(text, "\"init\":{\"cmd\":[\"node\",\"index.js\"]}");
        cJSON_Delete(j);
        free(text);
    }
}

static void test_body_escaping(void **state)
{
    static const char *const odd[] = {
        "we\"ird\\image:tag",
        "tab\there\nnewline\x01\x1f",
        "caf\xc3\xa9/\xe2\x82\xac",
        "</script>",
    };

    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        struct fly_machine_spec spec = { odd[i], preset_find("l40s"), "[\"a\\\"b\", \"\\n\"]",
                                         "{}", 2, odd[i], NULL, 0, NULL, 0 };
        char *text;
        cJSON *j = body_parse(&spec, odd[i], &text), *config = get(j, "config"), *cmd;

        assert_string_equal(get_str(j, "region"), odd[i]);
        assert_string_equal(get_str(config, "image"), odd[i]);
        assert_string_equal(get_str(get(config, "metadata"), "lambdo_group"), odd[i]);
        cmd = get(get(config, "init"), "cmd");
        assert_string_equal(cJSON_GetArrayItem(cmd, 0)->valuestring, "a\"b");
        assert_string_equal(cJSON_GetArrayItem(cmd, 1)->valuestring, "\n");
        for (const char *p = text; *p; p++)
            assert_true((unsigned char)*p >= 0x20);
        cJSON_Delete(j);
        free(text);
    }
}

static void test_body_refused(void **state)
{
    struct fly_machine_spec ok = { "img", preset_find("a10"), NULL, "[]", 2, "g", NULL, 0,
        NULL, 0 };
    struct fly_machine_spec s;
    struct lerr e = { 0 };
    char *text = (char *)1;
    size_t len;

    s = ok;
    s.command = "[\"a\", 1]";
    assert_int_equal(fly_create_body(&s, "iad", &text, &len, &e), -1);
    assert_int_equal(e.kind, LERR_INVALID);
    assert_has(e.msg, "command element 2 is not a string");
    assert_null(text);
    s.command = "{\"a\":\"b\"}";
    assert_int_equal(fly_create_body(&s, "iad", &text, &len, &e), -1);
    assert_has(e.msg, "command is not a JSON array of strings");
    s.command = "not json";
    assert_int_equal(fly_create_body(&s, "iad", &text, &len, &e), -1);
    s = ok;
    s.preset = NULL;
    assert_int_equal(fly_create_body(&s, "iad", &text, &len, &e), -1);
    assert_int_equal(e.kind, LERR_INVALID);
    s = ok;
    s.image = "";
    assert_int_equal(fly_create_body(&s, "iad", &text, &len, &e), -1);
}

static void test_body_large_events(void **state)
{
    size_t n = 3 * 1024 * 1024 + 1;
    char *ev = malloc(n), *text;
    unsigned char *back = malloc(n);
    struct fly_machine_spec spec = { "img", preset_find("a10"), NULL, ev, n, "g", NULL, 0,
        NULL, 0 };
    cJSON *j, *file;

    for (size_t i = 0; i < n; i++)
        ev[i] = (char)(i * 131 + 7);
    j = body_parse(&spec, "iad", &text);
    file = cJSON_GetArrayItem(get(get(j, "config"), "files"), 0);
    assert_int_equal(b64_decode(get_str(file, "raw_value"), back), n);
    assert_memory_equal(back, ev, n);
    cJSON_Delete(j);
    free(text);
    free(ev);
    free(back);
}

/* ---- classification ---------------------------------------------------------------------- */

struct answer_case {
    int status;
    const char *body;
    const char *retry_after;
    enum fly_call_outcome outcome;
    int retry_after_ms;
    const char *error;   /* exact a.error */
    const char *id;      /* for created: exact id, region, instance_id */
    const char *region;
    const char *instance;
};

#define NO_ID "the answer names no usable Machine id"
#define LONG_ID_FITS "0123456789abcdef0123456789abcdef0123456789abcdef0123456789ab" /* 60 */
#define LONG_ID LONG_ID_FITS "f"

static const struct answer_case answers[] = {
    { 200, "{\"id\":\"148ed193b95948\",\"region\":\"iad\",\"instance_id\":\"01H3JK\",\"state\":\"created\"}",
      NULL, FLY_CALL_OK, -1, "", "148ed193b95948", "iad", "01H3JK" },
    { 201, "{\"id\":\"m2\",\"region\":\"ord\"}", NULL, FLY_CALL_OK, -1, "", "m2", "ord", "" },
    /* a 2xx without an id lambdo can follow is a failed create, never a Machine "" */
    { 200, "not json", NULL, FLY_CALL_FAILED, -1, NO_ID, "", "", "" },
    { 200, "", NULL, FLY_CALL_FAILED, -1, NO_ID, "", "", "" },
    { 202, "{\"id\":7}", NULL, FLY_CALL_FAILED, -1, NO_ID, "", "", "" },
    { 200, "{\"region\":\"iad\",\"instance_id\":\"01H3JK\"}", NULL, FLY_CALL_FAILED, -1, NO_ID, "",
      "", "" },
    { 201, "{\"id\":\"\",\"region\":\"iad\"}", NULL, FLY_CALL_FAILED, -1, NO_ID, "", "", "" },
    { 200, "{\"id\":\"  \"}", NULL, FLY_CALL_FAILED, -1, NO_ID, "", "", "" },
    { 200, "{\"id\":\"m\\n\"}", NULL, FLY_CALL_FAILED, -1, NO_ID, "", "", "" },
    { 200, "{\"id\":\"caf\\u00e9\"}", NULL, FLY_CALL_FAILED, -1, NO_ID, "", "", "" },
    { 200, "{\"id\":\"" LONG_ID "\"}", NULL, FLY_CALL_FAILED, -1, NO_ID, "", "", "" },
    { 200, "{\"id\":\"" LONG_ID_FITS "\"}", NULL, FLY_CALL_OK, -1, "", LONG_ID_FITS, "", "" },
    /* only the top level counts, wherever the id is; strings (escapes too) are skipped */
    { 201, "{\"config\":{\"id\":\"inner\",\"s\":\"q\\\"id\\\":\\\"fake\\\\\"},\"id\":\"outer\","
      "\"region\":\"ams\",\"e\":[1,{\"id\":\"x\"}]}", NULL, FLY_CALL_OK, -1, "", "outer", "ams", "" },
    { 200, "{\"a\":1}\"id\":\"m1\"}", NULL, FLY_CALL_FAILED, -1, NO_ID, "", "", "" },
    { 200, "{\"id\":\"m1", NULL, FLY_CALL_FAILED, -1, NO_ID, "", "", "" },
    { 200, "{\"id\":\"m1\"", NULL, FLY_CALL_FAILED, -1, NO_ID, "", "", "" },
    { 200, "[{\"id\":\"m1\"}]", NULL, FLY_CALL_FAILED, -1, NO_ID, "", "", "" },
    { 503, "{\"error\":\"insufficient capacity\",\"status\":\"insufficient_capacity\"}", NULL,
      FLY_CALL_RETRY_LATER, -1, "insufficient capacity", NULL, NULL, NULL },
    { 503, "", NULL, FLY_CALL_RETRY_LATER, -1, "", NULL, NULL, NULL },
    { 500, "oops", NULL, FLY_CALL_RETRY_LATER, -1, "oops", NULL, NULL, NULL },
    { 502, "<html>\r\n  <body>Bad   gateway</body>\n</html>\n", NULL, FLY_CALL_RETRY_LATER, -1,
      "<html> <body>Bad gateway</body> </html>", NULL, NULL, NULL },
    { 504, "{\"error\":\"upstream timeout\"}", NULL, FLY_CALL_RETRY_LATER, -1, "upstream timeout",
      NULL, NULL, NULL },
    { 408, "", NULL, FLY_CALL_RETRY_LATER, -1, "", NULL, NULL, NULL },
    { 412, "{\"error\":\"insufficient resources to create new machine with existing volume\"}",
      NULL, FLY_CALL_RETRY_LATER, -1, "insufficient resources to create new machine with existing volume",
      NULL, NULL, NULL },
    { 409, "{\"error\":\"aborted: could not reserve resource for machine: Insufficient memory available to fulfill request\"}",
      NULL, FLY_CALL_RETRY_LATER, -1,
      "aborted: could not reserve resource for machine: Insufficient memory available to fulfill request",
      NULL, NULL, NULL },
    { 422, "{\"error\":\"no room\",\"status\":\"insufficient_capacity\"}", NULL, FLY_CALL_RETRY_LATER,
      -1, "no room", NULL, NULL, NULL },
    { 409, "{\"error\":\"machine name already taken\"}", NULL, FLY_CALL_FAILED, -1,
      "machine name already taken", NULL, NULL, NULL },
    { 403, "{\"error\":\"insufficient permissions\"}", NULL, FLY_CALL_FAILED, -1,
      "insufficient permissions", NULL, NULL, NULL },
    { 400, "{\"error\":\"invalid config:\\n image is required\"}", NULL, FLY_CALL_FAILED, -1,
      "invalid config: image is required", NULL, NULL, NULL },
    { 401, "{\"error\":\"Authenticate: token validation error\"}", NULL, FLY_CALL_FAILED, -1,
      "Authenticate: token validation error", NULL, NULL, NULL },
    { 404, "{\"error\":\"app not found\"}", NULL, FLY_CALL_FAILED, -1, "app not found", NULL, NULL,
      NULL },
    { 422, "{\"error\":\"caf\\u00e9 \\u0007bell\"}", NULL, FLY_CALL_FAILED, -1, "caf?? bell", NULL,
      NULL, NULL },
    { 422, "{\"error\":5,\"x\":1}", NULL, FLY_CALL_FAILED, -1, "{\"error\":5,\"x\":1}", NULL, NULL,
      NULL },
    { 400, NULL, NULL, FLY_CALL_FAILED, -1, "", NULL, NULL, NULL },
    { 301, "", NULL, FLY_CALL_FAILED, -1, "", NULL, NULL, NULL },
    { 429, "{\"error\":\"rate limited\"}", "3", FLY_CALL_RATE_LIMITED, 3000, "rate limited", NULL, NULL,
      NULL },
    { 429, "", "0", FLY_CALL_RATE_LIMITED, 0, "", NULL, NULL, NULL },
    { 429, "", NULL, FLY_CALL_RATE_LIMITED, -1, "", NULL, NULL, NULL },
    { 429, "", "Wed, 21 Oct 2015 07:28:00 GMT", FLY_CALL_RATE_LIMITED, -1, "", NULL, NULL, NULL },
    { 429, "", "99999999999999999999999", FLY_CALL_RATE_LIMITED, 30000, "", NULL, NULL, NULL },
};

static void test_classify(void **state)
{
    for (size_t i = 0; i < sizeof answers / sizeof answers[0]; i++) {
        const struct answer_case *c = &answers[i];
        struct fly_call_result a;
        struct fly_machine m;

        fly_classify(c->status, c->body, c->body ? strlen(c->body) : 0, c->retry_after,
                     c->retry_after ? strlen(c->retry_after) : 0, &m, &a);
        if (a.outcome != c->outcome)
            fail_msg("case %zu (HTTP %d): outcome %d, want %d", i, c->status, a.outcome,
                     c->outcome);
        assert_int_equal(a.retry_after_ms, c->retry_after_ms);
        assert_int_equal(m.status, c->status);
        if (strcmp(a.error, c->error) != 0)
            fail_msg("case %zu: error \"%s\", want \"%s\"", i, a.error, c->error);
        if (c->id) {
            assert_string_equal(m.id, c->id);
            assert_string_equal(m.region, c->region);
            assert_string_equal(m.instance_id, c->instance);
        }
    }
}

static void test_classify_long_error(void **state)
{
    char body[2048], want[256];
    struct fly_call_result a;
    struct fly_machine m;
    size_t n;

    n = (size_t)snprintf(body, sizeof body, "{\"error\":\"");
    for (int i = 0; i < 500; i++)
        body[n++] = (char)('a' + i % 26);
    n += (size_t)snprintf(body + n, sizeof body - n, "\"}");
    fly_classify(422, body, n, NULL, 0, &m, &a);
    assert_int_equal(a.outcome, FLY_CALL_FAILED);
    assert_true(strlen(a.error) < sizeof a.error);
    assert_true(strlen(a.error) > 150);
    memcpy(want, body + 10, strlen(a.error) - 3);
    memcpy(want + strlen(a.error) - 3, "...", 4);
    assert_string_equal(a.error, want);

    /* the longest error that fits is not marked as cut; one byte more is */
    memset(want, 'x', sizeof want);
    want[sizeof a.error - 4] = '\0';
    n = (size_t)snprintf(body, sizeof body, "{\"error\":\"%s\"}", want);
    fly_classify(400, body, n, NULL, 0, &m, &a);
    assert_string_equal(a.error, want);
    want[sizeof a.error - 4] = 'x';
    want[sizeof a.error - 3] = '\0';
    n = (size_t)snprintf(body, sizeof body, "{\"error\":\"%s\"}", want);
    fly_classify(400, body, n, NULL, 0, &m, &a);
    assert_int_equal(strlen(a.error), sizeof a.error - 1);
    assert_string_equal(a.error + sizeof a.error - 4, "...");
}

/* Retry-After as a 429's classification reads it. */
static int retry_after(const char *v, size_t len)
{
    struct fly_call_result r;

    fly_classify(429, NULL, 0, v, len, NULL, &r);
    assert_int_equal(r.outcome, FLY_CALL_RATE_LIMITED);
    return r.retry_after_ms;
}

static void test_retry_after(void **state)
{
    static const struct { const char *v; int ms; } cases[] = {
        { "0", 0 },       { "1", 1000 },     { "7", 7000 },       { " 7 ", 7000 },
        { "\t12", 12000 }, { "29", 29000 },   { "30", 30000 },     { "31", 30000 },
        { "86400", 30000 }, { "99999999999999999999999999", 30000 }, { "007", 7000 },
        { "18446744073709551621", 30000 },  /* 2^64 + 5: no wrap-around to 5 s */
        { "", -1 },       { "  ", -1 },      { "-1", -1 },        { "1.5", -1 },
        { "+3", -1 },     { "3s", -1 },      { "abc", -1 },       { "1 2", -1 },
        { "Wed, 21 Oct 2015 07:28:00 GMT", -1 },
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (retry_after(cases[i].v, strlen(cases[i].v)) != cases[i].ms)
            fail_msg("\"%s\": %d, want %d", cases[i].v,
                     retry_after(cases[i].v, strlen(cases[i].v)), cases[i].ms);
    assert_int_equal(retry_after(NULL, 0), -1);
    /* the length counts, not a NUL */
    assert_int_equal(retry_after("12x", 2), 12000);
}

/* ---- Authorization and URL --------------------------------------------------------------- */

static void test_machines_url(void **state)
{
    static const char *const cases[][3] = {
        { "https://api.machines.dev", "my-app", "/v1/apps/my-app/machines" },
        { "https://api.machines.dev/", "my-app", "/v1/apps/my-app/machines" },
        { "http://_api.internal:4280", "a", "/v1/apps/a/machines" },
        { "http://127.0.0.1:4280/prefix", "a", "/prefix/v1/apps/a/machines" },
        { "http://127.0.0.1:4280/prefix/", "a", "/prefix/v1/apps/a/machines" },
        { "http://h/a/b//", "x_y.z~", "/a/b/v1/apps/x_y.z~/machines" },
        { "http://h", "a b/c?d%", "/v1/apps/a%20b%2Fc%3Fd%25/machines" },
    };
    struct lerr e = { 0 };
    struct url base, u;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(url_parse(cases[i][0], &base, &e), 0);
        assert_int_equal(fly_app_url(&base, cases[i][1], "/machines", &u, &e), 0);
        assert_string_equal(u.path, cases[i][2]);
        assert_string_equal(u.host, base.host);
        assert_string_equal(u.authority, base.authority);
        assert_int_equal(u.port, base.port);
        assert_int_equal(u.tls, base.tls);
    }
    assert_int_equal(url_parse("http://h/p?x=1", &base, &e), 0);
    assert_int_equal(fly_app_url(&base, "a", "/machines", &u, &e), -1);
    assert_has(e.msg, "query");
    assert_int_equal(url_parse("http://h", &base, &e), 0);
    assert_int_equal(fly_app_url(&base, "", "/machines", &u, &e), -1);
    assert_int_equal(e.kind, LERR_INVALID);
    memset(base.path, 'p', sizeof base.path - 1);
    base.path[0] = '/';
    base.path[sizeof base.path - 1] = '\0';
    assert_int_equal(fly_app_url(&base, "a", "/machines", &u, &e), -1);
    assert_has(e.msg, "too long");
}

/* ---- following a Machine: pure parts ------------------------------------------------------ */

static void test_machine_url(void **state)
{
    static const struct { const char *base, *id, *action, *query, *path; } cases[] = {
        { "https://api.machines.dev", "148ed193b95948", NULL, NULL,
          "/v1/apps/my-app/machines/148ed193b95948" },
        { "http://h:4280/prefix/", "m1", "wait", "state=stopped&timeout=60",
          "/prefix/v1/apps/my-app/machines/m1/wait?state=stopped&timeout=60" },
        { "http://h", "m1", "stop", NULL, "/v1/apps/my-app/machines/m1/stop" },
        { "http://h", "m1", NULL, "force=true", "/v1/apps/my-app/machines/m1?force=true" },
        { "http://h", "a/../b?c#d", "events", NULL,
          "/v1/apps/my-app/machines/a%2F..%2Fb%3Fc%23d/events" },
    };
    struct lerr e = { 0 };
    struct url base, u;
    char id[200];

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(url_parse(cases[i].base, &base, &e), 0);
        assert_int_equal(fly_machine_url(&base, "my-app", cases[i].id, cases[i].action,
                                         cases[i].query, &u, &e), 0);
        assert_string_equal(u.path, cases[i].path);
        assert_string_equal(u.authority, base.authority);
    }
    assert_int_equal(url_parse("http://h", &base, &e), 0);
    assert_int_equal(fly_machine_url(&base, "a", "", NULL, NULL, &u, &e), -1);
    assert_int_equal(e.kind, LERR_INVALID);
    assert_int_equal(fly_machine_url(&base, "a", NULL, NULL, NULL, &u, &e), -1);
    memset(id, 'x', sizeof id - 1);
    id[sizeof id - 1] = '\0';
    assert_int_equal(fly_machine_url(&base, "a", id, NULL, NULL, &u, &e), -1);
    assert_has(e.msg, "too long");
    assert_int_equal(fly_machine_url(&base, "", "m1", NULL, NULL, &u, &e), -1);
    assert_has(e.msg, "app name is empty");
}

struct call_case {
    int status;
    const char *body;
    const char *retry_after;
    enum fly_call_outcome outcome;
    int retry_after_ms;
    const char *error;
};

static const struct call_case calls[] = {
    { 200, "{\"ok\":true}", NULL, FLY_CALL_OK, -1, "" },
    { 200, "", NULL, FLY_CALL_OK, -1, "" },
    { 204, NULL, NULL, FLY_CALL_OK, -1, "" },
    { 201, "{\"error\":\"not an error on a 2xx\"}", NULL, FLY_CALL_OK, -1, "" },
    { 408, "{\"error\":\"deadline_exceeded: machine did not reach state stopped in 60s\"}",
      NULL, FLY_CALL_TIMED_OUT, -1,
      "deadline_exceeded: machine did not reach state stopped in 60s" },
    { 408, "", NULL, FLY_CALL_TIMED_OUT, -1, "" },
    { 404, "{\"error\":\"machine not found\"}", NULL, FLY_CALL_GONE, -1, "machine not found" },
    { 404, "404 page not found\n", NULL, FLY_CALL_GONE, -1, "404 page not found" },
    { 410, "", NULL, FLY_CALL_GONE, -1, "" },
    { 400, "{\"error\":\"machine 148ed193b95948 is destroyed\"}", NULL, FLY_CALL_GONE, -1,
      "machine 148ed193b95948 is destroyed" },
    { 412, "{\"error\":\"failed_precondition: machine not found\"}", NULL, FLY_CALL_GONE, -1,
      "failed_precondition: machine not found" },
    { 422, "{\"error\":\"Machine Destroyed\"}", NULL, FLY_CALL_GONE, -1, "Machine Destroyed" },
    { 400, "{\"error\":\"invalid state \\\"exploded\\\"\"}", NULL, FLY_CALL_FAILED, -1,
      "invalid state \"exploded\"" },
    { 401, "{\"error\":\"Authenticate: token validation error\"}", NULL, FLY_CALL_FAILED, -1,
      "Authenticate: token validation error" },
    { 403, "", NULL, FLY_CALL_FAILED, -1, "" },
    { 409, "{\"error\":\"lease currently held\"}", NULL, FLY_CALL_FAILED, -1,
      "lease currently held" },
    { 301, "", NULL, FLY_CALL_FAILED, -1, "" },
    { 100, NULL, NULL, FLY_CALL_FAILED, -1, "" },
    { 0, NULL, NULL, FLY_CALL_FAILED, -1, "" },
    { 429, "{\"error\":\"rate limit exceeded\"}", "2", FLY_CALL_RATE_LIMITED, 2000,
      "rate limit exceeded" },
    { 429, "", NULL, FLY_CALL_RATE_LIMITED, -1, "" },
    { 429, "", "Wed, 21 Oct 2015 07:28:00 GMT", FLY_CALL_RATE_LIMITED, -1, "" },
    { 429, "", "600", FLY_CALL_RATE_LIMITED, FLY_RETRY_AFTER_MAX_MS, "" },
    { 500, "{\"error\":\"internal\"}", NULL, FLY_CALL_RETRY_LATER, -1, "internal" },
    { 502, "<html>bad gateway</html>", NULL, FLY_CALL_RETRY_LATER, -1,
      "<html>bad gateway</html>" },
    { 503, "{\"error\":\"machine destroyed\"}", NULL, FLY_CALL_RETRY_LATER, -1,
      "machine destroyed" },
    { 504, "", NULL, FLY_CALL_RETRY_LATER, -1, "" },
};

static void test_classify_call(void **state)
{
    for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) {
        const struct call_case *c = &calls[i];
        struct fly_call_result r;

        memset(&r, 0x5A, sizeof r);
        fly_classify(c->status, c->body, c->body ? strlen(c->body) : 0, c->retry_after,
                     c->retry_after ? strlen(c->retry_after) : 0, NULL, &r);
        if (r.outcome != c->outcome)
            fail_msg("case %zu (HTTP %d): outcome %d, want %d", i, c->status, r.outcome,
                     c->outcome);
        assert_int_equal(r.status, c->status);
        assert_int_equal(r.retry_after_ms, c->retry_after_ms);
        if (strcmp(r.error, c->error) != 0)
            fail_msg("case %zu: error \"%s\", want \"%s\"", i, r.error, c->error);
    }
}

/* A Machine object as Machines_show gives it, with these events. */
#define MACHINE(events) \
    "{\"id\":\"m1\",\"state\":\"destroyed\",\"region\":\"iad\",\"events\":" events "}"
#define EXIT_EV(ts, fields) \
    "{\"type\":\"exit\",\"status\":\"stopped\",\"source\":\"flyd\",\"timestamp\":" #ts "," \
    "\"request\":{\"exit_event\":{" fields "},\"restart_count\":0}}"
#define OTHER_EV(type, ts) "{\"type\":\"" type "\",\"status\":\"x\",\"timestamp\":" #ts "}"

struct exit_case {
    const char *name;
    const char *json;
    int rc;             /* -1: LERR_MALFORMED */
    int exited, known, code, oom;
};

static const struct exit_case exits[] = {
    { "clean exit 0",
      MACHINE("[" OTHER_EV("destroy", 1700000003000) "," EXIT_EV(1700000002000,
              "\"requested_stop\":false,\"restarting\":false,\"guest_exit_code\":0,"
              "\"guest_signal\":-1,\"guest_error\":\"\",\"exit_code\":0,\"signal\":-1,"
              "\"error\":\"\",\"oom_killed\":false,\"exited_at\":\"2026-11-27T20:00:02.123Z\"")
              "," OTHER_EV("start", 1700000001000) "," OTHER_EV("launch", 1700000000000) "]"),
      0, 1, 1, 0, 0 },
    { "exit 1",
      MACHINE("[" EXIT_EV(5, "\"exit_code\":1,\"oom_killed\":false") "]"),
      0, 1, 1, 1, 0 },
    { "OOM kill, 137",
      MACHINE("[" EXIT_EV(5, "\"exit_code\":137,\"oom_killed\":true,\"signal\":9") "]"),
      0, 1, 1, 137, 1 },
    { "requested stop",
      MACHINE("[" EXIT_EV(5, "\"exit_code\":0,\"requested_stop\":true") "]"),
      0, 1, 1, 0, 0 },
    { "latest of several wins, wherever it is in the list",
      MACHINE("[" EXIT_EV(1000, "\"exit_code\":0") "," OTHER_EV("start", 2500) ","
              EXIT_EV(3000, "\"exit_code\":42") "," EXIT_EV(2000, "\"exit_code\":7") "]"),
      0, 1, 1, 42, 0 },
    { "equal timestamps: the first listed (Fly lists newest first)",
      MACHINE("[" EXIT_EV(9, "\"exit_code\":3") "," EXIT_EV(9, "\"exit_code\":4") "]"),
      0, 1, 1, 3, 0 },
    { "an exit without a timestamp is older than one with",
      MACHINE("[{\"type\":\"exit\",\"request\":{\"exit_event\":{\"exit_code\":5}}},"
              EXIT_EV(1, "\"exit_code\":6") "]"),
      0, 1, 1, 6, 0 },
    { "no exit event yet",
      MACHINE("[" OTHER_EV("start", 2) "," OTHER_EV("launch", 1) "]"),
      0, 0, 0, 0, 0 },
    { "no events at all", MACHINE("[]"), 0, 0, 0, 0, 0 },
    { "events not an array", MACHINE("{\"type\":\"exit\"}"),
      0, 0, 0, 0, 0 },
    { "events null", MACHINE("null"), 0, 0, 0, 0, 0 },
    { "no events field", "{\"id\":\"m1\",\"region\":\"ord\"}",
      0, 0, 0, 0, 0 },
    { "an event list (Machines_list_events)",
      "[" OTHER_EV("destroy", 3) "," EXIT_EV(2, "\"exit_code\":2") "]",
      0, 1, 1, 2, 0 },
    { "request as a JSON text, as in the spec's example",
      "[{\"type\":\"exit\",\"timestamp\":4,"
      "\"request\":\"{\\\"exit_event\\\":{\\\"exit_code\\\":12}}\"}]",
      0, 1, 1, 12, 0 },
    { "fields straight in the request",
      "[{\"type\":\"exit\",\"timestamp\":4,\"request\":{\"exit_code\":13}}]",
      0, 1, 1, 13, 0 },
    { "exit_code -1: guest_exit_code",
      "[" EXIT_EV(4, "\"exit_code\":-1,\"guest_exit_code\":3") "]",
      0, 1, 1, 3, 0 },
    { "no usable code",
      "[" EXIT_EV(4, "\"exit_code\":-1,\"signal\":15,\"oom_killed\":true") "]",
      0, 1, 0, 0, 1 },
    { "exit_code a string", "[" EXIT_EV(4, "\"exit_code\":\"1\"") "]",
      0, 1, 0, 0, 0 },
    { "exit_code 1.5", "[" EXIT_EV(4, "\"exit_code\":1.5") "]",
      0, 1, 0, 0, 0 },
    { "exit_code 256", "[" EXIT_EV(4, "\"exit_code\":256") "]",
      0, 1, 0, 0, 0 },
    { "exit_code 1e999", "[" EXIT_EV(4, "\"exit_code\":1e999") "]",
      0, 1, 0, 0, 0 },
    { "oom_killed not a boolean", "[" EXIT_EV(4, "\"exit_code\":1,\"oom_killed\":1") "]",
      0, 1, 1, 1, 0 },
    { "no exit_event", "[{\"type\":\"exit\",\"timestamp\":4}]",
      0, 1, 0, 0, 0 },
    { "odd entries are skipped",
      "[1,null,\"exit\",[],{\"type\":7}," EXIT_EV(4, "\"exit_code\":8") "]",
      0, 1, 1, 8, 0 },
    { "negative timestamp", "[" EXIT_EV(-4, "\"exit_code\":8") "]",
      0, 1, 1, 8, 0 },
    { "long region, odd bytes",
      "{\"region\":\"0123456789abcdefghijklmnopqrstuvwxyz\",\"state\":\"st\\u0000op\\nped\"}",
      0, 0, 0, 0, 0 },
    { "malformed", "{\"events\":[", -1, 0, 0, 0, 0 },
    { "not JSON", "<html>", -1, 0, 0, 0, 0 },
    { "empty", "", -1, 0, 0, 0, 0 },
    { "a string", "\"exit\"", -1, 0, 0, 0, 0 },
    { "a number", "137", -1, 0, 0, 0, 0 },
};

static void test_parse_exit(void **state)
{
    for (size_t i = 0; i < sizeof exits / sizeof exits[0]; i++) {
        const struct exit_case *c = &exits[i];
        struct fly_exit x;
        struct lerr e = { 0 };
        int rc;

        memset(&x, 0x5A, sizeof x);
        rc = fly_parse_exit(c->json, strlen(c->json), &x, &e);
        if (rc != c->rc)
            fail_msg("%s: returned %d, want %d (%s)", c->name, rc, c->rc, e.msg);
        if (rc < 0)
            assert_int_equal(e.kind, LERR_MALFORMED);
        if (x.exited != c->exited || x.known != c->known || x.exit_code != c->code ||
            x.oom_killed != c->oom)
            fail_msg("%s: exited %d known %d code %d oom %d", c->name, x.exited, x.known,
                     x.exit_code, x.oom_killed);
        assert_int_equal(x.status, 0);
        assert_int_equal(x.outcome, FLY_CALL_OK);
    }
    /* the length counts, not a NUL */
    {
        static const char j[] = "[" EXIT_EV(4, "\"exit_code\":8") "]garbage";
        struct fly_exit x;
        struct lerr e = { 0 };

        assert_int_equal(fly_parse_exit(j, strlen(j) - 7, &x, &e), 0);
        assert_int_equal(x.exit_code, 8);
        assert_int_equal(fly_parse_exit(NULL, 0, &x, &e), -1);
    }
}

/* ---- the create call against a scripted server -------------------------------------------- */

#define MAX_SCRIPT (FLY_RATE_LIMIT_RETRIES + 2)
#define TOKEN "s3cr3t-t0ken-value"

struct reply {
    const char *head;    /* status line and extra headers, e.g. "503 Service Unavailable" */
    const char *body;
    int cancel_after;    /* write to the cancel pipe after sending this reply */
    int cancel_before;   /* write to it before replying: a stop while in flight */
};

struct seen {
    char line[256];      /* request line */
    char auth[128];
    char ctype[64];
    char nonce[80];      /* fly-machine-lease-nonce */
    char body[4096];
};

struct server {
    int fd;
    unsigned short port;
    const struct reply *script;
    size_t nscript, served;
    struct seen seen[MAX_SCRIPT];
    int cancel_w;
    pthread_t thread;
};

static void header_value(const char *head, const char *name, char *out, size_t cap)
{
    const char *p = head;

    out[0] = '\0';
    while ((p = strstr(p, "\r\n"))) {
        p += 2;
        if (strncasecmp(p, name, strlen(name)) == 0 && p[strlen(name)] == ':') {
            const char *v = p + strlen(name) + 1, *end = strstr(v, "\r\n");
            while (*v == ' ')
                v++;
            snprintf(out, cap, "%.*s", (int)(end - v), v);
            return;
        }
    }
}

static void serve_one(struct server *s, int c)
{
    char head[8192], clen[32];
    size_t n = 0, blen;
    struct seen *w = &s->seen[s->served];
    const struct reply *r = &s->script[s->served];
    char out[1024];
    ssize_t k;

    while (n < sizeof head - 1 && (k = read(c, head + n, 1)) == 1) {
        n++;
        if (n >= 4 && memcmp(head + n - 4, "\r\n\r\n", 4) == 0)
            break;
    }
    head[n] = '\0';
    snprintf(w->line, sizeof w->line, "%.*s", (int)strcspn(head, "\r"), head);
    header_value(head, "Authorization", w->auth, sizeof w->auth);
    header_value(head, "Content-Type", w->ctype, sizeof w->ctype);
    header_value(head, "fly-machine-lease-nonce", w->nonce, sizeof w->nonce);
    header_value(head, "Content-Length", clen, sizeof clen);
    blen = (size_t)strtoul(clen, NULL, 10);
    if (r->cancel_before && write(s->cancel_w, "x", 1) < 0)
        perror("write");
    if (blen >= sizeof w->body)
        blen = 0;  /* the test then fails on the body's content */
    for (size_t got = 0; got < blen && (k = read(c, w->body + got, blen - got)) > 0;)
        got += (size_t)k;
    w->body[blen] = '\0';
    n = (size_t)snprintf(out, sizeof out, "HTTP/1.1 %s\r\nContent-Length: %zu\r\n"
                         "Connection: close\r\n\r\n%s", r->head, strlen(r->body), r->body);
    if (write(c, out, n) < 0)
        perror("write");
    s->served++;
    if (r->cancel_after) {
        /* late enough that the client is asleep before its retry, not still reading */
        struct timespec pause = { 0, 500 * 1000 * 1000 };
        nanosleep(&pause, NULL);
        if (write(s->cancel_w, "x", 1) < 0)
            perror("write");
    }
}

static void *serve(void *arg)
{
    struct server *s = arg;

    while (s->served < s->nscript) {
        int c = accept(s->fd, NULL, NULL);
        if (c < 0)
            break;
        serve_one(s, c);
        close(c);
    }
    return NULL;
}

static void server_start(struct server *s, const struct reply *script, size_t n, int cancel_w)
{
    struct sockaddr_in a = { 0 };
    socklen_t alen = sizeof a;

    memset(s, 0, sizeof *s);
    s->script = script;
    s->nscript = n;
    s->cancel_w = cancel_w;
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_true((s->fd = socket(AF_INET, SOCK_STREAM, 0)) >= 0);
    assert_int_equal(bind(s->fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(s->fd, 8), 0);
    assert_int_equal(getsockname(s->fd, (struct sockaddr *)&a, &alen), 0);
    s->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&s->thread, NULL, serve, s), 0);
}

static void server_stop(struct server *s)
{
    shutdown(s->fd, SHUT_RDWR);
    pthread_join(s->thread, NULL);
    close(s->fd);
}

/* Runs fly_create_machine with stderr (the log) captured into log. */
static int run_create_stop(unsigned short port, const char *prefix, const char *const *regions,
                           size_t nregions, int cancel_fd, const int *stop_fd,
                           struct fly_machine *out, struct lerr *e, char *log, size_t logcap)
{
    char base_s[128];
    struct url base;
    struct fly_target t = { .base = &base, .app = "my-app", .token = TOKEN, .stop_fd = stop_fd };
    struct fly_machine_spec spec = { "img:1", preset_find("shared-cpu-1x"), "[\"run\"]",
                                     "[{\"a\":1}]", 9, "abcdef0123456789", NULL, 0, NULL, 0 };
    struct http_client http;
    FILE *cap = tmpfile();
    int saved = dup(2), rc;
    size_t n;

    snprintf(base_s, sizeof base_s, "http://127.0.0.1:%u%s", port, prefix);
    assert_int_equal(url_parse(base_s, &base, e), 0);
    http_client_init(&http, NULL);
    http.cancel_fd = cancel_fd;
    fflush(stderr);
    dup2(fileno(cap), 2);
    rc = fly_create_machine(&http, &t, &spec, regions, nregions, out, e);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    http_client_close(&http);
    rewind(cap);
    n = fread(log, 1, logcap - 1, cap);
    log[n] = '\0';
    fclose(cap);
    /* the token is in no log line and no error, whatever happened */
    assert_null(strstr(log, TOKEN));
    assert_null(strstr(e->msg, TOKEN));
    return rc;
}

static int run_create(unsigned short port, const char *prefix, const char *const *regions,
                      size_t nregions, int cancel_fd, struct fly_machine *out, struct lerr *e,
                      char *log, size_t logcap)
{
    return run_create_stop(port, prefix, regions, nregions, cancel_fd, NULL, out, e, log,
                           logcap);
}

static const char *body_region(const struct seen *w)
{
    static char region[32];
    cJSON *j = cJSON_Parse(w->body), *r;

    assert_non_null(j);
    r = cJSON_GetObjectItemCaseSensitive(j, "region");
    snprintf(region, sizeof region, "%s", cJSON_IsString(r) ? r->valuestring : "(none)");
    cJSON_Delete(j);
    return region;
}

static const char *const two_regions[] = { "iad", "ord" };

static void test_create_next_region(void **state)
{
    static const struct reply script[] = {
        { "503 Service Unavailable", "{\"error\":\"insufficient capacity\"}", 0, 0 },
        { "200 OK", "{\"id\":\"m-1\",\"region\":\"ord\",\"instance_id\":\"i-9\"}", 0, 0 },
    };
    struct server s;
    struct fly_machine m;
    struct lerr e = { 0 };
    char log[8192];

    server_start(&s, script, 2, -1);
    assert_int_equal(run_create(s.port, "/prefix", two_regions, 2, -1, &m, &e, log, sizeof log), 0);
    server_stop(&s);
    assert_string_equal(m.id, "m-1");
    assert_string_equal(m.region, "ord");
    assert_string_equal(m.instance_id, "i-9");
    assert_int_equal(m.status, 200);
    assert_int_equal(s.served, 2);
    for (size_t i = 0; i < 2; i++) {
        assert_string_equal(s.seen[i].line, "POST /prefix/v1/apps/my-app/machines HTTP/1.1");
        assert_string_equal(s.seen[i].auth, "Bearer " TOKEN);
        assert_string_equal(s.seen[i].ctype, "application/json");
    }
    assert_string_equal(body_region(&s.seen[0]), "iad");
    assert_string_equal(body_region(&s.seen[1]), "ord");
    assert_has(log, "group abcdef0123456789: iad: HTTP 503: insufficient capacity; "
                    "trying the next region");
    assert_has(log, "created Machine m-1 in ord (HTTP 200)");
}

static void test_create_rate_limited(void **state)
{
    static const struct reply script[] = {
        { "429 Too Many Requests\r\nRetry-After: 0", "{\"error\":\"slow down\"}", 0, 0 },
        { "429 Too Many Requests\r\nRetry-After: 0", "", 0, 0 },
        { "201 Created", "{\"id\":\"m-2\"}", 0, 0 },
    };
    struct server s;
    struct fly_machine m;
    struct lerr e = { 0 };
    char log[8192];

    server_start(&s, script, 3, -1);
    assert_int_equal(run_create(s.port, "", two_regions, 2, -1, &m, &e, log, sizeof log), 0);
    server_stop(&s);
    assert_int_equal(s.served, 3);
    for (size_t i = 0; i < 3; i++)
        assert_string_equal(body_region(&s.seen[i]), "iad");
    assert_string_equal(m.id, "m-2");
    assert_string_equal(m.region, "iad");  /* the answer did not say: the one asked for */
    assert_int_equal(m.status, 201);
    assert_has(log, "iad: rate limited (HTTP 429); retry 1 of 20 in 0 ms");
    assert_has(log, "iad: rate limited (HTTP 429); retry 2 of 20 in 0 ms");
}

static void test_create_rate_limited_too_long(void **state)
{
    struct reply script[FLY_RATE_LIMIT_RETRIES + 1];
    struct server s;
    struct fly_machine m;
    struct lerr e = { 0 };
    char log[8192];

    for (size_t i = 0; i < FLY_RATE_LIMIT_RETRIES + 1; i++)
        script[i] = (struct reply){ "429 Too Many Requests\r\nRetry-After: 0", "", 0, 0 };
    server_start(&s, script, FLY_RATE_LIMIT_RETRIES + 1, -1);
    assert_int_equal(run_create(s.port, "", two_regions, 2, -1, &m, &e, log, sizeof log), -1);
    server_stop(&s);
    assert_int_equal(s.served, FLY_RATE_LIMIT_RETRIES + 1);  /* and never ord */
    assert_int_equal(e.kind, LERR_HTTP);
    assert_has(e.msg, "iad: still rate limited (HTTP 429) after 20 retries");
    assert_int_equal(m.status, 429);
}

static void test_create_give_up(void **state)
{
    static const struct reply script[] = {
        { "422 Unprocessable Entity", "{\"error\":\"image not found: img:1\"}", 0, 0 },
    };
    struct server s;
    struct fly_machine m;
    struct lerr e = { 0 };
    char log[8192];

    server_start(&s, script, 1, -1);
    assert_int_equal(run_create(s.port, "", two_regions, 2, -1, &m, &e, log, sizeof log), -1);
    server_stop(&s);
    assert_int_equal(s.served, 1);
    assert_int_equal(e.kind, LERR_HTTP);
    assert_string_equal(e.msg, "Fly refused the Machine in iad: HTTP 422: image not found: img:1");
    assert_int_equal(m.status, 422);
    assert_has(log, "iad: HTTP 422: image not found: img:1; not retrying");
}

static void test_create_every_region_fails(void **state)
{
    static const struct reply script[] = {
        { "500 Internal Server Error", "{\"error\":\"boom\"}", 0, 0 },
        { "503 Service Unavailable", "{\"error\":\"insufficient capacity\"}", 0, 0 },
    };
    struct server s;
    struct fly_machine m;
    struct lerr e = { 0 };
    char log[8192];

    server_start(&s, script, 2, -1);
    assert_int_equal(run_create(s.port, "", two_regions, 2, -1, &m, &e, log, sizeof log), -1);
    server_stop(&s);
    assert_int_equal(e.kind, LERR_HTTP);
    assert_string_equal(e.msg, "no region could create the Machine (tried iad, ord); last: "
                               "ord: HTTP 503: insufficient capacity");
    assert_int_equal(m.status, 503);
    assert_has(log, "iad: HTTP 500: boom; trying the next region");
    assert_has(log, "ord: HTTP 503: insufficient capacity; trying the next region");
}

static void test_create_connection_refused(void **state)
{
    struct server s;
    struct fly_machine m;
    struct lerr e = { 0 };
    char log[8192];
    unsigned short port;

    /* a port that was just free: nothing listens on it */
    server_start(&s, NULL, 0, -1);
    port = s.port;
    server_stop(&s);
    assert_int_equal(run_create(port, "", two_regions, 2, -1, &m, &e, log, sizeof log), -1);
    assert_int_equal(e.kind, LERR_REFUSED);
    assert_has(e.msg, "no region could create the Machine (tried iad, ord); last: ord: ");
    assert_int_equal(m.status, 0);
    assert_has(log, "iad: ");
    assert_has(log, "; trying the next region");
}

static void test_create_any_region(void **state)
{
    static const struct reply script[] = {
        { "200 OK", "{\"id\":\"m-3\",\"region\":\"fra\"}", 0, 0 },
    };
    struct server s;
    struct fly_machine m;
    struct lerr e = { 0 };
    char log[8192];

    server_start(&s, script, 1, -1);
    assert_int_equal(run_create(s.port, "/", NULL, 0, -1, &m, &e, log, sizeof log), 0);
    server_stop(&s);
    assert_string_equal(body_region(&s.seen[0]), "(none)");
    assert_string_equal(s.seen[0].line, "POST /v1/apps/my-app/machines HTTP/1.1");
    assert_string_equal(m.region, "fra");
}

static void test_create_cancelled_while_waiting(void **state)
{
    static const struct reply script[] = {
        { "429 Too Many Requests\r\nRetry-After: 30", "", 1, 0 },
    };
    struct server s;
    struct fly_machine m;
    struct lerr e = { 0 };
    char log[8192];
    int pipefd[2];
    struct timespec t0, t1;

    assert_int_equal(pipe(pipefd), 0);
    server_start(&s, script, 1, pipefd[1]);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(run_create(s.port, "", two_regions, 2, pipefd[0], &m, &e, log, sizeof log),
                     -1);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    server_stop(&s);
    assert_int_equal(e.kind, LERR_CANCELLED);
    assert_int_equal(s.served, 1);
    assert_true(t1.tv_sec - t0.tv_sec < 10);  /* not the 30 s Retry-After */
    assert_has(log, "retry 1 of 20 in 30000 ms");
    close(pipefd[0]);
    close(pipefd[1]);
}

static void test_create_cancelled_before(void **state)
{
    struct server s;
    struct fly_machine m;
    struct lerr e = { 0 };
    char log[8192];
    int pipefd[2];

    assert_int_equal(pipe(pipefd), 0);
    assert_int_equal(write(pipefd[1], "x", 1), 1);
    server_start(&s, NULL, 0, -1);
    assert_int_equal(run_create(s.port, "", two_regions, 2, pipefd[0], &m, &e, log, sizeof log),
                     -1);
    server_stop(&s);
    assert_int_equal(e.kind, LERR_CANCELLED);
    assert_null(strstr(e.msg, "no region"));   /* a stop, not a region's failure */
    assert_null(strstr(log, "next region"));
    assert_null(strstr(log, "ord"));
    close(pipefd[0]);
    close(pipefd[1]);
}

/* stop_fd ends a 429 wait like cancel_fd does, with the client's cancel_fd unset */
static void test_create_stop_while_waiting(void **state)
{
    static const struct reply script[] = {
        { "429 Too Many Requests\r\nRetry-After: 30", "", 1, 0 },
    };
    struct server s;
    struct fly_machine m;
    struct lerr e = { 0 };
    char log[8192];
    int pipefd[2];
    struct timespec t0, t1;

    assert_int_equal(pipe(pipefd), 0);
    server_start(&s, script, 1, pipefd[1]);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(run_create_stop(s.port, "", two_regions, 2, -1, &pipefd[0], &m, &e, log,
                                     sizeof log), -1);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    server_stop(&s);
    assert_int_equal(e.kind, LERR_CANCELLED);
    assert_int_equal(s.served, 1);
    assert_true(t1.tv_sec - t0.tv_sec < 10);
    close(pipefd[0]);
    close(pipefd[1]);
}

/* A stop during a request lets it finish: created if Fly says so; no other region after. */
static void test_create_stop_in_flight(void **state)
{
    static const struct reply created[] = { { "200 OK", "{\"id\":\"m-5\"}", 0, 1 } };
    static const struct reply full[] = {
        { "503 Service Unavailable", "{\"error\":\"insufficient capacity\"}", 0, 1 },
        { "200 OK", "{\"id\":\"never\"}", 0, 0 },
    };
    struct server s;
    struct fly_machine m;
    struct lerr e = { 0 };
    char log[8192];
    int pipefd[2];

    assert_int_equal(pipe(pipefd), 0);
    server_start(&s, created, 1, pipefd[1]);
    assert_int_equal(run_create_stop(s.port, "", two_regions, 2, -1, &pipefd[0], &m, &e, log,
                                     sizeof log), 0);
    server_stop(&s);
    assert_string_equal(m.id, "m-5");
    close(pipefd[0]);
    close(pipefd[1]);

    assert_int_equal(pipe(pipefd), 0);
    server_start(&s, full, 2, pipefd[1]);
    assert_int_equal(run_create_stop(s.port, "", two_regions, 2, -1, &pipefd[0], &m, &e, log,
                                     sizeof log), -1);
    server_stop(&s);
    assert_int_equal(s.served, 1);
    assert_int_equal(e.kind, LERR_CANCELLED);
    assert_has(log, "iad: HTTP 503: insufficient capacity");
    assert_has(log, "stopping: not trying ord");
    close(pipefd[0]);
    close(pipefd[1]);
}

static void test_create_bad_token(void **state)
{
    struct fly_machine m;
    struct lerr e = { 0 };
    struct url base;
    struct fly_target t = { .base = &base, .app = "app", .token = "tok\r\nen" };
    struct fly_machine_spec spec = { "img", preset_find("a10"), NULL, "[]", 2, "g", NULL, 0,
        NULL, 0 };
    struct http_client http;

    assert_int_equal(url_parse("http://127.0.0.1:9", &base, &e), 0);
    http_client_init(&http, NULL);
    assert_int_equal(fly_create_machine(&http, &t, &spec, two_regions, 2, &m, &e), -1);
    assert_int_equal(e.kind, LERR_INVALID);
    assert_int_equal(http.requests_sent, 0);
    http_client_close(&http);
}

/* ---- following a Machine against a scripted server ------------------------------------ */

/* A target on the scripted server, with stderr (the log, at debug level) captured. */
struct env {
    struct url base;
    struct fly_target t;
    struct http_client http;
    FILE *cap;
    int saved;
};

static void env_open(struct env *v, unsigned short port, const char *prefix,
                     struct ratelimit *create_rl, struct ratelimit *get_rl, const int *stop_fd)
{
    char base_s[128];
    struct lerr e = { 0 };

    snprintf(base_s, sizeof base_s, "http://127.0.0.1:%u%s", port, prefix);
    assert_int_equal(url_parse(base_s, &v->base, &e), 0);
    v->t = (struct fly_target){ .base = &v->base, .app = "my-app", .token = TOKEN, .stop_fd = stop_fd,
                                .create_rl = create_rl, .get_rl = get_rl };
    http_client_init(&v->http, NULL);
    v->cap = tmpfile();
    assert_non_null(v->cap);
    fflush(stderr);
    v->saved = dup(2);
    dup2(fileno(v->cap), 2);
    log_setup(LOG_LEVEL_DEBUG, 0);
}

/* Ends the capture into log; the token is in no log line and no error. */
static void env_close(struct env *v, const struct lerr *e, char *log, size_t logcap)
{
    size_t n;

    fflush(stderr);
    dup2(v->saved, 2);
    close(v->saved);
    log_setup(LOG_LEVEL_INFO, 0);
    http_client_close(&v->http);
    rewind(v->cap);
    n = fread(log, 1, logcap - 1, v->cap);
    log[n] = '\0';
    fclose(v->cap);
    assert_null(strstr(log, TOKEN));
    assert_null(strstr(e->msg, TOKEN));
}

/* A port where nothing listens. */
static unsigned short dead_port(void)
{
    struct server s;
    unsigned short port;

    server_start(&s, NULL, 0, -1);
    port = s.port;
    server_stop(&s);
    return port;
}

/* The Authorization header each kind of token gets, as a call sends it. */
static void test_auth_header(void **state)
{
    static const char *const cases[][2] = {
        { "abc123", "Bearer abc123" },
        { "FlyV1 fm2_lJPECAAAAAAAAb,fm2_xyz", "FlyV1 fm2_lJPECAAAAAAAAb,fm2_xyz" },
        { "Bearer abc", "Bearer abc" },
        { "bearer abc", "bearer abc" },
        { "fm2_only", "Bearer fm2_only" },
    };
    static const char *const bad[] = { "", "sec\r\nX-Evil: 1", "secret\n", "sec\tret",
                                       "sec\x7fret" };
    static const struct reply ok[] = {
        { "200 OK", "{}", 0, 0 }, { "200 OK", "{}", 0, 0 }, { "200 OK", "{}", 0, 0 },
        { "200 OK", "{}", 0, 0 }, { "200 OK", "{}", 0, 0 },
    };
    const size_t n = sizeof cases / sizeof cases[0];
    struct server s;
    struct env v;
    struct fly_call_result r;
    struct lerr e = { 0 };
    char log[8192];

    server_start(&s, ok, n, -1);
    env_open(&v, s.port, "", NULL, NULL, NULL);
    for (size_t i = 0; i < n; i++) {
        v.t.token = cases[i][0];
        assert_int_equal(fly_get_app(&v.http, &v.t, &r, &e), 0);
        assert_string_equal(s.seen[i].auth, cases[i][1]);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v.t.token = bad[i];
        assert_int_equal(fly_get_app(&v.http, &v.t, &r, &e), -1);
        assert_int_equal(e.kind, LERR_INVALID);
        assert_null(strstr(e.msg, "sec"));
    }
    v.t.token = NULL;
    assert_int_equal(fly_get_app(&v.http, &v.t, &r, &e), -1);
    assert_int_equal(v.http.requests_sent, n);  /* a bad token is never sent */
    env_close(&v, &e, log, sizeof log);
    server_stop(&s);
}

static void test_wait_reached_after_429(void **state)
{
    static const struct reply script[] = {
        { "429 Too Many Requests\r\nRetry-After: 0", "{\"error\":\"rate limited\"}", 0, 0 },
        { "200 OK", "{\"ok\":true}", 0, 0 },
    };
    struct server s;
    struct env v;
    struct ratelimit get_rl;
    struct fly_call_result r;
    struct lerr e = { 0 };
    char log[8192];
    int rc;

    assert_int_equal(ratelimit_init(&get_rl, 1, 10, &e), 0);
    server_start(&s, script, 2, -1);
    env_open(&v, s.port, "/prefix/", NULL, &get_rl, NULL);
    rc = fly_wait_machine(&v.http, &v.t, "m/1", "i 1", "stopped", 30, &r, &e);
    assert_int_equal(v.http.io_timeout_ms, 30000);  /* raised for the wait, then restored */
    env_close(&v, &e, log, sizeof log);
    server_stop(&s);
    if (rc != 0)
        fail_msg("wait: %s", e.msg);
    assert_int_equal(r.outcome, FLY_CALL_OK);
    assert_int_equal(r.status, 200);
    assert_int_equal(s.served, 2);
    for (size_t i = 0; i < 2; i++) {
        assert_string_equal(s.seen[i].line,
                            "GET /prefix/v1/apps/my-app/machines/m%2F1/wait"
                            "?state=stopped&timeout=30&instance_id=i%201 HTTP/1.1");
        assert_string_equal(s.seen[i].auth, "Bearer " TOKEN);
    }
    /* both requests took a token; the 429 penalized the bucket (capped it at one) */
    assert_true(get_rl.tokens < 1.0);
    assert_true(get_rl.pause_until_ns > 0);
    assert_has(log, "fly: Machine m/1: wait: HTTP 429: rate limited");
    assert_has(log, "rate limited; retry 1 of 20 in 0 ms");
    assert_has(log, "fly: Machine m/1: wait: HTTP 200");
    ratelimit_destroy(&get_rl);
}

struct wait_case {
    const char *head, *body;
    int rc;
    enum fly_call_outcome outcome;
    enum lerr_kind kind;
    const char *msg;
};

static void test_wait_outcomes(void **state)
{
    static const struct wait_case cases[] = {
        { "408 Request Timeout", "{\"error\":\"deadline_exceeded: machine did not reach state "
          "stopped in 5s\"}", 0, FLY_CALL_TIMED_OUT, LERR_NONE, NULL },
        { "404 Not Found", "{\"error\":\"machine not found\"}", 0, FLY_CALL_GONE, LERR_NONE, NULL },
        { "400 Bad Request", "{\"error\":\"machine is destroyed\"}", 0, FLY_CALL_GONE, LERR_NONE,
          NULL },
        { "500 Internal Server Error", "{\"error\":\"boom\"}", -1, FLY_CALL_RETRY_LATER,
          LERR_HTTP, "Machine m1: wait: HTTP 500: boom" },
        { "503 Service Unavailable", "", -1, FLY_CALL_RETRY_LATER, LERR_HTTP,
          "Machine m1: wait: HTTP 503" },
        { "401 Unauthorized", "{\"error\":\"Authenticate: token validation error\"}", -1,
          FLY_CALL_FAILED, LERR_HTTP, "Machine m1: wait: HTTP 401: Authenticate: token "
          "validation error" },
        { "400 Bad Request", "{\"error\":\"invalid state\"}", -1, FLY_CALL_FAILED, LERR_HTTP,
          "HTTP 400: invalid state" },
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct wait_case *c = &cases[i];
        struct reply script[1] = { { c->head, c->body, 0, 0 } };
        struct server s;
        struct env v;
        struct fly_call_result r;
        struct lerr e = { 0 };
        char log[8192];
        int rc;

        server_start(&s, script, 1, -1);
        env_open(&v, s.port, "", NULL, NULL, NULL);
        rc = fly_wait_machine(&v.http, &v.t, "m1", NULL, "stopped", 5, &r, &e);
        env_close(&v, &e, log, sizeof log);
        server_stop(&s);
        assert_string_equal(s.seen[0].line, "GET /v1/apps/my-app/machines/m1/wait"
                                            "?state=stopped&timeout=5 HTTP/1.1");
        if (rc != c->rc || r.outcome != c->outcome)
            fail_msg("case %zu (%s): rc %d outcome %d, want %d %d (%s)", i, c->head, rc,
                     r.outcome, c->rc, c->outcome, e.msg);
        assert_int_equal(r.status, atoi(c->head));
        if (rc < 0) {
            assert_int_equal(e.kind, c->kind);
            assert_has(e.msg, c->msg);
        }
    }
}

static void test_wait_connection_refused(void **state)
{
    struct env v;
    struct fly_call_result r;
    struct lerr e = { 0 };
    char log[8192];

    env_open(&v, dead_port(), "", NULL, NULL, NULL);
    assert_int_equal(fly_wait_machine(&v.http, &v.t, "m1", "", "destroyed", 60, &r, &e), -1);
    env_close(&v, &e, log, sizeof log);
    assert_int_equal(e.kind, LERR_REFUSED);
    assert_int_equal(r.outcome, FLY_CALL_RETRY_LATER);
    assert_int_equal(r.status, 0);
    assert_has(e.msg, "Machine m1: wait: ");
}

static void test_wait_invalid(void **state)
{
    static const struct { const char *id, *state; int timeout; } bad[] = {
        { "m1", "running", 10 }, { "m1", NULL, 10 }, { "m1", "stopped", 0 },
        { "m1", "stopped", 61 }, { "m1", "stopped", -1 }, { "m1", "stopped", INT_MAX },
        { "m1", "stopped", INT_MIN }, { "", "stopped", 10 }, { NULL, "stopped", 10 },
    };
    struct env v;
    struct fly_call_result r;
    struct lerr e = { 0 };
    char log[8192], inst[200];

    env_open(&v, dead_port(), "", NULL, NULL, NULL);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(fly_wait_machine(&v.http, &v.t, bad[i].id, NULL, bad[i].state,
                                          bad[i].timeout, &r, &e), -1);
        assert_int_equal(e.kind, LERR_INVALID);
        assert_int_equal(r.outcome, FLY_CALL_FAILED);
    }
    memset(inst, 'i', sizeof inst - 1);
    inst[sizeof inst - 1] = '\0';
    assert_int_equal(fly_wait_machine(&v.http, &v.t, "m1", inst, "stopped", 10, &r, &e), -1);
    assert_int_equal(e.kind, LERR_INVALID);
    assert_int_equal(v.http.requests_sent, 0);
    env_close(&v, &e, log, sizeof log);
}

static void test_wait_rate_limited_too_long(void **state)
{
    struct reply script[FLY_RATE_LIMIT_RETRIES + 1];
    struct server s;
    struct env v;
    struct fly_call_result r;
    struct lerr e = { 0 };
    char log[16384];

    for (size_t i = 0; i < FLY_RATE_LIMIT_RETRIES + 1; i++)
        script[i] = (struct reply){ "429 Too Many Requests\r\nRetry-After: 0", "", 0, 0 };
    server_start(&s, script, FLY_RATE_LIMIT_RETRIES + 1, -1);
    env_open(&v, s.port, "", NULL, NULL, NULL);
    assert_int_equal(fly_wait_machine(&v.http, &v.t, "m1", NULL, "stopped", 1, &r, &e), -1);
    env_close(&v, &e, log, sizeof log);
    server_stop(&s);
    assert_int_equal(s.served, FLY_RATE_LIMIT_RETRIES + 1);
    assert_int_equal(e.kind, LERR_HTTP);
    assert_int_equal(r.outcome, FLY_CALL_RETRY_LATER);
    assert_int_equal(r.status, 429);
    assert_string_equal(e.msg, "Machine m1: wait: still rate limited (HTTP 429) after 20 retries");
}

/* A stop while a 429's penalty holds the get bucket: the wait ends, the token goes back. */
static void test_wait_stop_while_rate_limited(void **state)
{
    static const struct reply script[] = {
        { "429 Too Many Requests\r\nRetry-After: 30", "", 1, 0 },
    };
    struct server s;
    struct env v;
    struct ratelimit get_rl;
    struct fly_call_result r;
    struct lerr e = { 0 };
    char log[8192];
    int pipefd[2];
    int64_t wait_ns;

    assert_int_equal(pipe(pipefd), 0);
    assert_int_equal(ratelimit_init(&get_rl, 1, 10, &e), 0);
    server_start(&s, script, 1, pipefd[1]);
    env_open(&v, s.port, "", NULL, &get_rl, &pipefd[0]);
    assert_int_equal(fly_wait_machine(&v.http, &v.t, "m1", NULL, "stopped", 10, &r, &e), -1);
    env_close(&v, &e, log, sizeof log);
    server_stop(&s);
    assert_int_equal(e.kind, LERR_CANCELLED);
    assert_int_equal(r.outcome, FLY_CALL_FAILED);
    assert_int_equal(s.served, 1);
    /* the penalty still holds for the others, and the cancelled token came back: the
     * next caller is first in line, due when the pause ends */
    wait_ns = ratelimit_reserve_at(&get_rl, ratelimit_now_ns(), NULL);
    assert_true(wait_ns > 20 * 1000000000LL);
    assert_true(get_rl.tokens > -0.5);
    ratelimit_destroy(&get_rl);
    close(pipefd[0]);
    close(pipefd[1]);
}

#define SHOW_EXITED \
    "{\"id\":\"m1\",\"state\":\"stopped\",\"region\":\"ord\",\"instance_id\":\"i1\",\"events\":[" \
    "{\"type\":\"exit\",\"status\":\"stopped\",\"source\":\"flyd\",\"timestamp\":1700000002000," \
    "\"request\":{\"exit_event\":{\"exit_code\":3,\"oom_killed\":false,\"requested_stop\":false," \
    "\"exited_at\":\"2026-11-27T20:00:02Z\"}}}," \
    "{\"type\":\"start\",\"status\":\"started\",\"source\":\"flyd\",\"timestamp\":1700000001000}]}"

static void test_exit_from_show(void **state)
{
    static const struct reply script[] = { { "200 OK", SHOW_EXITED, 0, 0 } };
    struct server s;
    struct env v;
    struct ratelimit get_rl;
    struct fly_exit x;
    struct lerr e = { 0 };
    char log[8192];

    assert_int_equal(ratelimit_init(&get_rl, 1, 3, &e), 0);
    server_start(&s, script, 1, -1);
    env_open(&v, s.port, "/p", NULL, &get_rl, NULL);
    assert_int_equal(fly_machine_exit(&v.http, &v.t, "m1", &x, &e), 0);
    env_close(&v, &e, log, sizeof log);
    server_stop(&s);
    assert_int_equal(s.served, 1);
    assert_string_equal(s.seen[0].line, "GET /p/v1/apps/my-app/machines/m1 HTTP/1.1");
    assert_string_equal(s.seen[0].auth, "Bearer " TOKEN);
    assert_int_equal(x.outcome, FLY_CALL_OK);
    assert_int_equal(x.status, 200);
    assert_int_equal(x.exited, 1);
    assert_int_equal(x.known, 1);
    assert_int_equal(x.exit_code, 3);
    assert_string_equal(x.state, "stopped");
    assert_true(get_rl.tokens < 2.5);  /* one token taken */
    ratelimit_destroy(&get_rl);
}

/* A Machine object without events: the event list is asked for. */
static void test_exit_events_fallback(void **state)
{
    static const struct reply script[] = {
        { "200 OK", "{\"id\":\"m1\",\"state\":\"destroyed\",\"region\":\"fra\"}", 0, 0 },
        { "200 OK", "[{\"type\":\"destroy\",\"timestamp\":3},{\"type\":\"exit\",\"timestamp\":2,"
                    "\"request\":{\"exit_event\":{\"exit_code\":137,\"oom_killed\":true}}}]",
          0, 0 },
    };
    struct server s;
    struct env v;
    struct fly_exit x;
    struct lerr e = { 0 };
    char log[8192];

    server_start(&s, script, 2, -1);
    env_open(&v, s.port, "", NULL, NULL, NULL);
    assert_int_equal(fly_machine_exit(&v.http, &v.t, "m1", &x, &e), 0);
    env_close(&v, &e, log, sizeof log);
    server_stop(&s);
    assert_int_equal(s.served, 2);
    assert_string_equal(s.seen[0].line, "GET /v1/apps/my-app/machines/m1 HTTP/1.1");
    assert_string_equal(s.seen[1].line, "GET /v1/apps/my-app/machines/m1/events HTTP/1.1");
    assert_int_equal(x.known, 1);
    assert_int_equal(x.exit_code, 137);
    assert_int_equal(x.oom_killed, 1);
    assert_string_equal(x.state, "destroyed");  /* the show's: an event list has none */
    assert_has(log, "fly: Machine m1: events: HTTP 200");
}

static void test_exit_gone_and_errors(void **state)
{
    static const struct {
        struct reply reply;
        int rc;
        enum fly_call_outcome outcome;
        enum lerr_kind kind;
    } cases[] = {
        { { "404 Not Found", "{\"error\":\"machine not found\"}", 0, 0 }, 0, FLY_CALL_GONE,
          LERR_NONE },
        { { "200 OK", "not json", 0, 0 }, -1, FLY_CALL_RETRY_LATER, LERR_MALFORMED },
        { { "200 OK", "{\"id\":\"m1\",\"events\":[]}", 0, 0 }, 0, FLY_CALL_OK, LERR_NONE },
        { { "502 Bad Gateway", "", 0, 0 }, -1, FLY_CALL_RETRY_LATER, LERR_HTTP },
        { { "408 Request Timeout", "", 0, 0 }, -1, FLY_CALL_RETRY_LATER, LERR_HTTP },
        { { "401 Unauthorized", "{\"error\":\"no\"}", 0, 0 }, -1, FLY_CALL_FAILED, LERR_HTTP },
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct server s;
        struct env v;
        struct fly_exit x;
        struct lerr e = { 0 };
        char log[8192];
        int rc;

        server_start(&s, &cases[i].reply, 1, -1);
        env_open(&v, s.port, "", NULL, NULL, NULL);
        rc = fly_machine_exit(&v.http, &v.t, "m1", &x, &e);
        env_close(&v, &e, log, sizeof log);
        server_stop(&s);
        if (rc != cases[i].rc || x.outcome != cases[i].outcome)
            fail_msg("case %zu: rc %d outcome %d (%s)", i, rc, x.outcome, e.msg);
        assert_int_equal(x.known, 0);
        assert_string_equal(x.state, "");
        assert_int_equal(x.status, atoi(cases[i].reply.head));
        if (rc < 0) {
            assert_int_equal(e.kind, cases[i].kind);
            assert_has(e.msg, "Machine m1: show");
        }
    }
}

static void test_stop_and_destroy(void **state)
{
    static const struct {
        int op;                  /* 0 stop, 1 destroy, 2 destroy with force */
        struct reply reply;
        const char *line;
        int rc;
        enum fly_call_outcome outcome;
    } cases[] = {
        { 0, { "200 OK", "{\"ok\":true}", 0, 0 },
          "POST /v1/apps/my-app/machines/m1/stop HTTP/1.1", 0, FLY_CALL_OK },
        { 0, { "404 Not Found", "{\"error\":\"machine not found\"}", 0, 0 },
          "POST /v1/apps/my-app/machines/m1/stop HTTP/1.1", 0, FLY_CALL_GONE },
        { 0, { "500 Internal Server Error", "", 0, 0 },
          "POST /v1/apps/my-app/machines/m1/stop HTTP/1.1", -1, FLY_CALL_RETRY_LATER },
        { 0, { "408 Request Timeout", "", 0, 0 },
          "POST /v1/apps/my-app/machines/m1/stop HTTP/1.1", -1, FLY_CALL_RETRY_LATER },
        { 1, { "200 OK", "{\"ok\":true}", 0, 0 },
          "DELETE /v1/apps/my-app/machines/m1 HTTP/1.1", 0, FLY_CALL_OK },
        { 2, { "200 OK", "", 0, 0 },
          "DELETE /v1/apps/my-app/machines/m1?force=true HTTP/1.1", 0, FLY_CALL_OK },
        { 2, { "404 Not Found", "", 0, 0 },
          "DELETE /v1/apps/my-app/machines/m1?force=true HTTP/1.1", 0, FLY_CALL_GONE },
        { 2, { "412 Precondition Failed", "{\"error\":\"machine still active, refusing\"}", 0, 0 },
          "DELETE /v1/apps/my-app/machines/m1?force=true HTTP/1.1", -1, FLY_CALL_FAILED },
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct server s;
        struct env v;
        struct ratelimit get_rl;
        struct fly_call_result r;
        struct lerr e = { 0 };
        char log[8192];
        int rc;

        assert_int_equal(ratelimit_init(&get_rl, 1, 2, &e), 0);
        server_start(&s, &cases[i].reply, 1, -1);
        env_open(&v, s.port, "", NULL, &get_rl, NULL);
        if (cases[i].op == 0)
            rc = fly_stop_machine(&v.http, &v.t, "m1", &r, &e);
        else
            rc = fly_destroy_machine(&v.http, &v.t, "m1", cases[i].op == 2, &r, &e);
        env_close(&v, &e, log, sizeof log);
        server_stop(&s);
        assert_string_equal(s.seen[0].line, cases[i].line);
        assert_string_equal(s.seen[0].auth, "Bearer " TOKEN);
        if (rc != cases[i].rc || r.outcome != cases[i].outcome)
            fail_msg("case %zu: rc %d outcome %d (%s)", i, rc, r.outcome, e.msg);
        if (rc < 0) {
            assert_int_equal(e.kind, LERR_HTTP);
            assert_has(e.msg, cases[i].op ? "Machine m1: destroy: HTTP "
                                          : "Machine m1: stop: HTTP ");
        }
        assert_true(get_rl.tokens < 1.5);  /* a get token, for stops and deletes too */
        ratelimit_destroy(&get_rl);
    }
    /* out may be NULL */
    {
        static const struct reply ok[] = { { "200 OK", "", 0, 0 } };
        struct server s;
        struct env v;
        struct lerr e = { 0 };
        char log[8192];

        server_start(&s, ok, 1, -1);
        env_open(&v, s.port, "", NULL, NULL, NULL);
        assert_int_equal(fly_stop_machine(&v.http, &v.t, "m1", NULL, &e), 0);
        env_close(&v, &e, log, sizeof log);
        server_stop(&s);
    }
}

/* A 429 on a create is Fly pacing the app: same region, the create bucket penalized for
 * Retry-After (so every creator pauses), and a token taken before each POST. */
static void test_create_429_penalizes(void **state)
{
    static const struct reply script[] = {
        { "429 Too Many Requests\r\nRetry-After: 1", "{\"error\":\"rate limited\"}", 0, 0 },
        { "201 Created", "{\"id\":\"m-7\",\"region\":\"iad\"}", 0, 0 },
    };
    struct server s;
    struct ratelimit create_rl;
    struct fly_machine m;
    struct lerr e = { 0 };
    char log[8192];
    int64_t t0, t1;

    assert_int_equal(ratelimit_init(&create_rl, 1000, 10, &e), 0);
    server_start(&s, script, 2, -1);
    t0 = ratelimit_now_ns();
    {
        struct env v;
        env_open(&v, s.port, "", &create_rl, NULL, NULL);
        struct fly_machine_spec spec = { "img:1", preset_find("shared-cpu-1x"), NULL, "[1]", 3,
                                         "g", NULL, 0, NULL, 0 };
        assert_int_equal(fly_create_machine(&v.http, &v.t, &spec, two_regions, 2, &m, &e), 0);
        env_close(&v, &e, log, sizeof log);
    }
    t1 = ratelimit_now_ns();
    server_stop(&s);
    assert_int_equal(s.served, 2);
    assert_string_equal(body_region(&s.seen[0]), "iad");
    assert_string_equal(body_region(&s.seen[1]), "iad");   /* never ord */
    assert_string_equal(m.id, "m-7");
    assert_true(create_rl.pause_until_ns >= t0 + 1000000000LL);
    assert_true(t1 - t0 >= 1000000000LL);   /* the retry waited for the penalty */
    assert_has(log, "iad: rate limited (HTTP 429); retry 1 of 20 in 1000 ms");
    assert_null(strstr(log, "next region"));
    ratelimit_destroy(&create_rl);
}

/* A stop while waiting for a create token: cancelled, the token given back. */
static void test_create_stop_waiting_for_token(void **state)
{
    static const struct reply script[] = {
        { "429 Too Many Requests\r\nRetry-After: 30", "", 1, 0 },
    };
    struct server s;
    struct ratelimit create_rl;
    struct fly_machine m;
    struct lerr e = { 0 };
    char log[8192];
    int pipefd[2];

    assert_int_equal(pipe(pipefd), 0);
    assert_int_equal(ratelimit_init(&create_rl, 1, 5, &e), 0);
    server_start(&s, script, 1, pipefd[1]);
    {
        struct env v;
        env_open(&v, s.port, "", &create_rl, NULL, &pipefd[0]);
        struct fly_machine_spec spec = { "img:1", preset_find("shared-cpu-1x"), NULL, "[1]", 3,
                                         "g", NULL, 0, NULL, 0 };
        assert_int_equal(fly_create_machine(&v.http, &v.t, &spec, two_regions, 2, &m, &e), -1);
        env_close(&v, &e, log, sizeof log);
    }
    server_stop(&s);
    assert_int_equal(e.kind, LERR_CANCELLED);
    assert_int_equal(s.served, 1);
    assert_int_equal(m.status, 429);
    assert_has(log, "retry 1 of 20 in 30000 ms");
    assert_has(log, "stopping: no longer waiting for a rate limit token");
    assert_null(strstr(log, "ord"));
    /* one token for the first POST; the retry's reservation came back */
    assert_true(create_rl.tokens > -0.5 && create_rl.tokens <= 1.0);
    ratelimit_destroy(&create_rl);
    close(pipefd[0]);
    close(pipefd[1]);
}

/* ---- a warm pool: bodies, parsers, and the calls against the scripted server ------------ */

static void test_body_pool(void **state)
{
    /* a pool Machine created stopped, before any group: no files, no auto_destroy */
    struct fly_machine_spec blank = { "alpine", preset_find("shared-cpu-1x"), NULL, NULL, 0,
                                      NULL, NULL, 0, "k1", 1 };
    /* the update that gives it a group (the meta file too) */
    struct fly_machine_spec group = { "alpine", preset_find("shared-cpu-1x"), "[\"run\"]",
                                      "[1]", 3, "g1", "[{}]", 4, "k\"1", 0 };
    struct lerr e = { 0 };
    char *text;
    size_t len;

    assert_int_equal(fly_create_body(&blank, "iad", &text, &len, &e), 0);
    assert_string_equal(text,
        "{\"region\":\"iad\",\"skip_launch\":true,\"config\":{\"image\":\"alpine\","
        "\"guest\":{\"cpu_kind\":\"shared\",\"cpus\":1,\"memory_mb\":256},\"env\":{},"
        "\"restart\":{\"policy\":\"no\"},"
        "\"metadata\":{\"managed_by\":\"lambdo\",\"lambdo_group\":\"\",\"lambdo_pool\":\"k1\"}}}");
    free(text);
    assert_int_equal(fly_create_body(&group, NULL, &text, &len, &e), 0);
    assert_string_equal(text,
        "{\"config\":{\"image\":\"alpine\","
        "\"guest\":{\"cpu_kind\":\"shared\",\"cpus\":1,\"memory_mb\":256},"
        "\"env\":{\"EVENTS_PATH\":\"/tmp/events.json\","
        "\"EVENTS_META_PATH\":\"/tmp/events.meta.json\"},"
        "\"files\":[{\"guest_path\":\"/tmp/events.json\",\"raw_value\":\"WzFd\"},"
        "{\"guest_path\":\"/tmp/events.meta.json\",\"raw_value\":\"W3t9XQ==\"}],"
        "\"restart\":{\"policy\":\"no\"},\"init\":{\"cmd\":[\"run\"]},"
        "\"metadata\":{\"managed_by\":\"lambdo\",\"lambdo_group\":\"g1\","
        "\"lambdo_pool\":\"k\\\"1\"}}}");
    free(text);
}

static void test_machine_limits_init(void **state)
{
    struct fly_machine_limits l;
    const struct ratelimit *action[] = { &l.update, &l.lease, &l.other };

    fly_machine_limits_init(&l);
    for (size_t i = 0; i < 3; i++) {
        assert_true(action[i]->rate == 1.0);
        assert_int_equal(action[i]->burst, 3);
        assert_true(action[i]->tokens == 3.0);
    }
    assert_true(l.get.rate == 5.0);
    assert_int_equal(l.get.burst, 10);
    assert_true(l.get.tokens == 10.0);
    fly_machine_limits_destroy(&l);
}

#define LEASE_OK "{\"status\":\"success\",\"data\":{\"nonce\":\"n0nce-7f3a\"," \
                 "\"expires_at\":1700000030,\"owner\":\"lambdo\",\"version\":\"v1\"}}"

struct lease_case {
    const char *name, *json;
    int rc;
    const char *nonce;
    long long expires_at;
};

static void test_parse_lease(void **state)
{
    static const struct lease_case cases[] = {
        { "Fly's answer", LEASE_OK, 0, "n0nce-7f3a", 1700000030 },
        { "no expires_at", "{\"data\":{\"nonce\":\"abc\"}}", 0, "abc", 0 },
        { "expires_at a string", "{\"data\":{\"nonce\":\"abc\",\"expires_at\":\"17\"}}", 0,
          "abc", 0 },
        { "expires_at not whole", "{\"data\":{\"nonce\":\"abc\",\"expires_at\":1.5}}", 0, "abc",
          0 },
        { "expires_at negative", "{\"data\":{\"nonce\":\"abc\",\"expires_at\":-3}}", 0, "abc",
          0 },
        { "63 characters", "{\"data\":{\"nonce\":\"123456789012345678901234567890123456789012"
                           "345678901234567890123\"}}", 0,
          "123456789012345678901234567890123456789012345678901234567890123", 0 },
        { "64 characters", "{\"data\":{\"nonce\":\"123456789012345678901234567890123456789012"
                           "3456789012345678901234\"}}", -1, "", 0 },
        { "no nonce", "{\"status\":\"success\",\"data\":{\"expires_at\":1}}", -1, "", 1 },
        { "nonce a number", "{\"data\":{\"nonce\":12}}", -1, "", 0 },
        { "nonce empty", "{\"data\":{\"nonce\":\"\"}}", -1, "", 0 },
        { "nonce null", "{\"data\":{\"nonce\":null}}", -1, "", 0 },
        { "nonce with a control character", "{\"data\":{\"nonce\":\"a\\nb\"}}", -1, "", 0 },
        { "nonce not ASCII", "{\"data\":{\"nonce\":\"\\u00e9\"}}", -1, "", 0 },
        { "data a string", "{\"data\":\"abc\"}", -1, "", 0 },
        { "nonce at the top", "{\"nonce\":\"abc\"}", -1, "", 0 },
        { "an array", "[{\"data\":{\"nonce\":\"abc\"}}]", -1, "", 0 },
        { "not JSON", "<html>", -1, "", 0 },
        { "empty", "", -1, "", 0 },
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char nonce[FLY_NONCE_MAX];
        long long at = 99;
        struct lerr e = { 0 };
        int rc;

        memset(nonce, 'X', sizeof nonce);
        rc = fly_parse_lease(cases[i].json, strlen(cases[i].json), nonce, &at, &e);
        if (rc != cases[i].rc || strcmp(nonce, cases[i].nonce) || at != cases[i].expires_at)
            fail_msg("%s: rc %d nonce \"%.64s\" expires_at %lld", cases[i].name, rc, nonce, at);
        if (rc < 0) {
            assert_int_equal(e.kind, LERR_MALFORMED);
            assert_has(e.msg, "no usable nonce");
        }
    }
}

#define POOLED(id, state, key) \
    "{\"id\":\"" id "\",\"instance_id\":\"v-" id "\",\"state\":\"" state "\",\"region\":\"iad\"," \
    "\"config\":{\"image\":\"img\",\"metadata\":{\"managed_by\":\"lambdo\",\"lambdo_pool\":" key \
    "}}}"

static void test_parse_pool_list(void **state)
{
    static const char list[] = "["
        POOLED("p1", "stopped", "\"k1\"") ","
        "{\"id\":\"other\",\"state\":\"stopped\",\"config\":{\"metadata\":{\"managed_by\":"
        "\"someone\",\"lambdo_pool\":\"k1\"}}},"
        "{\"id\":\"oneshot\",\"state\":\"started\",\"config\":{\"metadata\":{\"managed_by\":"
        "\"lambdo\",\"lambdo_group\":\"g\"}}},"
        POOLED("num", "stopped", "5") ","
        POOLED("empty", "stopped", "\"\"") ","
        POOLED("long", "stopped", "\"1234567890123456789012345678901234567890\"") ","
        POOLED("p39", "started", "\"123456789012345678901234567890123456789\"") ","
        POOLED("ctl", "stopped", "\"a\\u0001\"") ","
        POOLED("dead", "destroyed", "\"k1\"") ","
        POOLED("dying", "destroying", "\"k1\"") ","
        "{\"state\":\"stopped\",\"config\":{\"metadata\":{\"managed_by\":\"lambdo\","
        "\"lambdo_pool\":\"k1\"}}},"
        "{\"id\":\"p2\",\"config\":{\"metadata\":{\"managed_by\":\"lambdo\",\"lambdo_pool\":"
        "\"k 2\"}}},"
        "{\"id\":\"noconfig\",\"state\":\"stopped\"},"
        "5,\"x\",null,[]"
        "]";
    struct fly_pool_machine *m;
    struct lerr e = { 0 };
    size_t n;

    assert_int_equal(fly_parse_pool_list(list, sizeof list - 1, &m, &n, &e), 0);
    assert_int_equal(n, 3);
    assert_string_equal(m[0].id, "p1");
    assert_string_equal(m[0].instance_id, "v-p1");
    assert_string_equal(m[0].state, "stopped");
    assert_string_equal(m[0].region, "iad");
    assert_string_equal(m[0].pool_key, "k1");
    assert_string_equal(m[1].id, "p39");
    assert_string_equal(m[1].state, "started");
    assert_string_equal(m[1].pool_key, "123456789012345678901234567890123456789");
    /* no state, instance or region: "" (a Machine without a state is kept) */
    assert_string_equal(m[2].id, "p2");
    assert_string_equal(m[2].pool_key, "k 2");
    assert_string_equal(m[2].state, "");
    assert_string_equal(m[2].instance_id, "");
    assert_string_equal(m[2].region, "");
    free(m);

    /* nothing of ours: NULL and 0 */
    m = (void *)1;
    assert_int_equal(fly_parse_pool_list("[]", 2, &m, &n, &e), 0);
    assert_null(m);
    assert_int_equal(n, 0);
    m = (void *)1;
    assert_int_equal(fly_parse_pool_list("[{\"id\":\"x\"}]", 12, &m, &n, &e), 0);
    assert_null(m);
    assert_int_equal(n, 0);
    {
        static const char *const bad[] = { "{}", "{\"machines\":[]}", "nope", "", "5" };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            m = (void *)1;
            n = 7;
            assert_int_equal(fly_parse_pool_list(bad[i], strlen(bad[i]), &m, &n, &e), -1);
            assert_int_equal(e.kind, LERR_MALFORMED);
            assert_has(e.msg, "not a JSON array");
            assert_null(m);
            assert_int_equal(n, 0);
        }
    }
}

static void test_parse_exit_state(void **state)
{
    static const struct { const char *json, *state; } cases[] = {
        { "{\"state\":\"stopped\"}", "stopped" },
        { "{\"state\":\"started\",\"events\":[]}", "started" },
        { "{\"state\":5}", "" },
        { "{}", "" },
        { "[{\"type\":\"exit\",\"state\":\"stopped\"}]", "" },  /* an event list: no state */
        { "{\"state\":\"a\\nb\\u00e9\"}", "a b??" },
        { "{\"state\":\"abcdefghijklmnopqrstuvwxyz\"}", "abcdefghijklmnopqrst..." },
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct fly_exit x;
        struct lerr e = { 0 };

        memset(&x, 0x5A, sizeof x);
        assert_int_equal(fly_parse_exit(cases[i].json, strlen(cases[i].json), &x, &e), 0);
        assert_string_equal(x.state, cases[i].state);
    }
}

/* Every call on one Machine (and, as a check, the create and the list, which are not) */
enum pool_op { OP_UPDATE, OP_LEASE, OP_RELEASE, OP_STOP, OP_DESTROY, OP_WAIT, OP_SHOW,
               OP_CREATE, OP_LIST, OP_COUNT };

static const char *const op_answer[OP_COUNT] = {
    [OP_UPDATE] = "{\"id\":\"m1\",\"instance_id\":\"v2\",\"region\":\"iad\"}",
    [OP_LEASE] = LEASE_OK, [OP_RELEASE] = "{\"ok\":true}", [OP_STOP] = "{\"ok\":true}",
    [OP_DESTROY] = "{\"ok\":true}", [OP_WAIT] = "{\"ok\":true}", [OP_SHOW] = SHOW_EXITED,
    [OP_CREATE] = "{\"id\":\"m9\",\"region\":\"iad\"}", [OP_LIST] = "[]",
};

static const struct fly_machine_spec update_spec = {
    "img:1", NULL, NULL, "[{\"a\":1}]", 9, "g1", NULL, 0, "k1", 0
};

/* Runs op on Machine m1; 0 or -1. */
static int run_op(struct env *v, enum pool_op op, struct lerr *e)
{
    struct fly_machine_spec spec = update_spec;
    struct fly_call_result r;
    struct fly_machine m;
    struct fly_exit x;
    struct fly_pool_machine *list;
    char nonce[FLY_NONCE_MAX];
    long long at;
    size_t n;
    int rc = -1;

    spec.preset = preset_find("shared-cpu-1x");
    switch (op) {
    case OP_UPDATE: return fly_update_machine(&v->http, &v->t, "m1", &spec, &m, &r, e);
    case OP_LEASE: return fly_lease_acquire(&v->http, &v->t, "m1", 30, nonce, &at, &r, e);
    case OP_RELEASE: return fly_lease_release(&v->http, &v->t, "m1", &r, e);
    case OP_STOP: return fly_stop_machine(&v->http, &v->t, "m1", &r, e);
    case OP_DESTROY: return fly_destroy_machine(&v->http, &v->t, "m1", 1, &r, e);
    case OP_WAIT: return fly_wait_machine(&v->http, &v->t, "m1", NULL, "stopped", 5, &r, e);
    case OP_SHOW: return fly_machine_exit(&v->http, &v->t, "m1", &x, e);
    case OP_CREATE: return fly_create_machine(&v->http, &v->t, &spec, NULL, 0, &m, e);
    case OP_LIST:
        rc = fly_list_pool(&v->http, &v->t, &list, &n, e);
        free(list);
        return rc;
    default: return rc;
    }
}

/* The lease nonce goes with every call on the Machine when the target holds one, and with
 * none otherwise; never in the log. */
static void test_lease_nonce_sent(void **state)
{
    for (int op = 0; op < OP_COUNT; op++) {
        for (int held = 0; held < 2; held++) {
            const struct reply reply = { "200 OK", op_answer[op], 0, 0 };
            struct server s;
            struct env v;
            struct lerr e = { 0 };
            char log[8192];
            int rc;

            server_start(&s, &reply, 1, -1);
            env_open(&v, s.port, "", NULL, NULL, NULL);
            v.t.lease_nonce = held ? "n0nce-7f3a" : NULL;
            rc = run_op(&v, (enum pool_op)op, &e);
            env_close(&v, &e, log, sizeof log);
            server_stop(&s);
            if (rc != 0)
                fail_msg("op %d: %s", op, e.msg);
            assert_int_equal(s.served, 1);
            if (strcmp(s.seen[0].nonce, held && op < OP_CREATE ? "n0nce-7f3a" : ""))
                fail_msg("op %d (%s), lease %s: nonce header \"%s\"", op, s.seen[0].line,
                         held ? "held" : "not held", s.seen[0].nonce);
            assert_null(strstr(log, "n0nce"));
            assert_null(strstr(e.msg, "n0nce"));
        }
    }
}

/* With the Machine's own buckets, each call takes its token from its kind's (and none of
 * get_rl); without them, from get_rl. */
static void test_machine_buckets(void **state)
{
    for (int op = 0; op < OP_CREATE; op++) {
        for (int own = 0; own < 2; own++) {
            const struct reply reply = { "200 OK", op_answer[op], 0, 0 };
            struct fly_machine_limits l;
            struct ratelimit get_rl;
            struct ratelimit *const b[] = { &l.update, &l.lease, &l.other, &l.get };
            const int want = op == OP_UPDATE ? 0 : op <= OP_RELEASE ? 1 : op <= OP_DESTROY ? 2 : 3;
            struct server s;
            struct env v;
            struct lerr e = { 0 };
            char log[8192];

            fly_machine_limits_init(&l);
            assert_int_equal(ratelimit_init(&get_rl, 1, 5, &e), 0);
            server_start(&s, &reply, 1, -1);
            env_open(&v, s.port, "", NULL, &get_rl, NULL);
            v.t.limits = own ? &l : NULL;
            if (run_op(&v, (enum pool_op)op, &e) != 0)
                fail_msg("op %d: %s", op, e.msg);
            env_close(&v, &e, log, sizeof log);
            server_stop(&s);
            /* a full bucket loses exactly one token to a reservation */
            for (int i = 0; i < 4; i++)
                if (b[i]->tokens != b[i]->burst - (own && i == want))
                    fail_msg("op %d, own %d: bucket %d has %g tokens", op, own, i, b[i]->tokens);
            if (get_rl.tokens != 5 - !own)
                fail_msg("op %d, own %d: get_rl has %g tokens", op, own, get_rl.tokens);
            fly_machine_limits_destroy(&l);
            ratelimit_destroy(&get_rl);
        }
    }
}

/* A 429 on an update penalizes the Machine's update bucket, not get_rl, and a second update
 * waits for that bucket's next token. */
static void test_machine_bucket_429(void **state)
{
    static const struct reply script[] = {
        { "429 Too Many Requests\r\nRetry-After: 1", "{\"error\":\"rate limited\"}", 0, 0 },
        { "200 OK", "{\"id\":\"m1\",\"instance_id\":\"v2\"}", 0, 0 },
        { "200 OK", "{\"id\":\"m1\",\"instance_id\":\"v3\"}", 0, 0 },
    };
    struct fly_machine_limits l;
    struct ratelimit get_rl;
    struct server s;
    struct env v;
    struct lerr e = { 0 };
    char log[8192];
    int64_t t0, t1, t2;

    fly_machine_limits_init(&l);
    ratelimit_destroy(&l.update);
    assert_int_equal(ratelimit_init(&l.update, 2, 1, &e), 0);  /* 2 a second, burst 1 */
    assert_int_equal(ratelimit_init(&get_rl, 1000, 10, &e), 0);
    server_start(&s, script, 3, -1);
    env_open(&v, s.port, "", NULL, &get_rl, NULL);
    v.t.limits = &l;
    t0 = ratelimit_now_ns();
    assert_int_equal(run_op(&v, OP_UPDATE, &e), 0);
    t1 = ratelimit_now_ns();
    assert_int_equal(run_op(&v, OP_UPDATE, &e), 0);
    t2 = ratelimit_now_ns();
    env_close(&v, &e, log, sizeof log);
    server_stop(&s);
    assert_int_equal(s.served, 3);
    assert_true(l.update.pause_until_ns >= t0 + 1000000000LL);
    assert_true(t1 - t0 >= 1000000000LL);  /* the retry waited for the penalty */
    assert_true(t2 - t1 >= 400000000LL);   /* the next token, 0.5 s after the last */
    assert_int_equal(get_rl.pause_until_ns, 0);
    assert_true(get_rl.tokens == 10.0);
    assert_int_equal(l.other.pause_until_ns, 0);
    assert_int_equal(l.get.pause_until_ns, 0);
    assert_has(log, "Machine m1: update: HTTP 429");
    fly_machine_limits_destroy(&l);
    ratelimit_destroy(&get_rl);
}

static void test_update_outcomes(void **state)
{
    static const struct {
        struct reply reply;
        int rc;
        enum fly_call_outcome outcome;
        enum lerr_kind kind;
        const char *id, *instance_id, *region, *error;
    } cases[] = {
        { { "200 OK", "{\"id\":\"m1\",\"instance_id\":\"v2\",\"region\":\"iad\","
                      "\"state\":\"starting\"}", 0, 0 },
          0, FLY_CALL_OK, LERR_NONE, "m1", "v2", "iad", "" },
        { { "200 OK", "{\"instance_id\":\"v3\"}", 0, 0 },
          0, FLY_CALL_OK, LERR_NONE, "m1", "v3", "", "" },
        { { "200 OK", "{\"id\":\"\\u0001\",\"instance_id\":\"v3\"}", 0, 0 },
          0, FLY_CALL_OK, LERR_NONE, "m1", "v3", "", "" },
        { { "200 OK", "<html>", 0, 0 },
          -1, FLY_CALL_RETRY_LATER, LERR_MALFORMED, "m1", "", "", "" },
        { { "404 Not Found", "{\"error\":\"machine not found\"}", 0, 0 },
          -1, FLY_CALL_GONE, LERR_HTTP, "", "", "", "machine not found" },
        { { "409 Conflict", "{\"error\":\"aborted: machine ID m1 lease currently held by x\"}",
            0, 0 },
          -1, FLY_CALL_FAILED, LERR_HTTP, "", "", "", "lease currently held by x" },
        { { "422 Unprocessable Entity",
            "{\"error\":\"failed to get manifest docker.io/library/nope:latest\"}", 0, 0 },
          -1, FLY_CALL_FAILED, LERR_HTTP, "", "", "", "failed to get manifest" },
        { { "503 Service Unavailable", "{\"error\":\"try later\"}", 0, 0 },
          -1, FLY_CALL_RETRY_LATER, LERR_HTTP, "", "", "", "try later" },
    };
    struct fly_machine_spec spec = update_spec;
    char *want_body;
    size_t want_len;
    struct lerr e = { 0 };

    spec.preset = preset_find("shared-cpu-1x");
    assert_int_equal(fly_create_body(&spec, NULL, &want_body, &want_len, &e), 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct server s;
        struct env v;
        struct fly_call_result r;
        struct fly_machine m;
        char log[8192];
        int rc;

        server_start(&s, &cases[i].reply, 1, -1);
        env_open(&v, s.port, "", NULL, NULL, NULL);
        memset(&m, 0x5A, sizeof m);
        rc = fly_update_machine(&v.http, &v.t, "m1", &spec, &m, &r, &e);
        env_close(&v, &e, log, sizeof log);
        server_stop(&s);
        assert_string_equal(s.seen[0].line, "POST /v1/apps/my-app/machines/m1 HTTP/1.1");
        assert_string_equal(s.seen[0].ctype, "application/json");
        assert_string_equal(s.seen[0].body, want_body);
        if (rc != cases[i].rc || r.outcome != cases[i].outcome)
            fail_msg("case %zu: rc %d outcome %d (%s)", i, rc, r.outcome, e.msg);
        assert_int_equal(r.status, atoi(cases[i].reply.head));
        assert_int_equal(m.status, r.status);
        if (rc < 0) {
            assert_int_equal(e.kind, cases[i].kind);
            assert_has(e.msg, "Machine m1: update: HTTP ");
        }
        if (rc == 0) {
            assert_string_equal(m.id, cases[i].id);
            assert_string_equal(m.instance_id, cases[i].instance_id);
            assert_string_equal(m.region, cases[i].region);
        }
        assert_has(r.error, cases[i].error);
    }
    free(want_body);
}

static void test_lease_outcomes(void **state)
{
    static const char held[] = "{\"status\":\"error\",\"message\":\"machine ID m1 lease "
                               "currently held by x\",\"code\":\"invalid\"}";
    static const struct {
        int release;
        struct reply reply;
        int rc;
        enum fly_call_outcome outcome;
        enum lerr_kind kind;
        const char *nonce;
    } cases[] = {
        { 0, { "200 OK", LEASE_OK, 0, 0 }, 0, FLY_CALL_OK, LERR_NONE, "n0nce-7f3a" },
        { 0, { "409 Conflict", held, 0, 0 }, -1, FLY_CALL_FAILED, LERR_HTTP, "" },
        { 0, { "404 Not Found", "{\"error\":\"machine not found\"}", 0, 0 }, -1, FLY_CALL_GONE,
          LERR_HTTP, "" },
        { 0, { "200 OK", "{\"status\":\"success\",\"data\":{}}", 0, 0 }, -1,
          FLY_CALL_RETRY_LATER, LERR_MALFORMED, "" },
        { 0, { "503 Service Unavailable", "", 0, 0 }, -1, FLY_CALL_RETRY_LATER, LERR_HTTP, "" },
        { 1, { "200 OK", "{\"ok\":true}", 0, 0 }, 0, FLY_CALL_OK, LERR_NONE, NULL },
        { 1, { "404 Not Found", "{\"error\":\"lease not found\"}", 0, 0 }, 0, FLY_CALL_GONE,
          LERR_NONE, NULL },
        { 1, { "409 Conflict", held, 0, 0 }, -1, FLY_CALL_FAILED, LERR_HTTP, NULL },
        { 1, { "500 Internal Server Error", "", 0, 0 }, -1, FLY_CALL_RETRY_LATER, LERR_HTTP,
          NULL },
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct server s;
        struct env v;
        struct fly_call_result r;
        struct lerr e = { 0 };
        char log[8192], nonce[FLY_NONCE_MAX] = "X";
        long long at = 5;
        int rc;

        server_start(&s, &cases[i].reply, 1, -1);
        env_open(&v, s.port, "", NULL, NULL, NULL);
        v.t.lease_nonce = cases[i].release ? "n0nce-7f3a" : NULL;
        if (cases[i].release)
            rc = fly_lease_release(&v.http, &v.t, "m1", &r, &e);
        else
            rc = fly_lease_acquire(&v.http, &v.t, "m1", 30, nonce, &at, &r, &e);
        env_close(&v, &e, log, sizeof log);
        server_stop(&s);
        if (rc != cases[i].rc || r.outcome != cases[i].outcome)
            fail_msg("case %zu: rc %d outcome %d (%s)", i, rc, r.outcome, e.msg);
        if (rc < 0) {
            assert_int_equal(e.kind, cases[i].kind);
            assert_has(e.msg, cases[i].release ? "Machine m1: release: HTTP "
                                               : "Machine m1: lease: HTTP ");
        }
        if (r.status == 409)
            assert_has(r.error, "lease currently held by x");
        if (cases[i].release) {
            assert_string_equal(s.seen[0].line,
                                "DELETE /v1/apps/my-app/machines/m1/lease HTTP/1.1");
            continue;
        }
        assert_string_equal(s.seen[0].line,
                            "POST /v1/apps/my-app/machines/m1/lease?ttl=30 HTTP/1.1");
        assert_string_equal(s.seen[0].ctype, "application/json");
        assert_string_equal(s.seen[0].body, "{\"ttl\":30}");
        assert_string_equal(nonce, cases[i].nonce);
        assert_true(at == (rc == 0 ? 1700000030 : 0));
        if (rc == 0)
            assert_has(log, "Machine m1: lease: lease taken until 1700000030");
    }
    /* r may be NULL */
    {
        static const struct reply ok[] = { { "404 Not Found", "", 0, 0 } };
        struct server s;
        struct env v;
        struct lerr e = { 0 };
        char log[8192];

        server_start(&s, ok, 1, -1);
        env_open(&v, s.port, "", NULL, NULL, NULL);
        assert_int_equal(fly_lease_release(&v.http, &v.t, "m1", NULL, &e), 0);
        env_close(&v, &e, log, sizeof log);
        server_stop(&s);
    }
}

static void test_list_pool(void **state)
{
    static const struct {
        struct reply reply;
        int rc;
        enum lerr_kind kind;
        size_t n;
    } cases[] = {
        { { "200 OK", "[" POOLED("p1", "stopped", "\"k1\"") ",{\"id\":\"x\"},"
                      POOLED("p2", "started", "\"k2\"") "]", 0, 0 }, 0, LERR_NONE, 2 },
        { { "200 OK", "[]", 0, 0 }, 0, LERR_NONE, 0 },
        { { "200 OK", "{\"machines\":[]}", 0, 0 }, -1, LERR_MALFORMED, 0 },
        { { "500 Internal Server Error", "{\"error\":\"oops\"}", 0, 0 }, -1, LERR_HTTP, 0 },
        { { "401 Unauthorized", "{\"error\":\"unauthorized\"}", 0, 0 }, -1, LERR_HTTP, 0 },
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct server s;
        struct env v;
        struct ratelimit get_rl;
        struct fly_pool_machine *m = (void *)1;
        struct lerr e = { 0 };
        char log[8192];
        size_t n = 9;
        int rc;

        assert_int_equal(ratelimit_init(&get_rl, 1, 5, &e), 0);
        server_start(&s, &cases[i].reply, 1, -1);
        env_open(&v, s.port, "/p", NULL, &get_rl, NULL);
        rc = fly_list_pool(&v.http, &v.t, &m, &n, &e);
        env_close(&v, &e, log, sizeof log);
        server_stop(&s);
        assert_string_equal(s.seen[0].line, "GET /p/v1/apps/my-app/machines HTTP/1.1");
        if (rc != cases[i].rc || n != cases[i].n)
            fail_msg("case %zu: rc %d n %zu (%s)", i, rc, n, e.msg);
        if (rc < 0) {
            assert_int_equal(e.kind, cases[i].kind);
            assert_has(e.msg, "Fly app my-app: list");
        }
        assert_true(get_rl.tokens == 4.0);
        if (n == 2) {
            assert_string_equal(m[0].id, "p1");
            assert_string_equal(m[0].pool_key, "k1");
            assert_string_equal(m[1].id, "p2");
            assert_string_equal(m[1].state, "started");
        } else {
            assert_null(m);
        }
        free(m);
        ratelimit_destroy(&get_rl);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_presets),
        cmocka_unit_test(test_base64_rfc4648),
        cmocka_unit_test(test_base64_every_byte),
        cmocka_unit_test(test_body_shape),
        cmocka_unit_test(test_body_exact),
        cmocka_unit_test(test_body_guest_every_preset),
        cmocka_unit_test(test_body_command),
        cmocka_unit_test(test_body_escaping),
        cmocka_unit_test(test_body_refused),
        cmocka_unit_test(test_body_large_events),
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_classify_long_error),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_auth_header),
        cmocka_unit_test(test_machines_url),
        cmocka_unit_test(test_create_next_region),
        cmocka_unit_test(test_create_rate_limited),
        cmocka_unit_test(test_create_rate_limited_too_long),
        cmocka_unit_test(test_create_give_up),
        cmocka_unit_test(test_create_every_region_fails),
        cmocka_unit_test(test_create_connection_refused),
        cmocka_unit_test(test_create_any_region),
        cmocka_unit_test(test_create_cancelled_while_waiting),
        cmocka_unit_test(test_create_cancelled_before),
        cmocka_unit_test(test_create_stop_while_waiting),
        cmocka_unit_test(test_create_stop_in_flight),
        cmocka_unit_test(test_create_bad_token),
        cmocka_unit_test(test_machine_url),
        cmocka_unit_test(test_classify_call),
        cmocka_unit_test(test_parse_exit),
        cmocka_unit_test(test_wait_reached_after_429),
        cmocka_unit_test(test_wait_outcomes),
        cmocka_unit_test(test_wait_connection_refused),
        cmocka_unit_test(test_wait_invalid),
        cmocka_unit_test(test_wait_rate_limited_too_long),
        cmocka_unit_test(test_wait_stop_while_rate_limited),
        cmocka_unit_test(test_exit_from_show),
        cmocka_unit_test(test_exit_events_fallback),
        cmocka_unit_test(test_exit_gone_and_errors),
        cmocka_unit_test(test_stop_and_destroy),
        cmocka_unit_test(test_create_429_penalizes),
        cmocka_unit_test(test_create_stop_waiting_for_token),
        cmocka_unit_test(test_body_pool),
        cmocka_unit_test(test_machine_limits_init),
        cmocka_unit_test(test_parse_lease),
        cmocka_unit_test(test_parse_pool_list),
        cmocka_unit_test(test_parse_exit_state),
        cmocka_unit_test(test_lease_nonce_sent),
        cmocka_unit_test(test_machine_buckets),
        cmocka_unit_test(test_machine_bucket_429),
        cmocka_unit_test(test_update_outcomes),
        cmocka_unit_test(test_lease_outcomes),
        cmocka_unit_test(test_list_pool),
    };

    log_setup(LOG_LEVEL_INFO, 0);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
