"""A TCP proxy in front of the test S3 server that can make an outage on cue.

The job talks to the proxy's port. ``outage(seconds)`` drops every open connection and
refuses new ones (accepted, then closed at once: a reset) for that long. ``outage_after``
arms one: it begins when the client's bytes have carried ``count`` requests whose first
line contains ``pattern`` (e.g. ``GET /data/images/``), so the outage hits during reads.
Runs in threads of the test process; ``close()`` stops it.
"""

from __future__ import annotations

import socket
import threading
import time


class OutageProxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self.listener = socket.create_server((host, 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.down_until = 0.0
        self.trigger: tuple[bytes, int, float] | None = None
        self.seen = 0
        self.outages: list[tuple[float, float]] = []  # (start, end) monotonic
        self.sockets: set[socket.socket] = set()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def down(self) -> bool:
        return time.monotonic() < self.down_until

    def outage(self, seconds: float) -> None:
        with self.lock:
            now = time.monotonic()
            self.down_until = now + seconds
            self.outages.append((now, now + seconds))
            victims, self.sockets = self.sockets, set()
        for s in victims:
            _close(s)

    def outage_after(self, pattern: str, count: int, seconds: float) -> None:
        with self.lock:
            self.trigger, self.seen = (pattern.encode(), count, seconds), 0

    def close(self) -> None:
        self.closed = True
        _close(self.listener)
        self.outage(0)

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.down():
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                _close(client)  # RST: connection refused, as a stopped server gives
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            with self.lock:
                self.sockets |= {client, server}
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, upstream: bool) -> None:
        try:
            while True:
                chunk = source.recv(65536)
                if not chunk or self.down():
                    break
                if upstream and self._count(chunk):
                    break
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            _close(source)
            _close(sink)

    def _count(self, chunk: bytes) -> bool:
        """Count matching requests; True when this one starts the armed outage (it is not forwarded)."""
        with self.lock:
            if self.trigger is None:
                return False
            pattern, count, seconds = self.trigger
            self.seen += chunk.count(pattern)
            if self.seen < count:
                return False
            self.trigger = None
        self.outage(seconds)
        return True


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()
