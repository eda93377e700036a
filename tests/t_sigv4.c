/*
 * t_sigv4.c - SigV4 against Amazon's published test vectors, plus edge cases.
 *
 * The vectors live outside the repo in ../shared/sigv4-suite (from the repo root; the
 * environment variable LAMBDO_SIGV4_SUITE overrides). Every vector case is its own named
 * cmocka test, built at run time from the *.req files and case directories found, so a
 * failure names the case. A missing suite, or one with fewer cases than published, fails.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bearssl_hmac.h>

#include "cJSON.h"
#include "sigv4.h"

#define AKID "AKIDEXAMPLE"
#define SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define VECTOR_DATE "20150830T123600Z"
#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define AWS4_CASES 34   /* aws4_testsuite, per its README */
#define CRT_CASES 38    /* aws-signing-test-suite-v4 */
#define MAX_HEADERS 32

/* ---- small helpers ---------------------------------------------------------------------- */

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Whole file, NUL-terminated; NULL if it cannot be read. */
static char *slurp(const char *dir, const char *file, size_t *len_out)
{
    char path[PATH_MAX];
    FILE *f;
    char *buf = NULL;
    size_t len = 0, cap = 0, n;

    snprintf(path, sizeof path, "%s/%s", dir, file);
    f = fopen(path, "rb");
    if (!f)
        return NULL;
    do {
        if (cap - len < 4096) {
            cap = cap ? 2 * cap : 8192;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
    } while (n > 0);
    fclose(f);
    buf[len] = '\0';
    if (len_out)
        *len_out = len;
    return buf;
}

/* Expected-output files sometimes end with a newline the canonical form does not have. */
static char *slurp_expected(const char *dir, const char *file)
{
    size_t len;
    char *s = slurp(dir, file, &len);

    if (!s)
        fail_msg("cannot read %s/%s", dir, file);
    if (len && s[len - 1] == '\n')
        s[--len] = '\0';
    return s;
}

/* ---- raw HTTP request files (.req, request.txt) --------------------------------------- */

struct parsed {
    char *text;                       /* owned; the strings below point into it */
    char *method, *path, *query;
    struct sigv4_header h[MAX_HEADERS + SIGV4_MAX_ADDED];
    size_t nh;
    const char *body;
    size_t body_len;
};

/* Request line, headers (a line starting with a space or tab continues the previous
 * value, and the line break stays in the value: folding it is the signer's job), a blank
 * line, then the body. The target may hold spaces ("GET /example space/ HTTP/1.1"). */
static void req_parse(struct parsed *r, char *text, size_t len)
{
    char *end = text + len, *line, *nl, *sp, *ver;

    memset(r, 0, sizeof *r);
    r->text = text;
    nl = memchr(text, '\n', len);
    assert_non_null(nl);
    *nl = '\0';
    if (nl > text && nl[-1] == '\r')
        nl[-1] = '\0';
    sp = strchr(text, ' ');
    ver = strstr(text, " HTTP/");
    assert_non_null(sp);
    assert_non_null(ver);
    *sp = '\0';
    *ver = '\0';
    r->method = text;
    r->path = sp + 1;
    r->query = strchr(r->path, '?');
    if (r->query)
        *r->query++ = '\0';

    line = nl + 1;
    while (line < end && *line != '\n' && !(*line == '\r' && line + 1 < end && line[1] == '\n')) {
        char *colon, *stop = line;

        /* The header ends before the first line that does not start with a space or tab. */
        for (;;) {
            char *n2 = memchr(stop, '\n', (size_t)(end - stop));
            if (!n2) {
                stop = end;
                break;
            }
            stop = n2;
            if (n2 + 1 < end && (n2[1] == ' ' || n2[1] == '\t')) {
                stop = n2 + 1;
                continue;
            }
            break;
        }
        colon = memchr(line, ':', (size_t)(stop - line));
        assert_non_null(colon);
        assert_true(r->nh < MAX_HEADERS);
        *colon = '\0';
        r->h[r->nh].name = line;
        r->h[r->nh].value = colon + 1;
        r->nh++;
        line = stop < end ? stop + 1 : end;
        *stop = '\0';
        if (stop > colon && stop[-1] == '\r')
            stop[-1] = '\0';
    }
    if (line < end && *line == '\r')
        line++;
    if (line < end && *line == '\n')
        line++;
    r->body = line;
    r->body_len = (size_t)(end - line);
}

static struct sigv4_request req_of(const struct parsed *r)
{
    return (struct sigv4_request){ r->method, r->path, r->query, r->h, r->nh, r->body,
                                   r->body_len };
}

/* ---- one vector case -------------------------------------------------------------------- */

enum suite_kind { SUITE_AWS4, SUITE_CRT };

struct vcase {
    enum suite_kind kind;
    char name[192];          /* cmocka test name */
    char dir[PATH_MAX];
    char stem[128];          /* aws4: the case's file stem */
};

/* Session tokens of the aws4 cases, which have no context file. */
static const char *aws4_token(const char *stem)
{
    /* Added by the signer: the value is the one the case's .creq and .sreq show. */
    if (strcmp(stem, "get-vanilla-with-session-token") == 0)
        return "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267";
    /* Already in the .req; passing it too checks it is not added a second time. */
    if (strcmp(stem, "post-sts-header-before") == 0)
        return "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFq"
               "wAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2w"
               "UE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+x"
               "o0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3i"
               "SIlTJabIQwj2ICCR/oLxBA==";
    /* post-sts-header-after adds the token after signing, so it is signed without one. */
    return NULL;
}

/* What a case signs with: the request, the credentials and the parameters. */
struct vinput {
    struct parsed req;
    struct sigv4_credentials cred;
    struct sigv4_params p;
    cJSON *context;          /* CRT cases */
    char date[17];
};

static void vinput_free(struct vinput *in)
{
    free(in->req.text);
    cJSON_Delete(in->context);
}

static const char *json_str(const cJSON *obj, const char *key)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(item) ? item->valuestring : NULL;
}

