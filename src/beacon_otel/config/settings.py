"""Configuration: one frozen dataclass, validated at construction, readable from the environment.

Each field says in its metadata which ``BEACON_*`` variable sets it and what kind of value it
holds; parsing the environment and validating values both follow from that
(:mod:`beacon_otel.config.kinds`), so a new setting is one field.
"""

from __future__ import annotations

import difflib
import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any

from beacon_otel.config import kinds
from beacon_otel.config.endpoint import IngestUrlError
from beacon_otel.config.endpoint import normalize_ingest_url as _normalize_url
from beacon_otel.config.kinds import Kind, setting

DEFAULT_INGEST_URL = "https://ingest.beacon.skyware.dev/v1/ingest"

DEFAULT_EXCLUDE_PATHS: tuple[str, ...] = (
    r"/_?(health|healthz|healthcheck|health[-_]check|livez|readyz|ping)/?$",
    r"^/favicon\.ico$",
    r"^/robots\.txt$",
    r"^/apple-touch-icon[\w-]*\.png$",
)
"""Requests that are not API traffic, kept out of events unless ``exclude_paths`` says otherwise."""

DEFAULT_EXCLUDED_ENDINGS: tuple[str, ...] = (
    *("health", "healthz", "healthcheck", "health-check", "health_check", "livez", "readyz", "ping"),
    *("/", ".ico", ".txt", ".png", "\n"),  # "$" also matches before a final newline
)
"""How every path :data:`DEFAULT_EXCLUDE_PATHS` matches ends: any other path is kept without a
search (``str.endswith`` is a tenth of the regular expression's cost on the usual path)."""

ConsumerResolver = Callable[[Any], "str | None"]
ErrorCallback = Callable[[BaseException], None]


