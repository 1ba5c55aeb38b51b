"""load(): a customer file read, its rows checked, its contacts checked; and the result."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .contacts import Check, check_columns, contact_checks, error_column, worker_pool
from .reading import REQUIRED_COLUMNS, input_errors, read_with_csv, read_with_pyarrow
from .rows import check_rows, rejected_frame
from .timezones import OPTIONAL_CHECKS


@dataclass
class Segments:
    """The result of loading one customer file.

    ``customers`` has the columns ``columns`` (all strings, empty rather than missing), and
    ``rejected`` the columns :data:`REJECTED_COLUMNS` (``row`` an integer), both in file order.
    ``checked`` names the contact columns, each with its :func:`error_column` in ``customers``.
    """

    customers: pd.DataFrame
    rejected: pd.DataFrame
    columns: list[str]
    records_read: int = 0
    checked: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        contact_issues = {
            column: _reason_counts(self.customers[error_column(column)]) for column in self.checked
        }
        summary = {
            "records_read": self.records_read,
            "valid": len(self.customers),
            "rejected": len(self.rejected),
            "rejected_by_reason": _counts(self.rejected["reason"]),
            "contact_issues": contact_issues,
            "segments": _counts(self.customers["segment"]),
        }
        for column in OPTIONAL_CHECKS:  # e.g. timezone_issues, when the file has the column
            if error_column(column) in self.customers:
                errors = self.customers[error_column(column)]
                summary[f"{column}_issues"] = _reason_counts(errors)
        return summary


def _counts(values: pd.Series) -> dict[str, int]:
    """Count each value, keys in order of first appearance (as collections.Counter has them)."""
    codes, uniques = pd.factorize(values, sort=False)
    return dict(
        zip(uniques.tolist(), np.bincount(codes, minlength=len(uniques)).tolist(), strict=True)
    )


def _reason_counts(errors: pd.Series) -> dict[str, int]:
    """Count the non-empty error texts by the word before their first colon."""
    counts: dict[str, int] = {}
    for text, count in _counts(errors[errors != ""]).items():
        reason = text.split(":")[0]
        counts[reason] = counts.get(reason, 0) + count
    return counts


def load(
    path: str,
    segments: list[str],
    default_region: str,
    accept_vanity: bool = False,
    checks: Mapping[str, Check] | None = None,
) -> Segments:
    """Read and validate the customer file at *path*, fast enough for a million rows.

    *accept_vanity* lets phone numbers written with letters (1-800-FLOWERS) through.
    *checks* is the table of contact checks by column, :func:`contact_checks` by default;
    each of its columns is required.
    """
    folded = [s.casefold() for s in segments]
    if checks is None:
        checks = contact_checks(default_region, accept_vanity)
    required = required_columns(checks)
    with input_errors(path), worker_pool(path) as pool:
        table = read_with_pyarrow(path, required) or read_with_csv(path, required)
        checked = check_rows(table, folded)
        del table  # free the raw cells before the contact values are checked
        columns = {
            **checked.customers,
            "row": pc.cast(pa.array(checked.rows, pa.int64()), pa.large_string()),
        }
        columns.update(check_columns(columns, checks, pool))
        optional = {name: check for name, check in OPTIONAL_CHECKS.items() if name in columns}
        columns.update(check_columns(columns, optional, None))  # few distinct values
        output = output_columns(checked.columns, checks)
        frame = customers_frame({name: columns[name] for name in output})
        return Segments(
            frame, rejected_frame(checked.rejected), output, checked.records_read, list(checks)
        )


def required_columns(checks: Mapping[str, Check]) -> tuple[str, ...]:
    """The required columns and the checked ones (a table may check a column of its own)."""
    return tuple(dict.fromkeys([*REQUIRED_COLUMNS, *checks]))


def output_columns(columns: list[str], checks: Mapping[str, Check]) -> list[str]:
    """The customers columns: row, the required and checked ones, an error column for each
    checked one and for each optional checked column the file has (``timezone``), then the
    file's other named columns (*columns*, its header) in file order."""
    required = required_columns(checks)
    extras = [c for c in dict.fromkeys(columns) if c and c not in required]
    optional = [c for c in OPTIONAL_CHECKS if c in extras]
    return ["row", *required, *map(error_column, [*checks, *optional]), *extras]


def customers_frame(columns: dict) -> pd.DataFrame:
    """The customers frame: every column a pandas string column (from lists or arrow arrays)."""
    return pd.DataFrame(
        {name: pd.array(values, dtype="string") for name, values in columns.items()}
    )
