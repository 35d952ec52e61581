"""`stratus serve`: run the platform with uvicorn."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from stratus.errors import InvalidInput

if TYPE_CHECKING:
    # Imported where used: every CLI command loads this module, and the server's packages (stratus.api
    # pulls in FastAPI, SQLAlchemy, ONNX Runtime) would cost each `stratus ...` call a second.
    from stratus.settings import Settings


def banner(settings: Settings, bootstrap_key: str | None = None) -> str:
    scheme = "https" if settings.tls_cert else "http"
    base = f"{scheme}://{settings.host}:{settings.port}"
    if settings.host in ("0.0.0.0", "::"):  # noqa: S104 - we only print it
        base = f"{scheme}://127.0.0.1:{settings.port}"
    key_file = settings.resolved_admin_key_file
    grpc = f"  gRPC:      {base.split('://')[1].rsplit(':', 1)[0]}:{settings.grpc_port}\n" if settings.grpc_port else ""
    if not settings.auth:
        auth = "  auth:      OFF (--no-auth): every request acts as the local admin\n"
        header = ""
    else:
        auth = f"  admin key: {key_file} (the CLI and SDK on this machine read it)\n"
        if bootstrap_key is not None:
            auth += f"\nCreated the bootstrap admin key. It is shown this once:\n  {bootstrap_key}\n"
        header = f' \\\n    -H "Authorization: Bearer $(cat {key_file})"'
    return f"""
Stratus is ready at {base}
  home:      {settings.home}
  console:   {base}/ui/ (sign in with an API key)
  health:    {base}/v2/health/ready
{grpc}{auth}
Predict with curl (Open Inference Protocol / KServe V2):
  curl -s {base}/v2/models/iris/infer -H 'Content-Type: application/json'{header} \\
    -d '{{"inputs":[{{"name":"input","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}}]}}'

Or from Python:
  from stratus import Client
  client = Client("{base}")
  print(client.predict("iris", [[5.1, 3.5, 1.4, 0.2]]))
"""


def check_exposure(settings: Settings, console: Console) -> None:
    """Refuse to put an unauthenticated API on a network interface unless told to, and then say so loudly.

    Without keys (--no-auth), anyone who can reach the port could register models, start training jobs
    and read artifacts: the hole behind ShellTorch and ShadowRay. With keys on, a network bind is fine,
    though without TLS the keys cross the network in clear, which is worth a warning.
    """
    from stratus.api.hosts import is_loopback

    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise InvalidInput("--tls-cert and --tls-key go together: give both or neither")
    for path in (settings.tls_cert, settings.tls_key):
        if path is not None and not path.is_file():
            raise InvalidInput(f"TLS file {path} does not exist")
    if is_loopback(settings.host):
        return
    if settings.auth:
        if settings.tls_cert is None:
            console.print(
                f"[yellow]Listening on {settings.host} without TLS: API keys cross the network in clear. "
                "Use --tls-cert/--tls-key or a TLS proxy.[/yellow]"
            )
        return
    if not settings.insecure:
        raise InvalidInput(
            f"refusing to listen on {settings.host} with --no-auth: anyone who can reach this port could manage "
            "models, run jobs and download artifacts. Drop --no-auth (API keys are on by default), keep the "
            "default 127.0.0.1, or add --insecure if this network is trusted."
        )
    console.print(
        f"[bold red]WARNING: listening on {settings.host} with NO AUTHENTICATION (--no-auth --insecure). Anyone "
        "who can reach this port can manage models, run jobs and download artifacts.[/bold red]"
    )


def run_server(settings: Settings) -> None:
    import uvicorn

    from stratus.platform import create_app

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per replica health check otherwise
    console = Console()
    check_exposure(settings, console)
    scheme = "https" if settings.tls_cert else "http"
    console.print(f"Starting Stratus on {scheme}://{settings.host}:{settings.port} (home: {settings.home})")
    if settings.samples and not (settings.home / ".samples-registered").exists():
        console.print(
            "First start of this home: registering the bundled sample models from "
            f"{settings.resolved_sample_cache_dir} (built there first if missing; every home shares it)..."
        )

    from stratus.platform import Platform

    platform = Platform(settings)

    def announce() -> None:
        # Plain print: Rich would wrap the curl line at the terminal width and break copy-paste.
        print(banner(settings, platform.bootstrap_key), flush=True)

    app = create_app(settings, platform, on_started=announce)
    if settings.grpc_port:
        from stratus.grpc.server import address_of, with_grpc

        tls = (settings.tls_cert, settings.tls_key) if settings.tls_cert and settings.tls_key else None
        # The same lifespan runs both: gRPC starts once the platform has, and stops before it closes.
        app.router.lifespan_context = with_grpc(
            app.router.lifespan_context,
            platform,
            address_of(settings.host, settings.grpc_port),
            max_message_bytes=settings.max_request_bytes,
            tls=tls,
        )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
    )


def settings_for(
    host: str | None, port: int | None, home: Path | None, samples: bool | None, log_level: str | None
) -> Settings:
    from stratus.settings import Settings

    overrides: dict[str, object] = {}
    for key, value in (
        ("host", host),
        ("port", port),
        ("home", home),
        ("samples", samples),
        ("log_level", log_level),
    ):
        if value is not None:
            overrides[key] = value
    return Settings(**overrides)  # type: ignore[arg-type]
