"""The NBD server with real clients: python3-libnbd, nbdinfo, nbdcopy,
qemu-img and qemu-io, over a unix socket and TCP on 127.0.0.1.  Data is
read back exactly and block status matches qemu-img's view of the file.
"""
import json
import os
import random
import socket
import subprocess

import nbd
import pytest

from conftest import requires


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def make_image(path, size=16 << 20, extents=()):
    """A sparse raw file with data written at each (offset, bytes)."""
    with open(path, "wb") as f:
        f.truncate(size)
        for off, data in extents:
            f.seek(off)
            f.write(data)


def start_server(blockd, img, writable=True, tcp=False, name="disk",
                 node="f0", discard=None, **export):
    node_opts = {"driver": "file", "node-name": node, "filename": img}
    if discard is not None:
        node_opts["discard"] = discard
    blockd.cmd("blockdev-add", node_opts)
    if tcp:
        port = free_port()
        blockd.cmd("nbd-server-start",
                   addr={"type": "inet",
                         "data": {"host": "127.0.0.1", "port": str(port)}})
        uri = "nbd://127.0.0.1:%d/%s" % (port, name)
    else:
        sock = os.path.join(blockd.sockdir, "nbd.sock")
        blockd.cmd("nbd-server-start",
                   addr={"type": "unix", "data": {"path": sock}})
        uri = "nbd+unix:///%s?socket=%s" % (name, sock)
    args = {"type": "nbd", "id": "e0", "node-name": node, "name": name,
            "writable": writable}
    args.update({k.replace("_", "-"): v for k, v in export.items()})
    blockd.cmd("block-export-add", args)
    return uri


def connect(uri, structured=True):
    h = nbd.NBD()
    h.set_request_structured_replies(structured)
    h.add_meta_context("base:allocation")
    h.connect_uri(uri)
    return h


@pytest.mark.parametrize("tcp", [False, True], ids=["unix", "tcp"])
def test_qemu_io_write_read_back(blockd, tmp_path, tcp):
    requires("qemu-io")
    img = str(tmp_path / "a.raw")
    make_image(img)
    uri = start_server(blockd, img, tcp=tcp)
    out = subprocess.run(
        ["qemu-io", "-f", "raw",
         "-c", "write -P 0x5a 4096 1M",
         "-c", "write -z 2M 64k",
         "-c", "discard 4M 1M",
         "-c", "flush",
         "-c", "read -P 0x5a 4096 1M",
         "-c", "read -P 0 2M 64k", uri],
        capture_output=True, text=True, check=True)
    assert "Pattern verification failed" not in out.stdout + out.stderr
    with open(img, "rb") as f:
        f.seek(4096)
        assert f.read(1 << 20) == b"\x5a" * (1 << 20)
        f.seek(2 << 20)
        assert f.read(65536) == bytes(65536)


@pytest.mark.parametrize("tcp", [False, True], ids=["unix", "tcp"])
def test_libnbd_random_io(blockd, tmp_path, tcp):
    img = str(tmp_path / "a.raw")
    make_image(img)
    # discard=unmap: with the default (ignore) discards are dropped and
    # the export offers no TRIM (test-nbd-caps.py).
    uri = start_server(blockd, img, tcp=tcp, discard="unmap")
    h = connect(uri)
    assert h.get_size() == 16 << 20
    assert h.can_flush() and h.can_fua() and h.can_trim()
    assert h.can_zero() and h.can_fast_zero() and h.can_cache()
    assert h.can_multi_conn() and h.can_df()
    assert not h.is_read_only()
    assert h.get_structured_replies_negotiated()
    rnd = random.Random(5)
    model = bytearray(16 << 20)
    for i in range(200):
        off = rnd.randrange(0, (16 << 20) - 70000)
        n = rnd.randrange(1, 70000)
        data = rnd.randbytes(n)
        h.pwrite(data, off, nbd.CMD_FLAG_FUA if i % 7 == 0 else 0)
        model[off:off + n] = data
    h.zero(65536, 8192)
    model[8192:8192 + 65536] = bytes(65536)
    h.flush()
    h.cache(1 << 20, 0)
    for i in range(100):
        off = rnd.randrange(0, (16 << 20) - 100000)
        n = rnd.randrange(1, 100000)
        assert h.pread(n, off) == bytes(model[off:off + n])
    # The last MiB of the export.
    assert h.pread(1 << 20, (15 << 20)) == bytes(model[15 << 20:])
    h.shutdown()
    with open(img, "rb") as f:
        assert f.read() == bytes(model)


def test_sparse_read_gives_holes(blockd, tmp_path):
    img = str(tmp_path / "a.raw")
    make_image(img, extents=[(1 << 20, b"x" * 4096)])
    uri = start_server(blockd, img, writable=False)
    h = connect(uri)
    chunks = []

    def chunk(buf, offset, status, err):
        chunks.append((offset, len(buf), status, bytes(buf)))
        return 0

    buf = h.pread_structured(1 << 20 + 1, 0, chunk)
    assert buf[:1 << 20] == bytes(1 << 20)
    assert buf[1 << 20:(1 << 20) + 4096] == b"x" * 4096
    kinds = {c[2] for c in chunks}
    assert nbd.READ_HOLE in kinds and nbd.READ_DATA in kinds
    # The chunks tile the request exactly.
    covered = sorted((c[0], c[1]) for c in chunks)
    pos = 0
    for off, n in covered:
        assert off == pos
        pos += n
    assert pos == 2 << 20
    # With DF, one data chunk only.
    chunks.clear()
    h.pread_structured(65536, 0, chunk, nbd.CMD_FLAG_DF)
    assert [c[2] for c in chunks] == [nbd.READ_DATA]
    h.shutdown()


