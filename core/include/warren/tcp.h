/*
 * tcp.h: the TCP plumbing every transport has, so each transport keeps only its protocol.
 *
 * A listener binds host:port, accepts on the broker's loop and hands each new socket to the
 * transport, which makes a connection of it. A connection is the transport's own struct with
 * a struct wr_tcp_conn first: the socket on the loop, the peer's address, the interest mask,
 * a settle deferred to the end of the loop iteration, and membership in its listener's list.
 * The transport's ops do the protocol's reading and writing; this file never reads or writes
 * a connection's bytes.
 *
 * Thread: everything here runs on the loop's thread.
 */
#ifndef WARREN_TCP_H
#define WARREN_TCP_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "warren/error.h"
#include "warren/export.h"
#include "warren/log.h"

WR_BEGIN_DECLS

struct wr_plugin_ctx;
struct wr_tcp_listener;
struct wr_tcp_conn;

/* ---- listener ------------------------------------------------------------------------- */

/* A connection arrived: fd is non-blocking, close-on-exec and has TCP_NODELAY, and the callee
 * owns it (wr_tcp_conn_new, or close it to refuse). peer is "host:port" ("[v6]:port" for
 * IPv6), borrowed for the call. */
typedef void wr_tcp_accept_cb(struct wr_tcp_listener *tl, int fd, const char *peer,
                              void *data);

/* Binds host:port (port 0: any free port) with SO_REUSEADDR and accepts on ctx's loop, a
 * bounded batch per event so one busy listener cannot starve the loop. Out of descriptors
 * or memory, accepting pauses for a moment instead of spinning on an event that stays ready,
 * with a warning in the log. Errors name the plugin: WR_EINVAL ("kafka: cannot resolve
 * 'h': ..."), WR_EIO ("amqp091: cannot listen on 127.0.0.1:5672: Address already in use"),
 * WR_ENOMEM. */
WR_API int wr_tcp_listener_new(struct wr_plugin_ctx *ctx, const char *host, uint16_t port,
                               wr_tcp_accept_cb *cb, void *data, struct wr_tcp_listener **out,
                               struct wr_error *err);
/* The port actually bound. */
WR_API uint16_t wr_tcp_listener_port(const struct wr_tcp_listener *tl);
/* The listener's connections, newest first, linked through wr_tcp_conn.next; and how many. */
WR_API struct wr_tcp_conn *wr_tcp_listener_conns(const struct wr_tcp_listener *tl);
WR_API uint32_t wr_tcp_listener_n_conns(const struct wr_tcp_listener *tl);
/* Stops accepting and closes the listening socket (idempotent); the connections stay, for a
 * graceful stop to finish them, and the log says how many there are. */
WR_API void wr_tcp_listener_stop(struct wr_tcp_listener *tl);
/* Stops it and frees it. Every connection must have been freed. Accepts NULL. */
WR_API void wr_tcp_listener_free(struct wr_tcp_listener *tl);

/* ---- connection ----------------------------------------------------------------------- */

/* What the transport does with its connection; each gets the wr_tcp_conn it embeds. */
struct wr_tcp_conn_ops {
    /* The socket takes more output. */
    void (*write)(struct wr_tcp_conn *tc);
    /* The socket has input, or hung up, or failed: read unless the transport holds back. */
    void (*read)(struct wr_tcp_conn *tc);
    /* The safe point after every event and every deferred settle: flush, re-arm with
     * wr_tcp_conn_watch, or free a connection that is done. */
    void (*settle)(struct wr_tcp_conn *tc);
};

struct wr_tcp_conn {
    struct wr_tcp_listener *tl;
    struct wr_tcp_conn *next;   /* the listener's list, newest first */
    int fd;
    char peer[64];              /* "127.0.0.1:53211", for logs */
    /* How wr_tcp_conn_vlog names it: "connection <peer>" unless the transport writes its
     * own. */
    char label[96];
    /* True during an event. A transport sets it too while it settles the connection itself
     * (a shutdown, a stretch of its own work), so that wr_tcp_conn_defer leaves it be. */
    bool in_event;
    /* The rest is this file's. */
    struct wr_tcp_conn *prev;
    const struct wr_tcp_conn_ops *ops;
    int mask;                   /* what the loop watches for */
    bool settle_queued;
};

/* Takes over an accepted socket for tl: allocates size bytes (the transport's connection
 * struct, zeroed, its struct wr_tcp_conn first), watches fd for reading and links the
 * connection into tl's list. On failure (NULL) the socket is closed and the failure logged. */
WR_API struct wr_tcp_conn *wr_tcp_conn_new(struct wr_tcp_listener *tl, size_t size, int fd,
                                           const char *peer, const struct wr_tcp_conn_ops *ops);
/* Unlinks, stops watching, closes the socket and frees the connection. A settle still
 * deferred is dropped. Accepts NULL. */
WR_API void wr_tcp_conn_free(struct wr_tcp_conn *tc);
/* Sets what the loop watches for (a mask of enum wr_loop_events); a failure keeps the old
 * mask, to be tried again at the next settle. */
WR_API void wr_tcp_conn_watch(struct wr_tcp_conn *tc, int mask);
/* Runs ops->settle after the current dispatch, once however often it is asked, and not at
 * all during an event (the event settles at its end). WR_ENOMEM if it could not be queued. */
WR_API int wr_tcp_conn_defer(struct wr_tcp_conn *tc);
/* Logs "<label>: <text>" under the listener's plugin: the body of a transport's own
 * printf-style connection log. */
WR_API void wr_tcp_conn_vlog(const struct wr_tcp_conn *tc, enum wr_log_level level,
                             const char *fmt, va_list ap) WR_PRINTF(3, 0);

WR_END_DECLS

#endif
