"""blockdev-backup and the job model: full and incremental backups
checked with qemu-img (compare, map), copy-before-write under libnbd
writes, a failing target (blkdebug) with each on-target-error action,
the job verbs in the wrong state, bad input, and SIGTERM with a job
running."""
import json
import os
import time

import nbd
import pytest

from chain import MIB, qcow2, run
from conftest import QmpError, requires


def add_qcow2(blockd, name, path, backing=True):
    opts = {"driver": "qcow2", "node-name": name,
            "file": {"driver": "file", "filename": path}}
    if not backing:
        opts["backing"] = None
    blockd.cmd("blockdev-add", opts)


def wait_job_end(q, job, dismissed=True, timeout=60):
    """Events of job until it is gone (dismissed) or concluded: (the
    BLOCK_JOB_COMPLETED/CANCELLED event, the statuses seen)."""
    statuses = []
    end = None
    last = "null" if dismissed else "concluded"
    deadline = time.monotonic() + timeout
    while not statuses or statuses[-1] != last:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("job %s did not end; saw %s" % (job, statuses))
        ev = q.get_event(timeout=left)
        data = ev.get("data", {})
        if ev["event"] == "JOB_STATUS_CHANGE" and data["id"] == job:
            statuses.append(data["status"])
        elif ev["event"] in ("BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED") \
                and data["device"] == job:
            end = ev
    return end, statuses


def write_pattern(path, size, seed):
    """Fill a raw file with a byte pattern that differs per MiB."""
    with open(path, "wb") as f:
        for i in range(size // MIB):
            f.write(bytes([(seed + i) & 0xff]) * MIB)


def test_full_backup(blockd, tmp_path):
    requires("qemu-img", "qemu-io")
    src = qcow2(str(tmp_path / "src.qcow2"), 32 * MIB)
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 3M",
        "-c", "write -P 0x22 10M 1M", "-c", "write -P 0x33 31M 1M", src)
    dst = qcow2(str(tmp_path / "dst.qcow2"), 32 * MIB)
    add_qcow2(blockd, "src", src)
    add_qcow2(blockd, "dst", dst)
    q = blockd.conn
    blockd.cmd("blockdev-backup", job_id="j0", device="src", target="dst",
               sync="full")
    end, statuses = wait_job_end(q, "j0")
    assert end["event"] == "BLOCK_JOB_COMPLETED"
    assert "error" not in end["data"]
    assert end["data"]["type"] == "backup"
    assert end["data"]["len"] == end["data"]["offset"] == 32 * MIB
    assert statuses == ["created", "running", "waiting", "pending",
                        "concluded", "null"]
    assert blockd.cmd("query-jobs") == []
    blockd.cmd("blockdev-del", node_name="src")
    blockd.cmd("blockdev-del", node_name="dst")
    run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", src, dst)
    run("qemu-img", "check", dst)


