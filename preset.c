#include "preset.h"

#include <stddef.h>
#include <string.h>

/* Fly's documented presets: shared CPUs come with 256 MB each, performance CPUs with
 * 2 GB each, and every GPU preset is a performance-8x host with 32 GB and one GPU. */
static const struct preset presets[] = {
    { "shared-cpu-1x", "shared", 1, 256, 0, NULL },
    { "shared-cpu-2x", "shared", 2, 512, 0, NULL },
    { "shared-cpu-4x", "shared", 4, 1024, 0, NULL },
    { "shared-cpu-6x", "shared", 6, 1536, 0, NULL },
    { "shared-cpu-8x", "shared", 8, 2048, 0, NULL },
    { "performance-1x", "performance", 1, 2048, 0, NULL },
    { "performance-2x", "performance", 2, 4096, 0, NULL },
    { "performance-4x", "performance", 4, 8192, 0, NULL },
    { "performance-6x", "performance", 6, 12288, 0, NULL },
    { "performance-8x", "performance", 8, 16384, 0, NULL },
    { "performance-10x", "performance", 10, 20480, 0, NULL },
    { "performance-12x", "performance", 12, 24576, 0, NULL },
    { "performance-14x", "performance", 14, 28672, 0, NULL },
    { "performance-16x", "performance", 16, 32768, 0, NULL },
    { "a100-40gb", "performance", 8, 32768, 1, "a100-pcie-40gb" },
    { "a100-80gb", "performance", 8, 32768, 1, "a100-sxm4-80gb" },
    { "l40s", "performance", 8, 32768, 1, "l40s" },
    { "a10", "performance", 8, 32768, 1, "a10" },
};

const struct preset *preset_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (strcmp(presets[i].name, name) == 0)
            return &presets[i];
    return NULL;
}

const struct preset *preset_at(unsigned i)
{
    return i < sizeof presets / sizeof presets[0] ? &presets[i] : NULL;
}
