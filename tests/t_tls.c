/* tls_sessions: the process-wide session cache. Sessions are set into and read from the
 * tls_clients' engines directly, as a handshake would leave them. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tls.h"

static const struct tls_anchors no_anchors;

static struct tls_client *client(void)
{
    struct tls_client *tc = malloc(sizeof *tc);

    assert_non_null(tc);
    tls_client_init(tc, &no_anchors);
    return tc;
}

/* A session whose ID and master secret are all `fill`. */
static struct tls_client *client_with_session(unsigned char fill)
{
    struct tls_client *tc = client();
    br_ssl_session_parameters p = { .session_id_len = 32, .version = BR_TLS12,
                                    .cipher_suite = BR_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 };

    memset(p.session_id, fill, sizeof p.session_id);
    memset(p.master_secret, fill, sizeof p.master_secret);
    br_ssl_engine_set_session_parameters(&tc->cc.eng, &p);
    return tc;
}

/* The first byte of the session ID tc would offer, 0 when it has none. */
static int offered(struct tls_sessions *s, const char *host, unsigned port)
{
    struct tls_client *tc = client();
    br_ssl_session_parameters p;

    tls_sessions_offer(s, tc, host, port);
    br_ssl_engine_get_session_parameters(&tc->cc.eng, &p);
    free(tc);
    if (p.session_id_len == 0)
        return 0;
    assert_int_equal(p.session_id_len, 32);
    assert_int_equal(p.master_secret[47], p.session_id[0]);
    return p.session_id[0];
}

static void keep(struct tls_sessions *s, unsigned char fill, const char *host, unsigned port)
{
    struct tls_client *tc = client_with_session(fill);

    tls_sessions_keep(s, tc, host, port, 1);
    free(tc);
}

static void test_offered_to_the_same_host_and_port_only(void **state)
{
    struct tls_sessions s;

    (void)state;
    tls_sessions_init(&s);
    assert_int_equal(offered(&s, "a.example", 443), 0);
    keep(&s, 0xa1, "a.example", 443);
    assert_int_equal(offered(&s, "a.example", 443), 0xa1);
    assert_int_equal(offered(&s, "b.example", 443), 0);
    assert_int_equal(offered(&s, "a.example", 8443), 0);
    assert_int_equal(offered(&s, "a.example.", 443), 0);
    keep(&s, 0xa2, "a.example", 443);  /* a later session replaces the first */
    assert_int_equal(offered(&s, "a.example", 443), 0xa2);
    keep(&s, 0xb1, "a.example", 8443);
    assert_int_equal(offered(&s, "a.example", 8443), 0xb1);
    assert_int_equal(offered(&s, "a.example", 443), 0xa2);
    tls_sessions_free(&s);
}

/* A client that has a session of its own (its previous connection's) keeps offering it. */
static void test_own_session_is_kept(void **state)
{
    struct tls_sessions s;
    struct tls_client *tc = client_with_session(0x11);
    br_ssl_session_parameters p;

    (void)state;
    tls_sessions_init(&s);
    keep(&s, 0x22, "a.example", 443);
    tls_sessions_offer(&s, tc, "a.example", 443);
    br_ssl_engine_get_session_parameters(&tc->cc.eng, &p);
    assert_int_equal(p.session_id[0], 0x11);
    free(tc);
    tls_sessions_free(&s);
}

/* More servers than slots: the oldest server's session goes first. */
static void test_more_servers_than_slots(void **state)
{
    struct tls_sessions s;
    char host[16];

    (void)state;
    tls_sessions_init(&s);
    for (int i = 0; i <= TLS_SESSIONS_MAX; i++) {
        snprintf(host, sizeof host, "h%d", i);
        keep(&s, (unsigned char)(0x30 + i), host, 443);
    }
    for (int i = 1; i <= TLS_SESSIONS_MAX; i++) {
        snprintf(host, sizeof host, "h%d", i);
        assert_int_equal(offered(&s, host, 443), 0x30 + i);
    }
    assert_int_equal(offered(&s, "h0", 443), 0);
    tls_sessions_free(&s);
}

static void test_free_wipes_the_master_secrets(void **state)
{
    struct tls_sessions s;
    unsigned char secret[48];

    (void)state;
    memset(secret, 0xc7, sizeof secret);
    tls_sessions_init(&s);
    keep(&s, 0xc7, "a.example", 443);
    assert_non_null(memmem(&s, sizeof s, secret, sizeof secret));
    tls_sessions_free(&s);
    assert_null(memmem(&s, sizeof s, secret, sizeof secret));
}

