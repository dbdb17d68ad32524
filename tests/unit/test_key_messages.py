"""A key of the wrong shape gets a message that says what is wrong with it, and does not repeat it."""

from __future__ import annotations

import pytest
from infery.domain.errors import AuthenticationFailed
from infery.domain.keys import api_key_from_authorization, generate_api_key


def refusal(api_key: str) -> str:
    with pytest.raises(AuthenticationFailed) as raised:
        api_key_from_authorization(f"Bearer {api_key}")
    assert raised.value.code == "invalid_api_key"
    return raised.value.message


@pytest.mark.parametrize(
    ("api_key", "problem"),
    [
        ("inf_abc", "has only 3 characters after 'inf_': check that the whole key was copied"),
        (generate_api_key()[:15], "has only 11 characters after 'inf_'"),  # a key cut short
        ("inf_" + "a1" * 70, "has 140 characters after 'inf_': check that nothing was pasted after the key"),
        ("sk-proj-0123456789abcdefghij", "does not start with 'inf_'"),
        ("inf_0123456789abcdef!@#$", "has other characters after 'inf_'"),
    ],
)
def test_a_key_of_the_wrong_shape_is_told_what_is_wrong(api_key, problem):
    message = refusal(api_key)
    assert "An infery key is 'inf_' followed by 46 letters and digits" in message
    assert problem in message
    assert api_key not in message


def test_inf_abc_is_not_told_a_shape_it_already_has():
    message = refusal("inf_abc")
    assert "letters, digits, '-' and '_'" not in message
