"""block-commit against qemu-img commit: committing mid into base in a
chain base <- mid <- top gives the base qemu-img commit gives, top reads
as before with base as its backing file; bad input."""
import os
import shutil
import subprocess

import pytest

from chain import info, make_chain, run, wait_end
from conftest import QmpError, requires


def add_chain(blockd, base, mid, top):
    blockd.cmd("blockdev-add", {"driver": "qcow2", "node-name": "base",
                                "read-only": False,
                                "file": {"driver": "file",
                                         "filename": base}})
    blockd.cmd("blockdev-add", {"driver": "qcow2", "node-name": "mid",
                                "backing": "base",
                                "file": {"driver": "file",
                                         "filename": mid}})
    blockd.cmd("blockdev-add", {"driver": "qcow2", "node-name": "top",
                                "backing": "mid",
                                "file": {"driver": "file",
                                         "filename": top}})


def test_commit_like_qemu_img(blockd, tmp_path):
    requires("qemu-img", "qemu-io")
    base, mid, top = make_chain(str(tmp_path / "a"))
    shutil.copytree(str(tmp_path / "a"), str(tmp_path / "ref"))
    before = str(tmp_path / "before.raw")
    run("qemu-img", "convert", "-f", "qcow2", "-O", "raw", top, before)
    run("qemu-img", "commit", "-q", "-f", "qcow2",
        str(tmp_path / "ref" / "mid.qcow2"))

    add_chain(blockd, base, mid, top)
    blockd.cmd("block-commit", {"job-id": "c", "device": "top",
                                "top-node": "mid", "base-node": "base"})
    end = wait_end(blockd.conn, "c")
    assert end["event"] == "BLOCK_JOB_COMPLETED"
    assert end["data"]["type"] == "commit"
    assert "error" not in end["data"], end
    # mid is out of the chain: it can go now
    blockd.cmd("blockdev-del", node_name="mid")
    blockd.cmd("blockdev-del", node_name="top")
    blockd.cmd("blockdev-del", node_name="base")
    run("qemu-img", "check", base)
    run("qemu-img", "check", top)
    run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2",
        str(tmp_path / "ref" / "base.qcow2"), base)
    assert info(top)["full-backing-filename"] == base
    os.unlink(mid)
    run("qemu-img", "compare", "-f", "raw", "-F", "qcow2", before, top)


def test_commit_bad_input(blockd, tmp_path):
    requires("qemu-img", "qemu-io")
    base, mid, top = make_chain(str(tmp_path / "a"))
    add_chain(blockd, base, mid, top)

    def err(args):
        with pytest.raises(QmpError) as e:
            blockd.cmd("block-commit", args)
        return e.value.desc

    assert "nope" in err({"device": "nope"})
    assert err({"device": "top", "top-node": "nope"}) == \
        "Top image file nope not found"
    assert err({"device": "top", "top-node": "mid", "base-node": "mid"}) \
        == "cannot commit an image into itself"
    assert err({"device": "top", "top-node": "base"}) == \
        "Cannot commit 'base': it has no backing file"
    assert err({"device": "top", "top-node": "mid", "base-node": "base",
                "top": "x"}) == \
        "'top' and 'top-node' cannot be specified at the same time"
    blockd.cmd("block-commit", {"job-id": "c", "device": "top",
                                "top-node": "mid", "speed": 1})
    assert err({"job-id": "d", "device": "top", "top-node": "mid"}) == \
        "Node 'base' is busy: block device is in use by block job: commit"
    blockd.cmd("job-cancel", id="c")
    assert wait_end(blockd.conn, "c")["event"] == "BLOCK_JOB_CANCELLED"
    blockd.cmd("blockdev-del", node_name="top")
    # a cancelled commit keeps the chain
    assert info(top)["backing-filename"] == "mid.qcow2"


def ro_of(blockd):
    """node file name -> read-only, for the qcow2 nodes."""
    return {n["file"]: n["ro"]
            for n in blockd.cmd("query-named-block-nodes", flat=True)
            if n["drv"] == "qcow2"}


def test_commit_into_read_only_base(blockd, tmp_path):
    """The chain opened from the image headers (base and mid read-only,
    as blockdev-add opens backing files): the commit reopens base
    read-write and read-only again after, and gives qemu-img commit's
    base."""
    requires("qemu-img", "qemu-io")
    base, mid, top = make_chain(str(tmp_path / "a"))
    shutil.copytree(str(tmp_path / "a"), str(tmp_path / "ref"))
    run("qemu-img", "commit", "-q", "-f", "qcow2",
        str(tmp_path / "ref" / "mid.qcow2"))
    blockd.cmd("blockdev-add", {"driver": "qcow2", "node-name": "top",
                                "file": {"driver": "file",
                                         "filename": top}})
    assert ro_of(blockd) == {top: False, mid: True, base: True}
    blockd.cmd("block-commit", {"job-id": "c", "device": "top",
                                "top": mid})
    end = wait_end(blockd.conn, "c")
    assert end["event"] == "BLOCK_JOB_COMPLETED"
    assert "error" not in end["data"], end
    assert ro_of(blockd) == {top: False, base: True}
    blockd.cmd("blockdev-del", node_name="top")
    run("qemu-img", "check", base)
    run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2",
        str(tmp_path / "ref" / "base.qcow2"), base)
    assert info(top)["full-backing-filename"] == base


def test_commit_base_cannot_reopen(blockd, tmp_path):
    """An immutable base file (chattr +i: even root cannot open it for
    writing) fails the commit with a clear error and nothing changes;
    writable again, the same commit succeeds."""
    requires("qemu-img", "qemu-io", "chattr")
    base, mid, top = make_chain(str(tmp_path / "a"))
    r = subprocess.run(["chattr", "+i", base], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip("chattr +i does not work here: " + r.stderr.strip())
    try:
        blockd.cmd("blockdev-add", {"driver": "qcow2", "node-name": "top",
                                    "file": {"driver": "file",
                                             "filename": top}})
        with pytest.raises(QmpError) as e:
            blockd.cmd("block-commit", {"job-id": "c", "device": "top",
                                        "top": mid})
        assert e.value.cls == "GenericError"
        assert e.value.desc == ("Could not reopen '%s' read-write: "
                                "Operation not permitted" % base)
        assert blockd.cmd("query-jobs") == []
        assert ro_of(blockd) == {top: False, mid: True, base: True}
    finally:
        run("chattr", "-i", base)
    blockd.cmd("block-commit", {"job-id": "c", "device": "top",
                                "top": mid})
    end = wait_end(blockd.conn, "c")
    assert "error" not in end["data"], end
    assert ro_of(blockd) == {top: False, base: True}
