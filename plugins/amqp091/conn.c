/*
 * conn.c: one AMQP 0-9-1 connection: socket I/O, framing, the connection class (handshake,
 * authentication, tuning, heartbeats, close, blocked), channel open/close bookkeeping,
 * content assembly for basic.publish, connection errors and shutdown. Behaviour follows
 * RabbitMQ 3.10 (rabbit_reader, rabbit_command_assembler), texts included, so clients see
 * what they expect.
 *
 * Input: one large receive buffer per connection (a refcounted wr_buf). Every complete frame
 * in it is handled per read; a message body that fills one frame is handed to the channel as
 * a slice of that buffer, without a copy, when it is big enough to be worth it (small bodies
 * are copied so they do not pin the buffer). Once a message holds a reference, the next read
 * goes into a fresh buffer and only the partial frame's bytes move.
 *
 * Output: frames are appended to c->out and written once per batch: at the end of the read
 * handler, or from a deferred task for output made elsewhere (deliveries, confirms). Write
 * interest is armed only while output is pending.
 *
 * Ending: a connection error sends connection.close and waits for close-ok (CLOSING); a
 * connection that is done drains (CLOSED): its output is flushed, its write side shut, and
 * input is discarded until the client hangs up or a deadline passes. Closing a socket with
 * unread input would reset it and could destroy the close method before the client reads it.
 */
#include "conn.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define IN_BUF_SIZE (128u * 1024)
/* Single-frame bodies smaller than this are copied out of the receive buffer. */
#define COPY_BELOW (64u * 1024)
/* A multi-frame body buffer starts at least this big (or the body's size) and doubles. */
#define BODY_FIRST_CAP (1u << 20)
#define OUT_HIGH (1u << 20)
#define OUT_LOW (OUT_HIGH / 2)
/* RabbitMQ's handshake_timeout: the client has this long to reach connection.open-ok. */
#define HANDSHAKE_TIMEOUT_MS 10000
#define CLOSE_OK_TIMEOUT_MS 5000
/* RabbitMQ waits this long before dropping a client that failed the handshake or lost
 * framing, which also slows down repeated failed logins. */
#define SILENT_CLOSE_MS 3000
/* How long a finished connection waits for the client to hang up. */
#define DRAIN_MS 1000
#define SHUTDOWN_FLUSH_MS 1000
/* RabbitMQ's absolute maximum message size (?MAX_MSG_SIZE, 512 MiB). A body above it or
 * above the broker's max_message_size is counted and dropped as it arrives (never buffered),
 * then refused with 406, as RabbitMQ's channel does. */
#define MAX_BODY_SIZE (512ull << 20)
/* Heartbeat ticks come every half interval; this many quiet ticks in a row (two intervals)
 * mean the client is gone. */
#define QUIET_TICKS_MAX 4
/* The spec's frame-min-size, which RabbitMQ 3.10 applies before tune-ok and as the lowest
 * frame_max a client may pick (the codegen JSON's 8192 is RabbitMQ 4.1's). */
#define FRAME_MIN_SIZE 4096
#define BASIC_CLASS 60
#define REPLY_TEXT_MAX 255

enum content_stage { CONTENT_NONE, CONTENT_HEADER, CONTENT_BODY };

/* A basic.publish being assembled on one channel: method, then header, then body frames. */
struct content {
    enum content_stage stage;
    bool too_large;                  /* body_size above MAX_BODY_SIZE: counted, not kept */
    bool have_header;                /* header decoded: header.headers is owned */
    struct amqp_basic_publish publish; /* strings inside method_buf */
    struct amqp_content_header header; /* property strings inside header_buf */
    struct wr_buf *method_buf;
    struct wr_buf *header_buf;
    uint64_t got;                    /* body bytes received */
    struct wr_buf *body;             /* a body of several frames, assembled */
};

struct conn {
    struct amqp_conn c; /* first: conn.h's view and, through it, the wr_tcp_conn; the
                         * pointers convert all ways */
    struct wr_loop *lp;

    struct wr_buf *in;  /* in->data[pos..in->len) is not parsed yet */
    size_t pos;
    size_t need;        /* bytes the frame at pos needs in all, when known */
    size_t out_off;     /* c.out.p[0..out_off) is written */

    uint32_t n_slots;   /* entries in c.chans and contents */
    uint32_t n_chans;   /* channels in c.chans: the negotiated channel_max limits them */
    struct content **contents;

    uint64_t handshake_timer, tick_timer, close_timer;
    uint8_t quiet_ticks;
    bool sent, received; /* since the last heartbeat tick */

    bool out_full;       /* above OUT_HIGH; channels are kicked below OUT_LOW */
    bool dead;           /* to be freed at the next safe point */
    bool discard_input;  /* framing is lost or the connection is ending */
    bool shut_when_flushed, shut;

    bool published;      /* it has published: the memory alarm blocks it */
    bool blocked;        /* not reading while the memory alarm lasts */
    bool blocked_sent;
};

static void process(struct conn *k);
static void settle(struct conn *k);
static void destroy(struct conn *k);

static struct conn *conn_of(struct amqp_conn *c)
{
    return (struct conn *)c;
}

static struct conn *tcp_conn_of(struct wr_tcp_conn *tc)
{
    return (struct conn *)tc;
}

static size_t pending(const struct conn *k)
{
    return k->c.out.len - k->out_off;
}

static uint16_t be16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void conn_log(const struct conn *k, enum wr_log_level level, const char *fmt, ...)
    WR_PRINTF(3, 4);

static void conn_log(const struct conn *k, enum wr_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    wr_tcp_conn_vlog(&k->c.tc, level, fmt, ap);
    va_end(ap);
}

/* RabbitMQ's name for a connection's state, used in its error texts. */
static const char *state_name(const struct conn *k)
{
    switch (k->c.state) {
    case AMQP_CONN_HEADER:
    case AMQP_CONN_START_OK: return "starting";
    case AMQP_CONN_TUNE_OK: return "tuning";
    case AMQP_CONN_OPEN_WAIT: return "opening";
    case AMQP_CONN_OPEN: return k->blocked ? "blocked" : "running";
    case AMQP_CONN_CLOSING: return "closing";
    case AMQP_CONN_CLOSED: break;
    }
    return "closed";
}

static const char *method_name(uint32_t id)
{
    const char *name = id ? amqp_method_name(id) : NULL;
    return name ? name : "none";
}

/* An Erlang-style rendering of the first bytes of a payload, as RabbitMQ's frame errors
 * show them: "<<65,77,81>>". */
static void render_bytes(const uint8_t *p, size_t len, char *out, size_t size)
{
    size_t n = len < 16 ? len : 16, w = (size_t)snprintf(out, size, "<<");
    for (size_t i = 0; i < n && w < size; i++)
        w += (size_t)snprintf(out + w, size - w, i ? ",%u" : "%u", p[i]);
    if (w < size)
        snprintf(out + w, size - w, "%s>>", n < len ? ",..." : "");
}

