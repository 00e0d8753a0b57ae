/*
 * amqp091.c: the `amqp091` transport plugin: its descriptor and options, its listener
 * (a wr_tcp_listener, tcp.h, which also pauses accepting when descriptors run out) with the
 * max_connections limit, and the broker's memory alarm relayed to every connection. One
 * start() makes one listener; conn.c does everything a connection does.
 */
#include "conn.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define DEFAULT_CHANNEL_MAX 2047
#define DEFAULT_FRAME_MAX (128u * 1024)
#define DEFAULT_HEARTBEAT_MS 60000
/* frame_max above this is refused: frames are buffered whole. */
#define FRAME_MAX_LIMIT (1u << 30)

static const struct wr_option amqp_options[] = {
    {"channel_max", WR_OPT_INT, false,
     "highest channel number offered in connection.tune (default 2047; 0: 65535)"},
    {"frame_max", WR_OPT_SIZE, false,
     "largest frame offered in connection.tune (default 128KiB, at least 8KiB)"},
    {"heartbeat", WR_OPT_DURATION, false,
     "heartbeat interval offered in connection.tune, whole seconds (default 60s; 0: off)"},
    {"max_connections", WR_OPT_INT, false,
     "connections accepted at once; more are closed on arrival (default 0: no limit)"},
    {NULL, 0, false, NULL},
};

/* An integer option in [min, max], or def when absent. */
static int option(const struct wr_table *opts, const char *name, int64_t def, int64_t min,
                  int64_t max, int64_t *out, struct wr_error *err)
{
    int64_t v = def;
    if (wr_table_get(opts, name) && !wr_table_get_int(opts, name, &v))
        return wr_error_set(err, WR_EINVAL, "amqp091: option %s: expected an integer", name);
    if (v < min || v > max)
        return wr_error_set(err, WR_EINVAL,
                            "amqp091: option %s = %lld is out of range (%lld to %lld)", name,
                            (long long)v, (long long)min, (long long)max);
    *out = v;
    return WR_OK;
}

static int read_options(struct amqp_listener *l, const struct wr_table *opts,
                        struct wr_error *err)
{
    int64_t channel_max = 0, frame_max = 0, heartbeat_ms = 0, max_connections = 0;
    int rc = option(opts, "channel_max", DEFAULT_CHANNEL_MAX, 0, UINT16_MAX, &channel_max,
                    err);
    if (rc == WR_OK)
        rc = option(opts, "frame_max", DEFAULT_FRAME_MAX, 0, FRAME_MAX_LIMIT, &frame_max, err);
    if (rc == WR_OK && frame_max < AMQP_FRAME_MIN_SIZE)
        rc = wr_error_set(err, WR_EINVAL,
                          "amqp091: option frame_max = %lld bytes is below AMQP's minimum frame "
                          "size, %d bytes (8KiB)",
                          (long long)frame_max, AMQP_FRAME_MIN_SIZE);
    if (rc == WR_OK)
        rc = option(opts, "heartbeat", DEFAULT_HEARTBEAT_MS, 0, UINT16_MAX * 1000LL,
                    &heartbeat_ms, err);
    if (rc == WR_OK && heartbeat_ms % 1000)
        rc = wr_error_set(err, WR_EINVAL,
                          "amqp091: option heartbeat = %lldms: AMQP counts heartbeats in whole "
                          "seconds",
                          (long long)heartbeat_ms);
    if (rc == WR_OK)
        rc = option(opts, "max_connections", 0, 0, UINT32_MAX, &max_connections, err);
    if (rc != WR_OK)
        return rc;
    l->channel_max = (uint16_t)channel_max;
    l->frame_max = (uint32_t)frame_max;
    l->heartbeat_s = (uint16_t)(heartbeat_ms / 1000);
    l->max_connections = (uint32_t)max_connections;
    return WR_OK;
}

/* max_connections is checked here, before a connection costs anything. */
static void on_accept(struct wr_tcp_listener *tl, int fd, const char *peer, void *data)
{
    struct amqp_listener *l = data;
    if (l->max_connections && wr_tcp_listener_n_conns(tl) >= l->max_connections) {
        wr_plog(l->ctx, WR_LOG_WARN,
                "refusing connection from %s: max_connections (%u) reached", peer,
                l->max_connections);
        close(fd);
        return;
    }
    conn_accept(l, fd, peer);
}

static void on_alarm(void *data, bool raised)
{
    struct amqp_listener *l = data;
    wr_plog(l->ctx, WR_LOG_WARN, "memory alarm %s on port %u", raised ? "raised" : "cleared",
            wr_tcp_listener_port(l->tcp));
    conn_alarm_all(l, raised);
}

static void listener_free(struct amqp_listener *l)
{
    wr_tcp_listener_free(l->tcp);
    if (l->alarm)
        wr_broker_alarm_unwatch(l->alarm);
    free(l);
}

static void amqp_stop(void *state)
{
    struct amqp_listener *l = state;
    l->stopping = true;
    wr_tcp_listener_stop(l->tcp);
    conn_close_all(l);
    listener_free(l);
}

static int amqp_start(struct wr_plugin_ctx *ctx, const struct wr_listener_args *args,
                      void **state, struct wr_error *err)
{
    struct amqp_listener *l = calloc(1, sizeof *l);
    if (!l)
        return wr_error_set(err, WR_ENOMEM, "amqp091: out of memory");
    l->ctx = ctx;
    l->broker = wr_plugin_ctx_broker(ctx);
    l->loop = wr_plugin_ctx_loop(ctx);
    const char *host = args->host ? args->host : "127.0.0.1";
    int rc = read_options(l, args->options, err);
    if (rc == WR_OK)
        rc = wr_tcp_listener_new(ctx, host, args->port, on_accept, l, &l->tcp, err);
    if (rc == WR_OK && !(l->alarm = wr_broker_alarm_watch(l->broker, on_alarm, l)))
        rc = wr_error_set(err, WR_ENOMEM, "amqp091: out of memory");
    if (rc != WR_OK) {
        listener_free(l);
        return rc;
    }
    char limit[32] = "no limit";
    if (l->max_connections)
        snprintf(limit, sizeof limit, "%u", l->max_connections);
    wr_plog(ctx, WR_LOG_INFO,
            "listening on %s:%u (channel_max %u, frame_max %u, heartbeat %us, "
            "max_connections %s)",
            host, wr_tcp_listener_port(l->tcp), l->channel_max, l->frame_max, l->heartbeat_s,
            limit);
    *state = l;
    return WR_OK;
}

static uint16_t amqp_port(void *state)
{
    return wr_tcp_listener_port(((struct amqp_listener *)state)->tcp);
}

static const struct wr_transport_ops amqp_ops = {
    .size = sizeof(struct wr_transport_ops),
    .start = amqp_start,
    .stop = amqp_stop,
    .port = amqp_port,
};

WR_PLUGIN_DEFINE(.kind = WR_PLUGIN_TRANSPORT, .name = "amqp091", .version = WR_VERSION_STRING,
                 .options = amqp_options, .ops = &amqp_ops);
