/* ratelimit: the token bucket's pure core on a fake clock (burst, then the steady rate;
 * reservations queue in arrival order; a penalty pauses everyone and pushes the queue
 * back in order; a cancelled reservation comes back), then ratelimit_wait_idle on the real
 * clock: stop fds, many threads, a penalty arriving while a thread waits. Timing
 * assertions are lower bounds only: a slow machine never fails them. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ratelimit.h"

#define MS 1000000LL
#define S 1000000000LL
#define T0 (5 * S)   /* the fake clock's start: any time after the bucket's creation */

static void assert_near(int64_t got, int64_t want, const char *what)
{
    /* the bucket counts in doubles: a nanosecond of rounding either way is fine */
    if (got < want - 1 || got > want + 1)
        fail_msg("%s: %lld ns, want %lld", what, (long long)got, (long long)want);
}

static void init(struct ratelimit *rl, double rate, int burst)
{
    struct lerr e = { 0 };

    if (ratelimit_init(rl, rate, burst, &e) != 0)
        fail_msg("ratelimit_init: %s", e.msg);
}

/* ratelimit_wait_idle with a bucket, one stop fd and no idle callback (what ratelimit_take
 * was). */
static int take(struct ratelimit *rl, int stop_fd, struct lerr *e)
{
    return ratelimit_wait_idle(rl, 0, &stop_fd, 1, NULL, NULL, e);
}

static void test_init_invalid(void **state)
{
    static const struct { double rate; int burst; } bad[] = {
        { 0, 1 }, { -1, 1 }, { 1, 0 }, { 1, -3 },
    };
    struct ratelimit rl;
    struct lerr e = { 0 };

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(ratelimit_init(&rl, bad[i].rate, bad[i].burst, &e), -1);
        assert_int_equal(e.kind, LERR_INVALID);
    }
    assert_int_equal(ratelimit_init(&rl, NAN, 1, &e), -1);
    assert_int_equal(ratelimit_init(&rl, INFINITY, 1, &e), -1);
    init(&rl, 0.001, 1);
    assert_int_equal(rl.burst, 1);
    ratelimit_destroy(&rl);
}

/* Full at the start: `burst` go at once, then one every 1/rate. */
static void test_burst_then_steady(void **state)
{
    struct ratelimit rl;

    init(&rl, 10, 3);  /* one token every 100 ms */
    for (int i = 0; i < 3; i++)
        assert_int_equal(ratelimit_reserve_at(&rl, T0, NULL), 0);
    assert_near(ratelimit_reserve_at(&rl, T0, NULL), 100 * MS, "4th");
    assert_near(ratelimit_reserve_at(&rl, T0, NULL), 200 * MS, "5th");

    /* long after: full again, but never more than the burst */
    for (int i = 0; i < 3; i++)
        assert_int_equal(ratelimit_reserve_at(&rl, T0 + 60 * S, NULL), 0);
    assert_near(ratelimit_reserve_at(&rl, T0 + 60 * S, NULL), 100 * MS, "after refill");

    /* callers that come at the rate never wait: the 4th above holds 60 s + 100 ms */
    for (int k = 2; k <= 50; k++)
        assert_int_equal(ratelimit_reserve_at(&rl, T0 + 60 * S + k * 100 * MS, NULL), 0);
    /* a second one at the same instant waits a full interval */
    assert_near(ratelimit_reserve_at(&rl, T0 + 60 * S + 50 * 100 * MS, NULL), 100 * MS,
                "two at once");
    ratelimit_destroy(&rl);
}

/* Reservations queue in arrival order, each one interval after the one before, whoever
 * arrives when. */
static void test_fair_order(void **state)
{
    struct ratelimit rl;
    struct ratelimit_ticket tk[8];

    init(&rl, 2, 1);  /* one every 500 ms */
    for (int i = 0; i < 5; i++)
        assert_near(ratelimit_reserve_at(&rl, T0, &tk[i]), i * 500 * MS, "queued");
    /* a late arrival is behind all of them, whatever the time it comes at */
    assert_near(ratelimit_reserve_at(&rl, T0 + 100 * MS, &tk[5]), 2400 * MS, "late");
    assert_near(tk[5].ready_ns, T0 + 2500 * MS, "late's time");
    for (int i = 0; i < 5; i++) {
        assert_near(tk[i].ready_ns, T0 + i * 500 * MS, "ticket");
        assert_int_equal(ratelimit_ticket_wait_at(&rl, &tk[i], tk[i].ready_ns), 0);
        assert_near(ratelimit_ticket_wait_at(&rl, &tk[i], T0), i * 500 * MS, "ticket wait");
    }
    /* once the queue has drained, the bucket refills from empty */
    assert_near(ratelimit_reserve_at(&rl, T0 + 3000 * MS, NULL), 0, "drained");
    assert_near(ratelimit_reserve_at(&rl, T0 + 3000 * MS, NULL), 500 * MS, "then empty");
    ratelimit_destroy(&rl);
}

