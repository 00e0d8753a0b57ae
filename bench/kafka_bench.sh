#!/usr/bin/env bash
# kafka_bench.sh: warren's Kafka listener driven by bench/kafka_load (librdkafka), against the
# machine's own limit: the loopback TCP bandwidth of one connection, measured in the same run.
#
#   bench/kafka_bench.sh [--quick] [--runs N] [--build-dir DIR] [--case NAME] [--out FILE]
#
# It builds the Release configuration if needed (DIR, default build-release), measures
# loopback, starts warren with a Kafka listener on a free port (tests/integration/harness.py,
# the topics of every run declared in its config: `log` storage, 4 partitions, default
# flush policy), and runs every case N times (default 3). It prints min / median / max per case
# as a Markdown table, with the CPU warren and kafka_load used, and the loopback limit in
# records/s for 100-byte values. --out also writes every run's JSON line to FILE; --quick is a
# smoke run (a tenth of the records, one run). There is no Kafka broker in Debian to compare
# with: the aims are absolute (issue 5: 1,000,000 records/s produced, 2,000,000 consumed).
#
# Every load run is bounded by a record count and a time limit; warren is stopped by its PID.
# Run it on an otherwise idle machine: the CPU other processes used is measured during each run.
set -euo pipefail
self="$(realpath "$0")"
cd "$(dirname "$self")/.."

. bench/benchlib.sh
bench_args kafka_bench "$@"
bench_build kafka_bench kafka_load

exec /usr/bin/python3 - "$build" "${args[@]}" <<'PY'
import os
import statistics
import sys

sys.path[:0] = ["bench", "tests/integration"]
from benchlib import (common_args, flatten_latency, loopback_bandwidth,  # noqa: E402
                      run_load, write_jsonl)
import harness  # noqa: E402

build, argv, quick, runs, out_path, only_case, time_limit = common_args(sys.argv)
load_bin = os.path.join(build, "bench", "kafka_load")
warren_bin = os.path.abspath(os.path.join(build, "warren"))
plugin_dir = os.path.abspath(os.path.join(build, "plugins"))
scale = 10 if quick else 1
PARTITIONS = 4
# A 100-byte value costs about 111 bytes in a RecordBatch v2 (length, attributes, timestamp
# and offset deltas, null key, value length, header count), plus 61 bytes per batch.
WIRE_RECORD = 111

