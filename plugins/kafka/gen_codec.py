#!/usr/bin/env python3
"""gen_codec.py: writes the Kafka message codec from Apache Kafka's JSON message schemas.

    python3 gen_codec.py SPEC_MESSAGE_DIR OUTDIR

OUTDIR/kafka_msgs.h gets the table of the APIs and versions warren serves, one struct per
message and per nested struct type, and the decode/encode/init declarations; kafka_msgs.c
gets their code; kafka_msgs_test.h gets fill and compare helpers for the codec's unit test
only. Only the versions in SERVED are generated: a field that no served version carries is
left out, and every version condition is simplified against the served range. The naming
rules are in codec.h, the wire rules in the spec's PROTOCOL-NOTES.md. Standard library only.
"""
import json
import os
import re
import sys

# The APIs warren serves and their version ranges, in the order of kf_api_ranges. Produce
# 0-2 and Fetch 2-3 carry legacy message sets, which the transport converts (msgset.c).
SERVED = [
    ("ApiVersions", 0, 3), ("Metadata", 0, 8), ("Produce", 0, 7), ("Fetch", 2, 11),
    ("ListOffsets", 1, 5), ("FindCoordinator", 0, 2), ("JoinGroup", 0, 5),
    ("SyncGroup", 0, 3), ("Heartbeat", 0, 3), ("LeaveGroup", 0, 3), ("OffsetCommit", 2, 7),
    ("OffsetFetch", 1, 5), ("InitProducerId", 0, 1), ("CreateTopics", 2, 4),
    ("DeleteTopics", 0, 3), ("CreatePartitions", 0, 1), ("DescribeConfigs", 0, 3),
    ("SaslHandshake", 0, 1), ("SaslAuthenticate", 0, 1), ("DescribeGroups", 0, 4),
    ("ListGroups", 0, 2), ("DeleteGroups", 0, 1),
]

C_TYPES = {
    "bool": "bool", "int8": "int8_t", "int16": "int16_t", "int32": "int32_t",
    "int64": "int64_t", "uint16": "uint16_t", "uint32": "uint32_t", "float64": "double",
    "uuid": "struct kf_uuid", "string": "struct kf_str", "bytes": "struct kf_str",
    "records": "struct kf_str",
}
NUMBERS = {"int8", "int16", "int32", "int64", "uint16", "uint32", "float64"}
FIXED_SIZE = {"bool": 1, "int8": 1, "int16": 2, "uint16": 2, "int32": 4, "uint32": 4,
              "int64": 8, "float64": 8, "uuid": 16}
READ = {"bool": "kf_read_i8(IN) != 0", "int8": "kf_read_i8(IN)", "int16": "kf_read_i16(IN)",
        "int32": "kf_read_i32(IN)", "int64": "kf_read_i64(IN)",
        "uint16": "(uint16_t)kf_read_i16(IN)", "uint32": "(uint32_t)kf_read_i32(IN)",
        "float64": "kf_read_f64(IN)", "uuid": "kf_read_uuid(IN)"}
WRITE = {"bool": "kf_write_i8(O, X ? 1 : 0)", "int8": "kf_write_i8(O, X)",
         "int16": "kf_write_i16(O, X)", "int32": "kf_write_i32(O, X)",
         "int64": "kf_write_i64(O, X)", "uint16": "kf_write_i16(O, (int16_t)X)",
         "uint32": "kf_write_i32(O, (int32_t)X)", "float64": "kf_write_f64(O, X)",
         "uuid": "kf_write_uuid(O, X)"}
C_KEYWORDS = {
    "auto", "break", "case", "char", "const", "continue", "default", "do", "double", "else",
    "enum", "extern", "float", "for", "goto", "if", "inline", "int", "long", "register",
    "restrict", "return", "short", "signed", "sizeof", "static", "struct", "switch",
    "typedef", "union", "unsigned", "void", "volatile", "while", "bool", "true", "false",
}


def strip_comments(text):
    """The schemas are JSON with // line comments; drop those outside string literals."""
    out, i, in_str = [], 0, False
    while i < len(text):
        c = text[i]
        if in_str:
            out.append(c)
            if c == "\\":
                out.append(text[i + 1])
                i += 1
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
            out.append(c)
        elif text.startswith("//", i):
            nl = text.find("\n", i)
            i = len(text) if nl < 0 else nl
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.loads(strip_comments(f.read()))


def snake(name):
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s).lower()


def versions(spec, lo, hi):
    """The versions in [lo, hi] a version string ("N+", "N-M", "N", "none") covers."""
    spec = spec.strip()
    if spec == "none":
        return frozenset()
    if spec.endswith("+"):
        a, b = int(spec[:-1]), hi
    elif "-" in spec:
        a, b = (int(x) for x in spec.split("-"))
    else:
        a = b = int(spec)
    return frozenset(v for v in range(max(a, lo), min(b, hi) + 1))