static int json_true(const cJSON *obj, const char *key)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(obj, key));
}

/* Returns 0 when the case is to be skipped (reason in *why). */
static int vinput_load(struct vinput *in, const struct vcase *c, const char **why)
{
    char file[160], *text;
    size_t len;

    memset(in, 0, sizeof *in);
    if (c->kind == SUITE_AWS4) {
        snprintf(file, sizeof file, "%s.req", c->stem);
        text = slurp(c->dir, file, &len);
        if (!text)
            fail_msg("cannot read %s/%s", c->dir, file);
        req_parse(&in->req, text, len);
        in->cred = (struct sigv4_credentials){ AKID, SECRET, aws4_token(c->stem) };
        in->p = (struct sigv4_params){ "us-east-1", "service", VECTOR_DATE, 1, 0, NULL };
        return 1;
    }

    char *ctx_text = slurp(c->dir, "context.json", NULL);
    const cJSON *cr;
    const char *ts;
    size_t n = 0;

    if (!ctx_text)
        fail_msg("cannot read %s/context.json", c->dir);
    in->context = cJSON_Parse(ctx_text);
    free(ctx_text);
    if (!in->context)
        fail_msg("%s/context.json is not JSON", c->dir);
    if (!json_true(in->context, "normalize")) {
        *why = "S3-only case (normalize=false): lambdo's normalize_path=0 is S3 signing, "
               "which signs the path exactly as sent, while this vector encodes it again; "
               "SQS paths are always normalized";
        return 0;
    }
    text = slurp(c->dir, "request.txt", &len);
    if (!text)
        fail_msg("cannot read %s/request.txt", c->dir);
    req_parse(&in->req, text, len);
    cr = cJSON_GetObjectItemCaseSensitive(in->context, "credentials");
    in->cred.access_key_id = json_str(cr, "access_key_id");
    in->cred.secret_access_key = json_str(cr, "secret_access_key");
    in->cred.session_token = json_true(in->context, "omit_session_token") ? NULL
                                                                          : json_str(cr, "token");
    /* "2015-08-30T12:36:00Z" -> "20150830T123600Z" */
    ts = json_str(in->context, "timestamp");
    assert_non_null(ts);
    for (; *ts && n < 16; ts++)
        if (*ts != '-' && *ts != ':')
            in->date[n++] = *ts;
    in->date[n] = '\0';
    in->p = (struct sigv4_params){ json_str(in->context, "region"),
                                   json_str(in->context, "service"), in->date, 1,
                                   json_true(in->context, "sign_body"), NULL };
    return 1;
}

/* The request as sent: its headers plus what the signer added, Authorization aside. */
static struct sigv4_request with_added(struct parsed *r, const struct sigv4_signature *sig)
{
    for (size_t i = 0; i < sig->num_added; i++)
        if (strcmp(sig->added[i].name, "Authorization") != 0)
            r->h[r->nh++] = sig->added[i];
    return req_of(r);
}

/* The signed-request file must carry every added header, value for value. */
static void check_signed_request(const struct vcase *c, const struct sigv4_signature *sig)
{
    char *sreq = slurp_expected(c->dir, "header-signed-request.txt");

    for (size_t i = 0; i < sig->num_added; i++) {
        const struct sigv4_header *a = &sig->added[i];
        size_t nlen = strlen(a->name);
        int found = 0;

        for (const char *line = sreq; line && !found;) {
            const char *nl = strchr(line, '\n');
            size_t len = nl ? (size_t)(nl - line) : strlen(line);
            found = len > nlen && line[nlen] == ':' && strncasecmp(line, a->name, nlen) == 0 &&
                    len - nlen - 1 == strlen(a->value) &&
                    memcmp(line + nlen + 1, a->value, len - nlen - 1) == 0;
            line = nl ? nl + 1 : NULL;
        }
        if (!found)
            fail_msg("%s: header-signed-request.txt has no line \"%s:%s\"", c->name, a->name,
                     a->value);
    }
    free(sreq);
}

static void test_vector(void **state)
{
    const struct vcase *c = *state;
    struct sigv4_signature sig;
    struct sigv4_request req;
    struct vinput in;
    struct lerr e = { 0 };
    const char *why = NULL;
    char creq[8192], sts[1024], file[160];
    char *want;

    if (!vinput_load(&in, c, &why)) {
        print_message("[ SKIP     ] %s: %s\n", c->name, why);
        vinput_free(&in);
        skip();
    }
    req = req_of(&in.req);
    if (sigv4_sign(&req, &in.cred, &in.p, &sig, &e) != 0)
        fail_msg("%s: sigv4_sign failed: %s", c->name, e.msg);

    /* The canonical request of the request as sent is exactly what was signed: the
     * signer leaves headers the request already carries alone. */
    req = with_added(&in.req, &sig);
    if (sigv4_canonical_request(&req, &in.p, creq, sizeof creq, &e) < 0)
        fail_msg("%s: sigv4_canonical_request failed: %s", c->name, e.msg);
    in.p.amz_date = sig.amz_date;
    if (sigv4_string_to_sign(creq, &in.p, sts, sizeof sts, &e) < 0)
        fail_msg("%s: sigv4_string_to_sign failed: %s", c->name, e.msg);

    if (c->kind == SUITE_AWS4) {
        snprintf(file, sizeof file, "%s.creq", c->stem);
        want = slurp_expected(c->dir, file);
        assert_string_equal(creq, want);
        free(want);
        snprintf(file, sizeof file, "%s.sts", c->stem);
        want = slurp_expected(c->dir, file);
        assert_string_equal(sts, want);
        free(want);
        snprintf(file, sizeof file, "%s.authz", c->stem);
        want = slurp_expected(c->dir, file);
        assert_string_equal(sig.authorization, want);
        free(want);
    } else {
        const char *got_sig = strstr(sig.authorization, "Signature=");
        want = slurp_expected(c->dir, "header-canonical-request.txt");
        assert_string_equal(creq, want);
        free(want);
        want = slurp_expected(c->dir, "header-string-to-sign.txt");
        assert_string_equal(sts, want);
        free(want);
        want = slurp_expected(c->dir, "header-signature.txt");
        assert_non_null(got_sig);
        assert_string_equal(got_sig + strlen("Signature="), want);
        free(want);
        check_signed_request(c, &sig);
    }
    vinput_free(&in);
}

