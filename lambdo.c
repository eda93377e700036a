/*
 * lambdo - turns messages on an Amazon SQS queue into Fly.io Machines.
 *
 * This file is the command line: arguments, configuration, then daemon_run().
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cJSON.h"
#include "cli.h"
#include "config.h"
#include "daemon.h"
#include "log.h"

static const char usage[] =
    "usage: lambdo [--once | --help | --version]\n"
    "       lambdo send --image IMAGE [--size SIZE] [--command JSON] [--queue URL]\n"
    "                   [--group-id ID | --group-id-from PTR]\n"
    "                   [--dedup-id ID | --dedup-id-from PTR] [BODY | --array FILE]\n"
    "       lambdo check\n"
    "\n"
    "Long-polls an SQS queue and runs each group of events (same image, size and command)\n"
    "in a Fly Machine whose /tmp/events.json holds the group's message bodies, byte for byte.\n"
    "Messages are deleted once their Machine was created (LAMBDO_ACK=create) or exited 0\n"
    "(LAMBDO_ACK=exit).\n"
    "\n"
    "Configuration (environment; every problem is named, one line each, exit status 2):\n"
    "  LAMBDO_SQS_QUEUE_URL             queue URL (required)\n"
    "  LAMBDO_FLY_TOKEN | FLY_API_TOKEN   Fly API token (required)\n"
    "  LAMBDO_FLY_APP | FLY_APP_NAME    app the Machines are created in (required)\n"
    "  LAMBDO_FLY_REGION | FLY_REGION   primary region (required unless LAMBDO_FLY_REGIONS)\n"
    "  LAMBDO_FLY_REGIONS               comma list of regions tried after the primary\n"
    "  LAMBDO_FLY_API_URL               Machines API base (https://api.machines.dev)\n"
    "  LAMBDO_SQS_LONG_POLL_SECONDS     0 to 20 (10)\n"
    "  LAMBDO_EVENTS_PER_MACHINE        1 to 10, up to 1000 with a batch window (5)\n"
    "  LAMBDO_VISIBILITY_TIMEOUT        seconds a received message stays hidden (30)\n"
    "  LAMBDO_ENV                       production: JSON log lines, or local (local)\n"
    "  LAMBDO_LOG_LEVEL                 debug, info, warn, error (info)\n"
    "  LAMBDO_BACKEND                   fly, or local: groups run as child processes (fly)\n"
    "  LAMBDO_LOCAL_COMMAND             local backend: command (JSON array) for messages\n"
    "                                   without a command attribute\n"
    "  LAMBDO_CHILD_<NAME>              local backend: reaches the child as <NAME>; the child\n"
    "                                   gets no LAMBDO_*, FLY_API_TOKEN, FLY_ACCESS_TOKEN, nor\n"
    "                                   AWS_* but the region\n"
    "  LAMBDO_METRICS_ADDR              serve /metrics and /healthz, e.g. 127.0.0.1:9090 (off)\n"
    "  SSL_CERT_FILE                    CA bundle (/etc/ssl/certs/ca-certificates.crt)\n"
    "AWS:\n"
    "  AWS_REGION | AWS_DEFAULT_REGION  signing region (from the queue URL's host)\n"
    "  AWS_ENDPOINT_URL_SQS | AWS_ENDPOINT_URL   SQS endpoint override (emulators)\n"
    "  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN   static credentials\n"
    "  AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_SESSION_NAME   web identity (STS);\n"
    "    AWS_ENDPOINT_URL_STS overrides STS, LAMBDO_FLY_API_SOCKET Fly's OIDC socket\n"
    "  AWS_SHARED_CREDENTIALS_FILE, AWS_CONFIG_FILE, AWS_PROFILE   shared files (~/.aws)\n"
    "Delivery:\n"
    "  LAMBDO_ACK                       create or exit (create; exit on a FIFO queue)\n"
    "  LAMBDO_RETRY_DELAY               visibility of messages returned after a failure (0)\n"
    "  LAMBDO_MACHINE_TIMEOUT           seconds before a Machine is destroyed (none)\n"
    "  LAMBDO_MAX_MACHINES              Machines (exit) or creates (create) in flight (10)\n"
    "  LAMBDO_FLY_CREATE_RATE, LAMBDO_FLY_CREATE_BURST   creates per second, burst (1, 3)\n"
    "  LAMBDO_FLY_GET_RATE, LAMBDO_FLY_GET_BURST   gets and waits per second, burst (5, 10)\n"
    "  LAMBDO_BATCH_WINDOW_MS           keep receiving to fill groups (0: off)\n"
    "  LAMBDO_MAX_EVENTS_BYTES          cap of events.json + events.meta.json (1048576)\n"
    "  LAMBDO_SHUTDOWN_TIMEOUT          seconds to wait for Machines on SIGTERM (0)\n"
    "  LAMBDO_POOL                      warm pool: stopped Machines kept per image, size and\n"
    "                                   command, leased and updated for each group (0: off)\n"
    "  LAMBDO_POOL_IDLE_SECONDS         a pooled Machine idle this long is destroyed (600)\n"
    "\n"
    "send puts messages on the queue (BODY, one per line of stdin, or each element of the\n"
    "JSON array in FILE) with the attributes image, size and command, checked as lambdo\n"
    "checks them; check tries the configuration, the CA bundle, the queue and the Fly app.\n"
    "`lambdo send --help` and `lambdo check --help` say more.\n"
    "\n"
    "--once receives until the queue answers empty and nothing is in flight, dispatches,\n"
    "waits for the work (in exit mode, for the Machines), tries a failed message once more\n"
    "and exits 0 only if every message was handled: a CI step.\n"
    "\n"
    "Exit status: 0 ok or stopped by SIGTERM/SIGINT (--once: 1), 1 failure, 2 usage or\n"
    "configuration.\n";

int main(int argc, char **argv)
{
    struct config_errors errs;
    struct config cfg;
    sigset_t set;
    const char *a = argc > 1 ? argv[1] : "";
    int known = argc == 1 || strcmp(a, "--once") == 0 || strcmp(a, "--help") == 0 ||
                strcmp(a, "-h") == 0 || strcmp(a, "--version") == 0;

    if (strcmp(a, "send") == 0)
        return cli_send(argc - 1, argv + 1);
    if (strcmp(a, "check") == 0)
        return cli_check(argc - 1, argv + 1);
    if (argc > 2 || !known) {
        fprintf(stderr, "lambdo: unknown argument \"%.40s\" (see lambdo --help)\n",
                argv[known ? 2 : 1]);
        return CLI_EXIT_USAGE;
    }
    if (strcmp(a, "--version") == 0) {
        printf("lambdo %s (BearSSL %s, cJSON %s)\n", LAMBDO_VERSION, LAMBDO_BEARSSL_VERSION,
               cJSON_Version());
        return 0;
    }
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
        fputs(usage, stdout);
        return 0;
    }
    /* A SIGTERM from now on means "stop cleanly", even before the daemon is up: block it at
     * once, so that it stays pending for the daemon's signalfd instead of killing us. */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);
    if (config_load(&cfg, config_env, NULL, &errs) < 0) {
        for (size_t i = 0; i < errs.n; i++)
            fprintf(stderr, "lambdo: configuration: %s\n", errs.line[i].msg);
        return CLI_EXIT_USAGE;
    }
    log_setup(cfg.log_level, cfg.json_logs);
    if (config_warning(&cfg))
        log_warn("%s", config_warning(&cfg));
    return daemon_run(&cfg, argc == 2);  /* with one argument, it can only be --once here */
}
