#!/usr/bin/python3
"""amqp_pika_test.py: warren's AMQP 0-9-1 transport as pika users see it.

    amqp_pika_test.py WARREN_BIN PLUGIN_DIR [TEST...]   each test against a fresh warren
    amqp_pika_test.py --port PORT [TEST...]             against a broker already listening on
                                                        127.0.0.1:PORT (a private RabbitMQ, to
                                                        check the tests themselves)
    amqp_pika_test.py --list                            the test names

Each test is a function test_*(t) that asserts what a client sees. Against warren every test
gets its own broker, started with the config the test asks for and stopped with SIGTERM after
it; a broker that then exits non-zero (a crash, a sanitizer finding) fails the test. Against
another broker, the tests that need warren's config or process are skipped and every name a
test declares is unique, so runs do not collide.

Nothing waits on a sleep: every wait is a condition with a deadline, and every test also runs
under a watchdog (SIGALRM) so that a client call blocked on an answer that never comes fails
with its traceback instead of hanging. Must run under /usr/bin/python3 (Debian's pika).
"""
import datetime
import decimal
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import traceback

import pika
import pika.exceptions as pex

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Warren  # noqa: E402

# A sanitizer build may report without failing the exit status (UBSan without halt_on_error).
SANITIZER_REPORT = re.compile(r"ERROR: (Address|Leak)Sanitizer|runtime error:.*")
TEST_BUDGET_S = 45      # the watchdog: no test comes near it when it passes, even under ASan
WAIT_S = 15             # the deadline of an ordinary wait for the broker to do something


class TestTimeout(Exception):
    pass


# ---- assertions that say what was expected and what came ------------------------------------

def short(v, limit=200):
    r = repr(v)
    return r if len(r) <= limit else "%s... (%d chars)" % (r[:limit], len(r))


def eq(got, want, what):
    if got != want:
        raise AssertionError("%s: expected %s, got %s" % (what, short(want), short(got)))


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def eq_bytes(got, want, what):
    """Compares two bodies, naming the first differing offset instead of printing a MiB."""
    if got == want:
        return
    if got is None or len(got) != len(want):
        raise AssertionError("%s: expected %d bytes, got %s" %
                             (what, len(want), "nothing" if got is None else len(got)))
    at = next(i for i in range(len(want)) if got[i] != want[i])
    raise AssertionError("%s: %d bytes as expected but they differ from offset %d: expected %s,"
                         " got %s" % (what, len(want), at, short(want[at:at + 16]),
                                      short(got[at:at + 16])))


def expect_channel_error(code, fn, what):
    """Runs fn(), which must end in the broker closing the channel with code; returns the
    exception (its reply_text is the server's reason)."""
    try:
        fn()
    except pex.ChannelClosedByBroker as e:
        eq(e.reply_code, code, "%s: channel.close reply code (reason %r)" % (what, e.reply_text))
        return e
    raise AssertionError("%s: expected the broker to close the channel with %d, it did not"
                         % (what, code))


# ---- waiting ---------------------------------------------------------------------------------

def pump(conn, cond, what, timeout=WAIT_S):
    """Lets conn dispatch what arrives until cond() holds; fails after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))
        conn.process_data_events(time_limit=min(left, 0.1))


def poll(fn, what, timeout=WAIT_S):
    """Calls fn() until it returns something other than None; fails after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v is not None:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(0.01)


def depth(ch, q):
    """Ready messages in q (queue.declare-ok's message_count)."""
    return ch.queue_declare(q, passive=True).method.message_count


# ---- the broker under test -------------------------------------------------------------------

def warren_only(broker_yaml=""):
    """Marks a test that needs warren itself: a config of its own, or its process."""
    def mark(fn):
        fn.warren_only = True
        fn.broker_yaml = broker_yaml
        return fn
    return mark


class Target:
    """What a test talks to: a port, and the Warren when the broker is warren."""

    def __init__(self, test_name, port, warren=None):
        self.port = port
        self.warren = warren
        self.prefix = "%s-%06x" % (test_name[len("test_"):], random.getrandbits(24))

    def n(self, what):
        """A name unique to this run of this test."""
        return "%s.%s" % (self.prefix, what)

    def params(self, **kw):
        kw.setdefault("credentials", pika.PlainCredentials("guest", "guest"))
        kw.setdefault("connection_attempts", 1)
        kw.setdefault("socket_timeout", 10)
        kw.setdefault("blocked_connection_timeout", 60)
        return pika.ConnectionParameters(host="127.0.0.1", port=self.port, **kw)

    def connect(self, **kw):
        return pika.BlockingConnection(self.params(**kw))


def confirmed(conn):
    """A new channel in confirm mode: each publish returns once the broker has taken it, so
    what the test checks next (a depth, a basic.get) sees it on any broker."""
    ch = conn.channel()
    ch.confirm_delivery()
    return ch


def declare(ch, t, what, **kw):
    return ch.queue_declare(t.n(what), **kw).method.queue


def body_of(size, seed):
    return random.Random(seed).randbytes(size)


# ---- publish and consume ---------------------------------------------------------------------

def test_publish_consume_1000_in_order(t):
    with t.connect() as conn:
        ch = conn.channel()
        q = declare(ch, t, "q")
        want = [b"message %04d " % i + b"x" * (i % 37) for i in range(1000)]
        for b in want:
            ch.basic_publish("", q, b)
        got = []

        def on_message(ch_, m, props, body):
            got.append((body, m.redelivered))
            ch_.basic_ack(m.delivery_tag)
        ch.basic_consume(q, on_message)
        pump(conn, lambda: len(got) >= 1000, "1000 deliveries (have %d)" % len(got))
        eq(len(got), 1000, "deliveries")
        for i, (b, redelivered) in enumerate(got):
            eq(b, want[i], "body of delivery %d" % i)
            eq(redelivered, False, "redelivered flag of delivery %d" % i)
        eq(depth(ch, q), 0, "ready messages left after consuming all")


