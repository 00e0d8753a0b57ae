/*
 * broker_int.h (internal): the broker model's structs, shared by broker.c (broker, users,
 * listeners, vhosts), plugin.c (the loader), exchange.c (exchanges, bindings, routing,
 * publish) and queue.c (queues, consumers, dispatch). Plugins never see these.
 */
#ifndef WARREN_BROKER_INT_H
#define WARREN_BROKER_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "map.h"
#include "warren/wr.h"

struct wr_plugin_ctx {
    struct wr_broker *broker;
    const struct wr_plugin *plugin;
    void *dl;            /* dlopen handle */
    char *path;
    struct wr_plugin_ctx *prev, *next; /* load order */
};

struct listener {
    struct wr_plugin_ctx *ctx;
    void *state;
};

struct user {
    char *name;
    char *password;
    char **vhosts;       /* NULL-terminated */
    bool scripts;        /* may declare exchanges that run user code */
};

struct wr_broker {
    struct wr_loop *lp;
    char *data_dir;
    struct wr_plugin_ctx *plugins, *plugins_tail;
    struct listener *listeners;
    unsigned n_listeners;
    struct user *users;
    size_t n_users;
    struct wr_vhost **vhosts;
    size_t n_vhosts;
    uint64_t max_message_size;
    uint64_t route_epoch;        /* marks destinations already in the current route set */
    struct wr_queue *dispatch;   /* queues waiting for a dispatch pass, singly linked */
    bool dispatch_deferred;
    int64_t dispatch_ms;         /* when the pending dispatch pass was scheduled */
    bool freeing;                /* wr_broker_free runs: no more dead letters */
    struct dead_letter *dead, *dead_tail; /* waiting to be republished (deadletter.c) */
    bool dead_deferred;
    struct wr_queue *dirty;      /* queues with writes not yet synced (sync.c) */
    struct wr_sync *syncs;       /* barriers waiting for their deferred completion */
    bool syncs_deferred;
    size_t n_syncs;              /* barriers made and not yet finished or freed */
    bool draining;               /* sync_drain is running the loop */
    uint64_t mem_high;           /* memory alarm (alarm.c); 0: off */
    bool mem_alarm;
    uint64_t mem_timer;
    struct wr_alarm_watch *watches;
    bool alarm_deferred;
    /* definitions.c */
    struct definitions *defs;    /* the durable topology store; NULL: not open */
    /* forward.c */
    bool forward_stopped;        /* shutdown began: forwarders start no new round */
};

struct wr_vhost {
    struct wr_broker *broker;
    char *name;
    struct map exchanges;        /* name -> struct wr_exchange */
    struct map queues;           /* name -> struct wr_queue */
    struct wr_exchange *default_ex;
    struct binding **bindex;     /* every binding, chained by hash of (src, dest, key) */
    size_t bindex_cap, bindex_count;
    char *storage[WR_ROLE_COUNT]; /* wr_vhost_set_storage; NULL: the default */
};

/* A binding, as the core owns it; the plugin sees the embedded struct wr_binding. */
struct binding {
    struct wr_binding pub;       /* first: plugins' pointers convert back */
    struct wr_exchange *src;
    struct wr_queue *q;          /* exactly one of q and dst is set */
    struct wr_exchange *dst;
    struct binding *prev, *next; /* in src's outgoing list */
    struct binding *in_prev, *in_next; /* in the destination's incoming list */
    char *key;
    struct wr_table *args;
    uint64_t hash;               /* of (src, dest, key), for the vhost's binding index */
    struct binding *hnext;       /* in the index's chain */
};

struct wr_exchange {
    struct wr_vhost *vh;
    char *name;
    struct wr_plugin_ctx *ctx;
    const struct wr_exchange_ops *ops;
    void *state;
    bool durable, auto_delete, internal, predeclared, deleting;
    bool routes_unbound;         /* its ops' route_unbound: asked even without bindings */
    struct wr_table *args;
    struct binding *out;         /* bindings from this exchange */
    uint32_t n_out;
    struct binding *in;          /* exchange-to-exchange bindings to this exchange */
    uint64_t mark;
};

