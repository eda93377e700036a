#include "local.h"

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
#define DEFAULT_PATH "/usr/local/bin:/bin:/usr/bin"
#define EVENTS_NAME "events.json"
#define META_NAME "events.meta.json"

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
        int flags = fd < 3 || fd == dirfd(d) ? -1 : fcntl(fd, F_GETFD);

        if (flags >= 0 && !(flags & FD_CLOEXEC))
            fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
    }
    closedir(d);
    return 0;
}

/* ---- output lines --------------------------------------------------------------------- */

void local_lines_feed(struct local_lines *l, const char *p, size_t n)
{
    while (n) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) : n;

        if (!l->dropping) {
            size_t room = sizeof l->buf - l->len;
            if (take > room) {
                memcpy(l->buf + l->len, p, room);
                l->emit(l->ctx, l->buf, sizeof l->buf, 1);
                l->len = 0;
                l->dropping = 1;
            } else {
                memcpy(l->buf + l->len, p, take);
                l->len += take;
            }
        }
        if (!nl)
            return;
        if (!l->dropping)
            l->emit(l->ctx, l->buf, l->len, 0);
        l->len = 0;
        l->dropping = 0;
        p = nl + 1;
        n -= take + 1;
    }
}

void local_lines_finish(struct local_lines *l)
{
    if (l->len && !l->dropping)
        l->emit(l->ctx, l->buf, l->len, 0);
    l->len = 0;
    l->dropping = 0;
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
    while (i < len && o + strlen(mark) + 1 < cap) {
        unsigned cp;
        size_t k = s[i] ? text_utf8_next(s + i, len - i, &cp) : 0;

        /* a lead byte whose character the truncation cut in two */
        if (!k && truncated && s[i] >= 0xc2 && s[i] <= 0xf4 &&
            len - i < (s[i] >= 0xf0 ? 4u : s[i] >= 0xe0 ? 3u : 2u))
            break;
        if (!k) {
            out[o++] = '?';
            i++;
            continue;
        }
        if (o + k + strlen(mark) + 1 > cap)
            break;
        memcpy(out + o, s + i, k);
        o += k;
        i += k;
    }
    snprintf(out + o, cap - o, "%s", mark);
}

/* ---- the events directory ------------------------------------------------------------- */

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

/* Removes the private directory and anything the child added to it. FTW_PHYS: symbolic
 * links are removed, never followed. Only the owner can write there (0700), and the
 * owner's processes could delete whatever we can anyway. */
static void events_dir_remove(const char *dir, const char *gid)
{
    if (nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) != 0 && errno != ENOENT)
        log_warn("group %s: cannot remove %s: %s", gid, dir, strerror(errno));
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Creates path (new, 0600 whatever the umask: the owner must be able to read it) holding
 * data[0..len). */
static int file_write(const char *path, const char *data, size_t len, struct lerr *e)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600), err;

    if (fd < 0)
        return lerr_set(e, LERR_IO, "cannot create %s: %s", path, strerror(errno));
    if (fchmod(fd, 0600) < 0 || write_all(fd, data, len) < 0) {
        err = errno;
        close(fd);
        return lerr_set(e, LERR_IO, "cannot write %s: %s", path, strerror(err));
    }
    if (close(fd) < 0)
        return lerr_set(e, LERR_IO, "cannot write %s: %s", path, strerror(errno));
    return 0;
}

/* Creates <tmp>/lambdo-<gid>-XXXXXX/events.json holding the events, and beside it
 * events.meta.json holding the context file when there is one. path gets the events
 * file's name, dir the directory's (empty if nothing was created). */
