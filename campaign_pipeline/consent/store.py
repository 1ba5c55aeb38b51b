"""The consent store: what the pipeline learns from the providers and remembers.

One SQLite file (``[consent] store``) shared by every channel task and every campaign on the
machine, each in its own process: WAL mode lets them read while one writes, and each write
is one short transaction that waits (``busy_timeout``) rather than fails while another is
being committed.

Tables:

- ``suppressions``: one row per (channel, contact or customer id): what taught it
  (``source``: ``learned`` from a provider's answer, or ``import`` of a file), the date,
  the campaign and the provider's code. A contact is stored normalised and compared as
  :func:`~.suppressions.match_key` says.
- ``meta``: the schema version, for the migrations of later versions. The frequency cap
  will add ``messages (channel, contact, campaign, date, sent_at)``, one row per accepted
  message, indexed by (channel, contact, sent_at), in this same file.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import backoff

from .gate import CONTACT, CUSTOMER
from .suppressions import ALL, Entry

SCHEMA_VERSION = 1
LEARNED = "learned"
IMPORTED = "import"
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS suppressions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        channel TEXT NOT NULL,
        contact TEXT NOT NULL DEFAULT '',
        customer_id TEXT NOT NULL DEFAULT '',
        source TEXT NOT NULL,
        date TEXT NOT NULL,
        campaign TEXT NOT NULL DEFAULT '',
        code TEXT NOT NULL DEFAULT '',
        note TEXT NOT NULL DEFAULT '',
        UNIQUE (channel, contact, customer_id)
    )""",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
BUSY_MS = 30_000
_NAMED = re.compile(r"CREATE (?:TABLE|INDEX) IF NOT EXISTS (\w+)")


@dataclass(frozen=True)
class Stored:
    """A row of the store's ``suppressions`` table."""

    channel: str
    contact: str
    customer_id: str
    source: str
    date: str
    campaign: str
    code: str
    note: str

    def reason(self) -> str:
        """What a recipient skipped for this entry reads after ``suppressed:``."""
        if self.source == LEARNED:
            return f"learned {self.date} campaign {self.campaign} ({self.channel} {self.code})"
        return (
            f"imported {self.date} from {self.note}" if self.note else f"{self.source} {self.date}"
        )


_COLUMNS = "channel, contact, customer_id, source, date, campaign, code, note"


def today() -> str:
    return datetime.datetime.now(datetime.UTC).date().isoformat()


class ConsentStore:
    """The store at *path*, created (with its folder) on first use; safe to share between
    threads, and between processes through SQLite's locking."""

    def __init__(self, path: str):
        self.path = path
        if folder := os.path.dirname(path):
            os.makedirs(folder, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=BUSY_MS / 1000
        )
        self._db.execute(f"PRAGMA busy_timeout={BUSY_MS}")
        self._set_up()

    # Switching a new file to WAL takes an exclusive lock that SQLite may refuse at once
    # ("database is locked") rather than wait for, when several channel tasks open a new store
    # together: try again, within the busy timeout.
    @backoff.on_exception(
        backoff.expo,
        sqlite3.OperationalError,
        max_time=BUSY_MS / 1000,
        giveup=lambda exc: "locked" not in str(exc),
        max_value=0.5,
        logger=None,
    )
    def _set_up(self) -> None:
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        if self._has_schema():
            return  # no write lock just to open it: campaign-consent list never waits
        with self._transaction():
            for statement in _SCHEMA:
                self._db.execute(statement)
            self._db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )

    def _has_schema(self) -> bool:
        """Whether every table and index of the schema exists already (read only)."""
        wanted = {_NAMED.search(statement).group(1) for statement in _SCHEMA}
        found = {name for (name,) in self._db.execute("SELECT name FROM sqlite_master")}
        version = (
            "meta" in found
            and self._db.execute("SELECT 1 FROM meta WHERE key = 'schema_version'").fetchone()
        )
        return bool(version) and wanted <= found

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> ConsentStore:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        # BEGIN IMMEDIATE takes the write lock at once: two processes never both read,
        # then both fail to upgrade (SQLITE_BUSY without waiting)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def learn(self, channel: str, contact: str, campaign: str, code: str) -> bool:
        """Remember that the provider refused *contact* on *channel* for good; False when it
        was known already (the first lesson is kept)."""
        return (
            self.add([Entry(channel, contact=contact)], LEARNED, campaign=campaign, code=code) == 1
        )

    def add(
        self,
        entries: Iterable[Entry],
        source: str,
        campaign: str = "",
        code: str = "",
        date: str = "",
    ) -> int:
        """Store *entries* (an entry's ``source`` becomes its note); return how many were new."""
        date = date or today()
        rows = [
            (e.channel, e.contact, e.customer_id, source, date, campaign, code, e.source)
            for e in entries
        ]
        with self._lock, self._transaction():
            before = self._db.total_changes
            self._db.executemany(
                f"INSERT OR IGNORE INTO suppressions ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            return self._db.total_changes - before

    def remove(self, channel: str, contact: str = "", customer_id: str = "") -> int:
        """Forget the entries of *channel* for *contact* or *customer_id*; return how many."""
        with self._lock, self._transaction():
            return self._db.execute(
                "DELETE FROM suppressions WHERE channel = ? AND contact = ? AND customer_id = ?",
                (channel, contact, customer_id),
            ).rowcount

    def entries(self, channel: str | None = None) -> Iterator[Stored]:
        """Every entry (of *channel* and ``all`` when given), oldest first."""
        where, params = ("WHERE channel IN (?, ?)", (channel, ALL)) if channel else ("", ())
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM suppressions {where} ORDER BY id", params
            ).fetchall()
        for row in rows:
            yield Stored(*row)

    def barred(self, channel: str, after: int = 0) -> tuple[list[tuple[str, str, str]], list[int]]:
        """The entries that apply to *channel* (its own and those for ``all`` customer ids)
        added after the entry id *after*, oldest first, as the gate takes them (kind, key,
        source); and the :meth:`mark` they were read at, in the same snapshot."""
        found = []
        with self._lock:
            self._db.execute("BEGIN")
            try:
                rows = self._db.execute(
                    f"SELECT {_COLUMNS} FROM suppressions WHERE channel IN (?, ?) AND id > ?"
                    " ORDER BY id",
                    (channel, ALL, after),
                ).fetchall()
                mark = self._mark(channel)
            finally:
                self._db.execute("COMMIT")
        for row in rows:
            stored = Stored(*row)
            if stored.customer_id:
                found.append((CUSTOMER, stored.customer_id, stored.reason()))
            elif stored.channel == channel:  # a contact for all is stored one per channel
                found.append((CONTACT, stored.contact, stored.reason()))
        return found, mark

    def mark(self, channel: str) -> list[int]:
        """Changes whenever an entry of *channel* (or ``all``) is added or removed: their
        count and the highest id (ids are never reused)."""
        with self._lock:
            return self._mark(channel)

    def _mark(self, channel: str) -> list[int]:
        count, last = self._db.execute(
            "SELECT COUNT(*), COALESCE(MAX(id), 0) FROM suppressions WHERE channel IN (?, ?)",
            (channel, ALL),
        ).fetchone()
        return [count, last]
