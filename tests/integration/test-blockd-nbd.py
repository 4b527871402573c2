"""blockd-nbd, option by option, against Debian's qemu-nbd (7.2) on the
same images with the same clients: messages and exit codes, what
nbdinfo sees, -L output, the one-shot rules (-e, -t), --fork and
--pid-file, -s, -l, -o, -A, socket activation, --print-qmp."""
import hashlib
import os
import shlex
import subprocess
import threading

import nbd
import pytest

from conftest import BLOCKD, requires, wait_socket
from qnbd import (PROGS, QEMU_NBD, BLOCKD_NBD, Served, nbdinfo_json,
                  require_qemu_nbd, run, wait_for)

BOTH = ["blockd-nbd", "qemu-nbd"]


@pytest.fixture(autouse=True)
def _oracle():
    require_qemu_nbd()
    requires("qemu-img", "qemu-io", "nbdinfo")


@pytest.fixture
def raw(tmp_path):
    p = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(p), "4M"],
                   check=True)
    subprocess.run(["qemu-io", "-f", "raw", "-c", "write -P 0x5a 0 1M",
                    "-c", "write -P 0x6b 1M 1M", str(p)],
                   check=True, capture_output=True)
    return str(p)


@pytest.fixture
def qcow2(tmp_path):
    """A qcow2 with snapshot 'snap1' (0x11 in the first MiB) and 0x22
    there now."""
    p = str(tmp_path / "disk.qcow2")

    def img(*args):
        subprocess.run(list(args), check=True, capture_output=True)
    img("qemu-img", "create", "-q", "-f", "qcow2", p, "8M")
    img("qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 1M", p)
    img("qemu-img", "snapshot", "-c", "snap1", p)
    img("qemu-io", "-f", "qcow2", "-c", "write -P 0x22 0 1M", p)
    return p


