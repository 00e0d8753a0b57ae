#!/usr/bin/python3
"""kafka_kcat_test.py: warren's Kafka transport as kcat (librdkafka's command-line client) sees it.

    kafka_kcat_test.py WARREN_BIN PLUGIN_DIR [TEST...]   each test against a fresh warren
    kafka_kcat_test.py --list                            the test names

Metadata listing (-L), produce and consume with keys and headers, and consuming from an
offset, from the beginning, from the end backwards and from a timestamp (-o s@, -Q). Every
kcat run is bounded by `timeout` and by -e (exit at the end of the partition).
"""
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kafka_testlib as kt  # noqa: E402
from kafka_testlib import check, eq, topics, with_yaml  # noqa: E402

KCAT_S = 30  # the longest a kcat run may take


def kcat(w, *args, stdin=None):
    """Runs kcat against w's Kafka listener; returns its stdout, raises with stderr."""
    cmd = ["kcat", "-b", kt.bootstrap(w), "-X", "socket.timeout.ms=10000",
           "-X", "topic.metadata.refresh.interval.ms=1000"] + list(args)
    try:
        p = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=KCAT_S)
    except subprocess.TimeoutExpired as e:
        raise AssertionError("%s did not finish within %d s; stderr: %s"
                             % (" ".join(cmd), KCAT_S, e.stderr)) from None
    if p.returncode != 0:
        raise AssertionError("%s exited %d: %s" % (" ".join(cmd), p.returncode, p.stderr))
    return p.stdout


def produce(w, topic, lines, *args):
    """Produces one message per line with acks=all (kcat exits non-zero if one fails)."""
    kcat(w, "-P", "-t", topic, "-X", "acks=all", *args, stdin="".join(l + "\n" for l in lines))


def consume(w, topic, *args):
    """Consumes with -e (exit at the end) and returns the JSON envelopes, in kcat's order."""
    out = kcat(w, "-C", "-t", topic, "-e", "-J", *args)
    return [json.loads(line) for line in out.splitlines() if line.strip()]


@with_yaml(topics(("orders", 3), ("clicks", 1)))
def test_metadata_list(w):
    md = json.loads(kcat(w, "-L", "-J"))
    eq(len(md["brokers"]), 1, "brokers listed")
    broker = md["brokers"][0]
    eq(broker["name"], "127.0.0.1:%d" % w.kafka_port,
       "the broker's advertised address")
    by_name = {t["topic"]: t for t in md["topics"]}
    for name, n in (("orders", 3), ("clicks", 1)):
        check(name in by_name, "topic %s missing from metadata: %s" % (name, list(by_name)))
        t = by_name[name]
        check("error" not in t, "topic %s has an error: %s" % (name, t.get("error")))
        eq(sorted(p["partition"] for p in t["partitions"]), list(range(n)),
           "partitions of %s" % name)
        for p in t["partitions"]:
            eq(p["leader"], broker["id"], "leader of %s/%d" % (name, p["partition"]))
            eq(p["replicas"], [{"id": broker["id"]}], "replicas of %s/%d"
               % (name, p["partition"]))
            eq(p["isrs"], [{"id": broker["id"]}], "in-sync replicas of %s/%d"
               % (name, p["partition"]))
    # One topic by name; an unknown one is auto-created (the listener allows it).
    one = json.loads(kcat(w, "-L", "-J", "-t", "orders"))
    eq([t["topic"] for t in one["topics"]], ["orders"], "topics when asking for orders")
    kt.wait_until(lambda: any(t["topic"] == "fresh" and "error" not in t and t["partitions"]
                              for t in json.loads(kcat(w, "-L", "-J", "-t", "fresh"))["topics"]),
                  "topic fresh to be auto-created and listed with partitions", timeout=15)


@with_yaml(topics(("kh", 1)))
def test_keys_and_headers(w):
    lines = ["key-%d:value %d" % (i, i) for i in range(50)]
    produce(w, "kh", lines, "-K", ":", "-H", "trace=abc-123", "-H", "empty=", "-H", "dup=1",
            "-H", "dup=2")
    produce(w, "kh", ["no key here"])  # no -K: a null key, no headers
    got = consume(w, "kh", "-p", "0", "-o", "beginning", "-Z")
    eq(len(got), 51, "messages consumed")
    for i, m in enumerate(got[:50]):
        eq((m["partition"], m["offset"], m["key"], m["payload"]),
           (0, i, "key-%d" % i, "value %d" % i), "message %d" % i)
        eq(m.get("headers"), ["trace", "abc-123", "empty", "", "dup", "1", "dup", "2"],
           "headers of message %d (order and duplicates kept)" % i)
        eq(m["tstype"], "create", "timestamp type of message %d" % i)
    last = got[50]
    eq((last["offset"], last["key"], last["payload"]), (50, None, "no key here"),
       "the message produced without a key")
    check(not last.get("headers"), "headers on a message produced without: %r" % last)


