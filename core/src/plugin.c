/*
 * plugin.c: the plugin loader. A plugin is a shared object exporting one descriptor,
 * wr_plugin_entry. Loading checks, in order: the file loads with every symbol resolved
 * (RTLD_NOW), the descriptor exists, its ABI major matches and its minor is not newer than
 * ours, its size covers the fields we read, its kind is the one asked for, its name is the
 * one asked for and not loaded yet, and its ops table has the ops the kind needs. Each refusal
 * names the file and the reason, and unloads it.
 */
#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker_int.h"

const char *wr_plugin_kind_name(enum wr_plugin_kind kind)
{
    switch (kind) {
    case WR_PLUGIN_TRANSPORT: return "transport";
    case WR_PLUGIN_EXCHANGE: return "exchange type";
    case WR_PLUGIN_STORAGE: return "storage backend";
    }
    return "unknown kind";
}

const char *plugin_kind_article(enum wr_plugin_kind kind)
{
    return kind == WR_PLUGIN_EXCHANGE ? "an" : "a";
}

const char *wr_plugin_ctx_name(const struct wr_plugin_ctx *ctx) { return ctx->plugin->name; }
const char *wr_plugin_ctx_path(const struct wr_plugin_ctx *ctx) { return ctx->path; }
const struct wr_plugin *wr_plugin_ctx_plugin(const struct wr_plugin_ctx *ctx)
{
    return ctx->plugin;
}
struct wr_loop *wr_plugin_ctx_loop(const struct wr_plugin_ctx *ctx) { return ctx->broker->lp; }
struct wr_broker *wr_plugin_ctx_broker(const struct wr_plugin_ctx *ctx) { return ctx->broker; }
const char *wr_plugin_ctx_data_dir(const struct wr_plugin_ctx *ctx)
{
    return ctx->broker->data_dir;
}

/* Every ops table starts with its size: HAS_OP reads a member only within it. */
bool plugin_ops_fit(const void *ops, uint32_t need)
{
    return ops && *(const uint32_t *)ops >= need;
}

/* Names the first required op the table lacks, or NULL when it has them all. */
static const char *missing_op(const struct wr_plugin *p)
{
    const void *ops = p->ops;
    if (!ops)
        return "ops";
    switch (p->kind) {
    case WR_PLUGIN_EXCHANGE:
        if (!HAS_OP(ops, struct wr_exchange_ops, create)) return "create";
        if (!HAS_OP(ops, struct wr_exchange_ops, destroy)) return "destroy";
        if (!HAS_OP(ops, struct wr_exchange_ops, bind)) return "bind";
        if (!HAS_OP(ops, struct wr_exchange_ops, unbind)) return "unbind";
        if (!HAS_OP(ops, struct wr_exchange_ops, route)) return "route";
        return NULL;
    case WR_PLUGIN_STORAGE: {
        const struct wr_storage_ops *s = ops;
        if (!HAS_OP(ops, struct wr_storage_ops, open)) return "open";
        if (!HAS_OP(ops, struct wr_storage_ops, close)) return "close";
        if (s->model == WR_STORAGE_LOG) {
            if (!HAS_OP(ops, struct wr_storage_ops, append_batch)) return "append_batch";
            if (!HAS_OP(ops, struct wr_storage_ops, append_msgs)) return "append_msgs";
            if (!HAS_OP(ops, struct wr_storage_ops, read)) return "read";
            if (!HAS_OP(ops, struct wr_storage_ops, read_msgs)) return "read_msgs";
            if (!HAS_OP(ops, struct wr_storage_ops, offsets)) return "offsets";
            if (!HAS_OP(ops, struct wr_storage_ops, offset_for_time)) return "offset_for_time";
            return NULL;
        }
        if (s->model != WR_STORAGE_QUEUE)
            return "a model (WR_STORAGE_QUEUE or WR_STORAGE_LOG)";
        if (!HAS_OP(ops, struct wr_storage_ops, enqueue)) return "enqueue";
        if (!HAS_OP(ops, struct wr_storage_ops, next)) return "next";
        if (!HAS_OP(ops, struct wr_storage_ops, ack)) return "ack";
        if (!HAS_OP(ops, struct wr_storage_ops, requeue)) return "requeue";
        if (!HAS_OP(ops, struct wr_storage_ops, purge)) return "purge";
        if (!HAS_OP(ops, struct wr_storage_ops, depth)) return "depth";
        if (!HAS_OP(ops, struct wr_storage_ops, unacked)) return "unacked";
        return NULL;
    }
    case WR_PLUGIN_TRANSPORT:
        if (!HAS_OP(ops, struct wr_transport_ops, start)) return "start";
        if (!HAS_OP(ops, struct wr_transport_ops, stop)) return "stop";
        return NULL;
    }
    return "ops";
}

struct wr_plugin_ctx *wr_broker_plugin(const struct wr_broker *b, const char *name,
                                       enum wr_plugin_kind kind)
{
    for (struct wr_plugin_ctx *c = b->plugins; c; c = c->next)
        if (strcmp(c->plugin->name, name) == 0 && (!kind || c->plugin->kind == kind))
            return c;
    return NULL;
}

/* Finds dirs[i]/name.so; fills path. */
static int find_file(const char *name, const char *const *dirs, char *path, size_t len,
                     struct wr_error *err)
{
    char looked[WR_ERROR_MSG_MAX / 2] = "";
    size_t n = 0;
    for (size_t i = 0; dirs && dirs[i]; i++) {
        snprintf(path, len, "%s/%s.so", dirs[i], name);
        if (access(path, F_OK) == 0)
            return WR_OK;
        n += (size_t)snprintf(looked + n, n < sizeof looked ? sizeof looked - n : 0, "%s%s",
                              i ? ", " : "", dirs[i]);
        if (n >= sizeof looked)
            n = sizeof looked - 1;
    }
    return wr_error_set(err, WR_ENOTFOUND,
                        "plugin '%s' not found: no %s.so in the plugin directories (%s); "
                        "add its directory to broker.plugin_dirs or give its path",
                        name, name, looked[0] ? looked : "none configured");
}

