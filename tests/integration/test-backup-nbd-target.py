"""blockdev-backup to an nbd node served by a second blockd: a full and
then an incremental backup (qemu-img compare / map of the images on the
second daemon), and the target's server killed mid-job: BLOCK_JOB_ERROR
per on-target-error, the bitmap of the failed incremental kept, and a
retry to a new target succeeds."""
import json
import os
import time

from chain import MIB, qcow2, run
from conftest import requires, wait_no_clients


def serve(d, node_opts, name):
    """d serves a new node over NBD as a writable export name; returns
    the socket path."""
    sock = os.path.join(d.sockdir, "nbd.sock")
    if not os.path.exists(sock):
        d.cmd("nbd-server-start",
              addr={"type": "unix", "data": {"path": sock}})
    d.cmd("blockdev-add", node_opts)
    d.cmd("block-export-add", {"type": "nbd", "id": name,
                               "node-name": node_opts["node-name"],
                               "name": name, "writable": True})
    return sock


def unserve(d, name, node):
    wait_no_clients(d, name)     # the other daemon's nbd node just left
    d.cmd("block-export-del", id=name)
    d.cmd("blockdev-del", node_name=node)


def add_nbd(d, node, sock, export):
    d.cmd("blockdev-add", {"driver": "nbd", "node-name": node,
                           "export": export,
                           "server": {"type": "unix", "path": sock}})


def wait_end(q, job, timeout=120):
    """(the BLOCK_JOB_COMPLETED/CANCELLED event, BLOCK_JOB_ERROR events)
    once job has concluded."""
    end, errors = None, []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, "job %s did not end" % job
        ev = q.get_event(timeout=left)
        data = ev.get("data", {})
        if ev["event"] == "BLOCK_JOB_ERROR" and data["device"] == job:
            errors.append(data)
        elif ev["event"] in ("BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED") \
                and data["device"] == job:
            end = ev
        elif ev["event"] == "JOB_STATUS_CHANGE" and data["id"] == job \
                and data["status"] == "concluded":
            return end, errors


def bitmap_count(d, node, name):
    for n in d.cmd("query-named-block-nodes", flat=True):
        if n["node-name"] == node:
            for b in n.get("dirty-bitmaps", []):
                if b["name"] == name:
                    return b["count"]
    raise KeyError(name)


def test_full_and_incremental(blockd_factory, tmp_path):
    requires("qemu-img", "qemu-io")
    size = 16 * MIB
    a = blockd_factory()
    b = blockd_factory()
    src = qcow2(str(tmp_path / "src.qcow2"), size)
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x41 0 5M",
        "-c", "write -P 0x42 7M 3M", "-c", "write -P 0x43 15M 1M", src)
    asock = serve(a, {"driver": "qcow2", "node-name": "src",
                      "file": {"driver": "file", "filename": src}}, "e0")
    a.cmd("block-dirty-bitmap-add", {"node": "src", "name": "b0",
                                     "granularity": 65536})
    full = qcow2(str(tmp_path / "full.qcow2"), size)
    bsock = serve(b, {"driver": "qcow2", "node-name": "full",
                      "file": {"driver": "file", "filename": full}}, "full")
    add_nbd(a, "tgt", bsock, "full")
    a.cmd("blockdev-backup", job_id="full", device="src", target="tgt",
          sync="full", bitmap="b0", bitmap_mode="on-success")
    end, errors = wait_end(a.conn, "full")
    assert end["event"] == "BLOCK_JOB_COMPLETED" and not errors
    assert "error" not in end["data"]
    assert bitmap_count(a, "src", "b0") == 0
    a.cmd("blockdev-del", node_name="tgt")
    unserve(b, "full", "full")
    run("qemu-img", "compare", "-U", "-f", "qcow2", "-F", "qcow2", full,
        src)

    uri = "nbd+unix:///e0?socket=" + asock
    run("qemu-io", "-f", "raw", "-c", "write -P 0x51 1M 64k",
        "-c", "write -P 0x52 5128k 4k", "-c", "write -P 0x53 9116k 200k",
        uri)
    inc = qcow2(str(tmp_path / "inc.qcow2"), size, backing=full)
    serve(b, {"driver": "qcow2", "node-name": "inc", "backing": None,
              "file": {"driver": "file", "filename": inc}}, "inc")
    add_nbd(a, "tgt", bsock, "inc")
    a.cmd("blockdev-backup", job_id="inc", device="src", target="tgt",
          sync="incremental", bitmap="b0")
    end, errors = wait_end(a.conn, "inc")
    assert "error" not in end["data"] and not errors
    assert end["data"]["len"] == (1 + 1 + 4) * 65536
    assert bitmap_count(a, "src", "b0") == 0
    a.cmd("blockdev-del", node_name="tgt")
    unserve(b, "inc", "inc")
    m = json.loads(run("qemu-img", "map", "--output=json", "-f", "qcow2",
                       inc))
    alloc = [(e["start"], e["length"]) for e in m
             if e["depth"] == 0 and e["data"]]
    assert alloc == [(1 * MIB, 65536), (5 * MIB, 65536),
                     (9 * MIB - 128 * 1024, 4 * 65536)]
    run("qemu-img", "compare", "-U", "-f", "qcow2", "-F", "qcow2", inc, src)


