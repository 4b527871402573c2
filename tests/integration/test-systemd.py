"""blockd under systemd, without systemd as PID 1: readiness (READY=1 /
STOPPING=1 on a fake $NOTIFY_SOCKET), socket activation (Debian's
systemd-socket-activate passes the sockets as systemd does, with
LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES), and log lines for the journal
(<N> prefixes when $JOURNAL_STREAM is stderr) or as JSON."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import nbd
import pytest

from conftest import BLOCKD, BUILDDIR, Qmp, requires

ACTIVATE = "/usr/bin/systemd-socket-activate"


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="bd-sd-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def stop(proc, timeout=30):
    """SIGTERM by PID; the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def connects(path):
    """One connect() attempt, no retry: does something listen on path?"""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def recv_notify(sock, timeout=30.0):
    sock.settimeout(timeout)
    return sock.recv(4096).decode()


def null_export_args():
    return ["--blockdev", "driver=null-co,node-name=n0,size=1048576",
            "--export", "nbd,id=e0,node-name=n0,name=disk"]


def test_notify_ready_after_listen_and_stopping(sockdir):
    notify_path = os.path.join(sockdir, "notify")
    qmp_path = os.path.join(sockdir, "qmp.sock")
    nbd_path = os.path.join(sockdir, "nbd.sock")
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(notify_path)
    env = dict(os.environ, NOTIFY_SOCKET=notify_path)
    proc = subprocess.Popen(
        [BLOCKD, "--chardev",
         "socket,id=m,path=%s,server=on,wait=off" % qmp_path,
         "--monitor", "m",
         "--nbd-server", "addr.type=unix,addr.path=%s" % nbd_path]
        + null_export_args(), env=env, stdin=subprocess.DEVNULL)
    try:
        msg = recv_notify(ns)
        assert msg.split("\n")[0] == "READY=1", msg
        # READY=1 came after every socket listens: both accept at once.
        assert connects(qmp_path)
        assert connects(nbd_path)
        with Qmp(qmp_path) as q:
            assert q.cmd("query-block-exports")[0]["id"] == "e0"
        proc.send_signal(signal.SIGTERM)
        assert recv_notify(ns).split("\n")[0] == "STOPPING=1"
        assert proc.wait(30) == 0
    finally:
        stop(proc)
        ns.close()


def test_notify_abstract_socket(sockdir):
    """NOTIFY_SOCKET=@name is the abstract namespace."""
    name = "blockd-test-%d" % os.getpid()
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind("\0" + name)
    qmp_path = os.path.join(sockdir, "qmp.sock")
    env = dict(os.environ, NOTIFY_SOCKET="@" + name)
    proc = subprocess.Popen([BLOCKD, "--qmp", "unix:" + qmp_path], env=env,
                            stdin=subprocess.DEVNULL)
    try:
        assert recv_notify(ns) == "READY=1"
        assert connects(qmp_path)
    finally:
        assert stop(proc) == 0
        ns.close()


def test_no_ready_when_startup_fails(sockdir):
    notify_path = os.path.join(sockdir, "notify")
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(notify_path)
    env = dict(os.environ, NOTIFY_SOCKET=notify_path)
    r = subprocess.run([BLOCKD, "--blockdev",
                        "driver=file,node-name=f,filename=/nonexistent/x"],
                       env=env, capture_output=True, timeout=60)
    assert r.returncode == 1
    ns.setblocking(False)
    with pytest.raises(BlockingIOError):
        ns.recv(4096)
    ns.close()


def start_activated(sockdir, listen, fdnames, args, notify=None):
    """blockd under systemd-socket-activate, spawned at once by a first
    QMP connection on listen[0] (queued on the passed socket)."""
    if not os.path.exists(ACTIVATE):
        pytest.skip("%s is not installed (Debian package systemd)" % ACTIVATE)
    cmd = [ACTIVATE]
    for path in listen:
        cmd += ["-l", path]
    if fdnames:
        cmd += ["--fdname=" + ":".join(fdnames)]
    if notify:
        cmd += ["-E", "NOTIFY_SOCKET=" + notify]
    cmd += ["--", BLOCKD] + args
    log = open(os.path.join(sockdir, "log"), "wb")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=log)
    deadline = time.monotonic() + 30
    while not all(os.path.exists(p) for p in listen):
        assert proc.poll() is None, open(log.name).read()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return proc, log


def test_socket_activation_by_name(sockdir):
    """--fdname names the sockets; --chardev ...,fd=NAME and --nbd-server
    addr.type=fd,addr.str=NAME take them.  A QMP client that connected
    before blockd ran (its connection waits on the passed socket) and an
    NBD client are served."""
    qmp_path = os.path.join(sockdir, "qmp.sock")
    nbd_path = os.path.join(sockdir, "nbd.sock")
    notify_path = os.path.join(sockdir, "notify")
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(notify_path)
    proc, log = start_activated(
        sockdir, [qmp_path, nbd_path], ["qmp", "nbd"],
        ["--chardev", "socket,id=mon,fd=qmp,server=on", "--monitor", "mon",
         "--nbd-server", "addr.type=fd,addr.str=nbd"] + null_export_args(),
        notify=notify_path)
    try:
        # Connecting spawns blockd; the greeting comes from it.
        with Qmp(qmp_path, timeout=60) as q:
            assert "QMP" in q.greeting
            assert recv_notify(ns) == "READY=1"
            srv = q.cmd("query-nbd-server")
            assert srv, srv
            h = nbd.NBD()
            h.connect_uri("nbd+unix:///disk?socket=%s" % nbd_path)
            assert h.get_size() == 1048576
            assert h.pread(4096, 0) == bytes(4096)
            h.shutdown()
        # blockd did not bind new files: the supervisor's sockets stay.
        assert stop(proc) == 0
        assert os.path.exists(qmp_path)
    finally:
        stop(proc)
        log.close()
        ns.close()


