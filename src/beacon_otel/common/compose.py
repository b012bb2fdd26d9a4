"""Several instrumentation hooks as one: the user's own hooks beside Beacon's, each contained."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from beacon_otel.common import guard

Hook = Callable[..., None]


def compose(*hooks: Hook | None) -> Hook | None:
    """One hook calling each given hook in turn, each contained; ``None`` when none is given."""
    present = [h for h in hooks if h is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    # The user's hooks are user code: a failure there is theirs, logged, never re-raised.
    contained_hooks = [
        guard.guarded(f"hook {getattr(h, '__name__', h)!s}", default=None, user_code=True)(h) for h in present
    ]

    def composed(*args: Any, **kwargs: Any) -> None:
        for each in contained_hooks:
            each(*args, **kwargs)

    return composed
