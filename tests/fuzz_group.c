/* libFuzzer target for group.c: the input is cut into a few events, which are checked,
 * grouped and written out as events files; then the invariants are checked against an
 * independent reading with cJSON.
 *
 * Input: one byte for events_per_machine (1..4), then records of
 *   flags (bit 0: image present, bit 1: size present, bit 2: command present, bits 3-4:
 *   the FIFO message group, none or "a", "b", "c"),
 *   a length byte and that many bytes for each present attribute, in that order,
 *   two length bytes (big-endian) and the body.
 * Short input just ends the record where it is cut. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cJSON.h"
#include "group.h"
#include "json.h"

#define MAX_EVENTS 16

struct input {
    const uint8_t *p, *end;
};

static size_t take(struct input *in, size_t want, const uint8_t **out)
{
    size_t n = (size_t)(in->end - in->p) < want ? (size_t)(in->end - in->p) : want;
    *out = in->p;
    in->p += n;
    return n;
}

static size_t take_len(struct input *in, int bytes)
{
    size_t v = 0;
    for (int i = 0; i < bytes && in->p < in->end; i++)
        v = v << 8 | *in->p++;
    return v;
}

/* An attribute as a C string; an embedded NUL simply ends it early, as it would. */
static char *take_attr(struct input *in)
{
    const uint8_t *bytes;
    size_t n = take(in, take_len(in, 1), &bytes);
    char *s = malloc(n + 1);
    if (!s)
        abort();
    memcpy(s, bytes, n);
    s[n] = '\0';
    return s;
}

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "invariant broken: %s\n", what);
        abort();
    }
}

/* Commands compared independently: cJSON parses both, the strings must match. */
static int commands_equal(const char *a, const char *b)
{
    cJSON *x, *y;
    int eq;

    if (!a || !b)
        return !a && !b;
    x = cJSON_Parse(a);
    y = cJSON_Parse(b);
    check(x && y && cJSON_IsArray(x) && cJSON_IsArray(y), "a valid command parses as an array");
    eq = cJSON_GetArraySize(x) == cJSON_GetArraySize(y);
    for (int i = 0; eq && i < cJSON_GetArraySize(x); i++) {
        cJSON *s = cJSON_GetArrayItem(x, i), *t = cJSON_GetArrayItem(y, i);
        check(cJSON_IsString(s) && cJSON_IsString(t), "command elements are strings");
        eq = strcmp(s->valuestring, t->valuestring) == 0;
    }
    cJSON_Delete(x);
    cJSON_Delete(y);
    return eq;
}

static int keys_equal(const struct group *g, const struct group *h)
{
    return strcmp(g->image, h->image) == 0 && g->preset == h->preset &&
           commands_equal(g->command, h->command);
}

static void check_events_file(const struct event *ev, const struct group *g)
{
    size_t len = 0, meta_len = 0, n = 0, cap = g->count + 1;  /* brackets and commas */
    char *buf = NULL, *want, *meta = NULL;
    struct lerr e;
    const char *end = NULL;
    cJSON *arr;

    for (size_t i = 0; i < g->count; i++)
        cap += ev[g->members[i]].body_len;
    want = malloc(cap + 1);
    if (!want || group_files_alloc(ev, g, &buf, &len, &meta, &meta_len, &e) < 0)
        abort();
    check(len == cap && buf[len] == '\0', "events file fits its length");
    want[n++] = '[';
    for (size_t i = 0; i < g->count; i++) {
        const struct event *m = &ev[g->members[i]];
        if (i)
            want[n++] = ',';
        memcpy(want + n, m->body, m->body_len);
        n += m->body_len;
    }
    want[n++] = ']';
    check(n == len && memcmp(buf, want, len) == 0, "events file is the bodies byte for byte");
    /* no event has a context here: {} each, aligned with the events file */
    check(meta_len == 3 * g->count + 1 && meta[meta_len] == '\0' &&
          memcmp(meta + meta_len - 3, "{}]", 3) == 0, "context file is {} per event");
    free(meta);

    arr = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
    check(arr && cJSON_IsArray(arr), "events file parses as an array");
    check(end == buf + len, "nothing after the events array");
    check((size_t)cJSON_GetArraySize(arr) == g->count, "one element per event");
    check(json_items(buf, len, NULL, NULL, NULL, NULL) == 0, "events file passes the strict check");
    cJSON_Delete(arr);
    free(buf);
    free(want);
}

