/*
 * log.c: log lines to stderr. A line is built in one buffer and written with one write(2), so
 * lines from the sync thread and the loop thread never interleave.
 */
#include "warren/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "warren/plugin.h"

static enum wr_log_level log_level = WR_LOG_INFO;
static const char *const level_names[] = {"error", "warn", "info", "debug"};

void wr_log_set_level(enum wr_log_level level) { log_level = level; }

bool wr_log_enabled(enum wr_log_level level) { return level <= log_level; }

bool wr_log_level_parse(const char *name, enum wr_log_level *out)
{
    for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
        if (strcasecmp(name, level_names[i]) == 0) {
            *out = (enum wr_log_level)i;
            return true;
        }
    }
    return false;
}

static void log_line(enum wr_log_level level, const char *subsys, const char *fmt, va_list ap)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(line, sizeof line, "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof line - n, ".%03ldZ %-5s [%s] ", ts.tv_nsec / 1000000,
                          level_names[level], subsys ? subsys : "-");
    if (n < sizeof line) {
        int m = vsnprintf(line + n, sizeof line - n, fmt, ap);
        n = m < 0 ? n : n + (size_t)m;
    }
    if (n > sizeof line - 2)
        n = sizeof line - 2;
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w; /* nothing sensible to do if stderr is gone */
}

void wr_log(enum wr_log_level level, const char *subsys, const char *fmt, ...)
{
    if (!wr_log_enabled(level))
        return;
    va_list ap;
    va_start(ap, fmt);
    log_line(level, subsys, fmt, ap);
    va_end(ap);
}

void wr_plog(const struct wr_plugin_ctx *ctx, enum wr_log_level level, const char *fmt, ...)
{
    if (!wr_log_enabled(level))
        return;
    va_list ap;
    va_start(ap, fmt);
    log_line(level, ctx ? wr_plugin_ctx_name(ctx) : "plugin", fmt, ap);
    va_end(ap);
}
