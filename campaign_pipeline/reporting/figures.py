"""The figures of one run's report (report.json), aggregated where the data lies.

Each channel's numbers come from its ledger, opened read-only, in SQL: a million recipients
are a few GROUP BY queries, never a million Python dicts. A channel whose result file
survives without its ledger is read from the file (loaded into an in-memory table, so the
same queries apply); a dry run's from its preview. Customer data (ids, contacts, the
providers' error texts) is left out: errors are grouped by the text before their first
colon (``sms provider answered 400 21610``), which names no customer, and ``samples`` holds
rows only when the caller asks for them (``[report] include_samples``).
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import hashlib
import json
import math
import os
import re
import sqlite3
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import luigi

from ..config import consent as consent_config
from ..config import pipeline as campaign_config
from ..consent.store import source_kind
from ..exceptions import RecipientsDeferredError
from ..ledger import RESULT_COLUMNS, Status, skip_kind, utc_now
from ..preview import WOULD_SEND
from ..providers.errors import lookup
from ..safecsv import original_cell
from ..sender import SEND_STATS, redactor
from . import timings

SCHEMA = 1
MAX_BINS = 300
# Bin widths of the send timeline, in seconds: the first giving at most MAX_BINS bins.
BIN_WIDTHS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400)
# Masks the credentials no list holds (signed JWTs, assertion= values) in sample errors.
MASK = redactor([])
# The provider settings a report shows: never a credential variable's name or value.
CONFIG_KEYS = (
    "rate_per_second",
    "burst",
    "concurrency",
    "batch_size",
    "retry_attempts",
    "retry_delay_seconds",
    "timeout_seconds",
    "base_url",
)
# Tasks the report leaves out of its timings: the report's own (running while it writes)
# and the wrappers around it, which do no work of their own.
WRAPPERS = ("CampaignReport", "RunCampaign", "DailyCampaign")
# The ledger's states in the order a report lists them: outcomes first.
STATUSES = (
    Status.SENT,
    Status.FAILED,
    Status.UNKNOWN,
    Status.SKIPPED,
    Status.PENDING,
    Status.IN_FLIGHT,
)
PREVIEW_STATUSES = (WOULD_SEND, Status.FAILED, Status.SKIPPED)
# A failed row's error as the providers' clients write it: "sms provider answered 400 21610"
PROVIDER_ANSWER = re.compile(
    r"^(?P<channel>\S+) provider answered (?P<status>\d{3})(?: (?P<code>\S+))?$"
)
# The text of an error before its first colon, in SQL: what failed rows are grouped by.
HEAD = "CASE WHEN instr(error, ':') > 0 THEN substr(error, 1, instr(error, ':') - 1) ELSE error END"
# sent_at (UTC ISO 8601 with milliseconds) in seconds since the epoch, in SQL.
# (julianday's double is exact to some 20 microseconds: rounded to the ledger's milliseconds)
EPOCH = "(ROUND((julianday(sent_at) - 2440587.5) * 86400000.0) / 1000.0)"
SENT_ROWS = f"status = '{Status.SENT}' AND sent_at != ''"
# The shortest send (first to last sent message, in seconds) whose rate a report gives.
# Under it a send is a few batches and the bucket's burst: its "rate" is the burst's, not
# the limit's (email's three batches of `make run` leave in milliseconds), so the report
# says "too short to measure" instead of a rate, a peak and a share of the limit.
MEASURABLE_SECONDS = 10


def gather(folder: Path, *, dry_run: bool = False, include_samples: bool = False) -> dict:
    """The report.json document of the run folder *folder* (a dry run's ``dry-run`` folder
    with *dry_run*). It reads no consent store: its entries are customer data. Missing files
    are figures not there yet, never an error."""
    from ..channels import registered  # the registry imports the tasks, which import us
    from ..config import report as report_config

    folder = Path(folder)
    date_folder = folder.parent if dry_run else folder
    load = _read_json(folder / "load_summary.json")
    samples = report_config().samples if include_samples else 0
    channels = {}
    for channel in registered():
        channels[channel.name] = _channel(folder, channel, date_folder, dry_run, samples)
    tasks = timings.read(folder)
    _name_failures(channels, tasks, {c.name: c.task_name for c in registered()})
    return {
        "schema": SCHEMA,
        "campaign": date_folder.parent.name,
        "date": date_folder.name,
        "dry_run": dry_run,
        "generated_at": utc_now(),
        "status": status(channels, tasks),
        "customer_file": _customer_file(load),
        "rejected_by_reason": load.get("rejected_by_reason", {}),
        "contact_issues": load.get("contact_issues", {}),
        "segments": [str(s) for s in campaign_config().segments],
        "settings": _settings(),
        "channels": channels,
        "tasks": [t for t in tasks if t["task"] not in WRAPPERS],
        "inputs": inputs(folder, dry_run),
    }


def inputs(folder: Path, dry_run: bool = False) -> dict[str, list[int]]:
    """Each channel's result file (a dry run: preview) as ``[size, mtime_ns]``: what a report
    was made from, so that a newer file makes it out of date (CampaignReport.complete)."""
    from ..channels import registered

    found = {}
    for channel in registered():
        path = folder / _output_name(channel.name, dry_run)
        with contextlib.suppress(OSError):
            stat = path.stat()
            found[path.name] = [stat.st_size, stat.st_mtime_ns]
    return found


def _output_name(channel: str, dry_run: bool) -> str:
    return f"{channel}_preview.json" if dry_run else f"{channel}_results.csv"


def status(channels: dict, tasks: list[dict]) -> dict[str, str]:
    """The run's state and what to do about it: ``failed`` while the latest attempt of a
    task failed (each named with its error's one line, which names the setting or variable
    to fix), else ``deferred`` while recipients wait for their quiet hours to end (until
    when), else ``complete`` once every channel is, else ``incomplete``."""
    latest = [task for task in _latest_of_each_kind(tasks) if task["state"] == "failed"]
    failed = [task for task in latest if not _deferred(task)]
    if failed:
        detail = "; ".join(_failure(task) for task in failed)
        return {"state": "failed", "detail": detail}
    if latest:
        return {"state": "deferred", "detail": "; ".join(task["message"] for task in latest)}
    if {c["state"] for c in channels.values()} <= {"complete", "preview", "off"}:
        return {"state": "complete", "detail": "every task done"}
    return {"state": "incomplete", "detail": _not_done(channels)}


def _latest_of_each_kind(tasks: list[dict]) -> list[dict]:
    """The latest attempt of each kind of task: a channel run again with other parameters
    (a narrower targeting, say) is a task of another id, which supersedes the one before."""
    latest: dict[str, dict] = {}
    for task in tasks:
        seen = latest.get(task["task"])
        if seen is None or (task["ended"] or task["started"]) >= (seen["ended"] or seen["started"]):
            latest[task["task"]] = task
    return list(latest.values())


def _name_failures(channels: dict, tasks: list[dict], families: dict[str, str]) -> None:
    """Mark each channel whose task's latest attempt failed ``failed``, with the error's line,
    so that its own section names what to fix (a credential missing at start-up left it
    "not started", as if it had not run yet)."""
    latest = {task["task"]: task for task in _latest_of_each_kind(tasks)}
    for name, part in channels.items():
        attempt = latest.get(families[name])
        if not attempt or attempt["state"] != "failed" or part["state"] == "off":
            continue
        if _deferred(attempt):  # not a failure: a later run sends them (exit 15)
            part.update(state="deferred", deferred=attempt["message"])
        else:
            part.update(state="failed", failure=_failure(attempt))


def _deferred(task: dict) -> bool:
    """The attempt ended only because recipients wait for their quiet hours to end."""
    return task["error"] == RecipientsDeferredError.__name__ and bool(task.get("message"))


def _failure(task: dict) -> str:
    what = f"{task['task']} failed ({task['error'] or 'unknown error'})"
    return f"{what}: {task['message']}" if task.get("message") else what


def _not_done(channels: dict) -> str:
    done = ("complete", "off")
    waiting = [f"{name} {c['state']}" for name, c in channels.items() if c["state"] not in done]
    return "not every channel has finished: " + ", ".join(waiting)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _customer_file(load: dict) -> dict:
    """The loaded file: its path and content hash as loaded, its size now, the counts."""
    path = load.get("file", "")
    size = None
    with contextlib.suppress(OSError):
        size = os.path.getsize(path) if path else None
    return {
        "path": path,
        "size_bytes": size,
        "sha256": (load.get("inputs") or {}).get("sha256", ""),
        "records_read": load.get("records_read", 0),
        "valid": load.get("valid", 0),
        "rejected": load.get("rejected", 0),
    }


def _settings() -> dict:
    consent = consent_config()
    workers = luigi.configuration.get_config().getint("core", "workers", 1)
    return {
        "consent": {
            "frequency_cap": consent.frequency_cap,
            "frequency_window_days": consent.frequency_window_days,
            "quiet_hours": consent.quiet_hours,
            "default_timezone": consent.default_timezone,
            "quiet_hours_channels": list(consent.quiet_hours_channels),
            "dedupe_contacts": consent.dedupe_contacts,
            "suppressions": consent.suppressions,
        },
        "workers": workers,
    }


def clean_url(url: str) -> str:
    """*url* without user:password@, query or fragment: what a report may show of it."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    with contextlib.suppress(ValueError):
        if parts.port is not None:
            host += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def provider_config(section) -> dict:
    """The allow-listed keys of a provider section (:data:`CONFIG_KEYS`)."""
    shown = {}
    for key in CONFIG_KEYS:
        if hasattr(section, key):
            value = getattr(section, key)
            shown[key] = clean_url(value) if key == "base_url" else value
    return shown


