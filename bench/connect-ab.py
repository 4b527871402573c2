#!/usr/bin/python3
"""bench/connect-ab.py - paired A/B of connect latency: libnbd
connect_uri + shutdown (what the harness's "connect" workload times),
N times per round against each server in turn, the order alternating
round by round, so a load that comes and goes hits every server alike.
Prints per server the median over rounds of each round's p50 and the
server's CPU time per connect (/proc schedstat of all its threads).

    bench/connect-ab.py [--rounds 10] [-n 200] [--tls] NAME=CMD ...

CMD is a shell command template: {sock} the unix socket to listen on,
{img} a 64 MiB raw image of its own, {srv} a directory with an x509 CA,
server certificate and key (made with certtool when --tls is given; the
client gets the CA).  Servers run on CPU 0, the client on CPU 1.
Example (a build against an older binary, and qemu-nbd):

    S='--blockdev driver=file,node-name=f0,filename={img}
       --nbd-server addr.type=unix,addr.path={sock}
       --export type=nbd,id=e0,node-name=f0,name='
    bench/connect-ab.py "new=build/blockd $S" "old=/tmp/blockd-old $S" \\
        "qemu-nbd=qemu-nbd -f raw -t -e 0 -x '' -k {sock} {img}"

With --tls add `--object tls-creds-x509,id=t0,endpoint=server,dir={srv}`
and `,tls-creds=t0` to blockd, and `--object ... --tls-creds t0` to
qemu-nbd.
"""
import argparse
import glob
import os
import shutil
import statistics
import subprocess
import tempfile
import time

import nbd


def cpu_ns(pid):
    total = 0
    for path in glob.glob("/proc/%d/task/*/schedstat" % pid):
        try:
            with open(path) as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def make_pki(d):
    def ct(*args):
        subprocess.run(["certtool"] + list(args), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    srv, cli = os.path.join(d, "srv"), os.path.join(d, "cli")
    os.makedirs(srv)
    os.makedirs(cli)
    with open(os.path.join(d, "ca.t"), "w") as f:
        f.write('cn = "bench CA"\nca\ncert_signing_key\n')
    with open(os.path.join(d, "s.t"), "w") as f:
        f.write('cn = "localhost"\ndns_name = "localhost"\n'
                'tls_www_server\nsigning_key\nencryption_key\n')
    cakey = os.path.join(d, "ca-key.pem")
    ct("--generate-privkey", "--key-type=ecdsa", "--outfile", cakey)
    ct("--generate-self-signed", "--load-privkey", cakey, "--template",
       os.path.join(d, "ca.t"), "--outfile", os.path.join(srv, "ca-cert.pem"))
    ct("--generate-privkey", "--key-type=ecdsa", "--outfile",
       os.path.join(srv, "server-key.pem"))
    ct("--generate-certificate", "--load-privkey",
       os.path.join(srv, "server-key.pem"), "--load-ca-certificate",
       os.path.join(srv, "ca-cert.pem"), "--load-ca-privkey", cakey,
       "--template", os.path.join(d, "s.t"), "--outfile",
       os.path.join(srv, "server-cert.pem"))
    shutil.copy(os.path.join(srv, "ca-cert.pem"), cli)
    return srv, cli


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("servers", nargs="+", metavar="NAME=CMD")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="connect-ab.", dir="/dev/shm")
    srv_dir, cli_dir = make_pki(work) if a.tls else (work, None)
    os.sched_setaffinity(0, {1})
    procs = {}
    try:
        for i, spec in enumerate(a.servers):
            name, cmd = spec.split("=", 1)
            sock = os.path.join(work, "s%d.sock" % i)
            img = os.path.join(work, "d%d.img" % i)
            with open(img, "wb") as f:
                f.truncate(64 << 20)
            cmd = cmd.format(sock=sock, img=img, srv=srv_dir)
            log = open(os.path.join(work, "s%d.log" % i), "w")
            p = subprocess.Popen("exec taskset -c 0 " + cmd, shell=True,
                                 stderr=log)
            procs[name] = (p, sock)
        for name, (p, sock) in procs.items():
            deadline = time.monotonic() + 20
            while not os.path.exists(sock):
                if p.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("%s did not start" % name)
                time.sleep(0.05)

        def run(sock):
            scheme = "nbds+unix" if a.tls else "nbd+unix"
            uri = "%s:///?socket=%s" % (scheme, sock)
            lat = []
            for _ in range(a.n):
                t = time.perf_counter()
                h = nbd.NBD()
                if a.tls:
                    h.set_tls_certificates(cli_dir)
                h.connect_uri(uri)
                h.shutdown()
                del h
                lat.append(time.perf_counter() - t)
            lat.sort()
            return lat[len(lat) // 2] * 1e6

        names = list(procs)
        for n in names:
            run(procs[n][1])              # warm up
        res = {n: ([], []) for n in names}
        for r in range(a.rounds):
            for n in (names if r % 2 == 0 else names[::-1]):
                p, sock = procs[n]
                c0 = cpu_ns(p.pid)
                res[n][0].append(run(sock))
                time.sleep(0.05)          # the last close is handled
                res[n][1].append((cpu_ns(p.pid) - c0) / a.n / 1000)
        for n in names:
            lat, cpu = res[n]
            print("%-12s p50 %7.1f us  cpu/connect %6.1f us   rounds: %s" % (
                n, statistics.median(lat), statistics.median(cpu),
                " ".join("%.0f" % x for x in lat)))
        first = names[0]
        for n in names[1:]:
            ratio = statistics.median(b / x for x, b in
                                      zip(res[first][0], res[n][0]))
            print("%s / %s latency, median of paired rounds: %.3f" % (
                n, first, ratio))
    finally:
        for p, _ in procs.values():
            p.terminate()
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
