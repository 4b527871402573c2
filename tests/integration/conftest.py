"""Shared fixtures for blockd's integration tests.

Tests run under Debian's /usr/bin/python3 with pytest (meson runs each
tests/integration/test-*.py file as one test).  They start a real blockd
and talk to it with real clients.

    def test_something(blockd):            # a started daemon
        blockd.cmd("blockdev-add", {"driver": "null-co", "node-name": "n0"})
        with pytest.raises(QmpError) as e:
            blockd.cmd("blockdev-del", node_name="nope")
        assert e.value.cls == "GenericError"

    def test_other(blockd_factory):        # custom command line
        d = blockd_factory("--blockdev", "driver=null-co,node-name=n0")

Keyword arguments to cmd() have '_' turned into '-' (node_name ->
node-name); pass a dict for names that really contain '_'.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

SRCDIR = os.environ.get(
    "BLOCKD_SRCDIR",
    os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BUILDDIR = os.environ.get("BLOCKD_BUILDDIR", os.path.join(SRCDIR, "build"))
BLOCKD = os.environ.get("BLOCKD", os.path.join(BUILDDIR, "blockd"))
BLOCKCTL = os.environ.get("BLOCKCTL", os.path.join(BUILDDIR, "blockctl"))
BLOCKD_NBD = os.environ.get("BLOCKD_NBD",
                            os.path.join(BUILDDIR, "blockd-nbd"))
# Waits for blockd (start, QMP replies, stop) are multiplied by this:
# tests/valgrind.sh runs blockd ~30x slower.
SLOW = float(os.environ.get("BLOCKD_TEST_SLOW", "1"))


def requires(*programs):
    """Skip the test (with the reason printed) unless every program is
    on PATH."""
    for p in programs:
        if shutil.which(p) is None:
            pytest.skip("%s is not installed" % p)


def wait_socket(path, proc=None, timeout=30.0):
    """Wait until a unix socket accepts connections (its file appears at
    bind(), before listen()); RuntimeError if proc exits meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("server exited with %d" % proc.returncode)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError("socket %s did not appear" % path)
            time.sleep(0.02)
        finally:
            s.close()


def pipes(pid):
    """How many pipes process pid holds open (the splice paths' pipes)."""
    n = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)).startswith("pipe:"):
                n += 1
        except FileNotFoundError:
            pass
    return n


