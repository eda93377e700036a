/*
 * cli.h - the subcommands `lambdo send` and `lambdo check`.
 *
 * send puts messages on the queue with the message attributes lambdo reads (image, size,
 * command; DataType String): BODY, one body per non-blank line of stdin, or (--array FILE)
 * one body per element of the JSON array in FILE ("-": stdin), sent with SendMessageBatch
 * 10 at a time. An element is sent as its exact bytes: no tool that rounds large numbers
 * (jq 1.6 does) needs to split the array first. Every body, with the attributes, is
 * checked by the daemon's own rule (group_check) and against what SQS accepts before
 * anything is sent, so a message lambdo would refuse never reaches the queue; bodies go
 * byte for byte (sqs.h's send requests never re-serialize them). Only the SQS half of the
 * configuration is needed (config_load_sqs). On a FIFO queue (and only there) each message
 * gets a MessageGroupId and optionally a MessageDeduplicationId, one for all or each taken
 * from its body by a JSON pointer; without dedup ids the queue must have content-based
 * deduplication, which send reads (GetQueueAttributes) before sending.
 *
 * check loads the whole configuration and tries what the daemon needs: the CA bundle,
 * the queue (GetQueueAttributes: credentials, counts, FIFO and deduplication, redrive
 * policy) and the Fly app (Apps_show: token, app; not with LAMBDO_BACKEND=local), printing
 * one aligned line per check, ok, warn or fail, with the reason. Secrets never appear in
 * the output.
 *
 * Exit statuses: 0 ok, 1 failure (SQS refused, a check failed), 2 usage, configuration or
 * input error. A usage error is one line pointing at --help.
 * The pure parts (arguments, lines, checks, batching, the table's reasons) are exposed for
 * tests/t_cli.c.
 */
#ifndef LAMBDO_CLI_H
#define LAMBDO_CLI_H

#include <stddef.h>
#include <stdio.h>
#include "err.h"
#include "fly.h"
#include "sqs.h"

#define CLI_EXIT_OK 0
#define CLI_EXIT_FAILED 1
#define CLI_EXIT_USAGE 2

#define CLI_MAX_INPUT (256u << 20)  /* bytes read from stdin at most */
#define CLI_MAX_REPORTED 20         /* invalid lines named before "... and N more" */

/* The subcommands; argv[0] is the word itself ("send", "check"). Return the exit status. */
int cli_send(int argc, char **argv);
int cli_check(int argc, char **argv);

/* --- send: the pure parts -------------------------------------------------------------- */

struct cli_send_opts {
    const char *image;    /* --image, required */
    const char *size;     /* --size, or NULL */
    const char *command;  /* --command (JSON text), or NULL */
    const char *queue;    /* --queue, or NULL for LAMBDO_SQS_QUEUE_URL */
    const char *array;    /* --array FILE ("-": stdin), or NULL */
    const char *body;     /* BODY, or NULL: read the bodies from stdin or the array */
    const char *group_id;       /* --group-id (FIFO queues): every message's, or NULL */
    const char *group_id_from;  /* --group-id-from: a JSON pointer to it in each body */
    const char *dedup_id;       /* --dedup-id: every message's, or NULL */
    const char *dedup_id_from;  /* --dedup-id-from: a JSON pointer to it in each body */
    int help;             /* -h or --help was given: nothing else is checked */
};

/* Parses argv[1..argc) ("--image I" or "--image=I"; "--" ends the options; an argument
 * starting with '-' and a digit is a BODY, a negative number). Returns 0, or -1 with e
 * set (LERR_INVALID: an unknown option, a missing value, an option given twice, a second
 * BODY, BODY with --array, no --image, --group-id with --group-id-from, --dedup-id with
 * --dedup-id-from). */
int cli_send_args(int argc, char **argv, struct cli_send_opts *o, struct lerr *e);

/* A line of the input: body_len bytes (its '\n' left out, anything else kept: a '\r'
 * before it is part of the body), numbered from 1. */
struct cli_line {
    const char *body;
    size_t len;
    size_t lineno;
};

