/* pool: the warm pool's bookkeeping without a network. Which Machine a job gets (a HELD one
 * first, then the IDLE one freed last, never a skipped one before its time, never a BUSY
 * one), when a slot to create is given (below LAMBDO_POOL per key, creates in flight
 * counted), waiting until a Machine comes free or the job stops, waiters that keep a
 * lease, adoption of listed Machines, and reaping of idle and unclaimed HELD ones. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "pool.h"

#define KA "aaaaaaaaaaaaaaaa"
#define KB "bbbbbbbbbbbbbbbb"

static int64_t fake_now = 100000;

static int64_t clock_fake(void)
{
    return fake_now;
}

static int idle_calls;

static int idle_stop_after_one(void *ctx)
{
    (void)ctx;
    return ++idle_calls >= 1;
}

static void init(struct pool *p, int per_key)
{
    pool_init(p, per_key);
}

/* Takes a Machine (or a create slot) for key; fails the test if it would wait. */
static struct pool_machine *take(struct pool *p, const char *key, enum pool_take want)
{
    struct pool_machine *m = NULL;

    idle_calls = 0;
    assert_int_equal(pool_acquire(p, key, clock_fake, idle_stop_after_one, NULL, &m), want);
    if (want != POOL_TAKE_STOP)
        assert_non_null(m);
    return m;
}

/* A Machine of key with this id, listed by Fly (IDLE, freed now). */
static struct pool_machine *add(struct pool *p, const char *key, const char *id)
{
    struct fly_pool_machine l = { 0 };

    snprintf(l.id, sizeof l.id, "%s", id);
    snprintf(l.pool_key, sizeof l.pool_key, "%s", key);
    assert_int_equal(pool_adopt(p, &l, 1, fake_now), 1);
    assert_string_equal(p->list->id, id);
    assert_int_equal(p->list->state, POOL_IDLE);
    return p->list;
}

static void test_creates_up_to_per_key_then_waits(void **state)
{
    struct pool p;
    struct pool_machine *a, *b;

    (void)state;
    init(&p, 2);
    a = take(&p, KA, POOL_TAKE_CREATE);
    assert_string_equal(a->id, "");
    assert_int_equal(a->state, POOL_BUSY);
    b = take(&p, KA, POOL_TAKE_CREATE);  /* a's create is still in flight: counted */
    assert_ptr_not_equal(a, b);
    add(&p, KB, "m-b");          /* a list adopted b's Machine before its answer came */
    pool_created(&p, b, "m-b");
    assert_string_equal(b->id, "m-b");
    assert_ptr_equal(take(&p, KB, POOL_TAKE_CREATE)->next, b);  /* the duplicate is gone */
    take(&p, KA, POOL_TAKE_STOP);        /* at LAMBDO_POOL for KA: waits, then stops */
    assert_int_equal(idle_calls, 1);
    take(&p, KB, POOL_TAKE_CREATE);      /* another key has its own N */
    pool_drop(&p, a);                    /* a failed create frees its slot */
    take(&p, KA, POOL_TAKE_CREATE);
    pool_destroy(&p);
}

static void test_takes_the_one_freed_last(void **state)
{
    struct pool p;
    struct pool_machine *m1, *m2, *m;
    int idle, busy;

    (void)state;
    init(&p, 3);
    m1 = add(&p, KA, "m1");
    fake_now += 1000;
    m2 = add(&p, KA, "m2");
    m = take(&p, KA, POOL_TAKE_MACHINE);
    assert_ptr_equal(m, m2);
    assert_int_equal(m->state, POOL_BUSY);
    pool_counts(&p, &idle, &busy);
    assert_int_equal(idle, 1);
    assert_int_equal(busy, 1);
    assert_ptr_equal(take(&p, KA, POOL_TAKE_MACHINE), m1);
    /* both busy, one slot left: a third job creates */
    take(&p, KA, POOL_TAKE_CREATE);
    pool_destroy(&p);
}

static void test_held_first_and_skipped_later(void **state)
{
    struct pool p;
    struct pool_machine *m1, *m2, *m;

    (void)state;
    init(&p, 2);
    m1 = add(&p, KA, "m1");
    m2 = add(&p, KA, "m2");  /* freed last */
    assert_ptr_equal(take(&p, KA, POOL_TAKE_MACHINE), m2);
    assert_ptr_equal(take(&p, KA, POOL_TAKE_MACHINE), m1);
    strcpy(m1->nonce, "n1");
    pool_put(&p, m1, fake_now);  /* HELD: its lease kept */
    assert_int_equal(m1->state, POOL_HELD);
    pool_put(&p, m2, fake_now);  /* freed after m1, but m1 is HELD */
    m = take(&p, KA, POOL_TAKE_MACHINE);
    assert_ptr_equal(m, m1);
    assert_string_equal(m->nonce, "n1");
    /* another lambdo holds m1: skipped for a while, nonce gone */
    pool_skip(&p, m1, fake_now + 2000);
    assert_string_equal(m1->nonce, "");
    assert_ptr_equal(take(&p, KA, POOL_TAKE_MACHINE), m2);
    take(&p, KA, POOL_TAKE_STOP);  /* m1 skipped, m2 busy, the key at 2 */
    fake_now += 2000;
    assert_ptr_equal(take(&p, KA, POOL_TAKE_MACHINE), m1);
    pool_destroy(&p);
}

