#include "config.h"
#include "creds.h"
#include "metrics.h"
#include "local.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_FLY_API "https://api.machines.dev"

/* The first of two variable names that is set and non-empty wins. *which names it,
 * so that an error talks about the variable the user actually set. */
static const char *pick(config_getenv_fn get, void *ctx, const char *a, const char *b,
                        const char **which)
{
    const char *v = get(a, ctx);

    *which = a;
    if ((!v || !*v) && b) {
        v = get(b, ctx);
        if (v && *v)
            *which = b;
    }
    return (v && *v) ? v : NULL;
}

/* Values that end up in HTTP headers must not smuggle in line breaks. */
static int has_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 1;
    return 0;
}

static int load_int(config_getenv_fn get, void *ctx, const char *name, int lo, int hi, int dflt,
                    int *out, struct lerr *e)
{
    const char *v = get(name, ctx);
    char *end;
    long n;

    if (!v || !*v) {
        *out = dflt;
        return 0;
    }
    n = strtol(v, &end, 10);
    if (!isdigit((unsigned char)v[0]) || *end || n < lo || n > hi)
        return lerr_set(e, LERR_INVALID, "%s: must be a whole number from %d to %d, got \"%.40s\"",
                        name, lo, hi, v);
    *out = (int)n;
    return 0;
}

/* A positive rate such as "1", "0.5" or "20". */
static int load_rate(config_getenv_fn get, void *ctx, const char *name, double dflt, double *out,
                     struct lerr *e)
{
    const char *v = get(name, ctx);
    char *end;
    double d;

    if (!v || !*v) {
        *out = dflt;
        return 0;
    }
    d = strtod(v, &end);
    if (!isdigit((unsigned char)v[0]) || *end || !(d > 0) || d > 1e6)
        return lerr_set(e, LERR_INVALID, "%s: must be a positive number of requests per second, "
                        "got \"%.40s\"", name, v);
    *out = d;
    return 0;
}

static int load_secret(config_getenv_fn get, void *ctx, const char *a, const char *b,
                       const char **out, struct lerr *e)
{
    const char *which;

    *out = pick(get, ctx, a, b, &which);
    if (!*out)
        return b ? lerr_set(e, LERR_INVALID, "%s (or %s): required, not set", a, b)
                 : lerr_set(e, LERR_INVALID, "%s: required, not set", a);
    if (has_control(*out) || strchr(*out, ' '))
        return lerr_set(e, LERR_INVALID, "%s: contains spaces or control characters", which);
    return 0;
}

/* "sqs.us-east-1.amazonaws.com" and the legacy "us-east-1.queue.amazonaws.com". */
static int region_from_host(const char *host, char *out, size_t cap)
{
    const char *start = host, *end;

    if (strncmp(host, "sqs.", 4) == 0)
        start = host + 4;
    end = strchr(start, '.');
    if (!end || end == start || (size_t)(end - start) >= cap)
        return -1;
    if (start == host && strncmp(end, ".queue.", 7) != 0)
        return -1;
    if (start != host && strncmp(end, ".amazonaws.com", 14) != 0 && strncmp(end, ".amazonaws.com.cn", 17) != 0)
        return -1;
    memcpy(out, start, (size_t)(end - start));
    out[end - start] = '\0';
    return 0;
}

