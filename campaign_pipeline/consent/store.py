"""The consent store: what the pipeline learns from the providers and remembers.

One SQLite file (``[consent] store``) shared by every channel task and every campaign on the
machine, each in its own process: WAL mode lets them read while one writes, and each write
is one short transaction that waits (``busy_timeout``) rather than fails while another is
being committed.

Tables:

- ``suppressions``: one row per (channel, contact or customer id): what taught it
  (``source``: ``learned`` from a provider's answer, ``import`` of a file, or the name of a
  provider's own list mirrored before sending, e.g. ``sendgrid bounces``), the date,
  the campaign and the provider's code. A contact is stored normalised and compared as
  :func:`~.suppressions.match_key` says.
- ``messages``: one row per message a provider accepted or may have (``sent``,
  ``unknown``), from every campaign, whether or not a frequency cap is set (a cap turned on
  later has the history). :class:`~.cap.FrequencyCap` reserves the row when it admits the
  recipient and deletes it when the request ends ``failed`` or back to ``pending``. The
  contact is :func:`~.suppressions.match_key` of the recipient; ``date`` is the campaign's
  date, ``sent_at`` the UTC time of the admission.
- ``meta``: the schema version, for the migrations of later versions.

Version 3 keys an email address with its domain in ASCII (:func:`~.suppressions.match_key`);
a store written before keeps the Unicode domains the loader gave (``bob@müller.example``),
which it re-keys (suppressions and messages) the first time it is opened for writing. Opened
read-only (a dry run), its suppressions are re-keyed as they are read; its message history
is not, so a dry run's frequency cap may count fewer messages to such an address.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import backoff

from ..exceptions import ConsentStoreError
from .gate import CONTACT, CONTACT_OF, CUSTOMER
from .suppressions import ALL, Entry, match_key

SCHEMA_VERSION = 3  # 2: messages; 3: email domains keyed in ASCII
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
    """CREATE TABLE IF NOT EXISTS messages (
        id INTEGER PRIMARY KEY,
        channel TEXT NOT NULL,
        contact TEXT NOT NULL,
        customer_id TEXT NOT NULL,
        campaign TEXT NOT NULL,
        date TEXT NOT NULL,
        sent_at TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS messages_by_contact ON messages (channel, contact, sent_at)",
)
MESSAGE_COLUMNS = ("channel", "contact", "customer_id", "campaign", "date", "sent_at")
BUSY_MS = 30_000
CACHE_KIB = 32 * 1024
CHECKPOINT_PAGES = 10_000
_NAMED = re.compile(r"CREATE (?:TABLE|INDEX) IF NOT EXISTS (\w+)")
# The contacts a version-2 store may have keyed otherwise: an email address (only an email
# contact holds an @) with a character outside printable ASCII.
_UNICODE_ADDRESS = "contact LIKE '%@%' AND contact GLOB '*[^ -~]*'"


def rekeyed(contact: str) -> str:
    """The key of a version-2 store's *contact* as this version keys it."""
    return match_key("email", contact) if "@" in contact else contact


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
        if self.source == IMPORTED and self.note:
            return f"imported {self.date} from {self.note}"
        return listed_reason(self.source, self.date)


def listed_reason(source: str, date: str) -> str:
    """The reason of an entry of a provider's list: ``sendgrid bounces 2026-11-20``."""
    return f"{source} {date}"


def source_kind(reason: str) -> str:
    """Where a ``suppressed:`` reason's entry comes from, for the summaries: ``file``,
    ``learned <code>`` (``learned 21610``), ``imported``, or the provider list's name
    (``sendgrid bounces``)."""
    reason = _CONTACT_OF.sub("", reason.removeprefix("suppressed: "))
    if reason.startswith("learned "):
        code = reason.rpartition(" ")[2].rstrip(")")
        return f"learned {code}"
    if reason.startswith(("imported ", f"{IMPORTED} ")):
        return "imported"
    listed = _LISTED.match(reason)
    return listed.group(1) if listed else "file"


