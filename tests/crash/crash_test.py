"""crash_test.py: a durable queue or a log survives kill -9 with nothing confirmed lost.

Each round starts the real warren, publishes numbered persistent messages with publisher
confirms from pika, kills warren with SIGKILL at a random moment, restarts it on the same data
directory and reads back. The data directory lives on across rounds.

- queue: a durable queue on the `queue` storage (fsync before confirming), declared in the
  config. Each round drains it with basic.get: every message confirmed that round comes back
  exactly once and in order (the one publish whose confirm the kill cut off may or may not be
  there). Later rounds recover journals that earlier rounds' acks left behind.
- log: a stream (x-queue-type: stream) declared over AMQP, so its definition must survive
  the kills too, on the `log` storage with flush: always. Records stay, so each round reads
  the whole log from the first offset: every message confirmed in any round is there exactly
  once, all in publish order.
- kafka: a one-partition topic on the `log` storage with flush: always, declared in the
  config, produced to over the Kafka listener by librdkafka (python3-confluent-kafka) with
  acks=all and idempotence, many records in flight. Each round reads the partition from its
  first offset to its high watermark: every record acked in any round is there exactly once,
  all in produce order; records produced but not acked before the kill may be there too.

    /usr/bin/python3 crash_test.py queue|log|kafka WARREN_BIN PLUGIN_DIR [ROUNDS]
"""
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import wait_port  # noqa: E402

import pika  # noqa: E402

QUEUE = "crash-q"
STREAM_ARGS = {"x-queue-type": "stream"}


def config(backend, data_dir, plugin_dir):
    queues = {"queue": "{name: %s, storage: queue, durable: true, options: {flush: always}}"
                       % QUEUE,
              "kafka": "{name: %s, storage: log, partitions: 1, durable: true, "
                       "options: {flush: always}}" % QUEUE}.get(backend)
    kafka = ("  - {transport: kafka, host: 127.0.0.1, port: 0}\n" if backend == "kafka"
             else "")
    return ("broker:\n  data_dir: %s\n  plugin_dirs: [%s]\n"
            "listeners:\n  - {transport: amqp091, host: 127.0.0.1, port: 0}\n%s%s"
            "users:\n  - {name: guest, password: guest, vhosts: [\"/\"]}\n"
            % (data_dir, plugin_dir, kafka,
               "vhosts:\n  - name: /\n    queues:\n      - %s\n" % queues if queues else ""))


class Broker:
    """warren on the shared config; port is its AMQP port, and kafka_port its Kafka port
    when kafka is true."""

    def __init__(self, binary, conf, logpath, kafka=False):
        self.log = open(logpath, "a+")
        start = self.log.tell()  # the log is shared by every run: read this run's part only
        self.proc = subprocess.Popen([binary, conf], stdout=self.log, stderr=subprocess.STDOUT)
        self.port = self.kafka_port = None
        deadline = time.monotonic() + 20
        while self.port is None:
            self.log.flush()
            with open(logpath, errors="replace") as f:
                f.seek(start)
                text = f.read()
            found = re.findall(r"amqp091.*listening on 127\.0\.0\.1:(\d+)", text)
            found_kafka = re.findall(r"kafka.*listening on 127\.0\.0\.1:(\d+)", text)
            if found and (found_kafka or not kafka) and self.proc.poll() is None:
                self.port = int(found[-1])
                self.kafka_port = int(found_kafka[-1]) if kafka else None
            elif self.proc.poll() is not None:
                raise RuntimeError("warren exited with %d at start-up; see %s"
                                   % (self.proc.returncode, logpath))
            elif time.monotonic() > deadline:
                self.proc.kill()
                raise TimeoutError("warren did not listen within 20 s; see %s" % logpath)
            else:
                time.sleep(0.01)
        wait_port(self.port, proc=self.proc)
        if kafka:
            wait_port(self.kafka_port, proc=self.proc)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.log.close()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            status = self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise RuntimeError("warren did not exit within 15 s of SIGTERM")
        self.log.close()
        return status


