/*
 * sqs.h - Amazon SQS over the AWS JSON 1.0 protocol: ReceiveMessage, DeleteMessageBatch,
 * ChangeMessageVisibilityBatch; for `lambdo send` and `lambdo check` also SendMessage,
 * SendMessageBatch and GetQueueAttributes.
 *
 * Every call is `POST /` to the endpoint with X-Amz-Target: AmazonSQS.<Operation>, a JSON
 * body naming the QueueUrl, signed with SigV4 for the service "sqs". Nothing here knows of
 * Fly or of how messages are grouped: this file moves messages and reports, per message
 * and per batch entry, exactly what SQS said.
 *
 * Retries: throttling, 5xx answers and connection failures or timeouts are retried with
 * capped exponential backoff with full jitter (a random delay in [0, min(cap, base*2^n)]).
 * ReceiveMessage gives up after a few attempts and returns the error, so the main loop can
 * log and back off itself; the batch calls retry the whole request and the entries SQS
 * reports as failed through no fault of ours. Everything else (authentication, a missing
 * queue, an invalid parameter) is returned at once with SQS's own words. Backoff sleeps
 * end early when the HTTP client's cancel_fd becomes readable (LERR_CANCELLED).
 *
 * The pure parts (request bodies, answer and error parsing, backoff) are exposed for the
 * tests and the fuzzer; they do no I/O but log lines (an Id that was not sent, a stale
 * receipt handle).
 */
#ifndef LAMBDO_SQS_H
#define LAMBDO_SQS_H

#include <stddef.h>
#include <stdint.h>
#include "err.h"
#include "http.h"
#include "sigv4.h"
#include "url.h"

struct creds_provider;

#define SQS_MAX_MESSAGES 10   /* ReceiveMessage's MaxNumberOfMessages and a batch's entries */
#define SQS_MAX_WAIT 20       /* WaitTimeSeconds */
#define SQS_MAX_VISIBILITY 43200

/* Attempts per call, counting the first. */
#define SQS_RECEIVE_ATTEMPTS 3
#define SQS_BATCH_ATTEMPTS 5
#define SQS_BACKOFF_BASE_MS 100
#define SQS_BACKOFF_CAP_MS 20000

/* What SQS (or the connection to it) said when a call failed. */
struct sqs_api_error {
    int status;          /* HTTP status, 0 when no answer came (connection error, timeout) */
    char code[64];       /* "QueueDoesNotExist" ("prefix#" removed); "" when none was given */
    char message[200];   /* SQS's message text, or "" */
    int retryable;       /* throttling, 5xx, connection problem: trying later may work */
};

struct metrics;

struct sqs_client {
    struct http_client *http;         /* not owned; its cancel_fd also ends backoff sleeps */
    struct url endpoint;              /* scheme, host and port; requests always go to "/" */
    const char *queue_url;            /* not owned */
    const char *region;               /* not owned */
    struct sigv4_credentials creds;   /* strings not owned; never logged */
    struct creds_provider *provider;  /* not owned; when set, each request is signed with
                                         its current credentials instead of creds */
    struct sigv4_key sigv4_key;       /* the last signing key: derived once a day, or when
                                         the secret rotates; never logged */
    int receive_max;                  /* MaxNumberOfMessages asked for at most: 10, halved
                                         after each answer over SQS_RECEIVE_MAX_BODY */
    /* Retry policy, set by sqs_client_init; tests shorten the backoff. */
    unsigned receive_attempts, batch_attempts, backoff_base_ms, backoff_cap_ms;
    uint64_t rng;                     /* jitter state: seeded from getrandom, or set it */
    struct sqs_api_error last_error;  /* why the last failed call failed */
    struct metrics *metrics;          /* NULL (sqs_client_init), or where each request's
                                         duration is observed, by operation */
};

/* Fills c (copying *endpoint; its path is not used) and seeds the jitter from getrandom().
 * creds may be NULL when the caller sets c->provider instead. Never fails. */
void sqs_client_init(struct sqs_client *c, struct http_client *http, const struct url *endpoint,
                     const char *queue_url, const char *region,
                     const struct sigv4_credentials *creds);

/* --- ReceiveMessage ------------------------------------------------------------------ */

struct sqs_receive_opts {
    int max_messages;         /* 1..10 */
    int wait_seconds;         /* 0..20; the request may take wait_seconds + 10 s */
    int visibility_timeout;   /* 0..43200 seconds, or -1 for the queue's default */
};

/* Per-message problems: the message arrived, but downstream must not trust or run it.
 * The reason, written for a person, is in sqs_message.problem. */
