"""qemu:allocation-depth and base:allocation over a qcow2 backing chain,
checked against qemu-img's own map of the same images."""
import json
import os
import subprocess

import nbd
import pytest

from conftest import QmpError, requires

MIB = 1 << 20
K = 1024


def run(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture
def chain(blockd, tmp_path):
    """base <- mid <- top, each with data in its own places, exported
    with allocation-depth."""
    requires("qemu-img", "qemu-io", "nbdinfo")
    base = str(tmp_path / "base.qcow2")
    mid = str(tmp_path / "mid.qcow2")
    top = str(tmp_path / "top.qcow2")
    run("qemu-img", "create", "-q", "-f", "qcow2", base, "8M")
    run("qemu-io", "-f", "qcow2", "-c", "write -P 1 0 1M",
        "-c", "write -P 2 4M 512k", base)
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F",
        "qcow2", mid)
    run("qemu-io", "-f", "qcow2", "-c", "write -P 3 512k 1M",
        "-c", "write -P 4 6M 64k", mid)
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", mid, "-F",
        "qcow2", top)
    run("qemu-io", "-f", "qcow2", "-c", "write -P 5 768k 128k",
        "-c", "write -z 7M 64k", "-c", "write -P 6 4M 64k", top)
    # qemu-img's view before blockd locks the images.
    qmap = json.loads(run("qemu-img", "map", "--output=json", top))
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    blockd.cmd("blockdev-add", {"driver": "qcow2", "node-name": "top",
                                "file": {"driver": "file",
                                         "filename": top}})
    blockd.cmd("nbd-server-start",
               addr={"type": "unix", "data": {"path": sock}})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                    "node-name": "top", "name": "disk",
                                    "allocation-depth": True})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e1",
                                    "node-name": "top", "name": "plain"})
    return dict(sock=sock, top=top, qmap=qmap,
                uri="nbd+unix:///disk?socket=" + sock)


def expected_depths(qmap):
    """NBD depth per byte range from qemu-img map: 0 when no layer has
    it, else qemu's depth + 1."""
    out = []
    for e in qmap:
        d = e["depth"] + 1 if e["present"] else 0
        if out and out[-1][2] == d:
            out[-1] = (out[-1][0], out[-1][1] + e["length"], d)
        else:
            out.append((e["start"], e["length"], d))
    return out


def test_depth_matches_qemu_img(chain):
    out = run("nbdinfo", "--map=qemu:allocation-depth", "--json",
              chain["uri"])
    got = [(e["offset"], e["length"], e["type"]) for e in json.loads(out)]
    want = expected_depths(chain["qmap"])
    assert got == want
    # The chain really has three levels here.
    assert {d for _, _, d in want} == {0, 1, 2, 3}


def test_depth_tristate_via_qemu(chain):
    """QEMU's x-dirty-bitmap trick reads the context values as
    base:allocation flags (bit 0 HOLE, bit 1 ZERO), which qemu-img map
    shows as a tri-state."""
    opts = ("driver=nbd,server.type=unix,server.path=%s,export=disk,"
            "x-dirty-bitmap=qemu:allocation-depth" % chain["sock"])
    qm = json.loads(run("qemu-img", "map", "--output=json", "--image-opts",
                        opts))
    got = []
    for e in qm:
        got.append((e["start"], e["length"],
                    (e["present"], e["zero"], e["data"])))
    want = []
    for start, length, d in expected_depths(chain["qmap"]):
        if d & 2:                     # NBD_STATE_ZERO bit
            state = (True, True, True)
        elif d & 1:                   # NBD_STATE_HOLE bit only
            state = (False, False, False)
        else:
            state = (True, False, True)
        if want and want[-1][2] == state:
            want[-1] = (want[-1][0], want[-1][1] + length, state)
        else:
            want.append((start, length, state))
    assert got == want


def test_base_allocation_of_chain(chain):
    out = run("nbdinfo", "--map", "--json", chain["uri"])
    got = [(e["offset"], e["length"], e["type"]) for e in json.loads(out)]
    want = []
    for e in chain["qmap"]:
        t = (0 if e["data"] else 1) | (2 if e["zero"] else 0)
        if want and want[-1][2] == t:
            want[-1] = (want[-1][0], want[-1][1] + e["length"], t)
        else:
            want.append((e["start"], e["length"], t))
    assert got == want


def test_data_through_chain(chain):
    h = nbd.NBD()
    h.connect_uri(chain["uri"])
    assert h.pread(4, 0) == b"\1" * 4
    assert h.pread(4, 512 * K) == b"\3" * 4
    assert h.pread(4, 800 * K) == b"\5" * 4
    assert h.pread(4, 4 * MIB) == b"\6" * 4
    assert h.pread(4, 4 * MIB + 64 * K) == b"\2" * 4
    assert h.pread(4, 7 * MIB) == bytes(4)
    h.shutdown()


def test_contexts_offered(chain):
    h = nbd.NBD()
    h.set_opt_mode(True)
    h.connect_uri(chain["uri"])
    seen = []
    h.opt_list_meta_context(lambda name: seen.append(name) or 0)
    assert sorted(seen) == ["base:allocation", "qemu:allocation-depth"]
    h.opt_abort()
    # The export without allocation-depth does not offer it.
    h = nbd.NBD()
    h.set_opt_mode(True)
    h.connect_uri("nbd+unix:///plain?socket=" + chain["sock"])
    seen = []
    h.opt_list_meta_context(lambda name: seen.append(name) or 0)
    assert seen == ["base:allocation"]
    h.opt_abort()
    # "qemu:" lists the qemu namespace of the export.
    h = nbd.NBD()
    h.set_opt_mode(True)
    h.connect_uri(chain["uri"])
    h.add_meta_context("qemu:")
    seen = []
    h.opt_list_meta_context(lambda name: seen.append(name) or 0)
    assert seen == ["qemu:allocation-depth"]
    h.opt_abort()


def test_depth_on_raw_file_export(blockd, tmp_path):
    img = str(tmp_path / "a.raw")
    with open(img, "wb") as f:
        f.truncate(2 * MIB)
        f.seek(MIB)
        f.write(b"x" * 4096)
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    blockd.cmd("blockdev-add", driver="file", node_name="f0", filename=img)
    blockd.cmd("nbd-server-start",
               addr={"type": "unix", "data": {"path": sock}})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                    "node-name": "f0", "name": "d",
                                    "allocation-depth": True})
    h = nbd.NBD()
    h.add_meta_context("base:allocation")
    h.add_meta_context("qemu:allocation-depth")
    h.connect_uri("nbd+unix:///d?socket=" + sock)
    got = {}

    def cb(ctx, offset, entries, err):
        got[ctx] = entries
        return 0

    h.block_status(2 * MIB, 0, cb)
    assert set(got) == {"base:allocation", "qemu:allocation-depth"}
    assert sum(got["base:allocation"][0::2]) == 2 * MIB
    assert sum(got["qemu:allocation-depth"][0::2]) == 2 * MIB
    h.shutdown()
    with pytest.raises(QmpError):
        blockd.cmd("block-export-add", {"type": "nbd", "id": "e1",
                                        "node-name": "f0",
                                        "bitmaps": ["nope"]})
