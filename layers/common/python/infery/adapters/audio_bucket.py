"""The audio bucket on S3: presigned uploads, reading what arrived, and job results (its layout:
infery.domain.stored_audio)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from infery.domain.errors import InvalidRequest, NotFound, PayloadTooLarge
from infery.domain.inference import InferenceResult
from infery.domain.ranged_audio import AudioBytes, RangedAudio
from infery.domain.stored_audio import (
    RESULTS_PREFIX,
    SPEAKERS_PREFIX,
    UPLOADS_PREFIX,
    StoredObject,
)
from infery.observability import logger

# What the worker reads of a job's file to check and price it: its head and its tail (where containers say what
# they are and how long they play), whole when it is no larger than both; and at most this much more, by ranges,
# for a probe that looks elsewhere. A 1 GB file never sits in the worker's memory.
PROBE_HEAD_BYTES = 8 * 1024 * 1024
PROBE_TAIL_BYTES = 8 * 1024 * 1024
PROBE_EXTRA_BYTES = 8 * 1024 * 1024


def _not_arrived() -> NotFound:
    return NotFound(
        "No upload with this id has arrived for this key. Upload the file to the upload_url first.",
        param="upload_id",
        code="upload_not_found",
    )


class AudioStore:
    def __init__(
        self,
        client: Any,
        bucket: str,
        *,
        max_upload_bytes: int,
        upload_expiry_seconds: int,
        max_job_bytes: int | None = None,
    ) -> None:
        self._client = client
        self.bucket = bucket
        # what a synchronous call reads of an upload (whole, in the API function)
        self.max_upload_bytes = max_upload_bytes
        # what a job's file may weigh, and so what a presigned POST takes: a job is the only use of a larger one
        self.max_job_bytes = max_job_bytes or max_upload_bytes
        self.upload_expiry_seconds = upload_expiry_seconds

    def upload_key(self, key_id: str, upload_id: str) -> str:
        return f"{UPLOADS_PREFIX}{key_id}/{upload_id}"

    def presigned_upload(self, key_id: str, upload_id: str) -> dict[str, Any]:
        """A presigned POST for exactly this key's upload slot; S3 refuses bodies over a job's limit (a synchronous
        call that names a larger upload than it reads is refused then, naming jobs)."""
        presigned: dict[str, Any] = self._client.generate_presigned_post(
            Bucket=self.bucket,
            Key=self.upload_key(key_id, upload_id),
            Conditions=[["content-length-range", 1, self.max_job_bytes]],
            ExpiresIn=self.upload_expiry_seconds,
        )
        return presigned

    def put_upload(self, key_id: str, upload_id: str, audio: bytes) -> StoredObject:
        key = self.upload_key(key_id, upload_id)
        self._client.put_object(Bucket=self.bucket, Key=key, Body=audio)
        return StoredObject(self.bucket, key, key_id, "uploads", upload_id, len(audio))

    def stream_upload(self, key_id: str, upload_id: str) -> UploadStream:
        """A writer that stores a file into the key's upload slot as its bytes arrive (S3 multipart, a part at a
        time), for a file too large to hold: ``commit`` stores it, ``abort`` leaves nothing behind."""
        return UploadStream(self._client, self.bucket, self.upload_key(key_id, upload_id), key_id, upload_id)

    def _upload_object(self, key_id: str, upload_id: str) -> StoredObject:
        return StoredObject(self.bucket, self.upload_key(key_id, upload_id), key_id, "uploads", upload_id, 0)

    def upload_uri(self, key_id: str, upload_id: str) -> str:
        return self._upload_object(key_id, upload_id).uri

    def load_upload(self, key_id: str, upload_id: str) -> tuple[bytes, str, str, str | None]:
        """The bytes of this key's upload, its s3:// URI, ETag and version, for a synchronous call; 404 when it is not
        there (or is another key's), 413 past what a synchronous call reads."""
        return self.load(self._upload_object(key_id, upload_id))

    def check_upload(self, key_id: str, upload_id: str, head_bytes: int) -> tuple[str, bytes]:
        """The s3:// URI of this key's upload once it has arrived, checked as ``load`` checks it, and its first
        ``head_bytes`` (of the version ``load`` reads): enough for its header, without reading the whole file. For a
        job: up to a job's size limit."""
        stored = self._upload_object(key_id, upload_id)
        _, version_id = self._check(stored, for_job=True)
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
        Read whole, so no larger than a synchronous call reads (``load_job_audio`` reads a job's).
        """
        _, version_id = self._check(stored)
        response = self._client.get_object(
            Bucket=stored.bucket, Key=stored.key, **({"VersionId": version_id} if version_id else {})
        )
        return response["Body"].read(), stored.uri, response["ETag"].strip('"'), response.get("VersionId")

    def load_job_audio(self, stored: StoredObject) -> tuple[AudioBytes, str, str, str | None]:
        """A job's file as ``load`` gives it, up to a job's size limit, without holding it: a file larger than its
        probed head and tail is a ranged view of that one version (its true size, its head and tail, any other
        range read on demand within a budget; each read pinned to the version and its ETag)."""
        size, version_id = self._check(stored, for_job=True)
        if size <= PROBE_HEAD_BYTES + PROBE_TAIL_BYTES:
            response = self._get(stored, version_id)
            return response["Body"].read(), stored.uri, response["ETag"].strip('"'), response.get("VersionId")
        head = self._get(stored, version_id, range_header=f"bytes=0-{PROBE_HEAD_BYTES - 1}")
        # the version read, and its size as that read says (an object replaced since it was sized is read as it is)
        etag, version_id = head["ETag"], head.get("VersionId") or version_id
        size = int(str(head["ContentRange"]).rpartition("/")[2])

        def read_range(start: int, stop: int) -> bytes:
            response = self._get(stored, version_id, range_header=f"bytes={start}-{stop - 1}", if_match=etag)
            data: bytes = response["Body"].read()
            return data

        view = RangedAudio(
            size,
            [(0, head["Body"].read()), (size - PROBE_TAIL_BYTES, read_range(size - PROBE_TAIL_BYTES, size))],
            read_range=read_range,
            max_extra_bytes=PROBE_EXTRA_BYTES,
        )
        return view, stored.uri, etag.strip('"'), version_id

    def _get(
        self, stored: StoredObject, version_id: str | None, *, range_header: str | None = None, if_match: str = ""
    ) -> dict[str, Any]:
        response: dict[str, Any] = self._client.get_object(
            Bucket=stored.bucket,
            Key=stored.key,
            **({"VersionId": version_id} if version_id else {}),
            **({"Range": range_header} if range_header else {}),
            **({"IfMatch": if_match} if if_match else {}),
        )
        return response

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

    def _check(self, stored: StoredObject, *, for_job: bool = False) -> tuple[int, str | None]:
        """404 unless the object is there; 413 over the limit of a synchronous call (or of a job); 400 when empty.
        Its size, and the version to read: an upload slot's first one; None for the latest of any other object."""
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
        if for_job and size > self.max_job_bytes:
            raise PayloadTooLarge(
                f"The file is {size / 1e6:.1f} MB, over the {self.max_job_bytes / 1e6:.0f} MB a job transcribes.",
                param="upload_id",
                code="audio_too_large",
            )
        if not for_job and size > self.max_upload_bytes:
            raise PayloadTooLarge(
                f"The upload is {size / 1e6:.1f} MB, over the {self.max_upload_bytes / 1e6:.0f} MB a synchronous "
                "request reads; nothing was charged. Transcribe it as a job instead: POST "
                "/v1/audio/transcriptions/jobs with this upload_id (a job takes files up to "
                f"{self.max_job_bytes / 1e6:.0f} MB), then follow GET /v1/jobs/{{job_id}}.",
                param="upload_id",
                code="audio_too_large",
            )
        if size == 0:
            raise InvalidRequest("The uploaded file is empty.", param="upload_id", code="empty_file")
        return size, version_id

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


# S3's smallest part but the last is 5 MiB; a part is held in memory until it is sent
STREAM_PART_BYTES = 8 * 1024 * 1024


class UploadStream:
    """The use cases' ``UploadSink``: the chunks written are held until they make a part, then sent as one part of a
    multipart upload, begun with the first part (a file smaller than one part is one PutObject at ``commit``). At most
    a part's chunks and the part joined from them are in memory, whatever the file's size."""

    def __init__(self, client: Any, bucket: str, key: str, key_id: str, upload_id: str) -> None:
        self._client = client
        self._bucket = bucket
        self._key = key
        self._key_id = key_id
        self._upload_id = upload_id
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._multipart_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self.size = 0

    def write(self, data: bytes) -> None:
        self._pending.append(data)
        self._pending_bytes += len(data)
        self.size += len(data)
        if self._pending_bytes >= STREAM_PART_BYTES:
            self._send_part(self._take_pending())

    def _take_pending(self) -> bytes:
        """The chunks held, as one part (a part may pass the part size by less than a chunk: S3 takes any size)."""
        part = b"".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        return part

    def _send_part(self, part: bytes) -> None:
        if self._multipart_id is None:
            self._multipart_id = self._client.create_multipart_upload(Bucket=self._bucket, Key=self._key)["UploadId"]
        number = len(self._parts) + 1
        response = self._client.upload_part(
            Bucket=self._bucket, Key=self._key, UploadId=self._multipart_id, PartNumber=number, Body=part
        )
        self._parts.append({"PartNumber": number, "ETag": response["ETag"]})

    def commit(self) -> StoredObject:
        """Store what was written (the last part, or the whole of a small file) as the upload slot's object."""
        if self._multipart_id is None:
            self._client.put_object(Bucket=self._bucket, Key=self._key, Body=self._take_pending())
        else:
            if self._pending_bytes:
                self._send_part(self._take_pending())
            self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._multipart_id,
                MultipartUpload={"Parts": self._parts},
            )
        return StoredObject(self._bucket, self._key, self._key_id, "uploads", self._upload_id, self.size)

    def abort(self) -> None:
        """Drop what was written: the parts sent are deleted with their multipart upload (never stored, never
        billed for storage). A failure to abort is logged: the bucket's lifecycle rule removes stale parts."""
        self._pending.clear()
        self._pending_bytes = 0
        if self._multipart_id is None:
            return
        try:
            self._client.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._multipart_id)
        except Exception:
            logger.exception("a multipart upload could not be aborted", extra={"object_key": self._key})
        self._multipart_id = None
