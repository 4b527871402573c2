#!/usr/bin/python3
"""Kernel NBD read speed in the VM: blockd (connections 1 and 4) against
qemu-nbd -c, in the same boot, on the same 256 MiB image in the VM's
tmpfs.  A measurement, not a test (TCG makes absolute figures
meaningless; the ratios are what counts):

    nice -n 10 tests/vm/speed.py [BUILDDIR]     # default: build

Each round reads the whole device with dd (bs=1M) twice, buffered after
dropping the caches and with iflag=direct, through each server.  The
rounds are interleaved (round r starts with a different server, so a
load change on the host falls on all of them) and the summary gives the
median time of each server and mode and its ratio to qemu-nbd's median,
plus the median of the per-round ratios.  ROUNDS=N (default 3),
TIMEOUT=seconds (default 3600).

The host's load average is sampled every 10 s while the VM runs and
printed (min/median/max): the machine is shared, and TCG's speed follows
the load.  For each dd the device's /sys/block/nbdN/stat gives the
requests the kernel sent and their mean size (what to compare when one
server is slower in the direct mode), and the queue limits are printed
once per device.
"""
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vm  # noqa: E402

NAMES = ("qemu-nbd", "blockd-1", "blockd-4")
DEVS = {"qemu-nbd": "nbd1", "blockd-1": "nbd2", "blockd-4": "nbd3"}

SCRIPT = r"""
export PATH=@BINDIR@:$PATH
now() { cut -d' ' -f1 /proc/uptime; }
dd if=/dev/zero of=/tmp/big.img bs=1M count=256 2>/dev/null
# Make it data, not zeros (no server may take a shortcut).
dd if=/dev/urandom of=/tmp/big.img bs=1M count=4 conv=notrunc 2>/dev/null
mkdir -p /var/lock
Q=/tmp/qmp.sock
blockd --qmp unix:$Q \
    --blockdev driver=file,node-name=f0,filename=/tmp/big.img \
    --blockdev driver=raw,node-name=r0,file=f0 \
    --nbd-server addr.type=unix,addr.path=/tmp/nbd.sock \
    --export type=nbd,id=e0,node-name=r0 \
    --daemonize --pidfile /tmp/blockd.pid
blockctl -s $Q nbd-device-connect device=/dev/nbd2 export=e0 >/dev/null
blockctl -s $Q nbd-device-connect device=/dev/nbd3 export=e0 connections=4 >/dev/null
qemu-nbd -c /dev/nbd1 -f raw -r /tmp/big.img
for n in 1 2 3; do
    q=/sys/block/nbd$n/queue
    echo "QUEUE nbd$n max_sectors_kb=$(cat $q/max_sectors_kb)" \
        "max_hw_sectors_kb=$(cat $q/max_hw_sectors_kb)" \
        "logical_block_size=$(cat $q/logical_block_size)" \
        "read_ahead_kb=$(cat $q/read_ahead_kb)" \
        "nr_requests=$(cat $q/nr_requests)"
done
# stat: reads completed is field 1, sectors read field 3
rstat() { set -- $(cat /sys/block/$1/stat); echo "$1 $3"; }
measure() {  # NAME DEV
    echo 3 > /proc/sys/vm/drop_caches
    s0=$(rstat $2)
    t0=$(now); dd if=/dev/$2 of=/dev/null bs=1M count=256 2>/dev/null; t1=$(now)
    s1=$(rstat $2)
    echo "SPEED $1 buffered $t0 $t1 $s0 $s1"
    s0=$(rstat $2)
    t0=$(now); dd if=/dev/$2 of=/dev/null bs=1M count=256 iflag=direct 2>/dev/null; t1=$(now)
    s1=$(rstat $2)
    echo "SPEED $1 direct $t0 $t1 $s0 $s1"
}
for round in $(seq 0 $((@ROUNDS@ - 1))); do
    case $((round % 3)) in
    0) order="qemu-nbd:nbd1 blockd-1:nbd2 blockd-4:nbd3" ;;
    1) order="blockd-1:nbd2 blockd-4:nbd3 qemu-nbd:nbd1" ;;
    2) order="blockd-4:nbd3 qemu-nbd:nbd1 blockd-1:nbd2" ;;
    esac
    echo "ROUND $round $order"
    for x in $order; do measure ${x%%:*} ${x##*:}; done
done
qemu-nbd -d /dev/nbd1 >/dev/null
blockctl -s $Q quit >/dev/null
"""


