"""Live progress of a channel: in the Luigi visualiser and on the console.

A daemon thread reports every few seconds, so the sending threads never wait on the
scheduler's RPC or the log. With ``--local-scheduler`` and several workers luigi drops the
visualiser's updates (they reach a forked copy of the task); with a central ``luigid`` they
show in the visualiser and in ``/api/task_list``. The same figures go to the
``campaign_pipeline`` log every ``[campaign] progress_log_seconds``, so a console is never
silent for long while a channel sends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable

import luigi

from .consent.quiet import describe_waiting, duration
from .ledger import Status
from .providers import Kind

log = logging.getLogger("campaign_pipeline")
# seconds of sending the shown rate is measured over: long enough for requests that carry a
# batch each to average out, short enough to follow a change (a 429, a wait for quiet hours)
RATE_WINDOW = 30.0


def describe(
    sent: int,
    failed: int,
    total: int,
    eta_seconds: float | None,
    rate: float | None = None,
    limit: str = "",
) -> str:
    """``1,240 / 5,000 sent · 12 failed · 9.8/s (limit 10/s) · ETA 6 min``."""
    text = f"{sent:,} / {total:,} sent · {failed:,} failed"
    if rate is not None:
        text += f" · {rate:,.1f}/s"
        if limit:
            text += f" (limit {limit})"
    if eta_seconds is not None:
        text += f" · ETA {duration(max(1.0, eta_seconds))}"
    return text


def rate_limit(rate_per_second: float, batch_size: int = 1) -> str:
    """The configured limit in recipients per second, ``10/s`` (``1,000/s`` for 10 requests
    per second of 100 recipients each), the unit of the rate shown beside it."""
    return f"{rate_per_second * batch_size:,.4g}/s"


def steady_span(rate_per_second: float) -> float:
    """The shortest span a rate is measured over: ten requests' time at the limit (a
    second at least), so that one request more or less in it changes the rate by 10 %."""
    return max(1.0, 10.0 / rate_per_second) if rate_per_second > 0 else 1.0


class ProgressReporter:
    """Reports sent/failed counts, the current rate and an ETA for one channel task while
    it sends: to the visualiser every *interval* seconds, to the log every *log_every*.

    *baseline* is the ledger's rows by state before the run; *counts* returns the run's
    outcomes so far by kind (:meth:`ChannelSender.snapshot`), and under ``skipped`` the
    recipients an admission rule skipped while sending (the frequency cap); *deferred* the
    rows quiet hours hold back (:meth:`ChannelSender.deferred`), shown while there are any.

    The rate compares with *limit*: it is counted from the moment the first *burst*
    recipients are done (the token bucket lets those through at once, faster than the
    limit), over the last :data:`RATE_WINDOW` seconds, and shown once that span is
    *min_span* seconds long (a rate over a second or two of batched requests says little)."""

    def __init__(
        self,
        task: luigi.Task,
        baseline: dict[Status, int],
        counts: Callable[[], Counter],
        interval: float = 2.0,
        log_every: float = 10.0,
        limit: str = "",
        name: str = "",
        deferred: Callable[[], tuple[int, float | None, str]] | None = None,
        burst: int = 0,
        min_span: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.task = task
        # (rows deferred by quiet hours, when the next window opens, that moment in words)
        self.deferred = deferred
        self.baseline = Counter(baseline)
        self.counts = counts
        self.interval = min(interval, log_every) if log_every > 0 else interval
        self.log_every = log_every
        self.limit = limit
        self.name = name or str(task)
        # Recipients still to be settled this run, plus those settled by earlier runs.
        self.total = sum(n for status, n in baseline.items() if status != Status.SKIPPED)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self.clock = clock  # time.monotonic; injectable for tests
        self._started = self.clock()
        self._last = ""
        self._logged_at = -float("inf")  # the first report is logged: the channel starts
        self.burst = burst
        self.min_span = min_span
        self._samples: deque[tuple[float, int]] = deque()  # (when, how many done by then)
        self._rate: float | None = None

    def __enter__(self) -> ProgressReporter:
        self.report()
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        if self.log_every > 0:  # the last line has the figures the results file holds
            self.report(final="done" if exc_info[0] is None else "stopped")

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.report()

    def _measured(self, clock: float, done_now: int) -> float | None:
        """Recipients per second past the burst, over the last RATE_WINDOW seconds."""
        if not self._samples and done_now < self.burst:
            return None  # the burst is still being answered: faster than the limit
        self._samples.append((clock, done_now))
        while len(self._samples) > 1 and clock - self._samples[1][0] >= RATE_WINDOW:
            self._samples.popleft()
        since, done_then = self._samples[0]
        span = clock - since
        return (done_now - done_then) / span if span >= self.min_span else None

    def report(self, final: str = "") -> None:
        """Update the visualiser; log when due, and always when *final* (done, stopped)."""
        now = self.counts()
        sent = self.baseline[Status.SENT] + now[Kind.SENT]
        failed = self.baseline[Status.FAILED] + now[Kind.FAILED]
        settled = sent + failed + self.baseline[Status.UNKNOWN]
        done_now = now[Kind.SENT] + now[Kind.FAILED]
        total = self.total - now[Status.SKIPPED]  # skipped while sending (frequency cap)
        remaining = total - settled
        clock = self.clock()
        elapsed = clock - self._started
        eta = remaining * elapsed / done_now if done_now and remaining else None
        self._rate = self._measured(clock, done_now)
        waiting = describe_waiting(*self.deferred(), time.time()) if self.deferred else ""
        if waiting:
            eta = None  # the rest waits for a window, not for the rate
        message = describe(sent, failed, total, eta, self._rate, self.limit)
        if waiting:
            message += f" · {waiting}"
        if self.log_every > 0 and (final or clock - self._logged_at >= self.log_every):
            self._logged_at = clock
            log.info("%s progress: %s%s", self.name, message, f" ({final})" if final else "")
        # the visualiser shows the message in a <pre> that does not wrap: one figure a line,
        # so that none is cut off (the console's line keeps them on one)
        shown = message.replace(" · ", "\n")
        if shown == self._last:
            return
        self._last = shown
        self.task.set_status_message(shown)
        self.task.set_progress_percentage(int(100 * settled / total) if total > 0 else 100)
