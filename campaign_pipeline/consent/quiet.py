"""Quiet hours: a recipient is sent only outside ``[consent] quiet_hours`` in their local time.

A recipient's zones are, in this order: the customer file's ``timezone`` column; else the
zones ``phonenumbers`` gives for their phone number (for push too, from the phone column);
else ``[consent] default_timezone``. A number may map to several zones (``+1 907``: Adak and
Anchorage); then a moment is outside quiet hours only if it is so in every one of them.

:class:`QuietHours` is the sender's first :class:`~campaign_pipeline.sender.Admission` rule:
it admits the rows outside quiet hours now and defers the others (they stay ``pending`` with
``deferred: quiet hours until <time> <zone>``), and tells the sender when the next window
opens and which rows it may then send (:meth:`QuietHours.next_open`, :meth:`QuietHours.due`).

Looking zones up is the costly part (phonenumbers: about 25 µs a number), so each number's
zones are cached, and each set of zones' verdict is cached until it changes (the next
moment a window opens or closes in one of them) or until a zone's clock is set back or
forward (daylight saving time): in autumn the repeated hour can be quiet again without any
window opening.
"""

from __future__ import annotations

import datetime
import math
import re
import threading
import time
import zoneinfo
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache

import phonenumbers
from phonenumbers import timezone as phone_timezone

from ..ledger import Ledger, Status
from ..segments.timezones import canonical_zone

DEFERRED = "deferred: quiet hours"
NEVER = "quiet hours"  # the skip reason's kind when no window ever opens for a recipient
_TIME = r"([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?"
_WINDOW = re.compile(rf"\s*{_TIME}\s*-\s*{_TIME}\s*")
DAY = 86_400
HORIZON_DAYS = 3  # a window that does not open within this many days never opens
RECHECK_NEVER = 3600.0  # seconds before a "never" verdict is computed again


@dataclass(frozen=True)
class Window:
    """Quiet hours each day from *start* to *end* (seconds after local midnight); an end
    before the start wraps midnight (21:00-08:00)."""

    start: int
    end: int
    text: str

    def quiet(self, second_of_day: float) -> bool:
        if self.start < self.end:
            return self.start <= second_of_day < self.end
        return second_of_day >= self.start or second_of_day < self.end

    def ends(self) -> datetime.time:
        return _clock(self.end)

    def starts(self) -> datetime.time:
        return _clock(self.start)


