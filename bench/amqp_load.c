/*
 * amqp_load.c: an AMQP 0-9-1 load generator, the same program for warren and for RabbitMQ.
 *
 * Three modes on one queue reached through the default exchange:
 *   publish   publish --count messages into a queue nobody consumes;
 *   consume   drain --count messages from the queue (--prefill publishes them first, untimed);
 *   e2e       a producer connection (its own thread) and a consumer connection at once.
 * Every run stops after --count messages or --time seconds, whichever comes first.
 *
 * For bench/bridge_bench.sh, --existing works on a queue someone else owns (a log that Kafka
 * consumers read, a queue a Kafka topic forwards into): it is neither declared nor deleted,
 * and publish mode does not wait for its depth. consume --stamped reads messages another
 * process on this machine sent (kafka_load): their stamps give end-to-end latency, as
 * CLOCK_MONOTONIC is the machine's, and the rate counts from the first one's send time.
 *
 * Each body starts with the CLOCK_MONOTONIC time it was sent and its sequence number; the
 * consumer, in the same process, subtracts that time from its own clock when the last byte of
 * the message has arrived, so e2e latency needs no clock sync. Latency is the send time to
 * receipt, not the scheduled time: with --rate below what the broker sustains the two agree.
 *
 * Output: one JSON line on stdout (for scripts) and one human line on stderr.
 * Exit status: 0 complete, 1 error (connection, protocol, arguments, or deliveries that came
 * out of publish order or with the wrong size: one producer and one queue must give FIFO),
 * 2 the time limit cut the run short (the JSON line is still printed, "complete": false).
 *
 * It is built on rabbitmq-c (librabbitmq), one connection per thread as that library requires:
 * the library connects, logs in, makes the synchronous calls and decodes what the broker
 * sends. Publishes alone are encoded here and written with one system call each (see
 * struct wire_msg), so that the load generator does not take the CPU the broker needs.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_tcp_socket.h>

#define CHANNEL 1
#define STAMP_LEN 16                  /* send time (ns) and sequence number, 8 bytes each */
#define MAX_COUNT 50000000ULL         /* the latency array holds 8 bytes per message */
#define MAX_SIZE (64u * 1024 * 1024)
#define POLL_EVERY 32                 /* publishes between non-blocking reads of confirms */
#define WAIT_SLICE_US 100000          /* blocking reads wake this often to check the clock */
#define RELEASE_EVERY 64              /* deliveries between recycling rabbitmq-c's decode pool */

enum mode { MODE_PUBLISH, MODE_CONSUME, MODE_E2E };
static const char *const mode_names[] = {"publish", "consume", "e2e"};

struct options {
    const char *host, *user, *password, *vhost, *queue;
    int port;
    enum mode mode;
    size_t size;
    uint64_t count;
    double time_limit;   /* seconds */
    bool confirm;
    uint32_t window;     /* outstanding unconfirmed publishes at most */
    bool persistent;
    uint16_t prefetch;   /* 0: unlimited */
    bool auto_ack;
    uint32_t ack_every;  /* manual ack: one basic.ack(multiple) per this many deliveries */
    double rate;         /* msgs/s; 0: as fast as possible */
    bool prefill;
    bool keep;
    bool existing;       /* the queue is someone else's: no declare, delete or depth wait */
    bool stamped;        /* consume: the bodies carry another process's send stamps */
};

/* Set by whichever side fails, so the other stops at its next check instead of at --time. */
static atomic_bool failed;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void put_u64(unsigned char *p, uint64_t v)
{
    memcpy(p, &v, sizeof v); /* same process reads it back: native byte order is fine */
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    memcpy(&v, p, sizeof v);
    return v;
}

__attribute__((format(printf, 2, 3))) static void fail(const char *role, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    flockfile(stderr); /* one line, even when both threads fail at once */
    fprintf(stderr, "amqp_load: %s: ", role);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    funlockfile(stderr);
    va_end(ap);
    atomic_store(&failed, true);
}

/* Reports why a synchronous call failed: a library error, or the broker's close reason. */
static bool rpc_ok(amqp_connection_state_t conn, const char *role, const char *what)
{
    amqp_rpc_reply_t r = amqp_get_rpc_reply(conn);

    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return true;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        fail(role, "%s: %s", what, amqp_error_string2(r.library_error));
        break;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_connection_close_t *m = r.reply.decoded;
            fail(role, "%s: connection closed by broker: %u %.*s", what, m->reply_code,
                 (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        } else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_channel_close_t *m = r.reply.decoded;
            fail(role, "%s: channel closed by broker: %u %.*s", what, m->reply_code,
                 (int)m->reply_text.len, (const char *)m->reply_text.bytes);
        } else {
            fail(role, "%s: unexpected method 0x%08x", what, r.reply.id);
        }
        break;
    default:
        fail(role, "%s: no reply", what);
        break;
    }
    return false;
}

