"""blockd's `nbd` driver against a hostile server (fakenbd.py): every
misbehaviour fails the request or the connection with a clear error in
blockd's log, never a crash or a wrong answer; blockd keeps serving its
other exports, and the node recovers once the server behaves again.
Run under ASan too (reads past a buffer would show there)."""
import json
import os
import re
import subprocess
import threading
import time

import nbd
import pytest

from conftest import Qmp, QmpError, requires
from fakenbd import (FakeNbd, DEFAULT_FLAGS, FLAG_CAN_MULTI_CONN,
                     FLAG_READ_ONLY)
from nbdraw import OPT_EXTENDED, OPT_STRUCTURED
from upstream import export, nbd_node, requires_nbd_driver

MIB = 1 << 20
SIZE = 4 * MIB
OFF, LEN = MIB, 65536


def pattern(size):
    """Data where every 4 KiB block differs, with zero runs in between
    (so block status has both kinds)."""
    data = bytearray(size)
    for blk in range(0, size, 32768):
        data[blk:blk + 4096] = (b"%08x" % blk) * 512
    return data


MODES = ["extended", "structured", "simple"]
STRUCTURED = ["extended", "structured"]


def cases(table, modes):
    """(mode, case) pairs for indirect parametrization of hostile."""
    return [pytest.param(m, c, id="%s-%s" % (m, c))
            for c in sorted(table) for m in modes]


@pytest.fixture(params=MODES)
def hostile(request, blockd, tmp_path):
    """A fake server (in the mode of the param) behind the nbd node "h0",
    exported as "h"; a file node exported as "good"."""
    requires_nbd_driver(blockd)
    mode = request.param
    srv = FakeNbd(os.path.join(blockd.sockdir, "fake.sock"),
                  data=pattern(SIZE), structured=mode != "simple",
                  extended=mode == "extended")
    nbd_node(blockd, "h0", srv.path)
    # the client really speaks the mode: it asks for extended headers
    # first, and falls back to structured replies when refused
    assert srv.options[0] == OPT_EXTENDED, srv.options
    if mode == "structured":
        assert OPT_STRUCTURED in srv.options, srv.options
    uri = export(blockd, "h0", "h")
    img = str(tmp_path / "good.raw")
    with open(img, "wb") as f:
        f.write(b"G" * MIB)
    blockd.cmd("blockdev-add", driver="file", node_name="g0", filename=img)
    good = export(blockd, "g0", "good")
    yield dict(srv=srv, uri=uri, good=good, mode=mode, blockd=blockd)
    srv.misbehave = set()
    assert blockd.alive(), blockd.logtext()
    h = nbd.NBD()
    h.connect_uri(good)
    assert h.pread(4, 0) == b"GGGG"
    h.shutdown()
    srv.stop()


def connect(uri, meta=False):
    h = nbd.NBD()
    if meta:
        h.add_meta_context("base:allocation")
    h.connect_uri(uri)
    return h


def recovers(c, timeout=60):
    """The node reads right again (it reconnects in the background)."""
    deadline = time.monotonic() + timeout
    want = bytes(c["srv"].data[OFF:OFF + LEN])
    while True:
        try:
            h = connect(c["uri"])
            if h.pread(LEN, OFF) == want:
                return True
        except nbd.Error:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("node did not recover:\n" +
                                 c["blockd"].logtext()[-3000:])
        time.sleep(0.2)


def wait_log(d, regex, timeout=30):
    deadline = time.monotonic() + timeout
    while not re.search(regex, d.logtext()):
        if time.monotonic() > deadline:
            raise AssertionError("no log line /%s/ in:\n%s"
                                 % (regex, d.logtext()[-3000:]))
        time.sleep(0.05)


def test_behaving_server_reads_and_writes(hostile):
    """The baseline: the same fake, behaving, serves correctly."""
    h = connect(hostile["uri"])
    assert h.get_size() == SIZE
    assert h.pread(LEN, OFF) == bytes(hostile["srv"].data[OFF:OFF + LEN])
    h.pwrite(b"w" * 4096, 8192)
    h.flush()
    assert hostile["srv"].data[8192:12288] == b"w" * 4096
    h.shutdown()


