"""The operator's `infery` command without a region: it says the region is missing and how to give one."""

from __future__ import annotations

import boto3
import pytest
from infery_cli.__main__ import main
from moto import mock_aws


@pytest.fixture
def no_region(monkeypatch, tmp_path):
    """No region anywhere boto3 looks (environment, profile), and no table names: the CLI must read the stack."""
    for variable in (
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_PROFILE",
        "INFERY_STACK",
        "KEYS_TABLE_NAME",
        "LEDGER_TABLE_NAME",
        "RESERVATIONS_TABLE_NAME",
    ):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # a session built before read another environment


def test_a_missing_region_is_named_with_the_ways_to_give_one(no_region, capsys):
    assert main(["keys", "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("infery: cannot read the CloudFormation stack 'infery': no AWS region is set.")
    assert "--region REGION" in err and "AWS_DEFAULT_REGION" in err
    assert ".." not in err
    assert "--stack" not in err  # the stack's name was not what was missing


def test_region_is_the_region_the_stack_is_read_in(no_region, monkeypatch, capsys):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")  # restored after the test; the CLI sets it from --region
    with mock_aws():
        boto3.client("cloudformation", region_name="eu-west-1").create_stack(
            StackName="infery",
            TemplateBody='{"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}, '
            '"Outputs": {"KeysTableName": {"Value": "keys"}}}',
        )
        assert main(["--region", "eu-west-1", "keys", "list"]) == 1
        err = capsys.readouterr().err
        # found in eu-west-1 (in us-east-1 there is no such stack): it is the outputs that are missing
        assert "the stack 'infery' has no outputs LedgerTableName, ReservationsTableName" in err, err

        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")  # the first call set eu-west-1 for this process
        assert main(["keys", "list"]) == 1
        err = capsys.readouterr().err
        assert "does not exist. Pass --stack NAME and --region REGION" in err and ".." not in err, err
