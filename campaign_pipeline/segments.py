"""Reading and validating a customer-segment CSV.

A file-level problem (missing, empty, not UTF-8, a required column absent) raises
:class:`InputError` so that nothing is sent. A row-level problem quarantines the row with
its line number and reason. A bad contact field keeps the customer but removes them from
every channel that sends to that column, with the reason kept beside it in
``<column>_error`` (:func:`error_column`). The contact checks are one table by column
(:func:`contact_checks`): this module knows columns, never channels.

:func:`load` is built for files of a million rows: pyarrow reads the file, the row checks are
column operations, and each distinct email address and phone number is validated once, by two
processes when there are many. :func:`load_one_by_one` is the plain reference it must match
exactly: the csv module and one value at a time. Both share the header, row and value checks.
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import io
import multiprocessing
import os
import re
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache, partial

import numpy as np
import pandas as pd
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
from email_validator import EmailNotValidError, validate_email

from .exceptions import PermanentError

REQUIRED_COLUMNS = ("customer_id", "segment", "email", "phone", "device_token")
REJECTED_COLUMNS = ("row", "reason", "detail", "customer_id", "segment", "raw")

# The module holding validate_email (the package's own validate_email name is the function).
_EMAIL_VALIDATOR = importlib.import_module("email_validator.validate_email")
# FCM registration tokens are long URL-safe strings (about 150-200 characters today).
_DEVICE_TOKEN = re.compile(r"[A-Za-z0-9_:.\-]{32,4096}")  # the whole value (fullmatch)

# More distinct contact values than this are validated by WORKERS processes, each taking
# CHUNK values at a time; fewer are faster inline than the pickling is worth.
PARALLEL_MIN_VALUES = 20_000
WORKERS = 2
CHUNK = 20_000
# The processes are started before the file is read (see _pool), so the choice is made on the
# file size: a row with the five required columns filled in is hardly ever shorter than this.
_MIN_ROW_BYTES = 32
# Exactly the characters str.strip() removes (tests/test_segments.py checks it), so that
# pyarrow's utf8_trim gives the same values as the csv path.
_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_BATCH = 65_536
# A field longer than this (the csv module's default limit) rejects its row. The file is read
# with a far higher limit so that such a field costs its row only, not the whole file.
MAX_FIELD = 131_072
_READ_LIMIT = 1 << 30
# Control characters a value may not hold (tab, newline and carriage return are text). At the
# edges of a value those that are whitespace are stripped like spaces.
_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
_CONTROL_CHAR = re.compile(_CONTROL)
_LETTER = re.compile(r"[^\W\d_]")
# Shown of a rejected row's raw text at most (a row may hold a field of megabytes).
MAX_RAW = 2_000

# A contact check takes a stripped value and returns (normalised value, "") or ("", reason).
Check = Callable[[str], tuple[str, str]]


class InputError(PermanentError, ValueError):
    """The customer file cannot be used at all; the message names the file and the problem."""


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
        return {
            "records_read": self.records_read,
            "valid": len(self.customers),
            "rejected": len(self.rejected),
            "rejected_by_reason": _counts(self.rejected["reason"]),
            "contact_issues": contact_issues,
            "segments": _counts(self.customers["segment"]),
        }


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


# File level: shared by both loaders.


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
    required = _required(checks)
    with _input_errors(path), _pool(path) as pool:
        table = _read_with_pyarrow(path, required) or _read_with_csv(path, required)
        checked = _check_rows(table, folded)
        del table  # free the raw cells before the contact values are checked
        return _check_values(checked, checks, pool)


def load_one_by_one(
    path: str,
    segments: list[str],
    default_region: str,
    accept_vanity: bool = False,
    checks: Mapping[str, Check] | None = None,
) -> Segments:
    """Read and validate *path* one row and one value at a time: the reference for :func:`load`.

    This is the original algorithm (csv module, no cache, no processes). It is kept to check
    that :func:`load` gives identical results.
    """
    folded = [s.casefold() for s in segments]
    if checks is None:
        checks = contact_checks(default_region, accept_vanity)
    with _input_errors(path), _reading(path) as reader:
        columns = _header_columns(next(reader, None), path, _required(checks))
        customers: list[dict[str, str]] = []
        rejected: list[dict[str, object]] = []
        first_row: dict[str, int] = {}
        records_read = wider = 0
        for row, record, lines in _records(reader):
            records_read += 1
            wider += len(record) > len(columns)
            problem = _row_problem(record, columns, folded, first_row, lines)
            if problem:
                rejected.append(_rejected(row, record, columns, *problem))
                continue
            customer = _customer(record, columns, checks, row)
            first_row[customer["customer_id"]] = row
            customers.append(customer)
        _check_width(columns, wider, records_read, path)
    output = _output_columns(columns, checks)
    frame = _frame({name: [c[name] for c in customers] for name in output})
    return Segments(frame, _rejected_frame(rejected), output, records_read, list(checks))


def file_digest(path: str) -> str:
    """The SHA-256 of the file at *path*: what tells an edited customer file from the one a
    run loaded. Kept per (size, mtime, inode) so that one luigi process reads the file once.
    Raises :class:`InputError` when the file cannot be read."""
    with _input_errors(path):
        stat = os.stat(path)
        return _digest((path, stat.st_size, stat.st_mtime_ns, stat.st_ino))


@lru_cache(maxsize=64)
def _digest(key: tuple[str, int, int, int]) -> str:
    """The SHA-256 of the file named by *key* (path, size, mtime, inode): the cache key, so
    that a file changed since is read again."""
    digest = hashlib.sha256()
    with open(key[0], "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def _input_errors(path: str) -> Iterator[None]:
    """Turn the ways a file cannot be read into an :class:`InputError` naming the file."""
    try:
        yield
    except FileNotFoundError:
        raise InputError(f"customer file {path}: no such file") from None
    except UnicodeDecodeError:
        raise InputError(
            f"customer file {path}: not valid UTF-8 (byte {_bad_byte(path)} of the file "
            "cannot be decoded); save it as UTF-8"
        ) from None
    except csv.Error as exc:
        raise InputError(f"customer file {path}: unreadable CSV: {exc}") from None
    except IsADirectoryError:
        raise InputError(f"customer file {path}: is a folder, not a file") from None
    except PermissionError:
        raise InputError(
            f"customer file {path}: no permission to read it; give the user running the "
            "campaign read access"
        ) from None
    except NotADirectoryError:
        raise InputError(f"customer file {path}: a folder in the path is a file") from None
    except OSError as exc:
        raise InputError(f"customer file {path}: cannot be read: {exc.strerror or exc}") from None


def _bad_byte(path: str) -> int:
    """The offset of the first byte of *path* that is not UTF-8, counting a BOM (the offset
    a decoder reports is relative to the BOM, or to the chunk a text file was reading)."""
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start
    return 0


@contextmanager
def _reading(path: str) -> Iterator:
    """A csv reader of *path* that takes fields of any length (MAX_FIELD is a row check)."""
    limit = csv.field_size_limit(_READ_LIMIT)
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            yield csv.reader(handle)
    finally:
        csv.field_size_limit(limit)


def _header_columns(
    header: list[str] | None, path: str, required: Sequence[str] = REQUIRED_COLUMNS
) -> list[str]:
    if header is None or not any(h.strip() for h in header):
        raise InputError(f"customer file {path}: the file is empty (no header row)")
    columns = [h.strip().casefold() for h in header]
    seen: dict[str, str] = {}
    for name, column in zip(header, columns, strict=True):
        key = "".join(column.split())
        if key and key in seen:
            raise InputError(
                f"customer file {path}: columns {seen[key]!r} and {name!r} are the same name "
                "but for case or spacing; rename or remove one of them"
            )
        seen.setdefault(key, name)
    missing = [c for c in required if c not in columns]
    if missing:
        raise InputError(
            f"customer file {path}: missing required column(s) {', '.join(missing)} "
            f"(found: {', '.join(columns)})"
        )
    return columns


def _records(reader) -> Iterator[tuple[int, list[str], tuple[int, int, int]]]:
    """Yield (row number, record, (row, first line, last line)) for each non-blank record.

    The row number is what a spreadsheet shows: the header is row 1, each record one row
    even when a quoted field spans lines, blank lines skipped but counted. The lines are
    those of the file that the record spans.
    """
    row, line = 1, reader.line_num
    for record in reader:
        row, first, line = row + 1, line + 1, reader.line_num
        if any(cell.strip() for cell in record):
            yield row, record, (row, first, line)


def _check_width(columns: list[str], wider: int, records: int, path: str) -> None:
    """Most rows having more fields than the header means the header lacks a name."""
    if wider and wider * 2 > records:
        raise InputError(
            f"customer file {path}: the header has {len(columns)} columns "
            f"({', '.join(columns)}) but {wider:,} of {records:,} rows have more fields; "
            "add the missing column name(s) to the header row"
        )


def _required(checks: Mapping[str, Check]) -> tuple[str, ...]:
    """The required columns and the checked ones (a table may check a column of its own)."""
    return tuple(dict.fromkeys([*REQUIRED_COLUMNS, *checks]))


def _output_columns(columns: list[str], checks: Mapping[str, Check]) -> list[str]:
    required = _required(checks)
    extras = [c for c in dict.fromkeys(columns) if c and c not in required]
    return ["row", *required, *map(error_column, checks), *extras]


def _frame(columns: dict) -> pd.DataFrame:
    """The customers frame: every column a pandas string column (from lists or arrow arrays)."""
    return pd.DataFrame(
        {name: pd.array(values, dtype="string") for name, values in columns.items()}
    )


def _rejected_frame(rejected: list[dict[str, object]]) -> pd.DataFrame:
    frame = pd.DataFrame(rejected, columns=list(REJECTED_COLUMNS))
    types = {name: "string" for name in REJECTED_COLUMNS}
    return frame.astype({**types, "row": "int64"})


# Row level: the one-by-one checks, also used by load() for the few rows it rejects.


def _row_problem(
    record: list[str],
    columns: list[str],
    segments: list[str],
    first_row: dict,
    lines: tuple[int, int, int],
) -> tuple[str, str] | None:
    """The reason and detail for rejecting a record, or None; *lines* as _records gives."""
    row, first, last = lines
    if last > first and _unbalanced(record, columns):
        return "unbalanced_quote", (
            f"a quote is unbalanced: the quoted field from row {row} runs over lines {first} "
            f"to {last} of the file, taking them into this one row; close or remove the quote"
        )
    if len(record) != len(columns):
        return "malformed_row", f"expected {len(columns)} fields, found {len(record)}"
    for name, cell in zip(columns, record, strict=True):
        if len(cell) > MAX_FIELD:
            shown = name or "unnamed"
            return "field_too_large", (
                f"field {shown} has {len(cell):,} characters; at most {MAX_FIELD:,} are read"
            )
    values = _values(record, columns)
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


def _unbalanced(record: list[str], columns: list[str]) -> bool:
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


def _values(record: list[str], columns: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, cell in zip(columns, record, strict=False):
        values.setdefault(name, cell.strip())  # the first of two same-named columns wins
    return values


def _rejected(row: int, record: list[str], columns: list[str], reason: str, detail: str) -> dict:
    values = _values(record, columns) if len(record) == len(columns) else {}
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


def _customer(
    record: list[str], columns: list[str], checks: Mapping[str, Check], row: int
) -> dict[str, str]:
    customer = _values(record, columns)
    customer["segment"] = customer["segment"].casefold()
    customer["row"] = str(row)
    for column, check in checks.items():
        customer[column], customer[error_column(column)] = check(customer[column])
    return customer


# Value level: shared by both loaders.


def contact_checks(default_region: str, accept_vanity: bool = False) -> dict[str, Check]:
    """The table of contact checks by column, phone numbers read with these settings.

    A channel names the column it sends to (``Provider.contact_field``): a new channel on one
    of these columns needs nothing here, one on a new column adds its check to this table.
    Many values are checked in worker processes, so a check must pickle: a module-level
    function, or a partial of one.
    """
    return {
        "email": check_email,
        "phone": partial(check_phone, region=default_region, accept_vanity=accept_vanity),
        "device_token": check_device_token,
    }


def error_column(column: str) -> str:
    """The customers column that holds why *column*'s value is unusable ("" when usable)."""
    return f"{column}_error"


