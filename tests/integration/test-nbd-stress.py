"""Many clients over many exports doing random verified I/O while QMP
adds and deletes other exports: no wrong byte, and QMP stays fast.

The issue's figure, 200 clients over 50 exports (4 per export, each in
its own 1 MiB region), with python3-libnbd in threads and several
requests in flight per client, for 8 seconds: about 11 s in all on the
2-core project machine, also under ASan.  BLOCKD_STRESS_CLIENTS /
BLOCKD_STRESS_EXPORTS / BLOCKD_STRESS_SECONDS change the size.
"""
import os
import random
import threading
import time

import nbd

from conftest import Qmp

MIB = 1 << 20
CLIENTS = int(os.environ.get("BLOCKD_STRESS_CLIENTS", "200"))
EXPORTS = int(os.environ.get("BLOCKD_STRESS_EXPORTS", "50"))
SECONDS = float(os.environ.get("BLOCKD_STRESS_SECONDS", "8"))


def client_worker(uri, region, seed, errors, stop):
    rnd = random.Random(seed)
    base = region * MIB
    model = bytearray(MIB)
    try:
        h = nbd.NBD()
        h.connect_uri(uri)
        ops = 0
        while not stop.is_set() or ops < 20:
            ops += 1
            # A burst of async writes (several in flight), then checks.
            # Writes in flight together may run in any order, so a
            # burst uses disjoint 64 KiB slices of the region.
            cookies = []
            for s in rnd.sample(range(16), rnd.randrange(1, 8)):
                off = s * 65536 + rnd.randrange(0, 65535)
                n = rnd.randrange(1, (s + 1) * 65536 - off + 1)
                data = rnd.randbytes(n)
                model[off:off + n] = data
                cookies.append(h.aio_pwrite(nbd.Buffer.from_bytearray(
                    bytearray(data)), base + off))
            while cookies:
                h.poll(-1)
                for c in list(cookies):
                    if h.aio_command_completed(c):
                        cookies.remove(c)
            r = rnd.random()
            if r < 0.1:
                off = rnd.randrange(0, MIB - 4096)
                h.zero(4096, base + off)
                model[off:off + 4096] = bytes(4096)
            elif r < 0.15:
                h.flush()
            off = rnd.randrange(0, MIB - 1)
            n = rnd.randrange(1, min(131072, MIB - off) + 1)
            got = h.pread(n, base + off)
            if got != bytes(model[off:off + n]):
                errors.append("wrong data %s region %d at %d+%d"
                              % (uri, region, off, n))
                break
        if h.pread(MIB, base) != bytes(model):
            errors.append("final check failed %s region %d" % (uri, region))
        h.shutdown()
    except Exception as e:   # report, do not hang the others
        errors.append("%s region %d: %r" % (uri, region, e))
    return model


def test_many_clients_many_exports(blockd, tmp_path):
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    per_export = (CLIENTS + EXPORTS - 1) // EXPORTS
    size = per_export * MIB
    imgs = []
    for i in range(EXPORTS + 1):
        img = str(tmp_path / ("d%d.raw" % i))
        with open(img, "wb") as f:
            f.truncate(size)
        imgs.append(img)
        blockd.cmd("blockdev-add", driver="file", node_name="n%d" % i,
                   filename=img)
    blockd.cmd("nbd-server-start", {"addr": {"type": "unix",
                                             "data": {"path": sock}},
                                    "max-connections": 0})
    for i in range(EXPORTS):
        blockd.cmd("block-export-add", {"type": "nbd", "id": "e%d" % i,
                                        "node-name": "n%d" % i,
                                        "name": "d%d" % i,
                                        "writable": True})
    errors = []
    stop = threading.Event()
    models = {}
    threads = []

    def run(i):
        exp, region = i % EXPORTS, i // EXPORTS
        uri = "nbd+unix:///d%d?socket=%s" % (exp, sock)
        models[(exp, region)] = client_worker(uri, region, i, errors, stop)

    for i in range(CLIENTS):
        t = threading.Thread(target=run, args=(i,))
        t.start()
        threads.append(t)

    # Meanwhile QMP adds and deletes other exports (with a client on
    # them that gets cut off) and must answer quickly throughout.
    q = Qmp(blockd.qmp_path)
    worst = 0.0
    deadline = time.monotonic() + SECONDS
    j = 0
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        q.cmd("block-export-add", {"type": "nbd", "id": "x%d" % j,
                                   "node-name": "n%d" % EXPORTS,
                                   "name": "x%d" % j, "writable": True})
        q.cmd("query-block-exports")
        worst = max(worst, time.monotonic() - t0)
        h = nbd.NBD()
        h.connect_uri("nbd+unix:///x%d?socket=%s" % (j, sock))
        h.pwrite(b"s" * 4096, 0)
        t0 = time.monotonic()
        q.cmd("block-export-del", id="x%d" % j, mode="hard")
        worst = max(worst, time.monotonic() - t0)
        q.get_event("BLOCK_EXPORT_DELETED")
        try:
            h.pread(4096, 0)
            errors.append("client of a deleted export still served")
        except nbd.Error:
            pass
        j += 1
    stop.set()
    for t in threads:
        t.join(120)
    assert not errors, errors[:5]
    assert j >= 5
    assert worst < 1.0, "QMP took %.3f s under load" % worst
    q.close()
    # The files hold exactly what the clients wrote.
    for (exp, region), model in models.items():
        with open(imgs[exp], "rb") as f:
            f.seek(region * MIB)
            assert f.read(MIB) == bytes(model), (exp, region)
    deadline = time.monotonic() + 10
    while any(e["clients"] for e in blockd.cmd("query-block-exports")):
        assert time.monotonic() < deadline, "clients never left"
        time.sleep(0.05)
