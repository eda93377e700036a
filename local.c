#include "local.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "group.h"
#include "log.h"
#include "ratelimit.h"
#include "text.h"

extern char **environ;

#define GID_MAX 24           /* bytes of a group id used in names and log prefixes */
#define IDLE_EVERY_MS 1000
#define TICK_MS 200          /* how often to look for the child's end while its output
                                pipe stays open (a process it started may hold it) */

#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

static int64_t now_ms(void)
{
    return ratelimit_now_ns() / 1000000;
}

/* ---- commands ------------------------------------------------------------------------ */

int local_command_resolve(const char *message_cmd, const char *default_cmd, char ***argv_out,
                          struct lerr *e)
{
    const char *cmd = message_cmd ? message_cmd : default_cmd;

    if (!cmd)
        return lerr_set(e, LERR_INVALID, "no command: the message has no command attribute "
                        "and LAMBDO_LOCAL_COMMAND is not set");
    if (group_command(cmd, argv_out, e) < 0)
        return lerr_wrap(e, "%s", message_cmd ? "attribute command" : "LAMBDO_LOCAL_COMMAND");
    return 0;
}

/* ---- descriptors ---------------------------------------------------------------------- */

int local_seal(struct lerr *e)
{
    DIR *d;
    struct dirent *de;

    /* Non-dumpable: /proc/<lambdo>/environ and mem, which hold lambdo's secrets, become
     * unreadable to a child running as the same (non-root) user, and it cannot ptrace us. */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
        return lerr_set(e, LERR_IO, "cannot make lambdo non-dumpable: %s", strerror(errno));
    /* Linux 5.11 does it in one call; older kernels get the /proc walk. */
    if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) == 0)
        return 0;
    d = opendir("/proc/self/fd");
    if (!d)
        return lerr_set(e, LERR_IO, "cannot list /proc/self/fd: %s", strerror(errno));
    while ((de = readdir(d))) {
        int fd = atoi(de->d_name);  /* the kernel's names: numbers, "." and ".." (0) */

        if (fd >= 3 && fd != dirfd(d))
            fcntl(fd, F_SETFD, FD_CLOEXEC);  /* the only descriptor flag there is */
    }
    closedir(d);
    return 0;
}

/* ---- output lines --------------------------------------------------------------------- */

/* Byte by byte: a child's output is not a hot path, and a line's end, its overflow and the
 * drop of its rest are then three plain cases. len stays 0 while dropping. */
void local_lines_feed(struct local_lines *l, const char *p, size_t n)
{
    for (const char *end = p + n; p < end; p++) {
        if (*p == '\n') {
            if (!l->dropping)
                l->emit(l->ctx, l->buf, l->len, 0);
            l->len = 0;
            l->dropping = 0;
        } else if (l->len == sizeof l->buf) {
            l->emit(l->ctx, l->buf, l->len, 1);
            l->len = 0;
            l->dropping = 1;
        } else if (!l->dropping) {
            l->buf[l->len++] = *p;
        }
    }
}

/* A last line ends as if its newline came (which also ends the drop of a truncated one). */
void local_lines_finish(struct local_lines *l)
{
    if (l->len || l->dropping)
        local_lines_feed(l, "\n", 1);
}

void local_line_format(char *out, size_t cap, const char *group_id, const char *line,
                       size_t len, int truncated)
{
    const unsigned char *s = (const unsigned char *)line;
    const char *mark = truncated ? " [truncated]" : "";
    size_t o, i = 0;

    if (!truncated && len && s[len - 1] == '\r')
        len--;
    o = (size_t)snprintf(out, cap, "[group %.*s] ", GID_MAX, group_id ? group_id : "?");
    if (o >= cap)
        return;
    while (i < len) {
        unsigned cp;
        size_t k = s[i] ? text_utf8_next(s + i, len - i, &cp) : 0, n = k ? k : 1;

        /* a lead byte whose character the truncation cut in two */
        if (!k && truncated && s[i] >= 0xc2 && s[i] <= 0xf4 &&
            len - i < (s[i] >= 0xf0 ? 4u : s[i] >= 0xe0 ? 3u : 2u))
            break;
        if (o + n + strlen(mark) >= cap)
            break;
        memcpy(out + o, k ? line + i : "?", n);  /* NUL or invalid UTF-8: '?' */
        o += n;
        i += n;
    }
    snprintf(out + o, cap - o, "%s", mark);
}

