"""The seccomp sandbox (default on: every other integration test runs
under it) and --runas.

A forbidden call kills the daemon (SIGSYS, SECCOMP_RET_KILL_PROCESS):
--x-sandbox-selftest, a test-only option, makes blockd call execve
once its sandbox is on.  --runas drops root after the sockets are
bound: files nobody may read cannot be opened afterwards, files it may
read can."""
import os
import signal
import stat
import subprocess
import tempfile

import pytest

from conftest import BLOCKD, QmpError


def test_forbidden_call_is_fatal(blockd_factory):
    d = blockd_factory("--x-sandbox-selftest", wait=False)
    assert d.proc.wait(30) == -signal.SIGSYS, d.logtext()
    assert "calling execve" in d.logtext()


def test_sandbox_off_lets_the_call_through(blockd_factory):
    d = blockd_factory("--sandbox", "off", "--x-sandbox-selftest",
                       wait=False)
    # execve of /bin/true replaces the daemon, which then exits 0
    assert d.proc.wait(30) == 0, d.logtext()


def test_log_mode_logs_and_continues(blockd_factory):
    """--sandbox log: an unlisted call is logged by the kernel and goes
    through; the deadly ones (execve) still kill."""
    d = blockd_factory("--sandbox", "log", "--x-sandbox-selftest",
                       wait=False)
    assert d.proc.wait(30) == -signal.SIGSYS, d.logtext()
    assert "seccomp filter installed in log mode" in d.logtext()


def test_bad_mode():
    r = subprocess.run([BLOCKD, "--sandbox", "maybe"], capture_output=True,
                       text=True)
    assert r.returncode == 1
    assert "--sandbox expects 'on', 'off' or 'log', not 'maybe'" in r.stderr


def test_sandboxed_daemon_serves(blockd, tmp_path):
    """QMP, a file node, an NBD export and a client's read after the
    filter is installed (the rest of the suite covers the rest)."""
    import nbd
    img = str(tmp_path / "a.raw")
    with open(img, "wb") as f:
        f.write(b"x" * 65536)
    blockd.cmd("blockdev-add", driver="file", node_name="f0", filename=img)
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    blockd.cmd("nbd-server-start",
               addr={"type": "unix", "data": {"path": sock}})
    blockd.cmd("block-export-add", type="nbd", id="e0", node_name="f0")
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///f0?socket=%s" % sock)
    assert h.pread(4096, 0) == b"x" * 4096
    with open("/proc/%d/status" % blockd.pid) as f:
        status = f.read()
    assert "Seccomp:\t2" in status        # filter mode
    assert "NoNewPrivs:\t1" in status


def test_runas_nobody(blockd_factory):
    if os.geteuid() != 0:
        pytest.skip("--runas needs root to drop from (running as uid %d)"
                    % os.geteuid())
    d0 = tempfile.mkdtemp(prefix="bd-runas-", dir="/tmp")
    os.chmod(d0, 0o755)
    pub = os.path.join(d0, "pub.raw")
    priv = os.path.join(d0, "priv.raw")
    for p, mode in ((pub, 0o644), (priv, 0o600)):
        with open(p, "wb") as f:
            f.truncate(1 << 20)
        os.chmod(p, mode)
    try:
        d = blockd_factory("--runas", "nobody",
                           "--blockdev", "driver=file,node-name=early,"
                           "filename=%s" % priv)
        # the socket listens before the drop; QMP answers after it
        d.cmd("query-version")
        with open("/proc/%d/status" % d.pid) as f:
            ids = {l.split(":")[0]: l.split()[1:]
                   for l in f.read().splitlines()}
        nobody = subprocess.run(["id", "-u", "nobody"], capture_output=True,
                                text=True).stdout.strip()
        assert ids["Uid"] == [nobody] * 4, ids["Uid"]
        assert ids["Gid"][0] != "0"
        assert ids["Groups"] == [] or "0" not in ids["Groups"]
        # opened before the drop: still served
        d.cmd("query-named-block-nodes")
        # after it: a file nobody may read is refused, a readable one opens
        with pytest.raises(QmpError) as e:
            d.cmd("blockdev-add", driver="file", node_name="late",
                  filename=priv, read_only=True)
        assert "Permission denied" in e.value.desc
        d.cmd("blockdev-add", driver="file", node_name="pub",
              filename=pub, read_only=True)
    finally:
        for p in (pub, priv):
            os.unlink(p)
        os.rmdir(d0)


def test_runas_unknown_user():
    r = subprocess.run([BLOCKD, "--runas", "no-such-user-xyz",
                        "--blockdev", "driver=null-co,node-name=n0"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "--runas: user 'no-such-user-xyz' not found" in r.stderr


@pytest.mark.parametrize("mode,seccomp", [(None, "2"), ("off", "0")])
def test_blockd_nbd_is_sandboxed(tmp_path, mode, seccomp):
    """blockd-nbd installs the same filter once it serves (--sandbox on
    by default), and serves a client under it."""
    import nbd
    from conftest import BLOCKD_NBD, wait_socket
    img = str(tmp_path / "a.raw")
    with open(img, "wb") as f:
        f.write(b"y" * 65536)
    sock = str(tmp_path / "s.sock")
    args = [BLOCKD_NBD, "-t", "-f", "raw", "-k", sock, img]
    if mode:
        args[1:1] = ["--sandbox", mode]
    p = subprocess.Popen(args, stderr=subprocess.PIPE)
    try:
        wait_socket(sock, p)
        h = nbd.NBD()
        h.connect_unix(sock)
        assert h.pread(4096, 0) == b"y" * 4096
        h.shutdown()
        with open("/proc/%d/status" % p.pid) as f:
            status = f.read()
        assert "Seccomp:\t%s" % seccomp in status
    finally:
        p.terminate()
        assert p.wait() == 0, p.stderr.read()


def test_blockd_nbd_bad_mode():
    from conftest import BLOCKD_NBD
    r = subprocess.run([BLOCKD_NBD, "--sandbox", "maybe", "x.img"],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert "--sandbox expects 'on', 'off' or 'log', not 'maybe'" in r.stderr
