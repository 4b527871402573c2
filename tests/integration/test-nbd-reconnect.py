"""The upstream server of an `nbd` node dies and comes back (nbdkit's file
plugin on a fixed unix socket path, so the data survives the restart)
while a client reads and writes through blockd.  With reconnect-delay
the I/O waits and completes, and the data verifies; without it the
requests fail cleanly and the node recovers when the server returns.
The node reports both with NBD_CLIENT_DISCONNECTED / RECONNECTED."""
import subprocess
import threading
import time

import nbd
import pytest

from conftest import requires
from upstream import Upstream, export, nbd_node, requires_nbd_driver

MIB = 1 << 20
SIZE = 16 * MIB
BLK = 64 * 1024


def block(i, gen):
    """The content of block i after write generation gen."""
    return (b"%08d-%08d|" % (i, gen)) * (BLK // 18) + \
        b"." * (BLK % 18)


@pytest.fixture
def upstream(blockd, tmp_path):
    requires("nbdkit")
    requires_nbd_driver(blockd)
    img = str(tmp_path / "up.raw")
    with open(img, "wb") as f:
        for i in range(SIZE // BLK):
            f.write(block(i, 0))
    up = Upstream(["nbdkit", "file", img], str(tmp_path / "up.sock"),
                  log=str(tmp_path / "nbdkit.log"))
    yield dict(img=img, up=up, blockd=blockd)
    up.stop()


def attach(c, **opts):
    d = c["blockd"]
    nbd_node(d, "n0", c["up"].sock, **opts)
    return export(d, "n0", "disk")


def read_file(path, off, n):
    with open(path, "rb") as f:
        f.seek(off)
        return f.read(n)


class Writer(threading.Thread):
    """Rewrites block after block through blockd, reading each back,
    until stopped; records the generation each block last got."""

    def __init__(self, uri, first, count):
        super().__init__(daemon=True)
        self.uri = uri
        self.blocks = range(first, first + count)
        self.gen = {}
        self.done = 0
        self.error = None
        self.halt = threading.Event()

    def run(self):
        try:
            h = nbd.NBD()
            h.connect_uri(self.uri)
            g = 1
            while not self.halt.is_set():
                for i in self.blocks:
                    h.pwrite(block(i, g), i * BLK)
                    self.gen[i] = g
                    got = h.pread(BLK, i * BLK)
                    if got != block(i, g):
                        raise AssertionError("block %d read back wrong" % i)
                    self.done += 1
                    if self.halt.is_set():
                        break
                g += 1
            h.flush()
            h.shutdown()
        except Exception as e:          # reported by the test
            self.error = e


def wait_for(cond, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def test_reconnect_delay_io_completes_and_verifies(upstream):
    d = upstream["blockd"]
    uri = attach(upstream, reconnect_delay=60)
    qmp = d.conn
    w = Writer(uri, 0, 32)
    w.start()
    wait_for(lambda: w.done >= 40 or w.error, "writer progress")
    upstream["up"].stop()                          # SIGKILL
    ev = qmp.get_event("NBD_CLIENT_DISCONNECTED", timeout=30)
    assert ev["data"]["node-name"] == "n0"
    # requests issued while the server is away wait for it
    h = nbd.NBD()
    h.connect_uri(uri)
    wbuf = nbd.Buffer.from_bytearray(bytearray(block(100, 7)))
    wcookie = h.aio_pwrite(wbuf, 100 * BLK)
    buf = nbd.Buffer(BLK)
    rcookie = h.aio_pread(buf, 200 * BLK)
    done_before = w.done
    upstream["up"].start()
    ev = qmp.get_event("NBD_CLIENT_RECONNECTED", timeout=60)
    assert ev["data"]["node-name"] == "n0"
    for cookie in (wcookie, rcookie):
        while not h.aio_command_completed(cookie):
            h.poll(1)
    assert buf.to_bytearray() == block(200, 0)
    wait_for(lambda: w.done > done_before + 40 or w.error,
             "writer progress after the reconnect")
    w.halt.set()
    w.join(60)
    assert w.error is None, w.error
    h.flush()
    h.shutdown()
    # the data verifies on the upstream file itself
    img = upstream["img"]
    assert read_file(img, 100 * BLK, BLK) == block(100, 7)
    for i, g in w.gen.items():
        assert read_file(img, i * BLK, BLK) == block(i, g), i
    assert d.alive()


def test_without_delay_requests_fail_then_node_recovers(upstream):
    d = upstream["blockd"]
    uri = attach(upstream)
    qmp = d.conn
    h = nbd.NBD()
    h.connect_uri(uri)
    h.pwrite(block(3, 1), 3 * BLK)
    upstream["up"].stop()
    qmp.get_event("NBD_CLIENT_DISCONNECTED", timeout=30)
    # no delay: the requests fail at once, with EIO, nothing hangs
    with pytest.raises(nbd.Error):
        h.pread(BLK, 0)
    with pytest.raises(nbd.Error):
        h.pwrite(block(4, 1), 4 * BLK)
    d.cmd("query-named-block-nodes")
    upstream["up"].start()
    qmp.get_event("NBD_CLIENT_RECONNECTED", timeout=60)

    def reads():
        try:
            return h.pread(BLK, 3 * BLK) == block(3, 1)
        except nbd.Error:
            return False
    wait_for(reads, "the node to serve again")
    h.pwrite(block(4, 2), 4 * BLK)
    h.flush()
    assert read_file(upstream["img"], 4 * BLK, BLK) == block(4, 2)
    # the failed write did not half-happen
    assert read_file(upstream["img"], 3 * BLK, BLK) == block(3, 1)
    h.shutdown()


def test_repeated_restarts_under_load(upstream):
    """Three outages in a row while the writer runs; the data verifies."""
    uri = attach(upstream, reconnect_delay=60)
    qmp = upstream["blockd"].conn
    w = Writer(uri, 40, 16)
    w.start()
    for _ in range(3):
        n = w.done
        wait_for(lambda: w.done >= n + 10 or w.error, "writer progress")
        upstream["up"].stop()
        qmp.get_event("NBD_CLIENT_DISCONNECTED", timeout=30)
        upstream["up"].start()
        qmp.get_event("NBD_CLIENT_RECONNECTED", timeout=60)
    n = w.done
    wait_for(lambda: w.done >= n + 10 or w.error, "writer progress")
    w.halt.set()
    w.join(60)
    assert w.error is None, w.error
    for i, g in w.gen.items():
        assert read_file(upstream["img"], i * BLK, BLK) == block(i, g), i


def test_open_timeout_waits_for_the_server(upstream):
    """open-timeout: blockdev-add retries the first connection until the
    server appears (started after the command was sent)."""
    d = upstream["blockd"]
    upstream["up"].stop()
    q = d.qmp()
    q.send_raw('{"execute": "blockdev-add", "id": 1, "arguments": '
               '{"driver": "nbd", "node-name": "late", "open-timeout": 60,'
               ' "server": {"type": "unix", "path": "%s"}}}'
               % upstream["up"].sock)
    time.sleep(0.5)                  # let it fail a first attempt
    upstream["up"].start()
    reply = q.recv_reply()
    assert reply.get("return") == {}, reply
    q.close()
    uri = export(d, "late", "late", writable=False)
    h = nbd.NBD()
    h.connect_uri(uri)
    assert h.pread(BLK, BLK) == block(1, 0)
    h.shutdown()


def test_chain_over_reconnecting_backing(upstream, tmp_path):
    """A qcow2 overlay whose backing is the nbd node: while the upstream
    is away, a read of backing data and a partial-cluster write (whose
    copy-on-write reads the backing) wait; after the restart both
    complete, and the chain reads as qemu-img reads it."""
    requires("qemu-img")
    d = upstream["blockd"]
    qmp = d.conn
    top = str(tmp_path / "top.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw",
                    "-b", "nbd+unix:///?socket=" + upstream["up"].sock, top,
                    str(SIZE)], check=True)
    nbd_node(d, "n0", upstream["up"].sock, reconnect_delay=60)
    d.cmd("blockdev-add", {"driver": "qcow2", "node-name": "top",
                           "file": {"driver": "file", "filename": top},
                           "backing": "n0"})
    uri = export(d, "top", "top")
    h = nbd.NBD()
    h.connect_uri(uri)
    assert h.pread(BLK, 5 * BLK) == block(5, 0)
    upstream["up"].stop()
    qmp.get_event("NBD_CLIENT_DISCONNECTED", timeout=30)
    rbuf = nbd.Buffer(BLK)
    rcookie = h.aio_pread(rbuf, 9 * BLK)
    wbuf = nbd.Buffer.from_bytearray(bytearray(b"W" * 4096))
    wcookie = h.aio_pwrite(wbuf, 11 * BLK + 512)
    upstream["up"].start()
    qmp.get_event("NBD_CLIENT_RECONNECTED", timeout=60)
    for cookie in (rcookie, wcookie):
        while not h.aio_command_completed(cookie):
            h.poll(1)
    assert rbuf.to_bytearray() == block(9, 0)
    want = bytearray(block(11, 0))
    want[512:512 + 4096] = b"W" * 4096
    assert h.pread(BLK, 11 * BLK) == want
    h.flush()
    h.shutdown()
    subprocess.run(["qemu-img", "compare", "-U", "-f", "raw", "-F", "qcow2",
                    uri, top], check=True, capture_output=True)
    with open(upstream["img"], "rb") as f:     # the base is untouched
        f.seek(11 * BLK)
        assert f.read(BLK) == block(11, 0)
