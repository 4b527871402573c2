#!/bin/bash
# tests/libnbd-interop.sh - libnbd's own interop tests that start
# qemu-nbd (interop/ in libnbd's source), built against Debian's
# libnbd-dev and run twice: with Debian's qemu-nbd and with blockd-nbd
# in its place; prints both results side by side.  Not in the default
# suite (it downloads libnbd's source).
#
#   tests/libnbd-interop.sh [--fetch-only]
#
# libnbd's source comes from `apt-get source libnbd` (the version of
# the installed libnbd0) through a private deb-src list: the system's
# apt lists are not touched.  It is cached in $LIBNBD_CACHE (default
# /var/tmp/blockd-libnbd-interop).  Environment: BLOCKD_NBD (default
# build/blockd-nbd).
#
# The C tests name their server at compile time (-DSERVER, as libnbd's
# interop/Makefile.am does with configure's $QEMU_NBD): each is built
# once per server with the same flags as there.  The shell tests run
# `qemu-nbd` from PATH: for blockd-nbd, PATH starts with a directory
# whose qemu-nbd is a symlink to it.  Exit status 77 is a skip.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BLOCKD_NBD=${BLOCKD_NBD:-$ROOT/build/blockd-nbd}
CACHE=${LIBNBD_CACHE:-/var/tmp/blockd-libnbd-interop}
FETCH_ONLY=0
[ "${1:-}" = --fetch-only ] && { FETCH_ONLY=1; shift; }

. "$HERE/debsrc.sh"
SRC=$(debsrc_dir "$CACHE" libnbd libnbd0) ||
    { echo "libnbd-interop.sh: could not fetch libnbd's source" >&2
      exit 77; }
[ "$FETCH_ONLY" = 1 ] && { echo "$SRC"; exit 0; }
[ -x "$BLOCKD_NBD" ] || { echo "no blockd-nbd at $BLOCKD_NBD" >&2; exit 1; }
BLOCKD_NBD=$(readlink -f "$BLOCKD_NBD")
for p in pkg-config certtool psktool qemu-img qemu-io nbdsh /usr/bin/qemu-nbd
do
    command -v "$p" >/dev/null ||
        { echo "libnbd-interop.sh: $p is missing" >&2; exit 77; }
done
pkg-config --exists libnbd ||
    { echo "libnbd-interop.sh: libnbd-dev is missing" >&2; exit 77; }

RES=$CACHE/results/$(date +%F-%H%M%S)
mkdir -p "$RES"

# A libnbd-like tree for one server: B/config.h, B/tests (functions.sh,
# pki/, keys.psk), B/interop (the programs, the shell tests).
setup_tree() {   # B
    local b=$1
    mkdir -p "$b/interop" "$b/tests" "$b/bin"
    cat > "$b/config.h" <<'H'
#define HAVE_GNUTLS 1
#define HAVE_GNUTLS_NO_SIGNAL 1
H
    sed -e "s|@abs_top_srcdir@|$SRC|g" -e 's|@configure_input@||' \
        "$SRC/tests/functions.sh.in" > "$b/tests/functions.sh"
    if [ ! -d "$CACHE/pki" ]; then
        (cd "$SRC/tests" && SRCDIR=. CERTTOOL=certtool \
             ./make-pki.sh "$CACHE/pki-t" >/dev/null 2>&1) &&
            mv "$CACHE/pki-t" "$CACHE/pki"
    fi
    [ -f "$CACHE/keys.psk" ] ||
        psktool -u alice -p "$CACHE/keys.psk" >/dev/null 2>&1
    cp -r "$CACHE/pki" "$b/tests/pki"
    cp "$CACHE/keys.psk" "$b/tests/keys.psk"
    for t in dirty-bitmap.sh structured-read.sh \
             interop-qemu-block-size.sh; do
        cp "$SRC/interop/$t" "$b/interop/$t"
        chmod +x "$b/interop/$t"
    done
}

build() {   # B NAME SOURCES... -- CPPFLAGS...
    local b=$1 name=$2 srcs=() flags=()
    shift 2
    while [ "$1" != -- ]; do srcs+=("$SRC/interop/$1"); shift; done
    shift
    flags=("$@")
    gcc -O1 -w -I"$b" -I"$SRC/common/include" -I"$SRC/tests" \
        "${flags[@]}" -o "$b/interop/$name" "${srcs[@]}" \
        $(pkg-config --cflags --libs libnbd gnutls) \
        > "$b/interop/$name.build.log" 2>&1
}

