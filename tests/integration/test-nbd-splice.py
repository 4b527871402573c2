"""Big reads of raw files go from the page cache to the socket by
splice(2) through a pipe of the request slot's (nbd/transmission.c,
file_splice_read() in blockdev/file.c), never copied by the daemon.

These tests check that the path is taken where it should be (the
daemon's pipes show in /proc/PID/fd) and not where it must not be (TLS,
O_DIRECT, small reads), and that what clients read is right in every
case the ordinary path handles: simple and structured replies, holes
(still hole chunks), data written after a hole was seen, holes punched
inside data already seen, a file shrunk behind the daemon's back,
reads bigger than a pipe, and many clients at once.
"""
import os
import subprocess
import time

import nbd
import pytest

from conftest import pattern, pipes, requires

MIB = 1 << 20


def serve(blockd, img, file_args=None, raw_args=None, tls=None):
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    args = {"driver": "raw", "node-name": "d0",
            "file": {"driver": "file", "filename": img}}
    args.update(raw_args or {})
    args["file"].update(file_args or {})
    blockd.cmd("blockdev-add", args)
    srv = {"addr": {"type": "unix", "data": {"path": sock}}}
    if tls:
        srv["tls-creds"] = tls
    blockd.cmd("nbd-server-start", srv)
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                    "node-name": "d0", "name": "disk",
                                    "writable": True})
    return sock


def connect(sock, structured=True, export="disk"):
    h = nbd.NBD()
    h.set_request_structured_replies(structured)
    h.set_export_name(export)
    h.connect_unix(sock)
    return h


def chunks(h, count, offset):
    """The (kind, offset, length) chunks of one structured read."""
    seen = []

    def cb(buf, off, status, err):
        seen.append(("hole" if status == nbd.READ_HOLE else "data",
                     off, len(buf)))
        return 0

    data = h.pread_structured(count, offset, cb)
    return data, seen


@pytest.fixture
def image(shm_dir):
    path = os.path.join(shm_dir, "a.raw")
    with open(path, "wb") as f:
        f.write(pattern(8 * MIB, 1))
    return path


@pytest.mark.parametrize("structured", [True, False])
def test_reads_spliced_and_right(blockd, image, structured):
    sock = serve(blockd, image)
    before = pipes(blockd.pid)
    want = open(image, "rb").read()
    h = connect(sock, structured)
    for off, size in ((0, 256 * 1024), (12345, 300 * 1024),
                      (8 * MIB - 64 * 1024, 64 * 1024),
                      (MIB + 1, MIB - 8192)):
        assert h.pread(size, off) == want[off:off + size], (off, size)
    assert pipes(blockd.pid) > before, "no pipe: the reads were copied"
    h.shutdown()


def test_small_reads_and_big_reads_are_copied(blockd, image):
    sock = serve(blockd, image)
    before = pipes(blockd.pid)
    want = open(image, "rb").read()
    h = connect(sock)
    assert h.pread(4096, 4096) == want[4096:8192]
    assert h.pread(60 * 1024, 0) == want[:60 * 1024]
    # Bigger than a pipe holds: the ordinary path.
    assert h.pread(4 * MIB, 3 * MIB) == want[3 * MIB:7 * MIB]
    assert pipes(blockd.pid) == before
    h.shutdown()


def test_holes_stay_hole_chunks(blockd, shm_dir):
    img = os.path.join(shm_dir, "sparse.raw")
    with open(img, "wb") as f:
        f.truncate(4 * MIB)
        f.seek(MIB)
        f.write(pattern(MIB, 2))
    sock = serve(blockd, img)
    h = connect(sock)
    # All data: spliced, one data chunk.
    data, seen = chunks(h, 512 * 1024, MIB)
    assert data == pattern(MIB, 2)[:512 * 1024]
    assert seen == [("data", MIB, 512 * 1024)]
    # A range with a hole (a pipe could hold it): the ordinary path,
    # which finds the hole.
    data, seen = chunks(h, 768 * 1024, MIB + 512 * 1024)
    assert data == pattern(MIB, 2)[512 * 1024:] + bytes(256 * 1024)
    assert ("hole", 2 * MIB, 256 * 1024) in seen
    # The hole filled by a write, then read: data.
    h.pwrite(pattern(256 * 1024, 3), 2 * MIB)
    data, seen = chunks(h, 768 * 1024, MIB + 512 * 1024)
    assert data == pattern(MIB, 2)[512 * 1024:] + pattern(256 * 1024, 3)
    assert seen == [("data", MIB + 512 * 1024, 768 * 1024)]
    h.shutdown()


