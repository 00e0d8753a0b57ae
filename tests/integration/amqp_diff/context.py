"""context.py: what a scenario runs with, and how its transcript is written.

A scenario is a function `f(t)` registered with @scenario. It drives one broker through `t`
(pika connections, raw wire connections) and records what a client sees with `t.ev(...)`:
replies, reply codes and texts, delivered messages, counts. The runner runs every scenario
against RabbitMQ and against warren and compares the two transcripts.

Scenarios never branch on which broker they talk to. Names they create start with the
scenario's name (`t.n("q")`), so scenarios share one broker without meeting each other.
Server-generated names are normalized in the transcript (amq.gen-*, amq.ctag-*), and so is
anything a scenario marks as legitimately different, with a comment saying why.
"""
import datetime
import hashlib
import re
import signal
import time

import pika
import pika.exceptions as pe

import wire

SCENARIOS = []


def scenario(fn=None, *, last=False):
    """Registers fn as a scenario named after the function; last=True runs it after the
    others (it may stop the broker)."""
    def register(f):
        SCENARIOS.append((f.__name__, f, last))
        return f
    return register(fn) if fn else register


class ScenarioTimeout(Exception):
    """The scenario's overall deadline passed (a reply that never came)."""


GENERATED = [(re.compile(r"amq\.gen-[A-Za-z0-9_\-]+"), "amq.gen-*"),
             (re.compile(r"amq\.ctag-[A-Za-z0-9_\-]+"), "amq.ctag-*")]


def normalize(value):
    """Server-generated names replaced by their pattern, recursively."""
    if isinstance(value, str):
        for rx, repl in GENERATED:
            value = rx.sub(repl, value)
        return value
    if isinstance(value, (list, tuple)):
        return [normalize(v) for v in value]
    if isinstance(value, dict):
        return {normalize(k): normalize(v) for k, v in sorted(value.items())}
    return value


def plain(value):
    """A header or argument value as JSON-able data that keeps its type visible."""
    if isinstance(value, bytes):
        return {"bytes": value.decode("utf-8", "replace")}
    if isinstance(value, datetime.datetime):
        return {"timestamp": int(value.replace(tzinfo=datetime.timezone.utc).timestamp())}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "as_tuple"):  # decimal.Decimal
        return {"decimal": str(value)}
    return value


PROPERTY_NAMES = ["content_type", "content_encoding", "headers", "delivery_mode", "priority",
                  "correlation_id", "reply_to", "expiration", "message_id", "timestamp",
                  "type", "user_id", "app_id", "cluster_id"]


class Target:
    """One broker under test: its name ('rabbitmq' or 'warren'), its AMQP port, and how to
    stop it (for the shutdown scenario)."""

    def __init__(self, name, port, stop):
        self.name, self.port, self.stop = name, port, stop


