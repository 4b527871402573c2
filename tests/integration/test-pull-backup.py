"""Pull-mode backup, QEMU 7.x's recipe: a copy-before-write filter
above the source (the guest's export is on the filter) and a
snapshot-access node on it, exported read-only, which a backup tool
(nbdcopy, python3-libnbd) reads as the point-in-time image while the
guest keeps writing.  With a bitmap only its dirty regions are copied
and readable; on-cbw-error with a failing target; cbw-timeout with a
stalled one; bad input."""
import json
import os
import random
import subprocess
import threading
import time

import nbd
import pytest

from conftest import QmpError, requires

MIB = 1 << 20
KIB = 1 << 10


def run(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True,
                          text=True).stdout


def write_pattern(path, size, seed):
    """A raw file whose every 64 KiB differs."""
    with open(path, "wb") as f:
        for i in range(size // (64 * KIB)):
            f.write(bytes([(seed + i) & 0xff]) * (64 * KIB))


def copy_file(src, dst):
    with open(src, "rb") as a, open(dst, "wb") as b:
        b.write(a.read())


def start_nbd(blockd):
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    blockd.cmd("nbd-server-start",
               addr={"type": "unix", "data": {"path": sock}})
    return sock


def export(blockd, node, name, writable):
    blockd.cmd("block-export-add", {"type": "nbd", "id": name,
                                    "node-name": node, "name": name,
                                    "writable": writable})


def connect(sock, name):
    h = nbd.NBD()
    h.add_meta_context("base:allocation")
    h.connect_uri("nbd+unix:///%s?socket=%s" % (name, sock))
    return h


def add_fleecing(blockd, tmp_path, size, bitmap=None, target=None,
                 **cbw_opts):
    """src (raw over src.raw), the target tgt (a qcow2), the filter cbw
    and the snapshot acc."""
    if target is None:
        tgt = str(tmp_path / "tgt.qcow2")
        run("qemu-img", "create", "-q", "-f", "qcow2", tgt, str(size))
        blockd.cmd("blockdev-add", driver="qcow2", node_name="tgt",
                   file={"driver": "file", "filename": tgt})
    opts = {"driver": "copy-before-write", "node-name": "cbw",
            "file": "src", "target": target or "tgt"}
    if bitmap is not None:
        opts["bitmap"] = {"node": "src", "name": bitmap}
    opts.update(cbw_opts)
    blockd.cmd("blockdev-add", opts)
    blockd.cmd("blockdev-add", driver="snapshot-access", node_name="acc",
               file="cbw")


def add_src(blockd, path):
    blockd.cmd("blockdev-add", driver="raw", node_name="src",
               file={"driver": "file", "filename": path})


def test_point_in_time_under_writes(blockd, tmp_path):
    """nbdcopy copies the snapshot while a libnbd client writes random
    data through the guest's export: the copy equals the source as it
    was, and every guest write is on the source."""
    requires("qemu-img", "nbdcopy")
    size = 32 * MIB
    src = str(tmp_path / "src.raw")
    write_pattern(src, size, 7)
    orig = str(tmp_path / "orig.raw")
    copy_file(src, orig)
    add_src(blockd, src)
    add_fleecing(blockd, tmp_path, size)
    sock = start_nbd(blockd)
    export(blockd, "cbw", "guest", True)
    export(blockd, "acc", "snap", False)

    expect = bytearray(open(orig, "rb").read())
    rnd = random.Random(19)
    guest = connect(sock, "guest")

    def write_some(n):
        for _ in range(n):
            ln = rnd.randrange(1, 300 * KIB)
            off = rnd.randrange(0, size - ln)
            data = rnd.randbytes(ln)
            guest.pwrite(data, off)
            expect[off:off + ln] = data

    write_some(40)              # before the backup reads anything
    backup = str(tmp_path / "backup.raw")
    stop = threading.Event()
    errors = []

    def writer():
        try:
            while not stop.is_set():
                write_some(5)
        except Exception as e:  # reported below
            errors.append(e)

    t = threading.Thread(target=writer)
    t.start()
    try:
        run("nbdcopy", "nbd+unix:///snap?socket=" + sock, backup)
    finally:
        stop.set()
        t.join()
    assert not errors, errors
    write_some(20)              # after it
    guest.flush()
    guest.shutdown()
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", orig, backup)
    # The snapshot still reads as before over a second client too.
    snap = connect(sock, "snap")
    assert snap.is_read_only()
    assert snap.pread(size, 0) == open(orig, "rb").read()
    snap.shutdown()
    for e in ("snap", "guest"):
        blockd.cmd("block-export-del", id=e)
    for n in ("acc", "cbw", "tgt", "src"):
        blockd.cmd("blockdev-del", node_name=n)
    assert open(src, "rb").read() == bytes(expect)


def test_bitmap_limits_copies_and_reads(blockd, tmp_path):
    """With bitmap, only the bitmap's dirty regions are copied before
    writes and readable through snapshot-access (QEMU's semantics)."""
    requires("qemu-img")
    size = 16 * MIB
    src = str(tmp_path / "src.raw")
    write_pattern(src, size, 3)
    add_src(blockd, src)
    blockd.cmd("block-dirty-bitmap-add", {"node": "src", "name": "b0"})
    sock = start_nbd(blockd)
    export(blockd, "src", "pre", True)
    h = connect(sock, "pre")
    h.pwrite(b"\x5a" * MIB, 2 * MIB)           # dirty: [2M, 3M)
    h.pwrite(b"\x6b" * (64 * KIB), 8 * MIB)    # dirty: [8M, 8M+64K)
    h.flush()
    h.shutdown()
    blockd.cmd("block-export-del", id="pre")
    old = open(src, "rb").read()

    add_fleecing(blockd, tmp_path, size, bitmap="b0")
    export(blockd, "cbw", "guest", True)
    export(blockd, "acc", "snap", False)
    guest = connect(sock, "guest")
    guest.pwrite(b"\x01" * (512 * KIB), 2 * MIB + 256 * KIB)  # dirty
    guest.pwrite(b"\x02" * MIB, 12 * MIB)                     # clean
    guest.flush()
    snap = connect(sock, "snap")
    assert snap.pread(MIB, 2 * MIB) == old[2 * MIB:3 * MIB]
    assert snap.pread(64 * KIB, 8 * MIB) == old[8 * MIB:8 * MIB + 64 * KIB]
    for off in (0, 12 * MIB, 3 * MIB):
        with pytest.raises(nbd.Error):
            snap.pread(4096, off)
    # block status answers inside the bitmap, fails outside
    seen = []
    snap.block_status(MIB, 2 * MIB,
                      lambda ctx, off, ents, err: seen.append(ents))
    assert seen and sum(seen[0][0::2]) > 0
    with pytest.raises(nbd.Error):
        snap.block_status(MIB, 12 * MIB, lambda *a: 0)
    snap.shutdown()
    guest.shutdown()
    for e in ("snap", "guest"):
        blockd.cmd("block-export-del", id=e)
    for n in ("acc", "cbw", "tgt"):
        blockd.cmd("blockdev-del", node_name=n)
    # The target got only the dirty clusters the guest overwrote.
    m = run("qemu-img", "map", "--output=json", "-f", "qcow2",
            str(tmp_path / "tgt.qcow2"))
    data = [(e["start"], e["length"]) for e in json.loads(m)
            if e["data"]]
    assert data == [(2 * MIB + 256 * KIB, 512 * KIB)], data


def test_snapshot_discard_drops_region(blockd, tmp_path):
    """A discard through snapshot-access drops the region from the
    snapshot: later guest writes there are not copied, reads fail."""
    requires("qemu-img")
    size = 4 * MIB
    src = str(tmp_path / "src.raw")
    write_pattern(src, size, 9)
    old = open(src, "rb").read()
    add_src(blockd, src)
    add_fleecing(blockd, tmp_path, size)
    blockd.cmd("blockdev-del", node_name="acc")
    blockd.cmd("blockdev-add", driver="snapshot-access", node_name="acc",
               file="cbw", discard="unmap")
    sock = start_nbd(blockd)
    export(blockd, "cbw", "guest", True)
    export(blockd, "acc", "snap", True)
    snap = connect(sock, "snap")
    snap.trim(MIB, MIB)
    guest = connect(sock, "guest")
    guest.pwrite(b"\x03" * (3 * MIB), 0)
    guest.flush()
    assert snap.pread(MIB, 0) == old[:MIB]
    with pytest.raises(nbd.Error):
        snap.pread(4096, MIB)
    assert snap.pread(MIB, 2 * MIB) == old[2 * MIB:3 * MIB]
    with pytest.raises(nbd.Error):
        snap.pwrite(b"x" * 512, 0)            # the snapshot is read-only
    snap.shutdown()
    guest.shutdown()


def test_on_cbw_error(blockd, tmp_path):
    """A target that fails: break-guest-write fails the guest's write and
    keeps the snapshot; break-snapshot lets the write through and the
    snapshot fails from then on."""
    size = 2 * MIB
    for mode in ("break-guest-write", "break-snapshot"):
        src = str(tmp_path / ("src-%s.raw" % mode))
        write_pattern(src, size, 5)
        old = open(src, "rb").read()
        tpath = str(tmp_path / ("tgt-%s.raw" % mode))
        with open(tpath, "wb") as f:
            f.truncate(size)
        add_src(blockd, src)
        blockd.cmd("blockdev-add", {
            "driver": "raw", "node-name": "tgt",
            "file": {"driver": "blkdebug",
                     "inject-error": [{"iotype": "write", "errno": 5}],
                     "image": {"driver": "file", "filename": tpath}}})
        add_fleecing(blockd, tmp_path, size, target="tgt",
                     **{"on-cbw-error": mode})
        sock = start_nbd(blockd)
        export(blockd, "cbw", "guest", True)
        export(blockd, "acc", "snap", False)
        guest = connect(sock, "guest")
        snap = connect(sock, "snap")
        if mode == "break-guest-write":
            with pytest.raises(nbd.Error) as e:
                guest.pwrite(b"\x09" * 4096, 0)
            assert e.value.errnum == 5          # EIO
            assert snap.pread(size, 0) == old
            assert open(src, "rb").read() == old
        else:
            guest.pwrite(b"\x09" * 4096, 0)
            guest.flush()
            with pytest.raises(nbd.Error):
                snap.pread(4096, MIB)
            assert open(src, "rb").read(4096) == b"\x09" * 4096
        snap.shutdown()
        guest.shutdown()
        for e in ("snap", "guest"):
            blockd.cmd("block-export-del", id=e)
        for n in ("acc", "cbw", "tgt", "src"):
            blockd.cmd("blockdev-del", node_name=n)
        blockd.cmd("nbd-server-stop")


def wait_stalled(blockd, node, n, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        st = blockd.cmd("x-query-blkdebug", node_name=node)
        if st["stalled"] >= n:
            return st
        assert time.monotonic() < deadline, st
        time.sleep(0.05)


def test_cbw_timeout(blockd, tmp_path):
    """A target whose writes stall: with cbw-timeout=1 and
    break-snapshot the guest's write goes through once the second is
    up (no timing asserted: it just must not hang), and the snapshot is
    broken; the stalled copy, released later, changes nothing."""
    size = 2 * MIB
    src = str(tmp_path / "src.raw")
    write_pattern(src, size, 5)
    tpath = str(tmp_path / "tgt.raw")
    with open(tpath, "wb") as f:
        f.truncate(size)
    add_src(blockd, src)
    blockd.cmd("blockdev-add", {
        "driver": "raw", "node-name": "tgt",
        "file": {"driver": "blkdebug", "node-name": "dbg",
                 "stall": [{"iotype": "write", "tag": "t"}],
                 "image": {"driver": "file", "filename": tpath}}})
    add_fleecing(blockd, tmp_path, size, target="tgt",
                 **{"on-cbw-error": "break-snapshot", "cbw-timeout": 1})
    sock = start_nbd(blockd)
    export(blockd, "cbw", "guest", True)
    export(blockd, "acc", "snap", False)
    guest = connect(sock, "guest")
    guest.pwrite(b"\x09" * 4096, 0)
    guest.flush()
    assert open(src, "rb").read(4096) == b"\x09" * 4096
    wait_stalled(blockd, "dbg", 1)
    snap = connect(sock, "snap")
    with pytest.raises(nbd.Error):
        snap.pread(4096, MIB)
    blockd.cmd("x-blkdebug-resume", node_name="dbg", tag="t")
    with pytest.raises(nbd.Error):
        snap.pread(4096, 0)
    snap.shutdown()
    guest.shutdown()
    for e in ("snap", "guest"):
        blockd.cmd("block-export-del", id=e)
    blockd.cmd("blockdev-del", node_name="acc")
    # The released copy holds the filter until it has finished.
    deadline = time.monotonic() + 60
    while True:
        try:
            blockd.cmd("blockdev-del", node_name="cbw")
            break
        except QmpError as e:
            assert "in flight" in e.desc and time.monotonic() < deadline
            time.sleep(0.05)
    for n in ("tgt", "src"):
        blockd.cmd("blockdev-del", node_name=n)


def test_bad_input(blockd, tmp_path):
    blockd.cmd("blockdev-add", driver="null-co", node_name="a", size=MIB)
    blockd.cmd("blockdev-add", driver="null-co", node_name="b", size=MIB)
    blockd.cmd("blockdev-add", driver="null-co", node_name="small",
               size=MIB // 2)
    blockd.cmd("blockdev-add", driver="null-co", node_name="ro", size=MIB,
               read_only=True)

    def err(opts):
        with pytest.raises(QmpError) as e:
            blockd.cmd("blockdev-add", opts)
        assert e.value.cls == "GenericError"
        return e.value.desc

    cbw = {"driver": "copy-before-write", "node-name": "f", "file": "a"}
    assert err({**cbw, "target": "a"}) == \
        "Source and target cannot be the same"
    assert err({**cbw, "target": "ro"}) == "Target node 'ro' is read-only"
    assert err({**cbw, "target": "small"}).startswith(
        "Target node 'small' (524288 bytes) is smaller than the source")
    assert err({**cbw, "target": "nope"}).startswith(
        "Cannot find device")
    assert err({**cbw, "target": "b",
                "bitmap": {"node": "a", "name": "x"}}) == \
        "Dirty bitmap 'x' not found"
    assert err({"driver": "snapshot-access", "node-name": "s",
                "file": "a"}) == (
        "The file child of a snapshot-access node must be a "
        "copy-before-write filter; 'a' is a null-co node")
    with pytest.raises(QmpError) as e:
        blockd.cmd("blockdev-add", {**cbw, "target": "b",
                                    "on-cbw-error": "nope"})
    assert "on-cbw-error" in e.value.desc
    # None of the failed opens left a node or a reference behind.
    blockd.cmd("blockdev-add", {**cbw, "target": "b"})
    with pytest.raises(QmpError) as e:
        blockd.cmd("blockdev-del", node_name="b")
    assert "as its target child" in e.value.desc
    blockd.cmd("blockdev-del", node_name="f")
    for n in ("a", "b", "small", "ro"):
        blockd.cmd("blockdev-del", node_name=n)
