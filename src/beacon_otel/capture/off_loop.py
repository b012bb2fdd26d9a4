"""An ASGI request's consumer resolver, run off the event loop and bounded in time.

A span ends on the thread that ends it: under ASGI, the event loop. A resolver called there
(a database lookup, say) held up every other request of the process while it ran: a 10 s resolver
made three unrelated requests take 9.5 s each. So under a running loop a sync resolver runs on a
small thread pool of its own, an ``async def`` one as a task, both within
``consumer_resolver_timeout``; the request's event is made and queued when the answer (or the
time limit) comes, from a callback on the loop. Past the limit the request has no consumer.
"""

from __future__ import annotations

import concurrent.futures
import logging
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from beacon_otel.common import guard
from beacon_otel.mapping.span_view import SpanView
from beacon_otel.request.consumer import ConsumerRules, answer_text, is_async_resolver
from beacon_otel.request.context import RequestContext

if TYPE_CHECKING:
    import asyncio

logger = logging.getLogger("beacon_otel")

RESOLVER_THREADS = 4
"""Threads for sync resolvers: a resolver stuck past its limit holds one, never the loop."""


class OffLoopResolution:
    """Resolves ASGI consumers off the loop, then hands the request to ``finish``."""

    def __init__(self, rules: ConsumerRules, finish: Callable[[SpanView, RequestContext], None]) -> None:
        self._rules = rules
        self._finish = finish
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._async: bool | None = None  # known once the resolver is imported
        self.pending = 0
        """Requests whose consumer is being resolved: their events are not queued yet."""

    def start(self, span: SpanView, context: RequestContext) -> bool:
        """Resolve ``context``'s consumer off the running loop; False when no loop runs here."""
        # Looked up, not imported: asyncio imports ssl, which nothing may import at start-up
        # (see delivery.transports.guarded); and without asyncio imported no loop can run.
        asyncio = sys.modules.get("asyncio")
        if asyncio is None:
            return False
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        resolver: Any = self._rules.resolver
        if self._async is None:
            self._async = is_async_resolver(resolver)
        if self._async:
            try:
                answer: Any = resolver(context.scope)  # a coroutine: nothing of it runs yet
            except Exception:
                context.consumer, context.resolved = None, True  # a raising resolver: no consumer
                return False
        else:
            answer = loop.run_in_executor(self._threads(), resolver, context.scope)
        task = asyncio.ensure_future(asyncio.wait_for(answer, self._rules.timeout))
        self.pending += 1
        task.add_done_callback(lambda done: self._resolved(done, span, context))
        return True

    def _resolved(self, done: asyncio.Future[Any], span: SpanView, context: RequestContext) -> None:
        self.pending -= 1
        consumer = None
        # The user's code (its answer's str() too): a failure or a timeout is no consumer.
        if not done.cancelled():  # cancelled: the loop is closing
            with guard.contained("the consumer_resolver", user_code=True, level=logging.DEBUG):
                consumer = answer_text(done.result())
        context.consumer, context.resolved = consumer, True
        self._finish(span, context)

    def _threads(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    RESOLVER_THREADS, thread_name_prefix="beacon-otel-resolver"
                )
            return self._pool

    def close(self) -> None:
        """Stop the threads once their resolvers return; nothing waits for them."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
