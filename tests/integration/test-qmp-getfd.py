"""getfd / closefd: a client passes a descriptor with SCM_RIGHTS over the
unix QMP socket and names it; nbd-server-start addr.type=fd then takes
it by name (QEMU's monitor fds), once."""
import array
import json
import os
import socket
import time

import nbd
import pytest

from conftest import QmpError


def send_with_fd(q, request, fd):
    """Send one request with fd attached; return the reply."""
    data = json.dumps(request).encode()
    q.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                             array.array("i", [fd]))])
    return q.recv_reply()


def getfd(q, name, fd):
    r = send_with_fd(q, {"execute": "getfd",
                         "arguments": {"fdname": name}}, fd)
    assert r == {"return": {}}, r


def error(q, name, args):
    with pytest.raises(QmpError) as e:
        q.cmd(name, args)
    assert e.value.cls == "GenericError"
    return e.value.desc


def start_fd(q, name):
    q.cmd("nbd-server-start",
          {"addr": {"type": "fd", "data": {"str": name}}})


def open_count(pid, target):
    """How many of blockd's descriptors point at target."""
    d = "/proc/%d/fd" % pid
    n = 0
    for name in os.listdir(d):
        try:
            n += os.readlink(os.path.join(d, name)) == target
        except OSError:
            pass
    return n


def wait_count(pid, target, want):
    deadline = time.monotonic() + 10
    while open_count(pid, target) != want:
        assert time.monotonic() < deadline, \
            "%s open %d times" % (target, open_count(pid, target))
        time.sleep(0.02)


def test_nbd_server_on_passed_socket(blockd, tmp_path):
    img = str(tmp_path / "a.raw")
    with open(img, "wb") as f:
        f.truncate(1 << 20)
        f.write(b"getfd")
    blockd.cmd("blockdev-add", driver="file", node_name="f0", filename=img)
    path = os.path.join(blockd.sockdir, "passed.sock")
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(path)
    ls.listen(4)
    q = blockd.conn
    getfd(q, "nbd-listener", ls.fileno())
    ls.close()
    start_fd(q, "nbd-listener")
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                    "node-name": "f0", "name": "disk"})
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///disk?socket=%s" % path)
    assert h.pread(5, 0) == b"getfd"
    h.shutdown()
    # Taken by the server: no longer kept under its name.
    assert error(q, "closefd", {"fdname": "nbd-listener"}) == \
        "File descriptor named 'nbd-listener' not found"
    blockd.cmd("nbd-server-stop")


def test_getfd_errors(blockd, tmp_path):
    q = blockd.conn
    fpath = str(tmp_path / "f")
    assert error(q, "getfd", {"fdname": "x"}) == \
        "No file descriptor supplied via SCM_RIGHTS"
    assert error(q, "closefd", {"fdname": "x"}) == \
        "File descriptor named 'x' not found"
    with open(fpath, "w") as f:
        r = send_with_fd(q, {"execute": "getfd",
                             "arguments": {"fdname": "1x"}}, f.fileno())
        assert r["error"]["desc"] == \
            "Parameter 'fdname' expects a name not starting with a digit"
        # (That descriptor waits for a getfd; this one takes it.)
        getfd(q, "file", f.fileno())
    # Not a listening socket: refused, and still kept.
    d = error(q, "nbd-server-start",
              {"addr": {"type": "fd", "data": {"str": "file"}}})
    assert d.startswith("'file': File descriptor ") and \
        d.endswith(" is not a socket")
    a, b = socket.socketpair()
    getfd(q, "pair", a.fileno())
    d = error(q, "nbd-server-start",
              {"addr": {"type": "fd", "data": {"str": "pair"}}})
    assert d.endswith("is a socket that is not listening")
    a.close()
    b.close()
    # Kept per monitor: another connection does not see them.
    with blockd.qmp() as q2:
        assert "not found" in error(q2, "closefd", {"fdname": "file"})
    assert open_count(blockd.pid, fpath) == 1
    q.cmd("closefd", {"fdname": "file"})
    q.cmd("closefd", {"fdname": "pair"})
    assert open_count(blockd.pid, fpath) == 0


def test_fds_closed_with_the_monitor(blockd, tmp_path):
    fpath = str(tmp_path / "f")
    with blockd.qmp() as q:
        with open(fpath, "w") as f:
            getfd(q, "a", f.fileno())
            getfd(q, "a", f.fileno())      # replaces (closes) the first
            assert open_count(blockd.pid, fpath) == 1
            send_with_fd(q, {"execute": "query-version"}, f.fileno())
            # "a" and one unclaimed, closed by the next that arrives:
            assert open_count(blockd.pid, fpath) == 2
            send_with_fd(q, {"execute": "query-version"}, f.fileno())
            assert open_count(blockd.pid, fpath) == 2
    wait_count(blockd.pid, fpath, 0)
