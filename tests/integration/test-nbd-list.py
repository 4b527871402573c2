"""blockctl list (the NBD client's list mode) against real servers:
its output must be, line for line, what Debian's qemu-nbd -L prints
for the same server -- blockd itself, qemu-nbd, nbdkit with several
exports and nbd-server (no structured replies) -- over unix sockets,
TCP (IPv4, IPv6) and an inherited descriptor; and a failure is exit
status 1 with "blockctl: <error>" on standard error."""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import BLOCKCTL, requires, wait_socket

MIB = 1 << 20
TIMEOUT = 60


def run(*cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True,
                          timeout=TIMEOUT, **kw)


def qemu_nbd_list(*addr):
    """qemu-nbd -L's output (checked to succeed), as lines."""
    p = run("qemu-nbd", "-L", *addr)
    assert p.returncode == 0, p.stderr
    return p.stdout.splitlines()


def blockctl_list(*addr, **kw):
    p = run(BLOCKCTL, "list", *addr, **kw)
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    return p.stdout.splitlines()


def assert_same(qemu, ours):
    """Line by line, with the first difference in the message."""
    for i, (q, b) in enumerate(zip(qemu, ours)):
        assert q == b, "line %d: qemu-nbd %r, blockctl %r\n%s" % (
            i + 1, q, b, "\n".join(ours))
    assert len(qemu) == len(ours), "\n".join(ours)


def wait_tcp(host, port, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("%s:%d never accepted" % (host, port))


def free_port(host="127.0.0.1"):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def have_ipv6():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def kill_pidfile(path, timeout=TIMEOUT):
    """Stop a forked server by the PID it wrote, and wait for it."""
    try:
        with open(path) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="nbdl-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


# ---- blockd ----------------------------------------------------------------

@pytest.fixture
def blockd_exports(blockd, tmp_path):
    """Several exports: a writable qcow2 with allocation-depth and a
    description, a read-only one, one without a description, and the
    default (empty) name."""
    requires("qemu-img")
    img = str(tmp_path / "d.qcow2")
    raw = str(tmp_path / "r.raw")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", img, "4M"],
                   check=True)
    with open(raw, "wb") as f:
        f.truncate(MIB)
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    blockd.cmd("blockdev-add", {"driver": "qcow2", "node-name": "q0",
                                "file": {"driver": "file",
                                         "filename": img}})
    blockd.cmd("blockdev-add", {"driver": "file", "node-name": "r0",
                                "filename": raw, "read-only": True})
    blockd.cmd("blockdev-add", {"driver": "null-co", "node-name": "n0",
                                "size": 2 * MIB})
    blockd.cmd("nbd-server-start",
               addr={"type": "unix", "data": {"path": sock}})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                    "node-name": "q0", "name": "disk",
                                    "description": "the main disk",
                                    "writable": True,
                                    "allocation-depth": True})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e1",
                                    "node-name": "r0", "name": "ro",
                                    "description": "read only"})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e2",
                                    "node-name": "n0", "name": "plain"})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e3",
                                    "node-name": "n0", "name": ""})
    return sock


def test_blockd(blockd_exports):
    requires("qemu-nbd")
    ours = blockctl_list("-s", blockd_exports)
    assert_same(qemu_nbd_list("-k", blockd_exports), ours)
    assert ours[0] == "exports available: 4"
    assert " export: 'disk'" in ours
    assert "  description: the main disk" in ours
    assert "   qemu:allocation-depth" in ours
    assert any("readonly" in line for line in ours)


# ---- qemu-nbd ----------------------------------------------------------------

@pytest.fixture
def qemu_nbd_server(sockdir, tmp_path):
    """qemu-nbd on a unix socket and one on 127.0.0.1 (forked; stopped
    by the PIDs they wrote)."""
    requires("qemu-nbd", "qemu-img")
    img = str(tmp_path / "q.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", img, "3M"],
                   check=True)
    sock = os.path.join(sockdir, "q.sock")
    port = free_port()
    pids = [os.path.join(sockdir, "q1.pid"), os.path.join(sockdir, "q2.pid")]
    try:
        subprocess.run(["qemu-nbd", "-f", "qcow2", "-r", "-x", "vm",
                        "-D", "a qemu-nbd export", "-A", "-k", sock,
                        "--fork", "--pid-file", pids[0], "-t", img],
                       check=True, timeout=TIMEOUT)
        subprocess.run(["qemu-nbd", "-f", "qcow2", "-r", "-x", "tcp",
                        "-b", "127.0.0.1", "-p", str(port), "--fork",
                        "--pid-file", pids[1], "-t", img],
                       check=True, timeout=TIMEOUT)
        wait_socket(sock)
        wait_tcp("127.0.0.1", port)
        yield sock, port
    finally:
        for p in pids:
            kill_pidfile(p)