static int events_file_create(const struct local_run *r, char *dir, char *path, char *meta,
                              size_t cap, struct lerr *e)
{
    const char *tmp = r->tmpdir ? r->tmpdir : getenv("TMPDIR");
    char gid[GID_MAX + 1];
    size_t n = 0;

    dir[0] = '\0';
    if (!tmp || !*tmp)
        tmp = "/tmp";
    /* Only name-safe characters of the group id go into the path. */
    for (const char *p = r->group_id ? r->group_id : ""; *p && n < GID_MAX; p++)
        gid[n++] = (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') ||
                   (*p >= 'A' && *p <= 'Z') || *p == '-' ? *p : '_';
    gid[n] = '\0';
    if ((size_t)snprintf(dir, cap, "%s/lambdo-%s-XXXXXX", tmp, gid) >= cap ||
        (size_t)snprintf(path, cap, "%s/lambdo-%s-XXXXXX/" EVENTS_NAME, tmp, gid) >= cap) {
        dir[0] = '\0';
        return lerr_set(e, LERR_INVALID, "temporary directory name too long: %s", tmp);
    }
    if (!mkdtemp(dir)) {
        dir[0] = '\0';
        return lerr_set(e, LERR_IO, "cannot create a private directory in %s: %s", tmp,
                        strerror(errno));
    }
    memcpy(path, dir, strlen(dir));  /* the same name with the XXXXXX filled in */
    if (file_write(path, r->events, r->events_len, e) < 0)
        return -1;
    if (!r->meta)
        return 0;
    if ((size_t)snprintf(meta, cap, "%s/" META_NAME, dir) >= cap)
        return lerr_set(e, LERR_INVALID, "temporary directory name too long: %s", tmp);
    return file_write(meta, r->meta, r->meta_len, e);
}

/* ---- the child's environment ---------------------------------------------------------- */

#define CHILD_PREFIX "LAMBDO_CHILD_"
#define CHILD_PREFIX_LEN (sizeof CHILD_PREFIX - 1)

static size_t env_name_len(const char *kv)
{
    const char *eq = strchr(kv, '=');

    return eq ? (size_t)(eq - kv) : strlen(kv);
}

/* Whether kv ("NAME=value") is the variable name (given as "NAME" or "NAME=value"). */
static int env_named(const char *kv, const char *name)
{
    return env_name_len(kv) == env_name_len(name) && strncmp(kv, name, env_name_len(name)) == 0;
}

/* What lambdo holds and a child must not inherit: every LAMBDO_* setting (but the
 * runtimes' LAMBDO_HANDLER), the Fly token, and every AWS_* variable but the region. Nearly
 * every AWS_* variable is a credential or a route to one (keys, a role with its token file,
 * a profile, the shared files, container endpoints), and one added to the SDKs later must
 * not pass by omission. */
static int env_is_lambdos(const char *kv)
{
    if (strncmp(kv, "LAMBDO_", 7) == 0)
        return !env_named(kv, "LAMBDO_HANDLER");
    if (strncmp(kv, "AWS_", 4) == 0)
        return !env_named(kv, "AWS_REGION") && !env_named(kv, "AWS_DEFAULT_REGION");
    return env_named(kv, "FLY_API_TOKEN") || env_named(kv, "FLY_ACCESS_TOKEN") ||
           env_named(kv, "EVENTS_PATH") || env_named(kv, "EVENTS_META_PATH");
}

/* Whether the user chose the child's value of kv's variable with LAMBDO_CHILD_<name>. */
static int env_chosen(const char *const *envp, const char *kv)
{
    for (; *envp; envp++)
        if (strncmp(*envp, CHILD_PREFIX, CHILD_PREFIX_LEN) == 0 &&
            env_named(*envp + CHILD_PREFIX_LEN, kv) && strchr(*envp, '='))
            return 1;
    return 0;
}

/* A new array of pointers into envp (not copies), the constants below, events_kv and
 * meta_kv (when not NULL); NULL if out of memory. The shared files point at /dev/null, or an SDK in the child would read
 * ~/.aws (lambdo's user's HOME) and find lambdo's profile. */
static char **env_build(const char *const *envp, char *events_kv, char *meta_kv)
{
    static const char *const no_files[] = {
        "AWS_SHARED_CREDENTIALS_FILE=/dev/null", "AWS_CONFIG_FILE=/dev/null",
    };
    size_t n = 0, k = 0;
    char **env;

    if (!envp)
        envp = (const char *const *)environ;
    while (envp && envp[n])
        n++;
    env = calloc(n + 5, sizeof *env);  /* renamed ones are LAMBDO_*, not also kept */
    if (!env)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        const char *kv = envp[i] + CHILD_PREFIX_LEN;
        if (strncmp(envp[i], CHILD_PREFIX, CHILD_PREFIX_LEN) == 0 && strchr(kv, '=') &&
            *kv != '=' && !env_named(kv, "EVENTS_PATH") && !env_named(kv, "EVENTS_META_PATH"))
            env[k++] = (char *)kv;  /* LAMBDO_CHILD_<NAME>=value as <NAME>=value */
        else if (strchr(envp[i], '=') && !env_is_lambdos(envp[i]) && !env_chosen(envp, envp[i]))
            env[k++] = (char *)envp[i];
    }
    for (size_t i = 0; i < sizeof no_files / sizeof no_files[0]; i++)
        if (!env_chosen(envp, no_files[i]))
            env[k++] = (char *)no_files[i];
    env[k++] = events_kv;
    env[k] = meta_kv;
    return env;
}

