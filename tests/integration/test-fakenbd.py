"""The fake NBD server (fakenbd.py) that the NBD client tests aim at
blockd: behaving, it serves real clients (libnbd, nbdinfo, qemu-img)
correctly; misbehaving, it puts on the wire exactly the violation it is
named after (checked with the hand-driven client, nbdraw.py)."""
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time

import nbd
import pytest

from conftest import requires
from fakenbd import (FakeNbd, MISBEHAVIOURS, BASE_ALLOCATION, INFO_EXPORT,
                     INFO_BLOCK_SIZE)
from nbdraw import (OPT_LIST, OPT_STRUCTURED, OPT_EXTENDED, OPT_SET_META,
                    OPT_GO, REP_ACK, REP_SERVER, REP_INFO, REP_META,
                    ERR_UNSUP, CMD_READ, CMD_WRITE, CMD_BS, SIMPLE_MAGIC,
                    STRUCT_MAGIC,
                    T_DATA, T_BS, T_BS_EXT, T_ERROR, Raw)

SIZE = 1 << 20


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="fake-", dir="/tmp")
    yield d
    shutil.rmtree(d)


@pytest.fixture
def srv(sockdir):
    data = bytearray(SIZE)
    data[65536:131072] = b"D" * 65536
    s = FakeNbd(os.path.join(sockdir, "nbd.sock"), data=data,
                exports=["", "disk"], description="fake disk")
    yield s
    s.stop()


def uri(srv, name=""):
    return "nbd+unix:///%s?socket=%s" % (name, srv.path)


def connect(srv, structured=True):
    h = nbd.NBD()
    h.set_request_structured_replies(structured)
    if structured:
        h.add_meta_context("base:allocation")
    h.connect_uri(uri(srv))
    return h


@pytest.mark.parametrize("structured", [True, False])
def test_libnbd_reads_writes_block_status(srv, structured):
    h = connect(srv, structured)
    assert h.get_size() == SIZE
    assert h.get_structured_replies_negotiated() == structured
    assert h.pread(8, 65536 - 4) == b"\0" * 4 + b"DDDD"
    h.pwrite(b"W" * 4096, 8192, nbd.CMD_FLAG_FUA)
    h.flush()
    assert srv.data[8192:8192 + 4096] == b"W" * 4096
    h.zero(4096, 8192)
    h.trim(4096, 12288)
    assert srv.data[8192:8192 + 4096] == bytes(4096)
    if structured:
        seen = []
        h.block_status(SIZE, 0,
                       lambda ctx, off, ents, err: seen.append((ctx, ents)))
        assert seen == [("base:allocation",
                         [65536, 3, 65536, 0, SIZE - 131072, 3])]
    h.shutdown()
    assert srv.handshakes == 1


def test_info_list_and_qemu_img_map(srv):
    requires("nbdinfo", "qemu-img")
    out = subprocess.run(["nbdinfo", "--list", "--json",
                          "nbd+unix://?socket=" + srv.path],
                         capture_output=True, text=True, check=True).stdout
    assert '"export-name": "disk"' in out
    assert '"block_size_maximum": 33554432' in out
    h = nbd.NBD()
    h.set_full_info(True)
    h.connect_uri(uri(srv, "disk"))
    assert h.get_export_description() == "fake disk"
    assert h.get_canonical_export_name() == "disk"
    m = subprocess.run(["qemu-img", "map", "--output=json", "-f", "raw",
                        uri(srv)], capture_output=True, text=True,
                       check=True).stdout
    assert '"start": 65536, "length": 65536' in m
    assert '"data": true' in m


def test_extended_headers_by_hand(srv):
    r = Raw(srv.path)
    assert r.opt(OPT_EXTENDED)[-1][0] == REP_ACK
    assert r.opt(OPT_STRUCTURED)[-1][0] != REP_ACK
    r.set_meta(b"", [BASE_ALLOCATION])
    r.go(b"")
    r.extended = True
    r.request(CMD_READ, 65532, 8, cookie=7)
    t, d = r.chunks()[0]
    assert (t, d) == (T_DATA, struct.pack(">Q", 65532) + b"\0" * 4 + b"DDDD")
    r.request(CMD_BS, 0, SIZE, cookie=8)
    t, d = r.chunks()[0]
    assert t == T_BS_EXT
    assert struct.unpack(">II", d[:8]) == (1, 3)
    assert struct.unpack(">6Q", d[8:]) == (65536, 3, 65536, 0,
                                          SIZE - 131072, 3)


