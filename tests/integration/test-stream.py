"""block-stream against qemu-img rebase: a chain base <- mid <- top
streamed into top (down to base, or the whole chain) reads the same as
before and as `qemu-img rebase` of a copy makes it, and records the same
backing file; libnbd writes during a slow stream win over the job's
copies; bad input."""
import os
import shutil

import nbd
import pytest

from chain import MIB, SIZE, export_top, info, make_chain as _make_chain, \
    run, wait_end
from conftest import QmpError, requires


def make_chain(d):
    """base <- mid <- top in directory d, data in every layer."""
    return _make_chain(d, ("write -P 0x04 1536k 64k",
                           "write -P 0x05 6M 4k"))


def flat(path, out):
    run("qemu-img", "convert", "-f", "qcow2", "-O", "raw", path, out)
    return out


@pytest.mark.parametrize("to_base", [True, False])
def test_stream_like_rebase(blockd, tmp_path, to_base):
    requires("qemu-img", "qemu-io")
    base, mid, top = make_chain(str(tmp_path / "a"))
    shutil.copytree(str(tmp_path / "a"), str(tmp_path / "ref"))
    rbase = str(tmp_path / "ref" / "base.qcow2")
    rtop = str(tmp_path / "ref" / "top.qcow2")
    before = flat(top, str(tmp_path / "before.raw"))
    # the reference: qemu-img rebase (safe mode copies what changes)
    if to_base:
        run("qemu-img", "rebase", "-f", "qcow2", "-b", rbase, "-F", "qcow2",
            rtop)
    else:
        run("qemu-img", "rebase", "-f", "qcow2", "-b", "", rtop)

    blockd.cmd("blockdev-add", {"driver": "qcow2", "node-name": "top",
                                "file": {"driver": "file",
                                         "filename": top}})
    nodes = {n["node-name"]: n for n in
             blockd.cmd("query-named-block-nodes", flat=True)}
    args = {"job-id": "s", "device": "top"}
    if to_base:
        base_node = [n for n, v in nodes.items()
                     if v.get("file") == base and v["drv"] == "qcow2"][0]
        args["base-node"] = base_node
    blockd.cmd("block-stream", args)
    end = wait_end(blockd.conn, "s")
    assert end["event"] == "BLOCK_JOB_COMPLETED"
    assert "error" not in end["data"], end
    blockd.cmd("blockdev-del", node_name="top")

    run("qemu-img", "check", top)
    got, ref = info(top), info(rtop)
    if to_base:
        assert got["full-backing-filename"] == base
        assert ref["full-backing-filename"] == rbase
        # mid is gone from the chain: top <- base
        assert got.get("backing-filename-format") == "qcow2"
    else:
        assert "backing-filename" not in got
        assert "backing-filename" not in ref
    run("qemu-img", "compare", "-f", "raw", "-F", "qcow2", before, top)
    run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", rtop, top)
    # nothing above base is needed any more: mid may go
    os.unlink(mid)
    run("qemu-img", "compare", "-f", "raw", "-F", "qcow2", before, top)


def test_writes_during_stream(blockd, tmp_path):
    """A slow stream while libnbd writes: the writes are kept (a job
    copy never lands over them) and the rest equals the old chain."""
    requires("qemu-img", "qemu-io")
    base, mid, top = make_chain(str(tmp_path / "a"))
    before = flat(top, str(tmp_path / "before.raw"))
    sock = export_top(blockd, top)
    blockd.cmd("block-stream", {"job-id": "s", "device": "top",
                                "speed": MIB})
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///e0?socket=" + sock)
    with open(before, "r+b") as model:
        for i, off in enumerate(range(0, SIZE, 300 * 1024)):
            data = bytes([0x80 + (i & 0x3f)]) * 4096
            h.pwrite(data, off)
            model.seek(off)
            model.write(data)
    h.flush()
    assert blockd.cmd("query-jobs")[0]["status"] == "running"
    blockd.cmd("block-job-set-speed", device="s", speed=0)
    end = wait_end(blockd.conn, "s")
    assert "error" not in end["data"], end
    h.shutdown()
    blockd.cmd("block-export-del", id="e0")
    blockd.cmd("blockdev-del", node_name="top")
    assert "backing-filename" not in info(top)
    run("qemu-img", "check", top)
    run("qemu-img", "compare", "-f", "raw", "-F", "qcow2", before, top)


