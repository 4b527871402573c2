"""QMP input that json-c accepts but QEMU refuses: duplicate keys, a
\\u0000 inside a command name or a key, integers beyond 64 bits.  Each
gets QEMU's answer, nothing runs, and the connection keeps working.
Requests are sent as raw text: Python's json cannot write these."""
import pytest

DUP = {"error": {"class": "GenericError",
                 "desc": "JSON parse error, duplicate key"}}


def nodes(blockd):
    return [n["node-name"] for n in blockd.cmd("query-named-block-nodes")]


def test_duplicate_execute_is_refused(blockd):
    q = blockd.conn
    # json-c would keep the last one and answer query-version; quit must
    # not run either
    r = q.execute('{"execute": "quit", "execute": "query-version", '
                  '"id": 1}')
    assert r == DUP
    assert blockd.alive()
    assert "qemu" in blockd.cmd("query-version")


@pytest.mark.parametrize("args", [
    '{"driver": "null-co", "node-name": "a", "node-name": "b"}',
    '{"driver": "raw", "node-name": "a", "file": {"driver": "null-co", '
    '"size": 512, "size": 1024}}',
    '{"driver": "raw", "node-name": "a", "file": {"driver": "null-co", '
    '"cache": {"direct": false, "no-flush": true, "direct": true}}}',
])
def test_duplicate_keys_in_arguments(blockd, args):
    r = blockd.conn.execute('{"execute": "blockdev-add", "arguments": %s}'
                            % args)
    assert r == DUP
    assert nodes(blockd) == []


def test_duplicate_arguments_member(blockd):
    r = blockd.conn.execute('{"execute": "blockdev-add", "arguments": '
                            '{"driver": "null-co", "node-name": "a"}, '
                            '"arguments": {"driver": "null-co", '
                            '"node-name": "b"}}')
    assert r == DUP
    assert nodes(blockd) == []


def test_nul_in_command_name(blockd):
    r = blockd.conn.execute('{"execute": "query-version\\u0000junk", '
                            '"id": 2}')
    assert r["error"]["class"] == "CommandNotFound"
    assert r["error"]["desc"] == \
        "The command query-version\\u0000junk has not been found"
    assert r["id"] == 2


def test_nul_in_capabilities_name(blockd):
    q = blockd.qmp(negotiate=False)
    r = q.execute('{"execute": "qmp_capabilities\\u0000", "id": 3}')
    assert r == {"error": {"class": "CommandNotFound",
                           "desc": "Expecting capabilities negotiation "
                                   "with 'qmp_capabilities'"},
                 "id": 3}
    assert q.execute('{"execute": "qmp_capabilities"}') == {"return": {}}
    q.close()


def test_nul_in_strings_and_keys(blockd):
    q = blockd.conn
    r = q.execute('{"execute": "blockdev-add", "arguments": {"driver": '
                  '"null-co", "node-name": "n0\\u0000x"}}')
    assert r["error"] == {"class": "GenericError",
                          "desc": "Parameter 'node-name' must not contain "
                                  "a NUL character"}
    # json-c would cut the key to "node-name"
    r = q.execute('{"execute": "blockdev-add", "arguments": {"driver": '
                  '"null-co", "node-name\\u0000x": "n0"}}')
    assert r["error"]["class"] == "GenericError"
    assert r["error"]["desc"].startswith("JSON parse error")
    assert nodes(blockd) == []


# QEMU's parser reads an integer beyond 64 bits as a double, which its
# int64 visitor (size: int) and uint64 visitor (latency-ns: uint64)
# refuse each in its words.
INT = "Invalid parameter type for '%s', expected: integer"
UINT = "Parameter '%s' expects uint64"


@pytest.mark.parametrize("member,value,desc", [
    ("size", "100000000000000000000000", INT),
    ("size", "-100000000000000000000000", INT),
    ("size", "18446744073709551616", INT),
    ("size", "1e26", INT),
    ("latency-ns", "100000000000000000000000", UINT),
    ("latency-ns", "18446744073709551616", UINT),
    ("latency-ns", "1e26", UINT),
])
def test_integer_beyond_64_bits(blockd, member, value, desc):
    r = blockd.conn.execute('{"execute": "blockdev-add", "arguments": '
                            '{"driver": "null-co", "node-name": "n0", '
                            '"%s": %s}}' % (member, value))
    assert r["error"] == {"class": "GenericError", "desc": desc % member}
    assert nodes(blockd) == []


def test_largest_integers_still_work(blockd):
    q = blockd.conn
    r = q.execute('{"execute": "blockdev-add", "arguments": {"driver": '
                  '"null-co", "node-name": "n0", '
                  '"latency-ns": 18446744073709551615}}')
    assert r == {"return": {}}
    r = q.execute('{"execute": "blockdev-add", "arguments": {"driver": '
                  '"null-co", "node-name": "n1", '
                  '"size": 9223372036854775807}}')
    assert r == {"return": {}}
    # INT64_MIN is an integer: the driver, not the parser, refuses it
    r = q.execute('{"execute": "blockdev-add", "arguments": {"driver": '
                  '"null-co", "node-name": "n2", '
                  '"size": -9223372036854775808}}')
    assert "Invalid parameter type" not in r["error"]["desc"]
    assert nodes(blockd) == ["n0", "n1"] or nodes(blockd) == ["n1", "n0"]
