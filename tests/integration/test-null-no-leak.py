"""A null-co export without read-zeroes must not hand one client the
bytes another client wrote (issue 9, item 1).

null-co stores nothing, so before the fix its read left the request
buffer as it was: NBD read buffers come from malloc, and a reader got
heap memory, including the payloads of other connections' writes.
The rule: no byte a client receives may come from memory the daemon
did not fill for that request.  Here writers keep sending a
recognisable pattern in many sizes (buffers are freed and reused by
malloc between connections and above the per-slot keep size) while
readers on other connections read; every byte read must be zero."""
import os

PATTERN = b"LEAK"
SIZES = [512, 4096, 65536, 128 << 10, (128 << 10) + 4096, 1 << 20,
         5 << 20]


def test_null_co_reads_never_show_other_clients_data(blockd):
    import nbd
    sock = os.path.join(blockd.sockdir, "nbd.sock")
    blockd.cmd("blockdev-add", {"driver": "null-co", "node-name": "n0",
                                "size": 64 << 20, "read-zeroes": False})
    blockd.cmd("nbd-server-start",
               addr={"type": "unix", "data": {"path": sock}})
    blockd.cmd("block-export-add", {"type": "nbd", "id": "e0",
                                    "node-name": "n0", "writable": True})
    uri = "nbd+unix:///n0?socket=" + sock

    def connect(structured=True):
        h = nbd.NBD()
        h.set_request_structured_replies(structured)
        h.connect_uri(uri)
        return h

    def check(got):
        assert PATTERN not in got, "another client's data leaked"
        assert got == bytes(len(got)), "a read returned unfilled memory"

    reader = connect()
    simple_reader = connect(structured=False)
    for rnd in range(3):
        # A writer with many requests in flight (many slots, each with
        # its own buffer), then gone: its buffers go back to malloc.
        w = connect()
        wbufs = []
        for rep in range(2):
            for i, n in enumerate(SIZES):
                data = (PATTERN * (n // len(PATTERN) + 1))[:n]
                b = nbd.Buffer.from_bytearray(bytearray(data))
                wbufs.append(b)
                w.aio_pwrite(b, (i * n) % ((64 << 20) - n))
        while w.aio_in_flight() > 0:
            w.poll(-1)
        # A fresh reader gets fresh buffers; the long-lived ones reuse
        # or regrow theirs.
        fresh = connect(structured=rnd % 2 == 0)
        for h in (fresh, reader, simple_reader):
            rbufs = [nbd.Buffer(n) for n in SIZES for _ in range(2)]
            for b in rbufs:
                h.aio_pread(b, 0)
            while h.aio_in_flight() > 0:
                h.poll(-1)
            for b in rbufs:
                check(b.to_bytearray())
            for n in SIZES:
                check(h.pread(n, 4096))
        # the writer's own reads obey the rule too
        for n in SIZES:
            check(w.pread(n, 0))
        w.shutdown()
        fresh.shutdown()
    reader.shutdown()
    simple_reader.shutdown()
