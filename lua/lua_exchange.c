/*
 * lua_exchange.c: the `lua` exchange type (docs/lua.md). A script's route(msg) decides where
 * a message goes: the strings it returns name queues of the exchange's vhost (match:
 * queues), or are matched against the exchange's own bindings exactly (direct) or as topic
 * patterns (topic).
 *
 * Matching is not written again here. In direct and topic mode the bindings are indexed by
 * the loaded `direct` or `topic` plugin, through its own ops (found with wr_broker_plugin),
 * and each string route returns goes through that index as if it were the routing key.
 *
 * A failed call (an error, a spent budget, the memory cap, a wrong return type) costs that
 * message its route and nothing else: it is counted; a warning with the last error and the
 * count since the previous warning is logged at most once per 10 s (a timer reports what a
 * quiet spell left unreported); with dead_letter_exchange the message is published there
 * from a deferred task, never from inside routing, with the error in x-script-error.
 *
 * Reload: on SIGHUP a script whose file changed (device, inode, size or mtime) is loaded
 * into a new state and its init run; only when both succeed does the new state replace the
 * old one. Routing and signals both run on the loop thread, so the swap falls between two
 * messages: none is lost or routed twice.
 */
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lauxlib.h>

#include <warren/wr.h>

#include "msg.h"
#include "sandbox.h"

#define LUAEX_WARN_INTERVAL_MS 10000
#define LUAEX_DEFAULT_INSTRUCTIONS 1000000
#define LUAEX_MIN_INSTRUCTIONS 1000
#define LUAEX_DEFAULT_MEMORY (16 * 1024 * 1024)
#define LUAEX_MIN_MEMORY (64 * 1024)
#define LUAEX_ERROR_HEADER "x-script-error"

enum luaex_match { MATCH_QUEUES, MATCH_DIRECT, MATCH_TOPIC };

/* Each is also the name of the exchange type that indexes the bindings in that mode. */
static const char *const match_names[] = {"queues", "direct", "topic"};

/* What a loaded script keeps on its state's stack above the sandbox's: the key "route"
 * (so that looking the function up never allocates) and the msg view. */
enum { SCRIPT_ROUTE_KEY = SANDBOX_TOP + 1, SCRIPT_VIEW, SCRIPT_TOP = SCRIPT_VIEW };

/* One loaded version of the script. */
struct script {
    struct sandbox *sb;
    struct msgview *view;
    struct stat file; /* as it was when loaded */
};

struct luaex {
    struct wr_plugin_ctx *ctx;
    struct wr_loop *lp;
    struct wr_vhost *vh;
    char *tag;                  /* "exchange 'x' in vhost '/'", for the log */
    char *path;                 /* the script */
    char *dead_letter_exchange; /* NULL: none */
    struct wr_table *options;   /* as declared: init's config at every load */
    struct sandbox_limits limits;
    enum luaex_match match;
    const struct wr_exchange_ops *index_ops; /* direct or topic mode: that plugin's */
    void *index;
    struct script cur;
    bool hup_watched;
    uint64_t unreported;        /* failures since the last warning */
    bool warned;
    uint64_t warned_ms;
    uint64_t warn_timer;        /* reports the unreported ones; 0: none */
    char last_error[WR_ERROR_MSG_MAX];
    struct wr_ring dead;        /* struct wr_msg *: copies for the dead-letter task */
    bool dlx_missing;           /* said once until it exists */
};

/* ---- options ------------------------------------------------------------------------ */

/* The option called name: given as name (YAML) or x-name (AMQP declare arguments). */
static const struct wr_value *luaex_option(const struct wr_table *opts, const char *name)
{
    const struct wr_value *v = wr_table_get(opts, name);
    if (!v) {
        char xname[64];
        snprintf(xname, sizeof xname, "x-%s", name);
        v = wr_table_get(opts, xname);
    }
    return v;
}

static bool is_string(const struct wr_value *v)
{
    return (v->type == WR_V_STR || v->type == WR_V_BYTES) && !memchr(v->u.s.ptr, 0, v->u.s.len);
}