def test_message_sizes(t):
    # 0 B, 100 B, bodies that fill a frame exactly and by one byte more (frame_max 131072
    # leaves 131064 for a body frame's payload), and 1 MiB spanning many frames.
    sizes = [0, 1, 100, 131064, 131065, 1 << 20, (1 << 20) + 7]
    with t.connect() as conn:
        ch = confirmed(conn)
        q = declare(ch, t, "q")
        for size in sizes:
            ch.basic_publish("", q, body_of(size, size))
        for size in sizes:
            m, props, body = ch.basic_get(q, auto_ack=True)
            check(m is not None, "basic.get of the %d B message: the queue was empty" % size)
            eq_bytes(body, body_of(size, size), "the %d B message" % size)
        # The same through a consumer, whose deliveries take the other path out.
        for size in sizes:
            ch.basic_publish("", q, body_of(size, size + 1))
        got = []
        ch.basic_consume(q, lambda c, m, p, b: got.append(b), auto_ack=True)
        pump(conn, lambda: len(got) >= len(sizes), "%d deliveries" % len(sizes))
        for size, body in zip(sizes, got):
            eq_bytes(body, body_of(size, size + 1), "the %d B delivery" % size)


def test_basic_get_and_get_empty(t):
    with t.connect() as conn:
        ch = confirmed(conn)
        q = declare(ch, t, "q")
        eq(ch.basic_get(q), (None, None, None), "basic.get on a new queue (get-empty)")
        for b in (b"one", b"two", b"three"):
            ch.basic_publish("", q, b)
        for left, b in ((2, b"one"), (1, b"two"), (0, b"three")):
            m, props, body = ch.basic_get(q)
            check(m is not None, "basic.get of %r: got get-empty" % b)
            eq(body, b, "body")
            eq(m.message_count, left, "get-ok message_count after taking %r" % b)
            eq(m.redelivered, False, "redelivered of %r" % b)
            eq(m.exchange, "", "get-ok exchange")
            eq(m.routing_key, q, "get-ok routing key")
            ch.basic_ack(m.delivery_tag)
        eq(ch.basic_get(q), (None, None, None), "basic.get on the drained queue")


# ---- publisher confirms and returns ----------------------------------------------------------

def test_publisher_confirms(t):
    with t.connect() as conn:
        ch = confirmed(conn)
        q = declare(ch, t, "q")
        # The blocking channel waits for each publish's basic.ack and raises on a nack.
        for i in range(300):
            ch.basic_publish("", q, b"confirmed %d" % i)
        eq(depth(ch, q), 300, "messages in the queue after 300 confirmed publishes")
        # Unroutable but not mandatory: confirmed, and dropped.
        ch.basic_publish("amq.direct", t.n("nobody-binds-this"), b"dropped")
        # Unroutable and mandatory: basic.return (312 NO_ROUTE) before the ack.
        try:
            ch.basic_publish("amq.direct", t.n("nobody-binds-this"), b"come back",
                             properties=pika.BasicProperties(headers={"h": "v"}),
                             mandatory=True)
        except pex.UnroutableError as e:
            eq(len(e.messages), 1, "returned messages")
            ret = e.messages[0]
            eq(ret.method.reply_code, 312, "basic.return reply code")
            eq(ret.method.reply_text, "NO_ROUTE", "basic.return reply text")
            eq(ret.method.exchange, "amq.direct", "basic.return exchange")
            eq(ret.method.routing_key, t.n("nobody-binds-this"), "basic.return routing key")
            eq(ret.body, b"come back", "returned body")
            eq(ret.properties.headers, {"h": "v"}, "returned headers")
        else:
            raise AssertionError("a mandatory unroutable publish was confirmed without "
                                 "basic.return: expected pika's UnroutableError")
        # The channel is still usable and routable publishes still go through.
        ch.basic_publish("", q, b"after the return", mandatory=True)
        eq(depth(ch, q), 301, "messages in the queue after the return")


def test_mandatory_return_without_confirms(t):
    with t.connect() as conn:
        ch = conn.channel()
        returned = []
        ch.add_on_return_callback(lambda c, m, p, b: returned.append((m, p, b)))
        ch.basic_publish("", t.n("no-such-queue"), b"bounce", mandatory=True,
                         properties=pika.BasicProperties(content_type="text/plain",
                                                         correlation_id="c-1"))
        pump(conn, lambda: returned, "basic.return of a mandatory unroutable publish")
        m, props, body = returned[0]
        eq(m.reply_code, 312, "basic.return reply code")
        eq(m.reply_text, "NO_ROUTE", "basic.return reply text")
        eq(m.routing_key, t.n("no-such-queue"), "basic.return routing key")
        eq(body, b"bounce", "returned body")
        eq((props.content_type, props.correlation_id), ("text/plain", "c-1"),
           "returned properties")


# ---- acknowledgements ------------------------------------------------------------------------

def test_nack_requeue_redelivers(t):
    with t.connect() as conn:
        ch = confirmed(conn)
        q = declare(ch, t, "q")
        ch.basic_publish("", q, b"again")
        m, _, body = ch.basic_get(q)
        eq((body, m.redelivered), (b"again", False), "first get (body, redelivered)")
        ch.basic_nack(m.delivery_tag, requeue=True)
        m, _, body = ch.basic_get(q)
        check(m is not None, "after basic.nack(requeue) the queue was empty")
        eq((body, m.redelivered), (b"again", True), "get after nack (body, redelivered)")
        ch.basic_reject(m.delivery_tag, requeue=True)
        m, _, body = ch.basic_get(q)
        check(m is not None, "after basic.reject(requeue) the queue was empty")
        eq((body, m.redelivered), (b"again", True), "get after reject (body, redelivered)")
        ch.basic_ack(m.delivery_tag)

        # A consumer: nack several at once with multiple, all come back redelivered in order.
        for i in range(5):
            ch.basic_publish("", q, b"m%d" % i)
        got = []
        tag = ch.basic_consume(q, lambda c, m_, p, b: got.append((m_, b)))
        pump(conn, lambda: len(got) >= 5, "5 deliveries")
        ch.basic_cancel(tag)
        ch.basic_nack(got[4][0].delivery_tag, multiple=True, requeue=True)
        again = []
        for i in range(5):
            m, _, body = ch.basic_get(q, auto_ack=True)
            check(m is not None, "get %d after nack(multiple): the queue was empty" % i)
            again.append((body, m.redelivered))
        eq(again, [(b"m%d" % i, True) for i in range(5)], "(body, redelivered) after nack")

        # Unacked deliveries of a closed channel go back too.
        ch.basic_publish("", q, b"orphan")
        ch2 = conn.channel()
        m, _, _ = ch2.basic_get(q)
        check(m is not None, "basic.get of 'orphan' found the queue empty")
        ch2.close()
        m, _, body = ch.basic_get(q, auto_ack=True)
        check(m is not None, "the unacked message of a closed channel was not requeued")
        eq((body, m.redelivered), (b"orphan", True), "after its channel closed")


