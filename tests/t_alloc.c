/* alloc.c, the musl build's malloc, included here under the names t_malloc, t_free...
 * (the test itself runs on the system's malloc): every class boundary, reuse of freed
 * blocks, unmapping of big ones, realloc's copies, calloc of a dirty block, overflow,
 * aligned_alloc, and threads. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define ALLOC_NAME(f) t_##f
#include "alloc.c"

#define LARGEST ALLOC_LARGEST

static void fill(unsigned char *p, size_t n, unsigned char seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(seed + i * 7);
}

static int holds(const unsigned char *p, size_t n, unsigned char seed)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(seed + i * 7))
            return 0;
    return 1;
}

static int mapped(void *p)
{
    unsigned char vec;
    uintptr_t page = (uintptr_t)p & ~(uintptr_t)4095;
    return mincore((void *)page, 1, &vec) == 0;
}

/* Each size below, at and above every class boundary, and big ones: every byte writable,
 * no two blocks sharing one (each keeps its own pattern while the others are written). */
static void every_boundary(void **state)
{
    size_t sizes[64], n = 0;
    void *p[64];

    sizes[n++] = 0;
    sizes[n++] = 1;
    for (int s = 5; s <= 17; s++) { /* the classes: 32 B to 128 KiB, header included */
        sizes[n++] = ((size_t)1 << s) - ALLOC_HDR;
        sizes[n++] = ((size_t)1 << s) - ALLOC_HDR + 1;
    }
    sizes[n++] = (size_t)1 << 20;
    sizes[n++] = (size_t)10 << 20;
    assert_int_equal(sizes[n - 3], LARGEST + 1);
    for (size_t i = 0; i < n; i++) {
        p[i] = t_malloc(sizes[i]);
        assert_non_null(p[i]);
        assert_int_equal((uintptr_t)p[i] % 16, 0);
        assert_true(t_malloc_usable_size(p[i]) >= sizes[i]);
        fill(p[i], sizes[i], (unsigned char)i);
    }
    for (size_t i = 0; i < n; i++) {
        assert_true(holds(p[i], sizes[i], (unsigned char)i));
        t_free(p[i]);
    }
    t_free(NULL);
    assert_int_equal(t_malloc_usable_size(NULL), 0);
}

static void zero_is_unique(void **state)
{
    void *a = t_malloc(0), *b = t_malloc(0);
    assert_non_null(a);
    assert_non_null(b);
    assert_ptr_not_equal(a, b);
    t_free(a);
    t_free(b);
}

static void freed_block_is_reused(void **state)
{
    void *p = t_malloc(100);
    t_free(p);
    void *q = t_malloc(60); /* 60 + 16 bytes: the same 128-byte class */
    assert_ptr_equal(q, p);
    t_free(q);
}

static void big_block_is_unmapped(void **state)
{
    char *p = t_malloc(LARGEST + 1);
    assert_non_null(p);
    p[0] = 1;
    assert_true(mapped(p));
    t_free(p);
    assert_false(mapped(p));
    assert_int_equal(errno, ENOMEM);

    char *small = t_malloc(LARGEST); /* a class block stays mapped after free */
    t_free(small);
    assert_true(mapped(small));
}

static void realloc_keeps_contents(void **state)
{
    /* Growing through classes, into a mapping, mapping to bigger mapping, smaller mapping,
     * then shrinking back into a class block. */
    static const size_t steps[] = { 20, 100, 5000, LARGEST, LARGEST + 1, 3u << 20, 200000, 1000, 10 };
    size_t kept = 20;
    unsigned char *p = t_realloc(NULL, 20);
    assert_non_null(p);
    fill(p, 20, 3);
    for (size_t i = 1; i < sizeof steps / sizeof *steps; i++) {
        unsigned char *old = p;
        p = t_realloc(p, steps[i]);
        assert_non_null(p);
        kept = kept < steps[i] ? kept : steps[i];
        assert_true(holds(p, kept, 3));
        fill(p, steps[i], 3);
        if (steps[i - 1] > LARGEST && steps[i] <= LARGEST) /* out of its mapping: unmapped */
            assert_false(mapped(old));
        kept = steps[i];
    }
    /* Shrinking a class block keeps it where it is; realloc to 0 keeps a block. */
    unsigned char *q = t_malloc(1000);
    fill(q, 1000, 5);
    assert_ptr_equal(t_realloc(q, 10), q);
    assert_true(holds(q, 10, 5));
    assert_non_null(q = t_realloc(q, 0));
    t_free(q);
    t_free(p);
}

