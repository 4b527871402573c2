"""A scriptable fake NBD server, for testing NBD *clients* against a
server that misbehaves on purpose (stdlib only).

It speaks fixed newstyle correctly over a unix socket: OPT_GO/INFO
(export, name, description, block size), OPT_EXPORT_NAME, OPT_LIST,
OPT_ABORT, STRUCTURED_REPLY, EXTENDED_HEADERS, SET/LIST_META_CONTEXT
with base:allocation, and serves READ, WRITE, FLUSH, TRIM, CACHE,
WRITE_ZEROES and BLOCK_STATUS over an in-memory image shared by all its
connections (so the data survives a drop() and reconnect).

    srv = FakeNbd(path, size=1 << 20)     # listening, in a thread
    ...                                    # a client connects, behaves
    srv.misbehave = {"unknown_cookie"}     # from now on, READ replies lie
    srv.drop()                             # hang up on every client
    srv.size = 2 << 20                     # the next handshake says so
    srv.stop()

Misbehaviours (names in MISBEHAVIOURS) apply to the requests received
while they are set, so a client can open cleanly first.  With
`misbehave_once=True` each applies to one request only, then the set
empties.  `srv.requests` records (cmd, flags, offset, length) of every
request and `srv.options` every option, for tests to wait on
(srv.wait(lambda: ...)).  Run as a program it serves until SIGTERM:

    python3 fakenbd.py SOCKET [--size N] [--misbehave a,b] \
        [--no-structured] [--no-extended] [--export NAME]...
"""
import argparse
import os
import signal
import socket
import struct
import threading
import time

from nbdraw import (NBDMAGIC, IHAVEOPT, REPMAGIC, REQ_MAGIC, EXT_REQ_MAGIC,
                    SIMPLE_MAGIC, STRUCT_MAGIC, EXT_MAGIC, OPT_EXPORT_NAME,
                    OPT_ABORT, OPT_LIST, OPT_INFO, OPT_GO, OPT_STRUCTURED,
                    OPT_LIST_META, OPT_SET_META, OPT_EXTENDED, REP_ACK,
                    REP_SERVER, REP_INFO, REP_META, ERR_UNSUP, ERR_INVALID,
                    ERR_UNKNOWN, ERR_EXT_HEADER_REQD, CMD_READ, CMD_WRITE,
                    CMD_DISC, CMD_FLUSH, CMD_TRIM, CMD_CACHE, CMD_WZ, CMD_BS,
                    F_REQ_ONE, EINVAL, T_DATA, T_BS, T_BS_EXT, T_ERROR)

INFO_EXPORT, INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE = 0, 1, 2, 3
FLAG_HAS_FLAGS, FLAG_READ_ONLY, FLAG_SEND_FLUSH, FLAG_SEND_FUA = 1, 2, 4, 8
FLAG_SEND_TRIM, FLAG_SEND_WRITE_ZEROES, FLAG_SEND_DF = 32, 64, 128
FLAG_CAN_MULTI_CONN, FLAG_SEND_CACHE = 256, 1024
DEFAULT_FLAGS = (FLAG_HAS_FLAGS | FLAG_SEND_FLUSH | FLAG_SEND_FUA |
                 FLAG_SEND_TRIM | FLAG_SEND_WRITE_ZEROES | FLAG_SEND_CACHE)
EIO = 5
BASE_ALLOCATION = b"base:allocation"
BASE_ALLOCATION_ID = 1
STATE_HOLE_ZERO = 3
GRAIN = 4096                      # block status granularity

