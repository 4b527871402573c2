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
# qemu-storage-daemon, > 1 means blockd did better).
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
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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

stop() {
  kill "$SRV_PID" 2>/dev/null || true
  wait "$SRV_PID" 2>/dev/null || true
  while kill -0 "$SRV_PID" 2>/dev/null; do sleep 0.05; done
  SRV_PID=""
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
SRV=(blockd qemu-storage-daemon)
for round in $(seq "$ROUNDS"); do
  for i in 0 1; do
    name=${SRV[$(( (i + round - 1) % 2 ))]}
    for w in $WORKLOADS; do
      start "$name"
      # shellcheck disable=SC2046
      j=$(taskset -c 1 "$NBDLOAD" --unix "$SOCK" $(args_for "$w") \
            --seconds "$SECONDS_PER_RUN" --server-pid "$SRV_PID" --json) ||
        { echo "bench/rbd.sh: nbdload failed against $name ($w)" >&2; stop; continue; }
      stop
      /usr/bin/python3 - "$w" "$name" "$round" "$j" >> "$RAW" <<'PY'
import json, sys
w, name, rep, j = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
seq = w.startswith("seq")
rate, unit = (j["mib_s"], "MiB/s") if seq else (j["iops"], "IOPS")
cpu, cunit = ((j["server_s_per_gib"], "s") if seq
              else (j["server_us_per_op"], "us"))
common = "transport=rbd name=%s rep=%s" % (name, rep)
print("RUN workload=%s %s value=%.1f unit=%s" % (w, common, rate, unit))
print("RUN workload=%s-cpu %s value=%.4f unit=%s" % (w, common, cpu, cunit))
print("RUN workload=%s-p99 %s value=%d unit=us" % (w, common, j["p99_us"]))
PY
      tail -3 "$RAW" | cut -c1-120
    done
  done
done
rbd rm "rbd/$IMAGE" > /dev/null 2>&1 || true
/usr/bin/python3 "$HERE/ratios.py" "$RAW" | tee "$RESULTS/ratios.txt"
