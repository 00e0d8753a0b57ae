/*
 * msg.h: the `msg` a script's route(msg) receives: a read-only view of the message being
 * routed, whose fields are made only when the script reads them, and whose set_header and
 * set_routing_key collect changes for the copy the exchange routes (docs/lua.md, "msg").
 *
 * One view per Lua state, reused for every call: msgview_begin points it at a message,
 * msgview_end forgets the message and what the call cached or changed.
 *
 * Thread: the loop thread.
 */
#ifndef WARREN_LUA_MSG_H
#define WARREN_LUA_MSG_H

#include <stdbool.h>

#include <lua.h>

#include <warren/wr.h>

struct msgview;

/* A lua_CFunction: pushes a new view, taking as its argument the most bytes set_header may
 * copy in one call (the state's max_memory: header values live outside the Lua heap). Run it
 * under sandbox_call. */
int msgview_new(lua_State *L);
/* The view at stack index idx, as msgview_new pushed it. */
struct msgview *msgview_at(lua_State *L, int idx);

void msgview_begin(struct msgview *v, const struct wr_msg *msg);
/* Ends a call: forgets its message, what it cached and what it changed. idx is the view's
 * stack index. Never raises. */
void msgview_end(lua_State *L, int idx, struct msgview *v);

/* Whether the call set a header or the routing key. */
bool msgview_changed(const struct msgview *v);
/* The message with the call's changes: a new message sharing the original's body. Errors:
 * WR_ENOMEM. */
int msgview_build(const struct msgview *v, struct wr_msg **out, struct wr_error *err);

/* A copy of m with routing_key and headers replaced, its body shared (a reference, no copy).
 * Errors: WR_ENOMEM. */
int msgview_copy(const struct wr_msg *m, struct wr_str routing_key,
                 const struct wr_table *headers, struct wr_msg **out, struct wr_error *err);

/* Pushes v as Lua sees header values (docs/lua.md): strings and byte arrays as strings,
 * integers and timestamps as integers, float, double and decimal as floats, void as nil, a
 * table as a table and an array as a sequence. Raises on memory or nesting deeper than 64. */
void msgview_push_value(lua_State *L, const struct wr_value *v);

#endif
