/* log: the two line formats on stderr. JSON lines (LAMBDO_ENV=production) parse as one JSON
 * object each whose msg is the message exactly, whatever bytes it holds; text lines have
 * control bytes turned into spaces, so one message is always one line; levels below the
 * minimum print nothing. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cJSON.h"
#include "log.h"

/* What the logger wrote to stderr while fn ran (stderr goes to a temporary file). */
static char *capture(void (*fn)(void))
{
    static char buf[16384];
    FILE *tmp = tmpfile();
    int saved = dup(2);
    size_t n;

    assert_non_null(tmp);
    assert_true(saved >= 0);
    fflush(stderr);
    assert_true(dup2(fileno(tmp), 2) >= 0);
    fn();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(tmp);
    n = fread(buf, 1, sizeof buf - 1, tmp);
    buf[n] = '\0';
    fclose(tmp);
    return buf;
}

#define ODD "say \"hi\" \\ back\nnew line\ttab \x01 caf\xc3\xa9"

static void log_odd(void)
{
    log_debug("hidden %d", 1);
    log_info("%s", ODD);
    log_error("second");
}

static void test_json_lines(void **state)
{
    char *out, *nl;
    cJSON *j;

    log_setup(LOG_LEVEL_INFO, 1);
    out = capture(log_odd);
    nl = strchr(out, '\n');
    assert_non_null(nl);
    *nl = '\0';
    j = cJSON_Parse(out);
    if (!j)
        fail_msg("not JSON: %s", out);
    assert_string_equal(cJSON_GetObjectItem(j, "level")->valuestring, "info");
    assert_string_equal(cJSON_GetObjectItem(j, "msg")->valuestring, ODD);
    assert_int_equal(strlen(cJSON_GetObjectItem(j, "time")->valuestring),
                     strlen("2026-11-27T20:00:00.000Z"));
    cJSON_Delete(j);
    assert_null(strchr(out, '\x01'));               /* escaped, not raw */
    j = cJSON_Parse(nl + 1);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "msg")->valuestring, "second");
    cJSON_Delete(j);
    assert_null(strstr(nl + 1, "hidden"));
}

static void test_text_lines(void **state)
{
    char *out;

    log_setup(LOG_LEVEL_INFO, 0);
    out = capture(log_odd);
    assert_non_null(strstr(out, " info  say \"hi\" \\ back new line\ttab   caf\xc3\xa9\n"));
    assert_non_null(strstr(out, " error second\n"));
    assert_null(strstr(out, "hidden"));
    assert_int_equal(out[4], '-');
    log_setup(LOG_LEVEL_DEBUG, 0);
    assert_non_null(strstr(capture(log_odd), " debug hidden 1\n"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_lines),
        cmocka_unit_test(test_text_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
