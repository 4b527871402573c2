"""blockdev-mirror's filter-node-name and replaces, as QEMU documents
them (qapi/block-core.json): filter-node-name names the mirror_top
filter the job puts above the source while it runs (query-named-block-
nodes lists it; the source's exports use it; it goes at the end), and
replaces names the node the pivot replaces instead of the source: the
source or a node below it through filters (copy-before-write here).
Data checked with libnbd and qemu-img compare; errors with QEMU's
messages."""
import os
import subprocess
import threading
import time

import nbd
import pytest

from chain import wait_end_event
from conftest import QmpError, requires

MIB = 1 << 20
SIZE = 8 * MIB


def run(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True,
                          text=True).stdout


def image(path, fmt="qcow2", backing=None):
    args = ["qemu-img", "create", "-q", "-f", fmt]
    if backing is not None:
        args += ["-b", backing, "-F", "qcow2"]
    run(*args, path, str(SIZE))
    return path


def add(blockd, name, path, fmt="qcow2"):
    blockd.cmd("blockdev-add", {"driver": fmt, "node-name": name,
                                "file": {"driver": "file",
                                         "filename": path}})


def serve(blockd, node, contexts=()):
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    blockd.cmd("nbd-server-start",
               addr={"type": "unix", "data": {"path": sock}})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                    "node-name": node, "name": "e0",
                                    "writable": True,
                                    "allocation-depth": True})
    h = nbd.NBD()
    for c in contexts:
        h.add_meta_context(c)
    h.connect_uri("nbd+unix:///e0?socket=" + sock)
    return h


def nodes(blockd):
    return {n["node-name"]: n for n in blockd.cmd("query-named-block-nodes")}


def children(node):
    return {c["child"]: c["node-name"] for c in node.get("children", [])}


def export_node(blockd):
    return [e["node-name"] for e in blockd.cmd("query-block-exports")]


def wait_status(blockd, job, status):
    deadline = time.monotonic() + 120
    while not any(j["id"] == job and j["status"] == status
                  for j in blockd.cmd("query-jobs")):
        assert time.monotonic() < deadline, blockd.cmd("query-jobs")
        time.sleep(0.02)


def depth_map(h):
    """qemu:allocation-depth over the export: [(length, depth)]."""
    out = []

    def cb(ctx, off, entries, err):
        if ctx == "qemu:allocation-depth":
            out.extend(zip(entries[0::2], entries[1::2]))
        return 0
    pos = 0
    while pos < SIZE:
        n = len(out)
        h.block_status(SIZE - pos, pos, cb)
        pos += sum(length for length, _ in out[n:])
    return out


def test_filter_node_name_pivot_under_writes(blockd, tmp_path):
    """The filter is listed and holds the export while the job runs,
    is transparent (data, allocation depth), and the pivot moves the
    export from it to the target; then it is gone."""
    requires("qemu-img", "qemu-io")
    base = image(str(tmp_path / "base"))
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 4M", base)
    src = image(str(tmp_path / "src"), backing=base)
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x22 1M 1M", src)
    dst = image(str(tmp_path / "dst"))
    add(blockd, "src", src)
    add(blockd, "dst", dst)
    h = serve(blockd, "src", ["qemu:allocation-depth"])
    before = depth_map(h)
    assert (MIB, 1) in before and (1 * MIB, 2) in before

    blockd.cmd("blockdev-mirror", job_id="m", device="src", target="dst",
               sync="full", filter_node_name="mtop", speed=2 * MIB)
    n = nodes(blockd)
    assert n["mtop"]["drv"] == "mirror_top"
    assert children(n["mtop"]) == {"file": "src"}
    assert export_node(blockd) == ["mtop"]
    assert depth_map(h) == before         # a filter is no layer
    with pytest.raises(QmpError) as e:
        blockd.cmd("blockdev-del", node_name="mtop")
    assert e.value.desc == "Node mtop is not owned by the monitor"
    with pytest.raises(QmpError) as e:
        blockd.cmd("blockdev-add", driver="null-co", node_name="mtop")
    assert e.value.desc == "Duplicate nodes with node-name='mtop'"

    # writes through the filter while the job copies: mirrored
    errors = []
    stop = threading.Event()

    def writer():
        i = 0
        try:
            while not stop.is_set():
                off = (i * 65536 * 7) % SIZE
                h.pwrite(bytes([0x40 + i % 64]) * 65536, off)
                i += 1
        except Exception as ex:      # reported below
            errors.append(ex)
    t = threading.Thread(target=writer)
    t.start()
    blockd.cmd("block-job-set-speed", device="m", speed=0)
    wait_status(blockd, "m", "ready")
    time.sleep(0.2)
    blockd.cmd("job-complete", id="m")
    end = wait_end_event(blockd.conn, "m")
    stop.set()
    t.join(60)
    assert not errors, errors
    assert end["event"] == "BLOCK_JOB_COMPLETED"
    assert "error" not in end["data"]
    assert export_node(blockd) == ["dst"]
    assert "mtop" not in nodes(blockd)
    data = b"".join(h.pread(MIB, off) for off in range(0, SIZE, MIB))
    h.shutdown()
    blockd.cmd("block-export-del", id="e0")
    blockd.cmd("blockdev-del", node_name="dst")
    blockd.cmd("blockdev-del", node_name="src")
    expect = str(tmp_path / "expect")
    with open(expect, "wb") as f:
        f.write(data)
    run("qemu-img", "compare", "-f", "qcow2", "-F", "raw", dst, expect)
    run("qemu-img", "check", dst)