/* ---- finding the suite and its cases ------------------------------------------------- */

struct cases {
    struct vcase *v;
    size_t n, cap;
    char suite[PATH_MAX];
    int suite_found;
    size_t aws4, crt;
};

static struct vcase *cases_add(struct cases *cs)
{
    if (cs->n == cs->cap) {
        cs->cap = cs->cap ? 2 * cs->cap : 64;
        cs->v = realloc(cs->v, cs->cap * sizeof *cs->v);
        if (!cs->v)
            abort();
    }
    memset(&cs->v[cs->n], 0, sizeof cs->v[0]);
    return &cs->v[cs->n++];
}

/* Every <stem>.req under dir, however deep (normalize-path/, post-sts-token/ nest). */
static void find_aws4(struct cases *cs, const char *dir, const char *rel)
{
    DIR *d = opendir(dir);
    struct dirent *de;

    if (!d)
        return;
    while ((de = readdir(d))) {
        char path[PATH_MAX], sub[PATH_MAX];
        size_t n = strlen(de->d_name);
        if (de->d_name[0] == '.')
            continue;
        if (snprintf(path, sizeof path, "%s/%s", dir, de->d_name) >= (int)sizeof path)
            continue;
        if (is_dir(path)) {
            if (snprintf(sub, sizeof sub, "%s%s%s", rel, *rel ? "/" : "", de->d_name) <
                (int)sizeof sub)
                find_aws4(cs, path, sub);
        } else if (n > 4 && strcmp(de->d_name + n - 4, ".req") == 0) {
            struct vcase *c = cases_add(cs);
            c->kind = SUITE_AWS4;
            if (snprintf(c->dir, sizeof c->dir, "%s", dir) >= (int)sizeof c->dir ||
                snprintf(c->stem, sizeof c->stem, "%.*s", (int)(n - 4), de->d_name) >=
                    (int)sizeof c->stem ||
                snprintf(c->name, sizeof c->name, "aws4/%s", rel) >= (int)sizeof c->name)
                abort();
            cs->aws4++;
        }
    }
    closedir(d);
}

/* Every directory holding a context.json. */
static void find_crt(struct cases *cs, const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;

    if (!d)
        return;
    while ((de = readdir(d))) {
        char path[PATH_MAX], ctx[PATH_MAX + 16];
        if (de->d_name[0] == '.')
            continue;
        if (snprintf(path, sizeof path, "%s/%s", dir, de->d_name) >= (int)sizeof path ||
            snprintf(ctx, sizeof ctx, "%s/context.json", path) >= (int)sizeof ctx ||
            !is_dir(path) || access(ctx, R_OK) != 0)
            continue;
        struct vcase *c = cases_add(cs);
        c->kind = SUITE_CRT;
        memcpy(c->dir, path, sizeof c->dir);
        if (snprintf(c->name, sizeof c->name, "crt/%s", de->d_name) >= (int)sizeof c->name)
            abort();
        cs->crt++;
    }
    closedir(d);
}

static int vcase_cmp(const void *a, const void *b)
{
    return strcmp(((const struct vcase *)a)->name, ((const struct vcase *)b)->name);
}

/* LAMBDO_SIGV4_SUITE, else ../shared/sigv4-suite from the repo root, which is the
 * current directory when the tests run from there, or found above this binary. */
static void suite_locate(struct cases *cs)
{
    const char *env = getenv("LAMBDO_SIGV4_SUITE");
    char exe[PATH_MAX], probe[PATH_MAX + 32];
    ssize_t n;

    if (env && *env) {
        snprintf(cs->suite, sizeof cs->suite, "%s", env);
        cs->suite_found = is_dir(env);
        return;
    }
    snprintf(cs->suite, sizeof cs->suite, "../shared/sigv4-suite");
    if (access("sigv4.h", R_OK) == 0 && is_dir(cs->suite)) {
        cs->suite_found = 1;
        return;
    }
    n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return;
    exe[n] = '\0';
    for (char *slash; (slash = strrchr(exe, '/')) && slash != exe;) {
        *slash = '\0';
        snprintf(probe, sizeof probe, "%s/sigv4.h", exe);
        if (access(probe, R_OK) == 0) {
            cs->suite_found = snprintf(cs->suite, sizeof cs->suite, "%s/../shared/sigv4-suite",
                                       exe) < (int)sizeof cs->suite && is_dir(cs->suite);
            return;
        }
    }
}

static void test_suite_present(void **state)
{
    const struct cases *cs = *state;

    if (!cs->suite_found)
        fail_msg("SigV4 test suite not found at %s: the vector tests did not run. Put it at "
                 "../shared/sigv4-suite (from the repo root) or set LAMBDO_SIGV4_SUITE",
                 cs->suite);
    if (cs->aws4 != AWS4_CASES)
        fail_msg("%s/aws4_testsuite: found %zu cases (*.req), expected %d", cs->suite, cs->aws4,
                 AWS4_CASES);
    if (cs->crt != CRT_CASES)
        fail_msg("%s/aws-signing-test-suite-v4: found %zu cases, expected %d", cs->suite,
                 cs->crt, CRT_CASES);
}

