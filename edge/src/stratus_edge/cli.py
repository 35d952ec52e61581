"""`stratus-edge`: enroll a device, serve a bundle, keep it in sync with the cloud, verify a bundle.

stratus-edge enroll --cloud URL --token sde_... --name till-1
stratus-edge sync --model digits@production [--cloud URL --key stk_...]   # serve + sync + telemetry
stratus-edge serve [BUNDLE]                                              # serve a bundle (or the last good one)
stratus-edge verify BUNDLE
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import ipaddress
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_STATE = Path(os.environ.get("STRATUS_EDGE_STATE", Path.home() / ".stratus-edge"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stratus-edge", description="Serve Stratus models at the edge.")
    parser.add_argument("--state", type=Path, default=DEFAULT_STATE, help="state folder (default ~/.stratus-edge)")
    parser.add_argument("--log-level", default="warning")
    commands = parser.add_subparsers(dest="command", required=True)

    enroll = commands.add_parser("enroll", help="enroll this device into a project with a one-time token")
    enroll.add_argument("--cloud", required=True, help="the platform's URL")
    enroll.add_argument("--token", required=True, help="sde_... from `stratus devices token`")
    enroll.add_argument("--name", required=True, help="this device's name in the project")
    enroll.add_argument("--trust-key", help="the platform's signing key (base64) to pin; default: fetch it once")
    enroll.add_argument("--no-encryption", action="store_true", help="receive plain bundles")

    for name, text in (("serve", "serve a bundle offline"), ("sync", "serve and keep in sync with the cloud")):
        sub = commands.add_parser(name, help=text)
        if name == "serve":
            sub.add_argument("bundle", nargs="?", type=Path, help="bundle folder or ZIP; default: the last good one")
        else:
            sub.add_argument("--model", required=True, help="NAME[@ALIAS|@VERSION], e.g. digits@production")
            sub.add_argument("--cloud", help="default: the enrolled cloud")
            sub.add_argument("--key", help="the device's key; default: the enrolled one")
            sub.add_argument("--interval", type=float, default=5.0, help="seconds between sync rounds")
            sub.add_argument("--spool-max-batches", type=int, default=10_000, help="telemetry batches kept offline")
        sub.add_argument("--host", default="127.0.0.1")
        sub.add_argument("--port", type=int, default=8090)
        sub.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (default: all cores)")
        sub.add_argument("--trust-key", action="append", default=[], help="another trusted signing key (base64)")
        sub.add_argument("--token-file", type=Path, help="require this bearer token (the file's first line)")
        sub.add_argument("--insecure", action="store_true", help="allow a non-loopback host without --token-file")
        sub.add_argument("--forward-below", type=float, help="forward requests whose top probability is below this")
        sub.add_argument("--forward-url", help="the cloud to forward to (default: --cloud)")
        sub.add_argument("--forward-key", default=os.environ.get("STRATUS_EDGE_FORWARD_KEY"), help="a predict key")
        sub.add_argument("--forward-model", help="the model's name in the cloud (default: the bundle's)")
        sub.add_argument("--deadline-ms", type=float, default=500.0, help="wait this long for the cloud's answer")

    verify = commands.add_parser("verify", help="check a bundle's signature and checksums")
    verify.add_argument("bundle", type=Path)
    verify.add_argument("--trust-key", action="append", default=[])
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from stratus_edge.bundle import BundleRefused

    try:
        {"enroll": _enroll, "serve": _serve, "sync": _serve, "verify": _verify}[args.command](args)
    except (BundleRefused, SystemExit) as exc:
        if isinstance(exc, SystemExit):
            raise
        print(f"stratus-edge: bundle refused: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _enroll(args: argparse.Namespace) -> None:
    import orjson
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

    from stratus_edge import cloud
    from stratus_edge.state import State

    state = State(args.state)
    published = orjson.loads(cloud.call(args.cloud, "GET", "/.well-known/stratus-edge-key").body)["public_key"]
    if args.trust_key and args.trust_key.strip() != published:
        raise SystemExit("stratus-edge: the cloud's signing key is not the one given with --trust-key")
    body: dict[str, Any] = {"token": args.token, "name": args.name}
    private = None
    if not args.no_encryption:
        key = X25519PrivateKey.generate()
        private = base64.b64encode(key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())).decode()
        body["public_key"] = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
    json_headers = {"Content-Type": "application/json"}
    answer = cloud.call(args.cloud, "POST", "/api/v1/device/enroll", body=orjson.dumps(body), headers=json_headers)
    if answer.status != 201:
        raise SystemExit(f"stratus-edge: enrollment refused ({answer.status}): {answer.body.decode(errors='replace')}")
    enrolled = orjson.loads(answer.body)
    state.save_device(
        {
            "cloud": args.cloud,
            "device_id": enrolled["device"]["id"],
            "name": args.name,
            "project": enrolled["device"]["project"],
            "key": enrolled["key"],
            "x25519_private_key": private,
            "trusted_keys": [published],
        }
    )
    print(f"enrolled {args.name} ({enrolled['device']['id']}) in project {enrolled['device']['project']}")


def _load_bundle(path: Path, state: Any, trusted: list[str]) -> Any:
    from stratus_edge import bundle

    folder = bundle.unpack(path.read_bytes(), state.bundles) if path.is_file() else path
    return bundle.verify(folder, state.trusted(trusted), state.device_key())


def _verify(args: argparse.Namespace) -> None:
    from stratus_edge.state import State

    verified = _load_bundle(args.bundle, State(args.state), args.trust_key)
    print(f"ok: {verified.label}, {len(verified.files)} file(s), signed by key {verified.manifest['key_id']}")


def _check_exposure(args: argparse.Namespace) -> str | None:
    token = args.token_file.read_text().splitlines()[0].strip() if args.token_file else None
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback and token is None and not args.insecure:
        raise SystemExit("stratus-edge: serving on a non-loopback address needs --token-file (or --insecure)")
    return hashlib.sha256(token.encode()).hexdigest() if token else None


def _serve(args: argparse.Namespace) -> None:
    started = time.monotonic()
    # The runner has no pydantic plugins: looking for them (when the runtime's models are built, imported below)
    # reads every installed package's metadata, a tenth of the cold start.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    token_sha256 = _check_exposure(args)
    from concurrent.futures import ThreadPoolExecutor

    import uvicorn

    from stratus_edge.app import EdgeApp
    from stratus_edge.forward import Forwarder, Forwarding
    from stratus_edge.model import Holder, limit_malloc_arenas, load
    from stratus_edge.state import State
    from stratus_edge.sync import Syncer
    from stratus_edge.telemetry import Telemetry

    limit_malloc_arenas()  # before the first thread starts
    log = logging.getLogger("stratus_edge")
    state = State(args.state)
    device = state.device()
    threads = args.threads or os.cpu_count() or 1
    executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="stratus-edge-infer")
    holder = Holder()
    source = getattr(args, "bundle", None) or state.current()
    if source is not None:
        # Not kept in a name: the verified plain files are dropped once ONNX Runtime has its sessions.
        holder.swap(load(_load_bundle(source, state, args.trust_key), executor, threads))
        log.warning("serving %s from %s (%.2f s after start)", holder.current.label, source, time.monotonic() - started)  # type: ignore[union-attr]
    elif args.command == "serve":
        raise SystemExit("stratus-edge: no bundle given and none synced yet in " + str(state.root))

    syncer = telemetry = None
    cloud_url = getattr(args, "cloud", None) or device.get("cloud")
    if args.command == "sync":
        key = args.key or device.get("key")
        if not cloud_url or not key:
            raise SystemExit("stratus-edge: enroll first, or give --cloud and --key")
        name, _, ref = args.model.partition("@")
        telemetry = Telemetry(state.spool, max_batches=args.spool_max_batches)
        syncer = Syncer(
            state,
            holder,
            telemetry,
            cloud_url=cloud_url,
            key=key,
            model=name,
            ref=ref or None,
            interval_s=args.interval,
            executor=executor,
            threads=threads,
            trusted_extra=args.trust_key,
        )
    forwarder = None
    if args.forward_below is not None:
        url = args.forward_url or cloud_url
        if not url or not args.forward_key:
            raise SystemExit("stratus-edge: --forward-below needs a cloud URL and --forward-key (a predict key)")
        forwarder = Forwarder(
            Forwarding(url, args.forward_key, args.forward_below, args.deadline_ms / 1000.0, args.forward_model)
        )

    def status() -> dict[str, Any]:
        current = holder.current
        return {
            "bundle": current.label if current else None,
            "etag": current.etag if current else None,
            "variant": current.manifest.get("variant") if current else None,
            "switches": holder.switches,
            "sync": syncer.status if syncer else None,
            "telemetry": {"pending_requests": telemetry.pending_requests(), "dropped_batches": telemetry.dropped}
            if telemetry
            else None,
            "forwarding": {"forwarded": forwarder.forwarded, "fell_back": forwarder.fell_back} if forwarder else None,
        }

    app = EdgeApp(holder, telemetry=telemetry, forwarder=forwarder, status=status, token_sha256=token_sha256)
    if syncer is not None:
        syncer.start()
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False, lifespan="on")
    finally:
        if syncer is not None:
            syncer.stop()
        if telemetry is not None:
            telemetry.seal()  # a clean stop leaves the last lines as a batch for the next start to upload
            telemetry.close()
        if forwarder is not None:
            forwarder.close()
        executor.shutdown(wait=False, cancel_futures=True)