def test_reject_without_requeue_drops(t):
    with t.connect() as conn:
        ch = confirmed(conn)
        q = declare(ch, t, "q")
        ch.basic_publish("", q, b"gone")
        ch.basic_publish("", q, b"gone too")
        m, _, _ = ch.basic_get(q)
        ch.basic_reject(m.delivery_tag, requeue=False)
        m, _, _ = ch.basic_get(q)
        ch.basic_nack(m.delivery_tag, requeue=False)
        eq(ch.basic_get(q), (None, None, None), "basic.get after reject/nack without requeue")
        eq(depth(ch, q), 0, "ready messages")


def test_prefetch_limits_unacked(t):
    limit, total = 5, 40
    with t.connect() as conn:
        ch = confirmed(conn)
        q = declare(ch, t, "q")
        for i in range(total):
            ch.basic_publish("", q, b"%d" % i)
        ch.basic_qos(prefetch_count=limit)
        unacked, seen, worst = [], [], [0]

        def on_message(c, m, p, body):
            unacked.append(m.delivery_tag)
            seen.append(body)
            worst[0] = max(worst[0], len(unacked))
        ch.basic_consume(q, on_message)
        rounds = 0
        while len(seen) < total and rounds < total:
            rounds += 1
            want = min(limit, total - len(seen) + len(unacked))
            pump(conn, lambda: len(unacked) >= want, "%d unacked deliveries" % want)
            # A round trip on the channel: whatever the broker sent before declare-ok is here.
            ready = depth(ch, q)
            conn.process_data_events(time_limit=0)
            check(worst[0] <= limit, "the consumer held %d unacked messages with "
                  "prefetch_count=%d" % (worst[0], limit))
            eq(ready, total - len(seen), "ready messages while %d are unacked" % len(unacked))
            ch.basic_ack(unacked[-1], multiple=True)
            unacked.clear()
        eq(seen, [b"%d" % i for i in range(total)], "bodies delivered")
        eq(depth(ch, q), 0, "ready messages at the end")


# ---- routing ---------------------------------------------------------------------------------

def test_exchange_to_exchange_bindings(t):
    with t.connect() as conn:
        ch = confirmed(conn)
        src, mid = t.n("src"), t.n("mid")
        ch.exchange_declare(src, "topic")
        ch.exchange_declare(mid, "fanout")
        q = declare(ch, t, "q")
        ch.queue_bind(q, mid)
        ch.exchange_bind(destination=mid, source=src, routing_key="a.*")
        ch.basic_publish(src, "a.b", b"through", mandatory=True)
        try:
            ch.basic_publish(src, "b.c", b"not bound", mandatory=True)
            raise AssertionError("'b.c' does not match the binding key 'a.*' but was routed")
        except pex.UnroutableError:
            pass
        m, _, body = ch.basic_get(q, auto_ack=True)
        eq(body if m else None, b"through", "the message routed src -> mid -> q")
        eq(m.exchange, src, "exchange of a message routed through two exchanges")
        eq(ch.basic_get(q), (None, None, None), "what else reached the queue")

        # A cycle (src -> mid -> src) delivers once and does not loop.
        ch.exchange_bind(destination=src, source=mid, routing_key="")
        ch.basic_publish(src, "a.x", b"once", mandatory=True)
        eq(depth(ch, q), 1, "copies in the queue of one message published into a cycle")
        ch.queue_purge(q)

        ch.exchange_unbind(destination=mid, source=src, routing_key="a.*")
        try:
            ch.basic_publish(src, "a.b", b"after unbind", mandatory=True)
            raise AssertionError("exchange.unbind src -> mid left the route in place")
        except pex.UnroutableError:
            pass
        eq(depth(ch, q), 0, "messages in the queue after the unbind")


def test_headers_exchange(t):
    with t.connect() as conn:
        ch = confirmed(conn)
        ex = t.n("hdr")
        ch.exchange_declare(ex, "headers")
        q_all, q_any = declare(ch, t, "all"), declare(ch, t, "any")
        ch.queue_bind(q_all, ex, arguments={"x-match": "all", "a": 1, "b": "x"})
        ch.queue_bind(q_any, ex, arguments={"x-match": "any", "a": 1, "b": "x"})
        cases = [  # headers, reaches q_all, reaches q_any
            ({"a": 1, "b": "x"}, True, True),
            ({"a": 1, "b": "x", "c": "extra"}, True, True),
            ({"a": 1}, False, True),
            ({"b": "x"}, False, True),
            ({"a": 2, "b": "y"}, False, False),
            ({"a": "1", "b": "x"}, False, True),   # "1" is not 1: types matter
            ({}, False, False),
        ]
        for i, (headers, _, _) in enumerate(cases):
            ch.basic_publish(ex, "ignored", b"%d" % i,
                             properties=pika.BasicProperties(headers=headers))
        for q, col, name in ((q_all, 1, "x-match all"), (q_any, 2, "x-match any")):
            got = []
            for _ in range(len(cases) + 1):
                m, _, body = ch.basic_get(q, auto_ack=True)
                if m is None:
                    break
                got.append(int(body))
            want = [i for i, c in enumerate(cases) if c[col]]
            eq(got, want, "cases routed by %s (indexes into %s)" % (name, [c[0] for c in cases]))


# ---- dead-lettering and TTL ------------------------------------------------------------------

def dlx_setup(ch, t, **queue_args):
    """A fanout DLX with a queue behind it, and a queue dead-lettering into it."""
    dlx = t.n("dlx")
    ch.exchange_declare(dlx, "fanout")
    dlq = declare(ch, t, "dlq")
    ch.queue_bind(dlq, dlx)
    args = dict(queue_args)
    args["x-dead-letter-exchange"] = dlx
    q = declare(ch, t, "q", arguments=args)
    return q, dlq, dlx


