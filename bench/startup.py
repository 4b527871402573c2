#!/usr/bin/python3
"""bench/startup.py - start-up to listening of blockd-nbd (and qemu-nbd
beside it): the time `PROG --fork --pid-file P -t -f raw -k SOCK IMG`
takes to return, which both do only once the socket listens (and the
pid file is written).  Median and spread over --runs (default 20), and
the CPU time spent to get there (the parent's rusage plus the server's
threads' /proc schedstat run time): on a loaded machine the wall time
is mostly waiting for a core, the CPU time is not.

    bench/startup.py [--runs N] [--size 1G] [PROG ...]

PROG defaults to build/blockd-nbd and qemu-nbd.
"""
import argparse
import os
import signal
import statistics
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def once(prog, d, img):
    sock = os.path.join(d, "s.sock")
    pidf = os.path.join(d, "pid")
    t0 = time.perf_counter()
    p = subprocess.Popen([prog, "--fork", "--pid-file", pidf, "-t", "-f",
                          "raw", "-k", sock, img])
    _, status, ru = os.wait4(p.pid, 0)
    t = time.perf_counter() - t0
    p.returncode = status
    assert status == 0
    pid = int(open(pidf).read())
    cpu = ru.ru_utime + ru.ru_stime
    for task in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/schedstat" % (pid, task)) as f:
            cpu += int(f.read().split()[0]) / 1e9
    os.kill(pid, signal.SIGTERM)
    # The forked server is not our child: once it exits it stays a
    # zombie until whatever reaps orphans here gets to it (in some
    # containers nothing does), so a zombie counts as gone.
    while server_running(pid):
        time.sleep(0.005)
    return t, cpu


def server_running(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--size", default="1G")
    ap.add_argument("progs", nargs="*")
    a = ap.parse_args()
    progs = a.progs or [os.path.join(os.path.dirname(HERE), "build",
                                     "blockd-nbd"), "qemu-nbd"]
    with tempfile.TemporaryDirectory() as d:
        img = os.path.join(d, "img.raw")
        subprocess.run(["truncate", "-s", a.size, img], check=True)
        for prog in progs:
            once(prog, d, img)          # warm the page cache
            runs = [once(prog, d, img) for _ in range(a.runs)]
            ts = sorted(r[0] for r in runs)
            cpu = sorted(r[1] for r in runs)
            print("%-12s start-up to listening: median %.1f ms "
                  "(min %.1f, max %.1f), CPU median %.1f ms, %d runs" %
                  (os.path.basename(prog), statistics.median(ts) * 1e3,
                   ts[0] * 1e3, ts[-1] * 1e3,
                   statistics.median(cpu) * 1e3, a.runs))
        print("load average: %s" % open("/proc/loadavg").read().strip())


if __name__ == "__main__":
    main()
