"""Commands and enum values whose condition ("if" in schema/*.json) is not
built are unknown to blockd, as QEMU's commands are when it was built
without them: not in query-commands nor query-qmp-schema, and they
answer CommandNotFound.  A probing tool is never told about a command
that can only fail.

When a feature issue adds its condition to meson.build's
qapi_conditions, its names move from here to its own tests."""
import subprocess

import pytest

from conftest import BLOCKD, QmpError

NOT_BUILT = [
    "block-dirty-bitmap-add", "block-dirty-bitmap-remove",
    "block-dirty-bitmap-clear", "block-dirty-bitmap-enable",
    "block-dirty-bitmap-disable", "block-dirty-bitmap-merge",  # DIRTY_BITMAPS
    "nbd-device-connect", "nbd-device-disconnect",
    "query-nbd-devices",                                # NBD_DEVICE
]


@pytest.mark.parametrize("name", NOT_BUILT)
def test_answers_command_not_found(blockd, name):
    # with arguments or without: the command is looked up first
    for args in ({}, {"node": "n0", "name": "b0", "id": "x"}):
        req = {"execute": name, "id": 5}
        if args:
            req["arguments"] = args
        r = blockd.conn.execute(req)
        assert r == {"error": {"class": "CommandNotFound",
                               "desc": "The command %s has not been found"
                                       % name},
                     "id": 5}


def test_not_in_query_commands(blockd):
    names = {c["name"] for c in blockd.cmd("query-commands")}
    assert "query-commands" in names and "blockdev-add" in names
    assert names.isdisjoint(NOT_BUILT)


def test_not_in_query_qmp_schema(blockd):
    schema = blockd.cmd("query-qmp-schema")
    names = {e["name"] for e in schema}
    assert "blockdev-add" in names
    assert names.isdisjoint(NOT_BUILT)
    assert "NBD_DEVICE_DISCONNECTED" not in names
    # Types only the missing commands use are gone too (names are
    # masked, so look for their shape).
    for e in schema:
        members = {m["name"] for m in e.get("members", []) if "name" in m}
        assert "netlink" not in e.get("values", []), e      # NbdDevice...
        assert not {"node", "name", "granularity", "disabled"} <= members, \
            e                                           # BlockDirtyBitmapAdd


def test_nbd_driver_not_in_schema(blockd):
    schema = blockd.cmd("query-qmp-schema")
    by_name = {e["name"]: e for e in schema}
    args = by_name[by_name["blockdev-add"]["arg-type"]]
    tag = [m for m in args["members"] if m["name"] == "driver"][0]
    drivers = by_name[tag["type"]]
    assert drivers["meta-type"] == "enum"
    assert "file" in drivers["values"] and "qcow2" in drivers["values"]
    assert "nbd" not in drivers["values"]
    assert "nbd" not in [m["name"] for m in drivers["members"]]
    assert "nbd" not in [v["case"] for v in args["variants"]]


def test_blockdev_add_nbd_is_refused(blockd):
    with pytest.raises(QmpError) as e:
        blockd.cmd("blockdev-add", {
            "driver": "nbd", "node-name": "n0", "export": "e",
            "server": {"type": "unix", "path": "/nonexistent"}})
    assert e.value.cls == "GenericError"
    assert e.value.desc == "Parameter 'driver' does not accept value 'nbd'"
    assert blockd.cmd("query-named-block-nodes") == []


def test_blockdev_add_nbd_on_command_line(tmp_path):
    r = subprocess.run([BLOCKD, "--blockdev",
                        "driver=nbd,node-name=n0,server.type=unix,"
                        "server.path=/nonexistent,export=e"],
                       capture_output=True, text=True, timeout=20,
                       cwd=str(tmp_path))
    assert r.returncode == 1
    assert "Parameter 'driver' does not accept value 'nbd'" in r.stderr
