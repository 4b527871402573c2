"""The "nbd" block driver against servers nobody here wrote (nbdkit's
memory, file and sparse-random plugins, qemu-nbd, Debian's nbd-server
with simple replies only) and blockd itself: blockdev-add driver=nbd,
the node exported again by blockd, and real clients (qemu-io, qemu-img,
nbdinfo, nbdcopy, python3-libnbd) reading and writing through it.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import nbd
import pytest

from conftest import QmpError, requires, wait_socket


class Upstream:
    """A server on a unix socket, started in the foreground and stopped
    by PID."""

    def __init__(self, argv_fn, sockdir, name="up"):
        self.sock = os.path.join(sockdir, name + ".sock")
        self.argv = argv_fn(self.sock)
        self.proc = None
        self.start()

    def start(self):
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL)
        if self.sock in self.argv:
            wait_socket(self.sock, self.proc)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if os.path.exists(self.sock):
            os.unlink(self.sock)

    @property
    def uri(self):
        return "nbd+unix:///?socket=%s" % self.sock


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="bdn-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def upstreams():
    started = []
    yield started
    for u in started:
        u.stop()


def nbdkit(upstreams, sockdir, *args, name="kit"):
    requires("nbdkit")
    u = Upstream(lambda s: ["nbdkit", "-f", "--exit-with-parent", "-U", s]
                 + list(args), sockdir, name)
    upstreams.append(u)
    return u


def export(blockd, node_opts, name="e0", writable=True):
    """blockdev-add node_opts (node-name n-<name>) and export it from
    blockd; the export's URI."""
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    if not os.path.exists(sock):
        blockd.cmd("nbd-server-start",
                   addr={"type": "unix", "data": {"path": sock}})
    node = "n-" + name
    blockd.cmd("blockdev-add", dict(node_opts, **{"node-name": node}))
    blockd.cmd("block-export-add", {"type": "nbd", "id": name,
                                    "node-name": node, "name": name,
                                    "writable": writable})
    return "nbd+unix:///%s?socket=%s" % (name, sock)


def nbd_opts(sock, **kw):
    o = {"driver": "nbd", "server": {"type": "unix", "path": sock}}
    o.update(kw)
    return o


def nbdinfo_map(uri, *extra):
    out = subprocess.run(["nbdinfo", "--map", "--json"] + list(extra)
                         + [uri], capture_output=True, text=True,
                         check=True, timeout=60)
    return json.loads(out.stdout)


def qemu_io(uri, *cmds, ro=False):
    argv = ["qemu-io", "-f", "raw"] + (["-r"] if ro else [])
    for c in cmds:
        argv += ["-c", c]
    r = subprocess.run(argv + [uri], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "error" not in r.stdout.lower() and \
        "failed" not in r.stdout.lower() and \
        "pattern verification" not in r.stdout.lower(), r.stdout + r.stderr
    return r.stdout


def img_compare(a, b):
    r = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw",
                        a, b], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


# ---- schema, errors --------------------------------------------------


def test_nbd_driver_in_schema(blockd):
    schema = blockd.cmd("query-qmp-schema")
    by_name = {e["name"]: e for e in schema}
    args = by_name[by_name["blockdev-add"]["arg-type"]]
    tag = [m for m in args["members"] if m["name"] == "driver"][0]
    assert "nbd" in by_name[tag["type"]]["values"]
    assert "NBD_CLIENT_DISCONNECTED" in by_name
    assert "NBD_CLIENT_RECONNECTED" in by_name


def test_connect_refused_is_a_clear_error(blockd, sockdir):
    with pytest.raises(QmpError) as e:
        blockd.cmd("blockdev-add", nbd_opts(os.path.join(sockdir, "none"),
                                            **{"node-name": "n0"}))
    assert e.value.cls == "GenericError"
    assert "none" in e.value.desc
    assert blockd.cmd("query-named-block-nodes") == []


