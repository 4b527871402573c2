"""An export offering qemu:dirty-bitmap:NAME of its node, and a mirror
that pivots the export to the target.  As in QEMU (whose export looks
its bitmaps up at block-export-add and keeps them while its
BlockBackend moves to the target), the contexts still read the
source's bitmap after the pivot; so the source must stay alive:
blockdev-del refuses it until the export goes (before, it freed the
bitmap under the export: a use after free under ASan)."""
import os
import subprocess
import time

import nbd
import pytest

from chain import wait_end_event
from conftest import QmpError, requires

MIB = 1 << 20
SIZE = 4 * MIB
CTX = "qemu:dirty-bitmap:b0"


def run(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True,
                          text=True).stdout


def connect(sock):
    h = nbd.NBD()
    h.add_meta_context(CTX)
    h.set_export_name("e0")
    h.connect_unix(sock)
    return h


def dirty(h):
    """The dirty ranges [(offset, length)] of CTX over the export."""
    out, pos = [], 0
    while pos < SIZE:
        got = []

        def cb(metacontext, off, entries, err):
            if metacontext == CTX:
                got.extend(entries)
            return 0
        h.block_status(SIZE - pos, pos, cb)
        assert got
        for i in range(0, len(got), 2):
            n = min(got[i], SIZE - pos)
            if got[i + 1] & 1:
                if out and out[-1][0] + out[-1][1] == pos:
                    out[-1] = (out[-1][0], out[-1][1] + n)
                else:
                    out.append((pos, n))
            pos += n
            if pos >= SIZE:
                break
    return out


def test_bitmap_context_after_pivot(blockd, tmp_path):
    requires("qemu-img")
    for name in ("src", "dst"):
        path = str(tmp_path / name)
        run("qemu-img", "create", "-q", "-f", "raw", path, str(SIZE))
        blockd.cmd("blockdev-add", {"driver": "raw", "node-name": name,
                                    "file": {"driver": "file",
                                             "filename": path}})
    blockd.cmd("block-dirty-bitmap-add",
               {"node": "src", "name": "b0", "granularity": 65536})
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    blockd.cmd("nbd-server-start",
               addr={"type": "unix", "data": {"path": sock}})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                    "node-name": "src", "name": "e0",
                                    "writable": True, "bitmaps": ["b0"]})
    h = connect(sock)
    h.pwrite(b"\x5a" * 65536, MIB)
    assert dirty(h) == [(MIB, 65536)]

    q = blockd.conn
    blockd.cmd("blockdev-mirror", job_id="m", device="src", target="dst",
               sync="full")
    while not any(j["id"] == "m" and j["status"] == "ready"
                  for j in blockd.cmd("query-jobs")):
        time.sleep(0.02)
    blockd.cmd("job-complete", id="m")
    assert wait_end_event(q, "m")["event"] == "BLOCK_JOB_COMPLETED"
    assert [e["node-name"] for e in blockd.cmd("query-block-exports")] \
        == ["dst"]

    # The source holds the bitmap the export still offers: in use.
    with pytest.raises(QmpError) as e:
        blockd.cmd("blockdev-del", node_name="src")
    assert e.value.cls == "GenericError"
    assert "export 'e0' bitmap 'b0'" in e.value.desc

    # Old and new connections read the source's bitmap, which the
    # writes that now go to the target no longer mark (as in QEMU).
    h.pwrite(b"\xa5" * 65536, 2 * MIB)
    h2 = connect(sock)
    assert h2.can_meta_context(CTX)
    for c in (h, h2):
        assert dirty(c) == [(MIB, 65536)]
        assert c.pread(65536, 2 * MIB) == b"\xa5" * 65536
    assert [b["name"] for n in blockd.cmd("query-named-block-nodes")
            if n["node-name"] == "src"
            for b in n.get("dirty-bitmaps", [])] == ["b0"]

    h.shutdown()
    h2.shutdown()
    blockd.cmd("block-export-del", id="e0")
    deadline = time.monotonic() + 30
    while blockd.cmd("query-block-exports"):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    blockd.cmd("blockdev-del", node_name="src")
    blockd.cmd("blockdev-del", node_name="dst")
    with open(str(tmp_path / "dst"), "rb") as f:
        data = f.read()
    assert data[MIB:MIB + 65536] == b"\x5a" * 65536
    assert data[2 * MIB:2 * MIB + 65536] == b"\xa5" * 65536
