"""The "rbd" block driver against a real one-node Ceph cluster
(cephcluster.py: a monitor and a memstore OSD on 127.0.0.1, started
once for this file and stopped by PID at the end).  Images are made
and checked with Ceph's own rbd tool; blockd serves them over NBD to
real clients (python3-libnbd, qemu-io, nbdinfo).
"""
import errno
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid

import nbd
import pytest

from cephcluster import CephCluster, missing_programs
from conftest import QmpError, requires

MiB = 1 << 20
OBJ = 4 * MiB                    # rbd's default object size


@pytest.fixture(scope="module")
def ceph():
    missing = missing_programs()
    if missing:
        pytest.skip("Ceph is not installed (%s missing: apt-get install "
                    "ceph-mon ceph-osd ceph-common)" % ", ".join(missing))
    d = tempfile.mkdtemp(prefix="ceph-")
    c = CephCluster(d)
    try:
        c.start()
        yield c
    finally:
        c.stop()
        shutil.rmtree(d, ignore_errors=True)


def rbd_schema(blockd):
    """Skip unless this blockd was built with the rbd driver
    (BlockdevDriver: query-qmp-schema names types by number, so it is
    the enum holding the drivers)."""
    for t in blockd.cmd("query-qmp-schema"):
        if t["meta-type"] == "enum" and "null-co" in t["values"]:
            if "rbd" not in t["values"]:
                pytest.skip("blockd was built without librbd (-Drbd)")
            return
    raise AssertionError("no BlockdevDriver in query-qmp-schema")


def new_image(ceph, size="64M", name=None):
    name = name or "img-" + uuid.uuid4().hex[:8]
    ceph.run("rbd", "create", "--size", size, "rbd/" + name)
    return name


def rbd_opts(ceph, image, **extra):
    o = {"driver": "rbd", "pool": "rbd", "image": image, "conf": ceph.conf}
    o.update(extra)
    return o


def timeout_conf(ceph, tmp_path):
    """The cluster's ceph.conf plus a 5 s client op timeout (librbd's
    default is none: requests wait for the cluster)."""
    conf = str(tmp_path / "timeout.conf")
    with open(ceph.conf) as f:
        text = f.read()
    with open(conf, "w") as f:
        f.write(text.replace("[global]\n",
                             "[global]\nrados osd op timeout = 5\n", 1))
    return conf


def serve(blockd, node, name="disk", **extra):
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    if not os.path.exists(sock):
        blockd.cmd("nbd-server-start",
                   addr={"type": "unix", "data": {"path": sock}})
    args = {"type": "nbd", "id": name, "node-name": node, "name": name,
            "writable": True}
    args.update(extra)
    blockd.cmd("block-export-add", args)
    return "nbd+unix:///%s?socket=%s" % (name, sock)


def connect(uri, *contexts):
    h = nbd.NBD()
    for c in contexts:
        h.add_meta_context(c)
    h.connect_uri(uri)
    return h


def rbd_export(ceph, spec, tmp_path):
    out = str(tmp_path / ("export-" + uuid.uuid4().hex[:8]))
    ceph.run("rbd", "export", spec, out, timeout=120)
    with open(out, "rb") as f:
        data = f.read()
    os.unlink(out)
    return data


