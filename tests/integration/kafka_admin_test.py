#!/usr/bin/python3
"""kafka_admin_test.py: topics that grow, and idempotent producers across a restart.

    kafka_admin_test.py WARREN_BIN PLUGIN_DIR [TEST...]   each test against a fresh warren
    kafka_admin_test.py --list                            the test names

- CreatePartitions (confluent-kafka's AdminClient): a topic grows from 1 to 3 partitions,
  Metadata shows them at once, a record produced to partition 2 is consumed back; a count that
  is not larger, an unknown topic and replica assignments naming another broker get Kafka's
  errors and messages; validate_only changes nothing; after warren restarts on the same data
  directory the topic still has 3 partitions and partition 2 its record.
- Idempotent producers (raw Produce requests, built with kafka-python's batch builder): a
  batch with a fixed producer id, epoch and sequence, sent again after warren restarted, gets
  its first offset back with no error and is stored once; a sequence gap is
  OUT_OF_ORDER_SEQUENCE_NUMBER; the next sequence is appended.
"""
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kafka_testlib as kt  # noqa: E402
from kafka_testlib import check, eq, topics, with_yaml  # noqa: E402
from kafka_wire_test import connect, read_frame, request  # noqa: E402

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer  # noqa: E402
from confluent_kafka import TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic  # noqa: E402
from kafka.record.default_records import DefaultRecordBatchBuilder  # noqa: E402

PRODUCE = 0
OUT_OF_ORDER_SEQUENCE_NUMBER = 45


def admin(w):
    return AdminClient({"bootstrap.servers": kt.bootstrap(w)})


def partitions_of(a, topic):
    md = a.list_topics(topic, timeout=kt.WAIT_S)
    t = md.topics[topic]
    check(t.error is None, "metadata of %s: %s" % (topic, t.error))
    return len(t.partitions)


def grow(a, topic, count, assignments=None, validate_only=False):
    """CreatePartitions for one topic; returns None, or the KafkaError it failed with. The
    client a must outlive the future (a collected AdminClient fails it)."""
    np = NewPartitions(topic, count, assignments) if assignments else NewPartitions(topic, count)
    fut = a.create_partitions([np], validate_only=validate_only,
                              request_timeout=kt.WAIT_S)[topic]
    try:
        fut.result(timeout=kt.WAIT_S)
        return None
    except KafkaException as e:
        return e.args[0]


def refused(a, topic, count, code, message, assignments=None):
    err = grow(a, topic, count, assignments, validate_only=True)
    check(err is not None, "growing %s to %d was accepted" % (topic, count))
    eq(err.code(), code, "error of growing %s to %d" % (topic, count))
    eq(err.str(), message, "message of growing %s to %d" % (topic, count))


def produce_to(w, topic, partition, value):
    """Produces one record to a partition; returns its offset."""
    p = Producer({"bootstrap.servers": kt.bootstrap(w), "acks": "all",
                  "message.timeout.ms": 20000})
    reports = []
    p.produce(topic, value=value, partition=partition,
              on_delivery=lambda err, msg: reports.append((err, msg)))
    eq(p.flush(kt.WAIT_S), 0, "records left unsent")
    err, msg = reports[0]
    check(err is None, "delivery to %s[%d] failed: %s" % (topic, partition, err))
    return msg.offset()