struct waiter {
    struct pool *p;
    struct pool_machine *got;
    enum pool_take t;
};

static int idle_never(void *ctx)
{
    (void)ctx;
    return 0;
}

static void *wait_thread(void *arg)
{
    struct waiter *w = arg;

    w->t = pool_acquire(w->p, KA, clock_fake, idle_never, NULL, &w->got);
    return NULL;
}

/* A job at N waits; pool_wanted says so, so the finishing job keeps its lease for it, and
 * the waiter gets that Machine, HELD, when it is put back. */
static void test_waiter_gets_the_held_machine(void **state)
{
    struct pool p;
    struct pool_machine *m;
    struct waiter w = { &p, NULL, POOL_TAKE_STOP };
    pthread_t t;

    (void)state;
    init(&p, 1);
    add(&p, KA, "m1");
    m = take(&p, KA, POOL_TAKE_MACHINE);
    assert_int_equal(pool_wanted(&p, KA), 0);
    assert_int_equal(pthread_create(&t, NULL, wait_thread, &w), 0);
    for (int i = 0; i < 500 && !pool_wanted(&p, KA); i++)
        usleep(10000);
    assert_int_equal(pool_wanted(&p, KA), 1);
    assert_int_equal(pool_wanted(&p, KB), 0);
    strcpy(m->nonce, "kept");
    pool_put(&p, m, fake_now);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(w.t, POOL_TAKE_MACHINE);
    assert_ptr_equal(w.got, m);
    assert_string_equal(w.got->nonce, "kept");
    assert_int_equal(pool_wanted(&p, KA), 0);  /* the waiter left the list */
    pool_destroy(&p);
}

static void test_adopt(void **state)
{
    struct fly_pool_machine list[3] = {
        { .id = "m1", .pool_key = KA },
        { .id = "m2", .pool_key = KB },
        { .id = "bad", .pool_key = "short" },  /* not a key lambdo writes */
    };
    struct pool p;
    struct pool_machine *m;

    (void)state;
    init(&p, 1);
    assert_int_equal(pool_adopt(&p, list, 3, fake_now), 2);
    assert_int_equal(pool_adopt(&p, list, 3, fake_now), 0);  /* known already */
    m = take(&p, KA, POOL_TAKE_MACHINE);
    assert_string_equal(m->id, "m1");
    assert_string_equal(m->nonce, "");  /* to be leased */
    take(&p, KA, POOL_TAKE_STOP);       /* adopted Machines count toward N */
    assert_string_equal(take(&p, KB, POOL_TAKE_MACHINE)->id, "m2");
    pool_destroy(&p);
}

static void test_reap(void **state)
{
    struct pool p;
    struct pool_machine *m1, *m2, *busy, *m;

    (void)state;
    init(&p, 3);
    m1 = add(&p, KA, "m1");
    busy = add(&p, KA, "busy");
    assert_ptr_equal(take(&p, KA, POOL_TAKE_MACHINE), busy);
    m2 = add(&p, KB, "m2");
    strcpy(m2->nonce, "n");
    assert_ptr_equal(take(&p, KB, POOL_TAKE_MACHINE), m2);
    pool_put(&p, m2, fake_now);  /* HELD */
    assert_null(pool_reap(&p, fake_now + 4999, 60000));
    /* a HELD one nobody took gives its lease up after 5 s, long before the idle time */
    assert_ptr_equal(pool_reap(&p, fake_now + 5000, 60000), m2);
    assert_int_equal(m2->state, POOL_BUSY);
    m2->nonce[0] = '\0';
    pool_put(&p, m2, fake_now);
    assert_null(pool_reap(&p, fake_now + 59999, 60000));
    m = pool_reap(&p, fake_now + 60000, 60000);
    assert_true(m == m1 || m == m2);
    assert_int_equal(m->state, POOL_BUSY);
    pool_drop(&p, m);
    assert_non_null(pool_reap(&p, fake_now + 60000, 60000));
    assert_null(pool_reap(&p, fake_now + 60000, 60000));  /* busy is never reaped */
    pool_destroy(&p);
}

/* A Machine the reaper could not lease (another lambdo holds it) is skipped: pool_reap leaves
 * it alone until then, or pool_maintain would take it again at once, and again. */
static void test_reap_leaves_a_skipped_one(void **state)
{
    struct pool p;
    struct pool_machine *m;

    (void)state;
    init(&p, 1);
    add(&p, KA, "m1");
    m = pool_reap(&p, fake_now + 60000, 60000);
    assert_non_null(m);
    pool_skip(&p, m, fake_now + 120000);
    assert_null(pool_reap(&p, fake_now + 60000, 60000));
    assert_ptr_equal(pool_reap(&p, fake_now + 120000, 60000), m);
    pool_destroy(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_creates_up_to_per_key_then_waits),
        cmocka_unit_test(test_takes_the_one_freed_last),
        cmocka_unit_test(test_held_first_and_skipped_later),
        cmocka_unit_test(test_waiter_gets_the_held_machine),
        cmocka_unit_test(test_adopt),
        cmocka_unit_test(test_reap),
        cmocka_unit_test(test_reap_leaves_a_skipped_one),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
