"""The frequency cap: at most ``[consent] frequency_cap`` messages per contact per channel
within ``frequency_window_days``, counted over every campaign that shares the consent store.

:class:`FrequencyCap` is an admission rule of the sender (see
:class:`campaign_pipeline.sender.Admission`). For each page of pending recipients it counts,
in one store transaction begun at once (``BEGIN IMMEDIATE``), each contact's messages on the
channel within the window, skips in the ledger those at the cap, and reserves a ``messages``
row for each one it admits. Two campaigns' admissions are thus serialised: the second one
counts the first one's reservations, and never both pass the cap for the same contact. A
reservation is confirmed by ``sent`` or ``unknown`` (the provider has or may have the
message) and deleted when the request ends ``failed`` or the recipient is left ``pending``.

A run killed outright (``kill -9``) cannot delete its reservations: they count for the other
campaigns, which then send fewer, never more, than the cap allows. The ledger notes while
reservations are open, so the killed campaign's next run knows to look for each pending
recipient's own reservation, and reuses it instead of counting it (a run after a clean end
does not pay for that look-up). The look-up is for the recipients the stored messages would
cap; one still under the cap gets a second reservation, which over-counts, never under.
"""

from __future__ import annotations

import datetime
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

from ..ledger import PENDING, SKIPPED, Ledger, Status
from .store import ConsentStore
from .suppressions import match_key

# The answers that leave the reservation in place: the provider has, or may have, the message.
KEPT = frozenset({Status.SENT, Status.UNKNOWN})
PAGE = 1000  # recipients a dry run asks the store about at once, as the sender's pages
OPEN_NOTE = "frequency_cap_reservations"  # the ledger's note: "open" while any is unsettled


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def timestamp(moment: datetime.datetime) -> str:
    """How the store writes a time: UTC ISO 8601 with milliseconds (compared as text)."""
    return moment.astimezone(datetime.UTC).isoformat(timespec="milliseconds")


class FrequencyCap:
    """The frequency cap of one channel of one campaign run.

    *cap* 0 caps nobody but still records every message, so that a cap turned on later has
    the history. *ledger* is None in a dry run, which only reads (:meth:`preview`). *clock*
    gives the current UTC time (tests pass their own).
    """

    def __init__(
        self,
        store: ConsentStore | None,
        ledger: Ledger | None,
        channel: str,
        column: str,
        campaign: str,
        date: str,
        cap: int,
        window_days: int,
        clock: Callable[[], datetime.datetime] = utc_now,
    ):
        self.store = store
        self.ledger = ledger
        self.channel = channel
        self.column = column
        self.campaign = campaign
        self.date = date
        self.cap = cap
        self.window = datetime.timedelta(days=window_days)
        self.reason = f"frequency cap: {cap} in {window_days} days"
        self.clock = clock
        self._lock = threading.Lock()
        self._unsettled = 0  # rows admitted and not yet settled
        self.skipped = 0  # rows this run skipped at the cap, for the progress
        self._after_kill: bool | None = None  # did a killed run leave reservations? (lazy)

    def _keys(self, rows: Iterable[dict]) -> list[tuple[str, str]]:
        return [(match_key(self.column, row["recipient"]), row["customer_id"]) for row in rows]

    def _decide(
        self, page: list[tuple[str, str]], now: datetime.datetime, after_kill: bool = False
    ) -> list[tuple[bool, bool]]:
        """For each (contact, customer_id) of *page*, in order: (admitted, has a reservation
        of its own already). A contact admitted earlier in the page counts (customers
        sharing a contact when dedupe is off); a recipient's own reservation, left by a
        killed run of this campaign, does not."""
        if not self.cap or self.store is None:
            return [(True, False)] * len(page)
        since = timestamp(now - self.window)
        counts = self.store.recent(self.channel, [contact for contact, _ in page], since)
        in_page = Counter(contact for contact, _ in page)
        # only after a killed run, and only a recipient the stored messages alone could cap,
        # may hold a reservation of its own
        suspects = [
            (contact, cid)
            for contact, cid in page
            if after_kill
            and counts.get(contact, 0)
            and counts[contact] + in_page[contact] > self.cap
        ]
        own = self.store.reserved(self.channel, suspects, self.campaign, self.date)
        admitted: Counter = Counter()
        decided = []
        for contact, cid in page:
            mine = cid in own
            ok = counts.get(contact, 0) - mine + admitted[contact] < self.cap
            if ok:
                admitted[contact] += 1
            decided.append((ok, mine))
        return decided

    def admit(self, rows: list[dict]) -> list[dict]:
        """The rows of *rows* under the cap, each with its message reserved; the others
        skipped in the ledger with the reason. One store transaction."""
        if not rows:
            return rows
        assert self.store is not None and self.ledger is not None, "a dry run only previews"
        page = self._keys(rows)
        if self._after_kill is None:
            self._after_kill = self.ledger.noted(OPEN_NOTE) == "open"
        with self.store.transaction():
            now = self.clock()
            decided = self._decide(page, now, self._after_kill)
            sent_at = timestamp(now)
            self.store.reserve(
                [
                    (self.channel, contact, cid, self.campaign, self.date, sent_at)
                    for (contact, cid), (ok, mine) in zip(page, decided, strict=True)
                    if ok and not mine  # a run killed earlier left this one's: reuse it
                ]
            )
            capped = [cid for (_, cid), (ok, _) in zip(page, decided, strict=True) if not ok]
            if capped:
                self.ledger.skip_pending(capped, self.reason)
            admitted = [row for row, (ok, _) in zip(rows, decided, strict=True) if ok]
            with self._lock:
                self.skipped += len(capped)
                if admitted and not self._unsettled:  # noted before the reservations commit
                    self.ledger.note(OPEN_NOTE, "open")
                self._unsettled += len(admitted)
        return admitted

    def settle(self, rows: list[dict], status: Status) -> None:
        """Keep the reservations of rows the provider has or may have; delete the others'."""
        if rows and Status(status) not in KEPT and self.store is not None:
            self.store.release(self.channel, self.campaign, self.date, self._keys(rows))
        if self.ledger is not None:
            with self._lock:
                self._unsettled -= len(rows)
                if self._unsettled <= 0:
                    self._unsettled = 0
                    self.ledger.note(OPEN_NOTE, "settled")

    def preview(self, recipients: Iterable[dict]) -> Iterator[dict]:
        """*recipients* (the dry run's targeted rows) with those the cap would skip marked
        ``skipped`` with the reason; reads the store, writes nothing."""
        if not self.cap or self.store is None:
            yield from recipients
            return
        page: list[dict] = []
        for row in recipients:
            page.append(row)
            if len(page) >= PAGE:
                yield from self._previewed(page)
                page = []
        yield from self._previewed(page)

    def _previewed(self, rows: list[dict]) -> list[dict]:
        # Nothing is reserved: customers sharing a contact (dedupe off) count each other
        # within a page, not across pages; the real run counts them all.
        pending = [row for row in rows if row["status"] == PENDING]
        decided = self._decide(self._keys(pending), self.clock())
        for row, (ok, _) in zip(pending, decided, strict=True):
            if not ok:
                row.update(status=SKIPPED, error=self.reason)
        return rows
