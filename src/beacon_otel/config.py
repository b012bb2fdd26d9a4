"""Configuration: one frozen dataclass, validated at construction, readable from the environment.

Each field says in its metadata which ``BEACON_*`` variable sets it and what kind of value it
holds; parsing the environment and validating values both follow from that, so a new setting
is one field.
"""

from __future__ import annotations

import enum
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any

from beacon_otel.endpoint import IngestUrlError
from beacon_otel.endpoint import normalize_ingest_url as _normalize_url

DEFAULT_INGEST_URL = "https://ingest.beacon.skyware.dev/v1/ingest"

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
    """A per-user private directory for the disk spool."""
    if sys.platform == "win32":  # pragma: no cover - not a supported server platform in CI
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "beacon-otel" / "spool"


class Kind(enum.Enum):
    """What a setting holds: how its variable is parsed and its value checked."""

    TEXT = "text"
    KEY = "key"
    URL = "url"
    BOOL = "bool"
    COUNT = "count"  # an integer >= 1
    BYTES = "bytes"  # an integer >= 0
    SECONDS = "seconds"  # a positive, finite number
    HEADER = "header"  # an HTTP header name, or None
    CALLABLE = "callable"  # a callable, or None; ``package.module:function`` in the environment
    PATH = "path"  # a directory, or None
    MAPPING = "mapping"  # not read from the environment


def setting(kind: Kind, variable: str | None) -> dict[str, Any]:
    """A field's metadata: it holds a ``kind`` of value, set by ``variable`` from the environment."""
    return {"kind": kind, "variable": variable}


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
    counts as no consumer. ``BEACON_CONSUMER_RESOLVER=package.module:function``."""
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
    extra_headers: Mapping[str, str] = field(default_factory=dict, metadata=setting(Kind.MAPPING, None))
    """Additional HTTP headers for the ingest requests (not read from the environment)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name not in ("ingest_key", "ingest_url"):
                value = _checked(f, getattr(self, f.name))
                object.__setattr__(self, f.name, value)
        # A key is needed only to send: dry runs and disabled configs work without one.
        needs_key = self.enabled and not self.dry_run
        if needs_key and not (isinstance(self.ingest_key, str) and self.ingest_key.strip()):
            raise _error("ingest_key", "a non-empty string", self.ingest_key)
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

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_bool(variable: str, raw: str) -> bool:
    """A boolean environment value; raises ``BeaconConfigError`` naming ``variable``."""
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    setting_name = next((name for name, var in ENVIRONMENT.items() if var == variable), None)
    raise BeaconConfigError(
        f"Expected {variable} to be one of true/false/1/0/yes/no, got {raw!r}", setting=setting_name
    )


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
    kind, variable = f.metadata["kind"], f.metadata["variable"]
    if kind is Kind.BOOL:
        return parse_bool(variable, raw)
    if kind is Kind.CALLABLE:
        return _import_callable(f.name, variable, raw)
    if kind in (Kind.COUNT, Kind.BYTES):
        try:
            return int(raw)
        except ValueError:
            raise BeaconConfigError(
                f"Expected {variable} to be an integer, got {raw!r}", setting=f.name
            ) from None
    if kind is Kind.SECONDS:
        try:
            return float(raw)
        except ValueError:
            raise BeaconConfigError(
                f"Expected {variable} to be a number, got {raw!r}", setting=f.name
            ) from None
    return raw


def _checked(f: Field[Any], value: Any) -> Any:
    """``value`` if it suits the field's kind (a path made a ``Path``); else a named error."""
    kind = f.metadata["kind"]
    if kind is Kind.BOOL and not isinstance(value, bool):
        raise _error(f.name, "a bool", value)
    if kind in (Kind.COUNT, Kind.BYTES):
        minimum = 1 if kind is Kind.COUNT else 0
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise _error(f.name, f"an integer >= {minimum}", value)
    if kind is Kind.SECONDS:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not 0 < float(value) < float("inf"):
            raise _error(f.name, "a positive number of seconds", value)
    if kind is Kind.HEADER and value is not None and not _is_header_name(value):
        raise _error(f.name, "an HTTP header name", value)
    if kind is Kind.CALLABLE and value is not None and not callable(value):
        raise _error(f.name, "callable", value)
    if kind is Kind.PATH and value is not None:
        return Path(value)
    return value


def _error(name: str, expected: str, value: object) -> BeaconConfigError:
    variable = ENVIRONMENT.get(name)
    label = f"{name} ({variable})" if variable else name
    return BeaconConfigError(f"Expected {label} to be {expected}, got {value!r}", setting=name)


def _import_callable(name: str, variable: str, reference: str) -> Any:
    """``package.module:function`` as a callable that imports its target on first use."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise BeaconConfigError(
            f"Expected {variable} to be 'package.module:function', got {reference!r}", setting=name
        )
    try:
        found = importlib.util.find_spec(module_name) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise BeaconConfigError(
            f"Expected {variable} to name an importable module, got {reference!r}", setting=name
        )
    return ImportedCallable(module_name, attribute)


class ImportedCallable:
    """A function named in the environment, imported when first called.

    Importing it at startup would import the app's own modules before the instrumentations
    patch the frameworks, and leave the app uninstrumented.
    """

    def __init__(self, module: str, attribute: str) -> None:
        self.reference = f"{module}:{attribute}"
        self._target: Any = None

    def __call__(self, *args: Any) -> Any:
        if self._target is None:
            module_name, _, attribute = self.reference.partition(":")
            target: Any = importlib.import_module(module_name)
            for part in attribute.split("."):
                target = getattr(target, part)
            self._target = target
        return self._target(*args)

    def __repr__(self) -> str:
        return f"ImportedCallable({self.reference!r})"


def _is_header_name(value: object) -> bool:
    token_chars = set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    return isinstance(value, str) and bool(value) and all(c in token_chars for c in value)
