/* Configuration from the environment: defaults, every variable's checks, fallbacks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "config.h"

#define MAXVARS 32

struct env {
    const char *kv[MAXVARS][2];
};

static const char *env_get(const char *name, void *ctx)
{
    struct env *env = ctx;

    for (int i = 0; i < MAXVARS && env->kv[i][0]; i++)
        if (strcmp(env->kv[i][0], name) == 0)
            return env->kv[i][1];
    return NULL;
}

/* A complete, valid environment; tests override or remove single entries. */
static void env_base(struct env *env)
{
    static const char *base[][2] = {
        { "LAMBDO_SQS_QUEUE_URL", "https://sqs.eu-west-1.amazonaws.com/123456789012/jobs" },
        { "LAMBDO_FLY_TOKEN", "fo1_secret-token" },
        { "LAMBDO_FLY_APP", "my-jobs" },
        { "LAMBDO_FLY_REGION", "iad" },
        { "AWS_ACCESS_KEY_ID", "AKIDEXAMPLE" },
        { "AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY" },
    };
    memset(env, 0, sizeof *env);
    memcpy(env->kv, base, sizeof base);
}

static void env_set(struct env *env, const char *name, const char *value)
{
    int i;

    for (i = 0; i < MAXVARS && env->kv[i][0]; i++)
        if (strcmp(env->kv[i][0], name) == 0)
            break;
    assert_true(i < MAXVARS);
    env->kv[i][0] = name;
    env->kv[i][1] = value;
}

static void test_defaults(void **state)
{
    struct env env;
    struct config c;
    struct config_errors e;

    env_base(&env);
    assert_int_equal(config_load(&c, env_get, &env, &e), 0);
    assert_string_equal(c.aws_region, "eu-west-1");
    assert_string_equal(c.sqs_endpoint.host, "sqs.eu-west-1.amazonaws.com");
    assert_string_equal(c.sqs_endpoint.path, "/");
    assert_int_equal(c.sqs_endpoint_overridden, 0);
    assert_string_equal(c.fly_api.host, "api.machines.dev");
    assert_true(c.fly_api.tls);
    assert_int_equal(c.num_regions, 1);
    assert_string_equal(c.regions[0], "iad");
    assert_string_equal(c.region_list, "iad");
    assert_int_equal(c.long_poll_seconds, 10);
    assert_int_equal(c.events_per_machine, 5);
    assert_int_equal(c.visibility_timeout, 30);
    assert_int_equal(c.json_logs, 0);
    assert_int_equal(c.log_level, LOG_LEVEL_INFO);
    assert_null(c.ca_file);
}

static void test_fallback_names(void **state)
{
    struct env env;
    struct config c;
    struct config_errors e;

    env_base(&env);
    env_set(&env, "LAMBDO_SQS_QUEUE_URL", "http://127.0.0.1:4566/000000000000/jobs");
    env_set(&env, "LAMBDO_FLY_TOKEN", "");
    env_set(&env, "FLY_API_TOKEN", "from-fly");
    env_set(&env, "LAMBDO_FLY_APP", "");
    env_set(&env, "FLY_APP_NAME", "fly-app");
    env_set(&env, "LAMBDO_FLY_REGION", "");
    env_set(&env, "FLY_REGION", "ord");
    env_set(&env, "AWS_DEFAULT_REGION", "us-west-2");
    env_set(&env, "AWS_ENDPOINT_URL", "http://127.0.0.1:4566");
    assert_int_equal(config_load(&c, env_get, &env, &e), 0);
    assert_string_equal(c.fly_token, "from-fly");
    assert_string_equal(c.fly_app, "fly-app");
    assert_string_equal(c.regions[0], "ord");
    assert_string_equal(c.aws_region, "us-west-2");
    assert_int_equal(c.sqs_endpoint.port, 4566);
    assert_int_equal(c.sqs_endpoint_overridden, 1);

    /* the LAMBDO_ / specific names win over the generic ones */
    env_set(&env, "AWS_REGION", "ap-south-1");
    env_set(&env, "AWS_ENDPOINT_URL_SQS", "http://localhost:9324");
    env_set(&env, "LAMBDO_FLY_REGION", "ams");
    assert_int_equal(config_load(&c, env_get, &env, &e), 0);
    assert_string_equal(c.aws_region, "ap-south-1");
    assert_int_equal(c.sqs_endpoint.port, 9324);
    assert_string_equal(c.regions[0], "ams");
}