def consume_all(w, topic, partition):
    """Every record of a partition, from offset 0 to its end, as (offset, value)."""
    c = Consumer({"bootstrap.servers": kt.bootstrap(w), "group.id": "admin-test",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    c.assign([TopicPartition(topic, partition, 0)])
    got = []

    def at_end():
        m = c.poll(0.2)
        if m is None:
            return False
        if m.error():
            check(m.error().code() == KafkaError._PARTITION_EOF, "fetch: %s" % m.error())
            return True
        got.append((m.offset(), m.value()))
        return False

    kt.wait_until(at_end, "the end of %s[%d]" % (topic, partition))
    c.close()
    return got


def restart(w):
    eq(w.stop(), 0, "warren's exit status at the restart")
    w.start()


def test_create_partitions_grows_a_topic(w):
    a = admin(w)
    a.create_topics([NewTopic("grown", 1, 1)])["grown"].result(timeout=kt.WAIT_S)
    eq(produce_to(w, "grown", 0, b"in partition 0"), 0, "offset in partition 0")

    eq(grow(a, "grown", 3, validate_only=True), None, "validate_only")
    eq(partitions_of(a, "grown"), 1, "partitions after validate_only")
    refused(a, "grown", 3, KafkaError.INVALID_REPLICA_ASSIGNMENT,
            "Unknown broker(s) in replica assignment: 7, 8.", [[7], [8, 0]])
    refused(a, "grown", 3, KafkaError.INVALID_REPLICA_ASSIGNMENT,
            "Increasing the number of partitions by 2 but 1 assignments provided.", [[0]])
    eq(grow(a, "grown", 3, [[0], [0]], validate_only=True), None, "assignments on node 0")

    eq(grow(a, "grown", 3), None, "growing 1 to 3")
    eq(partitions_of(a, "grown"), 3, "partitions after growing")
    refused(a, "grown", 2, KafkaError.INVALID_PARTITIONS,
            "Topic currently has 3 partitions, which is higher than the requested 2.")
    refused(a, "grown", 3, KafkaError.INVALID_PARTITIONS, "Topic already has 3 partitions.")
    refused(a, "absent", 2, KafkaError.UNKNOWN_TOPIC_OR_PART,
            "The topic 'absent' does not exist.")

    eq(produce_to(w, "grown", 2, b"in partition 2"), 0, "offset in the new partition 2")
    eq(consume_all(w, "grown", 2), [(0, b"in partition 2")], "partition 2")

    restart(w)
    eq(partitions_of(admin(w), "grown"), 3, "partitions after the restart")
    eq(consume_all(w, "grown", 2), [(0, b"in partition 2")], "partition 2 after the restart")
    eq(consume_all(w, "grown", 0), [(0, b"in partition 0")], "partition 0 after the restart")
    eq(produce_to(w, "grown", 2, b"after"), 1, "the next offset of partition 2")


@with_yaml(topics(("declared", 1)))
def test_a_declared_topic_keeps_its_new_partitions_after_a_restart(w):
    eq(grow(admin(w), "declared", 3), None, "growing the config's topic from 1 to 3")
    eq(produce_to(w, "declared", 2, b"in partition 2"), 0, "offset in partition 2")
    restart(w)  # the config still declares 1 partition
    eq(partitions_of(admin(w), "declared"), 3, "partitions after the restart")
    eq(consume_all(w, "declared", 2), [(0, b"in partition 2")], "partition 2 after the restart")
    check("3 partitions on disk, more than the 1 declared" in w.log(), "no notice logged")


# ---- idempotent producers, by raw Produce requests ------------------------------------------

PRODUCER_ID, EPOCH = 4242, 0


def batch(sequence, value, producer_id=PRODUCER_ID):
    """A one-record RecordBatch v2 as an idempotent producer sends it."""
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                  producer_id=producer_id, producer_epoch=EPOCH,
                                  base_sequence=sequence, batch_size=1 << 20)
    b.append(0, timestamp=int(time.time() * 1000), key=None, value=value, headers=[])
    return bytes(b.build())


def produce_raw(w, topic, records):
    """Produce v3 (acks=all) of one batch to partition 0; returns (error, base offset)."""
    name = topic.encode()
    body = (struct.pack(">hhi", -1, -1, 20000) +               # no transactional id, acks, timeout
            struct.pack(">ih", 1, len(name)) + name +         # one topic
            struct.pack(">iii", 1, 0, len(records)) + records)  # partition 0 and its records
    s = connect(w.kafka_port)
    s.settimeout(kt.WAIT_S)
    s.sendall(request(PRODUCE, 3, 11, body))
    frame = read_frame(s)
    s.close()
    check(frame is not None, "the Produce request closed the connection")
    corr, n_topics, name_len = struct.unpack(">iih", frame[:10])
    eq((corr, n_topics), (11, 1), "correlation id and topics of the Produce response")
    at = 10 + name_len
    n_parts, index, error, base = struct.unpack(">iihq", frame[at:at + 18])
    eq((n_parts, index), (1, 0), "partitions of the Produce response")
    return error, base


@with_yaml(topics(("idem", 1)))
def test_idempotent_batch_retried_after_a_restart_is_stored_once(w):
    eq(produce_raw(w, "idem", batch(-1, b"plain", producer_id=-1)), (0, 0), "a plain batch")
    first = batch(0, b"seq 0")
    eq(produce_raw(w, "idem", first), (0, 1), "sequence 0")
    eq(produce_raw(w, "idem", first), (0, 1), "sequence 0 again, before the restart")

    restart(w)
    eq(produce_raw(w, "idem", batch(5, b"seq 5"))[0], OUT_OF_ORDER_SEQUENCE_NUMBER,
       "a gap after the restart (the state came back from the log)")
    eq(produce_raw(w, "idem", first), (0, 1), "sequence 0 again, after the restart")
    eq(consume_all(w, "idem", 0), [(0, b"plain"), (1, b"seq 0")], "records after the retry")
    eq(produce_raw(w, "idem", batch(1, b"seq 1")), (0, 2), "the next sequence")
    eq(consume_all(w, "idem", 0), [(0, b"plain"), (1, b"seq 0"), (2, b"seq 1")], "records")


if __name__ == "__main__":
    sys.exit(kt.main(sys.argv, globals(), __doc__))
