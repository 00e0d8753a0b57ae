/*
 * broker.c: the broker and its vhosts, users and listeners. A vhost is born with the
 * exchanges RabbitMQ predeclares; exchanges and queues live in exchange.c and queue.c.
 * Teardown order matters: listeners first (no more clients), then vhosts (queues close their
 * storage, exchanges their plugin state), then the plugins, in reverse load order.
 */
#include <stdlib.h>
#include <string.h>

#include "broker_int.h"

int wr_broker_new(struct wr_loop *lp, const char *data_dir, struct wr_broker **out,
                  struct wr_error *err)
{
    struct wr_broker *b = calloc(1, sizeof *b);
    if (!b || !(b->data_dir = strdup(data_dir ? data_dir : "./warren-data"))) {
        free(b);
        return wr_error_set(err, WR_ENOMEM, "out of memory creating the broker");
    }
    b->lp = lp;
    b->max_message_size = 128u << 20;
    *out = b;
    return WR_OK;
}

static void vhost_free(struct wr_vhost *vh)
{
    queue_free_all(vh);
    exchange_free_all(vh);
    map_fini(&vh->exchanges);
    map_fini(&vh->queues);
    free(vh->bindex);
    for (int i = 0; i < WR_ROLE_COUNT; i++)
        free(vh->storage[i]);
    free(vh->name);
    free(vh);
}

int wr_vhost_set_storage(struct wr_vhost *vh, enum wr_storage_role role, const char *storage,
                         struct wr_error *err)
{
    struct wr_plugin_ctx *ctx = wr_broker_plugin(vh->broker, storage, WR_PLUGIN_STORAGE);
    if (!ctx)
        return wr_error_set(err, WR_ENOTFOUND, "no storage plugin '%s' is loaded", storage);
    const struct wr_storage_ops *ops = ctx->plugin->ops;
    enum wr_storage_model want = role == WR_ROLE_STREAM ? WR_STORAGE_LOG : WR_STORAGE_QUEUE;
    if (ops->model != want)
        return wr_error_set(err, WR_EINVAL, "storage '%s' is not of the %s model that %s "
                            "queues need", storage, want == WR_STORAGE_LOG ? "log" : "queue",
                            role == WR_ROLE_STREAM ? "stream" : "durable and transient");
    char *copy = strdup(storage);
    if (!copy)
        return wr_error_set(err, WR_ENOMEM, "out of memory");
    free(vh->storage[role]);
    vh->storage[role] = copy;
    return WR_OK;
}

const char *wr_vhost_storage(const struct wr_vhost *vh, enum wr_storage_role role)
{
    if (vh->storage[role])
        return vh->storage[role];
    const char *name = role == WR_ROLE_STREAM ? "log" : role == WR_ROLE_DURABLE ? "queue"
                                                                                 : "memory";
    if (wr_broker_plugin(vh->broker, name, WR_PLUGIN_STORAGE))
        return name;
    return role == WR_ROLE_STREAM ? NULL : "memory";
}

void wr_broker_free(struct wr_broker *b)
{
    if (!b)
        return;
    /* First: what connections and teardown delete now (auto-delete queues whose consumers
     * go) is not deleted for good, as in RabbitMQ. */
    definitions_close(b);
    b->freeing = true; /* before the connections go: what they delete keeps its files */
    wr_broker_stop_listeners(b);
    queue_dispatch_cancel(b);
    dead_letter_cancel(b);
    alarm_fini(b);
    for (size_t i = 0; i < b->n_vhosts; i++)
        vhost_free(b->vhosts[i]);
    free(b->vhosts);
    sync_cancel_all(b);
    for (size_t i = 0; i < b->n_users; i++) {
        free(b->users[i].name);
        free(b->users[i].password);
        for (char **v = b->users[i].vhosts; v && *v; v++)
            free(*v);
        free(b->users[i].vhosts);
    }
    free(b->users);
    plugin_close_all(b);
    free(b->data_dir);
    free(b);
}

struct wr_loop *wr_broker_loop(const struct wr_broker *b) { return b->lp; }

void wr_broker_set_max_message_size(struct wr_broker *b, uint64_t bytes)
{
    b->max_message_size = bytes;
}

uint64_t wr_broker_max_message_size(const struct wr_broker *b)
{
    return b->max_message_size;
}

/* ---- listeners ---------------------------------------------------------------------- */

int wr_broker_listen(struct wr_broker *b, const char *transport,
                     const struct wr_listener_args *args, struct wr_error *err)
{
    struct wr_plugin_ctx *ctx = wr_broker_plugin(b, transport, WR_PLUGIN_TRANSPORT);
    if (!ctx)
        return wr_error_set(err, WR_ENOTFOUND, "no transport plugin '%s' is loaded", transport);
    struct listener *l = realloc(b->listeners, (b->n_listeners + 1) * sizeof *l);
    if (!l)
        return wr_error_set(err, WR_ENOMEM, "out of memory adding a listener");
    b->listeners = l;
    const struct wr_transport_ops *ops = ctx->plugin->ops;
    void *state = NULL;
    int rc = ops->start(ctx, args, &state, err);
    if (rc != WR_OK) {
        wr_error_wrap(err, "listener %s on %s:%u", transport, args->host ? args->host : "",
                      args->port);
        return rc;
    }
    l[b->n_listeners++] = (struct listener){ctx, state};
    return WR_OK;
}

uint16_t wr_broker_listener_port(const struct wr_broker *b, unsigned n)
{
    if (n >= b->n_listeners)
        return 0;
    const struct wr_transport_ops *ops = b->listeners[n].ctx->plugin->ops;
    if (!HAS_OP(ops, struct wr_transport_ops, port))
        return 0;
    return ops->port(b->listeners[n].state);
}

