/*
 * conn.c: one Kafka connection: the socket, 4-byte framing, request headers, and replies
 * that leave in request order.
 *
 * Every request gets a reply slot in the connection's queue when it is read. A handler fills
 * its slot now or later; the queue's head goes out as soon as it is complete, so a fast
 * Metadata answer waits behind a long-polling Fetch read before it, as Kafka orders them.
 * A reply is a list of segments: ranges of its own memory (size, header and body bytes) and
 * file ranges of log segments that go out by sendfile(), so record data is never copied
 * into user space. Consecutive memory segments of several replies leave in one writev().
 *
 * Back-pressure: reading stops while the completed output queued is above OUT_HIGH or too
 * many requests are in flight, and resumes when the queue drains below OUT_LOW.
 *
 * A connection that fails (bad input, write error, hang-up) is marked dead and freed at the
 * next safe point (the end of its event, or a deferred task), never inside a handler.
 */
#include "conn.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "handlers.h"
#include "kafka_msgs.h"

#define IN_BUF_SIZE (64u * 1024)
#define OUT_HIGH (4u << 20)
#define OUT_LOW (1u << 20)
#define MAX_IN_FLIGHT 512
#define IOV_MAX_BATCH 64
/* How long a graceful stop waits, in all, for output to drain. */
#define SHUTDOWN_FLUSH_MS 1000

struct seg {
    int fd;            /* -1: bytes [off, off + len) of the reply's memory */
    uint64_t off;
    uint64_t len;
};

struct kf_reply {
    struct kf_conn *conn;      /* NULL once the connection closed */
    struct kf_reply *next;     /* the connection's queue, in request order */
    int16_t api_key;
    int16_t version;
    bool done;                 /* complete: may leave when it reaches the head */
    struct wr_bytes mem;       /* the frame's size, the response header, body bytes */
    struct seg *segs;
    size_t n_segs, cap_segs;
    size_t seg_at;             /* output cursor: segment, and bytes sent of it */
    uint64_t seg_sent;
    bool failed;               /* out of memory while building */
    kf_reply_abort_cb *abort_cb;
    void *abort_data;
};

struct kf_conn {
    struct wr_tcp_conn tc;     /* first: the socket, its peer, the listener's list */
    struct kf_listener *l;
    struct wr_loop *lp;
    uint64_t id;
    char client_host[64];
    char client_id[256];
    char user[256];
    bool authenticated;
    bool sasl_raw_next;        /* SaslHandshake v0 done: the next frame is a bare token */

    uint8_t *in;               /* input buffer: in[pos, len) is unparsed */
    size_t in_len, in_cap, in_pos;

    struct kf_reply *head, *tail;
    size_t n_replies;
    uint64_t out_bytes;        /* bytes of complete replies not yet sent */

    bool dead;
    bool reading_paused;
    bool stopping;             /* graceful stop: read nothing more */
    bool destroy_queued;
};

static uint64_t next_conn_id = 1;

static void destroy(struct kf_conn *c);
static void settle(struct kf_conn *c);

/* ---- accessors --------------------------------------------------------------------------- */

struct wr_broker *kf_conn_broker(const struct kf_conn *c) { return c->l->broker; }
struct wr_vhost *kf_conn_vhost(const struct kf_conn *c)
{
    return wr_vhost_find(c->l->broker, "/");
}
struct wr_loop *kf_conn_loop(const struct kf_conn *c) { return c->lp; }
struct kf_listener *kf_conn_listener(const struct kf_conn *c) { return c->l; }
const char *kf_conn_client_id(const struct kf_conn *c) { return c->client_id; }
const char *kf_conn_peer(const struct kf_conn *c) { return c->tc.peer; }
const char *kf_conn_client_host(const struct kf_conn *c) { return c->client_host; }
uint64_t kf_conn_id(const struct kf_conn *c) { return c->id; }
const char *kf_conn_user(const struct kf_conn *c) { return c->user; }
bool kf_conn_authenticated(const struct kf_conn *c) { return c->authenticated; }
const char *kf_conn_node_host(const struct kf_conn *c) { return c->l->host; }
int32_t kf_conn_node_port(const struct kf_conn *c)
{
    return wr_tcp_listener_port(c->l->tcp);
}
int16_t kf_reply_version(const struct kf_reply *r) { return r->version; }
struct kf_conn *kf_reply_conn(const struct kf_reply *r) { return r->conn; }

