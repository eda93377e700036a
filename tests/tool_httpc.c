/*
 * tool_httpc - drives the HTTP client from the command line, for tests/http.test.mjs and
 * bench/http.sh.
 *
 *   tool_httpc [options] URL [URL...]
 *     --method M            request method (GET)
 *     --header 'N: V'       extra request header (repeatable)
 *     --data S              request body
 *     --data-size N         request body of N bytes ('x' repeated)
 *     --repeat N            go through the URL list N times (1)
 *     --delay-ms N          sleep between requests
 *     --timeout-ms N        whole-request timeout (0: the client's)
 *     --connect-timeout-ms N, --io-timeout-ms N, --request-timeout-ms N   client limits
 *     --max-body N          response body cap
 *     --lookup NAME         add "lookup": the value httpresp_header() finds for NAME
 *     --cancel-after-ms N   cancel_fd is a timerfd that fires after N ms
 *     --close-between       close every connection between requests (no reuse, no resumption)
 *     --alloc-stats         add "buffers_allocated" to the final line
 *     --bench               no per-request output; print timing at the end
 *     --ca-bench N          only load the CA bundle N times and print count and best time
 *     --ca-check            only load the CA bundle, and decode it again with BearSSL's own
 *                           PEM and X.509 decoders: the anchors must be the same
 *
 * All requests go through ONE http_client, in order, so keep-alive reuse shows in the
 * final line. Output: one JSON object per request, {"status","body_len","body_sha256",
 * "body" (when it is text), "headers"}, or {"error_kind","error"} and exit status 1 at the
 * first failure; then {"connections_opened","requests_sent"}. Exit status 2: usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <bearssl.h>
#include <cJSON.h>

#include "http.h"

#define MAX_URLS 64
#define MAX_HEADERS 32

struct opts {
    const char *method;
    struct http_header headers[MAX_HEADERS];
    char *header_bufs[MAX_HEADERS];
    size_t num_headers;
    char *body;
    size_t body_len;
    int repeat, delay_ms, timeout_ms, connect_timeout_ms, io_timeout_ms, request_timeout_ms;
    int cancel_after_ms;
    long long max_body;
    int close_between, bench, ca_bench, ca_check, alloc_stats;
    const char *lookup;
    const char *urls[MAX_URLS];
    int num_urls;
};

static int usage(const char *why)
{
    fprintf(stderr, "tool_httpc: %s\nusage: tool_httpc [--method M] [--header 'N: V'] "
                    "[--data S|--data-size N] [--repeat N] [--delay-ms N] [--timeout-ms N] "
                    "[--connect-timeout-ms N] [--io-timeout-ms N] [--request-timeout-ms N] "
                    "[--max-body N] "
                    "[--lookup NAME] [--cancel-after-ms N] [--close-between] [--alloc-stats] [--bench] URL...\n"
                    "       tool_httpc --ca-bench N | --ca-check\n",
            why);
    return 2;
}

static int opt_header(struct opts *o, const char *arg)
{
    char *copy, *colon;

    if (o->num_headers == MAX_HEADERS || !(copy = strdup(arg)))
        return -1;
    colon = strchr(copy, ':');
    if (!colon) {
        free(copy);
        return -1;
    }
    *colon++ = '\0';
    while (*colon == ' ')
        colon++;
    o->header_bufs[o->num_headers] = copy;
    o->headers[o->num_headers].name = copy;
    o->headers[o->num_headers].value = colon;
    o->num_headers++;
    return 0;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
    o->method = "GET";
    o->repeat = 1;
    o->max_body = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = 1;

        if (strcmp(a, "--close-between") == 0) {
            o->close_between = 1;
            takes = 0;
        } else if (strcmp(a, "--alloc-stats") == 0) {
            o->alloc_stats = 1;
            takes = 0;
        } else if (strcmp(a, "--ca-check") == 0) {
            o->ca_check = 1;
            takes = 0;
        } else if (strcmp(a, "--bench") == 0) {
            o->bench = 1;
            takes = 0;
        } else if (strncmp(a, "--", 2) != 0) {
            if (o->num_urls == MAX_URLS)
                return usage("too many URLs");
            o->urls[o->num_urls++] = a;
            takes = 0;
        } else if (!v) {
            return usage("option needs a value");
        } else if (strcmp(a, "--method") == 0) {
            o->method = v;
        } else if (strcmp(a, "--header") == 0) {
            if (opt_header(o, v) < 0)
                return usage("bad --header (want 'Name: value')");
        } else if (strcmp(a, "--data") == 0) {
            free(o->body);
            o->body = strdup(v);
            o->body_len = strlen(v);
        } else if (strcmp(a, "--data-size") == 0) {
            free(o->body);
            o->body_len = strtoul(v, NULL, 10);
            o->body = malloc(o->body_len + 1);
            if (!o->body)
                return usage("out of memory");
            memset(o->body, 'x', o->body_len);
        } else if (strcmp(a, "--repeat") == 0) {
            o->repeat = atoi(v);
        } else if (strcmp(a, "--delay-ms") == 0) {
            o->delay_ms = atoi(v);
        } else if (strcmp(a, "--timeout-ms") == 0) {
            o->timeout_ms = atoi(v);
        } else if (strcmp(a, "--connect-timeout-ms") == 0) {
            o->connect_timeout_ms = atoi(v);
        } else if (strcmp(a, "--io-timeout-ms") == 0) {
            o->io_timeout_ms = atoi(v);
        } else if (strcmp(a, "--request-timeout-ms") == 0) {
            o->request_timeout_ms = atoi(v);
        } else if (strcmp(a, "--max-body") == 0) {
            o->max_body = atoll(v);
        } else if (strcmp(a, "--lookup") == 0) {
            o->lookup = v;
        } else if (strcmp(a, "--cancel-after-ms") == 0) {
            o->cancel_after_ms = atoi(v);
        } else if (strcmp(a, "--ca-bench") == 0) {
            o->ca_bench = atoi(v);
        } else {
            return usage("unknown option");
        }
        i += takes;
    }
    if (!o->ca_bench && !o->ca_check && o->num_urls == 0)
        return usage("no URL");
    return 0;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static double cpu_ms(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

static void print_json(cJSON *obj)
{
    char *s = cJSON_PrintUnformatted(obj);
    if (s) {
        puts(s);
        free(s);
    }
    cJSON_Delete(obj);
    fflush(stdout);
}

static void print_error(const struct lerr *e)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "error_kind", lerr_kind_name(e->kind));
    cJSON_AddStringToObject(o, "error", e->msg);
    print_json(o);
}

static int is_text(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] == '\0' || (unsigned char)p[i] >= 0x80)
            return 0;
    return 1;
}

static void print_response(const struct http_response *r, const char *lookup)
{
    unsigned char digest[32];
    char hex[65];
    br_sha256_context sha;
    cJSON *o = cJSON_CreateObject(), *h = cJSON_CreateObject();

    br_sha256_init(&sha);
    br_sha256_update(&sha, r->body, r->body_len);
    br_sha256_out(&sha, digest);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    cJSON_AddNumberToObject(o, "status", r->head.status);
    cJSON_AddNumberToObject(o, "body_len", (double)r->body_len);
    cJSON_AddStringToObject(o, "body_sha256", hex);
    if (r->body_len <= 65536 && is_text(r->body, r->body_len))
        cJSON_AddStringToObject(o, "body", r->body);
    /* Names lowercased; a repeated field keeps its first value, as the lookup does. */
    for (size_t i = 0; i < r->head.num_headers; i++) {
        const struct httpresp_header *f = &r->head.headers[i];
        char name[256], value[4096];
        size_t nl = f->name_len < sizeof name ? f->name_len : sizeof name - 1;
        size_t vl = f->value_len < sizeof value ? f->value_len : sizeof value - 1;
        for (size_t j = 0; j < nl; j++)
            name[j] = (char)(f->name[j] >= 'A' && f->name[j] <= 'Z' ? f->name[j] + 32 : f->name[j]);
        name[nl] = '\0';
        memcpy(value, f->value, vl);
        value[vl] = '\0';
        if (!cJSON_GetObjectItemCaseSensitive(h, name))
            cJSON_AddStringToObject(h, name, value);
    }
    cJSON_AddItemToObject(o, "headers", h);
    if (lookup) {
        size_t len;
        const char *v = httpresp_header(&r->head, lookup, &len);
        if (v) {
            char *copy = strndup(v, len);
            cJSON_AddStringToObject(o, "lookup", copy ? copy : "");
            free(copy);
        } else {
            cJSON_AddNullToObject(o, "lookup");
        }
    }
    print_json(o);
}

