"""Report documents made by hand from the report.json schema, for the page and chart tests.

:func:`synthetic_report` has every status, skip reason, suppression source, provider error
code and a timeline of the given number of bins, so a test can render a page that shows every
part of the report without running a campaign; its numbers add up as a real run's do.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

SEGMENTS = ("premium", "regular", "new")
STATUSES = ("sent", "failed", "unknown", "skipped", "pending", "in_flight")
FAILED_CODES = {
    "email": [(400, "", "bad request: the message or an address is malformed", "failed", 3)],
    "sms": [
        (400, "21610", "recipient unsubscribed (replied STOP)", "failed", 2),
        (400, "21211", "invalid 'To' phone number", "failed", 1),
    ],
    "push": [(404, "UNREGISTERED", "the app was uninstalled or the token expired", "failed", 2)],
}


def synthetic_report(
    date: str = "2026-11-25", *, bins: int = 300, scale: int = 1, samples: bool = False
) -> dict:
    """A complete report.json document for *date* (its numbers vary with the date, as a
    week of runs does); *scale* multiplies every recipient count."""
    day = datetime.date.fromisoformat(date).toordinal()
    channels = {
        name: _channel(name, index, day, bins, scale, samples)
        for index, name in enumerate(("email", "sms", "push"))
    }
    return {
        "schema": 1,
        "campaign": "demo",
        "date": date,
        "dry_run": False,
        "generated_at": f"{date}T10:05:02.123+00:00",
        "status": {"state": "complete", "detail": "every task done"},
        "customer_file": {
            "path": "data/sample/customers.csv",
            "size_bytes": 41234 * scale,
            "sha256": "276c" + "0" * 56 + "beef",
            "records_read": 301 * scale,
            "valid": 295 * scale,
            "rejected": 6 * scale,
        },
        "rejected_by_reason": {
            "duplicate_customer_id": 2 * scale,
            "unknown_segment": 2 * scale,
            "missing_customer_id": 2 * scale,
        },
        "contact_issues": {"email": {"missing": 2, "invalid": 2}, "phone": {"invalid": 1}},
        "segments": list(SEGMENTS),
        "settings": {
            "consent": {
                "frequency_cap": 2,
                "frequency_window_days": 7,
                "quiet_hours": "21:00-08:00",
                "default_timezone": "America/New_York",
                "quiet_hours_channels": ["sms", "push"],
                "dedupe_contacts": True,
                "suppressions": "data/sample/suppressions.csv",
            },
            "workers": 3,
        },
        "channels": channels,
        "tasks": _tasks(date, channels),
        "inputs": {f"{name}_results.csv": [1000, 1] for name in channels},
    }


def _channel(name: str, index: int, day: int, bins: int, scale: int, samples: bool) -> dict:
    """One channel's part: per segment counts that sum to the channel's."""
    by_segment = {}
    for offset, segment in enumerate(SEGMENTS):
        base = (40 + 20 * offset + (day + index * 3 + offset) % 9) * scale
        counts = {
            "failed": (1 + (day + offset) % 3) * scale,
            "unknown": (offset % 2) * scale,
            "skipped": (3 + offset + index) * scale,
            "pending": (1 if offset == 2 else 0) * scale,
            "in_flight": 0,
        }
        counts["sent"] = base
        by_segment[segment] = {"targeted": sum(counts.values()), **counts}
    totals = {s: sum(seg[s] for seg in by_segment.values()) for s in STATUSES}
    skipped = totals["skipped"]
    reasons = {"suppressed": skipped // 3, "frequency cap": skipped // 4, "missing": 2 * scale}
    reasons["invalid"] = 1 * scale
    reasons["duplicate contact"] = skipped - sum(reasons.values())
    suppressed = reasons["suppressed"]
    sources = {"file": suppressed - suppressed // 3, "sendgrid bounces": suppressed // 3}
    codes = [
        {"status": s, "code": c, "meaning": m, "action": a, "count": n * scale}
        for s, c, m, a, n in FAILED_CODES[name]
    ]
    coded = sum(code["count"] for code in codes)
    config = {"rate_per_second": 10.0, "burst": 10, "concurrency": 4, "batch_size": 1}
    config.update(retry_attempts=3, retry_delay_seconds=2.0, timeout_seconds=10.0)
    config["base_url"] = f"http://127.0.0.1:8765/{name}"
    return {
        "task": f"Send{name.capitalize()}Campaign",
        "state": "complete",
        "source": f"{name}_ledger.sqlite",
        "template": {
            "name": "spring_sale",
            "files": {"subject.txt": "a1" * 32, "body.html": "b2" * 32}
            if name == "email"
            else {"body.txt": "c3" * 32},
        },
        "config": config,
        "targeted": sum(totals.values()),
        "counts": totals,
        "by_segment": by_segment,
        "skipped_by_reason": reasons,
        "suppressed_by_source": sources,
        "deferred": 4 if name != "email" else 0,
        "failed_by_code": codes,
        "failed_by_reason": {"could not build the message": totals["failed"] - coded},
        "timeline": _timeline(totals["sent"], bins, config["rate_per_second"]),
        "retries": 3 + index,
        "rate_limited": index,
        "samples": _samples(name) if samples else [],
    }


def _timeline(sent: int, bins: int, limit: float) -> dict:
    """*sent* spread over *bins* bins of a second or more, near the limit."""
    step = max(1, -(-int(sent / limit * 1.05) // bins))
    count = min(bins, -(-sent // int(limit * step * 0.95)))
    accepted = [sent // count] * count
    accepted[-1] += sent - sum(accepted)
    seconds = count * step
    achieved = round(sent / seconds, 2)
    return {
        "bin_seconds": step,
        "start": "2026-11-25T10:00:00+00:00",
        "accepted": accepted,
        "limit_per_second": limit,
        "first_sent": "2026-11-25T10:00:00.100+00:00",
        "last_sent": f"2026-11-25T10:00:{min(seconds, 59):02d}.900+00:00",
        "achieved_per_second": achieved,
        "peak_per_second": max(accepted) / step,
        "ratio": round(achieved / limit, 3),
    }


def _samples(channel: str) -> list[dict]:
    return [
        {
            "customer_id": "C0000007",
            "segment": "premium",
            "recipient": "ana.silva.7@example.org" if channel == "email" else "+13035550107",
            "status": "failed",
            "error": f"{channel} provider answered 400: <b>not</b> a valid recipient",
        }
    ]


def _tasks(date: str, channels: dict) -> list[dict]:
    names = ["LoadSegments", *(c["task"] for c in channels.values()), "CampaignReport"]
    names.append("RunCampaign")
    rows = []
    for i, name in enumerate(names):
        rows.append(
            {
                "task": name,
                "task_id": f"{name}_demo_{date.replace('-', '_')}_0123456789",
                "started": f"{date}T10:00:{i:02d}.000+00:00",
                "ended": f"{date}T10:00:{i + 1:02d}.500+00:00",
                "seconds": 1.5,
                "state": "done",
                "error": "",
            }
        )
    return rows


def write_week(
    campaign_folder: Path, first: str = "2026-11-19", days: int = 7, pages: bool = True
) -> list[dict]:
    """A run folder per day from *first*, each with its report.json and report.html made from
    :func:`synthetic_report` (with *pages* false, a report.html holding the date alone: a
    test of what links to the page, not of the page, draws no chart); returns the reports,
    oldest first."""
    from campaign_pipeline.reporting import page

    start = datetime.date.fromisoformat(first)
    reports = []
    for day in range(days):
        date = (start + datetime.timedelta(days=day)).isoformat()
        report = synthetic_report(date, bins=60)
        report["campaign"] = campaign_folder.name
        folder = campaign_folder / date
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "report.json").write_text(json.dumps(report))
        html = page.render(report) if pages else f"<!doctype html><title>{date}</title>"
        (folder / "report.html").write_text(html)
        reports.append(report)
    return reports
