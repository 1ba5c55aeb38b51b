"""Consent: who must not be messaged, one message per person, and how often.

:mod:`.suppressions` reads the suppression file; :mod:`.gate` decides, in SQL over a
channel's ledger, who is skipped and why (suppressed, or a duplicate contact); :mod:`.store`
is the SQLite file of what the pipeline learns from the providers' answers and of the
messages sent, remembered across campaigns; :mod:`.cap` is the frequency cap and
:mod:`.quiet` quiet hours, admission rules of the sender; :mod:`.cli` is
``campaign-consent``, which lists, exports, imports and removes its entries, shows a
contact's recent messages, imports a history and prunes old ones.
"""

from .store import ConsentStore
from .suppressions import (
    ALL,
    Entry,
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
    "Suppressions",
    "file_digest",
    "match_key",
    "parse_row",
    "read_entries",
    "read_suppressions",
]
