"""blockdev-mirror and active block-commit: a mirror of raw and qcow2
sources while libnbd writes random data through the export, the pivot
on job-complete (the same NBD connection then reads and writes the
target), block-job-cancel in ready (a consistent copy, no pivot),
job-cancel, a failing target (blkdebug) with on-target-error, bad input
with QEMU's messages, and active commit compared with qemu-img commit."""
import os
import random
import shutil
import subprocess
import threading
import time

import nbd
import pytest

from conftest import QmpError, requires

MIB = 1 << 20


def run(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True,
                          text=True).stdout


def make_image(path, fmt, size, backing=None):
    args = ["qemu-img", "create", "-q", "-f", fmt]
    if backing is not None:
        args += ["-b", backing, "-F", "qcow2"]
    run(*args, path, str(size))
    return path


def add_node(blockd, name, path, fmt, backing=True):
    opts = {"driver": fmt, "node-name": name,
            "file": {"driver": "file", "filename": path}}
    if fmt == "qcow2" and not backing:
        opts["backing"] = None
    blockd.cmd("blockdev-add", opts)


def wait_event(q, name, job, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no %s for %s" % (name, job))
        ev = q.get_event(timeout=left)
        data = ev.get("data", {})
        if ev["event"] == name and \
                (data.get("device") == job or data.get("id") == job):
            return ev


def wait_end(q, job, timeout=120):
    """The BLOCK_JOB_COMPLETED/CANCELLED event of job."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("job %s did not end" % job)
        ev = q.get_event(timeout=left)
        if ev["event"] in ("BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED") \
                and ev["data"]["device"] == job:
            return ev


class Writer:
    """Writes random data at random places through an NBD handle and
    keeps a shadow of what the export must hold (acknowledged writes
    only; one writer, so the order is the shadow's order)."""

    def __init__(self, h, shadow, seed):
        self.h = h
        self.shadow = shadow
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.error = None
        self.count = 0
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        size = len(self.shadow)
        try:
            while not self.stop.is_set():
                n = self.rng.choice((4096, 65536, 200 * 1024))
                off = self.rng.randrange(0, size - n) & ~511
                if self.rng.random() < 0.1:
                    self.h.zero(n, off)
                    data = bytes(n)
                else:
                    data = self.rng.randbytes(n)
                    self.h.pwrite(data, off)
                self.shadow[off:off + n] = data
                self.count += 1
        except Exception as e:    # reported by the test
            self.error = e

    def start(self):
        self.thread.start()

    def finish(self):
        self.stop.set()
        self.thread.join(60)
        assert self.error is None, self.error
        assert self.count > 0


def read_all(h, size):
    out = bytearray()
    for off in range(0, size, 4 * MIB):
        out += h.pread(min(4 * MIB, size - off), off)
    return out


def serve(blockd, node):
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    blockd.cmd("nbd-server-start",
               addr={"type": "unix", "data": {"path": sock}})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                    "node-name": node, "name": "e0",
                                    "writable": True})
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///e0?socket=" + sock)
    return h


def export_node(blockd):
    return [e["node-name"] for e in blockd.cmd("query-block-exports")]


@pytest.mark.parametrize("fmt,mode", [("raw", "background"),
                                      ("qcow2", "background"),
                                      ("qcow2", "write-blocking")])
def test_mirror_pivot_under_load(blockd, tmp_path, fmt, mode):
    requires("qemu-img", "qemu-io")
    size = 32 * MIB
    src = make_image(str(tmp_path / "src"), fmt, size)
    run("qemu-io", "-f", fmt, "-c", "write -P 0x5a 0 8M",
        "-c", "write -P 0x33 20M 4M", src)
    dst = make_image(str(tmp_path / "dst"), fmt, size)
    add_node(blockd, "src", src, fmt)
    add_node(blockd, "dst", dst, fmt)
    h = serve(blockd, "src")
    shadow = read_all(h, size)
    w = Writer(h, shadow, seed=hash((fmt, mode)) & 0xffff)
    w.start()
    q = blockd.conn
    blockd.cmd("blockdev-mirror", job_id="m", device="src", target="dst",
               sync="full", copy_mode=mode)
    ready = wait_event(q, "BLOCK_JOB_READY", "m")
    assert ready["data"]["type"] == "mirror"
    jobs = blockd.cmd("query-block-jobs")
    assert jobs[0]["ready"] and jobs[0]["status"] == "ready"
    time.sleep(0.3)                     # writes while ready
    blockd.cmd("job-complete", id="m")
    end = wait_end(q, "m")
    assert end["event"] == "BLOCK_JOB_COMPLETED"
    assert "error" not in end["data"]
    time.sleep(0.2)                     # writes after the pivot
    w.finish()
    assert export_node(blockd) == ["dst"]
    assert blockd.cmd("query-jobs") == []
    # the same connection reads the target: every acknowledged write
    assert read_all(h, size) == shadow
    h.shutdown()
    blockd.cmd("block-export-del", id="e0")
    blockd.cmd("blockdev-del", node_name="src")
    blockd.cmd("blockdev-del", node_name="dst")
    expect = str(tmp_path / "expect")
    with open(expect, "wb") as f:
        f.write(shadow)
    run("qemu-img", "compare", "-f", fmt, "-F", "raw", dst, expect)
    if fmt == "qcow2":
        run("qemu-img", "check", dst)