def cond(s, ctx):
    """A C condition on `v` that holds for the versions in s, among those in ctx. None: always
    (s covers ctx); "0": never."""
    s = s & ctx
    if s == ctx:
        return None
    if not s:
        return "0"
    lo, hi = min(ctx), max(ctx)
    runs, vs = [], sorted(s)
    for v in vs:
        if runs and runs[-1][1] == v - 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    parts = []
    for a, b in runs:
        if a == b and lo < a < hi:
            parts.append("v == %d" % a)
        elif a > lo and b < hi:
            parts.append("(v >= %d && v <= %d)" % (a, b))
        elif a > lo:
            parts.append("v >= %d" % a)
        else:
            parts.append("v <= %d" % b)
    return " || ".join(parts)


def boolexpr(s, ctx):
    c = cond(s, ctx)
    return "true" if c is None else ("false" if c == "0" else "(%s)" % c)


class Field:
    def __init__(self, js, msg, ctx):
        self.name = js["name"]
        self.cname = snake(self.name)
        if self.cname in C_KEYWORDS:
            raise SystemExit("field %s is a C keyword" % self.name)
        self.type = js["type"]
        self.vers = versions(js["versions"], msg.lo, msg.hi) & ctx
        self.nullable = versions(js.get("nullableVersions", "none"), msg.lo, msg.hi)
        self.tagged = versions(js.get("taggedVersions", "none"), msg.lo, msg.hi)
        self.tag = int(js["tag"]) if "tag" in js else None
        self.flex = msg.flex
        if "flexibleVersions" in js:
            self.flex = msg.flex & versions(js["flexibleVersions"], msg.lo, msg.hi)
        self.default = js.get("default")
        self.is_array = self.type.startswith("[]")
        self.elem = self.type[2:] if self.is_array else self.type
        self.struct = None
        if self.elem not in C_TYPES and self.vers:
            self.struct = msg.struct(self.elem, js.get("fields"), self.vers)
            if not self.is_array and self.nullable:
                raise SystemExit("nullable struct field %s is not supported" % self.name)


class Struct:
    def __init__(self, cname, msg):
        self.cname = cname
        self.msg = msg
        self.ctx = frozenset()
        self.fields = []
        self.js = None


class Message:
    """One schema file, restricted to the served range [lo, hi]."""

    def __init__(self, js, api, kind, lo, hi):
        self.js, self.api, self.kind, self.lo, self.hi = js, api, kind, lo, hi
        self.all = frozenset(range(lo, hi + 1))
        self.flex = versions(js["flexibleVersions"], lo, hi)
        self.common = {c["name"]: c for c in js.get("commonStructs", [])}
        self.structs = {}
        self.order = []
        self.top = Struct("kf_%s_%s" % (api, kind), self)
        self.top.ctx = self.all
        self.top.js = js["fields"]
        # A common struct may be reached from several fields: its version context is the
        # union of theirs, so build until no context grows.
        while True:
            before = {name: st.ctx for name, st in self.structs.items()}
            self.order = []
            self.build(self.top)
            if before == {name: st.ctx for name, st in self.structs.items()}:
                break

    def struct(self, tname, fields, vers):
        if fields is None:
            if tname not in self.common:
                raise SystemExit("%s: unknown type %s" % (self.js["name"], tname))
            fields = self.common[tname]["fields"]
        st = self.structs.get(tname)
        if st is None:
            st = Struct("kf_%s_%s_%s" % (self.api, self.kind, snake(tname)), self)
            st.js = fields
            self.structs[tname] = st
        st.ctx = st.ctx | vers
        return st

    def build(self, st):
        """Makes st's fields, and the structs they use before st itself in self.order."""
        st.fields = [f for f in (Field(js, self, st.ctx) for js in st.js) if f.vers]
        for f in st.fields:
            if f.struct is not None and f.struct not in self.order:
                self.build(f.struct)
        self.order.append(st)
        names = set()
        for f in st.fields:
            for n in ([f.cname, "n_" + f.cname] if f.is_array else [f.cname]):
                if n in names:
                    raise SystemExit("%s: field name %s repeats" % (st.cname, n))
                names.add(n)


# ---- C emission -------------------------------------------------------------------------

def flex_of(f, ctx):
    return boolexpr(f.flex, ctx)


def min_size(st, vs):
    """The fewest bytes one instance of st takes in any version of vs (tagged fields: 0)."""
    best = None
    for v in vs:
        n = 1 if v in st.msg.flex else 0
        for f in st.fields:
            if v not in f.vers or v in f.tagged:
                continue
            compact = v in f.flex
            if f.is_array:
                n += 1 if compact else 4
            elif f.struct is not None:
                n += min_size(f.struct, [v])
            elif f.type in FIXED_SIZE:
                n += FIXED_SIZE[f.type]
            elif f.type == "string":
                n += 1 if compact else 2
            else:
                n += 1 if compact else 4
        best = n if best is None else min(best, n)
    return best or 0


