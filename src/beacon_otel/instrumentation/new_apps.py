"""Every app a framework makes from now on, instrumented: the set-up beacon-otel's instrumentors share."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from beacon_otel.common import guard


class NewApps:
    """Wraps an app class's ``__init__`` so that each new app is instrumented; ``stop`` undoes it."""

    def __init__(self, framework: str) -> None:
        self._action = f"instrumenting a {framework} app"
        self._cls: Any = None
        self._original: Any = None

    def start(self, cls: Any, instrument_app: Callable[..., None], kwargs: dict[str, Any]) -> None:
        """From now on, ``instrument_app(app, **kwargs)`` right after each ``cls()`` is made."""
        original = cls.__init__
        action = self._action

        @functools.wraps(original)
        def init(app: Any, *args: Any, **init_kwargs: Any) -> None:
            original(app, *args, **init_kwargs)
            # The app is made whatever happens here: a failure only leaves it uninstrumented.
            with guard.contained(action):
                instrument_app(app, **kwargs)

        self._cls, self._original = cls, original
        cls.__init__ = init

    def stop(self) -> None:
        """Put the class's own ``__init__`` back; apps already made stay instrumented."""
        if self._original is not None:
            self._cls.__init__ = self._original
            self._cls = self._original = None
