"""QMP control of the NBD server: nbd-server-start/stop, block-export-add
/del (safe and hard), BLOCK_EXPORT_DELETED, query-block-exports, the
legacy nbd-server-add/remove, and max-connections."""
import os
import socket
import time

import nbd
import pytest

from conftest import QmpError, wait_no_clients


def start(blockd, **kw):
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    args = {"addr": {"type": "unix", "data": {"path": sock}}}
    args.update(kw)
    blockd.cmd("nbd-server-start", args)
    return sock


def export(blockd, id, node="f0", **kw):
    args = {"type": "nbd", "id": id, "node-name": node}
    args.update({k.replace("_", "-"): v for k, v in kw.items()})
    blockd.cmd("block-export-add", args)


def client(sock, name):
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///%s?socket=%s" % (name, sock))
    return h


def err(blockd, name, args):
    with pytest.raises(QmpError) as e:
        blockd.cmd(name, args)
    assert e.value.cls == "GenericError"
    return e.value.desc


def test_server_start_stop_errors(blockd, node):
    assert "not running" in err(blockd, "nbd-server-stop", {})
    assert err(blockd, "block-export-add",
               {"type": "nbd", "id": "x", "node-name": node}) == \
        "NBD server not running"
    sock = start(blockd)
    assert err(blockd, "nbd-server-start",
               {"addr": {"type": "unix", "data": {"path": sock + "2"}}}) \
        == "NBD server already running"
    blockd.cmd("nbd-server-stop")
    assert not os.path.exists(sock)
    d = err(blockd, "nbd-server-start",
            {"addr": {"type": "unix", "data": {"path": "/nonexistent/x"}}})
    assert d.startswith("Failed to bind socket")
    d = err(blockd, "nbd-server-start",
            {"addr": {"type": "unix", "data": {"path": sock}},
             "tls-creds": "tls0"})
    assert "TLS" in d
    d = err(blockd, "nbd-server-start",
            {"addr": {"type": "fd", "data": {"str": "nosuchfd"}}})
    assert "nosuchfd" in d
    # Nothing half-started remains.
    start(blockd)


def test_export_add_errors(blockd, node):
    start(blockd)
    export(blockd, "e0", name="disk")
    assert "Cannot find device" in err(
        blockd, "block-export-add",
        {"type": "nbd", "id": "e1", "node-name": "nope"}) or \
        "nope" in err(blockd, "block-export-add",
                      {"type": "nbd", "id": "e1", "node-name": "nope"})
    assert err(blockd, "block-export-add",
               {"type": "nbd", "id": "e0", "node-name": node}) == \
        "Block export id 'e0' is already in use"
    assert err(blockd, "block-export-add",
               {"type": "nbd", "id": "e1", "node-name": node,
                "name": "disk"}) == \
        "NBD server already has export named 'disk'"
    d = err(blockd, "block-export-add",
            {"type": "nbd", "id": "e1", "node-name": node,
             "bitmaps": ["b0"]})
    assert d.startswith("Bitmap 'b0' is not found")
    d = err(blockd, "block-export-add",
            {"type": "nbd", "id": "e1", "node-name": node,
             "name": "n" * 4097})
    assert "too long" in d
    d = err(blockd, "block-export-add",
            {"type": "fuse", "id": "e1", "node-name": node})
    assert "not supported" in d
    assert [e["id"] for e in blockd.cmd("query-block-exports")] == ["e0"]


