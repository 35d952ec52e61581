"""Key scopes and their order: what the access check needs, without the key store (so a replica, which
checks one key against one hash, imports no database)."""

from __future__ import annotations

#: Ordered weakest to strongest: a key holding a scope may do what any weaker scope allows.
SCOPES = ("read", "predict", "manage", "admin")
RANK = {scope: rank for rank, scope in enumerate(SCOPES)}
#: An edge device's key (docs/edge.md): off the ladder. It may use the device routes (bundle sync, telemetry)
#: and nothing else, and no scope of the ladder may use those.
EDGE = "edge"
#: A federation client's key (docs/federated.md): off the ladder too, bound to one federated job; it may join that
#: job's federation and nothing else.
FEDERATED = "federated"


def satisfies(scopes: frozenset[str], required: str) -> bool:
    """Whether a key with ``scopes`` may use a route that requires ``required``."""
    if required in (EDGE, FEDERATED):
        return required in scopes
    need = RANK[required]
    return any(RANK.get(scope, -1) >= need for scope in scopes)
