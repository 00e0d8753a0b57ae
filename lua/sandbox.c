/*
 * sandbox.c: a Lua state a script may not escape, exhaust or outlive its budget in.
 *
 * What is in it: the base library without dofile, loadfile, collectgarbage and the
 * bytecode-capable load (replaced by a text-only one), print writing to warren's log, string
 * without dump, table, math, utf8, os.time and os.clock, and json.decode / json.null from
 * lua-cjson. io, os, package, debug and coroutine are never opened, so nothing reaches the
 * file system, the environment or another state. The script's globals live in a table of
 * their own whose __index is the library table and whose metatable is locked, so a script
 * cannot replace the libraries' table or reach it directly.
 *
 * Limits: the allocator counts every byte the state holds and returns NULL past the cap
 * (Lua then collects garbage and, failing that, raises a memory error); the count hook
 * raises an error when a call's instruction budget is spent and then re-arms itself at every
 * instruction, so a pcall in the script cannot catch the error and carry on. The budget
 * counts VM instructions: a single library call (a pattern match over a long string) counts
 * as one, which docs/lua.md says.
 *
 * Everything that can raise a Lua error, the setup included, runs under lua_pcall: a memory
 * error outside one would panic and abort the broker.
 */
#include "sandbox.h"

#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include <lua-cjson.h>

/* print writes at most this much of a line; control characters become spaces, so one call
 * is one line of the log. */
#define SANDBOX_PRINT_MAX 1024

struct sandbox {
    lua_State *L;
    const struct wr_plugin_ctx *ctx;
    const char *tag;
    char *path;       /* the script file */
    size_t used;      /* bytes the state holds */
    size_t cap;
    int budget;
};

/* Lua's allocator contract: ptr NULL means osize is a type tag, not a size; nsize 0 frees;
 * a shrink must not fail (realloc to a smaller size does not). */
static void *sandbox_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    struct sandbox *sb = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        sb->used -= old;
        return NULL;
    }
    if (nsize > old && nsize - old > sb->cap - sb->used)
        return NULL;
    void *p = realloc(ptr, nsize);
    if (p)
        sb->used = sb->used - old + nsize;
    return p;
}

/* The count hook: the call's budget is spent. From now until the next call it fires at every
 * instruction, so the error comes back however often the script catches it. */
static void sandbox_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    void *ud;
    lua_getallocf(L, &ud);
    const struct sandbox *sb = ud;
    lua_sethook(L, sandbox_hook, LUA_MASKCOUNT, 1);
    lua_pushfstring(L, "instruction budget of %d exhausted (max_instructions)", sb->budget);
    lua_error(L);
}

/* The message handler of every call: makes the error "file:line: message". An error raised
 * by Lua code already starts with its position; one raised by a C function or by the count
 * hook gets the position of the innermost Lua function. Error objects that are not strings
 * are named by their type: calling their __tostring would run script code here. */
static int sandbox_on_error(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg)
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    lua_Debug ar;
    for (int level = 1; lua_getstack(L, level, &ar); level++) {
        lua_getinfo(L, "Sl", &ar);
        if (ar.currentline <= 0)
            continue;
        size_t n = strlen(ar.short_src);
        if (strncmp(msg, ar.short_src, n) != 0 || msg[n] != ':')
            lua_pushfstring(L, "%s:%d: %s", ar.short_src, ar.currentline, msg);
        else
            lua_pushstring(L, msg);
        return 1;
    }
    lua_pushstring(L, msg);
    return 1;
}

/* print(...): one line at info level in warren's log, tagged with the script's owner. Can
 * raise (memory, or a __tostring that fails). */
static int sandbox_print(lua_State *L)
{
    const struct sandbox *sb = lua_touserdata(L, lua_upvalueindex(1));
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1)
            luaL_addchar(&b, '\t');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    size_t len;
    const char *text = lua_tolstring(L, -1, &len);
    char line[SANDBOX_PRINT_MAX + 1];
    size_t keep = len < SANDBOX_PRINT_MAX ? len : SANDBOX_PRINT_MAX;
    for (size_t i = 0; i < keep; i++)
        line[i] = (unsigned char)text[i] < ' ' ? ' ' : text[i];
    line[keep] = '\0';
    wr_plog(sb->ctx, WR_LOG_INFO, "%s: %s%s", sb->tag, line, keep < len ? "..." : "");
    return 0;
}

/* load(chunk [, chunkname [, mode [, env]]]) that takes text only, whatever mode says, and
 * gives the chunk the script's globals unless env is given. Upvalues: the base library's
 * load and the globals table. Can raise. */
static int sandbox_load_text(lua_State *L)
{
    bool has_env = !lua_isnone(L, 4);
    lua_settop(L, 4);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_pushliteral(L, "t");
    lua_pushvalue(L, has_env ? 4 : lua_upvalueindex(2));
    lua_call(L, 4, LUA_MULTRET);
    return lua_gettop(L) - 4;
}

/* Sets lib[name] to a table of two fields of the library open makes. The library itself is
 * dropped, never registered: nothing else of it can be reached. */
static void sandbox_pick(lua_State *L, int lib, const char *name, lua_CFunction open,
                         const char *const fields[2])
{
    lua_pushcfunction(L, open);
    lua_call(L, 0, 1);
    lua_createtable(L, 0, 2);
    for (int i = 0; i < 2; i++) {
        lua_getfield(L, -2, fields[i]);
        lua_setfield(L, -2, fields[i]);
    }
    lua_setfield(L, lib, name);
    lua_pop(L, 1);
}

/* Fills the new state; run under lua_pcall with the sandbox as its argument. Leaves the
 * message handler and the globals table (SANDBOX_HANDLER, SANDBOX_ENV) as its results. */
