#!/bin/sh
# quickstart.sh - install the dependencies, build blockd and start it in
# the foreground with its built-in defaults (Ctrl-C stops it).
set -eu
cd "$(dirname "$0")/.."
scripts/install-deps.sh
[ -d build ] || meson setup build >/dev/null
ninja -C build >/dev/null
exec build/blockd "$@"
