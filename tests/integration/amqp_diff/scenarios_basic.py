"""scenarios_basic.py: the happy paths a pika user takes every day: declare, publish, consume,
get, ack/nack/reject, routing through every built-in exchange type, exchange-to-exchange
bindings, prefetch, mandatory returns, publisher confirms and transactions.

A channel that publishes and then counts or gets is in confirm mode: RabbitMQ enqueues
asynchronously, and only the confirm says the message is in the queue."""
import decimal
import socket
import struct
import time

import pika
import pika.exceptions as pe

from context import scenario

HEADERS = {"str": "v", "int": 42, "neg": -7, "big": 2 ** 40, "yes": True, "no": False,
           "list": [1, "a", [2]], "table": {"k": "v", "n": 1}, "void": None,
           "dec": decimal.Decimal("1.25"), "bytes": b"\x00\x01raw"}
ALL_PROPS = pika.BasicProperties(
    content_type="text/plain", content_encoding="utf-8", headers=HEADERS, delivery_mode=2,
    priority=3, correlation_id="corr-1", reply_to="reply-q", expiration="60000",
    message_id="msg-1", timestamp=1700000000, type="kind", user_id="guest", app_id="diff")


def declare(t, ch, name, **kw):
    """queue.declare; records the declare-ok and returns the queue's name."""
    ok = ch.queue_declare(name, **kw).method
    t.ev("queue.declare-ok", ok.queue, ok.message_count, ok.consumer_count)
    return ok.queue


def declare_when(t, conn, queue, ready, timeout=5.0):
    """Passive declares until the queue holds `ready` messages, then records the answer (or
    the last one after timeout). For counts that follow an ack, nack, reject or channel
    close: those reach RabbitMQ's queue process asynchronously, and its stat call jumps
    ahead of them."""
    ch = conn.channel()
    end = time.monotonic() + timeout
    while True:
        ok = ch.queue_declare(queue, passive=True).method
        if ok.message_count == ready or time.monotonic() > end:
            t.ev("queue.declare-ok", ok.queue, ok.message_count, ok.consumer_count)
            return
        conn.sleep(0.02)


def gone_when(t, conn, queue, timeout=5.0):
    """Passive declares until the queue is gone and records the 404 (or that it stayed):
    RabbitMQ deletes exclusive and auto-delete queues asynchronously."""
    ch = conn.channel()
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            ch.queue_declare(queue, passive=True)
        except pe.ChannelClosedByBroker as exc:
            t.error(exc)
            return
        conn.sleep(0.02)
    t.ev("still there after %.0f s" % timeout)


def consume_n(t, conn, ch, queue, n, auto_ack=False, **kw):
    """Starts a consumer and waits for n deliveries; returns (consumer tag, [(m, p, b)])."""
    got = []
    tag = ch.basic_consume(queue, lambda c, m, p, b: got.append((m, p, b)), auto_ack=auto_ack,
                           **kw)
    t.pump(conn, lambda: len(got) >= n)
    return tag, got


def drain_get(t, ch, queue):
    """basic.get with no-ack until get-empty (100 at most); records every message."""
    for _ in range(100):
        m, p, b = ch.basic_get(queue, auto_ack=True)
        if m is None:
            t.ev("get", queue, "empty")
            return
        t.msg("get", m, p, b, with_props=False)


@scenario
def publish_consume_named_queue(t):
    conn = t.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    q = declare(t, ch, t.n("q"))
    ch.basic_publish("", q, b"first", ALL_PROPS)
    ch.basic_publish("", q, b"", pika.BasicProperties())
    ch.basic_publish("", q, b"third" * 1000, pika.BasicProperties(delivery_mode=1))
    declare(t, ch, q, passive=True)
    _, got = consume_n(t, conn, ch, q, 3)
    for m, p, b in got:
        t.msg("deliver", m, p, b)
        ch.basic_ack(m.delivery_tag)
    t.settle(conn)
    declare(t, ch, q, passive=True)


@scenario
def default_exchange_routes_by_queue_name(t):
    conn = t.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    q1, q2 = declare(t, ch, t.n("a")), declare(t, ch, t.n("b"))
    for rk in (q1, q2, q2, t.n("nowhere")):
        ch.basic_publish("", rk, rk.encode())
    drain_get(t, ch, q1)
    drain_get(t, ch, q2)


