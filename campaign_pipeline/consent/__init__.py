"""Consent: who must not be messaged, one message per person, and how often.

:mod:`.suppressions` reads the suppression file and decides, recipient by recipient, who is
skipped and why (suppressed, or a duplicate contact); :mod:`.store` is the SQLite file of what
the pipeline learns from the providers' answers and of the messages sent, remembered across
campaigns; :mod:`.cap` is the frequency cap, an admission rule of the sender; :mod:`.cli` is
``campaign-consent``, which lists, exports, imports and removes its entries, shows a
contact's recent messages and prunes old ones.
"""

from .store import ConsentStore
from .suppressions import (
    ALL,
    Entry,
    Gate,
    Suppressions,
    file_digest,
    match_key,
    parse_row,
    read_entries,
    read_suppressions,
)

__all__ = [
    "ALL",
    "ConsentStore",
    "Entry",
    "Gate",
    "Suppressions",
    "file_digest",
    "match_key",
    "parse_row",
    "read_entries",
    "read_suppressions",
]
