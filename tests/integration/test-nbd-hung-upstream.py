"""Isolation with an `nbd` node whose server hangs: the upstream server
(nbdkit) of one export is stopped with SIGSTOP after the handshake, so
its socket stays open and nothing answers.  Requests to that export
wait in the node's client engine (its own I/O thread, not the worker
pool); ten other exports keep serving and QMP answers.  Then:

* block-export-del mode=hard drops the hung export's clients at once
  (their requests fail) and, the export being the node's last user,
  the nbd driver fails the requests it has upstream with EIO and drops
  its connections (the buffers are free then): the export goes and
  blockdev-del works while the upstream is still stopped;
* with another user on the node (a second export), the driver is left
  alone: the deleted export goes when the upstream answers;
* SIGTERM with requests hung upstream exits cleanly;
* the upstream dying (SIGKILL while stopped) fails the waiting
  requests with reconnect-delay 0, and after reconnect-delay seconds
  otherwise (the node reconnects to nothing).

The nbd driver, like QEMU's, has no per-request timeout: a server that
keeps its connection open and never answers holds its requests until it
answers, the connection dies or the node's last user goes.

Throughput of the others is a loose guard, bytes per CPU second of
blockd (the machine is shared: no wall-clock rate is compared)."""
import errno
import os
import signal
import time

import nbd
import pytest

from conftest import requires
from throughput import MIB, add_others, measure, read_for
from upstream import Upstream, export, nbd_node, requires_nbd_driver

N_OTHERS = 10
PHASE = 2.0


