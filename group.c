#include "group.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bearssl.h>

#include "json.h"
#include "text.h"

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
    snprintf(out + n, cap - n, "%s\"", s[i] ? "..." : "");
    return out;
}

static int image_check(const char *image, struct lerr *e)
{
    char q[200];
    size_t i;

    if (!image || !image[0])
        return lerr_set(e, LERR_INVALID, "attribute image: %s (it names the image to run)",
                        image ? "empty" : "missing");
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

/* What a JSON value is, from its first character (json_peek's answer). */
static const char *json_kind(int c)
{
    return c == '{' ? "an object" : c == '[' ? "an array" : c == '"' ? "a string"
           : c == 't' || c == 'f' ? "a boolean" : c == 'n' ? "null" : "a number";
}

/* A checked JSON string, its quotes at s and end - 1, decodes to a NUL only from the
 * escape \u0000 (a raw NUL byte is not JSON): no need to decode it to know. */
static int has_nul(const char *s, const char *end)
{
    for (; s < end; s++)
        if (*s == '\\' && *++s == 'u' && memcmp(s + 1, "0000", 4) == 0)
            return 1;
    return 0;
}

/* Walks a command checked as JSON: its strings' bytes go to p (when not NULL), each with a
 * NUL, and argv points at each. Returns the number of strings, or -1. */
static long command_walk(const char *cmd, char **argv, char *p, struct lerr *e)
{
    struct json j;
    size_t i, n;
    int state = 0, c;

    json_init(&j, cmd, strlen(cmd));
    if ((c = json_peek(&j)) != '[')
        return lerr_set(e, LERR_INVALID, "must be a JSON array of strings, not %s", json_kind(c));
    for (i = 0; json_element(&j, &state) > 0; i++) {
        const char *quote_at;

        if ((c = json_peek(&j)) != '"')
            return lerr_set(e, LERR_INVALID, "element %zu is not a string (it is %s)", i + 1,
                            json_kind(c));
        quote_at = (const char *)j.p;
        json_string(&j, p, p ? (size_t)-1 : 0, &n);  /* checked: it cannot fail */
        if (has_nul(quote_at, (const char *)j.p))
            return lerr_set(e, LERR_INVALID, "element %zu has a NUL character (\\u0000), which "
                            "cannot be passed to a program", i + 1);
        if (i == 0 && n == 0)
            return lerr_set(e, LERR_INVALID, "element 1 is empty (it names the program to run)");
        if (argv) {
            argv[i] = p;
            p += n + 1;
        }
    }
    if (i == 0)
        return lerr_set(e, LERR_INVALID, "empty array (a command is at least one string)");
    return (long)i;
}

int group_command(const char *cmd, char ***argv, struct lerr *e)
{
    size_t at, len = cmd ? strlen(cmd) : 0;
    const char *why;
    long n;

    if (!cmd)
        return lerr_set(e, LERR_INVALID, "no command");
    if (json_items(cmd, len, NULL, NULL, &at, &why) < 0)
        return lerr_set(e, LERR_INVALID, "not valid JSON (at byte %zu: %s)", at, why);
    if ((n = command_walk(cmd, NULL, NULL, e)) < 0 || !argv)
        return n < 0 ? -1 : 0;
    /* decoded strings are never longer than their JSON text */
    if (!(*argv = malloc((size_t)(n + 1) * sizeof **argv + len + 1)))
        return lerr_set(e, LERR_NOMEM, "out of memory for a command");
    command_walk(cmd, *argv, (char *)(*argv + n + 1), e);
    (*argv)[n] = NULL;
    return 0;
}

int group_check(const struct event *ev, struct lerr *e)
{
    const char *why;
    char q[200];
    size_t at;

    if (image_check(ev->image, e) < 0)
        return -1;
    if (!size_preset(ev->size))
        return lerr_set(e, LERR_INVALID, "attribute size: %s is not a Fly preset (%s)",
                        quote(q, sizeof q, ev->size), PRESET_NAMES_TEXT);
    if (ev->command && group_command(ev->command, NULL, e) < 0)
        return lerr_wrap(e, "attribute command");
    if (ev->body_len == 0)
        return lerr_set(e, LERR_INVALID, "body is empty (it must be a JSON value)");
    if (json_items(ev->body, ev->body_len, NULL, NULL, &at, &why) < 0)
        return lerr_set(e, LERR_INVALID, "body is not valid JSON (at byte %zu: %s)", at, why);
    return 0;
}

/* ---- grouping -------------------------------------------------------------------------- */

/* Two checked events share image, size and command. Checked commands (arrays of strings)
 * are the same when they hold the same strings. Without the memory to decode them, they
 * count as different: the events then run on separate Machines. */
static int same_key(const struct event *a, const struct event *b)
{
    char **x = NULL, **y = NULL;
    size_t i = 0;
    int same;

    if (strcmp(a->image, b->image) != 0 || size_preset(a->size) != size_preset(b->size))
        return 0;
    if (!a->command || !b->command)
        return !a->command && !b->command;
    /* the usual case: the same text, sent by the same producer */
    if (strcmp(a->command, b->command) == 0)
        return 1;
    same = group_command(a->command, &x, NULL) == 0 && group_command(b->command, &y, NULL) == 0;
    while (same && x[i] && y[i] && strcmp(x[i], y[i]) == 0)
        i++;
    same = same && !x[i] && !y[i];
    free(x);
    free(y);
    return same;
}

/* An event's item in the events file (its body) or in the context file. */
static const char *file_item(const struct event *ev, int meta, size_t *len)
{
    if (!meta) {
        *len = ev->body_len;
        return ev->body;
    }
    *len = ev->context ? ev->context_len : 2;
    return ev->context ? ev->context : "{}";
}

/* An event's bytes in the two files together, with a comma in each. */
static size_t file_bytes(const struct event *ev)
{
    size_t context;

    file_item(ev, 1, &context);
    return 2 + ev->body_len + context;
}

int group_build(const struct event *events, size_t n, size_t events_per_machine,
                size_t max_bytes, struct group_plan *plan, struct lerr *e)
{
    size_t *members = plan->members;
    size_t per = events_per_machine, start, end;

    plan->ngroups = plan->nvalid = 0;
    if (per < 1 || per > GROUP_MAX_PER_MACHINE)
        return lerr_set(e, LERR_INVALID, "events per machine must be 1 to %d, not %zu",
                        GROUP_MAX_PER_MACHINE, per);
    if (n && (!events || !plan->groups || !members || !plan->verdicts))
        return lerr_set(e, LERR_INVALID, "group_build: no storage for %zu events", n);
    for (size_t i = 0; i < n; i++) {
        lerr_clear(&plan->verdicts[i]);
        if (group_check(&events[i], &plan->verdicts[i]) == 0)
            members[plan->nvalid++] = i;
    }

    /* The valid events, in receive order, are sorted by key in place: the events of the
     * key at start are moved up behind it, keeping their order (a stable partition). */
    for (start = 0; start < plan->nvalid; start = end) {
        const struct event *first = &events[members[start]];

        end = start + 1;
        for (size_t q = end; q < plan->nvalid; q++) {
            size_t i = members[q];

            if (!same_key(first, &events[i]))
                continue;
            memmove(members + end + 1, members + end, (q - end) * sizeof *members);
            members[end++] = i;
        }
        /* then cut into groups of at most per events and max_bytes: "[]" twice, then
         * each event's items and commas; one event over it still runs, alone */
        for (size_t at = start, count; at < end; at += count) {
            struct group *g = &plan->groups[plan->ngroups++];
            size_t bytes = 2 + file_bytes(&events[members[at]]);

            for (count = 1; at + count < end && count < per; count++) {
                size_t more = file_bytes(&events[members[at + count]]);
                if (bytes + more > max_bytes)
                    break;
                bytes += more;
            }
            g->image = first->image;
            g->preset = size_preset(first->size);
            g->command = first->command;
            g->members = members + at;
            g->count = count;
        }
    }
    return 0;
}

/* ---- FIFO queues ----------------------------------------------------------------------- */

#define PART_NONE ((size_t)-1)      /* in no part: invalid, or held */
#define PART_RETURNED ((size_t)-2)  /* taken out of its part */

/* Whether event i may run in its part: every earlier event of its message group is there. */
static int fifo_in_order(const struct event *ev, const size_t *part_of, size_t i)
{
    for (size_t j = 0; j < i; j++)
        if (ev[j].fifo_group && strcmp(ev[j].fifo_group, ev[i].fifo_group) == 0 &&
            part_of[j] != part_of[i])
            return 0;
    return 1;
}

size_t group_fifo_order(const struct event *ev, size_t n, struct group *parts, size_t nparts,
                        size_t *part_of, size_t *returned)
{
    size_t nret = 0;

    for (size_t i = 0; i < n; i++)
        part_of[i] = PART_NONE;
    for (size_t p = 0; p < nparts; p++)
        for (size_t k = 0; k < parts[p].count; k++)
            part_of[parts[p].members[k]] = p;
    for (size_t i = 0; i < n; i++)
        if (ev[i].fifo_group && part_of[i] < nparts && !fifo_in_order(ev, part_of, i)) {
            part_of[i] = PART_RETURNED;  /* and so are the group's later events */
            returned[nret++] = i;
        }
    for (size_t p = 0; p < nparts && nret; p++) {
        size_t *m = (size_t *)parts[p].members, kept = 0;  /* the caller's storage */
        for (size_t k = 0; k < parts[p].count; k++)
            if (part_of[m[k]] == p)
                m[kept++] = m[k];
        parts[p].count = kept;
    }
    return nret;
}

/* ---- the events file ------------------------------------------------------------------- */

/* "[" item "," item ... "]", the items byte for byte. */
static char *file_alloc(const struct event *events, const struct group *g, int meta,
                        size_t *len)
{
    size_t need = 2 + (g->count ? g->count - 1 : 0), n = 0, b;
    char *buf;

    for (size_t i = 0; i < g->count; i++) {
        file_item(&events[g->members[i]], meta, &b);
        need += b;
    }
    if (!(buf = malloc(need + 1)))
        return NULL;
    buf[n++] = '[';
    for (size_t i = 0; i < g->count; i++) {
        const char *item = file_item(&events[g->members[i]], meta, &b);
        if (i)
            buf[n++] = ',';
        if (b)
            memcpy(buf + n, item, b);
        n += b;
    }
    buf[n++] = ']';
    buf[n] = '\0';
    *len = need;
    return buf;
}

int group_files_alloc(const struct event *events, const struct group *g, char **out,
                      size_t *len, char **meta, size_t *meta_len, struct lerr *e)
{
    *out = file_alloc(events, g, 0, len);
    *meta = *out ? file_alloc(events, g, 1, meta_len) : NULL;
    if (*meta)
        return 0;
    free(*out);
    *out = NULL;
    return lerr_set(e, LERR_NOMEM, "out of memory for the files of %zu events", g->count);
}

void group_id(const struct event *events, const struct group *g, char out[GROUP_ID_LEN + 1])
{
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
    text_hex_encode(sum, GROUP_ID_LEN / 2, out);
}

void group_key(const struct group *g, char out[GROUP_ID_LEN + 1])
{
    const char *parts[3] = { g->image, g->preset->name, g->command ? g->command : "" };
    unsigned char sum[32];
    br_sha256_context h;

    /* NUL-separated: no part holds one, so no two triples hash the same bytes */
    br_sha256_init(&h);
    for (int i = 0; i < 3; i++)
        br_sha256_update(&h, parts[i], strlen(parts[i]) + 1);
    br_sha256_out(&h, sum);
    text_hex_encode(sum, GROUP_ID_LEN / 2, out);
}
