"""blockd --job-nice N: block jobs copy on threads N nice steps below
the daemon's own priority (default 10, test-mirror-writeback.py); with
0 no thread of the daemon runs below it.  Seen in /proc/PID/task/*/stat
while a mirror job is running (ready, not yet completed) and after it
completed; bad values stop start-up with exit status 1."""
import os
import subprocess
import time

import pytest

from conftest import BLOCKD

MIB = 1 << 20


def thread_nices(pid):
    """{tid: nice} of a process's threads."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue                    # the thread just ended
        out[int(tid)] = int(fields[16])
    return out


def images(tmp_path):
    src = str(tmp_path / "src.raw")
    dst = str(tmp_path / "dst.raw")
    with open(src, "wb") as f:
        for _ in range(8):
            f.write(os.urandom(MIB))
    with open(dst, "wb") as f:
        f.truncate(8 * MIB)
    return src, dst


def mirror_nices(blockd, tmp_path):
    """Mirror a file to another; {tid: nice} of the daemon's threads
    once the job is ready (running: it copied everything and mirrors new
    writes until job-complete), and once it completed."""
    src, dst = images(tmp_path)
    for name, path in (("src", src), ("dst", dst)):
        blockd.cmd("blockdev-add", {"driver": "raw", "node-name": name,
                                    "file": {"driver": "file",
                                             "filename": path}})
    blockd.cmd("blockdev-mirror", job_id="m", device="src", target="dst",
               sync="full")
    running = None
    deadline = time.monotonic() + 30
    while True:
        ev = blockd.conn.get_event(
            timeout=max(deadline - time.monotonic(), 0.1))
        if ev["event"] == "BLOCK_JOB_READY":
            jobs = blockd.cmd("query-block-jobs")
            assert [j["device"] for j in jobs] == ["m"], jobs
            running = thread_nices(blockd.pid)
            blockd.cmd("job-complete", id="m")
        elif ev["event"] == "BLOCK_JOB_COMPLETED":
            assert "error" not in ev["data"], ev
            break
    done = thread_nices(blockd.pid)
    blockd.cmd("blockdev-del", node_name="src")
    blockd.cmd("blockdev-del", node_name="dst")
    with open(src, "rb") as a, open(dst, "rb") as b:
        assert a.read() == b.read()
    assert running is not None
    return running, done


def test_job_nice_3(blockd_factory, tmp_path):
    """--job-nice 3: the job's threads run three steps below the daemon;
    the main thread and the request pool stay at its priority."""
    blockd = blockd_factory("--job-nice", "3")
    base = thread_nices(blockd.pid)[blockd.pid]
    want = min(19, base + 3)
    for nices in mirror_nices(blockd, tmp_path):
        assert nices[blockd.pid] == base, nices
        assert want in nices.values(), nices
        assert set(nices.values()) <= {base, want}, nices
        assert base in [n for t, n in nices.items() if t != blockd.pid], \
            nices


def test_job_nice_0(blockd_factory, tmp_path):
    """--job-nice 0: jobs copy at the daemon's own priority; no thread
    is below it while a job runs or after."""
    blockd = blockd_factory("--job-nice", "0")
    base = thread_nices(blockd.pid)[blockd.pid]
    for nices in mirror_nices(blockd, tmp_path):
        assert len(nices) > 1, nices
        assert set(nices.values()) == {base}, nices


@pytest.mark.parametrize("value", ["", "abc", "-1", "20", "5x",
                                   "99999999999999999999"])
def test_bad_job_nice_exits_1(value):
    r = subprocess.run([BLOCKD, "--job-nice", value], capture_output=True,
                       text=True, timeout=20, stdin=subprocess.DEVNULL)
    assert r.returncode == 1, r
    assert r.stderr.startswith(
        "blockd: --job-nice: '%s' is not an integer from 0 to 19" % value), \
        r.stderr


def test_help_lists_job_nice():
    r = subprocess.run([BLOCKD, "--help"], capture_output=True, text=True,
                       timeout=20, stdin=subprocess.DEVNULL)
    assert r.returncode == 0
    assert "--job-nice N" in r.stdout
