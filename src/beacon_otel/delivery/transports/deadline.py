"""A total deadline for one HTTP request, which socket timeouts alone cannot give.

A socket timeout bounds each read, not the request: a reply trickled one byte a second (status
line, headers or body) never trips it and holds the delivery thread for good. So each request
has a due time, and a watchdog thread shuts the connection's socket down if the request is still
running then, which ends any blocked read or write at once (plain or TLS, direct or through a
proxy tunnel); the transport reports a timeout.

One watchdog per transport, long-lived, rather than a timer per request: a ``threading.Timer``
is a new OS thread per POST (about a fifth of the POST's client CPU, most of it in the kernel).
Arming the deadline only records the due time: the watchdog already sleeps until an earlier
due time, or for a whole request timeout since the last request began, and looks again when it
wakes; it is notified only when it sleeps for longer than that (after a quiet spell), and it
ends after ``LINGER`` seconds without a request (the next one makes a new watchdog). It is made
again in a forked child (threads do not survive ``fork``) and once gevent or eventlet have
patched ``threading`` (then it is a greenlet, waiting on green primitives).

Not covered: the DNS lookup (``getaddrinfo`` cannot be interrupted; the resolver's own timeouts
apply) and a TLS handshake trickled before the wrapped socket exists (bounded per read by the
socket timeout).
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import threading
import time
from collections.abc import Callable

from beacon_otel.common import cooperative

LINGER = 60.0
"""Seconds an idle watchdog waits for another request before its thread ends."""


class RequestDeadline:
    """Shuts the watched socket down when the running request overruns its time."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._pid = os.getpid()
        self._sync = cooperative.primitives()
        self._watchdog: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._running = False
        self._due = 0.0
        self._period = 0.0  # the last request's time: how long the watchdog sleeps while requests come
        self._started = 0  # requests begun: the watchdog tells a quiet spell from a busy one
        self._wakes_at = math.inf  # when the watchdog's wait ends (inf: it waits to be notified, or is gone)
        self.expired = False
        """True once the current request's time ran out (and its socket was shut down)."""

    def watch(self, sock: socket.socket | None) -> None:
        """The socket the requests now go through (a new connection replaces the old one)."""
        with self._sync.lock:
            self._socket = sock
            expired = self.expired and self._running
        if expired and sock is not None:
            _shut_down(sock)  # connected after the deadline: end it before anything is sent

    def start(self, seconds: float) -> None:
        """Arm the deadline for one request: it may run ``seconds`` from now."""
        if self._pid != os.getpid() or not self._sync.is_current():
            self._renew()
        sync = self._sync
        new_watchdog = None
        with sync.lock:
            self.expired = False
            self._running = True
            self._due = due = self._clock() + seconds
            self._period = seconds
            self._started += 1
            if self._watchdog is None:
                new_watchdog = self._watchdog = cooperative.daemon_thread(
                    lambda: self._watch(sync), "beacon-otel-request-deadline"
                )
                self._wakes_at = due
            elif due < self._wakes_at:
                sync.wake.notify()  # it sleeps past this request's end: have it look again
        if new_watchdog is not None:
            try:
                new_watchdog.start()  # no lock held: under gevent, start() switches to the new greenlet
            except BaseException:
                # No thread (the process is at its limit): the next request tries again, rather
                # than count on a watchdog that never ran. This one fails, as the caller sees.
                with sync.lock:
                    if self._watchdog is new_watchdog:
                        self._watchdog, self._running = None, False
                raise

    def stop(self) -> None:
        """The request is over: disarm (a watchdog that already fired has done its work)."""
        with self._sync.lock:
            self._running = False

    def close(self) -> None:
        """End the watchdog's thread now; a later request makes a new one."""
        if self._pid != os.getpid() or not self._sync.is_current():
            self._renew()
            return
        with self._sync.lock:
            if self._watchdog is not None:
                self._renew_locked()

    def _renew(self) -> None:
        """Fresh primitives and no watchdog: after a fork (the thread is gone, a lock may be held
        for good) or once ``threading`` was patched (the old primitives block the hub)."""
        self._pid = os.getpid()
        self._sync, old = cooperative.primitives(), self._sync
        # The socket stays watched: a connection made before the fork may be reused after it.
        self._watchdog, self._running, self.expired = None, False, False
        self._wakes_at = math.inf
        del old  # an old watchdog, if any, sees the new primitives when it wakes and ends

    def _renew_locked(self) -> None:
        sync = self._sync
        self._sync = cooperative.primitives()
        self._watchdog = None
        self._wakes_at = math.inf
        sync.wake.notify()

    def _watch(self, sync: cooperative.Primitives) -> None:
        """The watchdog's loop: sleep until a due time, shut an overrunning request's socket down."""
        quiet_looks = 0
        seen = -1
        with sync.lock:
            while self._sync is sync:
                now = self._clock()
                if self._running and not self.expired and now >= self._due:
                    self.expired = True
                    sock = self._socket
                    if sock is not None:
                        _shut_down(sock)
                if self._running and not self.expired:
                    wake_at = self._due
                elif self._started != seen:
                    # Requests come: sleep a request's time, so that the next one (which is due
                    # at least that long after it begins) need not wake this thread.
                    seen, quiet_looks = self._started, 0
                    wake_at = now + self._period
                elif quiet_looks == 0:
                    quiet_looks = 1
                    wake_at = now + LINGER  # quiet: the next request notifies
                else:
                    self._watchdog = None  # quiet for long: the next request makes a new watchdog
                    self._wakes_at = math.inf
                    return
                self._wakes_at = wake_at
                sync.wake.wait(max(0.0, wake_at - now))


def _shut_down(sock: socket.socket) -> None:
    # The plain socket's shutdown, also for a TLS socket: SSLSocket.shutdown drops its TLS
    # state under the feet of the thread still reading it. A socket already closed by its
    # connection has no descriptor any more, so this can never reach a reused descriptor.
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
