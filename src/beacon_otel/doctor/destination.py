"""`beacon-otel doctor`: the checks of where events would go, from the settings to the spool.

The settings are read exactly as auto-run reads them (``BeaconConfig.from_env``); then where the
ingest URL resolves and whether the endpoint guard allows it, whether the ingest answers and
accepts the key, and what waits in the spool, per destination.

The ingest is asked with an empty batch, ``{"events": []}``: the contract refuses it (400) and
stores nothing, while a wrong key is refused first (401/403), as HTTP authentication comes
before the body. Its ``Beacon-Probe`` header keeps the dev ingest from counting it as a
rejected batch. ``--send-test-event`` sends one real, stored event instead.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import fields
from datetime import datetime, timezone
from urllib.parse import urlsplit

from beacon_otel.config.endpoint import (
    IPAddress,
    address_problem,
    is_loopback_address,
    is_loopback_host,
    shown_url,
)
from beacon_otel.config.settings import BeaconConfig, BeaconConfigError, disabled_in, unknown_variables
from beacon_otel.delivery.outbound import ingest_transport
from beacon_otel.delivery.outcome import Outcome
from beacon_otel.doctor.report import FAIL, INFO, OK, WARN, Finding, adder
from beacon_otel.spool.files import legacy_batches
from beacon_otel.spool.store import destination_fingerprint, destinations

PROBE_ROUTE = "/beacon-otel/doctor"
PROBE_HEADER = "Beacon-Probe"
"""Marks the empty batch as a probe (docs/ingest-protocol.md): the dev ingest does not count it."""


def fingerprint(key: str) -> str:
    """A key as it may be shown: the start of its SHA-256 and its length, never the key."""
    return f"sha256:{hashlib.sha256(key.encode()).hexdigest()[:12]} ({len(key)} characters)"


def settings(environ: Mapping[str, str], found: list[Finding]) -> BeaconConfig | None:
    """Each setting and where it came from; the configuration, or None when Beacon is off."""
    add = adder(found, "Settings")
    for name, guess in unknown_variables(environ):
        hint = f": did you mean {guess}?" if guess else ""
        add(FAIL, f"{name} is not a Beacon setting and is ignored{hint}")
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        add(FAIL, "OTEL_SDK_DISABLED=true: OpenTelemetry, and so Beacon, is off")
        return None
    if disabled_in(environ):
        add(FAIL, "BEACON_ENABLED is false: Beacon is off")
        return None
    try:
        config = BeaconConfig.from_env(environ)
    except BeaconConfigError as exc:
        if exc.setting == "ingest_key" and not environ.get("BEACON_INGEST_KEY", "").strip():
            add(FAIL, "BEACON_INGEST_KEY is not set: Beacon is off (set it to the project's ingest key)")
        else:
            add(FAIL, f"{exc} (Beacon is off)")
        return None
    for f in fields(BeaconConfig):
        variable = f.metadata["variable"]
        if variable is None:
            continue
        value = getattr(config, f.name)
        shown = fingerprint(value) if f.name == "ingest_key" else repr(value)
        if f.name == "storage_path" and value is None:
            shown = f"{config.spool_directory} (default)"
        source = variable if environ.get(variable, "").strip() else "default"
        add(INFO, f"{f.name} = {shown}  [{source}]")
    if config.dry_run:
        add(WARN, "BEACON_DRY_RUN is true: events stay in the process, nothing is sent")
    return config


def endpoint(config: BeaconConfig, found: list[Finding]) -> bool:
    """The URL's host resolved and every address checked as the transport will; True if allowed."""
    add = adder(found, "Endpoint")
    parts = urlsplit(config.ingest_url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    if parts.scheme == "https" and _proxy_for(config.ingest_url):
        add(INFO, f"{shown_url(config.ingest_url)} through the proxy {_proxy_for(config.ingest_url)}")
        return True
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        add(FAIL, f"{host} does not resolve: {exc}")
        return False
    allowed = True
    # In the resolver's order, which is the order the transport tries them in.
    addresses = dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos)
    for address in addresses:
        problem = address_problem(address, allow_private=config.allow_private_endpoints)
        if parts.scheme == "http" and not is_loopback_address(address):
            allowed = False
            add(FAIL, f"{host} resolves to {address}: plain http is allowed only to this machine; use https")
        elif problem is not None:
            allowed = False
            hint = "; BEACON_ALLOW_PRIVATE_ENDPOINTS=true allows it" if problem.opt_in_helps else ""
            add(FAIL, f"{host} resolves to {address}, {problem}: refused{hint}")
        else:
            refused = _connect_problem(address, port, timeout=min(config.timeout, 3.0))
            if refused is None:
                add(OK, f"{host} resolves to {address}: allowed; port {port} accepts connections")
            else:
                others = "; the next address is tried" if len(addresses) > 1 else ""
                add(WARN, f"{host} resolves to {address}: allowed; port {port}: {refused}{others}")
    return allowed


def _connect_problem(address: IPAddress, port: int, *, timeout: float) -> str | None:
    """Why a TCP connection to ``address`` fails, or ``None`` when it connects."""
    try:
        socket.create_connection((str(address), port), timeout=timeout).close()
    except ConnectionRefusedError:
        return "connection refused"
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def _proxy_for(url: str) -> str | None:
    # Only when the doctor runs, never at start-up (see beacon_otel.delivery.transports.guarded).
    import requests.utils

    proxies = requests.utils.get_environ_proxies(url)
    proxy = proxies.get("https") or proxies.get("all")
    return shown_url(proxy) if proxy else None


