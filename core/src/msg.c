/*
 * msg.c: buffers and messages. A message is one allocation holding the struct and copies of
 * its strings (routing key, key, properties); headers are a deep copy; the body is a slice
 * holding a reference on its buffer, so a transport's receive buffer becomes the body with no
 * copy. Live message bytes are counted for the memory watermark.
 */
#include "warren/msg.h"

#include "broker_int.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const struct wr_table no_headers = {0, NULL};
static atomic_size_t bytes_live;

struct wr_buf *wr_buf_new(size_t cap)
{
    struct wr_buf *b = malloc(sizeof *b + cap);
    if (!b)
        return NULL;
    b->refs = 1;
    b->len = 0;
    b->cap = cap;
    return b;
}

struct wr_buf *wr_buf_ref(struct wr_buf *b)
{
    b->refs++;
    return b;
}

void wr_buf_unref(struct wr_buf *b)
{
    if (b && --b->refs == 0)
        free(b);
}

enum { MSG_NSTR = 13 };

/* The message's string fields, in the order they are packed after the struct. */
static void msg_strings(struct wr_msg *m, struct wr_str *out[MSG_NSTR])
{
    struct wr_str *s[MSG_NSTR] = {
        &m->exchange,             &m->routing_key,
        &m->key,
        &m->props.content_type,   &m->props.content_encoding,
        &m->props.correlation_id, &m->props.reply_to,
        &m->props.expiration,     &m->props.message_id,
        &m->props.type,           &m->props.user_id,
        &m->props.app_id,         &m->props.cluster_id,
    };
    memcpy(out, s, sizeof s);
}

int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int wr_msg_new(const struct wr_msg_init *init, struct wr_msg **out, struct wr_error *err)
{
    /* Lay out a template with the caller's (borrowed) strings, then copy them after it. */
    struct wr_msg tmpl = {0};
    tmpl.routing_key = init->routing_key;
    if (!tmpl.routing_key.ptr)
        tmpl.routing_key = (struct wr_str){"", 0};
    tmpl.key = init->key;
    tmpl.exchange = init->exchange;
    if (!tmpl.exchange.ptr)
        tmpl.exchange = (struct wr_str){"", 0};
    if (init->props)
        tmpl.props = *init->props;

    struct wr_str *src[MSG_NSTR];
    msg_strings(&tmpl, src);
    size_t strbytes = 0;
    for (int i = 0; i < MSG_NSTR; i++)
        if (src[i]->ptr)
            strbytes += src[i]->len + 1;

    struct wr_msg *m = malloc(sizeof *m + strbytes);
    if (!m)
        return wr_error_set(err, WR_ENOMEM, "out of memory for a message");
    *m = tmpl;
    struct wr_str *dst[MSG_NSTR];
    msg_strings(m, dst);
    char *p = (char *)(m + 1);
    for (int i = 0; i < MSG_NSTR; i++) {
        if (!dst[i]->ptr)
            continue;
        memcpy(p, dst[i]->ptr, dst[i]->len);
        p[dst[i]->len] = '\0';
        dst[i]->ptr = p;
        p += dst[i]->len + 1;
    }

    m->headers = &no_headers;
    if (init->headers && init->headers->count) {
        m->headers = wr_table_dup(init->headers);
        if (!m->headers) {
            free(m);
            return wr_error_set(err, WR_ENOMEM, "out of memory for message headers");
        }
    }

    if (init->body.buf) {
        m->body = init->body;
        wr_buf_ref(m->body.buf);
    } else if (init->body_len) {
        struct wr_buf *b = wr_buf_new(init->body_len);
        if (!b) {
            if (m->headers != &no_headers)
                wr_table_free((struct wr_table *)m->headers);
            free(m);
            return wr_error_set(err, WR_ENOMEM, "out of memory for a message body");
        }
        memcpy(b->data, init->body_ptr, init->body_len);
        b->len = init->body_len;
        m->body = (struct wr_slice){b, 0, init->body_len};
    } else {
        m->body = (struct wr_slice){NULL, 0, 0};
    }

    m->refs = 1;
    m->timestamp_ms = init->timestamp_ms ? init->timestamp_ms : wall_ms();
    m->size = sizeof *m + strbytes + m->body.len;
    atomic_fetch_add_explicit(&bytes_live, m->size, memory_order_relaxed);
    *out = m;
    return WR_OK;
}

struct wr_msg *wr_msg_ref(struct wr_msg *msg)
{
    msg->refs++;
    return msg;
}

void wr_msg_unref(struct wr_msg *msg)
{
    if (!msg || --msg->refs > 0)
        return;
    atomic_fetch_sub_explicit(&bytes_live, msg->size, memory_order_relaxed);
    if (msg->headers != &no_headers)
        wr_table_free((struct wr_table *)msg->headers);
    wr_buf_unref(msg->body.buf);
    free(msg);
}

size_t wr_msg_bytes_live(void)
{
    return atomic_load_explicit(&bytes_live, memory_order_relaxed);
}

struct wr_str wr_msg_record_key(const struct wr_msg *msg)
{
    struct wr_str k;
    if (wr_table_get_str(msg->headers, "x-kafka-key", &k.ptr, &k.len))
        return k;
    return msg->key.ptr ? msg->key : msg->routing_key;
}