MISBEHAVIOURS = {
    # handshake
    "endless_list": "OPT_LIST answers NBD_REP_SERVER forever",
    "go_endless_info": "OPT_GO answers NBD_REP_INFO forever",
    "stall_greeting": "no greeting until the misbehaviour is cleared",
    "go_no_export": "OPT_GO acked without NBD_INFO_EXPORT",
    "go_huge_size": "an export size of 2^63 + 4096",
    "go_bad_block_size": "minimum block size 3 (not a power of two), "
                         "above the maximum",
    "reply_wrong_opt": "option replies name another option",
    "reply_huge": "an option reply header claiming 4 GiB, then silence",
    "meta_unasked": "SET_META_CONTEXT selects a context never asked for",
    # READ replies
    "huge_chunk": "a chunk header claiming ~4 GiB (2^40 extended), "
                  "then silence",
    "oversized_simple": "a simple READ reply with 64 KiB more data "
                        "than asked",
    "unsolicited_structured": "a structured chunk to a client that did "
                              "not negotiate structured replies",
    "unknown_cookie": "the reply carries a cookie never sent",
    "read_past_range": "an OFFSET_DATA chunk ending 4 KiB past the "
                       "request",
    "read_before_range": "an OFFSET_DATA chunk of the right length "
                         "starting 4 KiB before the request",
    "read_overlap": "two OFFSET_DATA chunks covering the same bytes",
    "read_short": "DONE after chunks covering only half the request",
    "short_chunk": "an OFFSET_DATA chunk of length 4 (< its 8-byte "
                   "offset), then close",
    "truncated_chunk": "a chunk header, half its payload, then close",
    "no_done": "a data chunk without the DONE flag, then close",
    "close_mid_reply": "the reply header and half the data, then close",
    "bad_error_chunk": "an error chunk whose message length runs past "
                       "the chunk",
    "stall": "requests are read but never answered",
    # BLOCK_STATUS replies
    "bs_zero_length": "an extent of length 0",
    "bs_backward": "extents whose lengths wrap the offset around "
                   "(2^32 compact, 2^64 extended)",
    "bs_past_end": "extents running 1 MiB past the end of the export",
    "bs_past_range": "extents running 1 MiB past the request (still "
                     "inside the export)",
    "bs_unknown_context": "a context id that was never negotiated",
    "bs_empty": "a block status chunk with no extents",
}


