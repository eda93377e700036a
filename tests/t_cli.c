/* cli: `lambdo send` arguments, line splitting, validation with line numbers and batching;
 * the SendMessage, SendMessageBatch and GetQueueAttributes requests (read back with cJSON:
 * bodies byte for byte) and answers (Successful/Failed, MD5s, attributes); SQS's text
 * rules; `lambdo check`'s rows and reasons; the Fly app URL. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cJSON.h"
#include "cli.h"
#include "fly.h"
#include "group.h"
#include "json.h"
#include "log.h"
#include "sqs.h"

#define QUEUE "https://sqs.us-east-1.amazonaws.com/123456789012/jobs"
#define IMAGE "registry.fly.io/app:1"
#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

static void assert_contains(const char *haystack, const char *needle)
{
    if (!strstr(haystack, needle))
        fail_msg("\"%s\" does not contain \"%s\"", haystack, needle);
}

static const struct cli_send_opts plain = { .image = IMAGE };

/* ======================================================================================
 * Arguments
 * ==================================================================================== */

static int parse(struct cli_send_opts *o, struct lerr *e, ...)
{
    char *argv[16] = { "send" };
    int argc = 1;
    va_list ap;

    va_start(ap, e);
    for (char *a; (a = va_arg(ap, char *));)
        argv[argc++] = a;
    va_end(ap);
    return cli_send_args(argc, argv, o, e);
}

static void test_args(void **state)
{
    struct cli_send_opts o;
    struct lerr e = { 0 };

    assert_int_equal(parse(&o, &e, "--image", IMAGE, "--size=shared-cpu-1x", "--command",
                           "[\"a\"]", "--queue=" QUEUE, "{\"a\":1}", NULL), 0);
    assert_string_equal(o.image, IMAGE);
    assert_string_equal(o.size, "shared-cpu-1x");
    assert_string_equal(o.command, "[\"a\"]");
    assert_string_equal(o.queue, QUEUE);
    assert_string_equal(o.body, "{\"a\":1}");
    assert_int_equal(o.help, 0);

    /* no BODY: stdin; --image=value with '=' inside the value */
    assert_int_equal(parse(&o, &e, "--image=reg/x:tag=1", NULL), 0);
    assert_string_equal(o.image, "reg/x:tag=1");
    assert_null(o.body);
    assert_null(o.size);
    assert_null(o.command);
    assert_null(o.queue);

    /* a negative number is a body; after "--" anything is */
    assert_int_equal(parse(&o, &e, "--image", IMAGE, "-5", NULL), 0);
    assert_string_equal(o.body, "-5");
    assert_int_equal(parse(&o, &e, "--image", IMAGE, "--", "--size", NULL), 0);
    assert_string_equal(o.body, "--size");
    assert_null(o.size);
    /* an option's value may start with a dash */
    assert_int_equal(parse(&o, &e, "--image", "-x", NULL), 0);
    assert_string_equal(o.image, "-x");

    assert_int_equal(parse(&o, &e, "--image", IMAGE, "--array=jobs.json", NULL), 0);
    assert_string_equal(o.array, "jobs.json");
    assert_null(o.body);

    assert_int_equal(parse(&o, &e, "--help", NULL), 0);
    assert_int_equal(o.help, 1);
    assert_int_equal(parse(&o, &e, "--image", IMAGE, "-h", "--bogus", NULL), 0);
    assert_int_equal(o.help, 1);
}

static void test_args_errors(void **state)
{
    struct cli_send_opts o;
    struct lerr e = { 0 };

    assert_int_equal(parse(&o, &e, "{}", NULL), -1);
    assert_int_equal(e.kind, LERR_INVALID);
    assert_string_equal(e.msg, "--image is required (the image the Machine runs)");
    assert_int_equal(parse(&o, &e, "--image", IMAGE, "--sise", "x", NULL), -1);
    assert_string_equal(e.msg, "unknown option \"--sise\"");
    assert_int_equal(parse(&o, &e, "--image", IMAGE, "--sizes=x", NULL), -1);
    assert_string_equal(e.msg, "unknown option \"--sizes=x\"");
    assert_int_equal(parse(&o, &e, "--image", IMAGE, "--size", NULL), -1);
    assert_string_equal(e.msg, "--size needs a value");
    assert_int_equal(parse(&o, &e, "--image", IMAGE, "--image=b", NULL), -1);
    assert_string_equal(e.msg, "--image given twice");
    assert_int_equal(parse(&o, &e, "--image", IMAGE, "1", "2", NULL), -1);
    assert_contains(e.msg, "more than one BODY");
    assert_int_equal(parse(&o, &e, "--image", IMAGE, "--array", "jobs.json", "1", NULL), -1);
    assert_string_equal(e.msg, "BODY and --array: give one or the other");
    assert_int_equal(parse(&o, &e, "--image", IMAGE, "--array", NULL), -1);
    assert_string_equal(e.msg, "--array needs a value");
}

/* ======================================================================================
 * FIFO: the flags, JSON pointers, ids
 * ==================================================================================== */

static void test_fifo_args(void **state)
{
    struct cli_send_opts o;
    struct lerr e = { 0 };

    assert_int_equal(parse(&o, &e, "--image", IMAGE, "--group-id", "g1", "--dedup-id-from=/id",
                           NULL), 0);
    assert_string_equal(o.group_id, "g1");
    assert_string_equal(o.dedup_id_from, "/id");
    assert_null(o.group_id_from);
    assert_null(o.dedup_id);
    assert_int_equal(parse(&o, &e, "--image", IMAGE, "--group-id-from", "/t", "--dedup-id", "d",
                           NULL), 0);
    assert_string_equal(o.group_id_from, "/t");
    assert_string_equal(o.dedup_id, "d");
    assert_null(o.group_id);
    assert_int_equal(parse(&o, &e, "--image", IMAGE, "--group-id", "a", "--group-id-from", "/t",
                           NULL), -1);
    assert_string_equal(e.msg, "--group-id and --group-id-from: give one or the other");
    assert_int_equal(parse(&o, &e, "--image", IMAGE, "--dedup-id", "a", "--dedup-id-from", "/t",
                           NULL), -1);
    assert_string_equal(e.msg, "--dedup-id and --dedup-id-from: give one or the other");

    /* refused on a standard queue, required on a FIFO one */
    o = (struct cli_send_opts){ .image = IMAGE };
    assert_int_equal(cli_check_fifo(&o, 0, &e), 0);
    assert_int_equal(cli_check_fifo(&o, 1, &e), -1);
    assert_contains(e.msg, "a FIFO queue needs a message group: give --group-id");
    o.dedup_id_from = "/d";
    assert_int_equal(cli_check_fifo(&o, 0, &e), -1);
    assert_string_equal(e.msg, "--dedup-id-from: only for FIFO queues (their name ends in "
                               ".fifo); this one is a standard queue");
    o.group_id = "g";
    assert_int_equal(cli_check_fifo(&o, 0, &e), -1);
    assert_contains(e.msg, "--group-id: only for FIFO queues");
    assert_int_equal(cli_check_fifo(&o, 1, &e), 0);

    /* the flags' own values, before anything is read */
    assert_int_equal(cli_check_flags(&o, &e), 0);
    o.group_id = "has space";
    assert_int_equal(cli_check_flags(&o, &e), -1);
    assert_contains(e.msg, "--group-id \"has space\" has a character SQS refuses at byte 3");
    o.group_id = NULL;
    o.group_id_from = "tenant";
    assert_int_equal(cli_check_flags(&o, &e), -1);
    assert_string_equal(e.msg, "--group-id-from \"tenant\": a JSON pointer starts with '/' "
                               "(e.g. /tenant)");
}

