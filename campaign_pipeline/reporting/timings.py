"""When each task of a run started and ended: one JSON line per luigi event, per run folder.

tasks.py's event handlers call :func:`record` on START, SUCCESS and FAILURE (and when luigi
ends a task's process: TIMEOUT, PROCESS_FAILURE). With several workers each task runs in a
process of its own, so the lines are appended with ``O_APPEND``, one short ``write`` each:
the kernel keeps concurrent appends whole. :func:`read` gives the latest attempt per task.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

from ..ledger import utc_now

TASK_LOG = "task_log.jsonl"
# event -> the state a task is in after it
STATES = {"start": "running", "success": "done", "failure": "failed"}


def record(
    folder: Path, task_family: str, task_id: str, event: str, error: str = "", message: str = ""
) -> None:
    """Append *event* (``start``, ``success`` or ``failure``) of a task to *folder*'s log;
    *error* is the exception's class name, *message* its first line with the credentials
    masked (:func:`campaign_pipeline.notify.one_line`): what the report says to fix."""
    line = {"at": utc_now(), "task": task_family, "task_id": task_id, "event": event}
    if error:
        line["error"] = error
    if message:
        line["message"] = message
    Path(folder).mkdir(parents=True, exist_ok=True)
    data = (json.dumps(line) + "\n").encode()
    handle = os.open(Path(folder) / TASK_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(handle, data)
    finally:
        os.close(handle)


def read(folder: Path) -> list[dict]:
    """The latest attempt of each task in *folder*'s log, in the order the tasks first
    started: ``{"task", "task_id", "started", "ended", "seconds", "state", "error",
    "message"}``, state ``done``, ``failed`` or ``running`` (started, not ended: running, or
    killed)."""
    tasks: dict[str, dict] = {}
    try:
        lines = (Path(folder) / TASK_LOG).read_text().splitlines()
    except OSError:
        return []
    for text in lines:
        try:
            line = json.loads(text)
            event, task_id = line["event"], line["task_id"]
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a crash
        entry = tasks.get(task_id)
        if event == "start" or entry is None:
            entry = tasks[task_id] = {  # a retry keeps the task's place in the order
                "task": line.get("task", ""),
                "task_id": task_id,
                "started": line["at"] if event == "start" else "",
                "ended": "",
                "seconds": None,
                "state": "running",
                "error": "",
                "message": "",
            }
        if event != "start":
            entry["ended"] = line["at"]
            entry["state"] = STATES.get(event, "failed")
            entry["error"] = line.get("error", "")
            entry["message"] = line.get("message", "")
            if entry["started"]:
                entry["seconds"] = round(_seconds(entry["started"], entry["ended"]), 3)
    return list(tasks.values())


def _seconds(start: str, end: str) -> float:
    return (
        datetime.datetime.fromisoformat(end) - datetime.datetime.fromisoformat(start)
    ).total_seconds()