def default_expr(f):
    """The C value of a non-array field's schema default."""
    d = f.default
    t = f.type
    if f.struct is not None:
        return None
    if t == "bool":
        return "true" if d == "true" else "false"
    if t in NUMBERS:
        if d is None or d == "":
            return "0"
        if t == "float64":
            return repr(float(d))
        val = int(d, 16) if str(d).lower().startswith("0x") else int(d)
        if t == "int32" and val == -2**31:
            return "INT32_MIN"
        if t == "int64":
            return "INT64_C(%d)" % val
        return str(val)
    if t == "uuid":
        return None
    if t == "records":
        return "KF_NULL"
    if d == "null":
        return "KF_NULL"
    if t == "string":
        return "kf_str_c(%s)" % json.dumps(d or "")
    return "kf_str_c(\"\")"


def fmt_versions(s):
    """"v1-3", "v5", "v2, v4-5": the versions of s as runs."""
    runs = []
    for v in sorted(s):
        if runs and runs[-1][1] == v - 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    return ", ".join("v%d" % a if a == b else "v%d-%d" % (a, b) for a, b in runs)


def emit_header_struct(st, out):
    out.append("struct %s {" % st.cname)
    if not st.fields:
        out.append("    char unused;                 /* no field in the served versions */")
    for f in st.fields:
        note = []
        if f.vers != st.ctx:
            note.append(fmt_versions(f.vers))
        if f.nullable & f.vers:
            nv = f.nullable & f.vers
            note.append("nullable" + ("" if nv == f.vers else " " + fmt_versions(nv)))
        if f.tagged & f.vers:
            note.append("tag %d" % f.tag)
        if f.default is not None and not f.is_array and f.struct is None:
            note.append("default %s" % (f.default if f.default != "" else '""'))
        comment = (" /* %s */" % "; ".join(note)) if note else ""
        if f.struct is not None:
            ctype = "struct %s" % f.struct.cname
        else:
            ctype = C_TYPES[f.elem]
        if f.is_array:
            out.append("    %s *%s;%s" % (ctype, f.cname, comment))
            out.append("    int32_t n_%s;" % f.cname)
        else:
            out.append("    %s %s;%s" % (ctype, f.cname, comment))
    out.append("};")
    out.append("")


def emit_init(st, out):
    out.append("void %s_init(struct %s *m)" % (st.cname, st.cname))
    out.append("{")
    out.append("    memset(m, 0, sizeof *m);")
    for f in st.fields:
        if f.is_array:
            if f.default == "null":
                out.append("    m->n_%s = -1;" % f.cname)
        elif f.struct is not None:
            out.append("    %s_init(&m->%s);" % (f.struct.cname, f.cname))
        else:
            d = default_expr(f)
            if d not in (None, "0", "false"):
                out.append("    m->%s = %s;" % (f.cname, d))
    out.append("}")
    out.append("")


def read_scalar(f, ctx, elem=False):
    compact = flex_of(f, ctx)
    t = f.elem
    if t in READ:
        return READ[t].replace("IN", "d->in")
    nullable = "false" if elem else boolexpr(f.nullable, f.vers & ctx)
    if t == "string":
        return "kf_read_string(d->in, %s, %s)" % (compact, nullable)
    if t == "records":
        nullable = "true"
    return "kf_read_bytes(d->in, %s, %s)" % (compact, nullable)


def dec_field(f, ctx, ind):
    """Lines that decode field f (its versions already checked) from d->in into m."""
    p = " " * ind
    lines = []
    if f.is_array:
        vs = f.vers & ctx
        esize = min_size(f.struct, vs) if f.struct else FIXED_SIZE.get(f.elem, 1)
        x = "m->" + f.cname
        lines.append(p + "n = kf_read_array_len(d->in, %s, %s, %d);" % (
            flex_of(f, ctx), boolexpr(f.nullable, vs), max(esize, 1)))
        lines.append(p + "%s = n > 0 ? dec_alloc(d, (size_t)n, sizeof *%s) : NULL;" % (x, x))
        lines.append(p + "for (int32_t i = 0; %s && i < n && !d->in->err; i++)" % x)
        if f.struct:
            lines.append(p + "    dec_%s(d, &%s[i]);" % (f.struct.cname, x))
        else:
            lines.append(p + "    %s[i] = %s;" % (x, read_scalar(f, ctx, True)))
        lines.append(p + "m->n_%s = n > 0 && !%s ? 0 : n;" % (f.cname, x))
    elif f.struct is not None:
        lines.append(p + "dec_%s(d, &m->%s);" % (f.struct.cname, f.cname))
    else:
        lines.append(p + "m->%s = %s;" % (f.cname, read_scalar(f, ctx)))
    return lines


def write_scalar(f, ctx, x, o, elem=False):
    compact = flex_of(f, ctx)
    t = f.elem
    if t in WRITE:
        return WRITE[t].replace("O", o).replace("X", x)
    nullable = "false" if elem else boolexpr(f.nullable, f.vers & ctx)
    if t == "records":
        nullable = "true"
    fn = "kf_write_string" if t == "string" else "kf_write_bytes"
    arg = x if nullable == "true" else "nn_str(%s, %s)" % (x, nullable)
    return "%s(%s, %s, %s)" % (fn, o, arg, compact)


