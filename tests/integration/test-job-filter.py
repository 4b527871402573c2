"""filter-node-name of block-stream, block-commit and blockdev-backup,
and block-stream's bottom and backing-file and block-commit's
backing-file, as QEMU documents them (qapi/block-core.json).

The filter is a pass-through node of QEMU's driver (copy-on-read,
commit_top, mirror_top for an active commit, copy-before-write) above
the node the job works on: query-named-block-nodes lists it while the
job runs, the node's parents and exports use it, and at the end it is
gone and its name free.  Data through the export is checked with libnbd
while the job runs and after; images with qemu-img compare and check."""
import json
import os

import nbd
import pytest

from chain import MIB, SIZE, export_top, info, make_chain, qcow2, run, \
    wait_end_event
from conftest import QmpError, requires, wait_no_clients

SLOW = 64 * 1024        # bytes per second: the job is still running


def nodes(blockd):
    return {n["node-name"]: n for n in
            blockd.cmd("query-named-block-nodes", flat=True)}


def children(node):
    return {c["child"]: c["node-name"] for c in node.get("children", [])}


def chain_nodes(blockd, base, mid):
    """The auto-named nodes of mid and base below top."""
    n = nodes(blockd)
    fmt = {v["file"]: k for k, v in n.items() if v["drv"] == "qcow2"}
    return fmt[mid], fmt[base]


def export_node(blockd):
    return [e["node-name"] for e in blockd.cmd("query-block-exports")]


def whole(h):
    return b"".join(h.pread(MIB, off) for off in range(0, SIZE, MIB))


def flat(path, out):
    run("qemu-img", "convert", "-f", "qcow2", "-O", "raw", path, out)
    with open(out, "rb") as f:
        return f.read()


@pytest.fixture
def setup(blockd, tmp_path):
    """base <- mid <- top opened as node "top", exported as e0 (libnbd
    handle h), and its content as raw bytes."""
    requires("qemu-img", "qemu-io")
    base, mid, top = make_chain(str(tmp_path / "a"))
    before = flat(top, str(tmp_path / "before.raw"))
    sock = export_top(blockd, top)
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///e0?socket=" + sock)
    yield blockd, h, (base, mid, top), before
    if not h.aio_is_closed() and not h.aio_is_dead():
        h.shutdown()


def check_recorded(blockd, h, top, base):
    """The client leaves and top is closed; its header records
    "base.qcow2", which qemu-img resolves to base."""
    h.shutdown()
    wait_no_clients(blockd)
    blockd.cmd("block-export-del", id="e0")
    blockd.cmd("blockdev-del", node_name="top")
    got = info(top)
    assert got["backing-filename"] == "base.qcow2"
    assert got["full-backing-filename"] == base
    run("qemu-img", "check", top)


