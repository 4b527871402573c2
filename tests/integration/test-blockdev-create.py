"""blockdev-create (a job of type create) for file, raw and qcow2: every
option combination checked with qemu-img check and qemu-img info, the
image then served by blockd and written over NBD (qemu-img compare
against the same writes on a raw file), bad input with QEMU's messages
(as job errors, or command errors where QEMU gives them), and cancel
while the job writes."""
import json
import os
import subprocess
import time

import pytest

from conftest import QmpError, requires

MIB = 1 << 20


def run(*cmd):
    return subprocess.run(cmd, check=True, capture_output=True,
                          text=True).stdout


def wait_concluded(q, job, timeout=120):
    """JOB_STATUS_CHANGE statuses of job up to concluded; then the job's
    query-jobs entry."""
    statuses = []
    deadline = time.monotonic() + timeout
    while not statuses or statuses[-1] != "concluded":
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("job %s did not conclude: %s"
                               % (job, statuses))
        ev = q.get_event("JOB_STATUS_CHANGE", timeout=left)
        if ev["data"]["id"] == job:
            statuses.append(ev["data"]["status"])
    info = [j for j in q.cmd("query-jobs") if j["id"] == job]
    assert len(info) == 1
    return statuses, info[0]


def create(blockd, options, job="job0"):
    """Run one blockdev-create to its end and dismiss it: the job's
    query-jobs entry."""
    q = blockd.conn
    q.cmd("blockdev-create", {"job-id": job, "options": options})
    statuses, info = wait_concluded(q, job)
    q.cmd("job-dismiss", id=job)
    assert q.get_event("JOB_STATUS_CHANGE")["data"] == \
        {"id": job, "status": "null"}
    if "error" in info:
        assert statuses == ["created", "running", "aborting", "concluded"]
    else:
        assert statuses == ["created", "running", "waiting", "pending",
                            "concluded"]
        assert info["current-progress"] == info["total-progress"] > 0
    assert info["type"] == "create"
    return info


def create_ok(blockd, options, job="job0"):
    info = create(blockd, options, job)
    assert "error" not in info, info
    return info


def create_qcow2(blockd, path, size, **opts):
    """A file, then a qcow2 on it, both with blockdev-create."""
    create_ok(blockd, {"driver": "file", "filename": path, "size": 0})
    blockd.cmd("blockdev-add", {"driver": "file", "node-name": "cf",
                                "filename": path})
    options = {"driver": "qcow2", "file": "cf", "size": size}
    options.update(opts)
    try:
        return create(blockd, options)
    finally:
        blockd.cmd("blockdev-del", node_name="cf")


def info(path):
    return json.loads(run("qemu-img", "info", "--output=json", "-U", path))


# (blockdev-create options, what qemu-img info must show)
COMBOS = [
    ({}, {"cluster-size": 65536, "compat": "1.1", "refcount-bits": 16,
          "lazy-refcounts": False, "extended-l2": False,
          "compression-type": "zlib"}),
    ({"version": "v2"}, {"compat": "0.10", "refcount-bits": 16}),
    ({"version": "v3", "cluster-size": 512}, {"cluster-size": 512}),
    ({"cluster-size": 2 * MIB}, {"cluster-size": 2 * MIB}),
    ({"cluster-size": 4096, "refcount-bits": 1}, {"refcount-bits": 1}),
    ({"refcount-bits": 64}, {"refcount-bits": 64}),
    ({"lazy-refcounts": True}, {"lazy-refcounts": True}),
    ({"extended-l2": True}, {"extended-l2": True, "cluster-size": 65536}),
    ({"extended-l2": True, "cluster-size": 16384},
     {"extended-l2": True, "cluster-size": 16384}),
    ({"compression-type": "zlib"}, {"compression-type": "zlib"}),
    ({"backing-file": "base.raw", "backing-fmt": "raw"},
     {"backing-filename": "base.raw", "backing-filename-format": "raw"}),
    ({"backing-file": "base.raw"}, {"backing-filename": "base.raw"}),
    ({"preallocation": "metadata"}, {}),
    ({"preallocation": "falloc"}, {}),
    ({"preallocation": "full"}, {}),
    ({"preallocation": "full", "version": "v2", "cluster-size": 4096}, {}),
    ({"preallocation": "metadata", "extended-l2": True,
      "backing-file": "base.raw", "backing-fmt": "raw"},
     {"extended-l2": True, "backing-filename": "base.raw"}),
    ({"lazy-refcounts": True, "refcount-bits": 8, "extended-l2": True,
      "cluster-size": 32768}, {"lazy-refcounts": True, "refcount-bits": 8,
                               "cluster-size": 32768}),
]