def test_mirror_soft_cancel_consistent(blockd, tmp_path):
    """block-job-cancel in ready: COMPLETED, no pivot, and the target is
    the source's copy (qemu-img compare)."""
    requires("qemu-img", "qemu-io")
    size = 16 * MIB
    src = make_image(str(tmp_path / "src"), "qcow2", size)
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 1M 3M", src)
    dst = make_image(str(tmp_path / "dst"), "qcow2", size)
    add_node(blockd, "src", src, "qcow2")
    add_node(blockd, "dst", dst, "qcow2")
    h = serve(blockd, "src")
    shadow = read_all(h, size)
    w = Writer(h, shadow, seed=7)
    w.start()
    q = blockd.conn
    blockd.cmd("blockdev-mirror", job_id="m", device="src", target="dst",
               sync="full")
    wait_event(q, "BLOCK_JOB_READY", "m")
    w.finish()
    blockd.cmd("block-job-cancel", device="m")
    end = wait_end(q, "m")
    assert end["event"] == "BLOCK_JOB_COMPLETED"
    assert export_node(blockd) == ["src"]
    h.shutdown()
    blockd.cmd("block-export-del", id="e0")
    blockd.cmd("blockdev-del", node_name="src")
    blockd.cmd("blockdev-del", node_name="dst")
    run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", src, dst)


def test_mirror_force_cancel_and_top(blockd, tmp_path):
    """job-cancel in ready is a hard cancel (CANCELLED, no pivot);
    sync=top copies only the top layer (the target has the same
    backing file)."""
    requires("qemu-img", "qemu-io")
    size = 8 * MIB
    base = make_image(str(tmp_path / "base"), "qcow2", size)
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x01 0 8M", base)
    top = make_image(str(tmp_path / "top"), "qcow2", size, backing=base)
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x02 2M 1M", top)
    dst = make_image(str(tmp_path / "dst"), "qcow2", size, backing=base)
    add_node(blockd, "top", top, "qcow2")
    add_node(blockd, "dst", dst, "qcow2", backing=False)
    q = blockd.conn
    blockd.cmd("blockdev-mirror", job_id="m", device="top", target="dst",
               sync="top", auto_dismiss=False)
    ready = wait_event(q, "BLOCK_JOB_READY", "m")
    assert ready["data"]["len"] == MIB
    blockd.cmd("job-cancel", id="m")
    end = wait_end(q, "m")
    assert end["event"] == "BLOCK_JOB_CANCELLED"
    blockd.cmd("job-dismiss", id="m")
    blockd.cmd("blockdev-del", node_name="top")
    blockd.cmd("blockdev-del", node_name="dst")
    # dst holds only the top layer's 1 MiB, over the same base
    run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", top, dst)
    mapped = run("qemu-img", "map", "--output=json", dst)
    assert '"depth": 0, "present": true, "zero": false, "data": true' \
        in mapped.replace("\n", "")