def routing_case(t, ex_type, bindings, publishes):
    """Declares an exchange and queues, binds, publishes, and records what each queue got."""
    conn = t.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    ex = t.n("ex")
    ch.exchange_declare(ex, ex_type)
    queues = []
    for qname, key, args in bindings:
        q = t.n(qname)
        if q not in queues:
            ch.queue_declare(q)
            queues.append(q)
        ch.queue_bind(q, ex, key, arguments=args)
    for rk, headers in publishes:
        ch.basic_publish(ex, rk, ("%s|%s" % (rk, sorted((headers or {}).items()))).encode(),
                         pika.BasicProperties(headers=headers))
    for q in queues:
        drain_get(t, ch, q)


@scenario
def direct_exchange_routing(t):
    routing_case(t, "direct",
                 [("q1", "red", None), ("q2", "red", None), ("q2", "green", None),
                  ("q3", "blue", None), ("q3", "blue", None)],
                 [("red", None), ("green", None), ("blue", None), ("black", None),
                  ("", None)])


@scenario
def fanout_exchange_routing(t):
    routing_case(t, "fanout", [("q1", "", None), ("q2", "ignored", None)],
                 [("any", None), ("", None)])


@scenario
def topic_exchange_routing(t):
    routing_case(t, "topic",
                 [("q1", "*.orange.*", None), ("q2", "*.*.rabbit", None),
                  ("q2", "lazy.#", None), ("q3", "#", None), ("q4", "a.#.z", None),
                  ("q5", "exact.key", None), ("q6", "*", None), ("q7", "#.end", None),
                  ("q8", "*.#", None), ("q9", "#.*", None), ("q10", "#.#", None),
                  ("q11", "a.*.#.z", None)],
                 [("quick.orange.rabbit", None), ("lazy.orange.elephant", None),
                  ("quick.orange.fox", None), ("lazy.brown.fox", None),
                  ("lazy.pink.rabbit", None), ("quick.brown.fox", None),
                  ("orange", None), ("quick.orange.male.rabbit", None),
                  ("lazy.orange.male.rabbit", None), ("lazy", None), ("a.z", None),
                  ("a.b.c.z", None), ("exact.key", None), ("exact.key.more", None),
                  ("", None), ("single", None), ("the.end", None), ("end", None),
                  ("a..z", None), (".", None), ("a.", None), (".a", None),
                  ("a.b.z", None), ("a.b.c.d.z", None)])


@scenario
def headers_exchange_routing(t):
    routing_case(t, "headers",
                 [("all", "", {"x-match": "all", "format": "pdf", "type": "report"}),
                  ("any", "", {"x-match": "any", "format": "pdf", "type": "log"}),
                  ("default", "", {"format": "zip"}),
                  ("num", "", {"x-match": "all", "n": 5}),
                  ("empty", "", {"x-match": "all"})],
                 [("k1", {"format": "pdf", "type": "report"}),
                  ("k2", {"format": "pdf", "type": "report", "extra": 1}),
                  ("k3", {"format": "pdf"}),
                  ("k4", {"type": "log"}),
                  ("k5", {"format": "zip"}),
                  ("k6", {"n": 5}),
                  ("k7", {"n": "5"}),
                  ("k8", None),
                  ("k9", {"x-match": "any", "format": "zip"})])


@scenario
def exchange_to_exchange_bindings(t):
    conn = t.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    src, mid, leaf = t.n("src"), t.n("mid"), t.n("leaf")
    ch.exchange_declare(src, "topic")
    ch.exchange_declare(mid, "direct")
    ch.exchange_declare(leaf, "fanout")
    qa, qb, qc = t.n("qa"), t.n("qb"), t.n("qc")
    for q in (qa, qb, qc):
        ch.queue_declare(q)
    ch.exchange_bind(mid, src, "orders.#")
    ch.exchange_bind(leaf, mid, "orders.eu")
    ch.queue_bind(qa, mid, "orders.us")
    ch.queue_bind(qb, leaf)
    ch.queue_bind(qc, src, "#")
    # A cycle back to the source must not loop or duplicate.
    ch.exchange_bind(src, leaf)
    for rk in ("orders.eu", "orders.us", "orders.asia", "other"):
        ch.basic_publish(src, rk, rk.encode())
    for q in (qa, qb, qc):
        drain_get(t, ch, q)
    ch.exchange_unbind(leaf, mid, "orders.eu")
    t.ev("exchange.unbind-ok")
    ch.basic_publish(src, "orders.eu", b"after unbind")
    for q in (qa, qb, qc):
        drain_get(t, ch, q)