/* A close that arrives between deliveries or confirms: report it like an RPC failure. */
static void fail_on_close(const char *role, const amqp_frame_t *frame)
{
    amqp_bytes_t reason = amqp_empty_bytes;
    unsigned code = 0;

    if (frame->payload.method.id == AMQP_CONNECTION_CLOSE_METHOD) {
        amqp_connection_close_t *m = frame->payload.method.decoded;
        code = m->reply_code;
        reason = m->reply_text;
    } else {
        amqp_channel_close_t *m = frame->payload.method.decoded;
        code = m->reply_code;
        reason = m->reply_text;
    }
    fail(role, "closed by broker: %u %.*s", code, (int)reason.len, (const char *)reason.bytes);
}

static amqp_connection_state_t conn_open(const struct options *o, const char *role)
{
    amqp_connection_state_t conn = amqp_new_connection();
    amqp_socket_t *sock = conn ? amqp_tcp_socket_new(conn) : NULL;

    if (!sock) {
        fail(role, "out of memory");
        if (conn)
            amqp_destroy_connection(conn);
        return NULL;
    }
    int status = amqp_socket_open(sock, o->host, o->port);
    if (status != AMQP_STATUS_OK) {
        fail(role, "connect to %s:%d: %s", o->host, o->port, amqp_error_string2(status));
        amqp_destroy_connection(conn);
        return NULL;
    }
    /* Heartbeats off: a run is short and both sides keep the connection busy. */
    amqp_rpc_reply_t r = amqp_login(conn, o->vhost, 0, 131072, 0, AMQP_SASL_METHOD_PLAIN,
                                    o->user, o->password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        fail(role, "login refused or failed (user, password, vhost?)");
        amqp_destroy_connection(conn);
        return NULL;
    }
    amqp_channel_open(conn, CHANNEL);
    if (!rpc_ok(conn, role, "channel.open")) {
        amqp_destroy_connection(conn);
        return NULL;
    }
    return conn;
}

static void conn_close(amqp_connection_state_t conn)
{
    if (!conn)
        return;
    if (!atomic_load(&failed)) {
        amqp_channel_close(conn, CHANNEL, AMQP_REPLY_SUCCESS);
        amqp_connection_close(conn, AMQP_REPLY_SUCCESS);
    }
    amqp_destroy_connection(conn);
}

/* ---- producer ------------------------------------------------------------------------ */

struct producer {
    const struct options *o;
    amqp_connection_state_t conn;
    uint64_t deadline;
    uint64_t published;
    /* Confirms: every tag <= confirmed_upto is settled; settled[t % window] marks a tag above
     * it that a single (non-multiple) ack settled out of order. */
    uint64_t confirmed_upto;
    uint64_t nacked;
    unsigned char *settled;
    uint64_t t_start, t_end;
    uint64_t t_sent;           /* the last publish was written to the socket */
    uint64_t depth;            /* publish mode: queue depth the broker reports at the end */
    atomic_uint_fast64_t published_shared; /* read by the consumer thread in e2e mode */
    atomic_bool done;
    bool ok;
};

static void settle(struct producer *p, uint64_t tag, bool multiple, bool nack)
{
    uint32_t w = p->o->window;

    if (tag <= p->confirmed_upto || tag > p->published)
        return; /* a duplicate, or a tag we never sent: nothing to settle */
    if (multiple) {
        for (uint64_t t = p->confirmed_upto + 1; t <= tag; t++) {
            if (!p->settled[t % w])
                p->nacked += nack;
            p->settled[t % w] = 0;
        }
        p->confirmed_upto = tag;
    } else if (!p->settled[tag % w]) {
        p->settled[tag % w] = 1;
        p->nacked += nack;
    }
    while (p->confirmed_upto < p->published && p->settled[(p->confirmed_upto + 1) % w]) {
        p->settled[(p->confirmed_upto + 1) % w] = 0;
        p->confirmed_upto++;
    }
}

/* Reads one frame from the broker (waiting up to slice_us) and acts on it. Returns false on
 * a failure, which it has reported. */
