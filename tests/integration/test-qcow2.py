"""The qcow2 driver through blockd: images made by qemu-img/qemu-io are
served exactly over NBD, images written through blockd pass qemu-img
check and compare, snapshots and backing files, hostile images and
kill -9 in the middle of writes."""
import json
import os
import random
import signal
import subprocess
import time

import nbd
import pytest

from conftest import QmpError, requires

MIB = 1 << 20
K = 1024


def run(*cmd, check=True):
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def qemu_img(*args, check=True):
    return run("qemu-img", *args, check=check)


def add_qcow2(blockd, node, path, **extra):
    opts = {"driver": "qcow2", "node-name": node,
            "file": {"driver": "file", "filename": path}}
    opts.update(extra)
    blockd.cmd("blockdev-add", opts)


def export(blockd, node, name, writable=False):
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    if not os.path.exists(sock):
        blockd.cmd("nbd-server-start",
                   addr={"type": "unix", "data": {"path": sock}})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e-" + name,
                                    "node-name": node, "name": name,
                                    "writable": writable})
    return "nbd+unix:///%s?socket=%s" % (name, sock)


def connect(uri):
    h = nbd.NBD()
    h.connect_uri(uri)
    return h


def read_all(h):
    size = h.get_size()
    out = bytearray()
    off = 0
    while off < size:
        n = min(4 * MIB, size - off)
        out += h.pread(n, off)
        off += n
    return bytes(out)


def raw_of(path, tmp_path, *extra):
    raw = str(tmp_path / "ref.raw")
    qemu_img("convert", *extra, "-O", "raw", path, raw)
    with open(raw, "rb") as f:
        return f.read()


QEMU_IO = ["-c", "write -P 0x5a 0 64k", "-c", "write -P 0xa5 100k 3k",
           "-c", "write -P 0x11 1m 2m", "-c", "write -z 1536k 64k",
           "-c", "write -P 0x22 5m 7", "-c", "discard 2m 1m"]


@pytest.mark.parametrize("opts", [
    "cluster_size=4k", "cluster_size=64k", "cluster_size=2M",
    "refcount_bits=1", "compat=0.10", "extended_l2=on"])
def test_read_qemu_images(blockd, tmp_path, opts):
    requires("qemu-img", "qemu-io")
    img = str(tmp_path / "a.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-o", opts, img, "8M")
    run("qemu-io", "-f", "qcow2", *QEMU_IO, img)
    want = raw_of(img, tmp_path)
    add_qcow2(blockd, "n0", img, **{"read-only": True})
    h = connect(export(blockd, "n0", "disk"))
    assert read_all(h) == want
    h.shutdown()


def test_read_compressed(blockd, tmp_path):
    requires("qemu-img", "qemu-io")
    src = str(tmp_path / "src.raw")
    img = str(tmp_path / "c.qcow2")
    qemu_img("create", "-q", "-f", "raw", src, "8M")
    run("qemu-io", "-f", "raw", *QEMU_IO, src)
    with open(src, "r+b") as f:
        f.seek(6 * MIB)
        f.write(os.urandom(MIB))
    qemu_img("convert", "-c", "-f", "raw", "-O", "qcow2", src, img)
    info = json.loads(qemu_img("check", "--output=json", img).stdout)
    assert info["compressed-clusters"] > 0
    add_qcow2(blockd, "n0", img, **{"read-only": True})
    h = connect(export(blockd, "n0", "disk"))
    with open(src, "rb") as f:
        assert read_all(h) == f.read()


