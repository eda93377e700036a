/*
 * json.h - JSON in lambdo: one strict scanner over caller-owned bytes, and the cJSON parse
 * wrappers.
 *
 * The scanner owns the rules of JSON text and the decoding of its strings; what a document
 * means belongs to its reader (group.c for bodies and commands, sqs.c for SQS answers). It
 * reads a buffer of known length in place, picohttpparser style: nothing is allocated, a
 * value is checked and stepped over (json_skip), objects and arrays are walked a member or
 * an element at a time (json_member, json_element), and a string is decoded into the
 * caller's memory, with its length, so a \u0000 is kept (json_string). cJSON stays where a
 * tree is simply convenient: Fly and STS answers, requests that carry no user bytes.
 *
 * The rules are RFC 8259's, more strictly than cJSON: leading zeros, "1." and "-.5", raw
 * control characters in strings, invalid UTF-8, unpaired \u surrogates, a byte-order mark
 * and non-JSON whitespace (NUL, \v, \f) are all refused, as is nesting deeper than
 * max_depth. Bodies reach the Machine byte for byte, so one body that a strict parser
 * (JSON.parse, Python's json) refuses would make the whole events file unreadable. Numbers
 * are never converted: 12345678901234567890.123456789e-5 stays exactly that.
 *
 * In lenient mode (SQS answers), strings are read as SQS sends them: raw bytes other than
 * control characters are not judged (a body's bytes are its owner's), and a lone surrogate
 * escape decodes to its 3-byte WTF-8 form and is counted in lone, so that the message
 * carrying it can be refused alone.
 *
 * Errors: -1, with err_at the 0-based offset of the offending byte and why a short static
 * reason such as "leading zero in number" or "unexpected end".
 *
 * cJSON 1.7.15 records where a parse failed in a process-wide variable, written by every
 * parse, successful or not; job threads parse Fly answers at the same time. json_parse takes
 * a lock around the parse, so that write is never a data race. Nothing
 * reads cJSON_GetErrorPtr: callers say what is wrong in their own words.
 */
#ifndef LAMBDO_JSON_H
#define LAMBDO_JSON_H

#include <stddef.h>
#include "cJSON.h"

#define JSON_MAX_DEPTH 512   /* nested arrays and objects in a value, at most */

struct json {
    const unsigned char *start, *p, *end;  /* the text; p: where reading goes on */
    unsigned max_depth;                    /* JSON_MAX_DEPTH after json_init, or lower */
    int lenient;                           /* read strings as SQS sends them (above) */
    unsigned lone;                         /* lenient: lone surrogates decoded so far */
    size_t err_at;                         /* after an error: where, from start */
    const char *why;                       /* after an error: why */
};

/* Starts reading s[0..len), strictly, at its first byte. */
void json_init(struct json *j, const char *s, size_t len);

/* Skips whitespace: the next byte, or -1 at the end of the text. */
int json_peek(struct json *j);

/* Checks the value at p (whitespace before it skipped) and steps over it. */
int json_skip(struct json *j);

/* Decodes the string at p into out[0..cap) (out may be NULL: only checked), with a NUL
 * after it when that fits; *len (may be NULL) is its decoded length, counting any bytes
 * that did not fit. p goes past the closing quote. */
int json_string(struct json *j, char *out, size_t cap, size_t *len);

/* Walk an object or an array at p: *state is 0 before the first call. Return 1 at the next
 * member (its name decoded into key: "" when it needs cap bytes or more, or holds a NUL,
 * so it matches no name) or element, p at its value; 0 after the closing bracket; -1. */
int json_member(struct json *j, int *state, char *key, size_t cap);
int json_element(struct json *j, int *state);
/* json_member for a reader that wants only some names: *which is the member's name's index
 * in names[0..n) (each shorter than 64 bytes), or -1 for any other name. */
int json_member_of(struct json *j, int *state, const char *const *names, size_t n, int *which);

/* 0 when s[0..len) is exactly one value with optional whitespace around it; else -1 with
 * *err_at and *why (each may be NULL) set as above. With item not NULL, calls
 * item(ctx, offset, len) for each element of an array (for an object: each member's
 * value), in order: its exact bytes, without the whitespace around it. On an error, item
 * may already have been called for the elements before it. */
typedef void (*json_item_fn)(void *ctx, size_t offset, size_t len);
int json_items(const char *s, size_t len, json_item_fn item, void *ctx, size_t *err_at,
               const char **why);

/* Writing: a growing buffer for the JSON text of requests. A failed allocation is sticky:
 * every later write does nothing and oom stays set, so the caller checks once at the end.
 * The text is NUL-terminated after every write. */
struct json_buf {
    char *p;
    size_t len, cap;
    int oom;
};

/* Room for n more bytes (and the NUL) at p + len, or NULL; len is the caller's to move. */
char *json_buf_room(struct json_buf *b, size_t n);
void json_buf_lit(struct json_buf *b, const char *s);
/* printf into the text, for short pieces (at most 255 bytes). */
void json_buf_fmt(struct json_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* s[0..n) as a JSON string: quotes, backslashes and control bytes escaped, other bytes as
 * they are (the caller checked them UTF-8). */
void json_buf_string(struct json_buf *b, const char *s, size_t n);

/* cJSON_ParseWithLength: the first JSON value of s[0..len); NULL when there is none. */
cJSON *json_parse(const char *s, size_t len);


#endif
