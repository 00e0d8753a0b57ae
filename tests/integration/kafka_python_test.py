#!/usr/bin/python3
"""kafka_python_test.py: warren's Kafka transport as kafka-python (Debian's python3-kafka) sees it.

    kafka_python_test.py WARREN_BIN PLUGIN_DIR [TEST...]   each test against a fresh warren
    kafka_python_test.py --list                            the test names

kafka-python 2.0.2 finds the broker's version from ApiVersions and speaks old request
versions (Metadata v0/v1, OffsetCommit v2, OffsetFetch v1, FindCoordinator v0): produce with
acks=all, consume in a group, commit, and a second consumer of the group resumes after the
commits.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kafka_testlib as kt  # noqa: E402
from kafka_testlib import check, eq, topics, with_yaml  # noqa: E402

from kafka import KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402
from kafka.structs import OffsetAndMetadata  # noqa: E402


def group_consumer(w, group, topic):
    return KafkaConsumer(topic, bootstrap_servers=kt.bootstrap(w), group_id=group,
                         auto_offset_reset="earliest", enable_auto_commit=False,
                         session_timeout_ms=6000, heartbeat_interval_ms=500,
                         request_timeout_ms=15000)


def take(c, n):
    """Polls until n records came; returns them (no more than n)."""
    got = []

    def more():
        for records in c.poll(timeout_ms=200, max_records=n - len(got)).values():
            got.extend(records)
        return len(got) >= n

    kt.wait_until(more, "%d records (have %d)" % (n, len(got)), timeout=45)
    return got


def produce(w, topic, n):
    p = KafkaProducer(bootstrap_servers=kt.bootstrap(w), acks="all", linger_ms=5,
                      request_timeout_ms=15000)
    futures = [p.send(topic, key=b"k%d" % (i % 5), value=b"v%d" % i) for i in range(n)]
    metas = [f.get(timeout=30) for f in futures]
    p.close(timeout=10)
    per_part = {}
    for m in metas:
        per_part.setdefault(m.partition, []).append(m.offset)
    for part, offs in per_part.items():
        eq(sorted(offs), list(range(len(offs))), "acked offsets of partition %d" % part)
    return metas


@with_yaml(topics(("kp", 3)))
def test_produce_consume_group_commit(w):
    produce(w, "kp", 200)
    c = group_consumer(w, "kpg", "kp")
    first = take(c, 120)
    commits = {}
    for r in first:
        tp = TopicPartition(r.topic, r.partition)
        commits[tp] = max(commits.get(tp, 0), r.offset + 1)
    c.commit({tp: OffsetAndMetadata(off, None) for tp, off in commits.items()})
    for tp, off in commits.items():
        eq(c.committed(tp), off, "committed offset of %s" % (tp,))
    c.close()

    c = group_consumer(w, "kpg", "kp")
    rest = take(c, 80)
    extra = c.poll(timeout_ms=1000)
    c.close()
    eq(sum(len(v) for v in extra.values()), 0, "records after all 200")
    values = sorted(r.value for r in first + rest)
    eq(values, sorted(b"v%d" % i for i in range(200)),
       "the second consumer of the group resumed exactly after the commits")
    by_key = {}
    for r in first + rest:
        by_key.setdefault(r.key, set()).add(r.partition)
    check(all(len(ps) == 1 for ps in by_key.values()), "a key on two partitions: %r" % by_key)


@with_yaml(topics(("kp1", 1)))
def test_assign_seek_and_offsets(w):
    produce(w, "kp1", 30)
    c = KafkaConsumer(bootstrap_servers=kt.bootstrap(w), enable_auto_commit=False,
                      request_timeout_ms=15000)
    tp = TopicPartition("kp1", 0)
    c.assign([tp])
    eq(c.beginning_offsets([tp]), {tp: 0}, "beginning offsets")
    eq(c.end_offsets([tp]), {tp: 30}, "end offsets")
    c.seek(tp, 25)
    eq([r.value for r in take(c, 5)], [b"v%d" % i for i in range(25, 30)], "records from 25")
    c.close()


if __name__ == "__main__":
    sys.exit(kt.main(sys.argv, globals(), __doc__))
