#!/usr/bin/python3
"""amqp_channel_test.py: the AMQP 0-9-1 channel layer (plugins/amqp091/channel.c) through pika.

    amqp_channel_test.py WARREN_BIN PLUGIN_DIR [TEST...]   one warren for the run
    amqp_channel_test.py --port PORT [TEST...]             a broker on 127.0.0.1:PORT (a private
                                                           RabbitMQ 3.10, to check the tests)

Declare, bind, publish, consume and ack; basic.get; nack and reject; prefetch; mandatory
returns; publisher confirms; transactions; and the reply codes and texts of the channel's
errors, which must read as RabbitMQ's. Every name is unique to the run, every wait is a
condition with a deadline, and each test runs under a watchdog. Run under /usr/bin/python3.
"""
import os
import signal
import sys
import time
import traceback
import uuid

import pika
import pika.exceptions as pex

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Warren  # noqa: E402

TEST_BUDGET_S = 60
WAIT_S = 15
RUN = uuid.uuid4().hex[:8]


class Timeout(Exception):
    pass


def name(what):
    return "%s-%s" % (what, RUN)


def eq(got, want, what):
    if got != want:
        raise AssertionError("%s: expected %r, got %r" % (what, want, got))


def until(conn, cond, what, timeout=WAIT_S):
    """Lets pika read until cond() holds; fails after timeout."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        conn.process_data_events(time_limit=0.05)


def raises(exc_type, code, text, fn, *args, **kw):
    """fn(*args) must fail with exc_type carrying RabbitMQ's reply code and text."""
    try:
        fn(*args, **kw)
    except exc_type as e:
        eq((e.reply_code, e.reply_text), (code, text), "error of %s" % fn.__name__)
        return
    raise AssertionError("%s did not fail with %d %s" % (fn.__name__, code, text))


class Broker:
    def __init__(self, port):
        self.port = port
        self.left_open = []  # connections a test leaves for the broker's shutdown

    def connect(self):
        return pika.BlockingConnection(pika.ConnectionParameters(
            host="127.0.0.1", port=self.port, heartbeat=0, blocked_connection_timeout=None))


def ready_count(conn, queue):
    return conn.channel().queue_declare(queue, passive=True).method.message_count


# ---- the tests --------------------------------------------------------------------------

def test_publish_consume_ack(b):
    conn = b.connect()
    ch = conn.channel()
    ex, q = name("pca-x"), name("pca-q")
    ch.exchange_declare(ex, "direct", auto_delete=True)
    ok = ch.queue_declare(q, exclusive=True)
    eq((ok.method.queue, ok.method.message_count, ok.method.consumer_count), (q, 0, 0),
       "declare-ok")
    ch.queue_bind(q, ex, "k")
    for i in range(200):
        ch.basic_publish(ex, "k", b"m%d" % i,
                         pika.BasicProperties(headers={"n": i}, message_id="id%d" % i))
    got = []

    def on_message(c, method, props, body):
        got.append((method.delivery_tag, method.exchange, method.routing_key,
                    method.redelivered, props.headers, props.message_id, body))
        if len(got) % 10 == 0:
            c.basic_ack(method.delivery_tag, multiple=True)

    ch.basic_qos(prefetch_count=50)
    tag = ch.basic_consume(q, on_message, consumer_tag="ctag-1")
    eq(tag, "ctag-1", "consumer tag")
    until(conn, lambda: len(got) == 200, "200 deliveries")
    for i, d in enumerate(got):
        eq(d, (i + 1, ex, "k", False, {"n": i}, "id%d" % i, b"m%d" % i), "delivery %d" % i)
    ok = ch.queue_declare(q, passive=True)
    eq((ok.method.message_count, ok.method.consumer_count), (0, 1), "counts after acks")
    ch.basic_cancel(tag)
    conn.close()


def test_server_named_and_shortcuts(b):
    conn = b.connect()
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    assert q.startswith("amq.gen-") and len(q) == 30, q
    ch.queue_bind("", "amq.direct")  # "" and "": the last declared queue, by its name
    ch.basic_publish("amq.direct", q, b"via shortcut")
    method, _, body = ch.basic_get("", auto_ack=True)
    eq((method.routing_key, body), (q, b"via shortcut"), "get from the shortcut queue")
    raises(pex.ChannelClosedByBroker, 404, "NOT_FOUND - no previously declared queue",
           conn.channel().basic_get, "")
    conn.close()


