"""A plain-text summary of one campaign run, read from its result files; the way to its HTML
report and to the campaign's history page.

campaign-report [--date 2026-11-25] [--campaign NAME] [--dry-run]
campaign-report --html [--open] [--date ...]   # print report.html's path (written if missing)
campaign-report --history [--campaign NAME]    # write history.html of the campaign, print it
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import sys
import webbrowser
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .channels import registered
from .config import consent as consent_config
from .config import pipeline as campaign_config
from .consent import ConsentStore, match_key
from .consent.quiet import describe_preview
from .consent.store import LEARNED, source_kind
from .exceptions import SettingsError
from .ledger import Status, describe_skips, skip_kind
from .preview import WOULD_SEND
from .reporting import REPORT_HTML
from .safecsv import original_cell
from .tasks import run_dir

STATUSES = (Status.SENT, Status.FAILED, Status.UNKNOWN, Status.SKIPPED)
PREVIEW_STATUSES = (WOULD_SEND, Status.FAILED, Status.SKIPPED)


@dataclass
class Tally:
    """What the summary says of one channel, read from its result file or preview once."""

    counts: Counter = field(default_factory=Counter)  # by status
    skips: Counter = field(default_factory=Counter)  # skipped, by kind of reason
    sources: Counter = field(default_factory=Counter)  # suppressed, by source
    learned: Counter = field(default_factory=Counter)  # failed and learned, by code
    deferred: str = ""  # who waited for quiet hours, in words
    note: str = ""  # a dry run's note on a previous date not complete
    cost: str = ""  # a dry run's billed segments


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
    date_folder = folder.parent if dry_run else folder
    date = datetime.date.fromisoformat(date_folder.name)
    for channel in registered():
        name = channel.name
        path = folder / (f"{name}_preview.json" if dry_run else f"{name}_results.csv")
        task = channel.task(date=date, campaign=date_folder.parent.name, dry_run=dry_run)
        if off := task.reported_off(folder):
            lines.append(f"{name:<8}  off ({off}): nothing sent")
            # a run earlier this date, before the channel was switched off
            earlier = [p for p in (path, folder / f"{name}_ledger.sqlite") if p.exists()]
            if earlier:
                skips.append(f"{name} is off now; {earlier[0]} is of an earlier run this date")
            continue
        if not path.exists():
            lines.append(f"{name:<8}  (no {path.name}: the channel has not finished)")
            continue
        tally = (
            _preview_tally(path)
            if dry_run
            else _result_tally(path, channel.name, channel.contact, store)
        )
        if described := describe_skips(tally.skips):
            skips.append(f"{name} skipped: {described}")
        if tally.deferred:
            skips.append(f"{name} {tally.deferred}")
        if described := describe_skips(tally.sources):
            skips.append(f"{name} suppressed by: {described}")
        if described := describe_skips(tally.learned):
            skips.append(f"{name} refused for good, skipped from now on: {described}")
        counts = "".join(f"{tally.counts[s]:>11,}" for s in statuses)
        lines.append(f"{name:<8}{counts}  {path}")
        if tally.note and tally.note not in notes:
            notes.append(tally.note)
        if tally.cost:
            costs.append(f"{name:<8}{tally.cost}")
    if costs:
        lines += ["Billed segments, known before sending:", *costs]
    report = [f"Report: {folder / REPORT_HTML}"] if (folder / REPORT_HTML).exists() else []
    return "\n".join(lines + skips + [f"Note: {note}" for note in notes] + report)


def _result_tally(path: Path, channel: str, column: str, store: str) -> Tally:
    """One pass over a result file: statuses, skip kinds and sources, who waited for quiet
    hours; then the failed contacts the consent store learned."""
    tally, waited, last, failed = Tally(), Counter(), "", set()
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            status = row["status"]
            tally.counts[status] += 1
            if status == Status.SKIPPED:
                kind = skip_kind(row["error"])
                tally.skips[kind] += 1
                if kind == "suppressed":
                    tally.sources[source_kind(row["error"])] += 1
            elif status == Status.FAILED:
                failed.add(match_key(column, original_cell(row["recipient"])))
            if row.get("deferred_until"):
                waited[status] += 1
                last = max(last, row["deferred_until"])
    if waited:
        statuses = ", ".join(f"{n:,} {status}" for status, n in sorted(waited.items()))
        tally.deferred = (
            f"deferred by quiet hours: {waited.total():,}, sent once their window opened "
            f"({statuses}; the last window opened at {last})"
        )
    tally.learned = _learned(failed, channel, store)
    return tally


def _learned(failed: set[str], channel: str, store: str = "") -> Counter:
    """The *failed* contacts whose refusal the consent store learned from the provider's
    answer (a STOP reply, a retired token), by code: ``learned 21610``."""
    store_path = store or consent_config().store
    if not failed or not os.path.exists(store_path):  # a summary never creates the store
        return Counter()
    with ConsentStore(store_path, readonly=True) as found:
        return Counter(
            f"learned {entry.code}"
            for entry in found.entries(channel)
            if entry.source == LEARNED and entry.contact in failed
        )


def _preview_tally(path: Path) -> Tally:
    """A dry run's preview, read once."""
    preview = json.loads(path.read_text())
    counts = preview["counts"]
    return Tally(
        counts=Counter(counts["by_status"]),
        skips=Counter(counts.get("skipped_by_reason", {})),
        sources=Counter(counts.get("suppressed_by_source", {})),
        deferred=describe_preview(counts.get("quiet_hours", {})),
        note=preview.get("depends_on_past", {}).get("note", ""),
        cost=_cost(counts.get("message_segments")),
    )