def enc_field(f, ctx, ind, o="o"):
    """Lines that write field f of m (its versions already checked) to o."""
    p = " " * ind
    lines = []
    if f.is_array:
        vs = f.vers & ctx
        nullable = boolexpr(f.nullable, vs)
        n = "m->n_%s" % f.cname
        if nullable != "true":
            n = "nn_count(%s, %s)" % (n, nullable)
        lines.append(p + "kf_write_array_len(%s, %s, %s);" % (o, n, flex_of(f, ctx)))
        lines.append(p + "for (int32_t i = 0; i < m->n_%s; i++)" % f.cname)
        if f.struct:
            lines.append(p + "    enc_%s(%s, v, &m->%s[i]);" % (f.struct.cname, o, f.cname))
        else:
            lines.append(p + "    %s;" % write_scalar(f, ctx, "m->%s[i]" % f.cname, o, True))
    elif f.struct is not None:
        lines.append(p + "enc_%s(%s, v, &m->%s);" % (f.struct.cname, o, f.cname))
    else:
        lines.append(p + "%s;" % write_scalar(f, ctx, "m->" + f.cname, o))
    return lines


def differs(f):
    """A C condition: tagged field f of m holds something other than its default."""
    x = "m->" + f.cname
    if f.is_array:
        return "m->n_%s != %s" % (f.cname, "-1" if f.default == "null" else "0")
    if f.struct is not None:
        return "!isdef_%s(&%s)" % (f.struct.cname, x)
    if f.type == "uuid":
        return "!kf_uuid_zero(%s)" % x
    if f.type in ("string", "bytes", "records"):
        d = default_expr(f)
        if d == "KF_NULL":
            return "%s.ptr != NULL" % x
        return "!str_is(%s, %s)" % (x, d)
    return "%s != %s" % (x, default_expr(f))


def used_in_tags(msg):
    """Structs whose default-ness the encoder tests: types of tagged struct fields, and the
    struct types nested in those."""
    found = []

    def add(st):
        if st not in found:
            found.append(st)
            for f in st.fields:
                if f.struct is not None and not f.is_array:
                    add(f.struct)

    for st in msg.order:
        for f in st.fields:
            if f.tagged & f.vers and f.struct is not None and not f.is_array:
                add(f.struct)
    return [s for s in msg.order if s in found]


def emit_isdef(st, out):
    out.append("static bool isdef_%s(const struct %s *m)" % (st.cname, st.cname))
    out.append("{")
    conds = [differs(f) for f in st.fields]
    out.append("    return !(%s);" % (" ||\n             ".join(conds) or "0"))
    out.append("}")
    out.append("")


def uses(lines, name):
    return any(re.search(r"\b%s\b" % name, line) for line in lines)


def emit_dec(st, out):
    ctx = st.ctx
    flex = boolexpr(st.msg.flex, ctx)
    # Tagged fields are read and written only in flexible versions.
    flexctx = ctx & st.msg.flex
    tagged = sorted((f for f in st.fields if f.tagged & f.vers), key=lambda f: f.tag)
    body = []
    for f in st.fields:
        present = f.vers - f.tagged
        if not present:
            continue
        c = cond(present, ctx)
        if c is None:
            body.extend(dec_field(f, ctx, 4))
        else:
            body.append("    if (%s) {" % c)
            body.extend(dec_field(f, ctx, 8))
            body.append("    }")
    if flex != "false":
        ind = "    " if flex == "true" else "        "
        if flex != "true":
            body.append("    if %s {" % flex)
        if tagged:
            # Each known tag's value is read from a cursor over its size alone; unknown tags
            # and tags of other versions are skipped.
            body.append(ind + "struct kf_in *outer = d->in;")
            body.append(ind + "uint32_t count = kf_read_uvarint(outer);")
            body.append(ind + "for (uint32_t t = 0; t < count && !outer->err; t++) {")
            body.append(ind + "    uint32_t tag = kf_read_uvarint(outer);")
            body.append(ind + "    struct kf_in sub = kf_read_tagged(outer);")
            body.append(ind + "    d->in = &sub;")
            body.append(ind + "    switch (tag) {")
            for f in tagged:
                body.append(ind + "    case %d:" % f.tag)
                c = cond(f.tagged & f.vers, flexctx)
                if c is None:
                    body.extend(dec_field(f, flexctx, len(ind) + 8))
                else:
                    body.append(ind + "        if (%s) {" % c)
                    body.extend(dec_field(f, flexctx, len(ind) + 12))
                    body.append(ind + "        }")
                body.append(ind + "        break;")
            body.append(ind + "    }")
            body.append(ind + "    d->in = outer;")
            body.append(ind + "    if (sub.err)")
            body.append(ind + "        outer->err = true;")
            body.append(ind + "}")
        else:
            body.append(ind + "kf_skip_tagged_fields(d->in);")
        if flex != "true":
            body.append("    }")
    out.append("static void dec_%s(struct kf_dec *d, struct %s *m)" % (st.cname, st.cname))
    out.append("{")
    if uses(body, "v"):
        out.append("    int16_t v = d->v;")
    if uses(body, "n"):
        out.append("    int32_t n = 0;")
    out.append("    %s_init(m);" % st.cname)
    if not body:
        out.append("    (void)d;")
    out.extend(body)
    out.append("}")
    out.append("")


