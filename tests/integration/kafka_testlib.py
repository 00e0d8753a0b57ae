"""kafka_testlib.py: what the Kafka client tests (kafka_*_test.py) share.

A test script defines functions test_*(w) and ends with `sys.exit(kafka_testlib.main(...))`:

    kafka_x_test.py WARREN_BIN PLUGIN_DIR [TEST...]    each test against a fresh warren
    kafka_x_test.py --list                             the test names

Every test gets its own warren with an AMQP and a Kafka listener on ports the kernel picks
(harness.Warren, kafka=True) and the config the test asks for through its `yaml` attribute
(see topics()); the broker is stopped by its PID with SIGTERM after the test and must exit 0.
Every test also runs under a watchdog (SIGALRM), so a client call blocked on an answer that
never comes fails with a traceback instead of hanging. Waits are conditions with deadlines.
Run under /usr/bin/python3, where Debian's Kafka clients are installed.
"""
import os
import re
import signal
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Warren, run_tests  # noqa: E402

SANITIZER_REPORT = re.compile(r"ERROR: (Address|Leak)Sanitizer|runtime error:.*")
TEST_BUDGET_S = 120     # the watchdog; a passing test takes seconds (group joins the most)
WAIT_S = 30             # the deadline of an ordinary wait for the broker or a client


class TestTimeout(Exception):
    pass


def short(v, limit=300):
    r = repr(v)
    return r if len(r) <= limit else "%s... (%d chars)" % (r[:limit], len(r))


def eq(got, want, what):
    if got != want:
        raise AssertionError("%s: expected %s, got %s" % (what, short(want), short(got)))


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def wait_until(cond, what, timeout=WAIT_S, step=None):
    """Calls cond() until it returns something true and returns that; step(), if given, runs
    between tries (a client's poll, which is what moves its state on)."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0f s waiting for %s" % (timeout, what))
        if step:
            step()
        else:
            time.sleep(0.01)


def topics(*specs):
    """The YAML for log queues (Kafka topics) in vhost /: specs are (name, partitions)."""
    return ("vhosts:\n  - name: /\n    queues:\n" +
            "".join("      - {name: %s, storage: log, partitions: %d, durable: true}\n" % s
                    for s in specs))


def with_yaml(text):
    """Decorator: the test's broker gets text appended to its config."""
    def mark(fn):
        fn.yaml = text
        return fn
    return mark


def bootstrap(w):
    return "127.0.0.1:%d" % w.kafka_port


def now_ms():
    return int(time.time() * 1000)


def on_alarm(signum, frame):
    raise TestTimeout("the test did not finish within %d s" % TEST_BUDGET_S)


def run_one(name, fn, binary, plugin_dir):
    w = Warren(binary, plugin_dir, extra_yaml=getattr(fn, "yaml", ""), kafka=True)
    outcome = "pass"
    t0 = time.monotonic()
    try:
        signal.alarm(TEST_BUDGET_S)
        w.start()
        try:
            fn(w)
        finally:
            signal.alarm(0)
            status = w.stop()
        if status not in (0, None):
            raise AssertionError("warren exited with status %s after SIGTERM" % status)
        found = SANITIZER_REPORT.search(w.log())
        if found:
            raise AssertionError("sanitizer report in warren's log: %s" % found.group(0))
    except Exception:
        outcome = "fail"
        print("FAIL %s (%.1f s)" % (name, time.monotonic() - t0))
        traceback.print_exc(file=sys.stdout)
        print("--- the last lines warren logged ---")
        print("\n".join(w.log().splitlines()[-40:]))
    else:
        print("ok   %s (%.1f s)" % (name, time.monotonic() - t0))
    finally:
        try:
            w.stop()
        except Exception:  # already reported above
            pass
        w.cleanup()
    return outcome


def main(argv, namespace, doc):
    return run_tests(argv, namespace, doc, 2, run_one, on_alarm)
