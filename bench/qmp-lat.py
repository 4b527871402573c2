#!/usr/bin/python3
"""bench/qmp-lat.py - QMP round-trip latency while many NBD clients
saturate the data path: the control plane must stay responsive when the
daemon is busy.

For each server (blockd and qemu-storage-daemon, both serving the same
raw image on /dev/shm over a unix socket, pinned to CPU 0), nbdload
(CPU 1) keeps --conns connections (default 200) reading 4 KiB blocks at
random, and meanwhile a QMP client sends `query-block-exports` (a
command that walks the exports and their clients) as fast as answers
come back, for --seconds.  Rounds are interleaved.  Prints one RUN line
per server and round (p50 and p99 of the round trips, in ms, and the
IOPS the data path kept meanwhile) and the medians:

    bench/qmp-lat.py [--rounds 3] [--seconds 5] [--conns 200]
                     [--servers blockd,qemu-storage-daemon]

Environment: BLOCKD, NBDLOAD (default build/blockd, build/nbdload).
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BLOCKD = os.environ.get("BLOCKD", os.path.join(ROOT, "build", "blockd"))
NBDLOAD = os.environ.get("NBDLOAD", os.path.join(ROOT, "build", "nbdload"))


class Qmp:
    """The smallest QMP client that can time a command: one request in
    flight, events skipped."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buf = b""
        self.recv()                      # greeting
        self.cmd("qmp_capabilities")

    def recv(self):
        while b"\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("QMP connection closed")
            self.buf += data
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name):
        return self.call(name)

    def call(self, name, args=None):
        req = {"execute": name}
        if args is not None:
            req["arguments"] = args
        self.sock.sendall(json.dumps(req).encode() + b"\n")
        while True:
            msg = self.recv()
            if "event" in msg:
                continue
            if "error" in msg:
                raise RuntimeError("%s: %s" % (name, msg["error"]))
            return msg["return"]


def server_argv(name, img, nbd, qmp):
    common = ["--blockdev", "driver=file,node-name=f0,filename=" + img,
              "--blockdev", "driver=raw,node-name=d0,file=f0",
              "--nbd-server",
              "addr.type=unix,addr.path=%s,max-connections=0" % nbd,
              "--export", "type=nbd,id=e0,node-name=d0,name=,writable=off"]
    if name == "blockd":
        return [BLOCKD, "--qmp", "unix:" + qmp] + common
    if name == "qemu-storage-daemon":
        return (["qemu-storage-daemon", "--chardev",
                 "socket,id=m0,path=%s,server=on,wait=off" % qmp,
                 "--monitor", "chardev=m0"] + common)
    sys.exit("bench/qmp-lat.py: unknown server %s" % name)


def wait_for(paths, proc):
    for _ in range(400):
        if all(os.path.exists(p) for p in paths):
            return
        if proc.poll() is not None:
            sys.exit("bench/qmp-lat.py: the server exited (%d)"
                     % proc.returncode)
        time.sleep(0.05)
    sys.exit("bench/qmp-lat.py: the server did not start")


def one(name, d, img, args):
    nbd, qmp = os.path.join(d, "nbd.sock"), os.path.join(d, "qmp.sock")
    for p in (nbd, qmp):
        if os.path.exists(p):
            os.unlink(p)
    srv = subprocess.Popen(["taskset", "-c", "0"] +
                           server_argv(name, img, nbd, qmp),
                           stderr=subprocess.DEVNULL)
    load = None
    try:
        wait_for([nbd, qmp], srv)
        q = Qmp(qmp)
        load = subprocess.Popen(
            ["taskset", "-c", "1", NBDLOAD, "--unix", nbd, "--op", "read",
             "--pattern", "rand", "--bs", "4096", "--qd", "1",
             "--conns", str(args.conns), "--seconds", str(args.seconds),
             "--json"], stdout=subprocess.PIPE, text=True)
        # nbdload connects first; time only while every connection is up
        # (the export lists them), then until nbdload is done.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            exps = q.cmd("query-block-exports")
            clients = sum(len(e.get("connected-clients", []))
                          for e in exps)
            if name != "blockd" or clients >= args.conns:
                break
            time.sleep(0.01)
        lat = []
        while load.poll() is None:
            t0 = time.perf_counter()
            q.cmd("query-block-exports")
            lat.append((time.perf_counter() - t0) * 1000.0)
        out = json.loads(load.stdout.read())
        load = None
        lat.sort()
        if not lat:
            sys.exit("bench/qmp-lat.py: no QMP round trip completed")
        p50 = lat[len(lat) // 2]
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        return p50, p99, len(lat), out["iops"]
    finally:
        if load is not None:
            load.kill()
            load.wait()
        srv.terminate()
        srv.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--conns", type=int, default=200)
    ap.add_argument("--servers", default="blockd,qemu-storage-daemon")
    ap.add_argument("--size", type=int, default=256 << 20)
    args = ap.parse_args()
    servers = args.servers.split(",")
    res = {s: [] for s in servers}
    print("# bench/qmp-lat.py --rounds %d --seconds %g --conns %d "
          "(%s UTC); load %s" % (args.rounds, args.seconds, args.conns,
                                time.strftime("%F %H:%M", time.gmtime()),
                                open("/proc/loadavg").read().split()[0]))
    with tempfile.TemporaryDirectory(dir="/dev/shm") as d:
        img = os.path.join(d, "disk.img")
        with open(img, "wb") as f:
            f.write(os.urandom(args.size))
        for r in range(args.rounds):
            for i in range(len(servers)):
                name = servers[(i + r) % len(servers)]
                p50, p99, n, iops = one(name, d, img, args)
                res[name].append((p50, p99, iops))
                print("RUN workload=qmp-p99 transport=unix name=%s rep=%d "
                      "value=%.3f unit=ms p50_ms=%.3f count=%d iops=%.0f"
                      % (name, r + 1, p99, p50, n, iops), flush=True)
    print("%-22s %10s %10s %12s" % ("server", "p50 ms", "p99 ms",
                                   "data IOPS"))
    for name in servers:
        print("%-22s %10.3f %10.3f %12.0f" % (
            name, statistics.median(x[0] for x in res[name]),
            statistics.median(x[1] for x in res[name]),
            statistics.median(x[2] for x in res[name])))


if __name__ == "__main__":
    main()
