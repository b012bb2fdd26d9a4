"""One sanitiser for every terminal and log line: no C0, DEL or C1 control from a request gets through."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
import requests

from beacon_otel.delivery.transports.console import event_line
from beacon_otel.devingest import DevIngest, format_event, format_rejection, format_summary
from beacon_otel.devingest.terminal import printable
from tests.support.events import wire_event

AUTH = {"Authorization": "Bearer test-key", "Content-Type": "application/json"}
# Sets the window title, clears the screen, starts a CSI with the C1 byte, forges a line.
HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x9b31m\r\nINFO: all batches accepted\x7f"
EVENT = wire_event(status=500)


def controls(text: str) -> list[str]:
    """The control characters left in text (newlines between lines aside)."""
    return [c for c in text if c != "\n" and (ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F)]


@pytest.mark.parametrize("code", [*range(0x20), 0x7F, *range(0x80, 0xA0)])
def test_every_c0_del_and_c1_control_is_shown_as_a_question_mark(code: int) -> None:
    """Each of the 65 controls becomes "?"; the text around it, Unicode included, is kept."""
    assert printable(f"é{chr(code)}→") == "é?→"


def test_a_rejected_batchs_key_names_reach_stdout_as_one_plain_line() -> None:
    """The line printed for a rejected batch shows unknown key names without their escapes."""
    lines: list[str] = []
    with DevIngest(log=lines.append) as ingest:
        body = json.dumps({"events": [{**EVENT, HOSTILE: 1}]})
        assert requests.post(ingest.url, data=body, headers=AUTH, timeout=10).status_code == 400
        rejection = ingest.stats()["rejections"][0]
    assert len(lines) == 1 and lines[0].startswith("rejected batch (400)")
    assert controls(lines[0]) == []
    assert "?]0;pwned??[2J?31m??INFO: all batches accepted?" in lines[0]
    assert controls(format_rejection(rejection)) == []


def stored(**changes: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Send a valid event carrying controls the contract allows (C1 in routes, ESC in error
    texts), return the dev ingest's summary and stored events."""
    with DevIngest() as ingest:
        body = json.dumps({"events": [{**EVENT, **changes}]})
        assert requests.post(ingest.url, data=body, headers=AUTH, timeout=10).status_code == 202
        return ingest.summary(), ingest.events()


def test_summary_and_tail_print_no_control_from_stored_events() -> None:
    """`summary` and `tail` lines show routes, consumers and errors with their controls as "?"."""
    summary, events = stored(
        route="/users/\x9b2J{user_id}",
        path="/users/\x9b2J",
        consumer="acme\x9b31m\x85",
        error=HOSTILE,
        validation_errors=[{"field": "body.\x1b[2Jname", "message": "bad"}],
        status=422,
    )
    assert controls(format_summary(summary)) == []
    for colour in (False, True):
        line = format_event(events[0], colour=colour)
        assert controls(line.replace("\x1b[33m", "").replace("\x1b[31m", "").replace("\x1b[0m", "")) == []


def test_the_summary_command_prints_no_control() -> None:
    """`beacon-otel summary` against a running dev ingest: its whole output is free of controls."""
    with DevIngest() as ingest:
        body = json.dumps({"events": [{**EVENT, "route": "/\x9b2J", "path": "/\x9b2J", "error": HOSTILE}]})
        assert requests.post(ingest.url, data=body, headers=AUTH, timeout=10).status_code == 202
        bad = json.dumps({"events": [{**EVENT, HOSTILE: 1}]})
        assert requests.post(ingest.url, data=bad, headers=AUTH, timeout=10).status_code == 400
        command = [sys.executable, "-m", "beacon_otel.cli", "summary", "--url", ingest.base_url]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1  # a batch was rejected
    assert "/?2J" in result.stdout and "INFO: all batches accepted" in result.stdout
    assert controls(result.stdout) == []


def test_dry_run_console_lines_are_one_plain_line() -> None:
    """A dry-run line shows route, path, consumer and validation field names without controls, on one line."""
    event = {
        **EVENT,
        "route": "/r\x9b2J",
        "path": "/p\x1b[2J",
        "consumer": "acme\nINFO: forged line",
        "error": HOSTILE,
        "validation_errors": [{"field": "body.\nINFO: forged\x9b", "message": "bad"}],
    }
    line = event_line(event)
    assert line.startswith(
        "beacon-otel dry run: GET /r?2J path=/p?[2J 500 12ms consumer=acme?INFO: forged line"
    )
    assert "\n" not in line and controls(line) == []
