/*
 * direct.c: the `direct` exchange type. A message goes to every binding whose key equals its
 * routing key, byte for byte (AMQP 0-9-1 3.1.3.1, as RabbitMQ does it).
 *
 * The index is a hash table from binding key to the bindings that carry it: open addressing
 * with linear probing, a table of pointers to one record per distinct key. A route is one
 * hash of the routing key and, almost always, one probe. The default exchange "" is a
 * direct exchange with one binding per queue, so this is the broker's hottest route.
 *
 * Deletion shifts the following run of the probe sequence back instead of leaving
 * tombstones, so the table never degrades after many bind/unbind cycles.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <warren/wr.h>

#define DIRECT_MIN_CAP 16

/* The bindings that share one key. The key is copied in, as the binding that brought it may
 * be unbound before the others. */
struct direct_key {
    uint64_t hash;
    size_t len;
    uint32_t count;
    uint32_t cap;
    const struct wr_binding **bindings;
    char key[];
};

struct direct {
    struct direct_key **slots; /* cap slots, NULL when empty */
    size_t cap;                /* a power of two */
    size_t used;               /* distinct keys; kept at most half of cap */
};

/* FNV-1a, 64 bits: short keys, no setup, good enough spread for a power-of-two table. */
static uint64_t direct_hash(const char *p, size_t len)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* The slot holding key, or the empty slot where it would go. */
static size_t direct_slot(const struct direct *d, const char *key, size_t len, uint64_t hash)
{
    size_t mask = d->cap - 1;
    size_t i = hash & mask;
    for (;;) {
        const struct direct_key *k = d->slots[i];
        if (!k || (k->hash == hash && k->len == len && memcmp(k->key, key, len) == 0))
            return i;
        i = (i + 1) & mask;
    }
}

static int direct_grow(struct direct *d)
{
    size_t cap = d->cap * 2;
    struct direct_key **slots = calloc(cap, sizeof *slots);
    if (!slots)
        return WR_ENOMEM;
    for (size_t i = 0; i < d->cap; i++) {
        struct direct_key *k = d->slots[i];
        if (!k)
            continue;
        size_t j = k->hash & (cap - 1);
        while (slots[j])
            j = (j + 1) & (cap - 1);
        slots[j] = k;
    }
    free(d->slots);
    d->slots = slots;
    d->cap = cap;
    return WR_OK;
}

/* Empties slot i, then moves back each entry of the run after it that would no longer be
 * found (its home slot lies cyclically outside (i, j]). */
static void direct_slot_clear(struct direct *d, size_t i)
{
    size_t mask = d->cap - 1;
    size_t j = i;
    d->slots[i] = NULL;
    for (;;) {
        j = (j + 1) & mask;
        struct direct_key *k = d->slots[j];
        if (!k)
            return;
        size_t home = k->hash & mask;
        bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            d->slots[i] = k;
            d->slots[j] = NULL;
            i = j;
        }
    }
}

static int direct_create(struct wr_plugin_ctx *ctx, const struct wr_exchange_args *args,
                         void **state, struct wr_error *err)
{
    (void)ctx;
    struct direct *d = calloc(1, sizeof *d);
    if (d)
        d->slots = calloc(DIRECT_MIN_CAP, sizeof *d->slots);
    if (!d || !d->slots) {
        free(d);
        return wr_error_set(err, WR_ENOMEM, "exchange '%s': out of memory", args->name);
    }
    d->cap = DIRECT_MIN_CAP;
    *state = d;
    return WR_OK;
}

static void direct_destroy(void *state)
{
    struct direct *d = state;
    for (size_t i = 0; i < d->cap; i++) {
        if (d->slots[i]) {
            free(d->slots[i]->bindings);
            free(d->slots[i]);
        }
    }
    free(d->slots);
    free(d);
}

static int direct_bind(void *state, struct wr_binding *b, struct wr_error *err)
{
    struct direct *d = state;
    uint64_t hash = direct_hash(b->key.ptr, b->key.len);
    size_t i = direct_slot(d, b->key.ptr, b->key.len, hash);
    struct direct_key *k = d->slots[i];
    if (!k) {
        if ((d->used + 1) * 2 > d->cap) {
            if (direct_grow(d) != WR_OK)
                goto nomem;
            i = direct_slot(d, b->key.ptr, b->key.len, hash);
        }
        k = calloc(1, sizeof *k + b->key.len + 1);
        if (!k)
            goto nomem;
        k->hash = hash;
        k->len = b->key.len;
        memcpy(k->key, b->key.ptr, b->key.len);
        d->slots[i] = k;
        d->used++;
    }
    if (k->count == k->cap) {
        uint32_t cap = k->cap ? k->cap * 2 : 1;
        const struct wr_binding **bs = realloc(k->bindings, cap * sizeof *bs);
        if (!bs) {
            if (k->count == 0) { /* just made: do not leave an empty key behind */
                direct_slot_clear(d, i);
                d->used--;
                free(k);
            }
            goto nomem;
        }
        k->bindings = bs;
        k->cap = cap;
    }
    k->bindings[k->count++] = b;
    b->plugin_data = k;
    return WR_OK;
nomem:
    return wr_error_set(err, WR_ENOMEM, "direct binding '%s': out of memory", b->key.ptr);
}

static void direct_unbind(void *state, struct wr_binding *b)
{
    struct direct *d = state;
    struct direct_key *k = b->plugin_data;
    if (!k)
        return;
    for (uint32_t n = 0; n < k->count; n++) {
        if (k->bindings[n] == b) {
            k->bindings[n] = k->bindings[--k->count];
            break;
        }
    }
    b->plugin_data = NULL;
    if (k->count > 0)
        return;
    direct_slot_clear(d, direct_slot(d, k->key, k->len, k->hash));
    d->used--;
    free(k->bindings);
    free(k);
}

static void direct_route(void *state, const struct wr_msg *msg, struct wr_route *out)
{
    const struct direct *d = state;
    const char *key = msg->routing_key.ptr ? msg->routing_key.ptr : "";
    size_t len = msg->routing_key.len;
    const struct direct_key *k = d->slots[direct_slot(d, key, len, direct_hash(key, len))];
    if (!k)
        return;
    for (uint32_t n = 0; n < k->count; n++)
        wr_route_add(out, k->bindings[n]);
}

static const struct wr_exchange_ops direct_ops = {
    .size = sizeof(struct wr_exchange_ops),
    .create = direct_create,
    .destroy = direct_destroy,
    .bind = direct_bind,
    .unbind = direct_unbind,
    .route = direct_route,
};

WR_PLUGIN_DEFINE(.kind = WR_PLUGIN_EXCHANGE, .name = "direct", .version = WR_VERSION_STRING,
                 .ops = &direct_ops);
