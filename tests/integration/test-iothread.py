"""I/O threads: iothread objects, exports whose clients run on them, and
teardown while clients are busy there.

Real clients only: nbdcopy and qemu-img copy and compare, python3-libnbd
drives requests in flight while export-del, nbd-server-stop and SIGTERM
run from the main loop.
"""
import os
import subprocess
import threading

import nbd
import pytest

from conftest import QmpError, requires

MIB = 1 << 20


def start_server(d):
    sock = os.path.join(d.sockdir, "nbd.sock")
    d.cmd("nbd-server-start",
          addr={"type": "unix", "data": {"path": sock}})
    return sock


def uri(sock, name):
    return "nbd+unix:///%s?socket=%s" % (name, sock)


def make_image(path, size, seed):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(os.urandom(size) if seed else bytes(size))


def test_query_iothreads(blockd_factory):
    d = blockd_factory("--object", "iothread,id=io0,poll-max-ns=32768")
    d.cmd("object-add", qom_type="iothread", id="io1", poll_grow=2,
          aio_max_batch=8)
    threads = d.cmd("query-iothreads")
    assert [t["id"] for t in threads] == ["io0", "io1"]
    assert threads[0]["poll-max-ns"] == 32768
    assert threads[1]["poll-grow"] == 2
    assert threads[1]["aio-max-batch"] == 8
    tasks = set(int(t) for t in os.listdir("/proc/%d/task" % d.pid))
    for t in threads:
        assert t["thread-id"] in tasks
        assert t["thread-id"] != d.pid
    objs = {o["id"]: o["qom-type"] for o in d.cmd("query-objects")}
    assert objs == {"io0": "iothread", "io1": "iothread"}
    d.cmd("object-del", id="io1")
    left = d.cmd("query-iothreads")
    assert [t["id"] for t in left] == ["io0"]
    # The thread is gone with the object.
    tasks = set(int(t) for t in os.listdir("/proc/%d/task" % d.pid))
    assert threads[1]["thread-id"] not in tasks


def cpu_ns(pid, tid):
    """Time thread tid of pid has run on a CPU (schedstat), in ns."""
    with open("/proc/%d/task/%d/schedstat" % (pid, tid)) as f:
        return int(f.read().split()[0])


def test_requests_run_on_the_iothread(blockd_factory, tmp_path):
    """The export's requests are served by its iothread: that thread
    does the work, an idle iothread next to it does none."""
    requires("nbdcopy")
    d = blockd_factory("--object", "iothread,id=busy",
                       "--object", "iothread,id=idle")
    sock = start_server(d)
    tids = {t["id"]: t["thread-id"] for t in d.cmd("query-iothreads")}
    d.cmd("blockdev-add", driver="null-co", node_name="n0",
          size=256 * MIB)
    d.cmd("block-export-add", type="nbd", id="e0", node_name="n0",
          iothread="busy", fixed_iothread=True)
    before = {k: cpu_ns(d.pid, t) for k, t in tids.items()}
    subprocess.run(["nbdcopy", "--no-extents", uri(sock, "n0"), "null:"],
                   check=True)
    used = {k: cpu_ns(d.pid, t) - before[k] for k, t in tids.items()}
    assert used["busy"] > 1000000, used         # > 1 ms of CPU
    assert used["busy"] > 20 * used["idle"], used


