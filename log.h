/*
 * log.h - leveled logging to stderr.
 *
 * Text lines for people by default ("2026-11-27T20:00:00Z info  message"); with json set,
 * one JSON object per line ({"time":..,"level":..,"msg":..}) for log collectors.
 * The level and format are configuration, set once by log_setup() before any thread
 * starts; nothing else in the logger changes after that.
 */
#ifndef LAMBDO_LOG_H
#define LAMBDO_LOG_H

enum log_level { LOG_LEVEL_DEBUG, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };

void log_setup(enum log_level min_level, int json);

/* Parses "debug", "info", "warn" or "error". Returns 0, or -1 if the name is unknown. */
int log_level_parse(const char *name, enum log_level *out);

int log_enabled(enum log_level level);

void log_write(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) do { if (log_enabled(LOG_LEVEL_DEBUG)) log_write(LOG_LEVEL_DEBUG, __VA_ARGS__); } while (0)
#define log_info(...)  log_write(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_warn(...)  log_write(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_error(...) log_write(LOG_LEVEL_ERROR, __VA_ARGS__)

#endif
