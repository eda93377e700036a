#include "config.h"
#include "creds.h"
#include "group.h"
#include "metrics.h"
#include "local.h"
#include "sqs.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_FLY_API "https://api.machines.dev"

const char *config_env(const char *name, void *ctx)
{
    (void)ctx;
    return getenv(name);
}

/* Each check below looks at one variable and returns 0, or -1 with e set; the loader keeps
 * every failure and goes on, so that one run names every problem. */
static void note(struct config_errors *errs, int rc, const struct lerr *e)
{
    if (rc < 0 && errs->n < CONFIG_MAX_ERRORS)
        errs->line[errs->n++] = *e;
}

/* A variable where "" counts as unset: its value, or NULL. */
static const char *value(config_getenv_fn get, void *ctx, const char *name)
{
    const char *v = get(name, ctx);

    return v && *v ? v : NULL;
}

/* The first of two variable names that is set and non-empty wins. *which names it,
 * so that an error talks about the variable the user actually set. */
static const char *pick(config_getenv_fn get, void *ctx, const char *a, const char *b,
                        const char **which)
{
    const char *v = value(get, ctx, a);

    *which = a;
    if (!v && b && (v = value(get, ctx, b)))
        *which = b;
    return v;
}

/* Values that end up in HTTP headers must not smuggle in line breaks. */
static int has_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 1;
    return 0;
}

/* The numbers: unset gives the default; set (even to "") it must be a whole number from
 * lo to hi (hi_window instead when LAMBDO_BATCH_WINDOW_MS is on), or with rate a positive
 * number of requests per second. */
static const struct number {
    const char *name;
    size_t off;  /* of the int, or with rate the double, in struct config */
    int lo, hi;
    double dflt;
    int rate;
    int hi_window;
} numbers[] = {
#define AT(field) offsetof(struct config, field)
    { "LAMBDO_SQS_LONG_POLL_SECONDS", AT(long_poll_seconds), 0, 20, 10, 0, 0 },
    { "LAMBDO_VISIBILITY_TIMEOUT", AT(visibility_timeout), 1, 43200, 30, 0, 0 },
    { "LAMBDO_RETRY_DELAY", AT(retry_delay), 0, 43200, 0, 0, 0 },
    { "LAMBDO_MACHINE_TIMEOUT", AT(machine_timeout), 1, 7 * 86400, 0, 0, 0 },
    { "LAMBDO_MAX_MACHINES", AT(max_machines), 1, 1000, 10, 0, 0 },
    { "LAMBDO_FLY_CREATE_RATE", AT(fly_create_rate), 0, 0, 1, 1, 0 },
    { "LAMBDO_FLY_CREATE_BURST", AT(fly_create_burst), 1, 10000, 3, 0, 0 },
    { "LAMBDO_FLY_GET_RATE", AT(fly_get_rate), 0, 0, 5, 1, 0 },
    { "LAMBDO_FLY_GET_BURST", AT(fly_get_burst), 1, 10000, 10, 0, 0 },
    { "LAMBDO_MAX_EVENTS_BYTES", AT(max_events_bytes), 1024, 64 << 20, 1 << 20, 0, 0 },
    { "LAMBDO_SHUTDOWN_TIMEOUT", AT(shutdown_timeout), 0, 3600, 0, 0, 0 },
    { "LAMBDO_BATCH_WINDOW_MS", AT(batch_window_ms), 0, 600000, 0, 0, 0 },
    { "LAMBDO_POOL", AT(pool), 0, 100, 0, 0, 0 },
    /* a stopped Machine costs only its root file system: ten minutes keeps the pool warm
     * across the lulls of bursty traffic for cents, and an idle pool still drains */
    { "LAMBDO_POOL_IDLE_SECONDS", AT(pool_idle_seconds), 1, 7 * 86400, 600, 0, 0 },
    /* after the window: with one, groups fill up to GROUP_MAX_PER_MACHINE */
    { "LAMBDO_EVENTS_PER_MACHINE", AT(events_per_machine), 1, 10, 5, 0,
      GROUP_MAX_PER_MACHINE },
};

