/*
 * tool_creds - the credentials provider (creds.c) from the real environment, for
 * tests/creds.test.mjs.
 *
 *   tool_creds [--gets N] [--skip SECONDS] [--threads T] [--region R]
 *
 * Initialises the provider from the environment (SSL_CERT_FILE names the CA bundle for
 * STS), then gets credentials N times (default 1). Before every get but the first, the
 * provider's clock moves SECONDS ahead (default 0), so refreshes can be tested without
 * waiting. With --threads, each get is T threads asking at once: the line describes the
 * first thread's copy, and "keys" lists the access key ids all of them got (while one
 * thread refreshes, the others may still get the previous, valid, credentials).
 * stdout, one JSON object per line:
 *   {"source":"...","file_region":"eu-west-1"|null}
 *   {"get":1,"access_key_id":"AKIA...","secret_hash":"1a2b3c4d","token_hash":"..."|null,
 *    "expires_in":3599|null,"exchanges":1,"keys":["AKIA..."]}
 * or, on failure, {"error":"<kind>","message":"..."} with exit status 2 (creds_init) or 1
 * (creds_get). The hashes are the first 8 hex digits of SHA-256: the secrets themselves are
 * never printed. Log lines (refresh warnings) go to stderr.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <bearssl.h>
#include "cJSON.h"
#include "creds.h"
#include "log.h"
#include "tls.h"

#define MAX_THREADS 32

struct clock {
    int64_t offset;
};

static int64_t fake_now(void *ctx)
{
    const struct clock *c = ctx;
    return (int64_t)time(NULL) + c->offset;
}

static const char *env_get(const char *name, void *ctx)
{
    (void)ctx;
    return getenv(name);
}

static void hash8(const char *s, char out[9])
{
    br_sha256_context sc;
    unsigned char h[32];

    br_sha256_init(&sc);
    br_sha256_update(&sc, s, strlen(s));
    br_sha256_out(&sc, h);
    for (int i = 0; i < 4; i++)
        snprintf(out + 2 * i, 3, "%02x", h[i]);
}

static void print_json(cJSON *o)
{
    char *s = cJSON_PrintUnformatted(o);
    puts(s);
    fflush(stdout);
    free(s);
    cJSON_Delete(o);
}

static int fail(const struct lerr *e, int status)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "error", lerr_kind_name(e->kind));
    cJSON_AddStringToObject(o, "message", e->msg);
    print_json(o);
    return status;
}

struct getter {
    pthread_t th;
    struct creds_provider *p;
    struct creds_snapshot snap;
    struct lerr e;
    int rc;
};

static void *get_one(void *arg)
{
    struct getter *g = arg;
    g->rc = creds_get(g->p, &g->snap, &g->e);
    return NULL;
}

/* The distinct access key ids the threads got, in thread order. */
static cJSON *distinct_keys(const struct getter *g, int threads)
{
    cJSON *keys = cJSON_CreateArray();

    for (int t = 0; t < threads; t++) {
        int seen = 0;
        for (int u = 0; u < t; u++)
            seen |= strcmp(g[u].snap.access_key_id, g[t].snap.access_key_id) == 0;
        if (!seen)
            cJSON_AddItemToArray(keys, cJSON_CreateString(g[t].snap.access_key_id));
    }
    return keys;
}

/* One round: T threads ask at once. */
static int round_get(struct creds_provider *p, int round, int threads, const struct clock *clk,
                     struct getter *g)
{
    char h[9];
    cJSON *o;
    int rc = 0;

    for (int t = 0; t < threads; t++) {
        g[t].p = p;
        if (pthread_create(&g[t].th, NULL, get_one, &g[t]) != 0) {
            fprintf(stderr, "tool_creds: pthread_create failed\n");
            exit(3);
        }
    }
    for (int t = 0; t < threads; t++)
        pthread_join(g[t].th, NULL);
    if (g[0].rc < 0)
        rc = fail(&g[0].e, 1);
    for (int t = 1; t < threads && rc == 0; t++)
        if (g[t].rc < 0)
            rc = fail(&g[t].e, 1);
    if (rc == 0) {
        o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "get", round);
        cJSON_AddStringToObject(o, "access_key_id", g[0].snap.access_key_id);
        hash8(g[0].snap.secret_access_key, h);
        cJSON_AddStringToObject(o, "secret_hash", h);
        if (g[0].snap.session_token[0]) {
            hash8(g[0].snap.session_token, h);
            cJSON_AddStringToObject(o, "token_hash", h);
        } else {
            cJSON_AddNullToObject(o, "token_hash");
        }
        if (g[0].snap.expiration)
            cJSON_AddNumberToObject(o, "expires_in",
                                    (double)(g[0].snap.expiration - fake_now((void *)clk)));
        else
            cJSON_AddNullToObject(o, "expires_in");
        pthread_mutex_lock(&p->mu);
        cJSON_AddNumberToObject(o, "exchanges", (double)p->exchanges);
        pthread_mutex_unlock(&p->mu);
        cJSON_AddItemToObject(o, "keys", distinct_keys(g, threads));
        print_json(o);
    }
    for (int t = 0; t < threads; t++)
        creds_snapshot_wipe(&g[t].snap);
    return rc;
}

int main(int argc, char **argv)
{
    static struct creds_provider p;
    static struct getter g[MAX_THREADS];
    struct clock clk = { 0 };
    const struct creds_hooks hooks = { fake_now, NULL, &clk };
    struct tls_anchors anchors = { 0 };
    const char *region = NULL;
    char region_buf[CREDS_REGION_MAX];
    int gets = 1, threads = 1, rc = 0;
    long skip = 0;
    struct lerr e;
    cJSON *o;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--gets") == 0 && i + 1 < argc) {
            gets = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--skip") == 0 && i + 1 < argc) {
            skip = atol(argv[++i]);
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--region") == 0 && i + 1 < argc) {
            region = argv[++i];
        } else {
            fprintf(stderr, "usage: tool_creds [--gets N] [--skip SECONDS] [--threads T] "
                    "[--region R]\n");
            return 64;
        }
    }
    if (threads < 1 || threads > MAX_THREADS || gets < 0)
        return 64;
    log_setup(LOG_LEVEL_DEBUG, 0);
    /* The bundle is only needed for an https STS endpoint; without one, http:// works. */
    if (getenv("SSL_CERT_FILE") && tls_anchors_load(&anchors, getenv("SSL_CERT_FILE"), &e) < 0)
        return fail(&e, 2);
    if (creds_init_hooks(&p, env_get, NULL, region, anchors.count ? &anchors : NULL, &hooks,
                         &e) < 0) {
        tls_anchors_free(&anchors);
        return fail(&e, 2);
    }
    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "source", p.source_name);
    /* the config file's region, as configuration code reads it (an unreadable file: none) */
    if (creds_config_region(env_get, NULL, region_buf, sizeof region_buf, &e) > 0)
        cJSON_AddStringToObject(o, "file_region", region_buf);
    else
        cJSON_AddNullToObject(o, "file_region");
    print_json(o);
    for (int i = 1; i <= gets && rc == 0; i++) {
        if (i > 1)
            clk.offset += skip;
        rc = round_get(&p, i, threads, &clk, g);
    }
    creds_free(&p);
    tls_anchors_free(&anchors);
    return rc;
}
