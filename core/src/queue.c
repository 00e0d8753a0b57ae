/*
 * queue.c: queues and push consumers.
 *
 * A queue's messages live in its storage plugin; this file adds what every backend shares:
 * consumers served round-robin within their prefetch, the unacked tags each consumer holds
 * (so they go back to the queue when it goes away), and dispatch. Dispatch never runs inside
 * the publish or ack that made it possible: the queue is put on the broker's dispatch list
 * and a deferred task serves every listed queue before the loop next sleeps, so a burst of
 * publishes becomes one pass and one write per connection.
 */
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "broker_int.h"

/* ---- queues ------------------------------------------------------------------------- */

static void queue_destroy(struct wr_queue *q);
static void log_settle(const struct wr_queue *q);
static void queue_expires_fire(struct wr_loop *lp, void *data);
static void watchers_notify(struct wr_queue *q, bool detach);

void wr_queue_decl_init(struct wr_queue_decl *decl, const char *name)
{
    *decl = (struct wr_queue_decl){.name = name,
                                   .max_length = -1,
                                   .max_length_bytes = -1,
                                   .overflow = WR_OVERFLOW_DROP_HEAD,
                                   .partitions = 1,
                                   .message_ttl_ms = -1,
                                   .expires_ms = -1};
}

/* A file-system-safe form of a name: bytes outside [A-Za-z0-9._-] become %XX, so vhost "/"
 * is "%2F" and no name can climb out of the data directory. */
static void path_escape(char *out, size_t len, const char *name)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)name; *p && n + 4 < len; p++) {
        bool safe = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                    (*p >= '0' && *p <= '9') || *p == '_' || *p == '-' ||
                    (*p == '.' && p != (const unsigned char *)name);
        if (safe) {
            out[n++] = (char)*p;
        } else {
            out[n++] = '%';
            out[n++] = hex[*p >> 4];
            out[n++] = hex[*p & 15];
        }
    }
    out[n] = '\0';
}

/* A message max-length pushed out of the queue. */
static void storage_dropped(void *owner, struct wr_msg *msg)
{
    dead_letter(owner, msg, "maxlen");
}

/* A 64-bit mixer (splitmix's finalizer shape): successive counters give unrelated bits. */
static uint64_t mix64(uint64_t t)
{
    t ^= t >> 31;
    t *= 0x7fb5d329728ea185ULL;
    t ^= t >> 27;
    return t;
}

/* "amq.gen-" and 22 URL-safe base64 characters of randomness, as RabbitMQ names them. */
static void gen_name(char out[32])
{
    static const char b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char rnd[22];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
        static uint64_t counter;
        for (size_t i = 0; i < sizeof rnd; i++)
            rnd[i] = (unsigned char)(mix64(++counter) >> 8);
    }
    memcpy(out, "amq.gen-", 8);
    for (size_t i = 0; i < sizeof rnd; i++)
        out[8 + i] = b64[rnd[i] & 63];
    out[30] = '\0';
}

static bool same_str(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

static int queue_equivalent(const struct wr_queue *q, const struct wr_queue_decl *d,
                            const char *storage, struct wr_error *err)
{
    const char *what = NULL;
    if (q->durable != d->durable)
        what = "durable";
    else if (q->auto_delete != d->auto_delete)
        what = "auto_delete";
    else if (q->exclusive != d->exclusive)
        what = "exclusive";
    else if (strcmp(q->storage, storage) != 0)
        what = "storage (x-queue-type)";
    else if (q->max_length != d->max_length)
        what = "max_length (x-max-length)";
    else if (q->max_length_bytes != d->max_length_bytes)
        what = "max_length_bytes (x-max-length-bytes)";
    else if (q->overflow != d->overflow)
        what = "overflow (x-overflow)";
    else if (q->message_ttl_ms != d->message_ttl_ms)
        what = "x-message-ttl";
    else if (q->expires_ms != d->expires_ms)
        what = "x-expires";
    else if (!same_str(q->dlx, d->dead_letter_exchange))
        what = "x-dead-letter-exchange";
    else if (!same_str(q->dlrk, d->dead_letter_routing_key))
        what = "x-dead-letter-routing-key";
    else if (q->max_priority != d->max_priority)
        what = "x-max-priority";
    if (what)
        return wr_error_set(err, WR_EEXIST,
                            "inequivalent arg '%s' for queue '%s' in vhost '%s': it exists "
                            "with another value",
                            what, q->name, q->vh->name);
    return WR_OK;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0 && errno != ENOENT)
        wr_log(WR_LOG_WARN, "queue", "cannot remove %s of a deleted queue: %s", path,
               strerror(errno));
    return 0;
}

/* Removes dir and everything below it; a directory that does not exist is fine. */
static void remove_tree(const char *dir)
{
    if (nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0 && errno != ENOENT)
        wr_log(WR_LOG_WARN, "queue", "cannot remove %s of a deleted queue: %s", dir,
               strerror(errno));
}

static void queue_release(struct wr_queue *q)
{
    free(q->dir);
    free(q->dlx);
    free(q->dlrk);
    wr_table_free(q->args);
    wr_table_free(q->options);
    free(q->consumers);
    free(q->pending);
    free(q->pending_part);
    free(q->storage);
    free(q->name);
    free(q);
}

