"""blockctl against a real blockd: one-shot commands, key=value
conversion by the schema, --json, --pretty, error replies, connection
failures, the stdin script mode, events and the interactive shell
(driven through a pty)."""
import fcntl
import json
import os
import pty
import select
import signal
import socket
import subprocess
import termios
import threading
import time

import pytest

from conftest import BLOCKCTL, QmpError


def blockctl(d_or_addr, *args, input=None, env=None, timeout=30):
    """Run blockctl against a daemon (or an address); returns the
    CompletedProcess with text stdout/stderr."""
    addr = d_or_addr if isinstance(d_or_addr, str) else d_or_addr.qmp_path
    return subprocess.run([BLOCKCTL, "-s", addr] + list(args),
                          input=input, capture_output=True, text=True,
                          env=env, timeout=timeout)


def ok(p):
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    return p.stdout


def node(d, name):
    for n in d.cmd("query-named-block-nodes", flat=True):
        if n["node-name"] == name:
            return n
    return None


def start_nbd(d):
    d.cmd("nbd-server-start",
          addr={"type": "unix",
                "data": {"path": os.path.join(d.sockdir, "nbd.sock")}})


# --- one command -----------------------------------------------------------

def test_query_version(blockd):
    out = ok(blockctl(blockd, "query-version"))
    assert out.endswith("\n") and out.count("\n") == 1
    assert json.loads(out) == blockd.cmd("query-version")


def test_address_forms(blockd, monkeypatch):
    want = blockd.cmd("query-version")
    assert json.loads(ok(blockctl("unix:" + blockd.qmp_path,
                                  "query-version"))) == want
    env = dict(os.environ, BLOCKCTL_SOCKET=blockd.qmp_path)
    p = subprocess.run([BLOCKCTL, "query-version"], capture_output=True,
                       text=True, env=env, timeout=30)
    assert json.loads(ok(p)) == want


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_tcp(blockd_factory):
    port = free_port()
    d = blockd_factory("--qmp", "tcp:127.0.0.1:%d" % port, monitor=False)
    deadline = time.monotonic() + 10
    while True:
        p = blockctl("tcp:127.0.0.1:%d" % port, "query-version")
        if p.returncode == 0 or time.monotonic() > deadline:
            break
        assert d.alive(), d.logtext()
        time.sleep(0.05)
    assert json.loads(ok(p))["qemu"]["major"] >= 1


def test_command_output_compact_and_pretty(blockd):
    blockd.cmd("blockdev-add", driver="null-co", node_name="n0")
    compact = ok(blockctl(blockd, "query-named-block-nodes"))
    pretty = ok(blockctl(blockd, "--pretty", "query-named-block-nodes"))
    assert compact.count("\n") == 1
    assert pretty.count("\n") > 10 and "\n    " in pretty
    assert json.loads(compact) == json.loads(pretty)
    assert json.loads(compact)[0]["node-name"] == "n0"


# --- key=value conversion -----------------------------------------------------

def test_keyval_int_and_bool(blockd):
    ok(blockctl(blockd, "blockdev-add", "driver=null-co", "node-name=n0",
                "size=0x10000", "read-only=on"))
    n = node(blockd, "n0")
    assert n["ro"] is True
    assert n["image"]["virtual-size"] == 65536
    ok(blockctl(blockd, "blockdev-add", "driver=null-co", "node-name=n1",
                "size=4096", "read-only=off"))
    n = node(blockd, "n1")
    assert n["ro"] is False
    assert n["image"]["virtual-size"] == 4096


def test_keyval_nested(blockd, tmp_path):
    img = tmp_path / "a,b.img"           # a comma in a value survives
    with open(img, "wb") as f:
        f.truncate(1 << 20)
    ok(blockctl(blockd, "blockdev-add", "driver=raw", "node-name=r0",
                "file.driver=file", "file.filename=%s" % img,
                "read-only=on"))
    n = node(blockd, "r0")
    assert n["image"]["virtual-size"] == 1 << 20
    assert n["ro"] is True
    # the file child was opened from the nested object
    assert any(c["image"]["filename"] == str(img)
               for c in blockd.cmd("query-named-block-nodes", flat=True)
               if c["node-name"] != "r0")


def test_keyval_json_value(blockd):
    ok(blockctl(blockd, "blockdev-add", "driver=raw", "node-name=r1",
                'file={"driver": "null-co", "size": 8192}'))
    assert node(blockd, "r1")["image"]["virtual-size"] == 8192


