"""--backing-root DIR (issue 9 item 2): a qcow2 header names its backing
file, and a hostile image can name any host file.  With --backing-root,
backing files named in headers must resolve (realpath: no "..", no
symlink) inside one of the roots, or the open fails naming the file.
Without it blockd opens them as QEMU does; "backing": null and backing
nodes given in the options are never confined.  Images come from
qemu-img.
"""
import os
import subprocess

import nbd
import pytest

from conftest import QmpError, requires

SECRET = b"host secret, not for clients\n"


def qemu_img(*args):
    subprocess.run(["qemu-img"] + list(args), check=True,
                   capture_output=True)


@pytest.fixture
def tree(tmp_path):
    """root/ holds the uploaded images, outside/ a host file."""
    requires("qemu-img")
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    secret = outside / "secret.raw"
    with open(secret, "wb") as f:
        f.write(SECRET)
        f.truncate(1 << 20)
    qemu_img("create", "-q", "-f", "raw", str(root / "base.raw"), "1M")
    with open(root / "base.raw", "r+b") as f:
        f.write(b"B" * 4096)
    return root, outside, secret


def overlay(path, backing, fmt="raw"):
    """A qcow2 whose header names backing (as given: relative names are
    relative to the overlay's directory); -u: no check by qemu-img."""
    qemu_img("create", "-q", "-f", "qcow2", "-u", "-b", backing, "-F", fmt,
             str(path), "1M")


def add(d, path, node="top", **extra):
    opts = {"driver": "qcow2", "node-name": node, "read-only": True,
            "file": {"driver": "file", "filename": str(path)}}
    opts.update(extra)
    return d.cmd("blockdev-add", opts)


def read_head(d, node, n=len(SECRET)):
    """The first n bytes of node, read over NBD by libnbd."""
    sock = os.path.join(d.sockdir, "nbd.sock")
    if not os.path.exists(sock):
        d.cmd("nbd-server-start",
              addr={"type": "unix", "data": {"path": sock}})
    d.cmd("block-export-add", {"type": "nbd", "id": "e-" + node,
                               "node-name": node, "name": node})
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///%s?socket=%s" % (node, sock))
    data = h.pread(n, 0)
    h.shutdown()
    return data


def expect_refused(d, path, named):
    with pytest.raises(QmpError) as e:
        add(d, path)
    assert e.value.cls == "GenericError"
    assert "outside the allowed backing roots" in e.value.desc, e.value.desc
    assert named in e.value.desc, e.value.desc
    return e.value.desc


def test_relative_escape_refused(blockd_factory, tree):
    root, outside, secret = tree
    overlay(root / "top.qcow2", "../outside/secret.raw")
    d = blockd_factory("--backing-root", str(root))
    # The name as the header gives it, the image, and where it leads.
    desc = expect_refused(d, root / "top.qcow2",
                          "Backing file '../outside/secret.raw' named by "
                          "'%s' resolves to '%s'" % (root / "top.qcow2",
                                                     secret))
    assert d.cmd("query-named-block-nodes") == []


def test_absolute_refused(blockd_factory, tree):
    root, outside, secret = tree
    overlay(root / "top.qcow2", str(secret))
    d = blockd_factory("--backing-root", str(root))
    expect_refused(d, root / "top.qcow2", str(secret))


def test_etc_passwd_refused(blockd_factory, tree):
    root, outside, secret = tree
    overlay(root / "top.qcow2", "../../../../../../../../etc/passwd")
    d = blockd_factory("--backing-root", str(root))
    expect_refused(d, root / "top.qcow2", "/etc/passwd")


def test_symlink_inside_root_refused(blockd_factory, tree):
    root, outside, secret = tree
    os.symlink(str(secret), str(root / "link.raw"))
    overlay(root / "top.qcow2", "link.raw")
    d = blockd_factory("--backing-root", str(root))
    desc = expect_refused(d, root / "top.qcow2", "link.raw")
    assert str(secret) in desc


def test_deeper_in_chain_refused(blockd_factory, tree):
    """The middle image is inside the root; its own backing is not."""
    root, outside, secret = tree
    overlay(root / "mid.qcow2", "../outside/secret.raw")
    overlay(root / "top.qcow2", "mid.qcow2", fmt="qcow2")
    d = blockd_factory("--backing-root", str(root))
    expect_refused(d, root / "top.qcow2", "secret.raw")


def test_inside_root_opens_and_is_logged(blockd_factory, tree):
    root, outside, secret = tree
    (root / "sub").mkdir()
    overlay(root / "sub" / "top.qcow2", "../base.raw")
    # The root may itself be given through a symlink: it is resolved.
    os.symlink(str(root), str(outside / "root-link"))
    d = blockd_factory("--backing-root", str(outside / "root-link"))
    add(d, root / "sub" / "top.qcow2")
    nodes = {n["node-name"]: n for n in d.cmd("query-named-block-nodes")}
    assert nodes["top"]["image"]["backing-image"]["filename"].endswith(
        "base.raw")
    assert read_head(d, "top", 4096) == b"B" * 4096
    log = d.logtext()
    assert "opening backing file" in log
    assert str(root / "base.raw") in log


def test_several_roots(blockd_factory, tree):
    root, outside, secret = tree
    overlay(root / "top.qcow2", str(secret))
    d = blockd_factory("--backing-root", str(root),
                       "--backing-root", str(outside))
    add(d, root / "top.qcow2")
    assert read_head(d, "top") == SECRET


def test_no_root_opens_like_qemu(blockd, tree):
    root, outside, secret = tree
    overlay(root / "top.qcow2", "../outside/secret.raw")
    add(blockd, root / "top.qcow2")
    assert read_head(blockd, "top") == SECRET
    # Quiet like qemu-storage-daemon (QEMU's qsd-jobs iotest compares
    # stderr too); the line is a debug one without roots.
    assert "opening backing file" not in blockd.logtext()


def test_no_root_logs_with_verbose(blockd_factory, tree):
    root, outside, secret = tree
    overlay(root / "top.qcow2", "../outside/secret.raw")
    d = blockd_factory("-v")
    add(d, root / "top.qcow2")
    assert read_head(d, "top") == SECRET
    assert "opening backing file" in d.logtext()


def test_backing_null_unaffected(blockd_factory, tree):
    root, outside, secret = tree
    overlay(root / "top.qcow2", "../outside/secret.raw")
    d = blockd_factory("--backing-root", str(root))
    add(d, root / "top.qcow2", backing=None)
    assert read_head(d, "top", 64) == bytes(64)


def test_explicit_backing_unaffected(blockd_factory, tree):
    """The user names the backing node (by node-name, or inline): the
    user's choice, not the image's, so no root applies."""
    root, outside, secret = tree
    overlay(root / "top.qcow2", "../outside/secret.raw")
    d = blockd_factory("--backing-root", str(root))
    d.cmd("blockdev-add", {"driver": "raw", "node-name": "base",
                           "read-only": True,
                           "file": {"driver": "file",
                                    "filename": str(secret)}})
    add(d, root / "top.qcow2", node="t1", backing="base")
    assert read_head(d, "t1") == SECRET
    add(d, root / "top.qcow2", node="t2",
        backing={"driver": "raw", "file": {"driver": "file",
                                           "filename": str(secret)}})
    assert read_head(d, "t2") == SECRET


def test_bad_root_is_a_startup_error(blockd_factory, tmp_path):
    missing = str(tmp_path / "no-such-dir")
    d = blockd_factory("--backing-root", missing, wait=False)
    assert d.proc.wait(10) == 1
    log = d.logtext()
    assert "Backing root '%s'" % missing in log
    assert "No such file or directory" in log