static int load_sqs(struct config *c, config_getenv_fn get, void *ctx, struct lerr *e)
{
    const char *which, *v;

    c->queue_url = get("LAMBDO_SQS_QUEUE_URL", ctx);
    if (!c->queue_url || !*c->queue_url)
        return lerr_set(e, LERR_INVALID, "LAMBDO_SQS_QUEUE_URL: required, not set");
    if (url_parse(c->queue_url, &c->queue, e) < 0)
        return lerr_wrap(e, "LAMBDO_SQS_QUEUE_URL");
    if (strcmp(c->queue.path, "/") == 0)
        return lerr_set(e, LERR_INVALID, "LAMBDO_SQS_QUEUE_URL: has no queue path (expected "
                        "https://sqs.REGION.amazonaws.com/ACCOUNT/QUEUE)");
    c->sqs_endpoint = c->queue;
    strcpy(c->sqs_endpoint.path, "/");
    v = pick(get, ctx, "AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL", &which);
    if (v) {
        if (url_parse(v, &c->sqs_endpoint, e) < 0)
            return lerr_wrap(e, "%s", which);
        c->sqs_endpoint_overridden = 1;
    }
    v = pick(get, ctx, "AWS_REGION", "AWS_DEFAULT_REGION", &which);
    if (v) {
        if (strlen(v) >= sizeof c->aws_region || has_control(v) || strchr(v, '/') || strchr(v, ' '))
            return lerr_set(e, LERR_INVALID, "%s: \"%.40s\" is not a region name", which, v);
        strcpy(c->aws_region, v);
    } else if (region_from_host(c->queue.host, c->aws_region, sizeof c->aws_region) < 0) {
        /* The signing region must be the queue's: the AWS config file's region comes last. */
        int found = creds_config_region(get, ctx, c->aws_region, sizeof c->aws_region, e);
        if (found < 0)
            return -1;
        if (found == 0)
            return lerr_set(e, LERR_INVALID, "AWS_REGION: not set, the queue URL host \"%s\" "
                            "does not name a region, and the AWS config file names none",
                            c->queue.host);
    }
    /* Credentials are resolved by creds.c (environment, web identity, shared files). */
    return 0;
}

static int valid_name(const char *s, size_t maxlen)
{
    size_t n = strlen(s);

    if (n == 0 || n > maxlen || s[0] == '-')
        return 0;
    for (; *s; s++)
        if (!islower((unsigned char)*s) && !isdigit((unsigned char)*s) && *s != '-')
            return 0;
    return 1;
}

static int add_region(struct config *c, const char *which, const char *name, size_t len,
                      size_t *used, struct lerr *e)
{
    char *dst = c->region_buf + *used;

    if (len == 0)
        return 0;
    if (len >= sizeof c->region_buf - *used || c->num_regions == CONFIG_MAX_REGIONS)
        return lerr_set(e, LERR_INVALID, "%s: too many regions (at most %d)", which,
                        CONFIG_MAX_REGIONS);
    memcpy(dst, name, len);
    dst[len] = '\0';
    if (!valid_name(dst, 16))
        return lerr_set(e, LERR_INVALID, "%s: \"%.20s\" is not a Fly region code (like iad, ord)",
                        which, dst);
    for (size_t i = 0; i < c->num_regions; i++)
        if (strcmp(c->regions[i], dst) == 0)
            return 0;
    c->regions[c->num_regions++] = dst;
    *used += len + 1;
    return 0;
}

static int load_regions(struct config *c, config_getenv_fn get, void *ctx, struct lerr *e)
{
    const char *which, *primary = pick(get, ctx, "LAMBDO_FLY_REGION", "FLY_REGION", &which);
    const char *list = get("LAMBDO_FLY_REGIONS", ctx);
    size_t used = 0;

    if (primary && add_region(c, which, primary, strlen(primary), &used, e) < 0)
        return -1;
    for (const char *p = list; p && *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        while (len && *p == ' ')
            p++, len--;
        while (len && p[len - 1] == ' ')
            len--;
        if (add_region(c, "LAMBDO_FLY_REGIONS", p, len, &used, e) < 0)
            return -1;
        p = comma ? comma + 1 : p + len;
        if (!comma)
            break;
    }
    if (c->num_regions == 0)
        return lerr_set(e, LERR_INVALID, "LAMBDO_FLY_REGION (or FLY_REGION): required unless "
                        "LAMBDO_FLY_REGIONS is set");
    return 0;
}