/* ---- edge cases of our own ------------------------------------------------------------ */

static const struct sigv4_credentials CRED = { AKID, SECRET, NULL };

static struct sigv4_params params(void)
{
    return (struct sigv4_params){ "us-east-1", "service", VECTOR_DATE, 1, 0, NULL };
}

/* Line `index` (0-based) of the canonical request of a bare GET with this path and query. */
static void creq_line(const char *path, const char *query, int normalize, int index,
                      char *out, size_t cap)
{
    struct sigv4_header h[] = { { "Host", "example.amazonaws.com" } };
    struct sigv4_request req = { "GET", path, query, h, 1, NULL, 0 };
    struct sigv4_params p = params();
    struct lerr e = { 0 };
    char buf[4096], *line = buf, *nl;

    p.normalize_path = normalize;
    if (sigv4_canonical_request(&req, &p, buf, sizeof buf, &e) < 0)
        fail_msg("canonical request of %s?%s: %s", path, query ? query : "", e.msg);
    for (; index > 0; index--) {
        line = strchr(line, '\n');
        assert_non_null(line);
        line++;
    }
    nl = strchr(line, '\n');
    if (nl)
        *nl = '\0';
    snprintf(out, cap, "%s", line);
}

static void assert_query(const char *query, const char *want)
{
    char got[2048];

    creq_line("/", query, 1, 2, got, sizeof got);
    if (strcmp(got, want) != 0)
        fail_msg("query \"%s\": canonical \"%s\", want \"%s\"", query ? query : "(null)", got,
                 want);
}

static void assert_path(const char *path, int normalize, const char *want)
{
    char got[2048];

    creq_line(path, NULL, normalize, 1, got, sizeof got);
    if (strcmp(got, want) != 0)
        fail_msg("path \"%s\" (normalize %d): canonical \"%s\", want \"%s\"", path, normalize, got,
                 want);
}

static void test_query_encoding(void **state)
{
    assert_query(NULL, "");
    assert_query("", "");
    assert_query("=value", "=value");                  /* empty key */
    assert_query("flag", "flag=");                     /* key without '=' */
    assert_query("a=&b", "a=&b=");
    assert_query("a=1&&b=2&", "a=1&b=2");               /* empty pieces carry nothing */
    assert_query("b=2&a=2&a=1&A=3", "A=3&a=1&a=2&b=2");  /* by key (bytes), then value */
    assert_query("a-b=1&a=2", "a=2&a-b=1");             /* key first, not "key=value" */
    assert_query("x=1&x=1", "x=1&x=1");                 /* identical pairs both kept */
    assert_query("%e1%88%b4=%41", "%E1%88%B4=A");       /* decoded, then encoded canonically */
    assert_query("\xe1\x88\xb4=bar", "%E1%88%B4=bar");  /* raw UTF-8 */
    assert_query("k=a b+c", "k=a%20b%2Bc");             /* '+' is a plus, not a space */
    assert_query("k=%2B%20", "k=%2B%20");
    assert_query("k=100%&j=%zz&i=%4", "i=%254&j=%25zz&k=100%25"); /* stray '%' */
    assert_query("k=:/?@!$'()*,;", "k=%3A%2F%3F%40%21%24%27%28%29%2A%2C%3B");
    assert_query("-._~=-._~", "-._~=-._~");
    /* '%' sorts before letters once encoded: "%20" < "A" though ' ' > nothing */
    assert_query("A=1&%20=2", "%20=2&A=1");
}

static void test_path_encoding(void **state)
{
    assert_path("/", 1, "/");
    assert_path("", 1, "/");
    assert_path(NULL, 1, "/");
    assert_path("/a:b@c!$&'()*+,;=d", 1, "/a%3Ab%40c%21%24%26%27%28%29%2A%2B%2C%3B%3Dd");
    assert_path("/%41%2F", 1, "/%2541%252F");         /* encoded again: double encoding */
    assert_path("/\xc3\xa9/\xf0\x9f\x98\x80", 1, "/%C3%A9/%F0%9F%98%80");
    assert_path("/a b/", 1, "/a%20b/");
    assert_path("/a/./b/../c//d/", 1, "/a/c/d/");
    assert_path("/a/b/../../..", 1, "/");
    assert_path("/../a", 1, "/a");                    /* never above the root */
    assert_path("/a/.", 1, "/a");                     /* as botocore and the JS SDK */
    assert_path("/a/..", 1, "/");
    assert_path("/a/b/c/../../d/./e/..", 1, "/a/d");
    assert_path("/%2E%2E/x", 1, "/%252E%252E/x");     /* an encoded dot is no dot segment */
    assert_path("/...", 1, "/...");
    assert_path("a/b", 1, "a/b");
    /* S3 mode: the path is signed exactly as sent */
    assert_path("/a/./b//c%20/..", 0, "/a/./b//c%20/..");
    assert_path("", 0, "/");
}

static void test_headers_canonical(void **state)
{
    struct sigv4_header h[] = {
        { "My-Header", "a" },
        { "Host", " example.amazonaws.com " },
        { "my-HEADER", "  b \t  c\n   d  " },
        { "X-Empty", "" },
        { "User-Agent", "lambdo" },          /* not signed: rewritten in flight */
        { "Authorization", "stale" },
        { "Proxy-Thing", "x" },
        { "Sec-Fetch-Mode", "cors" },
        { "x-amzn-trace-id", "Root=1" },
        { "Content-Type", "application/x-amz-json-1.0" },
        { "X-Amz-Date", VECTOR_DATE },
        { "my-header", "\"a   b\"" },
    };
    struct sigv4_request req = { "POST", "/", NULL, h, sizeof h / sizeof h[0], NULL, 0 };
    struct sigv4_params p = params();
    struct lerr e = { 0 };
    char buf[2048];

    assert_true(sigv4_canonical_request(&req, &p, buf, sizeof buf, &e) > 0);
    assert_string_equal(buf, "POST\n/\n\n"
                             "content-type:application/x-amz-json-1.0\n"
                             "host:example.amazonaws.com\n"
                             "my-header:a,b c d,\"a b\"\n"
                             "x-amz-date:" VECTOR_DATE "\n"
                             "x-empty:\n"
                             "\n"
                             "content-type;host;my-header;x-amz-date;x-empty\n" EMPTY_SHA256);
}

