"""scenarios_features.py: queue features clients configure with declare arguments and flags:
exclusive and auto-delete queues, purge, conditional delete, length limits and overflow,
dead-lettering with x-death, message and queue TTLs, exclusive consumers."""
import time

import pika
import pika.exceptions as pe

from context import scenario
from scenarios_basic import declare, declare_when, drain_get, gone_when


def get_within(t, conn, ch, queue, timeout=5.0):
    """basic.get (no-ack) until a message comes or timeout; returns (m, p, b) or Nones."""
    end = time.monotonic() + timeout
    while True:
        m, p, b = ch.basic_get(queue, auto_ack=True)
        if m is not None or time.monotonic() > end:
            return m, p, b
        conn.sleep(0.02)


def without_death_time(headers):
    """x-death entries carry the broker's clock ('time'), which two brokers cannot share."""
    for death in headers.get("x-death", []):
        if "time" in death:
            death["time"] = "<time>"
    return headers


def dead_letter_event(t, m, p, b):
    headers = without_death_time(dict(p.headers or {}))
    t.ev("dead-lettered", m.routing_key, m.exchange, b.decode(), headers,
         p.expiration)


@scenario
def exclusive_queue_locked_then_gone(t):
    owner = t.pika()
    ch = owner.channel()
    q = declare(t, ch, t.n("q"), exclusive=True)
    other = t.pika()
    for action in (lambda c: c.queue_declare(q, passive=True),
                   lambda c: c.queue_declare(q),
                   lambda c: c.basic_consume(q, lambda *a: None),
                   lambda c: c.basic_get(q),
                   lambda c: c.queue_delete(q),
                   lambda c: c.queue_purge(q)):
        t.expect_error(action, other.channel())
    declare(t, ch, q, passive=True)
    # Publishing into another connection's exclusive queue is allowed.
    pub = other.channel()
    pub.confirm_delivery()
    pub.basic_publish("", q, b"from the other connection")
    m, _, b = ch.basic_get(q, auto_ack=True)
    t.ev("owner got", b.decode() if m else None)
    owner.close()
    gone_when(t, other, q)


@scenario
def auto_delete_after_last_consumer(t):
    conn = t.pika()
    ch = conn.channel()
    q = declare(t, ch, t.n("q"), auto_delete=True)
    c1 = ch.basic_consume(q, lambda *a: None)
    c2 = ch.basic_consume(q, lambda *a: None)
    ch.basic_cancel(c1)
    declare(t, ch, q, passive=True)
    ch.basic_cancel(c2)
    gone_when(t, conn, q)
    # An auto-delete queue that never had a consumer stays.
    q2 = declare(t, conn.channel(), t.n("never-consumed"), auto_delete=True)
    declare(t, conn.channel(), q2, passive=True)


@scenario
def queue_purge_reports_count(t):
    conn = t.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    q = declare(t, ch, t.n("q"))
    for i in range(5):
        ch.basic_publish("", q, b"p%d" % i)
    m, _, _ = ch.basic_get(q)  # one unacked: purge leaves it alone
    t.ev("queue.purge-ok", ch.queue_purge(q).method.message_count)
    ch.basic_nack(m.delivery_tag, requeue=True)
    declare_when(t, conn, q, 1)
    t.ev("queue.purge-ok", ch.queue_purge(q).method.message_count)


@scenario
def queue_delete_if_empty_if_unused(t):
    conn = t.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    q = declare(t, ch, t.n("q"))
    ch.basic_publish("", q, b"x")
    t.expect_error(ch.queue_delete, q, if_empty=True)
    ch = conn.channel()
    tag = ch.basic_consume(q, lambda *a: None, auto_ack=False)
    t.expect_error(conn.channel().queue_delete, q, if_unused=True)
    ch.basic_cancel(tag)
    t.ev("queue.delete-ok", ch.queue_delete(q, if_unused=True).method.message_count)
    q2 = declare(t, ch, t.n("empty"))
    t.ev("queue.delete-ok", ch.queue_delete(q2, if_empty=True).method.message_count)
    ex = t.n("ex")
    ch.exchange_declare(ex, "fanout")
    q3 = declare(t, ch, t.n("bound"))
    ch.queue_bind(q3, ex)
    t.expect_error(ch.exchange_delete, ex, if_unused=True)
    ch = conn.channel()
    ch.queue_unbind(q3, ex)
    ch.exchange_delete(ex, if_unused=True)
    t.ev("exchange.delete-ok")


