"""`stratus serve`: run the platform with uvicorn."""

from __future__ import annotations

import logging
from pathlib import Path

from rich.console import Console

from stratus.api.hosts import is_loopback
from stratus.errors import InvalidInput
from stratus.settings import Settings


def banner(settings: Settings) -> str:
    base = f"http://{settings.host}:{settings.port}"
    if settings.host in ("0.0.0.0", "::"):  # noqa: S104 - we only print it
        base = f"http://127.0.0.1:{settings.port}"
    return f"""
Stratus is ready at {base}
  home:      {settings.home}
  API docs:  {base}/docs
  health:    {base}/v2/health/ready

Predict with curl (Open Inference Protocol / KServe V2):
  curl -s {base}/v2/models/iris/infer -H 'Content-Type: application/json' \\
    -d '{{"inputs":[{{"name":"input","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}}]}}'

Or from Python:
  from stratus import Client
  client = Client("{base}")
  print(client.predict("iris", [[5.1, 3.5, 1.4, 0.2]]))
"""


def check_exposure(settings: Settings, console: Console) -> None:
    """Refuse to put the unauthenticated API on a network interface unless told to, and then say so loudly.

    The API has no authentication yet (a later issue adds keys): on anything but loopback, anyone who can
    reach the port could register models, start training jobs and read artifacts.
    """
    if is_loopback(settings.host):
        return
    if not settings.insecure:
        raise InvalidInput(
            f"refusing to listen on {settings.host}: the API has no authentication yet, so anyone who can reach "
            "this port could manage models and run jobs. Keep the default 127.0.0.1 (put a reverse proxy with "
            "auth in front), or pass --insecure if this network is trusted."
        )
    console.print(
        f"[bold red]WARNING: listening on {settings.host} with NO AUTHENTICATION (--insecure). Anyone who can "
        "reach this port can manage models, run jobs and download artifacts.[/bold red]"
    )


def run_server(settings: Settings) -> None:
    import uvicorn

    from stratus.api import create_app

    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    console = Console()
    check_exposure(settings, console)
    console.print(f"Starting Stratus on http://{settings.host}:{settings.port} (home: {settings.home})")
    if settings.samples and not (settings.home / ".samples-registered").exists():
        console.print("First start: building the bundled sample models (cached for later starts)...")

    def announce() -> None:
        # Plain print: Rich would wrap the curl line at the terminal width and break copy-paste.
        print(banner(settings), flush=True)

    app = create_app(settings, on_started=announce)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )


def settings_for(
    host: str | None, port: int | None, home: Path | None, samples: bool | None, log_level: str | None
) -> Settings:
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
