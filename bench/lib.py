"""Shared helpers for the tokend benchmarks: processes, /proc readings, the emulator, configs.

Nothing here is timed by `cargo test`; `bench/run` is the only entry point.
"""

import ctypes
import ctypes.util
import json
import os
import signal
import socket
import statistics
import struct
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKEND = ROOT / "target" / "release" / "tokend"
CLK_TCK = os.sysconf("SC_CLK_TCK")

YAV_ID = "3f37b142-e371-461e-924c-a913ff878534"
YAV_SECRET = "yav-secret"
YAV_PATH = "/YavaptekeAPI/connect/token"
READY_LINE = "every credential had its first attempt"


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def loadavg():
    return "%.2f %.2f %.2f" % os.getloadavg()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait4_run(argv, **kw):
    """Runs argv to completion; returns (wall_s, cpu_s, returncode). CPU is the child's
    rusage (user+sys) including every descendant it waited for (sh -> curl, jq)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, **kw)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    return wall, ru.ru_utime + ru.ru_stime, p.returncode


# ---------------------------------------------------------------- /proc readings


def proc_cpu(pid):
    """utime+stime of the whole process (live and exited threads), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    rest = stat[stat.rindex(")") + 2 :].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def proc_cpu_tree(*roots):
    """utime+stime+cutime+cstime of the roots and of all their live descendants, each
    process once: a daemon that forks per request (oidc-agent) is counted whole once its
    children are reaped."""
    procs = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    st = f.read()
            except OSError:
                continue
            rest = st[st.rindex(")") + 2 :].split()
            procs[int(d)] = (int(rest[1]), sum(int(x) for x in rest[11:15]))
    seen, todo = set(), [r for r in roots if r in procs]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        todo.extend(c for c, (ppid, _) in procs.items() if ppid == p)
    return sum(procs[p][1] for p in seen) / CLK_TCK


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def rss_mib(pid):
    st = proc_status(pid)
    kb = lambda k: int(st[k].split()[0]) / 1024  # noqa: E731
    return kb("VmRSS"), kb("VmHWM"), int(st["Threads"])


def rss_detail(pid):
    """VmRSS split into anonymous (heap, stacks) and file-backed (the mapped binary), MiB."""
    st = proc_status(pid)
    kb = lambda k: int(st[k].split()[0]) / 1024  # noqa: E731
    pss = None
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1]) / 1024
    except OSError:
        pass
    return dict(rss=kb("VmRSS"), hwm=kb("VmHWM"), anon=kb("RssAnon"), file=kb("RssFile"), pss=pss, threads=int(st["Threads"]))


def sched_ns(pid):
    """{tid: nanoseconds on CPU} from /proc/PID/task/*/schedstat: precise where utime+stime
    counts 10 ms ticks. Diff per tid (threads come and go)."""
    out = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                out[task] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return out


def per_tid_delta(before, after):
    """Growth of per-thread counters over a window, for threads alive at its end (a thread
    born in the window counts from zero)."""
    return sum(v - before.get(k, 0) for k, v in after.items())


def ctx_switches(pid):
    """(voluntary+nonvoluntary context switches summed over live threads, thread count)."""
    total, n = 0, 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            st = proc_status(f"{pid}/task/{task}")
        except FileNotFoundError:
            continue
        total += int(st["voluntary_ctxt_switches"]) + int(st["nonvoluntary_ctxt_switches"])
        n += 1
    return total, n


def per_thread_switches(pid):
    out = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            st = proc_status(f"{pid}/task/{task}")
        except FileNotFoundError:
            continue
        out[(task, st["Name"])] = int(st["voluntary_ctxt_switches"]) + int(
            st["nonvoluntary_ctxt_switches"]
        )
    return out


# ---------------------------------------------------------------- inotify (ctypes)

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
IN_MOVED_TO = 0x00000080
IN_CLOSE_NOWRITE = 0x00000010


