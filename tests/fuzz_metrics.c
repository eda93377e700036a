/*
 * Fuzz target for metrics.c's request side. Input: the bytes a client sent (at most
 * METRICS_HEAD_MAX are used, as the server does).
 *
 * Beyond "no crash", it checks what the server relies on when it reads a request a piece
 * at a time and answers as soon as the parser has a verdict:
 *   - a verdict on a prefix (OK, BAD, VERSION) is the verdict on the whole input, with the
 *     same head length for OK: more bytes never turn a refused request into a good one;
 *   - for an OK request every prefix shorter than its head is INCOMPLETE;
 *   - pointers and lengths stay inside the input, paths start with '/', methods are tokens;
 *   - every answer is a whole HTTP/1.1 response with Connection: close and a
 *     Content-Length that matches its body (none for HEAD);
 *   - the first bytes as an address: metrics_addr_parse either refuses or gives a port in
 *     range and a known family.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "metrics.h"

static void check(int ok)
{
    if (!ok)
        abort();
}

static void check_request(const struct metrics_request *r, const char *buf, size_t len)
{
    check(r->head_len > 0 && r->head_len <= len);
    check(r->method >= buf && r->method + r->method_len <= buf + r->head_len);
    check(r->path >= buf && r->path + r->path_len <= buf + r->head_len);
    check(r->method_len > 0 && r->path_len > 0 && r->path[0] == '/');
    check(!memchr(r->path, '?', r->path_len) && !memchr(r->path, ' ', r->path_len));
    check(r->minor >= 0 && r->minor <= 9);
}

/* Every prefix agrees with the whole input (see the top). Long inputs: a sample. */
static void check_prefixes(const char *buf, size_t len, enum metrics_parse whole,
                           const struct metrics_request *wr)
{
    size_t step = len <= 512 ? 1 : len / 257 + 1;

    for (size_t k = 0; k < len; k += step) {
        struct metrics_request r;
        enum metrics_parse p = metrics_parse_request(buf, k, &r);
        if (p == METRICS_PARSE_INCOMPLETE) {
            check(whole != METRICS_PARSE_OK || k < wr->head_len);
            continue;
        }
        check(p == whole);
        if (p == METRICS_PARSE_OK)
            check(r.head_len == wr->head_len);
    }
}

static void check_answer(const struct metrics *m, const char *buf, size_t len, int too_large,
                         int head)
{
    size_t out_len = 0, clen;
    int status = 0;
    char *out = metrics_respond(m, buf, len, too_large, 0, &out_len, &status), *body;
    const char *cl;

    check(out != NULL);
    check(strlen(out) == out_len);
    check(status >= 200 && status <= 599);
    check(strncmp(out, "HTTP/1.1 ", 9) == 0);
    check(strstr(out, "\r\nConnection: close\r\n") != NULL);
    body = strstr(out, "\r\n\r\n");
    check(body != NULL);
    body += 4;
    cl = strstr(out, "\r\nContent-Length: ");
    check(cl != NULL && cl < body);
    clen = strtoul(cl + 18, NULL, 10);
    check(strlen(body) == (head ? 0 : clen));
    check((status == 405) == (strstr(out, "\r\nAllow: GET, HEAD\r\n") != NULL));
    free(out);
}

static void check_addr(const uint8_t *data, size_t size)
{
    char s[80];
    struct metrics_addr a;
    struct lerr e;
    size_t n = size < sizeof s - 1 ? size : sizeof s - 1;

    memcpy(s, data, n);
    s[n] = '\0';
    if (metrics_addr_parse(s, &a, &e) == 0) {
        check(a.port >= 0 && a.port <= 65535);
        check(a.family == AF_INET || a.family == AF_INET6 || a.family == AF_UNSPEC);
    } else {
        check(e.kind == LERR_INVALID);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const regions[] = { "iad", "ord" };
    static struct metrics m;
    static int ready;
    const char *buf = (const char *)data;
    size_t len = size < METRICS_HEAD_MAX ? size : METRICS_HEAD_MAX;
    struct metrics_request r;
    enum metrics_parse whole;

    if (!ready) {
        struct metrics_options o = { regions, 2, "fuzz", 10, NULL, NULL };
        struct lerr e;
        check(metrics_init(&m, &o, &e) == 0);
        metrics_observe(&m, METRICS_SQS, "ReceiveMessage", 0.5);
        ready = 1;
    }
    whole = metrics_parse_request(buf, len, &r);
    if (whole == METRICS_PARSE_OK)
        check_request(&r, buf, len);
    check_prefixes(buf, len, whole, &r);
    if (whole != METRICS_PARSE_INCOMPLETE)
        check_answer(&m, buf, len, 0, whole == METRICS_PARSE_OK && r.method_len == 4 &&
                                          memcmp(r.method, "HEAD", 4) == 0);
    else if (len == METRICS_HEAD_MAX)
        check_answer(&m, buf, len, 1, 0);
    check_addr(data, size);
    return 0;
}
