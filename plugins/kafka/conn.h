/*
 * conn.h: the Kafka transport's internals, shared by its files:
 *   kafka.c     the plugin descriptor, its options, the listener;
 *   conn.c      one connection: socket I/O, 4-byte framing, request headers, replies in
 *               request order (a slot per request), back-pressure, graceful stop;
 *   handlers.c  the request handlers (ApiVersions, Metadata, Produce, Fetch, ...) and the
 *               dispatcher that routes each request to them or to the group coordinator;
 *   group.c     the consumer-group coordinator (group.h).
 *
 * A request gets a reply slot (struct kf_reply) when it is read; its handler completes the
 * slot now or later (a Produce waiting for durability, a long-polling Fetch, a JoinGroup
 * waiting for the group), and responses leave in request order: a completed reply waits
 * behind earlier ones still pending. Everything runs on the broker's loop thread.
 */
#ifndef KAFKA_CONN_H
#define KAFKA_CONN_H

#include <stdbool.h>
#include <stdint.h>

#include "warren/wr.h"

#include "codec.h"

struct kf_conn;
struct kf_reply;   /* the response slot of one request; responses leave in request order */
struct kf_groups;  /* group.h */
struct kf_handlers;

/* ---- listener (kafka.c) -------------------------------------------------------------- */

struct kf_listener {
    struct wr_plugin_ctx *ctx;
    struct wr_broker *broker;
    struct wr_loop *loop;
    struct wr_tcp_listener *tcp; /* the socket, and the list of connections */
    char host[256];            /* advertised in Metadata and FindCoordinator */
    bool auto_create_topics;   /* default true */
    int32_t default_partitions;/* default 1 */
    uint32_t max_request_size; /* a bigger request closes its connection; default 100 MiB */
    bool sasl_plain;           /* `sasl: plain`: clients authenticate before anything else */
    int32_t group_initial_rebalance_delay_ms; /* default 3000 (Kafka's) */
    struct kf_groups *groups;
    struct kf_handlers *handlers;
    bool stopping;
};

/* ---- replies (conn.c) ---------------------------------------------------------------- */

/* Completes r with a response body (the conn adds the size and response header); r is
 * freed. Safe after the connection closed (then it only frees). Exactly once per reply. */
void kf_reply_send(struct kf_reply *r, const struct wr_bytes *body);
/* Completes r with no response at all (Produce with acks 0); r is freed. */
void kf_reply_none(struct kf_reply *r);
/* A body made of segments, for Fetch: memory copied now, and file ranges sent with
 * sendfile() (fd is taken over and closed by the conn, also on failure). Then
 * kf_reply_finish completes r (r is freed). */
void kf_reply_add(struct kf_reply *r, const void *p, size_t len);
void kf_reply_add_file(struct kf_reply *r, int fd, uint64_t offset, uint64_t len);
void kf_reply_finish(struct kf_reply *r);

int16_t kf_reply_version(const struct kf_reply *r);
/* The connection r belongs to, or NULL once it closed. */
struct kf_conn *kf_reply_conn(const struct kf_reply *r);

/* Optional, for a reply completed later: cb(r, data) runs when the connection goes away
 * (the peer hung up, a protocol error, or the listener stops) while r is still pending. cb
 * must stop the work it waits on (timers, watches, syncs) and complete r then and there:
 * at a graceful stop the response is still sent, otherwise it is only freed. */
typedef void kf_reply_abort_cb(struct kf_reply *r, void *data);
void kf_reply_on_abort(struct kf_reply *r, kf_reply_abort_cb *cb, void *data);

/* ---- connection (conn.c) ------------------------------------------------------------- */

struct wr_broker *kf_conn_broker(const struct kf_conn *c);
struct wr_vhost *kf_conn_vhost(const struct kf_conn *c);   /* "/", or NULL if missing */
struct wr_loop *kf_conn_loop(const struct kf_conn *c);
struct kf_listener *kf_conn_listener(const struct kf_conn *c);
/* The request header's client_id of the request being handled ("" if null), valid during
 * the handler's call. */
const char *kf_conn_client_id(const struct kf_conn *c);
/* "127.0.0.1:53211", the peer's address (Kafka's client_host is its host part). */
const char *kf_conn_peer(const struct kf_conn *c);
/* The host part of the peer's address, "/127.0.0.1" as Kafka shows client_host. */
const char *kf_conn_client_host(const struct kf_conn *c);
/* A number unique among the listener's connections, for logs. */
uint64_t kf_conn_id(const struct kf_conn *c);
/* The authenticated user (SASL PLAIN), or "" without SASL. */
const char *kf_conn_user(const struct kf_conn *c);
void kf_conn_set_user(struct kf_conn *c, const char *user);
bool kf_conn_authenticated(const struct kf_conn *c);
/* After SaslHandshake v0: the next frame is a bare SASL token (kf_sasl_raw). */
void kf_conn_expect_sasl_token(struct kf_conn *c);
/* The broker itself as a Kafka node: node id 0 at the listener's advertised host/port. */
const char *kf_conn_node_host(const struct kf_conn *c);
int32_t kf_conn_node_port(const struct kf_conn *c);
/* Logs a line naming the connection (id, peer). */
void kf_conn_log(const struct kf_conn *c, enum wr_log_level level, const char *fmt, ...)
    WR_PRINTF(3, 4);

/* For kafka.c, the listener's accept callback (data: the struct kf_listener): makes a
 * connection of an accepted socket (peer "host:port"). On failure the socket is closed and
 * the failure logged. */
void kf_conn_accept(struct wr_tcp_listener *tl, int fd, const char *peer, void *data);
/* For kafka.c, at shutdown: stops reading, completes every pending reply (their abort
 * callbacks), flushes the output of every connection for at most a second in all, then
 * frees them. */
void kf_conn_close_all(struct kf_listener *l);

/* ---- the group coordinator's entry points (group.h declares them) -------------------
 *   void kf_group_<api>(struct kf_groups *g, struct kf_conn *c, struct kf_reply *r,
 *                       int16_t version, const struct kf_<api>_request *req);
 * The request struct lives only during the call (its arena is freed after): copy what you
 * keep. */

#endif