void kf_conn_expect_sasl_token(struct kf_conn *c)
{
    c->sasl_raw_next = true;
}

void kf_conn_set_user(struct kf_conn *c, const char *user)
{
    snprintf(c->user, sizeof c->user, "%s", user);
    c->authenticated = true;
}

void kf_conn_log(const struct kf_conn *c, enum wr_log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    wr_tcp_conn_vlog(&c->tc, level, fmt, ap);
    va_end(ap);
}

/* ---- replies ----------------------------------------------------------------------------- */

static void reply_free(struct kf_reply *r)
{
    for (size_t i = r->seg_at; i < r->n_segs; i++)
        if (r->segs[i].fd >= 0)
            close(r->segs[i].fd);
    free(r->segs);
    wr_bytes_free(&r->mem);
    free(r);
}

static bool seg_push(struct kf_reply *r, struct seg s)
{
    if (r->n_segs == r->cap_segs) {
        size_t cap = r->cap_segs ? r->cap_segs * 2 : 4;
        struct seg *segs = realloc(r->segs, cap * sizeof *segs);
        if (!segs)
            return false;
        r->segs = segs;
        r->cap_segs = cap;
    }
    r->segs[r->n_segs++] = s;
    return true;
}

/* A new slot at the tail of c's queue, its size and response header written. */
static struct kf_reply *reply_new(struct kf_conn *c, int16_t api_key, int16_t version,
                                  int32_t correlation_id, bool header, bool flexible)
{
    struct kf_reply *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->conn = c;
    r->api_key = api_key;
    r->version = version;
    wr_bytes_u32(&r->mem, 0); /* the size, set by kf_reply_finish */
    if (header)
        kf_response_header_encode(&r->mem, correlation_id, flexible);
    if (r->mem.oom || !seg_push(r, (struct seg){-1, 0, r->mem.len})) {
        reply_free(r);
        return NULL;
    }
    if (c->tail)
        c->tail->next = r;
    else
        c->head = r;
    c->tail = r;
    c->n_replies++;
    return r;
}

void kf_reply_on_abort(struct kf_reply *r, kf_reply_abort_cb *cb, void *data)
{
    r->abort_cb = cb;
    r->abort_data = data;
}

void kf_reply_add(struct kf_reply *r, const void *p, size_t len)
{
    if (!r->conn || r->failed || !len)
        return;
    size_t off = r->mem.len;
    uint8_t *dst = wr_bytes_grow(&r->mem, len);
    struct seg *last = &r->segs[r->n_segs - 1];
    if (!dst) {
        r->failed = true;
        return;
    }
    memcpy(dst, p, len);
    if (last->fd < 0 && last->off + last->len == off)
        last->len += len;
    else if (!seg_push(r, (struct seg){-1, off, len}))
        r->failed = true;
}

void kf_reply_add_file(struct kf_reply *r, int fd, uint64_t offset, uint64_t len)
{
    if (!r->conn || r->failed || !len || !seg_push(r, (struct seg){fd, offset, len})) {
        if (r->conn && len && !r->failed)
            r->failed = true;
        close(fd);
    }
}

static void queue_flush(struct kf_conn *c);

void kf_reply_finish(struct kf_reply *r)
{
    struct kf_conn *c = r->conn;
    if (!c) {
        reply_free(r);
        return;
    }
    r->done = true;
    if (r->failed) {
        kf_conn_log(c, WR_LOG_ERROR, "out of memory for a response; closing");
        c->dead = true;
    } else {
        uint64_t size = 0;
        for (size_t i = 0; i < r->n_segs; i++)
            size += r->segs[i].len;
        uint32_t body = (uint32_t)(size - 4);
        r->mem.p[0] = (uint8_t)(body >> 24);
        r->mem.p[1] = (uint8_t)(body >> 16);
        r->mem.p[2] = (uint8_t)(body >> 8);
        r->mem.p[3] = (uint8_t)body;
        c->out_bytes += size;
    }
    queue_flush(c);
}

