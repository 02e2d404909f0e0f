"""Benchmark 3b: oidc-agent / oidc-token (Debian's package) against tokend, both refreshing
with the refresh_token grant at the same loopback OpenID provider (bench/oidc_mock.py).

oidc-agent keeps the refresh token in a daemon and refreshes on demand: `oidc-token -f
ACCOUNT` forces a new access token. Its cron-style use is `oidc-token -f acct > file`. We
count the CPU of the oidc-token client (rusage of the shell and its children) plus the
agent's processes (utime+stime+cutime+cstime from /proc over the run, per refresh).

tokend is run as a daemon with one `provider: oauth2, grant: refresh_token` credential and
refreshed N times through SIGUSR1, timed to the durable output write (inotify).
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import json
from pathlib import Path

from lib import (
    READY_LINE,
    Daemon,
    Inotify,
    free_port,
    median,
    proc_cpu,
    proc_cpu_tree,
    wait4_run,
)

HERE = Path(__file__).resolve().parent


def mock_count(url):
    with urllib.request.urlopen(url + "stats", timeout=5) as r:
        return json.load(r)["token"]


def bench_oidc(tmp, n, log):
    """Returns a dict of results, or {"skipped": reason}."""
    for tool in ("oidc-agent", "oidc-gen", "oidc-token"):
        if not shutil.which(tool):
            return {"skipped": f"`{tool}` not installed (apt-get install -y oidc-agent)"}
    wd = tmp / "oidc"
    home = wd / "home"
    home.mkdir(parents=True)
    port = free_port()
    iss = f"http://127.0.0.1:{port}/"
    mock = subprocess.Popen([sys.executable, str(HERE / "oidc_mock.py"), str(port)], stdout=subprocess.PIPE, text=True)
    mock.stdout.readline()  # "ready"
    env = dict(os.environ, HOME=str(home))
    for k in ("OIDC_SOCK", "OIDCD_PID"):
        env.pop(k, None)
    agent_out = open(wd / "agent.out", "w")
    agent = subprocess.Popen(["oidc-agent", "--console", "--no-autoload", "-a", str(wd / "agent.sock")], stdout=agent_out, stderr=subprocess.STDOUT, env=env, cwd=wd)
    res = {}
    try:
        sock = str(wd / "agent.sock")
        deadline = time.time() + 10
        while time.time() < deadline and not os.path.exists(sock):
            time.sleep(0.05)
        if not os.path.exists(sock):
            return {"skipped": "oidc-agent --console made no socket: " + (wd / "agent.out").read_text()[:300]}
        env["OIDC_SOCK"] = sock
        roots = [agent.pid]
        gen = subprocess.run(
            ["oidc-gen", "bench", "-m", f"--iss={iss}", "--client-id=bench", "--client-secret=bench-secret", "--rt=rt-bench-0001", "--scope=openid offline_access", "--pw-cmd=echo benchpw", "--prompt=none", "--confirm-default"],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
        )
        if gen.returncode != 0 or "success" not in gen.stdout:
            return {"skipped": f"oidc-gen failed ({gen.returncode}): {gen.stdout[-300:]} {gen.stderr[-300:]}"}
        out = wd / "token"
        cmd = ["/bin/sh", "-c", f"oidc-token -f bench > {out}"]
        wait4_run(cmd, env=env)  # warm
        log(f"3g. oidc-token -f > file x{n}")
        c0, r0 = proc_cpu_tree(*roots), mock_count(iss)
        walls, cpus = [], []
        for _ in range(n):
            w, c, rc = wait4_run(cmd, env=env, stdin=subprocess.DEVNULL)
            if rc != 0:
                raise RuntimeError("oidc-token failed")
            walls.append(w)
            cpus.append(c)
        c1, r1 = proc_cpu_tree(*roots), mock_count(iss)
        if not out.read_text().startswith("at-"):
            raise RuntimeError("oidc-token wrote no token")
        refreshes = r1 - r0
        agent_cpu = (c1 - c0) / max(1, refreshes)
        res["oidc"] = dict(wall_s=walls, client_cpu_s=cpus, agent_cpu_s=c1 - c0, refreshes=refreshes, agent_cpu_per_refresh_s=agent_cpu)
        log(f"   wall {median(walls) * 1000:.1f} ms, client cpu {median(cpus) * 1000:.2f} ms + agent {agent_cpu * 1000:.2f} ms per refresh ({refreshes} refreshes)")

        # tokend against the same provider.
        log(f"3h. tokend (oauth2 refresh_token grant, same OP) via SIGUSR1 x{n}")
        twd = wd / "tokend"
        (twd / "out").mkdir(parents=True)
        cfg = twd / "config.yaml"
        cfg.write_text(
            f"state_dir: {twd}/state\n"
            "credentials:\n"
            "  - name: oidc\n"
            "    provider: oauth2\n"
            "    grant: refresh_token\n"
            f"    issuer: {iss}\n"
            "    client_id: bench\n"
            "    client_secret: { env: BENCH_OIDC_SECRET }\n"
            "    refresh_token: { env: BENCH_OIDC_RT }\n"
            "    auth: client_secret_basic\n"
            "    outputs:\n"
            f"      - file: {twd}/out/oidc.token\n"
        )
        os.environ["BENCH_OIDC_SECRET"] = "bench-secret"
        os.environ["BENCH_OIDC_RT"] = "rt-bench-0001"
        d = Daemon(cfg, twd, "tokend")
        try:
            d.wait_line(READY_LINE, timeout=30)
            if not (twd / "out" / "oidc.token").exists():
                raise RuntimeError(f"tokend wrote no token; see {d.logpath}")
            time.sleep(0.3)
            ino = Inotify(twd / "out")
            t_c0, t_r0 = proc_cpu(d.pid), mock_count(iss)
            lat = []
            for _ in range(n):
                t0 = time.perf_counter()
                os.kill(d.pid, signal.SIGUSR1)
                lat.append(ino.wait_for("oidc.token", dir_close=True) - t0)
                time.sleep(0.02)
            t_c1, t_r1 = proc_cpu(d.pid), mock_count(iss)
            ino.close()
        finally:
            d.stop()
        t_cpu = (t_c1 - t_c0) / max(1, t_r1 - t_r0)
        res["tokend"] = dict(latency_s=lat, cpu_s=t_c1 - t_c0, refreshes=t_r1 - t_r0, cpu_per_refresh_s=t_cpu)
        log(f"   tokend wall {median(lat) * 1000:.1f} ms, cpu {t_cpu * 1000:.2f} ms per refresh")
        return res
    finally:
        # the agent's daemon is a child of the console process: stop both
        kids = [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == agent.pid]
        for pid in [agent.pid] + kids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            agent.wait(5)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait()
        agent_out.close()
        mock.terminate()
        mock.wait()


def _ppid(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            st = f.read()
        return int(st[st.rindex(")") + 2 :].split()[1])
    except (OSError, ValueError):
        return None