def zstd_supported(blockd, tmp_path):
    """blockd's qcow2 reads zstd clusters only when built with zstd."""
    path = str(tmp_path / "z.qcow2")
    res = create_qcow2(blockd, path, MIB, **{"compression-type": "zstd"})
    return "error" not in res


@pytest.mark.parametrize("opts,want", COMBOS,
                         ids=[json.dumps(c[0]) for c in COMBOS])
def test_qcow2_options(blockd, tmp_path, opts, want):
    requires("qemu-img")
    size = 8 * MIB
    run("qemu-img", "create", "-q", "-f", "raw",
        str(tmp_path / "base.raw"), str(size))
    path = str(tmp_path / "img.qcow2")
    res = create_qcow2(blockd, path, size, **opts)
    assert "error" not in res, res
    run("qemu-img", "check", path)
    got = info(path)
    assert got["format"] == "qcow2"
    assert got["virtual-size"] == size
    flat = dict(got.get("format-specific", {}).get("data", {}))
    flat.update({k: v for k, v in got.items() if k != "format-specific"})
    for k, v in want.items():
        assert flat.get(k) == v, (k, flat)
    prealloc = opts.get("preallocation", "off")
    if prealloc in ("falloc", "full"):
        assert got["actual-size"] >= size
    else:
        assert got["actual-size"] < size
    # Preallocated: every guest cluster has its host cluster.
    check = json.loads(subprocess.run(
        ["qemu-img", "check", "--output=json", path],
        capture_output=True, text=True, check=True).stdout)
    if prealloc != "off":
        assert check["allocated-clusters"] == check["total-clusters"]
    else:
        assert check.get("allocated-clusters", 0) == 0


def test_zstd(blockd, tmp_path):
    requires("qemu-img")
    path = str(tmp_path / "z.qcow2")
    res = create_qcow2(blockd, path, 4 * MIB, **{"compression-type": "zstd"})
    if "error" in res:
        # A blockd built without zstd refuses it clearly.
        assert res["error"] == ("Compression type 'zstd' is not supported: "
                                "blockd was built without zstd")
        return
    run("qemu-img", "check", path)
    assert info(path)["format-specific"]["data"]["compression-type"] == \
        "zstd"


def nbd_write(sock, export, *cmds):
    args = ["qemu-io", "-f", "raw"]
    for c in cmds:
        args += ["-c", c]
    run(*args, "nbd+unix:///%s?socket=%s" % (export, sock))


@pytest.mark.parametrize("opts", [
    {}, {"version": "v2", "cluster-size": 4096},
    {"preallocation": "metadata", "extended-l2": True},
    {"preallocation": "full", "refcount-bits": 1, "cluster-size": 8192},
], ids=["default", "v2-4k", "metadata-extl2", "full-rc1"])
def test_serve_written_image(blockd, tmp_path, opts):
    """blockd opens what it created, serves it, and the writes land as
    qemu-img sees them."""
    requires("qemu-img", "qemu-io")
    size = 16 * MIB
    path = str(tmp_path / "img.qcow2")
    ref = str(tmp_path / "ref.raw")
    assert "error" not in create_qcow2(blockd, path, size, **opts)
    blockd.cmd("blockdev-add", {"driver": "qcow2", "node-name": "img",
                                "file": {"driver": "file",
                                         "filename": path}})
    sock = str(tmp_path / "nbd.sock")
    blockd.cmd("nbd-server-start",
               addr={"type": "unix", "data": {"path": sock}})
    blockd.cmd("block-export-add", type="nbd", id="e0", node_name="img",
               writable=True)
    writes = ["write -P 0x5a 0 64k", "write -P 0x11 1M 3M",
              "write -P 0x22 15M 1M", "write -z 2M 512k"]
    nbd_write(sock, "img", *writes)
    blockd.cmd("block-export-del", id="e0")
    blockd.cmd("nbd-server-stop")
    blockd.cmd("blockdev-del", node_name="img")
    run("qemu-img", "create", "-q", "-f", "raw", ref, str(size))
    run("qemu-io", "-f", "raw", *sum((["-c", w] for w in writes), []), ref)
    run("qemu-img", "check", path)
    run("qemu-img", "compare", "-f", "qcow2", "-F", "raw", path, ref)


