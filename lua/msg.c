/*
 * msg.c: the `msg` userdata a script's route(msg) reads (see msg.h).
 *
 * Nothing is converted until the script asks: msg.routing_key is one string push, msg.headers
 * is a second userdata whose __index looks the name up in the message's own header table,
 * and only msg.body and msg.properties, which cost a copy or a table, are kept in the view's
 * user values for the rest of the call. The route path reads a header at the price of two
 * metamethod calls and one string, with no table built.
 *
 * Changes go to C memory, not to the Lua heap: set_header edits a copy of the header table,
 * set_routing_key keeps the string in a user value. They are charged against max_memory per
 * call, so a loop of set_header calls cannot grow the broker without bound.
 *
 * Both metatables carry __metatable, so a script cannot fetch them; the metamethods that
 * take their object as argument 1 are therefore only ever called with a view, while the
 * methods (msg.set_header can be called on anything) check it with luaL_checkudata.
 */
#include "msg.h"

#include <stddef.h>
#include <string.h>

#include <lauxlib.h>

#define MSGVIEW_META "warren.msg"
#define HEADERS_META "warren.msg.headers"
/* Header tables from the wire nest at most this deep (wr_read_table's limit). */
#define MSGVIEW_MAX_DEPTH 64
/* Header names and routing keys are AMQP short strings. */
#define SHORTSTR_MAX 255

/* What the view holds in the Lua heap. */
enum { UV_HEADERS = 1, UV_BODY, UV_PROPERTIES, UV_ROUTING_KEY, UV_COUNT = UV_ROUTING_KEY };

struct msgview {
    const struct wr_msg *msg;  /* the message of the call in progress */
    struct wr_table *headers;  /* its headers with this call's set_header applied, or NULL */
    struct wr_str routing_key; /* set_routing_key's (held in UV_ROUTING_KEY), or ptr NULL */
    size_t edit_bytes;         /* what set_header copied in this call */
    size_t edit_cap;
    bool cached;               /* a user value past UV_HEADERS holds something */
};

static const struct wr_table *msgview_headers(const struct msgview *v)
{
    return v->headers ? v->headers : v->msg->headers;
}

static void push_str(lua_State *L, struct wr_str s)
{
    if (s.ptr)
        lua_pushlstring(L, s.ptr, s.len);
    else
        lua_pushnil(L);
}