/* ---- the events directory ------------------------------------------------------------- */

/* The private directory, and its files' paths inside the environment entries that name
 * them ("EVENTS_PATH=<dir>/events.json"), so that each path is written once. */
struct files {
    char dir[PATH_MAX];                             /* empty until mkdtemp made it */
    char events[sizeof "EVENTS_PATH=/events.json" + PATH_MAX];
    char meta[sizeof "EVENTS_META_PATH=/events.meta.json" + PATH_MAX];
};

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

/* Creates the file the environment entry kv names (new, 0600 whatever the umask: the owner
 * must be able to read it), holding data[0..len). A write to a local file is not
 * interrupted by a signal, so there is no EINTR to retry. */
static int file_write(const char *kv, const char *data, size_t len, struct lerr *e)
{
    const char *path = strchr(kv, '=') + 1;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600), err = 0;
    ssize_t w;

    if (fd < 0)
        return lerr_set(e, LERR_IO, "cannot create %s: %s", path, strerror(errno));
    if (fchmod(fd, 0600) < 0)
        err = errno;
    for (size_t off = 0; !err && off < len; off += (size_t)w)
        if ((w = write(fd, data + off, len - off)) < 0)
            err = errno;
    if (close(fd) < 0 && !err)
        err = errno;
    return err ? lerr_set(e, LERR_IO, "cannot write %s: %s", path, strerror(err)) : 0;
}

/* Creates <tmp>/lambdo-<gid>-XXXXXX holding events.json, and beside it events.meta.json
 * when the run has a context file. */
static int files_create(const struct local_run *r, struct files *f, struct lerr *e)
{
    const char *tmp = r->tmpdir ? r->tmpdir : getenv("TMPDIR");
    char gid[GID_MAX + 1], tmpl[PATH_MAX];
    size_t n = 0;

    if (!tmp || !*tmp)
        tmp = "/tmp";
    /* Only name-safe characters of the group id go into the path. */
    for (const char *p = r->group_id ? r->group_id : ""; *p && n < GID_MAX; p++)
        gid[n++] = isalnum((unsigned char)*p) || *p == '-' ? *p : '_';
    gid[n] = '\0';
    if ((size_t)snprintf(tmpl, sizeof tmpl, "%s/lambdo-%s-XXXXXX", tmp, gid) >= sizeof tmpl)
        return lerr_set(e, LERR_INVALID, "temporary directory name too long: %s", tmp);
    if (!mkdtemp(tmpl))
        return lerr_set(e, LERR_IO, "cannot create a private directory in %s: %s", tmp,
                        strerror(errno));
    memcpy(f->dir, tmpl, sizeof tmpl);
    snprintf(f->events, sizeof f->events, "EVENTS_PATH=%s/events.json", f->dir);
    snprintf(f->meta, sizeof f->meta, "EVENTS_META_PATH=%s/events.meta.json", f->dir);
    if (file_write(f->events, r->events, r->events_len, e) < 0)
        return -1;
    return r->meta ? file_write(f->meta, r->meta, r->meta_len, e) : 0;
}

/* ---- the child's environment ---------------------------------------------------------- */

/* Whether s begins with prefix: a prefix of names ("AWS_"), or one variable ("AWS_REGION=";
 * every kv tested has its '='). */