static int ca_bench(int runs)
{
    double best = 1e9;
    size_t count = 0;

    for (int i = 0; i < runs; i++) {
        struct tls_anchors ta;
        struct lerr e = { 0 };
        double t = now_ms();
        if (tls_anchors_load(&ta, getenv("SSL_CERT_FILE"), &e) < 0) {
            print_error(&e);
            return 1;
        }
        t = now_ms() - t;
        if (t < best)
            best = t;
        count = ta.count;
        tls_anchors_free(&ta);
    }
    printf("{\"anchors\":%zu,\"runs\":%d,\"best_ms\":%.3f}\n", count, runs, best);
    return 0;
}

/* The reference: BearSSL's PEM decoder feeding its X.509 decoder, as its brssl tool does. */
struct ref {
    br_x509_decoder_context x509;
    unsigned char dn[4096];
    size_t dn_len;
    int in_cert;
};

static void ref_dn(void *ctx, const void *buf, size_t len)
{
    struct ref *r = ctx;
    if (r->dn_len + len <= sizeof r->dn)
        memcpy(r->dn + r->dn_len, buf, len);
    r->dn_len += len;
}

static void ref_der(void *ctx, const void *buf, size_t len)
{
    br_x509_decoder_push(&((struct ref *)ctx)->x509, buf, len);
}

