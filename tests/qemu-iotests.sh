#!/bin/bash
# tests/qemu-iotests.sh - QEMU's own qemu-iotests that drive qemu-nbd, run
# with blockd-nbd in its place (QEMU_NBD_PROG) and Debian's qemu-img,
# qemu-io, qemu-system-x86_64 and qemu-storage-daemon for the rest, and
# the same list with Debian's qemu-nbd; prints both results side by side.
# Not in the default suite (it downloads QEMU's source and takes
# minutes).
#
#   tests/qemu-iotests.sh [--fetch-only] [TEST...]
#   tests/qemu-iotests.sh --qsd [TEST...]
#
# --qsd: the tests that start qemu-storage-daemon (QSD_PROG; default:
# those naming $QSD or qsd, e.g. tests/qsd-jobs), -qcow2, run with
# Debian's qemu-storage-daemon and with blockd through
# tests/qsd-blockd.py (which maps qemu-storage-daemon's stdio monitor),
# side by side.
#
# QEMU's source comes from `apt-get source qemu` (the version of the
# installed qemu-utils) through a private deb-src list: the system's apt
# lists are not touched.  It is cached in $IOTESTS_CACHE (default
# /var/tmp/blockd-qemu-iotests).  Environment: BLOCKD_NBD (default
# build/blockd-nbd), IOTESTS_FORMATS (default "raw qcow2 nbd"),
# IOTESTS_TIMEOUT (seconds per check run, default 3600).  Without TEST
# arguments: for -raw and -qcow2 every test in tests/qemu-iotests that
# uses qemu-nbd (QEMU_NBD or _qemu_nbd_wrapper, qemu_nbd_* in Python);
# for -nbd every test that declares the nbd protocol and the raw format
# (QEMU's harness serves their image with QEMU_NBD_PROG).  Each
# (program, format) run has its own directory under
# $IOTESTS_CACHE/results/DATE/, with check's log in log.txt and the
# failing tests' *.out.bad in scratch/.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BLOCKD_NBD=${BLOCKD_NBD:-$ROOT/build/blockd-nbd}
CACHE=${IOTESTS_CACHE:-/var/tmp/blockd-qemu-iotests}
FETCH_ONLY=0
[ "${1:-}" = --fetch-only ] && { FETCH_ONLY=1; shift; }
QSD_MODE=0
[ "${1:-}" = --qsd ] && { QSD_MODE=1; shift; }

. "$HERE/debsrc.sh"
SRC=$(debsrc_dir "$CACHE" qemu qemu-utils) ||
    { echo "qemu-iotests.sh: could not fetch QEMU's source" >&2; exit 77; }
[ "$FETCH_ONLY" = 1 ] && { echo "$SRC"; exit 0; }
IOT=$SRC/tests/qemu-iotests
[ -x "$BLOCKD_NBD" ] || { echo "no blockd-nbd at $BLOCKD_NBD" >&2; exit 1; }

