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
 * holding the class size; a freed block goes on its class's free list, linked through its
 * first word, and the next malloc of that class takes it back. Class blocks are carved
 * from 1 MiB chunks got with mmap and never returned: the memory they hold is bounded by
 * the peak of the blocks in use at once, class by class (a chunk's tail too small for the
 * next block is left unused). A block bigger than the largest class (a 10 MB ReceiveMessage
 * answer) is mapped alone, its header holding the mapping's base and length, unmapped by
 * free, and grown or shrunk by realloc with mremap, which moves pages instead of bytes.
 * One mutex guards the lists, as mallocng has one lock; the system calls run outside it
 * but for a new chunk.
 *
 * Semantics follow musl's: malloc(0) is a unique pointer; a size near SIZE_MAX (or calloc's
 * product overflowing) is NULL with errno ENOMEM; realloc(p, 0) keeps a block and returns
 * it. aligned_alloc takes a power of two up to 4096 (bigger: EINVAL): up to 16 it is malloc,
 * above it the block gets a mapping of its own, at that offset from the page. musl's own
 * posix_memalign, memalign, valloc and reallocarray stay in the link: they only call
 * aligned_alloc and realloc, so they get this allocator's blocks. musl's internal
 * __libc_malloc/__libc_free pairs (posix_spawn's file actions) keep mallocng for themselves.
 *
 * The Makefile links this file into the musl builds only: the sanitizers and valgrind bring
 * their own malloc. It is compiled without -flto and with -fno-builtin, so that gcc cannot
 * turn calloc's allocate-then-memset into a call to calloc. The unit test includes it with
 * ALLOC_NAME(f) defined as t_##f, so that it tests these functions beside the system malloc.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#ifndef ALLOC_NAME
#define ALLOC_NAME(f) f
#endif

#define ALLOC_MIN_SHIFT 5  /* 32 B: the header and 16 bytes */
#define ALLOC_MAX_SHIFT 17 /* 128 KiB */
#define ALLOC_CHUNK ((size_t)1 << 20)
#define ALLOC_PAGE ((size_t)4096)

/* map is NULL for a class block; for a mapped block, size is the mapping's length. */
struct alloc_hdr {
    char *map;
    size_t size;
};
_Static_assert(sizeof(struct alloc_hdr) == 16, "the header keeps 16-byte alignment");

static pthread_mutex_t alloc_lock = PTHREAD_MUTEX_INITIALIZER;
static struct alloc_hdr *alloc_free[ALLOC_MAX_SHIFT + 1];
static char *alloc_next, *alloc_end; /* the unused rest of the current chunk */

/* The shift of the class that holds n bytes and the header, 0 when none does. */
static int alloc_class(size_t n)
{
    if (n > ((size_t)1 << ALLOC_MAX_SHIFT) - sizeof(struct alloc_hdr))
        return 0;
    int shift = 64 - __builtin_clzl(n + sizeof(struct alloc_hdr) - 1);
    return shift < ALLOC_MIN_SHIFT ? ALLOC_MIN_SHIFT : shift;
}

static void *alloc_mapped(size_t n, size_t align)
{
    size_t len = (align + n + ALLOC_PAGE - 1) & ~(ALLOC_PAGE - 1);
    char *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED)
        return NULL;
    struct alloc_hdr *h = (struct alloc_hdr *)(map + align) - 1;
    *h = (struct alloc_hdr){ map, len };
    return h + 1;
}

static void *alloc_from_class(int shift)
{
    size_t size = (size_t)1 << shift;
    struct alloc_hdr *h;

    pthread_mutex_lock(&alloc_lock);
    if ((h = alloc_free[shift])) {
        alloc_free[shift] = *(struct alloc_hdr **)(h + 1);
    } else {
        if ((size_t)(alloc_end - alloc_next) < size) {
            char *c = mmap(NULL, ALLOC_CHUNK, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (c == MAP_FAILED) {
                pthread_mutex_unlock(&alloc_lock);
                return NULL;
            }
            alloc_next = c;
            alloc_end = c + ALLOC_CHUNK;
        }
        h = (struct alloc_hdr *)alloc_next;
        alloc_next += size;
        *h = (struct alloc_hdr){ NULL, size };
    }
    pthread_mutex_unlock(&alloc_lock);
    return h + 1;
}

/* align: 16 or a power of two up to ALLOC_PAGE. */
static void *alloc(size_t n, size_t align)
{
    if (n >= SIZE_MAX / 2) {
        errno = ENOMEM;
        return NULL;
    }
    int shift = alloc_class(n);
    return shift && align <= sizeof(struct alloc_hdr) ? alloc_from_class(shift)
                                                      : alloc_mapped(n, align);
}

void *ALLOC_NAME(malloc)(size_t n)
{
    return alloc(n, sizeof(struct alloc_hdr));
}

void *ALLOC_NAME(aligned_alloc)(size_t align, size_t n)
{
    if ((align & (align - 1)) || align > ALLOC_PAGE) {
        errno = EINVAL;
        return NULL;
    }
    return alloc(n, align < sizeof(struct alloc_hdr) ? sizeof(struct alloc_hdr) : align);
}

void ALLOC_NAME(free)(void *p)
{
    if (!p)
        return;
    struct alloc_hdr *h = (struct alloc_hdr *)p - 1;
    if (h->map) {
        munmap(h->map, h->size);
        return;
    }
    int shift = __builtin_ctzl(h->size);
    pthread_mutex_lock(&alloc_lock);
    *(struct alloc_hdr **)p = alloc_free[shift];
    alloc_free[shift] = h;
    pthread_mutex_unlock(&alloc_lock);
}

void *ALLOC_NAME(calloc)(size_t m, size_t n)
{
    if (n && m > SIZE_MAX / n) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = alloc(m * n, sizeof(struct alloc_hdr));
    /* A fresh mapping is zero already. */
    if (p && !((struct alloc_hdr *)p - 1)->map)
        memset(p, 0, m * n);
    return p;
}

size_t ALLOC_NAME(malloc_usable_size)(void *p)
{
    if (!p)
        return 0;
    struct alloc_hdr *h = (struct alloc_hdr *)p - 1;
    return h->map ? (size_t)(h->map + h->size - (char *)p) : h->size - sizeof *h;
}

void *ALLOC_NAME(realloc)(void *p, size_t n)
{
    /* A size too big fails in alloc, p left as it is. */
    if (!p || n >= SIZE_MAX / 2)
        return alloc(n, sizeof(struct alloc_hdr));
    struct alloc_hdr *h = (struct alloc_hdr *)p - 1;
    if (h->map) {
        size_t off = (size_t)((char *)p - h->map);
        size_t len = (off + n + ALLOC_PAGE - 1) & ~(ALLOC_PAGE - 1);
        char *map = mremap(h->map, h->size, len, MREMAP_MAYMOVE);
        if (map == MAP_FAILED)
            return NULL;
        h = (struct alloc_hdr *)(map + off) - 1;
        *h = (struct alloc_hdr){ map, len };
        return h + 1;
    }
    size_t have = h->size - sizeof *h;
    if (n <= have)
        return p;
    void *q = alloc(n, sizeof(struct alloc_hdr));
    if (q) {
        memcpy(q, p, have);
        ALLOC_NAME(free)(p);
    }
    return q;
}
