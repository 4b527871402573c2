"""blockdev-add / blockdev-del / query-named-block-nodes / block_resize /
query-blockstats through QMP, and the bad inputs of the block layer:
each gets its error class and message, and the daemon stays up (the
`blockd` fixture checks that at the end of every test)."""
import os
import shutil
import subprocess
import time

import pytest

from conftest import QmpError, requires


def make_image(path, size):
    with open(path, "wb") as f:
        f.truncate(size)
    return str(path)


def nodes(d):
    return {n["node-name"]: n for n in d.cmd("query-named-block-nodes")}


def expect_error(d, desc, name, args=None, cls="GenericError",
                 exact=False):
    with pytest.raises(QmpError) as e:
        d.cmd(name, args)
    assert e.value.cls == cls
    if exact:
        assert e.value.desc == desc
    else:
        assert e.value.desc.startswith(desc), e.value.desc
    return e.value.desc


def test_add_query_del(blockd, tmp_path):
    img = make_image(tmp_path / "a.img", 1 << 20)
    blockd.cmd("blockdev-add", {
        "driver": "raw", "node-name": "fmt0",
        "file": {"driver": "file", "filename": img, "node-name": "proto0"}})
    blockd.cmd("blockdev-add", {"driver": "null-co", "node-name": "null0",
                                "size": 4096, "read-zeroes": True})
    n = nodes(blockd)
    assert set(n) == {"fmt0", "proto0", "null0"}
    fmt = n["fmt0"]
    assert fmt["drv"] == "raw"
    assert fmt["file"] == img
    assert fmt["ro"] is False
    assert fmt["image"]["virtual-size"] == 1 << 20
    assert fmt["image"]["format"] == "raw"
    assert fmt["image"]["filename"] == img
    assert fmt["cache"] == {"writeback": True, "direct": False,
                            "no-flush": False}
    assert fmt["detect_zeroes"] == "off"
    assert fmt["backing_file_depth"] == 0
    assert {"child": "file", "node-name": "proto0"} in fmt["children"]
    assert n["proto0"]["drv"] == "file"
    assert n["null0"]["image"]["virtual-size"] == 4096

    # the file child belongs to fmt0: not deletable on its own
    desc = expect_error(blockd, "Node proto0 is not owned by the monitor",
                        "blockdev-del", {"node-name": "proto0"})
    blockd.cmd("blockdev-del", node_name="fmt0")
    assert set(nodes(blockd)) == {"null0"}
    blockd.cmd("blockdev-del", node_name="null0")
    assert nodes(blockd) == {}
    # the image can be opened again (its lock was released)
    blockd.cmd("blockdev-add", {"driver": "file", "node-name": "again",
                                "filename": img})
    blockd.cmd("blockdev-del", node_name="again")
    assert desc


def test_child_by_reference_and_in_use(blockd, tmp_path):
    img = make_image(tmp_path / "b.img", 1 << 20)
    blockd.cmd("blockdev-add", {"driver": "file", "node-name": "f0",
                                "filename": img})
    blockd.cmd("blockdev-add", {"driver": "raw", "node-name": "r0",
                                "file": "f0", "offset": 4096,
                                "size": 8192})
    assert nodes(blockd)["r0"]["image"]["virtual-size"] == 8192
    expect_error(blockd, "Block device f0 is in use by node 'r0'",
                 "blockdev-del", {"node-name": "f0"})
    blockd.cmd("blockdev-del", node_name="r0")
    blockd.cmd("blockdev-del", node_name="f0")


def test_names_and_lookup_errors(blockd):
    blockd.cmd("blockdev-add", {"driver": "null-co", "node-name": "n0"})
    expect_error(blockd, "Duplicate nodes with node-name='n0'",
                 "blockdev-add", {"driver": "null-co", "node-name": "n0"},
                 exact=True)
    expect_error(blockd, "Invalid node-name: '1x'", "blockdev-add",
                 {"driver": "null-co", "node-name": "1x"}, exact=True)
    expect_error(blockd, "'node-name' must be specified for the root node",
                 "blockdev-add", {"driver": "null-co"}, exact=True)
    expect_error(blockd, "Failed to find node with node-name='zz'",
                 "blockdev-del", {"node-name": "zz"}, exact=True)
    expect_error(blockd, "Cannot find device='' nor node-name='ghost'",
                 "blockdev-add", {"driver": "raw", "node-name": "r",
                                  "file": "ghost"}, exact=True)
    # a failed add leaves nothing behind, not even its inline child
    expect_error(blockd, "Duplicate nodes with node-name='n0'",
                 "blockdev-add", {"driver": "raw", "node-name": "n0",
                                  "file": {"driver": "null-co",
                                           "node-name": "kid"}})
    assert set(nodes(blockd)) == {"n0"}


