"""The NBD write path on a memory-backed file (issue 16): writes up to
BLK_INLINE_WRITE_MAX (1 MiB) run on the loop thread, bigger ones on the
worker pool, and replies queued by one batch of completions go out
together (nbd_conn_queue).

Each test checks what a client must see on every one of those paths:
the bytes land where they were sent (read back from the file itself,
not through the daemon), FUA and flush are answered, a dirty bitmap
counts every byte written, a pipelined stream whose payloads straddle
the daemon's input buffer is answered request by request, a client
that hangs up in the middle of a payload leaves the file untouched and
the daemon serving, and a full file system answers ENOSPC without
losing the connection.
"""
import os
import socket
import struct
import subprocess
import tempfile
import threading

import nbd
import pytest

import nbdraw

KIB = 1024
MIB = 1 << 20
SIZE = 16 * MIB


def pattern(size, seed):
    """Bytes that differ at every position and between seeds."""
    block = bytes((i * 7 + seed) & 0xFF for i in range(251))
    return (block * (size // len(block) + 1))[:size]


def serve(blockd, img):
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    blockd.cmd("blockdev-add", {"driver": "raw", "node-name": "d0",
                                "file": {"driver": "file",
                                         "filename": img}})
    blockd.cmd("nbd-server-start",
               addr={"type": "unix", "data": {"path": sock}})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                    "node-name": "d0", "name": "disk",
                                    "writable": True})
    return sock


def file_bytes(path, offset, length):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


@pytest.fixture
def shm_img(shm_dir):
    img = os.path.join(shm_dir, "disk.raw")
    with open(img, "wb") as f:
        f.truncate(SIZE)
    return img


def raw_client(sock):
    c = nbdraw.Raw(sock)
    c.go(b"disk")
    return c


@pytest.mark.parametrize("length", [4 * KIB, 256 * KIB, MIB, MIB + 4 * KIB,
                                    2 * MIB + 512])
def test_write_sizes_land_in_the_file(blockd, shm_img, length):
    """Inline (up to 1 MiB) and pool (above) writes, plain and FUA,
    aligned and not, read back from the file behind the daemon."""
    sock = serve(blockd, shm_img)
    blockd.cmd("block-dirty-bitmap-add", {"node": "d0", "name": "b0",
                                          "granularity": 512})
    h = nbd.NBD()
    h.set_export_name("disk")
    h.connect_unix(sock)
    a = pattern(length, 1)
    b = pattern(length, 2)
    h.pwrite(a, 512)
    h.pwrite(b, 4 * MIB, nbd.CMD_FLAG_FUA)
    h.flush()
    assert file_bytes(shm_img, 512, length) == a
    assert file_bytes(shm_img, 4 * MIB, length) == b
    assert h.pread(length, 512) == a
    h.shutdown()
    count = None
    for n in blockd.cmd("query-named-block-nodes"):
        if n["node-name"] == "d0":
            count = n["dirty-bitmaps"][0]["count"]
    rounded = (length + 511) // 512 * 512
    assert count == 2 * rounded


def test_pipelined_writes_straddle_buffers(blockd, shm_img):
    """Forty writes of mixed sizes in one send, so headers and payloads
    fall across the 64 KiB input buffer's edges and completions come in
    batches: each gets its own successful reply, every byte lands."""
    sock = serve(blockd, shm_img)
    c = raw_client(sock)
    sizes = [4 * KIB, 100, 256 * KIB, 65536 - 28, 1, MIB, 8191,
             300 * KIB] * 5
    stream = []
    want = {}
    off = 0
    for i, n in enumerate(sizes):
        data = pattern(n, i)
        hdr = struct.pack(">IHHQQI", nbdraw.REQ_MAGIC, 0, nbdraw.CMD_WRITE,
                          1000 + i, off, n)
        stream.append(hdr + data)
        want[off] = data
        off += n
    assert off <= SIZE
    sender = socket.socket(fileno=os.dup(c.s.fileno()))
    blob = b"".join(stream)
    sender.settimeout(60)
    # Send and read at once: the replies may fill the socket first.
    t = threading.Thread(target=sender.sendall, args=(blob,))
    t.start()
    cookies = set()
    for _ in sizes:
        magic, err, cookie = struct.unpack(">IIQ", c.recv(16))
        assert magic == nbdraw.SIMPLE_MAGIC
        assert err == 0, "write %d failed: %d" % (cookie, err)
        cookies.add(cookie)
    t.join()
    sender.close()
    assert cookies == set(range(1000, 1000 + len(sizes)))
    for o, data in want.items():
        assert file_bytes(shm_img, o, len(data)) == data, o
    c.request(nbdraw.CMD_DISC)


@pytest.mark.parametrize("length,sent", [(64 * KIB, 30000),
                                         (MIB, 300 * KIB),
                                         (2 * MIB, MIB + 1)])
