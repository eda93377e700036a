/*
 * Fuzz target for creds.c's parsers. The first byte picks one:
 *   'x' (and anything else)  creds_sts_parse: the STS XML reader
 *   'i'  creds_profile_parse of profile "default" in a credentials file
 *   'c'  the same as a config file
 *   'j'  creds_jwt_exp
 *   't'  creds_parse_time
 * Beyond "no crash", it checks what callers rely on: results are NUL-terminated and within
 * their buffers, a success has every credential field, errors have a kind and a message,
 * and an accepted STS answer without its last '>' is refused.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "creds.h"

static void check(int ok)
{
    if (!ok)
        abort();
}

static void check_error(const struct lerr *e)
{
    check(e->kind != LERR_NONE && e->msg[0] != '\0');
    check(memchr(e->msg, '\0', sizeof e->msg) != NULL);
}

/* Without its last '>' (of the root's end tag, or of a comment after it) an accepted
 * answer is unfinished, and must be refused. */
static void check_cut(const char *buf, size_t len)
{
    struct creds_sts_answer *b = malloc(sizeof *b);
    struct lerr e;
    size_t last = len;

    check(b != NULL);
    while (last > 0 && buf[last - 1] != '>')
        last--;
    check(last > 0);
    check(creds_sts_parse(buf, last - 1, b, &e) < 0);
    free(b);
}

static void fuzz_sts(const char *buf, size_t len)
{
    struct creds_sts_answer *a = malloc(sizeof *a);
    struct lerr e;

    check(a != NULL);
    lerr_clear(&e);
    if (creds_sts_parse(buf, len, a, &e) < 0) {
        check_error(&e);
        check(e.kind == LERR_MALFORMED || e.kind == LERR_TOO_LARGE || e.kind == LERR_NOMEM);
        free(a);
        return;
    }
    if (a->is_error) {
        check(a->error_code[0] != '\0');
        check(strlen(a->error_code) < sizeof a->error_code);
        check(strlen(a->error_message) < sizeof a->error_message);
    } else {
        check(a->creds.access_key_id[0] && a->creds.secret_access_key[0] &&
              a->creds.session_token[0]);
        check(strlen(a->creds.session_token) < sizeof a->creds.session_token);
    }
    free(a);
    check_cut(buf, len);
}

static void fuzz_profile(const char *buf, size_t len, int config_file)
{
    struct creds_profile *p = malloc(sizeof *p);
    struct lerr e;

    check(p != NULL);
    lerr_clear(&e);
    if (creds_profile_parse(buf, len, config_file, "default", p, &e) < 0) {
        check_error(&e);
    } else {
        check(!!(p->have & CREDS_HAVE_KEY_ID) == (p->creds.access_key_id[0] != '\0'));
        check(!!(p->have & CREDS_HAVE_SECRET) == (p->creds.secret_access_key[0] != '\0'));
        check(!!(p->have & CREDS_HAVE_TOKEN) == (p->creds.session_token[0] != '\0'));
        check(!!(p->have & CREDS_HAVE_REGION) == (p->region[0] != '\0'));
        check(p->have == 0 || p->found);
        check(strlen(p->creds.session_token) < sizeof p->creds.session_token);
    }
    free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf;
    size_t len;
    struct lerr e;
    int64_t t;

    if (size < 1)
        return 0;
    /* A copy of exactly the input, so ASan sees any read past its end. */
    len = size - 1;
    buf = malloc(len ? len : 1);
    check(buf != NULL);
    memcpy(buf, data + 1, len);
    switch (data[0]) {
    case 'i':
        fuzz_profile(buf, len, 0);
        break;
    case 'c':
        fuzz_profile(buf, len, 1);
        break;
    case 'j':
        if (creds_jwt_exp(buf, len, &t, &e) < 0)
            check_error(&e);
        else
            check(t >= 0);
        break;
    case 't':
        if (creds_parse_time(buf, len, &t, &e) < 0)
            check_error(&e);
        break;
    default:
        fuzz_sts(buf, len);
        break;
    }
    free(buf);
    return 0;
}
