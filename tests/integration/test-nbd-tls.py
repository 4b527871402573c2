"""The NBD server with TLS (nbd-server-start tls-creds/tls-authz): real
clients through TLS (python3-libnbd, nbdinfo, qemu-img, qemu-io), every
kind of refusal followed by a good client that is served, the plaintext
injection probe (CVE-2021-3716), clients that stall or send garbage in
the TLS handshake, and authz-listfile edited while the daemon runs.

Certificates are made for each test module with certtool, PSK keys with
psktool (gnutls-bin)."""
import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import time

import nbd
import pytest

import nbdraw
from conftest import QmpError, requires

CLIENT1_DN = "O=blockd-test,CN=client1"   # gnutls_x509_crt_get_dn, as QEMU
CLIENT2_DN = "O=blockd-test,CN=client2"
PATTERN = bytes(range(256)) * 256          # the first 64 KiB of the disk


def certtool(*args):
    subprocess.run(["certtool"] + list(args), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_key(path):
    certtool("--generate-privkey", "--key-type=ecdsa", "--outfile", path)


def make_cert(d, name, tmpl, key, ca=None):
    """Certificate name-cert.pem for key, signed by ca (a (cert, key)
    pair) or self-signed."""
    t = os.path.join(d, name + ".tmpl")
    with open(t, "w") as f:
        f.write(tmpl + "expiration_days = 3\n")
    out = os.path.join(d, name + "-cert.pem")
    if ca:
        certtool("--generate-certificate", "--load-privkey", key,
                 "--load-ca-certificate", ca[0], "--load-ca-privkey", ca[1],
                 "--template", t, "--outfile", out)
    else:
        certtool("--generate-self-signed", "--load-privkey", key,
                 "--template", t, "--outfile", out)
    return out


def client_dir(base, name, ca_cert, cert=None, key=None):
    """A client credentials directory in QEMU's (and libnbd's) layout."""
    d = os.path.join(base, name)
    os.makedirs(d)
    shutil.copy(ca_cert, os.path.join(d, "ca-cert.pem"))
    if cert:
        shutil.copy(cert, os.path.join(d, "client-cert.pem"))
        shutil.copy(key, os.path.join(d, "client-key.pem"))
    return d


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """x509 directories (srv, cli, cli2, rogue, nocert) and PSK files."""
    for p in ("certtool", "psktool"):
        if shutil.which(p) is None:
            pytest.skip("%s is not installed (gnutls-bin)" % p)
    base = str(tmp_path_factory.mktemp("pki"))
    w = os.path.join(base, "work")
    os.makedirs(w)
    out = {}

    ca_key = os.path.join(w, "ca-key.pem")
    make_key(ca_key)
    ca = make_cert(w, "ca", 'cn = "blockd test CA"\nca\ncert_signing_key\n',
                   ca_key)
    rogue_key = os.path.join(w, "rogue-ca-key.pem")
    make_key(rogue_key)
    rogue = make_cert(w, "rogue-ca",
                      'cn = "another CA"\nca\ncert_signing_key\n', rogue_key)

    srv_key = os.path.join(w, "server-key.pem")
    make_key(srv_key)
    srv_cert = make_cert(w, "server",
                         'cn = "localhost"\ndns_name = "localhost"\n'
                         'ip_address = "127.0.0.1"\ntls_www_server\n'
                         'signing_key\nencryption_key\n', srv_key,
                         (ca, ca_key))
    d = os.path.join(base, "srv")
    os.makedirs(d)
    shutil.copy(ca, os.path.join(d, "ca-cert.pem"))
    shutil.copy(srv_cert, os.path.join(d, "server-cert.pem"))
    shutil.copy(srv_key, os.path.join(d, "server-key.pem"))
    out["srv"] = d

    client_tmpl = ('cn = "%s"\norganization = "blockd-test"\n'
                   'tls_www_client\nsigning_key\nencryption_key\n')
    for name, signer in (("client1", (ca, ca_key)),
                         ("client2", (ca, ca_key)),
                         ("rogue", (rogue, rogue_key))):
        key = os.path.join(w, name + "-key.pem")
        make_key(key)
        cn = "client1" if name == "rogue" else name
        cert = make_cert(w, name, client_tmpl % cn, key, signer)
        out[name] = client_dir(base, name, ca, cert, key)
    out["nocert"] = client_dir(base, "nocert", ca)
    out["ca"] = ca

    # PSK: the server's keys.psk names alice and bob; each client has
    # its own file, and mallory has alice's name with another key.
    d = os.path.join(base, "psksrv")
    os.makedirs(d)
    keys = os.path.join(d, "keys.psk")
    for user in ("alice", "bob"):
        subprocess.run(["psktool", "-u", user, "-p", keys], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out["psksrv"] = d
    lines = open(keys).read().split()
    for line in lines:
        user = line.split(":")[0]
        p = os.path.join(base, user + ".psk")
        with open(p, "w") as f:
            f.write(line + "\n")
        out[user] = p
    wrong = os.path.join(base, "wrong.psk")
    with open(wrong, "w") as f:
        f.write("alice:" + "00" * 32 + "\n")
    out["wrong"] = wrong
    return out


def start(blockd, tmp_path, creds, authz=None, writable=False, **server):
    """A 1 MiB disk (PATTERN first) exported as "disk" by a server that
    requires TLS with creds (object-add properties, id "tls0") and
    optionally authz (id "az0").  Returns the socket path."""
    img = str(tmp_path / "disk.raw")
    with open(img, "wb") as f:
        f.write(PATTERN)
        f.truncate(1 << 20)
    blockd.cmd("object-add", dict({"id": "tls0", "endpoint": "server"},
                                  **creds))
    args = {"tls-creds": "tls0"}
    if authz is not None:
        blockd.cmd("object-add", dict({"id": "az0"}, **authz))
        args["tls-authz"] = "az0"
    blockd.cmd("blockdev-add", driver="file", node_name="f0", filename=img)
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    args.update({k.replace("_", "-"): v for k, v in server.items()})
    blockd.cmd("nbd-server-start",
               dict({"addr": {"type": "unix", "data": {"path": sock}}},
                    **args))
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                    "node-name": "f0", "name": "disk",
                                    "writable": writable})
    return sock


