"""A large WRITE_ZEROES on a qcow2 image must not stall QMP or the other
clients of the image (issue 9, item 5).

qcow2_pwrite_zeroes held the image's metadata lock for the whole range
and query-named-block-nodes took the same lock on the loop thread, so
one big zero request kept every QMP connection waiting.  Here clients
zero most of the image with the largest requests NBD allows without
extended headers (just under 4 GiB), many in flight, while two QMP
connections sample query-named-block-nodes and query-version, and
another client reads the image in small requests (on tmpfs those run on
the loop thread and take the same lock).  Afterwards the image must be
consistent and read as zeroes where it was zeroed, as QEMU sees it."""
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import requires
from liveness import QmpSampler

BOUND = 2.0              # seconds: a liveness bound, not a speed test
MAX_REQ = (4 << 30) - (1 << 16)


@pytest.fixture
def img_dir():
    # tmpfs puts the image's small requests on the loop thread
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    d = tempfile.mkdtemp(prefix="blockd-test-", dir=base)
    yield d
    shutil.rmtree(d)


def run(*args):
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, "%s: %s%s" % (args, r.stdout, r.stderr)
    return r.stdout


class Reader(threading.Thread):
    """Small reads from another client; records the slowest."""

    def __init__(self, uri, size):
        super().__init__(daemon=True)
        import nbd
        self.h = nbd.NBD()
        self.h.connect_uri(uri)
        self.size = size
        self.worst = 0.0
        self.count = 0
        self.stop = threading.Event()
        self.error = None

    def run(self):
        off = 0
        try:
            while not self.stop.is_set():
                t0 = time.monotonic()
                self.h.pread(4096, off)
                self.worst = max(self.worst, time.monotonic() - t0)
                self.count += 1
                off = (off + (1 << 30) + 4096) % (self.size - 4096)
                self.stop.wait(0.01)
        except Exception as e:
            self.error = e


# image size, cluster size, qemu-img preallocation, bytes to zero,
# bytes per zero request
CASES = {
    # the case: a fresh 1 TiB image, default clusters, zeroed
    # nearly whole with the largest requests
    "1T": (1 << 40, 65536, "off", (1 << 40) - (64 << 20), MAX_REQ),
    # every cluster mapped: each request changes 256 K L2 entries
    "16G-16K-prealloc": (16 << 30, 16384, "metadata",
                         (16 << 30) - (1 << 20), MAX_REQ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_big_qcow2_zero_leaves_qmp_and_readers_responsive(
        blockd, img_dir, case):
    requires("qemu-img", "qemu-io")
    import nbd
    size, cluster, prealloc, zero_len, req_len = CASES[case]
    path = os.path.join(img_dir, "big.qcow2")
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o",
        "cluster_size=%d,preallocation=%s" % (cluster, prealloc), path,
        str(size))
    # data inside the range to zero (it must become zero) and past it
    # (it must stay)
    data_in = [i * (zero_len // 8) + 3 * cluster for i in range(8)]
    data_out = [zero_len + cluster, size - 8192]
    cmds = []
    for off in data_in + data_out:
        cmds += ["-c", "write -q -P 0x5a %d 8192" % off]
    run("qemu-io", "-f", "qcow2", *cmds, path)

    sock = os.path.join(blockd.sockdir, "nbd.sock")
    blockd.cmd("blockdev-add", {"driver": "qcow2", "node-name": "d0",
                                "discard": "unmap",
                                "file": {"driver": "file",
                                         "filename": path}})
    blockd.cmd("nbd-server-start",
               addr={"type": "unix", "data": {"path": sock}})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                    "node-name": "d0", "writable": True})
    uri = "nbd+unix:///d0?socket=" + sock
    writers = []
    for _ in range(2):
        h = nbd.NBD()
        h.connect_uri(uri)
        writers.append(h)
    reader = Reader(uri, size)

    with QmpSampler(blockd.qmp(), ["query-named-block-nodes"]) as nodes, \
            QmpSampler(blockd.qmp(), ["query-version"]) as version:
        reader.start()
        t0 = time.monotonic()
        off, i = 0, 0
        while off < zero_len:
            n = min(req_len, zero_len - off)
            h = writers[i % 2]
            h.aio_zero(n, off, flags=nbd.CMD_FLAG_NO_HOLE if i % 3 == 0
                       else 0)
            off += n
            i += 1
            while h.aio_in_flight() >= 8:
                h.poll(-1)
        for h in writers:
            while h.aio_in_flight() > 0:
                h.poll(-1)
        t_zero = time.monotonic() - t0
        reader.stop.set()
        reader.join(60)
    print("%s: %d zero requests took %.2f s; slowest answers: "
          "query-named-block-nodes %.3f s (%d), query-version %.3f s "
          "(%d), 4 KiB read %.3f s (%d)"
          % (case, i, t_zero, nodes.worst(), nodes.count(),
             version.worst(), version.count(), reader.worst, reader.count))
    assert reader.error is None, reader.error
    assert nodes.worst() < BOUND, \
        "query-named-block-nodes stalled %.2f s" % nodes.worst()
    assert version.worst() < BOUND, \
        "query-version stalled %.2f s" % version.worst()
    assert reader.worst < BOUND, "a 4 KiB read stalled %.2f s" % reader.worst

    for h in writers:
        h.shutdown()
    reader.h.shutdown()
    blockd.cmd("block-export-del", id="e0")
    blockd.conn.get_event("BLOCK_EXPORT_DELETED")
    blockd.cmd("blockdev-del", node_name="d0")

    # QEMU's view: consistent, zero where zeroed, data where it was not
    run("qemu-img", "check", "-q", path)
    cmds = []
    for off in data_in:
        cmds += ["-c", "read -q -P 0 %d 8192" % off]
    for off in data_out:
        cmds += ["-c", "read -q -P 0x5a %d 8192" % off]
    out = run("qemu-io", "-f", "qcow2", *cmds, path)
    assert "Pattern verification failed" not in out, out
    extents = json.loads(run("qemu-img", "map", "--output=json", path))
    for e in extents:
        if e["start"] < zero_len:
            assert e["zero"] and not e["data"], e