def get_when_there(ch, q, what):
    """basic.get with auto-ack until a message comes (dead-lettering may be asynchronous)."""
    def attempt():
        m, props, body = ch.basic_get(q, auto_ack=True)
        return (m, props, body) if m is not None else None
    return poll(attempt, what)


def check_x_death(props, reason, queue, exchange, routing_keys, what):
    headers = props.headers or {}
    check("x-death" in headers, "%s: no x-death header; headers are %s" % (what, short(headers)))
    deaths = headers["x-death"]
    eq(len(deaths), 1, "%s: entries in x-death %s" % (what, short(deaths)))
    d = deaths[0]
    eq(d.get("count"), 1, "%s: x-death count" % what)
    eq(d.get("reason"), reason, "%s: x-death reason" % what)
    eq(d.get("queue"), queue, "%s: x-death queue" % what)
    eq(d.get("exchange"), exchange, "%s: x-death exchange" % what)
    eq(d.get("routing-keys"), routing_keys, "%s: x-death routing-keys" % what)
    check(isinstance(d.get("time"), datetime.datetime),
          "%s: x-death time should be a timestamp, got %s" % (what, short(d.get("time"))))


def test_dead_letter_on_reject(t):
    with t.connect() as conn:
        ch = confirmed(conn)
        q, dlq, _ = dlx_setup(ch, t)
        ch.basic_publish("", q, b"doomed",
                         properties=pika.BasicProperties(headers={"mine": "kept"},
                                                         content_type="text/plain"))
        m, _, _ = ch.basic_get(q)
        ch.basic_reject(m.delivery_tag, requeue=False)
        m, props, body = get_when_there(ch, dlq, "the rejected message in the DLX's queue")
        eq(body, b"doomed", "dead-lettered body")
        eq(props.content_type, "text/plain", "dead-lettered content type")
        eq((props.headers or {}).get("mine"), "kept", "the message's own header")
        check_x_death(props, "rejected", q, "", [q], "rejected message")
        eq(depth(ch, q), 0, "ready messages left in the source queue")

        # nack without requeue dead-letters the same way; x-dead-letter-routing-key replaces
        # the key (here through the default exchange, straight to a queue by name).
        q2 = declare(ch, t, "q2", arguments={"x-dead-letter-exchange": "",
                                            "x-dead-letter-routing-key": dlq})
        ch.basic_publish("", q2, b"nacked")
        m, _, _ = ch.basic_get(q2)
        ch.basic_nack(m.delivery_tag, requeue=False)
        m, props, body = get_when_there(ch, dlq, "the nacked message re-keyed to the dlq")
        eq(body, b"nacked", "dead-lettered body")
        eq(m.routing_key, dlq, "routing key of a message dead-lettered with a new key")
        check_x_death(props, "rejected", q2, "", [q2], "nacked message")


def test_ttl_queue_expires_into_dlx(t):
    with t.connect() as conn:
        ch = conn.channel()
        q, dlq, _ = dlx_setup(ch, t, **{"x-message-ttl": 50})
        for i in range(3):
            ch.basic_publish("", q, b"stale %d" % i)
        poll(lambda: True if depth(ch, dlq) == 3 else None,
             "3 expired messages in the DLX's queue")
        eq(depth(ch, q), 0, "ready messages left in the queue with x-message-ttl")
        for i in range(3):
            m, props, body = ch.basic_get(dlq, auto_ack=True)
            eq(body, b"stale %d" % i, "expired message %d (in order)" % i)
            check_x_death(props, "expired", q, "", [q], "expired message %d" % i)


def test_per_message_expiration_into_dlx(t):
    with t.connect() as conn:
        ch = confirmed(conn)
        q, dlq, _ = dlx_setup(ch, t)
        ch.basic_publish("", q, b"short-lived",
                         properties=pika.BasicProperties(expiration="50"))
        ch.basic_publish("", q, b"long-lived",
                         properties=pika.BasicProperties(expiration="600000"))
        m, props, body = get_when_there(ch, dlq, "the expired message in the DLX's queue")
        eq(body, b"short-lived", "expired body")
        check_x_death(props, "expired", q, "", [q], "expired message")
        # Dead-lettering removes the expiration so the copy does not expire again.
        eq(props.expiration, None, "expiration property of the dead-lettered copy")
        eq(depth(ch, q), 1, "messages left in the queue (the long-lived one)")
        m, _, body = ch.basic_get(q, auto_ack=True)
        eq(body, b"long-lived", "the message still in the queue")


def test_ttl_without_dlx_empties_queue(t):
    with t.connect() as conn:
        ch = conn.channel()
        q = declare(ch, t, "q", arguments={"x-message-ttl": 50})
        for i in range(10):
            ch.basic_publish("", q, b"%d" % i)
        poll(lambda: True if depth(ch, q) == 0 else None,
             "a queue with x-message-ttl 50 ms and no DLX to empty itself (%d ready)"
             % depth(ch, q))
        eq(ch.basic_get(q), (None, None, None), "basic.get on the expired queue")


# ---- queue life cycle ------------------------------------------------------------------------

def passive_gone(conn, q):
    """True once a passive declare of q on a fresh channel answers 404."""
    ch = conn.channel()
    try:
        ch.queue_declare(q, passive=True)
    except pex.ChannelClosedByBroker as e:
        eq(e.reply_code, 404, "passive declare of a deleted queue")
        return True
    ch.close()
    return None


def test_exclusive_queue_vanishes_with_connection(t):
    owner = t.connect()
    other = t.connect()
    try:
        q = declare(owner.channel(), t, "excl", exclusive=True)
        e = expect_channel_error(405, lambda: other.channel().queue_declare(q, passive=True),
                                 "passive declare of another connection's exclusive queue")
        check(e.reply_text.startswith("RESOURCE_LOCKED"),
              "reply text should start with RESOURCE_LOCKED, got %r" % e.reply_text)
        expect_channel_error(405, lambda: other.channel().basic_get(q),
                             "basic.get from another connection's exclusive queue")
        owner.close()
        poll(lambda: passive_gone(other, q), "the exclusive queue to go with its connection")
    finally:
        for c in (owner, other):
            if c.is_open:
                c.close()


