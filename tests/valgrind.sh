#!/bin/bash
# valgrind.sh - blockd under valgrind's memcheck: zero errors and zero
# leaks (definite, indirect and possible) at clean shutdown.  Memory
# still reachable at exit (process-wide tables such as the inherited
# descriptor list, gnutls's and libevent's globals) is not a leak and is
# not reported.
#
#   tests/valgrind.sh [BUILDDIR] [--quick]
#
# 1. valgrind-scenario.py: QMP blockdev-add raw/qcow2, export, libnbd
#    reads/writes/zero/flush/block status, TLS (PSK), export and node
#    deletion, quit.
# 2. (not with --quick) a selection of the integration tests with
#    $BLOCKD pointing at a wrapper that runs blockd under valgrind; their
#    fixtures fail a test whose daemon does not exit 0 on SIGTERM, and
#    every valgrind log is checked afterwards.
# Use the gcc build (not the ASan one: valgrind and ASan do not mix).
# Exit 77 (skipped) when valgrind is not installed.
set -u
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../build}" && pwd)
quick=${2:-}
if ! command -v valgrind >/dev/null; then
    echo "valgrind.sh: SKIP: valgrind is not installed" >&2
    exit 77
fi
logs=$(mktemp -d /tmp/bd-valgrind-XXXXXX)
vg=(valgrind -q --leak-check=full --show-leak-kinds=definite,indirect,possible
    --errors-for-leak-kinds=definite,indirect,possible
    --error-exitcode=99 --track-fds=no
    --log-file="$logs/vg.%p.log")
status=0

# valgrind cannot run a seccomp filter (it does not know the syscall):
# the daemon runs with --sandbox off under it.
/usr/bin/python3 "$here/valgrind-scenario.py" "${vg[@]}" "$build/blockd" \
    --sandbox off || status=1

if [ "$quick" != "--quick" ]; then
    wrapper=$logs/blockd-valgrind
    {
        echo '#!/bin/sh'
        printf 'exec'
        printf ' %q' "${vg[@]}" "$build/blockd" --sandbox off
        echo ' "$@"'
    } > "$wrapper"
    chmod +x "$wrapper"
    BLOCKD=$wrapper BLOCKD_TEST_SLOW=10 BLOCKD_SRCDIR=$here/.. BLOCKD_BUILDDIR=$build \
        /usr/bin/python3 -m pytest -q -rfEs -p no:cacheprovider \
        "$here/integration/test-blockdev.py" \
        "$here/integration/test-nbd-protocol.py" \
        "$here/integration/test-nbd-tls.py" || status=1
fi

# Any report at all (errors, leaks, invalid fds) fails.
for f in "$logs"/vg.*.log; do
    if [ -s "$f" ]; then
        echo "valgrind.sh: report in $f:" >&2
        cat "$f" >&2
        status=1
    fi
done
n=$(ls "$logs"/vg.*.log 2>/dev/null | wc -l)
echo "valgrind.sh: $n blockd processes checked, status $status"
[ $status -eq 0 ] && rm -rf "$logs"
exit $status
