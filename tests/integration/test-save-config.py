"""blockd --config FILE and x-blockd-save-config / blockctl save-config:
save -> stop -> start with --config gives the same nodes, exports, NBD
server and objects; secrets are written by file only."""
import json
import os
import subprocess

import nbd
import pytest

from conftest import BLOCKCTL, BLOCKD, QmpError, requires

# Fields that count activity or describe the host file's allocation,
# not configuration.
VOLATILE = {"rd-bytes", "wr-bytes", "rd-operations", "wr-operations",
            "clients", "actual-size", "tls-sessions",
            "tls-handshake-failures", "tls-peer-refused",
            "tls-authz-denied", "tls-required-refusals", "op-stats",
            "count", "handshake-poll-ns"}


def scrub(v):
    if isinstance(v, dict):
        return {k: scrub(x) for k, x in v.items() if k not in VOLATILE}
    if isinstance(v, list):
        return [scrub(x) for x in v]
    return v


def state(d):
    nodes = d.cmd("query-named-block-nodes")
    # Auto-generated names of unnamed children (#blockN) may differ.
    text = json.dumps(scrub(nodes), sort_keys=True)
    for i, n in enumerate(sorted(n["node-name"] for n in nodes
                                 if n["node-name"].startswith("#"))):
        text = text.replace('"%s"' % n, '"#auto%d"' % i)
    return {
        "nodes": sorted(json.loads(text),
                        key=lambda n: n["node-name"]),
        "exports": scrub(d.cmd("query-block-exports")),
        "server": scrub(d.cmd("query-nbd-server")),
        "objects": d.cmd("query-objects"),
    }


def make_images(tmp_path):
    requires("qemu-img")
    q = str(tmp_path / "a.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", q, "4M"],
                   check=True)
    r = str(tmp_path / "b.raw")
    with open(r, "wb") as f:
        f.truncate(2 << 20)
    sec = str(tmp_path / "secret")
    with open(sec, "w") as f:
        f.write("hunter2")
    return q, r, sec


def test_save_restart_identical(blockd_factory, tmp_path):
    q, r, sec = make_images(tmp_path)
    nbd_sock = str(tmp_path / "nbd.sock")
    # Some state from the command line (key=value), some over QMP.
    d = blockd_factory(
        "--object", "secret,id=s0,file=%s" % sec,
        "--blockdev", "driver=qcow2,node-name=q0,file.driver=file,"
        "file.filename=%s,cache.direct=off" % q,
        "--blockdev", "driver=null-co,node-name=nul,size=1048576")
    d.cmd("object-add", {"qom-type": "authz-simple", "id": "az0",
                         "identity": "alice"})
    d.cmd("blockdev-add", driver="file", node_name="f1", filename=r)
    d.cmd("blockdev-add", driver="raw", node_name="r1", file="f1",
          read_only=True)
    d.cmd("nbd-server-start", addr={"type": "unix",
                                    "data": {"path": nbd_sock}},
          max_connections=7)
    d.cmd("block-export-add", {"type": "nbd", "id": "e-q0",
                               "node-name": "q0", "writable": True,
                               "name": "disk"})
    d.cmd("block-export-add", type="nbd", id="e-r1", node_name="r1",
          description="the raw one")
    # Things that come and go are not saved.
    d.cmd("blockdev-add", driver="null-co", node_name="gone")
    d.cmd("block-export-add", type="nbd", id="e-gone", node_name="gone")
    d.cmd("block-export-del", id="e-gone")
    d.cmd("object-add", {"qom-type": "secret", "id": "s-gone",
                         "file": sec})
    d.cmd("object-del", id="s-gone")
    # e-gone goes away in the background; wait until it has.
    for _ in range(500):
        if len(d.cmd("query-block-exports")) == 2:
            break
    d.cmd("blockdev-del", node_name="gone")

    before = state(d)
    conf = str(tmp_path / "saved.conf")
    out = subprocess.run([BLOCKCTL, "-s", d.qmp_path, "save-config",
                          os.path.relpath(conf)], capture_output=True,
                         cwd=os.getcwd(), timeout=60)
    assert out.returncode == 0, out.stderr
    text = open(conf).read()
    assert oct(os.stat(conf).st_mode & 0o777) == "0o600"
    assert "hunter2" not in text
    commands = [json.loads(line) for line in text.splitlines()
                if line.strip() and not line.startswith("#")]
    assert [c["execute"] for c in commands] == [
        "object-add", "blockdev-add", "blockdev-add", "object-add",
        "blockdev-add", "blockdev-add", "nbd-server-start",
        "block-export-add", "block-export-add"]
    # key=value input is written as typed JSON.
    assert commands[2]["arguments"]["size"] == 1048576
    assert "gone" not in text
    assert d.stop() == 0

    d2 = blockd_factory("--config", conf)
    # Bitmaps list in creation order: the image's persistent p1 now
    # comes first (loaded at open), before those the file adds.
    assert sorted_bitmaps(state(d2)) == sorted_bitmaps(before)
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///disk?socket=%s" % nbd_sock)
    assert h.get_size() == 4 << 20
    assert h.is_read_only() is False
    h.shutdown()

    # Saving the restored daemon writes the same commands.
    conf2 = str(tmp_path / "saved2.conf")
    d2.cmd("x-blockd-save-config", filename=conf2)
    strip = [line for line in open(conf2).read().splitlines()
             if not line.startswith("#")]
    assert strip == [line for line in text.splitlines()
                     if not line.startswith("#")]


