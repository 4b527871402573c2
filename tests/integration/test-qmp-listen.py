"""QMP listeners through util/sock and util/acceptor: server=on,wait=on
blocks start-up until the first client, then the listener accepts
others on the loop."""
import os
import subprocess
import tempfile
import time

from conftest import BLOCKD, Qmp


def test_wait_on_blocks_until_first_client(tmp_path):
    sock = tempfile.mktemp(prefix="bd-", dir="/tmp")
    pidfile = str(tmp_path / "pid")
    p = subprocess.Popen(
        [BLOCKD, "--chardev", "socket,id=m,path=%s,server=on,wait=on" % sock,
         "--monitor", "chardev=m", "--pidfile", pidfile],
        stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(sock):
            assert p.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        # Still waiting: the options after the monitor are not done.
        time.sleep(0.3)
        assert not os.path.exists(pidfile)
        with Qmp(sock) as first:
            assert first.cmd("query-version")
            deadline = time.monotonic() + 10
            while not os.path.exists(pidfile):
                assert time.monotonic() < deadline
                time.sleep(0.02)
            with Qmp(sock) as second:
                assert second.cmd("query-version")
    finally:
        p.terminate()
        assert p.wait(10) == 0
    assert not os.path.exists(sock)
