"""ENOSPC on a qcow2 whose file system is full: a real one (a 3 MiB
tmpfs mounted for the test) and one made by blkdebug (ENOSPC on the
file's Nth write).  The NBD client sees NBD_ENOSPC, never EIO (QEMU's
werror=enospc reports it the same way to a guest); writes acknowledged
and flushed before it keep their data, QMP answers and the node is not
marked corrupt; after a clean stop `qemu-img check` finds no corruption
(leaked clusters are allowed) and qemu-io reads every acknowledged
cluster back."""
import errno
import os
import subprocess

import nbd
import pytest

MIB = 1 << 20
CLUSTER = 65536


def start_export(d, file_opts):
    sock = os.path.join(d.sockdir, "nbd.sock")
    d.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": sock}})
    d.cmd("blockdev-add", {"driver": "qcow2", "node-name": "q0",
                           "file": file_opts})
    d.cmd("block-export-add", {"type": "nbd", "id": "e0", "node-name": "q0",
                               "name": "q0", "writable": True})
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///q0?socket=%s" % sock)
    return h


def pattern(i):
    return bytes([0x20 + i % 200]) * CLUSTER


def fill_until_enospc(h, limit):
    """Allocating writes of one cluster each, each flushed, until one
    fails: (indexes of the acknowledged clusters, the NBD errno)."""
    done = []
    for i in range(limit):
        try:
            h.pwrite(pattern(i), (i + 1) * CLUSTER)
            h.flush()
        except nbd.Error as e:
            return done, e.errnum
        done.append(i)
    return done, None


def check_after(d, h, img, done):
    # QMP answers and the node is not corrupt; the data is there
    nodes = {n["node-name"]: n for n in d.cmd("query-named-block-nodes")}
    assert "q0" in nodes
    for i in done[-3:]:
        assert h.pread(CLUSTER, (i + 1) * CLUSTER) == pattern(i)
    assert h.pread(CLUSTER, 0) == b"\x11" * CLUSTER
    h.shutdown()
    assert d.stop() == 0, d.logtext()
    # not marked corrupt (incompatible_features bit 1, header offset 72)
    with open(img, "rb") as f:
        f.seek(72)
        assert not int.from_bytes(f.read(8), "big") & 2
    r = subprocess.run(["qemu-img", "check", "--output=json", img],
                       capture_output=True, text=True)
    # 0: clean, 3: leaked clusters only; 2 would be corruption
    assert r.returncode in (0, 3), r.stdout + r.stderr
    cmds = ["read -P 0x11 0 64k"] + [
        "read -P %d %d 64k" % (pattern(i)[0], (i + 1) * CLUSTER)
        for i in done]
    argv = ["qemu-io", "-f", "qcow2"]
    for c in cmds:
        argv += ["-c", c]
    r = subprocess.run(argv + [img], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Pattern verification failed" not in r.stdout, r.stdout


def make_image(img):
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", img, "64M"],
                   check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 64k",
                    img], check=True, capture_output=True)


@pytest.fixture
def small_fs(tmp_path):
    """A 3 MiB tmpfs (needs root and mount(2) in this container)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (uid %d)"
                    % os.geteuid())
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs",
                        str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: " + r.stderr.strip())
    try:
        yield str(mnt)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_tmpfs_is_enospc_and_consistent(blockd_factory, small_fs):
    img = os.path.join(small_fs, "a.qcow2")
    make_image(img)
    d = blockd_factory()
    h = start_export(d, {"driver": "file", "filename": img})
    done, err = fill_until_enospc(h, 64)
    assert err is not None, "3 MiB took 64 clusters?"
    assert err == errno.ENOSPC, (err, d.logtext())
    assert len(done) > 10, done
    # another allocating write fails the same way; QMP still answers
    with pytest.raises(nbd.Error) as e:
        h.pwrite(pattern(99), 40 * MIB)
        h.flush()
    assert e.value.errnum == errno.ENOSPC
    check_after(d, h, img, done)


@pytest.mark.parametrize("skip", [0, 1, 2, 5])
def test_blkdebug_enospc_is_enospc_and_consistent(blockd_factory, tmp_path,
                                                  skip):
    """ENOSPC on the file's (skip+1)-th write after the first few
    clusters: the data cluster, its L2 table, a refcount block..."""
    img = str(tmp_path / "a.qcow2")
    make_image(img)
    d = blockd_factory()
    h = start_export(d, {
        "driver": "blkdebug", "node-name": "dbg",
        "inject-error": [{"iotype": "write", "errno": errno.ENOSPC,
                          "skip": skip}],
        "image": {"driver": "file", "filename": img}})
    done, err = fill_until_enospc(h, 64)
    assert err == errno.ENOSPC, (err, d.logtext())
    check_after(d, h, img, done)
