"""The contact checks: one table of checks by column, and the way load() applies it.

A check takes a stripped value and returns (normalised value, "") or ("", reason); the reason
goes to the column :func:`error_column` names beside the value. The table,
:func:`contact_checks`, is keyed by column, not by channel: a channel names the column it
sends to (``Provider.contact_field``), so a channel on an existing column changes nothing
here. load() checks each distinct value once, by worker processes when there are many.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import re
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from functools import lru_cache, partial

import idna
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
from email_validator import EmailNotValidError, validate_email

from .rows import distinct

# A contact check takes a stripped value and returns (normalised value, "") or ("", reason).
Check = Callable[[str], tuple[str, str]]

# The module holding validate_email (the package's own validate_email name is the function).
_EMAIL_VALIDATOR = importlib.import_module("email_validator.validate_email")
# FCM registration tokens are long URL-safe strings (about 150-200 characters today).
_DEVICE_TOKEN = re.compile(r"[A-Za-z0-9_:.\-]{32,4096}")  # the whole value (fullmatch)
_LETTER = re.compile(r"[^\W\d_]")

# More distinct contact values than this are validated by WORKERS processes, each taking
# CHUNK values at a time; fewer are faster inline than the pickling is worth.
PARALLEL_MIN_VALUES = 20_000
WORKERS = 2
CHUNK = 20_000
# The processes are started before the file is read (see worker_pool), so the choice is made
# on the file size: a row with the five required columns filled in is hardly ever shorter.
_MIN_ROW_BYTES = 32


# Value level: the table, and the checks one value at a time.


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

    *test* takes a whole arrow column and returns a boolean mask; load() calls the check
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


def ascii_address(address: str) -> str:
    """*address* with its domain in ASCII (IDNA, ``bob@xn--mller-kva.example``): the form
    SendGrid takes and keeps in its lists, whatever form the customer file had. The local
    part is left as it is; a domain IDNA cannot encode is left as it is too."""
    local, at, domain = address.rpartition("@")
    return f"{local}{at}{_ascii_domain(domain)}" if at else address


@lru_cache(maxsize=4096)
def _ascii_domain(domain: str) -> str:
    if domain.isascii():
        return domain.lower()
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError:  # validate_email refuses it: no such address reaches a request
        return domain.casefold()


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


# load(), value checks: each distinct value once, in worker processes when there are many.


def check_columns(
    columns: Mapping[str, pa.ChunkedArray],
    checks: Mapping[str, Check],
    pool: ProcessPoolExecutor | None,
) -> dict[str, pa.ChunkedArray]:
    """Apply the table *checks* to *columns*: each checked column normalised, and beside it
    its :func:`error_column` with the reason for each unusable value.

    A check that declares :func:`unchanged_where` runs only on the values its column test
    does not pass; the others run once per distinct value, in *pool* when there are many.
    """
    checked: dict[str, pa.ChunkedArray] = {}
    by_value: dict[str, pa.ChunkedArray] = {}
    for name, check in checks.items():
        test = getattr(check, "unchanged_where", None)
        if test is None:
            by_value[name] = columns[name]
        else:
            checked[name], checked[error_column(name)] = _check_others(columns[name], check, test)
    for name, (values, errors) in _check_distinct(by_value, checks, pool).items():
        checked[name], checked[error_column(name)] = values, errors
    return checked


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
    encoded = {name: distinct(values) for name, values in fields.items()}
    values = {name: e[0] for name, e in encoded.items()}
    if pool is not None and sum(len(v) for v in values.values()) > PARALLEL_MIN_VALUES:
        results = _check_in_pool(pool, values, checks)
    else:
        results = {name: _check_chunk(checks[name], v) for name, v in values.items()}
    return {
        name: tuple(result.take(encoded[name][1]) for result in results[name]) for name in fields
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


@contextmanager
def worker_pool(path: str) -> Iterator[ProcessPoolExecutor | None]:
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
