"""Flask: its request (for a consumer resolver), the rule of a 405, and streamed bodies."""

from __future__ import annotations

import functools
import sys
from collections.abc import Mapping
from types import GeneratorType
from typing import Any

from beacon_otel.common import guard
from beacon_otel.frameworks.base import Hook, hook
from beacon_otel.frameworks.wsgi import BodySent, body_closer
from beacon_otel.request.context import RequestContext
from beacon_otel.request.registry import RequestRegistry


def flask_hooks(registry: RequestRegistry) -> dict[str, Hook]:
    """Flask: the environ, the route of a 405, and the resolver inside the request context."""
    import flask  # noqa: F401  (without Flask, fail here at set-up rather than on a request)

    def request_hook(span: Any, environ: Mapping[str, Any]) -> None:
        try:  # inline, as in the ASGI hook
            context = registry.open(span)
            if context is None:
                return
            context.environ = environ
            if EARLY_CONSUMER in environ:  # set_consumer() in an earlier before_request
                context.consumer, context.resolved = environ[EARLY_CONSUMER], True
            request = current_flask_request()
            if request is not None:
                context.request = request
                if request.routing_exception is not None:
                    context.route = flask_rule_of_405(request)
                watch_flask_stream(context, registry.body_sent)
        except Exception:
            guard.internal_error("the Flask request hook")

    hooks = {"request_hook": request_hook}
    if registry.rules.has_resolver:

        @hook("the Flask response hook")
        def response_hook(span: Any, *_: Any) -> None:
            context = registry.get(span)
            if context is None or context.resolved:  # set_consumer() wins
                return
            # Called from start_response, inside the request context: the resolver sees
            # flask.request with whatever the app's auth layer attached to it.
            request = current_flask_request()
            environ = request.environ if request is not None else context.environ
            context.consumer = registry.rules.from_environ(environ or {}, request)
            context.resolved = True

        hooks["response_hook"] = response_hook
    return hooks


EARLY_CONSUMER = "beacon_otel.consumer"
"""The environ key of a consumer named before the Flask request's span started."""


def keep_early_flask_consumer(consumer: str | None) -> bool:
    """Keep ``set_consumer()``'s value on the Flask request whose span has not started yet.

    FlaskInstrumentor starts the span in a ``before_request`` function added when the app is
    instrumented: by hand, after the app's own, which may already know the user. The request
    hook finds the value in the environ. False outside a Flask request.
    """
    if "flask" not in sys.modules:
        return False
    request = current_flask_request()
    if request is None:
        return False
    request.environ[EARLY_CONSUMER] = consumer
    return True


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
            response.call_on_close(body_closer(context, body_sent))
    except Exception:
        guard.internal_error("watching a streamed Flask response")
    return response
