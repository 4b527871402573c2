"""A hand-driven NBD client over a raw socket, for tests that must send
what no real client sends (protocol violations, oversized options,
extended headers, a handshake-less transmission).  Constants are
doc/proto.md's."""
import socket
import struct

NBDMAGIC = 0x4e42444d41474943
IHAVEOPT = 0x49484156454F5054
REPMAGIC = 0x0003e889045565a9
REQ_MAGIC = 0x25609513
EXT_REQ_MAGIC = 0x21e41c71
SIMPLE_MAGIC = 0x67446698
STRUCT_MAGIC = 0x668e33ef
EXT_MAGIC = 0x6e8a278c

OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_STARTTLS = 1, 2, 3, 5
OPT_INFO, OPT_GO, OPT_STRUCTURED, OPT_LIST_META, OPT_SET_META = \
    6, 7, 8, 9, 10
OPT_EXTENDED = 11
REP_ACK, REP_SERVER, REP_INFO, REP_META = 1, 2, 3, 4
ERR = 1 << 31
ERR_UNSUP, ERR_POLICY, ERR_INVALID, ERR_UNKNOWN = ERR + 1, ERR + 2, \
    ERR + 3, ERR + 6
ERR_EXT_HEADER_REQD = ERR + 10

CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM, CMD_CACHE, \
    CMD_WZ, CMD_BS = range(8)
F_FUA, F_NO_HOLE, F_DF, F_REQ_ONE, F_FAST_ZERO, F_PAYLOAD_LEN = \
    1, 2, 4, 8, 16, 32
EPERM, EINVAL, ENOSPC = 1, 22, 28
T_NONE, T_DATA, T_HOLE, T_BS, T_BS_EXT, T_ERROR = 0, 1, 2, 5, 6, 32769
ERR_TOO_BIG = ERR + 9


class Raw:
    """A client that speaks the handshake by hand (sock: a path, or an
    already connected socket with handshake=False)."""

    def __init__(self, sock, flags=3, handshake=True):
        if isinstance(sock, str):
            self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.s.settimeout(10)
            self.s.connect(sock)
        else:
            self.s = sock
            self.s.settimeout(10)
        self.extended = False
        self.structured = False
        if handshake:
            magic, opt, hflags = struct.unpack(">QQH", self.recv(18))
            assert (magic, opt, hflags) == (NBDMAGIC, IHAVEOPT, 3)
            self.s.sendall(struct.pack(">I", flags))

    def recv(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            if not chunk:
                raise EOFError("server closed after %d bytes" % len(buf))
            buf += chunk
        return buf

    def closed(self, timeout=5):
        """True if the server hangs up (EOF) within timeout."""
        self.s.settimeout(timeout)
        try:
            while True:
                if not self.s.recv(65536):
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def send_opt(self, opt, data=b"", length=None):
        n = len(data) if length is None else length
        self.s.sendall(struct.pack(">QII", IHAVEOPT, opt, n) + data)

    def reply(self):
        magic, opt, rtype, n = struct.unpack(">QIII", self.recv(20))
        assert magic == REPMAGIC
        return opt, rtype, self.recv(n)

    def replies(self, opt):
        """Every reply to opt up to the final one."""
        out = []
        while True:
            o, t, d = self.reply()
            assert o == opt
            out.append((t, d))
            if t == REP_ACK or t & ERR:
                return out

    def opt(self, opt, data=b""):
        """Send an option; return every reply up to the final one."""
        self.send_opt(opt, data)
        return self.replies(opt)

    def go(self, name=b"disk", infos=()):
        data = struct.pack(">I", len(name)) + name + \
            struct.pack(">H", len(infos)) + \
            b"".join(struct.pack(">H", i) for i in infos)
        reps = self.opt(OPT_GO, data)
        assert reps[-1][0] == REP_ACK, reps
        info = {}
        for t, d in reps[:-1]:
            assert t == REP_INFO
            info[struct.unpack(">H", d[:2])[0]] = d[2:]
        self.size, self.tflags = struct.unpack(">QH", info[0])
        return info

    def set_meta(self, name, queries):
        data = struct.pack(">I", len(name)) + name + \
            struct.pack(">I", len(queries)) + \
            b"".join(struct.pack(">I", len(q)) + q for q in queries)
        return self.opt(OPT_SET_META, data)

    def request(self, cmd, offset=0, length=0, flags=0, cookie=1,
                payload=b""):
        if self.extended:
            hdr = struct.pack(">IHHQQQ", EXT_REQ_MAGIC, flags, cmd, cookie,
                              offset, length)
        else:
            hdr = struct.pack(">IHHQQI", REQ_MAGIC, flags, cmd, cookie,
                              offset, length)
        self.s.sendall(hdr + payload)

    def chunks(self, read_len=0):
        """Read one full reply: a list of (type, payload) chunks, or for a
        simple reply [("simple", error, data)]."""
        out = []
        while True:
            magic = struct.unpack(">I", self.recv(4))[0]
            if magic == SIMPLE_MAGIC:
                err, cookie = struct.unpack(">IQ", self.recv(12))
                data = self.recv(read_len) if err == 0 and read_len else b""
                return [("simple", err, data)]
            if magic == STRUCT_MAGIC:
                flags, t, cookie, n = struct.unpack(">HHQI", self.recv(16))
            else:
                assert magic == EXT_MAGIC, hex(magic)
                flags, t, cookie, off, n = struct.unpack(">HHQQQ",
                                                         self.recv(28))
            out.append((t, self.recv(n)))
            if flags & 1:
                return out

    def error_of(self, reply):
        if reply[0][0] == "simple":
            return reply[0][1]
        for t, d in reply:
            if t & 0x8000:
                return struct.unpack(">I", d[:4])[0]
        return 0