def test_mirror_bad_input(blockd, tmp_path):
    blockd.cmd("blockdev-add", driver="null-co", node_name="a", size=MIB)
    blockd.cmd("blockdev-add", driver="null-co", node_name="b", size=MIB)
    blockd.cmd("blockdev-add", driver="null-co", node_name="c", size=MIB)
    blockd.cmd("blockdev-add", driver="null-co", node_name="small",
               size=MIB // 2)

    def err(**kw):
        with pytest.raises(QmpError) as e:
            blockd.cmd("blockdev-mirror", **kw)
        return e.value.cls, e.value.desc

    assert err(device="nope", target="b", sync="full") == \
        ("GenericError", "Cannot find device='nope' nor node-name='nope'")
    assert err(device="a", target="nope", sync="full") == \
        ("GenericError", "Cannot find device='nope' nor node-name='nope'")
    assert err(device="a", target="a", sync="full") == \
        ("GenericError", "Can't mirror node into itself")
    assert err(device="a", target="b", sync="bitmap") == \
        ("GenericError", "Sync mode 'bitmap' not supported")
    assert err(device="a", target="b", sync="full", granularity=256) == \
        ("GenericError",
         "Parameter 'granularity' expects a value in range [512B, 64MB]")
    assert err(device="a", target="b", sync="full", granularity=3 * 4096) \
        == ("GenericError", "Parameter 'granularity' expects a power of 2")
    assert err(device="a", target="b", sync="full", buf_size=-1) == \
        ("GenericError", "Invalid parameter 'buf-size'")
    # a job on the node: a second job is refused, as QEMU does
    q = blockd.conn
    blockd.cmd("blockdev-mirror", job_id="m", device="a", target="b",
               sync="full")
    wait_event(q, "BLOCK_JOB_READY", "m")
    assert err(job_id="m2", device="a", target="c", sync="full") == \
        ("GenericError",
         "Node 'a' is busy: block device is in use by block job: mirror")
    assert err(job_id="m2", device="c", target="b", sync="full") == \
        ("GenericError",
         "Node 'b' is busy: block device is in use by block job: mirror")
    with pytest.raises(QmpError) as e:
        blockd.cmd("blockdev-backup", job_id="bk", device="a", target="c",
                   sync="full")
    assert e.value.desc == \
        "Node 'a' is busy: block device is in use by block job: mirror"
    with pytest.raises(QmpError) as e:
        blockd.cmd("blockdev-del", node_name="b")
    assert e.value.desc == "Block device b is in use by block job 'm'"
    blockd.cmd("job-cancel", id="m")
    assert wait_end(q, "m")["event"] == "BLOCK_JOB_CANCELLED"
    # complete before ready: QEMU's verb table
    blockd.cmd("blockdev-mirror", job_id="slow", device="a", target="b",
               sync="full", speed=1, buf_size=65536,
               auto_dismiss=False)
    with pytest.raises(QmpError) as e:
        blockd.cmd("job-complete", id="slow")
    assert e.value.desc == \
        "Job 'slow' in state 'running' cannot accept command verb 'complete'"
    blockd.cmd("job-cancel", id="slow")
    assert wait_end(q, "slow")["event"] == "BLOCK_JOB_CANCELLED"
    blockd.cmd("job-dismiss", id="slow")
    # a target of another size: the job fails, as in QEMU
    blockd.cmd("blockdev-mirror", job_id="sz", device="a", target="small",
               sync="full", auto_dismiss=False)
    end = wait_end(q, "sz")
    assert end["event"] == "BLOCK_JOB_COMPLETED"
    assert end["data"]["error"] == \
        "Source and target image have different sizes"
    assert blockd.cmd("query-jobs")[0]["error"] == \
        "Source and target image have different sizes"
    blockd.cmd("job-dismiss", id="sz")


def test_mirror_target_error(blockd, tmp_path):
    """A target that fails (blkdebug): report ends the job with the
    error, stop pauses it and resume retries to a good end."""
    requires("qemu-img")
    size = 4 * MIB
    src = str(tmp_path / "s")
    with open(src, "wb") as f:
        f.write(random.Random(3).randbytes(size))
    blockd.cmd("blockdev-add", driver="raw", node_name="src",
               file={"driver": "file", "filename": src})
    for action, once in (("report", False), ("stop", True)):
        dst = str(tmp_path / ("d-" + action))
        with open(dst, "wb") as f:
            f.truncate(size)
        blockd.cmd("blockdev-add", {
            "driver": "raw", "node-name": "dst",
            "file": {"driver": "blkdebug", "node-name": "dbg",
                     "inject-error": [{"iotype": "write", "errno": 5,
                                       "once": once}],
                     "image": {"driver": "file", "filename": dst}}})
        q = blockd.conn
        blockd.cmd("blockdev-mirror", job_id="m", device="src",
                   target="dst", sync="full", on_target_error=action)
        ev = wait_event(q, "BLOCK_JOB_ERROR", "m")
        assert ev["data"] == {"device": "m", "operation": "write",
                              "action": action}
        if action == "report":
            end = wait_end(q, "m")
            assert end["event"] == "BLOCK_JOB_COMPLETED"
            assert end["data"]["error"] == "Input/output error"
        else:
            deadline = time.monotonic() + 60
            while True:
                jobs = blockd.cmd("query-block-jobs")
                if jobs[0]["status"] == "paused" and not jobs[0]["busy"]:
                    break
                assert time.monotonic() < deadline, jobs
                time.sleep(0.05)
            assert jobs[0]["io-status"] == "failed"
            blockd.cmd("job-resume", id="m")
            wait_event(q, "BLOCK_JOB_READY", "m")
            blockd.cmd("job-complete", id="m")
            end = wait_end(q, "m")
            assert "error" not in end["data"]
        blockd.cmd("blockdev-del", node_name="dst")
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", src,
        str(tmp_path / "d-stop"))


