#!/usr/bin/python3
"""valgrind-scenario.py BLOCKD_CMD... - one session against a blockd
started with the given command (tests/valgrind.sh passes valgrind and
its options first): QMP blockdev-add of a raw and a qcow2 image,
nbd-server-start, block-export-add, python3-libnbd reads, writes,
zeroes, flush and block status on both, then the same over TLS (PSK),
block-export-del, blockdev-del, and quit.  Exits with blockd's status
(valgrind's --error-exitcode when it found errors or leaks)."""
import os
import subprocess
import sys
import tempfile

import nbd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "integration"))
from conftest import Qmp, wait_socket  # noqa: E402

MIB = 1 << 20


def exercise(uri, psk=None):
    h = nbd.NBD()
    h.add_meta_context("base:allocation")
    if psk:
        h.set_tls(nbd.TLS_REQUIRE)
        h.set_tls_psk_file(psk)
        h.set_tls_username("alice")
    h.connect_uri(uri)
    data = bytes(range(256)) * 256
    h.pwrite(data, 65536, nbd.CMD_FLAG_FUA)
    assert h.pread(len(data), 65536) == data
    h.zero(8192, 0)
    h.flush()
    h.block_status(MIB, 0, lambda *a: 0)
    assert h.pread(4096, 0) == bytes(4096)
    h.shutdown()


def main():
    tmp = tempfile.mkdtemp(prefix="bd-vg-", dir="/tmp")
    raw = os.path.join(tmp, "a.raw")
    qcow = os.path.join(tmp, "b.qcow2")
    with open(raw, "wb") as f:
        f.truncate(MIB)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", qcow,
                    str(MIB)], check=True)
    pskdir = os.path.join(tmp, "psk")
    os.makedirs(pskdir)
    key = "alice:" + "5a" * 32 + "\n"
    for p in (os.path.join(pskdir, "keys.psk"),
              os.path.join(tmp, "alice.psk")):
        with open(p, "w") as f:
            f.write(key)
    qmp_path = os.path.join(tmp, "qmp.sock")
    nbd_path = os.path.join(tmp, "nbd.sock")
    proc = subprocess.Popen(sys.argv[1:] + [
        "--chardev", "socket,id=m0,path=%s,server=on,wait=off" % qmp_path,
        "--monitor", "chardev=m0"], stdin=subprocess.DEVNULL)
    try:
        session(proc, tmp, raw, qcow, pskdir, qmp_path, nbd_path)
    except BaseException:
        proc.terminate()
        raise
    finally:
        if proc.poll() is None:
            try:
                proc.wait(300)
            except subprocess.TimeoutExpired:
                proc.kill()
    rc = proc.wait()
    subprocess.run(["rm", "-rf", tmp])
    print("valgrind-scenario: blockd exited with %d" % rc)
    return rc


def session(proc, tmp, raw, qcow, pskdir, qmp_path, nbd_path):
    wait_socket(qmp_path, proc, timeout=120)
    q = Qmp(qmp_path, timeout=120)
    q.cmd("blockdev-add", driver="raw", node_name="r0",
          file={"driver": "file", "filename": raw})
    q.cmd("blockdev-add", driver="qcow2", node_name="q0",
          file={"driver": "file", "filename": qcow})
    q.cmd("nbd-server-start",
          addr={"type": "unix", "data": {"path": nbd_path}})
    for n in ("r0", "q0"):
        q.cmd("block-export-add", type="nbd", id="e-" + n, node_name=n,
              writable=True)
        exercise("nbd+unix:///%s?socket=%s" % (n, nbd_path))
    q.cmd("block-export-del", id="e-r0")
    q.cmd("nbd-server-stop")

    # TLS: a PSK server, one client through it.
    q.cmd("object-add", qom_type="tls-creds-psk", id="tls0",
          endpoint="server", dir=pskdir)
    q.cmd("nbd-server-start", addr={"type": "unix", "data": {"path": nbd_path}},
          tls_creds="tls0")
    q.cmd("block-export-add", type="nbd", id="e-q0", node_name="q0",
          writable=True)
    exercise("nbds+unix:///q0?socket=%s" % nbd_path,
             psk=os.path.join(tmp, "alice.psk"))
    q.cmd("block-export-del", id="e-q0")
    q.cmd("nbd-server-stop")
    q.cmd("object-del", id="tls0")
    q.cmd("blockdev-del", node_name="r0")
    q.cmd("blockdev-del", node_name="q0")
    q.cmd("quit")
    q.close()


if __name__ == "__main__":
    sys.exit(main())
