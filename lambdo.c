/*
 * lambdo - turns messages on an Amazon SQS queue into Fly.io Machines.
 *
 * This file is the command line: argument handling and, later, the main loop.
 */
#include <stdio.h>
#include <string.h>

#include <bearssl.h>

#include "log.h"

static const char usage[] =
    "usage: lambdo [--help | --version]\n"
    "\n"
    "Long-polls an SQS queue and runs each group of events (same image, size and command)\n"
    "in a Fly Machine whose /tmp/events.json holds the group's message bodies.\n"
    "\n"
    "Configuration (environment):\n"
    "  LAMBDO_SQS_QUEUE_URL            queue URL (required)\n"
    "  LAMBDO_FLY_TOKEN | FLY_API_TOKEN  Fly API token (required)\n"
    "  LAMBDO_FLY_APP | FLY_APP_NAME   app the Machines are created in (required)\n"
    "  LAMBDO_FLY_REGION | FLY_REGION  primary region\n"
    "  LAMBDO_FLY_REGIONS              comma list of fallback regions\n"
    "  LAMBDO_FLY_API_URL              Machines API base (https://api.machines.dev)\n"
    "  AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN\n"
    "  SSL_CERT_FILE                   CA bundle (/etc/ssl/certs/ca-certificates.crt)\n"
    "\n"
    "Exit status: 0 ok, 1 failure, 2 usage or configuration error.\n";

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--version") == 0) {
        printf("lambdo %s (BearSSL %s)\n", LAMBDO_VERSION, "0.6");
        return 0;
    }
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        fputs(usage, stdout);
        return 0;
    }
    fputs(usage, stderr);
    return 2;
}