def test_file_and_raw(blockd, tmp_path):
    requires("qemu-img")
    path = str(tmp_path / "f.raw")
    res = create_ok(blockd, {"driver": "file", "filename": path,
                             "size": 4 * MIB, "preallocation": "full"})
    assert res["total-progress"] == 4 * MIB
    assert os.path.getsize(path) == 4 * MIB
    assert os.stat(path).st_blocks * 512 >= 4 * MIB
    create_ok(blockd, {"driver": "file", "filename": path, "size": 3 * MIB,
                       "preallocation": "falloc"})
    assert os.stat(path).st_blocks * 512 >= 3 * MIB
    create_ok(blockd, {"driver": "file", "filename": path, "size": MIB})
    assert os.path.getsize(path) == MIB
    assert os.stat(path).st_blocks == 0
    # raw over a file node: the node is resized (and preallocated).
    blockd.cmd("blockdev-add", {"driver": "file", "node-name": "rf",
                                "filename": path})
    create_ok(blockd, {"driver": "raw", "file": "rf", "size": 6 * MIB,
                       "preallocation": "full"})
    assert info(path)["virtual-size"] == 6 * MIB
    assert os.stat(path).st_blocks * 512 >= 6 * MIB
    # An inline definition of the node works too.
    blockd.cmd("blockdev-del", node_name="rf")
    create_ok(blockd, {"driver": "raw", "size": 2 * MIB,
                       "file": {"driver": "file", "filename": path}})
    assert os.path.getsize(path) == 2 * MIB
    names = [n["node-name"] for n in blockd.cmd("query-named-block-nodes")]
    assert names == []


BAD_QCOW2 = [
    ({"size": 1000}, "Image size must be a multiple of 512 bytes"),
    ({"size": 9223372036854775807},
     "Image size must be a multiple of 512 bytes"),
    ({"cluster-size": 1000},
     "Cluster size must be a power of two between 512 and 2048k"),
    ({"cluster-size": 256},
     "Cluster size must be a power of two between 512 and 2048k"),
    ({"cluster-size": 4 * MIB},
     "Cluster size must be a power of two between 512 and 2048k"),
    ({"backing-fmt": "raw"},
     "Backing format cannot be used without backing file"),
    ({"extended-l2": True, "cluster-size": 4096},
     "Extended L2 entries are only supported with cluster sizes of at "
     "least 16384 bytes"),
    ({"version": "v2", "extended-l2": True},
     "Extended L2 entries are only supported with compatibility level 1.1 "
     "and above (use version=v3 or greater)"),
    ({"version": "v2", "lazy-refcounts": True},
     "Lazy refcounts only supported with compatibility level 1.1 and above "
     "(use version=v3 or greater)"),
    ({"refcount-bits": 3},
     "Refcount width must be a power of two and may not exceed 64 bits"),
    ({"refcount-bits": 128},
     "Refcount width must be a power of two and may not exceed 64 bits"),
    ({"version": "v2", "refcount-bits": 8},
     "Different refcount widths than 16 bits require compatibility level "
     "1.1 or above (use version=v3 or greater)"),
    ({"version": "v2", "compression-type": "zstd"},
     "Non-zlib compression type is only supported with compatibility level "
     "1.1 and above (use version=v3 or greater)"),
    ({"backing-file": "b", "preallocation": "full"},
     "Backing file and preallocation can only be used at the same time if "
     "extended_l2 is on"),
    ({"data-file-raw": True}, "data-file-raw requires data-file"),
    ({"size": 1 << 62, "cluster-size": 512},
     "Could not resize image: Failed to grow the L1 table: File too large"),
    ({"file": "nope"}, "Cannot find device='nope' nor node-name='nope'"),
    # blockd's own limits.
    ({"data-file": "cf"},
     "qcow2: images with an external data file are not supported"),
    ({"encrypt": {"format": "luks", "key-secret": "s"}},
     "qcow2: encrypted images are not supported"),
]


def test_bad_qcow2_options(blockd, tmp_path):
    """Each one concludes the job with QEMU's message (the same in
    qemu-storage-daemon 7.2); the file is left alone."""
    path = str(tmp_path / "bad.qcow2")
    create_ok(blockd, {"driver": "file", "filename": path, "size": 0})
    blockd.cmd("blockdev-add", {"driver": "file", "node-name": "cf",
                                "filename": path})
    for extra, msg in BAD_QCOW2:
        options = {"driver": "qcow2", "file": "cf", "size": MIB}
        options.update(extra)
        res = create(blockd, options)
        assert res.get("error") == msg, (extra, res)
        assert res["current-progress"] == res["total-progress"] == 1
        assert os.path.getsize(path) == 0


