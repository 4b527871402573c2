"""How blockdev-mirror copies: zero and unallocated ranges of the source
are not copied as data (a fresh target stays sparse: qemu-img map),
data goes through copy_file_range(2) between two file-backed nodes
(raw, a raw window, qcow2 data clusters) and through a read and a
write otherwise (a qcow2 target, compressed clusters); every result
equals the source (qemu-img compare)."""
import json
import os
import subprocess
import time

from conftest import requires

MIB = 1 << 20


def run(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True,
                          text=True).stdout


def qemu_io(fmt, path, *cmds):
    args = ["qemu-io", "-f", fmt]
    for c in cmds:
        args += ["-c", c]
    run(*args, path)


def data_extents(path, fmt):
    """[(start, length)] that qemu-img map says hold data (merged)."""
    out = []
    for e in json.loads(run("qemu-img", "map", "--output=json", "-f", fmt,
                            path)):
        if e["data"] and not e["zero"]:
            if out and out[-1][0] + out[-1][1] == e["start"]:
                out[-1] = (out[-1][0], out[-1][1] + e["length"])
            else:
                out.append((e["start"], e["length"]))
    return out


def wait_end(blockd, job, timeout=120):
    """Complete job when it is ready; its COMPLETED event, no error."""
    q = blockd.conn
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("job %s did not end" % job)
        ev = q.get_event(timeout=left)
        if ev["event"] == "BLOCK_JOB_COMPLETED" and \
                ev["data"]["device"] == job:
            assert "error" not in ev["data"], ev
            return ev
        if ev["event"] == "BLOCK_JOB_READY" and ev["data"]["device"] == job:
            blockd.cmd("job-complete", id=job)


def mirror(blockd, src, sfmt, dst, dfmt, src_opts=None):
    """Mirror src to a fresh dst (sync=full), pivot, close both."""
    opts = {"driver": sfmt, "node-name": "src",
            "file": {"driver": "file", "filename": src}}
    opts.update(src_opts or {})
    blockd.cmd("blockdev-add", opts)
    blockd.cmd("blockdev-add", {"driver": dfmt, "node-name": "dst",
                                "file": {"driver": "file",
                                         "filename": dst}})
    blockd.cmd("blockdev-mirror", job_id="m", device="src", target="dst",
               sync="full")
    wait_end(blockd, "m")
    blockd.cmd("blockdev-del", node_name="src")
    blockd.cmd("blockdev-del", node_name="dst")


def sparse_source(path, fmt):
    run("qemu-img", "create", "-q", "-f", fmt, path, str(64 * MIB))
    qemu_io(fmt, path, "write -P 0x5a 1M 2M", "write -P 0x17 40M 1M",
            "write -P 0 50M 1M")          # zeroes written as data
    return path


def test_mirror_sparse_raw_stays_sparse(blockd, shm_dir):
    """A raw source with 4 MiB of data in 64 MiB, to a fresh raw target
    on tmpfs: the target holds data only there (it was 64 MiB of data
    when zero ranges were read and written as zero buffers)."""
    requires("qemu-img", "qemu-io")
    src = sparse_source(os.path.join(shm_dir, "src.raw"), "raw")
    dst = os.path.join(shm_dir, "dst.raw")
    run("qemu-img", "create", "-q", "-f", "raw", dst, str(64 * MIB))
    mirror(blockd, src, "raw", dst, "raw")
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", src, dst)
    # what the source holds as data, no more (qemu-img create allocates
    # the first 4 KiB of both)
    assert data_extents(dst, "raw") == data_extents(src, "raw")
    assert os.stat(dst).st_blocks * 512 <= 5 * MIB


