#!/bin/bash
# bench/run.sh - benchmark blockd beside qemu-nbd and nbdkit's file plugin
# in one interleaved run of the shared harness (../shared/bench), then
# print blockd's ratio against each peer per workload and transport.
#
#   bench/run.sh [--rounds N] [--workloads LIST] [--peers a,b] [--results DIR]
#
# Environment: BLOCKD (default build/blockd), BENCH_HARNESS (default
# ../shared/bench next to the repository).  Every server gets the same
# image, the same clients (nbdcopy, fio's nbd engine, libnbd connect
# loops, a base:allocation walk of a 32768-extent image), one pinned core,
# a unix socket and TCP on 127.0.0.1.  Ratios > 1 mean blockd is better
# (faster, or lower latency/time).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BLOCKD=${BLOCKD:-$ROOT/build/blockd}
HARNESS=${BENCH_HARNESS:-$(dirname "$ROOT")/shared/bench}
ROUNDS=3
WORKLOADS=""
PEERS=qemu-nbd,nbdkit-file
RESULTS=/tmp/blockd-bench/$(date +%F-%H%M%S)

while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --workloads) WORKLOADS=$2; shift 2 ;;
    --peers) PEERS=$2; shift 2 ;;
    --results) RESULTS=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

[ -x "$BLOCKD" ] || { echo "no blockd at $BLOCKD (set BLOCKD=)" >&2; exit 1; }
[ -x "$HARNESS/run-peers.sh" ] || { echo "no harness at $HARNESS" >&2; exit 1; }

NODES="--blockdev driver=file,node-name=f0,filename={img} --blockdev driver=raw,node-name=d0,file=f0"
EXPORT="--export type=nbd,id=e0,node-name=d0,name=,writable=on"
UNIX_T="$BLOCKD $NODES --nbd-server addr.type=unix,addr.path={sock} $EXPORT"
TCP_T="$BLOCKD $NODES --nbd-server addr.type=inet,addr.host=127.0.0.1,addr.port={port} $EXPORT"

args=(--rounds "$ROUNDS" --only "$PEERS,blockd" --results "$RESULTS")
[ -n "$WORKLOADS" ] && args+=(--workloads "$WORKLOADS")
mkdir -p "$RESULTS"
"$HARNESS/run-peers.sh" "${args[@]}" --extra blockd "$UNIX_T" "$TCP_T"
/usr/bin/python3 "$HERE/ratios.py" "$RESULTS/raw.txt" | tee "$RESULTS/ratios.txt"
