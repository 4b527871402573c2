"""QEMU's own Python QMP library (python/qemu/qmp from Debian's qemu
source package: the same code as the qemu.qmp package) drives blockd
unchanged: QMPClient (asyncio) for a realistic sequence, and qmp-shell
non-interactively.  scripts/fetch-qemu-qmp.sh fetches and caches the
library; without it (no deb-src reachable) the test is skipped with the
reason."""
import asyncio
import json
import os
import subprocess
import sys

import nbd
import pytest

from conftest import SRCDIR

FETCH = os.path.join(SRCDIR, "scripts", "fetch-qemu-qmp.sh")


@pytest.fixture(scope="module")
def qemu_python():
    cache = os.environ.get("BLOCKD_CACHE")
    r = subprocess.run(["bash", FETCH] + ([cache] if cache else []),
                       capture_output=True, timeout=1200)
    if r.returncode != 0:
        pytest.skip("QEMU's python/qemu/qmp could not be fetched: %s"
                    % r.stderr.decode().strip())
    path = r.stdout.decode().strip()
    if path not in sys.path:
        sys.path.insert(0, path)
    return path


def test_qmpclient_sequence(qemu_python, blockd_factory, tmp_path):
    from qemu.qmp import EventListener, ExecuteError, QMPClient

    img = str(tmp_path / "disk.raw")
    with open(img, "wb") as f:
        f.write(b"\xab" * 65536)
        f.truncate(1 << 20)
    nbd_sock = str(tmp_path / "nbd.sock")
    d = blockd_factory()

    async def run():
        qmp = QMPClient("blockd-test")
        await qmp.connect(d.qmp_path)
        assert qmp.greeting.QMP.version["qemu"]["major"] >= 7
        info = await qmp.execute("query-version")
        assert info["package"].startswith("blockd")

        await qmp.execute("blockdev-add", {
            "driver": "raw", "node-name": "disk0",
            "file": {"driver": "file", "filename": img}})
        await qmp.execute("nbd-server-start", {
            "addr": {"type": "unix", "data": {"path": nbd_sock}}})
        await qmp.execute("block-export-add", {
            "type": "nbd", "id": "exp0", "node-name": "disk0",
            "name": "disk0", "writable": False})
        exports = await qmp.execute("query-block-exports")
        assert [e["id"] for e in exports] == ["exp0"]
        nodes = await qmp.execute("query-named-block-nodes")
        assert "disk0" in [n["node-name"] for n in nodes]

        # A client reads through the export while QMP stays connected.
        h = nbd.NBD()
        h.connect_uri("nbd+unix:///disk0?socket=%s" % nbd_sock)
        assert h.pread(512, 0) == b"\xab" * 512
        h.shutdown()

        # Errors arrive as the library's ExecuteError, with the class.
        with pytest.raises(ExecuteError) as e:
            await qmp.execute("blockdev-del", {"node-name": "nope"})
        assert e.value.error_class == "GenericError"

        # Delete the export, wait for its event, delete the node.
        listener = EventListener()
        with qmp.listen(listener):
            await qmp.execute("block-export-del", {"id": "exp0"})
            async for event in listener:
                if event["event"] == "BLOCK_EXPORT_DELETED":
                    assert event["data"]["id"] == "exp0"
                    break
        await qmp.execute("blockdev-del", {"node-name": "disk0"})
        await qmp.execute("nbd-server-stop")
        assert await qmp.execute("query-block-exports") == []
        await qmp.disconnect()

    asyncio.run(asyncio.wait_for(run(), 120))


def test_qmp_shell(qemu_python, blockd_factory):
    d = blockd_factory()
    script = ("query-version\n"
              "blockdev-add driver=null-co node-name=n0 size=4096\n"
              "query-named-block-nodes flat=true\n"
              "blockdev-del node-name=nope\n")
    env = dict(os.environ, PYTHONPATH=qemu_python)
    r = subprocess.run([sys.executable, "-m", "qemu.qmp.qmp_shell",
                        d.qmp_path], input=script.encode(),
                       capture_output=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    replies = []
    for line in r.stdout.decode().splitlines():
        if line.startswith("(QEMU) {"):
            replies.append(json.loads(line[len("(QEMU) "):]))
    assert len(replies) == 4, r.stdout
    assert replies[0]["return"]["package"].startswith("blockd")
    assert replies[1] == {"return": {}}
    assert [n["node-name"] for n in replies[2]["return"]] == ["n0"]
    assert replies[3]["error"]["class"] == "GenericError"
