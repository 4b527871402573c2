"""Isolation between exports: one export whose node holds every request
(a blkdebug stall) takes at most its node's share of the worker pool
(blk_pool_share: all threads but a quarter), so ten other exports keep
serving.

Throughput is measured only as a loose guard: the ten exports must
make progress while the stall holds, and read at least half as many
bytes per CPU second of blockd as before it.  Bytes per CPU second,
not per wall second, because the machine is shared and its load moves
wall-clock rates several times over between two phases; both ratios
are printed (pytest -s shows them)."""
import os
import time

import nbd

from conftest import requires
from throughput import MIB, add_others, measure

N_OTHERS = 10
PHASE = 2.0             # seconds of reading per measurement round


def test_stalled_export_does_not_starve_others(blockd):
    requires("nbdinfo")   # libnbd's tools: the python binding is there too
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    blockd.cmd("nbd-server-start",
               addr={"type": "unix", "data": {"path": sock}})
    blockd.cmd("blockdev-add", {
        "driver": "blkdebug", "node-name": "stuck",
        "stall": [{"iotype": "read", "tag": "hold"}],
        "image": {"driver": "null-co", "size": 64 * MIB,
                  "read-zeroes": True}})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e-stuck",
                                    "node-name": "stuck", "name": "stuck"})
    handles = add_others(blockd, sock, N_OTHERS)

    before, before_cpu = measure(blockd.pid, handles, PHASE)
    assert before > 0
    try:
        check_during_stall(blockd, sock, handles, before, before_cpu)
    finally:
        # a held request would keep the daemon from stopping
        blockd.cmd("x-blkdebug-resume", node_name="stuck", tag="hold")


def check_during_stall(blockd, sock, handles, before, before_cpu):
    # Fill the stuck export with more requests than the pool has
    # threads: two connections, 16 requests each.
    stuck = []
    cookies = []
    for _ in range(2):
        h = nbd.NBD()
        h.connect_uri("nbd+unix:///stuck?socket=%s" % sock)
        stuck.append(h)
        for j in range(16):
            cookies.append((h, h.aio_pread(nbd.Buffer(4096), 4096 * j)))
    deadline = time.monotonic() + 30
    while True:
        st = blockd.cmd("x-query-blkdebug", node_name="stuck")
        # held requests stop growing at the node's share of the pool
        if st["stalled"] > 0:
            time.sleep(0.5)
            st = blockd.cmd("x-query-blkdebug", node_name="stuck")
            break
        assert time.monotonic() < deadline, st
        time.sleep(0.05)
    held = st["stalled"]
    assert 0 < held < len(cookies), st

    during, during_cpu = measure(blockd.pid, handles, PHASE)
    # QMP answers too
    blockd.cmd("query-named-block-nodes")
    wall = during / before
    per_cpu = (during / during_cpu) / (before / before_cpu)
    print("isolation: %d held on the stuck node; the others read "
          "%.0f MiB/s before, %.0f MiB/s during the stall (ratio %.2f); "
          "per blockd CPU second %.0f / %.0f MiB (ratio %.2f)"
          % (held, before / PHASE / MIB, during / PHASE / MIB, wall,
             before / before_cpu / MIB, during / during_cpu / MIB, per_cpu))
    assert during > 0, "the other exports were starved"
    assert per_cpu >= 0.5, per_cpu

    blockd.cmd("x-blkdebug-resume", node_name="stuck", tag="hold")
    for h, c in cookies:
        while not h.aio_command_completed(c):
            h.poll(1000)
    assert blockd.cmd("x-query-blkdebug", node_name="stuck")["stalled"] == 0
