"""Locks, conditions and the delivery thread, made from whatever ``threading`` is at the time.

gevent and eventlet replace ``threading``'s locks and threads with green ones when they
monkey-patch, and servers patch late: gunicorn's gevent and eventlet workers patch in the worker,
after the master, with Beacon already loaded, has forked. A native lock made before the patch
and then shared by green threads stops the whole process: a greenlet holding it yields (to
start the delivery "thread", for instance), the next greenlet that takes it blocks the only OS
thread, and the hub never runs again. So the delivery worker makes its primitives here, checks
with :func:`is_current` that the implementation has not changed since (after a fork, after a
patch) and makes them again when it has, before any thread of its own runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass


def flavour() -> object:
    """What tells the threading implementation in force; changes when gevent or eventlet patch."""
    # Both patch the lock type (and the thread start) of ``threading`` itself.
    return threading.Lock


@dataclass(frozen=True)
class Primitives:
    """One lock and the two conditions the delivery worker shares with its thread."""

    lock: threading.Lock
    wake: threading.Condition
    """The delivery thread waits on it for work."""
    idle: threading.Condition
    """Flushes wait on it for the delivery thread to finish a request."""
    made_with: object
    """The :func:`flavour` they were made with."""

    def is_current(self) -> bool:
        """Whether ``threading`` is still what these were made from."""
        return threading.Lock is self.made_with


def primitives() -> Primitives:
    """A lock and its two conditions, of the threading implementation in force now."""
    lock = threading.Lock()
    return Primitives(lock, threading.Condition(lock), threading.Condition(lock), flavour())


def is_green() -> bool:
    """Whether gevent or eventlet has patched ``threading`` (threads are greenlets)."""
    return str(getattr(flavour(), "__module__", "")).partition(".")[0] in ("gevent", "eventlet")


def daemon_thread(target: Callable[[], None], name: str) -> threading.Thread:
    """A daemon thread (a greenlet under gevent or eventlet), made but not started.

    Start it once no lock is held: under gevent, ``start()`` yields to the new greenlet.
    """
    return threading.Thread(target=target, name=name, daemon=True)
