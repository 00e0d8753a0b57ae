/*
 * loop.h: the event loop. One thread owns all broker state and runs this loop: file
 * descriptors (epoll), one-shot timers on a monotonic clock, signals (signalfd), deferred
 * callbacks that run before the next poll (for batched flushes and group commit), and
 * wr_loop_post(), the only call another thread may make, which wakes the loop by an eventfd.
 *
 * Every function here but wr_loop_post() must be called on the loop's thread.
 */
#ifndef WARREN_LOOP_H
#define WARREN_LOOP_H

#include <stdint.h>

#include "warren/error.h"
#include "warren/export.h"

WR_BEGIN_DECLS

struct wr_loop;

enum wr_loop_events { WR_READABLE = 1, WR_WRITABLE = 2 };

/* events is a mask of enum wr_loop_events; errors and hang-ups are reported as readable so
 * the owner finds them with its next read. */
typedef void wr_fd_cb(struct wr_loop *lp, int fd, int events, void *data);
typedef void wr_timer_cb(struct wr_loop *lp, void *data);
typedef void wr_task_cb(struct wr_loop *lp, void *data);
typedef void wr_signal_cb(struct wr_loop *lp, int signo, void *data);

/* Creates a loop. Signals are not touched until wr_loop_signal_add(). */
WR_API int wr_loop_new(struct wr_loop **out, struct wr_error *err);

/* Frees the loop. Registered fds are not closed (their owners close them); pending deferred
 * and posted tasks are dropped without being run. Accepts NULL. */
WR_API void wr_loop_free(struct wr_loop *lp);

/* Watches fd for events (a mask of enum wr_loop_events, may be 0). One registration per fd. */
WR_API int wr_loop_fd_add(struct wr_loop *lp, int fd, int events, wr_fd_cb *cb, void *data,
                          struct wr_error *err);
/* Changes the mask of a registered fd: arm WR_WRITABLE only while output is queued. */
WR_API int wr_loop_fd_mod(struct wr_loop *lp, int fd, int events, struct wr_error *err);
/* Stops watching fd. Safe inside any callback, including fd's own. */
WR_API void wr_loop_fd_del(struct wr_loop *lp, int fd);

/* Calls cb once after ms milliseconds. Returns a timer id (never 0), or 0 out of memory. */
WR_API uint64_t wr_loop_timer_add(struct wr_loop *lp, uint64_t ms, wr_timer_cb *cb, void *data);
/* Cancels a timer that has not fired; an unknown or fired id is ignored. Safe in callbacks. */
WR_API void wr_loop_timer_del(struct wr_loop *lp, uint64_t id);

/* Runs cb once, after the current dispatch and before the loop next sleeps. */
WR_API int wr_loop_defer(struct wr_loop *lp, wr_task_cb *cb, void *data);

/* Cancels every pending deferred task with this cb and data (an owner being freed). */
WR_API void wr_loop_defer_cancel(struct wr_loop *lp, wr_task_cb *cb, void *data);

/* Thread-safe: runs cb on the loop's thread soon, waking it if it sleeps. */
WR_API int wr_loop_post(struct wr_loop *lp, wr_task_cb *cb, void *data);

/* Calls cb on the loop thread whenever signo arrives (blocked in this thread and read from a
 * signalfd). Several callbacks may watch one signal; they run in registration order. */
WR_API int wr_loop_signal_add(struct wr_loop *lp, int signo, wr_signal_cb *cb, void *data,
                              struct wr_error *err);
/* Removes one registration made by wr_loop_signal_add with the same cb and data. */
WR_API void wr_loop_signal_del(struct wr_loop *lp, int signo, wr_signal_cb *cb, void *data);

/* Runs until wr_loop_stop(). Returns WR_OK, or an error if epoll itself fails. */
WR_API int wr_loop_run(struct wr_loop *lp, struct wr_error *err);

/* Runs one iteration: deferred tasks, then waits at most timeout_ms (-1: forever, 0: poll)
 * and dispatches what is ready, expired timers and posted tasks. For tests and embedders. */
WR_API int wr_loop_run_once(struct wr_loop *lp, int timeout_ms, struct wr_error *err);

/* Makes wr_loop_run() return after the current iteration. */
WR_API void wr_loop_stop(struct wr_loop *lp);

/* Milliseconds on the monotonic clock, as the loop's timers see it. */
WR_API uint64_t wr_loop_now_ms(const struct wr_loop *lp);

WR_END_DECLS

#endif
