"""`beacon-otel doctor`: whether this environment would send Beacon events, checked step by step.

It reads the configuration exactly as auto-run does (``BeaconConfig.from_env``), then checks
what the processor cannot know at startup: where the ingest URL resolves and whether the
endpoint guard allows it, whether the ingest answers and accepts the key, which frameworks are
instrumented, what else makes SERVER spans, whether the OTLP exporter the settings name is
installed, and what waits in the spool. Each finding is one line in plain words.

The ingest is asked with an empty batch, ``{"events": []}``: the contract refuses it (400) and
stores nothing, while a wrong key is refused first (401/403), as HTTP authentication comes
before the body. ``--send-test-event`` sends one real, stored event instead.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import ipaddress
import json
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from urllib.parse import urlsplit

import requests.utils

from beacon_otel.config import BeaconConfig, BeaconConfigError, disabled_in
from beacon_otel.endpoint import address_problem, is_loopback_address, is_loopback_host, shown_url
from beacon_otel.spool import destination_fingerprint, destinations
from beacon_otel.spool_files import legacy_batches
from beacon_otel.transport import IngestTransport

OK, WARN, FAIL, INFO = "ok", "warn", "FAIL", "info"
PROBE_ROUTE = "/beacon-otel/doctor"

# (framework distribution, its instrumentation, the beacon-otel extra that installs it, if any)
FRAMEWORKS = (
    ("fastapi", "opentelemetry-instrumentation-fastapi", "fastapi"),
    ("starlette", "opentelemetry-instrumentation-starlette", "starlette"),
    ("flask", "opentelemetry-instrumentation-flask", "flask"),
    ("django", "opentelemetry-instrumentation-django", "django"),
    ("falcon", "opentelemetry-instrumentation-falcon", "falcon"),
    ("pyramid", "opentelemetry-instrumentation-pyramid", "pyramid"),
    ("tornado", "opentelemetry-instrumentation-tornado", "tornado"),
    ("aiohttp", "opentelemetry-instrumentation-aiohttp-server", "aiohttp"),
    # Instrumented by beacon-otel itself (beacon_otel.instrumentation): always present.
    ("litestar", "beacon-otel", "litestar"),
    ("bottle", "beacon-otel", "bottle"),
)
# Other per-request analytics SDKs: each adds its own middleware and counts every request again.
OTHER_ANALYTICS = ("apitally", "beaconhq", "peekapi", "moesifasgi", "moesifwsgi", "treblle")
_OTLP_PACKAGES = {
    "grpc": "opentelemetry-exporter-otlp-proto-grpc",
    "http/protobuf": "opentelemetry-exporter-otlp-proto-http",
}


@dataclass(frozen=True)
class Finding:
    """One line of the report: how it stands (ok, warn, FAIL, info) and what was found."""

    section: str
    level: str
    text: str


def _adder(found: list[Finding], section: str) -> Callable[[str, str], None]:
    """``add(level, text)`` appending findings of one section."""
    return lambda level, text: found.append(Finding(section, level, text))


def fingerprint(key: str) -> str:
    """A key as it may be shown: the start of its SHA-256 and its length, never the key."""
    return f"sha256:{hashlib.sha256(key.encode()).hexdigest()[:12]} ({len(key)} characters)"


def diagnose(environ: Mapping[str, str], *, send_test_event: bool = False) -> list[Finding]:
    """Every finding about the environment ``environ``, in report order."""
    found: list[Finding] = []
    config = _settings(environ, found)
    if config is not None and config.enabled:
        if _endpoint(config, found) and not config.dry_run:
            _ingest(config, found, send_test_event=send_test_event)
        _spool(config, found)
    _frameworks(found)
    _double_server_spans(environ, found)
    _exporters(environ, found)
    return found


def _settings(environ: Mapping[str, str], found: list[Finding]) -> BeaconConfig | None:
    add = _adder(found, "Settings")
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


def _endpoint(config: BeaconConfig, found: list[Finding]) -> bool:
    """The URL's host resolved and every address checked as the transport will; True if allowed."""
    add = _adder(found, "Endpoint")
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
    for address in sorted(
        {ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos}, key=str
    ):
        problem = address_problem(address, allow_private=config.allow_private_endpoints)
        if parts.scheme == "http" and not is_loopback_address(address):
            allowed = False
            add(FAIL, f"{host} resolves to {address}: plain http is allowed only to this machine; use https")
        elif problem is not None:
            allowed = False
            hint = "; BEACON_ALLOW_PRIVATE_ENDPOINTS=true allows it" if problem.opt_in_helps else ""
            add(FAIL, f"{host} resolves to {address}, {problem}: refused{hint}")
        else:
            add(OK, f"{host} resolves to {address}: allowed")
    return allowed


def _proxy_for(url: str) -> str | None:
    proxies = requests.utils.get_environ_proxies(url)
    proxy = proxies.get("https") or proxies.get("all")
    return shown_url(proxy) if proxy else None