def test_qemu_nbd(qemu_nbd_server):
    sock, port = qemu_nbd_server
    ours = blockctl_list("-s", sock)
    assert_same(qemu_nbd_list("-k", sock), ours)
    assert ours[:3] == ["exports available: 1", " export: 'vm'",
                        "  description: a qemu-nbd export"]
    ours = blockctl_list("--host", "127.0.0.1", "--port", str(port))
    assert_same(qemu_nbd_list("-b", "127.0.0.1", "-p", str(port)), ours)
    assert ours[1] == " export: 'tcp'"


# ---- nbdkit ------------------------------------------------------------------

def start_nbdkit(sockdir, name, *args, listen=None):
    """nbdkit (forked, with a PID file) on a unix socket, or on
    listen=(host, port); returns the PID file."""
    pid = os.path.join(sockdir, name + ".pid")
    cmd = ["nbdkit", "-P", pid]
    if listen is None:
        cmd += ["-U", os.path.join(sockdir, name + ".sock")]
    else:
        cmd += ["-i", listen[0], "-p", str(listen[1])]
    subprocess.run(cmd + list(args), check=True, timeout=TIMEOUT)
    if listen is None:
        wait_socket(os.path.join(sockdir, name + ".sock"))
    else:
        wait_tcp(*listen)
    return pid


@pytest.fixture
def nbdkit_servers(sockdir):
    requires("nbdkit", "qemu-nbd")
    pids = []
    yield lambda *a, **kw: pids.append(start_nbdkit(sockdir, *a, **kw))
    for p in pids:
        kill_pidfile(p)


def test_nbdkit_several_exports(nbdkit_servers, sockdir):
    nbdkit_servers("k", "--filter=exportname", "memory", "1M",
                   "exportname-list=explicit", "exportname=a",
                   "exportname=b", "exportname=third",
                   "exportdesc=fixed:nbdkit memory")
    sock = os.path.join(sockdir, "k.sock")
    ours = blockctl_list("-s", sock)
    assert_same(qemu_nbd_list("-k", sock), ours)
    assert ours[0] == "exports available: 3"
    assert [line for line in ours if line.startswith(" export:")] == [
        " export: 'a'", " export: 'b'", " export: 'third'"]


def test_nbdkit_read_only_and_empty_list(nbdkit_servers, sockdir):
    nbdkit_servers("r", "-r", "memory", "64K")
    nbdkit_servers("e", "--filter=exportname", "memory", "1M",
                   "exportname-list=empty")
    for name in ("r", "e"):
        sock = os.path.join(sockdir, name + ".sock")
        ours = blockctl_list("-s", sock)
        assert_same(qemu_nbd_list("-k", sock), ours)
    assert ours == ["exports available: 0"]


def test_nbdkit_list_refused(nbdkit_servers, sockdir):
    """A server that answers OPT_LIST with an error: both fail."""
    nbdkit_servers("x", "--filter=exportname", "memory", "1M",
                   "exportname-list=error")
    sock = os.path.join(sockdir, "x.sock")
    q = run("qemu-nbd", "-L", "-k", sock)
    b = run(BLOCKCTL, "list", "-s", sock)
    assert q.returncode == 1
    assert b.returncode == 1
    assert b.stdout == ""
    assert b.stderr.startswith("blockctl: "), b.stderr
    assert "NBD_OPT_LIST" in b.stderr, b.stderr


def test_nbdkit_tcp(nbdkit_servers):
    port = free_port()
    nbdkit_servers("t4", "memory", "2M", listen=("127.0.0.1", port))
    ours = blockctl_list("--host", "127.0.0.1", "--port", str(port))
    assert_same(qemu_nbd_list("-b", "127.0.0.1", "-p", str(port)), ours)
    assert ours[2] == "  size:  %d" % (2 * MIB)


def test_nbdkit_tcp_ipv6(nbdkit_servers):
    if not have_ipv6():
        pytest.skip("no IPv6 loopback (::1) on this machine")
    port = free_port("::1")
    nbdkit_servers("t6", "memory", "2M", listen=("::1", port))
    ours = blockctl_list("--host", "::1", "--port", str(port))
    assert_same(qemu_nbd_list("-b", "::1", "-p", str(port)), ours)
    assert ours[0] == "exports available: 1"


def test_inherited_fd(nbdkit_servers, sockdir):
    """--fd: a connected socket handed down; nbdkit -s serves on its
    stdin/stdout.  Same output as qemu-nbd -L over a unix socket."""
    nbdkit_servers("u", "memory", "1M")
    want = qemu_nbd_list("-k", os.path.join(sockdir, "u.sock"))
    ours_end, srv_end = socket.socketpair()
    srv = subprocess.Popen(["nbdkit", "-s", "memory", "1M"],
                           stdin=srv_end, stdout=srv_end,
                           stderr=subprocess.PIPE)
    srv_end.close()
    try:
        ours = blockctl_list("--fd", str(ours_end.fileno()),
                             pass_fds=[ours_end.fileno()])
    finally:
        ours_end.close()
        srv.wait(timeout=TIMEOUT)
    assert_same(want, ours)