void kf_reply_send(struct kf_reply *r, const struct wr_bytes *body)
{
    if (body->oom)
        r->failed = true;
    else
        kf_reply_add(r, body->p, body->len);
    kf_reply_finish(r);
}

void kf_reply_none(struct kf_reply *r)
{
    struct kf_conn *c = r->conn;
    if (!c) {
        reply_free(r);
        return;
    }
    r->n_segs = 0; /* nothing goes out; the slot only keeps the order */
    r->done = true;
    queue_flush(c);
}

/* ---- output ------------------------------------------------------------------------------ */

static void pop_head(struct kf_conn *c)
{
    struct kf_reply *r = c->head;
    c->head = r->next;
    if (!c->head)
        c->tail = NULL;
    c->n_replies--;
    reply_free(r);
}

/* Sends one segment's worth from the head (a file range) or a writev of the memory
 * segments of the complete replies at the head. Returns bytes sent, 0 when nothing is
 * ready, -1 when the socket takes no more (EAGAIN), -2 on an error. */
static ssize_t send_some(struct kf_conn *c)
{
    while (c->head && c->head->done && c->head->seg_at == c->head->n_segs)
        pop_head(c);
    struct kf_reply *r = c->head;
    if (!r || !r->done)
        return 0;
    struct seg *s = &r->segs[r->seg_at];
    ssize_t n;
    if (s->fd >= 0) {
        off_t off = (off_t)(s->off + r->seg_sent);
        size_t want = s->len - r->seg_sent;
        n = sendfile(c->tc.fd, s->fd, &off, want > (1u << 30) ? (1u << 30) : want);
        if (n == 0) /* the file is shorter than the slice said: truncated underneath us */
            errno = EIO, n = -1;
    } else {
        struct iovec iov[IOV_MAX_BATCH];
        int k = 0;
        uint64_t sent = r->seg_sent;
        for (struct kf_reply *q = r; q && q->done && k < IOV_MAX_BATCH; q = q->next) {
            size_t i = q == r ? q->seg_at : 0;
            for (; i < q->n_segs && q->segs[i].fd < 0 && k < IOV_MAX_BATCH; i++) {
                iov[k].iov_base = q->mem.p + q->segs[i].off + sent;
                iov[k++].iov_len = q->segs[i].len - sent;
                sent = 0;
            }
            if (i < q->n_segs)
                break;
        }
        n = writev(c->tc.fd, iov, k);
    }
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? -1 : -2;
    /* advance the cursors over n bytes */
    uint64_t left = (uint64_t)n;
    c->out_bytes -= left;
    while (left && c->head) {
        struct kf_reply *q = c->head;
        struct seg *t = &q->segs[q->seg_at];
        uint64_t take = t->len - q->seg_sent < left ? t->len - q->seg_sent : left;
        q->seg_sent += take;
        left -= take;
        if (q->seg_sent == t->len) {
            if (t->fd >= 0)
                close(t->fd);
            t->fd = -1;
            q->seg_at++;
            q->seg_sent = 0;
            if (q->seg_at == q->n_segs)
                pop_head(c);
        }
    }
    return n;
}

static void flush(struct kf_conn *c)
{
    for (;;) {
        ssize_t n = send_some(c);
        if (n == -2) {
            kf_conn_log(c, WR_LOG_DEBUG, "write failed: %s", strerror(errno));
            c->dead = true;
            return;
        }
        if (n <= 0)
            return;
    }
}

static bool waiting_output(const struct kf_conn *c)
{
    return c->head && c->head->done;
}

