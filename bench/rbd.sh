#!/bin/bash
# bench/rbd.sh - blockd's rbd driver against QEMU's (qemu-storage-daemon
# with Debian's qemu-block-extra rbd module), both serving the same RBD
# image of a one-node Ceph cluster over NBD to bench/nbdload.
#
#   bench/rbd.sh [--rounds N] [--seconds S] [--size MiB] [--conf CEPH_CONF]
#                [--workloads LIST] [--results DIR]
#
# Without --conf it starts its own cluster (tests/integration/
# cephcluster.py: a monitor and a memstore OSD on 127.0.0.1, under
# nice -n 10) and stops it at the end.  The image (default 256 MiB) is
# filled once with rbd bench, so reads hit data.  Each server is started
# fresh for every run (rbd cache on, QEMU's default for both), on CPU 0,
# nbdload on CPU 1; the Ceph daemons float.  Workloads:
#   seqread    256 KiB reads, QD 8 on each of 2 connections
#   seqwrite   256 KiB writes, QD 8, 1 connection
#   randread   4 KiB random reads, QD 16
#   randwrite  4 KiB random writes, QD 16
# Output: RUN lines in DIR/raw.txt and bench/ratios.py's table (blockd /
# qemu-storage-daemon, > 1 means blockd did better); librbd's counters of
# each run in DIR/counters.txt (see after_run).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BLOCKD=${BLOCKD:-$ROOT/build/blockd}
NBDLOAD=${NBDLOAD:-$ROOT/build/nbdload}
ROUNDS=3
SECONDS_PER_RUN=4
SIZE_MIB=256
CONF=""
WORKLOADS="seqread seqwrite randread randwrite"
RESULTS=/tmp/blockd-bench/rbd-$(date +%F-%H%M%S)

while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --seconds) SECONDS_PER_RUN=$2; shift 2 ;;
    --size) SIZE_MIB=$2; shift 2 ;;
    --conf) CONF=$2; shift 2 ;;
    --workloads) WORKLOADS=${2//,/ }; shift 2 ;;
    --results) RESULTS=$2; shift 2 ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/rbd.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$BLOCKD" ] || { echo "no blockd at $BLOCKD (set BLOCKD=)" >&2; exit 1; }
[ -x "$NBDLOAD" ] || { echo "no nbdload at $NBDLOAD (set NBDLOAD=)" >&2; exit 1; }

mkdir -p "$RESULTS"
WORK=$(mktemp -d /tmp/blockd-rbd.XXXXXX)
SRV_PID=""
CLUSTER_PID=""
cleanup() {
  [ -n "$SRV_PID" ] && kill "$SRV_PID" 2>/dev/null && wait "$SRV_PID" 2>/dev/null
  if [ -n "$CLUSTER_PID" ]; then
    kill "$CLUSTER_PID" 2>/dev/null || true
    wait "$CLUSTER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

if [ -z "$CONF" ]; then
  # A cluster that lives until this script ends (SIGTERM stops it).
  mkdir -p "$WORK/ceph"
  /usr/bin/python3 - "$ROOT/tests/integration" "$WORK/ceph" \
      > "$WORK/cluster.out" 2>&1 <<'PY' &
import signal, sys
sys.path.insert(0, sys.argv[1])
from cephcluster import CephCluster
c = CephCluster(sys.argv[2], memstore_bytes=1536 << 20)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
try:
    c.start()
    print("up", c.conf, flush=True)
    signal.pause()
finally:
    c.stop()
PY
  CLUSTER_PID=$!
  for _ in $(seq 240); do grep -q '^up ' "$WORK/cluster.out" && break; sleep 0.5; done
  grep -q '^up ' "$WORK/cluster.out" ||
    { echo "bench/rbd.sh: the cluster did not start" >&2; cat "$WORK/cluster.out" >&2; exit 1; }
  CONF=$WORK/ceph/ceph.conf
fi
export CEPH_CONF=$CONF
IMAGE=bench-$$
rbd create --size "${SIZE_MIB}M" "rbd/$IMAGE"
rbd bench --io-type write --io-size 4M --io-total "${SIZE_MIB}M" \
  --io-pattern seq "rbd/$IMAGE" > /dev/null
SOCK=$WORK/nbd.sock
BLOCKDEV="driver=rbd,node-name=d0,pool=rbd,image=$IMAGE,conf=$CONF"

start() {
  rm -f "$SOCK"
  case "$1" in
    blockd) taskset -c 0 "$BLOCKD" --blockdev "$BLOCKDEV" \
              --nbd-server "addr.type=unix,addr.path=$SOCK" \
              --export type=nbd,id=e0,node-name=d0,name=,writable=on \
              2>>"$RESULTS/server.log" & ;;
    qemu-storage-daemon) taskset -c 0 qemu-storage-daemon \
              --blockdev "$BLOCKDEV" \
              --nbd-server "addr.type=unix,addr.path=$SOCK" \
              --export type=nbd,id=e0,node-name=d0,name=,writable=on \
              2>>"$RESULTS/server.log" & ;;
    *) echo "bench/rbd.sh: unknown server $1" >&2; exit 2 ;;
  esac
  SRV_PID=$!
  for _ in $(seq 600); do [ -S "$SOCK" ] && break; sleep 0.05; done
  [ -S "$SOCK" ] || { echo "bench/rbd.sh: $1 did not start" >&2; exit 1; }
}

