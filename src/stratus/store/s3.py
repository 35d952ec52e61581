"""The S3-compatible artifact backend (``STRATUS_ARTIFACTS=s3://bucket/prefix``), through boto3.

boto3 takes the endpoint and credentials from its usual settings (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_REGION, a profile or an instance role). Under the prefix:

- ``sha256/<hex>``: a sealed blob; its wrapped data key is the object's metadata, so blob and key are one
  object and can never be out of step (the local backend needs a sidecar file for that).
- ``tmp/<unix time>-<uuid>``: an upload in progress, named with the time it started.

A write seals the stream chunk by chunk while it uploads it under a temporary key (one PUT, or a multipart
upload of ``part_size`` parts), every request carrying the SHA-256 of its bytes, which S3 checks on arrival.
Once the upload completed, the object's checksum as S3 reports it must equal the one computed here from
the sealed bytes; only then is it copied, server side, to its digest's key with the wrapped data key, and
the temporary object deleted. ``put_stream`` returns after that, so no row can reference a digest before
its whole blob is in place. kill -9 at any point leaves at most a temporary object or an unfinished
multipart upload, which no row references and garbage collection removes.

Garbage collection while other servers write, with a grace period G (``STRATUS_ARTIFACT_GC_GRACE_SECONDS``):
a blob is deleted only if S3 dated it (LastModified, against S3's own clock from the response's Date) more
than G ago, no row references it when the references are read *after* the listing, and its ETag is still
the listed one (a conditional delete, If-Match). A writer reuses an existing blob of the same digest only
if it is younger than G/2; otherwise it writes it anew (a fresh date and ETag). So as long as a write and
its row's insert take less than G/2, a blob that a row is about to reference is never collected: either
it is too young, or the row was committed before the collector read the references. Temporary objects
and unfinished multipart uploads older than G are interrupted writes; their age counts from the later of
S3's date and the start time the writer put in the key (some S3-compatible servers misdate multipart
uploads), so the writers' clocks must agree with S3's to well within G (NTP does).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import logging
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, BinaryIO, cast
from urllib.parse import urlsplit

from stratus.errors import IntegrityError, NotReady, StratusError
from stratus.security.encryption import Keyring, open_sealed
from stratus.store.artifacts import _HEX64, DIGEST_PREFIX, Artifacts, SealedWrite, StoredArtifact, _hex_of, verified

PART = 8 * 1024 * 1024  # multipart part size: S3's minimum is 5 MiB (but for the last part)
_COPY_LIMIT = 5 * 1024**3  # CopyObject's largest source; above it the managed (multipart) copy
_META_KEY = "stratus-key"
_REFUSED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
_FAILING = {"InternalError", "ServiceUnavailable", "SlowDown", "503", "500"}


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _missing(exc: Exception) -> bool:
    return _code(exc) in {"404", "NoSuchKey", "NotFound", "NoSuchUpload"}


def _same_checksum(reported: str | None, expected: str) -> bool:
    """S3 reports a multipart object's composite checksum as ``<base64>-<parts>``; some S3-compatible servers
    leave out the part count."""
    return reported is not None and (reported == expected or f"{reported}-" == expected[: len(reported) + 1])


def _server_now(response: dict[str, Any]) -> datetime:
    """S3's own clock, from the response's Date header: ages are compared on one clock, not across servers."""
    return parsedate_to_datetime(response["ResponseMetadata"]["HTTPHeaders"]["date"])


def _seconds_between(earlier: datetime, later: datetime) -> float:
    """Whole seconds: S3's Date and Last-Modified headers have no finer resolution, listings do."""
    return (later.replace(microsecond=0) - earlier.replace(microsecond=0)).total_seconds()


def _started(key: str, reported: datetime) -> datetime:
    """When a temporary upload started: the later of the time in its name (the writer's clock) and the one S3
    reports, so that neither a wrong date from the server nor a slow clock of a writer makes it look older."""
    stamp = key.rsplit("/", 1)[-1].split("-", 1)[0]
    if not stamp.isdigit():
        return reported
    return max(reported, datetime.fromtimestamp(int(stamp), tz=UTC))


