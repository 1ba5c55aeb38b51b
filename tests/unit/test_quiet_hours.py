"""Quiet hours without a luigi run: the window, a recipient's zones, the verdict on them at a
given moment, the rule's deferrals in a real ledger, and the time zone column's check."""

from __future__ import annotations

import datetime
import json
import time
from zoneinfo import ZoneInfo

import pytest

from campaign_pipeline.consent.quiet import (
    QuietHours,
    Resolver,
    Window,
    parse_window,
    phone_zones,
)
from campaign_pipeline.ledger import PENDING, SENT, SKIPPED, Ledger
from campaign_pipeline.segments.timezones import check_timezone

from .old_ledgers import write_old_ledger

NIGHT = parse_window("21:00-08:00")
UTC = datetime.UTC


def at(text: str, zone: str = "UTC") -> float:
    """The Unix time of a local time ``2026-11-26 07:30`` in *zone*."""
    return datetime.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [("21:00-08:00", 75600, 28800), ("9:05:30 - 9:05:45", 32730, 32745), ("00:00-06:00", 0, 21600)],
)
def test_windows_take_minutes_or_seconds_and_may_wrap_midnight(text, start, end):
    window = parse_window(text)
    assert (window.start, window.end) == (start, end)


@pytest.mark.parametrize("text", ["21:00", "25:00-08:00", "21:00-08:60", "9pm-8am", "08:00-08:00"])
def test_a_bad_window_says_how_to_write_one(text):
    with pytest.raises(ValueError, match="HH:MM|same time"):
        parse_window(text)


def test_an_empty_window_is_none():
    assert parse_window("") is None and parse_window("  ") is None


def test_a_wrapping_window_is_quiet_late_and_early():
    assert NIGHT.quiet(21 * 3600) and NIGHT.quiet(3600) and NIGHT.quiet(8 * 3600 - 1)
    assert not NIGHT.quiet(8 * 3600) and not NIGHT.quiet(20 * 3600 + 3599)
    day = Window(9 * 3600, 17 * 3600, "09:00-17:00")
    assert day.quiet(9 * 3600) and not day.quiet(17 * 3600) and not day.quiet(3600)


def test_the_timezone_column_wins_then_the_phone_then_the_default():
    resolver = Resolver(NIGHT, "Europe/Paris")
    assert resolver.zones({"timezone": "Asia/Tokyo", "phone": "+12125550100"}) == ("Asia/Tokyo",)
    assert resolver.zones({"timezone": "", "phone": "+12125550100"}) == ("America/New_York",)
    assert resolver.zones({"phone": "+19075550102"}) == ("America/Adak", "America/Anchorage")
    assert resolver.zones({"phone": "+12125550100", "phone_error": "invalid"}) == ("Europe/Paris",)
    assert resolver.zones({"phone": "+447700900123"}) == ("Europe/Paris",)  # no zone known
    assert resolver.zones({}) == ("Europe/Paris",)


def test_outside_quiet_hours_counts_only_when_outside_in_every_zone():
    resolver = Resolver(NIGHT, "UTC")
    zones = ("America/Adak", "America/Anchorage")  # Adak is an hour behind Anchorage
    # 08:30 in Anchorage is 07:30 in Adak: still quiet there
    verdict = resolver.verdict(zones, at("2026-11-26 08:30", "America/Anchorage"))
    assert not verdict.open
    assert verdict.until == at("2026-11-26 08:00", "America/Adak")
    assert verdict.zone == "America/Adak"
    # 20:30 in Adak is 21:30 in Anchorage: quiet again
    assert not resolver.verdict(zones, at("2026-11-26 20:30", "America/Adak")).open
    noon = resolver.verdict(zones, at("2026-11-26 12:00", "America/Adak"))
    assert noon.open and noon.until == at("2026-11-26 21:00", "America/Anchorage")


def test_no_common_window_is_never_and_verdicts_are_cached_until_they_change():
    resolver = Resolver(NIGHT, "UTC")
    apart = ("UTC", "Asia/Shanghai", "America/Los_Angeles")  # 8 h apart: never 08-21 in all
    assert resolver.verdict(apart, at("2026-11-26 12:00")).until is None
    one = ("America/Chicago",)
    first = resolver.verdict(one, at("2026-11-26 10:00", "America/Chicago"))
    assert resolver.verdict(one, at("2026-11-26 20:59", "America/Chicago")) is first
    assert not resolver.verdict(one, at("2026-11-26 21:00", "America/Chicago")).open


def test_the_number_lookups_are_cached_and_cheap():
    phone_zones.cache_clear()
    numbers = [f"+1212555{n:04d}" for n in range(2000)]
    started = time.perf_counter()
    for number in numbers:
        phone_zones(number)
    first = (time.perf_counter() - started) / len(numbers)
    started = time.perf_counter()
    for number in numbers:
        phone_zones(number)
    again = (time.perf_counter() - started) / len(numbers)
    assert phone_zones.cache_info().hits == len(numbers)
    assert again < first / 5, (first, again)


@pytest.fixture
def ledger_with(tmp_path):
    """A ledger of one pending SMS row per customer, with its context; closed afterwards."""
    opened: list[Ledger] = []

    def make(contexts: dict[str, dict]) -> Ledger:
        opened.append(Ledger(str(tmp_path / "sms_ledger.sqlite")))
        opened[-1].follow(
            (
                {"customer_id": cid, "targeted": True, "segment": "new", "recipient": "r",
                 "status": PENDING, "error": "", "context": context}
                for cid, context in contexts.items()
            ),
            "{}",
        )  # fmt: skip
        return opened[-1]

    yield make
    for ledger in opened:
        ledger.close()