def test_read_only_export(upstreams, sockdir, blockd):
    kit = nbdkit(upstreams, sockdir, "-r", "memory", "1M")
    with pytest.raises(QmpError) as e:
        blockd.cmd("blockdev-add", nbd_opts(kit.sock, **{"node-name": "n0"}))
    assert e.value.desc == "NBD export is read-only"
    blockd.cmd("blockdev-add", nbd_opts(kit.sock, **{
        "node-name": "n1", "auto-read-only": True}))
    blockd.cmd("blockdev-add", nbd_opts(kit.sock, **{
        "node-name": "n2", "read-only": True}))
    nodes = {n["node-name"]: n for n in blockd.cmd("query-named-block-nodes")}
    assert nodes["n1"]["ro"] and nodes["n2"]["ro"]


def test_command_line_and_filename(upstreams, sockdir, blockd_factory):
    kit = nbdkit(upstreams, sockdir, "memory", "4M")
    d = blockd_factory("--blockdev",
                       "driver=nbd,node-name=n0,server.type=unix,"
                       "server.path=%s,export=" % kit.sock)
    nodes = d.cmd("query-named-block-nodes")
    assert nodes[0]["file"] == "nbd+unix:///?socket=%s" % kit.sock
    assert nodes[0]["drv"] == "nbd"
    assert nodes[0]["image"]["virtual-size"] == 4 << 20


# ---- data through blockd ---------------------------------------------


def test_memory_read_write_compare(upstreams, sockdir, blockd):
    kit = nbdkit(upstreams, sockdir, "memory", "64M")
    uri = export(blockd, nbd_opts(kit.sock))
    qemu_io(uri, "write -P 0x55 1M 3M", "write -P 0xaa 60M 17k",
            "flush", "read -P 0x55 1M 3M", "read -P 0 0 1M",
            "read -P 0xaa 60M 17k")
    img_compare(uri, kit.uri)
    # written straight to nbdkit: seen through blockd
    qemu_io(kit.uri, "write -P 0x33 10M 1M")
    qemu_io(uri, "read -P 0x33 10M 1M")
    stats = {s["node-name"]: s["stats"] for s in
             blockd.cmd("query-blockstats", {"query-nodes": True})}
    assert stats["n-e0"]["wr_operations"] >= 2
    assert stats["n-e0"]["rd_bytes"] >= 4 << 20


def test_block_status_through_chain(upstreams, sockdir, blockd):
    requires("nbdinfo")
    kit = nbdkit(upstreams, sockdir, "sparse-random", "64M", "seed=7")
    uri = export(blockd, nbd_opts(kit.sock), writable=False)
    direct = nbdinfo_map(kit.uri)
    through = nbdinfo_map(uri)
    assert len(direct) >= 3 and any(e["type"] == 0 for e in direct)
    assert through == direct
    img_compare(uri, kit.uri)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_simple_replies_nbd_server(blockd, sockdir, tmp_path):
    """nbd-server sends only simple replies: the driver falls back to
    them, and reports everything as data."""
    requires("nbd-server")
    img = str(tmp_path / "ns.img")
    with open(img, "wb") as f:
        f.truncate(8 << 20)
    sock = os.path.join(sockdir, "ns.sock")
    pidfile = os.path.join(sockdir, "ns.pid")
    conf = tmp_path / "nbd-server.conf"
    conf.write_text("[generic]\n unixsock = %s\n listenaddr = 127.0.0.1\n"
                    " port = %d\n[e]\n exportname = %s\n flush = true\n"
                    " fua = true\n" % (sock, free_port(), img))
    subprocess.run(["nbd-server", "-C", str(conf), "-p", pidfile],
                   check=True, timeout=60, capture_output=True)
    try:
        wait_socket(sock, None)
        uri = export(blockd, nbd_opts(sock, export="e"))
        qemu_io(uri, "write -P 0x42 1M 1M", "write -P 0x43 -f 3M 4k",
                "flush", "read -P 0x42 1M 1M", "read -P 0 0 1M")
        m = nbdinfo_map(uri)
        assert [(e["offset"], e["length"], e["type"]) for e in m] == \
            [(0, 8 << 20, 0)]
    finally:
        with open(pidfile) as f:
            os.kill(int(f.read().strip()), signal.SIGTERM)
    with open(img, "rb") as f:
        f.seek(1 << 20)
        assert f.read(1 << 20) == b"\x42" * (1 << 20)