def test_no_structured_server(sockdir):
    with FakeNbd(os.path.join(sockdir, "s"), structured=False) as s:
        r = Raw(s.path)
        assert r.opt(OPT_STRUCTURED)[0][0] == ERR_UNSUP
        assert r.opt(OPT_SET_META, b"")[0][0] == ERR_UNSUP
        h = nbd.NBD()
        h.connect_uri(uri(s))
        assert not h.get_structured_replies_negotiated()
        assert h.pread(4, 0) == b"\0" * 4


def test_size_change_and_drop(srv):
    h = connect(srv)
    srv.size = 2 * SIZE
    srv.drop()
    with pytest.raises(nbd.Error):
        h.pread(4096, 0)
    assert connect(srv).get_size() == 2 * SIZE


# ---- misbehaviours, as seen on the wire ------------------------------

def raw(srv, structured=True):
    r = Raw(srv.path)
    if structured:
        r.opt(OPT_STRUCTURED)
        r.set_meta(b"", [BASE_ALLOCATION])
    r.go(b"")
    return r


def header(r):
    """One reply header: (magic, flags, type, cookie, length)."""
    magic = struct.unpack(">I", r.recv(4))[0]
    if magic == SIMPLE_MAGIC:
        err, cookie = struct.unpack(">IQ", r.recv(12))
        return magic, 0, err, cookie, None
    flags, t, cookie, n = struct.unpack(">HHQI", r.recv(16))
    return magic, flags, t, cookie, n


def test_every_misbehaviour_is_documented_and_checked():
    assert set(MISBEHAVIOURS) == set(CHECKS) | set(HANDSHAKE) | \
        {"endless_list", "stall"}


def check_huge_chunk(r):
    magic, flags, t, cookie, n = header(r)
    assert (t, n) == (T_DATA, 0xfffffff0)
    assert not r.closed(0.5)


def check_oversized_simple(r):
    magic, flags, err, cookie, n = header(r)
    assert (magic, err) == (SIMPLE_MAGIC, 0)
    assert len(r.recv(4096 + 65536)) == 4096 + 65536


def check_unsolicited_structured(r):
    magic, flags, t, cookie, n = header(r)
    assert (magic, t, n) == (STRUCT_MAGIC, T_DATA, 8 + 4096)


def check_unknown_cookie(r):
    assert header(r)[3] not in (1, 0)


def data_chunks(r):
    out = []
    while True:
        magic, flags, t, cookie, n = header(r)
        body = r.recv(n)
        if t == T_DATA:
            off = struct.unpack(">Q", body[:8])[0]
            out.append((off, len(body) - 8))
        if flags & 1:
            return out


def check_read_past_range(r):
    assert data_chunks(r) == [(65536, 8192)]


def check_read_before_range(r):
    assert data_chunks(r) == [(65536 - 4096, 4096)]


def check_read_overlap(r):
    assert data_chunks(r) == [(65536, 4096), (65536, 2048)]


def check_read_short(r):
    assert data_chunks(r) == [(65536, 2048)]


def check_short_chunk(r):
    assert header(r)[4] == 4
    r.recv(4)
    assert r.closed()


def check_truncated_chunk(r):
    assert header(r)[4] == 8 + 4096
    assert len(r.recv(8 + 2048)) == 8 + 2048
    assert r.closed()


def check_no_done(r):
    magic, flags, t, cookie, n = header(r)
    assert flags & 1 == 0
    r.recv(n)
    assert r.closed()


def check_close_mid_reply(r):
    header(r)
    r.recv(8 + 2048)
    assert r.closed()


def check_bad_error_chunk(r):
    magic, flags, t, cookie, n = header(r)
    err, msglen = struct.unpack(">IH", r.recv(6))
    assert t == T_ERROR and msglen > n


def extents(r):
    magic, flags, t, cookie, n = header(r)
    assert t == T_BS
    d = r.recv(n)
    ctx = struct.unpack(">I", d[:4])[0]
    return ctx, [struct.unpack(">II", d[i:i + 8])
                 for i in range(4, len(d), 8)]


def check_bs_zero_length(r):
    assert extents(r)[1][0] == (0, 0)


def check_bs_backward(r):
    lens = [n for n, st in extents(r)[1]]
    assert sum(lens) % (1 << 32) < 65536 < sum(lens)


