#!/usr/bin/python3
"""bench/idle-rss.py - what idle NBD connections cost blockd in memory.

Starts blockd (null-co, read-zeroes, over a unix socket), opens N idle
connections with libnbd (default 1000), lets each do one burst of large
reads and block status requests, waits until they have idled, and prints
blockd's VmRSS at each step:

    bench/idle-rss.py [--conns N] [--read BYTES] [--settle SECONDS]

Environment: BLOCKD (default build/blockd).  Needs python3-libnbd (run
it with /usr/bin/python3) and `ulimit -n` above N + 64.
"""
import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import nbd

HERE = os.path.dirname(os.path.abspath(__file__))
BLOCKD = os.environ.get("BLOCKD", os.path.join(HERE, "..", "build",
                                               "blockd"))


def vmrss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def mib(n):
    return "%.1f MiB" % (n / (1 << 20))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--conns", type=int, default=1000)
    ap.add_argument("--read", type=int, default=1 << 20,
                    help="bytes per read in the burst (default 1 MiB)")
    ap.add_argument("--settle", type=float, default=3.0,
                    help="seconds to idle before the last sample")
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.conns + 64
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
        if min(need, hard) < need:
            sys.exit("idle-rss: ulimit -n is %d, need %d" % (hard, need))
    tmp = tempfile.mkdtemp(prefix="blockd-idle-")
    sock = os.path.join(tmp, "nbd.sock")
    proc = subprocess.Popen(
        [BLOCKD,
         "--blockdev",
         "driver=null-co,node-name=n0,size=1073741824,read-zeroes=on",
         "--nbd-server", "addr.type=unix,addr.path=%s,max-connections=%d"
         % (sock, args.conns + 16),
         "--export", "type=nbd,id=e0,node-name=n0,name="],
        stdin=subprocess.DEVNULL)
    handles = []
    try:
        for _ in range(100):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        start = vmrss(proc.pid)
        t0 = time.monotonic()
        for _ in range(args.conns):
            h = nbd.NBD()
            h.add_meta_context("base:allocation")
            h.connect_unix(sock)
            handles.append(h)
        connected = vmrss(proc.pid)
        t1 = time.monotonic()
        buf = nbd.Buffer(args.read)
        for i, h in enumerate(handles):
            cookies = [h.aio_pread(buf, (i * args.read) % (1 << 30)),
                       h.aio_block_status(1 << 30, 0, lambda *a: 0)]
            while cookies:
                h.poll(-1)
                cookies = [c for c in cookies
                           if not h.aio_command_completed(c)]
        burst = vmrss(proc.pid)
        time.sleep(args.settle)
        idle = vmrss(proc.pid)
        print("idle-rss: %d connections (connect %.2fs, burst of %d-byte "
              "reads %.2fs)" % (args.conns, t1 - t0, args.read,
                                time.monotonic() - t1 - args.settle))
        print("  VmRSS at start           %s" % mib(start))
        print("  VmRSS connected, idle    %s  (+%s, %.1f KiB each)"
              % (mib(connected), mib(connected - start),
                 (connected - start) / 1024 / args.conns))
        print("  VmRSS right after burst  %s" % mib(burst))
        print("  VmRSS idle %.0fs after     %s  (+%s over start)"
              % (args.settle, mib(idle), mib(idle - start)))
    finally:
        for h in handles:
            h.shutdown()
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
