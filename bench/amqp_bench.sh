#!/usr/bin/env bash
# amqp_bench.sh: warren against RabbitMQ over AMQP 0-9-1, the same load generator
# (bench/amqp_load) with the same parameters against each broker, one broker after the other.
#
#   bench/amqp_bench.sh [--quick] [--runs N] [--retries N] [--build-dir DIR]
#                       [--only rabbitmq|warren] [--case NAME] [--out FILE]
#
# It builds the Release configuration if needed (DIR, default build-release, as scripts/run.sh
# uses), measures the machine's loopback TCP bandwidth, starts a private RabbitMQ
# (tests/integration/rabbitmq.py), runs every case N times (default 3), stops it, then starts
# warren with an amqp091 listener on a free port (tests/integration/harness.py) and runs the
# same cases. It prints min / median / max per case and broker and the warren/RabbitMQ ratio
# of the medians, as a Markdown table, and the CPU each side used; --out also writes every
# run's JSON line to FILE. --quick is a smoke run: a tenth of the messages, one run each.
# --case NAME runs that case alone (the names are the first column of the table).
#
# Never both brokers at once: on a small machine they would share the cores and measure each
# other. Every load run is bounded by a message count and a time limit; brokers are stopped by
# their PIDs. Run it on an otherwise idle machine: before each run it waits (10 s at most) for
# the machine to be quiet, and it measures the CPU that other processes used during the run;
# a run they disturbed (more than 0.1 core) is repeated, --retries times at most (default 2).
set -euo pipefail
self="$(realpath "$0")"
cd "$(dirname "$self")/.."

build=build-release
args=()
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) build="$2"; shift 2 ;;
    --only) only="$2"; args+=("$1" "$2"); shift 2 ;;
    --runs|--retries|--out|--case) args+=("$1" "$2"); shift 2 ;;
    --quick) args+=("$1"); shift ;;
    -h|--help) sed -n '2,/^set /s/^# \{0,1\}//p' "$self"; exit 0 ;;
    *) echo "amqp_bench: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$only" in ""|rabbitmq|warren) ;; *) echo "amqp_bench: --only rabbitmq|warren" >&2; exit 2 ;;
esac

echo "== build ($build, Release)"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DWARREN_TESTS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target amqp_load >/dev/null
if [ "$only" != rabbitmq ]; then
  # warren itself: if it does not build, say so and measure RabbitMQ alone.
  cmake --build "$build" -j"$(nproc)" >"$build/amqp_bench-build.log" 2>&1 ||
    echo "amqp_bench: warren did not build (see $build/amqp_bench-build.log)" >&2
fi

exec /usr/bin/python3 - "$build" "${args[@]}" <<'PY'
import os
import statistics
import subprocess
import sys
import time

sys.path[:0] = ["bench", "tests/integration"]
from benchlib import (TICK, common_args, flatten_latency, loopback_bandwidth,  # noqa: E402
                      machine_ticks, option, run_load, write_jsonl)
import harness  # noqa: E402
import rabbitmq  # noqa: E402

build, argv, quick, runs, out_path, only_case, time_limit = common_args(sys.argv)
retries = int(option(argv, "--retries", 0 if quick else 2))
only = option(argv, "--only", "")
load_bin = os.path.join(build, "bench", "amqp_load")
warren_bin = os.path.join(build, "warren")
plugin_dir = os.path.abspath(os.path.join(build, "plugins"))
scale = 10 if quick else 1

