"""Settings read from the environment: the names template.yaml sets, in any case, JSON for lists and mappings."""

from __future__ import annotations

import pytest
from infery.settings import AccountTables, Settings, get_settings
from pydantic import ValidationError

from local_stack.template import LocalTemplate, load_template

TABLES = {
    "KEYS_TABLE_NAME": "keys",
    "LEDGER_TABLE_NAME": "ledger",
    "RESERVATIONS_TABLE_NAME": "reservations",
}
FUNCTION = {
    **TABLES,
    "RATE_LIMITS_TABLE_NAME": "limits",
    "IDEMPOTENCY_TABLE_NAME": "idempotency",
    "SAGEMAKER_ENDPOINT_NAME": "whisper",
    "AUDIO_BUCKET_NAME": "audio",
    "JOBS_TABLE_NAME": "jobs",
    "JOBS_QUEUE_URL": "https://sqs.example/jobs",
    "SAGEMAKER_ASYNC_ENDPOINT_NAME": "whisper-async",
}


def test_every_function_of_the_template_gets_valid_settings_from_its_environment():
    local = LocalTemplate(load_template())
    for function in ("TranscribeFunction", "WorkerFunction", "ReconcilerFunction"):
        environment = local.function_environment(function)
        settings = Settings.from_environment(environment)
        assert settings.keys_table_name == environment["KEYS_TABLE_NAME"]
        assert settings.default_model == environment["DEFAULT_MODEL"]


def test_values_are_converted_to_their_types_and_defaults_fill_the_rest():
    settings = Settings.from_environment(
        {
            **FUNCTION,
            "SECONDS_PER_CREDIT": "2.5",
            "MAX_OPEN_JOBS_PER_KEY": "7",
            "WEBHOOK_ALLOW_PRIVATE_ADDRESSES": "true",
        }
    )
    assert (settings.seconds_per_credit, settings.max_open_jobs_per_key) == (2.5, 7)
    assert settings.webhook_allow_private_addresses is True
    assert settings.min_credits_per_request == 1 and settings.model_aliases == ("whisper-1",)


def test_names_are_read_in_any_case_and_other_variables_are_ignored():
    settings = Settings.from_environment({name.lower(): value for name, value in FUNCTION.items()} | {"PATH": "/bin"})
    assert settings.audio_bucket_name == "audio"


def test_lists_and_mappings_are_json():
    settings = Settings.from_environment(
        {
            **FUNCTION,
            "MODEL_ALIASES": '["whisper-1", "whisper"]',
            "MODEL_PRICES": '{"whisper-large-v3": {"seconds_per_credit": 2.5, "min_credits_per_request": 2}}',
        }
    )
    assert settings.model_aliases == ("whisper-1", "whisper")
    price = settings.model_prices["whisper-large-v3"]
    assert (price.seconds_per_credit, price.min_credits_per_request) == (2.5, 2)


@pytest.mark.parametrize(
    "override",
    [
        {"KEYS_TABLE_NAME": None},  # a required value missing
        {"SECONDS_PER_CREDIT": "0"},  # out of its range
        {"MAX_OPEN_JOBS_PER_KEY": "many"},  # not a number
        {"MODEL_PRICES": "{not json"},
        {"RESERVATION_GRACE_SECONDS": "60"},  # shorter than a Lambda may run
    ],
)
def test_a_bad_or_missing_value_is_refused_naming_its_setting(override):
    environment = {**FUNCTION, **{name: value for name, value in override.items() if value is not None}}
    for name, value in override.items():
        if value is None:
            del environment[name]
    with pytest.raises((ValidationError, ValueError)) as refused:
        Settings.from_environment(environment)
    assert next(iter(override)).lower() in str(refused.value)


def test_the_operator_tool_needs_only_the_tables():
    assert AccountTables.from_environment(TABLES).reservations_table_name == "reservations"


def test_a_function_reads_its_settings_from_the_process_environment_once(monkeypatch):
    for name, value in FUNCTION.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        assert get_settings().jobs_queue_url == "https://sqs.example/jobs"
        assert get_settings() is get_settings()
    finally:
        get_settings.cache_clear()
