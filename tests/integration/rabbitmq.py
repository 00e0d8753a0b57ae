"""rabbitmq.py: a private RabbitMQ node for differential tests and benchmarks.

    import rabbitmq
    if not rabbitmq.available():
        rabbitmq.skip()                      # prints SKIPPED: ... and exits 77
    with rabbitmq.RabbitMQ() as rmq:
        rmq.port                             # its AMQP port on 127.0.0.1
        rmq.ctl("add_vhost", "v1")           # rabbitmqctl against this node; returns stdout

Everything the node touches is private: a fresh temporary directory (owned by the `rabbitmq`
user when we run as root) holds its HOME with its own Erlang cookie, its database, logs, pid
file, config and enabled-plugins file; the AMQP, distribution and epmd ports are free ports
on 127.0.0.1 chosen here, and we run our own epmd, so nothing collides with a system RabbitMQ
or with another test. stop() stops the node with `rabbitmqctl stop`, then by PID, and epmd by
its PID, and removes the directory.

Debian's rabbitmq-server must be installed; available() says whether it is. Run under
/usr/bin/python3 (the interpreter Debian's client libraries import under).
"""
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
CTL = "/usr/lib/rabbitmq/bin/rabbitmqctl"
SKIP_RETURN_CODE = 77  # ctest's SKIP_RETURN_CODE for tests that need RabbitMQ


def unavailable_reason():
    """Why a private RabbitMQ cannot run here, or "" if it can."""
    for path in (SERVER, CTL):
        if not os.access(path, os.X_OK):
            return "%s is missing (apt-get install rabbitmq-server)" % path
    if shutil.which("epmd") is None:
        return "epmd is missing (apt-get install erlang-base)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("rabbitmq")
        except KeyError:
            return "running as root and there is no 'rabbitmq' user to run the server as"
    return ""


def available():
    """True if rabbitmq-server is installed and can be started by this process."""
    return unavailable_reason() == ""