static int load_number(struct config *c, const struct number *n, config_getenv_fn get,
                       void *ctx, struct lerr *e)
{
    const char *v = get(n->name, ctx);
    void *dst = (char *)c + n->off;
    int hi = n->hi_window && c->batch_window_ms ? n->hi_window : n->hi;
    char *end = NULL;
    double d = n->dflt;
    long l = (long)n->dflt;

    if (v && n->rate) {
        d = strtod(v, &end);
        if (!isdigit((unsigned char)v[0]) || *end || !(d > 0) || d > 1e6)
            return lerr_set(e, LERR_INVALID, "%s: must be a positive number of requests per "
                            "second, got \"%.40s\"", n->name, v);
    } else if (v) {
        l = strtol(v, &end, 10);
        if (!isdigit((unsigned char)v[0]) || *end || l < n->lo || l > hi)
            return lerr_set(e, LERR_INVALID, "%s: must be a whole number from %d to %d, got "
                            "\"%.40s\"", n->name, n->lo, hi, v);
    }
    if (n->rate)
        *(double *)dst = d;
    else
        *(int *)dst = (int)l;
    return 0;
}
#undef AT

/* A word with two meanings: unset is the first; *second says whether it is the second. */
static int load_word(config_getenv_fn get, void *ctx, const char *name, const char *first,
                     const char *second, int *is_second, struct lerr *e)
{
    const char *v = get(name, ctx);

    *is_second = v && strcmp(v, second) == 0;
    if (v && !*is_second && strcmp(v, first) != 0)
        return lerr_set(e, LERR_INVALID, "%s: must be %s or %s, got \"%.20s\"", name, first,
                        second, v);
    return 0;
}

static int load_log_level(struct config *c, config_getenv_fn get, void *ctx, struct lerr *e)
{
    const char *level = get("LAMBDO_LOG_LEVEL", ctx);

    c->log_level = LOG_LEVEL_INFO;
    if (level && log_level_parse(level, &c->log_level) < 0)
        return lerr_set(e, LERR_INVALID, "LAMBDO_LOG_LEVEL: must be debug, info, warn or error, "
                        "got \"%.20s\"", level);
    return 0;
}

static int load_token(struct config *c, config_getenv_fn get, void *ctx, struct lerr *e)
{
    const char *which;

    c->fly_token = pick(get, ctx, "LAMBDO_FLY_TOKEN", "FLY_API_TOKEN", &which);
    if (!c->fly_token)
        return lerr_set(e, LERR_INVALID, "LAMBDO_FLY_TOKEN (or FLY_API_TOKEN): required, not set");
    if (has_control(c->fly_token) || strchr(c->fly_token, ' '))
        return lerr_set(e, LERR_INVALID, "%s: contains spaces or control characters", which);
    return 0;
}

/* "sqs.us-east-1.amazonaws.com" and the legacy "us-east-1.queue.amazonaws.com". */
static int region_from_host(const char *host, char *out, size_t cap)
{
    const char *start = strncmp(host, "sqs.", 4) == 0 ? host + 4 : host;
    const char *end = strchr(start, '.');

    if (!end || end == start || (size_t)(end - start) >= cap)
        return -1;
    if (start == host && strncmp(end, ".queue.", 7) != 0)
        return -1;
    /* this prefix covers ".amazonaws.com.cn" too */
    if (start != host && strncmp(end, ".amazonaws.com", 14) != 0)
        return -1;
    memcpy(out, start, (size_t)(end - start));
    out[end - start] = '\0';
    return 0;
}

/* AWS serves SQS over https only: plain http there would be refused, or worse, answered. */
static int aws_plain_http(const struct url *u)
{
    size_t n = strlen(u->host);

    return !u->tls && ((n > 14 && strcmp(u->host + n - 14, ".amazonaws.com") == 0) ||
                       (n > 17 && strcmp(u->host + n - 17, ".amazonaws.com.cn") == 0));
}