static void update_mask(struct kf_conn *c)
{
    if (c->reading_paused && c->out_bytes < OUT_LOW && c->n_replies < MAX_IN_FLIGHT / 2)
        c->reading_paused = false;
    else if (c->out_bytes > OUT_HIGH || c->n_replies >= MAX_IN_FLIGHT)
        c->reading_paused = true;
    int mask = (c->reading_paused || c->stopping ? 0 : WR_READABLE) |
               (waiting_output(c) ? WR_WRITABLE : 0);
    wr_tcp_conn_watch(&c->tc, mask);
}

static void process(struct kf_conn *c);

/* The safe point after any event: flush, then free a dead connection or re-arm. Input held
 * back by back-pressure is parsed again once output drained. */
static void settle(struct kf_conn *c)
{
    if (!c->dead)
        flush(c);
    if (!c->dead) {
        bool was_paused = c->reading_paused;
        update_mask(c);
        if (was_paused && !c->reading_paused && !c->stopping) {
            c->tc.in_event = true;
            process(c);
            c->tc.in_event = false;
            if (!c->dead)
                flush(c);
            if (!c->dead)
                update_mask(c);
        }
    }
    if (c->dead)
        destroy(c);
}

static void queue_flush(struct kf_conn *c)
{
    if (wr_tcp_conn_defer(&c->tc) != WR_OK)
        c->dead = true; /* out of memory: freed at its next event */
}

/* ---- input ------------------------------------------------------------------------------- */

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Takes back the slot of a request that failed before its handler completed it. */
static void reply_drop_tail(struct kf_conn *c, struct kf_reply *r)
{
    if (c->tail != r || r->done)
        return;
    struct kf_reply **at = &c->head;
    while (*at != r)
        at = &(*at)->next;
    *at = NULL;
    c->tail = NULL;
    for (struct kf_reply *q = c->head; q; q = q->next)
        c->tail = q;
    c->n_replies--;
    reply_free(r);
}

/* One request frame (without its size). Returns false to close the connection. */
static bool request(struct kf_conn *c, const uint8_t *p, size_t len)
{
    if (c->sasl_raw_next) {
        c->sasl_raw_next = false;
        struct kf_reply *r = reply_new(c, 17, 0, 0, false, false);
        if (r && kf_sasl_raw(c, r, p, len) == WR_OK)
            return true;
        if (r)
            reply_drop_tail(c, r);
        kf_conn_log(c, WR_LOG_WARN, "SASL PLAIN authentication failed; closing");
        return false;
    }
    int16_t key = -1, version = -1;
    if (len < 8) {
        kf_conn_log(c, WR_LOG_WARN, "request of %zu bytes is shorter than a header; closing",
                    len);
        return false;
    }
    kf_request_peek(p, len, &key, &version);
    int32_t correlation_id = (int32_t)be32(p + 4);
    if (!kf_api_supported(key, version)) {
        if (key == 18) { /* ApiVersions: answered at v0 with the ranges we serve */
            struct kf_reply *r = reply_new(c, key, 0, correlation_id, true, false);
            if (r)
                kf_api_versions_unsupported(r);
            return r != NULL;
        }
        kf_conn_log(c, WR_LOG_WARN, "unsupported request: api key %d version %d; closing", key,
                    version);
        return false;
    }
    bool flexible = kf_version_flexible(key, version);
    struct kf_in in = {p, p + len, false};
    struct kf_request_header h;
    if (kf_request_header_decode(&in, flexible, &h) != WR_OK) {
        kf_conn_log(c, WR_LOG_WARN, "malformed request header (api key %d version %d); closing",
                    key, version);
        return false;
    }
    size_t n = h.client_id.ptr ? (size_t)h.client_id.len : 0;
    if (n >= sizeof c->client_id)
        n = sizeof c->client_id - 1;
    memcpy(c->client_id, h.client_id.ptr ? h.client_id.ptr : "", n);
    c->client_id[n] = 0;
    struct kf_reply *r = reply_new(c, key, version, h.correlation_id, true,
                                   flexible && key != 18);
    if (!r) {
        kf_conn_log(c, WR_LOG_ERROR, "out of memory for a reply; closing");
        return false;
    }
    struct kf_arena a = {0};
    int rc = kf_dispatch(c, r, &h, &in, &a);
    kf_arena_free(&a);
    if (rc != WR_OK) {
        reply_drop_tail(c, r);
        kf_conn_log(c, WR_LOG_WARN,
                    "malformed or refused request (api key %d version %d, %zu bytes, at byte "
                    "%zu); closing",
                    key, version, len, (size_t)(in.p - p));
        return false;
    }
    return true;
}

