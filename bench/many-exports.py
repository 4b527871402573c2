#!/usr/bin/python3
"""bench/many-exports.py - what 1,000 exports cost: the daemon's RSS
after N exports of small raw images (each a file node, a raw node and an
NBD export added over QMP) and the time `query-block-exports` takes
then, for blockd and qemu-storage-daemon side by side.

    bench/many-exports.py [--exports 1000] [--size 65536] [--queries 50]
                          [--servers blockd,qemu-storage-daemon]

Prints per server: RSS before and after (MiB), the time to add them all,
and the median and p99 of --queries query-block-exports round trips
(ms).  The issue's targets for blockd: < 128 MiB with 1,000 exports and
query-block-exports < 10 ms.  Environment: BLOCKD (default
build/blockd).
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from importlib import import_module  # noqa: E402

Qmp = import_module("qmp-lat").Qmp
BLOCKD = os.environ.get("BLOCKD", os.path.join(os.path.dirname(HERE),
                                               "build", "blockd"))


def rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def start(name, d):
    qmp, nbd = os.path.join(d, "qmp.sock"), os.path.join(d, "nbd.sock")
    for p in (qmp, nbd):
        if os.path.exists(p):
            os.unlink(p)
    if name == "blockd":
        argv = [BLOCKD, "--qmp", "unix:" + qmp]
    elif name == "qemu-storage-daemon":
        argv = ["qemu-storage-daemon", "--chardev",
                "socket,id=m0,path=%s,server=on,wait=off" % qmp,
                "--monitor", "chardev=m0"]
    else:
        sys.exit("bench/many-exports.py: unknown server %s" % name)
    p = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    for _ in range(400):
        if os.path.exists(qmp):
            break
        time.sleep(0.05)
    else:
        p.kill()
        sys.exit("bench/many-exports.py: %s did not start" % name)
    q = Qmp(qmp)
    q.call("nbd-server-start", {"addr": {"type": "unix",
                                         "data": {"path": nbd}}})
    return p, q


def one(name, d, imgs, queries):
    p, q = start(name, d)
    try:
        before = rss_mib(p.pid)
        t0 = time.perf_counter()
        for i, img in enumerate(imgs):
            q.call("blockdev-add", {"driver": "file", "node-name": "f%d" % i,
                                    "filename": img})
            q.call("blockdev-add", {"driver": "raw", "node-name": "d%d" % i,
                                    "file": "f%d" % i})
            q.call("block-export-add", {"type": "nbd", "id": "e%d" % i,
                                        "node-name": "d%d" % i,
                                        "name": "e%d" % i})
        add_s = time.perf_counter() - t0
        after = rss_mib(p.pid)
        lat = []
        for _ in range(queries):
            t = time.perf_counter()
            n = len(q.call("query-block-exports"))
            lat.append((time.perf_counter() - t) * 1000.0)
        if n != len(imgs):
            sys.exit("bench/many-exports.py: %s lists %d exports, not %d"
                     % (name, n, len(imgs)))
        lat.sort()
        return before, after, add_s, statistics.median(lat), \
            lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    finally:
        p.terminate()
        p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--exports", type=int, default=1000)
    ap.add_argument("--size", type=int, default=65536)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--servers", default="blockd,qemu-storage-daemon")
    args = ap.parse_args()
    print("# bench/many-exports.py --exports %d --size %d (%s UTC); load %s"
          % (args.exports, args.size,
             time.strftime("%F %H:%M", time.gmtime()),
             open("/proc/loadavg").read().split()[0]))
    print("%-22s %10s %10s %8s %12s %12s" % (
        "server", "RSS before", "RSS after", "add s", "query p50 ms",
        "query p99 ms"))
    with tempfile.TemporaryDirectory(dir="/dev/shm") as d:
        imgs = []
        for i in range(args.exports):
            img = os.path.join(d, "i%d.raw" % i)
            with open(img, "wb") as f:
                f.truncate(args.size)
            imgs.append(img)
        for name in args.servers.split(","):
            before, after, add_s, p50, p99 = one(name, d, imgs,
                                                 args.queries)
            print("%-22s %10.1f %10.1f %8.2f %12.3f %12.3f"
                  % (name, before, after, add_s, p50, p99), flush=True)


if __name__ == "__main__":
    main()