/* queue_url, when not NULL, stands in for the variable (lambdo send --queue). */
static int load_queue(struct config *c, const char *queue_url, config_getenv_fn get, void *ctx,
                      struct lerr *e)
{
    c->queue_url = queue_url ? queue_url : get("LAMBDO_SQS_QUEUE_URL", ctx);
    if (!c->queue_url || !*c->queue_url)
        return lerr_set(e, LERR_INVALID, "LAMBDO_SQS_QUEUE_URL: required, not set");
    if (url_parse(c->queue_url, &c->queue, e) < 0)
        return lerr_wrap(e, "LAMBDO_SQS_QUEUE_URL");
    if (aws_plain_http(&c->queue))
        return lerr_set(e, LERR_INVALID, "LAMBDO_SQS_QUEUE_URL: http:// to AWS: use https://");
    if (strcmp(c->queue.path, "/") == 0)
        return lerr_set(e, LERR_INVALID, "LAMBDO_SQS_QUEUE_URL: has no queue path (expected "
                        "https://sqs.REGION.amazonaws.com/ACCOUNT/QUEUE)");
    c->fifo = sqs_fifo_url(c->queue.path);
    return 0;
}

static int load_endpoint(struct config *c, config_getenv_fn get, void *ctx, struct lerr *e)
{
    const char *which, *v = pick(get, ctx, "AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL", &which);

    c->sqs_endpoint = c->queue;
    strcpy(c->sqs_endpoint.path, "/");
    if (!v)
        return 0;
    if (url_parse(v, &c->sqs_endpoint, e) < 0)
        return lerr_wrap(e, "%s", which);
    if (aws_plain_http(&c->sqs_endpoint))
        return lerr_set(e, LERR_INVALID, "%s: http:// to AWS: use https://", which);
    c->sqs_endpoint_overridden = 1;
    return 0;
}

/* The signing region: AWS_REGION, else the queue's, else the AWS config file's. One that
 * disagrees with an AWS queue URL would only get every request refused. */
static int load_region(struct config *c, int queue_ok, config_getenv_fn get, void *ctx,
                       struct lerr *e)
{
    const char *which, *v = pick(get, ctx, "AWS_REGION", "AWS_DEFAULT_REGION", &which);
    char host_region[sizeof c->aws_region];
    int in_host = queue_ok && region_from_host(c->queue.host, host_region,
                                               sizeof host_region) == 0;
    int found;

    if (v) {
        if (strlen(v) >= sizeof c->aws_region || has_control(v) || strchr(v, '/') || strchr(v, ' '))
            return lerr_set(e, LERR_INVALID, "%s: \"%.40s\" is not a region name", which, v);
        if (in_host && strcmp(v, host_region) != 0)
            return lerr_set(e, LERR_INVALID, "%s: \"%s\", but the queue URL is in %s: set it "
                            "to %s or unset it", which, v, host_region, host_region);
        strcpy(c->aws_region, v);
        return 0;
    }
    if (in_host) {
        strcpy(c->aws_region, host_region);
        return 0;
    }
    if (!queue_ok)  /* the queue URL's own error says enough */
        return 0;
    found = creds_config_region(get, ctx, c->aws_region, sizeof c->aws_region, e);
    if (found == 0)
        return lerr_set(e, LERR_INVALID, "AWS_REGION: not set, the queue URL host \"%s\" "
                        "does not name a region, and the AWS config file names none",
                        c->queue.host);
    return found < 0 ? -1 : 0;
}

/* Credentials are resolved by creds.c (environment, web identity, shared files). */
static void load_sqs(struct config *c, const char *queue_url, config_getenv_fn get, void *ctx,
                     struct config_errors *errs)
{
    struct lerr e;
    int queue_ok = load_queue(c, queue_url, get, ctx, &e) == 0;