int wr_queue_declare(struct wr_vhost *vh, const struct wr_queue_decl *decl,
                     struct wr_queue **out, struct wr_error *err)
{
    const char *storage = decl->storage ? decl->storage : "memory";
    char generated[32];
    const char *name = decl->name;
    if (!name || !name[0]) {
        do
            gen_name(generated);
        while (wr_queue_find(vh, generated));
        name = generated;
    } else if (strncmp(name, "amq.", 4) == 0) {
        return wr_error_set(err, WR_EPERM,
                            "queue name '%s' contains reserved prefix 'amq.'", name);
    }
    struct wr_queue *q = wr_queue_find(vh, name);
    if (q) {
        if (q->exclusive && q->owner != decl->owner)
            return wr_error_set(err, WR_EBUSY,
                                "cannot obtain exclusive access to locked queue '%s' in "
                                "vhost '%s'",
                                name, vh->name);
        int rc = queue_equivalent(q, decl, storage, err);
        if (rc == WR_OK)
            q->used_at = wall_ms();
        if (rc == WR_OK && out)
            *out = q;
        return rc;
    }
    struct wr_plugin_ctx *ctx = wr_broker_plugin(vh->broker, storage, WR_PLUGIN_STORAGE);
    if (!ctx)
        return wr_error_set(err, WR_ENOTFOUND,
                            "queue '%s': unknown storage '%s' (no storage plugin of that name "
                            "is loaded)",
                            name, storage);
    q = calloc(1, sizeof *q);
    if (!q || !(q->name = strdup(name)) || !(q->storage = strdup(storage)) ||
        !(q->args = wr_table_dup(decl->args)) || !(q->options = wr_table_dup(decl->options)) ||
        (decl->dead_letter_exchange && !(q->dlx = strdup(decl->dead_letter_exchange))) ||
        (decl->dead_letter_routing_key && !(q->dlrk = strdup(decl->dead_letter_routing_key)))) {
        if (q)
            queue_release(q);
        return wr_error_set(err, WR_ENOMEM, "out of memory declaring queue '%s'", name);
    }
    q->vh = vh;
    q->refs = 1;
    q->ctx = ctx;
    q->ops = ctx->plugin->ops;
    q->log = q->ops->model == WR_STORAGE_LOG;
    q->durable = decl->durable;
    q->exclusive = decl->exclusive;
    q->auto_delete = decl->auto_delete;
    q->owner = decl->owner;
    q->max_length = decl->max_length;
    q->max_length_bytes = decl->max_length_bytes;
    q->overflow = decl->overflow;
    q->partitions = decl->partitions ? decl->partitions : 1;
    q->message_ttl_ms = decl->message_ttl_ms;
    q->max_priority = decl->max_priority;
    q->expires_ms = decl->expires_ms;
    q->used_at = wall_ms();

    char vdir[256], qdir[768], dir[4096];
    path_escape(vdir, sizeof vdir, vh->name);
    path_escape(qdir, sizeof qdir, q->name);
    snprintf(dir, sizeof dir, "%s/%s/%s", vh->broker->data_dir, vdir, qdir);
    if (!(q->dir = strdup(dir))) {
        queue_release(q);
        return wr_error_set(err, WR_ENOMEM, "out of memory declaring queue '%s'", name);
    }
    static const struct wr_table no_options = {0, NULL};
    struct wr_storage_args args = {
        .vhost = vh->name,
        .queue = q->name,
        .dir = dir,
        .durable = q->durable,
        .max_length = q->max_length,
        .max_length_bytes = q->max_length_bytes,
        .overflow = q->overflow,
        .max_priority = q->max_priority,
        .partitions = q->partitions,
        .options = decl->options ? decl->options : &no_options,
        .dropped = storage_dropped,
        .owner = q,
    };
    int rc = q->ops->open(ctx, &args, &q->state, err);
    if (rc != WR_OK) {
        wr_error_wrap(err, "queue '%s' (storage %s)", q->name, storage);
        queue_release(q);
        return rc;
    }
    /* A log keeps every partition it finds on disk (it grew before a restart), which can be
     * more than declared: serve them all. */
    if (q->log && HAS_OP(q->ops, struct wr_storage_ops, add_partitions))
        q->ops->add_partitions(q->state, q->partitions, &q->partitions, NULL);
    if (map_put(&vh->queues, q->name, q) != 0) {
        q->ops->close(q->state);
        queue_release(q);
        return wr_error_set(err, WR_ENOMEM, "out of memory declaring queue '%s'", name);
    }
    rc = queue_bind_default(q, err);
    if (rc != WR_OK) {
        map_del(&vh->queues, q->name);
        q->ops->close(q->state);
        queue_release(q);
        return rc;
    }
    if ((rc = definitions_queue_declared(q, err)) != WR_OK) {
        queue_destroy(q); /* not on disk: not declared either */
        return rc;
    }
    if (q->expires_ms >= 0)
        q->expires_timer = wr_loop_timer_add(vh->broker->lp, (uint64_t)q->expires_ms,
                                             queue_expires_fire, q);
    /* AMQP clients declare durable queues by habit; say when nothing will survive. */
    if (q->durable && strcmp(storage, "memory") == 0)
        wr_log(WR_LOG_WARN, "queue",
               "queue '%s' in vhost '%s' is durable, but its storage '%s' keeps nothing "
               "across a restart",
               q->name, vh->name, storage);
    if (out)
        *out = q;
    return WR_OK;
}

struct wr_queue *wr_queue_find(const struct wr_vhost *vh, const char *name)
{
    return map_get(&vh->queues, name);
}

struct wr_queue *wr_queue_ref(struct wr_queue *q)
{
    q->refs++;
    return q;
}

void wr_queue_unref(struct wr_queue *q)
{
    if (q && --q->refs == 0)
        queue_release(q);
}

static void consumer_free(struct wr_consumer *c)
{
    wr_idtable_fini(&c->unacked);
    free(c);
}

/* Takes q out of the broker: consumers cancelled, bindings removed, storage closed. The
 * struct stays while references remain. */
static void queue_destroy(struct wr_queue *q)
{
    if (q->vh->broker->freeing)
        log_settle(q); /* at shutdown, publishes taken are appended: the next start has them */
    definitions_queue_deleted(q, NULL); /* auto-delete, x-expires: logged if it fails */
    q->deleted = true;
    struct wr_loop *lp = q->vh->broker->lp;
    if (q->ttl_timer)
        wr_loop_timer_del(lp, q->ttl_timer);
    if (q->expires_timer)
        wr_loop_timer_del(lp, q->expires_timer);
    q->ttl_timer = q->expires_timer = 0;
    while (q->n_consumers) {
        struct wr_consumer *c = q->consumers[--q->n_consumers];
        if (HAS_OP(c->ops, struct wr_consumer_ops, cancelled))
            c->ops->cancelled(c, c->data);
        if (q->delivering == c)
            c->cancelled = true; /* freed once its deliver returns */
        else
            consumer_free(c);
    }
    while (q->in)
        binding_remove(q->in);
    map_del(&q->vh->queues, q->name);
    /* A deleted queue's pending publishes go with it (at shutdown they were appended). */
    for (uint32_t i = 0; i < q->n_pending; i++)
        wr_msg_unref(q->pending[i]);
    q->n_pending = 0;
    q->pending_bytes = 0;
    watchers_notify(q, true);
    q->ops->close(q->state);
    q->state = NULL;
    /* A deleted queue's files go with it, or a queue declared later by the same name would
     * find its messages. Not at shutdown: then the files are what the next start recovers. */
    if (!q->vh->broker->freeing)
        remove_tree(q->dir);
    wr_queue_unref(q);
}