static void test_payload_hash(void **state)
{
    struct sigv4_header h[] = { { "Host", "example.amazonaws.com" } };
    struct sigv4_request req = { "POST", "/", NULL, h, 1, "Param1=value1", 13 };
    struct sigv4_params p = params();
    struct sigv4_signature sig;
    struct lerr e = { 0 };
    const char *want = "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e";
    char buf[2048];

    assert_int_equal(sigv4_sign(&req, &CRED, &p, &sig, &e), 0);
    assert_string_equal(sig.content_sha256, want);
    assert_int_equal(sig.num_added, 2);                         /* X-Amz-Date, Authorization */
    assert_non_null(strstr(sig.authorization, "SignedHeaders=host;x-amz-date,"));

    p.add_content_sha256 = 1;
    assert_int_equal(sigv4_sign(&req, &CRED, &p, &sig, &e), 0);
    assert_int_equal(sig.num_added, 3);
    assert_string_equal(sig.added[1].name, "x-amz-content-sha256");
    assert_string_equal(sig.added[1].value, want);
    assert_non_null(strstr(sig.authorization, "SignedHeaders=host;x-amz-content-sha256;x-amz-date,"));
    assert_true(sigv4_canonical_request(&req, &p, buf, sizeof buf, &e) > 0);
    assert_non_null(strstr(buf, "\nx-amz-content-sha256:9095672b"));
    assert_string_equal(buf + strlen(buf) - 64, want);

    /* No payload is the empty payload. */
    req.payload = NULL;
    req.payload_len = 0;
    assert_int_equal(sigv4_sign(&req, &CRED, &p, &sig, &e), 0);
    assert_string_equal(sig.content_sha256, EMPTY_SHA256);

    /* A request that names its own payload hash is signed with it and gets no other. */
    struct sigv4_header h2[] = { { "Host", "example.amazonaws.com" },
                                 { "X-Amz-Content-SHA256", " UNSIGNED-PAYLOAD " } };
    struct sigv4_request req2 = { "PUT", "/", NULL, h2, 2, "abc", 3 };
    assert_int_equal(sigv4_sign(&req2, &CRED, &p, &sig, &e), 0);
    assert_int_equal(sig.num_added, 2);
    assert_true(sigv4_canonical_request(&req2, &p, buf, sizeof buf, &e) > 0);
    assert_string_equal(strrchr(buf, '\n'), "\nUNSIGNED-PAYLOAD");
}

static void test_format_date(void **state)
{
    char d[17];

    sigv4_format_date(0, d);
    assert_string_equal(d, "19700101T000000Z");
    sigv4_format_date(1440938160, d);
    assert_string_equal(d, VECTOR_DATE);
    sigv4_format_date(951782400, d);                  /* 2000-02-29, a leap day */
    assert_string_equal(d, "20000229T000000Z");
    sigv4_format_date((time_t)253402300799LL, d);     /* the last second of year 9999 */
    assert_string_equal(d, "99991231T235959Z");
    sigv4_format_date((time_t)253402300800LL, d);     /* a broken clock: visibly wrong */
    assert_string_equal(d, "00000000T000000Z");
}

static void test_signing_key(void **state)
{
    unsigned char key[32];
    char hex[65];

    /* AWS documentation's example: "Deriving the signing key". */
    sigv4_signing_key(SECRET, "20120215", "us-east-1", "iam", key);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", key[i]);
    assert_string_equal(hex, "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d");

    /* Only the first 8 characters of the date count, so amz_date itself may be passed. */
    sigv4_signing_key(SECRET, "20120215T000000Z", "us-east-1", "iam", key);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", key[i]);
    assert_string_equal(hex, "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d");

    /* "AWS4" + secret filling the HMAC block exactly, and one byte over it (then hashed
     * first, as HMAC does). Expected values from Python's hmac module. */
    char s60[61], s61[62];
    memset(s60, 'x', 60);
    s60[60] = '\0';
    memset(s61, 'x', 61);
    s61[61] = '\0';
    sigv4_signing_key(s60, "20150830", "us-east-1", "service", key);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", key[i]);
    assert_string_equal(hex, "7b62471a0e09a07e727e3aac86b25fdb3bc1422d8a8421645bd0ce3b014e199e");
    sigv4_signing_key(s61, "20150830", "us-east-1", "service", key);
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", key[i]);
    assert_string_equal(hex, "b83e213a482f25f1430258cc62c9219456020e4dd1a5ebc4eefc2beb0538f165");
}

/* get-vanilla and get-vanilla-with-session-token, known answers that do not need the
 * suite on disk. */