def publish_until_killed(port, first, confirmed, stop):
    """Publishes first, first+1, ... with confirms until the connection dies or stop is set;
    appends each confirmed number to confirmed."""
    params = pika.ConnectionParameters("127.0.0.1", port, heartbeat=0,
                                       blocked_connection_timeout=10)
    try:
        conn = pika.BlockingConnection(params)
        ch = conn.channel()
        ch.confirm_delivery()
        n = first
        deadline = time.monotonic() + 20
        while not stop.is_set() and time.monotonic() < deadline:
            body = b"m%08d" % n
            ch.basic_publish("", QUEUE, body, pika.BasicProperties(delivery_mode=2),
                             mandatory=True)
            confirmed.append(n)  # basic_publish returned: the broker confirmed it
            n += 1
    except Exception:  # the kill: the connection drops mid-publish
        pass


def produce_until_killed(port, first, acked, produced, stop):
    """Produces first, first+1, ... with acks=all until stop is set, at most 100 records
    in flight (so a round stays in the tens of thousands); appends each acked number to acked (librdkafka reports them in order) and keeps
    produced[0] one past the last number produced."""
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": "127.0.0.1:%d" % port, "acks": "all",
                  "enable.idempotence": True, "linger.ms": 2,
                  "message.timeout.ms": 3000, "reconnect.backoff.max.ms": 100,
                  "log_level": 2})  # the refused reconnects after the kill are expected

    def report(err, msg):
        if err is None:
            acked.append(int(msg.value()[1:]))

    n = first
    deadline = time.monotonic() + 20
    while not stop.is_set() and time.monotonic() < deadline:
        if len(p) >= 100:
            p.poll(0.005)
            continue
        try:
            p.produce(QUEUE, b"m%08d" % n, on_delivery=report)
        except BufferError:
            p.poll(0.005)
            continue
        n += 1
        produced[0] = n
        p.poll(0)
    p.flush(10)  # after the kill, what is left fails by message.timeout.ms