int wr_queue_delete(struct wr_queue *q, bool if_unused, bool if_empty, uint64_t *count,
                    struct wr_error *err)
{
    if (q->deleted)
        return wr_error_set(err, WR_ENOTFOUND, "queue '%s' was deleted", q->name);
    if (if_unused && q->n_consumers)
        return wr_error_set(err, WR_EBUSY, "queue '%s' in vhost '%s' in use", q->name,
                            q->vh->name);
    uint64_t depth = wr_queue_depth(q);
    if (if_empty && depth)
        return wr_error_set(err, WR_EBUSY, "queue '%s' in vhost '%s' is not empty", q->name,
                            q->vh->name);
    int rc = definitions_queue_deleted(q, err);
    if (rc != WR_OK)
        return rc;
    if (count)
        *count = depth;
    queue_destroy(q);
    return WR_OK;
}

void queue_free_all(struct wr_vhost *vh)
{
    size_t n = 0;
    struct wr_queue **all = malloc((vh->queues.count + 1) * sizeof *all);
    for (size_t i = 0; all && i < vh->queues.cap; i++)
        if (vh->queues.slots[i].key)
            all[n++] = vh->queues.slots[i].val;
    for (size_t i = 0; i < n; i++)
        all[i]->auto_delete = false; /* teardown: no cascades */
    for (size_t i = 0; i < n; i++)
        queue_destroy(all[i]);
    free(all);
}

void wr_vhost_delete_owned(struct wr_vhost *vh, const void *owner)
{
    size_t n = 0;
    struct wr_queue **owned = malloc((vh->queues.count + 1) * sizeof *owned);
    if (!owned) {
        wr_log(WR_LOG_ERROR, "queue", "out of memory deleting a connection's exclusive queues");
        return;
    }
    for (size_t i = 0; i < vh->queues.cap; i++) {
        struct wr_queue *q = vh->queues.slots[i].val;
        if (vh->queues.slots[i].key && q->exclusive && q->owner == owner)
            owned[n++] = q;
    }
    for (size_t i = 0; i < n; i++)
        queue_destroy(owned[i]);
    free(owned);
}

uint64_t wr_queue_purge(struct wr_queue *q)
{
    return q->deleted || q->log ? 0 : q->ops->purge(q->state);
}

/* A log's depth is the records it keeps, over every partition. */
uint64_t wr_queue_depth(const struct wr_queue *q)
{
    if (q->deleted)
        return 0;
    if (!q->log)
        return q->ops->depth(q->state);
    log_settle(q);
    uint64_t total = 0;
    for (uint32_t p = 0; p < q->partitions; p++) {
        uint64_t first = 0, latest = 0;
        q->ops->offsets(q->state, p, &first, &latest);
        total += latest - first;
    }
    return total;
}

uint64_t wr_queue_unacked(const struct wr_queue *q)
{
    return q->deleted || q->log ? 0 : q->ops->unacked(q->state);
}

uint32_t wr_queue_consumer_count(const struct wr_queue *q) { return q->n_consumers; }
const struct wr_table *wr_queue_args(const struct wr_queue *q) { return q->args; }

const struct wr_table *wr_queue_options(const struct wr_queue *q)
{
    static const struct wr_table none = {0, NULL};
    return q->options ? q->options : &none;
}

size_t wr_vhost_each_queue(struct wr_vhost *vh, void (*fn)(struct wr_queue *q, void *data),
                           void *data)
{
    size_t n = 0;
    for (size_t i = 0; i < vh->queues.cap; i++)
        if (vh->queues.slots[i].key) {
            fn(vh->queues.slots[i].val, data);
            n++;
        }
    return n;
}
bool wr_queue_is_auto_delete(const struct wr_queue *q) { return q->auto_delete; }
bool wr_queue_is_exclusive(const struct wr_queue *q) { return q->exclusive; }
const char *wr_queue_name(const struct wr_queue *q) { return q->name; }
const void *wr_queue_owner(const struct wr_queue *q) { return q->owner; }
bool wr_queue_is_durable(const struct wr_queue *q) { return q->durable; }
bool wr_queue_is_log(const struct wr_queue *q) { return q->log; }
bool wr_queue_is_deleted(const struct wr_queue *q) { return q->deleted; }

/* ---- expiry: message TTL and queue x-expires --------------------------------------- */

/* When msg expires in q (ms since the epoch), or INT64_MAX: the queue's x-message-ttl or the
 * message's expiration property, whichever comes first. The transport rejects malformed
 * expirations at publish; one that is not a number here never expires. */
static int64_t msg_expiry(const struct wr_queue *q, const struct wr_msg *m)
{
    int64_t at = INT64_MAX;
    /* Saturates: a TTL of years is "never", not an overflow. */
    if (q->message_ttl_ms >= 0 && q->message_ttl_ms < INT64_MAX - m->timestamp_ms)
        at = m->timestamp_ms + q->message_ttl_ms;
    const struct wr_str *e = &m->props.expiration;
    if (e->ptr && e->len > 0 && e->len < 19) {
        int64_t ttl = 0;
        size_t i = 0;
        while (i < e->len && e->ptr[i] >= '0' && e->ptr[i] <= '9')
            ttl = ttl * 10 + (e->ptr[i++] - '0');
        if (i == e->len && ttl < INT64_MAX - m->timestamp_ms && m->timestamp_ms + ttl < at)
            at = m->timestamp_ms + ttl;
    }
    return at;
}

