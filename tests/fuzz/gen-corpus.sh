#!/bin/bash
# gen-corpus.sh - regenerate the seed corpora made from real programs:
#   corpus/fuzz-nbd-server  the bytes nbdinfo, nbdcopy, qemu-img, qemu-io,
#                           qemu-nbd --list and python3-libnbd send to
#                           blockd (recorded by capture.py, a proxy)
#   corpus/fuzz-qcow2-meta  images made by qemu-img and qemu-io
#
#   tests/fuzz/gen-corpus.sh [BUILDDIR]      (default: build)
#
# Exports match fuzz-nbd-server.c's: "disk" (1 MiB, writable, with
# qemu:allocation-depth) and "zero" (null-co, read-only).  Seeds are
# kept small (< 64 KiB: the targets' max_len).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../../build}" && pwd)
tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

# ---- NBD: real clients through the capturing proxy ----------------------
out=$here/corpus/fuzz-nbd-server
truncate -s 1M "$tmp/disk.img"
printf 'blockd fuzz seed data' | dd of="$tmp/disk.img" bs=1 seek=65536 \
    conv=notrunc status=none
"$build/blockd" \
    --blockdev "driver=file,node-name=f0,filename=$tmp/disk.img" \
    --blockdev driver=raw,node-name=disk,file=f0 \
    --blockdev driver=null-co,node-name=zero,size=1048576,read-zeroes=on \
    --nbd-server "addr.type=unix,addr.path=$tmp/nbd.sock" \
    --export nbd,id=disk,node-name=disk,name=disk,writable=on,allocation-depth=on \
    --export nbd,id=zero,node-name=zero,name=zero &
pids+=($!)
while [ ! -S "$tmp/nbd.sock" ]; do sleep 0.05; done
capture() {    # capture PREFIX COMMAND...: one client run through the proxy
    local prefix=$1
    shift
    "$here/capture.py" "$tmp/p.sock" "$tmp/nbd.sock" "$out" "$prefix" &
    local cap=$!
    while [ ! -S "$tmp/p.sock" ]; do sleep 0.05; done
    "$@" >/dev/null 2>&1 || echo "gen-corpus: '$*' failed" >&2
    sleep 0.3                    # the proxy writes once the client left
    kill $cap
    wait $cap 2>/dev/null || true
    rm -f "$tmp/p.sock"
}
u="nbd+unix:///disk?socket=$tmp/p.sock"
z="nbd+unix:///zero?socket=$tmp/p.sock"
head -c 32768 /dev/urandom > "$tmp/small.raw"
truncate -s 1M "$tmp/small.raw"
capture nbdinfo-list nbdinfo --list "nbd+unix://?socket=$tmp/p.sock"
capture nbdinfo nbdinfo "$u"
capture nbdinfo-map nbdinfo --map "$u"
capture nbdinfo-map-depth nbdinfo --map=qemu:allocation-depth "$u"
capture nbdinfo-zero nbdinfo --map "$z"
capture nbdcopy-read nbdcopy "$z" "$tmp/out.raw"
capture nbdcopy-write nbdcopy --request-size=16384 "$tmp/small.raw" "$u"
capture qemu-img-info qemu-img info -f raw "$u"
capture qemu-img-map qemu-img map -f raw --output=json "$u"
capture qemu-img-convert qemu-img convert -f raw -O raw "$z" "$tmp/out2.raw"
capture qemu-io qemu-io -f raw \
    -c 'write -P 0xab 0 4k' -c 'read -P 0xab 0 4k' -c 'write -z 8k 4k' \
    -c 'discard 16k 4k' -c 'write -f 32k 512' -c flush -c 'read 1016k 8k' \
    "$u"
capture qemu-nbd-list qemu-nbd --list -k "$tmp/p.sock"
capture libnbd-extended /usr/bin/python3 "$here/seed-libnbd.py" \
    "$tmp/p.sock" extended
capture libnbd-structured /usr/bin/python3 "$here/seed-libnbd.py" \
    "$tmp/p.sock" structured
capture libnbd-simple /usr/bin/python3 "$here/seed-libnbd.py" \
    "$tmp/p.sock" simple
# The same first exchanges against the TLS-only server of the target:
# every option is refused until STARTTLS.
capture tls-nbdinfo-list nbdinfo --list "nbd+unix://?socket=$tmp/p.sock"
capture tls-qemu-io qemu-io -f raw -c 'read 0 4k' "$u"