def read_topic(port):
    """Every numbered record of partition 0 from its first offset to its high watermark."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": "127.0.0.1:%d" % port, "group.id": "crash-reader",
                  "enable.auto.commit": False})
    try:
        low, high = c.get_watermark_offsets(TopicPartition(QUEUE, 0), timeout=15)
        c.assign([TopicPartition(QUEUE, 0, OFFSET_BEGINNING)])
        got, offsets = [], []
        deadline = time.monotonic() + 60
        while (offsets[-1] + 1 if offsets else low) < high:
            if time.monotonic() > deadline:
                raise AssertionError("read %d records up to offset %s of [%d, %d) in 60 s"
                                     % (len(got), offsets[-1:], low, high))
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error():
                raise AssertionError("consume error: %s" % m.error())
            offsets.append(m.offset())
            got.append(int(m.value()[1:]))
    finally:
        c.close()
    if offsets != sorted(set(offsets)):
        raise AssertionError("log offsets not increasing: %r" % offsets[:50])
    return got


def declare_stream(port):
    """Declares the stream over AMQP (the first round creates it, later ones find it)."""
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    conn.channel().queue_declare(QUEUE, durable=True, arguments=STREAM_ARGS)
    conn.close()


def read_stream(port, rnd):
    """Every numbered record of the stream from the first offset, in offset order. A marker
    published (and confirmed) first, after recovery, ends the read: everything before it is
    what the log kept."""
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    ch = conn.channel()
    ch.confirm_delivery()
    marker = b"end of round %d" % rnd
    ch.basic_publish("", QUEUE, marker, pika.BasicProperties(delivery_mode=2))
    ch.basic_qos(prefetch_count=500)
    got, offsets, done = [], [], []

    def on_message(chan, method, props, body):
        offsets.append(props.headers["x-stream-offset"])
        if body == marker:
            done.append(True)
        elif body.startswith(b"m"):  # earlier rounds' markers are skipped
            got.append(int(body[1:]))
        chan.basic_ack(method.delivery_tag)

    ch.basic_consume(QUEUE, on_message, arguments={"x-stream-offset": "first"})
    deadline = time.monotonic() + 60
    while not done and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.1)
    conn.close()
    if not done:
        raise AssertionError("the end marker was not read back within 60 s")
    if offsets != sorted(set(offsets)):
        raise AssertionError("stream offsets not increasing: %r" % offsets[:50])
    return got


def drain(port):
    """Every message in the queue, in order (acked as read). Nobody consumed them before the
    kill, so none may come back marked redelivered."""
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    ch = conn.channel()
    got = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        method, _, body = ch.basic_get(QUEUE, auto_ack=True)
        if method is None:
            break
        if method.redelivered:
            raise AssertionError("%r came back redelivered, but was never delivered" % body)
        got.append(int(body[1:]))
    conn.close()
    return got


def main(argv):
    backend, binary, plugin_dir = argv[1], argv[2], argv[3]
    rounds = int(argv[4]) if len(argv) > 4 else 20
    work = tempfile.mkdtemp(prefix="warren-crash-")
    conf = os.path.join(work, "warren.yaml")
    logpath = os.path.join(work, "warren.log")
    with open(conf, "w") as f:
        f.write(config(backend, os.path.join(work, "data"), plugin_dir))
    rng = random.Random(int(os.environ.get("CRASH_SEED", time.time_ns() & 0xffffffff)))
    total = 0
    next_n = 0
    all_confirmed = []
    kafka = backend == "kafka"
    ok = False
    try:
        for r in range(rounds):
            b = Broker(binary, conf, logpath, kafka)
            if backend == "log" and r == 0:
                declare_stream(b.port)
            confirmed, stop, produced = [], threading.Event(), [next_n]
            if kafka:
                t = threading.Thread(target=produce_until_killed,
                                     args=(b.kafka_port, next_n, confirmed, produced, stop))
            else:
                t = threading.Thread(target=publish_until_killed,
                                     args=(b.port, next_n, confirmed, stop))
            t.start()
            # Kill after a random 20-400 ms of publishing, once at least one confirm came.
            deadline = time.monotonic() + 10
            while not confirmed and time.monotonic() < deadline and t.is_alive():
                time.sleep(0.002)
            time.sleep(rng.uniform(0.02, 0.4))
            b.kill9()
            stop.set()
            t.join(timeout=30)
            if not confirmed:
                raise AssertionError("round %d: no publish was confirmed before the kill" % r)
            b = Broker(binary, conf, logpath, kafka)
            got = (drain(b.port) if backend == "queue" else
                   read_topic(b.kafka_port) if kafka else read_stream(b.port, r))
            status = b.stop()
            if status != 0:
                raise AssertionError("round %d: warren exited %d after SIGTERM" % (r, status))
            if got != sorted(set(got)):
                raise AssertionError("round %d: messages out of order or repeated: %r"
                                     % (r, got[:50]))
            all_confirmed += confirmed
            have = set(got)
            missing = [n for n in (confirmed if backend == "queue" else all_confirmed)
                       if n not in have]
            if missing:
                raise AssertionError("round %d: %d confirmed messages lost, first %r"
                                     % (r, len(missing), missing[:10]))
            # Kafka: records in flight at the kill may be there unacked, never unproduced ones.
            extra = [n for n in got if (n >= produced[0] if kafka else n > confirmed[-1] + 1)
                     or (backend == "queue" and n < next_n)]
            if extra:
                raise AssertionError("round %d: messages not published this round came back: "
                                     "%r" % (r, extra[:10]))
            print("round %2d: %5d confirmed, %5d read back after kill -9 and restart"
                  % (r, len(confirmed), len(got)), flush=True)
            total += len(confirmed)
            next_n = (produced[0] if kafka else confirmed[-1]) + 2
        ok = True
        print("PASS (%s): %d kill -9 rounds, %d confirmed messages, none lost or repeated"
              % (backend, rounds, total))
        return 0
    finally:
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("FAIL; warren's log and data are kept in %s" % work, flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
