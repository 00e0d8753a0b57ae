/*
 * exchange.c: exchanges, bindings and routing.
 *
 * An exchange's plugin indexes its bindings and names the matching ones; this file owns the
 * bindings, follows exchange-to-exchange bindings breadth-first, and makes every destination
 * appear once per publish. Dedup is a mark per destination compared with a per-route epoch,
 * so it costs one compare and no hashing; the route set keeps its first entries inline, so
 * a publish allocates nothing unless it reaches more than ROUTE_INLINE queues.
 */
#include <stdlib.h>
#include <string.h>

#include "broker_int.h"

enum { ROUTE_INLINE = 16 };

/* A destination and the message it gets: NULL for the one published, else a copy an
 * exchange on the way made (wr_route_use_msg), which the route holds a reference on. */
struct route_q {
    struct wr_queue *q;
    struct wr_msg *msg;
};

struct route_x {
    struct wr_exchange *ex;
    struct wr_msg *msg;
};

struct wr_route {
    uint64_t epoch;
    struct route_q *queues;
    size_t n_queues, cap_queues;
    struct route_x *exchanges; /* exchanges reached, routed through in order */
    size_t n_exchanges, cap_exchanges;
    struct wr_msg *cur;        /* what the exchange being asked passes on; NULL: the original */
    struct wr_msg **copies;    /* every copy made, to unref at the end */
    size_t n_copies;
    bool oom;
    struct route_q queues_inline[ROUTE_INLINE];
    struct route_x exchanges_inline[ROUTE_INLINE];
};

static bool grow(void **items, size_t *cap, void *inline_items, size_t size)
{
    size_t ncap = *cap * 2;
    void *n = *items == inline_items ? malloc(ncap * size) : realloc(*items, ncap * size);
    if (!n)
        return false;
    if (*items == inline_items)
        memcpy(n, inline_items, *cap * size);
    *items = n;
    *cap = ncap;
    return true;
}

const char *wr_binding_destination(const struct wr_binding *pub)
{
    const struct binding *bd = (const struct binding *)pub;
    return bd->q ? wr_queue_name(bd->q) : bd->dst->name;
}

/* wr_route_add_queue's body, static so wr_route_add's call is not made through the PLT. */
static inline void route_add_queue(struct wr_route *r, struct wr_queue *q)
{
    if (q->mark == r->epoch || q->deleted)
        return;
    if (r->n_queues == r->cap_queues &&
        !grow((void **)&r->queues, &r->cap_queues, r->queues_inline, sizeof *r->queues)) {
        r->oom = true;
        return;
    }
    q->mark = r->epoch;
    r->queues[r->n_queues++] = (struct route_q){q, r->cur};
}

void wr_route_add_queue(struct wr_route *r, struct wr_queue *q) { route_add_queue(r, q); }

void wr_route_add(struct wr_route *r, const struct wr_binding *pub)
{
    const struct binding *bd = (const struct binding *)pub;
    if (bd->q) {
        route_add_queue(r, bd->q);
        return;
    }
    if (bd->dst->mark == r->epoch)
        return; /* reached already: this is how a binding cycle ends */
    if (r->n_exchanges == r->cap_exchanges &&
        !grow((void **)&r->exchanges, &r->cap_exchanges, r->exchanges_inline,
              sizeof *r->exchanges)) {
        r->oom = true;
        return;
    }
    bd->dst->mark = r->epoch;
    r->exchanges[r->n_exchanges++] = (struct route_x){bd->dst, r->cur};
}

void wr_route_use_msg(struct wr_route *r, struct wr_msg *msg)
{
    struct wr_msg **grown = realloc(r->copies, (r->n_copies + 1) * sizeof *grown);
    if (!grown) {
        r->oom = true;
        return;
    }
    r->copies = grown;
    r->copies[r->n_copies++] = wr_msg_ref(msg);
    r->cur = msg;
}

/* The exchange named by ex's "alternate-exchange" argument, or NULL. */
static struct wr_exchange *alternate(const struct wr_exchange *ex)
{
    const char *name;
    size_t len;
    char buf[256];
    if (!ex->args->count || !wr_table_get_str(ex->args, "alternate-exchange", &name, &len) ||
        len >= sizeof buf)
        return NULL;
    memcpy(buf, name, len);
    buf[len] = '\0';
    return wr_exchange_find(ex->vh, buf);
}

/* Fills r with the distinct queues msg reaches from ex. A message that reaches none goes on
 * to ex's alternate exchange (RabbitMQ's alternate-exchange argument), and from there to its
 * alternate, never visiting an exchange twice. */