def test_incremental_backup(blockd, tmp_path):
    """full (clearing the bitmap), writes through an export with
    qemu-io, then an incremental that holds exactly the dirty clusters;
    the chain full <- inc equals the source."""
    requires("qemu-img", "qemu-io")
    size = 16 * MIB
    src = qcow2(str(tmp_path / "src.qcow2"), size)
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x41 0 16M", src)
    full = qcow2(str(tmp_path / "full.qcow2"), size)
    add_qcow2(blockd, "src", src)
    add_qcow2(blockd, "full", full)
    blockd.cmd("block-dirty-bitmap-add", {"node": "src", "name": "b0",
                                          "granularity": 65536})
    # dirty the bitmap before the full backup: the full one clears it
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    blockd.cmd("nbd-server-start",
               addr={"type": "unix", "data": {"path": sock}})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                    "node-name": "src", "name": "e0",
                                    "writable": True})
    uri = "nbd+unix:///e0?socket=" + sock
    run("qemu-io", "-f", "raw", "-c", "write -P 0x42 0 64k", uri)
    q = blockd.conn
    blockd.cmd("blockdev-backup", job_id="full", device="src",
               target="full", sync="full", bitmap="b0",
               bitmap_mode="on-success")
    end, _ = wait_job_end(q, "full")
    assert "error" not in end["data"]
    bm = blockd.cmd("query-named-block-nodes", flat=True)
    counts = {b["name"]: b["count"] for n in bm if n["node-name"] == "src"
              for b in n.get("dirty-bitmaps", [])}
    assert counts == {"b0": 0}
    blockd.cmd("blockdev-del", node_name="full")

    # writes through the export: 64 KiB at 1 MiB, 4 KiB at 5 MiB + 8 KiB
    # (one cluster), 200 KiB at 9 MiB - 100 KiB (spans 4 clusters)
    run("qemu-io", "-f", "raw", "-c", "write -P 0x51 1M 64k",
        "-c", "write -P 0x52 5128k 4k",
        "-c", "write -P 0x53 9116k 200k", uri)
    inc = qcow2(str(tmp_path / "inc.qcow2"), size, backing=full)
    add_qcow2(blockd, "inc", inc, backing=False)
    blockd.cmd("blockdev-backup", job_id="inc", device="src",
               target="inc", sync="incremental", bitmap="b0")
    end, _ = wait_job_end(q, "inc")
    assert "error" not in end["data"]
    assert end["data"]["len"] == (1 + 1 + 4) * 65536
    blockd.cmd("blockdev-del", node_name="inc")
    blockd.cmd("block-export-del", id="e0")
    bm = blockd.cmd("query-named-block-nodes", flat=True)
    counts = {b["name"]: b["count"] for n in bm if n["node-name"] == "src"
              for b in n.get("dirty-bitmaps", [])}
    assert counts == {"b0": 0}
    # the incremental image allocates exactly the dirty clusters
    m = json.loads(run("qemu-img", "map", "--output=json", "-f", "qcow2",
                       inc))
    alloc = [(e["start"], e["length"]) for e in m
             if e["depth"] == 0 and e["data"]]
    assert alloc == [(1 * MIB, 65536), (5 * MIB, 65536),
                     (9 * MIB - 128 * 1024, 4 * 65536)]
    # full <- inc rebases to the source
    blockd.cmd("blockdev-del", node_name="src")
    run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", inc, src)


def writes_during_backup_setup(blockd, tmp_path, size, src_opts):
    """A patterned source (node "src" from src_opts, given its file), a
    copy of it as it was, an empty raw target (node "dst") and a
    writable export "e0" of src: (src, orig, dst, sock)."""
    src = str(tmp_path / "src.raw")
    write_pattern(src, size, 1)
    orig = str(tmp_path / "orig.raw")
    with open(src, "rb") as a, open(orig, "wb") as b:
        b.write(a.read())
    dst = str(tmp_path / "dst.raw")
    with open(dst, "wb") as f:
        f.truncate(size)
    blockd.cmd("blockdev-add", dict(src_opts(src), **{"node-name": "src"}))
    blockd.cmd("blockdev-add", driver="raw", node_name="dst",
               file={"driver": "file", "filename": dst})
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    blockd.cmd("nbd-server-start",
               addr={"type": "unix", "data": {"path": sock}})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                    "node-name": "src", "name": "e0",
                                    "writable": True})
    return src, orig, dst, sock


def finish_and_compare(blockd, h, orig, dst):
    """The end of a writes-during-backup test: job "j" ends without an
    error, the client h and the setup's export and nodes go, and the
    target matches the source as it was (orig)."""
    end, _ = wait_job_end(blockd.conn, "j")
    assert "error" not in end["data"]
    h.shutdown()
    blockd.cmd("block-export-del", id="e0")
    blockd.cmd("blockdev-del", node_name="src")
    blockd.cmd("blockdev-del", node_name="dst")
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", orig, dst)


def test_writes_during_backup_keep_point_in_time(blockd, tmp_path):
    """libnbd overwrites the whole source while a slow (rate-limited)
    backup runs: the target holds the data of the start."""
    requires("qemu-img")
    size = 8 * MIB
    src, orig, dst, sock = writes_during_backup_setup(
        blockd, tmp_path, size,
        lambda path: {"driver": "raw",
                      "file": {"driver": "file", "filename": path}})
    # 1 MiB/s: the job copies one 1 MiB chunk per slice at most
    blockd.cmd("blockdev-backup", job_id="j", device="src", target="dst",
               sync="full", speed=MIB)
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///e0?socket=" + sock)
    for off in range(0, size, 256 * 1024):
        h.pwrite(bytes([0xee]) * (256 * 1024), off)
    h.flush()
    jobs = blockd.cmd("query-jobs")
    assert len(jobs) == 1 and jobs[0]["status"] == "running", jobs
    blockd.cmd("block-job-set-speed", device="j", speed=0)
    finish_and_compare(blockd, h, orig, dst)
    with open(src, "rb") as f:
        assert f.read() == bytes([0xee]) * size