def test_qemu_nbd_upstream_qcow2(upstreams, sockdir, blockd, tmp_path):
    requires("qemu-nbd", "qemu-img")
    img = str(tmp_path / "q.qcow2")
    subprocess.run(["qemu-img", "create", "-f", "qcow2", img, "16M"],
                   check=True, capture_output=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x21 4M 64k",
                    img], check=True, capture_output=True)
    u = Upstream(lambda s: ["qemu-nbd", "-f", "qcow2", "-k", s, "-x", "q",
                            "-e", "8", "-t", img], sockdir, "qn")
    upstreams.append(u)
    uri = export(blockd, nbd_opts(u.sock, export="q"))
    qemu_io(uri, "read -P 0x21 4M 64k", "read -P 0 0 4M",
            "write -P 0x22 8M 64k", "flush")
    m = nbdinfo_map(uri)
    data = [(e["offset"], e["length"]) for e in m if e["type"] == 0]
    assert (4 << 20, 64 << 10) in data
    assert (8 << 20, 64 << 10) in data
    img_compare(uri, "nbd+unix:///q?socket=%s" % u.sock)


def test_blockd_upstream(upstreams, sockdir, blockd_factory, shm_dir):
    """blockd over blockd: a file on tmpfs served by one daemon, an nbd
    node on it in the other."""
    img = os.path.join(shm_dir, "b.raw")
    with open(img, "wb") as f:
        f.truncate(16 << 20)
    up = blockd_factory()
    up_uri = export(up, {"driver": "file", "filename": img,
                         "discard": "unmap"}, name="up")
    up_sock = up_uri.split("socket=")[1]
    d = blockd_factory()
    uri = export(d, nbd_opts(up_sock, export="up", discard="unmap"))
    qemu_io(uri, "write -P 0x61 0 2M", "write -z 4M 1M",
            "write -P 0x62 -f 8M 64k", "discard 0 1M", "flush",
            "read -P 0 0 1M", "read -P 0x61 1M 1M", "read -P 0x62 8M 64k")
    img_compare(uri, up_uri)
    with open(img, "rb") as f:
        f.seek(1 << 20)
        assert f.read(1 << 20) == b"\x61" * (1 << 20)
    # the trim made a hole upstream, and block status says so
    m = nbdinfo_map(uri)
    assert m[0]["offset"] == 0 and m[0]["type"] & 1


def test_file_plugin_writes_fua_trim_zero(upstreams, sockdir, blockd,
                                          shm_dir):
    img = os.path.join(shm_dir, "f.raw")
    with open(img, "wb") as f:
        f.write(b"\x11" * (4 << 20))
    kit = nbdkit(upstreams, sockdir, "file", img)
    uri = export(blockd, nbd_opts(kit.sock, discard="unmap"))
    h = nbd.NBD()
    h.connect_uri(uri)
    assert h.can_fua() and h.can_trim() and h.can_zero()
    h.pwrite(b"\x77" * 65536, 0, nbd.CMD_FLAG_FUA)
    h.zero(1 << 20, 1 << 20)
    h.zero(4096, 1 << 20, nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FUA)
    h.trim(2 << 20, 1 << 20)
    h.flush()
    if h.can_cache():
        h.cache(65536, 0)
    assert h.pread(65536, 0) == b"\x77" * 65536
    assert h.pread(1 << 20, 1 << 20) == bytes(1 << 20)
    h.shutdown()
    with open(img, "rb") as f:
        data = f.read()
    assert data[:65536] == b"\x77" * 65536
    assert data[65536:1 << 20] == b"\x11" * ((1 << 20) - 65536)
    assert data[1 << 20:2 << 20] == bytes(1 << 20)
    assert data[3 << 20:] == b"\x11" * (1 << 20)