static void route(struct wr_exchange *ex, const struct wr_msg *msg, struct wr_route *r)
{
    r->epoch = ++ex->vh->broker->route_epoch;
    r->queues = r->queues_inline;
    r->cap_queues = ROUTE_INLINE;
    r->n_queues = 0;
    r->exchanges = r->exchanges_inline;
    r->cap_exchanges = ROUTE_INLINE;
    r->n_exchanges = 0;
    r->copies = NULL;
    r->n_copies = 0;
    r->oom = false;
    for (int hops = 0; ex && hops < ROUTE_INLINE && !r->oom; hops++) {
        size_t first = r->n_exchanges;
        if (first == r->cap_exchanges)
            break;
        r->exchanges[r->n_exchanges++] = (struct route_x){ex, NULL};
        ex->mark = r->epoch;
        for (size_t i = first; i < r->n_exchanges; i++) {
            struct route_x x = r->exchanges[i];
            r->cur = x.msg;
            if (x.ex->n_out || x.ex->routes_unbound)
                x.ex->ops->route(x.ex->state, x.msg ? x.msg : msg, r);
        }
        if (r->n_queues)
            break;
        ex = alternate(ex);
        if (ex && ex->mark == r->epoch)
            break;
    }
}

static void route_fini(struct wr_route *r)
{
    if (r->queues != r->queues_inline)
        free(r->queues);
    if (r->exchanges != r->exchanges_inline)
        free(r->exchanges);
    for (size_t i = 0; i < r->n_copies; i++)
        wr_msg_unref(r->copies[i]);
    free(r->copies);
}

size_t wr_exchange_route(struct wr_exchange *ex, const struct wr_msg *msg,
                         struct wr_queue **out, size_t max)
{
    struct wr_route r;
    route(ex, msg, &r);
    for (size_t i = 0; i < r.n_queues && i < max; i++)
        out[i] = r.queues[i].q;
    size_t n = r.n_queues;
    route_fini(&r);
    return n;
}

int exchange_store(struct wr_exchange *ex, struct wr_msg *msg,
                   bool (*keep)(const struct wr_queue *q, const struct wr_msg *msg),
                   uint32_t *refused, struct wr_error *err)
{
    struct wr_route r;
    route(ex, msg, &r);
    if (r.oom) {
        route_fini(&r);
        return wr_error_set(err, WR_ENOMEM, "out of memory routing a message");
    }
    int stored = 0;
    for (size_t i = 0; i < r.n_queues; i++) {
        struct wr_msg *m = r.queues[i].msg ? r.queues[i].msg : msg;
        if (keep && !keep(r.queues[i].q, m))
            continue;
        if (queue_store(r.queues[i].q, m, NULL) == WR_OK)
            stored++;
        else if (refused)
            (*refused)++;
    }
    route_fini(&r);
    return stored;
}

int wr_publish(struct wr_exchange *ex, struct wr_msg *msg, uint32_t *refused,
               struct wr_error *err)
{
    if (refused)
        *refused = 0;
    struct wr_broker *b = ex->vh->broker;
    if (msg->body.len > b->max_message_size)
        return wr_error_set(err, WR_ELIMIT,
                            "message body of %zu bytes exceeds max_message_size (%llu bytes)",
                            msg->body.len, (unsigned long long)b->max_message_size);
    int stored = exchange_store(ex, msg, NULL, refused, err);
    alarm_check(b);
    return stored;
}

/* ---- exchanges ---------------------------------------------------------------------- */

int exchange_create(struct wr_vhost *vh, const struct wr_exchange_decl *decl, bool predeclared,
                    struct wr_exchange **out, struct wr_error *err)
{
    struct wr_broker *b = vh->broker;
    struct wr_plugin_ctx *ctx = wr_broker_plugin(b, decl->type, WR_PLUGIN_EXCHANGE);
    if (!ctx)
        return wr_error_set(err, WR_ENOTFOUND,
                            "exchange '%s': unknown exchange type '%s' (no exchange plugin of "
                            "that name is loaded)",
                            decl->name, decl->type);
    struct wr_exchange *ex = calloc(1, sizeof *ex);
    if (!ex || !(ex->name = strdup(decl->name)) || !(ex->args = wr_table_dup(decl->args))) {
        if (ex)
            free(ex->name);
        free(ex);
        return wr_error_set(err, WR_ENOMEM, "out of memory declaring exchange '%s'", decl->name);
    }
    ex->vh = vh;
    ex->ctx = ctx;
    ex->ops = ctx->plugin->ops;
    ex->durable = decl->durable;
    ex->auto_delete = decl->auto_delete;
    ex->internal = decl->internal;
    ex->predeclared = predeclared;
    ex->routes_unbound = HAS_OP(ex->ops, struct wr_exchange_ops, route_unbound);
    struct wr_exchange_args args = {vh->name, decl->name, ex->args};
    int rc = ex->ops->create(ctx, &args, &ex->state, err);
    if (rc == WR_OK && map_put(&vh->exchanges, ex->name, ex) != 0) {
        ex->ops->destroy(ex->state);
        rc = wr_error_set(err, WR_ENOMEM, "out of memory declaring exchange '%s'", decl->name);
    }
    if (rc != WR_OK) {
        wr_table_free(ex->args);
        free(ex->name);
        free(ex);
        return rc;
    }
    *out = ex;
    return WR_OK;
}

