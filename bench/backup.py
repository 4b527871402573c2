#!/usr/bin/python3
"""bench/backup.py - a full blockdev-backup of a raw image to a raw
target, blockd against qemu-storage-daemon doing the same, in
interleaved rounds; prints each round, the medians and blockd's ratios
(> 1: blockd better).

    bench/backup.py [--size BYTES] [--rounds N] [--dir DIR]

The source (default 1 GiB) is filled once with random data, so every
byte is copied; each round starts a fresh daemon (a unix QMP socket),
adds the source and an empty sparse target with blockdev-add (file +
raw, cache.direct=off), runs blockdev-backup sync=full and times it
from the command to BLOCK_JOB_COMPLETED; the daemon's CPU time (user +
system, /proc/PID/stat) is counted over the job too; the target is
compared with the source after each round.  Environment: BLOCKD (default build/blockd), QSD (default
qemu-storage-daemon).  The machine should be quiet: run it under no
other load.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BLOCKD = os.environ.get("BLOCKD", os.path.join(os.path.dirname(HERE),
                                               "build", "blockd"))
QSD = os.environ.get("QSD", shutil.which("qemu-storage-daemon") or
                     "/usr/bin/qemu-storage-daemon")
CLK = os.sysconf("SC_CLK_TCK")


class Qmp:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.f = self.s.makefile("rwb")
        self.events = []
        json.loads(self.f.readline())            # greeting
        self.cmd("qmp_capabilities")

    def _read(self):
        line = self.f.readline()
        if not line:
            raise EOFError("QMP connection closed")
        return json.loads(line)

    def cmd(self, name, **args):
        self.f.write(json.dumps({"execute": name,
                                 "arguments": args}).encode() + b"\n")
        self.f.flush()
        while True:
            m = self._read()
            if "event" in m:
                self.events.append(m)
            elif "error" in m:
                raise RuntimeError("%s: %s" % (name, m["error"]))
            else:
                return m["return"]

    def event(self, name):
        while True:
            for i, e in enumerate(self.events):
                if e["event"] == name:
                    return self.events.pop(i)
            self.events.append(self._read())


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def one_round(prog, src, tgt_dir, size):
    sockdir = tempfile.mkdtemp(prefix="bk-", dir="/tmp")
    sock = os.path.join(sockdir, "qmp.sock")
    tgt = os.path.join(tgt_dir, "tgt.raw")
    with open(tgt, "wb") as f:
        f.truncate(size)
    p = subprocess.Popen([prog, "--chardev",
                          "socket,id=m,path=%s,server=on,wait=off" % sock,
                          "--monitor", "chardev=m"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(sock):
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("%s did not start" % prog)
            time.sleep(0.01)
        q = Qmp(sock)
        for name, path in (("src", src), ("tgt", tgt)):
            q.cmd("blockdev-add", driver="raw", **{"node-name": name},
                  file={"driver": "file", "filename": path})
        cpu0, t0 = cpu_seconds(p.pid), time.monotonic()
        q.cmd("blockdev-backup", **{"job-id": "j"}, device="src",
              target="tgt", sync="full")
        ev = q.event("BLOCK_JOB_COMPLETED")
        wall, cpu = time.monotonic() - t0, cpu_seconds(p.pid) - cpu0
        if "error" in ev["data"]:
            raise RuntimeError("%s: backup failed: %s" % (prog, ev["data"]))
        q.cmd("quit")
        p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        shutil.rmtree(sockdir, ignore_errors=True)
    if not filecmp(src, tgt):
        raise RuntimeError("%s: the target differs from the source" % prog)
    os.unlink(tgt)
    return wall, cpu


def filecmp(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 22), fb.read(1 << 22)
            if x != y:
                return False
            if not x:
                return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=1 << 30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default="/var/tmp")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="blockd-backup-bench-", dir=a.dir)
    try:
        src = os.path.join(work, "src.raw")
        with open(src, "wb") as f:
            left = a.size
            while left > 0:
                n = min(left, 1 << 24)
                f.write(os.urandom(n))
                left -= n
        res = {"blockd": [], "qsd": []}
        for r in range(a.rounds):
            order = [("blockd", BLOCKD), ("qsd", QSD)]
            if r % 2:
                order.reverse()
            for name, prog in order:
                wall, cpu = one_round(prog, src, work, a.size)
                res[name].append((wall, cpu))
                print("round %d %-6s %.3f s wall %.3f s cpu  %.1f MiB/s"
                      % (r, name, wall, cpu, a.size / wall / (1 << 20)),
                      flush=True)
        med = {n: (statistics.median(w for w, _ in v),
                   statistics.median(c for _, c in v))
               for n, v in res.items()}
        for n, (w, c) in med.items():
            print("median %-6s %.3f s wall %.3f s cpu" % (n, w, c))
        print("ratio qsd/blockd: wall %.2fx  cpu %.2fx (> 1: blockd better)"
              % (med["qsd"][0] / med["blockd"][0],
                 med["qsd"][1] / max(med["blockd"][1], 1e-9)))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
