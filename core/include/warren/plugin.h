/*
 * plugin.h: the plugin ABI. A plugin is one shared object that exports one symbol,
 * wr_plugin_entry, a struct wr_plugin made with WR_PLUGIN_DEFINE. The loader dlopens it with
 * RTLD_NOW | RTLD_LOCAL, checks the ABI, the kind and the name, then calls the kind's ops.
 *
 * Compatibility: WR_ABI_MAJOR changes break every plugin (the loader refuses a mismatch).
 * Structs here and the ops tables only grow at their end, with a WR_ABI_MINOR bump; each
 * starts with its size as the plugin was built, and the core reads a member only if it lies
 * within that size. A NULL optional op means "unsupported".
 */
#ifndef WARREN_PLUGIN_H
#define WARREN_PLUGIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "warren/export.h"

WR_BEGIN_DECLS

#define WR_ABI_MAJOR 1
#define WR_ABI_MINOR 0

enum wr_plugin_kind {
    WR_PLUGIN_TRANSPORT = 1,
    WR_PLUGIN_EXCHANGE = 2,
    WR_PLUGIN_STORAGE = 3,
};

/* The type of a plugin option as written in YAML, and what the plugin receives:
 * BOOL → WR_V_BOOL, INT → WR_V_I64, SIZE ("64MiB") → WR_V_I64 bytes,
 * DURATION ("250ms", "7d") → WR_V_I64 milliseconds, STRING → WR_V_STR,
 * TABLE → WR_V_TABLE, LIST → WR_V_ARRAY. */
enum wr_option_type {
    WR_OPT_BOOL = 1,
    WR_OPT_INT,
    WR_OPT_SIZE,
    WR_OPT_DURATION,
    WR_OPT_STRING,
    WR_OPT_TABLE,
    WR_OPT_LIST,
};

/* One row of a plugin's options schema; a table of them ends with a row whose name is NULL.
 * The core checks a config's `options:` against it before anything starts, so a plugin sees
 * only known keys with the right types. */
struct wr_option {
    const char *name;
    enum wr_option_type type;
    bool required;
    const char *doc; /* one line, shown by --help-plugin and in errors */
};

/* A schema row with this name takes every key no other row names, converted as binding
 * arguments are (a scalar by its YAML form, a map to a table, a list to an array); its type
 * and doc are not used. For a plugin that hands free-form settings on (the lua exchange
 * passes them to its script's init). */
#define WR_OPTION_ANY "*"

struct wr_plugin {
    uint16_t abi_major;
    uint16_t abi_minor;
    uint32_t size;                   /* sizeof(struct wr_plugin) as the plugin was built */
    enum wr_plugin_kind kind;
    const char *name;                /* "topic": unique in a broker */
    const char *version;             /* the plugin's own version, "1.0.0" */
    const struct wr_option *options; /* schema of its YAML options; NULL: takes none */
    const void *ops;                 /* struct wr_{transport,exchange,storage}_ops by kind */
};

#define WR_PLUGIN_SYMBOL "wr_plugin_entry"

#define WR_PLUGIN_DEFINE(...)                                                                 \
    WR_EXPORT const struct wr_plugin wr_plugin_entry = {.abi_major = WR_ABI_MAJOR,           \
                                                        .abi_minor = WR_ABI_MINOR,           \
                                                        .size = sizeof(struct wr_plugin),    \
                                                        __VA_ARGS__}

/* A loaded plugin as the core sees it: passed to every create/open/start so the plugin knows
 * its identity (for logs), its loop, its broker and its data directory. Borrowed; valid until
 * the plugin is closed at shutdown. */
struct wr_plugin_ctx;
struct wr_loop;
struct wr_broker;

WR_API const char *wr_plugin_ctx_name(const struct wr_plugin_ctx *ctx);
WR_API const char *wr_plugin_ctx_path(const struct wr_plugin_ctx *ctx);
WR_API const struct wr_plugin *wr_plugin_ctx_plugin(const struct wr_plugin_ctx *ctx);
WR_API struct wr_loop *wr_plugin_ctx_loop(const struct wr_plugin_ctx *ctx);
WR_API struct wr_broker *wr_plugin_ctx_broker(const struct wr_plugin_ctx *ctx);
WR_API const char *wr_plugin_ctx_data_dir(const struct wr_plugin_ctx *ctx);

WR_API const char *wr_plugin_kind_name(enum wr_plugin_kind kind);

WR_END_DECLS

#endif