@scenario
def basic_get_message_count(t):
    conn = t.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    q = declare(t, ch, t.n("q"))
    for i in range(3):
        ch.basic_publish("", q, b"m%d" % i)
    for _ in range(4):
        m, p, b = ch.basic_get(q)
        if m is None:
            t.ev("get-empty")
        else:
            t.msg("get-ok", m, p, b)
    ch.basic_ack(0, multiple=True)
    declare(t, ch, q, passive=True)


@scenario
def nack_requeue_sets_redelivered(t):
    conn = t.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    q = declare(t, ch, t.n("q"))
    ch.basic_publish("", q, b"one")
    ch.basic_publish("", q, b"two")
    m, p, b = ch.basic_get(q)
    t.msg("get-ok", m, p, b)
    ch.basic_nack(m.delivery_tag, requeue=True)
    for _ in range(3):
        m, p, b = ch.basic_get(q)
        if m is None:
            t.ev("get-empty")
            break
        t.msg("get-ok", m, p, b)
    ch.basic_ack(0, multiple=True)
    declare(t, ch, q, passive=True)


@scenario
def reject_without_requeue_drops(t):
    conn = t.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    q = declare(t, ch, t.n("q"))
    ch.basic_publish("", q, b"drop me")
    ch.basic_publish("", q, b"keep me")
    _, got = consume_n(t, conn, ch, q, 2)
    ch.basic_reject(got[0][0].delivery_tag, requeue=False)
    ch.basic_reject(got[1][0].delivery_tag, requeue=True)
    t.pump(conn, lambda: len(got) >= 3)
    for m, p, b in got:
        t.msg("deliver", m, p, b, with_props=False)
    ch.basic_ack(got[-1][0].delivery_tag)
    t.settle(conn)
    t.ev("deliveries", len(got))
    declare(t, ch, q, passive=True)


@scenario
def ack_multiple_and_requeue_on_close(t):
    conn = t.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    q = declare(t, ch, t.n("q"))
    for i in range(5):
        ch.basic_publish("", q, b"m%d" % i)
    _, got = consume_n(t, conn, ch, q, 5)
    for m, p, b in got:
        t.msg("deliver", m, p, b, with_props=False)
    ch.basic_ack(got[2][0].delivery_tag, multiple=True)
    ch.close()  # m3 and m4 were unacked: back to the queue, redelivered
    declare_when(t, conn, q, 2)
    ch2 = conn.channel()
    _, got = consume_n(t, conn, ch2, q, 2, auto_ack=True)
    for m, p, b in got:
        t.msg("deliver", m, p, b, with_props=False)


@scenario
def prefetch_one_round_robin(t):
    conn = t.pika()
    ch1, ch2 = conn.channel(), conn.channel()
    q = declare(t, ch1, t.n("q"))
    for ch in (ch1, ch2):
        ch.basic_qos(prefetch_count=1)
    got = {1: [], 2: []}
    ch1.basic_consume(q, lambda c, m, p, b: got[1].append((m, b)), consumer_tag="c1")
    ch2.basic_consume(q, lambda c, m, p, b: got[2].append((m, b)), consumer_tag="c2")
    for i in range(6):
        ch1.basic_publish("", q, b"m%d" % i)
    t.pump(conn, lambda: len(got[1]) + len(got[2]) >= 2)
    t.settle(conn)
    t.ev("first window", [b for _, b in got[1]], [b for _, b in got[2]])
    # One ack at a time, each answered by exactly one new delivery to that consumer.
    for step in range(4):
        n, ch = (1, ch1) if step % 2 == 0 else (2, ch2)
        before = len(got[n])
        ch.basic_ack(got[n][-1][0].delivery_tag)
        t.pump(conn, lambda: len(got[n]) > before)
        t.settle(conn)
        t.ev("after ack by c%d" % n, len(got[1]), len(got[2]))
    t.ev("c1", [[m.consumer_tag, m.delivery_tag, b] for m, b in got[1]])
    t.ev("c2", [[m.consumer_tag, m.delivery_tag, b] for m, b in got[2]])