static int sandbox_setup(lua_State *L)
{
    struct sandbox *sb = lua_touserdata(L, 1);
    static const luaL_Reg libs[] = {
        {LUA_GNAME, luaopen_base},       {LUA_STRLIBNAME, luaopen_string},
        {LUA_TABLIBNAME, luaopen_table}, {LUA_MATHLIBNAME, luaopen_math},
        {LUA_UTF8LIBNAME, luaopen_utf8}, {NULL, NULL},
    };
    for (const luaL_Reg *lib = libs; lib->name; lib++) {
        luaL_requiref(L, lib->name, lib->func, 1);
        lua_pop(L, 1);
    }
    lua_pushglobaltable(L);
    int lib = lua_gettop(L);
    static const char *const removed[] = {"dofile", "loadfile", "collectgarbage", NULL};
    for (const char *const *name = removed; *name; name++) {
        lua_pushnil(L);
        lua_setfield(L, lib, *name);
    }
    lua_getfield(L, lib, LUA_STRLIBNAME);
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
    lua_pop(L, 1);

    sandbox_pick(L, lib, "os", luaopen_os, (const char *const[2]){"time", "clock"});
    sandbox_pick(L, lib, "json", luaopen_cjson, (const char *const[2]){"decode", "null"});

    lua_pushcfunction(L, sandbox_on_error);
    lua_newtable(L); /* the script's globals */
    int env = lua_gettop(L);
    lua_pushvalue(L, env);
    lua_setfield(L, env, LUA_GNAME);
    lua_createtable(L, 0, 2);
    lua_pushvalue(L, lib);
    lua_setfield(L, -2, "__index");
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, env);

    lua_getfield(L, lib, "load");
    lua_pushvalue(L, env);
    lua_pushcclosure(L, sandbox_load_text, 2);
    lua_setfield(L, lib, "load");
    lua_pushlightuserdata(L, sb);
    lua_pushcclosure(L, sandbox_print, 1);
    lua_setfield(L, lib, "print");
    return 2;
}

/* Sets err to the error message on top of the stack. Lua shortens a long file name in its
 * messages to "...tail"; the whole path is put back, as a user wants it. */
static void sandbox_error(const struct sandbox *sb, struct wr_error *err)
{
    const char *msg = lua_tostring(sb->L, -1);
    if (!msg)
        msg = "error";
    const char *colon = strncmp(msg, "...", 3) == 0 ? strchr(msg + 3, ':') : NULL;
    size_t plen = strlen(sb->path), tail = colon ? (size_t)(colon - msg - 3) : 0;
    if (colon && tail <= plen && memcmp(msg + 3, sb->path + plen - tail, tail) == 0)
        wr_error_set(err, WR_EINVAL, "%s%s", sb->path, colon);
    else
        wr_error_set(err, WR_EINVAL, "%s", msg);
}

int sandbox_open(const char *path, const struct sandbox_limits *lim,
                 const struct wr_plugin_ctx *ctx, const char *tag, struct sandbox **out,
                 struct wr_error *err)
{
    struct sandbox *sb = calloc(1, sizeof *sb);
    if (!sb || !(sb->path = strdup(path))) {
        free(sb);
        return wr_error_set(err, WR_ENOMEM, "out of memory opening a Lua state");
    }
    sb->ctx = ctx;
    sb->tag = tag;
    sb->cap = lim->max_memory;
    sb->budget = lim->max_instructions;
    sb->L = lua_newstate(sandbox_alloc, sb);
    if (!sb->L) {
        free(sb->path);
        free(sb);
        return wr_error_set(err, WR_EINVAL, "max_memory of %zu bytes cannot hold a Lua state",
                            lim->max_memory);
    }
    lua_pushcfunction(sb->L, sandbox_setup);
    lua_pushlightuserdata(sb->L, sb);
    if (lua_pcall(sb->L, 1, 2, 0) != LUA_OK) {
        sandbox_close(sb);
        return wr_error_set(err, WR_EINVAL,
                            "max_memory of %zu bytes cannot hold the Lua libraries",
                            lim->max_memory);
    }
    *out = sb;
    return WR_OK;
}

void sandbox_close(struct sandbox *sb)
{
    if (!sb)
        return;
    lua_close(sb->L);
    free(sb->path);
    free(sb);
}

lua_State *sandbox_state(const struct sandbox *sb) { return sb->L; }

int sandbox_load(struct sandbox *sb, struct wr_error *err)
{
    int status = luaL_loadfilex(sb->L, sb->path, "t");
    if (status == LUA_ERRMEM) {
        lua_pop(sb->L, 1);
        return wr_error_set(err, WR_ELIMIT, "%s: out of memory compiling (max_memory %zu bytes)",
                            sb->path, sb->cap);
    }
    if (status != LUA_OK) {
        sandbox_error(sb, err);
        lua_pop(sb->L, 1);
        return WR_EINVAL;
    }
    lua_pushvalue(sb->L, SANDBOX_ENV);
    lua_setupvalue(sb->L, -2, 1);
    return sandbox_call(sb, 0, 0, err);
}

int sandbox_call(struct sandbox *sb, int nargs, int nresults, struct wr_error *err)
{
    lua_State *L = sb->L;
    lua_sethook(L, sandbox_hook, LUA_MASKCOUNT, sb->budget);
    int status = lua_pcall(L, nargs, nresults, SANDBOX_HANDLER);
    if (status == LUA_OK)
        return WR_OK;
    int code = WR_EINVAL;
    if (status == LUA_ERRMEM)
        code = wr_error_set(err, WR_ELIMIT, "%s: out of memory (max_memory %zu bytes)", sb->path,
                            sb->cap);
    else
        sandbox_error(sb, err);
    lua_pop(L, 1);
    return code;
}
