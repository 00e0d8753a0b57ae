/*
 * fanout.c: the `fanout` exchange type. A message goes to every binding; keys and arguments
 * are ignored (AMQP 0-9-1 3.1.3.2).
 *
 * The index is one array of bindings. Each binding keeps its position in plugin_data, so
 * unbind is a swap with the last element rather than a search: an exchange with many
 * bindings (one per subscriber) stays cheap to shrink.
 */
#include <stdint.h>
#include <stdlib.h>

#include <warren/wr.h>

struct fanout {
    struct wr_binding **bindings;
    size_t count;
    size_t cap;
};

static int fanout_create(struct wr_plugin_ctx *ctx, const struct wr_exchange_args *args,
                         void **state, struct wr_error *err)
{
    (void)ctx;
    struct fanout *f = calloc(1, sizeof *f);
    if (!f)
        return wr_error_set(err, WR_ENOMEM, "exchange '%s': out of memory", args->name);
    *state = f;
    return WR_OK;
}

static void fanout_destroy(void *state)
{
    struct fanout *f = state;
    free(f->bindings);
    free(f);
}

static int fanout_bind(void *state, struct wr_binding *b, struct wr_error *err)
{
    struct fanout *f = state;
    if (f->count == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 8;
        struct wr_binding **bs = realloc(f->bindings, cap * sizeof *bs);
        if (!bs)
            return wr_error_set(err, WR_ENOMEM, "fanout binding: out of memory");
        f->bindings = bs;
        f->cap = cap;
    }
    b->plugin_data = (void *)(uintptr_t)f->count;
    f->bindings[f->count++] = b;
    return WR_OK;
}

static void fanout_unbind(void *state, struct wr_binding *b)
{
    struct fanout *f = state;
    size_t i = (size_t)(uintptr_t)b->plugin_data;
    if (i >= f->count || f->bindings[i] != b)
        return;
    struct wr_binding *last = f->bindings[--f->count];
    f->bindings[i] = last;
    last->plugin_data = (void *)(uintptr_t)i;
    b->plugin_data = NULL;
}

static void fanout_route(void *state, const struct wr_msg *msg, struct wr_route *out)
{
    const struct fanout *f = state;
    (void)msg;
    for (size_t i = 0; i < f->count; i++)
        wr_route_add(out, f->bindings[i]);
}

static const struct wr_exchange_ops fanout_ops = {
    .size = sizeof(struct wr_exchange_ops),
    .create = fanout_create,
    .destroy = fanout_destroy,
    .bind = fanout_bind,
    .unbind = fanout_unbind,
    .route = fanout_route,
};

WR_PLUGIN_DEFINE(.kind = WR_PLUGIN_EXCHANGE, .name = "fanout", .version = WR_VERSION_STRING,
                 .ops = &fanout_ops);
