"""Throughput probes shared by the isolation tests (test-isolation.py,
test-nbd-hung-upstream.py): clients reading in a loop, and blockd's CPU
time, so a phase is judged by bytes per CPU second of blockd (the
machine is shared: wall-clock rates move several times over between
two phases, and no test compares them)."""
import os
import threading
import time

import nbd

MIB = 1 << 20
# Reads above BLK_INLINE_MAX (128 KiB) go to the worker pool even on a
# node that never waits (null-co), as reads from a disk would.
READ = 256 * 1024


def cpu_seconds(pid):
    """User + system CPU time of a process, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_for(handles, seconds):
    """Every handle reads in a loop (one request in flight each, in its
    own thread) for `seconds`; total bytes read.  A request not done 30 s
    after the deadline ends that thread's count (starved)."""
    total = [0] * len(handles)
    deadline = time.monotonic() + seconds

    def run(i, h):
        buf = nbd.Buffer(READ)
        off = 0
        while time.monotonic() < deadline:
            c = h.aio_pread(buf, off)
            while not h.aio_command_completed(c):
                if time.monotonic() > deadline + 30:
                    return          # starved: this client made no progress
                h.poll(100)
            total[i] += READ
            off = (off + READ) % (64 * MIB)

    threads = [threading.Thread(target=run, args=(i, h))
               for i, h in enumerate(handles)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(total)


def measure(pid, handles, seconds, rounds=2):
    """(bytes, blockd's CPU seconds) of the read_for() round with the
    most bytes per CPU second: the best of a few, since a neighbour's
    burst of load can halve one round."""
    best = None
    for _ in range(rounds):
        c0 = cpu_seconds(pid)
        n = read_for(handles, seconds)
        r = (n, max(cpu_seconds(pid) - c0, 0.01))
        if best is None or r[0] / r[1] > best[0] / best[1]:
            best = r
    return best


def add_others(blockd, sock, n, size=64 * MIB):
    """n exports n0..n{n-1} of null-co nodes (zeroes, never waiting) on
    blockd's NBD server at unix socket sock, each with a connected
    libnbd handle; the handles."""
    handles = []
    for i in range(n):
        blockd.cmd("blockdev-add", {"driver": "null-co",
                                    "node-name": "n%d" % i,
                                    "size": size, "read-zeroes": True})
        blockd.cmd("block-export-add", {"type": "nbd", "id": "e%d" % i,
                                        "node-name": "n%d" % i,
                                        "name": "n%d" % i})
        h = nbd.NBD()
        h.connect_uri("nbd+unix:///n%d?socket=%s" % (i, sock))
        handles.append(h)
    return handles
