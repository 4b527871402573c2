"""bench/qd1floor, the QD1 transport floor per server shape: every
shape it was built with completes round trips over its socketpair,
reads the file it is given, and reports the server's CPU per round
trip; a file shorter than a page and an unknown shape are refused."""
import os
import re
import subprocess

import pytest

from conftest import BUILDDIR

QD1FLOOR = os.path.join(BUILDDIR, "qd1floor")


def shapes():
    r = subprocess.run([QD1FLOOR, "--help"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.split("shapes:")[1].split()


def run(*args):
    return subprocess.run([QD1FLOOR] + list(args), capture_output=True,
                          text=True, timeout=120)


def test_every_shape_round_trips(tmp_path):
    img = tmp_path / "f.img"
    img.write_bytes(os.urandom(256 * 1024))
    names = shapes()
    assert {"bare", "blocking", "epoll"} <= set(names)
    r = run("--rounds", "2", "--seconds", "0.2", "--file", str(img))
    assert r.returncode == 0, r.stderr
    runs = re.findall(r"QD1FLOOR shape=(\S+) round=(\d) iops=(\d+) "
                      r"srv_cpu_us_per_op=([\d.]+)", r.stdout)
    assert sorted({n for n, *_ in runs}) == sorted(names)
    assert len(runs) == 2 * len(names)
    for _, _, iops, cpu in runs:
        assert int(iops) > 0 and float(cpu) > 0
    # The summary pairs each shape with epoll's CPU, round by round.
    summary = r.stdout.split("(medians)")[1].split("\n")
    epoll = [line for line in summary if line.startswith("epoll ")]
    assert epoll and epoll[0].split()[-1] == "1.000"


def test_uring_shapes_when_built():
    if "uring" not in shapes():
        pytest.skip("qd1floor was built without liburing")
    r = run("--rounds", "1", "--seconds", "0.2", "--shapes", "uring,uring1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("QD1FLOOR shape=uring") == 2


def test_refusals(tmp_path):
    short = tmp_path / "short"
    short.write_bytes(b"x" * 100)
    r = run("--rounds", "1", "--seconds", "0.1", "--file", str(short))
    assert r.returncode == 1
    assert "shorter than a page" in r.stderr
    r = run("--shapes", "nope")
    assert r.returncode == 2 and "no shape 'nope'" in r.stderr
