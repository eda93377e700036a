#include "cli.h"
#include "creds.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "group.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "preset.h"
#include "text.h"
#include "tls.h"

static const char send_usage[] =
    "usage: lambdo send --image IMAGE [--size SIZE] [--command JSON] [--queue URL]\n"
    "                   [--group-id ID | --group-id-from PTR]\n"
    "                   [--dedup-id ID | --dedup-id-from PTR] [BODY | --array FILE]\n"
    "\n"
    "Puts messages on the queue for lambdo: BODY, or each element of the JSON array in FILE,\n"
    "or else one body per non-blank line of stdin (sent 10 at a time), each with the message\n"
    "attributes image, size and command (DataType String). Every body and the attributes are\n"
    "checked by the daemon's own rules (strict JSON, a Fly size preset, a command that is a\n"
    "JSON array of strings) before anything is sent; bodies are sent byte for byte. Prints\n"
    "the MessageIds, one per line.\n"
    "\n"
    "  --image IMAGE    Docker image the Machine runs (required)\n"
    "  --size SIZE      Fly preset (" PRESET_NAMES_TEXT ";\n"
    "                   default " PRESET_DEFAULT ")\n"
    "  --command JSON   Docker CMD, a JSON array of strings: '[\"node\",\"index.js\"]'\n"
    "  --queue URL      queue URL (default: $LAMBDO_SQS_QUEUE_URL)\n"
    "  --array FILE     send each element of the JSON array in FILE (- for stdin), its\n"
    "                   exact bytes: large numbers are not rounded as with jq -c '.[]'\n"
    "\n"
    "FIFO queues (the name ends in .fifo; refused on standard queues):\n"
    "  --group-id ID          the MessageGroupId of every message (this or the next is\n"
    "                         required on a FIFO queue)\n"
    "  --group-id-from PTR    each message's, the string a JSON pointer names in its body\n"
    "                         (RFC 6901, e.g. /tenant)\n"
    "  --dedup-id ID          the MessageDeduplicationId of the one message (SQS drops a\n"
    "                         message whose id it saw in the last 5 minutes)\n"
    "  --dedup-id-from PTR    each message's, from its body; without either, the queue\n"
    "                         needs content-based deduplication (send checks)\n"
    "\n"
    "Needs only the SQS configuration (AWS_*, SSL_CERT_FILE), no LAMBDO_FLY_* variable.\n"
    "Exit status: 0 all sent, 1 SQS refused some (named by line or element), 2 usage,\n"
    "configuration or invalid input (then nothing was sent).\n";

static const char check_usage[] =
    "usage: lambdo check\n"
    "\n"
    "Checks the configuration, the CA bundle, the SQS queue (credentials, message counts,\n"
    "FIFO and content-based deduplication, redrive policy) and the Fly app (token; not\n"
    "with LAMBDO_BACKEND=local), one line each: ok, warn or fail and why. On a FIFO queue\n"
    "without a dead-letter queue it warns: a failing message holds its group back.\n"
    "With LAMBDO_POOL, one row per pool key: its Machines by state and the leases held.\n"
    "Exit status: 0 nothing failed (warnings allowed), 1 a check failed, 2 usage or\n"
    "configuration (every problem is named, one row each).\n";

/* ======================================================================================
 * send: arguments, lines, checks (pure)
 * ==================================================================================== */

int cli_send_args(int argc, char **argv, struct cli_send_opts *o, struct lerr *e)
{
    static const char *const names[] = { "--image", "--size", "--command", "--queue", "--array",
                                         "--group-id", "--group-id-from", "--dedup-id",
                                         "--dedup-id-from" };
    const char **slots[] = { &o->image, &o->size, &o->command, &o->queue, &o->array,
                             &o->group_id, &o->group_id_from, &o->dedup_id, &o->dedup_id_from };
    const size_t count = sizeof names / sizeof names[0];
    int options = 1;

    memset(o, 0, sizeof *o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *eq = strchr(a, '=');
        size_t n = eq ? (size_t)(eq - a) : strlen(a), k = 0;

        /* "-5" is a body (a JSON number), not an option; so is "-" */
        if (!options || a[0] != '-' || !a[1] || (a[1] >= '0' && a[1] <= '9')) {
            if (o->body)
                return lerr_set(e, LERR_INVALID, "more than one BODY (to send several, give "
                                "them as lines on stdin)");
            o->body = a;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            o->help = 1;
            return 0;
        }
        if (strcmp(a, "--") == 0) {  /* after "--", every argument is a BODY */
            options = 0;
            continue;
        }
        /* "--name value" or "--name=value" */
        while (k < count && (strncmp(a, names[k], n) != 0 || names[k][n] != '\0'))
            k++;
        if (k == count)
            return lerr_set(e, LERR_INVALID, "unknown option \"%.40s\"", a);
        if (*slots[k])
            return lerr_set(e, LERR_INVALID, "%s given twice", names[k]);
        if (!eq && i + 1 == argc)
            return lerr_set(e, LERR_INVALID, "%s needs a value", names[k]);
        *slots[k] = eq ? eq + 1 : argv[++i];
    }
    if (o->body && o->array)
        return lerr_set(e, LERR_INVALID, "BODY and --array: give one or the other");
    if (o->group_id && o->group_id_from)
        return lerr_set(e, LERR_INVALID, "--group-id and --group-id-from: give one or the other");
    if (o->dedup_id && o->dedup_id_from)
        return lerr_set(e, LERR_INVALID, "--dedup-id and --dedup-id-from: give one or the other");
    if (!o->image)
        return lerr_set(e, LERR_INVALID, "--image is required (the image the Machine runs)");
    return 0;
}

