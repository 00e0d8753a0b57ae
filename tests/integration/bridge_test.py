#!/usr/bin/python3
"""bridge_test.py: one broker, both semantics (issue 7), with real clients on both sides.

    bridge_test.py WARREN_BIN PLUGIN_DIR SOURCE_DIR OFFSET_CONSUMER [TEST...]
    bridge_test.py --list

- AMQP into a log: pika and amqp-publish publish through topic and direct exchanges into a
  `log` queue; kcat and confluent-kafka (in a consumer group) read the records: key (routing
  key, or the x-kafka-key header), value, headers (the basic properties and the AMQP headers
  as text, x-warren-meta last), partition (where librdkafka's murmur2 partitioner puts the
  key), order per key.
- Kafka into exchanges (forward_to): confluent-kafka produces; pika consumes with manual acks
  and a nack without requeue dead-letters; amqp091-go (tests/integration/bridge_go) consumes
  with acks; forwarding resumes after a restart without loss or duplicates.
- A log read over AMQP from an x-stream-offset (an offset, first, a timestamp) by
  OFFSET_CONSUMER (amqp_offset_consumer.c, on rabbitmq-c).
- Replay: a consumer group rewound with offsets_for_times + OffsetCommit re-reads what AMQP
  publishers sent.
- SOURCE_DIR/examples/{kafka-like,rabbit-like,hybrid}.yaml, each started as it is (listeners
  moved to free loopback ports, data to a temporary directory) from SOURCE_DIR, so the paths
  in it resolve as they do for a user.

Every test starts its own broker, stopped by PID with SIGTERM, which must exit 0 with no
sanitizer report (kafka_testlib.run_one). Every wait has a deadline. Run under
/usr/bin/python3 (Debian's pika, confluent-kafka, kafka-python).
"""
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kafka_testlib as kt  # noqa: E402
from kafka_testlib import check, eq, with_yaml  # noqa: E402
from kafka_confluent_test import consumer, producer, produce_all, read_assigned  # noqa: E402
from amqp_pika_test import confirmed, depth, pump  # noqa: E402
from harness import Warren  # noqa: E402

import pika  # noqa: E402
from confluent_kafka import TopicPartition  # noqa: E402

PATHS = {}  # source (the repository) and consumer (amqp_offset_consumer), from argv
RUN_S = 60  # the longest a client program may run


def amqp(w):
    return pika.BlockingConnection(pika.ConnectionParameters(
        host="127.0.0.1", port=w.port, connection_attempts=1, socket_timeout=10))


def run(cmd, what, **kw):
    """Runs a client program to its end; returns its stdout, raises with its stderr."""
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=RUN_S, **kw)
    except subprocess.TimeoutExpired as e:
        raise AssertionError("%s did not finish within %d s; stderr: %s"
                             % (what, RUN_S, e.stderr)) from None
    if p.returncode != 0:
        raise AssertionError("%s exited %d: %s" % (what, p.returncode, p.stderr))
    return p.stdout.decode("utf-8", "replace")


def kcat_records(w, topic, count):
    """kcat reads count records of topic from the beginning (-J); header values that are not
    UTF-8 (x-warren-meta) come back with replacement characters."""
    out = run(["kcat", "-C", "-b", kt.bootstrap(w), "-t", topic, "-o", "beginning", "-e",
               "-J", "-c", str(count)], "kcat -C -t %s" % topic)
    recs = [json.loads(line) for line in out.splitlines() if line.strip()]
    for r in recs:
        h = r.get("headers") or []
        r["headers"] = list(zip(h[0::2], h[1::2]))
    eq(len(recs), count, "records kcat read from %s" % topic)
    return recs


def murmur2_partitions(w, keys, topic):
    """The partition librdkafka's Java-compatible murmur2 partitioner picks for each key, in
    topic (a control topic with as many partitions as the one under test)."""
    p = producer(w, partitioner="murmur2_random")
    return {m.key().decode(): m.partition()
            for m in produce_all(p, topic, [(k.encode(), b"") for k in keys])}


def check_order_per_key(pairs, what):
    """pairs: (key, id) in the order a reader got them; ids per key must strictly increase."""
    last = {}
    for key, n in pairs:
        check(n > last.get(key, -1), "%s: id %d of key %s came after id %d"
              % (what, n, key, last.get(key, -1)))
        last[key] = n


def header_names(rec):
    return [k for k, _ in rec["headers"]]


