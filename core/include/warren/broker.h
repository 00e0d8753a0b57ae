/*
 * broker.h: the broker model that transports drive: vhosts, exchanges, queues, bindings,
 * publish, push consumers with prefetch, ack / nack / reject, and users.
 *
 * Names follow RabbitMQ. Every vhost starts with the exchanges RabbitMQ predeclares: the
 * default exchange "" (direct; every queue is bound to it by its own name), amq.direct,
 * amq.fanout, amq.topic, amq.headers and amq.match. Exchange types and storage backends are
 * plugins, found by name among those the broker loaded.
 *
 * Thread: the loop thread, always. Deliveries to consumers happen from a deferred task after
 * the publish or ack that made them possible, never inside the caller's stack.
 */
#ifndef WARREN_BROKER_H
#define WARREN_BROKER_H

#include <stdbool.h>
#include <stdint.h>

#include "warren/error.h"
#include "warren/export.h"
#include "warren/msg.h"
#include "warren/plugin.h"
#include "warren/storage.h"
#include "warren/transport.h"
#include "warren/value.h"

WR_BEGIN_DECLS

struct wr_loop;
struct wr_broker;
struct wr_vhost;
struct wr_exchange;
struct wr_queue;
struct wr_consumer;

/* ---- broker and plugins ------------------------------------------------------------- */

/* A broker on lp with no vhosts and no plugins. data_dir is where storage plugins keep
 * files (each queue gets a directory below it). */
WR_API int wr_broker_new(struct wr_loop *lp, const char *data_dir, struct wr_broker **out,
                         struct wr_error *err);
/* Stops transports, deletes every vhost (closing queues' storage), then closes the plugins
 * in reverse load order. Accepts NULL. */
WR_API void wr_broker_free(struct wr_broker *b);

WR_API struct wr_loop *wr_broker_loop(const struct wr_broker *b);

/* Loads a plugin: from path if it is not NULL, else the first dirs[i]/NAME.so that exists
 * (dirs is NULL-terminated). Refuses with a message naming the file: a file that does not
 * load, a missing wr_plugin_entry, another ABI major or a newer minor, a descriptor whose
 * size is too small, a kind other than want_kind (0: any), a name other than name (when
 * name is not NULL) and a name already loaded. On success the plugin is the broker's. */
WR_API int wr_broker_load_plugin(struct wr_broker *b, const char *name, const char *path,
                                 const char *const *dirs, enum wr_plugin_kind want_kind,
                                 struct wr_plugin_ctx **out, struct wr_error *err);
/* A loaded plugin by name and kind (0: any kind), or NULL. */
WR_API struct wr_plugin_ctx *wr_broker_plugin(const struct wr_broker *b, const char *name,
                                              enum wr_plugin_kind kind);

/* Starts a listener of a loaded transport plugin. It is stopped by wr_broker_stop_listeners
 * or wr_broker_free. */
WR_API int wr_broker_listen(struct wr_broker *b, const char *transport,
                            const struct wr_listener_args *args, struct wr_error *err);
/* The port the n-th listener bound (0-based, in start order), or 0. */
WR_API uint16_t wr_broker_listener_port(const struct wr_broker *b, unsigned n);
/* Gracefully stops every listener, in reverse start order. */
WR_API void wr_broker_stop_listeners(struct wr_broker *b);

/* ---- memory alarm ------------------------------------------------------------------ */

/* Raises the memory alarm while the bytes held by live messages (wr_msg_bytes_live) are at
 * or above bytes; 0 turns it off. The broker checks on every publish and every 50 ms. */
WR_API void wr_broker_set_memory_high_watermark(struct wr_broker *b, uint64_t bytes);
WR_API bool wr_broker_memory_alarm(const struct wr_broker *b);

struct wr_alarm_watch;
/* cb(data, raised) runs on the loop whenever the alarm is raised or cleared (never inside
 * wr_publish's stack). Transports use it for AMQP connection.blocked / unblocked. */