def test_disconnect_mid_payload(blockd, shm_img, length, sent):
    """A client that hangs up part-way through a write's payload: nothing
    of that write reaches the file, the daemon keeps serving."""
    sock = serve(blockd, shm_img)
    before = file_bytes(shm_img, MIB, length)
    c = raw_client(sock)
    hdr = struct.pack(">IHHQQI", nbdraw.REQ_MAGIC, 0, nbdraw.CMD_WRITE, 7,
                      MIB, length)
    c.s.sendall(hdr + b"\x5a" * sent)
    c.s.close()
    h = nbd.NBD()
    h.set_export_name("disk")
    h.connect_unix(sock)
    h.pwrite(b"\x11" * 4096, 0)
    h.flush()
    assert file_bytes(shm_img, 0, 4096) == b"\x11" * 4096
    assert h.pread(length, MIB) == before
    assert file_bytes(shm_img, MIB, length) == before
    h.shutdown()
    blockd.cmd("query-version")


@pytest.fixture
def small_tmpfs():
    """A 1 MiB tmpfs of our own, so that writes into a file's holes run
    out of space; skips where mounting is not allowed."""
    d = tempfile.mkdtemp(prefix="blockd-enospc-")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", d],
                       capture_output=True, text=True)
    if r.returncode != 0:
        os.rmdir(d)
        pytest.skip("cannot mount a small tmpfs here: %s" % r.stderr.strip())
    yield d
    subprocess.run(["umount", "-l", d], check=False)
    os.rmdir(d)


def test_enospc_from_the_file(blockd, small_tmpfs):
    """Writes into the holes of a sparse 16 MiB file on a 1 MiB tmpfs:
    the ones that do not fit fail with ENOSPC, inline (<= 1 MiB) and on
    the pool alike; the connection and the written data stay."""
    img = os.path.join(small_tmpfs, "disk.raw")
    with open(img, "wb") as f:
        f.truncate(SIZE)
    sock = serve(blockd, img)
    c = raw_client(sock)
    ok = pattern(64 * KIB, 3)
    c.request(nbdraw.CMD_WRITE, 0, len(ok), cookie=1, payload=ok)
    assert c.error_of(c.chunks()) == 0
    writes = [(2 * MIB, MIB), (4 * MIB, 2 * MIB), (7 * MIB, 256 * KIB),
              (7 * MIB + 512 * KIB, 4 * KIB)]
    for i, (off, n) in enumerate(writes):
        c.request(nbdraw.CMD_WRITE, off, n,
                  flags=nbdraw.F_FUA if i % 2 else 0, cookie=10 + i,
                  payload=b"\x77" * n)
        err = c.error_of(c.chunks())
        if n >= MIB:
            assert err == nbdraw.ENOSPC, (n, err)
        else:
            assert err in (0, nbdraw.ENOSPC), (n, err)
    c.request(nbdraw.CMD_READ, 0, len(ok), cookie=99)
    rep = c.chunks(read_len=len(ok))
    assert rep[0][1] == 0 and rep[0][2] == ok
    c.request(nbdraw.CMD_DISC)
    blockd.cmd("query-version")


@pytest.mark.parametrize("split", [1, 10, 27])
def test_header_split_behind_a_payload(blockd, shm_img, split):
    """A large payload's last recvmsg also takes the next request's
    header into the input buffer (nbd/conn.c conn_recv_direct): a header
    of which only split bytes came with the payload is completed by the
    next read, and both writes land."""
    import time
    sock = serve(blockd, shm_img)
    c = raw_client(sock)
    a = pattern(256 * KIB, 5)
    b = pattern(128 * KIB, 6)
    h1 = struct.pack(">IHHQQI", nbdraw.REQ_MAGIC, 0, nbdraw.CMD_WRITE, 1,
                     0, len(a))
    h2 = struct.pack(">IHHQQI", nbdraw.REQ_MAGIC, nbdraw.F_FUA,
                     nbdraw.CMD_WRITE, 2, MIB, len(b))
    c.s.sendall(h1 + a + h2[:split])
    magic, err, cookie = struct.unpack(">IIQ", c.recv(16))
    assert (magic, err, cookie) == (nbdraw.SIMPLE_MAGIC, 0, 1)
    time.sleep(0.2)
    c.s.sendall(h2[split:] + b)
    magic, err, cookie = struct.unpack(">IIQ", c.recv(16))
    assert (magic, err, cookie) == (nbdraw.SIMPLE_MAGIC, 0, 2)
    assert file_bytes(shm_img, 0, len(a)) == a
    assert file_bytes(shm_img, MIB, len(b)) == b
    # And a hang-up with half a header behind a payload.
    c.s.sendall(h1 + a + h2[:split])
    assert struct.unpack(">IIQ", c.recv(16))[1] == 0
    c.s.close()
    blockd.cmd("query-version")