def test_bad_commands(blockd, tmp_path):
    """What QEMU refuses before a job exists: command errors."""
    path = str(tmp_path / "x.raw")
    cases = [
        ({"job-id": "j", "options": {"driver": "null-co"}},
         "Driver does not support blockdev-create"),
        ({"job-id": "1j", "options": {"driver": "file", "filename": path,
                                      "size": 0}},
         "Invalid job ID '1j'"),
        ({"job-id": "j", "options": {"driver": "raw", "file": "f"}},
         "Parameter 'options.size' is missing"),
        ({"job-id": "j", "options": {"driver": "file", "filename": path,
                                     "size": -1}},
         "Parameter 'options.size' expects size"),
        ({"job-id": "j", "options": {"driver": "qcow2", "file": "f",
                                     "size": 0, "version": "v4"}},
         "Parameter 'options.version' does not accept value 'v4'"),
    ]
    for args, msg in cases:
        with pytest.raises(QmpError) as e:
            blockd.cmd("blockdev-create", args)
        assert e.value.cls == "GenericError"
        assert e.value.desc == msg, args
    # A job id in use (a concluded job keeps it until job-dismiss).
    q = blockd.conn
    q.cmd("blockdev-create", {"job-id": "j", "options": {
        "driver": "file", "filename": path, "size": 0}})
    wait_concluded(q, "j")
    with pytest.raises(QmpError) as e:
        q.cmd("blockdev-create", {"job-id": "j", "options": {
            "driver": "file", "filename": path, "size": 0}})
    assert e.value.desc == "Job ID 'j' already in use"
    q.cmd("job-dismiss", id="j")
    # File errors are the job's.
    res = create(blockd, {"driver": "file", "size": 0,
                          "filename": str(tmp_path / "no" / "x")})
    assert res["error"] == ("Could not create '%s': No such file or "
                            "directory" % (tmp_path / "no" / "x"))
    res = create(blockd, {"driver": "file", "filename": path, "size": 0,
                          "preallocation": "metadata"})
    assert res["error"] == "Unsupported preallocation mode: metadata"
    # create jobs are not block jobs.
    assert blockd.cmd("query-block-jobs") == []


def test_file_in_use(blockd_factory, tmp_path):
    """A writable node on the file in another daemon (it does not share
    writes) makes file creation fail as in QEMU; the image is left as
    it is."""
    requires("qemu-img")
    path = str(tmp_path / "busy.raw")
    run("qemu-img", "create", "-q", "-f", "raw", path, "1M")
    holder = blockd_factory()
    holder.cmd("blockdev-add", {"driver": "file", "node-name": "h",
                                "filename": path})
    d = blockd_factory()
    res = create(d, {"driver": "file", "filename": path, "size": 0})
    assert res["error"] == ("Failed to get \"write\" lock: Is another "
                            "process using the image [%s]?" % path)
    assert os.path.getsize(path) == MIB
    holder.cmd("blockdev-del", node_name="h")
    create_ok(d, {"driver": "file", "filename": path, "size": 0})
    assert os.path.getsize(path) == 0


def test_cancel(blockd, tmp_path):
    """job-cancel while the job writes: it stops, concludes without an
    error, and blockd keeps serving."""
    requires("qemu-img")
    path = str(tmp_path / "big.raw")
    run("qemu-img", "create", "-q", "-f", "raw", path, str(64 * MIB))
    blockd.cmd("blockdev-add", {
        "driver": "blkdebug", "node-name": "dbg",
        "stall": [{"iotype": "write", "tag": "w"}],
        "image": {"driver": "file", "filename": path}})
    q = blockd.conn
    q.cmd("blockdev-create", {"job-id": "c", "options": {
        "driver": "raw", "file": "dbg", "size": 64 * MIB,
        "preallocation": "full"}})
    deadline = time.monotonic() + 60
    while blockd.cmd("x-query-blkdebug", node_name="dbg")["stalled"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # The job copies the run's counters into its progress every 100 ms.
    while q.cmd("query-jobs")[0]["total-progress"] != 64 * MIB:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    job = q.cmd("query-jobs")[0]
    assert job["status"] == "running"
    assert job["current-progress"] < 64 * MIB
    q.cmd("job-cancel", id="c")
    blockd.cmd("x-blkdebug-resume", node_name="dbg", tag="w")
    statuses, res = wait_concluded(q, "c")
    assert statuses[-2:] == ["aborting", "concluded"]
    assert "error" not in res
    assert res["current-progress"] < 64 * MIB
    q.cmd("job-dismiss", id="c")
    blockd.cmd("blockdev-del", node_name="dbg")