static void exchange_destroy(struct wr_exchange *ex);

int wr_exchange_declare(struct wr_vhost *vh, const struct wr_exchange_decl *decl,
                        struct wr_exchange **out, struct wr_error *err)
{
    struct wr_exchange *ex = wr_exchange_find(vh, decl->name);
    if (ex) {
        const char *type = wr_exchange_type(ex);
        if (strcmp(type, decl->type) != 0 || ex->durable != decl->durable ||
            ex->auto_delete != decl->auto_delete || ex->internal != decl->internal)
            return wr_error_set(err, WR_EEXIST,
                                "inequivalent arg for exchange '%s' in vhost '%s': it exists "
                                "as type %s durable=%d auto_delete=%d internal=%d",
                                decl->name, vh->name, type, ex->durable, ex->auto_delete,
                                ex->internal);
        if (out)
            *out = ex;
        return WR_OK;
    }
    if (strncmp(decl->name, "amq.", 4) == 0 || !decl->name[0])
        return wr_error_set(err, WR_EPERM,
                            "exchange name '%s' is reserved (the default exchange and names "
                            "starting with 'amq.' belong to the broker)",
                            decl->name);
    struct wr_exchange *created;
    int rc = exchange_create(vh, decl, false, &created, err);
    if (rc == WR_OK && (rc = definitions_exchange_declared(created, err)) != WR_OK)
        exchange_destroy(created); /* not on disk: not declared either */
    else if (rc == WR_OK && out)
        *out = created;
    return rc;
}

struct wr_exchange *wr_exchange_find(const struct wr_vhost *vh, const char *name)
{
    return map_get(&vh->exchanges, name);
}

static void exchange_destroy(struct wr_exchange *ex)
{
    definitions_exchange_deleted(ex, NULL); /* auto-delete: logged if it fails */
    ex->deleting = true;
    while (ex->in)
        binding_remove(ex->in);
    while (ex->out)
        binding_remove(ex->out);
    map_del(&ex->vh->exchanges, ex->name);
    ex->ops->destroy(ex->state);
    wr_table_free(ex->args);
    free(ex->name);
    free(ex);
}

int wr_exchange_delete(struct wr_exchange *ex, bool if_unused, struct wr_error *err)
{
    if (ex->predeclared)
        return wr_error_set(err, WR_EPERM, "exchange '%s' is predeclared and cannot be deleted",
                            ex->name);
    if (if_unused && ex->n_out)
        return wr_error_set(err, WR_EBUSY, "exchange '%s' in vhost '%s' in use", ex->name,
                            ex->vh->name);
    int rc = definitions_exchange_deleted(ex, err);
    if (rc == WR_OK)
        exchange_destroy(ex);
    return rc;
}

void exchange_free_all(struct wr_vhost *vh)
{
    /* Collect first: destroying edits the map. */
    size_t n = 0;
    struct wr_exchange **all = malloc((vh->exchanges.count + 1) * sizeof *all);
    for (size_t i = 0; all && i < vh->exchanges.cap; i++)
        if (vh->exchanges.slots[i].key)
            all[n++] = vh->exchanges.slots[i].val;
    for (size_t i = 0; i < n; i++)
        all[i]->deleting = true; /* no auto-delete cascades during teardown */
    for (size_t i = 0; i < n; i++)
        exchange_destroy(all[i]);
    free(all);
}

