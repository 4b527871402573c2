"""One large WRITE_ZEROES or TRIM on a memory-backed file must not
freeze the daemon (issue 9, item 4).

Requests on nodes that never wait for a device (a file on tmpfs) run
on the loop thread when they are small (BLK_INLINE_MAX).  The cap used
to apply to READ and WRITE only: a 1 GiB NO_HOLE zero request, which
tmpfs can only do by writing zero buffers, ran on the loop thread and
QMP went unanswered for seconds.  Here a second QMP connection samples
query-version while one client zeroes and trims the whole export; every
answer must come within a generous bound."""
import os
import time

from liveness import QmpSampler

SIZE = 1 << 30
BOUND = 1.5          # seconds: a liveness bound, not a speed test


def test_large_zero_and_trim_leave_qmp_responsive(blockd, shm_dir):
    import nbd
    path = os.path.join(shm_dir, "disk.raw")
    with open(path, "wb") as f:
        f.truncate(SIZE)
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    blockd.cmd("blockdev-add", {"driver": "raw", "node-name": "d0",
                                "discard": "unmap",
                                "file": {"driver": "file",
                                         "filename": path,
                                         "discard": "unmap"}})
    blockd.cmd("nbd-server-start",
               addr={"type": "unix", "data": {"path": sock}})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                    "node-name": "d0", "writable": True})
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///d0?socket=" + sock)
    h.pwrite(b"\xaa" * 65536, SIZE - 65536)

    with QmpSampler(blockd.qmp(), ["query-version"]) as s:
        t0 = time.monotonic()
        # NO_HOLE: tmpfs has no FALLOC_FL_ZERO_RANGE, so this writes
        # 1 GiB of zero buffers.
        h.zero(SIZE, 0, nbd.CMD_FLAG_NO_HOLE)
        t_zero = time.monotonic() - t0
        n_zero = s.count()
        assert os.stat(path).st_blocks * 512 >= SIZE, "NO_HOLE made holes"
        h.trim(SIZE, 0)
        h.zero(SIZE, 0)
    print("zero took %.2f s; %d QMP answers, the slowest %.3f s"
          % (t_zero, s.count(), s.worst()))
    assert s.worst() < BOUND, \
        "QMP stalled %.2f s behind a zero/trim request" % s.worst()
    assert n_zero >= 2, "QMP was not sampled during the zero request"
    assert h.pread(65536, SIZE - 65536) == bytes(65536)
    assert h.pread(1 << 20, 0) == bytes(1 << 20)
    h.shutdown()
