/*
 * testex.c: a well-formed exchange plugin for the loader and config tests. It routes like
 * fanout, and declares an options schema with one option of each type so the config's
 * checks of plugin options can be tested against a real plugin.
 */
#include <stdlib.h>

#include <warren/wr.h>

struct testex {
    struct wr_binding **bindings;
    size_t count;
};

static int testex_create(struct wr_plugin_ctx *ctx, const struct wr_exchange_args *args,
                         void **state, struct wr_error *err)
{
    (void)ctx, (void)args;
    struct testex *t = calloc(1, sizeof *t);
    if (!t)
        return wr_error_set(err, WR_ENOMEM, "out of memory");
    *state = t;
    return WR_OK;
}

static void testex_destroy(void *state)
{
    struct testex *t = state;
    free(t->bindings);
    free(t);
}

static int testex_bind(void *state, struct wr_binding *b, struct wr_error *err)
{
    struct testex *t = state;
    struct wr_binding **n = realloc(t->bindings, (t->count + 1) * sizeof *n);
    if (!n)
        return wr_error_set(err, WR_ENOMEM, "out of memory");
    t->bindings = n;
    t->bindings[t->count++] = b;
    return WR_OK;
}

static void testex_unbind(void *state, struct wr_binding *b)
{
    struct testex *t = state;
    for (size_t i = 0; i < t->count; i++)
        if (t->bindings[i] == b)
            t->bindings[i] = t->bindings[--t->count];
}

static void testex_route(void *state, const struct wr_msg *msg, struct wr_route *out)
{
    (void)msg;
    struct testex *t = state;
    for (size_t i = 0; i < t->count; i++)
        wr_route_add(out, t->bindings[i]);
}

static const struct wr_exchange_ops ops = {
    .size = sizeof ops,
    .create = testex_create,
    .destroy = testex_destroy,
    .bind = testex_bind,
    .unbind = testex_unbind,
    .route = testex_route,
};

static const struct wr_option options[] = {
    {"label", WR_OPT_STRING, false, "a name"},
    {"enabled", WR_OPT_BOOL, false, "on or off"},
    {"count", WR_OPT_INT, false, "how many"},
    {"buffer", WR_OPT_SIZE, false, "a size such as 64MiB"},
    {"interval", WR_OPT_DURATION, false, "a duration such as 250ms"},
    {"required_thing", WR_OPT_STRING, false, "not required, despite the name"},
    {NULL, 0, false, NULL},
};

WR_PLUGIN_DEFINE(.kind = WR_PLUGIN_EXCHANGE, .name = "testex", .version = "1.0.0",
                 .options = options, .ops = &ops);
