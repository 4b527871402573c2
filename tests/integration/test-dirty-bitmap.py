"""Dirty bitmaps: block-dirty-bitmap-* over QMP, marking by writes that
reach a node, and the qemu:dirty-bitmap:NAME export context, checked
with real clients (libnbd, nbdinfo, qemu-io, qemu-img, qemu-nbd) and
against a Python model of the bits."""
import json
import os
import random
import subprocess
import time

import nbd
import pytest

from conftest import QmpError, requires, wait_socket

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
TIB = 1 << 40
CTX = "qemu:dirty-bitmap:"


def bcmd(blockd, cmd, **kwargs):
    """A command whose arguments include "name" (cmd() takes that)."""
    return blockd.cmd(cmd, {k.replace("_", "-"): v
                            for k, v in kwargs.items()})


def run(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True,
                          text=True).stdout


def start_nbd(blockd):
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    blockd.cmd("nbd-server-start",
               addr={"type": "unix", "data": {"path": sock}})
    return sock


def export(blockd, eid, node, writable=False, bitmaps=None):
    args = {"type": "nbd", "id": eid, "node-name": node, "name": eid,
            "writable": writable}
    if bitmaps is not None:
        args["bitmaps"] = bitmaps
    blockd.cmd("block-export-add", args)


def unexport(blockd, eid):
    blockd.cmd("block-export-del", id=eid)
    # the export goes when its last client does: wait for the event
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not any(e["id"] == eid for e in blockd.cmd("query-block-exports")):
            return
        time.sleep(0.02)
    raise TimeoutError("export %s stayed" % eid)


def connect(sock, name, contexts=()):
    h = nbd.NBD()
    for c in contexts:
        h.add_meta_context(c)
    h.set_export_name(name)
    h.connect_unix(sock)
    return h


def dirty_map(h, ctx, size, offset=0):
    """[(offset, length, flags)] of ctx over [offset, size), merged."""
    out = []
    pos = offset
    while pos < size:
        got = []

        def cb(metacontext, off, entries, err):
            if metacontext == ctx:
                got.extend(entries)
            return 0
        h.block_status(min(size - pos, 2 * GIB), pos, cb)
        assert got, "no extents for %s at %d" % (ctx, pos)
        for i in range(0, len(got), 2):
            length, flags = got[i], got[i + 1]
            length = min(length, size - pos)
            if out and out[-1][2] == flags and \
                    out[-1][0] + out[-1][1] == pos:
                out[-1] = (out[-1][0], out[-1][1] + length, flags)
            else:
                out.append((pos, length, flags))
            pos += length
            if pos >= size:
                break
    return out


def dirty_ranges(extents):
    return [(o, n) for o, n, f in extents if f & 1]


def bitmap_info(blockd, node, name):
    for n in blockd.cmd("query-named-block-nodes"):
        if n["node-name"] == node:
            for b in n.get("dirty-bitmaps", []):
                if b["name"] == name:
                    return b
    return None


