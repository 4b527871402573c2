"""Run blockd-nbd and Debian's qemu-nbd side by side (the oracle).

Both run with the same argv[0] ("nbdsrv"), so that their messages,
which start with the program's name, compare byte for byte.

    with Served(QEMU_NBD, tmp_path, ["-f", "raw", IMG]) as s:
        info(s.uri)
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import BLOCKD_NBD, wait_socket

QEMU_NBD = shutil.which("qemu-nbd") or "/usr/bin/qemu-nbd"
PROGS = {"blockd-nbd": BLOCKD_NBD, "qemu-nbd": QEMU_NBD}
ARGV0 = "nbdsrv"


def require_qemu_nbd():
    if not os.path.exists(QEMU_NBD):
        pytest.skip("qemu-nbd is not installed (qemu-utils)")


def run(prog, args, timeout=60, env=None, **kw):
    """Run to completion: (status, stdout, stderr)."""
    r = subprocess.run([ARGV0] + list(args), executable=prog,
                       capture_output=True, text=True, timeout=timeout,
                       env=env, **kw)
    return r.returncode, r.stdout, r.stderr


class Served:
    """prog serving on a unix socket sock (added as -k unless
    no_socket); stopped by PID at exit."""

    def __init__(self, prog, sock, args, no_socket=False, env=None,
                 wait=True):
        self.sock = str(sock)
        argv = [ARGV0] + ([] if no_socket else ["-k", self.sock])
        argv += list(args)
        self.proc = subprocess.Popen(argv, executable=prog,
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     env=env)
        if wait:
            wait_socket(self.sock, self.proc)

    def uri(self, name=""):
        return "nbd+unix:///%s?socket=%s" % (name, self.sock)

    def wait_exit(self, timeout=30):
        return self.proc.wait(timeout=timeout)

    def stop(self):
        if self.proc.stdout.closed:
            return self.proc.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def nbdinfo_json(uri, *extra):
    r = subprocess.run(["nbdinfo", "--json"] + list(extra) + [uri],
                       capture_output=True, text=True, timeout=60,
                       check=True)
    return json.loads(r.stdout)


def wait_for(cond, timeout=30, what="condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.02)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