@scenario
def mandatory_unroutable_returns_312(t):
    conn = t.pika()
    ch = conn.channel()
    returned = []
    ch.add_on_return_callback(lambda c, m, p, b: returned.append((m, p, b)))
    ex = t.n("ex")
    ch.exchange_declare(ex, "direct")
    ch.basic_publish(ex, "nobody", b"returned", pika.BasicProperties(message_id="r1"),
                     mandatory=True)
    ch.basic_publish(ex, "nobody", b"dropped", mandatory=False)
    ch.basic_publish("", t.n("no-such-queue"), b"returned too", mandatory=True)
    t.pump(conn, lambda: len(returned) >= 2)
    t.settle(conn)
    for m, p, b in returned:
        t.msg("basic.return", m, p, b)
    # With confirms the return comes before the ack, and the publish still counts as acked.
    ch.confirm_delivery()
    try:
        ch.basic_publish(ex, "nobody", b"confirmed return", mandatory=True)
        t.ev("published")
    except pika.exceptions.UnroutableError as exc:
        t.ev("unroutable", [[m.method.reply_code, m.method.reply_text, m.body.decode()]
                            for m in exc.messages])


@scenario
def publisher_confirms(t):
    conn = t.pika()
    ch = conn.channel()
    q = declare(t, ch, t.n("q"))
    ch.confirm_delivery()
    for i in range(20):
        ch.basic_publish("", q, b"c%d" % i)
    t.ev("all confirmed")
    declare(t, ch, q, passive=True)


@scenario
def tx_commit_and_rollback(t):
    conn = t.pika()
    ch = conn.channel()
    q = declare(t, ch, t.n("q"))
    ch.tx_select()
    t.ev("tx.select-ok")
    ch.basic_publish("", q, b"rolled back")
    declare(t, ch, q, passive=True)
    ch.tx_rollback()
    t.ev("tx.rollback-ok")
    declare(t, ch, q, passive=True)
    ch.basic_publish("", q, b"committed 1")
    ch.basic_publish("", q, b"committed 2")
    ch.tx_commit()
    t.ev("tx.commit-ok")
    declare(t, ch, q, passive=True)
    # An ack inside a transaction takes effect only at commit.
    m, p, b = ch.basic_get(q)
    t.msg("get-ok", m, p, b, with_props=False)
    ch.basic_ack(m.delivery_tag)
    ch.tx_rollback()
    ch.basic_ack(m.delivery_tag)
    ch.tx_commit()
    declare(t, ch, q, passive=True)


@scenario
def server_named_queue_and_consumer_tag(t):
    conn = t.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    ok = ch.queue_declare("", exclusive=True).method
    t.ev("declare-ok", ok.queue, ok.message_count, ok.consumer_count,
         ok.queue.startswith("amq.gen-"))
    ch.queue_bind(ok.queue, "amq.fanout")
    tag = ch.basic_consume(ok.queue, lambda *a: None)  # pika picks its own consumer tag
    declare(t, ch, ok.queue, passive=True)
    # queue.declare "" again gives another name; basic.get "" means the last declared queue.
    ch.basic_publish("", ok.queue, b"to the first")
    ok2 = ch.queue_declare("", exclusive=True).method
    t.ev("second name differs", ok2.queue != ok.queue)
    ch.basic_publish("", ok2.queue, b"to the second")
    m, p, b = ch.basic_get("", auto_ack=True)
    t.ev("get '' reads the last declared", b.decode() if m else None)
    ch.basic_cancel(tag)
    t.ev("cancel-ok")


@scenario
def consumer_gets_published_stream_in_order(t):
    conn = t.pika()
    ch = conn.channel()
    q = declare(t, ch, t.n("q"))
    ch.basic_qos(prefetch_count=50)
    for i in range(500):
        ch.basic_publish("", q, b"%04d" % i)
    _, got = consume_n(t, conn, ch, q, 500, auto_ack=True)
    bodies = [b for _, _, b in got]
    t.ev("received", len(bodies), bodies == [b"%04d" % i for i in range(500)])
    t.ev("tags", [m.delivery_tag for m, _, _ in got] == list(range(1, 501)))


@scenario
def large_message_spans_frames(t):
    conn = t.pika(frame_max=8192)
    ch = conn.channel()
    ch.confirm_delivery()
    q = declare(t, ch, t.n("q"))
    body = bytes(range(256)) * 4096  # 1 MiB: many body frames each way
    ch.basic_publish("", q, body)
    m, p, b = ch.basic_get(q, auto_ack=True)
    t.ev("got", len(b), b == body)