/* "all octets = <<...>>" or "first 16 octets = <<...>>". */
static void render_octets(const uint8_t *p, size_t len, char *out, size_t size)
{
    char bytes[96];
    render_bytes(p, len, bytes, sizeof bytes);
    snprintf(out, size, "%s octets = %s", len <= 16 ? "all" : "first 16", bytes);
}

/* ---- output ---------------------------------------------------------------------------- */

static void kick_channels(struct conn *k)
{
    for (uint32_t id = 1; id < k->n_slots; id++) {
        struct amqp_chan *ch = k->c.chans[id];
        if (ch && ch->state == AMQP_CHAN_OPEN)
            chan_kick(ch);
    }
}

/* Writes what the socket takes now. A write error marks the connection dead. */
static void flush(struct conn *k)
{
    struct amqp_conn *c = &k->c;
    if (c->out.oom) {
        conn_log(k, WR_LOG_ERROR, "out of memory for output; closing");
        k->dead = true;
        return;
    }
    while (k->out_off < c->out.len) {
        ssize_t n = send(c->tc.fd, c->out.p + k->out_off, c->out.len - k->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            k->out_off += (size_t)n;
            k->sent = true;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else {
            conn_log(k, c->state == AMQP_CONN_OPEN ? WR_LOG_WARN : WR_LOG_DEBUG,
                     "write failed: %s", strerror(errno));
            k->dead = true;
            return;
        }
    }
    if (k->out_off == c->out.len) {
        k->out_off = 0;
        c->out.len = 0;
        if (c->out.cap > OUT_HIGH) {
            amqp_wr_free(&c->out);
            c->out = (struct amqp_wr){0};
        }
    } else if (k->out_off > c->out.len / 2) {
        memmove(c->out.p, c->out.p + k->out_off, c->out.len - k->out_off);
        c->out.len -= k->out_off;
        k->out_off = 0;
    }
    if (k->out_full && pending(k) < OUT_LOW) {
        k->out_full = false;
        kick_channels(k);
    }
    if (!pending(k) && k->shut_when_flushed && !k->shut) {
        shutdown(c->tc.fd, SHUT_WR);
        k->shut = true;
    }
}

static void update_mask(struct conn *k)
{
    wr_tcp_conn_watch(&k->c.tc, (k->blocked ? 0 : WR_READABLE) | (pending(k) ? WR_WRITABLE : 0));
}

/* The safe point after any event: flush, then free a dead connection or re-arm. */
static void settle(struct conn *k)
{
    if (!k->dead)
        flush(k);
    if (k->dead)
        destroy(k);
    else
        update_mask(k);
}

void conn_output(struct amqp_conn *c)
{
    struct conn *k = conn_of(c);
    if (k->dead)
        return;
    if (pending(k) > OUT_HIGH)
        k->out_full = true;
    if (wr_tcp_conn_defer(&c->tc) != WR_OK)
        flush(k); /* out of memory: write now; a dead connection goes at its next event */
}

bool conn_out_full(const struct amqp_conn *c)
{
    return pending((const struct conn *)c) > OUT_HIGH;
}

void conn_send(struct amqp_conn *c, uint16_t channel, const struct amqp_method *m)
{
    amqp_wr_method(&c->out, channel, m);
    conn_output(c);
}

static void send_id(struct conn *k, uint16_t channel, uint32_t id)
{
    struct amqp_method m;
    memset(&m, 0, sizeof m);
    m.id = id;
    conn_send(&k->c, channel, &m);
}

/* ---- channels and their content ---------------------------------------------------- */

static bool slots_reserve(struct conn *k, uint16_t id)
{
    if (id < k->n_slots)
        return true;
    uint32_t n = k->n_slots ? k->n_slots : 16;
    while (n <= id)
        n *= 2;
    if (n > UINT16_MAX + 1u)
        n = UINT16_MAX + 1u;
    struct amqp_chan **chans = realloc(k->c.chans, n * sizeof *chans);
    if (!chans)
        return false;
    k->c.chans = chans;
    struct content **contents = realloc(k->contents, n * sizeof *contents);
    if (!contents)
        return false;
    k->contents = contents;
    memset(chans + k->n_slots, 0, (n - k->n_slots) * sizeof *chans);
    memset(contents + k->n_slots, 0, (n - k->n_slots) * sizeof *contents);
    k->n_slots = n;
    return true;
}

static void content_reset(struct content *ct)
{
    if (ct->have_header)
        wr_table_free(ct->header.headers);
    wr_buf_unref(ct->method_buf);
    wr_buf_unref(ct->header_buf);
    wr_buf_unref(ct->body);
    memset(ct, 0, sizeof *ct);
}

static void release_channels(struct conn *k)
{
    for (uint32_t id = 1; id < k->n_slots; id++)
        if (k->c.chans[id])
            chan_release(k->c.chans[id]);
}

static void free_channel(struct conn *k, uint16_t id)
{
    chan_free(k->c.chans[id]);
    k->c.chans[id] = NULL;
    k->n_chans--;
    if (k->contents[id])
        content_reset(k->contents[id]);
}

/* ---- errors and ending ---------------------------------------------------------------- */

static void cancel_timer(struct conn *k, uint64_t *id)
{
    if (*id)
        wr_loop_timer_del(k->lp, *id);
    *id = 0;
}

static void on_close_timeout(struct wr_loop *lp, void *data)
{
    (void)lp;
    struct conn *k = data;
    k->close_timer = 0;
    if (k->c.state == AMQP_CONN_CLOSING)
        conn_log(k, WR_LOG_WARN, "no connection.close-ok within %d s; closing the socket",
                 CLOSE_OK_TIMEOUT_MS / 1000);
    k->dead = true;
    settle(k);
}

static void set_close_timer(struct conn *k, uint64_t ms)
{
    cancel_timer(k, &k->close_timer);
    k->close_timer = wr_loop_timer_add(k->lp, ms, on_close_timeout, k);
    if (!k->close_timer)
        k->dead = true; /* out of memory: no deadline, so do not wait */
}

/* The connection is finished: flush what is queued, then (shut_when_flushed) shut the write
 * side; discard input until the client hangs up or ms pass. */
static void drain(struct conn *k, uint64_t ms, bool shut_when_flushed)
{
    release_channels(k);
    k->c.state = AMQP_CONN_CLOSED;
    k->discard_input = true;
    k->shut_when_flushed = shut_when_flushed;
    cancel_timer(k, &k->handshake_timer);
    cancel_timer(k, &k->tick_timer);
    set_close_timer(k, ms);
}

/* Sends connection.close, or, where RabbitMQ 3.10 drops the socket instead (errors before
 * a tune-ok is accepted, a refused login aside), closes silently after a pause. text is the
 * whole reply text. fatal: the framing is lost, nothing more can be read. */
static void close_with(struct conn *k, bool fatal, uint16_t code, uint32_t method_id,
                       const char *text)
{
    struct amqp_conn *c = &k->c;
    if (c->state == AMQP_CONN_CLOSED)
        return;
    if (c->state == AMQP_CONN_CLOSING) {
        if (fatal)
            drain(k, SILENT_CLOSE_MS, true);
        return;
    }
    bool respond = c->state == AMQP_CONN_OPEN || c->state == AMQP_CONN_OPEN_WAIT ||
                   (c->state == AMQP_CONN_START_OK && code == AMQP_ACCESS_REFUSED);
    release_channels(k);
    if (!respond) {
        drain(k, SILENT_CLOSE_MS, false);
        return;
    }
    struct amqp_method m;
    memset(&m, 0, sizeof m);
    m.id = AMQP_CONNECTION_CLOSE;
    m.u.connection_close.reply_code = code;
    m.u.connection_close.reply_text = wr_str_c(text);
    m.u.connection_close.class_id = (uint16_t)(method_id >> 16);
    m.u.connection_close.method_id = (uint16_t)method_id;
    conn_send(c, 0, &m);
    if (fatal) {
        drain(k, SILENT_CLOSE_MS, true);
        return;
    }
    c->state = AMQP_CONN_CLOSING;
    cancel_timer(k, &k->handshake_timer);
    cancel_timer(k, &k->tick_timer);
    set_close_timer(k, CLOSE_OK_TIMEOUT_MS);
}

static void vfail(struct conn *k, bool fatal, uint16_t code, uint32_t method_id,
                  const char *fmt, va_list ap)
{
    if (k->c.state == AMQP_CONN_CLOSED || (k->c.state == AMQP_CONN_CLOSING && !fatal))
        return;
    const char *name = amqp_reply_name(code);
    char text[REPLY_TEXT_MAX + 1];
    int n = snprintf(text, sizeof text, "%s - ", name ? name : "ERROR");
    vsnprintf(text + n, sizeof text - (size_t)n, fmt, ap);
    conn_log(k, WR_LOG_WARN, "(vhost '%s', user '%s', state %s) operation %s caused a connection "
             "exception: %s",
             k->c.vhost ? wr_vhost_name(k->c.vhost) : "", k->c.user, state_name(k),
             method_name(method_id), text);
    close_with(k, fatal, code, method_id, text);
}

void conn_fail(struct amqp_conn *c, uint16_t code, uint32_t method_id, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(conn_of(c), false, code, method_id, fmt, ap);
    va_end(ap);
}

/* A framing error: the stream cannot be followed any further. */
static void fail_fatal(struct conn *k, const char *fmt, ...) WR_PRINTF(2, 3);

static void fail_fatal(struct conn *k, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(k, true, AMQP_FRAME_ERROR, 0, fmt, ap);
    va_end(ap);
    k->discard_input = true;
}

static void unexpected_frame(struct conn *k, const struct amqp_frame *f)
{
    char octets[128];
    render_octets(f->payload, f->size, octets, sizeof octets);
    conn_fail(&k->c, AMQP_UNEXPECTED_FRAME, 0, "type %u, %s", f->type, octets);
}

/* A method frame the codec refused: an unknown method, arguments it cannot decode
 * (RabbitMQ answers those with frame_error "cannot decode"), or a shortstr argument that is
 * not UTF-8 (RabbitMQ raises that while decoding, before it knows the method: ids 0/0). */
static void bad_method(struct conn *k, const struct amqp_frame *f, const struct amqp_method *m,
                       int rc)
{
    uint32_t id = f->size >= 4 ? be32(f->payload) : 0;
    if (rc == AMQP_COMMAND_INVALID) {
        conn_fail(&k->c, AMQP_COMMAND_INVALID, m->id, "unknown method: class-id %u, "
                  "method-id %u", m->id >> 16, m->id & 0xffff);
        return;
    }
    if (rc == AMQP_DECODE_BAD_UTF8) {
        conn_fail(&k->c, AMQP_FRAME_ERROR, 0, "Malformed UTF-8 in shortstr");
        return;
    }
    char bytes[96];
    size_t off = f->size >= 4 ? 4 : f->size;
    render_bytes(f->payload + off, f->size - off, bytes, sizeof bytes);
    conn_fail(&k->c, AMQP_FRAME_ERROR, amqp_method_name(id) ? id : 0, "cannot decode %s",
              bytes);
}

/* ---- connection class -------------------------------------------------------------- */

static bool send_start(struct conn *k)
{
    static const char *const capabilities[] = {
        "publisher_confirms", "exchange_exchange_bindings", "basic.nack",
        "consumer_cancel_notify", "connection.blocked", "consumer_priorities",
        "authentication_failure_close", "per_consumer_qos", "direct_reply_to",
    };
    static const char *const props[][2] = {
        {"product", "warren"},
        {"version", WR_VERSION_STRING},
        {"platform", "C"},
        {"copyright", "Copyright (c) the warren authors"},
        {"information", "warren, a plugin-based message broker"},
    };
    struct wr_table *caps = wr_table_new(), *server = wr_table_new();
    int rc = caps && server ? WR_OK : WR_ENOMEM;
    struct wr_value yes = wr_value_bool(true);
    for (size_t i = 0; rc == WR_OK && i < sizeof capabilities / sizeof *capabilities; i++)
        rc = wr_table_add(caps, capabilities[i], &yes);
    struct wr_value v = {.type = WR_V_TABLE, .u.table = caps};
    if (rc == WR_OK)
        rc = wr_table_add(server, "capabilities", &v);
    for (size_t i = 0; rc == WR_OK && i < sizeof props / sizeof *props; i++) {
        v = wr_value_str(props[i][1]);
        rc = wr_table_add(server, props[i][0], &v);
    }
    if (rc == WR_OK) {
        struct amqp_method m;
        memset(&m, 0, sizeof m);
        m.id = AMQP_CONNECTION_START;
        m.u.connection_start.version_major = 0;
        m.u.connection_start.version_minor = 9;
        m.u.connection_start.server_properties = server;
        m.u.connection_start.mechanisms = wr_str_c("PLAIN AMQPLAIN");
        m.u.connection_start.locales = wr_str_c("en_US");
        conn_send(&k->c, 0, &m);
    }
    wr_table_free(caps);
    wr_table_free(server);
    return rc == WR_OK;
}

static void protocol_header(struct conn *k, const uint8_t *p)
{
    static const uint8_t v091[8] = {'A', 'M', 'Q', 'P', 0, 0, 9, 1};
    /* The 0-9 header, which RabbitMQ also accepts as 0-9-1. */
    static const uint8_t v09[8] = {'A', 'M', 'Q', 'P', 1, 1, 0, 9};
    if (memcmp(p, v091, 8) && memcmp(p, v09, 8)) {
        char bytes[96];
        render_bytes(p, 8, bytes, sizeof bytes);
        conn_log(k, WR_LOG_WARN, "client did not start with the AMQP 0-9-1 protocol header: %s",
                 bytes);
        amqp_wr_bytes(&k->c.out, v091, 8);
        drain(k, DRAIN_MS, true);
        return;
    }
    if (!send_start(k)) {
        conn_log(k, WR_LOG_ERROR, "out of memory for connection.start");
        k->dead = true;
        return;
    }
    k->c.state = AMQP_CONN_START_OK;
}

static void read_capabilities(struct amqp_conn *c, const struct wr_table *client)
{
    const struct wr_value *v = wr_table_get(client, "capabilities");
    if (!v || v->type != WR_V_TABLE)
        return;
    bool on;
    c->cap_consumer_cancel_notify =
        wr_table_get_bool(v->u.table, "consumer_cancel_notify", &on) && on;
    c->cap_connection_blocked = wr_table_get_bool(v->u.table, "connection.blocked", &on) && on;
    c->cap_auth_failure_close =
        wr_table_get_bool(v->u.table, "authentication_failure_close", &on) && on;
}

/* Copies s into a C string; false when it does not fit or holds a NUL. */
static bool copy_str(const char *s, size_t len, char *out, size_t size)
{
    if (len >= size || (len && memchr(s, 0, len)))
        return false;
    if (len)
        memcpy(out, s, len);
    out[len] = '\0';
    return true;
}

/* PLAIN (RFC 4616): [authzid] NUL user NUL password. -1: malformed; 0: user or password
 * does not fit; 1: parsed. */
static int parse_plain(struct wr_str r, char *user, size_t usize, char *pass, size_t psize)
{
    const char *p = r.ptr ? r.ptr : "", *end = p + r.len;
    const char *u = memchr(p, 0, r.len);
    const char *pw = u ? memchr(u + 1, 0, (size_t)(end - u - 1)) : NULL;
    if (!pw)
        return -1;
    u++, pw++;
    if (memchr(pw, 0, (size_t)(end - pw)))
        return -1;
    return copy_str(u, (size_t)(pw - 1 - u), user, usize) &&
           copy_str(pw, (size_t)(end - pw), pass, psize);
}

/* AMQPLAIN: a field table without its length prefix, holding LOGIN and PASSWORD. */
static int parse_amqplain(struct wr_str r, char *user, size_t usize, char *pass, size_t psize)
{
    uint8_t *buf = malloc(r.len + 4);
    if (!buf)
        return -1;
    buf[0] = (uint8_t)(r.len >> 24), buf[1] = (uint8_t)(r.len >> 16);
    buf[2] = (uint8_t)(r.len >> 8), buf[3] = (uint8_t)r.len;
    if (r.len)
        memcpy(buf + 4, r.ptr, r.len);
    struct amqp_rd rd = {buf, r.len + 4, 0, false};
    struct wr_table *t = NULL;
    int ok = -1;
    const char *u, *pw;
    size_t ulen, pwlen;
    if (amqp_rd_table(&rd, &t) == 0 && rd.off == rd.len &&
        wr_table_get_str(t, "LOGIN", &u, &ulen) && wr_table_get_str(t, "PASSWORD", &pw, &pwlen))
        ok = copy_str(u, ulen, user, usize) && copy_str(pw, pwlen, pass, psize);
    wr_table_free(t);
    free(buf);
    return ok;
}

static void on_start_ok(struct conn *k, const struct amqp_connection_start_ok *s)
{
    struct amqp_conn *c = &k->c;
    struct amqp_listener *l = c->l;
    read_capabilities(c, s->client_properties);
    char user[sizeof c->user] = "", pass[1024] = "";
    const char *mechanism;
    int parsed;
    if (s->mechanism.len == 5 && !memcmp(s->mechanism.ptr, "PLAIN", 5)) {
        mechanism = "PLAIN";
        parsed = parse_plain(s->response, user, sizeof user, pass, sizeof pass);
    } else if (s->mechanism.len == 8 && !memcmp(s->mechanism.ptr, "AMQPLAIN", 8)) {
        mechanism = "AMQPLAIN";
        parsed = parse_amqplain(s->response, user, sizeof user, pass, sizeof pass);
    } else {
        conn_fail(c, AMQP_COMMAND_INVALID, AMQP_CONNECTION_START_OK,
                  "unknown authentication mechanism '%.*s'", (int)s->mechanism.len,
                  s->mechanism.ptr ? s->mechanism.ptr : "");
        return;
    }
    if (parsed < 0) {
        conn_fail(c, AMQP_SYNTAX_ERROR, AMQP_CONNECTION_START_OK, "%s response invalid",
                  mechanism);
        return;
    }
    bool ok = parsed > 0 && wr_broker_authenticate(l->broker, user, pass);
    explicit_bzero(pass, sizeof pass);
    if (!ok) {
        conn_log(k, WR_LOG_WARN, "%s login refused: user '%s' - invalid credentials",
                 mechanism, parsed ? user : "(too long)");
        /* The reason stays in the log; the client hears it only if it asked to. */
        char text[REPLY_TEXT_MAX + 1];
        snprintf(text, sizeof text, "ACCESS_REFUSED - Login was refused using authentication "
                 "mechanism %s. For details see the broker logfile.", mechanism);
        if (c->cap_auth_failure_close)
            close_with(k, false, AMQP_ACCESS_REFUSED, 0, text);
        else
            drain(k, SILENT_CLOSE_MS, false);
        return;
    }
    memcpy(c->user, user, sizeof c->user);
    struct amqp_method m;
    memset(&m, 0, sizeof m);
    m.id = AMQP_CONNECTION_TUNE;
    m.u.connection_tune.channel_max = l->channel_max;
    m.u.connection_tune.frame_max = l->frame_max;
    m.u.connection_tune.heartbeat = l->heartbeat_s;
    conn_send(c, 0, &m);
    c->state = AMQP_CONN_TUNE_OK;
}

static void on_tick(struct wr_loop *lp, void *data);

static void start_ticks(struct conn *k)
{
    k->tick_timer = wr_loop_timer_add(k->lp, (uint64_t)k->c.heartbeat_s * 500, on_tick, k);
}

/* Every half heartbeat interval: a heartbeat if nothing else went out, and the connection is
 * dropped after two intervals without a byte from the client (RabbitMQ's heartbeater). */
static void on_tick(struct wr_loop *lp, void *data)
{
    (void)lp;
    struct conn *k = data;
    k->tick_timer = 0;
    if (k->received || k->blocked)
        k->quiet_ticks = 0;
    else if (++k->quiet_ticks >= QUIET_TICKS_MAX) {
        conn_log(k, WR_LOG_WARN, "missed heartbeats from client, timeout: %us; closing",
                 k->c.heartbeat_s);
        k->dead = true;
        settle(k);
        return;
    }
    if (!k->sent && !pending(k)) {
        amqp_wr_heartbeat(&k->c.out);
        conn_output(&k->c);
    }
    k->received = k->sent = false;
    start_ticks(k);
}

/* RabbitMQ's check of a tune-ok value against the minimum and the server's offer. */
static bool negotiated(struct conn *k, const char *field, uint32_t value, uint32_t min,
                       uint32_t server)
{
    const char *detail = value == 0 && !strcmp(field, "channel_max") ? " (no limit)" : "";
    if (value != 0 && value < min)
        conn_fail(&k->c, AMQP_NOT_ALLOWED, AMQP_CONNECTION_TUNE,
                  "negotiated %s = %u%s is lower than the minimum allowed value (%u)", field,
                  value, detail, min);
    else if (server != 0 && (value == 0 || value > server))
        conn_fail(&k->c, AMQP_NOT_ALLOWED, AMQP_CONNECTION_TUNE,
                  "negotiated %s = %u%s is higher than the maximum allowed value (%u)", field,
                  value, detail, server);
    else
        return true;
    return false;
}

static void on_tune_ok(struct conn *k, const struct amqp_connection_tune_ok *t)
{
    struct amqp_conn *c = &k->c;
    if (!negotiated(k, "frame_max", t->frame_max, FRAME_MIN_SIZE, c->l->frame_max) ||
        !negotiated(k, "channel_max", t->channel_max, 1, c->l->channel_max))
        return;
    c->frame_max = t->frame_max;
    c->channel_max = t->channel_max ? t->channel_max : UINT16_MAX;
    c->heartbeat_s = t->heartbeat;
    if (c->heartbeat_s)
        start_ticks(k);
    c->state = AMQP_CONN_OPEN_WAIT;
}

static void on_open(struct conn *k, const struct amqp_connection_open *o)
{
    struct amqp_conn *c = &k->c;
    struct wr_broker *b = c->l->broker;
    char name[256];
    if (!copy_str(o->virtual_host.ptr, o->virtual_host.len, name, sizeof name)) {
        conn_fail(c, AMQP_NOT_ALLOWED, AMQP_CONNECTION_OPEN, "vhost %.*s not found",
                  (int)o->virtual_host.len, o->virtual_host.ptr);
        return;
    }
    struct wr_vhost *vh = wr_vhost_find(b, name);
    if (!vh) {
        conn_fail(c, AMQP_NOT_ALLOWED, AMQP_CONNECTION_OPEN, "vhost %s not found", name);
        return;
    }
    if (!wr_broker_user_may_access(b, c->user, name)) {
        conn_fail(c, AMQP_NOT_ALLOWED, AMQP_CONNECTION_OPEN,
                  "access to vhost '%s' refused for user '%s'", name, c->user);
        return;
    }
    c->vhost = vh;
    send_id(k, 0, AMQP_CONNECTION_OPEN_OK);
    c->state = AMQP_CONN_OPEN;
    cancel_timer(k, &k->handshake_timer);
    conn_log(k, WR_LOG_INFO, "user '%s' authenticated and granted access to vhost '%s'", c->user,
             name);
}

/* The client closes: channels go, close-ok goes, and the client hangs up. */
static void on_close(struct conn *k, const struct amqp_connection_close *cl)
{
    conn_log(k, WR_LOG_DEBUG, "client closed the connection: %u %.*s", cl->reply_code,
             (int)cl->reply_text.len, cl->reply_text.ptr ? cl->reply_text.ptr : "");
    release_channels(k);
    send_id(k, 0, AMQP_CONNECTION_CLOSE_OK);
    drain(k, DRAIN_MS, true);
}

/* A method on channel 0 after connection.close was sent: only close and close-ok count. */
static void closing_method(struct conn *k, const struct amqp_frame *f)
{
    struct amqp_method m;
    if (f->type != AMQP_FRAME_METHOD || amqp_method_decode(f->payload, f->size, &m) != 0)
        return;
    if (m.id == AMQP_CONNECTION_CLOSE) {
        send_id(k, 0, AMQP_CONNECTION_CLOSE_OK);
        drain(k, DRAIN_MS, true);
    } else if (m.id == AMQP_CONNECTION_CLOSE_OK) {
        drain(k, DRAIN_MS, true);
    }
    amqp_method_free(&m);
}

static void frame0(struct conn *k, const struct amqp_frame *f)
{
    struct amqp_conn *c = &k->c;
    if (f->type != AMQP_FRAME_METHOD) {
        unexpected_frame(k, f);
        return;
    }
    struct amqp_method m;
    memset(&m, 0, sizeof m);
    int rc = amqp_method_decode(f->payload, f->size, &m);
    if (rc != 0) {
        bad_method(k, f, &m, rc);
        return;
    }
    enum amqp_conn_state st = c->state;
    if (m.id == AMQP_CONNECTION_START_OK && st == AMQP_CONN_START_OK)
        on_start_ok(k, &m.u.connection_start_ok);
    else if (m.id == AMQP_CONNECTION_TUNE_OK && st == AMQP_CONN_TUNE_OK)
        on_tune_ok(k, &m.u.connection_tune_ok);
    else if (m.id == AMQP_CONNECTION_OPEN && st == AMQP_CONN_OPEN_WAIT)
        on_open(k, &m.u.connection_open);
    else if (m.id == AMQP_CONNECTION_CLOSE && st == AMQP_CONN_OPEN)
        on_close(k, &m.u.connection_close);
    else if (m.id == AMQP_CONNECTION_UPDATE_SECRET && st == AMQP_CONN_OPEN)
        /* Users are checked by password; there is no secret to update (RabbitMQ's internal
         * backend refuses the same way). */
        conn_fail(c, AMQP_NOT_ALLOWED, m.id, "New secret was refused by one of the backends");
    else
        conn_fail(c, AMQP_CHANNEL_ERROR, m.id, "unexpected method in connection state %s",
                  state_name(k));
    amqp_method_free(&m);
}

/* ---- memory alarm ------------------------------------------------------------------ */

static void block(struct conn *k)
{
    if (k->blocked || k->c.state != AMQP_CONN_OPEN)
        return;
    k->blocked = true;
    conn_log(k, WR_LOG_INFO, "blocked: memory alarm");
    if (k->c.cap_connection_blocked && !k->blocked_sent) {
        struct amqp_method m;
        memset(&m, 0, sizeof m);
        m.id = AMQP_CONNECTION_BLOCKED;
        m.u.connection_blocked.reason = wr_str_c("low on memory");
        conn_send(&k->c, 0, &m);
        k->blocked_sent = true;
    }
}

/* After each content frame, as RabbitMQ's publish_received: a publisher stops being read
 * while the memory alarm lasts. */
static void published(struct conn *k)
{
    k->published = true;
    if (wr_broker_memory_alarm(k->c.l->broker))
        block(k);
}

static void on_alarm(struct conn *k, bool raised)
{
    struct amqp_conn *c = &k->c;
    if (c->state != AMQP_CONN_OPEN || k->dead)
        return;
    if (raised) {
        if (k->published)
            block(k);
        settle(k);
        return;
    }
    if (!k->blocked)
        return;
    k->blocked = false;
    conn_log(k, WR_LOG_INFO, "unblocked: memory alarm cleared");
    if (k->blocked_sent) {
        send_id(k, 0, AMQP_CONNECTION_UNBLOCKED);
        k->blocked_sent = false;
    }
    c->tc.in_event = true;
    if (k->in)
        process(k);
    c->tc.in_event = false;
    settle(k);
}

/* ---- channel frames and content --------------------------------------------------- */

static void complete(struct amqp_chan *ch, struct content *ct, struct wr_slice body)
{
    if (ch->state == AMQP_CHAN_OPEN) {
        uint64_t configured = wr_broker_max_message_size(ch->conn->l->broker);
        if (ct->too_large && ct->header.body_size > MAX_BODY_SIZE)
            chan_fail(ch, AMQP_PRECONDITION_FAILED, AMQP_BASIC_PUBLISH,
                      "message size %llu is larger than max size %llu",
                      (unsigned long long)ct->header.body_size,
                      (unsigned long long)MAX_BODY_SIZE);
        else if (ct->too_large)
            chan_fail(ch, AMQP_PRECONDITION_FAILED, AMQP_BASIC_PUBLISH,
                      "message size %llu is larger than configured max size %llu",
                      (unsigned long long)ct->header.body_size,
                      (unsigned long long)configured);
        else
            chan_publish(ch, &ct->publish, &ct->header, body);
    }
    content_reset(ct);
}

static void content_header(struct conn *k, struct amqp_chan *ch, struct content *ct,
                           const struct amqp_frame *f)
{
    if (f->type != AMQP_FRAME_HEADER) {
        conn_fail(&k->c, AMQP_UNEXPECTED_FRAME, AMQP_BASIC_PUBLISH,
                  "expected content header for class %u, got non content header frame "
                  "instead",
                  BASIC_CLASS);
        return;
    }
    uint16_t class_id = f->size >= 2 ? be16(f->payload) : 0;
    if (class_id != BASIC_CLASS) {
        conn_fail(&k->c, AMQP_UNEXPECTED_FRAME, AMQP_BASIC_PUBLISH,
                  "expected content header for class %u, got one for class %u instead",
                  BASIC_CLASS, class_id);
        return;
    }
    if (amqp_content_header_decode(f->payload, f->size, &ct->header) != 0) {
        char octets[128];
        render_octets(f->payload, f->size, octets, sizeof octets);
        conn_fail(&k->c, AMQP_FRAME_ERROR, AMQP_BASIC_PUBLISH,
                  "cannot decode the content header: type %u, %s", f->type, octets);
        return;
    }
    ct->have_header = true;
    ct->too_large = ct->header.body_size > MAX_BODY_SIZE ||
                    ct->header.body_size > wr_broker_max_message_size(k->c.l->broker);
    if (ct->header.body_size == 0) {
        complete(ch, ct, (struct wr_slice){NULL, 0, 0});
    } else {
        ct->stage = CONTENT_BODY;
        ct->header_buf = wr_buf_ref(k->in);
    }
    published(k);
}

/* Appends a body fragment; false out of memory. */
static bool body_append(struct content *ct, const uint8_t *p, size_t n)
{
    struct wr_buf *b = ct->body;
    size_t want = (size_t)ct->got + n;
    if (!b || want > b->cap) {
        size_t cap = b ? b->cap * 2 : BODY_FIRST_CAP;
        if (cap < want)
            cap = want;
        if (cap > ct->header.body_size)
            cap = (size_t)ct->header.body_size;
        struct wr_buf *nb = wr_buf_new(cap);
        if (!nb)
            return false;
        if (b) {
            memcpy(nb->data, b->data, b->len);
            nb->len = b->len;
            wr_buf_unref(b);
        }
        ct->body = b = nb;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return true;
}

static void content_body(struct conn *k, struct amqp_chan *ch, struct content *ct,
                         const struct amqp_frame *f)
{
    if (f->type != AMQP_FRAME_BODY) {
        conn_fail(&k->c, AMQP_UNEXPECTED_FRAME, AMQP_BASIC_PUBLISH,
                  "expected content body, got non content body frame instead");
        return;
    }
    uint64_t body_size = ct->header.body_size;
    if (f->size > body_size - ct->got) {
        conn_fail(&k->c, AMQP_FRAME_ERROR, AMQP_BASIC_PUBLISH,
                  "content body frame exceeds remaining content size");
        return;
    }
    bool keep = !ct->too_large && ch->state == AMQP_CHAN_OPEN;
    if (keep && ct->got == 0 && f->size == body_size) {
        /* The whole body in one frame: a slice of the receive buffer, or a copy of it when
         * it is too small to be worth pinning the buffer. */
        struct wr_slice body = {k->in, (size_t)(f->payload - k->in->data), f->size};
        struct wr_buf *copy = NULL;
        if (f->size < COPY_BELOW) {
            if (!(copy = wr_buf_new(f->size))) {
                conn_fail(&k->c, AMQP_INTERNAL_ERROR, AMQP_BASIC_PUBLISH, "out of memory");
                return;
            }
            memcpy(copy->data, f->payload, f->size);
            copy->len = f->size;
            body = (struct wr_slice){copy, 0, f->size};
        }
        ct->got = body_size;
        complete(ch, ct, body);
        wr_buf_unref(copy);
        published(k);
        return;
    }
    if (keep && !body_append(ct, f->payload, f->size)) {
        conn_fail(&k->c, AMQP_INTERNAL_ERROR, AMQP_BASIC_PUBLISH, "out of memory");
        return;
    }
    ct->got += f->size;
    if (ct->got == body_size)
        complete(ch, ct, (struct wr_slice){ct->body, 0, ct->body ? ct->body->len : 0});
    published(k);
}

static void open_channel(struct conn *k, uint16_t id)
{
    if (!slots_reserve(k, id) || !(k->c.chans[id] = chan_new(&k->c, id))) {
        conn_fail(&k->c, AMQP_INTERNAL_ERROR, AMQP_CHANNEL_OPEN, "out of memory");
        return;
    }
    k->n_chans++;
    send_id(k, id, AMQP_CHANNEL_OPEN_OK);
}

static void start_publish(struct conn *k, uint16_t id, const struct amqp_basic_publish *p)
{
    struct content *ct = k->contents[id];
    if (!ct && !(ct = k->contents[id] = calloc(1, sizeof *ct))) {
        conn_fail(&k->c, AMQP_INTERNAL_ERROR, AMQP_BASIC_PUBLISH, "out of memory");
        return;
    }
    ct->stage = CONTENT_HEADER;
    ct->publish = *p;
    ct->method_buf = wr_buf_ref(k->in);
}

/* A method on a channel that sent channel.close: only close and close-ok count, and a
 * publish's content is consumed and dropped. */
static void closing_channel_method(struct conn *k, struct amqp_chan *ch,
                                   const struct amqp_method *m)
{
    if (m->id == AMQP_CHANNEL_CLOSE_OK)
        free_channel(k, ch->id);
    else if (m->id == AMQP_CHANNEL_CLOSE)
        send_id(k, ch->id, AMQP_CHANNEL_CLOSE_OK);
    else if (m->id == AMQP_BASIC_PUBLISH)
        start_publish(k, ch->id, &m->u.basic_publish);
}

static void channel_method(struct conn *k, struct amqp_chan *ch, const struct amqp_method *m)
{
    uint16_t id = ch->id;
    switch (m->id) {
    case AMQP_CHANNEL_OPEN:
        conn_fail(&k->c, AMQP_CHANNEL_ERROR, m->id, "second 'channel.open' seen");
        break;
    case AMQP_CHANNEL_CLOSE:
        chan_release(ch);
        send_id(k, id, AMQP_CHANNEL_CLOSE_OK);
        free_channel(k, id);
        break;
    case AMQP_BASIC_PUBLISH:
        start_publish(k, id, &m->u.basic_publish);
        break;
    case AMQP_CHANNEL_OPEN_OK:
    case AMQP_CHANNEL_CLOSE_OK:
        conn_fail(&k->c, AMQP_COMMAND_INVALID, m->id, "unimplemented method");
        break;
    default:
        if (m->id >> 16 == AMQP_CONNECTION_START >> 16)
            conn_fail(&k->c, AMQP_COMMAND_INVALID, m->id, "unimplemented method");
        else
            chan_method(ch, m);
    }
}

static void channel_frame(struct conn *k, const struct amqp_frame *f)
{
    struct amqp_conn *c = &k->c;
    uint16_t id = f->channel;
    struct amqp_chan *ch = id < k->n_slots ? c->chans[id] : NULL;
    /* As RabbitMQ, any channel number will do; the limit is on how many are open. */
    if (!ch && k->n_chans >= c->channel_max) {
        conn_fail(c, AMQP_NOT_ALLOWED, 0,
                  "number of channels opened (%u) has reached the negotiated channel_max (%u)",
                  k->n_chans, c->channel_max);
        return;
    }
    struct content *ct = ch ? k->contents[id] : NULL;
    if (ct && ct->stage == CONTENT_HEADER) {
        content_header(k, ch, ct, f);
        return;
    }
    if (ct && ct->stage == CONTENT_BODY) {
        content_body(k, ch, ct, f);
        return;
    }
    if (f->type != AMQP_FRAME_METHOD) {
        if (f->type == AMQP_FRAME_HEARTBEAT)
            unexpected_frame(k, f);
        else
            conn_fail(c, AMQP_UNEXPECTED_FRAME, 0,
                      "expected method frame, got non method frame instead");
        return;
    }
    struct amqp_method m;
    memset(&m, 0, sizeof m);
    int rc = amqp_method_decode(f->payload, f->size, &m);
    if (rc != 0)
        bad_method(k, f, &m, rc);
    else if (!ch && m.id == AMQP_CHANNEL_OPEN)
        open_channel(k, id);
    else if (!ch)
        conn_fail(c, AMQP_CHANNEL_ERROR, m.id, "expected 'channel.open'");
    else if (ch->state == AMQP_CHAN_CLOSING)
        closing_channel_method(k, ch, &m);
    else
        channel_method(k, ch, &m);
    if (rc == 0)
        amqp_method_free(&m);
}

/* ---- input --------------------------------------------------------------------------- */

static void on_frame(struct conn *k, const struct amqp_frame *f)
{
    struct amqp_conn *c = &k->c;
    if (c->state == AMQP_CONN_CLOSING) {
        if (f->channel == 0)
            closing_method(k, f);
        return;
    }
    if (f->type == AMQP_FRAME_HEARTBEAT && f->size != 0) {
        char octets[128];
        render_octets(f->payload, f->size, octets, sizeof octets);
        conn_fail(c, AMQP_FRAME_ERROR, 0, "type %u, %s: unknown_frame", f->type, octets);
    } else if (f->channel == 0) {
        if (f->type != AMQP_FRAME_HEARTBEAT)
            frame0(k, f);
    } else if (c->state != AMQP_CONN_OPEN) {
        unexpected_frame(k, f);
    } else {
        channel_frame(k, f);
    }
}

/* The frame at p cannot be parsed: a wrong end octet or an unknown frame type. */
static void bad_frame(struct conn *k, const uint8_t *p, size_t avail)
{
    uint32_t size = be32(p + 3);
    size_t have = avail - 7 < size ? avail - 7 : size;
    char octets[128];
    render_octets(p + 7, have, octets, sizeof octets);
    if (avail > (size_t)size + 7 && p[7 + size] != AMQP_FRAME_END)
        fail_fatal(k, "type %u, %s: {invalid_frame_end_marker,%u}", p[0], octets,
                   p[7 + size]);
    else
        fail_fatal(k, "type %u, %s: unknown_frame", p[0], octets);
}

/* Handles every complete frame in the receive buffer. */
static void process(struct conn *k)
{
    struct amqp_conn *c = &k->c;
    struct wr_buf *b = k->in;
    k->need = 0;
    while (!k->dead && !k->discard_input && !k->blocked && k->pos < b->len) {
        const uint8_t *p = b->data + k->pos;
        size_t avail = b->len - k->pos;
        if (c->state == AMQP_CONN_HEADER) {
            if (avail < 8) {
                k->need = 8;
                break;
            }
            k->pos += 8;
            protocol_header(k, p);
            continue;
        }
        if (avail < 7) {
            k->need = 8;
            break;
        }
        uint32_t size = be32(p + 3);
        /* As RabbitMQ, payloads up to frame_max are let through: clients often get the
         * frame overhead wrong. */
        if (size > c->frame_max) {
            fail_fatal(k, "type %u, first 16 octets = <<>>: {frame_too_large,%u,%u}", p[0],
                       size, c->frame_max - 8);
            break;
        }
        struct amqp_frame f;
        ssize_t n = amqp_frame_parse(p, avail, c->frame_max + 8, &f);
        if (n == 0) {
            k->need = (size_t)size + 8;
            break;
        }
        if (n < 0) {
            bad_frame(k, p, avail);
            break;
        }
        k->pos += (size_t)n;
        on_frame(k, &f);
    }
    if (k->pos == b->len) {
        /* Nothing unparsed: reuse the buffer unless messages hold it or it grew for one
         * big frame. */
        k->pos = 0;
        k->need = 0;
        if (b->refs == 1 && b->cap == IN_BUF_SIZE) {
            b->len = 0;
        } else {
            wr_buf_unref(b);
            k->in = NULL;
        }
    }
}

/* Room to read: the frame at pos must fit from pos with at least one free byte. The bytes
 * move to the front when nobody else holds the buffer, else into a new one. */
static bool in_reserve(struct conn *k)
{
    struct wr_buf *b = k->in;
    size_t unparsed = b ? b->len - k->pos : 0;
    size_t want = k->need > unparsed + 1 ? k->need : unparsed + 1;
    if (b && k->pos + want <= b->cap)
        return true;
    if (b && b->refs == 1 && want <= b->cap) {
        memmove(b->data, b->data + k->pos, unparsed);
        b->len = unparsed;
        k->pos = 0;
        return true;
    }
    struct wr_buf *nb = wr_buf_new(want > IN_BUF_SIZE ? want : IN_BUF_SIZE);
    if (!nb)
        return false;
    if (unparsed)
        memcpy(nb->data, b->data + k->pos, unparsed);
    nb->len = unparsed;
    wr_buf_unref(b);
    k->in = nb;
    k->pos = 0;
    return true;
}

static void hung_up(struct conn *k)
{
    struct amqp_conn *c = &k->c;
    if (c->state == AMQP_CONN_OPEN)
        conn_log(k, WR_LOG_WARN, "client unexpectedly closed TCP connection (vhost '%s', user "
                 "'%s')", wr_vhost_name(c->vhost), c->user);
    else if (c->state == AMQP_CONN_HEADER) /* a health check, most likely */
        conn_log(k, WR_LOG_DEBUG, "client closed TCP connection before the protocol header");
    else if (c->state != AMQP_CONN_CLOSED && c->state != AMQP_CONN_CLOSING)
        conn_log(k, WR_LOG_INFO, "client closed TCP connection in state %s", state_name(k));
    k->dead = true;
}

static void read_input(struct conn *k)
{
    struct amqp_conn *c = &k->c;
    char sink[4096];
    if (!k->discard_input && !in_reserve(k)) {
        conn_log(k, WR_LOG_ERROR, "out of memory for input; closing");
        k->dead = true;
        return;
    }
    struct wr_buf *b = k->in;
    ssize_t n = k->discard_input ? recv(c->tc.fd, sink, sizeof sink, 0)
                                 : recv(c->tc.fd, b->data + b->len, b->cap - b->len, 0);
    if (n == 0) {
        hung_up(k);
        return;
    }
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            conn_log(k, c->state == AMQP_CONN_OPEN ? WR_LOG_WARN : WR_LOG_DEBUG,
                     "read failed: %s", strerror(errno));
            k->dead = true;
        }
        return;
    }
    k->received = true;
    if (k->discard_input)
        return;
    b->len += (size_t)n;
    process(k);
}

