"""QMP on a main loop whose data path is saturated: bench/nbdload keeps
many connections reading at random from an export served by the main
loop while QMP commands run.  The monitor is served between NBD
callbacks, not after a whole turn over every busy connection
(util/loop.c's control watches); these check that commands are answered
meanwhile, with what they should say, and that a command served early
does not overtake a client's hang-up that came before it (a safe
block-export-del right after a client closed finds it gone)."""
import json
import os
import subprocess
import time

import pytest

from conftest import BUILDDIR, SLOW
from nbdraw import Raw

NBDLOAD = os.environ.get("NBDLOAD", os.path.join(BUILDDIR, "nbdload"))
CONNS = 48
SIZE = 32 << 20


@pytest.fixture
def busy(blockd, shm_dir):
    """Export e0 of a raw image on tmpfs, on the main loop, read by
    CONNS nbdload connections for a while; yields (socket, nbdload)."""
    if not os.access(NBDLOAD, os.X_OK):
        pytest.skip("bench/nbdload is not built (%s)" % NBDLOAD)
    img = os.path.join(shm_dir, "a.raw")
    with open(img, "wb") as f:
        f.write(os.urandom(SIZE))
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    blockd.cmd("blockdev-add", {"driver": "file", "node-name": "f0",
                                "filename": img})
    blockd.cmd("nbd-server-start",
               addr={"type": "unix", "data": {"path": sock}})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                    "node-name": "f0", "name": "",
                                    "writable": False})
    load = subprocess.Popen(
        [NBDLOAD, "--unix", sock, "--op", "read", "--pattern", "rand",
         "--bs", "4096", "--qd", "1", "--conns", str(CONNS),
         "--seconds", str(4 * SLOW), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Every connection up (the export lists them) before the checks.
        deadline = time.monotonic() + 30 * SLOW
        while True:
            exps = blockd.cmd("query-block-exports")
            if len(exps[0].get("connected-clients", [])) >= CONNS:
                break
            assert load.poll() is None, load.stderr.read()
            assert time.monotonic() < deadline, \
                "nbdload's connections did not all come up"
            time.sleep(0.02)
        yield sock, load
        out, err = load.communicate(timeout=120 * SLOW)
        assert load.returncode == 0, err
        assert json.loads(out)["ops"] > 0
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()


def test_commands_answered_under_load(blockd, busy):
    """Commands sent while every connection keeps a request in flight
    are answered, and see those connections."""
    _, load = busy
    answered = 0
    while load.poll() is None and answered < 200:
        exps = blockd.cmd("query-block-exports")
        assert [e["id"] for e in exps] == ["e0"]
        assert len(exps[0]["connected-clients"]) == CONNS
        blockd.cmd("query-version")
        answered += 1
    # The load was still running for the first of them.
    assert answered > 0


def test_hangup_before_command_under_load(blockd, busy):
    """A client of a second export hangs up, then a safe
    block-export-del of that export runs: it finds the client gone
    every time, although the loop had a turn of busy connections ahead
    of the hang-up when the command came."""
    sock, load = busy
    done = 0
    for i in range(20):
        if load.poll() is not None:
            break
        eid, name = "e%d" % (i + 1), "b%d" % i
        blockd.cmd("block-export-add", {"type": "nbd", "id": eid,
                                        "node-name": "f0", "name": name,
                                        "writable": False})
        c = Raw(sock)
        c.go(name=name.encode())
        c.s.close()
        # No wait for the server to notice: the close came first.
        blockd.cmd("block-export-del", id=eid)
        done += 1
    assert done > 0
