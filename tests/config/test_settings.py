"""BeaconConfig: defaults, environment variables, validation at construction."""

from __future__ import annotations

from pathlib import Path

import pytest

from beacon_otel import BeaconConfig, BeaconConfigError
from beacon_otel.config.settings import DEFAULT_INGEST_URL, normalize_ingest_url


def test_defaults_match_the_sdks_it_replaces() -> None:
    """Only the key is required; the rest defaults to the beaconhq values."""
    config = BeaconConfig(ingest_key="k")
    assert config.ingest_url == DEFAULT_INGEST_URL
    assert (config.batch_size, config.flush_interval, config.max_buffer_size) == (100, 5.0, 10_000)
    assert (config.timeout, config.enabled, config.dry_run, config.debug) == (5.0, True, False, False)
    assert config.compression is False
    assert config.max_storage_bytes == 50 * 1024 * 1024
    assert config.consumer_header is None and config.consumer_resolver is None


def test_config_is_frozen() -> None:
    """A config cannot change after validation."""
    config = BeaconConfig(ingest_key="k")
    with pytest.raises(AttributeError):
        config.batch_size = 5  # type: ignore[misc]


@pytest.mark.parametrize("key", ["", "   ", None])
def test_missing_key_names_the_setting(key: object) -> None:
    """A missing key fails at construction, naming BEACON_INGEST_KEY."""
    with pytest.raises(BeaconConfigError, match="BEACON_INGEST_KEY"):
        BeaconConfig(ingest_key=key)  # type: ignore[arg-type]


def test_dry_run_and_disabled_need_no_key() -> None:
    """Dry run and a disabled config send nothing, so they need no key."""
    assert BeaconConfig(dry_run=True).dry_run
    assert BeaconConfig.from_env({"BEACON_ENABLED": "false"}).enabled is False


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("https://ingest.example.com", "https://ingest.example.com/v1/ingest"),
        ("https://ingest.example.com/", "https://ingest.example.com/v1/ingest"),
        ("https://ingest.example.com/v1/ingest", "https://ingest.example.com/v1/ingest"),
        ("https://ingest.example.com/v1/ingest/", "https://ingest.example.com/v1/ingest"),
        ("https://example.com/beacon//", "https://example.com/beacon/v1/ingest"),
        ("http://localhost:8390", "http://localhost:8390/v1/ingest"),
        ("http://127.0.0.1:8390/v1/ingest", "http://127.0.0.1:8390/v1/ingest"),
        ("http://[::1]:8390", "http://[::1]:8390/v1/ingest"),
    ],
)
def test_ingest_url_full_or_base(given: str, expected: str) -> None:
    """A base URL gets /v1/ingest appended, idempotently, trailing slashes tolerated."""
    assert normalize_ingest_url(given) == expected
    assert normalize_ingest_url(expected) == expected


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://ingest.example.com", "https"),
        ("ftp://ingest.example.com", "http"),
        ("not a url", "http"),
        ("https://user:secret@ingest.example.com", "credentials"),
        ("", "http"),
    ],
)
def test_unsafe_or_malformed_urls_are_refused(url: str, problem: str) -> None:
    """Plain http beyond loopback, credentials in the URL and non-URLs fail at startup."""
    with pytest.raises(BeaconConfigError, match="BEACON_INGEST_URL") as info:
        BeaconConfig(ingest_key="k", ingest_url=url)
    assert problem in str(info.value)
    assert "secret" not in str(info.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("batch_size", 0),
        ("batch_size", 1.5),
        ("batch_size", True),
        ("max_buffer_size", -1),
        ("max_storage_bytes", -1),
        ("flush_interval", 0),
        ("flush_interval", float("inf")),
        ("timeout", -1.0),
        ("shutdown_timeout", "5"),
        ("enabled", "yes"),
        ("compression", 1),
        ("consumer_header", "X Api Key"),
        ("consumer_resolver", "not callable"),
        ("on_error", 42),
    ],
)
def test_bad_values_name_the_setting_and_value(field: str, value: object) -> None:
    """Each bad value fails at construction with the field and the value in the message."""
    with pytest.raises(BeaconConfigError, match=field) as info:
        BeaconConfig(ingest_key="k", **{field: value})
    assert repr(value) in str(info.value)


