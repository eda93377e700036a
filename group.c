#include "group.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bearssl.h>

/* ---- strict JSON (RFC 8259) ------------------------------------------------------------
 * A non-recursive scanner: a bit per nesting level says "object" or "array", so a deep
 * body costs GROUP_JSON_MAX_DEPTH bits of stack, never a deep C stack. */

struct jscan {
    const unsigned char *start, *end;
    const unsigned char *err_at;
    const char *why;
    group_json_item_fn item;          /* called for each value at depth 1, or NULL */
    void *ctx;
    const unsigned char *item_start;
};

static const unsigned char *json_fail(struct jscan *j, const unsigned char *at, const char *why)
{
    j->err_at = at;
    j->why = why;
    return NULL;
}

static int json_error(struct jscan *j, const unsigned char *at, const char *why)
{
    json_fail(j, at, why);
    return -1;
}

static const unsigned char *json_ws(const unsigned char *p, const unsigned char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

static int hex4(const unsigned char *p, const unsigned char *end, unsigned *out)
{
    unsigned v = 0;

    if (end - p < 4)
        return -1;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
            d = (c | 0x20) - 'a' + 10;
        else
            return -1;
        v = v << 4 | d;
    }
    *out = v;
    return 0;
}

/* Length of the well-formed UTF-8 sequence at p (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF), or 0 when there is none. */
static size_t utf8_len(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0], lo = 0x80, hi = 0xBF;
    size_t n;

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if ((size_t)(end - p) < n || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if ((p[i] & 0xC0) != 0x80)
            return 0;
    return n;
}

/* An escape after the backslash at p: returns what follows it. A high surrogate must be
 * followed by a low one: a lone half cannot be turned into UTF-8 (and cJSON refuses it). */
static const unsigned char *json_escape(struct jscan *j, const unsigned char *p)
{
    unsigned u, u2;

    if (p + 1 == j->end)
        return json_fail(j, p, "unterminated string");
    if (p[1] && strchr("\"\\/bfnrt", p[1]))
        return p + 2;
    if (p[1] != 'u')
        return json_fail(j, p, "bad escape in string");
    if (hex4(p + 2, j->end, &u) < 0)
        return json_fail(j, p, "bad \\u escape in string");
    if (u >= 0xDC00 && u <= 0xDFFF)
        return json_fail(j, p, "unpaired surrogate in \\u escape");
    if (u < 0xD800 || u > 0xDBFF)
        return p + 6;
    if (j->end - (p + 6) < 2 || p[6] != '\\' || p[7] != 'u' || hex4(p + 8, j->end, &u2) < 0 ||
        u2 < 0xDC00 || u2 > 0xDFFF)
        return json_fail(j, p, "unpaired surrogate in \\u escape");
    return p + 12;
}

/* A string whose opening quote is at p: returns what follows the closing quote. */
static const unsigned char *json_string(struct jscan *j, const unsigned char *p)
{
    p++;
    for (;;) {
        size_t n;

        if (p == j->end)
            return json_fail(j, p, "unterminated string");
        if (*p == '"')
            return p + 1;
        if (*p < 0x20)
            return json_fail(j, p, "control character in string");
        if (*p == '\\') {
            if (!(p = json_escape(j, p)))
                return NULL;
            continue;
        }
        if (!(n = utf8_len(p, j->end)))
            return json_fail(j, p, "invalid UTF-8");
        p += n;
    }
}

static const unsigned char *json_digits(const unsigned char *p, const unsigned char *end)
{
    while (p < end && *p >= '0' && *p <= '9')
        p++;
    return p;
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static const unsigned char *json_number(struct jscan *j, const unsigned char *p)
{
    const unsigned char *q, *end = j->end;

    if (*p == '-')
        p++;
    if (p == end || *p < '0' || *p > '9')
        return json_fail(j, p, "expected a digit");
    if (*p == '0') {
        p++;
        if (p < end && *p >= '0' && *p <= '9')
            return json_fail(j, p - 1, "leading zero in number");
    } else {
        p = json_digits(p, end);
    }
    if (p < end && *p == '.') {
        q = json_digits(p + 1, end);
        if (q == p + 1)
            return json_fail(j, q, "expected a digit after the decimal point");
        p = q;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        q = json_digits(p, end);
        if (q == p)
            return json_fail(j, p, "expected a digit in the exponent");
        p = q;
    }
    return p;
}

static const unsigned char *json_literal(struct jscan *j, const unsigned char *p)
{
    static const char *const words[] = { "true", "false", "null" };

    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        size_t n = strlen(words[i]);
        if ((size_t)(j->end - p) >= n && memcmp(p, words[i], n) == 0)
            return p + n;
    }
    return json_fail(j, p, "unexpected character");
}

