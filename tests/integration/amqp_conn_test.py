"""amqp_conn_test.py: the AMQP 0-9-1 transport's connection layer, seen from real clients.

    /usr/bin/python3 amqp_conn_test.py WARREN_BIN PLUGIN_DIR

Raw sockets check what a client library would hide (protocol header, heartbeats, framing
errors and their reply codes); pika checks the handshake, authentication failures, the memory
alarm's connection.blocked / unblocked and the shutdown's 320 CONNECTION_FORCED. Each check
starts from a clean connection; the script stops at the first failure with what it saw.
"""
import contextlib
import os
import signal
import socket
import struct
import sys
import time

import pika

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Warren, wait_for  # noqa: E402

FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8
HEADER_091 = b"AMQP\x00\x00\x09\x01"


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)


def shortstr(s):
    b = s.encode() if isinstance(s, str) else s
    return bytes([len(b)]) + b


def longstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">I", len(b)) + b


def bool_table(names):
    body = b"".join(shortstr(n) + b"t\x01" for n in names)
    return struct.pack(">I", len(body)) + body


def frame(ftype, channel, payload):
    return struct.pack(">BHI", ftype, channel, len(payload)) + payload + b"\xce"


def method_frame(channel, class_id, method_id, args=b""):
    return frame(FRAME_METHOD, channel, struct.pack(">HH", class_id, method_id) + args)