args_for() {
  case "$1" in
    seqread) echo "--op read --pattern seq --bs 262144 --qd 8 --conns 2" ;;
    seqwrite) echo "--op write --pattern seq --bs 262144 --qd 8 --conns 1" ;;
    randread) echo "--op read --pattern rand --bs 4096 --qd 16" ;;
    randwrite) echo "--op write --pattern rand --bs 4096 --qd 16" ;;
    *) echo "bench/rbd.sh: unknown workload $1" >&2; exit 2 ;;
  esac
}

RAW=$RESULTS/raw.txt
{
  echo "# bench/rbd.sh --rounds $ROUNDS --seconds $SECONDS_PER_RUN --size $SIZE_MIB ($(date -u '+%F %H:%M') UTC, $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))"
  echo "# $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); one-node Ceph (memstore OSD) on 127.0.0.1; server CPU 0, nbdload CPU 1"
} > "$RAW"
# librbd's own counters of each server (its client admin socket, if the
# conf gives one: cephcluster.py's does), so both are compared on what
# librbd saw, not only on timings: writes, their mean latency inside
# librbd, the writes in flight there on average (latency sum / run
# time), OSD write ops and flushes.  One line per run in counters.txt.
ASOK=$(ceph-conf -c "$CONF" -n client.admin --show-config-value admin_socket \
         2>/dev/null || true)
after_run() {
  [ -n "$ASOK" ] && [ -S "$ASOK" ] || return 0
  ceph daemon "$ASOK" perf dump > "$RESULTS/perf-$1-$2-$3.json" 2>/dev/null ||
    return 0
  /usr/bin/python3 - "$1" "$2" "$3" "$SECONDS_PER_RUN" \
      "$RESULTS/perf-$1-$2-$3.json" >> "$RESULTS/counters.txt" <<'PY'
import json, sys
name, w, rep, secs, path = sys.argv[1:]
p = json.load(open(path))
rbd = next(v for k, v in p.items() if k.startswith("librbd-"))
o = p["objecter"]
ops, lat = (rbd["wr"], rbd["wr_latency"]) if "write" in w else \
    (rbd["rd"], rbd["rd_latency"])
print("COUNTERS workload=%s name=%s rep=%s librbd_ops=%d mean_ms=%.2f "
      "in_librbd=%.1f osd_ops=%d flush=%d" %
      (w, name, rep, ops, 1000 * lat["sum"] / max(1, lat["avgcount"]),
       lat["sum"] / float(secs), o["op_w"] if "write" in w else o["op_r"],
       rbd["flush"]))
PY
  tail -1 "$RESULTS/counters.txt"
}
SRV=(blockd qemu-storage-daemon)
# shellcheck source=bench/rounds.sh
. "$HERE/rounds.sh"
bench_rounds rbd
rbd rm "rbd/$IMAGE" > /dev/null 2>&1 || true
/usr/bin/python3 "$HERE/ratios.py" "$RAW" | tee "$RESULTS/ratios.txt"
