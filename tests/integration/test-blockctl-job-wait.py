"""blockctl job-wait ID and --wait: a progress bar from query-jobs and the
job events, the exit status of the job's result, against real jobs
(blockdev-create slowed by a blkdebug delay, a blockdev-backup held by
a blkdebug stall)."""
import os
import subprocess
import time

from conftest import BLOCKCTL, requires

MIB = 1 << 20


def blockctl(blockd, *args, **kw):
    return subprocess.run([BLOCKCTL, "-s", blockd.qmp_path] + list(args),
                          capture_output=True, text=True, timeout=120, **kw)


def slow_node(blockd, path, size, delay_ms=20):
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", path,
                    str(size)], check=True)
    blockd.cmd("blockdev-add", {
        "driver": "blkdebug", "node-name": "dbg",
        "inject-delay": [{"iotype": "write", "delay-ms": delay_ms}],
        "image": {"driver": "file", "filename": path}})


def test_job_wait_create(blockd, tmp_path):
    requires("qemu-img")
    slow_node(blockd, str(tmp_path / "img.raw"), 16 * MIB)
    blockd.cmd("blockdev-create", {"job-id": "c0", "options": {
        "driver": "raw", "file": "dbg", "size": 16 * MIB,
        "preallocation": "full"}})
    r = blockctl(blockd, "job-wait", "c0")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert lines and all(line.startswith("c0: [") for line in lines), lines
    assert "100.0%  16.0 MiB/16.0 MiB" in lines[-1]
    assert lines[-1].endswith("concluded")
    assert "/s  ETA " in lines[-1]
    # The job is left for job-dismiss, as blockdev-create's are.
    assert blockd.cmd("query-jobs")[0]["status"] == "concluded"
    blockd.cmd("job-dismiss", id="c0")


def test_job_wait_failure(blockd, tmp_path):
    requires("qemu-img")
    slow_node(blockd, str(tmp_path / "img.raw"), MIB)
    blockd.cmd("blockdev-create", {"job-id": "c1", "options": {
        "driver": "qcow2", "file": "dbg", "size": 1000}})
    r = blockctl(blockd, "job-wait", "c1")
    assert r.returncode == 1
    assert r.stderr.splitlines()[-1] == \
        "blockctl: job 'c1' failed: Image size must be a multiple of 512 bytes"


def test_wait_option(blockd, tmp_path):
    path = str(tmp_path / "new.raw")
    r = blockctl(blockd, "--wait", "blockdev-create", "job-id=c2",
                 "options.driver=file", "options.filename=" + path,
                 "options.size=4M", "options.preallocation=full")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "{}"
    assert "100.0%  4.0 MiB/4.0 MiB" in r.stderr.splitlines()[-1]
    assert os.path.getsize(path) == 4 * MIB
    r = blockctl(blockd, "--wait", "blockdev-create", "job-id=c3",
                 "options.driver=file", "options.filename=/nonexistent/x",
                 "options.size=0")
    assert r.returncode == 1
    assert "failed: Could not create '/nonexistent/x'" in r.stderr


def test_job_wait_errors(blockd):
    r = blockctl(blockd, "job-wait", "nope")
    assert r.returncode == 1
    assert r.stderr.strip() == "blockctl: Job 'nope' not found"
    r = blockctl(blockd, "job-wait")
    assert r.returncode == 1
    r = blockctl(blockd, "job-wait", "a", "b")
    assert r.returncode == 1
    assert "job-wait takes one job ID" in r.stderr


def backup_held(blockd, tmp_path, job):
    """A backup whose target writes stall: it runs until resumed."""
    requires("qemu-img")
    src = str(tmp_path / "src.raw")
    dst = str(tmp_path / "dst.raw")
    with open(src, "wb") as f:
        f.write(b"\x5a" * (4 * MIB))
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", dst, "4M"],
                   check=True)
    blockd.cmd("blockdev-add", {"driver": "file", "node-name": "src",
                                "filename": src})
    blockd.cmd("blockdev-add", {
        "driver": "blkdebug", "node-name": "dst",
        "stall": [{"iotype": "write", "tag": "w"}],
        "image": {"driver": "file", "filename": dst}})
    blockd.cmd("blockdev-backup", job_id=job, device="src", target="dst",
               sync="full")
    deadline = time.monotonic() + 60
    while blockd.cmd("x-query-blkdebug", node_name="dst")["stalled"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return src, dst


def test_job_wait_backup(blockd, tmp_path):
    """A block job that dismisses itself: the result comes from its
    events."""
    src, dst = backup_held(blockd, tmp_path, "b0")
    p = subprocess.Popen([BLOCKCTL, "-s", blockd.qmp_path, "job-wait", "b0"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        # job-wait has found the job once it prints its first line.
        first = p.stderr.readline()
        assert first.startswith("b0: [")
        blockd.cmd("x-blkdebug-resume", node_name="dst", tag="w")
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    with open(src, "rb") as a, open(dst, "rb") as b:
        assert a.read() == b.read()


def test_job_wait_backup_cancelled(blockd, tmp_path):
    backup_held(blockd, tmp_path, "b1")
    p = subprocess.Popen([BLOCKCTL, "-s", blockd.qmp_path, "job-wait", "b1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        assert p.stderr.readline().startswith("b1: [")
        blockd.cmd("job-cancel", id="b1")
        blockd.cmd("x-blkdebug-resume", node_name="dst", tag="w")
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 1
    assert err.splitlines()[-1] == "blockctl: job 'b1' failed: cancelled"


def test_job_wait_mirror_ready(blockd, tmp_path):
    """A mirror never concludes by itself: job-wait ends (0) once it is
    ready for job-complete."""
    for name in ("s", "d"):
        with open(str(tmp_path / name), "wb") as f:
            f.truncate(4 * MIB)
        blockd.cmd("blockdev-add", driver="raw", node_name=name,
                   file={"driver": "file",
                         "filename": str(tmp_path / name)})
    blockd.cmd("blockdev-mirror", job_id="m", device="s", target="d",
               sync="full")
    r = blockctl(blockd, "job-wait", "m")
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines()[-1].endswith("ready")
    assert blockd.cmd("query-jobs")[0]["status"] == "ready"
    blockd.cmd("job-complete", id="m")