/* ---- starting the child --------------------------------------------------------------- */

/* Moves a descriptor above 2, keeping O_CLOEXEC: if lambdo was started with stdout or
 * stderr closed, a pipe end could be 1 or 2, and dup2 onto itself would leave it marked
 * close-on-exec. */
static int fd_above_stdio(int fd)
{
    int moved;

    if (fd > 2)
        return fd;
    moved = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    close(fd);
    return moved;
}

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
    if (!S_ISREG(st.st_mode) || access(path, X_OK) < 0)
        return EACCES;
    return 0;
}

/* The file a command names, found as execvp finds it: a name with a slash is used as it
 * is; any other is looked up in the child's PATH (an empty entry is the working
 * directory), skipping what is not an executable file. Done here, not left to
 * posix_spawnp, so that "not found" and "not executable" are told apart before anything
 * starts, in the same words under glibc and musl (and valgrind, whose emulated vfork
 * cannot pass an exec failure back). Returns 0, or ENOENT, EACCES, EISDIR, ENAMETOOLONG. */
static int command_find(const char *name, char *const *env, char *out, size_t cap)
{
    const char *path = DEFAULT_PATH, *p;
    int err = ENOENT;

    if (strchr(name, '/')) {
        if ((size_t)snprintf(out, cap, "%s", name) >= cap)
            return ENAMETOOLONG;
        return file_runnable(out);
    }
    for (char *const *v = env; *v; v++) {
        if (strncmp(*v, "PATH=", 5) == 0) {
            path = *v + 5;  /* the first, as getenv finds it */
            break;
        }
    }
    for (p = path;;) {
        const char *colon = strchr(p, ':');
        int n = colon ? (int)(colon - p) : (int)strlen(p), rc;

        if ((size_t)snprintf(out, cap, "%.*s/%s", n ? n : 1, n ? p : ".", name) < cap) {
            if ((rc = file_runnable(out)) == 0)
                return 0;
            if (rc != ENOENT && rc != ENOTDIR)
                err = rc;
        } else {
            err = ENAMETOOLONG;
        }
        if (!colon)
            return err;
        p = colon + 1;
    }
}

/* posix_spawn of the file prog with stdin from /dev/null, stdout and stderr to wfd, a
 * process group of its own, no blocked signals and every signal at its default.
 * Returns 0 or an errno. */
static int child_spawn(const char *prog, const struct local_run *r, char **env, int wfd,
                       pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    sigset_t none, all;
    int rc;

    if ((rc = posix_spawn_file_actions_init(&fa)) != 0)
        return rc;
    if ((rc = posix_spawnattr_init(&at)) != 0) {
        posix_spawn_file_actions_destroy(&fa);
        return rc;
    }
    sigemptyset(&none);
    sigfillset(&all);
    if (!(rc = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0)) &&
        !(rc = posix_spawn_file_actions_adddup2(&fa, wfd, 1)) &&
        !(rc = posix_spawn_file_actions_adddup2(&fa, wfd, 2)) &&
        !(rc = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                                 POSIX_SPAWN_SETSIGDEF)) &&
        !(rc = posix_spawnattr_setpgroup(&at, 0)) &&
        !(rc = posix_spawnattr_setsigmask(&at, &none)) &&
        !(rc = posix_spawnattr_setsigdefault(&at, &all)))
        rc = posix_spawn(pid, prog, &fa, &at, (char *const *)r->argv, env);
    posix_spawnattr_destroy(&at);
    posix_spawn_file_actions_destroy(&fa);
    return rc;
}

