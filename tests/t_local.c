/* local: commands (check, parse, which one wins), output line splitting and formatting,
 * and real child processes: exit codes, signals, timeouts and stops that kill the whole
 * process group, exec failures, the events file, the log, the environment, descriptors,
 * and many runs at once from threads. Time is only ever asserted as a lower bound. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "group.h"
#include "local.h"
#include "log.h"

static void assert_has(const char *s, const char *want)
{
    if (!strstr(s, want))
        fail_msg("\"%s\" lacks \"%s\"", s, want);
}

static void assert_lacks(const char *s, const char *bad)
{
    if (strstr(s, bad))
        fail_msg("output has \"%s\":\n%s", bad, s);
}

/* ---- a scratch directory per test ------------------------------------------------------ */

static char scratch[256];

static int rm_entry(const char *p, const struct stat *st, int f, struct FTW *w)
{
    return remove(p);
}

static int scratch_up(void **state)
{
    snprintf(scratch, sizeof scratch, "/tmp/t_local-XXXXXX");
    return mkdtemp(scratch) ? 0 : -1;
}

static int scratch_down(void **state)
{
    nftw(scratch, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static void scratch_path(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", scratch, name);
}

/* Entries in dir, "." and ".." aside. */
static int dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    int n = 0;

    assert_non_null(d);
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

static char *file_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    if (len)
        *len = (size_t)n;
    return buf;
}

/* ---- capturing lambdo's log (fd 2) ------------------------------------------------------ */

struct capture {
    int saved;
    char path[300];
};

static void capture_start(struct capture *c)
{
    int fd;

    scratch_path(c->path, sizeof c->path, "log");
    fd = open(c->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    fflush(stderr);
    c->saved = fcntl(2, F_DUPFD_CLOEXEC, 3);
    assert_true(c->saved >= 0);
    dup2(fd, 2);
    close(fd);
}

/* Restores stderr and returns what was logged (free it). Called before any assertion about
 * the run, so that cmocka's own messages reach the real stderr. */
static char *capture_stop(struct capture *c)
{
    char *log;

    fflush(stderr);
    dup2(c->saved, 2);
    close(c->saved);
    log = file_read(c->path, NULL);
    assert_non_null(log);
    unlink(c->path);
    return log;
}

/* ---- running ------------------------------------------------------------------------------ */

static struct local_run run_base(const char *const *argv, const char *gid)
{
    struct local_run r = {
        .argv = argv, .events = "[]", .events_len = 2, .group_id = gid, .stop_fd = -1,
        .tmpdir = scratch,
    };
    return r;
}

/* Runs r and returns its log; -1 from local_run_group fails the test. */
static char *run_logged(const struct local_run *r, struct local_result *res)
{
    struct capture c;
    struct lerr e = { 0 };
    char *log;
    int rc;

    capture_start(&c);
    rc = local_run_group(r, res, &e);
    log = capture_stop(&c);
    if (rc != 0)
        fail_msg("local_run_group: %s (log: %s)", e.msg, log);
    return log;
}

static double mono_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A process is gone once it no longer exists or is a zombie nobody reaped (this
 * container's init may not reap orphans). Waits up to 5 s for it. */
static int process_gone(pid_t pid)
{
    for (int i = 0; i < 100; i++) {
        char path[64], buf[512], *p;
        FILE *f;
        size_t n;

        snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
        if (!(f = fopen(path, "r")))
            return 1;
        n = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[n] = '\0';
        p = strrchr(buf, ')');
        if (p && p[1] == ' ' && p[2] == 'Z')
            return 1;
        usleep(50 * 1000);
    }
    return 0;
}

static pid_t pid_from_file(const char *path)
{
    char *s = file_read(path, NULL);
    pid_t pid;

    assert_non_null(s);
    pid = (pid_t)atoi(s);
    free(s);
    assert_true(pid > 0);
    return pid;
}

/* ---- commands ----------------------------------------------------------------------------- */

static void test_command_check(void **state)
{
    static const char *const good[] = {
        "[\"a\"]", " [ \"node\" , \"index.js\" ] ", "[\"a\", \"\"]", "[\"\\\\u0000\"]",
        "[\"x\\u00e9\"]",
    };
    static const struct { const char *json, *why; } bad[] = {
        { "", "not valid JSON" },
        { "[\"a\"", "not valid JSON" },
        { "[\"a\"] x", "not valid JSON" },
        { "{}", "must be a JSON array of strings, not an object" },
        { "\"a\"", "must be a JSON array of strings, not a string" },
        { "3", "not a number" },
        { "[]", "at least one string" },
        { "[1]", "element 1 is not a string (it is a number)" },
        { "[\"a\", null]", "element 2 is not a string (it is null)" },
        { "[\"a\", [\"b\"]]", "element 2 is not a string (it is an array)" },
        { "[\"\"]", "element 1 is empty" },
        { "[\"a\\u0000b\"]", "NUL" },
        { "[\"a\", \"\\\\\\u0000\"]", "NUL" },
    };
    struct lerr e;

    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (group_command(good[i], NULL, &e) != 0)
            fail_msg("%s refused: %s", good[i], e.msg);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&e, 0, sizeof e);
        if (group_command(bad[i].json, NULL, &e) != -1)
            fail_msg("%s accepted", bad[i].json);
        assert_int_equal(e.kind, LERR_INVALID);
        assert_has(e.msg, bad[i].why);
    }
    assert_int_equal(group_command(NULL, NULL, &e), -1);
}

static void test_argv_from_json(void **state)
{
    char **argv = NULL;
    struct lerr e;

    assert_int_equal(local_command_resolve("[\"ls\", \"-l\", \"a b\", \"\\u00e9\", \"\"]", NULL,
                                           &argv, &e), 0);
    assert_string_equal(argv[0], "ls");
    assert_string_equal(argv[1], "-l");
    assert_string_equal(argv[2], "a b");
    assert_string_equal(argv[3], "\xc3\xa9");
    assert_string_equal(argv[4], "");
    assert_null(argv[5]);
    free(argv);
    assert_int_equal(local_command_resolve("[2]", NULL, &argv, &e), -1);
    assert_int_equal(e.kind, LERR_INVALID);
}

static void test_command_resolve(void **state)
{
    char **argv = NULL;
    struct lerr e;

    /* The message's command wins over LAMBDO_LOCAL_COMMAND. */
    assert_int_equal(local_command_resolve("[\"msg\"]", "[\"default\"]", &argv, &e), 0);
    assert_string_equal(argv[0], "msg");
    free(argv);
    assert_int_equal(local_command_resolve(NULL, "[\"default\", \"x\"]", &argv, &e), 0);
    assert_string_equal(argv[0], "default");
    assert_string_equal(argv[1], "x");
    free(argv);
    assert_int_equal(local_command_resolve(NULL, NULL, &argv, &e), -1);
    assert_int_equal(e.kind, LERR_INVALID);
    assert_has(e.msg, "no command attribute and LAMBDO_LOCAL_COMMAND is not set");
    assert_int_equal(local_command_resolve(NULL, "{}", &argv, &e), -1);
    assert_has(e.msg, "LAMBDO_LOCAL_COMMAND: must be a JSON array");
    assert_int_equal(local_command_resolve("[1]", NULL, &argv, &e), -1);
    assert_has(e.msg, "attribute command: element 1");
}

/* ---- output lines (pure) ------------------------------------------------------------------ */

struct got {
    char lines[16][LOCAL_LINE_MAX + 1];
    size_t lens[16];
    int trunc[16];
    int n;
};

static void got_emit(void *ctx, const char *line, size_t len, int truncated)
{
    struct got *g = ctx;

    assert_true(g->n < 16);
    assert_true(len <= LOCAL_LINE_MAX);
    memcpy(g->lines[g->n], line, len);
    g->lines[g->n][len] = '\0';
    g->lens[g->n] = len;
    g->trunc[g->n++] = truncated;
}

static void feed_in_chunks(struct local_lines *l, const char *s, size_t n, size_t chunk)
{
    for (size_t off = 0; off < n; off += chunk)
        local_lines_feed(l, s + off, n - off < chunk ? n - off : chunk);
}

static void test_lines_split(void **state)
{
    static const char text[] = "one\n\ntwo\r\nthree";
    const size_t chunks[] = { 1, 2, 3, 7, sizeof text };

    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        static struct got g;
        static struct local_lines l;

        memset(&g, 0, sizeof g);
        memset(&l, 0, sizeof l);
        l.emit = got_emit;
        l.ctx = &g;
        feed_in_chunks(&l, text, sizeof text - 1, chunks[c]);
        assert_int_equal(g.n, 3);
        local_lines_finish(&l);
        assert_int_equal(g.n, 4);
        assert_string_equal(g.lines[0], "one");
        assert_string_equal(g.lines[1], "");
        assert_string_equal(g.lines[2], "two\r");
        assert_string_equal(g.lines[3], "three");
        for (int i = 0; i < 4; i++)
            assert_int_equal(g.trunc[i], 0);
        local_lines_finish(&l);
        assert_int_equal(g.n, 4);
    }
}

