"""Big reads of a qcow2 image's data clusters are spliced from the page
cache of its file (qcow2_splice_read in blockdev/qcow2.c), which is only
safe because a cluster freed while a spliced reply may still reference
its pages is not reused until the socket's peer consumed that reply
(BlockSplicePin in blockdev/block.h, conn_release_pins in nbd/conn.c).

The leak these tests would catch: a slow client asks for a big read and
does not read the reply; meanwhile another client discards that range
and writes new data elsewhere, which the image puts into the freed
clusters.  Spliced pages are the file's page cache pages, so without the
quarantine the slow client's reply would carry the new data.
"""
import array
import fcntl
import json
import os
import subprocess
import termios
import time

import nbd

from conftest import SLOW, pattern, pipes
from nbdraw import Raw, CMD_READ, SIMPLE_MAGIC
from qnbd import free_port

KIB = 1 << 10
MIB = 1 << 20
READ = 128 * KIB


def serve(blockd, img):
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    # The file node keeps discard=ignore: freed clusters stay in the
    # file's page cache (a punched hole would drop the pages and hide
    # the leak on tmpfs).
    blockd.cmd("blockdev-add", {"driver": "file", "node-name": "f0",
                                "filename": img})
    blockd.cmd("blockdev-add", {"driver": "qcow2", "node-name": "d0",
                                "file": "f0", "discard": "unmap"})
    blockd.cmd("nbd-server-start",
               {"addr": {"type": "unix", "data": {"path": sock}}})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                    "node-name": "d0", "name": "disk",
                                    "writable": True})
    return sock


def queued(s):
    """Bytes waiting in the receive queue of socket s."""
    buf = array.array("i", [0])
    fcntl.ioctl(s.fileno(), termios.FIONREAD, buf)
    return buf[0]


def client(sock):
    """A libnbd client of export "disk" on unix socket sock."""
    h = nbd.NBD()
    h.set_export_name("disk")
    h.connect_unix(sock)
    return h


def unread_read(sock, cookie):
    """A client that asks for READ bytes at 0 and reads nothing: returns
    it once the whole reply waits in its socket."""
    slow = Raw(sock)
    slow.go(b"disk")
    slow.request(CMD_READ, 0, READ, cookie=cookie)
    deadline = time.monotonic() + 30 * SLOW
    while queued(slow.s) < 16 + READ:
        assert time.monotonic() < deadline, queued(slow.s)
        time.sleep(0.01)
    return slow


def make_image(shm_dir):
    img = os.path.join(shm_dir, "a.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o",
                    "cluster_size=65536", img, str(8 * MIB)], check=True)
    return img


def check_clean(img):
    out = subprocess.run(["qemu-img", "check", "--output=json", img],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)


def test_freed_cluster_not_reused_under_unread_splice(blockd, shm_dir):
    img = make_image(shm_dir)
    sock = serve(blockd, img)
    old, new = pattern(READ, 1), pattern(READ, 2)

    h = client(sock)
    h.pwrite(old, 0)
    h.flush()

    before = pipes(blockd.pid)
    slow = unread_read(sock, 7)
    assert pipes(blockd.pid) > before, "no pipe: the read was copied"

    # Free the clusters under the unread reply, then allocate new ones
    # for other data: reusing the freed clusters would write the new
    # data into the pages the reply holds.
    h.trim(READ, 0)
    h.flush()
    h.pwrite(new, 4 * MIB)
    h.flush()
    assert h.pread(READ, 4 * MIB) == new

    magic = int.from_bytes(slow.recv(4), "big")
    assert magic == SIMPLE_MAGIC
    err = int.from_bytes(slow.recv(4), "big")
    assert err == 0
    slow.recv(8)
    assert slow.recv(READ) == old, "the reply carried other data"
    slow.s.close()
    h.shutdown()
    blockd.cmd("block-export-del", id="e0")
    blockd.cmd("nbd-server-stop")
    blockd.cmd("blockdev-del", node_name="d0")
    blockd.cmd("blockdev-del", node_name="f0")
    # The quarantined clusters went back once the reply was read.
    report = check_clean(img)
    assert report.get("leaks", 0) == 0, report