def test_the_rule_admits_the_open_defers_the_quiet_and_skips_the_never(ledger_with):
    ledger = ledger_with({
        "A": {"timezone": "America/Chicago"},  # 12:00 there
        "B": {"timezone": "Asia/Tokyo"},  # 03:00 there
        "C": {"phone": "+19075550102"},
        "D": {"timezone": "Europe/Paris"},  # 19:00 there
    })  # fmt: skip
    now = at("2026-11-26 12:00", "America/Chicago")
    clock = [now]
    rule = QuietHours(parse_window("21:00-08:00"), "UTC", ledger, clock=lambda: clock[0])
    rule.resolver.verdict(("Europe/Paris",), now)

    admitted = rule.admit(list(ledger.pending()))

    assert [row["customer_id"] for row in admitted] == ["A", "C", "D"]
    rows = {row["customer_id"]: row for row in ledger.rows()}
    assert rows["B"]["status"] == PENDING
    assert rows["B"]["error"] == "deferred: quiet hours until 2026-11-27 08:00:00 Asia/Tokyo"
    assert rows["B"]["deferred_until"] == "2026-11-26T23:00:00.000+00:00"
    assert rule.waiting() == (1, at("2026-11-27 08:00", "Asia/Tokyo"),
                              "2026-11-27 08:00:00 Asia/Tokyo")  # fmt: skip
    # two hours later Paris is quiet: the row handed out earlier is held back
    clock[0] = now + 2 * 3600
    assert [row["customer_id"] for row in rule.recheck(admitted)] == ["A", "C"]
    assert rule.waiting()[0] == 2
    # nothing is due before its window opens, then in the order the windows open
    assert list(rule.due()) == []
    clock[0] = at("2026-11-27 09:00", "Asia/Tokyo")
    assert [row["customer_id"] for row in rule.admit(list(rule.due()))] == ["B"]
    ledger.claim(["B"])
    ledger.finish(["B"], SENT)  # as the sender does
    clock[0] = at("2026-11-27 08:00", "Europe/Paris")
    assert [row["customer_id"] for row in rule.due()] == ["D"]
    assert rule.next_open() is None
    sent = next(row for row in ledger.rows() if row["customer_id"] == "B")
    assert sent["error"] == "" and sent["deferred_until"] == "2026-11-26T23:00:00.000+00:00"


def test_a_recipient_no_window_opens_for_is_skipped_with_the_reason(ledger_with):
    # toll free: 42 zones from Guam to Pago Pago, whose clocks span 10.5 hours
    ledger = ledger_with({"T": {"phone": "+18005550100"}})
    long_nights = parse_window("18:00-10:00")  # 8 open hours
    rule = QuietHours(long_nights, "UTC", ledger, clock=lambda: at("2026-11-26 12:00"))

    assert rule.admit(list(ledger.pending())) == []

    [row] = ledger.rows()
    assert row["status"] == SKIPPED
    assert row["error"].startswith("quiet hours: no time is outside 18:00-10:00 in all 42 zones")
    assert rule.next_open() is None


def test_the_timezone_column_is_checked_and_spelled_as_iana_does():
    assert check_timezone("america/new_york") == ("America/New_York", "")
    assert check_timezone("") == ("", "")
    zone, reason = check_timezone("Europe/Berln")
    assert zone == "" and reason == (
        "invalid: timezone 'Europe/Berln' is not an IANA time zone name; did you mean "
        "Europe/Berlin?"
    )
    assert check_timezone("localtime")[1].startswith("invalid: timezone 'localtime'")
    assert check_timezone("/etc/passwd")[1].startswith("invalid: timezone")
    assert json.dumps(check_timezone("UTC")) == '["UTC", ""]'


def test_a_ledger_from_before_quiet_hours_gains_the_column(tmp_path):
    path = tmp_path / "old.sqlite"
    write_old_ledger(str(path), "r")

    ledger = Ledger(str(path))

    assert [(row["customer_id"], row["deferred_until"]) for row in ledger.rows()] == [("A", "")]
    ledger.close()


def test_the_repeated_hour_of_autumn_is_quiet_again_though_no_window_opened():
    """New York sets its clocks back from 02:00 EDT to 01:00 EST on 2026-11-01: with quiet
    hours until 01:30, 01:40 EDT is open and 01:10 EST, half an hour later, quiet again."""
    resolver = Resolver(parse_window("22:00-01:30"), "UTC")
    zones = ("America/New_York",)
    first_pass = at("2026-11-01 01:40", "America/New_York")  # EDT (fold 0)
    set_back = at("2026-11-01 06:00", "UTC")  # 02:00 EDT = 01:00 EST
    repeated = set_back + 600  # 01:10 EST

    opened = resolver.verdict(zones, first_pass)
    again = resolver.verdict(zones, repeated)

    assert opened.open and opened.until == set_back, "open only until the clock goes back"
    assert not again.open, "the cached verdict did not outlive the change of clocks"
    assert again.until == set_back + 1800, "quiet until 01:30 EST, not a day later"
    fresh = Resolver(parse_window("22:00-01:30"), "UTC").verdict(zones, repeated)
    assert (fresh.open, fresh.until) == (False, set_back + 1800)


def test_the_missing_hour_of_spring_does_not_keep_a_window_open_past_its_start():
    """New York skips 02:00-03:00 on 2026-03-08: quiet hours from 02:30 begin at 03:00 EDT."""
    resolver = Resolver(parse_window("02:30-06:00"), "UTC")
    zones = ("America/New_York",)
    forward = at("2026-03-08 07:00", "UTC")  # 02:00 EST = 03:00 EDT

    opened = resolver.verdict(zones, forward - 1800)  # 01:30 EST

    assert opened.open and opened.until <= forward
    assert not resolver.verdict(zones, forward + 60).open