def test_query_and_default_name(blockd, node):
    sock = start(blockd)
    export(blockd, "e0", writable=True)
    # op-stats only when asked for (their values: test-metrics)
    q = blockd.cmd("query-block-exports", {"op-stats": True})
    assert [o["op"] for o in q[0].pop("op-stats")] == [
        "read", "write", "write-zeroes", "discard", "flush", "block-status"]
    assert q == blockd.cmd("query-block-exports")
    assert q == blockd.cmd("query-block-exports", {"op-stats": False})
    assert q == [{"id": "e0", "type": "nbd", "node-name": node,
                  "shutting-down": False, "name": node, "writable": True,
                  "clients": 0, "rd-bytes": 0, "wr-bytes": 0,
                  "rd-operations": 0, "wr-operations": 0,
                  "connected-clients": []}]
    h = client(sock, node)
    h.pwrite(b"x" * 512, 0)
    h.pwrite(b"x" * 1024, 4096)
    h.pread(100, 0)
    q = blockd.cmd("query-block-exports")[0]
    assert q["clients"] == 1
    assert (q["wr-bytes"], q["wr-operations"]) == (1536, 2)
    assert (q["rd-bytes"], q["rd-operations"]) == (100, 1)
    h.shutdown()
    wait_no_clients(blockd)


def test_export_del_safe_and_hard(blockd, node):
    sock = start(blockd)
    export(blockd, "e0", name="disk")
    h = client(sock, "disk")
    d = err(blockd, "block-export-del", {"id": "e0"})
    assert d == "export 'e0' still in use"
    assert h.pread(4, 0) == bytes(4)
    blockd.cmd("block-export-del", id="e0", mode="hard")
    ev = blockd.conn.get_event("BLOCK_EXPORT_DELETED")
    assert ev["data"] == {"id": "e0"}
    with pytest.raises(nbd.Error):
        h.pread(4, 0)
    assert blockd.cmd("query-block-exports") == []
    assert err(blockd, "block-export-del", {"id": "e0"}) == \
        "Export 'e0' is not found"
    # The id and name can be reused at once.
    export(blockd, "e0", name="disk")
    blockd.cmd("block-export-del", id="e0")
    assert blockd.conn.get_event("BLOCK_EXPORT_DELETED")["data"]["id"] == \
        "e0"
    with pytest.raises(nbd.Error):
        client(sock, "disk")


def test_node_in_use_by_export(blockd, node):
    start(blockd)
    export(blockd, "e0")
    with pytest.raises(QmpError):
        blockd.cmd("blockdev-del", node_name=node)
    blockd.cmd("block-export-del", id="e0")
    blockd.conn.get_event("BLOCK_EXPORT_DELETED")
    blockd.cmd("blockdev-del", node_name=node)


def test_legacy_nbd_server_add_remove(blockd, node):
    sock = start(blockd)
    blockd.cmd("nbd-server-add", device=node, writable=True)
    q = blockd.cmd("query-block-exports")
    assert q[0]["id"] == node and q[0]["name"] == node
    h = client(sock, node)
    h.pwrite(b"z" * 4, 0)
    h.shutdown()
    wait_no_clients(blockd)
    blockd.cmd("nbd-server-remove", {"name": node})
    assert blockd.conn.get_event("BLOCK_EXPORT_DELETED")["data"]["id"] == \
        node
    d = err(blockd, "nbd-server-remove", {"name": node})
    assert node in d
    blockd.cmd("nbd-server-add", {"device": node, "name": "other",
                                  "description": "legacy"})
    assert blockd.cmd("query-block-exports")[0]["id"] == "other"


def test_server_stop_drops_clients_and_exports(blockd, node):
    sock = start(blockd)
    export(blockd, "e0", name="a")
    export(blockd, "e1", name="b")
    h = client(sock, "a")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock)                    # parked in negotiation
    s.recv(18)
    blockd.cmd("nbd-server-stop")
    ids = {blockd.conn.get_event("BLOCK_EXPORT_DELETED")["data"]["id"]
           for _ in range(2)}
    assert ids == {"e0", "e1"}
    with pytest.raises(nbd.Error):
        h.pread(4, 0)
    s.settimeout(5)
    assert s.recv(100) == b""
    assert blockd.cmd("query-block-exports") == []
    start(blockd)


