"""scenarios_streams.py: stream queues (x-queue-type: stream), which warren keeps in its `log`
storage: declare rules, consumers reading from an x-stream-offset (first, last, next, an
offset, a timestamp, an interval), acks as credit, properties kept through the log, and the
verbs of ack-delete queues that a stream refuses."""
import datetime
import time

import pika
import pika.exceptions as pe

from context import scenario
from scenarios_basic import declare

STREAM = {"x-queue-type": "stream"}


def stream(t, ch, suffix, **args):
    return declare(t, ch, t.n(suffix), durable=True, arguments=dict(STREAM, **args))


def publish_numbered(ch, q, n, first=0):
    """n confirmed publishes m<first>..; each its own publish, so its own chunk in RabbitMQ."""
    ch.confirm_delivery()
    for i in range(first, first + n):
        ch.basic_publish("", q, b"m%d" % i, pika.BasicProperties(headers={"i": i}))


def read(t, conn, q, offset, want, prefetch=100, label=None):
    """Consumes q from offset on a new channel until want messages came (or 5 s), acking
    each; records bodies and x-stream-offset headers, then what else arrives in 0.3 s."""
    ch = conn.channel()
    ch.basic_qos(prefetch_count=prefetch)
    got = []

    def on_message(c, m, p, b):
        got.append((b.decode(), (p.headers or {}).get("x-stream-offset"), m.redelivered))
        c.basic_ack(m.delivery_tag)

    args = {} if offset is None else {"x-stream-offset": offset}
    tag = ch.basic_consume(q, on_message, arguments=args)
    t.pump(conn, lambda: len(got) >= want)
    t.settle(conn, 0.3)
    t.ev("read", label if label is not None else offset, got)
    ch.basic_cancel(tag)
    ch.close()


@scenario
def stream_declare_rules(t):
    conn = t.pika()
    for kw in ({"durable": False}, {"durable": True, "exclusive": True},
               {"durable": True, "auto_delete": True}):
        t.expect_error(lambda: conn.channel().queue_declare(t.n("bad"), arguments=STREAM, **kw))
    ch = conn.channel()
    limits = {"x-max-length-bytes": 10000000, "x-max-age": "7D",
              "x-stream-max-segment-size-bytes": 1000000}
    q = stream(t, ch, "s", **limits)
    publish_numbered(ch, q, 3)
    # A stream reports no ready messages, however many it keeps.
    declare(t, ch, q, passive=True)
    declare(t, ch, q, durable=True, arguments=dict(STREAM, **limits))
    t.expect_error(lambda: conn.channel().queue_declare(q, durable=True,
                                                        arguments=dict(STREAM)))
    t.expect_error(lambda: conn.channel().queue_declare(
        t.n("age"), durable=True, arguments=dict(STREAM, **{"x-max-age": "7x"})))
    t.expect_error(lambda: conn.channel().queue_declare(
        t.n("ttl"), durable=True, arguments=dict(STREAM, **{"x-message-ttl": 1000})))


@scenario
def stream_offsets(t):
    conn = t.pika()
    ch = conn.channel()
    q = stream(t, ch, "s")
    publish_numbered(ch, q, 5)
    read(t, conn, q, "first", 5)
    read(t, conn, q, "last", 1)
    read(t, conn, q, 2, 3)
    read(t, conn, q, -1, 5)
    read(t, conn, q, 100, 0)
    hour_ago = datetime.datetime.now() - datetime.timedelta(hours=1)
    read(t, conn, q, hour_ago, 5, label="timestamp an hour ago")
    read(t, conn, q, "1h", 5)
    read(t, conn, q, datetime.datetime.now() + datetime.timedelta(hours=1), 0,
         label="timestamp in an hour")


@scenario
def stream_next_sees_only_new(t):
    conn = t.pika()
    ch = conn.channel()
    q = stream(t, ch, "s")
    publish_numbered(ch, q, 3)
    for offset in ("next", None):
        sub = conn.channel()
        sub.basic_qos(prefetch_count=10)
        got = []
        sub.basic_consume(q, lambda c, m, p, b: (got.append(b.decode()),
                                                 c.basic_ack(m.delivery_tag)),
                          arguments={} if offset is None else {"x-stream-offset": offset})
        t.settle(conn, 0.3)
        t.ev("before publishing", offset, got)
        publish_numbered(ch, q, 2, first=len(got) + 100)
        t.pump(conn, lambda: len(got) >= 2)
        t.ev("after publishing", offset, got)
        sub.close()