static void test_regions_list(void **state)
{
    struct env env;
    struct config c;
    struct config_errors e;

    env_base(&env);
    env_set(&env, "LAMBDO_FLY_REGIONS", "ord, iad,ams , cdg ");
    assert_int_equal(config_load(&c, env_get, &env, &e), 0);
    assert_int_equal(c.num_regions, 4); /* iad first, duplicate iad dropped */
    assert_string_equal(c.regions[0], "iad");
    assert_string_equal(c.regions[1], "ord");
    assert_string_equal(c.regions[2], "ams");
    assert_string_equal(c.regions[3], "cdg");
    assert_string_equal(c.region_list, "iad,ord,ams,cdg");

    env_set(&env, "LAMBDO_FLY_REGION", "");
    env_set(&env, "LAMBDO_FLY_REGIONS", "lhr");
    assert_int_equal(config_load(&c, env_get, &env, &e), 0);
    assert_int_equal(c.num_regions, 1);
    assert_string_equal(c.regions[0], "lhr");
}

static void test_delivery(void **state)
{
    struct env env;
    struct config c;
    struct config_errors e;

    env_base(&env);
    assert_int_equal(config_load(&c, env_get, &env, &e), 0);
    assert_int_equal(c.ack_on_exit, 0);
    assert_int_equal(c.retry_delay, 0);
    assert_int_equal(c.machine_timeout, 0);
    assert_int_equal(c.max_machines, 10);
    assert_true(c.fly_create_rate == 1.0 && c.fly_create_burst == 3);
    assert_true(c.fly_get_rate == 5.0 && c.fly_get_burst == 10);
    assert_int_equal(c.batch_window_ms, 0);
    assert_int_equal(c.max_events_bytes, 1 << 20);
    assert_int_equal(c.shutdown_timeout, 0);
    assert_int_equal(c.pool, 0);
    assert_int_equal(c.pool_idle_seconds, 600);

    env_set(&env, "LAMBDO_ACK", "exit");
    env_set(&env, "LAMBDO_RETRY_DELAY", "15");
    env_set(&env, "LAMBDO_MACHINE_TIMEOUT", "600");
    env_set(&env, "LAMBDO_MAX_MACHINES", "50");
    env_set(&env, "LAMBDO_FLY_CREATE_RATE", "0.5");
    env_set(&env, "LAMBDO_FLY_GET_RATE", "20");
    env_set(&env, "LAMBDO_BATCH_WINDOW_MS", "2000");
    env_set(&env, "LAMBDO_EVENTS_PER_MACHINE", "500"); /* allowed with a window */
    env_set(&env, "LAMBDO_SHUTDOWN_TIMEOUT", "20");
    env_set(&env, "LAMBDO_POOL", "8");
    env_set(&env, "LAMBDO_POOL_IDLE_SECONDS", "30");
    assert_int_equal(config_load(&c, env_get, &env, &e), 0);
    assert_int_equal(c.pool, 8);
    assert_int_equal(c.pool_idle_seconds, 30);
    assert_int_equal(c.ack_on_exit, 1);
    assert_int_equal(c.retry_delay, 15);
    assert_int_equal(c.machine_timeout, 600);
    assert_int_equal(c.max_machines, 50);
    assert_true(c.fly_create_rate == 0.5);
    assert_true(c.fly_get_rate == 20.0);
    assert_int_equal(c.batch_window_ms, 2000);
    assert_int_equal(c.events_per_machine, 500);
    assert_int_equal(c.shutdown_timeout, 20);

    env_set(&env, "LAMBDO_BATCH_WINDOW_MS", "0"); /* without a window, at most 10 */
    assert_int_equal(config_load(&c, env_get, &env, &e), -1);
    assert_non_null(strstr(e.line[0].msg, "LAMBDO_EVENTS_PER_MACHINE: must be a whole number from 1 to 10"));
}