class Conn:
    """One client connection's negotiated state."""

    def __init__(self, sock):
        self.s = sock
        self.structured = False
        self.extended = False
        self.meta = False          # base:allocation selected
        self.unasked = False       # ... as a context never asked for
        self.export = None

    def recv(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.s.recv(min(n - len(buf), 1 << 20))
            if not chunk:
                raise EOFError
            buf += chunk
        return buf


class FakeNbd:
    """A fake NBD server listening on unix socket `path` (see the module
    doc).  exports: names served (default [""]; any name in the list is
    the same image)."""

    def __init__(self, path, size=1 << 20, exports=("",), data=None,
                 flags=DEFAULT_FLAGS, structured=True, extended=True,
                 misbehave=(), misbehave_once=False, description=None,
                 max_block=32 << 20):
        self.path = path
        self.data = bytearray(data if data is not None else size)
        self.exports = list(exports)
        self.flags = flags
        self.structured = structured
        self.extended = extended
        self.misbehave = set(misbehave)
        self.misbehave_once = misbehave_once
        self.description = description
        self.max_block = max_block
        unknown = self.misbehave - set(MISBEHAVIOURS)
        assert not unknown, "unknown misbehaviour %s" % unknown
        self.requests = []
        self.options = []
        self.handshakes = 0            # connections that reached GO
        self.connections = 0
        self.lock = threading.Lock()
        self.conns = []
        self.threads = []
        self.stopping = False
        if os.path.exists(path):
            os.unlink(path)
        self.ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.ls.bind(path)
        self.ls.listen(16)
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    # ---- control, from the test ---------------------------------------

    @property
    def size(self):
        return len(self.data)

    @size.setter
    def size(self, n):
        """Resize the image (what the next handshake reports)."""
        with self.lock:
            if n < len(self.data):
                del self.data[n:]
            else:
                self.data.extend(bytes(n - len(self.data)))

    def drop(self):
        """Hang up on every connected client."""
        with self.lock:
            conns, self.conns = self.conns, []
        for c in conns:
            _hangup(c.s)

    def stop(self):
        self.stopping = True
        _hangup(self.ls)
        self.drop()
        for t in [self.acceptor] + self.threads:
            t.join(10)
        if os.path.exists(self.path):
            os.unlink(self.path)

    def wait(self, cond, timeout=30.0, what="condition"):
        """Poll cond() until true; raise TimeoutError after timeout."""
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise TimeoutError("fake NBD server: no %s" % what)
            time.sleep(0.02)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    # ---- plumbing -----------------------------------------------------

    def _accept(self):
        while not self.stopping:
            try:
                s, _ = self.ls.accept()
            except OSError:
                return
            c = Conn(s)
            with self.lock:
                self.conns.append(c)
                self.connections += 1
            t = threading.Thread(target=self._serve, args=(c,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, c):
        try:
            if self._handshake(c):
                while self._request(c):
                    pass
        except (EOFError, OSError, BrokenPipeError):
            pass
        finally:
            _hangup(c.s)
            with self.lock:
                if c in self.conns:
                    self.conns.remove(c)

    def _bad(self, name):
        """Is misbehaviour `name` on?  Consumes it when misbehave_once."""
        with self.lock:
            if name not in self.misbehave:
                return False
            if self.misbehave_once:
                self.misbehave.discard(name)
            return True

    # ---- handshake ----------------------------------------------------

    def _handshake(self, c):
        """Options up to GO/EXPORT_NAME; False if the client left."""
        while "stall_greeting" in self.misbehave and not self.stopping:
            time.sleep(0.05)
        c.s.sendall(struct.pack(">QQH", NBDMAGIC, IHAVEOPT, 3))
        cflags = struct.unpack(">I", c.recv(4))[0]
        if cflags & ~3:
            return False
        while True:
            magic, opt, n = struct.unpack(">QII", c.recv(16))
            if magic != IHAVEOPT or n > (1 << 20):
                return False
            payload = c.recv(n)
            self.options.append(opt)
            if opt == OPT_EXPORT_NAME:
                if c.extended or not self._pick(c, payload):
                    return False
                tail = b"" if cflags & 2 else bytes(124)
                c.s.sendall(struct.pack(">QH", self.size,
                                        self._tflags(c)) + tail)
                self.handshakes += 1
                return True
            if opt == OPT_ABORT:
                self._rep(c, opt, REP_ACK)
                return False
            if opt in (OPT_GO, OPT_INFO):
                if self._info(c, opt, payload) and opt == OPT_GO:
                    self.handshakes += 1
                    return True
            elif opt == OPT_LIST:
                self._list(c, payload)
            elif opt == OPT_STRUCTURED and self.structured:
                if c.extended:
                    self._rep(c, opt, ERR_EXT_HEADER_REQD)
                elif c.structured or payload:
                    self._rep(c, opt, ERR_INVALID)
                else:
                    c.structured = True
                    self._rep(c, opt, REP_ACK)
            elif opt == OPT_EXTENDED and self.extended:
                if c.extended or payload:
                    self._rep(c, opt, ERR_INVALID)
                else:
                    c.extended = c.structured = True
                    self._rep(c, opt, REP_ACK)
            elif opt in (OPT_LIST_META, OPT_SET_META) and self.structured:
                self._meta(c, opt, payload)
            else:
                self._rep(c, opt, ERR_UNSUP, b"unsupported option")

    def _rep(self, c, opt, rtype, data=b""):
        if "reply_wrong_opt" in self.misbehave:
            opt ^= 0x40
        c.s.sendall(struct.pack(">QIII", REPMAGIC, opt, rtype, len(data)) +
                    data)

    def _pick(self, c, name):
        if name.decode(errors="replace") not in self.exports:
            return False
        c.export = name
        return True

    def _tflags(self, c):
        f = self.flags
        if c.structured:
            f |= FLAG_SEND_DF
        return f

    def _info(self, c, opt, p):
        if len(p) < 6:
            self._rep(c, opt, ERR_INVALID, b"short")
            return False
        nlen = struct.unpack(">I", p[:4])[0]
        if len(p) < 6 + nlen:
            self._rep(c, opt, ERR_INVALID, b"short")
            return False
        name = p[4:4 + nlen]
        nreq = struct.unpack(">H", p[4 + nlen:6 + nlen])[0]
        reqs = struct.unpack(">%dH" % nreq, p[6 + nlen:6 + nlen + 2 * nreq])
        if not self._pick(c, name):
            self._rep(c, opt, ERR_UNKNOWN, b"no such export")
            return False
        if self._bad("go_endless_info"):
            while not self.stopping:
                self._rep(c, opt, REP_INFO, struct.pack(">H", INFO_NAME) +
                          b"x" * 1000)
            raise EOFError
        if self._bad("reply_huge"):
            c.s.sendall(struct.pack(">QIII", REPMAGIC, opt, REP_INFO,
                                    0xffffffff))
            return False
        if INFO_NAME in reqs:
            self._rep(c, opt, REP_INFO, struct.pack(">H", INFO_NAME) + name)
        if INFO_DESCRIPTION in reqs and self.description is not None:
            self._rep(c, opt, REP_INFO, struct.pack(">H", INFO_DESCRIPTION) +
                      self.description.encode())
        bsize = (1, 4096, self.max_block)
        if self._bad("go_bad_block_size"):
            bsize = (3, 4096, 2)
        self._rep(c, opt, REP_INFO, struct.pack(">HIII", INFO_BLOCK_SIZE,
                                                *bsize))
        size = self.size
        if self._bad("go_huge_size"):
            size = (1 << 63) + 4096
        if not self._bad("go_no_export"):
            self._rep(c, opt, REP_INFO, struct.pack(">HQH", INFO_EXPORT, size,
                                                    self._tflags(c)))
        self._rep(c, opt, REP_ACK)
        return True

    def _list(self, c, payload):
        if payload:
            self._rep(c, OPT_LIST, ERR_INVALID, b"payload")
            return
        if self._bad("endless_list"):
            i = 0
            while not self.stopping and i < 200000:
                name = b"export-%d" % i
                self._rep(c, OPT_LIST, REP_SERVER,
                          struct.pack(">I", len(name)) + name)
                i += 1
            raise EOFError
        for e in self.exports:
            name = e.encode()
            self._rep(c, OPT_LIST, REP_SERVER,
                      struct.pack(">I", len(name)) + name)
        self._rep(c, OPT_LIST, REP_ACK)

    def _meta(self, c, opt, p):
        try:
            nlen = struct.unpack(">I", p[:4])[0]
            name = p[4:4 + nlen]
            pos = 4 + nlen
            nq = struct.unpack(">I", p[pos:pos + 4])[0]
            pos += 4
            queries = []
            for _ in range(nq):
                qlen = struct.unpack(">I", p[pos:pos + 4])[0]
                queries.append(p[pos + 4:pos + 4 + qlen])
                pos += 4 + qlen
            if pos != len(p):
                raise struct.error
        except struct.error:
            self._rep(c, opt, ERR_INVALID, b"bad meta context payload")
            return
        if opt == OPT_SET_META and not c.structured:
            self._rep(c, opt, ERR_INVALID, b"structured replies first")
            return
        if name.decode(errors="replace") not in self.exports:
            self._rep(c, opt, ERR_UNKNOWN, b"no such export")
            return
        if opt == OPT_LIST_META:
            ok = not queries or any(q in (b"base:", BASE_ALLOCATION)
                                    for q in queries)
        else:
            ok = BASE_ALLOCATION in queries
            c.meta = ok
        if opt == OPT_SET_META and self._bad("meta_unasked"):
            c.meta = c.unasked = True
            self._rep(c, opt, REP_META, struct.pack(">I", BASE_ALLOCATION_ID)
                      + b"qemu:dirty-bitmap:unasked")
        elif ok:
            ctx_id = BASE_ALLOCATION_ID if opt == OPT_SET_META else 0
            self._rep(c, opt, REP_META, struct.pack(">I", ctx_id) +
                      BASE_ALLOCATION)
        self._rep(c, opt, REP_ACK)

    # ---- transmission -------------------------------------------------

    def _request(self, c):
        """Serve one request; False when the connection should end."""
        if c.extended:
            magic, flags, cmd, cookie, off, length = \
                struct.unpack(">IHHQQQ", c.recv(32))
            want = EXT_REQ_MAGIC
        else:
            magic, flags, cmd, cookie, off, length = \
                struct.unpack(">IHHQQI", c.recv(28))
            want = REQ_MAGIC
        if magic != want:
            return False
        self.requests.append((cmd, flags, off, length))
        payload = c.recv(length) if cmd == CMD_WRITE else b""
        if cmd == CMD_DISC:
            return False
        if self._bad("stall"):
            return True
        if off + length > self.size and cmd not in (CMD_FLUSH, CMD_BS):
            self._error(c, cookie, off, EINVAL, "out of range")
            return True
        if cmd == CMD_READ:
            return self._read(c, cookie, off, length)
        if cmd == CMD_BS:
            return self._block_status(c, cookie, flags, off, length)
        if cmd == CMD_WRITE:
            self.data[off:off + length] = payload
        elif cmd in (CMD_TRIM, CMD_WZ):
            self.data[off:off + length] = bytes(length)
        elif cmd not in (CMD_FLUSH, CMD_CACHE):
            self._error(c, cookie, off, EINVAL, "unknown command")
            return True
        self._ok(c, cookie, off)
        return True

    def _hdr(self, c, cookie, off, flags, rtype, length):
        """A structured or extended chunk header."""
        if c.extended:
            return struct.pack(">IHHQQQ", EXT_MAGIC, flags, rtype, cookie,
                               off, length)
        return struct.pack(">IHHQI", STRUCT_MAGIC, flags, rtype, cookie,
                           length)

    def _chunk(self, c, cookie, off, flags, rtype, payload):
        c.s.sendall(self._hdr(c, cookie, off, flags, rtype, len(payload)) +
                    payload)

    def _ok(self, c, cookie, off):
        if c.structured:
            self._chunk(c, cookie, off, 1, 0, b"")
        else:
            c.s.sendall(struct.pack(">IIQ", SIMPLE_MAGIC, 0, cookie))

    def _error(self, c, cookie, off, err, msg):
        if c.structured:
            m = msg.encode()
            self._chunk(c, cookie, off, 1, T_ERROR,
                        struct.pack(">IH", err, len(m)) + m)
        else:
            c.s.sendall(struct.pack(">IIQ", SIMPLE_MAGIC, err, cookie))

    def _read(self, c, cookie, off, length):
        data = bytes(self.data[off:off + length])
        if self._bad("unknown_cookie"):
            cookie ^= 0x5a5a000000000000
        if self._bad("close_mid_reply"):
            if c.structured:
                c.s.sendall(self._hdr(c, cookie, off, 1, T_DATA,
                                      8 + length) +
                            struct.pack(">Q", off) + data[:length // 2])
            else:
                c.s.sendall(struct.pack(">IIQ", SIMPLE_MAGIC, 0, cookie) +
                            data[:length // 2])
            return False
        if not c.structured and self._bad("unsolicited_structured"):
            c.s.sendall(struct.pack(">IHHQI", STRUCT_MAGIC, 1, T_DATA,
                                    cookie, 8 + length) +
                        struct.pack(">Q", off) + data)
            return True
        if not c.structured and self._bad("oversized_simple"):
            c.s.sendall(struct.pack(">IIQ", SIMPLE_MAGIC, 0, cookie) +
                        data + bytes(65536))
            return True
        if c.structured and self._bad("bad_error_chunk"):
            self._chunk(c, cookie, off, 1, T_ERROR,
                        struct.pack(">IH", EIO, 60000) + b"short")
            return True
        if not c.structured:
            c.s.sendall(struct.pack(">IIQ", SIMPLE_MAGIC, 0, cookie) + data)
            return True
        if self._bad("huge_chunk"):
            claim = (1 << 40) if c.extended else 0xfffffff0
            c.s.sendall(self._hdr(c, cookie, off, 1, T_DATA, claim) +
                        struct.pack(">Q", off))
            return True               # then nothing more: the client
                                      # must not wait for 4 GiB
        if self._bad("short_chunk"):
            c.s.sendall(self._hdr(c, cookie, off, 1, T_DATA, 4) +
                        struct.pack(">I", off & 0xffffffff))
            return False
        if self._bad("truncated_chunk"):
            c.s.sendall(self._hdr(c, cookie, off, 1, T_DATA, 8 + length) +
                        struct.pack(">Q", off) + data[:length // 2])
            return False
        if self._bad("no_done"):
            self._chunk(c, cookie, off, 0, T_DATA,
                        struct.pack(">Q", off) + data)
            return False
        if self._bad("read_past_range"):
            extra = bytes(self.data[off + length:off + length + 4096])
            extra += bytes(4096 - len(extra))
            self._chunk(c, cookie, off, 1, T_DATA,
                        struct.pack(">Q", off) + data + extra)
            return True
        if self._bad("read_before_range"):
            # as long as asked, but 4 KiB early (at 0 the offset wraps)
            start = (off - 4096) % (1 << 64)
            early = bytes(self.data[start:start + length]) \
                if off >= 4096 else bytes(length)
            self._chunk(c, cookie, off, 1, T_DATA,
                        struct.pack(">Q", start) + early)
            return True
        if self._bad("read_overlap"):
            self._chunk(c, cookie, off, 0, T_DATA,
                        struct.pack(">Q", off) + data)
            self._chunk(c, cookie, off, 1, T_DATA,
                        struct.pack(">Q", off) + data[:max(length // 2, 1)])
            return True
        if self._bad("read_short"):
            self._chunk(c, cookie, off, 1, T_DATA,
                        struct.pack(">Q", off) + data[:length // 2])
            return True
        self._chunk(c, cookie, off, 1, T_DATA, struct.pack(">Q", off) + data)
        return True

    def extents(self, off, length):
        """The true base:allocation extents of [off, off+length): runs of
        GRAIN-aligned blocks that are all zero (hole|zero) or not (0)."""
        end = min(off + length, self.size)
        out = []
        pos = off
        while pos < end:
            nxt = min((pos // GRAIN + 1) * GRAIN, end)
            st = STATE_HOLE_ZERO if not any(self.data[pos:nxt]) else 0
            if out and out[-1][1] == st:
                out[-1][0] += nxt - pos
            else:
                out.append([nxt - pos, st])
            pos = nxt
        return out

    def _block_status(self, c, cookie, flags, off, length):
        if not c.meta:
            self._error(c, cookie, off, EINVAL, "no meta context")
            return True
        if off + length > self.size:
            self._error(c, cookie, off, EINVAL, "out of range")
            return True
        ctx = BASE_ALLOCATION_ID
        # a reply may cover less than asked: at most 1 MiB, so a client
        # walking extent by extent does not make this O(n^2)
        ext = self.extents(off, min(length, 1 << 20))
        if c.unasked:              # what the unasked context says
            ext = [[min(length, 1 << 20), STATE_HOLE_ZERO]]
        if flags & F_REQ_ONE:
            ext = ext[:1]
        wrap = 1 << (64 if c.extended else 32)
        if self._bad("bs_zero_length"):
            ext = [[0, 0]] + ext
        elif self._bad("bs_backward"):
            ext = [[4096, 0], [wrap - 2048, 0], [8192, 0]]
        elif self._bad("bs_past_end"):
            ext = ext + [[self.size - off - length + (1 << 20), 0]]
        elif self._bad("bs_past_range"):
            ext = [[length + (1 << 20), 0]]
        elif self._bad("bs_unknown_context"):
            ctx = 77
        elif self._bad("bs_empty"):
            ext = []
        if c.extended:
            payload = struct.pack(">II", ctx, len(ext)) + b"".join(
                struct.pack(">QQ", n, st) for n, st in ext)
            self._chunk(c, cookie, off, 1, T_BS_EXT, payload)
        else:
            payload = struct.pack(">I", ctx) + b"".join(
                struct.pack(">II", n & 0xffffffff, st) for n, st in ext)
            self._chunk(c, cookie, off, 1, T_BS, payload)
        return True


def _hangup(s):
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass


def main():
    ap = argparse.ArgumentParser(description="a scriptable fake NBD server")
    ap.add_argument("socket")
    ap.add_argument("--size", type=int, default=1 << 20)
    ap.add_argument("--misbehave", default="",
                    help="comma-separated: " + ", ".join(MISBEHAVIOURS))
    ap.add_argument("--no-structured", action="store_true")
    ap.add_argument("--no-extended", action="store_true")
    ap.add_argument("--export", action="append")
    ap.add_argument("--description")
    a = ap.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    srv = FakeNbd(a.socket, size=a.size, exports=a.export or [""],
                  structured=not a.no_structured,
                  extended=not a.no_extended, description=a.description,
                  misbehave=[m for m in a.misbehave.split(",") if m])
    stop.wait()
    srv.stop()


if __name__ == "__main__":
    main()