/* Splits buf into its items: without array its lines, leaving out the blank ones (nothing
 * but spaces, tabs and '\r'), which still count in the numbering; with array, buf is a JSON
 * array and its elements are numbered from 1, each its exact bytes. *items is a new array to
 * free() (NULL when *n is 0) pointing into buf. Returns 0, or -1 with e set: LERR_NOMEM,
 * with array LERR_INVALID "not valid JSON (at byte 7: ...)" or "not a JSON array (...)". */
int cli_split(const char *buf, size_t len, int array, struct cli_line **items, size_t *n,
              struct lerr *e);

/* Checks the attributes alone: --image present, the body "null" as cli_check_body does,
 * --group-id and --dedup-id as SQS would (sqs_fifo_id_check), the --*-from pointers'
 * syntax. Returns 0, or -1 with e set (LERR_INVALID), e.g. "attribute command: element 2
 * is not a string (it is a number)". */
int cli_check_flags(const struct cli_send_opts *o, struct lerr *e);

/* The FIFO flags against the queue: refused on a standard queue, a group id required on
 * a FIFO one. Returns 0, or -1 with e set (LERR_INVALID). */
int cli_check_fifo(const struct cli_send_opts *o, int fifo, struct lerr *e);

/* The value the JSON pointer ptr (RFC 6901: "/a/0/b~1c") names in body, which must be a
 * string, copied into out (cap bytes). Returns 0, or -1 with e set (LERR_INVALID): "the
 * body has no /a/0", "/a names a number, not a string", a string too long for out. */
int cli_pointer(const char *body, size_t len, const char *ptr, char *out, size_t cap,
                struct lerr *e);

/* The entry's FIFO ids, by the flags: --group-id or what --group-id-from names in its body
 * (likewise dedup), each checked by sqs_fifo_id_check; en->group_id and en->dedup_id point
 * to the flag's value, or into ids, or are NULL without flag. 0, or -1 with e set
 * (LERR_INVALID), e.g. "--group-id-from /tenant: the body has no /tenant". */
int cli_fifo_ids(const struct cli_send_opts *o, struct sqs_entry *en, char ids[2][129],
                 struct lerr *e);

/* Checks one body with the flags' attributes, by the daemon's rules (group_check) and
 * SQS's (sqs_text_check of the command and the body, the size limit, cli_fifo_ids).
 * lineno > 0 prefixes the reason with "line N: " (with --array "element N: "), e.g.
 * "line 3: body is not valid JSON (at byte 5: ...)". Returns 0 or -1 (LERR_INVALID). */
int cli_check_body(const struct cli_send_opts *o, const char *body, size_t len, size_t lineno,
                   struct lerr *e);

/* How many lines from lines[start] go in the next SendMessageBatch: at most
 * SQS_MAX_MESSAGES, and at most SQS_SEND_BATCH_BYTES counted as SQS does (a body plus
 * attr_bytes, the attributes' share), but always at least one. 0 when start >= n. */
size_t cli_batch_len(const struct cli_line *lines, size_t n, size_t start, size_t attr_bytes);

/* --- check: the pure parts ------------------------------------------------------------- */

enum cli_status { CLI_OK, CLI_WARN, CLI_FAIL };

/* One row of the table: "ok    sqs queue   <reason>\n" (status in 6 columns, name in 12),
 * the reason formatted as by printf. */
void cli_row(FILE *out, enum cli_status st, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The sqs queue row for an answer: "<url> (3 visible, 0 in flight, 0 delayed; redrive to
 * <arn> after 5 receives)": CLI_OK; without a redrive policy CLI_WARN, saying so. */
enum cli_status cli_queue_row(const char *queue_url, const struct sqs_queue_info *q, char *out,
                              size_t cap);

/* Why a call failed, for a fail row: "TLS: ...", "connection: ...", "DNS: ..." for a
 * transport error (e->kind), else for SQS "credentials refused: <code>: <message> (HTTP
 * 403)", "queue not found: ...", "SQS refused: ...". */
void cli_sqs_reason(const struct sqs_api_error *ae, const struct lerr *e, char *out, size_t cap);

/* The same for Fly: "token refused (HTTP 401: <Fly's error>)", "app <app> not found (HTTP
 * 404: ...)", "Fly refused: HTTP <status>: ...", or the transport error as above. */
void cli_fly_reason(const char *app, const struct fly_call_result *r, const struct lerr *e,
                    char *out, size_t cap);

#endif