def _ingest(config: BeaconConfig, found: list[Finding], *, send_test_event: bool) -> None:
    """Ask the ingest through the real transport (endpoint guard, TLS, proxy, key)."""
    add = _adder(found, "Ingest")
    transport = IngestTransport(
        url=config.ingest_url,
        key=config.ingest_key,
        timeout=config.timeout,
        compression=config.compression,
        allow_private=config.allow_private_endpoints,
        extra_headers=config.extra_headers,
    )
    body = _test_event() if send_test_event else b'{"events": []}'
    try:
        outcome = transport.send(body, "beacon-otel-doctor-" + uuid.uuid4().hex)
    finally:
        transport.close()
    where = shown_url(config.ingest_url)
    if outcome.status is None:
        local = is_loopback_host(urlsplit(config.ingest_url).hostname or "")
        hint = "; for a local dev ingest, start it with: beacon-otel dev-ingest" if local else ""
        add(FAIL, f"{where} did not answer: {outcome.detail}{hint}")
    elif 200 <= outcome.status < 300:
        what = "stored the test event" if send_test_event else "accepted an empty batch (stores nothing)"
        add(OK, f"{where} answered {outcome.status}: the key is accepted; it {what}")
    elif outcome.status == 400 and not send_test_event:
        add(OK, f"{where} answered 400 to an empty batch, as the contract says: the key is accepted")
    elif outcome.status in (401, 403):
        add(FAIL, f"{where} refused the key {fingerprint(config.ingest_key)}: {outcome.detail}")
    else:
        add(FAIL, f"{where}: {outcome.detail}")


def _test_event() -> bytes:
    ts = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    event = {"ts": ts, "method": "GET", "route": PROBE_ROUTE, "path": PROBE_ROUTE, "status": 200}
    event |= {"duration_ms": 0, "consumer": "beacon-otel-doctor", "error": None}
    return json.dumps({"events": [event]}).encode()


def _installed(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def unseen_frameworks() -> list[tuple[str, str, str]]:
    """``(framework, version, instrumentation to install)`` of each framework whose requests no
    instrumentation would see (Starlette under FastAPI is seen through FastAPI's)."""
    fastapi_covered = _installed("fastapi") and _installed("opentelemetry-instrumentation-fastapi")
    unseen = []
    for framework, instrumentation, _ in FRAMEWORKS:
        version = _installed(framework)
        if version is None or _installed(instrumentation) is not None:
            continue
        if framework == "starlette" and fastapi_covered:
            continue
        unseen.append((framework, version, instrumentation))
    return unseen


def _frameworks(found: list[Finding]) -> None:
    add = _adder(found, "Frameworks")
    any_framework = False
    fastapi_covered = _installed("fastapi") and _installed("opentelemetry-instrumentation-fastapi")
    for framework, instrumentation, extra in FRAMEWORKS:
        if (version := _installed(framework)) is None:
            continue
        any_framework = True
        if (instrumented := _installed(instrumentation)) is not None:
            add(OK, f"{framework} {version}, instrumented by {instrumentation} {instrumented}")
        elif framework == "starlette" and fastapi_covered:
            add(INFO, f"starlette {version} (under FastAPI; a plain Starlette app needs {instrumentation})")
        else:
            alternative = f'  (or pip install "beacon-otel[{extra}]")' if extra else ""
            add(
                FAIL,
                f"{framework} {version} is installed but not instrumented: pip install {instrumentation}"
                + alternative,
            )
    if not any_framework:
        add(WARN, "no FastAPI, Starlette, Flask or Django here: only raw ASGI/WSGI apps are covered")


def _double_server_spans(environ: Mapping[str, str], found: list[Finding]) -> None:
    add = _adder(found, "SERVER spans")
    disabled = {n.strip() for n in environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "").split(",")}
    native = _installed("fastapi") and importlib.util.find_spec("fastapi.telemetry") is not None
    if native and _installed("opentelemetry-instrumentation-fastapi") and "fastapi" not in disabled:
        add(
            WARN,
            f"FastAPI {_installed('fastapi')} makes its own SERVER span per request (native telemetry) "
            "and opentelemetry-instrumentation-fastapi makes another: Beacon counts the request once, "
            "other exporters get both; FastAPI(telemetry={'tracing': False}) leaves one",
        )
    others = [name for name in OTHER_ANALYTICS if _installed(name)]
    if others:
        add(WARN, f"other request analytics installed ({', '.join(others)}): each counts requests itself")
    if not native and not others:
        add(OK, "one source of SERVER spans per request")


def _exporters(environ: Mapping[str, str], found: list[Finding]) -> None:
    """Whether the OTLP exporter the settings pick is installed: without it auto-run fails."""
    add = _adder(found, "OpenTelemetry")
    names = [n.strip() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    add(INFO, f"OTEL_TRACES_EXPORTER = {','.join(names) or '(unset)'}; Beacon needs no exporter")
    if "otlp" not in names:
        return
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "grpc"
    ).strip()
    package = _OTLP_PACKAGES.get(protocol)
    if package is None:
        add(FAIL, f"OTLP protocol {protocol!r} is not one the SDK knows (grpc, http/protobuf)")
    elif (version := _installed(package)) is None:
        add(FAIL, f"OTLP over {protocol} needs {package}, which is not installed: pip install {package}")
    else:
        add(OK, f"OTLP over {protocol}: {package} {version} is installed")


def _spool(config: BeaconConfig, found: list[Finding]) -> None:
    add = _adder(found, "Spool")
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
        whose = (
            "this ingest and key"
            if state.fingerprint == mine
            else "another ingest or key, not sent from here"
        )
        add(
            OK if state.fingerprint == mine else INFO,
            f"{root / state.fingerprint} ({whose}): {state.batches} batches, {state.bytes} bytes{age}",
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


def report(findings: list[Finding]) -> tuple[str, int]:
    """The findings as text, and the exit status: 0 only when nothing FAILed."""
    lines, section = [], None
    for finding in findings:
        if finding.section != section:
            section = finding.section
            lines += ["", section]
        lines.append(f"  {finding.level:<4}  {finding.text}")
    failures = sum(f.level == FAIL for f in findings)
    lines.append("")
    lines.append(f"{failures} problem(s) to fix." if failures else "Everything needed is in order.")
    return "\n".join(lines).lstrip("\n"), 1 if failures else 0
