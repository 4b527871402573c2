#!/usr/bin/python3
"""bench/mirror.py - blockdev-mirror of one image, blockd against
qemu-storage-daemon doing the same over its QMP, in interleaved rounds.

    bench/mirror.py [--size 1G] [--rounds 3] [--dir DIR] [--fmt raw|qcow2]
                    [--export-load]

Each round starts a fresh daemon (blockd, then qemu-storage-daemon, ...)
with a QMP socket, adds the source image (random data, written once)
and an empty target of the same size as nodes, runs blockdev-mirror
sync=full, waits for BLOCK_JOB_READY, sends job-complete and waits for
BLOCK_JOB_COMPLETED.  The time from blockdev-mirror to the end is the
round's result; the daemon's CPU time (user + system, from /proc) too.
Prints each round, the medians and the ratios qsd / blockd (> 1: blockd
faster or cheaper).  Environment: BLOCKD (default build/blockd), QSD
(default qemu-storage-daemon).

Each round also times the floor: the bench itself copying the source
file into a fresh one with copy_file_range(2), 8 MiB at a time, each
piece's writeback started at once (sync_file_range), then a flush
(fdatasync): what the kernel and the storage need for this copy with no
daemon at all.  qsd's time over the floor is the most any server could
be ahead of qemu-storage-daemon on this storage.

--export-load also exports the source over NBD (a unix socket) and
reads it sequentially in 1 MiB requests with libnbd: for 2 s before
the job (idle) and while the job runs; it prints the export's read
throughput during the job as a fraction of the idle one (the issue's
target: within 20%, a fraction >= 0.8).  The mirror times then include
the competition with that reader.
"""
import argparse
import ctypes
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BLOCKD = os.environ.get("BLOCKD", os.path.join(ROOT, "build", "blockd"))
QSD = os.environ.get("QSD", shutil.which("qemu-storage-daemon") or
                     "qemu-storage-daemon")


LIBC = ctypes.CDLL(None, use_errno=True)
SYNC_FILE_RANGE_WRITE = 2


def parse_size(s):
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    if s[-1].upper() in units:
        return int(s[:-1]) * units[s[-1].upper()]
    return int(s)