def outcome(fn):
    try:
        return ("ok", fn())
    except QmpError as e:
        return (e.cls, e.desc)


def test_keyval_arrays_match_json(blockd):
    """bitmaps.N=... and bitmaps=[...] reach the server as the JSON
    array does: the same outcome, whatever the command does."""
    blockd.cmd("blockdev-add", driver="null-co", node_name="n0")
    blockd.cmd("nbd-server-start", {"addr": {
        "type": "unix",
        "data": {"path": os.path.join(blockd.sockdir, "nbd.sock")}}})
    want = outcome(lambda: blockd.cmd(
        "block-export-add", type="nbd", id="e0", node_name="n0",
        bitmaps=[{"node": "n0", "name": "b1"}, "b0"]))
    assert want[0] != "CommandNotFound"
    for args in (["bitmaps.0.node=n0", "bitmaps.0.name=b1",
                  "bitmaps.1=b0"],
                 ['bitmaps=[{"node": "n0", "name": "b1"}, "b0"]']):
        p = blockctl(blockd, "block-export-add", "type=nbd", "id=e0",
                     "node-name=n0", *args)
        if want[0] == "ok":
            assert json.loads(ok(p)) == want[1]
            blockd.cmd("block-export-del", id="e0")
        else:
            assert p.returncode == 1
            assert p.stderr == "%s: %s\n" % want


def test_keyval_bad_value_is_local_error(blockd):
    p = blockctl(blockd, "blockdev-add", "driver=null-co", "node-name=x",
                 "read-only=maybe")
    assert p.returncode == 1 and p.stdout == ""
    assert "Parameter 'read-only'" in p.stderr
    p = blockctl(blockd, "blockdev-add", "driver=null-co", "node-name=x",
                 "size=big")
    assert p.returncode == 1 and "Parameter 'size'" in p.stderr
    p = blockctl(blockd, "blockdev-add", "driver=null-co", "node-name=x",
                 "bogus=1")
    assert p.returncode == 1
    assert "Parameter 'bogus' is unexpected" in p.stderr
    p = blockctl(blockd, "blockdev-add", "driver=null-co", "noequals")
    assert p.returncode == 1 and "key=value" in p.stderr
    p = blockctl(blockd, "blockdev-add", "file=[1,")
    assert p.returncode == 1 and "JSON" in p.stderr
    assert node(blockd, "x") is None


def test_unknown_command_is_sent(blockd):
    p = blockctl(blockd, "x-no-such-command", "a=1", "b.c=2")
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr == ("CommandNotFound: The command x-no-such-command "
                        "has not been found\n")


# --- errors -----------------------------------------------------------------

def test_error_reply(blockd):
    p = blockctl(blockd, "blockdev-del", "node-name=nope")
    assert p.returncode == 1
    assert p.stdout == ""
    assert p.stderr.startswith("GenericError: ")
    assert p.stderr.count("\n") == 1


def test_bad_socket(tmp_path):
    p = blockctl(str(tmp_path / "nope.sock"), "query-version")
    assert p.returncode == 2
    assert "Failed to connect" in p.stderr and p.stdout == ""
    regular = tmp_path / "file"
    regular.write_text("x")
    p = blockctl(str(regular), "query-version")
    assert p.returncode == 2 and "Failed to connect" in p.stderr
    p = blockctl("tcp:127.0.0.1:%d" % free_port(), "query-version")
    assert p.returncode == 2 and "Failed to connect" in p.stderr
    p = blockctl("tcp:missing-port", "query-version")
    assert p.returncode == 2


