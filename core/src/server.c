/*
 * server.c: a broker assembled from a validated config. It loads exactly the plugins the
 * config names (plus the exchange types of the predeclared exchanges and the default storage,
 * `memory`), checks every `options:` against its plugin's schema, declares the topology and
 * starts the listeners. Anything refused on the way is reported at its place in the file.
 */
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker_int.h"
#include "config.h"

/* How long a stop waits for writes in flight to become durable so their requests are answered
 * (Kafka's acks=all produce, AMQP confirms): longer than the default flush interval. */
#define SHUTDOWN_DRAIN_MS 5000

struct wr_server {
    struct wr_loop *lp;
    struct wr_broker *b;
};

/* Turns err (from the broker or a plugin) into "file:line:col: path: message". */
static int at(const struct wr_config *cfg, const struct cfg_node *node, struct wr_error *err,
              int rc)
{
    if (!err)
        return rc;
    char msg[WR_ERROR_MSG_MAX];
    memcpy(msg, err->msg, sizeof msg);
    cfg_error(cfg, node, err, "%s", msg);
    err->code = rc;
    return rc;
}

/* The plugin directories when the config names none: `plugins` beside the executable (the
 * build tree: build/warren and build/plugins), the installed layout relative to the
 * executable (bin/warren and LIBDIR/warren/plugins, wherever the prefix was moved), then the
 * directory configured at build time. */
static void default_dirs(char exe[PATH_MAX], char installed[PATH_MAX], const char *dirs[4])
{
    size_t i = 0;
    ssize_t n = readlink("/proc/self/exe", exe, PATH_MAX - 64);
    char *slash = n > 0 ? (exe[n] = '\0', strrchr(exe, '/')) : NULL;
    if (slash) {
        *slash = '\0';
        bool fits = snprintf(installed, PATH_MAX, "%s/../%s/warren/plugins", exe,
                             WR_INSTALL_LIBDIR) < PATH_MAX;
        strcat(exe, "/plugins");
        dirs[i++] = exe;
        if (fits)
            dirs[i++] = installed;
    }
    dirs[i++] = WR_INSTALL_PLUGIN_DIR;
    dirs[i] = NULL;
}

static int load(struct wr_server *srv, const struct wr_config *cfg, const struct cfg_node *node,
                const char *name, const char *path, const char *const *dirs,
                enum wr_plugin_kind kind, struct wr_error *err)
{
    struct wr_plugin_ctx *have = wr_broker_plugin(srv->b, name, 0);
    if (have && !path) {
        if (have->plugin->kind == kind || !kind)
            return WR_OK;
        return at(cfg, node, err,
                  wr_error_set(err, WR_EINVAL, "plugin '%s' is %s %s, but %s %s is needed here",
                               name, plugin_kind_article(have->plugin->kind),
                               wr_plugin_kind_name(have->plugin->kind),
                               plugin_kind_article(kind), wr_plugin_kind_name(kind)));
    }
    int rc = wr_broker_load_plugin(srv->b, name, path, dirs, kind, NULL, err);
    return rc == WR_OK ? rc : at(cfg, node, err, rc);
}

