"""CSV output that is safe to open in a spreadsheet.

Values come from customer files and provider answers, so a cell such as ``=HYPERLINK(...)``
would run as a formula in Excel or Sheets. Such cells are prefixed with ``'`` (OWASP's
advice). A plain E.164 phone number is left alone: it cannot hold a formula, and data
engineers read these files by program.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import IO

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")


def safe_cell(value: object) -> str:
    """Return *value* as text that a spreadsheet shows rather than evaluates."""
    text = "" if value is None else str(value)
    if text.startswith(_FORMULA_START) and not _E164.match(text):
        return "'" + text
    return text


def original_cell(text: str) -> str:
    """The value :func:`safe_cell` wrote as *text* (for a program reading the file back)."""
    if text.startswith("'") and text[1:].startswith(_FORMULA_START):
        return text[1:]
    return text


def write_rows(
    handle: IO[str], columns: Sequence[str], rows: Iterable[Mapping[str, object]]
) -> int:
    """Write a header and *rows* (mappings keyed by column) to *handle*; return the row count."""
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(columns)
    count = 0
    for row in rows:
        writer.writerow([safe_cell(row.get(column)) for column in columns])
        count += 1
    return count