def test_nbdcopy_through(upstreams, sockdir, blockd, tmp_path):
    requires("nbdcopy")
    kit = nbdkit(upstreams, sockdir, "sparse-random", "32M", "seed=3",
                 name="src")
    dst = nbdkit(upstreams, sockdir, "memory", "32M", name="dst")
    src_uri = export(blockd, nbd_opts(kit.sock), name="src", writable=False)
    dst_uri = export(blockd, nbd_opts(dst.sock), name="dst")
    subprocess.run(["nbdcopy", src_uri, dst_uri], check=True, timeout=300)
    img_compare(kit.uri, dst.uri)


# ---- multi-conn and splitting ----------------------------------------


def test_multi_conn(upstreams, sockdir, blockd, tmp_path):
    """nbdkit's memory plugin advertises multi-conn: the node opens
    several connections (the log filter counts them) and spreads the
    requests; a flush through any of them covers the writes."""
    log = str(tmp_path / "kit.log")
    kit = nbdkit(upstreams, sockdir, "--filter=log", "memory", "16M",
                 "logfile=" + log)
    uri = export(blockd, nbd_opts(kit.sock))
    h = nbd.NBD()
    h.connect_uri(uri)
    assert h.can_multi_conn()
    for i in range(64):
        h.aio_pwrite(bytes([i]) * 65536, i * 65536)
    while h.aio_in_flight() > 0:
        h.poll(-1)
    h.flush()
    h.shutdown()
    with open(log) as f:
        lines = f.read().splitlines()
    qemu_io(kit.uri, "read -P 5 327680 64k", "read -P 63 4128768 64k")
    # "DATE TIME connection=N Connect ..." / "... connection=N Write ..."
    connects = {l.split()[2] for l in lines if l.split()[3:4] == ["Connect"]}
    writers = {l.split()[2] for l in lines if l.split()[3:4] == ["Write"]}
    assert len(connects) == 4, lines[:20]
    assert len(writers) > 1, writers


def test_large_requests_split(upstreams, sockdir, blockd):
    """The server's maximum block size (64 KiB, enforced) splits a 4 MiB
    read and write."""
    kit = nbdkit(upstreams, sockdir, "--filter=blocksize-policy", "memory",
                 "16M", "blocksize-maximum=65536",
                 "blocksize-error-policy=error")
    uri = export(blockd, nbd_opts(kit.sock))
    qemu_io(uri, "write -P 0x5a 1M 4M", "read -P 0x5a 1M 4M")
    qemu_io(kit.uri, "read -P 0x5a 1M 64k", "read -P 0x5a 5056k 64k")


# ---- reconnect ---------------------------------------------------------


def kill_upstream(u):
    """SIGKILL (nbdkit waits for its clients on SIGTERM) and remove the
    socket, so reconnects fail until u.start()."""
    u.proc.kill()
    u.proc.wait()
    os.unlink(u.sock)