def test_from_env_reads_every_variable(tmp_path: Path) -> None:
    """Each BEACON_* variable sets its field."""
    env = {
        "BEACON_INGEST_KEY": "key-1",
        "BEACON_INGEST_URL": "http://127.0.0.1:9000",
        "BEACON_ENABLED": "false",
        "BEACON_BATCH_SIZE": "7",
        "BEACON_FLUSH_INTERVAL": "0.5",
        "BEACON_MAX_BUFFER_SIZE": "70",
        "BEACON_TIMEOUT": "2.5",
        "BEACON_DRY_RUN": "1",
        "BEACON_DEBUG": "yes",
        "BEACON_CONSUMER_HEADER": "X-Tenant",
        "BEACON_COMPRESSION": "on",
        "BEACON_STORAGE_PATH": str(tmp_path),
        "BEACON_MAX_STORAGE_BYTES": "1024",
        "BEACON_SHUTDOWN_TIMEOUT": "3",
        "BEACON_ALLOW_PRIVATE_ENDPOINTS": "true",
    }
    config = BeaconConfig.from_env(env)
    assert config.ingest_key == "key-1"
    assert config.ingest_url == "http://127.0.0.1:9000/v1/ingest"
    assert config.enabled is False
    assert config.batch_size == 7
    assert config.flush_interval == 0.5
    assert config.max_buffer_size == 70
    assert config.timeout == 2.5
    assert config.dry_run is True
    assert config.debug is True
    assert config.consumer_header == "X-Tenant"
    assert config.compression is True
    assert config.storage_path == tmp_path
    assert config.max_storage_bytes == 1024
    assert config.shutdown_timeout == 3.0
    assert config.allow_private_endpoints is True


def test_arguments_override_the_environment() -> None:
    """Precedence: argument > environment > default."""
    config = BeaconConfig.from_env({"BEACON_INGEST_KEY": "env", "BEACON_BATCH_SIZE": "9"}, batch_size=3)
    assert (config.ingest_key, config.batch_size) == ("env", 3)


def test_empty_variables_mean_unset() -> None:
    """An empty variable falls back to the default instead of failing."""
    config = BeaconConfig.from_env({"BEACON_INGEST_KEY": "k", "BEACON_BATCH_SIZE": ""})
    assert config.batch_size == 100


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("BEACON_BATCH_SIZE", "ten"),
        ("BEACON_BATCH_SIZE", "0"),
        ("BEACON_FLUSH_INTERVAL", "soon"),
        ("BEACON_MAX_BUFFER_SIZE", "1e3"),
        ("BEACON_TIMEOUT", "-2"),
        ("BEACON_ENABLED", "maybe"),
        ("BEACON_DRY_RUN", "2"),
        ("BEACON_DEBUG", "verbose"),
        ("BEACON_COMPRESSION", "gzip"),
        ("BEACON_MAX_STORAGE_BYTES", "50MB"),
        ("BEACON_INGEST_URL", "http://ingest.example.com"),
        ("BEACON_CONSUMER_HEADER", "bad header"),
    ],
)
def test_bad_environment_values_name_the_variable(variable: str, value: str) -> None:
    """A bad environment value fails from_env() with the variable and the value."""
    with pytest.raises(BeaconConfigError) as info:
        BeaconConfig.from_env({"BEACON_INGEST_KEY": "k", variable: value})
    message = str(info.value)
    assert variable in message or variable.removeprefix("BEACON_").lower() in message
    assert value in message


def test_from_env_without_key_fails_naming_it() -> None:
    """from_env() with no BEACON_INGEST_KEY says which variable is missing."""
    with pytest.raises(BeaconConfigError, match="BEACON_INGEST_KEY"):
        BeaconConfig.from_env({})


def test_spool_directory_defaults_to_a_per_user_state_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without storage_path the spool lives under the user's state directory."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert BeaconConfig(ingest_key="k").spool_directory == tmp_path / "beacon-otel" / "spool"


def tenant_from_scope(request: object) -> str | None:
    """A resolver importable by name, for the BEACON_CONSUMER_RESOLVER tests."""
    return "tenant-from-env"


def test_consumer_resolver_by_name_from_the_environment() -> None:
    """BEACON_CONSUMER_RESOLVER=module:function imports the resolver (usable under auto-run)."""
    config = BeaconConfig.from_env(
        {"BEACON_INGEST_KEY": "k", "BEACON_CONSUMER_RESOLVER": "tests.config.test_settings:tenant_from_scope"}
    )
    assert config.consumer_resolver is not None
    assert config.consumer_resolver(object()) == "tenant-from-env"


