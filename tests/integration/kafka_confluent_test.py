#!/usr/bin/python3
"""kafka_confluent_test.py: warren's Kafka transport as librdkafka (confluent-kafka) sees it.

    kafka_confluent_test.py WARREN_BIN PLUGIN_DIR [TEST...]   each test against a fresh warren
    kafka_confluent_test.py --list                            the test names

- an idempotent producer with acks=all: every delivery reported, a producer id assigned,
  every record read back once, in order per key, with its key and headers;
- a consumer group of three members, one joining late and one leaving: after each rebalance
  every partition is owned by exactly one member;
- committed offsets: a group resumes where it committed after its consumers restart and after
  warren restarts (on the same data directory);
- acks=1 is answered at append, acks=all after the flush; graceful shutdown: an acks=all
  produce still waiting for its flush when warren gets SIGTERM is answered as delivered, and
  its record is there after the restart.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kafka_testlib as kt  # noqa: E402
from kafka_testlib import check, eq, topics, with_yaml  # noqa: E402

from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaError,  # noqa: E402
                             KafkaException, Producer, TopicPartition)

# A commit racing a rebalance may be refused with one of these; the message then goes to the
# partition's next owner, which the group test allows (it counts distinct offsets).
REBALANCE_ERRORS = (KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION,
                    KafkaError.UNKNOWN_MEMBER_ID)

GROUP_CONF = {
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 300,
    "max.poll.interval.ms": 60000,
    "enable.auto.commit": False,
    "auto.offset.reset": "earliest",
}


def producer(w, **conf):
    c = {"bootstrap.servers": kt.bootstrap(w), "acks": "all", "linger.ms": 5,
         "message.timeout.ms": 20000}
    c.update(conf)
    return Producer(c)


def produce_all(p, topic, records, headers=None):
    """Produces (key, value) records; returns their delivery reports (msg objects) after
    checking that every one was delivered without an error."""
    delivered, errors = [], []

    def report(err, msg):
        (errors if err else delivered).append(err or msg)

    for key, value in records:
        while True:
            try:
                p.produce(topic, value=value, key=key, headers=headers, on_delivery=report)
                break
            except BufferError:  # the local queue is full: serve reports, then retry
                p.poll(0.1)
        p.poll(0)
    left = p.flush(30)
    eq(left, 0, "messages still undelivered 30 s after flush")
    eq(errors, [], "delivery errors")
    eq(len(delivered), len(records), "delivery reports")
    return delivered


def consumer(w, group, **conf):
    c = {"bootstrap.servers": kt.bootstrap(w), "group.id": group}
    c.update(GROUP_CONF)
    c.update(conf)
    return Consumer(c)


def read_assigned(c, partitions, topic, want, what):
    """Reads from the start of the given partitions (no group) until want messages came."""
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    got = []

    def more():
        for m in c.consume(num_messages=1000, timeout=0.2):
            check(m.error() is None or m.error().code() == KafkaError._PARTITION_EOF,
                  "consume error: %s" % (m.error(),))
            if m.error() is None:
                got.append(m)
        return len(got) >= want

    kt.wait_until(more, "%d messages of %s (have %d)" % (want, what, len(got)))
    return got


@with_yaml(topics(("idem", 3)))
def test_idempotent_producer_acks_all(w):
    stats = []
    p = producer(w, **{"enable.idempotence": True, "statistics.interval.ms": 100,
                       "stats_cb": stats.append})
    n = 3000
    records = [(b"key-%d" % (i % 10), b"value-%d" % i) for i in range(n)]
    hdrs = [("app", b"kafka_confluent_test"), ("bin", bytes(range(256)))]
    reports = produce_all(p, "idem", records, headers=hdrs)
    # librdkafka reports the producer id InitProducerId gave it in its statistics.
    kt.wait_until(lambda: stats and json.loads(stats[-1]).get("eos", {}).get("idemp_state"),
                  "librdkafka statistics with an idempotence state", step=lambda: p.poll(0.1))
    eos = json.loads(stats[-1])["eos"]
    eq(eos["idemp_state"], "Assigned", "idempotent producer state")
    check(eos["producer_id"] >= 0, "no producer id assigned: %r" % eos)
    offsets = {}
    for m in reports:
        offsets.setdefault(m.partition(), []).append(m.offset())
    for part, offs in offsets.items():
        eq(sorted(offs), list(range(len(offs))), "acked offsets of partition %d" % part)

    c = Consumer({"bootstrap.servers": kt.bootstrap(w), "group.id": "reader",
                  "enable.auto.commit": False})
    got = read_assigned(c, range(3), "idem", n, "topic idem")
    c.close()
    eq(sorted(m.value() for m in got), sorted(v for _, v in records), "values read back once")
    per_key = {}
    for m in got:
        per_key.setdefault(m.key(), []).append(int(m.value().split(b"-")[1]))
        eq(m.headers(), hdrs, "headers of %r" % m.value())
    for k, vals in per_key.items():
        eq(vals, sorted(vals), "order of key %r" % k)


class Member:
    """A group member polled by the test thread; assignment is what its last rebalance gave."""

    def __init__(self, w, name, group, topic):
        self.name = name
        self.assignment = set()
        self.seen = []
        self.c = consumer(w, group, **{"client.id": name})
        self.c.subscribe([topic], on_assign=self.on_assign, on_revoke=self.on_revoke)

    def on_assign(self, c, parts):
        self.assignment = {p.partition for p in parts}

    def on_revoke(self, c, parts):
        self.assignment = set()

    def poll(self):
        m = self.c.poll(0.05)
        if m is not None and m.error() is None:
            self.seen.append((m.partition(), m.offset()))
            try:
                self.c.commit(message=m, asynchronous=False)
            except KafkaException as e:
                if e.args[0].code() not in REBALANCE_ERRORS:
                    raise


def owned_once(members, n_parts):
    """True when every partition is owned by exactly one member and every member owns one."""
    owners = [p for m in members for p in m.assignment]
    return (sorted(owners) == list(range(n_parts)) and all(m.assignment for m in members))


@with_yaml(topics(("grouped", 6)))
def test_group_rebalance(w):
    p = producer(w)
    produce_all(p, "grouped", [(b"k%d" % i, b"v%d" % i) for i in range(600)])
    members = [Member(w, "m1", "g", "grouped"), Member(w, "m2", "g", "grouped")]

    def poll_all():
        for m in members:
            m.poll()

    def settled(what):
        kt.wait_until(lambda: owned_once(members, 6), what, timeout=45, step=poll_all)
        return {m.name: sorted(m.assignment) for m in members}

    first = settled("two members to split 6 partitions")
    late = Member(w, "m3", "g", "grouped")
    members.append(late)
    second = settled("three members to split 6 partitions after m3 joined late: %r" % first)
    check(all(len(a) == 2 for a in second.values()),
          "a range or round-robin split of 6 over 3 gives 2 each: %r" % second)
    leaving = members.pop(1)
    leaving.c.close()
    third = settled("m1 and m3 to split 6 partitions after m2 left: %r" % second)
    # Every message was consumed and committed by someone; read the commits back.
    def seen():
        return set(members[0].seen) | set(members[1].seen) | set(leaving.seen)

    kt.wait_until(lambda: len(seen()) >= 600, "600 messages consumed by the group",
                  step=poll_all)
    seen = seen()
    eq(len(seen), 600, "distinct (partition, offset) pairs consumed by the group")
    ends = {}
    for part, off in seen:
        ends[part] = max(ends.get(part, -1), off + 1)

    def commits():
        got = members[0].c.committed([TopicPartition("grouped", i) for i in range(6)],
                                     timeout=10)
        return {tp.partition: tp.offset for tp in got}

    kt.wait_until(lambda: commits() == ends, "committed offsets to be the ends of what was "
                  "consumed %r, after %r" % (ends, third), step=poll_all)
    for m in members:
        m.c.close()


def consume_group(w, group, topic, n_parts, want, commit_upto=None):
    """One consumer in group reads until want messages came (or commit_upto, when given,
    marks how many to process and commit); commits exactly what it processed, closes, and
    returns the processed messages as (partition, offset, value)."""
    c = consumer(w, group)
    c.subscribe([topic])
    done = []

    def step():
        m = c.poll(0.1)
        if m is not None and m.error() is None and len(done) < (commit_upto or want):
            done.append((m.partition(), m.offset(), m.value()))
            c.commit(message=m, asynchronous=False)

    kt.wait_until(lambda: len(done) >= (commit_upto or want),
                  "%d messages in group %s (have %d)" % (commit_upto or want, group, len(done)),
                  step=step, timeout=45)
    c.close()
    return done


def committed_offsets(w, group, topic, n_parts):
    c = consumer(w, group)
    got = c.committed([TopicPartition(topic, i) for i in range(n_parts)], timeout=10)
    c.close()
    return {tp.partition: tp.offset for tp in got}


def resume_check(w, restart):
    p = producer(w)
    produce_all(p, "resume", [(None, b"r%d" % i) for i in range(200)])
    first = consume_group(w, "rg", "resume", 3, 200, commit_upto=80)
    want = {}
    for part, off, _ in first:
        want[part] = max(want.get(part, 0), off + 1)
    w2 = restart()
    eq({k: v for k, v in committed_offsets(w2, "rg", "resume", 3).items() if v >= 0}, want,
       "offsets committed before the restart")
    rest = consume_group(w2, "rg", "resume", 3, 120)
    values = [v for _, _, v in first] + [v for _, _, v in rest]
    eq(sorted(values), sorted(b"r%d" % i for i in range(200)),
       "the group resumed exactly after its commits (nothing twice, nothing skipped)")
    for part in range(3):
        offs = [o for pp, o, _ in rest if pp == part]
        if offs:
            eq(offs[0], want.get(part, 0), "first offset of partition %d after the restart"
               % part)


@with_yaml(topics(("resume", 3)))
def test_commits_resume_after_consumer_restart(w):
    resume_check(w, lambda: w)


@with_yaml(topics(("resume", 3)))
def test_commits_resume_after_warren_restart(w):
    def restart():
        eq(w.stop(), 0, "warren's exit status after SIGTERM")
        return w.start()

    resume_check(w, restart)


@with_yaml(topics(("packed", 1)))
def test_compressed_batches_round_trip(w):
    """Batches compressed by the producer are stored as they came (the CRC covers the
    compressed bytes) and fetched back for the consumer to decompress: every codec
    librdkafka offers."""
    expected = []
    for codec in ("gzip", "snappy", "lz4", "zstd"):
        records = [(b"%s-%d" % (codec.encode(), i), b"%s value %d " % (codec.encode(), i) * 20)
                   for i in range(300)]
        produce_all(producer(w, **{"compression.type": codec, "linger.ms": 50}), "packed",
                    records)
        expected += records
    c = consumer(w, "packed-reader")
    got = read_assigned(c, [0], "packed", len(expected), "compressed records")
    c.close()
    eq([(m.key(), m.value()) for m in got], expected, "records after compression")
    offsets = [m.offset() for m in got]
    eq(offsets, list(range(len(expected))), "offsets of the records")
    # librdkafka silently sends uncompressed batches to a broker whose versions it thinks too
    # old for a codec: the segment must hold batches of every codec, as they came.
    seg = os.path.join(w.dir, "data", "%2F", "packed", "0", "00000000000000000000.log")
    with open(seg, "rb") as f:
        data = f.read()
    codecs, pos = set(), 16  # the segment's own header, then RecordBatch v2 after another
    while pos + 23 <= len(data):
        length = int.from_bytes(data[pos + 8:pos + 12], "big")
        codecs.add(int.from_bytes(data[pos + 21:pos + 23], "big") & 7)
        pos += 12 + length
    eq(codecs, {1, 2, 3, 4}, "compression codecs of the stored batches (gzip 1 ... zstd 4)")


@with_yaml("vhosts:\n  - name: /\n    queues:\n"
           "      - {name: slow, storage: log, partitions: 1, durable: true,\n"
           "         options: {flush: interval, flush_interval: 30s}}\n")
def test_acks_all_answered_at_shutdown(w):
    """The topic syncs every 30 s, so the produce is still waiting for its flush when
    SIGTERM comes: warren syncs the log before it closes connections and answers it."""
    seg = os.path.join(w.dir, "data", "%2F", "slow", "0", "00000000000000000000.log")
    empty = os.path.getsize(seg)
    reports = []
    p = producer(w, **{"linger.ms": 0, "message.timeout.ms": 15000, "retries": 0})
    p.produce("slow", key=b"k", value=b"in flight at stop",
              on_delivery=lambda err, msg: reports.append((err, msg)))
    p.poll(0)
    kt.wait_until(lambda: os.path.getsize(seg) > empty, "the record in the segment")
    # acks=1 is answered at append, as Kafka's leader does, not after the 30 s flush.
    quick = producer(w, **{"acks": 1, "linger.ms": 0, "message.timeout.ms": 15000})
    produce_all(quick, "slow", [(b"k1", b"acks=1")])
    eq(reports, [], "acks=all delivery reports before the 30 s flush")
    eq(w.stop(), 0, "warren's exit status after SIGTERM")
    p.flush(10)
    eq(len(reports), 1, "delivery reports after warren stopped")
    err, msg = reports[0]
    eq(err, None, "the delivery error")
    eq(msg.offset(), 0, "the delivered offset (the acks=1 record came after it)")
    w.start()
    c = consumer(w, "after-stop")
    got = read_assigned(c, [0], "slow", 2, "the records produced before the stop")
    c.close()
    eq([(m.key(), m.value()) for m in got], [(b"k", b"in flight at stop"), (b"k1", b"acks=1")],
       "records")


if __name__ == "__main__":
    sys.exit(kt.main(sys.argv, globals(), __doc__))
