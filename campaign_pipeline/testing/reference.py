"""The one-by-one reference loader that :func:`campaign_pipeline.segments.load` must match.

It reads the file with the csv module and checks one row and one value at a time, with
load()'s own header, row and contact checks but none of its column operations, caches or
worker processes. tests/test_segments.py and the benchmark compare load() against it; it is
kept out of the production path.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..segments import Check, Segments, contact_checks, error_column
from ..segments.loader import customers_frame, output_columns, required_columns
from ..segments.reading import check_width, header_columns, input_errors, open_csv, records
from ..segments.rows import rejected_frame, rejected_row, row_problem, row_values
from ..segments.timezones import OPTIONAL_CHECKS


def load_one_by_one(
    path: str,
    segments: list[str],
    default_region: str,
    accept_vanity: bool = False,
    checks: Mapping[str, Check] | None = None,
) -> Segments:
    """Read and validate *path* one row and one value at a time: the reference for load().

    This is the original algorithm (csv module, no cache, no processes). It is kept to check
    that :func:`~campaign_pipeline.segments.load` gives identical results.
    """
    folded = [s.casefold() for s in segments]
    if checks is None:
        checks = contact_checks(default_region, accept_vanity)
    with input_errors(path), open_csv(path) as reader:
        columns = header_columns(next(reader, None), path, required_columns(checks))
        customers: list[dict[str, str]] = []
        rejected: list[dict[str, object]] = []
        first_row: dict[str, int] = {}
        records_read = wider = 0
        for row, record, lines in records(reader, columns):
            records_read += 1
            wider += len(record) > len(columns)
            problem = row_problem(record, columns, folded, first_row, lines)
            if problem:
                rejected.append(rejected_row(row, record, columns, *problem))
                continue
            customer = _customer(record, columns, checks, row)
            first_row[customer["customer_id"]] = row
            customers.append(customer)
        check_width(columns, wider, records_read, path)
    output = output_columns(columns, checks)
    frame = customers_frame({name: [c[name] for c in customers] for name in output})
    return Segments(frame, rejected_frame(rejected), output, records_read, list(checks))


def _customer(
    record: list[str], columns: list[str], checks: Mapping[str, Check], row: int
) -> dict[str, str]:
    customer = row_values(record, columns)
    customer["segment"] = customer["segment"].casefold()
    customer["row"] = str(row)
    for column, check in checks.items():
        customer[column], customer[error_column(column)] = check(customer[column])
    for column, check in OPTIONAL_CHECKS.items():
        if column in customer:
            customer[column], customer[error_column(column)] = check(customer[column])
    return customer