/* Handles the complete frames in the input buffer, until back-pressure or the end. */
static void process(struct kf_conn *c)
{
    while (!c->dead && !c->reading_paused && !c->stopping) {
        size_t avail = c->in_len - c->in_pos;
        if (avail < 4)
            break;
        const uint8_t *p = c->in + c->in_pos;
        uint32_t size = be32(p);
        if (size > c->l->max_request_size || size > INT32_MAX) {
            kf_conn_log(c, WR_LOG_WARN,
                        "request of %u bytes is larger than max_request_size (%u); closing",
                        size, c->l->max_request_size);
            c->dead = true;
            break;
        }
        if (avail - 4 < size)
            break;
        c->in_pos += 4 + (size_t)size;
        if (!request(c, p + 4, size)) {
            c->dead = true;
            break;
        }
        if (c->out_bytes > OUT_HIGH || c->n_replies >= MAX_IN_FLIGHT)
            c->reading_paused = true;
    }
    if (c->in_pos == c->in_len)
        c->in_pos = c->in_len = 0;
}

/* Room for at least the frame being read (or one more byte). */
static bool in_reserve(struct kf_conn *c)
{
    size_t unparsed = c->in_len - c->in_pos;
    size_t want = unparsed + 1;
    if (unparsed >= 4) {
        uint32_t size = be32(c->in + c->in_pos);
        if (size <= c->l->max_request_size && 4 + (size_t)size > want)
            want = 4 + (size_t)size;
    }
    if (c->in_pos + want <= c->in_cap && c->in_len < c->in_cap)
        return true;
    if (c->in_pos) {
        memmove(c->in, c->in + c->in_pos, unparsed);
        c->in_len = unparsed;
        c->in_pos = 0;
    }
    if (want <= c->in_cap && c->in_len < c->in_cap)
        return true;
    size_t cap = want > IN_BUF_SIZE ? want : IN_BUF_SIZE;
    if (cap < c->in_cap)
        cap = c->in_cap;
    if (cap == c->in_cap)
        cap += IN_BUF_SIZE;
    uint8_t *in = realloc(c->in, cap);
    if (!in)
        return false;
    c->in = in;
    c->in_cap = cap;
    return true;
}

static void read_input(struct kf_conn *c)
{
    if (!in_reserve(c)) {
        kf_conn_log(c, WR_LOG_ERROR, "out of memory for input; closing");
        c->dead = true;
        return;
    }
    ssize_t n = recv(c->tc.fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
    if (n == 0) {
        kf_conn_log(c, WR_LOG_DEBUG, "client closed the connection");
        c->dead = true;
        return;
    }
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            kf_conn_log(c, WR_LOG_DEBUG, "read failed: %s", strerror(errno));
            c->dead = true;
        }
        return;
    }
    c->in_len += (size_t)n;
    process(c);
}

static struct kf_conn *conn_of(struct wr_tcp_conn *tc)
{
    return (struct kf_conn *)tc;
}

static void on_writable(struct wr_tcp_conn *tc)
{
    flush(conn_of(tc));
}

static void on_readable(struct wr_tcp_conn *tc)
{
    struct kf_conn *c = conn_of(tc);
    if (!c->dead && !c->reading_paused && !c->stopping)
        read_input(c);
}

static void on_settle(struct wr_tcp_conn *tc)
{
    settle(conn_of(tc));
}