def template(channel, task) -> dict:
    """The channel's template: its name and each part file's sha256 (a part not there is
    left out: the run said so)."""
    folder = Path(campaign_config().templates_dir) / channel.name / task.template
    files = {}
    for group in channel.parts:
        for part in group:
            with contextlib.suppress(OSError):
                files[part] = hashlib.sha256((folder / part).read_bytes()).hexdigest()
    return {"name": task.template, "files": files}


def _channel(folder: Path, channel, date_folder: Path, dry_run: bool, samples: int) -> dict:
    date = datetime.date.fromisoformat(date_folder.name)
    task = channel.task(date=date, campaign=date_folder.parent.name, dry_run=dry_run)
    found = _figures(folder, channel, task, dry_run, samples)
    if off := task.reported_off(folder):  # figures of an earlier run this date, if it had one
        return {**found, "state": "off", "off": off}
    return found


def _figures(folder: Path, channel, task, dry_run: bool, samples: int) -> dict:
    section = channel.config()
    described = {
        "task": channel.task_name,
        "template": template(channel, task),
        "config": provider_config(section),
    }
    if dry_run:
        return {**described, **from_preview(folder / f"{channel.name}_preview.json", samples)}
    ledger = folder / f"{channel.name}_ledger.sqlite"
    results = folder / f"{channel.name}_results.csv"
    limit = section.rate_per_second * getattr(section, "batch_size", 1)
    if ledger.exists():
        state = "complete" if results.exists() else "incomplete"
        with _read_only(ledger) as db:
            figures = from_deliveries(db, limit, samples)
        return {**described, "state": state, "source": ledger.name, **figures}
    if results.exists():
        with _loaded(results) as db:
            figures = from_deliveries(db, limit, samples)
        return {**described, "state": "complete", "source": results.name, **figures}
    return {**described, "state": "not started", "source": "", **empty_figures()}


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[sqlite3.Connection]:
    """The ledger at *path*, read-only: a report never writes it, nor waits for its lock."""
    uri = path.resolve().as_uri() + "?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        yield db


