"""benchlib.py: what bench/amqp_bench.sh and bench/kafka_bench.sh share, so the two measure
the machine and their load runs the same way: their options, the CPU a process and the whole
machine used, the loopback TCP bandwidth of one connection, and one load-generator run with
the CPU it cost on each side.

Brokers are started and stopped by tests/integration (harness.py for warren, rabbitmq.py for
RabbitMQ), which pick free ports on 127.0.0.1 and stop what they started by its PID.
"""
import json
import os
import resource
import socket
import subprocess
import time

TICK = os.sysconf("SC_CLK_TCK")


def option(argv, name, default):
    """The word after `name` in argv (the scripts' shell wrappers checked the names)."""
    return argv[argv.index(name) + 1] if name in argv else default


def common_args(argv):
    """What every bench script's Python part reads from sys.argv (the shell wrapper passes the
    build directory first, then the options bench/benchlib.sh accepted): (build, the options,
    quick, runs, out_path, only_case, time_limit in seconds)."""
    build, opts = argv[1], argv[2:]
    quick = "--quick" in opts
    return (build, opts, quick, int(option(opts, "--runs", 1 if quick else 3)),
            option(opts, "--out", ""), option(opts, "--case", ""), 10 if quick else 30)


def machine_ticks():
    """(busy, total) CPU ticks of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4], sum(v)  # idle and iowait are not busy


def proc_cpu(pid):
    """CPU seconds all threads of a process have run so far (schedstat: ns, not ticks)."""
    total = 0
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError):
                pass  # a thread that just ended
    except OSError:
        pass
    return total / 1e9


def children_cpu():
    """CPU seconds used by this process's waited-for children (the load runs) so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def loopback_bandwidth(seconds):
    """Bytes/s one TCP connection over 127.0.0.1 carries: a forked sender writes 1 MiB
    chunks for `seconds`, this process reads them."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    port = lsock.getsockname()[1]
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            lsock.close()
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            chunk = b"\0" * (1 << 20)
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                s.sendall(chunk)
            s.close()
            status = 0
        finally:
            os._exit(status)
    conn = None
    try:
        lsock.settimeout(10)
        conn, _ = lsock.accept()
        conn.settimeout(10)
        buf = bytearray(1 << 20)
        total, t0 = 0, time.monotonic()
        while True:
            n = conn.recv_into(buf)
            if n == 0:
                break
            total += n
        return total / (time.monotonic() - t0)
    finally:
        if conn:
            conn.close()
        lsock.close()
        os.waitpid(pid, 0)


def run_load(cmd, broker_pid, timeout):
    """Runs one load generator (cmd), which prints its result as a JSON line last and exits 0
    (complete) or 2 (cut short by its time limit). Returns (that result or None, error text).
    The result gains the CPU used during the run, in cores: by the broker (all its threads),
    by the load generator and by everything else on the machine (which should be near 0:
    anything more means the numbers are disturbed)."""
    name = os.path.basename(cmd[0])
    m0, b0, l0, t0 = machine_ticks()[0], proc_cpu(broker_pid), children_cpu(), time.monotonic()
    try:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    except OSError as e:
        return None, str(e)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        return None, "%s did not finish within %d s" % (name, timeout)
    wall = time.monotonic() - t0
    broker, load = proc_cpu(broker_pid) - b0, children_cpu() - l0
    machine = (machine_ticks()[0] - m0) / TICK
    if p.returncode not in (0, 2) or not out.strip():
        return None, err.strip() or "exit status %d" % p.returncode
    res = json.loads(out.strip().splitlines()[-1])
    res["cpu_broker"] = round(broker / wall, 2)
    res["cpu_load"] = round(load / wall, 2)
    res["cpu_other"] = round(max(0.0, machine - broker - load) / wall, 2)
    res["wall_s"] = round(wall, 3)
    return res, ""


def flatten_latency(res, src, prefix, keys):
    """Copies res[src][k] (a latency summary: p50, p99, ...) to res[prefix + k], None where
    the run has none, so the tables can name each percentile as a metric."""
    lat = res.get(src) or {}
    for k in keys:
        res[prefix + k] = lat.get(k)


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