# ---- nbd-server ----------------------------------------------------------------

@pytest.fixture
def nbd_server(sockdir, tmp_path):
    """Debian's nbd-server (no structured replies), with two exports,
    on a unix socket (and 127.0.0.1, which nbd-server always opens)."""
    requires("nbd-server", "qemu-nbd")
    sock = os.path.join(sockdir, "n.sock")
    pid = os.path.join(sockdir, "n.pid")
    conf = str(tmp_path / "nbd.conf")
    for name in ("a.img", "b.img"):
        with open(str(tmp_path / name), "wb") as f:
            f.truncate(MIB)
    with open(conf, "w") as f:
        f.write("[generic]\n"
                "    unixsock = %s\n"
                "    listenaddr = 127.0.0.1\n"
                "    port = %d\n"
                "    allowlist = true\n"
                "[alpha]\n"
                "    exportname = %s\n"
                "    readonly = true\n"
                "[beta]\n"
                "    exportname = %s\n"
                "    flush = true\n"
                "    fua = true\n"
                "    trim = true\n"
                % (sock, free_port(), tmp_path / "a.img",
                   tmp_path / "b.img"))
    try:
        subprocess.run(["nbd-server", "-C", conf, "-p", pid], check=True,
                       timeout=TIMEOUT, capture_output=True)
        wait_socket(sock)
        yield sock
    finally:
        kill_pidfile(pid)


def test_nbd_server(nbd_server):
    ours = blockctl_list("-s", nbd_server)
    assert_same(qemu_nbd_list("-k", nbd_server), ours)
    assert ours[0] == "exports available: 2"
    assert " export: 'alpha'" in ours and " export: 'beta'" in ours
    # No structured replies: no meta contexts at all.
    assert not any("meta contexts" in line for line in ours)


# ---- failures ------------------------------------------------------------------

def test_no_server(sockdir):
    missing = os.path.join(sockdir, "missing.sock")
    b = run(BLOCKCTL, "list", "-s", missing)
    assert b.returncode == 1
    assert b.stdout == ""
    assert b.stderr.startswith("blockctl: "), b.stderr
    assert missing in b.stderr


def test_not_nbd(blockd):
    """A QMP socket is not an NBD server: a clear error."""
    b = run(BLOCKCTL, "list", "-s", blockd.qmp_path, "--timeout", "30")
    assert b.returncode == 1
    assert b.stderr.startswith("blockctl: Invalid magic received"), b.stderr


@pytest.mark.parametrize("args,msg", [
    ([], "list needs one server address"),
    (["-s", "/x", "--host", "h"], "list needs one server address"),
    (["-s", "/x", "extra"], "list: unexpected argument 'extra'"),
    (["-s", "/x", "--timeout", "soon"], "invalid --timeout"),
])
def test_usage_errors(args, msg):
    b = run(BLOCKCTL, "list", *args)
    assert b.returncode == 1
    assert b.stderr.startswith("blockctl: " + msg), b.stderr


# ---- the fake server (tests/integration/fakenbd.py) ----------------------------

def test_fake_simple_replies(sockdir):
    """A server without structured replies or extended headers, with a
    description: the same lines as qemu-nbd -L."""
    from fakenbd import FakeNbd
    requires("qemu-nbd")
    path = os.path.join(sockdir, "f.sock")
    with FakeNbd(path, exports=["x", "y"], structured=False,
                 extended=False, description="fake", max_block=65536):
        ours = blockctl_list("-s", path)
        assert_same(qemu_nbd_list("-k", path), ours)
    assert ours[0] == "exports available: 2"
    assert "  max block: 65536" in ours


def test_fake_endless_list(sockdir):
    """OPT_LIST that never ends: blockctl stops at its cap with a clear
    error instead of eating memory."""
    from fakenbd import FakeNbd
    path = os.path.join(sockdir, "f.sock")
    with FakeNbd(path, misbehave={"endless_list"}):
        b = run(BLOCKCTL, "list", "-s", path)
    assert b.returncode == 1
    assert b.stdout == ""
    assert b.stderr == "blockctl: Server listed more than 65536 exports\n"


def test_fake_bad_block_size(sockdir):
    """A maximum block size below the minimum: both clients refuse."""
    from fakenbd import FakeNbd
    requires("qemu-nbd")
    path = os.path.join(sockdir, "f.sock")
    with FakeNbd(path, exports=["z"], max_block=0):
        q = run("qemu-nbd", "-L", "-k", path)
        b = run(BLOCKCTL, "list", "-s", path)
    assert q.returncode == 1
    assert b.returncode == 1
    assert b.stderr.startswith("blockctl: Export 'z': Server maximum "
                               "block size 0"), b.stderr
