"""gnutls is loaded only when TLS is used (crypto/tls-module.h): what
calls it is the module crypto-tls.so, which blockd and blockd-nbd
dlopen() on the first tls-creds-* object (or secret that needs
decoding).  A start-up without TLS maps neither the module nor gnutls;
the first TLS object loads both under the seccomp sandbox (on by
default) and TLS then works; a missing module is a clear error and the
daemon goes on serving.  Uses PSK keys (no certtool needed) and
python3-libnbd as the TLS client."""
import base64
import os
import subprocess

import pytest

from conftest import BLOCKD_NBD, QmpError, wait_socket

KEY = "a1b2c3d4e5f60718293a4b5c6d7e8f90"


def mapped(pid, lib):
    with open("/proc/%d/maps" % pid) as f:
        return any(lib in line for line in f)


def psk_dir(tmp_path):
    d = tmp_path / "psk"
    d.mkdir()
    (d / "keys.psk").write_text("alice:%s\n" % KEY)
    return str(d)


def add(d, qom_type, id, **props):
    args = {"qom-type": qom_type, "id": id}
    args.update({k.replace("_", "-"): v for k, v in props.items()})
    return d.cmd("object-add", args)


def read_over_tls(sock, keys_dir, name):
    import nbd
    h = nbd.NBD()
    h.set_tls(nbd.TLS_REQUIRE)
    h.set_tls_psk_file(os.path.join(keys_dir, "keys.psk"))
    h.set_tls_username("alice")
    h.set_export_name(name)
    h.connect_unix(sock)
    try:
        return h.pread(4096, 0)
    finally:
        h.shutdown()


def test_loaded_on_first_tls_object_under_sandbox(blockd, tmp_path):
    img = tmp_path / "a.raw"
    img.write_bytes(b"t" * 65536)
    # Not at start-up ...
    assert not mapped(blockd.pid, "libgnutls")
    assert not mapped(blockd.pid, "crypto-tls.so")
    # ... nor for a raw secret, nor for a plain NBD server ...
    add(blockd, "secret", "raw0", data="hello")
    blockd.cmd("blockdev-add", driver="file", node_name="f0",
               filename=str(img))
    assert not mapped(blockd.pid, "libgnutls")
    # ... but for the first TLS credentials, with the sandbox on.
    keys = psk_dir(tmp_path)
    add(blockd, "tls-creds-psk", "psk0", dir=keys, endpoint="server")
    assert mapped(blockd.pid, "crypto-tls.so")
    assert mapped(blockd.pid, "libgnutls")
    with open("/proc/%d/status" % blockd.pid) as f:
        assert "Seccomp:\t2" in f.read()
    # A base64 secret decodes through the module too.
    add(blockd, "secret", "b64", format="base64",
        data=base64.b64encode(b"s3cret").decode())
    # TLS works end to end: STARTTLS, handshake, peer check, data.
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    blockd.cmd("nbd-server-start", tls_creds="psk0",
               addr={"type": "unix", "data": {"path": sock}})
    blockd.cmd("block-export-add", type="nbd", id="e0", node_name="f0")
    assert read_over_tls(sock, keys, "f0") == b"t" * 4096
    assert read_over_tls(sock, keys, "f0") == b"t" * 4096


def test_missing_module(blockd_factory, tmp_path, monkeypatch):
    empty = tmp_path / "modules"
    empty.mkdir()
    monkeypatch.setenv("BLOCKD_MODULE_DIR", str(empty))
    d = blockd_factory()
    want = ("TLS is not available: could not load its module: %s/"
            "crypto-tls.so: cannot open shared object file" % empty)
    with pytest.raises(QmpError) as e:
        add(d, "tls-creds-psk", "psk0", dir=psk_dir(tmp_path),
            endpoint="server")
    assert e.value.cls == "GenericError"
    assert e.value.desc.startswith(want), e.value.desc
    with pytest.raises(QmpError) as e:
        add(d, "secret", "b64", format="base64", data="aGVsbG8=")
    assert e.value.desc.startswith(want), e.value.desc
    # Neither id was taken; what needs no TLS still works.
    assert [o["id"] for o in d.cmd("query-objects")] == []
    add(d, "secret", "raw0", data="hello")
    d.cmd("blockdev-add", driver="null-co", node_name="n0")


def test_blockd_nbd_starts_without_gnutls(tmp_path):
    img = tmp_path / "img.raw"
    img.write_bytes(b"\0" * 65536)
    sock = "/tmp/btm-%d.sock" % os.getpid()
    p = subprocess.Popen([BLOCKD_NBD, "-t", "-f", "raw", "-k", sock,
                          str(img)], stdin=subprocess.DEVNULL)
    try:
        wait_socket(sock, p)
        assert not mapped(p.pid, "libgnutls")
        assert not mapped(p.pid, "crypto-tls.so")
    finally:
        p.terminate()
        assert p.wait(30) == 0


def test_blockd_nbd_tls_and_missing_module(tmp_path):
    img = tmp_path / "img.raw"
    img.write_bytes(b"q" * 65536)
    keys = psk_dir(tmp_path)
    sock = "/tmp/btm-%d.sock" % os.getpid()
    args = [BLOCKD_NBD, "--object",
            "tls-creds-psk,id=tls0,endpoint=server,dir=" + keys,
            "--tls-creds", "tls0", "-t", "-f", "raw", "-x", "e",
            "-k", sock, str(img)]
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL)
    try:
        wait_socket(sock, p)
        assert mapped(p.pid, "libgnutls")
        assert read_over_tls(sock, keys, "e") == b"q" * 4096
    finally:
        p.terminate()
        assert p.wait(30) == 0
    env = dict(os.environ, BLOCKD_MODULE_DIR=str(tmp_path / "none"))
    r = subprocess.run(args, env=env, capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=60)
    assert r.returncode == 1
    assert ("TLS is not available: could not load its module: %s/none/"
            "crypto-tls.so" % tmp_path) in r.stderr, r.stderr
    assert not os.path.exists(sock)