_LISTED = re.compile(r"^([a-z][a-z0-9]* [a-z0-9 ]+) \d{4}-\d{2}-\d{2}$")
_CONTACT_OF = re.compile(re.escape(CONTACT_OF) + r".*\)$", re.DOTALL)


_COLUMNS = "channel, contact, customer_id, source, date, campaign, code, note"


SQLITE_HEADER = b"SQLite format 3\x00"


def foreign(path: str) -> str:
    """Why the existing file *path* is not a consent store (another program's SQLite
    database, or no SQLite database at all), or "" when it is one, is empty, or is absent.

    Read without changing a byte: opened read-only and ``immutable`` (no lock, no journal,
    no WAL or shared-memory file), never switched to WAL, no table added."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
    except OSError:
        return ""  # absent (created later), or a folder: opening it names the problem
    if not header:
        return ""  # an empty file: made a store
    if header != SQLITE_HEADER:
        return "not an SQLite database"
    try:
        tables = _tables(path, "&immutable=1")
    except sqlite3.DatabaseError:
        # read while another process wrote it (a channel task creating the store, a
        # checkpoint): ask again through SQLite's locks. An intact database of another
        # program never gets here, so nothing is created beside it.
        try:
            tables = _tables(path, "")
        except sqlite3.DatabaseError as exc:
            return f"not a readable SQLite database ({exc})"
    # Judged by the names of its tables (pages a checkpoint rewrites only when the schema
    # changes), not by its rows, which a checkpoint may be writing while this reads
    others = sorted(tables - {_NAMED.search(statement).group(1) for statement in _SCHEMA})
    if not others:
        return ""  # an empty database (made a store), or a store
    return f"an SQLite database of another program (its tables include {', '.join(others[:5])})"


def _tables(path: str, flags: str) -> set[str]:
    """The tables of the SQLite file *path* (not SQLite's own), opened read-only with the
    URI *flags*."""
    uri = f"{Path(path).resolve().as_uri()}?mode=ro{flags}"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=BUSY_MS / 1000)) as db:
        found = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {name for (name,) in found if not name.startswith("sqlite_")}


def today() -> str:
    return datetime.datetime.now(datetime.UTC).date().isoformat()


class ConsentStore:
    """The store at *path*, created (with its folder) on first use; safe to share between
    threads, and between processes through SQLite's locking. With *readonly* (a dry run)
    the file must exist and is never written, not even to add a table."""

    def __init__(self, path: str, readonly: bool = False):
        self.path = path
        self.readonly = readonly
        # reentrant: the frequency cap's reads and writes run inside its own transaction
        self._lock = threading.RLock()
        try:
            self._open(path, readonly)
        except (sqlite3.DatabaseError, OSError) as exc:
            if "locked" in str(exc):  # another process kept it past the busy timeout
                raise
            why = getattr(exc, "strerror", None) or str(exc)
            raise ConsentStoreError(
                f"consent store {path} ([consent] store): cannot be opened: {why}; point the "
                "key to an SQLite file (it is created when missing) in a folder you can write"
            ) from None

    def _open(self, path: str, readonly: bool) -> None:
        if problem := foreign(path):
            raise ConsentStoreError(
                f"consent store {path} ([consent] store): {problem}; left as it is. Point "
                "the key to this pipeline's store, or to a new file (it is created)"
            )
        if readonly:
            uri = Path(path).resolve().as_uri() + "?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            self._db.execute(f"PRAGMA busy_timeout={BUSY_MS}")
            self._old_keys = self._version() < 3
            return
        if folder := os.path.dirname(path):
            os.makedirs(folder, exist_ok=True)
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
        # the frequency cap writes a page of reservations at a time, scattered over the
        # contact index: keep the pages its count just read in memory for the inserts, and
        # checkpoint (an fsync) every ~40 MB of log rather than every 4 MB
        self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        self._db.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_PAGES}")
        self._old_keys = False
        if self._has_schema() and self._version() >= SCHEMA_VERSION:
            return  # no write lock just to open it: campaign-consent list never waits
        with self._transaction():
            for statement in _SCHEMA:
                self._db.execute(statement)
            if 0 < self._version() < 3:
                self._rekey()
            self._db.execute(
                "INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT (key) DO UPDATE"
                " SET value = excluded.value WHERE CAST(value AS INTEGER) < ?",
                (str(SCHEMA_VERSION), SCHEMA_VERSION),
            )

    def _version(self) -> int:
        """The schema version the file records; 0 for none."""
        try:
            found = self._db.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            ).fetchone()
        except sqlite3.OperationalError:  # no meta table yet
            return 0
        return int(found[0]) if found else 0

    def _rekey(self) -> None:
        """Key a version-2 store's email addresses as version 3 does (their domains in
        ASCII), in the open transaction. Of two entries that become one, the older stays."""
        rows = self._db.execute(
            f"SELECT id, channel, contact, customer_id FROM suppressions WHERE {_UNICODE_ADDRESS}"
        ).fetchall()
        for entry, channel, contact, customer_id in rows:
            key = rekeyed(contact)
            other = self._db.execute(
                "SELECT id FROM suppressions WHERE channel = ? AND contact = ? AND customer_id = ?",
                (channel, key, customer_id),
            ).fetchone()
            if other and other[0] < entry:
                self._db.execute("DELETE FROM suppressions WHERE id = ?", (entry,))
                continue
            if other:
                self._db.execute("DELETE FROM suppressions WHERE id = ?", (other[0],))
            self._db.execute("UPDATE suppressions SET contact = ? WHERE id = ?", (key, entry))
        self._db.create_function("rekeyed", 1, rekeyed, deterministic=True)
        self._db.execute(f"UPDATE messages SET contact = rekeyed(contact) WHERE {_UNICODE_ADDRESS}")

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
    def transaction(self) -> Iterator[None]:
        """One write transaction, begun at once (``BEGIN IMMEDIATE``): every other writer,
        in this process or another, waits until it ends. The frequency cap counts and
        reserves inside one, so that two campaigns never both pass the cap for a contact."""
        with self._lock, self._transaction():
            yield

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """The open :meth:`transaction` of this thread, or one of its own."""
        with self._lock:
            if self._db.in_transaction:
                yield
            else:
                with self._transaction():
                    yield

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

    def mirror(
        self,
        channel: str,
        lists: dict[str, Iterable[tuple[str, str, str]]],
        partial: Iterable[str] = (),
    ) -> dict:
        """Make the entries of *channel* of each source of *lists* (a provider's lists: the
        source's name -> its (contact, date, code) entries) exactly those of the list, in one
        transaction: an entry the provider removed leaves the store, one it added comes in,
        one it still has keeps its row. A contact the store knows from another source keeps
        that entry. A source in *partial* was read incompletely: its entries come in, none
        leaves (what a partial read did not see may still be listed). Returns {source:
        (added, removed)}."""
        partial = set(partial)
        wanted = {
            source: {c: (d, code) for c, d, code in entries} for source, entries in lists.items()
        }
        changes = {}
        with self._lock, self._transaction():
            held = {}
            for source, entries in wanted.items():  # every removal before any addition: an
                rows = self._db.execute(  # address moving between two lists stays suppressed
                    "SELECT contact FROM suppressions WHERE channel = ? AND source = ?",
                    (channel, source),
                )
                held[source] = {contact for (contact,) in rows}
                gone = [(channel, source, c) for c in held[source] if c not in entries]
                if source in partial:
                    gone = []
                self._db.executemany(
                    "DELETE FROM suppressions WHERE channel = ? AND source = ? AND contact = ?",
                    gone,
                )
                changes[source] = [0, len(gone)]
            for source, entries in wanted.items():
                before = self._db.total_changes
                self._db.executemany(
                    f"INSERT OR IGNORE INTO suppressions ({_COLUMNS}) "
                    "VALUES (?, ?, '', ?, ?, '', ?, '')",
                    [
                        (channel, contact, source, date, code)
                        for contact, (date, code) in entries.items()
                        if contact not in held[source]
                    ],
                )
                changes[source][0] = self._db.total_changes - before
        return {source: tuple(counts) for source, counts in changes.items()}

    def entries(self, channel: str | None = None) -> Iterator[Stored]:
        """Every entry (of *channel* and ``all`` when given), oldest first."""
        where, params = ("WHERE channel IN (?, ?)", (channel, ALL)) if channel else ("", ())
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM suppressions {where} ORDER BY id", params
            ).fetchall()
        for row in rows:
            yield Stored(*row)

    def barred(
        self, channel: str, after: int = 0, applies: Callable[[str], bool] | None = None
    ) -> tuple[list[tuple[str, str, str]], list[int]]:
        """The entries that apply to *channel* (its own and those for ``all`` customer ids,
        whose source *applies* when given) added after the entry id *after*, oldest first,
        as the gate takes them (kind, key, source); and the :meth:`mark` they were read at,
        in the same snapshot."""
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
            if applies is not None and not applies(stored.source):
                continue
            if stored.customer_id:
                found.append((CUSTOMER, stored.customer_id, stored.reason()))
            elif stored.channel == channel:  # a contact for all is stored one per channel
                contact = rekeyed(stored.contact) if self._old_keys else stored.contact
                found.append((CONTACT, contact, stored.reason()))
        return found, mark

    def mark(self, channel: str) -> list[int]:
        """Changes whenever an entry of *channel* (or ``all``) is added or removed: their
        count and the highest id (ids are never reused)."""
        with self._lock:
            return self._mark(channel)

    def kept(self, channel: str, upto: int) -> int:
        """How many entries of *channel* (or ``all``) with an id up to *upto* are still
        stored: fewer than :meth:`mark` counted then means one was removed."""
        with self._lock:
            return self._db.execute(
                "SELECT COUNT(*) FROM suppressions WHERE channel IN (?, ?) AND id <= ?",
                (channel, ALL, upto),
            ).fetchone()[0]

    def _mark(self, channel: str) -> list[int]:
        count, last = self._db.execute(
            "SELECT COUNT(*), COALESCE(MAX(id), 0) FROM suppressions WHERE channel IN (?, ?)",
            (channel, ALL),
        ).fetchone()
        return [count, last]

    # -- message history (the frequency cap) -----------------------------------------------

    def recent(self, channel: str, contacts: list[str], since: str) -> dict[str, int]:
        """How many messages *channel* sent to each of *contacts* since *since* (an ISO
        time); a contact with none is left out. One query on the index alone."""
        if not contacts:
            return {}
        marks = ", ".join("?" * len(contacts))
        with self._lock:
            try:
                return dict(
                    self._db.execute(
                        "SELECT contact, COUNT(*) FROM messages INDEXED BY messages_by_contact"
                        f" WHERE channel = ? AND contact IN ({marks}) AND sent_at >= ?"
                        " GROUP BY contact",
                        (channel, *contacts, since),
                    )
                )
            except sqlite3.OperationalError as exc:
                if self.readonly and "no such" in str(exc):  # a store from before messages
                    return {}
                raise

    def reserved(
        self, channel: str, page: list[tuple[str, str]], campaign: str, date: str
    ) -> set[str]:
        """The customer ids of *page*'s (contact, customer_id) that have a message of
        *campaign* on *date* stored already: reserved by a run that was killed."""
        if not page:
            return set()
        ids = {customer_id for _, customer_id in page}
        contacts = sorted({contact for contact, _ in page})
        marks = ", ".join("?" * len(contacts))
        with self._lock:
            found = self._db.execute(
                "SELECT customer_id FROM messages INDEXED BY messages_by_contact"
                f" WHERE channel = ? AND contact IN ({marks}) AND campaign = ? AND date = ?",
                (channel, *contacts, campaign, date),
            )
            return {customer_id for (customer_id,) in found if customer_id in ids}

    def has_messages(self, channel: str, campaign: str, date: str) -> bool:
        """Whether any message of *campaign* on *date* is stored for *channel*. A scan of
        the table (no index has the campaign), asked once when a ledger is new."""
        with self._lock:
            found = self._db.execute(
                "SELECT 1 FROM messages NOT INDEXED"
                " WHERE channel = ? AND campaign = ? AND date = ? LIMIT 1",
                (channel, campaign, date),
            ).fetchone()
        return found is not None

    def messaged(
        self, channel: str, campaign: str, date: str, contacts: list[str]
    ) -> dict[str, set[str]]:
        """The customer ids each of *contacts* has a message of *campaign* on *date* stored
        to, on *channel*; a contact with none is left out. A seek per contact."""
        if not contacts:
            return {}
        marks = ", ".join("?" * len(contacts))
        found: dict[str, set[str]] = {}
        with self._lock:
            rows = self._db.execute(
                "SELECT contact, customer_id FROM messages INDEXED BY messages_by_contact"
                f" WHERE channel = ? AND contact IN ({marks}) AND campaign = ? AND date = ?",
                (channel, *contacts, campaign, date),
            ).fetchall()
        for contact, customer_id in rows:
            found.setdefault(contact, set()).add(customer_id)
        return found

    def reserve(self, messages: list[tuple[str, str, str, str, str, str]]) -> None:
        """Store *messages*, each (channel, contact, customer_id, campaign, date, sent_at)."""
        with self._writing():
            self._db.executemany(
                f"INSERT INTO messages ({', '.join(MESSAGE_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?)",
                messages,
            )

    def release(self, channel: str, campaign: str, date: str, page: list[tuple[str, str]]) -> int:
        """Forget the latest message of *campaign* on *date* to each (contact, customer_id)
        of *page* on *channel*: its request ended without reaching the provider. (An older
        one, of a request that may have been delivered before a resend, stays.)"""
        with self._writing():
            before = self._db.total_changes
            self._db.executemany(
                "DELETE FROM messages WHERE id = (SELECT MAX(id) FROM messages"
                " INDEXED BY messages_by_contact WHERE channel = ? AND contact = ?"
                " AND customer_id = ? AND campaign = ? AND date = ?)",
                [(channel, contact, cid, campaign, date) for contact, cid in page],
            )
            return self._db.total_changes - before

    def history(self, channel: str | None = None, contact: str = "", since: str = "") -> list[dict]:
        """The stored messages (of *channel*, to *contact*, sent since *since*), oldest first."""
        where, params = ["sent_at >= ?"], [since]
        if channel:
            where.append("channel = ?")
            params.append(channel)
        if contact:
            where.append("contact = ?")
            params.append(contact)
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(MESSAGE_COLUMNS)} FROM messages WHERE {' AND '.join(where)}"
                " ORDER BY sent_at, id",
                params,
            ).fetchall()
        return [dict(zip(MESSAGE_COLUMNS, row, strict=True)) for row in rows]

    def import_messages(self, messages: list[tuple[str, str, str, str, str, str]]) -> int:
        """Store *messages* (as :meth:`reserve` takes them) that are not stored already, the
        same channel, contact, customer, campaign, date and time; return how many were new.
        A history exported from another store or tool can so be imported twice."""
        with self._writing():
            before = self._db.total_changes
            for message in messages:
                self._db.execute(
                    f"INSERT INTO messages ({', '.join(MESSAGE_COLUMNS)})"
                    " SELECT ?, ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM messages"
                    " INDEXED BY messages_by_contact WHERE channel = ? AND contact = ?"
                    " AND sent_at = ? AND customer_id = ? AND campaign = ? AND date = ?)",
                    (*message, message[0], message[1], message[5], *message[2:5]),
                )
            return self._db.total_changes - before

    def prune(self, before: str) -> int:
        """Forget the messages sent before *before* (an ISO time); return how many."""
        with self._lock, self._transaction():
            return self._db.execute("DELETE FROM messages WHERE sent_at < ?", (before,)).rowcount