def test_mirror_sparse_qcow2_stays_sparse(blockd, tmp_path):
    """qcow2 to a fresh qcow2 (a read and a write: no kernel copy into a
    format that allocates): unallocated ranges stay without data."""
    requires("qemu-img", "qemu-io")
    src = sparse_source(str(tmp_path / "src.qcow2"), "qcow2")
    dst = str(tmp_path / "dst.qcow2")
    run("qemu-img", "create", "-q", "-f", "qcow2", dst, str(64 * MIB))
    mirror(blockd, src, "qcow2", dst, "qcow2")
    run("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", src, dst)
    run("qemu-img", "check", dst)
    assert data_extents(dst, "qcow2") == [(1 * MIB, 2 * MIB),
                                          (40 * MIB, 1 * MIB)]


def test_mirror_copy_qcow2_to_raw(blockd, tmp_path):
    """qcow2 data clusters copied by copy_file_range from their host
    offsets into a raw target; compressed clusters (no host range to
    copy from) fall back to a read and a write."""
    requires("qemu-img", "qemu-io")
    plain = str(tmp_path / "plain.raw")
    run("qemu-img", "create", "-q", "-f", "raw", plain, str(16 * MIB))
    with open(plain, "r+b") as f:
        f.seek(3 * MIB)
        f.write(os.urandom(6 * MIB))
    comp = str(tmp_path / "comp.qcow2")
    run("qemu-img", "convert", "-q", "-c", "-O", "qcow2", plain, comp)
    qemu_io("qcow2", comp, "write -P 0x44 4M 1M", "write -P 0x45 12M 2M")
    dst = str(tmp_path / "dst.raw")
    run("qemu-img", "create", "-q", "-f", "raw", dst, str(16 * MIB))
    mirror(blockd, comp, "qcow2", dst, "raw")
    run("qemu-img", "compare", "-f", "qcow2", "-F", "raw", comp, dst)


def test_mirror_copy_raw_window(blockd, tmp_path):
    """A raw source with offset and size (a window into its file): the
    kernel copy starts at the window, not at the file's start."""
    requires("qemu-img")
    outer = str(tmp_path / "outer.bin")
    with open(outer, "wb") as f:
        f.write(os.urandom(24 * MIB))
    dst = str(tmp_path / "dst.raw")
    run("qemu-img", "create", "-q", "-f", "raw", dst, str(16 * MIB))
    mirror(blockd, outer, "raw", dst, "raw",
           src_opts={"offset": 5 * MIB, "size": 16 * MIB})
    with open(outer, "rb") as f:
        f.seek(5 * MIB)
        want = f.read(16 * MIB)
    with open(dst, "rb") as f:
        assert f.read() == want


def test_mirror_copy_across_file_systems(blockd, tmp_path, shm_dir):
    """Source on tmpfs, target elsewhere: copy_file_range may refuse
    (EXDEV) and the job reads and writes instead; a target on a
    blkdebug node (not a file) never gets a kernel copy."""
    requires("qemu-img")
    src = os.path.join(shm_dir, "src.raw")
    with open(src, "wb") as f:
        f.write(os.urandom(8 * MIB))
    dst = str(tmp_path / "dst.raw")
    run("qemu-img", "create", "-q", "-f", "raw", dst, str(8 * MIB))
    mirror(blockd, src, "raw", dst, "raw")
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", src, dst)

    dst2 = str(tmp_path / "dst2.raw")
    run("qemu-img", "create", "-q", "-f", "raw", dst2, str(8 * MIB))
    blockd.cmd("blockdev-add", {"driver": "raw", "node-name": "src",
                                "file": {"driver": "file",
                                         "filename": src}})
    blockd.cmd("blockdev-add", {"driver": "raw", "node-name": "dst",
                                "file": {"driver": "blkdebug",
                                         "image": {"driver": "file",
                                                   "filename": dst2}}})
    blockd.cmd("blockdev-mirror", job_id="m", device="src", target="dst",
               sync="full")
    wait_end(blockd, "m")
    blockd.cmd("blockdev-del", node_name="src")
    blockd.cmd("blockdev-del", node_name="dst")
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", src, dst2)
