#!/usr/bin/python3
"""run.py: the AMQP 0-9-1 differential test. Every scenario runs against a private RabbitMQ
and against warren; the two normalized transcripts must be equal.

    run.py --warren BIN --plugin-dir DIR          # both, compare, exit 1 on a difference
    run.py --only rabbitmq -k basic_get --show    # one broker, one scenario, print it
    run.py --only rabbitmq --record FILE          # save RabbitMQ's transcripts as JSON

Exit status: 0 all match, 1 a difference or a failure, 77 RabbitMQ is not installed (skip).
Both brokers get the same users and vhosts: guest on / and on `other`, alice on / only.
"""
import argparse
import difflib
import json
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import context  # noqa: E402
import harness  # noqa: E402
import rabbitmq  # noqa: E402
import scenarios_basic  # noqa: E402,F401  (each module registers its scenarios)
import scenarios_features  # noqa: E402,F401
import scenarios_errors  # noqa: E402,F401
import scenarios_wire  # noqa: E402,F401

SCENARIO_SECONDS = 20  # one scenario's bound; a missing reply fails it, never hangs the run

WARREN_USERS = """vhosts:
  - name: /
  - name: other
users:
  - {name: guest, password: guest, vhosts: ["/", other]}
  - {name: alice, password: alice-pw, vhosts: ["/"]}
"""


def setup_rabbitmq(rmq):
    rmq.ctl("add_vhost", "other")
    rmq.ctl("set_permissions", "-p", "other", "guest", ".*", ".*", ".*")
    rmq.ctl("add_user", "alice", "alice-pw")
    rmq.ctl("set_permissions", "-p", "/", "alice", ".*", ".*", ".*")


def run_scenarios(target, selected, prefix=""):
    """{name: transcript} for the selected scenarios against one target."""
    out = {}
    for name, fn, _ in selected:
        t = context.Ctx(name, target, prefix)
        started = time.monotonic()
        try:
            with context.deadline(SCENARIO_SECONDS):
                fn(t)
        except context.ScenarioTimeout:
            t.ev("SCENARIO TIMED OUT after %d s" % SCENARIO_SECONDS)
        except Exception as exc:  # a broker answer the scenario did not expect
            t.ev("SCENARIO FAILED", type(exc).__name__, str(exc))
            if os.environ.get("AMQP_DIFF_TRACE"):
                traceback.print_exc()
        finally:
            t.close_all()
        out[name] = context.normalize(
            json.loads(json.dumps(t.events).replace(prefix, "")) if prefix else t.events)
        print("  %-8s %-45s %5.2f s" % (target.name, name, time.monotonic() - started),
              flush=True)
    return out


def lines(transcript):
    return [json.dumps(e, sort_keys=True) for e in transcript]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warren", help="the warren executable")
    ap.add_argument("--plugin-dir", help="warren's plugin directory")
    ap.add_argument("--only", choices=["rabbitmq", "warren"])
    ap.add_argument("-k", action="append", default=[],
                    help="run only scenarios whose name contains this (repeatable)")
    ap.add_argument("--record", help="write RabbitMQ's transcripts to this JSON file")
    ap.add_argument("--show", action="store_true", help="print every transcript")
    ap.add_argument("--rabbitmq-port", type=int,
                    help="use a RabbitMQ already running here (set up as setup_rabbitmq does); "
                         "names get a per-run prefix so runs do not meet")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = ap.parse_args()

    ordered = [s for s in context.SCENARIOS if not s[2]] + \
              [s for s in context.SCENARIOS if s[2]]
    selected = [s for s in ordered if not args.k or any(k in s[0] for k in args.k)]
    if args.list:
        print("\n".join(s[0] for s in ordered))
        return 0
    if not selected:
        print("no scenario matches %s" % args.k)
        return 1
    want_rmq = args.only in (None, "rabbitmq")
    want_warren = args.only in (None, "warren")
    if want_warren and not (args.warren and args.plugin_dir):
        ap.error("--warren and --plugin-dir are needed unless --only rabbitmq")
    if want_rmq and not args.rabbitmq_port and not rabbitmq.available():
        rabbitmq.skip()

    results = {}
    failures = []
    if want_rmq and args.rabbitmq_port:
        prefix = "run%d-" % os.getpid()
        results["rabbitmq"] = run_scenarios(
            context.Target("rabbitmq", args.rabbitmq_port, lambda: None), selected, prefix)
    elif want_rmq:
        started = time.monotonic()
        rmq = rabbitmq.RabbitMQ()
        rmq.start()
        try:
            setup_rabbitmq(rmq)
            print("RabbitMQ up on port %d in %.1f s" % (rmq.port, time.monotonic() - started))
            results["rabbitmq"] = run_scenarios(
                context.Target("rabbitmq", rmq.port, rmq.stop), selected)
        finally:
            rmq.stop()
    if want_rmq and args.record:
        with open(args.record, "w") as f:
            json.dump(results["rabbitmq"], f, indent=1, sort_keys=True)
    if want_warren:
        w = harness.Warren(args.warren, args.plugin_dir, extra_yaml=WARREN_USERS)
        w.start()
        exit_status = []

        def stop_warren():
            exit_status.append(w.stop())
        try:
            print("warren up on port %d" % w.port)
            results["warren"] = run_scenarios(context.Target("warren", w.port, stop_warren),
                                              selected)
        finally:
            if w.proc is not None:
                exit_status.append(w.stop())
        if exit_status and exit_status[-1] != 0:
            failures.append("warren exited with status %s on SIGTERM" % exit_status[-1])
        if "ERROR: AddressSanitizer" in w.log() or "runtime error:" in w.log():
            failures.append("sanitizer report in warren's log:\n" + w.log()[-5000:])
        if failures or os.environ.get("AMQP_DIFF_WARREN_LOG"):
            print("---- warren log (%s) ----\n%s" % (w.config, w.log()[-20000:]))

    if args.show or args.only:
        for target, transcripts in results.items():
            for name, events in transcripts.items():
                print("== %s %s" % (target, name))
                print("\n".join("   " + line for line in lines(events)))
    if args.only:
        return 1 if failures else 0

    match = 0
    for name, _, _ in selected:
        a, b = results["rabbitmq"][name], results["warren"][name]
        if a == b:
            match += 1
            continue
        print("\n==== %s differs (--- rabbitmq, +++ warren)" % name)
        for line in difflib.unified_diff(lines(a), lines(b), "rabbitmq", "warren", n=2,
                                         lineterm=""):
            print(line)
    for f in failures:
        print("FAILURE: " + f)
    print("\n%d scenarios, %d match" % (len(selected), match))
    return 0 if match == len(selected) and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
