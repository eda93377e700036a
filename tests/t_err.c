/* err: lerr_set formats, lerr_wrap puts context before the old message and cuts what does
 * not fit (never past the buffer), lerr_kind_name names every kind and "unknown" past them. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "err.h"

static void test_set_and_wrap(void **state)
{
    struct lerr e;

    assert_int_equal(lerr_set(&e, LERR_TIMEOUT, "after %d ms", 300), -1);
    assert_int_equal(lerr_wrap(&e, "connecting to %s", "h:443"), -1);
    assert_int_equal(e.kind, LERR_TIMEOUT);
    assert_string_equal(e.msg, "connecting to h:443: after 300 ms");
    assert_int_equal(lerr_set(NULL, LERR_IO, "x"), -1);
    assert_int_equal(lerr_wrap(NULL, "x"), -1);
    lerr_clear(&e);
    assert_int_equal(e.kind, LERR_NONE);
    assert_string_equal(e.msg, "");
}

/* The context always fits first; the old message gets what is left. */
static void test_wrap_cut(void **state)
{
    char ctx[400], old[400], want[sizeof ctx + sizeof old + 2];
    struct lerr e;

    for (size_t c = 0; c < sizeof ctx - 1; c += 13) {
        for (size_t o = 0; o < sizeof old - 1; o += 29) {
            memset(ctx, 'c', c);
            ctx[c] = '\0';
            memset(old, 'o', o);
            old[o] = '\0';
            lerr_set(&e, LERR_IO, "%s", old);
            lerr_wrap(&e, "%s", ctx);
            if (c + 3 < sizeof e.msg)
                snprintf(want, sizeof want, "%s: %.*s", ctx, (int)sizeof e.msg - 1, old);
            else
                snprintf(want, sizeof want, "%s", ctx);
            want[sizeof e.msg - 1] = '\0';
            assert_string_equal(e.msg, want);
        }
    }
}

static void test_kind_names(void **state)
{
    static const char *const names[] = {
        "none", "nomem", "invalid", "io", "dns", "refused", "connect", "timeout", "closed",
        "tls-untrusted", "tls-name", "tls-alert", "tls", "malformed", "too-large", "cancelled",
        "http",
    };

    /* every kind, in the enum's order */
    for (int k = LERR_NONE; k <= LERR_HTTP; k++)
        assert_string_equal(lerr_kind_name((enum lerr_kind)k), names[k]);
    assert_string_equal(lerr_kind_name(LERR_NONE), "none");
    assert_string_equal(lerr_kind_name(LERR_TLS_UNTRUSTED), "tls-untrusted");
    assert_string_equal(lerr_kind_name(LERR_HTTP), "http");
    assert_string_equal(lerr_kind_name((enum lerr_kind)(LERR_HTTP + 1)), "unknown");
    assert_string_equal(lerr_kind_name((enum lerr_kind)-1), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_and_wrap),
        cmocka_unit_test(test_wrap_cut),
        cmocka_unit_test(test_kind_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
