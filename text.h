/*
 * text.h - the character-level pieces shared by the parsers: hex digits (chunk sizes,
 * percent-encoding, \u escapes) and percent-encoding itself, base64 in its two alphabets
 * (PEM certificates; base64url in JWTs), UTF-8 (JSON strings, what SQS accepts) and a
 * suffix test, all pure; and the one bounded whole-file reader (shared credential files,
 * the web identity token, the CA bundle, the input of `lambdo send`), which wipes what it
 * frees: a file may hold secrets.
 */
#ifndef LAMBDO_TEXT_H
#define LAMBDO_TEXT_H

#include <stddef.h>
#include "err.h"

/* 0..15 for [0-9a-fA-F], else -1. */
int text_hex_digit(unsigned char c);

/* Writes in[0..n) as 2n lowercase hex characters and a NUL into out. */
void text_hex_encode(const unsigned char *in, size_t n, char *out);

/* The bytes RFC 3986 leaves unencoded. */
#define TEXT_UNRESERVED "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~"

/* Byte c percent-encoded into out: c itself when unreserved (1 byte), else %XX (3). */
size_t text_pct_byte(unsigned char c, char *out);

/* s percent-encoded as RFC 3986 wants for data (all but A-Z a-z 0-9 - . _ ~ as %XX,
 * uppercase hex), with a NUL, into out[0..cap): its length, or -1 when it does not fit. */
long text_pct_encode(const char *s, char *out, size_t cap);

/* 0..63 for a base64 character, else -1 (padding '=' included). With url set, the
 * base64url alphabet ('-' and '_' for 62 and 63) instead of the standard one ('+', '/'). */
int text_base64_digit(unsigned char c, int url);

/* Decodes base64 (url: base64url) in[0..n) into out, which may be in itself: out never
 * overtakes in. '=' padding may end it; without url, spaces, tabs and line ends are skipped
 * (PEM). Returns the decoded length, or -1 on another byte, a digit after the padding, or
 * a lone last digit (6 bits make no byte). */
long text_base64_decode(const unsigned char *in, size_t n, unsigned char *out, int url);

/* The UTF-8 sequence at p (avail >= 1 bytes), strictly (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF): its length with *cp its code point, or 0 when
 * there is none. */
size_t text_utf8_next(const unsigned char *p, size_t avail, unsigned *cp);

/* Writes code point cp (at most 0x10FFFF) as 1 to 4 bytes of UTF-8 and returns how many.
 * A surrogate code point gets its 3-byte form (WTF-8), which strict checks refuse. */
unsigned text_utf8_put(unsigned long cp, unsigned char *out);

/* 1 when s holds no byte below lowest (at least 0x20: no control character), no DEL and
 * no character of bad (may be NULL): what can go into a header or a configuration word. */
int text_clean(const char *s, unsigned char lowest, const char *bad);

/* 1 when s ends in suffix and is longer than it. */
int text_ends_with(const char *s, const char *suffix);

/* Zeroes buf[0..len) (explicit_bzero: not optimised away), then frees it; NULL is fine. */
void text_wipe_free(void *buf, size_t len);

/* What text_read_file accepts: only a regular file (a FIFO would block, a directory fails
 * to read); a file that does not exist (ENOENT, ENOTDIR) as a result, not an error. */
#define TEXT_READ_REGULAR 1
#define TEXT_READ_MISSING_OK 2

/* Reads the whole file at path (NULL: stdin, which stays open) into a NUL-terminated heap
 * buffer *out of *out_len bytes, at most max; flags are TEXT_READ_*. Messages name the file
 * as what followed by the path ("CA bundle " or ""). Returns 0, 1 when the file does not
 * exist with TEXT_READ_MISSING_OK (e untouched), or -1 with e set. *out is set only on
 * success; on failure what was read is wiped. */
int text_read_file(const char *path, const char *what, size_t max, int flags, char **out,
                   size_t *out_len, struct lerr *e);

#endif
