"""The blkdebug filter (a test tool, docs/testing.md) and the error paths
it opens: injected errors reach NBD clients as the NBD error the errno
maps to (seen through libnbd), the Nth request fails and the others
pass, a qcow2 whose file fails an allocating write stays consistent
for qemu-img check, and QMP and other exports keep serving while a
node holds a request stalled."""
import errno
import os
import subprocess
import time

import nbd
import pytest

from conftest import QmpError

MIB = 1 << 20


def start_server(d):
    sock = os.path.join(d.sockdir, "nbd.sock")
    d.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": sock}})
    return sock


def export(d, sock, node, name, writable=True):
    d.cmd("block-export-add", {"type": "nbd", "id": "e-" + name,
                               "node-name": node, "name": name,
                               "writable": writable})
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///%s?socket=%s" % (name, sock))
    return h


def raw_file(tmp_path, name, size=4 * MIB):
    img = str(tmp_path / name)
    with open(img, "wb") as f:
        f.truncate(size)
    return img


def nbd_errno(fn, *args):
    with pytest.raises(nbd.Error) as e:
        fn(*args)
    return e.value.errnum


# (iotype, injected errno, what the NBD client sees).  EDQUOT has no NBD
# error of its own: it travels as NBD_ENOSPC, as QEMU sends it.
CASES = [
    ("read", errno.EIO, errno.EIO),
    ("write", errno.EIO, errno.EIO),
    ("write", errno.ENOSPC, errno.ENOSPC),
    ("write", errno.EDQUOT, errno.ENOSPC),
    ("write-zeroes", errno.ENOSPC, errno.ENOSPC),
    ("write-zeroes", errno.EDQUOT, errno.ENOSPC),
    ("discard", errno.EIO, errno.EIO),
    ("flush", errno.EIO, errno.EIO),
    ("flush", errno.ENOSPC, errno.ENOSPC),
]


@pytest.mark.parametrize("iotype,err,seen", CASES)
def test_error_reaches_client(blockd, tmp_path, iotype, err, seen):
    img = raw_file(tmp_path, "a.raw")
    blockd.cmd("blockdev-add", {
        "driver": "raw", "node-name": "r0", "discard": "unmap",
        "file": {"driver": "blkdebug", "node-name": "dbg",
                 "inject-error": [{"iotype": iotype, "errno": err,
                                   "sector": 8}],
                 "image": {"driver": "file", "filename": img}}})
    h = export(blockd, start_server(blockd), "r0", "r0")
    ops = {
        "read": lambda off: h.pread(4096, off),
        "write": lambda off: h.pwrite(b"x" * 4096, off),
        "write-zeroes": lambda off: h.zero(4096, off),
        "discard": lambda off: h.trim(4096, off),
        "flush": lambda off: h.flush(),
    }
    # Sector 8 is bytes [4096, 4608): a request covering it fails, one
    # beside it passes (a flush covers everything).
    assert nbd_errno(ops[iotype], 4096) == seen
    if iotype != "flush":
        ops[iotype](8192)
    # Everything else still works on the node and on the connection.
    h.pread(4096, 0)
    assert blockd.cmd("x-query-blkdebug", node_name="dbg")["fired"] == 1


def test_nth_request_fails_once(blockd, tmp_path):
    img = raw_file(tmp_path, "a.raw")
    blockd.cmd("blockdev-add", {
        "driver": "blkdebug", "node-name": "dbg",
        "inject-error": [{"iotype": "write", "errno": errno.ENOSPC,
                          "skip": 2, "once": True}],
        "image": {"driver": "file", "filename": img}})
    h = export(blockd, start_server(blockd), "dbg", "d")
    h.pwrite(b"1" * 512, 0)
    h.pwrite(b"2" * 512, 512)
    assert nbd_errno(h.pwrite, b"3" * 512, 1024) == errno.ENOSPC
    h.pwrite(b"4" * 512, 1536)
    assert h.pread(2048, 0) == b"1" * 512 + b"2" * 512 + b"\0" * 512 + \
        b"4" * 512
    # reads never matched the write rule
    assert blockd.cmd("x-query-blkdebug", node_name="dbg") == \
        {"stalled": 0, "fired": 1}