/* A penalty: nobody before its end, the queue pushed back in order, no burst after. */
static void test_penalize(void **state)
{
    struct ratelimit rl;
    struct ratelimit_ticket d, e, f;
    int64_t pen = T0 + 50 * MS, until = pen + 1000 * MS;

    init(&rl, 10, 3);
    for (int i = 0; i < 3; i++)
        ratelimit_reserve_at(&rl, T0, NULL);
    assert_near(ratelimit_reserve_at(&rl, T0, &d), 100 * MS, "d");
    assert_near(ratelimit_reserve_at(&rl, T0, &e), 200 * MS, "e");
    ratelimit_penalize_at(&rl, pen, 1000);
    /* d and e keep their order and spacing, after the pause */
    assert_near(ratelimit_ticket_wait_at(&rl, &d, pen), until + 50 * MS - pen, "d after");
    assert_near(ratelimit_ticket_wait_at(&rl, &e, pen), until + 150 * MS - pen, "e after");
    /* a newcomer queues behind them */
    assert_near(ratelimit_reserve_at(&rl, pen + 10 * MS, &f), until + 250 * MS - pen - 10 * MS,
                "newcomer");
    assert_true(f.ready_ns > until);
    /* a shorter penalty on top changes nothing; a longer one moves everyone again */
    ratelimit_penalize_at(&rl, pen + 20 * MS, 500);
    assert_near(ratelimit_ticket_wait_at(&rl, &d, pen), until + 50 * MS - pen, "d unchanged");
    ratelimit_penalize_at(&rl, pen + 20 * MS, 2000);
    assert_near(ratelimit_ticket_wait_at(&rl, &d, pen + 20 * MS),
                (pen + 20 * MS + 2000 * MS) + 50 * MS - (pen + 20 * MS), "d moved again");
    assert_true(ratelimit_ticket_wait_at(&rl, &f, 0) > ratelimit_ticket_wait_at(&rl, &e, 0));
    ratelimit_destroy(&rl);

    /* a full bucket: the first goes when the pause ends, the rest at the rate */
    init(&rl, 10, 5);
    ratelimit_penalize_at(&rl, T0, 500);
    assert_near(ratelimit_reserve_at(&rl, T0 + 1 * MS, NULL), 499 * MS, "first after pause");
    assert_near(ratelimit_reserve_at(&rl, T0 + 1 * MS, NULL), 599 * MS, "no burst");
    assert_near(ratelimit_reserve_at(&rl, T0 + 1 * MS, NULL), 699 * MS, "no burst 2");
    /* nothing accrued during the pause; after it, the rate is back */
    assert_int_equal(ratelimit_reserve_at(&rl, T0 + 10 * S, NULL), 0);
    ratelimit_destroy(&rl);

    /* Retry-After: 0 only takes the burst away */
    init(&rl, 10, 5);
    ratelimit_penalize_at(&rl, T0, 0);
    assert_int_equal(ratelimit_reserve_at(&rl, T0, NULL), 0);
    assert_near(ratelimit_reserve_at(&rl, T0, NULL), 100 * MS, "capped");
    ratelimit_destroy(&rl);
}

/* A reservation given back goes to the next caller; those queued keep their times. */
static void test_give_back(void **state)
{
    struct ratelimit rl;
    struct ratelimit_ticket b, c;

    init(&rl, 1, 1);
    assert_int_equal(ratelimit_reserve_at(&rl, T0, NULL), 0);
    assert_near(ratelimit_reserve_at(&rl, T0, &b), 1 * S, "b");
    assert_near(ratelimit_reserve_at(&rl, T0, &c), 2 * S, "c");
    ratelimit_give_back(&rl);          /* b gives up */
    assert_near(ratelimit_ticket_wait_at(&rl, &c, T0), 2 * S, "c keeps its time");
    /* the newcomer has b's token: due with c, as if the bucket had held one more */
    assert_near(ratelimit_reserve_at(&rl, T0, NULL), 2 * S, "newcomer");
    assert_near(ratelimit_reserve_at(&rl, T0, NULL), 3 * S, "and the next after");
    ratelimit_destroy(&rl);

    /* never above the burst */
    init(&rl, 1, 2);
    ratelimit_give_back(&rl);
    ratelimit_give_back(&rl);
    assert_true(rl.tokens <= 2.0);
    assert_int_equal(ratelimit_reserve_at(&rl, T0, NULL), 0);
    assert_int_equal(ratelimit_reserve_at(&rl, T0, NULL), 0);
    assert_near(ratelimit_reserve_at(&rl, T0, NULL), 1 * S, "burst 2");
    ratelimit_destroy(&rl);
}

