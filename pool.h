/*
 * pool.h - the warm pool (LAMBDO_POOL): the stopped Fly Machines this lambdo knows, per group
 * key, and which of them is free. Bookkeeping only: the calls to Fly (lease, update, wait,
 * release, create, destroy) are the daemon's, so every decision here is tested without a
 * network. Every function takes the pool's mutex itself; none blocks but pool_acquire.
 *
 * A Machine is
 *   POOL_IDLE   stopped and free: a job that takes it must lease it first
 *   POOL_HELD   stopped and free, and this lambdo still holds its lease (a job of its key
 *               was waiting when the last one ended): taken without a lease call
 *   POOL_BUSY   a job has it, from its lease to its release; or its create is in flight
 *               (id "" until pool_created)
 * A Machine that another lambdo holds or that still runs goes back to IDLE with a time
 * before which no job takes it (pool_skip), so that jobs try the others first.
 *
 * Several lambdo instances share one app: the lease is what makes a Machine run one group
 * at a time, not this table, which only knows what this instance did and saw.
 */
#ifndef LAMBDO_POOL_H
#define LAMBDO_POOL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "fly.h"
#include "group.h"

#define POOL_HOLD_MS 5000  /* a HELD Machine no job took by then gives its lease up */

enum pool_state { POOL_IDLE, POOL_HELD, POOL_BUSY };

struct pool_machine {
    struct pool_machine *next;
    char id[64];                    /* "" while its create is in flight */
    char key[GROUP_ID_LEN + 1];
    char nonce[FLY_NONCE_MAX];      /* its lease's, "" unless this lambdo holds it */
    int64_t lease_due_ms;           /* with a nonce: refresh the lease by then */
    int64_t idle_since_ms;          /* IDLE or HELD: since when */
    int64_t skip_until_ms;          /* IDLE: no job takes it before then */
    enum pool_state state;
    struct fly_machine_limits limits;  /* Fly's per-Machine rate limits, for its calls */
};

struct pool_waiter;

struct pool {
    pthread_mutex_t mu;
    pthread_cond_t freed;           /* a Machine came free or left the pool */
    struct pool_machine *list;      /* most recently freed first */
    struct pool_waiter *waiters;    /* jobs in pool_acquire, by key */
    int per_key;                    /* LAMBDO_POOL */
};

enum pool_take {
    POOL_TAKE_MACHINE,  /* *out is a Machine of the key, now BUSY (HELD: its nonce kept) */
    POOL_TAKE_CREATE,   /* *out is a new BUSY entry with id "": create the Machine, then
                           pool_created (or pool_drop when that failed) */
    POOL_TAKE_STOP,     /* idle asked to stop waiting, or out of memory: nothing taken */
};

/* An empty pool of at most per_key Machines per key. */
void pool_init(struct pool *p, int per_key);

/* Frees every entry (the Machines stay in Fly, stopped, for the next lambdo). */
void pool_destroy(struct pool *p);

/* A Machine for a job of key: a HELD one first, then the IDLE one freed last (so that the
 * ones the traffic does not need stay idle and pool_reap destroys them), then, while the
 * key has fewer than per_key Machines, a slot to create one. Otherwise waits until one comes
 * free, calling idle(ctx) about once a second (its messages' heartbeats): a nonzero answer
 * ends the wait with POOL_TAKE_STOP. now() gives the time (ms) for skips. */
enum pool_take pool_acquire(struct pool *p, const char *key, int64_t (*now)(void),
                            int (*idle)(void *ctx), void *ctx, struct pool_machine **out);

/* The created Machine's id, for a POOL_TAKE_CREATE entry (still BUSY); an entry a list
 * adopted for the same Machine meanwhile is dropped. */
void pool_created(struct pool *p, struct pool_machine *m, const char *id);

/* Whether a job waits in pool_acquire for key: then a Machine that comes free keeps its
 * lease for it (pool_put with the nonce); otherwise the caller releases the lease first. */
int pool_wanted(struct pool *p, const char *key);

/* The job is done with m (stopped): HELD when it still has a nonce, else IDLE. */
void pool_put(struct pool *p, struct pool_machine *m, int64_t now);

/* m is not to be taken before until (another lambdo holds it, or it runs): IDLE, no nonce. */
void pool_skip(struct pool *p, struct pool_machine *m, int64_t until);

/* m leaves the pool (destroyed, gone, or failed): freed. */
void pool_drop(struct pool *p, struct pool_machine *m);

/* Adds the listed Machines this pool does not know yet, as IDLE: a restarted lambdo finds
 * its pool again, and one instance learns of another's Machines. Returns how many were
 * added (fewer when out of memory). */
size_t pool_adopt(struct pool *p, const struct fly_pool_machine *list, size_t n, int64_t now);

/* An IDLE Machine idle for at least idle_ms at now and not skipped, or a HELD one that no
 * job took within POOL_HOLD_MS: taken (BUSY) for the caller to destroy (idle long enough;
 * then pool_drop) or to give back, its lease released (pool_put); NULL when there is none. */
struct pool_machine *pool_reap(struct pool *p, int64_t now, int64_t idle_ms);

/* Machines free (IDLE, HELD) and busy. */
void pool_counts(struct pool *p, int *idle, int *busy);

#endif
