"""Every row of the provider error table, through the real provider's ``interpret`` on an
answer in that provider's own error shape; and the fallback by HTTP status."""

from __future__ import annotations

import pytest

from campaign_pipeline.providers.errors import (
    ERROR_TABLE,
    FAILED,
    RATE_LIMITED,
    RENEW,
    RETRY,
    STOP,
    ErrorRow,
    by_status,
    lookup,
)

from .answers import (
    email_provider,
    fcm_error,
    push_provider,
    sendgrid_error,
    sms_provider,
    twilio_error,
)

PROVIDERS = {"email": email_provider, "sms": sms_provider, "push": push_provider}
WAIT = {"Retry-After": "7"}  # on every answer: only transient ones may read it


def code_for(row: ErrorRow) -> str:
    return row.code.replace("xxx", "003")  # one code of the 30xxx range


def answer(channel: str, status: int, code: str, message: str):
    """The provider's error answer with *code* (SendGrid's "from": a sender field)."""
    if channel == "email":
        field = "from.email" if code == "from" else None
        return sendgrid_error(status, (field, message), headers=WAIT)
    if channel == "sms":
        return twilio_error(status, code or None, message, headers=WAIT)
    return fcm_error(status, code, message, headers=WAIT)


def assert_names_what_to_check(provider, check: str, error: str) -> None:
    """The error names every config key of *check*, and for ``credentials`` the variables."""
    for key in [key.strip() for key in check.split(",")] if check else ["credentials"]:
        if key == "credentials":
            for variable in provider.env_keys.values():
                assert f"${variable} " in error, (key, error)
        else:
            assert f"[{provider.section}] {key}" in error, (key, error)


# What the pipeline must do with each answer the table names, written out again by meaning
# (the table is ordered by provider): a swapped action or key in the table fails a test.
# (channel, status, code) -> the config keys a stop names ("credentials": those in use)
EXPECTED = {
    STOP: {
        ("email", 400, "from"): "from_email",
        ("email", 401, ""): "credentials",
        ("email", 403, ""): "credentials, from_email",
        ("email", 404, ""): "base_url",
        ("email", 405, ""): "base_url",
        ("email", 415, ""): "base_url",
        ("sms", 401, "20003"): "credentials",
        ("sms", 401, "20005"): "account_sid_env",
        ("sms", 404, ""): "base_url",
        ("sms", 405, ""): "base_url",
        ("sms", 415, ""): "base_url",
        ("sms", 400, "21212"): "from_number",
        ("sms", 400, "21606"): "from_number",
        ("sms", 400, "21659"): "from_number",
        ("sms", 400, "21660"): "from_number",
        ("sms", 400, "21661"): "from_number",
        ("sms", 400, "21705"): "messaging_service_sid",
        ("push", 404, ""): "project_id, base_url",
        ("push", 405, ""): "base_url",
        ("push", 415, ""): "base_url",
        ("push", 401, "THIRD_PARTY_AUTH_ERROR"): "project_id",
        ("push", 403, "PERMISSION_DENIED"): "credentials, project_id",
    },
    RENEW: {("push", 401, "UNAUTHENTICATED"): "credentials"},
    FAILED: dict.fromkeys(
        [
            ("email", 400, ""),
            ("email", 413, ""),
            ("sms", 400, "21211"),
            ("sms", 400, "21408"),
            ("sms", 400, "21610"),
            ("sms", 400, "21612"),
            ("sms", 400, "21614"),
            ("sms", 400, "21617"),
            ("sms", 400, "30xxx"),
            ("push", 400, "INVALID_ARGUMENT"),
            ("push", 404, "UNREGISTERED"),
            ("push", 403, "SENDER_ID_MISMATCH"),
        ],
        "",
    ),
    RETRY: dict.fromkeys(
        [
            ("email", 500, ""),
            ("email", 502, ""),
            ("email", 503, ""),
            ("email", 504, ""),
            ("sms", 500, "20500"),
            ("sms", 503, "20503"),
            ("push", 503, "UNAVAILABLE"),
            ("push", 500, "INTERNAL"),
        ],
        "",
    ),
    RATE_LIMITED: dict.fromkeys(
        [("email", 429, ""), ("sms", 429, "20429"), ("push", 429, "QUOTA_EXCEEDED")], ""
    ),
}


