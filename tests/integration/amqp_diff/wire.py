"""wire.py: a small raw AMQP 0-9-1 client for the scenarios a real client library refuses to
express: wrong protocol headers, garbage, oversized or malformed frames, methods on the wrong
channel, frames out of order.

Methods are encoded and decoded from RabbitMQ's code-generation JSON that the transport itself
is generated from (plugins/amqp091/spec/), so class and method ids, argument order and types
come from the spec data; the framing and the field-table tags follow
/work/shared/specs/amqp/WIRE-NOTES.md. Every read is bounded by a deadline.
"""
import json
import os
import socket
import struct
import time

SPEC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                    "plugins", "amqp091", "spec", "amqp-rabbitmq-0.9.1.json")
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8
FRAME_END = 0xCE

BASIC_PROPERTIES = [  # (name, type) in flag order, bit 15 first
    ("content_type", "shortstr"), ("content_encoding", "shortstr"), ("headers", "table"),
    ("delivery_mode", "octet"), ("priority", "octet"), ("correlation_id", "shortstr"),
    ("reply_to", "shortstr"), ("expiration", "shortstr"), ("message_id", "shortstr"),
    ("timestamp", "timestamp"), ("type", "shortstr"), ("user_id", "shortstr"),
    ("app_id", "shortstr"), ("cluster_id", "shortstr")]


class Spec:
    """Classes and methods of the JSON spec, by (class id, method id) and by 'class.method'."""

    def __init__(self, path=SPEC):
        with open(path) as f:
            data = json.load(f)
        domains = dict(data["domains"])
        self.by_id = {}
        self.by_name = {}
        for cls in data["classes"]:
            for m in cls["methods"]:
                args = [(a["name"], a.get("type") or domains[a["domain"]],
                         a.get("default-value")) for a in m["arguments"]]
                entry = ("%s.%s" % (cls["name"], m["name"]), cls["id"], m["id"], args,
                         bool(m.get("content")))
                self.by_id[(cls["id"], m["id"])] = entry
                self.by_name[entry[0]] = entry


SPEC_DATA = Spec()


class Eof(Exception):
    """The server closed the TCP connection."""


class Timeout(Exception):
    """Nothing (or not enough) arrived before the deadline."""


# ---- data types ---------------------------------------------------------------------------

def enc_shortstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("B", len(b)) + b


def enc_longstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">I", len(b)) + b


def enc_value(v):
    if isinstance(v, bool):
        return b"t" + struct.pack("B", v)
    if isinstance(v, int):
        if -2**31 <= v < 2**31:
            return b"I" + struct.pack(">i", v)
        return b"l" + struct.pack(">q", v)
    if isinstance(v, float):
        return b"d" + struct.pack(">d", v)
    if isinstance(v, str):
        return b"S" + enc_longstr(v)
    if isinstance(v, bytes):
        return b"x" + enc_longstr(v)
    if isinstance(v, dict):
        return b"F" + enc_table(v)
    if isinstance(v, (list, tuple)):
        body = b"".join(enc_value(x) for x in v)
        return b"A" + struct.pack(">I", len(body)) + body
    if v is None:
        return b"V"
    raise TypeError("cannot encode %r in a field table" % (v,))


def enc_table(d):
    body = b"".join(enc_shortstr(k) + enc_value(v) for k, v in (d or {}).items())
    return struct.pack(">I", len(body)) + body


class Cursor:
    """Reads typed values from a byte string; a short read raises ValueError. With typed,
    field values come back as [tag, value] so a test can see the encoding kept."""

    def __init__(self, data, typed=False):
        self.data = data
        self.pos = 0
        self.typed = typed

    def take(self, n):
        if self.pos + n > len(self.data):
            raise ValueError("short read")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def unpack(self, fmt):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def shortstr(self):
        return self.take(self.unpack("B")).decode("utf-8", "replace")

    def longstr(self):
        return self.take(self.unpack(">I"))

    def table(self):
        sub = Cursor(self.longstr(), self.typed)
        out = {}
        while sub.pos < len(sub.data):
            name = sub.shortstr()
            out[name] = sub.value()
        return out

    def value(self):
        tag = self.take(1)
        v = self._value(tag)
        return [tag.decode(), v] if self.typed else v

    def _value(self, tag):
        simple = {b"t": ">B", b"b": ">b", b"B": ">B", b"s": ">h", b"u": ">H", b"I": ">i",
                  b"i": ">I", b"l": ">q", b"L": ">q", b"f": ">f", b"d": ">d", b"T": ">Q"}
        if tag in simple:
            v = self.unpack(simple[tag])
            if tag == b"t":
                return bool(v)
            if tag == b"T":
                return ("timestamp", v)
            return v
        if tag == b"S":
            return self.longstr().decode("utf-8", "replace")
        if tag == b"x":
            return self.longstr()
        if tag == b"F":
            return self.table()
        if tag == b"A":
            sub = Cursor(self.longstr(), self.typed)
            out = []
            while sub.pos < len(sub.data):
                out.append(sub.value())
            return out
        if tag == b"D":
            scale = self.unpack("B")
            return ("decimal", scale, self.unpack(">i"))
        if tag == b"V":
            return None
        raise ValueError("unknown field tag %r" % tag)