/* What a numbered body is called in messages. */
static const char *cli_item(const struct cli_send_opts *o)
{
    return o->array ? "element" : "line";
}

/* The lines or elements of the input, found twice: a first pass only counts them (v
 * NULL), the second stores them in an array of that size. */
struct cli_items {
    const char *buf;
    struct cli_line *v;
    size_t n;
};

static void cli_push(struct cli_items *it, size_t offset, size_t len, size_t lineno)
{
    if (it->v)
        it->v[it->n] = (struct cli_line){ it->buf + offset, len, lineno };
    it->n++;
}

static void cli_push_element(void *ctx, size_t offset, size_t len)
{
    struct cli_items *it = ctx;

    cli_push(it, offset, len, it->n + 1);
}

/* One pass over the lines: the ones that are not blank (nothing but spaces, tabs, '\r'). */
static void cli_push_lines(struct cli_items *it, size_t len)
{
    size_t lineno = 0, pos = 0;

    while (pos < len) {
        const char *nl = memchr(it->buf + pos, '\n', len - pos);
        size_t l = nl ? (size_t)(nl - (it->buf + pos)) : len - pos, k = 0;

        lineno++;
        while (k < l && memchr(" \t\r", it->buf[pos + k], 3))
            k++;
        if (k < l)
            cli_push(it, pos, l, lineno);
        pos += l + (nl ? 1 : 0);
    }
}

int cli_split(const char *buf, size_t len, int array, struct cli_line **items, size_t *n,
              struct lerr *e)
{
    struct cli_items it = { buf, NULL, 0 };
    const char *why;
    size_t at = 0;

    if (!array)
        cli_push_lines(&it, len);
    else if (json_items(buf, len, cli_push_element, &it, &at, &why) < 0)
        return lerr_set(e, LERR_INVALID, "not valid JSON (at byte %zu: %s)", at, why);
    /* valid JSON: a value follows the white space, so strspn stops */
    else if (buf[at + strspn(buf + at, " \t\r\n")] != '[')
        return lerr_set(e, LERR_INVALID, "not a JSON array (to send one body, give it as "
                        "BODY)");
    if (it.n && !(it.v = malloc(it.n * sizeof *it.v)))
        return lerr_set(e, LERR_NOMEM, "out of memory splitting the input");
    it.n = 0;
    /* the second pass finds the same items (the text is valid) */
    if (!array)
        cli_push_lines(&it, len);
    else
        json_items(buf, len, cli_push_element, &it, NULL, NULL);
    *items = it.v;
    *n = it.n;
    return 0;
}

/* The entry SQS gets for a body with the flags' attributes. */
static void cli_entry(const struct cli_send_opts *o, const char *body, size_t len,
                      struct sqs_entry *en)
{
    *en = (struct sqs_entry){ .body = body, .body_len = len, .image = o->image,
                              .size = o->size, .command = o->command };
}

int cli_check_flags(const struct cli_send_opts *o, struct lerr *e)
{
    const char *const from[] = { o->group_id_from, o->dedup_id_from };
    /* the attributes alone: a body that needs no FIFO id */
    const struct cli_send_opts attrs = { .image = o->image, .size = o->size,
                                         .command = o->command };

    if (!o->image)
        return lerr_set(e, LERR_INVALID, "--image is required (the image the Machine runs)");
    if (cli_check_body(&attrs, "null", 4, 0, e) < 0)
        return -1;
    if (o->group_id && sqs_fifo_id_check(o->group_id, "--group-id", e) < 0)
        return -1;
    if (o->dedup_id && sqs_fifo_id_check(o->dedup_id, "--dedup-id", e) < 0)
        return -1;
    for (int i = 0; i < 2; i++)  /* RFC 6901: "" (the whole body) or "/" then tokens */
        if (from[i] && from[i][0] && from[i][0] != '/')
            return lerr_set(e, LERR_INVALID, "%s \"%.40s\": a JSON pointer starts with '/' "
                            "(e.g. /tenant)", i ? "--dedup-id-from" : "--group-id-from", from[i]);
    return 0;
}