# The tests that run qemu-nbd themselves (QEMU_NBD, _qemu_nbd_wrapper,
# qemu_nbd_* in Python), for -raw and -qcow2.
select_tests() {
    (cd "$IOT" && grep -lE 'QEMU_NBD|qemu_nbd|_qemu_nbd|nbd_server' \
        [0-9][0-9][0-9] tests/* 2>/dev/null | grep -v '\.out$' |
        sed 's|^tests/||' | sort -u)
}

# The tests that start qemu-storage-daemon, for --qsd.
select_qsd_tests() {
    (cd "$IOT" && grep -lE '\$QSD\b|qsd' [0-9][0-9][0-9] tests/* \
        2>/dev/null | grep -v '\.out$' | sed 's|^tests/||' | sort -u)
}

# The tests `check -nbd` can run: their declared protocols include nbd
# (or are generic / not restricted) and their formats include raw (what
# -nbd implies).  QEMU's harness serves TEST_IMG with QEMU_NBD_PROG for
# these.  The declarations are read statically, so the ~250 tests that
# would only print "not run" are not started at all.
select_nbd_tests() {
    /usr/bin/python3 - "$IOT" <<'PY'
import os, re, sys
iot = sys.argv[1]
names = sorted(f for f in os.listdir(iot) if re.fullmatch(r"\d{3}", f))
names += sorted("tests/" + f for f in os.listdir(os.path.join(iot, "tests"))
                if not f.endswith((".out", "~")) and "." not in f)
for f in names:
    path = os.path.join(iot, f)
    if not os.path.isfile(path):
        continue
    text = open(path, errors="replace").read()
    if text.startswith("#!") and "python" in text.splitlines()[0]:
        p = re.search(r"[^_]supported_protocols=\[([^]]*)\]", text)
        u = re.search(r"unsupported_protocols=\[([^]]*)\]", text)
        fm = re.search(r"[^_]supported_fmts=\[([^]]*)\]", text)
        if p and "nbd" not in p.group(1):
            continue
        if u and "nbd" in u.group(1):
            continue
        if fm and not re.search(r"'(raw|generic)'", fm.group(1)):
            continue
    else:
        p = re.search(r"^_supported_proto(.*)$", text, re.M)
        u = re.search(r"^_unsupported_proto(.*)$", text, re.M)
        fm = re.search(r"^_supported_fmt(.*)$", text, re.M)
        if not p or not re.search(r"\b(nbd|generic)\b", p.group(1)):
            continue
        if u and re.search(r"\bnbd\b", u.group(1)):
            continue
        if not fm or not re.search(r"\b(raw|generic)\b", fm.group(1)):
            continue
    print(f[len("tests/"):] if f.startswith("tests/") else f)
PY
}

# One run of check, in its own directory: DIR/tests/qemu-iotests is a
# copy of the test directory (12 MB; tests run with it as their working
# directory and some make files and sockets there, e.g. 162's "42"),
# DIR/python points at QEMU's python packages, the images and *.out.bad
# go to DIR/scratch and the sockets to a private short directory under
# /tmp.  Two runs never share a file and may run at the same time.
run_check() {   # NBD_PROG FORMAT DIR TESTS... (QSD: QSD_PROG)
    local nbd=$1 fmt=$2 dir=$3 sock rc
    shift 3
    mkdir -p "$dir/tests" "$dir/scratch"
    cp -a "$IOT" "$dir/tests/qemu-iotests"
    rm -rf "$dir/tests/qemu-iotests/scratch"
    ln -sfn "$SRC/python" "$dir/python"
    sock=$(mktemp -d /tmp/iot.XXXXXX)
    (cd "$dir/tests/qemu-iotests" &&
     QEMU_PROG=/usr/bin/qemu-system-x86_64 \
     QEMU_IMG_PROG=/usr/bin/qemu-img QEMU_IO_PROG=/usr/bin/qemu-io \
     QEMU_NBD_PROG=$nbd QSD_PROG=${QSD:-/usr/bin/qemu-storage-daemon} \
     TEST_DIR=$dir/scratch SOCK_DIR=$sock PYTHON=/usr/bin/python3 \
     timeout "${IOTESTS_TIMEOUT:-3600}" nice -n 10 /usr/bin/python3 \
         ./check --color off "-$fmt" "$@") > "$dir/log.txt" 2>&1
    rc=$?
    rm -rf "$sock" "$dir/tests/qemu-iotests"
    return $rc
}

# Debian's qemu-system-x86_64 is built without the qtest accelerator
# that QEMU's harness starts every VM with: such tests fail for both
# programs alike (the summary says so).
/usr/bin/qemu-system-x86_64 -accel help 2>/dev/null | grep -qx qtest ||
    echo "note: qemu-system-x86_64 has no qtest accelerator: tests that" \
         "start a VM fail with both programs" >&2

TESTS=("$@")
FORMATS=${IOTESTS_FORMATS:-raw qcow2 nbd}
REF=qemu-nbd OURS=blockd-nbd
if [ "$QSD_MODE" = 1 ]; then
    FORMATS=${IOTESTS_FORMATS:-qcow2}
    REF=qemu-storage-daemon OURS=blockd
fi
mkdir -p "$CACHE/results"
# Unique even for two runs in the same second (build trees in parallel).
RES=$(mktemp -d "$CACHE/results/$(date +%F-%H%M%S).XXXX")
mkdir -p "$RES"
for fmt in $FORMATS; do
    if [ ${#TESTS[@]} -gt 0 ]; then
        list=("${TESTS[@]}")
    elif [ "$QSD_MODE" = 1 ]; then
        mapfile -t list < <(select_qsd_tests)
    elif [ "$fmt" = nbd ]; then
        mapfile -t list < <(select_nbd_tests)
    else
        mapfile -t list < <(select_tests)
    fi
    echo "-$fmt: ${list[*]}" >&2
    # Both programs at once, each in its own directory.
    if [ "$QSD_MODE" = 1 ]; then
        run_check /usr/bin/qemu-nbd "$fmt" "$RES/$REF-$fmt" "${list[@]}" &
        QSD=$HERE/qsd-blockd.py BLOCKD=${BLOCKD:-$ROOT/build/blockd} \
            run_check /usr/bin/qemu-nbd "$fmt" "$RES/$OURS-$fmt" \
            "${list[@]}" &
    else
        run_check /usr/bin/qemu-nbd "$fmt" "$RES/$REF-$fmt" "${list[@]}" &
        run_check "$BLOCKD_NBD" "$fmt" "$RES/$OURS-$fmt" "${list[@]}" &
    fi
    wait
done
/usr/bin/python3 - "$RES" "$REF" "$OURS" $FORMATS <<'PY'
import os, re, sys
res, ref, ours, fmts = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
def parse(path):
    # check rewrites each status line with '\r'; the last part counts.
    out = {}
    try:
        text = open(path, errors="replace").read()
    except OSError:
        return out
    for line in text.splitlines():
        line = line.split("\r")[-1]
        m = re.match(r"^(\S+)\s+(pass|fail|not run)\b.*?(\S.*)?$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out
worse = 0
for fmt in fmts:
    q = parse(os.path.join(res, "%s-%s" % (ref, fmt), "log.txt"))
    b = parse(os.path.join(res, "%s-%s" % (ours, fmt), "log.txt"))
    cnt = {}
    for t in sorted(set(q) | set(b)):
        k = (q.get(t), b.get(t))
        cnt.setdefault(k, []).append(t)
    print("-%s: %d tests" % (fmt, len(set(q) | set(b))))
    for (qs, bs), ts in sorted(cnt.items(), key=lambda kv: str(kv[0])):
        print("  %s %-8s %s %-8s %3d: %s" % (
            ref, qs, ours, bs, len(ts), " ".join(ts)))
        if qs == "pass" and bs != "pass":
            worse += len(ts)
    if not q:
        print("  no results from %s: see the log" % ref)
        worse += 1
print("results in", res)
sys.exit(1 if worse else 0)
PY