def _clock(seconds: int) -> datetime.time:
    return datetime.time(seconds // 3600, seconds // 60 % 60, seconds % 60)


def parse_window(text: str) -> Window | None:
    """The window ``HH:MM[:SS]-HH:MM[:SS]``, or None for an empty text; ValueError says
    what is wrong."""
    if not text.strip():
        return None
    found = _WINDOW.fullmatch(text)
    if not found:
        raise ValueError(
            f"{text!r} is not a window: write HH:MM-HH:MM (or HH:MM:SS), e.g. 21:00-08:00"
        )
    h1, m1, s1, h2, m2, s2 = found.groups()
    start = int(h1) * 3600 + int(m1) * 60 + int(s1 or 0)
    end = int(h2) * 3600 + int(m2) * 60 + int(s2 or 0)
    if start == end:
        raise ValueError(f"{text!r} starts and ends at the same time: empty it for no quiet hours")
    return Window(start, end, text.strip())


@lru_cache(maxsize=1 << 16)
def phone_zones(number: str) -> tuple[str, ...]:
    """The IANA zones of an E.164 *number* (several for some), () when unknown."""
    try:
        zones = phone_timezone.time_zones_for_number(phonenumbers.parse(number))
    except phonenumbers.NumberParseException:
        return ()
    return tuple(z for z in zones if z != phone_timezone.UNKNOWN_TIMEZONE and canonical_zone(z))


@lru_cache(maxsize=1024)
def _zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


@dataclass(frozen=True)
class Verdict:
    """Whether a set of zones is outside quiet hours now, and until when that holds.

    Open: *until* is when a window next closes in one of them. Deferred: *until* is when
    all of them are next outside quiet hours (None: never within HORIZON_DAYS), *zone* the
    one whose quiet hours end last.
    """

    open: bool
    until: float | None
    zone: str = ""


def _offset(tz: zoneinfo.ZoneInfo, moment: float) -> datetime.timedelta | None:
    return datetime.datetime.fromtimestamp(moment, tz).utcoffset()


def next_offset_change(zone: str, after: float, before: float) -> float | None:
    """The first moment in (*after*, *before*] at which *zone*'s clock is set back or
    forward (its UTC offset changes), or None. Changes are at whole seconds and at least
    hours apart: an hour's steps find one, halving finds its second."""
    tz = _zone(zone)
    offset = _offset(tz, after)
    low = after
    while low < before:
        high = min(low + 3600, before)
        if _offset(tz, high) != offset:
            low, high = math.floor(low), math.ceil(high)
            while high - low > 1:  # the offset at low is the old one, at high the new
                middle = (low + high) // 2
                low, high = (middle, high) if _offset(tz, middle) == offset else (low, middle)
            return float(high)
        low = high
    return None


class Resolver:
    """A recipient's zones and the verdict on them, cached."""

    def __init__(self, window: Window, default_zone: str):
        self.window = window
        self.default_zone = default_zone
        # zones -> (verdict, since, until when it holds)
        self._verdicts: dict[tuple[str, ...], tuple[Verdict, float, float]] = {}

    def zones(self, context: dict) -> tuple[str, ...]:
        """The customer's zones: the timezone column, the phone's, or the default."""
        if zone := context.get("timezone"):
            return (zone,)
        phone = context.get("phone")
        if phone and not context.get("phone_error") and (zones := phone_zones(phone)):
            return zones
        return (self.default_zone,)

    def verdict(self, zones: tuple[str, ...], now: float) -> Verdict:
        """The verdict on *zones* at *now* (a Unix time), from the cache while it holds."""
        cached = self._verdicts.get(zones)
        if cached is not None:
            verdict, since, limit = cached
            if since <= now < limit:
                return verdict
        verdict = self._judge(zones, now)
        limit = verdict.until if verdict.until is not None else now + RECHECK_NEVER
        if not verdict.open:  # (an open verdict's end is bounded so already)
            limit = self._until_clocks_change(zones, now, limit)
        self._verdicts[zones] = (verdict, now, limit)
        return verdict

    def _until_clocks_change(self, zones: tuple[str, ...], now: float, limit: float) -> float:
        """*limit*, or the first moment before it that a clock of *zones* is changed."""
        changes = [c for zone in zones if (c := next_offset_change(zone, now, limit)) is not None]
        return min([limit, *changes])

    def _judge(self, zones: tuple[str, ...], now: float) -> Verdict:
        if not any(self.quiet(zone, now) for zone in zones):
            closes = min(t for z in zones for t in self._times(z, now, self.window.starts()))
            # a clock set back may enter quiet hours again without passing their start
            return Verdict(True, self._until_clocks_change(zones, now, closes))
        ends = sorted((t, z) for z in zones for t in self._times(z, now, self.window.ends()))
        for moment, zone in ends:
            if not any(self.quiet(other, moment) for other in zones):
                return Verdict(False, moment, zone)
        return Verdict(False, None, zones[0])

    def quiet(self, zone: str, moment: float) -> bool:
        local = datetime.datetime.fromtimestamp(moment, _zone(zone))
        second = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
        return self.window.quiet(second)

    def _times(self, zone: str, after: float, clock: datetime.time) -> Iterator[float]:
        """The moments after *after* (within HORIZON_DAYS) when *zone*'s clock shows *clock*:
        twice on the day its clock is set back, if *clock* is in the repeated hour."""
        tz = _zone(zone)
        today = datetime.datetime.fromtimestamp(after, tz).date()
        for days in range(-1, HORIZON_DAYS + 1):
            day = today + datetime.timedelta(days=days)
            local = datetime.datetime.combine(day, clock, tzinfo=tz)
            for moment in sorted({local.timestamp(), local.replace(fold=1).timestamp()}):
                if after < moment <= after + HORIZON_DAYS * DAY:
                    yield moment


@lru_cache(maxsize=4096)  # a run's deferrals share a few moments
def describe_moment(moment: float, zone: str) -> str:
    """``2026-11-26 08:00:00 America/Chicago``."""
    local = datetime.datetime.fromtimestamp(moment, _zone(zone))
    return f"{local:%Y-%m-%d %H:%M:%S} {zone}"


@lru_cache(maxsize=4096)  # a run's deferrals share a few moments
def utc_text(moment: float) -> str:
    """The UTC ISO 8601 time of *moment*, as the ledger keeps times."""
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).isoformat(timespec="milliseconds")


