"""Ledgers as earlier versions wrote them, for the tests of their upgrade."""

from __future__ import annotations

import contextlib
import sqlite3

# The deliveries table of a ledger written by main before issue 11 (no contact, no
# deferred_until column).
DELIVERIES_BEFORE_CONSENT = (
    "CREATE TABLE deliveries (seq INTEGER PRIMARY KEY, customer_id TEXT NOT NULL UNIQUE,"
    " segment TEXT NOT NULL, recipient TEXT NOT NULL, status TEXT NOT NULL,"
    " provider_message_id TEXT NOT NULL DEFAULT '', attempts INTEGER NOT NULL DEFAULT 0,"
    " error TEXT NOT NULL DEFAULT '', sent_at TEXT NOT NULL DEFAULT '',"
    " context TEXT NOT NULL DEFAULT '{}')"
)


def write_old_ledger(path: str, recipient: str) -> None:
    """A ledger of that version at *path*, holding one row: customer A, sent to *recipient*."""
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute(DELIVERIES_BEFORE_CONSENT)
        db.execute(
            "INSERT INTO deliveries (customer_id, segment, recipient, status)"
            " VALUES ('A', 'new', ?, 'sent')",
            (recipient,),
        )