/* A queue whose name ends in .fifo acknowledges on exit unless LAMBDO_ACK says otherwise,
 * which is then worth a warning; a standard queue keeps create. */
static void test_fifo_ack(void **state)
{
    struct env env;
    struct config c;
    struct config_errors e;

    env_base(&env);
    assert_int_equal(config_load(&c, env_get, &env, &e), 0);
    assert_int_equal(c.fifo, 0);
    assert_int_equal(c.ack_on_exit, 0);
    env_set(&env, "LAMBDO_SQS_QUEUE_URL", "https://sqs.eu-west-1.amazonaws.com/1/jobs.fifo");
    assert_int_equal(config_load(&c, env_get, &env, &e), 0);
    assert_int_equal(c.fifo, 1);
    assert_int_equal(c.ack_on_exit, 1);
    assert_int_equal(c.ack_given, 0);
    assert_null(config_warning(&c));
    env_set(&env, "LAMBDO_ACK", "create");
    assert_int_equal(config_load(&c, env_get, &env, &e), 0);
    assert_int_equal(c.ack_on_exit, 0);
    assert_non_null(config_warning(&c));
    assert_non_null(strstr(config_warning(&c), "LAMBDO_ACK=create on a FIFO queue"));
    env_set(&env, "LAMBDO_SQS_QUEUE_URL", "https://sqs.eu-west-1.amazonaws.com/1/fifo");
    assert_int_equal(config_load(&c, env_get, &env, &e), 0);
    assert_int_equal(c.fifo, 0);  /* the suffix with its dot, not the word */
    assert_int_equal(config_load_sqs(&c, "https://sqs.eu-west-1.amazonaws.com/1/q.fifo",
                                     env_get, &env, &e), 0);
    assert_int_equal(c.fifo, 1);
}

static void test_sqs_only(void **state)
{
    struct env env;
    struct config c;
    struct config_errors e;

    env_base(&env);
    env_set(&env, "LAMBDO_FLY_TOKEN", "");
    env_set(&env, "LAMBDO_FLY_APP", "");
    env_set(&env, "LAMBDO_FLY_REGION", "");
    assert_int_equal(config_load(&c, env_get, &env, &e), -1);
    assert_int_equal(config_load_sqs(&c, NULL, env_get, &env, &e), 0);
    assert_string_equal(c.queue.path, "/123456789012/jobs");
    assert_int_equal(config_load_sqs(&c, "https://sqs.us-west-2.amazonaws.com/1/other", env_get,
                                     &env, &e), 0);
    assert_string_equal(c.aws_region, "us-west-2");
    assert_string_equal(c.queue.path, "/1/other");
    env_set(&env, "LAMBDO_SQS_QUEUE_URL", "");
    assert_int_equal(config_load_sqs(&c, NULL, env_get, &env, &e), -1);
    assert_non_null(strstr(e.line[0].msg, "LAMBDO_SQS_QUEUE_URL: required"));
}

static void test_local_backend(void **state)
{
    struct env env;
    struct config c;
    struct config_errors e;

    env_base(&env);
    env_set(&env, "LAMBDO_FLY_TOKEN", "");
    env_set(&env, "LAMBDO_FLY_APP", "");
    env_set(&env, "LAMBDO_FLY_REGION", "");
    env_set(&env, "LAMBDO_BACKEND", "local");
    assert_int_equal(config_load(&c, env_get, &env, &e), 0); /* no Fly variable needed */
    assert_int_equal(c.backend_local, 1);
    assert_null(c.local_command);
    /* valid, but every message without a command would fail: said at start-up and in check */
    assert_non_null(config_warning(&c));
    assert_true(strncmp(config_warning(&c), "LAMBDO_LOCAL_COMMAND: not set, so every message "
                        "without a command attribute fails", 70) == 0);
    /* The child's exit status acknowledges, whatever LAMBDO_ACK says (unset or create). */
    assert_int_equal(c.ack_on_exit, 1);
    env_set(&env, "LAMBDO_ACK", "create");
    assert_int_equal(config_load(&c, env_get, &env, &e), 0);
    assert_int_equal(c.ack_on_exit, 1);
    env_set(&env, "LAMBDO_LOCAL_COMMAND", "[\"node\", \"/lambdo/runtime.mjs\"]");
    assert_int_equal(config_load(&c, env_get, &env, &e), 0);
    assert_string_equal(c.local_command, "[\"node\", \"/lambdo/runtime.mjs\"]");
    assert_null(config_warning(&c));
    env_set(&env, "LAMBDO_LOCAL_COMMAND", "node index.js");
    assert_int_equal(config_load(&c, env_get, &env, &e), -1);
    assert_true(strncmp(e.line[0].msg, "LAMBDO_LOCAL_COMMAND: ", 22) == 0);
    /* the pool is one of Fly Machines */
    env_set(&env, "LAMBDO_LOCAL_COMMAND", "[\"node\"]");
    env_set(&env, "LAMBDO_POOL", "2");
    assert_int_equal(config_load(&c, env_get, &env, &e), -1);
    assert_string_equal(e.line[0].msg, "LAMBDO_POOL: pools Fly Machines, not used with "
                        "LAMBDO_BACKEND=local");
}

