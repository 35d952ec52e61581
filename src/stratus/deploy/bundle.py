"""A serving bundle: everything needed to serve an endpoint's versions without the metadata database.

It is a manifest (``endpoint.json``: the routes and each version's metadata) plus the version's blobs,
named by their SHA-256 digest. The same bundle feeds a replica process (packed on its stdin, so decrypted
models never touch the disk) and the exported single-endpoint mode (a directory in a Docker context).
Every blob is checked against its digest when it is read.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from stratus.errors import IntegrityError, InvalidInput, NotFound
from stratus.registry.names import parse_version_ref
from stratus.registry.records import ModelInfo, VersionInfo
from stratus.runtime.pipeline import ModelRef, PipelineSpec
from stratus.types import Signature

MANIFEST = "endpoint.json"
FORMAT = "stratus-endpoint/1"
_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Route:
    model: str
    version: int
    weight: int


def blob_name(digest: str) -> str:
    hex_digest = digest.removeprefix("sha256:")
    if not _HEX.fullmatch(hex_digest):
        raise IntegrityError(f"malformed digest {digest!r} in the bundle manifest")
    return f"blobs/{hex_digest}"


def _version_entry(version: VersionInfo) -> dict[str, Any]:
    entry = version.to_dict()
    entry["id"] = version.id
    return entry


def _version_of(entry: dict[str, Any]) -> VersionInfo:
    lineage = entry.get("lineage") or {}
    return VersionInfo(
        id=int(entry["id"]),
        model=entry["model"],
        version=int(entry["version"]),
        digest=entry["digest"],
        size_bytes=int(entry["size_bytes"]),
        format=entry["format"],
        signature=Signature.from_dict(entry["signature"]),
        metrics=dict(entry.get("metrics") or {}),
        params=dict(entry.get("params") or {}),
        config=dict(entry.get("config") or {}),
        parent_version=lineage.get("parent_version"),
        dataset=lineage.get("dataset"),
        source=lineage.get("source"),
        description=entry.get("description", ""),
        status="active",
        health="healthy",
        health_reason="",
        created_at=datetime.fromisoformat(entry["created_at"].removesuffix("Z")),
        aliases=tuple(entry.get("aliases") or ()),
        files=dict(entry.get("files") or {}),
    )


def build(
    endpoint: str,
    routes: list[Route],
    get_version: Callable[[str, int], VersionInfo],
    read_blob: Callable[[VersionInfo, str], bytes],
) -> dict[str, bytes]:
    """The bundle's entries for ``routes``, with the versions that pipelines among them reference."""
    versions: dict[tuple[str, int], VersionInfo] = {}
    blobs: dict[str, bytes] = {}
    pending = [(r.model, r.version) for r in routes]
    while pending:
        key = pending.pop()
        if key in versions:
            continue
        version = versions[key] = get_version(*key)
        for digest in (version.digest, *version.files.values()):
            if digest not in blobs:
                blobs[digest] = read_blob(version, digest)
        if version.format == "pipeline":
            pending += [(ref.name, ref.version) for ref in PipelineSpec.parse(blobs[version.digest]).model_refs()]
    manifest = {
        "format": FORMAT,
        "endpoint": endpoint,
        "created_at": datetime.now(UTC).isoformat(),
        "routes": [{"model": r.model, "version": r.version, "weight": r.weight} for r in routes],
        "versions": [_version_entry(v) for v in versions.values()],
        "blobs": {digest: len(data) for digest, data in blobs.items()},
    }
    entries = {MANIFEST: orjson.dumps(manifest, option=orjson.OPT_INDENT_2)}
    entries.update({blob_name(digest): data for digest, data in blobs.items()})
    return entries


def write_dir(entries: Mapping[str, bytes], folder: Path) -> None:
    """Write a bundle as files. Names come from ``build`` (the manifest and digest-named blobs), never from
    user input."""
    for name, data in entries.items():
        if name != MANIFEST and not (name.startswith("blobs/") and _HEX.fullmatch(name.removeprefix("blobs/"))):
            raise IntegrityError(f"unexpected entry {name!r} in a serving bundle")
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


class BundleCatalog:
    """The versions of a bundle, read the way the data plane reads the registry."""

    def __init__(self, read: Callable[[str], bytes]) -> None:
        self._read = read
        try:
            manifest = orjson.loads(read(MANIFEST))
        except (FileNotFoundError, KeyError):
            raise InvalidInput(f"not a Stratus endpoint bundle: {MANIFEST} is missing") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise InvalidInput(f"not a Stratus endpoint bundle of format {FORMAT}")
        self.endpoint: str = manifest["endpoint"]
        self.routes = [Route(r["model"], int(r["version"]), int(r["weight"])) for r in manifest["routes"]]
        self._versions = {(v.model, v.version): v for v in map(_version_of, manifest["versions"])}

    @classmethod
    def from_entries(cls, entries: Mapping[str, bytes]) -> BundleCatalog:
        return cls(lambda name: entries[name])

    @classmethod
    def from_dir(cls, folder: Path) -> BundleCatalog:
        return cls(lambda name: (folder / name).read_bytes())

    def versions(self) -> list[VersionInfo]:
        return list(self._versions.values())

    # -- what the data plane asks of a catalog ----------------------------------------------------------

    def on_change(self, listener: Callable[[str], None]) -> None:
        """A bundle never changes."""

    def list_models(self) -> list[ModelInfo]:
        names = sorted({v.model for v in self._versions.values()})
        return [self._model(name) for name in names]

    def _model(self, name: str) -> ModelInfo:
        numbers = tuple(sorted(v.version for v in self._versions.values() if v.model == name))
        first = self._versions[(name, numbers[0])]
        return ModelInfo(name, first.description, "other", {}, first.created_at, first.created_at, numbers)

    def list_versions(self, name: str) -> list[VersionInfo]:
        found = sorted((v for v in self._versions.values() if v.model == name), key=lambda v: v.version)
        if not found:
            raise NotFound(f"model {name!r} is not in this endpoint")
        return found

    def get_version(self, name: str, version: int) -> VersionInfo:
        found = self._versions.get((name, version))
        if found is None:
            raise NotFound(f"version {version} of model {name!r} is not in this endpoint")
        return found

    def resolve(self, name: str, ref: str | int | None = None) -> VersionInfo:
        parsed = parse_version_ref(ref)
        if isinstance(parsed, int):
            return self.get_version(name, parsed)
        versions = self.list_versions(name)
        if parsed is None or parsed == "latest":
            return versions[-1]
        for version in versions:
            if parsed in version.aliases:
                return version
        raise NotFound(f"model {name!r} has no alias {parsed!r} in this endpoint")

    def _blob(self, version: VersionInfo, digest: str) -> bytes:
        try:
            data = self._read(blob_name(digest))
        except (FileNotFoundError, KeyError):
            raise IntegrityError(
                f"version {version.version} of model {version.model!r}: blob {digest} is missing"
            ) from None
        actual = "sha256:" + hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise IntegrityError(
                f"version {version.version} of model {version.model!r}: blob {digest} fails its checksum"
            )
        return data

    def read_artifact(self, version: VersionInfo) -> bytes:
        return self._blob(version, version.digest)

    def read_file(self, version: VersionInfo, name: str) -> bytes:
        digest = version.files.get(name)
        if digest is None:
            raise NotFound(f"version {version.version} of model {version.model!r} has no file {name!r}")
        return self._blob(version, digest)

    def read_ref(self, ref: ModelRef) -> bytes:
        return self.read_artifact(self.get_version(ref.name, ref.version))
