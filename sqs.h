/*
 * sqs.h - Amazon SQS over the AWS JSON 1.0 protocol: ReceiveMessage, DeleteMessageBatch,
 * ChangeMessageVisibilityBatch.
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
 * tests and the fuzzer; they do no I/O.
 */
#ifndef LAMBDO_SQS_H
#define LAMBDO_SQS_H

#include <stddef.h>
#include <stdint.h>
#include "err.h"
#include "http.h"
#include "sigv4.h"
#include "url.h"

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

struct sqs_client {
    struct http_client *http;         /* not owned; its cancel_fd also ends backoff sleeps */
    struct url endpoint;              /* scheme, host and port; requests always go to "/" */
    const char *queue_url;            /* not owned */
    const char *region;               /* not owned */
    struct sigv4_credentials creds;   /* strings not owned; never logged */
    /* Retry policy, set by sqs_client_init; tests shorten the backoff. */
    unsigned receive_attempts, batch_attempts, backoff_base_ms, backoff_cap_ms;
    uint64_t rng;                     /* jitter state: seeded from getrandom, or set it */
    struct sqs_api_error last_error;  /* why the last failed call failed */
};

/* Fills c (copying *endpoint; its path is not used) and seeds the jitter from getrandom().
 * Never fails. */
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

/* The message attributes lambdo asks for. */
#define SQS_ATTR_IMAGE "image"
#define SQS_ATTR_SIZE "size"
#define SQS_ATTR_COMMAND "command"

struct sqs_message {
    const char *message_id;
    const char *receipt_handle;
    const char *body;            /* exact bytes (may hold NULs), NUL-terminated (not counted) */
    size_t body_len;
    const char *md5_of_body;     /* as SQS sent it, "" when absent */
    const char *image;           /* StringValue of each attribute; NULL when absent or */
    const char *size;            /* unusable (then flags and problem say why) */
    const char *command;
    unsigned long receive_count; /* ApproximateReceiveCount, 0 when absent or not a number */
    unsigned flags;              /* SQS_MSG_* */
    char problem[256];           /* "" or e.g. "message attribute size has DataType Number;
                                    only String is accepted" (several joined by "; ") */
};

/* Every string points into one allocation owned by the batch. */
struct sqs_batch {
    struct sqs_message *messages;
    size_t count;
    void *mem;
};

/* Long-polls once. An answer without messages is an empty batch (count 0), not an error.
 * The request may take wait_seconds + 10 s: for this call the HTTP client's io_timeout_ms
 * is raised to that if it is lower (and restored), since SQS sends nothing until then.
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

struct sqs_entry {
    const char *receipt_handle;     /* in */
    const char *message_id;         /* in, optional: only for log lines */
    int visibility_timeout;         /* in, ChangeMessageVisibilityBatch only: 0..43200 */
    enum sqs_entry_status status;   /* out */
    char code[64];                  /* out: SQS's code ("ReceiptHandleIsInvalid"), or the
                                       kind of a transport error ("timeout") */
    char message[200];              /* out: SQS's message, or the transport error text */
};

/* Deletes (or changes the visibility of) n entries, 1 <= n <= 10. Returns 0 when every
 * entry is SQS_ENTRY_OK or SQS_ENTRY_STALE; -1 with e set when any entry is
 * SQS_ENTRY_FAILED (or the arguments are invalid: LERR_INVALID, entries untouched).
 * Each entry's status says what happened to it either way. */
int sqs_delete_batch(struct sqs_client *c, struct sqs_entry *entries, size_t n,
                     struct lerr *e);
int sqs_change_visibility_batch(struct sqs_client *c, struct sqs_entry *entries, size_t n,
                                struct lerr *e);

/* --- pure parts, for the tests and the fuzzer ----------------------------------------- */

enum sqs_batch_op { SQS_OP_DELETE, SQS_OP_CHANGE_VISIBILITY };

/* The JSON request bodies. Return a NUL-terminated string to free() (length in *len), or
 * NULL with e set (LERR_INVALID for out-of-range options, LERR_NOMEM). The batch body holds
 * the entries whose status is SQS_ENTRY_PENDING, entry i with the Id "m<i>". */
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

/* Applies a batch answer (HTTP 200 body) to the entries it is about, the PENDING ones
 * (the others were not sent; answers about them are ignored): Successful ones become OK;
 * Failed ones STALE (ReceiptHandleIsInvalid, MessageNotInflight, an expired handle),
 * FAILED, or stay PENDING (with code and message) when SQS says SenderFault false or
 * names throttling or an internal error, so they are worth retrying. A Failed entry
 * without SenderFault counts as the sender's fault. Entries the answer does not mention
 * stay PENDING. Returns 0, or -1 with e set (LERR_MALFORMED) when the answer is not the
 * expected JSON. */
int sqs_parse_batch_result(const char *json, size_t len, struct sqs_entry *entries, size_t n,
                           struct lerr *e);

/* Reads an error answer: the code from the body's __type (or code), else the
 * X-Amzn-ErrorType header, else the X-Amzn-Query-Error header
 * ("AWS.SimpleQueueService.NonExistentQueue;Sender"); the message from the body's message
 * or Message. Headers may be NULL. Never fails: what cannot be read stays empty. */
void sqs_parse_error(int status, const char *errortype_header, size_t errortype_len,
                     const char *query_error_header, size_t query_error_len, const char *body,
                     size_t body_len, struct sqs_api_error *out);

/* Sets e (LERR_HTTP) to "SQS <operation> failed: <code>: <message> (HTTP <status>)". */
int sqs_api_error_set(struct lerr *e, const char *operation, const struct sqs_api_error *ae);

/* 1 for codes worth retrying: throttling and internal errors. */
int sqs_code_retryable(const char *code);

/* Full-jitter backoff before retry number attempt (0 for the first retry): uniform in
 * [0, min(cap_ms, base_ms * 2^attempt)]. Advances *rng. */
unsigned sqs_backoff_ms(unsigned attempt, unsigned base_ms, unsigned cap_ms, uint64_t *rng);

/* Sleeps ms milliseconds, or less when cancel_fd (if >= 0) becomes readable: then returns
 * -1 with LERR_CANCELLED. */
int sqs_sleep(int cancel_fd, unsigned ms, struct lerr *e);

#endif