static int load_plugins(struct wr_server *srv, const struct wr_config *cfg,
                        const char *const *dirs, struct wr_error *err)
{
    int rc = WR_OK;
    for (size_t i = 0; rc == WR_OK && i < cfg->n_plugins; i++)
        rc = load(srv, cfg, cfg->plugins[i].node, cfg->plugins[i].name, cfg->plugins[i].path,
                  dirs, 0, err);
    static const char *const builtin_exchanges[] = {"direct", "fanout", "topic", "headers",
                                                    "lua"};
    for (size_t i = 0; rc == WR_OK && i < 5; i++)
        rc = load(srv, cfg, &cfg->root, builtin_exchanges[i], NULL, dirs, WR_PLUGIN_EXCHANGE,
                  err);
    /* The storages AMQP declares map to by default (docs/storage.md): memory for transient
     * queues, queue for durable ones, log for streams. */
    static const char *const builtin_storages[] = {"memory", "queue", "log"};
    for (size_t i = 0; rc == WR_OK && i < 3; i++)
        rc = load(srv, cfg, &cfg->root, builtin_storages[i], NULL, dirs, WR_PLUGIN_STORAGE,
                  err);
    for (size_t v = 0; rc == WR_OK && v < cfg->n_vhosts; v++) {
        const struct cfg_vhost *vh = &cfg->vhosts[v];
        for (size_t i = 0; rc == WR_OK && i < vh->n_exchanges; i++)
            rc = load(srv, cfg, vh->exchanges[i].node, vh->exchanges[i].type, NULL, dirs,
                      WR_PLUGIN_EXCHANGE, err);
        for (size_t i = 0; rc == WR_OK && i < vh->n_queues; i++)
            rc = load(srv, cfg, vh->queues[i].node, vh->queues[i].storage, NULL, dirs,
                      WR_PLUGIN_STORAGE, err);
        for (size_t k = 0; rc == WR_OK && k < 3; k++)
            if (vh->amqp_storage[k])
                rc = load(srv, cfg, vh->amqp_storage_node[k], vh->amqp_storage[k], NULL, dirs,
                          WR_PLUGIN_STORAGE, err);
    }
    for (size_t i = 0; rc == WR_OK && i < cfg->n_listeners; i++)
        rc = load(srv, cfg, cfg->listeners[i].node, cfg->listeners[i].transport, NULL, dirs,
                  WR_PLUGIN_TRANSPORT, err);
    return rc;
}

/* The options of a listener, exchange or queue (owner) as a table checked against the
 * schema of its plugin, which is loaded by now. */
static int plugin_options(struct wr_server *srv, const struct wr_config *cfg,
                          const struct cfg_node *options, const struct cfg_node *owner,
                          const char *plugin, struct wr_table **out, struct wr_error *err)
{
    const struct wr_option *schema = wr_broker_plugin(srv->b, plugin, 0)->plugin->options;
    return cfg_options_table(cfg, options, owner, plugin, schema, out, err);
}

static int declare_vhost(struct wr_server *srv, const struct wr_config *cfg,
                         const struct cfg_vhost *cv, struct wr_error *err)
{
    struct wr_vhost *vh;
    int rc = wr_vhost_add(srv->b, cv->name, &vh, err);
    if (rc != WR_OK)
        return at(cfg, cv->node, err, rc);
    for (int k = 0; k < 3; k++)
        if (cv->amqp_storage[k] &&
            (rc = wr_vhost_set_storage(vh, (enum wr_storage_role)k, cv->amqp_storage[k], err)))
            return at(cfg, cv->amqp_storage_node[k], err, rc);
    for (size_t i = 0; i < cv->n_exchanges; i++) {
        const struct cfg_exchange *ce = &cv->exchanges[i];
        struct wr_table *opts;
        rc = plugin_options(srv, cfg, ce->options, ce->node, ce->type, &opts, err);
        if (rc != WR_OK)
            return rc;
        struct wr_exchange_decl decl = {ce->name, ce->type, ce->durable, ce->auto_delete,
                                        ce->internal, opts};
        rc = wr_exchange_declare(vh, &decl, NULL, err);
        wr_table_free(opts);
        if (rc != WR_OK)
            return at(cfg, ce->node, err, rc);
    }
    for (size_t i = 0; i < cv->n_queues; i++) {
        const struct cfg_queue *cq = &cv->queues[i];
        /* Forwarding reads records by offset: only a log has them. */
        const struct wr_storage_ops *ops =
            wr_broker_plugin(srv->b, cq->storage, WR_PLUGIN_STORAGE)->plugin->ops;
        if (cq->forward_to && ops->model != WR_STORAGE_LOG)
            return cfg_error(cfg, cq->forward_to_node, err, "forward_to needs a queue on a "
                             "log-model storage (such as log), but storage '%s' is of the "
                             "queue model", cq->storage);
        struct wr_table *opts;
        rc = plugin_options(srv, cfg, cq->options, cq->node, cq->storage, &opts, err);
        if (rc != WR_OK)
            return rc;
        struct wr_queue_decl decl;
        wr_queue_decl_init(&decl, cq->name);
        decl.storage = cq->storage;
        decl.durable = cq->durable;
        decl.exclusive = cq->exclusive;
        decl.auto_delete = cq->auto_delete;
        decl.max_length = cq->max_length;
        decl.max_length_bytes = cq->max_length_bytes;
        decl.overflow = cq->overflow;
        decl.partitions = cq->partitions;
        decl.message_ttl_ms = cq->message_ttl_ms;
        decl.expires_ms = cq->expires_ms;
        decl.dead_letter_exchange = cq->dead_letter_exchange;
        decl.dead_letter_routing_key = cq->dead_letter_routing_key;
        decl.options = opts;
        rc = wr_queue_declare(vh, &decl, NULL, err);
        wr_table_free(opts);
        if (rc != WR_OK)
            return at(cfg, cq->node, err, rc);
    }
    for (size_t i = 0; i < cv->n_bindings; i++) {
        const struct cfg_binding *cb = &cv->bindings[i];
        struct wr_table *args;
        rc = cfg_args_table(cfg, cb->arguments, &args, err);
        if (rc != WR_OK)
            return rc;
        struct wr_exchange *src = wr_exchange_find(vh, cb->exchange);
        if (cb->queue)
            rc = wr_bind_queue(src, wr_queue_find(vh, cb->queue), cb->key, args, err);
        else
            rc = wr_bind_exchange(src, wr_exchange_find(vh, cb->to_exchange), cb->key, args,
                                  err);
        wr_table_free(args);
        if (rc != WR_OK)
            return at(cfg, cb->node, err, rc);
    }
    return WR_OK;
}

