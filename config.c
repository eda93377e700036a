#include "config.h"
#include "creds.h"
#include "err.h"
#include "group.h"
#include "log.h"
#include "metrics.h"
#include "text.h"
#include "url.h"

#include <ctype.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

const char *config_env(const char *name, void *ctx)
{
    (void)ctx;
    return getenv(name);
}

const char *config_value(config_getenv_fn get, void *ctx, const char *name)
{
    const char *v = get(name, ctx);

    return v && *v ? v : NULL;
}

/* One run of a loader. Each check below looks at one variable and returns 0, or -1 with e
 * set; the loader keeps every failure and goes on, so that one run names every problem. */
struct load {
    struct config *c;
    config_getenv_fn get;
    void *ctx;
    struct config_errors *errs;
    struct lerr e;
};

static void note(struct load *l, int rc)
{
    if (rc < 0 && l->errs->n < CONFIG_MAX_ERRORS)
        l->errs->line[l->errs->n++] = l->e;
}


/* The first of two variable names that is set and non-empty wins. *which names it,
 * so that an error talks about the variable the user actually set. */
static const char *pick(struct load *l, const char *a, const char *b, const char **which)
{
    const char *v = config_value(l->get, l->ctx, a);

    *which = a;
    if (!v && (v = config_value(l->get, l->ctx, b)))
        *which = b;
    return v;
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
#undef AT
};

static int load_number(struct load *l, const struct number *n)
{
    const char *v = l->get(n->name, l->ctx);
    void *dst = (char *)l->c + n->off;
    int hi = n->hi_window && l->c->batch_window_ms ? n->hi_window : n->hi;
    char *end = NULL;
    double d = n->dflt;
    long i = (long)n->dflt;

    if (v && n->rate) {
        d = strtod(v, &end);
        if (!isdigit((unsigned char)v[0]) || *end || !(d > 0) || d > 1e6)
            return lerr_set(&l->e, LERR_INVALID, "%s: must be a positive number of requests "
                            "per second, got \"%.40s\"", n->name, v);
    } else if (v) {
        i = strtol(v, &end, 10);
        if (!isdigit((unsigned char)v[0]) || *end || i < n->lo || i > hi)
            return lerr_set(&l->e, LERR_INVALID, "%s: must be a whole number from %d to %d, "
                            "got \"%.40s\"", n->name, n->lo, hi, v);
    }
    if (n->rate)
        *(double *)dst = d;
    else
        *(int *)dst = (int)i;
    return 0;
}

/* A word with two meanings: unset is the first; *second says whether it is the second. */
static int load_word(struct load *l, const char *name, const char *first, const char *second,
                     int *is_second)
{
    const char *v = l->get(name, l->ctx);

    *is_second = v && strcmp(v, second) == 0;
    if (v && !*is_second && strcmp(v, first) != 0)
        return lerr_set(&l->e, LERR_INVALID, "%s: must be %s or %s, got \"%.20s\"", name,
                        first, second, v);
    return 0;
}

static int load_log_level(struct load *l)
{
    const char *level = l->get("LAMBDO_LOG_LEVEL", l->ctx);

    l->c->log_level = LOG_LEVEL_INFO;
    if (level && log_level_parse(level, &l->c->log_level) < 0)
        return lerr_set(&l->e, LERR_INVALID, "LAMBDO_LOG_LEVEL: must be debug, info, warn or "
                        "error, got \"%.20s\"", level);
    return 0;
}

/* Parses v, the value of which, into u. AWS serves SQS over https only: plain http there
 * would be refused, or worse, answered. */
static int load_url(struct load *l, const char *which, const char *v, struct url *u)
{
    if (url_parse(v, u, &l->e) < 0)
        return lerr_wrap(&l->e, "%s", which);
    if (!u->tls && (text_ends_with(u->host, ".amazonaws.com") ||
                    text_ends_with(u->host, ".amazonaws.com.cn")))
        return lerr_set(&l->e, LERR_INVALID, "%s: http:// to AWS: use https://", which);
    return 0;
}