def unchanged_where(
    test: Callable[[pa.ChunkedArray], pa.ChunkedArray],
) -> Callable[[Check], Check]:
    """Declare that a check passes the values *test* selects unchanged and without a reason.

    *test* takes a whole arrow column and returns a boolean mask; :func:`load` calls the check
    only for the other values, which keeps a column of mostly distinct values (device tokens)
    out of the one-value-at-a-time path.
    """

    def declare(check: Check) -> Check:
        check.unchanged_where = test  # type: ignore[attr-defined]
        return check

    return declare


def check_email(value: str) -> tuple[str, str]:
    """Return (normalised address, "") or ("", reason)."""
    if not value:
        return "", "missing: no email address"
    try:
        return validate_email(value, check_deliverability=False).normalized, ""
    except EmailNotValidError as exc:
        return "", f"invalid: email {value!r}: {exc}"


def check_phone(value: str, region: str, accept_vanity: bool = False) -> tuple[str, str]:
    """Return (E.164 number, "") or ("", reason); numbers without + use *region*.

    phonenumbers reads letters as a keypad's digits and keeps an extension apart: a typo
    (``212555O1OO``) would text a stranger and ``ext. 12`` the main line, so both make the
    number unusable for SMS, letters unless *accept_vanity*.
    """
    if not value:
        return "", "missing: no phone number"
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException as exc:
        return "", f"invalid: phone {value!r}: {exc}"
    if number.extension:
        return "", (
            f"invalid: phone {value!r} has an extension ({number.extension}); a text message "
            "cannot reach an extension"
        )
    if not accept_vanity and _LETTER.search(value):
        return "", (
            f"invalid: phone {value!r} contains letters; fix the number, or set [campaign] "
            "accept_vanity_numbers = true for numbers such as 1-800-FLOWERS"
        )
    if not phonenumbers.is_valid_number(number):
        return "", f"invalid: phone {value!r} is not a valid number (default region {region})"
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), ""