static void push_value(lua_State *L, const struct wr_value *v, int depth)
{
    if (depth > MSGVIEW_MAX_DEPTH)
        luaL_error(L, "a header nests deeper than %d tables", MSGVIEW_MAX_DEPTH);
    luaL_checkstack(L, 3, "header nesting");
    switch (v->type) {
    case WR_V_VOID:
        lua_pushnil(L);
        break;
    case WR_V_BOOL:
        lua_pushboolean(L, v->u.b);
        break;
    case WR_V_FLOAT:
    case WR_V_DOUBLE:
        lua_pushnumber(L, v->u.d);
        break;
    case WR_V_DECIMAL: {
        double d = v->u.dec.value;
        for (int i = 0; i < v->u.dec.scale; i++)
            d /= 10;
        lua_pushnumber(L, d);
        break;
    }
    case WR_V_STR:
    case WR_V_BYTES:
        lua_pushlstring(L, v->u.s.ptr, v->u.s.len);
        break;
    case WR_V_TABLE: {
        const struct wr_table *t = v->u.table;
        lua_createtable(L, 0, t->count < 64 ? (int)t->count : 64);
        /* Backwards, so a repeated name ends with its first value, as lookups find it. */
        for (size_t i = t->count; i-- > 0;) {
            push_value(L, &t->fields[i].value, depth + 1);
            lua_setfield(L, -2, t->fields[i].name);
        }
        break;
    }
    case WR_V_ARRAY: {
        const struct wr_array *a = v->u.array;
        lua_createtable(L, a->count < 64 ? (int)a->count : 64, 0);
        for (size_t i = 0; i < a->count; i++) {
            push_value(L, &a->items[i], depth + 1);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        break;
    }
    default: /* the integer types and TIMESTAMP, all held in u.i */
        lua_pushinteger(L, v->u.i);
        break;
    }
}

void msgview_push_value(lua_State *L, const struct wr_value *v) { push_value(L, v, 0); }

/* ---- msg.headers -------------------------------------------------------------------- */

/* msg.headers[name]. Can raise (memory). */
static int headers_index(lua_State *L)
{
    const struct msgview *v = *(struct msgview **)lua_touserdata(L, 1);
    if (lua_type(L, 2) != LUA_TSTRING)
        return 0;
    size_t len;
    const char *name = lua_tolstring(L, 2, &len);
    const struct wr_value *val =
        strlen(name) == len ? wr_table_get(msgview_headers(v), name) : NULL;
    if (!val)
        return 0;
    push_value(L, val, 0);
    return 1;
}

/* The iterator pairs(msg.headers) returns; upvalue 1 is the index of the next field. A void
 * header looks absent, and a repeated name shows once, with the value lookups find. Can
 * raise. */
static int headers_next(lua_State *L)
{
    const struct msgview *v = *(struct msgview **)luaL_checkudata(L, 1, HEADERS_META);
    const struct wr_table *t = msgview_headers(v);
    for (lua_Integer i = lua_tointeger(L, lua_upvalueindex(1)); (size_t)i < t->count; i++) {
        const struct wr_field *f = &t->fields[i];
        if (f->value.type == WR_V_VOID || wr_table_get(t, f->name) != &f->value)
            continue;
        lua_pushinteger(L, i + 1);
        lua_replace(L, lua_upvalueindex(1));
        lua_pushlstring(L, f->name, f->name_len);
        push_value(L, &f->value, 0);
        return 2;
    }
    return 0;
}

static int headers_pairs(lua_State *L)
{
    lua_pushinteger(L, 0);
    lua_pushcclosure(L, headers_next, 1);
    lua_pushvalue(L, 1);
    return 2;
}

static int headers_newindex(lua_State *L)
{
    return luaL_error(L, "msg.headers is read-only: use msg:set_header(name, value)");
}

/* ---- methods ------------------------------------------------------------------------ */

/* msg:set_header(name, value): value a string, integer, float or boolean; nil removes the
 * header. The arguments are checked before anything is copied. Can raise. */
static int msgview_set_header(lua_State *L)
{
    struct msgview *v = luaL_checkudata(L, 1, MSGVIEW_META);
    size_t nlen, vlen = 0;
    const char *name = luaL_checklstring(L, 2, &nlen);
    luaL_argcheck(L, nlen <= SHORTSTR_MAX && strlen(name) == nlen, 2,
                  "a header name is at most 255 bytes, without NUL");
    struct wr_value val = {.type = WR_V_VOID};
    switch (lua_type(L, 3)) {
    case LUA_TNONE:
    case LUA_TNIL:
        break;
    case LUA_TSTRING: {
        const char *s = lua_tolstring(L, 3, &vlen);
        val = wr_value_strn(s, vlen);
        break;
    }
    case LUA_TNUMBER:
        if (lua_isinteger(L, 3))
            val = wr_value_i64(lua_tointeger(L, 3));
        else
            val = (struct wr_value){.type = WR_V_DOUBLE, .u.d = lua_tonumber(L, 3)};
        break;
    case LUA_TBOOLEAN:
        val = wr_value_bool(lua_toboolean(L, 3));
        break;
    default:
        return luaL_typeerror(L, 3, "string, number, boolean or nil");
    }
    const struct wr_table *cur = msgview_headers(v);
    /* A removal copies the table without the name; anything else edits the copy in place. */
    size_t cost = nlen + vlen + sizeof(struct wr_field) *
                                    (val.type == WR_V_VOID || !v->headers ? cur->count + 1 : 1);
    if (cost > v->edit_cap - v->edit_bytes)
        return luaL_error(L, "set_header: this call's header changes exceed max_memory");
    v->edit_bytes += cost;
    struct wr_table *t = NULL;
    if (val.type == WR_V_VOID) {
        if (!wr_table_get(cur, name))
            return 0;
        t = wr_table_new();
        for (size_t i = 0; t && i < cur->count; i++) {
            if (strcmp(cur->fields[i].name, name) != 0 &&
                wr_table_add(t, cur->fields[i].name, &cur->fields[i].value) != WR_OK) {
                wr_table_free(t);
                t = NULL;
            }
        }
    } else {
        t = v->headers ? v->headers : wr_table_dup(cur);
        if (t && wr_table_set(t, name, &val) != WR_OK) {
            if (t != v->headers)
                wr_table_free(t);
            t = NULL;
        }
    }
    if (!t)
        return luaL_error(L, "set_header: out of memory");
    if (t != v->headers) {
        wr_table_free(v->headers);
        v->headers = t;
    }
    return 0;
}

/* msg:set_routing_key(key). Can raise. */
static int msgview_set_routing_key(lua_State *L)
{
    struct msgview *v = luaL_checkudata(L, 1, MSGVIEW_META);
    size_t len;
    const char *key = luaL_checklstring(L, 2, &len);
    luaL_argcheck(L, len <= SHORTSTR_MAX, 2, "a routing key is at most 255 bytes");
    lua_settop(L, 2);
    lua_setiuservalue(L, 1, UV_ROUTING_KEY); /* keeps key alive, and where it is */
    v->routing_key = (struct wr_str){key, len};
    v->cached = true;
    return 0;
}

/* ---- msg ---------------------------------------------------------------------------- */

static void push_body(lua_State *L, const struct wr_msg *m)
{
    size_t len;
    const uint8_t *body = wr_msg_body(m, &len);
    lua_pushlstring(L, (const char *)body, len);
}

static const struct {
    const char *name;
    size_t offset;
} prop_strings[] = {
    {"content_type", offsetof(struct wr_props, content_type)},
    {"content_encoding", offsetof(struct wr_props, content_encoding)},
    {"correlation_id", offsetof(struct wr_props, correlation_id)},
    {"reply_to", offsetof(struct wr_props, reply_to)},
    {"expiration", offsetof(struct wr_props, expiration)},
    {"message_id", offsetof(struct wr_props, message_id)},
    {"type", offsetof(struct wr_props, type)},
    {"user_id", offsetof(struct wr_props, user_id)},
    {"app_id", offsetof(struct wr_props, app_id)},
};

static void set_int_field(lua_State *L, const char *name, lua_Integer i)
{
    lua_pushinteger(L, i);
    lua_setfield(L, -2, name);
}

static void push_properties(lua_State *L, const struct wr_msg *m)
{
    const struct wr_props *p = &m->props;
    lua_createtable(L, 0, 12);
    for (size_t i = 0; i < sizeof prop_strings / sizeof prop_strings[0]; i++) {
        const struct wr_str *s =
            (const struct wr_str *)((const char *)p + prop_strings[i].offset);
        if (s->ptr) {
            lua_pushlstring(L, s->ptr, s->len);
            lua_setfield(L, -2, prop_strings[i].name);
        }
    }
    if (p->flags & WR_PROP_DELIVERY_MODE)
        set_int_field(L, "delivery_mode", p->delivery_mode);
    if (p->flags & WR_PROP_PRIORITY)
        set_int_field(L, "priority", p->priority);
    if (p->flags & WR_PROP_TIMESTAMP)
        set_int_field(L, "timestamp", p->timestamp);
}

/* Pushes the user value uv of the view at index 1, made by make on first use in a call. */
static void push_cached(lua_State *L, struct msgview *v, int uv,
                        void (*make)(lua_State *L, const struct wr_msg *m))
{
    if (lua_getiuservalue(L, 1, uv) != LUA_TNIL)
        return;
    lua_pop(L, 1);
    make(L, v->msg);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, 1, uv);
    v->cached = true;
}