class Qmp:
    def __init__(self, path, timeout=60.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self.f = self.sock.makefile("rw")
        self.events = []
        json.loads(self.f.readline())           # greeting
        self.cmd("qmp_capabilities")

    def cmd(self, command, **args):
        self.f.write(json.dumps({"execute": command, "arguments": args}) +
                     "\n")
        self.f.flush()
        while True:
            msg = json.loads(self.f.readline())
            if "event" in msg:
                self.events.append(msg)
            elif "error" in msg:
                raise RuntimeError("%s: %s" % (command, msg["error"]))
            elif "return" in msg:
                return msg["return"]

    def event(self, name, timeout=3600.0):
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev["event"] == name:
                    return self.events.pop(i)
            if time.monotonic() > deadline:
                raise TimeoutError(name)
            line = self.f.readline()
            if not line:
                raise RuntimeError("daemon closed QMP waiting for " + name)
            msg = json.loads(line)
            if "event" in msg:
                self.events.append(msg)

    def close(self):
        self.f.close()
        self.sock.close()


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Reader:
    """Sequential 1 MiB reads of an NBD export until stopped."""

    def __init__(self, uri, size):
        import nbd
        self.h = nbd.NBD()
        self.h.connect_uri(uri)
        self.size = size
        self.bytes = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        off = 0
        while not self.stop.is_set():
            self.h.pread(1 << 20, off)
            self.bytes += 1 << 20
            off = (off + (1 << 20)) % self.size

    def rate(self, secs=None, until=None):
        """MiB/s over secs seconds, or until until() returns."""
        b0, t0 = self.bytes, time.monotonic()
        if not self.thread.is_alive():
            self.thread.start()
        if secs is not None:
            time.sleep(secs)
        else:
            until()
        return (self.bytes - b0) / (time.monotonic() - t0) / (1 << 20)

    def close(self):
        self.stop.set()
        self.thread.join(30)
        self.h.shutdown()


def one_round(daemon, workdir, src, fmt, size, export_load=False):
    sock = os.path.join(workdir, "qmp-%s.sock" % daemon)
    dst = os.path.join(workdir, "dst." + fmt)
    if os.path.exists(dst):
        os.unlink(dst)
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, dst, str(size)],
                   check=True)
    monitor = ["--chardev", "socket,id=m0,path=%s,server=on,wait=off" % sock,
               "--monitor", "chardev=m0"]
    prog = BLOCKD if daemon == "blockd" else QSD
    proc = subprocess.Popen([prog] + monitor, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        q = Qmp(sock)
        for name, path in (("src", src), ("dst", dst)):
            q.cmd("blockdev-add", **{
                "driver": fmt, "node-name": name,
                "file": {"driver": "file", "filename": path}})
        reader = idle = busy = None
        if export_load:
            nsock = os.path.join(workdir, "nbd-%s.sock" % daemon)
            q.cmd("nbd-server-start",
                  addr={"type": "unix", "data": {"path": nsock}})
            q.cmd("block-export-add", **{"type": "nbd", "id": "e0",
                                         "node-name": "src", "name": "e0"})
            reader = Reader("nbd+unix:///e0?socket=" + nsock, size)
            idle = reader.rate(secs=2.0)
        cpu0 = cpu_seconds(proc.pid)
        t0 = time.monotonic()
        q.cmd("blockdev-mirror", **{"job-id": "m", "device": "src",
                                    "target": "dst", "sync": "full"})
        result = {}

        def job():
            q.event("BLOCK_JOB_READY")
            q.cmd("job-complete", id="m")
            result["ev"] = q.event("BLOCK_JOB_COMPLETED")

        if reader is not None:
            busy = reader.rate(until=job)
            reader.close()
        else:
            job()
        ev = result["ev"]
        secs = time.monotonic() - t0
        cpu = cpu_seconds(proc.pid) - cpu0
        if "error" in ev["data"]:
            raise RuntimeError("%s: %s" % (daemon, ev["data"]["error"]))
        q.close()
    finally:
        proc.terminate()
        proc.wait(30)
    subprocess.run(["qemu-img", "compare", "-q", "-f", fmt, "-F", fmt,
                    src, dst], check=True)
    return secs, cpu, idle, busy


def floor_round(workdir, src):
    """The kernel alone: copy src into a fresh file and flush it."""
    dst = os.path.join(workdir, "floor.img")
    if os.path.exists(dst):
        os.unlink(dst)
    t0 = time.monotonic()
    fi = os.open(src, os.O_RDONLY)
    fo = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        left = os.fstat(fi).st_size
        while left > 0:
            off = os.lseek(fo, 0, os.SEEK_CUR)
            n = os.copy_file_range(fi, fo, min(left, 8 << 20))
            if n <= 0:
                raise RuntimeError("copy_file_range returned %d" % n)
            LIBC.sync_file_range(fo, ctypes.c_int64(off), ctypes.c_int64(n),
                                 SYNC_FILE_RANGE_WRITE)
            left -= n
        os.fdatasync(fo)
    finally:
        os.close(fi)
        os.close(fo)
    secs = time.monotonic() - t0
    os.unlink(dst)
    return secs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="1G")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=None,
                    help="where the images go (default: a temporary "
                    "directory under /var/tmp)")
    ap.add_argument("--fmt", default="raw", choices=("raw", "qcow2"))
    ap.add_argument("--export-load", action="store_true")
    a = ap.parse_args()
    size = parse_size(a.size)
    workdir = tempfile.mkdtemp(prefix="bench-mirror-", dir=a.dir or
                               "/var/tmp")
    try:
        raw = os.path.join(workdir, "src.raw")
        with open(raw, "wb") as f:
            left = size
            while left > 0:
                n = min(left, 1 << 24)
                f.write(os.urandom(n))
                left -= n
        src = raw
        if a.fmt == "qcow2":
            src = os.path.join(workdir, "src.qcow2")
            subprocess.run(["qemu-img", "convert", "-O", "qcow2", raw, src],
                           check=True)
            os.unlink(raw)
        res = {"blockd": [], "qsd": []}
        loads = {}
        floors = []
        for r in range(a.rounds):
            floors.append(floor_round(workdir, src))
            print("round %d floor  %8.3f s  (copy_file_range, sync_file_range, "
                  "fdatasync: no daemon)" % (r + 1, floors[-1]), flush=True)
            for daemon in ("blockd", "qsd"):
                secs, cpu, idle, busy = one_round(daemon, workdir, src,
                                                  a.fmt, size,
                                                  a.export_load)
                res[daemon].append((secs, cpu))
                line = "round %d %-6s %8.3f s  %7.3f s CPU  %8.1f MiB/s" % (
                    r + 1, daemon, secs, cpu, size / secs / (1 << 20))
                if idle is not None:
                    line += ("  export %7.1f MiB/s idle, %7.1f during "
                             "(%.2f)" % (idle, busy, busy / idle))
                    loads.setdefault(daemon, []).append(busy / idle)
                print(line, flush=True)
        med = {d: (statistics.median(s for s, _ in v),
                   statistics.median(c for _, c in v))
               for d, v in res.items()}
        for d, (s, c) in med.items():
            print("median %-6s %8.3f s  %7.3f s CPU" % (d, s, c))
        print("mirror %s %s: time ratio qsd/blockd %.2fx, CPU ratio "
              "qsd/blockd %.2fx" %
              (a.size, a.fmt, med["qsd"][0] / med["blockd"][0],
               med["qsd"][1] / max(med["blockd"][1], 1e-6)))
        floor = statistics.median(floors)
        print("floor %s %s: %.3f s; qsd / floor %.2fx, blockd / floor "
              "%.2fx (the most any server could beat qsd by here: "
              "%.2fx)" % (a.size, a.fmt, floor, med["qsd"][0] / floor,
                          med["blockd"][0] / floor, med["qsd"][0] / floor))
        for d, v in loads.items():
            print("export on the source during the job, %s: %.2f of its "
                  "idle throughput (median)" % (d, statistics.median(v)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