/* queue_url, when not NULL, stands in for the variable (lambdo send --queue). */
static int load_queue(struct load *l, const char *queue_url)
{
    struct config *c = l->c;

    c->queue_url = queue_url ? queue_url : l->get("LAMBDO_SQS_QUEUE_URL", l->ctx);
    if (!c->queue_url || !*c->queue_url)
        return lerr_set(&l->e, LERR_INVALID, "LAMBDO_SQS_QUEUE_URL: required, not set");
    if (load_url(l, "LAMBDO_SQS_QUEUE_URL", c->queue_url, &c->queue) < 0)
        return -1;
    if (strcmp(c->queue.path, "/") == 0)
        return lerr_set(&l->e, LERR_INVALID, "LAMBDO_SQS_QUEUE_URL: has no queue path "
                        "(expected https://sqs.REGION.amazonaws.com/ACCOUNT/QUEUE)");
    c->fifo = text_ends_with(c->queue.path, ".fifo");  /* SQS's rule for a FIFO queue */
    return 0;
}

static int load_endpoint(struct load *l)
{
    const char *which, *v = pick(l, "AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL", &which);

    l->c->sqs_endpoint = l->c->queue;
    strcpy(l->c->sqs_endpoint.path, "/");
    l->c->sqs_endpoint_overridden = v != NULL;
    return v ? load_url(l, which, v, &l->c->sqs_endpoint) : 0;
}

/* The region in "sqs.us-east-1.amazonaws.com" (".amazonaws.com.cn" too) and in the legacy
 * "us-east-1.queue.amazonaws.com", into out (64 bytes); -1 for any other host. (Not
 * sscanf: it would bring musl's scanf, 4 KB, into the binary for this alone.) */
static int region_from_host(const char *host, char *out)
{
    const char *start = strncmp(host, "sqs.", 4) == 0 ? host + 4 : host;
    const char *after = start == host ? ".queue." : ".amazonaws.com";
    size_t n = strcspn(start, ".");

    if (n == 0 || n >= 64 || strncmp(start + n, after, strlen(after)) != 0)
        return -1;
    memcpy(out, start, n);
    out[n] = '\0';
    return 0;
}

/* The signing region: AWS_REGION, else the queue's, else the AWS config file's. One that
 * disagrees with an AWS queue URL would only get every request refused. */
static int load_region(struct load *l, int queue_ok)
{
    struct config *c = l->c;
    const char *which, *v = pick(l, "AWS_REGION", "AWS_DEFAULT_REGION", &which);
    int in_host = queue_ok && region_from_host(c->queue.host, c->aws_region) == 0;
    int found;

    if (v && (strlen(v) >= sizeof c->aws_region || !text_clean(v, 0x20, "/ ")))
        return lerr_set(&l->e, LERR_INVALID, "%s: \"%.40s\" is not a region name", which, v);
    if (v && in_host && strcmp(v, c->aws_region) != 0)
        return lerr_set(&l->e, LERR_INVALID, "%s: \"%s\", but the queue URL is in %s: set it "
                        "to %s or unset it", which, v, c->aws_region, c->aws_region);
    if (v)
        strcpy(c->aws_region, v);
    if (v || in_host || !queue_ok)  /* without a queue URL, its own error says enough */
        return 0;
    found = creds_config_region(l->get, l->ctx, c->aws_region, sizeof c->aws_region, &l->e);
    if (found == 0)
        return lerr_set(&l->e, LERR_INVALID, "AWS_REGION: not set, the queue URL host \"%s\" "
                        "does not name a region, and the AWS config file names none",
                        c->queue.host);
    return found < 0 ? -1 : 0;
}