def test_write_read_rbd_export_matches(ceph, blockd, tmp_path):
    """libnbd and qemu-io write through blockd; rbd export reads the
    same bytes back from Ceph."""
    requires("qemu-io")
    rbd_schema(blockd)
    img = new_image(ceph)
    blockd.cmd("blockdev-add", rbd_opts(ceph, img, **{"node-name": "r0"}))
    uri = serve(blockd, "r0")
    h = connect(uri)
    assert h.get_size() == 64 * MiB
    assert h.can_flush() and h.can_fua() and h.can_zero()
    a = os.urandom(MiB)
    h.pwrite(a, 0)
    h.pwrite(b"\xab" * 65536, 10 * MiB + 512, nbd.CMD_FLAG_FUA)
    h.zero(20 * MiB, 2 * MiB)
    h.flush()
    assert h.pread(MiB, 0) == a
    assert h.pread(65536, 10 * MiB + 512) == b"\0" * 65536
    h.shutdown()
    # qemu-io over NBD, its pattern read back by qemu-io.
    r = subprocess.run(["qemu-io", "-f", "raw", "-c",
                        "write -P 0x5a 40M 3M", "-c", "flush", uri],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr + r.stdout
    r = subprocess.run(["qemu-io", "-f", "raw", "-c",
                        "read -P 0x5a 40M 3M", uri],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Pattern verification failed" not in \
        r.stdout, r.stdout
    data = rbd_export(ceph, "rbd/" + img, tmp_path)
    assert len(data) == 64 * MiB
    assert data[:MiB] == a
    assert data[2 * MiB:22 * MiB] == b"\0" * (20 * MiB)
    assert data[40 * MiB:43 * MiB] == b"\x5a" * (3 * MiB)
    # statistics count the driver's asynchronous requests
    stats = {s["node-name"]: s["stats"]
             for s in blockd.cmd("query-blockstats", {"query-nodes": True})}
    assert stats["r0"]["wr_operations"] >= 2
    assert stats["r0"]["rd_operations"] >= 2


def merge_runs(extents):
    """(offset, length) pairs in order, adjacent ones merged."""
    runs = []
    for off, n in extents:
        if runs and runs[-1][0] + runs[-1][1] == off:
            runs[-1][1] += n
        else:
            runs.append([off, n])
    return [tuple(r) for r in runs]


def data_extents(uri):
    """nbdinfo --map: the merged (offset, length) runs that are data."""
    out = subprocess.run(["nbdinfo", "--map", "--json", uri],
                         capture_output=True, text=True, timeout=120,
                         check=True).stdout
    return merge_runs((e["offset"], e["length"]) for e in json.loads(out)
                      if not e["type"] & 1)     # not a hole


def allocated_runs(ceph, img):
    """rbd diff's allocated objects, merged: [(offset, length)]."""
    diff = json.loads(ceph.run("rbd", "diff", "--whole-object", "--format",
                               "json", "rbd/" + img))
    return merge_runs((e["offset"], e["length"])
                      for e in sorted(diff, key=lambda e: e["offset"])
                      if e["exists"] in ("true", True))


def test_block_status_matches_rbd_diff(ceph, blockd):
    """base:allocation over rbd is what `rbd diff` says is there."""
    requires("nbdinfo")
    rbd_schema(blockd)
    img = new_image(ceph)
    blockd.cmd("blockdev-add", rbd_opts(ceph, img, **{"node-name": "r0",
                                                      "discard": "unmap"}))
    uri = serve(blockd, "r0")
    assert data_extents(uri) == []
    h = connect(uri)
    for off in (0, 3 * OBJ + 4096, 4 * OBJ, 9 * OBJ + OBJ - 512):
        h.pwrite(b"\x01" * 512, off)
    h.flush()
    # a discarded object is a hole again
    h.pwrite(b"\x02" * 4096, 12 * OBJ)
    h.trim(OBJ, 12 * OBJ)
    h.flush()
    h.shutdown()
    want = allocated_runs(ceph, img)
    assert want == [(0, OBJ), (3 * OBJ, 2 * OBJ), (9 * OBJ, OBJ)]
    assert data_extents(uri) == want


def test_qcow2_overlay_on_rbd_backing(ceph, blockd, tmp_path):
    """A local qcow2 over an rbd backing node: reads fall through to
    Ceph, writes stay local, qemu:allocation-depth tells them apart."""
    requires("qemu-img")
    rbd_schema(blockd)
    img = new_image(ceph)
    ceph.run("rbd", "bench", "--io-type", "write", "--io-size", "64K",
             "--io-total", "4M", "--io-pattern", "seq", "rbd/" + img,
             timeout=120)
    base = rbd_export(ceph, "rbd/" + img, tmp_path)
    top = str(tmp_path / "top.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", top, "64M"],
                   check=True)
    blockd.cmd("blockdev-add", {
        "driver": "qcow2", "node-name": "top",
        "file": {"driver": "file", "filename": top},
        "backing": rbd_opts(ceph, img, **{"node-name": "base",
                                          "read-only": True})})
    uri = serve(blockd, "top", **{"allocation-depth": True})
    h = connect(uri, "qemu:allocation-depth")
    assert h.pread(4 * MiB, 0) == base[:4 * MiB]
    h.pwrite(b"\x77" * 65536, MiB)
    h.flush()
    depth = []

    def cb(meta, off, entries, err):
        for i in range(0, len(entries), 2):
            depth.append((entries[i], entries[i + 1]))
        return 0

    pos = 0
    while pos < 8 * MiB:
        before = len(depth)
        h.block_status(8 * MiB - pos, pos, cb)
        pos += sum(n for n, _ in depth[before:])
    h.shutdown()
    runs = []
    off = 0
    for n, d in depth:
        runs.append((off, n, d))
        off += n
    for off, n, d in runs:
        for b in range(off, off + n, 65536):
            want = 1 if MiB <= b < MiB + 65536 else 2
            assert d == want, (b, runs)
    # the rbd image is untouched, the overlay has the write
    assert rbd_export(ceph, "rbd/" + img, tmp_path) == base
    blockd.cmd("block-export-del", id="disk")
    blockd.cmd("blockdev-del", node_name="top")
    out = subprocess.run(["qemu-io", "-f", "qcow2", "-c",
                          "read -P 0x77 1M 64K", top], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "verification failed" not in out.stdout


def test_resize(ceph, blockd):
    """block_resize grows the image in Ceph; the export's new clients
    see the new size."""
    rbd_schema(blockd)
    img = new_image(ceph, size="16M")
    blockd.cmd("blockdev-add", rbd_opts(ceph, img, **{"node-name": "r0"}))
    blockd.cmd("block_resize", node_name="r0", size=48 * MiB)
    info = json.loads(ceph.run("rbd", "info", "--format", "json",
                               "rbd/" + img))
    assert info["size"] == 48 * MiB
    uri = serve(blockd, "r0")
    h = connect(uri)
    assert h.get_size() == 48 * MiB
    h.pwrite(b"\x33" * 4096, 48 * MiB - 4096)
    assert h.pread(4096, 48 * MiB - 4096) == b"\x33" * 4096
    h.shutdown()
    nodes = {n["node-name"]: n for n in blockd.cmd("query-named-block-nodes")}
    assert nodes["r0"]["image"]["virtual-size"] == 48 * MiB


def test_snapshot_is_read_only(ceph, blockd, tmp_path):
    """snapshot= opens a Ceph snapshot: its old bytes, read-only."""
    rbd_schema(blockd)
    img = new_image(ceph, size="8M")
    ceph.run("rbd", "bench", "--io-type", "write", "--io-size", "64K",
             "--io-total", "1M", "--io-pattern", "seq", "rbd/" + img,
             timeout=120)
    old = rbd_export(ceph, "rbd/" + img, tmp_path)
    ceph.run("rbd", "snap", "create", "rbd/%s@s1" % img)
    blockd.cmd("blockdev-add", rbd_opts(ceph, img, **{"node-name": "live"}))
    with pytest.raises(QmpError) as e:
        blockd.cmd("blockdev-add", rbd_opts(ceph, img, snapshot="s1",
                                            **{"node-name": "bad"}))
    assert "read-only" in e.value.desc
    blockd.cmd("blockdev-add", rbd_opts(ceph, img, snapshot="s1",
                                        **{"node-name": "snap",
                                           "read-only": True}))
    live = serve(blockd, "live", name="live")
    snap = serve(blockd, "snap", name="snap", writable=False)
    h = connect(live)
    h.pwrite(b"\x99" * MiB, 0)
    h.flush()
    h.shutdown()
    s = connect(snap)
    assert s.is_read_only()
    assert s.pread(8 * MiB, 0) == old
    with pytest.raises(nbd.Error):
        s.pwrite(b"x" * 512, 0)
    s.shutdown()
    nodes = {n["node-name"]: n for n in blockd.cmd("query-named-block-nodes")}
    assert nodes["snap"]["ro"] is True


def test_two_daemons_read_one_image(ceph, blockd_factory, tmp_path):
    """Two blockd daemons serve the same image read-only at once."""
    img = new_image(ceph, size="16M")
    ceph.run("rbd", "bench", "--io-type", "write", "--io-size", "64K",
             "--io-total", "8M", "--io-pattern", "rand", "rbd/" + img,
             timeout=120)
    want = rbd_export(ceph, "rbd/" + img, tmp_path)
    handles = []
    for i in range(2):
        d = blockd_factory()
        rbd_schema(d)
        d.cmd("blockdev-add", rbd_opts(ceph, img, **{"node-name": "r0",
                                                     "read-only": True}))
        handles.append(connect(serve(d, "r0", writable=False)))
    for off in range(0, 16 * MiB, 4 * MiB):
        for h in handles:
            assert h.pread(4 * MiB, off) == want[off:off + 4 * MiB]
    for h in handles:
        h.shutdown()


def test_chain_daemon_b_over_daemon_a(ceph, blockd_factory, tmp_path):
    """Daemon A serves an rbd image; daemon B reaches it with the nbd
    driver under a local qcow2 overlay and serves that."""
    requires("qemu-img")
    img = new_image(ceph, size="16M")
    a = blockd_factory()
    rbd_schema(a)
    a.cmd("blockdev-add", rbd_opts(ceph, img, **{"node-name": "r0"}))
    a_sock = os.path.join(a.sockdir, "nbd.sock")
    serve(a, "r0", name="vol")
    ha = connect("nbd+unix:///vol?socket=" + a_sock)
    ha.pwrite(b"\xa1" * (2 * MiB), 0)
    ha.flush()
    top = str(tmp_path / "b-top.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", top, "16M"],
                   check=True)
    b = blockd_factory()
    b.cmd("blockdev-add", {
        "driver": "qcow2", "node-name": "top",
        "file": {"driver": "file", "filename": top},
        "backing": {"driver": "nbd", "node-name": "remote",
                    "read-only": True, "export": "vol",
                    "server": {"type": "unix", "path": a_sock}}})
    hb = connect(serve(b, "top", **{"allocation-depth": True}))
    assert hb.pread(2 * MiB, 0) == b"\xa1" * (2 * MiB)
    hb.pwrite(b"\xb2" * 65536, MiB)
    hb.flush()
    assert hb.pread(65536, MiB) == b"\xb2" * 65536
    # B's write stays in B's overlay; A (and Ceph) keep theirs.
    assert ha.pread(65536, MiB) == b"\xa1" * 65536
    data = rbd_export(ceph, "rbd/" + img, tmp_path)
    assert data[:2 * MiB] == b"\xa1" * (2 * MiB)
    hb.shutdown()
    ha.shutdown()


def test_options_without_conf(ceph, blockd):
    """server, user, key-secret and auth-client-required instead of a
    ceph.conf (QEMU's way of naming the monitors and the key)."""
    rbd_schema(blockd)
    img = new_image(ceph, size="8M")
    blockd.cmd("object-add", {"qom-type": "secret", "id": "ck",
                              "data": ceph.admin_key})
    o = {"driver": "rbd", "node-name": "r0", "pool": "rbd", "image": img,
         "user": "admin", "key-secret": "ck",
         "auth-client-required": ["cephx"],
         "server": [{"host": "127.0.0.1", "port": str(ceph.mon_port)}]}
    blockd.cmd("blockdev-add", o)
    h = connect(serve(blockd, "r0"))
    h.pwrite(b"\x42" * 4096, 4096)
    assert h.pread(4096, 4096) == b"\x42" * 4096
    h.shutdown()
    # (a wrong key is not tried: librados retries it until
    # client_mount_timeout, 300 s by default, as it does under QEMU)
    with pytest.raises(QmpError) as e:
        blockd.cmd("blockdev-add", dict(o, **{"node-name": "r2",
                                              "key-secret": "nope"}))
    assert "nope" in e.value.desc
    with pytest.raises(QmpError) as e:
        blockd.cmd("blockdev-add", rbd_opts(ceph, "no-such-image",
                                            **{"node-name": "r3"}))
    assert "no-such-image" in e.value.desc


def test_cluster_stopped_under_load(ceph, blockd, tmp_path):
    """The OSD stops (SIGSTOP) with requests in flight.  With a client
    op timeout (rados osd op timeout in the node's conf) they fail with
    an error, the daemon keeps answering QMP and serving its other
    exports; once the OSD is back the same export works again, and
    requests that were waiting without a timeout complete with the
    right data."""
    rbd_schema(blockd)
    img = new_image(ceph, size="16M")
    conf = timeout_conf(ceph, tmp_path)
    # cache.direct: no librbd write-back cache to absorb the write
    blockd.cmd("blockdev-add", rbd_opts(ceph, img, conf=conf,
                                        cache={"direct": True},
                                        **{"node-name": "short"}))
    blockd.cmd("blockdev-add", rbd_opts(ceph, img,
                                        **{"node-name": "patient",
                                           "read-only": True}))
    blockd.cmd("blockdev-add", {"driver": "null-co", "node-name": "n0",
                                "read-zeroes": True})
    short = connect(serve(blockd, "short", name="short"))
    other = connect(serve(blockd, "n0", name="other"))
    short.pwrite(b"\x5e" * MiB, 0)
    short.flush()
    patient = connect(serve(blockd, "patient", name="patient",
                            writable=False))
    assert patient.pread(4096, 0) == b"\x5e" * 4096
    ceph.freeze_osd()
    try:
        bufs = [nbd.Buffer(65536) for _ in range(8)]
        failing = [short.aio_pread(b, i * 65536 + 2 * MiB)
                   for i, b in enumerate(bufs)]
        failing.append(short.aio_pwrite(b"\x01" * 4096, 3 * MiB))
        pbuf = nbd.Buffer(65536)
        waiting = patient.aio_pread(pbuf, 0)
        # the control path and the other export do not wait for Ceph
        blockd.cmd("query-version")
        assert other.pread(4096, 0) == b"\0" * 4096
        # Each completes (none hangs): with an error, or (a read librbd
        # answered without the OSD) with the right bytes.
        errors = 0
        for i, c in enumerate(failing):
            while True:
                try:
                    if short.aio_command_completed(c):
                        if i < len(bufs):
                            assert bytes(bufs[i].to_bytearray()) == \
                                b"\0" * 65536
                        break
                except nbd.Error:
                    errors += 1
                    break
                short.poll(1)
        assert errors >= 1
        stats = {s["node-name"]: s["stats"] for s in
                 blockd.cmd("query-blockstats", {"query-nodes": True})}
        failed = stats["short"]["failed_rd_operations"] + \
            stats["short"]["failed_wr_operations"]
        assert failed == errors
    finally:
        ceph.thaw_osd()
    # the request without a timeout was waiting: it completes now
    while not patient.aio_command_completed(waiting):
        patient.poll(1)
    assert bytes(pbuf.to_bytearray()) == b"\x5e" * 65536
    # and the export whose requests failed serves again
    short.pwrite(b"\x6f" * 4096, 3 * MiB)
    assert short.pread(4096, 3 * MiB) == b"\x6f" * 4096
    assert short.pread(4096, 0) == b"\x5e" * 4096
    for h in (short, other, patient):
        h.shutdown()


SLOT = 65536                     # the restart test writes each slot once


class Load:
    """Reads and writes kept in flight on one libnbd handle: every
    write goes to a fresh 64 KiB slot (a pattern naming the slot), every
    read checks a slot already acknowledged.  Completions are harvested
    by pump(); acked/failed say which writes made it."""

    def __init__(self, h, slots):
        self.h = h
        self.free = list(range(slots))
        self.acked = {}          # slot -> bytes
        self.failed = []         # nbd.Error of every failed command
        self.failed_slots = set()
        self.pending = []        # (cookie, kind, slot, data or buffer)
        self.submitted = 0

    @staticmethod
    def pattern(slot):
        return (b"%06d" % slot) * (SLOT // 6) + b"\xee" * (SLOT % 6)

    def submit(self, writes, reads):
        for _ in range(writes):
            slot = self.free.pop(0)
            data = self.pattern(slot)
            c = self.h.aio_pwrite(data, slot * SLOT)
            self.pending.append((c, "w", slot, data))
        done = sorted(self.acked)
        for i in range(reads if done else 0):
            slot = done[(self.submitted + i) % len(done)]
            buf = nbd.Buffer(SLOT)
            c = self.h.aio_pread(buf, slot * SLOT)
            self.pending.append((c, "r", slot, buf))
        self.submitted += writes + reads

    def flush(self):
        c = self.h.aio_flush()
        self.pending.append((c, "f", None, None))
        return c

    def pump(self, timeout=0.0):
        """Poll once and harvest what completed; returns how many
        commands are still in flight."""
        if self.pending:
            self.h.poll(int(timeout * 1000))
        left = []
        for c, kind, slot, x in self.pending:
            try:
                if not self.h.aio_command_completed(c):
                    left.append((c, kind, slot, x))
                    continue
            except nbd.Error as e:
                self.failed.append(e)
                if kind == "w":
                    self.failed_slots.add(slot)
                continue
            if kind == "w":
                self.acked[slot] = x
            elif kind == "r":
                assert bytes(x.to_bytearray()) == self.acked[slot], slot
        self.pending = left
        return len(left)

    def drain(self, timeout):
        deadline = time.monotonic() + timeout
        while self.pump(1.0) and time.monotonic() < deadline:
            pass
        assert not self.pending, "%d requests still in flight after " \
            "%d s" % (len(self.pending), timeout)


def test_cluster_restarted_under_load(ceph, blockd, tmp_path):
    """The OSD, then the monitor, are stopped by PID while libnbd
    clients read and write two rbd exports.  The export whose node has
    "rados osd op timeout" in its conf gets clean NBD errors (EIO); the
    one with librbd's defaults (no timeout, as QEMU) waits.  Meanwhile
    blockd answers QMP and serves its other export.  Once the cluster
    is back (same data dir and ports) the waiting requests complete,
    new requests succeed on both, and `rbd export` has every write that
    was acknowledged."""
    rbd_schema(blockd)
    slots = 512
    img_p = new_image(ceph, size="%dM" % (slots * SLOT // MiB))
    img_s = new_image(ceph, size="%dM" % (slots * SLOT // MiB))
    conf = timeout_conf(ceph, tmp_path)
    blockd.cmd("blockdev-add", rbd_opts(ceph, img_p,
                                        **{"node-name": "patient"}))
    blockd.cmd("blockdev-add", rbd_opts(ceph, img_s, conf=conf,
                                        cache={"direct": True},
                                        **{"node-name": "short"}))
    blockd.cmd("blockdev-add", {"driver": "null-co", "node-name": "n0",
                                "read-zeroes": True})
    patient = Load(connect(serve(blockd, "patient", name="patient")), slots)
    short = Load(connect(serve(blockd, "short", name="short")), slots)
    other = connect(serve(blockd, "n0", name="other"))
    for load in (patient, short):
        for _ in range(4):
            load.submit(8, 8)
            load.drain(120)
        load.flush()
        load.drain(120)
        assert not load.failed
    # Requests in flight as the OSD goes, more once it is gone.
    for load in (patient, short):
        load.submit(8, 8)
    try:
        ceph.stop_osd()
        for load in (patient, short):
            load.pump()
            load.submit(8, 8)
        patient_flush = patient.flush()
        # the short node's requests end, each with EIO or its data
        short.drain(120)
        assert short.failed
        for e in short.failed:
            assert e.errnum == errno.EIO, e
        # the control path and the other export do not wait for Ceph
        blockd.cmd("query-version")
        assert other.pread(4096, 0) == b"\0" * 4096
        ceph.stop_mon()
        blockd.cmd("query-blockstats", {"query-nodes": True})
        assert other.pread(4096, 4096) == b"\0" * 4096
        patient.pump()
        # a flush after writes the OSD never saw cannot have completed
        assert not patient.h.aio_command_completed(patient_flush)
        assert not patient.failed
    finally:
        if ceph.mon is None:
            ceph.start_mon()
        if ceph.osd is None:
            ceph.start_osd()
    # the waiting requests complete, and both exports take new ones
    patient.drain(300)
    assert not patient.failed
    deadline = time.monotonic() + 300
    while True:
        before = len(short.failed)
        short.submit(4, 4)
        short.drain(120)
        if len(short.failed) == before:
            break
        assert time.monotonic() < deadline, short.failed[-1]
    for load in (patient, short):
        load.submit(8, 8)
        load.flush()
        load.drain(120)
    assert patient.free and short.free
    # Ceph has every acknowledged write
    for load, img in ((patient, img_p), (short, img_s)):
        data = rbd_export(ceph, "rbd/" + img, tmp_path)
        assert len(load.acked) >= 4 * 8 + 4 + 8
        for slot, want in load.acked.items():
            assert data[slot * SLOT:(slot + 1) * SLOT] == want, (img, slot)
        load.h.shutdown()
    other.shutdown()


def test_write_zeroes_no_hole_stays_allocated(ceph, blockd):
    """NBD_CMD_WRITE_ZEROES with NO_HOLE zeroes an object but leaves it
    allocated in Ceph (librbd's thick-provision flag, as QEMU asks);
    without NO_HOLE, on a discard=unmap node, the object goes."""
    rbd_schema(blockd)
    img = new_image(ceph, size="16M")
    blockd.cmd("blockdev-add", rbd_opts(ceph, img, **{"node-name": "r0",
                                                      "discard": "unmap"}))
    h = connect(serve(blockd, "r0"))
    h.pwrite(b"\x11" * (2 * OBJ), 0)
    h.flush()
    assert allocated_runs(ceph, img) == [(0, 2 * OBJ)]
    h.zero(OBJ, 0, nbd.CMD_FLAG_NO_HOLE)
    h.zero(OBJ, OBJ)
    h.flush()
    assert h.pread(2 * OBJ, 0) == b"\0" * (2 * OBJ)
    h.shutdown()
    assert allocated_runs(ceph, img) == [(0, OBJ)]