@lru_cache(maxsize=4096)  # a run's deferrals share a few moments
def deferral_reason(moment: float, zone: str) -> str:
    return f"{DEFERRED} until {describe_moment(moment, zone)}"


def never_reason(window: Window, zones: tuple[str, ...]) -> str:
    shown = ", ".join(zones[:3]) + (f" and {len(zones) - 3} more" if len(zones) > 3 else "")
    return (
        f"{NEVER}: no time is outside {window.text} in all {len(zones)} zones of the number "
        f"({shown}); give the customer a timezone"
    )


class QuietHours:
    """The sender's quiet-hours rule for one channel (see the module's docstring).

    *clock* returns the Unix time (``time.time``); the sender waits by it for windows.
    """

    def __init__(
        self,
        window: Window,
        default_zone: str,
        ledger: Ledger,
        clock: Callable[[], float] = time.time,
    ):
        self.resolver = Resolver(window, default_zone)
        self.ledger = ledger
        self.clock = clock
        self._waiting: Counter = Counter()  # opening moment -> rows deferred until then
        self._zones: dict[float, str] = {}  # opening moment -> the zone it is named in
        self._lock = threading.Lock()  # the progress thread reads what the dispatcher counts

    # -- the Admission protocol ----------------------------------------------------------

    def admit(self, rows: list[dict]) -> list[dict]:
        """The rows outside quiet hours now; defer the others in the ledger (skipped when
        no window opens for them)."""
        now = self.clock()
        admitted, deferred = [], []
        for row in rows:
            zones = self.resolver.zones(row["context"])
            verdict = self.resolver.verdict(zones, now)
            if verdict.open:
                row["quiet_until"] = verdict.until
                admitted.append(row)
            elif verdict.until is None:
                reason = never_reason(self.resolver.window, zones)
                self.ledger.skip_pending([row["customer_id"]], reason)
            else:
                deferred.append((row, verdict))
        self._defer(deferred)
        return admitted

    def settle(self, rows: list[dict], status: Status) -> None:
        """Nothing is reserved for a row, so nothing is released."""

    # -- what the sender asks besides ------------------------------------------------------

    def recheck(self, rows: list[dict]) -> list[dict]:
        """The rows whose window is still open (asked just before they are handed to a
        sending thread, and again just before their request leaves: a window may close
        while a page is sent, or while a request waits for a token or after a 429); defer
        the others."""
        now = self.clock()
        stale = [row for row in rows if row.get("quiet_until", 0) <= now]
        if not stale:
            return rows
        kept = {id(row) for row in self.admit(stale)}
        dropped = {id(row) for row in stale} - kept
        return [row for row in rows if id(row) not in dropped]

    def next_open(self) -> float | None:
        """When the next deferred rows' window opens, or None when none is deferred."""
        with self._lock:
            return min(self._waiting) if self._waiting else None

    def waiting(self) -> tuple[int, float | None, str]:
        """(rows deferred, when the next window opens, that moment as the recipients' clock
        shows it) for the status message."""
        with self._lock:
            opens = min(self._waiting) if self._waiting else None
            count = sum(self._waiting.values())
            zone = self._zones.get(opens, "")
        return count, opens, describe_moment(opens, zone) if opens is not None else ""

    def due(self) -> Iterator[dict]:
        """The deferred rows whose window has opened, in the order the windows open (file
        order within one); they are no longer counted as waiting."""
        now = self.clock()
        with self._lock:
            for moment in [m for m in self._waiting if m <= now]:
                del self._waiting[moment]
        yield from self.ledger.deferred_due(utc_text(now), DEFERRED)

    def _defer(self, deferred: list[tuple[dict, Verdict]]) -> None:
        if not deferred:
            return
        items = []
        for row, verdict in deferred:
            moment = verdict.until
            with self._lock:
                self._waiting[moment] += 1
                self._zones.setdefault(moment, verdict.zone)
            reason = deferral_reason(moment, verdict.zone)
            items.append((row["customer_id"], utc_text(moment), reason))
        self.ledger.defer(items)


