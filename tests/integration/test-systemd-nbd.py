"""blockd-nbd@.service, run without systemd as PID 1: its ExecStart line
is read from the built unit, the instance name substituted as systemd
does (%i escaped, %I unescaped), the unit's fixed directories mapped
into a temporary one, and the command serves a libnbd client.  The same
options also run under systemd-socket-activate, the way a
blockd-nbd@.socket drop-in would start it."""
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time

import nbd
import pytest

from conftest import BLOCKD_NBD, BUILDDIR, wait_socket

UNIT = os.path.join(BUILDDIR, "systemd", "blockd-nbd@.service")
ACTIVATE = "/usr/bin/systemd-socket-activate"
RUN_DIR = "/run/blockd-nbd"
IMAGES = "/var/lib/blockd/images"


def unit_service():
    """The [Service] section: {key: [values]}, continuations joined."""
    text = open(UNIT).read().replace("\\\n", " ")
    section, out = None, {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^\[(.*)\]$", line)
        if m:
            section = m.group(1)
            continue
        key, _, value = line.partition("=")
        if section == "Service":
            out.setdefault(key, []).append(value)
    return out


def unescape(instance):
    """systemd's unit name unescaping (%I): "-" is "/", \\xNN a byte."""
    s = instance.replace("-", "/")
    return re.sub(r"\\x([0-9a-fA-F]{2})",
                  lambda m: chr(int(m.group(1), 16)), s)


def exec_start(instance, tmp):
    """The unit's ExecStart for instance, run from the build tree with
    /run/blockd-nbd and /var/lib/blockd/images under tmp."""
    svc = unit_service()
    (line,) = svc["ExecStart"]
    # The directories the command uses are those the unit sets up.
    assert svc["RuntimeDirectory"] == [os.path.basename(RUN_DIR)]
    assert IMAGES in svc["ReadWritePaths"][0].split()
    line = line.replace("%i", instance).replace("%I", unescape(instance))
    argv = shlex.split(line)
    assert argv[0].endswith("/blockd-nbd"), argv[0]
    argv[0] = BLOCKD_NBD
    return [a.replace(RUN_DIR, os.path.join(tmp, "run"))
             .replace(IMAGES, os.path.join(tmp, "images")) for a in argv]


@pytest.fixture
def tmp():
    # Short: unix socket paths are limited to 108 bytes.
    d = tempfile.mkdtemp(prefix="bd-unit-", dir="/tmp")
    os.mkdir(os.path.join(d, "run"))       # RuntimeDirectory=
    yield d
    shutil.rmtree(d, ignore_errors=True)


def make_image(tmp, rel):
    path = os.path.join(tmp, "images", rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"\xab" * 65536)
        f.truncate(4 << 20)
    return path


def stop(proc, log):
    """SIGTERM by PID, as systemctl stop; blockd-nbd exits 0."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, open(log).read()


def serve_check(uri, img):
    """Two clients at once (--shared=0), read and write through."""
    a = nbd.NBD()
    a.connect_uri(uri)
    b = nbd.NBD()
    b.connect_uri(uri)
    assert a.get_size() == 4 << 20
    assert a.is_read_only() is False
    assert a.pread(4096, 0) == b"\xab" * 4096
    b.pwrite(b"\x5a" * 4096, 8192)
    b.flush()
    assert a.pread(4096, 8192) == b"\x5a" * 4096
    a.shutdown()
    b.shutdown()
    with open(img, "rb") as f:
        f.seek(8192)
        assert f.read(4096) == b"\x5a" * 4096


# "vm1-disk.raw" is the unit for images/vm1/disk.raw: %I has a slash,
# and the socket (named by %i) must still be in the runtime directory.
@pytest.mark.parametrize("instance,rel", [("disk.raw", "disk.raw"),
                                          ("vm1-disk.raw", "vm1/disk.raw")])
def test_unit_exec_start_serves(tmp, instance, rel):
    img = make_image(tmp, rel)
    argv = exec_start(instance, tmp)
    sock = [a.split("=", 1)[1] for a in argv if a.startswith("--socket=")]
    assert sock and os.path.dirname(sock[0]) == os.path.join(tmp, "run")
    log = os.path.join(tmp, "log")
    with open(log, "wb") as lf:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=lf,
                                stderr=lf)
    try:
        wait_socket(sock[0], proc)
        # --persistent: still serving after the first clients leave.
        for _ in range(2):
            serve_check("nbd+unix:///?socket=" + sock[0], img)
        assert proc.poll() is None
    finally:
        stop(proc, log)


def test_unit_options_socket_activated(tmp):
    """The unit's options with the socket passed as systemd passes it
    (LISTEN_FDS=1, LISTEN_PID) instead of --socket."""
    if not os.path.exists(ACTIVATE):
        pytest.skip("%s is not installed (Debian package systemd)"
                    % ACTIVATE)
    img = make_image(tmp, "disk.raw")
    argv = [a for a in exec_start("disk.raw", tmp)
            if not a.startswith("--socket=")]
    sock = os.path.join(tmp, "run", "activated.sock")
    log = os.path.join(tmp, "log")
    with open(log, "wb") as lf:
        proc = subprocess.Popen([ACTIVATE, "-l", sock, "--"] + argv,
                                stdin=subprocess.DEVNULL, stdout=lf,
                                stderr=lf)
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(sock):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        # systemd-socket-activate starts blockd-nbd at the first connect.
        serve_check("nbd+unix:///?socket=" + sock, img)
        serve_check("nbd+unix:///?socket=" + sock, img)
    finally:
        stop(proc, log)
