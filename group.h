/*
 * group.h - which received messages can run, and which run together.
 *
 * A message is an event: a JSON body and the attributes image, size and command. Events
 * that ask for the same Machine (image, size, command) are batched into one Machine,
 * whose events file holds their bodies (and whose context file, aligned with it, their
 * messages' entries: JSON written by sqs.c, opaque here). This module is pure logic over
 * caller-owned memory: it knows nothing of SQS, HTTP or Fly's API, only the table of size
 * presets.
 *
 * What an event must be (group_check):
 *   image    present, 1..GROUP_IMAGE_MAX bytes of printable ASCII without spaces: image
 *            references are ASCII, and a space or control byte can only be a mistake.
 *   size     absent (PRESET_DEFAULT) or exactly a preset name (preset.h), case-sensitive.
 *            Present but empty is an error, not the default.
 *   command  absent (the image's own command), or a JSON array of at least one string,
 *            the first one non-empty (it names the program). No element may contain a NUL
 *            character (\u0000): it cannot be passed to exec.
 *   body     any JSON value (object, array, string, number, true, false, null), with
 *            optional JSON whitespace around it and nothing else in body_len bytes.
 *
 * Bodies and commands are checked by json_items (json.h), strictly against RFC 8259: a
 * body that a strict parser refuses would make the whole events file, and every event in
 * it, unreadable.
 *
 * Reasons are one line, name the attribute or the body, and quote the offending value
 * (truncated, non-printable bytes as \xNN); byte offsets are 0-based. Command elements
 * are numbered from 1.
 */
#ifndef LAMBDO_GROUP_H
#define LAMBDO_GROUP_H

#include <stddef.h>
#include "err.h"
#include "preset.h"

#define GROUP_MAX_PER_MACHINE 1000   /* events_per_machine is 1..this */
#define GROUP_IMAGE_MAX       512    /* bytes of an image reference */
#define GROUP_ID_LEN          16     /* hex characters of a group id */

struct event {
    const char *id;        /* message id (for group ids); NULL counts as "" */
    const char *body;      /* body_len bytes, not NUL-terminated; may be NULL when 0 */
    size_t body_len;
    const char *image;     /* attributes: NUL-terminated strings, NULL when absent */
    const char *size;
    const char *command;
    const char *fifo_group; /* FIFO queues: the message's MessageGroupId, else NULL */
    const char *context;   /* the message's entry of the context file: a JSON object, */
    size_t context_len;    /* context_len bytes; NULL counts as {} */
};

/* One Machine's worth of events: they share image, size and command (by meaning). */
struct group {
    const char *image;            /* the first member's image */
    const struct preset *preset;  /* the size, default applied; never NULL */
    const char *command;          /* the first member's command (JSON text), or NULL */
    const size_t *members;        /* indices into the events array, in receive order */
    size_t count;                 /* 1..events_per_machine */
};

/* group_build's output. The caller provides the three arrays, each with room for n
 * entries (n = number of events); nothing is allocated. groups and members point into
 * the events' strings, so they live as long as the events do. */
struct group_plan {
    struct group *groups;    /* storage: n entries */
    size_t *members;         /* storage: n entries */
    struct lerr *verdicts;   /* storage: n entries; per event, kind LERR_NONE when it is
                                valid, else LERR_INVALID and the reason */
    size_t ngroups;          /* result: groups[0..ngroups) */
    size_t nvalid;           /* result: events placed in a group */
};

/* Checks one event against the rules above. Returns 0, or -1 with e set (LERR_INVALID)
 * to a reason such as
 *   attribute size: "huge" is not a Fly preset (shared-cpu-{1,2,4,6,8}x, ...)
 *   attribute command: element 2 is not a string (it is a number)
 *   body is not valid JSON (at byte 17: leading zero in number) */
int group_check(const struct event *ev, struct lerr *e);

/* Checks events[0..n) and groups the valid ones by (image, size with the default
 * applied, command compared by meaning: ["a","b"] and [ "a", "\u0062" ] are the same).
 * Groups come in order of their first event; events keep their receive order within a
 * group; a group is cut into consecutive groups (one Machine each) of at most
 * events_per_machine events, whose events file and context file together take at most
 * max_bytes (LAMBDO_MAX_EVENTS_BYTES): one event over max_bytes on its own still runs,
 * alone. An invalid event is only reported in its verdict: it does not change how the
 * others are grouped.
 * Returns 0, or -1 (LERR_INVALID) only for bad arguments: events_per_machine outside
 * 1..GROUP_MAX_PER_MACHINE or missing storage. */
int group_build(const struct event *events, size_t n, size_t events_per_machine,
                size_t max_bytes, struct group_plan *plan, struct lerr *e);

/* The FIFO ordering rule. SQS hands out a message group's messages in order, and one
 * answer may hold several of them; run in two Machines at once, they would no longer be in
 * order. So each message group runs in one Machine, the one (of parts[0..nparts), the
 * Machines about to start, events in receive order) that holds its first event; an event
 * is kept only when every earlier event of its group is in its part. The others (in
 * another part, or after one that is in no part: an invalid message, which SQS keeps in
 * flight) are taken out of their part (members compacted in place: they point into the
 * caller's writable storage; a part may be left empty) and their indices written to
 * returned, in receive order: the caller makes them visible again at once, and SQS holds
 * them back until the group's earlier messages are deleted. Events without fifo_group are
 * left alone. part_of: storage for n entries. Returns how many were taken out. */
size_t group_fifo_order(const struct event *ev, size_t n, struct group *parts, size_t nparts,
                        size_t *part_of, size_t *returned);

/* Writes the events file, "[" body "," body ... "]", the bodies byte for byte, into a new
 * buffer *out of *len bytes, and the context file (events.meta.json) likewise into *meta:
 * "[" context "," context ... "]", entry i for event i of the events file. Each buffer
 * has a NUL terminator not counted in its length; the caller frees both with free().
 * Returns 0, or -1 (LERR_NOMEM) with *out and *meta NULL. */
int group_files_alloc(const struct event *events, const struct group *g, char **out,
                      size_t *len, char **meta, size_t *meta_len, struct lerr *e);

/* A command (the command attribute, or LAMBDO_LOCAL_COMMAND): a JSON array of at least
 * one string, the first non-empty, none holding a NUL character (\u0000: exec cannot pass
 * it). 0, or -1 with LERR_INVALID and a reason such as "must be a JSON array of strings,
 * not a number" (callers say where the command came from). With argv not NULL, also its
 * strings, decoded, as a NULL-terminated argv in one allocation that free() frees. */
int group_command(const char *cmd, char ***argv, struct lerr *e);

/* A short id for the group, GROUP_ID_LEN lowercase hex characters and a NUL: the start
 * of the SHA-256 of its members' message ids. The same messages grouped the same way
 * get the same id, so a Machine can be traced back (and a redelivered batch spotted). */
void group_id(const struct event *events, const struct group *g, char out[GROUP_ID_LEN + 1]);

/* The group's pool key (LAMBDO_POOL), GROUP_ID_LEN lowercase hex characters and a NUL: the
 * start of the SHA-256 of what groups it (image, size preset name, command), so that every
 * lambdo instance names the same kind of Machine the same way. */
void group_key(const struct group *g, char out[GROUP_ID_LEN + 1]);

#endif