def test_reconnect_delay_waits_and_events(upstreams, sockdir, blockd,
                                          shm_dir):
    """The server goes away: NBD_CLIENT_DISCONNECTED; a read through
    blockd waits (reconnect-delay 60) until the server is back, then
    completes with the data; NBD_CLIENT_RECONNECTED."""
    img = os.path.join(shm_dir, "r.raw")
    with open(img, "wb") as f:
        f.write(b"\x11" * (4 << 20))
    kit = nbdkit(upstreams, sockdir, "file", img)
    uri = export(blockd, nbd_opts(kit.sock, **{"reconnect-delay": 60}))
    qemu_io(uri, "write -P 0x22 0 64k")
    kill_upstream(kit)
    ev = blockd.conn.get_event("NBD_CLIENT_DISCONNECTED", timeout=60)
    assert ev["data"]["node-name"] == "n-e0"
    assert ev["data"]["reason"]
    h = nbd.NBD()
    h.connect_uri(uri)
    buf = nbd.Buffer(65536)
    cookie = h.aio_pread(buf, 0)
    h.poll(0)
    assert not h.aio_command_completed(cookie)
    kit.start()
    ev = blockd.conn.get_event("NBD_CLIENT_RECONNECTED", timeout=60)
    assert ev["data"]["node-name"] == "n-e0"
    while not h.aio_command_completed(cookie):
        h.poll(-1)
    assert buf.to_bytearray() == b"\x22" * 65536
    h.shutdown()


def test_reconnect_delay_zero_fails_then_recovers(upstreams, sockdir,
                                                  blockd, shm_dir):
    """Without reconnect-delay a request fails at once while the server
    is away (EIO), and the node works again once it is back."""
    img = os.path.join(shm_dir, "z.raw")
    with open(img, "wb") as f:
        f.write(b"\x33" * (1 << 20))
    kit = nbdkit(upstreams, sockdir, "file", img)
    uri = export(blockd, nbd_opts(kit.sock))
    h = nbd.NBD()
    h.connect_uri(uri)
    assert h.pread(4096, 0) == b"\x33" * 4096
    kill_upstream(kit)
    blockd.conn.get_event("NBD_CLIENT_DISCONNECTED", timeout=60)
    with pytest.raises(nbd.Error) as e:
        h.pread(4096, 0)
    assert e.value.errno == "EIO"
    kit.start()
    blockd.conn.get_event("NBD_CLIENT_RECONNECTED", timeout=60)
    assert h.pread(4096, 0) == b"\x33" * 4096
    h.shutdown()


# ---- server.type=fd ----------------------------------------------------


def test_fd_passed_with_getfd(upstreams, sockdir, blockd):
    """server {type: fd, str: NAME}: a socket connected to the server,
    passed with getfd on the same monitor; an unknown name is refused."""
    import array
    kit = nbdkit(upstreams, sockdir, "memory", "2M")
    q = blockd.conn
    with pytest.raises(QmpError) as e:
        q.cmd("blockdev-add", {"driver": "nbd", "node-name": "n0",
                               "server": {"type": "fd", "str": "kit"}})
    assert e.value.desc == "File descriptor named 'kit' has not been found"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(kit.sock)
    data = json.dumps({"execute": "getfd", "arguments": {"fdname": "kit"}})
    q.sock.sendmsg([data.encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                      array.array("i", [s.fileno()]))])
    assert q.recv_reply() == {"return": {}}
    s.close()
    uri = export(blockd, {"driver": "nbd",
                          "server": {"type": "fd", "str": "kit"}})
    qemu_io(uri, "write -P 0x44 0 64k", "read -P 0x44 0 64k")
    qemu_io(kit.uri, "read -P 0x44 0 64k")


# ---- formats on top, contexts ------------------------------------------


def test_qcow2_over_nbd_on_command_line(upstreams, sockdir, blockd_factory,
                                        tmp_path):
    """A qcow2 whose file is an nbd node, opened by --blockdev (on the
    loop thread: the engine must not need the loop) and by blockdev-add
    (on a worker); reads and writes through both layers."""
    img = str(tmp_path / "o.qcow2")
    subprocess.run(["qemu-img", "create", "-f", "qcow2", img, "8M"],
                   check=True, capture_output=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x71 1M 64k",
                    img], check=True, capture_output=True)
    kit = nbdkit(upstreams, sockdir, "file", img)
    d = blockd_factory(
        "--blockdev", json.dumps({
            "driver": "qcow2", "node-name": "q0",
            "file": nbd_opts(kit.sock)}))
    nodes = {n["node-name"] for n in d.cmd("query-named-block-nodes")}
    assert "q0" in nodes
    ro_file = nbd_opts(kit.sock, **{"read-only": True})
    uri = export(d, {"driver": "qcow2", "file": ro_file, "read-only": True},
                 writable=False)
    qemu_io(uri, "read -P 0x71 1M 64k", "read -P 0 0 1M", ro=True)


