#include "log.h"
#include "json.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Set once by log_setup() before any thread starts. */
static enum log_level log_min = LOG_LEVEL_INFO;
static int log_json;

static const char *const level_names[] = { "debug", "info", "warn", "error" };

void log_setup(enum log_level min_level, int json)
{
    log_min = min_level;
    log_json = json;
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
    return level >= log_min;
}

void log_write(enum log_level level, const char *fmt, ...)
{
    char msg[2048], line[sizeof msg + 128], stamp[64];
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
    if (log_json) {
        /* json.c's string writer escapes control bytes too, so one message is always one
         * line, whatever a server put in its error text. */
        struct json_buf b = { 0 };
        json_buf_fmt(&b, "{\"time\":\"%s\",\"level\":\"%s\",\"msg\":", stamp,
                     level_names[level]);
        json_buf_string(&b, msg, strlen(msg));
        json_buf_lit(&b, "}\n");
        fputs(b.oom ? "{\"level\":\"error\",\"msg\":\"log: out of memory\"}\n" : b.p, stderr);
        free(b.p);
        return;
    }
    for (char *p = msg; *p; p++)
        if ((unsigned char)*p < 0x20 && *p != '\t')
            *p = ' ';
    snprintf(line, sizeof line, "%s %-5s %s\n", stamp, level_names[level], msg);
    fputs(line, stderr);
}
