#!/bin/bash
# bench/all.sh - every benchmark of blockd and its peers in one command,
# then one table of medians, ratios and server CPU per unit of work
# (summary.txt) and a chart of blockd's ratio to the best peer
# (summary.png, drawn by gnuplot).
#
#   bench/all.sh [--rounds N] [--results DIR] [--quick]
#
# In order, each with its rounds interleaved across servers:
#   clients/  bench/run.sh: the shared harness's third-party clients
#             (nbdcopy, fio, libnbd connect loops, a block status walk)
#             over a unix socket and TCP, against qemu-nbd,
#             qemu-storage-daemon, nbdkit's file plugin and nbd-server,
#             with blockd on raw, blockd on a preallocated qcow2 and
#             blockd-nbd beside them, the transport's own ceiling each
#             round (../shared/bench/tceil.c: a bulk stream and
#             NBD-shaped 4 KiB round trips at QD 1 and 16, no NBD server
#             involved), then 1,000 idle connections' RSS
#   load/     bench/load.sh: the same servers driven by bench/nbdload,
#             a client that is not the bottleneck (throughput, p99 and
#             server CPU per GiB or per request)
#             and build/seqwfloor: the server-side floor of a stream
#             of 256 KiB writes for each server shape (blocking, mmap,
#             epoll, io_uring), under load.sh's seqwrite row
#   qd1/      bench/qd1.sh: blockd's QD1 reads beside tceil's round
#             trip and bench/qd1floor's server shapes (epoll, io_uring)
#   tls/      bench/tls.sh: blockd and qemu-nbd over TLS
#   qmp/      bench/qmp-lat.py: QMP p99 while 200 clients read
#   scale/    bench/many-exports.py: 1,000 exports' RSS and query time
#   jobs/     bench/backup.py and bench/mirror.py: a 1 GiB full backup
#             and mirror (with an export on the source), beside
#             qemu-storage-daemon
# --quick runs 1 round with short runs (a smoke test of the whole chain;
# its figures mean nothing).  Needs what scripts/install-deps.sh installs
# (gnuplot included) and a quiet machine: it takes about an hour with
# 3 rounds, and other work on the machine shows in every figure.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
HARNESS=${BENCH_HARNESS:-$(dirname "$ROOT")/shared/bench}
[ -d "$HARNESS" ] || HARNESS=$(dirname "$(dirname "$ROOT")")/shared/bench
ROUNDS=3
QUICK=0
RESULTS=/tmp/blockd-bench/all-$(date +%F-%H%M%S)

while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --results) RESULTS=$2; shift 2 ;;
    --quick) QUICK=1; ROUNDS=1; shift ;;
    -h|--help) sed -n '2,36p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/all.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$RESULTS"/{clients,load,qd1,tls,qmp,scale,jobs}
log() { echo "== bench/all.sh: $* ($(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1 /proc/loadavg))"; }
{
  echo "# bench/all.sh --rounds $ROUNDS$([ "$QUICK" = 1 ] && echo ' --quick') ($(date -u '+%F %H:%M') UTC, $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))"
  echo "# $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r); load at the start $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$RESULTS/header.txt"

if [ "$QUICK" = 1 ]; then
  CLIENT_ARGS=(--workloads seqread,randread4k_qd16,connect --idle-rss 100)
  LOAD_ARGS=(--seconds 1 --size $((256 << 20)))
  QD1_ARGS=(--seconds 1 --size $((256 << 20)))
  FLOOR_ARGS=(--seconds 0.5)
  TLS_ARGS=(--size $((128 << 20)))
  QMP_ARGS=(--seconds 1 --conns 50)
  SCALE_ARGS=(--exports 100 --queries 10)
  JOB_SIZE=$((64 << 20))
else
  CLIENT_ARGS=()
  LOAD_ARGS=()
  QD1_ARGS=()
  FLOOR_ARGS=()
  TLS_ARGS=()
  QMP_ARGS=()
  SCALE_ARGS=()
  JOB_SIZE=$((1 << 30))
fi

log "third-party clients (bench/run.sh)"
"$HERE/run.sh" --rounds "$ROUNDS" --results "$RESULTS/clients" \
  --peers qemu-nbd,qemu-storage-daemon,nbdkit-file,nbd-server \
  --qcow2 --blockd-nbd "${CLIENT_ARGS[@]}"

log "nbdload (bench/load.sh)"
"$HERE/load.sh" --rounds "$ROUNDS" --results "$RESULTS/load" "${LOAD_ARGS[@]}"

log "sequential-write floor (build/seqwfloor)"
"$ROOT/build/seqwfloor" --rounds "$ROUNDS" "${FLOOR_ARGS[@]}" \
  | tee "$RESULTS/load/seqwfloor.txt"

log "QD1 (bench/qd1.sh)"
"$HERE/qd1.sh" --rounds "$ROUNDS" --results "$RESULTS/qd1" "${QD1_ARGS[@]}"

log "TLS (bench/tls.sh)"
"$HERE/tls.sh" --rounds "$ROUNDS" --results "$RESULTS/tls" "${TLS_ARGS[@]}"

log "QMP under load (bench/qmp-lat.py)"
/usr/bin/python3 "$HERE/qmp-lat.py" --rounds "$ROUNDS" "${QMP_ARGS[@]}" \
  | tee "$RESULTS/qmp/raw.txt"

log "many exports (bench/many-exports.py)"
/usr/bin/python3 "$HERE/many-exports.py" "${SCALE_ARGS[@]}" \
  | tee "$RESULTS/scale/many-exports.txt"

log "jobs (bench/backup.py, bench/mirror.py)"
/usr/bin/python3 "$HERE/backup.py" --rounds "$ROUNDS" --size "$JOB_SIZE" \
  | tee "$RESULTS/jobs/backup.txt"
/usr/bin/python3 "$HERE/mirror.py" --rounds "$ROUNDS" --size "$JOB_SIZE" \
  --export-load | tee "$RESULTS/jobs/mirror.txt"

log "summary"
/usr/bin/python3 "$HERE/summary.py" "$RESULTS" | tee "$RESULTS/summary.txt"
echo "results in $RESULTS (summary.txt, summary.png)"
