"""An idle connection costs blockd a few KiB: request slots are
allocated when requests need them and freed with the buffers once the
connection idles (NBD_IDLE_RELEASE_US), and the handshake's buffer goes
once transmission starts.  Before, every connection carried 16 request
slots inline, about 40 KiB, whether or not it ever sent a request.
"""
import os
import time

import nbd

from conftest import BLOCKD

NCONN = int(os.environ.get("NCONN", "400"))


def sanitized():
    with open(BLOCKD, "rb") as f:
        return b"__asan_init" in f.read()


# Bytes of RSS allowed per idle connection: about 4 KiB are used; under
# AddressSanitizer every allocation carries redzones (13.6 KiB seen).
# Before slots were allocated on demand a connection held 40 KiB.
PER_CONN = (24 if sanitized() else 8) << 10


def vmrss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for pid %d" % pid)


def serve_with_one_client(blockd, tmp_path):
    """A 1 MiB file exported with no connection limit, and one client
    that has read once, so the loop's and the allocator's one-time
    costs are in the baseline: (socket path, that client)."""
    img = str(tmp_path / "a.raw")
    with open(img, "wb") as f:
        f.truncate(1 << 20)
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    blockd.cmd("blockdev-add", {"driver": "file", "node-name": "f0",
                                "filename": img})
    blockd.cmd("nbd-server-start",
               addr={"type": "unix", "data": {"path": sock}},
               **{"max-connections": 0})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                    "node-name": "f0", "name": ""})
    first = nbd.NBD()
    first.connect_unix(sock)
    first.pread(4096, 0)
    return sock, first


def test_idle_connections_are_cheap(blockd, tmp_path):
    sock, first = serve_with_one_client(blockd, tmp_path)
    time.sleep(2.5)
    before = vmrss(blockd.pid)
    handles = []
    try:
        for _ in range(NCONN):
            h = nbd.NBD()
            h.connect_unix(sock)
            h.pread(4096, 0)      # one request: slots and buffers used
            handles.append(h)
        # Buffers and slots go back after a second without requests.
        deadline = time.monotonic() + 60
        while True:
            grew = vmrss(blockd.pid) - before
            if grew < NCONN * PER_CONN or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert grew < NCONN * PER_CONN, \
            "%d idle connections grew RSS by %d KiB (%.1f KiB each)" % (
                NCONN, grew >> 10, grew / 1024 / NCONN)
        for h in handles[::50]:
            assert h.pread(4, 0) == b"\0" * 4
    finally:
        for h in handles:
            h.shutdown()
        first.shutdown()


# A connection that finished its handshake and sent nothing yet holds
# neither a request slot (a header is read into the connection and
# takes its slot once complete) nor the handshake's input page: the
# issue's target is 1,000 such connections in 4 MiB.  Before, each held
# a slot and a page of input buffer, 7.3 KiB.
PER_FRESH_CONN = (16 if sanitized() else 4) << 10


def test_connections_that_never_sent_a_request(blockd, tmp_path):
    sock, first = serve_with_one_client(blockd, tmp_path)
    before = vmrss(blockd.pid)
    handles = []
    try:
        for _ in range(NCONN):
            h = nbd.NBD()
            h.add_meta_context("base:allocation")
            h.connect_unix(sock)
            handles.append(h)
        # No waiting for the idle release: nothing is held to release.
        grew = vmrss(blockd.pid) - before
        assert grew < NCONN * PER_FRESH_CONN, \
            "%d fresh connections grew RSS by %d KiB (%.1f KiB each)" % (
                NCONN, grew >> 10, grew / 1024 / NCONN)
        for h in handles[::50]:
            assert h.pread(4, 0) == b"\0" * 4
    finally:
        for h in handles:
            h.shutdown()
        first.shutdown()
