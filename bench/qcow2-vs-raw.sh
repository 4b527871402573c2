#!/bin/bash
# bench/qcow2-vs-raw.sh - a preallocated qcow2 against raw, paired: the
# same data (random bytes on /dev/shm, and that file converted with
# qemu-img convert -O qcow2 -o cluster_size=65536,preallocation=metadata)
# served by blockd as raw and as qcow2 in turn, round after round (the
# order flips each round), so that the machine's load hits both alike.
# Prints one line per run, then per workload the medians and the median
# of the per-round ratios qcow2/raw: of the rate (IOPS or MiB/s; the
# issue's target is >= 0.90) and of the server CPU per unit (µs per
# request or s per GiB, all the server's threads; <= 1.11).
#
#   bench/qcow2-vs-raw.sh [--rounds N] [--seconds S] [--size BYTES]
#                         [--workloads LIST] [--callgrind]
#
# --callgrind counts instructions instead (valgrind, user space, every
# thread; a count that does not depend on the machine's load): blockd
# runs under callgrind with instrumentation off, nbdload warms it up
# for a second, then instrumentation is on for the S seconds measured.
# Printed per request: the whole server's instructions, and the format
# layer's own (qcow2_* or raw_* pread, pwrite, splice_read minus their
# calls into the file node).  One round is enough.
#
# BLOCKD (default build/blockd) is the binary measured; with BLOCKD_B
# set, a second binary (e.g. one built from main) runs in the same
# rounds and gets its own rows, named "B": before/after in one run.
# Workloads as in bench/load.sh (default randread randread1 randwrite
# seqread seqwrite):
#   randread 4 KiB random reads QD 16; randread1 the same at QD 1;
#   randwrite 4 KiB random writes QD 16; seqread 256 KiB reads QD 8 on
#   2 connections; seqread1 on 1; seqwrite 256 KiB writes QD 8.
# The server runs on CPU 0 and nbdload on CPU 1 (taskset), each server
# started fresh for its run and stopped by PID.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BLOCKD=${BLOCKD:-$ROOT/build/blockd}
BLOCKD_B=${BLOCKD_B:-}
NBDLOAD=${NBDLOAD:-$ROOT/build/nbdload}
ROUNDS=8
SECS=3
SIZE=$((1024 * 1024 * 1024))
WORKLOADS="randread randread1 randwrite seqread seqwrite"
CALLGRIND=0

while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --workloads) WORKLOADS=${2//,/ }; shift 2 ;;
    --callgrind) CALLGRIND=1; shift ;;
    -h|--help) sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/qcow2-vs-raw.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$BLOCKD" ] || { echo "no blockd at $BLOCKD (set BLOCKD=)" >&2; exit 1; }
[ -x "$NBDLOAD" ] || { echo "no nbdload at $NBDLOAD (set NBDLOAD=)" >&2; exit 1; }
if [ -n "$BLOCKD_B" ] && [ ! -x "$BLOCKD_B" ]; then
  echo "no blockd at $BLOCKD_B (BLOCKD_B)" >&2
  exit 1
fi

WORK=$(mktemp -d /dev/shm/qcow2-vs-raw.XXXXXX)
pid=""
cleanup() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
head -c "$SIZE" /dev/urandom > "$WORK/disk.raw"
qemu-img convert -f raw -O qcow2 \
  -o cluster_size=65536,preallocation=metadata \
  "$WORK/disk.raw" "$WORK/disk.qcow2"
SOCK=$WORK/nbd.sock
PIN_SRV=()
PIN_CLI=()
if [ "$(nproc)" -ge 2 ]; then
  PIN_SRV=(taskset -c 0)
  PIN_CLI=(taskset -c 1)
fi

args_for() {
  case "$1" in
    randread) echo "--op read --pattern rand --bs 4096 --qd 16" ;;
    randread1) echo "--op read --pattern rand --bs 4096 --qd 1" ;;
    randwrite) echo "--op write --pattern rand --bs 4096 --qd 16" ;;
    seqread) echo "--op read --pattern seq --bs 262144 --qd 8 --conns 2" ;;
    seqread1) echo "--op read --pattern seq --bs 262144 --qd 8 --conns 1" ;;
    seqwrite) echo "--op write --pattern seq --bs 262144 --qd 8" ;;
    *) echo "bench/qcow2-vs-raw.sh: unknown workload $1" >&2; exit 2 ;;
  esac
}

