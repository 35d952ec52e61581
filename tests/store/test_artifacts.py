"""The artifact store's contract, run against both backends: the local folder and S3 (moto on loopback)."""

from __future__ import annotations

import hashlib
import io
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import free_port
from stratus.errors import IntegrityError, NotFound, NotReady, PayloadTooLarge, StratusError
from stratus.security.encryption import Keyring
from stratus.settings import Settings
from stratus.store import Artifacts, ArtifactStore, open_artifacts
from stratus.store.s3 import S3ArtifactStore

MIB = 1024 * 1024
PART = 5 * MIB  # S3's smallest part, so a blob of a few MiB is a real multipart upload


@dataclass
class Backend:
    """A store and the few things a test does behind its back: tamper with a blob, see what writes left over."""

    store: Artifacts
    tamper: Callable[[str], None]
    leftovers: Callable[[], list[str]]
    interrupt: Callable[[], None]  # leave what a write killed in its middle leaves

    def reopened(self, keyring: Keyring, **kwargs: Any) -> Artifacts:
        store = self.store
        if isinstance(store, S3ArtifactStore):
            return S3ArtifactStore(store.client, store.bucket, store.root, keyring, **kwargs)
        assert isinstance(store, ArtifactStore)
        return ArtifactStore(store.root, keyring)


def _local(root: Path) -> Backend:
    store = ArtifactStore(root, Keyring.generate())

    def tamper(digest: str) -> None:
        path = root / "sha256" / digest[7:9] / digest[7:]
        path.write_bytes(path.read_bytes()[:-1] + b"!")

    def interrupt() -> None:
        (root / "tmp" / "abc.part").write_bytes(b"half a model")

    return Backend(store, tamper, lambda: sorted(p.name for p in (root / "tmp").iterdir()), interrupt)


def _s3(client: Any, bucket: str) -> Backend:
    store = S3ArtifactStore(client, bucket, "stratus/artifacts", Keyring.generate(), gc_grace_seconds=0, part_size=PART)

    def tamper(digest: str) -> None:
        key = f"stratus/artifacts/sha256/{digest[7:]}"
        stored = client.get_object(Bucket=bucket, Key=key)
        body = stored["Body"].read()
        client.put_object(Bucket=bucket, Key=key, Body=body[:-1] + b"!", Metadata=stored["Metadata"])

    def leftovers() -> list[str]:
        listed = client.list_objects_v2(Bucket=bucket, Prefix="stratus/artifacts/tmp/").get("Contents", [])
        keys = [o["Key"] for o in listed]
        uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        return sorted(keys + [f"upload:{u['Key']}" for u in uploads])

    def interrupt() -> None:
        client.put_object(Bucket=bucket, Key="stratus/artifacts/tmp/killed-after-upload", Body=b"sealed bytes")
        client.create_multipart_upload(Bucket=bucket, Key="stratus/artifacts/tmp/killed-mid-upload")

    return Backend(store, tamper, leftovers, interrupt)


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        return _local(tmp_path)
    server = request.getfixturevalue("s3_server")
    return _s3(server.client, server.create_bucket())


def test_put_is_content_addressed_and_deduplicated(backend: Backend) -> None:
    store = backend.store
    first = store.put_bytes(b"hello model")
    second = store.put_stream(io.BytesIO(b"hello model"))
    assert first == second
    assert first.digest == "sha256:" + hashlib.sha256(b"hello model").hexdigest()
    assert first.size == len(b"hello model")
    assert list(store.digests()) == [first.digest]
    assert store.exists(first.digest)
    assert store.read(first.digest) == b"hello model"
    assert backend.leftovers() == []


def test_a_blob_of_several_chunks_and_parts_round_trips(backend: Backend) -> None:
    data = os.urandom(2 * PART + 123)  # three S3 parts, eleven 1 MiB sealed chunks
    stored = backend.store.put_stream(io.BytesIO(data))
    assert stored.size == len(data)
    assert backend.store.read(stored.digest) == data
    assert backend.leftovers() == []


def test_the_store_holds_only_sealed_bytes(backend: Backend, tmp_path: Path) -> None:
    plain = b"PLAINTEXT-MARKER " * 1000
    stored = backend.store.put_bytes(plain)
    store = backend.store
    if isinstance(store, S3ArtifactStore):
        raw = store.client.get_object(Bucket=store.bucket, Key=f"stratus/artifacts/sha256/{stored.digest[7:]}")
        at_rest = raw["Body"].read() + repr(raw["Metadata"]).encode()
    else:
        at_rest = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert b"PLAINTEXT-MARKER" not in at_rest
    assert store.read(stored.digest) == plain


def test_read_refuses_altered_blob(backend: Backend) -> None:
    stored = backend.store.put_bytes(b"original bytes")
    backend.tamper(stored.digest)
    with pytest.raises(IntegrityError, match="altered"):
        backend.store.read(stored.digest)


