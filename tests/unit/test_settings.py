"""Settings read from the environment: each function's own model, the names template.yaml gives that function, in
any case, JSON for lists and mappings."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from infery.settings import (
    AccountTables,
    ApiSettings,
    EnvironmentSettings,
    ReconcilerSettings,
    WorkerSettings,
    get_api_settings,
    get_settings,
    get_worker_settings,
)
from pydantic import ValidationError

from local_stack.template import LocalTemplate, load_template

ROOT = Path(__file__).resolve().parents[2]
# each function of template.yaml and the settings its app.py reads
FUNCTIONS: dict[str, type[EnvironmentSettings]] = {
    "TranscribeFunction": ApiSettings,
    "WorkerFunction": WorkerSettings,
    "ReconcilerFunction": ReconcilerSettings,
}
# read by powertools itself, not by a settings model
POWERTOOLS_PREFIX = "POWERTOOLS_"

TABLES = {
    "KEYS_TABLE_NAME": "keys",
    "LEDGER_TABLE_NAME": "ledger",
    "RESERVATIONS_TABLE_NAME": "reservations",
}
JOB_TABLES = {**TABLES, "JOBS_TABLE_NAME": "jobs", "JOBS_QUEUE_URL": "https://sqs.example/jobs"}
WORKER = {
    **JOB_TABLES,
    "SAGEMAKER_ENDPOINT_NAME": "whisper",
    "AUDIO_BUCKET_NAME": "audio",
    "SAGEMAKER_ASYNC_ENDPOINT_NAME": "whisper-async",
}
API = {**WORKER, "RATE_LIMITS_TABLE_NAME": "limits", "IDEMPOTENCY_TABLE_NAME": "idempotency"}


def variables(model: type[EnvironmentSettings]) -> set[str]:
    return {name.upper() for name in model.model_fields}


def required_variables(model: type[EnvironmentSettings]) -> set[str]:
    return {name.upper() for name, field in model.model_fields.items() if field.is_required()}


@pytest.fixture(scope="module")
def local() -> LocalTemplate:
    return LocalTemplate(load_template())


def given_to(local: LocalTemplate, function: str) -> set[str]:
    return {name for name in local.function_environment(function) if not name.startswith(POWERTOOLS_PREFIX)}


def test_every_function_of_the_template_has_its_settings(local):
    assert set(local.resources_of_type("AWS::Serverless::Function")) == set(FUNCTIONS)
    for function, model in FUNCTIONS.items():
        environment = local.function_environment(function)
        settings = model.from_environment(environment)
        assert isinstance(settings, AccountTables)
        assert settings.keys_table_name == environment["KEYS_TABLE_NAME"]


@pytest.mark.parametrize("function", FUNCTIONS)
def test_the_template_gives_a_function_exactly_the_variables_its_settings_read(local, function):
    model, given = FUNCTIONS[function], given_to(local, function)
    # no variable given that the function never reads
    assert given - variables(model) == set()
    # every variable it needs is given ...
    assert required_variables(model) - given == set()
    # ... and so is every one it reads that the template sets for another function: otherwise this one would quietly
    # run with the default while the other runs with the deployment's value
    set_anywhere = set().union(*(given_to(local, other) for other in FUNCTIONS))
    assert (variables(model) & set_anywhere) - given == set()


def test_the_worker_and_the_reconciler_read_none_of_the_apis_own_variables(local):
    api_only = variables(ApiSettings) - variables(WorkerSettings)
    assert {"RATE_LIMITS_TABLE_NAME", "IDEMPOTENCY_TABLE_NAME", "MAX_SYNC_AUDIO_BYTES"} <= api_only
    for function in ("WorkerFunction", "ReconcilerFunction"):
        assert given_to(local, function) & api_only == set()
        assert variables(FUNCTIONS[function]) & api_only == set()
    # and the reconciler nothing of the jobs' use case
    assert {"AUDIO_BUCKET_NAME", "SAGEMAKER_ASYNC_ENDPOINT_NAME"} & variables(ReconcilerSettings) == set()


@pytest.mark.parametrize(
    ("function", "collaborators"),
    [
        ("WorkerFunction", ("job_service", "audio_store", "async_endpoint")),
        ("ReconcilerFunction", ("credits", "job_store", "job_queue")),
    ],
)
def test_the_worker_and_the_reconciler_start_without_the_apis_variables(local, monkeypatch, function, collaborators):
    # Given only the environment the template gives the function (and a region): nothing the API alone reads
    for name in variables(ApiSettings) | variables(ReconcilerSettings) | {"AWS_PROFILE", "AWS_ENDPOINT_URL"}:
        monkeypatch.delenv(name, raising=False)
    for name, value in {**local.function_environment(function), "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        # When its app.py starts (as Lambda imports it) and builds what its handler uses (builds only: no call)
        source = ROOT / local.resources[function]["Properties"]["CodeUri"] / "app.py"
        spec = importlib.util.spec_from_file_location("app", source)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        # Then its settings are its own model and every collaborator is built
        assert type(module.settings) is FUNCTIONS[function]
        assert all(getattr(module.wiring, name) is not None for name in collaborators)
        assert not hasattr(module.wiring, "rate_limiter")
    finally:
        get_settings.cache_clear()


def test_values_are_converted_to_their_types_and_defaults_fill_the_rest():
    settings = ApiSettings.from_environment(
        {
            **API,
            "SECONDS_PER_CREDIT": "2.5",
            "MAX_OPEN_JOBS_PER_KEY": "7",
            "WEBHOOK_ALLOW_PRIVATE_ADDRESSES": "true",
        }
    )
    assert (settings.seconds_per_credit, settings.max_open_jobs_per_key) == (2.5, 7)
    assert settings.webhook_allow_private_addresses is True
    assert settings.min_credits_per_request == 1
    assert settings.model_aliases == {
        "gpt-4o-transcribe": "whisper-1",
        "gpt-4o-mini-transcribe": "whisper-1",
        "gpt-4o-transcribe-diarize": "whisper-1",
    }


def test_names_are_read_in_any_case_and_other_variables_are_ignored():
    settings = ApiSettings.from_environment({name.lower(): value for name, value in API.items()} | {"PATH": "/bin"})
    assert settings.audio_bucket_name == "audio"


def test_lists_and_mappings_are_json():
    settings = WorkerSettings.from_environment(
        {
            **WORKER,
            "MODEL_ALIASES": '["whisper-1", "whisper"]',
            "MODEL_PRICES": '{"whisper-large-v3": {"seconds_per_credit": 2.5, "min_credits_per_request": 2}}',
        }
    )
    assert settings.model_aliases == {"whisper": "whisper-1"}  # the older form: names of the default model
    price = settings.model_prices["whisper-large-v3"]
    assert (price.seconds_per_credit, price.min_credits_per_request) == (2.5, 2)


@pytest.mark.parametrize(
    ("given", "aliases"),
    [
        (
            '{"gpt-4o-transcribe": "whisper-large-v3", "gpt-4o": "gpt-4o-transcribe"}',
            {"gpt-4o-transcribe": "whisper-large-v3", "gpt-4o": "gpt-4o-transcribe"},
        ),
        ("{}", {}),
        # template.yaml's default: the settings' own
        (
            "",
            {
                "gpt-4o-transcribe": "whisper-1",
                "gpt-4o-mini-transcribe": "whisper-1",
                "gpt-4o-transcribe-diarize": "whisper-1",
            },
        ),
    ],
)
def test_model_aliases_are_a_json_mapping_of_each_name_to_what_it_stands_for(given, aliases):
    assert WorkerSettings.from_environment({**WORKER, "MODEL_ALIASES": given}).model_aliases == aliases


@pytest.mark.parametrize(
    ("model", "base", "override"),
    [
        (ApiSettings, API, {"MODEL_ALIASES": '{"gpt-4o": 4}'}),  # a name must stand for a name
        (ApiSettings, API, {"MODEL_ALIASES": '"gpt-4o"'}),
        (ApiSettings, API, {"KEYS_TABLE_NAME": None}),  # a required value missing
        (ApiSettings, API, {"RATE_LIMITS_TABLE_NAME": None}),
        (WorkerSettings, WORKER, {"AUDIO_BUCKET_NAME": None}),
        (ReconcilerSettings, JOB_TABLES, {"JOBS_QUEUE_URL": None}),
        (ApiSettings, API, {"SECONDS_PER_CREDIT": "0"}),  # out of its range
        (WorkerSettings, WORKER, {"MAX_OPEN_JOBS_PER_KEY": "many"}),  # not a number
        (ApiSettings, API, {"MODEL_PRICES": "{not json"}),
        (ReconcilerSettings, JOB_TABLES, {"RESERVATION_GRACE_SECONDS": "60"}),  # shorter than a Lambda may run
        (ReconcilerSettings, JOB_TABLES, {"QUEUED_JOB_GRACE_SECONDS": "60"}),
        (WorkerSettings, WORKER, {"WEBHOOK_ALLOW_HTTP": "perhaps"}),
    ],
)
def test_a_bad_or_missing_value_is_refused_naming_its_setting(model, base, override):
    environment = {**base, **{name: value for name, value in override.items() if value is not None}}
    for name, value in override.items():
        if value is None:
            del environment[name]
    with pytest.raises((ValidationError, ValueError)) as refused:
        model.from_environment(environment)
    assert next(iter(override)).lower() in str(refused.value)


def test_allowing_private_webhook_addresses_does_not_allow_http_nor_the_other_way_round():
    private = WorkerSettings.from_environment({**WORKER, "WEBHOOK_ALLOW_PRIVATE_ADDRESSES": "true"})
    http = WorkerSettings.from_environment({**WORKER, "WEBHOOK_ALLOW_HTTP": "true"})
    assert (private.webhook_allow_private_addresses, private.webhook_allow_http) == (True, False)
    assert (http.webhook_allow_private_addresses, http.webhook_allow_http) == (False, True)
    deployed = WorkerSettings.from_environment(WORKER)
    assert (deployed.webhook_allow_private_addresses, deployed.webhook_allow_http) == (False, False)


def test_the_queued_jobs_grace_is_a_setting_of_its_own_with_the_reservations_default():
    defaults = ReconcilerSettings.from_environment(JOB_TABLES)
    assert defaults.queued_job_grace_seconds == defaults.reservation_grace_seconds == 1200
    longer = ReconcilerSettings.from_environment({**JOB_TABLES, "QUEUED_JOB_GRACE_SECONDS": "3600"})
    assert (longer.queued_job_grace_seconds, longer.reservation_grace_seconds) == (3600, 1200)
    held = ReconcilerSettings.from_environment({**JOB_TABLES, "RESERVATION_GRACE_SECONDS": "1800"})
    assert (held.queued_job_grace_seconds, held.reservation_grace_seconds) == (1200, 1800)


def test_the_operator_tool_needs_only_the_tables():
    assert AccountTables.from_environment(TABLES).reservations_table_name == "reservations"


def test_a_function_reads_its_settings_from_the_process_environment_once(monkeypatch):
    for name, value in API.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        assert get_api_settings().jobs_queue_url == "https://sqs.example/jobs"
        assert get_api_settings() is get_api_settings()
        assert type(get_worker_settings()) is WorkerSettings  # each function's model, read apart
    finally:
        get_settings.cache_clear()
