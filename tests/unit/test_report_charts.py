"""The report's SVG charts: round ticks, and the structure the page and its readers rely on."""

from __future__ import annotations

import copy
import math
import re
import xml.etree.ElementTree as ET

import pytest

from campaign_pipeline.reporting import charts
from campaign_pipeline.testing.reports import synthetic_report, write_week


@pytest.mark.parametrize(
    ("high", "count", "integer", "expected"),
    [
        (295, 6, True, [0, 50, 100, 150, 200, 250, 300]),
        (21.85, 6, False, [0, 5, 10, 15, 20, 25]),
        (0.3, 6, False, [0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]),
        (3, 6, True, [0, 1, 2, 3]),
        (0.4, 6, True, [0, 1]),
        (1_234_567, 6, True, [0, 500_000, 1_000_000, 1_500_000]),
        (65, 10, False, [0, 10, 20, 30, 40, 50, 60, 70]),
        (100, 5, False, [0, 20, 40, 60, 80, 100]),
    ],
)
def test_nice_ticks_are_round_steps_from_zero_past_the_highest_value(
    high, count, integer, expected
):
    assert charts.nice_ticks(high, count, integer=integer) == expected


def test_nice_ticks_always_step_by_one_two_or_five_times_a_power_of_ten():
    for high in [0.013, 0.7, 1, 4.2, 9.99, 10, 17, 333, 999, 1001, 41_200, 7_654_321]:
        for count in (2, 4, 6, 8):
            ticks = charts.nice_ticks(high, count)
            step = ticks[1] - ticks[0]
            mantissa = step / 10 ** math.floor(math.log10(step))
            assert round(mantissa, 6) in (1, 2, 5), (high, count, ticks)
            assert ticks[0] == 0 and ticks[-1] >= high > ticks[-2], (high, count, ticks)
            assert len(ticks) - 1 <= count, (high, count, ticks)
            assert all(math.isclose(b - a, step) for a, b in zip(ticks, ticks[1:], strict=False))


def test_nice_step():
    assert [charts.nice_step(r) for r in (1, 1.1, 2.5, 7, 0.012, 300)] == [1, 2, 5, 10, 0.02, 500]


def parsed(svg: str) -> ET.Element:
    """The chart as XML: it must be well-formed, start with <svg and hold no prolog."""
    assert svg.startswith('<svg class="chart" data-chart=') and svg.endswith("</svg>")
    assert "<?xml" not in svg and "<!DOCTYPE" not in svg and "http" not in svg
    root = ET.fromstring(svg)
    assert re.fullmatch(r"0 0 \d+ \d+", root.get("viewBox"))
    assert root[0].tag == "title" and root[0].text
    return root


def texts(root: ET.Element) -> list[str]:
    return [t.text for t in root.iter("text")]


def test_the_six_charts_of_a_full_report_draw_what_the_page_shows():
    report = synthetic_report()
    names = []
    for name, channel in report["channels"].items():
        bars = parsed(charts.segment_bars(channel))
        timeline = parsed(charts.timeline({**channel, "name": name}))
        names += [bars.get("data-chart"), timeline.get("data-chart")]
        # a bar per segment and all segments, each piece a rect with its count as a tooltip
        labels = texts(bars)
        assert labels[:4] == ["all segments", "premium", "regular", "new"]
        pieces = [r for r in bars.iter("rect") if r.find("title") is not None]
        tips = [r.find("title").text for r in pieces]
        for segment, counts in channel["by_segment"].items():
            assert f"{segment}: {counts['sent']:,} sent" in tips
        total = sum(float(r.get("width")) for r in pieces if r.find("title").text.startswith("all"))
        first = [float(r.get("width")) for r in pieces if "premium: " in r.find("title").text]
        assert total > sum(first) > 0
        for reason in channel["skipped_by_reason"]:
            assert f"skipped: {reason}" in labels  # the legend
        assert "recipients" in labels and "0" in labels
        # the timeline: the bins as one filled path and its outline, the dashed limit line
        paths = [p.get("d") for p in timeline.iter("path")]
        steps = [d for d in paths if d.count("H") >= len(channel["timeline"]["accepted"])]
        assert len(steps) == 2
        assert [line.get("stroke-dasharray") for line in timeline.iter("line")] == ["6 4"]
        line = channel["timeline"]
        achieved = f"achieved {line['achieved_per_second']:.3g}/s"
        assert texts(timeline)[0] == f"{name}  {achieved} = {line['ratio']:.0%} of the limit"
        assert "limit 10/s" in texts(timeline)
        unit = "minutes" if line["bin_seconds"] * len(line["accepted"]) > 600 else "seconds"
        assert f"{unit} after 10:00:00 UTC" in texts(timeline)
    assert names == [f"{kind}-{c['task']}" for c in report["channels"].values()
                     for kind in ("bars", "timeline")]  # fmt: skip
    svg = "".join(charts.segment_bars(c) for c in report["channels"].values())
    ids = re.findall(r'\sid="([^"]+)"', svg)
    assert len(ids) == len(set(ids)) == 3


def test_tick_labels_of_a_million_recipients_do_not_overlap():
    channel = synthetic_report(scale=1_000_000)["channels"]["email"]
    root = parsed(charts.segment_bars(channel))
    ticks = [t for t in root.iter("text") if t.get("text-anchor") == "middle"][:-1]
    assert [t.text for t in ticks][-1].endswith(",000,000")
    for a, b in zip(ticks, ticks[1:], strict=False):
        room = float(b.get("x")) - float(a.get("x"))
        assert room > charts._width(a.text) / 2 + charts._width(b.text) / 2, (a.text, b.text)


def test_names_from_the_data_are_escaped():
    channel = copy.deepcopy(synthetic_report()["channels"]["email"])
    channel["by_segment"] = {"<b>vip</b> & co": channel["by_segment"]["premium"]}
    channel["skipped_by_reason"] = {'"odd" <reason>': 3}
    svg = charts.segment_bars(channel)
    assert "&lt;b&gt;vip&lt;/b&gt; &amp; co" in svg and "<b>" not in svg
    assert "<b>vip</b> & co" in texts(parsed(svg))


def test_the_history_draws_a_line_and_markers_per_channel_with_gaps(tmp_path):
    from campaign_pipeline.reporting.history import gather_history

    write_week(tmp_path / "demo", days=4, pages=False)
    history = gather_history(tmp_path / "demo")
    del history["dates"][1]["channels"]["sms"]  # sms did not run that day
    root = parsed(charts.history_lines(history))
    assert root.get("data-chart") == "history"
    coloured = [p for p in root.iter("path") if p.get("stroke") in charts.CHANNEL_COLOURS]
    lines = [p.get("d") for p in coloured if p.get("fill") == "none" and "L" in p.get("d")]
    assert len(lines) == 6  # a channel per panel, two panels
    sms = [d for d in lines if d.count("M") == 2]  # broken where the date lacks it
    assert len(sms) == 2 and all(d.count("L") == 1 for d in sms)
    labels = texts(root)
    assert [t for t in labels if re.fullmatch(r"\d\d-\d\d", t)] == [
        "11-19",
        "11-20",
        "11-21",
        "11-22",
    ]
    assert {"email", "sms", "push", "sent per date"} <= set(labels)
    assert any(t.endswith("%") for t in labels)
