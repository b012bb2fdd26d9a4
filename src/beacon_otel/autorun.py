"""Beacon under ``opentelemetry-instrument``, whichever distro and configurator win.

Start-up runs ``distro.configure()``, then one configurator, then the
``opentelemetry_pre_instrument`` hooks, then every instrumentor through the winning distro's
``load_instrumentor``. When another distro is installed too (``opentelemetry-distro``),
entry-point order picks the winners (contrib#2144), so each of our entry points only moves
one process-wide ``AutoRun`` forward, and the pre-instrument hook, which runs whoever won,
finishes what the others could not: attach the processor, wrap the sampler, route the hooks.

Auto-run must never take the app down: every step is guarded, and a missing or bad setting
turns Beacon off with one log line while the app and the rest of OpenTelemetry run on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator, MutableMapping
from typing import Any, Literal

from opentelemetry import trace
from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import DEFAULT_ON, Sampler

from beacon_otel import exits
from beacon_otel.config import BeaconConfig, BeaconConfigError, disabled_in
from beacon_otel.hooks import COMPANIONS, FRAMEWORKS, Hook, compose
from beacon_otel.processor import BeaconSpanProcessor
from beacon_otel.sampling import BeaconSampler

logger = logging.getLogger("beacon_otel")

SANITIZE_FIELDS = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS"
CREDENTIAL_HEADERS = ("authorization", "proxy-authorization", "x-api-key", "cookie", "set-cookie")
"""Headers whose values the instrumentations must redact if told to capture them."""
DISTRO_MARKER = "_beacon_otel_distro"
"""Class attribute of Beacon's own distro: its ``load_instrumentor`` already adds the hooks."""
_WRAPPED_MARKER = "_beacon_otel_hooks_routed"


@contextlib.contextmanager
def contained(action: str) -> Iterator[None]:
    """Log anything raised while doing ``action`` and carry on: auto-run never breaks the app."""
    try:
        yield
    except Exception:
        logger.error("beacon-otel: %s failed; the app runs on without it", action, exc_info=True)