/* Fly's names for apps and regions: lowercase letters, digits and dashes, not first. */
static int valid_name(const char *s, size_t maxlen)
{
    size_t n = strlen(s);

    return n > 0 && n <= maxlen && s[0] != '-' &&
           strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789-") == n;
}

/* Adds p's regions to c: with list, "ord, ewr" (items trimmed of spaces, none empty), else
 * p is one region. A region already there is not added again. */
static int add_regions(struct load *l, const char *which, const char *p, int list, size_t *used)
{
    struct config *c = l->c;

    for (;;) {
        size_t len = list ? strcspn(p, ",") : strlen(p);
        const char *next = p + len;
        char *dst = c->region_buf + *used;
        int dup = 0;

        while (list && len && *p == ' ')
            p++, len--;
        while (list && len && p[len - 1] == ' ')
            len--;
        if (len == 0)
            return lerr_set(&l->e, LERR_INVALID, "%s: has an empty item (a comma too many)",
                            which);
        if (len >= sizeof c->region_buf - *used || c->num_regions == CONFIG_MAX_REGIONS)
            return lerr_set(&l->e, LERR_INVALID, "%s: too many regions (at most %d)", which,
                            CONFIG_MAX_REGIONS);
        memcpy(dst, p, len);
        dst[len] = '\0';
        if (!valid_name(dst, 16))
            return lerr_set(&l->e, LERR_INVALID, "%s: \"%.20s\" is not a Fly region code "
                            "(like iad, ord)", which, dst);
        for (size_t i = 0; i < c->num_regions; i++)
            dup |= strcmp(c->regions[i], dst) == 0;
        if (!dup) {
            c->regions[c->num_regions++] = dst;
            *used += len + 1;
            if (c->num_regions > 1)
                strcat(c->region_list, ",");
            strcat(c->region_list, dst);
        }
        if (!*next)
            return 0;
        p = next + 1;
    }
}

static void load_regions(struct load *l)
{
    const char *which, *primary = pick(l, "LAMBDO_FLY_REGION", "FLY_REGION", &which);
    const char *list = config_value(l->get, l->ctx, "LAMBDO_FLY_REGIONS");
    size_t used = 0, before = l->errs->n;

    if (primary)
        note(l, add_regions(l, which, primary, 0, &used));
    if (list)
        note(l, add_regions(l, "LAMBDO_FLY_REGIONS", list, 1, &used));
    if (l->c->num_regions == 0 && l->errs->n == before)
        note(l, lerr_set(&l->e, LERR_INVALID, "LAMBDO_FLY_REGION (or FLY_REGION): required "
                         "unless LAMBDO_FLY_REGIONS is set"));
}

static int load_token(struct load *l)
{
    const char *which, *v = pick(l, "LAMBDO_FLY_TOKEN", "FLY_API_TOKEN", &which);

    l->c->fly_token = v;
    if (!v)
        return lerr_set(&l->e, LERR_INVALID, "LAMBDO_FLY_TOKEN (or FLY_API_TOKEN): required, "
                        "not set");
    if (!text_clean(v, 0x20, " "))
        return lerr_set(&l->e, LERR_INVALID, "%s: contains spaces or control characters", which);
    return 0;
}

static int load_app(struct load *l)
{
    const char *which, *v = pick(l, "LAMBDO_FLY_APP", "FLY_APP_NAME", &which);

    l->c->fly_app = v;
    if (!v)
        return lerr_set(&l->e, LERR_INVALID, "LAMBDO_FLY_APP (or FLY_APP_NAME): required, "
                        "not set");
    if (!valid_name(v, 63))
        return lerr_set(&l->e, LERR_INVALID, "%s: \"%.64s\" is not a Fly app name (lowercase "
                        "letters, digits and dashes)", which, v);
    return 0;
}

/* Checked here, so that a bad address stops lambdo before any network call; the port
 * being free is only known when the daemon listens. */