def test_block_status_passes_through(hostile):
    requires("nbdinfo")
    srv = hostile["srv"]
    got = json.loads(subprocess.run(
        ["nbdinfo", "--json", "--map", hostile["uri"]], check=True,
        capture_output=True, text=True).stdout)
    if hostile["mode"] == "simple":
        # no structured replies, no base:allocation upstream: all data
        want = [(0, SIZE, 0)]
    else:
        want = merged_true(srv.extents(0, SIZE))
    assert merge(got) == want


def merged_true(ext):
    out, pos = [], 0
    for n, st in ext:
        out.append((pos, n, st))
        pos += n
    return out


def merge(extents):
    out = []
    for e in extents:
        if out and out[-1][2] == e["type"]:
            out[-1] = (out[-1][0], out[-1][1] + e["length"], e["type"])
        else:
            out.append((e["offset"], e["length"], e["type"]))
    return out


# Each READ misbehaviour and the log line that says what the server did;
# the first two apply to simple replies as well.
READ_ANY = {
    "unknown_cookie": r"unknown cookie",
    "close_mid_reply": r"lost",
}
READ_STRUCTURED = {
    "huge_chunk": r"data chunk of \d+ bytes",
    "read_past_range": r"data chunk (outside|of \d+ bytes)",
    "read_before_range": r"data chunk outside",
    "read_overlap": r"data chunk outside",
    "read_short": r"covers \d+ of \d+ bytes",
    "short_chunk": r"data chunk of 4 bytes|lost",
    "truncated_chunk": r"lost",
    "no_done": r"lost",
    "bad_error_chunk": r"malformed error chunk",
}


@pytest.mark.parametrize("hostile,case",
                         cases(READ_ANY, MODES) +
                         cases(READ_STRUCTURED, STRUCTURED),
                         indirect=["hostile"])
def test_read_misbehaviour_fails_cleanly(hostile, case):
    regex = READ_ANY.get(case) or READ_STRUCTURED[case]
    d = hostile["blockd"]
    hostile["srv"].misbehave = {case}
    h = connect(hostile["uri"])
    with pytest.raises(nbd.Error) as e:
        h.pread(LEN, OFF)
    assert e.value.errno == "EIO", e.value
    wait_log(d, "nbd '[^']*'.*(" + regex + ")")
    if case != "read_short":          # that one keeps the connection
        # the operator is told which node lost its server, and why
        ev = d.conn.get_event("NBD_CLIENT_DISCONNECTED", timeout=30)
        assert ev["data"]["node-name"] == "h0", ev
        if regex != "lost":
            assert re.search(regex, ev["data"]["reason"]), ev
    # QMP still answers, the other export still serves (fixture end)
    d.cmd("query-named-block-nodes")
    hostile["srv"].misbehave = set()
    recovers(hostile)


@pytest.mark.parametrize("hostile", ["simple"], indirect=True)
def test_unsolicited_structured_reply_fails(hostile):
    """A structured chunk to a client that did not negotiate them."""
    d = hostile["blockd"]
    hostile["srv"].misbehave = {"unsolicited_structured"}
    h = connect(hostile["uri"])
    with pytest.raises(nbd.Error):
        h.pread(LEN, OFF)
    ev = d.conn.get_event("NBD_CLIENT_DISCONNECTED", timeout=30)
    assert ev["data"]["node-name"] == "h0", ev
    wait_log(d, r"nbd '[^']*'.*protocol violation")
    hostile["srv"].misbehave = set()
    recovers(hostile)


@pytest.mark.parametrize("hostile", ["simple"], indirect=True)
def test_oversized_simple_reply_drops_connection(hostile):
    """64 KiB of junk after a simple reply: the junk is read as the next
    reply header, which is a protocol violation."""
    d = hostile["blockd"]
    hostile["srv"].misbehave = {"oversized_simple"}
    hostile["srv"].misbehave_once = True
    h = connect(hostile["uri"])
    try:
        h.pread(LEN, OFF)             # the reply itself is whole
    except nbd.Error as e:
        assert e.errno == "EIO"
    wait_log(d, r"nbd '[^']*'.*(unknown reply magic|malformed reply header)")
    recovers(hostile)