def test_simple_replies_without_structured(blockd, tmp_path):
    img = str(tmp_path / "a.raw")
    make_image(img, extents=[(0, b"abc")])
    uri = start_server(blockd, img)
    h = nbd.NBD()
    h.set_request_structured_replies(False)
    h.connect_uri(uri)
    assert not h.get_structured_replies_negotiated()
    assert not h.can_df()
    assert h.pread(3, 0) == b"abc"
    h.pwrite(b"xyz", 10)
    assert h.pread(13, 0) == b"abc" + bytes(7) + b"xyz"
    with pytest.raises(nbd.Error) as e:
        h.pread(10, 16 << 20)
    assert e.value.errno == "EINVAL"
    h.shutdown()


def qemu_map(target, image_opts=False):
    cmd = ["qemu-img", "map", "--output=json"]
    cmd += ["--image-opts", target] if image_opts else ["-f", "raw", target]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return [(e["start"], e["length"], e["data"], e["zero"])
            for e in json.loads(out.stdout)]


def merge(extents):
    res = []
    for start, length, data, zero in extents:
        if res and res[-1][2:] == (data, zero):
            res[-1] = (res[-1][0], res[-1][1] + length, data, zero)
        else:
            res.append((start, length, data, zero))
    return res


def test_block_status_matches_qemu_img_map(blockd, tmp_path):
    requires("qemu-img", "nbdinfo")
    img = str(tmp_path / "a.raw")
    rnd = random.Random(1)
    ext = [(i * 262144, rnd.randbytes(65536)) for i in range(0, 60, 3)]
    make_image(img, extents=ext)
    uri = start_server(blockd, img, writable=False)
    assert merge(qemu_map(uri)) == merge(qemu_map(img))
    # nbdinfo --map speaks base:allocation directly.
    out = subprocess.run(["nbdinfo", "--map", "--json", uri],
                         capture_output=True, text=True, check=True)
    m = json.loads(out.stdout)
    data = [(e["offset"], e["length"]) for e in m if e["type"] & 1 == 0]
    assert data == [(s, n) for s, n, d, z in merge(qemu_map(img)) if d]


def test_nbdinfo_list_and_description(blockd, tmp_path):
    requires("nbdinfo")
    img = str(tmp_path / "a.raw")
    make_image(img)
    uri = start_server(blockd, img, description="first disk")
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e1",
                                    "node-name": "f0", "name": "second"})
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    out = subprocess.run(["nbdinfo", "--list", "--json",
                          "nbd+unix://?socket=" + sock],
                         capture_output=True, text=True, check=True)
    info = json.loads(out.stdout)
    names = {e["export-name"]: e for e in info["exports"]}
    assert set(names) == {"disk", "second"}
    assert names["disk"].get("description") == "first disk"
    assert names["disk"]["export-size"] == 16 << 20
    assert names["second"]["is_read_only"] is True
    assert names["disk"]["is_read_only"] is False
    del uri


@pytest.mark.parametrize("tcp", [False, True], ids=["unix", "tcp"])
def test_nbdcopy_roundtrip(blockd, tmp_path, tcp):
    requires("nbdcopy")
    img = str(tmp_path / "a.raw")
    src = str(tmp_path / "src.raw")
    back = str(tmp_path / "back.raw")
    make_image(img, size=32 << 20)
    rnd = random.Random(2)
    make_image(src, size=32 << 20,
               extents=[(i << 20, rnd.randbytes(300000))
                        for i in range(0, 32, 2)])
    uri = start_server(blockd, img, tcp=tcp)
    subprocess.run(["nbdcopy", src, uri], check=True)
    subprocess.run(["nbdcopy", uri, back], check=True)
    with open(src, "rb") as a, open(back, "rb") as b, open(img, "rb") as c:
        want = a.read()
        assert b.read() == want
        assert c.read() == want


def test_qemu_img_convert_and_compare(blockd, tmp_path):
    requires("qemu-img")
    img = str(tmp_path / "a.raw")
    src = str(tmp_path / "src.qcow2")
    make_image(img, size=8 << 20)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", src, "8M"],
                   check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 7 1M 2M", src],
                   check=True, capture_output=True)
    uri = start_server(blockd, img)
    subprocess.run(["qemu-img", "convert", "-n", "-f", "qcow2", "-O", "raw",
                    src, uri], check=True)
    subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "raw",
                    src, uri], check=True, capture_output=True)


def test_read_only_export_refuses_writes(blockd, tmp_path):
    img = str(tmp_path / "a.raw")
    make_image(img, extents=[(0, b"keep")])
    uri = start_server(blockd, img, writable=False)
    h = connect(uri)
    assert h.is_read_only()
    assert not h.can_trim() and not h.can_zero()
    assert h.pread(4, 0) == b"keep"
    h.shutdown()
    # QEMU sees NBD_FLAG_READ_ONLY and refuses a writable open (the
    # server's own EPERM is tested with raw requests in
    # test-nbd-protocol.py).
    r = subprocess.run(["qemu-io", "-f", "raw", "-c", "write 0 512", uri],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "Permission denied" in r.stderr
    with open(img, "rb") as f:
        assert f.read(4) == b"keep"


def test_multi_conn_flush_visibility(blockd, tmp_path):
    img = str(tmp_path / "a.raw")
    make_image(img)
    uri = start_server(blockd, img)
    a = connect(uri)
    b = connect(uri)
    assert a.can_multi_conn()
    a.pwrite(b"Q" * 4096, 8192)
    b.flush()
    assert b.pread(4096, 8192) == b"Q" * 4096
    a.shutdown()
    b.shutdown()
