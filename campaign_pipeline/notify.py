"""Failure and retry emails to the campaign's owner.

Luigi emails every failed attempt alike and has no retry event, so its own failure emails
are switched off (``[worker] send_failure_email = false``) and these handlers decide: a
failure is a *retry* while the worker stays alive and the task has failed fewer times in
this run than ``[scheduler] retry_count`` allows, and *final* otherwise. Mail goes through
luigi's ``[email]`` and ``[smtp]`` settings. The message names the task, campaign, date and
error, and never a credential.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import socket
from pathlib import Path

import luigi
import luigi.notifications
import luigi.worker

from .config import notifications
from .failures import locked_record
from .sender import redactor

log = logging.getLogger("campaign_pipeline.notify")
UNLIMITED_RETRIES = 999999999  # luigi's own default for [scheduler] retry_count


def failed(task: luigi.Task, error: str, permanent: bool = False) -> None:
    """Count this failure of *task* and email the owner if the settings ask for it.

    A *permanent* failure (a PermanentError) ends the run and is never retried.
    """
    settings = notifications()
    if not settings.owner:
        return
    attempt = _count_failure(task)
    allowed = luigi.configuration.get_config().getint("scheduler", "retry_count", UNLIMITED_RETRIES)
    will_retry = not permanent and luigi.worker.worker().keep_alive and attempt < allowed
    if not (settings.email_on_retry if will_retry else settings.email_on_failure):
        return
    subject, body = _message(task, _redact(error), attempt, allowed, will_retry, permanent)
    sender = luigi.notifications.email().sender
    luigi.notifications.send_email(subject, body, sender, (settings.owner,))


def _message(
    task, error: str, attempt: int, allowed: int, will_retry: bool, permanent: bool = False
) -> tuple[str, str]:
    state = "failed, will retry" if will_retry else "FAILED"
    subject = f"campaign {task.campaign} {task.date}: {task.task_family} {state}"
    of = f" of {allowed}" if allowed != UNLIMITED_RETRIES and not permanent else ""
    after = "luigi retries it after [scheduler] retry_delay" if will_retry else "fix and rerun"
    if permanent:
        after += " (configuration, credentials, a template or the input: a retry cannot help)"
    lines = [
        f"Task:     {task.task_family}",
        f"Campaign: {task.campaign}",
        f"Date:     {task.date}",
        f"Host:     {socket.gethostname()}",
        f"Attempt:  {attempt}{of} in this run",
        f"Next:     {after}",
        "",
        "Error:",
        error,
    ]
    return subject, "\n".join(lines)


def _count_failure(task: luigi.Task) -> int:
    """Failures of *task* so far in this luigi run (one worker process), this one included."""
    run = os.getpid() if multiprocessing.parent_process() is None else os.getppid()
    with locked_record(Path(task.run_dir()) / ".failures.json") as counts:
        mine = counts.get(task.task_id, {})
        attempt = mine.get("count", 0) + 1 if mine.get("run") == run else 1
        counts[task.task_id] = {"run": run, "count": attempt}
    return attempt


# The most of a failure's message the task log (and so the report) keeps.
ONE_LINE_CHARS = 400


def one_line(error: BaseException | str) -> str:
    """The first line of *error*'s message (an exception's, or luigi's text of a timeout),
    credentials masked and cut to :data:`ONE_LINE_CHARS`: what the report shows to fix."""
    text = str(error).strip().splitlines()
    line = _redact(text[0].strip()) if text else ""
    return line if len(line) <= ONE_LINE_CHARS else line[: ONE_LINE_CHARS - 1] + "…"


def _redact(text: str) -> str:
    """Mask the credential values of every channel, wherever they came from."""
    from .channels import registered  # notify is imported by tasks, which the registry imports

    names = [name for channel in registered() for name in channel.credential_variables()]
    return redactor([os.environ.get(name, "") for name in names])(text)
