#!/usr/bin/env bash
# bridge_bench.sh: what crossing between the protocols costs (issue 7), measured against the
# direct paths in the same run, on one warren with both listeners:
#
#   (a) AMQP publish -> log -> Kafka consume
#   (b) Kafka produce -> forward_to exchange -> AMQP consume
#   direct: Kafka produce -> Kafka consume, and AMQP publish -> AMQP consume
#
# A bridge is compared with the slower of the two direct paths: a path from one protocol to
# the other cannot beat its slower end, so what it falls short of that is the bridge's cost.
#
#   bench/bridge_bench.sh [--quick] [--runs N] [--build-dir DIR] [--case NAME] [--out FILE]
#
# It builds the Release configuration if needed (DIR, default build-release), measures the
# loopback TCP bandwidth of one connection, starts warren with an amqp091 and a kafka listener
# on free ports (tests/integration/harness.py) and the topics, exchanges and queues of every
# run declared in its config (a fresh one per run), and runs every case N times (default 3).
# A bridge case runs two load generators at once: the consumer (kafka_load consume --stamped,
# or amqp_load consume --existing --stamped) and the producer (amqp_load publish --existing,
# or kafka_load produce); the consumer reads the producer's CLOCK_MONOTONIC stamps, so its
# rate counts from the first record's send time to the last one's receipt and its latency is
# end to end. A direct case is kafka_load e2e or amqp_load e2e (producer and consumer in one
# process). The -paced cases run at 20,000 records/s for latency, the Kafka consumer taking
# records one by one (kafka_load latency mode, or consume --stamped --rate). Every topic has
# 1 partition: a bridge's order is per partition, and the AMQP side is one queue. It prints
# min / median / max per case, the bridge / slower-direct ratios of the medians (the aim: a
# bridge keeps at least 70% of the direct path's records/s), the CPU used by warren and by the load
# generators, and the exact load-generator arguments. --quick is a smoke run (a tenth of the
# records, one run); --out writes every run's JSON line to FILE.
#
# Every load run is bounded by a record count and a time limit; warren is stopped by its PID.
# Run it on an otherwise idle machine: the CPU other processes used is measured during each run.
set -euo pipefail
self="$(realpath "$0")"
cd "$(dirname "$self")/.."

. bench/benchlib.sh
bench_args bridge_bench "$@"
bench_build bridge_bench amqp_load kafka_load

exec /usr/bin/python3 - "$build" "${args[@]}" <<'PY'
import os
import shlex
import statistics
import sys

sys.path[:0] = ["bench", "tests/integration"]
from benchlib import (common_args, flatten_latency, loopback_bandwidth,  # noqa: E402
                      run_load, write_jsonl)
import harness  # noqa: E402