@contextlib.contextmanager
def _loaded(path: Path) -> Iterator[sqlite3.Connection]:
    """A result file as an in-memory ``deliveries`` table (its cells as they were before
    safecsv escaped them), for the queries of :func:`from_deliveries`."""
    with contextlib.closing(sqlite3.connect(":memory:")) as db:
        columns = ", ".join(f"{c} TEXT NOT NULL DEFAULT ''" for c in RESULT_COLUMNS)
        db.execute(f"CREATE TABLE deliveries ({columns})")
        with path.open(newline="", encoding="utf-8") as handle:
            rows = csv.DictReader(handle)
            marks = ", ".join("?" for _ in RESULT_COLUMNS)
            db.executemany(
                f"INSERT INTO deliveries ({', '.join(RESULT_COLUMNS)}) VALUES ({marks})",
                ([original_cell(row.get(c) or "") for c in RESULT_COLUMNS] for row in rows),
            )
        yield db


def empty_figures() -> dict:
    return {
        "targeted": 0,
        "counts": {status.value: 0 for status in STATUSES},
        "by_segment": {},
        "skipped_by_reason": {},
        "suppressed_by_source": {},
        "deferred": 0,
        "failed_by_code": [],
        "failed_by_reason": {},
        "timeline": None,
        "retries": 0,
        "rate_limited": 0,
        "samples": [],
    }


