"""The SSRF guard of outbound calls: schemes, addresses after DNS resolution (IPv6 disguises included), the
admin's explicit allowance, and a connection pinned to the address that was checked."""

from __future__ import annotations

import ipaddress
import re
import ssl
from pathlib import Path

import httpx
import pytest

from stratus.errors import InvalidInput
from stratus.security.outbound import OutboundPolicy, pinned_request, refusal
from webhook_receiver import receiver

PUBLIC = "93.184.216.34"


def fixed(*answers: str) -> OutboundPolicy:
    return OutboundPolicy(resolver=lambda host, port: list(answers))


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.1.2.3",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # the cloud metadata service
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",  # v4-mapped
        "::ffff:169.254.169.254",
        "2002:7f00:0001::1",  # 6to4 around 127.0.0.1
        "64:ff9b::a00:1",  # NAT64 around 10.0.0.1
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is not None
    with pytest.raises(InvalidInput, match="outbound calls go to public addresses only"):
        fixed(address).resolve("https://hooks.example.com/x")


@pytest.mark.parametrize(
    "literal", ["http://127.0.0.1:9/x", "http://[::1]/x", "http://169.254.169.254/latest/meta-data"]
)
def test_address_literals_are_checked_too(literal: str) -> None:
    with pytest.raises(InvalidInput, match="public addresses only"):
        OutboundPolicy().resolve(literal)


def test_localhost_is_refused_after_real_resolution() -> None:
    with pytest.raises(InvalidInput, match="loopback"):
        OutboundPolicy().resolve("http://localhost:8080/hook")


def test_one_private_answer_among_public_ones_is_enough_to_refuse() -> None:
    with pytest.raises(InvalidInput, match=re.escape("10.0.0.5")):
        fixed(PUBLIC, "10.0.0.5").resolve("https://hooks.example.com/x")


def test_a_public_address_passes_and_is_pinned() -> None:
    target = fixed(PUBLIC).resolve("https://hooks.example.com/path?q=1")
    assert target.address == PUBLIC
    assert target.pinned_url == f"https://{PUBLIC}:443/path?q=1"
    assert target.host_header == "hooks.example.com"


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "gopher://example.com/x",
        "ftp://example.com/x",
        "ws://example.com/x",
        "example.com/hook",
        "http:///nohost",
        "http://user:pass@example.com/x",
        "http://example.com:99999/x",
        "http://exa mple.com/x",
        "https://example.com/x#frag",
        "http://" + "a" * 3000 + ".com/",
    ],
)
def test_urls_that_are_not_plain_http_are_refused(url: str) -> None:
    with pytest.raises(InvalidInput):
        fixed(PUBLIC).resolve(url)


def test_a_name_that_does_not_resolve_is_a_clear_refusal() -> None:
    def broken(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    with pytest.raises(InvalidInput, match="does not resolve"):
        OutboundPolicy(resolver=broken).resolve("https://nowhere.invalid/x")


def test_an_admin_allows_a_network_explicitly() -> None:
    policy = OutboundPolicy(["127.0.0.1/32", "10.0.0.0/8"], resolver=lambda host, port: ["10.2.3.4"])
    assert policy.resolve("http://internal.example/x").address == "10.2.3.4"
    assert policy.resolve("http://127.0.0.1:5000/x").address == "127.0.0.1"
    with pytest.raises(InvalidInput):
        policy.resolve("http://127.0.0.2:5000/x")  # outside the allowed /32
    with pytest.raises(InvalidInput):
        OutboundPolicy(["not-a-network"])


def test_the_connection_goes_to_the_checked_address_not_a_new_lookup() -> None:
    """A DNS server that answers the check with one address and the next lookup with another (rebinding)
    gets one lookup per call: the request reaches the checked address, with the original Host header."""
    answers = iter(["127.0.0.1", "10.9.9.9"])
    lookups: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        lookups.append(host)
        return [next(answers)]

    policy = OutboundPolicy(["127.0.0.1/32"], resolver=rebinding)
    with receiver() as hook, httpx.Client(trust_env=False) as client:
        target = policy.resolve(f"http://hooks.example.test:{hook.port}/hook")
        response = pinned_request(client, target, b"{}", {"Content-Type": "application/json"}, timeout_s=30)
        assert response.status_code == 200
        (got,) = hook.received()
        assert got.path == "/hook" and got.headers["Host"] == f"hooks.example.test:{hook.port}"
        assert lookups == ["hooks.example.test"]
        # The next call resolves again, and the new answer is checked before anything is sent.
        with pytest.raises(InvalidInput, match=re.escape("10.9.9.9")):
            policy.resolve(f"http://hooks.example.test:{hook.port}/hook")
        assert len(hook.received()) == 1


def _certificate(tmp_path: Path, host: str) -> tuple[Path, Path]:
    """A self-signed certificate for the DNS name ``host`` (no IP address in it)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_https_to_a_pinned_address_still_checks_the_certificate_of_the_name(tmp_path: Path) -> None:
    """The connection goes to the checked address, yet TLS speaks to the URL's host: SNI carries the name, and
    the certificate must be the name's (a certificate for another name fails, pinned or not)."""
    cert, key = _certificate(tmp_path, "hooks.example.test")
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    names: list[str | None] = []
    server_tls.sni_callback = lambda sock, name, ctx: names.append(name)  # type: ignore[assignment,func-returns-value]
    policy = OutboundPolicy(["127.0.0.1/32"], resolver=lambda host, port: ["127.0.0.1"])
    trusted = ssl.create_default_context(cafile=str(cert))
    with receiver(tls=server_tls) as hook, httpx.Client(verify=trusted, trust_env=False) as client:
        target = policy.resolve(f"https://hooks.example.test:{hook.port}/hook")
        assert target.pinned_url.startswith("https://127.0.0.1:")
        response = pinned_request(client, target, b"{}", {"Content-Type": "application/json"}, timeout_s=30)
        assert response.status_code == 200 and names == ["hooks.example.test"]
        assert hook.received()[0].headers["Host"] == f"hooks.example.test:{hook.port}"
        wrong = policy.resolve(f"https://other.example.test:{hook.port}/hook")
        with pytest.raises(httpx.ConnectError, match="certificate"):
            pinned_request(client, wrong, b"{}", {}, timeout_s=30)
    assert len(hook.received()) == 1