static void test_session_token(void **state)
{
    const char *token = "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267";
    struct sigv4_header h[3] = { { "Host", "example.amazonaws.com" } };
    struct sigv4_request req = { "GET", "/", NULL, h, 1, NULL, 0 };
    struct sigv4_credentials cred = { AKID, SECRET, NULL };
    struct sigv4_params p = params();
    struct sigv4_signature sig;
    struct lerr e = { 0 };

    assert_int_equal(sigv4_sign(&req, &cred, &p, &sig, &e), 0);
    assert_string_equal(sig.authorization,
                        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/"
                        "aws4_request, SignedHeaders=host;x-amz-date, Signature="
                        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
    cred.session_token = "";                           /* empty is none */
    assert_int_equal(sigv4_sign(&req, &cred, &p, &sig, &e), 0);
    assert_int_equal(sig.num_added, 2);

    cred.session_token = token;
    assert_int_equal(sigv4_sign(&req, &cred, &p, &sig, &e), 0);
    assert_string_equal(sig.authorization,
                        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/"
                        "aws4_request, SignedHeaders=host;x-amz-date;x-amz-security-token, "
                        "Signature=07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8");
    assert_int_equal(sig.num_added, 3);
    assert_string_equal(sig.added[0].name, "X-Amz-Date");
    assert_string_equal(sig.added[0].value, VECTOR_DATE);
    assert_string_equal(sig.added[1].name, "X-Amz-Security-Token");
    assert_ptr_equal(sig.added[1].value, token);
    assert_string_equal(sig.added[2].name, "Authorization");
    assert_ptr_equal(sig.added[2].value, sig.authorization);

    /* Sent already (any case): signed once, not added again, same signature. */
    char first[sizeof sig.authorization];
    snprintf(first, sizeof first, "%s", sig.authorization);
    h[1] = (struct sigv4_header){ "x-amz-security-token", token };
    req.num_headers = 2;
    assert_int_equal(sigv4_sign(&req, &cred, &p, &sig, &e), 0);
    assert_int_equal(sig.num_added, 2);
    assert_string_equal(sig.authorization, first);

    /* A token that would split the header is refused, without being quoted. */
    req.num_headers = 1;
    cred.session_token = "abc\r\nX-Evil: 1";
    assert_int_equal(sigv4_sign(&req, &cred, &p, &sig, &e), -1);
    assert_int_equal(e.kind, LERR_INVALID);
    assert_null(strstr(e.msg, "abc"));
    assert_null(strstr(e.msg, "Evil"));
}

static void test_request_date(void **state)
{
    struct sigv4_header h[] = { { "Host", "example.amazonaws.com" },
                                { "X-Amz-Date", " 20150830T123600Z" } };
    struct sigv4_request req = { "GET", "/", NULL, h, 2, NULL, 0 };
    struct sigv4_params p = params();
    struct sigv4_signature sig;
    struct lerr e = { 0 };

    p.amz_date = "20991231T000000Z";                   /* the request's own date wins */
    assert_int_equal(sigv4_sign(&req, &CRED, &p, &sig, &e), 0);
    assert_string_equal(sig.amz_date, VECTOR_DATE);
    assert_int_equal(sig.num_added, 1);
    assert_non_null(strstr(sig.authorization, "Signature=5fa00fa31553b73e"));
    p.amz_date = NULL;                                 /* and none is needed */
    assert_int_equal(sigv4_sign(&req, &CRED, &p, &sig, &e), 0);

    h[1].value = "2015-08-30T12:36:00Z";
    assert_int_equal(sigv4_sign(&req, &CRED, &p, &sig, &e), -1);
    assert_int_equal(e.kind, LERR_INVALID);
}

/* Fills the buffer only up to cap, reports the size it needs, and leaves the rest. */
static void test_small_buffer(void **state)
{
    struct sigv4_header h[] = { { "Host", "example.amazonaws.com" } };
    struct sigv4_request req = { "GET", "/x", "a=b", h, 1, NULL, 0 };
    struct sigv4_params p = params();
    struct lerr e = { 0 };
    char full[1024], small[1024], sts[512];
    int n;

    n = sigv4_canonical_request(&req, &p, full, sizeof full, &e);
    assert_true(n > 0);
    assert_int_equal((size_t)n, strlen(full));
    for (size_t cap = 1; cap <= (size_t)n; cap++) {
        memset(small, 'Z', sizeof small);
        lerr_clear(&e);
        assert_int_equal(sigv4_canonical_request(&req, &p, small, cap, &e), -1);
        assert_int_equal(e.kind, LERR_TOO_LARGE);
        for (size_t i = cap; i < sizeof small; i++)
            assert_int_equal(small[i], 'Z');
    }
    assert_non_null(strstr(e.msg, "needs"));
    assert_int_equal(sigv4_canonical_request(&req, &p, small, (size_t)n + 1, &e), n);
    assert_string_equal(small, full);
    assert_int_equal(sigv4_canonical_request(&req, &p, small, 0, &e), -1);

    n = sigv4_string_to_sign(full, &p, sts, sizeof sts, &e);
    assert_true(n > 0);
    assert_int_equal(sigv4_string_to_sign(full, &p, sts, (size_t)n, &e), -1);
    assert_int_equal(e.kind, LERR_TOO_LARGE);
    assert_int_equal(sigv4_string_to_sign(full, &p, sts, (size_t)n + 1, &e), n);

    /* Signed header names too long for the Authorization header. */
    enum { N = 40 };
    char names[N][80];
    struct sigv4_header many[N + 1] = { { "Host", "example.amazonaws.com" } };
    struct sigv4_signature sig;
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "x-long-header-name-%02d-%050d", i, 0);
        many[i + 1] = (struct sigv4_header){ names[i], "v" };
    }
    struct sigv4_request big = { "GET", "/", NULL, many, N + 1, NULL, 0 };
    assert_int_equal(sigv4_sign(&big, &CRED, &p, &sig, &e), -1);
    assert_int_equal(e.kind, LERR_TOO_LARGE);
    assert_int_equal(sig.num_added, 0);
    assert_int_equal(sig.authorization[0], '\0');
}

/* sigv4_sign() builds the canonical request on the stack: up to SIGV4_MAX_CANONICAL - 1
 * bytes it signs, one byte more is refused with a clear error. */