struct wr_consumer {
    struct wr_queue *q;
    const struct wr_consumer_ops *ops;
    void *data;
    uint32_t prefetch;
    bool no_ack, exclusive;
    bool cancelled;              /* cancelled inside its own deliver: freed after it */
    int32_t priority;            /* x-priority */
    struct wr_idtable unacked;   /* the tags it holds unacked, as bare uint64_t keys */
    uint64_t offset;             /* log queues: the next offset this consumer reads */
};

struct wr_queue {
    struct wr_vhost *vh;
    char *name;
    uint32_t refs;
    bool deleted;
    struct wr_plugin_ctx *ctx;   /* storage plugin */
    const struct wr_storage_ops *ops;
    void *state;
    bool log;                    /* ops->model is WR_STORAGE_LOG */
    char *storage;
    bool durable, exclusive, auto_delete;
    const void *owner;
    int64_t max_length, max_length_bytes;
    enum wr_overflow overflow;
    uint32_t partitions;
    int64_t message_ttl_ms, expires_ms; /* -1: none */
    uint8_t max_priority;        /* x-max-priority; 0: none */
    char *dlx, *dlrk;            /* dead-letter exchange and routing key; NULL: none */
    uint64_t ttl_timer;          /* expires the head message; 0: not armed */
    int64_t ttl_at;              /* when ttl_timer fires, ms since the epoch */
    uint64_t expires_timer;      /* deletes the queue once unused (x-expires) */
    int64_t used_at;             /* last declare, get or consumer, ms since the epoch */
    bool dirty;                  /* on the broker's dirty list */
    struct wr_queue *dirty_next;
    struct wr_table *args;
    struct binding *in;          /* bindings to this queue */
    struct wr_consumer **consumers;
    uint32_t n_consumers, cap_consumers, rr;
    uint32_t n_prioritized;      /* consumers with an x-priority other than 0 */
    struct wr_consumer *delivering; /* the consumer whose deliver op is running */
    bool had_consumer;
    bool dispatch_pending;
    struct wr_queue_watch *watches; /* log queues: wr_queue_watch, newest first */
    bool notifying;              /* its watchers' callbacks run: unwatch only marks */
    bool appended;               /* appends since its watchers were last called */
    /* Log queues: publishes taken but not yet appended. They go to the storage as one batch
     * per partition at the end of the loop turn (log_flush), before any read of the log and
     * before a barrier syncs it, so a burst of publishes costs one write, not one each. */
    struct wr_msg **pending;
    uint32_t *pending_part;      /* the partition of each */
    uint32_t n_pending, cap_pending;
    size_t pending_bytes;        /* their sizes (msg->size) */
    int pending_failed;          /* an append of them failed: the next barrier fails */
    struct wr_queue *dispatch_next;
    uint64_t mark;
    /* definitions.c */
    struct wr_table *options;    /* the storage options it was declared with */
    char *dir;                   /* its storage's directory (wr_storage_args.dir) */
    /* forward.c */
    struct forward *forward;     /* log queues with forward_to: the forwarder; else NULL */
};

/* plugin.c */
void plugin_close_all(struct wr_broker *b);
bool plugin_ops_fit(const void *ops, uint32_t need);
/* "a" or "an", to go before wr_plugin_kind_name(kind). */
const char *plugin_kind_article(enum wr_plugin_kind kind);
/* An op exists when the plugin's table is long enough to hold it and it is not NULL. */
#define HAS_OP(ops, type, member)                                                             \
    (plugin_ops_fit(ops, offsetof(type, member) + sizeof(((type *)0)->member)) &&            \
     ((const type *)(ops))->member)

/* exchange.c */
/* Routes msg from ex and stores it, or the copy an exchange on the way made, in every queue
 * reached that keep (if not NULL) accepts. Returns how many took it; *refused (if not NULL)
 * counts the queues that refused. WR_ENOMEM. */
int exchange_store(struct wr_exchange *ex, struct wr_msg *msg,
                   bool (*keep)(const struct wr_queue *q, const struct wr_msg *msg),
                   uint32_t *refused, struct wr_error *err);
int exchange_create(struct wr_vhost *vh, const struct wr_exchange_decl *decl, bool predeclared,
                    struct wr_exchange **out, struct wr_error *err);
