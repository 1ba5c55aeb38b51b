"""Each run folder's report: report.json (the figures) and report.html (the page).

:func:`write` gathers the figures (:mod:`.figures`, aggregated in SQL over the ledgers) and
renders the page (:mod:`.page`) from them: one document for both. CampaignReport calls it
after the channels, and tasks.py's handlers whenever a task ends (a failure is read from
the task log, :mod:`.timings`). :func:`report_url` is the link the
visualiser shows for the run's tasks.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from pathlib import Path

REPORT_HTML = "report.html"
REPORT_JSON = "report.json"
# Held while a report is gathered and written: tasks ending at once in processes of their
# own take turns, so the last report written was gathered after the last file changed.
REPORT_LOCK = ".report.lock"


def write(folder: Path, *, dry_run: bool = False) -> Path:
    """Write report.json and report.html of the run folder *folder* (a dry run's
    ``dry-run`` folder with *dry_run*), each atomically; return the report.html path."""
    from ..config import report as report_config
    from . import figures, page

    folder = Path(folder)
    samples = report_config().include_samples
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / REPORT_LOCK).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        report = figures.gather(folder, dry_run=dry_run, include_samples=samples)
        _replace(folder / REPORT_JSON, json.dumps(report, indent=2, ensure_ascii=False))
        html = folder / REPORT_HTML
        _replace(html, page.render(report))
    return html


def _replace(path: Path, text: str) -> None:
    """Write *path* through a temporary file in its folder and a rename: a reader (or the
    report server) sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def report_url(folder: Path) -> str:
    """The link to *folder*'s report.html: ``[report] base_url`` and the folder's path under
    ``[campaign] output_dir``, or a ``file://`` URL when base_url is empty (or the folder is
    not under output_dir)."""
    from urllib.parse import quote

    from ..config import pipeline
    from ..config import report as report_config

    page = Path(folder).resolve() / REPORT_HTML
    base = report_config().base_url.rstrip("/")
    if base:
        with contextlib.suppress(ValueError):
            relative = page.relative_to(Path(pipeline().output_dir).resolve())
            return f"{base}/{quote(relative.as_posix())}"
    return page.as_uri()
