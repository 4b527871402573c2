"""Export flags come from the node (blk_get_caps): what nbdinfo --json and
python3-libnbd see for null-co, file, raw over file and qcow2 exports,
writable and read-only.  An export offers FUA, TRIM, WRITE_ZEROES,
FAST_ZERO, CACHE and MULTI_CONN only where the node honours them.
"""
import json
import os
import subprocess

import nbd

from conftest import requires

FLAGS = ("can_fua", "can_zero", "can_fast_zero", "can_trim", "can_cache",
         "can_multi_conn", "can_flush", "is_read_only")
WRITE_FLAGS = ("can_fua", "can_zero", "can_fast_zero", "can_trim")


class Server:
    def __init__(self, blockd):
        self.blockd = blockd
        self.sock = os.path.join(blockd.sockdir, "nbd.sock")
        blockd.cmd("nbd-server-start",
                   addr={"type": "unix", "data": {"path": self.sock}})
        self.n = 0

    def export(self, node_opts, writable=True):
        """Add node_opts as a node and export it; the flags nbdinfo and
        libnbd see, after checking that they agree."""
        self.n += 1
        node = "n%d" % self.n
        opts = dict(node_opts, **{"node-name": node})
        self.blockd.cmd("blockdev-add", opts)
        self.blockd.cmd("block-export-add", {
            "type": "nbd", "id": "e%d" % self.n, "node-name": node,
            "name": node, "writable": writable})
        uri = "nbd+unix:///%s?socket=%s" % (node, self.sock)
        out = subprocess.run(["nbdinfo", "--json", uri], capture_output=True,
                             text=True, check=True)
        info = json.loads(out.stdout)["exports"][0]
        seen = {k: info[k] for k in FLAGS}
        h = nbd.NBD()
        h.connect_uri(uri)
        lib = {k: bool(getattr(h, k)()) for k in FLAGS}
        h.shutdown()
        assert seen == lib
        return seen


def expect(flags, **want):
    got = {k: flags[k] for k in want}
    assert got == want, flags


def fs_type(path):
    return subprocess.run(["stat", "-f", "-c", "%T", path],
                          capture_output=True, text=True,
                          check=True).stdout.strip()


def make_raw(path, size=4 << 20):
    with open(path, "wb") as f:
        f.truncate(size)


def test_null_co(blockd):
    requires("nbdinfo")
    s = Server(blockd)
    # Nothing is stored: everything is trivially honoured.
    f = s.export({"driver": "null-co", "discard": "unmap"})
    expect(f, can_fua=True, can_zero=True, can_fast_zero=True,
           can_trim=True, can_cache=True, can_multi_conn=True,
           can_flush=True, is_read_only=False)
    # discard=ignore (the default) drops discards: no TRIM.
    f = s.export({"driver": "null-co"})
    expect(f, can_trim=False, can_fast_zero=True, can_fua=True)
    f = s.export({"driver": "null-co", "discard": "unmap"}, writable=False)
    expect(f, is_read_only=True, can_cache=True, can_multi_conn=True,
           **{k: False for k in WRITE_FLAGS})


def test_file(blockd, tmp_path):
    requires("nbdinfo")
    img = str(tmp_path / "a.raw")
    make_raw(img)
    s = Server(blockd)
    f = s.export({"driver": "file", "filename": img, "discard": "unmap"})
    expect(f, can_fua=True, can_zero=True, can_fast_zero=True,
           can_trim=True, can_cache=True, can_multi_conn=True,
           is_read_only=False)
    # Without unmapping only ZERO_RANGE zeroes fast, which tmpfs lacks.
    f = s.export({"driver": "file", "filename": img, "locking": "off"})
    expect(f, can_trim=False, can_zero=True,
           can_fast_zero=fs_type(img) != "tmpfs")
    f = s.export({"driver": "file", "filename": img, "discard": "unmap",
                  "read-only": True}, writable=False)
    expect(f, is_read_only=True, can_cache=True,
           **{k: False for k in WRITE_FLAGS})


def test_raw_over_file(blockd, tmp_path):
    requires("nbdinfo")
    img = str(tmp_path / "a.raw")
    make_raw(img)
    s = Server(blockd)
    f = s.export({"driver": "raw", "offset": 65536, "size": 1 << 20,
                  "discard": "unmap",
                  "file": {"driver": "file", "filename": img}})
    expect(f, can_fua=True, can_zero=True, can_fast_zero=True,
           can_trim=True, can_cache=True, can_multi_conn=True)
    # A writable export of a node that is read-only is refused; a
    # read-only export of a writable raw node offers no write flag.
    f = s.export({"driver": "raw", "discard": "unmap", "file": {
        "driver": "file", "filename": img, "locking": "off"}},
        writable=False)
    expect(f, is_read_only=True, **{k: False for k in WRITE_FLAGS})


def test_qcow2(blockd, tmp_path):
    requires("nbdinfo", "qemu-img")
    v3 = str(tmp_path / "v3.qcow2")
    v2 = str(tmp_path / "v2.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", v3, "4M"],
                   check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o",
                    "compat=0.10", v2, "4M"], check=True)
    s = Server(blockd)
    # Zero clusters are fast; FUA flushes; no prefetch.
    f = s.export({"driver": "qcow2", "discard": "unmap",
                  "file": {"driver": "file", "filename": v3}})
    expect(f, can_fua=True, can_zero=True, can_fast_zero=True,
           can_trim=True, can_cache=False, can_multi_conn=True)
    # v2 has no zero clusters.
    f = s.export({"driver": "qcow2",
                  "file": {"driver": "file", "filename": v2}})
    expect(f, can_fua=True, can_zero=True, can_fast_zero=False,
           can_trim=False, can_cache=False)


def test_fast_zero_claim_holds(blockd, tmp_path):
    """Where FAST_ZERO is offered a fast zero request succeeds, and
    where it is not (qcow2 v2) the server answers ENOTSUP at once."""
    requires("nbdinfo", "qemu-img")
    v3 = str(tmp_path / "v3.qcow2")
    v2 = str(tmp_path / "v2.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", v3, "4M"],
                   check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o",
                    "compat=0.10", v2, "4M"], check=True)
    s = Server(blockd)
    s.export({"driver": "qcow2", "file": {"driver": "file",
                                          "filename": v3}})
    s.export({"driver": "qcow2", "file": {"driver": "file",
                                          "filename": v2}})
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///n1?socket=%s" % s.sock)
    h.zero(65536, 0, nbd.CMD_FLAG_FAST_ZERO)
    h.shutdown()
    h = nbd.NBD()
    h.set_strict_mode(0)         # send the flag the server did not offer
    h.connect_uri("nbd+unix:///n2?socket=%s" % s.sock)
    try:
        h.zero(65536, 0, nbd.CMD_FLAG_FAST_ZERO)
        raise AssertionError("fast zero on qcow2 v2 succeeded")
    except nbd.Error as e:
        assert e.errnum == 95, e       # ENOTSUP
    h.shutdown()
