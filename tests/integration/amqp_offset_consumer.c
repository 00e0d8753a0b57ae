/* amqp_offset_consumer: reads a log (stream) queue over AMQP 0-9-1 from an x-stream-offset,
 * with rabbitmq-c, the library amqp-tools is built on (amqp-consume cannot send
 * basic.consume arguments). It prints one line per delivery, "OFFSET ROUTING-KEY BODY", acks
 * each one (acks are credit on a stream), and exits 0 after COUNT deliveries.
 *
 *   amqp_offset_consumer PORT QUEUE OFFSET COUNT
 *
 * OFFSET is first, last, next, a number (the record's offset), or @SECONDS (an AMQP
 * timestamp: the first record at or after it). Connects to 127.0.0.1 as guest/guest on vhost
 * /, with a prefetch of 10. Exit status 1: an error, or no delivery for 10 s (printed on
 * stderr with what was received so far). */
#include <amqp.h>
#include <amqp_tcp_socket.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#define CHANNEL 1
#define IDLE_S 10

static int die(const char *what, amqp_rpc_reply_t r)
{
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
        (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD || r.reply.id == AMQP_CHANNEL_CLOSE_METHOD)) {
        /* Both close methods start with reply_code and reply_text. */
        amqp_channel_close_t *m = r.reply.decoded;
        fprintf(stderr, "%s: closed by the broker: %u %.*s\n", what, m->reply_code,
                (int)m->reply_text.len, (const char *)m->reply_text.bytes);
    } else if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION) {
        fprintf(stderr, "%s: %s\n", what, amqp_error_string2(r.library_error));
    } else {
        fprintf(stderr, "%s: failed (reply type %d)\n", what, (int)r.reply_type);
    }
    return 1;
}

/* The x-stream-offset header of a delivery, or -1. */
static long long offset_of(const amqp_basic_properties_t *p)
{
    if (!(p->_flags & AMQP_BASIC_HEADERS_FLAG))
        return -1;
    for (int i = 0; i < p->headers.num_entries; i++) {
        const amqp_table_entry_t *e = &p->headers.entries[i];
        if (e->key.len == 15 && !memcmp(e->key.bytes, "x-stream-offset", 15) &&
            e->value.kind == AMQP_FIELD_KIND_I64)
            return (long long)e->value.value.i64;
    }
    return -1;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: amqp_offset_consumer PORT QUEUE OFFSET COUNT\n");
        return 2;
    }
    const char *spec = argv[3];
    long count = atol(argv[4]);
    amqp_table_entry_t arg = {.key = amqp_cstring_bytes("x-stream-offset")};
    if (spec[0] == '@') {
        arg.value.kind = AMQP_FIELD_KIND_TIMESTAMP;
        arg.value.value.u64 = strtoull(spec + 1, NULL, 10);
    } else if (spec[0] >= '0' && spec[0] <= '9') {
        arg.value.kind = AMQP_FIELD_KIND_I64;
        arg.value.value.i64 = strtoll(spec, NULL, 10);
    } else {
        arg.value.kind = AMQP_FIELD_KIND_UTF8;
        arg.value.value.bytes = amqp_cstring_bytes(spec);
    }
    amqp_table_t args = {.num_entries = 1, .entries = &arg};

    amqp_connection_state_t conn = amqp_new_connection();
    amqp_socket_t *sock = amqp_tcp_socket_new(conn);
    if (!sock || amqp_socket_open(sock, "127.0.0.1", atoi(argv[1])) != AMQP_STATUS_OK) {
        fprintf(stderr, "cannot connect to 127.0.0.1:%s\n", argv[1]);
        return 1;
    }
    amqp_rpc_reply_t r = amqp_login(conn, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest",
                                    "guest");
    if (r.reply_type != AMQP_RESPONSE_NORMAL)
        return die("login", r);
    amqp_channel_open(conn, CHANNEL);
    if ((r = amqp_get_rpc_reply(conn)).reply_type != AMQP_RESPONSE_NORMAL)
        return die("channel.open", r);
    amqp_basic_qos(conn, CHANNEL, 0, 10, 0);
    if ((r = amqp_get_rpc_reply(conn)).reply_type != AMQP_RESPONSE_NORMAL)
        return die("basic.qos", r);
    amqp_basic_consume(conn, CHANNEL, amqp_cstring_bytes(argv[2]), amqp_empty_bytes, 0, 0, 0,
                       args);
    if ((r = amqp_get_rpc_reply(conn)).reply_type != AMQP_RESPONSE_NORMAL)
        return die("basic.consume", r);

    for (long got = 0; got < count; got++) {
        amqp_envelope_t env;
        struct timeval idle = {IDLE_S, 0};
        amqp_maybe_release_buffers(conn);
        r = amqp_consume_message(conn, &env, &idle, 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            fprintf(stderr, "after %ld of %ld deliveries: ", got, count);
            return die("waiting for a delivery", r);
        }
        printf("%lld %.*s %.*s\n", offset_of(&env.message.properties),
               (int)env.routing_key.len, (const char *)env.routing_key.bytes,
               (int)env.message.body.len, (const char *)env.message.body.bytes);
        amqp_basic_ack(conn, CHANNEL, env.delivery_tag, 0);
        amqp_destroy_envelope(&env);
    }
    fflush(stdout);
    amqp_channel_close(conn, CHANNEL, AMQP_REPLY_SUCCESS);
    amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(conn);
    return 0;
}