def from_deliveries(db: sqlite3.Connection, limit_per_second: float, samples: int = 0) -> dict:
    """A channel's figures from a ``deliveries`` table (its ledger, or a loaded result file)."""
    counts = {status.value: 0 for status in STATUSES}
    by_segment: dict[str, dict[str, int]] = {}
    found = db.execute("SELECT segment, status, COUNT(*) FROM deliveries GROUP BY segment, status")
    for segment, status, n in found:
        row = by_segment.setdefault(segment, {"targeted": 0, **dict.fromkeys(counts, 0)})
        row["targeted"] += n
        row[status] = row.get(status, 0) + n
        counts[status] = counts.get(status, 0) + n
    by_segment = _in_campaign_order(by_segment)
    skipped, sources = Counter(), Counter()
    found = db.execute(
        "SELECT error, COUNT(*) FROM deliveries WHERE status = ? GROUP BY error", (Status.SKIPPED,)
    )
    for reason, n in found:
        kind = skip_kind(reason)
        skipped[kind] += n
        if kind == "suppressed":
            sources[source_kind(reason)] += n
    by_code, by_reason = failures(db)
    deferred = db.execute("SELECT COUNT(*) FROM deliveries WHERE deferred_until != ''")
    figures = {
        "targeted": sum(counts.values()),
        "counts": counts,
        "by_segment": by_segment,
        "skipped_by_reason": dict(skipped.most_common()),
        "suppressed_by_source": dict(sources.most_common()),
        "deferred": deferred.fetchone()[0],
        "failed_by_code": by_code,
        "failed_by_reason": by_reason,
        "timeline": timeline(db, limit_per_second),
        **send_stats(db),
    }
    figures["samples"] = sample_rows(db, samples) if samples else []
    return figures


def _in_campaign_order(by_segment: dict) -> dict:
    """*by_segment* in the order of ``[campaign] segments``; any other segment (a ledger
    older than a change of them) after those, by name."""
    order = {str(s).casefold(): n for n, s in enumerate(campaign_config().segments)}
    ranked = sorted(by_segment, key=lambda s: (order.get(s.casefold(), len(order)), s))
    return {segment: by_segment[segment] for segment in ranked}


def failures(db: sqlite3.Connection) -> tuple[list[dict], dict[str, int]]:
    """Failed rows grouped by the text before the first colon of their error: a provider's
    answer by status and code (with the error table's meaning and action), anything else
    by that text."""
    by_code: dict[tuple, dict] = {}
    by_reason: Counter = Counter()
    found = db.execute(
        f"SELECT {HEAD} AS head, COUNT(*) FROM deliveries WHERE status = ? GROUP BY head",
        (Status.FAILED,),
    )
    for head, n in found:
        answer = PROVIDER_ANSWER.match(head)
        if answer is None:
            by_reason[head] += n
            continue
        status, code = int(answer["status"]), answer["code"] or ""
        key = (answer["channel"], status, code)
        if key not in by_code:
            row = lookup(answer["channel"], status, code)
            entry = {"status": status, "code": code, "meaning": row.meaning}
            by_code[key] = {**entry, "action": str(row.action), "count": 0}
        by_code[key]["count"] += n
    ordered = sorted(by_code.values(), key=lambda e: (-e["count"], e["status"], e["code"]))
    return ordered, dict(by_reason.most_common())


def bin_width(seconds: float) -> int:
    """The narrowest of :data:`BIN_WIDTHS` giving at most :data:`MAX_BINS` bins over
    *seconds*."""
    for width in BIN_WIDTHS:
        if math.floor(seconds / width) + 1 <= MAX_BINS:
            return width
    return 86400 * math.ceil(seconds / 86400 / (MAX_BINS - 1))  # whole days beyond a year


