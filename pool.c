#include "pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>


/* A job waiting in pool_acquire, on its own stack. */
struct pool_waiter {
    const char *key;
    struct pool_waiter *next;
};

void pool_init(struct pool *p, int per_key)
{
    *p = (struct pool){ .mu = PTHREAD_MUTEX_INITIALIZER, .freed = PTHREAD_COND_INITIALIZER,
                        .per_key = per_key };
}

static void machine_free(struct pool_machine *m)
{
    fly_machine_limits_destroy(&m->limits);
    explicit_bzero(m->nonce, sizeof m->nonce);
    free(m);
}

void pool_destroy(struct pool *p)
{
    while (p->list) {
        struct pool_machine *m = p->list;
        p->list = m->next;
        machine_free(m);
    }
    pthread_cond_destroy(&p->freed);
    pthread_mutex_destroy(&p->mu);
}

/* A new entry at the head of the list, or NULL when out of memory. Under mu. */
static struct pool_machine *machine_add(struct pool *p, const char *id, const char *key,
                                        enum pool_state state, int64_t now)
{
    struct pool_machine *m = calloc(1, sizeof *m);

    if (!m)
        return NULL;
    fly_machine_limits_init(&m->limits);
    snprintf(m->id, sizeof m->id, "%s", id);
    snprintf(m->key, sizeof m->key, "%s", key);
    m->state = state;
    m->idle_since_ms = now;
    m->next = p->list;
    p->list = m;
    return m;
}

/* Under mu: m leaves the list. */
static void unlink_machine(struct pool *p, struct pool_machine *m)
{
    struct pool_machine **pp;

    for (pp = &p->list; *pp != m; pp = &(*pp)->next)
        ;
    *pp = m->next;
}

/* Under mu: what pool_acquire would take now, or NULL to wait. The list is kept most
 * recently freed first, so the first IDLE match is the one freed last. */
static enum pool_take take(struct pool *p, const char *key, int64_t now,
                           struct pool_machine **out)
{
    struct pool_machine *idle = NULL;
    int count = 0;

    for (struct pool_machine *m = p->list; m; m = m->next) {
        if (strcmp(m->key, key) != 0)
            continue;
        count++;
        if (m->state == POOL_HELD) {
            idle = m;
            break;
        }
        if (m->state == POOL_IDLE && m->skip_until_ms <= now && !idle)
            idle = m;
    }
    if (idle) {
        idle->state = POOL_BUSY;
        *out = idle;
        return POOL_TAKE_MACHINE;
    }
    if (count < p->per_key && (*out = machine_add(p, "", key, POOL_BUSY, now)))
        return POOL_TAKE_CREATE;
    *out = NULL;
    return POOL_TAKE_STOP;  /* here: wait */
}

enum pool_take pool_acquire(struct pool *p, const char *key, int64_t (*now)(void),
                            int (*idle)(void *ctx), void *ctx, struct pool_machine **out)
{
    struct pool_waiter w = { key, NULL }, **pp;
    enum pool_take t;

    pthread_mutex_lock(&p->mu);
    w.next = p->waiters;
    p->waiters = &w;
    while ((t = take(p, key, now(), out)) == POOL_TAKE_STOP) {
        struct timespec until;
        int stop;

        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 1;
        pthread_cond_timedwait(&p->freed, &p->mu, &until);
        pthread_mutex_unlock(&p->mu);
        stop = idle(ctx);  /* heartbeats: not under the lock */
        pthread_mutex_lock(&p->mu);
        if (stop)
            break;
    }
    for (pp = &p->waiters; *pp != &w; pp = &(*pp)->next)
        ;
    *pp = w.next;
    pthread_mutex_unlock(&p->mu);
    return t;
}

void pool_created(struct pool *p, struct pool_machine *m, const char *id)
{
    struct pool_machine *o;

    pthread_mutex_lock(&p->mu);
    snprintf(m->id, sizeof m->id, "%s", id);
    /* a list may have adopted it while the answer was on its way: once at most, since
     * pool_adopt skips the ids it knows */
    for (o = p->list; o && (o == m || o->state != POOL_IDLE || strcmp(o->id, id) != 0);
         o = o->next)
        ;
    if (o) {
        unlink_machine(p, o);
        machine_free(o);
    }
    pthread_mutex_unlock(&p->mu);
}

int pool_wanted(struct pool *p, const char *key)
{
    int wanted = 0;

    pthread_mutex_lock(&p->mu);
    for (struct pool_waiter *w = p->waiters; w && !wanted; w = w->next)
        wanted = strcmp(w->key, key) == 0;
    pthread_mutex_unlock(&p->mu);
    return wanted;
}

void pool_put(struct pool *p, struct pool_machine *m, int64_t now)
{
    pthread_mutex_lock(&p->mu);
    m->state = m->nonce[0] ? POOL_HELD : POOL_IDLE;
    m->idle_since_ms = now;
    m->skip_until_ms = 0;
    unlink_machine(p, m);  /* to the head: most recently freed first */
    m->next = p->list;
    p->list = m;
    pthread_cond_broadcast(&p->freed);
    pthread_mutex_unlock(&p->mu);
}

void pool_skip(struct pool *p, struct pool_machine *m, int64_t until)
{
    pthread_mutex_lock(&p->mu);
    m->state = POOL_IDLE;
    m->nonce[0] = '\0';
    m->skip_until_ms = until;
    pthread_cond_broadcast(&p->freed);
    pthread_mutex_unlock(&p->mu);
}

void pool_drop(struct pool *p, struct pool_machine *m)
{
    pthread_mutex_lock(&p->mu);
    unlink_machine(p, m);
    pthread_cond_broadcast(&p->freed);  /* its key may create another now */
    pthread_mutex_unlock(&p->mu);
    machine_free(m);
}

size_t pool_adopt(struct pool *p, const struct fly_pool_machine *list, size_t n, int64_t now)
{
    size_t added = 0;

    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < n; i++) {
        struct pool_machine *m = p->list;

        while (m && strcmp(m->id, list[i].id) != 0)
            m = m->next;
        if (!m && strlen(list[i].pool_key) == GROUP_ID_LEN &&
            machine_add(p, list[i].id, list[i].pool_key, POOL_IDLE, now))
            added++;
    }
    if (added)
        pthread_cond_broadcast(&p->freed);
    pthread_mutex_unlock(&p->mu);
    return added;
}

struct pool_machine *pool_reap(struct pool *p, int64_t now, int64_t idle_ms)
{
    struct pool_machine *found = NULL;

    pthread_mutex_lock(&p->mu);
    for (struct pool_machine *m = p->list; m && !found; m = m->next) {
        int64_t idle = now - m->idle_since_ms;

        if ((m->state == POOL_IDLE && idle >= idle_ms && m->skip_until_ms <= now) ||
            (m->state == POOL_HELD && idle >= POOL_HOLD_MS))
            found = m;
    }
    if (found)
        found->state = POOL_BUSY;
    pthread_mutex_unlock(&p->mu);
    return found;
}

void pool_counts(struct pool *p, int *idle, int *busy)
{
    *idle = *busy = 0;
    pthread_mutex_lock(&p->mu);
    for (struct pool_machine *m = p->list; m; m = m->next) {
        if (m->state == POOL_BUSY)
            (*busy)++;
        else
            (*idle)++;
    }
    pthread_mutex_unlock(&p->mu);
}
