#!/bin/bash
# bench/load.sh - NBD servers driven by bench/nbdload, a load client that
# is not the bottleneck, so the figures show what each server can do and
# what it spends: throughput (MiB/s or IOPS), latency (p50/p99) and the
# server's CPU per GiB or per request (all its threads).
#
#   bench/load.sh [--rounds N] [--size BYTES] [--seconds S]
#                 [--servers LIST] [--workloads LIST] [--results DIR]
#                 [--tcp] [--qcow2 prealloc|fresh]
#
# Servers (default all): blockd qemu-nbd qemu-storage-daemon nbdkit-file
# nbd-server, each serving the same raw image (random data on
# /dev/shm) over a unix socket (--tcp: 127.0.0.1 on a free port),
# started fresh for every run, pinned to CPU 0 with nbdload on CPU 1
# (taskset).  Rounds are interleaved and the server order rotates each
# round.  Not in the default list: blockd-nbd, the qemu-nbd command
# (started with qemu-nbd's flags: -f raw -t -e 0 -x ""; the issue's
# "within 5% of blockd" row is --servers blockd-nbd,blockd,qemu-nbd);
# blockd-iothread, blockd with its export on an iothread (the A/B of a
# second loop against blockd's main loop: --servers
# blockd,blockd-iothread); blockd-qcow2, qemu-nbd-qcow2
# and qemu-storage-daemon-qcow2 serve a qcow2 image (64 KiB clusters)
# instead: with --qcow2 prealloc (the default) the raw image's data
# converted with preallocation=metadata, made once; with --qcow2 fresh
# an empty (growing) qcow2 made again before every run.  The first
# server listed is the base of the ratios.  The issue's qcow2 rows:
#   bench/load.sh --servers blockd-qcow2,blockd
#   bench/load.sh --servers blockd-qcow2,qemu-storage-daemon-qcow2,\
#       qemu-nbd-qcow2 --qcow2 fresh --workloads randwrite
# Workloads:
#   seqread    256 KiB reads, QD 8 on each of 2 connections
#   seqread1   the same on 1 connection
#   seqwrite   256 KiB writes, QD 8, 1 connection
#   randread   4 KiB random reads, QD 16
#   randread1  4 KiB random reads, QD 1 (latency)
#   randwrite  4 KiB random writes, QD 16
# Output: RUN lines in DIR/raw.txt ("W" is the rate, "W-cpu" the server
# CPU per unit, "W-p99" the p99 latency), then bench/ratios.py's table:
# blockd / peer, > 1 means blockd did better (for CPU and latency too).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BLOCKD=${BLOCKD:-$ROOT/build/blockd}
BLOCKD_NBD=${BLOCKD_NBD:-$ROOT/build/blockd-nbd}
NBDLOAD=${NBDLOAD:-$ROOT/build/nbdload}
ROUNDS=3
SIZE=$((1024 * 1024 * 1024))
SECONDS_PER_RUN=4
SERVERS="blockd qemu-nbd qemu-storage-daemon nbdkit-file nbd-server"
WORKLOADS="seqread seqread1 seqwrite randread randread1 randwrite"
RESULTS=/tmp/blockd-bench/load-$(date +%F-%H%M%S)
TRANSPORT=unix
QCOW2=prealloc

while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --seconds) SECONDS_PER_RUN=$2; shift 2 ;;
    --servers) SERVERS=${2//,/ }; shift 2 ;;
    --workloads) WORKLOADS=${2//,/ }; shift 2 ;;
    --results) RESULTS=$2; shift 2 ;;
    --tcp) TRANSPORT=tcp; shift ;;
    --qcow2) QCOW2=$2; shift 2 ;;
    -h|--help) sed -n '2,39p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/load.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -x "$BLOCKD" ] || { echo "no blockd at $BLOCKD (set BLOCKD=)" >&2; exit 1; }
[ -x "$NBDLOAD" ] || { echo "no nbdload at $NBDLOAD (set NBDLOAD=)" >&2; exit 1; }
case "$QCOW2" in
  prealloc|fresh) ;;
  *) echo "bench/load.sh: --qcow2 takes prealloc or fresh" >&2; exit 2 ;;
esac

mkdir -p "$RESULTS"
WORK=$(mktemp -d /dev/shm/blockd-load.XXXXXX)
SRV_PID=""
cleanup() {
  [ -n "$SRV_PID" ] && kill "$SRV_PID" 2>/dev/null && wait "$SRV_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
IMG=$WORK/disk.img
QIMG=$WORK/disk.qcow2
SOCK=$WORK/nbd.sock
head -c "$SIZE" /dev/urandom > "$IMG"
PORT=""
if [ "$TRANSPORT" = tcp ]; then
  PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  TCP_ADDR=127.0.0.1:$PORT
  LISTEN="listenaddr = 127.0.0.1\nport = $PORT"
  BLOCKD_ADDR="addr.type=inet,addr.host=127.0.0.1,addr.port=$PORT"
  QEMU_NBD_ADDR=(-b 127.0.0.1 -p "$PORT")
  NBDKIT_ADDR=(-i 127.0.0.1 -p "$PORT")
else
  LISTEN="unixsock = $SOCK"
  BLOCKD_ADDR="addr.type=unix,addr.path=$SOCK"
  QEMU_NBD_ADDR=(-k "$SOCK")
  NBDKIT_ADDR=(-U "$SOCK")
fi
printf "[generic]\n$LISTEN\n[bench]\nexportname = %s\nflush = true\nfua = true\ntrim = true\n" \
  "$IMG" > "$WORK/nbd-server.conf"
case " $SERVERS " in
  *-qcow2\ *)
    if [ "$QCOW2" = prealloc ]; then
      qemu-img convert -f raw -O qcow2 \
        -o cluster_size=65536,preallocation=metadata "$IMG" "$QIMG"
    fi ;;
