#!/usr/bin/python3
"""forward_test.py: Kafka into exchanges (forward_to) against the warren binary, with real
clients: confluent-kafka produces, pika consumes with manual acks.

    forward_test.py WARREN_BIN PLUGIN_DIR [TEST...]   each test against a fresh warren
    forward_test.py --list                            the test names

- Keyed records produced to a topic whose queue forwards to a topic exchange reach the AMQP
  queue bound to it: every id once, in order per key, the record key as routing key and the
  record headers as AMQP headers.
- A backlog of 20,000 records, forwarded while warren gets SIGTERM (the AMQP queue has some
  but not all of them), is complete after a restart on the same data directory: every id
  exactly once.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kafka_testlib as kt  # noqa: E402
from kafka_testlib import check, eq, with_yaml  # noqa: E402

import pika  # noqa: E402
from confluent_kafka import Producer  # noqa: E402

SINKS = 30  # more queues bound to the exchange: a backlog takes long enough to stop midway


def topology(forward=True, sinks=0):
    return ("vhosts:\n  - name: /\n"
            "    exchanges:\n      - {name: fx, type: topic, durable: true}\n"
            "    queues:\n"
            "      - {name: events, storage: log, partitions: 3, durable: true%s}\n"
            "      - {name: work, storage: queue, durable: true}\n"
            % (", forward_to: fx" if forward else "") +
            "".join("      - {name: sink%d, storage: queue, durable: true}\n" % i
                    for i in range(sinks)) +
            "    bindings:\n      - {exchange: fx, queue: work, key: \"#\"}\n" +
            "".join("      - {exchange: fx, queue: sink%d, key: \"#\"}\n" % i
                    for i in range(sinks)))


def produce(w, records):
    """Produces (key, id, seq) records to topic events with acks=all; every one must be
    acknowledged."""
    p = Producer({"bootstrap.servers": kt.bootstrap(w), "acks": "all", "linger.ms": 5,
                  "message.timeout.ms": 30000})
    failed = []
    for key, rid, seq in records:
        value = json.dumps({"id": rid, "key": key, "seq": seq}).encode()
        while True:
            try:
                p.produce("events", key=key.encode(), value=value,
                          headers=[("id", str(rid).encode())],
                          on_delivery=lambda err, msg: err and failed.append(err))
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    eq(p.flush(kt.WAIT_S), 0, "records left unsent")
    eq(failed, [], "failed deliveries")


def amqp(w):
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", w.port))


def depth(w, queue):
    conn = amqp(w)
    try:
        return conn.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        conn.close()


def consume(w, queue, want):
    """Consumes with manual acks until want messages arrived (or the deadline); returns the
    decoded bodies with their routing keys and headers, in arrival order."""
    conn = amqp(w)
    ch = conn.channel()
    ch.basic_qos(prefetch_count=500)
    got = []
    deadline = time.monotonic() + kt.WAIT_S
    for method, props, body in ch.consume(queue, inactivity_timeout=1):
        if method is not None:
            got.append((method.routing_key, props.headers or {}, json.loads(body)))
            ch.basic_ack(method.delivery_tag)
        if len(got) >= want or time.monotonic() > deadline:
            break
    ch.cancel()
    conn.close()
    return got


def check_once_in_order(got, ids):
    counts = {}
    last = {}
    for rk, headers, rec in got:
        counts[rec["id"]] = counts.get(rec["id"], 0) + 1
        eq(rk, rec["key"], "routing key of id %d" % rec["id"])
        hid = headers.get("id")
        hid = hid.decode() if isinstance(hid, bytes) else hid
        eq(hid, str(rec["id"]), "the id header of id %d" % rec["id"])
        check("x-stream-offset" not in headers, "x-stream-offset forwarded")
        check(rec["seq"] > last.get(rec["key"], -1),
              "key %s: seq %d after %d" % (rec["key"], rec["seq"], last.get(rec["key"], -1)))
        last[rec["key"]] = rec["seq"]
    eq(sorted(counts), sorted(ids), "the ids that arrived")
    dups = {i: n for i, n in counts.items() if n != 1}
    eq(dups, {}, "ids that arrived more than once")


def keyed(n, keys):
    seqs = {}
    out = []
    for rid in range(n):
        key = "k%d" % (rid % keys)
        seqs[key] = seqs.get(key, -1) + 1
        out.append((key, rid, seqs[key]))
    return out


@with_yaml(topology())
def test_keyed_records_reach_the_bound_queue_once_in_order(w):
    records = keyed(2000, 17)
    produce(w, records)
    got = consume(w, "work", len(records))
    check_once_in_order(got, [r[1] for r in records])
    eq(depth(w, "work"), 0, "messages left in work")


@with_yaml(topology(forward=False, sinks=SINKS))
def test_sigterm_while_forwarding_loses_and_repeats_nothing(w):
    records = keyed(20000, 50)
    produce(w, records)
    eq(w.stop(), 0, "warren's exit status")
    # The same topic now forwards: the backlog of 20,000 records goes to fx at start-up.
    with open(w.config) as f:
        text = f.read()
    with open(w.config, "w") as f:
        f.write(text.replace("durable: true}\n      - {name: work",
                             "durable: true, forward_to: fx}\n      - {name: work", 1))
    w.start()
    some = kt.wait_until(lambda: depth(w, "work"), "the first forwarded records", step=None)
    eq(w.stop(), 0, "warren's exit status after SIGTERM while forwarding")
    check(some < len(records), "forwarding was over (%d) before SIGTERM" % some)
    w.start()
    got = consume(w, "work", len(records))
    check_once_in_order(got, [r[1] for r in records])
    eq(depth(w, "work"), 0, "messages left in work")


if __name__ == "__main__":
    sys.exit(kt.main(sys.argv, globals(), __doc__))
