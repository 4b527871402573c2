"""Protocol violations and edge cases, spoken with raw sockets: each one
gets the error doc/proto.md names (or a dropped connection where the
spec allows no error), and afterwards a fresh libnbd client still works.
Also covers extended headers, which no installed client speaks yet.
"""
import os
import socket
import struct
import time

import nbd
import pytest

from nbdraw import (IHAVEOPT, SIMPLE_MAGIC, OPT_EXPORT_NAME, OPT_ABORT,
                    OPT_LIST, OPT_STARTTLS, OPT_INFO, OPT_GO, OPT_STRUCTURED,
                    OPT_LIST_META, OPT_SET_META, OPT_EXTENDED, REP_ACK,
                    REP_SERVER, REP_META, ERR_UNSUP, ERR_POLICY, ERR_INVALID,
                    ERR_UNKNOWN, ERR_EXT_HEADER_REQD, CMD_READ, CMD_WRITE,
                    CMD_DISC, CMD_FLUSH, CMD_TRIM, CMD_WZ, CMD_BS, F_DF,
                    F_REQ_ONE, F_PAYLOAD_LEN, EPERM, EINVAL, ENOSPC, T_NONE,
                    T_DATA, T_HOLE, T_BS, T_BS_EXT, Raw)

SIZE = 4 << 20


@pytest.fixture
def server(blockd, tmp_path):
    img = str(tmp_path / "a.raw")
    with open(img, "wb") as f:
        f.truncate(SIZE)
        f.seek(65536)
        f.write(b"D" * 65536)
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    blockd.cmd("blockdev-add", driver="file", node_name="f0", filename=img)
    blockd.cmd("nbd-server-start",
               addr={"type": "unix", "data": {"path": sock}})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                    "node-name": "f0", "name": "disk",
                                    "writable": True})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "ro",
                                    "node-name": "f0", "name": "ro"})
    yield sock
    # After every abuse, a well-behaved client still gets service.
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///disk?socket=" + sock)
    assert h.pread(4, 65536) == b"DDDD"
    h.shutdown()


# ---- handshake ---------------------------------------------------------

def test_unknown_client_flags_drop(server):
    r = Raw(server, flags=0x80000003)
    assert r.closed()


def test_bad_option_magic_drops(server):
    r = Raw(server)
    r.s.sendall(struct.pack(">QII", 0x1234, OPT_LIST, 0))
    assert r.closed()


def test_huge_option_length_drops_without_payload(server):
    # Only where no error reply exists; other oversized options get
    # NBD_REP_ERR_TOO_BIG (test-nbd-option-too-big.py).
    r = Raw(server)
    r.send_opt(OPT_EXPORT_NAME, length=0xffffffff)
    assert r.closed()
    r = Raw(server, flags=2)          # not fixed newstyle: only EXPORT_NAME
    r.send_opt(OPT_INFO, length=(64 << 10) + 1)
    assert r.closed()


def test_unknown_option_unsup_then_go(server):
    r = Raw(server)
    reps = r.opt(4242, b"whatever payload")
    assert reps[0][0] == ERR_UNSUP
    assert b"not supported" in reps[0][1]
    reps = r.opt(4, b"")              # PEEK_EXPORT: withdrawn
    assert reps[0][0] == ERR_UNSUP
    r.go()
    assert r.size == SIZE


def test_option_payload_errors(server):
    r = Raw(server)
    reps = r.opt(OPT_LIST, b"junk")
    assert reps == [(ERR_INVALID, reps[0][1])] and reps[0][1]
    # INFO truncated, lying about lengths, NUL in name.
    for data in (b"", b"\0\0", struct.pack(">I", 100) + b"ab\0\0",
                 struct.pack(">I", 4) + b"di\0k" + b"\0\0",
                 struct.pack(">I", 4) + b"disk" + b"\0\5\0\1"):
        reps = r.opt(OPT_INFO, data)
        assert reps[-1][0] == ERR_INVALID, data
    reps = r.opt(OPT_STRUCTURED, b"x")
    assert reps[0][0] == ERR_INVALID
    reps = r.opt(OPT_STARTTLS)
    assert reps[0][0] == ERR_POLICY
    # Meta context: SET before structured replies, then garbage.
    reps = r.set_meta(b"disk", [b"base:allocation"])
    assert reps[0][0] == ERR_INVALID
    assert r.opt(OPT_STRUCTURED)[0][0] == REP_ACK
    assert r.opt(OPT_STRUCTURED)[0][0] == ERR_INVALID
    bad = struct.pack(">I", 4) + b"disk" + struct.pack(">I", 0xffffffff)
    assert r.opt(OPT_SET_META, bad)[0][0] == ERR_INVALID
    bad = struct.pack(">I", 4) + b"disk" + struct.pack(">II", 1, 1000) + b"x"
    assert r.opt(OPT_LIST_META, bad)[0][0] == ERR_INVALID
    reps = r.set_meta(b"nope", [b"base:allocation"])
    assert reps[0][0] == ERR_UNKNOWN
    r.go()


