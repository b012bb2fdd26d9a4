"""A total deadline for one HTTP request, which socket timeouts alone cannot give.

A socket timeout bounds each read, not the request: a reply trickled one byte a second (status
line, headers or body) never trips it and holds the delivery thread for good. So each request
arms a timer; if the request is still running when it fires, the connection's socket is shut
down, which ends any blocked read or write at once (plain or TLS, direct or through a proxy
tunnel), and the transport reports a timeout.

Not covered: the DNS lookup (``getaddrinfo`` cannot be interrupted; the resolver's own timeouts
apply) and a TLS handshake trickled before the wrapped socket exists (bounded per read by the
socket timeout).
"""

from __future__ import annotations

import contextlib
import socket
import threading


class RequestDeadline:
    """Shuts the watched socket down when the running request overruns its time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._timer: threading.Timer | None = None
        self.expired = False
        """True once the current request's time ran out (and its socket was shut down)."""

    def watch(self, sock: socket.socket | None) -> None:
        """The socket the requests now go through (a new connection replaces the old one)."""
        with self._lock:
            self._socket = sock
            expired = self.expired and self._timer is not None
        if expired and sock is not None:
            _shut_down(sock)  # connected after the deadline: end it before anything is sent

    def start(self, seconds: float) -> None:
        """Arm the deadline for one request."""
        timer = threading.Timer(seconds, self._expire)
        timer.daemon = True
        with self._lock:
            self.expired = False
            self._timer = timer
        timer.start()

    def stop(self) -> None:
        """The request is over: disarm (a timer that already fired has done its work)."""
        with self._lock:
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _expire(self) -> None:
        with self._lock:
            if self._timer is None or threading.current_thread() is not self._timer:
                return  # a request that ended in time, or an earlier one's timer
            self.expired = True
            sock = self._socket
        if sock is not None:
            _shut_down(sock)


def _shut_down(sock: socket.socket) -> None:
    # The plain socket's shutdown, also for a TLS socket: SSLSocket.shutdown drops its TLS
    # state under the feet of the thread still reading it. A socket already closed by its
    # connection has no descriptor any more, so this can never reach a reused descriptor.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