esac

# A fresh qcow2 for every run with --qcow2 fresh.
qcow2_image() {
  if [ "$QCOW2" = fresh ]; then
    rm -f "$QIMG"
    qemu-img create -q -f qcow2 -o cluster_size=65536 "$QIMG" "$SIZE"
  fi
}

listening() {
  if [ "$TRANSPORT" = tcp ]; then
    ss -Hltn "sport = :$PORT" | grep -q .
  else
    [ -S "$SOCK" ]
  fi
}

start() {
  rm -f "$SOCK" "$WORK/pid"
  local img=$IMG fmt=raw
  case "$1" in
    *-qcow2) img=$QIMG; fmt=qcow2; qcow2_image ;;
  esac
  case "$1" in
    blockd|blockd-qcow2) taskset -c 0 "$BLOCKD" \
              --blockdev "driver=file,node-name=f0,filename=$img" \
              --blockdev driver=$fmt,node-name=d0,file=f0 \
              --nbd-server "$BLOCKD_ADDR" \
              --export type=nbd,id=e0,node-name=d0,name=,writable=on \
              2>>"$RESULTS/server.log" & ;;
    blockd-iothread) taskset -c 0 "$BLOCKD" --object iothread,id=io0 \
              --blockdev "driver=file,node-name=f0,filename=$img" \
              --blockdev driver=raw,node-name=d0,file=f0 \
              --nbd-server "$BLOCKD_ADDR" \
              --export type=nbd,id=e0,node-name=d0,name=,writable=on,iothread=io0,fixed-iothread=on \
              2>>"$RESULTS/server.log" & ;;
    blockd-nbd) taskset -c 0 "$BLOCKD_NBD" -f raw -t -e 0 -x "" \
              "${QEMU_NBD_ADDR[@]}" "$img" 2>>"$RESULTS/server.log" & ;;
    qemu-nbd|qemu-nbd-qcow2) taskset -c 0 qemu-nbd -f $fmt -t -e 0 -x "" \
              "${QEMU_NBD_ADDR[@]}" "$img" 2>>"$RESULTS/server.log" & ;;
    qemu-storage-daemon|qemu-storage-daemon-qcow2)
            taskset -c 0 qemu-storage-daemon \
              --blockdev "driver=file,node-name=f0,filename=$img" \
              --blockdev driver=$fmt,node-name=d0,file=f0 \
              --nbd-server "$BLOCKD_ADDR" \
              --export type=nbd,id=e0,node-name=d0,name=,writable=on \
              2>>"$RESULTS/server.log" & ;;
    nbdkit-file) taskset -c 0 nbdkit -f "${NBDKIT_ADDR[@]}" file "$img" \
              2>>"$RESULTS/server.log" & ;;
    nbd-server) taskset -c 0 nbd-server -C "$WORK/nbd-server.conf" \
              -p "$WORK/pid" 2>>"$RESULTS/server.log" ;;
    *) echo "bench/load.sh: unknown server $1" >&2; exit 2 ;;
  esac
  if [ "$1" = nbd-server ]; then
    for _ in $(seq 200); do [ -s "$WORK/pid" ] && break; sleep 0.05; done
    SRV_PID=$(cat "$WORK/pid")
  else
    SRV_PID=$!
  fi
  for _ in $(seq 400); do listening && break; sleep 0.05; done
  listening || { echo "bench/load.sh: $1 did not start" >&2; exit 1; }
}

args_for() {
  case "$1" in
    seqread) echo "--op read --pattern seq --bs 262144 --qd 8 --conns 2" ;;
    seqread1) echo "--op read --pattern seq --bs 262144 --qd 8 --conns 1" ;;
    seqwrite) echo "--op write --pattern seq --bs 262144 --qd 8 --conns 1" ;;
    randread) echo "--op read --pattern rand --bs 4096 --qd 16" ;;
    randread1) echo "--op read --pattern rand --bs 4096 --qd 1" ;;
    randwrite) echo "--op write --pattern rand --bs 4096 --qd 16" ;;
    *) echo "bench/load.sh: unknown workload $1" >&2; exit 2 ;;
  esac
}

RAW=$RESULTS/raw.txt
{
  echo "# bench/load.sh --rounds $ROUNDS --seconds $SECONDS_PER_RUN ($(date -u '+%F %H:%M') UTC, $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'))"
  echo "# $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); image $SIZE bytes on /dev/shm ($TRANSPORT; *-qcow2: $QCOW2 qcow2); server CPU 0, nbdload CPU 1"
} > "$RAW"
read -r -a SRV <<< "$SERVERS"
export_for() {
  if [ "$1" = nbd-server ]; then echo bench; fi
}
# shellcheck source=bench/rounds.sh
. "$HERE/rounds.sh"
bench_rounds "$TRANSPORT"
/usr/bin/python3 "$HERE/ratios.py" --base "${SRV[0]}" "$RAW" |
  tee "$RESULTS/ratios.txt"
