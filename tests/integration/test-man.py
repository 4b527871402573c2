"""The man pages: each renders with groff -ww and man -l without a
warning, blockd-qmp(7) lists exactly the commands of the built daemon,
and every example in them runs (a shell block with bash in a scratch
directory holding disk.img and disk.qcow2; a configuration block with
blockd --config)."""
import glob
import json
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import BLOCKD, BLOCKD_NBD, BUILDDIR, SRCDIR, requires

MANDIR = os.path.join(BUILDDIR, "docs", "man")
PAGES = ["blockd.8", "blockd-nbd.8", "blockctl.1", "blockd-qmp.7"]


def page(name):
    path = os.path.join(MANDIR, name)
    if not os.path.exists(path):
        pytest.skip("%s was not built (rst2man missing: install "
                    "python3-docutils)" % path)
    return path


@pytest.mark.parametrize("name", PAGES)
def test_groff_clean(name):
    requires("groff")
    r = subprocess.run(["groff", "-ww", "-man", "-z", page(name)],
                       capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stderr == b"", r.stderr.decode()


@pytest.mark.parametrize("name", PAGES)
def test_man_clean(name):
    requires("man")
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8")
    r = subprocess.run(["man", "--warnings", "-l", page(name)],
                       capture_output=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stderr == b"", r.stderr.decode()
    text = r.stdout.decode()
    assert "NAME" in text and "SEE ALSO" in text


def test_qmp_page_matches_daemon(blockd):
    """blockd-qmp(7) is generated from the schema: it has a section for
    each command the daemon accepts, and none other."""
    src = os.path.join(BUILDDIR, "schema", "blockd-qmp.7.rst")
    text = open(src).read()
    commands = text.split("\nCOMMANDS\n========\n")[1].split(
        "\nEVENTS\n======\n")[0]
    titles = re.findall(r"^(\S+)\n-+\n", commands, re.M)
    have = sorted(c["name"] for c in blockd.cmd("query-commands"))
    assert sorted(titles) == have
    page("blockd-qmp.7")


def examples(rst):
    """The literal blocks of a page's EXAMPLES and CONFIGURATION
    sections, as text."""
    text = open(rst).read()
    blocks = []
    for section in ("EXAMPLES", "CONFIGURATION"):
        m = re.search(r"^%s\n=+\n(.*?)(?=^[A-Z ]+\n=+\n|\Z)" % section,
                      text, re.M | re.S)
        if not m:
            continue
        lines = m.group(1).split("\n")
        i = 0
        while i < len(lines):
            if lines[i].rstrip().endswith("::"):
                i += 1
                while i < len(lines) and lines[i].strip() == "":
                    i += 1
                block = []
                while i < len(lines) and (lines[i].startswith("    ") or
                                          lines[i].strip() == ""):
                    block.append(lines[i][4:])
                    i += 1
                blocks.append((section, "\n".join(block).strip() + "\n"))
            else:
                i += 1
    return blocks


def stop_pidfiles(d):
    for pf in glob.glob(os.path.join(d, "*.pid")):
        try:
            pid = int(open(pf).read())
        except (OSError, ValueError):
            continue
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        for _ in range(1000):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.01)


ALL_EXAMPLES = [(os.path.basename(p), s, b)
                for p in sorted(glob.glob(os.path.join(SRCDIR, "docs", "man",
                                                       "*.rst")))
                for (s, b) in examples(p)]


def test_pages_have_examples():
    pages = {p for (p, _, _) in ALL_EXAMPLES}
    assert {"blockd.8.rst", "blockctl.1.rst", "blockd-nbd.8.rst"} <= pages


@pytest.mark.parametrize("rst,section,block", ALL_EXAMPLES,
                         ids=["%s-%d" % (e[0], i)
                              for i, e in enumerate(ALL_EXAMPLES)])
def test_example_runs(rst, section, block, tmp_path):
    requires("qemu-img", "nbdinfo", "curl")
    d = str(tmp_path)
    with open(os.path.join(d, "disk.img"), "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2",
                    os.path.join(d, "disk.qcow2"), "64M"], check=True)
    env = dict(os.environ,
               PATH=os.path.dirname(BLOCKD) + ":" + os.environ["PATH"])
    try:
        if block.startswith("#") or block.startswith("{"):
            # A configuration file: blockd runs it, then serves.
            with open(os.path.join(d, "example.conf"), "w") as f:
                f.write(block)
            script = ("blockd --daemonize --pidfile blockd.pid "
                      "--config example.conf\n"
                      "nbdinfo --size 'nbd+unix:///d0?socket=nbd.sock'\n")
        else:
            script = block
        r = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script],
                           cwd=d, env=env, capture_output=True, timeout=300)
        assert r.returncode == 0, ("example failed:\n%s\nstdout:\n%s\n"
                                   "stderr:\n%s" % (script,
                                                    r.stdout.decode(),
                                                    r.stderr.decode()))
    finally:
        stop_pidfiles(d)


def test_completion(tmp_path):
    """The installed bash completion knows the commands, their
    arguments and the options."""
    comp = os.path.join(BUILDDIR, "client", "blockctl")
    if not os.path.exists(comp):
        pytest.skip("completion not built")

    def complete(*words):
        script = ('source %s\nCOMP_WORDS=(%s)\nCOMP_CWORD=%d\n_blockctl\n'
                  'printf "%%s\\n" "${COMPREPLY[@]}"\n'
                  % (comp, " ".join("'%s'" % w for w in words),
                     len(words) - 1))
        r = subprocess.run(["bash", "-c", script], capture_output=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        return set(r.stdout.decode().split())

    assert complete("blockctl", "-s", "q.sock", "blockdev-a") == \
        {"blockdev-add"}
    assert "query-named-block-nodes" in complete("blockctl", "query-n")
    assert "save-config" in complete("blockctl", "")
    assert "node-name=" in complete("blockctl", "-s", "q", "blockdev-add",
                                    "driver=file", "node")
    assert "file.filename=" not in complete("blockctl", "query-version", "")
    assert complete("blockctl", "--so") == {"--socket"}
    assert complete("blockctl", "list", "--h") == {"--host", "--help"}
    # Every command of the schema is offered.
    cmds = json.load(open(os.path.join(BUILDDIR, "schema",
                                       "qmp-commands.json")))
    assert set(cmds) <= complete("blockctl", "")


def test_blockd_nbd_page_has_every_option():
    """Every option blockd-nbd --help lists has an entry in its page."""
    helptext = subprocess.run([BLOCKD_NBD, "--help"], capture_output=True,
                              text=True, timeout=60, check=True).stdout
    longs = set(re.findall(r"^\s+(?:-\w, )?(--[a-z-]+)", helptext, re.M))
    assert "--socket" in longs and "--print-qmp" in longs
    rst = open(os.path.join(SRCDIR, "docs", "man",
                            "blockd-nbd.8.rst")).read()
    # The terms of the OPTIONS definition list: lines starting "**-".
    entries = set(re.findall(r"\*\*(--[a-z-]+)\*\*",
                             "\n".join(line for line in rst.splitlines()
                                       if line.startswith("**-"))))
    missing = sorted(o for o in longs if o not in entries)
    assert not missing, missing