static void test_pointer(void **state)
{
    static const char body[] = "{\"a\":{\"b/c\":\"slash\",\"m~n\":\"tilde\",\"\":\"empty\"},"
                               "\"list\":[\"zero\",{\"x\":\"deep\"}],\"n\":12,\"u\":\"\\u00e9\","
                               "\"o\":{},\"t\":true,\"z\":null,\"10\":\"ten\"}";
    static const struct {
        const char *ptr, *want;  /* want NULL: refused, with the reason in why */
        const char *why;
    } cases[] = {
        { "/a/b~1c", "slash", NULL }, { "/a/m~0n", "tilde", NULL }, { "/a/", "empty", NULL },
        { "/list/0", "zero", NULL }, { "/list/1/x", "deep", NULL }, { "/u", "\xc3\xa9", NULL },
        { "/10", "ten", NULL },  /* an object member named by digits */
        { "/list/01", NULL, "the body has no /list/01" },
        { "/list/-", NULL, "the body has no /list/-" },
        { "/list/2/x", NULL, "the body has no /list/2" },
        { "/missing/x", NULL, "the body has no /missing" },
        { "/n", NULL, "/n names a number, not a string" },
        { "/o", NULL, "/o names an object, not a string" },
        { "/list", NULL, "/list names an array, not a string" },
        { "/t", NULL, "/t names a boolean, not a string" },
        { "/z", NULL, "/z names null, not a string" },
        { "", NULL, "\"\" names an object, not a string" },
    };
    char out[129];
    struct lerr e = { 0 };

    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        int r = cli_pointer(body, sizeof body - 1, cases[i].ptr, out, sizeof out, &e);
        if (cases[i].want) {
            if (r != 0)
                fail_msg("%s: %s", cases[i].ptr, e.msg);
            assert_string_equal(out, cases[i].want);
        } else {
            if (r != -1)
                fail_msg("%s: accepted as \"%s\"", cases[i].ptr, out);
            assert_string_equal(e.msg, cases[i].why);
        }
    }
    assert_int_equal(cli_pointer("\"whole\"", 7, "", out, sizeof out, &e), 0);
    assert_string_equal(out, "whole");
    assert_int_equal(cli_pointer("\"whole\"", 7, "", out, 3, &e), -1);
    assert_string_equal(e.msg, "\"\" is longer than 2 characters");
}

static void test_fifo_ids(void **state)
{
    struct cli_send_opts o = { .image = IMAGE, .group_id_from = "/tenant", .dedup_id = "d-1" };
    struct sqs_entry en = { .body = "{\"tenant\":\"acme\"}", .body_len = 17 };
    char ids[2][129];
    struct lerr e = { 0 };

    assert_int_equal(cli_fifo_ids(&o, &en, ids, &e), 0);
    assert_string_equal(en.group_id, "acme");
    assert_string_equal(en.dedup_id, "d-1");
    assert_int_equal(cli_check_body(&o, "{\"tenant\":\"acme\"}", 17, 2, &e), 0);
    /* each refusal names the line and the flag */
    assert_int_equal(cli_check_body(&o, "{\"tenant\":7}", 12, 3, &e), -1);
    assert_string_equal(e.msg, "line 3: --group-id-from /tenant: /tenant names a number, not a "
                               "string");
    assert_int_equal(cli_check_body(&o, "{\"tenant\":\"a b\"}", 16, 4, &e), -1);
    assert_contains(e.msg, "line 4: --group-id-from /tenant: the id \"a b\" has a character");
    assert_int_equal(cli_check_body(&o, "{}", 2, 5, &e), -1);
    assert_string_equal(e.msg, "line 5: --group-id-from /tenant: the body has no /tenant");
    o = (struct cli_send_opts){ .image = IMAGE };  /* no flag: no id */
    en = (struct sqs_entry){ .body = "{}", .body_len = 2 };
    assert_int_equal(cli_fifo_ids(&o, &en, ids, &e), 0);
    assert_null(en.group_id);
    assert_null(en.dedup_id);
}

/* ======================================================================================
 * Lines
 * ==================================================================================== */