/* msg[key]: the fields and the methods. Can raise (memory). */
static int msgview_index(lua_State *L)
{
    struct msgview *v = lua_touserdata(L, 1);
    if (lua_type(L, 2) != LUA_TSTRING)
        return 0;
    size_t len;
    const char *key = lua_tolstring(L, 2, &len);
#define IS(name) (len == sizeof(name) - 1 && memcmp(key, name, len) == 0)
    if (IS("routing_key"))
        push_str(L, v->routing_key.ptr ? v->routing_key : v->msg->routing_key);
    else if (IS("headers"))
        lua_getiuservalue(L, 1, UV_HEADERS);
    else if (IS("exchange"))
        push_str(L, v->msg->exchange);
    else if (IS("key"))
        push_str(L, v->msg->key);
    else if (IS("size"))
        lua_pushinteger(L, (lua_Integer)v->msg->body.len);
    else if (IS("body"))
        push_cached(L, v, UV_BODY, push_body);
    else if (IS("properties"))
        push_cached(L, v, UV_PROPERTIES, push_properties);
    else if (IS("set_header"))
        lua_pushcfunction(L, msgview_set_header);
    else if (IS("set_routing_key"))
        lua_pushcfunction(L, msgview_set_routing_key);
    else
        return 0;
#undef IS
    return 1;
}

