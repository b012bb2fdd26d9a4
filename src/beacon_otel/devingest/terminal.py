"""The one sanitiser for text that reaches a terminal or a log: no control character gets through.

Routes, paths, consumers, error texts and the key names of a rejected batch come from requests
the app served or from whoever sent the batch. Printed raw, an escape sequence in one of them
can set the window title, clear the screen or forge a line ("INFO: all batches accepted").
Every C0 control (newlines and tabs too: one value, one line), DEL and every C1 control
(U+0080..U+009F: U+009B alone starts a sequence on many terminals) is shown as "?".

It imports nothing, so the dry-run console (``beacon_otel.console``) uses it too.
"""

from __future__ import annotations

import re

_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with every C0 control, DEL and C1 control replaced by "?"."""
    return _CONTROLS.sub("?", text)