static void on_writable(struct wr_tcp_conn *tc)
{
    flush(tcp_conn_of(tc));
}

static void on_readable(struct wr_tcp_conn *tc)
{
    struct conn *k = tcp_conn_of(tc);
    if (!k->dead && !k->blocked)
        read_input(k);
}

static void on_settle(struct wr_tcp_conn *tc)
{
    settle(tcp_conn_of(tc));
}

static const struct wr_tcp_conn_ops conn_ops = {
    .write = on_writable,
    .read = on_readable,
    .settle = on_settle,
};

static void on_handshake_timeout(struct wr_loop *lp, void *data)
{
    (void)lp;
    struct conn *k = data;
    k->handshake_timer = 0;
    conn_log(k, WR_LOG_WARN, "handshake timeout in state %s; closing", state_name(k));
    k->dead = true;
    settle(k);
}

/* ---- life cycle ------------------------------------------------------------------------ */

void conn_accept(struct amqp_listener *l, int fd, const char *peer)
{
    struct conn *k = tcp_conn_of(wr_tcp_conn_new(l->tcp, sizeof *k, fd, peer, &conn_ops));
    if (!k)
        return;
    struct amqp_conn *c = &k->c;
    k->lp = l->loop;
    c->l = l;
    c->state = AMQP_CONN_HEADER;
    c->frame_max = FRAME_MIN_SIZE;
    k->handshake_timer = wr_loop_timer_add(k->lp, HANDSHAKE_TIMEOUT_MS, on_handshake_timeout,
                                           k);
    conn_log(k, WR_LOG_DEBUG, "accepted");
}

