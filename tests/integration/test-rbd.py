"""The "rbd" block driver against a real one-node Ceph cluster
(cephcluster.py: a monitor and a memstore OSD on 127.0.0.1, started
once for this file and stopped by PID at the end).  Images are made
and checked with Ceph's own rbd tool; blockd serves them over NBD to
real clients (python3-libnbd, qemu-io, nbdinfo).
"""
import json
import os
import shutil
import subprocess
import tempfile
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
    """Skip unless this blockd was built with the rbd driver."""
    drivers = blockd.cmd("query-qmp-schema")
    for t in drivers:
        if t.get("name") == "BlockdevDriver":
            if "rbd" not in t["values"]:
                pytest.skip("blockd was built without librbd (-Drbd)")
            return


def new_image(ceph, size="64M", name=None):
    name = name or "img-" + uuid.uuid4().hex[:8]
    ceph.run("rbd", "create", "--size", size, "rbd/" + name)
    return name


def rbd_opts(ceph, image, **extra):
    o = {"driver": "rbd", "pool": "rbd", "image": image, "conf": ceph.conf}
    o.update(extra)
    return o


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
