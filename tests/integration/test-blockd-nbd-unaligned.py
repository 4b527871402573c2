"""blockd-nbd serving a raw file whose size is not a multiple of 512
with the format probed (qemu-iotests 241's middle case).  The probe
gives the node QEMU's 512-byte request alignment, and blockd-nbd
advertised a minimum block size of 512 on a 1000-byte export: its own
-L refused the listing ("Export size 1000 is not a multiple of the
minimum block size 512") and QEMU's NBD client aborted on an assertion
in block status (qemu-img map).  qemu-nbd rounds the size up to 1024
(QEMU counts sectors); blockd-nbd keeps the file's 1000 bytes and
now advertises the 512-byte minimum only when it divides the size."""
import subprocess

import pytest

from conftest import requires
from qnbd import BLOCKD_NBD, Served, nbdinfo_json, run


@pytest.fixture(autouse=True)
def _clients():
    requires("nbdinfo", "qemu-img", "qemu-io")


def test_probed_unaligned_raw(tmp_path):
    img = tmp_path / "odd.raw"
    img.write_bytes(b"0" * 1000)
    sock = tmp_path / "s.sock"
    s = Served(BLOCKD_NBD, sock, ["-t", str(img)])
    try:
        info = nbdinfo_json(s.uri())["exports"][0]
        assert info["export-size"] == 1000
        assert info["block_size_minimum"] == 1
        st, out, err = run(BLOCKD_NBD, ["-L", "-k", str(sock)])
        assert st == 0 and "size:  1000" in out, (out, err)
        r = subprocess.run(["qemu-img", "map", "-f", "raw",
                            "--output=json", s.uri()],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r
        r = subprocess.run(["qemu-io", "-f", "raw", "-c",
                            "read -P 0x30 0 1000", s.uri()],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "read 1000/1000" in r.stdout, r
    finally:
        s.stop()
    assert "probing guessed raw" in s.stderr


def test_probed_aligned_raw_keeps_512(tmp_path):
    """A sector-sized file keeps QEMU's 512-byte minimum block."""
    img = tmp_path / "even.raw"
    img.write_bytes(b"0" * 4096)
    s = Served(BLOCKD_NBD, tmp_path / "s.sock", ["-t", str(img)])
    try:
        info = nbdinfo_json(s.uri())["exports"][0]
        assert info["block_size_minimum"] == 512
    finally:
        s.stop()
