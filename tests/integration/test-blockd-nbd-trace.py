"""blockd-nbd -T/--trace: qemu-nbd's syntax ([enable=]PATTERN,
events=FILE, file=FILE, help) over blockd's named trace points
(util/trace.h), compared with Debian's qemu-nbd where both print the
same thing: the list's nbd_* names, the lines a pattern selects, the
messages and exit codes of bad -T arguments."""
import re
import subprocess

import pytest

from conftest import requires
from qnbd import BLOCKD_NBD, PROGS, Served, require_qemu_nbd, run

BOTH = ["blockd-nbd", "qemu-nbd"]
LINE = re.compile(r"^([a-z0-9_]+) ", re.M)


@pytest.fixture(autouse=True)
def _oracle():
    require_qemu_nbd()
    requires("qemu-img", "qemu-io", "nbdinfo")


@pytest.fixture
def img(tmp_path):
    p = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(p), "1M"],
                   check=True)
    return str(p)


def points(text):
    """The trace point names at the start of text's lines."""
    return set(LINE.findall(text))


def serve_and_probe(prog, tmp_path, args, img, client=None):
    """Serve img with args, run one client, stop: the server's stderr."""
    s = Served(PROGS[prog], tmp_path / ("%s.sock" % prog),
               list(args) + ["-f", "raw", img])
    if client is None:
        subprocess.run(["nbdinfo", s.uri()], check=True,
                       capture_output=True, timeout=60)
    else:
        client(s.uri())
    assert s.wait_exit() == 0
    s.stop()
    if prog == "qemu-nbd":
        # qemu-nbd also reports the socket probe of wait_socket() and a
        # client hanging up first; blockd-nbd prints neither.
        return "".join(ln for ln in s.stderr.splitlines(True)
                       if not re.match(r"nbdsrv: (option negotiation|"
                                       r"write) failed", ln))
    return s.stderr


def test_help_lists_qemu_names():
    """-T help prints the points one a line and exits 0, before any
    other check (no FILE is needed), as qemu-nbd does; every nbd_* point
    of blockd has a QEMU point of the same name, so a qemu-nbd pattern
    selects the same kind of lines."""
    st, mine, err = run(BLOCKD_NBD, ["-T", "help"])
    assert (st, err) == (0, "")
    st, theirs, err = run(PROGS["qemu-nbd"], ["-T", "help"])
    assert (st, err) == (0, "")
    names = mine.split()
    assert len(names) == len(set(names)) >= 30
    for n in ("nbd_negotiate_begin", "nbd_negotiate_success",
              "nbd_receive_request", "nbd_trip", "blk_co_preadv",
              "blk_co_pwritev"):
        assert n in names
    qemu = set(theirs.split())
    assert [n for n in names if n.startswith("nbd_") and n not in qemu] \
        == []
    st, again, _ = run(BLOCKD_NBD, ["--trace", "enable=help"])
    assert (st, again) == (0, mine)
    st, again, _ = run(BLOCKD_NBD, ["-T", "?"])
    assert (st, again) == (0, mine)


@pytest.mark.parametrize("prog", BOTH)
def test_pattern_selects_points(prog, tmp_path, img):
    """A glob and a plain name: only matching points print, one
    "NAME message" line each, on stderr; the handshake and the request
    points fire for an nbdinfo probe in both programs."""
    err = serve_and_probe(prog, tmp_path, ["-T", "nbd_negotiate_*",
                                           "--trace", "nbd_receive_request"],
                          img)
    seen = points(err)
    assert {"nbd_negotiate_begin", "nbd_negotiate_options_flags",
            "nbd_negotiate_success", "nbd_receive_request"} <= seen, err
    assert all(n.startswith("nbd_negotiate_") or n == "nbd_receive_request"
               for n in seen), err
    # Every line is a trace line.
    assert all(LINE.match(ln) for ln in err.splitlines()), err


def test_no_trace_by_default(tmp_path, img):
    """Without -T nothing is printed (qemu-iotests compare stderr)."""
    assert serve_and_probe("blockd-nbd", tmp_path, [], img) == ""


def test_block_io_points(tmp_path, img):
    """blk_co_* fire for the requests that reach the node, with its name,
    offset and length; blk_aio_complete gives the result."""
    def client(uri):
        subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 1 4k 8k",
                        "-c", "flush", uri], check=True, capture_output=True,
                       timeout=60)
    err = serve_and_probe("blockd-nbd", tmp_path,
                          ["-T", "blk_co_pwritev", "-T", "blk_co_flush",
                           "-T", "blk_aio_complete"], img, client)
    # (qemu-io writes through: the write carries FUA, BLK_REQ_FUA 0x1.)
    assert ("blk_co_pwritev node 'qnbd-fmt' offset 4096 bytes 8192 "
            "flags 0x1\n") in err, err
    assert "blk_co_flush node 'qnbd-fmt'\n" in err, err
    assert ("blk_aio_complete node 'qnbd-fmt' write offset 4096 bytes 8192 "
            "ret 0\n") in err, err
    assert points(err) == {"blk_co_pwritev", "blk_co_flush",
                           "blk_aio_complete"}, err


@pytest.mark.parametrize("prog", BOTH)
def test_file_and_events(prog, tmp_path, img):
    """events=FILE: one pattern a line, '#' comments and blank lines
    skipped, a leading '-' turns points off again; file=FILE takes the
    lines instead of stderr."""
    ev = tmp_path / "events"
    ev.write_text("# handshake start and end\nnbd_negotiate_begin\n\n"
                  "nbd_receive_*\n-nbd_receive_request\n"
                  "nbd_negotiate_success\n")
    out = tmp_path / ("%s.trace" % prog)
    err = serve_and_probe(prog, tmp_path,
                          ["-T", "events=%s,file=%s" % (ev, out)], img)
    assert err == ""
    text = out.read_text()
    # qemu-nbd 7.2 has no point named nbd_negotiate_success in the
    # option path nbdinfo takes: it prints the begin line at least.
    assert "nbd_negotiate_begin" in points(text)
    assert points(text) <= {"nbd_negotiate_begin", "nbd_negotiate_success"}
    if prog == "blockd-nbd":
        assert points(text) == {"nbd_negotiate_begin",
                                "nbd_negotiate_success"}


BAD = [
    ["-T", "enable=nbd_trip,bogus=1"],
    ["-T", "nbd_trip,nbd_receive_request"],
    ["-T", "events=/nonexistent/events"],
    ["-T", "nbd_trip,file=/nonexistent/dir/trace"],
]


@pytest.mark.parametrize("args", BAD, ids=[" ".join(a) for a in BAD])
def test_bad_trace_arguments(args, tmp_path, img):
    """Same status, same message, byte for byte."""
    argv = args + ["-f", "raw", "-k", str(tmp_path / "x.sock"), img]
    got = run(BLOCKD_NBD, argv, timeout=30)
    want = run(PROGS["qemu-nbd"], argv, timeout=30)
    assert got == want
    assert got[0] == 1


@pytest.mark.parametrize("prog", BOTH)
def test_unknown_point_warns(prog, tmp_path, img):
    """A name that matches nothing gets a warning and the server runs;
    a glob that matches nothing is silent."""
    err = serve_and_probe(prog, tmp_path, ["-T", "no_such_point",
                                           "-T", "no_such_*"], img)
    assert err == ("nbdsrv: warning: trace event 'no_such_point' does not "
                   "exist\n")