def test_auto_delete_queue(t):
    with t.connect() as conn, t.connect() as consumer:
        ch = conn.channel()
        q = declare(ch, t, "auto", auto_delete=True)
        eq(depth(ch, q), 0, "an auto-delete queue with no consumer yet exists")
        cch = consumer.channel()
        tags = [cch.basic_consume(q, lambda *a: None) for _ in range(2)]
        eq(ch.queue_declare(q, passive=True).method.consumer_count, 2, "consumers")
        cch.basic_cancel(tags[0])
        eq(ch.queue_declare(q, passive=True).method.consumer_count, 1,
           "consumers after one of two cancelled (the queue must still exist)")
        cch.basic_cancel(tags[1])
        poll(lambda: passive_gone(conn, q), "the auto-delete queue to go with its last consumer")


def test_purge_and_delete_counts(t):
    with t.connect() as conn:
        ch = confirmed(conn)
        q = declare(ch, t, "q")
        for i in range(7):
            ch.basic_publish("", q, b"%d" % i)
        eq(ch.queue_purge(q).method.message_count, 7, "queue.purge-ok message_count")
        eq(depth(ch, q), 0, "ready messages after purge")
        for i in range(3):
            ch.basic_publish("", q, b"%d" % i)
        e = expect_channel_error(406, lambda: ch.queue_delete(q, if_empty=True),
                                 "queue.delete if_empty of a queue holding 3")
        check(e.reply_text.startswith("PRECONDITION_FAILED"),
              "reply text should start with PRECONDITION_FAILED, got %r" % e.reply_text)
        ch = conn.channel()
        ch2 = conn.channel()
        tag = ch2.basic_consume(declare(ch2, t, "used"), lambda *a: None)
        expect_channel_error(406, lambda: ch.queue_delete(t.n("used"), if_unused=True),
                             "queue.delete if_unused of a queue with a consumer")
        ch2.basic_cancel(tag)
        ch = conn.channel()
        eq(ch.queue_delete(q).method.message_count, 3, "queue.delete-ok message_count")
        expect_channel_error(404, lambda: ch.queue_declare(q, passive=True),
                             "passive declare of the deleted queue")


def test_server_named_queue(t):
    with t.connect() as conn:
        ch = confirmed(conn)
        q = ch.queue_declare("", exclusive=True).method.queue
        check(q.startswith("amq.gen-"), "a server-named queue's name should start with "
              "amq.gen-, got %r" % q)
        check(ch.queue_declare("", exclusive=True).method.queue != q,
              "two declares of '' gave the same name %r" % q)
        ch.basic_publish("", q, b"to the named one")
        m, _, body = ch.basic_get(q, auto_ack=True)
        eq(body if m else None, b"to the named one", "message in the server-named queue")


def test_max_length_overflow(t):
    with t.connect() as conn:
        ch = confirmed(conn)
        q = declare(ch, t, "drop-head", arguments={"x-max-length": 3})
        for i in range(5):
            ch.basic_publish("", q, b"%d" % i)
        eq(depth(ch, q), 3, "ready messages in a queue with x-max-length 3 after 5 publishes")
        got = [ch.basic_get(q, auto_ack=True)[2] for _ in range(3)]
        eq(got, [b"2", b"3", b"4"], "what drop-head kept (the newest)")

        q = declare(ch, t, "reject", arguments={"x-max-length": 2,
                                               "x-overflow": "reject-publish"})
        ch.basic_publish("", q, b"0")
        ch.basic_publish("", q, b"1")
        try:
            ch.basic_publish("", q, b"2")
            raise AssertionError("a publish past x-max-length with x-overflow reject-publish "
                                 "was confirmed: expected basic.nack (pika's NackError)")
        except pex.NackError:
            pass
        got = [ch.basic_get(q, auto_ack=True)[2] for _ in range(3)]
        eq(got, [b"0", b"1", None], "what reject-publish kept")


def test_exclusive_consumer(t):
    with t.connect() as conn:
        ch = conn.channel()
        q = declare(ch, t, "q")
        ch.basic_consume(q, lambda *a: None, exclusive=True)
        e = expect_channel_error(403, lambda: conn.channel().basic_consume(q, lambda *a: None),
                                 "a second consumer on a queue with an exclusive consumer")
        check(e.reply_text.startswith("ACCESS_REFUSED"),
              "reply text should start with ACCESS_REFUSED, got %r" % e.reply_text)
        eq(ch.queue_declare(q, passive=True).method.consumer_count, 1, "consumers")


def test_consumer_cancelled_when_queue_deleted(t):
    with t.connect() as conn, t.connect() as admin:
        ch = conn.channel()
        q = declare(ch, t, "q")
        cancelled = []
        ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
        tag = ch.basic_consume(q, lambda *a: None)
        admin.channel().queue_delete(q)
        pump(conn, lambda: cancelled, "basic.cancel from the broker after its queue was deleted")
        eq(cancelled, [tag], "consumer tags the broker cancelled")
        check(conn.is_open and ch.is_open, "connection and channel stay open after the cancel")


# ---- errors ----------------------------------------------------------------------------------

def test_channel_errors_leave_connection_usable(t):
    with t.connect() as conn:
        ch = conn.channel()
        e = expect_channel_error(404, lambda: ch.queue_declare(t.n("missing"), passive=True),
                                 "passive declare of a missing queue")
        check(e.reply_text.startswith("NOT_FOUND") and t.n("missing") in e.reply_text,
              "reply text should be NOT_FOUND naming the queue, got %r" % e.reply_text)

        ch = conn.channel()
        ch.basic_publish(t.n("no-exchange"), "k", b"x")
        # The close for the publish arrives asynchronously; the next call on the channel sees it.
        expect_channel_error(404, lambda: ch.queue_declare(t.n("any"), passive=True),
                             "publish to a missing exchange")

        ch = conn.channel()
        q = declare(ch, t, "q", arguments={"x-message-ttl": 1000})
        e = expect_channel_error(406, lambda: ch.queue_declare(q, arguments={
            "x-message-ttl": 2000}), "redeclare with a different x-message-ttl")
        check(e.reply_text.startswith("PRECONDITION_FAILED"),
              "reply text should start with PRECONDITION_FAILED, got %r" % e.reply_text)

        ch = conn.channel()
        ch.exchange_declare(t.n("ex"), "direct")
        expect_channel_error(406, lambda: ch.exchange_declare(t.n("ex"), "fanout"),
                             "redeclare a direct exchange as fanout")
        ch = conn.channel()
        expect_channel_error(403, lambda: ch.exchange_declare("amq.mine", "direct"),
                             "declare an exchange named amq.*")

        ch = conn.channel()
        eq(depth(ch, q), 0, "a fresh channel after five channel errors works")


