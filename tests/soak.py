#!/usr/bin/python3
"""soak.py - a bounded soak of blockd: hundreds of clients over dozens of
exports doing verified random I/O, while QMP adds and deletes exports
and clients disconnect abruptly; some clients speak TLS.

    tests/soak.py [--seconds N | --minutes N] [--clients N] [--exports N]
                  [--blockd PATH]

Two daemons run side by side (the NBD server is either all-TLS or
plain): "plain" serves most exports, "tls" (tls-creds-psk) the rest.
Exports cycle through raw files, qcow2 files and qcow2 chains (a qcow2
overlay on a qcow2 base filled with a pattern).  Each client slot owns
one 256 KiB region of one export and keeps a model of it; it connects,
runs bursts of async writes (some FUA), write-zeroes, flushes and reads
checked against the model, then leaves: cleanly (NBD_CMD_DISC) or
abruptly (the socket closed with reads and, in a separate scratch area
never verified, writes still in flight), or it is cut off in the
handshake.  Meanwhile a QMP thread on each daemon adds a node and an
export, checks a client through it, and deletes both (mode=hard, with
the client connected).

At the end: every region is read back and compared with its model
(every acknowledged write), the exports and nodes are deleted, the
daemons' open descriptors (/proc/PID/fd) and RSS are back near what
they were after set-up, qemu-img check is clean on every qcow2 file,
the persistent bitmaps are in the images, and each daemon exits 0 on
quit with nothing in its log from a sanitizer.  Exit 0 when all of it held.
"""
import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import nbd

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "integration"))
from conftest import Qmp, wait_socket  # noqa: E402

REGION = 256 * 1024          # one client slot's verified area
SCRATCH = 64 * 1024          # after it: writes abandoned in flight
SLOT = REGION + SCRATCH
BASE_BYTE = 0x42             # what a chain's base holds


class Failure(Exception):
    pass


class Daemon:
    def __init__(self, blockd, tmp, name, tls):
        self.name = name
        self.dir = os.path.join(tmp, name)
        os.makedirs(self.dir)
        self.qmp_path = os.path.join(self.dir, "qmp.sock")
        self.nbd_path = os.path.join(self.dir, "nbd.sock")
        self.log_path = os.path.join(self.dir, "blockd.log")
        self.tls = tls
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [blockd, "--chardev", "socket,id=m0,path=%s,server=on,wait=off"
             % self.qmp_path, "--monitor", "chardev=m0"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log)
        wait_socket(self.qmp_path, self.proc, timeout=60)
        self.q = Qmp(self.qmp_path, timeout=120)
        self.qlock = threading.Lock()
        self.exports = []
        server = {"addr": {"type": "unix", "data": {"path": self.nbd_path}},
                  "max-connections": 0}
        if tls:
            pskdir = os.path.join(self.dir, "psk")
            os.makedirs(pskdir)
            self.psk_file = os.path.join(self.dir, "client.psk")
            for p in (os.path.join(pskdir, "keys.psk"), self.psk_file):
                with open(p, "w") as f:
                    f.write("soak:" + "a5" * 32 + "\n")
            self.cmd("object-add", {"qom-type": "tls-creds-psk",
                                    "id": "tls0", "endpoint": "server",
                                    "dir": pskdir})
            server["tls-creds"] = "tls0"
        self.cmd("nbd-server-start", server)

    def cmd(self, name, args=None):
        with self.qlock:
            return self.q.cmd(name, args)

    def uri(self, export):
        scheme = "nbds+unix" if self.tls else "nbd+unix"
        return "%s:///%s?socket=%s" % (scheme, export, self.nbd_path)

    def client(self):
        h = nbd.NBD()
        if self.tls:
            h.set_tls(nbd.TLS_REQUIRE)
            h.set_tls_psk_file(self.psk_file)
            h.set_tls_username("soak")
        return h

    def usage(self):
        """(open descriptors, RSS in KiB)."""
        fds = len(os.listdir("/proc/%d/fd" % self.proc.pid))
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
        return fds, rss