def consume_all(w, group, want):
    """A new consumer of group reads want records of events from its committed offsets,
    commits, and checks that nothing is left past them."""
    c = consumer(w, group)
    c.subscribe(["events"])
    got = []

    def step():
        m = c.poll(0.1)
        if m is not None and m.error() is None:
            got.append(m)

    kt.wait_until(lambda: len(got) >= want, "%d records in group %s" % (want, group),
                  step=step)
    c.commit(asynchronous=False)
    left = sum(c.get_watermark_offsets(tp, timeout=10)[1] - tp.offset
               for tp in c.position(c.assignment()))
    c.close()
    eq((len(got), left), (want, 0), "records read by group %s, and left unread" % group)
    return got


# ---- AMQP publishers, Kafka consumers ----------------------------------------------------------

AMQP_TO_LOG = """vhosts:
  - name: /
    exchanges:
      - {name: shop, type: topic}
      - {name: pay, type: direct}
    queues:
      - {name: events, storage: log, partitions: 3, durable: true}
      - {name: control, storage: log, partitions: 3, durable: true}
    bindings:
      - {exchange: shop, queue: events, key: "user.#"}
      - {exchange: pay, queue: events, key: pay.eu}
"""
KEYS = ["user.%d" % i for i in range(6)]


@with_yaml(AMQP_TO_LOG)
def test_amqp_publishes_kafka_reads(w):
    with amqp(w) as conn:
        ch = confirmed(conn)
        for i in range(60):
            key = KEYS[i % len(KEYS)]
            body = json.dumps({"key": key, "id": i // len(KEYS)}).encode()
            ch.basic_publish("shop", key, body, pika.BasicProperties(
                content_type="application/json", delivery_mode=2, message_id="m-%d" % i,
                headers={"source": "pika", "attempt": 3}))
        ch.basic_publish("pay", "pay.eu", b"paid", pika.BasicProperties(
            headers={"x-kafka-key": "acct-7"}))
    run(["amqp-publish", "--url", "amqp://guest:guest@127.0.0.1:%d" % w.port, "-e", "shop",
         "-r", "user.cli", "-C", "text/plain", "-H", "origin: amqp-tools", "-b", "from cli"],
        "amqp-publish")

    recs = kcat_records(w, "events", 62)
    where = murmur2_partitions(w, KEYS + ["acct-7", "user.cli"], "control")
    by_key = {}
    for r in recs:
        by_key.setdefault(r["key"], []).append(r)
        eq(r["partition"], where.get(r["key"]), "partition of key %r (murmur2)" % r["key"])
        eq(header_names(r)[-1:], ["x-warren-meta"], "the last header of %s" % r["payload"])
    eq(sorted(by_key), sorted(KEYS + ["acct-7", "user.cli"]), "record keys")
    for key in KEYS:
        ids = [json.loads(r["payload"])["id"] for r in by_key[key]]
        eq(ids, list(range(10)), "ids of key %s in offset order" % key)
        eq(by_key[key][0]["headers"][:-1],
           [("content-type", "application/json"), ("delivery-mode", "2"),
            ("message-id", "m-%d" % KEYS.index(key)), ("source", "pika"), ("attempt", "3")],
           "headers of %s's first record" % key)
    eq(by_key["acct-7"][0]["payload"], "paid", "the x-kafka-key record's value")
    cli = by_key["user.cli"][0]
    eq((cli["payload"], cli["headers"][:-1]),
       ("from cli", [("content-type", "text/plain"), ("delivery-mode", "1"),
                     ("origin", "amqp-tools")]),
       "amqp-publish's record: value and headers")

    # A consumer group (librdkafka) reads them all, in order per key.
    got = consume_all(w, "readers", 62)
    check_order_per_key([(m.key().decode(), json.loads(m.value())["id"]) for m in got
                         if m.key().decode() in KEYS], "group readers")
    first = next(m for m in got if m.key() == b"user.0")
    eq(dict(first.headers())["content-type"], b"application/json",
       "content-type header through librdkafka")


# ---- Kafka producers, AMQP consumers (forward_to) -------------------------------------------

FORWARD = """vhosts:
  - name: /
    exchanges:
      - {name: orders-x, type: topic}
      - {name: dlx, type: fanout}
    queues:
      - {name: orders, storage: log, partitions: 3, durable: true, forward_to: orders-x}
      - {name: ledger, storage: log, partitions: 1, durable: true, forward_to: orders-x}
      - {name: work, storage: queue, durable: true, dead_letter_exchange: dlx}
      - {name: books, storage: queue, durable: true}
      - {name: dead, storage: queue, durable: true}
    bindings:
      - {exchange: orders-x, queue: work, key: "order.#"}
      - {exchange: orders-x, queue: books, key: "book.#"}
      - {exchange: dlx, queue: dead}
"""
REGIONS = ["order.eu", "order.us", "order.asia"]


def produce_orders(w, topic, keys, n, first=0, headers=()):
    """n records per key, values "KEY:ID" for ids first.. first+n-1, interleaved by key."""
    recs = [(k.encode(), b"%s:%d" % (k.encode(), i)) for i in range(first, first + n)
            for k in keys]
    produce_all(producer(w), topic, recs, headers=list(headers) or None)
    return recs


def key_id(body):
    key, n = body.decode().rsplit(":", 1)
    return key, int(n)


@with_yaml(FORWARD)
def test_kafka_produces_amqp_consumes_with_acks_and_dead_letters(w):
    produce_orders(w, "orders", REGIONS, 10,
                   headers=[("content-type", b"text/plain"), ("trace", b"t-1")])
    produce_all(producer(w), "orders", [(b"other", b"bound nowhere")])
    with amqp(w) as conn:
        ch = conn.channel()
        ch.basic_qos(prefetch_count=10)
        got = []

        def on_message(ch, m, props, body):
            got.append((m.routing_key, props, body))
            if body == b"order.eu:5":
                ch.basic_nack(m.delivery_tag, requeue=False)
            else:
                ch.basic_ack(m.delivery_tag)

        ch.basic_consume("work", on_message)
        pump(conn, lambda: len(got) >= 30, "30 forwarded records in work")
        for key, props, body in got:
            eq(key_id(body)[0], key, "routing key of %r (the record's key)" % body)
            eq(props.content_type, "text/plain", "content type of %r" % body)
            headers = props.headers or {}
            eq(headers.get("trace"), "t-1", "the record's trace header on %r" % body)
            check("x-stream-offset" not in headers and "content-type" not in headers,
                  "headers of %r: %s" % (body, headers))
        check_order_per_key([key_id(b) for _, _, b in got], "deliveries from work")
        eq(sorted(b for _, _, b in got),
           sorted(b"%s:%d" % (k.encode(), i) for k in REGIONS for i in range(10)),
           "what work delivered")

        kt.wait_until(lambda: depth(ch, "dead") == 1, "the nacked record in dead")
        m, props, body = ch.basic_get("dead", auto_ack=True)
        eq(body, b"order.eu:5", "the dead-lettered body")
        eq(props.headers["x-death"][0]["reason"], "rejected", "x-death reason")
        eq((depth(ch, "work"), depth(ch, "books")), (0, 0), "ready left in work and books")


@with_yaml(FORWARD)
def test_forwarding_survives_restart(w):
    """One partition, so the forwarder's order is the log's: a record seen last (the
    sentinel) means every record before it was forwarded, and none came twice."""
    persistent = [("delivery-mode", b"2")]
    produce_orders(w, "ledger", ["book.a"], 50, headers=persistent)
    with amqp(w) as conn:
        kt.wait_until(lambda: depth(conn.channel(), "books") == 50, "50 records in books")
    eq(w.stop(), 0, "warren's exit status after SIGTERM")
    w.start()
    produce_orders(w, "ledger", ["book.a"], 50, first=50, headers=persistent)
    produce_all(producer(w), "ledger", [(b"book.end", b"book.end:0")], headers=persistent)
    with amqp(w) as conn:
        ch = conn.channel()
        got = []

        def take():
            m, _, body = ch.basic_get("books", auto_ack=True)
            if m is not None:
                got.append(body)
            return got[-1:] == [b"book.end:0"]

        kt.wait_until(take, "the sentinel in books (have %d)" % len(got))
        eq(got[:-1], [b"book.a:%d" % i for i in range(100)],
           "books across the restart: every record once, in order")
        eq(depth(ch, "books"), 0, "records after the sentinel")


def go_build(src, out, work):
    env = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode", GOFLAGS="",
               GOCACHE=os.environ.get("WARREN_GOCACHE", os.path.join(work, "gocache")))
    check(shutil.which("go"), "go is not installed (apt-get install golang-go)")
    run(["go", "build", "-o", out, "."], "go build %s" % src, cwd=src, env=env)


@with_yaml(FORWARD)
def test_go_consumer_acks_forwarded_records(w):
    work = tempfile.mkdtemp(prefix="warren-bridge-go-")
    try:
        binary = os.path.join(work, "bridge_go")
        go_build(os.path.join(PATHS["source"], "tests/integration/bridge_go"), binary, work)
        produce_orders(w, "orders", REGIONS, 7, headers=[("region", b"emea")])
        out = run([binary, "-url", "amqp://guest:guest@127.0.0.1:%d/" % w.port,
                   "-queue", "work", "-header", "region", "-count", "21"], "bridge_go")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [l.split(" ") for l in out.splitlines()]
    eq(len(lines), 21, "lines bridge_go printed")
    for key, region, body in lines:
        eq((key_id(body.encode())[0], region), (key, "emea"),
           "routing key and region header of %s" % body)
    check_order_per_key([key_id(b.encode()) for _, _, b in lines], "bridge_go")
    with amqp(w) as conn:
        eq(depth(conn.channel(), "work"), 0, "ready in work after bridge_go acked 21")


# ---- logs over AMQP ---------------------------------------------------------------------------

@with_yaml(kt.topics(("audit", 1)))
def test_amqp_consumer_reads_log_from_offset(w):
    base_s = int(time.time()) - 60
    p = producer(w)
    for i in range(20):  # one a second from base_s, so a timestamp picks an offset
        p.produce("audit", key=b"k", value=b"a%d" % i, timestamp=(base_s + i) * 1000)
    eq(p.flush(30), 0, "records left unsent")

    def read(spec, count):
        out = run([PATHS["consumer"], str(w.port), "audit", spec, str(count)],
                  "amqp_offset_consumer %s" % spec)
        return [tuple(l.split(" ")) for l in out.splitlines()]

    eq(read("12", 8), [(str(i), "k", "a%d" % i) for i in range(12, 20)], "from offset 12")
    eq(read("first", 3), [(str(i), "k", "a%d" % i) for i in range(3)], "from first")
    eq(read("@%d" % (base_s + 15), 5), [(str(i), "k", "a%d" % i) for i in range(15, 20)],
       "from the timestamp of record 15")


# ---- replay -----------------------------------------------------------------------------------

@with_yaml(AMQP_TO_LOG)
def test_rewound_group_rereads_amqp_messages(w):
    def publish(ch, batch):
        for i in range(30):
            key = KEYS[i % len(KEYS)]
            ch.basic_publish("shop", key, json.dumps({"key": key, "id": i,
                                                      "batch": batch}).encode())

    with amqp(w) as conn:
        ch = confirmed(conn)
        publish(ch, "a")
        mark = kt.now_ms() + 1
        kt.wait_until(lambda: kt.now_ms() > mark, "the clock to pass the mark")
        publish(ch, "b")
    first = consume_all(w, "replay", 60)
    eq(sorted(json.loads(m.value())["batch"] for m in first), ["a"] * 30 + ["b"] * 30,
       "the group's first reading")

    # Rewind the group to the first record at or after the mark, as kafka-consumer-groups
    # --reset-offsets --to-datetime does.
    c = consumer(w, "replay")
    found = c.offsets_for_times([TopicPartition("events", p, mark) for p in range(3)],
                                timeout=10)
    rewind = [TopicPartition("events", tp.partition,
                             tp.offset if tp.offset >= 0 else
                             c.get_watermark_offsets(tp, timeout=10)[1]) for tp in found]
    c.commit(offsets=rewind, asynchronous=False)
    c.close()
    again = consume_all(w, "replay", 30)
    eq(sorted((json.loads(m.value())["batch"], json.loads(m.value())["id"]) for m in again),
       [("b", i) for i in range(30)], "what the rewound group re-read")
    check_order_per_key([(m.key(), json.loads(m.value())["id"]) for m in again], "replay")


# ---- the example configs ----------------------------------------------------------------------

def example(name):
    """Decorator: the test's broker runs SOURCE_DIR/examples/NAME (see run_one)."""
    def mark(fn):
        fn.example = name
        return fn
    return mark


@example("kafka-like.yaml")
def test_example_kafka_like(w):
    eq(w.port, None, "an AMQP listener in kafka-like.yaml")
    md = json.loads(run(["kcat", "-L", "-J", "-b", kt.bootstrap(w)], "kcat -L"))
    parts = {t["topic"]: len(t["partitions"]) for t in md["topics"]}
    eq((parts.get("clicks"), parts.get("profiles")), (6, 3), "partitions of the declared topics")
    produce_orders(w, "clicks", ["u1", "u2", "u3"], 20)
    c = consumer(w, "dash")
    got = read_assigned(c, range(6), "clicks", 60, "clicks")
    c.close()
    eq(len(got), 60, "records read back from clicks")
    eq({m.key(): len({x.partition() for x in got if x.key() == m.key()}) for m in got},
       {b"u1": 1, b"u2": 1, b"u3": 1}, "partitions each key landed in")
    check_order_per_key([key_id(m.value()) for m in got], "clicks")
    produce_orders(w, "fresh", ["k"], 1)
    md = json.loads(run(["kcat", "-L", "-J", "-b", kt.bootstrap(w), "-t", "fresh"], "kcat -L"))
    eq(len(md["topics"][0]["partitions"]), 3, "partitions of an auto-created topic")


@example("rabbit-like.yaml")
def test_example_rabbit_like(w):
    eq(w.kafka_port, None, "a Kafka listener in rabbit-like.yaml")
    url = "amqp://guest:guest@127.0.0.1:%d" % w.port
    for key in ("task.resize", "task.crop", "other"):
        run(["amqp-publish", "--url", url, "-e", "tasks", "-r", key, "-p", "-b", key],
            "amqp-publish")
    with amqp(w) as conn:
        ch = confirmed(conn)
        ch.basic_publish("notifications", "", b"hello all")
        eq([depth(ch, q) for q in ("tasks-work", "notify-email", "notify-sms")], [2, 1, 1],
           "ready in tasks-work, notify-email, notify-sms")
        m, _, body = ch.basic_get("tasks-work")
        eq(body, b"task.resize", "the first task")
        ch.basic_nack(m.delivery_tag, requeue=False)
        kt.wait_until(lambda: depth(ch, "tasks-failed") == 1, "the rejected task in tasks-failed")
    eq(w.stop(), 0, "warren's exit status after SIGTERM")
    w.start()
    with amqp(w) as conn:
        ch = conn.channel()
        got = [ch.basic_get(q, auto_ack=True)[2] for q in ("tasks-work", "tasks-failed")]
        eq(got, [b"task.crop", b"task.resize"], "persistent tasks after a restart")
        eq(depth(ch, "notify-email"), 0, "memory queue after a restart")


@example("hybrid.yaml")
def test_example_hybrid(w):
    produce_all(producer(w), "orders", [(b"o-1", b'{"id": 1, "region": "america"}'),
                                        (b"o-3", b'{"id": 3}')])
    produce_all(producer(w), "orders", [(b"o-2", b'{"id": 2}')], headers=[("region", b"europe")])
    with amqp(w) as conn:
        ch = conn.channel()
        kt.wait_until(lambda: [depth(ch, q) for q in ("orders-europe", "orders-america",
                                                       "orders-unrouted")] == [1, 1, 1],
                      "one order in each of europe, america and unrouted")
        m, props, body = ch.basic_get("orders-europe")
        eq((m.routing_key, body, props.headers.get("region")), ("o-2", b'{"id": 2}', "europe"),
           "the european order")
        ch.basic_reject(m.delivery_tag, requeue=False)
        kt.wait_until(lambda: depth(ch, "orders-dead") == 1, "the rejected order in orders-dead")
        eq(ch.basic_get("orders-america", auto_ack=True)[2], b'{"id": 1, "region": "america"}',
           "the american order")
        ch = confirmed(conn)
        ch.basic_publish("events", "shop.login", b"user 7 logged in",
                         pika.BasicProperties(headers={"user": 7}))
    rec = kcat_records(w, "events", 1)[0]
    eq((rec["key"], rec["payload"], rec["headers"][:-1]),
       ("shop.login", "user 7 logged in", [("user", "7")]), "the AMQP event read by kcat")


def run_one(name, fn, binary, plugin_dir, source, consumer_bin):
    """kafka_testlib's run_one; for an example test, its broker runs the example's config."""
    PATHS.update(source=source, consumer=consumer_bin)
    if not getattr(fn, "example", None):
        return kt.run_one(name, fn, binary, plugin_dir)
    kt.Warren = functools.partial(Warren, config_file=os.path.join("examples", fn.example),
                                  cwd=source)
    try:
        return kt.run_one(name, fn, binary, plugin_dir)
    finally:
        kt.Warren = Warren


if __name__ == "__main__":
    sys.exit(kt.run_tests(sys.argv, globals(), __doc__, 4, run_one, kt.on_alarm))
