#!/usr/bin/python3
"""lua_amqp_test.py: the `lua` exchange type (issue 6) as AMQP clients see it, through pika.

    lua_amqp_test.py WARREN_BIN PLUGIN_DIR EXAMPLES_DIR [TEST...]   each test, fresh warren
    lua_amqp_test.py --list                                         the test names

The test_example_* tests run the exchanges, queues and users of EXAMPLES_DIR/lua-routing.yaml
(its script paths pointed at EXAMPLES_DIR) and check that messages land where each example
script's comments say. The others write their own scripts to a temporary directory: one that
fails on the messages it is asked to fail on (the failure costs that message only, or sends
it to a dead-letter exchange), one rewritten and reloaded with SIGHUP while a publisher keeps
going, and the `users: lua_scripts` permission for declaring Lua exchanges over AMQP.

Every test starts its own broker, which must exit 0 on SIGTERM afterwards with no sanitizer
report in its log. Waits are conditions with deadlines, and a watchdog (SIGALRM) fails a test
whose client call blocks. Must run under /usr/bin/python3 (Debian's pika).
"""
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import traceback

import pika
import pika.exceptions as pex

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from amqp_pika_test import (SANITIZER_REPORT, check, depth, eq,  # noqa: E402
                            expect_channel_error, on_alarm, pump, TEST_BUDGET_S, WAIT_S)
from harness import Warren, run_tests, wait_for  # noqa: E402


class Case:
    """One test's world: a directory for its scripts and the broker it starts."""

    def __init__(self, binary, plugin_dir, examples):
        self.binary = binary
        self.plugin_dir = plugin_dir
        self.examples = examples
        self.dir = tempfile.mkdtemp(prefix="warren-lua-it-")
        self.w = None

    def script(self, name, text):
        """Writes a script file; returns its path. Rewriting one goes through a new file
        renamed over the old, as editors save, so a reload never reads half a file."""
        path = os.path.join(self.dir, name)
        with open(path + ".new", "w") as f:
            f.write(text)
        os.replace(path + ".new", path)
        return path

    def start(self, yaml):
        self.w = Warren(self.binary, self.plugin_dir, extra_yaml=yaml).start()
        return self.w

    def start_examples(self):
        """warren with the example config's vhosts and users (its broker and listeners
        sections are the harness's own)."""
        with open(os.path.join(self.examples, "lua-routing.yaml")) as f:
            text = f.read()
        kept, keep = [], False
        for line in text.splitlines():
            top = re.match(r"([a-z_]+):", line)
            if top:
                keep = top.group(1) not in ("broker", "listeners")
            if keep:
                kept.append(line.replace("examples/lua/", self.examples + "/"))
        check(any(l.startswith("vhosts:") for l in kept), "lua-routing.yaml has no vhosts")
        return self.start("\n".join(kept) + "\n")

    def connect(self, user="guest", password="guest"):
        return pika.BlockingConnection(pika.ConnectionParameters(
            host="127.0.0.1", port=self.w.port, connection_attempts=1, socket_timeout=10,
            credentials=pika.PlainCredentials(user, password)))

    def finish(self):
        """Stops the broker; fails unless it exited 0 with a clean log."""
        if self.w is None:
            return
        status = self.w.stop()
        eq(status, 0, "warren's exit status after SIGTERM")
        finding = SANITIZER_REPORT.search(self.w.log())
        check(not finding, "warren's log has a sanitizer report: %r"
              % (finding.group() if finding else ""))

    def cleanup(self):
        if self.w is not None:
            try:
                self.w.stop()
            finally:
                self.w.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)


def confirmed(conn):
    """A channel in confirm mode: a publish returns once the broker has routed it."""
    ch = conn.channel()
    ch.confirm_delivery()
    return ch


def bodies(ch, queue):
    """Takes every message from queue (basic.get with auto-ack); returns the bodies."""
    got = []
    while True:
        m, _, body = ch.basic_get(queue, auto_ack=True)
        if m is None:
            return got
        got.append(body)


def headers(**h):
    return pika.BasicProperties(headers=h)


def expect_returned(ch, exchange, key, body, what, properties=None):
    """A mandatory publish that must come back as basic.return 312 NO_ROUTE."""
    try:
        ch.basic_publish(exchange, key, body, properties=properties, mandatory=True)
    except pex.UnroutableError as e:
        eq(len(e.messages), 1, "%s: returned messages" % what)
        ret = e.messages[0]
        eq((ret.method.reply_code, ret.method.reply_text), (312, "NO_ROUTE"),
           "%s: basic.return reply" % what)
        eq(ret.body, body, "%s: returned body" % what)
        return
    raise AssertionError("%s: the mandatory publish was confirmed without basic.return" % what)