int cli_check_fifo(const struct cli_send_opts *o, int fifo, struct lerr *e)
{
    const char *flag = o->group_id ? "--group-id" : o->group_id_from ? "--group-id-from"
                       : o->dedup_id ? "--dedup-id" : o->dedup_id_from ? "--dedup-id-from" : NULL;

    if (!fifo && flag)
        return lerr_set(e, LERR_INVALID, "%s: only for FIFO queues (their name ends in .fifo); "
                        "this one is a standard queue", flag);
    if (fifo && !o->group_id && !o->group_id_from)
        return lerr_set(e, LERR_INVALID, "a FIFO queue needs a message group: give --group-id "
                        "ID, or --group-id-from /POINTER to take it from each body");
    return 0;
}

/* One RFC 6901 reference token, ~1 and ~0 decoded, into out (cap bytes). */
static size_t cli_token(const char *p, size_t n, char *out, size_t cap)
{
    size_t k = 0;

    for (size_t i = 0; i < n && k + 1 < cap; i++, k++)
        out[k] = p[i] == '~' && i + 1 < n && (p[i + 1] == '0' || p[i + 1] == '1')
                 ? (p[++i] == '0' ? '~' : '/') : p[i];
    out[k] = '\0';
    return k;
}

int cli_pointer(const char *body, size_t len, const char *ptr, char *out, size_t cap,
                struct lerr *e)
{
    cJSON *root = json_parse(body, len);
    const cJSON *v = root;
    const char *p = ptr, *name = *ptr ? ptr : "\"\"";  /* "": the whole body */
    char key[256];
    int r = 0;

    while (v && *p == '/') {
        size_t n = strcspn(p + 1, "/"), k = cli_token(p + 1, n, key, sizeof key);

        if (n >= sizeof key)  /* longer than any key worth naming: not this body's */
            v = NULL;
        else if (cJSON_IsObject(v))
            v = cJSON_GetObjectItemCaseSensitive(v, key);
        else  /* an array index: 1 to 9 digits, no leading zero */
            v = cJSON_IsArray(v) && k && k < 10 && strspn(key, "0123456789") == k &&
                (key[0] != '0' || k == 1) ? cJSON_GetArrayItem(v, atoi(key)) : NULL;
        p += 1 + n;
    }
    if (!v)
        r = lerr_set(e, LERR_INVALID, "the body has no %.*s", (int)(p - ptr), ptr);
    else if (!cJSON_IsString(v))
        r = lerr_set(e, LERR_INVALID, "%s names %s, not a string", name,
                     cJSON_IsNumber(v) ? "a number" : cJSON_IsArray(v) ? "an array"
                     : cJSON_IsObject(v) ? "an object" : cJSON_IsBool(v) ? "a boolean" : "null");
    else if (strlen(v->valuestring) >= cap)
        r = lerr_set(e, LERR_INVALID, "%s is longer than %zu characters", name, cap - 1);
    else
        strcpy(out, v->valuestring);
    cJSON_Delete(root);
    return r;
}

int cli_fifo_ids(const struct cli_send_opts *o, struct sqs_entry *en, char ids[2][129],
                 struct lerr *e)
{
    const char *const value[] = { o->group_id, o->dedup_id };
    const char *const from[] = { o->group_id_from, o->dedup_id_from };
    const char **id[] = { &en->group_id, &en->dedup_id };

    for (int i = 0; i < 2; i++) {  /* each id: the flag's, or what its pointer names, checked */
        *id[i] = value[i];
        if (!from[i])
            continue;
        if (cli_pointer(en->body, en->body_len, from[i], ids[i], 129, e) < 0 ||
            sqs_fifo_id_check(ids[i], "the id", e) < 0)
            return lerr_wrap(e, "%s %s", i ? "--dedup-id-from" : "--group-id-from", from[i]);
        *id[i] = ids[i];
    }
    return 0;
}

int cli_check_body(const struct cli_send_opts *o, const char *body, size_t len, size_t lineno,
                   struct lerr *e)
{
    const struct event ev = { .body = body, .body_len = len, .image = o->image,
                              .size = o->size, .command = o->command };
    struct sqs_entry en;
    char ids[2][129];
    const char *why;
    size_t at;
    int r;