static void test_lines_truncate(void **state)
{
    static struct got g;
    static struct local_lines l;
    size_t n = 3 * LOCAL_LINE_MAX + LOCAL_LINE_MAX + 40;
    char *s = malloc(n);
    size_t off = 0;

    assert_non_null(s);
    /* exactly LOCAL_LINE_MAX, one over, far over (and ending the stream unterminated) */
    memset(s, 'a', LOCAL_LINE_MAX);
    off = LOCAL_LINE_MAX;
    s[off++] = '\n';
    memset(s + off, 'b', LOCAL_LINE_MAX + 1);
    off += LOCAL_LINE_MAX + 1;
    s[off++] = '\n';
    memcpy(s + off, "ok\n", 3);
    off += 3;
    memset(s + off, 'c', n - off);
    for (size_t chunk = 1; chunk <= 4096; chunk *= 8) {
        memset(&g, 0, sizeof g);
        memset(&l, 0, sizeof l);
        l.emit = got_emit;
        l.ctx = &g;
        feed_in_chunks(&l, s, n, chunk);
        local_lines_finish(&l);
        assert_int_equal(g.n, 4);
        assert_int_equal(g.lens[0], LOCAL_LINE_MAX);
        assert_int_equal(g.trunc[0], 0);
        assert_int_equal(g.lens[1], LOCAL_LINE_MAX);
        assert_int_equal(g.trunc[1], 1);
        assert_int_equal(g.lines[1][0], 'b');
        assert_string_equal(g.lines[2], "ok");
        assert_int_equal(g.trunc[2], 0);
        assert_int_equal(g.lens[3], LOCAL_LINE_MAX);
        assert_int_equal(g.trunc[3], 1);
    }
    free(s);
}

