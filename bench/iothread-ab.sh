#!/bin/bash
# bench/iothread-ab.sh - what a second event loop costs: blockd's
# instructions per request (valgrind --tool=callgrind, user space, all
# threads) with the export on the main loop and on an iothread, and
# with two exports on two iothreads against both on the main loop.
# Instruction counts do not depend on how busy the machine is, so this
# A/B holds on a shared machine where timings do not.
#
#   bench/iothread-ab.sh [--workloads LIST] [--seconds S]
#
# Workloads: randread (4 KiB, QD 16), randwrite (4 KiB, QD 16), seqread
# (256 KiB, QD 8).  Each mode runs twice (S and 3*S seconds of nbdload);
# the difference of the two runs' totals over the difference of their
# requests is the cost per request, start-up and teardown cancelled.
# Modes:
#   main      one export on the main loop
#   iothread  the same export on iothread io0
#   main2     two exports, both on the main loop, one nbdload each
#   iothread2 two exports on io0 and io1, one nbdload each
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BLOCKD=${BLOCKD:-$ROOT/build/blockd}
NBDLOAD=${NBDLOAD:-$ROOT/build/nbdload}
WORKLOADS="randread randwrite seqread"
SECONDS_PER_RUN=2
MODES="main iothread main2 iothread2"
while [ $# -gt 0 ]; do
  case "$1" in
    --workloads) WORKLOADS=${2//,/ }; shift 2 ;;
    --seconds) SECONDS_PER_RUN=$2; shift 2 ;;
    --modes) MODES=${2//,/ }; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/iothread-ab.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
WORK=$(mktemp -d /dev/shm/blockd-ioab.XXXXXX)
PID=""
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
head -c $((256 * 1024 * 1024)) /dev/urandom > "$WORK/a.img"
cp "$WORK/a.img" "$WORK/b.img"

args_for() {
  case "$1" in
    randread) echo "--op read --pattern rand --bs 4096 --qd 16" ;;
    randwrite) echo "--op write --pattern rand --bs 4096 --qd 16" ;;
    seqread) echo "--op read --pattern seq --bs 262144 --qd 8" ;;
    *) echo "unknown workload $1" >&2; exit 2 ;;
  esac
}

# run MODE WORKLOAD SECONDS: prints "INSTRUCTIONS REQUESTS"
run() {
  local mode=$1 wl=$2 secs=$3 obj=() e0=() e1=() n=1 ops=0 ir
  case "$mode" in
    main) ;;
    iothread) obj=(--object iothread,id=io0); e0=(,iothread=io0) ;;
    main2) n=2 ;;
    iothread2) n=2; obj=(--object iothread,id=io0 --object iothread,id=io1)
               e0=(,iothread=io0); e1=(,iothread=io1) ;;
  esac
  rm -f "$WORK/s" "$WORK/cg.out"
  valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" \
    "$BLOCKD" --sandbox off "${obj[@]}" \
    --blockdev "driver=file,node-name=a,filename=$WORK/a.img" \
    --blockdev "driver=file,node-name=b,filename=$WORK/b.img" \
    --nbd-server "addr.type=unix,addr.path=$WORK/s" \
    --export "type=nbd,id=e0,node-name=a,writable=on${e0[*]:-}" \
    --export "type=nbd,id=e1,node-name=b,writable=on${e1[*]:-}" \
    2>/dev/null &
  PID=$!
  for _ in $(seq 600); do [ -S "$WORK/s" ] && break; sleep 0.1; done
  local names=(a b) pids=() i
  for ((i = 0; i < n; i++)); do
    # shellcheck disable=SC2046
    "$NBDLOAD" --unix "$WORK/s" --export "${names[$i]}" $(args_for "$wl") \
      --seconds "$secs" --json > "$WORK/load$i.json" &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  for ((i = 0; i < n; i++)); do
    ops=$((ops + $(sed 's/.*"ops": \([0-9]*\).*/\1/' "$WORK/load$i.json")))
  done
  kill "$PID"; wait "$PID" || true; PID=""
  ir=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$WORK/cg.out")
  echo "$ir $ops"
}

printf '%-10s %-10s %12s %10s\n' workload mode "Ir/request" requests
for wl in $WORKLOADS; do
  for mode in $MODES; do
    read -r ir1 ops1 < <(run "$mode" "$wl" "$SECONDS_PER_RUN")
    read -r ir2 ops2 < <(run "$mode" "$wl" $((SECONDS_PER_RUN * 3)))
    printf '%-10s %-10s %12d %10d\n' "$wl" "$mode" \
      $(((ir2 - ir1) / (ops2 - ops1))) $((ops2 - ops1))
  done
done