void exchange_free_all(struct wr_vhost *vh);
/* Removes one binding (plugin unbind, both lists), and auto-deletes its source exchange if it
 * was its last. */
void binding_remove(struct binding *bd);

/* Binds q to the default exchange by its name (done by every queue declare). */
int queue_bind_default(struct wr_queue *q, struct wr_error *err);

/* queue.c */
void queue_free_all(struct wr_vhost *vh);
void queue_schedule(struct wr_queue *q);
/* Drops pending dispatch work (the broker is being freed). */
void queue_dispatch_cancel(struct wr_broker *b);
/* Storage of a message into q by wr_publish: WR_OK, or WR_ELIMIT when refused. */
int queue_store(struct wr_queue *q, struct wr_msg *msg, struct wr_error *err);
/* Appends a log queue's pending publishes. Returns the first failure since the last call
 * (and forgets it), or WR_OK. */
int log_flush(struct wr_queue *q);
/* Wall-clock milliseconds since the epoch (message timestamps and TTLs use it). */
int64_t wall_ms(void);

/* deadletter.c */
/* Hands msg (a reference the caller gives up) to q's dead-letter exchange for reason
 * ("rejected", "expired", "maxlen"), later, from a deferred task; frees it if q has none. */
void dead_letter(struct wr_queue *q, struct wr_msg *msg, const char *reason);
/* Drops pending dead letters (the broker is being freed). */
void dead_letter_cancel(struct wr_broker *b);

/* fsync.c */
/* on: every interval-policy syncer runs its pending round now, and syncs each later request
 * at once as the always policy does, until called with off. For sync_drain. */
void fsync_hurry(bool on);

/* sync.c */
/* q took a write its storage may not have made durable yet. */
void sync_mark_dirty(struct wr_queue *q);
void sync_cancel_all(struct wr_broker *b);
/* At shutdown, before the listeners stop: runs the loop until every barrier made so far has
 * completed (so a transport answers what it took: Kafka's acks=all produce, AMQP confirms),
 * for at most timeout_ms, or until another stop signal. Connections stay open meanwhile, so
 * requests that arrive are served too. */
void sync_drain(struct wr_broker *b, uint64_t timeout_ms);

/* definitions.c: the durable topology in <data_dir>/definitions.log (docs/storage.md).
 * definitions_open replays the file into the broker (after the config's topology), rewrites
 * it compacted and starts recording; until then, and after definitions_close, every hook is
 * a no-op. Each hook records what is durable, before the change is visible to clients: a
 * declare hook runs once the object exists (the caller undoes it on failure), a delete or
 * unbind hook before anything is removed. Failure: WR_EIO with a message, also logged. */
int definitions_open(struct wr_broker *b, struct wr_error *err);
void definitions_close(struct wr_broker *b);
int definitions_exchange_declared(struct wr_exchange *ex, struct wr_error *err);
int definitions_exchange_deleted(struct wr_exchange *ex, struct wr_error *err);
int definitions_queue_declared(struct wr_queue *q, struct wr_error *err);
int definitions_queue_deleted(struct wr_queue *q, struct wr_error *err);
int definitions_bound(const struct binding *bd, struct wr_error *err);
int definitions_unbound(const struct binding *bd, struct wr_error *err);

/* forward.c: a log queue's forward_to (docs/storage.md#forwarding). forward_start makes q's
 * forwarder: it publishes every record of q to the exchange named exchange, partition by
 * partition in offset order, from the offsets recorded in q's directory. It goes with q.
 * WR_EINVAL (not a log), WR_EIO/WR_EPROTO (the offsets file), WR_ENOMEM. */
int forward_start(struct wr_queue *q, const char *exchange, struct wr_error *err);
/* At shutdown, before sync_drain: no new publishes, so the drain ends with every forwarder's
 * offsets recorded for what it published. */
void forward_stop_all(struct wr_broker *b);

/* alarm.c */
/* After a publish: raises the memory alarm if live message bytes crossed the watermark. */
void alarm_check(struct wr_broker *b);
void alarm_fini(struct wr_broker *b);

#endif
