"""The relay's own checks (the federation's gRPC service on loopback): only a token the Stratus server issued for this
job and this client name gets in, and one client name has one live session."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from stratus.federated.client import RelayConnection
from stratus.federated.relay import RelayGrid, RelayServicer, client_token, serve

JOB, OTHER_JOB = "a" * 32, "b" * 32
SECRET = b"s" * 32


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    server, port = serve(RelayServicer(RelayGrid(), SECRET, JOB))
    yield f"127.0.0.1:{port}"
    server.stop(grace=0)


def refusal(address: str, client: str, token: str) -> grpc.StatusCode | None:
    connection = RelayConnection(address, client, token)
    try:
        connection.register()
    except grpc.RpcError as exc:
        return exc.code()
    finally:
        connection.channel.close()
    return None


def test_only_this_jobs_token_for_this_client_gets_in(address: str) -> None:
    assert refusal(address, "north", "") == grpc.StatusCode.UNAUTHENTICATED
    assert refusal(address, "north", client_token(SECRET, OTHER_JOB, "north")) == grpc.StatusCode.UNAUTHENTICATED
    assert refusal(address, "north", client_token(SECRET, JOB, "south")) == grpc.StatusCode.UNAUTHENTICATED
    assert refusal(address, "north", client_token(b"x" * 32, JOB, "north")) == grpc.StatusCode.UNAUTHENTICATED


def test_one_live_session_per_client_name(address: str) -> None:
    first = RelayConnection(address, "east", client_token(SECRET, JOB, "east"))
    first.register()
    first.ping()
    assert refusal(address, "east", client_token(SECRET, JOB, "east")) == grpc.StatusCode.ALREADY_EXISTS
    # A session's calls need its node id and session secret, not just the client's token.
    stranger = RelayConnection(address, "east", client_token(SECRET, JOB, "east"))
    stranger.session = [("stratus-node", str(first.node_id)), ("stratus-session", "0" * 32)]
    with pytest.raises(grpc.RpcError) as refused:
        stranger.pull()
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    stranger.channel.close()
    first.leave()
    # Once it has left, the name may connect again (a restarted client).
    assert refusal(address, "east", client_token(SECRET, JOB, "east")) is None