def test_file_errors(blockd, tmp_path):
    missing = str(tmp_path / "missing.img")
    expect_error(blockd, "Could not open '%s': No such file or directory"
                 % missing, "blockdev-add",
                 {"driver": "file", "node-name": "x", "filename": missing},
                 exact=True)
    expect_error(blockd, "Could not open '%s': Is a directory"
                 % str(tmp_path), "blockdev-add",
                 {"driver": "file", "node-name": "x",
                  "filename": str(tmp_path)}, exact=True)
    expect_error(blockd, "'file' driver requires '%s' to be a regular file"
                 % str(tmp_path), "blockdev-add",
                 {"driver": "file", "node-name": "x", "read-only": True,
                  "filename": str(tmp_path)}, exact=True)
    # wrong types are refused by the schema before the block layer
    expect_error(blockd, "Invalid parameter type for 'filename'",
                 "blockdev-add", {"driver": "file", "node-name": "x",
                                  "filename": 5})
    assert nodes(blockd) == {}


def test_fifo_and_devices_refused_without_hanging(blockd, tmp_path):
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    # Opening a FIFO with nobody at the other end would block: the
    # daemon must answer at once (the fixture's QMP timeout is 10 s).
    for ro in (False, True):
        expect_error(blockd, "'file' driver requires '%s' to be a regular "
                     "file" % fifo, "blockdev-add",
                     {"driver": "file", "node-name": "x", "filename": fifo,
                      "read-only": ro}, exact=True)
    expect_error(blockd, "'file' driver requires '/dev/null' to be a "
                 "regular file", "blockdev-add",
                 {"driver": "file", "node-name": "x",
                  "filename": "/dev/null"}, exact=True)
    assert nodes(blockd) == {}


def test_permission_denied(blockd, tmp_path):
    # Tests run as root, so mode bits do not stop an open: an immutable
    # file does (EPERM), where the file system supports it.
    img = make_image(tmp_path / "immutable.img", 65536)
    if shutil.which("chattr") is None or subprocess.call(
            ["chattr", "+i", img], stderr=subprocess.DEVNULL) != 0:
        pytest.skip("cannot make an immutable file here (chattr +i)")
    try:
        expect_error(blockd, "Could not open '%s': Operation not permitted"
                     % img, "blockdev-add",
                     {"driver": "file", "node-name": "x", "filename": img},
                     exact=True)
        # auto-read-only falls back to a read-only open
        blockd.cmd("blockdev-add", {"driver": "file", "node-name": "x",
                                    "filename": img,
                                    "auto-read-only": True})
        assert nodes(blockd)["x"]["ro"] is True
        blockd.cmd("blockdev-del", node_name="x")
    finally:
        subprocess.call(["chattr", "-i", img])


def test_bad_sizes_and_windows(blockd, tmp_path):
    img = make_image(tmp_path / "w.img", 65536)
    expect_error(blockd, "Parameter 'size' expects", "blockdev-add",
                 {"driver": "null-co", "node-name": "x", "size": -1})
    expect_error(blockd, "The sum of offset (4096) and size (65536) has to "
                 "be smaller or equal to the  actual size of the containing "
                 "file (65536)", "blockdev-add",
                 {"driver": "raw", "node-name": "x", "offset": 4096,
                  "size": 65536,
                  "file": {"driver": "file", "filename": img}}, exact=True)
    expect_error(blockd, "Offset (131072) cannot be greater than size of "
                 "the containing file (65536)", "blockdev-add",
                 {"driver": "raw", "node-name": "x", "offset": 131072,
                  "file": {"driver": "file", "filename": img}}, exact=True)
    expect_error(blockd, "Parameter 'offset' expects", "blockdev-add",
                 {"driver": "raw", "node-name": "x", "offset": -512,
                  "file": {"driver": "file", "filename": img}})
    # none of it is left open: the image is not locked
    blockd.cmd("blockdev-add", {"driver": "file", "node-name": "ok",
                                "filename": img})
    assert set(nodes(blockd)) == {"ok"}


