"""The one way tests wait: poll a condition with a deadline, never a bare sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest


def wait_until(
    condition: Callable[[], Any], timeout: float = 30.0, what: str = "the condition", interval: float = 0.005
) -> Any:
    """Poll ``condition`` until it returns something truthy, and return that.

    Fails the test naming ``what`` once ``timeout`` seconds have passed.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
