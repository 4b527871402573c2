"""Certificates and PSK files made at test time with gnutls-bin's
certtool and psktool, laid out as QEMU's tls-creds-x509 / tls-creds-psk
expect (ca-cert.pem, server-cert.pem, server-key.pem, client-cert.pem,
client-key.pem; keys.psk).

    ca = Ca(tmp_path / "ca")                        # a CA (cert + key)
    d = ca.x509_dir(tmp_path / "srv", "server")     # a creds directory
    c = ca.x509_dir(tmp_path / "cli", "client", cn="client1")
    psk_dir(tmp_path / "psk", {"alice": None})      # random key

certtool templates set validity dates (`activation`/`expiration` as
"YYYY-MM-DD HH:MM:SS"), so expired and not-yet-valid certificates are
made directly.
"""
import os
import shutil
import subprocess

import pytest


def require_tools():
    for p in ("certtool", "psktool"):
        if shutil.which(p) is None:
            pytest.skip("%s is not installed (gnutls-bin)" % p)


def _run(*args):
    r = subprocess.run(list(args), capture_output=True, text=True,
                       timeout=120)
    if r.returncode != 0:
        raise RuntimeError("%s failed: %s" % (args[0], r.stderr))


def _template(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def make_key(path, password=None):
    args = ["certtool", "--generate-privkey", "--outfile", str(path)]
    if password is not None:
        args += ["--password", password, "--pkcs8"]
    _run(*args)


def _dates(activation, expiration):
    lines = []
    if activation:
        lines.append('activation_date = "%s"' % activation)
    if expiration:
        lines.append('expiration_date = "%s"' % expiration)
    else:
        lines.append("expiration_days = 30")
    return lines


class Ca:
    """A self-signed CA in dir (ca-cert.pem, ca-key.pem)."""

    def __init__(self, dir, cn="blockd test CA", activation=None,
                 expiration=None, is_ca=True):
        self.dir = str(dir)
        os.makedirs(self.dir, exist_ok=True)
        self.cert = os.path.join(self.dir, "ca-cert.pem")
        self.key = os.path.join(self.dir, "ca-key.pem")
        tmpl = os.path.join(self.dir, "ca.info")
        lines = ['cn = "%s"' % cn, "cert_signing_key", "crl_signing_key"]
        if is_ca:
            lines.append("ca")
        _template(tmpl, lines + _dates(activation, expiration))
        make_key(self.key)
        _run("certtool", "--generate-self-signed", "--load-privkey",
             self.key, "--template", tmpl, "--outfile", self.cert)

    def issue(self, cert, key, endpoint, cn, org="blockd tests",
              hostnames=("localhost",), activation=None, expiration=None,
              password=None):
        """Sign a certificate for endpoint "server" or "client"."""
        tmpl = str(cert) + ".info"
        lines = ['organization = "%s"' % org, 'cn = "%s"' % cn,
                 "encryption_key", "signing_key"]
        if endpoint == "server":
            lines.append("tls_www_server")
            lines += ['dns_name = "%s"' % h for h in hostnames]
            lines.append("ip_address = 127.0.0.1")
        else:
            lines.append("tls_www_client")
        _template(tmpl, lines + _dates(activation, expiration))
        make_key(key, password)
        args = ["certtool", "--generate-certificate", "--load-privkey",
                str(key), "--load-ca-certificate", self.cert,
                "--load-ca-privkey", self.key, "--template", tmpl,
                "--outfile", str(cert)]
        if password is not None:
            args += ["--password", password]
        _run(*args)
        os.unlink(tmpl)

    def crl(self, path, revoked=()):
        """Write a CRL (ca-crl.pem) revoking the certificate files in
        revoked."""
        tmpl = str(path) + ".info"
        _template(tmpl, ["crl_next_update = 30", "crl_number = 1"])
        args = ["certtool", "--generate-crl", "--load-ca-privkey", self.key,
                "--load-ca-certificate", self.cert, "--template", tmpl,
                "--outfile", str(path)]
        for c in revoked:
            args += ["--load-certificate", str(c)]
        _run(*args)
        os.unlink(tmpl)

    def x509_dir(self, dir, endpoint, cn=None, with_cert=True, **kw):
        """A tls-creds-x509 directory: this CA plus, unless with_cert is
        false, a certificate and key for endpoint."""
        dir = str(dir)
        os.makedirs(dir, exist_ok=True)
        shutil.copy(self.cert, os.path.join(dir, "ca-cert.pem"))
        if with_cert:
            self.issue(os.path.join(dir, "%s-cert.pem" % endpoint),
                       os.path.join(dir, "%s-key.pem" % endpoint),
                       endpoint, cn or ("localhost" if endpoint == "server"
                                        else "client"), **kw)
        return dir


def psk_dir(dir, users):
    """A tls-creds-psk directory: keys.psk with users {name: hexkey or
    None for a random key (psktool)}."""
    dir = str(dir)
    os.makedirs(dir, exist_ok=True)
    path = os.path.join(dir, "keys.psk")
    for user, key in users.items():
        if key is None:
            _run("psktool", "-u", user, "-p", path)
        else:
            with open(path, "a") as f:
                f.write("%s:%s\n" % (user, key))
    return dir


def dh_params(path):
    """dh-params.pem, as certtool makes it."""
    _run("certtool", "--generate-dh-params", "--outfile", str(path))
