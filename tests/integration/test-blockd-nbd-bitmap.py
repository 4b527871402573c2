"""blockd-nbd -B NAME against qemu-nbd: a persistent bitmap of a qcow2
image exported as qemu:dirty-bitmap:NAME (the same map, read-only and
writable), -B's order in the script, and a bitmap that is not there
failing the same way."""
import subprocess

import pytest

from conftest import requires
from qnbd import PROGS, Served, require_qemu_nbd, run

BOTH = ["blockd-nbd", "qemu-nbd"]


@pytest.fixture
def image(tmp_path):
    require_qemu_nbd()
    requires("qemu-img", "qemu-io", "nbdinfo")
    p = str(tmp_path / "disk.qcow2")
    for cmd in (["qemu-img", "create", "-q", "-f", "qcow2", p, "4M"],
                ["qemu-io", "-c", "write 0 64k", p],
                ["qemu-img", "bitmap", "--add", "-g", "64k", p, "b0"],
                ["qemu-io", "-c", "write 1M 128k", "-c", "write 3M 4k", p]):
        subprocess.run(cmd, check=True, capture_output=True)
    return p


@pytest.mark.parametrize("extra", [["-r"], []], ids=["ro", "rw"])
def test_bitmap_map(extra, tmp_path, image):
    maps = {}
    for n in BOTH:
        with Served(PROGS[n], tmp_path / "s.sock",
                    extra + ["-t", "-B", "b0", "-f", "qcow2", image]) as s:
            maps[n] = subprocess.run(
                ["nbdinfo", "--map=qemu:dirty-bitmap:b0", s.uri()],
                capture_output=True, text=True, check=True).stdout
    assert maps["blockd-nbd"] == maps["qemu-nbd"]
    assert "1048576      131072    1  dirty" in maps["blockd-nbd"]


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