build_all() {   # B SERVER
    local b=$1 s=$2
    build "$b" interop-qemu-nbd interop.c requires.c -- \
        -DSOCKET_ACTIVATION=1 -DNEEDS_TMPFILE=1 -DSERVER="\"$s\"" \
        -DSERVER_PARAMS='"-f", "raw", "-x", "/", TMPFILE' \
        -DEXPORT_NAME='"/"'
    build "$b" interop-qemu-nbd-tls-certs interop.c requires.c -- \
        -DSOCKET_ACTIVATION=1 -DNEEDS_TMPFILE=1 -DSERVER="\"$s\"" \
        -DSERVER_PARAMS="\"--object\", \"tls-creds-x509,id=tls0,endpoint=server,dir=$b/tests/pki\", \"--tls-creds\", \"tls0\", \"-f\", \"raw\", \"-x\", \"/\", TMPFILE" \
        -DEXPORT_NAME='"/"' -DCERTS=1 -DTLS_MODE=LIBNBD_TLS_REQUIRE
    build "$b" interop-qemu-nbd-tls-psk interop.c requires.c -- \
        -DSOCKET_ACTIVATION=1 -DNEEDS_TMPFILE=1 -DSERVER="\"$s\"" \
        -DSERVER_PARAMS="\"--object\", \"tls-creds-psk,id=tls0,endpoint=server,dir=$b/tests\", \"--tls-creds\", \"tls0\", \"-f\", \"raw\", \"-x\", \"/\", TMPFILE" \
        -DEXPORT_NAME='"/"' -DPSK=1 -DTLS_MODE=LIBNBD_TLS_REQUIRE
    build "$b" list-exports-qemu-nbd list-exports.c requires.c -- \
        -DSOCKET_ACTIVATION=1 -DNEEDS_TMPFILE=1 -DSERVER="\"$s\"" \
        -DSERVER_PARAMS='"-f", "raw", "-x", "testing", "-D", "data", TMPFILE' \
        -DEXPORTS='"testing"' -DDESCRIPTIONS='"data"'
    build "$b" socket-activation-qemu-nbd socket-activation.c -- \
        -DSERVER="\"$s\"" -DSERVER_PARAMS='"-f", "raw", "-x", "", tmpfile'
    build "$b" dirty-bitmap dirty-bitmap.c --
    build "$b" structured-read structured-read.c --
}

TESTS=(interop-qemu-nbd interop-qemu-nbd-tls-certs interop-qemu-nbd-tls-psk
       list-exports-qemu-nbd socket-activation-qemu-nbd dirty-bitmap.sh
       structured-read.sh interop-qemu-block-size.sh)

run_all() {   # NAME SERVER
    # Debian's python3 first: nbdsh runs `python3 -m nbd`.
    local name=$1 s=$2 b=$RES/$1 t st path=/usr/bin:$PATH
    setup_tree "$b"
    build_all "$b" "$s"
    if [ "$s" != /usr/bin/qemu-nbd ]; then
        ln -sf "$s" "$b/bin/qemu-nbd"
        path=$b/bin:$path
    fi
    for t in "${TESTS[@]}"; do
        if [ ! -x "$b/interop/$t" ]; then
            echo "$t build-failed" >> "$b/results.txt"
            continue
        fi
        (cd "$b/interop" && PATH=$path srcdir=. VG= \
             timeout 300 nice -n 10 "./$t") > "$b/interop/$t.log" 2>&1
        st=$?
        case $st in
            0) echo "$t pass" ;;
            77) echo "$t skip" ;;
            *) echo "$t fail($st)" ;;
        esac >> "$b/results.txt"
    done
}

run_all qemu-nbd /usr/bin/qemu-nbd
run_all blockd-nbd "$BLOCKD_NBD"
worse=0
printf '%-30s %-12s %s\n' test qemu-nbd blockd-nbd
for t in "${TESTS[@]}"; do
    q=$(awk -v t="$t" '$1 == t {print $2}' "$RES/qemu-nbd/results.txt")
    m=$(awk -v t="$t" '$1 == t {print $2}' "$RES/blockd-nbd/results.txt")
    printf '%-30s %-12s %s\n' "$t" "$q" "$m"
    [ "$q" = pass ] && [ "$m" != pass ] && worse=1
done
echo "results and logs in $RES"
exit $worse