def rounded(ranges, gran, size):
    """Byte ranges rounded out to gran, merged, clipped to size."""
    granules = set()
    for off, n in ranges:
        granules.update(range(off // gran, (off + n - 1) // gran + 1))
    return granules_to_ranges(granules, gran, size)


def granules_to_ranges(granules, gran, size):
    out = []
    for g in sorted(granules):
        start, end = g * gran, min((g + 1) * gran, size)
        if out and out[-1][0] + out[-1][1] == start:
            out[-1] = (out[-1][0], end - out[-1][0])
        else:
            out.append((start, end - start))
    return out


@pytest.fixture
def raw_node(blockd, tmp_path):
    """A 64 MiB raw file node 'd0' with discard=unmap, and a server."""
    path = str(tmp_path / "disk.raw")
    with open(path, "wb") as f:
        f.truncate(64 * MIB)
    blockd.cmd("blockdev-add", {"driver": "raw", "node-name": "d0",
                                "discard": "unmap",
                                "file": {"driver": "file",
                                         "filename": path}})
    return dict(sock=start_nbd(blockd), path=path, size=64 * MIB)


def test_commands_listed(blockd):
    """DIRTY_BITMAPS is built: the commands are in query-commands and
    query-qmp-schema (capabilities tell the truth)."""
    names = {"block-dirty-bitmap-" + c for c in
             ("add", "remove", "clear", "enable", "disable", "merge")}
    assert names <= {c["name"] for c in blockd.cmd("query-commands")}
    assert names <= {e["name"] for e in blockd.cmd("query-qmp-schema")}


def test_writes_marked_and_exported(blockd, raw_node):
    """Writes by libnbd and qemu-io through a writable export; a
    read-only export of the disabled bitmap then shows exactly those
    ranges rounded to the granularity, to libnbd, nbdinfo and
    qemu-img."""
    requires("qemu-io", "qemu-img", "nbdinfo")
    sock, size = raw_node["sock"], raw_node["size"]
    bcmd(blockd, "block-dirty-bitmap-add", node="d0", name="b0",
               granularity=64 * KIB)
    bcmd(blockd, "block-dirty-bitmap-add", node="d0", name="fine",
               granularity=512)
    export(blockd, "w", "d0", writable=True)
    h = connect(sock, "w")
    writes = [(100, 1), (65535, 2), (1 * MIB, 64 * KIB),
              (10 * MIB + 7, 200 * KIB)]
    for off, n in writes:
        h.pwrite(b"\x5a" * n, off)
    h.zero(4096, 20 * MIB)
    h.trim(1 * MIB, 30 * MIB)
    h.shutdown()
    writes += [(20 * MIB, 4096), (30 * MIB, 1 * MIB)]
    run("qemu-io", "-f", "raw", "-c", "write -P 1 40M 1000",
        "nbd+unix:///w?socket=" + sock)
    writes.append((40 * MIB, 1000))

    want = rounded(writes, 64 * KIB, size)
    info = bitmap_info(blockd, "d0", "b0")
    assert info["count"] == sum(n for _, n in want)
    assert info["granularity"] == 64 * KIB
    assert info["recording"] is True and info["busy"] is False
    assert info["persistent"] is False and "inconsistent" not in info
    fine = bitmap_info(blockd, "d0", "fine")
    assert fine["count"] == sum(n for _, n in rounded(writes, 512, size))

    bcmd(blockd, "block-dirty-bitmap-disable", node="d0", name="b0")
    bcmd(blockd, "block-dirty-bitmap-disable", node="d0", name="fine")
    export(blockd, "r", "d0", bitmaps=["b0", "fine"])
    assert bitmap_info(blockd, "d0", "b0")["busy"] is True
    h = connect(sock, "r", [CTX + "b0", CTX + "fine"])
    assert h.can_meta_context(CTX + "b0")
    assert dirty_ranges(dirty_map(h, CTX + "b0", size)) == want
    assert dirty_ranges(dirty_map(h, CTX + "fine", size)) == \
        rounded(writes, 512, size)
    h.shutdown()

    out = json.loads(run("nbdinfo", "--map=" + CTX + "b0", "--json",
                         "nbd+unix:///r?socket=" + sock))
    got = [(e["offset"], e["length"]) for e in out if e["type"] & 1]
    assert got == want
    # qemu's client reports a dirty extent as "data": false
    qmap = json.loads(run(
        "qemu-img", "map", "--output=json", "--image-opts",
        "driver=nbd,server.type=unix,server.path=%s,export=r,"
        "x-dirty-bitmap=%sb0" % (sock, CTX)))
    got = []
    for e in qmap:
        if not e["data"]:
            if got and got[-1][0] + got[-1][1] == e["start"]:
                got[-1] = (got[-1][0], got[-1][1] + e["length"])
            else:
                got.append((e["start"], e["length"]))
    assert got == want
    unexport(blockd, "r")
    assert bitmap_info(blockd, "d0", "b0")["busy"] is False


def test_unaligned_block_status(blockd, raw_node):
    """Block status from unaligned offsets and lengths: extents clipped
    to the request, boundaries at the granularity."""
    sock = raw_node["sock"]
    bcmd(blockd, "block-dirty-bitmap-add", node="d0", name="b",
               granularity=4096)
    export(blockd, "w", "d0", writable=True)
    h = connect(sock, "w")
    h.pwrite(b"x", 8192 + 5)             # granule 2
    h.pwrite(b"x" * 10, 5 * 4096 - 3)    # granules 4 and 5
    h.shutdown()
    bcmd(blockd, "block-dirty-bitmap-disable", node="d0", name="b")
    export(blockd, "r", "d0", bitmaps=["b"])
    h = connect(sock, "r", [CTX + "b"])

    def status(off, length, req_one=False):
        got = []

        def cb(metacontext, o, entries, err):
            got.extend(entries)
            return 0
        h.block_status(length, off, cb,
                       flags=nbd.CMD_FLAG_REQ_ONE if req_one else 0)
        return [(got[i], got[i + 1]) for i in range(0, len(got), 2)]

    assert status(100, 8000) == [(8000, 0)]
    assert status(100, 8100) == [(8092, 0), (8, 1)]
    assert status(8193, 10) == [(10, 1)]
    assert status(8193, 9000) == [(4095, 1), (4096, 0), (809, 1)]
    assert status(3 * 4096 + 1, 3 * 4096) == [(4095, 0), (8192, 1), (1, 0)]
    assert status(8193, 9000, req_one=True) == [(4095, 1)]
    h.shutdown()


def test_random_model(blockd, raw_node):
    """Seeded random writes, clears, enables, disables and merges over
    three bitmaps of different granularities, against a model."""
    sock, size = raw_node["sock"], raw_node["size"]
    rng = random.Random(1234)
    grans = {"a": 512, "b": 64 * KIB, "c": 1 * MIB}
    model = {n: set() for n in grans}
    enabled = {n: True for n in grans}
    for n, g in grans.items():
        bcmd(blockd, "block-dirty-bitmap-add", node="d0", name=n,
                   granularity=g)
    export(blockd, "w", "d0", writable=True)
    h = connect(sock, "w")

    def check():
        for n, g in grans.items():
            info = bitmap_info(blockd, "d0", n)
            want = granules_to_ranges(model[n], g, size)
            assert info["count"] == sum(x for _, x in want), n
            assert info["recording"] == enabled[n]

    for step in range(300):
        op = rng.random()
        if op < 0.5:
            off = rng.randrange(size)
            n = rng.choice([1, rng.randrange(1, 4096),
                            rng.randrange(1, 2 * MIB)])
            n = min(n, size - off)
            h.pwrite(b"\1" * n, off)
            for b, g in grans.items():
                if enabled[b]:
                    model[b].update(range(off // g, (off + n - 1) // g + 1))
        elif op < 0.6:
            b = rng.choice(list(grans))
            bcmd(blockd, "block-dirty-bitmap-clear", node="d0", name=b)
            model[b].clear()
        elif op < 0.75:
            b = rng.choice(list(grans))
            en = rng.random() < 0.5
            bcmd(blockd, "block-dirty-bitmap-enable" if en else
                       "block-dirty-bitmap-disable", node="d0", name=b)
            enabled[b] = en
        else:
            dst = rng.choice(list(grans))
            srcs = rng.sample(list(grans), rng.randrange(1, 3))
            bitmaps = [s if rng.random() < 0.5 else
                       {"node": "d0", "name": s} for s in srcs]
            bcmd(blockd, "block-dirty-bitmap-merge", node="d0", target=dst,
                       bitmaps=bitmaps)
            gd = grans[dst]
            add = set()
            for s in srcs:
                gs = grans[s]
                for g in model[s]:
                    start, end = g * gs, min((g + 1) * gs, size)
                    add.update(range(start // gd, (end - 1) // gd + 1))
            model[dst] |= add
        if step % 25 == 0:
            check()
    check()
    h.shutdown()
    # and the bits themselves, exported (enabled bitmaps need a
    # writable export)
    unexport(blockd, "w")
    export(blockd, "w2", "d0", writable=True, bitmaps=list(grans))
    h = connect(sock, "w2", [CTX + n for n in grans])
    for n, g in grans.items():
        assert dirty_ranges(dirty_map(h, CTX + n, size)) == \
            granules_to_ranges(model[n], g, size), n
    h.shutdown()


def test_concurrent_writers(blockd, raw_node):
    """Four connections with many writes in flight each, marking one
    bitmap from several worker threads at once: every write is in it,
    nothing else."""
    sock, size = raw_node["sock"], raw_node["size"]
    bcmd(blockd, "block-dirty-bitmap-add", node="d0", name="b",
         granularity=4096)
    export(blockd, "w", "d0", writable=True)
    rng = random.Random(99)
    handles = [connect(sock, "w") for _ in range(4)]
    writes = []
    for _ in range(8):
        for h in handles:
            for _ in range(16):
                off = rng.randrange(size - 70000)
                n = rng.randrange(1, 70000)
                writes.append((off, n))
                h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(n)), off)
        for h in handles:
            while h.aio_in_flight() > 0:
                h.poll(-1)
    for h in handles:
        h.shutdown()
    bcmd(blockd, "block-dirty-bitmap-disable", node="d0", name="b")
    export(blockd, "r", "d0", bitmaps=["b"])
    h = connect(sock, "r", [CTX + "b"])
    assert dirty_ranges(dirty_map(h, CTX + "b", size)) == \
        rounded(writes, 4096, size)
    h.shutdown()


def err(blockd, cmd, **kwargs):
    with pytest.raises(QmpError) as e:
        bcmd(blockd, cmd, **kwargs)
    assert e.value.cls == "GenericError", e.value
    return e.value.desc


def test_errors(blockd, raw_node):
    """Every refusal, with QEMU's class and message."""
    blockd.cmd("blockdev-add", {"driver": "null-co", "node-name": "small",
                                "size": 1 * MIB})
    add = "block-dirty-bitmap-add"
    assert err(blockd, add, node="nosuch", name="x") == \
        "Cannot find device='nosuch' nor node-name='nosuch'"
    assert err(blockd, add, node="d0", name="") == \
        "Bitmap name cannot be empty"
    for g in (0, 256, 1000, 65537):
        assert err(blockd, add, node="d0", name="x", granularity=g) == \
            "Granularity must be power of 2 and at least 512"
    assert err(blockd, add, node="d0", name="x" * 1024).startswith(
        "Bitmap name too long")
    assert err(blockd, add, node="d0", name="p", persistent=True) == \
        "Can't store persistent bitmaps to d0"
    bcmd(blockd, add, node="d0", name="b0")
    bcmd(blockd, add, node="d0", name="x" * 1023, disabled=True)
    assert bitmap_info(blockd, "d0", "x" * 1023)["recording"] is False
    assert bitmap_info(blockd, "d0", "b0")["granularity"] == 64 * KIB
    assert err(blockd, add, node="d0", name="b0") == \
        "Bitmap already exists: b0"
    bcmd(blockd, add, node="small", name="s")

    for cmd in ("remove", "clear", "enable", "disable"):
        c = "block-dirty-bitmap-" + cmd
        assert err(blockd, c, node="nosuch", name="b0") == \
            "Node 'nosuch' not found"
        assert err(blockd, c, node="d0", name="nope") == \
            "Dirty bitmap 'nope' not found"
    merge = "block-dirty-bitmap-merge"
    assert err(blockd, merge, node="d0", target="nope",
               bitmaps=["b0"]) == "Dirty bitmap 'nope' not found"
    assert err(blockd, merge, node="d0", target="b0",
               bitmaps=["nope"]) == "Dirty bitmap 'nope' not found"
    assert err(blockd, merge, node="d0", target="b0",
               bitmaps=[{"node": "nosuch", "name": "s"}]) == \
        "Node 'nosuch' not found"
    assert err(blockd, merge, node="d0", target="b0",
               bitmaps=[{"node": "small", "name": "s"}]) == \
        ("Bitmaps are of different sizes (destination size is %d, "
         "source size is %d) and can't be merged" % (64 * MIB, 1 * MIB))

    # exports: unknown, read-only with an enabled bitmap
    sock = raw_node["sock"]
    with pytest.raises(QmpError) as e:
        export(blockd, "e", "d0", bitmaps=["nope"])
    assert e.value.desc == "Bitmap 'nope' is not found"
    with pytest.raises(QmpError) as e:
        export(blockd, "e", "d0", bitmaps=[{"node": "small", "name": "t"}])
    assert e.value.desc == "Dirty bitmap 't' not found"
    with pytest.raises(QmpError) as e:
        export(blockd, "e", "d0", bitmaps=["b0"])
    assert e.value.desc == \
        "Enabled bitmap 'b0' incompatible with readonly export"
    with pytest.raises(QmpError) as e:
        export(blockd, "e", "d0", writable=True,
               bitmaps=["b0", {"node": "d0", "name": "b0"}])
    assert "given twice" in e.value.desc
    assert bitmap_info(blockd, "d0", "b0")["busy"] is False

    # busy while exported: nothing may change it
    export(blockd, "e", "d0", writable=True, bitmaps=["b0"])
    busy = ("Bitmap 'b0' is currently in use by another operation and "
            "cannot be used")
    assert bitmap_info(blockd, "d0", "b0")["busy"] is True
    for cmd in ("remove", "clear", "enable", "disable"):
        assert err(blockd, "block-dirty-bitmap-" + cmd, node="d0",
                   name="b0") == busy
    bcmd(blockd, add, node="d0", name="other")
    assert err(blockd, merge, node="d0", target="b0",
               bitmaps=["other"]) == busy
    # as QEMU: a busy bitmap is no merge source either
    assert err(blockd, merge, node="d0", target="other",
               bitmaps=["b0"]) == busy
    # a second export of the same bitmap
    with pytest.raises(QmpError) as e:
        export(blockd, "e2", "d0", writable=True, bitmaps=["b0"])
    assert e.value.desc == busy
    unexport(blockd, "e")
    bcmd(blockd, "block-dirty-bitmap-remove", node="d0", name="b0")
    assert bitmap_info(blockd, "d0", "b0") is None
    # the read-only export of a disabled bitmap is fine
    bcmd(blockd, "block-dirty-bitmap-disable", node="d0", name="other")
    export(blockd, "e4", "d0", bitmaps=["other"])
    unexport(blockd, "e4")
    # {node, name} from another node: exposed under its name, and that
    # node stays in use until the export goes
    blockd.cmd("blockdev-add", {"driver": "null-co", "node-name": "big",
                                "size": 64 * MIB})
    bcmd(blockd, add, node="big", name="ext", disabled=True)
    export(blockd, "e5", "d0", bitmaps=[{"node": "big", "name": "ext"}])
    h = connect(sock, "e5", [CTX + "ext"])
    assert h.can_meta_context(CTX + "ext")
    h.shutdown()
    assert err(blockd, "blockdev-del", node_name="big").endswith(
        "is in use by export 'e5' bitmap 'ext'")
    unexport(blockd, "e5")
    blockd.cmd("blockdev-del", node_name="big")


def test_overlay_and_file_child(blockd, tmp_path):
    """A write through a qcow2 overlay marks the overlay's bitmap, not
    its backing node's; the overlay's file node has its own bitmap,
    marked at host offsets (data and metadata, as in QEMU)."""
    requires("qemu-img")
    base = str(tmp_path / "base.qcow2")
    top = str(tmp_path / "top.qcow2")
    run("qemu-img", "create", "-q", "-f", "qcow2", base, "16M")
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F",
        "qcow2", top)
    blockd.cmd("blockdev-add", {
        "driver": "qcow2", "node-name": "top",
        "file": {"driver": "file", "node-name": "topf", "filename": top},
        "backing": {"driver": "qcow2", "node-name": "base",
                    "file": {"driver": "file", "filename": base}}})
    for n in ("top", "topf", "base"):
        bcmd(blockd, "block-dirty-bitmap-add", node=n, name="b",
                   granularity=512)
    # qcow2's default: its cluster size
    bcmd(blockd, "block-dirty-bitmap-add", node="top", name="dflt")
    assert bitmap_info(blockd, "top", "dflt")["granularity"] == 64 * KIB
    sock = start_nbd(blockd)
    export(blockd, "w", "top", writable=True)
    h = connect(sock, "w")
    h.pwrite(b"\7" * 4096, 5 * MIB)
    h.flush()
    h.shutdown()
    assert bitmap_info(blockd, "top", "b")["count"] == 4096
    assert bitmap_info(blockd, "base", "b")["count"] == 0
    assert bitmap_info(blockd, "topf", "b")["count"] > 4096
    bcmd(blockd, "block-dirty-bitmap-disable", node="topf", name="b")
    export(blockd, "f", "topf", bitmaps=["b"])
    unexport(blockd, "w")
    h = connect(sock, "f", [CTX + "b"])
    fsize = h.get_size()
    fdirty = dirty_ranges(dirty_map(h, CTX + "b", fsize))
    h.shutdown()
    unexport(blockd, "f")
    blockd.cmd("blockdev-del", node_name="top")
    # where qemu-img says the data lives: inside the dirty host ranges
    qmap = json.loads(run("qemu-img", "map", "--output=json", top))
    hosts = [(e["offset"], e["length"]) for e in qmap
             if e.get("data") and e["depth"] == 0 and "offset" in e]
    assert hosts
    for off, n in hosts:
        assert any(o <= off and off + n <= o + m for o, m in fdirty), \
            (off, n, fdirty)


def test_nbd_driver_marks(blockd, tmp_path):
    """Writes through the asynchronous nbd driver mark its node's
    bitmap (completion path)."""
    requires("qemu-nbd")
    path = str(tmp_path / "up.raw")
    with open(path, "wb") as f:
        f.truncate(16 * MIB)
    usock = str(tmp_path / "up.sock")
    qn = subprocess.Popen(["qemu-nbd", "-f", "raw", "-k", usock, "-t",
                           path], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    try:
        wait_socket(usock, qn)
        blockd.cmd("blockdev-add", {"driver": "nbd", "node-name": "up",
                                    "server": {"type": "unix",
                                               "path": usock}})
        bcmd(blockd, "block-dirty-bitmap-add", node="up", name="b",
                   granularity=4096)
        sock = start_nbd(blockd)
        export(blockd, "w", "up", writable=True)
        h = connect(sock, "w")
        h.pwrite(b"\1" * 4096, 4096)
        h.pwrite(b"\1" * 100, 3 * MIB + 10)
        h.zero(8192, 10 * MIB)
        h.shutdown()
        want = rounded([(4096, 4096), (3 * MIB + 10, 100),
                        (10 * MIB, 8192)], 4096, 16 * MIB)
        assert bitmap_info(blockd, "up", "b")["count"] == \
            sum(n for _, n in want)
        unexport(blockd, "w")
        blockd.cmd("blockdev-del", node_name="up")
    finally:
        qn.kill()
        qn.wait()


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_scale_16tib(blockd):
    """A 16 TiB node with a 64 KiB bitmap and a few dirty ranges: add,
    export and map stay cheap (a dense bitmap would be 32 MiB)."""
    requires("nbdinfo")
    size = 16 * TIB
    blockd.cmd("blockdev-add", {"driver": "null-co", "node-name": "huge",
                                "size": size})
    sock = start_nbd(blockd)
    export(blockd, "w", "huge", writable=True)
    h = connect(sock, "w")
    h.pread(4096, 0)
    before = rss_kib(blockd.pid)
    t0 = time.monotonic()
    bcmd(blockd, "block-dirty-bitmap-add", node="huge", name="b",
               granularity=64 * KIB)
    writes = [(0, 1), (5 * TIB, 1 * MIB), (16 * TIB - 4096, 4096)]
    for off, n in writes:
        h.pwrite(b"\1" * n, off)
    h.shutdown()
    bcmd(blockd, "block-dirty-bitmap-disable", node="huge", name="b")
    export(blockd, "r", "huge", bitmaps=["b"])
    out = json.loads(run("nbdinfo", "--map=" + CTX + "b", "--json",
                         "nbd+unix:///r?socket=" + sock))
    elapsed = time.monotonic() - t0
    growth = rss_kib(blockd.pid) - before
    got = [(e["offset"], e["length"]) for e in out if e["type"] & 1]
    assert got == rounded(writes, 64 * KIB, size)
    print("16 TiB bitmap: add+write+export+map %.3f s, RSS growth %d KiB"
          % (elapsed, growth))
    assert elapsed < 10
    assert growth < 8 * 1024
