"""The progress line's rate can be compared with the limit (issue 19, item 7)."""

from __future__ import annotations

import re
from collections import Counter

from campaign_pipeline.ledger import Status
from campaign_pipeline.progress import ProgressReporter, rate_limit, steady_span
from campaign_pipeline.providers import Kind

RATE = re.compile(r"^([\d.,]+)/s \(limit ([^)]*)\)$", re.MULTILINE)


class Task:
    """What the reporter calls on a luigi task: the messages it would show the visualiser."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def set_status_message(self, message: str) -> None:
        self.messages.append(message)

    def set_progress_percentage(self, _percentage: int) -> None:
        pass


def test_the_rate_shown_beside_the_limit_leaves_out_the_burst_and_batch_granularity():
    """The demo's email: 8 recipients/s as 0.8 requests/s of 10, after a burst of 5 requests
    answered at once, reported every 2 s (it showed 9.9/s, and 25/s at the start)."""
    rate_per_second, batch, burst = 0.8, 10, 5
    answered = [0.15] * burst + [0.15 + n / rate_per_second for n in range(1, 80)]
    now = [0.0]
    task = Task()
    reporter = ProgressReporter(
        task,
        {Status.PENDING: 1000},
        lambda: Counter({Kind.SENT: batch * sum(t <= now[0] for t in answered)}),
        log_every=0,
        limit=rate_limit(rate_per_second, batch),
        burst=burst * batch,
        min_span=steady_span(rate_per_second),
        clock=lambda: now[0],
    )
    for tick in range(1, 45):
        now[0] = tick * 2.0
        reporter.report()

    shown = [(float(rate), limit) for rate, limit in RATE.findall("\n".join(task.messages))]
    assert shown, task.messages
    assert {limit for _, limit in shown} == {"8/s"}
    assert all(rate <= 8.0 * 1.1 for rate, _ in shown), shown
    assert abs(shown[-1][0] - 8.0) < 0.5, shown


def test_the_limit_is_in_recipients_per_second_and_short():
    assert rate_limit(10) == "10/s"
    assert rate_limit(10, 100) == "1,000/s"
    assert steady_span(20) == 1.0 and steady_span(0.8) == 12.5


def test_the_visualiser_gets_one_figure_a_line_so_that_none_is_cut_off():
    """The visualiser shows the status message in a <pre> that does not wrap; it was cut off
    before the ETA."""
    now = [0.0]
    done = Counter()
    task = Task()
    reporter = ProgressReporter(
        task,
        {Status.PENDING: 5_000_000},
        lambda: done,
        log_every=0,
        limit=rate_limit(10, 100),
        clock=lambda: now[0],
        deferred=lambda: (15, 1e10, "2286-11-20 17:46:40 America/Argentina/Buenos_Aires"),
    )
    for tick in range(1, 4):
        now[0], done[Kind.SENT] = tick * 2.0, tick * 2000
        reporter.report()

    lines = task.messages[-1].splitlines()
    assert lines[:4] == ["6,000 / 5,000,000 sent", "0 failed", "1,000.0/s (limit 1,000/s)",
                         "15 deferred by quiet hours"]  # fmt: skip
    assert lines[4].startswith("next window opens 2286-11-20 17:46:40 America/Argentina/")