/* A string option as a new C string in *out, NULL when it is absent. */
static int luaex_string(const struct luaex *x, const struct wr_table *opts, const char *name,
                        char **out, struct wr_error *err)
{
    const struct wr_value *v = luaex_option(opts, name);
    *out = NULL;
    if (!v)
        return WR_OK;
    if (!is_string(v))
        return wr_error_set(err, WR_EINVAL, "%s: option '%s' must be a string", x->tag, name);
    if (!(*out = strndup(v->u.s.ptr, v->u.s.len)))
        return wr_error_set(err, WR_ENOMEM, "%s: out of memory", x->tag);
    return WR_OK;
}

/* An integer option from min to max, def when it is absent. */
static int luaex_int(const struct luaex *x, const struct wr_table *opts, const char *name,
                     int64_t min, int64_t max, int64_t def, int64_t *out, struct wr_error *err)
{
    const struct wr_value *v = luaex_option(opts, name);
    *out = def;
    if (!v)
        return WR_OK;
    if (!wr_value_is_int(v))
        return wr_error_set(err, WR_EINVAL, "%s: option '%s' must be an integer", x->tag, name);
    if (v->u.i < min || v->u.i > max)
        return wr_error_set(err, WR_EINVAL,
                            "%s: option '%s' must be from %" PRId64 " to %" PRId64 ", got %" PRId64,
                            x->tag, name, min, max, v->u.i);
    *out = v->u.i;
    return WR_OK;
}

static int luaex_parse(struct luaex *x, const struct wr_table *opts, struct wr_error *err)
{
    int64_t instructions = 0, memory = 0;
    int rc = luaex_string(x, opts, "script", &x->path, err);
    if (rc == WR_OK && !x->path)
        rc = wr_error_set(err, WR_EINVAL,
                          "%s: option 'script' (x-script in declare arguments) is required: "
                          "the Lua file that defines route(msg)",
                          x->tag);
    if (rc == WR_OK)
        rc = luaex_string(x, opts, "dead_letter_exchange", &x->dead_letter_exchange, err);
    if (rc == WR_OK)
        rc = luaex_int(x, opts, "max_instructions", LUAEX_MIN_INSTRUCTIONS, INT_MAX,
                       LUAEX_DEFAULT_INSTRUCTIONS, &instructions, err);
    if (rc == WR_OK)
        rc = luaex_int(x, opts, "max_memory", LUAEX_MIN_MEMORY, INT64_MAX, LUAEX_DEFAULT_MEMORY,
                       &memory, err);
    x->limits = (struct sandbox_limits){(int)instructions, (size_t)memory};
    const struct wr_value *match = luaex_option(opts, "match");
    if (rc != WR_OK || !match)
        return rc;
    for (size_t i = 0; is_string(match) && i < sizeof match_names / sizeof match_names[0]; i++) {
        if (strlen(match_names[i]) == match->u.s.len &&
            memcmp(match_names[i], match->u.s.ptr, match->u.s.len) == 0) {
            x->match = (enum luaex_match)i;
            return WR_OK;
        }
    }
    return wr_error_set(err, WR_EINVAL, "%s: option 'match' must be queues, direct or topic",
                        x->tag);
}

/* ---- loading a script --------------------------------------------------------------- */

/* Pushes the key "route" and a new msg view, the values a script keeps on its stack.
 * Argument 1: the view's cap on header edits. */
static int script_prepare(lua_State *L)
{
    lua_pushliteral(L, "route");
    lua_pushcfunction(L, msgview_new);
    lua_pushvalue(L, 1);
    lua_call(L, 1, 1);
    return 2;
}

/* Pushes the script's init (nil if it has none) and its config: the declared options, with
 * the "x-" of AMQP arguments taken off their names so a script reads the same keys either
 * way. Arguments: the globals table and the options (a light userdata). */
