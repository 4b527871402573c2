"""bench/nbdload, the benchmark's load client: it completes every kind
of run it offers against blockd (structured and simple replies, reads
and writes, several connections) and nbdkit's memory plugin (hole
chunks), its writes land where it says, and it reports failed requests
with a failing exit status."""
import json
import os
import subprocess

import pytest

from conftest import BUILDDIR, requires, wait_socket

NBDLOAD = os.environ.get("NBDLOAD", os.path.join(BUILDDIR, "nbdload"))
SIZE = 8 << 20


def nbdload(sock, *args, check=True):
    r = subprocess.run([NBDLOAD, "--unix", sock, "--seconds", "0.3",
                        "--json"] + list(args),
                       capture_output=True, text=True, timeout=120)
    if check:
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)
    return r


@pytest.fixture
def export(blockd, tmp_path):
    img = str(tmp_path / "a.raw")
    with open(img, "wb") as f:
        f.truncate(SIZE)
    sock = os.path.join(blockd.sockdir, "nbd.sock")

    def add(writable=True):
        blockd.cmd("blockdev-add", {"driver": "file", "node-name": "f0",
                                    "filename": img})
        blockd.cmd("nbd-server-start",
                   addr={"type": "unix", "data": {"path": sock}})
        blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                        "node-name": "f0", "name": "",
                                        "writable": writable})
        return img, sock
    return add


@pytest.mark.parametrize("args", [
    ["--op", "read", "--pattern", "rand", "--qd", "16"],
    ["--op", "read", "--pattern", "rand", "--qd", "16", "--simple"],
    ["--op", "read", "--pattern", "seq", "--bs", "65536", "--qd", "4",
     "--conns", "2"],
    ["--op", "read", "--pattern", "rand", "--qd", "1"],
])
def test_reads(blockd, export, args):
    _, sock = export()
    j = nbdload(sock, *args, "--server-pid", str(blockd.proc.pid))
    assert j["ops"] > 0 and j["bytes"] == j["ops"] * j["bs"]
    assert j["server_cpu_s"] > 0
    assert j["p50_us"] <= j["p99_us"]


def test_writes_land(blockd, export):
    img, sock = export()
    j = nbdload(sock, "--op", "write", "--pattern", "seq", "--bs", "4096",
                "--qd", "8")
    assert j["ops"] > 0
    # Sequential writes start at 0 and fill 0xa5 (wrapping at the end).
    written = min(j["ops"] * 4096, SIZE)
    with open(img, "rb") as f:
        data = f.read(written)
    assert data == b"\xa5" * written


def test_failed_requests_fail_the_run(blockd, export):
    _, sock = export(writable=False)
    r = nbdload(sock, "--op", "write", "--qd", "4", check=False)
    assert r.returncode == 1
    assert "requests failed" in r.stderr


def test_no_server(tmp_path):
    r = nbdload(str(tmp_path / "none.sock"), check=False)
    assert r.returncode == 1 and "nbdload:" in r.stderr


def test_bad_arguments(tmp_path):
    for args in (["--qd", "0"], ["--bs", "0"], ["--op", "trim"],
                 ["--pattern", "zigzag"], ["--conns", "1000"]):
        r = nbdload(str(tmp_path / "s"), *args, check=False)
        assert r.returncode == 2, args


def test_hole_chunks_from_nbdkit(tmp_path):
    requires("nbdkit")
    # nbdkit's memory plugin answers reads of an empty disk with hole
    # chunks: nbdload must parse them as complete replies.
    sock = str(tmp_path / "k.sock")
    p = subprocess.Popen(["nbdkit", "-f", "-U", sock, "memory", str(SIZE)])
    try:
        wait_socket(sock, p)
        j = nbdload(sock, "--op", "read", "--pattern", "rand", "--qd", "8",
                    "--server-pid", str(p.pid))
        assert j["ops"] > 0
    finally:
        p.terminate()
        p.wait()