static int starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* What lambdo holds and a child must not inherit: every LAMBDO_* setting (but the
 * runtimes' LAMBDO_HANDLER), the Fly token, and every AWS_* variable but the region. Nearly
 * every AWS_* variable is a credential or a route to one (keys, a role with its token file,
 * a profile, the shared files, container endpoints), and one added to the SDKs later must
 * not pass by omission. */
static int env_is_lambdos(const char *kv)
{
    if (starts(kv, "LAMBDO_"))
        return !starts(kv, "LAMBDO_HANDLER=");
    if (starts(kv, "AWS_"))
        return !starts(kv, "AWS_REGION=") && !starts(kv, "AWS_DEFAULT_REGION=");
    return starts(kv, "FLY_API_TOKEN=") || starts(kv, "FLY_ACCESS_TOKEN=") ||
           starts(kv, "EVENTS_PATH=") || starts(kv, "EVENTS_META_PATH=");
}

/* What LAMBDO_CHILD_<NAME>=value hands the child: "<NAME>=value"; NULL for any other
 * variable, and for the names only lambdo sets. */
static const char *env_for_child(const char *kv)
{
    static const char prefix[] = "LAMBDO_CHILD_";
    const char *rest = kv + sizeof prefix - 1;

    if (!starts(kv, prefix) || *rest == '=' || !strchr(rest, '=') ||
        starts(rest, "EVENTS_PATH=") || starts(rest, "EVENTS_META_PATH="))
        return NULL;
    return rest;
}

/* The first entry of env (NULL-terminated) that sets kv's variable, as getenv finds it;
 * NULL if none does. */
static const char *env_find(char *const *env, const char *kv)
{
    size_t n = strcspn(kv, "=") + 1;  /* the name and its '=' */

    for (; *env; env++)
        if (strncmp(*env, kv, n) == 0)
            return *env;
    return NULL;
}

/* A new array of pointers into envp (not copies), the constants below, events_kv and
 * meta_kv (when not NULL); NULL if out of memory. What the user chose with
 * LAMBDO_CHILD_<NAME> comes first and wins over the same name inherited. The shared files
 * point at /dev/null, or an SDK in the child would read ~/.aws (lambdo's user's HOME) and
 * find lambdo's profile. */
static char **env_build(const char *const *envp, char *events_kv, char *meta_kv)
{
    static const char *const no_files[] = {
        "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_CONFIG_FILE=/dev/null", NULL,
    };
    size_t n = 0, k = 0;
    char **env;

    if (!envp)
        envp = environ ? (const char *const *)environ : no_files + 2;
    while (envp[n])
        n++;
    env = calloc(n + 5, sizeof *env);  /* renamed ones are LAMBDO_*, not also kept */
    if (!env)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (env_for_child(envp[i]))
            env[k++] = (char *)env_for_child(envp[i]);
    for (size_t i = 0; i < n; i++)
        if (strchr(envp[i], '=') && !env_is_lambdos(envp[i]) && !env_find(env, envp[i]))
            env[k++] = (char *)envp[i];
    for (size_t i = 0; no_files[i]; i++)
        if (!env_find(env, no_files[i]))
            env[k++] = (char *)no_files[i];
    env[k++] = events_kv;
    env[k] = meta_kv;
    return env;
}

/* ---- starting the child --------------------------------------------------------------- */

/* The command could not be started because of err: 0 with out saying why, when err is
 * about the command; -1 with e set when it is lambdo running short (memory, processes). */
static int exec_failure(struct local_result *out, const char *prog, int err, struct lerr *e)
{
    if (err == ENOENT || err == ENOTDIR)
        snprintf(out->reason, sizeof out->reason, "command not found: %.150s", prog);
    else if (err == EACCES || err == EPERM || err == ENOEXEC || err == EISDIR)
        snprintf(out->reason, sizeof out->reason, "command not executable: %.120s (%s)", prog,
                 strerror(err));
    else if (err == ELOOP || err == ENAMETOOLONG || err == E2BIG || err == ETXTBSY ||
             err == ELIBBAD)
        snprintf(out->reason, sizeof out->reason, "cannot run %.120s: %s", prog, strerror(err));
    else
        return lerr_set(e, err == ENOMEM ? LERR_NOMEM : LERR_IO, "cannot start %s: %s", prog,
                        strerror(err));
    out->exec_failed = 1;
    return 0;
}

/* 0 when path is an executable regular file, else why not, as an errno. */
static int file_runnable(const char *path)
{
    struct stat st;

    if (stat(path, &st) < 0)
        return errno;
    if (S_ISDIR(st.st_mode))
        return EISDIR;
    return S_ISREG(st.st_mode) && access(path, X_OK) == 0 ? 0 : EACCES;
}

/* The file a command names, found as execvp finds it: a name with a slash is used as it
 * is; any other is looked up in the child's PATH (an empty entry is the working
 * directory), skipping what is not an executable file. Done here, not left to
 * posix_spawnp, so that "not found" and "not executable" are told apart before anything
 * starts, in the same words under glibc and musl (and valgrind, whose emulated vfork
 * cannot pass an exec failure back). Returns 0, or ENOENT, EACCES, EISDIR, ENAMETOOLONG. */
static int command_find(const char *name, char *const *env, char *out, size_t cap)
{
    const char *p = env_find(env, "PATH=");
    int err = ENOENT, rc;

    if (strchr(name, '/'))
        return (size_t)snprintf(out, cap, "%s", name) >= cap ? ENAMETOOLONG : file_runnable(out);
    p = p ? p + 5 : "/usr/local/bin:/bin:/usr/bin";  /* PATH unset: musl's execvp default */
    for (;;) {
        int n = (int)strcspn(p, ":");

        if ((size_t)snprintf(out, cap, "%.*s/%s", n ? n : 1, n ? p : ".", name) >= cap)
            err = ENAMETOOLONG;
        else if ((rc = file_runnable(out)) == 0)
            return 0;
        else if (rc != ENOENT && rc != ENOTDIR)
            err = rc;
        if (!p[n])
            return err;
        p += n + 1;
    }
}

/* posix_spawn of the file prog with stdout and stderr to a new pipe, whose read end *rfd
 * gets, stdin from /dev/null, a process group of its own, no blocked signals and every
 * signal at its default. The pipe's ends may be 0, 1 or 2 when lambdo was started with
 * those closed: the dup2s come first, and a dup2 onto itself clears close-on-exec (glibc
 * 2.29 and musl alike, as POSIX now says). The inits cannot fail (glibc and musl only
 * clear the structures). Returns 0 or an errno. */
static int child_spawn(const char *prog, const struct local_run *r, char **env, pid_t *pid,
                       int *rfd)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none, all;
    int pfd[2], rc;

    if (pipe2(pfd, O_CLOEXEC) < 0)
        return errno;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&at);
    sigemptyset(&none);
    sigfillset(&all);
    if (!(rc = posix_spawn_file_actions_adddup2(&fa, pfd[1], 1)) &&
        !(rc = posix_spawn_file_actions_adddup2(&fa, pfd[1], 2)) &&
        !(rc = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0)) &&
        !(rc = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                                 POSIX_SPAWN_SETSIGDEF)) &&
        !(rc = posix_spawnattr_setpgroup(&at, 0)) &&
        !(rc = posix_spawnattr_setsigmask(&at, &none)) &&
        !(rc = posix_spawnattr_setsigdefault(&at, &all)))
        rc = posix_spawn(pid, prog, &fa, &at, (char *const *)r->argv, env);
    posix_spawnattr_destroy(&at);
    posix_spawn_file_actions_destroy(&fa);
    close(pfd[1]);
    if (rc != 0)
        close(pfd[0]);
    *rfd = rc == 0 ? pfd[0] : -1;
    return rc;
}

