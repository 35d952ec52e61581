"""Outbound HTTP calls to user-given URLs (alert webhooks), checked against SSRF.

A URL a tenant types in is a request the server makes from inside its network: to the cloud metadata
service (169.254.169.254), to a database on 10.x, to an admin API on loopback. (SSRF is how TorchServe's
management API was broken.) So a target is accepted only when:

  - its scheme is http or https, it names a host, and it carries no user:password;
  - every address the host resolves to is public: not loopback, private, link-local, multicast, reserved,
    unspecified or shared (100.64/10), also when hidden inside an IPv6 form (v4-mapped, 6to4, Teredo,
    NAT64), unless it lies in a network an admin allowed explicitly (``outbound_allowed_networks``).

The check happens after DNS resolution, and the connection is then made to the address that was checked
(the URL's host stays in the Host header and, for https, in SNI and the certificate check). Resolving again
at connect time would let a DNS server answer "public" to the check and "127.0.0.1" to the connection
(DNS rebinding). Redirects are not followed: a 3xx could point anywhere.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from stratus.errors import InvalidInput

if TYPE_CHECKING:
    import httpx

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: host, port -> the addresses it resolves to (text). Injected in tests to play a rebinding DNS server.
Resolver = Callable[[str, int], list[str]]

SCHEMES = ("http", "https")
MAX_URL_LENGTH = 2048
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")  # carrier-grade NAT: not global, not "private" in Python <3.11.4
_RESOLVE_TIMEOUT_S = 5.0
_resolver_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="stratus-resolve")


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def parse_networks(values: Sequence[str]) -> list[Network]:
    """CIDRs (``127.0.0.1/32``, ``10.0.0.0/8``, ``::1/128``) an admin allows outbound calls to reach."""
    networks: list[Network] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise InvalidInput(f"{value!r} is not a network (CIDR such as 10.0.0.0/8)") from None
    return networks


def _embedded(address: Address) -> list[Address]:
    """The address and any IPv4 address an IPv6 form carries (each must pass)."""
    found: list[Address] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            found.append(address.ipv4_mapped)
        if address.sixtofour is not None:
            found.append(address.sixtofour)
        if address.teredo is not None:
            found.extend(address.teredo)
        if address in _NAT64:
            found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def refusal(address: Address) -> str | None:
    """Why ``address`` is not a public destination, or None if it is."""
    for part in _embedded(address):
        for reason, hit in (
            ("unspecified", part.is_unspecified),
            ("loopback", part.is_loopback),
            ("link-local", part.is_link_local),
            ("multicast", part.is_multicast),
            ("private", part.is_private or (isinstance(part, ipaddress.IPv4Address) and part in _SHARED)),
            ("reserved", part.is_reserved),
            ("not globally routable", not part.is_global),
        ):
            if hit:
                return reason
    return None


@dataclass(frozen=True)
class Target:
    """A checked URL and the address its connection must go to."""

    url: str
    scheme: str
    host: str
    port: int
    address: str

    @property
    def pinned_url(self) -> str:
        """The URL with the checked address in place of the host name."""
        parts = urlsplit(self.url)
        ip = ipaddress.ip_address(self.address)
        where = f"[{ip}]" if ip.version == 6 else str(ip)
        return urlunsplit((parts.scheme, f"{where}:{self.port}", parts.path or "/", parts.query, ""))

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


class OutboundPolicy:
    """Decides which URLs the server may call, and resolves each to the one address it will connect to."""

    def __init__(self, allowed_networks: Sequence[str] = (), resolver: Resolver | None = None) -> None:
        self.allowed = parse_networks(allowed_networks)
        self._resolve = resolver or system_resolver

    def _allowed_explicitly(self, address: Address) -> bool:
        return any(address.version == net.version and address in net for net in self.allowed)

    def check_syntax(self, url: str) -> tuple[str, str, int]:
        if not isinstance(url, str) or len(url) > MAX_URL_LENGTH:
            raise InvalidInput(f"a webhook URL is text of at most {MAX_URL_LENGTH} characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise InvalidInput(f"{url[:100]!r} is not a valid URL") from None
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            raise InvalidInput(f"webhook URLs must be http or https, not {scheme or 'a URL without a scheme'!r}")
        if parts.username is not None or parts.password is not None:
            raise InvalidInput("a webhook URL may not carry a user name or password (sign with the rule's secret)")
        host = parts.hostname
        if not host:
            raise InvalidInput(f"{url[:100]!r} names no host")
        if any(c.isspace() for c in url) or parts.fragment:
            raise InvalidInput("a webhook URL may hold no whitespace and no #fragment")
        return scheme, host, port or (443 if scheme == "https" else 80)

    def resolve(self, url: str) -> Target:
        """Check ``url`` and pick the address to connect to; InvalidInput (a 400) says why it is refused."""
        scheme, host, port = self.check_syntax(url)
        try:
            literal: Address | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            texts = [str(literal)]
        else:
            # getaddrinfo cannot be interrupted: the wait is bounded, the lookup finishes on its own thread.
            future = _resolver_pool.submit(self._resolve, host, port)
            try:
                texts = future.result(timeout=_RESOLVE_TIMEOUT_S)
            except FutureTimeout:
                raise InvalidInput(f"resolving {host!r} took longer than {_RESOLVE_TIMEOUT_S:.0f} s") from None
            except (OSError, UnicodeError):
                raise InvalidInput(f"the host {host!r} does not resolve") from None
        if not texts:
            raise InvalidInput(f"the host {host!r} does not resolve")
        addresses = [ipaddress.ip_address(text.split("%", 1)[0]) for text in texts]
        # Every answer must pass, not just one: a DNS server may hand out a public and a private address.
        for address in addresses:
            reason = refusal(address)
            if reason is not None and not self._allowed_explicitly(address):
                raise InvalidInput(
                    f"the webhook host {host!r} resolves to {address}, a {reason} address; outbound calls go to "
                    "public addresses only unless an admin allows the network (STRATUS_OUTBOUND_ALLOWED_NETWORKS)"
                )
        return Target(url=url, scheme=scheme, host=host, port=port, address=str(addresses[0]))


def pinned_request(
    client: httpx.Client, target: Target, body: bytes, headers: dict[str, str], timeout_s: float
) -> httpx.Response:
    """POST ``body`` to the checked address of ``target``, never to a fresh resolution of its host."""
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    return client.post(
        target.pinned_url,
        content=body,
        headers={**headers, "Host": target.host_header},
        timeout=timeout_s,
        extensions=extensions,
        follow_redirects=False,
    )
