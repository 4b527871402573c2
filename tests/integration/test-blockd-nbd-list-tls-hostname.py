"""-L through TLS with x509 checks the server certificate's name as
qemu-nbd does: against --tls-hostname, else the host of -b (default
0.0.0.0); over a unix socket without --tls-hostname there is no name
to check and the listing is refused ("No hostname for certificate
validation"), not trusted.  Run beside Debian's qemu-nbd against the
same servers (the server certificate names localhost and 127.0.0.1)."""
import os
import signal
import socket
import subprocess

import pytest

from conftest import wait_socket
from pki import Ca, require_tools
from qnbd import PROGS, free_port, require_qemu_nbd, run, wait_for

BOTH = ["blockd-nbd", "qemu-nbd"]


@pytest.fixture
def pki(tmp_path):
    require_qemu_nbd()
    require_tools()
    ca = Ca(tmp_path / "ca")
    return {"srv": ca.x509_dir(tmp_path / "srv", "server"),
            "cli": ca.x509_dir(tmp_path / "cli", "client", cn="client1")}


def client_args(pki):
    return ["-L", "--object", "tls-creds-x509,id=c0,endpoint=client,"
            "dir=%s" % pki["cli"], "--tls-creds", "c0"]


def start_server(prog, pki, addr, img):
    return subprocess.Popen(
        [PROGS[prog], "--object",
         "tls-creds-x509,id=t0,endpoint=server,dir=%s" % pki["srv"],
         "--tls-creds", "t0", "-t", "-x", "e1", "-f", "raw"] + addr +
        [img], stderr=subprocess.DEVNULL)


def stop(p):
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=30)


def listing(pki, addr):
    return {n: run(PROGS[n], client_args(pki) + addr) for n in BOTH}


@pytest.mark.parametrize("server", BOTH)
def test_unix_socket(pki, tmp_path, server):
    img = str(tmp_path / "img")
    with open(img, "wb") as f:
        f.truncate(1 << 20)
    sock = "/tmp/bdlh-%d.sock" % os.getpid()
    p = start_server(server, pki, ["-k", sock], img)
    try:
        wait_socket(sock, p)
        # No name to check: refused by both.
        outs = listing(pki, ["-k", sock])
        for n in BOTH:
            st, out, err = outs[n]
            assert st == 1, n
            assert out == "", n
            assert err.startswith("nbdsrv: "), n
            assert "No hostname for certificate validation" in err, n
        # The name the certificate carries: listed, the same lines.
        outs = listing(pki, ["-k", sock, "--tls-hostname", "localhost"])
        assert outs["blockd-nbd"][:2] == outs["qemu-nbd"][:2]
        assert outs["blockd-nbd"][0] == 0
        assert "export: 'e1'" in outs["blockd-nbd"][1]
        # Another name: refused by both.
        outs = listing(pki, ["-k", sock, "--tls-hostname", "wrong.example"])
        for n in BOTH:
            st, out, err = outs[n]
            assert st == 1, n
            assert ("Certificate does not match the hostname "
                    "wrong.example") in err, n
        # The same message, with nothing before it.
        assert outs["blockd-nbd"][2] == outs["qemu-nbd"][2]
    finally:
        stop(p)


def test_tcp_bind_address_is_the_name(pki, tmp_path):
    img = str(tmp_path / "img")
    with open(img, "wb") as f:
        f.truncate(1 << 20)
    port = free_port()
    p = start_server("qemu-nbd", pki, ["-b", "127.0.0.1", "-p", str(port)],
                     img)

    def up():
        if p.poll() is not None:
            raise RuntimeError("qemu-nbd exited with %d" % p.returncode)
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", port))
            return True
        except OSError:
            return False
        finally:
            s.close()
    try:
        wait_for(up, 30, "port %d" % port)
        for host in ("127.0.0.1", "localhost"):
            outs = listing(pki, ["-b", host, "-p", str(port)])
            assert outs["blockd-nbd"][:2] == outs["qemu-nbd"][:2], host
            assert outs["blockd-nbd"][0] == 0, host
        # No -b: the name checked is 0.0.0.0, which the certificate
        # does not carry.
        outs = listing(pki, ["-p", str(port)])
        for n in BOTH:
            st, _, err = outs[n]
            assert st == 1, n
            assert "Certificate does not match the hostname 0.0.0.0" in err
        assert outs["blockd-nbd"][2] == outs["qemu-nbd"][2]
    finally:
        stop(p)
