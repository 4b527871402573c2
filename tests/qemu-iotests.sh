#!/bin/bash
# tests/qemu-iotests.sh - QEMU's own qemu-iotests that drive qemu-nbd, run
# with blockd-nbd in its place (QEMU_NBD_PROG) and Debian's qemu-img,
# qemu-io, qemu-system-x86_64 and qemu-storage-daemon for the rest, and
# the same list with Debian's qemu-nbd; prints both results side by side.
# Not in the default suite (it downloads QEMU's source and takes
# minutes).
#
#   tests/qemu-iotests.sh [--fetch-only] [TEST...]
#
# QEMU's source comes from `apt-get source qemu` (the version of the
# installed qemu-utils) through a private deb-src list: the system's apt
# lists are not touched.  It is cached in $IOTESTS_CACHE (default
# /var/tmp/blockd-qemu-iotests).  Environment: BLOCKD_NBD (default
# build/blockd-nbd).  Without TEST arguments: every test in
# tests/qemu-iotests that uses qemu-nbd (QEMU_NBD or _qemu_nbd_wrapper,
# qemu_nbd_* in Python), for raw and qcow2, and the -nbd protocol tests
# (which QEMU's harness serves with qemu-nbd).
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BLOCKD_NBD=${BLOCKD_NBD:-$ROOT/build/blockd-nbd}
CACHE=${IOTESTS_CACHE:-/var/tmp/blockd-qemu-iotests}
FETCH_ONLY=0
[ "${1:-}" = --fetch-only ] && { FETCH_ONLY=1; shift; }

fetch() {
    local list=$CACHE/apt/sources.list
    local opts=(-o "Dir::Etc::SourceList=$list"
                -o "Dir::Etc::SourceParts=$CACHE/apt/parts.d"
                -o "Dir::State::Lists=$CACHE/apt/lists"
                -o "Dir::Cache=$CACHE/apt/cache"
                -o "APT::Get::List-Cleanup=false")
    mkdir -p "$CACHE/apt/lists/partial" "$CACHE/apt/cache" \
             "$CACHE/apt/parts.d" "$CACHE/src"
    cat > "$list" <<LIST
deb-src http://deb.debian.org/debian bookworm main
deb-src http://deb.debian.org/debian-security bookworm-security main
deb-src http://deb.debian.org/debian bookworm-updates main
LIST
    local ver
    ver=$(dpkg-query -W -f '${source:Version}' qemu-utils)
    apt-get -q "${opts[@]}" update >/dev/null || return 1
    (cd "$CACHE/src" && apt-get -q "${opts[@]}" source "qemu=$ver") \
        || return 1
}

SRC=$(ls -d "$CACHE"/src/qemu-*/ 2>/dev/null | head -1)
if [ -z "$SRC" ]; then
    echo "fetching QEMU's source into $CACHE ..." >&2
    fetch || { echo "qemu-iotests.sh: could not fetch QEMU's source" >&2
               exit 77; }
    SRC=$(ls -d "$CACHE"/src/qemu-*/ | head -1)
fi
[ "$FETCH_ONLY" = 1 ] && { echo "$SRC"; exit 0; }
IOT=$SRC/tests/qemu-iotests
[ -x "$BLOCKD_NBD" ] || { echo "no blockd-nbd at $BLOCKD_NBD" >&2; exit 1; }

# The tests that run qemu-nbd, by format ("raw qcow2"), or "nbd" for
# the -nbd protocol (served by qemu-nbd inside QEMU's harness).
select_tests() {
    (cd "$IOT" && grep -lE 'QEMU_NBD|qemu_nbd|_qemu_nbd|nbd_server' \
        [0-9][0-9][0-9] tests/* 2>/dev/null | grep -v '\.out$' |
        sed 's|^tests/||' | sort -u)
}

run_check() {   # NBD_PROG FORMAT OUT TESTS...
    local nbd=$1 fmt=$2 out=$3
    shift 3
    # check finds tests in its working directory; the programs are
    # Debian's, named by the *_PROG variables.
    (cd "$IOT" &&
     QEMU_PROG=/usr/bin/qemu-system-x86_64 \
     QEMU_IMG_PROG=/usr/bin/qemu-img QEMU_IO_PROG=/usr/bin/qemu-io \
     QEMU_NBD_PROG=$nbd QSD_PROG=/usr/bin/qemu-storage-daemon \
     PYTHON=/usr/bin/python3 \
     timeout 1800 nice -n 10 /usr/bin/python3 "$IOT/check" -$fmt \
         "$@") > "$out" 2>&1
}

TESTS=("$@")
[ ${#TESTS[@]} -eq 0 ] && mapfile -t TESTS < <(select_tests)
RES=$CACHE/results/$(date +%F-%H%M%S)
mkdir -p "$RES"
for fmt in raw qcow2 nbd; do
    run_check /usr/bin/qemu-nbd "$fmt" "$RES/qemu-nbd-$fmt.txt" "${TESTS[@]}"
    run_check "$BLOCKD_NBD" "$fmt" "$RES/blockd-nbd-$fmt.txt" "${TESTS[@]}"
done
/usr/bin/python3 - "$RES" <<'PY'
import os, re, sys
res = sys.argv[1]
def parse(path):
    out = {}
    for line in open(path, errors="replace"):
        m = re.match(r"^(\S+)\s+(pass|fail|not run)\b", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out
worse = 0
for fmt in ("raw", "qcow2", "nbd"):
    q = parse(os.path.join(res, "qemu-nbd-%s.txt" % fmt))
    b = parse(os.path.join(res, "blockd-nbd-%s.txt" % fmt))
    print("-%s: qemu-nbd passes %d, blockd-nbd passes %d" % (
        fmt, sum(v == "pass" for v in q.values()),
        sum(v == "pass" for v in b.values())))
    if not q:
        print("  no results from qemu-nbd: see the log")
        worse += 1
    for t in sorted(set(q) | set(b)):
        if q.get(t) != b.get(t):
            print("  %-24s qemu-nbd: %-8s blockd-nbd: %s" % (
                t, q.get(t), b.get(t)))
            if q.get(t) == "pass":
                worse += 1
print("results in", res)
sys.exit(1 if worse else 0)
PY