typedef void wr_alarm_cb(void *data, bool raised);
WR_API struct wr_alarm_watch *wr_broker_alarm_watch(struct wr_broker *b, wr_alarm_cb *cb,
                                                    void *data);
WR_API void wr_broker_alarm_unwatch(struct wr_alarm_watch *w);

/* ---- durability barrier ------------------------------------------------------------ */

struct wr_sync;
/* Publisher confirms: cb(data, status) runs on the loop, never inside this call, once every
 * message stored and every ack made so far, in any queue, is as durable as its queue is
 * configured (group commit: one barrier covers a whole batch). A transport confirms every
 * publish it made before the call. Returns a handle for wr_sync_cancel, or NULL out of
 * memory. */
WR_API struct wr_sync *wr_broker_sync(struct wr_broker *b, wr_storage_sync_cb *cb, void *data);
/* The callback will not run (the connection went away). Only before it ran. */
WR_API void wr_sync_cancel(struct wr_sync *s);

/* ---- users ------------------------------------------------------------------------- */

WR_API int wr_broker_user_add(struct wr_broker *b, const char *name, const char *password,
                              const char *const *vhosts, struct wr_error *err);
/* True when name exists and password matches. */
WR_API bool wr_broker_authenticate(const struct wr_broker *b, const char *name,
                                   const char *password);
/* True when user may use vhost. */
WR_API bool wr_broker_user_may_access(const struct wr_broker *b, const char *user,
                                      const char *vhost);
/* Lets user (or not) declare exchanges whose type runs user code, such as `lua`: a script runs
 * inside the broker, so users may not until allowed. WR_ENOTFOUND for an unknown user. */
WR_API int wr_broker_user_allow_scripts(struct wr_broker *b, const char *user, bool allow,
                                        struct wr_error *err);
/* True when user may declare an exchange of exchange_type: always, unless the type runs user
 * code and the user is not allowed to run scripts. */
WR_API bool wr_broker_user_may_declare(const struct wr_broker *b, const char *user,
                                       const char *exchange_type);

/* ---- vhosts ------------------------------------------------------------------------ */

/* Adds a vhost with the predeclared exchanges. Their types (direct, fanout, topic, headers)
 * must be loaded. WR_EEXIST if it exists. */
WR_API int wr_vhost_add(struct wr_broker *b, const char *name, struct wr_vhost **out,
                        struct wr_error *err);
WR_API struct wr_vhost *wr_vhost_find(const struct wr_broker *b, const char *name);
WR_API const char *wr_vhost_name(const struct wr_vhost *vh);

/* What a queue declared by a client (not in the config) is stored in, by the transport's
 * reading of the declaration: RabbitMQ users expect durable queues to survive a restart. */
enum wr_storage_role {
    WR_ROLE_DURABLE = 0,  /* default: "queue" when loaded, else "memory" */
    WR_ROLE_TRANSIENT,    /* default: "memory" */
    WR_ROLE_STREAM,       /* default: "log"; NULL when no log storage is loaded */
    WR_ROLE_COUNT
};
/* Overrides a role's storage in this vhost (the config's amqp_storage). WR_ENOTFOUND: no
 * storage plugin of that name is loaded; WR_EINVAL: a stream needs a log-model storage and
 * the others a queue-model one. */
WR_API int wr_vhost_set_storage(struct wr_vhost *vh, enum wr_storage_role role,
                                const char *storage, struct wr_error *err);
WR_API const char *wr_vhost_storage(const struct wr_vhost *vh, enum wr_storage_role role);

/* ---- exchanges --------------------------------------------------------------------- */

struct wr_exchange_decl {
    const char *name;
    const char *type;             /* an exchange plugin's name */
    bool durable;
    bool auto_delete;             /* deleted when its last binding goes */
    bool internal;                /* clients may not publish to it directly */
    const struct wr_table *args;  /* passed to the plugin's create; may be NULL */
};