static int same(const void *a, size_t alen, const void *b, size_t blen)
{
    return alen == blen && memcmp(a, b, alen) == 0;
}

/* Returns 1 when anchor a holds what the reference decoded. */
static int ref_matches(struct ref *r, const br_x509_trust_anchor *a)
{
    const br_x509_pkey *pk = br_x509_decoder_get_pkey(&r->x509);
    unsigned flags = br_x509_decoder_isCA(&r->x509) ? BR_X509_TA_CA : 0;

    if (!pk || !same(r->dn, r->dn_len, a->dn.data, a->dn.len) || flags != a->flags ||
        pk->key_type != a->pkey.key_type)
        return 0;
    if (pk->key_type == BR_KEYTYPE_RSA) {
        const unsigned char *n = pk->key.rsa.n;
        size_t nlen = pk->key.rsa.nlen;
        while (nlen > 1 && n[0] == 0) {  /* the anchors drop leading zeros */
            n++;
            nlen--;
        }
        return same(n, nlen, a->pkey.key.rsa.n, a->pkey.key.rsa.nlen) &&
               same(pk->key.rsa.e, pk->key.rsa.elen, a->pkey.key.rsa.e, a->pkey.key.rsa.elen);
    }
    return pk->key.ec.curve == a->pkey.key.ec.curve &&
           same(pk->key.ec.q, pk->key.ec.qlen, a->pkey.key.ec.q, a->pkey.key.ec.qlen);
}

static int ca_check(void)
{
    const char *path = getenv("SSL_CERT_FILE") ? getenv("SSL_CERT_FILE") : TLS_DEFAULT_CA_FILE;
    struct tls_anchors ta;
    struct lerr e = { 0 };
    static struct ref r;
    br_pem_decoder_context pem;
    size_t certs = 0, usable = 0, matched = 0, len;
    static unsigned char buf[4 << 20];
    FILE *f;

    if (tls_anchors_load(&ta, getenv("SSL_CERT_FILE"), &e) < 0) {
        print_error(&e);
        return 1;
    }
    f = fopen(path, "rb");
    len = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (f)
        fclose(f);
    br_pem_decoder_init(&pem);
    for (const unsigned char *p = buf; len > 0;) {
        size_t n = br_pem_decoder_push(&pem, p, len);
        p += n;
        len -= n;
        switch (br_pem_decoder_event(&pem)) {
        case BR_PEM_BEGIN_OBJ:
            r.in_cert = strcmp(br_pem_decoder_name(&pem), "CERTIFICATE") == 0;
            r.dn_len = 0;
            br_x509_decoder_init(&r.x509, ref_dn, &r);
            br_pem_decoder_setdest(&pem, r.in_cert ? ref_der : NULL, &r);
            break;
        case BR_PEM_END_OBJ:
            if (!r.in_cert)
                break;
            certs++;
            if (!br_x509_decoder_get_pkey(&r.x509))
                break;
            if (usable < ta.count && ref_matches(&r, &ta.anchors[usable]))
                matched++;
            usable++;
            break;
        default:
            break;
        }
    }
    printf("{\"certificates\":%zu,\"reference_anchors\":%zu,\"anchors\":%zu,\"matching\":%zu}\n",
           certs, usable, ta.count, matched);
    int rc = matched == ta.count && usable == ta.count ? 0 : 1;
    tls_anchors_free(&ta);
    return rc;
}