def test_inline_secret_refused(blockd, tmp_path):
    blockd.cmd("object-add", {"qom-type": "secret", "id": "s1",
                              "data": "hunter2"})
    conf = str(tmp_path / "c.conf")
    with pytest.raises(QmpError) as e:
        blockd.cmd("x-blockd-save-config", filename=conf)
    assert e.value.cls == "GenericError"
    assert e.value.desc.startswith(
        "Secret 's1' was given inline (data=): x-blockd-save-config "
        "writes secrets only as file= references")
    assert not os.path.exists(conf)
    # Once it is gone, saving works (and writes nothing of it).
    blockd.cmd("object-del", id="s1")
    blockd.cmd("x-blockd-save-config", filename=conf)
    assert "s1" not in open(conf).read()


def test_config_comments_and_errors(blockd_factory, tmp_path):
    conf = tmp_path / "c.conf"
    conf.write_text(
        "# a comment\n"
        "\n"
        "   # an indented comment\n"
        '{"execute": "blockdev-add", "arguments": {"driver": "null-co", '
        '"node-name": "n0"}}\n')
    d = blockd_factory("--config", str(conf))
    assert [n["node-name"] for n in d.cmd("query-named-block-nodes")] \
        == ["n0"]

    for body, msg in [
        ('{"execute": "blockdev-add", "arguments": {"driver": "nope"}}',
         "c.conf:2: "),
        ("not json", "c.conf:2: expected a QMP command"),
        ('{"execute": "query-version", "arguments": 3}',
         'c.conf:2: "arguments" must be an object'),
    ]:
        conf.write_text("# first\n" + body + "\n")
        r = subprocess.run([BLOCKD, "--config", str(conf)],
                           capture_output=True, timeout=60)
        assert r.returncode == 1
        assert msg in r.stderr.decode(), r.stderr

    r = subprocess.run([BLOCKD, "--config", str(tmp_path / "missing")],
                       capture_output=True, timeout=60)
    assert r.returncode == 1
    assert b"--config: Could not open" in r.stderr


def bitmaps(d):
    """{node: [(name, granularity, recording, persistent)]}"""
    return {n["node-name"]: sorted((b["name"], b["granularity"],
                                    b["recording"], b["persistent"])
                                   for b in n.get("dirty-bitmaps", []))
            for n in d.cmd("query-named-block-nodes")}


