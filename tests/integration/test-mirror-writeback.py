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

    def __init__(self, pid, path, calls, extra=()):
        self.path = path
        self.proc = subprocess.Popen(
            ["strace", "-ff", "-qq", *extra, "-e", "trace=" + calls,
             "-o", path, "-p", str(pid)], stdout=subprocess.DEVNULL,
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


def full_source(path, size):
    with open(path, "wb") as f:
        for _ in range(size // MIB):
            f.write(os.urandom(MIB))
    return path


def test_mirror_kernel_copy_one_chunk_at_a_time(blockd, tmp_path):
    """Once a chunk went through copy_file_range, the job copies one
    chunk at a time, of 8 MiB: more writers of one file only wait on
    its lock."""
    requires("qemu-img", "strace")
    src = full_source(str(tmp_path / "src.raw"), 64 * MIB)
    dst = str(tmp_path / "dst.raw")
    run("qemu-img", "create", "-q", "-f", "raw", dst, str(64 * MIB))
    st = Strace(blockd.pid, str(tmp_path / "strace.txt"),
                "copy_file_range", extra=["-ttt", "-T"])
    mirror(blockd, src, "raw", dst)
    trace = st.stop()
    calls = []
    for m in re.finditer(r"^(\d+\.\d+) copy_file_range\(\d+, \[\d+\], "
                         r"\d+, \[\d+\], (\d+), 0\) = (-?\d+).*"
                         r"<(\d+\.\d+)>$", trace, re.M):
        start, length, ret, secs = m.groups()
        calls.append((float(start), float(start) + float(secs),
                      int(length), int(ret)))
    if not calls or any(ret < 0 for *_, ret in calls):
        pytest.skip("copy_file_range does not work between files here")
    calls.sort()
    big = [i for i, c in enumerate(calls) if c[2] == 8 * MIB]
    assert len(big) >= 5, calls       # 64 MiB less the first chunks
    later = calls[big[0]:]
    for a, b in zip(later, later[1:]):
        assert b[0] >= a[1], ("two copies at once", a, b)
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", src, dst)


def test_mirror_walks_source_once(blockd, shm_dir):
    """The chunks that start together ask the source's block status at
    once; on tmpfs SEEK_HOLE walks every page up to the next hole, and
    one walk answers them all."""
    requires("qemu-img", "strace")
    src = full_source(os.path.join(shm_dir, "src.raw"), 128 * MIB)
    dst = os.path.join(shm_dir, "dst.raw")
    run("qemu-img", "create", "-q", "-f", "raw", dst, str(128 * MIB))
    st = Strace(blockd.pid, os.path.join(shm_dir, "strace.txt"), "lseek")
    mirror(blockd, src, "raw", dst)
    trace = st.stop()
    walks = re.findall(r"lseek\(\d+, \d+, SEEK_HOLE\)", trace)
    assert len(walks) <= 1, trace        # none where cachestat answers
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", src, dst)


def thread_nices(pid):
    """{tid: nice} of a process's threads."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        out[int(tid)] = int(fields[16])
    return out


def test_job_copies_at_lower_priority(blockd, tmp_path):
    """Jobs copy on threads ten nice steps below the daemon's own, so an
    export's clients keep their share of the cores; the main thread and
    the request pool keep the daemon's priority."""
    requires("qemu-img")
    src = full_source(str(tmp_path / "src.raw"), 16 * MIB)
    dst = str(tmp_path / "dst.raw")
    run("qemu-img", "create", "-q", "-f", "raw", dst, str(16 * MIB))
    base = thread_nices(blockd.pid)[blockd.pid]
    mirror(blockd, src, "raw", dst)
    nices = thread_nices(blockd.pid)
    assert nices[blockd.pid] == base
    assert min(19, base + 10) in nices.values(), nices
    assert base in [n for t, n in nices.items() if t != blockd.pid], nices
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", src, dst)
