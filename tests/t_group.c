/* group: event checks (tables of accepted and refused attributes and bodies, with the
 * reason each refusal must give), grouping, splitting, the events file and group ids. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cJSON.h"
#include "group.h"
#include "json.h"

#define BODY(s) (s), sizeof(s) - 1

static struct event ev_make(const char *image, const char *size, const char *command,
                            const char *body)
{
    struct event ev = { "id", body, strlen(body), image, size, command, NULL, NULL, 0 };
    return ev;
}

static void assert_has(const char *msg, const char *want)
{
    if (!strstr(msg, want))
        fail_msg("message \"%s\" lacks \"%s\"", msg, want);
}

/* ---- size -------------------------------------------------------------------------------- */

static void test_every_preset_accepted(void **state)
{
    unsigned n = 0;

    for (const struct preset *p; (p = preset_at(n)); n++) {
        struct event ev = ev_make("img", p->name, NULL, "{}");
        struct lerr e = { 0 };
        if (group_check(&ev, &e) != 0)
            fail_msg("%s refused: %s", p->name, e.msg);
        assert_ptr_equal(preset_find(p->name), p);
    }
    assert_int_equal(n, 18);
}

static void test_size_refused(void **state)
{
    static const char *const bad[] = {
        "performance-3x", "shared-cpu-16x", "", "PERFORMANCE-2X", "performance-2x ",
        " performance-2x", "performance-2", "performance", "a100", "shared-cpu-1x\n",
        "performance-02x", "l40", "a10x",
    };

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct event ev = ev_make("img", bad[i], NULL, "{}");
        struct lerr e = { 0 };
        char want[128];
        assert_int_equal(group_check(&ev, &e), -1);
        assert_int_equal(e.kind, LERR_INVALID);
        assert_has(e.msg, "attribute size: \"");
        assert_has(e.msg, "is not a Fly preset (shared-cpu-{1,2,4,6,8}x, "
                          "performance-{1,2,4,6,8,10,12,14,16}x, a100-40gb, a100-80gb, l40s, a10)");
        if (!strchr(bad[i], '\n')) {
            snprintf(want, sizeof want, "attribute size: \"%s\" is not", bad[i]);
            assert_has(e.msg, want);
        }
    }
}

static void test_size_absent_is_default(void **state)
{
    struct event ev = ev_make("img", NULL, NULL, "{}");
    struct lerr e = { 0 };

    assert_int_equal(group_check(&ev, &e), 0);
    assert_non_null(preset_find(PRESET_DEFAULT));
}

/* ---- image ------------------------------------------------------------------------------- */

struct attr_case {
    const char *value;
    const char *why;  /* NULL: accepted; else a substring of the reason */
};

static void test_image(void **state)
{
    static char long_ok[GROUP_IMAGE_MAX + 1], too_long[GROUP_IMAGE_MAX + 2];
    const struct attr_case cases[] = {
        { "alpine", NULL },
        { "registry.fly.io/my-app:deployment-01H@sha256:0123abcd", NULL },
        { "localhost:5000/a/b/c:latest", NULL },
        { "we\"ird\\name", NULL },  /* not a valid reference, but harmless: Fly decides */
        { long_ok, NULL },
        { NULL, "attribute image: missing" },
        { "", "attribute image: empty" },
        { "alpine latest", "attribute image: \"alpine latest\" has a space at byte 6" },
        { "alpine\t", "has a control character at byte 6" },
        { "alpine\n", "has a control character at byte 6" },
        { "alp\x7fine", "has a control character at byte 3" },
        { "caf\xc3\xa9", "has a non-ASCII byte at byte 3" },
        { too_long, "attribute image: 513 bytes long, over the limit of 512" },
    };

    memset(long_ok, 'a', GROUP_IMAGE_MAX);
    memset(too_long, 'a', GROUP_IMAGE_MAX + 1);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct event ev = ev_make(cases[i].value, NULL, NULL, "{}");
        struct lerr e = { 0 };
        int rc = group_check(&ev, &e);
        if (!cases[i].why) {
            if (rc != 0)
                fail_msg("case %zu refused: %s", i, e.msg);
            continue;
        }
        if (rc != -1)
            fail_msg("case %zu accepted", i);
        assert_int_equal(e.kind, LERR_INVALID);
        assert_has(e.msg, cases[i].why);
        assert_null(strchr(e.msg, '\n'));
    }
}

/* ---- command ----------------------------------------------------------------------------- */

