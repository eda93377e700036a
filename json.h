/*
 * json.h - the one way lambdo parses JSON with cJSON.
 *
 * cJSON 1.7.15 records where a parse failed in a process-wide variable, written by every
 * parse, successful or not; job threads parse Fly and SQS answers at the same time. These
 * wrappers take a lock around the parse, so that write is never a data race. Nothing reads
 * cJSON_GetErrorPtr: callers say what is wrong in their own words.
 */
#ifndef LAMBDO_JSON_H
#define LAMBDO_JSON_H

#include <stddef.h>
#include "cJSON.h"

/* cJSON_ParseWithLength: the first JSON value of s[0..len); NULL when there is none. */
cJSON *json_parse(const char *s, size_t len);

/* cJSON_ParseWithOpts(s, end, 1): the NUL-terminated s must hold one JSON value and
 * nothing after it but whitespace; *end (may be NULL) says where parsing stopped. */
cJSON *json_parse_all(const char *s, const char **end);

#endif