@scenario
def max_length_drops_head(t):
    conn = t.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    q = declare(t, ch, t.n("q"), arguments={"x-max-length": 2})
    for i in range(5):
        ch.basic_publish("", q, b"m%d" % i)
    declare(t, ch, q, passive=True)
    drain_get(t, ch, q)
    q2 = declare(t, ch, t.n("bytes"), arguments={"x-max-length-bytes": 10})
    for body in (b"12345", b"67890", b"abc", b"defghijk"):
        ch.basic_publish("", q2, body)
    drain_get(t, ch, q2)


@scenario
def max_length_drop_head_dead_letters(t):
    conn = t.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    dlx = t.n("dlx")
    ch.exchange_declare(dlx, "fanout")
    dlq = declare(t, ch, t.n("dlq"))
    ch.queue_bind(dlq, dlx)
    q = declare(t, ch, t.n("q"), arguments={"x-max-length": 1, "x-dead-letter-exchange": dlx})
    ch.basic_publish("", q, b"old")
    ch.basic_publish("", q, b"new")
    m, p, b = get_within(t, conn, ch, dlq)
    if m:
        dead_letter_event(t, m, p, b)
    drain_get(t, ch, q)


@scenario
def overflow_reject_publish_nacks(t):
    conn = t.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    q = declare(t, ch, t.n("q"), arguments={"x-max-length": 2, "x-overflow": "reject-publish"})
    for i in range(4):
        try:
            ch.basic_publish("", q, b"m%d" % i)
            t.ev("ack", i)
        except pe.NackError:
            t.ev("nack", i)
    drain_get(t, ch, q)
    ch.basic_publish("", q, b"room again")
    t.ev("ack after drain")


@scenario
def dead_letter_on_reject_with_x_death(t):
    conn = t.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    dlx = t.n("dlx")
    ch.exchange_declare(dlx, "topic")
    dlq = declare(t, ch, t.n("dlq"))
    ch.queue_bind(dlq, dlx, "#")
    q = declare(t, ch, t.n("q"), arguments={"x-dead-letter-exchange": dlx})
    q2 = declare(t, ch, t.n("q2"), arguments={"x-dead-letter-exchange": dlx,
                                              "x-dead-letter-routing-key": "moved"})
    ch.basic_publish("", q, b"rejected", pika.BasicProperties(headers={"mine": 1}))
    ch.basic_publish("", q2, b"nacked")
    m, _, _ = ch.basic_get(q)
    ch.basic_reject(m.delivery_tag, requeue=False)
    m, _, _ = ch.basic_get(q2)
    ch.basic_nack(m.delivery_tag, requeue=False)
    for _ in range(2):
        m, p, b = get_within(t, conn, ch, dlq)
        if m:
            dead_letter_event(t, m, p, b)
    # Dead-lettered twice from the same queue: the x-death entry's count goes up.
    ch.basic_publish("", q, b"again", pika.BasicProperties(headers={"mine": 2}))
    m, _, _ = ch.basic_get(q)
    ch.basic_reject(m.delivery_tag, requeue=False)
    m, p, b = get_within(t, conn, ch, dlq)
    ch.basic_publish("", q, b, pika.BasicProperties(headers=p.headers))
    m, _, _ = ch.basic_get(q)
    ch.basic_reject(m.delivery_tag, requeue=False)
    m, p, b = get_within(t, conn, ch, dlq)
    if m:
        dead_letter_event(t, m, p, b)