/* The signing region from an AWS queue host: today's, the legacy form, China's; any other
 * host names none. */
static void test_region_from_host(void **state)
{
    static const struct { const char *url, *region; } cases[] = {
        { "https://sqs.us-west-2.amazonaws.com/1/q", "us-west-2" },
        { "https://us-east-2.queue.amazonaws.com/1/q", "us-east-2" },
        { "https://sqs.cn-north-1.amazonaws.com.cn/1/q", "cn-north-1" },
        { "https://sqs.eu-west-1.example.com/1/q", NULL },
        { "https://sqs..amazonaws.com/1/q", NULL },
        { "https://eu-west-1.example.com/1/q", NULL },
    };
    struct env env;
    struct config c;
    struct config_errors e;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        env_base(&env);
        env_set(&env, "LAMBDO_SQS_QUEUE_URL", cases[i].url);
        if (cases[i].region) {
            assert_int_equal(config_load(&c, env_get, &env, &e), 0);
            assert_string_equal(c.aws_region, cases[i].region);
        } else {
            assert_int_equal(config_load(&c, env_get, &env, &e), -1);
            assert_non_null(strstr(e.line[0].msg, "does not name a region"));
        }
    }
}

static void test_production_logs(void **state)
{
    struct env env;
    struct config c;
    struct config_errors e;

    env_base(&env);
    env_set(&env, "LAMBDO_ENV", "production");
    env_set(&env, "LAMBDO_LOG_LEVEL", "debug");
    env_set(&env, "SSL_CERT_FILE", "/tmp/ca.pem");
    assert_int_equal(config_load(&c, env_get, &env, &e), 0);
    assert_int_equal(c.json_logs, 1);
    assert_int_equal(c.log_level, LOG_LEVEL_DEBUG);
    assert_string_equal(c.ca_file, "/tmp/ca.pem");
}

/* Each bad environment must fail with a message that starts with the variable's name and
 * says what is wrong; a secret value never appears in it. */