static void test_canonical_limit(void **state)
{
    static char path[SIGV4_MAX_CANONICAL + 1], creq[SIGV4_MAX_CANONICAL + 64];
    struct sigv4_header h[] = { { "Host", "example.amazonaws.com" } };
    struct sigv4_request req = { "GET", path, NULL, h, 1, NULL, 0 };
    struct sigv4_params p = params();
    struct sigv4_signature sig;
    struct lerr e = { 0 };
    size_t pad;
    int base;

    strcpy(path, "/");
    base = sigv4_canonical_request(&req, &p, creq, sizeof creq, &e);
    assert_true(base > 0);
    pad = SIGV4_MAX_CANONICAL - 1 - (size_t)base;   /* "/" becomes "/aaa...": pad bytes more */
    memset(path + 1, 'a', pad);
    path[1 + pad] = '\0';
    assert_int_equal(sigv4_canonical_request(&req, &p, creq, sizeof creq, &e),
                     SIGV4_MAX_CANONICAL - 1);
    assert_int_equal(sigv4_sign(&req, &CRED, &p, &sig, &e), 0);
    path[1 + pad] = 'a';
    path[2 + pad] = '\0';
    assert_int_equal(sigv4_sign(&req, &CRED, &p, &sig, &e), -1);
    assert_int_equal(e.kind, LERR_TOO_LARGE);
    assert_non_null(strstr(e.msg, "the canonical request needs more than 16384 bytes"));
    assert_int_equal(sig.num_added, 0);
}

static void test_invalid(void **state)
{
    struct sigv4_header h[] = { { "Host", "example.amazonaws.com" } };
    struct sigv4_header nohost[] = { { "X-Other", "1" } };
    struct sigv4_header badname[] = { { "Host", "h" }, { "Bad Name", "1" } };
    struct sigv4_header noval[] = { { "Host", NULL } };
    struct sigv4_request ok = { "GET", "/", NULL, h, 1, NULL, 0 };
    struct sigv4_request reqs[] = {
        { "GET", "/", NULL, nohost, 1, NULL, 0 },
        { "GET", "/", NULL, badname, 2, NULL, 0 },
        { "GET", "/", NULL, noval, 1, NULL, 0 },
        { "", "/", NULL, h, 1, NULL, 0 },
        { NULL, "/", NULL, h, 1, NULL, 0 },
    };
    struct sigv4_credentials creds[] = {
        { NULL, SECRET, NULL }, { "", SECRET, NULL }, { "AK/ID", SECRET, NULL },
        { AKID, NULL, NULL },   { AKID, "", NULL },
    };
    struct sigv4_params ps[] = {
        { "us-east-1", "service", "2015-08-30", 1, 0, NULL },
        { "us-east-1", "service", NULL, 1, 0, NULL },
        { "", "service", VECTOR_DATE, 1, 0, NULL },
        { "us/east", "service", VECTOR_DATE, 1, 0, NULL },
        { "us-east-1", NULL, VECTOR_DATE, 1, 0, NULL },
    };
    struct sigv4_params p = params();
    struct sigv4_signature sig;
    struct lerr e;

    for (size_t i = 0; i < sizeof reqs / sizeof reqs[0]; i++) {
        lerr_clear(&e);
        assert_int_equal(sigv4_sign(&reqs[i], &CRED, &p, &sig, &e), -1);
        assert_int_equal(e.kind, LERR_INVALID);
        assert_null(strstr(e.msg, SECRET));
    }
    for (size_t i = 0; i < sizeof creds / sizeof creds[0]; i++) {
        lerr_clear(&e);
        assert_int_equal(sigv4_sign(&ok, &creds[i], &p, &sig, &e), -1);
        assert_int_equal(e.kind, LERR_INVALID);
        assert_null(strstr(e.msg, SECRET));
    }
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) {
        lerr_clear(&e);
        assert_int_equal(sigv4_sign(&ok, &CRED, &ps[i], &sig, &e), -1);
        assert_int_equal(e.kind, LERR_INVALID);
    }
    assert_int_equal(sigv4_sign(&ok, NULL, &p, &sig, &e), -1);
    assert_int_equal(sigv4_sign(&ok, &CRED, &p, &sig, &e), 0);
}

/* sigv4_sign() builds the canonical request in a buffer of its own and hashes it; whatever
 * the lengths, the result must be the signature of what sigv4_canonical_request() writes
 * out. */
static void test_streamed_hash(void **state)
{
    static const char seg[] = "/abcdefghij%20"; /* 14 bytes, 16 once encoded again */
    char path[1024], query[1024], token[700], creq[8192], sts[512], hex[65];
    struct sigv4_header h[1] = { { "Host", "example.amazonaws.com" } };
    struct sigv4_params p = params();
    struct sigv4_signature sig;
    struct lerr e = { 0 };
    unsigned char key[32], mac[32];

    for (int i = 0; i < 600; i += 7) {
        size_t plen = (size_t)i % 700, qlen = (size_t)(i * 3) % 500;
        for (size_t k = 0; k < plen; k++)
            path[k] = seg[k % (sizeof seg - 1)];
        path[plen] = '\0';
        for (size_t k = 0; k < qlen; k++)
            query[k] = "k=v&%e1"[k % 7];
        query[qlen] = '\0';
        memset(token, 'T', (size_t)i);
        token[i] = '\0';
        struct sigv4_credentials cred = { AKID, SECRET, i ? token : NULL };
        struct sigv4_request req = { "POST", path, query, h, 1, path, plen };
        p.normalize_path = i % 2;
        p.add_content_sha256 = i % 3 == 0;

        assert_int_equal(sigv4_sign(&req, &cred, &p, &sig, &e), 0);
        struct parsed sent = { .h = { h[0] }, .nh = 1, .method = "POST", .path = path,
                               .query = query, .body = path, .body_len = plen };
        req = with_added(&sent, &sig);
        assert_true(sigv4_canonical_request(&req, &p, creq, sizeof creq, &e) > 0);
        assert_true(sigv4_string_to_sign(creq, &p, sts, sizeof sts, &e) > 0);
        sigv4_signing_key(SECRET, p.amz_date, p.region, p.service, key);

        br_hmac_key_context kc;
        br_hmac_context hc;
        br_hmac_key_init(&kc, &br_sha256_vtable, key, sizeof key);
        br_hmac_init(&hc, &kc, 0);
        br_hmac_update(&hc, sts, strlen(sts));
        br_hmac_out(&hc, mac);
        for (int k = 0; k < 32; k++)
            snprintf(hex + 2 * k, 3, "%02x", mac[k]);
        if (strcmp(strstr(sig.authorization, "Signature=") + 10, hex) != 0)
            fail_msg("path of %zu bytes, query of %zu, token of %d: signature %s, want %s",
                     plen, qlen, i, strstr(sig.authorization, "Signature=") + 10, hex);
    }
}