static int script_init_args(lua_State *L)
{
    const struct wr_table *opts = lua_touserdata(L, 2);
    lua_getfield(L, 1, "init");
    lua_createtable(L, 0, opts->count < 64 ? (int)opts->count : 64);
    for (size_t i = 0; i < opts->count; i++) {
        const char *name = opts->fields[i].name;
        msgview_push_value(L, &opts->fields[i].value);
        lua_setfield(L, -2, strncmp(name, "x-", 2) == 0 ? name + 2 : name);
    }
    return 2;
}

static void script_close(struct script *s)
{
    sandbox_close(s->sb);
    s->sb = NULL;
}

/* Loads x's script into a new state: compiles and runs the file, calls init(config), checks
 * that route is a function. */
static int script_open(const struct luaex *x, struct script *s, struct wr_error *err)
{
    *s = (struct script){0};
    if (stat(x->path, &s->file) != 0)
        return wr_error_sys(err, WR_EINVAL, "cannot open %s", x->path);
    int rc = sandbox_open(x->path, &x->limits, x->ctx, x->tag, &s->sb, err);
    if (rc != WR_OK)
        return rc;
    lua_State *L = sandbox_state(s->sb);
    lua_pushcfunction(L, script_prepare);
    lua_pushinteger(L, (lua_Integer)x->limits.max_memory);
    rc = sandbox_call(s->sb, 1, 2, err);
    if (rc == WR_OK) {
        s->view = msgview_at(L, SCRIPT_VIEW);
        rc = sandbox_load(s->sb, err);
    }
    if (rc == WR_OK) {
        lua_pushcfunction(L, script_init_args);
        lua_pushvalue(L, SANDBOX_ENV);
        lua_pushlightuserdata(L, x->options);
        rc = sandbox_call(s->sb, 2, 2, err);
    }
    if (rc == WR_OK) {
        if (lua_isnil(L, -2))
            lua_pop(L, 2);
        else
            rc = sandbox_call(s->sb, 1, 0, err);
    }
    if (rc == WR_OK) {
        lua_pushvalue(L, SCRIPT_ROUTE_KEY);
        if (lua_gettable(L, SANDBOX_ENV) != LUA_TFUNCTION)
            rc = wr_error_set(err, WR_EINVAL, "%s: defines no function route(msg)", x->path);
        lua_settop(L, SCRIPT_TOP);
    }
    if (rc != WR_OK)
        script_close(s);
    return rc;
}

static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

static void luaex_on_hup(struct wr_loop *lp, int signo, void *data)
{
    (void)lp, (void)signo;
    struct luaex *x = data;
    struct stat st;
    if (stat(x->path, &st) == 0 && same_file(&st, &x->cur.file))
        return;
    struct script next;
    struct wr_error err = {0};
    if (script_open(x, &next, &err) != WR_OK) {
        wr_plog(x->ctx, WR_LOG_ERROR, "%s: reload failed, the running script stays: %s",
                x->tag, err.msg);
        return;
    }
    script_close(&x->cur);
    x->cur = next;
    wr_plog(x->ctx, WR_LOG_INFO, "%s: reloaded %s", x->tag, x->path);
}

/* ---- failures ----------------------------------------------------------------------- */

static void luaex_warn(struct luaex *x)
{
    wr_plog(x->ctx, WR_LOG_WARN, "%s: %" PRIu64 " route failure%s since the last warning; the "
            "last: %s", x->tag, x->unreported, x->unreported == 1 ? "" : "s", x->last_error);
    x->unreported = 0;
    x->warned = true;
    x->warned_ms = wr_loop_now_ms(x->lp);
}

static void luaex_on_warn_timer(struct wr_loop *lp, void *data)
{
    (void)lp;
    struct luaex *x = data;
    x->warn_timer = 0;
    luaex_warn(x);
}

