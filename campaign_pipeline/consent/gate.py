"""The consent gate in SQL: who of a channel's targeted customers is not sent, and why.

A recipient is ``skipped`` when an entry of the suppression file or of the consent store
names their customer id or their contact (``suppressed: <source>``), or the customer id of
another customer with the same contact (``suppressed: <source> (the contact of customer
<customer_id>)``: an opt-out is the person's, whatever id they have), or, with one message
per person, when another customer has the same contact and comes first
(``duplicate contact of <customer_id>``): first a customer the provider has or may have
the message of (sent or unknown in an earlier run), else the first in file order that is
not skipped for another reason.

The gate works on the tables of one SQLite connection, so that a million customers cost no
Python dict of their contacts: the temporary table ``current`` (customer_id, targeted,
status, error, contact; its ``rowid`` is the file order), which :meth:`Ledger.follow
<campaign_pipeline.ledger.Ledger.follow>` fills and a dry run makes of its own, and the
ledger's ``deliveries`` (indexed by contact). The entries are *barred* tuples (kind, key,
source) with kind :data:`CUSTOMER` or :data:`CONTACT`; of two entries for one key, the
first given wins (the file's, in line order, before the store's, oldest first), and an
entry for the customer id wins over one for the contact.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable

CUSTOMER = "customer"
CONTACT = "contact"
SUPPRESSED = "suppressed: "
DUPLICATE = "duplicate contact of "
CONTACT_OF = " (the contact of customer "  # + customer_id + ")", after the entry's source
# The skipped rows' reasons, first in file order, of each contact of a customer that an
# entry bars by id, from *table* (``current`` or ``deliveries``) ordered by *order*.
_CONTACTS_OF = (
    "SELECT t.contact AS contact, '{suppressed}' || b.source || '{of}' || t.customer_id || ')'"
    " AS reason, MIN(t.{order}) FROM barred AS b JOIN {table} AS t ON t.customer_id = b.key"
    " WHERE b.kind = '{customer}' AND t.contact != '' GROUP BY t.contact"
)
_PENDING, _SKIPPED, _SENT, _UNKNOWN = "pending", "skipped", "sent", "unknown"  # ledger.Status

_BARRED = (
    "CREATE TEMP TABLE IF NOT EXISTS barred (kind TEXT NOT NULL, key TEXT NOT NULL,"
    " source TEXT NOT NULL, PRIMARY KEY (kind, key)) WITHOUT ROWID"
)
# The customer each contact goes to (one message per person).
_FIRSTS = (
    "CREATE TEMP TABLE IF NOT EXISTS firsts (contact TEXT PRIMARY KEY,"
    " customer_id TEXT NOT NULL) WITHOUT ROWID"
)
# A customer dict as the dry run's own table holds it (the ledger's ``current`` has more).
SCRATCH_SCHEMA = (
    "CREATE TEMP TABLE current (customer_id TEXT PRIMARY KEY, targeted INTEGER NOT NULL,"
    " status TEXT NOT NULL, error TEXT NOT NULL, contact TEXT NOT NULL)"
)


def _bar(db: sqlite3.Connection, entries: Iterable[tuple[str, str, str]]) -> None:
    db.execute(_BARRED)
    db.execute("DELETE FROM barred")
    db.executemany("INSERT OR IGNORE INTO barred VALUES (?, ?, ?)", entries)


def decide(
    db: sqlite3.Connection,
    entries: Iterable[tuple[str, str, str]],
    dedupe: bool,
    history: bool = True,
) -> None:
    """Skip the pending targeted rows of ``current`` that *entries* suppress, then, with
    *dedupe*, the duplicates; with *history*, a contact the ledger's ``deliveries`` has sent
    (or may have) goes to that customer whatever the file order."""
    _bar(db, entries)
    pending = f"current.targeted AND current.status = '{_PENDING}'"
    for kind, column in ((CUSTOMER, "customer_id"), (CONTACT, "contact")):
        db.execute(
            f"UPDATE current SET status = '{_SKIPPED}', error = '{SUPPRESSED}' || b.source"
            f" FROM barred AS b WHERE b.kind = ? AND b.key = current.{column} AND {pending}",
            (kind,),
        )
    # the contact of a customer barred by id, targeted or not, under any other id
    db.execute(
        f"UPDATE current SET status = '{_SKIPPED}', error = o.reason"
        f" FROM ({_contacts_of('current', 'rowid')}) AS o"
        f" WHERE o.contact = current.contact AND {pending}"
    )
    if not dedupe:
        return
    db.execute(_FIRSTS)
    db.execute("DELETE FROM firsts")
    if history:
        db.execute(
            "INSERT OR IGNORE INTO firsts SELECT contact, customer_id FROM deliveries"
            f" WHERE status IN ('{_SENT}', '{_UNKNOWN}') AND contact != '' ORDER BY seq"
        )
    db.execute(
        "INSERT OR IGNORE INTO firsts SELECT contact, customer_id FROM current"
        f" WHERE {pending} ORDER BY rowid"
    )
    db.execute(
        f"UPDATE current SET status = '{_SKIPPED}', error = '{DUPLICATE}' || f.customer_id"
        f" FROM firsts AS f WHERE f.contact = current.contact AND {pending}"
        " AND f.customer_id != current.customer_id"
    )
    db.execute("DELETE FROM firsts")


def unknown_from_history(
    db: sqlite3.Connection,
    messaged: Callable[[list[str]], dict[str, set[str]]],
    reason: str,
    dedupe: bool,
    page: int = 1000,
) -> int:
    """Mark ``unknown`` with *reason* the pending targeted rows of ``current`` that a
    message history already reached: *messaged* gives, for a page of contacts, the customer
    ids each has a message to. With *dedupe* (one message per person) any message to the
    contact counts, else only one to that customer. Returns how many were marked.

    For a ledger made anew while the history holds messages of the same campaign and date:
    the ledger that knew what they became is lost, so each may have been delivered."""
    marked, last = 0, 0
    while True:
        rows = db.execute(
            f"SELECT rowid, customer_id, contact FROM current WHERE targeted"
            f" AND status = '{_PENDING}' AND rowid > ? ORDER BY rowid LIMIT ?",
            (last, page),
        ).fetchall()
        if not rows:
            return marked
        last = rows[-1][0]
        found = messaged(sorted({contact for _, _, contact in rows if contact}))
        reached = [
            (reason, cid)
            for _, cid, contact in rows
            if contact in found and (dedupe or cid in found[contact])
        ]
        db.executemany(
            f"UPDATE current SET status = '{_UNKNOWN}', error = ? WHERE customer_id = ?", reached
        )
        marked += len(reached)


# The ledger's rows a new entry may still change: to be sent, or skipped as a duplicate
# (a suppression comes before one message per person).
_OPEN = (
    f"(deliveries.status = '{_PENDING}' OR (deliveries.status = '{_SKIPPED}'"
    f" AND substr(deliveries.error, 1, {len(DUPLICATE)}) = '{DUPLICATE}'))"
)


def _contacts_of(table: str, order: str) -> str:
    return _CONTACTS_OF.format(
        suppressed=SUPPRESSED, of=CONTACT_OF, order=order, table=table, customer=CUSTOMER
    )


def bar_new(db: sqlite3.Connection, entries: Iterable[tuple[str, str, str]]) -> bool:
    """Skip the ledger's rows that *entries*, learned since the ledger last looked, suppress,
    and those with the contact of a customer an entry bars by id; a row suppressed already
    keeps its reason. False, changing nothing, when only a full check can tell: an entry
    for a customer id the ledger has no row of (their contact is in the file alone)."""
    _bar(db, entries)
    unknown = db.execute(
        f"SELECT 1 FROM barred AS b WHERE b.kind = '{CUSTOMER}' AND NOT EXISTS"
        " (SELECT 1 FROM deliveries AS d WHERE d.customer_id = b.key) LIMIT 1"
    ).fetchone()
    if unknown:
        return False
    for kind, column in ((CUSTOMER, "customer_id"), (CONTACT, "contact")):
        # a seek per entry (customer_id is unique, contact indexed), not a scan of the ledger
        db.execute(
            f"UPDATE deliveries SET status = '{_SKIPPED}', error = '{SUPPRESSED}'"
            f" || (SELECT source FROM barred WHERE kind = ? AND key = deliveries.{column})"
            f" WHERE {column} IN (SELECT key FROM barred WHERE kind = ?) AND {_OPEN}",
            (kind, kind),
        )
    # the others with their contact: skipped as duplicates of them until now, say
    db.execute(
        f"UPDATE deliveries SET status = '{_SKIPPED}', error = o.reason"
        f" FROM ({_contacts_of('deliveries', 'seq')}) AS o"
        f" WHERE deliveries.contact = o.contact AND {_OPEN}"
    )
    return True
