"""The rbd driver is optional at build time (meson -Drbd=auto|enabled|
disabled).  Whichever way blockd was built, QMP tells the truth: with
librbd the driver and its options are in query-qmp-schema; without it
they are absent and blockdev-add driver=rbd says the build lacks it.

The normal build has librbd (scripts/install-deps.sh installs it);
scripts/test.sh also builds blockd with -Drbd=disabled and runs this
file against that binary with BLOCKD_EXPECT_RBD=no, so CI checks the
build without librbd too.
"""
import json
import os
import subprocess

import pytest

from conftest import BLOCKD, QmpError

NO_RBD = ("Parameter 'driver' does not accept value 'rbd': blockd was "
          "built without RBD")


def schema_types(blockd):
    return {t["name"]: t for t in blockd.cmd("query-qmp-schema")}


def drivers(types):
    """BlockdevDriver's values (query-qmp-schema names types by number,
    as QEMU's does: found by what it holds)."""
    for t in types.values():
        if t["meta-type"] == "enum" and {"null-co", "qcow2"} <= \
                set(t["values"]):
            return t["values"]
    raise AssertionError("no BlockdevDriver in query-qmp-schema")


def has_rbd(types):
    return "rbd" in drivers(types)


def rbd_options(types):
    """BlockdevOptionsRbd's member names, or None."""
    for t in types.values():
        names = {m.get("name") for m in t.get("members", ())}
        if t["meta-type"] == "object" and {"pool", "image", "snapshot",
                                           "key-secret"} <= names:
            return names
    return None


def test_schema_matches_the_build(blockd):
    """BLOCKD_EXPECT_RBD (yes/no: tests/meson.build sets it from the
    configured build, scripts/test.sh for its -Drbd=disabled blockd) is
    what this blockd's schema says."""
    want = os.environ.get("BLOCKD_EXPECT_RBD")
    assert want in ("yes", "no"), "BLOCKD_EXPECT_RBD=%r" % want
    assert has_rbd(schema_types(blockd)) == (want == "yes")


def test_rbd_present_or_refused(blockd, tmp_path):
    types = schema_types(blockd)
    opts = {"driver": "rbd", "node-name": "r0", "pool": "rbd",
            "image": "img", "conf": str(tmp_path / "no-such.conf")}
    if has_rbd(types):
        names = rbd_options(types)
        assert {"pool", "image", "conf", "snapshot", "user", "server",
                "key-secret", "auth-client-required"} <= names
        # the driver itself answers (its conf file is missing)
        with pytest.raises(QmpError) as e:
            blockd.cmd("blockdev-add", opts)
        assert e.value.desc.startswith("error reading conf file"), \
            e.value.desc
        return
    # Nothing of rbd anywhere in the schema...
    assert rbd_options(types) is None
    assert '"rbd"' not in json.dumps(list(types.values()))
    # ...and blockdev-add says the build lacks it, before any effect.
    with pytest.raises(QmpError) as e:
        blockd.cmd("blockdev-add", opts)
    assert e.value.cls == "GenericError"
    assert e.value.desc == NO_RBD
    assert blockd.cmd("query-named-block-nodes") == []
    # a misspelt driver still gets the plain message
    with pytest.raises(QmpError) as e:
        blockd.cmd("blockdev-add", dict(opts, driver="rdb"))
    assert e.value.desc == \
        "Parameter 'driver' does not accept value 'rdb'"


def test_command_line_rbd(tmp_path):
    """--blockdev driver=rbd on the command line: the same answer."""
    p = subprocess.run([BLOCKD, "--blockdev",
                        "driver=rbd,node-name=r0,pool=rbd,image=img,"
                        "conf=%s" % (tmp_path / "no-such.conf")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    probe = subprocess.run([BLOCKD, "--help"], capture_output=True,
                           text=True, timeout=60)
    assert probe.returncode == 0
    if "does not accept value 'rbd'" in p.stderr:
        assert "built without RBD" in p.stderr, p.stderr
    else:
        assert "error reading conf file" in p.stderr, p.stderr
