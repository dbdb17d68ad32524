"""The audio bucket on S3: presigned uploads, reading what arrived, and job results (its layout:
infery.domain.stored_audio)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from infery.domain.errors import InvalidRequest, NotFound, PayloadTooLarge
from infery.domain.inference import InferenceResult
from infery.domain.stored_audio import (
    RESULTS_PREFIX,
    SPEAKERS_PREFIX,
    UPLOADS_PREFIX,
    StoredObject,
)
from infery.observability import logger


def _not_arrived() -> NotFound:
    return NotFound(
        "No upload with this id has arrived for this key. Upload the file to the upload_url first.",
        param="upload_id",
        code="upload_not_found",
    )


class AudioStore:
    def __init__(self, client: Any, bucket: str, *, max_upload_bytes: int, upload_expiry_seconds: int) -> None:
        self._client = client
        self.bucket = bucket
        self.max_upload_bytes = max_upload_bytes
        self.upload_expiry_seconds = upload_expiry_seconds

    def upload_key(self, key_id: str, upload_id: str) -> str:
        return f"{UPLOADS_PREFIX}{key_id}/{upload_id}"

    def presigned_upload(self, key_id: str, upload_id: str) -> dict[str, Any]:
        """A presigned POST for exactly this key's upload slot; S3 refuses bodies over the limit."""
        presigned: dict[str, Any] = self._client.generate_presigned_post(
            Bucket=self.bucket,
            Key=self.upload_key(key_id, upload_id),
            Conditions=[["content-length-range", 1, self.max_upload_bytes]],
            ExpiresIn=self.upload_expiry_seconds,
        )
        return presigned

    def put_upload(self, key_id: str, upload_id: str, audio: bytes) -> StoredObject:
        key = self.upload_key(key_id, upload_id)
        self._client.put_object(Bucket=self.bucket, Key=key, Body=audio)
        return StoredObject(self.bucket, key, key_id, "uploads", upload_id, len(audio))

    def _upload_object(self, key_id: str, upload_id: str) -> StoredObject:
        return StoredObject(self.bucket, self.upload_key(key_id, upload_id), key_id, "uploads", upload_id, 0)

    def upload_uri(self, key_id: str, upload_id: str) -> str:
        return self._upload_object(key_id, upload_id).uri

    def load_upload(self, key_id: str, upload_id: str) -> tuple[bytes, str, str, str | None]:
        """The bytes of this key's upload, its s3:// URI, ETag and version; 404 when it is not there (or is another
        key's)."""
        return self.load(self._upload_object(key_id, upload_id))

    def check_upload(self, key_id: str, upload_id: str, head_bytes: int) -> tuple[str, bytes]:
        """The s3:// URI of this key's upload once it has arrived, checked as ``load`` checks it, and its first
        ``head_bytes`` (of the version ``load`` reads): enough for its header, without reading the whole file."""
        stored = self._upload_object(key_id, upload_id)
        version_id = self._check(stored)
        response = self._client.get_object(
            Bucket=stored.bucket,
            Key=stored.key,
            Range=f"bytes=0-{head_bytes - 1}",
            **({"VersionId": version_id} if version_id else {}),
        )
        return stored.uri, response["Body"].read()

    def load(self, stored: StoredObject) -> tuple[bytes, str, str, str | None]:
        """The object's bytes, URI, ETag and version. The model reads that very version again by URI: what was
        checked and priced is what is transcribed. Of an upload slot, the first version is the upload: a presigned
        POST sent again writes a later version, which nothing reads and its arrival deletes (``keep_first_upload``).
        """
        version_id = self._check(stored)
        response = self._client.get_object(
            Bucket=stored.bucket, Key=stored.key, **({"VersionId": version_id} if version_id else {})
        )
        return response["Body"].read(), stored.uri, response["ETag"].strip('"'), response.get("VersionId")

    def keep_first_upload(self, stored: StoredObject) -> bool:
        """Delete every version of the upload slot but its first, so a presigned POST is used once; True when the
        arriving object (``stored.etag``) is that first upload, False for a later one (or when none is left)."""
        versions = self._versions(stored)
        if not versions:
            return False
        *later, first = versions
        for version in later:
            self._client.delete_object(Bucket=stored.bucket, Key=stored.key, VersionId=version["VersionId"])
        if later:
            logger.warning(
                "an upload slot was written again: the later uploads were deleted, the first one is kept",
                extra={"object_key": stored.key, "deleted_versions": len(later)},
            )
        return not stored.etag or first["ETag"].strip('"') == stored.etag

    def _versions(self, stored: StoredObject) -> list[dict[str, Any]]:
        """The object's versions, newest first (as S3 lists them); none when the newest is a delete marker (the
        object expired or was deleted)."""
        versions: list[dict[str, Any]] = []
        for page in self._client.get_paginator("list_object_versions").paginate(
            Bucket=stored.bucket, Prefix=stored.key
        ):
            if any(marker["Key"] == stored.key and marker["IsLatest"] for marker in page.get("DeleteMarkers", [])):
                return []
            versions.extend(version for version in page.get("Versions", []) if version["Key"] == stored.key)
        return versions

    def _check(self, stored: StoredObject) -> str | None:
        """404 unless the object is there; 413 over the upload limit; 400 when empty. The version to read: an upload
        slot's first one; None for the latest of any other object."""
        if stored.area == "uploads":
            versions = self._versions(stored)
            if not versions:
                raise _not_arrived()
            size, version_id = int(versions[-1]["Size"]), str(versions[-1]["VersionId"])
        else:
            try:
                size, version_id = (
                    int(self._client.head_object(Bucket=stored.bucket, Key=stored.key)["ContentLength"]),
                    None,
                )
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    raise _not_arrived() from exc
                raise
        if size > self.max_upload_bytes:
            raise PayloadTooLarge(
                f"The upload is {size / 1e6:.1f} MB, over the {self.max_upload_bytes / 1e6:.0f} MB limit.",
                param="upload_id",
                code="audio_too_large",
            )
        if size == 0:
            raise InvalidRequest("The uploaded file is empty.", param="upload_id", code="empty_file")
        return version_id

    def put_rendered(self, key_id: str, job_id: str, name: str, body: bytes, content_type: str, expires_in: int) -> str:
        """The transcript as rendered, under results/ (its lifecycle), and a presigned GET of it."""
        key = f"{RESULTS_PREFIX}{key_id}/{job_id}.{name}"
        self._client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)
        url: str = self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_in
        )
        return url

    def object_metadata(self, stored: StoredObject) -> dict[str, str]:
        """The object's user metadata (an inbox drop's job options): names as S3 gives them, in lower case."""
        return dict(self._client.head_object(Bucket=stored.bucket, Key=stored.key).get("Metadata") or {})

    def result_key(self, key_id: str, job_id: str) -> str:
        return f"{RESULTS_PREFIX}{key_id}/{job_id}.json"

    def put_result(self, key_id: str, job_id: str, result: InferenceResult) -> str:
        key = self.result_key(key_id, job_id)
        self._client.put_object(
            Bucket=self.bucket, Key=key, Body=result.model_dump_json().encode(), ContentType="application/json"
        )
        return key

    def find_result(self, result_key: str) -> InferenceResult | None:
        """The stored result, or None when there is none under this key."""
        try:
            return self.load_result(result_key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise

    def put_known_speakers(self, key_id: str, job_id: str, body: bytes) -> str:
        """A job's known speakers' samples; the object's key, which the job keeps."""
        key = f"{SPEAKERS_PREFIX}{key_id}/{job_id}.json"
        self._client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json")
        return key

    def load_known_speakers(self, object_key: str) -> bytes | None:
        """The samples stored under ``object_key``; None when they are gone (expired)."""
        try:
            body: bytes = self._client.get_object(Bucket=self.bucket, Key=object_key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        return body

    def load_result(self, result_key: str) -> InferenceResult:
        body = self._client.get_object(Bucket=self.bucket, Key=result_key)["Body"].read()
        return InferenceResult.model_validate_json(body)
