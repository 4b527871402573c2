"""Block drivers built as modules (blockdev/module.c): the rbd driver is
block-rbd.so, loaded the first time a node names it, so blockd and
blockd-nbd do not load librbd (and its C++ libraries) at start-up.
These tests need no Ceph cluster: a missing conf file fails the open
inside librados, after the module and librbd were loaded.
"""
import os
import subprocess

import pytest

from conftest import BLOCKD_NBD, QmpError, wait_socket


def rbd_built(blockd):
    """Whether query-qmp-schema's BlockdevDriver enum (its name is
    masked, as QEMU's are) lists rbd."""
    for t in blockd.cmd("query-qmp-schema"):
        if t.get("meta-type") == "enum" and "null-co" in t["values"]:
            return "rbd" in t["values"]
    return False


def mapped(pid, lib):
    with open("/proc/%d/maps" % pid) as f:
        return any(lib in line for line in f)


def test_rbd_loaded_on_first_use_under_sandbox(blockd, tmp_path):
    if not rbd_built(blockd):
        pytest.skip("blockd was built without librbd (-Drbd)")
    # Not at start-up ...
    assert not mapped(blockd.pid, "librbd.so")
    assert not mapped(blockd.pid, "block-rbd.so")
    # ... but on the first rbd node, with the seccomp sandbox on (the
    # default): the error is librados' own, so the module ran.
    with pytest.raises(QmpError) as e:
        blockd.cmd("blockdev-add", driver="rbd", node_name="r0",
                   pool="rbd", image="img",
                   conf=str(tmp_path / "no-such.conf"))
    assert e.value.cls == "GenericError"
    assert e.value.desc.startswith("error reading conf file ")
    assert mapped(blockd.pid, "block-rbd.so")
    assert mapped(blockd.pid, "librbd.so")
    # Loaded once: a second open reuses it.
    with pytest.raises(QmpError) as e:
        blockd.cmd("blockdev-add", driver="rbd", node_name="r1",
                   pool="rbd", image="img",
                   conf=str(tmp_path / "no-such.conf"))
    assert e.value.desc.startswith("error reading conf file ")


def test_missing_module(blockd_factory, tmp_path, monkeypatch):
    empty = tmp_path / "modules"
    empty.mkdir()
    monkeypatch.setenv("BLOCKD_MODULE_DIR", str(empty))
    d = blockd_factory()
    if not rbd_built(d):
        pytest.skip("blockd was built without librbd (-Drbd)")
    with pytest.raises(QmpError) as e:
        d.cmd("blockdev-add", driver="rbd", node_name="r0", pool="rbd",
              image="img")
    assert e.value.cls == "GenericError"
    assert e.value.desc.startswith(
        "Driver 'rbd' is not available: could not load its module: %s/"
        "block-rbd.so: cannot open shared object file" % empty)
    # The daemon goes on serving.
    d.cmd("blockdev-add", driver="null-co", node_name="n0")


def test_blockd_nbd_starts_without_librbd(tmp_path):
    img = tmp_path / "img.raw"
    img.write_bytes(b"\0" * 65536)
    sock = "/tmp/bdm-%d.sock" % os.getpid()
    p = subprocess.Popen([BLOCKD_NBD, "-t", "-f", "raw", "-k", sock,
                          str(img)], stdin=subprocess.DEVNULL)
    try:
        wait_socket(sock, p)
        assert not mapped(p.pid, "librbd.so")
        assert not mapped(p.pid, "libceph-common")
    finally:
        p.terminate()
        assert p.wait(30) == 0