static int msgview_newindex(lua_State *L)
{
    return luaL_error(L, "msg is read-only: use msg:set_header() or msg:set_routing_key()");
}

/* Makes the metatable called name with these metamethods, locked, and sets it on the value
 * on top of the stack. */
static void set_locked_metatable(lua_State *L, const char *name, const luaL_Reg *methods)
{
    if (luaL_newmetatable(L, name)) {
        luaL_setfuncs(L, methods, 0);
        lua_pushboolean(L, 0);
        lua_setfield(L, -2, "__metatable");
    }
    lua_setmetatable(L, -2);
}

int msgview_new(lua_State *L)
{
    lua_Integer cap = luaL_checkinteger(L, 1);
    struct msgview *v = lua_newuserdatauv(L, sizeof *v, UV_COUNT);
    *v = (struct msgview){.edit_cap = (size_t)cap};
    static const luaL_Reg msg_meta[] = {
        {"__index", msgview_index}, {"__newindex", msgview_newindex}, {NULL, NULL}};
    set_locked_metatable(L, MSGVIEW_META, msg_meta);
    struct msgview **hv = lua_newuserdatauv(L, sizeof *hv, 0);
    *hv = v;
    static const luaL_Reg headers_meta[] = {{"__index", headers_index},
                                            {"__newindex", headers_newindex},
                                            {"__pairs", headers_pairs},
                                            {NULL, NULL}};
    set_locked_metatable(L, HEADERS_META, headers_meta);
    lua_setiuservalue(L, -2, UV_HEADERS);
    return 1;
}

struct msgview *msgview_at(lua_State *L, int idx) { return lua_touserdata(L, idx); }

void msgview_begin(struct msgview *v, const struct wr_msg *msg) { v->msg = msg; }

void msgview_end(lua_State *L, int idx, struct msgview *v)
{
    if (v->cached) {
        for (int uv = UV_BODY; uv <= UV_ROUTING_KEY; uv++) {
            lua_pushnil(L);
            lua_setiuservalue(L, idx, uv);
        }
        v->cached = false;
    }
    wr_table_free(v->headers);
    v->headers = NULL;
    v->routing_key = (struct wr_str){NULL, 0};
    v->edit_bytes = 0;
    v->msg = NULL;
}

bool msgview_changed(const struct msgview *v) { return v->headers || v->routing_key.ptr; }

int msgview_copy(const struct wr_msg *m, struct wr_str routing_key,
                 const struct wr_table *headers, struct wr_msg **out, struct wr_error *err)
{
    struct wr_msg_init init = {
        .exchange = m->exchange,
        .routing_key = routing_key,
        .key = m->key,
        .headers = headers,
        .props = &m->props,
        .body = m->body,
        .timestamp_ms = m->timestamp_ms,
    };
    return wr_msg_new(&init, out, err);
}

int msgview_build(const struct msgview *v, struct wr_msg **out, struct wr_error *err)
{
    return msgview_copy(v->msg, v->routing_key.ptr ? v->routing_key : v->msg->routing_key,
                        msgview_headers(v), out, err);
}