static void test_command(void **state)
{
    static const struct attr_case cases[] = {
        { NULL, NULL },
        { "[\"run\"]", NULL },
        { "[ \"a\" , \"b\" ]", NULL },
        { "\n[\"a\",\"\"]\t", NULL },
        { "[\"\\u00e9\", \"\\ud83d\\ude00\", \"a\\\"b\"]", NULL },
        { "not json", "attribute command: not valid JSON (at byte 0: unexpected character)" },
        { "", "attribute command: not valid JSON (at byte 0: unexpected end)" },
        { "[\"a\"] x", "attribute command: not valid JSON (at byte 6: unexpected data" },
        { "[\"a\",]", "attribute command: not valid JSON (at byte 5" },
        { "[\"a\"", "attribute command: not valid JSON (at byte 4: unexpected end)" },
        { "{\"cmd\":[\"a\"]}",
          "attribute command: must be a JSON array of strings, not an object" },
        { "\"a\"", "must be a JSON array of strings, not a string" },
        { "7", "must be a JSON array of strings, not a number" },
        { "null", "must be a JSON array of strings, not null" },
        { "[\"a\",1]", "attribute command: element 2 is not a string (it is a number)" },
        { "[\"a\",\"b\",[\"c\"]]", "element 3 is not a string (it is an array)" },
        { "[{}]", "element 1 is not a string (it is an object)" },
        { "[\"a\", true]", "element 2 is not a string (it is a boolean)" },
        { "[\"a\", null]", "element 2 is not a string (it is null)" },
        { "[]", "attribute command: empty array" },
        { " [ ] ", "attribute command: empty array" },
        { "[\"\"]", "attribute command: element 1 is empty" },
        { "[\"\", \"x\"]", "attribute command: element 1 is empty" },
        { "[\"a\\u0000b\"]", "attribute command: element 1 has a NUL character" },
        { "[\"a\", \"\\u0000\"]", "attribute command: element 2 has a NUL character" },
        /* a NUL comes only from the escape \u0000: not from \\ then "u0000", nor \u0001 */
        { "[\"a\\\\u0000\", \"\\u0001\", \"\\\\\\u00000\"]",
          "attribute command: element 3 has a NUL character" },
        { "[\"a\\\\u0000\", \"\\u0001\\u1000\"]", NULL },
        { "[\"\\ud800\"]", "not valid JSON (at byte 2: unpaired surrogate" },
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct event ev = ev_make("img", NULL, cases[i].value, "{}");
        struct lerr e = { 0 };
        int rc = group_check(&ev, &e);
        if (!cases[i].why) {
            if (rc != 0)
                fail_msg("case %zu refused: %s", i, e.msg);
            continue;
        }
        if (rc != -1)
            fail_msg("case %zu (%s) accepted", i, cases[i].value);
        assert_int_equal(e.kind, LERR_INVALID);
        assert_has(e.msg, cases[i].why);
    }
}

/* ---- body -------------------------------------------------------------------------------- */

struct body_case {
    const char *body;
    size_t len;
    long err_at;      /* -1: valid */
    const char *why;  /* for invalid ones: a substring of the reason */
};

static const struct body_case bodies[] = {
    { BODY("{\"a\":1}"), -1, NULL },
    { BODY("[1,2,{\"b\":[true,false,null]}]"), -1, NULL },
    { BODY("\"just a string\""), -1, NULL },
    { BODY("12345678901234567890.123456789e-5"), -1, NULL },
    { BODY("-0"), -1, NULL },
    { BODY("0.5E+10"), -1, NULL },
    { BODY("1e-0"), -1, NULL },
    { BODY("true"), -1, NULL },
    { BODY("null"), -1, NULL },
    { BODY(" \t\r\n{ } \n"), -1, NULL },
    { BODY("{}"), -1, NULL },
    { BODY("[]"), -1, NULL },
    { BODY("\"\\u00e9\\ud83d\\ude00\\u0000\\/\\b\\f\\n\\r\\t\\\"\\\\\""), -1, NULL },
    { BODY("\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xef\xbf\xbd \x7f\""), -1, NULL },
    { BODY("{\"a\":{\"b\":{\"c\":[[],[{}]]}},\"\":\"\"}"), -1, NULL },
    { BODY("{\"key\": \"value\", x}"), 17, "expected a string key" },
    { BODY(""), 0, "body is empty" },
    { BODY("   "), 3, "unexpected end" },
    { BODY("{\"a\":1} x"), 8, "unexpected data after the JSON value" },
    { BODY("{\"a\":1}\0"), 7, "unexpected data" },
    { BODY("{}\0\0"), 2, "unexpected data" },
    { BODY("{\"a\0\":1}"), 3, "control character in string" },
    { BODY("\xef\xbb\xbf{}"), 0, "unexpected character" },
    { BODY("\x0b{}"), 0, "unexpected character" },
    { BODY("{}\x0c"), 2, "unexpected data" },
    { BODY("01"), 0, "leading zero in number" },
    { BODY("[-01]"), 2, "leading zero in number" },
    { BODY("1."), 2, "expected a digit after the decimal point" },
    { BODY("1.e5"), 2, "expected a digit after the decimal point" },
    { BODY("-.5"), 1, "expected a digit" },
    { BODY(".5"), 0, "unexpected character" },
    { BODY("+1"), 0, "unexpected character" },
    { BODY("1e"), 2, "expected a digit in the exponent" },
    { BODY("1e+"), 3, "expected a digit in the exponent" },
    { BODY("-"), 1, "expected a digit" },
    { BODY("0x10"), 1, "unexpected data" },
    { BODY("NaN"), 0, "unexpected character" },
    { BODY("tru"), 0, "unexpected character" },
    { BODY("nulll"), 4, "unexpected data" },
    { BODY("\"a\tb\""), 2, "control character in string" },
    { BODY("\"a\nb\""), 2, "control character in string" },
    { BODY("\"abc"), 4, "unterminated string" },
    { BODY("\"abc\\"), 4, "unterminated string" },
    { BODY("\"\\x\""), 1, "bad escape in string" },
    { BODY("\"\\u12\""), 1, "bad \\u escape" },
    { BODY("\"\\u12g4\""), 1, "bad \\u escape" },
    { BODY("\"\\ud800\""), 1, "unpaired surrogate" },
    { BODY("\"\\udc00\\ud800\""), 1, "unpaired surrogate" },
    { BODY("\"\\ud800\\u0041\""), 1, "unpaired surrogate" },
    { BODY("\"\\ud800\\ud800\""), 1, "unpaired surrogate" },
    { BODY("\"\xc3\x28\""), 1, "invalid UTF-8" },
    { BODY("\"\xc0\xaf\""), 1, "invalid UTF-8" },
    { BODY("\"\xe0\x80\xaf\""), 1, "invalid UTF-8" },
    { BODY("\"\xed\xa0\x80\""), 1, "invalid UTF-8" },
    { BODY("\"\xf4\x90\x80\x80\""), 1, "invalid UTF-8" },
    { BODY("\"\xe2\x82\""), 1, "invalid UTF-8" },
    { BODY("\"\xff\""), 1, "invalid UTF-8" },
    { BODY("\"\x80\""), 1, "invalid UTF-8" },
    { BODY("[1,]"), 3, "unexpected character" },
    { BODY("[1 2]"), 3, "expected ',' or ']'" },
    { BODY("{\"a\" 1}"), 5, "expected ':'" },
    { BODY("{1:2}"), 1, "expected a string key" },
    { BODY("{\"a\":1,}"), 7, "expected a string key" },
    { BODY("{\"a\":1 \"b\":2}"), 7, "expected ',' or '}'" },
    { BODY("[1}"), 2, "expected ',' or ']'" },
    { BODY("{\"a\":1]"), 6, "expected ',' or '}'" },
    { BODY("["), 1, "unexpected end" },
    { BODY("{\"a\":"), 5, "unexpected end" },
    { BODY("{\"a\""), 4, "expected ':'" },
    { BODY("[1,2"), 4, "unexpected end" },
    { BODY("{} {}"), 3, "unexpected data" },
};