/* ---- following the child -------------------------------------------------------------- */

struct child {
    const struct local_run *r;
    struct local_result *out;
    pid_t pid;
    int fd;                  /* read end of the output pipe; -1 after EOF */
    int64_t started;
    int64_t term_at;         /* SIGTERM then: the timeout, or sooner the shutdown deadline */
    int64_t kill_at;         /* SIGTERM sent: when SIGKILL follows (INT64_MAX: sent); 0 before */
    int64_t next_idle;       /* the next heartbeat; INT64_MAX: none */
    int64_t reaped_at;       /* 0 while it runs */
    struct local_lines lines;
};

static void line_log(void *ctx, const char *line, size_t len, int truncated)
{
    const struct child *c = ctx;
    char buf[LOCAL_LINE_MAX + 64];

    local_line_format(buf, sizeof buf, c->r->group_id, line, len, truncated);
    log_info("%s", buf);
}

/* One read: poll said the pipe is readable, so it does not block. */
static void output_read(struct child *c)
{
    char buf[4096];
    ssize_t n = read(c->fd, buf, sizeof buf);

    if (n > 0) {
        local_lines_feed(&c->lines, buf, (size_t)n);
    } else if (n == 0 || errno != EINTR) {
        close(c->fd);  /* EOF, or an error that will not mend */
        c->fd = -1;
    }
}

/* The timed work while the child runs: a heartbeat every IDLE_EVERY_MS (next_idle stays
 * INT64_MAX without one), SIGTERM to the whole process group at term_at, SIGKILL kill_grace
 * later. Only called while the child is not reaped, so the group id cannot have been
 * reused by an unrelated process. Returns when it has work next. */
