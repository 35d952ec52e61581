"""The console's static files (ui/static/: our own JS and CSS, and vendor/ built from npm by `make ui-assets`),
served from memory: read once, gzipped once at the highest level, each with a content hash.

Pages link them through ``Assets.url(name)``, which adds ``?v=<hash>``: such a URL names one content for good,
so it is cached for a year (immutable); a URL without the current hash is cached for five minutes only.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

STATIC_DIR = Path(__file__).parent / "static"
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
_COMPRESSIBLE = (".js", ".css", ".svg", ".json", ".map", ".txt")
IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "public, max-age=300"


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes | None
    digest: str
    media_type: str


class Assets:
    def __init__(self, root: Path = STATIC_DIR) -> None:
        self.files: dict[str, Asset] = {}
        for path in sorted(root.rglob("*")) if root.is_dir() else []:
            if not path.is_file() or path.name.startswith("."):
                continue
            body = path.read_bytes()
            name = path.relative_to(root).as_posix()
            media = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            packed = gzip.compress(body, compresslevel=9, mtime=0) if path.suffix in _COMPRESSIBLE else None
            self.files[name] = Asset(body, packed, hashlib.sha256(body).hexdigest()[:12], media)

    def url(self, name: str) -> str:
        """The URL of a static file, with its content hash (a missing file still gets a URL: the page's own
        request for it then fails, which the browser tests report)."""
        asset = self.files.get(name)
        return f"/ui/static/{name}?v={asset.digest}" if asset else f"/ui/static/{name}"

    def response(self, request: Request, name: str) -> Response:
        asset = self.files.get(name)
        if asset is None:
            return Response("no such file", status_code=404, media_type="text/plain")
        etag = f'"{asset.digest}"'
        headers = {
            "cache-control": IMMUTABLE if request.query_params.get("v") == asset.digest else SHORT,
            "etag": etag,
            "vary": "Accept-Encoding",
        }
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        body = asset.body
        if asset.gzipped is not None and "gzip" in request.headers.get("accept-encoding", "").lower():
            body = asset.gzipped
            headers["content-encoding"] = "gzip"
        return Response(body, media_type=asset.media_type, headers=headers)