static void test_bodies(void **state)
{
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        const struct body_case *c = &bodies[i];
        struct event ev = { "id", c->body, c->len, "img", NULL, NULL, NULL, NULL, 0 };
        struct lerr e = { 0 };
        int rc = group_check(&ev, &e);
        char want[64];

        if (c->err_at < 0) {
            if (rc != 0)
                fail_msg("body %zu refused: %s", i, e.msg);
            continue;
        }
        if (rc != -1)
            fail_msg("body %zu accepted", i);
        assert_int_equal(e.kind, LERR_INVALID);
        if (c->len) {
            snprintf(want, sizeof want, "body is not valid JSON (at byte %ld: ", c->err_at);
            assert_has(e.msg, want);
        }
        assert_has(e.msg, c->why);
    }
}

/* Every body accepted here is accepted by cJSON too (the events file is then valid for
 * any parser), and a body refused by cJSON is refused here. */
static void test_bodies_stricter_than_cjson(void **state)
{
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        const struct body_case *c = &bodies[i];
        const char *end = NULL;
        cJSON *j = cJSON_ParseWithLengthOpts(c->body, c->len, &end, 0);
        int cjson_ok = j && (size_t)(end - c->body) <= c->len;
        int ours_ok = json_items(c->body, c->len, NULL, NULL, NULL, NULL) == 0;

        if (cjson_ok)
            while (end < c->body + c->len && strchr(" \t\r\n", *end) && *end)
                end++;
        cjson_ok = cjson_ok && end == c->body + c->len;
        cJSON_Delete(j);
        if (ours_ok && !cjson_ok)
            fail_msg("body %zu accepted here but not by cJSON", i);
        assert_int_equal(ours_ok, c->err_at < 0);
    }
}

/* Strings are read eight plain bytes at a time: whatever needs a look (a quote, a
 * backslash, a control byte, UTF-8, bad UTF-8) is found at every offset of a long string,
 * and decoding copies the runs around an escape exactly. */
