#!/usr/bin/python3
"""definitions_test.py: what a client declares durable over AMQP survives a restart of the
real warren binary, as RabbitMQ users expect (core/src/definitions.c).

    definitions_test.py WARREN_BIN PLUGIN_DIR sigterm|kill9

A pika client declares a durable topic exchange with arguments, durable queues with
x-max-length, x-message-ttl and x-dead-letter-exchange, an exchange-to-exchange binding and
queue bindings, publishes persistent messages with publisher confirms, deletes a durable
queue, and leaves a non-durable queue, an exclusive queue and a non-durable exchange behind.
Then warren stops (SIGTERM, which must exit 0; or kill -9) and starts again on the same data
directory, and a new client checks what RabbitMQ would show: passive declares succeed, a
redeclare with the same arguments succeeds and one with other arguments fails with 406, a
publish routes through the restored bindings, the confirmed messages are there, and the
deleted, non-durable and exclusive things are gone. A last restart checks that the file
rewritten at start-up (compacted) holds the same.

Must run under /usr/bin/python3 (Debian's pika). Every wait has a deadline, and the whole run
has a watchdog.
"""
import os
import re
import signal
import subprocess
import sys
import time

import pika
import pika.exceptions as pex

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Warren, wait_port  # noqa: E402

BUDGET_S = 120
SANITIZER_REPORT = re.compile(r"ERROR: (Address|Leak)Sanitizer|runtime error:.*")

ORDERS_ARGS = {"alternate-exchange": "unrouted", "x-note": "kept", "x-level": 3}
BILLING_ARGS = {"x-max-length": 1000, "x-message-ttl": 3600000,
                "x-dead-letter-exchange": "audit"}
MESSAGES = [b"order-%d" % i for i in range(5)]


def eq(got, want, what):
    if got != want:
        raise AssertionError("%s: expected %r, got %r" % (what, want, got))


def expect_channel_error(code, fn, what):
    try:
        fn()
    except pex.ChannelClosedByBroker as e:
        eq(e.reply_code, code, "%s: reply code (reason %r)" % (what, e.reply_text))
        return
    raise AssertionError("%s: expected the broker to close the channel with %d" % (what, code))


class Restartable(Warren):
    """The harness's Warren, stopped and started again on the same data directory."""

    def start_again(self):
        seen = len(self.log())
        self.port = None
        self.proc = subprocess.Popen([self.binary, self.config], stdout=self.logfile,
                                     stderr=subprocess.STDOUT, env=self.env)
        deadline = time.monotonic() + 15
        while self.port is None:
            m = re.search(r"amqp091.*listening on 127\.0\.0\.1:(\d+)", self.log()[seen:])
            if m:
                self.port = int(m.group(1))
            elif self.proc.poll() is not None:
                raise RuntimeError("warren exited with status %d at its restart:\n%s"
                                   % (self.proc.returncode, self.log()[seen:]))
            elif time.monotonic() > deadline:
                raise TimeoutError("warren did not listen within 15 s of its restart")
            else:
                time.sleep(0.01)
        wait_port(self.port, proc=self.proc)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def stop_ok(self):
        status = self.stop()
        eq(status, 0, "warren's exit status after SIGTERM")


def connect(port):
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port, heartbeat=0))


def declare_and_publish(port):
    """Phase one. Returns the connection, left open: its exclusive queue exists when warren
    stops."""
    conn = connect(port)
    ch = conn.channel()
    ch.exchange_declare("orders", "topic", durable=True, arguments=ORDERS_ARGS)
    ch.exchange_declare("unrouted", "fanout", durable=True)
    ch.exchange_declare("audit", "fanout", durable=True)
    ch.queue_declare("billing", durable=True, arguments=BILLING_ARGS)
    ch.queue_declare("audit-log", durable=True)
    ch.queue_bind("billing", "orders", "orders.eu.*")
    ch.exchange_bind(destination="audit", source="orders", routing_key="#")
    ch.queue_bind("audit-log", "audit")
    ch.queue_declare("lost-and-found", durable=True)
    ch.queue_bind("lost-and-found", "unrouted")

    ch.queue_declare("doomed", durable=True)
    ch.queue_bind("doomed", "orders", "#")
    pub = conn.channel()
    pub.confirm_delivery()
    pub.basic_publish("", "doomed", b"gone with its queue", pika.BasicProperties(delivery_mode=2))
    pub.close()
    ch.queue_delete("doomed")
    ch.queue_declare("transient", durable=False)
    ch.queue_bind("transient", "orders", "#")
    ch.queue_declare("mine", durable=True, exclusive=True)
    ch.exchange_declare("tmp", "fanout", durable=False)
    ch.exchange_bind(destination="tmp", source="orders", routing_key="#")

    ch.confirm_delivery()
    for i, body in enumerate(MESSAGES):
        ch.basic_publish("orders", "orders.eu.%d" % i, body,
                         pika.BasicProperties(delivery_mode=2), mandatory=True)
    eq(ch.queue_declare("billing", passive=True).method.message_count, len(MESSAGES),
       "billing's depth before the restart")
    return conn


