"""The single-endpoint server's process: ``stratus serve-endpoint DIR`` (an exported endpoint) and the
replica processes of a Stratus server (``python -m stratus.cli.endpoint_server --stdin --fd N``).

A replica imports everything first and only then reads its bundle from stdin, so a spare process can be
started ahead and handed a model when one is needed. It exits when the server that started it is gone: the
server starts it through ``stratus.lifeline``, which arranges that before this module is even imported.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path

import orjson
import uvicorn

from stratus import framing
from stratus.api.hosts import is_loopback
from stratus.api.serving import create_endpoint_app
from stratus.deploy.bundle import BundleCatalog
from stratus.deploy.replicas import REPLICA_CONFIG

KEY_ENV = "STRATUS_ENDPOINT_KEY_SHA256"


def serve(
    catalog: BundleCatalog,
    *,
    key_sha256: str | None,
    threads: int,
    host: str = "127.0.0.1",
    port: int = 8080,
    fd: int | None = None,
    log_level: str = "warning",
) -> None:
    app = create_endpoint_app(catalog, key_sha256=key_sha256, threads=threads)
    # Keep-alive longer than the router keeps idle connections (deploy/http1.py), so it rarely meets a
    # connection the replica has just closed.
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, access_log=False, lifespan="on", timeout_keep_alive=75
    )
    if fd is None:
        uvicorn.Server(config).run()
        return
    # socket(fileno=) reads the family (AF_INET) from the descriptor; uvicorn's own fd= path assumes a Unix
    # socket, and asyncio then leaves Nagle on: every response stalled 40 ms on delayed ACKs.
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])


def check_exposure(host: str, key_sha256: str | None, insecure: bool) -> None:
    if key_sha256 is None and not is_loopback(host) and not insecure:
        raise SystemExit(
            f"refusing to serve on {host} without a key: set {KEY_ENV} to the SHA-256 (hex) of the key clients "
            "will send, or pass --insecure if this network is trusted"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="stratus-endpoint-server", description=__doc__)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dir", type=Path, help="an exported endpoint folder (with endpoint.json)")
    source.add_argument("--stdin", action="store_true", help="read a serving bundle from stdin (replicas)")
    parser.add_argument("--fd", type=int, help="serve on this already bound socket")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1))
    parser.add_argument("--insecure", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.stdin:
        entries = framing.unpack(sys.stdin.buffer.read())
        config = orjson.loads(entries.pop(REPLICA_CONFIG))
        catalog = BundleCatalog.from_entries(entries)
        serve(catalog, key_sha256=config["token_sha256"], threads=int(config["threads"]), fd=args.fd)
        return
    key = os.environ.get(KEY_ENV) or None
    check_exposure(args.host, key, args.insecure)
    serve(
        BundleCatalog.from_dir(args.dir),
        key_sha256=key,
        threads=args.threads,
        host=args.host,
        port=args.port,
        fd=args.fd,
        log_level="info",
    )


if __name__ == "__main__":
    main()