def x509(pki, verify_peer=True):
    return {"qom-type": "tls-creds-x509", "dir": pki["srv"],
            "verify-peer": verify_peer}


def psk(pki):
    return {"qom-type": "tls-creds-psk", "dir": pki["psksrv"]}


def libnbd(sock, certs=None, psk_file=None, user=None):
    """A libnbd handle connected with TLS required; raises nbd.Error
    when the server refuses."""
    h = nbd.NBD()
    h.set_tls(nbd.TLS_REQUIRE)
    if certs:
        h.set_tls_certificates(certs)
    if psk_file:
        h.set_tls_psk_file(psk_file)
    if user:
        h.set_tls_username(user)
    h.set_export_name("disk")
    h.connect_unix(sock)
    return h


def served(sock, **kw):
    """A good client reads the disk through TLS."""
    h = libnbd(sock, **kw)
    assert h.get_size() == 1 << 20
    assert h.pread(len(PATTERN), 0) == PATTERN
    h.shutdown()
    return True


def refused(sock, **kw):
    with pytest.raises(nbd.Error):
        h = libnbd(sock, **kw)
        h.pread(512, 0)


def stats(blockd):
    return blockd.cmd("query-nbd-server")


def wait_for(cond, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise TimeoutError(what)


def tls_context(certs):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(os.path.join(certs, "ca-cert.pem"))
    ctx.load_cert_chain(os.path.join(certs, "client-cert.pem"),
                        os.path.join(certs, "client-key.pem"))
    return ctx


def raw_starttls(sock, extra=b""):
    """A hand-driven client that sends NBD_OPT_STARTTLS (followed in the
    same write by extra) and reads its ACK in clear."""
    r = nbdraw.Raw(sock)
    r.s.sendall(struct.pack(">QII", nbdraw.IHAVEOPT, nbdraw.OPT_STARTTLS,
                            0) + extra)
    assert r.replies(nbdraw.OPT_STARTTLS) == [(nbdraw.REP_ACK, b"")]
    return r


# ---- real clients through TLS --------------------------------------------


def test_x509_real_clients(blockd, tmp_path, pki):
    sock = start(blockd, tmp_path, x509(pki))
    assert served(sock, certs=pki["client1"])
    st = stats(blockd)
    assert st["tls-creds"] == "tls0"
    assert st["tls-sessions"] == 1

    requires("nbdinfo")
    out = subprocess.run(
        ["nbdinfo", "--list", "--json",
         "nbds+unix:///?socket=%s&tls-certificates=%s"
         % (sock, pki["client1"])],
        check=True, stdout=subprocess.PIPE, timeout=60).stdout
    names = [e["export-name"] for e in json.loads(out)["exports"]]
    assert names == ["disk"]

    requires("qemu-io", "qemu-img")
    obj = "tls-creds-x509,id=c0,endpoint=client,dir=%s" % pki["client1"]
    opts = ("driver=nbd,server.type=unix,server.path=%s,export=disk,"
            "tls-creds=c0,tls-hostname=localhost" % sock)
    r = subprocess.run(["qemu-io", "-r", "--object", obj, "--image-opts", opts,
                        "-c", "read -P 0x00 65536 4096",
                        "-c", "read -P 0x07 7 1"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=60)
    assert r.returncode == 0 and b"Pattern verification failed" \
        not in r.stdout, r.stdout
    copy = str(tmp_path / "copy.raw")
    subprocess.run(["qemu-img", "convert", "--object", obj, "--image-opts",
                    opts, "-O", "raw", copy], check=True, timeout=60)
    with open(copy, "rb") as f:
        data = f.read()
    assert data[:len(PATTERN)] == PATTERN and len(data) == 1 << 20
    assert stats(blockd)["tls-sessions"] >= 4


def test_big_writes_and_reads_through_tls(blockd, tmp_path, pki):
    """Payloads far bigger than a TLS record, several in flight: what
    the server receives straight into request buffers and sends from
    them arrives whole."""
    sock = start(blockd, tmp_path, x509(pki), writable=True)
    h = libnbd(sock, certs=pki["client1"])
    data = os.urandom(1 << 20)
    cookies = [h.aio_pwrite(data[i:i + (256 << 10)], i)
               for i in range(0, len(data), 256 << 10)]
    left = set(cookies)
    while left:
        left = {c for c in left if not h.aio_command_completed(c)}
        if left:
            h.poll(10000)
    h.flush()
    assert h.pread(len(data), 0) == data
    h.shutdown()
    with open(str(tmp_path / "disk.raw"), "rb") as f:
        assert f.read(len(data)) == data


def test_psk_real_client(blockd, tmp_path, pki):
    sock = start(blockd, tmp_path, psk(pki))
    assert served(sock, psk_file=pki["alice"], user="alice")
    assert served(sock, psk_file=pki["bob"], user="bob")
    requires("nbdinfo")
    out = subprocess.run(
        ["nbdinfo", "--size",
         "nbds+unix://alice@/disk?socket=%s&tls-psk-file=%s"
         % (sock, pki["alice"])],
        check=True, stdout=subprocess.PIPE, timeout=60).stdout
    assert int(out) == 1 << 20


# ---- plaintext and the injection probe -----------------------------------


def test_plaintext_client_gets_tls_reqd(blockd, tmp_path, pki):
    sock = start(blockd, tmp_path, x509(pki))
    r = nbdraw.Raw(sock)
    for opt, data in ((nbdraw.OPT_LIST, b""),
                      (nbdraw.OPT_GO, struct.pack(">I4sH", 4, b"disk", 0)),
                      (nbdraw.OPT_INFO, struct.pack(">I4sH", 4, b"disk", 0)),
                      (nbdraw.OPT_STRUCTURED, b""),
                      (nbdraw.OPT_LIST_META,
                       struct.pack(">I4sI", 4, b"disk", 0)),
                      (99, b"")):
        reps = r.opt(opt, data)
        assert len(reps) == 1, reps
        assert reps[0][0] == nbdraw.ERR + 5, reps      # NBD_REP_ERR_TLS_REQD
        assert b"disk" not in reps[0][1]
    # EXPORT_NAME has no error reply: the server hangs up, saying nothing.
    r.send_opt(nbdraw.OPT_EXPORT_NAME, b"disk")
    r.s.settimeout(10)
    got = b""
    while True:
        chunk = r.s.recv(4096)
        if not chunk:
            break
        got += chunk
    assert got == b""
    # ABORT is answered in clear.
    r = nbdraw.Raw(sock)
    assert r.opt(nbdraw.OPT_ABORT) == [(nbdraw.REP_ACK, b"")]
    # A real client without TLS gets nothing either.
    h = nbd.NBD()
    h.set_tls(nbd.TLS_DISABLE)
    with pytest.raises(nbd.Error):
        h.connect_unix(sock)
    assert stats(blockd)["tls-required-refusals"] >= 7
    assert served(sock, certs=pki["client1"])


def test_starttls_injection_probe(blockd, tmp_path, pki):
    """STARTTLS and plaintext options in one write: after the TLS
    handshake the injected options are never answered and never
    applied (CVE-2021-3716)."""
    sock = start(blockd, tmp_path, x509(pki))
    inject = struct.pack(">QII", nbdraw.IHAVEOPT, nbdraw.OPT_STRUCTURED, 0) \
        + struct.pack(">QII", nbdraw.IHAVEOPT, nbdraw.OPT_LIST, 0)
    r = raw_starttls(sock, inject)
    r.s = tls_context(pki["client1"]).wrap_socket(
        r.s, server_hostname="localhost")
    # The first reply inside TLS answers what we send inside TLS.  Were
    # the injected STRUCTURED_REPLY applied, SET_META_CONTEXT would be
    # accepted; were it still queued, its ACK would come first.
    data = struct.pack(">I4sII15s", 4, b"disk", 1, 15, b"base:allocation")
    r.send_opt(nbdraw.OPT_SET_META, data)
    opt, rtype, msg = r.reply()
    assert opt == nbdraw.OPT_SET_META, (opt, rtype, msg)
    assert rtype == nbdraw.ERR_INVALID, (rtype, msg)
    assert b"structured" in msg
    reps = r.opt(nbdraw.OPT_LIST)
    assert [t for t, _ in reps] == [nbdraw.REP_SERVER, nbdraw.REP_ACK]
    assert reps[0][1][4:] == b"disk"
    assert r.opt(nbdraw.OPT_STRUCTURED) == [(nbdraw.REP_ACK, b"")]
    # A second STARTTLS inside TLS is invalid.
    assert r.opt(nbdraw.OPT_STARTTLS)[0][0] == nbdraw.ERR_INVALID
    r.go(b"disk")
    r.request(nbdraw.CMD_READ, 0, 4096)
    rep = r.chunks(4096)
    data = b"".join(d[8:] if t == nbdraw.T_DATA else b"" for t, d in rep)
    assert data == PATTERN[:4096]
    assert "dropping 32 bytes sent in clear" in blockd.logtext()


# ---- refusals: each followed by a good client ----------------------------


def test_x509_refusals(blockd, tmp_path, pki):
    sock = start(blockd, tmp_path, x509(pki))
    refused(sock, certs=pki["rogue"])        # another CA's certificate
    assert served(sock, certs=pki["client1"])
    refused(sock, certs=pki["nocert"])       # no certificate, verify-peer
    assert served(sock, certs=pki["client2"])
    st = stats(blockd)
    assert st["tls-sessions"] == 2
    assert st["tls-peer-refused"] + st["tls-handshake-failures"] == 2


def test_authz_simple_mismatch(blockd, tmp_path, pki):
    sock = start(blockd, tmp_path, x509(pki),
                 {"qom-type": "authz-simple", "identity": CLIENT1_DN})
    refused(sock, certs=pki["client2"])
    assert served(sock, certs=pki["client1"])
    st = stats(blockd)
    assert st["tls-authz"] == "az0"
    assert st["tls-authz-denied"] == 1 and st["tls-sessions"] == 1
    assert "'%s' is not authorized" % CLIENT2_DN in blockd.logtext()


def test_authz_list_glob_and_deny(blockd, tmp_path, pki):
    rules = [{"match": CLIENT2_DN, "policy": "deny"},
             {"match": "O=blockd-test,CN=client*", "policy": "allow",
              "format": "glob"}]
    sock = start(blockd, tmp_path, x509(pki),
                 {"qom-type": "authz-list", "policy": "deny",
                  "rules": rules})
    refused(sock, certs=pki["client2"])
    assert served(sock, certs=pki["client1"])
    assert stats(blockd)["tls-authz-denied"] == 1


def test_psk_refusals(blockd, tmp_path, pki):
    sock = start(blockd, tmp_path, psk(pki),
                 {"qom-type": "authz-list", "policy": "deny",
                  "rules": [{"match": "alice", "policy": "allow"}]})
    refused(sock, psk_file=pki["bob"], user="bob")     # not in the authz
    assert served(sock, psk_file=pki["alice"], user="alice")
    refused(sock, psk_file=pki["wrong"], user="alice")  # wrong key
    assert served(sock, psk_file=pki["alice"], user="alice")
    st = stats(blockd)
    assert st["tls-authz-denied"] == 1
    assert st["tls-handshake-failures"] == 1
    assert "'bob' is not authorized" in blockd.logtext()


def test_authz_listfile_edited_while_running(blockd, tmp_path, pki):
    path = str(tmp_path / "authz.json")

    def write(rules):
        with open(path, "w") as f:
            json.dump({"policy": "deny", "rules": rules}, f)
        # A new mtime even on a coarse clock.
        st = os.stat(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2 * 10**9))

    write([{"match": CLIENT1_DN, "policy": "allow"}])
    sock = start(blockd, tmp_path, x509(pki),
                 {"qom-type": "authz-listfile", "filename": path,
                  "refresh": True})
    assert served(sock, certs=pki["client1"])
    refused(sock, certs=pki["client2"])
    write([{"match": CLIENT2_DN, "policy": "allow"}])
    refused(sock, certs=pki["client1"])
    assert served(sock, certs=pki["client2"])


# ---- hostile handshakes ---------------------------------------------------


def test_stall_and_garbage_in_tls_handshake(blockd, tmp_path, pki):
    sock = start(blockd, tmp_path, x509(pki), handshake_max_seconds=3)
    # One client stops halfway through its ClientHello ...
    stall = raw_starttls(sock)
    inc, outg = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = tls_context(pki["client1"]).wrap_bio(inc, outg,
                                               server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    hello = outg.read()
    stall.s.sendall(hello[:len(hello) // 2])
    # ... another sends garbage instead of TLS ...
    junk = raw_starttls(sock)
    junk.s.sendall(b"\x16\x03\x01\x00\x05hello, this is not TLS" * 8)
    assert junk.closed(timeout=30)
    # ... and a good client is served meanwhile.
    assert served(sock, certs=pki["client1"])
    assert stats(blockd)["tls-handshake-failures"] >= 1
    # The stalled one is dropped by the handshake limit.
    assert stall.closed(timeout=60)
    assert "did not finish the handshake in time" in blockd.logtext()
    assert served(sock, certs=pki["client1"])
    wait_for(lambda: stats(blockd)["clients"] == 0, what="clients gone")


# ---- objects and the server -----------------------------------------------


def test_objects_pinned_while_server_runs(blockd, tmp_path, pki):
    start(blockd, tmp_path, x509(pki),
          {"qom-type": "authz-simple", "identity": CLIENT1_DN})
    for oid in ("tls0", "az0"):
        with pytest.raises(QmpError) as e:
            blockd.cmd("object-del", id=oid)
        assert "in use" in e.value.desc
    blockd.cmd("nbd-server-stop")
    blockd.cmd("object-del", id="az0")
    blockd.cmd("object-del", id="tls0")


def test_server_start_errors(blockd, tmp_path, pki):
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    addr = {"type": "unix", "data": {"path": sock}}
    with pytest.raises(QmpError) as e:
        blockd.cmd("nbd-server-start", addr=addr, tls_creds="nope")
    assert "No TLS credentials with id 'nope'" in e.value.desc
    blockd.cmd("object-add", {"qom-type": "tls-creds-x509", "id": "cli",
                              "endpoint": "client",
                              "dir": pki["client1"]})
    with pytest.raises(QmpError) as e:
        blockd.cmd("nbd-server-start", addr=addr, tls_creds="cli")
    assert "server endpoint" in e.value.desc
    blockd.cmd("object-add", dict({"id": "tls0", "endpoint": "server"},
                                  **x509(pki)))
    with pytest.raises(QmpError) as e:
        blockd.cmd("nbd-server-start", addr=addr, tls_creds="tls0",
                   tls_authz="nope")
    assert "nope" in e.value.desc
    with pytest.raises(QmpError):
        blockd.cmd("nbd-server-start", addr=addr, tls_authz="az0")
    # Nothing stayed pinned by the failed starts.
    blockd.cmd("object-del", id="tls0")
    blockd.cmd("object-del", id="cli")