static int make_cancel_fd(int after_ms)
{
    struct itimerspec its = { 0 };
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);

    if (fd < 0)
        return -1;
    its.it_value.tv_sec = after_ms / 1000;
    its.it_value.tv_nsec = (long)(after_ms % 1000) * 1000000;
    timerfd_settime(fd, 0, &its, NULL);
    return fd;
}

static int run(struct opts *o)
{
    struct tls_anchors ta = { 0 };
    struct http_client c;
    struct url *urls = calloc((size_t)o->num_urls, sizeof *urls);
    struct lerr e = { 0 };
    int need_tls = 0, rc = 0, n = 0;
    double t0, c0;

    if (!urls)
        return 1;
    for (int i = 0; i < o->num_urls; i++) {
        if (url_parse(o->urls[i], &urls[i], &e) < 0) {
            print_error(&e);
            free(urls);
            return 1;
        }
        need_tls |= urls[i].tls;
    }
    if (need_tls && tls_anchors_load(&ta, getenv("SSL_CERT_FILE"), &e) < 0) {
        print_error(&e);
        free(urls);
        return 1;
    }
    http_client_init(&c, need_tls ? &ta : NULL);
    if (o->connect_timeout_ms)
        c.connect_timeout_ms = o->connect_timeout_ms;
    if (o->io_timeout_ms)
        c.io_timeout_ms = o->io_timeout_ms;
    if (o->request_timeout_ms)
        c.request_timeout_ms = o->request_timeout_ms;
    if (o->max_body >= 0)
        c.max_body = (size_t)o->max_body;
    if (o->cancel_after_ms)
        c.cancel_fd = make_cancel_fd(o->cancel_after_ms);

    t0 = now_ms();
    c0 = cpu_ms();
    for (int r = 0; r < o->repeat && rc == 0; r++) {
        for (int i = 0; i < o->num_urls; i++, n++) {
            struct http_request req = { o->method, &urls[i], o->headers, o->num_headers,
                                        o->body, o->body_len, o->timeout_ms };
            struct http_response resp;

            if (n > 0 && o->delay_ms)
                usleep((useconds_t)o->delay_ms * 1000);
            if (n > 0 && o->close_between)
                http_client_close(&c);
            if (http_do(&c, &req, &resp, &e) < 0) {
                print_error(&e);
                rc = 1;
                break;
            }
            if (!o->bench)
                print_response(&resp, o->lookup);
            http_response_free(&resp);
        }
    }
    if (o->bench && rc == 0) {
        double wall = now_ms() - t0, cpu = cpu_ms() - c0;
        printf("{\"requests\":%d,\"wall_ms\":%.1f,\"cpu_ms\":%.1f,\"req_per_s\":%.0f,"
               "\"cpu_ms_per_req\":%.3f}\n",
               n, wall, cpu, n / (wall / 1e3), cpu / n);
    }
    printf("{\"connections_opened\":%lu,\"requests_sent\":%lu", c.connections_opened,
           c.requests_sent);
    if (o->alloc_stats)
        printf(",\"buffers_allocated\":%lu", c.buffers_allocated);
    printf("}\n");
    http_client_close(&c);
    if (c.cancel_fd >= 0)
        close(c.cancel_fd);
    tls_anchors_free(&ta);
    free(urls);
    return rc;
}

int main(int argc, char **argv)
{
    struct opts o = { 0 };
    int rc = parse_args(argc, argv, &o);

    if (rc == 0)
        rc = o.ca_check ? ca_check() : o.ca_bench ? ca_bench(o.ca_bench) : run(&o);
    for (size_t i = 0; i < o.num_headers; i++)
        free(o.header_bufs[i]);
    free(o.body);
    return rc;
}