class Ctx:
    """The handle a scenario gets: connections, the transcript, waits with deadlines."""

    def __init__(self, name, target, prefix=""):
        self.name = name
        self.target = target
        self.prefix = prefix
        self.events = []
        self._pika = []
        self._raw = []

    # ---- transcript ---------------------------------------------------------------------

    def ev(self, *items):
        """Appends one event: a list of plain values."""
        self.events.append([plain(i) for i in items])

    def n(self, suffix):
        """A name private to this scenario."""
        return "%s%s.%s" % (self.prefix, self.name, suffix)

    def msg(self, tag, method, props, body, with_props=True):
        """Records a delivered / got / returned message."""
        e = {"body": body.decode("utf-8", "replace") if len(body) <= 64 else
             "%d bytes, sha1 %s" % (len(body), hashlib.sha1(body).hexdigest())}
        for field in ("routing_key", "exchange", "redelivered", "delivery_tag",
                      "message_count", "reply_code", "reply_text"):
            if hasattr(method, field):
                e[field] = getattr(method, field)
        if with_props:
            e["props"] = {k: plain(getattr(props, k)) for k in PROPERTY_NAMES
                          if getattr(props, k, None) is not None}
        self.ev(tag, e)

    # ---- connections ----------------------------------------------------------------------

    def params(self, vhost="/", user="guest", password="guest", **kw):
        kw.setdefault("heartbeat", 0)
        return pika.ConnectionParameters(
            host="127.0.0.1", port=self.target.port, virtual_host=vhost,
            credentials=pika.PlainCredentials(user, password), connection_attempts=1,
            socket_timeout=5, stack_timeout=10, blocked_connection_timeout=10, **kw)

    def pika(self, vhost="/", user="guest", password="guest", **kw):
        """A pika BlockingConnection, closed when the scenario ends."""
        conn = pika.BlockingConnection(self.params(vhost, user, password, **kw))
        self._pika.append(conn)
        return conn

    def raw(self, handshake=True, **kw):
        """A raw wire.Connection; with handshake, already open on `kw.get('vhost', '/')`."""
        conn = wire.Connection(self.target.port)
        self._raw.append(conn)
        if handshake:
            reply = conn.handshake(**kw)
            if not isinstance(reply, wire.Method) or reply.name != "connection.open-ok":
                raise AssertionError("handshake failed: %r" % (reply,))
        return conn

    def close_all(self):
        for conn in self._pika:
            try:
                with deadline(3):
                    if conn.is_open:
                        conn.close()
            except Exception:
                pass
        for conn in self._raw:
            conn.close()

    # ---- waits and errors -------------------------------------------------------------------

    def pump(self, conn, until, timeout=5.0):
        """Processes pika events until until() is true or timeout passes; records a
        'timeout' event in the second case. Returns whether until() became true."""
        end = time.monotonic() + timeout
        while not until():
            left = end - time.monotonic()
            if left <= 0:
                self.ev("timed out waiting for deliveries")
                return False
            conn.process_data_events(time_limit=min(left, 0.05))
        return True

    def settle(self, conn, seconds=0.2):
        """Lets pending deliveries arrive (for checking that nothing more comes)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            conn.process_data_events(time_limit=max(0.0, min(0.05, end - time.monotonic())))

    def error(self, exc):
        """Records a pika exception the way a client sees it."""
        if isinstance(exc, pe.ChannelClosedByBroker):
            self.ev("channel.close", exc.reply_code, exc.reply_text)
        elif isinstance(exc, pe.ConnectionClosedByBroker):
            self.ev("connection.close", exc.reply_code, exc.reply_text)
        elif isinstance(exc, pe.AMQPConnectionError) and exc.args and \
                isinstance(exc.args[0], pe.ConnectionClosedByBroker):
            self.ev("connection.close", exc.args[0].reply_code, exc.args[0].reply_text)
        else:
            self.ev("error", type(exc).__name__)

    def expect_error(self, fn, *args, **kw):
        """Runs fn; records its result as 'ok' or the AMQP error it raised."""
        try:
            fn(*args, **kw)
            self.ev("ok")
        except (pe.AMQPError, pe.ChannelClosed) as exc:
            self.error(exc)

    def raw_close(self, conn, timeout=3.0, text="exact", first=None):
        """Reads until the server closes: records its connection.close or channel.close and
        answers close-ok, or records "eof" if the socket ends with no close. first: a frame
        already read. Other frames on the way are recorded by name. text="name" keeps only
        the reply text's constant name (what precedes " - "): for RabbitMQ texts that print
        Erlang internals no other broker can share.

        After a connection.close the client's part is done: RabbitMQ sometimes takes
        seconds to drop the socket after close-ok (when it was reading a bogus frame
        length), so when the socket ends is not compared."""
        end = time.monotonic() + timeout
        while True:
            f = first
            first = None
            if f is None:
                left = end - time.monotonic()
                if left <= 0:
                    self.ev("no close within %.0f s" % timeout)
                    return
                try:
                    f = conn.read(left)
                except wire.Eof:
                    self.ev("eof")
                    return
                except wire.Timeout:
                    continue
            if not isinstance(f, wire.Method):
                self.ev("frame", f[0])
                continue
            if f.name not in ("connection.close", "channel.close"):
                self.ev(f.name, f.channel)
                continue
            a = f.args
            reply = a["reply_text"] if text == "exact" else a["reply_text"].split(" - ")[0]
            self.ev(f.name, f.channel, a["reply_code"], reply,
                    wire.SPEC_DATA.by_id.get((a["class_id"], a["method_id"]),
                                             ["%d.%d" % (a["class_id"], a["method_id"])])[0])
            try:
                conn.send_method(f.channel, f.name + "-ok")
            except OSError:
                pass
            return

    def method(self, m):
        """Records a raw Method's name, channel and arguments (or a non-method frame)."""
        if isinstance(m, wire.Method):
            self.ev(m.name, m.channel, m.args)
        else:
            self.ev(m)


class deadline:
    """`with deadline(s):` raises ScenarioTimeout in the main thread after s seconds."""

    def __init__(self, seconds):
        self.seconds = seconds

    def __enter__(self):
        def fire(*_):
            raise ScenarioTimeout()
        self.old = signal.signal(signal.SIGALRM, fire)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.old)
        return False