static void ttl_fire(struct wr_loop *lp, void *data);

/* Arms q's TTL timer for at, unless it already fires sooner. A message expires once the
 * clock has passed its expiry, so a TTL of 0 still reaches a consumer that is waiting. */
static void ttl_arm(struct wr_queue *q, int64_t at)
{
    if (at == INT64_MAX || q->deleted || (q->ttl_timer && q->ttl_at <= at))
        return;
    struct wr_loop *lp = q->vh->broker->lp;
    if (q->ttl_timer)
        wr_loop_timer_del(lp, q->ttl_timer);
    int64_t delay = at - wall_ms() + 1;
    q->ttl_at = at;
    q->ttl_timer = wr_loop_timer_add(lp, delay > 0 ? (uint64_t)delay : 0, ttl_fire, q);
}

/* Drops the head messages expired before now, dead-lettering them, as RabbitMQ does: a
 * message behind one that lives longer waits for it. */
static void expire_head(struct wr_queue *q, int64_t now)
{
    if (q->log || !HAS_OP(q->ops, struct wr_storage_ops, peek))
        return;
    const struct wr_msg *m;
    while (!q->deleted && (m = q->ops->peek(q->state)) && msg_expiry(q, m) < now) {
        struct wr_stored st;
        if (q->ops->next(q->state, &st) != WR_OK)
            break;
        struct wr_msg *msg = wr_msg_ref(st.msg);
        q->ops->ack(q->state, st.tag);
        sync_mark_dirty(q);
        dead_letter(q, msg, "expired");
    }
}

static void ttl_fire(struct wr_loop *lp, void *data)
{
    (void)lp;
    struct wr_queue *q = data;
    q->ttl_timer = 0;
    expire_head(q, wall_ms());
    const struct wr_msg *m = q->deleted ? NULL : q->ops->peek(q->state);
    if (m)
        ttl_arm(q, msg_expiry(q, m));
}

/* x-expires: deletes the queue once it has gone unused (no consumers, no get, no redeclare)
 * for expires_ms. The timer re-arms itself for the time left rather than on every use. */
static void queue_expires_fire(struct wr_loop *lp, void *data)
{
    struct wr_queue *q = data;
    q->expires_timer = 0;
    int64_t idle = wall_ms() - q->used_at;
    if (q->n_consumers || idle < q->expires_ms) {
        int64_t left = q->n_consumers ? q->expires_ms : q->expires_ms - idle;
        q->expires_timer = wr_loop_timer_add(lp, (uint64_t)left, queue_expires_fire, q);
        return;
    }
    wr_log(WR_LOG_INFO, "queue", "queue '%s' in vhost '%s' expired after %lld ms unused",
           q->name, q->vh->name, (long long)q->expires_ms);
    queue_destroy(q);
}

/* Kafka's murmur2, as its Java client's default partitioner hashes a record key. */
static uint32_t murmur2(const uint8_t *data, size_t len)
{
    const uint32_t m = 0x5bd1e995;
    uint32_t h = 0x9747b28c ^ (uint32_t)len;
    size_t i = 0;
    for (; i + 4 <= len; i += 4) {
        uint32_t k = wr_le32_get(data + i);
        k *= m;
        k ^= k >> 24;
        k *= m;
        h = h * m ^ k;
    }
    switch (len - i) {
    case 3:
        h ^= (uint32_t)data[i + 2] << 16;
        /* fall through */
    case 2:
        h ^= (uint32_t)data[i + 1] << 8;
        /* fall through */
    case 1:
        h ^= data[i];
        h *= m;
    }
    h ^= h >> 13;
    h *= m;
    h ^= h >> 15;
    return h;
}

/* The partition a message goes to in a log of several: the one its "x-kafka-partition"
 * header names, when that is an integer below the partition count (a routing script's
 * choice); else its record key (wr_msg_record_key) hashed as Kafka's producers hash keys
 * (murmur2, sign bit cleared, modulo the partitions), so one key's records stay in order
 * and land where a Kafka producer would put them. */
static uint32_t log_partition(const struct wr_queue *q, const struct wr_msg *msg)
{
    if (q->partitions <= 1)
        return 0;
    int64_t chosen;
    if (wr_table_get_int(msg->headers, "x-kafka-partition", &chosen) && chosen >= 0 &&
        chosen < (int64_t)q->partitions)
        return (uint32_t)chosen;
    struct wr_str k = wr_msg_record_key(msg);
    return (murmur2((const uint8_t *)k.ptr, k.len) & 0x7fffffff) % q->partitions;
}

#define LOG_PENDING_MAX 256 /* publishes held before an append: one batch at most this long */
#define LOG_PENDING_BYTES (1u << 20) /* and at most about this many bytes */

/* Takes a publish into a log queue: appended with the others of this loop turn by
 * log_flush, which the dispatch scheduled here runs. A failure there fails the next barrier
 * (the publisher's confirm); a publisher without confirms sees only the error logged. */
static int log_store(struct wr_queue *q, struct wr_msg *msg, struct wr_error *err)
{
    if (q->n_pending == q->cap_pending) {
        uint32_t cap = q->cap_pending ? q->cap_pending * 2 : 16;
        struct wr_msg **msgs = realloc(q->pending, cap * sizeof *msgs);
        if (msgs)
            q->pending = msgs;
        uint32_t *parts = msgs ? realloc(q->pending_part, cap * sizeof *parts) : NULL;
        if (!parts)
            return wr_error_set(err, WR_ENOMEM, "out of memory appending to queue '%s'",
                                q->name);
        q->pending_part = parts;
        q->cap_pending = cap;
    }
    q->pending[q->n_pending] = wr_msg_ref(msg);
    q->pending_part[q->n_pending++] = log_partition(q, msg);
    q->pending_bytes += msg->size;
    sync_mark_dirty(q);
    queue_schedule(q);
    if (q->n_pending >= LOG_PENDING_MAX || q->pending_bytes >= LOG_PENDING_BYTES)
        log_settle(q);
    return WR_OK;
}

/* Moves the publishes of partition p among pending[from..n) to a run at from, in order (the
 * other partitions' keep their order after it). Returns the run's length. */