def timeline(db: sqlite3.Connection, limit_per_second: float) -> dict | None:
    """Sent rows per bin of ``sent_at`` (at most :data:`MAX_BINS` bins), the achieved and
    peak rates and the ratio to the limit; None when nothing was sent."""
    first, last, sent = db.execute(
        f"SELECT MIN({EPOCH}), MAX({EPOCH}), COUNT(*) FROM deliveries WHERE {SENT_ROWS}"
    ).fetchone()
    if not sent or first is None:
        return None
    span = last - first
    width = bin_width(span)
    start = math.floor(first / width) * width
    bins = math.floor((last - start) / width) + 1
    accepted = [0] * bins
    found = db.execute(
        f"SELECT CAST(({EPOCH} - ?) / ? AS INTEGER) AS bin, COUNT(*) FROM deliveries"
        f" WHERE {SENT_ROWS} GROUP BY bin",
        (start, width),
    )
    for index, n in found:
        accepted[min(max(index, 0), bins - 1)] += n
    line = {
        "bin_seconds": width,
        "start": _iso(start),
        "accepted": accepted,
        "limit_per_second": limit_per_second,
        "first_sent": _iso(first),
        "last_sent": _iso(last),
        "measured": span >= MEASURABLE_SECONDS,
        "achieved_per_second": None,
        "peak_per_second": None,
        "ratio": None,
    }
    if line["measured"]:
        achieved = (sent - 1) / span  # n messages over a span: n - 1 intervals
        line["achieved_per_second"] = round(achieved, 3)
        line["peak_per_second"] = round(max(accepted) / width, 3)
        if limit_per_second > 0:
            line["ratio"] = round(achieved / limit_per_second, 4)
    return line


def _iso(epoch: float) -> str:
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return moment.isoformat(timespec="milliseconds")


def send_stats(db: sqlite3.Connection) -> dict[str, int]:
    """The 429 answers and requests sent again that the channel's runs noted in the ledger
    (its ``send_stats`` meta note); zeros for a result file."""
    try:
        found = db.execute("SELECT value FROM meta WHERE key = 'send_stats'").fetchone()
        noted = json.loads(found[0]) if found else {}
    except (sqlite3.OperationalError, ValueError):  # no meta table: a loaded result file
        noted = {}
    return {key: int(noted.get(key, 0)) for key in SEND_STATS}


def sample_rows(db: sqlite3.Connection, limit: int) -> list[dict]:
    """The first *limit* failed, unknown and skipped rows, in file order: customer data,
    shown only with ``[report] include_samples``; signed tokens in their errors masked
    (a ledger or result file of an older version may hold one)."""
    columns = ("customer_id", "segment", "recipient", "status", "error")
    found = db.execute(
        f"SELECT {', '.join(columns)} FROM deliveries WHERE status IN (?, ?, ?)"
        " ORDER BY rowid LIMIT ?",
        (Status.FAILED, Status.UNKNOWN, Status.SKIPPED, limit),
    )
    rows = [dict(zip(columns, row, strict=True)) for row in found]
    return [{**row, "error": MASK(row["error"] or "")} for row in rows]


def from_preview(path: Path, samples: int) -> dict:
    """A dry run's figures, from the channel's preview."""
    preview = _read_json(path)
    if not preview:
        zeros = dict.fromkeys(PREVIEW_STATUSES, 0)
        return {"state": "not started", "source": "", **empty_figures(), "counts": zeros}
    counts = preview.get("counts", {})
    by_status = {status: counts.get("by_status", {}).get(status, 0) for status in PREVIEW_STATUSES}
    by_segment = {
        segment: {"targeted": sum(found.values()), **{s: found.get(s, 0) for s in PREVIEW_STATUSES}}
        for segment, found in counts.get("by_segment", {}).items()
    }
    by_segment = _in_campaign_order(by_segment)
    listed = [row for row in preview.get("not_sent", []) if row.get("status") == Status.FAILED]
    reasons = Counter(row["reason"].partition(":")[0] for row in listed)
    if unlisted := by_status[Status.FAILED] - len(listed):
        reasons["more, not listed in the preview"] += unlisted
    figures = {
        **empty_figures(),
        "state": "preview",
        "source": path.name,
        "targeted": sum(by_status.values()),
        "counts": by_status,
        "by_segment": by_segment,
        "skipped_by_reason": counts.get("skipped_by_reason", {}),
        "suppressed_by_source": counts.get("suppressed_by_source", {}),
        "deferred": counts.get("quiet_hours", {}).get("deferred", 0),
        "failed_by_reason": dict(reasons.most_common()),
    }
    figures["samples"] = [
        {
            "customer_id": row.get("customer_id", ""),
            "segment": row.get("segment", ""),
            "recipient": "",  # a preview keeps no contact of the recipients not sent
            "status": row.get("status", ""),
            "error": MASK(row.get("reason", "")),
        }
        for row in preview.get("not_sent", [])[:samples]
    ]
    return figures