def test_clients_spread_over_a_list(blockd_factory, tmp_path):
    """iothread as a list: clients go to each in turn (the
    command-line form too); every thread in the list serves."""
    d = blockd_factory("--object", "iothread,id=io0",
                       "--object", "iothread,id=io1",
                       "--object", "iothread,id=io2",
                       "--blockdev", "driver=null-co,node-name=n0,size=%d"
                       % (128 * MIB),
                       "--nbd-server", "addr.type=unix,addr.path=%s"
                       % os.path.join(tmp_path, "n.sock"),
                       "--export", "type=nbd,id=e0,node-name=n0,"
                       "iothread.0=io0,iothread.1=io1")
    sock = os.path.join(tmp_path, "n.sock")
    with pytest.raises(QmpError) as e:
        d.cmd("block-export-add", {"type": "nbd", "id": "e1",
                                   "node-name": "n0", "name": "x",
                                   "iothread": ["io0", "io2"],
                                   "fixed-iothread": True})
    assert e.value.desc.startswith("fixed-iothread takes one iothread")
    with pytest.raises(QmpError) as e:
        d.cmd("block-export-add", {"type": "nbd", "id": "e1",
                                   "node-name": "n0", "name": "x",
                                   "iothread": ["io0", "nope"]})
    assert e.value.desc == 'iothread "nope" not found'
    # Nothing stayed pinned by the failed adds.
    d.cmd("object-del", id="io2")
    tids = {t["id"]: t["thread-id"] for t in d.cmd("query-iothreads")}
    before = {k: cpu_ns(d.pid, t) for k, t in tids.items()}
    # Four clients connected one after the other: two on each.
    handles = []
    for _ in range(4):
        h = nbd.NBD()
        h.connect_uri(uri(sock, "n0"))
        handles.append(h)
    for h in handles:
        for i in range(64):
            assert h.pread(MIB, i * MIB) == bytes(MIB)
    used = {k: cpu_ns(d.pid, t) - before[k] for k, t in tids.items()}
    assert used["io0"] > 1000000 and used["io1"] > 1000000, used
    with pytest.raises(QmpError) as e:
        d.cmd("object-del", id="io1")
    assert e.value.desc.startswith("object 'io1' is in use")
    for h in handles:
        h.shutdown()


def test_export_iothread_errors(blockd, tmp_path):
    sock = start_server(blockd)
    img = str(tmp_path / "q.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", img, "1M"],
                   check=True)
    blockd.cmd("blockdev-add", driver="null-co", node_name="n0",
               size=MIB)
    blockd.cmd("blockdev-add", driver="qcow2", node_name="q0",
               file={"driver": "file", "filename": img})
    with pytest.raises(QmpError) as e:
        blockd.cmd("block-export-add", type="nbd", id="e0",
                   node_name="n0", iothread="nope")
    assert e.value.desc == 'iothread "nope" not found'
    blockd.cmd("object-add", qom_type="secret", id="s0", data="x")
    with pytest.raises(QmpError) as e:
        blockd.cmd("block-export-add", type="nbd", id="e0",
                   node_name="n0", iothread="s0")
    assert e.value.desc == 'iothread "s0" not found'

    blockd.cmd("object-add", qom_type="iothread", id="io0")
    # qcow2 cannot be used from another thread: fixed-iothread refuses,
    # otherwise the export serves from the main loop.
    with pytest.raises(QmpError) as e:
        blockd.cmd("block-export-add", type="nbd", id="e1",
                   node_name="q0", iothread="io0", fixed_iothread=True)
    assert e.value.desc.startswith("Cannot change iothread")
    blockd.cmd("block-export-add", type="nbd", id="e1", node_name="q0",
               iothread="io0")
    # Not pinned by the export that fell back.
    blockd.cmd("object-add", qom_type="iothread", id="io1")
    blockd.cmd("block-export-add", type="nbd", id="e0", node_name="n0",
               iothread="io1", fixed_iothread=True)
    with pytest.raises(QmpError) as e:
        blockd.cmd("object-del", id="io1")
    assert e.value.desc.startswith("object 'io1' is in use")
    blockd.cmd("object-del", id="io0")
    q = blockd.qmp()
    for name in ["q0", "n0"]:
        h = nbd.NBD()
        h.connect_uri(uri(sock, name))
        assert h.pread(4096, 0) == bytes(4096)
        h.shutdown()
        q.get_event("NBD_EXPORT_CLIENT_DISCONNECTED", timeout=30)
    blockd.cmd("block-export-del", id="e0")
    blockd.cmd("block-export-del", id="e1")
    # Once the export is gone (its last client left), so is the pin.
    for _ in range(500):
        try:
            blockd.cmd("object-del", id="io1")
            break
        except QmpError:
            threading.Event().wait(0.02)
    assert blockd.cmd("query-iothreads") == []


