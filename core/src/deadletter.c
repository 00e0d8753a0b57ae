/*
 * deadletter.c: RabbitMQ's dead-lettering. A message a queue drops because it was rejected
 * without requeue, expired (TTL) or pushed out by max-length is republished to the queue's
 * dead-letter exchange with an x-death header telling where it has been and why.
 *
 * Dead letters are queued and published from a deferred task, never inside the publish,
 * ack or enqueue that dropped them: republishing there would re-enter routing and storage
 * from within a storage callback, and a cycle of queues would recurse.
 *
 * The x-death header is an array of tables, newest first, one per (queue, reason) with a
 * count; each has count, reason, queue, time, exchange, routing-keys and, for a message that
 * had a per-message TTL, original-expiration. The first death also sets x-first-death-reason,
 * -queue and -exchange. The republished message loses its expiration property, as in
 * RabbitMQ, so it does not expire again for the same reason.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker_int.h"

struct dead_letter {
    struct wr_queue *q; /* referenced: read its dead-letter settings at publish time */
    struct wr_msg *msg; /* the queue's reference, handed over */
    const char *reason;
    struct dead_letter *next;
};

static bool str_is(const struct wr_value *v, const char *s, size_t len)
{
    return v && (v->type == WR_V_STR || v->type == WR_V_BYTES) && v->u.s.len == len &&
           memcmp(v->u.s.ptr, s, len) == 0;
}

/* A new x-death entry for a death in q for reason. Its fields are in name order, as
 * RabbitMQ sorts them. */
static struct wr_table *death_entry(const struct wr_queue *q, const struct wr_msg *msg,
                                    const char *reason)
{
    struct wr_table *t = wr_table_new();
    struct wr_array *keys = wr_array_new();
    if (!t || !keys)
        goto fail;
    struct wr_value v = wr_value_strn(msg->routing_key.ptr, msg->routing_key.len);
    if (wr_array_add(keys, &v) != WR_OK)
        goto fail;
    struct wr_value count_v = {.type = WR_V_I64, .u.i = 1};
    struct wr_value time_v = {.type = WR_V_TIMESTAMP, .u.i = (int64_t)time(NULL)};
    struct wr_value keys_v = {.type = WR_V_ARRAY, .u.array = keys};
    struct wr_value reason_v = wr_value_str(reason);
    struct wr_value queue_v = wr_value_str(q->name);
    struct wr_value ex_v = wr_value_strn(msg->exchange.ptr, msg->exchange.len);
    struct wr_value exp_v = wr_value_strn(msg->props.expiration.ptr, msg->props.expiration.len);
    if (wr_table_add(t, "count", &count_v) || wr_table_add(t, "exchange", &ex_v) ||
        (msg->props.expiration.ptr && wr_table_add(t, "original-expiration", &exp_v)) ||
        wr_table_add(t, "queue", &queue_v) || wr_table_add(t, "reason", &reason_v) ||
        wr_table_add(t, "routing-keys", &keys_v) || wr_table_add(t, "time", &time_v))
        goto fail;
    wr_array_free(keys);
    return t;
fail:
    wr_array_free(keys);
    wr_table_free(t);
    return NULL;
}

/* msg's headers with x-death updated for a death in q for reason: a new entry in front, or
 * the existing (queue, reason) entry moved to the front with only its count raised (the rest
 * stays as at the first such death, as in RabbitMQ). NULL: out of memory. */
static struct wr_table *death_headers(const struct wr_queue *q, const struct wr_msg *msg,
                                      const char *reason)
{
    struct wr_table *h = wr_table_dup(msg->headers);
    struct wr_array *deaths = wr_array_new();
    struct wr_table *entry = NULL;
    if (!h || !deaths)
        goto fail;
    const struct wr_value *old = wr_table_get(msg->headers, "x-death");
    size_t skip = SIZE_MAX;
    if (old && old->type == WR_V_ARRAY) {
        for (size_t i = 0; i < old->u.array->count && skip == SIZE_MAX; i++) {
            const struct wr_value *e = &old->u.array->items[i];
            if (e->type == WR_V_TABLE &&
                str_is(wr_table_get(e->u.table, "queue"), q->name, strlen(q->name)) &&
                str_is(wr_table_get(e->u.table, "reason"), reason, strlen(reason)))
                skip = i;
        }
    }
    if (skip != SIZE_MAX) {
        const struct wr_table *prev = old->u.array->items[skip].u.table;
        int64_t n = 0;
        struct wr_value count_v = {.type = WR_V_I64, .u.i = 1};
        if (wr_table_get_int(prev, "count", &n))
            count_v.u.i = n + 1;
        if (!(entry = wr_table_dup(prev)) || wr_table_set(entry, "count", &count_v) != WR_OK)
            goto fail;
    } else if (!(entry = death_entry(q, msg, reason))) {
        goto fail;
    }
    struct wr_value entry_v = {.type = WR_V_TABLE, .u.table = entry};
    if (wr_array_add(deaths, &entry_v) != WR_OK)
        goto fail;
    if (old && old->type == WR_V_ARRAY)
        for (size_t i = 0; i < old->u.array->count; i++)
            if (i != skip && wr_array_add(deaths, &old->u.array->items[i]) != WR_OK)
                goto fail;
    struct wr_value deaths_v = {.type = WR_V_ARRAY, .u.array = deaths};
    if (wr_table_set(h, "x-death", &deaths_v) != WR_OK)
        goto fail;
    if (!wr_table_get(h, "x-first-death-reason")) {
        struct wr_value r = wr_value_str(reason), qn = wr_value_str(q->name);
        struct wr_value ex = wr_value_strn(msg->exchange.ptr, msg->exchange.len);
        if (wr_table_set(h, "x-first-death-reason", &r) ||
            wr_table_set(h, "x-first-death-queue", &qn) ||
            wr_table_set(h, "x-first-death-exchange", &ex))
            goto fail;
    }
    wr_table_free(entry);
    wr_array_free(deaths);
    return h;
fail:
    wr_table_free(entry);
    wr_array_free(deaths);
    wr_table_free(h);
    return NULL;
}