    note(errs, queue_ok ? 0 : -1, &e);
    note(errs, load_endpoint(c, get, ctx, &e), &e);
    note(errs, load_region(c, queue_ok, get, ctx, &e), &e);
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

/* Adds p's regions to c: with list, "ord, ewr" (items trimmed of spaces, none empty), else
 * p is one region. A region already there is not added again. */
static int add_regions(struct config *c, const char *which, const char *p, int list,
                       size_t *used, struct lerr *e)
{
    for (;;) {
        const char *comma = list ? strchr(p, ',') : NULL;
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char *dst = c->region_buf + *used;
        int dup = 0;

        while (list && len && *p == ' ')
            p++, len--;
        while (list && len && p[len - 1] == ' ')
            len--;
        if (len == 0)
            return lerr_set(e, LERR_INVALID, "%s: has an empty item (a comma too many)", which);
        if (len >= sizeof c->region_buf - *used || c->num_regions == CONFIG_MAX_REGIONS)
            return lerr_set(e, LERR_INVALID, "%s: too many regions (at most %d)", which,
                            CONFIG_MAX_REGIONS);
        memcpy(dst, p, len);
        dst[len] = '\0';
        if (!valid_name(dst, 16))
            return lerr_set(e, LERR_INVALID, "%s: \"%.20s\" is not a Fly region code (like "
                            "iad, ord)", which, dst);
        for (size_t i = 0; i < c->num_regions; i++)
            dup |= strcmp(c->regions[i], dst) == 0;
        if (!dup) {
            c->regions[c->num_regions++] = dst;
            *used += len + 1;
        }
        if (!comma)
            return 0;
        p = comma + 1;
    }
}

static void load_regions(struct config *c, config_getenv_fn get, void *ctx,
                         struct config_errors *errs)
{
    const char *which, *primary = pick(get, ctx, "LAMBDO_FLY_REGION", "FLY_REGION", &which);
    const char *list = value(get, ctx, "LAMBDO_FLY_REGIONS");
    size_t used = 0, before = errs->n;
    struct lerr e;

    if (primary)
        note(errs, add_regions(c, which, primary, 0, &used, &e), &e);
    if (list)
        note(errs, add_regions(c, "LAMBDO_FLY_REGIONS", list, 1, &used, &e), &e);
    if (c->num_regions == 0 && errs->n == before)
        note(errs, lerr_set(&e, LERR_INVALID, "LAMBDO_FLY_REGION (or FLY_REGION): required "
                            "unless LAMBDO_FLY_REGIONS is set"), &e);
}

static int load_app(struct config *c, config_getenv_fn get, void *ctx, struct lerr *e)
{
    const char *which;

    c->fly_app = pick(get, ctx, "LAMBDO_FLY_APP", "FLY_APP_NAME", &which);
    if (!c->fly_app)
        return lerr_set(e, LERR_INVALID, "LAMBDO_FLY_APP (or FLY_APP_NAME): required, not set");
    if (!valid_name(c->fly_app, 63))
        return lerr_set(e, LERR_INVALID, "%s: \"%.64s\" is not a Fly app name (lowercase "
                        "letters, digits and dashes)", which, c->fly_app);
    return 0;
}

static int load_fly_api(struct config *c, config_getenv_fn get, void *ctx, struct lerr *e)
{
    c->fly_api_url = value(get, ctx, "LAMBDO_FLY_API_URL");
    if (!c->fly_api_url)
        c->fly_api_url = DEFAULT_FLY_API;
    if (url_parse(c->fly_api_url, &c->fly_api, e) < 0)
        return lerr_wrap(e, "LAMBDO_FLY_API_URL");
    return 0;
}

static void load_fly(struct config *c, config_getenv_fn get, void *ctx,
                     struct config_errors *errs)
{
    struct lerr e;

    note(errs, load_token(c, get, ctx, &e), &e);
    note(errs, load_app(c, get, ctx, &e), &e);
    note(errs, load_fly_api(c, get, ctx, &e), &e);
    load_regions(c, get, ctx, errs);
}

/* What both loaders need: logging, TLS, delivery numbers. */
static void load_misc(struct config *c, config_getenv_fn get, void *ctx,
                      struct config_errors *errs)
{
    struct lerr e;