def emit_enc(st, out):
    ctx = st.ctx
    flex = boolexpr(st.msg.flex, ctx)
    # Tagged fields are read and written only in flexible versions.
    flexctx = ctx & st.msg.flex
    tagged = sorted((f for f in st.fields if f.tagged & f.vers), key=lambda f: f.tag)
    out.append("static void enc_%s(struct wr_bytes *o, int16_t v, const struct %s *m)"
               % (st.cname, st.cname))
    out.append("{")
    body = []
    for f in st.fields:
        present = f.vers - f.tagged
        if not present:
            continue
        c = cond(present, ctx)
        lines = enc_field(f, ctx, 4 if c is None else 8)
        if c is None:
            body.extend(lines)
        else:
            body.append("    if (%s) {" % c)
            body.extend(lines)
            body.append("    }")
    if flex != "false":
        ind = "    " if flex == "true" else "        "
        if flex != "true":
            body.append("    if %s {" % flex)
        if tagged:
            terms = []
            for f in tagged:
                c = cond(f.tagged & f.vers, flexctx)
                terms.append("(%s%s)" % ("" if c is None else "(%s) && " % c, differs(f)))
            body.append(ind + "uint32_t count = 0;")
            for t in terms:
                body.append(ind + "count += %s;" % t)
            body.append(ind + "kf_write_uvarint(o, count);")
            for f, t in zip(tagged, terms):
                body.append(ind + "if %s {" % t)
                body.append(ind + "    struct wr_bytes val = {0};")
                body.extend(enc_field(f, flexctx, len(ind) + 4, "&val"))
                body.append(ind + "    kf_write_tagged(o, %d, &val);" % f.tag)
                body.append(ind + "}")
        else:
            body.append(ind + "kf_write_uvarint(o, 0);")
        if flex != "true":
            body.append("    }")
    if not uses(body, "v"):
        out.append("    (void)v;")
    if not body:
        out.append("    (void)o;")
        out.append("    (void)m;")
    out.extend(body)
    out.append("}")
    out.append("")


# ---- test helpers (kafka_msgs_test.h) ---------------------------------------------------

def emit_fill(st, out):
    ctx = st.ctx
    out.append("static void fill_%s(struct kf_fill *f, int16_t v, struct %s *m)"
               % (st.cname, st.cname))
    out.append("{")
    out.append("    %s_init(m);" % st.cname)
    body = []
    for f in st.fields:
        c = cond(f.vers, ctx)
        p = "    " if c is None else "        "
        lines = []
        nul = boolexpr(f.nullable, f.vers & ctx)
        if f.is_array:
            lines.append(p + "m->n_%s = fill_count(f, %s);" % (f.cname, nul))
            lines.append(p + "if (m->n_%s > 0)" % f.cname)
            lines.append(p + "    m->%s = fill_alloc(f, (size_t)m->n_%s * sizeof *m->%s);"
                         % (f.cname, f.cname, f.cname))
            lines.append(p + "for (int32_t i = 0; i < m->n_%s; i++)" % f.cname)
            if f.struct:
                lines.append(p + "    fill_%s(f, v, &m->%s[i]);" % (f.struct.cname, f.cname))
            else:
                lines.append(p + "    m->%s[i] = %s;" % (f.cname, fill_scalar(f, "false")))
        elif f.struct is not None:
            lines.append(p + "fill_%s(f, v, &m->%s);" % (f.struct.cname, f.cname))
        else:
            lines.append(p + "m->%s = %s;" % (f.cname, fill_scalar(f, nul)))
        if c is None:
            body.extend(lines)
        else:
            body.append("    if (%s) {" % c)
            body.extend(lines)
            body.append("    }")
    if not uses(body, "v"):
        out.append("    (void)v;")
    if not body:
        out.append("    (void)f;")
    out.extend(body)
    out.append("}")
    out.append("")


def fill_scalar(f, nullable):
    t = f.elem
    if t == "bool":
        return "fill_num(f) & 1"
    if t == "float64":
        return "(double)fill_num(f) + 0.5"
    if t in NUMBERS:
        return "(%s)fill_num(f)" % C_TYPES[t]
    if t == "uuid":
        return "fill_uuid(f)"
    if t == "records":
        nullable = "true"
    return "fill_str(f, \"%s\", %s)" % (f.cname, nullable)