def test_target_server_killed(blockd_factory, tmp_path):
    """An incremental backup (rate-limited, so it is mid-job) whose
    target server is killed: report fails the job with the bitmap kept;
    stop pauses it and a cancel keeps the bitmap too; then a new target
    on a third daemon gets the whole incremental."""
    requires("qemu-img")
    size = 32 * MIB
    a = blockd_factory()
    src = str(tmp_path / "src.raw")
    with open(src, "wb") as f:
        f.truncate(size)
    asock = serve(a, {"driver": "raw", "node-name": "src",
                      "file": {"driver": "file", "filename": src}}, "e0")
    a.cmd("block-dirty-bitmap-add", {"node": "src", "name": "b0",
                                     "granularity": 65536})
    dirty = 16 * MIB
    run("qemu-io", "-f", "raw", "-c", "write -P 0x77 4M 16M",
        "nbd+unix:///e0?socket=" + asock)
    assert bitmap_count(a, "src", "b0") == dirty

    for action in ("report", "stop"):
        b = blockd_factory()
        tpath = str(tmp_path / ("t-%s.raw" % action))
        with open(tpath, "wb") as f:
            f.truncate(size)
        bsock = serve(b, {"driver": "raw", "node-name": "t",
                          "file": {"driver": "file", "filename": tpath}},
                      "t")
        add_nbd(a, "tgt", bsock, "t")
        a.cmd("blockdev-backup", job_id="j", device="src", target="tgt",
              sync="incremental", bitmap="b0", speed=MIB,
              on_target_error=action)
        assert bitmap_count(a, "src", "b0") == 0   # snapshot taken
        b.stop(sig=9)
        if action == "stop":
            err = a.conn.get_event("BLOCK_JOB_ERROR", timeout=60)
            assert err["data"]["action"] == "stop"
            assert err["data"]["operation"] == "write"
            a.cmd("job-cancel", id="j")
            end, _ = wait_end(a.conn, "j")
            assert end["event"] == "BLOCK_JOB_CANCELLED"
        else:
            end, errors = wait_end(a.conn, "j")
            assert errors and errors[0]["action"] == "report"
            assert errors[0]["operation"] == "write"
            assert end["event"] == "BLOCK_JOB_COMPLETED"
            assert end["data"]["error"]
        assert bitmap_count(a, "src", "b0") == dirty
        a.cmd("blockdev-del", node_name="tgt")
        assert a.alive()

    c = blockd_factory()
    tpath = str(tmp_path / "retry.raw")
    with open(tpath, "wb") as f:
        f.truncate(size)
    csock = serve(c, {"driver": "raw", "node-name": "t",
                      "file": {"driver": "file", "filename": tpath}}, "t")
    add_nbd(a, "tgt", csock, "t")
    a.cmd("blockdev-backup", job_id="retry", device="src", target="tgt",
          sync="incremental", bitmap="b0")
    end, errors = wait_end(a.conn, "retry")
    assert "error" not in end["data"] and not errors
    assert end["data"]["len"] == dirty
    assert bitmap_count(a, "src", "b0") == 0
    a.cmd("blockdev-del", node_name="tgt")
    unserve(c, "t", "t")
    run("qemu-img", "compare", "-U", "-f", "raw", "-F", "raw", tpath, src)