@scenario
def message_ttl_expires_into_dlx(t):
    conn = t.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    dlx = t.n("dlx")
    ch.exchange_declare(dlx, "fanout")
    dlq = declare(t, ch, t.n("dlq"))
    ch.queue_bind(dlq, dlx)
    q = declare(t, ch, t.n("q"), arguments={"x-message-ttl": 100,
                                            "x-dead-letter-exchange": dlx})
    ch.basic_publish("", q, b"short lived", pika.BasicProperties(message_id="ttl"))
    m, p, b = get_within(t, conn, ch, dlq)
    if m:
        dead_letter_event(t, m, p, b)
    declare(t, ch, q, passive=True)
    # x-message-ttl 0: a message that cannot be delivered at once expires at once.
    q0 = declare(t, ch, t.n("zero"), arguments={"x-message-ttl": 0,
                                                 "x-dead-letter-exchange": dlx})
    ch.basic_publish("", q0, b"no consumer")
    m, p, b = get_within(t, conn, ch, dlq)
    if m:
        dead_letter_event(t, m, p, b)


@scenario
def per_message_expiration_into_dlx(t):
    conn = t.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    dlx = t.n("dlx")
    ch.exchange_declare(dlx, "fanout")
    dlq = declare(t, ch, t.n("dlq"))
    ch.queue_bind(dlq, dlx)
    q = declare(t, ch, t.n("q"), arguments={"x-dead-letter-exchange": dlx})
    ch.basic_publish("", q, b"expires", pika.BasicProperties(expiration="100"))
    ch.basic_publish("", q, b"stays", pika.BasicProperties(expiration="600000"))
    m, p, b = get_within(t, conn, ch, dlq)
    if m:
        dead_letter_event(t, m, p, b)
    drain_get(t, ch, q)


@scenario
def queue_expires_when_unused(t):
    conn = t.pika()
    ch = conn.channel()
    q = declare(t, ch, t.n("q"), arguments={"x-expires": 300})
    # Probe with mandatory publishes: a redeclare or a get would count as use and renew the
    # lease, a publish does not. The first publish the broker returns means the queue is gone.
    ch.confirm_delivery()
    end = time.monotonic() + 5
    while time.monotonic() < end:
        try:
            ch.basic_publish("", q, b"probe", mandatory=True)
        except pe.UnroutableError as exc:
            t.ev("gone", [[m.method.reply_code, m.method.reply_text] for m in exc.messages])
            break
        conn.sleep(0.05)
    else:
        t.ev("still there after 5 s")
    t.expect_error(lambda: conn.channel().queue_declare(q, passive=True))


@scenario
def exclusive_consumer_refuses_others(t):
    conn = t.pika()
    ch = conn.channel()
    q = declare(t, ch, t.n("q"))
    ch.basic_consume(q, lambda *a: None, exclusive=True, consumer_tag="only-me")
    t.expect_error(conn.channel().basic_consume, q, lambda *a: None)
    ch2 = conn.channel()
    ch.basic_cancel("only-me")
    ch2.basic_consume(q, lambda *a: None, consumer_tag="next")
    t.ev("consume-ok after cancel")
    t.expect_error(conn.channel().basic_consume, q, lambda *a: None, exclusive=True)


@scenario
def x_death_lists_each_death_newest_first(t):
    conn = t.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    final = declare(t, ch, t.n("final"))
    # work --rejected--> parking (TTL) --expired--> final
    parking = declare(t, ch, t.n("parking"), arguments={
        "x-message-ttl": 50, "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": final})
    work = declare(t, ch, t.n("work"), arguments={
        "x-dead-letter-exchange": "", "x-dead-letter-routing-key": parking})
    ch.basic_publish("", work, b"twice dead", pika.BasicProperties(expiration="60000"))
    m, _, _ = ch.basic_get(work)
    ch.basic_reject(m.delivery_tag, requeue=False)
    m, p, b = get_within(t, conn, ch, final)
    if m:
        dead_letter_event(t, m, p, b)