def test_missing_blob_is_an_integrity_error(backend: Backend) -> None:
    stored = backend.store.put_bytes(b"x")
    backend.store.delete(stored.digest)
    assert not backend.store.exists(stored.digest)
    with pytest.raises(IntegrityError, match="missing"):
        backend.store.read(stored.digest)


def test_another_master_key_cannot_read(backend: Backend) -> None:
    stored = backend.store.put_bytes(b"secret model")
    with pytest.raises(IntegrityError, match="master key"):
        backend.reopened(Keyring.generate()).read(stored.digest)


def test_rotation_rewraps_every_data_key(backend: Backend) -> None:
    digests = [backend.store.put_bytes(b"one").digest, backend.store.put_bytes(b"two").digest]
    old = backend.store.keyring
    new = Keyring(Keyring.generate().current, [old.current])
    assert backend.reopened(new).rewrap_all() == 2
    assert backend.reopened(new).rewrap_all() == 0  # done: nothing left under the old key
    only_new = backend.reopened(Keyring(new.current))
    assert [only_new.read(d) for d in digests] == [b"one", b"two"]


@pytest.mark.parametrize("digest", ["../../etc/passwd", "sha256:../x", "sha256:" + "g" * 64, "sha256:ABC", ""])
def test_digest_is_the_only_way_to_a_name(backend: Backend, digest: str) -> None:
    with pytest.raises(NotFound):
        backend.store.read(digest)


def test_oversized_stream_leaves_nothing(backend: Backend) -> None:
    with pytest.raises(PayloadTooLarge):
        backend.store.put_stream(io.BytesIO(b"x" * 5000), max_bytes=1000)
    assert not list(backend.store.digests())
    assert backend.leftovers() == []


def test_a_failed_multipart_upload_leaves_nothing(backend: Backend) -> None:
    """The limit is passed after some parts went up: the upload is aborted, not left to the collector."""
    with pytest.raises(PayloadTooLarge):
        backend.store.put_stream(io.BytesIO(os.urandom(3 * PART)), max_bytes=2 * PART + 1)
    assert not list(backend.store.digests())
    assert backend.leftovers() == []


def test_gc_removes_unreferenced_blobs_and_interrupted_writes(backend: Backend) -> None:
    kept = backend.store.put_bytes(b"a version references me")
    orphan = backend.store.put_bytes(b"left by a crash between blob and row")
    backend.interrupt()
    assert backend.leftovers() != []
    removed = backend.store.collect_garbage(lambda: {kept.digest})
    assert removed >= 2
    assert list(backend.store.digests()) == [kept.digest]
    assert not backend.store.exists(orphan.digest)
    assert backend.leftovers() == []
    assert backend.store.read(kept.digest) == b"a version references me"


def test_gc_of_some_digests_leaves_the_others(backend: Backend) -> None:
    one, two = backend.store.put_bytes(b"one"), backend.store.put_bytes(b"two")
    backend.store.collect_garbage(set, only={one.digest})
    assert list(backend.store.digests()) == [two.digest]


# -- S3 only: what makes the collector safe while other servers write ------------------------------------------------


@pytest.fixture
def bucket(s3_server: Any) -> tuple[Any, str]:
    return s3_server.client, s3_server.create_bucket()


def _s3_store(bucket: tuple[Any, str], grace: float, keyring: Keyring | None = None) -> S3ArtifactStore:
    client, name = bucket
    return S3ArtifactStore(client, name, "p", keyring or Keyring.generate(), gc_grace_seconds=grace, part_size=PART)


def test_gc_leaves_what_is_younger_than_the_grace_period(bucket: tuple[Any, str]) -> None:
    client, name = bucket
    store = _s3_store(bucket, grace=3600)
    orphan = store.put_bytes(b"being registered by another server right now")
    started = int(time.time())  # what a writer puts in its temporary key
    client.put_object(Bucket=name, Key=f"p/tmp/{started}-an-upload-in-progress", Body=b"x")
    client.create_multipart_upload(Bucket=name, Key=f"p/tmp/{started}-a-multipart-upload-in-progress")
    assert store.collect_garbage(set) == 0
    assert list(store.digests()) == [orphan.digest]
    assert len(client.list_objects_v2(Bucket=name, Prefix="p/tmp/")["Contents"]) == 1
    assert len(client.list_multipart_uploads(Bucket=name)["Uploads"]) == 1


def test_a_blob_rewritten_during_a_collection_survives_it(bucket: tuple[Any, str]) -> None:
    """The collector lists an old unreferenced blob; before it deletes, another server writes the same content
    (and will insert the row that references it): the conditional delete leaves the new object alone."""
    keyring = Keyring.generate()
    collector, writer = _s3_store(bucket, grace=0, keyring=keyring), _s3_store(bucket, grace=0, keyring=keyring)
    stored = collector.put_bytes(b"deleted model, uploaded again")

    def references_read_after_a_concurrent_write() -> set[str]:
        assert writer.put_bytes(b"deleted model, uploaded again") == stored  # too old to reuse: written anew
        return set()  # its row is not committed yet

    assert collector.collect_garbage(references_read_after_a_concurrent_write) == 0
    assert writer.read(stored.digest) == b"deleted model, uploaded again"


