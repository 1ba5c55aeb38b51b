"""The row checks: which records of a customer file are customers, and why the others are not.

The one-by-one checks (:func:`row_problem`) judge one record; :func:`check_rows` gives the
same verdicts on whole arrow columns for load(), and asks :func:`row_problem` for the reason
and detail of only the few records it rejects.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from .reading import Table

REJECTED_COLUMNS = ("row", "reason", "detail", "customer_id", "segment", "raw")

# Exactly the characters str.strip() removes (tests/test_segments.py checks it), so that
# pyarrow's utf8_trim gives the same values as the csv path.
_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
# A field longer than this (the csv module's default limit) rejects its row.
MAX_FIELD = 131_072
# Control characters a value may not hold (tab, newline and carriage return are text). At the
# edges of a value those that are whitespace are stripped like spaces.
_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
_CONTROL_CHAR = re.compile(_CONTROL)
# Shown of a rejected row's raw text at most (a row may hold a field of megabytes).
MAX_RAW = 2_000


# Row level: the one-by-one checks, also used by load() for the few rows it rejects.


class Span(NamedTuple):
    """Where a record stands: its row number, the first and last lines of the file it
    spans, and what reading found wrong with its quotes (the detail of an
    ``unbalanced_quote``: the record is then its first line alone), else ""."""

    row: int
    first: int
    last: int
    quote: str = ""


def row_problem(
    record: list[str],
    columns: list[str],
    segments: list[str],
    first_row: dict,
    lines: Span,
) -> tuple[str, str] | None:
    """The reason and detail for rejecting a record, or None; *lines* as records gives."""
    if lines.quote:
        return "unbalanced_quote", lines.quote
    if len(record) != len(columns):
        return "malformed_row", f"expected {len(columns)} fields, found {len(record)}"
    for name, cell in zip(columns, record, strict=True):
        if len(cell) > MAX_FIELD:
            shown = name or "unnamed"
            return "field_too_large", (
                f"field {shown} has {len(cell):,} characters; at most {MAX_FIELD:,} are read"
            )
    values = row_values(record, columns)
    for name, cell in zip(columns, record, strict=True):
        if found := _CONTROL_CHAR.search(cell.strip()):
            return "control_character", (
                f"field {name or 'unnamed'} contains control character "
                f"U+{ord(found.group()):04X} at position {found.start() + 1}"
            )
    customer_id, segment = values["customer_id"], values["segment"].casefold()
    if not customer_id:
        return "missing_customer_id", "customer_id is empty"
    if segment not in segments:
        shown = repr(values["segment"]) if values["segment"] else "empty"
        return "unknown_segment", f"segment {shown} is not one of {', '.join(segments)}"
    if customer_id in first_row:
        return "duplicate_customer_id", f"customer_id already seen on row {first_row[customer_id]}"
    return None


def unbalanced(record: list[str], columns: list[str]) -> bool:
    """Whether a record spanning lines looks like a stray quote swallowing the rows after it.

    A quoted field may hold line breaks, so this is a judgement: the record has the wrong
    number of fields, or a field's first line holds all the separators the rest of its row
    needs (the quote took the rest of its own row in), or a later line of the field holds a
    row's worth of commas.
    """
    if len(record) != len(columns):
        return True
    commas = len(columns) - 1
    for index, cell in enumerate(record):
        if "\n" not in cell:
            continue
        first, *others = cell.split("\n")
        if 0 < commas - index <= first.count(","):
            return True
        if any(line.count(",") >= commas for line in others):
            return True
    return False


def row_values(record: list[str], columns: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, cell in zip(columns, record, strict=False):
        values.setdefault(name, cell.strip())  # the first of two same-named columns wins
    return values


def rejected_row(row: int, record: list[str], columns: list[str], reason: str, detail: str) -> dict:
    values = row_values(record, columns) if len(record) == len(columns) else {}
    raw = io.StringIO()
    csv.writer(raw, lineterminator="").writerow(record)
    text = raw.getvalue()
    if len(text) > MAX_RAW:
        text = f"{text[:MAX_RAW]}… ({len(text):,} characters)"
    return {
        "row": row,
        "reason": reason,
        "detail": detail,
        "customer_id": values.get("customer_id", ""),
        "segment": values.get("segment", ""),
        "raw": text,
    }


def rejected_frame(rejected: list[dict[str, object]]) -> pd.DataFrame:
    frame = pd.DataFrame(rejected, columns=list(REJECTED_COLUMNS))
    types = {name: "string" for name in REJECTED_COLUMNS}
    return frame.astype({**types, "row": "int64"})


# load(), row checks: the one-by-one checks on whole columns.


@dataclass
class Rows:
    """The records that passed the row checks, and the rejected ones."""

    columns: list[str]
    rows: np.ndarray
    customers: dict[str, pa.ChunkedArray]
    rejected: list[dict]
    records_read: int


def check_rows(table: Table, segments: list[str]) -> Rows:
    """Strip every cell, skip blank records, and reject what load_one_by_one rejects."""
    cells, rows = table.cells, table.rows
    stripped = [_strip(column) for column in cells]
    keep = np.asarray(_any([pc.not_equal(column, "") for column in stripped]), dtype=bool)
    if not keep.all():
        rows = rows[keep]
        cells = [column.filter(keep) for column in cells]
        stripped = [column.filter(keep) for column in stripped]
    first = {name: stripped[table.columns.index(name)] for name in dict.fromkeys(table.columns)}
    folded = _casefold(first["segment"])
    clean = pc.invert(_any([pc.match_substring_regex(column, _CONTROL) for column in stripped]))
    good, first_row = _duplicates(first["customer_id"], folded, rows, segments, clean)
    rejected = _rejected_rows(table, cells, rows, ~good, first_row, segments)
    customers = {name: column.filter(good) for name, column in first.items() if name}
    customers["segment"] = folded.filter(good)
    records_read = len(rows) + len(table.malformed)
    return Rows(table.columns, rows[good], customers, rejected, records_read)


def _strip(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """str.strip() of each cell; the column itself when nothing is stripped (saves a copy)."""
    stripped = pc.utf8_trim(column, _WHITESPACE)
    unchanged = (
        pc.sum(pc.binary_length(stripped)).as_py() == pc.sum(pc.binary_length(column)).as_py()
    )
    return column if unchanged else stripped


def _any(masks: list[pa.ChunkedArray]) -> pa.ChunkedArray:
    result = masks[0]
    for mask in masks[1:]:
        result = pc.or_(result, mask)
    return result


def distinct(values: pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
    """The distinct values, and for each value its index among them."""
    encoded = pc.dictionary_encode(values.combine_chunks())  # one dictionary for all chunks
    return encoded.dictionary, encoded.indices


def _casefold(segments: pa.ChunkedArray) -> pa.ChunkedArray:
    """str.casefold() of each value, computed once per distinct value."""
    uniques, indices = distinct(segments)
    folded = pa.array([s.casefold() for s in uniques.to_pylist()], pa.large_string())
    return folded.take(indices)


def _duplicates(
    ids: pa.ChunkedArray,
    segments: pa.ChunkedArray,
    rows: np.ndarray,
    allowed: list[str],
    clean: pa.ChunkedArray,
) -> tuple[np.ndarray, dict[str, int]]:
    """Which records are customers, and the first row of each id that comes again.

    A record with a control character, an empty id or an unknown segment is rejected before
    its id counts as seen, as in load_one_by_one; of the others, every record after the first
    with an id is a duplicate of that first one.
    """
    allowed_segment = pc.is_in(segments, value_set=pa.array(allowed, pa.large_string()))
    candidate = pc.and_(pc.and_(pc.not_equal(ids, ""), allowed_segment), clean)
    candidate = np.asarray(candidate, dtype=bool)
    candidate_ids = pd.Series(pd.array(ids.filter(candidate), dtype="string"))
    repeated = candidate_ids.duplicated(keep="first").to_numpy()
    good = candidate.copy()
    good[np.flatnonzero(candidate)[repeated]] = False
    again = set(candidate_ids[repeated].tolist())
    firsts = zip(
        candidate_ids[~repeated].tolist(), rows[candidate][~repeated].tolist(), strict=True
    )
    return good, {cid: row for cid, row in firsts if cid in again}


def _rejected_rows(
    table: Table,
    cells: list[pa.ChunkedArray],
    rows: np.ndarray,
    bad: np.ndarray,
    first_row: dict[str, int],
    segments: list[str],
) -> list[dict]:
    """The rejected records in file order, their reasons given by load_one_by_one's check."""
    records = [
        list(r) for r in zip(*(column.filter(bad).to_pylist() for column in cells), strict=True)
    ]
    # Records read by pyarrow each stand on one line, whose number is their row number.
    found = sorted(
        [*((r, rec, Span(r, r, r)) for r, rec in zip(rows[bad].tolist(), records, strict=True))]
        + table.malformed,
        key=lambda f: f[0],
    )
    rejected = []
    for row, record, lines in found:
        problem = row_problem(record, table.columns, segments, first_row, lines)
        rejected.append(rejected_row(row, record, table.columns, *problem))
    return rejected