class AutoRun:
    """Beacon's part of one ``opentelemetry-instrument`` start-up; one per process."""

    def __init__(self, environ: MutableMapping[str, str] | None = None) -> None:
        self.environ = os.environ if environ is None else environ
        self.distro_configured = False
        """Set by Beacon's distro: its ``load_instrumentor`` gives the instrumentors our hooks."""
        self.provider: TracerProvider | None = None
        """The provider the processor is attached to, once it is."""
        self._decided = False
        self._processor: BeaconSpanProcessor | None = None
        self._kwargs_sampler: BeaconSampler | None = None

    @property
    def processor(self) -> BeaconSpanProcessor | None:
        """The processor, or ``None`` when Beacon is off; decided (and logged) once per process."""
        if not self._decided:
            self._decided = True
            self._processor = self._build_processor()
        return self._processor

    def _build_processor(self) -> BeaconSpanProcessor | None:
        env = self.environ
        if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            logger.debug("beacon-otel: OTEL_SDK_DISABLED=true, Beacon is off")
            return None
        if disabled_in(env):
            logger.debug("beacon-otel: BEACON_ENABLED=false, Beacon is off")
            return None
        try:
            config = BeaconConfig.from_env(env)
        except BeaconConfigError as exc:
            if exc.setting == "ingest_key" and not env.get("BEACON_INGEST_KEY", "").strip():
                logger.warning(
                    "beacon-otel: BEACON_INGEST_KEY is not set, so Beacon analytics are off; "
                    "the app and the rest of OpenTelemetry run as usual"
                )
            else:
                logger.error("beacon-otel: Beacon analytics are off: %s", exc)
            return None
        return BeaconSpanProcessor(config)

    def processor_on(self, provider: object) -> BeaconSpanProcessor | None:
        """The auto-run processor if it is attached to ``provider``."""
        return self._processor if self.provider is not None and self.provider is provider else None

    # -- credentials --------------------------------------------------------------------

    def protect_credentials(self) -> None:
        """Make every HTTP instrumentation redact credential headers it is told to capture.

        ``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST`` turns header values into
        span attributes that every exporter ships; the consumer headers are credentials.
        """
        processor = self.processor
        if processor is None:
            return
        headers = [*CREDENTIAL_HEADERS]
        if processor.config.consumer_header:
            headers.append(processor.config.consumer_header.lower())
        current = [field.strip() for field in self.environ.get(SANITIZE_FIELDS, "").split(",")]
        current = [field for field in current if field]
        missing = [p for p in dict.fromkeys(header_pattern(h) for h in headers) if p not in current]
        if missing:
            self.environ[SANITIZE_FIELDS] = ",".join(current + missing)

    # -- the SDK configurator -----------------------------------------------------------

    def configurator_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The SDK configurator's kwargs with Beacon's processor first and the sampler wrapped."""
        processor = self.processor
        if processor is None or self.environ.get("OTEL_CONFIG_FILE"):
            # With a config file the SDK ignores kwargs (and says so): attach afterwards.
            return kwargs
        self.protect_credentials()
        sampler = kwargs.get("sampler") or sampler_from_env()
        self._kwargs_sampler = sampler if isinstance(sampler, BeaconSampler) else BeaconSampler(sampler)
        kwargs = {
            **kwargs,
            "span_processors": [processor, *(kwargs.get("span_processors") or ())],
            "sampler": self._kwargs_sampler,
        }
        if not exporter_names("metrics") and not self.environ.get("OTEL_PYTHON_METER_CONFIGURATOR"):
            # With no metrics exporter the SDK still installs a MeterProvider that every HTTP
            # instrumentation records into on every request, for no reader at all.
            disabled = _disabled_meters()
            if disabled is not None:
                kwargs.setdefault("meter_configurator", disabled)
        return kwargs

    def configured(self) -> None:
        """After the SDK configurator: note where the processor went, or attach it now."""
        if self.processor is None or self.provider is not None:
            return
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            return  # left to pre_instrument, which says why if it cannot attach either
        if self._kwargs_sampler is not None and provider.sampler is self._kwargs_sampler:
            self.provider = provider  # built from our kwargs: the processor is on it
        else:
            self.attach(provider)

    def rescue(self, error: Exception) -> bool:
        """After the SDK configurator raised: keep Beacon running if it can; False to re-raise."""
        if self.processor is None:
            return False  # nothing of ours involved: fail exactly as the SDK alone would
        logger.error(
            "beacon-otel: the OpenTelemetry SDK configuration failed (%s: %s); Beacon analytics "
            "keep running, the other exporters are not set up",
            type(error).__name__,
            error,
        )
        self.configured()
        if self.provider is None:
            provider = global_sdk_provider()
            if provider is not None:
                self.attach(provider)
        return self.provider is not None

    # -- the pre-instrument hook ----------------------------------------------------------

    def pre_instrument(self) -> None:
        """Finish what the winning distro and configurator did not do for Beacon."""
        if self.processor is None:
            return
        self.protect_credentials()
        if self.provider is None:
            provider = global_sdk_provider()
            if provider is None:
                logger.error(
                    "beacon-otel: Beacon analytics are off: the global tracer provider is %s, "
                    "not the OpenTelemetry SDK's",
                    type(trace.get_tracer_provider()).__name__,
                )
                return
            self.attach(provider)
        if not self.distro_configured:
            self.route_hooks_through_active_distros()
        self.flush_on_sigterm()
        warn_unseen_frameworks()

    def flush_on_sigterm(self) -> None:
        """Deliver what is buffered however the process ends (``beacon_otel.exits``)."""
        if self._processor is not None:
            exits.flush_at_exit(self._processor, self.provider)

    def attach(self, provider: TracerProvider) -> None:
        """Add the processor to ``provider`` and wrap its sampler, once."""
        processor = self.processor
        if processor is None or self.provider is provider:
            return
        if not isinstance(provider.sampler, BeaconSampler):
            # Tracers take the sampler when created; this runs before the instrumentors.
            provider.sampler = BeaconSampler(provider.sampler)
        provider.add_span_processor(processor)
        self.provider = provider

    def route_hooks_through_active_distros(self) -> None:
        """Give the instrumentors Beacon's hooks through another distro's ``load_instrumentor``."""
        foreign = [d for d in active_distros() if not getattr(d, DISTRO_MARKER, False)]
        if not foreign:
            logger.warning(
                "beacon-otel: could not reach the active OpenTelemetry distro, so requests are "
                "counted without their consumer; set OTEL_PYTHON_DISTRO=beacon_otel"
            )
        for distro in foreign:
            self.route_hooks_through(distro)

    def route_hooks_through(self, distro: BaseDistro) -> None:
        """Wrap one distro instance's ``load_instrumentor`` so it passes Beacon's hooks."""
        if getattr(distro, _WRAPPED_MARKER, False):
            return
        original = distro.load_instrumentor

        def load_instrumentor(entry_point: Any, **kwargs: Any) -> Any:
            if self.native_telemetry_instead(entry_point.name):
                return None
            return original(entry_point, **self.instrumentor_kwargs(entry_point.name, kwargs))

        # An instance attribute shadows the class's method for this one distro only.
        distro.load_instrumentor = load_instrumentor
        setattr(distro, _WRAPPED_MARKER, True)

    # -- the instrumentors ----------------------------------------------------------------

    def native_telemetry_instead(self, name: str) -> bool:
        """Whether FastAPI's own telemetry serves Beacon instead of instrumentor ``name``.

        The contrib FastAPI instrumentation matches every route again on every request, so
        its cost grows with the app; FastAPI 0.142+ learns the route from routing itself and
        opens its own SERVER span on the global provider once the contrib one stays out.
        Only when no trace exporter is configured: a user exporting traces keeps the spans
        of the instrumentation he installed (docs/autorun.md).
        """
        if name != "fastapi" or self.processor is None or exporter_names("traces"):
            return False
        try:
            import fastapi.telemetry  # noqa: F401  (FastAPI 0.142 and later)
        except ImportError:
            return False
        logger.debug("beacon-otel: FastAPI's own telemetry serves Beacon (no trace exporter)")
        return True

    def instrumentor_kwargs(self, name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``kwargs`` for instrumentor ``name`` with Beacon's hooks composed before the user's."""
        processor = self.processor
        if processor is None or name not in FRAMEWORKS:
            return kwargs
        ours: dict[str, Hook] = {}
        with contained(f"adding the consumer hooks to the {name} instrumentation"):
            ours = processor.hooks(name)
            companion = COMPANIONS.get(name)
            if companion is not None:
                # The instrumentation takes no hooks: beacon-otel's tween or middleware does.
                companion(ours)
                return kwargs
        merged = dict(kwargs)
        for key, hook in ours.items():
            merged[key] = compose(hook, kwargs.get(key))
        if name == "fastapi" and not exporter_names("traces"):
            # The ASGI "http send"/"http receive" spans are about 40% of the instrumentation's
            # cost and carry nothing Beacon reads; with no exporter nobody else sees them.
            merged.setdefault("exclude_spans", ["receive", "send"])
        return merged