def test_resize_and_stats(blockd, tmp_path):
    img = make_image(tmp_path / "r.img", 65536)
    blockd.cmd("blockdev-add", {
        "driver": "raw", "node-name": "r0",
        "file": {"driver": "file", "filename": img}})
    blockd.cmd("block_resize", node_name="r0", size=1 << 20)
    assert os.path.getsize(img) == 1 << 20
    assert nodes(blockd)["r0"]["image"]["virtual-size"] == 1 << 20
    expect_error(blockd, "Parameter 'size' expects a >0 size",
                 "block_resize", {"node-name": "r0", "size": -1})
    expect_error(blockd, "Cannot find device='' nor node-name='nope'",
                 "block_resize", {"node-name": "nope", "size": 4096},
                 exact=True)
    blockd.cmd("blockdev-add", {"driver": "raw", "node-name": "fixed",
                                "size": 4096, "file": {
                                    "driver": "null-co"}})
    expect_error(blockd, "Cannot resize fixed-size raw disks",
                 "block_resize", {"node-name": "fixed", "size": 8192})
    blockd.cmd("blockdev-add", {"driver": "null-co", "node-name": "ro",
                                "read-only": True})
    expect_error(blockd, "Block node is read-only", "block_resize",
                 {"node-name": "ro", "size": 8192})

    stats = blockd.cmd("query-blockstats", {"query-nodes": True})
    by = {s["node-name"]: s for s in stats}
    assert "r0" in by and "fixed" in by
    st = by["r0"]["stats"]
    for k in ("rd_bytes", "wr_bytes", "rd_operations", "wr_operations",
              "flush_operations", "wr_highest_offset"):
        assert k in st and st[k] == 0
    assert "parent" in by["r0"]
    roots = {s["node-name"] for s in blockd.cmd("query-blockstats")}
    assert roots == {"r0", "fixed", "ro"}


