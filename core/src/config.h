/*
 * config.h (internal): the validated config tree that config.c builds from YAML and
 * server.c assembles a broker from.
 *
 * Every node keeps its position (file, line, column, 1-based) and its key path
 * ("vhosts[0].queues[2].max_length") so that anything found wrong later, such as a plugin
 * option that its schema refuses, is reported where it stands in the file.
 */
#ifndef WARREN_CONFIG_INT_H
#define WARREN_CONFIG_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "warren/log.h"
#include "warren/server.h"
#include "warren/storage.h"

struct cfg_mark {
    unsigned line;  /* 1-based */
    unsigned col;   /* 1-based */
};

enum cfg_node_kind { CFG_SCALAR = 1, CFG_MAP, CFG_SEQ };

struct cfg_pair;

/* A YAML node as parsed, before any schema applies (kept for `options:` and `arguments:`,
 * whose schema is known only once plugins are loaded). */
struct cfg_node {
    enum cfg_node_kind kind;
    struct cfg_mark mark;
    char *path;              /* key path of this node, "" for the root */
    char *scalar;            /* CFG_SCALAR: the text, NUL-terminated */
    bool plain;              /* CFG_SCALAR: unquoted (may be a number or bool) */
    size_t count;            /* CFG_MAP: pairs; CFG_SEQ: items */
    struct cfg_pair *pairs;  /* CFG_MAP */
    struct cfg_node *items;  /* CFG_SEQ */
};

struct cfg_pair {
    char *key;
    struct cfg_mark key_mark;
    struct cfg_node value;
};

struct cfg_plugin {
    char *name;
    char *path;                  /* NULL: search plugin_dirs for NAME.so */
    const struct cfg_node *node;
};

struct cfg_listener {
    char *transport;
    char *host;                  /* default "127.0.0.1" */
    uint16_t port;
    const struct cfg_node *options; /* map or NULL */
    const struct cfg_node *node;
};

struct cfg_exchange {
    char *name;
    char *type;
    bool durable, auto_delete, internal;
    const struct cfg_node *options; /* map or NULL */
    const struct cfg_node *node;
};

struct cfg_queue {
    char *name;
    char *storage;               /* default "memory" */
    bool durable, exclusive, auto_delete;
    int64_t max_length;          /* -1: none */
    int64_t max_length_bytes;    /* -1: none */
    enum wr_overflow overflow;
    uint32_t partitions;         /* default 1 */
    int64_t message_ttl_ms;      /* -1: none */
    int64_t expires_ms;          /* -1: none */
    char *dead_letter_exchange;  /* NULL: none */
    char *dead_letter_routing_key;
    char *forward_to;            /* log queues: the exchange records are forwarded to; NULL: none */
    const struct cfg_node *forward_to_node;
    const struct cfg_node *options; /* map or NULL */
    const struct cfg_node *node;
};

struct cfg_binding {
    char *exchange;              /* source */
    char *queue;                 /* exactly one of queue and to_exchange is set */
    char *to_exchange;
    char *key;                   /* default "" */
    const struct cfg_node *arguments; /* map or NULL */
    const struct cfg_node *node;
};

struct cfg_vhost {
    char *name;
    struct cfg_exchange *exchanges;
    size_t n_exchanges;
    struct cfg_queue *queues;
    size_t n_queues;
    struct cfg_binding *bindings;
    size_t n_bindings;
    char *amqp_storage[3];       /* durable, transient, stream (wr_storage_role); NULL: default */
    const struct cfg_node *amqp_storage_node[3];
    const struct cfg_node *node;
};

struct cfg_user {
    char *name;
    char *password;
    char **vhosts;               /* NULL-terminated */
    bool lua_scripts;            /* may declare `lua` exchanges over AMQP; default false */
    const struct cfg_node *node;
};

struct wr_config {
    char *file;                  /* the name used in messages */
    struct cfg_node root;

    /* broker: */
    char *data_dir;              /* default "./warren-data" */
    char **plugin_dirs;          /* NULL-terminated; NULL when the config names none */
    enum wr_log_level log_level; /* default info */
    uint64_t max_message_size;   /* default 128 MiB */
    uint64_t memory_high_watermark; /* default 40% of RAM; 0: off */

    struct cfg_plugin *plugins;  /* extra plugins to load (types clients may declare) */
    size_t n_plugins;
    struct cfg_listener *listeners;
    size_t n_listeners;
    struct cfg_vhost *vhosts;    /* default: one vhost "/" */
    size_t n_vhosts;
    struct cfg_user *users;      /* default: guest/guest on "/" */
    size_t n_users;
};

/* Formats "file:line:col: path: " + fmt into err with code WR_EINVAL. */
int cfg_error(const struct wr_config *cfg, const struct cfg_node *node, struct wr_error *err,
              const char *fmt, ...) WR_PRINTF(4, 5);

/* Converts an `options:` map to a table checked against a plugin's schema (NULL schema: no
 * key is allowed). node may be NULL (empty table); owner is the listener, exchange or queue
 * the options belong to, where a missing required option is reported when there is no map.
 * Unknown keys, wrong types, missing required keys and bad sizes or durations are errors at
 * their position. */
int cfg_options_table(const struct wr_config *cfg, const struct cfg_node *node,
                      const struct cfg_node *owner, const char *plugin,
                      const struct wr_option *schema, struct wr_table **out,
                      struct wr_error *err);

/* Converts an `arguments:` map (binding or declare arguments) to a table with no schema:
 * plain integers become I64, floats DOUBLE, true/false BOOL, everything else STR, nested
 * maps TABLE and lists ARRAY. node may be NULL. */
int cfg_args_table(const struct wr_config *cfg, const struct cfg_node *node,
                   struct wr_table **out, struct wr_error *err);

/* "64MiB", "1GB", "512" (bytes) → bytes; "250ms", "30s", "5m", "2h", "7d", "1w",
 * "100" (ms) → milliseconds. False for anything else, including overflow. */
bool cfg_parse_size(const char *text, uint64_t *out);
bool cfg_parse_duration(const char *text, uint64_t *out_ms);

#endif
