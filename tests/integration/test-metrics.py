"""blockd --metrics: a Prometheus text endpoint on the daemon's loop.
A small parser checks the exposition format (every sample in a family
declared by # TYPE, counters named *_total, no series twice) and the
counters move as an NBD client reads and writes."""
import os
import re
import socket

import nbd
import pytest

import subprocess
import time

from conftest import BLOCKD, wait_socket

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)'
                    r'(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"'
                    r'(?:,|(?=\})))*)\})?'
                    r' (-?[0-9.eE+-]+|NaN|[+-]Inf)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def family_of(name, types):
    """The family a sample belongs to: itself, or the histogram that
    name_bucket / name_sum / name_count belong to."""
    if name in types:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        base = name[:-len(suffix)]
        if name.endswith(suffix) and types.get(base) == "histogram":
            return base
    return None


def check_histograms(samples, types):
    """Each histogram series: buckets with le, cumulative, ascending le,
    ending with +Inf equal to _count; a _sum beside it."""
    series = {}
    for (name, labels), value in samples.items():
        fam = family_of(name, types)
        if types[fam] != "histogram":
            continue
        if name == fam + "_bucket":
            d = dict(labels)
            le = d.pop("le")
            series.setdefault((fam, frozenset(d.items())), []).append(
                (float(le), value))
        else:
            assert name in (fam + "_sum", fam + "_count"), name
            assert "le" not in dict(labels), name
    for (fam, labels), buckets in series.items():
        buckets.sort()
        assert buckets[-1][0] == float("inf"), (fam, labels)
        counts = [v for _, v in buckets]
        assert counts == sorted(counts), (fam, labels, counts)
        assert samples[(fam + "_count", labels)] == counts[-1]
        assert samples[(fam + "_sum", labels)] >= 0
    return series


def parse(text):
    """{(name, frozenset(labels)): value}, checking the format."""
    types = {}
    samples = {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "histogram", "summary",
                            "untyped"), line
            assert name not in types, "family declared twice: " + name
            types[name] = kind
            continue
        assert not line.startswith("#"), line
        m = SAMPLE.match(line)
        assert m, "not a sample line: %r" % line
        name, labels, value = m.groups()
        fam = family_of(name, types)
        assert fam is not None, "sample before its # TYPE: " + line
        if types[fam] == "counter":
            assert name.endswith("_total"), name
        key = (name, frozenset(LABEL.findall(labels or "")))
        assert key not in samples, "series twice: " + line
        samples[key] = float(value)
    check_histograms(samples, types)
    return samples


def get(samples, name, **labels):
    return samples[(name, frozenset(labels.items()))]