def test_reads_after_frees_and_reuse_are_right(blockd, shm_dir):
    """Once nothing holds a spliced reply, frees are reused as before,
    and spliced reads of the new data are right."""
    img = make_image(shm_dir)
    sock = serve(blockd, img)
    h = client(sock)
    for round_ in range(4):
        data = pattern(READ, 10 + round_)
        h.pwrite(data, 0)
        h.flush()
        assert h.pread(READ, 0) == data
        h.trim(READ, 0)
        h.flush()
    data = pattern(2 * MIB, 20)
    h.pwrite(data, MIB)
    h.flush()
    assert h.pread(2 * MIB, MIB) == data
    h.shutdown()
    blockd.cmd("block-export-del", id="e0")
    blockd.cmd("nbd-server-stop")
    blockd.cmd("blockdev-del", node_name="d0")
    blockd.cmd("blockdev-del", node_name="f0")
    report = check_clean(img)
    assert report.get("leaks", 0) == 0, report
    size = os.path.getsize(img)
    # Freed clusters were reused: the image did not grow by every
    # round's clusters.
    assert size < 3 * MIB + 512 * KIB, size


def test_connection_closed_with_unread_reply(blockd, shm_dir):
    """The server hangs up on a client that has not read a spliced
    reply (hard export removal): the client can still read it from its
    socket, so the clusters freed afterwards are never reused (they
    leak, which qemu-img check reports and repairs) and the reply stays
    the old data."""
    img = make_image(shm_dir)
    sock = serve(blockd, img)
    old, new = pattern(READ, 3), pattern(READ, 4)
    h = client(sock)
    h.pwrite(old, 0)
    h.flush()
    h.shutdown()

    slow = unread_read(sock, 9)
    blockd.cmd("block-export-del", id="e0", mode="hard")
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e1",
                                    "node-name": "d0", "name": "disk",
                                    "writable": True})
    h = client(sock)
    h.trim(READ, 0)
    h.flush()
    h.pwrite(new, 4 * MIB)
    h.flush()
    h.shutdown()

    assert int.from_bytes(slow.recv(4), "big") == SIMPLE_MAGIC
    assert int.from_bytes(slow.recv(4), "big") == 0
    slow.recv(8)
    assert slow.recv(READ) == old, "the reply carried other data"
    slow.s.close()
    blockd.cmd("block-export-del", id="e1")
    blockd.cmd("nbd-server-stop")
    blockd.cmd("blockdev-del", node_name="d0")
    blockd.cmd("blockdev-del", node_name="f0")
    out = subprocess.run(["qemu-img", "check", "--output=json", img],
                         capture_output=True, text=True)
    report = json.loads(out.stdout)
    # Leaked clusters only (exit 3), never corruption.
    assert report.get("corruptions", 0) == 0, report
    assert out.returncode in (0, 3), out.stdout + out.stderr


def test_tcp_reads_are_copied(blockd, shm_dir):
    """Over TCP the peer's consumption cannot be seen (over loopback the
    receiver's queue keeps the pages after the data is acknowledged):
    qcow2 reads are copied, not spliced, and are right."""
    img = make_image(shm_dir)
    port = free_port()
    blockd.cmd("blockdev-add", {"driver": "file", "node-name": "f0",
                                "filename": img})
    blockd.cmd("blockdev-add", {"driver": "qcow2", "node-name": "d0",
                                "file": "f0"})
    blockd.cmd("nbd-server-start",
               {"addr": {"type": "inet",
                         "data": {"host": "127.0.0.1",
                                  "port": str(port)}}})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                    "node-name": "d0", "name": "disk",
                                    "writable": True})
    data = pattern(MIB, 5)
    h = nbd.NBD()
    h.set_export_name("disk")
    h.connect_tcp("127.0.0.1", str(port))
    h.pwrite(data, 0)
    h.flush()
    before = pipes(blockd.pid)
    for off in (0, 256 * KIB, 512 * KIB):
        assert h.pread(256 * KIB, off) == data[off:off + 256 * KIB]
    assert pipes(blockd.pid) == before, "a qcow2 read was spliced over TCP"
    h.shutdown()