def sorted_bitmaps(st):
    """Bitmaps by name; the host file's length left out (the image grew
    when its persistent bitmap was stored at stop)."""
    for n in st["nodes"]:
        n.get("dirty-bitmaps", []).sort(key=lambda b: b["name"])
        if n["drv"] == "file":
            n["image"].pop("virtual-size")
    return st


def test_bitmaps_saved(blockd_factory, tmp_path):
    """Non-persistent bitmaps come back with their granularity and
    disabled state (not their bits); a persistent one comes back from
    the qcow2 image itself, not from the file; an exported bitmap's line
    comes before its export."""
    q, _, _ = make_images(tmp_path)
    # The persistent bitmap is in the image from the start, so the
    # image's own metadata is the same before and after.
    subprocess.run(["qemu-img", "bitmap", "--add", q, "p1"], check=True)
    nbd_sock = str(tmp_path / "nbd.sock")
    d = blockd_factory(
        "--blockdev", "driver=qcow2,node-name=q0,file.driver=file,"
        "file.node-name=qf,file.filename=%s" % q,
        "--blockdev", "driver=null-co,node-name=n0,size=1048576")
    add = "block-dirty-bitmap-add"
    d.cmd(add, {"node": "q0", "name": "b1", "granularity": 131072})
    d.cmd(add, {"node": "n0", "name": "b2", "disabled": True})
    d.cmd(add, {"node": "n0", "name": "b3"})
    d.cmd("block-dirty-bitmap-disable", {"node": "n0", "name": "b3"})
    d.cmd(add, {"node": "qf", "name": "bf", "granularity": 4096})
    d.cmd(add, {"node": "n0", "name": "gone"})
    d.cmd("block-dirty-bitmap-remove", {"node": "n0", "name": "gone"})
    d.cmd("nbd-server-start", addr={"type": "unix",
                                    "data": {"path": nbd_sock}})
    d.cmd("block-export-add", type="nbd", id="e0", node_name="q0",
          writable=True, bitmaps=["b1"])
    # Some bits: they are not saved.
    h = nbd.NBD()
    h.connect_uri("nbd+unix:///q0?socket=%s" % nbd_sock)
    h.pwrite(b"x" * 65536, 0)
    h.shutdown()
    b1 = [b for n in d.cmd("query-named-block-nodes") if n["node-name"]
          == "q0" for b in n["dirty-bitmaps"] if b["name"] == "b1"][0]
    assert b1["count"] > 0

    before = state(d)
    marks = bitmaps(d)
    assert marks["n0"] == [("b2", 65536, False, False),
                           ("b3", 65536, False, False)]
    conf = str(tmp_path / "saved.conf")
    d.cmd("x-blockd-save-config", filename=conf)
    commands = [json.loads(line) for line in open(conf).read().splitlines()
                if line.strip() and not line.startswith("#")]
    assert [(c["execute"], c["arguments"].get("name"))
            for c in commands if c["execute"] != "blockdev-add"] == [
        ("block-dirty-bitmap-add", "b1"), ("block-dirty-bitmap-add", "bf"),
        ("block-dirty-bitmap-add", "b2"), ("block-dirty-bitmap-add", "b3"),
        ("nbd-server-start", None), ("block-export-add", None)]
    adds = {c["arguments"]["name"]: c["arguments"] for c in commands
            if c["execute"] == add}
    assert adds["b1"] == {"node": "q0", "name": "b1", "granularity": 131072}
    assert adds["b2"] == {"node": "n0", "name": "b2", "granularity": 65536,
                          "disabled": True}
    assert adds["bf"]["node"] == "qf"
    assert d.stop() == 0

    d2 = blockd_factory("--config", conf)
    assert bitmaps(d2) == marks
    # Bitmaps list in creation order: the image's persistent p1 now
    # comes first (loaded at open), before those the file adds.
    assert sorted_bitmaps(state(d2)) == sorted_bitmaps(before)
    # The bits were not saved: the restored b1 is clean.
    b1 = [b for n in d2.cmd("query-named-block-nodes") if n["node-name"]
          == "q0" for b in n["dirty-bitmaps"] if b["name"] == "b1"][0]
    assert b1["count"] == 0
