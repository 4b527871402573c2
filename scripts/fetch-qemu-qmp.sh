#!/bin/bash
# fetch-qemu-qmp.sh - QEMU's Python QMP library (python/qemu/qmp, the same
# code as the qemu.qmp package, with qmp-shell) from Debian's qemu source
# package, for tests/integration/test-qemu-qmp.py.
#
#   scripts/fetch-qemu-qmp.sh [CACHE_DIR]
#
# Prints the directory to put on PYTHONPATH (it holds qemu/qmp/).  The
# source package is fetched with a private deb-src list and private apt
# state (the machine's own lists are not touched), and only python/ is
# kept, under CACHE_DIR (default: ${XDG_CACHE_HOME:-~/.cache}/blockd).
# Exits 1 with a message on standard error when it cannot be fetched.
set -euo pipefail

cache=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/blockd}
dest=$cache/qemu-python
if [ -f "$dest/qemu/qmp/__init__.py" ]; then
    echo "$dest"
    exit 0
fi
mkdir -p "$cache"
work=$(mktemp -d "$cache/fetch.XXXXXX")
trap 'rm -rf "$work"' EXIT

# deb-src lines for the suites the machine's deb lines name.
src=$work/sources.list
{
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] && sed -n 's/^deb \(.*\)/deb-src \1/p' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        sed -e 's/^Types: deb$/Types: deb-src/' "$f" > "$work/$(basename "$f")"
    done
} > "$src"
mkdir -p "$work/parts" "$work/lists/partial" "$work/archives/partial"
for f in "$work"/*.sources; do
    [ -f "$f" ] && mv "$f" "$work/parts/"
done
apt_opts=(-o "Dir::Etc::SourceList=$src"
          -o "Dir::Etc::SourceParts=$work/parts"
          -o "Dir::State::Lists=$work/lists"
          -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
          -o "Debug::NoLocking=1")
if ! apt-get "${apt_opts[@]}" -qq update >"$work/log" 2>&1; then
    echo "fetch-qemu-qmp: apt-get update (deb-src) failed:" >&2
    tail -5 "$work/log" >&2
    exit 1
fi
if ! (cd "$work" && apt-get "${apt_opts[@]}" -qq --download-only \
        source qemu >"$work/log" 2>&1); then
    echo "fetch-qemu-qmp: apt-get source qemu failed:" >&2
    tail -5 "$work/log" >&2
    exit 1
fi
orig=$(ls "$work"/qemu_*.orig.tar.* | head -1)
mkdir -p "$work/x"
tar -C "$work/x" -xf "$orig" --wildcards '*/python/qemu/*'
top=$(ls "$work/x")
if [ ! -f "$work/x/$top/python/qemu/qmp/__init__.py" ]; then
    echo "fetch-qemu-qmp: $orig has no python/qemu/qmp" >&2
    exit 1
fi
rm -rf "$dest"
mv "$work/x/$top/python" "$dest"
echo "$dest"
