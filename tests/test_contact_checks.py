"""The contact checks: one table by column, each check a value in, (normalised, reason) out."""

from __future__ import annotations

import pickle

import pyarrow as pa
import pytest
from conftest import TOKEN

from campaign_pipeline import segments
from campaign_pipeline.segments import contacts
from campaign_pipeline.testing.reference import load_one_by_one

SEGMENTS = ["premium", "regular", "new"]

# (column, value, normalised value, start of the reason)
CASES = [
    ("email", "ann@example.com", "ann@example.com", ""),
    ("email", "Ann.Lee@EXAMPLE.com", "Ann.Lee@example.com", ""),
    ("email", "Postmaster@EXAMPLE.com", "postmaster@example.com", ""),
    ("email", "Jürgen@Bücher.example", "Jürgen@bücher.example", ""),
    ("email", "", "", "missing: no email address"),
    ("email", "a..b@example.com", "", "invalid: email 'a..b@example.com': "),
    ("email", "b5@exa mple.com", "", "invalid: email 'b5@exa mple.com': "),
    ("phone", "+12125550100", "+12125550100", ""),
    ("phone", "+1 (212) 555-0199", "+12125550199", ""),
    ("phone", "(212) 555-0199", "+12125550199", ""),  # the default region, US
    ("phone", "+44 20 7946 0958", "+442079460958", ""),
    ("phone", "", "", "missing: no phone number"),
    ("phone", "12", "", "invalid: phone '12' is not a valid number (default region US)"),
    ("phone", "2125550lOO", "", "invalid: phone '2125550lOO' contains letters; fix the number"),
    ("phone", "1-800-FLOWERS", "", "invalid: phone '1-800-FLOWERS' contains letters"),
    ("phone", "+1 212 555 0109 ext. 12", "", "invalid: phone '+1 212 555 0109 ext. 12' has an"),
    ("device_token", TOKEN, TOKEN, ""),
    ("device_token", "a" * 32, "a" * 32, ""),
    ("device_token", "a" * 4096, "a" * 4096, ""),
    ("device_token", "", "", "missing: no device token"),
    ("device_token", "a" * 31, "", "invalid: device token of 31 characters is not a plausible"),
    ("device_token", "a" * 4097, "", "invalid: device token of 4097 characters"),
    ("device_token", TOKEN + "é", "", "invalid: device token of 80 characters"),
    ("device_token", "tok en" * 10, "", "invalid: device token of 60 characters"),
]


def test_the_table_checks_the_three_contact_columns():
    checks = segments.contact_checks("US")

    assert list(checks) == ["email", "phone", "device_token"]
    assert set(checks) <= set(segments.REQUIRED_COLUMNS)
    assert [segments.error_column(c) for c in checks] == [
        "email_error",
        "phone_error",
        "device_token_error",
    ]


@pytest.mark.parametrize(("column", "value", "normalised", "reason"), CASES)
def test_each_check_normalises_a_good_value_and_explains_a_bad_one(
    column, value, normalised, reason
):
    checked, why = segments.contact_checks("US")[column](value)

    assert checked == normalised
    assert why.startswith(reason) and bool(why) == bool(reason), why


def test_the_phone_check_is_built_from_the_settings():
    us, gb = segments.contact_checks("US")["phone"], segments.contact_checks("GB")["phone"]
    vanity = segments.contact_checks("US", accept_vanity=True)["phone"]

    assert gb("020 7946 0958") == ("+442079460958", "")
    assert us("020 7946 0958")[1].startswith("invalid: phone '020 7946 0958'")
    assert vanity("1-800-FLOWERS") == ("+18003569377", "")
    assert vanity("+1 212 555 0109 ext. 12")[1].endswith("cannot reach an extension")


def test_every_check_travels_to_a_worker_process():
    for column, check in segments.contact_checks("GB", accept_vanity=True).items():
        copy = pickle.loads(pickle.dumps(check))
        for value in [v for c, v, _, _ in CASES if c == column] + ["020 7946 0958"]:
            assert copy(value) == check(value)


def test_the_column_shortcut_passes_exactly_what_the_check_passes_unchanged():
    """load() runs check_device_token only on the tokens its column test does not pass."""
    check = segments.contact_checks("US")["device_token"]
    values = [v for c, v, _, _ in CASES if c == "device_token"] + ["a" * 33 + "\n", "é" * 40]

    passed = check.unchanged_where(pa.chunked_array([values], pa.large_string()))

    assert passed.to_pylist() == [check(v) == (v, "") for v in values]


def check_fax(value: str) -> tuple[str, str]:
    """A check for a column of the test's own (module level, so that it pickles)."""
    digits = value.replace(" ", "")
    if not digits.isdigit():
        return "", f"invalid: fax {value!r} is not digits"
    return digits, ""


def write_customers(path, header: str, rows: list[str]) -> str:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("where", ["inline", "pool"])
def test_a_check_added_to_the_table_is_applied_with_no_other_edit(tmp_path, monkeypatch, where):
    if where == "pool":
        monkeypatch.setattr(contacts, "PARALLEL_MIN_VALUES", 0)
    path = write_customers(
        tmp_path / "customers.csv",
        "customer_id,segment,email,phone,device_token,fax,notes",
        [
            f"F1,new,f1@example.com,+12125550100,{TOKEN},0171 555 01,a",
            f"F2,new,f2@example.com,+12125550101,{TOKEN},call me,b",
        ],
    )
    checks = {**segments.contact_checks("US"), "fax": check_fax}

    fast = segments.load(path, SEGMENTS, "US", checks=checks)
    slow = load_one_by_one(path, SEGMENTS, "US", checks=checks)

    assert fast.columns == slow.columns == list(fast.customers.columns)
    assert fast.columns == [
        "row", "customer_id", "segment", "email", "phone", "device_token", "fax",
        "email_error", "phone_error", "device_token_error", "fax_error", "notes",
    ]  # fmt: skip
    assert fast.customers.equals(slow.customers)
    assert fast.customers[["fax", "fax_error"]].values.tolist() == [
        ["017155501", ""],
        ["", "invalid: fax 'call me' is not digits"],
    ]
    issues = fast.summary()["contact_issues"]
    assert issues == slow.summary()["contact_issues"]
    assert issues == {"email": {}, "phone": {}, "device_token": {}, "fax": {"invalid": 1}}


@pytest.mark.parametrize("load", [segments.load, load_one_by_one])
def test_a_checked_column_is_required(tmp_path, load):
    path = write_customers(
        tmp_path / "customers.csv",
        "customer_id,segment,email,phone,device_token",
        [f"F1,new,f1@example.com,+12125550100,{TOKEN}"],
    )
    checks = {**segments.contact_checks("US"), "fax": check_fax}

    with pytest.raises(segments.InputError, match=r"missing required column\(s\) fax \(found"):
        load(path, SEGMENTS, "US", checks=checks)
