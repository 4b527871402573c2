#!/usr/bin/python3
"""Kernel NBD read speed in the VM: blockd (connections 1 and 4) against
qemu-nbd -c, in the same boot, on the same 256 MiB image in the VM's
tmpfs.  A measurement, not a test (TCG makes absolute figures
meaningless; the ratios are what counts):

    nice -n 10 tests/vm/speed.py [BUILDDIR]     # default: build

Each round reads the whole device with dd (bs=1M) twice, buffered after
dropping the caches and with iflag=direct, through each server; three
rounds (ROUNDS=N to change), the best time of each kept.
"""
import os
import re
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vm  # noqa: E402

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
measure() {  # NAME DEV
    echo 3 > /proc/sys/vm/drop_caches
    t0=$(now); dd if=$2 of=/dev/null bs=1M count=256 2>/dev/null; t1=$(now)
    echo "SPEED $1 buffered $t0 $t1"
    t0=$(now); dd if=$2 of=/dev/null bs=1M count=256 iflag=direct 2>/dev/null; t1=$(now)
    echo "SPEED $1 direct $t0 $t1"
}
for round in $(seq @ROUNDS@); do
    measure qemu-nbd /dev/nbd1
    measure blockd-1 /dev/nbd2
    measure blockd-4 /dev/nbd3
done
qemu-nbd -d /dev/nbd1 >/dev/null
blockctl -s $Q quit >/dev/null
"""


def main():
    build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
    rounds = int(os.environ.get("ROUNDS", "3"))
    cache = vm.fetch()
    d = tempfile.mkdtemp(prefix="kernel-speed-")
    try:
        initrd = os.path.join(d, "initrd.img")
        progs = [os.path.join(build, "blockd"),
                 os.path.join(build, "blockctl"), shutil.which("qemu-nbd")]
        vm.build_initramfs(cache, initrd, programs=progs,
                           modules=["nbd"],
                           init_script=SCRIPT.replace("@BINDIR@", build)
                           .replace("@ROUNDS@", str(rounds)))
        try:
            lines, secs = vm.run(cache, initrd, timeout=int(
                os.environ.get("TIMEOUT", "1800")), mem="1024M")
        except TimeoutError as e:
            # What finished in time is still worth printing.
            print("VM timed out; partial results")
            lines, secs = str(e).splitlines(), 0.0
    finally:
        shutil.rmtree(d, ignore_errors=True)
    best = {}
    for ln in lines:
        m = re.match(r"SPEED (\S+) (\S+) ([\d.]+) ([\d.]+)", ln)
        if m:
            key = (m.group(1), m.group(2))
            t = float(m.group(4)) - float(m.group(3))
            best[key] = min(best.get(key, t), t)
    if not best:
        print("\n".join(lines[-40:]))
        sys.exit("no SPEED lines")
    print("VM run: %.0f s" % secs)
    for mode in ("buffered", "direct"):
        q = best.get(("qemu-nbd", mode))
        for name in ("qemu-nbd", "blockd-1", "blockd-4"):
            t = best.get((name, mode))
            if t is None:
                continue
            print("%-9s %-8s %6.2f s  %7.1f MiB/s  %.2fx qemu-nbd"
                  % (name, mode, t, 256 / t, q / t if q else 0))


if __name__ == "__main__":
    main()
