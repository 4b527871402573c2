"""blockd's command line: qemu-storage-daemon's options, carried out in
order, each a QMP command; --pidfile, --daemonize, --qmp, a monitor that
connects out (server=off); bad options exit 1 with a clear message."""
import json
import os
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import BLOCKD, Qmp


def run(*args, timeout=20):
    return subprocess.run([BLOCKD, *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_help_and_version():
    r = run("--help")
    assert r.returncode == 0
    for opt in ["--chardev", "--monitor", "--blockdev", "--object",
                "--nbd-server", "--export", "--pidfile", "--daemonize",
                "--qmp"]:
        assert opt in r.stdout
    r = run("-V")
    assert r.returncode == 0
    assert r.stdout.startswith("blockd ")


@pytest.mark.parametrize("args,msg", [
    (["--bogus"], "unrecognized option '--bogus'"),
    (["-x"], "invalid option -- 'x'"),
    (["--blockdev"], "requires an argument"),
    (["stray"], "Unexpected argument: stray"),
    (["--monitor", "chardev=nope"], 'chardev "nope" not found'),
    (["--chardev", "socket,id=c,path=/x,bogus=1"],
     "Invalid parameter 'bogus'"),
    (["--chardev", "pty,id=c"], "chardev backend 'pty' is not supported"),
    (["--qmp", "udp:1"], "--qmp: expected unix:PATH or tcp:HOST:PORT"),
    (["--blockdev", "driver=nope,node-name=n"],
     "Parameter 'driver' does not accept value 'nope'"),
    (["--blockdev", '{"driver": "null-co", "node-name": }'],
     "--blockdev: JSON parse error"),
    (["--blockdev", "driver=null-co,node-name=n,size=lots"],
     "Parameter 'size'"),
])
def test_bad_options_exit_1(args, msg):
    r = run(*args)
    assert r.returncode == 1, r
    assert r.stderr.startswith("blockd: "), r.stderr
    assert msg in r.stderr, r.stderr


def test_qmp_short_option_unix_and_tcp(tmp_path):
    sock = tempfile.mktemp(prefix="bd-", dir="/tmp")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    p = subprocess.Popen([BLOCKD, "--qmp", "unix:" + sock,
                          "--qmp", "tcp:127.0.0.1:%d" % port],
                         stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(sock) and time.monotonic() < deadline:
            time.sleep(0.02)
        with Qmp(sock) as q:
            assert q.cmd("query-version")
        with Qmp(("127.0.0.1", port)) as q:
            assert q.cmd("query-version")
    finally:
        p.terminate()
        assert p.wait(10) == 0
    assert not os.path.exists(sock)


def test_pretty_monitor(blockd_factory):
    sock = tempfile.mktemp(prefix="bd-", dir="/tmp")
    d = blockd_factory("--chardev",
                       "socket,id=p,path=%s,server=on,wait=off" % sock,
                       "--monitor", "p,pretty=on")
    d.wait_socket(sock)
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock)
    data = b""
    while b"\r\n" not in data:
        data += s.recv(4096)
    assert data.startswith(b'{\n    "QMP": {\n')
    s.close()


def test_monitor_connecting_out(tmp_path):
    """server=off: blockd connects to a QMP client that listens."""
    path = tempfile.mktemp(prefix="bd-", dir="/tmp")
    ls = socket.socket(socket.AF_UNIX)
    ls.bind(path)
    ls.listen(1)
    p = subprocess.Popen([BLOCKD, "--chardev",
                          "socket,id=c,path=%s,server=off" % path,
                          "--monitor", "chardev=c"])
    try:
        ls.settimeout(10)
        conn, _ = ls.accept()
        f = conn.makefile("rwb")
        greeting = json.loads(f.readline())
        assert "QMP" in greeting
        f.write(b'{"execute": "qmp_capabilities"}\n')
        f.flush()
        assert json.loads(f.readline()) == {"return": {}}
        f.write(b'{"execute": "quit", "id": 1}\n')
        f.flush()
        assert json.loads(f.readline()) == {"return": {}, "id": 1}
        assert f.readline() == b""       # closed: no SHUTDOWN event
        assert p.wait(10) == 0
    finally:
        if p.poll() is None:
            p.kill()
        ls.close()
        os.unlink(path)


def test_monitor_connect_out_refused():
    r = run("--chardev", "socket,id=c,path=/nonexistent/sock,server=off",
            "--monitor", "chardev=c")
    assert r.returncode == 1
    assert "Failed to connect to '/nonexistent/sock'" in r.stderr


def test_pidfile_and_daemonize(tmp_path):
    sock = tempfile.mktemp(prefix="bd-", dir="/tmp")
    pidfile = tmp_path / "blockd.pid"
    r = run("--qmp", "unix:" + sock, "--pidfile", str(pidfile),
            "--daemonize")
    assert r.returncode == 0, r.stderr
    # the parent returned only once the socket listened
    assert os.path.exists(sock)
    pid = int(pidfile.read_text())
    try:
        with Qmp(sock) as q:
            assert q.cmd("query-version")
        # a second instance with the same pidfile refuses to start
        r2 = run("--pidfile", str(pidfile))
        assert r2.returncode == 1
        assert "pid file" in r2.stderr
    finally:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while os.path.exists(pidfile) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pidfile.exists()
    assert not os.path.exists(sock)


def test_daemonize_failure_exits_nonzero():
    r = run("--daemonize", "--blockdev", "driver=nope,node-name=x")
    assert r.returncode == 1
    assert "does not accept value 'nope'" in r.stderr


def test_options_run_in_order(blockd_factory):
    d = blockd_factory(
        "--blockdev", "driver=null-co,node-name=n0,size=67108864",
        "--blockdev", '{"driver": "raw", "node-name": "r0", "file": "n0"}')
    names = {n["node-name"]: n for n in d.cmd("query-named-block-nodes")}
    assert names["n0"]["image"]["virtual-size"] == 64 << 20
    assert names["r0"]["drv"] == "raw"


def test_blockdev_option_referencing_later_node_fails():
    r = run("--blockdev", '{"driver": "raw", "node-name": "r0", "file": "n0"}',
            "--blockdev", "driver=null-co,node-name=n0")
    assert r.returncode == 1
    assert "n0" in r.stderr


def test_defaults_with_no_options(tmp_path):
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path))
    p = subprocess.Popen([BLOCKD], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        sock = tmp_path / "blockd" / "qmp.sock"
        first = p.stdout.readline()
        assert "blockd" in first
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        with Qmp(str(sock)) as q:
            assert q.cmd("query-version")
            exports = q.cmd("query-block-exports")
            assert [e["id"] for e in exports] == ["scratch"]
        uri = "nbd+unix:///scratch?socket=%s" % (tmp_path / "blockd" /
                                                  "nbd.sock")
        r = subprocess.run(["nbdinfo", "--size", uri], capture_output=True,
                           text=True, timeout=20)
        assert r.returncode == 0, r.stderr
        assert int(r.stdout) == 1 << 30
        r = subprocess.run(["qemu-io", "-f", "raw", "-c",
                            "write -P 0x5a 0 64k", "-c",
                            "read -P 0x5a 0 64k", uri],
                           capture_output=True, text=True, timeout=20)
        assert r.returncode == 0 and "verification failed" not in r.stdout
        # A trim really gives the scratch file's space back, so the
        # export offers it.
        img = tmp_path / "blockd" / "scratch.img"
        used = img.stat().st_blocks
        r = subprocess.run(["qemu-io", "-f", "raw", "-c", "discard 0 64k",
                            "-c", "read -P 0 0 64k", uri],
                           capture_output=True, text=True, timeout=20)
        assert r.returncode == 0 and "verification failed" not in r.stdout
        assert img.stat().st_blocks < used
    finally:
        p.send_signal(signal.SIGINT)
        assert p.wait(10) == 0
    # the scratch disk and the sockets are gone
    assert not (tmp_path / "blockd" / "scratch.img").exists()
    assert not (tmp_path / "blockd" / "nbd.sock").exists()
    assert not (tmp_path / "blockd" / "qmp.sock").exists()


def test_implied_keys_of_export_and_object(blockd_factory, tmp_path):
    sock = tempfile.mktemp(prefix="bd-", dir="/tmp")
    d = blockd_factory(
        "--blockdev", "driver=null-co,node-name=n0,read-zeroes=on",
        "--nbd-server", "addr.type=unix,addr.path=" + sock,
        "--export", "nbd,id=e0,node-name=n0,name=zero")
    exports = d.cmd("query-block-exports")
    assert [(e["id"], e["type"]) for e in exports] == [("e0", "nbd")]
    r = subprocess.run(["nbdinfo", "--size",
                        "nbd+unix:///zero?socket=" + sock],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0 and int(r.stdout) == 1 << 30
    # --object's implied key is qom-type: object-add is reached and
    # checks the secret's properties
    r = run("--object", "secret,id=s0")
    assert r.returncode == 1
    assert "Either 'data' or 'file' must be provided" in r.stderr