def enc_args(args_spec, values):
    out = b""
    bits = []
    for name, typ, default in args_spec:
        v = values.get(name.replace("-", "_"), default)
        if typ == "bit":
            bits.append(bool(v))
            continue
        if bits:
            out += struct.pack("B", sum(1 << i for i, b in enumerate(bits) if b))
            bits = []
        if typ == "octet":
            out += struct.pack("B", v or 0)
        elif typ == "short":
            out += struct.pack(">H", v or 0)
        elif typ == "long":
            out += struct.pack(">I", v or 0)
        elif typ in ("longlong", "timestamp"):
            out += struct.pack(">Q", v or 0)
        elif typ == "shortstr":
            out += enc_shortstr(v or "")
        elif typ == "longstr":
            out += enc_longstr(v or b"")
        elif typ == "table":
            out += enc_table(v)
        else:
            raise ValueError("unknown type %s" % typ)
    if bits:
        out += struct.pack("B", sum(1 << i for i, b in enumerate(bits) if b))
    return out


def dec_args(args_spec, cur):
    out = {}
    bit_byte, bit_index = 0, 8
    for name, typ, _ in args_spec:
        key = name.replace("-", "_")
        if typ == "bit":
            if bit_index == 8:
                bit_byte, bit_index = cur.unpack("B"), 0
            out[key] = bool(bit_byte & (1 << bit_index))
            bit_index += 1
            continue
        bit_index = 8
        if typ == "octet":
            out[key] = cur.unpack("B")
        elif typ == "short":
            out[key] = cur.unpack(">H")
        elif typ == "long":
            out[key] = cur.unpack(">I")
        elif typ in ("longlong", "timestamp"):
            out[key] = cur.unpack(">Q")
        elif typ == "shortstr":
            out[key] = cur.shortstr()
        elif typ == "longstr":
            out[key] = cur.longstr()
        elif typ == "table":
            out[key] = cur.table()
    return out


def method_payload(name, **args):
    """The payload of a method frame: class id, method id, encoded arguments."""
    _, cid, mid, spec, _ = SPEC_DATA.by_name[name]
    return struct.pack(">HH", cid, mid) + enc_args(spec, args)


def header_payload(body_size, class_id=60, **props):
    flags = 0
    values = b""
    for i, (name, typ) in enumerate(BASIC_PROPERTIES):
        if name not in props:
            continue
        flags |= 1 << (15 - i)
        v = props[name]
        values += {"shortstr": lambda: enc_shortstr(v), "table": lambda: enc_table(v),
                   "octet": lambda: struct.pack("B", v),
                   "timestamp": lambda: struct.pack(">Q", v)}[typ]()
    return struct.pack(">HHQH", class_id, 0, body_size, flags) + values


def frame(ftype, channel, payload, end=FRAME_END):
    return struct.pack(">BHI", ftype, channel, len(payload)) + payload + bytes([end])


class Method:
    """A decoded method frame: name ('channel.close'), channel, args (a dict)."""

    def __init__(self, channel, name, args):
        self.channel, self.name, self.args = channel, name, args

    def __repr__(self):
        return "Method(%d, %s, %r)" % (self.channel, self.name, self.args)