class LoadSampler(threading.Thread):
    """The host's 1-minute load average every `every` seconds."""

    def __init__(self, every=10.0):
        super().__init__(daemon=True)
        self.every = every
        self.samples = []
        self.stop = threading.Event()

    def sample(self):
        with open("/proc/loadavg") as f:
            self.samples.append(float(f.read().split()[0]))

    def run(self):
        self.sample()
        while not self.stop.wait(self.every):
            self.sample()


def parse(lines):
    """{(name, mode): [(seconds, requests, mean request KiB), ...]} in
    round order, and the QUEUE lines."""
    runs, queues = {}, []
    for ln in lines:
        m = re.match(r"SPEED (\S+) (\S+) ([\d.]+) ([\d.]+) (\d+) (\d+)"
                     r" (\d+) (\d+)", ln)
        if m:
            t = float(m.group(4)) - float(m.group(3))
            ios = int(m.group(7)) - int(m.group(5))
            sect = int(m.group(8)) - int(m.group(6))
            kib = sect * 512 / 1024 / ios if ios else 0.0
            runs.setdefault((m.group(1), m.group(2)), []).append(
                (t, ios, kib))
        elif ln.startswith("QUEUE "):
            queues.append(ln)
    return runs, queues


def report(runs, queues, load, secs):
    print("VM run: %.0f s; host load average (1 min) while it ran: "
          "min %.1f, median %.1f, max %.1f (%d samples)"
          % (secs, min(load), statistics.median(load), max(load),
             len(load)))
    for q in queues:
        print(q)
    print("%-9s %-8s %-24s %8s %7s %9s %8s %9s"
          % ("server", "mode", "seconds per round", "median", "MiB/s",
             "ratio", "rnd-med", "req KiB"))
    for mode in ("buffered", "direct"):
        qn = [t for t, _, _ in runs.get(("qemu-nbd", mode), [])]
        for name in NAMES:
            r = runs.get((name, mode))
            if not r:
                continue
            ts = [t for t, _, _ in r]
            med = statistics.median(ts)
            ratio = statistics.median(qn) / med if qn else 0.0
            # per round: qemu-nbd's time / this one's, then the median
            per = [a / b for a, b in zip(qn, ts) if b > 0]
            kib = statistics.median([k for _, _, k in r])
            print("%-9s %-8s %-24s %8.2f %7.2f %8.2fx %7.2fx %9.0f"
                  % (name, mode, " ".join("%.1f" % t for t in ts), med,
                     256 / med, ratio,
                     statistics.median(per) if per else 0.0, kib))
    print("ratio: qemu-nbd's median time / this median (>1: faster than "
          "qemu-nbd); rnd-med: median of the per-round ratios; req KiB: "
          "mean size of the reads the kernel sent")


def main():
    build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
    rounds = int(os.environ.get("ROUNDS", "3"))
    cache = vm.fetch()
    d = tempfile.mkdtemp(prefix="kernel-speed-")
    sampler = LoadSampler()
    try:
        initrd = os.path.join(d, "initrd.img")
        progs = [os.path.join(build, "blockd"),
                 os.path.join(build, "blockctl"), shutil.which("qemu-nbd")]
        vm.build_initramfs(cache, initrd, programs=progs,
                           modules=["nbd"],
                           init_script=SCRIPT.replace("@BINDIR@", build)
                           .replace("@ROUNDS@", str(rounds)))
        sampler.start()
        start = time.monotonic()
        try:
            lines, secs = vm.run(cache, initrd, timeout=int(
                os.environ.get("TIMEOUT", "3600")), mem="1024M")
        except TimeoutError as e:
            # What finished in time is still worth printing.
            print("VM timed out; partial results")
            lines, secs = str(e).splitlines(), time.monotonic() - start
    finally:
        sampler.stop.set()
        shutil.rmtree(d, ignore_errors=True)
    runs, queues = parse(lines)
    if not runs:
        print("\n".join(lines[-40:]))
        sys.exit("no SPEED lines")
    report(runs, queues, sampler.samples or [0.0], secs)


if __name__ == "__main__":
    main()