def _plausible_tokens(tokens: pa.ChunkedArray) -> pa.ChunkedArray:
    """Which tokens check_device_token() passes: those ``_DEVICE_TOKEN`` matches whole.

    That is the values of 32 to 4096 characters from its class. RE2 takes no repetition
    count above 1000, so the length is checked apart.
    """
    length = pc.utf8_length(tokens)
    return pc.and_(
        pc.match_substring_regex(tokens, r"^[A-Za-z0-9_:.\-]*$"),
        pc.and_(pc.greater_equal(length, 32), pc.less_equal(length, 4096)),
    )


@unchanged_where(_plausible_tokens)
def check_device_token(value: str) -> tuple[str, str]:
    """Return (token, "") or ("", reason) for an FCM registration token."""
    if not value:
        return "", "missing: no device token"
    if not _DEVICE_TOKEN.fullmatch(value):
        return "", (
            f"invalid: device token of {len(value)} characters is not a plausible FCM token "
            "(32 or more of A-Z a-z 0-9 _ : . -)"
        )
    return value, ""


def _check_many(check: Check, values: list[str]) -> tuple[list[str], list[str]]:
    """Apply *check* to each of *values*; return the normalised values and the reasons.

    The worker processes run this, so it takes and returns plain lists. Email domains are
    cached for the batch (exact, so harmless to a check that validates no email).
    """
    with _email_domains_cached():
        checked = [check(value) for value in values]
    return [c[0] for c in checked], [c[1] for c in checked]