class Raw:
    """A hand-driven AMQP 0-9-1 client on a plain socket."""

    def __init__(self, port, rcvbuf=None):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(5)
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""
        self.heartbeats = 0

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def method(self, channel, class_id, method_id, args=b""):
        self.send(method_frame(channel, class_id, method_id, args))

    def _fill(self, deadline):
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            raise EOFError("the server closed the connection")
        self.buf += data

    def read_bytes(self, n, timeout=5.0):
        deadline = time.monotonic() + timeout
        while len(self.buf) < n:
            self._fill(deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_frame(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 7:
                ftype, channel, size = struct.unpack(">BHI", self.buf[:7])
                if len(self.buf) >= size + 8:
                    check(self.buf[size + 7] == 0xCE, "frame end octet from the server")
                    payload = self.buf[7:7 + size]
                    self.buf = self.buf[size + 8:]
                    return ftype, channel, payload
            self._fill(deadline)

    def read_method(self, timeout=5.0):
        """The next method frame (heartbeats are counted and skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            ftype, channel, payload = self.read_frame(max(0.01, deadline - time.monotonic()))
            if ftype == FRAME_HEARTBEAT:
                self.heartbeats += 1
                continue
            check(ftype == FRAME_METHOD, "expected a method frame, got type %d" % ftype)
            class_id, method_id = struct.unpack(">HH", payload[:4])
            return channel, class_id, method_id, payload[4:]

    def expect(self, class_id, method_id, timeout=5.0):
        channel, c, m, args = self.read_method(timeout)
        if (c, m) == (10, 50):
            code, text = parse_close(args)[:2]
            raise Failure("expected %d.%d, got connection.close %d %s" % (class_id, method_id,
                                                                        code, text))
        check((c, m) == (class_id, method_id),
              "expected method %d.%d, got %d.%d" % (class_id, method_id, c, m))
        return channel, args

    def wait_eof(self, timeout=5.0):
        """Reads until the server hangs up; returns the seconds it took."""
        start = time.monotonic()
        deadline = start + timeout
        try:
            while True:
                if self.read_frame(max(0.01, deadline - time.monotonic()))[0] == FRAME_HEARTBEAT:
                    self.heartbeats += 1
        except EOFError:
            return time.monotonic() - start
        except socket.timeout:
            raise Failure("the server did not close the connection within %.0f s" % timeout)

    def login(self, user="guest", password="guest", mechanism="PLAIN", response=None):
        """Protocol header, then start-ok."""
        self.send(HEADER_091)
        _, args = self.expect(10, 10)
        check(args[:2] == b"\x00\x09", "connection.start offers version 0-9")
        props = bool_table(["authentication_failure_close", "connection.blocked",
                            "consumer_cancel_notify"])
        caps = shortstr("capabilities") + b"F" + props
        client_props = struct.pack(">I", len(caps)) + caps
        if response is None:
            response = b"\x00" + user.encode() + b"\x00" + password.encode()
        self.method(0, 10, 11, client_props + shortstr(mechanism) + longstr(response) +
                    shortstr("en_US"))

    def handshake(self, heartbeat=0, vhost="/", channel_max=None, frame_max=None, **login):
        """Up to connection.open (the answer is left to read)."""
        self.login(**login)
        _, args = self.expect(10, 30)
        server_channel_max, server_frame_max, server_heartbeat = struct.unpack(">HIH", args)
        self.tune = (server_channel_max, server_frame_max, server_heartbeat)
        self.method(0, 10, 31, struct.pack(
            ">HIH", server_channel_max if channel_max is None else channel_max,
            server_frame_max if frame_max is None else frame_max, heartbeat))
        self.method(0, 10, 40, shortstr(vhost) + shortstr("") + b"\x00")

    def open(self, **kw):
        self.handshake(**kw)
        self.expect(10, 41)
        return self

    def read_close(self, timeout=5.0):
        """Reads up to a connection.close; returns (code, text, class_id, method_id)."""
        while True:
            channel, c, m, args = self.read_method(timeout)
            if (channel, c, m) == (0, 10, 50):
                return parse_close(args)


def parse_close(args):
    code, tlen = struct.unpack(">HB", args[:3])
    text = args[3:3 + tlen].decode()
    class_id, method_id = struct.unpack(">HH", args[3 + tlen:7 + tlen])
    return code, text, class_id, method_id


def pika_params(port, **kw):
    kw.setdefault("credentials", pika.PlainCredentials("guest", "guest"))
    return pika.ConnectionParameters(host="127.0.0.1", port=port, connection_attempts=1,
                                     socket_timeout=5, blocked_connection_timeout=None, **kw)


def still_works(port):
    """A fresh pika connection can declare a queue and round-trip a message."""
    conn = pika.BlockingConnection(pika_params(port))
    ch = conn.channel()
    q = ch.queue_declare(queue="", exclusive=True).method.queue
    ch.basic_publish(exchange="", routing_key=q, body=b"ping")
    deadline = time.monotonic() + 5
    body = None
    while body is None and time.monotonic() < deadline:
        _, _, body = ch.basic_get(q, auto_ack=True)
    check(body == b"ping", "a message round-trips on a healthy connection (got %r)" % body)
    conn.close()


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def check_clean_exit(w):
    """Stops warren: it must exit 0 with no sanitizer report in its log."""
    status = w.stop()
    log = w.log()
    check(status == 0, "warren exits 0 (status %s):\n%s" % (status, log[-4000:]))
    for mark in SANITIZER_MARKS:
        check(mark not in log, "sanitizer report in warren's log:\n" + log[-4000:])


@contextlib.contextmanager
def broker(binary, plugin_dir, **kw):
    """A fresh warren for the block; afterwards it must exit cleanly. On a failure its log
    is printed before the temporary directory goes."""
    w = Warren(binary, plugin_dir, **kw)
    try:
        w.start()
        yield w
        check_clean_exit(w)
    except BaseException:
        print("---- warren's log (tail) ----\n" + w.log()[-4000:], flush=True)
        raise
    finally:
        if w.proc is not None:
            w.proc.kill()
            w.proc.wait()
        w.cleanup()


# ---- checks ------------------------------------------------------------------------------


def check_wrong_header(w):
    raw = Raw(w.port)
    raw.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    check(raw.read_bytes(8) == HEADER_091, "a wrong protocol header is answered with AMQP 0091")
    raw.wait_eof(3)
    raw.close()
    raw = Raw(w.port)
    raw.send(b"AMQP\x01\x01\x00\x09")  # the 0-9 header, taken as 0-9-1
    raw.expect(10, 10)
    raw.close()


def check_pika_open_close(w):
    conn = pika.BlockingConnection(pika_params(w.port))
    props = conn._impl.server_properties
    check(props.get("product") in (b"warren", "warren"), "server product is warren: %r" % props)
    caps = props.get("capabilities", {})
    for cap in ("publisher_confirms", "basic.nack", "consumer_cancel_notify",
                "connection.blocked", "authentication_failure_close",
                "exchange_exchange_bindings", "per_consumer_qos", "direct_reply_to"):
        check(caps.get(cap) is True, "capability %s announced" % cap)
    ch = conn.channel()
    check(ch.is_open, "channel opens")
    ch.close()
    check(ch.is_closed, "channel closes")
    conn.close()
    check(conn.is_closed, "connection closes")
    wait_for(lambda: "user 'guest' authenticated and granted access to vhost '/'" in w.log(),
             5, "the open logged")


def check_bad_password(w):
    try:
        pika.BlockingConnection(pika_params(
            w.port, credentials=pika.PlainCredentials("guest", "wrong")))
    except (pika.exceptions.ProbableAuthenticationError,
            pika.exceptions.AuthenticationError) as e:
        check("403" in str(e) and "ACCESS_REFUSED" in str(e),
              "bad password gives 403 ACCESS_REFUSED: %s" % e)
    else:
        raise Failure("a bad password was accepted")
    raw = Raw(w.port)
    raw.login(password="wrong")
    code, text, _, _ = raw.read_close()
    check(code == 403 and text == "ACCESS_REFUSED - Login was refused using authentication "
          "mechanism PLAIN. For details see the broker logfile.", "raw 403: %s" % text)
    raw.close()


def check_amqplain(w):
    body = (shortstr("LOGIN") + b"S" + longstr("guest") +
            shortstr("PASSWORD") + b"S" + longstr("guest"))
    Raw(w.port).open(mechanism="AMQPLAIN", response=body).close()


def check_vhost_refused(w):
    try:
        pika.BlockingConnection(pika_params(w.port, virtual_host="nope"))
    except pika.exceptions.AMQPConnectionError as e:
        check("530" in str(e) and "NOT_ALLOWED - vhost nope not found" in str(e),
              "unknown vhost gives 530: %s" % e)
    else:
        raise Failure("an unknown vhost was accepted")


def check_tune_limits(w):
    """As RabbitMQ 3.10: tune-ok values out of range drop the socket without a word (after a
    pause); 4096, the spec's frame-min-size, is accepted."""
    over, under = Raw(w.port), Raw(w.port)
    over.handshake(channel_max=4000)
    under.handshake(frame_max=4095)
    start = time.monotonic()
    for raw in (over, under):
        raw.wait_eof(6)
        took = time.monotonic() - start
        check(2 <= took <= 5, "a refused tune-ok closes silently after ~3 s (%.2f s)" % took)
        raw.close()
    wait_for(lambda: "negotiated channel_max = 4000 is higher than the maximum allowed value "
             "(2047)" in w.log() and "negotiated frame_max = 4095 is lower than the minimum "
             "allowed value (4096)" in w.log(), 5, "the refusals logged")
    Raw(w.port).open(frame_max=4096).close()


def check_heartbeat(w):
    raw = Raw(w.port).open(heartbeat=1)
    took = raw.wait_eof(6)
    check(raw.heartbeats >= 1, "the server sent heartbeats (%d)" % raw.heartbeats)
    check(1.5 <= took <= 3.5, "a silent client is dropped after ~2 heartbeats (%.2f s)" % took)
    raw.close()
    wait_for(lambda: "missed heartbeats from client" in w.log(), 5, "the timeout logged")


def check_heartbeat_kept(w):
    """A client that sends heartbeats stays connected past the timeout."""
    raw = Raw(w.port).open(heartbeat=1)
    deadline = time.monotonic() + 3.5
    while time.monotonic() < deadline:
        raw.send(frame(FRAME_HEARTBEAT, 0, b""))
        try:
            raw.read_frame(0.3)
        except socket.timeout:
            pass
    raw.method(0, 10, 50, struct.pack(">H", 200) + shortstr("bye") + struct.pack(">HH", 0, 0))
    raw.expect(10, 51)
    raw.wait_eof(3)
    raw.close()


def expect_error(w, payload, code, text_part, class_method=None):
    """Sends payload after a full handshake; the server must close with code."""
    healthy = pika.BlockingConnection(pika_params(w.port))
    raw = Raw(w.port).open()
    raw.send(payload)
    got_code, text, class_id, method_id = raw.read_close()
    check(got_code == code and text_part in text,
          "expected %d containing %r, got %d %r" % (code, text_part, got_code, text))
    if class_method:
        check((class_id, method_id) == class_method,
              "close names %s, got %s" % (class_method, (class_id, method_id)))
    raw.method(0, 10, 51)
    check(raw.wait_eof(5) < 1, "the server hangs up once close-ok is in")
    raw.close()
    check(healthy.is_open, "another connection is unaffected")
    ch = healthy.channel()
    ch.queue_declare(queue="", exclusive=True)
    healthy.close()


def check_garbage(w):
    expect_error(w, b"\x01\x00\x00\x00\x00\x00\x04\x00\x14\x00\x0a\xff", 501,
                 "invalid_frame_end_marker")
    expect_error(w, b"this is not AMQP at all" * 10, 501, "FRAME_ERROR")
    expect_error(w, method_frame(0, 99, 1), 503, "COMMAND_INVALID - unknown method")
    expect_error(w, method_frame(1, 20, 10, b"\x05ab"), 501, "cannot decode", (20, 10))


def check_oversized(w):
    expect_error(w, struct.pack(">BHI", 3, 1, 200000) + b"x" * 64, 501,
                 "FRAME_ERROR - type 3, first 16 octets = <<>>: {frame_too_large,200000,131064}")


def check_channel_rules(w):
    open_ch = method_frame(1, 20, 10, shortstr(""))
    expect_error(w, method_frame(1, 50, 10, b"\x00\x00" + shortstr("q") + b"\x00" +
                                 b"\x00\x00\x00\x00"), 504,
                 "CHANNEL_ERROR - expected 'channel.open'", (50, 10))
    expect_error(w, open_ch + open_ch, 504, "CHANNEL_ERROR - second 'channel.open' seen",
                 (20, 10))
    expect_error(w, method_frame(0, 50, 10, b"\x00\x00" + shortstr("q") + b"\x00" +
                                 b"\x00\x00\x00\x00"), 504,
                 "unexpected method in connection state running")
    expect_error(w, open_ch + method_frame(1, 10, 40, shortstr("/") + shortstr("") + b"\x00"),
                 503, "COMMAND_INVALID - unimplemented method", (10, 40))
    expect_error(w, frame(FRAME_HEADER, 0, b"\x00" * 14), 505,
                 "UNEXPECTED_FRAME - type 2, all octets = <<0,0,0,0,0,0,0,0,0,0,0,0,0,0>>")
    expect_error(w, frame(FRAME_HEADER, 1, b"\x00" * 14), 505,
                 "UNEXPECTED_FRAME - expected method frame, got non method frame instead")
    publish = method_frame(1, 60, 40, b"\x00\x00" + shortstr("") + shortstr("q") + b"\x00")
    expect_error(w, open_ch + publish + method_frame(1, 20, 40, b""), 505,
                 "expected content header for class 60, got non content header frame instead",
                 (60, 40))
    header = frame(FRAME_HEADER, 1, struct.pack(">HHQH", 60, 0, 4, 0))
    expect_error(w, open_ch + publish + header + frame(FRAME_BODY, 1, b"12345"), 501,
                 "content body frame exceeds remaining content size", (60, 40))
    raw = Raw(w.port).open(channel_max=2)
    for ch in (1, 7):
        raw.method(ch, 20, 10, shortstr(""))
        raw.expect(20, 11)
    raw.method(7, 20, 40, struct.pack(">H", 200) + shortstr("") + struct.pack(">HH", 0, 0))
    raw.expect(20, 41)
    raw.method(9, 20, 10, shortstr(""))
    raw.expect(20, 11)
    raw.method(3, 20, 10, shortstr(""))
    code, text, _, _ = raw.read_close()
    check(code == 530 and text == "NOT_ALLOWED - number of channels opened (2) has reached "
          "the negotiated channel_max (2)", "channel_max counts open channels: %s" % text)
    raw.close()


def check_multiframe_publish(w):
    """A body split over several frames arrives whole, and one of zero bytes too."""
    raw = Raw(w.port).open()
    raw.method(1, 20, 10, shortstr(""))
    raw.expect(20, 11)
    raw.method(1, 50, 10, b"\x00\x00" + shortstr("mf") + b"\x00" + b"\x00\x00\x00\x00")
    raw.expect(50, 11)
    body = bytes(range(256)) * 1000
    publish = method_frame(1, 60, 40, b"\x00\x00" + shortstr("") + shortstr("mf") + b"\x00")
    header = frame(FRAME_HEADER, 1, struct.pack(">HHQH", 60, 0, len(body), 0))
    chunks = [frame(FRAME_BODY, 1, body[i:i + 100000]) for i in range(0, len(body), 100000)]
    data = publish + header + b"".join(chunks)
    for i in range(0, len(data), 7777):  # dribble it in to cross read boundaries
        raw.send(data[i:i + 7777])
    raw.send(publish + frame(FRAME_HEADER, 1, struct.pack(">HHQH", 60, 0, 0, 0)))
    raw.close()
    conn = pika.BlockingConnection(pika_params(w.port))
    ch = conn.channel()
    got = []
    deadline = time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < deadline:
        _, _, b = ch.basic_get("mf", auto_ack=True)
        if b is not None:
            got.append(b)
    check(got == [body, b""], "multi-frame and empty bodies arrive whole (%s)"
          % [len(b) for b in got])
    ch.queue_delete("mf")
    conn.close()


def check_publish_sizes(w):
    """Bodies of every size class (copied, sliced from the read buffer, multi-frame) arrive
    intact while many are in flight at once."""
    conn = pika.BlockingConnection(pika_params(w.port))
    ch = conn.channel()
    ch.queue_declare("sizes")
    sizes = [0, 1, 100, 65535, 65536, 70000, 131064, 131065, 300000] * 6
    bodies = [bytes([(i * 7 + j) % 251 for j in range(n)]) if n < 1000 else
              (bytes([i % 251]) * n) for i, n in enumerate(sizes)]
    for b in bodies:
        ch.basic_publish(exchange="", routing_key="sizes", body=b)
    got = []
    deadline = time.monotonic() + 10
    while len(got) < len(bodies) and time.monotonic() < deadline:
        _, _, b = ch.basic_get("sizes", auto_ack=True)
        if b is not None:
            got.append(b)
    check(got == bodies, "all %d bodies intact (%d arrived)" % (len(bodies), len(got)))
    ch.queue_delete("sizes")
    conn.close()


def check_backpressure(w):
    """A consumer that reads slowly still gets every delivery: output above the high-water
    mark pauses deliveries and the drained socket resumes them."""
    conn = pika.BlockingConnection(pika_params(w.port))
    ch = conn.channel()
    ch.queue_declare("bp")
    count, size = 40, 100000
    for i in range(count):
        ch.basic_publish(exchange="", routing_key="bp", body=bytes([i]) * size)
    raw = Raw(w.port, rcvbuf=4096).open()
    raw.method(1, 20, 10, shortstr(""))
    raw.expect(20, 11)
    raw.method(1, 60, 20, b"\x00\x00" + shortstr("bp") + shortstr("") + b"\x02" +
               b"\x00\x00\x00\x00")  # no-ack
    raw.expect(60, 21)
    bodies = []
    deadline = time.monotonic() + 20
    while len(bodies) < count and time.monotonic() < deadline:
        _, c, m, _ = raw.read_method(10)
        check((c, m) == (60, 60), "a basic.deliver (got %d.%d)" % (c, m))
        ftype, _, payload = raw.read_frame()
        check(ftype == FRAME_HEADER, "a content header follows the deliver")
        body_size = struct.unpack(">Q", payload[4:12])[0]
        body = b""
        while len(body) < body_size:
            ftype, _, payload = raw.read_frame()
            check(ftype == FRAME_BODY, "body frames follow the header")
            body += payload
        bodies.append(body)
    check(bodies == [bytes([i]) * size for i in range(count)],
          "every delivery arrives in order (%d of %d)" % (len(bodies), count))
    raw.close()
    ch.queue_delete("bp")
    conn.close()


def check_limits(binary, plugin_dir):
    with broker(binary, plugin_dir, amqp_options="{max_connections: 2, heartbeat: 2s}") as w:
        first, second = Raw(w.port).open(), Raw(w.port).open()
        check(first.tune[2] == 2, "heartbeat option offered in tune (%d)" % first.tune[2])
        third = Raw(w.port)
        third.wait_eof(3)
        wait_for(lambda: "max_connections (2) reached" in w.log(), 5, "the refusal logged")
        for raw in (first, second, third):
            raw.close()
    w = Warren(binary, plugin_dir, amqp_options="{frame_max: 4KiB}")
    try:
        try:
            w.start()
        except RuntimeError:
            pass
        else:
            raise Failure("frame_max below 8KiB was accepted")
        check("frame_max = 4096 bytes is below AMQP's minimum frame size, 8192 bytes" in w.log(),
              "a clear error for a small frame_max:\n" + w.log())
    finally:
        w.stop()
        w.cleanup()


def check_memory_alarm(binary, plugin_dir):
    with broker(binary, plugin_dir, broker_yaml="memory_high_watermark: 64KiB") as w:
        events = []
        pub = pika.BlockingConnection(pika_params(w.port))
        pub.add_on_connection_blocked_callback(lambda c, m: events.append("blocked"))
        pub.add_on_connection_unblocked_callback(lambda c, m: events.append("unblocked"))
        ch = pub.channel()
        ch.queue_declare("big")
        published = 0
        while "blocked" not in events and published < 64:
            ch.basic_publish(exchange="", routing_key="big", body=b"x" * 8192)
            published += 1
            pub.process_data_events(0.05)
        check(events == ["blocked"], "the publisher hears connection.blocked (%s)" % events)
        other = pika.BlockingConnection(pika_params(w.port))
        och = other.channel()
        depth = och.queue_declare("big", passive=True).method.message_count
        check(published * 8192 >= 64 * 1024 and depth == published,
              "blocked once over the watermark (%d published, %d stored)" % (published, depth))
        ch.basic_publish(exchange="", routing_key="big", body=b"held")
        pub.process_data_events(0.3)
        depth = och.queue_declare("big", passive=True).method.message_count
        check(depth == published, "a blocked connection is not read (depth %d)" % depth)
        och.queue_purge("big")
        deadline = time.monotonic() + 5
        while "unblocked" not in events and time.monotonic() < deadline:
            pub.process_data_events(0.05)
        check(events == ["blocked", "unblocked"], "then connection.unblocked (%s)" % events)
        wait_for(lambda: och.queue_declare("big", passive=True).method.message_count == 1, 5,
                 "the held publish to arrive after the alarm cleared")
        other.close()
        pub.close()


def check_sigterm(binary, plugin_dir):
    with broker(binary, plugin_dir) as w:
        conn = pika.BlockingConnection(pika_params(w.port))
        conn.channel()
        w.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        error = None
        while error is None and time.monotonic() < deadline:
            try:
                conn.process_data_events(0.1)
            except pika.exceptions.ConnectionClosedByBroker as e:
                error = e
        check(error is not None, "the client was told the broker closed the connection")
        check(error.reply_code == 320 and error.reply_text == "CONNECTION_FORCED - broker "
              "forced connection closure with reason 'shutdown'", "got %r" % error)
        w.proc.wait(timeout=10)  # check_clean_exit reads its status


def main():
    binary, plugin_dir = sys.argv[1], sys.argv[2]
    shared = [check_wrong_header, check_pika_open_close, check_bad_password, check_amqplain,
              check_vhost_refused, check_tune_limits, check_heartbeat, check_heartbeat_kept,
              check_garbage, check_oversized, check_channel_rules, check_multiframe_publish,
              check_publish_sizes, check_backpressure]
    alone = [check_limits, check_memory_alarm, check_sigterm]
    passed = 0
    name = "startup"
    try:
        with broker(binary, plugin_dir) as w:
            for fn in shared:
                name = fn.__name__
                fn(w)
                passed += 1
                print("ok", name, flush=True)
            name = "shutdown"
        for fn in alone:
            name = fn.__name__
            fn(binary, plugin_dir)
            passed += 1
            print("ok", name, flush=True)
    except Exception as e:  # noqa: BLE001 - any failure ends the run with its story
        print("FAIL %s: %s: %s" % (name, type(e).__name__, e), flush=True)
        print("%d passed, 1 failed" % passed)
        return 1
    print("%d passed, 0 failed" % passed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