def test_socket_activation_by_address(sockdir):
    """Without names: an option that names the path of a passed socket
    takes that socket instead of binding (so a unit's ExecStart is the
    same with and without socket activation)."""
    qmp_path = os.path.join(sockdir, "qmp.sock")
    nbd_path = os.path.join(sockdir, "nbd.sock")
    before = os.stat
    proc, log = start_activated(
        sockdir, [qmp_path, nbd_path], None,
        ["--chardev", "socket,id=mon,path=%s,server=on,wait=off" % qmp_path,
         "--monitor", "mon",
         "--nbd-server", "addr.type=unix,addr.path=%s" % nbd_path]
        + null_export_args())
    try:
        ino_qmp = before(qmp_path).st_ino
        ino_nbd = before(nbd_path).st_ino
        with Qmp(qmp_path, timeout=60) as q:
            q.cmd("query-version")
            h = nbd.NBD()
            h.connect_uri("nbd+unix:///disk?socket=%s" % nbd_path)
            assert h.get_size() == 1048576
            h.shutdown()
        # The same socket files: taken over, not replaced.
        assert os.stat(qmp_path).st_ino == ino_qmp
        assert os.stat(nbd_path).st_ino == ino_nbd
        assert stop(proc) == 0
        # ... and not removed at exit: they are the supervisor's.
        assert os.path.exists(qmp_path) and os.path.exists(nbd_path)
    finally:
        stop(proc)
        log.close()


def test_socket_activation_unknown_name(sockdir):
    qmp_path = os.path.join(sockdir, "qmp.sock")
    proc, log = start_activated(
        sockdir, [qmp_path], ["qmp"],
        ["--chardev", "socket,id=mon,fd=nope,server=on", "--monitor", "mon"])
    try:
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(qmp_path)
        assert proc.wait(60) == 1
        c.close()
        text = open(log.name).read()
        assert "No socket named 'nope' was passed by socket activation" \
            in text, text
    finally:
        stop(proc)
        log.close()


def test_journal_prefixes(sockdir):
    """JOURNAL_STREAM names stderr: lines carry <N> syslog levels."""
    errpath = os.path.join(sockdir, "stderr")
    with open(errpath, "wb") as err:
        st = os.fstat(err.fileno())
        env = dict(os.environ,
                   JOURNAL_STREAM="%d:%d" % (st.st_dev, st.st_ino))
        r = subprocess.run(
            [BLOCKD, "--blockdev",
             "driver=file,node-name=f,filename=/nonexistent/x"],
            env=env, stdout=subprocess.DEVNULL, stderr=err, timeout=60)
    assert r.returncode == 1
    lines = open(errpath).read().splitlines()
    assert lines and all(line.startswith("<") for line in lines), lines
    assert any(line.startswith("<3>") and "/nonexistent/x" in line
               for line in lines), lines

    # JOURNAL_STREAM for another file: plain text.
    with open(errpath, "wb") as err:
        env = dict(os.environ, JOURNAL_STREAM="1:1")
        subprocess.run([BLOCKD, "--blockdev",
                        "driver=file,node-name=f,filename=/nonexistent/x"],
                       env=env, stdout=subprocess.DEVNULL, stderr=err,
                       timeout=60)
    text = open(errpath).read()
    assert text.startswith("blockd: "), text


def test_log_format_json(sockdir):
    r = subprocess.run([BLOCKD, "--log-format", "json", "--blockdev",
                        "driver=file,node-name=f,filename=/nonexistent/x"],
                       capture_output=True, timeout=60)
    assert r.returncode == 1
    lines = r.stderr.decode().splitlines()
    assert lines
    for line in lines:
        rec = json.loads(line)
        assert set(rec) == {"time", "level", "program", "message"}, rec
        assert rec["program"] == "blockd"
    assert any(json.loads(line)["level"] == "error" and
               "/nonexistent/x" in json.loads(line)["message"]
               for line in lines)


def test_log_format_bad():
    r = subprocess.run([BLOCKD, "--log-format", "xml"], capture_output=True,
                       timeout=60)
    assert r.returncode == 1
    assert b"--log-format: 'xml' is not one of text, journal, json" \
        in r.stderr


def test_units_verify():
    """The unit files are ones systemd accepts (systemd-analyze verify
    checks syntax and directives; it does not need systemd as PID 1).
    The built units name the install paths: ExecStart is pointed at the
    build tree's programs for the check."""
    requires("systemd-analyze")
    units = os.path.join(BUILDDIR, "systemd")
    with tempfile.TemporaryDirectory() as d:
        for name in ("blockd.service", "blockd.socket"):
            text = open(os.path.join(units, name)).read()
            text = re.sub(r"ExecStart=\S*/blockd ",
                          "ExecStart=%s " % BLOCKD, text)
            open(os.path.join(d, name), "w").write(text)
        r = subprocess.run(["systemd-analyze", "verify", "--man=no",
                            os.path.join(d, "blockd.service"),
                            os.path.join(d, "blockd.socket")],
                           capture_output=True, timeout=120, cwd=d)
        out = (r.stdout + r.stderr).decode()
        assert r.returncode == 0, out
        # An unknown or misspelt directive is only a warning ("Unknown
        # key ..., ignoring"): none may be there.
        assert "ignoring" not in out and "Unknown" not in out, out