static void luaex_dead_letter_task(struct wr_loop *lp, void *data)
{
    (void)lp;
    struct luaex *x = data;
    struct wr_exchange *dlx = wr_exchange_find(x->vh, x->dead_letter_exchange);
    if (!dlx && !x->dlx_missing)
        wr_plog(x->ctx, WR_LOG_WARN,
                "%s: dead_letter_exchange '%s' does not exist: failed messages are dropped",
                x->tag, x->dead_letter_exchange);
    x->dlx_missing = !dlx;
    while (x->dead.count) {
        struct wr_msg *m = *(struct wr_msg **)wr_ring_at(&x->dead, 0);
        wr_ring_pop_front(&x->dead);
        if (dlx)
            wr_publish(dlx, m, NULL, NULL);
        wr_msg_unref(m);
    }
}

/* Queues a copy of msg, with the error in x-script-error, for the dead-letter task. A
 * message that already carries one failed as a dead letter: sending it on would cycle. */
static void luaex_dead_letter(struct luaex *x, const struct wr_msg *msg, const char *why)
{
    if (wr_table_get(msg->headers, LUAEX_ERROR_HEADER))
        return;
    struct wr_table *headers = wr_table_dup(msg->headers);
    struct wr_value error = wr_value_str(why);
    struct wr_msg *copy = NULL;
    int rc = WR_ENOMEM;
    if (headers && wr_table_set(headers, LUAEX_ERROR_HEADER, &error) == WR_OK &&
        wr_ring_reserve(&x->dead, x->dead.count + 1) == WR_OK)
        rc = msgview_copy(msg, msg->routing_key, headers, &copy, NULL);
    wr_table_free(headers);
    if (rc == WR_OK && !x->dead.count)
        rc = wr_loop_defer(x->lp, luaex_dead_letter_task, x);
    if (rc != WR_OK) {
        wr_msg_unref(copy);
        wr_plog(x->ctx, WR_LOG_WARN, "%s: out of memory dead-lettering a failed message",
                x->tag);
        return;
    }
    *(struct wr_msg **)wr_ring_push_back(&x->dead) = copy;
}

static void luaex_fail(struct luaex *x, const struct wr_msg *msg, const struct wr_error *err)
{
    x->unreported++;
    snprintf(x->last_error, sizeof x->last_error, "%s", err->msg);
    if (!x->warn_timer) {
        uint64_t now = wr_loop_now_ms(x->lp);
        if (!x->warned || now - x->warned_ms >= LUAEX_WARN_INTERVAL_MS)
            luaex_warn(x);
        else
            x->warn_timer = wr_loop_timer_add(x->lp, x->warned_ms + LUAEX_WARN_INTERVAL_MS - now,
                                              luaex_on_warn_timer, x);
    }
    if (x->dead_letter_exchange)
        luaex_dead_letter(x, msg, err->msg);
}

/* ---- routing ------------------------------------------------------------------------ */

/* A return value route may not give, reported at the line route is defined on. */
static int luaex_wrong_type(const struct luaex *x, const char *got, struct wr_error *err)
{
    lua_State *L = sandbox_state(x->cur.sb);
    lua_Debug ar = {0};
    lua_pushvalue(L, SCRIPT_ROUTE_KEY);
    lua_gettable(L, SANDBOX_ENV);
    if (lua_isfunction(L, -1))
        lua_getinfo(L, ">S", &ar);
    else
        lua_pop(L, 1);
    if (ar.linedefined <= 0)
        return wr_error_set(err, WR_EINVAL,
                            "%s: route returned %s: expected a string, a list of strings or nil",
                            x->path, got);
    return wr_error_set(err, WR_EINVAL,
                        "%s:%d: route returned %s: expected a string, a list of strings or nil",
                        x->path, ar.linedefined, got);
}

/* Adds what one string route returned names. */
static void luaex_add(const struct luaex *x, const struct wr_msg *msg, const char *name,
                      size_t len, struct wr_route *out)
{
    if (x->match == MATCH_QUEUES) {
        struct wr_queue *q = strlen(name) == len ? wr_queue_find(x->vh, name) : NULL;
        if (q)
            wr_route_add_queue(out, q);
        return;
    }
    struct wr_msg probe = *msg;
    probe.routing_key = (struct wr_str){name, len};
    x->index_ops->route(x->index, &probe, out);
}