# BLOCK_STATUS misbehaviours.  Extents are hostile: a zero-length one, an
# unknown context or an empty reply is a protocol violation (the block
# status fails); extents past the request or the end are clamped, and
# the ones after the first are not needed, so those maps stay correct.
BS_FAIL = {
    "bs_zero_length": r"block status|lost",
    "bs_unknown_context": r"unknown context",
    "bs_empty": r"block status|lost",
}
BS_CLAMP = {
    "bs_backward": "first",      # only the first extent (4 KiB, data)
    "bs_past_end": "true",
    "bs_past_range": "data",
}


def nbdinfo_map(uri):
    return subprocess.run(["nbdinfo", "--json", "--map", uri],
                          capture_output=True, text=True)


@pytest.mark.parametrize("hostile,case", cases(BS_FAIL, STRUCTURED),
                         indirect=["hostile"])
def test_block_status_violation_fails(hostile, case):
    requires("nbdinfo")
    d = hostile["blockd"]
    hostile["srv"].misbehave = {case}
    r = nbdinfo_map(hostile["uri"])
    assert r.returncode != 0, r.stdout
    wait_log(d, "nbd '[^']*'.*(" + BS_FAIL[case] + ")")
    hostile["srv"].misbehave = set()
    recovers(hostile)


@pytest.mark.parametrize("hostile,case", cases(BS_CLAMP, STRUCTURED),
                         indirect=["hostile"])
def test_block_status_extents_clamped(hostile, case):
    requires("nbdinfo")
    srv = hostile["srv"]
    srv.misbehave = {case}
    r = nbdinfo_map(hostile["uri"])
    assert r.returncode == 0, r.stderr
    got = merge(json.loads(r.stdout))
    if BS_CLAMP[case] == "true":
        assert got == merged_true(srv.extents(0, SIZE))
    else:
        # every extent the server gave first says "data" (status 0)
        assert got == [(0, SIZE, 0)]


def test_stalled_server_does_not_stall_blockd(hostile):
    """A server that stops answering: the read waits (NBD has no request
    timeout), QMP and the other exports do not; when the server drops the
    connection, the read completes after the reconnect (reconnect-delay)
    with the right data."""
    d = hostile["blockd"]
    srv = hostile["srv"]
    nbd_node(d, "h1", srv.path, reconnect_delay=30)
    uri = export(d, "h1", "h1")
    srv.misbehave = {"stall"}
    seen = len(srv.requests)
    result = {}

    def reader():
        try:
            h = connect(uri)
            result["data"] = h.pread(LEN, OFF)
        except nbd.Error as e:
            result["error"] = e
    t = threading.Thread(target=reader, daemon=True)
    t.start()
    srv.wait(lambda: any(r[0] == 0 for r in srv.requests[seen:]),
             what="stalled read")
    d.cmd("query-named-block-nodes")
    h = connect(hostile["good"])
    assert h.pread(4, 0) == b"GGGG"
    assert "data" not in result and "error" not in result
    srv.misbehave = set()
    srv.drop()
    t.join(60)
    assert not t.is_alive(), "read still stuck after the reconnect"
    assert result.get("data") == bytes(srv.data[OFF:OFF + LEN]), result


def test_removal_with_a_stalled_request(hostile):
    """block-export-del mode=hard with a read stalled upstream: the
    client is cut off at once and QMP answers; the export was the
    node's last user, so the driver fails the stalled request and drops
    its connection (NBD has no request timeout): the export goes and
    blockdev-del works while the server still stalls."""
    d = hostile["blockd"]
    srv = hostile["srv"]
    srv.misbehave = {"stall"}
    seen = len(srv.requests)
    result = {}

    def reader():
        try:
            result["data"] = connect(hostile["uri"]).pread(LEN, OFF)
        except nbd.Error as e:
            result["error"] = e
    t = threading.Thread(target=reader, daemon=True)
    t.start()
    srv.wait(lambda: any(r[0] == 0 for r in srv.requests[seen:]),
             what="stalled read")
    d.cmd("block-export-del", id="e-h", mode="hard")
    t.join(60)
    assert "error" in result, result          # the client was cut off
    ev = d.conn.get_event("BLOCK_EXPORT_DELETED", timeout=60)
    assert ev["data"]["id"] == "e-h"
    d.cmd("blockdev-del", node_name="h0")
    assert "h0" not in [n["node-name"]
                        for n in d.cmd("query-named-block-nodes")]
    srv.misbehave = set()