@pytest.mark.parametrize(
    "reference",
    ["tests.config.test_settings", "no_such_module_xyz:f", ":f"],
)
def test_bad_resolver_reference_names_the_variable(reference: str) -> None:
    """A resolver whose module cannot be found fails at startup naming the variable."""
    with pytest.raises(BeaconConfigError, match="BEACON_CONSUMER_RESOLVER") as info:
        BeaconConfig.from_env({"BEACON_INGEST_KEY": "k", "BEACON_CONSUMER_RESOLVER": reference})
    assert reference in str(info.value)


failures: list[Exception] = []


def record_failure(error: Exception) -> None:
    """An on_error callback importable by name, for the BEACON_ON_ERROR tests."""
    failures.append(error)


def test_on_error_by_name_from_the_environment() -> None:
    """BEACON_ON_ERROR=module:function imports the callback (usable under auto-run)."""
    config = BeaconConfig.from_env(
        {"BEACON_INGEST_KEY": "k", "BEACON_ON_ERROR": "tests.config.test_settings:record_failure"}
    )
    assert config.on_error is not None
    error = RuntimeError("lost")
    config.on_error(error)  # type: ignore[arg-type]
    assert failures[-1] is error


@pytest.mark.parametrize("reference", ["tests.config.test_settings", "no_such_module_xyz:f"])
def test_bad_on_error_reference_names_the_variable(reference: str) -> None:
    """An on_error callback whose module cannot be found fails at startup naming the variable."""
    with pytest.raises(BeaconConfigError, match="BEACON_ON_ERROR") as info:
        BeaconConfig.from_env({"BEACON_INGEST_KEY": "k", "BEACON_ON_ERROR": reference})
    assert reference in str(info.value)


def test_resolver_module_is_imported_only_when_first_called() -> None:
    """The app's module is not imported at startup, before the instrumentations patch it."""
    import sys

    sys.modules.pop("tests.apps.gunicorn_ready", None)
    config = BeaconConfig.from_env(
        {"BEACON_INGEST_KEY": "k", "BEACON_CONSUMER_RESOLVER": "tests.apps.gunicorn_ready:post_worker_init"}
    )
    assert "tests.apps.gunicorn_ready" not in sys.modules
    assert "ImportedCallable('tests.apps.gunicorn_ready:post_worker_init')" in repr(config.consumer_resolver)


@pytest.mark.parametrize(
    ("arguments", "environ", "setting", "variable"),
    [
        ({}, {}, "ingest_key", "BEACON_INGEST_KEY"),
        ({"ingest_url": "ftp://x"}, {}, "ingest_url", "BEACON_INGEST_URL"),
        ({"batch_size": 0}, {}, "batch_size", "BEACON_BATCH_SIZE"),
        ({"on_error": 42}, {}, "on_error", "BEACON_ON_ERROR"),
        ({}, {"BEACON_TIMEOUT": "soon"}, "timeout", "BEACON_TIMEOUT"),
        ({}, {"BEACON_DEBUG": "verbose"}, "debug", "BEACON_DEBUG"),
        ({}, {"BEACON_ON_ERROR": "no_such_module_xyz:f"}, "on_error", "BEACON_ON_ERROR"),
    ],
)
def test_errors_carry_the_setting_they_are_about(
    arguments: dict[str, object], environ: dict[str, str], setting: str, variable: str
) -> None:
    """BeaconConfigError.setting names the field (and .variable its variable): no message parsing."""
    keyed = {"BEACON_INGEST_KEY": "k"} if setting != "ingest_key" else {}
    with pytest.raises(BeaconConfigError) as info:
        BeaconConfig.from_env({**keyed, **environ}, **arguments)
    assert (info.value.setting, info.value.variable) == (setting, variable)


def test_every_field_but_extra_headers_has_its_variable() -> None:
    """The environment table follows from the fields: BEACON_ + the field name, upper case."""
    from dataclasses import fields

    from beacon_otel.config.settings import ENVIRONMENT

    names = [f.name for f in fields(BeaconConfig) if f.name != "extra_headers"]
    assert {name: f"BEACON_{name.upper()}" for name in names} == ENVIRONMENT


@pytest.mark.parametrize(
    ("value", "disabled"),
    [
        ("false", True),
        (" OFF ", True),
        ("0", True),
        ("no", True),
        ("true", False),
        ("", False),
        ("maybe", False),
    ],
)
def test_disabled_in_reads_beacon_enabled_like_from_env(value: str, disabled: bool) -> None:
    """Auto-run's "is Beacon off?" uses the config's own boolean parsing; bad values go to from_env."""
    from beacon_otel.config.settings import disabled_in

    assert disabled_in({"BEACON_ENABLED": value}) is disabled
    if disabled:
        assert BeaconConfig.from_env({"BEACON_ENABLED": value}).enabled is False


