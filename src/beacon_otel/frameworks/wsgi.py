"""What the WSGI instrumentations miss: a Flask 405's rule, and streamed bodies' real duration.

Flask's and Django's instrumentations end the request's span when the view returns, before
the server iterates a streamed body: a 2 s ``stream_with_context``-less download arrives as
2 ms. PEP 3333 servers call the response iterable's ``close()`` after its last byte; both
frameworks let a callback run there, so the request's event waits for it and its duration
is the time until the last byte was handed to the server.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from types import GeneratorType
from typing import Any

from beacon_otel.common import guard
from beacon_otel.request.context import RequestContext

BodySent = Callable[[RequestContext], None]


def flask_rule_of_405(request: Any) -> str | None:
    """The rule of a Flask request refused with 405: the rule that matched its path, not its method.

    Only called when routing failed (``request.routing_exception``), so this costs nothing on
    the usual request.
    """
    from werkzeug.exceptions import MethodNotAllowed

    error = request.routing_exception
    if not isinstance(error, MethodNotAllowed) or not error.valid_methods:
        return None
    import flask

    adapter = flask.current_app.url_map.bind_to_environ(request.environ)
    rule, _ = adapter.match(method=next(iter(error.valid_methods)), return_rule=True)
    return str(rule.rule)


def current_flask_request() -> Any:
    """The request Flask is serving in this context, or ``None`` outside a request."""
    import flask

    # Flask's own context variable (Flask 2.3+): one lookup, where flask.has_request_context()
    # and flask.request._get_current_object() go through two LocalProxy look-ups each.
    variable = getattr(flask.globals, "_cv_request", None)
    if variable is not None:
        flask_context = variable.get(None)
        return flask_context.request if flask_context is not None else None
    return flask.request._get_current_object() if flask.has_request_context() else None  # type: ignore[attr-defined]


def watch_flask_stream(context: RequestContext, body_sent: BodySent) -> None:
    """When Flask's response is streamed, keep the event until the server closes its body."""
    import flask

    # A partial of a module-level function: this runs on every Flask request, and a decorated
    # closure built per request (functools.wraps copying its metadata) costs several times more.
    flask.after_this_request(functools.partial(_after_flask_view, context, body_sent))


def _after_flask_view(context: RequestContext, body_sent: BodySent, response: Any) -> Any:
    # A generator body (Response(gen()), stream_with_context): werkzeug's is_streamed also
    # holds for error pages rendered through an iterator, which are sent at once.
    try:
        if type(response.response) is GeneratorType:
            _waiting(context)
            response.call_on_close(_on_close(context, body_sent))
    except Exception:
        guard.internal_error("watching a streamed Flask response")
    return response


def watch_django_stream(context: RequestContext, response: Any, body_sent: BodySent) -> None:
    """When Django's response is streamed, keep the event until the server closes its body."""
    if getattr(response, "streaming", False):
        closers = getattr(response, "_resource_closers", None)
        # Django calls these from response.close(), which the WSGI server calls at the end.
        if isinstance(closers, list):
            _waiting(context)
            closers.append(_on_close(context, body_sent))


def _waiting(context: RequestContext) -> None:
    if context.body_sent_ns is None:
        context.body_sent_ns = 0  # streaming: the event waits


def _on_close(context: RequestContext, body_sent: BodySent) -> Callable[[], None]:
    @guard.guarded("ending a streamed request", default=None)
    def closed() -> None:
        context.body_sent_ns = time.time_ns()
        body_sent(context)

    return closed