/* The forwarders of the config's log queues with forward_to; after the stored definitions,
 * which may have grown their partitions. */
static int start_forwarding(struct wr_server *srv, const struct wr_config *cfg,
                            struct wr_error *err)
{
    for (size_t v = 0; v < cfg->n_vhosts; v++) {
        const struct cfg_vhost *cv = &cfg->vhosts[v];
        struct wr_vhost *vh = wr_vhost_find(srv->b, cv->name);
        for (size_t i = 0; i < cv->n_queues; i++) {
            const struct cfg_queue *cq = &cv->queues[i];
            struct wr_queue *q = cq->forward_to ? wr_queue_find(vh, cq->name) : NULL;
            int rc = q ? forward_start(q, cq->forward_to, err) : WR_OK;
            if (rc != WR_OK)
                return at(cfg, cq->forward_to_node, err, rc);
        }
    }
    return WR_OK;
}

static int start_listeners(struct wr_server *srv, const struct wr_config *cfg,
                           struct wr_error *err)
{
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        const struct cfg_listener *cl = &cfg->listeners[i];
        struct wr_table *opts;
        int rc = plugin_options(srv, cfg, cl->options, cl->node, cl->transport, &opts, err);
        if (rc != WR_OK)
            return rc;
        struct wr_listener_args args = {cl->host, cl->port, opts};
        rc = wr_broker_listen(srv->b, cl->transport, &args, err);
        wr_table_free(opts);
        if (rc != WR_OK)
            return at(cfg, cl->node, err, rc);
    }
    return WR_OK;
}

int wr_server_new(const struct wr_config *cfg, const struct wr_server_opts *opts,
                  struct wr_server **out, struct wr_error *err)
{
    static const struct wr_server_opts no_opts = {0};
    if (!opts)
        opts = &no_opts;
    wr_log_set_level(cfg->log_level);
    struct wr_server *srv = calloc(1, sizeof *srv);
    if (!srv)
        return wr_error_set(err, WR_ENOMEM, "out of memory creating the server");
    int rc = wr_loop_new(&srv->lp, err);
    if (rc == WR_OK)
        rc = wr_broker_new(srv->lp, cfg->data_dir, &srv->b, err);
    if (rc != WR_OK) {
        wr_server_free(srv);
        return rc;
    }
    wr_broker_set_max_message_size(srv->b, cfg->max_message_size);
    wr_broker_set_memory_high_watermark(srv->b, cfg->memory_high_watermark);

