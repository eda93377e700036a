#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static struct {
    enum log_level min;
    int json;
} log_config = { LOG_LEVEL_INFO, 0 };

static const char *const level_names[] = { "debug", "info", "warn", "error" };

void log_setup(enum log_level min_level, int json)
{
    log_config.min = min_level;
    log_config.json = json;
}

int log_level_parse(const char *name, enum log_level *out)
{
    for (unsigned i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -1;
}

int log_enabled(enum log_level level)
{
    return level >= log_config.min;
}

/* Escapes msg as the inside of a JSON string. Control bytes become \u00XX so one
 * message is always one line, whatever a server put in its error text. */
static size_t json_escape(char *out, size_t cap, const char *msg)
{
    size_t n = 0;

    for (const unsigned char *p = (const unsigned char *)msg; *p && n + 7 < cap; p++) {
        if (*p == '"' || *p == '\\') {
            out[n++] = '\\';
            out[n++] = (char)*p;
        } else if (*p < 0x20) {
            n += (size_t)snprintf(out + n, cap - n, "\\u%04x", *p);
        } else {
            out[n++] = (char)*p;
        }
    }
    out[n] = '\0';
    return n;
}

void log_write(enum log_level level, const char *fmt, ...)
{
    char msg[2048], line[6 * sizeof msg + 128], stamp[64];
    struct timespec ts;
    struct tm tm;
    va_list ap;

    if (!log_enabled(level))
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
    if (log_config.json) {
        char esc[6 * sizeof msg];
        json_escape(esc, sizeof esc, msg);
        snprintf(line, sizeof line, "{\"time\":\"%s\",\"level\":\"%s\",\"msg\":\"%s\"}\n", stamp,
                 level_names[level], esc);
    } else {
        for (char *p = msg; *p; p++)
            if ((unsigned char)*p < 0x20 && *p != '\t')
                *p = ' ';
        snprintf(line, sizeof line, "%s %-5s %s\n", stamp, level_names[level], msg);
    }
    fputs(line, stderr);
}
