"""storage_startup_test.py: bad files on disk stop start-up with an error naming the file,
and nothing is deleted or changed.

warren starts with a durable queue on the `queue` storage and a log queue on the `log`
storage (both declared in the config), takes persistent messages into both and stops. Then,
one damage at a time, a segment file gets a wrong magic or a newer format version: warren
must exit non-zero at start-up, its output must name that file, and every file under the
data directory must be byte for byte what it was. With the file restored, warren starts and
every message is still there.

    /usr/bin/python3 storage_startup_test.py WARREN_BIN PLUGIN_DIR
"""
import hashlib
import os
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

import pika  # noqa: E402

QUEUES = """vhosts:
  - name: /
    queues:
      - {name: jobs, storage: queue, durable: true}
      - {name: events, storage: log, durable: true}
users:
  - {name: guest, password: guest, vhosts: ["/"]}
"""
N = 20


def snapshot(root):
    """{relative path: sha1} of every file under root."""
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = hashlib.sha1(fh.read()).hexdigest()
    return out


def fill(port):
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    ch = conn.channel()
    ch.confirm_delivery()
    for i in range(N):
        for q in ("jobs", "events"):
            ch.basic_publish("", q, b"%s-%d" % (q.encode(), i),
                             pika.BasicProperties(delivery_mode=2))
    conn.close()


def check_all_there(port):
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    ch = conn.channel()
    jobs = []
    for _ in range(N + 1):
        m, _, body = ch.basic_get("jobs", auto_ack=False)
        if m is None:
            break
        jobs.append(body)
    assert jobs == [b"jobs-%d" % i for i in range(N)], jobs
    ch.basic_qos(prefetch_count=100)
    events = []
    ch.basic_consume("events", lambda c, m, p, b: events.append(b),
                     arguments={"x-stream-offset": "first"})
    harness.wait_for(lambda: (conn.process_data_events(0.05), len(events) >= N)[1],
                     timeout=10, what="the log's records")
    assert events == [b"events-%d" % i for i in range(N)], events
    conn.close()


def start_fails(binary, config, path, what):
    """Runs warren on config and expects a start-up failure naming path."""
    p = subprocess.run([binary, config], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=30)
    out = p.stdout.decode(errors="replace")
    assert p.returncode != 0, "%s: warren started (exit %d):\n%s" % (what, p.returncode, out)
    assert path in out, "%s: the error does not name %s:\n%s" % (what, path, out)
    print("%s: exit %d, %s" % (what, p.returncode,
                               next(l for l in out.splitlines() if path in l).strip()))


def main(argv):
    binary, plugin_dir = argv[1], argv[2]
    w = harness.Warren(binary, plugin_dir, extra_yaml=QUEUES)
    try:
        w.start()
        fill(w.port)
        assert w.stop() == 0
        data = os.path.join(w.dir, "data")
        seg = os.path.join(data, "%2F", "jobs", "00000001.seg")
        log = os.path.join(data, "%2F", "events", "0", "00000000000000000000.log")
        damages = [
            (seg, 0, b"XXXX", "queue segment with a wrong magic"),
            (seg, 4, struct.pack("<I", 99), "queue segment from a newer format version"),
            (log, 0, b"WRLX", "log segment with a wrong magic"),
            (log, 4, struct.pack(">H", 99), "log segment from a newer format version"),
        ]
        for path, at, patch, what in damages:
            with open(path, "rb") as f:
                original = f.read()
            damaged = original[:at] + patch + original[at + len(patch):]
            with open(path, "wb") as f:
                f.write(damaged)
            before = snapshot(data)
            start_fails(binary, w.config, path, what)
            after = snapshot(data)
            assert before == after, "%s: files changed at the failed start: %r" % (
                what, sorted(set(before.items()) ^ set(after.items())))
            with open(path, "wb") as f:
                f.write(original)
        w.start()
        check_all_there(w.port)
        assert w.stop() == 0
        print("PASS storage start-up errors")
        return 0
    finally:
        w.stop()
        w.cleanup()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