static int check(const struct wr_broker *b, const char *file, const struct wr_plugin *p,
                 const char *name, enum wr_plugin_kind want, struct wr_error *err)
{
    if (p->abi_major != WR_ABI_MAJOR)
        return wr_error_set(err, WR_EABI,
                            "%s: built for plugin ABI %u.%u, this warren has ABI %u.%u; "
                            "rebuild the plugin against this warren's headers",
                            file, p->abi_major, p->abi_minor, WR_ABI_MAJOR, WR_ABI_MINOR);
    if (p->abi_minor > WR_ABI_MINOR)
        return wr_error_set(err, WR_EABI,
                            "%s: built for plugin ABI %u.%u, newer than this warren's %u.%u; "
                            "upgrade warren or rebuild the plugin",
                            file, p->abi_major, p->abi_minor, WR_ABI_MAJOR, WR_ABI_MINOR);
    if (p->size < offsetof(struct wr_plugin, ops) + sizeof p->ops)
        return wr_error_set(err, WR_EABI, "%s: plugin descriptor is %u bytes, need at least %zu",
                            file, p->size, offsetof(struct wr_plugin, ops) + sizeof p->ops);
    if (p->kind < WR_PLUGIN_TRANSPORT || p->kind > WR_PLUGIN_STORAGE)
        return wr_error_set(err, WR_EINVAL, "%s: unknown plugin kind %d", file, (int)p->kind);
    if (!p->name || !p->name[0])
        return wr_error_set(err, WR_EINVAL, "%s: the plugin descriptor has no name", file);
    if (want && p->kind != want)
        return wr_error_set(err, WR_EINVAL, "%s: plugin '%s' is %s %s, but %s %s is needed here",
                            file, p->name, plugin_kind_article(p->kind),
                            wr_plugin_kind_name(p->kind), plugin_kind_article(want),
                            wr_plugin_kind_name(want));
    if (name && strcmp(name, p->name) != 0)
        return wr_error_set(err, WR_EINVAL, "%s: the file holds plugin '%s', not '%s'", file,
                            p->name, name);
    struct wr_plugin_ctx *dup = wr_broker_plugin(b, p->name, 0);
    if (dup)
        return wr_error_set(err, WR_EEXIST, "%s: a plugin named '%s' is already loaded from %s",
                            file, p->name, dup->path);
    const char *missing = missing_op(p);
    if (missing)
        return wr_error_set(err, WR_EINVAL, "%s: plugin '%s' (%s) lacks the required op %s",
                            file, p->name, wr_plugin_kind_name(p->kind), missing);
    return WR_OK;
}

int wr_broker_load_plugin(struct wr_broker *b, const char *name, const char *path,
                          const char *const *dirs, enum wr_plugin_kind want_kind,
                          struct wr_plugin_ctx **out, struct wr_error *err)
{
    char found[4096];
    if (!path) {
        if (!name)
            return wr_error_set(err, WR_EINVAL, "a plugin needs a name or a path");
        int rc = find_file(name, dirs, found, sizeof found, err);
        if (rc != WR_OK)
            return rc;
        path = found;
    }
    dlerror();
    void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!dl)
        return wr_error_set(err, WR_EINVAL, "cannot load plugin %s: %s", path, dlerror());
    const struct wr_plugin *p = dlsym(dl, WR_PLUGIN_SYMBOL);
    if (!p) {
        dlclose(dl);
        return wr_error_set(err, WR_EINVAL,
                            "%s: no symbol %s: not a warren plugin (define it with "
                            "WR_PLUGIN_DEFINE)",
                            path, WR_PLUGIN_SYMBOL);
    }
    int rc = check(b, path, p, name, want_kind, err);
    struct wr_plugin_ctx *ctx = rc == WR_OK ? calloc(1, sizeof *ctx) : NULL;
    if (rc == WR_OK && (!ctx || !(ctx->path = strdup(path)))) {
        free(ctx);
        rc = wr_error_set(err, WR_ENOMEM, "out of memory loading %s", path);
    }
    if (rc != WR_OK) {
        dlclose(dl);
        return rc;
    }
    ctx->broker = b;
    ctx->plugin = p;
    ctx->dl = dl;
    ctx->prev = b->plugins_tail;
    if (b->plugins_tail)
        b->plugins_tail->next = ctx;
    else
        b->plugins = ctx;
    b->plugins_tail = ctx;
    wr_log(WR_LOG_DEBUG, "plugin", "loaded %s %s (%s) from %s", wr_plugin_kind_name(p->kind),
           p->name, p->version ? p->version : "?", path);
    if (out)
        *out = ctx;
    return WR_OK;
}

/* Unloads in reverse load order, so a plugin is never unloaded before one loaded after it
 * (which may use what it registered). WARREN_NO_DLCLOSE=1 keeps the code mapped, so a leak
 * report under a sanitizer can still name functions in plugins. */
void plugin_close_all(struct wr_broker *b)
{
    const char *keep = getenv("WARREN_NO_DLCLOSE");
    bool close_dl = !(keep && keep[0] == '1');
    for (struct wr_plugin_ctx *c = b->plugins_tail, *prev; c; c = prev) {
        prev = c->prev;
        if (close_dl)
            dlclose(c->dl);
        free(c->path);
        free(c);
    }
    b->plugins = b->plugins_tail = NULL;
}