#define SQS_MSG_MD5_MISMATCH  0x1u  /* MD5OfBody missing or not the MD5 of the body bytes */
#define SQS_MSG_BAD_ATTRIBUTE 0x2u  /* image/size/command present but not usable: DataType
                                       not String (or a custom "String.x"), no StringValue,
                                       or a value holding a NUL character */
#define SQS_MSG_BAD_UNICODE   0x4u  /* the body had a lone UTF-16 surrogate escape: it is
                                       kept as its 3-byte WTF-8 form (ED A0 80 for \ud800),
                                       which strict UTF-8 checks refuse */

struct sqs_message {
    const char *message_id;
    const char *receipt_handle;
    const char *body;            /* exact bytes (may hold NULs), NUL-terminated (not counted) */
    size_t body_len;
    const char *md5_of_body;     /* as SQS sent it, "" when absent */
    const char *image;           /* StringValue of each attribute; NULL when absent or */
    const char *size;            /* unusable (then flags and problem say why) */
    const char *command;
    const char *message_group_id; /* MessageGroupId (FIFO queues), NULL when absent */
    unsigned long receive_count; /* ApproximateReceiveCount, 0 when absent or not a number */
    const char *context;         /* the message's entry of the context file (events.meta.json):
                                    a JSON object, context_len bytes, in the batch's memory:
                                    {"messageId", "receiveCount", "sentTimestamp",
                                    "firstReceiveTimestamp" (numbers, each when SQS gave
                                    digits), "messageGroupId", "deduplicationId",
                                    "sequenceNumber" (strings, when SQS gave them),
                                    "messageAttributes": {name: {"type", "value"}} (every
                                    attribute but image, size and command; Binary values in
                                    base64, as SQS sends them)} */
    size_t context_len;
    unsigned flags;              /* SQS_MSG_* */
    char problem[256];           /* "" or e.g. "message attribute size has DataType Number;
                                    only String is accepted" (several joined by "; ") */
};

/* Every string points into one allocation owned by the batch. */
struct sqs_batch {
    struct sqs_message *messages;
    size_t count;
    void *mem;
    char *context_mem;           /* the messages' context entries */
};

/* The largest ReceiveMessage answer read: 10 messages of SQS_MAX_MESSAGE_BYTES (body and
 * attributes) in which JSON escapes every byte ('"', '\\', tab, LF and CR take two), and
 * for each a generous 64 KiB of ids, receipt handle, MD5s and keys. About 20.6 MiB. */
#define SQS_RECEIVE_MAX_BODY (SQS_MAX_MESSAGES * (2u * SQS_MAX_MESSAGE_BYTES + 65536u))

/* Long-polls once. An answer without messages is an empty batch (count 0), not an error.
 * The request may take wait_seconds + 10 s: for this call the HTTP client's io_timeout_ms
 * is raised to that if it is lower (and restored), since SQS sends nothing until then; its
 * max_body likewise to SQS_RECEIVE_MAX_BODY. An answer still over that (only an SQS that
 * escapes more, e.g. \u00e9 for é, would send one) is not read: its messages come back
 * after their visibility timeout with one more receive count, and this call and every
 * later one ask for half as many messages (c->receive_max, down to 1: one message fits
 * even at six bytes on the wire for each byte). o->max_messages is also capped by it.
 * On error b holds nothing to free and c->last_error says whether to try again later. */
int sqs_receive(struct sqs_client *c, const struct sqs_receive_opts *o, struct sqs_batch *b,
                struct lerr *e);

/* Frees what the batch holds and zeroes it; safe on a zeroed or already freed batch. */
void sqs_batch_free(struct sqs_batch *b);

/* --- DeleteMessageBatch and ChangeMessageVisibilityBatch ------------------------------ */

enum sqs_entry_status {
    SQS_ENTRY_PENDING = 0,  /* not done yet (only seen during a call) */
    SQS_ENTRY_OK,
    SQS_ENTRY_STALE,        /* receipt handle invalid or expired: the message was received
                               again elsewhere, or is no longer in flight. Logged, not fatal */
    SQS_ENTRY_FAILED,       /* still failed after the retries; code and message say why */
};

/* One entry of DeleteMessageBatch, ChangeMessageVisibilityBatch, SendMessageBatch or
 * SendMessage: each call reads the inputs it needs and writes the outputs. */