@scenario
def alternate_exchange_takes_unroutable(t):
    conn = t.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    ae, main = t.n("ae"), t.n("main")
    ch.exchange_declare(ae, "fanout")
    ch.exchange_declare(main, "direct", arguments={"alternate-exchange": ae})
    caught, routed = declare(t, ch, t.n("caught")), declare(t, ch, t.n("routed"))
    ch.queue_bind(caught, ae)
    ch.queue_bind(routed, main, "known")
    ch.basic_publish(main, "known", b"routed")
    try:  # the alternate exchange routes it: no basic.return
        ch.basic_publish(main, "unknown", b"to the alternate", mandatory=True)
        t.ev("published")
    except pe.UnroutableError as exc:
        t.ev("returned", [[m.method.reply_code, m.body.decode()] for m in exc.messages])
    drain_get(t, ch, routed)
    drain_get(t, ch, caught)


@scenario
def unknown_queue_arguments_are_kept_not_compared(t):
    conn = t.pika()
    q = declare(t, conn.channel(), t.n("q"), arguments={"x-custom": 1, "plain": "v",
                                                        "x-queue-mode": "lazy"})
    # RabbitMQ checks equivalence only for the arguments it knows.
    t.expect_error(conn.channel().queue_declare, q, arguments={"x-custom": 2})
    t.expect_error(conn.channel().queue_declare, q, arguments={"x-queue-mode": "lazy"})
    ex = t.n("ex")
    conn.channel().exchange_declare(ex, "direct", arguments={"x-custom": True})
    t.expect_error(conn.channel().exchange_declare, ex, "direct", arguments={"x-other": 1})


@scenario
def dead_letter_exchange_missing_drops(t):
    conn = t.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    q = declare(t, ch, t.n("q"), arguments={"x-dead-letter-exchange": t.n("missing")})
    ch.basic_publish("", q, b"nowhere to go")
    m, _, _ = ch.basic_get(q)
    ch.basic_reject(m.delivery_tag, requeue=False)
    declare_when(t, conn, q, 0)
    t.ev("channel open", ch.is_open)


@scenario
def consumer_priority_wins_while_it_has_room(t):
    conn = t.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    q = declare(t, ch, t.n("q"))
    got = {"low": [], "high": []}
    cons = conn.channel()
    cons.basic_qos(prefetch_count=2)
    cons.basic_consume(q, lambda c, m, p, b: got["low"].append(b.decode()), consumer_tag="low")
    cons.basic_consume(q, lambda c, m, p, b: got["high"].append(b.decode()),
                       consumer_tag="high", arguments={"x-priority": 10})
    for i in range(5):
        ch.basic_publish("", q, b"m%d" % i)
    t.pump(conn, lambda: len(got["low"]) + len(got["high"]) >= 4)
    t.settle(conn)
    t.ev("deliveries", got)


@scenario
def priority_queue_orders_by_priority(t):
    conn = t.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    q = declare(t, ch, t.n("q"), arguments={"x-max-priority": 5})
    for body, prio in ((b"p0", None), (b"p3", 3), (b"p9", 9), (b"p5", 5), (b"p3b", 3)):
        ch.basic_publish("", q, body, pika.BasicProperties(priority=prio))
    drain_get(t, ch, q)


@scenario
def direct_reply_to_rpc(t):
    conn = t.pika()
    client = conn.channel()
    server = conn.channel()
    server.confirm_delivery()
    q = declare(t, server, t.n("rpc"))
    replies = []
    client.basic_consume("amq.rabbitmq.reply-to",
                         lambda c, m, p, b: replies.append((m.routing_key, b.decode())),
                         auto_ack=True)
    client.basic_publish("", q, b"ping", pika.BasicProperties(reply_to="amq.rabbitmq.reply-to",
                                                              correlation_id="c1"))
    m, p, b = get_within(t, conn, server, q)
    if m is None:
        t.ev("no request")
        return
    t.ev("request", b.decode(), p.reply_to.startswith("amq.rabbitmq.reply-to."),
         p.correlation_id)
    server.basic_publish("", p.reply_to, b"pong", pika.BasicProperties(correlation_id="c1"))
    t.pump(conn, lambda: replies)
    t.ev("replies", [[rk.startswith("amq.rabbitmq.reply-to."), body] for rk, body in replies])
