#!/bin/bash
# bench/tls.sh - NBD over TLS: blockd and qemu-nbd (--tls-creds), both
# with the same x509 credentials, and blockd in clear as the reference,
# interleaved round by round in one run.  Workloads are the shared
# harness's (../shared/bench/nbdbench.py run): seqread (nbdcopy, 1
# client process, auto multi-conn), randread4k_qd16 (fio's nbd engine)
# and connect (libnbd connect_uri + shutdown, p50 latency), each client
# given an nbds+unix:// URI.  libnbd checks the server's certificate
# against the CA in its default place, $HOME/.pki/libnbd, which it only
# looks at for a non-root user (a URI's tls-certificates is refused by
# fio and the harness's probe: "local file access"), so the clients run
# as nobody with HOME in the scratch directory.  The servers do not ask
# for a client certificate.
#
#   bench/tls.sh [--rounds N] [--size BYTES] [--results DIR]
#
# SERVERS="blockd blockd-b qemu-nbd" picks the servers (default: blockd
# qemu-nbd blockd-plain); blockd-b is $BLOCKD_B over TLS, for an A/B of
# two builds in one run (ratios.py's "blockd-b" column: A over B).
#
# Output: RUN lines in DIR/raw.txt, then bench/ratios.py: "qemu-nbd" is
# blockd-over-TLS / qemu-nbd-over-TLS (> 1: blockd better) and
# "blockd-plain" is blockd-over-TLS / blockd-in-clear (for rates: the
# fraction of its plaintext throughput blockd keeps under TLS).
# Server on CPU 0, client on CPU 1 (taskset), image on /dev/shm.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BLOCKD=${BLOCKD:-$ROOT/build/blockd}
HARNESS=${BENCH_HARNESS:-$(dirname "$ROOT")/shared/bench}
# A git worktree under wt/ is one level deeper.
[ -f "$HARNESS/nbdbench.py" ] || [ -n "${BENCH_HARNESS:-}" ] ||
  HARNESS=$(dirname "$(dirname "$ROOT")")/shared/bench
ROUNDS=3
SIZE=$((512 * 1024 * 1024))
RESULTS=/tmp/blockd-bench/tls-$(date +%F-%H%M%S)
WORKLOADS="${WORKLOADS:-seqread randread4k_qd16 connect}"

while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --results) RESULTS=$2; shift 2 ;;
    -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench/tls.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
for t in certtool qemu-nbd nbdcopy fio taskset setpriv; do
  command -v $t >/dev/null || { echo "bench/tls.sh: $t is missing" >&2; exit 1; }
done
[[ " ${SERVERS:-} " != *" blockd-b "* ]] || [ -x "${BLOCKD_B:-}" ] ||
  { echo "bench/tls.sh: blockd-b needs BLOCKD_B=binary" >&2; exit 1; }
[ -x "$BLOCKD" ] || { echo "no blockd at $BLOCKD (set BLOCKD=)" >&2; exit 1; }
[ -f "$HARNESS/nbdbench.py" ] || { echo "no harness at $HARNESS" >&2; exit 1; }

