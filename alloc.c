/*
 * alloc.c - the malloc of the static musl build (./lambdo), in place of musl's mallocng.
 *
 * Why: mallocng gives a size class's memory back to the kernel as soon as the last block
 * in it is freed. Every job allocates and frees a dozen blocks of 1 to 16 KB (JSON bodies,
 * the events file, the job itself), so every job paid mmap, munmap and madvise calls,
 * the page faults of touching the pages again and, with worker threads, TLB shootdowns:
 * half of lambdo's CPU was system time. strace -c over 5,000 events: 1,199 mmap, 1,197
 * munmap and 904 madvise of 13,300 system calls. This allocator keeps what is freed.
 *
 * How: power-of-two classes of 32 B to 128 KiB (the 16-byte header included). A block
 * starts with a 16-byte header (so the caller's pointer keeps malloc's 16-byte alignment)
 * holding its size; a freed block goes on its class's free list, linked through its first
 * word, and the next malloc of that class takes it back. Class blocks are carved from 1 MiB
 * chunks got with mmap and never returned: the memory they hold is bounded by the peak of
 * the blocks in use at once, class by class (a chunk's tail too small for the next block is
 * left unused). A block bigger than the largest class (a 10 MB ReceiveMessage answer) is
 * mapped alone, at the start of its mapping, its header holding the mapping's length (which
 * no class size reaches): free unmaps it, and realloc grows or shrinks it with mremap, which
 * moves pages instead of bytes, or copies it into a class block when it shrinks into one.
 * One mutex guards the lists, as mallocng has one lock; the system calls run outside it
 * but for a new chunk.
 *
 * Semantics follow musl's: malloc(0) is a unique pointer; a size near SIZE_MAX (or calloc's
 * product overflowing) is NULL with errno ENOMEM; realloc(p, 0) keeps a block and returns it.
 * Every block is 16-byte aligned, so aligned_alloc takes a power of two up to 16 and refuses
 * more with EINVAL (nothing in lambdo, BearSSL or cJSON asks for more). musl's posix_memalign,
 * memalign, valloc and reallocarray stay in the link: they only call aligned_alloc and
 * realloc, so they get this allocator's blocks. musl's internal __libc_malloc/__libc_free
 * pairs (posix_spawn's file actions) keep mallocng for themselves: musl never frees with one
 * what the other allocated. 64-bit only (the header's size, the class arithmetic). Unlike
 * mallocng, it does not catch a double free or a write past a block (the free list is kept in
 * the freed blocks): the AddressSanitizer and valgrind builds that run the tests do.
 *
 * The Makefile links this file into the musl builds only: the sanitizers and valgrind bring
 * their own malloc. It is compiled without -flto and with -fno-builtin, so that gcc cannot
 * turn calloc's malloc-then-memset into a call to calloc (itself), nor treat this malloc and
 * free as the C library's. The unit test includes it with ALLOC_NAME(f) defined as t_##f, so
 * that it tests these functions beside the system's malloc.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#ifndef ALLOC_NAME
#define ALLOC_NAME(f) f
#endif

#define ALLOC_HDR 16                                  /* the block's size and padding */
#define ALLOC_LARGEST (((size_t)1 << 17) - ALLOC_HDR) /* what the largest class holds */
#define ALLOC_CHUNK ((size_t)1 << 20)
#define ALLOC_SIZE(p) (*(size_t *)((char *)(p) - ALLOC_HDR))

static pthread_mutex_t alloc_lock = PTHREAD_MUTEX_INITIALIZER;
static char *alloc_free[18]; /* by class (its size's log2), linked through their first word */
static char *alloc_next;     /* the rest of the current chunk: alloc_left bytes */
static size_t alloc_left;

/* A block that starts a new mapping of len bytes, or old's mapping resized: NULL, errno
 * set, when the kernel refuses. */
static char *alloc_mapped(char *old, size_t len)
{
    void *map = old ? mremap(old - ALLOC_HDR, ALLOC_SIZE(old), len, MREMAP_MAYMOVE)
                    : mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED)
        return NULL;
    *(size_t *)map = len;
    return (char *)map + ALLOC_HDR;
}

void *ALLOC_NAME(malloc)(size_t n)
{
    if (n >= SIZE_MAX / 2)
        return errno = ENOMEM, NULL;
    if (n > ALLOC_LARGEST)
        return alloc_mapped(NULL, (n + ALLOC_HDR + 4095) & ~(size_t)4095);
    /* The smallest power of two that holds n and the header, 32 at least. */
    int shift = 64 - __builtin_clzl((n + ALLOC_HDR - 1) | 31);
    size_t size = (size_t)1 << shift;
    char *p;

    pthread_mutex_lock(&alloc_lock);
    if ((p = alloc_free[shift])) {
        alloc_free[shift] = *(char **)p;
    } else {
        if (alloc_left < size) {
            alloc_next = alloc_mapped(NULL, ALLOC_CHUNK); /* the old chunk's tail is lost */
            alloc_left = alloc_next ? ALLOC_CHUNK - ALLOC_HDR : 0;
        }
        if ((p = alloc_next)) {
            alloc_next += size;
            alloc_left -= size;
            p += ALLOC_HDR;
            ALLOC_SIZE(p) = size;
        }
    }
    pthread_mutex_unlock(&alloc_lock);
    return p;
}

void ALLOC_NAME(free)(void *p)
{
    size_t size = p ? ALLOC_SIZE(p) : 0;

    if (size > ALLOC_LARGEST + ALLOC_HDR) {
        munmap((char *)p - ALLOC_HDR, size);
    } else if (p) {
        pthread_mutex_lock(&alloc_lock);
        *(char **)p = alloc_free[__builtin_ctzl(size)];
        alloc_free[__builtin_ctzl(size)] = p;
        pthread_mutex_unlock(&alloc_lock);
    }
}

void *ALLOC_NAME(calloc)(size_t m, size_t n)
{
    void *p = ALLOC_NAME(malloc)(n && m > SIZE_MAX / n ? SIZE_MAX : m * n);

    if (p && m * n <= ALLOC_LARGEST) /* a fresh mapping is zero already */
        memset(p, 0, m * n);
    return p;
}

void *ALLOC_NAME(aligned_alloc)(size_t align, size_t n)
{
    if ((align & (align - 1)) || align > ALLOC_HDR)
        return errno = EINVAL, NULL;
    return ALLOC_NAME(malloc)(n);
}

size_t ALLOC_NAME(malloc_usable_size)(void *p)
{
    return p ? ALLOC_SIZE(p) - ALLOC_HDR : 0;
}

void *ALLOC_NAME(realloc)(void *p, size_t n)
{
    if (!p || n >= SIZE_MAX / 2) /* a size too big fails in malloc, p left as it was */
        return ALLOC_NAME(malloc)(n);
    size_t have = ALLOC_SIZE(p) - ALLOC_HDR;
    if (have > ALLOC_LARGEST && n > ALLOC_LARGEST)
        return alloc_mapped(p, (n + ALLOC_HDR + 4095) & ~(size_t)4095);
    if (have <= ALLOC_LARGEST && n <= have)
        return p;
    void *q = ALLOC_NAME(malloc)(n);
    if (q) {
        memcpy(q, p, n < have ? n : have);
        ALLOC_NAME(free)(p);
    }
    return q;
}