class _ExactReader:
    """Reads exactly n bytes (fewer only at the end) from a streaming body that may return short reads."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            return bytes(self._body.read())
        parts = []
        wanted = n
        while wanted > 0:
            part = self._body.read(wanted)
            if not part:
                break
            parts.append(part)
            wanted -= len(part)
        return b"".join(parts)


class S3ArtifactStore(Artifacts):
    shared = True

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str,
        keyring: Keyring,
        *,
        gc_grace_seconds: float = 3600.0,
        part_size: int = PART,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.root = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.keyring = keyring
        self.gc_grace_seconds = gc_grace_seconds
        self.part_size = part_size
        self._errors: tuple[type[Exception], ...] = _boto_errors()

    @classmethod
    def from_url(cls, url: str, keyring: Keyring, *, gc_grace_seconds: float = 3600.0) -> S3ArtifactStore:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
            raise StratusError(f"STRATUS_ARTIFACTS must look like s3://bucket/prefix, not {url!r}")
        import boto3

        for chatty in ("botocore.credentials", "botocore.configprovider"):  # where it found them, at every start
            logging.getLogger(chatty).setLevel(logging.WARNING)
        # Endpoint, region and credentials: boto3's own settings. Retries in standard mode ride out a
        # throttled or briefly unreachable S3; what still fails is a 503 for the caller (NotReady).
        client = boto3.session.Session().client("s3", config=client_config())
        store = cls(client, parts.netloc, parts.path, keyring, gc_grace_seconds=gc_grace_seconds)
        store.check()
        return store

    def check(self) -> None:
        """Fail at start, with the reason, when the bucket cannot be used (rather than at the first upload)."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except self._errors as exc:
            code = _code(exc)
            if code in {"404", "NoSuchBucket"}:
                raise NotReady(f"s3://{self.bucket}: the bucket does not exist (create it; Stratus does not)") from None
            if code in {"403", *_REFUSED}:
                raise NotReady(f"s3://{self.bucket} refused the credentials: check AWS_ACCESS_KEY_ID") from None
            raise self._unavailable(exc) or exc from None

    def _blob_key(self, digest: str) -> str:
        return f"{self.root}sha256/{_hex_of(digest)}"

    def _unavailable(self, exc: Exception) -> NotReady | None:
        """What the caller should see for an S3 error that no retry here fixes, or None to handle it further:
        unreachable, the bucket missing, credentials refused, S3's own failures are a 503 with the reason."""
        where = f"the artifact store s3://{self.bucket}/{self.root}"
        code = _code(exc)
        if not code:
            return NotReady(f"{where} cannot be reached: {exc}")
        if code == "NoSuchBucket":
            return NotReady(f"{where}: the bucket does not exist (create it; Stratus does not)")
        if code in _REFUSED:
            return NotReady(f"{where} refused the credentials ({code}): check AWS_ACCESS_KEY_ID and its permissions")
        if code in _FAILING:
            return NotReady(f"{where} is failing ({code}); try again")
        return None

    def _call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return cast(dict[str, Any], getattr(self.client, method)(Bucket=self.bucket, **kwargs))
        except self._errors as exc:
            unavailable = self._unavailable(exc)
            if unavailable is None:
                raise
            raise unavailable from None

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return self._call("head_object", Key=key, ChecksumMode="ENABLED")
        except self._errors as exc:
            if _missing(exc):
                return None
            raise

    def _age(self, response: dict[str, Any], when: datetime) -> float:
        return _seconds_between(when, _server_now(response))

    # -- writing --------------------------------------------------------------------------------------

    def put_bytes(self, data: bytes) -> StoredArtifact:
        digest = DIGEST_PREFIX + hashlib.sha256(data).hexdigest()
        head = self._head(self._blob_key(digest))
        if head is not None and self._reusable(head):
            return StoredArtifact(digest=digest, size=len(data))  # nothing to upload
        return self.put_stream(io.BytesIO(data))

    def _reusable(self, head: dict[str, Any]) -> bool:
        """An existing blob may stand for a new write only while no collector can take it (module docstring)."""
        return self._age(head, head["LastModified"]) < self.gc_grace_seconds / 2

    def put_stream(self, src: BinaryIO, *, max_bytes: int | None = None) -> StoredArtifact:
        write = SealedWrite()
        # The start time in the name dates the upload for the collector: not every S3-compatible server
        # reports a multipart upload's real Initiated time (moto's is fixed).
        tmp = f"{self.root}tmp/{int(time.time())}-{uuid.uuid4().hex}"
        try:
            checksum, length = self._upload(tmp, write.chunks(src, max_bytes))
            head = self._head(tmp)
            if head is not None and head.get("ChecksumSHA256") is None:
                raise IntegrityError(
                    f"s3://{self.bucket} keeps no SHA-256 checksum of an upload (x-amz-checksum-sha256), which "
                    "Stratus needs to verify it before use: use an S3-compatible server that supports checksums"
                )
            if (
                head is None
                or not _same_checksum(head.get("ChecksumSHA256"), checksum)
                or head["ContentLength"] != length
            ):
                reported = None if head is None else (head.get("ChecksumSHA256"), head.get("ContentLength"))
                raise IntegrityError(
                    f"the artifact store did not keep the uploaded bytes: sent SHA-256 {checksum} of {length} "
                    f"bytes, it reports {reported}"
                )
            digest = write.digest
            final = self._blob_key(digest)
            existing = self._head(final)
            if existing is None or not self._reusable(existing):
                wrapped = self.keyring.wrap(write.sealer.dek, digest).decode()
                self._copy(tmp, final, length, {_META_KEY: wrapped})
            return StoredArtifact(digest=digest, size=write.size)
        finally:
            with contextlib.suppress(Exception):  # best effort: what a failure leaves, GC removes
                self._call("delete_object", Key=tmp)

    def _upload(self, key: str, chunks: Iterator[bytes]) -> tuple[str, int]:
        """Upload the sealed chunks under ``key``; return the checksum S3 must report and the length."""
        buffer = bytearray()
        length = 0
        upload_id: str | None = None
        part_digests: list[bytes] = []
        parts: list[dict[str, Any]] = []
        try:
            for sealed in chunks:
                buffer += sealed
                length += len(sealed)
                # Strictly more than a part: the remainder (the last part) is never empty.
                while len(buffer) > self.part_size:
                    if upload_id is None:
                        upload_id = self._call("create_multipart_upload", Key=key, ChecksumAlgorithm="SHA256")[
                            "UploadId"
                        ]
                    self._part(key, upload_id, bytes(buffer[: self.part_size]), parts, part_digests)
                    del buffer[: self.part_size]
            if upload_id is None:
                whole = hashlib.sha256(buffer).digest()
                self._call(
                    "put_object",
                    Key=key,
                    Body=bytes(buffer),
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=base64.b64encode(whole).decode(),
                )
                return base64.b64encode(whole).decode(), length
            self._part(key, upload_id, bytes(buffer), parts, part_digests)
            self._call("complete_multipart_upload", Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})
        except BaseException:
            if upload_id is not None:
                with contextlib.suppress(Exception):
                    self._call("abort_multipart_upload", Key=key, UploadId=upload_id)
            raise
        # S3's checksum of a multipart object: the SHA-256 of the parts' SHA-256s, and the part count.
        composite = base64.b64encode(hashlib.sha256(b"".join(part_digests)).digest()).decode()
        return f"{composite}-{len(parts)}", length

    def _part(self, key: str, upload_id: str, data: bytes, parts: list[dict[str, Any]], digests: list[bytes]) -> None:
        digest = hashlib.sha256(data).digest()
        checksum = base64.b64encode(digest).decode()
        number = len(parts) + 1
        response = self._call(
            "upload_part",
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=data,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=checksum,
        )
        parts.append({"PartNumber": number, "ETag": response["ETag"], "ChecksumSHA256": checksum})
        digests.append(digest)

    def _copy(self, source: str, target: str, length: int, metadata: dict[str, str], if_match: str = "") -> None:
        copy_source = {"Bucket": self.bucket, "Key": source}
        if length <= _COPY_LIMIT:
            extra = {"CopySourceIfMatch": if_match} if if_match else {}
            self._call(
                "copy_object",
                Key=target,
                CopySource=copy_source,
                Metadata=metadata,
                MetadataDirective="REPLACE",
                **extra,
            )
        else:
            self.client.copy(copy_source, self.bucket, target, ExtraArgs={"Metadata": metadata})

    # -- reading --------------------------------------------------------------------------------------

    def read(self, digest: str) -> bytes:
        key = self._blob_key(digest)
        try:
            response = self._call("get_object", Key=key)
        except self._errors as exc:
            if _missing(exc):
                raise IntegrityError(f"artifact {digest} is missing from the artifact store") from None
            raise
        wrapped = response.get("Metadata", {}).get(_META_KEY)
        body = response["Body"]
        with contextlib.closing(body):
            if not wrapped:
                raise IntegrityError(f"artifact {digest} has no data key; the stored object was altered")
            dek = self.keyring.unwrap(wrapped.encode(), digest)
            try:
                return verified(open_sealed(cast(BinaryIO, _ExactReader(body)), dek, digest), digest)
            except self._errors as exc:  # the connection broke mid-body
                raise NotReady(f"reading artifact {digest} from s3://{self.bucket}/{self.root} failed: {exc}") from None

    def exists(self, digest: str) -> bool:
        return self._head(self._blob_key(digest)) is not None

    def delete(self, digest: str) -> None:
        self._call("delete_object", Key=self._blob_key(digest))

    def _pages(self, operation: str, prefix: str) -> Iterator[dict[str, Any]]:
        try:
            yield from self.client.get_paginator(operation).paginate(Bucket=self.bucket, Prefix=prefix)
        except self._errors as exc:
            unavailable = self._unavailable(exc)
            if unavailable is None:
                raise
            raise unavailable from None

    def _list(self, prefix: str) -> Iterator[tuple[dict[str, Any], datetime]]:
        """Every object under ``prefix``, with S3's clock at the time its page was listed."""
        for page in self._pages("list_objects_v2", prefix):
            now = _server_now(page)
            for item in page.get("Contents", []):
                yield item, now

    def digests(self) -> Iterator[str]:
        for item, _now in self._list(f"{self.root}sha256/"):
            name = item["Key"].rsplit("/", 1)[-1]
            if _HEX64.fullmatch(name):
                yield DIGEST_PREFIX + name

    def rewrap_all(self) -> int:
        count = 0
        for digest in list(self.digests()):
            key = self._blob_key(digest)
            head = self._head(key)
            if head is None:
                continue
            wrapped = head.get("Metadata", {}).get(_META_KEY, "").encode()
            if not self.keyring.wrapped_with_current(wrapped):
                rewrapped = self.keyring.wrap(self.keyring.unwrap(wrapped, digest), digest).decode()
                # If-Match: a blob rewritten meanwhile by a writer already carries a key of the current master.
                self._copy(key, key, head["ContentLength"], {_META_KEY: rewrapped}, if_match=head["ETag"])
                count += 1
        return count

    # -- garbage collection ---------------------------------------------------------------------------

    def collect_garbage(self, referenced: Callable[[], Collection[str]], only: Collection[str] | None = None) -> int:
        grace = self.gc_grace_seconds
        candidates: list[tuple[str, str, str]] = []  # (digest, key, etag) of blobs older than the grace period
        if only is None:
            for item, now in self._list(f"{self.root}sha256/"):
                name = item["Key"].rsplit("/", 1)[-1]
                if _HEX64.fullmatch(name) and _seconds_between(item["LastModified"], now) >= grace:
                    candidates.append((DIGEST_PREFIX + name, item["Key"], item["ETag"]))
        else:
            for digest in only:
                key = self._blob_key(digest)
                head = self._head(key)
                if head is not None and self._age(head, head["LastModified"]) >= grace:
                    candidates.append((digest, key, head["ETag"]))
        removed = self._sweep_interrupted() if only is None else 0
        keep = set(referenced())  # read after the listing: a row committed before it is seen
        for digest, key, etag in candidates:
            if digest not in keep and self._delete_if_unchanged(key, etag):
                removed += 1
        return removed

    def _sweep_interrupted(self) -> int:
        """Temporary objects and unfinished multipart uploads older than the grace period: writes a crash or
        kill -9 interrupted (a live write finishes well within the grace period)."""
        removed = 0
        tmp = f"{self.root}tmp/"
        for item, now in list(self._list(tmp)):
            if _seconds_between(_started(item["Key"], item["LastModified"]), now) >= self.gc_grace_seconds:
                removed += self._delete_if_unchanged(item["Key"], item["ETag"])
        for page in self._pages("list_multipart_uploads", tmp):
            now = _server_now(page)
            for upload in page.get("Uploads", []):
                if _seconds_between(_started(upload["Key"], upload["Initiated"]), now) >= self.gc_grace_seconds:
                    try:
                        self._call("abort_multipart_upload", Key=upload["Key"], UploadId=upload["UploadId"])
                        removed += 1
                    except self._errors as exc:
                        if not _missing(exc):
                            raise
        return removed

    def _delete_if_unchanged(self, key: str, etag: str) -> bool:
        """Delete the object only if it is still the one listed: a writer that wrote it anew since keeps it."""
        try:
            self._call("delete_object", Key=key, IfMatch=etag)
        except self._errors as exc:
            code = _code(exc)
            if code in {"PreconditionFailed", "412"} or _missing(exc):
                return False
            if code not in {"NotImplemented", "501"}:
                raise
            # A server without conditional deletes: compare right before an unconditional delete.
            head = self._head(key)
            if head is None or head["ETag"] != etag:
                return False
            self._call("delete_object", Key=key)
        return True


def client_config() -> Any:
    """boto3 client settings for the store. Response checksums are left to the store: every read is verified
    (AES-GCM per chunk, then SHA-256 of the plaintext), and botocore's own check of a whole-object checksum
    misreads the composite checksum of a multipart upload on some S3-compatible servers."""
    from botocore.config import Config

    return Config(retries={"mode": "standard", "max_attempts": 5}, response_checksum_validation="when_required")


def _boto_errors() -> tuple[type[Exception], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (ClientError, BotoCoreError)
