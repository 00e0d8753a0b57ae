/*
 * conn.h: the AMQP 0-9-1 transport's internals, shared by its three files:
 *   amqp091.c  the plugin descriptor, its options, the listener, the memory alarm;
 *   conn.c     one connection: socket I/O, framing, the connection class (handshake, auth,
 *              tune, heartbeats, close, blocked), channel open/close bookkeeping, content
 *              assembly, hard (connection) errors, graceful shutdown;
 *   channel.c  one channel: exchange, queue, basic, confirm and tx classes, channel.flow,
 *              consumers and deliveries, soft (channel) errors' causes.
 *
 * Ownership: a listener owns its connections, a connection its channels. Everything runs on
 * the broker's loop thread.
 */
#ifndef AMQP091_CONN_H
#define AMQP091_CONN_H

#include <stdbool.h>
#include <stdint.h>

#include "warren/wr.h"

#include "codec.h"

struct amqp_conn;
struct amqp_chan;

/* ---- listener (amqp091.c) ------------------------------------------------------------ */

struct amqp_listener {
    struct wr_plugin_ctx *ctx;
    struct wr_broker *broker;
    struct wr_loop *loop;
    struct wr_tcp_listener *tcp; /* the socket, and the list of connections */
    /* Negotiation limits offered in connection.tune (from the listener's options). */
    uint16_t channel_max;     /* default 2047, as RabbitMQ */
    uint32_t frame_max;       /* default 131072 */
    uint16_t heartbeat_s;     /* default 60 */
    uint32_t max_connections; /* 0: no limit */
    struct wr_alarm_watch *alarm;
    bool stopping;
};

/* ---- connection (conn.c) ------------------------------------------------------------- */

enum amqp_conn_state {
    AMQP_CONN_HEADER,     /* waiting for the 8-byte protocol header */
    AMQP_CONN_START_OK,   /* connection.start sent */
    AMQP_CONN_TUNE_OK,    /* connection.tune sent */
    AMQP_CONN_OPEN_WAIT,  /* tune-ok received, waiting for connection.open */
    AMQP_CONN_OPEN,
    AMQP_CONN_CLOSING,    /* connection.close sent: only close / close-ok are read */
    AMQP_CONN_CLOSED,     /* the socket is being torn down */
};

struct amqp_conn {
    struct wr_tcp_conn tc;        /* first: the socket, its peer, the listener's list */
    struct amqp_listener *l;
    enum amqp_conn_state state;

    /* Negotiated in tune-ok. */
    uint16_t channel_max;
    uint32_t frame_max;
    uint16_t heartbeat_s;

    /* From start-ok and open. */
    char user[256];
    struct wr_vhost *vhost;
    bool cap_consumer_cancel_notify; /* the client announced it: send basic.cancel */
    bool cap_connection_blocked;
    bool cap_auth_failure_close;

    /* Output: channel.c appends whole frames with the codec (amqp_wr_method, ...) and then
     * calls conn_output(). */
    struct amqp_wr out;

    struct amqp_chan **chans;     /* indexed by channel id; NULL: closed. Any id 1..65535
                                   * may be used (channel_max limits how many are open, as
                                   * in RabbitMQ); conn.c grows the array on demand. */
};

/* After appending frames to c->out: writes them now or when the socket takes them. */
void conn_output(struct amqp_conn *c);
/* True while c->out holds more than the transport's high-water mark (1 MiB): consumers stop
 * taking deliveries (their ready op says no) until conn.c calls chan_kick on every channel
 * once the buffer drains below half of it. */
bool conn_out_full(const struct amqp_conn *c);
/* Sends method m on channel (a convenience over amqp_wr_method + conn_output). */
void conn_send(struct amqp_conn *c, uint16_t channel, const struct amqp_method *m);
/* A hard error: sends connection.close(code, "<CONSTANT_NAME> - <text>", class and method
 * of method_id (0: none)), releases every channel, and from then on reads only close /
 * close-ok; the socket closes after close-ok or a 5 s timeout. The text is printf-style. */
void conn_fail(struct amqp_conn *c, uint16_t code, uint32_t method_id, const char *fmt, ...)
    WR_PRINTF(4, 5);

/* For amqp091.c: takes over an accepted non-blocking socket (peer "host:port", for logs),
 * answers the protocol header and links the connection into l->conns. On failure the socket
 * is closed and the failure logged. */
void conn_accept(struct amqp_listener *l, int fd, const char *peer);
/* For amqp091.c: the broker's memory alarm was raised or cleared. As RabbitMQ does, a
 * connection of l that has published stops being read while the alarm lasts, and hears
 * connection.blocked / unblocked if it announced the capability. */
void conn_alarm_all(struct amqp_listener *l, bool raised);
/* For amqp091.c, at shutdown: every connection of l gets connection.close 320
 * CONNECTION_FORCED (those still in the handshake are just closed), output is flushed for at
 * most a second in all, then every connection is freed. */
void conn_close_all(struct amqp_listener *l);

/* ---- channel (channel.c) ------------------------------------------------------------- */

enum amqp_chan_state {
    AMQP_CHAN_OPEN,
    AMQP_CHAN_CLOSING, /* channel.close sent: frames other than close / close-ok dropped */
};

struct amqp_chan {
    struct amqp_conn *conn;
    uint16_t id;
    enum amqp_chan_state state;
    struct amqp_chan_priv *priv; /* channel.c's own state */
};

/* A new open channel (conn.c answers channel.open-ok). NULL out of memory. */
struct amqp_chan *chan_new(struct amqp_conn *c, uint16_t id);
/* Handles a method of the exchange, queue, basic (except publish), confirm and tx classes
 * and channel.flow / flow-ok. The struct is borrowed for the call. An error inside calls
 * chan_fail or conn_fail. */
void chan_method(struct amqp_chan *ch, const struct amqp_method *m);
/* A complete basic.publish: method, content header and body (the body slice's buffer is
 * referenced for the call; take a reference, e.g. through wr_msg_new, to keep it). */
void chan_publish(struct amqp_chan *ch, const struct amqp_basic_publish *p,
                  const struct amqp_content_header *h, struct wr_slice body);
/* The output buffer drained: resume deliveries to this channel's consumers. */
void chan_kick(struct amqp_chan *ch);
/* Stops the channel's work: cancels its consumers, requeues its unacked deliveries, drops
 * an open transaction and pending confirms. Called by chan_fail, by conn.c on channel.close
 * and when the connection goes. Idempotent. */
void chan_release(struct amqp_chan *ch);
/* Frees a released channel. */
void chan_free(struct amqp_chan *ch);
/* A soft error: chan_release, then channel.close(code, "<CONSTANT_NAME> - <text>", class
 * and method of method_id) and state CLOSING; conn.c frees the channel at close-ok. */
void chan_fail(struct amqp_chan *ch, uint16_t code, uint32_t method_id, const char *fmt, ...)
    WR_PRINTF(4, 5);

#endif
