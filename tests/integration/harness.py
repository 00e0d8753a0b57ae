"""harness.py: start the real `warren` binary on a free loopback port for integration tests.

    with Warren(bin, plugin_dir, extra_yaml="") as w:
        w.port          # the AMQP port it listens on (127.0.0.1)
        w.log()         # what it printed so far

    with Warren(bin, plugin_dir, kafka=True) as w:
        w.kafka_port    # a Kafka listener too, on its own free port

    with Warren(bin, plugin_dir, config_file="examples/hybrid.yaml", cwd=src) as w:
        ...             # that config's listeners on free loopback ports (see config_file)

Run under /usr/bin/python3 (Debian's client libraries live there). The broker is stopped by
its PID with SIGTERM; a broker that does not exit in 10 s is killed and the test fails.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    """A TCP port free on 127.0.0.1 right now (the kernel picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=15.0, proc=None):
    """Waits until 127.0.0.1:port accepts a connection; raises on timeout or if proc died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("server exited with status %d before listening" % proc.returncode)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError("nothing listens on 127.0.0.1:%d after %.0f s" % (port, timeout))


def run_tests(argv, namespace, doc, n_args, run_one, on_alarm):
    """A test script's command line: `--list` prints its tests; otherwise n_args arguments
    for run_one, then the names of the tests to run (none: all of them). Every `test_*`
    function in namespace is a test; run_one(name, fn, *args) runs one and returns True or
    'pass' when it passed. on_alarm handles SIGALRM, each test's budget. Returns the exit
    status."""
    tests = {k: v for k, v in namespace.items() if k.startswith("test_") and callable(v)}
    if argv[1:2] == ["--list"]:
        print("\n".join(tests))
        return 0
    if len(argv) < 1 + n_args:
        print(doc)
        return 2
    args, names = argv[1:1 + n_args], argv[1 + n_args:] or list(tests)
    unknown = [n for n in names if n not in tests]
    if unknown:
        print("no such test: %s" % ", ".join(unknown))
        return 2
    signal.signal(signal.SIGALRM, on_alarm)
    failed = 0
    for name in names:
        failed += run_one(name, tests[name], *args) not in (True, "pass")
        sys.stdout.flush()
    print("%d passed, %d failed" % (len(names) - failed, failed))
    return 1 if failed else 0


def wait_for(cond, timeout=10.0, what="condition"):
    """Polls cond() until it is true; raises TimeoutError naming what after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.01)
    raise TimeoutError("timed out after %.0f s waiting for %s" % (timeout, what))


