"""Images on tmpfs: their small requests run on the loop thread
(blockdev/file.c file_in_memory, BLK_INLINE_MAX), large ones on the
pool.  Both paths, through raw, qcow2 and a qcow2 overlay over a qcow2
backing file, must give exactly the bytes a model of the disk says;
afterwards qemu-img checks the image and compares it with the model."""
import os
import random
import subprocess

import pytest

from conftest import requires

SIZE = 16 << 20


def qemu_img(*args):
    r = subprocess.run(["qemu-img", *args], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


def make_image(shm_dir, fmt, model):
    """Create the image; returns (blockdev-add options, path)."""
    path = os.path.join(shm_dir, "disk." + fmt)
    if fmt == "raw":
        with open(path, "wb") as f:
            f.truncate(SIZE)
        return {"driver": "raw", "node-name": "d0",
                "file": {"driver": "file", "filename": path}}, path
    if fmt == "qcow2":
        qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=4k",
                 path, str(SIZE))
        return {"driver": "qcow2", "node-name": "d0",
                "file": {"driver": "file", "filename": path}}, path
    # an overlay over a backing file with data in its first half
    base = os.path.join(shm_dir, "base.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", base, str(SIZE))
    r = subprocess.run(["qemu-io", "-f", "qcow2", "-c",
                        "write -P 0x5a 0 %d" % (SIZE // 2), base],
                       capture_output=True, text=True)
    assert r.returncode == 0
    model[0:SIZE // 2] = b"\x5a" * (SIZE // 2)
    path = os.path.join(shm_dir, "overlay.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2",
             path)
    return {"driver": "qcow2", "node-name": "d0",
            "file": {"driver": "file", "filename": path}}, path


@pytest.mark.parametrize("fmt", ["raw", "qcow2", "qcow2-backing"])
def test_inline_and_pool_requests_agree(blockd, shm_dir, fmt):
    requires("qemu-io", "qemu-img")
    import nbd
    model = bytearray(SIZE)
    opts, path = make_image(shm_dir, fmt, model)
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    blockd.cmd("blockdev-add", opts)
    blockd.cmd("nbd-server-start",
               addr={"type": "unix", "data": {"path": sock}})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                    "node-name": "d0", "writable": True})
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///d0?socket=" + sock)
    rng = random.Random(7)
    # sizes on both sides of the 128 KiB inline limit
    sizes = [512, 4096, 65536, 128 << 10, (128 << 10) + 512, 1 << 20]
    for i in range(400):
        n = rng.choice(sizes)
        off = rng.randrange(0, SIZE - n + 1) & ~511
        op = rng.random()
        if op < 0.5:
            data = bytes([rng.randrange(256)]) * n
            h.pwrite(data, off, nbd.CMD_FLAG_FUA if i % 7 == 0 else 0)
            model[off:off + n] = data
        elif op < 0.65:
            h.zero(n, off)
            model[off:off + n] = bytes(n)
        elif op < 0.7:
            h.flush()
        else:
            assert h.pread(n, off) == bytes(model[off:off + n]), (off, n)
    # concurrent requests of mixed sizes in flight at once (they do not
    # overlap: the order of overlapping writes in flight is undefined)
    bufs = []
    for i in range(32):
        n = min(sizes[i % len(sizes)], SIZE // 32)
        off = (i * (SIZE // 32)) & ~511
        data = bytes([i + 1]) * n
        bufs.append(h.aio_pwrite(data, off))
        model[off:off + n] = data
    while h.aio_in_flight() > 0:
        h.poll(-1)
    h.flush()
    assert h.pread(SIZE, 0) == bytes(model)
    h.shutdown()
    blockd.cmd("block-export-del", id="e0")
    blockd.conn.get_event("BLOCK_EXPORT_DELETED")
    blockd.cmd("blockdev-del", node_name="d0")
    # the image holds what the model holds, as QEMU reads it
    ref = os.path.join(shm_dir, "model.raw")
    with open(ref, "wb") as f:
        f.write(model)
    if fmt != "raw":
        qemu_img("check", path)
    qemu_img("compare", "-q", "-f", "raw" if fmt == "raw" else "qcow2",
             "-F", "raw", path, ref)