def test_long_export_name(server):
    r = Raw(server)
    name = b"a" * 5000
    data = struct.pack(">I", len(name)) + name + b"\0\0"
    reps = r.opt(OPT_GO, data)
    assert reps[0][0] == ERR_INVALID
    reps = r.opt(OPT_GO, struct.pack(">I", 4) + b"nope\0\0")
    assert reps[0][0] == ERR_UNKNOWN and b"nope" in reps[0][1]
    r.go()


def test_export_name_unknown_drops(server):
    r = Raw(server)
    r.send_opt(OPT_EXPORT_NAME, b"nope")
    assert r.closed()


def test_export_name_and_no_zeroes(server):
    r = Raw(server, flags=1)          # no NO_ZEROES: 124 zero bytes follow
    r.send_opt(OPT_EXPORT_NAME, b"disk")
    size, flags = struct.unpack(">QH", r.recv(10))
    assert size == SIZE and flags & 1
    assert r.recv(124) == bytes(124)
    r.request(CMD_READ, 65536, 4)
    assert r.chunks(4) == [("simple", 0, b"DDDD")]
    r.request(CMD_DISC)
    assert r.closed()


def test_oldstyle_client_may_only_export_name(server):
    r = Raw(server, flags=0)
    r.send_opt(OPT_LIST)
    assert r.closed()


def test_abort(server):
    r = Raw(server)
    assert r.opt(OPT_ABORT) == [(REP_ACK, b"")]
    assert r.closed()


