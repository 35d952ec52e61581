"""Bundles between the platform's builder (stratus.devices.bundles) and the runner's check (stratus_edge.bundle),
in process: what verifies, and each way a bundle is refused."""

from __future__ import annotations

import base64
import io
import zipfile
from datetime import datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from onnx_factory import affine_model
from stratus.devices import bundles
from stratus.registry.records import VersionInfo
from stratus.security.signing import SigningKey
from stratus.types import Signature
from stratus_edge import bundle as edge_bundle

SIGNATURE = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
}


def _version(number: int, **extra: object) -> VersionInfo:
    fields: dict[str, object] = {
        "id": number,
        "model": "affine",
        "version": number,
        "digest": "sha256:" + "ab" * 32,
        "size_bytes": 1,
        "format": "onnx",
        "signature": Signature.from_dict(SIGNATURE),
        "metrics": {},
        "params": {},
        "config": {},
        "parent_version": None,
        "dataset": None,
        "source": None,
        "description": "",
        "status": "active",
        "health": "healthy",
        "health_reason": "",
        "created_at": datetime(2026, 12, 2),
    }
    fields.update(extra)
    return VersionInfo(**fields)  # type: ignore[arg-type]


def _public(key: X25519PrivateKey) -> str:
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def _bundle(signer: SigningKey, device: str = "") -> bytes:
    served = bundles.Served(_version(1), _version(1))
    files = ("model.onnx", {"model.onnx": affine_model()}, {})
    return bundles.build(served, files, signer, project="default", requested_ref="production", device_public_key=device)


def _rezip(data: bytes, change: dict[str, bytes]) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name in source.namelist():
            archive.writestr(name, change.get(name, source.read(name)))
    return out.getvalue()


@pytest.fixture
def signer() -> SigningKey:
    return SigningKey(Ed25519PrivateKey.generate())


def test_a_signed_bundle_verifies_and_each_change_is_refused(signer: SigningKey, tmp_path: Path) -> None:
    trusted = [edge_bundle.public_key_of(signer.public_b64)]
    good = _bundle(signer)
    verified = edge_bundle.verify(edge_bundle.unpack(good, tmp_path), trusted)
    assert verified.label == "affine:1" and verified.files["model.onnx"] == affine_model()
    model = bytearray(zipfile.ZipFile(io.BytesIO(good)).read("model.onnx"))
    model[len(model) // 2] ^= 0x01
    with pytest.raises(edge_bundle.BundleRefused, match="fails its checksum"):
        edge_bundle.verify(edge_bundle.unpack(_rezip(good, {"model.onnx": bytes(model)}), tmp_path), trusted)
    manifest = zipfile.ZipFile(io.BytesIO(good)).read("manifest.json")
    other = base64.b64encode(Ed25519PrivateKey.generate().sign(manifest))
    with pytest.raises(edge_bundle.BundleRefused, match="signature"):
        edge_bundle.verify(edge_bundle.unpack(_rezip(good, {"manifest.sig": other}), tmp_path), trusted)
    edited = manifest.replace(b'"version": 1', b'"version": 2')
    with pytest.raises(edge_bundle.BundleRefused, match="signature"):
        edge_bundle.verify(edge_bundle.unpack(_rezip(good, {"manifest.json": edited}), tmp_path), trusted)
    escaping = io.BytesIO()
    with zipfile.ZipFile(escaping, "w") as archive:
        archive.writestr("../evil.onnx", b"x")
    with pytest.raises(edge_bundle.BundleRefused, match="path"):
        edge_bundle.unpack(escaping.getvalue(), tmp_path)


def test_an_encrypted_bundle_opens_on_its_device_only(signer: SigningKey, tmp_path: Path) -> None:
    trusted = [edge_bundle.public_key_of(signer.public_b64)]
    device, stranger = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    data = _bundle(signer, _public(device))
    stored = zipfile.ZipFile(io.BytesIO(data)).read("model.onnx")
    assert affine_model() not in stored  # a copy of the bundle does not hold the model
    folder = edge_bundle.unpack(data, tmp_path)
    assert edge_bundle.verify(folder, trusted, device).files["model.onnx"] == affine_model()
    with pytest.raises(edge_bundle.BundleRefused, match="does not decrypt"):
        edge_bundle.verify(folder, trusted, stranger)
    with pytest.raises(edge_bundle.BundleRefused, match="no device key"):
        edge_bundle.verify(folder, trusted, None)


def test_the_int8_variant_within_budget_is_shipped() -> None:
    base = _version(1)
    quantized = _version(
        2,
        parent_version=1,
        params={"compression_method": "quantize-dynamic"},
        metrics={"quality_drop": 0.004, "throughput_batch32": 900.0},
    )
    too_lossy = _version(
        3,
        parent_version=1,
        params={"compression_method": "quantize-static"},
        metrics={"quality_drop": 0.05, "throughput_batch32": 2000.0},
    )
    pruned = _version(4, parent_version=1, params={"compression_method": "prune"}, metrics={"quality_drop": 0.0})
    assert bundles.int8_variant(base, [base, quantized, too_lossy, pruned], 0.01) == quantized
    assert bundles.int8_variant(base, [base, quantized, too_lossy, pruned], 0.001) is None
    assert bundles.int8_variant(base, [base, too_lossy], 0.1) == too_lossy


def test_the_signing_key_is_sealed_and_survives_a_master_key_rotation(tmp_path: Path) -> None:
    from stratus.security.encryption import Keyring
    from stratus.security.signing import FILE_NAME, rewrap_signing_key

    old = Keyring.generate()
    created = SigningKey.load_or_create(tmp_path, old)
    sealed = (tmp_path / FILE_NAME).read_bytes()
    assert (tmp_path / FILE_NAME).stat().st_mode & 0o777 == 0o600
    assert b"PRIVATE" not in sealed and len(sealed) < 200  # a wrapped 32-byte key, not a PEM
    new = Keyring(Keyring.generate().current, [old.current])
    assert rewrap_signing_key(tmp_path, new) == 1
    # Only the new master key is needed now, and the platform's public key is unchanged.
    assert SigningKey.load_or_create(tmp_path, Keyring(new.current)).public_b64 == created.public_b64


def test_telemetry_spool_survives_a_torn_line_and_keeps_its_bound(tmp_path: Path) -> None:
    from stratus_edge.telemetry import Telemetry

    spool = Telemetry(tmp_path, max_batches=2)
    for _ in range(3):
        spool.record("digits", 1, 2, 0.004, "edge")
    spool.seal()
    with open(tmp_path / "open.log", "ab") as log:  # a line cut short, as a crash mid-write would leave it
        log.write(b"digits\t1\t")
    spool.close()
    again = Telemetry(tmp_path, max_batches=2)  # a restart seals what the last run left open
    batches = again.batches()
    assert len(batches) == 2
    assert Telemetry.summarize(batches[0])["records"] == [
        {"model": "digits", "requests": 3, "items": 6, "compute_ms": 12.0}
    ]
    assert Telemetry.summarize(batches[1])["records"] == []
    for _ in range(2):
        again.record("digits", 1, 1, 0.001, "edge")
        again.seal()
    assert len(again.batches()) == 2 and again.dropped == 2  # the oldest went first
    again.close()