def test_x_dirty_bitmap(upstreams, sockdir, blockd, tmp_path):
    """x-dirty-bitmap reads a bitmap context as block status the way
    QEMU does: a dirty range is a hole (not data), a clean one data."""
    requires("qemu-nbd", "qemu-img")
    img = str(tmp_path / "b.qcow2")
    subprocess.run(["qemu-img", "create", "-f", "qcow2", img, "4M"],
                   check=True, capture_output=True)
    subprocess.run(["qemu-img", "bitmap", "--add", img, "b0"], check=True,
                   capture_output=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write 1M 64k", img],
                   check=True, capture_output=True)
    u = Upstream(lambda s: ["qemu-nbd", "-f", "qcow2", "-k", s, "-x", "b",
                            "-e", "8", "-B", "b0", "-r", "-t", img],
                 sockdir, "qb")
    upstreams.append(u)
    with pytest.raises(QmpError) as e:
        blockd.cmd("blockdev-add", nbd_opts(u.sock, **{
            "node-name": "x0", "export": "b", "read-only": True,
            "x-dirty-bitmap": "qemu:dirty-bitmap:nope"}))
    assert e.value.desc == \
        "requested x-dirty-bitmap qemu:dirty-bitmap:nope not found"
    uri = export(blockd, nbd_opts(u.sock, **{
        "export": "b", "read-only": True,
        "x-dirty-bitmap": "qemu:dirty-bitmap:b0"}), writable=False)
    dirty = nbdinfo_map("nbd+unix:///b?socket=%s" % u.sock,
                        "--map=qemu:dirty-bitmap:b0")
    seen = nbdinfo_map(uri)
    assert [(x["offset"], x["length"], x["type"] & 1) for x in dirty] == \
        [(x["offset"], x["length"], x["type"] & 1) for x in seen]
    assert any(x["type"] & 1 for x in dirty)


def test_open_timeout_waits_for_the_server(sockdir, upstreams, blockd):
    """open-timeout: blockdev-add keeps trying until the server appears
    (it is started after the command was sent)."""
    sock = os.path.join(sockdir, "late.sock")
    q = blockd.conn
    q.send_raw(json.dumps({"execute": "blockdev-add", "id": 77, "arguments":
                           nbd_opts(sock, **{"node-name": "late",
                                             "open-timeout": 120})}))
    u = Upstream(lambda s: ["nbdkit", "-f", "--exit-with-parent", "-U", s,
                            "memory", "1M"], sockdir, "late")
    upstreams.append(u)
    reply = q.recv_reply()
    assert reply == {"return": {}, "id": 77}, reply
    nodes = {n["node-name"] for n in blockd.cmd("query-named-block-nodes")}
    assert "late" in nodes


def test_inet_filename(upstreams, sockdir, blockd):
    requires("nbdkit")
    port = free_port()
    u = Upstream(lambda s: ["nbdkit", "-f", "--exit-with-parent", "-i",
                            "127.0.0.1", "-p", str(port), "memory", "1M"],
                 sockdir, "tcp")
    upstreams.append(u)
    deadline = time.monotonic() + 30
    while True:
        try:
            blockd.cmd("blockdev-add", {
                "driver": "nbd", "node-name": "t0", "export": "",
                "server": {"type": "inet", "host": "127.0.0.1",
                           "port": str(port)}})
            break
        except QmpError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    nodes = {n["node-name"]: n for n in blockd.cmd("query-named-block-nodes")}
    assert nodes["t0"]["file"] == "nbd://127.0.0.1:%d/" % port