static int load_fly(struct config *c, config_getenv_fn get, void *ctx, struct lerr *e)
{
    const char *which;

    if (load_secret(get, ctx, "LAMBDO_FLY_TOKEN", "FLY_API_TOKEN", &c->fly_token, e) < 0)
        return -1;
    c->fly_app = pick(get, ctx, "LAMBDO_FLY_APP", "FLY_APP_NAME", &which);
    if (!c->fly_app)
        return lerr_set(e, LERR_INVALID, "LAMBDO_FLY_APP (or FLY_APP_NAME): required, not set");
    if (!valid_name(c->fly_app, 63))
        return lerr_set(e, LERR_INVALID, "%s: \"%.64s\" is not a Fly app name (lowercase "
                        "letters, digits and dashes)", which, c->fly_app);
    c->fly_api_url = get("LAMBDO_FLY_API_URL", ctx);
    if (!c->fly_api_url || !*c->fly_api_url)
        c->fly_api_url = DEFAULT_FLY_API;
    if (url_parse(c->fly_api_url, &c->fly_api, e) < 0)
        return lerr_wrap(e, "LAMBDO_FLY_API_URL");
    return load_regions(c, get, ctx, e);
}

static int load_delivery(struct config *c, config_getenv_fn get, void *ctx, struct lerr *e)
{
    const char *ack = get("LAMBDO_ACK", ctx);

    c->ack_on_exit = 0;
    if (ack && *ack && strcmp(ack, "exit") == 0)
        c->ack_on_exit = 1;
    else if (ack && *ack && strcmp(ack, "create") != 0)
        return lerr_set(e, LERR_INVALID, "LAMBDO_ACK: must be create or exit, got \"%.20s\"", ack);
    if (load_int(get, ctx, "LAMBDO_RETRY_DELAY", 0, 43200, 0, &c->retry_delay, e) < 0 ||
        load_int(get, ctx, "LAMBDO_MACHINE_TIMEOUT", 1, 7 * 86400, 0, &c->machine_timeout, e) < 0 ||
        load_int(get, ctx, "LAMBDO_MAX_MACHINES", 1, 1000, 10, &c->max_machines, e) < 0 ||
        load_rate(get, ctx, "LAMBDO_FLY_CREATE_RATE", 1, &c->fly_create_rate, e) < 0 ||
        load_int(get, ctx, "LAMBDO_FLY_CREATE_BURST", 1, 10000, 3, &c->fly_create_burst, e) < 0 ||
        load_rate(get, ctx, "LAMBDO_FLY_GET_RATE", 5, &c->fly_get_rate, e) < 0 ||
        load_int(get, ctx, "LAMBDO_FLY_GET_BURST", 1, 10000, 10, &c->fly_get_burst, e) < 0 ||
        load_int(get, ctx, "LAMBDO_MAX_EVENTS_BYTES", 1024, 64 << 20, 1 << 20, &c->max_events_bytes, e) < 0 ||
        load_int(get, ctx, "LAMBDO_SHUTDOWN_TIMEOUT", 0, 3600, 0, &c->shutdown_timeout, e) < 0)
        return -1;
    if (load_int(get, ctx, "LAMBDO_BATCH_WINDOW_MS", 0, 600000, 0, &c->batch_window_ms, e) < 0)
        return -1;
    return load_int(get, ctx, "LAMBDO_EVENTS_PER_MACHINE", 1, c->batch_window_ms ? 1000 : 10, 5,
                    &c->events_per_machine, e);
}

/* `lambdo send --queue URL` names the queue on the command line instead. */
struct queue_override {
    const char *queue_url;
    config_getenv_fn get;
    void *ctx;
};

static const char *get_with_queue(const char *name, void *ctx)
{
    const struct queue_override *o = ctx;

    if (strcmp(name, "LAMBDO_SQS_QUEUE_URL") == 0)
        return o->queue_url;
    return o->get(name, o->ctx);
}

