/*
 * tool_sigv4 - signs requests described as JSON lines, for the Node differential test.
 *
 * Each stdin line is one request:
 *   {"method","path","query","headers":[[name,value],...],"body","region","service",
 *    "amz_date","access_key_id","secret_access_key","session_token","normalize_path",
 *    "add_content_sha256"}
 * ("query", "body", "session_token" may be null or absent; normalize_path defaults to
 * true, add_content_sha256 to false; a body is its UTF-8 bytes, so it cannot hold NUL).
 * Each answer is one stdout line:
 *   {"canonical_request","string_to_sign","authorization","added":[[name,value],...]}
 * or {"error":kind,"message":text} when lambdo refuses the request. canonical_request is
 * that of the request with the added headers on it, which is what was signed.
 * One struct sigv4_key serves every line, as one does every request of an SQS client: a
 * line signs with the key of the line before when its day, region, service and secret are
 * the same, else derives its own.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cJSON.h"
#include "sigv4.h"

static const char *str_or_null(const cJSON *in, const char *key)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(in, key);
    return cJSON_IsString(item) ? item->valuestring : NULL;
}

static int flag(const cJSON *in, const char *key, int dflt)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(in, key);
    return cJSON_IsBool(item) ? cJSON_IsTrue(item) : dflt;
}

static cJSON *error_reply(const struct lerr *e)
{
    cJSON *out = cJSON_CreateObject();
    cJSON_AddStringToObject(out, "error", lerr_kind_name(e->kind));
    cJSON_AddStringToObject(out, "message", e->msg);
    return out;
}

/* Calls f with a buffer that grows until the result fits; the caller frees *buf. */
static int grow_call(char **buf, int (*f)(void *ctx, char *b, size_t cap, struct lerr *e),
                     void *ctx, struct lerr *e)
{
    size_t cap = 1024;
    int n;

    for (;;) {
        char *nb = realloc(*buf, cap);
        if (!nb)
            return lerr_set(e, LERR_NOMEM, "out of memory");
        *buf = nb;
        n = f(ctx, *buf, cap, e);
        if (n >= 0 || e->kind != LERR_TOO_LARGE)
            return n;
        cap *= 2;
    }
}

struct creq_ctx {
    const struct sigv4_request *req;
    const struct sigv4_params *p;
    const char *creq;
};

static int creq_call(void *ctx, char *b, size_t cap, struct lerr *e)
{
    struct creq_ctx *c = ctx;
    return sigv4_canonical_request(c->req, c->p, b, cap, e);
}

static int sts_call(void *ctx, char *b, size_t cap, struct lerr *e)
{
    struct creq_ctx *c = ctx;
    return sigv4_string_to_sign(c->creq, c->p, b, cap, e);
}

static cJSON *sign_one(const cJSON *in, struct sigv4_key *key)
{
    const cJSON *hs = cJSON_GetObjectItemCaseSensitive(in, "headers"), *h;
    size_t nh = (size_t)cJSON_GetArraySize(hs), i = 0;
    struct sigv4_header *headers = calloc(nh + SIGV4_MAX_ADDED, sizeof *headers);
    const char *body = str_or_null(in, "body");
    struct sigv4_request req = {
        str_or_null(in, "method"), str_or_null(in, "path"), str_or_null(in, "query"),
        headers, 0, body, body ? strlen(body) : 0,
    };
    struct sigv4_credentials cred = {
        str_or_null(in, "access_key_id"), str_or_null(in, "secret_access_key"),
        str_or_null(in, "session_token"),
    };
    struct sigv4_params p = {
        str_or_null(in, "region"), str_or_null(in, "service"), str_or_null(in, "amz_date"),
        flag(in, "normalize_path", 1), flag(in, "add_content_sha256", 0), key,
    };
    struct sigv4_signature sig;
    struct lerr e = { 0 };
    char *creq = NULL, *sts = NULL;
    cJSON *out = NULL, *added;

    if (!headers)
        abort();
    cJSON_ArrayForEach(h, hs) {
        const cJSON *name = cJSON_GetArrayItem(h, 0), *value = cJSON_GetArrayItem(h, 1);
        headers[i++] = (struct sigv4_header){
            cJSON_IsString(name) ? name->valuestring : NULL,
            cJSON_IsString(value) ? value->valuestring : NULL,
        };
    }
    req.num_headers = i;
    if (sigv4_sign(&req, &cred, &p, &sig, &e) < 0)
        goto fail;

    out = cJSON_CreateObject();
    added = cJSON_CreateArray();
    for (size_t k = 0; k < sig.num_added; k++) {
        const char *pair[2] = { sig.added[k].name, sig.added[k].value };
        cJSON_AddItemToArray(added, cJSON_CreateStringArray(pair, 2));
        if (strcmp(sig.added[k].name, "Authorization") != 0)
            headers[req.num_headers++] = sig.added[k];
    }
    p.amz_date = sig.amz_date;
    struct creq_ctx ctx = { &req, &p, NULL };
    if (grow_call(&creq, creq_call, &ctx, &e) < 0)
        goto fail;
    ctx.creq = creq;
    if (grow_call(&sts, sts_call, &ctx, &e) < 0)
        goto fail;
    cJSON_AddStringToObject(out, "canonical_request", creq);
    cJSON_AddStringToObject(out, "string_to_sign", sts);
    cJSON_AddStringToObject(out, "authorization", sig.authorization);
    cJSON_AddItemToObject(out, "added", added);
    free(creq);
    free(sts);
    free(headers);
    return out;

fail:
    if (out) {
        cJSON_Delete(out);
        cJSON_Delete(added);
    }
    free(creq);
    free(sts);
    free(headers);
    return error_reply(&e);
}

int main(void)
{
    static struct sigv4_key key;
    char *line = NULL;
    size_t cap = 0;

    while (getline(&line, &cap, stdin) >= 0) {
        cJSON *in, *out;
        char *text;

        if (strspn(line, " \t\r\n") == strlen(line))
            continue;
        in = cJSON_Parse(line);
        if (in) {
            out = sign_one(in, &key);
        } else {
            struct lerr e;
            lerr_set(&e, LERR_INVALID, "input line is not JSON");
            out = error_reply(&e);
        }
        text = cJSON_PrintUnformatted(out);
        if (!text)
            abort();
        puts(text);
        fflush(stdout);
        free(text);
        cJSON_Delete(out);
        cJSON_Delete(in);
    }
    free(line);
    return ferror(stdin) ? 1 : 0;
}
