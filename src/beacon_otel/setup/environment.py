"""What auto-run reads from the process environment, and the one setting it adds there.

Whether Beacon runs at all (``OTEL_SDK_DISABLED``, ``BEACON_ENABLED``, the ``BEACON_*``
settings), what the SDK will build from ``OTEL_*`` (exporters, sampler, meter provider), whether
FastAPI's own telemetry can stand in for its instrumentation, which installed frameworks would go
unseen, and the instrumentations' header sanitize list, to which the credential headers are added.
Wiring what is found into the tracer provider is :mod:`beacon_otel.setup.autorun`'s business.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, MutableMapping
from typing import Any, Literal

from opentelemetry.sdk.trace.sampling import DEFAULT_ON, Sampler

from beacon_otel.config.settings import (
    BeaconConfig,
    BeaconConfigError,
    describe_unknown,
    disabled_in,
    unknown_variables,
)
from beacon_otel.frameworks.fastapi import has_native_telemetry
from beacon_otel.frameworks.table import CAPTURE_HEADER_VARIABLES

logger = logging.getLogger("beacon_otel")

SANITIZE_FIELDS = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS"
CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "x-api-key", "cookie", "set-cookie")
"""Headers whose values the instrumentations must redact if told to capture them."""


def warn_unknown_variables(environ: Mapping[str, str]) -> None:
    """One WARNING naming every ``BEACON_*`` variable no setting reads, with the likely intended one."""
    unknown = unknown_variables(environ)
    if unknown:
        logger.warning(
            "beacon-otel: unknown settings ignored: %s; beacon-otel doctor lists the settings in use",
            describe_unknown(unknown),
        )


def config_from(environ: Mapping[str, str]) -> BeaconConfig | None:
    """The settings auto-run runs with, or None when Beacon is off (said once, at its level)."""
    warn_unknown_variables(environ)
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        logger.debug("beacon-otel: OTEL_SDK_DISABLED=true, Beacon is off")
        return None
    if disabled_in(environ):
        logger.debug("beacon-otel: BEACON_ENABLED=false, Beacon is off")
        return None
    try:
        return BeaconConfig.from_env(environ)
    except BeaconConfigError as exc:
        if exc.setting == "ingest_key" and not environ.get("BEACON_INGEST_KEY", "").strip():
            logger.warning(
                "beacon-otel: BEACON_INGEST_KEY is not set, so Beacon analytics are off; "
                "the app and the rest of OpenTelemetry run as usual"
            )
        else:
            logger.error("beacon-otel: Beacon analytics are off: %s", exc)
        return None


def protect_credentials(environ: MutableMapping[str, str], consumer_header: str | None) -> None:
    """Add the credential headers (and the consumer header) to the instrumentations' sanitize list.

    ``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST`` turns header values into
    span attributes that every exporter ships; the consumer headers are credentials.
    """
    headers = [*CREDENTIAL_HEADERS]
    if consumer_header:
        headers.append(consumer_header.lower())
    current = [field.strip() for field in environ.get(SANITIZE_FIELDS, "").split(",")]
    current = [field for field in current if field]
    missing = [p for p in dict.fromkeys(header_pattern(h) for h in headers) if p not in current]
    if missing:
        environ[SANITIZE_FIELDS] = ",".join(current + missing)


def header_pattern(header: str) -> str:
    """A sanitize-fields regex for ``header``; WSGI reports ``X_Key`` as ``X-KEY``, so both match."""
    return "".join("[-_]" if char in "-_" else re.escape(char) for char in header.lower())


def exporter_names(signal: Literal["traces", "metrics", "logs"]) -> list[str]:
    """The exporters ``OTEL_<SIGNAL>_EXPORTER`` names, as the SDK reads them (``none`` is none)."""
    try:
        from opentelemetry.sdk._configuration import _get_exporter_names
    except ImportError:  # pragma: no cover - private SDK names moved: assume some are set
        return ["unknown"]
    return list(_get_exporter_names(signal))


def meters_off(environ: Mapping[str, str]) -> Any:
    """The SDK's meter configurator that installs no meters, when nothing would read them; else None.

    With no metrics exporter the SDK still installs a MeterProvider that every HTTP
    instrumentation records into on every request, for no reader at all.
    """
    if exporter_names("metrics") or environ.get("OTEL_PYTHON_METER_CONFIGURATOR"):
        return None
    try:
        from opentelemetry.sdk.metrics._internal import _disable_meter_configurator
    except ImportError:  # pragma: no cover - private SDK name moved: keep the SDK's default
        return None
    return _disable_meter_configurator


def sampler_from_env() -> Sampler:
    """The sampler the SDK would build from ``OTEL_TRACES_SAMPLER`` and ``_ARG``."""
    try:
        # The configurator's own lookup, so sampler entry points (opentelemetry_traces_sampler)
        # resolve exactly as they would without Beacon.
        from opentelemetry.sdk._configuration import _get_sampler, _import_sampler
        from opentelemetry.sdk.trace.sampling import _get_from_env_or_default
    except ImportError:  # pragma: no cover - private SDK names moved
        return DEFAULT_ON
    return _import_sampler(_get_sampler()) or _get_from_env_or_default()


def native_fastapi_telemetry() -> bool:
    """Whether FastAPI's own telemetry can serve Beacon instead of the contrib instrumentation.

    The contrib FastAPI instrumentation matches every route again on every request, so
    its cost grows with the app; FastAPI 0.142+ learns the route from routing itself and
    opens its own SERVER span on the global provider once the contrib one stays out.
    Only when no trace exporter is configured: a user exporting traces keeps the spans
    of the instrumentation he installed (docs/autorun.md).
    """
    if exporter_names("traces"):
        return False
    if not has_native_telemetry():
        return False
    logger.debug("beacon-otel: FastAPI's own telemetry serves Beacon (no trace exporter)")
    return True


def beacon_reads_alone(environ: Mapping[str, str]) -> bool:
    """Whether Beacon is the only reader of the HTTP instrumentations' spans and metrics.

    No trace exporter and no metrics exporter named in ``OTEL_*_EXPORTER``, and no
    ``OTEL_CONFIG_FILE`` (which may configure exporters of its own). Then a lean span source
    can replace a framework's instrumentation: the attributes and HTTP server metrics it
    leaves out have nobody to reach.
    """
    return not (exporter_names("traces") or exporter_names("metrics") or environ.get("OTEL_CONFIG_FILE"))


def headers_captured(environ: Mapping[str, str]) -> bool:
    """Whether the HTTP instrumentations are asked to copy headers into span attributes."""
    return any(environ.get(variable, "").strip() for variable in CAPTURE_HEADER_VARIABLES)


def warn_unseen_frameworks() -> None:
    """One WARNING per framework installed without an instrumentation: it would be served unseen."""
    from beacon_otel.frameworks.catalog import unseen_frameworks

    for framework, version, instrumentation in unseen_frameworks():
        logger.warning(
            "beacon-otel: %s %s is installed but not instrumented, so requests it serves never "
            "reach Beacon; fix: pip install %s",
            framework,
            version,
            instrumentation,
        )
