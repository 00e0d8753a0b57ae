/*
 * server.h: a whole broker assembled from a YAML config, for the `warren` executable, tests
 * and embedders. Loading a config validates it completely (file:line:column, key path and
 * what was expected); building a server loads exactly the plugins the config names, checks
 * their options, declares the topology and starts the listeners.
 */
#ifndef WARREN_SERVER_H
#define WARREN_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "warren/broker.h"
#include "warren/error.h"
#include "warren/export.h"
#include "warren/loop.h"

WR_BEGIN_DECLS

struct wr_config;
struct wr_server;

/* Parses and validates a YAML config. Errors (WR_EINVAL, WR_EIO) carry
 * "file:line:column: key.path: what was expected". */
WR_API int wr_config_load_file(const char *path, struct wr_config **out, struct wr_error *err);
/* The same from memory; name stands for the file name in messages. */
WR_API int wr_config_load_string(const char *name, const char *text, size_t len,
                                 struct wr_config **out, struct wr_error *err);
WR_API void wr_config_free(struct wr_config *cfg);
/* The YAML `warren` runs on when no file is given. */
WR_API const char *wr_config_default_text(void);
/* Prints the topology (listeners, vhosts, exchanges, queues, bindings, users, plugins). */
WR_API void wr_config_print(const struct wr_config *cfg, FILE *out);

struct wr_server_opts {
    /* Plugin directories used when the config names none (NULL-terminated); NULL: the
     * directory `plugins` beside the executable, then the installed plugin directory. */
    const char *const *default_plugin_dirs;
    /* Build everything but start no listener (for --check-config). */
    bool no_listeners;
};

/* Builds a broker from cfg on a new loop. cfg may be freed afterwards. Errors name the
 * config position of the part that failed. */
WR_API int wr_server_new(const struct wr_config *cfg, const struct wr_server_opts *opts,
                         struct wr_server **out, struct wr_error *err);
/* Runs until SIGTERM or SIGINT (SIGHUP is logged and passed to whoever watches it). */
WR_API int wr_server_run(struct wr_server *srv, struct wr_error *err);
/* Asks a running server to stop, as SIGTERM does. Loop thread only. */
WR_API void wr_server_stop(struct wr_server *srv);
/* Graceful shutdown: listeners stop, queues close, plugins close in reverse load order,
 * everything is freed. Accepts NULL. */
WR_API void wr_server_free(struct wr_server *srv);

WR_API struct wr_broker *wr_server_broker(const struct wr_server *srv);
WR_API struct wr_loop *wr_server_loop(const struct wr_server *srv);

WR_END_DECLS

#endif