/* ---- watching the child --------------------------------------------------------------- */

struct watch {
    const struct local_run *r;
    struct local_result *out;
    pid_t pid;
    int out_fd;              /* read end of the output pipe; -1 after EOF */
    int64_t started;
    int64_t kill_at;         /* SIGTERM sent: when SIGKILL follows; 0 before */
    int64_t stop_deadline;   /* once the stop fd became readable: when the child is killed;
                                0 before */
    int64_t drain_until;     /* after the child was reaped */
    int reaped;
    int tick_ms;             /* how long poll may sleep before looking for the end again */
    struct local_lines lines;
};

static void line_log(void *ctx, const char *line, size_t len, int truncated)
{
    const struct watch *w = ctx;
    char buf[LOCAL_LINE_MAX + 64];

    local_line_format(buf, sizeof buf, w->r->group_id, line, len, truncated);
    log_info("%s", buf);
}

static void output_read(struct watch *w)
{
    char buf[4096];

    for (;;) {
        ssize_t n = read(w->out_fd, buf, sizeof buf);
        if (n > 0) {
            local_lines_feed(&w->lines, buf, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        close(w->out_fd);  /* EOF, or an error that will not mend */
        w->out_fd = -1;
        w->tick_ms = 1;    /* the child is most likely exiting: look again soon */
        local_lines_finish(&w->lines);
        return;
    }
}

/* Signals the whole process group; only while the child is not reaped, so the group id
 * cannot have been reused by an unrelated process. */
static void group_signal(struct watch *w, int sig)
{
    if (!w->reaped)
        kill(-w->pid, sig);
}

/* If the child ended: kills what it left in its group, then reaps it. waitid with WNOWAIT
 * first, so that the group is signalled while the zombie still holds its id. */
static void child_check(struct watch *w)
{
    siginfo_t si;
    int status, rc;

    if (w->reaped)
        return;
    memset(&si, 0, sizeof si);
    rc = waitid(P_PID, (id_t)w->pid, &si, WEXITED | WNOHANG | WNOWAIT);
    if (rc < 0 && errno != ECHILD)
        return;
    if (rc == 0) {
        if (si.si_pid != w->pid)
            return;  /* still running */
        group_signal(w, SIGKILL);  /* leftovers */
        while ((rc = waitpid(w->pid, &status, 0)) < 0 && errno == EINTR)
            ;
    }
    w->reaped = 1;
    w->drain_until = now_ms() + LOCAL_DRAIN_MS;
    w->out->seconds = (double)(now_ms() - w->started) / 1000.0;
    if (rc < 0) {
        /* ECHILD: someone else reaped it (SIGCHLD set to SIG_IGN does that): the
         * status is lost, which counts as a failure. */
        w->out->lost = 1;
    } else if (WIFEXITED(status)) {
        w->out->exited = 1;
        w->out->exit_code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
        w->out->signal = WTERMSIG(status);
#ifdef WCOREDUMP
        w->out->core_dumped = WCOREDUMP(status) != 0;
#endif
    }
}

/* Sends SIGTERM when the timeout or the shutdown deadline has come, SIGKILL kill_grace
 * later. Returns when it has work next (INT64_MAX: none). */
static int64_t child_deadlines(struct watch *w, int64_t t)
{
    const struct local_run *r = w->r;
    int grace = r->kill_grace_s > 0 ? r->kill_grace_s : LOCAL_KILL_GRACE_S;
    int64_t timeout_at = r->timeout_s > 0 ? w->started + (int64_t)r->timeout_s * 1000 : INT64_MAX;
    int64_t stop_at = w->stop_deadline ? w->stop_deadline : INT64_MAX;

    if (w->reaped)
        return INT64_MAX;
    if (w->kill_at) {
        if (t >= w->kill_at) {
            group_signal(w, SIGKILL);
            w->kill_at = INT64_MAX;
        }
        return w->kill_at;
    }
    if (t >= timeout_at)
        w->out->timed_out = 1;
    else if (t >= stop_at)
        w->out->stopped = 1;
    else
        return timeout_at < stop_at ? timeout_at : stop_at;
    group_signal(w, SIGTERM);
    w->kill_at = t + (int64_t)grace * 1000;
    return w->kill_at;
}

static void watch_loop(struct watch *w)
{
    const struct local_run *r = w->r;
    int64_t next_idle = now_ms() + IDLE_EVERY_MS;

    for (;;) {
        struct pollfd p[2];
        int np = 0, i_out = -1, i_stop = -1;
        int64_t t = now_ms(), until = child_deadlines(w, t);

        if (w->reaped && (w->out_fd < 0 || t >= w->drain_until))
            return;
        if (!w->reaped && r->idle && t >= next_idle) {
            r->idle(r->ctx);
            next_idle = now_ms() + IDLE_EVERY_MS;
            continue;
        }
        if (w->out_fd >= 0)
            p[i_out = np++] = (struct pollfd){ .fd = w->out_fd, .events = POLLIN };
        if (!w->reaped && !w->stop_deadline && r->stop_fd >= 0)
            p[i_stop = np++] = (struct pollfd){ .fd = r->stop_fd, .events = POLLIN };
        /* Sleep until the next deadline, heartbeat or tick; after the end, the drain's. */
        if (next_idle < until)
            until = next_idle;
        if (t + w->tick_ms < until)
            until = t + w->tick_ms;
        if (w->reaped)
            until = w->drain_until;
        if (poll(p, (nfds_t)np, until <= t ? 0 : (int)(until - t)) < 0 && errno != EINTR) {
            log_warn("group %s: poll: %s", r->group_id, strerror(errno));
            usleep(TICK_MS * 1000);
        }
        if (i_out >= 0 && p[i_out].revents)
            output_read(w);
        if (i_stop >= 0 && p[i_stop].revents)  /* readable, or closed */
            w->stop_deadline = now_ms() + (int64_t)r->shutdown_grace_s * 1000;
        child_check(w);
        if (w->tick_ms < TICK_MS)
            w->tick_ms = w->tick_ms * 2 < TICK_MS ? w->tick_ms * 2 : TICK_MS;
    }
}

static void signal_name(int sig, char *buf, size_t cap)
{
    static const char *const names[] = {
        [SIGHUP] = "SIGHUP",   [SIGINT] = "SIGINT",   [SIGQUIT] = "SIGQUIT",
        [SIGILL] = "SIGILL",   [SIGTRAP] = "SIGTRAP", [SIGABRT] = "SIGABRT",
        [SIGBUS] = "SIGBUS",   [SIGFPE] = "SIGFPE",   [SIGKILL] = "SIGKILL",
        [SIGUSR1] = "SIGUSR1", [SIGSEGV] = "SIGSEGV", [SIGUSR2] = "SIGUSR2",
        [SIGPIPE] = "SIGPIPE", [SIGALRM] = "SIGALRM", [SIGTERM] = "SIGTERM",
        [SIGXCPU] = "SIGXCPU", [SIGXFSZ] = "SIGXFSZ", [SIGSYS] = "SIGSYS",
    };

    if (sig > 0 && (size_t)sig < sizeof names / sizeof names[0] && names[sig])
        snprintf(buf, cap, "%d (%s)", sig, names[sig]);
    else
        snprintf(buf, cap, "%d", sig);
}

static void result_reason(struct local_result *out, const struct local_run *r)
{
    char how[64], sig[32];

    if (out->exited) {
        snprintf(how, sizeof how, "exited %d", out->exit_code);
    } else if (out->lost) {
        snprintf(how, sizeof how, "exit status unknown (the process was reaped elsewhere)");
    } else {
        signal_name(out->signal, sig, sizeof sig);
        snprintf(how, sizeof how, "killed by signal %s%s", sig,
                 out->core_dumped ? ", core dumped" : "");
    }
    if (out->timed_out)
        snprintf(out->reason, sizeof out->reason, "ran past its timeout of %d s: %s",
                 r->timeout_s, how);
    else if (out->stopped)
        snprintf(out->reason, sizeof out->reason, "stopped: still running %d s after lambdo "
                 "began to stop: %s", r->shutdown_grace_s, how);
    else
        snprintf(out->reason, sizeof out->reason, "%s", how);
}

/* ---- running a group ------------------------------------------------------------------ */

static int stop_requested(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };

    return fd >= 0 && poll(&p, 1, 0) > 0;  /* readable, or closed */
}

/* Starts the child and follows it to its end. The events file exists. */
static int run_child(const struct local_run *r, const char *events_path,
                     const char *meta_path, struct local_result *out, struct lerr *e)
{
    struct watch w = { .r = r, .out = out, .out_fd = -1, .tick_ms = TICK_MS };
    char kv[sizeof "EVENTS_PATH=" + PATH_MAX], **env, prog[PATH_MAX];
    char meta_kv[sizeof "EVENTS_META_PATH=" + PATH_MAX];
    int pfd[2] = { -1, -1 }, rc, ret = -1;

    snprintf(kv, sizeof kv, "EVENTS_PATH=%s", events_path);
    if (r->meta)  /* meta_path is set only then */
        snprintf(meta_kv, sizeof meta_kv, "EVENTS_META_PATH=%s", meta_path);
    if (!(env = env_build(r->envp, kv, r->meta ? meta_kv : NULL))) {
        lerr_set(e, LERR_NOMEM, "out of memory for the environment");
        goto out;
    }
    if ((rc = command_find(r->argv[0], env, prog, sizeof prog)) != 0) {
        ret = exec_failure(out, r->argv[0], rc, e);
        goto out;
    }
    if (pipe2(pfd, O_CLOEXEC) < 0) {
        lerr_set(e, LERR_IO, "cannot create a pipe: %s", strerror(errno));
        goto out;
    }
    if ((pfd[0] = fd_above_stdio(pfd[0])) < 0 || (pfd[1] = fd_above_stdio(pfd[1])) < 0) {
        lerr_set(e, LERR_IO, "cannot move a pipe: %s", strerror(errno));
        goto out;
    }
    w.started = now_ms();
    rc = child_spawn(prog, r, env, pfd[1], &w.pid);
    close(pfd[1]);
    pfd[1] = -1;
    if (rc != 0) {
        ret = exec_failure(out, r->argv[0], rc, e);
        goto out;
    }
    out->started = 1;
    out->pid = (int)w.pid;
    fcntl(pfd[0], F_SETFL, fcntl(pfd[0], F_GETFL) | O_NONBLOCK);
    w.out_fd = pfd[0];
    pfd[0] = -1;
    w.lines.emit = line_log;
    w.lines.ctx = &w;
    if (r->started)
        r->started(r->ctx, out->pid);
    watch_loop(&w);
    if (w.out_fd >= 0) {
        close(w.out_fd);  /* held open by a process outside the group */
        local_lines_finish(&w.lines);
    }
    result_reason(out, r);
    ret = 0;
out:
    if (pfd[0] >= 0)
        close(pfd[0]);
    if (pfd[1] >= 0)
        close(pfd[1]);
    free(env);
    return ret;
}

int local_run_group(const struct local_run *r, struct local_result *out, struct lerr *e)
{
    char dir[PATH_MAX], path[PATH_MAX], meta[PATH_MAX];
    int rc;

    memset(out, 0, sizeof *out);
    if (!r || !r->argv || !r->argv[0] || !r->argv[0][0] || (!r->events && r->events_len))
        return lerr_set(e, LERR_INVALID, "local_run_group: no command");
    if (stop_requested(r->stop_fd)) {
        out->stopped = 1;
        snprintf(out->reason, sizeof out->reason, "not started: lambdo is stopping");
        return 0;
    }
    rc = events_file_create(r, dir, path, meta, sizeof dir, e);
    if (rc == 0)
        rc = run_child(r, path, meta, out, e);
    if (dir[0])
        events_dir_remove(dir, r->group_id ? r->group_id : "?");
    return rc;
}

int local_result_ok(const struct local_result *r)
{
    return r->started && r->exited && r->exit_code == 0 && !r->timed_out && !r->stopped &&
           !r->exec_failed;
}
