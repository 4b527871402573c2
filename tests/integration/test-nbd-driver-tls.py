"""The "nbd" block driver through TLS (tls-creds, tls-hostname): Debian's
qemu-nbd --tls-creds (x509 with verify-peer, and PSK) and blockd's own
TLS server as upstreams, the node exported again by blockd in clear and
read and written with qemu-io / qemu-img compare; the refusals (wrong
hostname, another CA, wrong PSK key, endpoint mismatch, unknown id, a
server without TLS) as clear errors; the credentials pinned while a node
uses them; a reconnect that runs the TLS handshake again.

Certificates are made at test time with certtool, keys with psktool
(pki.py)."""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import nbd
import pytest

import pki
from conftest import QmpError, requires

PATTERN = bytes(range(256)) * 256          # 64 KiB


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """x509 directories (srv, cli; rogue: a client of another CA) and PSK
    directories (psksrv; pskcli: alice's key; pskbad: another key)."""
    pki.require_tools()
    base = tmp_path_factory.mktemp("pki")
    ca = pki.Ca(base / "ca")
    other = pki.Ca(base / "other", cn="another CA")
    out = {
        "srv": ca.x509_dir(base / "srv", "server"),
        "cli": ca.x509_dir(base / "cli", "client", cn="client1"),
        "rogue": other.x509_dir(base / "rogue", "client", cn="client1"),
        "psksrv": pki.psk_dir(base / "psksrv", {"alice": None}),
    }
    with open(os.path.join(out["psksrv"], "keys.psk")) as f:
        key = f.read().strip().split(":", 1)[1]
    out["pskcli"] = pki.psk_dir(base / "pskcli", {"alice": key})
    bad = ("%02x" % ((int(key[:2], 16) + 1) & 0xff)) + key[2:]
    out["pskbad"] = pki.psk_dir(base / "pskbad", {"alice": bad})
    return out


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="bdt-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