@contextmanager
def _email_domains_cached() -> Iterator[None]:
    """Let email-validator check each domain once rather than once per address.

    The domain check is two thirds of validate_email's time, and a file has few domains. The
    cache is exact: validate_email_domain_name depends on its arguments only, validate_email
    only reads two keys of the dict it returns, and a domain that fails raises again each
    time (lru_cache keeps no exceptions). Without that function (another email-validator
    version) nothing is cached.
    """
    original = getattr(_EMAIL_VALIDATOR, "validate_email_domain_name", None)
    if original is None:
        yield
        return
    _EMAIL_VALIDATOR.validate_email_domain_name = lru_cache(maxsize=4096)(original)
    try:
        yield
    finally:
        _EMAIL_VALIDATOR.validate_email_domain_name = original


# load(), reading: pyarrow when that is sure to read the file as the csv module does.


@dataclass
class _Table:
    """The records of a file as columns of raw (unstripped) strings.

    ``cells`` holds one arrow string array per column of the file for the records with the
    right number of fields and none too large, ``rows`` their row numbers; ``malformed`` the
    other records as _records gives them.
    """

    columns: list[str]
    rows: np.ndarray
    cells: list[pa.ChunkedArray]
    malformed: list[tuple[int, list[str], tuple[int, int, int]]]


