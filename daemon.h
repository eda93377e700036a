/*
 * daemon.h - the long-running part of lambdo: receive, validate, group, run, acknowledge.
 *
 * The main thread long-polls SQS, groups the events and queues a job per group for a set
 * of at most LAMBDO_MAX_MACHINES worker threads (started as jobs need them, kept until
 * the stop, each with its own HTTP and SQS clients). A job creates the group's Machine (or runs
 * its local child: local.c) and acknowledges its messages: at once after the create
 * (LAMBDO_ACK=create), or after the Machine exited 0 (LAMBDO_ACK=exit), keeping the
 * messages hidden with visibility heartbeats meanwhile. A running job holds a Machine
 * slot; the main thread heartbeats queued jobs and stops receiving while every slot is
 * taken, so it never holds a message it cannot start. On a FIFO queue, a message that
 * would run beside or before an earlier one of its message group (group_fifo_order) is
 * made visible again at once instead. The HTTP, SQS, Fly and grouping work itself is the
 * other modules'.
 */
#ifndef LAMBDO_DAEMON_H
#define LAMBDO_DAEMON_H

#include "config.h"

/* Runs until SIGTERM or SIGINT or, with once, until the queue answers empty, every group
 * is done and nothing is in flight but what this run holds (README: --once). Returns the
 * process exit status: 0 after a clean stop (with once: only if every message was handled,
 * at its first or second try, i.e. its Machine was created, or exited 0 in exit mode and
 * with the local backend, and the message deleted), 1 when it cannot go on (e.g. SQS
 * refuses the credentials at start-up) or, with once, when a message was not handled or a
 * signal stopped the run, 2 when the configuration is unusable (an unreadable CA bundle).
 * Messages explain themselves in the log. */
int daemon_run(const struct config *cfg, int once);

#endif