static const struct wr_tcp_conn_ops conn_ops = {
    .write = on_writable,
    .read = on_readable,
    .settle = on_settle,
};

/* ---- life cycle -------------------------------------------------------------------------- */

void kf_conn_accept(struct wr_tcp_listener *tl, int fd, const char *peer, void *data)
{
    struct kf_listener *l = data;
    struct kf_conn *c = conn_of(wr_tcp_conn_new(tl, sizeof *c, fd, peer, &conn_ops));
    if (!c)
        return;
    c->l = l;
    c->lp = l->loop;
    c->id = next_conn_id++;
    snprintf(c->tc.label, sizeof c->tc.label, "conn %llu %s", (unsigned long long)c->id,
             c->tc.peer);
    /* Kafka shows a client's host as "/1.2.3.4" */
    snprintf(c->client_host, sizeof c->client_host, "/%s", peer[0] == '[' ? peer + 1 : peer);
    char *colon = strrchr(c->client_host, peer[0] == '[' ? ']' : ':');
    if (colon)
        *colon = 0;
    c->authenticated = !l->sasl_plain;
    kf_conn_log(c, WR_LOG_DEBUG, "accepted");
}

/* At a graceful stop: the owners of pending replies complete them now (their abort
 * callbacks), so the responses still go out. */
static void abort_pending(struct kf_conn *c)
{
    for (struct kf_reply *r = c->head, *next; r; r = next) {
        next = r->next;
        kf_reply_abort_cb *cb = r->abort_cb;
        r->abort_cb = NULL;
        if (!r->done && cb)
            cb(r, r->abort_data);
    }
}

static void destroy(struct kf_conn *c)
{
    c->dead = true;
    c->tc.in_event = true; /* completions from abort callbacks must not queue flushes */
    /* pending replies go to their owners, complete ones are freed here */
    struct kf_reply *r = c->head;
    c->head = c->tail = NULL;
    struct kf_reply *pending = NULL, **tail = &pending;
    for (struct kf_reply *next; r; r = next) {
        next = r->next;
        r->next = NULL;
        if (r->done) {
            reply_free(r);
        } else {
            r->conn = NULL;
            *tail = r;
            tail = &r->next;
        }
    }
    for (struct kf_reply *next; pending; pending = next) {
        next = pending->next;
        kf_reply_abort_cb *cb = pending->abort_cb;
        pending->abort_cb = NULL;
        if (cb)
            cb(pending, pending->abort_data); /* frees it: its conn is gone */
    }
    free(c->in);
    kf_conn_log(c, WR_LOG_DEBUG, "closed");
    wr_tcp_conn_free(&c->tc); /* closes the socket */
}

void kf_conn_close_all(struct kf_listener *l)
{
    size_t n = 0;
    for (struct wr_tcp_conn *tc = wr_tcp_listener_conns(l->tcp); tc; tc = tc->next, n++) {
        struct kf_conn *c = conn_of(tc);
        c->stopping = true;
        tc->in_event = true;
        abort_pending(c);
    }
    /* Flush everything at once, for at most SHUTDOWN_FLUSH_MS in all. */
    struct pollfd *pfds = n ? calloc(n, sizeof *pfds) : NULL;
    uint64_t deadline = wr_loop_now_ms(l->loop) + SHUTDOWN_FLUSH_MS;
    while (pfds) {
        size_t m = 0;
        for (struct wr_tcp_conn *tc = wr_tcp_listener_conns(l->tcp); tc; tc = tc->next) {
            struct kf_conn *c = conn_of(tc);
            if (!c->dead)
                flush(c);
            if (!c->dead && waiting_output(c))
                pfds[m++] = (struct pollfd){tc->fd, POLLOUT, 0};
        }
        uint64_t now = wr_loop_now_ms(l->loop);
        if (!m || now >= deadline || poll(pfds, m, (int)(deadline - now)) <= 0)
            break;
    }
    free(pfds);
    while (wr_tcp_listener_conns(l->tcp))
        destroy(conn_of(wr_tcp_listener_conns(l->tcp)));
}