def test_get_and_settle(b):
    conn = b.connect()
    ch = conn.channel()
    q = name("get-q")
    ch.queue_declare(q, exclusive=True)
    for i in range(3):
        ch.basic_publish("", q, b"g%d" % i)
    method, _, body = ch.basic_get(q)
    eq((method.delivery_tag, method.redelivered, method.exchange, method.routing_key,
        method.message_count, body), (1, False, "", q, 2, b"g0"), "first get-ok")
    ch.basic_nack(1, requeue=True)
    method, _, body = ch.basic_get(q)
    eq((method.delivery_tag, method.redelivered, body), (2, True, b"g0"), "requeued")
    ch.basic_reject(2, requeue=False)
    method, _, body = ch.basic_get(q, auto_ack=True)
    eq((method.delivery_tag, method.message_count, body), (3, 1, b"g1"), "no-ack get")
    method, _, body = ch.basic_get(q)
    eq((method.delivery_tag, body), (4, b"g2"), "last get")
    eq(ch.basic_get(q), (None, None, None), "get-empty")
    ch.basic_ack(4)
    raises(pex.ChannelClosedByBroker, 406, "PRECONDITION_FAILED - unknown delivery tag 4",
           lambda: (ch.basic_ack(4), ch.queue_declare(q, passive=True)))
    eq(ready_count(conn, q), 0, "ready after the acks")
    conn.close()


def test_multiple_ack_and_recover(b):
    conn = b.connect()
    ch = conn.channel()
    q = name("mult-q")
    ch.queue_declare(q, exclusive=True)
    for i in range(6):
        ch.basic_publish("", q, b"%d" % i)
    tags = [ch.basic_get(q)[0].delivery_tag for _ in range(6)]
    eq(tags, [1, 2, 3, 4, 5, 6], "tags")
    ch.basic_ack(2)
    ch.basic_nack(4, multiple=True, requeue=False)  # 1, 3 and 4 are dropped
    ch.basic_recover(requeue=True)                   # 5 and 6 come back
    eq(ready_count(conn, q), 2, "ready after recover")
    method, _, body = ch.basic_get(q)
    eq((method.delivery_tag, method.redelivered, body), (7, True, b"4"), "recovered")
    ch.basic_ack(0, multiple=True)
    raises(pex.ConnectionClosedByBroker, 540, "NOT_IMPLEMENTED - requeue=false",
           ch.basic_recover, requeue=False)


def test_out_of_order_acks(b):
    conn = b.connect()
    ch = conn.channel()
    q = name("ooo-q")
    ch.queue_declare(q, exclusive=True)
    for i in range(300):
        ch.basic_publish("", q, b"%d" % i)
    tags = [ch.basic_get(q)[0].delivery_tag for _ in range(300)]
    for tag in tags[1:250]:          # the oldest stays unacked while later ones go
        ch.basic_ack(tag)
    ch.basic_ack(tags[0])
    ch.basic_nack(tags[260], multiple=True, requeue=True)
    eq(ready_count(conn, q), 11, "requeued by the multiple nack")
    raises(pex.ChannelClosedByBroker, 406, "PRECONDITION_FAILED - unknown delivery tag 101",
           lambda: (ch.basic_ack(tags[100]), ch.queue_declare(q, passive=True)))
    # Acks of deliveries whose queue was deleted meanwhile are accepted.
    ch = conn.channel()
    q = name("gone-q")
    ch.queue_declare(q)
    for i in range(5):
        ch.basic_publish("", q, b"%d" % i)
    got = []
    ch.basic_consume(q, lambda c, m, p, body: got.append(m.delivery_tag))
    until(conn, lambda: len(got) == 5, "5 deliveries")
    conn.channel().queue_delete(q)
    ch.basic_ack(2)
    ch.basic_nack(3, requeue=True)
    ch.basic_ack(5, multiple=True)
    ch.basic_qos(prefetch_count=1)  # a round trip: the channel is still open
    conn.close()


