"""`beacon-otel doctor` run as a user runs it, against good and broken setups."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from beacon_otel.devingest import DevIngest
from beacon_otel.doctor.diagnose import PROBE_ROUTE, fingerprint
from tests.conftest import requires

KEY = "bk_test_0123456789abcdef"


@pytest.fixture
def ingest() -> Iterator[DevIngest]:
    """A strict dev ingest that accepts only KEY."""
    with DevIngest(ingest_key=KEY) as server:
        yield server


def doctor(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `beacon-otel doctor ARGS` with only ``env`` as Beacon's and OpenTelemetry's settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("BEACON_", "OTEL_", "FASTAPI_"))}
    clean["XDG_STATE_HOME"] = str(tmp_path / "state")
    command = [sys.executable, "-m", "beacon_otel.cli", "doctor", *args]
    return subprocess.run(
        command, env={**clean, **env}, capture_output=True, text=True, timeout=60, check=False
    )


def lines(result: subprocess.CompletedProcess[str], level: str) -> list[str]:
    return [line.split(None, 1)[1] for line in result.stdout.splitlines() if line.startswith(f"  {level} ")]


def test_healthy_setup_exits_0_without_storing_anything(ingest: DevIngest, tmp_path: Path) -> None:
    """A reachable ingest that accepts the key: exit 0; the probe stores nothing; the key is never shown."""
    result = doctor(tmp_path, BEACON_INGEST_KEY=KEY, BEACON_INGEST_URL=ingest.base_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        f"127.0.0.1 resolves to 127.0.0.1: allowed; port {ingest.port} accepts connections" in result.stdout
    )
    assert (
        "answered 400 to an empty batch, as the contract says, and 401 to a wrong key: the key is accepted"
        in (result.stdout)
    )
    assert f"ingest_key = {fingerprint(KEY)}  [BEACON_INGEST_KEY]" in result.stdout
    assert KEY not in result.stdout + result.stderr
    assert "Everything needed is in order." in result.stdout
    assert lines(result, "FAIL") == []
    assert ingest.events() == []


def test_send_test_event_stores_one_event(ingest: DevIngest, tmp_path: Path) -> None:
    """--send-test-event sends one valid event, which the strict ingest stores."""
    result = doctor(tmp_path, "--send-test-event", BEACON_INGEST_KEY=KEY, BEACON_INGEST_URL=ingest.base_url)
    assert result.returncode == 0, result.stdout
    assert "the key is accepted; it stored the test event" in result.stdout
    [event] = ingest.events()
    assert (event["route"], event["consumer"]) == (PROBE_ROUTE, "beacon-otel-doctor")


def test_wrong_key_exits_1_naming_its_fingerprint(ingest: DevIngest, tmp_path: Path) -> None:
    """A key the ingest refuses: exit 1, the refusal with the key's fingerprint, never the key."""
    result = doctor(tmp_path, BEACON_INGEST_KEY="bk_wrong_key", BEACON_INGEST_URL=ingest.base_url)
    assert result.returncode == 1
    [failure] = lines(result, "FAIL")
    assert failure.startswith(f"{ingest.url} refused the key {fingerprint('bk_wrong_key')}: HTTP 401")
    assert "bk_wrong_key" not in result.stdout + result.stderr
    assert "1 problem(s) to fix." in result.stdout


