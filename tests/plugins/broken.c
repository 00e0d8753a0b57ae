/*
 * broken.c: one exchange plugin source built several times, each with one defect chosen by a
 * BROKEN_* definition, so the loader's refusals are tested against real shared objects.
 */
#include <stdlib.h>

#include <warren/wr.h>

#ifdef BROKEN_UNDEFINED_SYMBOL
/* Declared, never defined anywhere: dlopen with RTLD_NOW must fail on it. */
extern int wr_test_symbol_that_does_not_exist(void);
#endif

static int broken_create(struct wr_plugin_ctx *ctx, const struct wr_exchange_args *args,
                         void **state, struct wr_error *err)
{
    (void)ctx, (void)args;
#ifdef BROKEN_FAILING_CREATE
    (void)state;
    return wr_error_set(err, WR_EINVAL, "failing_create refuses every exchange");
#else
#ifdef BROKEN_UNDEFINED_SYMBOL
    if (wr_test_symbol_that_does_not_exist())
        return WR_EINVAL;
#endif
    (void)err;
    *state = NULL;
    return WR_OK;
#endif
}

static void broken_destroy(void *state) { (void)state; }

static int broken_bind(void *state, struct wr_binding *b, struct wr_error *err)
{
    (void)state, (void)b, (void)err;
    return WR_OK;
}

static void broken_unbind(void *state, struct wr_binding *b) { (void)state, (void)b; }

static void broken_route(void *state, const struct wr_msg *msg, struct wr_route *out)
{
    (void)state, (void)msg, (void)out;
}

static const struct wr_exchange_ops ops = {
    .size = sizeof ops,
    .create = broken_create,
    .destroy = broken_destroy,
    .bind = broken_bind,
    .unbind = broken_unbind,
#ifndef BROKEN_NO_ROUTE
    .route = broken_route,
#endif
};

#ifdef BROKEN_NO_ROUTE
/* Referenced so the unused static does not fail -Werror. */
void (*const broken_route_ref)(void *, const struct wr_msg *, struct wr_route *) = broken_route;
#endif

#if defined(BROKEN_ABI_MAJOR)
#define NAME "abi_major"
#define MAJOR (WR_ABI_MAJOR + 1)
#elif defined(BROKEN_ABI_MINOR)
#define NAME "abi_minor"
#define MINOR (WR_ABI_MINOR + 1)
#elif defined(BROKEN_SHORT_SIZE)
#define NAME "short_size"
#define SIZE 8
#elif defined(BROKEN_DUP_NAME)
#define NAME "direct"
#elif defined(BROKEN_NO_ROUTE)
#define NAME "no_route"
#elif defined(BROKEN_FAILING_CREATE)
#define NAME "failing_create"
#else
#define NAME "undefined_sym"
#endif
#ifndef MAJOR
#define MAJOR WR_ABI_MAJOR
#endif
#ifndef MINOR
#define MINOR WR_ABI_MINOR
#endif
#ifndef SIZE
#define SIZE sizeof(struct wr_plugin)
#endif

#ifdef BROKEN_NO_ENTRY
/* Exports a descriptor under another name: a shared object that is not a warren plugin. */
WR_EXPORT const struct wr_plugin not_the_entry = {
#else
WR_EXPORT const struct wr_plugin wr_plugin_entry = {
#endif
    .abi_major = MAJOR,
    .abi_minor = MINOR,
    .size = SIZE,
    .kind = WR_PLUGIN_EXCHANGE,
    .name = NAME,
    .version = "0.0.1",
    .ops = &ops,
};
