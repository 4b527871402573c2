"""A hand-driven NBD client over a raw socket, for tests that must send
what no real client sends (oversized options, a handshake-less
transmission).  Constants are doc/proto.md's."""
import socket
import struct

NBDMAGIC = 0x4e42444d41474943
IHAVEOPT = 0x49484156454F5054
REPMAGIC = 0x0003e889045565a9
REQ_MAGIC = 0x25609513
SIMPLE_MAGIC = 0x67446698
STRUCT_MAGIC = 0x668e33ef

OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST = 1, 2, 3
OPT_INFO, OPT_GO, OPT_STRUCTURED, OPT_LIST_META, OPT_SET_META = \
    6, 7, 8, 9, 10
REP_ACK, REP_SERVER, REP_INFO, REP_META = 1, 2, 3, 4
ERR = 1 << 31
ERR_UNSUP, ERR_INVALID, ERR_UNKNOWN, ERR_TOO_BIG = \
    ERR + 1, ERR + 3, ERR + 6, ERR + 9

CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_BS = 0, 1, 2, 3, 7
T_NONE, T_DATA, T_HOLE, T_BS, T_ERROR = 0, 1, 2, 5, 32769


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
        if handshake:
            magic, opt, hflags = struct.unpack(">QQH", self.recv(18))
            assert (magic, opt) == (NBDMAGIC, IHAVEOPT)
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
        self.send_opt(opt, data)
        return self.replies(opt)

    def go(self, name=b"disk"):
        data = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
        reps = self.opt(OPT_GO, data)
        assert reps[-1][0] == REP_ACK, reps
        for t, d in reps[:-1]:
            if t == REP_INFO and struct.unpack(">H", d[:2])[0] == 0:
                self.size, self.tflags = struct.unpack(">QH", d[2:])
        return reps

    def set_meta(self, name, queries):
        data = struct.pack(">I", len(name)) + name + \
            struct.pack(">I", len(queries)) + \
            b"".join(struct.pack(">I", len(q)) + q for q in queries)
        return self.opt(OPT_SET_META, data)

    def request(self, cmd, offset=0, length=0, flags=0, cookie=1,
                payload=b""):
        self.s.sendall(struct.pack(">IHHQQI", REQ_MAGIC, flags, cmd, cookie,
                                   offset, length) + payload)

    def chunks(self, read_len=0):
        """One full reply: [("simple", error, data)] or a list of
        (type, payload) structured chunks."""
        out = []
        while True:
            magic = struct.unpack(">I", self.recv(4))[0]
            if magic == SIMPLE_MAGIC:
                err, cookie = struct.unpack(">IQ", self.recv(12))
                data = self.recv(read_len) if err == 0 and read_len else b""
                return [("simple", err, data)]
            assert magic == STRUCT_MAGIC, hex(magic)
            flags, t, cookie, n = struct.unpack(">HHQI", self.recv(16))
            out.append((t, self.recv(n)))
            if flags & 1:
                return out