def test_write_then_qemu_img_check(blockd, tmp_path):
    requires("qemu-img")
    img = str(tmp_path / "w.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", img,
             "32M")
    ref = bytearray(32 * MIB)
    add_qcow2(blockd, "n0", img)
    h = connect(export(blockd, "n0", "disk", writable=True))
    rng = random.Random(4)
    for i in range(400):
        off = rng.randrange(32 * MIB - 1)
        n = min(rng.randrange(1, 200 * K), 32 * MIB - off)
        if i % 5 == 4:
            h.zero(n, off)
            ref[off:off + n] = bytes(n)
        else:
            data = bytes([i & 0xff]) * n
            h.pwrite(data, off)
            ref[off:off + n] = data
    h.flush()
    assert read_all(h) == bytes(ref)
    h.shutdown()
    blockd.cmd("block-export-del", id="e-disk")
    # the export goes away asynchronously
    for _ in range(100):
        try:
            blockd.cmd("blockdev-del", node_name="n0")
            break
        except QmpError:
            time.sleep(0.05)
    qemu_img("check", "-q", img)
    raw = str(tmp_path / "w.raw")
    with open(raw, "wb") as f:
        f.write(ref)
    qemu_img("compare", "-q", "-f", "qcow2", "-F", "raw", img, raw)


def test_query_snapshots_and_export_snapshot(blockd, tmp_path):
    requires("qemu-img", "qemu-io")
    img = str(tmp_path / "s.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", img, "4M")
    run("qemu-io", "-f", "qcow2", "-c", "write -P 1 0 1m", img)
    qemu_img("snapshot", "-c", "first", img)
    run("qemu-io", "-f", "qcow2", "-c", "write -P 2 0 2m", img)
    want_first = raw_of(img, tmp_path, "-l", "snapshot.name=first")
    want_active = raw_of(img, tmp_path)
    assert want_first != want_active

    add_qcow2(blockd, "act", img, **{"read-only": True})
    nodes = blockd.cmd("query-named-block-nodes")
    act = [n for n in nodes if n["node-name"] == "act"][0]
    snaps = act["image"]["snapshots"]
    assert [s["name"] for s in snaps] == ["first"]
    assert snaps[0]["id"] == "1"
    spec = act["image"]["format-specific"]
    assert spec["type"] == "qcow2"
    assert spec["data"]["compat"] == "1.1"
    assert spec["data"]["refcount-bits"] == 16
    assert act["image"]["cluster-size"] == 65536

    add_qcow2(blockd, "snap", img, **{"read-only": True,
                                     "snapshot": "first"})
    h = connect(export(blockd, "snap", "snap"))
    assert read_all(h) == want_first
    h2 = connect(export(blockd, "act", "act"))
    assert read_all(h2) == want_active

    with pytest.raises(QmpError) as e:
        add_qcow2(blockd, "bad", img, **{"read-only": True,
                                        "snapshot": "nope"})
    assert e.value.cls == "GenericError"
    assert "snapshot 'nope' not found" in e.value.desc
    with pytest.raises(QmpError) as e:
        add_qcow2(blockd, "bad", img, snapshot="first")
    assert "read-only" in e.value.desc


def test_backing_chain_and_null(blockd, tmp_path):
    requires("qemu-img", "qemu-io")
    base = str(tmp_path / "base.qcow2")
    top = str(tmp_path / "top.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", base, "4M")
    run("qemu-io", "-f", "qcow2", "-c", "write -P 7 0 4m", base)
    qemu_img("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F",
             "qcow2", top)
    run("qemu-io", "-f", "qcow2", "-c", "write -P 8 1m 64k", top)
    want = raw_of(top, tmp_path)
    add_qcow2(blockd, "top", top, **{"read-only": True})
    nodes = {n["node-name"]: n for n in
             blockd.cmd("query-named-block-nodes")}
    assert nodes["top"]["backing_file_depth"] == 1
    assert nodes["top"]["image"]["backing-filename"] == "base.qcow2"
    h = connect(export(blockd, "top", "top"))
    assert read_all(h) == want
    add_qcow2(blockd, "alone", top, **{"read-only": True, "backing": None})
    h2 = connect(export(blockd, "alone", "alone"))
    data = read_all(h2)
    assert data[:MIB] == bytes(MIB)
    assert data[MIB:MIB + 64 * K] == bytes([8]) * (64 * K)