void wr_broker_stop_listeners(struct wr_broker *b)
{
    while (b->n_listeners) {
        struct listener *l = &b->listeners[--b->n_listeners];
        const struct wr_transport_ops *ops = l->ctx->plugin->ops;
        ops->stop(l->state);
    }
    free(b->listeners);
    b->listeners = NULL;
}

/* ---- users -------------------------------------------------------------------------- */

static const struct user *user_find(const struct wr_broker *b, const char *name)
{
    for (size_t i = 0; i < b->n_users; i++)
        if (strcmp(b->users[i].name, name) == 0)
            return &b->users[i];
    return NULL;
}

int wr_broker_user_add(struct wr_broker *b, const char *name, const char *password,
                       const char *const *vhosts, struct wr_error *err)
{
    if (user_find(b, name))
        return wr_error_set(err, WR_EEXIST, "user '%s' already exists", name);
    struct user *users = realloc(b->users, (b->n_users + 1) * sizeof *users);
    if (!users)
        return wr_error_set(err, WR_ENOMEM, "out of memory adding user '%s'", name);
    b->users = users;
    struct user *u = &users[b->n_users];
    size_t n = 0;
    while (vhosts && vhosts[n])
        n++;
    *u = (struct user){strdup(name), strdup(password), calloc(n + 1, sizeof(char *)), false};
    bool ok = u->name && u->password && u->vhosts;
    for (size_t i = 0; ok && i < n; i++)
        ok = (u->vhosts[i] = strdup(vhosts[i])) != NULL;
    if (!ok) {
        for (size_t i = 0; u->vhosts && i < n; i++)
            free(u->vhosts[i]);
        free(u->vhosts);
        free(u->name);
        free(u->password);
        return wr_error_set(err, WR_ENOMEM, "out of memory adding user '%s'", name);
    }
    b->n_users++;
    return WR_OK;
}

bool wr_broker_authenticate(const struct wr_broker *b, const char *name, const char *password)
{
    const struct user *u = user_find(b, name);
    return u && strcmp(u->password, password) == 0;
}

bool wr_broker_user_may_access(const struct wr_broker *b, const char *user, const char *vhost)
{
    const struct user *u = user_find(b, user);
    for (char **v = u ? u->vhosts : NULL; v && *v; v++)
        if (strcmp(*v, vhost) == 0)
            return true;
    return false;
}

int wr_broker_user_allow_scripts(struct wr_broker *b, const char *user, bool allow,
                                 struct wr_error *err)
{
    struct user *u = (struct user *)user_find(b, user);
    if (!u)
        return wr_error_set(err, WR_ENOTFOUND, "no user '%s'", user);
    u->scripts = allow;
    return WR_OK;
}

bool wr_broker_user_may_declare(const struct wr_broker *b, const char *user,
                                const char *exchange_type)
{
    const struct wr_plugin_ctx *ctx = wr_broker_plugin(b, exchange_type, WR_PLUGIN_EXCHANGE);
    if (!ctx || !HAS_OP(ctx->plugin->ops, struct wr_exchange_ops, runs_user_code))
        return true;
    const struct user *u = user_find(b, user);
    return u && u->scripts;
}

/* ---- vhosts ------------------------------------------------------------------------- */

/* The exchanges every RabbitMQ vhost has, by name and type. amq.rabbitmq.trace is the
 * internal exchange of RabbitMQ's firehose tracer: clients see it exist (a passive declare
 * succeeds, a publish is refused as internal), and nothing publishes to it here. */
static const struct {
    const char *name, *type;
    bool internal;
} predeclared[] = {
    {"", "direct", false},           {"amq.direct", "direct", false},
    {"amq.fanout", "fanout", false}, {"amq.topic", "topic", false},
    {"amq.headers", "headers", false}, {"amq.match", "headers", false},
    {"amq.rabbitmq.trace", "topic", true},
};

int wr_vhost_add(struct wr_broker *b, const char *name, struct wr_vhost **out,
                 struct wr_error *err)
{
    if (wr_vhost_find(b, name))
        return wr_error_set(err, WR_EEXIST, "vhost '%s' already exists", name);
    struct wr_vhost **all = realloc(b->vhosts, (b->n_vhosts + 1) * sizeof *all);
    if (!all)
        return wr_error_set(err, WR_ENOMEM, "out of memory adding vhost '%s'", name);
    b->vhosts = all;
    struct wr_vhost *vh = calloc(1, sizeof *vh);
    if (!vh || !(vh->name = strdup(name))) {
        free(vh);
        return wr_error_set(err, WR_ENOMEM, "out of memory adding vhost '%s'", name);
    }
    vh->broker = b;
    for (size_t i = 0; i < sizeof predeclared / sizeof predeclared[0]; i++) {
        struct wr_exchange_decl decl = {.name = predeclared[i].name,
                                        .type = predeclared[i].type,
                                        .durable = true,
                                        .internal = predeclared[i].internal};
        struct wr_exchange *ex;
        int rc = exchange_create(vh, &decl, true, &ex, err);
        if (rc != WR_OK) {
            wr_error_wrap(err, "vhost '%s': predeclared exchange '%s'", name, decl.name);
            vhost_free(vh);
            return rc;
        }
        if (!decl.name[0])
            vh->default_ex = ex;
    }
    b->vhosts[b->n_vhosts++] = vh;
    if (out)
        *out = vh;
    return WR_OK;
}

struct wr_vhost *wr_vhost_find(const struct wr_broker *b, const char *name)
{
    for (size_t i = 0; i < b->n_vhosts; i++)
        if (strcmp(b->vhosts[i]->name, name) == 0)
            return b->vhosts[i];
    return NULL;
}

const char *wr_vhost_name(const struct wr_vhost *vh) { return vh->name; }