def test_two_iothreads_and_main(blockd_factory, tmp_path):
    """Three file exports (two iothreads, the main loop) written and read
    by nbdcopy at once; qemu-img compare checks every byte."""
    requires("nbdcopy", "qemu-img")
    d = blockd_factory("--object", "iothread,id=io0",
                       "--object", "iothread,id=io1")
    sock = start_server(d)
    size = 24 * MIB
    srcs, dsts = [], []
    for i, io in enumerate(["io0", "io1", None]):
        src = str(tmp_path / ("src%d.raw" % i))
        dst = str(tmp_path / ("dst%d.raw" % i))
        make_image(src, size, True)
        make_image(dst, size, False)
        srcs.append(src)
        dsts.append(dst)
        d.cmd("blockdev-add", driver="raw", node_name="r%d" % i,
              file={"driver": "file", "filename": dst})
        args = dict(type="nbd", id="e%d" % i, node_name="r%d" % i,
                    writable=True)
        if io:
            args.update(iothread=io, fixed_iothread=True)
        d.cmd("block-export-add", **args)
    procs = [subprocess.Popen(["nbdcopy", "--connections=2", srcs[i],
                               uri(sock, "r%d" % i)])
             for i in range(3)]
    for p in procs:
        assert p.wait(timeout=300) == 0
    for i in range(3):
        # Read back through the same export (reads on its thread) and
        # compare with the source.
        subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw",
                        srcs[i], uri(sock, "r%d" % i)], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw",
                        srcs[i], dsts[i]], check=True,
                       stdout=subprocess.DEVNULL)
    exps = {e["id"]: e for e in d.cmd("query-block-exports")}
    for i in range(3):
        assert exps["e%d" % i]["wr-bytes"] >= size


def busy_client(sock, name, stop, errors, started):
    """Reads and writes with many requests in flight until the server
    goes away or stop is set."""
    try:
        h = nbd.NBD()
        h.connect_uri(uri(sock, name))
    except nbd.Error as e:
        errors.append(e)
        started.set()
        return
    started.set()
    buf = nbd.Buffer(65536)
    try:
        while not stop.is_set():
            cookies = [h.aio_pread(buf, (i * 65536) % (4 * MIB))
                       for i in range(8)]
            cookies += [h.aio_pwrite(nbd.Buffer.from_bytearray(
                bytearray(b"x" * 4096)), i * 4096) for i in range(8)]
            while cookies:
                h.poll(-1)
                cookies = [c for c in cookies
                           if not h.aio_command_completed(c)]
    except nbd.Error:
        pass                          # the server cut us off: expected


def run_busy(sock, names, n=2):
    stop = threading.Event()
    errors = []
    threads = []
    for name in names:
        for _ in range(n):
            started = threading.Event()
            t = threading.Thread(target=busy_client,
                                 args=(sock, name, stop, errors, started))
            t.start()
            assert started.wait(30)
            threads.append(t)
    assert not errors
    return stop, threads


def setup_busy(d, tmp_path, ios):
    sock = start_server(d)
    names = []
    for i, io in enumerate(ios):
        img = str(tmp_path / ("b%d.raw" % i))
        make_image(img, 4 * MIB, False)
        d.cmd("blockdev-add", driver="file", node_name="f%d" % i,
              filename=img)
        d.cmd("block-export-add", type="nbd", id="e%d" % i,
              node_name="f%d" % i, writable=True, iothread=io,
              fixed_iothread=True)
        names.append("f%d" % i)
    return sock, names


def test_export_del_hard_busy(blockd_factory, tmp_path):
    d = blockd_factory("--object", "iothread,id=io0",
                       "--object", "iothread,id=io1")
    sock, names = setup_busy(d, tmp_path, ["io0", "io1"])
    stop, threads = run_busy(sock, names)
    q = d.qmp()
    exps = d.cmd("query-block-exports")
    assert [e["clients"] for e in exps] == [2, 2]
    assert all(len(e["connected-clients"]) == 2 for e in exps)
    with pytest.raises(QmpError) as e:
        d.cmd("block-export-del", id="e0")
    assert "still in use" in e.value.desc
    d.cmd("block-export-del", id="e0", mode="hard")
    d.cmd("block-export-del", id="e1", mode="hard")
    got = set()
    while got != {"e0", "e1"}:
        ev = q.get_event("BLOCK_EXPORT_DELETED", timeout=30)
        got.add(ev["data"]["id"])
    stop.set()
    for t in threads:
        t.join(60)
        assert not t.is_alive()
    d.cmd("blockdev-del", node_name="f0")
    d.cmd("blockdev-del", node_name="f1")
    d.cmd("object-del", id="io0")
    d.cmd("object-del", id="io1")
    assert d.cmd("query-iothreads") == []