def ingest(config: BeaconConfig, found: list[Finding], *, send_test_event: bool) -> None:
    """Ask the ingest through the real transport (endpoint guard, TLS, proxy, key)."""
    add = adder(found, "Ingest")
    if not send_test_event:
        # An ingest answers the empty batch as the contract says; the header lets one that keeps
        # statistics (the dev ingest) tell a probe from a batch refused.
        config = dataclasses.replace(config, extra_headers={**config.extra_headers, PROBE_HEADER: "doctor"})
    body = _test_event() if send_test_event else b'{"events": []}'
    outcome = _probe(config, body)
    where = shown_url(config.ingest_url)
    if outcome.status is None:
        local = is_loopback_host(urlsplit(config.ingest_url).hostname or "")
        hint = (
            f"; for a local dev ingest, start it with: {dev_ingest_command(config.ingest_url)}"
            if local
            else ""
        )
        add(FAIL, f"{where} did not answer: {outcome.detail}{hint}")
    elif 200 <= outcome.status < 300 and send_test_event:
        add(OK, f"{where} answered {outcome.status}: the key is accepted; it stored the test event")
    elif 200 <= outcome.status < 300 or outcome.status == 400:
        # Any server may answer a POST so: only a Beacon ingest that checks keys refuses a wrong one.
        answer = f"{outcome.status} to an empty batch"
        if outcome.status == 400:
            answer += ", as the contract says,"
        wrong = _probe(dataclasses.replace(config, ingest_key=WRONG_KEY), b'{"events": []}')
        if wrong.status in (401, 403):
            add(OK, f"{where} answered {answer} and {wrong.status} to a wrong key: the key is accepted")
        else:
            add(
                WARN,
                f"{where} answered {outcome.status} to an empty batch with this key and "
                f"{wrong.status or 'no answer'} with a wrong one: an ingest that checks no key (the dev "
                "ingest without --key), or not a Beacon ingest; --send-test-event proves it by storing "
                "one event",
            )
    elif outcome.status in (401, 403):
        add(FAIL, f"{where} refused the key {fingerprint(config.ingest_key)}: {outcome.detail}")
    else:
        add(FAIL, f"{where}: {outcome.detail}")


def dev_ingest_command(url: str) -> str:
    """The command that starts a dev ingest where ``url`` points, on its port."""
    parts = urlsplit(url)
    return f"beacon-otel dev-ingest --port {parts.port or (443 if parts.scheme == 'https' else 80)}"


WRONG_KEY = "beacon-otel-doctor-wrong-key"
"""The key of the second probe: a Beacon ingest refuses it (401/403), whatever else answers 400."""


def _probe(config: BeaconConfig, body: bytes) -> Outcome:
    """One POST through exactly the processor's transport."""
    transport = ingest_transport(config)
    try:
        return transport.send(body, "beacon-otel-doctor-" + uuid.uuid4().hex)
    finally:
        transport.close()


def _test_event() -> bytes:
    ts = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    event = {"ts": ts, "method": "GET", "route": PROBE_ROUTE, "path": PROBE_ROUTE, "status": 200}
    event |= {"duration_ms": 0, "consumer": "beacon-otel-doctor", "error": None}
    return json.dumps({"events": [event]}).encode()


def spool(config: BeaconConfig, found: list[Finding]) -> None:
    """What waits in the spool root, per destination (only this one's is ever sent from here)."""
    add = adder(found, "Spool")
    if not config.spool_enabled:
        add(INFO, "off (dry run, or BEACON_MAX_STORAGE_BYTES=0)")
        return
    root = config.spool_directory
    if not root.exists():
        add(OK, f"{root}: empty (created on first need)")
        return
    if not os.access(root, os.W_OK | os.X_OK):
        add(FAIL, f"{root} is not writable by this user: batches that cannot be sent would be lost")
        return
    mine = destination_fingerprint(config.ingest_url, config.ingest_key or "")
    states = [d for d in destinations(root) if d.batches or d.fingerprint == mine]
    for state in states:
        age = (
            f", oldest from {datetime.fromtimestamp(state.oldest).isoformat(timespec='seconds')}"
            if state.oldest
            else ""
        )
        if state.fingerprint == mine:
            sizes = f"{state.batches} batches, {state.bytes} bytes{age}"
            add(OK, f"{root / state.fingerprint} (this ingest and key): {sizes}")
        else:
            add(
                WARN,
                f"{root / state.fingerprint} (another ingest URL or key, not sent from here): "
                f"{state.events} events in {state.batches} batches, {state.bytes} bytes{age}; "
                "'beacon-otel spool-deliver' with that BEACON_INGEST_KEY and BEACON_INGEST_URL sends them",
            )
    legacy = legacy_batches(root)
    if legacy:
        add(
            WARN,
            f"{root}: {len(legacy)} batches of an earlier version, never sent (their ingest is not "
            "recorded); removed after 48 h",
        )
    if not states and not legacy:
        add(OK, f"{root}: empty")