    cli_entry(o, body, len, &en);
    if (group_check(&ev, e) < 0)
        r = -1;
    else if (o->command && sqs_text_check(o->command, strlen(o->command), &at, &why) < 0)
        r = lerr_set(e, LERR_INVALID, "attribute command: %s at byte %zu", why, at);
    else if (sqs_text_check(body, len, &at, &why) < 0)  /* JSON that SQS still refuses */
        r = lerr_set(e, LERR_INVALID, "body has %s at byte %zu", why, at);
    else if (sqs_send_size(&en) > SQS_MAX_MESSAGE_BYTES)
        r = lerr_set(e, LERR_INVALID, "message of %zu bytes (body and attributes) is over "
                     "SQS's limit of %d", sqs_send_size(&en), SQS_MAX_MESSAGE_BYTES);
    else
        r = cli_fifo_ids(o, &en, ids, e);
    if (r < 0 && lineno > 0)
        lerr_wrap(e, "%s %zu", cli_item(o), lineno);
    return r;
}

size_t cli_batch_len(const struct cli_line *lines, size_t n, size_t start, size_t attr_bytes)
{
    size_t k = 0, total = 0;

    while (start + k < n && k < SQS_MAX_MESSAGES) {
        size_t size = lines[start + k].len + attr_bytes;
        if (k > 0 && total + size > SQS_SEND_BATCH_BYTES)
            break;
        total += size;
        k++;
    }
    return k;
}

/* ======================================================================================
 * check: the table (pure)
 * ==================================================================================== */

void cli_row(FILE *out, enum cli_status st, const char *name, const char *fmt, ...)
{
    static const char *const words[] = { "ok", "warn", "fail" };
    va_list ap;

    fprintf(out, "%-6s%-12s", words[st], name);
    va_start(ap, fmt);
    vfprintf(out, fmt, ap);
    va_end(ap);
    fputc('\n', out);
}

/* A count SQS gave, or "?" for one it did not. */
static const char *cli_count(long v, char out[24])
{
    if (v < 0)
        return "?";
    snprintf(out, 24, "%ld", v);
    return out;
}

enum cli_status cli_queue_row(const char *queue_url, const struct sqs_queue_info *q, char *out,
                              size_t cap)
{
    char visible[24], in_flight[24], delayed[24], redrive[320], after[48] = "";

    if (q->max_receive_count >= 0)
        snprintf(after, sizeof after, " after %ld receives", q->max_receive_count);
    if (q->has_redrive)
        snprintf(redrive, sizeof redrive, "redrive to %s%s",
                 q->dead_letter_arn[0] ? q->dead_letter_arn : "(an unreadable target)", after);
    else
        snprintf(redrive, sizeof redrive, "no redrive policy: invalid messages and failing "
                 "jobs come back forever%s; give the queue a dead-letter queue", q->fifo
                 ? ", holding their message group back (SQS keeps its order)" : "");
    snprintf(out, cap, "%s (%s visible, %s in flight, %s delayed; FIFO: %s; %s)", queue_url,
             cli_count(q->visible, visible), cli_count(q->in_flight, in_flight),
             cli_count(q->delayed, delayed), !q->fifo ? "no" : q->content_dedup
             ? "yes, content-based deduplication on" : "yes, content-based deduplication off",
             redrive);
    return q->has_redrive ? CLI_OK : CLI_WARN;
}

/* A failure without an HTTP answer, or one that is not the server's refusal: a transport
 * error says what kind of trouble it is (enum lerr_kind lists the TLS kinds, and the
 * connection's, next to each other). */
static void cli_other_reason(const struct lerr *e, char *out, size_t cap)
{
    enum lerr_kind k = e->kind;
    const char *cls = k == LERR_DNS ? "DNS" : k == LERR_TIMEOUT ? "timeout"
                      : k >= LERR_REFUSED && k <= LERR_CLOSED ? "connection"
                      : k >= LERR_TLS_UNTRUSTED && k <= LERR_TLS ? "TLS" : NULL;

    if (!cls)
        snprintf(out, cap, "%s", e->msg);
    else
        snprintf(out, cap, "%s: %s%s", cls, e->msg, k == LERR_TLS_UNTRUSTED
                 ? " (is its CA in the bundle SSL_CERT_FILE names?)" : "");
}