void conn_alarm_all(struct amqp_listener *l, bool raised)
{
    for (struct wr_tcp_conn *tc = wr_tcp_listener_conns(l->tcp), *next; tc; tc = next) {
        next = tc->next;
        on_alarm(tcp_conn_of(tc), raised);
    }
}

static void destroy(struct conn *k)
{
    struct amqp_conn *c = &k->c;
    c->state = AMQP_CONN_CLOSED; /* a conn_fail from a channel being freed is a no-op */
    k->dead = true;
    cancel_timer(k, &k->handshake_timer);
    cancel_timer(k, &k->tick_timer);
    cancel_timer(k, &k->close_timer);
    for (uint32_t id = 1; id < k->n_slots; id++) {
        if (c->chans[id]) {
            chan_release(c->chans[id]);
            chan_free(c->chans[id]);
        }
        if (k->contents[id]) {
            content_reset(k->contents[id]);
            free(k->contents[id]);
        }
    }
    free(c->chans);
    free(k->contents);
    if (c->vhost) {
        wr_vhost_delete_owned(c->vhost, c);
        conn_log(k, WR_LOG_INFO, "closed (vhost '%s', user '%s')", wr_vhost_name(c->vhost),
                 c->user);
    } else {
        conn_log(k, WR_LOG_DEBUG, "closed");
    }
    wr_buf_unref(k->in);
    amqp_wr_free(&c->out);
    wr_tcp_conn_free(&c->tc); /* closes the socket */
}

