#!/usr/bin/env python3
"""Where a shaped swarm run's time goes: every Pollen daemon's link, sampled every 100 ms.

Run beside `bench/swarm.py` (as root, one Pollen cell at a time):

    python3 bench/link_rates.py record /tmp/rates.jsonl &
    python3 bench/swarm.py --peers 16 --sizes 256MiB --systems pollen --scenarios together
    python3 bench/link_rates.py report /tmp/rates.jsonl --size 256MiB

`record` finds the daemons by their command line (`pollen daemon ... --upload-listen IP:0`),
reads their namespace's eth0 counters through /proc/<pid>/net/dev, and stops once the
daemons are gone. `report` prints, from the seed's first byte: how much of the line the
peers received in the first seconds, their steady rates (5-20 s), when each finished, and
the bytes every node moved over S. Counters are the interface's, after GRO: about one header
per aggregate, so a full 100 Mbit/s tbf link reads about 96 Mbit/s.
"""

import argparse
import json
import os
import time

LINE_MBIT = 100.0


def daemons():
    """Last octet of each daemon's upload address -> its pid."""
    found = {}
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            cmd = open(f"/proc/{p}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if len(cmd) > 2 and cmd[0].endswith(b"pollen") and cmd[1] == b"daemon":
            for i, a in enumerate(cmd[:-1]):
                if a == b"--upload-listen":
                    found[cmd[i + 1].decode().split(":")[0].split(".")[-1]] = p
    return found


def record(path):
    seen, pids, scanned = False, {}, 0.0
    with open(path, "w") as out:
        while True:
            if time.time() - scanned > 1.0:
                pids, scanned = daemons(), time.time()
            if not pids:
                if seen:
                    return
                time.sleep(0.05)
                continue
            seen = True
            now = time.time()
            row = {"t": now}
            for host, pid in pids.items():
                try:
                    for line in open(f"/proc/{pid}/net/dev"):
                        if "eth0:" in line:
                            f = line.split(":")[1].split()
                            row[host] = [int(f[0]), int(f[8])]
                except OSError:
                    pass
            out.write(json.dumps(row) + "\n")
            out.flush()
            time.sleep(max(0.0, 0.1 - (time.time() - now)))


def size_bytes(s):
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    for u, m in units.items():
        if s.endswith(u):
            return int(float(s[: -len(u)]) * m)
    return int(s)


def report(path, size):
    rows = [json.loads(line) for line in open(path)]
    seed = "1"
    peers = sorted({k for r in rows for k in r if k not in ("t", seed)}, key=int)
    base = rows[0][seed][1]
    t0 = next(r["t"] for r in rows if r[seed][1] - base > 200_000)
    first = {h: next(r[h] for r in rows if h in r) for h in [seed] + peers}

    def at(sec):
        return min(rows, key=lambda r: abs(r["t"] - t0 - sec))

    line_bytes = LINE_MBIT * 1e6 / 8
    for sec in (1, 2, 3, 5):
        r = at(sec)
        got = [(r[h][0] - first[h][0]) / (line_bytes * sec) for h in peers if h in r]
        print(f"{sec} s after the seed's first byte: peers received {sum(got) / len(got):.2f} of the line")
    a, b = at(5), at(20)
    dt = b["t"] - a["t"]

    def rate(h, i):
        return (b[h][i] - a[h][i]) * 8 / dt / 1e6 if h in a and h in b else 0.0

    print("steady 5-20 s, Mbit/s")
    print(f"  seed sent {rate(seed, 1):.1f}")
    print("  peers received " + " ".join(f"{rate(h, 0):.1f}" for h in peers))
    print("  peers sent     " + " ".join(f"{rate(h, 1):.1f}" for h in peers))
    done = []
    for h in peers:
        mine = [r for r in rows if h in r]
        final = mine[-1][h][0]
        done.append(next(r["t"] for r in mine if r[h][0] >= final - 100_000) - t0)
    print("peers done (s after the seed's first byte): " + " ".join(f"{d:.1f}" for d in done))
    last = {h: next(r[h] for r in reversed(rows) if h in r) for h in [seed] + peers}
    print(f"bytes / S: seed sent {(last[seed][1] - first[seed][1]) / size:.3f}")
    for h in peers:
        print(f"  hc{h}: received {(last[h][0] - first[h][0]) / size:.3f}, "
              f"sent {(last[h][1] - first[h][1]) / size:.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    rec = sub.add_parser("record", help="sample every daemon's link until they are gone")
    rec.add_argument("file")
    rep = sub.add_parser("report", help="summarize a recording")
    rep.add_argument("file")
    rep.add_argument("--size", default="256MiB", help="S of the run (e.g. 256MiB, 1GiB)")
    args = ap.parse_args()
    if args.cmd == "record":
        record(args.file)
    else:
        report(args.file, size_bytes(args.size))


if __name__ == "__main__":
    main()
