"""The backing chain the block-commit and block-stream tests share:
base <- mid <- top (qcow2, SIZE bytes) with data in every layer, and
the helpers they both use."""
import json
import os
import subprocess
import time

MIB = 1 << 20
SIZE = 8 * MIB


def run(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True,
                          text=True).stdout


def qcow2(path, size, backing=None):
    """qemu-img create of a qcow2 image (backing: a qcow2 file name);
    returns path."""
    args = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if backing is not None:
        args += ["-b", backing, "-F", "qcow2"]
    run(*args, path, str(size))
    return path


def info(path):
    return json.loads(run("qemu-img", "info", "--output=json", path))


def make_chain(d, top_writes=("write -P 0x04 1536k 64k",)):
    """base <- mid <- top in directory d; top_writes are qemu-io
    commands for top.  Returns the three paths."""
    os.makedirs(d, exist_ok=True)
    base = os.path.join(d, "base.qcow2")
    mid = os.path.join(d, "mid.qcow2")
    top = os.path.join(d, "top.qcow2")
    run("qemu-img", "create", "-q", "-f", "qcow2", base, str(SIZE))
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x01 0 8M", base)
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2",
        "-F", "qcow2", mid)
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x02 1M 2M",
        "-c", "write -P 0x03 6M 64k", "-c", "write -z 7M 512k", mid)
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", "mid.qcow2",
        "-F", "qcow2", top)
    args = []
    for w in top_writes:
        args += ["-c", w]
    run("qemu-io", "-f", "qcow2", *args, top)
    return base, mid, top


def export_top(blockd, top):
    """Open the qcow2 image top as node "top" and export it writable as
    "e0" on a new unix NBD server; returns the socket path."""
    blockd.cmd("blockdev-add", {"driver": "qcow2", "node-name": "top",
                                "file": {"driver": "file",
                                         "filename": top}})
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    blockd.cmd("nbd-server-start",
               addr={"type": "unix", "data": {"path": sock}})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                    "node-name": "top", "name": "e0",
                                    "writable": True})
    return sock


def wait_end(q, job):
    """The BLOCK_JOB_COMPLETED/CANCELLED event of job, once it is gone
    (status null)."""
    statuses, end = [], None
    while not statuses or statuses[-1] != "null":
        ev = q.get_event(timeout=60)
        d = ev.get("data", {})
        if ev["event"] == "JOB_STATUS_CHANGE" and d["id"] == job:
            statuses.append(d["status"])
        elif ev["event"] in ("BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED"):
            end = ev
    return end


def wait_end_event(q, job, timeout=120):
    """The BLOCK_JOB_COMPLETED or BLOCK_JOB_CANCELLED event of job, as
    soon as it comes (the job may still be waiting to be dismissed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ev = q.get_event(timeout=deadline - time.monotonic())
        if ev["event"] in ("BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED") \
                and ev["data"]["device"] == job:
            return ev
    raise TimeoutError(job)
