#include "ratelimit.h"

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <string.h>
#include <time.h>

#define NS_PER_S 1000000000LL
/* A wait longer than this (about 290 years) is clamped: it only has to stay an int64_t. */
#define MAX_WAIT_NS (INT64_MAX / 4)

int ratelimit_init(struct ratelimit *rl, double rate, int burst, struct lerr *e)
{
    memset(rl, 0, sizeof *rl);
    if (!isfinite(rate) || !(rate > 0))
        return lerr_set(e, LERR_INVALID, "rate limit: the rate must be a number above 0");
    if (burst < 1)
        return lerr_set(e, LERR_INVALID, "rate limit: the burst must be at least 1");
    pthread_mutex_init(&rl->mu, NULL);  /* with default attributes, it cannot fail */
    rl->rate = rate;
    rl->burst = burst;
    rl->tokens = burst;  /* last_ns 0: any clock reading refills it to exactly full */
    return 0;
}

void ratelimit_destroy(struct ratelimit *rl)
{
    pthread_mutex_destroy(&rl->mu);
}

int64_t ratelimit_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

/* Brings tokens up to now. A time before last_ns (a penalty's future) adds nothing:
 * nothing accrues during a pause. */
static void refill(struct ratelimit *rl, int64_t now)
{
    if (now <= rl->last_ns)
        return;
    rl->tokens += (double)(now - rl->last_ns) * rl->rate / (double)NS_PER_S;
    if (rl->tokens > rl->burst)
        rl->tokens = rl->burst;
    rl->last_ns = now;
}

/* Nanoseconds until a bucket at `tokens` (< 0: a debt) is back to zero, rounded up so a
 * caller never wakes a hair too early. Plain arithmetic rather than ceil(): no libm. */
static int64_t debt_ns(const struct ratelimit *rl, double tokens)
{
    double d;
    int64_t n;

    if (tokens >= 0)
        return 0;
    d = -tokens * (double)NS_PER_S / rl->rate;
    if (d >= (double)MAX_WAIT_NS)
        return MAX_WAIT_NS;
    n = (int64_t)d;
    return n < d ? n + 1 : n;
}

/* Under mu: how long a token ready at `ready` must wait at now; none is valid during a
 * pause. */
static int64_t wait_from(const struct ratelimit *rl, int64_t ready, int64_t now)
{
    if (ready < rl->pause_until_ns)
        ready = rl->pause_until_ns;
    return ready > now ? ready - now : 0;
}

int64_t ratelimit_reserve_at(struct ratelimit *rl, int64_t now_ns, struct ratelimit_ticket *tk)
{
    int64_t ready, wait;

    pthread_mutex_lock(&rl->mu);
    refill(rl, now_ns);
    rl->tokens -= 1;
    ready = rl->last_ns + debt_ns(rl, rl->tokens);
    wait = wait_from(rl, ready, now_ns);
    if (tk) {
        tk->ready_ns = ready > rl->pause_until_ns ? ready : rl->pause_until_ns;
        tk->shift_ns = rl->shift_ns;
    }
    pthread_mutex_unlock(&rl->mu);
    return wait;
}

int64_t ratelimit_ticket_wait_at(struct ratelimit *rl, const struct ratelimit_ticket *tk,
                                 int64_t now_ns)
{
    int64_t wait;

    pthread_mutex_lock(&rl->mu);
    /* every penalty since the reservation pushed the whole queue back by its shift */
    wait = wait_from(rl, tk->ready_ns + (rl->shift_ns - tk->shift_ns), now_ns);
    pthread_mutex_unlock(&rl->mu);
    return wait;
}

void ratelimit_give_back(struct ratelimit *rl)
{
    pthread_mutex_lock(&rl->mu);
    rl->tokens += 1;
    if (rl->tokens > rl->burst)
        rl->tokens = rl->burst;
    pthread_mutex_unlock(&rl->mu);
}

void ratelimit_penalize_at(struct ratelimit *rl, int64_t now_ns, int ms)
{
    int64_t until = now_ns + (ms > 0 ? (int64_t)ms * 1000000 : 0);

    pthread_mutex_lock(&rl->mu);
    refill(rl, now_ns);
    /* the queue (tokens at last_ns) starts again at `until`, order and spacing kept;
     * a pause that ends before the current one changes nothing there */
    if (until > rl->last_ns) {
        rl->shift_ns += until - rl->last_ns;
        rl->last_ns = until;
    }
    if (until > rl->pause_until_ns)
        rl->pause_until_ns = until;
    /* Fly's bucket is empty: restart gently rather than with a burst */
    if (rl->tokens > 1)
        rl->tokens = 1;
    pthread_mutex_unlock(&rl->mu);
}

static int cancelled(const struct ratelimit *rl, struct lerr *e)
{
    return lerr_set(e, LERR_CANCELLED, "stopping: no longer waiting%s",
                    rl ? " for a rate limit token" : "");
}

int ratelimit_wait_idle(struct ratelimit *rl, int ms, const int *stop_fds, size_t nfds,
                        void (*idle)(void *ctx), void *ctx, struct lerr *e)
{
    struct pollfd p[RATELIMIT_MAX_FDS];
    struct ratelimit_ticket tk;
    nfds_t n = 0;
    int64_t wait, end = ratelimit_now_ns() + (int64_t)ms * 1000000;

    if (nfds > RATELIMIT_MAX_FDS)
        return lerr_set(e, LERR_INVALID, "rate limit: at most %d stop fds",
                        RATELIMIT_MAX_FDS);
    for (size_t i = 0; i < nfds; i++)
        if (stop_fds[i] >= 0)
            p[n++] = (struct pollfd){ stop_fds[i], POLLIN, 0 };
    /* a stop that already happened takes nothing, even when a token is free */
    if (n > 0 && poll(p, n, 0) > 0)
        return cancelled(rl, e);
    wait = rl ? ratelimit_reserve_at(rl, ratelimit_now_ns(), &tk) : end - ratelimit_now_ns();
    while (wait > 0) {
        int64_t nap = idle && wait > NS_PER_S ? NS_PER_S : wait;
        struct timespec ts = { (time_t)(nap / NS_PER_S), (long)(nap % NS_PER_S) };
        int r = ppoll(n ? p : NULL, n, &ts, NULL), err = errno;

        if (r > 0 || (r < 0 && err != EINTR)) {
            if (rl)
                ratelimit_give_back(rl);
            return r > 0 ? cancelled(rl, e) : lerr_set(e, LERR_IO, "rate limit: poll: %s",
                                                      strerror(err));
        }
        if (idle)
            idle(ctx);
        /* a penalty may have come while we slept: ask again rather than trust the wait */
        wait = rl ? ratelimit_ticket_wait_at(rl, &tk, ratelimit_now_ns())
                  : end - ratelimit_now_ns();
    }
    return 0;
}