@warren_only(broker_yaml="max_message_size: 1KiB")
def test_max_message_size_refused(t):
    # RabbitMQ's max_message_size: a larger body closes the channel with 406 naming both sizes;
    # the message is not stored and the connection carries on.
    with t.connect() as conn:
        ch = conn.channel()
        q = declare(ch, t, "q")
        ch.basic_publish("", q, b"x" * 1024)
        ch.basic_publish("", q, b"x" * 1025)
        e = expect_channel_error(406, lambda: ch.queue_declare(q, passive=True),
                                 "publish of 1025 bytes over a 1 KiB max_message_size")
        eq(e.reply_text, "PRECONDITION_FAILED - message size 1025 is larger than configured "
           "max size 1024", "reply text")
        ch = conn.channel()
        eq(depth(ch, q), 1, "only the message within the limit was stored")


def test_wrong_password_refused(t):
    try:
        conn = t.connect(credentials=pika.PlainCredentials("guest", "not-the-password"))
    except (pex.ProbableAuthenticationError, pex.AuthenticationError) as e:
        check("ACCESS_REFUSED" in str(e) or isinstance(e, pex.ProbableAuthenticationError),
              "the refusal should name ACCESS_REFUSED, got %r" % (e,))
        return
    conn.close()
    raise AssertionError("a wrong password was accepted")


# ---- tables, channels, connections -----------------------------------------------------------

def every_type_table():
    """A table holding every field type pika encodes (S x t I l D T F A V), nested, large.
    No negative 64-bit integer: pika 1.2 encodes 'l' signed but decodes it unsigned."""
    table = {
        "str": "hello", "unicode": "\u017c\u00f3\u0142w \U0001F422", "empty": "",
        "bytes": b"\x00\x01\xfe\xff", "true": True, "false": False,
        "int32": 2 ** 31 - 1, "int32min": -2 ** 31, "int64": 2 ** 62,
        "zero": 0, "dec": decimal.Decimal("3.14"), "decneg": decimal.Decimal("-12.5"),
        "ts": datetime.datetime(2024, 5, 17, 12, 34, 56), "void": None,
        "array": [1, "two", [3, [4]], {"five": 5}, None, True, b"\x06",
                  decimal.Decimal("7.7")],
        "table": {"nested": {"deeper": {"deepest": "here"}}, "n": -1},
        "empty_array": [], "empty_table": {},
        "k" * 255: "a key of 255 bytes",
        "long_value": "v" * 20000,
    }
    for i in range(500):
        table["key%03d" % i] = [i, "s%d" % i, {"i": i}] if i % 2 else i * 1000003
    return table


def test_headers_and_properties_round_trip(t):
    props = pika.BasicProperties(
        content_type="application/json", content_encoding="gzip",
        headers=every_type_table(), delivery_mode=2, priority=7, correlation_id="corr-1",
        reply_to="replies", expiration="600000", message_id="id-42", timestamp=1700000000,
        type="order.created", user_id="guest", app_id="amqp_pika_test")
    fields = ("content_type", "content_encoding", "delivery_mode", "priority",
              "correlation_id", "reply_to", "expiration", "message_id", "timestamp", "type",
              "user_id", "app_id")
    with t.connect() as conn:
        ch = confirmed(conn)
        q = declare(ch, t, "q")
        ch.basic_publish("", q, b"with a big table", properties=props)
        ch.basic_publish("", q, b"with a big table", properties=props)
        got = [ch.basic_get(q, auto_ack=True)]
        delivered = []
        ch.basic_consume(q, lambda c, m, p, b: delivered.append((m, p, b)), auto_ack=True)
        pump(conn, lambda: delivered, "the second message through a consumer")
        got += delivered
        for path, (m, p, body) in zip(("basic.get", "basic.deliver"), got):
            check(m is not None, "%s: no message" % path)
            eq(body, b"with a big table", "%s: body" % path)
            for f in fields:
                eq(getattr(p, f), getattr(props, f), "%s: property %s" % (path, f))
            want = props.headers
            eq(sorted(p.headers), sorted(want), "%s: header names" % path)
            for k in want:
                eq(p.headers[k], want[k], "%s: header %s" % (path, short(k, 40)))


