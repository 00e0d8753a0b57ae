/*
 * transport.h: what a transport (wire protocol) plugin implements. A transport owns its
 * listening sockets, its connections and its codec, and drives the broker only through the
 * public API (broker.h). start runs once per configured listener; tcp.h has the socket
 * plumbing (listening, accepting, a connection on the loop) that transports share.
 */
#ifndef WARREN_TRANSPORT_H
#define WARREN_TRANSPORT_H

#include <stdint.h>

#include "warren/error.h"
#include "warren/export.h"
#include "warren/plugin.h"
#include "warren/tcp.h"
#include "warren/value.h"

WR_BEGIN_DECLS

struct wr_listener_args {
    const char *host;               /* address to bind, "127.0.0.1" by default */
    uint16_t port;                  /* 0: any free port */
    const struct wr_table *options; /* validated against the plugin's schema; never NULL */
};

struct wr_transport_ops {
    uint32_t size; /* sizeof(struct wr_transport_ops) */
    /* Binds and starts accepting on the broker's loop. */
    int (*start)(struct wr_plugin_ctx *ctx, const struct wr_listener_args *args, void **state,
                 struct wr_error *err);
    /* Graceful stop, on the loop thread: stop accepting, answer the frame in hand, close
     * every connection the protocol's way, free everything. */
    void (*stop)(void *state);
    /* Optional: the port actually bound (for port 0). */
    uint16_t (*port)(void *state);
};

WR_END_DECLS

#endif
