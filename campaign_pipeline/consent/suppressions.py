"""The suppression file: who must not be messaged, by contact or customer id.

The file is a CSV with the columns ``channel`` (a registered channel's name, or ``all``),
``contact`` and ``customer_id``; a row fills one of the last two. A contact is written as the
customer file may write it and normalised the same way (:func:`campaign_pipeline.segments.
contact_checks`, by the channel's contact column): an email address is compared case-folded,
a phone number in E.164 with ``[campaign] default_region``, a device token as it is. Blank
lines and lines whose first field starts with ``#`` are comments; other columns are ignored
(an export of the store can be read back). Anything else is a
:class:`~campaign_pipeline.exceptions.SuppressionFileError` naming the file and the line, so
that nothing is sent with an opt-out list the pipeline cannot read.
"""

from __future__ import annotations

import csv
import hashlib
import os
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..exceptions import SuppressionFileError
from ..segments import ascii_address, contact_checks
from .gate import CONTACT, CUSTOMER

ALL = "all"
COLUMNS = ("channel", "contact", "customer_id")
# Columns whose values are compared case-folded, the domain in ASCII (IDNA): two spellings of
# one mailbox are one person, ``Bob@Müller.example`` as the loader writes it and
# ``bob@xn--mller-kva.example`` as SendGrid lists it.
FOLDED_COLUMNS = frozenset({"email"})


def match_key(column: str, value: str) -> str:
    """What a contact of *column* is compared by, whatever its source: the customer file,
    the suppression file, the consent store, a provider's list, duplicates and the message
    history all key a contact by this."""
    if column not in FOLDED_COLUMNS:
        return value
    key = ascii_address(value).casefold()
    # a local part outside ASCII in one Unicode form, whichever its source used
    return key if key.isascii() else unicodedata.normalize("NFC", key)


@dataclass(frozen=True)
class Entry:
    """One suppression: a contact or a customer id, on one channel or ``all``."""

    channel: str
    contact: str = ""  # normalised, as the channel sends to it
    customer_id: str = ""
    source: str = ""  # what the skipped recipient's reason names, e.g. "file.csv line 3"


def channel_columns() -> dict[str, str]:
    """Each registered channel and the customer column it sends to."""
    from ..channels import registered  # the registry imports the tasks, which import us

    return {channel.name: channel.contact for channel in registered()}


def read_entries(
    path: str, default_region: str, accept_vanity: bool = False, what: str = "suppression file"
) -> Iterator[Entry]:
    """The entries of the suppression-format CSV at *path*, contacts normalised; a contact
    for ``all`` becomes an entry for each channel whose contact check accepts it. Raises
    :class:`SuppressionFileError` naming *what*, the path and the line."""
    columns = channel_columns()
    checks = contact_checks(default_region, accept_vanity)
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = _header(next(reader, None), path, what)
            for values in reader:
                line = reader.line_num
                if not any(v.strip() for v in values) or values[0].lstrip().startswith("#"):
                    continue
                row = {name: (values[i].strip() if i < len(values) else "") for name, i in header}
                yield from _entries(row, columns, checks, f"{what} {path} line {line}", path, line)
    except FileNotFoundError:
        raise SuppressionFileError(
            f"{what} {path}: no such file; create it with the header channel,contact,customer_id"
            " or set [consent] suppressions to empty for none"
        ) from None
    except UnicodeDecodeError:
        raise SuppressionFileError(f"{what} {path}: not valid UTF-8; save it as UTF-8") from None
    except csv.Error as exc:
        raise SuppressionFileError(f"{what} {path}: unreadable CSV: {exc}") from None
    except OSError as exc:
        raise SuppressionFileError(f"{what} {path}: cannot be read: {exc.strerror}") from None


def _header(header: list[str] | None, path: str, what: str) -> list[tuple[str, int]]:
    names = [h.strip().casefold() for h in header or []]
    if missing := [c for c in COLUMNS if c not in names]:
        raise SuppressionFileError(
            f"{what} {path} line 1: no column {', '.join(missing)}; the header must name "
            f"{', '.join(COLUMNS)}"
        )
    return [(name, names.index(name)) for name in COLUMNS]


def parse_row(
    row: dict, where: str, default_region: str, accept_vanity: bool = False
) -> list[Entry]:
    """The entries of one row (``channel``, ``contact``, ``customer_id``) written as the
    suppression file writes it; *where* names it in the error."""
    checks = contact_checks(default_region, accept_vanity)
    return list(_entries(row, channel_columns(), checks, where, "", 0))


def _entries(row: dict, columns: dict, checks: dict, where: str, path: str, line: int):
    channel, contact, customer_id = row["channel"].casefold(), row["contact"], row["customer_id"]
    if channel != ALL and channel not in columns:
        known = ", ".join([*columns, ALL])
        raise SuppressionFileError(f"{where}: unknown channel {row['channel']!r}; use {known}")
    if bool(contact) == bool(customer_id):
        both = "both" if contact else "neither"
        raise SuppressionFileError(
            f"{where}: {both} of contact and customer_id; fill exactly one of them"
        )
    source = f"{os.path.normpath(path)} line {line}" if path else ""
    if customer_id:
        yield Entry(channel, customer_id=customer_id, source=source)
        return
    targets = columns if channel == ALL else {channel: columns[channel]}
    found, reasons = [], []
    for name, column in targets.items():
        check = checks.get(column)
        normalised, reason = check(contact) if check else (contact, "")
        if normalised:
            found.append(Entry(name, contact=match_key(column, normalised), source=source))
        else:
            reasons.append(reason.removeprefix("invalid: "))
    if not found:
        why = (
            reasons[0]
            if channel != ALL
            else f"not an address, number or token of {', '.join(targets)}"
        )
        raise SuppressionFileError(f"{where}: invalid contact: {why}")
    yield from found


def file_digest(path: str) -> str:
    """The SHA-256 of the suppression file, "" for none: what tells an edited file from the
    one a channel's ledger followed."""
    if not path:
        return ""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise SuppressionFileError(
            f"suppression file {path} ([consent] suppressions): cannot be read: "
            f"{exc.strerror}; create it with the header channel,contact,customer_id or set "
            "the key to empty for none"
        ) from None
    return digest.hexdigest()


@dataclass
class Suppressions:
    """The entries of one channel, by contact and by customer id, with their sources."""

    channel: str
    by_contact: dict[str, str] = field(default_factory=dict)
    by_customer: dict[str, str] = field(default_factory=dict)

    def add(self, entry: Entry) -> None:
        if entry.channel not in (self.channel, ALL):
            return
        if entry.customer_id:
            self.by_customer.setdefault(entry.customer_id, entry.source)
        elif entry.channel == self.channel:  # a contact for all was made one per channel
            self.by_contact.setdefault(entry.contact, entry.source)

    def __len__(self) -> int:
        return len(self.by_contact) + len(self.by_customer)

    def barred(self) -> Iterator[tuple[str, str, str]]:
        """The entries as the gate takes them: (kind, key, source)."""
        for key, source in self.by_customer.items():
            yield CUSTOMER, key, source
        for key, source in self.by_contact.items():
            yield CONTACT, key, source


def read_suppressions(
    path: str, channel: str, default_region: str, accept_vanity: bool
) -> Suppressions:
    """The entries of the suppression file at *path* ("" for none) for *channel*."""
    found = Suppressions(channel)
    if path:
        for entry in read_entries(path, default_region, accept_vanity):
            found.add(entry)
    return found
