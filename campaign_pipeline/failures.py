"""Failures that no retry can heal: end the run at once, and never let them disable a task.

A :class:`~campaign_pipeline.exceptions.PermanentError` (configuration, credentials,
templates, the input's schema) fails the same way on every attempt. luigi cannot tell it from
a transient failure: with ``keep_alive`` the worker would wait ``retry_delay`` for a retry
that cannot succeed, and a central luigid would disable the task after ``retry_count``
failures, refusing the fixed rerun (``not_run``) for ``disable_persist``. So:

- The run ends: luigi's worker takes SIGUSR1 as "stop asking for work, exit once the running
  tasks end" (``Worker.handle_interrupt``). The failed task stays FAILED (exit 30), not
  DISABLED. The signal is sent from the worker's own process when the failed attempt is
  reported (see :func:`retry_count`), not from the task's process when it fails: by then the
  worker has started every task that was ready alongside it (the other channels), so which
  of them run does not depend on how fast the failure came.
- :func:`retry_count` is the task's luigi ``retry_count``: luigid's own plus the permanent
  failures luigid still counts for it (those within its ``disable_window``), so that only
  transient failures use up the retries, two attempts as before.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import luigi
import luigi.interface
import luigi.worker

from .exceptions import SettingsError

log = logging.getLogger("campaign_pipeline")
DISABLE_WINDOW = 3600  # luigi's default [scheduler] disable_window, in seconds
RECORD = ".permanent_failures.json"
# The task processes luigi forks from the worker inherit this pipe: a task that fails for
# good writes its id, and the worker's process reads it when luigi reports the attempt.
_ENDED_READ, _ENDED_WRITE = os.pipe()
os.set_blocking(_ENDED_READ, False)
_ended: set[str] = set()


def give_up(task: luigi.Task, error: BaseException) -> None:
    """Handle a permanent failure of *task* where it ran: say so, and have the run end."""
    first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
    log.error(
        "%s failed for good (not retried; fix the cause and rerun): %s",
        task.task_family,
        first_line,
    )
    end_without_retry(task)


def end_without_retry(task: luigi.Task) -> None:
    """Have the run end once this failed attempt of *task* is reported, not retried, and
    not counted by a central scheduler towards disabling the task."""
    _remember(task)
    os.write(_ENDED_WRITE, f"{task.task_id}\n".encode())


def retry_count(task: luigi.Task) -> int | None:
    """*task*'s luigi retry_count, and the moment a run with a permanent failure ends.

    luigi asks for it in the worker's process when it schedules the task and when an attempt
    of the task has ended. Answer: None (the scheduler's own) unless permanent failures are
    still counted by the central scheduler, which must not disable the task for them.
    """
    if _failed_for_good(task):
        end_run()
    try:
        permanent = len(_recent(task))
    except Exception:  # luigi asks while scheduling: a bad setting is reported elsewhere
        return None
    allowed = luigi.configuration.get_config().getint("scheduler", "retry_count", 0)
    return allowed + permanent if permanent and allowed else None


def _failed_for_good(task: luigi.Task) -> bool:
    """True, once, after an attempt of *task* failed for good, in the worker's own process."""
    if multiprocessing.parent_process() is not None:  # a task process, not the worker
        return False
    try:
        while chunk := os.read(_ENDED_READ, 65536):
            _ended.update(chunk.decode().split())
    except BlockingIOError:  # nothing (more) to read
        pass
    if task.task_id in _ended:
        _ended.discard(task.task_id)
        return True
    return False


def end_run() -> None:
    """Ask this process's luigi worker to take no more tasks and exit when the running ones end.

    Only luigi's own SIGUSR1 handler phases the worker out; without it (``[worker]
    no_install_shutdown_handler``) the signal would kill the process, so it is not sent.
    """
    handler = signal.getsignal(signal.SIGUSR1)
    if getattr(handler, "__func__", None) is not luigi.worker.Worker.handle_interrupt:
        log.warning(
            "luigi's worker has no SIGUSR1 handler ([worker] no_install_shutdown_handler?); "
            "the run ends when luigi's retry policy lets it"
        )
        return
    os.kill(os.getpid(), signal.SIGUSR1)


def _scheduler() -> str | None:
    """The central scheduler of this run, or None for luigi's local one.

    A local scheduler starts with no failures, so a past run's permanent failures must not
    add retries there.
    """
    core = luigi.interface.core()
    if core.local_scheduler:
        return None
    return core.scheduler_url or f"http://{core.scheduler_host}:{core.scheduler_port}"


def _window() -> float:
    return luigi.configuration.get_config().getint("scheduler", "disable_window", DISABLE_WINDOW)


def _recent(task: luigi.Task) -> list[float]:
    """When *task*'s permanent failures that its scheduler still counts happened."""
    scheduler = _scheduler()
    if scheduler is None:
        return []
    path = Path(task.run_dir()) / RECORD
    try:
        times = json.loads(path.read_text()).get(task.task_id, {}).get(scheduler, [])
    except (OSError, ValueError):  # no record yet
        return []
    return [t for t in times if t > time.time() - _window()]


def _remember(task: luigi.Task) -> None:
    """Record this permanent failure for the central scheduler the run reports to."""
    scheduler = _scheduler()
    if scheduler is None:
        return
    try:
        path = Path(task.run_dir()) / RECORD
    except SettingsError:  # a campaign name that names no folder: nowhere to record it
        return
    try:
        with locked_record(path) as records:
            mine = records.setdefault(task.task_id, {})
            now = time.time()
            mine[scheduler] = [t for t in mine.get(scheduler, []) if t > now - _window()] + [now]
    except (OSError, ValueError) as exc:  # e.g. the run folder is what is wrong
        log.warning("could not record the permanent failure in %s: %s", path, exc)


@contextlib.contextmanager
def locked_record(path: Path) -> Iterator[dict]:
    """The JSON object in *path* (created empty), to change in place; written back on exit.

    An exclusive lock is held meanwhile: the channel tasks fail in parallel processes.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        handle.seek(0)
        record = json.loads(handle.read() or "{}")
        yield record
        handle.seek(0)
        handle.truncate()
        json.dump(record, handle)