def test_locked_by_qemu_io(blockd, tmp_path):
    requires("qemu-io")
    img = make_image(tmp_path / "l.img", 1 << 20)
    # qemu-io holds the image open for writing while it waits on stdin.
    # Wait until it answers a command: probing with blockdev-add before
    # then could take the lock first and make qemu-io give up.
    q = subprocess.Popen(["qemu-io", "-f", "raw", img],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    try:
        q.stdin.write("length\n")
        q.stdin.flush()
        line = q.stdout.readline()
        assert "1 MiB" in line, "qemu-io did not open the image: %r" % line
        with pytest.raises(QmpError) as ei:
            blockd.cmd("blockdev-add", {"driver": "file", "node-name": "x",
                                        "filename": img})
        assert ei.value.cls == "GenericError"
        desc = ei.value.desc
        assert desc.startswith('Failed to get shared "write" lock')
        assert "Is another process using the image [%s]?" % img in desc
        # read-only opens share: fine
        blockd.cmd("blockdev-add", {"driver": "file", "node-name": "ro",
                                    "filename": img, "read-only": True})
        blockd.cmd("blockdev-del", node_name="ro")
    finally:
        q.stdin.close()
        q.wait(10)


def test_locked_by_blockd(blockd, blockd_factory, tmp_path):
    img = make_image(tmp_path / "m.img", 1 << 20)
    blockd.cmd("blockdev-add", {"driver": "file", "node-name": "x",
                                "filename": img})
    other = blockd_factory()
    expect_error(other, 'Failed to get "write" lock', "blockdev-add",
                 {"driver": "file", "node-name": "y", "filename": img})
    if shutil.which("qemu-io"):
        r = subprocess.run(["qemu-io", "-f", "raw", "-c", "write 0 512",
                            img], capture_output=True, text=True)
        assert r.returncode != 0
        out = r.stdout + r.stderr
        assert 'Failed to get "write" lock' in out
        assert "Is another process using the image" in out
    # after blockdev-del the other daemon gets it
    blockd.cmd("blockdev-del", node_name="x")
    other.cmd("blockdev-add", {"driver": "file", "node-name": "y",
                               "filename": img})
    assert other.alive()


def test_inline_options(blockd, tmp_path):
    img = make_image(tmp_path / "o.img", 1 << 20)
    blockd.cmd("blockdev-add", {
        "driver": "raw", "node-name": "o", "read-only": True,
        "discard": "unmap", "detect-zeroes": "on",
        "cache": {"direct": False, "no-flush": True},
        "file": {"driver": "file", "filename": img, "locking": "off",
                 "aio": "threads"}})
    n = nodes(blockd)
    assert n["o"]["ro"] is True
    assert n["o"]["detect_zeroes"] == "on"
    assert n["o"]["cache"]["no-flush"] is True
    child = [c["node-name"] for c in n["o"]["children"]]
    assert len(child) == 1 and child[0].startswith("#block")
    assert n[child[0]]["ro"] is True        # inherited
    expect_error(blockd, "setting detect-zeroes to unmap is not allowed",
                 "blockdev-add", {"driver": "null-co", "node-name": "dz",
                                  "detect-zeroes": "unmap"})
    expect_error(blockd, "aio=native was specified, but it requires "
                 "cache.direct=on", "blockdev-add",
                 {"driver": "file", "node-name": "an", "filename": img,
                  "aio": "native", "read-only": True})


def test_exported_node_in_use(blockd, tmp_path):
    img = make_image(tmp_path / "e.img", 1 << 20)
    blockd.cmd("blockdev-add", {
        "driver": "raw", "node-name": "n0", "cache": {"direct": True},
        "file": {"driver": "file", "filename": img}})
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    blockd.cmd("nbd-server-start", {"addr": {"type": "unix",
                                             "data": {"path": sock}}})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                    "node-name": "n0", "writable": True})
    expect_error(blockd, "Block device n0 is in use by export 'e0'",
                 "blockdev-del", {"node-name": "n0"}, exact=True)
    # an export does not share resizing
    expect_error(blockd, "Node 'n0' is busy: node is used by export 'e0'",
                 "block_resize", {"node-name": "n0", "size": 2 << 20},
                 exact=True)
    if shutil.which("qemu-io"):
        # data written over NBD into an O_DIRECT node, unaligned, is what
        # qemu-io reads from the file afterwards
        uri = "nbd+unix:///n0?socket=%s" % sock
        r = subprocess.run(["qemu-io", "-f", "raw", "-c",
                            "write -P 0x5c 1000 70000", uri],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    blockd.cmd("block-export-del", id="e0")
    blockd.conn.get_event("BLOCK_EXPORT_DELETED")
    blockd.cmd("blockdev-del", node_name="n0")
    if shutil.which("qemu-io"):
        r = subprocess.run(["qemu-io", "-f", "raw", "-c",
                            "read -P 0x5c 1000 70000", "-c",
                            "read -P 0 0 1000", "-c",
                            "read -P 0 71000 4096", img],
                           capture_output=True, text=True)
        assert r.returncode == 0
        assert "Pattern verification failed" not in r.stdout
        assert r.stdout.count("read ") == 3


def nbd_maps(uri):
    out = []
    for ctx in ("base:allocation", "qemu:allocation-depth"):
        r = subprocess.run(["nbdinfo", "--map=" + ctx, uri],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        out.append(r.stdout)
    return out


@pytest.mark.parametrize("opts", [
    {"driver": "null-co", "size": 1 << 20},
    {"driver": "null-co", "size": 1 << 20, "read-zeroes": True},
    "sparse-raw",
    "qcow2-chain",
])
def test_status_matches_qemu_nbd(blockd, tmp_path, opts):
    """Block status and allocation depth as NBD clients see them: the
    same map as qemu-nbd serving the same node."""
    requires("qemu-nbd", "nbdinfo", "qemu-io")
    if opts == "sparse-raw":
        img = make_image(tmp_path / "s.img", 1 << 20)
        subprocess.run(["qemu-io", "-f", "raw", "-c", "write 64k 64k",
                        "-c", "write 512k 4k", img], check=True,
                       capture_output=True)
        opts = {"driver": "raw", "file": {"driver": "file",
                                          "filename": img}}
    if opts == "qcow2-chain":
        requires("qemu-img")
        d = str(tmp_path)
        script = (
            "cd '%s' && qemu-img create -q -f raw base.raw 1M && "
            "qemu-io -f raw -c 'write -P 1 0 256k' base.raw && "
            "qemu-img create -q -f qcow2 -F raw -b base.raw mid.qcow2 && "
            "qemu-io -f qcow2 -c 'write -P 2 64k 64k' mid.qcow2 && "
            "qemu-img create -q -f qcow2 -F qcow2 -b mid.qcow2 top.qcow2 && "
            "qemu-io -f qcow2 -c 'write -P 3 128k 64k' -c 'write -z 0 64k' "
            "-c 'write -z 512k 64k' top.qcow2" % d)
        subprocess.run(script, shell=True, check=True, capture_output=True)
        opts = {"driver": "qcow2", "file": {"driver": "file",
                                            "filename": d + "/top.qcow2"}}
    qsock = str(tmp_path / "q.sock")
    imgopts = ",".join("%s=%s" % (k, str(v).lower() if isinstance(v, bool)
                                  else v)
                       for k, v in opts.items() if k != "file")
    if "file" in opts:
        imgopts += ",file.driver=file,file.filename=%s" % \
            opts["file"]["filename"]
    q = subprocess.Popen(["qemu-nbd", "-t", "-A", "-r", "-k", qsock,
                          "--image-opts", imgopts],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(qsock) and time.monotonic() < deadline:
            time.sleep(0.02)
        expected = nbd_maps("nbd+unix:///?socket=" + qsock)
    finally:
        q.terminate()
        q.wait(10)

    args = dict(opts)
    args["node-name"] = "n0"
    args["read-only"] = True
    blockd.cmd("blockdev-add", args)
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    blockd.cmd("nbd-server-start", {"addr": {"type": "unix",
                                             "data": {"path": sock}}})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                    "node-name": "n0", "name": "",
                                    "allocation-depth": True})
    got = nbd_maps("nbd+unix:///?socket=" + sock)
    assert got == expected
