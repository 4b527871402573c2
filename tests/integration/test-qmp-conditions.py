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
    # every condition in schema/schema.json is built now
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