def _read_with_pyarrow(path: str, required: Sequence[str] = REQUIRED_COLUMNS) -> _Table | None:
    """Read *path* with pyarrow's CSV reader, or return None if it might read it differently.

    Without quotes, carriage returns, NULs and blank lines every line is one record, so the
    row number is the line number. A record with the wrong number of fields or a field longer
    than the csv module takes also sends the file to the csv path, which handles both.
    """
    with open(path, "rb") as handle:
        data = handle.read()
    if not data.isascii():
        data.decode("utf-8-sig")  # raises UnicodeDecodeError with the offset _input_errors shows
    start = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    if any(data.find(mark, start) >= 0 for mark in (b'"', b"\r", b"\x00", b"\n\n")):
        return None
    end = data.find(b"\n", start)
    end = len(data) if end < 0 else end
    header = next(csv.reader([data[start:end].decode("utf-8")]), None)
    columns = _header_columns(header, path, required)
    if data.startswith(b"\xef\xbb\xbf", end + 1):
        return None  # pyarrow would drop a byte-order mark at the start of the first record
    cells = _arrow_columns(pa.py_buffer(data).slice(min(end + 1, len(data))), len(columns))
    del data
    if cells is None or any(_longest(column) > MAX_FIELD for column in cells):
        return None
    return _Table(columns, np.arange(2, len(cells[0]) + 2), cells, [])


def _arrow_columns(body: pa.Buffer, count: int) -> list[pa.ChunkedArray] | None:
    """Parse *body* (the file after its header) into *count* string columns, or None."""
    if not body.size:
        return [pa.chunked_array([], pa.large_string()) for _ in range(count)]
    names = [f"f{i}" for i in range(count)]
    try:
        table = pacsv.read_csv(
            pa.BufferReader(body),
            read_options=pacsv.ReadOptions(column_names=names),
            parse_options=pacsv.ParseOptions(newlines_in_values=False, ignore_empty_lines=True),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(names, pa.large_string()), strings_can_be_null=False
            ),
        )
    except pa.ArrowInvalid:
        return None
    return table.columns


