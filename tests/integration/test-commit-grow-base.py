"""block-commit into a base smaller than top grows the base first, as
QEMU does (and as qemu-img commit does): both the commit of an
intermediate layer and the active commit (a mirror with a pivot),
compared with qemu-img commit on a copy of the same chain."""
import shutil
import time

from chain import info, run, wait_end
from conftest import requires

MIB = 1 << 20


def chain(d, mid=True):
    """base (4 MiB) <- [mid (8 MiB) <-] top (8 MiB), data past 4 MiB in
    the upper layers."""
    d.mkdir()
    base, top = str(d / "base.qcow2"), str(d / "top.qcow2")
    run("qemu-img", "create", "-q", "-f", "qcow2", base, str(4 * MIB))
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 4M", base)
    below = "base.qcow2"
    if mid:
        m = str(d / "mid.qcow2")
        run("qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2",
            "-F", "qcow2", m, str(8 * MIB))
        run("qemu-io", "-f", "qcow2", "-c", "write -P 0x22 5M 1M",
            "-c", "write -P 0x23 1M 64k", m)
        below = "mid.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", below, "-F",
        "qcow2", top, str(8 * MIB))
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x33 7M 512k",
        "-c", "write -P 0x34 2M 64k", top)
    return base, top


def test_commit_mid_grows_base(blockd, tmp_path):
    requires("qemu-img", "qemu-io")
    base, top = chain(tmp_path / "a")
    shutil.copytree(str(tmp_path / "a"), str(tmp_path / "ref"))
    run("qemu-img", "commit", "-q", "-f", "qcow2",
        str(tmp_path / "ref" / "mid.qcow2"))
    assert info(str(tmp_path / "ref" / "base.qcow2"))["virtual-size"] == \
        8 * MIB
    blockd.cmd("blockdev-add", {"driver": "qcow2", "node-name": "base",
                                "read-only": True,
                                "file": {"driver": "file",
                                         "filename": base}})
    blockd.cmd("blockdev-add", {"driver": "qcow2", "node-name": "mid",
                                "backing": "base",
                                "file": {"driver": "file",
                                         "filename": str(tmp_path / "a" /
                                                         "mid.qcow2")}})
    blockd.cmd("blockdev-add", {"driver": "qcow2", "node-name": "top",
                                "backing": "mid",
                                "file": {"driver": "file",
                                         "filename": top}})
    blockd.cmd("block-commit", {"job-id": "c", "device": "top",
                                "top-node": "mid", "base-node": "base"})
    end = wait_end(blockd.conn, "c")
    assert end["event"] == "BLOCK_JOB_COMPLETED" and \
        "error" not in end["data"], end
    for n in ("top", "mid", "base"):
        blockd.cmd("blockdev-del", node_name=n)
    assert info(base)["virtual-size"] == 8 * MIB
    run("qemu-img", "check", base)
    run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2",
        str(tmp_path / "ref" / "base.qcow2"), base)
    # top reads as before over the grown base
    run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2",
        str(tmp_path / "ref" / "top.qcow2"), top)


def test_active_commit_grows_base(blockd, tmp_path):
    requires("qemu-img", "qemu-io")
    base, top = chain(tmp_path / "a", mid=False)
    shutil.copytree(str(tmp_path / "a"), str(tmp_path / "ref"))
    run("qemu-img", "commit", "-q", "-f", "qcow2",
        str(tmp_path / "ref" / "top.qcow2"))
    blockd.cmd("blockdev-add", {"driver": "qcow2", "node-name": "top",
                                "file": {"driver": "file",
                                         "filename": top}})
    blockd.cmd("block-commit", {"job-id": "c", "device": "top"})
    deadline = time.monotonic() + 60
    while not any(j["status"] == "ready" for j in blockd.cmd("query-jobs")):
        assert time.monotonic() < deadline, blockd.cmd("query-jobs")
        time.sleep(0.02)
    blockd.cmd("job-complete", id="c")
    end = wait_end(blockd.conn, "c")
    assert end["event"] == "BLOCK_JOB_COMPLETED" and \
        "error" not in end["data"], end
    nodes = {n["node-name"]: n for n in
             blockd.cmd("query-named-block-nodes")}
    # the pivot: the base is the active node now, grown to top's size
    grown = [n for n in nodes.values()
             if n["drv"] == "qcow2" and n["file"] == base]
    assert len(grown) == 1 and grown[0]["image"]["virtual-size"] == 8 * MIB
    blockd.cmd("blockdev-del", node_name="top")
    assert info(base)["virtual-size"] == 8 * MIB
    run("qemu-img", "check", base)
    run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2",
        str(tmp_path / "ref" / "base.qcow2"), base)
