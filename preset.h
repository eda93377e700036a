/*
 * preset.h - Fly Machine size presets ("performance-2x") and what they stand for.
 *
 * A message names its Machine size by preset, as `fly machine run --vm-size` does; the
 * Machines API wants the guest spelled out (cpu_kind, cpus, memory_mb, GPUs), and its
 * config.size field is deprecated, so this table is the translation. It is its own
 * module so that message validation (group.c) can use it without knowing of HTTP.
 */
#ifndef LAMBDO_PRESET_H
#define LAMBDO_PRESET_H

/* The size of a Machine whose message names none. */
#define PRESET_DEFAULT "performance-2x"

/* Every preset name, compactly, for error messages. */
#define PRESET_NAMES_TEXT \
    "shared-cpu-{1,2,4,6,8}x, performance-{1,2,4,6,8,10,12,14,16}x, " \
    "a100-40gb, a100-80gb, l40s, a10"

struct preset {
    const char *name;      /* "performance-2x" */
    const char *cpu_kind;  /* "shared" or "performance" */
    int cpus;
    int memory_mb;
    int gpus;              /* 0 for CPU-only presets */
    const char *gpu_kind;  /* Fly's GPU model name ("a100-pcie-40gb"), NULL when gpus is 0 */
};

/* The preset called name (exact, case-sensitive match), or NULL. The result points
 * into a static, read-only table. */
const struct preset *preset_find(const char *name);

/* The i-th preset of the table, or NULL past the end: for tests and documentation. */
const struct preset *preset_at(unsigned i);

#endif