static void test_json_string_offsets(void **state)
{
    static const struct {
        const char *bytes, *why;  /* why NULL: accepted */
        size_t after;             /* the error is at 1 + k + after */
    } marks[] = {
        { "\"", "unexpected data", 1 }, { "\\n", NULL, 0 },
        { "\x01", "control character in string", 0 }, { "\x7f", NULL, 0 },
        { "\xc3\xa9", NULL, 0 }, { "\xc3(", "invalid UTF-8", 0 }, { "\xff", "invalid UTF-8", 0 },
    };

    for (size_t m = 0; m < sizeof marks / sizeof marks[0]; m++) {
        for (size_t k = 0; k < 24; k++) {
            char buf[64], out[64];
            size_t n = 0, at = 0, len = 0;
            const char *why = NULL;
            struct json j;

            buf[n++] = '"';
            memset(buf + n, 'a', k);
            n += k;
            memcpy(buf + n, marks[m].bytes, strlen(marks[m].bytes));
            n += strlen(marks[m].bytes);
            memset(buf + n, 'b', 9);
            n += 9;
            buf[n++] = '"';
            if (!marks[m].why) {
                assert_int_equal(json_items(buf, n, NULL, NULL, NULL, NULL), 0);
                json_init(&j, buf, n);
                assert_int_equal(json_string(&j, out, sizeof out, &len), 0);
                assert_int_equal(len, k + (marks[m].bytes[0] == '\\' ? 1 : strlen(marks[m].bytes)) + 9);
                assert_int_equal(out[k], marks[m].bytes[0] == '\\' ? '\n' : marks[m].bytes[0]);
                assert_int_equal(out[len - 1], 'b');
                assert_int_equal(out[len], '\0');
                continue;
            }
            assert_int_equal(json_items(buf, n, NULL, NULL, &at, &why), -1);
            assert_int_equal(at, 1 + k + marks[m].after);
            assert_has(why, marks[m].why);
        }
    }
}

static void test_json_depth(void **state)
{
    char buf[2 * (JSON_MAX_DEPTH + 1)];
    size_t at = 0;
    const char *why = NULL;

    memset(buf, '[', JSON_MAX_DEPTH);
    memset(buf + JSON_MAX_DEPTH, ']', JSON_MAX_DEPTH);
    assert_int_equal(json_items(buf, 2 * JSON_MAX_DEPTH, NULL, NULL, NULL, NULL), 0);

    memset(buf, '[', JSON_MAX_DEPTH + 1);
    memset(buf + JSON_MAX_DEPTH + 1, ']', JSON_MAX_DEPTH + 1);
    assert_int_equal(json_items(buf, sizeof buf, NULL, NULL, &at, &why), -1);
    assert_int_equal(at, JSON_MAX_DEPTH);
    assert_string_equal(why, "nested too deeply");

    /* Alternating objects and arrays keep their own closing brackets. */
    {
        static const char mixed[] = "{\"a\":[{\"b\":[1,{\"c\":[]}]},2]}";
        static const char crossed[] = "{\"a\":[{\"b\":[1,{\"c\":[]}}],2]}";
        assert_int_equal(json_items(mixed, sizeof mixed - 1, NULL, NULL, NULL, NULL), 0);
        assert_int_equal(json_items(crossed, sizeof crossed - 1, NULL, NULL, &at, NULL), -1);
        assert_int_equal(at, 22);
    }
}

/* ---- grouping ---------------------------------------------------------------------------- */

#define MAXEV 32

struct plan_buf {
    struct group groups[MAXEV];
    size_t members[MAXEV];
    struct lerr verdicts[MAXEV];
    struct group_plan plan;
};

/* group_build with max_bytes the two files' cap. */
static void plan_run_max(struct plan_buf *pb, const struct event *ev, size_t n, size_t per,
                         size_t max_bytes)
{
    struct lerr e = { 0 };

    memset(pb, 0, sizeof *pb);
    pb->plan.groups = pb->groups;
    pb->plan.members = pb->members;
    pb->plan.verdicts = pb->verdicts;
    if (group_build(ev, n, per, max_bytes, &pb->plan, &e) != 0)
        fail_msg("group_build: %s", e.msg);
}

static void plan_run(struct plan_buf *pb, const struct event *ev, size_t n, size_t per)
{
    plan_run_max(pb, ev, n, per, (size_t)-1);
}

/* Expected grouping: a string per group listing member indices, like "0,2,5". */
static void assert_groups(const struct plan_buf *pb, const char *const *want, size_t nwant)
{
    assert_int_equal(pb->plan.ngroups, nwant);
    for (size_t g = 0; g < nwant; g++) {
        char got[256] = "";
        for (size_t i = 0; i < pb->groups[g].count; i++) {
            char one[24];
            snprintf(one, sizeof one, "%s%zu", i ? "," : "", pb->groups[g].members[i]);
            strcat(got, one);
        }
        if (strcmp(got, want[g]) != 0)
            fail_msg("group %zu is {%s}, want {%s}", g, got, want[g]);
    }
}

static void test_group_by_image(void **state)
{
    const struct event ev[] = {
        ev_make("a", NULL, NULL, "1"), ev_make("b", NULL, NULL, "2"),
        ev_make("a", NULL, NULL, "3"), ev_make("c", NULL, NULL, "4"),
        ev_make("b", NULL, NULL, "5"), ev_make("A", NULL, NULL, "6"),
    };
    static const char *const want[] = { "0,2", "1,4", "3", "5" };
    struct plan_buf pb;

    plan_run(&pb, ev, 6, 10);
    assert_groups(&pb, want, 4);
    assert_int_equal(pb.plan.nvalid, 6);
    assert_string_equal(pb.groups[0].image, "a");
    assert_string_equal(pb.groups[1].image, "b");
    assert_string_equal(pb.groups[2].image, "c");
    assert_string_equal(pb.groups[3].image, "A");
    for (size_t g = 0; g < 4; g++) {
        assert_string_equal(pb.groups[g].preset->name, PRESET_DEFAULT);
        assert_null(pb.groups[g].command);
    }
}