static uint32_t log_gather(struct wr_queue *q, uint32_t from, uint32_t n, uint32_t p)
{
    uint32_t run = from;
    for (uint32_t i = from; i < n; i++) {
        if (q->pending_part[i] != p)
            continue;
        struct wr_msg *m = q->pending[i];
        memmove(&q->pending[run + 1], &q->pending[run], (i - run) * sizeof *q->pending);
        memmove(&q->pending_part[run + 1], &q->pending_part[run],
                (i - run) * sizeof *q->pending_part);
        q->pending[run] = m;
        q->pending_part[run++] = p;
    }
    return run - from;
}

/* Notes the outcome of appending n publishes. */
static void log_append_failed(struct wr_queue *q, int rc, uint32_t n, const struct wr_error *err)
{
    if (rc == WR_OK) {
        q->appended = true;
        return;
    }
    wr_log(WR_LOG_ERROR, "queue", "queue '%s' in vhost '%s': %u publish%s lost: %s", q->name,
           q->vh->name, n, n == 1 ? "" : "es", err->msg);
    if (q->pending_failed == WR_OK)
        q->pending_failed = rc;
}

int log_flush(struct wr_queue *q)
{
    uint32_t n = q->n_pending;
    q->n_pending = 0;
    q->pending_bytes = 0;
    for (uint32_t at = 0; at < n && !q->deleted;) {
        uint32_t p = q->pending_part[at];
        uint32_t len = log_gather(q, at, n, p);
        uint64_t offset = 0;
        struct wr_error err = {0};
        int rc = q->ops->append_msgs(q->state, p, &q->pending[at], len, &offset, &err);
        /* Together they may not fit where each would (a segment smaller than the batch):
         * then one at a time, so only a publish that fails alone is lost. */
        for (uint32_t i = 0; rc != WR_OK && len > 1 && i < len; i++) {
            int one = q->ops->append_msgs(q->state, p, &q->pending[at + i], 1, &offset, &err);
            log_append_failed(q, one, 1, &err);
        }
        if (len == 1 || rc == WR_OK)
            log_append_failed(q, rc, len, &err);
        at += len;
    }
    for (uint32_t i = 0; i < n; i++)
        wr_msg_unref(q->pending[i]);
    if (q->appended && (q->n_consumers || q->watches) && !q->vh->broker->freeing)
        queue_schedule(q);
    int failed = q->pending_failed;
    q->pending_failed = WR_OK;
    return failed;
}

struct wr_queue_watch {
    struct wr_queue *q;          /* NULL once the queue is gone */
    wr_queue_watch_cb *cb;
    void *data;
    bool dead;                   /* cancelled while the callbacks ran */
    struct wr_queue_watch *next;
};

static int log_check(const struct wr_queue *q, uint32_t partition, struct wr_error *err)
{
    if (q->deleted)
        return wr_error_set(err, WR_ENOTFOUND, "queue '%s' was deleted", q->name);
    if (!q->log)
        return wr_error_set(err, WR_EINVAL, "queue '%s' in vhost '%s' is not a log", q->name,
                            q->vh->name);
    if (partition >= q->partitions)
        return wr_error_set(err, WR_EINVAL, "queue '%s' has no partition %u (it has %u)",
                            q->name, partition, q->partitions);
    return WR_OK;
}

uint32_t wr_queue_partitions(const struct wr_queue *q) { return q->log ? q->partitions : 0; }

int wr_queue_add_partitions(struct wr_queue *q, uint32_t count, struct wr_error *err)
{
    int rc = log_check(q, 0, err);
    if (rc != WR_OK)
        return rc;
    if (count <= q->partitions)
        return wr_error_set(err, WR_EINVAL, "queue '%s' in vhost '%s' has %u partitions and "
                            "can only grow: %u is not more", q->name, q->vh->name,
                            q->partitions, count);
    if (!HAS_OP(q->ops, struct wr_storage_ops, add_partitions))
        return wr_error_set(err, WR_EINVAL, "queue '%s' in vhost '%s': storage '%s' cannot "
                            "add partitions", q->name, q->vh->name, q->storage);
    uint32_t had = q->partitions, now = had;
    rc = q->ops->add_partitions(q->state, count, &now, err);
    if (now <= had)
        return rc;
    q->partitions = now;
    sync_mark_dirty(q); /* the next barrier makes the new directories durable */
    /* Recorded even after a partial failure: the partitions made are on disk. */
    struct wr_error defs_err = {0};
    int defs_rc = definitions_queue_declared(q, rc == WR_OK ? err : &defs_err);
    return rc != WR_OK ? rc : defs_rc;
}

int wr_queue_append_batch(struct wr_queue *q, uint32_t partition, uint8_t *batch, size_t len,
                          uint64_t *base_offset, struct wr_error *err)
{
    int rc = log_check(q, partition, err);
    if (rc == WR_OK) /* publishes made before it come first */
        log_settle(q);
    if (rc == WR_OK)
        rc = q->ops->append_batch(q->state, partition, batch, len, base_offset, err);
    if (rc != WR_OK)
        return rc;
    sync_mark_dirty(q);
    q->appended = true;
    if (q->n_consumers || q->watches)
        queue_schedule(q);
    return WR_OK;
}

/* A reader sees every publish made before it: pending ones are appended first. The failure,
 * if any, is kept for the next barrier. Logically the pending publishes are part of the log,
 * so a const view of the queue may do this. */
static void log_settle(const struct wr_queue *q)
{
    struct wr_queue *mq = (struct wr_queue *)q;
    if (mq->n_pending && !mq->deleted)
        mq->pending_failed = log_flush(mq);
}

int wr_queue_read(struct wr_queue *q, uint32_t partition, uint64_t offset, size_t max_bytes,
                  struct wr_log_slice *out, struct wr_error *err)
{
    log_settle(q);
    int rc = log_check(q, partition, err);
    return rc == WR_OK ? q->ops->read(q->state, partition, offset, max_bytes, out, err) : rc;
}