# The format layer's own instructions per request in callgrind output
# $1: the inclusive cost of qcow2_p* / raw_p* minus their calls to
# blk_p* (the file node); $2 requests.
fmt_own() {
  callgrind_annotate --tree=calling --inclusive=yes "$1" 2>/dev/null |
    awk -v ops="$2" '
      /\*  / { cur = ($0 ~ /:(qcow2|raw)_(pread|pwrite|splice_read) \[/);
               if (cur) { gsub(",", "", $1); inc += $1 } next }
      cur && />   / && /blk_(pread|pwrite|splice_read)/ { gsub(",", "", $1); child += $1 }
      END { printf "%.0f", (inc - child) / ops }'
}

# run BINARY FORMAT WORKLOAD: one fresh server, one nbdload run; prints
# nbdload's JSON (with --callgrind: plus "ir_per_op", "fmt_ir_per_op").
run() {
  local bin=$1 fmt=$2 w=$3 out cg=() opt=()
  rm -f "$SOCK"
  if [ "$CALLGRIND" = 1 ]; then
    rm -f "$WORK/cg.out"
    cg=(valgrind --tool=callgrind --instr-atstart=no
        --callgrind-out-file="$WORK/cg.out")
    opt=(--sandbox off)         # valgrind's own system calls
  fi
  "${PIN_SRV[@]}" "${cg[@]}" "$bin" "${opt[@]}" \
    --blockdev "driver=file,node-name=f0,filename=$WORK/disk.$fmt" \
    --blockdev "driver=$fmt,node-name=d0,file=f0" \
    --nbd-server "addr.type=unix,addr.path=$SOCK" \
    --export type=nbd,id=e0,node-name=d0,name=,writable=on \
    2>>"$WORK/server.log" &
  pid=$!
  for _ in $(seq 1200); do [ -S "$SOCK" ] && break; sleep 0.05; done
  [ -S "$SOCK" ] || { echo "blockd did not start" >&2; cat "$WORK/server.log" >&2; exit 1; }
  if [ "$CALLGRIND" = 1 ]; then
    # shellcheck disable=SC2046
    "${PIN_CLI[@]}" "$NBDLOAD" --unix "$SOCK" $(args_for "$w") \
      --seconds 1 > /dev/null
    callgrind_control -i on "$pid" > /dev/null 2>&1
  fi
  # shellcheck disable=SC2046
  out=$("${PIN_CLI[@]}" "$NBDLOAD" --unix "$SOCK" $(args_for "$w") \
        --seconds "$SECS" --server-pid "$pid" --json)
  if [ "$CALLGRIND" = 1 ]; then
    callgrind_control -i off "$pid" > /dev/null 2>&1
  fi
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  pid=""
  if [ "$CALLGRIND" = 1 ]; then
    local ops ir
    ops=${out#*\"ops\": }
    ops=${ops%%,*}
    ir=$(sed -n 's/^totals: \([0-9]*\).*/\1/p' "$WORK/cg.out")
    out="${out%\}}, \"ir_per_op\": $((ir / ops)), \"fmt_ir_per_op\": $(fmt_own "$WORK/cg.out" "$ops")}"
  fi
  echo "$out"
}

BINS=(A)
[ -n "$BLOCKD_B" ] && BINS=(A B)
echo "# bench/qcow2-vs-raw.sh --rounds $ROUNDS --seconds $SECS --size $SIZE ($(date -u '+%F %H:%M') UTC, load $(cut -d' ' -f1-3 /proc/loadavg))"
echo "# A=$BLOCKD${BLOCKD_B:+ B=$BLOCKD_B}"
for r in $(seq "$ROUNDS"); do
  order="raw qcow2"
  [ $((r % 2)) -eq 0 ] && order="qcow2 raw"
  for w in $WORKLOADS; do
    for b in "${BINS[@]}"; do
      bin=$BLOCKD
      [ "$b" = B ] && bin=$BLOCKD_B
      for fmt in $order; do
        echo "RUN $r $w $b $fmt $(run "$bin" "$fmt" "$w")"
      done
    done
  done
done | tee "$WORK/runs"

/usr/bin/python3 - "$WORK/runs" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    if not line.startswith("RUN "):
        continue
    _, r, w, b, fmt, js = line.rstrip("\n").split(" ", 5)
    rows[(r, w, b, fmt)] = json.loads(js)
med = statistics.median
print("%-10s %-2s %12s %12s %7s %9s %9s %7s %s" % (
    "workload", "", "raw", "qcow2", "rate", "raw cpu", "qcow2 cpu", "cpu",
    "(ratios qcow2/raw: median of the rounds' ratios)"))
for w in dict.fromkeys(k[1] for k in rows):
    seq = w.startswith("seq")
    rate = "mib_s" if seq else "iops"
    cpu = "server_s_per_gib" if seq else "server_us_per_op"
    for b in sorted({k[2] for k in rows if k[1] == w}):
        rounds = [k[0] for k in rows
                  if k[1] == w and k[2] == b and k[3] == "raw"
                  and (k[0], w, b, "qcow2") in rows]
        raw = [rows[(r, w, b, "raw")] for r in rounds]
        q = [rows[(r, w, b, "qcow2")] for r in rounds]
        rr = med(x[rate] / y[rate] for x, y in zip(q, raw))
        rc = med(x[cpu] / y[cpu] for x, y in zip(q, raw))
        print("%-10s %-2s %12.1f %12.1f %7.3f %9.4g %9.4g %7.3f" % (
            w, b, med(y[rate] for y in raw), med(x[rate] for x in q), rr,
            med(y[cpu] for y in raw), med(x[cpu] for x in q), rc))
print("(%s per second; cpu: server us per request, or s per GiB for seq*)"
      % "IOPS or MiB/s")
cg = [k for k in rows if "ir_per_op" in rows[k]]
if cg:
    print()
    print("%-10s %-2s %11s %11s %9s %13s %13s" % (
        "workload", "", "raw Ir/op", "qcow2 Ir/op", "qcow2/raw",
        "raw layer", "qcow2 layer"))
    for w in dict.fromkeys(k[1] for k in cg):
        for b in sorted({k[2] for k in cg if k[1] == w}):
            def m(fmt, f):
                return med(rows[k][f] for k in cg
                           if k[1] == w and k[2] == b and k[3] == fmt)
            print("%-10s %-2s %11d %11d %9.3f %13d %13d" % (
                w, b, m("raw", "ir_per_op"), m("qcow2", "ir_per_op"),
                m("qcow2", "ir_per_op") / m("raw", "ir_per_op"),
                m("raw", "fmt_ir_per_op"), m("qcow2", "fmt_ir_per_op")))
    print("(instructions per request, user space, all threads; layer: the "
          "format driver's own, without the file node)")
PY
