"""query-blockstats must stay linear in the number of nodes (issue 9,
item 7).

Every node's entry nested its children's stats in full, recursively:
a chain of n raw nodes gave O(n^2) output (400 levels: > 16 MiB; 1000:
no answer in 30 s, and SIGTERM waited for the reply).  Here a chain of
1000 raw nodes over null-co is queried at 500 and at 1000 levels: the
reply may only double (a byte-size ratio, not a timing), each entry
nests its file child's own counters one level deep (QEMU: "parent"
information, not "backing", with query-nodes), SIGTERM during a query
of the full chain ends blockd with status 0, and the other commands on
such a chain stay linear too."""
import json
import signal
import time


DEPTH = 1000


def add_chain(qmp, start, end):
    for i in range(start, end + 1):
        qmp.cmd("blockdev-add", {"driver": "raw", "node-name": "r%d" % i,
                                 "file": "r%d" % (i - 1) if i > 1
                                 else "n0"})


def reply_size(qmp, name, args):
    """The reply's size in bytes, as sent."""
    qmp.send_raw(json.dumps({"execute": name, "arguments": args}))
    data = b""
    while not data.endswith(b"\n"):
        chunk = qmp.sock.recv(1 << 20)
        assert chunk, "QMP connection closed"
        data += chunk
    reply = json.loads(data)
    assert "return" in reply, reply
    return len(data), reply["return"]


def test_blockstats_of_a_deep_chain_is_linear(blockd):
    q = blockd.qmp()
    q.sock.settimeout(30)
    q.cmd("blockdev-add", {"driver": "null-co", "node-name": "n0"})
    add_chain(q, 1, DEPTH // 2)
    sizes = {}
    for depth in (DEPTH // 2, DEPTH):
        if depth == DEPTH:
            add_chain(q, DEPTH // 2 + 1, DEPTH)
        for name, args in (("query-blockstats", {"query-nodes": True}),
                           ("query-blockstats", {}),
                           ("query-named-block-nodes", {}),
                           ("query-named-block-nodes", {"flat": True})):
            key = (name, json.dumps(args))
            sizes.setdefault(key, []).append(reply_size(q, name, args)[0])
    for key, (half, full) in sizes.items():
        print(key, half, full)
        # linear: about 2; quadratic: about 4
        assert full < 2.5 * half, "%s grows faster than the chain: %d -> %d" \
            % (key, half, full)

    _, stats = reply_size(q, "query-blockstats", {"query-nodes": True})
    by = {s["node-name"]: s for s in stats}
    assert len(by) == DEPTH + 1
    top = by["r%d" % DEPTH]
    assert top["parent"]["node-name"] == "r%d" % (DEPTH - 1)
    assert "parent" not in top["parent"]        # it has its own entry
    assert "backing" not in top
    assert "parent" not in by["n0"]
    # without query-nodes: the nodes added with blockdev-add, likewise
    _, stats = reply_size(q, "query-blockstats", {})
    assert len(stats) == DEPTH + 1

    # deleting the chain from the top is linear as well
    t0 = time.monotonic()
    for i in range(DEPTH, 0, -1):
        q.cmd("blockdev-del", node_name="r%d" % i)
    print("blockdev-del of %d nodes: %.2f s" % (DEPTH, time.monotonic() - t0))
    assert q.cmd("query-named-block-nodes", flat=True)[0]["node-name"] \
        == "n0"
    q.close()


def test_inline_children_are_nested_once(blockd):
    # children defined inline have no entry of their own without
    # query-nodes: they are nested in full under their parent
    blockd.cmd("blockdev-add", {"driver": "raw", "node-name": "top",
                                "file": {"driver": "raw", "file": {
                                    "driver": "null-co"}}})
    stats = blockd.cmd("query-blockstats")
    assert [s["node-name"] for s in stats] == ["top"]
    assert stats[0]["parent"]["parent"]["node-name"].startswith("#block")
    nodes = blockd.cmd("query-blockstats", query_nodes=True)
    assert len(nodes) == 3
    assert all("parent" not in s.get("parent", {}) for s in nodes)


def test_sigterm_during_a_big_query(blockd_factory):
    d = blockd_factory()
    q = d.qmp()
    q.sock.settimeout(30)
    q.cmd("blockdev-add", {"driver": "null-co", "node-name": "n0"})
    add_chain(q, 1, DEPTH)
    q.send_raw(json.dumps({"execute": "query-blockstats",
                           "arguments": {"query-nodes": True}}))
    d.proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    rc = d.proc.wait(20)
    print("exit %d after %.2f s" % (rc, time.monotonic() - t0))
    assert rc == 0, d.logtext()
    assert time.monotonic() - t0 < 10
    q.close()