# STARTTLS and a real ClientHello (python3-libnbd with PSK, against a TLS-only
# blockd): the target's TLS mode answers with its own credentials, so
# the handshake fails there, after gnutls has parsed the hello.
mkdir -p "$tmp/psk"
echo "alice:$(printf '5a%.0s' $(seq 32))" > "$tmp/psk/keys.psk"
"$build/blockd" \
    --object "tls-creds-psk,id=tls0,endpoint=server,dir=$tmp/psk" \
    --blockdev driver=null-co,node-name=disk,size=1048576 \
    --nbd-server "addr.type=unix,addr.path=$tmp/tls.sock,tls-creds=tls0" \
    --export nbd,id=disk,node-name=disk,name=disk &
pids+=($!)
while [ ! -S "$tmp/tls.sock" ]; do sleep 0.05; done
"$here/capture.py" "$tmp/p.sock" "$tmp/tls.sock" "$out" tls-starttls &
cap=$!
while [ ! -S "$tmp/p.sock" ]; do sleep 0.05; done
/usr/bin/python3 -c '
import sys, nbd
h = nbd.NBD()
h.set_tls(nbd.TLS_REQUIRE)
h.set_tls_psk_file(sys.argv[2])
h.set_tls_username("alice")
h.set_export_name("disk")
h.connect_unix(sys.argv[1])
h.pread(4096, 0)
h.shutdown()' "$tmp/p.sock" "$tmp/psk/keys.psk" \
    || echo "gen-corpus: libnbd over TLS failed" >&2
sleep 0.3
kill $cap
wait $cap 2>/dev/null || true
rm -f "$tmp/p.sock"

# ---- qcow2: images from qemu-img ---------------------------------------
out=$here/corpus/fuzz-qcow2-meta
mkdir -p "$out"
qi() {    # qi NAME CREATE-OPTIONS QEMU-IO-COMMANDS...
    local name=$1 opts=$2
    shift 2
    qemu-img create -q -f qcow2 -o "$opts" "$tmp/$name.qcow2" 1M
    local args=()
    for c in "$@"; do args+=(-c "$c"); done
    if [ ${#args[@]} -gt 0 ]; then
        qemu-io -f qcow2 "${args[@]}" "$tmp/$name.qcow2" >/dev/null
    fi
    head -c 65536 "$tmp/$name.qcow2" > "$out/$name"
}
qi v3-512 cluster_size=512
qi v3-512-data cluster_size=512 'write -P 1 0 4k' 'write -z 8k 1k' \
    'write -P 2 512k 1k' 'discard 0 512'
qi v2-512 cluster_size=512,compat=0.10 'write -P 3 0 2k'
qi v3-4k-refbits1 cluster_size=4096,refcount_bits=1 'write -P 4 0 8k'
qi v3-4k-refbits64 cluster_size=4096,refcount_bits=64 'write -P 5 0 8k'
qi v3-16k-extl2 cluster_size=16384,extended_l2=on 'write -P 6 0 1k' \
    'write -z 2k 1k'
qi v3-4k-lazy cluster_size=4096,lazy_refcounts=on 'write -P 7 4k 4k'
qi v3-4k-compressed cluster_size=4096 'write -c -P 8 0 4k'
qemu-img create -q -f raw "$tmp/base.raw" 1M
qemu-img create -q -f qcow2 -o cluster_size=512,backing_file="$tmp/base.raw",backing_fmt=raw \
    "$tmp/backed.qcow2"
head -c 65536 "$tmp/backed.qcow2" > "$out/v3-512-backing"
qemu-img create -q -f qcow2 -o cluster_size=512 "$tmp/snap.qcow2" 1M
qemu-io -f qcow2 -c 'write -P 9 0 1k' "$tmp/snap.qcow2" >/dev/null
qemu-img snapshot -c first "$tmp/snap.qcow2"
qemu-io -f qcow2 -c 'write -P 10 0 1k' "$tmp/snap.qcow2" >/dev/null
qemu-img snapshot -c second "$tmp/snap.qcow2"
head -c 65536 "$tmp/snap.qcow2" > "$out/v3-512-snapshots"
qemu-img create -q -f qcow2 -o cluster_size=4096 "$tmp/bm.qcow2" 1M
qemu-img bitmap --add "$tmp/bm.qcow2" b0
qemu-io -f qcow2 -c 'write -P 11 0 4k' "$tmp/bm.qcow2" >/dev/null
head -c 65536 "$tmp/bm.qcow2" > "$out/v3-4k-bitmap"
echo "gen-corpus: $(ls "$here/corpus/fuzz-nbd-server" | wc -l) NBD seeds," \
     "$(ls "$out" | wc -l) qcow2 seeds"
