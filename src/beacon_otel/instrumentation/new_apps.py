"""Every app a framework makes from now on, instrumented: the set-up beacon-otel's instrumentors share."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from beacon_otel.common import guard, patching


class NewApps:
    """Wraps an app class's ``__init__`` so that each new app is instrumented; ``stop`` undoes it."""

    def __init__(self, framework: str, site: patching.PatchSite) -> None:
        self._action = f"instrumenting a {framework} app"
        self.site = site

    def start(self, cls: Any, instrument_app: Callable[..., None], kwargs: dict[str, Any]) -> None:
        """From now on, ``instrument_app(app, **kwargs)`` right after each ``cls()`` is made."""
        action = self._action

        def instrumenting(original: Any) -> Any:
            @functools.wraps(original)
            def init(app: Any, *args: Any, **init_kwargs: Any) -> None:
                original(app, *args, **init_kwargs)
                # The app is made whatever happens here: a failure only leaves it uninstrumented.
                with guard.contained(action):
                    instrument_app(app, **kwargs)

            return init

        patching.patch(cls, "__init__", instrumenting, site=self.site)

    def stop(self) -> None:
        """Put the class's own ``__init__`` back; apps already made stay instrumented."""
        patching.undo(self.site)
