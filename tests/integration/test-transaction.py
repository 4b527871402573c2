"""The transaction command (QEMU's qapi/transaction.json): bitmap
actions and blockdev-backup done at one point in time, all or none.

The point in time is checked with a write held in flight by blkdebug:
the transaction waits for it (the bitmap it adds does not see it) and a
write sent meanwhile waits for the transaction (the bitmap sees it).
The all-or-none part with a failing action at every position; the
incremental backup recipe libvirt uses with qemu-img compare and map."""
import json
import os
import subprocess
import time

import nbd
import pytest

from conftest import QmpError, requires

MIB = 1 << 20
SIZE = 4 * MIB
G = 65536


def run(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True,
                          text=True).stdout


def raw_file(path, size=SIZE):
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def serve(blockd, node, name="e0"):
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    if not os.path.exists(sock):
        blockd.cmd("nbd-server-start",
                   addr={"type": "unix", "data": {"path": sock}})
    blockd.cmd("block-export-add", {"type": "nbd", "id": name,
                                    "node-name": node, "name": name,
                                    "writable": True})
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///%s?socket=%s" % (name, sock))
    return h


def bitmaps(blockd, node):
    """{name: (count, recording)} of node's dirty bitmaps."""
    for n in blockd.cmd("query-named-block-nodes"):
        if n["node-name"] == node:
            return {b["name"]: (b["count"], b["recording"])
                    for b in n.get("dirty-bitmaps", [])}
    raise KeyError(node)


def add(name, node="n0", **kw):
    return {"type": "block-dirty-bitmap-add",
            "data": dict(node=node, name=name, granularity=G, **kw)}


def one(kind, name, node="n0"):
    return {"type": "block-dirty-bitmap-" + kind,
            "data": {"node": node, "name": name}}


def wait_stalled(q, node, n=1, timeout=30.0):
    deadline = time.monotonic() + timeout
    while q.cmd("x-query-blkdebug", node_name=node)["stalled"] < n:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_waits_for_writes_in_flight_and_holds_new_ones(blockd, tmp_path):
    blockd.cmd("blockdev-add", {
        "driver": "blkdebug", "node-name": "dbg",
        "stall": [{"iotype": "write", "tag": "t"}],
        "image": {"driver": "file",
                  "filename": raw_file(str(tmp_path / "a.raw"))}})
    h = serve(blockd, "dbg")
    other = blockd.qmp()
    c1 = h.aio_pwrite(b"a" * 4096, 0)             # held inside blkdebug
    wait_stalled(other, "dbg")

    q = blockd.conn
    q.send_raw(json.dumps({"execute": "transaction", "id": "tx",
                           "arguments": {"actions": [add("b1", "dbg")]}}))
    with pytest.raises(TimeoutError):
        while True:                               # waits for c1
            obj = q.recv_raw(timeout=0.5)
            assert "event" in obj, obj
    c2 = h.aio_pwrite(b"b" * 4096, 2 * G)         # waits for the transaction
    for _ in range(20):
        h.poll(0)
        time.sleep(0.01)
    assert not h.aio_command_completed(c2)
    assert bitmaps(other, "dbg") == {}
    other.cmd("x-blkdebug-resume", node_name="dbg", tag="t")
    reply = q.recv_reply()
    assert reply == {"return": {}, "id": "tx"}, reply
    for c in (c1, c2):
        while not h.aio_command_completed(c):
            h.poll(1000)
    # c1 landed before the point in time, c2 after it
    assert bitmaps(other, "dbg") == {"b1": (G, True)}
    assert h.pread(4096, 0) == b"a" * 4096
    assert h.pread(4096, 2 * G) == b"b" * 4096
    other.close()
    h.shutdown()


def setup_bitmaps(blockd, tmp_path):
    """n0 (raw over a file), exported, with b0 marking two clusters and
    a disabled b9 marking one."""
    blockd.cmd("blockdev-add", {"driver": "raw", "node-name": "n0",
                                "file": {"driver": "file", "filename":
                                         raw_file(str(tmp_path / "n.raw"))}})
    for b in ("b0", "b9"):
        blockd.cmd("block-dirty-bitmap-add",
                   {"node": "n0", "name": b, "granularity": G})
    h = serve(blockd, "n0")
    h.pwrite(b"x" * 4096, 0)
    blockd.cmd("block-dirty-bitmap-disable", {"node": "n0", "name": "b9"})
    h.pwrite(b"y" * 4096, 5 * G)
    return h


BEFORE = {"b0": (2 * G, True), "b9": (G, False)}

GOOD = [add("b1"), one("clear", "b0"), one("disable", "b0"),
        one("enable", "b9"),
        {"type": "block-dirty-bitmap-merge",
         "data": {"node": "n0", "target": "b1", "bitmaps": ["b9"]}},
        one("remove", "b9")]