def http(addr, request=b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"):
    fam = socket.AF_UNIX if isinstance(addr, str) else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(addr)
    s.sendall(request)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n")[0].decode()
    headers = dict(h.decode().split(": ", 1)
                   for h in head.split(b"\r\n")[1:])
    assert int(headers["Content-Length"]) == len(body)
    return status, headers, body.decode()


def scrape(addr):
    status, headers, body = http(addr)
    assert status.endswith(" 200 OK"), status
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(body)


@pytest.fixture
def served(blockd_factory, tmp_path):
    msock = str(tmp_path / "metrics.sock")
    nsock = str(tmp_path / "nbd.sock")
    d = blockd_factory(
        "--metrics", "unix:" + msock,
        "--blockdev", "driver=null-co,node-name=n0,size=4194304",
        "--nbd-server", "addr.type=unix,addr.path=" + nsock,
        "--export", "nbd,id=e0,node-name=n0,writable=on")
    # The QMP socket comes first; the metrics socket after every option.
    wait_socket(msock, d.proc)
    return d, msock, nsock


def test_counters_move(served):
    d, msock, nsock = served
    before = scrape(msock)
    assert get(before, "blockd_info", version=d.cmd("query-version")
               ["package"].split("-", 1)[1]) == 1
    assert get(before, "blockd_node_read_bytes_total", node="n0") == 0
    assert get(before, "blockd_export_clients", export="e0") == 0
    assert get(before, "blockd_nbd_server_up") == 1

    h = nbd.NBD()
    h.connect_uri("nbd+unix:///n0?socket=%s" % nsock)
    for i in range(4):
        h.pread(65536, i * 65536)
    h.pwrite(b"x" * 4096, 0)
    during = scrape(msock)
    assert get(during, "blockd_export_clients", export="e0") == 1
    assert get(during, "blockd_nbd_server_clients") == 1
    h.shutdown()

    after = scrape(msock)
    assert get(after, "blockd_node_read_bytes_total", node="n0") == 262144
    assert get(after, "blockd_node_write_bytes_total", node="n0") == 4096
    assert get(after, "blockd_node_operations_total", node="n0",
               op="read") == 4
    assert get(after, "blockd_node_operations_total", node="n0",
               op="write") == 1
    assert get(after, "blockd_export_read_bytes_total", export="e0") \
        == 262144
    assert get(after, "blockd_export_operations_total", export="e0",
               op="read") == 4
    assert get(after, "blockd_node_operation_seconds_total", node="n0",
               op="read") >= 0
    # The same numbers as QMP's.
    st = [s for s in d.cmd("query-blockstats", query_nodes=True)
          if s["node-name"] == "n0"][0]["stats"]
    assert st["rd_bytes"] == 262144


def test_paths_and_stalled_clients(served):
    d, msock, nsock = served
    status, _, body = http(msock, b"GET /nope HTTP/1.0\r\n\r\n")
    assert status.endswith(" 404 Not Found")
    status, _, body = http(msock, b"POST /metrics HTTP/1.0\r\n\r\n")
    assert status.endswith(" 405 Method Not Allowed")
    # A client that connects and says nothing does not hold up others,
    # nor QMP.
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stalled.connect(msock)
    stalled.sendall(b"GET /metr")
    assert scrape(msock)
    d.cmd("query-version")
    stalled.close()
    # Nodes added later show up.
    d.cmd("blockdev-add", driver="null-co", node_name="n1")
    assert get(scrape(msock), "blockd_node_read_bytes_total",
               node="n1") == 0


def test_tcp(blockd_factory):
    # Port 0 is not known to the test: take a free one, then hand it on.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    d = blockd_factory("--metrics", "tcp:127.0.0.1:%d" % port)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 5).close()
            break
        except OSError:
            assert d.alive() and time.monotonic() < deadline
            time.sleep(0.05)
    samples = scrape(("127.0.0.1", port))
    assert get(samples, "blockd_nbd_server_up") == 0


def test_bad_address():
    r = subprocess.run([BLOCKD, "--metrics", "udp:1"], capture_output=True,
                       timeout=60)
    assert r.returncode == 1
    assert b"--metrics: expected unix:PATH or tcp:HOST:PORT" in r.stderr


OPS = ("read", "write", "write-zeroes", "discard", "flush", "block-status")


def hist_count(samples, name, **labels):
    return get(samples, name + "_count", **labels)


def test_latency_histograms_move(blockd_factory, tmp_path):
    """Every kind of request a client makes lands in the node's and the
    export's histograms, QMP shows the same counts (QEMU's
    rd/wr/flush_latency_histogram and blockd's op-stats), and nothing
    stays in flight."""
    msock = str(tmp_path / "metrics.sock")
    nsock = str(tmp_path / "nbd.sock")
    img = tmp_path / "a.raw"
    with open(img, "wb") as f:
        f.write(b"a" * (1 << 20))
        f.truncate(4 << 20)
    d = blockd_factory(
        "--metrics", "unix:" + msock,
        "--blockdev", "driver=file,node-name=f0,discard=unmap,filename=%s"
        % img,
        "--nbd-server", "addr.type=unix,addr.path=" + nsock,
        "--export", "nbd,id=e0,node-name=f0,writable=on")
    wait_socket(msock, d.proc)
    before = scrape(msock)
    for op in OPS:
        assert hist_count(before, "blockd_node_latency_seconds",
                          node="f0", op=op) == 0
        assert get(before, "blockd_node_in_flight", node="f0", op=op) == 0

    h = nbd.NBD()
    h.add_meta_context("base:allocation")
    h.connect_uri("nbd+unix:///f0?socket=%s" % nsock)
    for i in range(4):
        h.pread(4096, i * 4096)
    # A big read of data: spliced from the page cache (test-nbd-splice),
    # counted all the same.
    assert h.pread(262144, 262144) == b"a" * 262144
    for i in range(3):
        h.pwrite(b"y" * 4096, i * 4096)
    h.zero(65536, 1 << 20)
    h.trim(65536, 2 << 20)
    h.flush()
    h.block_status(1 << 20, 0, lambda *a: 0)
    want = {"read": 5, "write": 3, "write-zeroes": 1, "discard": 1,
            "flush": 1, "block-status": 1}
    after = scrape(msock)
    for op, n in want.items():
        assert hist_count(after, "blockd_export_latency_seconds",
                          export="e0", op=op) == n, op
        assert get(after, "blockd_export_in_flight", export="e0",
                   op=op) == 0
        # The node counts what reached it (a flush reaches it once).
        assert hist_count(after, "blockd_node_latency_seconds", node="f0",
                          op=op) == n, op
        assert get(after, "blockd_node_in_flight", node="f0", op=op) == 0
    assert get(after, "blockd_node_latency_seconds_bucket", node="f0",
               op="read", le="+Inf") == 5
    assert get(after, "blockd_node_latency_seconds_sum", node="f0",
               op="read") > 0

    st = [s for s in d.cmd("query-blockstats", query_nodes=True)
          if s["node-name"] == "f0"][0]["stats"]
    rd = st["rd_latency_histogram"]
    assert len(rd["bins"]) == len(rd["boundaries"]) + 1
    assert rd["boundaries"] == sorted(rd["boundaries"])
    assert sum(rd["bins"]) == st["rd_operations"] == 5
    assert sum(st["wr_latency_histogram"]["bins"]) == 3
    assert sum(st["flush_latency_histogram"]["bins"]) == 1
    ops = {o["op"]: o for o in st["op-stats"]}
    assert sorted(ops) == sorted(OPS)
    assert ops["write-zeroes"]["operations"] == 1
    assert ops["read"]["total-time-ns"] == st["rd_total_time_ns"]
    e = d.cmd("query-block-exports", {"op-stats": True})[0]
    eops = {o["op"]: o for o in e["op-stats"]}
    assert eops["block-status"]["operations"] == 1
    assert sum(eops["read"]["latency"]["bins"]) == 5

    # A request past the end is refused by the server's checks (libnbd
    # would not send it in strict mode), and does not reach the node.
    h.set_strict_mode(0)
    with pytest.raises(nbd.Error):
        h.pread(4096, 4 << 20)
    h.shutdown()
    after = scrape(msock)
    assert get(after, "blockd_export_invalid_operations_total",
               export="e0", op="read") == 1
    assert hist_count(after, "blockd_node_latency_seconds", node="f0",
                      op="read") == 5


def test_in_flight_and_failed(blockd_factory, tmp_path):
    """A request held by blkdebug is in flight on the node and the
    export until it is released; an injected error counts as failed."""
    msock = str(tmp_path / "metrics.sock")
    nsock = str(tmp_path / "nbd.sock")
    d = blockd_factory(
        "--metrics", "unix:" + msock,
        "--nbd-server", "addr.type=unix,addr.path=" + nsock)
    wait_socket(msock, d.proc)
    d.cmd("blockdev-add", {
        "driver": "blkdebug", "node-name": "dbg",
        "stall": [{"iotype": "read", "tag": "t1"}],
        "inject-error": [{"iotype": "write", "errno": 5}],
        "image": {"driver": "null-co", "size": 1 << 20,
                  "read-zeroes": True}})
    d.cmd("block-export-add", type="nbd", id="e0", node_name="dbg",
          writable=True)
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///dbg?socket=%s" % nsock)
    cookie = h.aio_pread(nbd.Buffer(4096), 0)
    deadline = time.monotonic() + 60
    while d.cmd("x-query-blkdebug", node_name="dbg")["stalled"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    during = scrape(msock)
    assert get(during, "blockd_node_in_flight", node="dbg", op="read") == 1
    assert get(during, "blockd_export_in_flight", export="e0",
               op="read") == 1
    st = [s for s in d.cmd("query-blockstats", query_nodes=True)
          if s["node-name"] == "dbg"][0]["stats"]
    assert {o["op"]: o for o in st["op-stats"]}["read"]["in-flight"] == 1
    d.cmd("x-blkdebug-resume", node_name="dbg", tag="t1")
    while not h.aio_command_completed(cookie):
        h.poll(1)
    with pytest.raises(nbd.Error):
        h.pwrite(b"z" * 512, 0)
    after = scrape(msock)
    assert get(after, "blockd_node_in_flight", node="dbg", op="read") == 0
    assert get(after, "blockd_export_in_flight", export="e0",
               op="read") == 0
    assert get(after, "blockd_node_failed_operations_total", node="dbg",
               op="write") == 1
    assert get(after, "blockd_export_failed_operations_total",
               export="e0", op="write") == 1
    assert hist_count(after, "blockd_export_latency_seconds", export="e0",
                      op="read") == 1
    h.shutdown()


def test_per_client(served):
    """Each connected client has an info series with its address, and
    its own byte and request counters; a client that leaves is gone."""
    d, msock, nsock = served
    a = nbd.NBD()
    a.connect_uri("nbd+unix:///n0?socket=%s" % nsock)
    b = nbd.NBD()
    b.connect_uri("nbd+unix:///n0?socket=%s" % nsock)
    for i in range(3):
        a.pread(8192, 0)
    b.pwrite(b"q" * 1024, 0)
    b.flush()
    s = scrape(msock)
    info = {dict(k[1])["client"]: dict(k[1]) for k in s
            if k[0] == "blockd_export_client_info"}
    assert len(info) == 2
    for c in info.values():
        assert c["export"] == "e0"
        assert c["addr"] == "unix:pid=%d" % os.getpid()
        assert c["tls_identity"] == ""
    # QMP shows the same clients, with the same numbers.
    clients = d.cmd("query-block-exports")[0]["connected-clients"]
    assert sorted(str(c["id"]) for c in clients) == sorted(info)
    ca, cb = sorted(clients, key=lambda c: c["id"])
    assert (ca["rd-bytes"], ca["rd-operations"]) == (3 * 8192, 3)
    assert (cb["wr-bytes"], cb["wr-operations"], cb["other-operations"]) \
        == (1024, 1, 1)
    ida, idb = str(ca["id"]), str(cb["id"])
    assert get(s, "blockd_export_client_read_bytes_total", export="e0",
               client=ida) == 3 * 8192
    assert get(s, "blockd_export_client_write_bytes_total", export="e0",
               client=idb) == 1024
    assert get(s, "blockd_export_client_operations_total", export="e0",
               client=ida, op="read") == 3
    assert get(s, "blockd_export_client_operations_total", export="e0",
               client=idb, op="other") == 1
    a.shutdown()
    del a
    deadline = time.monotonic() + 60
    while len(d.cmd("query-block-exports")[0]["connected-clients"]) != 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    s = scrape(msock)
    left = [dict(k[1])["client"] for k in s
            if k[0] == "blockd_export_client_info"]
    assert left == [idb]
    b.shutdown()