def test_write_waits_for_the_jobs_read_in_flight(blockd, tmp_path):
    """A guest write to a cluster the job has taken but not read yet
    waits for that read: the job's read of the first chunk is held (a
    blkdebug stall) while libnbd writes into it.  Before, the write
    found nothing left to copy there and landed, and the held read
    then copied the new data into the backup (seen in CI once jobs
    ran at a lower priority)."""
    requires("qemu-img")
    size = 4 * MIB
    src, orig, dst, sock = writes_during_backup_setup(
        blockd, tmp_path, size,
        lambda path: {"driver": "blkdebug",
                      "stall": [{"iotype": "read", "sector": 0,
                                 "once": True, "tag": "r"}],
                      "image": {"driver": "file", "filename": path}})
    blockd.cmd("blockdev-backup", job_id="j", device="src", target="dst",
               sync="full")
    deadline = time.monotonic() + 30
    while blockd.cmd("x-query-blkdebug", node_name="src")["stalled"] < 1:
        assert time.monotonic() < deadline, "the job's read never came"
        time.sleep(0.02)
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///e0?socket=" + sock)
    cookie = h.aio_pwrite(nbd.Buffer.from_bytearray(
        bytearray([0xee]) * (64 * 1024)), 0)
    # Give a write that does not wait the time to land (it must not).
    deadline = time.monotonic() + 1
    done = False
    while time.monotonic() < deadline and not done:
        h.poll(0)
        done = h.aio_command_completed(cookie)
        time.sleep(0.02)
    blockd.cmd("x-blkdebug-resume", node_name="src", tag="r")
    while not done:
        h.poll(1000)
        done = h.aio_command_completed(cookie)
    finish_and_compare(blockd, h, orig, dst)
    with open(src, "rb") as f:
        assert f.read(64 * 1024) == bytes([0xee]) * (64 * 1024)


def add_failing_target(blockd, path, errno_=5, once=False):
    blockd.cmd("blockdev-add", {
        "driver": "raw", "node-name": "dst",
        "file": {"driver": "blkdebug", "node-name": "dbg",
                 "inject-error": [{"iotype": "write", "errno": errno_,
                                   "once": once}],
                 "image": {"driver": "file", "filename": path}}})


def raw_file(path, size):
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def test_target_error_report_keeps_bitmap(blockd, tmp_path):
    size = 4 * MIB
    blockd.cmd("blockdev-add", driver="raw", node_name="src",
               file={"driver": "file",
                     "filename": raw_file(str(tmp_path / "s"), size)})
    add_failing_target(blockd, raw_file(str(tmp_path / "d"), size))
    blockd.cmd("block-dirty-bitmap-add", {"node": "src", "name": "b0"})
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    blockd.cmd("nbd-server-start",
               addr={"type": "unix", "data": {"path": sock}})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                    "node-name": "src", "name": "e0",
                                    "writable": True})
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///e0?socket=" + sock)
    h.pwrite(b"x" * 65536, MIB)
    h.shutdown()
    q = blockd.conn
    blockd.cmd("blockdev-backup", job_id="j", device="src", target="dst",
               sync="incremental", bitmap="b0",
               on_target_error="report", auto_dismiss=False)
    err = q.get_event("BLOCK_JOB_ERROR", timeout=30)
    assert err["data"] == {"device": "j", "operation": "write",
                           "action": "report"}
    end, statuses = wait_job_end(q, "j", dismissed=False)
    assert end["event"] == "BLOCK_JOB_COMPLETED"
    assert end["data"]["error"] == "Input/output error"
    assert statuses[-2:] == ["aborting", "concluded"]
    jobs = blockd.cmd("query-jobs")
    assert jobs == [{"id": "j", "type": "backup", "status": "concluded",
                     "current-progress": 0, "total-progress": 65536,
                     "error": "Input/output error"}]
    blockd.cmd("job-dismiss", id="j")
    assert blockd.cmd("query-jobs") == []
    # the bitmap is kept: the failed backup can be retried
    bm = blockd.cmd("query-named-block-nodes", flat=True)
    counts = {b["name"]: b["count"] for n in bm if n["node-name"] == "src"
              for b in n.get("dirty-bitmaps", [])}
    assert counts == {"b0": 65536}


