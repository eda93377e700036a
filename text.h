/*
 * text.h - digit values shared by the parsers: hex (chunk sizes, percent-encoding) and
 * base64 in its two alphabets (PEM certificates; base64url in JWTs). Pure.
 */
#ifndef LAMBDO_TEXT_H
#define LAMBDO_TEXT_H

/* 0..15 for [0-9a-fA-F], else -1. */
int text_hex_digit(unsigned char c);

/* 0..63 for a base64 character, else -1 (padding '=' included). With url set, the
 * base64url alphabet ('-' and '_' for 62 and 63) instead of the standard one ('+', '/'). */
int text_base64_digit(unsigned char c, int url);

#endif
