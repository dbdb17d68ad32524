"""local_stack's --parameters (INFERY_PARAMETERS): template.yaml parameters given other values, as a deployment's
sam deploy --parameter-overrides gives them (a stack whose jobs take 30 MB, for the end-to-end tests at a limit)."""

from __future__ import annotations

import pytest

from local_stack.__main__ import template_parameters
from local_stack.template import LocalTemplate, load_template


def test_known_parameters_are_taken_and_reach_the_functions_environment():
    template = load_template()
    overrides = template_parameters('{"MaxJobBytes": 30000000, "MaxJobAudioSeconds": "600"}', template)
    assert overrides == {"MaxJobBytes": "30000000", "MaxJobAudioSeconds": "600"}
    environment = LocalTemplate(template, parameter_overrides=overrides).function_environment("WorkerFunction")
    assert (environment["MAX_JOB_BYTES"], environment["MAX_JOB_AUDIO_SECONDS"]) == ("30000000", "600")


def test_nothing_asked_is_no_override():
    assert template_parameters("  ", load_template()) == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"MaxJobByte": "1"}', "no parameter MaxJobByte"),
        ('["MaxJobBytes"]', "an object"),
        ('{"MaxJobBytes": {"nested": 1}}', "an object"),
        ("MaxJobBytes=1", "not JSON"),
    ],
)
def test_an_unknown_parameter_or_another_shape_is_refused(text, message):
    with pytest.raises(ValueError, match=message):
        template_parameters(text, load_template())