/* ---- the real clock ------------------------------------------------------------------ */

struct writer {
    int fd;
    int delay_ms;
};

static void *write_later(void *arg)
{
    struct writer *w = arg;
    struct timespec ts = { w->delay_ms / 1000, (long)(w->delay_ms % 1000) * MS };

    nanosleep(&ts, NULL);
    if (write(w->fd, "x", 1) != 1)
        fail_msg("write");
    return NULL;
}

static void test_take_cancel(void **state)
{
    struct ratelimit rl;
    struct lerr e = { 0 };
    int pipefd[2];
    pthread_t th;
    struct writer w;
    double before;

    assert_int_equal(pipe(pipefd), 0);
    init(&rl, 0.001, 1);  /* after the first token, the next is 1000 s away */
    assert_int_equal(take(&rl, pipefd[0], &e), 0);
    before = rl.tokens;
    w = (struct writer){ pipefd[1], 100 };
    assert_int_equal(pthread_create(&th, NULL, write_later, &w), 0);
    assert_int_equal(take(&rl, pipefd[0], &e), -1);
    pthread_join(th, NULL);
    assert_int_equal(e.kind, LERR_CANCELLED);
    assert_string_equal(e.msg, "stopping: no longer waiting for a rate limit token");
    /* the reservation came back: the bucket is where it was (plus a tiny refill) */
    assert_true(rl.tokens >= before && rl.tokens < before + 0.01);

    /* a stop already there: nothing reserved, even with a token free */
    ratelimit_destroy(&rl);
    init(&rl, 1, 3);
    assert_int_equal(take(&rl, pipefd[0], &e), -1);
    assert_int_equal(e.kind, LERR_CANCELLED);
    assert_true(rl.tokens == 3.0);
    /* without a stop fd, or with a negative one among several, it just takes */
    assert_int_equal(take(&rl, -1, &e), 0);
    {
        int fds[3] = { -1, -1, -1 };
        assert_int_equal(ratelimit_wait_idle(&rl, 0, fds, 3, NULL, NULL, &e), 0);
        fds[1] = pipefd[0];
        assert_int_equal(ratelimit_wait_idle(&rl, 0, fds, 3, NULL, NULL, &e), -1);
        assert_int_equal(e.kind, LERR_CANCELLED);
        assert_int_equal(ratelimit_wait_idle(&rl, 0, fds, RATELIMIT_MAX_FDS + 1, NULL, NULL,
                                             &e), -1);
        assert_int_equal(e.kind, LERR_INVALID);
    }
    ratelimit_destroy(&rl);
    close(pipefd[0]);
    close(pipefd[1]);
}

#define THREADS 8
#define TAKES 50

struct taker {
    struct ratelimit *rl;
    int failures;
};

static void *take_many(void *arg)
{
    struct taker *k = arg;
    struct lerr e = { 0 };

    for (int i = 0; i < TAKES; i++)
        if (take(k->rl, -1, &e) != 0)
            k->failures++;
    return NULL;
}

