#!/usr/bin/env python3
"""Bandwidth-shaped swarm benchmark: Pollen vs BitTorrent (aria2 or libtorrent, with
opentracker) vs plain HTTP.

Run by hand, as root, from the repository root (not in CI):

    cargo build --release -p pollen -p pollen-bench
    sudo python3 bench/swarm.py --peers 8,16 --sizes 256MiB,1GiB --rate 100mbit

Every node is a network namespace made by ../shared/harness/netns-up.sh, each shaped with
`tc tbf` to RATE up and RATE down (`--down-rate` sets the download limit apart; `none`
leaves downloads unshaped, the harness's BitTorrent setting). Node hc1 is the origin: the HTTP origin, Pollen's
scheduler and seed peer, and the BitTorrent tracker and initial seeder all live there, so every
system has the same origin upload O = RATE. Peers are hc2..hc(N+1).

Scenarios: `together` (all start at once), `staggered` (a fifth of the peers every 3 s),
`kill` (all start at once; a quarter are SIGKILLed at T_min / 2 and left out of the times).
Per system and scenario it reports first / median / last completion over T_min (each peer
timed from its own start), origin bytes / S (bytes the HTTP origin served; for BitTorrent,
what the initial seeder uploaded) and origin-node bytes / S (everything that left hc1).
The table is printed and, with --write, appended to docs/benchmarks-history.md (the report,
docs/BENCHMARKS.md, is edited by hand).
"""

import argparse
import fcntl
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HARNESS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "harness")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLLEN = os.path.join(REPO, "target", "release", "pollen")
ORIGIN = os.path.join(REPO, "target", "release", "pollen-origin")
LT_PEER = os.path.join(REPO, "bench", "lt_peer.py")


def size_bytes(s):
    m = re.fullmatch(r"(\d+)(KiB|MiB|GiB)?", s)
    if not m:
        raise SystemExit(f"bad size {s!r} (e.g. 256MiB)")
    mult = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, None: 1}[m.group(2)]
    return int(m.group(1)) * mult