def test_many_channels_one_connection(t):
    n = 300
    with t.connect() as conn:
        chans = [confirmed(conn) for _ in range(n)]
        eq(len({c.channel_number for c in chans}), n, "distinct channel numbers")
        q = declare(chans[0], t, "q")
        for i, c in enumerate(chans):
            c.basic_publish("", q, b"%d" % i)
        eq(depth(chans[-1], q), n, "messages published on %d channels" % n)
        # Each channel takes one and acks it: delivery tags are per channel.
        for i, c in enumerate(chans):
            m, _, _ = c.basic_get(q)
            check(m is not None, "channel %d: basic.get found the queue empty" % i)
            eq(m.delivery_tag, 1, "first delivery tag on channel %d" % c.channel_number)
            c.basic_ack(m.delivery_tag)
        for c in chans[::2]:
            c.close()
        eq(depth(chans[1], q), 0, "ready messages after every channel acked its own")
        more = [confirmed(conn) for _ in range(n // 2)]
        for c in more:
            c.basic_publish("", q, b"again")
        eq(depth(more[-1], q), n // 2, "messages published on reopened channel numbers")
        check(conn.is_open, "the connection is still open")


# ---- heartbeats ------------------------------------------------------------------------------

def test_heartbeat_keeps_idle_connection(t):
    with t.connect(heartbeat=1) as conn:
        ch = confirmed(conn)
        q = declare(ch, t, "q")
        end = time.monotonic() + 4
        for _ in range(100):                   # 4 s of idling while pika sends heartbeats
            left = end - time.monotonic()
            if left <= 0:
                break
            conn.process_data_events(time_limit=min(left, 0.25))
        check(conn.is_open, "a connection with heartbeat=1 closed while idle")
        ch.basic_publish("", q, b"still here")
        eq(depth(ch, q), 1, "a publish after 4 idle seconds")


class RawAmqp:
    """Just enough of the AMQP handshake on a bare socket to then stop talking."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def send_method(self, channel, class_id, method_id, args):
        payload = struct.pack(">HH", class_id, method_id) + args
        self.sock.sendall(struct.pack(">BHI", 1, channel, len(payload)) + payload + b"\xce")

    def read_frame(self, deadline):
        """(type, channel, payload), or None at EOF."""
        while True:
            if len(self.buf) >= 7:
                ftype, channel, size = struct.unpack(">BHI", self.buf[:7])
                if len(self.buf) >= 8 + size:
                    payload, end = self.buf[7:7 + size], self.buf[7 + size]
                    self.buf = self.buf[8 + size:]
                    check(end == 0xCE, "frame end byte 0x%02x, not 0xCE" % end)
                    return ftype, channel, payload
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("timed out reading a frame from the broker")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return None
            except socket.timeout:
                continue
            if not chunk:
                return None
            self.buf += chunk

    def expect_method(self, class_id, method_id, deadline):
        f = self.read_frame(deadline)
        check(f is not None, "EOF waiting for method %d.%d" % (class_id, method_id))
        got = struct.unpack(">HH", f[2][:4]) if f[0] == 1 else None
        eq(got, (class_id, method_id), "method in the handshake")
        return f[2][4:]

    def handshake(self, heartbeat):
        deadline = time.monotonic() + WAIT_S
        self.sock.sendall(b"AMQP\x00\x00\x09\x01")
        self.expect_method(10, 10, deadline)           # connection.start
        sasl = b"\x00guest\x00guest"
        self.send_method(0, 10, 11, struct.pack(">I", 0) + b"\x05PLAIN" +
                         struct.pack(">I", len(sasl)) + sasl + b"\x05en_US")
        tune = self.expect_method(10, 30, deadline)    # connection.tune
        channel_max, frame_max, _ = struct.unpack(">HIH", tune[:8])
        self.send_method(0, 10, 31, struct.pack(">HIH", channel_max, frame_max, heartbeat))
        self.send_method(0, 10, 40, b"\x01/\x00\x00")  # connection.open vhost "/"
        self.expect_method(10, 41, deadline)           # open-ok

    def close(self):
        self.sock.close()


def test_heartbeat_silent_client_is_dropped(t):
    raw = RawAmqp(t.port)
    try:
        raw.handshake(heartbeat=1)
        start = time.monotonic()
        deadline = start + WAIT_S
        heartbeats, how = 0, None
        for _ in range(1000):
            f = raw.read_frame(deadline)
            if f is None:
                how = "EOF"
                break
            if f[0] == 8:
                heartbeats += 1
            elif f[0] == 1 and f[2][:4] == struct.pack(">HH", 10, 50):
                code = struct.unpack(">H", f[2][4:6])[0]
                how = "connection.close %d" % code
                break
        elapsed = time.monotonic() - start
        check(how is not None, "the broker never dropped a client silent for %.1f s with "
              "heartbeat 1" % elapsed)
        check(elapsed >= 1.0, "the broker dropped the client after %.2f s (%s), before one "
              "heartbeat interval of 1 s had passed" % (elapsed, how))
        check(heartbeats >= 1, "the broker sent no heartbeat frame in the %.1f s before it "
              "dropped the connection (%s)" % (elapsed, how))
        print("  silent client dropped after %.1f s by %s, %d heartbeats received"
              % (elapsed, how, heartbeats))
    finally:
        raw.close()


# ---- flow control and shutdown (warren's config and process) ---------------------------------

@warren_only(broker_yaml="memory_high_watermark: 1MiB")
def test_connection_blocked_and_unblocked(t):
    # Asynchronous (SelectConnection): a blocked broker stops reading the publisher's socket,
    # so publishes must never wait on the socket. The publisher sends 16 KiB messages until
    # connection.blocked; a second connection then consumes everything, which frees the
    # memory: the publisher must see connection.unblocked, every message it sent must arrive
    # once and in order, and a publish after the unblock must arrive too.
    from pika.adapters.select_connection import IOLoop
    body_pad, most, after = bytes(16 * 1024), 2000, b"after unblocked"
    q = t.n("q")
    loop = IOLoop()
    st = {"events": [], "sent": 0, "got": [], "error": None, "pub_ch": None,
          "after_sent": False, "closed": 0, "conns": []}

    def fail(what):
        if st["error"] is None:
            st["error"] = what
        finish()

    def finish():
        open_conns = [c for c in st["conns"] if c.is_open]
        if not open_conns:
            loop.stop()
        for c in open_conns:
            c.close()

    def on_closed(conn, reason):
        st["closed"] += 1
        if st["closed"] == len(st["conns"]):
            loop.stop()
        elif not isinstance(reason, pex.ConnectionClosedByClient):
            fail("a connection closed: %r" % (reason,))

    def connect(on_open):
        c = pika.SelectConnection(
            t.params(), on_open_callback=on_open, custom_ioloop=loop,
            on_open_error_callback=lambda c_, e: fail("connect: %r" % (e,)),
            on_close_callback=on_closed)
        st["conns"].append(c)
        return c

    def publish_next():
        if st["events"] or st["error"] is not None:
            return
        if st["sent"] >= most:
            return fail("no connection.blocked after %d x 16 KiB with a 1 MiB watermark"
                        % most)
        st["pub_ch"].basic_publish("", q, struct.pack(">I", st["sent"]) + body_pad)
        st["sent"] += 1
        loop.call_later(0, publish_next)

    def on_pub_open(conn):
        conn.add_on_connection_blocked_callback(on_blocked)
        conn.add_on_connection_unblocked_callback(on_unblocked)
        conn.channel(on_open_callback=lambda ch: ch.queue_declare(
            q, callback=lambda frame: (st.__setitem__("pub_ch", ch), publish_next())))

    def on_blocked(conn, frame):
        st["events"].append(("blocked", frame.method.reason))
        if len(st["events"]) == 1:
            connect(lambda c: c.channel(on_open_callback=lambda ch: ch.basic_consume(
                q, on_drained, auto_ack=True)))

    def on_unblocked(conn, frame):
        st["events"].append("unblocked")
        maybe_publish_after()

    def on_drained(ch, m, props, body):
        if body == after:
            st["got"].append("after")
            return finish()
        st["got"].append(struct.unpack(">I", body[:4])[0])
        maybe_publish_after()

    def maybe_publish_after():
        if (st["events"][-1] == "unblocked" and len(st["got"]) == st["sent"]
                and not st["after_sent"]):
            st["after_sent"] = True
            st["pub_ch"].basic_publish("", q, after)

    connect(on_pub_open)
    loop.call_later(WAIT_S * 2, lambda: fail(
        "timed out: events %s, sent %d, consumed %d" % (st["events"], st["sent"],
                                                      len(st["got"]))))
    loop.start()
    if st["error"] is not None:
        raise AssertionError("%s (events %s, sent %d, consumed %d)"
                             % (st["error"], st["events"], st["sent"], len(st["got"])))
    ev = st["events"]
    check(ev and ev[0][0] == "blocked", "the first event should be connection.blocked, got %s"
          % ev)
    eq([e if e == "unblocked" else e[0] for e in ev], ["blocked", "unblocked"] * (len(ev) // 2),
       "connection.blocked / unblocked events (alternating, ending unblocked)")
    eq(st["got"], list(range(st["sent"])) + ["after"],
       "messages consumed (indexes of what was published while blocking, then the one after)")
    print("  blocked after %d x 16 KiB (reason %r); events %d; all consumed"
          % (st["sent"], ev[0][1], len(ev)))


@warren_only()
def test_graceful_shutdown_closes_with_320(t):
    conn = t.connect()
    try:
        ch = conn.channel()
        q = declare(ch, t, "q")
        got = []
        ch.basic_consume(q, lambda c, m, p, b: got.append(b))
        ch.basic_publish("", q, b"before shutdown")
        pump(conn, lambda: got, "the delivery that proves the consumer is live")
        t.warren.proc.send_signal(signal.SIGTERM)
        try:   # only the broker's connection.close ends this; any other end fails the test
            pump(conn, lambda: False, "connection.close after SIGTERM")
        except pex.ConnectionClosedByBroker as e:
            eq(e.reply_code, 320, "connection.close reply code on shutdown (reason %r)"
               % e.reply_text)
            check(e.reply_text.startswith("CONNECTION_FORCED"),
                  "reply text should start with CONNECTION_FORCED, got %r" % e.reply_text)
        try:
            status = t.warren.proc.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            raise AssertionError("warren did not exit within %d s of SIGTERM" % WAIT_S)
        eq(status, 0, "warren's exit status after SIGTERM")
    finally:
        if conn.is_open:
            try:
                conn.close()
            except pex.AMQPError:
                pass


# ---- the runner ------------------------------------------------------------------------------

def all_tests():
    return {name: fn for name, fn in globals().items()
            if name.startswith("test_") and callable(fn)}


def on_alarm(signum, frame):
    raise TestTimeout("the test ran past its %d s budget" % TEST_BUDGET_S)


def run_one(name, fn, port, warren_args):
    """Runs one test; returns 'pass', 'fail' or 'skip' and prints why."""
    w = None
    began = time.monotonic()
    try:
        if warren_args is None:
            if getattr(fn, "warren_only", False):
                print("SKIP %s: needs warren" % name)
                return "skip"
            t = Target(name, port)
        else:
            w = Warren(*warren_args, broker_yaml=getattr(fn, "broker_yaml", ""))
            w.start()
            t = Target(name, w.port, w)
        signal.alarm(TEST_BUDGET_S)
        try:
            fn(t)
        finally:
            signal.alarm(0)
        if w is not None:
            status = w.stop()
            if status not in (0, None):
                raise AssertionError("warren exited with status %d after the test" % status)
            finding = SANITIZER_REPORT.search(w.log())
            if finding:
                raise AssertionError("warren's log has a sanitizer report: %r" % finding.group())
        print("PASS %s (%.1f s)" % (name, time.monotonic() - began))
        return "pass"
    except Exception as e:
        print("FAIL %s (%.1f s): %s: %s" % (name, time.monotonic() - began,
                                            type(e).__name__, e))
        traceback.print_exc(file=sys.stdout)
        if w is not None:
            try:
                status = w.stop()
                print("  warren's exit status: %s" % status)
            except Exception as stop_error:
                print("  stopping warren: %s" % stop_error)
            lines = w.log().splitlines()
            print("  warren's log (last %d of %d lines):" % (min(80, len(lines)), len(lines)))
            for line in lines[-80:]:
                print("    " + line)
        return "fail"
    finally:
        if w is not None:
            w.cleanup()


def main(argv):
    tests = all_tests()
    if argv[1:2] == ["--list"]:
        print("\n".join(tests))
        return 0
    if len(argv) >= 3 and argv[1] == "--port":
        port, warren_args, names = int(argv[2]), None, argv[3:]
    elif len(argv) >= 3:
        port, warren_args, names = None, (argv[1], argv[2]), argv[3:]
    else:
        print(__doc__)
        return 2
    unknown = [n for n in names if n not in tests]
    if unknown:
        print("no such test: %s" % ", ".join(unknown))
        return 2
    signal.signal(signal.SIGALRM, on_alarm)
    results = {"pass": 0, "fail": 0, "skip": 0}
    for name in names or tests:
        results[run_one(name, tests[name], port, warren_args)] += 1
        sys.stdout.flush()
    print("%d passed, %d failed, %d skipped" % (results["pass"], results["fail"],
                                                 results["skip"]))
    return 1 if results["fail"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