@pytest.mark.parametrize("at", range(len(GOOD) + 1))
def test_all_or_none(blockd, tmp_path, at):
    """The actions with a failing one inserted at position at: nothing
    changed, the error is the failed action's."""
    h = setup_bitmaps(blockd, tmp_path)
    assert bitmaps(blockd, "n0") == BEFORE
    bad = one("clear", "nope")
    with pytest.raises(QmpError) as e:
        blockd.cmd("transaction", actions=GOOD[:at] + [bad] + GOOD[at:])
    assert e.value.desc == "Dirty bitmap 'nope' not found"
    assert bitmaps(blockd, "n0") == BEFORE
    with pytest.raises(QmpError) as e:
        blockd.cmd("transaction", actions=GOOD[:at] + [{"type": "abort",
                                                        "data": {}}])
    assert e.value.desc == "Transaction aborted using Abort action"
    assert bitmaps(blockd, "n0") == BEFORE
    h.pwrite(b"z" * 4096, 9 * G)                # writes go on
    assert bitmaps(blockd, "n0") == {"b0": (3 * G, True), "b9": (G, False)}
    h.shutdown()


def test_all_done(blockd, tmp_path):
    h = setup_bitmaps(blockd, tmp_path)
    blockd.cmd("transaction", actions=GOOD)
    # b1: b9's one cluster merged in; b0: cleared, disabled; b9 removed
    assert bitmaps(blockd, "n0") == {"b0": (0, False), "b1": (G, True)}
    blockd.cmd("transaction", actions=[])
    h.shutdown()


def test_bad_input(blockd, tmp_path):
    h = setup_bitmaps(blockd, tmp_path)
    cases = [
        ({"actions": [add("b1")], "properties": {"completion-mode":
                                                 "grouped"}},
         "completion-mode 'grouped' is not supported"),
        ({"actions": [add("b1"), add("b1")]},
         "Bitmap already exists: b1"),
        ({"actions": [add("b1"), {"type": "blockdev-backup", "data": {
            "device": "n0", "target": "nope", "sync": "full"}}]}, None),
        ({"actions": [{"type": "nope", "data": {}}]}, None),
        ({"actions": [{"type": "block-dirty-bitmap-add"}]}, None),
    ]
    for args, msg in cases:
        with pytest.raises(QmpError) as e:
            blockd.cmd("transaction", args)
        if msg is not None:
            assert e.value.desc == msg
        assert bitmaps(blockd, "n0") == BEFORE
        assert blockd.cmd("query-jobs") == []
    h.shutdown()


def qcow2(path, size=SIZE):
    run("qemu-img", "create", "-q", "-f", "qcow2", path, str(size))
    return path


def add_qcow2(blockd, name, path):
    blockd.cmd("blockdev-add", {"driver": "qcow2", "node-name": name,
                                "file": {"driver": "file",
                                         "filename": path}})


def wait_done(blockd, job):
    while True:
        ev = blockd.conn.get_event("BLOCK_JOB_COMPLETED", timeout=60)
        if ev["data"]["device"] == job:
            assert "error" not in ev["data"], ev
            return


def data_ranges(path):
    return [(m["start"], m["length"]) for m in json.loads(
        run("qemu-img", "map", "--output=json", "-U", path))
        if m["data"] and m["depth"] == 0]


def test_incremental_backup_recipe(blockd, tmp_path):
    """libvirt's push backup: a checkpoint bitmap and the full backup in
    one transaction, then the next checkpoint and an incremental backup
    of the first bitmap in another.  The incremental holds exactly the
    clusters written in between; full + incremental equals the source."""
    requires("qemu-img")
    src = qcow2(str(tmp_path / "src.qcow2"))
    run("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 4M", src)
    full = qcow2(str(tmp_path / "full.qcow2"))
    inc = str(tmp_path / "inc.qcow2")
    run("qemu-img", "create", "-q", "-f", "qcow2", "-b", full, "-F",
        "qcow2", inc)
    add_qcow2(blockd, "n0", src)
    add_qcow2(blockd, "full", full)
    h = serve(blockd, "n0")
    blockd.cmd("transaction", actions=[
        add("c1"),
        {"type": "blockdev-backup", "data": {
            "job-id": "j1", "device": "n0", "target": "full",
            "sync": "full"}}])
    h.pwrite(b"\x22" * 4096, 0)          # during the full backup: not in it
    wait_done(blockd, "j1")
    h.pwrite(b"\x33" * 8192, 3 * G)
    blockd.cmd("blockdev-add", {"driver": "qcow2", "node-name": "inc",
                                "backing": None,
                                "file": {"driver": "file", "filename": inc}})
    blockd.cmd("transaction", actions=[
        one("disable", "c1"), add("c2"),
        {"type": "blockdev-backup", "data": {
            "job-id": "j2", "device": "n0", "target": "inc",
            "sync": "bitmap", "bitmap": "c1",
            "bitmap-mode": "on-success"}}])
    h.pwrite(b"\x44" * 4096, 7 * G)      # after the point in time: c2 only
    wait_done(blockd, "j2")
    assert bitmaps(blockd, "n0") == {"c1": (0, False), "c2": (G, True)}
    expect = h.pread(SIZE, 0)
    h.shutdown()
    for e in ("e0",):
        blockd.cmd("block-export-del", id=e, mode="hard")
    for n in ("inc", "full", "n0"):
        blockd.cmd("blockdev-del", node_name=n)
    assert data_ranges(inc) == [(0, G), (3 * G, G)]
    run("qemu-img", "check", full)
    run("qemu-img", "check", inc)
    got = str(tmp_path / "got.raw")
    run("qemu-img", "convert", "-f", "qcow2", "-O", "raw", inc, got)
    with open(got, "rb") as f:
        data = f.read()
    want = bytearray(expect)
    want[7 * G:7 * G + 4096] = b"\x11" * 4096    # written after the backup
    assert data == bytes(want)