static int64_t child_timers(struct child *c)
{
    const struct local_run *r = c->r;
    int grace = r->kill_grace_s > 0 ? r->kill_grace_s : LOCAL_KILL_GRACE_S;
    int64_t t = now_ms(), next;

    if (t >= c->next_idle) {
        r->idle(r->ctx);
        t = now_ms();  /* a heartbeat may take a while */
        c->next_idle = t + IDLE_EVERY_MS;
    }
    if (!c->kill_at && t >= c->term_at) {
        if (r->timeout_s > 0 && t >= c->started + (int64_t)r->timeout_s * 1000)
            c->out->timed_out = 1;
        else
            c->out->stopped = 1;
        kill(-c->pid, SIGTERM);
        c->kill_at = t + (int64_t)grace * 1000;
    } else if (c->kill_at && t >= c->kill_at) {
        kill(-c->pid, SIGKILL);
        c->kill_at = INT64_MAX;
    }
    next = c->kill_at ? c->kill_at : c->term_at;
    return next < c->next_idle ? next : c->next_idle;
}

/* If the child ended: kills what it left in its group, then reaps it. waitid with WNOWAIT
 * first, so that the group is signalled while the zombie still holds its id. */
static void child_check(struct child *c)
{
    siginfo_t si;
    int rc;

    memset(&si, 0, sizeof si);
    rc = waitid(P_PID, (id_t)c->pid, &si, WEXITED | WNOHANG | WNOWAIT);
    if ((rc < 0 && errno != ECHILD) || (rc == 0 && si.si_pid != c->pid))
        return;  /* still running */
    c->reaped_at = now_ms();
    c->out->seconds = (double)(c->reaped_at - c->started) / 1000.0;
    if (rc < 0) {
        /* ECHILD: someone else reaped it (SIGCHLD set to SIG_IGN does that): the
         * status is lost, which counts as a failure. */
        c->out->lost = 1;
        return;
    }
    kill(-c->pid, SIGKILL);  /* leftovers */
    while (waitpid(c->pid, NULL, 0) < 0 && errno == EINTR)
        ;
    c->out->exited = si.si_code == CLD_EXITED;
    c->out->exit_code = c->out->exited ? si.si_status : 0;
    c->out->signal = c->out->exited ? 0 : si.si_status;
    c->out->core_dumped = si.si_code == CLD_DUMPED;
}

/* Until the child is reaped and its output read to the end (or LOCAL_DRAIN_MS more):
 * the timed work, the stop fd, and a look for the child's end every tick, sooner right
 * after its output closed (it is most likely exiting then). */
static void child_follow(struct child *c)
{
    const struct local_run *r = c->r;
    int tick = TICK_MS, stop_fd = r->stop_fd;  /* -1 once it turned readable (poll skips it) */

    for (;;) {
        struct pollfd p[2] = { { .fd = c->fd, .events = POLLIN }, { .fd = stop_fd, .events = POLLIN } };
        int64_t until = c->reaped_at ? c->reaped_at + LOCAL_DRAIN_MS : child_timers(c);
        int64_t t = now_ms();

        if (c->reaped_at && (c->fd < 0 || t >= until))
            return;
        if (t + tick < until)
            until = t + tick;
        if (poll(p, 2, until <= t ? 0 : (int)(until - t)) < 0 && errno != EINTR) {
            log_warn("group %s: poll: %s", r->group_id, strerror(errno));
            usleep(TICK_MS * 1000);
        }
        if (p[0].revents)
            output_read(c);
        tick = p[0].revents && c->fd < 0 ? 1 : tick * 2 < TICK_MS ? tick * 2 : TICK_MS;
        if (p[1].revents) {  /* readable, or closed */
            int64_t stop_at = now_ms() + (int64_t)r->shutdown_grace_s * 1000;
            stop_fd = -1;
            c->term_at = stop_at < c->term_at ? stop_at : c->term_at;
        }
        if (!c->reaped_at)
            child_check(c);
    }
}