def test_min_block_size_rmw(upstreams, sockdir, blockd, tmp_path):
    """A server that refuses requests not aligned to its 4 KiB minimum
    block size: a qcow2 on the nbd node writes its small metadata
    updates by read-modify-write, and the image stays consistent."""
    img = str(tmp_path / "m.qcow2")
    subprocess.run(["qemu-img", "create", "-f", "qcow2", img, "16M"],
                   check=True, capture_output=True)
    # room for new clusters (an nbd node does not grow), 4k-aligned
    os.truncate(img, 32 << 20)
    kit = nbdkit(upstreams, sockdir, "--filter=blocksize-policy", "file",
                 img, "blocksize-minimum=4096",
                 "blocksize-error-policy=error")
    uri = export(blockd, {"driver": "qcow2", "file": nbd_opts(kit.sock)})
    qemu_io(uri, "write -P 0x31 0 64k", "write -P 0x32 5M 4k",
            "write -P 0x33 9M 512", "flush", "read -P 0x31 0 64k",
            "read -P 0x33 9M 512")
    blockd.cmd("block-export-del", id="e0")
    blockd.cmd("blockdev-del", node_name="n-e0")
    r = subprocess.run(["qemu-img", "check", img], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    subprocess.run(["qemu-io", "-f", "qcow2", "-r", "-c",
                    "read -P 0x32 5M 4k", "-c", "read -P 0x33 9M 512", img],
                   check=True, capture_output=True)


def test_shutdown_while_waiting_for_the_server(upstreams, sockdir,
                                               blockd_factory, shm_dir):
    """SIGTERM while a read through blockd waits for a dead server
    (reconnect-delay 60): blockd fails it and exits 0 (the fixture
    checks the status: no leak, no late completion)."""
    img = os.path.join(shm_dir, "s.raw")
    with open(img, "wb") as f:
        f.truncate(1 << 20)
    kit = nbdkit(upstreams, sockdir, "file", img)
    d = blockd_factory()
    uri = export(d, nbd_opts(kit.sock, **{"reconnect-delay": 60}))
    kill_upstream(kit)
    d.conn.get_event("NBD_CLIENT_DISCONNECTED", timeout=60)
    h = nbd.NBD()
    h.connect_uri(uri)
    buf = nbd.Buffer(4096)
    cookie = h.aio_pread(buf, 0)
    h.poll(0)
    assert not h.aio_command_completed(cookie)
    assert d.stop() == 0, d.logtext()
    assert "still referenced at exit" not in d.logtext()


def test_close_while_reconnect_stalls(upstreams, sockdir, blockd):
    """The server is replaced by one that accepts and then dribbles its
    greeting (a byte every 4 s, never finishing in time): the node's
    reconnect is stuck in the handshake, yet blockdev-del closes the
    node at once (the handshake socket is shut down)."""
    import threading
    kit = nbdkit(upstreams, sockdir, "memory", "1M")
    blockd.cmd("blockdev-add", nbd_opts(kit.sock, **{"node-name": "n0"}))
    kill_upstream(kit)
    blockd.conn.get_event("NBD_CLIENT_DISCONNECTED", timeout=60)
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(kit.sock)
    lsock.listen(8)
    accepted = threading.Event()
    stop = threading.Event()

    def drip():
        conn, _ = lsock.accept()
        accepted.set()
        for b in b"NBDMAGIC":
            if stop.wait(4):
                break
            try:
                conn.send(bytes([b]))
            except OSError:
                break
        conn.close()
    t = threading.Thread(target=drip, daemon=True)
    t.start()
    try:
        assert accepted.wait(60), "no reconnect attempt"
        q = blockd.qmp()
        q.sock.settimeout(60)
        q.cmd("blockdev-del", node_name="n0")
        q.close()
        assert blockd.cmd("query-named-block-nodes") == []
    finally:
        stop.set()
        t.join(30)
        lsock.close()
