"""Configuration: one frozen dataclass, validated at construction, readable from the environment."""

from __future__ import annotations

import importlib
import importlib.util
import ipaddress
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from beacon_otel.endpoint import literal_problem

DEFAULT_INGEST_URL = "https://ingest.beacon.skyware.dev/v1/ingest"
INGEST_PATH = "/v1/ingest"

ConsumerResolver = Callable[[Any], "str | None"]
ErrorCallback = Callable[[BaseException], None]


class BeaconConfigError(ValueError):
    """A setting has a value beacon-otel cannot work with."""


def default_storage_path() -> Path:
    """A per-user private directory for the disk spool."""
    if sys.platform == "win32":  # pragma: no cover - not a supported server platform in CI
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return base / "beacon-otel" / "spool"


@dataclass(frozen=True, slots=True, kw_only=True)
class BeaconConfig:
    """Everything beacon-otel needs to know; precedence is argument > ``BEACON_*`` env > default."""

    ingest_key: str = ""
    """Per-project ingest key, sent as ``Authorization: Bearer``. ``BEACON_INGEST_KEY``. Required
    unless ``dry_run`` or not ``enabled``."""
    ingest_url: str = DEFAULT_INGEST_URL
    """Full endpoint, or a base URL to which ``/v1/ingest`` is appended. ``BEACON_INGEST_URL``."""
    batch_size: int = 100
    """Events per request; a full batch is sent at once. ``BEACON_BATCH_SIZE``."""
    flush_interval: float = 5.0
    """Seconds between background flushes. ``BEACON_FLUSH_INTERVAL``."""
    max_buffer_size: int = 10_000
    """Events held in memory; past it the oldest are dropped and counted. ``BEACON_MAX_BUFFER_SIZE``."""
    timeout: float = 5.0
    """Per-request HTTP timeout in seconds. ``BEACON_TIMEOUT``."""
    shutdown_timeout: float = 5.0
    """Upper bound on the flush at shutdown, in seconds. ``BEACON_SHUTDOWN_TIMEOUT``."""
    enabled: bool = True
    """``False`` makes the processor a no-op. ``BEACON_ENABLED``."""
    dry_run: bool = False
    """Keep events in memory (see ``beacon_otel.testing``); nothing leaves the process.
    ``BEACON_DRY_RUN``."""
    debug: bool = False
    """Log every delivery failure at WARNING. ``BEACON_DEBUG``."""
    compression: bool = False
    """Gzip request bodies (``Content-Encoding: gzip``). ``BEACON_COMPRESSION``."""
    consumer_header: str | None = None
    """Header whose value identifies the caller, before ``X-API-Key`` and ``Authorization``.
    ``BEACON_CONSUMER_HEADER``."""
    consumer_resolver: ConsumerResolver | None = None
    """``resolver(request) -> str | None`` overriding the header rules; a raising resolver
    counts as no consumer. ``BEACON_CONSUMER_RESOLVER=package.module:function``."""
    on_error: ErrorCallback | None = None
    """Called with every delivery failure (a ``DeliveryError``), on the delivery thread; never
    allowed to break anything. ``BEACON_ON_ERROR=package.module:function``."""
    storage_path: Path | None = None
    """Directory of the disk spool; ``None`` means a per-user private directory.
    ``BEACON_STORAGE_PATH``."""
    max_storage_bytes: int = 50 * 1024 * 1024
    """Upper bound on the disk spool. ``BEACON_MAX_STORAGE_BYTES``."""
    allow_private_endpoints: bool = False
    """Allow an ingest on a private network address. ``BEACON_ALLOW_PRIVATE_ENDPOINTS``."""
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    """Additional HTTP headers for the ingest requests (not read from the environment)."""

    def __post_init__(self) -> None:
        # A key is needed only to send: dry runs and disabled configs work without one.
        needs_key = self.enabled and not self.dry_run
        if needs_key and not (isinstance(self.ingest_key, str) and self.ingest_key.strip()):
            raise BeaconConfigError(
                f"Expected ingest_key (BEACON_INGEST_KEY) to be a non-empty string, got {self.ingest_key!r}"
            )
        object.__setattr__(self, "ingest_url", normalize_ingest_url(self.ingest_url))
        host = urlsplit(self.ingest_url).hostname or ""
        problem = literal_problem(host, allow_private=self.allow_private_endpoints is True)
        if problem:
            raise BeaconConfigError(
                f"Expected ingest_url (BEACON_INGEST_URL) to be a public or loopback host, got "
                f"{self.ingest_url!r}: {problem} (set allow_private_endpoints / "
                "BEACON_ALLOW_PRIVATE_ENDPOINTS for a self-hosted ingest on an internal network)"
            )
        _require_int("batch_size", self.batch_size, minimum=1)
        _require_int("max_buffer_size", self.max_buffer_size, minimum=1)
        _require_int("max_storage_bytes", self.max_storage_bytes, minimum=0)
        _require_positive_float("flush_interval", self.flush_interval)
        _require_positive_float("timeout", self.timeout)
        _require_positive_float("shutdown_timeout", self.shutdown_timeout)
        for name in ("enabled", "dry_run", "debug", "compression", "allow_private_endpoints"):
            if not isinstance(getattr(self, name), bool):
                raise BeaconConfigError(f"Expected {name} to be a bool, got {getattr(self, name)!r}")
        if self.consumer_header is not None and not _is_header_name(self.consumer_header):
            raise BeaconConfigError(
                "Expected consumer_header (BEACON_CONSUMER_HEADER) to be an HTTP header name, "
                f"got {self.consumer_header!r}"
            )
        for name in _CALLABLE_FIELDS:
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise BeaconConfigError(f"Expected {name} to be callable, got {value!r}")
        if self.storage_path is not None:
            object.__setattr__(self, "storage_path", Path(self.storage_path))

    @property
    def spool_directory(self) -> Path:
        """Where undeliverable batches wait on disk."""
        return self.storage_path if self.storage_path is not None else default_storage_path()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> BeaconConfig:
        """Build a config from ``BEACON_*`` variables; keyword arguments take precedence."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            variable = _ENV_VARIABLES.get(f.name)
            raw = env.get(variable) if variable else None
            if raw is None or raw.strip() == "":
                continue
            values[f.name] = _parse_env(f.name, variable or "", raw.strip())
        values.update(overrides)
        return cls(**values)


_ENV_VARIABLES = {
    "ingest_key": "BEACON_INGEST_KEY",
    "ingest_url": "BEACON_INGEST_URL",
    "batch_size": "BEACON_BATCH_SIZE",
    "flush_interval": "BEACON_FLUSH_INTERVAL",
    "max_buffer_size": "BEACON_MAX_BUFFER_SIZE",
    "timeout": "BEACON_TIMEOUT",
    "shutdown_timeout": "BEACON_SHUTDOWN_TIMEOUT",
    "enabled": "BEACON_ENABLED",
    "dry_run": "BEACON_DRY_RUN",
    "debug": "BEACON_DEBUG",
    "compression": "BEACON_COMPRESSION",
    "consumer_header": "BEACON_CONSUMER_HEADER",
    "consumer_resolver": "BEACON_CONSUMER_RESOLVER",
    "on_error": "BEACON_ON_ERROR",
    "storage_path": "BEACON_STORAGE_PATH",
    "max_storage_bytes": "BEACON_MAX_STORAGE_BYTES",
    "allow_private_endpoints": "BEACON_ALLOW_PRIVATE_ENDPOINTS",
}
_INT_FIELDS = {"batch_size", "max_buffer_size", "max_storage_bytes"}
_FLOAT_FIELDS = {"flush_interval", "timeout", "shutdown_timeout"}
_CALLABLE_FIELDS = {"consumer_resolver", "on_error"}
_BOOL_FIELDS = {"enabled", "dry_run", "debug", "compression", "allow_private_endpoints"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse_env(name: str, variable: str, raw: str) -> Any:
    if name in _BOOL_FIELDS:
        lowered = raw.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise BeaconConfigError(f"Expected {variable} to be one of true/false/1/0/yes/no, got {raw!r}")
    if name in _CALLABLE_FIELDS:
        return _import_callable(variable, raw)
    if name in _INT_FIELDS:
        try:
            return int(raw)
        except ValueError:
            raise BeaconConfigError(f"Expected {variable} to be an integer, got {raw!r}") from None
    if name in _FLOAT_FIELDS:
        try:
            return float(raw)
        except ValueError:
            raise BeaconConfigError(f"Expected {variable} to be a number, got {raw!r}") from None
    return raw


def _import_callable(variable: str, reference: str) -> Any:
    """``package.module:function`` as a callable that imports its target on first use."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise BeaconConfigError(f"Expected {variable} to be 'package.module:function', got {reference!r}")
    try:
        found = importlib.util.find_spec(module_name) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise BeaconConfigError(f"Expected {variable} to name an importable module, got {reference!r}")
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