/* A scalar value at p (not an array or object). */
static const unsigned char *json_scalar(struct jscan *j, const unsigned char *p)
{
    if (*p == '"')
        return json_string(j, p);
    if (*p == '-' || (*p >= '0' && *p <= '9'))
        return json_number(j, p);
    return json_literal(j, p);
}

/* An object member's key and colon: returns where its value starts (whitespace skipped). */
static const unsigned char *json_key(struct jscan *j, const unsigned char *p)
{
    p = json_ws(p, j->end);
    if (p == j->end)
        return json_fail(j, p, "unexpected end");
    if (*p != '"')
        return json_fail(j, p, "expected a string key");
    if (!(p = json_string(j, p)))
        return NULL;
    p = json_ws(p, j->end);
    if (p == j->end || *p != ':')
        return json_fail(j, p, "expected ':'");
    return p + 1;
}

static int json_scan(struct jscan *j)
{
    unsigned char objects[GROUP_JSON_MAX_DEPTH / 8];  /* bit set: that level is an object */
    const unsigned char *p = j->start, *end = j->end;
    size_t depth = 0;

    for (;;) {
        /* a value is expected at p */
        p = json_ws(p, end);
        if (p == end)
            return json_error(j, p, "unexpected end");
        if (depth == 1)
            j->item_start = p;
        if (*p == '[' || *p == '{') {
            int obj = *p == '{';
            if (depth == GROUP_JSON_MAX_DEPTH)
                return json_error(j, p, "nested too deeply");
            if (obj)
                objects[depth / 8] |= (unsigned char)(1u << depth % 8);
            else
                objects[depth / 8] &= (unsigned char)~(1u << depth % 8);
            depth++;
            p = json_ws(p + 1, end);
            if (p < end && *p == (obj ? '}' : ']')) {
                p++;
                depth--;
            } else {
                if (obj && !(p = json_key(j, p)))
                    return -1;
                continue;
            }
        } else if (!(p = json_scalar(j, p))) {
            return -1;
        }
        /* after a value: close containers, or find the next value */
        for (;;) {
            int obj;

            if (depth == 1 && j->item)  /* a value at depth 1 ends here */
                j->item(j->ctx, (size_t)(j->item_start - j->start),
                        (size_t)(p - j->item_start));
            p = json_ws(p, end);
            if (depth == 0) {
                if (p != end)
                    return json_error(j, p, "unexpected data after the JSON value");
                return 0;
            }
            if (p == end)
                return json_error(j, p, "unexpected end");
            obj = objects[(depth - 1) / 8] >> (depth - 1) % 8 & 1;
            if (*p == (obj ? '}' : ']')) {
                p++;
                depth--;
                continue;
            }
            if (*p != ',')
                return json_error(j, p, obj ? "expected ',' or '}'" : "expected ',' or ']'");
            p++;
            if (obj && !(p = json_key(j, p)))
                return -1;
            break;
        }
    }
}

int group_json_check(const char *s, size_t len, size_t *err_at, const char **why)
{
    return group_json_items(s, len, NULL, NULL, err_at, why);
}

int group_json_items(const char *s, size_t len, group_json_item_fn item, void *ctx,
                     size_t *err_at, const char **why)
{
    struct jscan j;

    j.start = (const unsigned char *)(s ? s : "");
    j.end = j.start + (s ? len : 0);
    j.err_at = j.start;
    j.why = NULL;
    j.item = item;
    j.ctx = ctx;
    if (json_scan(&j) == 0)
        return 0;
    if (err_at)
        *err_at = (size_t)(j.err_at - j.start);
    if (why)
        *why = j.why;
    return -1;
}

/* ---- decoding strings of JSON already checked ---------------------------------------- */

/* Yields a checked JSON string's value as UTF-8, one byte at a time, so that two
 * spellings ("b" and "\u0062") compare equal without a copy of either. */