def test_max_connections(blockd, node):
    sock = start(blockd, **{"max-connections": 1})
    export(blockd, "e0", name="disk")
    h = client(sock, "disk")
    assert not h.can_multi_conn()
    # A second client waits in the backlog (no greeting) until the
    # first leaves, as with qemu-nbd --shared=1.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock)
    s.settimeout(0.5)
    with pytest.raises(socket.timeout):
        s.recv(18)
    h.shutdown()
    s.settimeout(5)
    assert len(s.recv(18)) > 0
    s.close()


def test_tcp_listener(blockd, node):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    blockd.cmd("nbd-server-start",
               addr={"type": "inet",
                     "data": {"host": "127.0.0.1", "port": str(port)}})
    export(blockd, "e0", name="disk")
    # TCP_NODELAY and one write per reply: no 40 ms Nagle stall (the
    # best of a few connects, so machine load does not matter).
    best = 1.0
    for _ in range(5):
        h = nbd.NBD()
        t0 = time.monotonic()
        h.connect_uri("nbd://127.0.0.1:%d/disk" % port)
        best = min(best, time.monotonic() - t0)
        assert h.get_size() == 1 << 20
        h.shutdown()
    assert best < 0.03


def test_shutdown_with_client_connected_closes_qcow2(blockd_factory,
                                                     tmp_path):
    """SIGTERM while a client is connected: the export lets go of its
    node, so qcow2 is closed cleanly and the data is there."""
    import subprocess
    img = str(tmp_path / "a.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", img, "4M"],
                   check=True)
    d = blockd_factory()
    d.cmd("blockdev-add", {"driver": "qcow2", "node-name": "q0",
                           "file": {"driver": "file", "filename": img}})
    sock = start(d)
    export(d, "e0", node="q0", name="disk", writable=True)
    h = client(sock, "disk")
    h.pwrite(b"persist!" * 512, 65536)
    h.flush()
    assert d.stop() == 0
    with open(d.log_path) as f:
        assert "still referenced" not in f.read()
    subprocess.run(["qemu-img", "check", "-q", img], check=True)
    out = subprocess.run(["qemu-io", "-f", "qcow2", "-c",
                          "read -P 0x70 65536 1", img],
                         capture_output=True, text=True, check=True)
    assert "verification failed" not in out.stdout


def test_writable_export_of_read_only_node(blockd, tmp_path):
    img = str(tmp_path / "ro.raw")
    with open(img, "wb") as f:
        f.truncate(1 << 20)
    blockd.cmd("blockdev-add", {"driver": "file", "node-name": "r0",
                                "filename": img, "read-only": True})
    sock = start(blockd)
    d = err(blockd, "block-export-add",
            {"type": "nbd", "id": "e0", "node-name": "r0",
             "writable": True})
    assert d
    assert blockd.cmd("query-block-exports") == []
    export(blockd, "e0", node="r0", name="ro")
    h = client(sock, "ro")
    assert h.is_read_only()
    h.shutdown()


def test_fd_listener(tmp_path):
    """--nbd-server addr.type=fd: serve on an inherited listening socket
    (how a supervisor hands blockd its socket)."""
    import subprocess
    from conftest import BLOCKD
    img = str(tmp_path / "a.raw")
    with open(img, "wb") as f:
        f.truncate(1 << 20)
        f.write(b"fd-listener")
    path = str(tmp_path / "l.sock")
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(path)
    lsock.listen(8)
    fd = lsock.fileno()
    proc = subprocess.Popen(
        [BLOCKD, "--blockdev",
         "driver=file,node-name=f0,filename=%s" % img,
         "--nbd-server", "addr.type=fd,addr.str=%d" % fd,
         "--export", "type=nbd,id=e0,node-name=f0,name=disk"],
        pass_fds=[fd], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lsock.close()
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                h = client(path, "disk")
                break
            except nbd.Error:
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert h.pread(11, 0) == b"fd-listener"
        h.shutdown()
    finally:
        proc.terminate()
        proc.wait(10)