def check_bs_past_end(r):
    assert sum(n for n, st in extents(r)[1]) == SIZE - 65536 + (1 << 20)


def check_bs_past_range(r):
    assert extents(r)[1] == [(4096 + (1 << 20), 0)]


def check_bs_unknown_context(r):
    assert extents(r)[0] != 1


def check_bs_empty(r):
    assert extents(r)[1] == []


CHECKS = {n[6:]: f for n, f in globals().items() if n.startswith("check_")}


@pytest.mark.parametrize("mode", sorted(CHECKS))
def test_misbehaviour(srv, mode):
    srv.misbehave = {mode}
    srv.misbehave_once = True
    r = raw(srv, structured=mode not in ("oversized_simple",
                                         "unsolicited_structured"))
    cmd = CMD_BS if mode.startswith("bs_") else CMD_READ
    r.request(cmd, 65536, 4096, cookie=1)
    CHECKS[mode](r)
    assert mode not in srv.misbehave         # once: consumed


def test_stall(srv):
    srv.misbehave = {"stall"}
    r = raw(srv)
    r.request(CMD_READ, 0, 4096, cookie=1)
    srv.wait(lambda: srv.requests, what="request")
    assert not r.closed(0.5)
    srv.misbehave = set()
    r.request(CMD_WRITE, 0, 4, cookie=2, payload=b"abcd")
    assert r.chunks() == [(0, b"")]


def test_endless_list(srv):
    srv.misbehave = {"endless_list"}
    r = Raw(srv.path)
    r.send_opt(OPT_LIST)
    for _ in range(70000):
        opt, t, d = r.reply()
        assert (opt, t) == (OPT_LIST, REP_SERVER)
    r.s.close()


def test_run_as_a_program(sockdir):
    requires("nbdinfo")
    path = os.path.join(sockdir, "prog.sock")
    here = os.path.dirname(os.path.abspath(__file__))
    p = subprocess.Popen(["/usr/bin/python3", os.path.join(here, "fakenbd.py"),
                          path, "--size", "65536", "--export", "x"])
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(path):
            assert p.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        out = subprocess.run(["nbdinfo", "--size",
                              "nbd+unix:///x?socket=" + path],
                             capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "65536"
    finally:
        p.terminate()
        assert p.wait(30) == 0


def go_replies(r):
    r.send_opt(OPT_GO, struct.pack(">I", 0) + struct.pack(">H", 0))
    return r


def infos(r):
    out = {}
    while True:
        opt, t, d = r.reply()
        if t == REP_ACK:
            return out
        assert t == REP_INFO
        out[struct.unpack(">H", d[:2])[0]] = d[2:]


def hs_go_endless_info(r):
    go_replies(r)
    for _ in range(2000):
        assert r.reply()[1] == REP_INFO


def hs_go_no_export(r):
    assert set(infos(go_replies(r))) == {INFO_BLOCK_SIZE}


def hs_go_huge_size(r):
    size, flags = struct.unpack(">QH", infos(go_replies(r))[INFO_EXPORT])
    assert size == (1 << 63) + 4096


def hs_go_bad_block_size(r):
    bs = struct.unpack(">III", infos(go_replies(r))[INFO_BLOCK_SIZE])
    assert bs == (3, 4096, 2)


def hs_reply_wrong_opt(r):
    r.send_opt(OPT_STRUCTURED)
    opt, t, d = r.reply()
    assert t == REP_ACK and opt != OPT_STRUCTURED


def hs_reply_huge(r):
    go_replies(r)
    magic, opt, t, n = struct.unpack(">QIII", r.recv(20))
    assert n == 0xffffffff


def hs_meta_unasked(r):
    r.opt(OPT_STRUCTURED)
    reps = r.set_meta(b"", [BASE_ALLOCATION])
    assert reps[0] == (REP_META, struct.pack(">I", 1) +
                       b"qemu:dirty-bitmap:unasked")


def hs_stall_greeting(r):
    r.s.settimeout(0.5)
    with pytest.raises(socket.timeout):
        r.s.recv(1)


HANDSHAKE = {n[3:]: f for n, f in globals().items() if n.startswith("hs_")}


@pytest.mark.parametrize("mode", sorted(HANDSHAKE))
def test_handshake_misbehaviour(srv, mode):
    srv.misbehave = {mode}
    HANDSHAKE[mode](Raw(srv.path, handshake=mode != "stall_greeting"))
