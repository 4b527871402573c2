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
                     [--qmp-cpu any|0|1] [--qmp-rt] [--qmp-slice US]
                     [--server-slice US] [--sched]

Servers: blockd, qemu-storage-daemon, and blockd-iothread (the export
on an iothread, the main loop left to QMP and handshakes).
qemu-storage-daemon-iothread is accepted but qemu-storage-daemon 7.2
aborts when an NBD client leaves an export on an iothread
(nbd_blockdev_client_closed asserts it runs in the main thread).
--qmp-cpu pins the QMP client (default: unpinned, as before), --qmp-rt
makes it SCHED_FIFO so the figure is the server's, not the measuring
client's wait for a CPU.

--qmp-slice US asks the kernel for a scheduler slice of US microseconds
(sched_setattr's sched_runtime on a SCHED_OTHER thread, Linux 6.12 and
later, EEVDF) for the QMP client thread: woken by a reply, it gets an
earlier deadline and preempts whatever runs on its CPU sooner.  It needs
no privilege and changes nothing in the server; every server of the run
is measured with the same client.  Default 0: the kernel's slice.
--server-slice US does the same, from this script, to the server's main
thread (the one serving QMP; threads it starts later inherit it), for
every server alike: an experiment on what a server asking for a short
slice itself would gain.

--sched adds one SCHED line per run: how long, in the slowest 1% of
round trips, the QMP client and the server's main thread (the one that
serves QMP) waited for a CPU (Linux schedstat), and the p50/p99 without
those waits.

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


def set_slice(us, tid=0):
    """sched_setattr(tid, SCHED_OTHER with sched_runtime = us): a custom
    EEVDF slice (100 us to 100 ms), the nice value kept."""
    import ctypes
    import platform
    import struct
    nr = {"x86_64": 314, "aarch64": 274}.get(platform.machine())
    if nr is None:
        sys.exit("bench/qmp-lat.py: --qmp-slice: sched_setattr's number "
                 "on %s is not known here" % platform.machine())
    libc = ctypes.CDLL(None, use_errno=True)
    # struct sched_attr, SCHED_ATTR_SIZE_VER1 (56 bytes)
    attr = ctypes.create_string_buffer(struct.pack(
        "IIQiIQQQII", 56, os.SCHED_OTHER, 0,
        os.getpriority(os.PRIO_PROCESS, 0), 0, us * 1000, 0, 0, 0, 0))
    if libc.syscall(nr, tid, attr, 0) != 0:
        e = ctypes.get_errno()
        sys.exit("bench/qmp-lat.py: sched_setattr: %s" % os.strerror(e))


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
    # NAME-iothread: the export's connections on an iothread (its own
    # loop and thread), the main loop left to QMP and handshakes.
    io = name.endswith("-iothread")
    common = ["--blockdev", "driver=file,node-name=f0,filename=" + img,
              "--blockdev", "driver=raw,node-name=d0,file=f0",
              "--nbd-server",
              "addr.type=unix,addr.path=%s,max-connections=0" % nbd,
              "--export", "type=nbd,id=e0,node-name=d0,name=,writable=off"
              + (",iothread=io0" if io else "")]
    if io:
        common = ["--object", "iothread,id=io0"] + common
    if name in ("blockd", "blockd-iothread"):
        return [BLOCKD, "--qmp", "unix:" + qmp] + common
    if name in ("qemu-storage-daemon", "qemu-storage-daemon-iothread"):
        return (["qemu-storage-daemon", "--chardev",
                 "socket,id=m0,path=%s,server=on,wait=off" % qmp,
                 "--monitor", "chardev=m0"] + common)
    sys.exit("bench/qmp-lat.py: unknown server %s" % name)