/* RabbitMQ drops a dead letter that would come back to a queue it already died in, unless a
 * client rejected it since it last died there (then the cycle is the client's doing): walk
 * the deaths newest first until the destination's. */
static bool is_cycle(const struct wr_table *headers, const struct wr_queue *dest)
{
    const struct wr_value *deaths = wr_table_get(headers, "x-death");
    if (!deaths || deaths->type != WR_V_ARRAY)
        return false;
    for (size_t i = 0; i < deaths->u.array->count; i++) {
        const struct wr_value *e = &deaths->u.array->items[i];
        if (e->type != WR_V_TABLE)
            continue;
        if (str_is(wr_table_get(e->u.table, "reason"), "rejected", 8))
            return false;
        if (str_is(wr_table_get(e->u.table, "queue"), dest->name, strlen(dest->name)))
            return true;
    }
    return false;
}

static bool not_a_cycle(const struct wr_queue *dest, const struct wr_msg *msg)
{
    return !is_cycle(msg->headers, dest);
}

static void dead_letter_publish(struct dead_letter *d)
{
    struct wr_queue *q = d->q;
    struct wr_exchange *ex = q->dlx ? wr_exchange_find(q->vh, q->dlx) : NULL;
    if (!ex) /* RabbitMQ drops dead letters whose exchange does not exist */
        return;
    struct wr_table *headers = death_headers(q, d->msg, d->reason);
    if (!headers) {
        wr_log(WR_LOG_ERROR, "queue", "out of memory dead-lettering a message from '%s'",
               q->name);
        return;
    }
    struct wr_props props = d->msg->props;
    props.expiration = (struct wr_str){NULL, 0};
    struct wr_msg_init init = {
        .exchange = wr_str_c(ex->name),
        .routing_key = q->dlrk ? wr_str_c(q->dlrk) : d->msg->routing_key,
        .key = d->msg->key,
        .headers = headers,
        .props = &props,
        .body = d->msg->body,
    };
    struct wr_msg *m = NULL;
    struct wr_error err = {0};
    if (wr_msg_new(&init, &m, &err) != WR_OK) {
        wr_log(WR_LOG_ERROR, "queue", "dead-lettering from '%s': %s", q->name, err.msg);
        wr_table_free(headers);
        return;
    }
    wr_table_free(headers);
    if (exchange_store(ex, m, not_a_cycle, NULL, &err) < 0)
        wr_log(WR_LOG_ERROR, "queue", "dead-lettering from '%s': %s", q->name, err.msg);
    wr_msg_unref(m);
}

static void dead_letters_run(struct wr_loop *lp, void *data)
{
    (void)lp;
    struct wr_broker *b = data;
    b->dead_deferred = false;
    /* Dead letters made by this pass (max-length drops in the queues it stores into) wait
     * for the next one, so a pass always ends. */
    struct dead_letter *d, *next = b->dead;
    b->dead = b->dead_tail = NULL;
    while ((d = next)) {
        next = d->next;
        dead_letter_publish(d);
        wr_msg_unref(d->msg);
        wr_queue_unref(d->q);
        free(d);
    }
}

void dead_letter(struct wr_queue *q, struct wr_msg *msg, const char *reason)
{
    struct wr_broker *b = q->vh->broker;
    struct dead_letter *d = q->dlx && !b->freeing ? malloc(sizeof *d) : NULL;
    if (!d) {
        wr_msg_unref(msg);
        return;
    }
    if (!b->dead_deferred) {
        if (wr_loop_defer(b->lp, dead_letters_run, b) != WR_OK) {
            free(d);
            wr_msg_unref(msg);
            return;
        }
        b->dead_deferred = true;
    }
    *d = (struct dead_letter){wr_queue_ref(q), msg, reason, NULL};
    if (b->dead_tail)
        b->dead_tail->next = d;
    else
        b->dead = d;
    b->dead_tail = d;
}

void dead_letter_cancel(struct wr_broker *b)
{
    if (b->dead_deferred)
        wr_loop_defer_cancel(b->lp, dead_letters_run, b);
    b->dead_deferred = false;
    while (b->dead) {
        struct dead_letter *d = b->dead;
        b->dead = d->next;
        wr_msg_unref(d->msg);
        wr_queue_unref(d->q);
        free(d);
    }
    b->dead_tail = NULL;
}
