"""A plain-text summary of one campaign run, read from its result files.

campaign-report [--date 2026-11-25] [--campaign NAME]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import sys
from collections import Counter
from pathlib import Path

from .channels import registered
from .config import consent as consent_config
from .config import pipeline as campaign_config
from .consent import ConsentStore, match_key
from .consent.quiet import describe_preview
from .consent.store import LEARNED, source_kind
from .ledger import Status, describe_skips, skip_kind
from .preview import WOULD_SEND
from .safecsv import original_cell
from .tasks import run_dir

STATUSES = (Status.SENT, Status.FAILED, Status.UNKNOWN, Status.SKIPPED)
PREVIEW_STATUSES = (WOULD_SEND, Status.FAILED, Status.SKIPPED)


def summarise(folder: Path, store: str = "") -> str:
    """Return the run's load counts and a channel-by-status table, with the file paths;
    *store* is the consent store (default: ``[consent] store``)."""
    lines = [f"Run folder: {folder}"]
    summary_path = folder / "load_summary.json"
    if summary_path.exists():
        load = json.loads(summary_path.read_text())
        lines.append(
            f"Customers: {load['records_read']:,} read, {load['valid']:,} valid, "
            f"{load['rejected']:,} rejected -> {folder / 'rejected.csv'}"
        )
    dry_run = folder.name == "dry-run"
    statuses = PREVIEW_STATUSES if dry_run else STATUSES
    lines.append(f"{'channel':<8}" + "".join(f"{s:>11}" for s in statuses) + "  file")
    notes, costs, skips = [], [], []
    for channel in (c.name for c in registered()):
        path = folder / (f"{channel}_preview.json" if dry_run else f"{channel}_results.csv")
        if not path.exists():
            lines.append(f"{channel:<8}  (no {path.name}: the channel has not finished)")
            continue
        counts = _preview_counts(path) if dry_run else _result_counts(path)
        kinds = _preview_skips(path) if dry_run else _result_skips(path)
        if described := describe_skips(kinds):
            skips.append(f"{channel} skipped: {described}")
        if waited := _preview_deferred(path) if dry_run else _result_deferred(path):
            skips.append(f"{channel} {waited}")
        sources = _preview_sources(path) if dry_run else _result_sources(path)
        if described := describe_skips(sources):
            skips.append(f"{channel} suppressed by: {described}")
        if not dry_run and (described := describe_skips(_learned(path, channel, store))):
            skips.append(f"{channel} refused for good, skipped from now on: {described}")
        lines.append(f"{channel:<8}" + "".join(f"{counts[s]:>11,}" for s in statuses) + f"  {path}")
        if dry_run and (note := _preview_note(path)) and note not in notes:
            notes.append(note)
        if dry_run and (cost := _preview_cost(path)):
            costs.append(f"{channel:<8}{cost}")
    if costs:
        lines += ["Billed segments, known before sending:", *costs]
    return "\n".join(lines + skips + [f"Note: {note}" for note in notes])


def _result_counts(path: Path) -> Counter:
    with path.open(newline="") as handle:
        return Counter(row["status"] for row in csv.DictReader(handle))


def _result_skips(path: Path) -> Counter:
    """The kinds of reason of the skipped recipients (suppressed, duplicate contact, ...)."""
    with path.open(newline="") as handle:
        rows = csv.DictReader(handle)
        return Counter(skip_kind(row["error"]) for row in rows if row["status"] == Status.SKIPPED)


def _result_deferred(path: Path) -> str:
    """``deferred by quiet hours: 12, sent once their window opened (the last ...)`` or ""."""
    with path.open(newline="") as handle:
        waited = [row for row in csv.DictReader(handle) if row.get("deferred_until")]
    if not waited:
        return ""
    by_status = Counter(row["status"] for row in waited)
    last = max(row["deferred_until"] for row in waited)
    statuses = ", ".join(f"{n:,} {status}" for status, n in sorted(by_status.items()))
    return (
        f"deferred by quiet hours: {len(waited):,}, sent once their window opened "
        f"({statuses}; the last window opened at {last})"
    )


def _preview_deferred(path: Path) -> str:
    return describe_preview(json.loads(path.read_text())["counts"].get("quiet_hours", {}))


def _result_sources(path: Path) -> Counter:
    """Where the suppressed recipients' entries come from: the file, learned (by code),
    imported, a provider's list (``sendgrid bounces``)."""
    with path.open(newline="") as handle:
        rows = csv.DictReader(handle)
        return Counter(
            source_kind(row["error"])
            for row in rows
            if row["status"] == Status.SKIPPED and skip_kind(row["error"]) == "suppressed"
        )


def _preview_sources(path: Path) -> Counter:
    return Counter(json.loads(path.read_text())["counts"].get("suppressed_by_source", {}))


def _learned(path: Path, channel: str, store: str = "") -> Counter:
    """The failed recipients whose contact the consent store learned from the provider's
    answer (a STOP reply, a retired token), by code: ``learned 21610``."""
    store_path = store or consent_config().store
    if not os.path.exists(store_path):  # a summary never creates the store
        return Counter()
    column = next(c.contact for c in registered() if c.name == channel)
    with path.open(newline="") as handle:
        failed = {
            match_key(column, original_cell(row["recipient"]))
            for row in csv.DictReader(handle)
            if row["status"] == Status.FAILED
        }
    with ConsentStore(store_path, readonly=True) as store:
        return Counter(
            f"learned {entry.code}"
            for entry in store.entries(channel)
            if entry.source == LEARNED and entry.contact in failed
        )


def _preview_skips(path: Path) -> Counter:
    return Counter(json.loads(path.read_text())["counts"].get("skipped_by_reason", {}))


def _preview_counts(path: Path) -> Counter:
    return Counter(json.loads(path.read_text())["counts"]["by_status"])


def _preview_cost(path: Path) -> str:
    """The total segments a dry run's messages would be billed, by encoding, or ""."""
    parts = json.loads(path.read_text())["counts"].get("message_segments")
    if not parts:
        return ""
    by = " · ".join(f"{n:,} {kind}" for kind, n in parts["by_encoding"].items())
    return f"{parts['total']:>11,} segments ({by})"


def _preview_note(path: Path) -> str:
    """The preview's note on a previous date that a real run would run first, or ""."""
    return json.loads(path.read_text()).get("depends_on_past", {}).get("note", "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Summarise a campaign run.")
    parser.add_argument("--date", type=datetime.date.fromisoformat, default=datetime.date.today())
    parser.add_argument("--campaign", default=None)
    parser.add_argument("--dry-run", action="store_true", help="summarise the dry run's previews")
    args = parser.parse_args(argv)
    folder = run_dir(args.campaign or campaign_config().name, args.date)
    if args.dry_run:
        folder = folder / "dry-run"
    if not folder.exists():
        print(f"no run folder {folder}", file=sys.stderr)
        return 1
    print(summarise(folder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
