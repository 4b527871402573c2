#!/bin/bash
# bench/qd1.sh - issue 16's two QD1 targets in one interleaved run:
# blockd's 4 KiB random reads at QD1 (bench/nbdload over a unix socket,
# server CPU per I/O, IOPS, p99) beside the transport's own ceiling
# (../shared/bench/tceil.c's NBD-shaped ping-pong, compiled here) and
# the server-side floor of each server shape (bench/qd1floor: the bare
# ping-pong, blockd's epoll shape, io_uring shapes).
#
#   bench/qd1.sh [--rounds N] [--seconds S] [--size BYTES] [--results DIR]
#
# BLOCKD= picks the binary (default build/blockd); BLOCKD_B= adds a
# second one to the same rounds (an A/B: "blockd-b" in the output).
# Every round runs each item once, in the same order, pinned as
# bench/load.sh pins (server CPU 0, client CPU 1); blockd starts fresh
# each round on an image of random data on /dev/shm (1 GiB unless
# --size); tceil.c comes from the shared harness (BENCH_HARNESS=).
# Prints the per-round lines, then medians and blockd's rate as a share
# of tceil's (paired by round: the target is >= 0.85).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BLOCKD=${BLOCKD:-$ROOT/build/blockd}
BLOCKD_B=${BLOCKD_B:-}
NBDLOAD=${NBDLOAD:-$ROOT/build/nbdload}
QD1FLOOR=${QD1FLOOR:-$ROOT/build/qd1floor}
HARNESS=${BENCH_HARNESS:-$(dirname "$ROOT")/shared/bench}
[ -d "$HARNESS" ] || HARNESS=$(dirname "$(dirname "$ROOT")")/shared/bench
TCEIL_SRC=$HARNESS/tceil.c
ROUNDS=5
SIZE=$((1024 * 1024 * 1024))
SECS=3
RESULTS=/tmp/blockd-bench/qd1-$(date +%F-%H%M%S)

while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --results) RESULTS=$2; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/qd1.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
for f in "$BLOCKD" "$NBDLOAD" "$QD1FLOOR"; do
  [ -x "$f" ] || { echo "bench/qd1.sh: no $f" >&2; exit 1; }
done
[ -f "$TCEIL_SRC" ] || { echo "bench/qd1.sh: no $TCEIL_SRC" >&2; exit 1; }

mkdir -p "$RESULTS"
WORK=$(mktemp -d /dev/shm/blockd-qd1.XXXXXX)
SRV_PID=""
cleanup() {
  if [ -n "$SRV_PID" ]; then
    kill "$SRV_PID" 2>/dev/null || true
    wait "$SRV_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
IMG=$WORK/disk.img
SOCK=$WORK/nbd.sock
head -c "$SIZE" /dev/urandom > "$IMG"
TCEIL=$WORK/tceil
gcc -O2 -o "$TCEIL" "$TCEIL_SRC"

RAW=$RESULTS/raw.txt
echo "# bench/qd1.sh --rounds $ROUNDS --seconds $SECS ($(date -u '+%F %H:%M') UTC, $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')); load $(cut -d' ' -f1-3 /proc/loadavg)" > "$RAW"

blockd_run() {
  local name=$1 bin=$2 round=$3 j
  rm -f "$SOCK"
  taskset -c 0 "$bin" \
    --blockdev "driver=file,node-name=f0,filename=$IMG" \
    --blockdev driver=raw,node-name=d0,file=f0 \
    --nbd-server "addr.type=unix,addr.path=$SOCK" \
    --export type=nbd,id=e0,node-name=d0,name=,writable=on \
    > /dev/null 2>> "$RESULTS/server.log" &
  SRV_PID=$!
  for _ in $(seq 400); do [ -S "$SOCK" ] && break; sleep 0.05; done
  j=$(taskset -c 1 "$NBDLOAD" --unix "$SOCK" --op read --pattern rand \
        --bs 4096 --qd 1 --seconds "$SECS" --server-pid "$SRV_PID" --json)
  kill "$SRV_PID"
  wait "$SRV_PID" 2>/dev/null || true
  SRV_PID=""
  echo "QD1 name=$name round=$round $j" | tee -a "$RAW"
}

for round in $(seq "$ROUNDS"); do
  ( cd "$WORK" && TCEIL_PIN=0:1 "$TCEIL" pingpong unix "$SECS" 1 ) |
    sed "s/^/round=$round /" | tee -a "$RAW"
  blockd_run blockd "$BLOCKD" "$round"
  if [ -n "$BLOCKD_B" ]; then
    blockd_run blockd-b "$BLOCKD_B" "$round"
  fi
  "$QD1FLOOR" --rounds 1 --seconds "$SECS" --pin 0:1 --file "$IMG" |
    grep '^QD1FLOOR' | sed "s/round=1/round=$round/" | tee -a "$RAW"
done

/usr/bin/python3 - "$RAW" <<'EOF' | tee "$RESULTS/summary.txt"
import json, re, statistics as st, sys
tceil, blk, floor = {}, {}, {}
for line in open(sys.argv[1]):
    m = re.match(r"round=(\d+) CEILING .*value=([\d.]+)", line)
    if m:
        tceil[int(m.group(1))] = float(m.group(2))
    m = re.match(r"QD1 name=(\S+) round=(\d+) (\{.*\})", line)
    if m:
        blk.setdefault(m.group(1), {})[int(m.group(2))] = json.loads(m.group(3))
    m = re.match(r"QD1FLOOR shape=(\S+) round=(\d+) iops=(\d+) "
                 r"srv_cpu_us_per_op=([\d.]+)", line)
    if m:
        floor.setdefault(m.group(1), []).append(
            (int(m.group(3)), float(m.group(4))))
print("%-16s %9s %12s %8s %14s" % ("", "IOPS", "CPU us/op", "p99 us",
                                   "IOPS / tceil"))
if tceil:
    print("%-16s %9.0f" % ("tceil", st.median(tceil.values())))
for name, runs in blk.items():
    share = [r["iops"] / tceil[k] for k, r in runs.items() if k in tceil]
    print("%-16s %9.0f %12.2f %8.0f %14s" % (
        name, st.median(r["iops"] for r in runs.values()),
        st.median(r["server_us_per_op"] for r in runs.values()),
        st.median(r["p99_us"] for r in runs.values()),
        "%.3f" % st.median(share) if share else "-"))
for name, runs in floor.items():
    print("%-16s %9.0f %12.2f" % ("floor:" + name,
                                   st.median(i for i, _ in runs),
                                   st.median(c for _, c in runs)))
EOF