def rate_bytes(s):
    m = re.fullmatch(r"(\d+)(k|m|g)bit", s)
    if not m:
        raise SystemExit(f"bad rate {s!r} (e.g. 100mbit)")
    return int(m.group(1)) * {"k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)] / 8


def ns(i, *cmd, **kw):
    return subprocess.Popen(["ip", "netns", "exec", f"hc{i}", *cmd], **kw)


def ip(i):
    return f"10.78.0.{i}"


def tx_bytes(i):
    out = subprocess.run(["ip", "netns", "exec", f"hc{i}", "cat", "/sys/class/net/eth0/statistics/tx_bytes"],
                         capture_output=True, text=True, check=True).stdout
    return int(out.strip())


def read_line(proc, pattern, timeout=30):
    """Reads the process's stdout until a line matches; returns the match."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            time.sleep(0.05)
            continue
        m = re.search(pattern, line)
        if m:
            return m
    raise RuntimeError(f"no line matching {pattern!r} within {timeout}s")


class Procs:
    """Every process started for one run; all are killed at the end."""

    def __init__(self):
        self.procs = []

    def add(self, p):
        self.procs.append(p)
        return p

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.procs = []


def exited_ok(proc, what):
    """True once `proc` exited with 0; raises if it exited otherwise."""
    rc = proc.poll()
    if rc not in (None, 0):
        raise RuntimeError(f"{what} failed ({rc})")
    return rc == 0


def start_origin(procs, work, data):
    """Starts the counting origin on hc1; returns its blob URL and its stats file."""
    stats = os.path.join(work, "origin.stats")
    origin = procs.add(ns(1, ORIGIN, "--listen", f"{ip(1)}:0", "--file", data, "--stats", stats,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
    return read_line(origin, r"listening on (\S+)").group(1), stats


def start_times(n, scenario):
    if scenario == "staggered":
        group = max(1, (n + 4) // 5)
        return [3.0 * (k // group) for k in range(n)]
    return [0.0] * n


def drive(n, scenario, t_min, start, finished, kill, name):
    """Starts the n peers' downloads on the scenario's schedule, kills a quarter halfway in
    the `kill` scenario, and returns the completion times (each from the peer's own start)
    of the peers not killed. `finished(k)` is true once peer k has its copy (and raises if
    its download failed)."""
    starts = start_times(n, scenario)
    t0 = time.time()
    began = [None] * n
    done = [None] * n
    killed = set()
    kill_at = t0 + t_min / 2 if scenario == "kill" else None
    victims = set(range(n - max(1, n // 4), n)) if scenario == "kill" else set()
    while True:
        now = time.time()
        for k in range(n):
            if began[k] is None and now - t0 >= starts[k]:
                start(k)
                began[k] = now
            if began[k] is not None and done[k] is None and k not in killed and finished(k):
                done[k] = now - began[k]
        if kill_at and now >= kill_at:
            for k in victims:
                if done[k] is None and began[k] is not None:
                    kill(k)
                    killed.add(k)
            kill_at = None
        if all(done[k] is not None or k in killed for k in range(n)):
            return [done[k] for k in range(n) if k not in killed]
        if now - t0 > 20 * t_min + 60:
            raise RuntimeError(f"{name} run timed out")
        time.sleep(0.05)


def run_pollen(args, work, data, size, n, scenario, t_min):
    procs = Procs()
    try:
        # With --keep-logs the scheduler logs its decisions (debug) where keep_logs finds them.
        sched_log = subprocess.DEVNULL
        if args.keep_logs:
            os.makedirs(os.path.join(work, "pollen-scheduler"))
            sched_log = open(os.path.join(work, "pollen-scheduler", "log"), "w")
        sched = procs.add(ns(1, POLLEN, "scheduler", "--listen", f"{ip(1)}:0",
                             stdout=subprocess.PIPE, stderr=sched_log, text=True,
                             env={**os.environ, "POLLEN_LOG": "info,pollen_scheduler=debug"}))
        url_s = "http://" + read_line(sched, r"listening on (\S+)").group(1)
        blob, stats = start_origin(procs, work, data)

        def daemon(i, seed):
            d = os.path.join(work, f"pollen-{i}")
            os.makedirs(d, exist_ok=True)
            cmd = [POLLEN, "daemon", "--scheduler", url_s, "--data-dir", d,
                   "--upload-listen", f"{ip(i)}:0", "--api-socket", os.path.join(d, "api.sock"),
                   "--proxy-listen", "off"]
            if seed:
                # The seed shares node hc1 with the origin: a seed refuses its own addresses
                # unless they are allow-listed (the origin guard).
                cmd += ["--seed", "--origin-allow", ip(1)]
                cmd += args.seed_args.split()
            else:
                cmd += args.peer_args.split()
            cmd += args.daemon_args.split()
            p = procs.add(ns(i, *cmd, stdout=subprocess.PIPE,
                             stderr=open(os.path.join(d, "log"), "w"), text=True))
            read_line(p, r"daemon ready")
            return p, os.path.join(d, "api.sock")

        daemon(1, True)
        peers = [daemon(i + 2, False) for i in range(n)]
        time.sleep(1.0)
        tx0 = tx_bytes(1)
        gets = [None] * n

        def start(k):
            out = os.path.join(work, f"out-{k}")
            gets[k] = ns(k + 2, POLLEN, "get", blob, "-O", out, "--api-socket", peers[k][1],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def finished(k):
            return exited_ok(gets[k], f"pollen get on peer {k}")

        def kill(k):
            peers[k][0].send_signal(signal.SIGKILL)
            gets[k].kill()

        times = drive(n, scenario, t_min, start, finished, kill, "pollen")
        origin_bytes = int(open(stats).read().strip() or 0)
        return times, origin_bytes, tx_bytes(1) - tx0
    finally:
        procs.stop()


def run_bittorrent(args, work, data, size, n, scenario, t_min):
    procs = Procs()
    try:
        torrent = start_tracker(procs, work, data)
        common = ["aria2c", "--enable-dht=false", "--bt-enable-lpd=false", "--enable-peer-exchange=true",
                  "--file-allocation=none", "--seed-ratio=0.0", "--console-log-level=warn",
                  "--summary-interval=0", "--bt-tracker-interval=1"]
        seed_dir = os.path.dirname(data)
        procs.add(ns(1, *common, "--check-integrity=true", f"--dir={seed_dir}", torrent,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(2.0)
        tx0 = tx_bytes(1)
        leech = [None] * n
        flags = [os.path.join(work, f"bt-done-{k}") for k in range(n)]

        def start(k):
            d = os.path.join(work, f"bt-{k}")
            os.makedirs(d)
            hook = os.path.join(work, f"bt-hook-{k}.sh")
            with open(hook, "w") as f:
                f.write(f"#!/bin/sh\ntouch {flags[k]}\n")
            os.chmod(hook, 0o755)
            leech[k] = procs.add(ns(k + 2, *common, f"--dir={d}", f"--on-bt-download-complete={hook}",
                                    torrent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        times = drive(n, scenario, t_min, start, lambda k: os.path.exists(flags[k]),
                      lambda k: leech[k].send_signal(signal.SIGKILL), "bittorrent")
        sent = tx_bytes(1) - tx0
        return times, sent, sent
    finally:
        procs.stop()


def start_tracker(procs, work, data):
    """Makes a torrent of `data` with 1 MiB pieces, announced to the tracker on hc1, and
    starts an opentracker there that knows it. Returns the torrent's path."""
    tdir = os.path.join(work, "tracker")
    os.makedirs(tdir, exist_ok=True)
    torrent = os.path.join(work, "x.torrent")
    if os.path.exists(torrent):
        os.remove(torrent)
    subprocess.run(["mktorrent", "-a", f"http://{ip(1)}:6969/announce", "-l", "20", "-o", torrent, data],
                   check=True, capture_output=True)
    show = subprocess.run(["aria2c", "-S", torrent], capture_output=True, text=True, check=True).stdout
    info_hash = re.search(r"Info Hash: ([0-9a-f]{40})", show).group(1)
    with open(os.path.join(tdir, "whitelist.txt"), "w") as f:
        f.write(info_hash + "\n")
    os.chmod(tdir, 0o755)
    procs.add(ns(1, "opentracker", "-i", ip(1), "-p", "6969", "-P", "6969", "-d", tdir,
                 "-w", "/whitelist.txt", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(0.5)
    return torrent


def run_libtorrent(args, work, data, size, n, scenario, t_min):
    procs = Procs()
    try:
        torrent = start_tracker(procs, work, data)
        peer = ["/usr/bin/python3", LT_PEER, torrent]
        procs.add(ns(1, *peer, os.path.dirname(data), os.path.join(work, "lt-seed-done"), "--seed",
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(2.0)
        tx0 = tx_bytes(1)
        leech = [None] * n
        flags = [os.path.join(work, f"lt-done-{k}") for k in range(n)]

        def start(k):
            d = os.path.join(work, f"lt-{k}")
            os.makedirs(d)
            leech[k] = procs.add(ns(k + 2, *peer, d, flags[k],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        def finished(k):
            return os.path.exists(flags[k]) or exited_ok(leech[k], f"libtorrent peer {k}")

        times = drive(n, scenario, t_min, start, finished,
                      lambda k: leech[k].send_signal(signal.SIGKILL), "libtorrent")
        sent = tx_bytes(1) - tx0
        return times, sent, sent
    finally:
        procs.stop()


def run_http(args, work, data, size, n, scenario, t_min):
    procs = Procs()
    try:
        blob, stats = start_origin(procs, work, data)
        tx0 = tx_bytes(1)
        curls = [None] * n

        def start(k):
            curls[k] = procs.add(ns(k + 2, "curl", "-sf", "-o", os.path.join(work, f"http-{k}"), blob))

        times = drive(n, scenario, t_min, start, lambda k: exited_ok(curls[k], f"curl on peer {k}"), lambda k: curls[k].kill(), "http")
        time.sleep(0.3)
        return times, int(open(stats).read().strip() or 0), tx_bytes(1) - tx0
    finally:
        procs.stop()


def keep_logs(run_dir, dest):
    """Copies the daemons' logs of a run (pollen-<node>/log) to dest/<node>.log."""
    for d in sorted(os.listdir(run_dir)):
        log = os.path.join(run_dir, d, "log")
        if d.startswith("pollen-") and os.path.exists(log):
            os.makedirs(dest, exist_ok=True)
            shutil.copy(log, os.path.join(dest, d.removeprefix("pollen-") + ".log"))


def summarize(times, t_min):
    times = sorted(times)
    return times[0] / t_min, statistics.median(times) / t_min, times[-1] / t_min


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peers", default="8,16", help="swarm sizes, comma separated")
    ap.add_argument("--sizes", default="256MiB,1GiB", help="file sizes, comma separated")
    ap.add_argument("--rate", default="100mbit", help="tbf rate of every node, up and down")
    ap.add_argument("--down-rate", default=None,
                    help="download tbf rate of every node if not --rate; `none` leaves downloads unshaped")
    ap.add_argument("--scenarios", default="together,staggered,kill")
    ap.add_argument("--systems", default="pollen,bittorrent,http",
                    help="any of pollen, bittorrent (aria2), libtorrent (python3-libtorrent), http")
    ap.add_argument("--http-scenarios", default="together",
                    help="scenarios plain HTTP runs in (it takes N x S / O each)")
    ap.add_argument("--daemon-args", default="",
                    help="extra flags for every Pollen daemon, e.g. '--max-concurrent-upload-pieces 2'")
    ap.add_argument("--seed-args", default="",
                    help="extra flags for Pollen's seed peer only (before --daemon-args)")
    ap.add_argument("--peer-args", default="",
                    help="extra flags for Pollen's peers only, not the seed (before --daemon-args)")
    ap.add_argument("--keep-logs", metavar="DIR",
                    help="copy every Pollen daemon's log of each run to DIR/<system>-<N>-<S>-<scenario>/")
    ap.add_argument("--write", action="store_true", help="append the table to docs/benchmarks-history.md")
    args = ap.parse_args()
    # Runs share the namespaces hc1..hcN: a second run would tear down the first one's.
    lock = open("/tmp/pollen-swarm.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        sys.exit("another bench/swarm.py run is using the namespaces; wait for it to end")
    if os.geteuid() != 0:
        raise SystemExit("run as root: network namespaces and tc need it")
    for tool in ["ip", "tc", "curl", "aria2c", "mktorrent", "opentracker"]:
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing: apt-get install -y aria2 mktorrent opentracker curl iproute2")
    if "libtorrent" in args.systems.split(","):
        if subprocess.run(["/usr/bin/python3", "-c", "import libtorrent"], capture_output=True).returncode:
            raise SystemExit("libtorrent is missing: apt-get install -y python3-libtorrent")
    for b in [POLLEN, ORIGIN]:
        if not os.path.exists(b):
            raise SystemExit(f"{b} is missing: cargo build --release -p pollen -p pollen-bench")
    rate = rate_bytes(args.rate)
    down = args.down_rate or args.rate
    down_rate = float("inf") if down == "none" else rate_bytes(down)
    peers = [int(x) for x in args.peers.split(",")]
    sizes = [size_bytes(x) for x in args.sizes.split(",")]
    rows = []
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for n in peers:
        subprocess.run(["bash", os.path.join(HARNESS, "netns-down.sh"), str(n + 1)], capture_output=True)
        subprocess.run(["bash", os.path.join(HARNESS, "netns-up.sh"), str(n + 1), args.rate], check=True)
        if down != args.rate:
            # netns-up.sh shapes a node's download on the bridge side of its veth.
            for i in range(1, n + 2):
                cmd = (["tc", "qdisc", "del", "dev", f"hcv{i}", "root"] if down == "none" else
                       ["tc", "qdisc", "replace", "dev", f"hcv{i}", "root", "tbf", "rate", down,
                        "burst", "256kb", "latency", "50ms"])
                subprocess.run(cmd, check=True)
        try:
            for size in sizes:
                work = tempfile.mkdtemp(prefix="pollen-swarm-")
                os.chmod(work, 0o755)
                data = os.path.join(work, "seed", "blob")
                os.makedirs(os.path.dirname(data))
                with open(data, "wb") as f:
                    left = size
                    while left:
                        chunk = min(left, 1 << 24)
                        f.write(os.urandom(chunk))
                        left -= chunk
                try:
                    # Every node has upload U = O = rate and download D = down_rate.
                    t_min = max(size / rate, size / down_rate, n * size / (rate + n * rate))
                    for system in args.systems.split(","):
                        runner = {"pollen": run_pollen, "bittorrent": run_bittorrent,
                                  "libtorrent": run_libtorrent, "http": run_http}[system]
                        for scenario in args.scenarios.split(","):
                            if system == "http" and scenario not in args.http_scenarios.split(","):
                                continue
                            print(f"{system} N={n} S={size >> 20}MiB {scenario}…", file=sys.stderr, flush=True)
                            # A fresh directory per run: no daemon may start with the task cached,
                            # and a run's copies are deleted before the next (disk space).
                            run_dir = tempfile.mkdtemp(dir=work)
                            os.chmod(run_dir, 0o755)
                            try:
                                times, origin_bytes, node_tx = runner(args, run_dir, data, size, n, scenario, t_min)
                            finally:
                                if args.keep_logs:
                                    keep_logs(run_dir, os.path.join(
                                        args.keep_logs, f"{system}-{n}-{size >> 20}MiB-{scenario}"))
                                shutil.rmtree(run_dir, ignore_errors=True)
                            # Per peer, in start order (a diagnosis aid; not in the table).
                            print("  per peer / T_min:", " ".join(f"{t / t_min:.2f}" for t in times),
                                  file=sys.stderr, flush=True)
                            first, med, last = summarize(times, t_min)
                            row = (system, n, size, scenario, t_min, first, med, last,
                                   origin_bytes / size, node_tx / size)
                            rows.append(row)
                            print("| {} | {} | {} MiB | {} | {:.1f} | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {:.2f} |".format(
                                row[0], row[1], row[2] >> 20, *row[3:]), flush=True)
                finally:
                    shutil.rmtree(work, ignore_errors=True)
        finally:
            subprocess.run(["bash", os.path.join(HARNESS, "netns-down.sh"), str(n + 1)], capture_output=True)
    header = ("| system | N | S | scenario | T_min (s) | first / T_min | median / T_min | last / T_min "
              "| origin bytes / S | origin node sent / S |\n|---|---|---|---|---|---|---|---|---|---|\n")
    table = header + "".join(
        "| {} | {} | {} MiB | {} | {:.1f} | {:.2f} | {:.2f} | {:.2f} | {:.2f} | {:.2f} |\n".format(
            r[0], r[1], r[2] >> 20, *r[3:]) for r in rows)
    print(table)
    if args.write:
        with open(os.path.join(REPO, "docs", "benchmarks-history.md"), "a") as f:
            f.write(f"\n### Shaped swarm run of {started}\n\n`sudo python3 bench/swarm.py "
                    f"--peers {args.peers} --sizes {args.sizes} --rate {args.rate} --down-rate {down} "
                    f"--scenarios {args.scenarios} --systems {args.systems}"
                    + (f" --daemon-args '{args.daemon_args}'" if args.daemon_args else "")
                    + (f" --seed-args '{args.seed_args}'" if args.seed_args else "")
                    + (f" --peer-args '{args.peer_args}'" if args.peer_args else "")
                    + "`\n\n" + table)


if __name__ == "__main__":
    main()