class Connection:
    """One TCP connection speaking raw frames. Reads wait until a deadline, never longer."""

    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.timeout = timeout
        self.buf = b""
        self.frame_max = 4096
        self.channel_max = 0

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        self.sock.sendall(data)

    def send_method(self, channel, name, **args):
        self.send(frame(FRAME_METHOD, channel, method_payload(name, **args)))

    def send_content(self, channel, body, **props):
        """A content header and the body frames after a publish."""
        out = frame(FRAME_HEADER, channel, header_payload(len(body), **props))
        step = self.frame_max - 8 if self.frame_max else len(body) or 1
        for i in range(0, len(body), step):
            out += frame(FRAME_BODY, channel, body[i:i + step])
        self.send(out)

    def publish(self, channel, exchange, routing_key, body, mandatory=False, **props):
        self.send_method(channel, "basic.publish", exchange=exchange, routing_key=routing_key,
                         mandatory=mandatory)
        self.send_content(channel, body, **props)

    def _fill(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout()
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise Timeout()
            except ConnectionResetError:
                raise Eof()
            if not chunk:
                raise Eof()
            self.buf += chunk

    def read_bytes(self, n, timeout=None):
        """Up to n raw bytes (for a server's reply to a bad protocol header)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        try:
            self._fill(n, deadline)
        except (Eof, Timeout):
            pass
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_frame(self, timeout=None):
        """(type, channel, payload); raises Eof or Timeout."""
        deadline = time.monotonic() + (timeout or self.timeout)
        self._fill(7, deadline)
        ftype, channel, size = struct.unpack(">BHI", self.buf[:7])
        self._fill(7 + size + 1, deadline)
        payload = self.buf[7:7 + size]
        end = self.buf[7 + size]
        self.buf = self.buf[8 + size:]
        if end != FRAME_END:
            raise ValueError("bad frame end %#x from the server" % end)
        return ftype, channel, payload

    def read(self, timeout=None, typed=False):
        """The next frame decoded: a Method, ('header', ch, size, props), ('body', ch, bytes)
        or ('heartbeat',); typed: header tables as [tag, value]. Raises Eof or Timeout."""
        ftype, channel, payload = self.read_frame(timeout)
        if ftype == FRAME_METHOD:
            cur = Cursor(payload)
            cid, mid = cur.unpack(">H"), cur.unpack(">H")
            name, _, _, spec, _ = SPEC_DATA.by_id[(cid, mid)]
            return Method(channel, name, dec_args(spec, cur))
        if ftype == FRAME_HEADER:
            cur = Cursor(payload, typed)
            cur.unpack(">H"), cur.unpack(">H")
            size, flags = cur.unpack(">Q"), cur.unpack(">H")
            props = {}
            for i, (name, typ) in enumerate(BASIC_PROPERTIES):
                if flags & (1 << (15 - i)):
                    props[name] = {"shortstr": cur.shortstr, "table": cur.table,
                                   "octet": lambda: cur.unpack("B"),
                                   "timestamp": lambda: cur.unpack(">Q")}[typ]()
            return ("header", channel, size, props)
        if ftype == FRAME_BODY:
            return ("body", channel, payload)
        return ("heartbeat",)

    def read_method(self, timeout=None):
        """The next method frame, skipping heartbeats."""
        while True:
            f = self.read(timeout)
            if isinstance(f, Method):
                return f
            if f[0] != "heartbeat":
                return f

    def read_message(self, timeout=None, typed=False):
        """After a deliver/get-ok/return Method: (props, body)."""
        hdr = self.read(timeout, typed)
        if not isinstance(hdr, tuple) or hdr[0] != "header":
            raise ValueError("expected a content header, got %r" % (hdr,))
        body = b""
        while len(body) < hdr[2]:
            f = self.read(timeout)
            if not isinstance(f, tuple) or f[0] != "body":
                raise ValueError("expected a body frame, got %r" % (f,))
            body += f[2]
        return hdr[3], body

    def handshake(self, vhost="/", user="guest", password="guest", channel_max=None,
                  frame_max=None, heartbeat=0, header=PROTOCOL_HEADER):
        """Header, start-ok (PLAIN), tune-ok (the server's limits unless given), open.
        Returns the server's answer to connection.open (a Method) or raises Eof."""
        self.send(header)
        start = self.read_method()
        assert start.name == "connection.start", start
        self.send_method(0, "connection.start-ok", client_properties={"product": "amqp-diff"},
                         mechanism="PLAIN", response=b"\0%s\0%s" % (user.encode(),
                                                                   password.encode()),
                         locale="en_US")
        tune = self.read_method()
        if not isinstance(tune, Method) or tune.name != "connection.tune":
            return tune
        self.channel_max = tune.args["channel_max"] if channel_max is None else channel_max
        self.frame_max = tune.args["frame_max"] if frame_max is None else frame_max
        self.send_method(0, "connection.tune-ok", channel_max=self.channel_max,
                         frame_max=self.frame_max, heartbeat=heartbeat)
        self.send_method(0, "connection.open", virtual_host=vhost)
        return self.read_method()

    def open_channel(self, channel):
        self.send_method(channel, "channel.open")
        return self.read_method()