def test_size_change_on_reconnect_is_refused(hostile):
    d = hostile["blockd"]
    srv = hostile["srv"]
    srv.size = SIZE + MIB
    srv.drop()
    wait_log(d, r"nbd '[^']*'.*(export changed|size)")
    h = connect(hostile["uri"])
    assert h.get_size() == SIZE       # the node keeps its size
    with pytest.raises(nbd.Error):
        h.pread(LEN, OFF)
    srv.size = SIZE
    recovers(hostile)


def test_flag_change_on_reconnect_is_refused(hostile):
    d = hostile["blockd"]
    srv = hostile["srv"]
    before = d.logtext().count("export changed")
    srv.flags |= FLAG_READ_ONLY
    srv.drop()
    deadline = time.monotonic() + 30
    while d.logtext().count("export changed") == before:
        assert time.monotonic() < deadline, d.logtext()[-3000:]
        time.sleep(0.05)
    h = connect(hostile["uri"])
    with pytest.raises(nbd.Error):
        h.pwrite(b"x" * 512, 0)
    srv.flags &= ~FLAG_READ_ONLY
    recovers(hostile)




def multi_conn_node(blockd):
    srv = FakeNbd(os.path.join(blockd.sockdir, "fake.sock"),
                  data=pattern(SIZE), flags=DEFAULT_FLAGS |
                  FLAG_CAN_MULTI_CONN)
    nbd_node(blockd, "m0", srv.path)
    uri = export(blockd, "m0", "m")
    srv.wait(lambda: srv.handshakes >= 2, what="several connections")
    return srv, uri


def test_multi_conn_violation_resent_on_another_connection(blockd):
    """With multi-conn, a violation kills one connection; the read is
    sent again on another one and succeeds with the right data."""
    requires_nbd_driver(blockd)
    srv, uri = multi_conn_node(blockd)
    try:
        srv.misbehave = {"unknown_cookie"}
        srv.misbehave_once = True
        h = connect(uri)
        assert h.pread(LEN, OFF) == bytes(srv.data[OFF:OFF + LEN])
        wait_log(blockd, r"unknown cookie")
        recovers(dict(srv=srv, uri=uri, blockd=blockd))
    finally:
        srv.stop()


# Handshake misbehaviours: blockdev-add fails with an error that says
# what the server did (or, for a context never asked for, the node does
# not use it), blockd stays up, and the same server behaving works.
HANDSHAKE = {
    "go_no_export": r"(?i)size|export",
    "go_huge_size": r"(?i)size|large|big",
    "go_bad_block_size": r"(?i)block size",
    "reply_wrong_opt": r"(?i)option|reply",
    "reply_huge": r"(?i)length|long|big|large|size",
}


@pytest.mark.parametrize("case", sorted(HANDSHAKE))
def test_handshake_misbehaviour_fails_blockdev_add(blockd, case):
    requires_nbd_driver(blockd)
    srv = FakeNbd(os.path.join(blockd.sockdir, "fake.sock"),
                  data=pattern(SIZE), misbehave={case})
    try:
        q = Qmp(blockd.qmp_path, timeout=300)
        with pytest.raises(QmpError) as e:
            q.cmd("blockdev-add", {"driver": "nbd", "node-name": "x",
                                   "server": {"type": "unix",
                                              "path": srv.path}})
        assert re.search(HANDSHAKE[case], e.value.desc), e.value.desc
        q.close()
        srv.misbehave = set()
        nbd_node(blockd, "x", srv.path)
        h = connect(export(blockd, "x", "x"))
        assert h.get_size() == SIZE
        assert h.pread(LEN, OFF) == bytes(srv.data[OFF:OFF + LEN])
    finally:
        srv.stop()


def test_silent_server_times_out_blockdev_add(blockd):
    """A server that accepts but never greets: blockdev-add fails after
    the handshake's step timeout, it does not wait forever."""
    requires_nbd_driver(blockd)
    srv = FakeNbd(os.path.join(blockd.sockdir, "fake.sock"),
                  misbehave={"stall_greeting"})
    q = Qmp(blockd.qmp_path, timeout=120)
    try:
        with pytest.raises(QmpError) as e:
            q.cmd("blockdev-add", {"driver": "nbd", "node-name": "x",
                                   "server": {"type": "unix",
                                              "path": srv.path}})
        assert re.search(r"(?i)time", e.value.desc), e.value.desc
        assert srv.connections >= 1
    finally:
        srv.stop()
        q.close()


