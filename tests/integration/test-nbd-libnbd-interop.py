"""What libnbd's interop/dirty-bitmap and interop/structured-read check
of qemu-nbd (tests/libnbd-interop.sh runs them), here on blockd-nbd
and Debian's qemu-nbd side by side with python3-libnbd:

- block status with REQ_ONE returns the whole run of equal flags, not
  the block layer's first piece (blockd-nbd gave 64 KiB of a 128 KiB
  data run: one qcow2 cluster);
- a short structured read over [zeroes][data] answers a hole chunk and
  a data chunk (blockd-nbd looked for holes in 4 KiB blocks only, so a
  1 KiB read never had one)."""
import subprocess

import nbd
import pytest

from conftest import requires
from qnbd import PROGS, require_qemu_nbd

BOTH = ["blockd-nbd", "qemu-nbd"]


@pytest.fixture(autouse=True)
def _oracle():
    require_qemu_nbd()
    requires("qemu-img", "qemu-io")


def img(*args):
    subprocess.run(list(args), check=True, capture_output=True)


def connect(prog, *args, contexts=()):
    h = nbd.NBD()
    for c in contexts:
        h.add_meta_context(c)
    h.connect_systemd_socket_activation([PROGS[prog]] + list(args))
    return h


@pytest.mark.parametrize("prog", BOTH)
def test_req_one_spans_the_run(prog, tmp_path):
    """interop/dirty-bitmap.sh's image: 128 KiB of data written as two
    64 KiB clusters, a bitmap, zeroes at 512 KiB."""
    p = str(tmp_path / "d.qcow2")
    img("qemu-img", "create", "-f", "qcow2", p, "1M")
    img("qemu-io", "-f", "qcow2", "-c", "w 0 64k", p)
    img("qemu-img", "bitmap", "--add", "--enable", "-f", "qcow2", p, "b0")
    img("qemu-io", "-f", "qcow2", "-c", "w 64k 64k", "-c", "w -z 512k 64k",
        p)
    h = connect(prog, "-f", "qcow2", "-B", "b0", p,
                contexts=["base:allocation", "qemu:dirty-bitmap:b0"])
    seen = {}

    def cb(ctx, off, ents, err):
        seen[ctx] = (off, list(ents))
        return 0
    h.block_status(h.get_size(), 0, cb, nbd.CMD_FLAG_REQ_ONE)
    assert seen == {"base:allocation": (0, [131072, 0]),
                    "qemu:dirty-bitmap:b0": (0, [65536, 0])}
    # Without REQ_ONE: the same first extent, and the whole map.
    seen.clear()
    h.block_status(h.get_size(), 0, cb, 0)
    assert seen["base:allocation"][1][:2] == [131072, 0]
    assert seen["qemu:dirty-bitmap:b0"][1] == [65536, 0, 65536, 1, 393216,
                                              0, 65536, 1, 458752, 0]
    h.shutdown()


@pytest.mark.parametrize("prog", BOTH)
def test_short_read_has_a_hole(prog, tmp_path):
    """interop/structured-read.sh's image: 3 KiB of 1s with a zero
    cluster at 2 KiB; a 1 KiB read at 2 KiB is [hole 512][data 512],
    and with DF one data chunk of 1 KiB."""
    p = str(tmp_path / "s.qcow2")
    img("qemu-img", "create", "-f", "qcow2", "-o",
        "cluster_size=512,compat=v3", p, "3k")
    img("qemu-io", "-d", "unmap", "-f", "qcow2", "-c", "w -P 1 0 3k",
        "-c", "w -zu 2k 512", p)
    h = connect(prog, "-f", "qcow2", p)
    assert h.can_df()
    chunks = []

    def cb(buf, off, status, err):
        chunks.append((status, off, len(buf), bytes(buf[:1])))
        return 0
    h.pread_structured(1024, 2048, cb)
    assert sorted(chunks) == sorted([(nbd.READ_HOLE, 2048, 512, b"\0"),
                                     (nbd.READ_DATA, 2560, 512, b"\1")])
    chunks.clear()
    h.pread_structured(1024, 2048, cb, nbd.CMD_FLAG_DF)
    assert chunks == [(nbd.READ_DATA, 2048, 1024, b"\0")]
    h.shutdown()
