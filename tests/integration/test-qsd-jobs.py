"""QEMU's own qsd-jobs iotest (tests/qemu-iotests/tests/qsd-jobs of
Debian's QEMU source) with blockd as QSD_PROG, beside Debian's
qemu-storage-daemon: a job still running at `quit` is cancelled with
BLOCK_JOB_CANCELLED before quit's reply, JOB_STATUS_CHANGE's members
come in QEMU's order, the export is deleted before quit's reply, no
SHUTDOWN event, nothing extra on stderr.  tests/qemu-iotests.sh --qsd
runs it (through tests/qsd-blockd.py); QEMU's source is fetched once
into its cache (/var/tmp/blockd-qemu-iotests), then this takes seconds.
"""
import os
import subprocess

import pytest

SRCDIR = os.environ.get("BLOCKD_SRCDIR",
                        os.path.dirname(os.path.dirname(os.path.dirname(
                            os.path.abspath(__file__)))))
BLOCKD = os.environ["BLOCKD"]


def test_qsd_jobs():
    env = dict(os.environ, BLOCKD=BLOCKD)
    p = subprocess.run(
        ["bash", os.path.join(SRCDIR, "tests", "qemu-iotests.sh"), "--qsd",
         "qsd-jobs"], capture_output=True, text=True, env=env, timeout=1800)
    if p.returncode == 77:
        pytest.skip("QEMU's source could not be fetched (apt-get source "
                    "qemu): " + p.stderr.strip()[-300:])
    out = p.stdout
    results = out.split("results in ")[-1].strip()
    log = ""
    try:
        with open(os.path.join(results, "blockd-qcow2", "log.txt")) as f:
            log = f.read()
    except OSError:
        pass
    assert "qemu-storage-daemon pass     blockd pass" in out, \
        out + p.stderr + log
    assert p.returncode == 0, out + p.stderr + log