def test_backing_loop(blockd, tmp_path):
    requires("qemu-img")
    a = str(tmp_path / "a.qcow2")
    b = str(tmp_path / "b.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", a, "1M")
    qemu_img("create", "-q", "-f", "qcow2", "-b", a, "-F", "qcow2", b)
    qemu_img("rebase", "-u", "-b", b, "-F", "qcow2", a)
    with pytest.raises(QmpError) as e:
        add_qcow2(blockd, "a", a, **{"read-only": True})
    assert e.value.cls == "GenericError"
    assert "loop" in e.value.desc


def test_hostile_images(blockd, tmp_path):
    bad = str(tmp_path / "bad.qcow2")
    cases = [
        (b"QFI\xfb\x00\x00\x00\x03" + b"\x00" * 20, "too short"),
        (b"QFI\xfb" + b"\x00\x00\x00\x09" + b"\x00" * 200, "version"),
    ]
    hdr = bytearray(512)
    hdr[0:4] = b"QFI\xfb"
    hdr[4:8] = (3).to_bytes(4, "big")
    hdr[20:24] = (30).to_bytes(4, "big")       # cluster_bits 30
    hdr[100:104] = (104).to_bytes(4, "big")
    cases.append((bytes(hdr), "cluster size"))
    hdr[20:24] = (16).to_bytes(4, "big")
    hdr[24:32] = (1 << 30).to_bytes(8, "big")
    hdr[36:40] = (0xffffffff).to_bytes(4, "big")
    cases.append((bytes(hdr), "L1 table too large"))
    for data, needle in cases:
        with open(bad, "wb") as f:
            f.write(data)
        with pytest.raises(QmpError) as e:
            add_qcow2(blockd, "bad", bad, **{"read-only": True})
        assert e.value.cls == "GenericError"
        assert needle in e.value.desc, e.value.desc
    # and the daemon keeps serving (the fixture checks it is alive)


def test_sparse_1t_map_reads_only_metadata(blockd, tmp_path):
    """Mapping a 1 TiB sparse image reads its tables, never its data: the
    bytes read from the file node stay tiny (an O(size) walk would read
    far more, or take hours).  Counted, not timed."""
    requires("qemu-img", "nbdinfo")
    img = str(tmp_path / "big.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", img, "1T")
    run("qemu-io", "-f", "qcow2", "-c", "write -P 1 512G 64k", img)
    blockd.cmd("blockdev-add", {"driver": "file", "node-name": "bigf",
                                "filename": img, "read-only": True})
    add_qcow2(blockd, "big", img, **{"read-only": True, "file": "bigf"})
    uri = export(blockd, "big", "big")
    out = run("nbdinfo", "--map", "--json", uri).stdout
    m = json.loads(out)
    data = [e for e in m if not (e["type"] & 1)]
    assert [(e["offset"], e["length"]) for e in data] == [(512 << 30,
                                                           64 * K)]
    stats = {s["node-name"]: s["stats"]
             for s in blockd.cmd("query-blockstats", query_nodes=True)}
    # header + 128 KiB L1 + one L2 table + refcounts: well under 4 MiB
    assert stats["bigf"]["rd_bytes"] < 4 << 20, stats["bigf"]


def test_resize(blockd, tmp_path):
    requires("qemu-img")
    img = str(tmp_path / "r.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", img,
             "1M")
    add_qcow2(blockd, "r", img)
    blockd.cmd("block_resize", node_name="r", size=8 << 30)
    uri = export(blockd, "r", "r", writable=True)
    h = connect(uri)
    assert h.get_size() == 8 << 30
    h.pwrite(b"x" * 4096, (8 << 30) - 4096)
    h.flush()
    assert h.pread(4096, (8 << 30) - 4096) == b"x" * 4096
    h.shutdown()
    info = json.loads(qemu_img("info", "-U", "--output=json", img).stdout)
    assert info["virtual-size"] == 8 << 30
    qemu_img("check", "-U", "-q", img)
    with pytest.raises(QmpError):
        blockd.cmd("block_resize", node_name="r", size=4096)