const char *wr_exchange_name(const struct wr_exchange *ex) { return ex->name; }
const char *wr_exchange_type(const struct wr_exchange *ex) { return ex->ctx->plugin->name; }
bool wr_exchange_is_internal(const struct wr_exchange *ex) { return ex->internal; }
bool wr_exchange_is_durable(const struct wr_exchange *ex) { return ex->durable; }
bool wr_exchange_is_auto_delete(const struct wr_exchange *ex) { return ex->auto_delete; }
const struct wr_table *wr_exchange_args(const struct wr_exchange *ex) { return ex->args; }
uint32_t wr_exchange_binding_count(const struct wr_exchange *ex) { return ex->n_out; }

/* ---- bindings ----------------------------------------------------------------------- */

static bool args_equal(const struct wr_table *a, const struct wr_table *b)
{
    struct wr_value va = {.type = WR_V_TABLE}, vb = {.type = WR_V_TABLE};
    static const struct wr_table none = {0, NULL};
    va.u.table = a ? a : &none;
    vb.u.table = b ? b : &none;
    return wr_value_equal(&va, &vb);
}

/* The vhost's binding index: declaring a binding must find an equal one without scanning
 * every binding of the exchange (a topic exchange may hold hundreds of thousands). Chained,
 * keyed by (source, destination, key); arguments are compared on a hit. */
static uint64_t binding_hash(const struct wr_exchange *src, const void *dest, const char *key)
{
    uint64_t h = map_hash(key, strlen(key));
    h ^= (uint64_t)(uintptr_t)src * 0x9e3779b97f4a7c15ULL;
    h ^= (uint64_t)(uintptr_t)dest * 0xc2b2ae3d27d4eb4fULL;
    return h ^ (h >> 29);
}

/* The binding equal to (src, q or dst, key, args), whose binding_hash is h, or NULL. */
static struct binding *binding_find(struct wr_exchange *src, struct wr_queue *q,
                                    struct wr_exchange *dst, const char *key,
                                    const struct wr_table *args, uint64_t h)
{
    struct wr_vhost *vh = src->vh;
    if (!vh->bindex_cap)
        return NULL;
    for (struct binding *bd = vh->bindex[h & (vh->bindex_cap - 1)]; bd; bd = bd->hnext)
        if (bd->hash == h && bd->src == src && bd->q == q && bd->dst == dst &&
            strcmp(bd->key, key) == 0 && args_equal(bd->args, args))
            return bd;
    return NULL;
}

static int bindex_add(struct wr_vhost *vh, struct binding *bd)
{
    if (vh->bindex_count + 1 > vh->bindex_cap) {
        size_t cap = vh->bindex_cap ? vh->bindex_cap * 2 : 64;
        struct binding **slots = calloc(cap, sizeof *slots);
        if (!slots)
            return WR_ENOMEM;
        for (size_t i = 0; i < vh->bindex_cap; i++) {
            for (struct binding *b = vh->bindex[i], *next; b; b = next) {
                next = b->hnext;
                b->hnext = slots[b->hash & (cap - 1)];
                slots[b->hash & (cap - 1)] = b;
            }
        }
        free(vh->bindex);
        vh->bindex = slots;
        vh->bindex_cap = cap;
    }
    struct binding **head = &vh->bindex[bd->hash & (vh->bindex_cap - 1)];
    bd->hnext = *head;
    *head = bd;
    vh->bindex_count++;
    return WR_OK;
}

static void bindex_del(struct wr_vhost *vh, struct binding *bd)
{
    struct binding **p = &vh->bindex[bd->hash & (vh->bindex_cap - 1)];
    while (*p != bd)
        p = &(*p)->hnext;
    *p = bd->hnext;
    vh->bindex_count--;
}

static struct binding **incoming_list(struct binding *bd)
{
    return bd->q ? &bd->q->in : &bd->dst->in;
}