struct jstr {
    const unsigned char *p;  /* next input byte; past the closing quote at the end */
    unsigned char pend[4];   /* bytes of an escaped code point still to yield */
    unsigned npend, ipend;
};

static void jstr_open(struct jstr *s, const unsigned char *quote)
{
    s->p = quote + 1;
    s->npend = s->ipend = 0;
}

static unsigned utf8_put(unsigned long cp, unsigned char *out)
{
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | cp >> 6);
        out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | cp >> 12);
        out[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | cp >> 18);
    out[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* The next byte of the value (0..255), or -1 at the closing quote. */
static int jstr_next(struct jstr *s)
{
    unsigned u, u2;
    unsigned long cp;
    int c;

    if (s->ipend < s->npend)
        return s->pend[s->ipend++];
    c = *s->p;
    if (c == '"') {
        s->p++;
        return -1;
    }
    if (c != '\\') {
        s->p++;
        return c;
    }
    c = s->p[1];
    s->p += 2;
    switch (c) {
    case 'b': return '\b';
    case 'f': return '\f';
    case 'n': return '\n';
    case 'r': return '\r';
    case 't': return '\t';
    case 'u': break;
    default: return c;  /* " \ / */
    }
    hex4(s->p, s->p + 4, &u);
    s->p += 4;
    cp = u;
    if (u >= 0xD800 && u <= 0xDBFF) {
        hex4(s->p + 2, s->p + 6, &u2);
        s->p += 6;
        cp = 0x10000 + ((unsigned long)(u - 0xD800) << 10 | (u2 - 0xDC00));
    }
    s->npend = utf8_put(cp, s->pend);
    s->ipend = 1;
    return s->pend[0];
}

static const unsigned char *ws_str(const unsigned char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    return p;
}

/* Two checked commands (arrays of strings) hold the same strings. */
static int command_equal(const char *a, const char *b)
{
    const unsigned char *p = ws_str((const unsigned char *)a) + 1;
    const unsigned char *q = ws_str((const unsigned char *)b) + 1;

    for (;;) {
        struct jstr s, t;
        int x, y;

        p = ws_str(p);
        q = ws_str(q);
        if (*p == ']' || *q == ']')
            return *p == *q;
        jstr_open(&s, p);
        jstr_open(&t, q);
        do {
            x = jstr_next(&s);
            y = jstr_next(&t);
            if (x != y)
                return 0;
        } while (x >= 0);
        p = ws_str(s.p);
        q = ws_str(t.p);
        if (*p == ',')
            p++;
        if (*q == ',')
            q++;
    }
}

/* ---- checking an event ----------------------------------------------------------------- */

/* A value for a message: quoted, at most ~40 bytes of it, non-printable bytes as \xNN,
 * so that a reason stays one readable line. */
static const char *quote(char *out, size_t cap, const char *s)
{
    size_t n = 0, i;

    out[n++] = '"';
    for (i = 0; s[i] && n + 8 < cap && i < 40; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c >= 0x7F || c == '"' || c == '\\')
            n += (size_t)snprintf(out + n, cap - n, "\\x%02x", c);
        else
            out[n++] = (char)c;
    }
    if (s[i] && n + 4 < cap) {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n++] = '"';
    out[n] = '\0';
    return out;
}

static int image_check(const char *image, struct lerr *e)
{
    char q[200];
    size_t i;

    if (!image)
        return lerr_set(e, LERR_INVALID, "attribute image: missing (it names the image to run)");
    if (!image[0])
        return lerr_set(e, LERR_INVALID, "attribute image: empty (it names the image to run)");
    for (i = 0; image[i]; i++) {
        unsigned char c = (unsigned char)image[i];
        if (c <= 0x20 || c >= 0x7F)
            return lerr_set(e, LERR_INVALID, "attribute image: %s has %s at byte %zu",
                            quote(q, sizeof q, image),
                            c == ' ' ? "a space"
                            : c < 0x20 || c == 0x7F ? "a control character"
                            : "a non-ASCII byte", i);
    }
    if (i > GROUP_IMAGE_MAX)
        return lerr_set(e, LERR_INVALID, "attribute image: %zu bytes long, over the limit of %d",
                        i, GROUP_IMAGE_MAX);
    return 0;
}