@pytest.mark.parametrize(
    ("options", "spooling"),
    [
        ({"ingest_key": "k"}, True),
        ({"ingest_key": "k", "max_storage_bytes": 0}, False),
        ({"dry_run": True}, False),
        ({"enabled": False}, False),
    ],
)
def test_spool_is_on_only_when_sending_for_real_with_room(options: dict[str, object], spooling: bool) -> None:
    """One place decides whether batches may wait on disk."""
    assert BeaconConfig(**options).spool_enabled is spooling  # type: ignore[arg-type]


def test_unknown_variables_are_named_with_the_closest_setting() -> None:
    """Every BEACON_* variable no setting reads, with the setting it likely misspells (if any)."""
    environ = {
        "BEACON_INGST_URL": "https://x.example",
        "BEACON_INGEST_KY": "k",
        "BEACON_WHATEVER_ELSE": "1",
        "BEACON_INGEST_KEY": "k",
        "BEACON_RAISE_INTERNAL_ERRORS": "1",
        "OTHER_INGST_URL": "x",
    }
    from beacon_otel.config.settings import describe_unknown, unknown_variables

    unknown = unknown_variables(environ)
    assert unknown == [
        ("BEACON_INGEST_KY", "BEACON_INGEST_KEY"),
        ("BEACON_INGST_URL", "BEACON_INGEST_URL"),
        ("BEACON_WHATEVER_ELSE", None),
    ]
    assert describe_unknown(unknown) == (
        "BEACON_INGEST_KY (did you mean BEACON_INGEST_KEY?), BEACON_INGST_URL (did you mean "
        "BEACON_INGEST_URL?), BEACON_WHATEVER_ELSE"
    )


def test_default_spool_on_aws_lambda_is_under_tmp(monkeypatch: pytest.MonkeyPatch) -> None:
    """On AWS Lambda only /tmp is writable: the default spool lives there."""
    import tempfile
    from pathlib import Path

    from beacon_otel.config.settings import default_storage_path

    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "api")
    assert default_storage_path() == Path(tempfile.gettempdir()) / "beacon-otel" / "spool"
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME")
    monkeypatch.setenv("XDG_STATE_HOME", "/var/state")
    assert default_storage_path() == Path("/var/state/beacon-otel/spool")


@pytest.mark.parametrize(
    ("key", "said"),
    [
        ("bk_live_\u200bsecret", "15 characters with U+200B at position 9"),
        ("bk_live_se\ncret", "15 characters with a line break at position 11"),
        ("bk live", "7 characters with a space at position 3"),
        ("bk_live_\u00e9", "9 characters with U+00E9 at position 9"),
        (b"bk_live_bytes_secret", "a bytes value of 20 bytes"),
    ],
)
def test_a_key_that_cannot_go_in_a_header_fails_at_configuration_without_showing_it(
    key: object, said: str
) -> None:
    """Invisible, non-ASCII or bytes keys are refused naming BEACON_INGEST_KEY, never showing the key."""
    with pytest.raises(BeaconConfigError) as raised:
        BeaconConfig(ingest_key=key)  # type: ignore[arg-type]
    message = str(raised.value)
    assert message == (
        "Expected ingest_key (BEACON_INGEST_KEY) to be a non-empty string of visible ASCII characters, "
        f"got {said}"
    )
    assert "secret" not in message and "bytes_" not in message
    assert raised.value.variable == "BEACON_INGEST_KEY"


def test_a_batch_larger_than_memory_is_refused_naming_both_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory that cannot hold one batch would never send a full one nor spool during an outage."""
    expected = r"BEACON_BATCH_SIZE.*BEACON_MAX_BUFFER_SIZE, 50\), got 100"
    with pytest.raises(BeaconConfigError, match=expected) as info:
        BeaconConfig(ingest_key="k", batch_size=100, max_buffer_size=50)
    assert info.value.setting == "batch_size"
    monkeypatch.setenv("BEACON_BATCH_SIZE", "500")
    monkeypatch.setenv("BEACON_MAX_BUFFER_SIZE", "200")
    with pytest.raises(BeaconConfigError, match="BEACON_BATCH_SIZE"):
        BeaconConfig.from_env(ingest_key="k")
    assert BeaconConfig(ingest_key="k", batch_size=50, max_buffer_size=50).batch_size == 50