def emit_same(st, out):
    out.append("static bool same_%s(const struct %s *a, const struct %s *b, const char **where)"
               % (st.cname, st.cname, st.cname))
    out.append("{")
    if not st.fields:
        out.append("    (void)a;")
        out.append("    (void)b;")
        out.append("    (void)where;")
    for f in st.fields:
        where = "%s.%s" % (st.cname[3:], f.cname)
        if f.is_array:
            out.append("    if (a->n_%s != b->n_%s)" % (f.cname, f.cname))
            out.append("        return fail(where, \"%s count\");" % where)
            out.append("    for (int32_t i = 0; i < a->n_%s; i++)" % f.cname)
            if f.struct:
                out.append("        if (!same_%s(&a->%s[i], &b->%s[i], where))"
                           % (f.struct.cname, f.cname, f.cname))
                out.append("            return false;")
            else:
                out.append("        if (!%s)" % same_scalar(f, "a->%s[i]" % f.cname,
                                                           "b->%s[i]" % f.cname))
                out.append("            return fail(where, \"%s\");" % where)
        elif f.struct is not None:
            out.append("    if (!same_%s(&a->%s, &b->%s, where))"
                       % (f.struct.cname, f.cname, f.cname))
            out.append("        return false;")
        else:
            out.append("    if (!%s)" % same_scalar(f, "a->" + f.cname, "b->" + f.cname))
            out.append("        return fail(where, \"%s\");" % where)
    out.append("    return true;")
    out.append("}")
    out.append("")


def same_scalar(f, a, b):
    if f.elem == "uuid":
        return "(memcmp(%s.b, %s.b, 16) == 0)" % (a, b)
    if f.elem in ("string", "bytes", "records"):
        return "same_str(%s, %s)" % (a, b)
    return "(%s == %s)" % (a, b)


# ---- files ------------------------------------------------------------------------------

def wrap(line, width=100):
    """Breaks a long generated line after its last ", " or "(" (or before " ? ") that fits,
    the rest indented 8 more than the line. No string literal of ours holds those."""
    out = []
    while len(line) > width:
        indent = len(line) - len(line.lstrip()) + 8
        cut = max(line.rfind(", ", 0, width - 1) + 1, line.rfind(" ? ", 0, width),
                  line.rfind("(", 0, width) + 1)
        if cut <= indent:
            break
        out.append(line[:cut].rstrip())
        line = " " * indent + line[cut:].lstrip()
    out.append(line)
    return "\n".join(out)