static const struct preset *size_preset(const char *size)
{
    return preset_find(size ? size : PRESET_DEFAULT);
}

static int size_check(const char *size, struct lerr *e)
{
    char q[200];

    if (size_preset(size))
        return 0;
    return lerr_set(e, LERR_INVALID, "attribute size: %s is not a Fly preset (%s)",
                    quote(q, sizeof q, size), PRESET_NAMES_TEXT);
}

static const char *json_kind(unsigned char c)
{
    switch (c) {
    case '{': return "an object";
    case '[': return "an array";
    case '"': return "a string";
    case 't': case 'f': return "a boolean";
    case 'n': return "null";
    default: return "a number";
    }
}

static int command_check(const char *cmd, struct lerr *e)
{
    const unsigned char *p;
    const char *why;
    size_t at, i;

    if (!cmd)
        return 0;
    if (group_json_check(cmd, strlen(cmd), &at, &why) < 0)
        return lerr_set(e, LERR_INVALID, "attribute command: not valid JSON (at byte %zu: %s)",
                        at, why);
    p = ws_str((const unsigned char *)cmd);
    if (*p != '[')
        return lerr_set(e, LERR_INVALID,
                        "attribute command: must be a JSON array of strings, not %s",
                        json_kind(*p));
    p = ws_str(p + 1);
    if (*p == ']')
        return lerr_set(e, LERR_INVALID, "attribute command: empty array (leave the attribute "
                        "out to run the image's own command)");
    for (i = 1;; i++) {
        struct jstr s;
        size_t n = 0;
        int c;

        if (*p != '"')
            return lerr_set(e, LERR_INVALID, "attribute command: element %zu is not a string "
                            "(it is %s)", i, json_kind(*p));
        jstr_open(&s, p);
        while ((c = jstr_next(&s)) >= 0) {
            if (c == 0)
                return lerr_set(e, LERR_INVALID, "attribute command: element %zu has a NUL "
                                "character", i);
            n++;
        }
        if (i == 1 && n == 0)
            return lerr_set(e, LERR_INVALID, "attribute command: element 1 is empty (it names "
                            "the program to run)");
        p = ws_str(s.p);
        if (*p == ']')
            return 0;
        p = ws_str(p + 1);
    }
}

static int body_check(const char *body, size_t len, struct lerr *e)
{
    const char *why;
    size_t at;

    if (len == 0)
        return lerr_set(e, LERR_INVALID, "body is empty (it must be a JSON value)");
    if (group_json_check(body, len, &at, &why) < 0)
        return lerr_set(e, LERR_INVALID, "body is not valid JSON (at byte %zu: %s)", at, why);
    return 0;
}

int group_check(const struct event *ev, struct lerr *e)
{
    if (image_check(ev->image, e) < 0 || size_check(ev->size, e) < 0 ||
        command_check(ev->command, e) < 0 || body_check(ev->body, ev->body_len, e) < 0)
        return -1;
    return 0;
}

/* ---- grouping -------------------------------------------------------------------------- */

static int same_key(const struct group *g, const struct event *ev)
{
    if (strcmp(g->image, ev->image) != 0 || g->preset != size_preset(ev->size))
        return 0;
    if (!g->command || !ev->command)
        return !g->command && !ev->command;
    return command_equal(g->command, ev->command);
}

/* The chunks of a group of count events: ceil(count / per). */
static size_t chunks(size_t count, size_t per)
{
    return count / per + (count % per != 0);
}

int group_build(const struct event *events, size_t n, size_t events_per_machine,
                struct group_plan *plan, struct lerr *e)
{
    struct group *groups = plan->groups;
    size_t *members = plan->members;
    size_t nkeys = 0, total = 0, pos = 0, k;

    plan->ngroups = plan->nvalid = 0;
    if (events_per_machine < 1 || events_per_machine > GROUP_MAX_PER_MACHINE)
        return lerr_set(e, LERR_INVALID, "events per machine must be 1 to %d, not %zu",
                        GROUP_MAX_PER_MACHINE, events_per_machine);
    if (n && (!events || !groups || !members || !plan->verdicts))
        return lerr_set(e, LERR_INVALID, "group_build: no storage for %zu events", n);