static const struct bad_case {
    const char *name, *value, *expect_prefix, *expect_text;
} bad_cases[] = {
    { "LAMBDO_SQS_QUEUE_URL", NULL, "LAMBDO_SQS_QUEUE_URL: ", "required" },
    { "LAMBDO_SQS_QUEUE_URL", "ftp://x/1/q", "LAMBDO_SQS_QUEUE_URL: ", "" },
    { "LAMBDO_SQS_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/", "LAMBDO_SQS_QUEUE_URL: ", "queue path" },
    { "LAMBDO_SQS_QUEUE_URL", "https://queue.example.com/1/q", "AWS_REGION: ", "does not name a region" },
    { "LAMBDO_FLY_TOKEN", NULL, "LAMBDO_FLY_TOKEN (or FLY_API_TOKEN): ", "required" },
    { "LAMBDO_FLY_TOKEN", "abc\r\nX-Evil: 1", "LAMBDO_FLY_TOKEN: ", "control" },
    { "LAMBDO_FLY_APP", NULL, "LAMBDO_FLY_APP (or FLY_APP_NAME): ", "required" },
    { "LAMBDO_FLY_APP", "My_App", "LAMBDO_FLY_APP: ", "not a Fly app name" },
    { "LAMBDO_FLY_APP", "a/../b", "LAMBDO_FLY_APP: ", "not a Fly app name" },
    { "LAMBDO_FLY_REGION", NULL, "LAMBDO_FLY_REGION (or FLY_REGION): ", "required unless" },
    { "LAMBDO_FLY_REGION", "I AD", "LAMBDO_FLY_REGION: ", "not a Fly region" },
    { "LAMBDO_FLY_REGIONS", "ord,Bad!", "LAMBDO_FLY_REGIONS: ", "not a Fly region" },
    { "LAMBDO_FLY_API_URL", "api.machines.dev", "LAMBDO_FLY_API_URL: ", "" },
    { "LAMBDO_SQS_LONG_POLL_SECONDS", "21", "LAMBDO_SQS_LONG_POLL_SECONDS: ", "from 0 to 20" },
    { "LAMBDO_SQS_LONG_POLL_SECONDS", "-1", "LAMBDO_SQS_LONG_POLL_SECONDS: ", "from 0 to 20" },
    { "LAMBDO_SQS_LONG_POLL_SECONDS", "5s", "LAMBDO_SQS_LONG_POLL_SECONDS: ", "whole number" },
    { "LAMBDO_EVENTS_PER_MACHINE", "0", "LAMBDO_EVENTS_PER_MACHINE: ", "from 1 to 10" },
    { "LAMBDO_EVENTS_PER_MACHINE", "11", "LAMBDO_EVENTS_PER_MACHINE: ", "from 1 to 10" },
    { "LAMBDO_ACK", "maybe", "LAMBDO_ACK: ", "create or exit" },
    { "LAMBDO_BACKEND", "docker", "LAMBDO_BACKEND: ", "fly or local" },
    { "LAMBDO_METRICS_ADDR", "example.com:9090", "LAMBDO_METRICS_ADDR: ", "" },
    { "LAMBDO_METRICS_ADDR", "127.0.0.1:99999", "LAMBDO_METRICS_ADDR: ", "" },
    { "LAMBDO_LOCAL_COMMAND", "[\"node\"]", "LAMBDO_LOCAL_COMMAND: ", "only used with LAMBDO_BACKEND=local" },
    { "LAMBDO_RETRY_DELAY", "-5", "LAMBDO_RETRY_DELAY: ", "from 0 to 43200" },
    { "LAMBDO_MACHINE_TIMEOUT", "0", "LAMBDO_MACHINE_TIMEOUT: ", "from 1 to" },
    { "LAMBDO_MAX_MACHINES", "0", "LAMBDO_MAX_MACHINES: ", "from 1 to 1000" },
    { "LAMBDO_FLY_CREATE_RATE", "0", "LAMBDO_FLY_CREATE_RATE: ", "positive number" },
    { "LAMBDO_FLY_CREATE_RATE", "fast", "LAMBDO_FLY_CREATE_RATE: ", "positive number" },
    { "LAMBDO_FLY_GET_RATE", "-1", "LAMBDO_FLY_GET_RATE: ", "positive number" },
    { "LAMBDO_FLY_CREATE_BURST", "0", "LAMBDO_FLY_CREATE_BURST: ", "from 1 to" },
    { "LAMBDO_FLY_GET_BURST", "x", "LAMBDO_FLY_GET_BURST: ", "whole number" },
    { "LAMBDO_MAX_EVENTS_BYTES", "10", "LAMBDO_MAX_EVENTS_BYTES: ", "from 1024 to" },
    { "LAMBDO_SHUTDOWN_TIMEOUT", "3601", "LAMBDO_SHUTDOWN_TIMEOUT: ", "from 0 to 3600" },
    { "LAMBDO_POOL", "101", "LAMBDO_POOL: ", "from 0 to 100" },
    { "LAMBDO_POOL_IDLE_SECONDS", "0", "LAMBDO_POOL_IDLE_SECONDS: ", "from 1 to 604800" },
    { "LAMBDO_BATCH_WINDOW_MS", "600001", "LAMBDO_BATCH_WINDOW_MS: ", "from 0 to 600000" },
    { "LAMBDO_VISIBILITY_TIMEOUT", "0", "LAMBDO_VISIBILITY_TIMEOUT: ", "from 1 to 43200" },
    { "LAMBDO_VISIBILITY_TIMEOUT", "99999999999999999999", "LAMBDO_VISIBILITY_TIMEOUT: ", "whole number" },
    { "LAMBDO_LOG_LEVEL", "verbose", "LAMBDO_LOG_LEVEL: ", "debug, info, warn or error" },
    { "AWS_REGION", "us east", "AWS_REGION: ", "not a region name" },
    { "AWS_ENDPOINT_URL_SQS", "localhost:4566", "AWS_ENDPOINT_URL_SQS: ", "" },
    /* accepted without a word before issue #10 */
    { "LAMBDO_ENV", "prod", "LAMBDO_ENV: ", "must be local or production, got \"prod\"" },
    { "AWS_REGION", "us-east-1", "AWS_REGION: ", "the queue URL is in eu-west-1: set it to eu-west-1" },
    { "AWS_DEFAULT_REGION", "eu-west-2", "AWS_DEFAULT_REGION: ", "the queue URL is in eu-west-1" },
    { "LAMBDO_SQS_QUEUE_URL", "http://sqs.eu-west-1.amazonaws.com/1/q", "LAMBDO_SQS_QUEUE_URL: ", "use https://" },
    { "LAMBDO_SQS_QUEUE_URL", "http://eu-west-1.queue.amazonaws.com/1/q", "LAMBDO_SQS_QUEUE_URL: ", "use https://" },
    { "AWS_ENDPOINT_URL_SQS", "http://sqs.eu-west-1.amazonaws.com", "AWS_ENDPOINT_URL_SQS: ", "use https://" },
    { "LAMBDO_FLY_REGIONS", "ord,,ewr", "LAMBDO_FLY_REGIONS: ", "empty item" },
    { "LAMBDO_FLY_REGIONS", "ord,", "LAMBDO_FLY_REGIONS: ", "empty item" },
    { "LAMBDO_FLY_REGIONS", ", ord", "LAMBDO_FLY_REGIONS: ", "empty item" },
    { "LAMBDO_MAX_MACHINES", "", "LAMBDO_MAX_MACHINES: ", "from 1 to 1000, got \"\"" },
    { "LAMBDO_SQS_LONG_POLL_SECONDS", "", "LAMBDO_SQS_LONG_POLL_SECONDS: ", "from 0 to 20" },
    { "LAMBDO_FLY_GET_RATE", "", "LAMBDO_FLY_GET_RATE: ", "positive number" },
    { "LAMBDO_ACK", "", "LAMBDO_ACK: ", "create or exit" },
    { "LAMBDO_LOG_LEVEL", "", "LAMBDO_LOG_LEVEL: ", "debug, info" },
};

