/*
 * kafka.c: the `kafka` transport plugin: its descriptor and options, and its listener (a
 * wr_tcp_listener, tcp.h). One start() makes one listener, with its group coordinator
 * (group.c) and its handlers' state (handlers.c); conn.c does everything a connection does.
 */
#include "conn.h"

#include <stdlib.h>
#include <string.h>

#include "group.h"
#include "handlers.h"

#define DEFAULT_MAX_REQUEST_SIZE (100u << 20)
#define DEFAULT_INITIAL_REBALANCE_DELAY_MS 3000 /* Kafka's group.initial.rebalance.delay.ms */

static const struct wr_option kafka_options[] = {
    {"auto_create_topics", WR_OPT_BOOL, false,
     "create a topic (a log queue) when a client asks for an unknown one; default true"},
    {"default_partitions", WR_OPT_INT, false,
     "partitions of an auto-created topic; default 1"},
    {"max_request_size", WR_OPT_SIZE, false,
     "a larger request closes its connection; default 100MiB"},
    {"advertised_host", WR_OPT_STRING, false,
     "the host clients are told to connect to (Metadata); default the listener's host"},
    {"sasl", WR_OPT_STRING, false, "plain: clients authenticate with SASL PLAIN; default none"},
    {"group_initial_rebalance_delay", WR_OPT_DURATION, false,
     "how long a consumer group's first rebalance waits for more members; default 3s"},
    {NULL, 0, false, NULL},
};

static int read_options(struct kf_listener *l, const char *host, const struct wr_table *opts,
                        struct wr_error *err)
{
    bool auto_create = true;
    int64_t partitions = 1, max_request = DEFAULT_MAX_REQUEST_SIZE;
    int64_t initial_delay = DEFAULT_INITIAL_REBALANCE_DELAY_MS;
    const char *s = NULL;
    size_t n = 0;
    wr_table_get_bool(opts, "auto_create_topics", &auto_create);
    wr_table_get_int(opts, "default_partitions", &partitions);
    wr_table_get_int(opts, "max_request_size", &max_request);
    wr_table_get_int(opts, "group_initial_rebalance_delay", &initial_delay);
    if (partitions < 1 || partitions > 100000)
        return wr_error_set(err, WR_EINVAL,
                            "kafka: option default_partitions = %lld is out of range (1 to "
                            "100000)",
                            (long long)partitions);
    if (max_request < 1024 || max_request > INT32_MAX)
        return wr_error_set(err, WR_EINVAL,
                            "kafka: option max_request_size = %lld is out of range (1KiB to "
                            "2GiB)",
                            (long long)max_request);
    if (initial_delay > INT32_MAX)
        return wr_error_set(err, WR_EINVAL,
                            "kafka: option group_initial_rebalance_delay = %lldms is out of range "
                            "(0 to 24d)",
                            (long long)initial_delay);
    if (wr_table_get_str(opts, "sasl", &s, &n)) {
        if (n == 5 && !strncmp(s, "plain", 5))
            l->sasl_plain = true;
        else if (!(n == 4 && !strncmp(s, "none", 4)))
            return wr_error_set(err, WR_EINVAL, "kafka: option sasl = '%.*s': expected plain "
                                "or none", (int)n, s);
    }
    if (!wr_table_get_str(opts, "advertised_host", &s, &n)) {
        s = host;
        n = strlen(host);
    }
    if (n == 0 || n >= sizeof l->host)
        return wr_error_set(err, WR_EINVAL, "kafka: advertised host '%.*s' is empty or too long",
                            (int)n, s);
    memcpy(l->host, s, n);
    l->host[n] = 0;
    l->auto_create_topics = auto_create;
    l->default_partitions = (int32_t)partitions;
    l->max_request_size = (uint32_t)max_request;
    l->group_initial_rebalance_delay_ms = (int32_t)initial_delay;
    return WR_OK;
}

static void listener_free(struct kf_listener *l)
{
    wr_tcp_listener_free(l->tcp);
    kf_handlers_free(l->handlers);
    kf_groups_free(l->groups);
    free(l);
}

static void kafka_stop(void *state)
{
    struct kf_listener *l = state;
    l->stopping = true;
    wr_tcp_listener_stop(l->tcp);
    kf_conn_close_all(l);
    listener_free(l);
}

static int kafka_start(struct wr_plugin_ctx *ctx, const struct wr_listener_args *args,
                       void **state, struct wr_error *err)
{
    struct kf_listener *l = calloc(1, sizeof *l);
    if (!l)
        return wr_error_set(err, WR_ENOMEM, "kafka: out of memory");
    l->ctx = ctx;
    l->broker = wr_plugin_ctx_broker(ctx);
    l->loop = wr_plugin_ctx_loop(ctx);
    const char *host = args->host ? args->host : "127.0.0.1";
    int rc = read_options(l, host, args->options, err);
    if (rc == WR_OK)
        rc = wr_tcp_listener_new(ctx, host, args->port, kf_conn_accept, l, &l->tcp, err);
    if (rc == WR_OK && !(l->handlers = kf_handlers_new(l)))
        rc = wr_error_set(err, WR_ENOMEM, "kafka: out of memory");
    if (rc == WR_OK)
        rc = kf_groups_new(l->broker, l->loop, wr_plugin_ctx_data_dir(ctx), &l->groups, err);
    if (rc == WR_OK)
        kf_groups_set_initial_rebalance_delay(l->groups, l->group_initial_rebalance_delay_ms);
    if (rc != WR_OK) {
        listener_free(l);
        return rc;
    }
    wr_plog(ctx, WR_LOG_INFO,
            "listening on %s:%u (advertised %s, auto_create_topics %s, default_partitions %d, "
            "max_request_size %u, sasl %s)",
            host, wr_tcp_listener_port(l->tcp), l->host, l->auto_create_topics ? "true" : "false",
            l->default_partitions, l->max_request_size, l->sasl_plain ? "plain" : "none");
    *state = l;
    return WR_OK;
}

static uint16_t kafka_port(void *state)
{
    return wr_tcp_listener_port(((struct kf_listener *)state)->tcp);
}

static const struct wr_transport_ops kafka_ops = {
    .size = sizeof(struct wr_transport_ops),
    .start = kafka_start,
    .stop = kafka_stop,
    .port = kafka_port,
};

WR_PLUGIN_DEFINE(.kind = WR_PLUGIN_TRANSPORT, .name = "kafka", .version = WR_VERSION_STRING,
                 .options = kafka_options, .ops = &kafka_ops);
