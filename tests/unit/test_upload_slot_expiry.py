"""Until when an uploaded file counts as its key's open work: when S3's lifecycle rule for uploads/ expires it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from infery.usecases.uploads import UPLOAD_EXPIRATION_DAYS, upload_expires_at

from local_stack.template import load_template


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_the_expiration_counted_is_the_buckets_lifecycle_rule_for_uploads():
    rules = load_template()["Resources"]["AudioBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    (uploads,) = [rule for rule in rules if rule["Prefix"] == "uploads/"]
    assert uploads["Status"] == "Enabled"
    assert uploads["ExpirationInDays"] == UPLOAD_EXPIRATION_DAYS


@pytest.mark.parametrize(
    ("arrived", "expires"),
    [
        # S3 adds the days to the object's creation, then rounds up to the next midnight UTC
        ("2026-12-04T11:30:00", "2026-12-07T00:00:00"),
        ("2026-12-04T00:00:01", "2026-12-07T00:00:00"),
        ("2026-12-04T23:59:59", "2026-12-07T00:00:00"),
        ("2026-12-04T00:00:00", "2026-12-06T00:00:00"),  # already midnight: not rounded a day further
        ("2026-12-30T18:00:00", "2027-01-02T00:00:00"),
    ],
)
def test_a_file_expires_at_the_midnight_after_its_expiration_days(arrived, expires):
    assert upload_expires_at(_epoch(arrived)) == _epoch(expires)


@pytest.mark.parametrize(
    "function",
    [
        "TranscribeFunction",  # releases a slot when a sync call on its upload is charged
        "WorkerFunction",  # keeps a slot open when its file arrives, releases it when a job on it succeeds
    ],
)
def test_the_functions_that_move_an_upload_slot_may_update_the_jobs_table(function):
    statements = [
        statement
        for policy in load_template()["Resources"][function]["Properties"]["Policies"]
        if isinstance(policy, dict)
        for statement in policy.get("Statement", [])
    ]
    updates = [
        statement
        for statement in statements
        if statement["Resource"] == {"Fn::GetAtt": ["JobsTable", "Arn"]}
        and "dynamodb:UpdateItem"
        in (statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]])
    ]
    assert updates, f"{function} cannot update the jobs table"