static void result_reason(struct local_result *out, const struct local_run *r)
{
    static const char *const names[32] = {
        [SIGHUP] = " (SIGHUP)",   [SIGINT] = " (SIGINT)",   [SIGQUIT] = " (SIGQUIT)",
        [SIGILL] = " (SIGILL)",   [SIGTRAP] = " (SIGTRAP)", [SIGABRT] = " (SIGABRT)",
        [SIGBUS] = " (SIGBUS)",   [SIGFPE] = " (SIGFPE)",   [SIGKILL] = " (SIGKILL)",
        [SIGUSR1] = " (SIGUSR1)", [SIGSEGV] = " (SIGSEGV)", [SIGUSR2] = " (SIGUSR2)",
        [SIGPIPE] = " (SIGPIPE)", [SIGALRM] = " (SIGALRM)", [SIGTERM] = " (SIGTERM)",
        [SIGXCPU] = " (SIGXCPU)", [SIGXFSZ] = " (SIGXFSZ)", [SIGSYS] = " (SIGSYS)",
    };
    const char *name = out->signal > 0 && out->signal < 32 ? names[out->signal] : NULL;
    char why[100] = "";  /* why it was killed, if lambdo killed it */

    if (out->timed_out)
        snprintf(why, sizeof why, "ran past its timeout of %d s: ", r->timeout_s);
    else if (out->stopped)
        snprintf(why, sizeof why, "stopped: still running %d s after lambdo began to stop: ",
                 r->shutdown_grace_s);
    if (out->exited)
        snprintf(out->reason, sizeof out->reason, "%sexited %d", why, out->exit_code);
    else if (out->lost)
        snprintf(out->reason, sizeof out->reason,
                 "%sexit status unknown (the process was reaped elsewhere)", why);
    else
        snprintf(out->reason, sizeof out->reason, "%skilled by signal %d%s%s", why, out->signal,
                 name ? name : "", out->core_dumped ? ", core dumped" : "");
}

/* ---- running a group ------------------------------------------------------------------ */

/* Starts the child and follows it to its end. The events file exists. */
static int run_child(const struct local_run *r, struct files *f, struct local_result *out,
                     struct lerr *e)
{
    struct child c = { .r = r, .out = out, .lines = { .emit = line_log, .ctx = &c } };
    char **env = env_build(r->envp, f->events, r->meta ? f->meta : NULL), prog[PATH_MAX];
    int rc;

    if (!env)
        return lerr_set(e, LERR_NOMEM, "out of memory for the environment");
    rc = command_find(r->argv[0], env, prog, sizeof prog);
    c.started = now_ms();
    if (rc == 0)
        rc = child_spawn(prog, r, env, &c.pid, &c.fd);
    free(env);
    if (rc != 0)  /* a pipe refused is lambdo's part: EMFILE, ENFILE are not the command's */
        return exec_failure(out, r->argv[0], rc, e);
    out->started = 1;
    out->pid = (int)c.pid;
    c.term_at = r->timeout_s > 0 ? c.started + (int64_t)r->timeout_s * 1000 : INT64_MAX;
    c.next_idle = r->idle ? c.started + IDLE_EVERY_MS : INT64_MAX;
    log_info("group %s: process %d started for %zu events", r->group_id, out->pid, r->event_count);
    if (r->started)
        r->started(r->ctx, out->pid);
    child_follow(&c);
    if (c.fd >= 0)
        close(c.fd);  /* held open by a process outside the group */
    local_lines_finish(&c.lines);  /* a last line without its newline */
    result_reason(out, r);
    return 0;
}

int local_run_group(const struct local_run *r, struct local_result *out, struct lerr *e)
{
    struct pollfd stop = { .fd = r->stop_fd, .events = POLLIN };
    struct files f = { .dir = "" };
    int rc;

    memset(out, 0, sizeof *out);
    if (poll(&stop, 1, 0) > 0) {  /* readable, or closed; poll skips a negative fd */
        out->stopped = 1;
        snprintf(out->reason, sizeof out->reason, "not started: lambdo is stopping");
        return 0;
    }
    rc = files_create(r, &f, e);
    if (rc == 0)
        rc = run_child(r, &f, out, e);
    /* FTW_PHYS: symbolic links the child left are removed, never followed. Only the owner
     * can write there (0700), and the owner's processes could delete whatever we can. */
    if (f.dir[0] && nftw(f.dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) != 0 &&
        errno != ENOENT)
        log_warn("group %s: cannot remove %s: %s", r->group_id ? r->group_id : "?", f.dir,
                 strerror(errno));
    return rc;
}

int local_result_ok(const struct local_result *r)
{
    /* exited implies started and no exec failure */
    return r->exited && r->exit_code == 0 && !r->timed_out && !r->stopped;
}