def _longest(column: pa.ChunkedArray) -> int:
    return pc.max(pc.binary_length(column)).as_py() or 0


def _read_with_csv(path: str, required: Sequence[str] = REQUIRED_COLUMNS) -> _Table:
    """Read *path* with the csv module, as load_one_by_one does, into arrow columns."""
    with _reading(path) as reader:
        columns = _header_columns(next(reader, None), path, required)
        rows: list[int] = []
        chunks: list[list[pa.Array]] = []
        malformed: list[tuple[int, list[str], tuple[int, int, int]]] = []
        batch: list[list[str]] = []
        wider = 0
        for row, record, lines in _records(reader):
            odd = lines[2] > lines[1] and _unbalanced(record, columns)
            if odd or len(record) != len(columns) or max(map(len, record)) > MAX_FIELD:
                wider += len(record) > len(columns)
                malformed.append((row, record, lines))
                continue
            rows.append(row)
            batch.append(record)
            if len(batch) == _BATCH:
                chunks.append(_transpose(batch, len(columns)))
                batch = []
        chunks.append(_transpose(batch, len(columns)))
    _check_width(columns, wider, len(rows) + len(malformed), path)
    cells = [
        pa.chunked_array([c[i] for c in chunks], pa.large_string()) for i in range(len(columns))
    ]
    return _Table(columns, np.array(rows, dtype=np.int64), cells, malformed)


def _transpose(records: list[list[str]], count: int) -> list[pa.Array]:
    if not records:
        return [pa.array([], pa.large_string()) for _ in range(count)]
    return [pa.array(column, pa.large_string()) for column in zip(*records, strict=True)]


# load(), row checks: load_one_by_one's checks on whole columns.


@dataclass
class _Rows:
    """The records that passed the row checks, and the rejected ones."""

    columns: list[str]
    rows: np.ndarray
    customers: dict[str, pa.ChunkedArray]
    rejected: list[dict]
    records_read: int


def _check_rows(table: _Table, segments: list[str]) -> _Rows:
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
    return _Rows(table.columns, rows[good], customers, rejected, records_read)


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


def _distinct(values: pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
    """The distinct values, and for each value its index among them."""
    encoded = pc.dictionary_encode(values.combine_chunks())  # one dictionary for all chunks
    return encoded.dictionary, encoded.indices


def _casefold(segments: pa.ChunkedArray) -> pa.ChunkedArray:
    """str.casefold() of each value, computed once per distinct value."""
    distinct, indices = _distinct(segments)
    folded = pa.array([s.casefold() for s in distinct.to_pylist()], pa.large_string())
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
    table: _Table,
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
        [*((r, rec, (r, r, r)) for r, rec in zip(rows[bad].tolist(), records, strict=True))]
        + table.malformed,
        key=lambda f: f[0],
    )
    rejected = []
    for row, record, lines in found:
        problem = _row_problem(record, table.columns, segments, first_row, lines)
        rejected.append(_rejected(row, record, table.columns, *problem))
    return rejected


# load(), value checks: each distinct value once, in worker processes when there are many.


def _check_values(
    checked: _Rows, checks: Mapping[str, Check], pool: ProcessPoolExecutor | None
) -> Segments:
    """Normalise each checked column of the customers, with the reason beside a bad value."""
    columns = dict(checked.customers)
    columns["row"] = pc.cast(pa.array(checked.rows, pa.int64()), pa.large_string())
    by_value = {}
    for name, check in checks.items():
        test = getattr(check, "unchanged_where", None)
        if test is None:
            by_value[name] = columns[name]
        else:
            columns[name], columns[error_column(name)] = _check_others(columns[name], check, test)
    for name, (values, errors) in _check_distinct(by_value, checks, pool).items():
        columns[name], columns[error_column(name)] = values, errors
    output = _output_columns(checked.columns, checks)
    frame = _frame({name: columns[name] for name in output})
    return Segments(
        frame, _rejected_frame(checked.rejected), output, checked.records_read, list(checks)
    )


