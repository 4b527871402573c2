"""Until its first request a connection reads through a 256-byte buffer
in its struct (no page mapped and unmapped per connect), then through
its 64 KiB page-backed buffer.  These clients cross that switch in the
awkward places: everything from the client flags to the first requests
in one write, options longer than the small buffer, and a client that
sends its handshake a few bytes at a time."""
import os
import socket
import struct
import time

import nbd

import nbdraw
from nbdraw import Raw

SIZE = 1 << 20


def serve(blockd, tmp_path):
    img = str(tmp_path / "a.raw")
    with open(img, "wb") as f:
        f.truncate(SIZE)
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    blockd.cmd("blockdev-add", driver="file", node_name="f0", filename=img)
    blockd.cmd("nbd-server-start",
               {"addr": {"type": "unix", "data": {"path": sock}}})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                    "node-name": "f0", "name": "disk",
                                    "writable": True})
    return sock, img


def go_option(name=b"disk"):
    return struct.pack(">QII", nbdraw.IHAVEOPT, nbdraw.OPT_GO,
                       4 + len(name) + 2) + \
        struct.pack(">I", len(name)) + name + struct.pack(">H", 0)


def request(cmd, offset, length, cookie, payload=b""):
    return struct.pack(">IHHQQI", nbdraw.REQ_MAGIC, 0, cmd, cookie, offset,
                       length) + payload


def read_go_replies(r):
    reps = r.replies(nbdraw.OPT_GO)
    assert reps[-1][0] == nbdraw.REP_ACK, reps


def simple_reply(r, length=0):
    magic, err, cookie = struct.unpack(">IIQ", r.recv(16))
    assert magic == nbdraw.SIMPLE_MAGIC
    return err, cookie, r.recv(length) if not err else b""


def test_everything_in_one_write(blockd, tmp_path):
    """Flags, GO, a 64 KiB write, a 4 KiB write, two reads and DISC in
    one sendall: the write's payload starts in the small buffer and
    goes on in its own buffer; later headers come through the page.
    The reads are of other ranges, filled before: a server may run a
    read before a write sent ahead of it whose reply has not come
    (NBD orders nothing), and under ASan blockd did."""
    sock, img = serve(blockd, tmp_path)
    a = os.urandom(65536)
    b = os.urandom(4096)
    c = os.urandom(65536)
    d = os.urandom(4096)
    with open(img, "r+b") as f:
        f.seek(262144)
        f.write(c)
        f.seek(393216)
        f.write(d)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(sock)
    s.sendall(struct.pack(">I", 3) + go_option() +
              request(nbdraw.CMD_WRITE, 4096, len(a), 1, a) +
              request(nbdraw.CMD_WRITE, 131072, len(b), 2, b) +
              request(nbdraw.CMD_READ, 262144, len(c), 3) +
              request(nbdraw.CMD_READ, 393216, len(d), 4) +
              request(nbdraw.CMD_DISC, 0, 0, 5))
    r = Raw(s, handshake=False)
    magic, opt, hflags = struct.unpack(">QQH", r.recv(18))
    assert (magic, opt) == (nbdraw.NBDMAGIC, nbdraw.IHAVEOPT)
    read_go_replies(r)
    got = {}
    for _ in range(4):
        magic, err, cookie = struct.unpack(">IIQ", r.recv(16))
        assert magic == nbdraw.SIMPLE_MAGIC and err == 0, (err, cookie)
        if cookie == 3:
            got[3] = r.recv(len(c))
        elif cookie == 4:
            got[4] = r.recv(len(d))
        else:
            got[cookie] = b""
    assert sorted(got) == [1, 2, 3, 4]
    assert got[3] == c and got[4] == d
    assert r.closed()
    with open(img, "rb") as f:
        f.seek(4096)
        assert f.read(len(a)) == a
        f.seek(131072)
        assert f.read(len(b)) == b


def test_options_longer_than_the_small_buffer(blockd, tmp_path):
    """A 300-byte export name (unknown: an error reply) and a meta
    context query list of about 1 KiB, then the real GO and a read."""
    sock, _ = serve(blockd, tmp_path)
    r = Raw(sock)
    name = b"x" * 300
    reps = r.opt(nbdraw.OPT_GO, struct.pack(">I", len(name)) + name +
                 struct.pack(">H", 0))
    assert reps[-1][0] == nbdraw.ERR_UNKNOWN
    assert r.opt(nbdraw.OPT_STRUCTURED)[-1][0] == nbdraw.REP_ACK
    queries = [b"base:allocation"] + [b"qemu:nothing-%03d" % i
                                      for i in range(50)]
    reps = r.set_meta(b"disk", queries)
    assert reps[-1][0] == nbdraw.REP_ACK
    assert [t for t, _ in reps[:-1]] == [nbdraw.REP_META]
    r.go()
    r.request(nbdraw.CMD_READ, 0, 4096)
    chunks = r.chunks(4096)
    assert chunks, chunks


def test_handshake_a_few_bytes_at_a_time(blockd, tmp_path):
    """Every byte of the handshake and of the first request in its own
    send, a millisecond apart: the server answers each option once it is
    whole and serves the request."""
    sock, _ = serve(blockd, tmp_path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(sock)
    r = Raw(s, handshake=False)
    r.recv(18)

    def dribble(data):
        for i in range(len(data)):
            s.send(data[i:i + 1])
            time.sleep(0.001)

    dribble(struct.pack(">I", 3) + go_option())
    read_go_replies(r)
    dribble(request(nbdraw.CMD_READ, 0, 512, 7))
    err, cookie, data = simple_reply(r, 512)
    assert (err, cookie, data) == (0, 7, b"\0" * 512)


def test_libnbd_connects_and_reads_after_idle(blockd, tmp_path):
    """A real client: connect, read, idle past the buffer release (the
    page-backed buffer goes), read again."""
    sock, _ = serve(blockd, tmp_path)
    h = nbd.NBD()
    h.set_export_name("disk")
    h.connect_unix(sock)
    h.pwrite(b"\xab" * 8192, 8192)
    time.sleep(1.5)
    assert h.pread(8192, 8192) == b"\xab" * 8192
    h.shutdown()
