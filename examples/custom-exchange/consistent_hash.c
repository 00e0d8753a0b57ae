/*
 * consistent_hash.c: an exchange type written against warren's public API only, like
 * RabbitMQ's consistent-hash exchange. Each binding's key is a weight (a positive integer):
 * the binding gets that many points on a hash ring. A message goes to the one binding whose
 * point follows the hash of its routing key, so one routing key always lands in one queue,
 * queues share the keys in proportion to their weights, and adding a queue moves only the
 * keys that fall on its points.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <warren/wr.h>

struct point {
    uint32_t hash;
    struct wr_binding *b;
};

struct ring {
    struct point *points; /* sorted by hash */
    size_t count;
};

/* FNV-1a, 32 bits: stable across runs and machines, so routing is reproducible. */
static uint32_t hash32(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 16777619u;
    }
    h ^= h >> 15; /* FNV's low bits mix poorly; fold the high ones in */
    h *= 0x2c1b3c6du;
    h ^= h >> 12;
    return h;
}

static int by_hash(const void *a, const void *b)
{
    const struct point *x = a, *y = b;
    return x->hash < y->hash ? -1 : x->hash > y->hash;
}

static int ch_create(struct wr_plugin_ctx *ctx, const struct wr_exchange_args *args,
                     void **state, struct wr_error *err)
{
    (void)args;
    struct ring *r = calloc(1, sizeof *r);
    if (!r)
        return wr_error_set(err, WR_ENOMEM, "out of memory");
    wr_plog(ctx, WR_LOG_DEBUG, "exchange '%s' created", args->name);
    *state = r;
    return WR_OK;
}

static void ch_destroy(void *state)
{
    struct ring *r = state;
    free(r->points);
    free(r);
}

static int ch_bind(void *state, struct wr_binding *b, struct wr_error *err)
{
    struct ring *r = state;
    char *end;
    long weight = strtol(b->key.ptr, &end, 10);
    if (!b->key.len || *end || weight < 1 || weight > 1000)
        return wr_error_set(err, WR_EINVAL,
                            "consistent_hash: a binding key is a weight from 1 to 1000, "
                            "got '%s'",
                            b->key.ptr);
    struct point *p = realloc(r->points, (r->count + (size_t)weight) * sizeof *p);
    if (!p)
        return wr_error_set(err, WR_ENOMEM, "out of memory");
    r->points = p;
    /* A binding's points derive from its destination's name and index, as RabbitMQ's
     * exchange does: a key routes to the same queue on every run and after a restart. */
    for (long i = 0; i < weight; i++) {
        char id[300]; /* a name is at most 255 bytes */
        int n = snprintf(id, sizeof id, "%s#%ld", wr_binding_destination(b), i);
        r->points[r->count++] = (struct point){hash32(id, (size_t)n), b};
    }
    qsort(r->points, r->count, sizeof *r->points, by_hash);
    return WR_OK;
}

static void ch_unbind(void *state, struct wr_binding *b)
{
    struct ring *r = state;
    size_t kept = 0;
    for (size_t i = 0; i < r->count; i++)
        if (r->points[i].b != b)
            r->points[kept++] = r->points[i];
    r->count = kept;
}

static void ch_route(void *state, const struct wr_msg *msg, struct wr_route *out)
{
    struct ring *r = state;
    if (!r->count)
        return;
    uint32_t h = hash32(msg->routing_key.ptr, msg->routing_key.len);
    size_t lo = 0, hi = r->count; /* first point with hash >= h, wrapping to 0 */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->points[mid].hash < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    wr_route_add(out, r->points[lo == r->count ? 0 : lo].b);
}

static const struct wr_exchange_ops ops = {
    .size = sizeof ops,
    .create = ch_create,
    .destroy = ch_destroy,
    .bind = ch_bind,
    .unbind = ch_unbind,
    .route = ch_route,
};

WR_PLUGIN_DEFINE(.kind = WR_PLUGIN_EXCHANGE, .name = "consistent_hash", .version = "1.0.0",
                 .ops = &ops);
