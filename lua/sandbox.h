/*
 * sandbox.h: the Lua state one script runs in. Its allocator counts bytes and refuses to go
 * past max_memory; a count hook spends max_instructions per call; only the safe libraries
 * are there (docs/lua.md, "The sandbox"); every error comes back as "file:line: message".
 *
 * The state keeps two values at the bottom of its stack for as long as it lives: the message
 * handler of every call (SANDBOX_HANDLER) and the table the script's globals live in
 * (SANDBOX_ENV), whose __index is the library table. Its owner may keep more above them and
 * resets the stack to its own top after each call.
 *
 * Thread: the loop thread; a state is never shared.
 */
#ifndef WARREN_LUA_SANDBOX_H
#define WARREN_LUA_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>

#include <lua.h>

#include <warren/wr.h>

enum { SANDBOX_HANDLER = 1, SANDBOX_ENV = 2, SANDBOX_TOP = 2 };

struct sandbox_limits {
    int max_instructions; /* per call */
    size_t max_memory;    /* bytes the state may hold */
};

struct sandbox;

/* Opens a state with the safe libraries for the script at path (copied). ctx and tag (e.g.
 * "exchange 'x' in vhost '/'") name print's log lines; both are borrowed and must outlive the
 * state. Errors: WR_EINVAL when max_memory cannot hold a state, WR_ENOMEM. */
int sandbox_open(const char *path, const struct sandbox_limits *lim,
                 const struct wr_plugin_ctx *ctx, const char *tag, struct sandbox **out,
                 struct wr_error *err);
/* Closes the state, freeing everything it holds. Accepts NULL. */
void sandbox_close(struct sandbox *sb);

lua_State *sandbox_state(const struct sandbox *sb);

/* Compiles the script file (text only: bytecode is refused) with the script's globals as its
 * _ENV and runs it. Errors as sandbox_call's; a file that does not compile or cannot be read
 * is WR_EINVAL with "file:line: message" or "cannot open file: reason". */
int sandbox_load(struct sandbox *sb, struct wr_error *err);

/* Calls the function below nargs arguments on the stack, within the budget, leaving nresults
 * results. On failure the function and its arguments are gone and err holds
 * "file:line: message": WR_EINVAL for an error (a spent budget included), WR_ELIMIT when the
 * memory cap was reached. */
int sandbox_call(struct sandbox *sb, int nargs, int nresults, struct wr_error *err);

#endif
