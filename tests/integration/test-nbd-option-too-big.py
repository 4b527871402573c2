"""Regression (review issue 9, item 9): an option longer than the
server buffers is answered NBD_REP_ERR_TOO_BIG and skipped, and the
connection stays in sync for the next option.  Before the fix any
option over 64 KiB dropped the connection without a reply.
"""
import os
import struct

import nbd
import pytest

from nbdraw import (ERR_TOO_BIG, OPT_EXPORT_NAME, OPT_GO, OPT_INFO,
                    OPT_LIST, OPT_SET_META, OPT_STRUCTURED, REP_ACK,
                    REP_SERVER, Raw)

SIZE = 1 << 20


@pytest.fixture
def server(blockd, tmp_path):
    img = str(tmp_path / "a.raw")
    with open(img, "wb") as f:
        f.truncate(SIZE)
        f.write(b"data")
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    blockd.cmd("blockdev-add", driver="file", node_name="f0", filename=img)
    blockd.cmd("nbd-server-start",
               addr={"type": "unix", "data": {"path": sock}})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                    "node-name": "f0", "name": "disk"})
    yield sock
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///disk?socket=" + sock)
    assert h.pread(4, 0) == b"data"
    h.shutdown()


def info_payload(name, ninfos):
    return struct.pack(">I", len(name)) + name + \
        struct.pack(">H", ninfos) + b"\0\3" * ninfos


def test_oversized_options_get_too_big_then_go(server):
    r = Raw(server)
    # 1 MiB of an unknown option, an oversized LIST, a SET_META_CONTEXT
    # with too many queries: each is skipped and refused.
    for opt, data in ((4242, b"\xa5" * (1 << 20)),
                      (OPT_LIST, b"x" * (200 << 10)),
                      (OPT_SET_META,
                       struct.pack(">I", 4) + b"disk" +
                       struct.pack(">I", 100) +
                       (struct.pack(">I", 4000) + b"q" * 4000) * 100)):
        reps = r.opt(opt, data)
        assert len(reps) == 1 and reps[0][0] == ERR_TOO_BIG, (opt, reps)
        assert b"limit" in reps[0][1]
    # The stream is still in sync: normal options work.
    reps = r.opt(OPT_LIST)
    assert [t for t, d in reps] == [REP_SERVER, REP_ACK]
    assert r.opt(OPT_STRUCTURED)[0][0] == REP_ACK
    r.go()
    assert r.size == SIZE


def test_largest_legal_info_is_answered(server):
    """INFO with a name and 65535 info requests is legal (about
    132 KiB): it is read and answered, not refused."""
    r = Raw(server)
    reps = r.opt(OPT_INFO, info_payload(b"disk", 65535))
    assert reps[-1][0] == REP_ACK
    reps = r.opt(OPT_GO, info_payload(b"disk", 65535))
    assert reps[-1][0] == REP_ACK


def test_oversized_export_name_drops(server):
    """EXPORT_NAME has no error reply: an oversized one hangs up before
    any of it is read."""
    r = Raw(server)
    r.send_opt(OPT_EXPORT_NAME, length=0xffffffff)
    assert r.closed()
