"""Out of file descriptors, the listeners back off (issue 9 item 3).

blockd runs with a low RLIMIT_NOFILE; we connect to its QMP and NBD
sockets until accept() fails with EMFILE, with more clients waiting in
both backlogs.  Before the fix both listeners were woken again at once
for the same pending client: ~100% CPU and a log line per wake-up.  Now
blockd must stay nearly idle with a short log, keep serving the
connections it has, and accept again once descriptors are freed."""
import os
import resource
import socket
import subprocess
import tempfile
import time

import nbd

from conftest import BLOCKD, Qmp

LIMIT = 64                  # RLIMIT_NOFILE of blockd
SPAM = LIMIT + 24           # connections we open: more than fit


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 (3 and 4 after the ')').
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_path(proc, path, timeout=10):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, "blockd exited"
        assert time.monotonic() < deadline, "%s did not appear" % path
        time.sleep(0.02)


def nbd_client(path):
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///disk?socket=%s" % path)
    return h


def test_out_of_descriptors(tmp_path):
    img = str(tmp_path / "a.raw")
    with open(img, "wb") as f:
        f.truncate(1 << 20)
        f.write(b"emfile")
    sockdir = tempfile.mkdtemp(prefix="bd-", dir="/tmp")
    qmp_path = os.path.join(sockdir, "qmp.sock")
    nbd_path = os.path.join(sockdir, "nbd.sock")
    log_path = str(tmp_path / "blockd.log")
    log = open(log_path, "wb")

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))

    proc = subprocess.Popen(
        [BLOCKD, "--chardev",
         "socket,id=m,path=%s,server=on,wait=off" % qmp_path,
         "--monitor", "chardev=m",
         "--blockdev", "driver=file,node-name=f0,filename=%s" % img,
         # No limits that would free descriptors for us.
         "--nbd-server", "addr.type=unix,addr.path=%s,max-connections=0,"
         "handshake-max-seconds=0" % nbd_path,
         "--export", "type=nbd,id=e0,node-name=f0,name=disk"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        preexec_fn=low_limit)
    spam = []
    try:
        wait_path(proc, qmp_path)
        wait_path(proc, nbd_path)
        q = Qmp(qmp_path)
        h = nbd_client(nbd_path)
        assert h.pread(6, 0) == b"emfile"

        # Exhaust: alternate QMP and NBD so both have clients waiting
        # (a socket whose backlog is full refuses more: use the other).
        full = set()
        i = 0
        while len(spam) < SPAM and len(full) < 2:
            path = (qmp_path, nbd_path)[i % 2]
            i += 1
            if path in full:
                continue
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(2)
            try:
                s.connect(path)
            except OSError:
                s.close()
                full.add(path)
                continue
            spam.append(s)
        assert len(spam) > LIMIT, "could not open enough connections"
        time.sleep(0.5)

        cpu0 = cpu_seconds(proc.pid)
        size0 = os.path.getsize(log_path)
        time.sleep(3)
        used = cpu_seconds(proc.pid) - cpu0
        grown = os.path.getsize(log_path) - size0
        assert proc.poll() is None
        assert used < 0.3, "blockd used %.2f s of CPU in 3 s" % used
        assert grown < 1024, "log grew by %d bytes in 3 s" % grown
        with open(log_path, "rb") as f:
            text = f.read().decode(errors="replace")
        warnings = [ln for ln in text.splitlines()
                    if "cannot accept connections" in ln]
        # Once per episode and listener.
        assert 1 <= len(warnings) <= 2, text[:2000]
        assert "Too many open files" in warnings[0]

        # The connections blockd has are still served.
        assert "qemu" in q.cmd("query-version")
        assert h.pread(6, 0) == b"emfile"

        # Free descriptors: new clients get in again, on both sockets.
        for s in spam:
            s.close()
        spam = []
        deadline = time.monotonic() + 10
        while True:
            try:
                q2 = Qmp(qmp_path, timeout=2)
                break
            except (OSError, EOFError):
                assert time.monotonic() < deadline, "QMP does not accept"
                time.sleep(0.1)
        assert "qemu" in q2.cmd("query-version")
        q2.close()
        h2 = nbd_client(nbd_path)
        assert h2.pread(6, 0) == b"emfile"
        h2.shutdown()
        h.shutdown()
        q.close()
    finally:
        for s in spam:
            s.close()
        if proc.poll() is None:
            proc.terminate()
        rc = proc.wait(10)
        log.close()
        for p in (qmp_path, nbd_path):
            if os.path.exists(p):
                os.unlink(p)
        os.rmdir(sockdir)
    assert rc == 0, open(log_path).read()[:2000]