static int binding_add(struct wr_exchange *src, struct wr_queue *q, struct wr_exchange *dst,
                       const char *key, const struct wr_table *args, bool allow_default,
                       struct wr_error *err)
{
    if (!key)
        key = "";
    if ((src == src->vh->default_ex || dst == src->vh->default_ex) && !allow_default)
        return wr_error_set(err, WR_EPERM,
                            "operation not permitted on the default exchange: every queue is "
                            "bound to it by its own name");
    uint64_t h = binding_hash(src, q ? (void *)q : (void *)dst, key);
    if (binding_find(src, q, dst, key, args, h))
        return WR_OK;
    struct binding *bd = calloc(1, sizeof *bd);
    if (!bd || !(bd->key = strdup(key)) || !(bd->args = wr_table_dup(args))) {
        if (bd)
            free(bd->key);
        free(bd);
        return wr_error_set(err, WR_ENOMEM, "out of memory adding a binding");
    }
    bd->src = src;
    bd->q = q;
    bd->dst = dst;
    bd->pub.key = (struct wr_str){bd->key, strlen(bd->key)};
    bd->pub.args = bd->args;
    bd->hash = h;
    int rc = bindex_add(src->vh, bd);
    if (rc != WR_OK) {
        rc = wr_error_set(err, WR_ENOMEM, "out of memory adding a binding");
    } else if ((rc = src->ops->bind(src->state, &bd->pub, err)) != WR_OK) {
        bindex_del(src->vh, bd);
    } else if (!allow_default && (rc = definitions_bound(bd, err)) != WR_OK) {
        src->ops->unbind(src->state, &bd->pub);
        bindex_del(src->vh, bd);
    }
    if (rc != WR_OK) {
        wr_table_free(bd->args);
        free(bd->key);
        free(bd);
        return rc;
    }
    bd->next = src->out;
    if (src->out)
        src->out->prev = bd;
    src->out = bd;
    src->n_out++;
    struct binding **in = incoming_list(bd);
    bd->in_next = *in;
    if (*in)
        (*in)->in_prev = bd;
    *in = bd;
    return WR_OK;
}

void binding_remove(struct binding *bd)
{
    struct wr_exchange *src = bd->src;
    src->ops->unbind(src->state, &bd->pub);
    bindex_del(src->vh, bd);
    if (bd->prev)
        bd->prev->next = bd->next;
    else
        src->out = bd->next;
    if (bd->next)
        bd->next->prev = bd->prev;
    src->n_out--;
    struct binding **in = incoming_list(bd);
    if (bd->in_prev)
        bd->in_prev->in_next = bd->in_next;
    else
        *in = bd->in_next;
    if (bd->in_next)
        bd->in_next->in_prev = bd->in_prev;
    wr_table_free(bd->args);
    free(bd->key);
    free(bd);
    /* RabbitMQ: an auto-delete exchange goes when its last binding does. */
    if (src->auto_delete && !src->n_out && !src->deleting)
        exchange_destroy(src);
}

int queue_bind_default(struct wr_queue *q, struct wr_error *err)
{
    return binding_add(q->vh->default_ex, q, NULL, q->name, NULL, true, err);
}

static int same_vhost(const struct wr_exchange *ex, const struct wr_vhost *vh,
                      struct wr_error *err)
{
    if (ex->vh != vh)
        return wr_error_set(err, WR_EINVAL, "cannot bind across vhosts ('%s' and '%s')",
                            ex->vh->name, vh->name);
    return WR_OK;
}

int wr_bind_queue(struct wr_exchange *ex, struct wr_queue *q, const char *key,
                  const struct wr_table *args, struct wr_error *err)
{
    int rc = same_vhost(ex, q->vh, err);
    if (rc == WR_OK && q->deleted)
        rc = wr_error_set(err, WR_ENOTFOUND, "queue '%s' was deleted", q->name);
    return rc == WR_OK ? binding_add(ex, q, NULL, key, args, false, err) : rc;
}

int wr_bind_exchange(struct wr_exchange *src, struct wr_exchange *dst, const char *key,
                     const struct wr_table *args, struct wr_error *err)
{
    int rc = same_vhost(src, dst->vh, err);
    return rc == WR_OK ? binding_add(src, NULL, dst, key, args, false, err) : rc;
}

static int unbind(struct wr_exchange *src, struct wr_queue *q, struct wr_exchange *dst,
                  const char *key, const struct wr_table *args, struct wr_error *err)
{
    if (src == src->vh->default_ex || dst == src->vh->default_ex)
        return wr_error_set(err, WR_EPERM, "operation not permitted on the default exchange");
    if (!key)
        key = "";
    struct binding *bd =
        binding_find(src, q, dst, key, args, binding_hash(src, q ? (void *)q : (void *)dst, key));
    int rc = bd ? definitions_unbound(bd, err) : WR_OK;
    if (bd && rc == WR_OK)
        binding_remove(bd);
    return rc;
}

int wr_unbind_queue(struct wr_exchange *ex, struct wr_queue *q, const char *key,
                    const struct wr_table *args, struct wr_error *err)
{
    return unbind(ex, q, NULL, key, args, err);
}

int wr_unbind_exchange(struct wr_exchange *src, struct wr_exchange *dst, const char *key,
                       const struct wr_table *args, struct wr_error *err)
{
    return unbind(src, NULL, dst, key, args, err);
}