struct sqs_entry {
    const char *receipt_handle;     /* in, delete and change visibility */
    const char *message_id;         /* in, optional: only for log lines */
    int visibility_timeout;         /* in, ChangeMessageVisibilityBatch only: 0..43200 */
    const char *body;               /* in, send: body_len bytes, sent exactly as they are:
                                       the request's JSON string decodes to these bytes */
    size_t body_len;
    const char *image;              /* in, send: String message attributes; NULL leaves
                                       one out */
    const char *size;
    const char *command;
    const char *group_id;           /* in, send to FIFO queues: MessageGroupId, or NULL */
    const char *dedup_id;           /* in, send to FIFO queues: MessageDeduplicationId, or
                                       NULL (the queue's content-based deduplication) */
    enum sqs_entry_status status;   /* out (a send is never STALE) */
    char sent_id[128];              /* out, send: SQS's MessageId when OK; also when FAILED
                                       because the MD5 SQS reported does not match (the
                                       message exists, with other bytes), else "" */
    char code[64];                  /* out: SQS's code ("ReceiptHandleIsInvalid",
                                       "InvalidMessageContents"), "MD5Mismatch", or the
                                       kind of a transport error ("timeout") */
    char message[200];              /* out: SQS's message, or the transport error text */
};

/* The entry calls; SQS_OP_SEND is SendMessage, one entry written without the list. */
enum sqs_batch_op { SQS_OP_DELETE, SQS_OP_CHANGE_VISIBILITY, SQS_OP_SEND_BATCH, SQS_OP_SEND };

/* Deletes, changes the visibility of, or sends (SendMessageBatch, entry i is "m<i>") n
 * entries, 1 <= n <= 10; sends one message (SendMessage, n = 1). Entries that fail through
 * no fault of ours (SenderFault false, throttling) and whole requests that fail so are
 * retried, up to c->batch_attempts rounds; a retry after a lost answer may send a message
 * twice. Returns 0 when every entry is SQS_ENTRY_OK (or, for receipt handles,
 * SQS_ENTRY_STALE); -1 with e set when any is SQS_ENTRY_FAILED (code and message say why;
 * SendMessage: e is "SQS SendMessage: message <id>: <code>: <message>") or the arguments
 * are invalid (LERR_INVALID, e.g. a body or attribute that sqs_text_check refuses: nothing
 * sent, entries FAILED with the reason). c->last_error says what SQS said. Each entry's
 * status says what happened to it either way; a sent one's sent_id is its MessageId. */
int sqs_batch_call(struct sqs_client *c, enum sqs_batch_op op, struct sqs_entry *entries,
                   size_t n, struct lerr *e);

/* --- SendMessage and SendMessageBatch (lambdo send) ----------------------------------- */

/* SQS's largest message, body and attributes counted (names, DataTypes, values), since
 * 2025. A queue's MaximumMessageSize may be lower: then SQS refuses the message. */
#define SQS_MAX_MESSAGE_BYTES 1048576
/* What one SendMessageBatch request carries at most, summed like SQS_MAX_MESSAGE_BYTES:
 * the 256 KiB every queue, region and emulator accepts (SQS's own cap is 1 MiB now, it
 * was this before). A single larger message still goes, alone. */
#define SQS_SEND_BATCH_BYTES 262144

/* Checks a MessageGroupId or MessageDeduplicationId as SQS does: 1 to 128 characters,
 * ASCII letters, digits and punctuation. Returns 0, or -1 with e set (LERR_INVALID) naming
 * what (e.g. "group id") and the offending character. */
int sqs_fifo_id_check(const char *id, const char *what, struct lerr *e);

/* Bytes SQS counts for the message: body, and each attribute's name, "String" and value. */
size_t sqs_send_size(const struct sqs_entry *en);

/* Checks that s[0..len) is text SQS accepts in a body or attribute value: valid UTF-8
 * (no overlong forms, no surrogates) of the characters #x9 #xA #xD #x20-#xD7FF
 * #xE000-#xFFFD #x10000-#x10FFFF. Returns 0, or -1 with *err_at the offset of the first
 * offending byte and *why a short static description. err_at and why may be NULL. */
int sqs_text_check(const char *s, size_t len, size_t *err_at, const char **why);

/* --- GetQueueAttributes (lambdo check) ------------------------------------------------ */

struct sqs_queue_info {
    long visible;              /* ApproximateNumberOfMessages; -1 when SQS did not say */
    long in_flight;            /* ApproximateNumberOfMessagesNotVisible; -1 likewise */
    long delayed;              /* ApproximateNumberOfMessagesDelayed; -1 likewise */
    int has_redrive;           /* a RedrivePolicy attribute is set (and not empty) */
    char dead_letter_arn[256]; /* its deadLetterTargetArn, "" when absent or unreadable */
    long max_receive_count;    /* its maxReceiveCount (a number or a numeric string), or -1 */
    int fifo;                  /* FifoQueue "true" */
    int content_dedup;         /* ContentBasedDeduplication "true" */
};

