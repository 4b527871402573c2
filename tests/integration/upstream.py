"""Helpers for tests of blockd's `nbd` block driver (the NBD client): a
real upstream server (nbdkit, qemu-nbd) on a unix socket, started and
stopped by PID, and the blockd side (an nbd node exported again).

    with Upstream(["nbdkit", "file", img], sock) as up:
        nbd_node(blockd, "n0", sock)
        export(blockd, "n0", "disk")
        up.stop(); up.start()        # same socket path, new process
"""
import os
import signal
import subprocess

import pytest

from conftest import wait_socket  # noqa: F401 (tests import it here)

def has_nbd_driver(d):
    """Whether blockd d has the nbd block driver (it is behind the
    NBD_CLIENT schema condition until it works)."""
    for t in d.cmd("query-qmp-schema"):
        vals = t.get("values") or [m.get("name") for m in t.get("members",
                                                                   [])]
        if t.get("meta-type") == "enum" and "qcow2" in vals and \
                "null-co" in vals:
            return "nbd" in vals
    return False


def requires_nbd_driver(d):
    if not has_nbd_driver(d):
        pytest.skip("blockd was built without the nbd block driver "
                    "(BlockdevDriver has no 'nbd')")


class Upstream:
    """A server process (argv, without its socket option) listening on
    unix socket `sock`; restartable on the same path.  argv[0] "nbdkit"
    gets -f -U sock, anything else (qemu-nbd) -k sock."""

    def __init__(self, argv, sock, log=None):
        self.argv = list(argv)
        self.sock = sock
        self.log = log
        self.proc = None
        self.start()

    def start(self):
        assert self.proc is None
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        prog = self.argv[0]
        if prog == "nbdkit":
            argv = ["nbdkit", "-f", "-U", self.sock] + self.argv[1:]
        else:
            argv = [prog, "-k", self.sock] + self.argv[1:]
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=out)
        if self.log:
            out.close()
        wait_socket(self.sock, self.proc)

    def stop(self, sig=signal.SIGKILL):
        """Stop by PID.  SIGKILL by default: the server vanishes without
        a goodbye (and nbdkit 1.32 does not exit on SIGTERM while a client
        stays connected)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if os.path.exists(self.sock):
            os.unlink(self.sock)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def nbd_node(d, name, sock, **opts):
    """blockdev-add an nbd node on unix socket sock (opts: export,
    reconnect-delay, open-timeout, ... with '_' for '-')."""
    args = {"driver": "nbd", "node-name": name,
            "server": {"type": "unix", "path": sock}}
    for k, v in opts.items():
        args[k.replace("_", "-")] = v
    d.cmd("blockdev-add", args)


def export(d, node, name, writable=True, **opts):
    """Start blockd's NBD server (once) and export node; the URI."""
    sock = os.path.join(d.sockdir, "nbd.sock")
    if not os.path.exists(sock):
        d.cmd("nbd-server-start",
              addr={"type": "unix", "data": {"path": sock}})
    args = {"type": "nbd", "id": "e-" + name, "node-name": node,
            "name": name, "writable": writable}
    for k, v in opts.items():
        args[k.replace("_", "-")] = v
    d.cmd("block-export-add", args)
    return "nbd+unix:///%s?socket=%s" % (name, sock)