# ---- the examples ----------------------------------------------------------------------------

def test_example_region_header_picks_topic_key(t):
    t.start_examples()
    with t.connect() as conn:
        ch = confirmed(conn)
        ch.basic_publish("orders", "new", b"eu-new", properties=headers(region="europe"))
        ch.basic_publish("orders", "refund", b"us-refund", properties=headers(region="america"))
        ch.basic_publish("orders", "refund", b"eu-refund", properties=headers(region="europe"))
        eq(bodies(ch, "orders-europe"), [b"eu-new", b"eu-refund"], "orders.europe.* receives")
        eq(bodies(ch, "orders-america"), [b"us-refund"], "orders.america.* receives")
        eq(bodies(ch, "refunds-all-regions"), [b"us-refund", b"eu-refund"],
           "orders.*.refund receives")


def test_example_dropped_message_returns_to_mandatory_publisher(t):
    t.start_examples()
    with t.connect() as conn:
        ch = confirmed(conn)
        expect_returned(ch, "orders", "new", b"no region", "an order without a region")
        expect_returned(ch, "orders", "new", b"asia", "a region nobody subscribes to",
                        properties=headers(region="asia"))
        ch.basic_publish("orders", "new", b"routed", properties=headers(region="europe"),
                         mandatory=True)
        eq(bodies(ch, "orders-europe"), [b"routed"], "the routable order after the returns")


def test_example_json_field_picks_queue(t):
    t.start_examples()
    with t.connect() as conn:
        ch = confirmed(conn)
        for body in (b'{"kind": "invoice", "amount": 12}', b'{"kind": "refund", "amount": 3}',
                     b'{"kind": "quote"}', b'{"amount": 1}', b'[1, 2]', b"not json"):
            ch.basic_publish("documents", "", body)
        eq(bodies(ch, "invoices"), [b'{"kind": "invoice", "amount": 12}'], "invoices")
        eq(bodies(ch, "refunds"), [b'{"kind": "refund", "amount": 3}'], "refunds")
        eq(bodies(ch, "unsorted"), [b'{"kind": "quote"}', b'{"amount": 1}', b'[1, 2]',
                                    b"not json"], "unsorted: unknown kind, none, not JSON")


def test_example_samples_every_100th_to_audit(t):
    t.start_examples()
    with t.connect() as conn:
        ch = confirmed(conn)
        for i in range(1, 1001):
            ch.basic_publish("events", "", b"event %d" % i)
        eq(depth(ch, "events"), 1000, "every event in events")
        eq(bodies(ch, "audit"), [b"event %d" % i for i in range(100, 1001, 100)],
           "audit: the 100th, 200th, ... event (1%)")


def test_example_round_robin_over_three_workers(t):
    t.start_examples()
    with t.connect() as conn:
        ch = confirmed(conn)
        for i in range(9):
            ch.basic_publish("jobs", "", b"job %d" % i)
        for w in range(3):
            eq(bodies(ch, "work-%d" % (w + 1)), [b"job %d" % i for i in range(w, 9, 3)],
               "work-%d takes every third job" % (w + 1))


def test_example_enrichment_header_seen_by_consumer(t):
    t.start_examples()
    with t.connect() as conn:
        ch = conn.channel()
        got = []
        ch.basic_consume("mail", lambda c, m, props, body: got.append((props, body)),
                         auto_ack=True)
        before = int(time.time())
        ch.basic_publish("stamped", "mail", b"hello",
                         properties=pika.BasicProperties(headers={"from": "ann"},
                                                         message_id="m-1"))
        pump(conn, lambda: got, "the stamped message at the consumer")
        after = int(time.time())
        props, body = got[0]
        eq(body, b"hello", "body")
        eq(props.message_id, "m-1", "message_id passes through")
        h = props.headers or {}
        eq(h.get("from"), "ann", "the publisher's own header")
        eq(h.get("x-routed-by"), "warren-lua/stamped", "x-routed-by")
        at = h.get("x-routed-at")
        check(isinstance(at, int) and before <= at <= after,
              "x-routed-at %r is not the seconds of the publish (%d..%d)" % (at, before, after))
        pub = confirmed(conn)
        expect_returned(pub, "stamped", "nobody-binds-this", b"lost", "an unbound key")


# ---- failures --------------------------------------------------------------------------------

