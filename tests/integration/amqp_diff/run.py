#!/usr/bin/python3
"""run.py: the AMQP 0-9-1 differential test. Every scenario runs against a private RabbitMQ
and against warren; the two normalized transcripts must be equal.

    run.py --warren BIN --plugin-dir DIR            # both, compare, exit 1 on a difference
    run.py --only rabbitmq -k basic_get             # one broker, some scenarios, printed
    run.py --only rabbitmq --record FILE            # save RabbitMQ's transcripts as JSON
    run.py --list                                   # the scenario names

Exit status: 0 all match, 1 a difference or a failure, 77 RabbitMQ is not installed (skip).
Both brokers get the same users and vhosts: guest on / and on `other`, alice on / only.
One broker of each kind serves every scenario; names carry the scenario's name, so
scenarios do not meet. The shutdown scenario runs last, since it stops the broker.
"""
import argparse
import difflib
import importlib
import json
import os
import signal
import sys
import time
import traceback

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import context  # noqa: E402
import harness  # noqa: E402
import rabbitmq  # noqa: E402

# Each module registers its scenarios with @context.scenario, in this order.
for module in ("scenarios_basic", "scenarios_features", "scenarios_errors", "scenarios_wire",
               "scenarios_streams"):
    importlib.import_module(module)

SCENARIO_SECONDS = 20  # one scenario's bound: a reply that never comes fails it, not the run
TARGET_SECONDS = 240   # one broker's bound: past it the rest are recorded as not run

WARREN_USERS = """vhosts:
  - name: /
  - name: other
users:
  - {name: guest, password: guest, vhosts: ["/", other]}
  - {name: alice, password: alice-pw, vhosts: ["/"]}
"""


def setup_rabbitmq(rmq):
    """The users and vhosts of WARREN_USERS, in RabbitMQ."""
    rmq.ctl("add_vhost", "other")
    rmq.ctl("set_permissions", "-p", "other", "guest", ".*", ".*", ".*")
    rmq.ctl("add_user", "alice", "alice-pw")
    rmq.ctl("set_permissions", "-p", "/", "alice", ".*", ".*", ".*")


def run_scenarios(target, selected, verbose, prefix=""):
    """{name: normalized transcript} of the selected scenarios against one target."""
    out = {}
    started = time.monotonic()
    for name, fn, _ in selected:
        t = context.Ctx(name, target, prefix)
        began = time.monotonic()
        if began - started > TARGET_SECONDS:
            out[name] = ["NOT RUN: %s took over %d s" % (target.name, TARGET_SECONDS)]
            continue
        try:
            with context.deadline(SCENARIO_SECONDS):
                fn(t)
        except context.ScenarioTimeout:
            t.ev("SCENARIO TIMED OUT after %d s" % SCENARIO_SECONDS)
        except Exception as exc:  # an answer the scenario did not expect: part of the result
            t.ev("SCENARIO FAILED", type(exc).__name__, str(exc))
            if verbose:
                traceback.print_exc()
        finally:
            t.close_all()
        events = t.events
        if prefix:
            events = json.loads(json.dumps(events).replace(prefix, ""))
        out[name] = context.normalize(events)
        if verbose:
            print("  %-8s %-45s %5.2f s" % (target.name, name, time.monotonic() - began),
                  flush=True)
    print("%s: %d scenarios in %.1f s" % (target.name, len(selected),
                                          time.monotonic() - started), flush=True)
    return out


def against_rabbitmq(selected, args):
    if args.rabbitmq_port:
        target = context.Target("rabbitmq", args.rabbitmq_port, lambda: None)
        return run_scenarios(target, selected, args.verbose, "run%d-" % os.getpid())
    started = time.monotonic()
    rmq = rabbitmq.RabbitMQ()
    rmq.start()
    try:
        setup_rabbitmq(rmq)
        print("rabbitmq: up on port %d in %.1f s" % (rmq.port, time.monotonic() - started))
        return run_scenarios(context.Target("rabbitmq", rmq.port, rmq.stop), selected,
                             args.verbose)
    finally:
        rmq.stop()