static void test_group_by_size(void **state)
{
    const struct event ev[] = {
        ev_make("a", NULL, NULL, "1"),
        ev_make("a", "performance-2x", NULL, "2"),
        ev_make("a", "shared-cpu-1x", NULL, "3"),
        ev_make("a", NULL, NULL, "4"),
        ev_make("a", "shared-cpu-1x", NULL, "5"),
        ev_make("a", "performance-1x", NULL, "6"),
    };
    static const char *const want[] = { "0,1,3", "2,4", "5" };
    struct plan_buf pb;

    plan_run(&pb, ev, 6, 10);
    assert_groups(&pb, want, 3);
    assert_string_equal(pb.groups[0].preset->name, "performance-2x");
    assert_string_equal(pb.groups[1].preset->name, "shared-cpu-1x");
    assert_string_equal(pb.groups[2].preset->name, "performance-1x");
}

static void test_group_by_command(void **state)
{
    const struct event ev[] = {
        ev_make("a", NULL, "[\"a\",\"b\"]", "0"),
        ev_make("a", NULL, "[ \"a\", \"b\" ]", "1"),
        ev_make("a", NULL, NULL, "2"),
        ev_make("a", NULL, "[\"a\"]", "3"),
        ev_make("a", NULL, "\n[\"\\u0061\",\"\\u0062\"]\n", "4"),
        ev_make("a", NULL, "[\"ab\"]", "5"),
        ev_make("a", NULL, "[\"a\",\"b\",\"c\"]", "6"),
        ev_make("a", NULL, "[\"a\",\"b \"]", "7"),
        ev_make("a", NULL, "[\"a\",\"b\"]", "8"),
        ev_make("a", NULL, "[\"\\u00e9\"]", "9"),
        ev_make("a", NULL, "[\"\xc3\xa9\"]", "10"),
        ev_make("a", NULL, "[\"\\ud83d\\ude00\"]", "11"),
        ev_make("a", NULL, "[\"\xf0\x9f\x98\x80\"]", "12"),
        ev_make("a", NULL, "[\"a\\/b\", \"\\n\"]", "13"),
        ev_make("a", NULL, "[\"a/b\",\"\\u000a\"]", "14"),
        ev_make("a", NULL, NULL, "15"),
    };
    static const char *const want[] = { "0,1,4,8", "2,15", "3", "5", "6", "7", "9,10",
                                        "11,12", "13,14" };
    struct plan_buf pb;

    plan_run(&pb, ev, 16, 10);
    assert_groups(&pb, want, 9);
    /* A group carries its first member's spelling. */
    assert_ptr_equal(pb.groups[0].command, ev[0].command);
    assert_null(pb.groups[1].command);
}

static void test_invalid_does_not_disturb(void **state)
{
    const struct event ev[] = {
        ev_make("a", NULL, "[\"x\"]", "{\"n\":0}"),
        ev_make("a", "huge", "[\"x\"]", "{\"n\":1}"),
        ev_make("a", NULL, "[\"x\"]", "{\"n\":2"),
        ev_make(NULL, NULL, "[\"x\"]", "{\"n\":3}"),
        ev_make("a", NULL, "[\"x\"]", "{\"n\":4}"),
        ev_make("a", NULL, "[1]", "{\"n\":5}"),
        ev_make("a", NULL, "[\"x\"]", "{\"n\":6}"),
    };
    static const char *const want[] = { "0,4", "6" };
    struct plan_buf pb;

    plan_run(&pb, ev, 7, 2);
    assert_groups(&pb, want, 2);
    assert_int_equal(pb.plan.nvalid, 3);
    for (size_t i = 0; i < 7; i++)
        assert_int_equal(pb.verdicts[i].kind, (i == 0 || i == 4 || i == 6) ? LERR_NONE
                                                                          : LERR_INVALID);
    assert_has(pb.verdicts[1].msg, "attribute size: \"huge\"");
    assert_has(pb.verdicts[2].msg, "body is not valid JSON (at byte 6: unexpected end)");
    assert_has(pb.verdicts[3].msg, "attribute image: missing");
    assert_has(pb.verdicts[5].msg, "element 1 is not a string");
    assert_string_equal(pb.verdicts[0].msg, "");
}

