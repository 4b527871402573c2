#!/usr/bin/python3
"""seed-libnbd.py SOCKET simple|structured|extended - one python3-libnbd
session for gen-corpus.sh: meta contexts, every command, with FUA."""
import os
import sys

import nbd

h = nbd.NBD()
mode = sys.argv[2]
if mode == "extended" and not hasattr(h, "set_request_extended_headers"):
    # This libnbd predates extended headers: speak them by hand.
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..",
                                    "integration"))
    import nbdraw as r
    c = r.Raw(sys.argv[1])
    c.opt(r.OPT_EXTENDED)
    c.set_meta(b"disk", [b"base:allocation", b"qemu:allocation-depth"])
    c.go(b"disk")
    c.extended = True
    c.request(r.CMD_WRITE, 0, 4096, r.F_FUA | r.F_PAYLOAD_LEN, 1, b"\x5a" * 4096)
    c.chunks()
    c.request(r.CMD_READ, 0, 4096, 0, 2)
    c.chunks()
    c.request(r.CMD_BS, 0, 1 << 20, 0, 3)
    c.chunks()
    c.request(r.CMD_BS, 0, 65536, r.F_REQ_ONE, 4)
    c.chunks()
    c.request(r.CMD_WZ, 4096, 8192, r.F_NO_HOLE, 5)
    c.chunks()
    c.request(r.CMD_TRIM, 4096, 16384, 0, 6)
    c.chunks()
    c.request(r.CMD_FLUSH, 0, 0, 0, 7)
    c.chunks()
    c.request(r.CMD_DISC, 0, 0, 0, 8)
    sys.exit(0)
if mode == "simple":
    h.set_request_structured_replies(False)
if mode != "simple":
    h.add_meta_context("base:allocation")
    h.add_meta_context("qemu:allocation-depth")
h.set_export_name("disk")
h.connect_unix(sys.argv[1])
h.pwrite(b"\x5a" * 4096, 0, nbd.CMD_FLAG_FUA)
h.pread(4096, 0)
h.pread(512, 65536 - 256)
h.zero(4096, 8192, nbd.CMD_FLAG_NO_HOLE)
if h.can_trim():
    h.trim(4096, 16384)
if h.can_cache():
    h.cache(4096, 0)
h.flush()
if mode != "simple":
    h.block_status(131072, 0, lambda *a: 0)
    h.block_status(65536, 0, lambda *a: 0, nbd.CMD_FLAG_REQ_ONE)
h.shutdown()
