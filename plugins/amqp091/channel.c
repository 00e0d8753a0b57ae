/*
 * channel.c: one AMQP 0-9-1 channel: the exchange, queue, basic, confirm and tx classes and
 * channel.flow, the channel's consumers and its deliveries, publisher confirms and
 * transactions. It answers as RabbitMQ 3.10 does, with its reply codes and reply texts, so
 * that clients written against RabbitMQ see the same errors.
 *
 * Delivery tags: the channel numbers every delivery it sends (basic.deliver and basic.get-ok)
 * from 1. The unacked ones wait in a ring ordered by tag, so an ack finds its delivery by a
 * binary search (the oldest first, which is the common case) and no delivery costs an
 * allocation of its own. A delivery remembers its queue (referenced, so it can be settled
 * after the queue went) and the consumer it came from while that consumer lives.
 *
 * Publisher confirms: every publish of a confirm-mode channel gets the next sequence number.
 * A publish some queue refused (reject-publish overflow) is nacked; the rest are acked once
 * durable. One broker durability barrier (wr_broker_sync) per loop turn covers every publish
 * of that turn, so a batch costs one group commit, and its completion acks the whole run with
 * multiple=true, splitting it only where a nack falls.
 *
 * Transactions: publishes are kept as built messages and acks as a choice marked on the
 * delivery; commit applies them in order, then waits for a barrier before commit-ok.
 *
 * Also RabbitMQ's extensions a client may count on: exchange-to-exchange bindings, per-consumer
 * and channel-wide prefetch, consumer cancel notifications, direct reply-to, and the "" queue
 * name meaning the queue the channel declared last.
 */
#include "conn.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/random.h>

/* RabbitMQ's limit for x-message-ttl, x-expires and the expiration property: ten years in
 * milliseconds. */
#define MAX_EXPIRY 315360000000LL
/* RabbitMQ's highest x-max-priority. */
#define MAX_PRIORITY 255
/* Longest reply text we format; channel.close carries at most 255 bytes of it. */
#define TEXT_MAX 512

/* How a delivery is settled. */
enum settle { SETTLE_NONE, SETTLE_ACK, SETTLE_REQUEUE, SETTLE_DROP };

/* One basic.consume of this channel. */
struct consumer {
    struct amqp_chan *ch;
    struct wr_consumer *c;
    struct consumer *next;
    bool no_ack;
    uint8_t tag_len;
    char tag[256];
};

/* A delivery sent and not yet settled. */
struct pending {
    uint64_t dtag;             /* the channel's delivery tag */
    struct wr_queue *q;        /* referenced; NULL once settled (a hole in the ring) */
    struct consumer *cons;     /* the live consumer it came from; NULL: basic.get or gone */
    uint64_t stag;             /* the storage's tag */
    uint8_t limited;           /* counted against the channel-wide prefetch */
    uint8_t staged;            /* enum settle an open transaction chose, applied at commit */
};

/* Unacked deliveries in tag order: ring[(head + i) & (cap - 1)] for i < len. */
struct ring {
    struct pending *slots;
    size_t cap, head, len;
    size_t holes;              /* settled entries not yet trimmed */
};

/* One durability barrier in flight. */
struct barrier {
    struct amqp_chan *ch;
    struct wr_sync *sync;
    uint64_t upto;             /* the publishes it confirms: sequence numbers up to this */
    bool commit;               /* it completes a tx.commit */
    struct barrier *next;
};

/* A publish held by an open transaction. */
struct tx_publish {
    struct wr_msg *msg;
    bool mandatory;
};

struct amqp_chan_priv {
    bool released;

    struct consumer *consumers;
    uint32_t prefetch;         /* basic.qos global=false: for consumers created after it */
    uint32_t global_prefetch;  /* basic.qos global=true: unacked deliveries of the channel */
    uint32_t n_limited;        /* unacked consumer deliveries the global prefetch counts */

    struct ring ring;
    uint64_t next_tag;         /* the next delivery tag, from 1 */

    char last_queue[256];      /* the queue declared last, for the "" shortcut */

    /* Direct reply-to: the reply consumer's tag (reply_tag_len 0: none) and its route. */
    char reply_tag[256];
    uint8_t reply_tag_len;
    struct reply_route *reply;

    /* Publisher confirms. */
    bool confirm;
    uint64_t next_seq;         /* the next publish sequence number, from 1 */
    uint64_t confirmed;        /* every publish up to this one was acked or nacked */
    uint64_t *nacks;           /* sequence numbers to nack, ascending, from nacks_head */
    size_t nacks_head, nacks_len, nacks_cap;
    bool flush_deferred;       /* a barrier is scheduled for the end of this loop turn */
    struct barrier *barriers;

    /* Transactions. */
    bool tx;
    bool committing;           /* tx.commit applied, waiting for its barrier */
    bool tx_failed;            /* a queue refused a committed publish */
    struct tx_publish *tx_msgs;
    size_t tx_len, tx_cap;
};

static struct wr_broker *broker_of(const struct amqp_chan *ch)
{
    return ch->conn->l->broker;
}

static const char *vhost_of(const struct amqp_chan *ch)
{
    return wr_vhost_name(ch->conn->vhost);
}

/* ---- errors ---------------------------------------------------------------------------- */

/* A soft error closes the channel, a hard one the connection (the spec's classes). */
static bool code_is_soft(uint16_t code)
{
    return (code >= AMQP_CONTENT_TOO_LARGE && code <= AMQP_NO_CONSUMERS) ||
           (code >= AMQP_ACCESS_REFUSED && code <= AMQP_PRECONDITION_FAILED);
}