def test_prefetch(b):
    conn = b.connect()
    ch = conn.channel()
    q1, q2 = name("pf-q1"), name("pf-q2")
    for q in (q1, q2):
        ch.queue_declare(q, exclusive=True)
        for i in range(10):
            ch.basic_publish("", q, b"%d" % i)
    got = []
    ch.basic_qos(prefetch_count=3)
    ch.basic_consume(q1, lambda c, m, p, body: got.append(m.delivery_tag))
    until(conn, lambda: len(got) == 3, "3 deliveries")
    eq(ready_count(conn, q1), 7, "ready with prefetch 3")
    ch.basic_ack(got[0])
    until(conn, lambda: len(got) == 4, "a 4th delivery after an ack")
    # A channel-wide limit across both consumers.
    ch2 = conn.channel()
    got2 = []
    ch2.basic_qos(prefetch_count=4, global_qos=True)
    ch2.basic_consume(q2, lambda c, m, p, body: got2.append(m.delivery_tag))
    ch2.basic_consume(q1, lambda c, m, p, body: got2.append(m.delivery_tag))
    until(conn, lambda: len(got2) == 4, "4 deliveries on the limited channel")
    eq(ready_count(conn, q2) + ready_count(conn, q1), 10 + 6 - 4, "ready with global 4")
    ch2.basic_ack(0, multiple=True)
    until(conn, lambda: len(got2) == 8, "4 more after the acks")
    conn.close()


def test_mandatory_return(b):
    conn = b.connect()
    ch = conn.channel()
    ex = name("ret-x")
    ch.exchange_declare(ex, "fanout", auto_delete=True)
    returned = []
    ch.add_on_return_callback(lambda c, m, p, body: returned.append(
        (m.reply_code, m.reply_text, m.exchange, m.routing_key, p.content_type, body)))
    ch.basic_publish(ex, "rk", b"lost", pika.BasicProperties(content_type="text/plain"),
                     mandatory=True)
    ch.basic_publish(ex, "rk", b"dropped quietly")
    until(conn, lambda: returned, "basic.return")
    eq(returned, [(312, "NO_ROUTE", ex, "rk", "text/plain", b"lost")], "returned")
    conn.close()