def test_a_young_blob_is_reused_an_old_one_rewritten(bucket: tuple[Any, str]) -> None:
    client, name = bucket
    key = "p/sha256/" + hashlib.sha256(b"same bytes").hexdigest()
    young = _s3_store(bucket, grace=3600)
    young.put_bytes(b"same bytes")
    etag = client.head_object(Bucket=name, Key=key)["ETag"]
    young.put_stream(io.BytesIO(b"same bytes"))
    assert client.head_object(Bucket=name, Key=key)["ETag"] == etag  # reused: nothing uploaded under its name
    _s3_store(bucket, grace=0, keyring=young.keyring).put_bytes(b"same bytes")
    assert client.head_object(Bucket=name, Key=key)["ETag"] != etag  # past the grace period: a fresh object


def test_an_unreachable_s3_is_not_ready() -> None:
    import boto3
    from botocore.config import Config

    client = boto3.session.Session().client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{free_port()}",  # nothing listens there
        aws_access_key_id="x",
        aws_secret_access_key="x",
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 1}),
    )
    store = S3ArtifactStore(client, "bucket", "", Keyring.generate())
    with pytest.raises(NotReady, match="cannot be reached"):
        store.put_bytes(b"x")


def test_a_missing_bucket_is_named(s3_server: Any) -> None:
    store = S3ArtifactStore(s3_server.client, "no-such-bucket-here", "", Keyring.generate())
    with pytest.raises(NotReady, match="bucket does not exist"):
        store.put_bytes(b"x")
    with pytest.raises(NotReady, match="bucket does not exist"):
        store.collect_garbage(set)
    with pytest.raises(NotReady, match="bucket does not exist"):
        store.check()  # what a server does at start: it stops with this reason


def test_the_setting_picks_the_backend(s3_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    bucket = s3_server.create_bucket()
    local = Settings(home=tmp_path)
    assert isinstance(open_artifacts(local.artifact_location, Keyring.generate()), ArtifactStore)
    assert Settings(home=tmp_path, artifacts=str(tmp_path / "elsewhere")).artifact_location == tmp_path / "elsewhere"
    settings = Settings(home=tmp_path, artifacts=f"s3://{bucket}/some/prefix", artifact_gc_grace_seconds=7)
    store = open_artifacts(settings.artifact_location, Keyring.generate(), gc_grace_seconds=7)
    assert isinstance(store, S3ArtifactStore) and (store.bucket, store.root, store.gc_grace_seconds) == (
        bucket,
        "some/prefix/",
        7,
    )
    stored = store.put_bytes(b"through boto3's own settings")  # AWS_ENDPOINT_URL and the keys from the env
    assert store.read(stored.digest) == b"through boto3's own settings"


@pytest.mark.parametrize("url", ["s3://", "s3:///prefix", "s3://bucket/p?x=1"])
def test_a_malformed_s3_url_is_refused(url: str) -> None:
    with pytest.raises(StratusError, match="s3://bucket/prefix"):
        open_artifacts(url, Keyring.generate())


@pytest.mark.parametrize(
    ("reported", "matches"),
    [
        ("abc=-3", True),  # S3: a multipart object's composite checksum and its part count
        ("abc=", True),  # servers that leave the part count out
        ("abd=-3", False),
        ("abc=-4", False),
        ("abc", False),
        (None, False),  # a server that kept no checksum: not verified, so not published
    ],
)
def test_only_the_checksum_computed_here_publishes_an_upload(reported: str | None, matches: bool) -> None:
    from stratus.store.s3 import _same_checksum

    assert _same_checksum(reported, "abc=-3") is matches


def test_servers_writing_the_same_bytes_at_once_all_get_a_whole_blob(bucket: tuple[Any, str]) -> None:
    """Eight writers (as many servers, one master key) store the same content at once, each publishing its own
    sealed copy (grace 0: none may reuse another's): the last copy wins whole, blob and key in one object."""
    from concurrent.futures import ThreadPoolExecutor

    keyring = Keyring.generate()
    data = os.urandom(300_000)
    stores = [_s3_store(bucket, grace=0, keyring=keyring) for _ in range(8)]
    with ThreadPoolExecutor(len(stores)) as pool:
        results = list(pool.map(lambda store: store.put_stream(io.BytesIO(data)), stores))
    assert len(set(results)) == 1
    assert all(store.read(results[0].digest) == data for store in stores)
    client, name = bucket
    assert [o["Key"] for o in client.list_objects_v2(Bucket=name)["Contents"]] == [f"p/sha256/{results[0].digest[7:]}"]
    assert client.list_multipart_uploads(Bucket=name).get("Uploads", []) == []