/* Raises an AMQP error as RabbitMQ would: channel.close or connection.close by code. */
WR_PRINTF(4, 5)
static void fail(struct amqp_chan *ch, uint16_t code, uint32_t method_id, const char *fmt, ...)
{
    char text[TEXT_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (code_is_soft(code))
        chan_fail(ch, code, method_id, "%s", text);
    else
        conn_fail(ch->conn, code, method_id, "%s", text);
}

static void fail_oom(struct amqp_chan *ch, uint32_t method_id)
{
    conn_fail(ch->conn, AMQP_INTERNAL_ERROR, method_id, "out of memory");
}

/* A core error that RabbitMQ has no text of its own for: mapped by kind, with our text. */
static void fail_core(struct amqp_chan *ch, uint32_t method_id, int rc,
                      const struct wr_error *err)
{
    uint16_t code = AMQP_INTERNAL_ERROR;
    switch (rc) {
    case WR_EEXIST:
    case WR_EINVAL:
    case WR_ELIMIT:
        code = AMQP_PRECONDITION_FAILED;
        break;
    case WR_EBUSY:
        code = AMQP_RESOURCE_LOCKED;
        break;
    case WR_EPERM:
        code = AMQP_ACCESS_REFUSED;
        break;
    case WR_ENOTFOUND:
        code = AMQP_NOT_FOUND;
        break;
    default:
        break;
    }
    fail(ch, code, method_id, "%s", err->msg[0] ? err->msg : wr_status_str(rc));
}

/* ---- names ----------------------------------------------------------------------------- */

/* A short string as a C string (shortstrs have at most 255 bytes). */
static void str_copy(char out[256], struct wr_str s)
{
    size_t n = s.len < 255 ? s.len : 255;
    if (n)
        memcpy(out, s.ptr, n);
    out[n] = '\0';
}

/* An exchange or queue name as RabbitMQ reads it: CR and LF are dropped. */
static void name_copy(char out[256], struct wr_str s)
{
    size_t n = 0;
    for (size_t i = 0; i < s.len && n < 255; i++)
        if (s.ptr[i] != '\r' && s.ptr[i] != '\n')
            out[n++] = s.ptr[i];
    out[n] = '\0';
}

static bool str_eq(struct wr_str s, const char *c)
{
    return s.ptr && strlen(c) == s.len && memcmp(s.ptr, c, s.len) == 0;
}

static bool reserved(const char *name)
{
    return strncmp(name, "amq.", 4) == 0;
}

/* prefix + 22 random URL-safe base64 characters, the shape of RabbitMQ's server-generated
 * names ("amq.ctag-...", "amq.gen-..."). */
static void gen_name(char out[256], const char *prefix)
{
    static const char b64[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    static uint64_t counter;
    uint8_t rnd[22];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        for (size_t i = 0; i < sizeof rnd; i++)
            rnd[i] = (uint8_t)((++counter * 0x9E3779B97F4A7C15ull) >> 56);
    int n = snprintf(out, 256, "%s", prefix);
    for (size_t i = 0; i < sizeof rnd; i++)
        out[n + i] = b64[rnd[i] & 63];
    out[n + sizeof rnd] = '\0';
}

/* The queue a method names: "" means the one this channel declared last. */
static bool queue_name(struct amqp_chan *ch, uint32_t method_id, struct wr_str s,
                       char out[256])
{
    if (s.len == 0) {
        if (!ch->priv->last_queue[0]) {
            fail(ch, AMQP_NOT_FOUND, method_id, "no previously declared queue");
            return false;
        }
        memcpy(out, ch->priv->last_queue, sizeof ch->priv->last_queue);
        return true;
    }
    name_copy(out, s);
    return true;
}

static void locked(struct amqp_chan *ch, uint32_t method_id, const char *name)
{
    fail(ch, AMQP_RESOURCE_LOCKED, method_id,
         "cannot obtain exclusive access to locked queue '%s' in vhost '%s'. It could be "
         "originally declared on another connection or the exclusive property value does not "
         "match that of the original declaration.",
         name, vhost_of(ch));
}

/* The queue, checked as RabbitMQ's with_exclusive_access_or_die: 404 when missing, 405 when
 * exclusive to another connection. */
static struct wr_queue *queue_or_die(struct amqp_chan *ch, uint32_t method_id,
                                     const char *name)
{
    struct wr_queue *q = wr_queue_find(ch->conn->vhost, name);
    if (!q) {
        fail(ch, AMQP_NOT_FOUND, method_id, "no queue '%s' in vhost '%s'", name, vhost_of(ch));
        return NULL;
    }
    const void *owner = wr_queue_owner(q);
    if (owner && owner != ch->conn) {
        locked(ch, method_id, name);
        return NULL;
    }
    return q;
}

/* ---- replies --------------------------------------------------------------------------- */

static void reply(struct amqp_chan *ch, uint32_t id)
{
    struct amqp_method m = {.id = id};
    conn_send(ch->conn, ch->id, &m);
}

static void reply_unless(struct amqp_chan *ch, bool nowait, uint32_t id)
{
    if (!nowait)
        reply(ch, id);
}

/* A method followed by msg as content (deliver, get-ok, return). */
static void send_content(struct amqp_chan *ch, const struct amqp_method *m,
                         const struct wr_msg *msg)
{
    struct amqp_conn *conn = ch->conn;
    size_t len;
    const uint8_t *body = wr_msg_body(msg, &len);
    amqp_wr_method(&conn->out, ch->id, m);
    amqp_wr_content_header(&conn->out, ch->id, len, &msg->props, msg->headers);
    amqp_wr_body(&conn->out, ch->id, conn->frame_max, body, len);
    conn_output(conn);
}

/* ---- unacked deliveries ---------------------------------------------------------------- */

static struct pending *ring_at(const struct ring *r, size_t i)
{
    return &r->slots[(r->head + i) & (r->cap - 1)];
}

static bool ring_push(struct ring *r, const struct pending *p)
{
    if (r->len == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 64;
        struct pending *slots = malloc(cap * sizeof *slots);
        if (!slots)
            return false;
        for (size_t i = 0; i < r->len; i++)
            slots[i] = *ring_at(r, i);
        free(r->slots);
        r->slots = slots;
        r->cap = cap;
        r->head = 0;
    }
    *ring_at(r, r->len++) = *p;
    return true;
}

/* Drops settled entries from the head, and squeezes the holes out once they are the
 * majority (a delivery left unacked while later ones are acked). */
static void ring_trim(struct ring *r)
{
    while (r->len && !ring_at(r, 0)->q) {
        r->head = (r->head + 1) & (r->cap - 1);
        r->len--;
        r->holes--;
    }
    if (r->holes < 64 || r->holes * 2 < r->len)
        return;
    size_t n = 0;
    for (size_t i = 0; i < r->len; i++)
        if (ring_at(r, i)->q)
            *ring_at(r, n++) = *ring_at(r, i);
    r->len = n;
    r->holes = 0;
}

/* The entry of delivery tag dtag (settled or not), or NULL. */
static struct pending *ring_find(const struct ring *r, uint64_t dtag)
{
    size_t lo = 0, hi = r->len;
    if (hi && ring_at(r, 0)->dtag == dtag)
        return ring_at(r, 0);
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ring_at(r, mid)->dtag < dtag)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < r->len && ring_at(r, lo)->dtag == dtag ? ring_at(r, lo) : NULL;
}

/* Unacked as far as the client is concerned: not settled, not claimed by the transaction. */
static bool outstanding(const struct pending *p)
{
    return p->q && p->staged == SETTLE_NONE;
}

static void pending_settle(struct amqp_chan_priv *pv, struct pending *p, enum settle how)
{
    /* Errors mean the queue was deleted meanwhile: nothing is left to settle. */
    if (p->cons) {
        if (how == SETTLE_ACK)
            wr_consumer_ack(p->cons->c, p->stag, NULL);
        else
            wr_consumer_nack(p->cons->c, p->stag, how == SETTLE_REQUEUE, NULL);
    } else if (how == SETTLE_ACK) {
        wr_queue_ack(p->q, p->stag, NULL);
    } else {
        wr_queue_nack(p->q, p->stag, how == SETTLE_REQUEUE, NULL);
    }
    if (p->limited)
        pv->n_limited--;
    wr_queue_unref(p->q);
    p->q = NULL;
    p->cons = NULL;
    p->staged = SETTLE_NONE;
    pv->ring.holes++;
}

static void kick_consumers(struct amqp_chan_priv *pv)
{
    for (struct consumer *cons = pv->consumers; cons; cons = cons->next)
        wr_consumer_kick(cons->c);
}

/* Settling freed room under the channel-wide prefetch: consumers of other queues may go on. */
static void after_settle(struct amqp_chan_priv *pv, uint32_t limited_before)
{
    ring_trim(&pv->ring);
    if (pv->global_prefetch && limited_before >= pv->global_prefetch &&
        pv->n_limited < pv->global_prefetch)
        kick_consumers(pv);
}

/* Settles (or, in a transaction, stages) what basic.ack / nack / reject names: the delivery
 * tag alone, or with multiple every outstanding one up to it (tag 0: all). False when the
 * tag is not outstanding, as RabbitMQ's "unknown delivery tag". */
static bool settle_tags(struct amqp_chan *ch, uint64_t tag, bool multiple, enum settle how)
{
    struct amqp_chan_priv *pv = ch->priv;
    struct ring *r = &pv->ring;
    uint64_t upto = tag;
    if (!(multiple && tag == 0)) {
        struct pending *p = ring_find(r, tag);
        if (!p || !outstanding(p))
            return false;
        if (!multiple) {
            uint32_t limited_before = pv->n_limited;
            if (pv->tx)
                p->staged = (uint8_t)how;
            else
                pending_settle(pv, p, how);
            after_settle(pv, limited_before);
            return true;
        }
    } else {
        upto = UINT64_MAX;
    }
    uint32_t limited_before = pv->n_limited;
    for (size_t i = 0; i < r->len && ring_at(r, i)->dtag <= upto; i++) {
        struct pending *p = ring_at(r, i);
        if (!outstanding(p))
            continue;
        if (pv->tx)
            p->staged = (uint8_t)how;
        else
            pending_settle(pv, p, how);
    }
    after_settle(pv, limited_before);
    return true;
}

/* Applies (commit) or forgets (rollback) what the transaction staged. */
static void settle_staged(struct amqp_chan_priv *pv, bool apply)
{
    struct ring *r = &pv->ring;
    uint32_t limited_before = pv->n_limited;
    for (size_t i = 0; i < r->len; i++) {
        struct pending *p = ring_at(r, i);
        if (!p->q || p->staged == SETTLE_NONE)
            continue;
        if (apply)
            pending_settle(pv, p, (enum settle)p->staged);
        else
            p->staged = SETTLE_NONE;
    }
    after_settle(pv, limited_before);
}

/* basic.recover and channel teardown: every unacked delivery goes back to its queue. */
static void requeue_all(struct amqp_chan_priv *pv)
{
    struct ring *r = &pv->ring;
    uint32_t limited_before = pv->n_limited;
    for (size_t i = 0; i < r->len; i++)
        if (outstanding(ring_at(r, i)))
            pending_settle(pv, ring_at(r, i), SETTLE_REQUEUE);
    after_settle(pv, limited_before);
}

/* ---- consumers ------------------------------------------------------------------------- */

static struct consumer *consumer_find(const struct amqp_chan_priv *pv, struct wr_str tag)
{
    for (struct consumer *cons = pv->consumers; cons; cons = cons->next)
        if (cons->tag_len == tag.len && memcmp(cons->tag, tag.ptr, tag.len) == 0)
            return cons;
    return NULL;
}

/* The consumer is gone from the broker: its unacked deliveries stay on the channel and are
 * settled through their queue from now on. */
static void consumer_forget(struct amqp_chan_priv *pv, struct consumer *cons)
{
    for (struct consumer **pp = &pv->consumers; *pp; pp = &(*pp)->next)
        if (*pp == cons) {
            *pp = cons->next;
            break;
        }
    for (size_t i = 0; i < pv->ring.len; i++)
        if (ring_at(&pv->ring, i)->cons == cons)
            ring_at(&pv->ring, i)->cons = NULL;
    free(cons);
}

static void consumer_deliver(struct wr_consumer *c, const struct wr_delivery *d, void *data)
{
    struct consumer *cons = data;
    struct amqp_chan *ch = cons->ch;
    struct amqp_chan_priv *pv = ch->priv;
    uint64_t dtag = pv->next_tag;
    if (!cons->no_ack) {
        struct pending p = {dtag, wr_queue_ref(d->q), cons, d->tag, 1, SETTLE_NONE};
        if (!ring_push(&pv->ring, &p)) {
            wr_queue_unref(d->q);
            wr_consumer_nack(c, d->tag, true, NULL);
            fail_oom(ch, 0);
            return;
        }
        pv->n_limited++;
    }
    pv->next_tag++;
    struct amqp_method m = {.id = AMQP_BASIC_DELIVER};
    m.u.basic_deliver = (struct amqp_basic_deliver){
        .consumer_tag = {cons->tag, cons->tag_len},
        .delivery_tag = dtag,
        .redelivered = d->redelivered,
        .exchange = d->msg->exchange,
        .routing_key = d->msg->routing_key,
    };
    send_content(ch, &m, d->msg);
}

/* Deliveries wait while the socket is backed up (chan_kick resumes them) or the channel-wide
 * prefetch is reached (an ack resumes them). */
static bool consumer_ready(struct wr_consumer *c, void *data)
{
    (void)c;
    struct consumer *cons = data;
    struct amqp_chan *ch = cons->ch;
    const struct amqp_chan_priv *pv = ch->priv;
    if (ch->state != AMQP_CHAN_OPEN || conn_out_full(ch->conn))
        return false;
    return cons->no_ack || !pv->global_prefetch || pv->n_limited < pv->global_prefetch;
}

/* The queue was deleted: tell a client that asked for it (consumer_cancel_notify). */
static void consumer_cancelled(struct wr_consumer *c, void *data)
{
    (void)c;
    struct consumer *cons = data;
    struct amqp_chan *ch = cons->ch;
    if (ch->conn->cap_consumer_cancel_notify && ch->state == AMQP_CHAN_OPEN) {
        struct amqp_method m = {.id = AMQP_BASIC_CANCEL};
        m.u.basic_cancel = (struct amqp_basic_cancel){{cons->tag, cons->tag_len}, true};
        conn_send(ch->conn, ch->id, &m);
    }
    consumer_forget(ch->priv, cons);
}

static const struct wr_consumer_ops consumer_ops = {
    .size = sizeof(struct wr_consumer_ops),
    .deliver = consumer_deliver,
    .ready = consumer_ready,
    .cancelled = consumer_cancelled,
};

/* ---- direct reply-to ------------------------------------------------------------------- */

/* RabbitMQ's direct reply-to: a channel consuming the pseudo-queue amq.rabbitmq.reply-to
 * (no-ack) gets, through the default exchange, every message published to the routing key
 * "amq.rabbitmq.reply-to.<its key>"; its own publishes with reply_to set to the pseudo-queue
 * carry that name instead. A reply reaches no real queue, so a mandatory one also comes back
 * with basic.return, as in RabbitMQ. The routes of every channel live in one table. */
#define REPLY_TO "amq.rabbitmq.reply-to"
#define REPLY_TO_LEN (sizeof REPLY_TO - 1)
#define REPLY_BUCKETS 256

struct reply_route {
    struct reply_route *next;
    struct amqp_chan *ch;
    size_t name_len;
    char name[64];             /* "amq.rabbitmq.reply-to.<22 random characters>" */
};

static struct reply_route *reply_routes[REPLY_BUCKETS];

static struct reply_route **reply_bucket(struct wr_str name)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < name.len; i++)
        h = (h ^ (uint8_t)name.ptr[i]) * 16777619u;
    return &reply_routes[h % REPLY_BUCKETS];
}

static struct reply_route *reply_find(struct wr_str name)
{
    for (struct reply_route *r = *reply_bucket(name); r; r = r->next)
        if (r->name_len == name.len && memcmp(r->name, name.ptr, name.len) == 0)
            return r;
    return NULL;
}

static bool reply_start(struct amqp_chan_priv *pv, struct amqp_chan *ch)
{
    struct reply_route *r = malloc(sizeof *r);
    if (!r)
        return false;
    r->ch = ch;
    do {
        char name[256];
        gen_name(name, REPLY_TO ".");
        r->name_len = strlen(name);
        memcpy(r->name, name, r->name_len + 1);
    } while (reply_find((struct wr_str){r->name, r->name_len}));
    struct reply_route **bucket = reply_bucket((struct wr_str){r->name, r->name_len});
    r->next = *bucket;
    *bucket = r;
    pv->reply = r;
    return true;
}