void cli_sqs_reason(const struct sqs_api_error *ae, const struct lerr *e, char *out, size_t cap)
{
    static const struct {
        const char *what, *codes[13];
    } known[] = {
        { "credentials refused", { "SignatureDoesNotMatch", "InvalidClientTokenId",
          "UnrecognizedClientException", "IncompleteSignature", "MissingAuthenticationToken",
          "InvalidSignatureException", "ExpiredToken", "ExpiredTokenException",
          "InvalidAccessKeyId", "RequestExpired", "InvalidSecurity", "AuthFailure" } },
        { "access denied", { "AccessDenied", "AccessDeniedException" } },
        { "queue not found", { "QueueDoesNotExist", "NonExistentQueue" } },
    };
    const char *what = "SQS refused";

    if (e->kind != LERR_HTTP || ae->status == 0) {
        cli_other_reason(e, out, cap);
        return;
    }
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        for (size_t j = 0; known[i].codes[j]; j++)
            if (strcmp(ae->code, known[i].codes[j]) == 0)
                what = known[i].what;
    snprintf(out, cap, "%s: %s%s%s (HTTP %d)", what, ae->code[0] ? ae->code : "no error code",
             ae->message[0] ? ": " : "", ae->message, ae->status);
}

void cli_fly_reason(const char *app, const struct fly_call_result *r, const struct lerr *e,
                    char *out, size_t cap)
{
    const char *sep = r->error[0] ? ": " : "";

    if (r->status == 0)
        cli_other_reason(e, out, cap);
    else if (r->status == 401)
        snprintf(out, cap, "token refused (HTTP 401%s%s)", sep, r->error);
    else if (r->status == 403)
        snprintf(out, cap, "token may not use app %s (HTTP 403%s%s)", app, sep, r->error);
    else if (r->status == 404)
        snprintf(out, cap, "app %s not found (HTTP 404%s%s)", app, sep, r->error);
    else
        snprintf(out, cap, "Fly refused: HTTP %d%s%s", r->status, sep, r->error);
}

/* ======================================================================================
 * The network: one HTTP client, the SQS client
 * ==================================================================================== */

struct cli_net {
    struct tls_anchors anchors;      /* count 0 when not loaded */
    struct http_client http;
    struct creds_provider creds;     /* the AWS credential chain (creds.h) */
    struct sqs_client sqs;
};

/* Opens the clients over net->anchors (loaded or not: plain http needs none). */
static int cli_net_open(struct cli_net *net, const struct config *cfg, struct lerr *e)
{
    if (creds_init(&net->creds, config_env, NULL, cfg->aws_region,
                   net->anchors.count ? &net->anchors : NULL, e) < 0)
        return -1;
    http_client_init(&net->http, net->anchors.count ? &net->anchors : NULL);
    sqs_client_init(&net->sqs, &net->http, &cfg->sqs_endpoint, cfg->queue_url, cfg->aws_region,
                    NULL);
    net->sqs.provider = &net->creds;
    return 0;
}

static void cli_net_close(struct cli_net *net)
{
    http_client_close(&net->http);
    creds_free(&net->creds);
    tls_anchors_free(&net->anchors);
}

/* ======================================================================================
 * send
 * ==================================================================================== */

