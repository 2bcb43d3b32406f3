#!/usr/bin/python3
"""One libtorrent peer for bench/swarm.py: the `libtorrent` system of the shaped swarm.

Run with Debian's Python (`apt-get install python3-libtorrent`), inside a node's network
namespace. It joins the torrent through its tracker (no DHT, no local discovery), downloads
into DIR, touches DONE once it holds the whole file, and keeps seeding until it is killed.
With --seed, DIR already holds the file and the peer only seeds.

    lt_peer.py TORRENT DIR DONE [--seed]
"""

import os
import sys
import time

import libtorrent as lt


def main():
    if len(sys.argv) not in (4, 5) or (len(sys.argv) == 5 and sys.argv[4] != "--seed"):
        raise SystemExit(__doc__)
    torrent, save, done = sys.argv[1:4]
    seed = len(sys.argv) == 5
    session = lt.session({
        "listen_interfaces": "0.0.0.0:6881",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        # Every peer of the benchmark is on one subnet: without this, libtorrent refuses a
        # second connection from an address it already knows.
        "allow_multiple_connections_per_ip": True,
        "alert_mask": 0,
    })
    params = {"ti": lt.torrent_info(torrent), "save_path": save}
    if seed:
        params["flags"] = lt.torrent_flags.seed_mode
    handle = session.add_torrent(params)
    marked = False
    while True:
        status = handle.status()
        if not marked and status.is_seeding:
            open(done, "w").close()
            marked = True
        time.sleep(0.05 if not marked else 1.0)


if __name__ == "__main__":
    main()