static void calloc_zeroes_a_reused_block(void **state)
{
    unsigned char *p = t_malloc(500);
    memset(p, 0xAA, 500);
    t_free(p);
    unsigned char *q = t_calloc(5, 100);
    assert_ptr_equal(q, p);
    for (size_t i = 0; i < 500; i++)
        assert_int_equal(q[i], 0);
    t_free(q);
    unsigned char *big = t_calloc(1, 2u << 20);
    assert_non_null(big);
    assert_int_equal(big[(2u << 20) - 1], 0);
    t_free(big);
}

static void overflow_is_enomem(void **state)
{
    errno = 0;
    assert_null(t_malloc(SIZE_MAX));
    assert_int_equal(errno, ENOMEM);
    errno = 0;
    assert_null(t_malloc(SIZE_MAX / 2));
    assert_int_equal(errno, ENOMEM);
    errno = 0;
    assert_null(t_calloc((size_t)1 << 33, (size_t)1 << 33));
    assert_int_equal(errno, ENOMEM);
    errno = 0;
    assert_null(t_calloc(SIZE_MAX / 4, 4)); /* the product fits, the size does not */
    assert_int_equal(errno, ENOMEM);
    unsigned char *p = t_malloc(10);
    fill(p, 10, 9);
    errno = 0;
    assert_null(t_realloc(p, SIZE_MAX - 8));
    assert_int_equal(errno, ENOMEM);
    assert_true(holds(p, 10, 9)); /* a failed realloc leaves the block as it was */
    t_free(p);
}

static void aligned(void **state)
{
    for (size_t a = 0; a <= 16; a = a ? a * 2 : 1) {
        unsigned char *p = t_aligned_alloc(a, 100);
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % 16, 0);
        fill(p, 100, 1);
        assert_true(holds(p, 100, 1));
        t_free(p);
    }
    /* More than malloc's 16 is refused, as are alignments that are no power of two. */
    static const size_t refused[] = { 32, 4096, 24, 48 };
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        errno = 0;
        assert_null(t_aligned_alloc(refused[i], 100));
        assert_int_equal(errno, EINVAL);
    }
}

/* Each thread keeps 32 blocks of random sizes (a few above the largest class), each
 * holding a pattern checked before it is freed or reallocated. */
#define THREADS 4
#define ROUNDS 20000
#define SLOTS 32

static void *churn(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    unsigned char *p[SLOTS] = { 0 };
    size_t len[SLOTS] = { 0 };
    unsigned char tag[SLOTS] = { 0 };
    long bad = 0;

    for (int r = 0; r < ROUNDS; r++) {
        int i = rand_r(&seed) % SLOTS, op = rand_r(&seed) % 3;
        size_t n = rand_r(&seed) % 50 == 0 ? LARGEST + (size_t)(rand_r(&seed) % 100000)
                                            : (size_t)(rand_r(&seed) % 5000);
        if (p[i] && !holds(p[i], len[i], tag[i]))
            bad++;
        if (op == 0 && p[i]) {
            t_free(p[i]);
            p[i] = NULL;
            continue;
        }
        unsigned char *q = op == 1 && p[i] ? t_realloc(p[i], n) : t_malloc(n);
        if (!q)
            return (void *)-1;
        if (q != p[i] && p[i] && op != 1)
            t_free(p[i]);
        if (op == 1 && p[i] && !holds(q, n < len[i] ? n : len[i], tag[i]))
            bad++;
        p[i] = q;
        len[i] = n;
        tag[i] = (unsigned char)r;
        fill(q, n, tag[i]);
    }
    for (int i = 0; i < SLOTS; i++) {
        if (p[i] && !holds(p[i], len[i], tag[i]))
            bad++;
        t_free(p[i]);
    }
    return (void *)bad;
}

static void threads(void **state)
{
    pthread_t t[THREADS];
    for (uintptr_t i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, churn, (void *)(i + 1)), 0);
    for (int i = 0; i < THREADS; i++) {
        void *bad;
        assert_int_equal(pthread_join(t[i], &bad), 0);
        assert_int_equal((intptr_t)bad, 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_boundary),
        cmocka_unit_test(zero_is_unique),
        cmocka_unit_test(freed_block_is_reused),
        cmocka_unit_test(big_block_is_unmapped),
        cmocka_unit_test(realloc_keeps_contents),
        cmocka_unit_test(calloc_zeroes_a_reused_block),
        cmocka_unit_test(overflow_is_enomem),
        cmocka_unit_test(aligned),
        cmocka_unit_test(threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