/* Adds the destinations named by route's result, on top of the stack. Every type is checked
 * before anything is added, so a wrong one routes nowhere. */
static int luaex_deliver(const struct luaex *x, const struct wr_msg *msg, struct wr_route *out,
                         struct wr_error *err)
{
    lua_State *L = sandbox_state(x->cur.sb);
    int type = lua_type(L, -1);
    size_t n = 1;
    char got[64];
    if (type == LUA_TNIL)
        return WR_OK;
    if (type == LUA_TTABLE) {
        n = lua_rawlen(L, -1);
        for (size_t i = 1; i <= n; i++) {
            int item = lua_rawgeti(L, -1, (lua_Integer)i);
            lua_pop(L, 1);
            if (item != LUA_TSTRING) {
                snprintf(got, sizeof got, "a table holding a %s at [%zu]",
                         lua_typename(L, item), i);
                return luaex_wrong_type(x, got, err);
            }
        }
    } else if (type != LUA_TSTRING) {
        snprintf(got, sizeof got, "a %s", lua_typename(L, type));
        return luaex_wrong_type(x, got, err);
    }
    if (n == 0)
        return WR_OK;
    struct wr_msg *copy = NULL;
    if (msgview_changed(x->cur.view)) {
        int rc = msgview_build(x->cur.view, &copy, err);
        if (rc != WR_OK)
            return rc;
        wr_route_use_msg(out, copy);
        msg = copy;
    }
    for (size_t i = 1; i <= n; i++) {
        if (type == LUA_TTABLE)
            lua_rawgeti(L, -1, (lua_Integer)i);
        else
            lua_pushvalue(L, -1);
        size_t len;
        const char *name = lua_tolstring(L, -1, &len);
        luaex_add(x, msg, name, len, out);
        lua_pop(L, 1);
    }
    wr_msg_unref(copy);
    return WR_OK;
}

static void luaex_route(void *state, const struct wr_msg *msg, struct wr_route *out)
{
    struct luaex *x = state;
    lua_State *L = sandbox_state(x->cur.sb);
    struct wr_error err;
    msgview_begin(x->cur.view, msg);
    lua_pushvalue(L, SCRIPT_ROUTE_KEY);
    lua_gettable(L, SANDBOX_ENV);
    lua_pushvalue(L, SCRIPT_VIEW);
    int rc = sandbox_call(x->cur.sb, 1, 1, &err);
    if (rc == WR_OK)
        rc = luaex_deliver(x, msg, out, &err);
    msgview_end(L, SCRIPT_VIEW, x->cur.view);
    lua_settop(L, SCRIPT_TOP);
    if (rc != WR_OK)
        luaex_fail(x, msg, &err);
}

/* ---- the exchange ------------------------------------------------------------------- */

/* Direct and topic mode: the bindings go into an exchange of that type's own making. */
static int luaex_index_open(struct luaex *x, const struct wr_exchange_args *args,
                            struct wr_error *err)
{
    const char *type = match_names[x->match];
    struct wr_plugin_ctx *pc =
        wr_broker_plugin(wr_plugin_ctx_broker(x->ctx), type, WR_PLUGIN_EXCHANGE);
    const struct wr_exchange_ops *ops = pc ? wr_plugin_ctx_plugin(pc)->ops : NULL;
    if (!ops || ops->size < offsetof(struct wr_exchange_ops, route) + sizeof ops->route)
        return wr_error_set(err, WR_EINVAL, "%s: match '%s' needs the exchange type '%s'",
                            x->tag, type, type);
    x->index_ops = ops;
    return ops->create(pc, args, &x->index, err);
}