def pattern(size, seed):
    """Bytes that differ at every position and between seeds."""
    block = bytes((i * 7 + seed) & 0xFF for i in range(251))
    return (block * (size // len(block) + 1))[:size]


def wait_no_clients(blockd, export=None, timeout=30.0):
    """Wait until blockd has seen every client of EXPORT (default: of
    every export) leave.  A client that closed its socket is gone for
    the client at once, for the server only once its loop has read the
    end of file: a `block-export-del` (mode safe) sent meanwhile fails
    with "still in use"."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(e["clients"] == 0 for e in blockd.cmd("query-block-exports")
               if export is None or e["id"] == export):
            return
        time.sleep(0.01)
    raise TimeoutError("clients still connected")


class QmpError(Exception):
    """An {"error": ...} reply."""

    def __init__(self, cls, desc, reply=None):
        super().__init__("%s: %s" % (cls, desc))
        self.cls = cls
        self.desc = desc
        self.reply = reply


class Qmp:
    """A QMP connection over a unix socket (or ("127.0.0.1", port))."""

    def __init__(self, addr, negotiate=True, timeout=10.0):
        family = socket.AF_UNIX if isinstance(addr, str) else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout * SLOW)
        self.sock.connect(addr)
        self.buf = b""
        self.events = []
        self.next_id = 1
        self.decoder = json.JSONDecoder()
        self.greeting = self.recv_raw()
        if negotiate:
            self.cmd("qmp_capabilities")

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send_raw(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def recv_raw(self, timeout=None):
        """The next JSON object the server sends (event or reply)."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        while True:
            text = self.buf.lstrip()
            if text:
                try:
                    obj, end = self.decoder.raw_decode(text.decode())
                    self.buf = text.decode()[end:].encode()
                    return obj
                except ValueError:
                    pass
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("QMP connection closed")
            self.buf += chunk

    def recv_reply(self):
        """The next non-event message; events are kept in self.events."""
        while True:
            obj = self.recv_raw()
            if "event" in obj:
                self.events.append(obj)
                continue
            return obj

    def execute(self, request):
        """Send a request object (or raw string) and return the reply."""
        if isinstance(request, (dict, list)):
            request = json.dumps(request)
        self.send_raw(request)
        return self.recv_reply()

    def cmd(self, name, args=None, **kwargs):
        """Run a command: its return value, or raise QmpError."""
        arguments = dict(args or {})
        for k, v in kwargs.items():
            arguments[k.replace("_", "-")] = v
        req = {"execute": name, "id": self.next_id}
        self.next_id += 1
        if arguments:
            req["arguments"] = arguments
        reply = self.execute(req)
        if "error" in reply:
            raise QmpError(reply["error"]["class"], reply["error"]["desc"],
                           reply)
        assert reply.get("id") == req["id"], reply
        return reply["return"]

    def get_event(self, name=None, timeout=10.0):
        """Wait for an event (by name); raise TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if name is None or ev["event"] == name:
                    return self.events.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no event %s" % name)
            try:
                obj = self.recv_raw(timeout=left)
            except socket.timeout:
                raise TimeoutError("no event %s" % name)
            finally:
                self.sock.settimeout(10.0)
            if "event" in obj:
                self.events.append(obj)


class Blockd:
    """A blockd process with one unix QMP socket (self.qmp_path)."""

    def __init__(self, workdir, args=(), monitor=True, wait=True):
        self.workdir = str(workdir)
        os.makedirs(self.workdir, exist_ok=True)
        # unix socket paths are limited to 107 bytes: keep them short
        self.sockdir = tempfile.mkdtemp(prefix="bd-", dir="/tmp")
        self.qmp_path = os.path.join(self.sockdir, "qmp.sock")
        self.log_path = os.path.join(self.workdir, "blockd.log")
        self.args = [BLOCKD]
        if monitor:
            self.args += ["--chardev",
                          "socket,id=mon0,path=%s,server=on,wait=off"
                          % self.qmp_path,
                          "--monitor", "chardev=mon0"]
        self.args += list(args)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=self.log,
                                     cwd=self.workdir)
        self.pid = self.proc.pid
        self._qmp = None
        if monitor and wait:
            try:
                self.wait_socket(self.qmp_path)
            except BaseException:
                # Not handed to the fixture yet: stop it here.
                self.proc.kill()
                self.proc.wait()
                self.log.close()
                raise

    def wait_socket(self, path, timeout=10.0):
        try:
            wait_socket(path, self.proc, timeout * SLOW)
        except RuntimeError:
            raise RuntimeError("blockd exited with %d: %s"
                               % (self.proc.returncode, self.logtext()))

    def logtext(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def qmp(self, negotiate=True):
        """A new QMP connection."""
        return Qmp(self.qmp_path, negotiate=negotiate)

    def cmd(self, name, args=None, **kwargs):
        """Run a command on a shared connection."""
        if self._qmp is None:
            self._qmp = self.qmp()
        return self._qmp.cmd(name, args, **kwargs)

    @property
    def conn(self):
        if self._qmp is None:
            self._qmp = self.qmp()
        return self._qmp

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Stop by PID; returns the exit status."""
        if self._qmp is not None:
            self._qmp.close()
            self._qmp = None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout * SLOW)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.sockdir, ignore_errors=True)
        return self.proc.returncode


@pytest.fixture
def blockd_factory(tmp_path):
    started = []

    def start(*args, monitor=True, wait=True):
        d = Blockd(tmp_path / ("blockd%d" % len(started)), args,
                   monitor=monitor, wait=wait)
        started.append(d)
        return d

    yield start
    failures = []
    for d in started:
        was_alive = d.alive()
        rc = d.stop()
        # A daemon still running at the end must shut down cleanly on
        # SIGTERM: status 0, so sanitizer reports (leaks, use after free
        # at teardown) fail the test that caused them.
        if was_alive and rc != 0:
            failures.append("blockd exited with %d on SIGTERM:\n%s"
                            % (rc, d.logtext()))
    assert not failures, "\n".join(failures)


@pytest.fixture
def blockd(blockd_factory):
    d = blockd_factory()
    yield d
    # A test must not crash the daemon: it is still serving at the end.
    assert d.alive(), "blockd died: " + d.logtext()
    d.cmd("query-version")


@pytest.fixture
def shm_dir():
    """A scratch directory on tmpfs (/dev/shm), for memory-backed images."""
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm on this machine")
    d = tempfile.mkdtemp(prefix="blockd-test-", dir="/dev/shm")
    yield d
    shutil.rmtree(d)


@pytest.fixture
def node(blockd, tmp_path):
    """A 1 MiB raw file opened as the file node "f0"; its name."""
    img = str(tmp_path / "a.raw")
    with open(img, "wb") as f:
        f.truncate(1 << 20)
    blockd.cmd("blockdev-add", driver="file", node_name="f0", filename=img)
    return "f0"