def check_restored(port, phase, billing, audit):
    """Phase two. billing: the bodies billing must hold; audit: how many audit-log must.
    Publishes one more message to each and returns the new (billing, audit)."""
    conn = connect(port)
    ch = conn.channel()
    for name in ("orders", "unrouted", "audit"):
        ch.exchange_declare(name, passive=True)
    for name, count in (("billing", len(billing)), ("audit-log", audit),
                        ("lost-and-found", 0)):
        got = ch.queue_declare(name, passive=True).method.message_count
        eq(got, count, "%s: messages in %s" % (phase, name))

    # The same declaration is equivalent; another is refused as RabbitMQ refuses it.
    ch.exchange_declare("orders", "topic", durable=True, arguments=ORDERS_ARGS)
    ch.queue_declare("billing", durable=True, arguments=BILLING_ARGS)
    other = dict(BILLING_ARGS, **{"x-max-length": 999})
    expect_channel_error(406, lambda: ch.queue_declare("billing", durable=True,
                                                       arguments=other),
                         "%s: billing redeclared with another x-max-length" % phase)
    ch = conn.channel()
    expect_channel_error(406, lambda: ch.queue_declare("billing", durable=True),
                         "%s: billing redeclared without its arguments" % phase)
    ch = conn.channel()
    expect_channel_error(406, lambda: ch.exchange_declare("orders", "direct", durable=True),
                         "%s: orders redeclared as direct" % phase)

    # Deleted, non-durable and exclusive things are gone.
    for name in ("doomed", "transient", "mine"):
        ch = conn.channel()
        expect_channel_error(404, lambda: ch.queue_declare(name, passive=True),
                             "%s: queue %s" % (phase, name))
    ch = conn.channel()
    expect_channel_error(404, lambda: ch.exchange_declare("tmp", passive=True),
                         "%s: exchange tmp" % phase)
    # A queue declared again by a deleted one's name starts empty: the files went with it.
    ch = conn.channel()
    eq(ch.queue_declare("doomed", durable=True).method.message_count, 0,
       "%s: messages in doomed, declared again after its delete" % phase)
    ch.queue_delete("doomed")

    # The restored bindings route, the alternate exchange included, and the persistent
    # messages come back in order.
    ch = conn.channel()
    ch.confirm_delivery()
    ch.basic_publish("orders", "orders.eu.9", b"after", pika.BasicProperties(delivery_mode=2),
                     mandatory=True)
    ch.basic_publish("orders", "orders.us.1", b"elsewhere",
                     pika.BasicProperties(delivery_mode=2), mandatory=True)
    billing, audit = billing + [b"after"], audit + 2
    eq(ch.queue_declare("billing", passive=True).method.message_count, len(billing),
       "%s: billing after a publish through orders -> billing" % phase)
    eq(ch.queue_declare("audit-log", passive=True).method.message_count, audit,
       "%s: audit-log after publishes through orders -> audit -> audit-log" % phase)
    eq(ch.queue_declare("lost-and-found", passive=True).method.message_count, 0,
       "%s: lost-and-found (every message was routed)" % phase)
    got = []
    for _ in range(len(billing)):
        method, props, body = ch.basic_get("billing", auto_ack=False)
        if method is None:
            break
        eq(props.delivery_mode, 2, "%s: delivery mode of %r" % (phase, body))
        got.append(body)
    eq(got, billing, "%s: billing's messages" % phase)
    ch.basic_nack(delivery_tag=0, multiple=True, requeue=True)
    conn.close()
    return billing, audit


def main(argv):
    if len(argv) != 4 or argv[3] not in ("sigterm", "kill9"):
        print(__doc__)
        return 2
    binary, plugin_dir, how = argv[1], argv[2], argv[3]

    def on_alarm(signum, frame):
        raise TimeoutError("the test ran past its %d s budget" % BUDGET_S)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(BUDGET_S)
    w = Restartable(binary, plugin_dir)
    try:
        w.start()
        conn = declare_and_publish(w.port)
        if how == "sigterm":
            w.stop_ok()
        else:
            w.kill9()
        try:
            conn.close()
        except Exception:  # the broker went away under it
            pass
        w.start_again()
        billing, audit = check_restored(w.port, "after " + how, MESSAGES, len(MESSAGES))
        w.stop_ok()
        w.start_again()
        check_restored(w.port, "after a second restart", billing, audit)
        w.stop_ok()
        finding = SANITIZER_REPORT.search(w.log())
        if finding:
            raise AssertionError("warren's log has a sanitizer report: %r" % finding.group())
        print("PASS definitions %s" % how)
        return 0
    except Exception as e:
        print("FAIL definitions %s: %s: %s" % (how, type(e).__name__, e))
        try:
            w.stop()
        except Exception as stop_error:
            print("  stopping warren: %s" % stop_error)
        lines = w.log().splitlines()
        print("  warren's log (last %d of %d lines):" % (min(80, len(lines)), len(lines)))
        for line in lines[-80:]:
            print("    " + line)
        return 1
    finally:
        signal.alarm(0)
        w.cleanup()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