FRAGILE = """-- fails when asked to, in three ways; routes everything else to the queue "ok"
function route(msg)
  if msg.headers.fail then
    error("asked to fail")
  end
  if msg.headers.spin then
    while true do end
  end
  if msg.headers.hog then
    return string.rep("x", 64 * 1024 * 1024)
  end
  return "ok"
end
"""


def fragile_yaml(path, dead_letter=False):
    """The exchange `fragile` running FRAGILE from path, and the queue ok. With dead_letter,
    its failures go to the fanout exchange `dead`, bound to the queue dead-letters."""
    dlx = dead_letter and "dead"
    return ("vhosts:\n  - name: /\n    exchanges:\n" +
            ("      - {name: dead, type: fanout}\n" if dlx else "") +
            "      - {name: fragile, type: lua, options: {script: %s%s}}\n"
            % (path, ", dead_letter_exchange: dead" if dlx else "") +
            "    queues:\n      - {name: ok}\n      - {name: dead-letters}\n" +
            ("    bindings:\n      - {exchange: dead, queue: dead-letters}\n" if dlx else ""))


def test_script_error_costs_that_message_only(t):
    path = t.script("fragile.lua", FRAGILE)
    w = t.start(fragile_yaml(path))
    with t.connect() as conn:
        ch = confirmed(conn)
        for how in ("fail", "spin", "hog"):
            expect_returned(ch, "fragile", "", how.encode(), "a publish whose script %ss" % how,
                            properties=headers(**{how: True}))
            ch.basic_publish("fragile", "", b"after " + how.encode(), mandatory=True)
        ch.basic_publish("fragile", "", b"not mandatory", properties=headers(fail=True))
        eq(bodies(ch, "ok"), [b"after fail", b"after spin", b"after hog"],
           "the messages after each failure")
    wait_for(lambda: "%s:4:" % path in w.log(), WAIT_S,
             "a warning naming %s:4 (the error's line) in warren's log" % path)


def test_script_error_dead_letters_with_the_reason(t):
    path = t.script("fragile.lua", FRAGILE)
    t.start(fragile_yaml(path, dead_letter=True))
    with t.connect() as conn:
        ch = confirmed(conn)
        ch.basic_publish("fragile", "k", b"doomed", properties=headers(fail=True, n=1))
        ch.basic_publish("fragile", "k", b"fine")
        dead = []
        ch.basic_consume("dead-letters", lambda c, m, p, b: dead.append((m, p, b)),
                         auto_ack=True)
        pump(conn, lambda: dead, "the failed message in dead-letters")
        m, props, body = dead[0]
        eq(body, b"doomed", "dead-lettered body")
        eq(m.routing_key, "k", "dead-lettered routing key")
        h = props.headers or {}
        eq(h.get("n"), 1, "the publisher's header is kept")
        reason = h.get("x-script-error")
        check(isinstance(reason, (str, bytes)) and "asked to fail" in str(reason),
              "x-script-error should carry the error text, got %r" % (reason,))
        eq(bodies(ch, "ok"), [b"fine"], "the message after the failure routes")
        eq(len(dead), 1, "messages dead-lettered")


# ---- reload on SIGHUP ------------------------------------------------------------------------

def route_to(queue, note=""):
    return 'function route(msg)\n  return "%s"%s\nend\n' % (queue, note)


def switch_yaml(path):
    """The exchange `switch` running the script at path, and the queues before and after."""
    return ("vhosts:\n  - name: /\n    exchanges:\n"
            "      - {name: switch, type: lua, options: {script: %s}}\n"
            "    queues:\n      - {name: before}\n      - {name: after}\n" % path)


def test_sighup_reload_routes_every_message_once(t):
    path = t.script("switch.lua", route_to("before"))
    w = t.start(switch_yaml(path))
    with t.connect() as conn:
        ch = confirmed(conn)
        sent = 0

        def publish(n):
            nonlocal sent
            for _ in range(n):
                ch.basic_publish("switch", "", b"%d" % sent)
                sent += 1
        publish(100)
        t.script("switch.lua", route_to("after", "  -- the new version"))
        w.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + WAIT_S
        while depth(ch, "after") == 0:   # keeps publishing through the reload
            check(time.monotonic() < deadline and sent < 200000,
                  "no message routed by the new script after %d publishes" % sent)
            publish(10)
        publish(100)
        got_before = [int(b) for b in bodies(ch, "before")]
        got_after = [int(b) for b in bodies(ch, "after")]
    eq(sorted(got_before + got_after), list(range(sent)),
       "every message published across the reload, exactly once")
    eq(got_before, list(range(len(got_before))), "the old script's messages, in order")
    eq(got_after, list(range(len(got_before), sent)),
       "the new script's messages, in order, all after the old script's")
    check(len(got_before) >= 100, "the old script routed the first 100")