@scenario
def stream_ack_is_credit(t):
    conn = t.pika()
    ch = conn.channel()
    q = stream(t, ch, "s")
    publish_numbered(ch, q, 6)
    sub = conn.channel()
    sub.basic_qos(prefetch_count=2)
    got = []
    sub.basic_consume(q, lambda c, m, p, b: got.append((m, b)),
                      arguments={"x-stream-offset": "first"})
    t.pump(conn, lambda: len(got) >= 2)
    t.settle(conn, 0.3)
    t.ev("without acks", [(m.delivery_tag, b.decode(), m.redelivered) for m, b in got])
    sub.basic_ack(got[1][0].delivery_tag, multiple=True)
    t.pump(conn, lambda: len(got) >= 4)
    t.settle(conn, 0.3)
    t.ev("after acking two", [(m.delivery_tag, b.decode()) for m, b in got])


@scenario
def stream_keeps_properties(t):
    conn = t.pika()
    ch = conn.channel()
    q = stream(t, ch, "s")
    ch.confirm_delivery()
    props = pika.BasicProperties(
        content_type="application/json", content_encoding="gzip", delivery_mode=2,
        priority=3, correlation_id="corr", reply_to="replies", expiration="60000",
        message_id="id-1", timestamp=1700000000, type="kind", user_id="guest", app_id="app",
        # RabbitMQ 3.10's streams drop array and table headers on the way through (they
        # keep messages as AMQP 1.0); warren keeps them, so they are left out here.
        headers={"s": "text", "i": -5, "b": True, "bytes": b"\x00\x01"})
    ch.basic_publish("", q, b"{\"a\": 1}", props)
    ch.basic_publish("", q, b"", pika.BasicProperties())
    sub = conn.channel()
    sub.basic_qos(prefetch_count=10)
    got = []
    sub.basic_consume(q, lambda c, m, p, b: got.append((m, p, b)),
                      arguments={"x-stream-offset": "first"})
    t.pump(conn, lambda: len(got) >= 2)
    for m, p, b in got:
        t.msg("deliver", m, p, b)


@scenario
def stream_refuses_queue_verbs(t):
    conn = t.pika()
    q = stream(t, conn.channel(), "s")
    publish_numbered(conn.channel(), q, 2)
    t.expect_error(lambda: t.pika().channel().basic_get(q))
    t.expect_error(lambda: t.pika().channel().queue_purge(q))

    def consume(prefetch, global_qos=False, auto_ack=False):
        c = t.pika()
        ch = c.channel()
        if prefetch:
            ch.basic_qos(prefetch_count=prefetch, global_qos=global_qos)
        ch.basic_consume(q, lambda *a: None, auto_ack=auto_ack)
        t.settle(c, 0.2)
    t.expect_error(consume, 10, auto_ack=True)
    t.expect_error(consume, 0)
    t.expect_error(consume, 10, global_qos=True)

    for how in ("nack", "reject"):
        c = t.pika()
        ch = c.channel()
        ch.basic_qos(prefetch_count=10)
        got = []
        ch.basic_consume(q, lambda c_, m, p, b: got.append(m),
                         arguments={"x-stream-offset": "first"})
        t.pump(c, lambda: len(got) >= 1)

        def settle_it(ch=ch, c=c, m=got[0]):
            if how == "nack":
                ch.basic_nack(m.delivery_tag, requeue=True)
            else:
                ch.basic_reject(m.delivery_tag, requeue=False)
            t.settle(c, 0.3)
        t.expect_error(settle_it)


@scenario
def stream_bad_offset_closes_connection(t):
    conn = t.pika()
    q = stream(t, conn.channel(), "s")
    c = t.pika()
    ch = c.channel()
    ch.basic_qos(prefetch_count=10)
    try:
        ch.basic_consume(q, lambda *a: None, arguments={"x-stream-offset": "yesterday"})
        t.settle(c, 0.3)
        t.ev("ok")
    except (pe.AMQPError, pe.ChannelClosed) as exc:
        # RabbitMQ answers 541 with the bare text INTERNAL_ERROR; warren's 541 says what is
        # wrong. The code and the connection closing are what a client acts on.
        t.ev("closed with", getattr(exc, "reply_code", None) or
             getattr(exc.args[0], "reply_code", None), type(exc).__name__)
    declare(t, conn.channel(), q, passive=True)