/* Signs req with p and cred, with the cache when one is given, and returns the signature. */
static void sign_with(const struct sigv4_request *req, const struct sigv4_credentials *cred,
                      struct sigv4_params p, struct sigv4_key *cache, char out[65])
{
    struct sigv4_signature sig;
    struct lerr e = { 0 };

    p.key = cache;
    if (sigv4_sign(req, cred, &p, &sig, &e) < 0)
        fail_msg("sigv4_sign: %s", e.msg);
    snprintf(out, 65, "%s", strstr(sig.authorization, "Signature=") + 10);
}

/* A struct sigv4_key is reused while day, region, service and secret are the same, and
 * derived again as soon as one of them changes. */
static void test_key_cache(void **state)
{
    struct sigv4_header h[] = { { "Host", "example.amazonaws.com" } };
    struct sigv4_request req = { "POST", "/", NULL, h, 1, "{}", 2 };
    const struct sigv4_credentials other = { AKID, "another-secret-of-the-same-key-id", NULL };
    struct sigv4_params p = params();
    struct sigv4_key cache;
    char want[65], got[65];

    memset(&cache, 0, sizeof cache);
    sign_with(&req, &CRED, p, NULL, want);
    sign_with(&req, &CRED, p, &cache, got);
    assert_string_equal(got, want);
    /* Only a hash of the secret is kept. */
    assert_null(memmem(&cache, sizeof cache, SECRET, strlen(SECRET)));

    /* A match is reused as it is: a key planted in the cache is what signs. */
    br_hmac_key_init(&cache.hmac, &br_sha256_vtable, "planted", 7);
    sign_with(&req, &CRED, p, &cache, got);
    assert_string_not_equal(got, want);

    /* Another secret for the same scope (credentials rotated): derived again. */
    sign_with(&req, &other, p, NULL, want);
    sign_with(&req, &other, p, &cache, got);
    assert_string_equal(got, want);
    sign_with(&req, &CRED, p, NULL, want);
    sign_with(&req, &CRED, p, &cache, got);
    assert_string_equal(got, want);

    /* Another day, region or service: derived again. */
    {
        struct sigv4_params ps[3] = { p, p, p };
        ps[0].amz_date = "20150831T000000Z";
        ps[1].region = "eu-west-3";
        ps[2].service = "sqs";
        for (size_t i = 0; i < 3; i++) {
            br_hmac_key_init(&cache.hmac, &br_sha256_vtable, "planted", 7);
            sign_with(&req, &CRED, ps[i], NULL, want);
            sign_with(&req, &CRED, ps[i], &cache, got);
            assert_string_equal(got, want);
        }
    }
    /* The same day at another time is the same key. */
    sign_with(&req, &CRED, p, &cache, got);
    br_hmac_key_init(&cache.hmac, &br_sha256_vtable, "planted", 7);
    p.amz_date = "20150830T235959Z";
    sign_with(&req, &CRED, p, NULL, want);
    sign_with(&req, &CRED, p, &cache, got);
    assert_string_not_equal(got, want);
}

/* ---- the run ------------------------------------------------------------------------------- */

int main(void)
{
    static const struct CMUnitTest units[] = {
        cmocka_unit_test(test_query_encoding),  cmocka_unit_test(test_path_encoding),
        cmocka_unit_test(test_headers_canonical), cmocka_unit_test(test_payload_hash),
        cmocka_unit_test(test_format_date),     cmocka_unit_test(test_signing_key),
        cmocka_unit_test(test_session_token),   cmocka_unit_test(test_request_date),
        cmocka_unit_test(test_small_buffer),    cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_canonical_limit),
        cmocka_unit_test(test_streamed_hash),   cmocka_unit_test(test_key_cache),
    };
    size_t nunits = sizeof units / sizeof units[0];
    struct cases cs = { 0 };
    struct CMUnitTest *tests;
    char dir[PATH_MAX + 32];
    size_t n = 0;
    int rc;

    suite_locate(&cs);
    if (cs.suite_found) {
        snprintf(dir, sizeof dir, "%s/aws4_testsuite", cs.suite);
        find_aws4(&cs, dir, "");
        snprintf(dir, sizeof dir, "%s/aws-signing-test-suite-v4", cs.suite);
        find_crt(&cs, dir);
        qsort(cs.v, cs.n, sizeof *cs.v, vcase_cmp);
    }
    tests = calloc(nunits + 1 + cs.n, sizeof *tests);
    if (!tests)
        abort();
    memcpy(tests, units, sizeof units);
    n = nunits;
    tests[n++] = (struct CMUnitTest){ "sigv4-suite present and complete", test_suite_present,
                                      NULL, NULL, &cs };
    for (size_t i = 0; i < cs.n; i++)
        tests[n++] = (struct CMUnitTest){ cs.v[i].name, test_vector, NULL, NULL, &cs.v[i] };
    rc = _cmocka_run_group_tests("sigv4", tests, n, NULL, NULL);
    free(tests);
    free(cs.v);
    return rc;
}
