"""`beacon-otel doctor`: whether this environment would send Beacon events, checked step by step.

First where events would go (:mod:`beacon_otel.doctor.destination`: the settings, the endpoint
guard, the ingest's answer to the key, the spool), then what makes the spans: which frameworks
are instrumented, what else makes SERVER spans, whether the OTLP exporter the settings name is
installed, and which attributes of the installed packages Beacon replaces (the patch sites its
modules declare: this process patches nothing). Each finding is one line in plain words
(:mod:`beacon_otel.doctor.report`).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from beacon_otel.common import patching
from beacon_otel.common.patching import PatchSite
from beacon_otel.doctor import destination
from beacon_otel.doctor.destination import PROBE_ROUTE, fingerprint
from beacon_otel.doctor.report import FAIL, INFO, OK, WARN, Finding, adder, report
from beacon_otel.frameworks import catalog

# Imported for the patch sites they declare (the frameworks' modules, beacon-otel's instrumentors).
from beacon_otel.frameworks import table as _frameworks_table  # noqa: F401
from beacon_otel.frameworks.catalog import FRAMEWORKS, unseen_frameworks
from beacon_otel.frameworks.table import CAPTURE_HEADER_VARIABLES
from beacon_otel.instrumentation import bottle as _bottle  # noqa: F401
from beacon_otel.instrumentation import falcon_asgi as _falcon_asgi  # noqa: F401
from beacon_otel.instrumentation import litestar as _litestar  # noqa: F401

__all__ = ["PROBE_ROUTE", "Finding", "diagnose", "fingerprint", "report", "unseen_frameworks"]

# Other per-request analytics SDKs: each adds its own middleware and counts every request again.
OTHER_ANALYTICS = ("apitally", "beaconhq", "peekapi", "moesifasgi", "moesifwsgi", "treblle")
_OTLP_PACKAGES = {
    "grpc": "opentelemetry-exporter-otlp-proto-grpc",
    "http/protobuf": "opentelemetry-exporter-otlp-proto-http",
}


def diagnose(
    environ: Mapping[str, str],
    *,
    send_test_event: bool = False,
    project: Path | None = None,
    patch_sites: Sequence[PatchSite] | None = None,
) -> list[Finding]:
    """Every finding about the environment ``environ``, in report order.

    ``project`` is the app's directory (the current one by default), where a Django project's
    ``manage.py`` names its settings. ``patch_sites`` defaults to every site declared in this
    process: the doctor's imports declare the frameworks' and instrumentors' ones, the CLI adds
    set-up's (which the doctor may not import).
    """
    found: list[Finding] = []
    config = destination.settings(environ, found)
    if config is not None and config.enabled:
        if destination.endpoint(config, found) and not config.dry_run:
            destination.ingest(config, found, send_test_event=send_test_event)
        destination.spool(config, found)
    _frameworks(found)
    _django_settings(environ, Path.cwd() if project is None else project, found)
    _double_server_spans(environ, found)
    _exporters(environ, found)
    _patches(patching.declared() if patch_sites is None else patch_sites, found)
    return found


def _patches(sites: Sequence[PatchSite], found: list[Finding]) -> None:
    """The attributes Beacon replaces in the installed packages, each once, the original kept."""
    add = adder(found, "What Beacon patches (each once, the original kept)")
    shown = False
    for site in sorted(sites, key=lambda each: (each.package, each.target)):
        if (version := catalog.installed(site.package)) is None:
            continue
        shown = True
        purpose = site.name.split(": ", 1)[-1]
        add(INFO, f"{site.target} ({site.package} {version}): {purpose}; {site.when}")
    if not shown:
        add(INFO, "nothing: none of the packages Beacon patches is installed")


def _frameworks(found: list[Finding]) -> None:
    add = adder(found, "Frameworks")
    any_framework = False
    fastapi_covered = catalog.installed("fastapi") and catalog.installed(
        "opentelemetry-instrumentation-fastapi"
    )
    for framework, instrumentation, extra in FRAMEWORKS:
        if (version := catalog.installed(framework)) is None:
            continue
        any_framework = True
        if (instrumented := catalog.installed(instrumentation)) is not None:
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


_SETTINGS_DEFAULT = re.compile(r"""DJANGO_SETTINGS_MODULE["']\s*,\s*["']([\w.]+)["']""")


def _django_settings(environ: Mapping[str, str], project: Path, found: list[Finding]) -> None:
    """Django without ``DJANGO_SETTINGS_MODULE``: the instrumentation configures empty settings.

    ``manage.py`` and ``wsgi.py`` set the variable themselves, but only once they run: under
    ``opentelemetry-instrument`` the Django instrumentation reads the settings first, finds none,
    configures Django's defaults, and every request answers 500.
    """
    if catalog.installed("django") is None or environ.get("DJANGO_SETTINGS_MODULE", "").strip():
        return
    add = adder(found, "Django")
    try:
        found_default = _SETTINGS_DEFAULT.search((project / "manage.py").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        found_default = None
    needed = "DJANGO_SETTINGS_MODULE is not set: under opentelemetry-instrument Django then runs with empty "
    needed += "settings and every request answers 500"
    if found_default is not None:
        add(FAIL, f"{needed}; set DJANGO_SETTINGS_MODULE={found_default.group(1)} (from manage.py)")
    else:
        add(WARN, f"{needed}, if this app is a Django project; set DJANGO_SETTINGS_MODULE=mysite.settings")


def _double_server_spans(environ: Mapping[str, str], found: list[Finding]) -> None:
    add = adder(found, "SERVER spans")
    native = catalog.installed("fastapi") and importlib.util.find_spec("fastapi.telemetry") is not None
    if native:
        # Never two: FastAPI's own telemetry steps aside when the instrumentation's middleware is
        # in the app, and auto-run keeps that instrumentation out when FastAPI's serves Beacon.
        add(
            INFO,
            f"FastAPI {catalog.installed('fastapi')}: one SERVER span per request, FastAPI's own "
            "(OTEL_TRACES_EXPORTER unset) or opentelemetry-instrumentation-fastapi's (an exporter "
            "set); with no exporter, FastAPI(telemetry={'tracing': False}) would leave Beacon none",
        )
    _lean_sources(environ, add)
    others = [name for name in OTHER_ANALYTICS if catalog.installed(name)]
    if others:
        add(WARN, f"other request analytics installed ({', '.join(others)}): each counts requests itself")
    if not native and not others:
        add(OK, "one source of SERVER spans per request")


LEAN_FRAMEWORKS = (("flask", "Flask"), ("django", "Django"))
"""The frameworks whose SERVER spans beacon-otel's own lean source makes when Beacon alone reads them."""