static void test_split(void **state)
{
    struct event ev[MAXEV];
    struct plan_buf pb;
    static const char *const seven_by_3[] = { "0,1,2", "3,4,5", "6" };
    static const char *const six_by_3[] = { "0,1,2", "3,4,5" };
    static const char *const by_1[] = { "0", "1", "2" };
    static const char *const interleaved[] = { "0,1", "3,4", "6", "2,5", "7" };
    static const char *const all[] = { "0,1,2,3,4,5,6" };

    for (int i = 0; i < MAXEV; i++)
        ev[i] = ev_make("a", NULL, NULL, "{}");
    plan_run(&pb, ev, 7, 3);
    assert_groups(&pb, seven_by_3, 3);
    plan_run(&pb, ev, 6, 3);
    assert_groups(&pb, six_by_3, 2);
    plan_run(&pb, ev, 3, 1);
    assert_groups(&pb, by_1, 3);
    plan_run(&pb, ev, 7, 7);
    assert_groups(&pb, all, 1);
    plan_run(&pb, ev, 7, GROUP_MAX_PER_MACHINE);
    assert_groups(&pb, all, 1);

    /* a a b a a b a c, two per Machine: a's chunks first, then b's, then c */
    ev[2] = ev_make("b", NULL, NULL, "{}");
    ev[5] = ev_make("b", NULL, NULL, "{}");
    ev[7] = ev_make("c", NULL, NULL, "{}");
    plan_run(&pb, ev, 8, 2);
    assert_groups(&pb, interleaved, 5);
    assert_string_equal(pb.groups[2].image, "a");
    assert_string_equal(pb.groups[3].image, "b");
    assert_string_equal(pb.groups[4].image, "c");
}

/* A FIFO message group's events, in receive order; fifo_group set on ev[i] from groups[i]
 * ('-': none), then grouped and ordered. returned: the indices taken out, "1,4". */
static void fifo_run(struct plan_buf *pb, struct event *ev, const char *images,
                     const char *groups, const char *invalid, size_t per, char *returned)
{
    static char names[MAXEV][2], imgs[MAXEV][2];
    size_t n = strlen(groups), part_of[MAXEV], ret[MAXEV], nret;

    for (size_t i = 0; i < n; i++) {
        names[i][0] = groups[i];
        imgs[i][0] = images[i];
        ev[i] = ev_make(imgs[i], NULL, NULL, invalid[i] == 'x' ? "{" : "{}");
        ev[i].fifo_group = groups[i] == '-' ? NULL : names[i];
    }
    plan_run(pb, ev, n, per);
    nret = group_fifo_order(ev, n, pb->groups, pb->plan.ngroups, part_of, ret);
    returned[0] = '\0';
    for (size_t i = 0; i < nret; i++)
        sprintf(returned + strlen(returned), "%s%zu", i ? "," : "", ret[i]);
}

static void test_fifo_order(void **state)
{
    struct event ev[MAXEV];
    struct plan_buf pb;
    char ret[256];

    /* one image, groups fit: nothing moves (two message groups may share a Machine) */
    {
        static const char *const want[] = { "0,1,2,3" };
        fifo_run(&pb, ev, "aaaa", "pqpq", "....", 10, ret);
        assert_string_equal(ret, "");
        assert_groups(&pb, want, 1);
    }
    /* group p split by the events-per-Machine cap: its tail waits for the first Machine */
    {
        static const char *const want[] = { "0,1,2", "" };
        fifo_run(&pb, ev, "aaaaa", "ppppp", ".....", 3, ret);
        assert_string_equal(ret, "3,4");
        assert_groups(&pb, want, 2);
    }
    /* p's second event asks for another image: it and every later p go back, even the
     * one whose image matches the first (it would run before the second) */
    {
        static const char *const want[] = { "0,3,4", "" };
        fifo_run(&pb, ev, "abaaa", "pppqp", ".....", 10, ret);
        assert_string_equal(ret, "1,2,4");
        /* a's part kept 0 and q's 3; b's part is empty */
        assert_int_equal(pb.groups[0].count, 2);
        assert_int_equal(pb.groups[0].members[0], 0);
        assert_int_equal(pb.groups[0].members[1], 3);
        assert_int_equal(pb.groups[1].count, 0);
        (void)want;
    }
    /* an invalid message stays in flight: its group's later messages wait behind it */
    {
        fifo_run(&pb, ev, "aaaa", "pppq", "x...", 10, ret);
        assert_string_equal(ret, "1,2");
        assert_int_equal(pb.groups[0].count, 1);
        assert_int_equal(pb.groups[0].members[0], 3);
    }
    /* messages without a group (a standard queue) are left alone */
    {
        fifo_run(&pb, ev, "abab", "----", "....", 1, ret);
        assert_string_equal(ret, "");
        assert_int_equal(pb.plan.ngroups, 4);
    }
}

static void test_split_many_keys(void **state)
{
    /* Every key split, so the in-place expansion moves every key: 3 keys x 5 events,
     * 2 per Machine, round robin. */
    static const char *const images[] = { "x", "y", "z" };
    static const char *const want[] = { "0,3", "6,9", "12", "1,4", "7,10", "13",
                                        "2,5", "8,11", "14" };
    struct event ev[15];
    struct plan_buf pb;

    for (int i = 0; i < 15; i++)
        ev[i] = ev_make(images[i % 3], NULL, NULL, "0");
    plan_run(&pb, ev, 15, 2);
    assert_groups(&pb, want, 9);
    for (int g = 0; g < 9; g++)
        assert_string_equal(pb.groups[g].image, images[g / 3]);
}

