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
# HOTPATH_OP=write measures the write path instead, on the raw file
# only: "seqwrite" (256 KiB sequential writes, QD 8) and "randwrite"
# (4 KiB random writes, QD 16), load.sh's two write workloads, with
# the server CPU per GiB and per request of each binary beside the
# ratio.
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
OP=${HOTPATH_OP:-read}
KINDS="null raw"
if [ "$OP" = write ]; then
    KINDS="seqwrite randwrite"
    fallocate -l 1G "$IMG"     # pages allocated: every run overwrites
else
    truncate -s 256M "$IMG"
fi
for r in $(seq 1 "$ROUNDS"); do
    for kind in $KINDS; do
        for which in old new; do
            bin=$OLD
            [ $which = new ] && bin=$NEW
            case $kind in
            seqwrite) args="--op write --pattern seq --bs 262144 --qd 8" ;;
            randwrite) args="--op write --pattern rand --bs 4096 --qd 16" ;;
            *) args="--op read --pattern rand --bs 4096 --qd 16" ;;
            esac
            if [ $kind = null ]; then
                node="driver=null-co,node-name=n0,size=1073741824,read-zeroes=on"
            else
                node="driver=file,node-name=n0,filename=$IMG"
            fi
            rm -f "$D/s.sock"
            "$bin" --blockdev "$node" \
                --nbd-server "addr.type=unix,addr.path=$D/s.sock" \
                --export nbd,id=e0,node-name=n0,writable=on >"$D/log" 2>&1 &
            pid=$!
            for _ in $(seq 200); do
                [ -S "$D/s.sock" ] && break
                sleep 0.05
            done
            # shellcheck disable=SC2086
            out=$("$LOAD" --unix "$D/s.sock" --export n0 $args \
                  --seconds "$SECS" --server-pid "$pid" --json)
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
for kind in sorted({k[1] for k in rows}):
    rounds = sorted({k[0] for k in rows if k[1] == kind})
    ratio = [rows[(r, kind, "new")]["server_us_per_op"] /
             rows[(r, kind, "old")]["server_us_per_op"] for r in rounds]
    med = {w: {f: statistics.median(rows[(r, kind, w)][f] for r in rounds)
               for f in ("server_us_per_op", "server_s_per_gib")}
           for w in ("old", "new")}
    print("%s: new/old server CPU per request, median of %d rounds: %.3f"
          " (old %.2f us/op %.4f s/GiB, new %.2f us/op %.4f s/GiB)"
          % (kind, len(ratio), statistics.median(ratio),
             med["old"]["server_us_per_op"], med["old"]["server_s_per_gib"],
             med["new"]["server_us_per_op"], med["new"]["server_s_per_gib"]))
PY