@scenario
def basic_recover_requeues_unacked(t):
    conn = t.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    q = declare(t, ch, t.n("q"))
    ch.basic_publish("", q, b"recover me")
    m, p, b = ch.basic_get(q)
    t.msg("get-ok", m, p, b, with_props=False)
    ch.basic_recover(requeue=True)
    t.ev("recover-ok")
    m, p, b = ch.basic_get(q, auto_ack=True)
    t.msg("get-ok", m, p, b, with_props=False)


@scenario
def consumer_cancelled_when_queue_deleted(t):
    conn = t.pika()
    ch = conn.channel()
    q = declare(t, ch, t.n("q"))
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    ch.basic_consume(q, lambda *a: None, consumer_tag="watcher")
    other = conn.channel()
    ok = other.queue_delete(q)
    t.ev("queue.delete-ok", ok.method.message_count)
    t.pump(conn, lambda: cancelled)
    t.ev("basic.cancel from server", cancelled)


@scenario
def unbind_and_delete(t):
    conn = t.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    ex = t.n("ex")
    ch.exchange_declare(ex, "direct")
    q = declare(t, ch, t.n("q"))
    ch.queue_bind(q, ex, "k")
    ch.basic_publish(ex, "k", b"bound")
    ch.queue_unbind(q, ex, "k")
    t.ev("queue.unbind-ok")
    ch.basic_publish(ex, "k", b"unbound")
    drain_get(t, ch, q)
    ch.exchange_delete(ex)
    t.ev("exchange.delete-ok")
    ch.exchange_declare(ex, "direct", passive=False)
    t.ev("redeclared after delete")
    ch.basic_publish("", q, b"x")
    t.ev("queue.delete-ok", ch.queue_delete(q).method.message_count)
    # Deleting what does not exist is not an error in RabbitMQ 3.10.
    t.ev("queue.delete-ok", ch.queue_delete(q).method.message_count)
    ch.exchange_delete(t.n("never-declared"))
    t.ev("exchange.delete-ok")
    ch.queue_unbind(t.n("never-declared"), "amq.direct", "k")
    t.ev("queue.unbind-ok")


@scenario
def qos_per_consumer_and_global(t):
    conn = t.pika()
    pub = conn.channel()
    pub.confirm_delivery()
    got = {}

    def consumer(ch, name, q):
        got[name] = []
        ch.basic_consume(q, lambda c, m, p, b: got[name].append(b.decode()), consumer_tag=name)

    # global=false: the limit is per consumer (RabbitMQ's reading of the flag).
    q1 = declare(t, pub, t.n("per-consumer"))
    ch = conn.channel()
    ch.basic_qos(prefetch_count=2, global_qos=False)
    consumer(ch, "a1", q1)
    consumer(ch, "a2", q1)
    # global=true: one limit shared by the channel's consumers.
    q2 = declare(t, pub, t.n("per-channel"))
    ch2 = conn.channel()
    ch2.basic_qos(prefetch_count=3, global_qos=True)
    consumer(ch2, "b1", q2)
    consumer(ch2, "b2", q2)
    for i in range(8):
        pub.basic_publish("", q1, b"a%d" % i)
        pub.basic_publish("", q2, b"b%d" % i)
    t.pump(conn, lambda: len(got["a1"]) + len(got["a2"]) >= 4 and
           len(got["b1"]) + len(got["b2"]) >= 3)
    t.settle(conn, 0.3)
    t.ev("unacked per consumer", {k: len(v) for k, v in sorted(got.items())})
    t.ev("a", sorted(got["a1"] + got["a2"]), "b", sorted(got["b1"] + got["b2"]))


@scenario
def cancel_keeps_unacked_deliveries(t):
    conn = t.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    q = declare(t, ch, t.n("q"))
    for i in range(3):
        ch.basic_publish("", q, b"m%d" % i)
    tag, got = consume_n(t, conn, ch, q, 3)
    ch.basic_cancel(tag)
    t.ev("basic.cancel-ok", len(got))
    # Deliveries made before the cancel can still be acked and nacked.
    ch.basic_ack(got[0][0].delivery_tag)
    ch.basic_nack(got[1][0].delivery_tag, requeue=True)
    declare_when(t, conn, q, 1)
    ch.close()  # the third goes back too
    declare_when(t, conn, q, 2)
    drain_get(t, conn.channel(), q)