def skip():
    """Prints the visible skip line and exits with SKIP_RETURN_CODE."""
    print("SKIPPED: rabbitmq-server cannot be installed: %s" % unavailable_reason(), flush=True)
    sys.exit(SKIP_RETURN_CODE)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class RabbitMQ:
    """One private RabbitMQ node. start() returns once it accepts AMQP connections
    (boot_timeout seconds at most, else RuntimeError with the node's log);
    stop() is idempotent. Also a context manager."""

    def __init__(self, boot_timeout=90.0):
        self.boot_timeout = boot_timeout
        self.port = _free_port()
        self.dist_port = _free_port()
        self.epmd_port = _free_port()
        self.node = "warren-diff-%d-%s@localhost" % (os.getpid(), secrets.token_hex(3))
        self.dir = tempfile.mkdtemp(prefix="warren-rabbitmq-")
        self.server = None
        self.epmd = None
        self._as_user = None
        if os.geteuid() == 0:
            pw = pwd.getpwnam("rabbitmq")
            self._as_user = (pw.pw_uid, pw.pw_gid)
        home = os.path.join(self.dir, "home")
        for sub in ("home", "mnesia", "log"):
            os.mkdir(os.path.join(self.dir, sub), 0o700)
        # A cookie of our own: rabbitmqctl authenticates to the node with the same file.
        cookie = os.path.join(home, ".erlang.cookie")
        with open(cookie, "w") as f:
            f.write(secrets.token_hex(16))
        os.chmod(cookie, 0o400)
        with open(os.path.join(self.dir, "enabled_plugins"), "w") as f:
            f.write("[].\n")
        open(os.path.join(self.dir, "rabbitmq-env.conf"), "w").close()
        with open(os.path.join(self.dir, "rabbitmq.conf"), "w") as f:
            f.write("log.console = false\nlog.file.level = info\n")
        if self._as_user:
            os.chmod(self.dir, 0o700)
            for root, dirs, files in os.walk(self.dir):
                for name in [root] + [os.path.join(root, n) for n in dirs + files]:
                    os.chown(name, *self._as_user)
        self.env = dict(
            os.environ,
            HOME=home,
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=os.path.join(self.dir, "mnesia"),
            RABBITMQ_LOG_BASE=os.path.join(self.dir, "log"),
            RABBITMQ_PID_FILE=os.path.join(self.dir, "rabbitmq.pid"),
            RABBITMQ_CONFIG_FILE=os.path.join(self.dir, "rabbitmq.conf"),
            # Not created: /etc/rabbitmq/advanced.config, if any, must not apply either.
            RABBITMQ_ADVANCED_CONFIG_FILE=os.path.join(self.dir, "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=os.path.join(self.dir, "enabled_plugins"),
            # An empty env file instead of /etc/rabbitmq/rabbitmq-env.conf, whose settings
            # (node name, address) would override ours.
            RABBITMQ_CONF_ENV_FILE=os.path.join(self.dir, "rabbitmq-env.conf"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-start_epmd false",
            ERL_EPMD_ADDRESS="127.0.0.1",
            ERL_EPMD_PORT=str(self.epmd_port))

    def _popen(self, argv, **kw):
        if self._as_user:
            kw.update(user=self._as_user[0], group=self._as_user[1], extra_groups=[])
        return subprocess.Popen(argv, env=self.env, cwd=self.dir, **kw)

    def start(self):
        try:
            self.epmd = self._popen(["epmd", "-port", str(self.epmd_port),
                                     "-address", "127.0.0.1"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self._wait(lambda: _accepts(self.epmd_port), 10, "epmd", self.epmd)
            out = open(os.path.join(self.dir, "server.out"), "w")
            self.server = self._popen([SERVER], stdout=out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL)
            out.close()
            deadline = time.monotonic() + self.boot_timeout
            self._wait(lambda: _accepts(self.port), self.boot_timeout, "the AMQP port",
                       self.server)
            self.ctl("await_startup", "--timeout",
                     str(max(1, int(deadline - time.monotonic()))))
        except BaseException as exc:  # an interrupt too: nothing may outlive us
            log = self.log()
            self.stop()
            if isinstance(exc, Exception):
                raise RuntimeError("RabbitMQ did not start (%s):\n%s" % (exc, log)) from exc
            raise
        return self

    def _wait(self, cond, timeout, what, proc):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError("%s exited with status %d" % (what, proc.returncode))
            if cond():
                return
            time.sleep(0.05)
        raise TimeoutError("no %s after %.0f s" % (what, timeout))

    def ctl(self, *args, timeout=60):
        """Runs rabbitmqctl against this node; returns its stdout, raises if it fails."""
        proc = self._popen([CTL, "-n", self.node, "-q"] + list(args), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise RuntimeError("rabbitmqctl %s: no answer in %d s" % (" ".join(args), timeout))
        if proc.returncode != 0:
            raise RuntimeError("rabbitmqctl %s failed (%d): %s"
                               % (" ".join(args), proc.returncode, out.strip()))
        return out

    def log(self):
        """The node's own log file and its console output so far ("" once stopped)."""
        text = ""
        if self.dir is None:
            return text
        for path in (os.path.join(self.dir, "log", self.node + ".log"),
                     os.path.join(self.dir, "server.out")):
            try:
                with open(path, errors="replace") as f:
                    text += "==> %s <==\n%s" % (path, f.read()[-20000:])
            except OSError:
                pass
        return text

    def _beam_pid(self):
        try:
            with open(self.env["RABBITMQ_PID_FILE"]) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def stop(self):
        """Stops the node (rabbitmqctl stop, then SIGTERM, then SIGKILL, each bounded),
        then epmd, and removes the directory."""
        if self.server is not None:
            beam = self._beam_pid()
            if self.server.poll() is None:
                try:
                    self.ctl("stop", timeout=30)
                except RuntimeError:
                    pass
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    self.server.wait(timeout=20)
                    break
                except subprocess.TimeoutExpired:
                    self.server.send_signal(sig)
                    if beam is not None and sig == signal.SIGKILL:
                        try:
                            os.kill(beam, sig)
                        except ProcessLookupError:
                            pass
            self.server.wait(timeout=10)
            self.server = None
        if self.epmd is not None:
            self.epmd.terminate()
            try:
                self.epmd.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.epmd.kill()
                self.epmd.wait()
            self.epmd = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False