def test_confirms(b):
    conn = b.connect()
    ch = conn.channel()
    ch.confirm_delivery()
    q = name("conf-q")
    ch.queue_declare(q, exclusive=True)
    for i in range(50):
        ch.basic_publish("", q, b"%d" % i)  # pika waits for each one's ack
    eq(ready_count(conn, q), 50, "confirmed messages")
    try:
        ch.basic_publish("amq.fanout", "", b"x", mandatory=True)
        raise AssertionError("an unroutable mandatory publish was confirmed without a return")
    except pex.UnroutableError as e:
        eq(e.messages[0].method.reply_code, 312, "return code")
    full = name("conf-full")
    ch.queue_declare(full, exclusive=True,
                     arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    ch.basic_publish("", full, b"fits")
    try:
        ch.basic_publish("", full, b"refused")
        raise AssertionError("a refused publish was acked")
    except pex.NackError:
        pass
    eq(ready_count(conn, full), 1, "the full queue")
    # Without waiting between publishes: acks and nacks in one batch, each for its own seq.
    ch2 = conn.channel()
    confirms = {}

    def on_confirm(frame):
        m = frame.method
        for seq in range(1, m.delivery_tag + 1) if m.multiple else [m.delivery_tag]:
            confirms.setdefault(seq, type(m).__name__)

    ch2._impl.confirm_delivery(on_confirm)
    ch2.basic_qos()  # a round trip: confirm.select-ok is in
    for i in range(20):
        ch2._impl.basic_publish("", full if i % 3 == 0 else q, b"%d" % i)
    until(conn, lambda: len(confirms) == 20, "20 confirms")
    eq("".join("A" if confirms[s] == "Ack" else "N" for s in range(1, 21)),
       "NAANAANAANAANAANAANA", "acks and nacks by sequence number")
    raises(pex.ChannelClosedByBroker, 406,
           "PRECONDITION_FAILED - cannot switch from confirm to tx mode", ch.tx_select)
    conn.close()


def test_transactions(b):
    conn = b.connect()
    ch = conn.channel()
    q = name("tx-q")
    ch.queue_declare(q, exclusive=True)
    ch.tx_select()
    ch.basic_publish("", q, b"rolled back")
    ch.tx_rollback()
    eq(ready_count(conn, q), 0, "after rollback")
    ch.basic_publish("", q, b"committed")
    eq(ready_count(conn, q), 0, "before commit")
    ch.tx_commit()
    eq(ready_count(conn, q), 1, "after commit")
    method, _, body = ch.basic_get(q)
    ch.basic_ack(method.delivery_tag)
    ch.tx_rollback()                  # the ack is undone: the delivery is unacked again
    ch.basic_ack(method.delivery_tag)
    ch.tx_commit()
    ch.close()
    eq(ready_count(conn, q), 0, "the committed ack held after the channel closed")
    raises(pex.ChannelClosedByBroker, 406,
           "PRECONDITION_FAILED - channel is not transactional", conn.channel().tx_commit)
    ch = conn.channel()
    ch.tx_select()
    raises(pex.ChannelClosedByBroker, 406,
           "PRECONDITION_FAILED - cannot switch from tx to confirm mode", ch.confirm_delivery)
    conn.close()


def test_direct_reply_to(b):
    conn = b.connect()
    client = conn.channel()
    replies = []
    client.basic_consume("amq.rabbitmq.reply-to", auto_ack=True, consumer_tag="replies",
                         on_message_callback=lambda c, m, p, body: replies.append(
                             (m.consumer_tag, m.exchange, body)))
    q = name("rpc-q")
    client.queue_declare(q, exclusive=True)
    client.basic_publish("", q, b"question",
                         pika.BasicProperties(reply_to="amq.rabbitmq.reply-to"))
    server = conn.channel()
    _, props, _ = server.basic_get(q, auto_ack=True)
    assert props.reply_to.startswith("amq.rabbitmq.reply-to."), props.reply_to
    ok = server.queue_declare(props.reply_to, passive=True).method
    eq((ok.queue, ok.message_count, ok.consumer_count), (props.reply_to, 0, 1), "the route")
    server.basic_publish("", props.reply_to, b"answer")
    until(conn, lambda: replies, "the reply")
    eq(replies, [("replies", "", b"answer")], "replies")
    raises(pex.ChannelClosedByBroker, 406,
           "PRECONDITION_FAILED - reply consumer cannot acknowledge",
           conn.channel().basic_consume, "amq.rabbitmq.reply-to", lambda *a: None)
    client.basic_cancel("replies")
    raises(pex.ChannelClosedByBroker, 404,
           "NOT_FOUND - no queue '%s' in vhost '/'" % props.reply_to,
           conn.channel().queue_declare, props.reply_to, passive=True)
    raises(pex.ChannelClosedByBroker, 406,
           "PRECONDITION_FAILED - fast reply consumer does not exist",
           lambda: (client.basic_publish("", q, b"q2", pika.BasicProperties(
               reply_to="amq.rabbitmq.reply-to")), client.queue_declare(q, passive=True)))
    conn.close()


def test_exchange_to_exchange(b):
    conn = b.connect()
    ch = conn.channel()
    src, dst, q = name("e2e-src"), name("e2e-dst"), name("e2e-q")
    ch.exchange_declare(src, "topic", auto_delete=True)
    ch.exchange_declare(dst, "fanout", auto_delete=True)
    ch.exchange_bind(dst, src, "a.*")
    ch.queue_declare(q, exclusive=True)
    ch.queue_bind(q, dst)
    ch.basic_publish(src, "a.b", b"in")
    ch.basic_publish(src, "x.y", b"out")
    method, _, body = ch.basic_get(q, auto_ack=True)
    eq((method.exchange, method.routing_key, body), (src, "a.b", b"in"), "through e2e")
    eq(ch.basic_get(q), (None, None, None), "the unmatched one")
    ch.exchange_unbind(dst, src, "a.*")
    ch.exchange_unbind(dst, name("nope"), "a.*")  # missing ends: unbind-ok as RabbitMQ
    ch.queue_unbind(name("nope"), dst)
    raises(pex.ChannelClosedByBroker, 404,
           "NOT_FOUND - no exchange '%s' in vhost '/'" % name("nope"),
           conn.channel().exchange_bind, dst, name("nope"))
    conn.close()


def test_cancel_notification(b):
    conn = b.connect()
    ch = conn.channel()
    q = name("cn-q")
    ch.queue_declare(q)
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
    ch.basic_consume(q, lambda *a: None, consumer_tag="watcher")
    other = conn.channel()
    eq(other.queue_delete(q).method.message_count, 0, "delete-ok")
    until(conn, lambda: cancelled, "basic.cancel from the broker")
    eq(cancelled, ["watcher"], "cancelled consumer")
    eq(other.queue_delete(q).method.message_count, 0, "deleting a missing queue")
    conn.close()


def test_channel_errors(b):
    conn = b.connect()
    vh = "vhost '/'"
    q = name("err-q")
    ch = conn.channel()
    ch.queue_declare(q, auto_delete=False, arguments={"x-message-ttl": 1000})
    ch.basic_publish("", q, b"keep")
    cases = [
        (404, "NOT_FOUND - no queue '%s' in %s" % (name("nope"), vh),
         lambda c: c.queue_declare(name("nope"), passive=True)),
        (406, "PRECONDITION_FAILED - inequivalent arg 'durable' for queue '%s' in %s: "
              "received 'true' but current is 'false'" % (q, vh),
         lambda c: c.queue_declare(q, durable=True, arguments={"x-message-ttl": 1000})),
        (406, "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue '%s' in %s: "
              "received '2000' but current is '1000'" % (q, vh),
         lambda c: c.queue_declare(q, arguments={"x-message-ttl": 2000})),
        (406, "PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue '%s' in %s: "
              "received none but current is the value '1000' of type 'signedint'" % (q, vh),
         lambda c: c.queue_declare(q)),
        (406, "PRECONDITION_FAILED - inequivalent arg 'auto_delete' for queue '%s' in %s: "
              "received 'true' but current is 'false'" % (q, vh),
         lambda c: c.queue_declare(q, auto_delete=True, arguments={"x-message-ttl": 1000})),
        (406, "PRECONDITION_FAILED - invalid arg 'x-message-ttl' for queue '%s' in %s: "
              "{value_negative,-1}" % (name("bad"), vh),
         lambda c: c.queue_declare(name("bad"), arguments={"x-message-ttl": -1})),
        (406, "PRECONDITION_FAILED - invalid arg 'x-overflow' for queue '%s' in %s: "
              "invalid_overflow" % (name("bad"), vh),
         lambda c: c.queue_declare(name("bad"), arguments={"x-overflow": "drop-tail"})),
        (406, "PRECONDITION_FAILED - invalid arg 'x-expires' for queue '%s' in %s: "
              '"expected integer, got longstr"' % (name("bad"), vh),
         lambda c: c.queue_declare(name("bad"), arguments={"x-expires": "soon"})),
        (403, "ACCESS_REFUSED - queue name 'amq.%s' contains reserved prefix 'amq.*'" % q,
         lambda c: c.queue_declare("amq." + q)),
        (406, "PRECONDITION_FAILED - queue '%s' in %s not empty" % (q, vh),
         lambda c: c.queue_delete(q, if_empty=True)),
        (403, "ACCESS_REFUSED - operation not permitted on the default exchange",
         lambda c: c.queue_bind(q, "")),
        (404, "NOT_FOUND - no exchange '%s' in %s" % (name("nope"), vh),
         lambda c: c.queue_bind(q, name("nope"))),
        (406, "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'amq.direct' in %s: "
              "received 'fanout' but current is 'direct'" % vh,
         lambda c: c.exchange_declare("amq.direct", "fanout", durable=True)),
        (403, "ACCESS_REFUSED - exchange name 'amq.%s' contains reserved prefix 'amq.*'" % q,
         lambda c: c.exchange_declare("amq." + q, "direct")),
        (403, "ACCESS_REFUSED - deletion of system exchange 'amq.topic' in %s not allowed" % vh,
         lambda c: c.exchange_delete("amq.topic")),
        (404, "NOT_FOUND - no exchange '%s' in %s" % (name("nope"), vh),
         lambda c: (c.basic_publish(name("nope"), "", b"x"), c.queue_declare(q, passive=True))),
    ]
    for code, text, fn in cases:
        raises(pex.ChannelClosedByBroker, code, text, fn, conn.channel())
    eq(ready_count(conn, q), 1, "the queue survived the errors")
    conn.channel().queue_delete(q)
    conn.close()


def test_connection_errors(b):
    owner = b.connect()
    q = name("excl-q")
    owner.channel().queue_declare(q, exclusive=True)
    other = b.connect()
    raises(pex.ChannelClosedByBroker, 405,
           "RESOURCE_LOCKED - cannot obtain exclusive access to locked queue '%s' in vhost "
           "'/'. It could be originally declared on another connection or the exclusive "
           "property value does not match that of the original declaration." % q,
           other.channel().basic_get, q)
    def consume_twice(c):
        # pika refuses a duplicate tag itself, so the second basic.consume goes out raw.
        c.basic_consume(q, lambda *a: None, consumer_tag="dup")
        c._impl._send_method(pika.spec.Basic.Consume(queue=q, consumer_tag="dup"))
        c.queue_declare(q, passive=True)

    cases = [
        (503, "COMMAND_INVALID - unknown exchange type 'nope'",
         lambda c: c.exchange_declare(name("x"), "nope")),
        (530, "NOT_ALLOWED - attempt to reuse consumer tag 'dup'", consume_twice),
        (540, "NOT_IMPLEMENTED - prefetch_size!=0 (1)",
         lambda c: c.basic_qos(prefetch_size=1)),
    ]
    for code, text, fn in cases:
        conn = owner if code == 530 else b.connect()
        raises(pex.ConnectionClosedByBroker, code, text, fn, conn.channel())
    other.close()


def test_zz_state_left_for_shutdown(b):
    """Runs last and leaves its connection open: the broker's SIGTERM must tear down unacked
    deliveries, a consumer, an open transaction and a confirm channel, and still exit 0
    without a leak (the harness checks the exit status)."""
    conn = b.connect()
    ch = conn.channel()
    q = name("left-q")
    ch.queue_declare(q)
    for i in range(20):
        ch.basic_publish("", q, b"%d" % i)
    got = []
    ch.basic_qos(prefetch_count=5)
    ch.basic_consume(q, lambda c, m, p, body: got.append(m.delivery_tag))
    until(conn, lambda: len(got) == 5, "5 unacked deliveries")
    tx = conn.channel()
    tx.tx_select()
    method, _, _ = tx.basic_get(q)
    tx.basic_ack(method.delivery_tag)
    tx.basic_publish("", q, b"staged")
    confirm = conn.channel()
    confirm.confirm_delivery()
    confirm.basic_publish("", q, b"confirmed")
    b.left_open.append(conn)


TESTS = [(n[5:], f) for n, f in sorted(globals().items()) if n.startswith("test_")]


def on_alarm(signo, frame):
    raise Timeout("the test took longer than %d s" % TEST_BUDGET_S)


def run(broker, only):
    failed = 0
    signal.signal(signal.SIGALRM, on_alarm)
    for tname, fn in TESTS:
        if only and tname not in only:
            continue
        signal.alarm(TEST_BUDGET_S)
        try:
            fn(broker)
            print("PASS", tname, flush=True)
        except Exception:
            failed += 1
            print("FAIL", tname, flush=True)
            traceback.print_exc()
        finally:
            signal.alarm(0)
    return failed


def main(argv):
    if len(argv) >= 3 and argv[1] == "--port":
        return 1 if run(Broker(int(argv[2])), argv[3:]) else 0
    if len(argv) < 3:
        print(__doc__)
        return 2
    with Warren(argv[1], argv[2]) as w:
        failed = run(Broker(w.port), argv[3:])
        if failed:
            print(w.log()[-4000:])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
