"""QMP protocol behaviour of the blockd monitor: greeting, negotiation,
replies, events and every class of bad input.  Each bad input gets the
error QEMU would give, and the daemon keeps serving."""
import json
import os
import socket
import time

import pytest

from conftest import Qmp, QmpError


def test_greeting_shape(blockd):
    q = blockd.qmp(negotiate=False)
    g = q.greeting["QMP"]
    v = g["version"]
    assert set(v) == {"qemu", "package"}
    assert set(v["qemu"]) == {"major", "minor", "micro"}
    assert all(isinstance(v["qemu"][k], int) for k in v["qemu"])
    assert v["package"].startswith("blockd-")
    assert g["capabilities"] == ["oob"]
    q.close()


def test_negotiation_mode_only_accepts_qmp_capabilities(blockd):
    q = blockd.qmp(negotiate=False)
    r = q.execute({"execute": "query-version", "id": "x"})
    assert r["error"]["class"] == "CommandNotFound"
    assert r["error"]["desc"] == \
        "Expecting capabilities negotiation with 'qmp_capabilities'"
    assert r["id"] == "x"
    assert q.execute({"execute": "qmp_capabilities"}) == {"return": {}}
    r = q.execute({"execute": "qmp_capabilities"})
    assert r["error"]["class"] == "CommandNotFound"
    assert "already complete" in r["error"]["desc"]
    q.close()


def test_capabilities_enable_oob_and_unknown(blockd):
    q = blockd.qmp(negotiate=False)
    r = q.execute({"execute": "qmp_capabilities",
                   "arguments": {"enable": ["bogus"]}})
    assert r["error"]["class"] == "GenericError"
    assert "bogus" in r["error"]["desc"]
    r = q.execute({"execute": "qmp_capabilities",
                   "arguments": {"enable": ["oob"]}})
    assert r == {"return": {}}
    # With oob enabled, exec-oob is understood; our commands are in-band.
    r = q.execute({"exec-oob": "query-version", "id": 7})
    assert r["error"]["desc"] == \
        "The command query-version does not support OOB"
    assert r["id"] == 7
    q.close()


def test_exec_oob_without_capability(blockd):
    r = blockd.conn.execute({"exec-oob": "query-version"})
    assert r["error"]["class"] == "GenericError"
    assert r["error"]["desc"] == "QMP input member 'exec-oob' is unexpected"


def test_id_is_echoed_verbatim(blockd):
    for ident in [1, "abc", {"a": [1, 2]}, [None, True], 1.5, None]:
        r = blockd.conn.execute({"execute": "query-version", "id": ident})
        assert "return" in r
        assert r["id"] == ident


def test_query_version(blockd):
    v = blockd.cmd("query-version")
    assert v["package"].startswith("blockd-")
    assert v["qemu"]["major"] >= 7


def test_query_commands_lists_every_command(blockd):
    names = {c["name"] for c in blockd.cmd("query-commands")}
    for n in ["qmp_capabilities", "query-version", "query-commands",
              "query-qmp-schema", "quit", "blockdev-add", "blockdev-del",
              "query-named-block-nodes", "nbd-server-start",
              "nbd-server-stop", "block-export-add", "block-export-del",
              "query-block-exports"]:
        assert n in names


def test_query_qmp_schema_shape(blockd):
    schema = blockd.cmd("query-qmp-schema")
    by_name = {e["name"]: e for e in schema}
    cmd = by_name["blockdev-add"]
    assert cmd["meta-type"] == "command"
    arg = by_name[cmd["arg-type"]]
    assert arg["meta-type"] == "object"
    assert arg["tag"] == "driver"
    cases = {v["case"] for v in arg["variants"]}
    assert {"file", "raw", "qcow2", "null-co"} <= cases
    assert by_name["str"] == {"name": "str", "meta-type": "builtin",
                              "json-type": "string"}
    assert by_name["BLOCK_EXPORT_DELETED"]["meta-type"] == "event"
    # qemu-storage-daemon has no SHUTDOWN event (QEMU's run-state.json
    # is not in its schema), and neither has blockd.
    assert "SHUTDOWN" not in by_name
    for e in schema:
        assert e["meta-type"] in ("builtin", "enum", "array", "object",
                                  "alternate", "command", "event")


def test_pipelined_commands_in_one_write(blockd):
    q = blockd.conn
    q.send_raw("".join(json.dumps({"execute": "query-version", "id": i})
                       for i in range(20)))
    ids = [q.recv_reply()["id"] for _ in range(20)]
    assert ids == list(range(20))


def test_command_split_over_many_writes(blockd):
    q = blockd.conn
    msg = json.dumps({"execute": "query-version", "id": "split"})
    for ch in msg:
        q.send_raw(ch)
        time.sleep(0.001)
    assert q.recv_reply()["id"] == "split"


def test_two_monitors_at_once(blockd):
    a = blockd.qmp()
    b = blockd.qmp()
    assert a.cmd("query-version") == b.cmd("query-version")
    a.close()
    assert b.cmd("query-version")["package"].startswith("blockd-")
    b.close()


@pytest.mark.parametrize("raw,desc_prefix", [
    (b'{"execute": }\n', "JSON parse error"),
    (b'{"execute": "query-version"\x01}\n', "JSON parse error"),
    (b'\xff\xfe\n', "JSON parse error"),
    (b'[1, 2]\n', "QMP input must be a JSON object"),
    (b'"hello"\n', "QMP input must be a JSON object"),
    (b'42\n', "QMP input must be a JSON object"),
    (b'{}\n', "QMP input lacks member 'execute'"),
    (b'{"execute": 1}\n', "QMP input member 'execute' must be a string"),
    (b'{"execute": "query-version", "arguments": []}\n',
     "QMP input member 'arguments' must be an object"),
    (b'{"execute": "query-version", "foo": 1}\n',
     "QMP input member 'foo' is unexpected"),
])
def test_malformed_input(blockd, raw, desc_prefix):
    q = blockd.conn
    q.send_raw(raw)
    r = q.recv_reply()
    assert r["error"]["class"] == "GenericError", r
    assert r["error"]["desc"].startswith(desc_prefix), r
    # the stream resynchronised: the next command works
    assert q.cmd("query-version")["package"].startswith("blockd-")


