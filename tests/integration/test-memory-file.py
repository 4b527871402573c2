"""Images on tmpfs: their small requests run on the loop thread
(blockdev/file.c file_in_memory, BLK_INLINE_MAX), large ones on the
pool.  Both paths, through raw and file, must give exactly the bytes a
model of the disk says, with qemu-io reading the file afterwards."""
import os
import random
import subprocess
import tempfile

import pytest

from conftest import requires

SIZE = 16 << 20


@pytest.fixture
def shm_image():
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm on this machine")
    fd, path = tempfile.mkstemp(prefix="blockd-test-", suffix=".img",
                                dir="/dev/shm")
    os.ftruncate(fd, SIZE)
    os.close(fd)
    yield path
    os.unlink(path)


def test_inline_and_pool_requests_agree(blockd, shm_image):
    requires("qemu-io")
    import nbd
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    blockd.cmd("blockdev-add", {"driver": "raw", "node-name": "d0",
                                "file": {"driver": "file",
                                         "filename": shm_image}})
    blockd.cmd("nbd-server-start",
               addr={"type": "unix", "data": {"path": sock}})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                    "node-name": "d0", "writable": True})
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///d0?socket=" + sock)
    model = bytearray(SIZE)
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
    # the file holds what the model holds
    with open(shm_image, "rb") as f:
        assert f.read() == bytes(model)
    r = subprocess.run(["qemu-io", "-r", "-f", "raw", "-U", "-c",
                        "read -P 1 0 512", shm_image],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "Pattern verification failed" not in r.stdout