def _require_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BeaconConfigError(
            f"Expected {name} ({_ENV_VARIABLES[name]}) to be an integer >= {minimum}, got {value!r}"
        )


def _require_positive_float(name: str, value: object) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not (0 < float(value) < float("inf")):  # type: ignore[arg-type]
        raise BeaconConfigError(
            f"Expected {name} ({_ENV_VARIABLES[name]}) to be a positive number of seconds, got {value!r}"
        )


def _is_header_name(value: object) -> bool:
    token_chars = set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    return isinstance(value, str) and bool(value) and all(c in token_chars for c in value)


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals: the only hosts allowed plain HTTP."""
    if host.lower() in {"localhost", "localhost."} or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalize_ingest_url(url: object) -> str:
    """Return the full ingest endpoint for a full or base URL, refusing unsafe forms."""
    if not isinstance(url, str) or not url.strip():
        raise BeaconConfigError(f"Expected ingest_url (BEACON_INGEST_URL) to be an http(s) URL, got {url!r}")
    parts = urlsplit(url.strip())
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise BeaconConfigError(f"Expected ingest_url (BEACON_INGEST_URL) to be an http(s) URL, got {url!r}")
    if parts.username or parts.password:
        # Credentials in a URL end up in logs and proxies; the key travels in a header instead.
        raise BeaconConfigError(
            f"Expected ingest_url (BEACON_INGEST_URL) to carry no credentials, got {_redact(parts)!r}"
        )
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise BeaconConfigError(
            "Expected ingest_url (BEACON_INGEST_URL) to use https (plain http is allowed only "
            f"for localhost), got {url!r}"
        )
    path = parts.path.rstrip("/")
    if not path.endswith(INGEST_PATH):
        path += INGEST_PATH
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _redact(parts: Any) -> str:
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
