"""nbd-server-start addr.type=fd takes only a listening stream socket
handed to blockd for it, never one of blockd's own descriptors (issue 9
item 11: the QMP listener's number was accepted, answered NBD, and was
closed twice at exit).  Each refusal says why."""
import os
import shutil
import socket
import subprocess
import tempfile
import time

import nbd
import pytest

from conftest import BLOCKD, Qmp, QmpError


class Daemon:
    """blockd with a QMP socket and extra inherited descriptors."""

    def __init__(self, tmp_path, pass_fds=()):
        self.img = str(tmp_path / "a.raw")
        with open(self.img, "wb") as f:
            f.truncate(1 << 20)
            f.write(b"fd-owner")
        self.sockdir = tempfile.mkdtemp(prefix="bd-", dir="/tmp")
        self.qmp_path = os.path.join(self.sockdir, "qmp.sock")
        self.log = open(str(tmp_path / "blockd.log"), "wb")
        self.proc = subprocess.Popen(
            [BLOCKD, "--chardev",
             "socket,id=m,path=%s,server=on,wait=off" % self.qmp_path,
             "--monitor", "chardev=m",
             "--blockdev", "driver=file,node-name=f0,filename=%s"
             % self.img],
            pass_fds=list(pass_fds), stdin=subprocess.DEVNULL,
            stdout=self.log, stderr=self.log)
        # The socket file appears at bind(), before listen(): wait until
        # a connection is accepted, not until the file exists.
        deadline = time.monotonic() + 10
        while True:
            assert self.proc.poll() is None, "blockd exited"
            assert time.monotonic() < deadline, "no QMP socket"
            try:
                self.qmp = Qmp(self.qmp_path)
                break
            except OSError:
                time.sleep(0.02)

    def start_fd(self, fd):
        self.qmp.cmd("nbd-server-start",
                     {"addr": {"type": "fd", "data": {"str": str(fd)}}})

    def start_fd_err(self, fd):
        with pytest.raises(QmpError) as e:
            self.start_fd(fd)
        assert e.value.cls == "GenericError"
        with pytest.raises(QmpError):
            self.qmp.cmd("nbd-server-stop")      # nothing started
        return e.value.desc

    def own_fds(self):
        """{fd: target} of blockd's descriptors."""
        d = "/proc/%d/fd" % self.proc.pid
        out = {}
        for name in os.listdir(d):
            try:
                out[int(name)] = os.readlink(os.path.join(d, name))
            except OSError:
                pass
        return out

    def stop(self):
        self.qmp.close()
        if self.proc.poll() is None:
            self.proc.terminate()
        rc = self.proc.wait(10)
        self.log.close()
        shutil.rmtree(self.sockdir, ignore_errors=True)
        return rc


def listening_unix_inode(path):
    """The inode of the socket listening on path (/proc/net/unix)."""
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            parts = line.split()
            # Num RefCount Protocol Flags Type St Inode Path
            if len(parts) >= 8 and parts[7] == path and \
                    int(parts[3], 16) & 0x10000:
                return parts[6]
    return None


def test_own_qmp_listener_refused(tmp_path):
    d = Daemon(tmp_path)
    try:
        ino = listening_unix_inode(d.qmp_path)
        assert ino is not None
        fds = [fd for fd, t in d.own_fds().items()
               if t == "socket:[%s]" % ino]
        assert len(fds) == 1
        desc = d.start_fd_err(fds[0])
        assert desc == ("File descriptor %d belongs to blockd itself (it "
                        "was not inherited at start-up, or is already in "
                        "use)" % fds[0])
        # The QMP listener still works, and only as QMP.
        with Qmp(d.qmp_path) as q:
            q.cmd("query-version")
        # blockd's image file too.
        img = [fd for fd, t in d.own_fds().items() if t == d.img]
        assert img
        assert "belongs to blockd itself" in d.start_fd_err(img[0])
        assert "is not open" in d.start_fd_err(999)
    finally:
        assert d.stop() == 0


def test_inherited_non_sockets_refused(tmp_path):
    regular = open(str(tmp_path / "file"), "w")
    a, b = socket.socketpair()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    d = Daemon(tmp_path, pass_fds=[regular.fileno(), a.fileno(),
                                   udp.fileno()])
    try:
        assert d.start_fd_err(regular.fileno()) == \
            "File descriptor %d is not a socket" % regular.fileno()
        assert d.start_fd_err(a.fileno()) == \
            "File descriptor %d is a socket that is not listening" \
            % a.fileno()
        assert d.start_fd_err(udp.fileno()) == \
            "File descriptor %d is not a stream socket" % udp.fileno()
    finally:
        assert d.stop() == 0
        regular.close()
        a.close()
        b.close()
        udp.close()


def test_inherited_listener_used_once(tmp_path):
    path = str(tmp_path / "l.sock")
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(path)
    lsock.listen(8)
    fd = lsock.fileno()
    d = Daemon(tmp_path, pass_fds=[fd])
    lsock.close()
    try:
        d.start_fd(fd)
        d.qmp.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                       "node-name": "f0", "name": "disk"})
        h = nbd.NBD()
        h.connect_uri("nbd+unix:///disk?socket=%s" % path)
        assert h.pread(8, 0) == b"fd-owner"
        h.shutdown()
        d.qmp.cmd("nbd-server-stop")
        # Used once: stopping closed it; the number is not offered again.
        desc = d.start_fd_err(fd)
        assert "belongs to blockd itself" in desc or "is not open" in desc
    finally:
        assert d.stop() == 0
