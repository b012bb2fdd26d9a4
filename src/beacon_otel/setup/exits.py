"""What is buffered goes out however the process ends: SIGTERM, SIGINT, or a server's own exit.

Most exits run ``atexit`` (a normal return, ``sys.exit``, SIGINT's KeyboardInterrupt, gunicorn's
sync, gthread, gevent and eventlet workers), and the delivery worker flushes there. Two do not:

- Python's default SIGTERM ends the process at once. Where SIGTERM still has the default action,
  Beacon's handler delivers (within ``shutdown_timeout``, the rest spooled), then ends the
  process with the default action, as if it had not been there.
- multiprocessing's child processes (granian's workers) end with ``os._exit`` once their
  target returns: no exit handler either, but multiprocessing's own finalizers run, and one of
  them delivers.
- uvicorn (alone, ``--workers N``, or gunicorn's ``UvicornWorker``) handles SIGTERM itself,
  shuts down gracefully, then restores the handler it found and raises the signal again. That
  handler is the default one whenever the app (and ``configure()``) is imported after uvicorn
  took the signal, or gunicorn's worker reset it: the process ends with no exit handler. So
  Beacon delivers when uvicorn's shutdown has served the last request, before the re-raise.

:func:`flush_at_exit` registers a processor (and its provider, whose other exporters lose
their spans the same way) for both.
"""

from __future__ import annotations

import _thread
import functools
import logging
import multiprocessing.util
import os
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable, Coroutine
from types import FrameType
from typing import TYPE_CHECKING, Any

from beacon_otel.common import cooperative, patching
from beacon_otel.common.guard import contained

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from beacon_otel.capture.processor import BeaconSpanProcessor

logger = logging.getLogger("beacon_otel")

SERVER_PATCH = patching.site(
    "uvicorn: Beacon delivers at the end of Server.shutdown",
    package="uvicorn",
    target="uvicorn.server.Server.shutdown",
    when="once Beacon is set up (auto-run or configure()) and uvicorn is imported",
)
_Registered = tuple["weakref.ref[BeaconSpanProcessor]", "weakref.ref[TracerProvider] | None"]
_registered: list[_Registered] = []
_registered_lock = threading.Lock()
_signalled = False
"""Set when a SIGTERM reached Beacon's chained handler: the server's own exit follows."""


def flush_at_exit(processor: BeaconSpanProcessor, provider: TracerProvider | None = None) -> None:
    """Deliver ``processor``'s events (then flush ``provider``) before SIGTERM or uvicorn end us."""
    with _registered_lock:
        _registered.append((weakref.ref(processor), weakref.ref(provider) if provider is not None else None))
        _follow_forks()
    install_sigterm_handler()
    hook_servers()
    _finalize_in_this_process()
    warn_where_exit_cannot_be_followed()


def deliver_now() -> None:
    """Shut down every registered processor within its own ``shutdown_timeout``; never raises."""
    with _registered_lock:
        pairs = [(p(), v() if v is not None else None) for p, v in _registered]
        _registered.clear()
    for processor, provider in pairs:
        if processor is None:
            continue
        with contained("delivering before the process ends"):
            started = time.monotonic()
            processor.shutdown()  # flush within shutdown_timeout, the rest to the spool
            remaining = processor.config.shutdown_timeout - (time.monotonic() - started)
            if provider is not None and remaining > 0:
                provider.force_flush(int(remaining * 1000))


# -- SIGTERM ---------------------------------------------------------------------------------


def install_sigterm_handler() -> None:
    """Put Beacon's SIGTERM handler in front of the one in force (main thread only)."""
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_IGN or getattr(previous, "_beacon_otel", False):
        return  # ignored on purpose, or ours already
    if previous is None:
        return  # set from C code we cannot call back into: leave it alone
    handler = functools.partial(_on_sigterm, previous)
    handler._beacon_otel = True  # type: ignore[attr-defined]
    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:
        # Not the main thread. Asked, not checked: under eventlet, current_thread() is a green
        # thread even on the main one.
        logger.debug("beacon-otel: set up outside the main thread; no SIGTERM handler")


def _on_sigterm(previous: Any, signum: int, frame: FrameType | None) -> None:
    global _signalled
    if callable(previous):
        # The server's own handler (uvicorn's, an app's): it shuts down gracefully and ends
        # the process; its end (atexit, or the uvicorn hook below) delivers after the last
        # request. Delivering here would miss the requests still in flight.
        _signalled = True
        previous(signum, frame)
        return
    signal.signal(signum, signal.SIG_DFL)
    if cooperative.is_green():
        # The handler may run in the event loop's own greenlet (gevent's hub), which must
        # never wait: a new green thread delivers, then ends the process. SIGALRM's default
        # action bounds it, should the green thread never get to run.
        if signal.getsignal(signal.SIGALRM) is signal.SIG_DFL:
            signal.alarm(int(2 * _bound()) + 2)
        _thread.start_new_thread(_deliver_then_raise, (signum,))
        return
    _deliver_bounded()
    signal.raise_signal(signum)  # then end exactly as the default action would