def test_unreachable_ingest_exits_1_and_says_how_to_start_one(tmp_path: Path) -> None:
    """Nothing listening: exit 1, "connection refused", and the command that starts a dev ingest."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = doctor(tmp_path, BEACON_INGEST_KEY=KEY, BEACON_INGEST_URL=f"http://127.0.0.1:{port}")
    assert result.returncode == 1
    [failure] = lines(result, "FAIL")
    assert "did not answer: connection refused" in failure
    assert failure.endswith(f"start it with: beacon-otel dev-ingest --port {port}")


def test_missing_key_and_bad_settings_fail_naming_the_setting(tmp_path: Path) -> None:
    """No key, or a bad value, is reported as auto-run would turn Beacon off: naming the setting."""
    no_key = doctor(tmp_path)
    assert no_key.returncode == 1
    assert lines(no_key, "FAIL")[0].startswith("BEACON_INGEST_KEY is not set: Beacon is off")
    bad = doctor(tmp_path, BEACON_INGEST_KEY=KEY, BEACON_BATCH_SIZE="lots")
    assert bad.returncode == 1 and "BEACON_BATCH_SIZE" in lines(bad, "FAIL")[0]
    private = doctor(tmp_path, BEACON_INGEST_KEY=KEY, BEACON_INGEST_URL="https://10.1.2.3")
    assert private.returncode == 1 and "BEACON_INGEST_URL" in lines(private, "FAIL")[0]


def test_misspelt_setting_is_a_problem_with_the_likely_name(ingest: DevIngest, tmp_path: Path) -> None:
    """BEACON_INGST_URL would send to the default ingest in silence: doctor fails naming both."""
    result = doctor(
        tmp_path,
        BEACON_INGEST_KEY=KEY,
        BEACON_INGEST_URL=ingest.base_url,
        BEACON_INGST_URL="https://x.example",
    )
    assert result.returncode == 1
    assert lines(result, "FAIL") == [
        "BEACON_INGST_URL is not a Beacon setting and is ignored: did you mean BEACON_INGEST_URL?"
    ]


def test_installed_framework_without_instrumentation_fails_with_the_pip_command(
    ingest: DevIngest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A framework found installed without its instrumentation: exit 1 and the package to install.

    In-process, with falcon's instrumentation made absent: the dev environment installs every
    supported framework's instrumentation, so no subprocess could show a missing one.
    """
    from beacon_otel.doctor import diagnose as doctor_module
    from beacon_otel.frameworks import catalog

    installed = catalog.installed
    monkeypatch.setattr(
        catalog,
        "installed",
        lambda name: {"falcon": "4.0.2", "opentelemetry-instrumentation-falcon": None}.get(
            name, installed(name)
        ),
    )
    findings = doctor_module.diagnose({"BEACON_INGEST_KEY": KEY, "BEACON_INGEST_URL": ingest.base_url})
    _, status = doctor_module.report(findings)
    assert status == 1
    assert [f.text for f in findings if f.level == doctor_module.FAIL] == [
        "falcon 4.0.2 is installed but not instrumented: pip install opentelemetry-instrumentation-falcon"
        '  (or pip install "beacon-otel[falcon]")'
    ]