def warn_unseen_frameworks() -> None:
    """One WARNING per framework installed without an instrumentation: it would be served unseen."""
    from beacon_otel.doctor import unseen_frameworks

    for framework, version, instrumentation in unseen_frameworks():
        logger.warning(
            "beacon-otel: %s %s is installed but not instrumented, so requests it serves never "
            "reach Beacon; fix: pip install %s",
            framework,
            version,
            instrumentation,
        )


def exporter_names(signal: Literal["traces", "metrics", "logs"]) -> list[str]:
    """The exporters ``OTEL_<SIGNAL>_EXPORTER`` names, as the SDK reads them (``none`` is none)."""
    try:
        from opentelemetry.sdk._configuration import _get_exporter_names
    except ImportError:  # pragma: no cover - private SDK names moved: assume some are set
        return ["unknown"]
    return list(_get_exporter_names(signal))


def _disabled_meters() -> Any:
    try:
        from opentelemetry.sdk.metrics._internal import _disable_meter_configurator
    except ImportError:  # pragma: no cover - private SDK name moved: keep the SDK's default
        return None
    return _disable_meter_configurator


def header_pattern(header: str) -> str:
    """A sanitize-fields regex for ``header``; WSGI reports ``X_Key`` as ``X-KEY``, so both match."""
    return "".join("[-_]" if char in "-_" else re.escape(char) for char in header.lower())


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


def global_sdk_provider() -> TracerProvider | None:
    """The global SDK provider, installing one (sampler wrapped) if none is set; else ``None``."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider):
        trace.set_tracer_provider(TracerProvider(sampler=BeaconSampler(sampler_from_env())))
        provider = trace.get_tracer_provider()
    return provider if isinstance(provider, TracerProvider) else None


def active_distros() -> list[BaseDistro]:
    """Every distro instantiated in this process (distros are per-class singletons)."""
    found: list[BaseDistro] = []
    seen: set[type] = set()
    stack: list[type] = [BaseDistro]
    while stack:
        subclasses: list[type] = stack.pop().__subclasses__()
        for cls in subclasses:
            if cls in seen:
                continue
            seen.add(cls)
            stack.append(cls)
            instance = cls.__dict__.get("_instance")
            if isinstance(instance, BaseDistro) and instance not in found:
                found.append(instance)
    return found


AUTORUN = AutoRun()
"""This process's auto-run state, shared by the distro, configurator and pre-instrument hook."""
