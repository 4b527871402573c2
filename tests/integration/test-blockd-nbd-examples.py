"""The EXAMPLES of qemu-nbd's manual, run for real with blockd-nbd (and,
where the outcome is observable, the same with Debian's qemu-nbd):
TLS x509 with authz, the --image-opts 1 MiB subset, the read-only
forked socket for 5 readers, -L through TLS with PSK."""
import os
import signal
import subprocess
import threading

import nbd
import pytest

from conftest import requires, wait_socket
from pki import Ca, psk_dir, require_tools
from qnbd import (PROGS, Served, free_port, nbdinfo_json, require_qemu_nbd,
                  run, wait_for)

BOTH = ["blockd-nbd", "qemu-nbd"]


@pytest.fixture(autouse=True)
def _oracle():
    require_qemu_nbd()
    requires("qemu-img", "qemu-io", "nbdinfo")


def make_image(path, fmt, size, pattern_writes):
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, path, size],
                   check=True)
    for cmd in pattern_writes:
        subprocess.run(["qemu-io", "-f", fmt, "-c", cmd, path],
                       check=True, capture_output=True)


def wait_tcp(port, proc, timeout=30):
    import socket

    def up():
        if proc.poll() is not None:
            raise RuntimeError("server exited with %d" % proc.returncode)
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", port))
            return True
        except OSError:
            return False
        finally:
            s.close()
    wait_for(up, timeout, "port %d" % port)


def test_tls_x509_with_authz(tmp_path):
    """qemu-nbd --object tls-creds-x509,id=tls0,endpoint=server,dir=D
    --object 'authz-simple,id=auth0,identity=DN' --tls-creds tls0
    --tls-authz auth0 -t -x example file.qcow2"""
    require_tools()
    img = str(tmp_path / "file.qcow2")
    make_image(img, "qcow2", "4M", ["write -P 0x42 0 64k"])
    ca = Ca(tmp_path / "ca")
    srv = ca.x509_dir(tmp_path / "srv", "server")
    laptop = ca.x509_dir(tmp_path / "laptop", "client",
                         cn="laptop.example.com", org="Example Org")
    other = ca.x509_dir(tmp_path / "other", "client",
                        cn="desktop.example.com", org="Example Org")
    # gnutls' DN of the laptop's certificate, commas doubled for
    # QemuOpts.
    identity = "O=Example Org,,CN=laptop.example.com"
    for n in BOTH:
        port = free_port()
        p = subprocess.Popen(
            [PROGS[n], "--object",
             "tls-creds-x509,id=tls0,endpoint=server,dir=%s" % srv,
             "--object", "authz-simple,id=auth0,identity=%s" % identity,
             "--tls-creds", "tls0", "--tls-authz", "auth0", "-t",
             "-x", "example", "-b", "127.0.0.1", "-p", str(port), img],
            stderr=subprocess.PIPE, text=True)
        try:
            wait_tcp(port, p)
            uri = "nbds://127.0.0.1:%d/example?tls-certificates=%%s" % port
            h = nbd.NBD()
            h.set_uri_allow_local_file(True)
            h.connect_uri(uri % laptop)
            assert h.pread(65536, 0) == b"\x42" * 65536, n
            h.shutdown()
            h = nbd.NBD()
            h.set_uri_allow_local_file(True)
            with pytest.raises(nbd.Error):
                h.connect_uri(uri % other)
                h.pread(512, 0)
            # Plain text is refused too.
            h = nbd.NBD()
            with pytest.raises(nbd.Error):
                h.connect_uri("nbd://127.0.0.1:%d/example" % port)
                h.pread(512, 0)
            assert p.poll() is None
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=20)
            p.stderr.close()