def _check_others(
    values: pa.ChunkedArray, check: Check, test: Callable[[pa.ChunkedArray], pa.ChunkedArray]
) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """*check* on a whole column, called only for the values *test* does not pass as they are."""
    passed = test(values)
    others = pc.invert(passed)
    results = [check(value) for value in values.filter(others).to_pylist()]
    if isinstance(others, pa.ChunkedArray):
        others = others.combine_chunks()  # replace_with_mask takes a plain mask
    empty = pa.repeat(pa.scalar("", pa.large_string()), len(values))
    normalised, reasons = (
        pc.replace_with_mask(empty, others, pa.array([r[i] for r in results], pa.large_string()))
        for i in (0, 1)
    )
    return pc.if_else(passed, values, normalised), reasons


def _check_distinct(
    fields: dict[str, pa.ChunkedArray],
    checks: Mapping[str, Check],
    pool: ProcessPoolExecutor | None,
) -> dict[str, tuple[pa.ChunkedArray, pa.ChunkedArray]]:
    """Check each distinct value of each field once; in the pool if there are many."""
    distinct = {name: _distinct(values) for name, values in fields.items()}
    values = {name: d[0] for name, d in distinct.items()}
    if pool is not None and sum(len(v) for v in values.values()) > PARALLEL_MIN_VALUES:
        results = _check_in_pool(pool, values, checks)
    else:
        results = {name: _check_chunk(checks[name], v) for name, v in values.items()}
    return {
        name: tuple(result.take(distinct[name][1]) for result in results[name]) for name in fields
    }


def _check_chunk(check: Check, values: pa.Array) -> tuple[pa.Array, pa.Array]:
    normalised, errors = _check_many(check, values.to_pylist())
    return pa.array(normalised, pa.large_string()), pa.array(errors, pa.large_string())


def _check_in_pool(
    pool: ProcessPoolExecutor, fields: dict[str, pa.Array], checks: Mapping[str, Check]
) -> dict[str, tuple[pa.ChunkedArray, pa.ChunkedArray]]:
    """Check the values in chunks of CHUNK, a few chunks queued at a time.

    Bounding the queue keeps only those chunks' strings in this process, and the results are
    turned into arrow arrays as they arrive.
    """
    parts: dict[str, list[tuple[pa.Array, pa.Array]]] = {name: [] for name in fields}
    pending: deque = deque()
    for name, values in fields.items():
        for start in range(0, len(values), CHUNK):
            if len(pending) >= 2 * WORKERS:
                _collect(pending.popleft(), parts)
            chunk = values.slice(start, CHUNK).to_pylist()
            pending.append((name, pool.submit(_check_many, checks[name], chunk)))
    while pending:
        _collect(pending.popleft(), parts)
    return {
        name: tuple(pa.chunked_array([p[i] for p in done], pa.large_string()) for i in (0, 1))
        for name, done in parts.items()
    }


def _collect(item: tuple[str, Future], parts: dict[str, list]) -> None:
    name, future = item
    normalised, errors = future.result()
    parts[name].append(
        (pa.array(normalised, pa.large_string()), pa.array(errors, pa.large_string()))
    )


@contextmanager
def _pool(path: str) -> Iterator[ProcessPoolExecutor | None]:
    """Start the worker processes if the file may hold enough values to need them.

    They are forked before the file is read: a fork gives the workers this process's memory
    at that moment, so forking later would make them look as big as the loaded file.
    """
    if os.path.getsize(path) < PARALLEL_MIN_VALUES * _MIN_ROW_BYTES:
        yield None
        return
    check_phone("+12125550100", "US")  # load the metadata once, before the fork
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(WORKERS, mp_context=context) as pool:
        pool.submit(int).result()  # with "fork", the first task starts every worker
        yield pool
