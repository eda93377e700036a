/*
 * local.h - run a group as a child process on this host (LAMBDO_BACKEND=local).
 *
 * Instead of a Fly Machine, a group runs as one child process of lambdo, started the way a
 * Machine would start: the command, EVENTS_PATH naming a file that holds the group's
 * events byte for byte, and its exit status deciding the acknowledgement (as in exit mode:
 * 0 deletes the messages, anything else returns them).
 *
 * The command
 *   A JSON array of strings, executed without a shell (posix_spawn): argv[0] names the
 *   program as for execvp (with a slash, that file; else the first executable file of that
 *   name in the PATH the child gets, which is lambdo's), the other elements are the
 *   arguments as they are (a script needs its #! line: there is no shell fallback).
 *   The message's own `command` attribute wins; LAMBDO_LOCAL_COMMAND is the default for
 *   messages that have none; with neither, the group cannot run (local_command_resolve
 *   says why). The message's command wins because it is what the sender asked for, and
 *   what decided the grouping; a host-wide default only fills in what is missing.
 *   A program that cannot be started (not found, not executable) is reported as such,
 *   never confused with an exit code.
 *
 * The events file
 *   A private directory from mkdtemp ($TMPDIR, else /tmp; mode 0700) holding events.json
 *   (mode 0600) with the group's events; EVENTS_PATH is its path. Beside it, when the run
 *   has one, events.meta.json (mode 0600), the context file; EVENTS_META_PATH is its path
 *   (unset without one, never inherited). The directory and
 *   everything in it is removed when the child is done, whatever the outcome (exit,
 *   signal, timeout, stop, exec failure). The child's working directory is lambdo's.
 *
 * The environment
 *   lambdo's own environment minus what is lambdo's: every LAMBDO_* variable (but
 *   LAMBDO_HANDLER, the runtimes' setting: where the user's handler is), FLY_API_TOKEN,
 *   FLY_ACCESS_TOKEN and every AWS_* variable but AWS_REGION and AWS_DEFAULT_REGION; plus
 *   AWS_SHARED_CREDENTIALS_FILE=/dev/null and AWS_CONFIG_FILE=/dev/null, and EVENTS_PATH
 *   and EVENTS_META_PATH (replacing any inherited ones). Then every LAMBDO_CHILD_<NAME>=<value>
 *   of lambdo's environment reaches the child as <NAME>=<value>, replacing what it would get
 *   otherwise (EVENTS_PATH and EVENTS_META_PATH excepted): that is how a handler gets
 *   credentials of its own.
 *   Why: lambdo's AWS identity is the queue consumer's, allowed to receive and delete. A
 *   child that inherits it by any route an SDK follows (keys, AWS_ROLE_ARN with
 *   AWS_WEB_IDENTITY_TOKEN_FILE, a profile in ~/.aws, container endpoints) can delete
 *   anybody's messages, and a dependency that logs its environment leaks it. A Fly Machine
 *   never sees it either, so a handler behaves the same under both backends. Whole
 *   prefixes go, not a list of names, so a secret added later is never passed by omission.
 *   local_seal() also makes lambdo non-dumpable, so a child of the same non-root user
 *   cannot read /proc/<lambdo>/environ. This is no sandbox: a child runs as lambdo's user
 *   and can read the files it can read.
 * The process
 *   stdin is /dev/null; stdout and stderr share one pipe (so their relative order is kept,
 *   as on a terminal or in Fly's log stream) and every line goes to lambdo's log at info
 *   level as "[group <id>] <line>". Lines are logged whole, one log call each, so two
 *   children's output never mixes within a line; a line longer than LOCAL_LINE_MAX bytes
 *   is logged up to that length with " [truncated]" and the rest of it is dropped. NUL
 *   bytes and invalid UTF-8 become '?', a trailing CR is dropped.
 *   The child runs in a process group of its own, with an empty signal mask and every
 *   signal at its default action (lambdo blocks SIGTERM/SIGINT and ignores SIGPIPE; a
 *   child must not inherit that; the C library's own internal signals 32 and 33 stay
 *   ignored under glibc's posix_spawn, as for every program it starts). Being in its own group, it does not get the terminal's
 *   ^C: lambdo decides when it stops.
 *   Killing means SIGTERM to the whole process group, then SIGKILL to the group after
 *   kill_grace_s (LOCAL_KILL_GRACE_S by default) if the child still runs. The child is
 *   killed when it runs past timeout_s (timed_out), and when lambdo stops: once stop_fd
 *   turns readable the child may go on for shutdown_grace_s, to finish on its own; still
 *   running then, it is killed (stopped). Either way that is a failure. When the child
 *   ends, whatever it left running in its process group is killed (SIGKILL), as the end of
 *   a Machine ends all of its processes; a process that left the group (setsid) is beyond
 *   reach, and its hold on the output pipe is given up LOCAL_DRAIN_MS after the child
 *   ended. If lambdo itself is killed with SIGKILL, running children are not killed.
 *   Only the child's own pid is ever waited for (other jobs' children run concurrently),
 *   so any number of threads may run groups at once; each call blocks its own thread.
 *
 * File descriptors
 *   posix_spawn closes nothing by itself: the child inherits every descriptor without
 *   FD_CLOEXEC, and the child gets exactly 0 (/dev/null), 1 and 2 (the output pipe) only
 *   if every other descriptor of the process is close-on-exec. lambdo opens all of its descriptors with O_CLOEXEC / SOCK_CLOEXEC /
 *   SFD_CLOEXEC (this module's pipes and files included), and posix_spawn (not fork) is
 *   used so no other thread's half-made state is copied. Descriptors lambdo inherited from
 *   its own parent are covered by local_seal(), to be called once at start-up.
 */