static void test_line_format(void **state)
{
    char out[LOCAL_LINE_MAX + 64], *big;

    local_line_format(out, sizeof out, "0123456789abcdef", "hello", 5, 0);
    assert_string_equal(out, "[group 0123456789abcdef] hello");
    local_line_format(out, sizeof out, "g", "crlf\r", 5, 0);
    assert_string_equal(out, "[group g] crlf");
    local_line_format(out, sizeof out, "g", "a\0b", 3, 0);
    assert_string_equal(out, "[group g] a?b");
    /* valid 2, 3 and 4 byte characters stay; overlong, surrogate, stray bytes do not */
    local_line_format(out, sizeof out, "g", "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9, 0);
    assert_string_equal(out, "[group g] \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    local_line_format(out, sizeof out, "g", "\xc0\xaf|\xed\xa0\x80|\x80|\xff|\xe2\x82", 13, 0);
    assert_string_equal(out, "[group g] ??|???|?|?|??");
    local_line_format(out, sizeof out, "g", "x\xe2\x82", 3, 1);
    assert_string_equal(out, "[group g] x [truncated]");
    big = malloc(LOCAL_LINE_MAX);
    assert_non_null(big);
    memset(big, 'z', LOCAL_LINE_MAX);
    local_line_format(out, sizeof out, "0123456789abcdef", big, LOCAL_LINE_MAX, 1);
    assert_int_equal(strlen(out), strlen("[group 0123456789abcdef] ") + LOCAL_LINE_MAX +
                     strlen(" [truncated]"));
    /* what log_write can carry in one message */
    assert_true(strlen(out) < 2047);
    free(big);
    local_line_format(out, 12, "g", "hello world", 11, 0);
    assert_string_equal(out, "[group g] h");
}

/* ---- children: exit status ---------------------------------------------------------------- */

struct cb {
    int started, pid, idle;
    int stop_wfd;          /* written to when the child started, if >= 0 */
};

static void cb_started(void *ctx, int pid)
{
    struct cb *c = ctx;

    c->started++;
    c->pid = pid;
    if (c->stop_wfd >= 0)
        assert_int_equal(write(c->stop_wfd, "x", 1), 1);
}

static void cb_idle(void *ctx)
{
    ((struct cb *)ctx)->idle++;
}

static void test_exit_0(void **state)
{
    const char *argv[] = { "sh", "-c", "sleep 1.5; exit 0", NULL };
    struct local_run r = run_base(argv, "exit0");
    struct cb c = { .stop_wfd = -1 };
    struct local_result res;
    char line[80];
    char *log;

    r.started = cb_started;
    r.idle = cb_idle;
    r.ctx = &c;
    r.event_count = 7;
    log = run_logged(&r, &res);
    assert_int_equal(res.started, 1);
    snprintf(line, sizeof line, "group exit0: process %d started for 7 events", res.pid);
    assert_has(log, line);
    assert_int_equal(res.exited, 1);
    assert_int_equal(res.exit_code, 0);
    assert_int_equal(res.signal, 0);
    assert_false(res.timed_out || res.stopped || res.exec_failed);
    assert_string_equal(res.reason, "exited 0");
    assert_true(local_result_ok(&res));
    assert_int_equal(c.started, 1);
    assert_int_equal(c.pid, res.pid);
    assert_true(c.idle >= 1);
    assert_true(res.seconds >= 1.4);
    assert_int_equal(dir_entries(scratch), 0);
    free(log);
}

static void test_exit_3(void **state)
{
    const char *argv[] = { "sh", "-c", "exit 3", NULL };
    struct local_run r = run_base(argv, "exit3");
    struct local_result res;

    free(run_logged(&r, &res));
    assert_int_equal(res.exited, 1);
    assert_int_equal(res.exit_code, 3);
    assert_string_equal(res.reason, "exited 3");
    assert_false(local_result_ok(&res));
    assert_int_equal(dir_entries(scratch), 0);
}

static void test_killed_by_signal(void **state)
{
    const char *argv[] = { "sh", "-c", "kill -9 $$", NULL };
    struct local_run r = run_base(argv, "sig");
    struct local_result res;

    free(run_logged(&r, &res));
    assert_int_equal(res.started, 1);
    assert_int_equal(res.exited, 0);
    assert_int_equal(res.signal, 9);
    assert_string_equal(res.reason, "killed by signal 9 (SIGKILL)");
    assert_false(local_result_ok(&res));
}

static double cpu_seconds(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* Without a heartbeat callback, following a quiet child still sleeps in poll: it once
 * spun once the first heartbeat was due (about 1 s in), burning a core until the end. */
static void test_no_busy_wait_without_idle(void **state)
{
    const char *argv[] = { "sleep", "3", NULL };
    struct local_run r = run_base(argv, "quiet");
    struct local_result res;
    double cpu = cpu_seconds();

    free(run_logged(&r, &res));
    cpu = cpu_seconds() - cpu;
    assert_true(local_result_ok(&res));
    if (cpu > 0.5)
        fail_msg("%.2f s of CPU to follow a child that slept 3 s", cpu);
}

/* ---- children: timeouts, stops, process groups -------------------------------------------- */

static void test_timeout_kills_group(void **state)
{
    char pidf[300];
    const char *argv[] = { "sh", "-c", "sleep 30 & echo $! > \"$1\"; wait", "sh", pidf, NULL };
    struct local_run r = run_base(argv, "timeout");
    struct local_result res;
    double t0 = mono_now();

    scratch_path(pidf, sizeof pidf, "grandchild.pid");
    r.timeout_s = 1;
    free(run_logged(&r, &res));
    assert_true(mono_now() - t0 >= 1.0);
    assert_int_equal(res.timed_out, 1);
    assert_int_equal(res.signal, SIGTERM);
    assert_has(res.reason, "ran past its timeout of 1 s: killed by signal 15 (SIGTERM)");
    assert_false(local_result_ok(&res));
    assert_true(process_gone(pid_from_file(pidf)));
}

static void test_timeout_escalates_to_sigkill(void **state)
{
    char pidf[300];
    /* TERM is ignored by the shell and, inherited, by its sleeping child */
    const char *argv[] = { "sh", "-c", "trap '' TERM; sleep 30 & echo $! > \"$1\"; wait; wait",
                           "sh", pidf, NULL };
    struct local_run r = run_base(argv, "kill");
    struct local_result res;

    scratch_path(pidf, sizeof pidf, "grandchild.pid");
    r.timeout_s = 1;
    r.kill_grace_s = 1;
    free(run_logged(&r, &res));
    assert_int_equal(res.timed_out, 1);
    assert_int_equal(res.signal, SIGKILL);
    assert_true(res.seconds >= 2.0);
    assert_has(res.reason, "killed by signal 9 (SIGKILL)");
    assert_true(process_gone(pid_from_file(pidf)));
    assert_int_equal(dir_entries(scratch), 1);  /* the pid file only */
}

/* A process the child leaves behind in its group ends with it, as in a Machine. */
static void test_leftovers_killed(void **state)
{
    char pidf[300];
    const char *argv[] = { "sh", "-c", "sleep 30 & echo $! > \"$1\"; echo bye", "sh", pidf,
                           NULL };
    struct local_run r = run_base(argv, "left");
    struct local_result res;
    char *log;

    scratch_path(pidf, sizeof pidf, "grandchild.pid");
    log = run_logged(&r, &res);
    assert_true(local_result_ok(&res));
    assert_has(log, "[group left] bye");
    assert_true(process_gone(pid_from_file(pidf)));
    free(log);
}

/* A process that left the group (setsid) cannot be killed with it; its hold on the output
 * pipe is given up shortly after the child ended, so the run still ends. */
static void test_escaped_process_does_not_hang(void **state)
{
    char pidf[300];
    const char *argv[] = { "sh", "-c", "setsid sleep 30 & echo $! > \"$1\"; echo done", "sh",
                           pidf, NULL };
    struct local_run r = run_base(argv, "escape");
    struct local_result res;
    char *log;
    pid_t pid;

    scratch_path(pidf, sizeof pidf, "escaped.pid");
    log = run_logged(&r, &res);
    pid = pid_from_file(pidf);
    kill(pid, SIGKILL);
    assert_true(local_result_ok(&res));
    assert_has(log, "[group escape] done\n");
    free(log);
}

/* With SIGCHLD ignored the kernel reaps children itself: the status is lost, a failure. */
static void test_status_lost(void **state)
{
    const char *argv[] = { "sh", "-c", "exit 0", NULL };
    struct local_run r = run_base(argv, "lost");
    struct local_result res;
    void (*old)(int) = signal(SIGCHLD, SIG_IGN);

    free(run_logged(&r, &res));
    signal(SIGCHLD, old);
    assert_int_equal(res.started, 1);
    assert_int_equal(res.lost, 1);
    assert_has(res.reason, "exit status unknown");
    assert_false(local_result_ok(&res));
}

static void test_stop_after_grace(void **state)
{
    char pidf[300];
    const char *argv[] = { "sh", "-c", "sleep 30 & echo $! > \"$1\"; wait", "sh", pidf, NULL };
    struct local_run r = run_base(argv, "stop");
    struct cb c;
    struct local_result res;
    int p[2];

    scratch_path(pidf, sizeof pidf, "grandchild.pid");
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    c = (struct cb){ .stop_wfd = p[1] };
    r.stop_fd = p[0];
    r.shutdown_grace_s = 1;
    r.timeout_s = 60;
    r.started = cb_started;
    r.ctx = &c;
    free(run_logged(&r, &res));
    assert_int_equal(res.stopped, 1);
    assert_int_equal(res.timed_out, 0);
    assert_true(res.seconds >= 1.0);
    assert_int_equal(res.signal, SIGTERM);
    assert_has(res.reason, "stopped: still running 1 s after lambdo began to stop");
    assert_false(local_result_ok(&res));
    assert_true(process_gone(pid_from_file(pidf)));
    close(p[0]);
    close(p[1]);
}

/* A child that ends within the shutdown grace time has its own outcome. */
static void test_stop_finishes_within_grace(void **state)
{
    const char *argv[] = { "sh", "-c", "sleep 0.5; exit 0", NULL };
    struct local_run r = run_base(argv, "stopok");
    struct cb c;
    struct local_result res;
    int p[2];

    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    c = (struct cb){ .stop_wfd = p[1] };
    r.stop_fd = p[0];
    r.shutdown_grace_s = 30;
    r.started = cb_started;
    r.ctx = &c;
    free(run_logged(&r, &res));
    assert_int_equal(res.stopped, 0);
    assert_true(local_result_ok(&res));
    close(p[0]);
    close(p[1]);
}

static void test_stop_before_start(void **state)
{
    const char *argv[] = { "sh", "-c", "exit 0", NULL };
    struct local_run r = run_base(argv, "early");
    struct cb c = { .stop_wfd = -1 };
    struct local_result res;
    int p[2];

    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    assert_int_equal(write(p[1], "x", 1), 1);
    r.stop_fd = p[0];
    r.started = cb_started;
    r.ctx = &c;
    free(run_logged(&r, &res));
    assert_int_equal(res.stopped, 1);
    assert_int_equal(res.started, 0);
    assert_int_equal(c.started, 0);
    assert_has(res.reason, "not started");
    assert_false(local_result_ok(&res));
    assert_int_equal(dir_entries(scratch), 0);
    close(p[0]);
    close(p[1]);
}

/* ---- children: exec failures -------------------------------------------------------------- */

static void test_command_not_found(void **state)
{
    const char *argv[] = { "lambdo-no-such-command", "x", NULL };
    const char *argv2[] = { "/nonexistent/dir/prog", NULL };
    struct local_run r = run_base(argv, "nf");
    struct local_result res;

    free(run_logged(&r, &res));
    assert_int_equal(res.exec_failed, 1);
    assert_int_equal(res.started, 0);
    assert_int_equal(res.exited, 0);
    assert_string_equal(res.reason, "command not found: lambdo-no-such-command");
    assert_false(local_result_ok(&res));
    assert_int_equal(dir_entries(scratch), 0);
    r.argv = argv2;
    free(run_logged(&r, &res));
    assert_int_equal(res.exec_failed, 1);
    assert_string_equal(res.reason, "command not found: /nonexistent/dir/prog");
}

static void test_command_not_executable(void **state)
{
    char prog[300];
    const char *argv[] = { prog, NULL };
    struct local_run r = run_base(argv, "nx");
    struct local_result res;
    FILE *f;

    scratch_path(prog, sizeof prog, "script");
    f = fopen(prog, "w");
    assert_non_null(f);
    fputs("#!/bin/sh\nexit 0\n", f);
    fclose(f);
    chmod(prog, 0644);
    free(run_logged(&r, &res));
    assert_int_equal(res.exec_failed, 1);
    assert_has(res.reason, "command not executable: ");
    assert_has(res.reason, prog);
    assert_false(local_result_ok(&res));
    /* the same file, executable, runs */
    chmod(prog, 0755);
    free(run_logged(&r, &res));
    assert_true(local_result_ok(&res));
}

/* As execvp: PATH is searched in order, a non-executable file or a directory of the name is
 * skipped, an empty entry is the working directory; with nothing runnable, the reason is
 * "not executable" if something of the name was there, else "not found". */
static void test_command_path_search(void **state)
{
    char a[300], b[300], path_env[700], file[400];
    const char *argv[] = { "lambdo-t-prog", "arg", NULL };
    const char *env[] = { path_env, NULL };
    struct local_run r = run_base(argv, "path");
    struct local_result res;
    char *log;
    FILE *f;

    scratch_path(a, sizeof a, "a");
    scratch_path(b, sizeof b, "b");
    assert_int_equal(mkdir(a, 0700), 0);
    assert_int_equal(mkdir(b, 0700), 0);
    snprintf(file, sizeof file, "%s/lambdo-t-prog", a);
    f = fopen(file, "w");
    assert_non_null(f);
    fputs("#!/bin/sh\necho from a\n", f);
    fclose(f);
    chmod(file, 0644);
    snprintf(file, sizeof file, "%s/lambdo-t-prog", b);
    f = fopen(file, "w");
    assert_non_null(f);
    fputs("#!/bin/sh\necho \"from b: $0 $1\"\n", f);
    fclose(f);
    chmod(file, 0755);
    r.envp = env;
    snprintf(path_env, sizeof path_env, "PATH=/nonexistent::%s:%s:/bin:/usr/bin", a, b);
    log = run_logged(&r, &res);
    assert_true(local_result_ok(&res));
    assert_has(log, "[group path] from b: ");  /* argv[0] as given: sh sets $0 to the path */
    assert_has(log, " arg\n");
    assert_lacks(log, "from a");
    free(log);
    /* only the non-executable one: not executable; nothing at all: not found */
    snprintf(path_env, sizeof path_env, "PATH=%s:/nonexistent", a);
    free(run_logged(&r, &res));
    assert_int_equal(res.exec_failed, 1);
    assert_string_equal(res.reason, "command not executable: lambdo-t-prog (Permission denied)");
    snprintf(path_env, sizeof path_env, "PATH=/nonexistent");
    free(run_logged(&r, &res));
    assert_string_equal(res.reason, "command not found: lambdo-t-prog");
    /* a directory */
    argv[0] = a;
    free(run_logged(&r, &res));
    assert_int_equal(res.exec_failed, 1);
    assert_has(res.reason, "command not executable: ");
    assert_has(res.reason, "(Is a directory)");
}

/* ---- the events file ---------------------------------------------------------------------- */

static void check_events_file(const char *events, size_t len)
{
    char copy[300], want[400], prefix[300];
    const char *argv[] = {
        "sh", "-c",
        "stat -c 'file %a %s' \"$EVENTS_PATH\"; stat -c 'dir %a' \"${EVENTS_PATH%/*}\";"
        "cp \"$EVENTS_PATH\" \"$1\"; echo \"path=$EVENTS_PATH\"",
        "sh", copy, NULL };
    struct local_run r = run_base(argv, "0123456789abcdef");
    struct local_result res;
    char *log, *got, *path, *end;
    size_t got_len;

    scratch_path(copy, sizeof copy, "copy");
    r.events = events;
    r.events_len = len;
    log = run_logged(&r, &res);
    assert_true(local_result_ok(&res));
    snprintf(want, sizeof want, "[group 0123456789abcdef] file 600 %zu\n", len);
    assert_has(log, want);
    assert_has(log, "[group 0123456789abcdef] dir 700\n");
    snprintf(prefix, sizeof prefix, "path=%s/lambdo-0123456789abcdef-", scratch);
    assert_has(log, prefix);
    path = strstr(log, "path=") + 5;
    end = strchr(path, '\n');
    *end = '\0';
    assert_has(path, "/events.json");
    /* gone afterwards, directory too */
    assert_int_equal(access(path, F_OK), -1);
    *strrchr(path, '/') = '\0';
    assert_int_equal(access(path, F_OK), -1);
    got = file_read(copy, &got_len);
    assert_non_null(got);
    assert_int_equal(got_len, len);
    assert_memory_equal(got, events, len);
    free(got);
    free(log);
    unlink(copy);
    assert_int_equal(dir_entries(scratch), 0);
}

/* The context file: beside the events file, 0600, its bytes exactly, in EVENTS_META_PATH. */
static void test_meta_file(void **state)
{
    static const char meta[] = "[{\"messageId\":\"m\\\"1\",\"messageAttributes\":{}}]";
    char copy[300], want[100];
    const char *argv[] = {
        "sh", "-c",
        "stat -c 'meta %a %s' \"$EVENTS_META_PATH\"; echo \"name=${EVENTS_META_PATH##*/}\";"
        "[ \"${EVENTS_META_PATH%/*}\" = \"${EVENTS_PATH%/*}\" ] && echo beside;"
        "cp \"$EVENTS_META_PATH\" \"$1\"",
        "sh", copy, NULL };
    struct local_run r = run_base(argv, "meta");
    struct local_result res;
    char *log, *got;
    size_t got_len;

    scratch_path(copy, sizeof copy, "meta-copy");
    r.meta = meta;
    r.meta_len = sizeof meta - 1;
    log = run_logged(&r, &res);
    assert_true(local_result_ok(&res));
    snprintf(want, sizeof want, "[group meta] meta 600 %zu\n", sizeof meta - 1);
    assert_has(log, want);
    assert_has(log, "[group meta] name=events.meta.json\n");
    assert_has(log, "[group meta] beside\n");
    got = file_read(copy, &got_len);
    assert_non_null(got);
    assert_int_equal(got_len, sizeof meta - 1);
    assert_memory_equal(got, meta, got_len);
    free(got);
    free(log);
    unlink(copy);
    assert_int_equal(dir_entries(scratch), 0);
}

static void test_events_file(void **state)
{
    static const char odd[] = "[{\"a\":12345678901234567890.5},\n\"\\u00e9\",\"\xc3\xa9\"]\0\xff";
    size_t big_len = 3 * 1024 * 1024 + 7;
    char *big = malloc(big_len);

    check_events_file(odd, sizeof odd - 1);
    check_events_file("", 0);
    assert_non_null(big);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (char)(i * 7 + 3);
    check_events_file(big, big_len);
    free(big);
}

/* Whatever the child adds to its directory goes too; a link is removed, not followed. */
static void test_events_dir_cleaned(void **state)
{
    char outside[300], dirf[300];
    const char *argv[] = {
        "sh", "-c",
        "d=${EVENTS_PATH%/*}; echo \"$d\" > \"$2\"; mkdir \"$d/sub\"; echo x > \"$d/sub/f\";"
        "ln -s \"$1\" \"$d/link\"; ln -s \"${1%/*}\" \"$d/dirlink\"; exit 4",
        "sh", outside, dirf, NULL };
    struct local_run r = run_base(argv, "clean");
    struct local_result res;
    char *dir, *log;
    FILE *f;

    scratch_path(outside, sizeof outside, "outside");
    scratch_path(dirf, sizeof dirf, "dirname");
    f = fopen(outside, "w");
    assert_non_null(f);
    fputs("keep", f);
    fclose(f);
    log = run_logged(&r, &res);
    assert_int_equal(res.exit_code, 4);
    assert_lacks(log, "cannot remove");
    dir = file_read(dirf, NULL);
    assert_non_null(dir);
    *strchr(dir, '\n') = '\0';
    assert_int_equal(access(dir, F_OK), -1);
    assert_int_equal(access(outside, F_OK), 0);
    assert_int_equal(dir_entries(scratch), 2);  /* outside and dirname, nothing else */
    free(dir);
    free(log);
}

static void test_tmpdir_from_environment(void **state)
{
    const char *argv[] = { "sh", "-c", "echo \"at $EVENTS_PATH\"", NULL };
    struct local_run r = run_base(argv, "env");
    struct local_result res;
    char want[300], *log;

    r.tmpdir = NULL;
    setenv("TMPDIR", scratch, 1);
    log = run_logged(&r, &res);
    unsetenv("TMPDIR");
    snprintf(want, sizeof want, "at %s/lambdo-env-", scratch);
    assert_has(log, want);
    free(log);
}

static void test_tmpdir_unusable(void **state)
{
    const char *argv[] = { "sh", "-c", "exit 0", NULL };
    struct local_run r = run_base(argv, "bad");
    struct local_result res;
    struct lerr e = { 0 };

    r.tmpdir = "/nonexistent/lambdo-test";
    assert_int_equal(local_run_group(&r, &res, &e), -1);
    assert_int_equal(e.kind, LERR_IO);
    assert_has(e.msg, "cannot create a private directory in /nonexistent/lambdo-test");
    assert_int_equal(res.started, 0);
}

/* ---- the log ------------------------------------------------------------------------------ */

static void test_output_logged(void **state)
{
    const char *argv[] = {
        "sh", "-c", "echo out1; echo err1 >&2; echo out2; printf 'no newline'", NULL };
    struct local_run r = run_base(argv, "0123456789abcdef");
    struct local_result res;
    char *log, *a, *b, *c, *d;

    log = run_logged(&r, &res);
    assert_true(local_result_ok(&res));
    a = strstr(log, "info  [group 0123456789abcdef] out1\n");
    b = strstr(log, "info  [group 0123456789abcdef] err1\n");
    c = strstr(log, "info  [group 0123456789abcdef] out2\n");
    d = strstr(log, "info  [group 0123456789abcdef] no newline\n");
    if (!a || !b || !c || !d)
        fail_msg("log:\n%s", log);
    assert_true(a < b && b < c && c < d);
    free(log);
}

static void test_long_lines_truncated(void **state)
{
    const char *argv[] = {
        "sh", "-c", "head -c 100000 /dev/zero | tr '\\0' a; echo; echo next", NULL };
    struct local_run r = run_base(argv, "long");
    struct local_result res;
    char *log, *want, *line;
    size_t n = strlen("[group long] ") + LOCAL_LINE_MAX + strlen(" [truncated]\n");

    log = run_logged(&r, &res);
    assert_true(local_result_ok(&res));
    want = malloc(n + 1);
    assert_non_null(want);
    strcpy(want, "[group long] ");
    memset(want + strlen(want), 'a', LOCAL_LINE_MAX);
    strcpy(want + strlen("[group long] ") + LOCAL_LINE_MAX, " [truncated]\n");
    line = strstr(log, want);
    if (!line)
        fail_msg("no truncated line in %zu bytes of log", strlen(log));
    assert_has(log, "[group long] next\n");
    /* one line of a's only: the dropped rest is not logged */
    assert_null(strstr(line + strlen(want), "] aaa"));
    free(want);
    free(log);
}

/* ---- the environment, signals and descriptors --------------------------------------------- */

/* Every route an AWS SDK follows to lambdo's identity, lambdo's settings and tokens; and
 * what the user hands the child with LAMBDO_CHILD_. */
static const char *const secrets_env[] = {
    "PATH=/usr/local/bin:/usr/bin:/bin", "KEEP=1", "LAMBDO_FLY_TOKEN=secret1",
    "LAMBDO_SQS_QUEUE_URL=secret2", "FLY_API_TOKEN=secret3", "FLY_ACCESS_TOKEN=secret4",
    "AWS_ACCESS_KEY_ID=secret5", "AWS_SECRET_ACCESS_KEY=secret6",
    "AWS_SESSION_TOKEN=secret7", "AWS_SECURITY_TOKEN=secret8", "AWS_PROFILE=secret10",
    "AWS_ROLE_ARN=secret11", "AWS_WEB_IDENTITY_TOKEN_FILE=secret12",
    "AWS_ROLE_SESSION_NAME=secret13", "AWS_SHARED_CREDENTIALS_FILE=secret14",
    "AWS_CONFIG_FILE=secret15", "AWS_CONTAINER_CREDENTIALS_FULL_URI=secret16",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI=secret17", "AWS_DEFAULT_PROFILE=secret18",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN=secret19", "AWS_ACCESS_KEY_ID_2=secret20",
    "AWS_REGION=eu-west-1", "AWS_DEFAULT_REGION=eu-west-2", "EVENTS_PATH=/evil",
    "LAMBDO_=secret9", "NOEQUALS", "LAMBDO_HANDLER=/srv/app", "KEEP2=inherited",
    "LAMBDO_CHILD_AWS_ROLE_ARN=arn:handler", "LAMBDO_CHILD_AWS_CONFIG_FILE=/srv/aws-config",
    "LAMBDO_CHILD_KEEP2=chosen", "LAMBDO_CHILD_EVENTS_PATH=/evil2", "LAMBDO_CHILD_=x",
    "EVENTS_META_PATH=/evil3", "LAMBDO_CHILD_EVENTS_META_PATH=/evil4",
    NULL,
};

static void check_env_log(const char *log)
{
    assert_has(log, "[group env] KEEP=1\n");
    assert_has(log, "[group env] AWS_REGION=eu-west-1\n");
    assert_has(log, "[group env] AWS_DEFAULT_REGION=eu-west-2\n");
    assert_has(log, "[group env] EVENTS_PATH=/");
    assert_lacks(log, "EVENTS_PATH=/evil");
    assert_lacks(log, "/evil");
    assert_lacks(log, "EVENTS_META_PATH");  /* no context file given: none named */
    assert_lacks(log, "secret");
    assert_has(log, "[group env] LAMBDO_HANDLER=/srv/app\n"); /* the runtimes' setting */
    assert_lacks(log, "LAMBDO_FLY");
    assert_lacks(log, "LAMBDO_SQS");
    assert_lacks(log, "LAMBDO_=");
    assert_lacks(log, "LAMBDO_CHILD");
    assert_lacks(log, "NOEQUALS");
    /* the shared files are neutralised unless the user chose them */
    assert_has(log, "[group env] AWS_SHARED_CREDENTIALS_FILE=/dev/null\n");
    assert_has(log, "[group env] AWS_CONFIG_FILE=/srv/aws-config\n");
    assert_lacks(log, "AWS_CONFIG_FILE=/dev/null");
    /* LAMBDO_CHILD_<NAME> is renamed, and wins over an inherited <NAME> */
    assert_has(log, "[group env] AWS_ROLE_ARN=arn:handler\n");
    assert_has(log, "[group env] KEEP2=chosen\n");
    assert_lacks(log, "KEEP2=inherited");
    assert_lacks(log, "] =x");
}

static void test_env_secrets_stripped(void **state)
{
    const char *argv[] = { "env", NULL };
    struct local_run r = run_base(argv, "env");
    struct local_result res;
    char *log;

    r.envp = secrets_env;
    log = run_logged(&r, &res);
    assert_true(local_result_ok(&res));
    check_env_log(log);
    free(log);
}

/* EVENTS_META_PATH names lambdo's context file or nothing: never a value from lambdo's own
 * environment, with or without a context file. */
static void test_env_meta_path(void **state)
{
    static const char *const envp[] = { "PATH=/usr/local/bin:/usr/bin:/bin",
                                        "EVENTS_META_PATH=/evil5", NULL };
    const char *argv[] = { "env", NULL };
    struct local_run r = run_base(argv, "env");
    struct local_result res;
    char *log;

    r.envp = envp;
    log = run_logged(&r, &res);
    assert_true(local_result_ok(&res));
    assert_lacks(log, "EVENTS_META_PATH");
    free(log);
    r.meta = "[{}]";
    r.meta_len = 4;
    log = run_logged(&r, &res);
    assert_true(local_result_ok(&res));
    assert_has(log, "[group env] EVENTS_META_PATH=/");
    assert_has(log, "/events.meta.json\n");
    assert_lacks(log, "/evil5");
    free(log);
}

/* The same through lambdo's real environment (environ). */
static void test_env_from_environ(void **state)
{
    const char *argv[] = { "env", NULL };
    struct local_run r = run_base(argv, "env");
    struct local_result res;
    char *log;

    for (size_t i = 0; secrets_env[i]; i++)
        if (strncmp(secrets_env[i], "PATH=", 5) && strchr(secrets_env[i], '='))
            putenv((char *)secrets_env[i]);
    log = run_logged(&r, &res);
    for (size_t i = 0; secrets_env[i]; i++) {
        char name[64];
        const char *eq = strchr(secrets_env[i], '=');
        if (!eq || !strncmp(secrets_env[i], "PATH=", 5))
            continue;
        snprintf(name, sizeof name, "%.*s", (int)(eq - secrets_env[i]), secrets_env[i]);
        unsetenv(name);
    }
    assert_true(local_result_ok(&res));
    check_env_log(log);
    free(log);
}

/* lambdo blocks SIGTERM and SIGINT and ignores SIGPIPE; its children must not. */
static void test_child_signals_default(void **state)
{
    const char *argv[] = { "grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status", NULL };
    struct local_run r = run_base(argv, "sigs");
    struct local_result res;
    sigset_t set, old;
    void (*old_pipe)(int);
    char *log, *ign;

    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    old_pipe = signal(SIGPIPE, SIG_IGN);
    log = run_logged(&r, &res);
    signal(SIGPIPE, old_pipe);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    assert_true(local_result_ok(&res));
    assert_has(log, "[group sigs] SigBlk:\t0000000000000000\n");
    /* Signals 1 to 31 at their defaults. posix_spawn (glibc and musl alike) leaves the C
     * library's internal real-time signals (32, 33) ignored; they cannot be named in a
     * sigset, and programs re-arm them at start-up. */
    ign = strstr(log, "[group sigs] SigIgn:\t");
    assert_non_null(ign);
    assert_int_equal(strtoull(ign + strlen("[group sigs] SigIgn:\t"), NULL, 16) & 0x7fffffffULL,
                     0);
    free(log);
}

/* A descriptor lambdo inherited without FD_CLOEXEC, once sealed, and the run's own pipe
 * ends, never reach the child: it has exactly 0, 1, 2 (and 3, the directory its glob
 * reads). */
static void test_descriptors(void **state)
{
    const char *argv[] = { "sh", "-c", "cd /proc/self/fd && echo fds *", NULL };
    struct local_run r = run_base(argv, "fds");
    struct local_result res;
    struct lerr e;
    char *log;
    int leak = open("/dev/null", O_RDONLY);  /* deliberately without O_CLOEXEC */

    assert_true(leak >= 0);
    assert_int_equal(local_seal(&e), 0);
    assert_true(fcntl(leak, F_GETFD) & FD_CLOEXEC);
    assert_int_equal(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 0);  /* /proc/<lambdo>/environ */
    log = run_logged(&r, &res);
    close(leak);
    assert_true(local_result_ok(&res));
    assert_has(log, "[group fds] fds 0 1 2 3\n");
    free(log);
}

/* lambdo started with stdin and stdout closed: the output pipe's ends are then 0 and 1,
 * and still the child's stdout and stderr reach the log, its stdin is /dev/null. */
static void test_stdio_closed(void **state)
{
    const char *argv[] = { "sh", "-c", "echo out; echo err >&2; readlink /proc/self/fd/0", NULL };
    struct local_run r = run_base(argv, "closed");
    struct local_result res;
    int in = fcntl(0, F_DUPFD_CLOEXEC, 3), out = fcntl(1, F_DUPFD_CLOEXEC, 3);
    char *log;

    assert_true(in >= 0 && out >= 0);
    fflush(stdout);
    close(0);
    close(1);
    log = run_logged(&r, &res);
    dup2(in, 0);
    dup2(out, 1);
    close(in);
    close(out);
    assert_true(local_result_ok(&res));
    assert_has(log, "[group closed] out\n");
    assert_has(log, "[group closed] err\n");
    assert_has(log, "[group closed] /dev/null\n");
    free(log);
}

/* ---- many at once ------------------------------------------------------------------------- */

#define THREADS 8
#define RUNS 5

struct worker {
    int t;
    int codes[RUNS];
    int failed;
    char err[320];
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;

    for (int i = 0; i < RUNS; i++) {
        char gid[32], events[64], code[8];
        const char *argv[] = { "sh", "-c",
                               "cat \"$EVENTS_PATH\"; echo; cd /proc/self/fd && echo fds *;"
                               "exit $1", "sh", code, NULL };
        struct local_run r = run_base(argv, gid);
        struct local_result res;
        struct lerr e;

        snprintf(gid, sizeof gid, "t%d-r%d", w->t, i);
        snprintf(events, sizeof events, "[\"thread %d run %d\"]", w->t, i);
        snprintf(code, sizeof code, "%d", (w->t * RUNS + i) % 7);
        r.events = events;
        r.events_len = strlen(events);
        if (local_run_group(&r, &res, &e) < 0) {
            w->failed = 1;
            snprintf(w->err, sizeof w->err, "%s", e.msg);
            return NULL;
        }
        w->codes[i] = res.exited ? res.exit_code : -1;
    }
    return NULL;
}

static void test_concurrent_runs(void **state)
{
    static struct worker w[THREADS];
    pthread_t th[THREADS];
    struct capture c;
    char *log;

    capture_start(&c);
    for (int t = 0; t < THREADS; t++) {
        memset(&w[t], 0, sizeof w[t]);
        w[t].t = t;
        pthread_create(&th[t], NULL, worker_main, &w[t]);
    }
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    log = capture_stop(&c);
    for (int t = 0; t < THREADS; t++) {
        if (w[t].failed)
            fail_msg("thread %d: %s", t, w[t].err);
        for (int i = 0; i < RUNS; i++) {
            char want[128];
            assert_int_equal(w[t].codes[i], (t * RUNS + i) % 7);
            snprintf(want, sizeof want, "[group t%d-r%d] [\"thread %d run %d\"]\n", t, i, t, i);
            assert_has(log, want);
            snprintf(want, sizeof want, "[group t%d-r%d] fds 0 1 2 3\n", t, i);
            assert_has(log, want);
        }
    }
    assert_int_equal(dir_entries(scratch), 0);
    free(log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_command_check),
        cmocka_unit_test(test_argv_from_json),
        cmocka_unit_test(test_command_resolve),
        cmocka_unit_test(test_lines_split),
        cmocka_unit_test(test_lines_truncate),
        cmocka_unit_test(test_line_format),
        cmocka_unit_test_setup_teardown(test_exit_0, scratch_up, scratch_down),
        cmocka_unit_test_setup_teardown(test_exit_3, scratch_up, scratch_down),
        cmocka_unit_test_setup_teardown(test_killed_by_signal, scratch_up, scratch_down),
        cmocka_unit_test_setup_teardown(test_no_busy_wait_without_idle, scratch_up, scratch_down),
        cmocka_unit_test_setup_teardown(test_timeout_kills_group, scratch_up, scratch_down),
        cmocka_unit_test_setup_teardown(test_timeout_escalates_to_sigkill, scratch_up, scratch_down),
        cmocka_unit_test_setup_teardown(test_leftovers_killed, scratch_up, scratch_down),
        cmocka_unit_test_setup_teardown(test_escaped_process_does_not_hang, scratch_up, scratch_down),
        cmocka_unit_test_setup_teardown(test_status_lost, scratch_up, scratch_down),
        cmocka_unit_test_setup_teardown(test_stop_after_grace, scratch_up, scratch_down),
        cmocka_unit_test_setup_teardown(test_stop_finishes_within_grace, scratch_up, scratch_down),
        cmocka_unit_test_setup_teardown(test_stop_before_start, scratch_up, scratch_down),
        cmocka_unit_test_setup_teardown(test_command_not_found, scratch_up, scratch_down),
        cmocka_unit_test_setup_teardown(test_command_not_executable, scratch_up, scratch_down),
        cmocka_unit_test_setup_teardown(test_command_path_search, scratch_up, scratch_down),
        cmocka_unit_test_setup_teardown(test_meta_file, scratch_up, scratch_down),
        cmocka_unit_test_setup_teardown(test_events_file, scratch_up, scratch_down),
        cmocka_unit_test_setup_teardown(test_events_dir_cleaned, scratch_up, scratch_down),
        cmocka_unit_test_setup_teardown(test_tmpdir_from_environment, scratch_up, scratch_down),
        cmocka_unit_test_setup_teardown(test_tmpdir_unusable, scratch_up, scratch_down),
        cmocka_unit_test_setup_teardown(test_output_logged, scratch_up, scratch_down),
        cmocka_unit_test_setup_teardown(test_long_lines_truncated, scratch_up, scratch_down),
        cmocka_unit_test_setup_teardown(test_env_secrets_stripped, scratch_up, scratch_down),
        cmocka_unit_test_setup_teardown(test_env_from_environ, scratch_up, scratch_down),
        cmocka_unit_test_setup_teardown(test_env_meta_path, scratch_up, scratch_down),
        cmocka_unit_test_setup_teardown(test_child_signals_default, scratch_up, scratch_down),
        cmocka_unit_test_setup_teardown(test_descriptors, scratch_up, scratch_down),
        cmocka_unit_test_setup_teardown(test_stdio_closed, scratch_up, scratch_down),
        cmocka_unit_test_setup_teardown(test_concurrent_runs, scratch_up, scratch_down),
    };

    log_setup(LOG_LEVEL_INFO, 0);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