def md5(path):
    with open(path, "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


# ---- messages and exit codes -------------------------------------------

BAD = [
    ["-z"],
    ["--bogus"],
    ["-p"],
    [],
    ["a", "b"],
    ["-e", "-1", "x"],
    ["-e", "abc", "x"],
    ["-o", "abc", "x"],
    ["-k", "relative.sock", "x"],
    ["--cache=foo", "x"],
    ["-n", "--cache=none", "x"],
    ["--aio=foo", "x"],
    ["--aio=threads", "--aio=threads", "x"],
    ["--discard=foo", "x"],
    ["--discard=unmap", "--discard=unmap", "x"],
    ["--detect-zeroes=foo", "x"],
    ["--detect-zeroes=unmap", "x"],
    ["--detect-zeroes=unmap", "--discard=unmap", "x"],
    ["--tls-authz=a", "x"],
    ["--tls-hostname=h", "x"],
    ["--selinux-label=a", "x"],
    ["-L", "x"],
    ["-L", "--fork"],
    ["-L", "-A"],
    ["-L", "-x", "a"],
    ["-L", "-o", "512"],
    ["-L", "--cache=none"],
    ["-L", "--tls-creds=a", "--tls-authz=b"],
    ["-c", "/dev/nbd0", "--tls-creds=a", "x"],
    ["-l", "snapshot.foo=1", "x"],
    ["-x", "n" * 4097, "x"],
    ["-D", "d" * 4097, "x"],
    ["--image-opts", "-f", "raw", "x"],
]


@pytest.mark.parametrize("args", BAD, ids=lambda a: " ".join(a)[:40])
def test_bad_combinations(args, tmp_path):
    """Same message (name aside), same status, before anything runs."""
    out = {}
    for name in BOTH:
        out[name] = run(PROGS[name], args, cwd=str(tmp_path))
    assert out["blockd-nbd"] == out["qemu-nbd"]
    assert out["blockd-nbd"][0] == 1


def test_missing_image(tmp_path):
    args = ["-k", str(tmp_path / "s.sock"), str(tmp_path / "nonexistent")]
    out = {n: run(PROGS[n], args) for n in BOTH}
    assert out["blockd-nbd"] == out["qemu-nbd"]
    assert "Failed to blk_new_open" in out["blockd-nbd"][2]


def test_missing_tls_creds(tmp_path, raw):
    args = ["--tls-creds=nope", "-k", str(tmp_path / "s.sock"), raw]
    st, _, err = run(BLOCKD_NBD, args)
    qst, _, qerr = run(QEMU_NBD, args)
    assert (st, err) == (qst, qerr)
    assert err == ("nbdsrv: Failed to get TLS creds: No TLS credentials "
                   "with id 'nope'\n")


def test_missing_snapshot(tmp_path, qcow2):
    st, _, err = run(BLOCKD_NBD, ["-l", "nosuch", "-k",
                                  str(tmp_path / "s.sock"), qcow2])
    qst, _, qerr = run(QEMU_NBD, ["-l", "nosuch", "-k",
                                  str(tmp_path / "q.sock"), qcow2])
    assert st == qst == 1
    assert err.startswith("nbdsrv: Failed to load snapshot: ")
    assert qerr.startswith("nbdsrv: Failed to load snapshot: ")


def test_version_and_help():
    st, out, _ = run(BLOCKD_NBD, ["-V"])
    assert st == 0 and out.startswith("nbdsrv ")
    st, out, _ = run(BLOCKD_NBD, ["--help"])
    assert st == 0 and out.startswith("Usage: nbdsrv [OPTIONS] FILE\n")
    # Every long option of qemu-nbd's help is in ours.
    _, qout, _ = run(QEMU_NBD, ["--help"])
    import re
    for opt in set(re.findall(r"(--[a-z-]+)", qout)):
        assert opt in out, opt


@pytest.mark.parametrize("dev", ["missing", "/dev/null", "file", "dir"])
@pytest.mark.parametrize("verbose", [False, True])
def test_kernel_device_errors_as_qemu_nbd(tmp_path, raw, dev, verbose):
    # -c and -d really work in a kernel with nbd (test-kernel-nbd.py runs
    # them in a VM, with the busy and not-root cases); here, what fails
    # before any kernel is involved fails as qemu-nbd 7.2 does: the
    # device is opened read-write (a missing one or a directory: "Failed
    # to open"), then anything that is not an NBD device fails its
    # NBD_SET_SOCK ("Failed to set NBD socket").  Both exit 1, forked
    # (the default with -c) or in the foreground (-v).
    if os.path.exists("/sys/module/nbd") or os.path.exists("/dev/nbd15"):
        pytest.skip("this machine has the nbd module: /dev/nbd15 may be "
                    "real")
    path = {"missing": "/dev/nbd15", "/dev/null": "/dev/null",
            "file": str(tmp_path / "afile"),
            "dir": str(tmp_path / "adir")}[dev]
    (tmp_path / "afile").write_bytes(b"")
    (tmp_path / "adir").mkdir(exist_ok=True)
    res = {}
    for name, prog in PROGS.items():
        args = ["-k", str(tmp_path / (name + ".sock")), "-c", path,
                "-f", "raw", raw]
        res[name] = run(prog, (["-v"] if verbose else []) + args,
                        stdin=subprocess.DEVNULL)
    assert res["blockd-nbd"] == res["qemu-nbd"]
    st, out, err = res["qemu-nbd"]
    assert st == 1 and out == ""
    assert err.startswith("nbdsrv: Failed to "), err


def test_kernel_device_disconnect_error():
    if os.path.exists("/sys/module/nbd") or os.path.exists("/dev/nbd15"):
        pytest.skip("this machine has the nbd module: /dev/nbd15 may be "
                    "real")
    # -d as qemu-nbd -d: the same message, the same status
    st, _, err = run(BLOCKD_NBD, ["-d", "/dev/nbd15"])
    qst, _, qerr = run(QEMU_NBD, ["-d", "/dev/nbd15"])
    assert st == qst == 1
    assert err == qerr == ("nbdsrv: Cannot open /dev/nbd15: No such file "
                           "or directory\n")


# ---- what clients see --------------------------------------------------

INFO_CASES = [
    ["-f", "raw", "--discard=unmap"],
    ["-f", "raw", "-r"],
    ["-f", "raw", "-e", "0", "--discard=unmap"],
    ["-f", "raw", "-e", "3", "-r"],
    ["-f", "raw", "-x", "disk", "-D", "a disk", "--discard=unmap"],
    ["-f", "qcow2", "-x", "q", "--discard=unmap", "QCOW2"],
    ["-f", "qcow2", "-r", "-A", "QCOW2"],
    ["-f", "raw", "--cache=writethrough", "--discard=unmap"],
    ["-f", "raw", "--discard=unmap", "--detect-zeroes=unmap"],
    ["-f", "raw", "-o", "1048576", "--discard=unmap"],
    ["-f", "raw", "-o", "0x100000", "-r"],
    ["--discard=unmap", "-r"],
]


@pytest.mark.parametrize("args", INFO_CASES, ids=lambda a: " ".join(a))
def test_nbdinfo_matches(args, tmp_path, raw, qcow2):
    """nbdinfo --json (name, description, size, every flag, contexts,
    block sizes) is the same from both servers."""
    args = list(args)
    image = qcow2 if "QCOW2" in args else raw
    args = [a for a in args if a != "QCOW2"] + [image]
    name = args[args.index("-x") + 1] if "-x" in args else ""
    infos = {}
    for n in BOTH:
        with Served(PROGS[n], tmp_path / "s.sock", args) as s:
            infos[n] = nbdinfo_json(s.uri(name))
    assert_same_info(infos["blockd-nbd"], infos["qemu-nbd"])


def assert_same_info(b, q):
    """Equal, but for what blockd advertises only where it does
    something (docs/blockd-nbd.md): qemu-nbd offers CACHE on every
    export, FUA also on read-only ones and TRIM also with
    --discard=ignore (then ignores it)."""
    be, qe = b["exports"][0], q["exports"][0]
    for k in ("can_cache", "can_fua", "can_trim"):
        if be.get(k) != qe.get(k):
            assert qe[k] and not be[k]
            if k == "can_fua":
                assert be["is_read_only"]
            if k == "can_trim":
                assert be["is_read_only"] or not be["can_trim"]
            del be[k], qe[k]
    diff = {k: (be.get(k), qe.get(k)) for k in set(be) | set(qe)
            if be.get(k) != qe.get(k)}
    assert diff == {}
    assert b == q


def test_discard_ignore_flags(tmp_path, raw):
    """Known difference: without --discard=unmap qemu-nbd still
    advertises TRIM (and CACHE), then ignores them; blockd advertises
    what the node does.  Everything else is equal."""
    infos = {}
    for n in BOTH:
        with Served(PROGS[n], tmp_path / "s.sock",
                    ["-f", "raw", raw]) as s:
            infos[n] = nbdinfo_json(s.uri())
    b, q = (infos[n]["exports"][0] for n in BOTH)
    assert q["can_trim"] and not b["can_trim"]
    for k in ("can_trim", "can_cache"):
        b.pop(k)
        q.pop(k)
    assert infos["blockd-nbd"] == infos["qemu-nbd"]


def read_all(uri, length):
    h = nbd.NBD()
    h.connect_uri(uri)
    try:
        return h.pread(length, 0)
    finally:
        h.shutdown()


def test_offset_window(tmp_path, raw):
    with open(raw, "rb") as f:
        f.seek(512 * 1024)
        want = f.read(4 * 1024 * 1024 - 512 * 1024)
    for n in BOTH:
        with Served(PROGS[n], tmp_path / (n + ".sock"),
                    ["-f", "raw", "-o", "524288", raw]) as s:
            assert read_all(s.uri(), len(want)) == want


def test_load_snapshot(tmp_path, qcow2):
    """-l exports the snapshot's contents read-only; both spellings."""
    for arg in ("snap1", "snapshot.name=snap1", "snapshot.id=1"):
        for n in BOTH:
            with Served(PROGS[n], tmp_path / (n + ".sock"),
                        ["-t", "-l", arg, qcow2]) as s:
                info = nbdinfo_json(s.uri())["exports"][0]
                assert info["is_read_only"]
                data = read_all(s.uri(), 1024 * 1024)
                assert data == b"\x11" * (1024 * 1024), (n, arg)


def test_snapshot_leaves_image_untouched(tmp_path, qcow2, raw):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = dict(os.environ, TMPDIR=str(tmpdir))
    for image in (qcow2, raw):
        before = md5(image)
        with Served(BLOCKD_NBD, tmp_path / "s.sock", ["-s", image],
                    env=env) as s:
            h = nbd.NBD()
            h.connect_uri(s.uri())
            h.pwrite(b"\x99" * 65536, 0)
            h.flush()
            assert h.pread(65536, 0) == b"\x99" * 65536
            assert h.pread(4096, 2 * 1024 * 1024) == b"\0" * 4096
            h.shutdown()
            assert s.wait_exit() == 0
        assert md5(image) == before
        assert os.listdir(str(tmpdir)) == []


def test_snapshot_of_odd_sized_image(tmp_path):
    """-s over a raw image of 1000 bytes: the overlay's size is rounded
    up to 512 as qemu-nbd's is (1024), and its data is the image's."""
    image = str(tmp_path / "odd.raw")
    data = os.urandom(1000)
    with open(image, "wb") as f:
        f.write(data)
    infos = {}
    for n in BOTH:
        with Served(PROGS[n], tmp_path / (n + ".sock"),
                    ["-t", "-s", "-f", "raw", image]) as s:
            infos[n] = nbdinfo_json(s.uri())["exports"][0]
            assert read_all(s.uri(), 1024) == data + b"\0" * 24, n
    assert infos["blockd-nbd"]["export-size"] == 1024
    assert infos["qemu-nbd"]["export-size"] == 1024


def test_allocation_depth_map(tmp_path):
    """-A over a backing chain: nbdinfo --map=qemu:allocation-depth is
    the same."""
    base = str(tmp_path / "base.qcow2")
    top = str(tmp_path / "top.qcow2")
    for cmd in (["qemu-img", "create", "-q", "-f", "qcow2", base, "4M"],
                ["qemu-io", "-c", "write 0 2M", base],
                ["qemu-img", "create", "-q", "-f", "qcow2", "-b", base,
                 "-F", "qcow2", top],
                ["qemu-io", "-c", "write 1M 2M", top]):
        subprocess.run(cmd, check=True, capture_output=True)
    maps = {}
    for n in BOTH:
        with Served(PROGS[n], tmp_path / (n + ".sock"),
                    ["-r", "-A", "-f", "qcow2", top]) as s:
            maps[n] = subprocess.run(
                ["nbdinfo", "--map=qemu:allocation-depth", s.uri()],
                capture_output=True, text=True, check=True).stdout
    assert maps["blockd-nbd"] == maps["qemu-nbd"]
    assert "backing depth 2" in maps["blockd-nbd"]


# ---- -L ----------------------------------------------------------------

def test_list_line_by_line(tmp_path, qcow2, raw):
    """blockd-nbd -L and qemu-nbd -L print the same lines, whichever of
    the two serves."""
    for server in BOTH:
        with Served(PROGS[server], tmp_path / "s.sock",
                    ["-t", "-e", "0", "-x", "exp", "-D", "some words",
                     "-A", "-f", "qcow2", qcow2]) as s:
            outs = {n: run(PROGS[n], ["-L", "-k", s.sock]) for n in BOTH}
            assert outs["blockd-nbd"] == outs["qemu-nbd"]
            st, out, _ = outs["blockd-nbd"]
            assert st == 0
            assert out.startswith("exports available: 1\n export: 'exp'\n"
                                  "  description: some words\n")
            assert "   qemu:allocation-depth\n" in out


def test_list_refused(tmp_path):
    args = ["-L", "-k", str(tmp_path / "nobody.sock")]
    assert run(BLOCKD_NBD, args)[0] == run(QEMU_NBD, args)[0] == 1


# ---- one-shot rules ----------------------------------------------------

@pytest.mark.parametrize("prog", BOTH)
def test_exits_after_last_client(prog, tmp_path, raw):
    s = Served(PROGS[prog], tmp_path / "s.sock", ["-f", "raw", raw])
    try:
        # A probe that never reaches transmission does not end it.
        subprocess.run(["nbdinfo", "--list", s.uri()], check=True,
                       capture_output=True)
        assert s.proc.poll() is None
        h = nbd.NBD()
        h.connect_uri(s.uri())
        assert s.proc.poll() is None
        h.shutdown()
        assert s.wait_exit() == 0
        assert not os.path.exists(s.sock)
    finally:
        s.stop()


@pytest.mark.parametrize("prog", BOTH)
def test_persistent(prog, tmp_path, raw):
    with Served(PROGS[prog], tmp_path / "s.sock",
                ["-t", "-f", "raw", raw]) as s:
        for _ in range(3):
            assert read_all(s.uri(), 512) == b"\x5a" * 512
        assert s.proc.poll() is None
        assert s.stop() in (0, -15)


@pytest.mark.parametrize("prog", BOTH)
def test_shared_limit(prog, tmp_path, raw):
    """-e 2: a third client waits until one of two leaves; the server
    ends when the last one goes."""
    with Served(PROGS[prog], tmp_path / "s.sock",
                ["-e", "2", "-f", "raw", raw]) as s:
        h1, h2 = nbd.NBD(), nbd.NBD()
        h1.connect_uri(s.uri())
        h2.connect_uri(s.uri())
        done = threading.Event()
        third = {}

        def connect3():
            h3 = nbd.NBD()
            h3.connect_uri(s.uri())
            third["data"] = h3.pread(512, 0)
            third["h"] = h3
            done.set()
        t = threading.Thread(target=connect3, daemon=True)
        t.start()
        # Full: the third one is not served while both stay.
        assert not done.wait(1.0)
        h1.shutdown()
        assert done.wait(30)
        assert third["data"] == b"\x5a" * 512
        h2.shutdown()
        assert s.proc.poll() is None
        third["h"].shutdown()
        assert s.wait_exit() == 0


# ---- --fork, --pid-file ------------------------------------------------

@pytest.mark.parametrize("prog", BOTH)
def test_fork_pid_file(prog, tmp_path, raw):
    sock = str(tmp_path / "s.sock")
    pidf = str(tmp_path / "pid")
    st, out, err = run(PROGS[prog], ["--fork", "--pid-file", pidf, "-t",
                                     "-k", sock, "-f", "raw", raw])
    assert (st, out, err) == (0, "", "")
    pid = int(open(pidf).read())
    try:
        # Returned means listening.
        assert nbdinfo_json("nbd+unix:///?socket=" + sock)[
            "exports"][0]["export-size"] == 4 * 1024 * 1024
    finally:
        os.kill(pid, 15)
    wait_for(lambda: not os.path.exists("/proc/%d" % pid) or
             open("/proc/%d/stat" % pid).read().split()[2] == "Z")


def test_fork_failure_status(tmp_path):
    args = ["--fork", "-k", str(tmp_path / "s.sock"),
            str(tmp_path / "nonexistent")]
    b = run(BLOCKD_NBD, args)
    q = run(QEMU_NBD, args)
    assert b == q
    assert b[0] == 1


def test_fork_probe_warning(tmp_path, raw):
    """A probed raw image: the warning reaches the parent, which exits
    1 while the server runs on (qemu-nbd does the same)."""
    for n in BOTH:
        sock = str(tmp_path / (n + ".sock"))
        pidf = str(tmp_path / (n + ".pid"))
        st, _, err = run(PROGS[n], ["--fork", "--pid-file", pidf, "-k",
                                    sock, raw])
        try:
            assert st == 1
            assert "probing guessed raw" in err
            subprocess.run(["nbdinfo", "--size",
                            "nbd+unix:///?socket=" + sock],
                           check=True, capture_output=True)
        finally:
            if os.path.exists(pidf):
                try:
                    os.kill(int(open(pidf).read()), 15)
                except ProcessLookupError:
                    pass


@pytest.mark.parametrize("name", ["null-co://", "null-aio://"])
def test_null_protocol_filename(name, tmp_path):
    """QEMU's null-co:// file name (qemu-iotests 162 serves it)."""
    infos = {}
    for n in BOTH:
        with Served(PROGS[n], tmp_path / "s.sock", ["-f", "raw", name]) as s:
            infos[n] = nbdinfo_json(s.uri())
    assert infos["blockd-nbd"]["exports"][0]["export-size"] == 1 << 30
    # Without read-zeroes neither null driver defines what a read
    # returns: nbdinfo's guess at the content is not compared.
    for n in BOTH:
        infos[n]["exports"][0].pop("content", None)
    assert_same_info(infos["blockd-nbd"], infos["qemu-nbd"])


@pytest.mark.parametrize("prog", BOTH)
def test_probed_raw_guards_sector0(prog, tmp_path, raw):
    """A write that would make the image probe as qcow2 fails; others
    pass."""
    with Served(PROGS[prog], tmp_path / "s.sock", [raw]) as s:
        h = nbd.NBD()
        h.connect_uri(s.uri())
        with pytest.raises(nbd.Error):
            h.pwrite(b"QFI\xfb\0\0\0\3" + b"\0" * 504, 0)
        h.pwrite(b"\1" * 512, 0)
        h.shutdown()


# ---- socket activation -------------------------------------------------

def test_socket_activation(tmp_path, raw):
    requires("systemd-socket-activate")
    for n in BOTH:
        sock = str(tmp_path / (n + ".sock"))
        p = subprocess.Popen(["systemd-socket-activate", "-l", sock,
                              PROGS[n], "-f", "raw", raw],
                             stderr=subprocess.PIPE, text=True)
        try:
            wait_socket(sock, p)
            assert read_all("nbd+unix:///?socket=" + sock, 512) == \
                b"\x5a" * 512
            assert p.wait(timeout=30) == 0
        finally:
            if p.poll() is None:
                p.kill()
            p.wait()
            p.stderr.close()


@pytest.mark.parametrize("extra", [["-k", "/tmp/x.sock"], ["-b", "::1"],
                                   ["-p", "10810"], ["-L"],
                                   ["-c", "/dev/nbd0"]])
def test_socket_activation_refusals(extra, tmp_path, raw):
    """LISTEN_PID/LISTEN_FDS as systemd sets them (our own pid: the
    shell execs), with options qemu-nbd refuses beside them."""
    out = {}
    for n in BOTH:
        script = ('export LISTEN_PID=$$ LISTEN_FDS=1; exec 3</dev/null; '
                  'exec -a nbdsrv "$@"')
        argv = ["bash", "-c", script, "sh", PROGS[n]] + extra
        if extra != ["-L"]:
            argv.append(raw)
        r = subprocess.run(argv, capture_output=True, text=True,
                           timeout=60)
        out[n] = (r.returncode, r.stderr)
    assert out["blockd-nbd"] == out["qemu-nbd"]
    assert out["blockd-nbd"][0] == 1


def test_socket_activation_bad_fd(tmp_path, raw):
    """LISTEN_FDS=1 without a descriptor 3."""
    script = 'export LISTEN_PID=$$ LISTEN_FDS=1; exec -a nbdsrv "$@"'
    out = {}
    for n in BOTH:
        r = subprocess.run(["bash", "-c", script, "sh", PROGS[n], raw],
                           capture_output=True, text=True, timeout=60)
        out[n] = (r.returncode, r.stderr)
    assert out["blockd-nbd"] == out["qemu-nbd"]
    assert out["blockd-nbd"][0] == 1


def test_socket_activation_too_many(tmp_path, raw):
    script = ('export LISTEN_PID=$$ LISTEN_FDS=2; exec 3</dev/null 4</dev/null; '
              'exec -a nbdsrv "$@"')
    r = subprocess.run(["bash", "-c", script, "sh", BLOCKD_NBD, raw],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr == ("nbdsrv: nbdsrv does not support socket activation "
                        "with LISTEN_FDS > 1\n")


# ---- --print-qmp -------------------------------------------------------

def test_print_qmp_runs_on_blockd(tmp_path, qcow2):
    """The printed blockd command line serves what blockd-nbd serves."""
    sock = str(tmp_path / "s.sock")
    args = ["-x", "e1", "-D", "printed", "-A", "-e", "0", "-f", "qcow2",
            "--discard=unmap", "-k", sock, qcow2]
    st, out, err = run(BLOCKD_NBD, ["--print-qmp"] + args)
    assert st == 0, err
    lines = out.split("\n")
    assert lines[0] == '{"execute": "qmp_capabilities"}'
    cmdline = out[out.index("\nblockd") + 1:]
    cmdline = "\n".join(l for l in cmdline.split("\n")
                        if not l.startswith("#"))
    argv = shlex.split(cmdline.replace("\\\n", " "))
    assert argv[0] == "blockd"
    p = subprocess.Popen([BLOCKD] + argv[1:], stderr=subprocess.PIPE,
                         text=True)
    try:
        wait_socket(sock, p)
        via_blockd = nbdinfo_json("nbd+unix:///e1?socket=" + sock)
    finally:
        p.terminate()
        p.wait(timeout=20)
        p.stderr.close()
    with Served(BLOCKD_NBD, sock, args, no_socket=True) as s:
        via_wrapper = nbdinfo_json(s.uri("e1"))
    assert via_blockd == via_wrapper


def test_print_qmp_image_opts(tmp_path, raw):
    """--image-opts with a bare file name: the format is probed from
    file.filename, sizes like 1M are taken, and the script prints."""
    st, out, err = run(BLOCKD_NBD, ["--print-qmp", "--image-opts", "-r",
                                    "-k", str(tmp_path / "s.sock"), raw])
    assert st == 0, err
    assert ('"driver": "raw", "node-name": "qnbd-fmt", "read-only": true, '
            '"file": { "driver": "file", "filename": "%s" }' % raw) in out
    st, out, err = run(BLOCKD_NBD, [
        "--print-qmp", "--image-opts",
        "driver=raw,offset=1M,size=512k,file.driver=file,file.filename=x"])
    assert st == 0, err
    assert '"offset": 1048576' in out and '"size": 524288' in out


def test_verbose_prints_nothing_more(tmp_path):
    """-v while serving a qcow2 over a backing file: stderr stays empty,
    as qemu-nbd's (qemu-iotests' nbd-qemu-allocation compares it); -T
    turns trace points on (test-blockd-nbd-trace.py)."""
    base = str(tmp_path / "base.qcow2")
    top = str(tmp_path / "top.qcow2")
    for cmd in (["qemu-img", "create", "-q", "-f", "qcow2", base, "4M"],
                ["qemu-img", "create", "-q", "-f", "qcow2", "-b", base,
                 "-F", "qcow2", top]):
        subprocess.run(cmd, check=True)
    s = Served(BLOCKD_NBD, tmp_path / "s.sock", ["-v", "-r", "-f", "qcow2",
                                                 top])
    nbdinfo_json(s.uri())
    assert s.wait_exit() == 0
    s.stop()
    # (qemu-nbd -v may add "write failed: ... Broken pipe" when nbdinfo
    # hangs up first; it prints nothing else.)
    assert s.stderr == ""