static void reply_stop(struct amqp_chan_priv *pv)
{
    struct reply_route *r = pv->reply;
    if (!r)
        return;
    for (struct reply_route **pp = reply_bucket((struct wr_str){r->name, r->name_len}); *pp;
         pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    free(r);
    pv->reply = NULL;
    pv->reply_tag_len = 0;
}

static bool is_reply_name(struct wr_str s)
{
    return s.len > REPLY_TO_LEN && memcmp(s.ptr, REPLY_TO ".", REPLY_TO_LEN + 1) == 0;
}

/* A message published through the default exchange to a reply route. RabbitMQ sends it
 * with the channel's next delivery tag without using it up; so do we. */
static void reply_deliver(const struct wr_msg *msg)
{
    struct reply_route *r = reply_find(msg->routing_key);
    if (!r || r->ch->state != AMQP_CHAN_OPEN)
        return;
    struct amqp_chan *ch = r->ch;
    struct amqp_chan_priv *pv = ch->priv;
    struct amqp_method m = {.id = AMQP_BASIC_DELIVER};
    m.u.basic_deliver = (struct amqp_basic_deliver){
        .consumer_tag = {pv->reply_tag, pv->reply_tag_len},
        .delivery_tag = pv->next_tag,
        .redelivered = false,
        .exchange = msg->exchange,
        .routing_key = msg->routing_key,
    };
    send_content(ch, &m, msg);
}

static void reply_consume(struct amqp_chan *ch, const struct amqp_method *m)
{
    const struct amqp_basic_consume *a = &m->u.basic_consume;
    struct amqp_chan_priv *pv = ch->priv;
    if (a->consumer_tag.len && consumer_find(pv, a->consumer_tag)) {
        char tag[256];
        str_copy(tag, a->consumer_tag);
        fail(ch, AMQP_NOT_ALLOWED, m->id, "attempt to reuse consumer tag '%s'", tag);
        return;
    }
    if (!a->no_ack) {
        fail(ch, AMQP_PRECONDITION_FAILED, m->id, "reply consumer cannot acknowledge");
        return;
    }
    if (pv->reply) {
        fail(ch, AMQP_PRECONDITION_FAILED, m->id, "reply consumer already set");
        return;
    }
    if (!reply_start(pv, ch)) {
        fail_oom(ch, m->id);
        return;
    }
    if (a->consumer_tag.len)
        str_copy(pv->reply_tag, a->consumer_tag);
    else
        gen_name(pv->reply_tag, "amq.ctag-");
    pv->reply_tag_len = (uint8_t)strlen(pv->reply_tag);
    if (a->nowait)
        return;
    struct amqp_method r = {.id = AMQP_BASIC_CONSUME_OK};
    r.u.basic_consume_ok.consumer_tag = (struct wr_str){pv->reply_tag, pv->reply_tag_len};
    conn_send(ch->conn, ch->id, &r);
}

/* ---- publisher confirms and barriers --------------------------------------------------- */

static void send_confirm(struct amqp_chan *ch, uint32_t id, uint64_t seq, bool multiple)
{
    struct amqp_method m = {.id = id};
    if (id == AMQP_BASIC_ACK)
        m.u.basic_ack = (struct amqp_basic_ack){seq, multiple};
    else
        m.u.basic_nack = (struct amqp_basic_nack){seq, multiple, false};
    amqp_wr_method(&ch->conn->out, ch->id, &m);
}

/* Confirms every publish up to upto: runs of acks as one multiple ack each, nacks singly
 * where a queue refused the message; all nacked when the barrier failed. */
static void confirm_upto(struct amqp_chan *ch, uint64_t upto, int status)
{
    struct amqp_chan_priv *pv = ch->priv;
    uint64_t seq = pv->confirmed + 1;
    if (status != WR_OK && seq <= upto) {
        send_confirm(ch, AMQP_BASIC_NACK, upto, true);
        while (pv->nacks_len && pv->nacks[pv->nacks_head] <= upto) {
            pv->nacks_head++;
            pv->nacks_len--;
        }
        seq = upto + 1;
    }
    while (seq <= upto) {
        uint64_t nack = upto + 1;
        if (pv->nacks_len && pv->nacks[pv->nacks_head] <= upto)
            nack = pv->nacks[pv->nacks_head];
        if (nack > seq)
            send_confirm(ch, AMQP_BASIC_ACK, nack - 1, nack - 1 > seq);
        if (nack <= upto) {
            send_confirm(ch, AMQP_BASIC_NACK, nack, false);
            pv->nacks_head++;
            pv->nacks_len--;
        }
        seq = nack + 1;
    }
    if (!pv->nacks_len)
        pv->nacks_head = 0;
    pv->confirmed = upto;
    conn_output(ch->conn);
}

static void commit_done(struct amqp_chan *ch, int status)
{
    struct amqp_chan_priv *pv = ch->priv;
    pv->committing = false;
    if (pv->tx_failed || status != WR_OK) {
        pv->tx_failed = false;
        chan_fail(ch, AMQP_PRECONDITION_FAILED, AMQP_TX_COMMIT, "partial tx completion");
        return;
    }
    reply(ch, AMQP_TX_COMMIT_OK);
}

static void barrier_done(void *data, int status)
{
    struct barrier *bar = data;
    struct amqp_chan *ch = bar->ch;
    struct amqp_chan_priv *pv = ch->priv;
    for (struct barrier **pp = &pv->barriers; *pp; pp = &(*pp)->next)
        if (*pp == bar) {
            *pp = bar->next;
            break;
        }
    /* A later barrier that completed first covered this one's publishes too. */
    if (bar->upto > pv->confirmed)
        confirm_upto(ch, bar->upto, status);
    if (bar->commit)
        commit_done(ch, status);
    free(bar);
}

/* Asks the broker for a barrier over everything stored and settled so far. */
static bool barrier_start(struct amqp_chan *ch, bool commit)
{
    struct amqp_chan_priv *pv = ch->priv;
    struct barrier *bar = malloc(sizeof *bar);
    if (bar) {
        *bar = (struct barrier){ch, NULL, pv->next_seq - 1, commit, pv->barriers};
        bar->sync = wr_broker_sync(broker_of(ch), barrier_done, bar);
    }
    if (!bar || !bar->sync) {
        free(bar);
        fail_oom(ch, commit ? AMQP_TX_COMMIT : 0);
        return false;
    }
    pv->barriers = bar;
    return true;
}

static void confirm_flush(struct wr_loop *lp, void *data)
{
    (void)lp;
    struct amqp_chan *ch = data;
    ch->priv->flush_deferred = false;
    barrier_start(ch, false);
}

/* A publish in confirm mode: nacked (refused) or acked at the end-of-turn barrier. */
static void confirm_publish(struct amqp_chan *ch, bool refused)
{
    struct amqp_chan_priv *pv = ch->priv;
    uint64_t seq = pv->next_seq++;
    if (refused) {
        if (pv->nacks_head + pv->nacks_len == pv->nacks_cap && pv->nacks_head) {
            memmove(pv->nacks, pv->nacks + pv->nacks_head, pv->nacks_len * sizeof *pv->nacks);
            pv->nacks_head = 0;
        }
        if (pv->nacks_len == pv->nacks_cap) {
            size_t cap = pv->nacks_cap ? pv->nacks_cap * 2 : 16;
            uint64_t *nacks = realloc(pv->nacks, cap * sizeof *nacks);
            if (!nacks) {
                fail_oom(ch, AMQP_BASIC_PUBLISH);
                return;
            }
            pv->nacks = nacks;
            pv->nacks_cap = cap;
        }
        pv->nacks[pv->nacks_head + pv->nacks_len++] = seq;
    }
    if (pv->flush_deferred)
        return;
    if (wr_loop_defer(wr_broker_loop(broker_of(ch)), confirm_flush, ch) != WR_OK) {
        fail_oom(ch, AMQP_BASIC_PUBLISH);
        return;
    }
    pv->flush_deferred = true;
}

/* RabbitMQ's names of the field-table types, as its error texts print them. */
static const char *erl_type(enum wr_value_type t)
{
    switch (t) {
    case WR_V_BOOL: return "bool";
    case WR_V_I8: return "byte";
    case WR_V_U8: return "unsignedbyte";
    case WR_V_I16: return "short";
    case WR_V_U16: return "unsignedshort";
    case WR_V_I32: return "signedint";
    case WR_V_U32: return "unsignedint";
    case WR_V_I64: return "long";
    case WR_V_FLOAT: return "float";
    case WR_V_DOUBLE: return "double";
    case WR_V_DECIMAL: return "decimal";
    case WR_V_STR: return "longstr";
    case WR_V_BYTES: return "binary";
    case WR_V_TIMESTAMP: return "timestamp";
    case WR_V_TABLE: return "table";
    case WR_V_ARRAY: return "array";
    case WR_V_VOID: break;
    }
    return "void";
}

/* ---- exchange class -------------------------------------------------------------------- */

static const char *bool_str(bool b)
{
    return b ? "true" : "false";
}

static bool exchange_not_default(struct amqp_chan *ch, uint32_t method_id, const char *name)
{
    if (name[0])
        return true;
    fail(ch, AMQP_ACCESS_REFUSED, method_id, "operation not permitted on the default exchange");
    return false;
}

static void no_exchange(struct amqp_chan *ch, uint32_t method_id, const char *name)
{
    fail(ch, AMQP_NOT_FOUND, method_id, "no exchange '%s' in vhost '%s'", name, vhost_of(ch));
}

static bool exchange_field_equal(struct amqp_chan *ch, uint32_t method_id, const char *name,
                                 const char *field, bool current, bool received)
{
    if (current == received)
        return true;
    fail(ch, AMQP_PRECONDITION_FAILED, method_id,
         "inequivalent arg '%s' for exchange '%s' in vhost '%s': received '%s' but current is "
         "'%s'",
         field, name, vhost_of(ch), bool_str(received), bool_str(current));
    return false;
}

static void exchange_declare(struct amqp_chan *ch, const struct amqp_method *m)
{
    const struct amqp_exchange_declare *a = &m->u.exchange_declare;
    char name[256], type[256];
    name_copy(name, a->exchange);
    if (a->passive) {
        if (!exchange_not_default(ch, m->id, name))
            return;
        if (!wr_exchange_find(ch->conn->vhost, name)) {
            no_exchange(ch, m->id, name);
            return;
        }
        reply_unless(ch, a->nowait, AMQP_EXCHANGE_DECLARE_OK);
        return;
    }
    str_copy(type, a->type);
    if (!wr_broker_plugin(broker_of(ch), type, WR_PLUGIN_EXCHANGE)) {
        fail(ch, AMQP_COMMAND_INVALID, m->id, "unknown exchange type '%s'", type);
        return;
    }
    if (!exchange_not_default(ch, m->id, name))
        return;
    struct wr_exchange *ex = wr_exchange_find(ch->conn->vhost, name);
    if (!ex) {
        if (!wr_broker_user_may_declare(broker_of(ch), ch->conn->user, type)) {
            fail(ch, AMQP_ACCESS_REFUSED, m->id,
                 "user '%s' may not declare exchanges of type '%s', which run scripts "
                 "(users: lua_scripts)",
                 ch->conn->user, type);
            return;
        }
        if (reserved(name)) {
            fail(ch, AMQP_ACCESS_REFUSED, m->id,
                 "exchange name '%s' contains reserved prefix 'amq.*'", name);
            return;
        }
        const struct wr_value *ae = wr_table_get(a->arguments, "alternate-exchange");
        if (ae && ae->type != WR_V_STR) {
            fail(ch, AMQP_PRECONDITION_FAILED, m->id,
                 "invalid type '%s' for arg 'alternate-exchange' in exchange '%s' in "
                 "vhost '%s'",
                 erl_type(ae->type), name, vhost_of(ch));
            return;
        }
        struct wr_exchange_decl decl = {name, type, a->durable, a->auto_delete, a->internal,
                                        a->arguments};
        struct wr_error err = {0};
        int rc = wr_exchange_declare(ch->conn->vhost, &decl, &ex, &err);
        if (rc != WR_OK) {
            fail_core(ch, m->id, rc, &err);
            return;
        }
        reply_unless(ch, a->nowait, AMQP_EXCHANGE_DECLARE_OK);
        return;
    }
    const char *current = wr_exchange_type(ex);
    if (strcmp(current, type) != 0) {
        fail(ch, AMQP_PRECONDITION_FAILED, m->id,
             "inequivalent arg 'type' for exchange '%s' in vhost '%s': received '%s' but "
             "current is '%s'",
             name, vhost_of(ch), type, current);
        return;
    }
    if (!exchange_field_equal(ch, m->id, name, "durable", wr_exchange_is_durable(ex),
                              a->durable) ||
        !exchange_field_equal(ch, m->id, name, "auto_delete", wr_exchange_is_auto_delete(ex),
                              a->auto_delete) ||
        !exchange_field_equal(ch, m->id, name, "internal", wr_exchange_is_internal(ex),
                              a->internal))
        return;
    reply_unless(ch, a->nowait, AMQP_EXCHANGE_DECLARE_OK);
}

static void exchange_delete(struct amqp_chan *ch, const struct amqp_method *m)
{
    const struct amqp_exchange_delete *a = &m->u.exchange_delete;
    char name[256];
    name_copy(name, a->exchange);
    if (!exchange_not_default(ch, m->id, name))
        return;
    if (reserved(name)) {
        fail(ch, AMQP_ACCESS_REFUSED, m->id,
             "deletion of system exchange '%s' in vhost '%s' not allowed", name,
             vhost_of(ch));
        return;
    }
    struct wr_exchange *ex = wr_exchange_find(ch->conn->vhost, name);
    if (ex) {
        struct wr_error err = {0};
        int rc = wr_exchange_delete(ex, a->if_unused, &err);
        if (rc == WR_EBUSY) {
            fail(ch, AMQP_PRECONDITION_FAILED, m->id, "exchange '%s' in vhost '%s' in use",
                 name, vhost_of(ch));
            return;
        }
        if (rc != WR_OK) {
            fail_core(ch, m->id, rc, &err);
            return;
        }
    }
    reply_unless(ch, a->nowait, AMQP_EXCHANGE_DELETE_OK);
}

/* exchange.bind and exchange.unbind: missing ends are 404 for bind, a no-op for unbind. */
static void exchange_bind(struct amqp_chan *ch, const struct amqp_method *m, bool bind)
{
    const struct amqp_exchange_bind *a = &m->u.exchange_bind;
    const struct amqp_exchange_unbind *u = &m->u.exchange_unbind;
    struct wr_str dst_s = bind ? a->destination : u->destination;
    struct wr_str src_s = bind ? a->source : u->source;
    struct wr_str key_s = bind ? a->routing_key : u->routing_key;
    const struct wr_table *args = bind ? a->arguments : u->arguments;
    bool nowait = bind ? a->nowait : u->nowait;
    char dst_name[256], src_name[256], key[256];
    name_copy(dst_name, dst_s);
    name_copy(src_name, src_s);
    str_copy(key, key_s);
    if (!exchange_not_default(ch, m->id, dst_name) ||
        !exchange_not_default(ch, m->id, src_name))
        return;
    struct wr_exchange *src = wr_exchange_find(ch->conn->vhost, src_name);
    struct wr_exchange *dst = wr_exchange_find(ch->conn->vhost, dst_name);
    struct wr_error err = {0};
    int rc = WR_OK;
    if (bind) {
        if (!src) {
            no_exchange(ch, m->id, src_name);
            return;
        }
        if (!dst) {
            no_exchange(ch, m->id, dst_name);
            return;
        }
        rc = wr_bind_exchange(src, dst, key, args, &err);
    } else if (src && dst) {
        rc = wr_unbind_exchange(src, dst, key, args, &err);
    }
    if (rc != WR_OK) {
        fail_core(ch, m->id, rc, &err);
        return;
    }
    reply_unless(ch, nowait, bind ? AMQP_EXCHANGE_BIND_OK : AMQP_EXCHANGE_UNBIND_OK);
}

/* ---- queue arguments ------------------------------------------------------------------- */

/* The queue types RabbitMQ 3.10 knows. Each accepts its own declare arguments; a storage
 * plugin named in x-queue-type counts as classic, except "log", which is a stream. */
enum qtype { QT_CLASSIC = 1, QT_QUORUM = 2, QT_STREAM = 4 };

static const char *qtype_module(enum qtype t)
{
    return t == QT_QUORUM   ? "rabbit_quorum_queue"
           : t == QT_STREAM ? "rabbit_stream_queue"
                            : "rabbit_classic_queue";
}

static enum qtype qtype_of(const struct wr_table *args)
{
    const struct wr_value *v = wr_table_get(args, "x-queue-type");
    if (!v || v->type != WR_V_STR)
        return QT_CLASSIC;
    struct wr_str s = {v->u.s.ptr, v->u.s.len};
    if (str_eq(s, "quorum"))
        return QT_QUORUM;
    return str_eq(s, "stream") || str_eq(s, "log") ? QT_STREAM : QT_CLASSIC;
}

/* How a declare argument is validated. */
enum arg_check {
    ARG_ANY,          /* known, not validated */
    ARG_EXPIRES,      /* positive integer up to MAX_EXPIRY */
    ARG_TTL,          /* non-negative integer up to MAX_EXPIRY */
    ARG_DLX,          /* string */
    ARG_DLRK,         /* string, with x-dead-letter-exchange */
    ARG_DL_STRATEGY,  /* at-most-once | at-least-once */
    ARG_NON_NEG,      /* non-negative integer */
    ARG_PRIORITY,     /* 0..MAX_PRIORITY */
    ARG_OVERFLOW,     /* drop-head | reject-publish | reject-publish-dlx */
    ARG_MODE,         /* default | lazy */
    ARG_VERSION,      /* 1 | 2 */
    ARG_BOOL,
    ARG_GROUP_SIZE,   /* positive integer */
    ARG_MAX_AGE,      /* "<n>Y|M|D|h|m|s" */
    ARG_LOCATOR,      /* client-local | balanced | random | least-leaders */
};

/* What an argument sets in the declaration. */
enum arg_fill { FILL_NONE, FILL_EXPIRES, FILL_TTL, FILL_DLX, FILL_DLRK, FILL_MAX_LENGTH,
                FILL_MAX_BYTES, FILL_OVERFLOW, FILL_MAX_PRIORITY };

/* RabbitMQ's declare arguments, in the order it validates and compares them, with the queue
 * types that accept each (x-queue-type is validated apart, before the others). */
static const struct queue_arg {
    const char *key;
    enum arg_check check;
    unsigned types;
    enum arg_fill fill;
} queue_args[] = {
    {"x-expires", ARG_EXPIRES, QT_CLASSIC | QT_QUORUM, FILL_EXPIRES},
    {"x-message-ttl", ARG_TTL, QT_CLASSIC | QT_QUORUM, FILL_TTL},
    {"x-dead-letter-exchange", ARG_DLX, QT_CLASSIC | QT_QUORUM, FILL_DLX},
    {"x-dead-letter-routing-key", ARG_DLRK, QT_CLASSIC | QT_QUORUM, FILL_DLRK},
    {"x-dead-letter-strategy", ARG_DL_STRATEGY, QT_QUORUM, FILL_NONE},
    {"x-max-length", ARG_NON_NEG, QT_CLASSIC | QT_QUORUM, FILL_MAX_LENGTH},
    {"x-max-length-bytes", ARG_NON_NEG, QT_CLASSIC | QT_QUORUM | QT_STREAM, FILL_MAX_BYTES},
    {"x-max-in-memory-length", ARG_NON_NEG, QT_QUORUM, FILL_NONE},
    {"x-max-in-memory-bytes", ARG_NON_NEG, QT_QUORUM, FILL_NONE},
    {"x-max-priority", ARG_PRIORITY, QT_CLASSIC, FILL_MAX_PRIORITY},
    {"x-overflow", ARG_OVERFLOW, QT_CLASSIC | QT_QUORUM, FILL_OVERFLOW},
    {"x-queue-mode", ARG_MODE, QT_CLASSIC, FILL_NONE},
    {"x-queue-version", ARG_VERSION, QT_CLASSIC, FILL_NONE},
    {"x-single-active-consumer", ARG_BOOL, QT_CLASSIC | QT_QUORUM, FILL_NONE},
    {"x-queue-type", ARG_ANY, QT_CLASSIC | QT_QUORUM | QT_STREAM, FILL_NONE},
    {"x-quorum-initial-group-size", ARG_GROUP_SIZE, QT_QUORUM, FILL_NONE},
    {"x-max-age", ARG_MAX_AGE, QT_STREAM, FILL_NONE},
    {"x-stream-max-segment-size-bytes", ARG_NON_NEG, QT_STREAM, FILL_NONE},
    {"x-initial-cluster-size", ARG_GROUP_SIZE, QT_STREAM, FILL_NONE},
    {"x-queue-leader-locator", ARG_LOCATOR, QT_QUORUM | QT_STREAM, FILL_NONE},
    {"x-queue-master-locator", ARG_ANY, QT_CLASSIC, FILL_NONE},
    {"x-delivery-limit", ARG_ANY, QT_QUORUM, FILL_NONE},
};

#define N_QUEUE_ARGS (sizeof queue_args / sizeof queue_args[0])

static const struct queue_arg *queue_arg_find(const char *key)
{
    for (size_t i = 0; i < N_QUEUE_ARGS; i++)
        if (strcmp(queue_args[i].key, key) == 0)
            return &queue_args[i];
    return NULL;
}

static bool str_in(const struct wr_value *v, const char *const *set)
{
    for (; *set; set++)
        if (strlen(*set) == v->u.s.len && memcmp(*set, v->u.s.ptr, v->u.s.len) == 0)
            return true;
    return false;
}

/* The validators' errors, rendered as RabbitMQ's ~p renders them: an Erlang term or a
 * quoted string. */
static bool int_arg(const struct wr_value *v, char *why, size_t n)
{
    if (wr_value_is_int(v))
        return true;
    snprintf(why, n, "\"expected integer, got %s\"", erl_type(v->type));
    return false;
}

static bool typed_arg(const struct wr_value *v, enum wr_value_type want, char *why, size_t n)
{
    if (v->type == want)
        return true;
    snprintf(why, n, "{unacceptable_type,%s}", erl_type(v->type));
    return false;
}

static bool expiry_ok(int64_t ms, char *why, size_t n)
{
    if (ms < 0)
        snprintf(why, n, "{value_negative,%" PRId64 "}", ms);
    else if (ms > MAX_EXPIRY)
        snprintf(why, n, "{value_too_large,%" PRId64 "}", ms);
    else
        return true;
    return false;
}

/* RabbitMQ's intervals for streams, "<n>Y|M|D|h|m|s" (a month is 30 days, a year 365):
 * false if s is not one. */
static bool interval_ms(struct wr_str s, int64_t *ms)
{
    static const char units[] = "YMDhms";
    static const int64_t unit_ms[] = {31536000000LL, 2592000000LL, 86400000, 3600000, 60000,
                                      1000};
    size_t i = 0;
    int64_t n = 0;
    while (i < s.len && s.ptr[i] >= '0' && s.ptr[i] <= '9' && n < UINT32_MAX)
        n = n * 10 + (s.ptr[i++] - '0');
    const char *u = i > 0 && s.len - i == 1 && s.ptr[i] ? strchr(units, s.ptr[i]) : NULL;
    if (!u)
        return false;
    *ms = n * unit_ms[u - units];
    return true;
}

static bool max_age_ok(const struct wr_value *v)
{
    int64_t ms = 0;
    return interval_ms((struct wr_str){v->u.s.ptr, v->u.s.len}, &ms) && ms > 0;
}

static bool arg_valid(enum arg_check check, const struct wr_value *v,
                      const struct wr_table *args, char *why, size_t n)
{
    static const char *const strategies[] = {"at-most-once", "at-least-once", NULL};
    static const char *const overflows[] = {"drop-head", "reject-publish",
                                            "reject-publish-dlx", NULL};
    static const char *const modes[] = {"default", "lazy", NULL};
    static const char *const locators[] = {"client-local", "balanced", "random",
                                           "least-leaders", NULL};
    const char *bad = NULL;
    int len = (int)(v->u.s.len < 200 ? v->u.s.len : 200);
    switch (check) {
    case ARG_ANY:
        return true;
    case ARG_EXPIRES:
        if (!int_arg(v, why, n))
            return false;
        if (v->u.i != 0)
            return expiry_ok(v->u.i, why, n);
        bad = "{value_zero,0}";
        break;
    case ARG_TTL:
        return int_arg(v, why, n) && expiry_ok(v->u.i, why, n);
    case ARG_DLX:
        return typed_arg(v, WR_V_STR, why, n);
    case ARG_DLRK:
        if (!typed_arg(v, WR_V_STR, why, n))
            return false;
        if (!wr_table_get(args, "x-dead-letter-exchange"))
            bad = "routing_key_but_no_dlx_defined";
        break;
    case ARG_DL_STRATEGY:
        if (!typed_arg(v, WR_V_STR, why, n))
            return false;
        if (!str_in(v, strategies))
            bad = "invalid_dlx_strategy";
        break;
    case ARG_NON_NEG:
    case ARG_PRIORITY:
    case ARG_VERSION:
    case ARG_GROUP_SIZE:
        if (!int_arg(v, why, n))
            return false;
        if (v->u.i < 0) {
            snprintf(why, n, "{value_negative,%" PRId64 "}", v->u.i);
            return false;
        }
        if (check == ARG_PRIORITY && v->u.i > MAX_PRIORITY) {
            snprintf(why, n, "{max_value_exceeded,%" PRId64 "}", v->u.i);
            return false;
        }
        if (check == ARG_VERSION && v->u.i != 1 && v->u.i != 2) {
            snprintf(why, n, "\"unsupported queue version '%" PRId64 "'\"", v->u.i);
            return false;
        }
        if (check == ARG_GROUP_SIZE && v->u.i == 0)
            bad = "{value_zero,0}";
        break;
    case ARG_OVERFLOW:
        if (!typed_arg(v, WR_V_STR, why, n))
            return false;
        if (!str_in(v, overflows))
            bad = "invalid_overflow";
        break;
    case ARG_MODE:
        if (!typed_arg(v, WR_V_STR, why, n))
            return false;
        if (str_in(v, modes))
            return true;
        snprintf(why, n, "\"unsupported queue mode '%.*s'\"", len, v->u.s.ptr);
        return false;
    case ARG_BOOL:
        return typed_arg(v, WR_V_BOOL, why, n);
    case ARG_MAX_AGE:
        if (!typed_arg(v, WR_V_STR, why, n))
            return false;
        if (!max_age_ok(v))
            bad = "invalid_max_age";
        break;
    case ARG_LOCATOR:
        if (!typed_arg(v, WR_V_STR, why, n))
            return false;
        if (!str_in(v, locators))
            bad = "invalid_queue_locator_arg";
        break;
    }
    if (!bad)
        return true;
    snprintf(why, n, "%s", bad);
    return false;
}

/* x-queue-type: RabbitMQ's three, or the name of a loaded storage plugin. */
static bool queue_type_valid(const struct amqp_chan *ch, const struct wr_value *v, char *why,
                             size_t n)
{
    static const char *const types[] = {"classic", "quorum", "stream", NULL};
    if (!typed_arg(v, WR_V_STR, why, n))
        return false;
    char name[256];
    str_copy(name, (struct wr_str){v->u.s.ptr, v->u.s.len});
    if (str_in(v, types) ||
        (v->u.s.len < 256 && wr_broker_plugin(broker_of(ch), name, WR_PLUGIN_STORAGE)))
        return true;
    snprintf(why, n, "\"unsupported queue type '%s'\"", name);
    return false;
}

/* RabbitMQ's check_declare_arguments for a new queue: x-queue-type, then each argument its
 * type accepts, then no argument another type owns. False after failing the channel. */
static bool queue_args_check(struct amqp_chan *ch, uint32_t method_id, const char *name,
                             const struct wr_table *args, enum qtype qt)
{
    const char *key = "x-queue-type";
    const struct wr_value *v = wr_table_get(args, key);
    char why[300];
    bool ok = !v || queue_type_valid(ch, v, why, sizeof why);
    for (size_t i = 0; ok && i < N_QUEUE_ARGS; i++) {
        key = queue_args[i].key;
        v = wr_table_get(args, key);
        ok = !v || !(queue_args[i].types & qt) || arg_valid(queue_args[i].check, v, args, why,
                                                             sizeof why);
    }
    if (!ok) {
        fail(ch, AMQP_PRECONDITION_FAILED, method_id,
             "invalid arg '%s' for queue '%s' in vhost '%s': %s", key, name, vhost_of(ch), why);
        return false;
    }
    for (size_t i = 0; args && i < args->count; i++) {
        const struct queue_arg *arg = queue_arg_find(args->fields[i].name);
        if (arg && !(arg->types & qt)) {
            fail(ch, AMQP_PRECONDITION_FAILED, method_id,
                 "invalid arg '%s' for queue '%s' in vhost '%s' of queue type %s", arg->key,
                 name, vhost_of(ch), qtype_module(qt));
            return false;
        }
    }
    return true;
}

/* The strings a declaration points into. */
struct queue_strs {
    char dlx[256], dlrk[256], type[256];
};

/* Fills decl from valid arguments: those of its type only, as RabbitMQ ignores the rest of a
 * redeclaration. */
static void queue_args_fill(const struct wr_table *args, enum qtype qt,
                            struct wr_queue_decl *decl, struct queue_strs *strs)
{
    const struct wr_value *type = wr_table_get(args, "x-queue-type");
    strs->type[0] = '\0';
    if (type && type->type == WR_V_STR)
        str_copy(strs->type, (struct wr_str){type->u.s.ptr, type->u.s.len});
    for (size_t i = 0; i < N_QUEUE_ARGS; i++) {
        const struct wr_value *v = wr_table_get(args, queue_args[i].key);
        if (!v || !(queue_args[i].types & qt))
            continue;
        struct wr_str s = {v->u.s.ptr, v->u.s.len};
        switch (queue_args[i].fill) {
        case FILL_NONE:
            break;
        case FILL_EXPIRES:
            decl->expires_ms = v->u.i;
            break;
        case FILL_TTL:
            decl->message_ttl_ms = v->u.i;
            break;
        case FILL_DLX:
            str_copy(strs->dlx, s);
            decl->dead_letter_exchange = strs->dlx;
            break;
        case FILL_DLRK:
            str_copy(strs->dlrk, s);
            decl->dead_letter_routing_key = strs->dlrk;
            break;
        case FILL_MAX_LENGTH:
            decl->max_length = v->u.i;
            break;
        case FILL_MAX_BYTES:
            decl->max_length_bytes = v->u.i;
            break;
        case FILL_OVERFLOW:
            /* reject-publish-dlx dead-letters what it refuses in RabbitMQ; here it refuses. */
            decl->overflow = str_eq(s, "drop-head") ? WR_OVERFLOW_DROP_HEAD
                                                    : WR_OVERFLOW_REJECT_PUBLISH;
            break;
        case FILL_MAX_PRIORITY: /* validated as 0..255 */
            decl->max_priority = (uint8_t)v->u.i;
            break;
        }
    }
}

/* Erlang's rendering of an argument value (~ts for binaries, ~tp for the rest). */
static void value_text(char *out, size_t n, const struct wr_value *v)
{
    switch (v->type) {
    case WR_V_BOOL:
        snprintf(out, n, "%s", bool_str(v->u.b));
        break;
    case WR_V_FLOAT:
    case WR_V_DOUBLE:
        snprintf(out, n, "%.15g%s", v->u.d, v->u.d == (double)(int64_t)v->u.d ? ".0" : "");
        break;
    case WR_V_DECIMAL:
        snprintf(out, n, "{%u,%" PRIu32 "}", v->u.dec.scale, v->u.dec.value);
        break;
    case WR_V_STR:
    case WR_V_BYTES:
        snprintf(out, n, "%.*s", (int)(v->u.s.len < 200 ? v->u.s.len : 200), v->u.s.ptr);
        break;
    case WR_V_TABLE:
    case WR_V_ARRAY:
        snprintf(out, n, "[...]");
        break;
    case WR_V_VOID:
        snprintf(out, n, "undefined");
        break;
    default:
        snprintf(out, n, "%" PRId64, v->u.i);
        break;
    }
}

/* Integers (and decimals) compare with each other whatever their width, as floats do. */
static int type_class(enum wr_value_type t)
{
    if (wr_value_is_int(&(struct wr_value){.type = t}) || t == WR_V_DECIMAL)
        return -1;
    if (t == WR_V_FLOAT || t == WR_V_DOUBLE)
        return -2;
    return (int)t;
}

static bool value_same(const struct wr_value *a, const struct wr_value *b)
{
    if (type_class(a->type) != type_class(b->type))
        return false;
    switch (type_class(a->type)) {
    case -1:
        if (a->type == WR_V_DECIMAL || b->type == WR_V_DECIMAL)
            return a->type == b->type && a->u.dec.scale == b->u.dec.scale &&
                   a->u.dec.value == b->u.dec.value;
        return a->u.i == b->u.i;
    case -2:
        return a->u.d == b->u.d;
    default:
        return wr_value_equal(a, b);
    }
}

/* RabbitMQ's assert_args_equivalence for one key: a missing x-queue-type equals "classic". */
static bool args_key_equivalent(struct amqp_chan *ch, uint32_t method_id, const char *name,
                                const struct wr_table *current,
                                const struct wr_table *received, const char *key)
{
    const struct wr_value *cur = wr_table_get(current, key);
    const struct wr_value *rcv = wr_table_get(received, key);
    if (!cur && !rcv)
        return true;
    if (cur && rcv && value_same(cur, rcv))
        return true;
    const struct wr_value *given = cur ? cur : rcv;
    if (!(cur && rcv) && strcmp(key, "x-queue-type") == 0 && given->type == WR_V_STR &&
        str_eq((struct wr_str){given->u.s.ptr, given->u.s.len}, "classic"))
        return true;
    char cur_text[256] = "none", rcv_text[256] = "none", v[220];
    if (cur && rcv) {
        value_text(v, sizeof v, cur);
        snprintf(cur_text, sizeof cur_text, "'%s'", v);
        value_text(v, sizeof v, rcv);
        snprintf(rcv_text, sizeof rcv_text, "'%s'", v);
    } else if (cur) {
        value_text(v, sizeof v, cur);
        snprintf(cur_text, sizeof cur_text, "the value '%s' of type '%s'", v,
                 erl_type(cur->type));
    } else {
        value_text(v, sizeof v, rcv);
        snprintf(rcv_text, sizeof rcv_text, "the value '%s' of type '%s'", v,
                 erl_type(rcv->type));
    }
    fail(ch, AMQP_PRECONDITION_FAILED, method_id,
         "inequivalent arg '%s' for queue '%s' in vhost '%s': received %s but current is %s",
         key, name, vhost_of(ch), rcv_text, cur_text);
    return false;
}

/* Quorum queues and streams are durable, not exclusive, not auto-delete. */
static bool replicated_checks(struct amqp_chan *ch, uint32_t method_id, const char *name,
                              const struct wr_queue_decl *decl)
{
    const char *property = decl->auto_delete ? "auto-delete"
                           : decl->exclusive ? "exclusive-owner"
                           : !decl->durable  ? "non-durable"
                                             : NULL;
    if (!property)
        return true;
    fail(ch, AMQP_PRECONDITION_FAILED, method_id,
         "invalid property '%s' for queue '%s' in vhost '%s'", property, name, vhost_of(ch));
    return false;
}

/* The storage of a queue of type qt (type: x-queue-type as given): the vhost's storage for
 * its role (durable classic and quorum queues, transient classic queues, streams; by
 * default queue, memory and log), or a storage plugin named in x-queue-type. check: a new
 * queue, whose properties its type must allow. False after failing the channel. */
static bool queue_storage(struct amqp_chan *ch, uint32_t method_id, const char *name,
                          struct wr_queue_decl *decl, enum qtype qt, const char *type,
                          bool check)
{
    struct wr_broker *b = broker_of(ch);
    if (check && qt != QT_CLASSIC && !replicated_checks(ch, method_id, name, decl))
        return false;
    struct wr_vhost *vh = ch->conn->vhost;
    if (qt == QT_STREAM) {
        if (!(decl->storage = wr_vhost_storage(vh, WR_ROLE_STREAM))) {
            fail(ch, AMQP_PRECONDITION_FAILED, method_id,
                 "invalid arg 'x-queue-type' for queue '%s' in vhost '%s': \"unsupported queue "
                 "type '%s'\" (no log storage is loaded)",
                 name, vhost_of(ch), type);
            return false;
        }
    } else if (type[0] && strcmp(type, "classic") != 0 && strcmp(type, "quorum") != 0 &&
               wr_broker_plugin(b, type, WR_PLUGIN_STORAGE)) {
        decl->storage = type;
    } else {
        decl->storage = wr_vhost_storage(vh, qt == QT_QUORUM || decl->durable
                                                 ? WR_ROLE_DURABLE
                                                 : WR_ROLE_TRANSIENT);
    }
    return true;
}

/* ---- streams (queues on log storage) -------------------------------------------------- */

/* What RabbitMQ's stream queues answer to the verbs of queues that delete on ack. */
static void stream_refuses(struct amqp_chan *ch, uint32_t method_id, const char *verb,
                           const char *queue)
{
    fail(ch, AMQP_NOT_IMPLEMENTED, method_id,
         "%s not supported by stream queues queue '%s' in vhost '%s'", verb, queue,
         vhost_of(ch));
}

/* The stream queue of an outstanding delivery that a nack or reject of tag (multiple: and
 * below) would settle, or NULL. */
static const char *stream_of(struct amqp_chan_priv *pv, uint64_t tag, bool multiple)
{
    struct ring *r = &pv->ring;
    for (size_t i = 0; i < r->len; i++) {
        struct pending *p = ring_at(r, i);
        if (p->dtag > tag && !(multiple && tag == 0))
            break;
        if (outstanding(p) && (multiple || p->dtag == tag) && wr_queue_is_log(p->q))
            return wr_queue_name(p->q);
    }
    return NULL;
}

static int64_t wall_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* x-stream-offset as RabbitMQ reads it: "first", "last", "next", an interval back from now
 * ("90s", "15m", "2h", "7D", "1M", "1Y"), an offset (negative: first) or a timestamp. */
static bool stream_offset(const struct wr_value *v, struct wr_consume_args *args)
{
    if (!v)
        return true; /* "next" */
    if (wr_value_is_int(v) && v->type != WR_V_TIMESTAMP) {
        args->stream_start = WR_STREAM_OFFSET;
        args->stream_at = v->u.i;
        return true;
    }
    if (v->type == WR_V_TIMESTAMP) {
        args->stream_start = WR_STREAM_TIMESTAMP;
        args->stream_at = v->u.i * 1000; /* AMQP timestamps are seconds */
        return true;
    }
    if (v->type != WR_V_STR)
        return false;
    struct wr_str s = {v->u.s.ptr, v->u.s.len};
    if (str_eq(s, "first") || str_eq(s, "last") || str_eq(s, "next")) {
        args->stream_start = s.ptr[0] == 'f'   ? WR_STREAM_FIRST
                             : s.ptr[0] == 'l' ? WR_STREAM_LAST
                                               : WR_STREAM_NEXT;
        return true;
    }
    int64_t back = 0;
    if (!interval_ms(s, &back))
        return false;
    args->stream_start = WR_STREAM_TIMESTAMP;
    args->stream_at = wall_clock_ms() - back;
    return true;
}

/* The log storage's options a stream's declare arguments set: x-max-age is retention by
 * age, x-stream-max-segment-size-bytes the segment size (x-max-length-bytes, retention by
 * size, reaches the storage as its max_length_bytes). NULL out of memory. */
static struct wr_table *stream_options(const struct wr_table *arguments)
{
    struct wr_table *t = wr_table_new();
    const struct wr_value *age = wr_table_get(arguments, "x-max-age");
    const struct wr_value *seg = wr_table_get(arguments, "x-stream-max-segment-size-bytes");
    int64_t ms = 0;
    struct wr_value v;
    if (t && age && interval_ms((struct wr_str){age->u.s.ptr, age->u.s.len}, &ms) &&
        wr_table_add(t, "retention_ms", (v = wr_value_i64(ms), &v)) != WR_OK) {
        wr_table_free(t);
        return NULL;
    }
    if (t && seg && wr_value_is_int(seg) &&
        wr_table_add(t, "segment_bytes", (v = wr_value_i64(seg->u.i), &v)) != WR_OK) {
        wr_table_free(t);
        return NULL;
    }
    return t;
}

/* A stream's consumer must ack (acks are its credit) and have a per-consumer prefetch, as in
 * RabbitMQ. False after failing the channel or connection. */
static bool stream_consume_args(struct amqp_chan *ch, const struct amqp_method *m,
                                const char *name, const struct wr_table *arguments,
                                struct wr_consume_args *args)
{
    if (args->no_ack) {
        stream_refuses(ch, m->id, "automatic acknowledgement", name);
        return false;
    }
    if (!args->prefetch) {
        fail(ch, AMQP_PRECONDITION_FAILED, m->id,
             "consumer prefetch count is not set for 'queue '%s' in vhost '%s''", name,
             vhost_of(ch));
        return false;
    }
    if (!stream_offset(wr_table_get(arguments, "x-stream-offset"), args)) {
        /* RabbitMQ answers 541 with no text; say what is wrong. */
        fail(ch, AMQP_INTERNAL_ERROR, m->id,
             "invalid x-stream-offset for queue '%s' in vhost '%s': use first, last, next, an "
             "offset, a timestamp or an interval such as 1h",
             name, vhost_of(ch));
        return false;
    }
    return true;
}

/* ---- queue class ----------------------------------------------------------------------- */

static void declare_ok(struct amqp_chan *ch, struct wr_queue *q, bool nowait, bool created)
{
    struct amqp_chan_priv *pv = ch->priv;
    const char *name = wr_queue_name(q);
    snprintf(pv->last_queue, sizeof pv->last_queue, "%s", name);
    if (nowait)
        return;
    struct amqp_method m = {.id = AMQP_QUEUE_DECLARE_OK};
    m.u.queue_declare_ok = (struct amqp_queue_declare_ok){
        .queue = wr_str_c(name),
        /* RabbitMQ counts no messages in a stream: they are not "ready", only kept. */
        .message_count = created || wr_queue_is_log(q) ? 0 : (uint32_t)wr_queue_depth(q),
        .consumer_count = created ? 0 : wr_queue_consumer_count(q),
    };
    conn_send(ch->conn, ch->id, &m);
}

static void inequivalent_flag(struct amqp_chan *ch, uint32_t method_id, const char *name,
                              const char *field, bool received)
{
    fail(ch, AMQP_PRECONDITION_FAILED, method_id,
         "inequivalent arg '%s' for queue '%s' in vhost '%s': received '%s' but current is '%s'",
         field, name, vhost_of(ch), bool_str(received), bool_str(!received));
}

/* An existing queue redeclared: RabbitMQ's assert_equivalence, in its order (auto_delete
 * is left to wr_queue_declare, the one property it can still find different). */
static bool queue_equivalent(struct amqp_chan *ch, uint32_t method_id, struct wr_queue *q,
                             const struct wr_queue_decl *decl, const struct wr_table *args)
{
    const char *name = wr_queue_name(q);
    if (wr_queue_owner(q) != decl->owner) {
        locked(ch, method_id, name);
        return false;
    }
    if (wr_queue_is_durable(q) != decl->durable) {
        inequivalent_flag(ch, method_id, name, "durable", decl->durable);
        return false;
    }
    const struct wr_table *current = wr_queue_args(q);
    enum qtype qt = qtype_of(current);
    for (size_t i = 0; i < N_QUEUE_ARGS; i++)
        if ((queue_args[i].types & qt) &&
            !args_key_equivalent(ch, method_id, name, current, args, queue_args[i].key))
            return false;
    return true;
}

/* The pseudo-queue and the reply routes exist for queue.declare (passive or not) while
 * they have their consumer, as RabbitMQ reports them: no messages, one consumer. */
static void reply_declare(struct amqp_chan *ch, const struct amqp_method *m, const char *name)
{
    struct amqp_chan_priv *pv = ch->priv;
    struct wr_str s = wr_str_c(name);
    const struct reply_route *r = is_reply_name(s) ? reply_find(s) : NULL;
    if (!str_eq(s, REPLY_TO) && !(r && r->ch->state == AMQP_CHAN_OPEN)) {
        fail(ch, AMQP_NOT_FOUND, m->id, "no queue '%s' in vhost '%s'", name, vhost_of(ch));
        return;
    }
    snprintf(pv->last_queue, sizeof pv->last_queue, "%s", name);
    if (m->u.queue_declare.nowait)
        return;
    struct amqp_method r_ok = {.id = AMQP_QUEUE_DECLARE_OK};
    r_ok.u.queue_declare_ok = (struct amqp_queue_declare_ok){s, 0, 1};
    conn_send(ch->conn, ch->id, &r_ok);
}

static void queue_declare(struct amqp_chan *ch, const struct amqp_method *m)
{
    const struct amqp_queue_declare *a = &m->u.queue_declare;
    struct wr_vhost *vh = ch->conn->vhost;
    char name[256];
    name_copy(name, a->queue);
    if (a->queue.len >= REPLY_TO_LEN && memcmp(a->queue.ptr, REPLY_TO, REPLY_TO_LEN) == 0) {
        reply_declare(ch, m, name);
        return;
    }
    if (a->passive) {
        struct wr_queue *q = queue_or_die(ch, m->id, name);
        if (q)
            declare_ok(ch, q, a->nowait, false);
        return;
    }
    enum qtype qt = qtype_of(a->arguments);
    if (!name[0] && qt != QT_CLASSIC) {
        fail(ch, AMQP_PRECONDITION_FAILED, m->id,
             "Cannot declare a server-named queue for type %s", qtype_module(qt));
        return;
    }
    if (name[0] && reserved(name)) {
        fail(ch, AMQP_ACCESS_REFUSED, m->id,
             "queue name '%s' contains reserved prefix 'amq.*'", name);
        return;
    }
    struct wr_queue_decl decl;
    wr_queue_decl_init(&decl, name);
    decl.durable = a->durable && !a->exclusive;
    decl.exclusive = a->exclusive;
    decl.auto_delete = a->auto_delete;
    decl.owner = a->exclusive ? ch->conn : NULL;
    decl.args = a->arguments;
    struct wr_queue *q = name[0] ? wr_queue_find(vh, name) : NULL;
    bool created = !q;
    char shown[256];
    if (q) {
        memcpy(shown, name, sizeof name);
        if (!queue_equivalent(ch, m->id, q, &decl, a->arguments))
            return;
    } else {
        /* Errors before creation name the queue a server-named one would have had. */
        if (name[0])
            memcpy(shown, name, sizeof name);
        else
            gen_name(shown, "amq.gen-");
        const struct wr_value *dlx = wr_table_get(a->arguments, "x-dead-letter-exchange");
        if (dlx && dlx->type != WR_V_STR) {
            fail(ch, AMQP_PRECONDITION_FAILED, m->id,
                 "invalid type '%s' for arg 'x-dead-letter-exchange' in queue '%s' in "
                 "vhost '%s'",
                 erl_type(dlx->type), shown, vhost_of(ch));
            return;
        }
        if (!queue_args_check(ch, m->id, shown, a->arguments, qt))
            return;
    }
    struct queue_strs strs;
    queue_args_fill(a->arguments, qt, &decl, &strs);
    if (!queue_storage(ch, m->id, shown, &decl, qt, strs.type, created))
        return;
    struct wr_table *log_options = NULL;
    if (qt == QT_STREAM && !(decl.options = log_options = stream_options(a->arguments))) {
        fail_oom(ch, m->id);
        return;
    }
    struct wr_error err = {0};
    int rc = wr_queue_declare(vh, &decl, &q, &err);
    if (rc == WR_EEXIST && !created) {
        /* The core also compares what AMQP cannot see (limits a config file set) and what
         * it has no getter for: auto_delete. A declaration that only auto_delete kept from
         * matching is RabbitMQ's inequivalent auto_delete; the rest, RabbitMQ accepts. */
        decl.auto_delete = !decl.auto_delete;
        if (wr_queue_declare(vh, &decl, &q, NULL) == WR_OK) {
            inequivalent_flag(ch, m->id, name, "auto_delete", a->auto_delete);
            return;
        }
        q = wr_queue_find(vh, name);
        rc = WR_OK;
    }
    wr_table_free(log_options);
    if (rc != WR_OK) {
        fail_core(ch, m->id, rc, &err);
        return;
    }
    declare_ok(ch, q, a->nowait, created);
}

/* queue.bind and queue.unbind: missing ends are 404 for bind, a no-op for unbind. */
static void queue_bind(struct amqp_chan *ch, const struct amqp_method *m, bool bind)
{
    const struct amqp_queue_bind *a = &m->u.queue_bind;
    const struct amqp_queue_unbind *u = &m->u.queue_unbind;
    struct wr_str queue_s = bind ? a->queue : u->queue;
    struct wr_str key_s = bind ? a->routing_key : u->routing_key;
    struct wr_str ex_s = bind ? a->exchange : u->exchange;
    const struct wr_table *args = bind ? a->arguments : u->arguments;
    char qname[256], exname[256], key[256];
    if (!queue_name(ch, m->id, queue_s, qname))
        return;
    /* An empty key with an empty queue name means the last declared queue's name. */
    if (queue_s.len == 0 && key_s.len == 0)
        memcpy(key, qname, sizeof qname);
    else
        str_copy(key, key_s);
    name_copy(exname, ex_s);
    if (!exchange_not_default(ch, m->id, exname))
        return;
    struct wr_exchange *ex = wr_exchange_find(ch->conn->vhost, exname);
    struct wr_queue *q = wr_queue_find(ch->conn->vhost, qname);
    struct wr_error err = {0};
    int rc = WR_OK;
    if (bind) {
        if (!ex) {
            no_exchange(ch, m->id, exname);
            return;
        }
        if (!queue_or_die(ch, m->id, qname))
            return;
        rc = wr_bind_queue(ex, q, key, args, &err);
    } else if (ex && q) {
        if (!queue_or_die(ch, m->id, qname))
            return;
        rc = wr_unbind_queue(ex, q, key, args, &err);
    }
    if (rc != WR_OK) {
        fail_core(ch, m->id, rc, &err);
        return;
    }
    if (!bind)
        reply(ch, AMQP_QUEUE_UNBIND_OK);
    else
        reply_unless(ch, a->nowait, AMQP_QUEUE_BIND_OK);
}

static void queue_purge(struct amqp_chan *ch, const struct amqp_method *m)
{
    const struct amqp_queue_purge *a = &m->u.queue_purge;
    char name[256];
    struct wr_queue *q;
    if (!queue_name(ch, m->id, a->queue, name) || !(q = queue_or_die(ch, m->id, name)))
        return;
    if (wr_queue_is_log(q)) {
        stream_refuses(ch, m->id, "queue.purge", name);
        return;
    }
    uint64_t count = wr_queue_purge(q);
    if (a->nowait)
        return;
    struct amqp_method r = {.id = AMQP_QUEUE_PURGE_OK};
    r.u.queue_purge_ok.message_count = (uint32_t)count;
    conn_send(ch->conn, ch->id, &r);
}

static void queue_delete(struct amqp_chan *ch, const struct amqp_method *m)
{
    const struct amqp_queue_delete *a = &m->u.queue_delete;
    char name[256];
    if (!queue_name(ch, m->id, a->queue, name))
        return;
    uint64_t count = 0;
    if (wr_queue_find(ch->conn->vhost, name)) {
        struct wr_queue *q = queue_or_die(ch, m->id, name);
        if (!q)
            return;
        if (a->if_unused && wr_queue_consumer_count(q)) {
            fail(ch, AMQP_PRECONDITION_FAILED, m->id, "queue '%s' in vhost '%s' in use",
                 name, vhost_of(ch));
            return;
        }
        if (a->if_empty && wr_queue_depth(q)) {
            fail(ch, AMQP_PRECONDITION_FAILED, m->id,
                 "queue '%s' in vhost '%s' not empty", name, vhost_of(ch));
            return;
        }
        struct wr_error err = {0};
        int rc = wr_queue_delete(q, a->if_unused, a->if_empty, &count, &err);
        if (rc != WR_OK) {
            fail_core(ch, m->id, rc, &err);
            return;
        }
    }
    if (a->nowait)
        return;
    struct amqp_method r = {.id = AMQP_QUEUE_DELETE_OK};
    r.u.queue_delete_ok.message_count = (uint32_t)count;
    conn_send(ch->conn, ch->id, &r);
}

/* ---- basic class ----------------------------------------------------------------------- */

static void basic_qos(struct amqp_chan *ch, const struct amqp_method *m)
{
    const struct amqp_basic_qos *a = &m->u.basic_qos;
    struct amqp_chan_priv *pv = ch->priv;
    if (a->prefetch_size != 0) {
        fail(ch, AMQP_NOT_IMPLEMENTED, m->id, "prefetch_size!=0 (%" PRIu32 ")",
             a->prefetch_size);
        return;
    }
    if (a->global) {
        bool wider = !a->prefetch_count ||
                     (pv->global_prefetch && a->prefetch_count > pv->global_prefetch);
        pv->global_prefetch = a->prefetch_count;
        if (wider)
            kick_consumers(pv);
    } else {
        pv->prefetch = a->prefetch_count;
    }
    reply(ch, AMQP_BASIC_QOS_OK);
}

/* RabbitMQ's check_consume_arguments: x-priority is an integer, x-cancel-on-ha-failover a
 * boolean, and no argument belongs to another queue type. False after failing the channel. */
static bool consume_args_check(struct amqp_chan *ch, uint32_t method_id, const char *name,
                               const struct wr_table *args, enum qtype qt)
{
    static const struct {
        const char *key;
        unsigned types;
    } consume_args[] = {
        {"x-priority", QT_CLASSIC | QT_QUORUM},
        {"x-cancel-on-ha-failover", QT_CLASSIC},
        {"x-stream-offset", QT_STREAM},
        {"x-credit", QT_QUORUM | QT_STREAM},
    };
    char why[128];
    const char *key = "x-priority";
    const struct wr_value *v = wr_table_get(args, key);
    bool ok = !v || qt == QT_STREAM || int_arg(v, why, sizeof why);
    if (ok && qt == QT_CLASSIC) {
        key = "x-cancel-on-ha-failover";
        v = wr_table_get(args, key);
        ok = !v || typed_arg(v, WR_V_BOOL, why, sizeof why);
    }
    if (!ok) {
        fail(ch, AMQP_PRECONDITION_FAILED, method_id,
             "invalid arg '%s' for queue '%s' in vhost '%s': %s", key, name, vhost_of(ch), why);
        return false;
    }
    for (size_t i = 0; args && i < args->count; i++)
        for (size_t k = 0; k < sizeof consume_args / sizeof consume_args[0]; k++)
            if (strcmp(args->fields[i].name, consume_args[k].key) == 0 &&
                !(consume_args[k].types & qt)) {
                fail(ch, AMQP_PRECONDITION_FAILED, method_id,
                     "invalid arg '%s' for queue '%s' in vhost '%s' of queue type %s",
                     consume_args[k].key, name, vhost_of(ch), qtype_module(qt));
                return false;
            }
    return true;
}

static void basic_consume(struct amqp_chan *ch, const struct amqp_method *m)
{
    const struct amqp_basic_consume *a = &m->u.basic_consume;
    struct amqp_chan_priv *pv = ch->priv;
    char name[256];
    if (str_eq(a->queue, REPLY_TO)) {
        reply_consume(ch, m);
        return;
    }
    if (!queue_name(ch, m->id, a->queue, name))
        return;
    if (a->consumer_tag.len && consumer_find(pv, a->consumer_tag)) {
        char tag[256];
        str_copy(tag, a->consumer_tag);
        fail(ch, AMQP_NOT_ALLOWED, m->id, "attempt to reuse consumer tag '%s'", tag);
        return;
    }
    struct wr_queue *q = queue_or_die(ch, m->id, name);
    /* A queue on log storage is a stream, however it was declared (the config declares
     * them without x-queue-type). */
    if (!q || !consume_args_check(ch, m->id, name, a->arguments,
                                  wr_queue_is_log(q) ? QT_STREAM : qtype_of(wr_queue_args(q))))
        return;
    struct wr_consume_args args = {.prefetch = pv->prefetch, .no_ack = a->no_ack,
                                   .exclusive = a->exclusive};
    if (wr_queue_is_log(q) && !stream_consume_args(ch, m, name, a->arguments, &args))
        return;
    struct consumer *cons = calloc(1, sizeof *cons);
    if (!cons) {
        fail_oom(ch, m->id);
        return;
    }
    cons->ch = ch;
    cons->no_ack = a->no_ack;
    if (a->consumer_tag.len)
        str_copy(cons->tag, a->consumer_tag);
    else
        gen_name(cons->tag, "amq.ctag-");
    cons->tag_len = (uint8_t)strlen(cons->tag);
    /* x-priority was checked to be an integer; RabbitMQ keeps it as a signed 32-bit one. */
    int64_t priority = 0;
    wr_table_get_int(a->arguments, "x-priority", &priority);
    args.priority = (int32_t)(priority > INT32_MAX   ? INT32_MAX
                              : priority < INT32_MIN ? INT32_MIN
                                                     : priority);
    struct wr_error err = {0};
    int rc = wr_queue_consume(q, &consumer_ops, &args, cons, &cons->c, &err);
    if (rc != WR_OK) {
        free(cons);
        if (rc == WR_EBUSY) {
            fail(ch, AMQP_ACCESS_REFUSED, m->id, "queue '%s' in vhost '%s' in exclusive use",
                 name, vhost_of(ch));
            return;
        }
        fail_core(ch, m->id, rc, &err);
        return;
    }
    cons->next = pv->consumers;
    pv->consumers = cons;
    /* Deliveries start from a deferred dispatch, so consume-ok goes out first. */
    if (a->nowait)
        return;
    struct amqp_method r = {.id = AMQP_BASIC_CONSUME_OK};
    r.u.basic_consume_ok.consumer_tag = (struct wr_str){cons->tag, cons->tag_len};
    conn_send(ch->conn, ch->id, &r);
}

static void basic_cancel(struct amqp_chan *ch, const struct amqp_method *m)
{
    const struct amqp_basic_cancel *a = &m->u.basic_cancel;
    struct amqp_chan_priv *pv = ch->priv;
    struct consumer *cons = consumer_find(pv, a->consumer_tag);
    if (pv->reply && a->consumer_tag.len == pv->reply_tag_len &&
        memcmp(a->consumer_tag.ptr, pv->reply_tag, pv->reply_tag_len) == 0)
        reply_stop(pv);
    else if (cons) {
        /* Its unacked deliveries stay on the channel until acked or the channel closes. */
        struct wr_consumer *c = cons->c;
        consumer_forget(pv, cons);
        wr_consumer_cancel(c, false);
    }
    if (a->nowait)
        return;
    struct amqp_method r = {.id = AMQP_BASIC_CANCEL_OK};
    r.u.basic_cancel_ok.consumer_tag = a->consumer_tag;
    conn_send(ch->conn, ch->id, &r);
}

static void basic_get(struct amqp_chan *ch, const struct amqp_method *m)
{
    const struct amqp_basic_get *a = &m->u.basic_get;
    struct amqp_chan_priv *pv = ch->priv;
    char name[256];
    struct wr_queue *q;
    if (!queue_name(ch, m->id, a->queue, name) || !(q = queue_or_die(ch, m->id, name)))
        return;
    if (wr_queue_is_log(q)) {
        stream_refuses(ch, m->id, "basic.get", name);
        return;
    }
    struct wr_delivery d;
    struct wr_error err = {0};
    int rc = wr_queue_get(q, a->no_ack, &d, &err);
    if (rc == WR_ENOTFOUND && !wr_queue_is_deleted(q)) {
        struct amqp_method r = {.id = AMQP_BASIC_GET_EMPTY};
        r.u.basic_get_empty.cluster_id = (struct wr_str){"", 0};
        conn_send(ch->conn, ch->id, &r);
        return;
    }
    if (rc != WR_OK) {
        fail_core(ch, m->id, rc, &err);
        return;
    }
    uint64_t dtag = pv->next_tag;
    if (!a->no_ack) {
        struct pending p = {dtag, wr_queue_ref(q), NULL, d.tag, 0, SETTLE_NONE};
        if (!ring_push(&pv->ring, &p)) {
            wr_queue_unref(q);
            wr_queue_nack(q, d.tag, true, NULL);
            wr_msg_unref(d.msg);
            fail_oom(ch, m->id);
            return;
        }
    }
    pv->next_tag++;
    struct amqp_method r = {.id = AMQP_BASIC_GET_OK};
    r.u.basic_get_ok = (struct amqp_basic_get_ok){
        .delivery_tag = dtag,
        .redelivered = d.redelivered,
        .exchange = d.msg->exchange,
        .routing_key = d.msg->routing_key,
        .message_count = (uint32_t)wr_queue_depth(q),
    };
    send_content(ch, &r, d.msg);
    wr_msg_unref(d.msg);
}

static void basic_settle(struct amqp_chan *ch, const struct amqp_method *m)
{
    uint64_t tag = 0;
    bool multiple = false;
    enum settle how = SETTLE_ACK;
    switch (m->id) {
    case AMQP_BASIC_ACK:
        tag = m->u.basic_ack.delivery_tag;
        multiple = m->u.basic_ack.multiple;
        break;
    case AMQP_BASIC_NACK:
        tag = m->u.basic_nack.delivery_tag;
        multiple = m->u.basic_nack.multiple;
        how = m->u.basic_nack.requeue ? SETTLE_REQUEUE : SETTLE_DROP;
        break;
    default:
        tag = m->u.basic_reject.delivery_tag;
        how = m->u.basic_reject.requeue ? SETTLE_REQUEUE : SETTLE_DROP;
        break;
    }
    const char *stream = how == SETTLE_ACK ? NULL : stream_of(ch->priv, tag, multiple);
    if (stream)
        stream_refuses(ch, m->id, "basic.nack and basic.reject", stream);
    else if (!settle_tags(ch, tag, multiple, how))
        fail(ch, AMQP_PRECONDITION_FAILED, m->id, "unknown delivery tag %" PRIu64, tag);
}

static void basic_recover(struct amqp_chan *ch, const struct amqp_method *m)
{
    bool requeue = m->id == AMQP_BASIC_RECOVER ? m->u.basic_recover.requeue
                                               : m->u.basic_recover_async.requeue;
    if (!requeue) {
        fail(ch, AMQP_NOT_IMPLEMENTED, m->id, "requeue=false");
        return;
    }
    requeue_all(ch->priv);
    if (m->id == AMQP_BASIC_RECOVER)
        reply(ch, AMQP_BASIC_RECOVER_OK);
}

/* ---- publish --------------------------------------------------------------------------- */

/* The expiration property as RabbitMQ parses it (an integer of milliseconds); false with
 * the Erlang error term in why. */
static bool expiration_valid(struct wr_str s, char *why, size_t n)
{
    size_t i = 0;
    bool neg = false;
    if (i < s.len && (s.ptr[i] == '-' || s.ptr[i] == '+'))
        neg = s.ptr[i++] == '-';
    size_t start = i;
    while (i < s.len && s.ptr[i] >= '0' && s.ptr[i] <= '9')
        i++;
    if (i == start) {
        snprintf(why, n, "no_integer");
        return false;
    }
    if (i < s.len) {
        snprintf(why, n, "{leftover_string,\"%.*s\"}", (int)(s.len - i < 64 ? s.len - i : 64),
                 s.ptr + i);
        return false;
    }
    while (start + 1 < i && s.ptr[start] == '0')
        start++;
    int64_t v = 0;
    for (size_t k = start; k < i && v <= MAX_EXPIRY; k++)
        v = v * 10 + (s.ptr[k] - '0');
    if (v == 0 || (!neg && v <= MAX_EXPIRY))
        return true;
    /* Erlang prints the integer whatever its size: the digits as they came. */
    snprintf(why, n, "{%s,%s%.*s}", neg ? "value_negative" : "value_too_large", neg ? "-" : "",
             (int)(i - start < 64 ? i - start : 64), s.ptr + start);
    return false;
}

/* Routes msg and answers what AMQP expects of that: basic.return for a mandatory message no
 * queue took. Returns how many queues refused it, or -1 after failing the channel. */
static int publish_route(struct amqp_chan *ch, struct wr_exchange *ex, struct wr_msg *msg,
                         bool mandatory, uint32_t method_id)
{
    uint32_t refused = 0;
    int stored = 0;
    if (msg->exchange.len == 0 && is_reply_name(msg->routing_key))
        reply_deliver(msg);
    if (ex) {
        struct wr_error err = {0};
        stored = wr_publish(ex, msg, &refused, &err);
        if (stored < 0) {
            fail_core(ch, method_id, stored, &err);
            return -1;
        }
    }
    if (stored == 0 && refused == 0 && mandatory) {
        struct amqp_method r = {.id = AMQP_BASIC_RETURN};
        r.u.basic_return = (struct amqp_basic_return){
            .reply_code = AMQP_NO_ROUTE,
            .reply_text = wr_str_c("NO_ROUTE"),
            .exchange = msg->exchange,
            .routing_key = msg->routing_key,
        };
        send_content(ch, &r, msg);
    }
    return (int)refused;
}

void chan_publish(struct amqp_chan *ch, const struct amqp_basic_publish *p,
                  const struct amqp_content_header *h, struct wr_slice body)
{
    struct amqp_chan_priv *pv = ch->priv;
    struct amqp_conn *conn = ch->conn;
    const uint32_t id = AMQP_BASIC_PUBLISH;
    if (pv->committing) {
        conn_fail(conn, AMQP_CHANNEL_ERROR, id,
                  "unexpected command while processing 'tx.commit'");
        return;
    }
    if (p->immediate) {
        conn_fail(conn, AMQP_NOT_IMPLEMENTED, id, "immediate=true");
        return;
    }
    char xname[256];
    str_copy(xname, p->exchange);
    struct wr_exchange *ex = wr_exchange_find(conn->vhost, xname);
    if (!ex) {
        no_exchange(ch, id, xname);
        return;
    }
    if (wr_exchange_is_internal(ex)) {
        fail(ch, AMQP_ACCESS_REFUSED, id,
             "cannot publish to internal exchange '%s' in vhost '%s'", xname,
             vhost_of(ch));
        return;
    }
    const struct wr_props *props = &h->props;
    struct wr_props rewritten;
    if (str_eq(props->reply_to, REPLY_TO)) {
        if (!pv->reply) {
            fail(ch, AMQP_PRECONDITION_FAILED, id, "fast reply consumer does not exist");
            return;
        }
        rewritten = *props;
        rewritten.reply_to = (struct wr_str){pv->reply->name, pv->reply->name_len};
        props = &rewritten;
    }
    char why[128];
    if (props->expiration.ptr && !expiration_valid(props->expiration, why, sizeof why)) {
        fail(ch, AMQP_PRECONDITION_FAILED, id, "invalid expiration '%.*s': %s",
             (int)(props->expiration.len < 200 ? props->expiration.len : 200),
             props->expiration.ptr, why);
        return;
    }
    if (props->user_id.ptr && !str_eq(props->user_id, conn->user)) {
        fail(ch, AMQP_PRECONDITION_FAILED, id,
             "user_id property set to '%.*s' but authenticated user was '%s'",
             (int)(props->user_id.len < 200 ? props->user_id.len : 200),
             props->user_id.ptr, conn->user);
        return;
    }
    struct wr_msg_init init = {
        .exchange = p->exchange,
        .routing_key = p->routing_key,
        .headers = h->headers,
        .props = props,
        .body = body,
    };
    struct wr_msg *msg;
    if (wr_msg_new(&init, &msg, NULL) != WR_OK) {
        fail_oom(ch, id);
        return;
    }
    if (pv->tx) {
        if (pv->tx_len == pv->tx_cap) {
            size_t cap = pv->tx_cap ? pv->tx_cap * 2 : 16;
            struct tx_publish *all = realloc(pv->tx_msgs, cap * sizeof *all);
            if (!all) {
                wr_msg_unref(msg);
                fail_oom(ch, id);
                return;
            }
            pv->tx_msgs = all;
            pv->tx_cap = cap;
        }
        pv->tx_msgs[pv->tx_len++] = (struct tx_publish){msg, p->mandatory};
        return;
    }
    int refused = publish_route(ch, ex, msg, p->mandatory, id);
    wr_msg_unref(msg);
    if (refused >= 0 && pv->confirm)
        confirm_publish(ch, refused > 0);
}

/* ---- tx, confirm, channel.flow --------------------------------------------------------- */

static void tx_drop(struct amqp_chan_priv *pv)
{
    for (size_t i = 0; i < pv->tx_len; i++)
        wr_msg_unref(pv->tx_msgs[i].msg);
    pv->tx_len = 0;
}

static void tx_commit(struct amqp_chan *ch, const struct amqp_method *m)
{
    struct amqp_chan_priv *pv = ch->priv;
    if (!pv->tx) {
        fail(ch, AMQP_PRECONDITION_FAILED, m->id, "channel is not transactional");
        return;
    }
    for (size_t i = 0; i < pv->tx_len; i++) {
        struct wr_msg *msg = pv->tx_msgs[i].msg;
        char xname[256];
        str_copy(xname, msg->exchange);
        /* An exchange deleted since the publish routes the message nowhere. */
        struct wr_exchange *ex = wr_exchange_find(ch->conn->vhost, xname);
        int refused = publish_route(ch, ex, msg, pv->tx_msgs[i].mandatory, m->id);
        if (refused < 0)
            return;
        if (refused > 0)
            pv->tx_failed = true;
        pv->tx_msgs[i].msg = NULL;
        wr_msg_unref(msg);
    }
    pv->tx_len = 0;
    settle_staged(pv, true);
    pv->committing = true;
    barrier_start(ch, true);
}

static void tx_rollback(struct amqp_chan *ch, const struct amqp_method *m)
{
    struct amqp_chan_priv *pv = ch->priv;
    if (!pv->tx) {
        fail(ch, AMQP_PRECONDITION_FAILED, m->id, "channel is not transactional");
        return;
    }
    tx_drop(pv);
    settle_staged(pv, false);
    reply(ch, AMQP_TX_ROLLBACK_OK);
}

static void confirm_select(struct amqp_chan *ch, const struct amqp_method *m)
{
    struct amqp_chan_priv *pv = ch->priv;
    if (pv->tx) {
        fail(ch, AMQP_PRECONDITION_FAILED, m->id, "cannot switch from tx to confirm mode");
        return;
    }
    pv->confirm = true;
    reply_unless(ch, m->u.confirm_select.nowait, AMQP_CONFIRM_SELECT_OK);
}

static void tx_select(struct amqp_chan *ch, const struct amqp_method *m)
{
    struct amqp_chan_priv *pv = ch->priv;
    if (pv->confirm) {
        fail(ch, AMQP_PRECONDITION_FAILED, m->id, "cannot switch from confirm to tx mode");
        return;
    }
    pv->tx = true;
    reply(ch, AMQP_TX_SELECT_OK);
}

/* RabbitMQ leaves flow control to TCP back-pressure and refuses to pause a channel. */
static void channel_flow(struct amqp_chan *ch, const struct amqp_method *m)
{
    if (!m->u.channel_flow.active) {
        fail(ch, AMQP_NOT_IMPLEMENTED, m->id, "active=false");
        return;
    }
    struct amqp_method r = {.id = AMQP_CHANNEL_FLOW_OK};
    r.u.channel_flow_ok.active = true;
    conn_send(ch->conn, ch->id, &r);
}

void chan_method(struct amqp_chan *ch, const struct amqp_method *m)
{
    struct amqp_chan_priv *pv = ch->priv;
    if (pv->committing) {
        conn_fail(ch->conn, AMQP_CHANNEL_ERROR, m->id,
                  "unexpected command while processing 'tx.commit'");
        return;
    }
    switch (m->id) {
    case AMQP_ACCESS_REQUEST: {
        struct amqp_method r = {.id = AMQP_ACCESS_REQUEST_OK};
        r.u.access_request_ok.ticket = 1;
        conn_send(ch->conn, ch->id, &r);
        break;
    }
    case AMQP_EXCHANGE_DECLARE:
        exchange_declare(ch, m);
        break;
    case AMQP_EXCHANGE_DELETE:
        exchange_delete(ch, m);
        break;
    case AMQP_EXCHANGE_BIND:
        exchange_bind(ch, m, true);
        break;
    case AMQP_EXCHANGE_UNBIND:
        exchange_bind(ch, m, false);
        break;
    case AMQP_QUEUE_DECLARE:
        queue_declare(ch, m);
        break;
    case AMQP_QUEUE_BIND:
        queue_bind(ch, m, true);
        break;
    case AMQP_QUEUE_UNBIND:
        queue_bind(ch, m, false);
        break;
    case AMQP_QUEUE_PURGE:
        queue_purge(ch, m);
        break;
    case AMQP_QUEUE_DELETE:
        queue_delete(ch, m);
        break;
    case AMQP_BASIC_QOS:
        basic_qos(ch, m);
        break;
    case AMQP_BASIC_CONSUME:
        basic_consume(ch, m);
        break;
    case AMQP_BASIC_CANCEL:
        basic_cancel(ch, m);
        break;
    case AMQP_BASIC_GET:
        basic_get(ch, m);
        break;
    case AMQP_BASIC_ACK:
    case AMQP_BASIC_NACK:
    case AMQP_BASIC_REJECT:
        basic_settle(ch, m);
        break;
    case AMQP_BASIC_RECOVER:
    case AMQP_BASIC_RECOVER_ASYNC:
        basic_recover(ch, m);
        break;
    case AMQP_CONFIRM_SELECT:
        confirm_select(ch, m);
        break;
    case AMQP_TX_SELECT:
        tx_select(ch, m);
        break;
    case AMQP_TX_COMMIT:
        tx_commit(ch, m);
        break;
    case AMQP_TX_ROLLBACK:
        tx_rollback(ch, m);
        break;
    case AMQP_CHANNEL_FLOW:
        channel_flow(ch, m);
        break;
    default:
        fail(ch, AMQP_COMMAND_INVALID, m->id, "unimplemented method");
        break;
    }
}

/* ---- life cycle ------------------------------------------------------------------------ */

struct amqp_chan *chan_new(struct amqp_conn *c, uint16_t id)
{
    struct amqp_chan *ch = calloc(1, sizeof *ch);
    struct amqp_chan_priv *pv = calloc(1, sizeof *pv);
    if (!ch || !pv) {
        free(ch);
        free(pv);
        return NULL;
    }
    ch->conn = c;
    ch->id = id;
    ch->state = AMQP_CHAN_OPEN;
    ch->priv = pv;
    pv->next_tag = 1;
    pv->next_seq = 1;
    return ch;
}

void chan_kick(struct amqp_chan *ch)
{
    if (ch->state == AMQP_CHAN_OPEN)
        kick_consumers(ch->priv);
}

void chan_release(struct amqp_chan *ch)
{
    struct amqp_chan_priv *pv = ch->priv;
    if (pv->released)
        return;
    pv->released = true;
    reply_stop(pv);
    if (pv->flush_deferred)
        wr_loop_defer_cancel(wr_broker_loop(broker_of(ch)), confirm_flush, ch);
    pv->flush_deferred = false;
    while (pv->barriers) {
        struct barrier *bar = pv->barriers;
        pv->barriers = bar->next;
        wr_sync_cancel(bar->sync);
        free(bar);
    }
    pv->committing = false;
    tx_drop(pv);
    /* Staged acks were never committed: their deliveries are unacked and go back too. */
    settle_staged(pv, false);
    requeue_all(pv);
    while (pv->consumers) {
        struct consumer *cons = pv->consumers;
        struct wr_consumer *c = cons->c;
        consumer_forget(pv, cons);
        wr_consumer_cancel(c, true);
    }
}

void chan_free(struct amqp_chan *ch)
{
    if (!ch)
        return;
    chan_release(ch);
    struct amqp_chan_priv *pv = ch->priv;
    free(pv->ring.slots);
    free(pv->nacks);
    free(pv->tx_msgs);
    free(pv);
    free(ch);
}

void chan_fail(struct amqp_chan *ch, uint16_t code, uint32_t method_id, const char *fmt, ...)
{
    if (ch->state != AMQP_CHAN_OPEN)
        return;
    chan_release(ch);
    char text[TEXT_MAX];
    const char *name = amqp_reply_name(code);
    int n = snprintf(text, sizeof text, "%s - ", name ? name : "INTERNAL_ERROR");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text + n, sizeof text - (size_t)n, fmt, ap);
    va_end(ap);
    size_t len = strlen(text);
    struct amqp_method m = {.id = AMQP_CHANNEL_CLOSE};
    m.u.channel_close = (struct amqp_channel_close){
        .reply_code = code,
        .reply_text = {text, len < 255 ? len : 255},
        .class_id = (uint16_t)(method_id >> 16),
        .method_id = (uint16_t)(method_id & 0xffff),
    };
    ch->state = AMQP_CHAN_CLOSING;
    conn_send(ch->conn, ch->id, &m);
}