def test_filter_node_name_cancel(blockd, tmp_path):
    """A cancelled job takes its filter away: the export is back on the
    source, the name free again."""
    requires("qemu-img")
    add(blockd, "src", image(str(tmp_path / "src")))
    add(blockd, "dst", image(str(tmp_path / "dst")))
    h = serve(blockd, "src")
    blockd.cmd("blockdev-mirror", job_id="m", device="src", target="dst",
               sync="full", filter_node_name="mtop")
    wait_status(blockd, "m", "ready")
    assert export_node(blockd) == ["mtop"]
    blockd.cmd("job-cancel", id="m")
    assert wait_end_event(blockd.conn, "m")["event"] == "BLOCK_JOB_CANCELLED"
    assert export_node(blockd) == ["src"]
    assert "mtop" not in nodes(blockd)
    h.pwrite(b"\x77" * 4096, 0)
    assert h.pread(4096, 0) == b"\x77" * 4096
    blockd.cmd("blockdev-add", driver="null-co", node_name="mtop")
    h.shutdown()


def test_replaces_below_a_filter(blockd, tmp_path):
    """device is a copy-before-write filter over src; replaces=src: the
    pivot puts dst under the filter (the export stays on the filter)."""
    requires("qemu-img", "qemu-io")
    src = image(str(tmp_path / "src"))
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 3M", src)
    add(blockd, "src", src)
    add(blockd, "dst", image(str(tmp_path / "dst")))
    add(blockd, "tmp", image(str(tmp_path / "tmp")))
    blockd.cmd("blockdev-add", {"driver": "copy-before-write",
                                "node-name": "cbw", "file": "src",
                                "target": "tmp"})
    h = serve(blockd, "cbw")
    blockd.cmd("blockdev-mirror", job_id="m", device="cbw", target="dst",
               sync="full", replaces="src")
    # held by the job meanwhile
    with pytest.raises(QmpError) as e:
        blockd.cmd("blockdev-backup", job_id="b", device="src",
                   target="tmp", sync="full")
    assert e.value.desc == \
        "Node 'src' is busy: block device is in use by block job: mirror"
    wait_status(blockd, "m", "ready")
    h.pwrite(b"\xa5" * 65536, 5 * MIB)
    blockd.cmd("job-complete", id="m")
    assert wait_end_event(blockd.conn, "m")["event"] == "BLOCK_JOB_COMPLETED"
    assert children(nodes(blockd)["cbw"])["file"] == "dst"
    assert export_node(blockd) == ["cbw"]
    assert h.pread(65536, 0) == b"\x5a" * 65536
    assert h.pread(65536, 5 * MIB) == b"\xa5" * 65536
    h.shutdown()
    blockd.cmd("block-export-del", id="e0")
    blockd.cmd("blockdev-del", node_name="cbw")
    blockd.cmd("blockdev-del", node_name="src")   # replaced: free now
    blockd.cmd("blockdev-del", node_name="dst")
    with open(str(tmp_path / "expect"), "wb") as f:
        f.write(b"\x5a" * 3 * MIB + b"\0" * 2 * MIB + b"\xa5" * 65536 +
                b"\0" * (SIZE - 5 * MIB - 65536))
    run("qemu-img", "compare", "-f", "qcow2", "-F", "raw",
        str(tmp_path / "dst"), str(tmp_path / "expect"))