    /* One entry per distinct key, in order of first appearance; count is its size. */
    for (size_t i = 0; i < n; i++) {
        lerr_clear(&plan->verdicts[i]);
        if (group_check(&events[i], &plan->verdicts[i]) < 0)
            continue;
        for (k = 0; k < nkeys && !same_key(&groups[k], &events[i]); k++)
            ;
        if (k == nkeys) {
            groups[k].image = events[i].image;
            groups[k].preset = size_preset(events[i].size);
            groups[k].command = events[i].command;
            groups[k].count = 0;
            nkeys++;
        }
        groups[k].count++;
        plan->nvalid++;
    }

    /* Members key by key: comparing again costs less than scratch memory would. */
    for (k = 0; k < nkeys; k++) {
        for (size_t i = 0; i < n; i++)
            if (plan->verdicts[i].kind == LERR_NONE && same_key(&groups[k], &events[i]))
                members[pos++] = i;
        total += chunks(groups[k].count, events_per_machine);
    }

    /* Split in place from the last key down: key k's chunks start at or after index k,
     * so writing them never overwrites a key not yet split. */
    plan->ngroups = total;
    for (k = nkeys; k-- > 0;) {
        struct group key = groups[k];
        size_t c = chunks(key.count, events_per_machine);

        pos -= key.count;
        total -= c;
        for (size_t j = 0; j < c; j++) {
            struct group *g = &groups[total + j];
            *g = key;
            g->members = members + pos + j * events_per_machine;
            g->count = key.count - j * events_per_machine;
            if (g->count > events_per_machine)
                g->count = events_per_machine;
        }
    }
    return 0;
}

/* ---- the events file ------------------------------------------------------------------- */

size_t group_events_json_len(const struct event *events, const struct group *g)
{
    size_t len = 2 + (g->count ? g->count - 1 : 0);

    for (size_t i = 0; i < g->count; i++) {
        size_t b = events[g->members[i]].body_len;
        len = len > (size_t)-1 - b ? (size_t)-1 : len + b;
    }
    return len;
}

static void events_write(const struct event *events, const struct group *g, char *buf)
{
    size_t n = 0;

    buf[n++] = '[';
    for (size_t i = 0; i < g->count; i++) {
        const struct event *ev = &events[g->members[i]];
        if (i)
            buf[n++] = ',';
        if (ev->body_len)
            memcpy(buf + n, ev->body, ev->body_len);
        n += ev->body_len;
    }
    buf[n] = ']';
}

int group_events_json(const struct event *events, const struct group *g, char *buf,
                      size_t cap, size_t *len, struct lerr *e)
{
    size_t need = group_events_json_len(events, g);

    if (need > cap)
        return lerr_set(e, LERR_TOO_LARGE, "events file of %zu bytes is over the limit of %zu",
                        need, cap);
    events_write(events, g, buf);
    *len = need;
    return 0;
}

int group_events_json_alloc(const struct event *events, const struct group *g, size_t max,
                            char **out, size_t *len, struct lerr *e)
{
    size_t need = group_events_json_len(events, g);
    char *buf;

    *out = NULL;
    if (need > max)
        return lerr_set(e, LERR_TOO_LARGE, "events file of %zu bytes is over the limit of %zu",
                        need, max);
    if (!(buf = malloc(need + 1)))
        return lerr_set(e, LERR_NOMEM, "events file of %zu bytes: out of memory", need);
    events_write(events, g, buf);
    buf[need] = '\0';
    *out = buf;
    *len = need;
    return 0;
}

void group_id(const struct event *events, const struct group *g, char out[GROUP_ID_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char sum[32];
    br_sha256_context h;

    /* Ids are separated by a newline, which a message id never contains, so that
     * {"ab","c"} and {"a","bc"} differ. */
    br_sha256_init(&h);
    for (size_t i = 0; i < g->count; i++) {
        const char *id = events[g->members[i]].id;
        br_sha256_update(&h, id ? id : "", id ? strlen(id) : 0);
        br_sha256_update(&h, "\n", 1);
    }
    br_sha256_out(&h, sum);
    for (int i = 0; i < GROUP_ID_LEN / 2; i++) {
        out[2 * i] = hex[sum[i] >> 4];
        out[2 * i + 1] = hex[sum[i] & 15];
    }
    out[GROUP_ID_LEN] = '\0';
}