static int load_misc(struct config *c, config_getenv_fn get, void *ctx, struct lerr *e)
{
    const char *env = get("LAMBDO_ENV", ctx), *level = get("LAMBDO_LOG_LEVEL", ctx);

    if (load_int(get, ctx, "LAMBDO_SQS_LONG_POLL_SECONDS", 0, 20, 10, &c->long_poll_seconds, e) < 0 ||
        load_int(get, ctx, "LAMBDO_VISIBILITY_TIMEOUT", 1, 43200, 30, &c->visibility_timeout, e) < 0 ||
        load_delivery(c, get, ctx, e) < 0)
        return -1;
    c->json_logs = env && strcmp(env, "production") == 0;
    c->log_level = LOG_LEVEL_INFO;
    if (level && *level && log_level_parse(level, &c->log_level) < 0)
        return lerr_set(e, LERR_INVALID, "LAMBDO_LOG_LEVEL: must be debug, info, warn or error, "
                        "got \"%.20s\"", level);
    c->ca_file = get("SSL_CERT_FILE", ctx);
    if (c->ca_file && !*c->ca_file)
        c->ca_file = NULL;
    return 0;
}

/* Checked here, so that a bad address stops lambdo before any network call; the port
 * being free is only known when the daemon listens. */
static int load_metrics(struct config *c, config_getenv_fn get, void *ctx, struct lerr *e)
{
    struct metrics_addr a;

    c->metrics_addr = get("LAMBDO_METRICS_ADDR", ctx);
    if (!c->metrics_addr || !*c->metrics_addr) {
        c->metrics_addr = NULL;
        return 0;
    }
    if (metrics_addr_parse(c->metrics_addr, &a, e) < 0)
        return lerr_wrap(e, "LAMBDO_METRICS_ADDR");
    return 0;
}

/* LAMBDO_BACKEND=local runs groups on this host: no Fly variable is needed then. */
static int load_backend(struct config *c, config_getenv_fn get, void *ctx, struct lerr *e)
{
    const char *b = get("LAMBDO_BACKEND", ctx);

    c->backend_local = b && strcmp(b, "local") == 0;
    if (c->backend_local)
        c->ack_on_exit = 1;  /* a child's exit status is its acknowledgement, always */
    if (b && *b && !c->backend_local && strcmp(b, "fly") != 0)
        return lerr_set(e, LERR_INVALID, "LAMBDO_BACKEND: must be fly or local, got \"%.20s\"", b);
    c->local_command = get("LAMBDO_LOCAL_COMMAND", ctx);
    if (c->local_command && !*c->local_command)
        c->local_command = NULL;
    if (c->local_command && !c->backend_local)
        return lerr_set(e, LERR_INVALID, "LAMBDO_LOCAL_COMMAND: only used with LAMBDO_BACKEND=local");
    if (c->local_command && local_command_check(c->local_command, e) < 0)
        return lerr_wrap(e, "LAMBDO_LOCAL_COMMAND");
    return 0;
}

int config_load(struct config *c, config_getenv_fn get, void *ctx, struct lerr *e)
{
    memset(c, 0, sizeof *c);
    if (load_misc(c, get, ctx, e) < 0 || load_backend(c, get, ctx, e) < 0 ||
        load_sqs(c, get, ctx, e) < 0 || (!c->backend_local && load_fly(c, get, ctx, e) < 0) ||
        load_metrics(c, get, ctx, e) < 0)
        return -1;
    return 0;
}

int config_load_sqs(struct config *c, const char *queue_url, config_getenv_fn get, void *ctx,
                    struct lerr *e)
{
    struct queue_override o = { queue_url, get, ctx };

    memset(c, 0, sizeof *c);
    if (load_misc(c, get, ctx, e) < 0 || load_sqs(c, queue_url ? get_with_queue : get,
                                                   queue_url ? (void *)&o : ctx, e) < 0)
        return -1;
    return 0;
}