int wr_queue_offsets(const struct wr_queue *q, uint32_t partition, uint64_t *earliest,
                     uint64_t *latest)
{
    log_settle(q);
    int rc = log_check(q, partition, NULL);
    if (rc == WR_OK)
        q->ops->offsets(q->state, partition, earliest, latest);
    return rc;
}

int wr_queue_offset_for_time(struct wr_queue *q, uint32_t partition, int64_t ts_ms,
                             uint64_t *offset, int64_t *timestamp)
{
    log_settle(q);
    int rc = log_check(q, partition, NULL);
    return rc == WR_OK ? q->ops->offset_for_time(q->state, partition, ts_ms, offset, timestamp)
                       : rc;
}

struct wr_queue_watch *wr_queue_watch(struct wr_queue *q, wr_queue_watch_cb *cb, void *data)
{
    struct wr_queue_watch *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    *w = (struct wr_queue_watch){q, cb, data, false, q->watches};
    q->watches = w;
    return w;
}

void wr_queue_unwatch(struct wr_queue_watch *w)
{
    if (!w)
        return;
    struct wr_queue *q = w->q;
    if (q && q->notifying) {
        w->dead = true; /* freed when the callbacks are done */
        return;
    }
    for (struct wr_queue_watch **p = q ? &q->watches : NULL; p && *p; p = &(*p)->next)
        if (*p == w) {
            *p = w->next;
            break;
        }
    free(w);
}

/* Calls every watcher of q once; with detach (q is going), unhooks them all. */
static void watchers_notify(struct wr_queue *q, bool detach)
{
    if (!q->watches)
        return;
    wr_queue_ref(q);
    q->notifying = true;
    for (struct wr_queue_watch *w = q->watches; w; w = w->next)
        if (!w->dead)
            w->cb(q, w->data);
    q->notifying = false;
    for (struct wr_queue_watch **p = &q->watches; *p;) {
        struct wr_queue_watch *w = *p;
        if (w->dead) {
            *p = w->next;
            free(w);
        } else if (detach) {
            *p = w->next;
            w->q = NULL;
        } else {
            p = &w->next;
        }
    }
    wr_queue_unref(q);
}

int queue_store(struct wr_queue *q, struct wr_msg *msg, struct wr_error *err)
{
    if (q->log)
        return log_store(q, msg, err);
    int rc = q->ops->enqueue(q->state, msg, err);
    if (rc != WR_OK)
        return rc;
    sync_mark_dirty(q);
    if (q->message_ttl_ms >= 0 || msg->props.expiration.ptr) {
        const struct wr_msg *head = HAS_OP(q->ops, struct wr_storage_ops, peek)
                                        ? q->ops->peek(q->state)
                                        : NULL;
        if (head)
            ttl_arm(q, msg_expiry(q, head));
    }
    if (q->n_consumers) {
        queue_schedule(q);
        /* The pass judges expiry as of this message's arrival at the latest, so it reaches
         * a consumer that was waiting even if the clock ticked since it was accepted. */
        struct wr_broker *b = q->vh->broker;
        if (b->dispatch_deferred && msg->timestamp_ms < b->dispatch_ms)
            b->dispatch_ms = msg->timestamp_ms;
    }
    return WR_OK;
}

/* ---- dispatch ----------------------------------------------------------------------- */

static void dispatch_all(struct wr_loop *lp, void *data);

static bool consumer_can_take(struct wr_consumer *c)
{
    if (c->prefetch && c->unacked.count >= c->prefetch)
        return false;
    if (HAS_OP(c->ops, struct wr_consumer_ops, ready) && !c->ops->ready(c, c->data))
        return false;
    return true;
}

/* The next consumer round-robin that can take a message, or NULL. */
/* The next consumer round-robin that can take a message, or NULL; *at gets its index.
 * The caller moves q->rr past it only once a message was really handed over, so an idle
 * dispatch does not skip a consumer's turn. */
static struct wr_consumer *next_consumer(struct wr_queue *q, uint32_t *at)
{
    if (!q->n_prioritized) {
        for (uint32_t i = 0; i < q->n_consumers; i++) {
            uint32_t k = (q->rr + i) % q->n_consumers;
            if (consumer_can_take(q->consumers[k])) {
                *at = k;
                return q->consumers[k];
            }
        }
        return NULL;
    }
    /* x-priority: the highest priority that can take; the first of it from rr, so equals
     * still take turns. */
    struct wr_consumer *best = NULL;
    for (uint32_t i = 0; i < q->n_consumers; i++) {
        uint32_t k = (q->rr + i) % q->n_consumers;
        struct wr_consumer *c = q->consumers[k];
        if ((!best || c->priority > best->priority) && consumer_can_take(c)) {
            best = c;
            *at = k;
        }
    }
    return best;
}

#define LOG_READ_MAX 128 /* records read from a log per read_msgs */

/* Serves one consumer of a log from its own offset until it can take no more or has read
 * everything. False when the consumer was cancelled inside its deliver (and is freed). */
static bool log_serve(struct wr_queue *q, struct wr_consumer *c)
{
    while (!q->deleted && !c->cancelled && consumer_can_take(c)) {
        size_t want = LOG_READ_MAX;
        if (c->prefetch && c->prefetch - c->unacked.count < want)
            want = c->prefetch - c->unacked.count;
        struct wr_log_entry got[LOG_READ_MAX];
        size_t n = 0;
        struct wr_error err = {0};
        int rc = q->ops->read_msgs(q->state, 0, c->offset, got, want, &n, &err);
        if (rc == WR_ENOTFOUND) {
            /* Retention deleted what the consumer had not read yet: Kafka and RabbitMQ
             * move it on to the first record kept. */
            uint64_t first = 0, latest = 0;
            q->ops->offsets(q->state, 0, &first, &latest);
            if (c->offset >= first)
                break;
            c->offset = first;
            continue;
        }
        if (rc != WR_OK) {
            wr_log(WR_LOG_ERROR, "queue", "queue '%s': cannot read offset %llu for a consumer: "
                   "%s", q->name, (unsigned long long)c->offset, err.msg);
            break;
        }
        if (n == 0)
            break;
        size_t k = 0;
        for (; k < n && !q->deleted && !c->cancelled && consumer_can_take(c); k++) {
            uint64_t tag = got[k].offset + 1; /* 0 is never a tag */
            if (!c->no_ack && !wr_idtable_put(&c->unacked, tag)) {
                wr_log(WR_LOG_ERROR, "queue", "out of memory tracking a delivery on '%s'",
                       q->name);
                break;
            }
            c->offset = got[k].offset + 1;
            struct wr_delivery d = {q, got[k].msg, tag, false};
            q->delivering = c;
            c->ops->deliver(c, &d, c->data);
            q->delivering = NULL;
            wr_msg_unref(got[k].msg);
        }
        for (; k < n; k++) /* not delivered now: read again next time */
            wr_msg_unref(got[k].msg);
    }
    if (!c->cancelled)
        return true;
    consumer_free(c);
    return false;
}