/* Declares an exchange; an existing one with equal properties is returned as it is.
 * Errors: WR_EEXIST an exchange of that name differs (type, durable, auto_delete, internal);
 * WR_ENOTFOUND no exchange plugin of that type is loaded; WR_EPERM the name starts with
 * "amq." (reserved); WR_EINVAL the plugin refused the arguments. */
WR_API int wr_exchange_declare(struct wr_vhost *vh, const struct wr_exchange_decl *decl,
                               struct wr_exchange **out, struct wr_error *err);
WR_API struct wr_exchange *wr_exchange_find(const struct wr_vhost *vh, const char *name);
/* Deletes an exchange and every binding from and to it. WR_EBUSY when if_unused and it has
 * bindings from it; WR_EPERM for the predeclared ones. */
WR_API int wr_exchange_delete(struct wr_exchange *ex, bool if_unused, struct wr_error *err);
WR_API const char *wr_exchange_name(const struct wr_exchange *ex);
WR_API const char *wr_exchange_type(const struct wr_exchange *ex);
WR_API bool wr_exchange_is_internal(const struct wr_exchange *ex);
WR_API bool wr_exchange_is_durable(const struct wr_exchange *ex);
WR_API bool wr_exchange_is_auto_delete(const struct wr_exchange *ex);
/* The arguments the exchange was declared with; never NULL. */
WR_API const struct wr_table *wr_exchange_args(const struct wr_exchange *ex);

/* ---- queues ------------------------------------------------------------------------ */

struct wr_queue_decl {
    const char *name;             /* "" or NULL: the broker names it "amq.gen-..." */
    const char *storage;          /* a storage plugin's name; NULL: "memory" */
    bool durable;
    bool exclusive;               /* only owner may use it */
    bool auto_delete;             /* deleted when its last consumer goes */
    const void *owner;            /* the connection owning an exclusive queue */
    int64_t max_length;           /* -1: none */
    int64_t max_length_bytes;     /* -1: none */
    enum wr_overflow overflow;
    uint32_t partitions;          /* 0: 1 */
    int64_t message_ttl_ms;       /* x-message-ttl: messages expire this long after publish;
                                   * -1: none */
    int64_t expires_ms;           /* x-expires: the queue is deleted once unused (no
                                   * consumers, no get, no redeclare) this long; -1: none */
    const char *dead_letter_exchange;    /* x-dead-letter-exchange; NULL: none */
    const char *dead_letter_routing_key; /* NULL: the message's own routing key */
    uint8_t max_priority;         /* x-max-priority: 0 none; else messages are handed out
                                   * highest AMQP priority first (capped at this) */
    const struct wr_table *args;  /* declare arguments, kept as given; may be NULL */
    const struct wr_table *options; /* the storage plugin's options; may be NULL */
};

/* Initializes decl with RabbitMQ's defaults: no limits, no TTL, no expiry, no
 * dead-lettering, drop-head, memory storage. */
WR_API void wr_queue_decl_init(struct wr_queue_decl *decl, const char *name);

/* Declares a queue and binds it to the default exchange by its name; an existing one with
 * equal properties is returned. Errors: WR_EEXIST differs (durable, exclusive, auto_delete,
 * storage, limits); WR_EBUSY exclusive to another owner; WR_ENOTFOUND no such storage
 * plugin; WR_EPERM name starts with "amq."; others from the storage's open. */
WR_API int wr_queue_declare(struct wr_vhost *vh, const struct wr_queue_decl *decl,
                            struct wr_queue **out, struct wr_error *err);
WR_API struct wr_queue *wr_queue_find(const struct wr_vhost *vh, const char *name);
/* Deletes a queue: its bindings go, its consumers are cancelled (their cancelled op is
 * called), its messages are dropped; *count (may be NULL) gets how many were ready.
 * WR_EBUSY when if_unused and it has consumers, or if_empty and it has ready messages. */
WR_API int wr_queue_delete(struct wr_queue *q, bool if_unused, bool if_empty, uint64_t *count,
                           struct wr_error *err);