def _cost(parts: dict | None) -> str:
    """The total segments a dry run's messages would be billed, by encoding, or ""."""
    if not parts:
        return ""
    by = " · ".join(f"{n:,} {kind}" for kind, n in parts["by_encoding"].items())
    return f"{parts['total']:>11,} segments ({by})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="campaign-report", description="Summarise a campaign run."
    )
    parser.add_argument("--date", type=datetime.date.fromisoformat, default=datetime.date.today())
    parser.add_argument("--campaign", default=None)
    parser.add_argument("--dry-run", action="store_true", help="summarise the dry run's previews")
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument(
        "--html",
        action="store_true",
        help="print the path of the run's report.html (written if missing)",
    )
    shown.add_argument(
        "--history", action="store_true", help="write the campaign's history.html, print its path"
    )
    parser.add_argument(
        "--open", action="store_true", help="with --html or --history: open the page in a browser"
    )
    args = parser.parse_args(argv)
    try:
        folder = run_dir(args.campaign or campaign_config().name, args.date)
    except SettingsError as exc:
        parser.error(str(exc))  # one line, exit 2
    if args.history:
        return _show(_history(folder.parent), args.open)
    if args.dry_run:
        folder = folder / "dry-run"
    if not folder.exists():
        print(f"no run folder {folder}", file=sys.stderr)
        return 1
    try:
        if args.html:
            return _show(_html(folder, args.dry_run), args.open)
        print(summarise(folder))
    except SettingsError as exc:  # a channel's settings (is it off?) cannot be read
        parser.exit(2, f"campaign-report: error: {exc}\n")
    return 0


def _html(folder: Path, dry_run: bool) -> Path:
    """The run folder's report.html, written first when the folder has none (a run of an
    older version, or one that stopped before its report)."""
    path = folder / REPORT_HTML
    if path.exists():
        return path
    from . import reporting

    return reporting.write(folder, dry_run=dry_run)


def _history(campaign_folder: Path) -> Path | None:
    from .reporting.history import write_history

    if not campaign_folder.is_dir():
        print(f"no campaign folder {campaign_folder}: no run of this campaign yet", file=sys.stderr)
        return None
    return write_history(campaign_folder)


def _show(path: Path | None, open_it: bool) -> int:
    """Print *path*; open it in the default browser too when asked."""
    if path is None:
        return 1
    print(path)
    if open_it:
        webbrowser.open(path.resolve().as_uri())
    return 0


if __name__ == "__main__":
    sys.exit(main())