def test_bad_options_and_commands(blockd, tmp_path):
    img = raw_file(tmp_path, "a.raw")
    with pytest.raises(QmpError) as e:
        blockd.cmd("blockdev-add", {
            "driver": "blkdebug", "node-name": "dbg",
            "inject-error": [{"errno": 0}],
            "image": {"driver": "file", "filename": img}})
    assert "errno" in e.value.desc
    blockd.cmd("blockdev-add", {"driver": "null-co", "node-name": "n0"})
    with pytest.raises(QmpError) as e:
        blockd.cmd("x-query-blkdebug", node_name="n0")
    assert e.value.desc == "Node 'n0' is not a blkdebug node"
    blockd.cmd("blockdev-add", {
        "driver": "blkdebug", "node-name": "dbg",
        "image": {"driver": "file", "filename": img}})
    with pytest.raises(QmpError) as e:
        blockd.cmd("x-blkdebug-resume", node_name="dbg", tag="t")
    assert e.value.desc == "No stall rule with tag 't' on node 'dbg'"
    blockd.cmd("blockdev-del", node_name="dbg")


def qemu_img_check(img):
    r = subprocess.run(["qemu-img", "check", "--output=json", img],
                       capture_output=True, text=True)
    # 0: clean, 3: leaked clusters only (allowed after a failed write);
    # 2: corruption, 1: could not check.
    assert r.returncode in (0, 3), r.stdout + r.stderr
    return r


@pytest.mark.parametrize("skip", range(6))
def test_qcow2_consistent_after_failed_allocating_write(blockd_factory,
                                                        tmp_path, skip):
    """The qcow2's file fails its (skip+1)-th write after the open: the
    data cluster, the L2 table, the refcount block or the L1 entry of an
    allocating write.  The client sees EIO (or the next flush does), and
    after a clean stop the image checks clean (leaks allowed), the
    earlier data is intact and qemu-io reads it."""
    img = str(tmp_path / "a.qcow2")
    subprocess.run(["qemu-img", "create", "-f", "qcow2", img, "64M"],
                   check=True, capture_output=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 64k",
                    img], check=True, capture_output=True)
    d = blockd_factory()
    d.cmd("blockdev-add", {
        "driver": "qcow2", "node-name": "q0",
        "file": {"driver": "blkdebug", "node-name": "dbg",
                 "inject-error": [{"iotype": "write", "errno": errno.EIO,
                                   "skip": skip, "once": True}],
                 "image": {"driver": "file", "filename": img}}})
    h = export(d, start_server(d), "q0", "q0")
    failed = False
    # A new L2 table (8 MiB away), then a cluster in the same table.
    for off in (8 * MIB, 8 * MIB + 65536, 32 * MIB):
        try:
            h.pwrite(b"\x22" * 65536, off)
            h.flush()
        except nbd.Error as e:
            assert e.errnum == errno.EIO, e
            failed = True
    assert d.cmd("x-query-blkdebug", node_name="dbg")["fired"] == 1
    assert failed or skip > 0, "the first write after open did not fail"
    assert h.pread(65536, 0) == b"\x11" * 65536
    del h
    assert d.stop() == 0
    qemu_img_check(img)
    r = subprocess.run(["qemu-io", "-f", "qcow2", "-c",
                        "read -P 0x11 0 64k", img],
                       capture_output=True, text=True)
    assert "Pattern verification failed" not in r.stdout, r.stdout
    assert r.returncode == 0, r.stdout + r.stderr


