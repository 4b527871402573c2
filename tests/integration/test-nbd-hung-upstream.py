"""Isolation with an `nbd` node whose server hangs: the upstream server
(nbdkit) of one export is stopped with SIGSTOP after the handshake, so
its socket stays open and nothing answers.  Requests to that export
wait in the node's client engine (its own I/O thread, not the worker
pool); ten other exports keep serving and QMP answers.  Then:

* block-export-del mode=hard drops the hung export's clients at once
  (their requests fail); the export stays shutting-down, and the node
  in use, until the driver completes the requests upstream never
  answered (their buffers are the node's meanwhile): when the upstream
  resumes (SIGCONT) the export goes and blockdev-del works;
* the upstream dying (SIGKILL while stopped) fails the waiting
  requests with reconnect-delay 0, and after reconnect-delay seconds
  otherwise (the node reconnects to nothing).

The nbd driver, like QEMU's, has no per-request timeout: a server that
keeps its connection open and never answers holds its requests (and
a deleted export's teardown) until it answers or the connection dies.

Throughput of the others is a loose guard, bytes per CPU second of
blockd (the machine is shared: no wall-clock rate is compared)."""
import errno
import os
import signal
import threading
import time

import nbd
import pytest

from conftest import QmpError, requires
from upstream import Upstream, export, nbd_node, requires_nbd_driver

MIB = 1 << 20
READ = 256 * 1024       # above BLK_INLINE_MAX: the worker pool serves it
N_OTHERS = 10
PHASE = 2.0


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_for(handles, seconds):
    """Each handle reads in its own thread, one request in flight, for
    `seconds`; total bytes.  A request not done 30 s after the deadline
    ends that thread's count (starved)."""
    total = [0] * len(handles)
    deadline = time.monotonic() + seconds

    def run(i, h):
        buf = nbd.Buffer(READ)
        off = 0
        while time.monotonic() < deadline:
            c = h.aio_pread(buf, off)
            while not h.aio_command_completed(c):
                if time.monotonic() > deadline + 30:
                    return
                h.poll(100)
            total[i] += READ
            off = (off + READ) % (64 * MIB)

    threads = [threading.Thread(target=run, args=(i, h))
               for i, h in enumerate(handles)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(total)


def measure(pid, handles, rounds=2):
    """(bytes, CPU seconds) of the best of a few rounds."""
    best = None
    for _ in range(rounds):
        c0 = cpu_seconds(pid)
        n = read_for(handles, PHASE)
        r = (n, max(cpu_seconds(pid) - c0, 0.01))
        if best is None or r[0] / r[1] > best[0] / best[1]:
            best = r
    return best


def wait_until(cond, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)


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
    others = []
    for i in range(N_OTHERS):
        blockd.cmd("blockdev-add", {"driver": "null-co",
                                    "node-name": "n%d" % i,
                                    "size": 64 * MIB, "read-zeroes": True})
        blockd.cmd("block-export-add", {"type": "nbd", "id": "e%d" % i,
                                        "node-name": "n%d" % i,
                                        "name": "n%d" % i})
        h = nbd.NBD()
        h.connect_uri("nbd+unix:///n%d?socket=%s" % (i, sock))
        others.append(h)
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
    before, before_cpu = measure(d.pid, hung["others"])
    assert before > 0
    pending = hang(hung)

    during, during_cpu = measure(d.pid, hung["others"])
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
    # once, their requests fail.
    q = d.qmp()
    q.sock.settimeout(60)
    q.cmd("block-export-del", id="e-hung", mode="hard")
    wait_until(pending.ended, "hung clients dropped")
    assert len(pending.failed()) == len(pending.reqs)
    # The export stays (shutting down, hidden from new clients) while
    # its requests are unanswered upstream: their buffers are the
    # node's until the nbd driver completes them, so neither it nor the
    # node can go yet (blockdev-del says the node is in use).
    exports = {e["id"]: e for e in q.cmd("query-block-exports")}
    assert exports["e-hung"]["shutting-down"], exports
    with pytest.raises(QmpError):
        q.cmd("blockdev-del", node_name="hung")
    assert read_for(hung["others"], 0.5) > 0
    # The upstream comes back: the requests complete (to nobody), the
    # export goes, and the node can be deleted.
    hung["up"].proc.send_signal(signal.SIGCONT)
    wait_until(lambda: all(e["id"] != "e-hung"
                           for e in q.cmd("query-block-exports")),
               "export gone")
    q.cmd("blockdev-del", node_name="hung")
    assert all(n["node-name"] != "hung"
               for n in q.cmd("query-named-block-nodes"))
    q.close()
    assert read_for(hung["others"], 0.5) > 0


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
