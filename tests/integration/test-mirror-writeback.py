"""blockdev-mirror starts the target's writeback while it copies, so
its final flush has little left: data copied with copy_file_range into
a file is first allocated (fallocate, KEEP_SIZE: only the copied
ranges, a sparse source still gives a sparse target) and then handed
to sync_file_range(SYNC_FILE_RANGE_WRITE); a target written with
pwrite (a qcow2 target) gets sync_file_range over its whole file.
Seen with strace attached to the daemon; the results are compared with
qemu-img compare (and qemu-img check for qcow2)."""
import os
import re
import subprocess
import time

import pytest

from conftest import requires

MIB = 1 << 20


def run(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True,
                          text=True).stdout


class Strace:
    """strace -f attached to a running daemon, for a few calls."""

    def __init__(self, pid, path, calls):
        self.path = path
        self.proc = subprocess.Popen(
            ["strace", "-ff", "-qq", "-e", "trace=" + calls, "-o", path,
             "-p", str(pid)], stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
        # strace prints nothing once attached (-qq): wait until the
        # daemon shows a tracer.
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace")
                pytest.skip("strace cannot attach here: " + err.strip())
            if self.traced(pid):
                return
            if time.monotonic() > deadline:
                raise TimeoutError("strace did not attach")
            time.sleep(0.05)

    @staticmethod
    def traced(pid):
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("TracerPid:"):
                    return int(line.split()[1]) != 0
        return False

    def stop(self):
        """Detach (by PID) and return the trace: one file per thread
        (-ff), so no call is split by another thread's."""
        self.proc.terminate()
        self.proc.wait(30)
        d, base = os.path.split(self.path)
        out = ""
        for name in sorted(os.listdir(d)):
            if name.startswith(base + "."):
                with open(os.path.join(d, name)) as f:
                    out += f.read()
        return out


def mirror(blockd, src, fmt, dst):
    for name, path in (("src", src), ("dst", dst)):
        blockd.cmd("blockdev-add", {"driver": fmt, "node-name": name,
                                    "file": {"driver": "file",
                                             "filename": path}})
    q = blockd.conn
    blockd.cmd("blockdev-mirror", job_id="m", device="src", target="dst",
               sync="full")
    deadline = time.monotonic() + 120
    while True:
        ev = q.get_event(timeout=max(deadline - time.monotonic(), 0.1))
        if ev["event"] == "BLOCK_JOB_READY":
            blockd.cmd("job-complete", id="m")
        elif ev["event"] == "BLOCK_JOB_COMPLETED":
            assert "error" not in ev["data"], ev
            break
    blockd.cmd("blockdev-del", node_name="src")
    blockd.cmd("blockdev-del", node_name="dst")


def source(path, fmt):
    run("qemu-img", "create", "-q", "-f", fmt, path, str(32 * MIB))
    run("qemu-io", "-f", fmt, "-c", "write -P 0x5a 2M 6M",
        "-c", "write -P 0x17 20M 1M", path)
    return path


def test_mirror_raw_allocates_and_starts_writeback(blockd, tmp_path):
    requires("qemu-img", "qemu-io", "strace")
    src = source(str(tmp_path / "src.raw"), "raw")
    dst = str(tmp_path / "dst.raw")
    run("qemu-img", "create", "-q", "-f", "raw", dst, str(32 * MIB))
    st = Strace(blockd.pid, str(tmp_path / "strace.txt"),
                "fallocate,sync_file_range,copy_file_range")
    mirror(blockd, src, "raw", dst)
    trace = st.stop()
    if "copy_file_range(" not in trace or \
            re.search(r"copy_file_range\(.*= -1 E", trace):
        pytest.skip("copy_file_range does not work between files here")
    # every copied range: allocated first, its writeback started after
    falloc = re.findall(r"fallocate\(\d+, FALLOC_FL_KEEP_SIZE, (\d+), "
                        r"(\d+)\)", trace)
    sfr = re.findall(r"sync_file_range\(\d+, (\d+), (\d+), "
                     r"SYNC_FILE_RANGE_WRITE\)", trace)
    assert falloc, trace
    assert sorted(falloc) == sorted(sfr), trace
    covered = sorted((int(o), int(n)) for o, n in sfr)
    # the 7 MiB written (and the 4 KiB qemu-img create allocates)
    assert 7 * MIB <= sum(n for _, n in covered) <= 7 * MIB + 65536, \
        covered
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", src, dst)
    # KEEP_SIZE and only the data ranges: the target stays as sparse
    assert os.stat(dst).st_size == 32 * MIB
    assert os.stat(dst).st_blocks * 512 <= 8 * MIB


def test_mirror_qcow2_target_starts_writeback(blockd, tmp_path):
    requires("qemu-img", "qemu-io", "strace")
    src = source(str(tmp_path / "src.qcow2"), "qcow2")
    dst = str(tmp_path / "dst.qcow2")
    run("qemu-img", "create", "-q", "-f", "qcow2", dst, str(32 * MIB))
    st = Strace(blockd.pid, str(tmp_path / "strace.txt"),
                "sync_file_range")
    mirror(blockd, src, "qcow2", dst)
    trace = st.stop()
    # the whole target file, once per chunk written
    assert re.search(r"sync_file_range\(\d+, 0, 0, "
                     r"SYNC_FILE_RANGE_WRITE\) = 0", trace), trace
    run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", src, dst)
    run("qemu-img", "check", dst)