def wait_stalled(d, node, n, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        st = d.cmd("x-query-blkdebug", node_name=node)
        if st["stalled"] >= n:
            return st
        assert time.monotonic() < deadline, st
        time.sleep(0.02)


def test_stall_keeps_qmp_and_other_exports_serving(blockd, tmp_path):
    blockd.cmd("blockdev-add", {
        "driver": "blkdebug", "node-name": "dbg",
        "stall": [{"iotype": "read", "tag": "t1"}],
        "image": {"driver": "null-aio", "size": 4 * MIB,
                  "read-zeroes": True}})
    blockd.cmd("blockdev-add", {"driver": "file", "node-name": "f1",
                                "filename": raw_file(tmp_path, "b.raw")})
    sock = start_server(blockd)
    hs = export(blockd, sock, "dbg", "stalled")
    hf = export(blockd, sock, "f1", "free")
    # One held read: below the node's share of the pool (at least 3 of
    # 4 threads, blk_pool_share), so the write below still gets a worker.
    cookies = [hs.aio_pread(nbd.Buffer(4096), 4096 * i) for i in range(1)]
    st = wait_stalled(blockd, "dbg", 1)
    assert st["fired"] == 1
    # QMP answers, the graph can be inspected and changed, the other
    # export serves reads and writes.
    blockd.cmd("query-version")
    names = [n["node-name"] for n in blockd.cmd("query-named-block-nodes")]
    assert "dbg" in names
    blockd.cmd("blockdev-add", {"driver": "null-co", "node-name": "n9"})
    blockd.cmd("blockdev-del", node_name="n9")
    for i in range(50):
        hf.pwrite(bytes([i]) * 4096, 4096 * (i % 8))
        assert hf.pread(4096, 4096 * (i % 8)) == bytes([i]) * 4096
    # Writes to the stalled node are not held (the rule is for reads).
    hs.pwrite(b"w" * 512, 0)
    for c in cookies:
        assert not hs.aio_command_completed(c)
    st = blockd.cmd("x-blkdebug-resume", node_name="dbg", tag="t1")
    for c in cookies:
        while not hs.aio_command_completed(c):
            hs.poll(1)
    assert hs.pread(4096, 0) == b"\0" * 4096      # rule released: passes
    assert blockd.cmd("x-query-blkdebug", node_name="dbg") == \
        {"stalled": 0, "fired": 1}


def test_delay(blockd, tmp_path):
    blockd.cmd("blockdev-add", {
        "driver": "blkdebug", "node-name": "dbg",
        "inject-delay": [{"iotype": "flush", "delay-ms": 200}],
        "image": {"driver": "file",
                  "filename": raw_file(tmp_path, "a.raw")}})
    h = export(blockd, start_server(blockd), "dbg", "d")
    t0 = time.monotonic()
    h.flush()
    # A lower bound only: a delay is at least what was asked.
    assert time.monotonic() - t0 >= 0.2
    assert blockd.cmd("x-query-blkdebug", node_name="dbg")["fired"] == 1


def test_stall_never_holds_the_loop_thread(blockd_factory, tmp_path):
    """A qcow2 opened from the command line over a node with a stall
    rule for every read: its header is read on the loop thread, where
    nothing could release a held request (the daemon hung before).  The
    rule lets it by with a warning, QMP answers, and a client's read
    (on a worker) is still held until x-blkdebug-resume."""
    img = str(tmp_path / "s.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", img, "16M"],
                   check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 64k",
                    img], check=True, capture_output=True)
    d = blockd_factory(
        "--blockdev", '{"driver": "blkdebug", "node-name": "dbg", '
        '"stall": [{"iotype": "read", "tag": "t"}], "image": '
        '{"driver": "file", "filename": "%s"}}' % img,
        "--blockdev", '{"driver": "qcow2", "node-name": "q0", '
        '"file": "dbg"}')
    q = d.qmp()
    q.sock.settimeout(30)
    assert q.cmd("x-query-blkdebug", node_name="dbg") == \
        {"stalled": 0, "fired": 0}
    q.close()
    assert "request on the loop thread is not stalled" in d.logtext()
    h = export(d, start_server(d), "q0", "q0", writable=False)
    c = h.aio_pread(nbd.Buffer(4096), 0)
    st = wait_stalled(d, "dbg", 1)
    assert st["fired"] == 1
    h.poll(0)
    assert not h.aio_command_completed(c)
    d.cmd("x-blkdebug-resume", node_name="dbg", tag="t")
    while not h.aio_command_completed(c):
        h.poll(1000)
    assert h.pread(4096, 0) == b"\x11" * 4096