def test_pivot_moves_cbw_target(blockd, tmp_path):
    """Mirroring a copy-before-write filter's target node: the pivot
    moves the filter's target child too (blk_replace_node), so the old
    data of later writes lands on the new target."""
    requires("qemu-img", "qemu-io")
    src = image(str(tmp_path / "src"))
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 1M", src)
    add(blockd, "src", src)
    add(blockd, "tmp", image(str(tmp_path / "tmp")))
    tmp2 = image(str(tmp_path / "tmp2"))
    add(blockd, "tmp2", tmp2)
    blockd.cmd("blockdev-add", {"driver": "copy-before-write",
                                "node-name": "cbw", "file": "src",
                                "target": "tmp"})
    assert children(nodes(blockd)["cbw"]) == {"file": "src",
                                              "target": "tmp"}
    h = serve(blockd, "cbw")
    blockd.cmd("blockdev-mirror", job_id="m", device="tmp", target="tmp2",
               sync="full")
    wait_status(blockd, "m", "ready")
    blockd.cmd("job-complete", id="m")
    assert wait_end_event(blockd.conn, "m")["event"] == "BLOCK_JOB_COMPLETED"
    assert children(nodes(blockd)["cbw"]) == {"file": "src",
                                              "target": "tmp2"}
    h.pwrite(b"\xa5" * 65536, 0)
    h.shutdown()
    blockd.cmd("block-export-del", id="e0")
    deadline = time.monotonic() + 30
    while blockd.cmd("query-block-exports"):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    for n in ("cbw", "src", "tmp", "tmp2"):
        blockd.cmd("blockdev-del", node_name=n)
    # the old data went to the new target
    run("qemu-io", "-f", "qcow2", "-c", "read -P 0x5a 0 64k", tmp2)
    run("qemu-io", "-f", "qcow2", "-c", "read -P 0xa5 0 64k", src)


def test_bad_input(blockd):
    for name in ("a", "b", "c", "d"):
        blockd.cmd("blockdev-add", driver="null-co", node_name=name,
                   size=MIB)
    blockd.cmd("blockdev-add", {"driver": "copy-before-write",
                                "node-name": "f", "file": "a",
                                "target": "c"})

    def err(**kw):
        with pytest.raises(QmpError) as e:
            blockd.cmd("blockdev-mirror", sync="full", **kw)
        assert e.value.cls == "GenericError"
        return e.value.desc

    assert err(device="a", target="b", replaces="nope") == \
        "Failed to find node with node-name='nope'"
    assert err(device="a", target="b", replaces="c") == (
        "Cannot replace 'c' by a node mirrored from 'a', because it "
        "cannot be guaranteed that doing so would not lead to an abrupt "
        "change of visible data")
    # below a filter is fine, above it is not
    assert err(device="a", target="b", replaces="f").startswith(
        "Cannot replace 'f' by a node mirrored from 'a'")
    assert err(device="a", target="b", filter_node_name="1x") == \
        "Invalid node-name: '1x'"
    assert err(device="a", target="b", filter_node_name="c") == \
        "Duplicate nodes with node-name='c'"
    # the node to replace is held by another job
    blockd.cmd("blockdev-mirror", job_id="busy", device="a", target="d",
               sync="full", speed=1, buf_size=65536)
    assert err(device="f", target="b", replaces="a") == \
        "Node 'a' is busy: block device is in use by block job: mirror"
    blockd.cmd("job-cancel", id="busy")
    assert wait_end_event(blockd.conn, "busy")["event"] == "BLOCK_JOB_CANCELLED"
    # nothing left behind by the refusals
    assert blockd.cmd("query-jobs") == []
    assert sorted(nodes(blockd)) == ["a", "b", "c", "d", "f"]