void conn_close_all(struct amqp_listener *l)
{
    static const char reason[] =
        "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'";
    size_t n = 0;
    for (struct wr_tcp_conn *tc = wr_tcp_listener_conns(l->tcp); tc; tc = tc->next, n++) {
        struct conn *k = tcp_conn_of(tc);
        struct amqp_conn *c = &k->c;
        tc->in_event = true; /* no deferred flushes: this function writes */
        release_channels(k);
        if (c->state == AMQP_CONN_OPEN && !k->dead) {
            conn_log(k, WR_LOG_INFO, "closing: broker shutdown");
            close_with(k, false, AMQP_CONNECTION_FORCED, 0, reason);
        } else if (c->state != AMQP_CONN_CLOSING && c->state != AMQP_CONN_CLOSED) {
            k->dead = true; /* still in the handshake: RabbitMQ just drops these */
        }
        k->discard_input = true;
        k->shut_when_flushed = true;
    }
    /* Flush everything at once, for at most SHUTDOWN_FLUSH_MS in all: write what is queued,
     * shut the write side, then read until the client hangs up (it read the close). */
    struct pollfd *pfds = n ? calloc(n, sizeof *pfds) : NULL;
    struct conn **ks = n ? calloc(n, sizeof *ks) : NULL;
    uint64_t deadline = wr_loop_now_ms(l->loop) + SHUTDOWN_FLUSH_MS;
    while (pfds && ks) {
        size_t m = 0;
        for (struct wr_tcp_conn *tc = wr_tcp_listener_conns(l->tcp); tc; tc = tc->next) {
            struct conn *k = tcp_conn_of(tc);
            if (k->dead)
                continue;
            flush(k);
            if (k->dead)
                continue;
            pfds[m] = (struct pollfd){tc->fd, pending(k) ? POLLOUT : POLLIN, 0};
            ks[m++] = k;
        }
        uint64_t now = wr_loop_now_ms(l->loop);
        if (!m || now >= deadline || poll(pfds, m, (int)(deadline - now)) <= 0)
            break;
        for (size_t i = 0; i < m; i++) {
            char sink[4096];
            if (!(pfds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t r = recv(pfds[i].fd, sink, sizeof sink, 0);
            if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR))
                ks[i]->dead = true;
        }
    }
    free(pfds);
    free(ks);
    while (wr_tcp_listener_conns(l->tcp))
        destroy(tcp_conn_of(wr_tcp_listener_conns(l->tcp)));
}