static void test_bad_values(void **state)
{
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const struct bad_case *t = &bad_cases[i];
        struct env env;
        struct config c;
        struct config_errors e = { 0 };

        env_base(&env);
        env_set(&env, t->name, t->value);
        if (config_load(&c, env_get, &env, &e) == 0)
            fail_msg("case %zu (%s=%s) was accepted", i, t->name, t->value ? t->value : "");
        if (strncmp(e.line[0].msg, t->expect_prefix, strlen(t->expect_prefix)) != 0 ||
            !strstr(e.line[0].msg, t->expect_text))
            fail_msg("case %zu: message \"%s\" lacks \"%s\"/\"%s\"", i, e.line[0].msg, t->expect_prefix,
                     t->expect_text);
        if (e.n != 1)
            fail_msg("case %zu: %zu lines, the second \"%s\"", i, e.n, e.line[1].msg);
        assert_int_equal(e.line[0].kind, LERR_INVALID);
        assert_null(strstr(e.line[0].msg, "wJalrXUtnFEMI"));
        assert_null(strstr(e.line[0].msg, "fo1_secret"));
        assert_null(strstr(e.line[0].msg, "X-Evil"));
    }
}

static void expect_lines(const struct config_errors *e, const char *const *prefixes, size_t n)
{
    for (size_t i = 0; i < e->n; i++)
        print_message("  %s\n", e->line[i].msg);
    assert_int_equal(e->n, n);
    for (size_t i = 0; i < n; i++) {
        if (strncmp(e->line[i].msg, prefixes[i], strlen(prefixes[i])) != 0)
            fail_msg("line %zu is \"%s\", expected \"%s...\"", i, e->line[i].msg, prefixes[i]);
        assert_int_equal(e->line[i].kind, LERR_INVALID);
    }
}

