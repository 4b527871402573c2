"""A one-node Ceph cluster on 127.0.0.1 for the rbd tests.

Everything lives in a temporary directory: its own fsid, cephx keyrings,
monmap and ceph.conf, one monitor and one OSD on a memstore (data in
memory, bounded by "memstore device bytes").  No manager: rbd needs only
the monitor and the OSD.  The daemons run in the foreground under
nice -n 10 and are stopped by PID.

    with CephCluster(tmpdir) as c:       # or c.start() ... c.stop()
        c.run("rbd", "create", "--size", "64M", "rbd/img")
        c.conf          # path of ceph.conf (also in CEPH_CONF of c.env)
        c.mon_port      # the monitor's port on 127.0.0.1 (msgr v1)
        c.admin_key     # client.admin's base64 key

Run as a program it starts a cluster, prints how long that took and the
daemons' RSS, and stops it:  python3 tests/integration/cephcluster.py
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

PROGRAMS = ("ceph-mon", "ceph-osd", "ceph-authtool", "monmaptool", "ceph",
            "rados", "rbd")


def missing_programs():
    """The cluster's programs that are not on PATH (package ceph-mon,
    ceph-osd, ceph-common)."""
    return [p for p in PROGRAMS if shutil.which(p) is None]


def _die_with_parent():
    """preexec_fn: the daemon gets SIGTERM when this process dies, so a
    killed test run leaves no Ceph behind."""
    import ctypes
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG,
                                            signal.SIGTERM)


def _free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class CephError(Exception):
    pass


class CephCluster:
    def __init__(self, workdir, memstore_bytes=768 << 20, timeout=120.0):
        self.dir = os.path.abspath(workdir)
        self.memstore_bytes = memstore_bytes
        self.timeout = timeout
        self.fsid = str(uuid.uuid4())
        self.mon_port = _free_port()
        self.conf = os.path.join(self.dir, "ceph.conf")
        self.keyring = os.path.join(self.dir, "admin.keyring")
        self.env = dict(os.environ, CEPH_CONF=self.conf)
        self.admin_key = None
        self.mon = None
        self.osd = None
        self.osd_id = None
        self.up_seconds = None

    # -- helpers ---------------------------------------------------------

    def run(self, *argv, check=True, timeout=60, input=None):
        """Run a ceph command line against this cluster; returns its
        stdout (str).  CephError with stderr when it fails."""
        p = subprocess.run(argv, env=self.env, capture_output=True,
                           text=True, timeout=timeout, input=input)
        if check and p.returncode != 0:
            raise CephError("%s failed (%d): %s" % (" ".join(argv),
                                                   p.returncode,
                                                   p.stderr.strip()))
        return p.stdout

    def _daemon(self, name, *argv):
        log = open(os.path.join(self.dir, name + ".out"), "ab")
        p = subprocess.Popen(("nice", "-n", "10") + argv, env=self.env,
                             stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL,
                             preexec_fn=_die_with_parent)
        log.close()
        return p

    def _wait(self, what, fn, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        last = None
        while time.monotonic() < deadline:
            for p in (self.mon, self.osd):
                if p is not None and p.poll() is not None:
                    raise CephError("a ceph daemon exited (%d) while "
                                    "waiting for %s; see %s" %
                                    (p.returncode, what, self.dir))
            try:
                if fn():
                    return
            except (CephError, subprocess.TimeoutExpired) as e:
                last = e
            time.sleep(0.25)
        raise CephError("timed out waiting for %s (%s)" % (what, last))

    def _write_conf(self):
        d = self.dir
        with open(self.conf, "w") as f:
            f.write("""[global]
fsid = %(fsid)s
mon host = v1:127.0.0.1:%(port)d
mon initial members = a
ms bind msgr2 = false
ms bind ipv6 = false
public addr = 127.0.0.1
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = %(d)s/admin.keyring
run dir = %(d)s/run
admin socket = %(d)s/run/$name.asok
log file = %(d)s/log/$name.log
pid file = %(d)s/run/$name.pid
crash dir = %(d)s/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
osd objectstore = memstore
memstore device bytes = %(mem)d
osd memory target = 939524096
osd max object name len = 256
osd max object namespace len = 64
osd op num shards = 1
osd op num threads per shard = 2
osd heartbeat grace = 120
osd fast shutdown = false
mon osd down out interval = 0
debug ms = 0
log to stderr = false
err to stderr = true

[mon.a]
mon data = %(d)s/mon
keyring = %(d)s/mon.keyring