static void test_build_edges(void **state)
{
    struct event ev[2] = { ev_make("a", "nope", NULL, "{}"), ev_make("", NULL, NULL, "{}") };
    struct plan_buf pb;
    struct lerr e = { 0 };

    plan_run(&pb, ev, 0, 10);
    assert_int_equal(pb.plan.ngroups, 0);
    plan_run(&pb, ev, 2, 10);
    assert_int_equal(pb.plan.ngroups, 0);
    assert_int_equal(pb.plan.nvalid, 0);

    assert_int_equal(group_build(ev, 2, 0, (size_t)-1, &pb.plan, &e), -1);
    assert_int_equal(e.kind, LERR_INVALID);
    assert_has(e.msg, "events per machine must be 1 to 1000, not 0");
    assert_int_equal(group_build(ev, 2, 1001, (size_t)-1, &pb.plan, &e), -1);
    assert_has(e.msg, "not 1001");
    pb.plan.members = NULL;
    assert_int_equal(group_build(ev, 2, 5, (size_t)-1, &pb.plan, &e), -1);
    assert_int_equal(e.kind, LERR_INVALID);
}

/* ---- events file ------------------------------------------------------------------------- */

/* group_files_alloc for the events file alone. */
static int files_alloc(const struct event *ev, const struct group *g, char **out, size_t *len)
{
    struct lerr e = { 0 };
    size_t meta_len;
    char *meta;
    int rc = group_files_alloc(ev, g, out, len, &meta, &meta_len, &e);

    free(meta);
    return rc;
}

static void test_events_file(void **state)
{
    const struct event ev[] = {
        { "m0", BODY("{\"a\":1}"), "img", NULL, NULL, NULL, NULL, 0 },
        { "m1", BODY("{\"skip\":true}"), "other", NULL, NULL, NULL, NULL, 0 },
        { "m2", BODY(" [1, 2] \n"), "img", NULL, NULL, NULL, NULL, 0 },
        { "m3", BODY("12345678901234567890.123456789e-5"), "img", NULL, NULL, NULL, NULL, 0 },
        { "m4", BODY("\"\\u00e9\xc3\xa9\""), "img", NULL, NULL, NULL, NULL, 0 },
    };
    static const char want[] =
        "[{\"a\":1}, [1, 2] \n,12345678901234567890.123456789e-5,\"\\u00e9\xc3\xa9\"]";
    struct plan_buf pb;
    char *out = NULL;
    size_t len = 0;

    plan_run(&pb, ev, 5, 10);
    assert_int_equal(pb.plan.ngroups, 2);
    assert_int_equal(files_alloc(ev, &pb.groups[0], &out, &len), 0);
    assert_int_equal(len, sizeof want - 1);
    assert_memory_equal(out, want, len);
    assert_int_equal(out[len], '\0');
    free(out);

    /* the byte cap, the two files together (the context file "[{},{},{},{}]": 13 bytes):
     * exactly enough room keeps the group; one byte short cuts it before its last event;
     * an event over the cap alone still runs, alone */
    plan_run_max(&pb, ev, 5, 10, sizeof want - 1 + 13);
    assert_int_equal(pb.plan.ngroups, 2);
    assert_int_equal(pb.groups[0].count, 4);
    plan_run_max(&pb, ev, 5, 10, sizeof want - 2 + 13);
    assert_int_equal(pb.plan.ngroups, 3);
    assert_int_equal(pb.groups[0].count, 3);
    assert_int_equal(pb.groups[1].count, 1);
    assert_int_equal(pb.groups[1].members[0], 4);
    plan_run_max(&pb, ev, 5, 10, 10);
    assert_int_equal(pb.plan.ngroups, 5);
    assert_int_equal(files_alloc(ev, &pb.groups[0], &out, &len), 0);
    assert_memory_equal(out, "[{\"a\":1}]", len + 1);
    free(out);

    /* one member: no comma */
    plan_run(&pb, ev, 5, 10);
    assert_int_equal(files_alloc(ev, &pb.groups[1], &out, &len), 0);
    assert_int_equal(len, 15);
    assert_memory_equal(out, "[{\"skip\":true}]", 15);
    free(out);

    /* and the result is a JSON array with one element per member */
    {
        cJSON *arr = cJSON_ParseWithLength(want, sizeof want - 1);
        assert_non_null(arr);
        assert_true(cJSON_IsArray(arr));
        assert_int_equal(cJSON_GetArraySize(arr), 4);
        cJSON_Delete(arr);
    }
}

/* The context file: the entries of the group's members, in the events file's order, byte
 * for byte; an event without one gets {} so that the two files stay aligned. */
