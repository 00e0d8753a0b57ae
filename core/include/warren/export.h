/*
 * export.h: symbol visibility. Everything is built with -fvisibility=hidden; WR_API marks
 * what libwarren exports, WR_EXPORT what a plugin exports (only wr_plugin_entry).
 */
#ifndef WARREN_EXPORT_H
#define WARREN_EXPORT_H

#define WR_API __attribute__((visibility("default")))
#define WR_EXPORT __attribute__((visibility("default")))
#define WR_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))

#define WR_VERSION_STRING "0.1.0"

#ifdef __cplusplus
#define WR_BEGIN_DECLS extern "C" {
#define WR_END_DECLS }
#else
#define WR_BEGIN_DECLS
#define WR_END_DECLS
#endif

#endif
