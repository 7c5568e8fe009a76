"""A TCP proxy a test can cut or slow down: Kindler loses PostgreSQL, the test keeps it."""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time


class TcpProxy:
    """Forward 127.0.0.1:<port> to a target; cut() drops and refuses connections.

    `delay` (seconds, changeable at any time) holds back every chunk in each
    direction by that long, so a round trip takes twice the delay; chunks are
    queued, not forwarded one after another, so the link stays as fast as
    before and only its latency grows.
    """

    def __init__(self, target_host: str, target_port: int, delay: float = 0.0) -> None:
        self.delay = delay
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._cut = False
        self._closed = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def cut(self) -> None:
        """Drop every forwarded connection and refuse new ones until restore()."""
        with self._lock:
            self._cut = True
            sockets, self._open = self._open, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def restore(self) -> None:
        """Forward new connections again."""
        with self._lock:
            self._cut = False

    def close(self) -> None:
        self.cut()
        self._closed = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                refused = self._cut
            if refused:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        # Each chunk with the time it may leave; None ends the sender.
        due: queue.SimpleQueue[tuple[float, bytes] | None] = queue.SimpleQueue()
        sender = threading.Thread(target=self._send, args=(due, sink), daemon=True)
        sender.start()
        try:
            while data := source.recv(65536):
                due.put((time.monotonic() + self.delay, data))
        except OSError:
            pass
        finally:
            due.put(None)
            sender.join()
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    @staticmethod
    def _send(due: queue.SimpleQueue[tuple[float, bytes] | None], sink: socket.socket) -> None:
        try:
            while (item := due.get()) is not None:
                at, data = item
                if (wait := at - time.monotonic()) > 0:
                    time.sleep(wait)
                sink.sendall(data)
        except OSError:
            pass