/* Drops the ready messages; returns how many. */
WR_API uint64_t wr_queue_purge(struct wr_queue *q);
WR_API uint64_t wr_queue_depth(const struct wr_queue *q);
WR_API uint64_t wr_queue_unacked(const struct wr_queue *q);
WR_API uint32_t wr_queue_consumer_count(const struct wr_queue *q);
/* The arguments the queue was declared with (AMQP's x-... table); never NULL. */
WR_API const struct wr_table *wr_queue_args(const struct wr_queue *q);
/* The storage options it was declared with (YAML options:, or what a transport derived from
 * its declaration); never NULL. */
WR_API const struct wr_table *wr_queue_options(const struct wr_queue *q);
/* Calls fn for every queue of vh, in no particular order; fn must not declare or delete
 * queues. Returns how many it visited. */
WR_API size_t wr_vhost_each_queue(struct wr_vhost *vh,
                                  void (*fn)(struct wr_queue *q, void *data), void *data);
WR_API const char *wr_queue_name(const struct wr_queue *q);
WR_API const void *wr_queue_owner(const struct wr_queue *q);
WR_API bool wr_queue_is_durable(const struct wr_queue *q);
/* A queue of a log-model storage (a stream): consumers read it by offset, records stay until
 * retention removes them; get, purge and requeue do not apply. */
WR_API bool wr_queue_is_log(const struct wr_queue *q);

/* ---- log queues by offset (Kafka topics) ---------------------------------------------- */

/* A log queue's partitions are a Kafka topic's; a transport that speaks offsets reads and
 * appends them directly. These are the storage's log-model ops (storage.h) with the queue's
 * bookkeeping: appends mark the queue for the next sync barrier (wr_broker_sync) and wake
 * its consumers and watchers. Errors: WR_EINVAL not a log queue or no such partition, and
 * the storage's own. */
WR_API uint32_t wr_queue_partitions(const struct wr_queue *q);
/* Grows log queue q to count partitions in all (Kafka's CreatePartitions: count is the new
 * total, not how many to add). The new partitions are empty; publishes hash over the new
 * count from now on, and offset readers see them at once. A queue kept in the definitions
 * store is recorded again with its new count. Errors: WR_EINVAL not a log, count not above
 * wr_queue_partitions(q), or a storage without add_partitions; WR_ENOTFOUND deleted; the
 * storage's and the definitions store's own. On an error the partitions the storage made
 * stay (they are on disk, and the log keeps them at its next open), and
 * wr_queue_partitions(q) counts them. */
WR_API int wr_queue_add_partitions(struct wr_queue *q, uint32_t count, struct wr_error *err);
WR_API int wr_queue_append_batch(struct wr_queue *q, uint32_t partition, uint8_t *batch,
                                 size_t len, uint64_t *base_offset, struct wr_error *err);
WR_API int wr_queue_read(struct wr_queue *q, uint32_t partition, uint64_t offset,
                         size_t max_bytes, struct wr_log_slice *out, struct wr_error *err);
WR_API int wr_queue_offsets(const struct wr_queue *q, uint32_t partition, uint64_t *earliest,
                            uint64_t *latest);
WR_API int wr_queue_offset_for_time(struct wr_queue *q, uint32_t partition, int64_t ts_ms,
                                    uint64_t *offset, int64_t *timestamp);

/* Long polling: cb(q, data) runs from a deferred task after appends to q (once per turn of
 * the loop however many there were), and once when q is deleted (wr_queue_is_deleted tells),
 * until the watch is cancelled. Cancelling inside cb is allowed. NULL out of memory. */
struct wr_queue_watch;
typedef void wr_queue_watch_cb(struct wr_queue *q, void *data);
WR_API struct wr_queue_watch *wr_queue_watch(struct wr_queue *q, wr_queue_watch_cb *cb,
                                             void *data);
WR_API void wr_queue_unwatch(struct wr_queue_watch *w);
WR_API bool wr_queue_is_auto_delete(const struct wr_queue *q);
WR_API bool wr_queue_is_exclusive(const struct wr_queue *q);