def test_server_stop_busy(blockd_factory, tmp_path):
    d = blockd_factory("--object", "iothread,id=io0")
    sock, names = setup_busy(d, tmp_path, ["io0", "io0"])
    stop, threads = run_busy(sock, names)
    d.cmd("nbd-server-stop")
    stop.set()
    for t in threads:
        t.join(60)
        assert not t.is_alive()
    assert d.cmd("query-block-exports") == []
    d.cmd("blockdev-del", node_name="f0")
    d.cmd("object-del", id="io0")
    # The server starts again and serves from the iothread again.
    d.cmd("object-add", qom_type="iothread", id="io0")
    sock, names = setup_busy(d, tmp_path / "again", ["io0"])
    h = nbd.NBD()
    h.connect_uri(uri(sock, names[0]))
    h.pwrite(b"y" * 4096, 0)
    assert h.pread(4096, 0) == b"y" * 4096
    h.shutdown()


def test_sigterm_busy(blockd_factory, tmp_path):
    d = blockd_factory("--object", "iothread,id=io0",
                       "--object", "iothread,id=io1")
    sock, names = setup_busy(d, tmp_path, ["io0", "io1"])
    stop, threads = run_busy(sock, names, n=3)
    assert d.stop() == 0, d.logtext()
    stop.set()
    for t in threads:
        t.join(60)
        assert not t.is_alive()


def test_quit_busy(blockd_factory, tmp_path):
    d = blockd_factory("--object", "iothread,id=io0")
    sock, names = setup_busy(d, tmp_path, ["io0"])
    stop, threads = run_busy(sock, names, n=3)
    d.cmd("quit")
    assert d.proc.wait(30) == 0, d.logtext()
    stop.set()
    for t in threads:
        t.join(60)
        assert not t.is_alive()


def test_client_disconnect_events(blockd_factory, tmp_path):
    """A client leaving a connection on an iothread is seen on the main
    loop: the event, the client count, a soft export-del after it."""
    d = blockd_factory("--object", "iothread,id=io0")
    sock, names = setup_busy(d, tmp_path, ["io0"])
    q = d.qmp()
    h = nbd.NBD()
    h.connect_uri(uri(sock, names[0]))
    q.get_event("NBD_EXPORT_CLIENT_CONNECTED", timeout=30)
    h.pwrite(b"z" * 65536, 0)
    h.shutdown()
    ev = q.get_event("NBD_EXPORT_CLIENT_DISCONNECTED", timeout=30)
    assert ev["data"]["id"] == "e0"
    exp = d.cmd("query-block-exports")[0]
    assert exp["clients"] == 0
    assert exp["wr-bytes"] == 65536
    d.cmd("block-export-del", id="e0")


def test_jobs_refused_on_iothread_nodes(blockd_factory, tmp_path):
    """A job's drain and pivot only see the main loop's requests: a node
    an export serves from an iothread (or its file child) takes no job
    while that export lives; the same export on the main loop does."""
    d = blockd_factory("--object", "iothread,id=io0")
    sock, names = setup_busy(d, tmp_path, ["io0"])
    d.cmd("blockdev-add", driver="raw", node_name="r0", file="f0")
    d.cmd("blockdev-add", driver="null-co", node_name="t0", size=4 * MIB)
    d.cmd("block-export-add", type="nbd", id="er", node_name="r0",
          iothread="io0", fixed_iothread=True)
    for node in ["f0", "r0"]:
        with pytest.raises(QmpError) as e:
            d.cmd("blockdev-mirror", job_id="j0", device=node,
                  target="t0", sync="full")
        assert e.value.desc.startswith(
            "Node '%s' is busy: an export serves it from an iothread"
            % node), e.value.desc
    d.cmd("block-export-del", id="er")
    d.cmd("block-export-del", id="e0")
    for _ in range(500):
        if d.cmd("query-block-exports") == []:
            break
        threading.Event().wait(0.02)
    d.cmd("block-export-add", type="nbd", id="e1", node_name="f0")
    q = d.qmp()
    d.cmd("blockdev-backup", job_id="j1", device="f0", target="t0",
          sync="full")
    q.get_event("BLOCK_JOB_COMPLETED", timeout=60)