class BeaconConfigError(ValueError):
    """A setting has a value beacon-otel cannot work with; ``setting`` names the field."""

    def __init__(self, message: str, *, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting
        """The field the error is about (``"ingest_key"``), or ``None``."""

    @property
    def variable(self) -> str | None:
        """The environment variable of that field (``"BEACON_INGEST_KEY"``), if it has one."""
        return ENVIRONMENT.get(self.setting or "")


def default_storage_path() -> Path:
    """A per-user private directory for the disk spool (on AWS Lambda, under /tmp, its only
    writable directory, which lives as long as the sandbox)."""
    if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        return Path(tempfile.gettempdir()) / "beacon-otel" / "spool"
    if sys.platform == "win32":  # pragma: no cover - not a supported server platform in CI
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "beacon-otel" / "spool"


@dataclass(frozen=True, slots=True, kw_only=True)
class BeaconConfig:
    """Everything beacon-otel needs to know; precedence is argument > ``BEACON_*`` env > default."""

    ingest_key: str = field(default="", metadata=setting(Kind.KEY, "BEACON_INGEST_KEY"))
    """Per-project ingest key, sent as ``Authorization: Bearer``. ``BEACON_INGEST_KEY``. Required
    unless ``dry_run`` or not ``enabled``."""
    ingest_url: str = field(default=DEFAULT_INGEST_URL, metadata=setting(Kind.URL, "BEACON_INGEST_URL"))
    """Full endpoint, or a base URL to which ``/v1/ingest`` is appended. ``BEACON_INGEST_URL``."""
    batch_size: int = field(default=100, metadata=setting(Kind.COUNT, "BEACON_BATCH_SIZE"))
    """Events per request; a full batch is sent at once. ``BEACON_BATCH_SIZE``."""
    flush_interval: float = field(default=5.0, metadata=setting(Kind.SECONDS, "BEACON_FLUSH_INTERVAL"))
    """Seconds between background flushes. ``BEACON_FLUSH_INTERVAL``."""
    max_buffer_size: int = field(default=10_000, metadata=setting(Kind.COUNT, "BEACON_MAX_BUFFER_SIZE"))
    """Events held in memory; past it the oldest are dropped and counted. ``BEACON_MAX_BUFFER_SIZE``."""
    timeout: float = field(default=5.0, metadata=setting(Kind.SECONDS, "BEACON_TIMEOUT"))
    """Seconds one HTTP request may take in all: connecting, sending, the reply's headers and
    body. ``BEACON_TIMEOUT``."""
    shutdown_timeout: float = field(default=5.0, metadata=setting(Kind.SECONDS, "BEACON_SHUTDOWN_TIMEOUT"))
    """Upper bound on the flush at shutdown, in seconds. ``BEACON_SHUTDOWN_TIMEOUT``."""
    enabled: bool = field(default=True, metadata=setting(Kind.BOOL, "BEACON_ENABLED"))
    """``False`` makes the processor a no-op. ``BEACON_ENABLED``."""
    dry_run: bool = field(default=False, metadata=setting(Kind.BOOL, "BEACON_DRY_RUN"))
    """Keep events in memory (see ``beacon_otel.testing``); nothing leaves the process.
    ``BEACON_DRY_RUN``."""
    debug: bool = field(default=False, metadata=setting(Kind.BOOL, "BEACON_DEBUG"))
    """Log every delivery failure at WARNING. ``BEACON_DEBUG``."""
    compression: bool = field(default=False, metadata=setting(Kind.BOOL, "BEACON_COMPRESSION"))
    """Gzip request bodies (``Content-Encoding: gzip``). ``BEACON_COMPRESSION``."""
    consumer_header: str | None = field(default=None, metadata=setting(Kind.HEADER, "BEACON_CONSUMER_HEADER"))
    """Header whose value identifies the caller, before ``X-API-Key`` and ``Authorization``.
    ``BEACON_CONSUMER_HEADER``."""
    consumer_resolver: ConsumerResolver | None = field(
        default=None, metadata=setting(Kind.CALLABLE, "BEACON_CONSUMER_RESOLVER")
    )
    """``resolver(request) -> str | None`` overriding the header rules; a raising resolver
    counts as no consumer. ``BEACON_CONSUMER_RESOLVER=package.module:function``. Under ASGI it
    runs off the event loop (a sync one in a thread, an ``async def`` one as a task), bounded by
    ``consumer_resolver_timeout``."""
    consumer_resolver_timeout: float = field(
        default=1.0, metadata=setting(Kind.SECONDS, "BEACON_CONSUMER_RESOLVER_TIMEOUT")
    )
    """Seconds a consumer resolver may take for one request; past it, the request has no
    consumer. ``BEACON_CONSUMER_RESOLVER_TIMEOUT``."""
    on_error: ErrorCallback | None = field(default=None, metadata=setting(Kind.CALLABLE, "BEACON_ON_ERROR"))
    """Called with every delivery failure (a ``DeliveryError``), on the delivery thread; never
    allowed to break anything. ``BEACON_ON_ERROR=package.module:function``."""
    storage_path: Path | None = field(default=None, metadata=setting(Kind.PATH, "BEACON_STORAGE_PATH"))
    """Directory of the disk spool; ``None`` means a per-user private directory.
    ``BEACON_STORAGE_PATH``."""
    max_storage_bytes: int = field(
        default=50 * 1024 * 1024, metadata=setting(Kind.BYTES, "BEACON_MAX_STORAGE_BYTES")
    )
    """Upper bound on the disk spool; 0 turns the spool off. ``BEACON_MAX_STORAGE_BYTES``."""
    allow_private_endpoints: bool = field(
        default=False, metadata=setting(Kind.BOOL, "BEACON_ALLOW_PRIVATE_ENDPOINTS")
    )
    """Allow an ingest on a private network address (https only; link-local and metadata
    addresses stay refused). ``BEACON_ALLOW_PRIVATE_ENDPOINTS``."""
    error_detail: str = field(
        default="first_line",
        metadata=setting(Kind.CHOICE, "BEACON_ERROR_DETAIL", ("type", "first_line", "full")),
    )
    """How much of an unhandled exception's message an event's ``error`` carries: ``type``
    (``RuntimeError``), ``first_line`` (``RuntimeError: the message's first line``) or ``full``.
    Database drivers put the statement's parameters on later lines. ``BEACON_ERROR_DETAIL``."""
    exclude_paths: tuple[str, ...] = field(
        default=DEFAULT_EXCLUDE_PATHS, metadata=setting(Kind.PATTERNS, "BEACON_EXCLUDE_PATHS")
    )
    """Regular expressions searched in each request's path: a request that matches makes no
    event (its spans are untouched). Replaces the default list (health checks, favicons,
    robots.txt); ``()`` keeps every request. ``BEACON_EXCLUDE_PATHS``, comma-separated, ``none``
    for none."""
    server_spans: str = field(
        default="auto", metadata=setting(Kind.CHOICE, "BEACON_SERVER_SPANS", ("auto", "stock"))
    )
    """What makes the HTTP SERVER spans under ``opentelemetry-instrument``: ``auto`` lets
    beacon-otel's lean span source stand in for a framework's OpenTelemetry instrumentation
    (Flask, Django) when no trace or metrics exporter is configured, so Beacon is the spans' only
    reader; ``stock`` always keeps the OpenTelemetry instrumentation. ``BEACON_SERVER_SPANS``."""
    extra_headers: Mapping[str, str] = field(default_factory=dict, metadata=setting(Kind.MAPPING, None))
    """Additional HTTP headers for the ingest requests (not read from the environment)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name not in ("ingest_key", "ingest_url"):
                value = _checked(f, getattr(self, f.name))
                object.__setattr__(self, f.name, value)
        if self.batch_size > self.max_buffer_size:
            # Memory could never hold a full batch: nothing would go before the interval, and while
            # the ingest is down nothing would go to disk before memory overflowed.
            raise BeaconConfigError(
                f"Expected batch_size (BEACON_BATCH_SIZE) to be at most max_buffer_size "
                f"(BEACON_MAX_BUFFER_SIZE, {self.max_buffer_size}), got {self.batch_size}",
                setting="batch_size",
            )
        # A key is needed only to send: dry runs and disabled configs work without one.
        needs_key = self.enabled and not self.dry_run
        if needs_key:
            problem = key_problem(self.ingest_key)
            if problem is not None:
                # Never the key's value in the message (a bytes key's repr is the whole key).
                raise BeaconConfigError(
                    f"Expected ingest_key (BEACON_INGEST_KEY) to be a non-empty string of visible ASCII "
                    f"characters, got {problem}",
                    setting="ingest_key",
                )
        try:
            url = _normalize_url(self.ingest_url, allow_private=self.allow_private_endpoints)
        except IngestUrlError as exc:
            raise BeaconConfigError(
                f"Expected ingest_url (BEACON_INGEST_URL) to be {exc.expected}, got {exc.shown!r}",
                setting="ingest_url",
            ) from None
        object.__setattr__(self, "ingest_url", url)

    @property
    def spool_directory(self) -> Path:
        """Where undeliverable batches wait on disk."""
        return self.storage_path if self.storage_path is not None else default_storage_path()

    @property
    def spool_enabled(self) -> bool:
        """Whether undeliverable batches go to disk: only when sending for real, with room."""
        return self.enabled and not self.dry_run and self.max_storage_bytes > 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> BeaconConfig:
        """Build a config from ``BEACON_*`` variables; keyword arguments take precedence."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            variable = f.metadata["variable"]
            raw = env.get(variable) if variable else None
            if raw is None or raw.strip() == "":
                continue
            values[f.name] = _parse(f, raw.strip())
        values.update(overrides)
        return cls(**values)


ENVIRONMENT: dict[str, str] = {
    f.name: f.metadata["variable"] for f in fields(BeaconConfig) if f.metadata["variable"]
}
"""Each field read from the environment, and its variable."""


OTHER_VARIABLES = frozenset({"BEACON_RAISE_INTERNAL_ERRORS"})
"""``BEACON_*`` variables read elsewhere: not settings, not unknown either."""


def unknown_variables(environ: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """Each ``BEACON_*`` variable no setting reads, with the known one it most likely misspells.

    ``BEACON_INGST_URL`` would otherwise be ignored in silence, and events go to the default
    ingest; ``BEACON_INGEST_KY`` would only say that the key is missing.
    """
    known = set(ENVIRONMENT.values()) | OTHER_VARIABLES
    # Compared without the prefix they all share, which would make any two look alike.
    suffixes = sorted(name.removeprefix("BEACON_") for name in known)
    unknown = []
    for name in sorted(environ):
        if name.startswith("BEACON_") and name not in known:
            guess = _closest(name.removeprefix("BEACON_"), suffixes)
            unknown.append((name, f"BEACON_{guess}" if guess else None))
    return unknown


def _closest(suffix: str, suffixes: list[str]) -> str | None:
    """The setting a misspelt or shortened name means: BEACON_INGST_URL, BEACON_KEY."""
    closest = difflib.get_close_matches(suffix, suffixes, n=1, cutoff=0.7)
    if closest:
        return closest[0]
    words = set(suffix.split("_"))
    containing = [known for known in suffixes if words <= set(known.split("_"))]
    return containing[0] if len(containing) == 1 else None


def describe_unknown(unknown: list[tuple[str, str | None]]) -> str:
    """``BEACON_INGST_URL (did you mean BEACON_INGEST_URL?), BEACON_X``: names only, no values."""
    return ", ".join(f"{name} (did you mean {guess}?)" if guess else name for name, guess in unknown)


def parse_bool(variable: str, raw: str) -> bool:
    """A boolean environment value; raises ``BeaconConfigError`` naming ``variable``."""
    try:
        return kinds.parse_bool(raw)
    except kinds.Unsuitable as exc:
        setting_name = next((name for name, var in ENVIRONMENT.items() if var == variable), None)
        raise BeaconConfigError(
            f"Expected {variable} to {exc.expected}, got {exc.value!r}", setting=setting_name
        ) from None


def disabled_in(environ: Mapping[str, str]) -> bool:
    """True when ``BEACON_ENABLED`` turns Beacon off (an invalid value is for from_env to report)."""
    raw = environ.get("BEACON_ENABLED", "").strip()
    try:
        return bool(raw) and not parse_bool("BEACON_ENABLED", raw)
    except BeaconConfigError:
        return False


def normalize_ingest_url(url: object) -> str:
    """Return the full ingest endpoint for a full or base URL, refusing unsafe forms."""
    try:
        return _normalize_url(url)
    except IngestUrlError as exc:
        raise BeaconConfigError(
            f"Expected ingest_url (BEACON_INGEST_URL) to be {exc.expected}, got {exc.shown!r}",
            setting="ingest_url",
        ) from None


def _parse(f: Field[Any], raw: str) -> Any:
    """The field's value from its variable's text; errors name the variable."""
    try:
        return kinds.parse(f.metadata["kind"], raw)
    except kinds.Unsuitable as exc:
        raise BeaconConfigError(
            f"Expected {f.metadata['variable']} to {exc.expected}, got {exc.value!r}", setting=f.name
        ) from None


def _checked(f: Field[Any], value: Any) -> Any:
    """``value`` if it suits the field's kind (a path made a ``Path``); else a named error."""
    try:
        return kinds.checked(f.metadata["kind"], value, f.metadata["choices"])
    except kinds.Unsuitable as exc:
        raise _error(f.name, exc.expected, value) from None


def key_problem(key: object) -> str | None:
    """What is wrong with an ingest key, described without its value; ``None`` when it can be sent.

    A key travels in an HTTP header: a zero-width space or a line break from a copy-paste would
    fail every request ("UnicodeEncodeError") and be retried and spooled forever.
    """
    if not isinstance(key, str):
        size = f" of {len(key)} bytes" if isinstance(key, (bytes, bytearray)) else ""
        return f"a {type(key).__name__} value{size}"
    if not key.strip():
        return "an empty string" if not key else f"{len(key)} blank characters"
    for position, char in enumerate(key):
        if not "!" <= char <= "~":
            return f"{len(key)} characters with {_character_name(char)} at position {position + 1}"
    return None


def _character_name(char: str) -> str:
    names = {" ": "a space", "\n": "a line break", "\r": "a carriage return", "\t": "a tab"}
    return names.get(char, f"U+{ord(char):04X}")


def _error(name: str, expected: str, value: object) -> BeaconConfigError:
    variable = ENVIRONMENT.get(name)
    label = f"{name} ({variable})" if variable else name
    return BeaconConfigError(f"Expected {label} to {expected}, got {value!r}", setting=name)