class Inotify:
    """Watches one directory. `wait_for(name)` returns when `name` is renamed into it (tokend's
    atomic write); with `dir_close`, when the directory itself is closed after that (the
    fsync of the directory that ends the recipe)."""

    def __init__(self, directory):
        self.fd = _libc.inotify_init1(0)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        mask = IN_MOVED_TO | IN_CLOSE_NOWRITE
        if _libc.inotify_add_watch(self.fd, str(directory).encode(), mask) < 0:
            raise OSError(ctypes.get_errno(), "inotify_add_watch")

    def wait_for(self, name, dir_close=False, timeout=10.0):
        import select

        deadline = time.perf_counter() + timeout
        seen = False
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                raise TimeoutError(name)
            r, _, _ = select.select([self.fd], [], [], left)
            if not r:
                continue
            buf = os.read(self.fd, 65536)
            now = time.perf_counter()
            i = 0
            while i < len(buf):
                _wd, mask, _cookie, ln = struct.unpack_from("iIII", buf, i)
                fname = buf[i + 16 : i + 16 + ln].rstrip(b"\0").decode()
                i += 16 + ln
                if mask & IN_MOVED_TO and fname == name:
                    seen = True
                    if not dir_close:
                        return now
                elif seen and mask & IN_CLOSE_NOWRITE and fname == "":
                    return now

    def close(self):
        os.close(self.fd)


# ---------------------------------------------------------------- emulator


class Emulator:
    def __init__(self, workdir):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(Path(workdir) / "emulator.log", "w")
        self.proc = subprocess.Popen(
            [str(TOKEND), "emulate", "--listen", f"127.0.0.1:{self.port}"],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
        )
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.01)
        raise RuntimeError("emulator did not start")

    def stats(self):
        with urllib.request.urlopen(self.url + "/_emulator/stats", timeout=10) as r:
            return json.load(r)

    def successes(self, endpoint="yavapteke"):
        return self.stats()["endpoints"][endpoint]["successes"]

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


# ---------------------------------------------------------------- tokend configs and daemons


def tokend_env():
    env = dict(os.environ)
    env["BENCH_YAV_SECRET"] = YAV_SECRET
    env.pop("RUST_LOG", None)
    env.pop("NOTIFY_SOCKET", None)
    return env


def write_config(workdir, n, url, lifetime=None, prefix="c", log_level="info", listen=None):
    """n yaVapteke credentials against the emulator, each with its own output file."""
    workdir = Path(workdir)
    (workdir / "out").mkdir(parents=True, exist_ok=True)
    lines = [f"state_dir: {workdir}/state", f"log: {{ format: text, level: {log_level} }}"]
    if listen:
        lines.append(f"listen: {listen}")
    lines.append("credentials:")
    extra = f"    lifetime: {lifetime}\n" if lifetime else ""
    for i in range(n):
        name = f"{prefix}{i:05d}"
        lines.append(
            f"  - name: {name}\n"
            f"    provider: yavapteke\n"
            f"    token_url: {url}{YAV_PATH}\n"
            f"    client_id: {YAV_ID}\n"
            f"    client_secret: {{ env: BENCH_YAV_SECRET }}\n"
            f"{extra}"
            f"    outputs:\n"
            f"      - file: {workdir}/out/{name}.token"
        )
    path = workdir / "config.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def names(n, prefix="c"):
    return [f"{prefix}{i:05d}" for i in range(n)]


class Daemon:
    """`tokend run`, stderr to a log file that is read incrementally for the ready line."""

    def __init__(self, config, workdir, tag="daemon"):
        self.logpath = Path(workdir) / f"{tag}.log"
        self.log = open(self.logpath, "w")
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [str(TOKEND), "-c", str(config), "run"],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
            env=tokend_env(),
        )
        self.pid = self.proc.pid
        self._reader = open(self.logpath)
        self._buf = ""

    def wait_line(self, text, timeout=120.0, poll=0.001):
        """Seconds from spawn until `text` appears in the log (after the previous match)."""
        deadline = time.perf_counter() + timeout
        while True:
            i = self._buf.find(text)
            if i >= 0:
                self._buf = self._buf[i + len(text) :]
                return time.perf_counter() - self.t0
            if time.perf_counter() > deadline:
                raise TimeoutError(f"no `{text}` within {timeout}s; see {self.logpath}")
            chunk = self._reader.read()
            if chunk:
                # keep a tail so that a line split across reads is still found
                self._buf = self._buf[-400:] + chunk
            elif self.proc.poll() is not None:
                raise RuntimeError(f"tokend exited {self.proc.returncode}; see {self.logpath}")
            else:
                time.sleep(poll)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        self._reader.close()
