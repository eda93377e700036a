/*
 * ratelimit.h - a token bucket shared by threads, for Fly's per-app API rate limits.
 *
 * The bucket holds up to `burst` tokens and gains `rate` tokens per second. A caller that
 * wants to send a request takes one token; when there is none it reserves the next one
 * and sleeps until it is due. Tokens may go negative: each reservation queues behind the
 * ones before it, so waiters go in arrival order, one every 1/rate seconds, and nobody
 * can be overtaken forever.
 *
 * A 429 from Fly means the server's own bucket is empty, for every thread of the app:
 * ratelimit_penalize_at(now, ms) then pauses all of them. Nobody's token is valid before
 * now+ms; reservations already queued keep their order and spacing but move back by the
 * pause; and the bucket restarts with at most one token, so the waiters do not rush in all
 * at once when the pause ends.
 *
 * Times are CLOCK_MONOTONIC nanoseconds. The *_at functions are the pure core: they take
 * the time as an argument (the tests use a fake clock) and never sleep; ratelimit_wait_idle
 * reads the clock and sleeps. All of them lock the mutex and may be called from any
 * thread.
 */
#ifndef LAMBDO_RATELIMIT_H
#define LAMBDO_RATELIMIT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "err.h"

struct ratelimit {
    double rate;             /* tokens per second, > 0 */
    int burst;               /* bucket size, >= 1 */
    double tokens;           /* tokens at last_ns; negative: that many reservations queue */
    int64_t last_ns;         /* the time `tokens` is for; after a penalty, in the future */
    int64_t pause_until_ns;  /* end of the latest penalty: no token is valid before it */
    int64_t shift_ns;        /* how far penalties have pushed queued reservations, in all */
    pthread_mutex_t mu;
};

/* One reservation: when its token is valid, and the penalties it already accounts for. */
struct ratelimit_ticket {
    int64_t ready_ns;
    int64_t shift_ns;
};

/* A full bucket. LERR_INVALID unless rate is finite and > 0 and burst >= 1. */
int ratelimit_init(struct ratelimit *rl, double rate, int burst, struct lerr *e);

void ratelimit_destroy(struct ratelimit *rl);

/* Reserves the next token at now_ns. Returns how many ns the caller must wait before
 * using it (0: go now). tk, if not NULL, receives the reservation, for
 * ratelimit_ticket_wait_at (penalties that come later push it back). */
int64_t ratelimit_reserve_at(struct ratelimit *rl, int64_t now_ns, struct ratelimit_ticket *tk);

/* How many ns the holder of tk must still wait at now_ns (0: go), counting any penalty
 * that came after the reservation. */
int64_t ratelimit_ticket_wait_at(struct ratelimit *rl, const struct ratelimit_ticket *tk,
                                 int64_t now_ns);

/* Gives one reservation back (its holder is not going to send): the next caller gets
 * it. Waiters queued behind it keep their times, so that caller is due with the last of
 * them, as if the bucket had held one more token: the long-run rate is kept. */
void ratelimit_give_back(struct ratelimit *rl);

/* After a 429: no token is valid before now_ns + ms (see the top of this file).
 * ms <= 0 only caps the bucket at one token. */
void ratelimit_penalize_at(struct ratelimit *rl, int64_t now_ns, int ms);

/* CLOCK_MONOTONIC in ns, the clock ratelimit_wait_idle uses (and a penalty's now_ns). */
int64_t ratelimit_now_ns(void);

/* With rl, takes a token, sleeping until it is valid; with rl NULL, pauses ms milliseconds
 * (0: only a look at stop_fds; with rl, ms is not used). stop_fds[0..nfds) (up to
 * RATELIMIT_MAX_FDS; negative ones are ignored) end the wait when one becomes readable (a
 * shutdown pipe): a reservation is given back and the call fails with LERR_CANCELLED; it
 * fails so too, without reserving, when one is already readable. LERR_IO if poll fails.
 * idle, if not NULL, is called with ctx about once a second while it waits: the caller's
 * chance to do housekeeping (lambdo keeps its messages hidden meanwhile). */
#define RATELIMIT_MAX_FDS 4
int ratelimit_wait_idle(struct ratelimit *rl, int ms, const int *stop_fds, size_t nfds,
                        void (*idle)(void *ctx), void *ctx, struct lerr *e);

#endif
