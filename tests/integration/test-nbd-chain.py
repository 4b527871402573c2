"""A qcow2 overlay on local disk whose backing is an `nbd` node (nbdkit's
file plugin over a raw base), exported by blockd.  Reads must match
qemu-img reading the same chain; writes must land in the overlay only;
qemu:allocation-depth and base:allocation through the chain must match
qemu-nbd serving the SAME chain (differential testing against QEMU)."""
import hashlib
import json
import subprocess

import nbd
import pytest

from conftest import requires
from upstream import Upstream, export, nbd_node, requires_nbd_driver

MIB = 1 << 20
K = 1024
SIZE = 8 * MIB


def run(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True,
                          text=True).stdout


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def merged(extents):
    """nbdinfo --map --json extents, adjacent equal types merged, as
    (offset, length, type): granularity is the server's choice, the
    meaning per byte is not."""
    out = []
    for e in extents:
        if out and out[-1][2] == e["type"] and \
                out[-1][0] + out[-1][1] == e["offset"]:
            out[-1] = (out[-1][0], out[-1][1] + e["length"], e["type"])
        else:
            out.append((e["offset"], e["length"], e["type"]))
    return out


def nbd_map(uri, context="base:allocation"):
    return merged(json.loads(run("nbdinfo", "--json", "--map=" + context,
                                 uri)))


@pytest.fixture
def chain(blockd, tmp_path):
    """base.raw (sparse, data in places) served by nbdkit; overlay.qcow2
    over it with data, zeros and holes of its own; blockd exports the
    overlay with the nbd node as its backing."""
    requires("nbdkit", "qemu-img", "qemu-io", "qemu-nbd", "nbdinfo")
    requires_nbd_driver(blockd)
    base = str(tmp_path / "base.raw")
    top = str(tmp_path / "overlay.qcow2")
    sock = str(tmp_path / "up.sock")
    with open(base, "wb") as f:
        f.truncate(SIZE)
    run("qemu-io", "-f", "raw", "-c", "write -P 0x11 0 1M",
        "-c", "write -P 0x22 3M 512k", "-c", "write -P 0x33 6M 64k",
        "-c", "write -P 0x44 7936k 256k", base)
    up = Upstream(["nbdkit", "file", base], sock,
                  log=str(tmp_path / "nbdkit.log"))
    backing = "nbd+unix:///?socket=" + sock
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", backing, "-F",
        "raw", top)
    # the overlay's own data: over base data, over base holes, zeros
    # over base data, and a range that straddles both
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x55 512k 128k",
        "-c", "write -P 0x66 2M 64k", "-c", "write -z 3M 128k",
        "-c", "write -P 0x77 6080k 192k", top)
    nbd_node(blockd, "nb0", sock)
    blockd.cmd("blockdev-add", {"driver": "qcow2", "node-name": "top",
                                "file": {"driver": "file",
                                         "filename": top},
                                "backing": "nb0"})
    uri = export(blockd, "top", "disk", allocation_depth=True)
    yield dict(base=base, top=top, sock=sock, backing=backing, uri=uri,
               base_sum=sha256(base), tmp=tmp_path)
    up.stop()


def qemu_nbd_chain(c, name):
    """qemu-nbd serving the same chain read-only, with allocation depth:
    a started Upstream and its URI."""
    sock = str(c["tmp"] / (name + ".sock"))
    opts = "driver=qcow2,read-only=on,force-share=on,file.driver=file," \
        "file.filename=" + c["top"]
    q = Upstream(["qemu-nbd", "-r", "-A", "--image-opts", "-x", "q", "-t",
                  opts], sock,
                 log=str(c["tmp"] / (name + ".log")))
    return q, "nbd+unix:///q?socket=" + sock


def test_reads_match_qemu_img(chain):
    # qemu-img opens overlay + its nbd backing (nbdkit) by itself
    run("qemu-img", "compare", "-U", "-f", "raw", "-F", "qcow2",
        chain["uri"], chain["top"])
    h = nbd.NBD()
    h.connect_uri(chain["uri"])
    assert h.get_size() == SIZE
    # byte-exact spot checks across every kind of boundary
    assert h.pread(8, 512 * K - 4) == b"\x11" * 4 + b"\x55" * 4
    assert h.pread(8, 640 * K - 4) == b"\x55" * 4 + b"\x11" * 4
    assert h.pread(8, MIB - 4) == b"\x11" * 4 + b"\0" * 4
    assert h.pread(8, 3 * MIB + 128 * K - 4) == b"\0" * 4 + b"\x22" * 4
    assert h.pread(8, 6 * MIB - 4) == b"\x77" * 4 + b"\x77" * 4
    assert h.pread(8, 6272 * K - 4) == b"\x77" * 4 + b"\0" * 4
    assert h.pread(4, SIZE - 4) == b"\x44" * 4
    h.shutdown()


def test_allocation_depth_and_base_allocation_match_qemu_nbd(chain):
    q, quri = qemu_nbd_chain(chain, "qemu")
    try:
        for ctx in ("qemu:allocation-depth", "base:allocation"):
            want = nbd_map(quri, ctx)
            got = nbd_map(chain["uri"], ctx)
            assert got == want, ctx
        # both levels show; QEMU counts an nbd node (a protocol node with
        # no backing) as allocated everywhere, so depth 0 never appears
        depths = {t for _, _, t in nbd_map(quri, "qemu:allocation-depth")}
        assert depths == {1, 2}
        assert {t for _, _, t in nbd_map(quri)} == {0, 3}
    finally:
        q.stop()


def test_writes_land_in_overlay_only(chain):
    h = nbd.NBD()
    h.connect_uri(chain["uri"])
    h.pwrite(b"\x88" * (64 * K), 64 * K)            # over base data
    h.pwrite(b"\x99" * (64 * K), 4 * MIB)           # over a base hole
    h.zero(64 * K, 6 * MIB)                         # base data -> zeros
    h.pwrite(b"\xaa" * 512, 8 * MIB - 1024)         # partial cluster
    h.flush()
    assert h.pread(4, 64 * K) == b"\x88" * 4
    assert h.pread(4, 6 * MIB + 32 * K) == b"\0" * 4
    assert h.pread(1024, 8 * MIB - 1024) == b"\xaa" * 512 + b"\x44" * 512
    h.shutdown()
    assert sha256(chain["base"]) == chain["base_sum"]
    # the overlay has the new clusters; qemu-img reads the same bytes
    qmap = json.loads(run("qemu-img", "map", "-U", "--output=json",
                          chain["top"]))

    def depth_at(off):
        for e in qmap:
            if e["start"] <= off < e["start"] + e["length"]:
                return e["depth"], e["data"], e["zero"]
        raise AssertionError("no map entry at %d" % off)
    assert depth_at(64 * K)[0] == 0
    assert depth_at(4 * MIB)[:2] == (0, True)
    assert depth_at(6 * MIB)[0] == 0 and depth_at(6 * MIB)[2]
    assert depth_at(8 * MIB - 1024)[0] == 0
    assert depth_at(5 * MIB)[0] == 1              # untouched: backing
    run("qemu-img", "compare", "-U", "-f", "raw", "-F", "qcow2",
        chain["uri"], chain["top"])
    # and qemu-nbd on the same files agrees on both maps now as well
    q, quri = qemu_nbd_chain(chain, "after")
    try:
        for ctx in ("qemu:allocation-depth", "base:allocation"):
            assert nbd_map(chain["uri"], ctx) == nbd_map(quri, ctx), ctx
    finally:
        q.stop()