def test_active_commit_under_load(blockd, tmp_path):
    """block-commit of the active layer an export serves: ready, then
    job-complete pivots the export to base.  base then equals what
    qemu-img commit makes of the same top (the writes during the job
    included) over the original base."""
    requires("qemu-img", "qemu-io")
    size = 16 * MIB
    base = make_image(str(tmp_path / "base"), "qcow2", size)
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x0b 0 16M", base)
    top = make_image(str(tmp_path / "top"), "qcow2", size, backing=base)
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x7c 3M 2M", top)
    base_orig = str(tmp_path / "base-orig")
    shutil.copy(base, base_orig)
    blockd.cmd("blockdev-add", {
        "driver": "qcow2", "node-name": "base", "read-only": False,
        "file": {"driver": "file", "filename": base}})
    blockd.cmd("blockdev-add", {
        "driver": "qcow2", "node-name": "top", "backing": "base",
        "file": {"driver": "file", "filename": top}})
    h = serve(blockd, "top")
    shadow = read_all(h, size)
    w = Writer(h, shadow, seed=11)
    w.start()
    q = blockd.conn
    blockd.cmd("block-commit", job_id="c", device="top")
    ready = wait_event(q, "BLOCK_JOB_READY", "c")
    assert ready["data"]["type"] == "commit"
    time.sleep(0.2)
    w.finish()
    blockd.cmd("job-complete", id="c")
    end = wait_end(q, "c")
    assert end["event"] == "BLOCK_JOB_COMPLETED"
    assert "error" not in end["data"]
    assert export_node(blockd) == ["base"]
    assert read_all(h, size) == shadow
    h.shutdown()
    blockd.cmd("block-export-del", id="e0")
    blockd.cmd("blockdev-del", node_name="top")
    blockd.cmd("blockdev-del", node_name="base")
    # the oracle: qemu-img commit of the same top into the old base
    top_copy = str(tmp_path / "top-copy")
    shutil.copy(top, top_copy)
    run("qemu-img", "rebase", "-u", "-f", "qcow2", "-b", base_orig,
        "-F", "qcow2", top_copy)
    run("qemu-img", "commit", "-q", "-f", "qcow2", top_copy)
    run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", base_orig,
        base)
    run("qemu-img", "check", base)


def test_mirror_sigterm_while_ready(blockd_factory, tmp_path):
    """SIGTERM with a ready mirror (its hook on the source) cancels it
    and the daemon exits 0."""
    size = 8 * MIB
    d = blockd_factory()
    for name in ("s", "d"):
        with open(str(tmp_path / name), "wb") as f:
            f.truncate(size)
        d.cmd("blockdev-add", driver="raw", node_name=name,
              file={"driver": "file", "filename": str(tmp_path / name)})
    q = d.conn
    d.cmd("blockdev-mirror", job_id="m", device="s", target="d",
          sync="full", copy_mode="write-blocking")
    wait_event(q, "BLOCK_JOB_READY", "m")
    assert d.stop() == 0


def test_mirror_nbd_target_dies(blockd, tmp_path):
    """The target is an nbd node whose server (nbdkit) is killed while
    the (rate-limited) mirror copies: BLOCK_JOB_ERROR on a write with
    action report, and the job ends with the error; the source is
    untouched."""
    requires("nbdkit")
    size = 8 * MIB
    src = str(tmp_path / "s")
    with open(src, "wb") as f:
        f.write(random.Random(5).randbytes(size))
    sock = str(tmp_path / "kit.sock")
    kit = subprocess.Popen(["nbdkit", "-f", "-U", sock, "memory", "8M"])
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(sock):
            assert time.monotonic() < deadline, "nbdkit did not start"
            time.sleep(0.02)
        blockd.cmd("blockdev-add", driver="raw", node_name="src",
                   file={"driver": "file", "filename": src})
        blockd.cmd("blockdev-add", {"driver": "nbd", "node-name": "dst",
                                    "server": {"type": "unix",
                                               "path": sock}})
        q = blockd.conn
        blockd.cmd("blockdev-mirror", job_id="m", device="src",
                   target="dst", sync="full", speed=2 * MIB,
                   buf_size=65536, on_target_error="report")
        time.sleep(0.5)
    finally:
        kit.kill()
        kit.wait()
    ev = wait_event(q, "BLOCK_JOB_ERROR", "m")
    assert ev["data"] == {"device": "m", "operation": "write",
                          "action": "report"}
    end = wait_end(q, "m")
    assert end["event"] == "BLOCK_JOB_COMPLETED"
    assert end["data"]["error"]
    assert blockd.cmd("query-jobs") == []
    blockd.cmd("blockdev-del", node_name="dst")
    blockd.cmd("blockdev-del", node_name="src")
    with open(src, "rb") as f:
        assert f.read() == random.Random(5).randbytes(size)
