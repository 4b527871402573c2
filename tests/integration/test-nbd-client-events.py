"""NBD_EXPORT_CLIENT_CONNECTED / NBD_EXPORT_CLIENT_DISCONNECTED: a client
entering transmission on an export is announced with its address (and
TLS identity), and its leaving too, whether it disconnects or its export
is deleted under it."""
import os
import re
import socket

import nbd

from pki import psk_dir, require_tools


def start(blockd, tmp_path, **server):
    sock = str(tmp_path / "nbd.sock")
    blockd.cmd("blockdev-add", driver="null-co", node_name="n0",
               size=1 << 20)
    args = {"addr": {"type": "unix", "data": {"path": sock}}}
    args.update(server)
    blockd.cmd("nbd-server-start", args)
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                    "node-name": "n0", "name": "disk"})
    return sock


def test_unix_client(blockd, tmp_path):
    sock = start(blockd, tmp_path)
    q = blockd.conn
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///disk?socket=%s" % sock)
    ev = q.get_event("NBD_EXPORT_CLIENT_CONNECTED", timeout=30)
    # libnbd runs in this process: the peer is us.
    assert ev["data"] == {"id": "e0", "addr": "unix:pid=%d" % os.getpid()}
    h.pread(512, 0)
    # query-block-exports lists it too.
    exp = blockd.cmd("query-block-exports")[0]
    assert [c["addr"] for c in exp["connected-clients"]] == [
        "unix:pid=%d" % os.getpid()]
    assert "tls-identity" not in exp["connected-clients"][0]
    h.shutdown()
    ev = q.get_event("NBD_EXPORT_CLIENT_DISCONNECTED", timeout=30)
    assert ev["data"] == {"id": "e0", "addr": "unix:pid=%d" % os.getpid()}
    assert blockd.cmd("query-block-exports")[0]["connected-clients"] == []


def test_listing_is_not_announced(blockd, tmp_path):
    """A client that only lists exports never enters transmission."""
    sock = start(blockd, tmp_path)
    q = blockd.conn
    h = nbd.NBD()
    h.set_opt_mode(True)
    h.connect_uri("nbd+unix:///?socket=%s" % sock)
    h.opt_list(lambda name, desc: 0)
    h.opt_abort()
    # A real client afterwards: its CONNECTED is the first event.
    h2 = nbd.NBD()
    h2.connect_uri("nbd+unix:///disk?socket=%s" % sock)
    ev = q.get_event(timeout=30)
    assert ev["event"] == "NBD_EXPORT_CLIENT_CONNECTED"
    h2.shutdown()
    q.get_event("NBD_EXPORT_CLIENT_DISCONNECTED", timeout=30)


def test_tcp_and_export_deleted(blockd, tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    blockd.cmd("blockdev-add", driver="null-co", node_name="n0")
    blockd.cmd("nbd-server-start", addr={"type": "inet", "data": {
        "host": "127.0.0.1", "port": str(port)}})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                    "node-name": "n0", "name": "disk"})
    q = blockd.conn
    h = nbd.NBD()
    h.connect_uri("nbd://127.0.0.1:%d/disk" % port)
    ev = q.get_event("NBD_EXPORT_CLIENT_CONNECTED", timeout=30)
    assert re.fullmatch(r"127\.0\.0\.1:\d+", ev["data"]["addr"]), ev
    addr = ev["data"]["addr"]
    # Removed under the client: it is dropped, and that is announced.
    blockd.cmd("block-export-del", id="e0", mode="hard")
    ev = q.get_event("NBD_EXPORT_CLIENT_DISCONNECTED", timeout=30)
    assert ev["data"] == {"id": "e0", "addr": addr}
    q.get_event("BLOCK_EXPORT_DELETED", timeout=30)


def test_tls_identity(blockd, tmp_path):
    require_tools()
    d = psk_dir(tmp_path / "psk", {"alice": None})
    blockd.cmd("object-add", {"qom-type": "tls-creds-psk", "id": "t0",
                              "endpoint": "server", "dir": d})
    sock = start(blockd, tmp_path, **{"tls-creds": "t0"})
    q = blockd.conn
    h = nbd.NBD()
    h.set_tls(nbd.TLS_REQUIRE)
    h.set_tls_psk_file(os.path.join(d, "keys.psk"))
    h.set_tls_username("alice")
    h.set_export_name("disk")
    h.connect_unix(sock)
    ev = q.get_event("NBD_EXPORT_CLIENT_CONNECTED", timeout=30)
    assert ev["data"]["tls-identity"] == "alice"
    exp = blockd.cmd("query-block-exports")[0]
    assert [c["tls-identity"] for c in exp["connected-clients"]] \
        == ["alice"]
    h.shutdown()
    ev = q.get_event("NBD_EXPORT_CLIENT_DISCONNECTED", timeout=30)
    assert ev["data"]["tls-identity"] == "alice"