/* The attributes asked for: the three counts, RedrivePolicy, and on a FIFO queue (only:
 * SQS answers InvalidAttributeName for them on a standard queue) FifoQueue and
 * ContentBasedDeduplication. */
char *sqs_attributes_request(const char *queue_url, size_t *len, struct lerr *e);

/* Reads a GetQueueAttributes answer ({"Attributes": {name: string value}}). Values that
 * are not whole numbers count as absent; a RedrivePolicy that is not JSON still sets
 * has_redrive. Returns 0, or -1 (LERR_MALFORMED) when the answer is not such an object. */
int sqs_parse_attributes(const char *json, size_t len, struct sqs_queue_info *out,
                         struct lerr *e);

/* GetQueueAttributes on the client's queue, retried like ReceiveMessage. Returns 0 with
 * out filled, or -1 with e set (out is then not to be read) and c->last_error saying what SQS (or the connection)
 * said: an authentication failure (SignatureDoesNotMatch, InvalidClientTokenId...), a
 * missing queue, a TLS error (e->kind LERR_TLS_*)... */
int sqs_get_queue_attributes(struct sqs_client *c, struct sqs_queue_info *out,
                             struct lerr *e);

/* --- pure parts, for the tests and the fuzzer ----------------------------------------- */

/* The JSON request bodies. Return a NUL-terminated string to free() (length in *len), or
 * NULL with e set (LERR_INVALID for out-of-range options, no queue URL, a receipt handle
 * missing, a body or value sqs_text_check refuses, n out of 1..10 (SQS_OP_SEND: 1), no
 * pending entry; LERR_NOMEM). The batch body holds the entries whose status is
 * SQS_ENTRY_PENDING, entry i with the Id "m<i>". Bodies and values are escaped by hand,
 * never through a parsed form: only '"', '\\' and control bytes are escaped, everything
 * else is copied. */
char *sqs_receive_request(const char *queue_url, const struct sqs_receive_opts *o, size_t *len,
                          struct lerr *e);
char *sqs_batch_request(enum sqs_batch_op op, const char *queue_url,
                        const struct sqs_entry *entries, size_t n, size_t *len,
                        struct lerr *e);

/* Parses a ReceiveMessage answer (HTTP 200 body). Returns 0 with b filled (free it with
 * sqs_batch_free), or -1 with e set: LERR_MALFORMED naming what is wrong (not JSON, wrong
 * type, a message without MessageId, ReceiptHandle or Body, more than 10 messages),
 * LERR_NOMEM. Per-message problems are not errors: see sqs_message.flags. */
int sqs_parse_receive(const char *json, size_t len, struct sqs_batch *b, struct lerr *e);

/* Applies an answer of op (HTTP 200 body) to the entries it is about, the PENDING ones
 * (the others were not sent; answers about them are ignored): Successful ones become OK
 * (a message sent: FAILED, code "MD5Mismatch", when MD5OfMessageBody or
 * MD5OfMessageAttributes, if given, is not that of what was sent); Failed ones STALE
 * (receipt handles only: (ReceiptHandleIsInvalid, MessageNotInflight, an expired handle:
 * logged as a warning)), FAILED, or stay PENDING (with code and message) when SQS says SenderFault false or
 * names throttling or an internal error, so they are worth retrying. A Failed entry
 * without SenderFault counts as the sender's fault. Entries the answer does not mention
 * stay PENDING. SendMessage's answer is itself its one entry's Successful item. Returns 0,
 * or -1 with e set (LERR_MALFORMED) when the answer is not the expected JSON (SendMessage:
 * an object with a MessageId); nothing is applied then. */
int sqs_parse_batch_result(enum sqs_batch_op op, const char *json, size_t len,
                           struct sqs_entry *entries, size_t n, struct lerr *e);

/* Reads an error answer (status, headers and body of resp): the code from the body's
 * __type (or code), else the X-Amzn-ErrorType header, else the X-Amzn-Query-Error header
 * ("AWS.SimpleQueueService.NonExistentQueue;Sender"); the message from the body's message
 * or Message. What cannot be read stays empty. Returns -1 with e set (LERR_HTTP) to
 * "SQS <op> failed: <code>: <message> (HTTP <status>)". */
int sqs_parse_error(const char *op, const struct http_response *resp, struct sqs_api_error *out,
                    struct lerr *e);

/* Full-jitter backoff before retry number attempt (0 for the first retry): uniform in
 * [0, min(cap_ms, base_ms * 2^attempt)]. Advances *rng. */
unsigned sqs_backoff_ms(unsigned attempt, unsigned base_ms, unsigned cap_ms, uint64_t *rng);

#endif
