"""Endpoint safety: ingest hosts in private networks are refused, literal or resolved."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from beacon_otel import BeaconConfig, BeaconConfigError
from beacon_otel.config.endpoint import EndpointRefused, address_problem, checked_addresses
from beacon_otel.delivery.stats import DeliveryError
from beacon_otel.delivery.transports.http import FailureKind, Verdict
from tests.delivery.transports.test_http import transport_to


@pytest.mark.parametrize(
    ("address", "refused", "refused_even_if_allowed"),
    [
        ("127.0.0.1", False, False),
        ("127.8.9.10", False, False),
        ("::1", False, False),
        ("8.8.8.8", False, False),
        ("2606:4700:4700::1111", False, False),
        ("10.1.2.3", True, False),
        ("172.16.0.1", True, False),
        ("192.168.1.20", True, False),
        ("100.64.0.1", True, False),  # carrier-grade NAT
        ("100.100.100.200", True, False),  # Alibaba Cloud metadata, inside CGNAT
        ("fd00:ec2::254", True, False),  # AWS metadata over IPv6, unique-local
        ("::ffff:10.0.0.1", True, False),  # IPv4-mapped private
        ("169.254.169.254", True, True),  # AWS/GCP/Azure metadata
        ("fe80::1", True, True),
        ("0.0.0.0", True, True),
        ("224.0.0.1", True, True),
        ("2002:a9fe:a9fe::", True, True),  # 6to4 form of the metadata address
        ("2002:a9fe:a9fe:1234::1", True, True),
        ("2002:a00:1::1", True, False),  # 6to4 of 10.0.0.1
        ("2002:808:808::1", False, False),  # 6to4 of a public address
        ("64:ff9b::a9fe:a9fe", True, True),  # NAT64 of the metadata address
        ("64:ff9b::a00:1", True, False),  # NAT64 of 10.0.0.1
        ("64:ff9b::808:808", False, False),  # NAT64 (DNS64) of a public address
        ("::ffff:169.254.169.254", True, True),  # IPv4-mapped metadata
        ("::ffff:127.0.0.1", False, False),
    ],
)
def test_address_rules(address: str, refused: bool, refused_even_if_allowed: bool) -> None:
    """Loopback and public are fine; private needs the opt-in; link-local/metadata never."""
    ip = ipaddress.ip_address(address)
    assert (address_problem(ip, allow_private=False) is not None) is refused
    assert (address_problem(ip, allow_private=True) is not None) is refused_even_if_allowed


@pytest.mark.parametrize(
    "url", ["https://10.0.0.5", "https://[fd00::1]:8443", "https://100.64.1.1/v1/ingest"]
)
def test_private_literal_fails_at_startup_naming_the_opt_in(url: str) -> None:
    """A private IP literal is a startup error that says how to allow it."""
    with pytest.raises(BeaconConfigError, match="BEACON_ALLOW_PRIVATE_ENDPOINTS"):
        BeaconConfig(ingest_key="k", ingest_url=url)
    assert BeaconConfig(ingest_key="k", ingest_url=url, allow_private_endpoints=True)


def test_metadata_literal_is_refused_even_when_private_is_allowed() -> None:
    """169.254.169.254 is never an ingest."""
    with pytest.raises(BeaconConfigError, match="link-local"):
        BeaconConfig(ingest_key="k", ingest_url="https://169.254.169.254", allow_private_endpoints=True)


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Resolve chosen test names to chosen addresses; nothing else is looked up."""
    table: dict[str, str] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in table:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (table[host], int(port)))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr("beacon_otel.config.endpoint.socket.getaddrinfo", getaddrinfo)
    yield table


def test_name_resolving_to_a_private_address_is_refused_before_connecting(fake_dns: dict[str, str]) -> None:
    """A public-looking name that resolves into 10/8 gets no connection and no key."""
    fake_dns["ingest.corp.example"] = "10.20.30.40"
    transport = transport_to("https://ingest.corp.example/v1/ingest?token=abc", key="secret")
    outcome = transport.send(b'{"events":[]}', "b1")
    transport.close()
    assert (outcome.verdict, outcome.kind) == (Verdict.REJECTED, FailureKind.ENDPOINT_GUARD)
    error = str(DeliveryError("rejected", 3, outcome))
    assert error.startswith("3 Beacon events not sent: refused by beacon-otel's endpoint guard: ")
    assert "refused by the ingest" not in error
    assert outcome.detail == (
        "refused by beacon-otel's endpoint guard: ingest host 'ingest.corp.example' is 10.20.30.40, "
        "a private network address; set allow_private_endpoints (BEACON_ALLOW_PRIVATE_ENDPOINTS) "
        "for a self-hosted ingest on an internal network"
    )