class Export:
    def __init__(self, d, idx, kind, slots):
        self.d = d
        self.name = "%s-%d" % (kind, idx)
        self.kind = kind
        self.size = SLOT * slots
        self.files = []
        self.keep_bitmap = False     # a persistent bitmap "keep"
        path = os.path.join(d.dir, self.name)
        if kind == "raw":
            with open(path + ".raw", "wb") as f:
                f.truncate(self.size)
            node = {"driver": "raw", "node-name": self.name,
                    "file": {"driver": "file", "filename": path + ".raw"}}
            self.initial = 0
        else:
            img = path + ".qcow2"
            opts = "cluster_size=%d" % random.choice([4096, 65536])
            if kind == "chain":
                base = path + "-base.qcow2"
                qimg("create", "-f", "qcow2", base, str(self.size))
                subprocess.run(["qemu-io", "-f", "qcow2", "-c",
                                "write -P %d 0 %d" % (BASE_BYTE, self.size),
                                base], check=True,
                               stdout=subprocess.DEVNULL)
                opts += ",backing_file=%s,backing_fmt=qcow2" % base
                self.files.append(base)
                self.initial = BASE_BYTE
            else:
                self.initial = 0
            qimg("create", "-f", "qcow2", "-o", opts, img, str(self.size))
            self.files.append(img)
            node = {"driver": "qcow2", "node-name": self.name,
                    "file": {"driver": "file", "filename": img}}
        d.cmd("blockdev-add", node)
        d.cmd("block-export-add", {"type": "nbd", "id": self.name,
                                   "node-name": self.name,
                                   "writable": True})


def qimg(*args):
    subprocess.run(["qemu-img"] + list(args) + ["-q"] if args[0] == "create"
                   else ["qemu-img"] + list(args), check=True,
                   stdout=subprocess.DEVNULL)


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.c = {"connections": 0, "abrupt": 0, "handshake-cut": 0,
                  "tls-connections": 0, "writes": 0, "bytes-written": 0,
                  "reads-verified": 0, "bytes-verified": 0, "flushes": 0,
                  "export-cycles": 0, "bitmap-cycles": 0}

    def add(self, **kw):
        with self.lock:
            for k, v in kw.items():
                self.c[k.replace("_", "-")] += v


def wait_all(h, cookies):
    while cookies:
        h.poll(-1)
        for c in list(cookies):
            if h.aio_command_completed(c):
                cookies.remove(c)


def slot_worker(exp, region, seed, stop, stats, errors):
    rnd = random.Random(seed)
    base = region * SLOT
    model = bytearray([exp.initial]) * REGION
    d = exp.d
    try:
        while not stop.is_set():
            if rnd.random() < 0.05:
                # Cut off in the handshake: connect, maybe a few bytes.
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(d.nbd_path)
                s.recv(rnd.choice([0, 8, 18]) or 1)
                if rnd.random() < 0.5:
                    s.sendall(b"\x00\x00\x00\x03IHAVEOPT")
                s.close()
                stats.add(handshake_cut=1)
                continue
            h = d.client()
            h.add_meta_context("base:allocation")
            h.connect_uri(d.uri(exp.name))
            stats.add(connections=1, tls_connections=int(d.tls))
            for _ in range(rnd.randrange(1, 12)):
                # A burst of writes in flight together: disjoint 16 KiB
                # slices (their order is not defined).
                cookies = []
                for sl in rnd.sample(range(16), rnd.randrange(1, 6)):
                    off = sl * 16384 + rnd.randrange(0, 16384)
                    n = rnd.randrange(1, (sl + 1) * 16384 - off + 1)
                    data = rnd.randbytes(n)
                    model[off:off + n] = data
                    cookies.append(h.aio_pwrite(
                        nbd.Buffer.from_bytearray(bytearray(data)),
                        base + off,
                        flags=nbd.CMD_FLAG_FUA if rnd.random() < 0.2
                        else 0))
                    stats.add(writes=1, bytes_written=n)
                wait_all(h, cookies)
                r = rnd.random()
                if r < 0.1:
                    off = rnd.randrange(0, REGION - 8192)
                    h.zero(8192, base + off)
                    model[off:off + 8192] = bytes(8192)
                elif r < 0.2:
                    h.flush()
                    stats.add(flushes=1)
                off = rnd.randrange(0, REGION)
                n = rnd.randrange(1, REGION - off + 1)
                got = h.pread(n, base + off)
                if got != model[off:off + n]:
                    raise Failure("%s region %d: wrong data at %d+%d"
                                  % (exp.name, region, off, n))
                stats.add(reads_verified=1, bytes_verified=n)
            if rnd.random() < 0.25:
                # Abrupt: leave with requests in flight, no NBD_CMD_DISC.
                for _ in range(rnd.randrange(1, 4)):
                    h.aio_pread(nbd.Buffer(65536),
                                base + rnd.randrange(0, REGION - 65536))
                    h.aio_pwrite(nbd.Buffer.from_bytearray(
                        bytearray(rnd.randbytes(4096))),
                        base + REGION + rnd.randrange(0, SCRATCH - 4096))
                del h            # closes the socket, nothing more
                stats.add(abrupt=1)
            else:
                h.shutdown()
                del h
        # Final check of the whole region.
        h = d.client()
        h.connect_uri(d.uri(exp.name))
        got = h.pread(REGION, base)
        h.shutdown()
        if got != model:
            bad = next(i for i in range(REGION) if got[i] != model[i])
            raise Failure("%s region %d: final check: wrong byte at %d"
                          % (exp.name, region, bad))
        stats.add(bytes_verified=REGION)
    except Exception as e:
        errors.append("%s region %d: %r" % (exp.name, region, e))
        stop.set()