    note(errs, load_word(get, ctx, "LAMBDO_ENV", "local", "production", &c->json_logs, &e), &e);
    note(errs, load_log_level(c, get, ctx, &e), &e);
    note(errs, load_word(get, ctx, "LAMBDO_ACK", "create", "exit", &c->ack_on_exit, &e), &e);
    c->ack_given = get("LAMBDO_ACK", ctx) != NULL;
    for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++)
        note(errs, load_number(c, &numbers[i], get, ctx, &e), &e);
    c->ca_file = value(get, ctx, "SSL_CERT_FILE");
}

/* Checked here, so that a bad address stops lambdo before any network call; the port
 * being free is only known when the daemon listens. */
static int load_metrics(struct config *c, config_getenv_fn get, void *ctx, struct lerr *e)
{
    struct metrics_addr a;

    c->metrics_addr = value(get, ctx, "LAMBDO_METRICS_ADDR");
    if (c->metrics_addr && metrics_addr_parse(c->metrics_addr, &a, e) < 0)
        return lerr_wrap(e, "LAMBDO_METRICS_ADDR");
    return 0;
}

/* LAMBDO_BACKEND=local runs groups on this host: no Fly variable is needed then. */
static int load_local_command(struct config *c, config_getenv_fn get, void *ctx, struct lerr *e)
{
    if (c->backend_local)
        c->ack_on_exit = 1;  /* a child's exit status is its acknowledgement, always */
    c->local_command = value(get, ctx, "LAMBDO_LOCAL_COMMAND");
    if (c->local_command && !c->backend_local)
        return lerr_set(e, LERR_INVALID, "LAMBDO_LOCAL_COMMAND: only used with LAMBDO_BACKEND=local");
    if (c->local_command && group_command(c->local_command, NULL, e) < 0)
        return lerr_wrap(e, "LAMBDO_LOCAL_COMMAND");
    if (c->pool && c->backend_local)
        return lerr_set(e, LERR_INVALID, "LAMBDO_POOL: pools Fly Machines, not used with "
                        "LAMBDO_BACKEND=local");
    return 0;
}

static void config_start(struct config *c, struct config_errors *errs)
{
    memset(c, 0, sizeof *c);
    errs->n = 0;
}

int config_load(struct config *c, config_getenv_fn get, void *ctx, struct config_errors *errs)
{
    struct lerr e;
    int backend_ok;

    config_start(c, errs);
    load_misc(c, get, ctx, errs);
    backend_ok = load_word(get, ctx, "LAMBDO_BACKEND", "fly", "local", &c->backend_local, &e) == 0;
    note(errs, backend_ok ? 0 : -1, &e);
    if (backend_ok)  /* a misspelt "local" should not ask for Fly variables */
        note(errs, load_local_command(c, get, ctx, &e), &e);
    load_sqs(c, NULL, get, ctx, errs);
    if (c->fifo && !c->ack_given)  /* deleting at exit is what holds a group back */
        c->ack_on_exit = 1;
    if (backend_ok && !c->backend_local)
        load_fly(c, get, ctx, errs);
    note(errs, load_metrics(c, get, ctx, &e), &e);
    return errs->n ? -1 : 0;
}

int config_load_sqs(struct config *c, const char *queue_url, config_getenv_fn get, void *ctx,
                    struct config_errors *errs)
{
    config_start(c, errs);
    load_misc(c, get, ctx, errs);
    load_sqs(c, queue_url, get, ctx, errs);
    return errs->n ? -1 : 0;
}

const char *config_warning(const struct config *c)
{
    if (c->backend_local && !c->local_command)
        return "LAMBDO_LOCAL_COMMAND: not set, so every message without a command attribute "
               "fails (set it to the command for those, a JSON array)";
    if (c->fifo && !c->ack_on_exit)
        return "LAMBDO_ACK=create on a FIFO queue: a message group's order is kept within a "
               "Machine, not across Machines (the next messages of a group may start before "
               "the previous ones' Machine exits); unset LAMBDO_ACK for exit";
    return NULL;
}