static bool producer_read(struct producer *p, long slice_us)
{
    struct timeval tv = {.tv_sec = 0, .tv_usec = slice_us};
    amqp_frame_t frame;
    int status = amqp_simple_wait_frame_noblock(p->conn, &frame, &tv);

    if (status == AMQP_STATUS_TIMEOUT)
        return true;
    if (status != AMQP_STATUS_OK) {
        fail("producer", "read: %s", amqp_error_string2(status));
        return false;
    }
    if (frame.frame_type == AMQP_FRAME_METHOD) {
        switch (frame.payload.method.id) {
        case AMQP_BASIC_ACK_METHOD: {
            amqp_basic_ack_t *m = frame.payload.method.decoded;
            settle(p, m->delivery_tag, m->multiple, false);
            break;
        }
        case AMQP_BASIC_NACK_METHOD: {
            amqp_basic_nack_t *m = frame.payload.method.decoded;
            settle(p, m->delivery_tag, m->multiple, true);
            break;
        }
        case AMQP_CHANNEL_CLOSE_METHOD:
        case AMQP_CONNECTION_CLOSE_METHOD:
            fail_on_close("producer", &frame);
            return false;
        default:
            break; /* connection.blocked/unblocked: the socket stalls by itself meanwhile */
        }
    }
    amqp_maybe_release_buffers(p->conn);
    return true;
}

/* Drains whatever the broker has sent without waiting. */
static bool producer_poll(struct producer *p)
{
    uint64_t before = 0;
    do {
        before = p->confirmed_upto;
        if (!producer_read(p, 0))
            return false;
    } while (p->confirmed_upto != before || amqp_data_in_buffer(p->conn) ||
             amqp_frames_enqueued(p->conn));
    return true;
}

