"""blockd --metrics: a Prometheus text endpoint on the daemon's loop.
A small parser checks the exposition format (every sample in a family
declared by # TYPE, counters named *_total, no series twice) and the
counters move as an NBD client reads and writes."""
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
        assert name in types, "sample before its # TYPE: " + line
        if types[name] == "counter":
            assert name.endswith("_total"), name
        key = (name, frozenset(LABEL.findall(labels or "")))
        assert key not in samples, "series twice: " + line
        samples[key] = float(value)
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
