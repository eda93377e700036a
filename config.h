/*
 * config.h - lambdo's configuration, read once from the environment at start-up.
 *
 * This is the only global state lambdo has, and it is immutable after config_load().
 * Every problem is found before any network call, all of them in one run, each reported
 * as one line naming the variable and what is wrong with it; secret values are never
 * echoed. A variable set to "" counts as unset where there is a fallback name or a
 * default location (tokens, app, regions, endpoints, URLs, files, the metrics address);
 * a number or a word (LAMBDO_ACK, LAMBDO_ENV, ...) set to "" is an error: it is
 * usually a template variable that did not expand.
 */
#ifndef LAMBDO_CONFIG_H
#define LAMBDO_CONFIG_H

#include <stddef.h>
#include "err.h"
#include "log.h"
#include "url.h"

#define CONFIG_MAX_REGIONS 16
#define CONFIG_MAX_ERRORS 40    /* more than there are variables to get wrong */

/* Every problem config_load found, in the order of the variables, one line each. */
struct config_errors {
    struct lerr line[CONFIG_MAX_ERRORS];
    size_t n;
};

struct config {
    const char *queue_url;          /* LAMBDO_SQS_QUEUE_URL, as given */
    struct url queue;               /* parsed */
    int fifo;                       /* its name ends in ".fifo": a FIFO queue */
    struct url sqs_endpoint;        /* AWS_ENDPOINT_URL_SQS / AWS_ENDPOINT_URL, else the queue's origin */
    int sqs_endpoint_overridden;
    char aws_region[64];            /* AWS_REGION / AWS_DEFAULT_REGION / from the queue host */

    const char *fly_token;          /* LAMBDO_FLY_TOKEN / FLY_API_TOKEN */
    const char *fly_app;            /* LAMBDO_FLY_APP / FLY_APP_NAME */
    const char *fly_api_url;        /* LAMBDO_FLY_API_URL */
    struct url fly_api;
    char region_buf[256];           /* storage for regions[] */
    const char *regions[CONFIG_MAX_REGIONS];  /* primary first, then the fallbacks, no duplicates */
    size_t num_regions;
    char region_list[256];          /* regions[] joined by commas, for log and check lines
                                       (as long as region_buf: a comma for each NUL) */

    int long_poll_seconds;          /* 0..20 */
    int events_per_machine;         /* 1..10, or 1..1000 with a batching window */
    int visibility_timeout;         /* seconds */
    int json_logs;                  /* LAMBDO_ENV=production */
    enum log_level log_level;
    const char *ca_file;            /* SSL_CERT_FILE or NULL for the default */

    /* delivery (see README "Delivery") */
    int ack_on_exit;                /* LAMBDO_ACK=exit; 0 for create (the default, but
                                       on a FIFO queue, where exit keeps the order) */
    int ack_given;                  /* LAMBDO_ACK was set: not the default */
    int retry_delay;                /* LAMBDO_RETRY_DELAY: visibility of returned messages */
    int machine_timeout;            /* LAMBDO_MACHINE_TIMEOUT seconds, 0 = none */
    int max_machines;               /* LAMBDO_MAX_MACHINES */
    double fly_create_rate;         /* LAMBDO_FLY_CREATE_RATE per second */
    int fly_create_burst;
    double fly_get_rate;            /* LAMBDO_FLY_GET_RATE per second */
    int fly_get_burst;
    int batch_window_ms;            /* LAMBDO_BATCH_WINDOW_MS, 0 = off */
    int max_events_bytes;           /* LAMBDO_MAX_EVENTS_BYTES */
    int shutdown_timeout;           /* LAMBDO_SHUTDOWN_TIMEOUT seconds (exit mode) */
    int pool;                       /* LAMBDO_POOL: stopped Machines kept per group key, 0 off */
    int pool_idle_seconds;          /* LAMBDO_POOL_IDLE_SECONDS: an idle one is destroyed then */
    const char *metrics_addr;       /* LAMBDO_METRICS_ADDR (checked), NULL: no metrics server */

    int backend_local;              /* LAMBDO_BACKEND=local: groups run as child processes */
    const char *local_command;      /* LAMBDO_LOCAL_COMMAND (JSON array) or NULL */
};

/* Where values come from: config_env in lambdo, a table in the unit tests. */
typedef const char *(*config_getenv_fn)(const char *name, void *ctx);

/* The process environment (getenv), as a config_getenv_fn; ctx is unused. */
const char *config_env(const char *name, void *ctx);

/* A variable where "" counts as unset: its value from get, or NULL. */
const char *config_value(config_getenv_fn get, void *ctx, const char *name);

/* Reads and checks every variable. Returns 0, or -1 with every problem in errs, each a
 * line like "LAMBDO_EVENTS_PER_MACHINE: must be a whole number from 1 to 10, got \"0\"". */
int config_load(struct config *c, config_getenv_fn get, void *ctx, struct config_errors *errs);

/* Only what talking to SQS needs (queue, region, credentials, endpoint, logging, CA
 * bundle): for commands such as `lambdo send` that never reach Fly. queue_url, when not
 * NULL, stands in for LAMBDO_SQS_QUEUE_URL. */
int config_load_sqs(struct config *c, const char *queue_url, config_getenv_fn get, void *ctx,
                    struct config_errors *errs);

/* What a valid configuration still gets wrong, to say at start-up and in `lambdo check`,
 * or NULL: LAMBDO_BACKEND=local without LAMBDO_LOCAL_COMMAND fails every message that has
 * no command attribute; LAMBDO_ACK=create on a FIFO queue does not keep a message group's
 * order across Machines. */
const char *config_warning(const struct config *c);

#endif
