"""Webhook signatures: how Stratus signs an alert's JSON body and how a receiver checks it.

The header is ``Stratus-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>``, the HMAC taken with the rule's
secret over ``"<t>." + body`` (the scheme Stripe and Svix use). The timestamp is part of what is signed, so
a receiver that refuses signatures older than a few minutes cannot be fed a recorded delivery again; each
attempt is signed afresh. ``Stratus-Event-Id`` stays the same across attempts, for receivers that must act
once per event.

Nothing here touches the network or the DB: the SDK's ``verify_webhook`` uses it on the receiving side.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

SIGNATURE_HEADER = "Stratus-Signature"
EVENT_HEADER = "Stratus-Event-Id"
ATTEMPT_HEADER = "Stratus-Delivery-Attempt"
USER_AGENT = "Stratus-Webhook/1"
#: How old a signature a receiver accepts by default (seconds), either way (clocks drift).
DEFAULT_TOLERANCE_S = 300


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def signed_headers(secret: bytes, timestamp: int, body: bytes, event_id: int, attempt: int) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: signature(secret, timestamp, body),
        EVENT_HEADER: str(event_id),
        ATTEMPT_HEADER: str(attempt),
    }


def verify(secret: bytes | str, header: str, body: bytes, now: float, tolerance_s: float = DEFAULT_TOLERANCE_S) -> bool:
    """True if ``header`` (the Stratus-Signature value) signs ``body`` with ``secret`` within the tolerance."""
    key = secret.encode() if isinstance(secret, str) else secret
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        fields.setdefault(name, []).append(value)
    stamps = fields.get("t", [])
    if len(stamps) != 1 or not stamps[0].isascii() or not stamps[0].isdigit() or len(stamps[0]) > 12:
        return False
    timestamp = int(stamps[0])
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = signature(key, timestamp, body).split("v1=", 1)[1]
    # Several v1 values are allowed (a receiver mid-way through a secret change); one must match.
    return any(hmac.compare_digest(expected, given) for given in fields.get("v1", []))


def verify_headers(
    secret: bytes | str, headers: Mapping[str, str], body: bytes, now: float, tolerance_s: float = DEFAULT_TOLERANCE_S
) -> bool:
    lowered = {k.lower(): v for k, v in headers.items()}
    header = lowered.get(SIGNATURE_HEADER.lower())
    return header is not None and verify(secret, header, body, now, tolerance_s)
