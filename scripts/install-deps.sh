#!/bin/sh
# install-deps.sh - install what blockd needs to build and to run its
# tests on Debian 12, with apt.  Does nothing when everything is there.
set -eu

PACKAGES="
  meson ninja-build pkg-config gcc clang libclang-rt-14-dev
  libjson-c-dev libevent-dev libgnutls28-dev libseccomp-dev libcunit1-dev
  zlib1g-dev libzstd-dev libedit-dev
  qemu-utils qemu-system-common qemu-system-x86 nbd-server libnbd-bin nbdkit
  python3-libnbd python3-pytest libnbd-dev liburing-dev
  gnutls-bin openssl fio socat util-linux procps tmux gnuplot-nox strace
  python3-docutils groff-base man-db curl systemd xz-utils
  ceph-mon ceph-osd ceph-common librbd-dev qemu-block-extra
"

missing=""
for p in $PACKAGES; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    missing="$missing $p"
  fi
done
[ -z "$missing" ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
echo "install-deps: installing:$missing" >&2
$SUDO apt-get update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