def test_otlp_protocol_must_match_an_installed_exporter(ingest: DevIngest, tmp_path: Path) -> None:
    """OTEL_TRACES_EXPORTER=otlp defaults to gRPC, whose exporter is not installed here: that fails;
    http/protobuf, which is installed, passes."""
    common = {"BEACON_INGEST_KEY": KEY, "BEACON_INGEST_URL": ingest.base_url, "OTEL_TRACES_EXPORTER": "otlp"}
    grpc = doctor(tmp_path, **common)
    assert grpc.returncode == 1
    assert lines(grpc, "FAIL") == [
        "OTLP over grpc needs opentelemetry-exporter-otlp-proto-grpc, which is not installed: "
        "pip install opentelemetry-exporter-otlp-proto-grpc"
    ]
    http = doctor(tmp_path, OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf", **common)
    assert http.returncode == 0, http.stdout
    assert any(
        line.startswith("OTLP over http/protobuf: opentelemetry-exporter-otlp-proto-http")
        for line in lines(http, "ok")
    )


@requires("fastapi", "0.142")  # FastAPI's native telemetry
def test_fastapi_native_telemetry_beside_the_instrumentor_is_one_span(
    ingest: DevIngest, tmp_path: Path
) -> None:
    """FastAPI's own telemetry beside the instrumentation is not two spans: said, not warned of."""
    result = doctor(tmp_path, BEACON_INGEST_KEY=KEY, BEACON_INGEST_URL=ingest.base_url)
    assert [line for line in lines(result, "warn") if "FastAPI" in line] == []
    assert any("one SERVER span per request" in line for line in lines(result, "info"))


def test_says_which_instrumentation_makes_flask_and_django_spans(ingest: DevIngest, tmp_path: Path) -> None:
    """beacon-otel's lean span source when nothing else reads the spans; else the instrumentation, and why."""
    settings = {"BEACON_INGEST_KEY": KEY, "BEACON_INGEST_URL": ingest.base_url}
    alone = [line for line in lines(doctor(tmp_path, **settings), "info") if "SERVER spans under" in line]
    assert [line.split(":", 1)[0] for line in alone] == ["Flask", "Django"]
    assert all("beacon-otel's lean span source" in line for line in alone)
    exported = lines(
        doctor(tmp_path, **settings, OTEL_TRACES_EXPORTER="otlp", BEACON_SERVER_SPANS="stock"), "info"
    )
    assert (
        "Flask: opentelemetry-instrumentation-flask makes the SERVER spans "
        "(BEACON_SERVER_SPANS=stock; OTEL_TRACES_EXPORTER=otlp)" in exported
    )
    metrics = lines(doctor(tmp_path, **settings, OTEL_METRICS_EXPORTER="console"), "info")
    assert (
        "Django: opentelemetry-instrumentation-django makes the SERVER spans (OTEL_METRICS_EXPORTER=console)"
        in metrics
    )


def test_spool_state_lists_batches_per_destination(ingest: DevIngest, tmp_path: Path) -> None:
    """Each destination's waiting batches are counted (this one's marked), and earlier-version files noted."""
    from beacon_otel import BeaconConfig
    from beacon_otel.spool.store import Spool, destination_fingerprint

    spool = tmp_path / "state" / "beacon-otel" / "spool"
    mine = destination_fingerprint(BeaconConfig(ingest_key=KEY, ingest_url=ingest.base_url).ingest_url, KEY)
    other = destination_fingerprint("https://elsewhere.example/v1/ingest", "another-key")
    assert Spool(spool, destination=mine, max_bytes=1 << 20).write(b'{"events":[]}', 0, "id-1")
    assert Spool(spool, destination=other, max_bytes=1 << 20).write(b'{"events":[]}', 0, "id-2")
    (spool / "batch-00000000000000000001-1-000001.json").write_bytes(
        b"beacon-spool v1 0 " + b"0" * 64 + b"\n"
    )
    result = doctor(tmp_path, BEACON_INGEST_KEY=KEY, BEACON_INGEST_URL=ingest.base_url)
    assert f"{spool / mine} (this ingest and key): 1 batches, " in result.stdout
    [line] = [text for text in result.stdout.splitlines() if f"{spool / other}" in text]
    assert line.split(None, 1)[0] == "warn"
    assert f"{spool / other} (another ingest URL or key, not sent from here): 0 events in 1 batches" in line
    assert "'beacon-otel spool-deliver' with that BEACON_INGEST_KEY and BEACON_INGEST_URL" in line
    assert f"{spool}: 1 batches of an earlier version, never sent" in result.stdout
    assert KEY not in result.stdout


def test_autorun_warns_once_per_framework_served_unseen(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Under auto-run, a framework installed without its instrumentation gets one WARNING naming
    it and the package to install; instrumented ones (and Starlette under FastAPI) get none."""
    from beacon_otel.frameworks import catalog
    from beacon_otel.setup import autorun

    installed = catalog.installed
    fake = {"falcon": "4.0.2", "opentelemetry-instrumentation-falcon": None}
    monkeypatch.setattr(catalog, "installed", lambda name: fake.get(name, installed(name)))
    with caplog.at_level("WARNING", logger="beacon_otel"):
        autorun.warn_unseen_frameworks()
    assert [r.getMessage() for r in caplog.records] == [
        "beacon-otel: falcon 4.0.2 is installed but not instrumented, so requests it serves never "
        "reach Beacon; fix: pip install opentelemetry-instrumentation-falcon"
    ]


@pytest.mark.parametrize("status", [400, 200])
def test_a_server_that_answers_any_key_is_not_called_a_beacon_ingest(tmp_path: Path, status: int) -> None:
    """A plain HTTP server answering every POST 400 (or 200) is not "the key is accepted"."""
    import http.server
    import threading

    class Anything(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Anything)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        result = doctor(tmp_path, BEACON_INGEST_KEY=KEY, BEACON_INGEST_URL=url)
    finally:
        server.shutdown()
        server.server_close()
    assert "the key is accepted" not in result.stdout
    if status == 400:
        [line] = [text for text in lines(result, "warn") if "empty batch" in text]
        assert "400 with a wrong one: an ingest that checks no key" in line


def test_lists_what_beacon_patches_in_the_installed_packages(tmp_path: Path) -> None:
    """The doctor's own process patches nothing, yet lists every declared site of an installed package."""
    result = doctor(tmp_path, BEACON_INGEST_KEY=KEY, BEACON_DRY_RUN="true")
    listed = result.stdout.split("What Beacon patches", 1)[1]
    for target, package in [
        ("fastapi.exceptions.RequestValidationError.__init__", "fastapi"),
        ("uvicorn.server.Server.shutdown", "uvicorn"),
        (
            "opentelemetry.instrumentation.starlette._get_route_details",
            "opentelemetry-instrumentation-starlette",
        ),
        ("pyramid.config.Configurator.make_wsgi_app", "pyramid"),
    ]:
        assert f"{target} ({package} " in listed, listed
    assert "opentelemetry.distro" not in listed  # opentelemetry-distro is not installed here


def test_a_site_of_a_package_not_installed_is_not_listed() -> None:
    """Only installed packages' sites are shown; with none, the doctor says so."""
    from beacon_otel.common.patching import PatchSite
    from beacon_otel.doctor.diagnose import diagnose

    absent = PatchSite("nothing: here", "no-such-distribution-xyz", "nowhere.at_all", "never")
    found = [f for f in diagnose({}, patch_sites=[absent]) if f.section.startswith("What Beacon patches")]
    assert [f.text for f in found] == ["nothing: none of the packages Beacon patches is installed"]