class Warren:
    """The warren binary with an AMQP listener on a free port. extra_yaml is appended to the
    config (for vhosts:, users: ...); broker_yaml lines go under broker:; amqp_options is a
    YAML flow mapping for the listener's options. kafka=True adds a Kafka listener (its
    options the flow mapping kafka_options, by default auto-created topics and no initial
    rebalance delay, so that a group's first join does not wait Kafka's 3 s); its port is
    kafka_port.

    The listener asks for port 0 and the port is read from warren's "listening on" log
    line, so parallel tests cannot race for a port. The temporary directory (config, data,
    log) is removed at stop, after a failing exit has printed the log.

    config_file instead runs a config of one's own (the other config arguments are ignored):
    its data_dir becomes the temporary directory's, its plugin_dirs plugin_dir, and each of
    its listeners (one flow mapping a line, `- {transport: ..., port: N, ...}`) listens on
    127.0.0.1, port 0; port and kafka_port are those of its amqp091 and kafka listeners, if
    it has them. cwd is warren's working directory, against which the config's relative
    paths (Lua scripts) are resolved."""

    def __init__(self, binary, plugin_dir, extra_yaml="", broker_yaml="", amqp_options=None,
                 env=None, kafka=False,
                 kafka_options="{auto_create_topics: true, group_initial_rebalance_delay: 0}",
                 config_file=None, cwd=None):
        self.binary = binary
        self.plugin_dir = plugin_dir
        self.port = None
        self.amqp = True
        self.kafka = kafka
        self.kafka_port = None
        self.cwd = cwd
        self.dir = tempfile.mkdtemp(prefix="warren-it-")
        self.config = os.path.join(self.dir, "warren.yaml")
        self.logfile = open(os.path.join(self.dir, "warren.log"), "w+")
        self.env = dict(os.environ, **(env or {}))
        self.proc = None
        if config_file:
            self._rewrite(config_file)
            return
        opts = (", options: %s" % amqp_options) if amqp_options else ""
        kafka_listener = ("  - {transport: kafka, host: 127.0.0.1, port: 0%s}\n"
                          % (", options: %s" % kafka_options if kafka_options else "")
                          if kafka else "")
        with open(self.config, "w") as f:
            f.write("broker:\n  data_dir: %s\n  plugin_dirs: [%s]\n%s"
                    "listeners:\n  - {transport: amqp091, host: 127.0.0.1, port: %d%s}\n%s%s"
                    % (os.path.join(self.dir, "data"), plugin_dir,
                       "".join("  %s\n" % l for l in broker_yaml.splitlines() if l),
                       0, opts, kafka_listener, extra_yaml))

    def _rewrite(self, config_file):
        """Writes config_file as the config, on loopback port 0 and this directory's data."""
        def listener(m):
            fields = re.sub(r"\s*\b(host|port): [^,}]*,?", "", m.group(2)).rstrip(", ")
            return "%s{host: 127.0.0.1, port: 0, %s}" % (m.group(1), fields)
        with open(os.path.join(self.cwd or ".", config_file)) as f:
            text = f.read()
        text = re.sub(r"(?m)^(\s*data_dir:).*$", r"\1 " + os.path.join(self.dir, "data"), text)
        text = re.sub(r"(?m)^(\s*plugin_dirs:).*$", r"\1 [%s]" % self.plugin_dir, text)
        text = re.sub(r"(?m)^(\s*- )\{(.*\btransport: .*)\}\s*$", listener, text)
        self.amqp = "transport: amqp091" in text
        self.kafka = "transport: kafka" in text
        with open(self.config, "w") as f:
            f.write(text)

    def start(self):
        """Starts warren (again, after stop: on the same data directory, on a new port)."""
        self.logfile.seek(0, os.SEEK_END)
        since = self.logfile.tell()  # this run's part of the log
        self.port = self.kafka_port = None
        self.proc = subprocess.Popen([self.binary, self.config], stdout=self.logfile,
                                     stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd)
        deadline = time.monotonic() + 15
        while (self.amqp and self.port is None) or (self.kafka and self.kafka_port is None):
            run_log = self.log()[since:]
            m = re.search(r"amqp091.*listening on 127\.0\.0\.1:(\d+)", run_log)
            k = re.search(r"kafka.*listening on 127\.0\.0\.1:(\d+)", run_log)
            if (m or not self.amqp) and (k or not self.kafka):
                self.port = int(m.group(1)) if m else None
                self.kafka_port = int(k.group(1)) if k else None
            elif self.proc.poll() is not None:
                raise RuntimeError("warren exited with status %d before listening:\n%s"
                                   % (self.proc.returncode, self.log()))
            elif time.monotonic() > deadline:
                self.stop()
                raise TimeoutError("warren did not log its listening ports within 15 s")
            else:
                time.sleep(0.01)
        if self.amqp:
            wait_port(self.port, proc=self.proc)
        if self.kafka:
            wait_port(self.kafka_port, proc=self.proc)
        return self

    def log(self):
        if not self.logfile.closed:
            self.logfile.flush()
        try:
            with open(self.logfile.name, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return "(the log was removed)"

    def stop(self):
        """SIGTERM, then waits; returns the exit status. Kills (and raises) after 10 s."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError("warren did not exit within 10 s of SIGTERM:\n" + self.log())
        status = self.proc.returncode
        self.proc = None
        return status

    def __enter__(self):
        return self.start()

    def cleanup(self):
        """Closes the log and removes the temporary directory."""
        if not self.logfile.closed:
            self.logfile.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __exit__(self, *exc):
        try:
            status = self.stop()
            if exc[0] is None and status not in (0, None):
                raise RuntimeError("warren exited with status %s:\n%s" % (status, self.log()))
        finally:
            self.cleanup()
        return False