def fake_server(tmp_path, payload, close=True):
    """A unix server that sends payload to each client (then closes)."""
    path = str(tmp_path / "fake.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)

    def serve():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            c.sendall(payload)
            if close:
                time.sleep(0.1)
                c.close()
    threading.Thread(target=serve, daemon=True).start()
    return path, srv


def test_not_a_qmp_server(tmp_path):
    path, srv = fake_server(tmp_path, b"SSH-2.0-OpenSSH\r\n")
    try:
        p = blockctl(path, "query-version")
        assert p.returncode == 2 and "malformed JSON" in p.stderr
    finally:
        srv.close()


def test_server_closes_early(tmp_path):
    path, srv = fake_server(tmp_path, b'{"QMP": {"version": {}}}\r\n')
    try:
        p = blockctl(path, "query-version")
        assert p.returncode == 2 and "closed" in p.stderr
    finally:
        srv.close()


def test_silent_server_times_out(tmp_path):
    path, srv = fake_server(tmp_path, b"", close=False)
    try:
        t = time.monotonic()
        p = blockctl(path, "--timeout", "0.5", "query-version")
        assert p.returncode == 2 and "Timed out" in p.stderr
        assert time.monotonic() - t < 10
    finally:
        srv.close()


def test_usage_errors(blockd):
    p = subprocess.run([BLOCKCTL, "query-version"], capture_output=True,
                       text=True, timeout=30,
                       env={k: v for k, v in os.environ.items()
                            if k != "BLOCKCTL_SOCKET"})
    assert p.returncode == 1 and "-s SOCKET" in p.stderr
    p = blockctl(blockd, "--json", "{}", "query-version")
    assert p.returncode == 1
    p = blockctl(blockd, "--timeout", "soon", "-e")
    assert p.returncode == 1 and "--timeout" in p.stderr
    p = blockctl(blockd, "--bogus")
    assert p.returncode == 1


def test_help_and_version():
    p = subprocess.run([BLOCKCTL, "--help"], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0
    for word in ("--json", "--pretty", "--events", "--timeout", "Exit status",
                 "KEY=VALUE", "tcp:HOST:PORT"):
        assert word in p.stdout
    p = subprocess.run([BLOCKCTL, "-V"], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode == 0 and p.stdout.startswith("blockctl ")


# --- raw JSON ---------------------------------------------------------------

def test_json_request(blockd):
    out = ok(blockctl(blockd, "--json",
                      '{"execute": "query-version", "id": "abc"}'))
    assert json.loads(out) == blockd.cmd("query-version")
    out = ok(blockctl(blockd, "--json", "query-version"))
    assert json.loads(out) == blockd.cmd("query-version")
    ok(blockctl(blockd, "--json",
                '{"execute": "blockdev-add", "arguments": '
                '{"driver": "null-co", "node-name": "j0", "size": 512}}'))
    assert node(blockd, "j0")["image"]["virtual-size"] == 512
    p = blockctl(blockd, "--json", '{"execute": "query-version", "bad": 1}')
    assert p.returncode == 1
    assert p.stderr == ("GenericError: QMP input member 'bad' is "
                        "unexpected\n")
    p = blockctl(blockd, "--json", '{"execute": ')
    assert p.returncode == 1 and "JSON" in p.stderr


# --- stdin script mode ------------------------------------------------------

def test_script_mode(blockd):
    script = "\n".join([
        "query-version",
        "",
        "# a comment",
        '{"execute": "query-version", "id": "abc"}',
        "blockdev-add driver=null-co node-name=s0 size=1024",
        "no-such-command",
        "blockdev-add driver=null-co node-name=s1 read-only=perhaps",
        "blockdev-del node-name=s0",
    ]) + "\n"
    p = blockctl(blockd, "-", input=script)
    assert p.returncode == 1
    replies = [json.loads(line) for line in p.stdout.splitlines()]
    version = blockd.cmd("query-version")
    assert replies[0] == {"return": version}
    assert replies[1] == {"return": version, "id": "abc"}
    assert replies[2] == {"return": {}}
    assert replies[3]["error"]["class"] == "CommandNotFound"
    assert replies[4] == {"return": {}}
    assert len(replies) == 5
    assert "line 7:" in p.stderr and "read-only" in p.stderr
    assert node(blockd, "s0") is None and node(blockd, "s1") is None


def test_script_mode_all_ok(blockd):
    p = blockctl(blockd, "-", input="query-version\nquery-version\n")
    assert p.returncode == 0 and len(p.stdout.splitlines()) == 2


# --- events -----------------------------------------------------------------

def add_export(d, eid, node_name="n0"):
    d.cmd("block-export-add", type="nbd", id=eid, node_name=node_name)


def test_events_after_command(blockd):
    blockd.cmd("blockdev-add", driver="null-co", node_name="n0")
    start_nbd(blockd)
    add_export(blockd, "e0")
    p = blockctl(blockd, "-e", "-n", "1", "-t", "10",
                 "block-export-del", "id=e0")
    lines = ok(p).splitlines()
    assert json.loads(lines[0]) == {}
    ev = json.loads(lines[1])
    assert ev["event"] == "BLOCK_EXPORT_DELETED"
    assert ev["data"] == {"id": "e0"}
    assert set(ev["timestamp"]) == {"seconds", "microseconds"}


def watcher(d, *args):
    """blockctl --events in the background, returned once it is
    negotiated: it runs query-version first and we wait for that
    reply, so no event can slip by before it listens."""
    proc = subprocess.Popen([BLOCKCTL, "-s", d.qmp_path, "--events"] +
                            list(args) + ["query-version"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    first = proc.stdout.readline()
    assert json.loads(first) == d.cmd("query-version"), first
    return proc


def test_events_from_another_client(blockd):
    blockd.cmd("blockdev-add", driver="null-co", node_name="n0")
    start_nbd(blockd)
    proc = watcher(blockd, "--count", "2", "--timeout", "20")
    try:
        for eid in ("x0", "x1"):
            add_export(blockd, eid)
            blockd.cmd("block-export-del", id=eid)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["event"] for e in events] == ["BLOCK_EXPORT_DELETED"] * 2
    assert [e["data"]["id"] for e in events] == ["x0", "x1"]


def test_events_timeout(blockd):
    t = time.monotonic()
    p = blockctl(blockd, "--events", "--timeout", "0.3")
    assert p.returncode == 0 and p.stdout == ""
    p = blockctl(blockd, "-e", "-n", "1", "-t", "0.3")
    assert p.returncode == 1 and "timed out after 0 of 1" in p.stderr
    assert time.monotonic() - t < 15


def test_quit_and_shutdown_events(blockd_factory):
    d = blockd_factory()
    d.cmd("blockdev-add", driver="null-co", node_name="n0")
    d.cmd("nbd-server-start", addr={"type": "unix", "data": {
        "path": os.path.join(d.sockdir, "nbd.sock")}})
    d.cmd("block-export-add", type="nbd", id="e0", node_name="n0")
    w = watcher(d, "-t", "20")
    assert ok(blockctl(d, "quit")) == "{}\n"
    d.proc.wait(10)
    out, err = w.communicate(timeout=20)
    # the watcher ends cleanly when the daemon goes away, with what quit
    # did (no SHUTDOWN event: qemu-storage-daemon has none)
    assert w.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["event"] for e in events] == ["BLOCK_EXPORT_DELETED"]
    assert events[-1]["data"] == {"id": "e0"}


# --- interactive shell ------------------------------------------------------

class Pty:
    """blockctl's shell on a pseudo-terminal (d: a Blockd or a socket
    path)."""

    def __init__(self, d, home):
        addr = d if isinstance(d, str) else d.qmp_path
        self.master, slave = pty.openpty()
        env = dict(os.environ, HOME=str(home), TERM="xterm")
        def controlling_tty():
            # a session of its own with the pty as its terminal, so ^C
            # becomes SIGINT as in a real terminal
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen([BLOCKCTL, "-s", addr],
                                     stdin=slave, stdout=slave, stderr=slave,
                                     env=env, close_fds=True,
                                     preexec_fn=controlling_tty)
        # kept open to watch the terminal mode (see wait_raw)
        self.slave = slave
        self.out = b""

    def wait_raw(self, timeout=10):
        """Wait until libedit has put the terminal in raw mode.  It
        prints the prompt just before: a ^D typed in between is taken
        by the kernel's canonical mode and never reaches the shell."""
        deadline = time.monotonic() + timeout
        while termios.tcgetattr(self.slave)[3] & termios.ICANON:
            if time.monotonic() > deadline:
                raise TimeoutError("the terminal stays in canonical mode")
            time.sleep(0.01)

    def read_until(self, what, timeout=10, start=None):
        """Read until what appears after offset start (default: what
        was read so far); returns the text from start."""
        if isinstance(what, str):
            what = what.encode()
        deadline = time.monotonic() + timeout
        if start is None:
            start = len(self.out)
        while what not in self.out[start:]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no %r in %r" % (what, self.out[start:]))
            r, _, _ = select.select([self.master], [], [], left)
            if r:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise EOFError("pty closed; got %r" % self.out[start:])
                self.out += chunk
        return self.out[start:].decode(errors="replace")

    def mark(self):
        return len(self.out)

    def since(self, mark):
        return self.out[mark:].decode(errors="replace")

    def send(self, text):
        os.write(self.master, text.encode())

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        os.close(self.master)
        os.close(self.slave)


def test_interactive_shell(blockd, tmp_path):
    blockd.cmd("blockdev-add", driver="null-co", node_name="n0")
    start_nbd(blockd)
    sh = Pty(blockd, tmp_path)
    try:
        sh.read_until("(blockd) ")
        version = blockd.cmd("query-version")

        # a command, typed with tab completion of its name
        m = sh.mark()
        sh.send("query-vers\t")
        sh.read_until("ion")            # completed (maybe redrawn)
        sh.send("\r")
        sh.read_until("(blockd) ")
        assert json.dumps(version["qemu"]).replace(" ", "") in \
            sh.since(m).replace(" ", "")

        # key=value arguments are converted by the schema
        sh.send("blockdev-add driver=null-co node-name=i0 size=2048 "
                "read-only=on\r")
        sh.read_until("(blockd) ")
        assert node(blockd, "i0")["ro"] is True
        assert node(blockd, "i0")["image"]["virtual-size"] == 2048

        # argument names and enum/bool values complete from the schema
        # (libedit redraws only what changed, so judge by the effect)
        sh.send("blockdev-add driv\tnull-c\tnode-name=i1 read-o\tof\t\r")
        sh.read_until("(blockd) ")
        assert node(blockd, "i1")["ro"] is False
        assert node(blockd, "i1")["drv"] == "null-co"

        # raw JSON, and an error reply
        m = sh.mark()
        sh.send('{"execute": "blockdev-del", "arguments": '
                '{"node-name": "i0"}}\r')
        sh.read_until("(blockd) ")
        sh.send("no-such-command\r")
        sh.read_until("(blockd) ")
        assert "CommandNotFound: The command no-such-command has not " \
               "been found" in sh.since(m)
        assert node(blockd, "i0") is None

        # an event that arrives while the user is typing is printed,
        # and the half-typed line is redrawn after it
        sh.send("query-na")
        sh.read_until("query-na")
        m = sh.mark()
        add_export(blockd, "e1")
        blockd.cmd("block-export-del", id="e1")
        sh.read_until('"BLOCK_EXPORT_DELETED"', start=m)
        out = sh.read_until("(blockd) query-na", start=m)
        assert '{"id": "e1"}' in out
        sh.send("med-block-nodes\r")
        out = sh.read_until("(blockd) ")
        assert '"node-name": "n0"' in out

        # Ctrl-C drops the line being typed, the shell goes on
        sh.send("blockdev-del node-name=n0")
        sh.read_until("node-name=n0")
        m = sh.mark()
        sh.send("\x03")
        sh.read_until("^C", start=m)
        sh.read_until("(blockd) ", start=m)
        sh.send("query-version\r")
        sh.read_until("(blockd) ")
        assert node(blockd, "n0") is not None
        assert "major" in sh.since(m)

        # Ctrl-D leaves; the history was saved
        sh.wait_raw()
        sh.send("\x04")
        assert sh.proc.wait(10) == 0
    finally:
        sh.close()
    history = (tmp_path / ".blockctl_history").read_text()
    assert "query-version" in history
    assert "blockdev-add" in history


def test_interactive_shell_server_quits(blockd_factory, tmp_path):
    d = blockd_factory()
    sh = Pty(d, tmp_path)
    try:
        sh.read_until("(blockd) ")
        sh.send("quit\r")
        sh.read_until("Connection closed by the server")
        assert sh.proc.wait(10) == 0
    finally:
        sh.close()
    d.proc.wait(10)


def test_shell_from_a_pipe(blockd):
    """Without a terminal the shell reads lines and prints return
    values (no prompt, no line editing)."""
    p = blockctl(blockd, input="query-version\nblockdev-del node-name=x\n")
    assert p.returncode == 1
    assert json.loads(p.stdout) == blockd.cmd("query-version")
    assert p.stderr.startswith("GenericError: ")


def test_interactive_ctrl_c_while_server_hangs(tmp_path):
    """A server that never answers: Ctrl-C ends blockctl."""
    greeting = (b'{"QMP": {"version": {"qemu": {"major": 10, "minor": 1, '
                b'"micro": 0}, "package": ""}, "capabilities": []}}\r\n')
    path = str(tmp_path / "hang.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    conns = []

    def serve():
        c, _ = srv.accept()
        conns.append(c)
        c.sendall(greeting)
        buf = b""
        while True:                         # answer all but query-version
            data = c.recv(4096)
            if not data:
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if b"query-version" not in line:
                    c.sendall(b'{"return": []}\r\n')
    threading.Thread(target=serve, daemon=True).start()
    sh = Pty(path, tmp_path)
    try:
        sh.read_until("(blockd) ")
        sh.send("query-version\r")
        sh.read_until("query-version")
        time.sleep(0.3)
        assert sh.proc.poll() is None       # still waiting for a reply
        sh.send("\x03")
        assert sh.proc.wait(10) == -signal.SIGINT
    finally:
        sh.close()
        srv.close()
        for c in conns:
            c.close()
