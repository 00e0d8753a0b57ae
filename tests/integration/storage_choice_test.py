"""storage_choice_test.py: which storage a queue declared over AMQP gets, and what survives.

RabbitMQ's users expect a durable queue's persistent messages to survive a restart; warren
puts durable queues on the `queue` storage by default. The config may say otherwise per
vhost (`amqp_storage`) and per queue (a queue it declares keeps its `storage`). Each choice
is checked by what a client sees after kill -9 and a restart on the same data directory.
A wrong `amqp_storage` stops start-up with the config file's line and column.

    /usr/bin/python3 storage_choice_test.py WARREN_BIN PLUGIN_DIR
"""
import os
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

import pika  # noqa: E402

CONFIG = """vhosts:
  - name: /
    queues:
      - {name: cfg-memory, storage: memory, durable: true}
  - name: fast
    amqp_storage: {durable: memory}
users:
  - {name: guest, password: guest, vhosts: ["/", fast]}
"""


def channel(port, vhost):
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, vhost))
    ch = conn.channel()
    ch.confirm_delivery()
    return conn, ch


def depth(port, vhost, queue):
    conn, ch = channel(port, vhost)
    n = ch.queue_declare(queue, durable=True).method.message_count
    conn.close()
    return n


def main(argv):
    binary, plugin_dir = argv[1], argv[2]
    w = harness.Warren(binary, plugin_dir, extra_yaml=CONFIG)
    try:
        w.start()
        for vhost, queue in (("/", "durable"), ("fast", "durable"), ("/", "cfg-memory")):
            conn, ch = channel(w.port, vhost)
            ch.queue_declare(queue, durable=True)
            for i in range(3):
                ch.basic_publish("", queue, b"m%d" % i, pika.BasicProperties(delivery_mode=2))
            conn.close()
        w.proc.send_signal(signal.SIGKILL)
        w.proc.wait(timeout=10)
        w.proc = None
        w.start()
        results = {
            "durable queue in / (queue storage)": (depth(w.port, "/", "durable"), 3),
            "durable queue in fast (amqp_storage durable: memory)":
                (depth(w.port, "fast", "durable"), 0),
            "config queue on memory, declared durable over AMQP":
                (depth(w.port, "/", "cfg-memory"), 0),
        }
        assert w.stop() == 0
        for what, (got, want) in results.items():
            assert got == want, "%s: %d messages after kill -9, want %d" % (what, got, want)
            print("%s: %d messages after kill -9 and restart" % (what, got))

        bad = os.path.join(w.dir, "bad.yaml")
        with open(w.config) as f, open(bad, "w") as out:
            out.write(f.read().replace("amqp_storage: {durable: memory}",
                                       "amqp_storage: {stream: memory}"))
        p = subprocess.run([binary, bad], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=30)
        text = p.stdout.decode(errors="replace")
        assert p.returncode != 0, "a stream on memory storage was accepted:\n" + text
        assert bad + ":" in text and "log model" in text, text
        print("amqp_storage stream: memory refused: " + text.strip().splitlines()[-1])
        print("PASS storage choice")
        return 0
    finally:
        w.stop()
        w.cleanup()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
