"""Regression (structure issue, item 2): a client's selection of meta
contexts belongs to the export object it was made on, not to the export
name.  A client that selected qemu:allocation-depth on export 'disk',
which is then deleted (mode=hard) and re-added under the same name
without allocation-depth, must not get the old selection applied to the
new export after NBD_OPT_GO.  Before the fix the selection was matched
by name and BLOCK_STATUS answered for a context the new export does not
offer.
"""
import os
import struct

import pytest

from nbdraw import (OPT_LIST_META, OPT_STRUCTURED, REP_ACK, REP_META,
                    CMD_BS, T_BS, T_ERROR, Raw)

SIZE = 1 << 20
EINVAL = 22


@pytest.fixture
def server(blockd, tmp_path):
    img = str(tmp_path / "a.raw")
    with open(img, "wb") as f:
        f.truncate(SIZE)
        f.write(b"x" * 4096)
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    blockd.cmd("blockdev-add", driver="file", node_name="f0", filename=img)
    blockd.cmd("nbd-server-start",
               addr={"type": "unix", "data": {"path": sock}})
    return sock


def export(blockd, eid, depth):
    blockd.cmd("block-export-add", {"type": "nbd", "id": eid,
                                    "node-name": "f0", "name": "disk",
                                    "allocation-depth": depth})


def list_meta(r):
    data = struct.pack(">I", 4) + b"disk" + struct.pack(">I", 0)
    return [d[4:] for t, d in r.opt(OPT_LIST_META, data) if t == REP_META]


def test_selection_does_not_survive_readd(blockd, server):
    export(blockd, "e0", True)
    r = Raw(server)
    assert r.opt(OPT_STRUCTURED)[0][0] == REP_ACK
    reps = r.set_meta(b"disk", [b"qemu:allocation-depth"])
    assert [d[4:] for t, d in reps if t == REP_META] == \
        [b"qemu:allocation-depth"]
    assert reps[-1][0] == REP_ACK

    blockd.cmd("block-export-del", id="e0", mode="hard")
    export(blockd, "e1", False)
    assert list_meta(Raw(server)) == [b"base:allocation"]

    r.go()
    r.request(CMD_BS, 0, SIZE, cookie=7)
    rep = r.chunks()
    # No context was selected on this export: the request is invalid
    # (doc/proto.md: BLOCK_STATUS needs a successful SET_META_CONTEXT).
    assert rep[0][0] == T_ERROR, rep
    assert struct.unpack(">I", rep[0][1][:4])[0] == EINVAL
    assert T_BS not in [t for t, d in rep]


def test_selection_kept_for_same_export(blockd, server):
    """The normal case still works: SET then GO on the same export."""
    export(blockd, "e0", True)
    r = Raw(server)
    assert r.opt(OPT_STRUCTURED)[0][0] == REP_ACK
    reps = r.set_meta(b"disk", [b"base:allocation",
                                b"qemu:allocation-depth"])
    ids = {d[4:]: struct.unpack(">I", d[:4])[0]
           for t, d in reps if t == REP_META}
    assert set(ids) == {b"base:allocation", b"qemu:allocation-depth"}
    r.go()
    r.request(CMD_BS, 0, SIZE)
    rep = r.chunks()
    assert [t for t, d in rep] == [T_BS, T_BS]
    got = {struct.unpack(">I", d[:4])[0] for t, d in rep}
    assert got == set(ids.values())