def test_list_and_meta_contexts(server):
    r = Raw(server)
    reps = r.opt(OPT_LIST)
    names = sorted(d[4:4 + struct.unpack(">I", d[:4])[0]]
                   for t, d in reps if t == REP_SERVER)
    assert names == [b"disk", b"ro"]
    data = struct.pack(">I", 4) + b"disk" + struct.pack(">I", 0)
    reps = r.opt(OPT_LIST_META, data)
    assert [d[4:] for t, d in reps if t == REP_META] == [b"base:allocation"]
    assert r.opt(OPT_STRUCTURED)[0][0] == REP_ACK
    reps = r.set_meta(b"disk", [b"base:allocation", b"qemu:nope",
                                b"qemu:allocation-depth", b"x" * 5000])
    metas = [(struct.unpack(">I", d[:4])[0], d[4:])
             for t, d in reps if t == REP_META]
    assert [m[1] for m in metas] == [b"base:allocation"]
    r.go()
    assert r.tflags & (1 << 7)        # DF with structured replies
    r.request(CMD_BS, 0, SIZE)
    rep = r.chunks()
    assert rep[0][0] == T_BS
    ctx = struct.unpack(">I", rep[0][1][:4])[0]
    assert ctx == metas[0][0]
    ext = struct.unpack(">" + "I" * ((len(rep[0][1]) - 4) // 4),
                        rep[0][1][4:])
    assert sum(ext[0::2]) == SIZE
    assert ext[1] & 1 == 1            # hole first
    r.request(CMD_BS, 0, SIZE, flags=F_REQ_ONE)
    rep = r.chunks()
    assert len(rep[0][1]) == 12


def test_handshake_limit(blockd, tmp_path):
    img = str(tmp_path / "a.raw")
    open(img, "wb").truncate(1 << 20)
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    blockd.cmd("blockdev-add", driver="file", node_name="f0", filename=img)
    blockd.cmd("nbd-server-start", {"addr": {"type": "unix",
                                             "data": {"path": sock}},
                                    "handshake-max-seconds": 1})
    t0 = time.monotonic()
    r = Raw(sock)
    assert r.closed(timeout=5)
    assert 0.8 < time.monotonic() - t0 < 4


# ---- transmission -------------------------------------------------------

def connected(sock, name=b"disk", structured=True, extended=False,
              meta=()):
    r = Raw(sock)
    if extended:
        assert r.opt(OPT_EXTENDED)[0][0] == REP_ACK
        r.extended = r.structured = True
    elif structured:
        assert r.opt(OPT_STRUCTURED)[0][0] == REP_ACK
        r.structured = True
    if meta:
        r.set_meta(name, list(meta))
    r.go(name)
    return r


@pytest.mark.parametrize("structured", [False, True],
                         ids=["simple", "structured"])
def test_request_errors_keep_connection(server, structured):
    r = connected(server, structured=structured)
    cases = [
        (dict(cmd=99), EINVAL),                              # unknown
        (dict(cmd=CMD_READ, offset=SIZE, length=1), EINVAL),  # past end
        (dict(cmd=CMD_READ, offset=(1 << 64) - 512, length=1024), EINVAL),
        (dict(cmd=CMD_READ, length=(32 << 20) + 1), EINVAL),  # too big
        (dict(cmd=CMD_READ, length=4, flags=F_REQ_ONE), EINVAL),
        (dict(cmd=CMD_READ, length=4, flags=0x8000), EINVAL),
        (dict(cmd=CMD_TRIM, offset=SIZE - 1, length=2), EINVAL),
        (dict(cmd=CMD_WZ, offset=SIZE - 1, length=2), ENOSPC),
        (dict(cmd=CMD_WZ, length=2, flags=F_REQ_ONE), EINVAL),
        (dict(cmd=CMD_BS, length=4096), EINVAL),              # no context
        (dict(cmd=CMD_WRITE, offset=SIZE - 2, length=4,
              payload=b"wxyz"), ENOSPC),
    ]
    if not structured:
        cases.append((dict(cmd=CMD_READ, length=4, flags=F_DF), EINVAL))
    for i, (kw, err) in enumerate(cases):
        r.request(cookie=i, **kw)
        assert r.error_of(r.chunks()) == err, kw
    # Still in sync and serving.
    r.request(CMD_READ, 65536, 4)
    rep = r.chunks(4)
    assert (rep[0][2] if rep[0][0] == "simple" else rep[0][1][8:]) == \
        b"DDDD"


def test_oversized_write_payload_is_skipped(server):
    r = connected(server)
    big = (32 << 20) + 512
    r.request(CMD_WRITE, 0, big, payload=b"\xee" * big)
    assert r.error_of(r.chunks()) == EINVAL
    r.request(CMD_READ, 0, 4)
    rep = r.chunks()
    assert rep[-1][0] in (T_DATA, T_HOLE)
    assert rep[0][1][8:] == b"\0\0\0\0" or rep[0][0] == T_HOLE


def test_read_only_export_eperm(server):
    r = connected(server, name=b"ro")
    assert r.tflags & 2
    for cmd, payload in ((CMD_WRITE, b"abcd"), (CMD_TRIM, b""),
                         (CMD_WZ, b"")):
        r.request(cmd, 0, 4, payload=payload)
        assert r.error_of(r.chunks()) == EPERM
    r.request(CMD_FLUSH)
    assert r.error_of(r.chunks()) == 0


def test_bad_request_magic_drops(server):
    r = connected(server)
    r.s.sendall(struct.pack(">IHHQQI", 0xdeadbeef, 0, 0, 1, 0, 4))
    assert r.closed()


def test_disc_with_junk_fields_disconnects(server):
    r = connected(server)
    r.request(CMD_DISC, offset=77, length=5, flags=0x8000)
    assert r.closed()


def test_pipelined_requests_out_of_order_ok(server):
    r = connected(server, structured=False)
    n = 64                             # more than the 16 slots
    for i in range(n):
        r.request(CMD_WRITE, i * 512, 512, cookie=1000 + i,
                  payload=bytes([i]) * 512)
    seen = set()
    for i in range(n):
        magic, err, cookie = struct.unpack(">IIQ", r.recv(16))
        assert magic == SIMPLE_MAGIC and err == 0
        seen.add(cookie)
    assert seen == set(range(1000, 1000 + n))
    r.request(CMD_READ, 0, n * 512)
    data = r.chunks(n * 512)[0][2]
    assert data == b"".join(bytes([i]) * 512 for i in range(n))


# ---- extended headers ---------------------------------------------------

def test_extended_headers(server):
    r = connected(server, extended=True, meta=[b"base:allocation"])
    data = b"E" * 8192
    r.request(CMD_WRITE, 8192, len(data), flags=F_PAYLOAD_LEN,
              payload=data)
    assert r.chunks() == [(T_NONE, b"")]
    r.request(CMD_READ, 8192, 8192)
    rep = r.chunks()
    assert rep[0][0] == T_DATA
    assert struct.unpack(">Q", rep[0][1][:8])[0] == 8192
    assert rep[0][1][8:] == data
    # WRITE without PAYLOAD_LEN is refused.
    r.request(CMD_WRITE, 0, 4)
    assert r.error_of(r.chunks()) == EINVAL
    # A read with a payload: drained, refused, connection kept.
    r.request(CMD_READ, 0, 8, flags=F_PAYLOAD_LEN, payload=b"12345678")
    assert r.error_of(r.chunks()) == EINVAL
    # 64-bit block status.
    r.request(CMD_BS, 0, SIZE)
    rep = r.chunks()
    assert rep[0][0] == T_BS_EXT
    ctx, count = struct.unpack(">II", rep[0][1][:8])
    ext = struct.unpack(">" + "Q" * (2 * count), rep[0][1][8:])
    assert sum(ext[0::2]) == SIZE
    assert ext[1] == 3 and ext[3] == 0   # hole+zero, then data
    # A 64-bit length past the end.
    r.request(CMD_READ, 0, 1 << 40)
    assert r.error_of(r.chunks()) == EINVAL
    r.request(CMD_DISC)
    assert r.closed()


def test_extended_headers_forbid_export_name(server):
    r = Raw(server)
    assert r.opt(OPT_EXTENDED)[0][0] == REP_ACK
    assert r.opt(OPT_EXTENDED)[0][0] == ERR_INVALID
    assert r.opt(OPT_STRUCTURED)[0][0] == ERR_EXT_HEADER_REQD
    r.send_opt(OPT_EXPORT_NAME, b"disk")
    assert r.closed()


def test_many_bad_connections_then_good(server):
    for i in range(50):
        r = Raw(server)
        r.s.sendall(os.urandom(64))
        r.s.close()
    for i in range(20):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(server)
        s.close()


def test_pipelined_options_with_slow_reader(server):
    """A client that floods options without reading replies is throttled
    (the server stops reading), and every reply still arrives in order."""
    import threading
    r = Raw(server)
    n = 8000
    blob = struct.pack(">QII", IHAVEOPT, OPT_LIST, 0) * n
    t = threading.Thread(target=r.s.sendall, args=(blob,))
    t.start()
    time.sleep(0.5)                  # let the server hit back-pressure
    acks = 0
    while acks < n:
        o, typ, d = r.reply()
        assert o == OPT_LIST
        if typ == REP_ACK:
            acks += 1
        else:
            assert typ == REP_SERVER
    t.join()
    r.go()


def test_stalled_client_does_not_block_others(blockd, server):
    """A client that pipelines big reads and never reads the replies
    stalls only itself: other clients and QMP are served meanwhile."""
    stalled = connected(server)
    for i in range(64):
        stalled.request(CMD_READ, 0, 1 << 20, cookie=i)
    time.sleep(0.3)
    t0 = time.monotonic()
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///disk?socket=" + server)
    for i in range(50):
        assert h.pread(4, 65536) == b"DDDD"
    q = blockd.cmd("query-block-exports")
    assert time.monotonic() - t0 < 2
    assert [e["clients"] for e in q if e["id"] == "e0"] == [2]
    h.shutdown()
    # Cut it off; its buffered replies are dropped with it.
    blockd.cmd("block-export-del", id="e0", mode="hard")
    assert stalled.closed()
    # The id is free again once the export is really gone (QEMU's rule).
    ev = blockd.conn.get_event("BLOCK_EXPORT_DELETED")
    assert ev["data"] == {"id": "e0"}
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                    "node-name": "f0", "name": "disk",
                                    "writable": True})