@scenario
def nack_multiple_requeues_in_order(t):
    conn = t.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    q = declare(t, ch, t.n("q"))
    for i in range(5):
        ch.basic_publish("", q, b"m%d" % i)
    tags = [ch.basic_get(q)[0].delivery_tag for _ in range(4)]
    ch.basic_nack(tags[2], multiple=True, requeue=True)  # m0..m2 back; m3 stays unacked
    declare_when(t, conn, q, 4)
    drain_get(t, ch, q)


@scenario
def exchange_auto_delete_after_last_unbind(t):
    conn = t.pika()
    ch = conn.channel()
    ex = t.n("ex")
    ch.exchange_declare(ex, "fanout", auto_delete=True)
    q1, q2 = declare(t, ch, t.n("q1")), declare(t, ch, t.n("q2"))
    ch.queue_bind(q1, ex)
    ch.queue_bind(q2, ex)
    ch.queue_unbind(q1, ex)
    t.expect_error(conn.channel().exchange_declare, ex, passive=True)
    ch.queue_unbind(q2, ex)
    t.expect_error(conn.channel().exchange_declare, ex, passive=True)
    # An auto-delete exchange that never had a binding stays.
    ex2 = t.n("never-bound")
    ch.exchange_declare(ex2, "fanout", auto_delete=True)
    t.expect_error(conn.channel().exchange_declare, ex2, passive=True)


@scenario
def duplicate_bindings_route_once(t):
    conn = t.pika()
    ch = conn.channel()
    ch.confirm_delivery()
    ex = t.n("ex")
    ch.exchange_declare(ex, "topic")
    q = declare(t, ch, t.n("q"))
    for key in ("a.b", "a.b", "a.*", "#"):
        ch.queue_bind(q, ex, key)
    ch.basic_publish(ex, "a.b", b"once")
    drain_get(t, ch, q)
    ch.queue_unbind(q, ex, "a.b")  # one unbind removes the binding declared twice
    ch.queue_unbind(q, ex, "#")
    ch.basic_publish(ex, "a.b", b"via a.*")
    ch.basic_publish(ex, "x.y", b"nowhere")
    drain_get(t, ch, q)


@scenario
def qos_change_applies_to_new_consumers(t):
    conn = t.pika()
    pub = conn.channel()
    pub.confirm_delivery()
    q1, q2 = declare(t, pub, t.n("old")), declare(t, pub, t.n("new"))
    for i in range(6):
        pub.basic_publish("", q1, b"o%d" % i)
        pub.basic_publish("", q2, b"n%d" % i)
    ch = conn.channel()
    got = {"old": [], "new": []}
    ch.basic_qos(prefetch_count=1)
    ch.basic_consume(q1, lambda c, m, p, b: got["old"].append(b), consumer_tag="old")
    t.pump(conn, lambda: len(got["old"]) >= 1)
    # In RabbitMQ a per-consumer (global=false) limit binds the consumers created after it.
    ch.basic_qos(prefetch_count=3)
    ch.basic_consume(q2, lambda c, m, p, b: got["new"].append(b), consumer_tag="new")
    t.pump(conn, lambda: len(got["new"]) >= 3)
    t.settle(conn, 0.3)
    t.ev("unacked", len(got["old"]), len(got["new"]))


@scenario
def killed_consumer_messages_redelivered(t):
    conn = t.pika()
    pub = conn.channel()
    pub.confirm_delivery()
    q = declare(t, pub, t.n("q"))
    for i in range(6):
        pub.basic_publish("", q, b"m%d" % i)
    victim = t.raw()
    victim.open_channel(1)
    victim.send_method(1, "basic.qos", prefetch_count=3)
    victim.read_method()
    victim.send_method(1, "basic.consume", queue=q, consumer_tag="victim")
    victim.read_method()
    taken = []
    for _ in range(3):
        deliver = victim.read_method()
        taken.append(victim.read_message()[1].decode())
    victim.send_method(1, "basic.ack", delivery_tag=deliver.args["delivery_tag"] - 2)
    t.ev("victim took", taken)
    # Killed without a close: the two unacked go back, ahead of what was never delivered.
    victim.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    victim.close()
    declare_when(t, conn, q, 5)
    drain_get(t, pub, q)
