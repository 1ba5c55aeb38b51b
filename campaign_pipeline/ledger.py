"""The delivery ledger: one SQLite row per recipient of a channel, the record of truth.

A row is claimed (``in_flight``) before its request leaves and completed with the
provider's answer after it, so a run that dies at any point can be resumed: rows the
provider accepted are never sent again, and rows that were in flight become ``unknown``
rather than being guessed at.

WAL mode with ``synchronous=NORMAL`` keeps every committed claim through a ``kill -9``
(only an operating-system crash can lose the last commits) while a commit costs
microseconds, not an fsync: the claim sits just before the request, inside the rate
limit's timing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from .exceptions import LedgerBusyError

T = TypeVar("T")


class Status(StrEnum):
    """The state of a recipient's row; the value is what the ledger and the result file hold."""

    PENDING = "pending"  # to be sent (again): the provider certainly does not have it
    IN_FLIGHT = "in_flight"  # claimed: its request is leaving or waiting for the answer
    SENT = "sent"  # the provider took it
    FAILED = "failed"  # refused for this recipient, or the message could not be built
    UNKNOWN = "unknown"  # the request left and no answer came: it may have been delivered
    SKIPPED = "skipped"  # never sent: no usable contact, or no longer selected


# The states by their names alone, as the modules and tests use them.
PENDING = Status.PENDING
IN_FLIGHT = Status.IN_FLIGHT
SENT = Status.SENT
FAILED = Status.FAILED
UNKNOWN = Status.UNKNOWN
SKIPPED = Status.SKIPPED
IN_FLIGHT_AT_CRASH = (
    "the request was in flight when an earlier run stopped, so it may have been delivered; "
    "not resent (set resend_unknown to send it again)"
)
# A new ledger's recipient whom the consent store records a message of the same campaign,
# date and channel to: the ledger of an earlier run was lost (deleted, another folder).
MESSAGED_BEFORE = (
    "the ledger was made anew, but the consent store {store} records a message of this "
    "campaign and date to this contact, so it may have been delivered; not resent (set "
    "resend_unknown to send it again)"
)