/* Every consumer of a log reads every record. */
static void log_dispatch(struct wr_queue *q)
{
    for (uint32_t i = 0; i < q->n_consumers && !q->deleted;)
        if (log_serve(q, q->consumers[i]))
            i++; /* else it left the array, and i is already the next one */
}

static void queue_dispatch(struct wr_queue *q)
{
    struct wr_consumer *c;
    uint32_t at = 0;
    if (q->log) {
        log_settle(q);
        log_dispatch(q);
        if (q->appended && !q->deleted) {
            q->appended = false;
            watchers_notify(q, false);
        }
        return;
    }
    while (!q->deleted && (c = next_consumer(q, &at))) {
        struct wr_stored st;
        /* Judged as of when the dispatch was scheduled: RabbitMQ decides at enqueue, so a
         * TTL-0 message still reaches a consumer that was waiting for it. */
        if (q->ttl_timer)
            expire_head(q, q->vh->broker->dispatch_ms);
        if (q->ops->next(q->state, &st) != WR_OK)
            break;
        q->rr = (at + 1) % q->n_consumers;
        if (!c->no_ack && !wr_idtable_put(&c->unacked, st.tag)) {
            wr_log(WR_LOG_ERROR, "queue", "out of memory tracking a delivery on '%s'",
                   q->name);
            q->ops->requeue(q->state, st.tag);
            break;
        }
        struct wr_delivery d = {q, st.msg, st.tag, st.redelivered};
        q->delivering = c;
        if (c->no_ack) {
            wr_msg_ref(st.msg); /* alive through deliver although acked first */
            q->ops->ack(q->state, st.tag);
        }
        c->ops->deliver(c, &d, c->data);
        if (c->no_ack)
            wr_msg_unref(st.msg);
        q->delivering = NULL;
        if (c->cancelled)
            consumer_free(c);
    }
}

void queue_dispatch_cancel(struct wr_broker *b)
{
    if (b->dispatch_deferred)
        wr_loop_defer_cancel(b->lp, dispatch_all, b);
    b->dispatch_deferred = false;
    while (b->dispatch) {
        struct wr_queue *q = b->dispatch;
        b->dispatch = q->dispatch_next;
        q->dispatch_pending = false;
        wr_queue_unref(q);
    }
}

static void dispatch_all(struct wr_loop *lp, void *data)
{
    (void)lp;
    struct wr_broker *b = data;
    b->dispatch_deferred = false;
    while (b->dispatch) {
        struct wr_queue *q = b->dispatch;
        b->dispatch = q->dispatch_next;
        q->dispatch_pending = false;
        queue_dispatch(q);
        wr_queue_unref(q);
    }
}

void queue_schedule(struct wr_queue *q)
{
    struct wr_broker *b = q->vh->broker;
    if (q->dispatch_pending || q->deleted)
        return;
    if (!b->dispatch_deferred) {
        if (wr_loop_defer(b->lp, dispatch_all, b) != WR_OK) {
            wr_log(WR_LOG_ERROR, "queue", "cannot schedule a dispatch (out of memory)");
            return;
        }
        b->dispatch_deferred = true;
        b->dispatch_ms = wall_ms();
    }
    q->dispatch_pending = true;
    q->dispatch_next = b->dispatch;
    b->dispatch = wr_queue_ref(q); /* a deleted queue stays valid until its turn */
}

/* ---- consumers ---------------------------------------------------------------------- */

/* The offset a new consumer of a log starts at, in partition 0. */
static uint64_t log_start(struct wr_queue *q, const struct wr_consume_args *args)
{
    uint64_t first = 0, latest = 0;
    log_settle(q); /* "last" and "next" count every publish made before */
    q->ops->offsets(q->state, 0, &first, &latest);
    int64_t ts = 0;
    uint64_t at = latest;
    switch (args->stream_start) {
    case WR_STREAM_NEXT:
        break;
    case WR_STREAM_FIRST:
        at = first;
        break;
    case WR_STREAM_LAST:
        at = latest > first ? latest - 1 : latest;
        break;
    case WR_STREAM_OFFSET:
        at = args->stream_at < 0 ? first : (uint64_t)args->stream_at;
        at = at < first ? first : at > latest ? latest : at;
        break;
    case WR_STREAM_TIMESTAMP:
        if (q->ops->offset_for_time(q->state, 0, args->stream_at, &at, &ts) != WR_OK)
            at = latest;
        break;
    }
    return at;
}

int wr_queue_consume(struct wr_queue *q, const struct wr_consumer_ops *ops,
                     const struct wr_consume_args *args, void *data, struct wr_consumer **out,
                     struct wr_error *err)
{
    if (q->deleted)
        return wr_error_set(err, WR_ENOTFOUND, "queue '%s' was deleted", q->name);
    if (!HAS_OP(ops, struct wr_consumer_ops, deliver))
        return wr_error_set(err, WR_EINVAL, "a consumer needs a deliver op");
    if (q->n_consumers && (args->exclusive || q->consumers[0]->exclusive))
        return wr_error_set(err, WR_EBUSY,
                            "queue '%s' in vhost '%s' has an exclusive consumer or consumers "
                            "already",
                            q->name, q->vh->name);
    if (q->n_consumers == q->cap_consumers) {
        uint32_t cap = q->cap_consumers ? q->cap_consumers * 2 : 4;
        struct wr_consumer **all = realloc(q->consumers, cap * sizeof *all);
        if (!all)
            return wr_error_set(err, WR_ENOMEM, "out of memory adding a consumer");
        q->consumers = all;
        q->cap_consumers = cap;
    }
    struct wr_consumer *c = calloc(1, sizeof *c);
    if (!c)
        return wr_error_set(err, WR_ENOMEM, "out of memory adding a consumer");
    c->q = q;
    wr_idtable_init(&c->unacked, sizeof(uint64_t));
    c->ops = ops;
    c->data = data;
    c->prefetch = args->prefetch;
    c->no_ack = args->no_ack;
    c->exclusive = args->exclusive;
    c->priority = args->priority;
    if (q->log)
        c->offset = log_start(q, args);
    if (c->priority)
        q->n_prioritized++;
    q->consumers[q->n_consumers++] = c;
    q->used_at = wall_ms();
    q->had_consumer = true;
    queue_schedule(q);
    *out = c;
    return WR_OK;
}