static void luaex_destroy(void *state)
{
    struct luaex *x = state;
    if (x->hup_watched)
        wr_loop_signal_del(x->lp, SIGHUP, luaex_on_hup, x);
    if (x->warn_timer) {
        wr_loop_timer_del(x->lp, x->warn_timer);
        luaex_warn(x);
    }
    wr_loop_defer_cancel(x->lp, luaex_dead_letter_task, x);
    while (x->dead.count) {
        wr_msg_unref(*(struct wr_msg **)wr_ring_at(&x->dead, 0));
        wr_ring_pop_front(&x->dead);
    }
    wr_ring_fini(&x->dead);
    if (x->index)
        x->index_ops->destroy(x->index);
    script_close(&x->cur);
    wr_table_free(x->options);
    free(x->dead_letter_exchange);
    free(x->path);
    free(x->tag);
    free(x);
}

static int luaex_create(struct wr_plugin_ctx *ctx, const struct wr_exchange_args *args,
                        void **state, struct wr_error *err)
{
    struct luaex *x = calloc(1, sizeof *x);
    if (!x)
        return wr_error_set(err, WR_ENOMEM, "exchange '%s': out of memory", args->name);
    x->ctx = ctx;
    x->lp = wr_plugin_ctx_loop(ctx);
    x->vh = wr_vhost_find(wr_plugin_ctx_broker(ctx), args->vhost);
    wr_ring_init(&x->dead, sizeof(struct wr_msg *));
    int rc = WR_OK;
    if (asprintf(&x->tag, "exchange '%s' in vhost '%s'", args->name, args->vhost) < 0) {
        x->tag = NULL;
        rc = wr_error_set(err, WR_ENOMEM, "exchange '%s': out of memory", args->name);
    } else if (!(x->options = wr_table_dup(args->options))) {
        rc = wr_error_set(err, WR_ENOMEM, "%s: out of memory", x->tag);
    }
    if (rc == WR_OK)
        rc = luaex_parse(x, args->options, err);
    if (rc == WR_OK && x->match != MATCH_QUEUES)
        rc = luaex_index_open(x, args, err);
    if (rc == WR_OK)
        rc = script_open(x, &x->cur, err);
    if (rc == WR_OK)
        x->hup_watched = (rc = wr_loop_signal_add(x->lp, SIGHUP, luaex_on_hup, x, err)) == WR_OK;
    if (rc != WR_OK) {
        luaex_destroy(x);
        return rc;
    }
    *state = x;
    return WR_OK;
}

static int luaex_bind(void *state, struct wr_binding *b, struct wr_error *err)
{
    struct luaex *x = state;
    return x->index ? x->index_ops->bind(x->index, b, err) : WR_OK;
}

static void luaex_unbind(void *state, struct wr_binding *b)
{
    struct luaex *x = state;
    if (x->index)
        x->index_ops->unbind(x->index, b);
}

static const struct wr_option luaex_options[] = {
    {"script", WR_OPT_STRING, true, "the Lua file that defines route(msg)"},
    {"match", WR_OPT_STRING, false,
     "what route's strings name: queues (default), direct or topic binding keys"},
    {"max_instructions", WR_OPT_INT, false,
     "instruction budget of one route call, at least 1000; default 1000000"},
    {"max_memory", WR_OPT_SIZE, false, "memory cap of the script, at least 64KiB; default 16MiB"},
    {"dead_letter_exchange", WR_OPT_STRING, false,
     "where a message whose route call failed is published, with x-script-error"},
    /* Every other key (the core's WR_OPTION_ANY row): passed on to the script's init. */
    {WR_OPTION_ANY, WR_OPT_TABLE, false, "anything else is passed to the script's init(config)"},
    {NULL, 0, false, NULL},
};

static const struct wr_exchange_ops luaex_ops = {
    .size = sizeof(struct wr_exchange_ops),
    .create = luaex_create,
    .destroy = luaex_destroy,
    .bind = luaex_bind,
    .unbind = luaex_unbind,
    .route = luaex_route,
    .route_unbound = 1,
    .runs_user_code = 1,
};

WR_PLUGIN_DEFINE(.kind = WR_PLUGIN_EXCHANGE, .name = "lua", .version = WR_VERSION_STRING,
                 .options = luaex_options, .ops = &luaex_ops);