# (name, what, topic (per run), kafka_load arguments, metrics). consume reads the topic the
# produce-acks1 run of the same round filled.
CASES = [
    ("produce-acks1-100B", "produce only, acks=1, 100 B", "p1",
     ["--mode", "produce", "--acks", "1", "--count", str(5000000 // scale)],
     ["produce_rate", "produce_mb_s", "ack_p50", "ack_p99"]),
    ("consume-100B", "consume only, from the start of the topic produce-acks1 filled", "p1",
     ["--mode", "consume", "--count", str(5000000 // scale)],
     ["consume_rate", "consume_mb_s"]),
    ("produce-acksall-100B", "produce only, acks=all, 100 B", "pall",
     ["--mode", "produce", "--acks", "all", "--count", str(5000000 // scale)],
     ["produce_rate", "produce_mb_s", "ack_p50", "ack_p99"]),
    ("produce-idempotent-100B", "produce only, acks=all and idempotence, 100 B", "pidem",
     ["--mode", "produce", "--acks", "all", "--idempotence", "--count", str(5000000 // scale)],
     ["produce_rate", "produce_mb_s"]),
    ("e2e-acks1-100B", "producer and consumer at once, acks=1, 100 B", "e2e",
     ["--mode", "e2e", "--acks", "1", "--count", str(3000000 // scale)],
     ["consume_rate", "latency_p50", "latency_p99"]),
    ("latency-acksall-20k", "end to end at a paced 20,000 records/s, acks=all, 100 B", "lat",
     ["--mode", "e2e", "--acks", "all", "--rate", "20000", "--linger-ms", "0",
      "--count", str(200000 // scale)],
     ["latency_p50", "latency_p99", "ack_p50", "ack_p99"]),
    # Record by record: the consumer takes one record per poll and fetches wait 10 ms at most,
    # so each latency is that record's own (the case above takes batches and waits up to
    # 100 ms to fill one).
    ("latency-poll-acksall-1k", "end to end record by record at a paced 1,000 records/s, "
     "acks=all, 100 B", "lpoll1k",
     ["--mode", "latency", "--acks", "all", "--rate", "1000", "--linger-ms", "0",
      "--count", str(20000 // scale)],
     ["latency_p50", "latency_p99", "latency_p999", "latency_max"]),
    ("latency-poll-acksall-10k", "end to end record by record at a paced 10,000 records/s, "
     "acks=all, 100 B", "lpoll10k",
     ["--mode", "latency", "--acks", "all", "--rate", "10000", "--linger-ms", "0",
      "--count", str(100000 // scale)],
     ["latency_p50", "latency_p99", "latency_p999", "latency_max"]),
]
if only_case:
    CASES = [c for c in CASES if c[0] == only_case or
             (only_case == "consume-100B" and c[0] == "produce-acks1-100B")]
    if not CASES:
        sys.exit("kafka_bench: no case named %s" % only_case)
UNITS = {"produce_rate": "records/s", "consume_rate": "records/s", "produce_mb_s": "MB/s",
         "consume_mb_s": "MB/s", "latency_p50": "µs", "latency_p99": "µs", "latency_p999": "µs",
         "latency_max": "µs", "ack_p50": "µs", "ack_p99": "µs"}


def run_kafka_load(port, pid, topic, case_args):
    cmd = [load_bin, "--brokers", "127.0.0.1:%d" % port, "--topic", topic,
           "--time", str(time_limit)] + case_args
    res, err = run_load(cmd, pid, time_limit + 60)
    if res is not None:
        flatten_latency(res, "latency_us", "latency_", ("p50", "p99", "p999", "max"))
        flatten_latency(res, "ack_latency_us", "ack_", ("p50", "p99"))
    return res, err


def fmt(v):
    if v is None:
        return "-"
    return "{:,.0f}".format(v) if v >= 100 else "%.1f" % v


def main():
    print("== machine: %d CPUs" % os.cpu_count())
    bw = loopback_bandwidth(0.5 if quick else 2.0)
    limit = bw / WIRE_RECORD
    print("== loopback TCP, one connection: %.2f GB/s (%.0f MiB/s): at most %s records/s of "
          "100 B values (%d B each on the wire)" % (bw / 1e9, bw / 2**20, fmt(limit),
                                                    WIRE_RECORD), flush=True)
    topics = ["%s-%d" % (t, i) for i in range(runs) for t in sorted({c[2] for c in CASES})]
    yaml = ("vhosts:\n  - name: /\n    queues:\n" +
            "".join("      - {name: %s, storage: log, partitions: %d, durable: true}\n"
                    % (t, PARTITIONS) for t in topics))
    results, raw, failed = {}, [], 0
    with harness.Warren(warren_bin, plugin_dir, extra_yaml=yaml, kafka=True) as w:
        print("== warren on 127.0.0.1:%d (Kafka), %d topics of %d partitions"
              % (w.kafka_port, len(topics), PARTITIONS), flush=True)
        for i in range(runs):
            for name, _, topic, case_args, metrics in CASES:
                res, err = run_kafka_load(w.kafka_port, w.proc.pid, "%s-%d" % (topic, i),
                                          case_args)
                tag = "%s run %d/%d" % (name, i + 1, runs)
                if res is None:
                    failed += 1
                    print("  %s: FAILED: %s" % (tag, err), flush=True)
                    continue
                res.update(case=name, run=i + 1, loopback_bytes_s=round(bw))
                raw.append(res)
                results.setdefault(name, []).append(res)
                print("  %s: %s%s; CPU cores: warren %.2f, kafka_load %.2f, other %.2f"
                      % (tag, ", ".join("%s %s" % (m, fmt(res[m])) for m in metrics),
                         "" if res["complete"] else " INCOMPLETE", res["cpu_broker"],
                         res["cpu_load"], res["cpu_other"]), flush=True)
    if out_path:
        write_jsonl(out_path, raw)
    print()
    print("| case | metric | median (min – max) | of the loopback limit | CPU: warren, "
          "kafka_load |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, _, _, _, metrics in CASES:
        rs = results.get(name, [])
        for m in metrics:
            vals = [r[m] for r in rs if r.get(m) is not None]
            if not vals:
                continue
            med = statistics.median(vals)
            share = ("%.0f%%" % (100 * med / limit) if m.endswith("_rate") else
                     "%.0f%%" % (100 * med * 1e6 / bw) if m.endswith("_mb_s") else "")
            cpu = "%.2f, %.2f" % (statistics.median(r["cpu_broker"] for r in rs),
                                  statistics.median(r["cpu_load"] for r in rs))
            print("| %s | %s, %s | %s (%s – %s) | %s | %s |"
                  % (name, m, UNITS[m], fmt(med), fmt(min(vals)), fmt(max(vals)), share, cpu))
    print()
    for name, what, _, case_args, _ in CASES:
        print("- %s: %s: `kafka_load %s --time %d`" % (name, what, " ".join(case_args),
                                                      time_limit))
    incomplete = sum(1 for r in raw if not r["complete"])
    if failed or incomplete:
        print("- %d run(s) failed, %d hit the time limit" % (failed, incomplete))
    return 1 if failed else 0


sys.exit(main())
PY
