"""meson install into a DESTDIR puts the programs, man pages, systemd
units, default configuration, bash completion and docs at the usual
paths (for the build's prefix), and the installed units name the
installed programs."""
import os
import signal
import subprocess

import pytest

from conftest import BUILDDIR, requires


def introspect(what):
    import json
    r = subprocess.run(["meson", "introspect", what, BUILDDIR],
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_install_file_list(tmp_path):
    requires("meson")
    opts = {o["name"]: o["value"] for o in introspect("--buildoptions")}
    prefix = opts["prefix"]
    sysconf = opts["sysconfdir"]
    if not os.path.isabs(sysconf):
        sysconf = os.path.join(prefix, sysconf)
    mandir = os.path.join(prefix, opts["mandir"])
    if not os.path.exists(os.path.join(BUILDDIR, "docs", "man",
                                       "blockd.8")):
        pytest.skip("man pages not built (rst2man missing: install "
                    "python3-docutils)")
    dest = str(tmp_path / "dest")
    r = subprocess.run(["meson", "install", "-C", BUILDDIR, "--no-rebuild",
                        "--destdir", dest, "--quiet"],
                       capture_output=True, timeout=600)
    assert r.returncode == 0, r.stderr.decode()
    got = set()
    for root, _, files in os.walk(dest):
        for f in files:
            got.add("/" + os.path.relpath(os.path.join(root, f), dest))

    bindir = os.path.join(prefix, opts["bindir"])
    datadir = os.path.join(prefix, opts["datadir"])
    units = os.path.join(prefix, "lib", "systemd", "system")
    want = {
        bindir + "/blockd",
        bindir + "/blockctl",
        mandir + "/man8/blockd.8",
        mandir + "/man8/blockd-nbd.8",
        mandir + "/man1/blockctl.1",
        mandir + "/man7/blockd-qmp.7",
        units + "/blockd.service",
        units + "/blockd.socket",
        units + "/blockd-nbd@.service",
        sysconf + "/blockd/blockd.conf",
        datadir + "/bash-completion/completions/blockctl",
        datadir + "/doc/blockd/README.md",
        datadir + "/doc/blockd/qmp-reference.md",
        datadir + "/doc/blockd/architecture.md",
        os.path.join(prefix, opts["libdir"], "blockd", "crypto-tls.so"),
    }
    missing = want - got
    assert not missing, "not installed: %s" % sorted(missing)
    # Nothing strays outside the usual places.
    # Block driver modules (block-rbd.so) live in $libdir/blockd.
    allowed = (bindir + "/", mandir + "/", units + "/", sysconf + "/blockd/",
               datadir + "/bash-completion/", datadir + "/doc/blockd/",
               os.path.join(prefix, opts["libdir"], "blockd") + "/")
    stray = [f for f in got if not f.startswith(allowed)]
    assert not stray, "unexpected: %s" % sorted(stray)
    # Programs are executable; the units run the installed blockd with
    # the installed configuration.
    assert os.access(dest + bindir + "/blockd", os.X_OK)
    service = open(dest + units + "/blockd.service").read()
    assert "ExecStart=%s/blockd " % bindir in service
    assert "--config %s/blockd/blockd.conf" % sysconf in service
    assert "@bindir@" not in service and "@sysconfdir@" not in service
    # The installed man page is the built one.
    r = subprocess.run(["groff", "-ww", "-man", "-z",
                        dest + mandir + "/man8/blockd.8"],
                       capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stderr == b""
    # The installed blockd-nbd loads the installed TLS module (it looks
    # in $libdir/blockd; here under DESTDIR, so named by
    # BLOCKD_MODULE_DIR): --fork returns 0 once it listens with TLS.
    moddir = dest + os.path.join(prefix, opts["libdir"], "blockd")
    (tmp_path / "keys.psk").write_text("alice:0123456789abcdef\n")
    img = tmp_path / "img.raw"
    img.write_bytes(b"\0" * 65536)
    pidfile = tmp_path / "pid"
    sock = "/tmp/bti-%d.sock" % os.getpid()
    r = subprocess.run(
        [dest + bindir + "/blockd-nbd", "--fork", "--pid-file",
         str(pidfile), "--object",
         "tls-creds-psk,id=t0,endpoint=server,dir=%s" % tmp_path,
         "--tls-creds", "t0", "-t", "-f", "raw", "-k", sock, str(img)],
        env=dict(os.environ, BLOCKD_MODULE_DIR=moddir),
        capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    pid = int(pidfile.read_text())
    with open("/proc/%d/maps" % pid) as f:
        assert moddir + "/crypto-tls.so" in f.read()
    os.kill(pid, signal.SIGTERM)
