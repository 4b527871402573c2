"""A QMP liveness probe for tests that run a long data-path operation:
a thread sends commands on its own QMP connection, one after another,
and records how long each took to answer.  A stalled loop thread shows
up as one long answer.  It is a liveness bound, not a speed test."""
import threading
import time


class QmpSampler:
    """Run commands (names, cycled) on qmp from a thread until stop().

        with QmpSampler(d.qmp(), ["query-version"]) as s:
            long_operation()
        assert s.worst() < 1.0

    Only answers to commands sent while the block is running count.
    """

    def __init__(self, qmp, commands, interval=0.02):
        self.qmp = qmp
        self.commands = list(commands)
        self.interval = interval
        self.samples = []           # (command, seconds)
        self.error = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        i = 0
        try:
            while not self._stop.is_set():
                name = self.commands[i % len(self.commands)]
                i += 1
                t0 = time.monotonic()
                self.qmp.cmd(name)
                self.samples.append((name, time.monotonic() - t0))
                self._stop.wait(self.interval)
        except Exception as e:  # reported by stop()
            self.error = e

    def __enter__(self):
        self._thread.start()
        # the first answer proves the probe works before the load starts
        deadline = time.monotonic() + 10
        while not self.samples and self.error is None and \
                time.monotonic() < deadline:
            time.sleep(0.005)
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self._stop.set()
        self._thread.join(60)
        assert not self._thread.is_alive(), "a QMP command never answered"
        self.qmp.close()
        if self.error is not None:
            raise self.error

    def worst(self, name=None):
        """The longest answer time (of one command, or of all)."""
        times = [t for n, t in self.samples if name is None or n == name]
        return max(times) if times else 0.0

    def count(self, name=None):
        return len([1 for n, _ in self.samples if name is None or n == name])