static void test_meta_file(void **state)
{
    struct event ev[] = {
        { "m0", BODY("1"), "img", NULL, NULL, NULL, NULL, 0 },
        { "m1", BODY("2"), "other", NULL, NULL, NULL, NULL, 0 },
        { "m2", BODY("3"), "img", NULL, NULL, NULL, NULL, 0 },
        { "m3", BODY("4"), "img", NULL, NULL, NULL, NULL, 0 },
    };
    static const char want[] = "[{\"messageId\":\"m0\"},{},{\"messageId\":\"m\\\"3\"}]";
    struct plan_buf pb;
    struct lerr e = { 0 };
    char *out = NULL, *meta = NULL;
    size_t len = 0, meta_len = 0;

    ev[0].context = "{\"messageId\":\"m0\"}";
    ev[0].context_len = strlen(ev[0].context);
    ev[1].context = "{\"messageId\":\"m1\"}";
    ev[1].context_len = strlen(ev[1].context);
    ev[3].context = "{\"messageId\":\"m\\\"3\"}trailing";  /* only context_len counts */
    ev[3].context_len = strlen("{\"messageId\":\"m\\\"3\"}");
    plan_run(&pb, ev, 4, 10);
    assert_int_equal(pb.plan.ngroups, 2);
    assert_int_equal(group_files_alloc(ev, &pb.groups[0], &out, &len, &meta, &meta_len, &e), 0);
    assert_int_equal(meta_len, sizeof want - 1);
    assert_memory_equal(meta, want, meta_len + 1);
    /* the events file is untouched by it */
    assert_memory_equal(out, "[1,3,4]", len + 1);
    free(out);
    free(meta);
    assert_int_equal(group_files_alloc(ev, &pb.groups[1], &out, &len, &meta, &meta_len, &e), 0);
    assert_memory_equal(meta, "[{\"messageId\":\"m1\"}]", meta_len + 1);
    free(out);
    free(meta);
    /* the context file counts in the byte cap: one byte short cuts the group */
    plan_run_max(&pb, ev, 4, 10, sizeof want - 1 + 7);
    assert_int_equal(pb.plan.ngroups, 2);
    plan_run_max(&pb, ev, 4, 10, sizeof want - 2 + 7);
    assert_int_equal(pb.plan.ngroups, 3);
    assert_int_equal(pb.groups[0].count, 2);
}

/* ---- group ids --------------------------------------------------------------------------- */

/* The pool key: SHA-256 of image, size preset name and command, each NUL-terminated, so that
 * every lambdo names a kind of Machine alike, and no two triples share one. */
static void test_group_key(void **state)
{
    struct group g = { .image = "registry.fly.io/app:1", .preset = preset_find("shared-cpu-1x"),
                       .command = "[\"a\"]" };
    char key[GROUP_ID_LEN + 1], other[GROUP_ID_LEN + 1];

    (void)state;
    group_key(&g, key);
    assert_string_equal(key, "547784e7dbf66c23");  /* python3 hashlib, the same bytes */
    g.command = NULL;
    g.preset = preset_find("performance-2x");
    group_key(&g, key);
    assert_string_equal(key, "060e0fc933c6f97c");  /* no command hashes as "" */
    /* a part's end moved into the next one: another key */
    g.image = "registry.fly.io/app:1performance-2x";
    g.preset = preset_find("shared-cpu-1x");
    group_key(&g, other);
    assert_string_not_equal(key, other);
}

static void test_group_id(void **state)
{
    struct event ev[] = {
        { "m1", BODY("1"), "a", NULL, NULL, NULL, NULL, 0 }, { "m2", BODY("2"), "a", NULL, NULL, NULL, NULL, 0 },
        { "ab", BODY("3"), "b", NULL, NULL, NULL, NULL, 0 }, { "c", BODY("4"), "b", NULL, NULL, NULL, NULL, 0 },
        { "a", BODY("5"), "c", NULL, NULL, NULL, NULL, 0 },  { "bc", BODY("6"), "c", NULL, NULL, NULL, NULL, 0 },
    };
    struct plan_buf pb;
    char id[GROUP_ID_LEN + 1], id2[GROUP_ID_LEN + 1];

    plan_run(&pb, ev, 2, 1);
    group_id(ev, &pb.groups[0], id);
    assert_string_equal(id, "7b14e2d92338aed2");  /* sha256("m1\n") */
    group_id(ev, &pb.groups[1], id2);
    assert_string_not_equal(id, id2);

    plan_run(&pb, ev, 2, 10);
    group_id(ev, &pb.groups[0], id);
    assert_string_equal(id, "1af4920a8620ff91");  /* sha256("m1\nm2\n") */
    assert_int_equal(strlen(id), GROUP_ID_LEN);

    plan_run(&pb, ev, 6, 10);
    group_id(ev, &pb.groups[1], id);
    group_id(ev, &pb.groups[2], id2);
    assert_string_not_equal(id, id2);  /* {"ab","c"} is not {"a","bc"} */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_preset_accepted),
        cmocka_unit_test(test_size_refused),
        cmocka_unit_test(test_size_absent_is_default),
        cmocka_unit_test(test_image),
        cmocka_unit_test(test_command),
        cmocka_unit_test(test_bodies),
        cmocka_unit_test(test_bodies_stricter_than_cjson),
        cmocka_unit_test(test_json_depth),
        cmocka_unit_test(test_json_string_offsets),
        cmocka_unit_test(test_group_by_image),
        cmocka_unit_test(test_group_by_size),
        cmocka_unit_test(test_group_by_command),
        cmocka_unit_test(test_invalid_does_not_disturb),
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_split_many_keys),
        cmocka_unit_test(test_fifo_order),
        cmocka_unit_test(test_build_edges),
        cmocka_unit_test(test_events_file),

        cmocka_unit_test(test_meta_file),
        cmocka_unit_test(test_group_id),
        cmocka_unit_test(test_group_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