BANNER = ("/* Generated by plugins/kafka/gen_codec.py from the schemas in spec/message: "
          "do not edit. */")


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: gen_codec.py SPEC_MESSAGE_DIR OUTDIR")
    spec, outdir = sys.argv[1], sys.argv[2]
    names = {}
    flexible = {}
    for fn in sorted(os.listdir(spec)):
        if fn.endswith("Request.json"):
            js = load(os.path.join(spec, fn))
            names[js["apiKey"]] = js["name"][:-len("Request")]
            flexible[js["apiKey"]] = js["flexibleVersions"]
    apis = []
    for name, lo, hi in SERVED:
        pair = []
        for kind in ("request", "response"):
            js = load(os.path.join(spec, "%s%s.json" % (name, kind.capitalize())))
            valid = versions(js["validVersions"], lo, hi)
            if valid != frozenset(range(lo, hi + 1)):
                sys.exit("%s %s: versions %d-%d are not all valid" % (name, kind, lo, hi))
            pair.append(Message(js, snake(name), kind, lo, hi))
        apis.append((name, pair[0].js["apiKey"], lo, hi, pair))
    seen = set()
    for _, _, _, _, pair in apis:
        for msg in pair:
            for st in msg.order:
                if st.cname in seen:
                    sys.exit("type name %s repeats" % st.cname)
                seen.add(st.cname)

    h = [BANNER, "#ifndef KAFKA_MSGS_H", "#define KAFKA_MSGS_H", "", "#include \"codec.h\"", "",
         "/* Kafka's error codes, from spec/ERROR-CODES.tsv (Errors.java). */",
         "enum kf_error {"]
    with open(os.path.join(os.path.dirname(spec), "ERROR-CODES.tsv")) as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            if line.startswith("#") or len(cols) < 2 or cols[0] == "code":
                continue
            h.append("    KF_ERR_%s = %d," % (cols[1], int(cols[0])))
    h += ["};", "", "/* The API keys warren serves. */", "enum kf_api_key {"]
    for name, key, _, _, _ in apis:
        h.append("    KF_API_%s = %d," % (snake(name).upper(), key))
    h += ["};", "",
          "/* The versions warren serves per API: decode and encode exist for exactly these. */",
          "struct kf_api_range {", "    int16_t api_key;", "    int16_t min;",
          "    int16_t max;", "};", "#define KF_N_APIS %d" % len(apis),
          "extern const struct kf_api_range kf_api_ranges[KF_N_APIS];", "",
          "/* Whether the schema makes this version of this API flexible (request header v2,",
          " * compact strings, tagged fields), also past the served range: an ApiVersions",
          " * request newer than ours still has a v2 header. False for unknown APIs. */",
          "bool kf_version_flexible(int16_t api_key, int16_t version);",
          "/* The schema's name of the API (\"Produce\"), for every API of the spec; \"Unknown\"",
          " * for other keys. */",
          "const char *kf_api_name(int16_t api_key);", "",
          "/* Per message below: the structs (nested types first), _init (the schema's",
          " * defaults, for building a message to encode), and decode/encode as codec.h says.",
          " * decode returns WR_OK, WR_EPROTO (malformed, or a version outside the served",
          " * range) or WR_ENOMEM (the arena ran out); it leaves the cursor after the message,",
          " * so trailing bytes are the caller's to refuse. The comment on a field gives the",
          " * served versions that carry it, when not all, and its nullability and default. */",
          ""]
    c = [BANNER, "#include \"kafka_msgs.h\"", "", "#include <string.h>", "",
         "/* What one decode call carries: the cursor (a tagged field's value gets a cursor of",
         " * its own), the arena, the version, and whether the arena ran out. */",
         "struct kf_dec {", "    struct kf_in *in;", "    struct kf_arena *a;",
         "    int16_t v;", "    bool oom;", "};", "",
         "#define KF_NULL ((struct kf_str){NULL, 0})", "",
         "static void *dec_alloc(struct kf_dec *d, size_t n, size_t size)", "{",
         "    void *p = kf_arena_alloc(d->a, n * size);", "    if (!p) {",
         "        d->oom = true;", "        d->in->err = true;", "    }", "    return p;",
         "}", "",
         "/* A null string or array in a version where the field is not nullable goes out",
         " * empty: a zeroed struct must still encode to something a client accepts. */",
         "static inline struct kf_str nn_str(struct kf_str s, bool nullable)", "{",
         "    if (!nullable && !s.ptr)", "        s = kf_str_c(\"\");", "    return s;",
         "}", "",
         "static inline int32_t nn_count(int32_t n, bool nullable)", "{",
         "    return n < 0 && !nullable ? 0 : n;", "}", "",
         "static inline bool str_is(struct kf_str s, struct kf_str d)", "{",
         "    return s.ptr && s.len == d.len && memcmp(s.ptr, d.ptr, (size_t)d.len) == 0;",
         "}", "",
         "const struct kf_api_range kf_api_ranges[KF_N_APIS] = {"]
    for name, key, lo, hi, _ in apis:
        c.append("    {%d, %d, %d}, /* %s */" % (key, lo, hi, name))
    c += ["};", "", "bool kf_version_flexible(int16_t api_key, int16_t version)", "{",
          "    switch (api_key) {"]
    for key in sorted(flexible):
        fv = flexible[key]
        if fv == "none":
            continue
        if not fv.endswith("+"):
            sys.exit("flexibleVersions %s of API %d is not N+" % (fv, key))
        c.append("    case %d:" % key)
        c.append("        return version >= %d;" % int(fv[:-1]))
    c += ["    default:", "        return false;", "    }", "}", "",
          "const char *kf_api_name(int16_t api_key)", "{", "    switch (api_key) {"]
    for key in sorted(names):
        c.append("    case %d:" % key)
        c.append("        return \"%s\";" % names[key])
    c += ["    default:", "        return \"Unknown\";", "    }", "}", ""]

    t = [BANNER, "/* Fill and compare helpers for tests/unit/kafka_codec_test.c only. */",
         "#ifndef KAFKA_MSGS_TEST_H", "#define KAFKA_MSGS_TEST_H", "",
         "#include \"kafka_msgs.h\"", "", "#include <stdio.h>", "#include <string.h>", "",
         "/* Fills with distinct values (a counter); nulls: null where nullable, and one",
         " * element per array that cannot be null. */",
         "struct kf_fill {", "    struct kf_arena *a;", "    uint32_t n;", "    bool nulls;",
         "};", "",
         "static inline uint32_t fill_num(struct kf_fill *f)", "{", "    return ++f->n;", "}", "",
         "static inline void *fill_alloc(struct kf_fill *f, size_t n)", "{",
         "    void *p = kf_arena_alloc(f->a, n);", "    if (!p)", "        abort();",
         "    return p;", "}", "",
         "static inline struct kf_str fill_str(struct kf_fill *f, const char *what, bool nullable)",
         "{", "    if (f->nulls && nullable)", "        return (struct kf_str){NULL, 0};",
         "    char *s = fill_alloc(f, 64);",
         "    int n = snprintf(s, 64, \"%s-%u\", what, fill_num(f));",
         "    return (struct kf_str){s, n};", "}", "",
         "static inline struct kf_uuid fill_uuid(struct kf_fill *f)", "{",
         "    struct kf_uuid u;", "    for (int i = 0; i < 16; i++)",
         "        u.b[i] = (uint8_t)(fill_num(f) * 7);", "    return u;", "}", "",
         "static inline int32_t fill_count(struct kf_fill *f, bool nullable)", "{",
         "    if (f->nulls)", "        return nullable ? -1 : 1;", "    return 2;", "}", "",
         "static inline bool fail(const char **where, const char *what)", "{",
         "    *where = what;", "    return false;", "}", "",
         "static inline bool same_str(struct kf_str a, struct kf_str b)", "{",
         "    if (!a.ptr || !b.ptr)", "        return !a.ptr && !b.ptr;",
         "    return a.len == b.len && memcmp(a.ptr, b.ptr, (size_t)a.len) == 0;", "}", ""]

    for name, key, lo, hi, pair in apis:
        for msg in pair:
            h.append("/* ---- %s%s v%d-%d ---- */" % (name, msg.kind.capitalize(), lo, hi))
            h.append("")
            for st in msg.order:
                emit_header_struct(st, h)
            for st in msg.order:
                decl = "void %s_init(struct %s *m);" % (st.cname, st.cname)
                if len(decl) > 100:
                    decl = "void %s_init(\n    struct %s *m);" % (st.cname, st.cname)
                h.append(decl)
            top = msg.top.cname
            h.append("int %s_decode(struct kf_in *in, int16_t version, struct kf_arena *a,"
                     % top)
            h.append("    %sstruct %s *out);" % (" " * (len(top) + 8), top))
            h.append("void %s_encode(struct wr_bytes *out, int16_t version," % top)
            h.append("    %sconst struct %s *m);" % (" " * (len(top) + 9), top))
            h.append("")

            c.append("/* ---- %s%s ---- */" % (name, msg.kind.capitalize()))
            c.append("")
            for st in msg.order:
                emit_init(st, c)
            for st in used_in_tags(msg):
                emit_isdef(st, c)
            for st in msg.order:
                emit_dec(st, c)
                emit_enc(st, c)
            c += ["int %s_decode(struct kf_in *in, int16_t version, struct kf_arena *a," % top,
                  "    %sstruct %s *out)" % (" " * (len(top) + 8), top),
                  "{",
                  "    struct kf_dec d = {in, a, version, false};",
                  "    if (version < %d || version > %d) {" % (lo, hi),
                  "        %s_init(out);" % top,
                  "        in->err = true;",
                  "        return WR_EPROTO;",
                  "    }",
                  "    dec_%s(&d, out);" % top,
                  "    return d.oom ? WR_ENOMEM : in->err ? WR_EPROTO : WR_OK;",
                  "}", "",
                  "void %s_encode(struct wr_bytes *out, int16_t version," % top,
                  "    %sconst struct %s *m)" % (" " * (len(top) + 9), top),
                  "{",
                  "    enc_%s(out, version, m);" % top,
                  "}", ""]
            for st in msg.order:
                emit_fill(st, t)
                emit_same(st, t)
    h += ["#endif", ""]

    t += ["/* One message type, seen through void pointers so a test can loop over all. */",
          "struct kf_test_msg {", "    int16_t api_key;", "    int16_t min, max;",
          "    bool request;", "    const char *name;", "    size_t size;",
          "    int (*decode)(struct kf_in *in, int16_t v, struct kf_arena *a, void *m);",
          "    void (*encode)(struct wr_bytes *out, int16_t v, const void *m);",
          "    void (*fill)(struct kf_fill *f, int16_t v, void *m);",
          "    bool (*same)(const void *a, const void *b, const char **where);", "};", ""]
    rows = []
    for name, key, lo, hi, pair in apis:
        for msg in pair:
            top = msg.top.cname
            short = top[3:]
            t += ["static int t_dec_%s(struct kf_in *in, int16_t v, struct kf_arena *a, void *m)"
                  % short, "{", "    return %s_decode(in, v, a, m);" % top, "}", "",
                  "static void t_enc_%s(struct wr_bytes *out, int16_t v, const void *m)" % short,
                  "{", "    %s_encode(out, v, m);" % top, "}", "",
                  "static void t_fill_%s(struct kf_fill *f, int16_t v, void *m)" % short,
                  "{", "    fill_%s(f, v, m);" % top, "}", "",
                  "static bool t_same_%s(const void *a, const void *b, const char **where)"
                  % short, "{", "    return same_%s(a, b, where);" % top, "}", ""]
            rows.append("    {%d, %d, %d, %s, \"%s%s\", sizeof(struct %s), t_dec_%s, t_enc_%s,"
                        % (key, lo, hi, "true" if msg.kind == "request" else "false", name,
                           msg.kind.capitalize(), top, short, short))
            rows.append("     t_fill_%s, t_same_%s}," % (short, short))
    t += ["static const struct kf_test_msg kf_test_msgs[] = {"] + rows + ["};", "", "#endif", ""]

    os.makedirs(outdir, exist_ok=True)
    for fn, lines in (("kafka_msgs.h", h), ("kafka_msgs.c", c), ("kafka_msgs_test.h", t)):
        tmp = os.path.join(outdir, fn + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("\n".join(wrap(line) for text in lines for line in text.split("\n")))
        os.replace(tmp, os.path.join(outdir, fn))


if __name__ == "__main__":
    main()