@with_yaml(topics(("spread", 3)))
def test_consume_from_beginning(w):
    lines = ["k%d:v%d" % (i % 7, i) for i in range(300)]
    produce(w, "spread", lines, "-K", ":")
    got = consume(w, "spread", "-o", "beginning")
    eq(sorted(m["payload"] for m in got), sorted("v%d" % i for i in range(300)),
       "every message consumed once from the beginning of all partitions")
    parts = {}
    for m in got:
        parts.setdefault(m["partition"], []).append(m)
    eq(sorted(parts), [0, 1, 2], "partitions that received messages (7 keys over 3)")
    for p, ms in parts.items():
        eq([m["offset"] for m in ms], list(range(len(ms))), "offsets of partition %d" % p)
        # One key always lands on one partition, and its messages stay in order there.
        seen = {}
        for m in ms:
            seen.setdefault(m["key"], []).append(int(m["payload"][1:]))
        for k, vals in seen.items():
            eq(vals, sorted(vals), "order of key %s on partition %d" % (k, p))
    owners = {}
    for m in got:
        owners.setdefault(m["key"], set()).add(m["partition"])
    for k, ps in owners.items():
        eq(len(ps), 1, "partitions holding key %s" % k)


@with_yaml(topics(("offs", 1)))
def test_consume_from_offset(w):
    produce(w, "offs", ["m%d" % i for i in range(20)])
    eq([m["payload"] for m in consume(w, "offs", "-p", "0", "-o", "7")],
       ["m%d" % i for i in range(7, 20)], "consumed from offset 7")
    eq([m["offset"] for m in consume(w, "offs", "-p", "0", "-o", "-3")], [17, 18, 19],
       "offsets consumed from 3 before the end (-o -3)")
    eq([m["payload"] for m in consume(w, "offs", "-p", "0", "-o", "19")], ["m19"],
       "consumed from the last offset")
    eq(consume(w, "offs", "-p", "0", "-o", "end"), [], "consumed from the end")
    eq([m["payload"] for m in consume(w, "offs", "-p", "0", "-o", "5", "-c", "2")],
       ["m5", "m6"], "two consumed from offset 5 (-c 2)")


@with_yaml(topics(("times", 1)))
def test_consume_from_timestamp(w):
    produce(w, "times", ["before-%d" % i for i in range(10)])
    # Every record above has a create time below `mark`; every one below gets one above it.
    mark = kt.now_ms() + 1
    kt.wait_until(lambda: kt.now_ms() > mark, "the clock to pass the mark")
    produce(w, "times", ["after-%d" % i for i in range(10)])
    got = consume(w, "times", "-p", "0", "-o", "s@%d" % mark)
    eq([m["payload"] for m in got], ["after-%d" % i for i in range(10)],
       "consumed from timestamp %d" % mark)
    eq(got[0]["offset"], 10, "first offset at or after the timestamp")
    check(all(m["ts"] >= mark for m in got), "timestamps below the mark: %r"
          % [m["ts"] for m in got])
    everything = consume(w, "times", "-p", "0", "-o", "beginning")
    check(all(m["ts"] < mark for m in everything[:10]), "timestamps of the first ten not below "
          "the mark: %r" % [m["ts"] for m in everything[:10]])
    # Query mode asks ListOffsets by timestamp directly: "times [0] offset 10".
    out = kcat(w, "-Q", "-t", "times:0:%d" % mark)
    check("offset 10" in out, "kcat -Q for the mark did not give offset 10: %r" % out)
    out = kcat(w, "-Q", "-t", "times:0:0")
    check("offset 0" in out, "kcat -Q for timestamp 0 did not give offset 0: %r" % out)


if __name__ == "__main__":
    if shutil.which("kcat") is None and sys.argv[1:2] != ["--list"]:
        print("SKIPPED: kcat is not installed (apt-get install kcat)")
        sys.exit(77)
    sys.exit(kt.main(sys.argv, globals(), __doc__))