def test_unknown_command(blockd):
    with pytest.raises(QmpError) as e:
        blockd.cmd("no-such-command")
    assert e.value.cls == "CommandNotFound"
    assert e.value.desc == "The command no-such-command has not been found"


def test_argument_errors(blockd):
    cases = [
        ("blockdev-del", {}, "Parameter 'node-name' is missing"),
        ("blockdev-del", {"node-name": 5},
         "Invalid parameter type for 'node-name', expected: string"),
        ("blockdev-del", {"node-name": "a", "extra": 1},
         "Parameter 'extra' is unexpected"),
        ("query-version", {"x": 1}, "Parameter 'x' is unexpected"),
        ("blockdev-add", {"driver": "nope", "node-name": "n"},
         "Parameter 'driver' does not accept value 'nope'"),
        ("blockdev-add", {"node-name": "n"}, "Parameter 'driver' is missing"),
        ("blockdev-add", {"driver": "null-co", "node-name": "n",
                          "size": "big"},
         "Invalid parameter type for 'size', expected: integer"),
        ("blockdev-add", {"driver": "raw", "node-name": "n",
                          "file": {"driver": "file"}},
         "Parameter 'file.filename' is missing"),
    ]
    for name, args, desc in cases:
        with pytest.raises(QmpError) as e:
            blockd.cmd(name, args)
        assert e.value.cls == "GenericError"
        assert e.value.desc == desc, (name, args)


def test_nul_in_string_refused(blockd):
    r = blockd.conn.execute('{"execute": "blockdev-del", '
                            '"arguments": {"node-name": "a\\u0000b"}}')
    assert r["error"]["class"] == "GenericError"
    assert "NUL" in r["error"]["desc"]


def test_oversized_message_then_resync(blockd):
    q = blockd.conn
    big = b'{"execute": "query-version", "arguments": {"x": "' + \
        b"a" * (2 * 1024 * 1024) + b'"}}\n'
    q.send_raw(big)
    r = q.recv_reply()
    assert r["error"]["class"] == "GenericError"
    assert "too large" in r["error"]["desc"]
    assert q.cmd("query-version")["package"].startswith("blockd-")


def test_deeply_nested_input(blockd):
    q = blockd.conn
    q.send_raw(b"[" * 100000 + b"\n")
    r = q.recv_reply()
    assert r["error"]["class"] == "GenericError"
    assert q.cmd("query-version")


def test_abrupt_disconnect_mid_message(blockd):
    for _ in range(5):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(blockd.qmp_path)
        s.sendall(b'{"execute": "qmp_capabilities"}{"execute": "query-ver')
        s.close()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(blockd.qmp_path)
    s.close()                   # gone before the greeting is read
    assert blockd.alive()
    assert blockd.cmd("query-version")


def test_client_that_never_reads(blockd):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(blockd.qmp_path)
    s.sendall(b'{"execute": "qmp_capabilities"}')
    s.setblocking(False)
    sent = 0
    req = b'{"execute": "query-qmp-schema"}' * 64
    try:
        while sent < 64 * 1024 * 1024:
            sent += s.send(req)
    except BlockingIOError:
        pass
    # the daemon stopped reading from it (back-pressure) but still
    # answers everyone else promptly
    t = time.monotonic()
    assert blockd.cmd("query-version")
    assert time.monotonic() - t < 5
    s.close()


def test_events_reach_every_negotiated_monitor(blockd_factory):
    blockd = blockd_factory()
    a = blockd.qmp()
    b = blockd.qmp()
    neg = blockd.qmp(negotiate=False)
    a.cmd("blockdev-add", driver="null-co", node_name="n0")
    a.cmd("nbd-server-start", addr={"type": "unix", "data": {
        "path": os.path.join(blockd.sockdir, "nbd.sock")}})
    a.cmd("block-export-add", type="nbd", id="e0", node_name="n0")
    # quit deletes the export: the event reaches both monitors, before
    # quit's reply on a (qemu-storage-daemon's order).
    assert a.execute({"execute": "quit"}) == {"return": {}}
    assert [ev["event"] for ev in a.events] == ["BLOCK_EXPORT_DELETED"]
    for q in (a, b):
        ev = q.get_event("BLOCK_EXPORT_DELETED")
        assert ev["data"] == {"id": "e0"}
        assert set(ev["timestamp"]) == {"seconds", "microseconds"}
        assert ev["timestamp"]["seconds"] > 1600000000
    # a monitor still negotiating gets no events
    neg.sock.settimeout(2)
    with pytest.raises((EOFError, ConnectionResetError)):
        while True:
            obj = neg.recv_raw()
            assert "event" not in obj
    assert blockd.proc.wait(10) == 0


def test_sigterm_shuts_down_cleanly(blockd_factory):
    d = blockd_factory()
    q = d.qmp()
    d.proc.terminate()
    # No SHUTDOWN event (as qemu-storage-daemon): the monitor just ends.
    with pytest.raises((EOFError, ConnectionResetError)):
        while True:
            obj = q.recv_raw()
            assert "event" not in obj, obj
    assert d.proc.wait(10) == 0
    import os
    assert not os.path.exists(d.qmp_path)
