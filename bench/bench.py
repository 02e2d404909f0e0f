#!/usr/bin/env python3
"""tokend benchmarks against the alternatives, on this machine, in one run.

Run through `bench/run` (it builds the release binary first). Writes
bench/results/<date>.md (+ .json with every raw sample) and prints the summary table.
See BENCHMARKS.md for the method behind each number.
"""

import argparse
import datetime
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lib import (  # noqa: E402
    READY_LINE,
    ROOT,
    TOKEND,
    YAV_ID,
    YAV_PATH,
    YAV_SECRET,
    Daemon,
    Emulator,
    Inotify,
    loadavg,
    median,
    per_thread_switches,
    proc_cpu,
    rss_detail,
    sched_ns,
    per_tid_delta,
    tokend_env,
    wait4_run,
    write_config,
)

RAW = {}  # every sample, dumped to results/<date>.json
ROWS = []  # summary table rows


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def row(bench, metric, tokend, other="", ratio="", target="", met=""):
    ROWS.append((bench, metric, tokend, other, ratio, target, met))


def ok(cond):
    return "yes" if cond else "**NO**"


def ms(s):
    return f"{s * 1000:.2f} ms"


# ---------------------------------------------------------------- 1, 2, 4: scale and idle


def bench_check_scaling(emu, tmp, sizes):
    """`tokend check` (load + validate, no network) at growing sizes: linear or not."""
    log(f"4'. tokend check at {sizes} credentials")
    out = []
    for n in sizes:
        wd = tmp / f"check-{n}"
        cfg = write_config(wd, n, emu.url)
        wall, cpu, rc = wait4_run([str(TOKEND), "-c", str(cfg), "check"], env=tokend_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if rc != 0:
            raise RuntimeError(f"check failed on {cfg}")
        out.append(dict(n=n, wall_s=wall, cpu_s=cpu))
        log(f"   {n}: {wall:.2f}s wall, {cpu:.2f}s CPU")
        shutil.rmtree(wd, ignore_errors=True)
    RAW["check_scaling"] = out
    a, b = out[0], out[-1]
    row("4 first round", f"`tokend check` (config load + validation only), {a['n']} → {b['n']} credentials", f"{a['cpu_s']:.2f} s → {b['cpu_s']:.2f} s CPU", "", f"{b['cpu_s'] / max(a['cpu_s'], 0.001):.0f}× for {b['n'] // a['n']}× the credentials", "linear", ok(b["cpu_s"] / max(a["cpu_s"], 0.001) <= 1.5 * b["n"] / a["n"]))


def bench_scale(emu, tmp, reps, windows, window_s, settle_s, n_big):
    log(f"4. first round of {n_big} credentials x{reps}")
    rounds = []
    big = None
    for r in range(reps):
        wd = tmp / f"big-{r}"
        cfg = write_config(wd, n_big, emu.url)
        before = emu.successes()
        emu_cpu0 = proc_cpu(emu.proc.pid)
        la = loadavg()
        d = Daemon(cfg, wd, "tokend")
        t_started = d.wait_line("tokend started", timeout=600, poll=0.005)
        cpu_started = proc_cpu(d.pid)
        t = d.wait_line(READY_LINE, timeout=600, poll=0.005)
        cpu = proc_cpu(d.pid)
        emu_cpu = proc_cpu(emu.proc.pid) - emu_cpu0
        written = sum(1 for e in os.scandir(wd / "out") if e.name.endswith(".token"))
        fetched = emu.successes() - before
        mem = rss_detail(d.pid)
        rounds.append(
            dict(
                seconds=t,
                started_s=t_started,
                written=written,
                fetched=fetched,
                tokend_cpu_s=cpu,
                tokend_cpu_at_started_s=cpu_started,
                emulator_cpu_s=emu_cpu,
                mem_at_ready=mem,
                loadavg=la,
            )
        )
        hwm = mem["hwm"]
        log(f"   round {r}: {t:.2f}s ('tokend started' at {t_started:.2f}s), {written} outputs, tokend cpu {cpu:.2f}s, emulator cpu {emu_cpu:.2f}s, HWM {hwm:.1f} MiB")
        if r == reps - 1:
            big = d
        else:
            d.stop()
            shutil.rmtree(wd, ignore_errors=True)
    RAW["first_round"] = rounds
    t_med = median([x["seconds"] for x in rounds])
    row("4 first round", f"{n_big} credentials, start → all outputs written", f"{t_med:.2f} s", "", "", "≤ 10 s", ok(t_med <= 10))
    st_med = median([x["started_s"] for x in rounds])
    row("4 first round", "of which: start → 'tokend started' (config load, schedule)", f"{st_med:.2f} s", "", "", "", "")
    row("4 first round", "of which: 'tokend started' → ready (fetch + write)", f"{t_med - st_med:.2f} s ({n_big / (t_med - st_med):.0f}/s)", "", "", "", "")
    row("4 first round", "overall throughput (credentials ÷ start → ready)", f"{n_big / t_med:.0f} refreshes/s", "", "", "≥ 1000/s", ok(n_big / t_med >= 1000))
    all_written = all(x["written"] == n_big for x in rounds)
    row("4 first round", "outputs written / fetched", f"{rounds[-1]['written']} / {rounds[-1]['fetched']}", "", "", f"{n_big}", ok(all_written))
    cpu_per = median([x["tokend_cpu_s"] / n_big for x in rounds])
    fetch_cpu = median([(x["tokend_cpu_s"] - x["tokend_cpu_at_started_s"]) / n_big for x in rounds])
    start_cpu = median([x["tokend_cpu_at_started_s"] for x in rounds])
    row("4 first round", "tokend CPU: start-up / per refresh in the fetch phase", f"{start_cpu:.2f} s / {ms(fetch_cpu)}", "", "", "", "")
    row("4 first round", "tokend CPU per refresh, whole round (incl. start-up)", ms(cpu_per), f"emulator {ms(median([x['emulator_cpu_s'] / n_big for x in rounds]))}", "", "", "")

    log(f"1/2. idle: 3-credential daemon started beside the {n_big} one; settle {settle_s}s, then {windows}x{window_s}s")
    wd3 = tmp / "small"
    cfg3 = write_config(wd3, 3, emu.url)
    small = Daemon(cfg3, wd3, "tokend")
    small.wait_line(READY_LINE, timeout=30)
    time.sleep(settle_s)
    idle = {"small": [], "big": []}
    for w in range(windows):
        la = loadavg()
        s0 = {k: (sched_ns(d.pid), per_thread_switches(d.pid), time.perf_counter()) for k, d in (("small", small), ("big", big))}
        time.sleep(window_s)
        for k, d in (("small", small), ("big", big)):
            cpu0, pt0, t0 = s0[k]
            cpu1, pt1, t1 = sched_ns(d.pid), per_thread_switches(d.pid), time.perf_counter()
            dt = t1 - t0
            # threads alive at the end: their switches since the start (or since birth);
            # threads that exited in the window are listed, their last switches are lost.
            per_thread = {f"{tid}:{name}": n - pt0.get((tid, name), 0) for (tid, name), n in pt1.items()}
            exited = [f"{tid}:{name}" for (tid, name) in pt0 if (tid, name) not in pt1]
            switches = sum(per_thread.values())
            mem = rss_detail(d.pid)
            idle[k].append(
                dict(
                    window_s=dt,
                    cpu_ms_per_min=per_tid_delta(cpu0, cpu1) / 1e6 * 60 / dt,
                    wakeups_per_s=switches / dt,
                    threads_start=len(pt0),
                    threads_end=len(pt1),
                    threads_exited=exited,
                    per_thread_switches={k2: v for k2, v in per_thread.items() if v},
                    mem=mem,
                    loadavg=la,
                )
            )
            log(f"   {k} window {w}: cpu {per_tid_delta(cpu0, cpu1) / 1e6:.2f} ms in {dt:.0f}s, {switches} switches ({switches / dt:.2f}/s), threads {len(pt0)}->{len(pt1)}, RSS {mem['rss']:.1f} MiB (anon {mem['anon']:.1f}, file {mem['file']:.1f}) HWM {mem['hwm']:.1f}")
    RAW["idle"] = idle
    small.stop()
    big.stop()
    for k, n, target in (("small", 3, 8), ("big", n_big, 64)):
        xs = idle[k]
        rss = median([x["mem"]["rss"] for x in xs])
        hwm = max(x["mem"]["hwm"] for x in xs)
        anon = median([x["mem"]["anon"] for x in xs])
        pss = median([x["mem"]["pss"] or 0 for x in xs])
        filem = median([x["mem"]["file"] for x in xs])
        cpu = median([x["cpu_ms_per_min"] for x in xs])
        row("1 idle", f"RSS after the first round, {n} credentials (VmRSS / VmHWM)", f"{rss:.1f} / {hwm:.1f} MiB (anon {anon:.1f}, file-backed {filem:.1f}; PSS {pss:.1f})", "", "", f"≤ {target} MiB", ok(rss <= target))
        row("1 idle", f"CPU per idle minute, {n} credentials (schedstat, all threads)", f"{cpu:.2f} ms/min", "", "", "", "")
    wk = median([x["wakeups_per_s"] for x in idle["big"]])
    wk3 = median([x["wakeups_per_s"] for x in idle["small"]])
    row("2 wake-ups", f"idle context switches/s, {n_big} credentials (all threads)", f"{wk:.2f}/s", f"3 credentials: {wk3:.2f}/s", "", "≤ 1/s", ok(wk <= 1))


# ---------------------------------------------------------------- 3: cost per refresh


def curl_cmd(url, out):
    return (
        f"curl -s -X POST -d client_id={YAV_ID} -d client_secret={YAV_SECRET} "
        f"-d grant_type=client_credentials {url}{YAV_PATH} | jq -r .access_token > {out}"
    )


def curl_durable_cmd(url, out):
    d = os.path.dirname(out)
    return (
        f"curl -s -X POST -d client_id={YAV_ID} -d client_secret={YAV_SECRET} "
        f"-d grant_type=client_credentials {url}{YAV_PATH} | jq -r .access_token > {out}.tmp "
        f"&& sync {out}.tmp && mv {out}.tmp {out} && sync {d}"
    )


def run_many(argv, n, env=None, check=None):
    walls, cpus = [], []
    for _ in range(n):
        if check:
            check("before")
        wall, cpu, rc = wait4_run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if rc != 0:
            raise RuntimeError(f"{argv} exited {rc}")
        if check:
            check("after")
        walls.append(wall)
        cpus.append(cpu)
    return walls, cpus


def bench_refresh(emu, tmp, n_seq, n_cli, n_bulk, bulk_reps, steady_windows, steady_window_s):
    env = tokend_env()
    res = {}

    # (a) the daemon, steady state: 50 credentials with `lifetime: 2s` refresh every ~1.6 s.
    log("3a. daemon steady state: 50 credentials, lifetime 2s")
    wd = tmp / "steady"
    cfg = write_config(wd, 50, emu.url, lifetime="2s")
    d = Daemon(cfg, wd, "tokend")
    d.wait_line(READY_LINE, timeout=30)
    time.sleep(3)
    steady = []
    for _ in range(steady_windows):
        c0, r0, t0 = proc_cpu(d.pid), emu.successes(), time.perf_counter()
        time.sleep(steady_window_s)
        c1, r1, t1 = proc_cpu(d.pid), emu.successes(), time.perf_counter()
        steady.append(dict(refreshes=r1 - r0, cpu_s=c1 - c0, seconds=t1 - t0, cpu_per_refresh_s=(c1 - c0) / max(1, r1 - r0), loadavg=loadavg()))
        log(f"   {r1 - r0} refreshes in {t1 - t0:.1f}s, cpu {c1 - c0:.2f}s → {ms((c1 - c0) / max(1, r1 - r0))}/refresh")
    d.stop()
    res["daemon_steady"] = steady

    # (b) the daemon, one refresh at a time: SIGUSR1 → the output renamed in and its
    # directory fsynced (seen through inotify), one credential, N times.
    log(f"3b. daemon, sequential refreshes via SIGUSR1 x{n_seq}")
    wd = tmp / "seq"
    cfg = write_config(wd, 1, emu.url)
    d = Daemon(cfg, wd, "tokend")
    d.wait_line(READY_LINE, timeout=30)
    time.sleep(0.5)
    ino = Inotify(wd / "out")
    lat, floor = [], []
    # The floor, interleaved with the refreshes so both see the same disk: one keep-alive
    # POST to the emulator + the atomic recipe twice (state + output), from Python.
    fl_sock = socket.create_connection(("127.0.0.1", emu.port))
    fl_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    fl_req = http_request_bytes(f"127.0.0.1:{emu.port}")
    fl_dir = wd / "floor"
    fl_dir.mkdir()
    floor_cost = 0.0
    r0, c0 = emu.successes(), proc_cpu(d.pid)
    for i in range(n_seq):
        t0 = time.perf_counter()
        os.kill(d.pid, signal.SIGUSR1)
        t1 = ino.wait_for("c00000.token", dir_close=True)
        lat.append(t1 - t0)
        time.sleep(0.01)
        f0 = time.perf_counter()
        fl_sock.sendall(fl_req)
        read_response(fl_sock)
        atomic_recipe(fl_dir, "state", i)
        atomic_recipe(fl_dir, "output", i)
        floor.append(time.perf_counter() - f0)
        floor_cost += 1
        time.sleep(0.01)
    c1, r1 = proc_cpu(d.pid), emu.successes()
    fl_sock.close()
    ino.close()
    d.stop()
    res["daemon_sequential"] = dict(latency_s=lat, floor_interleaved_s=floor, refreshes=r1 - r0 - int(floor_cost), cpu_s=c1 - c0)
    seq_cpu = (c1 - c0) / max(1, r1 - r0 - floor_cost)
    log(f"   median {ms(median(lat))} (interleaved floor {ms(median(floor))}), {r1 - r0 - int(floor_cost)} refreshes, cpu {ms(seq_cpu)}/refresh")

    # (c) `tokend once --force` over many credentials: process start amortised.
    log(f"3c. tokend once --force, {n_bulk} credentials x{bulk_reps}")
    wd = tmp / "bulk"
    cfg = write_config(wd, n_bulk, emu.url)
    bulk = []
    for _ in range(bulk_reps):
        r0 = emu.successes()
        walls, cpus = run_many([str(TOKEND), "-c", str(cfg), "once", "--force"], 1, env=env)
        fetched = emu.successes() - r0
        bulk.append(dict(wall_s=walls[0], cpu_s=cpus[0], fetched=fetched, loadavg=loadavg()))
        log(f"   wall {walls[0]:.2f}s cpu {cpus[0]:.2f}s for {fetched}")
    res["once_bulk"] = bulk

    # (d) `tokend once --force`, one credential: what a cron job running tokend would cost.
    log(f"3d. tokend once --force, 1 credential x{n_cli}")
    wd = tmp / "one"
    cfg = write_config(wd, 1, emu.url)
    walls, cpus = run_many([str(TOKEND), "-c", str(cfg), "once", "--force"], n_cli, env=env)
    res["once_one"] = dict(wall_s=walls, cpu_s=cpus)
    vw, vc = run_many([str(TOKEND), "--version"], n_cli)
    res["tokend_version"] = dict(wall_s=vw, cpu_s=vc)

    # (e) the cron-style script, as /bin/sh runs it from cron.
    log(f"3e. curl | jq > file x{n_cli}")
    out = str(tmp / "curl" / "token")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    cw, cc = run_many(["/bin/sh", "-c", curl_cmd(emu.url, out)], n_cli)
    if not Path(out).read_text().strip():
        raise RuntimeError("curl | jq wrote an empty token")
    res["curl_jq"] = dict(wall_s=cw, cpu_s=cc)
    log(f"3f. curl | jq > tmp; sync; mv; sync dir x{n_cli}")
    dw, dc = run_many(["/bin/sh", "-c", curl_durable_cmd(emu.url, out)], n_cli)
    res["curl_jq_durable"] = dict(wall_s=dw, cpu_s=dc)
    RAW["refresh"] = res

    steady_cpu = median([x["cpu_per_refresh_s"] for x in steady])
    bulk_cpu = median([x["cpu_s"] / x["fetched"] for x in bulk])
    bulk_wall = median([x["wall_s"] / x["fetched"] for x in bulk])
    curl_cpu, curl_wall = median(cc), median(cw)
    row("3 per refresh", "CPU, daemon steady state (50 creds, lifetime 2s)", ms(steady_cpu), f"curl+jq {ms(curl_cpu)}", f"1/{curl_cpu / steady_cpu:.0f}", "≤ 1/20 of curl+jq", ok(steady_cpu * 20 <= curl_cpu))
    row("3 per refresh", "CPU, daemon one at a time (SIGUSR1)", ms(seq_cpu), f"curl+jq {ms(curl_cpu)}", f"1/{curl_cpu / seq_cpu:.0f}", "≤ 1/20 of curl+jq", ok(seq_cpu * 20 <= curl_cpu))
    row("3 per refresh", f"CPU, `once --force` {n_bulk} creds ÷ {n_bulk}", ms(bulk_cpu), f"curl+jq {ms(curl_cpu)}", f"1/{curl_cpu / bulk_cpu:.0f}", "", "")
    row("3 per refresh", "CPU, `once --force` 1 cred (one process per refresh)", ms(median(cpus)), f"curl+jq {ms(curl_cpu)}; durable curl+jq {ms(median(dc))}", f"{median(cpus) / curl_cpu:.2f}×", "", "")
    row("3 per refresh", "wall, daemon one at a time (SIGUSR1 → output durable)", ms(median(lat)), f"curl+jq {ms(curl_wall)}; durable {ms(median(dw))}", f"{median(lat) / curl_wall:.2f}×", "", "")
    row("3 per refresh", "wall, daemon one at a time vs the floor measured between its refreshes (RTT + 2 atomic writes)", ms(median(lat)), f"floor {ms(median(floor))}", f"{median(lat) / median(floor):.2f}× the floor", "", "")
    row("3 per refresh", "wall, `once --force` 1 cred (process start → exit)", ms(median(walls)), f"curl+jq {ms(curl_wall)}; durable {ms(median(dw))}", f"{median(walls) / curl_wall:.2f}×", "", "")
    row("3 per refresh", f"wall, `once --force` {n_bulk} creds ÷ {n_bulk} (32 in flight)", ms(bulk_wall), "", "", "", "")
    row("3 per refresh", "`tokend --version` (exec floor)", f"wall {ms(median(vw))}, CPU {ms(median(vc))}", "", "", "", "")
    return res


def bench_oidc_rows(tmp, n):
    from oidc import bench_oidc

    try:
        res = bench_oidc(tmp, n, log)
    except Exception as e:  # report, do not lose the other results
        res = {"skipped": f"failed: {e}"}
    RAW["oidc"] = res
    if "skipped" in res:
        log(f"   oidc-agent comparison skipped: {res['skipped']}")
        row("3 per refresh", "oidc-agent / oidc-token -f", "—", res["skipped"], "", "", "")
        return
    o, t = res["oidc"], res["tokend"]
    o_cpu = median(o["client_cpu_s"]) + o["agent_cpu_per_refresh_s"]
    row("3 per refresh", "CPU vs oidc-agent (refresh_token grant, same mock OP)", ms(t["cpu_per_refresh_s"]), f"`oidc-token -f > file` {ms(median(o['client_cpu_s']))} + agent {ms(o['agent_cpu_per_refresh_s'])}", f"1/{o_cpu / t['cpu_per_refresh_s']:.0f}", "", "")
    row("3 per refresh", "wall vs oidc-agent (same mock OP)", ms(median(t["latency_s"])), f"`oidc-token -f > file` {ms(median(o['wall_s']))}", f"{median(t['latency_s']) / median(o['wall_s']):.2f}×", "", "")


# ---------------------------------------------------------------- 5: restart with valid state


def bench_restart(emu, tmp, n):
    log(f"5. restart with valid state, 3 credentials x{n} (daemon) and x{n} (once)")
    env = tokend_env()
    wd = tmp / "restart"
    cfg = write_config(wd, 3, emu.url)
    wait4_run([str(TOKEND), "-c", str(cfg), "once"], env=env, stderr=subprocess.DEVNULL)
    outs = [wd / "out" / f"c{i:05d}.token" for i in range(3)]
    before = emu.successes()
    run_t, once_t, once_cpu = [], [], []
    for _ in range(n):
        for o in outs:
            o.unlink()
        d = Daemon(cfg, wd, "tokend")
        t = d.wait_line(READY_LINE, timeout=10, poll=0.0005)
        if not all(o.exists() for o in outs):
            raise RuntimeError("ready before the outputs were written")
        run_t.append(t)
        d.stop()
    for _ in range(n):
        for o in outs:
            o.unlink()
        wall, cpu, rc = wait4_run([str(TOKEND), "-c", str(cfg), "once"], env=env, stderr=subprocess.DEVNULL)
        if rc != 0 or not all(o.exists() for o in outs):
            raise RuntimeError("once failed")
        once_t.append(wall)
        once_cpu.append(cpu)
    fetched = emu.successes() - before
    RAW["restart"] = dict(run_s=run_t, once_s=once_t, once_cpu_s=once_cpu, provider_calls=fetched, loadavg=loadavg())
    log(f"   run: median {ms(median(run_t))}; once: median {ms(median(once_t))}; provider calls {fetched}")
    row("5 restart", "`run`: start → ready line, 3 outputs rewritten from state", ms(median(run_t)), "", "", "≤ 20 ms", ok(median(run_t) <= 0.020))
    row("5 restart", "`once`: start → exit, 3 outputs rewritten from state", ms(median(once_t)), "", "", "≤ 20 ms", ok(median(once_t) <= 0.020))
    row("5 restart", "provider calls during the restarts", str(fetched), "", "", "0", ok(fetched == 0))


# ---------------------------------------------------------------- 6: the physical floor


def http_request_bytes(host_port):
    body = f"client_id={YAV_ID}&client_secret={YAV_SECRET}&grant_type=client_credentials".encode()
    head = (
        f"POST {YAV_PATH} HTTP/1.1\r\nHost: {host_port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + body


def read_response(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while len(body) < length:
        body += sock.recv(65536)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head[:80])
    return body


def atomic_recipe(d, name, i, data=b"x" * 200):
    """tokend's recipe: temp file, fchmod, data, fsync, rename, fsync of the directory."""
    tmpf = d / f".{name}.{i}.tmp"
    fd = os.open(tmpf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.fchmod(fd, 0o600)
    os.write(fd, data)
    os.fsync(fd)
    os.close(fd)
    os.rename(tmpf, d / name)
    dfd = os.open(d, os.O_RDONLY)
    os.fsync(dfd)
    os.close(dfd)


def bench_floor(emu, tmp, n):
    log(f"6. physical floor x{n}")
    req = http_request_bytes(f"127.0.0.1:{emu.port}")
    fresh, keep = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        s = socket.create_connection(("127.0.0.1", emu.port))
        s.sendall(req)
        read_response(s)
        fresh.append(time.perf_counter() - t0)
        s.close()
    s = socket.create_connection(("127.0.0.1", emu.port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for _ in range(n):
        t0 = time.perf_counter()
        s.sendall(req)
        read_response(s)
        keep.append(time.perf_counter() - t0)
    s.close()
    curl_total = []
    for _ in range(min(n, 50)):
        out = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{time_total}", "-X", "POST", "-d", f"client_id={YAV_ID}", "-d", f"client_secret={YAV_SECRET}", "-d", "grant_type=client_credentials", emu.url + YAV_PATH],
            capture_output=True,
            text=True,
            check=True,
        )
        curl_total.append(float(out.stdout))
    d = tmp / "fsync"
    d.mkdir(parents=True, exist_ok=True)
    data = b"x" * 200
    fs, recipe = [], []
    for i in range(n):
        p = d / "plain"
        t0 = time.perf_counter()
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        fs.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        atomic_recipe(d, "token", i)
        recipe.append(time.perf_counter() - t0)
    par = parallel_recipes(d / "par", threads=64, per_thread=40)
    RAW.setdefault("floor_passes", []).append(dict(http_keepalive_s=median(keep), fsync_s=median(fs), atomic_recipe_s=median(recipe), parallel_recipes_per_s=par, loadavg=loadavg()))
    RAW["floor"] = dict(parallel_recipes_per_s=par, http_fresh_s=fresh, http_keepalive_s=keep, curl_time_total_s=curl_total, fsync_s=fs, atomic_recipe_s=recipe, loadavg=loadavg())
    floor_one = median(keep) + median(recipe)
    floor_tokend = median(keep) + 2 * median(recipe)
    log(f"   http fresh {ms(median(fresh))} keep-alive {ms(median(keep))} curl {ms(median(curl_total))}; fsync {ms(median(fs))}; recipe {ms(median(recipe))}")
    row("6 floor", "loopback HTTP round trip to the emulator (keep-alive / new connection / curl time_total)", f"{ms(median(keep))} / {ms(median(fresh))} / {ms(median(curl_total))}", "", "", "", "")
    row("6 floor", "fsync of a 200-byte file / full atomic recipe (tmp, fsync, rename, fsync dir)", f"{ms(median(fs))} / {ms(median(recipe))}", "", "", "", "")
    row("6 floor", "floor for one refresh: RTT + 1 durable file / + 2 (tokend writes state + output)", f"{ms(floor_one)} / {ms(floor_tokend)}", "", "", "", "")
    row("6 floor", "durable writes/s with 64 writers in one directory (floor for 4: 2 per refresh)", f"{par:.0f}/s → 10 000 refreshes ≥ {20000 / par:.1f} s", "", "", "", "")
    return floor_one, floor_tokend


def parallel_recipes(d, threads, per_thread):
    """The atomic recipe from many threads at once (fsync releases the GIL): how many
    durable small-file replacements per second this disk sustains with 64 in flight."""
    import threading

    d.mkdir(parents=True, exist_ok=True)

    def worker(k):
        for i in range(per_thread):
            tmpf = d / f".t{k}.{i}.tmp"
            fd = os.open(tmpf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, b"x" * 200)
            os.fsync(fd)
            os.close(fd)
            os.rename(tmpf, d / f"f{k}")
            dfd = os.open(d, os.O_RDONLY)
            os.fsync(dfd)
            os.close(dfd)

    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return threads * per_thread / (time.perf_counter() - t0)


# ---------------------------------------------------------------- report


def machine():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"], capture_output=True, text=True).stdout.strip()
    fs = subprocess.run(["df", "-T", str(ROOT)], capture_output=True, text=True).stdout.splitlines()[-1].split()[1]
    return dict(
        cpu=cpu,
        cores=os.cpu_count(),
        kernel=platform.release(),
        commit=commit + ("+dirty" if dirty else ""),
        fs=fs,
        python=platform.python_version(),
        curl=subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout.split("\n")[0],
        jq=subprocess.run(["jq", "--version"], capture_output=True, text=True).stdout.strip(),
    )


def table():
    out = ["| # | metric | tokend | alternative | ratio | target | met |", "|---|---|---|---|---|---|---|"]
    for r in ROWS:
        out.append("| " + " | ".join(r) + " |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and shorter windows (a smoke run, not for the record)")
    ap.add_argument("--only", default="", help="comma list of: scale,refresh,oidc,restart,floor")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    q = args.quick
    only = set(filter(None, args.only.split(",")))
    want = lambda k: not only or k in only  # noqa: E731

    for tool in ("curl", "jq"):
        if not shutil.which(tool):
            sys.exit(f"bench: `{tool}` is missing: apt-get install -y curl jq")
    if not TOKEND.exists():
        sys.exit(f"bench: {TOKEND} is missing: run bench/run (it builds it)")

    started = datetime.datetime.now()
    info = machine()
    info["loadavg_start"] = loadavg()
    RAW["machine"] = info
    log(f"machine: {info}")
    tmp = Path(tempfile.mkdtemp(prefix="tokend-bench-"))
    emu = Emulator(tmp)
    try:
        if want("floor"):
            bench_floor(emu, tmp, 50 if q else 300)
        if want("restart"):
            bench_restart(emu, tmp, 10 if q else 40)
        if want("refresh"):
            bench_refresh(emu, tmp, n_seq=50 if q else 300, n_cli=10 if q else 40, n_bulk=1000, bulk_reps=1 if q else 3, steady_windows=2 if q else 3, steady_window_s=5 if q else 15)
        if want("oidc"):
            bench_oidc_rows(tmp, 20 if q else 200)
        if want("scale"):
            bench_check_scaling(emu, tmp, [500, 2000] if q else [2500, 10000])
            bench_scale(emu, tmp, reps=1 if q else 3, windows=2, window_s=10 if q else 30, settle_s=5 if q else 15, n_big=2000 if q else 10000)
        if want("floor"):
            # the disk is shared: a second pass shows how much the floor moved during the run
            saved = list(ROWS)
            bench_floor(emu, tmp, 50 if q else 300)
            ROWS[:] = saved
            p = RAW["floor_passes"]
            row("6 floor", "fsync / atomic recipe / 64-writer rate, at start vs end of the run", f"{ms(p[0]['fsync_s'])} / {ms(p[0]['atomic_recipe_s'])} / {p[0]['parallel_recipes_per_s']:.0f}/s vs {ms(p[-1]['fsync_s'])} / {ms(p[-1]['atomic_recipe_s'])} / {p[-1]['parallel_recipes_per_s']:.0f}/s", "", "", "", "")
    finally:
        emu.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    info["loadavg_end"] = loadavg()
    info["duration_s"] = round((datetime.datetime.now() - started).total_seconds())

    order = ["1", "2", "3", "4", "5", "6"]
    ROWS.sort(key=lambda r: order.index(r[0][0]))
    tbl = table()
    stamp = started.strftime("%Y-%m-%d-%H%M")
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    md = [
        f"# tokend benchmarks, {started.strftime('%Y-%m-%d %H:%M')}{' (quick)' if q else ''}",
        "",
        f"- commit `{info['commit']}`, {info['cores']} cores ({info['cpu']}), Linux {info['kernel']}, {info['fs']}",
        f"- load average at start {info['loadavg_start']}, at end {info['loadavg_end']}; run took {info['duration_s']} s",
        f"- {info['curl']}; {info['jq']}",
        "- medians; method in BENCHMARKS.md; raw samples in the .json beside this file",
        "",
        tbl,
        "",
    ]
    (outdir / f"{stamp}.md").write_text("\n".join(md))
    (outdir / f"{stamp}.json").write_text(json.dumps(RAW, indent=1))
    print("\n".join(md))
    print(f"written: {outdir / (stamp + '.md')}")


if __name__ == "__main__":
    main()