/* ---- the first handshake with a server goes alone ---- */

struct waiter {
    struct tls_sessions *s;
    int got;           /* the first byte of the session ID it was given */
    long long ms;      /* how long it waited */
    int done;
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* offered(), and how long it took in *ms */
static int offered_timed(struct tls_sessions *s, const char *host, long long *ms)
{
    long long t0 = now_ms();
    int got = offered(s, host, 443);

    *ms = now_ms() - t0;
    return got;
}

static void *wait_offer(void *arg)
{
    struct waiter *w = arg;

    w->got = offered_timed(w->s, "a.example", &w->ms);
    __atomic_store_n(&w->done, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };
    nanosleep(&ts, NULL);
}

/* A second connection waits for the first one's handshake, then resumes its session. */
static void test_second_connection_waits_for_the_first(void **state)
{
    struct tls_sessions s;
    struct waiter w = { &s, -1, 0, 0 };
    pthread_t t;

    (void)state;
    tls_sessions_init(&s);
    assert_int_equal(offered(&s, "a.example", 443), 0);  /* the first: in flight now */
    assert_int_equal(pthread_create(&t, NULL, wait_offer, &w), 0);
    sleep_ms(200);
    assert_int_equal(__atomic_load_n(&w.done, __ATOMIC_SEQ_CST), 0);
    keep(&s, 0x55, "a.example", 443);
    pthread_join(t, NULL);
    assert_int_equal(w.got, 0x55);
    /* another server's handshake did not wait */
    assert_int_equal(offered(&s, "b.example", 443), 0);
    tls_sessions_free(&s);
}

/* Only the very first handshake with a server is waited for. A waiter goes on without a
 * session when that handshake fails, or after TLS_SESSIONS_WAIT_S; after a failed first
 * handshake, or one with a server that gave no session ID, later handshakes do not wait
 * (they would otherwise go one at a time). */
static void test_failed_or_slow_first_handshake(void **state)
{
    struct tls_sessions s;
    struct waiter w = { &s, -1, 0, 0 };
    struct tls_client *tc = client();
    pthread_t t;
    long long ms;

    (void)state;
    tls_sessions_init(&s);
    assert_int_equal(offered(&s, "a.example", 443), 0);
    assert_int_equal(pthread_create(&t, NULL, wait_offer, &w), 0);
    sleep_ms(100);
    tls_sessions_keep(&s, tc, "a.example", 443, 0);
    pthread_join(t, NULL);
    assert_int_equal(w.got, 0);
    assert_true(w.ms < TLS_SESSIONS_WAIT_S * 1000);
    /* nothing in flight is waited for now: a second and a third go at once */
    assert_int_equal(offered(&s, "a.example", 443), 0);
    assert_int_equal(offered_timed(&s, "a.example", &ms), 0);
    assert_true(ms < TLS_SESSIONS_WAIT_S * 1000 / 2);
    /* a server that gives no session ID (tc has none): no waiting after its first */
    assert_int_equal(offered(&s, "b.example", 443), 0);
    tls_sessions_keep(&s, tc, "b.example", 443, 1);
    assert_int_equal(offered_timed(&s, "b.example", &ms), 0);
    assert_true(ms < TLS_SESSIONS_WAIT_S * 1000 / 2);
    /* a first handshake that never ends is waited for TLS_SESSIONS_WAIT_S, no more */
    assert_int_equal(offered(&s, "c.example", 443), 0);
    assert_int_equal(offered_timed(&s, "c.example", &ms), 0);
    assert_true(ms >= TLS_SESSIONS_WAIT_S * 1000 - 10);
    free(tc);
    tls_sessions_free(&s);
}

/* NULL: no sharing (the tools and the cli), and nothing offered. */
static void test_null_cache_does_nothing(void **state)
{
    struct tls_client *tc = client_with_session(0x44);

    (void)state;
    tls_sessions_keep(NULL, tc, "a.example", 443, 1);
    assert_int_equal(offered(NULL, "a.example", 443), 0);
    free(tc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_offered_to_the_same_host_and_port_only),
        cmocka_unit_test(test_own_session_is_kept),
        cmocka_unit_test(test_more_servers_than_slots),
        cmocka_unit_test(test_free_wipes_the_master_secrets),
        cmocka_unit_test(test_null_cache_does_nothing),
        cmocka_unit_test(test_second_connection_waits_for_the_first),
        cmocka_unit_test(test_failed_or_slow_first_handshake),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