/* 400 takes at 1000/s with a burst of 10 cannot end before (400 - 10) / 1000 s. */
static void test_take_threads(void **state)
{
    struct ratelimit rl;
    pthread_t th[THREADS];
    struct taker k[THREADS];
    int64_t t0, t1;

    init(&rl, 1000, 10);
    t0 = ratelimit_now_ns();
    for (int i = 0; i < THREADS; i++) {
        k[i] = (struct taker){ &rl, 0 };
        assert_int_equal(pthread_create(&th[i], NULL, take_many, &k[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    t1 = ratelimit_now_ns();
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(k[i].failures, 0);
    if (t1 - t0 < (THREADS * TAKES - 10) * MS)
        fail_msg("%d takes in %lld ms: faster than the rate allows", THREADS * TAKES,
                 (long long)((t1 - t0) / MS));
    /* every token was taken, none given twice: the debt is what the clock has not paid */
    assert_true(rl.tokens <= 10.0);
    ratelimit_destroy(&rl);
}

struct penalized {
    struct ratelimit *rl;
    int rc;
    int64_t done_ns;
};

static void *take_once(void *arg)
{
    struct penalized *p = arg;
    struct lerr e = { 0 };

    p->rc = take(p->rl, -1, &e);
    p->done_ns = ratelimit_now_ns();
    return NULL;
}

/* A penalty that comes while a thread sleeps for its token keeps it waiting. */
static void test_take_penalized_while_waiting(void **state)
{
    struct ratelimit rl;
    struct lerr e = { 0 };
    struct penalized p;
    pthread_t th;
    struct timespec pause = { 0, 100 * MS };
    int64_t pen;

    init(&rl, 2, 1);  /* after the first, one every 500 ms */
    assert_int_equal(take(&rl, -1, &e), 0);
    p = (struct penalized){ &rl, -2, 0 };
    assert_int_equal(pthread_create(&th, NULL, take_once, &p), 0);
    nanosleep(&pause, NULL);
    pen = ratelimit_now_ns();
    ratelimit_penalize_at(&rl, pen, 1000);
    pthread_join(th, NULL);
    assert_int_equal(p.rc, 0);
    if (p.done_ns < pen + 1000 * MS)
        fail_msg("took its token %lld ms after a 1000 ms penalty",
                 (long long)((p.done_ns - pen) / MS));
    ratelimit_destroy(&rl);
}

static void count_idle(void *ctx)
{
    (*(int *)ctx)++;
}

/* A long wait for a token calls the idle hook about once a second (lambdo keeps its
 * messages hidden from there), and still waits the whole time. */
static void test_take_idle(void **state)
{
    struct ratelimit rl;
    struct lerr e;
    int calls = 0;
    int64_t t0;

    assert_int_equal(ratelimit_init(&rl, 0.4, 1, &e), 0);
    assert_int_equal(ratelimit_wait_idle(&rl, 0, NULL, 0, count_idle, &calls, &e), 0);
    assert_int_equal(calls, 0); /* the burst token: no wait, no idle call */
    t0 = ratelimit_now_ns();
    assert_int_equal(ratelimit_wait_idle(&rl, 0, NULL, 0, count_idle, &calls, &e), 0);
    assert_true(ratelimit_now_ns() - t0 >= 2400000000LL);
    assert_true(calls >= 2);
    ratelimit_destroy(&rl);
}

/* Without a bucket, a plain pause: the whole of it, the idle hook about once a second, and
 * a stop ends it at once (a stop already there: not even started). */
static void test_pause(void **state)
{
    struct lerr e = { 0 };
    int calls = 0, pipefd[2];
    pthread_t th;
    struct writer w;
    int64_t t0 = ratelimit_now_ns();

    assert_int_equal(ratelimit_wait_idle(NULL, 1500, NULL, 0, count_idle, &calls, &e), 0);
    assert_true(ratelimit_now_ns() - t0 >= 1500000000LL);
    assert_true(calls >= 1);
    assert_int_equal(ratelimit_wait_idle(NULL, 0, NULL, 0, NULL, NULL, &e), 0);
    assert_int_equal(pipe(pipefd), 0);
    w = (struct writer){ pipefd[1], 100 };
    assert_int_equal(pthread_create(&th, NULL, write_later, &w), 0);
    t0 = ratelimit_now_ns();
    assert_int_equal(ratelimit_wait_idle(NULL, 60000, pipefd, 1, NULL, NULL, &e), -1);
    pthread_join(th, NULL);
    assert_int_equal(e.kind, LERR_CANCELLED);
    assert_string_equal(e.msg, "stopping: no longer waiting");
    assert_true(ratelimit_now_ns() - t0 < 30000000000LL);
    assert_int_equal(ratelimit_wait_idle(NULL, 0, pipefd, 1, NULL, NULL, &e), -1);
    assert_int_equal(e.kind, LERR_CANCELLED);
    close(pipefd[0]);
    close(pipefd[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_invalid),
        cmocka_unit_test(test_take_idle),
        cmocka_unit_test(test_pause),
        cmocka_unit_test(test_burst_then_steady),
        cmocka_unit_test(test_fair_order),
        cmocka_unit_test(test_penalize),
        cmocka_unit_test(test_give_back),
        cmocka_unit_test(test_take_cancel),
        cmocka_unit_test(test_take_threads),
        cmocka_unit_test(test_take_penalized_while_waiting),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
