#!/usr/bin/python3
"""capture.py - record what real NBD clients send to a server, as fuzz
seeds for fuzz-nbd-server.

    capture.py LISTEN_SOCK UPSTREAM_SOCK OUTDIR PREFIX

Listens on the unix socket LISTEN_SOCK; each client that connects is
joined to a new connection to UPSTREAM_SOCK (a blockd NBD server), bytes
are copied both ways, and everything the client sent is written to
OUTDIR/PREFIX-N once the connection ends, after one mode byte (0x00:
the fuzz target's plain server; 0x01 when PREFIX starts with "tls").
Runs until killed (SIGTERM).  gen-corpus.sh drives it with nbdinfo,
nbdcopy, qemu-img, qemu-io and qemu-nbd --list.
"""
import os
import selectors
import socket
import sys
import threading


def relay(client, out_path, mode):
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    upstream.connect(sys.argv[2])
    sent = bytearray([mode])
    sel = selectors.DefaultSelector()
    sel.register(client, selectors.EVENT_READ, upstream)
    sel.register(upstream, selectors.EVENT_READ, client)
    open_ends = 2
    while open_ends:
        for key, _ in sel.select():
            src, dst = key.fileobj, key.data
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                sel.unregister(src)
                open_ends -= 1
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                continue
            if src is client:
                sent += data
            try:
                dst.sendall(data)
            except OSError:
                pass
    client.close()
    upstream.close()
    with open(out_path, "wb") as f:
        f.write(sent)


def main():
    listen_path, _, outdir, prefix = sys.argv[1:5]
    mode = 1 if prefix.startswith("tls") else 0
    os.makedirs(outdir, exist_ok=True)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(listen_path)
    srv.listen(16)
    n = 0
    while True:
        client, _ = srv.accept()
        path = os.path.join(outdir, "%s-%d" % (prefix, n))
        n += 1
        threading.Thread(target=relay, args=(client, path, mode),
                         daemon=True).start()


if __name__ == "__main__":
    main()