mkdir -p "$RESULTS"
WORK=$(mktemp -d /dev/shm/blockd-tls-bench.XXXXXX)
SRV_PID=""
cleanup() {
  [ -n "$SRV_PID" ] && kill "$SRV_PID" 2>/dev/null && wait "$SRV_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

# Credentials: a CA, the server's certificate for localhost; the client
# directory holds the CA only.
ct() { certtool "$@" >/dev/null 2>&1; }
mkdir -p "$WORK/srv"
printf 'cn = "bench CA"\nca\ncert_signing_key\n' > "$WORK/ca.t"
printf 'cn = "localhost"\ndns_name = "localhost"\ntls_www_server\nsigning_key\nencryption_key\n' > "$WORK/s.t"
ct --generate-privkey --key-type=ecdsa --outfile "$WORK/ca-key.pem"
ct --generate-self-signed --load-privkey "$WORK/ca-key.pem" --template "$WORK/ca.t" --outfile "$WORK/srv/ca-cert.pem"
ct --generate-privkey --key-type=ecdsa --outfile "$WORK/srv/server-key.pem"
ct --generate-certificate --load-privkey "$WORK/srv/server-key.pem" \
   --load-ca-certificate "$WORK/srv/ca-cert.pem" --load-ca-privkey "$WORK/ca-key.pem" \
   --template "$WORK/s.t" --outfile "$WORK/srv/server-cert.pem"
mkdir -p "$WORK/home/.pki/libnbd" "$WORK/tmp"
cp "$WORK/srv/ca-cert.pem" "$WORK/home/.pki/libnbd/"
chmod 755 "$WORK"; chmod -R a+rX "$WORK/home"; chmod 1777 "$WORK/tmp"
IMG=$WORK/disk.img
head -c "$SIZE" /dev/urandom > "$IMG"

SOCK=$WORK/nbd.sock
OBJ="tls-creds-x509,id=t0,endpoint=server,dir=$WORK/srv,verify-peer=off"
TLS_URI="nbds+unix:///?socket=$SOCK"
PLAIN_URI="nbd+unix:///?socket=$SOCK"
NODES=(--blockdev "driver=file,node-name=f0,filename=$IMG"
       --blockdev "driver=raw,node-name=d0,file=f0")
EXPORT=(--export "type=nbd,id=e0,node-name=d0,name=,writable=on")

start() {
  rm -f "$SOCK"
  umask 0                       # the clients run as nobody
  case "$1" in
    blockd) taskset -c 0 "$BLOCKD" --object "$OBJ" "${NODES[@]}" \
              --nbd-server "addr.type=unix,addr.path=$SOCK,tls-creds=t0" \
              "${EXPORT[@]}" 2>>"$RESULTS/blockd.log" & ;;
    blockd-b) taskset -c 0 "$BLOCKD_B" --object "$OBJ" "${NODES[@]}" \
              --nbd-server "addr.type=unix,addr.path=$SOCK,tls-creds=t0" \
              "${EXPORT[@]}" 2>>"$RESULTS/blockd.log" & ;;
    blockd-plain) taskset -c 0 "$BLOCKD" "${NODES[@]}" \
              --nbd-server "addr.type=unix,addr.path=$SOCK" \
              "${EXPORT[@]}" 2>>"$RESULTS/blockd.log" & ;;
    qemu-nbd) taskset -c 0 qemu-nbd -f raw -t -e 0 -x "" -k "$SOCK" \
              --object "$OBJ" --tls-creds t0 "$IMG" 2>>"$RESULTS/qemu-nbd.log" & ;;
  esac
  SRV_PID=$!
}

stop() {
  kill "$SRV_PID" 2>/dev/null || true
  wait "$SRV_PID" 2>/dev/null || true
  SRV_PID=""
}

read -r -a SERVERS <<< "${SERVERS:-blockd qemu-nbd blockd-plain}"
RAW=$RESULTS/raw.txt
: > "$RAW"
for round in $(seq "$ROUNDS"); do
  n=${#SERVERS[@]}
  for i in $(seq 0 $((n - 1))); do
    name=${SERVERS[$(( (i + round - 1) % n ))]}
    uri=$TLS_URI; [ "$name" = blockd-plain ] && uri=$PLAIN_URI
    for w in $WORKLOADS; do
      start "$name"
      line=$(setpriv --reuid=65534 --regid=65534 --clear-groups \
               env HOME="$WORK/home" \
               /usr/bin/python3 "$HARNESS/nbdbench.py" run --workload "$w" \
               --uri "$uri" --pid "$SRV_PID" --name "$name" \
               --transport tls-unix --rep "$round" --size "$SIZE" \
               --tmpdir "$WORK/tmp" --ready-timeout 20 --client-cpus 1 \
               2>&1 | tail -1)
      stop
      echo "$line" | tee -a "$RAW" | cut -c1-160
    done
  done
done
/usr/bin/python3 "$HERE/ratios.py" "$RAW" | tee "$RESULTS/ratios.txt"