def churn_worker(d, tmp, stop, stats, errors):
    """Add a node and an export, use it, delete both (hard), again."""
    i = 0
    img = os.path.join(d.dir, "churn.raw")
    with open(img, "wb") as f:
        f.truncate(1 << 20)
    try:
        while not stop.is_set():
            name = "churn%d" % i
            i += 1
            d.cmd("blockdev-add", {"driver": "raw", "node-name": name,
                                   "file": {"driver": "file",
                                            "filename": img}})
            d.cmd("block-export-add", {"type": "nbd", "id": name,
                                       "node-name": name, "writable": True})
            h = d.client()
            h.connect_uri(d.uri(name))
            h.pwrite(b"c" * 4096, 0)
            if h.pread(4096, 0) != b"c" * 4096:
                raise Failure("churn export %s: wrong data" % name)
            d.cmd("block-export-del", {"id": name, "mode": "hard"})
            try:
                h.pread(4096, 0)
            except nbd.Error:
                pass             # disconnected by the hard delete
            del h
            for _ in range(600):
                try:
                    d.cmd("blockdev-del", {"node-name": name})
                    break
                except Exception:
                    time.sleep(0.05)   # the export is still going away
            else:
                raise Failure("node %s still in use" % name)
            stats.add(export_cycles=1)
    except Exception as e:
        errors.append("churn on %s: %r" % (d.name, e))
        stop.set()


def bitmap_worker(d, exports, seed, stop, stats, errors):
    """Add, clear and remove dirty bitmaps on the daemon's nodes (a
    persistent one on qcow2 nodes stays, so deleting the node at the end
    stores it).  Returns at once when blockd has no dirty bitmaps."""
    rnd = random.Random(seed)
    mine = [e for e in exports if e.d is d]
    try:
        persistent = True
        for e in mine:
            if e.kind != "raw" and persistent:
                try:
                    d.cmd("block-dirty-bitmap-add", {"node": e.name,
                                                     "name": "keep",
                                                     "persistent": True})
                    e.keep_bitmap = True
                except Exception as err:
                    # Bitmaps, but none stored in images yet.
                    if not getattr(err, "desc", "").startswith(
                            "Can't store persistent bitmaps"):
                        raise
                    persistent = False
        i = 0
        while not stop.wait(rnd.uniform(0.01, 0.2)):
            e = rnd.choice(mine)
            name = "b%d" % i
            i += 1
            d.cmd("block-dirty-bitmap-add", {"node": e.name, "name": name,
                                             "granularity": 65536})
            if rnd.random() < 0.5:
                d.cmd("block-dirty-bitmap-clear", {"node": e.name,
                                                   "name": name})
            d.cmd("block-dirty-bitmap-remove", {"node": e.name,
                                                "name": name})
            stats.add(bitmap_cycles=1)
    except Exception as e:
        if getattr(e, "cls", None) == "CommandNotFound":
            return
        errors.append("bitmaps on %s: %r" % (d.name, e))
        stop.set()