def test_target_error_stop_resume(blockd, tmp_path):
    """on-target-error=stop: the job pauses; resume retries the chunk
    (the error fired once) and the backup completes."""
    requires("qemu-img")
    size = 4 * MIB
    src = str(tmp_path / "s")
    write_pattern(src, size, 7)
    dst = raw_file(str(tmp_path / "d"), size)
    blockd.cmd("blockdev-add", driver="raw", node_name="src",
               file={"driver": "file", "filename": src})
    add_failing_target(blockd, dst, once=True)
    q = blockd.conn
    blockd.cmd("blockdev-backup", job_id="j", device="src", target="dst",
               sync="full", on_target_error="stop")
    err = q.get_event("BLOCK_JOB_ERROR", timeout=30)
    assert err["data"]["action"] == "stop"
    deadline = time.monotonic() + 30
    while True:
        jobs = blockd.cmd("query-block-jobs")
        if jobs[0]["status"] == "paused" and not jobs[0]["busy"]:
            break
        assert time.monotonic() < deadline, jobs
        time.sleep(0.05)
    assert jobs[0]["io-status"] == "failed" and jobs[0]["paused"]
    with pytest.raises(QmpError) as e:
        blockd.cmd("job-complete", id="j")
    assert e.value.desc == \
        "Job 'j' in state 'paused' cannot accept command verb 'complete'"
    blockd.cmd("job-resume", id="j")
    end, _ = wait_job_end(q, "j")
    assert "error" not in end["data"]
    blockd.cmd("blockdev-del", node_name="src")
    blockd.cmd("blockdev-del", node_name="dst")
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", src, dst)


def test_cancel_sync_none(blockd, tmp_path):
    size = 2 * MIB
    blockd.cmd("blockdev-add", driver="raw", node_name="src",
               file={"driver": "file",
                     "filename": raw_file(str(tmp_path / "s"), size)})
    blockd.cmd("blockdev-add", driver="raw", node_name="dst",
               file={"driver": "file",
                     "filename": raw_file(str(tmp_path / "d"), size)})
    q = blockd.conn
    blockd.cmd("blockdev-backup", job_id="j", device="src", target="dst",
               sync="none")
    with pytest.raises(QmpError) as e:
        blockd.cmd("job-finalize", id="j")
    assert e.value.desc == \
        "Job 'j' in state 'running' cannot accept command verb 'finalize'"
    blockd.cmd("job-pause", id="j")
    with pytest.raises(QmpError) as e:
        blockd.cmd("job-pause", id="j")
    assert e.value.desc == "Job is already paused"
    blockd.cmd("job-resume", id="j")
    with pytest.raises(QmpError) as e:
        blockd.cmd("job-resume", id="j")
    assert e.value.desc == "Can't resume a job that was not paused"
    blockd.cmd("job-cancel", id="j")
    end, statuses = wait_job_end(q, "j")
    assert end["event"] == "BLOCK_JOB_CANCELLED"
    assert statuses[-3:] == ["aborting", "concluded", "null"]
    # nodes are free again
    blockd.cmd("blockdev-del", node_name="dst")