static int settle(struct wr_queue *q, uint64_t tag, bool ack, bool requeue,
                  struct wr_error *err)
{
    if (q->deleted)
        return wr_error_set(err, WR_ENOTFOUND, "queue '%s' was deleted", q->name);
    int rc;
    struct wr_msg *dead = NULL;
    if (q->log) {
        /* A log keeps its records; settling only frees the consumer's credit (nack and
         * reject too, as RabbitMQ's streams ignore requeue). */
        queue_schedule(q);
        return WR_OK;
    }
    if (ack)
        rc = q->ops->ack(q->state, tag);
    else if (requeue)
        rc = q->ops->requeue(q->state, tag);
    else if (q->dlx && HAS_OP(q->ops, struct wr_storage_ops, take))
        rc = q->ops->take(q->state, tag, &dead);
    else
        rc = q->ops->ack(q->state, tag);
    if (dead)
        dead_letter(q, dead, "rejected");
    if (rc == WR_OK)
        sync_mark_dirty(q);
    if (rc == WR_OK && requeue && !ack && q->ttl_timer == 0 &&
        HAS_OP(q->ops, struct wr_storage_ops, peek)) {
        const struct wr_msg *head = q->ops->peek(q->state);
        if (head)
            ttl_arm(q, msg_expiry(q, head));
    }
    if (rc != WR_OK)
        return wr_error_set(err, WR_ENOTFOUND, "unknown delivery tag %llu on queue '%s'",
                            (unsigned long long)tag, q->name);
    if (q->n_consumers)
        queue_schedule(q);
    return WR_OK;
}

static int consumer_settle(struct wr_consumer *c, uint64_t tag, bool ack, bool requeue,
                           struct wr_error *err)
{
    uint64_t *held = wr_idtable_find(&c->unacked, tag);
    if (!held)
        return wr_error_set(err, WR_ENOTFOUND, "unknown delivery tag %llu for this consumer",
                            (unsigned long long)tag);
    wr_idtable_del(&c->unacked, held);
    return settle(c->q, tag, ack, requeue, err);
}

int wr_consumer_ack(struct wr_consumer *c, uint64_t tag, struct wr_error *err)
{
    return consumer_settle(c, tag, true, false, err);
}

int wr_consumer_nack(struct wr_consumer *c, uint64_t tag, bool requeue, struct wr_error *err)
{
    return consumer_settle(c, tag, false, requeue, err);
}

void wr_consumer_cancel(struct wr_consumer *c, bool requeue_unacked)
{
    struct wr_queue *q = c->q;
    for (uint32_t i = 0; i < q->n_consumers; i++) {
        if (q->consumers[i] != c)
            continue;
        memmove(&q->consumers[i], &q->consumers[i + 1],
                (q->n_consumers - i - 1) * sizeof *q->consumers);
        q->n_consumers--;
        if (c->priority)
            q->n_prioritized--;
        if (q->rr > i)
            q->rr--;
        break;
    }
    if (requeue_unacked && !q->deleted && !q->log) {
        uint64_t *tag;
        for (size_t i = 0; (tag = wr_idtable_next(&c->unacked, &i));)
            q->ops->requeue(q->state, *tag);
    }
    if (q->delivering == c)
        c->cancelled = true;
    else
        consumer_free(c);
    if (q->deleted)
        return;
    q->used_at = wall_ms();
    if (q->auto_delete && q->had_consumer && !q->n_consumers)
        queue_destroy(q);
    else if (q->n_consumers)
        queue_schedule(q);
}

void wr_consumer_set_prefetch(struct wr_consumer *c, uint32_t prefetch)
{
    c->prefetch = prefetch;
    wr_consumer_kick(c);
}

void wr_consumer_kick(struct wr_consumer *c)
{
    if (!c->q->deleted)
        queue_schedule(c->q);
}

uint32_t wr_consumer_unacked(const struct wr_consumer *c) { return (uint32_t)c->unacked.count; }
struct wr_queue *wr_consumer_queue(const struct wr_consumer *c) { return c->q; }

int wr_queue_get(struct wr_queue *q, bool no_ack, struct wr_delivery *d, struct wr_error *err)
{
    if (q->deleted)
        return wr_error_set(err, WR_ENOTFOUND, "queue '%s' was deleted", q->name);
    if (q->log)
        return wr_error_set(err, WR_EINVAL, "queue '%s' in vhost '%s' is a stream: read it "
                            "with a consumer (basic.consume with x-stream-offset)",
                            q->name, q->vh->name);
    q->used_at = wall_ms();
    expire_head(q, q->used_at);
    struct wr_stored st;
    if (q->ops->next(q->state, &st) != WR_OK)
        return WR_ENOTFOUND;
    *d = (struct wr_delivery){q, wr_msg_ref(st.msg), st.tag, st.redelivered};
    if (no_ack)
        q->ops->ack(q->state, st.tag);
    return WR_OK;
}

int wr_queue_ack(struct wr_queue *q, uint64_t tag, struct wr_error *err)
{
    return settle(q, tag, true, false, err);
}

int wr_queue_nack(struct wr_queue *q, uint64_t tag, bool requeue, struct wr_error *err)
{
    return settle(q, tag, false, requeue, err);
}