static void check_plan(const struct event *ev, size_t n, size_t per, const struct group_plan *pl)
{
    int seen[MAX_EVENTS] = { 0 };
    size_t placed = 0, valid = 0;

    for (size_t i = 0; i < n; i++) {
        struct lerr e = { 0 };
        int rc = group_check(&ev[i], &e);
        check((rc == 0) == (pl->verdicts[i].kind == LERR_NONE), "verdict matches group_check");
        check(rc == 0 || (e.kind == LERR_INVALID && e.msg[0] && !strchr(e.msg, '\n') &&
                          strcmp(e.msg, pl->verdicts[i].msg) == 0), "reasons are one line");
        valid += rc == 0;
    }
    check(valid == pl->nvalid, "nvalid counts the valid events");

    for (size_t g = 0; g < pl->ngroups; g++) {
        const struct group *gr = &pl->groups[g];
        char id[GROUP_ID_LEN + 1];

        check(gr->count >= 1 && gr->count <= per, "group size within 1..per");
        check(gr->preset != NULL, "a group has a preset");
        for (size_t i = 0; i < gr->count; i++) {
            size_t m = gr->members[i];
            check(m < n && pl->verdicts[m].kind == LERR_NONE, "members are valid events");
            check(!seen[m]++, "an event is in one group only");
            check(i == 0 || gr->members[i - 1] < m, "receive order within a group");
            check(strcmp(ev[m].image, gr->image) == 0, "members share the image");
            check(preset_find(ev[m].size ? ev[m].size : PRESET_DEFAULT) == gr->preset,
                  "members share the size");
            check(commands_equal(ev[m].command, gr->command), "members share the command");
        }
        placed += gr->count;
        if (g > 0 && keys_equal(&pl->groups[g - 1], gr)) {
            /* a chunk after a full chunk of the same key, later in receive order */
            check(pl->groups[g - 1].count == per, "only a key's last chunk is short");
            check(pl->groups[g - 1].members[pl->groups[g - 1].count - 1] < gr->members[0],
                  "chunks are consecutive");
        } else {
            for (size_t h = 0; h < g; h++)
                check(!keys_equal(&pl->groups[h], gr), "a key's chunks are adjacent");
        }
        check_events_file(ev, gr);
        group_id(ev, gr, id);
        check(strlen(id) == GROUP_ID_LEN && strspn(id, "0123456789abcdef") == GROUP_ID_LEN,
              "group id is hex");
    }
    check(placed == valid, "every valid event is placed");
}

/* Keys come in order of their first event. */
static void check_key_order(const struct group_plan *pl)
{
    size_t last_first = 0;
    int have = 0;

    for (size_t g = 0; g < pl->ngroups; g++) {
        if (g > 0 && keys_equal(&pl->groups[g - 1], &pl->groups[g]))
            continue;
        check(!have || last_first < pl->groups[g].members[0], "keys ordered by first event");
        last_first = pl->groups[g].members[0];
        have = 1;
    }
}

/* The FIFO rule (group_fifo_order) on the groups as Machines: of each message group, what
 * stays is a prefix (in receive order) of its events, all valid and in one Machine; the rest
 * is returned, in receive order; nothing else moves. */
static void check_fifo(const struct event *ev, size_t n, struct group_plan *pl)
{
    size_t part_of[MAX_EVENTS], ret[MAX_EVENTS], before = 0, after = 0;
    size_t nret = group_fifo_order(ev, n, pl->groups, pl->ngroups, part_of, ret);
    int kept[MAX_EVENTS] = { 0 }, back[MAX_EVENTS] = { 0 };
    size_t where[MAX_EVENTS];

    for (size_t i = 0; i < nret; i++) {
        check(ev[ret[i]].fifo_group && (i == 0 || ret[i - 1] < ret[i]), "returned in order");
        back[ret[i]] = 1;
    }
    for (size_t g = 0; g < pl->ngroups; g++)
        for (size_t k = 0; k < pl->groups[g].count; k++) {
            kept[pl->groups[g].members[k]] = 1;
            where[pl->groups[g].members[k]] = g;
            after++;
        }
    for (size_t i = 0; i < n; i++) {
        before += pl->verdicts[i].kind == LERR_NONE;
        check(!(kept[i] && back[i]), "an event is kept or returned, not both");
        for (size_t j = 0; j < i && kept[i] && ev[i].fifo_group; j++)
            if (ev[j].fifo_group && strcmp(ev[j].fifo_group, ev[i].fifo_group) == 0)
                check(kept[j] && where[j] == where[i], "a group's kept events: a prefix, one Machine");
    }
    check(after + nret == before, "every placed event is kept or returned");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct input in = { data, data + size };
    struct event ev[MAX_EVENTS];
    char *owned[MAX_EVENTS * 4];
    size_t n = 0, nowned = 0, per;
    struct group groups[MAX_EVENTS];
    size_t members[MAX_EVENTS];
    struct lerr verdicts[MAX_EVENTS], e;
    struct group_plan plan = { groups, members, verdicts, 0, 0 };
    char idbuf[MAX_EVENTS][8];

    if (size < 1)
        return 0;
    per = 1 + (size_t)(*in.p++ % 4);
    while (in.p < in.end && n < MAX_EVENTS) {
        unsigned flags = *in.p++;
        struct event *x = &ev[n];
        const uint8_t *body;
        char *b;

        memset(x, 0, sizeof *x);
        snprintf(idbuf[n], sizeof idbuf[n], "m%zu", n);
        x->id = idbuf[n];
        x->image = flags & 1 ? (owned[nowned++] = take_attr(&in)) : NULL;
        x->size = flags & 2 ? (owned[nowned++] = take_attr(&in)) : NULL;
        x->command = flags & 4 ? (owned[nowned++] = take_attr(&in)) : NULL;
        x->fifo_group = (flags >> 3 & 3) ? &"a\0b\0c"[2 * ((flags >> 3 & 3) - 1)] : NULL;
        x->body_len = take(&in, take_len(&in, 2), &body);
        /* a copy of exactly body_len bytes, so ASan sees any read past the end */
        b = malloc(x->body_len ? x->body_len : 1);
        if (!b)
            abort();
        memcpy(b, body, x->body_len);
        x->body = owned[nowned++] = b;
        n++;
    }

    check(group_build(ev, n, per, (size_t)-1, &plan, &e) == 0, "group_build succeeds");
    check_plan(ev, n, per, &plan);
    check_key_order(&plan);
    check_fifo(ev, n, &plan);  /* last: it takes events out of the groups */

    for (size_t i = 0; i < nowned; i++)
        free(owned[i]);
    return 0;
}