def test_stream_bad_input(blockd, tmp_path):
    requires("qemu-img", "qemu-io")
    base, mid, top = make_chain(str(tmp_path / "a"))
    blockd.cmd("blockdev-add", {"driver": "qcow2", "node-name": "top",
                                "file": {"driver": "file",
                                         "filename": top}})
    blockd.cmd("blockdev-add", driver="null-co", node_name="n0")

    def err(args):
        with pytest.raises(QmpError) as e:
            blockd.cmd("block-stream", args)
        return e.value.desc

    assert "nope" in err({"device": "nope"})
    assert err({"device": "top", "base-node": "n0"}) == \
        "Node 'n0' is not a backing image of 'top'"
    assert err({"device": "top", "base": "/nowhere"}) == \
        "Cannot find '/nowhere'"
    assert err({"device": "top", "base": "x", "base-node": "n0"}) == \
        "'base' and 'base-node' cannot be specified at the same time"
    assert err({"device": "n0"}) == \
        "Driver 'null-co' cannot change the backing file of 'n0'"
    blockd.cmd("block-stream", {"job-id": "s", "device": "top",
                                "speed": 1})
    assert err({"job-id": "t", "device": "top"}) == \
        "Node 'top' is busy: block device is in use by block job: stream"
    blockd.cmd("job-cancel", id="s")
    end = wait_end(blockd.conn, "s")
    assert end["event"] == "BLOCK_JOB_CANCELLED"
    # a cancelled stream keeps the chain
    blockd.cmd("blockdev-del", node_name="top")
    assert info(top)["backing-filename"] == "mid.qcow2"


def test_stream_refuses_written_intermediate(blockd, tmp_path):
    """A writable export on a node the stream copies from (QEMU's
    qsd-jobs case): refused with QEMU's permission conflict, after the
    job's created and null events; read-only it is fine."""
    requires("qemu-img", "qemu-io")
    base, mid, top = make_chain(str(tmp_path / "a"))
    blockd.cmd("blockdev-add", {"driver": "qcow2", "node-name": "base",
                                "file": {"driver": "file",
                                         "filename": base}})
    blockd.cmd("blockdev-add", {"driver": "qcow2", "node-name": "top",
                                "backing": "base",
                                "file": {"driver": "file",
                                         "filename": top}})
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    blockd.cmd("nbd-server-start",
               addr={"type": "unix", "data": {"path": sock}})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                    "node-name": "base", "name": "e0",
                                    "writable": True})
    with pytest.raises(QmpError) as e:
        blockd.cmd("block-stream", {"job-id": "job0", "device": "top"})
    assert e.value.cls == "GenericError"
    assert e.value.desc == (
        "Permission conflict on node 'base': permissions 'write' are both "
        "required by an unnamed block device (uses node 'base' as 'root' "
        "child) and unshared by stream job 'job0' (uses node 'base' as "
        "'intermediate node' child).")
    for status in ("created", "null"):
        ev = blockd.conn.get_event("JOB_STATUS_CHANGE")
        assert ev["data"] == {"id": "job0", "status": status}
    assert blockd.cmd("query-jobs") == []
    blockd.cmd("block-export-del", id="e0")
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e1",
                                    "node-name": "base", "name": "e1"})
    blockd.cmd("block-stream", {"job-id": "job1", "device": "top"})
    end = wait_end(blockd.conn, "job1")
    assert end["event"] == "BLOCK_JOB_COMPLETED"
    assert "error" not in end["data"], end
