"""User-creatable objects (object-add, object-del, query-objects,
--object): secret, tls-creds-x509, tls-creds-psk, tls-creds-anon,
authz-simple, authz-list, authz-listfile.  Every file is read and checked
at object-add, so each bad file is an error there, in clear words, and
the id stays free; an object in use cannot be deleted.  Certificates
are made here with certtool, PSK keys with psktool."""
import base64
import json
import os
import shutil
import subprocess

import pytest

import pki
from conftest import BLOCKD, QmpError


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    pki.require_tools()
    return pki.Ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def srv_dir(ca, tmp_path_factory):
    return ca.x509_dir(tmp_path_factory.mktemp("srv"), "server")


def add(d, qom_type, id, **props):
    args = {"qom-type": qom_type, "id": id}
    args.update({k.replace("_", "-"): v for k, v in props.items()})
    return d.cmd("object-add", args)


def add_fails(d, qom_type, id, prefix, **props):
    """object-add fails with a GenericError starting with prefix, and id
    stays free."""
    with pytest.raises(QmpError) as e:
        add(d, qom_type, id, **props)
    assert e.value.cls == "GenericError"
    assert e.value.desc.startswith(prefix), e.value.desc
    assert id not in ids(d)
    return e.value.desc


def ids(d):
    return [o["id"] for o in d.cmd("query-objects")]


# ---- tls-creds-x509 ---------------------------------------------------

def test_x509_server_and_client(blockd, ca, srv_dir, tmp_path):
    add(blockd, "tls-creds-x509", "t0", dir=srv_dir, endpoint="server")
    cli = ca.x509_dir(tmp_path / "cli", "client", cn="client1")
    add(blockd, "tls-creds-x509", "t1", dir=cli, endpoint="client")
    # a client needs no certificate of its own
    bare = ca.x509_dir(tmp_path / "bare", "client", with_cert=False)
    add(blockd, "tls-creds-x509", "t2", dir=bare)       # endpoint=client
    add(blockd, "tls-creds-x509", "t3", dir=srv_dir, endpoint="server",
        verify_peer=False, priority="NORMAL:-VERS-TLS1.0")
    assert blockd.cmd("query-objects") == [
        {"id": "t0", "qom-type": "tls-creds-x509"},
        {"id": "t1", "qom-type": "tls-creds-x509"},
        {"id": "t2", "qom-type": "tls-creds-x509"},
        {"id": "t3", "qom-type": "tls-creds-x509"}]


def test_x509_missing_files(blockd, srv_dir, tmp_path):
    add_fails(blockd, "tls-creds-x509", "t0", "Missing 'dir' property value",
              endpoint="server")
    nodir = str(tmp_path / "nope")
    add_fails(blockd, "tls-creds-x509", "t0",
              "Unable to access credentials %s/ca-cert.pem: No such file"
              % nodir, dir=nodir, endpoint="server")
    for missing in ("server-cert.pem", "server-key.pem"):
        d = tmp_path / ("no-" + missing)
        shutil.copytree(srv_dir, d)
        os.unlink(d / missing)
        add_fails(blockd, "tls-creds-x509", "t0",
                  "Unable to access credentials %s/%s: No such file"
                  % (d, missing), dir=str(d), endpoint="server")
    # a client certificate without its key
    d = tmp_path / "half"
    os.makedirs(d)
    shutil.copy(os.path.join(srv_dir, "ca-cert.pem"), d)
    shutil.copy(os.path.join(srv_dir, "server-cert.pem"),
                d / "client-cert.pem")
    add_fails(blockd, "tls-creds-x509", "t0", "Unable to access "
              "credentials %s/client-key.pem" % d, dir=str(d))


def test_x509_key_not_a_file(blockd, srv_dir, tmp_path):
    d = tmp_path / "dirkey"
    shutil.copytree(srv_dir, d)
    os.unlink(d / "server-key.pem")
    os.mkdir(d / "server-key.pem")
    add_fails(blockd, "tls-creds-x509", "t0", "Unable to access credentials "
              "%s/server-key.pem: not a regular file" % d, dir=str(d),
              endpoint="server")