class QemuNbd:
    """qemu-nbd serving img as export "d" on a unix socket, stopped by
    PID; with tls (a --object string of id t0), TLS is mandatory."""

    def __init__(self, sockdir, img, tls=None):
        requires("qemu-nbd")
        self.sock = os.path.join(sockdir, "up.sock")
        self.argv = ["qemu-nbd", "-f", "raw", "-t", "-e", "8", "-x", "d",
                     "-k", self.sock]
        if tls is not None:
            self.argv += ["--object", tls, "--tls-creds", "t0"]
        self.argv.append(img)
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None:
                raise RuntimeError("qemu-nbd exited with %d"
                                   % self.proc.returncode)
            if time.monotonic() > deadline:
                raise TimeoutError("qemu-nbd did not listen")
            time.sleep(0.02)

    def kill(self):
        """SIGKILL and remove the socket: reconnects fail until
        start()."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
        self.proc = None
        if os.path.exists(self.sock):
            os.unlink(self.sock)


@pytest.fixture
def upstreams():
    started = []
    yield started
    for u in started:
        u.kill()


def x509_server(certs):
    return ("tls-creds-x509,id=t0,endpoint=server,verify-peer=on,dir=%s"
            % certs["srv"])


def psk_server(certs):
    return "tls-creds-psk,id=t0,endpoint=server,dir=%s" % certs["psksrv"]


def disk(tmp_path, name="up.raw"):
    img = str(tmp_path / name)
    with open(img, "wb") as f:
        f.write(PATTERN)
        f.truncate(4 << 20)
    return img


def add_x509_client(blockd, certs, id="c0", dir="cli"):
    blockd.cmd("object-add", {"qom-type": "tls-creds-x509", "id": id,
                              "endpoint": "client", "dir": certs[dir]})


def add_psk_client(blockd, certs, id="c0", dir="pskcli"):
    blockd.cmd("object-add", {"qom-type": "tls-creds-psk", "id": id,
                              "endpoint": "client", "dir": certs[dir],
                              "username": "alice"})


def nbd_opts(sock, node="n0", export="d", **kw):
    o = {"driver": "nbd", "node-name": node, "export": export,
         "server": {"type": "unix", "path": sock}}
    o.update(kw)
    return o


def export_clear(blockd, node="n0", name="e0"):
    """Export node from blockd without TLS; its URI."""
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    if not os.path.exists(sock):
        blockd.cmd("nbd-server-start",
                   addr={"type": "unix", "data": {"path": sock}})
    blockd.cmd("block-export-add", {"type": "nbd", "id": name,
                                    "node-name": node, "name": name,
                                    "writable": True})
    return "nbd+unix:///%s?socket=%s" % (name, sock)


def qemu_io(uri, *cmds):
    argv = ["qemu-io", "-f", "raw"]
    for c in cmds:
        argv += ["-c", c]
    r = subprocess.run(argv + [uri], capture_output=True, text=True,
                       timeout=120)
    out = r.stdout.lower()
    assert r.returncode == 0 and "error" not in out and \
        "failed" not in out and "pattern verification" not in out, \
        r.stdout + r.stderr
    return r.stdout


def img_compare(a, b):
    r = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw",
                        a, b], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def read_write_compare(blockd, uri, img):
    """Read the upstream's first bytes through blockd, write through it,
    and compare blockd's export with the upstream's file."""
    requires("qemu-io", "qemu-img")
    h = nbd.NBD()
    h.connect_uri(uri)
    assert h.pread(len(PATTERN), 0) == PATTERN
    h.shutdown()
    qemu_io(uri, "write -P 0x5a 1M 1M", "write -P 0xa5 3M 4k",
            "read -P 0x5a 1M 1M", "read -P 0xa5 3M 4k")
    img_compare(uri, img)
    with open(img, "rb") as f:
        f.seek(1 << 20)
        assert f.read(1 << 20) == b"\x5a" * (1 << 20)


def blockdev_add_error(blockd, opts):
    with pytest.raises(QmpError) as e:
        blockd.cmd("blockdev-add", opts)
    assert blockd.cmd("query-named-block-nodes") == []
    print("blockdev-add refused:", e.value.desc)
    return e.value.desc


# ---- through TLS ---------------------------------------------------------


def test_x509_qemu_nbd_verify_peer(blockd, sockdir, tmp_path, certs,
                                   upstreams):
    """qemu-nbd with x509 and verify-peer=on: the node's client
    certificate is accepted, the server's is checked against the CA and
    tls-hostname; data flows both ways."""
    img = disk(tmp_path)
    up = QemuNbd(sockdir, img, x509_server(certs))
    upstreams.append(up)
    add_x509_client(blockd, certs)
    blockd.cmd("blockdev-add", nbd_opts(up.sock, **{
        "tls-creds": "c0", "tls-hostname": "localhost"}))
    read_write_compare(blockd, export_clear(blockd), img)


def test_x509_inet_checks_the_host(blockd, tmp_path, certs, upstreams):
    """Over TCP without tls-hostname the host of the address is what the
    certificate must name (127.0.0.1 is in it)."""
    requires("qemu-nbd")
    img = disk(tmp_path)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    up = QemuNbd.__new__(QemuNbd)
    up.sock = os.path.join(str(tmp_path), "none.sock")     # not used
    up.argv = ["qemu-nbd", "-f", "raw", "-t", "-e", "8", "-x", "d",
               "-b", "127.0.0.1", "-p", str(port),
               "--object", x509_server(certs), "--tls-creds", "t0", img]
    up.proc = subprocess.Popen(up.argv, stdin=subprocess.DEVNULL)
    upstreams.append(up)
    add_x509_client(blockd, certs)
    opts = {"driver": "nbd", "node-name": "n0", "export": "d",
            "server": {"type": "inet", "host": "127.0.0.1",
                       "port": str(port)},
            "tls-creds": "c0", "open-timeout": 30}
    blockd.cmd("blockdev-add", opts)
    read_write_compare(blockd, export_clear(blockd), img)


def test_psk_qemu_nbd(blockd, sockdir, tmp_path, certs, upstreams):
    img = disk(tmp_path)
    up = QemuNbd(sockdir, img, psk_server(certs))
    upstreams.append(up)
    add_psk_client(blockd, certs)
    blockd.cmd("blockdev-add", nbd_opts(up.sock, **{"tls-creds": "c0"}))
    read_write_compare(blockd, export_clear(blockd), img)


def test_blockd_tls_server_upstream(blockd_factory, tmp_path, certs):
    """One blockd serves a file through TLS (x509, verify-peer), another
    opens it with the nbd driver and exports it in clear."""
    img = disk(tmp_path)
    up = blockd_factory()
    up.cmd("object-add", {"qom-type": "tls-creds-x509", "id": "s0",
                          "endpoint": "server", "dir": certs["srv"],
                          "verify-peer": True})
    up.cmd("blockdev-add", driver="file", node_name="f0", filename=img)
    usock = os.path.join(up.sockdir, "tls.sock")
    up.cmd("nbd-server-start", {"addr": {"type": "unix",
                                         "data": {"path": usock}},
                                "tls-creds": "s0"})
    up.cmd("block-export-add", {"type": "nbd", "id": "x", "node-name": "f0",
                                "name": "d", "writable": True})
    down = blockd_factory()
    add_x509_client(down, certs)
    down.cmd("blockdev-add", nbd_opts(usock, **{
        "tls-creds": "c0", "tls-hostname": "localhost"}))
    read_write_compare(down, export_clear(down), img)


# ---- refusals --------------------------------------------------------------


def test_errors(blockd, sockdir, tmp_path, certs, upstreams):
    """Each refusal is a clear error, leaves no node and no pin: the
    credentials can be deleted afterwards."""
    img = disk(tmp_path)
    up = QemuNbd(sockdir, img, x509_server(certs))
    upstreams.append(up)
    add_x509_client(blockd, certs)
    add_x509_client(blockd, certs, id="rogue", dir="rogue")
    blockd.cmd("object-add", {"qom-type": "tls-creds-x509", "id": "srv",
                              "endpoint": "server", "dir": certs["srv"]})
    blockd.cmd("object-add", {"qom-type": "secret", "id": "sec0",
                              "data": "x"})

    desc = blockdev_add_error(blockd, nbd_opts(up.sock, **{
        "tls-creds": "nope"}))
    assert desc == "No TLS credentials with id 'nope'"
    desc = blockdev_add_error(blockd, nbd_opts(up.sock, **{
        "tls-creds": "sec0"}))
    assert desc == "Object with id 'sec0' is not TLS credentials"
    desc = blockdev_add_error(blockd, nbd_opts(up.sock, **{
        "tls-creds": "srv"}))
    assert desc == "Expected TLS credentials for a client endpoint"
    desc = blockdev_add_error(blockd, nbd_opts(up.sock, **{
        "tls-hostname": "localhost"}))
    assert desc == "tls-hostname is set but tls-creds is not"

    desc = blockdev_add_error(blockd, nbd_opts(up.sock, **{
        "tls-creds": "c0", "tls-hostname": "wrong.example"}))
    assert "wrong.example" in desc, desc
    desc = blockdev_add_error(blockd, nbd_opts(up.sock, **{
        "tls-creds": "rogue"}))
    assert "TLS" in desc or "certificate" in desc, desc
    # A server without TLS refuses STARTTLS: no fallback to clear text.
    plain = QemuNbd(tempfile.mkdtemp(prefix="bdt-", dir="/tmp"), img)
    upstreams.append(plain)
    try:
        desc = blockdev_add_error(blockd, nbd_opts(plain.sock, **{
            "tls-creds": "c0"}))
        assert "TLS" in desc, desc
    finally:
        plain.kill()
        shutil.rmtree(os.path.dirname(plain.sock), ignore_errors=True)
    # Nothing kept them.
    for id in ("c0", "rogue", "srv", "sec0"):
        blockd.cmd("object-del", id=id)
    add_x509_client(blockd, certs)
    # A unix socket without tls-hostname: no name to check the server's
    # certificate against, refused as QEMU's nbd driver does.
    desc = blockdev_add_error(blockd, nbd_opts(up.sock, **{
        "tls-creds": "c0"}))
    assert desc.endswith("No hostname for certificate validation"), desc
    # The same node with good credentials opens.
    blockd.cmd("blockdev-add", nbd_opts(up.sock, **{
        "tls-creds": "c0", "tls-hostname": "localhost"}))


def test_wrong_psk_key(blockd, sockdir, tmp_path, certs, upstreams):
    up = QemuNbd(sockdir, disk(tmp_path), psk_server(certs))
    upstreams.append(up)
    add_psk_client(blockd, certs, id="bad", dir="pskbad")
    desc = blockdev_add_error(blockd, nbd_opts(up.sock, **{
        "tls-creds": "bad"}))
    assert "TLS" in desc, desc
    blockd.cmd("object-del", id="bad")


def test_object_del_refused_while_node_uses_creds(blockd, sockdir, tmp_path,
                                                  certs, upstreams):
    up = QemuNbd(sockdir, disk(tmp_path), x509_server(certs))
    upstreams.append(up)
    add_x509_client(blockd, certs)
    blockd.cmd("blockdev-add", nbd_opts(up.sock, **{
        "tls-creds": "c0", "tls-hostname": "localhost"}))
    with pytest.raises(QmpError) as e:
        blockd.cmd("object-del", id="c0")
    assert "'c0' is in use" in e.value.desc and \
        up.sock in e.value.desc, e.value.desc
    # A second node on the same credentials pins them too.
    blockd.cmd("blockdev-add", nbd_opts(up.sock, node="n1", **{
        "tls-creds": "c0", "tls-hostname": "localhost"}))
    blockd.cmd("blockdev-del", node_name="n0")
    with pytest.raises(QmpError):
        blockd.cmd("object-del", id="c0")
    blockd.cmd("blockdev-del", node_name="n1")
    blockd.cmd("object-del", id="c0")
    assert blockd.cmd("query-objects") == []


# ---- reconnect -------------------------------------------------------------


def test_reconnect_runs_the_tls_handshake_again(blockd, sockdir, tmp_path,
                                                certs, upstreams):
    """qemu-nbd (TLS) is killed and restarted: a read waiting in blockd
    (reconnect-delay 60) completes through the new TLS connection."""
    img = disk(tmp_path)
    up = QemuNbd(sockdir, img, x509_server(certs))
    upstreams.append(up)
    add_x509_client(blockd, certs)
    blockd.cmd("blockdev-add", nbd_opts(up.sock, **{
        "tls-creds": "c0", "tls-hostname": "localhost",
        "reconnect-delay": 60}))
    uri = export_clear(blockd)
    qemu_io(uri, "write -P 0x22 0 64k")
    up.kill()
    ev = blockd.conn.get_event("NBD_CLIENT_DISCONNECTED", timeout=60)
    assert ev["data"]["node-name"] == "n0"
    h = nbd.NBD()
    h.connect_uri(uri)
    buf = nbd.Buffer(65536)
    cookie = h.aio_pread(buf, 0)
    h.poll(0)
    assert not h.aio_command_completed(cookie)
    up.start()
    ev = blockd.conn.get_event("NBD_CLIENT_RECONNECTED", timeout=60)
    assert ev["data"]["node-name"] == "n0"
    deadline = time.monotonic() + 120
    while not h.aio_command_completed(cookie):
        assert time.monotonic() < deadline, "the read never completed"
        h.poll(1000)
    assert buf.to_bytearray() == b"\x22" * 65536
    h.shutdown()
    qemu_io(uri, "write -P 0x33 2M 1M", "read -P 0x33 2M 1M")
    img_compare(uri, img)


def test_command_line(blockd_factory, sockdir, tmp_path, certs, upstreams):
    """--object then --blockdev driver=nbd,tls-creds=... as
    qemu-storage-daemon takes them (the open on the loop thread)."""
    img = disk(tmp_path)
    up = QemuNbd(sockdir, img, psk_server(certs))
    upstreams.append(up)
    d = blockd_factory(
        "--object", "tls-creds-psk,id=c0,endpoint=client,username=alice,"
        "dir=%s" % certs["pskcli"],
        "--blockdev", "driver=nbd,node-name=n0,export=d,server.type=unix,"
        "server.path=%s,tls-creds=c0" % up.sock)
    read_write_compare(d, export_clear(d), img)
    with pytest.raises(QmpError):
        d.cmd("object-del", id="c0")
