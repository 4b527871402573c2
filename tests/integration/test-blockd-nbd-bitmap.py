"""blockd-nbd -B NAME against qemu-nbd.  The exported map of a persistent
bitmap needs qcow2's persistent bitmaps (the qcow2-bitmap work): its
test is tests/integration/test-blockd-nbd-bitmap.py.pending until then.
Here: -B maps to block-export-add bitmaps, and a bitmap that is not
there fails the same way."""
import subprocess

import pytest

from conftest import requires
from qnbd import PROGS, require_qemu_nbd, run

BOTH = ["blockd-nbd", "qemu-nbd"]


def test_bitmap_missing(tmp_path):
    require_qemu_nbd()
    requires("qemu-img")
    image = str(tmp_path / "disk.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", image, "4M"],
                   check=True)
    out = {n: run(PROGS[n], ["-B", "nosuch", "-B", "other", "-k",
                             str(tmp_path / "s.sock"), "-f", "qcow2",
                             image]) for n in BOTH}
    assert out["blockd-nbd"] == out["qemu-nbd"]
    # qemu-nbd prepends each -B: the last one is looked up first.
    assert out["blockd-nbd"] == (1, "", "nbdsrv: Bitmap 'other' is not "
                                        "found\n")


def test_bitmaps_in_script(tmp_path):
    st, out, err = run(PROGS["blockd-nbd"], [
        "--print-qmp", "-B", "b0", "-B", "b1", "-f", "qcow2", "-k",
        str(tmp_path / "s.sock"), "disk.qcow2"])
    assert st == 0, err
    assert '"bitmaps": [ "b1", "b0" ]' in out