def test_hole_punched_inside_known_data(blockd, image):
    """Data seen once is remembered as data; a discard inside it must
    make the daemon look again (a hole chunk, zeroes)."""
    blockd_sock = serve(blockd, image, {"discard": "unmap"},
                        {"discard": "unmap"})
    h = connect(blockd_sock)
    start, size = 768 * 1024, MIB - 8192
    want = bytearray(pattern(8 * MIB, 1)[start:start + size])
    data, seen = chunks(h, size, start)
    assert data == bytes(want)
    assert seen == [("data", start, size)]
    h.trim(256 * 1024, MIB)
    want[MIB - start:MIB - start + 256 * 1024] = bytes(256 * 1024)
    data, seen = chunks(h, size, start)
    assert data == bytes(want)
    assert ("hole", MIB, 256 * 1024) in seen, seen
    h.shutdown()


def test_file_shrunk_behind_our_back(blockd, image):
    """Past the end of a file a protocol node reads zeroes; spliced
    reads that meet the end fill the rest with zeroes the same way."""
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    blockd.cmd("blockdev-add", driver="file", node_name="f0",
               filename=image)
    blockd.cmd("nbd-server-start",
               {"addr": {"type": "unix", "data": {"path": sock}}})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                    "node-name": "f0", "name": "disk"})
    h = connect(sock, structured=False)
    want = pattern(8 * MIB, 1)
    assert h.pread(512 * 1024, 0) == want[:512 * 1024]
    os.truncate(image, MIB + 100 * 1024)
    got = h.pread(512 * 1024, MIB)
    assert got == want[MIB:MIB + 100 * 1024] + bytes(412 * 1024)
    h.shutdown()


def test_many_clients(blockd, image):
    requires("nbdcopy")
    sock = serve(blockd, image)
    out = image + ".copy"
    for conns, reqs in ((1, 1), (4, 16)):
        subprocess.run(["nbdcopy", "--connections=%d" % conns,
                        "--requests=%d" % reqs, "--request-size=%d" % MIB,
                        "nbd+unix:///disk?socket=%s" % sock, out],
                       check=True)
        with open(out, "rb") as a, open(image, "rb") as b:
            assert a.read() == b.read()
        os.unlink(out)
    subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", image,
                    "nbd+unix:///disk?socket=%s" % sock], check=True)


def test_idle_connection_gives_pipes_back(blockd, image):
    sock = serve(blockd, image)
    before = pipes(blockd.pid)
    h = connect(sock)
    h.pread(MIB - 8192, 0)
    assert pipes(blockd.pid) > before
    # NBD_IDLE_RELEASE_US (1 s) without a request: buffers and pipes go.
    deadline = time.monotonic() + 30
    while pipes(blockd.pid) > before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pipes(blockd.pid) == before
    assert h.pread(MIB - 8192, 0) == pattern(MIB - 8192, 1)
    h.shutdown()


def test_not_under_tls(blockd, image, tmp_path):
    import pki
    pki.require_tools()
    d = pki.psk_dir(tmp_path / "psk", {"alice": None})
    blockd.cmd("object-add", {"qom-type": "tls-creds-psk", "id": "tls0",
                              "endpoint": "server", "dir": d})
    sock = serve(blockd, image, tls="tls0")
    before = pipes(blockd.pid)
    h = nbd.NBD()
    h.set_export_name("disk")
    h.set_tls(nbd.TLS_REQUIRE)
    h.set_tls_username("alice")
    h.set_tls_psk_file(os.path.join(d, "keys.psk"))
    h.connect_unix(sock)
    assert h.pread(MIB - 8192, 0) == pattern(MIB - 8192, 1)
    assert pipes(blockd.pid) == before
    h.shutdown()


def write_image(path, size, seed):
    with open(path, "wb") as f:
        f.write(pattern(size, seed))
    return str(path)


def pipes_gained(blockd, sock, size, offset, want):
    """Read size bytes at offset on a new connection, check them against
    want, and return how many pipes the daemon holds more than before."""
    before = pipes(blockd.pid)
    h = connect(sock)
    assert h.pread(size, offset) == want[offset:offset + size]
    gained = pipes(blockd.pid) - before
    h.shutdown()
    return gained


def test_not_under_o_direct(blockd, tmp_path):
    img = write_image(tmp_path / "d.raw", 2 * MIB, 4)
    sock = serve(blockd, img, {"cache": {"direct": True}})
    assert pipes_gained(blockd, sock, MIB, 4096, pattern(2 * MIB, 4)) == 0


def test_disk_file_through_the_pool(blockd, tmp_path):
    """A file on a disk filesystem (not tmpfs): spliced on a worker."""
    img = write_image(tmp_path / "disk.raw", 4 * MIB, 5)
    sock = serve(blockd, img)
    assert pipes_gained(blockd, sock, MIB - 8192, 3 * MIB,
                        pattern(4 * MIB, 5)) > 0
