"""Which web frameworks are installed here, and which instrumentation sees each one's requests.

Read by the doctor (its Frameworks section) and by auto-run, which warns at start-up about a
framework that would be served unseen.
"""

from __future__ import annotations

import importlib.metadata

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


def installed(distribution: str) -> str | None:
    """The installed version of ``distribution``, or ``None``."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def unseen_frameworks() -> list[tuple[str, str, str]]:
    """``(framework, version, instrumentation to install)`` of each framework whose requests no
    instrumentation would see (Starlette under FastAPI is seen through FastAPI's)."""
    fastapi_covered = installed("fastapi") and installed("opentelemetry-instrumentation-fastapi")
    unseen = []
    for framework, instrumentation, _ in FRAMEWORKS:
        version = installed(framework)
        if version is None or installed(instrumentation) is not None:
            continue
        if framework == "starlette" and fastapi_covered:
            continue
        unseen.append((framework, version, instrumentation))
    return unseen
