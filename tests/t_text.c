/* text_read_file, the one bounded whole-file reader: a file read whole and NUL-terminated,
 * a missing one as a result or as an error, the regular-file check, the size cap (max
 * bytes pass, max + 1 do not) on a file and on a pipe (stdin) that outgrows the first
 * buffer, and messages that name the file after the caller's words; text_ends_with. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "text.h"

#define BOTH (TEXT_READ_REGULAR | TEXT_READ_MISSING_OK)

static char dir[] = "/tmp/t_text.XXXXXX";

static void assert_has(const char *s, const char *part)
{
    if (!strstr(s, part))
        fail_msg("\"%s\" lacks \"%s\"", s, part);
}

/* dir/name holding n bytes of 'x'; its path in out. */
static void make_file(const char *name, size_t n, char out[256])
{
    FILE *f;

    snprintf(out, 256, "%s/%s", dir, name);
    assert_non_null(f = fopen(out, "w"));
    for (size_t i = 0; i < n; i++)
        fputc('x', f);
    fclose(f);
}

static void test_whole_file(void **state)
{
    struct lerr e = { 0 };
    char path[256], *buf = NULL;
    size_t len = 0;

    (void)state;
    make_file("ten", 10, path);
    assert_int_equal(text_read_file(path, "", 10, BOTH, &buf, &len, &e), 0);
    assert_int_equal(len, 10);
    assert_string_equal(buf, "xxxxxxxxxx");  /* NUL-terminated */
    free(buf);
    buf = NULL;
    make_file("empty", 0, path);
    assert_int_equal(text_read_file(path, "", 10, 0, &buf, &len, &e), 0);
    assert_int_equal(len, 0);
    assert_string_equal(buf, "");
    free(buf);
    assert_int_equal(e.kind, LERR_NONE);
}

static void test_missing(void **state)
{
    struct lerr e = { 0 };
    char path[256], *buf = NULL;
    size_t len = 0;

    (void)state;
    snprintf(path, sizeof path, "%s/nope", dir);
    assert_int_equal(text_read_file(path, "", 10, BOTH, &buf, &len, &e), 1);
    assert_int_equal(text_read_file("", "", 10, BOTH, &buf, &len, &e), 1);
    make_file("plain", 1, path);
    strcat(path, "/below");  /* ENOTDIR */
    assert_int_equal(text_read_file(path, "", 10, BOTH, &buf, &len, &e), 1);
    assert_int_equal(e.kind, LERR_NONE);  /* no error to the caller */
    assert_null(buf);
    snprintf(path, sizeof path, "%s/nope", dir);
    assert_int_equal(text_read_file(path, "CA bundle ", 10, TEXT_READ_REGULAR, &buf, &len, &e),
                     -1);
    assert_int_equal(e.kind, LERR_IO);
    assert_has(e.msg, "cannot open CA bundle /tmp/t_text.");
    assert_has(e.msg, "/nope: No such file or directory");
    assert_null(buf);
}

static void test_not_regular(void **state)
{
    struct lerr e = { 0 };
    char *buf = NULL;
    size_t len = 0;

    (void)state;
    assert_int_equal(text_read_file(dir, "", 10, BOTH, &buf, &len, &e), -1);
    assert_int_equal(e.kind, LERR_INVALID);
    assert_has(e.msg, "/tmp/t_text.");
    assert_has(e.msg, " is not a regular file");
    /* without the check, a directory fails to read */
    assert_int_equal(text_read_file(dir, "", 10, 0, &buf, &len, &e), -1);
    assert_int_equal(e.kind, LERR_IO);
    assert_has(e.msg, "cannot read /tmp/t_text.");
    assert_null(buf);
}

static void test_too_large(void **state)
{
    struct lerr e = { 0 };
    char path[256], *buf = NULL;
    size_t len = 0;

    (void)state;
    make_file("eleven", 11, path);
    assert_int_equal(text_read_file(path, "", 10, BOTH, &buf, &len, &e), -1);
    assert_int_equal(e.kind, LERR_TOO_LARGE);
    assert_has(e.msg, "/eleven is larger than 10 bytes");
    assert_null(buf);
    assert_int_equal(text_read_file(path, "", 11, BOTH, &buf, &len, &e), 0);
    assert_int_equal(len, 11);
    free(buf);
}

/* stdin a pipe fed n bytes (i % 251) by a child: beyond the first 64 KiB buffer. */
static int feed_stdin(size_t n)
{
    int fds[2], saved = dup(STDIN_FILENO);
    pid_t pid;

    assert_int_equal(pipe(fds), 0);
    assert_true((pid = fork()) >= 0);
    if (pid == 0) {
        unsigned char *b = malloc(n);
        size_t at = 0;
        ssize_t w = 1;

        close(fds[0]);
        for (size_t i = 0; b && i < n; i++)
            b[i] = (unsigned char)(i % 251);
        while (b && at < n && (w = write(fds[1], b + at, n - at)) > 0)
            at += (size_t)w;
        _exit(at == n ? 0 : 1);
    }
    close(fds[1]);
    dup2(fds[0], STDIN_FILENO);
    close(fds[0]);
    return saved;
}

static void restore_stdin(int saved)
{
    int status;

    dup2(saved, STDIN_FILENO);
    close(saved);
    while (wait(&status) > 0)
        ;
}

static void test_pipe(void **state)
{
    struct lerr e = { 0 };
    char *buf = NULL;
    size_t len = 0, n = 200000;
    int saved = feed_stdin(n);

    (void)state;
    assert_int_equal(text_read_file(NULL, "", n, 0, &buf, &len, &e), 0);
    restore_stdin(saved);
    assert_int_equal(len, n);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)buf[i] != i % 251)
            fail_msg("byte %zu is %u", i, (unsigned char)buf[i]);
    assert_int_equal(buf[n], '\0');
    free(buf);
    buf = NULL;

    saved = feed_stdin(n + 1);
    assert_int_equal(text_read_file(NULL, "", n, 0, &buf, &len, &e), -1);
    assert_int_equal(e.kind, LERR_TOO_LARGE);
    assert_has(e.msg, "stdin is larger than 200000 bytes");
    /* a pipe is no regular file */
    assert_int_equal(text_read_file(NULL, "", n, TEXT_READ_REGULAR, &buf, &len, &e), -1);
    assert_string_equal(e.msg, "stdin is not a regular file");
    restore_stdin(saved);
    assert_null(buf);
}

/* config.c (AWS hosts, FIFO queues) and sqs.c (the attributes asked for) rely on it. */
static void test_ends_with(void **state)
{
    (void)state;
    assert_true(text_ends_with("/123/jobs.fifo", ".fifo"));
    assert_false(text_ends_with("/123/jobs.fifo/", ".fifo"));
    assert_false(text_ends_with("/123/jobs", ".fifo"));
    assert_false(text_ends_with(".fifo", ".fifo"));  /* a name, not only the suffix */
    assert_true(text_ends_with("sqs.cn-north-1.amazonaws.com.cn", ".amazonaws.com.cn"));
    assert_false(text_ends_with("", ".fifo"));
}

static int setup(void **state)
{
    (void)state;
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[64];

    (void)state;
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_file),
        cmocka_unit_test(test_missing),
        cmocka_unit_test(test_not_regular),
        cmocka_unit_test(test_too_large),
        cmocka_unit_test(test_pipe),
        cmocka_unit_test(test_ends_with),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