static int load_metrics(struct load *l)
{
    struct metrics_addr a;

    l->c->metrics_addr = config_value(l->get, l->ctx, "LAMBDO_METRICS_ADDR");
    if (l->c->metrics_addr && metrics_addr_parse(l->c->metrics_addr, &a, &l->e) < 0)
        return lerr_wrap(&l->e, "LAMBDO_METRICS_ADDR");
    return 0;
}

/* LAMBDO_BACKEND=local runs groups on this host: no Fly variable is needed then. */
static int load_local_command(struct load *l)
{
    struct config *c = l->c;

    if (c->backend_local)
        c->ack_on_exit = 1;  /* a child's exit status is its acknowledgement, always */
    c->local_command = config_value(l->get, l->ctx, "LAMBDO_LOCAL_COMMAND");
    if (c->local_command && !c->backend_local)
        return lerr_set(&l->e, LERR_INVALID, "LAMBDO_LOCAL_COMMAND: only used with "
                        "LAMBDO_BACKEND=local");
    if (c->local_command && group_command(c->local_command, NULL, &l->e) < 0)
        return lerr_wrap(&l->e, "LAMBDO_LOCAL_COMMAND");
    if (c->pool && c->backend_local)
        return lerr_set(&l->e, LERR_INVALID, "LAMBDO_POOL: pools Fly Machines, not used with "
                        "LAMBDO_BACKEND=local");
    return 0;
}

/* Every variable, in the order errors are listed: logging, delivery, TLS; with all, the
 * backend; the queue, its endpoint and region; with all, Fly (unless the backend is local
 * or misspelt: it may well have meant local) and the metrics address. */
static int load(struct config *c, const char *queue_url, int all, config_getenv_fn get,
                void *ctx, struct config_errors *errs)
{
    struct load l = { .c = c, .get = get, .ctx = ctx, .errs = errs };
    int fly = all, queue_ok;

    memset(c, 0, sizeof *c);
    errs->n = 0;
    note(&l, load_word(&l, "LAMBDO_ENV", "local", "production", &c->json_logs));
    note(&l, load_log_level(&l));
    note(&l, load_word(&l, "LAMBDO_ACK", "create", "exit", &c->ack_on_exit));
    c->ack_given = get("LAMBDO_ACK", ctx) != NULL;
    for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++)
        note(&l, load_number(&l, &numbers[i]));
    c->ca_file = config_value(get, ctx, "SSL_CERT_FILE");
    if (all) {
        int misspelt = load_word(&l, "LAMBDO_BACKEND", "fly", "local", &c->backend_local) < 0;

        note(&l, misspelt ? -1 : load_local_command(&l));
        fly = !misspelt && !c->backend_local;
    }
    queue_ok = load_queue(&l, queue_url) == 0;
    note(&l, queue_ok ? 0 : -1);
    note(&l, load_endpoint(&l));
    note(&l, load_region(&l, queue_ok));
    if (c->fifo && !c->ack_given)  /* deleting at exit is what holds a group back */
        c->ack_on_exit = 1;
    if (fly) {
        note(&l, load_token(&l));
        note(&l, load_app(&l));
        c->fly_api_url = config_value(get, ctx, "LAMBDO_FLY_API_URL");
        if (!c->fly_api_url)
            c->fly_api_url = "https://api.machines.dev";
        note(&l, load_url(&l, "LAMBDO_FLY_API_URL", c->fly_api_url, &c->fly_api));
        load_regions(&l);
    }
    if (all)
        note(&l, load_metrics(&l));
    return errs->n ? -1 : 0;
}

int config_load(struct config *c, config_getenv_fn get, void *ctx, struct config_errors *errs)
{
    return load(c, NULL, 1, get, ctx, errs);
}

int config_load_sqs(struct config *c, const char *queue_url, config_getenv_fn get, void *ctx,
                    struct config_errors *errs)
{
    return load(c, queue_url, 0, get, ctx, errs);
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