    char exe_dir[PATH_MAX], installed_dir[PATH_MAX];
    const char *fallback[4];
    const char *const *dirs = (const char *const *)cfg->plugin_dirs;
    if (!dirs)
        dirs = opts->default_plugin_dirs;
    if (!dirs) {
        default_dirs(exe_dir, installed_dir, fallback);
        dirs = fallback;
    }

    rc = load_plugins(srv, cfg, dirs, err);
    for (size_t i = 0; rc == WR_OK && i < cfg->n_vhosts; i++)
        rc = declare_vhost(srv, cfg, &cfg->vhosts[i], err);
    for (size_t i = 0; rc == WR_OK && i < cfg->n_users; i++) {
        const struct cfg_user *u = &cfg->users[i];
        rc = wr_broker_user_add(srv->b, u->name, u->password,
                                (const char *const *)u->vhosts, err);
        if (rc == WR_OK)
            rc = wr_broker_user_allow_scripts(srv->b, u->name, u->lua_scripts, err);
        if (rc != WR_OK)
            rc = at(cfg, u->node, err, rc);
    }
    /* After the config's topology, which is declared at every start and never recorded;
     * --check-config (no listeners) leaves the store alone. */
    if (rc == WR_OK && !opts->no_listeners)
        rc = definitions_open(srv->b, err);
    if (rc == WR_OK && !opts->no_listeners)
        rc = start_forwarding(srv, cfg, err);
    if (rc == WR_OK && !opts->no_listeners)
        rc = start_listeners(srv, cfg, err);
    if (rc != WR_OK) {
        wr_server_free(srv);
        return rc;
    }
    *out = srv;
    return WR_OK;
}

static void on_stop_signal(struct wr_loop *lp, int signo, void *data)
{
    (void)data;
    wr_log(WR_LOG_INFO, "server", "%s: shutting down", strsignal(signo));
    wr_loop_stop(lp);
}

static void on_hup(struct wr_loop *lp, int signo, void *data)
{
    (void)lp, (void)signo, (void)data;
    wr_log(WR_LOG_INFO, "server", "SIGHUP: reload requested");
}

int wr_server_run(struct wr_server *srv, struct wr_error *err)
{
    int rc = wr_loop_signal_add(srv->lp, SIGTERM, on_stop_signal, srv, err);
    if (rc == WR_OK)
        rc = wr_loop_signal_add(srv->lp, SIGINT, on_stop_signal, srv, err);
    if (rc == WR_OK)
        rc = wr_loop_signal_add(srv->lp, SIGHUP, on_hup, srv, err);
    if (rc == WR_OK) {
        wr_log(WR_LOG_INFO, "server", "warren %s running (pid %d)", WR_VERSION_STRING,
               (int)getpid());
        rc = wr_loop_run(srv->lp, err);
    }
    /* Forwarding publishes nothing new from here, so the drain ends with its offsets
     * recorded for all it published. */
    forward_stop_all(srv->b);
    if (rc == WR_OK) /* a second SIGTERM or SIGINT cuts this short */
        sync_drain(srv->b, SHUTDOWN_DRAIN_MS);
    wr_loop_signal_del(srv->lp, SIGTERM, on_stop_signal, srv);
    wr_loop_signal_del(srv->lp, SIGINT, on_stop_signal, srv);
    wr_loop_signal_del(srv->lp, SIGHUP, on_hup, srv);
    return rc;
}

void wr_server_stop(struct wr_server *srv)
{
    wr_loop_stop(srv->lp);
}

void wr_server_free(struct wr_server *srv)
{
    if (!srv)
        return;
    wr_broker_free(srv->b);
    wr_loop_free(srv->lp);
    free(srv);
}

struct wr_broker *wr_server_broker(const struct wr_server *srv) { return srv->b; }
struct wr_loop *wr_server_loop(const struct wr_server *srv) { return srv->lp; }