static void test_split_lines(void **state)
{
    static const char in[] = "{\"a\":1}\n\n  \t\r\n\"b\"\r\n[3]";
    struct cli_line *lines = NULL;
    struct lerr e = { 0 };
    size_t n = 99;

    assert_int_equal(cli_split(in, sizeof in - 1, 0, &lines, &n, &e), 0);
    assert_int_equal(n, 3);
    assert_int_equal(lines[0].lineno, 1);
    assert_int_equal(lines[0].len, 7);
    assert_memory_equal(lines[0].body, "{\"a\":1}", 7);
    assert_int_equal(lines[1].lineno, 4);  /* blank lines count */
    assert_int_equal(lines[1].len, 4);     /* the '\r' stays: bytes as given */
    assert_memory_equal(lines[1].body, "\"b\"\r", 4);
    assert_int_equal(lines[2].lineno, 5);  /* no final newline */
    assert_memory_equal(lines[2].body, "[3]", 3);
    free(lines);

    assert_int_equal(cli_split("", 0, 0, &lines, &n, &e), 0);
    assert_int_equal(n, 0);
    assert_null(lines);
    assert_int_equal(cli_split("\n\n \n", 4, 0, &lines, &n, &e), 0);
    assert_int_equal(n, 0);
    free(lines);
    assert_int_equal(cli_split("1\n", 2, 0, &lines, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_int_equal(lines[0].len, 1);
    free(lines);

    /* 2500 lines: the array grows; a NUL byte is just a byte of its line */
    {
        size_t len = 2500 * 4;
        char *big = malloc(len);
        for (size_t i = 0; i < 2500; i++)
            memcpy(big + 4 * i, i == 7 ? "1\0x\n" : "12 \n", 4);
        assert_int_equal(cli_split(big, len, 0, &lines, &n, &e), 0);
        assert_int_equal(n, 2500);
        assert_int_equal(lines[2499].lineno, 2500);
        assert_int_equal(lines[7].len, 3);
        free(lines);
        free(big);
    }
}

/* The elements of a JSON array, each its exact bytes: numbers are never converted. */
static void test_split_array(void **state)
{
    static const char in[] = " [ {\"n\": 12345678901234567890123, \"f\": 1.10e+02},\n"
                             "\t-0.0 ,\"\\u00e9\", [[]] ,{}, 1E400, null ]\n";
    static const char *const want[] = {
        "{\"n\": 12345678901234567890123, \"f\": 1.10e+02}", "-0.0", "\"\\u00e9\"", "[[]]",
        "{}", "1E400", "null",
    };
    struct cli_line *items = NULL;
    struct lerr e = { 0 };
    size_t n = 99;

    assert_int_equal(cli_split(in, sizeof in - 1, 1, &items, &n, &e), 0);
    assert_int_equal(n, 7);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(items[i].lineno, i + 1);
        assert_int_equal(items[i].len, strlen(want[i]));
        assert_memory_equal(items[i].body, want[i], items[i].len);
    }
    free(items);

    assert_int_equal(cli_split("[]", 2, 1, &items, &n, &e), 0);
    assert_int_equal(n, 0);
    assert_null(items);
    assert_int_equal(cli_split("[ \"a\" ]", 7, 1, &items, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_memory_equal(items[0].body, "\"a\"", 3);
    free(items);

    /* the whole file is checked, strictly, before anything is split */
    assert_int_equal(cli_split("[1, 01]", 7, 1, &items, &n, &e), -1);
    assert_string_equal(e.msg, "not valid JSON (at byte 4: leading zero in number)");
    assert_int_equal(cli_split("[1, 2", 5, 1, &items, &n, &e), -1);
    assert_contains(e.msg, "not valid JSON (at byte 5: unexpected end)");
    assert_int_equal(cli_split("[1]\n[2]", 7, 1, &items, &n, &e), -1);
    assert_contains(e.msg, "unexpected data after the JSON value");
    assert_int_equal(cli_split("", 0, 1, &items, &n, &e), -1);
    assert_int_equal(e.kind, LERR_INVALID);
    assert_int_equal(cli_split(" {\"a\": [1]}", 11, 1, &items, &n, &e), -1);
    assert_string_equal(e.msg, "not a JSON array (to send one body, give it as BODY)");
    assert_int_equal(cli_split("1", 1, 1, &items, &n, &e), -1);
    assert_contains(e.msg, "not a JSON array");

    /* 3000 elements: the array grows */
    {
        size_t len = 1 + 3000 * 2;
        char *big = malloc(len);
        big[0] = '[';
        for (size_t i = 0; i < 3000; i++)
            memcpy(big + 1 + 2 * i, i == 2999 ? "7]" : "7,", 2);
        assert_int_equal(cli_split(big, len, 1, &items, &n, &e), 0);
        assert_int_equal(n, 3000);
        assert_int_equal(items[2999].lineno, 3000);
        assert_true(items[2999].body == big + len - 2 && items[2999].len == 1);
        free(items);
        free(big);
    }
}

/* ======================================================================================
 * Checks: the daemon's rules, SQS's, line numbers
 * ==================================================================================== */

static void test_check_flags(void **state)
{
    struct cli_send_opts o = { .image = IMAGE };
    struct lerr e = { 0 };

    assert_int_equal(cli_check_flags(&o, &e), 0);
    o.size = "a100-80gb";
    o.command = "[ \"node\", \"index.js\" ]";
    assert_int_equal(cli_check_flags(&o, &e), 0);

    o.command = "[\"node\", 2]";
    assert_int_equal(cli_check_flags(&o, &e), -1);
    assert_int_equal(e.kind, LERR_INVALID);
    assert_string_equal(e.msg, "attribute command: element 2 is not a string (it is a number)");
    o.command = "node index.js";
    assert_int_equal(cli_check_flags(&o, &e), -1);
    assert_contains(e.msg, "attribute command: not valid JSON (at byte 0");
    o.command = "[]";
    assert_int_equal(cli_check_flags(&o, &e), -1);
    assert_contains(e.msg, "attribute command: empty array");
    o.command = "[\"a\xef\xbf\xbf\"]";  /* valid JSON, but U+FFFF: SQS refuses it */
    assert_int_equal(cli_check_flags(&o, &e), -1);
    assert_string_equal(e.msg, "attribute command: U+FFFE or U+FFFF, which SQS does not accept "
                               "at byte 3");
    o.command = NULL;

    o.size = "huge";
    assert_int_equal(cli_check_flags(&o, &e), -1);
    assert_contains(e.msg, "attribute size: ");
    assert_contains(e.msg, "is not a Fly preset");
    o.size = "";
    assert_int_equal(cli_check_flags(&o, &e), -1);
    o.size = NULL;

    o.image = "two words";
    assert_int_equal(cli_check_flags(&o, &e), -1);
    assert_contains(e.msg, "attribute image: ");
    o.image = NULL;
    assert_int_equal(cli_check_flags(&o, &e), -1);
    assert_string_equal(e.msg, "--image is required (the image the Machine runs)");
}

static void test_check_body(void **state)
{
    static const char *const good[] = {
        "{\"id\":1,\"big\":12345678901234567890.123456789e-5}",
        "-5", "null", "\"\\u2028\"", "[\"\xe2\x80\xa8\"]", " {\"a\" : [1, 2]}\t\r",
        "\"\xf0\x9f\x98\x80\"", "{\"k\":\"\\u0000\\ud83d\\ude00\"}",
    };
    static const struct {
        const char *body;
        const char *msg;
    } bad[] = {
        { "{\"a\" 1}", "line 3: body is not valid JSON (at byte 5: " },
        { "{\"a\":01}", "line 3: body is not valid JSON (at byte 5: leading zero" },
        { "{\"a\":1}x", "line 3: body is not valid JSON (at byte 7: " },
        { "'a'", "line 3: body is not valid JSON (at byte 0: " },
        { "\"\xc3\x28\"", "line 3: body is not valid JSON (at byte 1: " },
        { "\"\\ud800\"", "line 3: body is not valid JSON (at byte " },
        { "\"\xef\xbf\xbe\"", "line 3: body has U+FFFE or U+FFFF, which SQS does not accept at "
                              "byte 1" },
    };
    struct lerr e = { 0 };

    for (size_t i = 0; i < N_ELEMS(good); i++) {
        if (cli_check_body(&plain, good[i], strlen(good[i]), 1, &e) != 0)
            fail_msg("%s: %s", good[i], e.msg);
    }
    for (size_t i = 0; i < N_ELEMS(bad); i++) {
        assert_int_equal(cli_check_body(&plain, bad[i].body, strlen(bad[i].body), 3, &e), -1);
        assert_int_equal(e.kind, LERR_INVALID);
        if (strncmp(e.msg, bad[i].msg, strlen(bad[i].msg)) != 0)
            fail_msg("%s: got \"%s\", want \"%s...\"", bad[i].body, e.msg, bad[i].msg);
    }
    /* BODY given as an argument: no line number */
    assert_int_equal(cli_check_body(&plain, "{", 1, 0, &e), -1);
    assert_contains(e.msg, "body is not valid JSON (at byte 1: ");
    assert_true(strncmp(e.msg, "body", 4) == 0);
    assert_int_equal(cli_check_body(&plain, "", 0, 0, &e), -1);
    assert_string_equal(e.msg, "body is empty (it must be a JSON value)");

    /* the attributes are the same for each line: a bad one shows on any line */
    {
        struct cli_send_opts o = { .image = IMAGE, .size = "Performance-2x" };
        assert_int_equal(cli_check_body(&o, "1", 1, 7, &e), -1);
        assert_contains(e.msg, "line 7: attribute size: ");
    }
    /* with --array, elements are counted, not lines */
    {
        struct cli_send_opts o = { .image = IMAGE, .array = "jobs.json" };
        assert_int_equal(cli_check_body(&o, "01", 2, 4, &e), -1);
        assert_contains(e.msg, "element 4: body is not valid JSON");
    }

    /* SQS's limit: 1 MiB, body and attributes */
    {
        struct cli_send_opts o = { .image = "i" };
        size_t len = SQS_MAX_MESSAGE_BYTES - strlen("image") - strlen("String") - 1;
        char *big = malloc(len + 1);
        memset(big, ' ', len);
        big[0] = '"';
        big[len - 1] = '"';
        assert_int_equal(cli_check_body(&o, big, len, 2, &e), 0);
        big[len - 1] = ' ';
        big[len] = '"';
        assert_int_equal(cli_check_body(&o, big, len + 1, 2, &e), -1);
        assert_string_equal(e.msg, "line 2: message of 1048577 bytes (body and attributes) is "
                                   "over SQS's limit of 1048576");
        free(big);
    }
}

static void test_batch_len(void **state)
{
    struct cli_line lines[30];
    size_t start = 0, sizes[8], k = 0;

    for (size_t i = 0; i < 30; i++)
        lines[i] = (struct cli_line){ "1", 1, i + 1 };
    for (size_t n = 25; start < n; start += sizes[k++])
        sizes[k] = cli_batch_len(lines, n, start, 30);
    assert_int_equal(k, 3);
    assert_int_equal(sizes[0], 10);
    assert_int_equal(sizes[1], 10);
    assert_int_equal(sizes[2], 5);
    assert_int_equal(cli_batch_len(lines, 25, 25, 30), 0);

    /* by bytes: 100 KiB lines go two at a time; one larger than the cap still goes */
    for (size_t i = 0; i < 30; i++)
        lines[i].len = 100 * 1024;
    assert_int_equal(cli_batch_len(lines, 30, 0, 30), 2);
    lines[0].len = SQS_SEND_BATCH_BYTES + 1;
    assert_int_equal(cli_batch_len(lines, 30, 0, 30), 1);
    assert_int_equal(cli_batch_len(lines, 30, 1, 30), 2);
    /* exactly the cap fits */
    lines[5].len = SQS_SEND_BATCH_BYTES / 2 - 10;
    lines[6].len = SQS_SEND_BATCH_BYTES / 2 - 10;
    assert_int_equal(cli_batch_len(lines, 30, 5, 10), 2);
    assert_int_equal(cli_batch_len(lines, 30, 5, 11), 1);
}

/* ======================================================================================
 * Requests: bodies byte for byte
 * ==================================================================================== */

static const char *const tricky[] = {
    "{\"big\":123456789012345678901234567890.123456789e-300,\"n\":-0.0e+0}",
    "{\"esc\":\"quote \\\" backslash \\\\ slash \\/ \\b\\f\\n\\r\\t \\u0001 \\u0000\"}",
    "\"\\u2028\\u2029 escaped; raw: \xe2\x80\xa8\xe2\x80\xa9\"",
    "{\"utf8\":\"\xc3\xa9\xe6\x97\xa5\xf0\x9f\x98\x80\",\"pair\":\"\\ud83d\\ude00\"}",
    " {\"ws\" :\t[ 1 ,2 ] }\t\r",
    "{\"dup\":1,\"dup\":2,\"order\":[\"z\",\"a\"]}",
    "\"\x7f <>&'\"",
};

static const cJSON *member(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

    if (!v)
        fail_msg("no member %s", key);
    return v;
}

static void assert_bytes(const cJSON *v, const char *want, size_t len)
{
    assert_true(cJSON_IsString(v));
    if (strlen(v->valuestring) != len || memcmp(v->valuestring, want, len) != 0)
        fail_msg("got \"%s\", want \"%.*s\"", v->valuestring, (int)len, want);
}

/* The request is strict JSON (the daemon's own checker), and cJSON reads it back. */
static cJSON *request_json(const char *s, size_t len)
{
    size_t at = 0;
    const char *why = NULL;
    cJSON *j;

    assert_non_null(s);
    assert_int_equal(strlen(s), len);
    if (json_items(s, len, NULL, NULL, &at, &why) != 0)
        fail_msg("request is not strict JSON at byte %zu (%s): %s", at, why, s);
    j = cJSON_ParseWithLength(s, len);
    assert_true(cJSON_IsObject(j));
    return j;
}

static void assert_attribute(const cJSON *attrs, const char *name, const char *value)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(attrs, name);

    if (!value) {
        assert_null(a);
        return;
    }
    assert_true(cJSON_IsObject(a));
    assert_int_equal(cJSON_GetArraySize(a), 2);
    assert_bytes(member(a, "DataType"), "String", 6);
    assert_bytes(member(a, "StringValue"), value, strlen(value));
}

static void test_send_request(void **state)
{
    for (size_t i = 0; i < N_ELEMS(tricky); i++) {
        struct sqs_entry en = { .body = tricky[i], .body_len = strlen(tricky[i]),
                                     .image = IMAGE, .size = "shared-cpu-1x",
                                     .command = "[\"node\",\"-e\",\"console.log(\\\"\\u00e9\\\")\"]" };
        struct lerr e = { 0 };
        size_t len = 0;
        char *s = sqs_batch_request(SQS_OP_SEND, QUEUE, &en, 1, &len, &e);
        cJSON *j = request_json(s, len);
        const cJSON *attrs = member(j, "MessageAttributes");

        assert_int_equal(cJSON_GetArraySize(j), 3);
        assert_bytes(member(j, "QueueUrl"), QUEUE, strlen(QUEUE));
        assert_bytes(member(j, "MessageBody"), tricky[i], strlen(tricky[i]));
        assert_int_equal(cJSON_GetArraySize(attrs), 3);
        assert_attribute(attrs, "image", IMAGE);
        assert_attribute(attrs, "size", "shared-cpu-1x");
        assert_attribute(attrs, "command", en.command);
        cJSON_Delete(j);
        free(s);
    }
    /* only the attributes given; none at all: no MessageAttributes */
    {
        struct sqs_entry en = { .body = "1", .body_len = 1, .image = IMAGE };
        struct lerr e = { 0 };
        size_t len = 0;
        char *s = sqs_batch_request(SQS_OP_SEND, QUEUE, &en, 1, &len, &e);
        cJSON *j = request_json(s, len);
        const cJSON *attrs = member(j, "MessageAttributes");

        assert_int_equal(cJSON_GetArraySize(attrs), 1);
        assert_attribute(attrs, "image", IMAGE);
        assert_attribute(attrs, "size", NULL);
        assert_attribute(attrs, "command", NULL);
        cJSON_Delete(j);
        free(s);
        en.image = NULL;
        s = sqs_batch_request(SQS_OP_SEND, QUEUE, &en, 1, &len, &e);
        assert_string_equal(s, "{\"QueueUrl\":\"" QUEUE "\",\"MessageBody\":\"1\"}");
        free(s);
    }
    /* the exact text, escapes as chosen */
    {
        struct sqs_entry en = { .body = "\"a\\\"\t\x01\xc3\xa9", .body_len = 8,
                                     .size = "x" };
        struct lerr e = { 0 };
        size_t len = 0;
        char *s;

        /* \x01 is refused (SQS would); the escaping itself is shown with a queue URL */
        assert_null(sqs_batch_request(SQS_OP_SEND, QUEUE, &en, 1, &len, &e));
        assert_int_equal(e.kind, LERR_INVALID);
        assert_string_equal(e.msg, "SQS SendMessage: message body has a control character, "
                                   "which SQS does not accept at byte 5");
        en.body_len = 5;
        s = sqs_batch_request(SQS_OP_SEND, "q\"\\\x01\n", &en, 1, &len, &e);
        assert_string_equal(s, "{\"QueueUrl\":\"q\\\"\\\\\\u0001\\n\",\"MessageBody\":"
                               "\"\\\"a\\\\\\\"\\t\",\"MessageAttributes\":{\"size\":"
                               "{\"DataType\":\"String\",\"StringValue\":\"x\"}}}");
        free(s);
    }
}

static void test_send_request_invalid(void **state)
{
    static const struct {
        struct sqs_entry en;
        const char *msg;
    } cases[] = {
        { { .body = "", .body_len = 0 }, "message body is empty" },
        { { .body = NULL, .body_len = 0 }, "message body is empty" },
        { { .body = "\"\xc0\x80\"", .body_len = 4 }, "message body has invalid UTF-8 at byte 1" },
        { { .body = "\"\xed\xa0\x80\"", .body_len = 5 }, "invalid UTF-8 at byte 1" },
        { { .body = "1\0", .body_len = 2 }, "a control character, which SQS does not accept "
                                            "at byte 1" },
        { { .body = "1", .body_len = 1, .image = "" }, "message attribute image is empty" },
        { { .body = "1", .body_len = 1, .command = "[\"\xff\"]" },
          "message attribute command has invalid UTF-8 at byte 2" },
    };
    struct lerr e = { 0 };
    size_t len;

    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        assert_null(sqs_batch_request(SQS_OP_SEND, QUEUE, &cases[i].en, 1, &len, &e));
        assert_int_equal(e.kind, LERR_INVALID);
        assert_contains(e.msg, "SQS SendMessage: ");
        assert_contains(e.msg, cases[i].msg);
    }
    assert_null(sqs_batch_request(SQS_OP_SEND, "", &cases[0].en, 1, &len, &e));
    assert_string_equal(e.msg, "SQS SendMessage: no queue URL");
    assert_null(sqs_batch_request(SQS_OP_SEND, "http://q/\xff", &cases[5].en, 1, &len, &e));
    assert_string_equal(e.msg, "SQS SendMessage: the queue URL is not UTF-8");
}

static void test_send_batch_request(void **state)
{
    struct sqs_entry en[SQS_MAX_MESSAGES + 1];
    struct lerr e = { 0 };
    size_t len = 0;
    char *s;
    cJSON *j;
    const cJSON *arr;

    for (size_t i = 0; i < N_ELEMS(en); i++) {
        const char *b = tricky[i % N_ELEMS(tricky)];
        en[i] = (struct sqs_entry){ .body = b, .body_len = strlen(b), .image = IMAGE,
                                         .command = i % 2 ? "[\"x\"]" : NULL };
    }
    en[1].status = SQS_ENTRY_OK;  /* done: not sent again */
    en[2].group_id = "tenant-\"7\"";  /* FIFO ids: punctuation is allowed, escaped */
    en[2].dedup_id = "d/1";
    s = sqs_batch_request(SQS_OP_SEND_BATCH, QUEUE, en, SQS_MAX_MESSAGES, &len, &e);
    j = request_json(s, len);
    assert_int_equal(cJSON_GetArraySize(j), 2);
    assert_bytes(member(j, "QueueUrl"), QUEUE, strlen(QUEUE));
    arr = member(j, "Entries");
    assert_int_equal(cJSON_GetArraySize(arr), SQS_MAX_MESSAGES - 1);
    for (int k = 0, i = 0; k < cJSON_GetArraySize(arr); k++, i++) {
        const cJSON *it = cJSON_GetArrayItem(arr, k);
        char id[16];
        if (i == 1)
            i++;
        snprintf(id, sizeof id, "m%d", i);
        assert_bytes(member(it, "Id"), id, strlen(id));
        assert_bytes(member(it, "MessageBody"), en[i].body, en[i].body_len);
        assert_attribute(member(it, "MessageAttributes"), "image", IMAGE);
        assert_attribute(member(it, "MessageAttributes"), "command", en[i].command);
        assert_attribute(member(it, "MessageAttributes"), "size", NULL);
        if (en[i].group_id) {
            assert_bytes(member(it, "MessageGroupId"), "tenant-\"7\"", 10);
            assert_bytes(member(it, "MessageDeduplicationId"), "d/1", 3);
        } else {
            assert_null(cJSON_GetObjectItemCaseSensitive(it, "MessageGroupId"));
            assert_null(cJSON_GetObjectItemCaseSensitive(it, "MessageDeduplicationId"));
        }
    }
    cJSON_Delete(j);
    free(s);

    en[2].group_id = "a b";  /* SQS refuses it: found before sending */
    assert_null(sqs_batch_request(SQS_OP_SEND_BATCH, QUEUE, en, 4, &len, &e));
    assert_string_equal(e.msg, "SQS SendMessageBatch: entry 2: group id \"a b\" has a "
                               "character SQS refuses at byte 1 (only ASCII letters, digits "
                               "and punctuation)");
    en[2].group_id = "";
    assert_null(sqs_batch_request(SQS_OP_SEND_BATCH, QUEUE, en, 4, &len, &e));
    assert_string_equal(e.msg, "SQS SendMessageBatch: entry 2: group id must be 1 to 128 "
                               "characters, got 0");
    en[2].group_id = NULL;
    en[2].dedup_id = "d\xc3\xa9";
    assert_null(sqs_batch_request(SQS_OP_SEND_BATCH, QUEUE, en, 4, &len, &e));
    assert_contains(e.msg, "deduplication id \"d");
    en[2].dedup_id = NULL;
    assert_null(sqs_batch_request(SQS_OP_SEND_BATCH, QUEUE, en, SQS_MAX_MESSAGES + 1, &len, &e));
    assert_string_equal(e.msg, "SQS SendMessageBatch: 11 entries (1 to 10 allowed)");
    assert_null(sqs_batch_request(SQS_OP_SEND_BATCH, QUEUE, en, 0, &len, &e));
    assert_null(sqs_batch_request(SQS_OP_SEND_BATCH, QUEUE, en + 1, 1, &len, &e));
    assert_string_equal(e.msg, "SQS SendMessageBatch: no pending entry to send");
    en[3].body = "\"\xfe\"";
    en[3].body_len = 3;
    assert_null(sqs_batch_request(SQS_OP_SEND_BATCH, QUEUE, en, 4, &len, &e));
    assert_string_equal(e.msg, "SQS SendMessageBatch: entry 3: message body has invalid UTF-8 "
                               "at byte 1");
    en[3].status = SQS_ENTRY_FAILED;  /* not pending: not checked, not sent */
    s = sqs_batch_request(SQS_OP_SEND_BATCH, QUEUE, en, 4, &len, &e);
    assert_non_null(s);
    free(s);
}

static void test_attributes_request(void **state)
{
    struct lerr e = { 0 };
    size_t len = 0;
    char *s = sqs_attributes_request(QUEUE, &len, &e);
    cJSON *j = request_json(s, len);
    const cJSON *names = member(j, "AttributeNames");
    static const char *const want[] = {
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed", "RedrivePolicy", "FifoQueue",
        "ContentBasedDeduplication",
    };

    /* a standard queue: SQS refuses FifoQueue there (InvalidAttributeName) */
    assert_bytes(member(j, "QueueUrl"), QUEUE, strlen(QUEUE));
    assert_int_equal(cJSON_GetArraySize(names), 4);
    for (int i = 0; i < 4; i++)
        assert_bytes(cJSON_GetArrayItem(names, i), want[i], strlen(want[i]));
    cJSON_Delete(j);
    free(s);
    s = sqs_attributes_request(QUEUE ".fifo", &len, &e);
    j = request_json(s, len);
    names = member(j, "AttributeNames");
    assert_int_equal(cJSON_GetArraySize(names), 6);
    for (int i = 0; i < 6; i++)
        assert_bytes(cJSON_GetArrayItem(names, i), want[i], strlen(want[i]));
    cJSON_Delete(j);
    free(s);
    assert_null(sqs_attributes_request("", &len, &e));
    assert_int_equal(e.kind, LERR_INVALID);
}

/* ======================================================================================
 * Answers
 * ==================================================================================== */

/* MD5 of the body {"a":1}, and of {image, size, command} as SQS (and the test proxy's
 * md5OfMessageAttributes) compute it. */
#define MD5_BODY "bb6cb5c68df4652941caf652a366f2d8"
#define MD5_ATTRS3 "cf6d99bae059e3376bf3600db310f830"
#define MD5_IMAGE "e776a076b5e55a5362b73501eca7553c"

/* The attributes' MD5 as lambdo computes it (sqs_send_accepted): an answer carrying a
 * wrong MD5OfMessageAttributes is refused naming it; "" (no attributes) checks nothing. */
static void expect_attributes_md5(struct sqs_entry *en, const char *md5)
{
    const char *answer = "{\"MessageId\":\"id-1\",\"MD5OfMessageAttributes\":"
                         "\"00000000000000000000000000000000\"}";
    struct lerr e = { 0 };
    char want[100];

    assert_int_equal(sqs_parse_batch_result(SQS_OP_SEND, answer, strlen(answer), en, 1, &e), 0);
    if (!md5[0]) {
        assert_int_equal(en->status, SQS_ENTRY_OK);
        return;
    }
    assert_int_equal(en->status, SQS_ENTRY_FAILED);
    snprintf(want, sizeof want, "is not the MD5 of the attributes sent (%s)", md5);
    assert_contains(en->message, want);
}

static void test_attributes_md5(void **state)
{
    struct sqs_entry en = { .body = "1", .body_len = 1, .image = IMAGE,
                                 .size = "shared-cpu-1x", .command = "[\"node\",\"index.js\"]" };

    expect_attributes_md5(&en, MD5_ATTRS3);
    en.size = en.command = NULL;
    expect_attributes_md5(&en, MD5_IMAGE);
    en.image = NULL;
    expect_attributes_md5(&en, "");
}

static void test_parse_send_result(void **state)
{
    struct sqs_entry en = { .body = "{\"a\":1}", .body_len = 7, .image = IMAGE };
    struct lerr e = { 0 };
    char ok[256];

    snprintf(ok, sizeof ok, "{\"MessageId\":\"id-1\",\"MD5OfMessageBody\":\"%s\","
             "\"MD5OfMessageAttributes\":\"%s\"}", MD5_BODY, MD5_IMAGE);
    assert_int_equal(sqs_parse_batch_result(SQS_OP_SEND, ok, strlen(ok), &en, 1, &e), 0);
    assert_int_equal(en.status, SQS_ENTRY_OK);
    assert_string_equal(en.sent_id, "id-1");

    /* without MD5s: trusted (SQS always sends them; emulators may not) */
    memset(en.sent_id, 0, sizeof en.sent_id);
    assert_int_equal(sqs_parse_batch_result(SQS_OP_SEND, "{\"MessageId\":\"x\"}", 17, &en, 1,
                                            &e), 0);
    assert_int_equal(en.status, SQS_ENTRY_OK);
    assert_string_equal(en.sent_id, "x");

    snprintf(ok, sizeof ok, "{\"MessageId\":\"id-2\",\"MD5OfMessageBody\":\"%s\"}",
             "00000000000000000000000000000000");
    assert_int_equal(sqs_parse_batch_result(SQS_OP_SEND, ok, strlen(ok), &en, 1, &e), 0);
    assert_int_equal(en.status, SQS_ENTRY_FAILED);
    assert_string_equal(en.code, "MD5Mismatch");
    assert_string_equal(en.sent_id, "id-2");
    assert_contains(en.message, "is not the MD5 of the body sent (" MD5_BODY ")");

    snprintf(ok, sizeof ok, "{\"MessageId\":\"id-3\",\"MD5OfMessageBody\":\"%s\","
             "\"MD5OfMessageAttributes\":\"%s\"}", MD5_BODY, MD5_ATTRS3);
    assert_int_equal(sqs_parse_batch_result(SQS_OP_SEND, ok, strlen(ok), &en, 1, &e), 0);
    assert_int_equal(en.status, SQS_ENTRY_FAILED);
    assert_contains(en.message, "MD5OfMessageAttributes " MD5_ATTRS3 " is not the MD5 of the "
                                "attributes sent (" MD5_IMAGE ")");

    en.status = SQS_ENTRY_PENDING;
    strcpy(en.sent_id, "kept");
    assert_int_equal(sqs_parse_batch_result(SQS_OP_SEND, "{\"MD5OfMessageBody\":\"x\"}", 24,
                                            &en, 1, &e), -1);
    assert_int_equal(e.kind, LERR_MALFORMED);
    assert_string_equal(e.msg, "SQS SendMessage answer: no MessageId");
    assert_int_equal(en.status, SQS_ENTRY_PENDING);
    assert_string_equal(en.sent_id, "kept");
    assert_int_equal(sqs_parse_batch_result(SQS_OP_SEND, "<html>", 6, &en, 1, &e), -1);
    assert_string_equal(e.msg, "SQS SendMessage answer: not a JSON object");
}

static void test_parse_send_batch_result(void **state)
{
    struct sqs_entry en[6];
    struct lerr e = { 0 };
    char answer[1024];

    for (size_t i = 0; i < N_ELEMS(en); i++)
        en[i] = (struct sqs_entry){ .body = "{\"a\":1}", .body_len = 7 };
    en[5].status = SQS_ENTRY_OK;  /* not sent this round: answers about it are ignored */
    strcpy(en[5].sent_id, "old");
    snprintf(answer, sizeof answer,
             "{\"Successful\":[{\"Id\":\"m0\",\"MessageId\":\"id0\",\"MD5OfMessageBody\":\"%s\"},"
             "{\"Id\":\"m2\",\"MessageId\":\"id2\"},{\"Id\":\"m9\",\"MessageId\":\"id9\"},"
             "{\"Id\":\"m5\",\"MessageId\":\"id5\"},{\"Id\":\"m00\",\"MessageId\":\"x\"}],"
             "\"Failed\":[{\"Id\":\"m1\",\"SenderFault\":true,\"Code\":\"InvalidMessageContents\","
             "\"Message\":\"Invalid characters\\nfound\"},"
             "{\"Id\":\"m3\",\"SenderFault\":false,\"Code\":\"InternalError\",\"Message\":\"oops\"}]}",
             MD5_BODY);
    assert_int_equal(sqs_parse_batch_result(SQS_OP_SEND_BATCH, answer, strlen(answer), en, 6,
                                            &e), 0);
    assert_int_equal(en[0].status, SQS_ENTRY_OK);
    assert_string_equal(en[0].sent_id, "id0");
    assert_int_equal(en[1].status, SQS_ENTRY_FAILED);
    assert_string_equal(en[1].code, "InvalidMessageContents");
    assert_string_equal(en[1].message, "Invalid characters found");
    assert_string_equal(en[1].sent_id, "");
    assert_int_equal(en[2].status, SQS_ENTRY_OK);
    assert_string_equal(en[2].sent_id, "id2");
    assert_int_equal(en[3].status, SQS_ENTRY_PENDING);  /* SQS's fault: worth a retry */
    assert_string_equal(en[3].code, "InternalError");
    assert_int_equal(en[4].status, SQS_ENTRY_PENDING);  /* not mentioned */
    assert_string_equal(en[4].code, "");
    assert_int_equal(en[5].status, SQS_ENTRY_OK);
    assert_string_equal(en[5].sent_id, "old");

    /* a Failed entry without SenderFault is ours; throttling is not */
    en[3].status = en[4].status = SQS_ENTRY_PENDING;
    snprintf(answer, sizeof answer, "{\"Successful\":null,\"Failed\":[{\"Id\":\"m3\",\"Code\":"
             "\"InvalidParameterValue\"},{\"Id\":\"m4\",\"SenderFault\":true,\"Code\":"
             "\"RequestThrottled\"}]}");
    assert_int_equal(sqs_parse_batch_result(SQS_OP_SEND_BATCH, answer, strlen(answer), en, 6,
                                            &e), 0);
    assert_int_equal(en[3].status, SQS_ENTRY_FAILED);
    assert_string_equal(en[3].message, "");
    assert_int_equal(en[4].status, SQS_ENTRY_PENDING);

    static const char *const malformed[] = {
        "[]", "{\"Successful\":{}}", "{\"Failed\":1}", "{\"Successful\":[{\"Id\":\"m4\"}]}",
        "{\"Successful\":[1]}", "{\"Failed\":[\"m4\"]}", "",
    };
    for (size_t i = 0; i < N_ELEMS(malformed); i++) {
        en[4].status = SQS_ENTRY_PENDING;
        assert_int_equal(sqs_parse_batch_result(SQS_OP_SEND_BATCH, malformed[i],
                                                strlen(malformed[i]), en, 6, &e), -1);
        assert_int_equal(e.kind, LERR_MALFORMED);
        assert_contains(e.msg, "SQS SendMessageBatch answer: ");
        assert_int_equal(en[4].status, SQS_ENTRY_PENDING);
    }
}

static void test_parse_attributes(void **state)
{
    struct sqs_queue_info q;
    struct lerr e = { 0 };
    static const char full[] =
        "{\"Attributes\":{\"ApproximateNumberOfMessages\":\"3\","
        "\"ApproximateNumberOfMessagesNotVisible\":\"0\","
        "\"ApproximateNumberOfMessagesDelayed\":\"12\",\"RedrivePolicy\":"
        "\"{\\\"deadLetterTargetArn\\\":\\\"arn:aws:sqs:us-east-1:000000000000:jobs-dlq\\\","
        "\\\"maxReceiveCount\\\":5}\"}}";
    static const char string_count[] =
        "{\"Attributes\":{\"RedrivePolicy\":\"{\\\"maxReceiveCount\\\":\\\"7\\\","
        "\\\"deadLetterTargetArn\\\":\\\"arn:x\\\"}\"}}";

    assert_int_equal(sqs_parse_attributes(full, strlen(full), &q, &e), 0);
    assert_int_equal(q.visible, 3);
    assert_int_equal(q.in_flight, 0);
    assert_int_equal(q.delayed, 12);
    assert_int_equal(q.has_redrive, 1);
    assert_string_equal(q.dead_letter_arn, "arn:aws:sqs:us-east-1:000000000000:jobs-dlq");
    assert_int_equal(q.max_receive_count, 5);
    assert_int_equal(q.fifo, 0);
    assert_int_equal(q.content_dedup, 0);
    {
        static const char fifo[] = "{\"Attributes\":{\"FifoQueue\":\"true\","
                                   "\"ContentBasedDeduplication\":\"true\"}}";
        static const char fifo_off[] = "{\"Attributes\":{\"FifoQueue\":\"true\","
                                       "\"ContentBasedDeduplication\":\"false\"}}";
        assert_int_equal(sqs_parse_attributes(fifo, strlen(fifo), &q, &e), 0);
        assert_int_equal(q.fifo, 1);
        assert_int_equal(q.content_dedup, 1);
        assert_int_equal(sqs_parse_attributes(fifo_off, strlen(fifo_off), &q, &e), 0);
        assert_int_equal(q.fifo, 1);
        assert_int_equal(q.content_dedup, 0);
    }

    assert_int_equal(sqs_parse_attributes(string_count, strlen(string_count), &q, &e), 0);
    assert_int_equal(q.visible, -1);
    assert_int_equal(q.has_redrive, 1);
    assert_string_equal(q.dead_letter_arn, "arn:x");
    assert_int_equal(q.max_receive_count, 7);

    /* no policy; counts that are not whole numbers count as unknown */
    {
        static const char odd[] = "{\"Attributes\":{\"ApproximateNumberOfMessages\":\"-1\","
                                  "\"ApproximateNumberOfMessagesDelayed\":4,"
                                  "\"RedrivePolicy\":\"\"}}";
        assert_int_equal(sqs_parse_attributes(odd, strlen(odd), &q, &e), 0);
    }
    assert_int_equal(q.visible, -1);
    assert_int_equal(q.delayed, -1);
    assert_int_equal(q.has_redrive, 0);
    assert_int_equal(sqs_parse_attributes("{}", 2, &q, &e), 0);
    assert_int_equal(q.has_redrive, 0);
    assert_int_equal(q.in_flight, -1);
    /* a policy that is not JSON still is one */
    {
        static const char not_json[] = "{\"Attributes\":{\"RedrivePolicy\":\"x\"}}";
        assert_int_equal(sqs_parse_attributes(not_json, strlen(not_json), &q, &e), 0);
    }
    assert_int_equal(q.has_redrive, 1);
    assert_string_equal(q.dead_letter_arn, "");
    assert_int_equal(q.max_receive_count, -1);

    assert_int_equal(sqs_parse_attributes("[]", 2, &q, &e), -1);
    assert_int_equal(e.kind, LERR_MALFORMED);
    assert_int_equal(sqs_parse_attributes("{\"Attributes\":[]}", 17, &q, &e), -1);
    assert_int_equal(sqs_parse_attributes("nope", 4, &q, &e), -1);
}

static void test_text_check(void **state)
{
    static const struct {
        const char *s;
        size_t len;
        long at;  /* -1: valid */
    } cases[] = {
        { "plain", 5, -1 },
        { "\t\n\r", 3, -1 },
        { "\x7f", 1, -1 },
        { "\xc2\x80\xdf\xbf", 4, -1 },
        { "\xed\x9f\xbf\xee\x80\x80\xef\xbf\xbd", 9, -1 },   /* U+D7FF, U+E000, U+FFFD */
        { "\xf0\x90\x80\x80\xf4\x8f\xbf\xbf", 8, -1 },       /* U+10000, U+10FFFF */
        { "ab\x01", 3, 2 },
        { "a\0b", 3, 1 },
        { "\x1f", 1, 0 },
        { "x\xc0\x80", 3, 1 },                               /* overlong */
        { "x\xe0\x80\x80", 4, 1 },
        { "x\xf0\x80\x80\x80", 5, 1 },
        { "x\xed\xa0\x80", 4, 1 },                           /* surrogate */
        { "x\xf4\x90\x80\x80", 5, 1 },                       /* over U+10FFFF */
        { "x\xf5\x80\x80\x80", 5, 1 },
        { "x\x80", 2, 1 },
        { "x\xe2\x82", 3, 1 },                               /* cut short */
        { "x\xe2\x28\xa1", 4, 1 },
        { "xy\xef\xbf\xbe", 5, 2 },                          /* U+FFFE */
        { "\xef\xbf\xbf", 3, 0 },                            /* U+FFFF */
    };

    for (size_t i = 0; i < N_ELEMS(cases); i++) {
        size_t at = 999;
        const char *why = NULL;
        int r = sqs_text_check(cases[i].s, cases[i].len, &at, &why);

        if (cases[i].at < 0) {
            if (r != 0)
                fail_msg("case %zu: refused at %zu: %s", i, at, why);
        } else {
            if (r != -1)
                fail_msg("case %zu: accepted", i);
            assert_int_equal(at, (size_t)cases[i].at);
            assert_non_null(why);
        }
    }
    assert_int_equal(sqs_text_check("\x01", 1, NULL, NULL), -1);
    assert_int_equal(sqs_text_check("", 0, NULL, NULL), 0);
}

static void test_send_size(void **state)
{
    struct sqs_entry en = { .body = "12345", .body_len = 5 };

    assert_int_equal(sqs_send_size(&en), 5);
    en.image = "img";
    assert_int_equal(sqs_send_size(&en), 5 + 5 + 6 + 3);
    en.size = "l40s";
    en.command = "[\"a\"]";
    assert_int_equal(sqs_send_size(&en), 5 + 14 + 14 + 18);
}

/* ======================================================================================
 * check: rows and reasons
 * ==================================================================================== */

static void test_row(void **state)
{
    char buf[256] = "";
    FILE *f = fmemopen(buf, sizeof buf, "w");

    assert_non_null(f);
    cli_row(f, CLI_OK, "sqs queue", "https://q (1 visible)");
    cli_row(f, CLI_WARN, "x", "y");
    cli_row(f, CLI_FAIL, "fly app", "token refused");
    fclose(f);
    assert_string_equal(buf, "ok    sqs queue   https://q (1 visible)\n"
                             "warn  x           y\n"
                             "fail  fly app     token refused\n");
}

static void test_queue_row(void **state)
{
    struct sqs_queue_info q = { 3, 0, 1, 1, "arn:aws:sqs:us-east-1:1:jobs-dlq", 5, 0, 0 };
    char out[512];

    assert_int_equal(cli_queue_row("https://q/1/jobs", &q, out, sizeof out), CLI_OK);
    assert_string_equal(out, "https://q/1/jobs (3 visible, 0 in flight, 1 delayed; FIFO: no; "
                             "redrive to arn:aws:sqs:us-east-1:1:jobs-dlq after 5 receives)");
    q.fifo = 1;
    assert_int_equal(cli_queue_row("u", &q, out, sizeof out), CLI_OK);
    assert_contains(out, "; FIFO: yes, content-based deduplication off; redrive to ");
    q.content_dedup = 1;
    assert_int_equal(cli_queue_row("u", &q, out, sizeof out), CLI_OK);
    assert_contains(out, "; FIFO: yes, content-based deduplication on; redrive to ");
    q.has_redrive = 0;  /* a failing message would hold its group back for ever */
    assert_int_equal(cli_queue_row("u", &q, out, sizeof out), CLI_WARN);
    assert_contains(out, "come back forever, holding their message group back (SQS keeps "
                         "its order); give the queue a dead-letter queue)");
    q.has_redrive = 1;
    q.fifo = q.content_dedup = 0;
    q.max_receive_count = -1;
    q.dead_letter_arn[0] = '\0';
    q.visible = -1;
    assert_int_equal(cli_queue_row("u", &q, out, sizeof out), CLI_OK);
    assert_string_equal(out, "u (? visible, 0 in flight, 1 delayed; FIFO: no; redrive to (an "
                             "unreadable target))");
    q.has_redrive = 0;
    assert_int_equal(cli_queue_row("u", &q, out, sizeof out), CLI_WARN);
    assert_contains(out, "u (? visible, 0 in flight, 1 delayed; FIFO: no; no redrive policy: ");
    assert_contains(out, "come back forever; give the queue a dead-letter queue)");
}

static void test_sqs_reason(void **state)
{
    struct sqs_api_error ae = { 403, "SignatureDoesNotMatch", "The request signature we "
                                "calculated does not match", 0 };
    struct lerr e = { LERR_HTTP, "SQS GetQueueAttributes failed: ..." };
    char out[512];

    cli_sqs_reason(&ae, &e, out, sizeof out);
    assert_string_equal(out, "credentials refused: SignatureDoesNotMatch: The request signature "
                             "we calculated does not match (HTTP 403)");
    strcpy(ae.code, "QueueDoesNotExist");
    ae.status = 400;
    ae.message[0] = '\0';
    cli_sqs_reason(&ae, &e, out, sizeof out);
    assert_string_equal(out, "queue not found: QueueDoesNotExist (HTTP 400)");
    strcpy(ae.code, "AccessDenied");
    cli_sqs_reason(&ae, &e, out, sizeof out);
    assert_string_equal(out, "access denied: AccessDenied (HTTP 400)");
    ae.code[0] = '\0';
    strcpy(ae.message, "Bad Gateway");
    ae.status = 502;
    cli_sqs_reason(&ae, &e, out, sizeof out);
    assert_string_equal(out, "SQS refused: no error code: Bad Gateway (HTTP 502)");

    memset(&ae, 0, sizeof ae);
    e = (struct lerr){ LERR_TLS_UNTRUSTED, "SQS GetQueueAttributes failed: certificate for "
                       "localhost is not trusted" };
    cli_sqs_reason(&ae, &e, out, sizeof out);
    assert_string_equal(out, "TLS: SQS GetQueueAttributes failed: certificate for localhost is "
                             "not trusted (is its CA in the bundle SSL_CERT_FILE names?)");
    e = (struct lerr){ LERR_TLS_NAME, "certificate presented by x" };
    cli_sqs_reason(&ae, &e, out, sizeof out);
    assert_string_equal(out, "TLS: certificate presented by x");
    e = (struct lerr){ LERR_REFUSED, "connection refused" };
    cli_sqs_reason(&ae, &e, out, sizeof out);
    assert_string_equal(out, "connection: connection refused");
    e = (struct lerr){ LERR_DNS, "no such host" };
    cli_sqs_reason(&ae, &e, out, sizeof out);
    assert_string_equal(out, "DNS: no such host");
    e = (struct lerr){ LERR_TIMEOUT, "timed out" };
    cli_sqs_reason(&ae, &e, out, sizeof out);
    assert_string_equal(out, "timeout: timed out");
    e = (struct lerr){ LERR_MALFORMED, "answer is not JSON" };
    ae.status = 200;
    cli_sqs_reason(&ae, &e, out, sizeof out);
    assert_string_equal(out, "answer is not JSON");
}

static void test_fly_reason(void **state)
{
    struct fly_call_result r = { FLY_CALL_FAILED, 401, -1, "Authenticate: token validation error" };
    struct lerr e = { LERR_HTTP, "Fly app jobs: HTTP 401" };
    char out[512];

    cli_fly_reason("jobs", &r, &e, out, sizeof out);
    assert_string_equal(out, "token refused (HTTP 401: Authenticate: token validation error)");
    r.status = 404;
    strcpy(r.error, "app not found");
    cli_fly_reason("jobs", &r, &e, out, sizeof out);
    assert_string_equal(out, "app jobs not found (HTTP 404: app not found)");
    r.status = 403;
    r.error[0] = '\0';
    cli_fly_reason("jobs", &r, &e, out, sizeof out);
    assert_string_equal(out, "token may not use app jobs (HTTP 403)");
    r.status = 503;
    cli_fly_reason("jobs", &r, &e, out, sizeof out);
    assert_string_equal(out, "Fly refused: HTTP 503");
    r.status = 0;
    e = (struct lerr){ LERR_TLS_UNTRUSTED, "Fly app jobs: certificate for localhost is not "
                       "trusted" };
    cli_fly_reason("jobs", &r, &e, out, sizeof out);
    assert_string_equal(out, "TLS: Fly app jobs: certificate for localhost is not trusted (is "
                             "its CA in the bundle SSL_CERT_FILE names?)");
}

static void test_fly_app_url(void **state)
{
    struct url base, out;
    struct lerr e = { 0 };

    assert_int_equal(url_parse("https://api.machines.dev", &base, &e), 0);
    assert_int_equal(fly_app_url(&base, "my-jobs", "", &out, &e), 0);
    assert_string_equal(out.path, "/v1/apps/my-jobs");
    assert_string_equal(out.authority, "api.machines.dev");
    assert_int_equal(out.tls, 1);
    assert_int_equal(url_parse("http://127.0.0.1:4280/prefix//", &base, &e), 0);
    assert_int_equal(fly_app_url(&base, "a b/c", "", &out, &e), 0);
    assert_string_equal(out.path, "/prefix/v1/apps/a%20b%2Fc");
    assert_int_equal(fly_app_url(&base, "", "", &out, &e), -1);
    assert_int_equal(e.kind, LERR_INVALID);
}

/* ======================================================================================
 * The subcommands' own argument errors (no network, no configuration)
 * ==================================================================================== */

static void test_usage_exits(void **state)
{
    char *bad_send[] = { "send", "--bogus" };
    char *no_image[] = { "send", "{}" };
    char *bad_cmd[] = { "send", "--image", IMAGE, "--command", "[1]", "{}" };
    char *bad_check[] = { "check", "extra" };
    int saved = dup(2), null = open("/dev/null", O_WRONLY);

    /* the usage text is not this test's output */
    assert_true(saved >= 0 && null >= 0);
    fflush(stderr);
    dup2(null, 2);
    assert_int_equal(cli_send(2, bad_send), CLI_EXIT_USAGE);
    assert_int_equal(cli_send(2, no_image), CLI_EXIT_USAGE);
    assert_int_equal(cli_send(6, bad_cmd), CLI_EXIT_USAGE);
    assert_int_equal(cli_check(2, bad_check), CLI_EXIT_USAGE);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(null);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_args),
        cmocka_unit_test(test_fifo_args),
        cmocka_unit_test(test_pointer),
        cmocka_unit_test(test_fifo_ids),
        cmocka_unit_test(test_args_errors),
        cmocka_unit_test(test_split_lines),
        cmocka_unit_test(test_split_array),
        cmocka_unit_test(test_check_flags),
        cmocka_unit_test(test_check_body),
        cmocka_unit_test(test_batch_len),
        cmocka_unit_test(test_send_request),
        cmocka_unit_test(test_send_request_invalid),
        cmocka_unit_test(test_send_batch_request),
        cmocka_unit_test(test_attributes_request),
        cmocka_unit_test(test_attributes_md5),
        cmocka_unit_test(test_parse_send_result),
        cmocka_unit_test(test_parse_send_batch_result),
        cmocka_unit_test(test_parse_attributes),
        cmocka_unit_test(test_text_check),
        cmocka_unit_test(test_send_size),
        cmocka_unit_test(test_row),
        cmocka_unit_test(test_queue_row),
        cmocka_unit_test(test_sqs_reason),
        cmocka_unit_test(test_fly_reason),
        cmocka_unit_test(test_fly_app_url),
        cmocka_unit_test(test_usage_exits),
    };

    log_setup(LOG_LEVEL_ERROR, 0);  /* the "ignoring an Id" warnings are expected here */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
