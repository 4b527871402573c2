#!/bin/bash
# dist-check.sh - make the release tarball with `meson dist` and check that
# it builds and passes the quick tests on its own (a fresh tree, no git).
#
#   scripts/dist-check.sh [BUILDDIR]     (default: build)
#
# The tarball is left in BUILDDIR/meson-dist/.  Takes a few minutes (a
# full build), so it is not part of the default `meson test` suite.
# The quick tests: the unit suite, the layer and schema checks, and the
# integration tests of the command line, QMP and NBD basics.
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
case $build in /*) ;; *) build=$src/$build ;; esac

# meson dist archives the committed tree (HEAD), so it checks what a
# release would ship.
meson dist -C "$build" --no-tests --formats xztar --allow-dirty
tarball=$(ls -t "$build"/meson-dist/blockd-*.tar.xz | head -1)
echo "dist-check: $tarball"

work=$(mktemp -d /tmp/blockd-dist.XXXXXX)
trap 'rm -rf "$work"' EXIT
tar -C "$work" -xJf "$tarball"
tree=$(echo "$work"/blockd-*)
if [ -d "$tree/.git" ]; then
    echo "dist-check: the tarball holds a .git directory" >&2
    exit 1
fi
cd "$tree"
meson setup _build -Dwerror=true >/dev/null
nice -n 10 ninja -C _build -j2 >/dev/null
# (Suites and test names are separate runs: given together, meson runs
# only the tests that match both.)
meson test -C _build --num-processes 2 --print-errorlogs \
    --suite unit --suite layers --suite schema --suite docs | tee suites.log
meson test -C _build --num-processes 2 --print-errorlogs \
    test-cli test-qmp test-blockdev test-nbd-qmp test-man test-install \
    | tee named.log
for log in suites.log named.log; do
    if ! grep -Eq '^Ok: +[1-9]' "$log"; then
        echo "dist-check: no test ran ($log)" >&2
        exit 1
    fi
done
echo "dist-check: $(basename "$tarball") builds and passes the quick tests"
