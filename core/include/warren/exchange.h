/*
 * exchange.h: what an exchange-type plugin implements.
 *
 * The core owns bindings and destinations; a plugin only indexes bindings and, for a
 * message, names the ones that match with wr_route_add(). The core resolves them to queues
 * and exchanges, follows exchange-to-exchange bindings (cycle-safe) and delivers each queue
 * a message at most once, so a plugin may add the same destination twice without harm.
 *
 * All ops run on the loop thread. route must not allocate on the common path: it is the
 * broker's hottest code.
 */
#ifndef WARREN_EXCHANGE_H
#define WARREN_EXCHANGE_H

#include "warren/error.h"
#include "warren/export.h"
#include "warren/msg.h"
#include "warren/plugin.h"
#include "warren/value.h"

WR_BEGIN_DECLS

/* A binding from this exchange to a destination. Owned by the core; the pointer stays valid
 * from bind until unbind returns, so a plugin may keep it in its index. */
struct wr_binding {
    struct wr_str key;            /* NUL-terminated as well */
    const struct wr_table *args;  /* never NULL */
    void *plugin_data;            /* the plugin's own, e.g. parsed arguments; NULL at bind */
};

/* The name of the queue or exchange b leads to: stable across restarts, unlike b's address,
 * so a plugin that places bindings by hashing (consistent hashing) routes the same way each
 * run. */
WR_API const char *wr_binding_destination(const struct wr_binding *b);

/* The set a route call fills. */
struct wr_route;
struct wr_queue;

/* Names a matching binding. Cheap and allocation-free in the common case. */
WR_API void wr_route_add(struct wr_route *out, const struct wr_binding *b);

/* Names a queue directly, bound or not (an exchange whose routing names queues: see
 * route_unbound). A queue of another vhost must not be named. */
WR_API void wr_route_add_queue(struct wr_route *out, struct wr_queue *q);

/* Makes msg, a modified copy of the message being routed (its headers or routing key
 * changed; build it with wr_msg_new sharing the body slice), what the destinations this
 * route call adds from now on receive, and what exchanges it adds route further. The route
 * takes its own reference. Out of memory, the publish fails as a whole. */
WR_API void wr_route_use_msg(struct wr_route *out, struct wr_msg *msg);

struct wr_exchange_args {
    const char *vhost;
    const char *name;
    const struct wr_table *options; /* YAML options or AMQP declare arguments; never NULL */
};

struct wr_exchange_ops {
    uint32_t size; /* sizeof(struct wr_exchange_ops) */
    /* Makes the state of one exchange. Errors: WR_EINVAL for bad options (with a message). */
    int (*create)(struct wr_plugin_ctx *ctx, const struct wr_exchange_args *args, void **state,
                  struct wr_error *err);
    void (*destroy)(void *state);
    /* Indexes b. May refuse bad arguments with WR_EINVAL (AMQP turns it into 406). */
    int (*bind)(void *state, struct wr_binding *b, struct wr_error *err);
    /* Removes b from the index; frees b->plugin_data. */
    void (*unbind)(void *state, struct wr_binding *b);
    /* Adds every binding msg matches to out. */
    void (*route)(void *state, const struct wr_msg *msg, struct wr_route *out);
    /* Set (to any non-zero value) when route must be called even while the exchange has no
     * bindings: it names queues itself with wr_route_add_queue. */
    uintptr_t route_unbound;
    /* Set when the exchange runs code its declarer names (a script): a transport lets only
     * users allowed to run scripts declare one (wr_broker_user_may_declare). */
    uintptr_t runs_user_code;
};

WR_END_DECLS

#endif