/* Every message of send goes to stderr as one line "lambdo send: ...". */
static void __attribute__((format(printf, 1, 2))) say(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fputs("lambdo send: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* Names every invalid body (the first CLI_MAX_REPORTED); returns how many there are. */
static size_t send_report_invalid(const struct cli_send_opts *o, const struct cli_line *lines,
                                  size_t n)
{
    size_t bad = 0;

    for (size_t i = 0; i < n; i++) {
        struct lerr e;
        if (cli_check_body(o, lines[i].body, lines[i].len, lines[i].lineno, &e) < 0 &&
            ++bad <= CLI_MAX_REPORTED)
            say("%s%s", e.msg, o->body ? "; nothing was sent" : "");
    }
    if (bad > CLI_MAX_REPORTED)
        say("... and %zu more invalid %ss", bad - CLI_MAX_REPORTED, cli_item(o));
    if (bad && !o->body)
        say("%zu of %zu %ss invalid; nothing was sent", bad, n, cli_item(o));
    return bad;
}

/* What became of one batch: MessageIds on stdout, the lines not sent on stderr (one line
 * when they all failed for the same reason, as when the whole request was refused).
 * Returns how many were sent. */
static size_t send_report_batch(const struct cli_send_opts *o, const struct sqs_entry *en,
                                const struct cli_line *lines, size_t k)
{
    const char *item = cli_item(o);
    size_t sent = 0, same = 1;

    for (size_t i = 0; i < k; i++) {
        if (en[i].status == SQS_ENTRY_OK) {
            printf("%s\n", en[i].sent_id);
            sent++;
        }
        if (i > 0 && (strcmp(en[i].code, en[0].code) || strcmp(en[i].message, en[0].message)))
            same = 0;
    }
    fflush(stdout);
    if (sent == 0 && k > 1 && same) {
        say("%ss %zu to %zu not sent: %s: %s", item, lines[0].lineno, lines[k - 1].lineno,
            en[0].code, en[0].message);
        return 0;
    }
    for (size_t i = 0; i < k; i++) {
        if (en[i].status == SQS_ENTRY_OK)
            continue;
        if (en[i].sent_id[0])
            say("%s %zu: sent as message %s, but %s: %s", item, lines[i].lineno,
                en[i].sent_id, en[i].code, en[i].message);
        else
            say("%s %zu: not sent: %s: %s", item, lines[i].lineno, en[i].code, en[i].message);
    }
    return sent;
}

/* Sends the lines in batches; returns how many were not sent. A batch of which nothing
 * was sent (credentials refused, the queue gone, the network down) ends the run. BODY
 * alone goes with SendMessage, and its failure is said in SQS's words. */
static size_t send_batches(const struct cli_send_opts *o, struct sqs_client *c,
                           const struct cli_line *lines, size_t n)
{
    struct sqs_entry en[SQS_MAX_MESSAGES];
    char ids[SQS_MAX_MESSAGES][2][129];
    size_t start = 0, unsent = 0, attr_bytes;
    enum sqs_batch_op op = o->body ? SQS_OP_SEND : SQS_OP_SEND_BATCH;

    cli_entry(o, "", 0, &en[0]);
    attr_bytes = sqs_send_size(&en[0]);
    while (start < n) {
        size_t k = cli_batch_len(lines, n, start, attr_bytes), sent;
        struct lerr e;

        for (size_t i = 0; i < k; i++) {  /* send_report_invalid checked the ids */
            cli_entry(o, lines[start + i].body, lines[start + i].len, &en[i]);
            (void)cli_fifo_ids(o, &en[i], ids[i], &e);
        }
        /* each entry of a batch says what happened to it */
        if (sqs_batch_call(c, op, en, k, &e) < 0 && o->body) {
            say("%s", e.msg);
            return 1;
        }
        sent = send_report_batch(o, en, lines + start, k);
        unsent += k - sent;
        start += k;
        if (sent == 0 && start < n) {
            say("stopping: %ss %zu to %zu not tried", cli_item(o), lines[start].lineno,
                lines[n - 1].lineno);
            unsent += n - start;
            break;
        }
    }
    return unsent;
}

/* The bodies: BODY, the lines of stdin, or the elements of the --array file, read whole
 * into *buf (at most CLI_MAX_INPUT bytes, any kind of file: a pipe too; *buf to free()). */
static int send_input(const struct cli_send_opts *o, char **buf, struct cli_line **items,
                      size_t *n, struct lerr *e)
{
    const char *path = o->array && strcmp(o->array, "-") != 0 ? o->array : NULL;
    size_t len;

    if (o->body) {
        if (!(*items = malloc(sizeof **items)))
            return lerr_set(e, LERR_NOMEM, "out of memory");
        **items = (struct cli_line){ o->body, strlen(o->body), 0 };
        *n = 1;
        return 0;
    }
    if (!path && isatty(STDIN_FILENO))  /* a person, not a pipe: say what is awaited */
        say("reading %s from stdin (end with Ctrl-D)",
            o->array ? "a JSON array" : "bodies, one per line,");
    if (text_read_file(path, "", CLI_MAX_INPUT, 0, buf, &len, e) != 0)
        return -1;
    if (cli_split(*buf, len, o->array != NULL, items, n, e) < 0)
        return o->array ? lerr_wrap(e, "%s", path ? path : "stdin") : -1;
    return 0;
}

/* A FIFO queue without a deduplication id per message needs content-based deduplication:
 * 1 (said why) when the queue's attributes say it is off. When they cannot be read (a
 * producer may lack sqs:GetQueueAttributes), SQS decides. */
static int send_dedup_needed(struct sqs_client *c)
{
    struct sqs_queue_info q;
    struct lerr e;

    if (sqs_get_queue_attributes(c, &q, &e) < 0) {
        say("cannot read the queue's attributes (%s); sending without deduplication ids: SQS "
            "refuses them unless the queue has content-based deduplication", e.msg);
        return 0;
    }
    if (q.content_dedup)
        return 0;
    say("the FIFO queue has no content-based deduplication: give --dedup-id ID or "
        "--dedup-id-from /POINTER (or turn ContentBasedDeduplication on); nothing was sent");
    return 1;
}

static int send_run(const struct cli_send_opts *o, const struct config *cfg)
{
    struct cli_line *lines = NULL;
    char *in = NULL;
    struct cli_net net = { 0 };
    size_t n = 0, unsent;
    struct lerr e;
    int rc = CLI_EXIT_USAGE;

    if (send_input(o, &in, &lines, &n, &e) < 0)
        goto fail;
    if (send_report_invalid(o, lines, n) > 0)
        goto out;
    if (n == 0) {
        say("nothing to send (%s)", o->array ? "the array is empty"
            : "no BODY, and no line on stdin");
        rc = CLI_EXIT_OK;
        goto out;
    }
    if (o->dedup_id && n > 1) {  /* SQS would keep the first and drop the others */
        say("--dedup-id gives all %zu messages one deduplication id, so SQS would keep only "
            "the first: use --dedup-id-from /POINTER; nothing was sent", n);
        goto out;
    }
    /* STS (web identity) is https even when an emulator's SQS endpoint is not. */
    if ((cfg->sqs_endpoint.tls || config_value(config_env, NULL, "AWS_ROLE_ARN")) &&
        tls_anchors_load(&net.anchors, cfg->ca_file, &e) < 0) {
        if (cfg->ca_file)
            lerr_wrap(&e, "SSL_CERT_FILE");
        goto fail;
    }
    if (cli_net_open(&net, cfg, &e) < 0)
        goto fail;
    if (cfg->fifo && !o->dedup_id && !o->dedup_id_from && send_dedup_needed(&net.sqs))
        goto out;
    unsent = send_batches(o, &net.sqs, lines, n);
    if (unsent > 0 && !o->body)
        say("%zu of %zu messages not sent", unsent, n);
    rc = unsent > 0 ? CLI_EXIT_FAILED : CLI_EXIT_OK;
    goto out;
fail:
    say("%s", e.msg);
out:
    cli_net_close(&net);
    free(lines);
    free(in);
    return rc;
}

int cli_send(int argc, char **argv)
{
    static const char var[] = "LAMBDO_SQS_QUEUE_URL";
    struct cli_send_opts o;
    struct config_errors errs;
    struct config cfg;
    struct lerr e;

    if (cli_send_args(argc, argv, &o, &e) < 0) {
        say("%s (see lambdo send --help)", e.msg);
        return CLI_EXIT_USAGE;
    }
    if (o.help) {
        fputs(send_usage, stdout);
        return CLI_EXIT_OK;
    }
    if (cli_check_flags(&o, &e) < 0) {
        say("%s; nothing was sent", e.msg);
        return CLI_EXIT_USAGE;
    }
    if (config_load_sqs(&cfg, o.queue, config_env, NULL, &errs) < 0) {
        for (size_t i = 0; i < errs.n; i++) {
            const char *msg = errs.line[i].msg;
            if (o.queue && strncmp(msg, var, sizeof var - 1) == 0)  /* it came from --queue */
                say("--queue%s", msg + sizeof var - 1);
            else
                say("configuration: %s", msg);
        }
        return CLI_EXIT_USAGE;
    }
    if (cli_check_fifo(&o, cfg.fifo, &e) < 0) {
        say("%s; nothing was sent", e.msg);
        return CLI_EXIT_USAGE;
    }
    log_setup(cfg.log_level, cfg.json_logs);
    return send_run(&o, &cfg);
}

/* ======================================================================================
 * check
 * ==================================================================================== */

static void check_config(const struct config *cfg)
{
    if (cfg->backend_local)
        cli_row(stdout, CLI_OK, "config", "SQS region %s, local backend, ack on %s",
                cfg->aws_region, cfg->ack_on_exit ? "exit" : "create");
    else
        cli_row(stdout, CLI_OK, "config", "SQS region %s, Fly app %s in %s, ack on %s",
                cfg->aws_region, cfg->fly_app, cfg->region_list,
                cfg->ack_on_exit ? "exit" : "create");
}

static int check_anchors(const struct config *cfg, struct cli_net *net)
{
    struct lerr e;

    if (tls_anchors_load(&net->anchors, cfg->ca_file, &e) < 0) {
        cli_row(stdout, CLI_FAIL, "ca bundle", "%s", e.msg);
        return -1;
    }
    cli_row(stdout, CLI_OK, "ca bundle", "%s (%zu certificates)",
            cfg->ca_file ? cfg->ca_file : TLS_DEFAULT_CA_FILE, net->anchors.count);
    return 0;
}

static int check_queue(const struct config *cfg, struct cli_net *net)
{
    struct sqs_queue_info q;
    char reason[1024], where[600];
    struct lerr e;

    if (sqs_get_queue_attributes(&net->sqs, &q, &e) < 0) {
        cli_sqs_reason(&net->sqs.last_error, &e, reason, sizeof reason);
        cli_row(stdout, CLI_FAIL, "sqs queue", "%s", reason);
        return -1;
    }
    snprintf(where, sizeof where, "%s", cfg->queue_url);
    if (cfg->sqs_endpoint_overridden)  /* AWS_ENDPOINT_URL_SQS: say where it really went */
        snprintf(where, sizeof where, "%s via %s://%s", cfg->queue_url,
                 cfg->sqs_endpoint.tls ? "https" : "http", cfg->sqs_endpoint.authority);
    cli_row(stdout, cli_queue_row(where, &q, reason, sizeof reason), "sqs queue", "%s", reason);
    return 0;
}

/* LAMBDO_POOL: the pooled Machines Fly lists, one row per key: its Machines by state, and
 * the leases held on them right now. */
static int check_pool(const struct config *cfg, struct cli_net *net, const struct fly_target *t)
{
    struct fly_pool_machine *list = NULL;
    size_t n = 0;
    struct lerr e;

    cli_row(stdout, CLI_OK, "pool", "LAMBDO_POOL=%d Machines per image, size and command; "
            "idle ones destroyed after %d s", cfg->pool, cfg->pool_idle_seconds);
    if (fly_list_pool(&net->http, t, &list, &n, &e) < 0) {
        cli_row(stdout, CLI_FAIL, "pool", "cannot list the app's Machines: %s", e.msg);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const char *key = list[i].pool_key;
        size_t first = 0, count = 0, stopped = 0, started = 0, leased = 0;

        while (strcmp(list[first].pool_key, key) != 0)
            first++;
        if (first < i)  /* the key's row is written at its first Machine */
            continue;
        for (size_t k = i; k < n; k++) {
            if (strcmp(list[k].pool_key, key) != 0)
                continue;
            count++;
            stopped += strcmp(list[k].state, "stopped") == 0;
            started += strcmp(list[k].state, "started") == 0;
            leased += fly_lease_held(&net->http, t, list[k].id) == 1;
        }
        cli_row(stdout, CLI_OK, "pool", "key %s: %zu Machines (%zu stopped, %zu started, %zu "
                "other), %zu leased", key, count, stopped, started, count - stopped - started,
                leased);
    }
    if (!n)
        cli_row(stdout, CLI_OK, "pool", "no pooled Machines yet");
    free(list);
    return 0;
}

/* The Fly app (its token), then with LAMBDO_POOL the pool. */
static int check_fly(const struct config *cfg, struct cli_net *net)
{
    const struct fly_target t = { .base = &cfg->fly_api, .app = cfg->fly_app,
                                  .token = cfg->fly_token };
    struct fly_call_result r;
    char reason[512];
    struct lerr e;

    if (fly_get_app(&net->http, &t, &r, &e) < 0) {
        cli_fly_reason(cfg->fly_app, &r, &e, reason, sizeof reason);
        cli_row(stdout, CLI_FAIL, "fly app", "%s", reason);
        return -1;
    }
    cli_row(stdout, CLI_OK, "fly app", "%s at %s (token accepted)", cfg->fly_app, cfg->fly_api_url);
    return cfg->pool ? check_pool(cfg, net, &t) : 0;
}

int cli_check(int argc, char **argv)
{
    struct config_errors errs;
    struct cli_net net = { 0 };
    struct config cfg;
    struct lerr e;
    int failed = 0;

    if (argc > 1 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        fputs(check_usage, stdout);
        return CLI_EXIT_OK;
    }
    if (argc > 1) {
        fprintf(stderr, "lambdo check: unknown argument \"%.40s\" (see lambdo check --help)\n",
                argv[1]);
        return CLI_EXIT_USAGE;
    }
    if (config_load(&cfg, config_env, NULL, &errs) < 0) {
        for (size_t i = 0; i < errs.n; i++)
            cli_row(stdout, CLI_FAIL, "config", "%s", errs.line[i].msg);
        return CLI_EXIT_USAGE;
    }
    log_setup(cfg.log_level, cfg.json_logs);
    check_config(&cfg);
    failed |= check_anchors(&cfg, &net) < 0;
    if (cli_net_open(&net, &cfg, &e) < 0) {
        cli_row(stdout, CLI_FAIL, "credentials", "%s", e.msg);
        failed = 1;
    } else {
        failed |= check_queue(&cfg, &net) < 0;
        if (config_warning(&cfg))  /* local without a command; create on a FIFO queue */
            cli_row(stdout, CLI_WARN, cfg.backend_local ? "backend" : "config", "%s",
                    config_warning(&cfg));
        else if (cfg.backend_local)  /* LAMBDO_BACKEND=local: there is no Fly to ask */
            cli_row(stdout, CLI_OK, "backend", "local: groups run as child processes on this "
                    "host; no Fly API to check");
        if (!cfg.backend_local)  /* LAMBDO_POOL needs Fly (config_load says so) */
            failed |= check_fly(&cfg, &net) < 0;
    }
    cli_net_close(&net);
    return failed ? CLI_EXIT_FAILED : CLI_EXIT_OK;
}
