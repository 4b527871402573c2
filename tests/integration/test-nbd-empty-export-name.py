"""Regression (issue 9, item 8): NBD_OPT_EXPORT_NAME with an empty name
as the very first option.  The empty name is the default export; the
option carries no data, so the server has no option buffer at all and
once handed NULL to memchr/memcpy (UBSan in nbd/proto.c, which aborts
the daemon in sanitizer builds).  The client must get the export's size
and flags back and be able to use it.

Spoken with the raw-socket client of nbdraw.py (newstyle greeting,
client flags, then the option) since libnbd always negotiates with
NBD_OPT_GO first.
"""
import os
import struct

import pytest

from nbdraw import CMD_DISC, CMD_READ, OPT_EXPORT_NAME, Raw

SIZE = 3 << 20
FLAG_HAS_FLAGS, FLAG_READ_ONLY = 1 << 0, 1 << 1
C_FIXED_NEWSTYLE, C_NO_ZEROES = 1 << 0, 1 << 1


@pytest.fixture
def default_export(blockd):
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    blockd.cmd("blockdev-add", {"driver": "null-co", "node-name": "n0",
                                "size": SIZE, "read-zeroes": True})
    blockd.cmd("nbd-server-start",
               addr={"type": "unix", "data": {"path": sock}})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                    "node-name": "n0", "name": ""})
    return sock


@pytest.mark.parametrize("flags", [C_FIXED_NEWSTYLE | C_NO_ZEROES,
                                   C_FIXED_NEWSTYLE, 0],
                         ids=["no-zeroes", "zeroes", "oldstyle-client"])
def test_empty_export_name_first_option(blockd, default_export, flags):
    r = Raw(default_export, flags=flags)
    r.send_opt(OPT_EXPORT_NAME, b"")
    size, tflags = struct.unpack(">QH", r.recv(10))
    assert size == SIZE
    assert tflags & FLAG_HAS_FLAGS
    assert tflags & FLAG_READ_ONLY       # not writable
    if not flags & C_NO_ZEROES:
        assert r.recv(124) == bytes(124)
    # The export really is attached: a read gets a simple reply.
    r.request(CMD_READ, 4096, 8)
    assert r.chunks(8) == [("simple", 0, bytes(8))]
    r.request(CMD_DISC)
    assert r.closed()
    assert blockd.alive(), blockd.logtext()