def test_kill9_during_writes(blockd_factory, tmp_path):
    """Flushed writes survive kill -9; qemu-img check finds no
    corruption (leaks are allowed)."""
    requires("qemu-img")
    img = str(tmp_path / "k.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", img, "64M")
    d = blockd_factory()
    add_qcow2(d, "k", img)
    h = connect(export(d, "k", "k", writable=True))
    rng = random.Random(9)
    flushed = {}
    pending = {}
    for i in range(300):
        slot = rng.randrange(1000)
        off = slot * 64 * K + rng.randrange(0, 32 * K)
        data = bytes([i & 0xff, (i >> 8) & 0xff]) * rng.randrange(256,
                                                                  16 * K)
        h.pwrite(data, off)
        pending[slot] = (off, data)
        if i % 20 == 19:
            h.flush()
            flushed.update(pending)
            pending = {}
    os.kill(d.pid, signal.SIGKILL)
    d.proc.wait()
    r = qemu_img("check", img, check=False)
    assert r.returncode in (0, 3), r.stdout + r.stderr
    got = raw_of(img, tmp_path)
    for slot, (off, data) in flushed.items():
        if slot in pending:
            continue
        assert got[off:off + len(data)] == data, slot


def test_corruption_event(blockd, tmp_path):
    """An L2 entry pointing into the header: reads fail with EIO, the
    image is marked corrupt and BLOCK_IMAGE_CORRUPTED is emitted."""
    requires("qemu-img", "qemu-io")
    img = str(tmp_path / "c.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", img, "4M")
    run("qemu-io", "-f", "qcow2", "-c", "write -P 1 0 128k", img)
    with open(img, "r+b") as f:
        f.seek(40)
        l1 = int.from_bytes(f.read(8), "big")
        f.seek(l1)
        l2 = int.from_bytes(f.read(8), "big") & 0x00fffffffffffe00
        f.seek(l2)
        f.write((0x8000000000000200).to_bytes(8, "big"))
    add_qcow2(blockd, "c", img)
    h = connect(export(blockd, "c", "c", writable=True))
    with pytest.raises(nbd.Error):
        h.pread(512, 0)
    ev = blockd.conn.get_event("BLOCK_IMAGE_CORRUPTED")
    assert ev["data"]["node-name"] == "c"
    assert ev["data"]["fatal"] is True
    assert "invalid L2 entry" in ev["data"]["msg"]
    # no more writes, even to good clusters
    with pytest.raises(nbd.Error):
        h.pwrite(b"x" * 512, 2 * MIB)
    assert h.pread(512, 64 * K) == bytes([1]) * 512
    h.shutdown()
    with open(img, "rb") as f:
        f.seek(72)
        assert int.from_bytes(f.read(8), "big") & 2


def test_backing_by_reference_and_inline(blockd, tmp_path):
    """backing given as a node-name or inline replaces the header's."""
    requires("qemu-img", "qemu-io")
    base = str(tmp_path / "base.qcow2")
    other = str(tmp_path / "other.qcow2")
    top = str(tmp_path / "top.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", base, "2M")
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x31 0 2m", base)
    qemu_img("create", "-q", "-f", "qcow2", other, "2M")
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x32 0 2m", other)
    qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top)
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x33 0 64k", top)

    add_qcow2(blockd, "other", other, **{"read-only": True})
    add_qcow2(blockd, "t1", top, **{"read-only": True, "backing": "other"})
    add_qcow2(blockd, "t2", top, **{
        "read-only": True,
        "backing": {"driver": "qcow2", "node-name": "b2",
                    "file": {"driver": "file", "filename": base}}})
    nodes = {n["node-name"]: n for n in
             blockd.cmd("query-named-block-nodes")}
    assert {"child": "backing", "node-name": "other"} in \
        nodes["t1"]["children"]
    assert nodes["b2"]["ro"] is True
    h1 = connect(export(blockd, "t1", "t1"))
    h2 = connect(export(blockd, "t2", "t2"))
    assert h1.pread(4, 0) == b"\x33" * 4
    assert h1.pread(4, MIB) == b"\x32" * 4
    assert h2.pread(4, MIB) == b"\x31" * 4
    # the shared backing node is in use
    with pytest.raises(QmpError):
        blockd.cmd("blockdev-del", node_name="other")
