#!/usr/bin/python3
"""kafka_go_test.py: the Go Kafka clients Debian packages against warren, built in GOPATH mode.

    kafka_go_test.py SOURCE_DIR WARREN_BIN PLUGIN_DIR segmentio|confluent|examples

- segmentio, confluent: builds tests/integration/kafka_go and runs its checks for that client
  (segmentio/kafka-go, confluent-kafka-go through cgo and librdkafka);
- examples: builds examples/go-kafka (producer and consumer on segmentio/kafka-go) and runs
  them as a user would: 500 messages acknowledged with acks=all are printed exactly once by
  the consumer; then SIGTERM while the consumer works on a slow message: it exits 0, the
  message in hand was committed, and the next consumer of the group prints exactly the rest.

Exits 77 (ctest: skipped) when go or the client's package is missing.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kafka_testlib as kt  # noqa: E402
from harness import Warren  # noqa: E402

GOPATH = "/usr/share/gocode"
SEGMENTIO = "github.com/segmentio/kafka-go"
CONFLUENT = "github.com/confluentinc/confluent-kafka-go/kafka"
# kafka_go is one program, so either of its clients needs both packages to build.
PACKAGES = {"segmentio": [SEGMENTIO, CONFLUENT], "confluent": [SEGMENTIO, CONFLUENT],
            "examples": [SEGMENTIO]}


def skip(why):
    print("SKIPPED: %s" % why)
    sys.exit(77)


def go_env(work):
    return dict(os.environ, GO111MODULE="off", GOPATH=GOPATH, GOFLAGS="",
                GOCACHE=os.environ.get("WARREN_GOCACHE", os.path.join(work, "gocache")))


def go_build(src, out, env):
    p = subprocess.run(["go", "build", "-o", out, "."], cwd=src, env=env, capture_output=True,
                       text=True, timeout=300)
    if p.returncode != 0:
        raise AssertionError("go build %s failed:\n%s" % (src, p.stderr))


def run_checks(w, binary, client):
    p = subprocess.run([binary, "-brokers", kt.bootstrap(w), "-client", client],
                       capture_output=True, text=True, timeout=240)
    print(p.stdout, end="")
    if p.returncode != 0:
        raise AssertionError("kafka_go -client %s exited %d\n%s" % (client, p.returncode,
                                                                    p.stderr))


def lines(path):
    with open(path) as f:
        return f.read().splitlines()


def run_examples(w, work):
    env = dict(os.environ, KAFKA_BROKERS=kt.bootstrap(w))
    producer, consumer = os.path.join(work, "producer"), os.path.join(work, "consumer")

    def produce(*args):
        p = subprocess.run([producer] + list(args), env=env, capture_output=True, text=True,
                           timeout=60)
        if p.returncode != 0:
            raise AssertionError("producer %s exited %d: %s" % (args, p.returncode, p.stderr))

    # 1. every message acknowledged, then consumed exactly once.
    produce("-topic", "orders", "-count", "500", "-timeout", "30s")
    out = os.path.join(work, "all.out")
    with open(out, "w") as f:
        p = subprocess.run([consumer, "-topic", "orders", "-group", "billing", "-count", "500"],
                           env=env, stdout=f, stderr=subprocess.PIPE, text=True, timeout=90)
    if p.returncode != 0:
        raise AssertionError("consumer exited %d: %s" % (p.returncode, p.stderr))
    kt.eq(sorted(lines(out)), sorted("msg-%d" % i for i in range(1, 501)),
          "values the consumer printed")
    print("ok: 500 messages acknowledged, consumed and committed exactly once")

    # 2. SIGTERM in the middle of a slow message, on a one-partition topic (a total order).
    produce("-topic", "slow", "-count", "20", "-prefix", "slow-", "-timeout", "30s")
    first_out, first_err = os.path.join(work, "first.out"), os.path.join(work, "first.err")
    with open(first_out, "w") as fo, open(first_err, "w") as fe:
        c = subprocess.Popen([consumer, "-topic", "slow", "-group", "slowg", "-work", "1s"],
                             env=env, stdout=fo, stderr=fe)
        try:
            kt.wait_until(lambda: "working on slow-3 " in open(first_err).read(),
                          "the consumer to start on slow-3", timeout=45)
            c.send_signal(signal.SIGTERM)
            status = c.wait(timeout=15)
        finally:
            if c.poll() is None:
                c.kill()
                c.wait()
    kt.eq(status, 0, "the consumer's exit status after SIGTERM (%s)" % open(first_err).read())
    kt.eq(lines(first_out), ["slow-1", "slow-2", "slow-3"],
          "the consumer finished and committed the message in hand after SIGTERM")
    second_out = os.path.join(work, "second.out")
    with open(second_out, "w") as f:
        p = subprocess.run([consumer, "-topic", "slow", "-group", "slowg", "-count", "17"],
                           env=env, stdout=f, stderr=subprocess.PIPE, text=True, timeout=90)
    if p.returncode != 0:
        raise AssertionError("second consumer exited %d: %s" % (p.returncode, p.stderr))
    kt.eq(lines(second_out), ["slow-%d" % i for i in range(4, 21)],
          "the next consumer of the group resumed after the committed slow-3")
    print("ok: SIGTERM mid-message: exit 0, slow-3 committed, the rest went to the next member")


def main(argv):
    if len(argv) != 5 or argv[4] not in PACKAGES:
        print(__doc__)
        return 2
    src, binary, plugin_dir, what = argv[1:]
    if shutil.which("go") is None:
        skip("go is not installed (apt-get install golang-go)")
    for pkg in PACKAGES[what]:
        if not os.path.isdir(os.path.join(GOPATH, "src", pkg)):
            skip("%s is not installed (Debian's golang-github-* -dev package)" % pkg)
    work = tempfile.mkdtemp(prefix="warren-kafka-go-")
    env = go_env(work)
    yaml = kt.topics(("kg-segmentio", 3), ("kg1-segmentio", 1), ("kg-confluent", 3),
                     ("orders", 3), ("slow", 1))
    ok = False
    try:
        if what == "examples":
            for name in ("producer", "consumer"):
                go_build(os.path.join(src, "examples", "go-kafka", name),
                         os.path.join(work, name), env)
        else:
            go_build(os.path.join(src, "tests", "integration", "kafka_go"),
                     os.path.join(work, "kafka_go"), env)
        with Warren(binary, plugin_dir, extra_yaml=yaml, kafka=True) as w:
            try:
                if what == "examples":
                    run_examples(w, work)
                else:
                    run_checks(w, os.path.join(work, "kafka_go"), what)
            except Exception:
                print("--- the last lines warren logged ---")
                print("\n".join(w.log().splitlines()[-40:]))
                raise
        ok = True
        print("ok: warren exited 0 on SIGTERM")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not ok:
            print("FAIL")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