def test_image_opts_subset(tmp_path):
    """qemu-nbd --image-opts --export-name=subset
    driver=raw,offset=1M,size=1M,file.driver=file,file.filename=file.raw"""
    img = str(tmp_path / "file.raw")
    make_image(img, "raw", "4M", ["write -P 0x01 0 1M",
                                  "write -P 0x02 1M 1M",
                                  "write -P 0x03 2M 1M"])
    opts = ("driver=raw,offset=1M,size=1M,file.driver=file,"
            "file.filename=%s" % img)
    for n in BOTH:
        with Served(PROGS[n], tmp_path / "s.sock",
                    ["-t", "--image-opts", "--export-name=subset",
                     opts]) as s:
            info = nbdinfo_json(s.uri("subset"))["exports"][0]
            assert info["export-size"] == 1024 * 1024
            h = nbd.NBD()
            h.connect_uri(s.uri("subset"))
            assert h.pread(1024 * 1024, 0) == b"\x02" * (1024 * 1024)
            h.shutdown()


def test_forked_read_only_five_readers(tmp_path):
    """qemu-nbd --fork --persistent --shared=5 --socket=SOCK --read-only
    --format=qcow2 file.qcow2 (plus --pid-file, to stop it)"""
    img = str(tmp_path / "file.qcow2")
    make_image(img, "qcow2", "4M", ["write -P 0x07 0 1M"])
    for n in BOTH:
        sock = str(tmp_path / (n + ".sock"))
        pidf = str(tmp_path / (n + ".pid"))
        st, out, err = run(PROGS[n], [
            "--fork", "--persistent", "--shared=5", "--socket=" + sock,
            "--read-only", "--format=qcow2", "--pid-file=" + pidf, img])
        assert (st, out, err) == (0, "", ""), n
        pid = int(open(pidf).read())
        try:
            handles = []
            for _ in range(5):
                h = nbd.NBD()
                h.connect_uri("nbd+unix:///?socket=" + sock)
                handles.append(h)
            for h in handles:
                assert h.is_read_only()
                assert h.can_multi_conn()
                assert h.pread(4096, 0) == b"\x07" * 4096
            with pytest.raises(nbd.Error):
                handles[0].pwrite(b"x" * 512, 0)
            # A sixth reader waits for a place.
            got = threading.Event()

            def sixth():
                h6 = nbd.NBD()
                h6.connect_uri("nbd+unix:///?socket=" + sock)
                h6.pread(512, 0)
                h6.shutdown()
                got.set()
            t = threading.Thread(target=sixth, daemon=True)
            t.start()
            assert not got.wait(1.0)
            handles.pop().shutdown()
            assert got.wait(30)
            for h in handles:
                h.shutdown()
            # --persistent: still there with nobody connected.
            assert os.path.exists("/proc/%d" % pid)
        finally:
            os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not os.path.exists(sock), 30, "socket removed")


def test_list_with_psk(tmp_path):
    """qemu-nbd -L -k SOCK --object tls-creds-psk,id=tls0,endpoint=client,
    dir=KEYS,username=alice --tls-creds=tls0, against a blockd-nbd and a
    qemu-nbd server that require TLS with PSK: same lines."""
    require_tools()
    keys = psk_dir(tmp_path / "keys", {"alice": None})
    img = str(tmp_path / "file.qcow2")
    make_image(img, "qcow2", "4M", [])
    client = ["-L", "--object",
              "tls-creds-psk,id=tls0,endpoint=client,dir=%s,username=alice"
              % keys, "--tls-creds=tls0"]
    for server in BOTH:
        port = free_port()
        p = subprocess.Popen(
            [PROGS[server], "--object",
             "tls-creds-psk,id=tls0,endpoint=server,dir=%s" % keys,
             "--tls-creds", "tls0", "-t", "-x", "secret", "-D", "by psk",
             "-b", "127.0.0.1", "-p", str(port), img],
            stderr=subprocess.PIPE, text=True)
        try:
            wait_tcp(port, p)
            addr = ["-b", "127.0.0.1", "-p", str(port)]
            outs = {n: run(PROGS[n], client + addr) for n in BOTH}
            assert outs["blockd-nbd"] == outs["qemu-nbd"], server
            st, out, _ = outs["blockd-nbd"]
            assert st == 0
            assert " export: 'secret'\n  description: by psk\n" in out
            # Without TLS the server lists nothing: both fail alike.
            plain = {n: run(PROGS[n], ["-L"] + addr)[0] for n in BOTH}
            assert plain["blockd-nbd"] == plain["qemu-nbd"] == 1
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=20)
            p.stderr.close()