/* One run names every problem, one line each, in the order of the variables. */
static void test_every_problem_at_once(void **state)
{
    static const char *const expected[] = {
        "LAMBDO_ENV: must be local or production",
        "LAMBDO_ACK: must be create or exit",
        "LAMBDO_MAX_MACHINES: must be a whole number from 1 to 1000, got \"\"",
        "LAMBDO_EVENTS_PER_MACHINE: must be a whole number from 1 to 10, got \"20\"",
        "AWS_REGION: \"us-east-1\", but the queue URL is in eu-west-1",
        "LAMBDO_FLY_TOKEN (or FLY_API_TOKEN): required",
        "LAMBDO_FLY_APP: \"My_App\" is not a Fly app name",
        "LAMBDO_FLY_REGION: \"I AD\" is not a Fly region code",
        "LAMBDO_FLY_REGIONS: has an empty item",
        "LAMBDO_METRICS_ADDR: ",
    };
    static const char *const sqs_only[] = {
        "LAMBDO_ENV: must be local or production",
        "LAMBDO_ACK: must be create or exit",
        "LAMBDO_MAX_MACHINES: must be a whole number from 1 to 1000, got \"\"",
        "LAMBDO_EVENTS_PER_MACHINE: must be a whole number from 1 to 10, got \"20\"",
        "AWS_REGION: \"us-east-1\", but the queue URL is in eu-west-1",
    };
    static const char *const bad_backend[] = {
        "LAMBDO_BACKEND: must be fly or local, got \"locl\"",
        "LAMBDO_SQS_QUEUE_URL: http:// to AWS: use https://",
    };
    struct env env;
    struct config c;
    struct config_errors e;

    env_base(&env);
    env_set(&env, "LAMBDO_ENV", "prod");
    env_set(&env, "LAMBDO_ACK", "sometimes");
    env_set(&env, "LAMBDO_MAX_MACHINES", "");
    env_set(&env, "LAMBDO_EVENTS_PER_MACHINE", "20");
    env_set(&env, "AWS_REGION", "us-east-1");
    env_set(&env, "LAMBDO_FLY_TOKEN", NULL);
    env_set(&env, "LAMBDO_FLY_APP", "My_App");
    env_set(&env, "LAMBDO_FLY_REGION", "I AD");
    env_set(&env, "LAMBDO_FLY_REGIONS", "ord,,ewr");
    env_set(&env, "LAMBDO_METRICS_ADDR", "example.com:1");
    assert_int_equal(config_load(&c, env_get, &env, &e), -1);
    expect_lines(&e, expected, sizeof expected / sizeof expected[0]);
    assert_int_equal(config_load_sqs(&c, NULL, env_get, &env, &e), -1);
    expect_lines(&e, sqs_only, sizeof sqs_only / sizeof sqs_only[0]);

    /* a misspelt backend asks for no Fly variable: it may well have meant local */
    env_base(&env);
    env_set(&env, "LAMBDO_BACKEND", "locl");
    env_set(&env, "LAMBDO_FLY_TOKEN", NULL);
    env_set(&env, "LAMBDO_SQS_QUEUE_URL", "http://sqs.eu-west-1.amazonaws.com/1/q");
    assert_int_equal(config_load(&c, env_get, &env, &e), -1);
    expect_lines(&e, bad_backend, sizeof bad_backend / sizeof bad_backend[0]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_fallback_names),
        cmocka_unit_test(test_regions_list),
        cmocka_unit_test(test_region_from_host),
        cmocka_unit_test(test_production_logs),
        cmocka_unit_test(test_delivery),
        cmocka_unit_test(test_sqs_only),
        cmocka_unit_test(test_local_backend),
        cmocka_unit_test(test_fifo_ack),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_every_problem_at_once),
    };
    return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
