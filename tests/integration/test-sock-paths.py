"""What blockd does with a unix socket path (issue 9 item 12): a stale
socket is replaced; a live socket, a regular file or a directory is
refused and left as it is -- for nbd-server-start and for QMP chardevs;
nbd-server-stop and exit remove only the socket blockd itself created."""
import os
import socket
import subprocess

import nbd
import pytest

from conftest import BLOCKD, QmpError


def start_err(blockd, path):
    with pytest.raises(QmpError) as e:
        blockd.cmd("nbd-server-start",
                   {"addr": {"type": "unix", "data": {"path": path}}})
    assert e.value.cls == "GenericError"
    # Nothing half-started remains.
    with pytest.raises(QmpError) as e2:
        blockd.cmd("nbd-server-stop")
    assert "not running" in e2.value.desc
    return e.value.desc


def start(blockd, path):
    blockd.cmd("nbd-server-start",
               {"addr": {"type": "unix", "data": {"path": path}}})
    blockd.cmd("block-export-add",
               {"type": "nbd", "id": "e0", "node-name": "f0",
                "name": "disk"})


def read_disk(path):
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///disk?socket=%s" % path)
    data = h.pread(4, 0)
    h.shutdown()
    return data


def test_regular_file_refused(blockd, node):
    path = os.path.join(blockd.sockdir, "nbd.sock")
    with open(path, "w") as f:
        f.write("precious")
    d = start_err(blockd, path)
    assert d == ("Failed to bind socket to %s: a regular file is there, "
                 "not a socket (only a stale socket is replaced)" % path)
    with open(path) as f:
        assert f.read() == "precious"


def test_directory_refused(blockd, node):
    path = os.path.join(blockd.sockdir, "nbd.sock")
    os.mkdir(path)
    d = start_err(blockd, path)
    assert "a directory is there, not a socket" in d
    assert os.path.isdir(path)


def test_live_socket_refused(blockd, node):
    path = os.path.join(blockd.sockdir, "nbd.sock")
    owner = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    owner.bind(path)
    owner.listen(8)
    ino = os.stat(path).st_ino
    d = start_err(blockd, path)
    assert d.startswith("Failed to bind socket to %s (a server is "
                        "listening on it): Address already in use" % path)
    # Not stolen: the path is still the owner's and reaches it.
    assert os.stat(path).st_ino == ino
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(path)
    owner.settimeout(5)
    owner.accept()[0].close()       # blockd's probe
    owner.accept()[0].close()       # ours
    c.close()
    owner.close()


def test_stale_socket_replaced(blockd, node):
    path = os.path.join(blockd.sockdir, "nbd.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()                       # left behind, as after a crash
    start(blockd, path)
    assert read_disk(path) == b"\0" * 4
    blockd.cmd("nbd-server-stop")
    assert not os.path.exists(path)


def test_stop_keeps_what_replaced_our_socket(blockd, node):
    path = os.path.join(blockd.sockdir, "nbd.sock")
    start(blockd, path)
    os.unlink(path)
    with open(path, "w") as f:
        f.write("someone else's")
    blockd.cmd("nbd-server-stop")
    with open(path) as f:
        assert f.read() == "someone else's"
    os.unlink(path)

    # A socket of someone else's in its place stays too.
    start(blockd, path)
    os.unlink(path)
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(path)
    other.listen(1)
    blockd.cmd("nbd-server-stop")
    assert os.path.exists(path)
    other.close()


def run_blockd(*args):
    return subprocess.run([BLOCKD, *args], capture_output=True, text=True,
                          timeout=20, stdin=subprocess.DEVNULL)


def test_qmp_socket_of_running_daemon_refused(blockd):
    """A second daemon on the first one's QMP path fails; the first
    keeps its socket."""
    ino = os.stat(blockd.qmp_path).st_ino
    r = run_blockd("--chardev", "socket,id=m,path=%s,server=on,wait=off"
                   % blockd.qmp_path, "--monitor", "chardev=m")
    assert r.returncode == 1
    assert "Address already in use" in r.stderr
    assert os.stat(blockd.qmp_path).st_ino == ino
    with blockd.qmp() as q:
        q.cmd("query-version")


def test_qmp_path_regular_file_refused(tmp_path):
    path = str(tmp_path / "qmp.sock")
    with open(path, "w") as f:
        f.write("precious")
    r = run_blockd("--qmp", "unix:%s" % path)
    assert r.returncode == 1
    assert "a regular file is there, not a socket" in r.stderr
    with open(path) as f:
        assert f.read() == "precious"