def _lean_sources(environ: Mapping[str, str], add: Callable[[str, str], None]) -> None:
    """Which instrumentation makes Flask's and Django's SERVER spans under ``opentelemetry-instrument``.

    Auto-run's rule (``setup.autorun``): beacon-otel's lean span source stands in for the
    framework's instrumentation when nothing else reads the spans; a user who reads the
    instrumentation's spans or metrics must see why they are not there.
    """
    stock = []
    if environ.get("BEACON_SERVER_SPANS", "").strip().lower() == "stock":
        stock.append("BEACON_SERVER_SPANS=stock")
    for signal in ("TRACES", "METRICS"):
        variable = f"OTEL_{signal}_EXPORTER"
        names = [n.strip() for n in environ.get(variable, "").split(",") if n.strip() not in ("", "none")]
        if names:
            stock.append(f"{variable}={','.join(names)}")
    for variable in ("OTEL_CONFIG_FILE", *CAPTURE_HEADER_VARIABLES):
        if environ.get(variable, "").strip():
            stock.append(f"{variable} is set")
    for package, name in LEAN_FRAMEWORKS:
        instrumentation = f"opentelemetry-instrumentation-{package}"
        if catalog.installed(package) is None or catalog.installed(instrumentation) is None:
            continue
        if stock:
            add(INFO, f"{name}: {instrumentation} makes the SERVER spans ({'; '.join(stock)})")
        else:
            add(
                INFO,
                f"{name}: beacon-otel's lean span source makes the SERVER spans under "
                f"opentelemetry-instrument, in place of {instrumentation}: nothing else reads them "
                "(no trace or metrics exporter); BEACON_SERVER_SPANS=stock keeps the instrumentation",
            )


def _exporters(environ: Mapping[str, str], found: list[Finding]) -> None:
    """Whether the OTLP exporter the settings pick is installed: without it auto-run fails."""
    add = adder(found, "OpenTelemetry")
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
    elif (version := catalog.installed(package)) is None:
        add(FAIL, f"OTLP over {protocol} needs {package}, which is not installed: pip install {package}")
    else:
        add(OK, f"OTLP over {protocol}: {package} {version} is installed")
