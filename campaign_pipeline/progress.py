"""Live progress of a channel in the Luigi visualiser.

A daemon thread reports every few seconds, so the sending threads never wait on the
scheduler's RPC. With ``--local-scheduler`` and several workers luigi drops these updates
(they reach a forked copy of the task); with a central ``luigid`` they show in the
visualiser and in ``/api/task_list``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

import luigi


def describe(sent: int, failed: int, total: int, eta_seconds: float | None) -> str:
    """``1,240 / 5,000 sent · 12 failed · ETA 6 min``."""
    text = f"{sent:,} / {total:,} sent · {failed:,} failed"
    if eta_seconds is not None:
        text += f" · ETA {_duration(eta_seconds)}"
    return text


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


class ProgressReporter:
    """Reports sent/failed counts and an ETA for one channel task while it sends."""

    def __init__(
        self,
        task: luigi.Task,
        baseline: dict[str, int],
        counts: Callable[[], Counter],
        interval: float = 2.0,
    ):
        self.task = task
        self.baseline = Counter(baseline)
        self.counts = counts
        self.interval = interval
        # Recipients still to be settled this run, plus those settled by earlier runs.
        self.total = sum(n for status, n in baseline.items() if status != "skipped")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
        self._started = time.monotonic()
        self._last = ""

    def __enter__(self) -> ProgressReporter:
        self.report()
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.report()

    def report(self) -> None:
        now = self.counts()
        sent = self.baseline["sent"] + now["sent"]
        failed = self.baseline["failed"] + now["failed"]
        settled = sent + failed + self.baseline["unknown"]
        done_now = now["sent"] + now["failed"]
        remaining = self.total - settled
        elapsed = time.monotonic() - self._started
        eta = remaining * elapsed / done_now if done_now and remaining else None
        message = describe(sent, failed, self.total, eta)
        if message == self._last:
            return
        self._last = message
        self.task.set_status_message(message)
        self.task.set_progress_percentage(int(100 * settled / self.total) if self.total else 100)