def against_warren(selected, args, failures):
    w = harness.Warren(args.warren, args.plugin_dir, extra_yaml=WARREN_USERS)
    try:
        w.start()
    except Exception:
        print("---- warren's log ----\n" + w.log())
        w.cleanup()
        raise
    statuses = []
    try:
        target = context.Target("warren", w.port, lambda: statuses.append(w.stop()))
        return run_scenarios(target, selected, args.verbose)
    finally:
        if w.proc is not None:
            statuses.append(w.stop())
        log = w.log()
        if statuses[-1] != 0:
            failures.append("warren exited with status %s after SIGTERM" % statuses[-1])
        if "ERROR: AddressSanitizer" in log or "ERROR: LeakSanitizer" in log or \
                "runtime error:" in log:
            failures.append("a sanitizer report in warren's log")
        if failures or args.verbose:
            print("---- warren's log, last 20000 characters ----\n" + log[-20000:])
        w.cleanup()


def lines(transcript):
    return [json.dumps(e, sort_keys=True) for e in transcript]


def main():
    # A SIGTERM (ctest's timeout, a user) unwinds like an exception, so the brokers stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warren", help="the warren executable")
    ap.add_argument("--plugin-dir", help="warren's plugin directory")
    ap.add_argument("--only", choices=["rabbitmq", "warren"],
                    help="run against one broker and print its transcripts")
    ap.add_argument("-k", action="append", default=[],
                    help="only scenarios whose name contains this (repeatable)")
    ap.add_argument("--record", help="write RabbitMQ's transcripts to this JSON file")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="time each scenario, show tracebacks and warren's log")
    ap.add_argument("--rabbitmq-port", type=int,
                    help="debugging: use a RabbitMQ already running on this port and set up "
                         "as setup_rabbitmq() does; names get a per-run prefix")
    args = ap.parse_args()

    ordered = [s for s in context.SCENARIOS if not s[2]] + \
              [s for s in context.SCENARIOS if s[2]]
    if args.list:
        print("\n".join(s[0] for s in ordered))
        return 0
    selected = [s for s in ordered if not args.k or any(k in s[0] for k in args.k)]
    if not selected:
        print("no scenario matches %s" % args.k)
        return 1
    want = [args.only] if args.only else ["rabbitmq", "warren"]
    if "warren" in want and not (args.warren and args.plugin_dir):
        ap.error("--warren and --plugin-dir are needed unless --only rabbitmq")
    if "rabbitmq" in want and not args.rabbitmq_port and not rabbitmq.available():
        rabbitmq.skip()

    results = {}
    failures = []
    if "rabbitmq" in want:
        results["rabbitmq"] = against_rabbitmq(selected, args)
        if args.record:
            with open(args.record, "w") as f:
                json.dump(results["rabbitmq"], f, indent=1, sort_keys=True)
    if "warren" in want:
        results["warren"] = against_warren(selected, args, failures)
    for f in failures:
        print("FAILURE: " + f)

    if args.only:
        for name, events in results[args.only].items():
            print("== %s %s" % (args.only, name))
            print("\n".join("   " + line for line in lines(events)))
        return 1 if failures else 0

    differ = []
    for name, _, _ in selected:
        a, b = results["rabbitmq"][name], results["warren"][name]
        if a != b:
            differ.append(name)
            print("\n==== %s differs (--- rabbitmq, +++ warren)" % name)
            for line in difflib.unified_diff(lines(a), lines(b), "rabbitmq", "warren", n=2,
                                             lineterm=""):
                print(line)
    print("\n%d scenarios, %d match" % (len(selected), len(selected) - len(differ)))
    if differ:
        print("differ: " + " ".join(differ))
    return 0 if not differ and not failures else 1


if __name__ == "__main__":
    sys.exit(main())
