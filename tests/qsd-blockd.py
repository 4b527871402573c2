#!/usr/bin/python3
"""qemu-storage-daemon's command line for blockd, so QEMU's iotests can
run blockd as QSD_PROG (tests/qemu-iotests.sh --qsd).

blockd takes qemu-storage-daemon's options but has no stdio chardev:
each `--chardev stdio,id=ID` becomes a unix socket chardev in a private
directory, and this wrapper connects to it and copies its own stdin to
the monitor and the monitor's output to its stdout, until blockd closes
the connection (quit); then it exits with blockd's status.  Without a
stdio chardev it just runs blockd.  BLOCKD names the binary (default:
build/blockd beside this file's tests/).
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BLOCKD = os.environ.get("BLOCKD",
                        os.path.join(os.path.dirname(HERE), "build",
                                     "blockd"))


def map_args(argv, sockdir):
    """(blockd's arguments, the socket of the stdio monitor or None)."""
    out, sock = [], None
    i = 0
    while i < len(argv):
        a = argv[i]
        val = None
        if a == "--chardev" and i + 1 < len(argv):
            val, i = argv[i + 1], i + 2
        elif a.startswith("--chardev="):
            val, i = a[len("--chardev="):], i + 1
        else:
            out.append(a)
            i += 1
            continue
        parts = val.split(",")
        if parts[0] == "stdio" and sock is None:
            opts = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
            sock = os.path.join(sockdir, "mon.sock")
            val = "socket,id=%s,path=%s,server=on,wait=off" % (
                opts.get("id", "stdio"), sock)
        out += ["--chardev", val]
    return out, sock


def connect(path, proc, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            return None
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            return s
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                return None
            time.sleep(0.01)


def pump_stdin(s):
    try:
        while True:
            data = os.read(0, 65536)
            if not data:
                return          # keep the monitor open, as stdio does
            s.sendall(data)
    except OSError:
        return


def main():
    sockdir = tempfile.mkdtemp(prefix="qsd-")
    try:
        args, sock = map_args(sys.argv[1:], sockdir)
        if sock is None:
            os.execv(BLOCKD, [BLOCKD] + args)
        proc = subprocess.Popen([BLOCKD] + args, stdin=subprocess.DEVNULL)
        s = connect(sock, proc)
        if s is None:
            return proc.wait()
        threading.Thread(target=pump_stdin, args=(s,), daemon=True).start()
        while True:
            data = s.recv(65536)
            if not data:
                break
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        return proc.wait()
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
