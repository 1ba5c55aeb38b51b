"""Reading and validating a customer-segment CSV.

A file-level problem (missing, empty, not UTF-8, a required column absent) raises
:class:`InputError` so that nothing is sent. A row-level problem quarantines the row with
its line number and reason. A bad contact field keeps the customer but removes them from
that one channel, with the reason kept beside the field.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

import phonenumbers
from email_validator import EmailNotValidError, validate_email

REQUIRED_COLUMNS = ("customer_id", "segment", "email", "phone", "device_token")
# The fields each channel needs, and the column holding the reason it is unusable.
CONTACT_FIELDS = {"email": "email", "sms": "phone", "push": "device_token"}
ERROR_COLUMN = {channel: f"{channel}_error" for channel in CONTACT_FIELDS}
REJECTED_COLUMNS = ("row", "reason", "detail", "customer_id", "segment", "raw")

# FCM registration tokens are long URL-safe strings (about 150-200 characters today).
_DEVICE_TOKEN = re.compile(r"^[A-Za-z0-9_:.\-]{32,4096}$")


class InputError(ValueError):
    """The customer file cannot be used at all; the message names the file and the problem."""


@dataclass
class Segments:
    """The result of loading one customer file."""

    customers: list[dict[str, str]] = field(default_factory=list)
    rejected: list[dict[str, object]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    records_read: int = 0

    def summary(self) -> dict:
        contact_issues = {
            channel: dict(Counter(c[column].split(":")[0] for c in self.customers if c[column]))
            for channel, column in ERROR_COLUMN.items()
        }
        return {
            "records_read": self.records_read,
            "valid": len(self.customers),
            "rejected": len(self.rejected),
            "rejected_by_reason": dict(Counter(r["reason"] for r in self.rejected)),
            "contact_issues": contact_issues,
            "segments": dict(Counter(c["segment"] for c in self.customers)),
        }


def load(path: str, segments: list[str], default_region: str) -> Segments:
    """Read and validate the customer file at *path*."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            return _parse(handle, path, [s.casefold() for s in segments], default_region)
    except FileNotFoundError:
        raise InputError(f"customer file {path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise InputError(
            f"customer file {path}: not valid UTF-8 (byte {exc.start} of the file "
            "cannot be decoded); save it as UTF-8"
        ) from None
    except csv.Error as exc:
        raise InputError(f"customer file {path}: unreadable CSV: {exc}") from None


def _parse(handle: io.TextIOBase, path: str, segments: list[str], region: str) -> Segments:
    reader = csv.reader(handle)
    header = next(reader, None)
    if header is None or not any(h.strip() for h in header):
        raise InputError(f"customer file {path}: the file is empty (no header row)")
    columns = [h.strip().casefold() for h in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise InputError(
            f"customer file {path}: missing required column(s) {', '.join(missing)} "
            f"(found: {', '.join(columns)})"
        )
    result = Segments(columns=_output_columns(columns))
    first_row: dict[str, int] = {}
    line = reader.line_num
    for record in reader:
        row, line = line + 1, reader.line_num
        if not any(cell.strip() for cell in record):
            continue
        result.records_read += 1
        problem = _row_problem(record, columns, segments, first_row, row)
        if problem:
            result.rejected.append(_rejected(row, record, columns, *problem))
            continue
        customer = _customer(record, columns, region, row)
        first_row[customer["customer_id"]] = row
        result.customers.append(customer)
    return result


def _output_columns(columns: list[str]) -> list[str]:
    extras = [c for c in dict.fromkeys(columns) if c and c not in REQUIRED_COLUMNS]
    return ["row", *REQUIRED_COLUMNS, *ERROR_COLUMN.values(), *extras]


def _row_problem(
    record: list[str], columns: list[str], segments: list[str], first_row: dict, row: int
) -> tuple[str, str] | None:
    if len(record) != len(columns):
        return "malformed_row", f"expected {len(columns)} fields, found {len(record)}"
    values = _values(record, columns)
    customer_id, segment = values["customer_id"], values["segment"].casefold()
    if not customer_id:
        return "missing_customer_id", "customer_id is empty"
    if segment not in segments:
        shown = repr(values["segment"]) if values["segment"] else "empty"
        return "unknown_segment", f"segment {shown} is not one of {', '.join(segments)}"
    if customer_id in first_row:
        return "duplicate_customer_id", f"customer_id already seen on row {first_row[customer_id]}"
    return None


def _values(record: list[str], columns: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, cell in zip(columns, record, strict=False):
        values.setdefault(name, cell.strip())  # the first of two same-named columns wins
    return values


def _rejected(row: int, record: list[str], columns: list[str], reason: str, detail: str) -> dict:
    values = _values(record, columns) if len(record) == len(columns) else {}
    raw = io.StringIO()
    csv.writer(raw, lineterminator="").writerow(record)
    return {
        "row": row,
        "reason": reason,
        "detail": detail,
        "customer_id": values.get("customer_id", ""),
        "segment": values.get("segment", ""),
        "raw": raw.getvalue(),
    }


def _customer(record: list[str], columns: list[str], region: str, row: int) -> dict[str, str]:
    customer = _values(record, columns)
    customer["segment"] = customer["segment"].casefold()
    customer["row"] = str(row)
    customer["email"], customer["email_error"] = check_email(customer["email"])
    customer["phone"], customer["sms_error"] = check_phone(customer["phone"], region)
    customer["device_token"], customer["push_error"] = check_device_token(customer["device_token"])
    return customer


def check_email(value: str) -> tuple[str, str]:
    """Return (normalised address, "") or ("", reason)."""
    if not value:
        return "", "missing: no email address"
    try:
        return validate_email(value, check_deliverability=False).normalized, ""
    except EmailNotValidError as exc:
        return "", f"invalid: email {value!r}: {exc}"


@lru_cache(maxsize=65536)
def check_phone(value: str, region: str) -> tuple[str, str]:
    """Return (E.164 number, "") or ("", reason); numbers without + use *region*."""
    if not value:
        return "", "missing: no phone number"
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException as exc:
        return "", f"invalid: phone {value!r}: {exc}"
    if not phonenumbers.is_valid_number(number):
        return "", f"invalid: phone {value!r} is not a valid number (default region {region})"
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), ""


def check_device_token(value: str) -> tuple[str, str]:
    """Return (token, "") or ("", reason) for an FCM registration token."""
    if not value:
        return "", "missing: no device token"
    if not _DEVICE_TOKEN.match(value):
        return "", (
            f"invalid: device token of {len(value)} characters is not a plausible FCM token "
            "(32 or more of A-Z a-z 0-9 _ : . -)"
        )
    return value, ""