build, argv, quick, runs, out_path, only_case, time_limit = common_args(sys.argv)
amqp_load = os.path.join(build, "bench", "amqp_load")
kafka_load = os.path.join(build, "bench", "kafka_load")
COUNT = str(1000000 // (10 if quick else 1))
PACED = ["--rate", "20000", "--count", str(100000 // (10 if quick else 1))]
WIRE_RECORD = 111  # a 100-byte value in a RecordBatch v2 (kafka_bench.sh)

# (name, direction, path, consumer or None, producer); a command is (generator, arguments),
# its run's names filled in by run_case. The publishers are alike: AMQP with confirms (a
# window of 1,000), Kafka with acks=1. No path waits for the disk: logs have flush: never,
# so an AMQP confirm into a log comes at append, as Kafka's acks=1 does, and the AMQP queue
# is a memory queue (storage_bench.c measures durability).
K = ["--acks", "1"]
CASES = [
    ("kafka-direct", "kafka", "direct", None,
     (kafka_load, ["--mode", "e2e", "--topic", "{direct}"] + K + ["--count", COUNT])),
    ("amqp-direct", "amqp", "direct", None,
     (amqp_load, ["--mode", "e2e", "--queue", "{direct}", "--confirm", "--count", COUNT])),
    ("a-bridge", "a", "bridge",
     (kafka_load, ["--mode", "consume", "--stamped", "--topic", "{log}", "--count", COUNT]),
     (amqp_load, ["--mode", "publish", "--existing", "--queue", "{log}", "--confirm",
                  "--count", COUNT])),
    ("b-bridge", "b", "bridge",
     (amqp_load, ["--mode", "consume", "--existing", "--stamped", "--queue", "{queue}",
                  "--count", COUNT]),
     (kafka_load, ["--mode", "produce", "--topic", "{log}"] + K + ["--count", COUNT])),
    ("kafka-direct-paced", "kafka", "direct", None,
     (kafka_load, ["--mode", "latency", "--topic", "{direct}"] + K + ["--linger-ms", "0"] +
      PACED)),
    ("amqp-direct-paced", "amqp", "direct", None,
     (amqp_load, ["--mode", "e2e", "--queue", "{direct}", "--confirm"] + PACED)),
    ("a-bridge-paced", "a", "bridge",
     (kafka_load, ["--mode", "consume", "--stamped", "--topic", "{log}"] + PACED),
     (amqp_load, ["--mode", "publish", "--existing", "--queue", "{log}", "--confirm"] + PACED)),
    ("b-bridge-paced", "b", "bridge",
     (amqp_load, ["--mode", "consume", "--existing", "--stamped", "--queue", "{queue}",
                  "--count", PACED[3]]),
     (kafka_load, ["--mode", "produce", "--topic", "{log}"] + K + ["--linger-ms", "0"] +
      PACED)),
]
if only_case:
    CASES = [c for c in CASES if c[0] == only_case]
    if not CASES:
        sys.exit("bridge_bench: no case named %s" % only_case)


def names(case, i):
    """The run's own topics and queues: a fresh log and forward target each time."""
    return {"direct": "%s-direct-%d" % (case, i), "log": "%s-log-%d" % (case, i),
            "queue": "%s-fwd-%d" % (case, i)}


def topology():
    lines = ["vhosts:", "  - name: /", "    exchanges:"]
    queues, bindings = [], []
    for name, direction, _, _, _ in CASES:
        for i in range(runs):
            n = names(name, i)
            if direction == "kafka":  # the direct Kafka path's topic
                queues.append("{name: %s, storage: log, durable: true, options: {flush: never}}" % n["direct"])
            elif direction == "amqp":  # amqp_load declares and deletes its own queue
                continue
            elif direction == "a":  # AMQP publishes to the log by name (the default exchange)
                queues.append("{name: %s, storage: log, durable: true, options: {flush: never}}" % n["log"])
            else:  # every record of the log forwarded through a fanout into a memory queue
                lines.append("      - {name: %s-x, type: fanout}" % n["log"])
                queues.append("{name: %s, storage: log, durable: true, options: {flush: never}, forward_to: %s-x}"
                              % (n["log"], n["log"]))
                queues.append("{name: %s, storage: memory}" % n["queue"])
                bindings.append("{exchange: %s-x, queue: %s}" % (n["log"], n["queue"]))
    if lines[-1] == "    exchanges:":
        lines.pop()
    lines += ["    queues:"] + ["      - " + q for q in queues]
    if bindings:
        lines += ["    bindings:"] + ["      - " + b for b in bindings]
    return "\n".join(lines) + "\n"


def command(w, gen, args, n):
    target = (["--brokers", "127.0.0.1:%d" % w.kafka_port] if gen == kafka_load else
              ["--port", str(w.port)])
    return [gen] + target + ["--time", str(time_limit)] + [a.format(**n) for a in args]


def run_case(w, case, i):
    """One run; for a bridge, the consumer starts first and the producer once it runs (both
    under one shell, so run_load accounts the CPU of the pair). The result is the consumer's
    JSON line; the run fails if either generator does."""
    name, _, _, consumer, producer = case
    n = names(name, i)
    prod = command(w, producer[0], producer[1], n)
    if consumer is None:
        cmd = prod
    else:
        cons = command(w, consumer[0], consumer[1], n)
        cmd = ["bash", "-c", '"${@:2:$1}" & c=$!; "${@:$(($1 + 2))}" >/dev/null || '
               '{ s=$?; kill $c; wait $c; exit $s; }; wait $c', "pair", str(len(cons))]
        cmd += cons + prod
    res, err = run_load(cmd, w.proc.pid, 2 * time_limit + 60)
    if res is not None:
        flatten_latency(res, "latency_us", "latency_", ("p50", "p99"))
        res["records_s"] = res["consume_rate"]
    return res, err


def fmt(v):
    return "-" if v is None else "{:,.0f}".format(v) if v >= 100 else "%.1f" % v


def main():
    print("== machine: %d CPUs" % os.cpu_count())
    bw = loopback_bandwidth(0.5 if quick else 2.0)
    print("== loopback TCP, one connection: %.2f GB/s: at most %s records/s of 100 B values "
          "(%d B each in a RecordBatch)" % (bw / 1e9, fmt(bw / WIRE_RECORD), WIRE_RECORD),
          flush=True)
    results, raw, failed = {}, [], 0
    with harness.Warren(os.path.abspath(os.path.join(build, "warren")),
                        os.path.abspath(os.path.join(build, "plugins")),
                        extra_yaml=topology(), kafka=True) as w:
        print("== warren on 127.0.0.1:%d (AMQP) and :%d (Kafka)" % (w.port, w.kafka_port),
              flush=True)
        for i in range(runs):
            for case in CASES:
                res, err = run_case(w, case, i)
                tag = "%s run %d/%d" % (case[0], i + 1, runs)
                if res is None:
                    failed += 1
                    print("  %s: FAILED: %s" % (tag, err), flush=True)
                    continue
                res.update(case=case[0], run=i + 1, loopback_bytes_s=round(bw))
                raw.append(res)
                results.setdefault(case[0], []).append(res)
                print("  %s: %s records/s, latency p50 %s p99 %s µs%s; CPU cores: warren %.2f, "
                      "load %.2f, other %.2f" % (tag, fmt(res["records_s"]),
                                                 fmt(res["latency_p50"]),
                                                 fmt(res["latency_p99"]),
                                                 "" if res["complete"] else " INCOMPLETE",
                                                 res["cpu_broker"], res["cpu_load"],
                                                 res["cpu_other"]), flush=True)
    if out_path:
        write_jsonl(out_path, raw)

    def med(case, metric):
        vals = [r[metric] for r in results.get(case, []) if r.get(metric) is not None]
        return (statistics.median(vals), min(vals), max(vals)) if vals else None

    print()
    print("| case | records/s median (min – max) | p50 µs | p99 µs median (min – max) | "
          "bridge / slower direct | CPU: warren, load |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, _, path, _, _ in CASES:
        rate, p99, p50 = med(name, "records_s"), med(name, "latency_p99"), med(name,
                                                                                "latency_p50")
        if rate is None:
            continue
        # A bridge against the slower of the two direct paths: no path between the protocols
        # can beat the slower end, so what falls short of it is the bridge's own cost.
        paced = name.endswith("-paced")
        directs = [med(d + ("-paced" if paced else ""), "records_s")
                   for d in ("kafka-direct", "amqp-direct")]
        directs = [d[0] for d in directs if d and d[0]]
        ratio = ("%.2f" % (rate[0] / min(directs)) if path == "bridge" and directs else "")
        rs = results[name]
        print("| %s | %s (%s – %s) | %s | %s (%s – %s) | %s | %.2f, %.2f |"
              % (name, fmt(rate[0]), fmt(rate[1]), fmt(rate[2]), fmt(p50 and p50[0]),
                 fmt(p99 and p99[0]), fmt(p99 and p99[1]), fmt(p99 and p99[2]), ratio,
                 statistics.median(r["cpu_broker"] for r in rs),
                 statistics.median(r["cpu_load"] for r in rs)))
    print()
    for name, _, _, consumer, producer in CASES:
        parts = [c for c in (consumer, producer) if c]
        print("- %s: %s" % (name, " & ".join(
            "`%s %s --time %d`" % (os.path.basename(g), shlex.join(a), time_limit)
            for g, a in parts)))
    incomplete = sum(1 for r in raw if not r["complete"])
    if failed or incomplete:
        print("- %d run(s) failed, %d hit the time limit" % (failed, incomplete))
    return 1 if failed else 0


sys.exit(main())
PY