def settle(d, start, fd_slack, rss_slack_kib, timeout=60):
    """Wait for descriptors and RSS to come back; returns (fds, rss)."""
    deadline = time.monotonic() + timeout
    while True:
        fds, rss = d.usage()
        if fds <= start[0] + fd_slack and rss <= start[1] + rss_slack_kib:
            return fds, rss
        if time.monotonic() > deadline:
            return fds, rss
        time.sleep(0.5)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=180)
    ap.add_argument("--minutes", type=float)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--exports", type=int, default=36)
    ap.add_argument("--tls-exports", type=int, default=6)
    ap.add_argument("--seed", type=int, default=random.randrange(1 << 30))
    ap.add_argument("--blockd", default=os.environ.get(
        "BLOCKD", os.path.join(HERE, "..", "build", "blockd")))
    ap.add_argument("--rss-slack-mb", type=int, default=None)
    a = ap.parse_args()
    seconds = a.minutes * 60 if a.minutes else a.seconds
    random.seed(a.seed)
    with open(a.blockd, "rb") as f:
        sanitized = b"__asan_init" in f.read()
    # RSS: glibc keeps freed memory in its per-thread arenas and the
    # worker pool's threads keep their stacks, so a little growth is
    # not a leak; ASan's quarantine holds freed memory on purpose.
    rss_slack = a.rss_slack_mb if a.rss_slack_mb is not None else \
        (1024 if sanitized else 48)
    tmp = tempfile.mkdtemp(prefix="bd-soak-", dir="/tmp")
    daemons = []
    failures = []
    try:
        plain = Daemon(a.blockd, tmp, "plain", tls=False)
        daemons.append(plain)
        tlsd = Daemon(a.blockd, tmp, "tls", tls=True)
        daemons.append(tlsd)
        kinds = ["raw", "qcow2", "chain"]
        exports = []
        per = max(1, -(-a.clients // a.exports))
        for i in range(a.exports):
            d = tlsd if i < a.tls_exports else plain
            exports.append(Export(d, i, kinds[i % 3], per))
        start = {d.name: d.usage() for d in daemons}
        stats = Stats()
        stop = threading.Event()
        errors = []
        threads = []
        for i in range(a.clients):
            exp = exports[i % len(exports)]
            threads.append(threading.Thread(
                target=slot_worker, args=(exp, i // len(exports),
                                          a.seed + i, stop, stats, errors)))
        for d in daemons:
            threads.append(threading.Thread(
                target=churn_worker, args=(d, tmp, stop, stats, errors)))
            threads.append(threading.Thread(
                target=bitmap_worker, args=(d, exports, a.seed, stop, stats,
                                            errors)))
        for t in threads:
            t.start()
        stop.wait(seconds)
        stop.set()
        for t in threads:
            t.join(600)
        failures += errors
        for d in daemons:
            d.cmd("query-version")      # QMP still answers
            fds, rss = settle(d, start[d.name], 0, rss_slack * 1024)
            s_fds, s_rss = start[d.name]
            print("soak: %s: fds %d -> %d, RSS %d -> %d KiB"
                  % (d.name, s_fds, fds, s_rss, rss))
            if fds > s_fds:
                failures.append("%s: %d descriptors open, %d at start"
                                % (d.name, fds, s_fds))
            if rss > s_rss + rss_slack * 1024:
                failures.append("%s: RSS %d KiB, %d KiB at start (slack "
                                "%d MiB)" % (d.name, rss, s_rss, rss_slack))
        for exp in exports:
            exp.d.cmd("block-export-del", {"id": exp.name})
        for exp in exports:
            for _ in range(600):
                try:
                    exp.d.cmd("blockdev-del", {"node-name": exp.name})
                    break
                except Exception:
                    time.sleep(0.05)
        for exp in exports:
            for f in exp.files:
                r = subprocess.run(["qemu-img", "check", "-q", f],
                                   capture_output=True, text=True)
                if r.returncode != 0:
                    failures.append("qemu-img check %s: %d %s%s" % (
                        f, r.returncode, r.stdout, r.stderr))
            if exp.keep_bitmap:
                info = json.loads(subprocess.run(
                    ["qemu-img", "info", "--output=json", exp.files[-1]],
                    check=True, capture_output=True, text=True).stdout)
                bms = info["format-specific"]["data"].get("bitmaps", [])
                if [(b["name"], "in-use" in b["flags"]) for b in bms] != \
                        [("keep", False)]:
                    failures.append("%s: stored bitmaps %r" % (exp.name,
                                                               bms))
        for d in daemons:
            d.cmd("quit")
        for d in daemons:
            rc = d.proc.wait(120)
            d.log.close()
            log = open(d.log_path, errors="replace").read()
            if rc != 0:
                failures.append("%s: exit status %d" % (d.name, rc))
            for word in ("Sanitizer", "runtime error", "LeakSanitizer"):
                if word in log:
                    failures.append("%s: sanitizer report:\n%s"
                                    % (d.name, log[-4000:]))
                    break
        c = stats.c
        print("soak: %.0f s, seed %d, %d client slots over %d exports "
              "(%d over TLS): %d connections (%d TLS), %d abrupt, %d cut "
              "in handshake, %d writes (%d MiB), %d flushes, %d reads "
              "verified, %d MiB verified, %d export add/delete cycles, "
              "%d bitmap add/remove cycles"
              % (seconds, a.seed, a.clients, a.exports, a.tls_exports,
                 c["connections"], c["tls-connections"], c["abrupt"],
                 c["handshake-cut"], c["writes"],
                 c["bytes-written"] >> 20, c["flushes"],
                 c["reads-verified"], c["bytes-verified"] >> 20,
                 c["export-cycles"], c["bitmap-cycles"]))
    finally:
        for d in daemons:
            if d.proc.poll() is None:
                d.proc.send_signal(signal.SIGKILL)
                d.proc.wait()
        if not failures:
            shutil.rmtree(tmp, ignore_errors=True)
    for f in failures:
        print("soak: FAIL: " + f)
    if failures:
        print("soak: files kept in " + tmp)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
