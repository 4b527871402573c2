#!/bin/bash
# test.sh - build blockd twice (gcc; then clang with ASan+UBSan and the
# fuzz targets; warnings are errors in both) and run every test suite in
# both builds; between them, blockd alone built without librbd and its
# one test (test-rbd-optional.py).  The last line is the total:
#   tests: N passed, N failed, N skipped
# Exit status 0 only when nothing failed.
#
#   scripts/test.sh            everything
#   scripts/test.sh --quick    only the normal build (gcc)
set -u -o pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh || exit 1

QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
JOBS=$(nproc)
pass=0; fail=0; skip=0; rc=0

run_build() {  # DIR MESON-ARGS...
  local dir=$1; shift
  if [ ! -d "$dir" ]; then
    meson setup "$dir" "$@" >/dev/null || return 1
  else
    meson setup --reconfigure "$dir" "$@" >/dev/null || return 1
  fi
  ninja -C "$dir" -j "$JOBS" || return 1
  meson test -C "$dir" --num-processes "$JOBS" --print-errorlogs
  local st=$?
  # count from meson's machine-readable log
  local counts
  counts=$(/usr/bin/python3 - "$dir/meson-logs/testlog.json" <<'PY'
import json, sys
p = f = s = 0
for line in open(sys.argv[1]):
    r = json.loads(line).get("result")
    if r in ("OK", "EXPECTEDFAIL"): p += 1
    elif r == "SKIP": s += 1
    else: f += 1
print(p, f, s)
PY
)
  read -r p f s <<< "$counts"
  pass=$((pass + p)); fail=$((fail + f)); skip=$((skip + s))
  echo "$dir: $p passed, $f failed, $s skipped"
  return $st
}

# The build without librbd (-Drbd=disabled): only blockd, unoptimised,
# and the one test file about it (~25 s), so CI, which has librbd,
# still checks that the driver goes away cleanly.
run_norbd() {
  local dir=build-norbd
  if [ ! -d "$dir" ]; then
    meson setup "$dir" -Dwerror=true -Drbd=disabled -Doptimization=0 \
      >/dev/null || return 1
  fi
  ninja -C "$dir" -j "$JOBS" blockd >/dev/null || return 1
  BLOCKD=$PWD/$dir/blockd BLOCKD_EXPECT_RBD=no /usr/bin/python3 -m pytest \
    -q -rs -p no:cacheprovider tests/integration/test-rbd-optional.py
}

run_build build -Dwerror=true || rc=1
if run_norbd; then
  pass=$((pass + 1)); echo "build-norbd: test-rbd-optional passed"
else
  fail=$((fail + 1)); rc=1; echo "build-norbd: test-rbd-optional FAILED"
fi
if [ $QUICK = 0 ]; then
  # Sanitizers: every unit and integration test again under ASan+UBSan,
  # built with clang (a second compiler's warnings, and libFuzzer: the
  # fuzz targets are built and run briefly too).
  CC=clang \
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_build build-asan -Dwerror=true -Db_sanitize=address,undefined \
      -Db_lundef=false -Dbuildtype=debug -Dfuzzing=true || rc=1
fi
echo "tests: $pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ] && [ $rc -eq 0 ]