/* A queue outlives its deletion while referenced: a transport holding delivery tags of a
 * queue takes a reference, and settling on a deleted queue answers WR_ENOTFOUND. */
WR_API struct wr_queue *wr_queue_ref(struct wr_queue *q);
WR_API void wr_queue_unref(struct wr_queue *q);
WR_API bool wr_queue_is_deleted(const struct wr_queue *q);

/* Deletes every queue of vh declared exclusive to owner (its connection closed). */
WR_API void wr_vhost_delete_owned(struct wr_vhost *vh, const void *owner);

/* ---- bindings ---------------------------------------------------------------------- */

/* Binds a queue (or an exchange) to ex with key and args; binding the same triple again is
 * a no-op. Errors: WR_EPERM binding to or from the default exchange; WR_EINVAL the exchange
 * plugin refused the arguments. */
WR_API int wr_bind_queue(struct wr_exchange *ex, struct wr_queue *q, const char *key,
                         const struct wr_table *args, struct wr_error *err);
WR_API int wr_bind_exchange(struct wr_exchange *src, struct wr_exchange *dst, const char *key,
                            const struct wr_table *args, struct wr_error *err);
/* Removes a binding; a missing one is not an error (RabbitMQ answers unbind-ok too). */
WR_API int wr_unbind_queue(struct wr_exchange *ex, struct wr_queue *q, const char *key,
                           const struct wr_table *args, struct wr_error *err);
WR_API int wr_unbind_exchange(struct wr_exchange *src, struct wr_exchange *dst,
                              const char *key, const struct wr_table *args,
                              struct wr_error *err);
/* Bindings from ex. */
WR_API uint32_t wr_exchange_binding_count(const struct wr_exchange *ex);

/* ---- publish ----------------------------------------------------------------------- */

/* Routes msg through ex (and the exchanges bound to it, each at most once) and stores it in
 * every matching queue, each at most once. msg is borrowed; queues take references.
 * Returns how many queues stored it (0 and *refused 0: unroutable, for AMQP's mandatory
 * flag), or a negative error: WR_ELIMIT when it exceeds the broker's maximum message size.
 * A queue that refuses it (reject-publish overflow) is not counted and does not fail the
 * publish; *refused (refused may be NULL) gets how many did, for publisher confirms' nack.
 *
 * Expiry: a message expires message_ttl_ms after msg->timestamp_ms in a queue with a TTL,
 * or after its AMQP expiration property (milliseconds as a decimal string), whichever is
 * sooner; expired messages are dropped from the head of the queue (dead-lettered if the queue
 * has a dead-letter exchange), as RabbitMQ does. */
WR_API int wr_publish(struct wr_exchange *ex, struct wr_msg *msg, uint32_t *refused,
                      struct wr_error *err);

/* Routes msg through ex as wr_publish would, without storing it: fills out[0..max) with the
 * distinct queues it reaches and returns how many there are (may exceed max). For
 * benchmarks, tests and tools. */
WR_API size_t wr_exchange_route(struct wr_exchange *ex, const struct wr_msg *msg,
                                struct wr_queue **out, size_t max);

/* Largest body accepted by wr_publish (bytes); default 128 MiB as RabbitMQ. */
WR_API void wr_broker_set_max_message_size(struct wr_broker *b, uint64_t bytes);
WR_API uint64_t wr_broker_max_message_size(const struct wr_broker *b);

/* ---- consumers --------------------------------------------------------------------- */

struct wr_delivery {
    struct wr_queue *q;
    struct wr_msg *msg;   /* borrowed: valid until settled, or until deliver returns */
    uint64_t tag;         /* the storage's tag: settle with it */
    bool redelivered;
};

