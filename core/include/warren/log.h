/*
 * log.h: one logging call for the core and the plugins.
 *
 * A line carries the wall-clock time, the level, the subsystem and the message, and goes to
 * stderr. Nothing is logged per message at info. Thread: any (a line is written whole).
 */
#ifndef WARREN_LOG_H
#define WARREN_LOG_H

#include <stdbool.h>

#include "warren/export.h"

WR_BEGIN_DECLS

enum wr_log_level { WR_LOG_ERROR = 0, WR_LOG_WARN, WR_LOG_INFO, WR_LOG_DEBUG };

struct wr_plugin_ctx;

WR_API void wr_log(enum wr_log_level level, const char *subsys, const char *fmt, ...)
    WR_PRINTF(3, 4);

/* Logs with the plugin's name as the subsystem. */
WR_API void wr_plog(const struct wr_plugin_ctx *ctx, enum wr_log_level level, const char *fmt,
                    ...) WR_PRINTF(3, 4);

WR_API void wr_log_set_level(enum wr_log_level level);
WR_API bool wr_log_enabled(enum wr_log_level level);

/* Parses "error", "warn", "info", "debug"; returns false for anything else. */
WR_API bool wr_log_level_parse(const char *name, enum wr_log_level *out);

WR_END_DECLS

#endif