# The columns of a result file, in order; all of them are ledger columns.
RESULT_COLUMNS = (
    "customer_id",
    "segment",
    "recipient",
    "status",
    "provider_message_id",
    "attempts",
    "error",
    "sent_at",
    "deferred_until",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY,
    customer_id TEXT NOT NULL UNIQUE,
    segment TEXT NOT NULL,
    recipient TEXT NOT NULL,
    status TEXT NOT NULL,
    provider_message_id TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    sent_at TEXT NOT NULL DEFAULT '',
    context TEXT NOT NULL DEFAULT '{}',
    deferred_until TEXT NOT NULL DEFAULT '',
    contact TEXT NOT NULL DEFAULT ''
)
"""
# deferred_until: when the row's quiet hours last ended (UTC ISO 8601), kept once it is sent
# so that the result file shows who waited; "" for a row never deferred.
# contact: the recipient as one message per person compares it (consent.match_key): a
# customer's contact and every other row with it are one index seek away.
_CONTACT_INDEX = "CREATE INDEX IF NOT EXISTS deliveries_by_contact ON deliveries (contact, seq)"
# The version of consent.match_key the rows' contacts were keyed by, in ``meta``: 2 keys an
# email address with its domain in ASCII. A ledger keyed otherwise (or written before the
# contact column) is keyed again before use (Ledger.key_contacts).
CONTACT_KEYS = "2"
_KEYS = "contact_keys"


# What a row that was never sent becomes when its customer is no longer selected.
NOT_IN_FILE = "no longer in the customer file"
NOT_TARGETED = "segment no longer targeted"

# The current file's customers, for Ledger.follow (a temporary table of this connection).
_CURRENT_SCHEMA = """
CREATE TEMP TABLE IF NOT EXISTS current (
    customer_id TEXT PRIMARY KEY,
    targeted INTEGER NOT NULL,
    segment TEXT NOT NULL,
    recipient TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT NOT NULL,
    context TEXT NOT NULL,
    contact TEXT NOT NULL
)
"""
_UNSENT = f"deliveries.status IN ('{PENDING}', '{SKIPPED}')"
# (name, statement) in order: the counts Ledger.follow returns are named after them.
_FOLLOW = (
    (
        "updated",
        "UPDATE deliveries SET segment = c.segment, recipient = c.recipient, status = c.status,"
        " error = c.error, context = c.context, contact = c.contact FROM current AS c"
        f" WHERE c.customer_id = deliveries.customer_id AND c.targeted AND {_UNSENT}"
        " AND (deliveries.segment, deliveries.recipient, deliveries.status, deliveries.error,"
        " deliveries.context) IS NOT (c.segment, c.recipient, c.status, c.error, c.context)",
    ),
    (
        "no_longer_targeted",
        f"UPDATE deliveries SET status = '{SKIPPED}', error = '{NOT_TARGETED}'"
        f" WHERE {_UNSENT} AND error != '{NOT_TARGETED}' AND customer_id IN"
        " (SELECT customer_id FROM current WHERE NOT targeted)",
    ),
    (
        "no_longer_in_file",
        f"UPDATE deliveries SET status = '{SKIPPED}', error = '{NOT_IN_FILE}'"
        f" WHERE {_UNSENT} AND error != '{NOT_IN_FILE}' AND customer_id NOT IN"
        " (SELECT customer_id FROM current)",
    ),
    (
        "added",
        "INSERT OR IGNORE INTO deliveries"
        " (customer_id, segment, recipient, status, error, context, contact)"
        " SELECT customer_id, segment, recipient, status, error, context, contact FROM current"
        " WHERE targeted ORDER BY rowid",
    ),
)


def _current_values(customer: dict) -> tuple:
    if not customer["targeted"]:  # its contact alone: a suppression of its id bars it
        return (customer["customer_id"], 0, "", "", "", "", "", customer.get("contact", ""))
    return (
        customer["customer_id"],
        1,
        customer["segment"],
        customer["recipient"],
        customer["status"],
        customer.get("error", ""),
        json.dumps(customer.get("context", {})),
        customer.get("contact", ""),
    )


def skip_kind(reason: str) -> str:
    """What kind of reason a skipped row has, for the summaries: the text before its first
    colon (``suppressed``, ``invalid``, ``missing``), ``duplicate contact``, or all of it."""
    if reason.startswith("duplicate contact of "):
        return "duplicate contact"
    head, colon, _ = reason.partition(":")
    return head if colon else reason


def describe_skips(kinds: dict[str, int]) -> str:
    """``3 suppressed, 1 duplicate contact``: the kinds of skip, most frequent first."""
    ordered = sorted(kinds.items(), key=lambda item: (-item[1], item[0]))
    return ", ".join(f"{n:,} {kind}" for kind, n in ordered if n)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class _NotAllPendingError(Exception):
    """Raised inside :meth:`Ledger.claim` to roll its transaction back."""


class Ledger:
    """A channel's ledger file, safe to share between the channel's sending threads.

    One process at a time: a second one would take the first one's requests in flight for
    those of a dead run.
    """

    def __init__(self, path: str):
        self.path = path
        self._owner = open(f"{path}.lock", "w")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(self._owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._owner.close()
            raise LedgerBusyError(f"{path} is in use by another run of this channel") from None
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(deliveries)")}
        if "deferred_until" not in columns:  # a ledger from before quiet hours
            self._db.execute(
                "ALTER TABLE deliveries ADD COLUMN deferred_until TEXT NOT NULL DEFAULT ''"
            )
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(deliveries)")}
        if "contact" not in columns:  # a ledger of an earlier version: keyed before use
            self._db.execute("ALTER TABLE deliveries ADD COLUMN contact TEXT NOT NULL DEFAULT ''")
        self._db.execute(_CONTACT_INDEX)

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self._owner.close()  # releases the lock

    @staticmethod
    def recorded_selection(path: str) -> str | None:
        """:meth:`selection` of the ledger at *path*, read without taking it (a running
        channel may hold it); None when there is no such ledger."""
        if not os.path.exists(path):
            return None
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            try:
                found = db.execute("SELECT value FROM meta WHERE key = 'selection'").fetchone()
            except sqlite3.OperationalError:  # a ledger from before selections were kept
                return None
        return found[0] if found else None

    def selection(self) -> str | None:
        """The inputs the rows were last made to follow (see :meth:`follow`), or None."""
        with self._lock:
            found = self._db.execute("SELECT value FROM meta WHERE key = 'selection'").fetchone()
        return found[0] if found else None

    def follow(
        self,
        customers: Iterable[dict],
        selection: str,
        decide: Callable[[sqlite3.Connection], None] | None = None,
        notes: dict[str, str] | None = None,
    ) -> dict[str, int]:
        """Make the rows not yet sent follow *customers*, every customer of the current file.

        A customer dict has ``customer_id`` and ``targeted``; a targeted one also has
        ``segment``, ``recipient``, ``status`` (pending, or skipped for an unusable contact),
        ``error``, ``context`` and ``contact`` (its :func:`~.consent.match_key`). Rows
        already sent, failed or unknown are history and keep what they were sent with. A
        pending or skipped row takes the current segment, contact and context, or is skipped
        with the reason it is no longer selected; a targeted customer new to the ledger is
        added. Returns the counts of each change.

        *decide*, given the connection, may skip rows of the temporary table ``current``
        (the customers in file order, its ``rowid``) before they are followed: the consent
        gate. *notes* are stored in the ledger's ``meta`` in the same transaction.
        """
        with self._lock, self._transaction():
            self._db.execute(_CURRENT_SCHEMA)
            self._db.execute("DELETE FROM current")
            self._db.executemany(
                # a repeated customer id keeps its first row; any other constraint fails
                # loudly (OR IGNORE would drop a row with a NULL without a word)
                "INSERT INTO current VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (customer_id) DO NOTHING",
                (_current_values(c) for c in customers),
            )
            if decide is not None:
                decide(self._db)
            changes = {name: self._changes(sql) for name, sql in _FOLLOW}
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('selection', ?)", (selection,))
            self._note(notes or {})
            self._db.execute("DELETE FROM current")
        return changes

    def amend(self, change: Callable[[sqlite3.Connection], T], notes: dict[str, str]) -> T:
        """Run *change* on the connection and store *notes* in ``meta``, in one transaction:
        an update of the rows that needs no new customer file (a suppression learned since)."""
        with self._lock, self._transaction():
            result = change(self._db)
            self._note(notes)
            return result

    def _note(self, notes: dict[str, str]) -> None:
        self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", notes.items())

    def key_contacts(self, key: Callable[[str], str]) -> bool:
        """Give the rows of a ledger keyed by another version of the contact key (or by none,
        written before the ``contact`` column) their contact, *key* of their recipient;
        nothing to do for any other ledger. True when a row's contact changed: decisions
        made on the old keys must be made again."""
        if self.noted(_KEYS) == CONTACT_KEYS:
            return False
        with self._lock, self._transaction():
            self._db.create_function("contact_key", 1, key, deterministic=True)
            changed = self._changes(
                "UPDATE deliveries SET contact = contact_key(recipient)"
                " WHERE recipient != '' AND contact IS NOT contact_key(recipient)"
            )
            self._note({_KEYS: CONTACT_KEYS})
        return changed > 0

    def _changes(self, sql: str) -> int:
        before = self._db.total_changes
        self._db.execute(sql)
        return self._db.total_changes - before

    def recover(self, resend_unknown: bool) -> int:
        """Mark rows left in flight by a dead run ``unknown``; return how many there were."""
        with self._lock:
            found = self._db.execute(
                "UPDATE deliveries SET status = ?, error = ? WHERE status = ?",
                (UNKNOWN, IN_FLIGHT_AT_CRASH, IN_FLIGHT),
            ).rowcount
            if resend_unknown:
                self._db.execute(
                    "UPDATE deliveries SET status = ? WHERE status = ?", (PENDING, UNKNOWN)
                )
            return found

    def pending(self, page: int = 1000) -> Iterator[dict]:
        """Yield pending rows in file order, for sending."""
        columns = ("customer_id", "segment", "recipient", "attempts", "context")
        for values in self._paged(columns, "status = ? AND", (PENDING,), page):
            row = dict(zip(columns, values, strict=True))
            row["context"] = json.loads(row["context"])
            yield row

    def claim(self, customer_ids: list[str]) -> bool:
        """Move pending rows in flight, all or none; False if any is not pending (never
        send them then)."""
        with self._lock:
            before = self._db.total_changes
            now = utc_now()
            try:
                with self._transaction():
                    self._db.executemany(
                        "UPDATE deliveries SET status = ?, attempts = attempts + 1, sent_at = ?"
                        " WHERE customer_id = ? AND status = ?",
                        [(IN_FLIGHT, now, cid, PENDING) for cid in customer_ids],
                    )
                    if self._db.total_changes - before != len(customer_ids):
                        raise _NotAllPendingError
            except _NotAllPendingError:
                return False
            return True

    def finish(
        self, customer_ids: list[str], status: Status, message_id: str = "", error: str = ""
    ) -> None:
        """Record the outcome of the request in flight for *customer_ids*.

        ``PENDING`` means the provider certainly did not take the message (a 429, a 5xx, a
        refused connection): it may be sent again.
        """
        status = Status(status)  # a typo fails here, not as a row no query finds
        with self._lock, self._transaction():
            self._db.executemany(
                "UPDATE deliveries SET status = ?, provider_message_id = ?, error = ?"
                " WHERE customer_id = ? AND status = ?",
                [(status, message_id, error, cid, IN_FLIGHT) for cid in customer_ids],
            )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """``BEGIN`` ... ``COMMIT``, rolled back if a statement (or the commit) fails, so that
        one error never leaves the shared connection inside an open transaction, where every
        later ``BEGIN`` would fail. The caller holds the lock."""
        self._db.execute("BEGIN")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # SQLite ends some failed transactions itself
                self._db.execute("ROLLBACK")
            raise

    def fail_pending(self, customer_id: str, error: str) -> None:
        """Fail a row that could not even be built (a template or body error); nothing was sent."""
        with self._lock:
            self._db.execute(
                "UPDATE deliveries SET status = ?, error = ?, sent_at = ?"
                " WHERE customer_id = ? AND status = ?",
                (FAILED, error, utc_now(), customer_id, PENDING),
            )

    def note(self, key: str, value: str) -> None:
        """Keep *value* under *key* in the ledger's meta table (an admission rule's state
        that must survive the process, e.g. the frequency cap's open reservations)."""
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def noted(self, key: str) -> str | None:
        """What :meth:`note`, :meth:`follow` or :meth:`amend` kept under *key*, or None."""
        with self._lock:
            found = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return found[0] if found else None

    def skip_pending(self, customer_ids: list[str], reason: str) -> int:
        """Skip pending rows with *reason* (an admission rule refused them, e.g. the
        frequency cap); return how many were pending."""
        with self._lock, self._transaction():
            before = self._db.total_changes
            self._db.executemany(
                "UPDATE deliveries SET status = ?, error = ? WHERE customer_id = ? AND status = ?",
                [(SKIPPED, reason, cid, PENDING) for cid in customer_ids],
            )
            return self._db.total_changes - before

    def defer(self, rows: list[tuple[str, str, str]]) -> None:
        """Leave pending rows pending until a moment: (customer_id, until as UTC ISO 8601,
        the reason shown in the error column) each."""
        with self._lock, self._transaction():
            self._db.executemany(
                "UPDATE deliveries SET deferred_until = ?, error = ?"
                " WHERE customer_id = ? AND status = ?",
                [(until, reason, cid, PENDING) for cid, until, reason in rows],
            )

    def deferred_due(self, now: str, prefix: str, page: int = 1000) -> Iterator[dict]:
        """Pending rows deferred (their error starts with *prefix*) until *now* or earlier,
        in the order of that moment, file order within one; as :meth:`pending` gives them."""
        columns = ("customer_id", "segment", "recipient", "attempts", "context")
        last: tuple[str, int] = ("", 0)
        while True:
            with self._lock:
                found = self._db.execute(
                    f"SELECT deferred_until, seq, {', '.join(columns)} FROM deliveries"
                    " WHERE status = ? AND substr(error, 1, ?) = ? AND deferred_until <= ?"
                    " AND (deferred_until, seq) > (?, ?) ORDER BY deferred_until, seq LIMIT ?",
                    (PENDING, len(prefix), prefix, now, *last, page),
                ).fetchall()
            if not found:
                return
            for values in found:
                row = dict(zip(columns, values[2:], strict=True))
                row["context"] = json.loads(row["context"])
                yield row
            last = (found[-1][0], found[-1][1])

    def waited(self) -> int:
        """How many rows were sent (or may have been: unknown) after quiet hours deferred them."""
        with self._lock:
            return self._db.execute(
                "SELECT COUNT(*) FROM deliveries WHERE deferred_until != '' AND status IN (?, ?)",
                (SENT, UNKNOWN),
            ).fetchone()[0]

    def counts(self) -> dict[Status, int]:
        """How many rows are in each state."""
        with self._lock:
            found = self._db.execute("SELECT status, COUNT(*) FROM deliveries GROUP BY status")
            return {Status(status): n for status, n in found}

    def skipped(self) -> dict[str, int]:
        """How many rows are skipped, by :func:`skip_kind` of their reason."""
        kinds: dict[str, int] = {}
        with self._lock:
            found = self._db.execute(
                "SELECT error, COUNT(*) FROM deliveries WHERE status = ? GROUP BY error", (SKIPPED,)
            ).fetchall()
        for reason, n in found:
            kinds[skip_kind(reason)] = kinds.get(skip_kind(reason), 0) + n
        return kinds

    def rows(self, page: int = 5000) -> Iterator[dict]:
        """Yield every row in file order, for the result file."""
        for values in self._paged(RESULT_COLUMNS, "", (), page):
            yield dict(zip(RESULT_COLUMNS, values, strict=True))

    def _paged(self, columns: tuple, where: str, params: tuple, page: int) -> Iterator[tuple]:
        # Pages by key rather than one open cursor, so that the sending threads can write
        # to the same connection while the rows are read.
        last = 0
        while True:
            with self._lock:
                rows = self._db.execute(
                    f"SELECT seq, {', '.join(columns)} FROM deliveries"
                    f" WHERE {where} seq > ? ORDER BY seq LIMIT ?",
                    (*params, last, page),
                ).fetchall()
            if not rows:
                return
            for row in rows:
                yield row[1:]
            last = rows[-1][0]