# kind: (command and arguments, filter driver, node under the filter,
# node exported while the job runs, node exported after it)
KINDS = {
    "stream": ("block-stream", {"base-node": "@base"}, "copy-on-read",
               "top", "flt", "top"),
    "commit": ("block-commit", {"top-node": "@mid", "base-node": "@base"},
               "commit_top", "@mid", "top", "top"),
    "commit-active": ("block-commit", {"base-node": "@base"},
                      "mirror_top", "top", "flt", "@base"),
    "backup": ("blockdev-backup", {"target": "tgt", "sync": "full"},
               "copy-before-write", "top", "flt", "top"),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_filter_node_name(setup, tmp_path, kind):
    blockd, h, (base, mid, top), before = setup
    cmd, extra, drv, below, during, after = KINDS[kind]
    mid_node, base_node = chain_nodes(blockd, base, mid)
    names = {"@mid": mid_node, "@base": base_node}
    if kind == "backup":
        tgt = qcow2(str(tmp_path / "tgt.qcow2"), SIZE)
        blockd.cmd("blockdev-add", {"driver": "qcow2", "node-name": "tgt",
                                    "file": {"driver": "file",
                                             "filename": tgt}})
    args = {"job-id": "j", "device": "top", "speed": SLOW,
            "filter-node-name": "flt"}
    args.update({k: names.get(v, v) for k, v in extra.items()})
    blockd.cmd(cmd, args)

    n = nodes(blockd)
    assert n["flt"]["drv"] == drv
    assert children(n["flt"]) == {"file": names.get(below, below)}
    if kind == "commit":
        # the filter sits in top's backing chain, above mid
        assert children(n["top"])["backing"] == "flt"
    assert export_node(blockd) == [names.get(during, during)]
    assert whole(h) == before                  # transparent
    with pytest.raises(QmpError) as e:
        blockd.cmd("blockdev-add", driver="null-co", node_name="flt")
    assert e.value.desc == "Duplicate nodes with node-name='flt'"

    blockd.cmd("block-job-set-speed", device="j", speed=0)
    if kind == "commit-active":
        blockd.conn.get_event("BLOCK_JOB_READY", timeout=120)
        blockd.cmd("job-complete", id="j")
    end = wait_end_event(blockd.conn, "j")
    assert end["event"] == "BLOCK_JOB_COMPLETED"
    assert "error" not in end["data"], end
    assert "flt" not in nodes(blockd)
    assert export_node(blockd) == [names.get(after, after)]
    assert whole(h) == before
    blockd.cmd("blockdev-add", driver="null-co", node_name="flt")
    if kind == "backup":
        blockd.cmd("blockdev-del", node_name="tgt")
        run("qemu-img", "check", tgt)
        assert flat(tgt, str(tmp_path / "tgt.raw")) == before
    run("qemu-img", "check", "-U", top)


@pytest.mark.parametrize("kind", ["stream", "commit", "commit-active",
                                  "backup"])
def test_filter_node_name_refused(setup, tmp_path, kind):
    """A taken or malformed filter name fails the command: no job, no
    filter, the export where it was."""
    blockd, h, (base, mid, top), before = setup
    cmd, extra, *_ = KINDS[kind]
    mid_node, base_node = chain_nodes(blockd, base, mid)
    names = {"@mid": mid_node, "@base": base_node}
    blockd.cmd("blockdev-add", {"driver": "qcow2", "node-name": "tgt",
                                "file": {"driver": "file",
                                         "filename": qcow2(str(
                                             tmp_path / "t.qcow2"), SIZE)}})
    count = len(nodes(blockd))
    for bad, msg in (("top", "Duplicate nodes with node-name='top'"),
                     ("1x", None)):
        args = {"job-id": "j", "device": "top", "filter-node-name": bad}
        args.update({k: names.get(v, v) for k, v in extra.items()})
        with pytest.raises(QmpError) as e:
            blockd.cmd(cmd, args)
        if msg is not None:
            assert e.value.desc == msg
        else:
            assert "1x" in e.value.desc
        assert blockd.cmd("query-jobs") == []
        assert len(nodes(blockd)) == count
        assert export_node(blockd) == ["top"]
    # the base went back to read-only after the refused commits
    assert nodes(blockd)[base_node]["ro"] is True
    assert whole(h) == before


def test_stream_bottom(setup):
    """bottom=mid streams mid into top: top's backing is base, as with
    base-node=base."""
    blockd, h, (base, mid, top), before = setup
    mid_node, base_node = chain_nodes(blockd, base, mid)
    blockd.cmd("block-stream", job_id="s", device="top", bottom=mid_node)
    end = wait_end_event(blockd.conn, "s")
    assert "error" not in end["data"], end
    assert children(nodes(blockd)["top"])["backing"] == base_node
    assert whole(h) == before
    got = json.loads(run("qemu-img", "info", "-U", "--output=json", top))
    assert got["full-backing-filename"] == base
    os.unlink(mid)                        # nothing reads it any more
    assert whole(h) == before


def test_stream_bottom_bad_input(setup):
    blockd, h, (base, mid, top), before = setup
    mid_node, base_node = chain_nodes(blockd, base, mid)
    blockd.cmd("blockdev-add", driver="null-co", node_name="other")
    blockd.cmd("blockdev-add", {"driver": "blkdebug", "node-name": "dbg",
                                "image": "other"})
    cases = [
        ({"bottom": mid_node, "base-node": base_node},
         "'base-node' and 'bottom' cannot be specified at the same time"),
        ({"bottom": mid_node, "base": base},
         "'base' and 'bottom' cannot be specified at the same time"),
        ({"bottom": "other"},
         "Node 'other' is not in a chain starting from 'top'"),
        ({"bottom": "dbg"},
         "Node 'dbg' is a filter, use a non-filter node as 'bottom'"),
        ({"bottom": "nope"}, None),
        ({"backing-file": "x.qcow2"},
         "backing file specified, but streaming the entire chain"),
    ]
    for extra, msg in cases:
        with pytest.raises(QmpError) as e:
            blockd.cmd("block-stream", dict(extra, device="top"))
        if msg is not None:
            assert e.value.desc == msg
        else:
            assert "nope" in e.value.desc
        assert blockd.cmd("query-jobs") == []
    assert whole(h) == before


def test_stream_backing_file(setup):
    """backing-file is what the header records (a relative name here,
    which qemu-img resolves to the same base)."""
    blockd, h, (base, mid, top), before = setup
    mid_node, base_node = chain_nodes(blockd, base, mid)
    blockd.cmd("block-stream", job_id="s", device="top",
               base_node=base_node, backing_file="base.qcow2")
    end = wait_end_event(blockd.conn, "s")
    assert "error" not in end["data"], end
    assert whole(h) == before
    check_recorded(blockd, h, top, base)


def test_commit_backing_file(setup, tmp_path):
    blockd, h, (base, mid, top), before = setup
    mid_node, base_node = chain_nodes(blockd, base, mid)
    with pytest.raises(QmpError) as e:
        blockd.cmd("block-commit", device="top", base_node=base_node,
                   backing_file="base.qcow2")
    assert e.value.desc == \
        "'backing-file' specified, but 'top' is the active layer"
    blockd.cmd("block-commit", job_id="c", device="top", top_node=mid_node,
               base_node=base_node, backing_file="base.qcow2")
    end = wait_end_event(blockd.conn, "c")
    assert "error" not in end["data"], end
    assert children(nodes(blockd)["top"])["backing"] == base_node
    assert whole(h) == before
    check_recorded(blockd, h, top, base)
    assert flat(top, str(tmp_path / "after.raw")) == before
