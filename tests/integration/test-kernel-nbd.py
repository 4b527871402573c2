"""nbd-device-connect & co in a real Linux kernel.

This machine has no nbd module and no /dev/nbd*, so the scenario runs in
a VM (tests/vm/vm.py: Debian's kernel under qemu-system-x86_64 TCG, an
initramfs with blockd, blockctl and the modules).  The VM boots once per
module; tests/vm/kernel-nbd.sh runs inside it and prints RESULT lines on
the serial console; each test below asserts on some of them, and the
host then checks the images the VM wrote (qemu-img compare / check).
"""
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile

import pytest

from conftest import (BLOCKCTL, BLOCKD, BLOCKD_NBD, BUILDDIR, SRCDIR,
                      QmpError, requires)

sys.path.insert(0, os.path.join(SRCDIR, "tests", "vm"))
import vm  # noqa: E402

MiB = 1024 * 1024
VM_TIMEOUT = 540      # seconds: TCG on a loaded machine (meson: 600)


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True,
                          **kw).stdout


def host_program(name):
    """A program from the host for the VM (sbin is not always on
    PATH)."""
    for d in os.environ.get("PATH", "").split(":") + ["/usr/sbin", "/sbin"]:
        p = os.path.join(d, name)
        if d and os.access(p, os.X_OK):
            return p
    pytest.skip("%s is not installed" % name)


def make_images(d):
    pats = {}
    for i in (1, 2, 3):
        data = os.urandom(MiB)
        with open(os.path.join(d, "pat%d.bin" % i), "wb") as f:
            f.write(data)
        pats[i] = data
    with open(os.path.join(d, "raw.img"), "wb") as f:
        f.truncate(64 * MiB)
    with open(os.path.join(d, "part.img"), "wb") as f:
        f.truncate(64 * MiB)
        # An MBR with one Linux partition from 1 MiB to the end.
        entry = struct.pack("<B3sB3sII", 0, b"\xff\xff\xfe", 0x83,
                            b"\xff\xff\xfe", 2048, 64 * 2048 - 2048)
        f.seek(446)
        f.write(entry)
        f.seek(510)
        f.write(b"\x55\xaa")
    # base.qcow2 holds pat1 at 0; top.qcow2 is an empty overlay on it.
    with open(os.path.join(d, "base.raw"), "wb") as f:
        f.write(pats[1])
        f.truncate(64 * MiB)
    sh("qemu-img", "convert", "-f", "raw", "-O", "qcow2",
       os.path.join(d, "base.raw"), os.path.join(d, "base.qcow2"))
    os.unlink(os.path.join(d, "base.raw"))
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2",
       "-F", "qcow2", os.path.join(d, "top.qcow2"))
    return pats


def expected_image(path, size, pieces):
    with open(path, "wb") as f:
        f.truncate(size)
        for off, data in pieces:
            f.seek(off)
            f.write(data)


@pytest.fixture(scope="module")
def vmrun():
    requires("qemu-img")
    mkfs = host_program("mkfs.ext4")
    try:
        cache = vm.fetch()
    except vm.VmUnavailable as e:
        pytest.skip("no VM: %s" % e)
    sockkill = os.path.join(BUILDDIR, "tests", "vm", "sockkill")
    if not os.path.exists(sockkill):
        pytest.skip("%s is not built" % sockkill)
    base = os.environ.get("BLOCKD_TEST_TMPDIR") or None
    d = tempfile.mkdtemp(prefix="kernel-nbd-", dir=base)
    d = os.path.abspath(d)
    pats = make_images(d)
    script = open(os.path.join(SRCDIR, "tests", "vm",
                               "kernel-nbd.sh")).read()
    bindir = os.path.dirname(os.path.abspath(BLOCKD))
    script = "export PATH=%s:%s:$PATH\n" % (
        bindir, os.path.dirname(os.path.abspath(sockkill))) + script
    script = script.replace("@SHARE@", d).replace("@EXTRA@", "")
    programs = [os.path.abspath(BLOCKD), os.path.abspath(BLOCKCTL),
                mkfs]
    programs.append(os.path.abspath(sockkill))
    if os.path.exists(BLOCKD_NBD):
        programs.append(os.path.abspath(BLOCKD_NBD))
    if shutil.which("qemu-nbd"):
        programs.append(shutil.which("qemu-nbd"))
    initrd = os.path.join(d, "initrd.img")
    vm.build_initramfs(cache, initrd, programs=programs,
                       modules=["nbd", "ext4", "crc32c_generic",
                                "9pnet_virtio", "9p", "virtio_pci", "loop"],
                       init_script=script)
    log = os.path.join(d, "console.log")
    lines, secs = vm.run(cache, initrd, share=d, timeout=VM_TIMEOUT, log=log)
    os.unlink(initrd)
    print("VM ran in %.1f s (console: %s)" % (secs, log))
    results = {}
    for ln in lines:
        m = re.match(r"RESULT (\S+) (.*)$", ln)
        if m:
            results[m.group(1)] = m.group(2)
    yield {"dir": d, "results": results, "pats": pats, "lines": lines,
           "log": log}
    shutil.rmtree(d, ignore_errors=True)


