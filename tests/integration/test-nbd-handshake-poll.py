"""While a client negotiates (until its first request) the server polls
for its next message up to handshake-poll-max-ns before sleeping, an
adaptive window: clients slower than the maximum shrink it.  Polling
must never turn into spinning: a silent client costs the server next
to no CPU, a stalled handshake still times out, a slow client is still
served, and 0 turns it off."""
import glob
import os
import socket
import struct
import time

import nbd

import nbdraw
from nbdraw import Raw


def serve(blockd, tmp_path, **server):
    img = str(tmp_path / "a.raw")
    with open(img, "wb") as f:
        f.truncate(1 << 20)
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    blockd.cmd("blockdev-add", driver="file", node_name="f0", filename=img)
    args = {"addr": {"type": "unix", "data": {"path": sock}}}
    args.update(server)
    blockd.cmd("nbd-server-start", args)
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                    "node-name": "f0", "name": "disk"})
    return sock


def window(blockd):
    return blockd.cmd("query-nbd-server")["handshake-poll-ns"]


def cpu_seconds(pid):
    """The CPU time of every thread of pid, from schedstat (ns)."""
    total = 0
    for path in glob.glob("/proc/%d/task/*/schedstat" % pid):
        try:
            with open(path) as f:
                total += int(f.read().split()[0])
        except OSError:
            pass                  # a thread that just ended
    return total / 1e9


def libnbd_read(sock):
    h = nbd.NBD()
    h.set_export_name("disk")
    h.connect_unix(sock)
    assert h.pread(512, 0) == b"\0" * 512
    h.shutdown()


def test_default_window_and_off(blockd, tmp_path):
    sock = serve(blockd, tmp_path)
    assert window(blockd) == 50000
    libnbd_read(sock)
    blockd.cmd("nbd-server-stop")
    blockd.cmd("nbd-server-start",
               {"addr": {"type": "unix", "data": {"path": sock}},
                "handshake-poll-max-ns": 0})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                    "node-name": "f0", "name": "disk"})
    assert window(blockd) == 0
    libnbd_read(sock)
    assert window(blockd) == 0


def test_silent_clients_cost_no_cpu(blockd, tmp_path):
    """Ten clients that read the greeting and send nothing, and ten
    that stop in the middle of an option: over three seconds the server
    spends a small fraction of that on the CPU (spinning on them would
    be all of it)."""
    sock = serve(blockd, tmp_path, **{"max-connections": 0})
    libnbd_read(sock)
    clients = []
    for i in range(20):
        r = Raw(sock)
        if i % 2:
            r.s.sendall(struct.pack(">QI", nbdraw.IHAVEOPT, nbdraw.OPT_GO))
        clients.append(r)
    time.sleep(0.2)
    before = cpu_seconds(blockd.pid)
    time.sleep(3)
    spent = cpu_seconds(blockd.pid) - before
    assert spent < 0.75, "silent clients cost %.2f s of CPU in 3 s" % spent
    for r in clients:
        r.s.close()
    libnbd_read(sock)


def test_stalled_handshake_still_times_out(blockd, tmp_path):
    sock = serve(blockd, tmp_path, **{"handshake-max-seconds": 1})
    r = Raw(sock)
    r.s.sendall(struct.pack(">QI", nbdraw.IHAVEOPT, nbdraw.OPT_GO))
    assert r.closed(timeout=10)
    libnbd_read(sock)


def test_slow_client_shrinks_the_window(blockd, tmp_path):
    """A client that takes 20 ms over each answer (far over 50 us) is
    served, and the window halves on each such wait."""
    sock = serve(blockd, tmp_path)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(sock)
    r = Raw(s, handshake=False)
    r.recv(18)
    time.sleep(0.02)
    s.sendall(struct.pack(">I", 3))
    for _ in range(8):
        time.sleep(0.02)
        reps = r.opt(nbdraw.OPT_LIST)
        assert reps[-1][0] == nbdraw.REP_ACK
    time.sleep(0.02)
    r.go()
    time.sleep(0.02)
    r.request(nbdraw.CMD_READ, 0, 512, cookie=9)
    magic, err, cookie = struct.unpack(">IIQ", r.recv(16))
    assert (magic, err, cookie) == (nbdraw.SIMPLE_MAGIC, 0, 9)
    assert r.recv(512) == b"\0" * 512
    assert window(blockd) < 50000 / 8, window(blockd)