static void pace(const struct options *o, uint64_t t_start, uint64_t i)
{
    uint64_t due = t_start + (uint64_t)((double)i * 1e9 / o->rate);
    if (now_ns() >= due)
        return; /* behind schedule: send at once */
    struct timespec ts = {.tv_sec = (time_t)(due / 1000000000u),
                          .tv_nsec = (long)(due % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

/* The queue's depth as the broker reports it (queue.declare, passive). */
static bool queue_depth(amqp_connection_state_t conn, const struct options *o, const char *role,
                        uint64_t *depth)
{
    amqp_queue_declare_ok_t *ok = amqp_queue_declare(conn, CHANNEL, amqp_cstring_bytes(o->queue),
                                                     1, 0, 0, 0, amqp_empty_table);
    if (!rpc_ok(conn, role, "queue.declare (passive)"))
        return false;
    *depth = ok->message_count;
    amqp_maybe_release_buffers(conn);
    return true;
}

/* Waits until the queue holds n messages: the broker has taken every publish. A reply on the
 * publishing channel is not proof enough, as RabbitMQ hands messages to the queue process
 * asynchronously and answers the declare before the last ones are counted. */
static bool queue_wait_depth(amqp_connection_state_t conn, const struct options *o, uint64_t n,
                             uint64_t deadline, uint64_t *depth)
{
    const struct timespec pause = {.tv_sec = 0, .tv_nsec = 1000000};

    for (;;) {
        if (!queue_depth(conn, o, "producer", depth))
            return false;
        if (*depth >= n || now_ns() >= deadline)
            return true;
        nanosleep(&pause, NULL);
    }
}

/* A publish as it goes on the wire: the basic.publish method frame, the content header
 * frame and the body frames, built once; each send patches the stamp in the first body frame.
 * rabbitmq-c would write the three frames with three send calls; a client that writes a
 * publish at once costs a third of the system calls, which leaves the broker more of a small
 * machine's CPU. */
struct wire_msg {
    unsigned char *bytes;
    size_t len;
    size_t stamp_at;         /* offset of the body's first byte */
};

static unsigned char *put_frame_head(unsigned char *w, uint8_t type, uint32_t size)
{
    w[0] = type;
    w[1] = 0;
    w[2] = CHANNEL;
    w[3] = (unsigned char)(size >> 24);
    w[4] = (unsigned char)(size >> 16);
    w[5] = (unsigned char)(size >> 8);
    w[6] = (unsigned char)size;
    return w + 7;
}

static unsigned char *put_be(unsigned char *w, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--)
        *w++ = (unsigned char)(v >> (8 * i));
    return w;
}

static bool wire_msg_init(struct wire_msg *m, const struct options *o, uint32_t frame_max)
{
    size_t key_len = strlen(o->queue);
    size_t chunk = frame_max - 8; /* a body frame's payload: frame_max less head and end */
    size_t n_body = (o->size + chunk - 1) / chunk;
    uint32_t method_len = 2 + 2 + 2 + 1 + 1 + (uint32_t)key_len + 1;
    uint32_t header_len = 2 + 2 + 8 + 2 + 1;

    m->len = 8 + method_len + 8 + header_len + 8 * n_body + o->size;
    m->bytes = calloc(1, m->len);
    if (!m->bytes)
        return false;
    unsigned char *w = put_frame_head(m->bytes, AMQP_FRAME_METHOD, method_len);
    w = put_be(w, AMQP_BASIC_PUBLISH_METHOD, 4); /* class 60, method 40 */
    w = put_be(w, 0, 2);                         /* reserved-1 (ticket) */
    *w++ = 0;                                    /* exchange: the default one */
    *w++ = (unsigned char)key_len;               /* routing key: the queue's name */
    memcpy(w, o->queue, key_len);
    w += key_len;
    *w++ = 0;                                    /* mandatory, immediate: off */
    *w++ = AMQP_FRAME_END;
    w = put_frame_head(w, AMQP_FRAME_HEADER, header_len);
    w = put_be(w, AMQP_BASIC_CLASS, 2);
    w = put_be(w, 0, 2);                         /* weight */
    w = put_be(w, o->size, 8);
    w = put_be(w, AMQP_BASIC_DELIVERY_MODE_FLAG, 2);
    *w++ = o->persistent ? 2 : 1;
    *w++ = AMQP_FRAME_END;
    for (size_t left = o->size; left > 0;) {
        size_t n = left < chunk ? left : chunk;
        w = put_frame_head(w, AMQP_FRAME_BODY, (uint32_t)n);
        if (left == o->size)
            m->stamp_at = (size_t)(w - m->bytes);
        w += n; /* the body is zeros past the stamp */
        *w++ = AMQP_FRAME_END;
        left -= n;
    }
    return true;
}

/* Writes one publish whole. The socket may be non-blocking (rabbitmq-c's is): while it is
 * full, read what the broker sends, so neither side waits on the other with full buffers. */
static bool wire_send(struct producer *p, const struct wire_msg *m)
{
    int fd = amqp_get_sockfd(p->conn);
    size_t off = 0;
    uint64_t give_up = p->deadline + 5000000000u; /* a publish begun must end whole */

    while (off < m->len) {
        ssize_t n = send(fd, m->bytes + off, m->len - off, MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
            fail("producer", "send: %s", n == 0 ? "nothing written" : strerror(errno));
            return false;
        }
        if (atomic_load(&failed) || now_ns() >= give_up) {
            fail("producer", "send: the broker stopped reading");
            return false;
        }
        struct pollfd pfd = {.fd = fd, .events = POLLOUT | POLLIN};
        if (poll(&pfd, 1, WAIT_SLICE_US / 1000) > 0 && (pfd.revents & POLLIN) &&
            !producer_poll(p))
            return false;
    }
    return true;
}

static void producer_run(struct producer *p)
{
    const struct options *o = p->o;
    struct wire_msg m = {0};

    p->ok = false;
    int frame_max = amqp_get_frame_max(p->conn);
    if (frame_max < AMQP_FRAME_MIN_SIZE) {
        fail("producer", "frame_max %d is below AMQP's minimum %d", frame_max,
             AMQP_FRAME_MIN_SIZE);
        return;
    }
    if (!wire_msg_init(&m, o, (uint32_t)frame_max)) {
        fail("producer", "out of memory");
        return;
    }
    if (o->confirm) {
        amqp_confirm_select(p->conn, CHANNEL);
        if (!rpc_ok(p->conn, "producer", "confirm.select"))
            goto out;
    }
    if (o->rate > 0)
        prctl(PR_SET_TIMERSLACK, 1UL); /* pacing sleeps of tens of µs need a fine timer */

    p->t_start = now_ns();
    for (uint64_t i = 0; i < o->count && !atomic_load(&failed); i++) {
        if (o->rate > 0)
            pace(o, p->t_start, i);
        while (o->confirm && p->published - p->confirmed_upto >= o->window) {
            if (!producer_read(p, WAIT_SLICE_US))
                goto out;
            if (now_ns() >= p->deadline)
                goto timed_out;
        }
        uint64_t now = now_ns(); /* one clock read a message: the deadline and the stamp */
        if (now >= p->deadline)
            break;
        put_u64(m.bytes + m.stamp_at, now);
        put_u64(m.bytes + m.stamp_at + 8, i);
        if (!wire_send(p, &m))
            goto out;
        p->published++;
        atomic_store(&p->published_shared, p->published);
        if (o->confirm && p->published % POLL_EVERY == 0 && !producer_poll(p))
            goto out;
    }
    p->t_sent = now_ns();
    while (o->confirm && p->confirmed_upto < p->published && now_ns() < p->deadline) {
        if (!producer_read(p, WAIT_SLICE_US))
            goto out;
    }
    if (o->mode != MODE_E2E && !o->existing &&
        !queue_wait_depth(p->conn, o, p->published, p->deadline, &p->depth))
        goto out;
timed_out:
    p->t_end = now_ns();
    if (!p->t_sent)
        p->t_sent = p->t_end;
    p->ok = true;
out:
    free(m.bytes);
}

static void *producer_thread(void *arg)
{
    struct producer *p = arg;
    p->conn = conn_open(p->o, "producer");
    if (p->conn)
        producer_run(p);
    conn_close(p->conn);
    p->conn = NULL;
    atomic_store(&p->done, true);
    return NULL;
}

/* ---- consumer ------------------------------------------------------------------------ */

struct consumer {
    const struct options *o;
    amqp_connection_state_t conn;
    uint64_t deadline;
    uint64_t received;
    uint64_t t_start, t_last;
    uint64_t *lat_ns;          /* one per message, when latency is measured */
    uint64_t unacked_tag;      /* last delivery tag not yet acked (manual ack), 0 if none */
    uint32_t unacked;
    /* One producer and one queue: deliveries must come in publish order, whole. */
    uint64_t next_seq;
    uint64_t out_of_order, wrong_size;
    bool ok;
};

static bool consumer_ack(struct consumer *c)
{
    int status = amqp_basic_ack(c->conn, CHANNEL, c->unacked_tag, 1);
    if (status != AMQP_STATUS_OK) {
        fail("consumer", "basic.ack: %s", amqp_error_string2(status));
        return false;
    }
    c->unacked = 0;
    c->unacked_tag = 0;
    return true;
}

/* Takes deliveries until target messages arrived, the deadline passed, or (e2e) the producer
 * finished and everything it published has arrived. */
static void consumer_run(struct consumer *c, uint64_t target, struct producer *p)
{
    const struct options *o = c->o;
    unsigned char stamp[STAMP_LEN];
    uint64_t tag = 0, body_size = 0, body_got = 0;
    bool in_message = false;

    /* The clock is read once a message (and once a wait that timed out): on a virtual machine
     * a clock read can cost as much as decoding a frame. The deadline is checked with it. */
    uint64_t now = now_ns();
    c->ok = false;
    while (c->received < target) {
        if (atomic_load(&failed) || now >= c->deadline)
            break;
        if (p && atomic_load(&p->done) && c->received >= atomic_load(&p->published_shared))
            break;
        struct timeval tv = {.tv_sec = 0, .tv_usec = WAIT_SLICE_US};
        amqp_frame_t frame;
        int status = amqp_simple_wait_frame_noblock(c->conn, &frame, &tv);
        if (status == AMQP_STATUS_TIMEOUT) {
            now = now_ns();
            continue;
        }
        if (status != AMQP_STATUS_OK) {
            fail("consumer", "read: %s", amqp_error_string2(status));
            return;
        }
        bool complete = false;
        if (frame.frame_type == AMQP_FRAME_METHOD) {
            switch (frame.payload.method.id) {
            case AMQP_BASIC_DELIVER_METHOD:
                tag = ((amqp_basic_deliver_t *)frame.payload.method.decoded)->delivery_tag;
                in_message = true;
                body_got = 0;
                memset(stamp, 0, sizeof stamp);
                break;
            case AMQP_CHANNEL_CLOSE_METHOD:
            case AMQP_CONNECTION_CLOSE_METHOD:
                fail_on_close("consumer", &frame);
                return;
            default:
                break;
            }
        } else if (frame.frame_type == AMQP_FRAME_HEADER && in_message) {
            body_size = frame.payload.properties.body_size;
            complete = body_size == 0;
        } else if (frame.frame_type == AMQP_FRAME_BODY && in_message) {
            amqp_bytes_t part = frame.payload.body_fragment;
            if (body_got < STAMP_LEN) {
                size_t n = STAMP_LEN - body_got < part.len ? STAMP_LEN - body_got : part.len;
                memcpy(stamp + body_got, part.bytes, n);
            }
            body_got += part.len;
            complete = body_got >= body_size;
        }
        if (!complete)
            continue;
        in_message = false;
        now = now_ns();
        c->t_last = now;
        if (o->stamped && c->received == 0)
            c->t_start = get_u64(stamp);
        if (c->lat_ns && body_got >= STAMP_LEN)
            c->lat_ns[c->received] = c->t_last - get_u64(stamp);
        c->wrong_size += body_got != o->size;
        c->out_of_order += get_u64(stamp + 8) != c->next_seq;
        c->next_seq = get_u64(stamp + 8) + 1;
        c->received++;
        if (c->received % RELEASE_EVERY == 0)
            amqp_maybe_release_buffers(c->conn);
        if (!o->auto_ack) {
            c->unacked_tag = tag;
            if (++c->unacked >= o->ack_every && !consumer_ack(c))
                return;
        }
    }
    if (c->unacked && !consumer_ack(c))
        return;
    c->ok = true;
}

static bool consumer_start(struct consumer *c)
{
    const struct options *o = c->o;

    if (o->prefetch) {
        amqp_basic_qos(c->conn, CHANNEL, 0, o->prefetch, 0);
        if (!rpc_ok(c->conn, "consumer", "basic.qos"))
            return false;
    }
    amqp_basic_consume(c->conn, CHANNEL, amqp_cstring_bytes(o->queue), amqp_empty_bytes, 0,
                       o->auto_ack, 0, amqp_empty_table);
    return rpc_ok(c->conn, "consumer", "basic.consume");
}

/* ---- set-up, report, main ------------------------------------------------------------ */

/* A fresh, empty queue: deleting first also drops one left with other flags by an earlier
 * run (re-declaring it differently would be refused). */
static bool queue_setup(amqp_connection_state_t conn, const struct options *o)
{
    amqp_bytes_t name = amqp_cstring_bytes(o->queue);

    if (o->existing && !o->prefill)
        return true;
    if (o->mode == MODE_CONSUME && !o->prefill) {
        uint64_t depth = 0;
        return queue_depth(conn, o, "setup", &depth); /* drain what is there */
    }
    amqp_queue_delete(conn, CHANNEL, name, 0, 0);
    if (!rpc_ok(conn, "setup", "queue.delete"))
        return false;
    amqp_queue_declare(conn, CHANNEL, name, 0, o->persistent, 0, 0, amqp_empty_table);
    return rpc_ok(conn, "setup", "queue.declare");
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of a sorted array, in µs. */
static double pct_us(const uint64_t *v, uint64_t n, double pct)
{
    uint64_t rank = (uint64_t)((pct / 100.0) * (double)n + 0.999999);
    if (rank < 1)
        rank = 1;
    return (double)v[(rank > n ? n : rank) - 1] / 1000.0;
}

static double rate_of(uint64_t n, uint64_t t0, uint64_t t1)
{
    return t1 > t0 ? (double)n * 1e9 / (double)(t1 - t0) : 0.0;
}

static void report(const struct options *o, const struct producer *p, const struct consumer *c,
                   bool complete)
{
    bool has_pub = o->mode != MODE_CONSUME;
    bool has_con = o->mode != MODE_PUBLISH;
    double pub_s = has_pub ? (double)(p->t_end - p->t_start) / 1e9 : 0;
    double pub_rate = has_pub ? rate_of(p->published, p->t_start, p->t_end) : 0;
    double send_rate = has_pub ? rate_of(p->published, p->t_start, p->t_sent) : 0;
    double con_s = has_con && c->received ? (double)(c->t_last - c->t_start) / 1e9 : 0;
    double con_rate = has_con && c->received ? rate_of(c->received, c->t_start, c->t_last) : 0;
    char lat[200] = "null", lat_h[160] = "";

    if (c && c->lat_ns && c->received) {
        qsort(c->lat_ns, c->received, sizeof *c->lat_ns, cmp_u64);
        double p50 = pct_us(c->lat_ns, c->received, 50), p99 = pct_us(c->lat_ns, c->received, 99);
        double p999 = pct_us(c->lat_ns, c->received, 99.9);
        double max = (double)c->lat_ns[c->received - 1] / 1000.0;
        snprintf(lat, sizeof lat, "{\"p50\": %.1f, \"p99\": %.1f, \"p999\": %.1f, \"max\": %.1f}",
                 p50, p99, p999, max);
        snprintf(lat_h, sizeof lat_h, "; latency us p50 %.0f p99 %.0f p99.9 %.0f max %.0f", p50,
                 p99, p999, max);
    }
    printf("{\"mode\": \"%s\", \"size\": %zu, \"count\": %" PRIu64 ", \"confirm\": %s, "
           "\"persistent\": %s, \"prefetch\": %u, \"ack\": \"%s\", \"ack_every\": %u, "
           "\"rate\": %.0f, \"published\": %" PRIu64 ", \"nacked\": %" PRIu64
           ", \"publish_s\": %.3f, \"publish_rate\": %.0f, \"send_rate\": %.0f"
           ", \"queue_depth\": %" PRIu64
           ", \"consumed\": %" PRIu64 ", \"consume_s\": %.3f, \"consume_rate\": %.0f, "
           "\"out_of_order\": %" PRIu64 ", \"wrong_size\": %" PRIu64 ", "
           "\"latency_us\": %s, \"complete\": %s}\n",
           mode_names[o->mode], o->size, o->count, o->confirm ? "true" : "false",
           o->persistent ? "true" : "false", o->prefetch, o->auto_ack ? "auto" : "manual",
           o->ack_every, o->rate, has_pub ? p->published : 0, has_pub ? p->nacked : 0, pub_s,
           pub_rate, send_rate, has_pub ? p->depth : 0, has_con ? c->received : 0, con_s, con_rate,
           c->out_of_order, c->wrong_size, lat,
           complete ? "true" : "false");
    fflush(stdout);
    fprintf(stderr, "amqp_load %s %zu B%s%s: ", mode_names[o->mode], o->size,
            o->confirm ? " confirms" : "", o->persistent ? " persistent" : "");
    if (has_pub)
        fprintf(stderr, "published %" PRIu64 " in %.2f s = %.0f msgs/s; ", p->published, pub_s,
                pub_rate);
    if (has_con)
        fprintf(stderr, "consumed %" PRIu64 " in %.2f s = %.0f msgs/s", c->received, con_s,
                con_rate);
    fprintf(stderr, "%s%s\n", lat_h, complete ? "" : " (INCOMPLETE: time limit)");
}

static void usage(FILE *f)
{
    fputs("usage: amqp_load [options]\n"
          "  --mode publish|consume|e2e   what to run (e2e)\n"
          "  --count N          messages (100000)        --time S      time limit, s (30)\n"
          "  --size BYTES       body size, >= 16 (100)   --rate N      paced msgs/s (0: max)\n"
          "  --confirm          publisher confirms       --window N    unconfirmed max (1000)\n"
          "  --persistent       delivery_mode 2 and a durable queue\n"
          "  --prefetch N       basic.qos count (1000; 0: unlimited)\n"
          "  --auto-ack         no acks                  --ack-every N one ack(multiple) per N"
          " (100)\n"
          "  --prefill          consume mode: publish --count messages first (untimed)\n"
          "  --keep             leave the queue behind (it is deleted at the end otherwise)\n"
          "  --existing         the queue exists: no declare, delete or depth wait\n"
          "  --stamped          consume mode: latency from the bodies' stamps (another sender)\n"
          "  --host H (127.0.0.1) --port P (5672) --user U --password P (guest)"
          " --vhost V (/)\n"
          "  --queue NAME       (amqp_load)\n",
          f);
}

static bool parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static bool parse_args(int argc, char **argv, struct options *o)
{
    static const struct option longs[] = {
        {"mode", 1, 0, 'm'},      {"count", 1, 0, 'n'},      {"time", 1, 0, 't'},
        {"size", 1, 0, 's'},      {"rate", 1, 0, 'r'},       {"confirm", 0, 0, 'c'},
        {"window", 1, 0, 'w'},    {"persistent", 0, 0, 'P'}, {"prefetch", 1, 0, 'q'},
        {"auto-ack", 0, 0, 'a'},  {"ack-every", 1, 0, 'A'},  {"prefill", 0, 0, 'f'},
        {"keep", 0, 0, 'k'},      {"host", 1, 0, 'H'},       {"port", 1, 0, 'p'},
        {"user", 1, 0, 'u'},      {"password", 1, 0, 'x'},   {"vhost", 1, 0, 'v'},
        {"queue", 1, 0, 'Q'},     {"help", 0, 0, 'h'},       {"existing", 0, 0, 'E'},
        {"stamped", 0, 0, 'S'},   {0, 0, 0, 0},
    };
    uint64_t v = 0;
    int ch, which = 0;

    while ((ch = getopt_long(argc, argv, "", longs, &which)) != -1) {
        bool ok = true;
        switch (ch) {
        case 'm':
            if (!strcmp(optarg, "publish"))
                o->mode = MODE_PUBLISH;
            else if (!strcmp(optarg, "consume"))
                o->mode = MODE_CONSUME;
            else if (!strcmp(optarg, "e2e"))
                o->mode = MODE_E2E;
            else
                ok = false;
            break;
        case 'n': ok = parse_u64(optarg, 1, MAX_COUNT, &o->count); break;
        case 't': ok = parse_u64(optarg, 1, 3600, &v); o->time_limit = (double)v; break;
        case 's': ok = parse_u64(optarg, STAMP_LEN, MAX_SIZE, &v); o->size = v; break;
        case 'r': ok = parse_u64(optarg, 0, 10000000, &v); o->rate = (double)v; break;
        case 'c': o->confirm = true; break;
        case 'w': ok = parse_u64(optarg, 1, 1000000, &v); o->window = (uint32_t)v; break;
        case 'P': o->persistent = true; break;
        case 'q': ok = parse_u64(optarg, 0, 65535, &v); o->prefetch = (uint16_t)v; break;
        case 'a': o->auto_ack = true; break;
        case 'A': ok = parse_u64(optarg, 1, 65535, &v); o->ack_every = (uint32_t)v; break;
        case 'f': o->prefill = true; break;
        case 'k': o->keep = true; break;
        case 'E': o->existing = true; break;
        case 'S': o->stamped = true; break;
        case 'H': o->host = optarg; break;
        case 'p': ok = parse_u64(optarg, 1, 65535, &v); o->port = (int)v; break;
        case 'u': o->user = optarg; break;
        case 'x': o->password = optarg; break;
        case 'v': o->vhost = optarg; break;
        case 'Q': o->queue = optarg; break;
        case 'h': usage(stdout); exit(0);
        default: ok = false; break;
        }
        if (!ok) {
            if (ch != '?')
                fprintf(stderr, "amqp_load: bad value for --%s: %s\n", longs[which].name, optarg);
            usage(stderr);
            return false;
        }
    }
    if (strlen(o->queue) > 255) {
        fprintf(stderr, "amqp_load: --queue: a queue name has at most 255 bytes\n");
        return false;
    }
    if (o->stamped && o->mode != MODE_CONSUME) {
        fprintf(stderr, "amqp_load: --stamped is for consume mode\n");
        return false;
    }
    if (optind < argc) {
        fprintf(stderr, "amqp_load: unexpected argument %s\n", argv[optind]);
        return false;
    }
    /* With manual acks and a prefetch limit, the broker stops at prefetch unacked messages:
     * acking less often than that would stall the run. */
    if (!o->auto_ack && o->prefetch && o->ack_every > o->prefetch) {
        fprintf(stderr, "amqp_load: --ack-every %u exceeds --prefetch %u: it would stall\n",
                o->ack_every, o->prefetch);
        return false;
    }
    return true;
}

int main(int argc, char **argv)
{
    struct options o = {
        .host = "127.0.0.1", .port = 5672, .user = "guest", .password = "guest", .vhost = "/",
        .queue = "amqp_load", .mode = MODE_E2E, .size = 100, .count = 100000,
        .time_limit = 30, .window = 1000, .prefetch = 1000, .ack_every = 100,
    };
    if (!parse_args(argc, argv, &o))
        return 1;

    uint64_t limit_ns = (uint64_t)(o.time_limit * 1e9);
    struct producer p = {.o = &o};
    struct consumer c = {.o = &o};
    bool complete = false;
    int rc = 1;

    p.settled = calloc(o.window, 1);
    if (!p.settled) {
        fprintf(stderr, "amqp_load: out of memory\n");
        return 1;
    }
    c.conn = conn_open(&o, "consumer");
    if (!c.conn || !queue_setup(c.conn, &o))
        goto out;

    if (o.mode == MODE_PUBLISH || (o.mode == MODE_CONSUME && o.prefill)) {
        /* On this thread: a second connection keeps publishing apart from consuming. */
        p.deadline = now_ns() + limit_ns;
        producer_thread(&p);
        if (!p.ok)
            goto out;
        if (o.mode == MODE_CONSUME) {
            fprintf(stderr, "amqp_load: prefilled %" PRIu64 " messages (%.0f msgs/s)\n",
                    p.published, rate_of(p.published, p.t_start, p.t_end));
            if (p.published < o.count || p.depth < o.count) {
                fprintf(stderr, "amqp_load: prefill incomplete: published %" PRIu64
                        ", queue depth %" PRIu64 "\n", p.published, p.depth);
                goto out;
            }
        }
    }
    if (o.mode == MODE_PUBLISH) {
        complete = p.published == o.count;
    } else {
        if (o.mode == MODE_E2E || o.stamped) {
            c.lat_ns = malloc(o.count * sizeof *c.lat_ns);
            if (!c.lat_ns) {
                fprintf(stderr, "amqp_load: out of memory for %" PRIu64 " latencies\n", o.count);
                goto out;
            }
        }
        pthread_t tid;
        c.t_start = now_ns(); /* a full queue starts delivering as soon as consume-ok is out */
        c.deadline = c.t_start + limit_ns;
        if (!consumer_start(&c))
            goto out;
        if (o.mode == MODE_E2E) {
            p.deadline = c.deadline;
            if (pthread_create(&tid, NULL, producer_thread, &p) != 0) {
                fprintf(stderr, "amqp_load: cannot start the producer thread\n");
                goto out;
            }
        }
        consumer_run(&c, o.count, o.mode == MODE_E2E ? &p : NULL);
        if (o.mode == MODE_E2E) {
            pthread_join(tid, NULL);
            c.t_start = p.t_start; /* e2e rates both count from the first publish */
        }
        if (!c.ok || (o.mode == MODE_E2E && !p.ok))
            goto out;
        complete = c.received == o.count;
    }
    report(&o, &p, &c, complete);
    rc = complete ? 0 : 2;
    if (c.out_of_order || c.wrong_size) {
        fprintf(stderr, "amqp_load: broker error: %" PRIu64 " deliveries out of publish order, "
                "%" PRIu64 " of the wrong size (expected %zu B)\n", c.out_of_order,
                c.wrong_size, o.size);
        rc = 1;
    }
    if (!o.keep && !o.existing) {
        amqp_queue_delete(c.conn, CHANNEL, amqp_cstring_bytes(o.queue), 0, 0);
        if (!rpc_ok(c.conn, "cleanup", "queue.delete"))
            rc = 1;
    }
out:
    conn_close(c.conn);
    free(c.lat_ns);
    free(p.settled);
    return rc;
}