def expect(vmrun, *names):
    res = vmrun["results"]
    bad = []
    for n in names:
        r = res.get(n)
        if r != "ok":
            bad.append("%s: %s" % (n, r or "no result line"))
    assert not bad, "\n".join(bad) + "\nconsole tail:\n" + \
        "\n".join(vmrun["lines"][-40:])


def test_errors(vmrun):
    expect(vmrun, "module-loaded", "blockd-started", "err-missing-device",
           "err-unknown-export", "err-not-nbd", "err-busy")


def test_raw_patterns(vmrun):
    expect(vmrun, "connect-raw", "sysfs-size", "block-size-default",
           "write-pattern",
           "write-direct", "read-pattern", "read-direct", "flags-no-trim",
           "query-devices",
           "export-del-safe", "disconnect-raw", "disconnect-raw-gone")


def test_ioctl(vmrun):
    expect(vmrun, "connect-ioctl", "ioctl-size", "ioctl-read", "ioctl-write",
           "disconnect-ioctl", "disconnect-ioctl-gone", "connect-ioctl-part",
           "ioctl-partition", "disconnect-ioctl-part",
           "disconnect-ioctl-part-gone")


def test_multi_conn(vmrun):
    expect(vmrun, "connect-multi", "block-size", "multi-query", "multi-read", "multi-write",
           "disconnect-multi", "disconnect-multi-gone")


def test_first_free(vmrun):
    expect(vmrun, "connect-first-free", "disconnect-first-free",
           "disconnect-first-free-gone")


def test_partition_ext4_readonly(vmrun):
    expect(vmrun, "connect-part", "partition-appears", "mkfs", "mount",
           "write-file", "umount", "disconnect-part", "disconnect-part-gone",
           "connect-ro", "ro-flag", "ro-partition", "mount-ro",
           "ro-file-content", "ro-write-refused", "disconnect-ro",
           "disconnect-ro-gone")


def test_qcow2_backing(vmrun):
    expect(vmrun, "connect-qcow2", "qcow2-backing-read", "qcow2-write",
           "disconnect-qcow2", "disconnect-qcow2-gone")
    d, pats = vmrun["dir"], vmrun["pats"]
    sh("qemu-img", "check", "-f", "qcow2", os.path.join(d, "top.qcow2"))
    exp = os.path.join(d, "expected-top.img")
    expected_image(exp, 64 * MiB, [(0, pats[1]), (2 * MiB, pats[2])])
    sh("qemu-img", "compare", "-f", "qcow2", "-F", "raw",
       os.path.join(d, "top.qcow2"), exp)
    # The write went to the overlay, not to the backing file.
    exp = os.path.join(d, "expected-base.img")
    expected_image(exp, 64 * MiB, [(0, pats[1])])
    sh("qemu-img", "compare", "-f", "qcow2", "-F", "raw",
       os.path.join(d, "base.qcow2"), exp)


def test_raw_image_on_host(vmrun):
    expect(vmrun, "disconnect-raw-gone", "disconnect-ioctl-gone",
           "disconnect-multi-gone")
    d, pats = vmrun["dir"], vmrun["pats"]
    exp = os.path.join(d, "expected-raw.img")
    pieces = [(1 * MiB, pats[1]), (4 * MiB, pats[2]), (8 * MiB, pats[3]),
              (12 * MiB, pats[3])]
    if os.path.exists(BLOCKD_NBD):
        pieces.append((16 * MiB, pats[2]))     # blockd-nbd -c wrote it
    expected_image(exp, 64 * MiB, pieces)
    sh("qemu-img", "compare", "-f", "raw", "-F", "raw",
       os.path.join(d, "raw.img"), exp)


def test_shutdown_unbinds(vmrun):
    expect(vmrun, "connect-before-quit", "quit", "quit-unbinds",
           "blockd-exited", "events", "event-server-stopped",
           "blockd-clean-exit")


# ---- on the host: what needs no kernel ---------------------------------


def test_schema_lists_the_commands(blockd):
    names = {e["name"] for e in blockd.cmd("query-qmp-schema")}
    assert {"nbd-device-connect", "nbd-device-disconnect",
            "query-nbd-devices", "NBD_DEVICE_DISCONNECTED"} <= names
    assert blockd.cmd("query-nbd-devices") == []