def describe_waiting(count: int, opens: float | None, shown: str, now: float) -> str:
    """``12 deferred by quiet hours · next window opens 2026-11-26 08:00:00 America/Chicago
    (14:00:00 UTC, in 18 s)`` for the status message and the progress log."""
    if not count or opens is None:
        return ""
    utc = datetime.datetime.fromtimestamp(opens, datetime.UTC)
    wait = opens - now
    if wait <= 0:  # the others are still being sent
        return (
            f"{count:,} deferred by quiet hours · their window opened at {shown} "
            f"({utc:%H:%M:%S} UTC): sent next"
        )
    return (
        f"{count:,} deferred by quiet hours · next window opens {shown} "
        f"({utc:%H:%M:%S} UTC, in {duration(wait)})"
    )


def duration(seconds: float) -> str:
    """*seconds* in words a person reads at a glance: ``12 s``, ``4 min``, ``2.4 h``."""
    if seconds < 90:
        return f"{max(0, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


class PreviewTally:
    """A dry run's view of quiet hours: which recipients would be deferred now and when
    their windows open; those for whom no window opens are skipped, as a real run would."""

    def __init__(self, resolver: Resolver, now: float):
        self.resolver = resolver
        self.now = now
        self.opening: Counter = Counter()
        self.names: dict[float, str] = {}

    def rows(self, rows: Iterable[dict]) -> Iterator[dict]:
        """*rows* as a real run would admit them now (the deferred ones are counted)."""
        for row in rows:
            if row["status"] == Status.PENDING:
                zones = self.resolver.zones(row["context"])
                verdict = self.resolver.verdict(zones, self.now)
                if verdict.until is None and not verdict.open:
                    reason = never_reason(self.resolver.window, zones)
                    row = {**row, "status": Status.SKIPPED, "error": reason}
                elif not verdict.open:
                    self.opening[verdict.until] += 1
                    self.names.setdefault(verdict.until, verdict.zone)
            yield row

    def counts(self) -> dict:
        """``{"deferred": n, "windows": [{"opens": ..., "opens_utc": ..., "recipients": n}]}``."""
        return {
            "window": self.resolver.window.text,
            "deferred": sum(self.opening.values()),
            "windows": [
                {
                    "opens": describe_moment(moment, self.names[moment]),
                    "opens_utc": utc_text(moment),
                    "recipients": n,
                }
                for moment, n in sorted(self.opening.items())
            ],
        }


def describe_preview(counts: dict) -> str:
    """``deferred by quiet hours if sent now: 12 (8 until 2026-11-26 08:00:00
    America/Chicago, ...)`` for a dry run's summary, or ""."""
    if not counts.get("deferred"):
        return ""
    windows = counts["windows"]
    shown = ", ".join(f"{w['recipients']:,} until {w['opens']}" for w in windows[:3])
    more = f" and {len(windows) - 3} more windows" if len(windows) > 3 else ""
    return f"deferred by quiet hours if sent now: {counts['deferred']:,} ({shown}{more})"


def demo_window(zone: str, seconds: float, now: float | None = None) -> str:
    """Quiet hours that began a minute ago in *zone* and end *seconds* from now, as
    ``HH:MM:SS-HH:MM:SS``: ``make run`` shows a deferral without waiting for a night."""
    now = time.time() if now is None else now
    tz = _zone(zone)
    start = datetime.datetime.fromtimestamp(now - 60, tz)
    end = datetime.datetime.fromtimestamp(now + seconds, tz)
    return f"{start:%H:%M:%S}-{end:%H:%M:%S}"