def test_bad_input(blockd, tmp_path):
    blockd.cmd("blockdev-add", driver="null-co", node_name="a", size=MIB)
    blockd.cmd("blockdev-add", driver="null-co", node_name="b", size=MIB)
    blockd.cmd("blockdev-add", driver="null-co", node_name="c", size=MIB)
    blockd.cmd("blockdev-add", driver="null-co", node_name="small",
               size=MIB // 2)

    def err(**kw):
        with pytest.raises(QmpError) as e:
            blockd.cmd("blockdev-backup", kw)
        return e.value

    e = err(device="nope", target="b", sync="full")
    assert e.cls == "GenericError" and "nope" in e.desc
    e = err(device="a", target="nope", sync="full")
    assert "nope" in e.desc
    e = err(device="a", target="small", sync="full")
    assert e.desc == "Source and target image have different sizes"
    e = err(device="a", target="a", sync="full")
    assert e.desc == "Source and target cannot be the same"
    e = err(device="a", target="b", sync="bitmap")
    assert e.desc == "must provide a valid bitmap name for 'bitmap' sync mode"
    e = err(device="a", target="b", sync="full", bitmap="x")
    assert e.desc == "Bitmap sync mode must be given when providing a bitmap"
    e = err(device="a", target="b", sync="full", **{"bitmap-mode": "never"})
    assert e.desc == "Cannot specify bitmap sync mode without a bitmap"
    e = err(**{"job-id": "1bad", "device": "a", "target": "b",
               "sync": "full"})
    assert e.desc == "Invalid job ID '1bad'"
    # two jobs on one node
    blockd.cmd("blockdev-backup", job_id="j", device="a", target="b",
               sync="none")
    e = err(**{"job-id": "k", "device": "a", "target": "c", "sync": "none"})
    assert e.desc == ("Node 'a' is busy: block device is in use by block "
                      "job: backup")
    e = err(**{"job-id": "j", "device": "c", "target": "small",
               "sync": "none"})
    assert e.desc == "Source and target image have different sizes"
    with pytest.raises(QmpError) as e:
        blockd.cmd("blockdev-del", node_name="b")
    assert "block job 'j'" in e.value.desc
    with pytest.raises(QmpError) as e:
        blockd.cmd("job-dismiss", id="j")
    assert e.value.desc == \
        "Job 'j' in state 'running' cannot accept command verb 'dismiss'"
    with pytest.raises(QmpError) as e:
        blockd.cmd("job-cancel", id="nope")
    assert e.value.cls == "GenericError" and e.value.desc == "Job not found"
    with pytest.raises(QmpError) as e:
        blockd.cmd("block-job-cancel", device="nope")
    assert e.value.cls == "DeviceNotActive"
    assert e.value.desc == "Block job 'nope' not found"
    with pytest.raises(QmpError) as e:
        blockd.cmd("block-job-set-speed", device="j", speed=-1)
    assert e.value.desc == "Parameter 'speed' expects a non-negative value"
    blockd.cmd("block-job-cancel", device="j")
    wait_job_end(blockd.conn, "j")


def test_sigterm_with_job_running(blockd_factory, tmp_path):
    """SIGTERM while a (slow) backup runs: the daemon cancels it and
    exits 0 (the fixture checks the status, ASan the teardown)."""
    size = 16 * MIB
    d = blockd_factory()
    d.cmd("blockdev-add", driver="raw", node_name="src",
          file={"driver": "file",
                "filename": raw_file(str(tmp_path / "s"), size)})
    d.cmd("blockdev-add", driver="raw", node_name="dst",
          file={"driver": "file",
                "filename": raw_file(str(tmp_path / "d"), size)})
    d.cmd("blockdev-backup", job_id="j", device="src", target="dst",
          sync="full", speed=MIB)
    assert d.cmd("query-jobs")[0]["status"] == "running"
    assert d.stop() == 0


def test_sync_top(blockd, tmp_path):
    """sync=top copies what the top layer allocates, not its backing:
    the target allocates the same ranges, and over the same backing
    file it reads as the source."""
    requires("qemu-img", "qemu-io")
    base = qcow2(str(tmp_path / "base.qcow2"), 8 * MIB)
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x61 0 8M", base)
    top = qcow2(str(tmp_path / "top.qcow2"), 8 * MIB, backing=base)
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x62 1M 128k",
        "-c", "write -P 0x63 5M 64k", top)
    dst = qcow2(str(tmp_path / "dst.qcow2"), 8 * MIB, backing=base)
    add_qcow2(blockd, "src", top)
    add_qcow2(blockd, "dst", dst, backing=False)
    blockd.cmd("blockdev-backup", job_id="j", device="src", target="dst",
               sync="top")
    end, _ = wait_job_end(blockd.conn, "j")
    assert "error" not in end["data"]
    assert end["data"]["len"] == 128 * 1024 + 64 * 1024
    blockd.cmd("blockdev-del", node_name="src")
    blockd.cmd("blockdev-del", node_name="dst")

    def alloc(path):
        m = json.loads(run("qemu-img", "map", "--output=json", "-f",
                           "qcow2", path))
        return [(e["start"], e["length"]) for e in m
                if e["depth"] == 0 and e["data"]]
    assert alloc(dst) == alloc(top) == [(1 * MIB, 128 * 1024),
                                        (5 * MIB, 64 * 1024)]
    run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", top, dst)