# (name, what it measures, amqp_load arguments, metrics)
# The e2e cases count from the first publish to the last delivery; publish counts until the
# broker holds every message (queue depth); consume drains a queue filled beforehand.
CASES = [
    ("e2e-100B", "end to end, transient, 100 B",
     ["--mode", "e2e", "--size", "100", "--count", str(1000000 // scale)],
     ["consume_rate"]),
    ("e2e-1KiB", "end to end, transient, 1 KiB",
     ["--mode", "e2e", "--size", "1024", "--count", str(1000000 // scale)],
     ["consume_rate"]),
    ("publish-100B", "publish only into one queue, 100 B",
     ["--mode", "publish", "--size", "100", "--count", str(100000 // scale)],
     ["publish_rate"]),
    ("consume-100B", "consume only from a full queue, 100 B",
     ["--mode", "consume", "--prefill", "--size", "100", "--count", str(100000 // scale)],
     ["consume_rate"]),
    ("confirms-100B", "end to end, publisher confirms, transient, 100 B",
     ["--mode", "e2e", "--confirm", "--size", "100", "--count", str(500000 // scale)],
     ["consume_rate"]),
    # A durable queue is RabbitMQ's classic queue and warren's `queue` storage (flush: always):
    # both confirm a persistent message once it is synced to disk.
    ("persistent-confirms-100B", "end to end, confirms, persistent, durable queue, 100 B",
     ["--mode", "e2e", "--confirm", "--persistent", "--size", "100",
      "--count", str(200000 // scale)],
     ["consume_rate"]),
    ("latency-20k", "end to end latency paced at 20k msgs/s, 100 B",
     ["--mode", "e2e", "--rate", "20000", "--size", "100", "--count", str(100000 // scale)],
     ["latency_p50", "latency_p99", "latency_p999"]),
]
if only_case:
    CASES = [c for c in CASES if c[0] == only_case]
    if not CASES:
        sys.exit("amqp_bench: no case named %s" % only_case)
NOISE = 0.1  # cores used by other processes during a run past which it is marked disturbed
UNITS = {"consume_rate": "msgs/s", "publish_rate": "msgs/s", "latency_p50": "µs",
         "latency_p99": "µs", "latency_p999": "µs"}


def cpu_busy(seconds=0.3):
    """The share of all CPUs busy over a short window, in %."""
    b0, t0 = machine_ticks()
    time.sleep(seconds)
    b1, t1 = machine_ticks()
    return 100.0 * (b1 - b0) / max(1, t1 - t0)


def settle(limit=15.0, timeout=10.0):
    """Waits until the machine is quiet (under limit % busy), at most timeout seconds: a broker
    keeps working for a while after it starts or deletes a full queue."""
    deadline = time.monotonic() + timeout
    while cpu_busy() > limit and time.monotonic() < deadline:
        pass


def run_amqp_load(port, broker_pid, case_args):
    """One amqp_load run after the machine settled: benchlib.run_load's result, with the
    latency percentiles as metrics and marked disturbed if other processes used more than
    NOISE cores meanwhile."""
    settle()
    cmd = [load_bin, "--port", str(port), "--time", str(time_limit)] + case_args
    res, err = run_load(cmd, broker_pid, time_limit + 60)
    if res is None:
        return None, err
    flatten_latency(res, "latency_us", "latency_", ("p50", "p99", "p999"))
    # /proc/stat counts in ticks: allow two ticks of rounding on top of NOISE.
    res["disturbed"] = res["cpu_other"] > NOISE + 2.0 / TICK / res["wall_s"]
    return res, ""


def run_cases(broker, port, broker_pid, results, raw):
    """Runs each case `runs` times. A run that other processes disturbed (they used more than
    NOISE cores meanwhile) is repeated, `retries` times at most; the least disturbed is kept."""
    for name, _, case_args, metrics in CASES:
        for i in range(runs):
            tag = "%s %s run %d/%d" % (broker, name, i + 1, runs)
            res, err = None, ""
            for attempt in range(1 + retries):
                got, err = run_amqp_load(port, broker_pid, case_args)
                if got is None:
                    res = None
                    break
                if res is None or got["cpu_other"] < res["cpu_other"]:
                    res = got
                if not got["disturbed"]:
                    break
                if attempt < retries:
                    print("  %s: disturbed (other processes used %.2f cores), again"
                          % (tag, got["cpu_other"]), flush=True)
            results.setdefault((broker, name), []).append(res)
            if res is None:
                print("  %s: FAILED: %s" % (tag, err), flush=True)
                continue
            res.update(broker=broker, case=name, run=i + 1)
            raw.append(res)
            shown = ", ".join("%s %s" % (m, fmt(res[m])) for m in metrics)
            print("  %s: %s%s; CPU cores: broker %.2f, amqp_load %.2f, other %.2f%s"
                  % (tag, shown, "" if res["complete"] else " INCOMPLETE", res["cpu_broker"],
                     res["cpu_load"], res["cpu_other"],
                     "  <- disturbed" if res["disturbed"] else ""), flush=True)


def fmt(v):
    if v is None:
        return "-"
    return "%.0f" % v if v >= 100 else "%.1f" % v


def summary(results, metric, broker, name, show=fmt):
    """(median, "median (min – max)") of a metric over a case's runs."""
    vals = [r[metric] for r in results.get((broker, name), []) if r and r[metric] is not None]
    if not vals:
        return None, ""
    med = statistics.median(vals)
    return med, "%s (%s – %s)" % (show(med), show(min(vals)), show(max(vals)))


def two(v):
    return "%.2f" % v


def pid_from_file(path):
    with open(path) as f:
        return int(f.read().strip())


def print_tables(results, raw):
    print()
    print("| case | metric | RabbitMQ median (min – max) | warren median (min – max) "
          "| warren / RabbitMQ |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, _, _, metrics in CASES:
        for m in metrics:
            rmed, rtxt = summary(results, m, "rabbitmq", name)
            wmed, wtxt = summary(results, m, "warren", name)
            ratio = "%.2f" % (wmed / rmed) if rmed and wmed else "-"
            if ratio != "-" and m.startswith("latency"):
                ratio += " (lower is better)"
            print("| %s | %s, %s | %s | %s | %s |"
                  % (name, m, UNITS[m], rtxt or "-", wtxt or "-", ratio))
    print()
    print("CPU used during the runs, in cores (medians): the broker, the load generator, and "
          "everything else on the machine.")
    print()
    print("| case | RabbitMQ | its amqp_load | warren | its amqp_load | other, at most |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, _, _, _ in CASES:
        cells = [summary(results, m, b, name, two)[0]
                 for b in ("rabbitmq", "warren") for m in ("cpu_broker", "cpu_load")]
        other = max((r["cpu_other"] for r in raw if r["case"] == name), default=None)
        print("| %s | %s |" % (name, " | ".join("-" if v is None else two(v)
                                                 for v in cells + [other])))
    print()
    for name, what, case_args, _ in CASES:
        print("- %s: %s: `amqp_load %s --time %d`"
              % (name, what, " ".join(case_args), time_limit))
    print("- %d run(s) per case and broker; the consume case's CPU includes its untimed "
          "prefill." % runs)


def main():
    results, raw = {}, []
    print("== machine: %d CPUs, %s" % (os.cpu_count(), cpu_model()))
    bw = loopback_bandwidth(0.5 if quick else 2.0)
    print("== loopback TCP, one connection: %.2f GB/s (%.0f MiB/s)" % (bw / 1e9, bw / 2**20))
    busy = cpu_busy(1.0)
    print("== machine %.0f%% busy before the runs%s" % (
        busy, ": something else is running, numbers will be low and noisy" if busy > 15 else ""))

    if only != "warren":
        if not rabbitmq.available():
            print("== RabbitMQ: skipped: %s" % rabbitmq.unavailable_reason())
        else:
            with rabbitmq.RabbitMQ() as rmq:
                version = rmq.ctl("version").strip()
                print("== RabbitMQ %s on 127.0.0.1:%d" % (version, rmq.port), flush=True)
                beam = pid_from_file(rmq.env["RABBITMQ_PID_FILE"])
                run_cases("rabbitmq", rmq.port, beam, results, raw)
    if only != "rabbitmq":
        if not (os.access(warren_bin, os.X_OK)
                and os.path.exists(os.path.join(plugin_dir, "amqp091.so"))):
            print("== warren: skipped: %s or %s/amqp091.so is not built"
                  % (warren_bin, plugin_dir))
        else:
            with harness.Warren(os.path.abspath(warren_bin), plugin_dir) as w:
                print("== warren %s on 127.0.0.1:%d" % (source_version(), w.port), flush=True)
                run_cases("warren", w.port, w.proc.pid, results, raw)

    if out_path:
        write_jsonl(out_path, raw)
    print_tables(results, raw)
    failed = sum(1 for v in results.values() for r in v if r is None)
    incomplete = sum(1 for r in raw if not r["complete"])
    disturbed = sum(1 for r in raw if r["disturbed"])
    if failed or incomplete or disturbed:
        print("- %d run(s) failed, %d hit the time limit, %d were disturbed (other processes "
              "used more than %.2f cores)" % (failed, incomplete, disturbed, NOISE))
    return 1 if failed else 0


def source_version():
    """The commit warren was built from, and whether the tree had changes on top."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "(no git)"
    return "%s%s" % (rev or "(no git)", " with uncommitted changes" if dirty else "")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


sys.exit(main())
PY