def test_x509_unreadable_key(blockd, srv_dir, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("running as root: a mode 000 file is still readable")
    d = tmp_path / "noperm"
    shutil.copytree(srv_dir, d)
    os.chmod(d / "server-key.pem", 0)
    add_fails(blockd, "tls-creds-x509", "t0",
              "Unable to access credentials %s/server-key.pem: Permission"
              % d, dir=str(d), endpoint="server")


def test_x509_bad_key(blockd, srv_dir, tmp_path):
    d = tmp_path / "garbage"
    shutil.copytree(srv_dir, d)
    (d / "server-key.pem").write_text("-----BEGIN PRIVATE KEY-----\n"
                                      "bm90IGEga2V5\n"
                                      "-----END PRIVATE KEY-----\n")
    desc = add_fails(blockd, "tls-creds-x509", "t0", "Cannot load "
                     "certificate %s/server-cert.pem & key %s/server-key.pem:"
                     % (d, d), dir=str(d), endpoint="server")
    # the key of another certificate
    d2 = tmp_path / "mismatch"
    shutil.copytree(srv_dir, d2)
    pki.make_key(d2 / "server-key.pem")
    desc = add_fails(blockd, "tls-creds-x509", "t0", "Cannot load "
                     "certificate", dir=str(d2), endpoint="server")
    assert "do not match" in desc or "mismatch" in desc.lower(), desc


def test_x509_encrypted_key(blockd, ca, tmp_path):
    d = ca.x509_dir(tmp_path / "enc", "server", password="hunter2")
    assert "ENCRYPTED" in (tmp_path / "enc" / "server-key.pem").read_text()
    add_fails(blockd, "tls-creds-x509", "t0", "Cannot load certificate",
              dir=d, endpoint="server")                   # no password
    add(blockd, "secret", "wrong", data="hunter3")
    add_fails(blockd, "tls-creds-x509", "t0", "Cannot load certificate",
              dir=d, endpoint="server", passwordid="wrong")
    add_fails(blockd, "tls-creds-x509", "t0", "No secret with id 'nope'",
              dir=d, endpoint="server", passwordid="nope")
    add(blockd, "secret", "pw", data=base64.b64encode(b"hunter2").decode(),
        format="base64")
    add(blockd, "tls-creds-x509", "t0", dir=d, endpoint="server",
        passwordid="pw")
    # the key's secret is in use while the credentials exist
    with pytest.raises(QmpError) as e:
        blockd.cmd("object-del", id="pw")
    assert e.value.desc.startswith(
        "object 'pw' is in use, can not be deleted"), e.value.desc
    blockd.cmd("object-del", id="t0")
    blockd.cmd("object-del", id="pw")
    assert ids(blockd) == ["wrong"]


def test_x509_validity(blockd, ca, tmp_path):
    old = ca.x509_dir(tmp_path / "old", "server",
                      activation="2001-01-01 00:00:00",
                      expiration="2002-01-01 00:00:00")
    add_fails(blockd, "tls-creds-x509", "t0", "The certificate %s/"
              "server-cert.pem has expired" % old, dir=old,
              endpoint="server")
    new = ca.x509_dir(tmp_path / "new", "server",
                      activation="2090-01-01 00:00:00",
                      expiration="2091-01-01 00:00:00")
    add_fails(blockd, "tls-creds-x509", "t0", "The certificate %s/"
              "server-cert.pem is not yet active" % new, dir=new,
              endpoint="server")
    # sanity-check=off loads it anyway (QEMU's switch)
    add(blockd, "tls-creds-x509", "t0", dir=old, endpoint="server",
        sanity_check=False)
    # an expired CA
    oldca = pki.Ca(tmp_path / "oldca", activation="2001-01-01 00:00:00",
                   expiration="2002-01-01 00:00:00")
    d = oldca.x509_dir(tmp_path / "oldca-dir", "client", with_cert=False)
    add_fails(blockd, "tls-creds-x509", "t1", "The CA certificate %s/"
              "ca-cert.pem has expired" % d, dir=d)


def test_x509_wrong_ca(blockd, ca, srv_dir, tmp_path):
    other = pki.Ca(tmp_path / "other", cn="another CA")
    d = tmp_path / "mixed"
    shutil.copytree(srv_dir, d)
    shutil.copy(other.cert, d / "ca-cert.pem")
    add_fails(blockd, "tls-creds-x509", "t0", "The certificate %s/"
              "server-cert.pem does not verify against the CA" % d,
              dir=str(d), endpoint="server")
    # a CA file that holds no CA
    d2 = tmp_path / "notca"
    shutil.copytree(srv_dir, d2)
    shutil.copy(d2 / "server-cert.pem", d2 / "ca-cert.pem")
    add_fails(blockd, "tls-creds-x509", "t0", "The certificate %s/"
              "ca-cert.pem basic constraints do not show a CA" % d2,
              dir=str(d2), endpoint="server")
    # not PEM at all
    d3 = tmp_path / "junk"
    shutil.copytree(srv_dir, d3)
    (d3 / "ca-cert.pem").write_text("junk\n")
    add_fails(blockd, "tls-creds-x509", "t0", "Unable to import "
              "certificates from %s/ca-cert.pem" % d3, dir=str(d3),
              endpoint="server")


def test_x509_crl(blockd, ca, tmp_path):
    d = ca.x509_dir(tmp_path / "ok", "server")
    ca.crl(os.path.join(d, "ca-crl.pem"))            # revokes nothing
    add(blockd, "tls-creds-x509", "t0", dir=d, endpoint="server")
    r = ca.x509_dir(tmp_path / "revoked", "server")
    ca.crl(os.path.join(r, "ca-crl.pem"),
           [os.path.join(r, "server-cert.pem")])
    desc = add_fails(blockd, "tls-creds-x509", "t1", "The certificate %s/"
                     "server-cert.pem does not verify against the CA" % r,
                     dir=r, endpoint="server")
    assert "revoked" in desc, desc
    with open(os.path.join(r, "ca-crl.pem"), "w") as f:
        f.write("-----BEGIN X509 CRL-----\nbm9uc2Vuc2U=\n"
                "-----END X509 CRL-----\n")
    add_fails(blockd, "tls-creds-x509", "t1", "Unable to import CRL %s/"
              "ca-crl.pem" % r, dir=r, endpoint="server")


def test_x509_dh_params(blockd, ca, srv_dir, tmp_path):
    d = tmp_path / "dh"
    shutil.copytree(srv_dir, d)
    pki.dh_params(d / "dh-params.pem")
    add(blockd, "tls-creds-x509", "t0", dir=str(d), endpoint="server")
    (d / "dh-params.pem").write_text("not DH parameters\n")
    add_fails(blockd, "tls-creds-x509", "t1", "Unable to load DH parameters "
              "from %s/dh-params.pem" % d, dir=str(d), endpoint="server")


def test_x509_purpose(blockd, ca, tmp_path):
    """A certificate must be made for its end (its extended key usage)."""
    d = tmp_path / "swapped"
    os.makedirs(d)
    shutil.copy(ca.cert, d / "ca-cert.pem")
    ca.issue(d / "server-cert.pem", d / "server-key.pem", "client",
             "localhost")
    add_fails(blockd, "tls-creds-x509", "t0", "The certificate %s/"
              "server-cert.pem purpose does not allow use as a TLS server"
              % d, dir=str(d), endpoint="server")
    ca.issue(d / "client-cert.pem", d / "client-key.pem", "server",
             "client1")
    add_fails(blockd, "tls-creds-x509", "t0", "The certificate %s/"
              "client-cert.pem purpose does not allow use as a TLS client"
              % d, dir=str(d))


def test_bad_priority(blockd, srv_dir):
    add_fails(blockd, "tls-creds-x509", "t0", "Unable to set TLS session "
              "priority NOPE:+FOO", dir=srv_dir, endpoint="server",
              priority="NOPE:+FOO")


# ---- tls-creds-psk / anon ------------------------------------------------

def test_psk(blockd, tmp_path):
    pki.require_tools()
    d = pki.psk_dir(tmp_path / "psk", {"alice": None, "qemu": None})
    with open(os.path.join(d, "keys.psk")) as f:
        lines = f.read().split()
    assert [l.split(":")[0] for l in lines] == ["alice", "qemu"]
    add(blockd, "tls-creds-psk", "p0", dir=d, endpoint="server")
    add(blockd, "tls-creds-psk", "p1", dir=d, username="alice")
    add(blockd, "tls-creds-psk", "p2", dir=d)       # username "qemu"
    add_fails(blockd, "tls-creds-psk", "p3", "Username bob not found in "
              "PSK file %s/keys.psk" % d, dir=d, username="bob")
    add_fails(blockd, "tls-creds-psk", "p3", "'username' is only "
              "meaningful for a client endpoint", dir=d, endpoint="server",
              username="alice")
    add_fails(blockd, "tls-creds-psk", "p3", "Unable to access credentials "
              "%s/keys.psk: No such file" % tmp_path, dir=str(tmp_path),
              endpoint="server")
    add_fails(blockd, "tls-creds-psk", "p3", "Missing 'dir' property value",
              endpoint="server")


@pytest.mark.parametrize("text,why", [
    ("", "no keys"),
    ("alice\n", "line 1: no ':' between username and key"),
    ("alice:00ff\nbob:xyz1\n", "line 2: the key is not hexadecimal"),
    ("alice:0ff\n", "line 1: the key has an odd number of hex digits"),
    (":00ff\n", "line 1: empty username"),
    ("alice:\n", "line 1: empty key"),
])
def test_psk_malformed(blockd, tmp_path, text, why):
    (tmp_path / "keys.psk").write_text(text)
    add_fails(blockd, "tls-creds-psk", "p0", "Invalid PSK file %s/keys.psk: "
              "%s" % (tmp_path, why), dir=str(tmp_path), endpoint="server")


def test_anon(blockd, tmp_path):
    pki.require_tools()
    add(blockd, "tls-creds-anon", "a0", endpoint="server")
    add(blockd, "tls-creds-anon", "a1")
    pki.dh_params(tmp_path / "dh-params.pem")
    add(blockd, "tls-creds-anon", "a2", endpoint="server", dir=str(tmp_path))
    (tmp_path / "dh-params.pem").write_text("junk\n")
    add_fails(blockd, "tls-creds-anon", "a3", "Unable to load DH parameters "
              "from %s/dh-params.pem" % tmp_path, endpoint="server",
              dir=str(tmp_path))
    assert ids(blockd) == ["a0", "a1", "a2"]


# ---- secret ---------------------------------------------------------------

def test_secret(blockd, tmp_path):
    add(blockd, "secret", "s0", data="plain")
    f = tmp_path / "sec.b64"
    f.write_text(base64.b64encode(b"from a file").decode())
    add(blockd, "secret", "s1", file=str(f), format="base64")
    add_fails(blockd, "secret", "s2", "Either 'data' or 'file' must be "
              "provided")
    add_fails(blockd, "secret", "s2", "'data' and 'file' are mutually "
              "exclusive", data="x", file=str(f))
    add_fails(blockd, "secret", "s2", "Unable to read '%s/nope': No such "
              "file" % tmp_path, file=str(tmp_path / "nope"))
    add_fails(blockd, "secret", "s2", "Invalid base64 in secret",
              data="not base64!", format="base64")
    add_fails(blockd, "secret", "s2", "No secret with id 'k'", data="AAAA",
              format="base64", keyid="k", iv="AAAAAAAAAAAAAAAAAAAAAA==")
    # s0 is 5 bytes: not an AES-256 key
    add_fails(blockd, "secret", "s2", "Key should be 32 bytes in length",
              data="AAAAAAAAAAAAAAAAAAAAAA==", format="base64", keyid="s0",
              iv="AAAAAAAAAAAAAAAAAAAAAA==")


def test_secret_aes_made_by_openssl(blockd, tmp_path):
    """keyid + iv: a secret encrypted by another implementation of
    AES-256-CBC with PKCS#7 padding (openssl enc), as QEMU's docs
    describe making one."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    key = bytes(range(32))
    iv = bytes(range(16, 32))
    r = subprocess.run(["openssl", "enc", "-aes-256-cbc", "-K", key.hex(),
                        "-iv", iv.hex(), "-base64", "-A"],
                       input=b"the disk password", capture_output=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    add(blockd, "secret", "master", data=base64.b64encode(key).decode(),
        format="base64")
    add(blockd, "secret", "pw", data=r.stdout.decode(), format="base64",
        keyid="master", iv=base64.b64encode(iv).decode())
    # the wrong iv garbles only the first block; the wrong key the padding
    bad = bytes(32)
    add(blockd, "secret", "bad", data=base64.b64encode(bad).decode(),
        format="base64")
    add_fails(blockd, "secret", "pw2", "Incorrect", data=r.stdout.decode(),
              format="base64", keyid="bad",
              iv=base64.b64encode(iv).decode())


# ---- authz ------------------------------------------------------------------

def test_authz(blockd, tmp_path):
    add(blockd, "authz-simple", "z0", identity="CN=client1,O=blockd tests")
    add(blockd, "authz-list", "z1", policy="deny", rules=[
        {"match": "CN=*,O=blockd tests", "policy": "allow",
         "format": "glob"},
        {"match": "alice", "policy": "allow"}])
    f = tmp_path / "acl.json"
    f.write_text(json.dumps({"policy": "allow", "rules": [
        {"match": "eve", "policy": "deny"}]}))
    add(blockd, "authz-listfile", "z2", filename=str(f))
    add(blockd, "authz-listfile", "z3", filename=str(f), refresh=False)
    add_fails(blockd, "authz-listfile", "z4", "Unable to read '%s/nope'"
              % tmp_path, filename=str(tmp_path / "nope"))
    f2 = tmp_path / "bad.json"
    f2.write_text('{"policy": "allow", "rules": [')
    add_fails(blockd, "authz-listfile", "z4", "Unable to parse '%s'" % f2,
              filename=str(f2))
    f2.write_text('{"policy": "perhaps"}')
    add_fails(blockd, "authz-listfile", "z4", "In '%s'" % f2,
              filename=str(f2))
    with pytest.raises(QmpError) as e:
        add(blockd, "authz-list", "z4", rules=[{"match": "x",
                                                "policy": "sometimes"}])
    assert e.value.cls == "GenericError"
    assert ids(blockd) == ["z0", "z1", "z2", "z3"]


# ---- the set ----------------------------------------------------------------

def test_duplicate_id_and_del(blockd, srv_dir):
    add(blockd, "secret", "x0", data="a")
    with pytest.raises(QmpError) as e:
        add(blockd, "tls-creds-x509", "x0", dir=srv_dir, endpoint="server")
    assert e.value.desc == ("attempt to add duplicate property 'x0' to "
                            "object (type 'container')")
    with pytest.raises(QmpError) as e:
        blockd.cmd("object-del", id="nope")
    assert e.value.desc == "object 'nope' not found"
    with pytest.raises(QmpError) as e:
        add(blockd, "secret", "1x", data="a")
    assert e.value.desc == "Parameter 'id' expects an identifier"
    with pytest.raises(QmpError) as e:
        add(blockd, "no-such-type", "y0")
    assert e.value.cls == "GenericError"
    blockd.cmd("object-del", id="x0")
    assert ids(blockd) == []
    add(blockd, "tls-creds-x509", "x0", dir=srv_dir, endpoint="server")
    assert blockd.cmd("query-objects") == [
        {"id": "x0", "qom-type": "tls-creds-x509"}]


def test_command_line(blockd_factory, ca, tmp_path):
    psk = pki.psk_dir(tmp_path / "psk", {"alice": None})
    enc = ca.x509_dir(tmp_path / "enc", "server", password="pw")
    # t0 pins s0 (its key's password) until the daemon stops
    d = blockd_factory(
        "--object", "secret,id=s0,data=pw",
        "--object", "tls-creds-x509,id=t0,dir=%s,endpoint=server,"
                    "verify-peer=off,passwordid=s0" % enc,
        "--object", "tls-creds-psk,id=p0,dir=%s,endpoint=server" % psk,
        "--object", json.dumps({"qom-type": "authz-list", "id": "z0",
                                "rules": [{"match": "alice",
                                           "policy": "allow"}]}),
        "--object", "authz-simple,id=z1,identity=CN=a,,O=b")
    assert d.cmd("query-objects") == [
        {"id": "s0", "qom-type": "secret"},
        {"id": "t0", "qom-type": "tls-creds-x509"},
        {"id": "p0", "qom-type": "tls-creds-psk"},
        {"id": "z0", "qom-type": "authz-list"},
        {"id": "z1", "qom-type": "authz-simple"}]
    # a bad --object stops start-up with the object-add error
    r = subprocess.run([BLOCKD, "--object", "tls-creds-x509,id=t0,dir=%s,"
                        "endpoint=server" % (tmp_path / "nope")],
                       capture_output=True, text=True, timeout=30,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 1
    assert "Unable to access credentials %s/ca-cert.pem" \
        % (tmp_path / "nope") in r.stderr, r.stderr


def test_qom_list(blockd):
    """QEMU's qom-list /objects, as qemu-storage-daemon answers it."""
    assert blockd.cmd("qom-list", path="/objects") == [
        {"name": "type", "type": "string"}]
    add(blockd, "secret", "s0", data="x")
    add(blockd, "authz-simple", "z0", identity="alice")
    assert blockd.cmd("qom-list", path="/objects") == [
        {"name": "type", "type": "string"},
        {"name": "s0", "type": "child<secret>"},
        {"name": "z0", "type": "child<authz-simple>"}]
    with pytest.raises(QmpError) as e:
        blockd.cmd("qom-list", path="/machine")
    assert (e.value.cls, e.value.desc) == ("DeviceNotFound",
                                           "Device '/machine' not found")


def test_schema(blockd):
    schema = blockd.cmd("query-qmp-schema")
    cmds = {e["name"] for e in schema if e["meta-type"] == "command"}
    assert {"object-add", "object-del", "query-objects", "qom-list"} <= cmds
    values = set()
    for e in schema:
        if e["meta-type"] == "enum":
            values |= set(e["values"])
    assert {"secret", "tls-creds-x509", "tls-creds-psk", "tls-creds-anon",
            "authz-simple", "authz-list", "authz-listfile"} <= values
    members = set()
    for e in schema:
        members |= {m.get("name") for m in e.get("members", [])}
    assert {"qom-type", "passwordid", "verify-peer", "endpoint",
            "identity", "filename", "refresh", "keyid", "iv"} <= members
    names = {c["name"] for c in blockd.cmd("query-commands")}
    assert {"object-add", "object-del", "query-objects"} <= names