def test_host_errors_without_module(blockd, tmp_path):
    img = str(tmp_path / "a.raw")
    with open(img, "wb") as f:
        f.truncate(1 << 20)
    blockd.cmd("blockdev-add", driver="file", node_name="f0", filename=img)
    blockd.cmd("nbd-server-start", addr={
        "type": "unix", "data": {"path": str(tmp_path / "n.sock")}})
    blockd.cmd("block-export-add", type="nbd", id="e0", node_name="f0",
               writable=True)
    # Checked before the kernel: the export, the device name.
    with pytest.raises(QmpError) as e:
        blockd.cmd("nbd-device-connect", export="nope", device="/dev/nbd0")
    assert e.value.desc == "Export 'nope' is not found"
    with pytest.raises(QmpError) as e:
        blockd.cmd("nbd-device-connect", export="e0", device="/dev/sda")
    assert "is not an NBD device" in e.value.desc
    with pytest.raises(QmpError) as e:
        blockd.cmd("nbd-device-disconnect", device="/dev/nbd0")
    assert e.value.desc == "/dev/nbd0 is not bound by this daemon"
    if os.path.exists("/sys/module/nbd"):
        pytest.skip("this machine has the nbd module: the missing-module "
                    "message cannot be seen here")
    with pytest.raises(QmpError) as e:
        blockd.cmd("nbd-device-connect", export="e0", device="/dev/nbd0")
    assert e.value.desc == ("The Linux NBD driver is not loaded "
                            "(no /sys/module/nbd): modprobe nbd")
    # Nothing half-bound: the export can go (safe mode).
    assert blockd.cmd("query-nbd-devices") == []
    blockd.cmd("block-export-del", id="e0")


def test_blockd_nbd_c_d(vmrun):
    if not os.path.exists(BLOCKD_NBD):
        pytest.skip("blockd-nbd is not built")
    expect(vmrun, "bnbd-connect", "bnbd-size", "bnbd-read", "bnbd-write",
           "bnbd-disconnect", "bnbd-gone", "bnbd-exits", "bnbd-fg-ro",
           "bnbd-qemu-nbd-d", "bnbd-fg-exit", "bnbd-d-missing")


def test_blockd_nbd_c_errors_as_qemu_nbd(vmrun):
    # Each: qemu-nbd -c and blockd-nbd -c fail with the same stderr and
    # status in the same boot (kernel-nbd.sh same_c).
    if not os.path.exists(BLOCKD_NBD):
        pytest.skip("blockd-nbd is not built")
    requires("qemu-nbd")
    expect(vmrun, "c-missing", "c-not-nbd-char", "c-not-nbd-block",
           "c-loop0-untouched", "c-busy-qemu-nbd",
           "c-busy-qemu-nbd-still-read", "c-busy-qemu-nbd-gone",
           "c-busy-blockd-nbd", "c-busy-blockd-nbd-still-read",
           "c-busy-blockd-nbd-gone", "c-nonroot-lockdir", "c-nonroot-open",
           "c-nonroot-bind", "c-nonroot-unbound")


def test_not_root(vmrun):
    # blockd as nobody: every way of connecting fails with the clear
    # message, and nothing is bound.
    expect(vmrun, "nonroot-started", "nonroot-is-nobody", "nonroot-netlink",
           "nonroot-first-free", "nonroot-ioctl", "nonroot-unbound",
           "nonroot-none-listed", "nonroot-export-del")


def test_connected_and_link_dead(vmrun):
    # query-nbd-devices' connected while bound; the server side of the
    # connections killed from outside (sockkill): one of four, then the
    # rest, then a single one; the kernel's link-dead notification, the
    # event with reason "link dead", the device unbound and unlisted.
    expect(vmrun, "ld-started", "ld-connect", "query-connected",
           "ld-kill-one", "ld-three-left", "ld-three-read",
           "ld-still-connected", "ld-multicast-one", "ld-kill-rest",
           "ld-gone", "ld-event", "ld-not-listed", "ld-one-connect",
           "ld-one-connected", "ld-one-kill", "ld-one-gone", "ld-one-event",
           "ld-one-multicast", "ld-no-fallback", "ld-reconnect",
           "ld-reconnect-connected", "ld-disconnect", "ld-disconnect-gone",
           "ld-disconnect-event", "ld-disconnect-not-listed",
           "ld-clean-exit")


def test_beside_qemu_nbd_c(vmrun):
    requires("qemu-nbd")
    expect(vmrun, "qemu-nbd-connect", "qemu-nbd-read", "qemu-nbd-bnbd-d",
           "qemu-nbd-gone")


def test_export_del_hard_disconnects(vmrun):
    expect(vmrun, "connect-hard", "export-del-hard", "export-del-hard-gone",
           "event-export-deleted")


def test_kill_9_fails_io(vmrun):
    expect(vmrun, "k9-connect", "k9-read-before", "k9-io-fails",
           "k9-cleaned-up")


def test_trim_passed_on(vmrun):
    expect(vmrun, "connect-trim", "flags-trim", "trim", "trim-zeroes",
           "disconnect-trim", "disconnect-trim-gone")