def expected(row: ErrorRow) -> tuple[str, str]:
    """(action, check) the test expects for the answer *row* names."""
    key = (row.channel, row.status, row.code)
    found = [(action, rows[key]) for action, rows in EXPECTED.items() if key in rows]
    assert len(found) == 1, f"{key}: expected once in EXPECTED, found {len(found)} times"
    return found[0]


def test_the_table_names_exactly_the_answers_expected_here():
    in_table = sorted((row.channel, row.status, row.code) for row in ERROR_TABLE)
    assert in_table == sorted(key for rows in EXPECTED.values() for key in rows)


@pytest.mark.parametrize("row", ERROR_TABLE, ids=lambda r: f"{r.channel}-{r.status}-{r.code}")
def test_every_row_of_the_table_is_what_the_provider_makes_of_its_answer(monkeypatch, row):
    action, check = expected(row)
    provider = PROVIDERS[row.channel](monkeypatch)
    code = code_for(row)

    outcome = provider.interpret(answer(row.channel, row.status, code, row.meaning))

    assert lookup(row.channel, row.status, code) is row, "no earlier row shadows it"
    assert outcome.kind == action
    label = f"{row.channel} provider answered {row.status}"
    assert outcome.error.startswith(f"{label} {code}: " if code else label), outcome.error
    assert row.meaning in outcome.error, "the provider's message is kept"
    if action in (STOP, RENEW):
        assert_names_what_to_check(provider, check, outcome.error)
    else:
        assert "; check " not in outcome.error
    expected_wait = 7.0 if action in (RETRY, RATE_LIMITED) else None
    assert outcome.retry_after == expected_wait
    assert not any(value in outcome.error for value in provider.secrets.values())


@pytest.mark.parametrize(
    "channel, status, code, kind, check",
    [
        ("email", 408, "", RETRY, ""),
        ("email", 422, "", FAILED, ""),
        ("email", 501, "", STOP, "base_url"),
        ("sms", 400, "21999", FAILED, ""),  # a code the table does not know
        ("sms", 401, "20999", STOP, "credentials"),
        ("sms", 403, "20403", STOP, "credentials"),  # no sms row has 403
        ("sms", 502, "", RETRY, ""),
        ("push", 400, "UNSPECIFIED_ERROR", FAILED, ""),
        ("push", 429, "RESOURCE_EXHAUSTED", RATE_LIMITED, ""),
        ("push", 500, "UNSPECIFIED_ERROR", RETRY, ""),
        ("push", 501, "", STOP, "base_url"),
    ],
)
def test_an_answer_no_row_names_falls_back_to_its_http_status(
    monkeypatch, channel, status, code, kind, check
):
    provider = PROVIDERS[channel](monkeypatch)

    outcome = provider.interpret(answer(channel, status, code, "something new"))

    assert lookup(channel, status, code) not in ERROR_TABLE
    assert outcome.kind == kind
    assert outcome.error.startswith(f"{channel} provider answered {status}")
    if kind == STOP:
        assert_names_what_to_check(provider, check, outcome.error)


@pytest.mark.parametrize(
    "statuses, kind",
    [
        ((401, 403, 404, 405, 415, 501), STOP),
        ((429,), RATE_LIMITED),
        ((408, 500, 502, 503, 504, 599), RETRY),
        ((400, 402, 409, 410, 413, 422), FAILED),
    ],
)
def test_the_fallback_by_status(statuses, kind):
    assert [by_status(status) for status in statuses] == [kind] * len(statuses)