def wait_until(cond, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


def wait_export_gone(q, eid, what):
    """Wait until query-block-exports (on QMP connection or blockd q) no
    longer lists export eid."""
    wait_until(lambda: all(e["id"] != eid
                           for e in q.cmd("query-block-exports")), what)


@pytest.fixture
def hung(blockd, tmp_path):
    """blockd with nbd node 'hung' over nbdkit (memory), exported as
    'hung', and ten null-co exports with a client each."""
    requires("nbdkit")
    requires_nbd_driver(blockd)
    up = Upstream(["nbdkit", "memory", "64M"], str(tmp_path / "up.sock"))
    try:
        yield attach_all(blockd, up)
    finally:
        if up.proc is not None and up.proc.poll() is None:
            up.proc.send_signal(signal.SIGCONT)
        up.stop()


def attach_all(blockd, up, **nbd_opts):
    nbd_node(blockd, "hung", up.sock, **nbd_opts)
    uri = export(blockd, "hung", "hung")
    sock = uri.split("socket=")[1]
    others = add_others(blockd, sock, N_OTHERS)
    return dict(blockd=blockd, up=up, uri=uri, others=others)


def stopped(pid):
    """Whether every thread of process pid is stopped (SIGSTOP takes
    effect some time after kill() returns)."""
    for t in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/stat" % (pid, t)) as f:
            if f.read().rsplit(")", 1)[1].split()[0] not in "tT":
                return False
    return True


class Pending:
    """Requests sent to the hung export: (handle, cookie) and what
    became of each (None: waiting, True: done, an nbd.Error: failed or
    its connection dropped)."""

    def __init__(self):
        self.reqs = []
        self.outcome = {}

    def add(self, h, cookie):
        self.reqs.append((h, cookie))
        self.outcome[(id(h), cookie)] = None

    def ended(self):
        """Read what each handle has received; whether every request
        has ended."""
        for h in {id(h): h for h, _ in self.reqs}.values():
            try:
                while h.aio_in_flight() > 0 and h.poll(10) > 0:
                    pass
            except nbd.Error:
                pass                    # the connection is gone
        for h, cookie in self.reqs:
            key = (id(h), cookie)
            if self.outcome[key] is not None:
                continue
            try:
                if h.aio_command_completed(cookie):
                    self.outcome[key] = True
            except nbd.Error as e:
                self.outcome[key] = e
        return all(v is not None for v in self.outcome.values())

    def failed(self):
        return [v for v in self.outcome.values() if isinstance(v, nbd.Error)]


def hang(c, nclients=2, nreq=16):
    """SIGSTOP the upstream, then send reads to the hung export (none
    can be answered): a Pending."""
    h0 = nbd.NBD()
    h0.connect_uri(c["uri"])
    assert h0.pread(4096, 0) == bytes(4096)      # it works before
    c["up"].proc.send_signal(signal.SIGSTOP)
    wait_until(lambda: stopped(c["up"].proc.pid), "upstream stopped")
    handles = [h0]
    for _ in range(nclients - 1):
        h = nbd.NBD()
        h.connect_uri(c["uri"])
        handles.append(h)
    p = Pending()
    for h in handles:
        for j in range(nreq):
            p.add(h, h.aio_pread(nbd.Buffer(4096), 4096 * j))
    assert not p.ended()
    return p


def test_hung_upstream_isolated_then_hard_delete(hung):
    d = hung["blockd"]
    before, before_cpu = measure(d.pid, hung["others"], PHASE)
    assert before > 0
    pending = hang(hung)

    during, during_cpu = measure(d.pid, hung["others"], PHASE)
    for cmd in ("query-named-block-nodes", "query-block-exports",
                "query-blockstats", "query-nbd-server"):
        d.cmd(cmd)
    per_cpu = (during / during_cpu) / (before / before_cpu)
    print("hung upstream: the others read %.0f -> %.0f MiB per blockd "
          "CPU second (ratio %.2f), %.0f -> %.0f MiB/s wall"
          % (before / before_cpu / MIB, during / during_cpu / MIB, per_cpu,
             before / PHASE / MIB, during / PHASE / MIB))
    assert during > 0, "the other exports were starved"
    assert per_cpu >= 0.5, per_cpu
    time.sleep(1)
    assert not pending.ended(), "the stopped server answered?"

    # The operator gives up on the export: its clients are dropped at
    # once, their requests fail (libnbd reports an error for each read
    # in flight).
    q = d.qmp()
    q.sock.settimeout(60)
    q.cmd("block-export-del", id="e-hung", mode="hard")
    wait_until(pending.ended, "hung clients dropped")
    assert len(pending.failed()) == len(pending.reqs)
    # The export was the node's last user: the nbd driver fails what it
    # has upstream and drops its connection, so the export goes while
    # the upstream is still stopped, and the node can be deleted.
    wait_export_gone(q, "e-hung", "export gone with the upstream stopped")
    assert read_for(hung["others"], 0.5) > 0
    q.cmd("blockdev-del", node_name="hung")
    assert all(n["node-name"] != "hung"
               for n in q.cmd("query-named-block-nodes"))
    assert stopped(hung["up"].proc.pid), "the upstream resumed?"
    q.close()
    assert read_for(hung["others"], 0.5) > 0
    # Deleting a hung node left nothing behind: the daemon still
    # serves, and exits 0 on SIGTERM (the fixture checks).


def test_hung_under_raw_hard_delete(hung):
    """A raw node over the hung nbd node, exported: the hard delete
    reaches the nbd driver through the raw node (its only parent)."""
    d = hung["blockd"]
    # nothing else may use the nbd node: its own export goes first
    d.cmd("block-export-del", id="e-hung")
    wait_export_gone(d, "e-hung", "idle export gone")
    d.cmd("blockdev-add", {"driver": "raw", "node-name": "r",
                           "file": "hung"})
    uri = export(d, "r", "r")
    p = hang(dict(hung, uri=uri), nclients=1, nreq=8)
    d.cmd("block-export-del", id="e-r", mode="hard")
    wait_until(p.ended, "hung clients dropped")
    assert len(p.failed()) == len(p.reqs)
    wait_export_gone(d, "e-r", "export gone with the upstream stopped")
    d.cmd("blockdev-del", node_name="r")
    d.cmd("blockdev-del", node_name="hung")
    names = [n["node-name"] for n in d.cmd("query-named-block-nodes")]
    assert "r" not in names and "hung" not in names, names
    assert read_for(hung["others"], 0.5) > 0


def test_hung_shared_node_not_aborted(hung):
    """Two exports of the hung node: a hard delete of one must not fail
    the other's requests, so it waits for the upstream as before."""
    d = hung["blockd"]
    d.cmd("block-export-add", {"type": "nbd", "id": "e-hung2",
                               "node-name": "hung", "name": "hung2"})
    uri2 = hung["uri"].replace("///hung?", "///hung2?")
    p = hang(hung, nclients=1, nreq=4)
    h2 = nbd.NBD()
    h2.connect_uri(uri2)
    p2 = Pending()
    p2.add(h2, h2.aio_pread(nbd.Buffer(4096), 0))
    d.cmd("block-export-del", id="e-hung", mode="hard")
    wait_until(p.ended, "hung clients dropped")
    time.sleep(1)
    exports = {e["id"]: e for e in d.cmd("query-block-exports")}
    assert exports["e-hung"]["shutting-down"], exports
    assert not p2.ended(), "the other export's request was failed"
    hung["up"].proc.send_signal(signal.SIGCONT)
    wait_until(p2.ended, "the other export's request answered")
    assert p2.failed() == [], p2.outcome
    wait_export_gone(d, "e-hung", "export gone")


def test_hung_upstream_sigterm(blockd_factory, tmp_path):
    """SIGTERM while requests hang upstream: blockd fails them, drops
    the clients and exits 0 (sanitizer builds: no report)."""
    requires("nbdkit")
    d = blockd_factory()
    requires_nbd_driver(d)
    up = Upstream(["nbdkit", "memory", "64M"], str(tmp_path / "up.sock"))
    try:
        c = attach_all(d, up)
        p = hang(c, nclients=2, nreq=8)
        assert read_for(c["others"], 0.5) > 0
        rc = d.stop()
        assert rc == 0, d.logtext()
        wait_until(p.ended, "clients dropped")
        assert len(p.failed()) == len(p.reqs)
        assert stopped(up.proc.pid), "the upstream resumed?"
    finally:
        if up.proc is not None and up.proc.poll() is None:
            up.proc.send_signal(signal.SIGCONT)
        up.stop()


@pytest.mark.parametrize("delay", [0, 2])
def test_hung_upstream_dies_requests_fail(blockd, tmp_path, delay):
    requires("nbdkit")
    requires_nbd_driver(blockd)
    up = Upstream(["nbdkit", "memory", "64M"], str(tmp_path / "up.sock"))
    try:
        c = attach_all(blockd, up, reconnect_delay=delay)
        pending = hang(c, nclients=1, nreq=4)
        up.stop()                   # SIGKILL: the connection closes
        blockd.conn.get_event("NBD_CLIENT_DISCONNECTED", timeout=60)
        # reconnect-delay 0: failed at once; 2: after 2 s of retries
        wait_until(pending.ended, "requests ended", timeout=60 + delay)
        errs = pending.failed()
        assert len(errs) == len(pending.reqs), pending.outcome
        # python3-libnbd gives the errno's name
        assert all(e.errno in (errno.EIO, "EIO") for e in errs), \
            [(e.string, e.errno) for e in errs]
        # QMP answers, the node is still there, and deleting it works
        blockd.cmd("block-export-del", id="e-hung", mode="hard")
        wait_until(lambda: not blockd.cmd("query-block-exports") or
                   all(e["id"] != "e-hung"
                       for e in blockd.cmd("query-block-exports")),
                   "export gone")
        blockd.cmd("blockdev-del", node_name="hung")
    finally:
        up.stop()
