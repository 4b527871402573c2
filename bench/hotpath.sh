#!/bin/bash
# bench/hotpath.sh - the data path's cost, before/after a change: two
# blockd binaries serve 4 KiB random reads at QD16 (bench/nbdload, one
# connection) from null-co and from a raw file on tmpfs, interleaved
# round by round so the machine's load hits both alike.  Prints one line
# per run (round, node, binary, load average, nbdload's JSON) and then
# the median of new/old server CPU per request, paired by round: the
# figure to read on a loaded machine (IOPS there follow the neighbours).
#
#   bench/hotpath.sh OLD_BLOCKD NEW_BLOCKD [ROUNDS [SECONDS]]
#
# OLD_BLOCKD is typically built from main in a scratch directory
# (git archive main | tar -x -C DIR; meson setup DIR/build; ninja -C
# DIR/build blockd).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OLD=$1
NEW=$2
ROUNDS=${3:-8}
SECS=${4:-4}
LOAD=${NBDLOAD:-$HERE/../build/nbdload}
D=$(mktemp -d /tmp/hotpath.XXXXXX)
IMG=/dev/shm/hotpath.$$.raw
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    rm -rf "$D" "$IMG"
}
trap cleanup EXIT
truncate -s 256M "$IMG"
for r in $(seq 1 "$ROUNDS"); do
    for kind in null raw; do
        for which in old new; do
            bin=$OLD
            [ $which = new ] && bin=$NEW
            if [ $kind = null ]; then
                node="driver=null-co,node-name=n0,size=1073741824,read-zeroes=on"
            else
                node="driver=file,node-name=n0,filename=$IMG"
            fi
            rm -f "$D/s.sock"
            "$bin" --blockdev "$node" \
                --nbd-server "addr.type=unix,addr.path=$D/s.sock" \
                --export nbd,id=e0,node-name=n0 >"$D/log" 2>&1 &
            pid=$!
            for _ in $(seq 200); do
                [ -S "$D/s.sock" ] && break
                sleep 0.05
            done
            out=$("$LOAD" --unix "$D/s.sock" --export n0 --op read \
                  --pattern rand --bs 4096 --qd 16 --seconds "$SECS" \
                  --server-pid "$pid" --json)
            echo "$r $kind $which $(cut -d' ' -f1 /proc/loadavg) $out"
            kill "$pid"
            wait "$pid" 2>/dev/null || true
            pid=
        done
    done
done | tee "$D/runs"
python3 - "$D/runs" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    r, kind, which, load, js = line.split(" ", 4)
    rows[(r, kind, which)] = json.loads(js)
for kind in ("null", "raw"):
    rounds = sorted({k[0] for k in rows if k[1] == kind})
    ratio = [rows[(r, kind, "new")]["server_us_per_op"] /
             rows[(r, kind, "old")]["server_us_per_op"] for r in rounds]
    print("%s: new/old server CPU per request, median of %d rounds: %.3f"
          % (kind, len(ratio), statistics.median(ratio)))
PY