def _deliver_then_raise(signum: int) -> None:
    deliver_now()
    signal.raise_signal(signum)


def _deliver_bounded() -> None:
    # On a helper thread: the handler interrupts the main thread wherever it is, perhaps
    # holding a lock the delivery needs; then the wait ends at the bound, not never.
    # The bound is read first: deliver_now() takes the processors off the list as it starts.
    bound = 2 * _bound() + 1
    helper = threading.Thread(target=deliver_now, name="beacon-otel-exit", daemon=True)
    helper.start()
    helper.join(bound)


def _bound() -> float:
    """Seconds the registered processors may take to deliver, each within its own timeout."""
    with _registered_lock:
        processors = [ref() for ref, _ in _registered]
    return sum(p.config.shutdown_timeout for p in processors if p is not None)


# -- servers that end without atexit ---------------------------------------------------------

_warned: set[str] = set()


def warn_where_exit_cannot_be_followed() -> None:
    """One WARNING per process under a server whose way of ending workers can skip delivery."""
    for server, problem in _unfollowable_servers():
        if server not in _warned:
            _warned.add(server)
            logger.warning("beacon-otel: %s (docs/servers.md)", problem)


def _unfollowable_servers() -> list[tuple[str, str]]:
    found = []
    uwsgi = sys.modules.get("uwsgi")
    if uwsgi is not None:
        options = getattr(uwsgi, "opt", {}) or {}
        if not any(key in options for key in ("die-on-term", b"die-on-term")):
            found.append(
                (
                    "uwsgi",
                    "under uWSGI 2.0 without --die-on-term, SIGTERM is a brutal reload and the events "
                    "buffered then are lost: add --die-on-term (die-on-term = true in the ini file)",
                )
            )
        else:
            found.append(
                (
                    "uwsgi",
                    "uWSGI can end a worker at SIGTERM without running exit handlers, losing what it "
                    "buffered since the last flush: set BEACON_FLUSH_INTERVAL=1 to keep that small",
                )
            )
    eventlet = sys.modules.get("eventlet.patcher")
    if eventlet is not None and eventlet.is_monkey_patched("thread"):
        found.append(
            (
                "eventlet",
                "under eventlet the delivery at SIGTERM may not run while the hub sleeps, losing what "
                "was buffered since the last flush: set BEACON_FLUSH_INTERVAL=1 to keep that small",
            )
        )
    return found


def hook_servers() -> None:
    """Deliver at the end of a uvicorn server's shutdown, before it re-raises a signal."""
    module = sys.modules.get("uvicorn.server")
    server = getattr(module, "Server", None)
    if server is None or patching.is_patched(server, "shutdown"):
        return
    if getattr(server, "shutdown", None) is None:
        logger.warning(
            "beacon-otel: this uvicorn version ends its processes in a way Beacon cannot follow; "
            "see docs/servers.md for the one line that delivers the last events at SIGTERM"
        )
        return
    patching.patch(server, "shutdown", _after, site=SERVER_PATCH)


def _after(original: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def shutdown(self: Any, *args: Any, **kwargs: Any) -> None:
        await original(self, *args, **kwargs)
        # uvicorn re-raises the signals it caught once serve() returns, with the handler it
        # found before: with the default one, that ends the process with no exit handler.
        if getattr(self, "_captured_signals", None) or _signalled:
            deliver_now()

    return shutdown


_finalizer_pid = 0


def _finalize_in_this_process(_: object = None) -> None:
    """Deliver from multiprocessing's exit finalizers too (they run where atexit does not)."""
    global _finalizer_pid
    if _finalizer_pid != os.getpid():
        _finalizer_pid = os.getpid()
        multiprocessing.util.Finalize(None, deliver_now, exitpriority=100)


class _ForkMark:
    """Weak-referenceable key for multiprocessing's after-fork callbacks."""


_FORK_MARK = _ForkMark()
_following_forks = False


def _follow_forks() -> None:
    """Set the exits up again in every child process; once, and only once Beacon delivers somewhere.

    Not at import: a process that imports Beacon and never turns it on (switched off, or only
    the CLI) gets no fork hooks, and ``os.register_at_fork`` cannot be undone. Called with
    ``_registered_lock`` held.
    """
    global _following_forks
    if _following_forks:
        return
    _following_forks = True
    # A multiprocessing child clears the parent's finalizers as it starts, then runs these.
    multiprocessing.util.register_after_fork(_FORK_MARK, _finalize_in_this_process)
    os.register_at_fork(after_in_child=hook_servers)  # gunicorn loads UvicornWorker in the master