def test_endless_info_replies_end_the_handshake(blockd):
    """OPT_GO answered by NBD_REP_INFO after NBD_REP_INFO, forever (each
    one promptly, so no per-step timeout fires): blockdev-add must give
    up with an error, as list mode does on an endless OPT_LIST, and QMP
    stays responsive meanwhile."""
    requires_nbd_driver(blockd)
    srv = FakeNbd(os.path.join(blockd.sockdir, "fake.sock"),
                  misbehave={"go_endless_info"})
    q = Qmp(blockd.qmp_path, timeout=60)
    try:
        q.send_raw(json.dumps({"execute": "blockdev-add", "id": 1,
                               "arguments": {"driver": "nbd",
                                             "node-name": "x",
                                             "server": {"type": "unix",
                                                        "path": srv.path}}}))
        srv.wait(lambda: srv.options.count(7) > 0, what="OPT_GO")
        blockd.cmd("query-version")
        try:
            reply = q.recv_reply()
        except OSError:
            reply = None
        assert reply is not None, "blockdev-add still running after 60 s " \
            "of NBD_REP_INFO replies"
        assert "error" in reply, reply
    finally:
        srv.stop()
        q.close()


def test_unasked_meta_context_is_not_used(blockd):
    """SET_META_CONTEXT answered with a context the client never asked
    for (which says "hole, zero" everywhere): the node must not report
    that as base:allocation."""
    requires("nbdinfo")
    requires_nbd_driver(blockd)
    srv = FakeNbd(os.path.join(blockd.sockdir, "fake.sock"),
                  data=pattern(SIZE), misbehave={"meta_unasked"})
    try:
        try:
            nbd_node(blockd, "x", srv.path)
        except QmpError as e:         # refusing the server is fine too
            assert "context" in e.desc, e.desc
            return
        r = nbdinfo_map(export(blockd, "x", "x"))
        assert r.returncode == 0, r.stderr
        assert merge(json.loads(r.stdout)) == [(0, SIZE, 0)]
    finally:
        srv.stop()


@pytest.mark.parametrize("hostile", ["structured"], indirect=True)
def test_persistent_violation_with_reconnect_delay_fails(hostile):
    """With reconnect-delay, a request whose every reply breaks the
    protocol must still end (EIO) instead of being resent forever: each
    reconnect succeeds, and the server misbehaves again.  Issue 10:
    "requests wait up to reconnect-delay seconds ... then fail with
    EIO"; 60 s is 12 times the delay."""
    d = hostile["blockd"]
    srv = hostile["srv"]
    nbd_node(d, "h2", srv.path, reconnect_delay=5)
    uri = export(d, "h2", "h2")
    srv.misbehave = {"unknown_cookie"}
    result = {}

    def reader():
        try:
            result["data"] = connect(uri).pread(LEN, OFF)
        except nbd.Error as e:
            result["error"] = e
    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(60)
    stuck = t.is_alive()
    srv.misbehave = set()
    srv.drop()
    t.join(60)
    assert not stuck, "the read was still being retried after 60 s " \
        "(%d requests reached the server)" % len(srv.requests)
    assert "error" in result, result


def test_multi_conn_persistent_violation_fails(blockd):
    """With multi-conn and no reconnect-delay, a server that breaks the
    protocol on every connection must fail the read (EIO), not bounce it
    from connection to connection while each one is reconnected."""
    requires_nbd_driver(blockd)
    srv, uri = multi_conn_node(blockd)
    result = {}

    def reader():
        try:
            result["data"] = connect(uri).pread(LEN, OFF)
        except nbd.Error as e:
            result["error"] = e
    try:
        srv.misbehave = {"unknown_cookie"}
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        t.join(60)
        stuck = t.is_alive()
        srv.misbehave = set()
        t.join(60)
        assert not stuck, "the read was still being resent after 60 s " \
            "(%d requests reached the server)" % len(srv.requests)
        assert "error" in result, result
    finally:
        srv.stop()
