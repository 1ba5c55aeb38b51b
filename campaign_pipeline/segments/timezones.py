"""IANA time zone names: the optional ``timezone`` column of a customer file, and settings.

A customer's ``timezone`` says where they are, for quiet hours (see
:mod:`campaign_pipeline.consent.quiet`). Like a contact, an unusable value keeps the
customer: the reason goes to ``timezone_error`` beside it, and only the channels that
observe quiet hours skip them (sending at a guessed hour is what quiet hours forbid).
"""

from __future__ import annotations

import difflib
import zoneinfo
from functools import lru_cache

from .contacts import Check

COLUMN = "timezone"
# Names zoneinfo finds that are no place: the machine's own zone and tzdata's placeholders.
_NOT_PLACES = frozenset({"localtime", "Factory", "posixrules", "posix", "right"})


@lru_cache(maxsize=1)
def _names_by_folded() -> dict[str, str]:
    """Every IANA name the system knows, by its case-folded spelling (read once: 0.3 s)."""
    names = zoneinfo.available_timezones() - _NOT_PLACES
    return {name.casefold(): name for name in names}


@lru_cache(maxsize=4096)
def canonical_zone(name: str) -> str:
    """*name* as the IANA database spells it (``america/new_york`` ->
    ``America/New_York``), or "" when it names no zone."""
    if not name or name in _NOT_PLACES or name.startswith(("posix/", "right/")):
        return ""
    try:
        zoneinfo.ZoneInfo(name)
        return name
    except (ValueError, KeyError, OSError):  # not found, a folder, a path
        return _names_by_folded().get(name.casefold(), "")


def zone_problem(name: str) -> str:
    """Why *name* is not an IANA time zone name, with the closest one, or ""."""
    if canonical_zone(name):
        return ""
    folded = _names_by_folded()
    close = difflib.get_close_matches(name.casefold(), list(folded), 1, 0.6)
    hint = f"; did you mean {folded[close[0]]}?" if close else " such as America/New_York"
    return f"{name!r} is not an IANA time zone name{hint}"


def check_timezone(value: str) -> tuple[str, str]:
    """Return (IANA name, "") or ("", reason); an empty value is no time zone, no reason."""
    if not value:
        return "", ""
    if zone := canonical_zone(value):
        return zone, ""
    return "", f"invalid: timezone {zone_problem(value)}"


# Optional columns a customer file may have, checked like contacts when present.
OPTIONAL_CHECKS: dict[str, Check] = {COLUMN: check_timezone}
