"""The jobs table: the row a worker claims, advances and finishes, exactly once (rules: infery.domain.jobs).

S3 and SQS deliver at least once, so every step is a conditional update: a job is claimed only
while queued (or when the lease of a crashed worker ran out), and finished only by the claim that
holds it. Together with the credit store's per-request-id transactions (the job id is the request
id) a job is processed and charged once however often its event arrives.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from infery.adapters.dynamodb import is_conditional_check_failure, to_dynamodb
from infery.domain.clock import iso_at, now_iso
from infery.domain.ids import JOB_ID_PATTERN
from infery.domain.jobs import (
    CLAIMABLE_STATUSES,
    Job,
    JobError,
    JobStatus,
    WebhookAttempt,
)
from infery.domain.parts import JobPart

# template.yaml's index of the jobs table by key, newest first: GET /v1/jobs lists a key's own jobs
JOBS_BY_KEY_INDEX = "ByKey"
# template.yaml's sparse index of a key's open work (jobs not finished, upload slots not expired): only rows with an
# open_key_id are in it, so counting a key's open work reads that work alone, not the key's history
OPEN_WORK_INDEX = "OpenByKey"
# the claim's condition names each claimable status as a value
_CLAIMABLE = {f":claimable_{status.value}": status for status in sorted(CLAIMABLE_STATUSES)}


def _to_item(job: Job) -> dict[str, Any]:
    item: dict[str, Any] = to_dynamodb(job.model_dump(mode="json"))
    return item


class JobStore:
    def __init__(self, table: Any, clock: Callable[[], float] = time.time) -> None:
        self._table = table
        self._clock = clock

    def create(self, job: Job) -> bool:
        """Store a new job; False when a job with this id exists already (a redelivered event)."""
        try:
            self._table.put_item(Item=_to_item(job), ConditionExpression=Attr("job_id").not_exists())
        except ClientError as exc:
            if is_conditional_check_failure(exc):
                return False
            raise
        return True

    def get(self, job_id: str) -> Job | None:
        item = self._table.get_item(Key={"job_id": job_id}, ConsistentRead=True).get("Item")
        return Job.model_validate(item) if item else None

    def list_for_key(self, key_id: str, limit: int = 20) -> tuple[list[Job], bool]:
        """The key's most recent jobs, newest first, and whether it has older ones. The index is eventually
        consistent: a job created a moment ago may be missing for a moment (GET /v1/jobs/{id} reads the row)."""
        response = self._table.query(
            IndexName=JOBS_BY_KEY_INDEX,
            KeyConditionExpression=Key("key_id").eq(key_id),
            ScanIndexForward=False,
            Limit=limit + 1,
        )
        items = response["Items"]
        return [Job.model_validate(item) for item in items[:limit]], len(items) > limit

    def claim(self, job_id: str, lease_seconds: int, open_until: int) -> Job | None:
        """Take the job for this worker, or None when it is finished or another worker holds it. ``open_until``:
        until when the running job counts as its key's open work (its attempts' longest life)."""
        now = int(self._clock())
        try:
            updated = self._table.update_item(
                Key={"job_id": job_id},
                UpdateExpression="SET #status = :running, lease_until = :lease, updated_at = :now_iso, "
                "progress = :progress, open_until = :open_until ADD attempts :one "
                # the attempt about to start has no inference yet: a late notification of the last one names no job
                "REMOVE inference_id, parts",
                ConditionExpression=f"#status IN ({', '.join(_CLAIMABLE)}) "
                "OR (#status = :running AND lease_until < :now)",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":running": JobStatus.RUNNING.value,
                    **{name: status.value for name, status in _CLAIMABLE.items()},
                    ":lease": now + lease_seconds,
                    ":now": now,
                    ":now_iso": now_iso(),
                    ":progress": Decimal("0.05"),
                    ":open_until": open_until,
                    ":one": 1,
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if is_conditional_check_failure(exc):
                return None
            raise
        return Job.model_validate(updated["Attributes"])

    def submitted(self, job_id: str, *, inference_id: str, lease_until: int, parts: list[JobPart] | None = None) -> Job:
        """The attempt is on the asynchronous endpoint (as one invocation, or as ``parts``): hold the lease until its
        outcome can no longer arrive."""
        values: dict[str, Any] = {"inference_id": inference_id, "lease_until": lease_until, "progress": 0.1}
        if parts:
            values["parts"] = [part.model_dump(mode="json") for part in parts]
        return self._update(job_id, values, only_while_running=True)

    def part_done(
        self,
        job_id: str,
        *,
        inference_id: str,
        part_inference_id: str,
        index: int,
        output_location: str,
        audio_seconds: float,
    ) -> Job | None:
        """Record that a part's invocation succeeded, and return the job as it is now (every part done: the one
        write that completed the set sees it so). None when that invocation is no longer the running part of the
        running attempt. Recording a part again changes nothing, so a repeated notification finds the same job."""
        return self._update_part(
            job_id,
            index,
            f"SET parts[{index}].output_location = :location, parts[{index}].audio_seconds = :seconds",
            {":location": output_location, ":seconds": to_dynamodb(round(audio_seconds, 3))},
            inference_id=inference_id,
            part_inference_id=part_inference_id,
        )

    def part_resubmitted(
        self,
        job_id: str,
        *,
        inference_id: str,
        index: int,
        previous_inference_id: str,
        part: JobPart,
        lease_until: int,
    ) -> Job | None:
        """The part is submitted again under ``part.inference_id`` (its last invocation failed for a reason of ours);
        the job's lease is extended for it. None when ``previous_inference_id`` is no longer the running part."""
        return self._update_part(
            job_id,
            index,
            f"SET parts[{index}].inference_id = :new_part, parts[{index}].submissions = :submissions, "
            "lease_until = :lease",
            {":new_part": part.inference_id, ":submissions": part.submissions, ":lease": lease_until},
            inference_id=inference_id,
            part_inference_id=previous_inference_id,
        )

    def _update_part(
        self,
        job_id: str,
        index: int,
        update: str,
        values: dict[str, Any],
        *,
        inference_id: str,
        part_inference_id: str,
    ) -> Job | None:
        try:
            updated = self._table.update_item(
                Key={"job_id": job_id},
                UpdateExpression=update + ", updated_at = :now_iso",
                ConditionExpression=f"#status = :running AND inference_id = :attempt "
                f"AND parts[{index}].inference_id = :part",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    **values,
                    ":running": JobStatus.RUNNING.value,
                    ":attempt": inference_id,
                    ":part": part_inference_id,
                    ":now_iso": now_iso(),
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if is_conditional_check_failure(exc):
                return None
            raise
        return Job.model_validate(updated["Attributes"])

    def set_progress(self, job_id: str, progress: float) -> None:
        self._update(job_id, {"progress": round(progress, 3)}, only_while_running=True)

    def unfinished(self) -> Iterator[Job]:
        """Every job not finished (waiting for its upload, queued, running). The sparse open-work index holds only
        open rows, so this reads those, not the table's 30 days of history; its upload slots are not jobs."""
        arguments: dict[str, Any] = {"IndexName": OPEN_WORK_INDEX, "ProjectionExpression": "job_id"}
        while True:
            response = self._table.scan(**arguments)
            for item in response["Items"]:
                if not JOB_ID_PATTERN.fullmatch(item["job_id"]):
                    continue  # an upload slot (its row's id is the upload's): nothing to run, nothing to read
                row = self._table.get_item(Key={"job_id": item["job_id"]}, ConsistentRead=True).get("Item")
                if row and "status" in row:
                    yield Job.model_validate(row)
            if "LastEvaluatedKey" not in response:
                return
            arguments["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def release_if_lease_expired(self, job_id: str, now: int) -> bool:
        """Hand back to the queue a running job whose lease ran out before ``now``; False when it is not one."""
        return self._update_if(
            job_id,
            "SET #status = :queued, lease_until = :zero, updated_at = :now_iso",
            "#status = :running AND lease_until < :now",
            {":running": JobStatus.RUNNING.value, ":zero": 0, ":now": now, ":now_iso": now_iso()},
        )

    def requeue_if_still_waiting(self, job_id: str, waiting_since: str, now: int) -> bool:
        """Date a queued job that has waited since ``waiting_since`` as queued again at ``now`` (epoch seconds), so
        the grace period starts over; False when it changed meanwhile (claimed, or queued again by another run)."""
        return self._update_if(
            job_id,
            "SET updated_at = :now_iso",
            "#status = :queued AND updated_at = :waiting_since",
            {":waiting_since": waiting_since, ":now_iso": iso_at(now)},
        )

    def _update_if(self, job_id: str, update: str, condition: str, values: dict[str, Any]) -> bool:
        """One conditional update (``#status`` and ``:queued`` are defined for it); False when the condition fails."""
        expressions = update + " " + condition
        # DynamoDB refuses a name or a value the expressions do not use
        values = {":queued": JobStatus.QUEUED.value, **values}
        arguments: dict[str, Any] = {
            "ExpressionAttributeValues": {name: value for name, value in values.items() if name in expressions}
        }
        if "#status" in expressions:
            arguments["ExpressionAttributeNames"] = {"#status": "status"}
        try:
            self._table.update_item(
                Key={"job_id": job_id}, UpdateExpression=update, ConditionExpression=condition, **arguments
            )
        except ClientError as exc:
            if is_conditional_check_failure(exc):
                return False
            raise
        return True

    def release(self, job_id: str, *, attempt: str | None = None) -> Job:
        """Hand a running job back to the queue (a transient failure: it will be tried again); with ``attempt``,
        only while that attempt is the one running. The job as it is after."""
        return self._update(
            job_id, {"status": JobStatus.QUEUED.value, "lease_until": 0}, only_while_running=True, attempt=attempt
        )

    def succeed(self, job_id: str, *, result_key: str, credits_used: int, audio_seconds: float) -> Job:
        return self._update(
            job_id,
            {
                "status": JobStatus.SUCCEEDED.value,
                "progress": 1.0,
                "result_key": result_key,
                "credits_used": credits_used,
                "audio_seconds": audio_seconds,
            },
            closed=True,
        )

    def fail(self, job_id: str, error: JobError, *, attempt: str | None = None) -> Job:
        """Finish the job as failed; with ``attempt``, only while that attempt is the one running. The job as it is
        after."""
        return self._update(
            job_id,
            {"status": JobStatus.FAILED.value, "error": error.model_dump()},
            closed=True,
            only_while_running=attempt is not None,
            attempt=attempt,
        )

    def count_open(self, key_id: str, *, at_most: int) -> int:
        """How many jobs and upload slots of the key are open now, counted up to ``at_most``. The index is eventually
        consistent: work opened a moment ago may be missed for a moment (the cap is a little soft under bursts)."""
        arguments: dict[str, Any] = {
            "IndexName": OPEN_WORK_INDEX,
            "KeyConditionExpression": Key("open_key_id").eq(key_id) & Key("open_until").gt(int(self._clock())),
            "Select": "COUNT",
        }
        count = 0
        while count < at_most:
            response = self._table.query(**arguments)
            count += int(response["Count"])
            if "LastEvaluatedKey" not in response:
                break
            arguments["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return count

    def hold_upload_slot(self, key_id: str, upload_id: str, open_until: int) -> None:
        """An upload slot without a job counts as the key's open work until its presigned POST expires. Its row has
        the upload's id and nothing of a job (no key_id: it is in no job listing), and expires itself."""
        self._table.put_item(
            Item={
                "job_id": upload_id,
                "open_key_id": key_id,
                "open_until": open_until,
                "expires_at": open_until + 24 * 3600,
            }
        )

    def keep_upload_slot_open(self, key_id: str, upload_id: str, open_until: int) -> bool:
        """The slot's file arrived: it counts as the key's open work until ``open_until`` (when the file expires),
        unless a billed use released it first. False when there is no such slot of the key's, or it was released."""
        return self._update_if(
            upload_id,
            "SET open_until = :open_until, expires_at = :expires_at",
            "open_key_id = :key_id AND attribute_not_exists(#status)",
            {":key_id": key_id, ":open_until": open_until, ":expires_at": open_until + 24 * 3600},
        )

    def release_upload_slot(self, key_id: str, upload_id: str) -> bool:
        """A billed use of the slot's file: it no longer counts as the key's open work (for good: an arrival seen
        later does not open it again). False when there is no such open slot of the key's."""
        return self._update_if(
            upload_id,
            "REMOVE open_key_id, open_until",
            "open_key_id = :key_id AND attribute_not_exists(#status)",
            {":key_id": key_id},
        )

    def record_webhook_attempt(self, job_id: str, attempt: WebhookAttempt) -> None:
        self._table.update_item(
            Key={"job_id": job_id},
            UpdateExpression="SET webhook_attempts = list_append(if_not_exists(webhook_attempts, :empty), :attempt)",
            ExpressionAttributeValues={":attempt": [attempt.model_dump(exclude_none=True)], ":empty": []},
        )

    def _update(
        self,
        job_id: str,
        values: dict[str, Any],
        only_while_running: bool = False,
        closed: bool = False,
        attempt: str | None = None,
    ) -> Job:
        """``closed``: the job is finished, and no longer its key's open work (out of the sparse index)."""
        values = {**values, "updated_at": now_iso()}
        names = {f"#{name}": name for name in values}
        update = "SET " + ", ".join(f"#{name} = :{name}" for name in values)
        arguments: dict[str, Any] = {
            "Key": {"job_id": job_id},
            "UpdateExpression": update + (" REMOVE open_key_id, open_until" if closed else ""),
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": {f":{name}": to_dynamodb(value) for name, value in values.items()},
            "ReturnValues": "ALL_NEW",
        }
        if only_while_running:
            arguments["ConditionExpression"] = "#status = :running_status"
            arguments["ExpressionAttributeNames"]["#status"] = "status"
            arguments["ExpressionAttributeValues"][":running_status"] = JobStatus.RUNNING.value
            if attempt is not None:
                arguments["ConditionExpression"] += " AND #attempt = :attempt"
                arguments["ExpressionAttributeNames"]["#attempt"] = "inference_id"
                arguments["ExpressionAttributeValues"][":attempt"] = attempt
        try:
            return Job.model_validate(self._table.update_item(**arguments)["Attributes"])
        except ClientError as exc:
            if only_while_running and is_conditional_check_failure(exc):
                job = self.get(job_id)
                assert job is not None
                return job
            raise