def test_sighup_with_a_broken_new_version_keeps_the_old(t):
    path = t.script("switch.lua", route_to("before"))
    w = t.start(switch_yaml(path))
    t.script("switch.lua", 'function route(msg)\n  return "after" +\nend\n')
    w.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "%s:3:" % path in w.log(), WAIT_S,
             "the compile error, naming %s:3, in warren's log" % path)
    with t.connect() as conn:
        ch = confirmed(conn)
        ch.basic_publish("switch", "", b"still the old script")
        eq(bodies(ch, "before"), [b"still the old script"], "routed by the old version")
        eq(depth(ch, "after"), 0, "messages routed by the broken version")


# ---- who may declare a Lua exchange ----------------------------------------------------------

USERS = """plugins:
  - {name: lua}
users:
  - {name: guest, password: guest, vhosts: ["/"]}
  - {name: scripter, password: s3cret, vhosts: ["/"], lua_scripts: true}
"""


def test_guest_may_not_declare_lua_exchange(t):
    path = t.script("inbox.lua", route_to("inbox"))
    t.start(USERS)
    with t.connect() as conn:
        ch = conn.channel()
        e = expect_channel_error(403, lambda: ch.exchange_declare(
            "mine", exchange_type="lua", arguments={"x-script": path}),
            "guest declaring a lua exchange")
        eq(e.reply_text, "ACCESS_REFUSED - user 'guest' may not declare exchanges of type "
           "'lua', which run scripts (users: lua_scripts)", "the refusal")
        ch = conn.channel()
        expect_channel_error(404, lambda: ch.exchange_declare("mine", passive=True),
                             "the refused exchange does not exist")
        ch = conn.channel()
        ch.exchange_declare("plain", exchange_type="direct")  # other types are not affected


def test_user_with_lua_scripts_declares_and_routes(t):
    path = t.script("inbox.lua", route_to("inbox"))
    t.start(USERS)
    with t.connect("scripter", "s3cret") as conn:
        ch = confirmed(conn)
        ch.queue_declare("inbox")
        ch.exchange_declare("mine", exchange_type="lua", arguments={"x-script": path})
        ch.exchange_declare("mine", exchange_type="lua", arguments={"x-script": path})
        ch.basic_publish("mine", "anything", b"through my script", mandatory=True)
        eq(bodies(ch, "inbox"), [b"through my script"], "inbox")
    with t.connect() as conn:    # guest may publish through it: only declaring is guarded
        ch = confirmed(conn)
        ch.basic_publish("mine", "", b"from guest", mandatory=True)
        eq(bodies(ch, "inbox"), [b"from guest"], "inbox after guest's publish")


def test_declare_with_broken_script_is_406(t):
    path = t.script("broken.lua", "function route(msg)\n  return {\nend\n")
    t.start(USERS)
    with t.connect("scripter", "s3cret") as conn:
        ch = conn.channel()
        e = expect_channel_error(406, lambda: ch.exchange_declare(
            "mine", exchange_type="lua", arguments={"x-script": path}),
            "declaring a lua exchange whose script does not compile")
        check("%s:3:" % path in e.reply_text,
              "the refusal should name %s:3, got %r" % (path, e.reply_text))


# ---- the runner ------------------------------------------------------------------------------

def run_one(name, fn, binary, plugin_dir, examples):
    t = Case(binary, plugin_dir, examples)
    began = time.monotonic()
    try:
        signal.alarm(TEST_BUDGET_S)
        try:
            fn(t)
        finally:
            signal.alarm(0)
        t.finish()
        print("PASS %s (%.1f s)" % (name, time.monotonic() - began))
        return True
    except Exception as e:
        print("FAIL %s (%.1f s): %s: %s" % (name, time.monotonic() - began,
                                            type(e).__name__, e))
        traceback.print_exc(file=sys.stdout)
        if t.w is not None:
            lines = t.w.log().splitlines()
            print("  warren's log (last %d of %d lines):" % (min(60, len(lines)), len(lines)))
            for line in lines[-60:]:
                print("    " + line)
        return False
    finally:
        t.cleanup()


def main(argv):
    if len(argv) >= 4:
        argv = argv[:3] + [os.path.abspath(argv[3])] + argv[4:]
    return run_tests(argv, globals(), __doc__, 3, run_one, on_alarm)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
