"""Reading a customer file: the file-level checks, and the fast reader of load().

A problem with the file as a whole (missing, empty, not UTF-8, a required column absent, a
header lacking a name) raises :class:`InputError`, so that nothing is sent. Reading gives the
records as they are (unstripped); the row checks in :mod:`.rows` judge them.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import TextIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ..exceptions import PermanentError
from .rows import MAX_FIELD, Span, unbalanced

REQUIRED_COLUMNS = ("customer_id", "segment", "email", "phone", "device_token")

_BATCH = 65_536
# The file is read with a far higher limit than MAX_FIELD, so that a field too large costs
# its row only (a row check), not the whole file.
_READ_LIMIT = 1 << 30


class InputError(PermanentError, ValueError):
    """The customer file cannot be used at all; the message names the file and the problem."""


# File level: shared by load() and the one-by-one reference loader.


def file_digest(path: str) -> str:
    """The SHA-256 of the file at *path*: what tells an edited customer file from the one a
    run loaded. Kept per (size, mtime, inode) so that one luigi process reads the file once.
    Raises :class:`InputError` when the file cannot be read."""
    with input_errors(path):
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
def input_errors(path: str) -> Iterator[None]:
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


class CsvReader:
    """``csv.reader`` of a file that can cut a record back to its first line and read the
    lines it took in again, as records of their own (see :func:`records`); ``line_num``
    counts the lines of the file read, those read again once."""

    def __init__(self, handle: TextIO, path: str):
        self.path = path
        self.line_num = 0
        self._handle = handle
        self._again: list[str] = []  # lines to read again, the next one last
        self._taken: list[str] = []  # the lines of the record read last
        self._reader = csv.reader(self._lines())

    def _lines(self) -> Iterator[str]:
        while True:
            line = self._again.pop() if self._again else next(self._handle, None)
            if line is None:
                return
            self._taken.append(line)
            yield line

    def __iter__(self) -> CsvReader:
        return self

    def __next__(self) -> list[str]:
        self._taken.clear()
        record = next(self._reader)
        self.line_num += len(self._taken)
        return record

    def cut(self) -> list[str]:
        """The record read last as its first line alone gives it (the field whose quote is
        open at the end of that line, its last, runs to the line's end); its other lines
        are read next."""
        first, *rest = self._taken
        self._again.extend(reversed(rest))
        self.line_num -= len(rest)
        self._reader = csv.reader(self._lines())  # at a record's end: a new one loses nothing
        return next(csv.reader([first.rstrip("\r\n")]), [""])


@contextmanager
def open_csv(path: str) -> Iterator[CsvReader]:
    """A csv reader of *path* that takes fields of any length (MAX_FIELD is a row check)."""
    limit = csv.field_size_limit(_READ_LIMIT)
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            yield CsvReader(handle, path)
    finally:
        csv.field_size_limit(limit)


def header_columns(
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


def records(reader: CsvReader, columns: list[str]) -> Iterator[tuple[int, list[str], Span]]:
    """Yield (row number, record, its :class:`Span`) for each non-blank record.

    The row number is what a spreadsheet shows: the header is row 1, each record one row
    even when a quoted field spans lines, blank lines skipped but counted. A record whose
    quote took in the lines after it (see :func:`unbalanced`) is its first line alone, its
    span saying so, and those lines are read on as records of their own: a stray quote
    costs its own row, never the customers after it.
    """
    row, line = 1, reader.line_num
    for record in reader:
        row, first = row + 1, line + 1
        quote = ""
        if reader.line_num > first and unbalanced(record, columns):
            record = reader.cut()
            field = len(record) - 1
            name = (columns[field] or "unnamed") if field < len(columns) else f"#{field + 1}"
            quote = (
                f"customer file {reader.path}, line {first}, field {name}: a quote opens and "
                "does not close on its line; this row is left out and the lines after it are "
                "read as rows of their own (close or remove the quote)"
            )
        line = reader.line_num
        if quote or any(cell.strip() for cell in record):
            yield row, record, Span(row, first, line, quote)


def check_width(columns: list[str], wider: int, records: int, path: str) -> None:
    """Most rows having more fields than the header means the header lacks a name."""
    if wider and wider * 2 > records:
        raise InputError(
            f"customer file {path}: the header has {len(columns)} columns "
            f"({', '.join(columns)}) but {wider:,} of {records:,} rows have more fields; "
            "add the missing column name(s) to the header row"
        )


# load(), reading: pyarrow when that is sure to read the file as the csv module does.


@dataclass
class Table:
    """The records of a file as columns of raw (unstripped) strings.

    ``cells`` holds one arrow string array per column of the file for the records with the
    right number of fields and none too large, ``rows`` their row numbers; ``malformed`` the
    other records as records gives them.
    """

    columns: list[str]
    rows: np.ndarray
    cells: list[pa.ChunkedArray]
    malformed: list[tuple[int, list[str], Span]]


def read_with_pyarrow(path: str, required: Sequence[str] = REQUIRED_COLUMNS) -> Table | None:
    """Read *path* with pyarrow's CSV reader, or return None if it might read it differently.

    Without quotes, carriage returns, NULs and blank lines every line is one record, so the
    row number is the line number. A record with the wrong number of fields or a field longer
    than the csv module takes also sends the file to the csv path, which handles both.
    """
    with open(path, "rb") as handle:
        data = handle.read()
    if not data.isascii():
        data.decode("utf-8-sig")  # raises UnicodeDecodeError with the offset input_errors shows
    start = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    if any(data.find(mark, start) >= 0 for mark in (b'"', b"\r", b"\x00", b"\n\n")):
        return None
    end = data.find(b"\n", start)
    end = len(data) if end < 0 else end
    header = next(csv.reader([data[start:end].decode("utf-8")]), None)
    columns = header_columns(header, path, required)
    if data.startswith(b"\xef\xbb\xbf", end + 1):
        return None  # pyarrow would drop a byte-order mark at the start of the first record
    cells = _arrow_columns(pa.py_buffer(data).slice(min(end + 1, len(data))), len(columns))
    del data
    if cells is None or any(_longest(column) > MAX_FIELD for column in cells):
        return None
    return Table(columns, np.arange(2, len(cells[0]) + 2), cells, [])


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


def read_with_csv(path: str, required: Sequence[str] = REQUIRED_COLUMNS) -> Table:
    """Read *path* with the csv module, as load_one_by_one does, into arrow columns."""
    with open_csv(path) as reader:
        columns = header_columns(next(reader, None), path, required)
        rows: list[int] = []
        chunks: list[list[pa.Array]] = []
        malformed: list[tuple[int, list[str], Span]] = []
        batch: list[list[str]] = []
        wider = 0
        for row, record, lines in records(reader, columns):
            if lines.quote or len(record) != len(columns) or max(map(len, record)) > MAX_FIELD:
                wider += len(record) > len(columns)
                malformed.append((row, record, lines))
                continue
            rows.append(row)
            batch.append(record)
            if len(batch) == _BATCH:
                chunks.append(_transpose(batch, len(columns)))
                batch = []
        chunks.append(_transpose(batch, len(columns)))
    check_width(columns, wider, len(rows) + len(malformed), path)
    cells = [
        pa.chunked_array([c[i] for c in chunks], pa.large_string()) for i in range(len(columns))
    ]
    return Table(columns, np.array(rows, dtype=np.int64), cells, malformed)


def _transpose(records: list[list[str]], count: int) -> list[pa.Array]:
    if not records:
        return [pa.array([], pa.large_string()) for _ in range(count)]
    return [pa.array(column, pa.large_string()) for column in zip(*records, strict=True)]