class Sched:
    """--sched: split each round trip with the kernel's schedstat (CPU
    time, time spent runnable but waiting for a CPU) of the QMP client
    thread and of the server's main thread (its QMP loop), read just
    before and after it, to tell a busy server loop from a thread not
    scheduled.
    server_cpu is the loop's work (data path included) during the round
    trip, client_wait and server_wait the time each was runnable but
    not running."""

    def __init__(self, pid):
        self.fds = [os.open("/proc/thread-self/schedstat", os.O_RDONLY),
                    os.open("/proc/%d/task/%d/schedstat" % (pid, pid),
                            os.O_RDONLY)]
        self.rows = []

    def sample(self):
        # cpu ns, run-queue wait ns for the client, then the server
        out = []
        for fd in self.fds:
            f = os.pread(fd, 128, 0).split()
            out += [int(f[0]), int(f[1])]
        return out

    def record(self, ms, a, b):
        d = [(y - x) / 1e6 for x, y in zip(a, b)]
        self.rows.append((ms, d[1], d[2], d[3]))

    def report(self, name):
        for fd in self.fds:
            os.close(fd)
        rows = sorted(self.rows)
        slow = rows[int(len(rows) * 0.99):]
        if not slow:
            return
        med = lambda i: statistics.median(r[i] for r in slow)
        waited = sum(1 for r in slow if r[1] + r[3] >= 0.5 * r[0])
        # What the round trips would be without the run-queue waits of
        # either thread (they rarely overlap: one of the two is running).
        bare = sorted(max(0.0, r[0] - r[1] - r[3]) for r in rows)
        # The main thread's CPU in a round trip: the command's own work
        # and the loop's other work it waited behind (load-independent).
        cpu = sorted(r[2] for r in rows)
        pct = lambda v, q: v[min(len(v) - 1, int(len(v) * q))]
        print("SCHED name=%s slowest 1%%: %d round trips, %.2f..%.2f ms; "
              "medians: client_wait=%.2f server_wait=%.2f server_cpu=%.2f "
              "ms; %d mostly waiting for a CPU; without the waits p50=%.3f "
              "p99=%.3f ms; server_cpu per round trip p50=%.3f p99=%.3f ms"
              % (name, len(slow), slow[0][0], slow[-1][0], med(1), med(3),
                 med(2), waited, pct(bare, 0.5), pct(bare, 0.99),
                 pct(cpu, 0.5), pct(cpu, 0.99)),
              flush=True)


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
            if not name.startswith("blockd") or clients >= args.conns:
                break
            time.sleep(0.01)
        if args.qmp_cpu != "any":
            os.sched_setaffinity(0, {int(args.qmp_cpu)})
        if args.qmp_rt:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        elif args.qmp_slice:
            set_slice(args.qmp_slice)
        if args.server_slice:
            set_slice(args.server_slice, srv.pid)
        lat = []
        sched = Sched(srv.pid) if args.sched else None
        while load.poll() is None:
            if sched:
                s0 = sched.sample()
            t0 = time.perf_counter()
            q.cmd("query-block-exports")
            lat.append((time.perf_counter() - t0) * 1000.0)
            if sched:
                sched.record(lat[-1], s0, sched.sample())
        if sched:
            sched.report(name)
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
        os.sched_setaffinity(0, range(os.cpu_count()))
        if args.qmp_rt:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        if args.qmp_slice:
            set_slice(0)                 # back to the kernel's slice


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--conns", type=int, default=200)
    ap.add_argument("--servers", default="blockd,qemu-storage-daemon")
    ap.add_argument("--size", type=int, default=256 << 20)
    ap.add_argument("--qmp-cpu", default="any",
                    help="the CPU the QMP client runs on: 'any' (default, "
                    "unpinned), 1 (the load client's), 0 (the server's)")
    ap.add_argument("--qmp-rt", action="store_true",
                    help="run the QMP client as SCHED_FIFO 1 (needs "
                    "CAP_SYS_NICE), so that its own wake-ups do not wait "
                    "behind the load client's threads")
    ap.add_argument("--qmp-slice", type=int, default=0, metavar="US",
                    help="ask for a US microsecond scheduler slice for "
                    "the QMP client (sched_setattr, EEVDF custom slice; "
                    "the same for every server)")
    ap.add_argument("--server-slice", type=int, default=0, metavar="US",
                    help="the same for the server's main thread, set by "
                    "this script from outside (an experiment: what a "
                    "server asking for it itself would gain)")
    ap.add_argument("--sched", action="store_true",
                    help="split the slowest 1%% of round trips into run-"
                    "queue waits and server CPU (Linux schedstat)")
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
