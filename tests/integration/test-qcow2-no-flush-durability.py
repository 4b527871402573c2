"""cache.no-flush=on skips only the host's fdatasync: an acknowledged
FLUSH still writes qcow2's cached L2 and refcount tables to the file
(as QEMU does), so a flushed write survives kill -9 of the daemon.

Regression: the flush returned before the cached L2 table reached the
file, and the write at 2 MiB read back as zeroes after the kill."""
import os
import signal
import subprocess

import nbd

MIB = 1 << 20


def test_flushed_writes_survive_kill_with_no_flush(blockd_factory, tmp_path):
    img = str(tmp_path / "a.qcow2")
    subprocess.run(["qemu-img", "create", "-f", "qcow2", img, "64M"],
                   check=True, capture_output=True)
    d = blockd_factory()
    d.cmd("blockdev-add", {"driver": "qcow2", "node-name": "q0",
                           "cache": {"no-flush": True},
                           "file": {"driver": "file", "filename": img}})
    sock = os.path.join(d.sockdir, "nbd.sock")
    d.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": sock}})
    d.cmd("block-export-add", {"type": "nbd", "id": "e0", "node-name": "q0",
                               "name": "q0", "writable": True})
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///q0?socket=%s" % sock)
    a = b"\xa5" * 65536
    b = b"\x5a" * 65536
    h.pwrite(a, 0)
    h.flush()
    h.pwrite(b, 2 * MIB)
    h.flush()
    # Every write above was followed by an acknowledged FLUSH.
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    del h

    # The metadata tables are in the file: qemu-img sees both writes
    # (leaked clusters are allowed after a crash, corruption is not).
    chk = subprocess.run(["qemu-img", "check", img], capture_output=True,
                         text=True)
    assert chk.returncode in (0, 3), chk.stdout + chk.stderr
    for off, data in ((0, a), (2 * MIB, b)):
        out = subprocess.run(
            ["qemu-io", "-f", "qcow2", "-c",
             "read -P 0x%02x %d %d" % (data[0], off, len(data)), img],
            capture_output=True, text=True)
        assert "Pattern verification failed" not in out.stdout, \
            "write at %d lost: %s" % (off, out.stdout)
        assert "read %d/%d bytes" % (len(data), len(data)) in out.stdout, \
            out.stdout