struct wr_consumer_ops {
    uint32_t size; /* sizeof(struct wr_consumer_ops) */
    /* A message for the consumer. Unless no_ack, it stays unacked until settled. */
    void (*deliver)(struct wr_consumer *c, const struct wr_delivery *d, void *data);
    /* Optional: may the consumer take one more now? (channel-wide limits, socket
     * back-pressure). When it turns true again, call wr_consumer_kick(). */
    bool (*ready)(struct wr_consumer *c, void *data);
    /* Optional: the broker cancelled the consumer (its queue was deleted). The consumer is
     * freed right after this returns. */
    void (*cancelled)(struct wr_consumer *c, void *data);
};

/* Where a consumer of a log queue (a stream) starts reading: RabbitMQ's x-stream-offset. */
enum wr_stream_start {
    WR_STREAM_NEXT = 0,  /* what is appended from now on (RabbitMQ's default) */
    WR_STREAM_FIRST,     /* the first record kept */
    WR_STREAM_LAST,      /* the last record appended */
    WR_STREAM_OFFSET,    /* stream_at, an offset (clamped into what is kept) */
    WR_STREAM_TIMESTAMP, /* the first record at or after stream_at, ms since the epoch */
};

struct wr_consume_args {
    uint32_t prefetch;  /* most unacked deliveries at once; 0: no limit */
    bool no_ack;        /* deliveries count as acked when sent */
    bool exclusive;     /* the only consumer of the queue */
    int32_t priority;   /* AMQP x-priority: a consumer gets messages only while no consumer
                         * of a higher priority can take one; equals share round-robin */
    enum wr_stream_start stream_start; /* log queues only: every consumer reads every record
                                        * of partition 0 from here on, in offset order */
    int64_t stream_at;
};

/* Starts pushing q's messages to a consumer, round-robin with the others of its priority.
 * Errors: WR_EBUSY the queue has an exclusive consumer, or exclusive was asked and it has
 * consumers. */
WR_API int wr_queue_consume(struct wr_queue *q, const struct wr_consumer_ops *ops,
                            const struct wr_consume_args *args, void *data,
                            struct wr_consumer **out, struct wr_error *err);
/* Settles one delivery. WR_ENOTFOUND: not unacked by this consumer. */
WR_API int wr_consumer_ack(struct wr_consumer *c, uint64_t tag, struct wr_error *err);
/* Negative ack (AMQP nack and reject): requeue at its original place with the redelivered
 * flag, or drop it (dead-lettered with reason "rejected" if the queue has a dead-letter
 * exchange). */
WR_API int wr_consumer_nack(struct wr_consumer *c, uint64_t tag, bool requeue,
                            struct wr_error *err);
/* Stops the consumer and frees it. With requeue_unacked its unacked deliveries go back to
 * the queue (redelivered); without it they stay unacked and the caller settles them with
 * wr_queue_ack / wr_queue_nack (AMQP keeps them until the channel closes). An auto-delete
 * queue whose last consumer this was is deleted. */
WR_API void wr_consumer_cancel(struct wr_consumer *c, bool requeue_unacked);
WR_API void wr_consumer_set_prefetch(struct wr_consumer *c, uint32_t prefetch);
/* The consumer may take more now (its ready op turned true): schedule a dispatch. */
WR_API void wr_consumer_kick(struct wr_consumer *c);
WR_API uint32_t wr_consumer_unacked(const struct wr_consumer *c);
WR_API struct wr_queue *wr_consumer_queue(const struct wr_consumer *c);

/* Pull one message (AMQP basic.get). WR_ENOTFOUND when none is ready. d->msg carries a
 * reference the caller drops with wr_msg_unref(). With no_ack it is acked at once. */
WR_API int wr_queue_get(struct wr_queue *q, bool no_ack, struct wr_delivery *d,
                        struct wr_error *err);
/* Settle a delivery not owned by a live consumer (basic.get, or a cancelled consumer's). */
WR_API int wr_queue_ack(struct wr_queue *q, uint64_t tag, struct wr_error *err);
WR_API int wr_queue_nack(struct wr_queue *q, uint64_t tag, bool requeue, struct wr_error *err);

WR_END_DECLS

#endif