@pytest.mark.parametrize("address", ["169.254.169.254", "2002:a9fe:a9fe::1", "fe80::1"])
def test_metadata_refusal_does_not_advise_an_opt_in_that_cannot_help(
    fake_dns: dict[str, str], address: str
) -> None:
    """Link-local (metadata) is refused with private endpoints allowed, and says no setting helps."""
    fake_dns["metadata.example"] = address
    with pytest.raises(EndpointRefused) as info:
        checked_addresses("metadata.example", 443, allow_private=True)
    message = str(info.value)
    assert message.startswith("refused by beacon-otel's endpoint guard: ")
    assert "never an ingest" in message and "ALLOW_PRIVATE" not in message and "ingest refused" not in message


def test_plain_http_to_a_localhost_name_resolving_elsewhere_is_refused(fake_dns: dict[str, str]) -> None:
    """http://x.localhost pointed (hosts file) at a public address: no connection, no key in clear."""
    fake_dns["ingest.localhost"] = "93.184.216.34"
    transport = transport_to("http://ingest.localhost:8390", key="secret")
    outcome = transport.send(b'{"events":[]}', "b1")
    transport.close()
    assert (outcome.verdict, outcome.kind) == (Verdict.REJECTED, FailureKind.ENDPOINT_GUARD)
    assert "plain http is allowed only to this machine" in outcome.detail
    assert "93.184.216.34" in outcome.detail


def test_plain_http_to_a_private_address_is_refused_even_with_the_opt_in(fake_dns: dict[str, str]) -> None:
    """The private-network opt-in is about https: http is for loopback only."""
    fake_dns["ingest.localhost"] = "10.1.2.3"
    with pytest.raises(EndpointRefused, match="plain http"):
        checked_addresses("ingest.localhost", 80, allow_private=True, loopback_only=True)
    fake_dns["ingest.localhost"] = "127.0.0.5"
    assert checked_addresses("ingest.localhost", 80, allow_private=False, loopback_only=True)


@pytest.mark.parametrize(
    "url",
    [
        "https://10.0.0.5/v1/ingest?token=abc",
        "http://ingest.example.com/v1/ingest?token=abc",
        "ftp://ingest.example.com/?token=abc",
        "https://user:abc@ingest.example.com/",
        "https://169.254.169.254/?token=abc#abc",
    ],
)
def test_refused_urls_are_shown_without_query_or_credentials(url: str) -> None:
    """A refused URL's query string and userinfo never reach the error message."""
    with pytest.raises(BeaconConfigError, match="BEACON_INGEST_URL") as info:
        BeaconConfig(ingest_key="k", ingest_url=url)
    assert "abc" not in str(info.value)


def test_literal_ipv6_metadata_forms_fail_at_startup_without_advising_the_opt_in() -> None:
    """The 6to4 form of the metadata address is refused at startup, no setting suggested."""
    with pytest.raises(BeaconConfigError) as info:
        BeaconConfig(ingest_key="k", ingest_url="https://[2002:a9fe:a9fe::]", allow_private_endpoints=True)
    assert "link-local" in str(info.value) and "ALLOW_PRIVATE" not in str(info.value)


def test_opt_in_allows_a_resolved_private_address(fake_dns: dict[str, str]) -> None:
    """With the opt-in, the same resolution passes the check (no connection made here)."""
    fake_dns["ingest.corp.example"] = "10.20.30.40"
    with pytest.raises(EndpointRefused):
        checked_addresses("ingest.corp.example", 443, allow_private=False)
    infos = checked_addresses("ingest.corp.example", 443, allow_private=True)
    assert infos[0][4][0] == "10.20.30.40"


def test_connects_to_the_checked_address_with_the_original_host(
    fake_dns: dict[str, str], server: Any
) -> None:
    """The connection goes to the address that was checked; Host stays the configured name."""
    fake_dns["beacon.localtest"] = "127.0.0.1"
    transport = transport_to(f"http://beacon.localtest:{server.server_address[1]}")
    outcome = transport.send(b'{"events":[]}', "b1")
    transport.close()
    assert outcome.verdict is Verdict.ACCEPTED
    assert server.requests[0][1]["Host"].startswith("beacon.localtest:")


@pytest.mark.parametrize("port", ["99999", "-1", "0", "65536", "x"])
def test_an_impossible_port_fails_at_configuration(port: str) -> None:
    """A port outside 1..65535 is refused when configured, naming BEACON_INGEST_URL."""
    from beacon_otel.config.settings import BeaconConfig, BeaconConfigError

    with pytest.raises(
        BeaconConfigError, match=r"BEACON_INGEST_URL\) to be a URL whose port, if any, is 1 to 65535"
    ):
        BeaconConfig(ingest_key="k", ingest_url=f"http://localhost:{port}")
    assert BeaconConfig(ingest_key="k", ingest_url="http://localhost:65535").ingest_url.endswith(
        ":65535/v1/ingest"
    )