[osd.0]
osd data = %(d)s/osd
keyring = %(d)s/osd/keyring
""" % {"fsid": self.fsid, "port": self.mon_port, "d": d,
                "mem": self.memstore_bytes})

    # -- life cycle ------------------------------------------------------

    def start(self):
        t0 = time.monotonic()
        d = self.dir
        for sub in ("run", "log", "crash", "mon", "osd"):
            os.makedirs(os.path.join(d, sub), exist_ok=True)
        self._write_conf()
        monkr = os.path.join(d, "mon.keyring")
        self.run("ceph-authtool", "--create-keyring", monkr, "--gen-key",
                 "-n", "mon.", "--cap", "mon", "allow *")
        self.run("ceph-authtool", "--create-keyring", self.keyring,
                 "--gen-key", "-n", "client.admin", "--cap", "mon",
                 "allow *", "--cap", "osd", "allow *", "--cap", "mgr",
                 "allow *")
        self.run("ceph-authtool", monkr, "--import-keyring", self.keyring)
        self.admin_key = self.run("ceph-authtool", self.keyring, "-p",
                                  "-n", "client.admin").strip()
        monmap = os.path.join(d, "monmap")
        self.run("monmaptool", "--create", "--fsid", self.fsid, "--addv",
                 "a", "[v1:127.0.0.1:%d]" % self.mon_port, monmap)
        self.run("ceph-mon", "--mkfs", "-i", "a", "--monmap", monmap,
                 "--keyring", monkr)
        self.start_mon()

        osd_uuid = str(uuid.uuid4())
        self.osd_id = int(self.run("ceph", "osd", "new", osd_uuid).strip())
        self.run("ceph-osd", "-i", str(self.osd_id), "--mkfs", "--mkkey",
                 "--osd-uuid", osd_uuid, "--no-mon-config", timeout=120)
        self.run("ceph", "auth", "add", "osd.%d" % self.osd_id, "osd",
                 "allow *", "mon", "allow profile osd", "mgr",
                 "allow profile osd", "-i",
                 os.path.join(d, "osd", "keyring"))
        self.start_osd(wait_pgs=False)
        self.run("ceph", "osd", "pool", "create", "rbd", "8", "8")
        self._wait("the pool's placement groups", self._pgs_active)
        self.run("rbd", "pool", "init", "rbd", timeout=120)
        self.up_seconds = time.monotonic() - t0
        return self

    def _pgs_active(self):
        # Without a manager there are no PG statistics: write an object.
        self.run("rados", "-p", "rbd", "put", "probe", "/dev/null",
                 "--rados-osd-op-timeout", "5", timeout=15)
        self.run("rados", "-p", "rbd", "rm", "probe", timeout=15)
        return True

    def pids(self):
        return [p.pid for p in (self.mon, self.osd) if p is not None]

    def rss_kib(self):
        """Resident memory of the daemons, KiB each (name -> KiB)."""
        out = {}
        for name, p in (("mon", self.mon), ("osd", self.osd)):
            if p is None or p.poll() is not None:
                continue
            # nice exec()s the daemon: same PID.
            with open("/proc/%d/status" % p.pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        out[name] = int(line.split()[1])
        return out

    def freeze_osd(self):
        """Freeze the OSD (SIGSTOP): I/O to the cluster hangs until
        thaw_osd()."""
        os.kill(self.osd.pid, signal.SIGSTOP)

    def thaw_osd(self):
        os.kill(self.osd.pid, signal.SIGCONT)

    # Restarts keep the data dir, the fsid, the keys and the monitor's
    # port (ceph.conf): the clients of the old daemons find the new
    # ones.  The OSD's memstore survives because "osd fast shutdown =
    # false" makes a terminated OSD unmount it, which saves it to its
    # data dir; mount loads it back.  (kill -9 would lose it.)

    def start_mon(self):
        """Start the monitor (again) and wait until it answers."""
        self.mon = self._daemon("mon.a", "ceph-mon", "-f", "-i", "a")
        self._wait("the monitor", lambda: self.run(
            "ceph", "mon", "stat", timeout=10) is not None)

    def start_osd(self, wait_pgs=True):
        """Start the OSD (again) and wait until the monitor has it up
        and (wait_pgs) the pool takes writes."""
        self.osd = self._daemon("osd.%d" % self.osd_id, "ceph-osd", "-f",
                                "-i", str(self.osd_id))
        self._wait("the OSD to be up", lambda: '"num_up_osds":1' in
                   self.run("ceph", "osd", "stat", "-f", "json",
                            timeout=10).replace(" ", ""))
        if wait_pgs:
            self._wait("the pool's placement groups", self._pgs_active)

    def _stop_daemon(self, p, timeout=60):
        if p is None or p.poll() is not None:
            return
        try:
            os.kill(p.pid, signal.SIGCONT)
            p.terminate()
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

    def stop_osd(self):
        """Stop the OSD by PID (SIGTERM, a clean shutdown that saves its
        memstore) and wait for it to exit; start_osd() brings it back."""
        self._stop_daemon(self.osd)
        self.osd = None

    def stop_mon(self):
        """Stop the monitor by PID and wait for it; start_mon() brings
        it back on the same port with the same store."""
        self._stop_daemon(self.mon)
        self.mon = None

    def stop(self):
        self._stop_daemon(self.osd, timeout=20)
        self._stop_daemon(self.mon, timeout=20)
        self.osd = self.mon = None

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()


def main():
    d = tempfile.mkdtemp(prefix="ceph-")
    try:
        with CephCluster(d) as c:
            print("up in %.1f s; RSS %s KiB" % (c.up_seconds, c.rss_kib()))
            c.run("rbd", "create", "--size", "64M", "rbd/probe")
            c.run("rbd", "bench", "--io-type", "write", "--io-total", "32M",
                  "rbd/probe", timeout=300)
            print("after 32 MiB written: RSS %s KiB" % c.rss_kib())
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