#ifndef LAMBDO_LOCAL_H
#define LAMBDO_LOCAL_H

#include <stddef.h>
#include "err.h"

#define LOCAL_LINE_MAX     2000  /* bytes of one output line; log_write takes 2047 in all */
#define LOCAL_KILL_GRACE_S 5     /* SIGTERM to SIGKILL */
#define LOCAL_DRAIN_MS     1000  /* output still read after the child ended */

struct local_run {
    const char *const *argv;     /* NULL-terminated, argv[0] non-empty */
    const char *events;          /* the events file's bytes */
    size_t events_len;
    const char *group_id;        /* log prefix and temp directory name */
    size_t event_count;          /* for the log line "process N started for <count> events" */
    int timeout_s;               /* LAMBDO_MACHINE_TIMEOUT; 0 = none */
    int stop_fd;                 /* readable (or closed) once lambdo is stopping; -1 = none */
    int shutdown_grace_s;        /* after a stop, how long the child may still run */
    int kill_grace_s;            /* SIGTERM to SIGKILL; 0 = LOCAL_KILL_GRACE_S */
    const char *tmpdir;          /* NULL: $TMPDIR, else /tmp */
    const char *const *envp;     /* NULL: lambdo's environment (environ) */
    void (*started)(void *ctx, int pid);  /* once, right after the child started; may be NULL */
    void (*idle)(void *ctx);     /* about once a second while the child runs (heartbeats);
                                    may be NULL */
    void *ctx;
    const char *meta;            /* the context file's bytes (events.meta.json, beside the
                                    events file, in EVENTS_META_PATH), or NULL: none */
    size_t meta_len;
};

struct local_result {
    int started;          /* a process ran (0 after an exec failure or a stop before start) */
    int pid;
    int exited;           /* it exited, with exit_code */
    int exit_code;
    int signal;           /* it was killed by this signal (0 if it exited) */
    int core_dumped;
    int lost;             /* its exit status could not be learned (reaped elsewhere) */
    int timed_out;        /* it ran past timeout_s and was killed: a failure */
    int stopped;          /* lambdo was stopping: still running at the shutdown deadline and
                             killed, or never started */
    int exec_failed;      /* the command could not be started (reason says why) */
    double seconds;       /* run time */
    char reason[200];     /* "exited 3", "killed by signal 9 (SIGKILL)",
                             "command not found: foo", ... */
};

/* Runs one group and waits for it (and for the heartbeats it calls meanwhile). Returns 0
 * with *out filled in whatever the child did, exec failures included; -1 only when lambdo
 * could not do its part (no temporary directory, no pipe, fork refused for lack of
 * memory or processes), with e set (LERR_IO, LERR_NOMEM, LERR_INVALID for a temporary
 * directory name too long). r->argv comes from local_command_resolve: never empty.
 * If stop_fd is already readable, nothing starts: out->stopped, reason "not started". */
int local_run_group(const struct local_run *r, struct local_result *out, struct lerr *e);

/* The acknowledgement: 1 when the group succeeded (exited 0, not timed out, not stopped),
 * and its messages are deleted; 0 when they go back to the queue. */
int local_result_ok(const struct local_result *r);

/* Which command runs a group: the message's own (message_cmd, already checked by
 * group_check) wins; else default_cmd (LAMBDO_LOCAL_COMMAND); with neither, -1 with
 * LERR_INVALID "no command: ...". Parses it (checked as group_command does) into a
 * NULL-terminated argv in one allocation, which the caller frees with free(); else
 * LERR_INVALID naming where the command came from, or LERR_NOMEM. */
int local_command_resolve(const char *message_cmd, const char *default_cmd, char ***argv_out,
                          struct lerr *e);

/* Makes lambdo non-dumpable and marks every descriptor from 3 up close-on-exec, so that
 * neither lambdo's environment nor descriptors it inherited from whoever started it reach
 * the groups' children. Call once at start-up, before threads start. 0, or -1 with
 * LERR_IO. */
int local_seal(struct lerr *e);

/* ---- output lines (pure; exposed for the unit tests) ------------------------------------ */

/* Splits a byte stream into lines of at most LOCAL_LINE_MAX bytes; emit gets each line
 * without its newline, truncated = 1 for the first LOCAL_LINE_MAX bytes of a longer one
 * (the rest of that line is dropped). */
struct local_lines {
    char buf[LOCAL_LINE_MAX];
    size_t len;
    int dropping;         /* inside a truncated line: drop until its newline */
    void (*emit)(void *ctx, const char *line, size_t len, int truncated);
    void *ctx;
};

void local_lines_feed(struct local_lines *l, const char *p, size_t n);
/* At the end of the stream: emits a last line that had no newline. */
void local_lines_finish(struct local_lines *l);

/* Formats one output line for the log: "[group <id>] <line>" (plus " [truncated]"),
 * NUL bytes and invalid UTF-8 as '?', one trailing CR dropped, an incomplete UTF-8
 * sequence cut by truncation dropped. out needs LOCAL_LINE_MAX + 64 bytes. */
void local_line_format(char *out, size_t cap, const char *group_id, const char *line,
                       size_t len, int truncated);

#endif
