"""``campaign-consent``: what the consent store holds, and changes to it by hand.

    campaign-consent list [--channel sms]
    campaign-consent export [--channel sms] [--output FILE]
    campaign-consent import FILE
    campaign-consent remove --channel sms (--contact '(212) 555-0100' | --customer-id C42)
    campaign-consent history --contact '(212) 555-0100' [--channel sms] [--days 30]
    campaign-consent prune --older-than 90
    campaign-consent import-history FILE
    campaign-consent demo-quiet-hours SECONDS [--zone America/Denver]

The store is ``[consent] store`` of the luigi configuration (``luigi.cfg`` of this folder,
``$LUIGI_CONFIG_PATH``), or ``--store``. An import is checked like the suppression file,
every row before any is stored. Errors are one line on stderr: exit 1 for a file or an
entry that cannot be used, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import sys
from collections.abc import Iterator

from ..config import consent, pipeline
from ..exceptions import CampaignError, SuppressionFileError
from .cap import timestamp, utc_now
from .quiet import demo_window
from .store import IMPORTED, MESSAGE_COLUMNS, ConsentStore, Stored
from .suppressions import ALL, channel_columns, parse_row, read_entries

HISTORY_REQUIRED = ("channel", "contact", "campaign", "sent_at")
EXPORT_COLUMNS = ("channel", "contact", "customer_id", "source", "date", "campaign", "code")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.command(args)
    except (CampaignError, OSError) as exc:
        print(f"campaign-consent: error: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    channels = [*channel_columns(), ALL]
    parser = argparse.ArgumentParser(
        prog="campaign-consent",
        description="List, export, import and remove the consent store's suppressions; "
        "show a contact's recent messages (the frequency cap's history) and prune old ones.",
    )
    parser.add_argument("--store", help="the store's file (default: [consent] store)")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    listing = commands.add_parser("list", help="print the entries, oldest first")
    listing.add_argument("--channel", choices=channels, help="only this channel's (and all's)")
    listing.set_defaults(command=_list)
    export = commands.add_parser("export", help="the entries as CSV (suppression file format)")
    export.add_argument("--channel", choices=channels, help="only this channel's (and all's)")
    export.add_argument("--output", "-o", help="write to this file (default: stdout)")
    export.set_defaults(command=_export)
    load = commands.add_parser("import", help="add the rows of a suppression-format CSV")
    load.add_argument("file", help="CSV with the columns channel, contact, customer_id")
    load.set_defaults(command=_import)
    remove = commands.add_parser("remove", help="forget one contact's or customer's entry")
    remove.add_argument("--channel", required=True, choices=channels)
    who = remove.add_mutually_exclusive_group(required=True)
    who.add_argument("--contact", help="as the customer file may write it")
    who.add_argument("--customer-id")
    remove.set_defaults(command=_remove)
    history = commands.add_parser("history", help="a contact's messages, as CSV, oldest first")
    history.add_argument("--contact", required=True, help="as the customer file may write it")
    history.add_argument("--channel", choices=channels, default=ALL, help="default: every one")
    history.add_argument("--days", type=_days, default=30, help="this many days back (30)")
    history.set_defaults(command=_history)
    prune = commands.add_parser("prune", help="forget the messages older than some days")
    prune.add_argument("--older-than", type=_days, required=True, metavar="DAYS")
    prune.set_defaults(command=_prune)
    past = commands.add_parser(
        "import-history", help="add messages sent before (by another tool), for the cap"
    )
    past.add_argument(
        "file", help="CSV with the columns channel, contact, campaign, sent_at (as history writes)"
    )
    past.set_defaults(command=_import_history)
    # a console script, not `python -m ...consent.quiet`: the package imports that module
    # first, and runpy warns about running a module already imported
    window = commands.add_parser(
        "demo-quiet-hours", help="print quiet hours ending SECONDS from now (make run's demo)"
    )
    window.add_argument("seconds", type=float, metavar="SECONDS")
    window.add_argument("--zone", default="America/Los_Angeles")
    window.set_defaults(command=_demo_quiet_hours)
    return parser


def _demo_quiet_hours(args: argparse.Namespace) -> int:
    print(demo_window(args.zone, args.seconds))
    return 0


def _days(text: str) -> int:
    try:
        days = int(text)
    except ValueError:
        days = -1
    if days < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of days, 1 or more")
    return days


def _since(days: int) -> str:
    return timestamp(utc_now() - datetime.timedelta(days=days))


def _store(args: argparse.Namespace) -> ConsentStore:
    return ConsentStore(args.store or consent().store)


def _rows(store: ConsentStore, channel: str | None) -> list[dict]:
    return [_exported(entry) for entry in store.entries(None if channel == ALL else channel)]


def _exported(entry: Stored) -> dict:
    source = f"{entry.source} {entry.note}" if entry.note else entry.source
    return {
        "channel": entry.channel,
        "contact": entry.contact,
        "customer_id": entry.customer_id,
        "source": source,
        "date": entry.date,
        "campaign": entry.campaign,
        "code": entry.code,
    }


def _list(args: argparse.Namespace) -> int:
    with _store(args) as store:
        rows = _rows(store, args.channel)
    if not rows:
        print(f"no entries in {store.path}")
        return 0
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in EXPORT_COLUMNS}
    print("  ".join(c.ljust(widths[c]) for c in EXPORT_COLUMNS).rstrip())
    for row in rows:
        print("  ".join(row[c].ljust(widths[c]) for c in EXPORT_COLUMNS).rstrip())
    return 0


def _export(args: argparse.Namespace) -> int:
    with _store(args) as store:
        rows = _rows(store, args.channel)
    if args.output:
        with open(args.output, "w", newline="", encoding="utf-8") as handle:
            _write_csv(handle, rows)
        print(f"exported {len(rows)} entries to {args.output}", file=sys.stderr)
    else:
        _write_csv(sys.stdout, rows)
    return 0


def _write_csv(handle, rows: list[dict]) -> None:
    writer = csv.DictWriter(handle, EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


def _import(args: argparse.Namespace) -> int:
    config = pipeline()
    entries = list(
        read_entries(args.file, config.default_region, config.accept_vanity_numbers, "file")
    )  # every row checked before any is stored
    with _store(args) as store:
        added = store.add(entries, IMPORTED)
    known = len(entries) - added
    print(f"imported {added} entries from {args.file} into {store.path} ({known} already there)")
    return 0


def _remove(args: argparse.Namespace) -> int:
    config = pipeline()
    row = {
        "channel": args.channel,
        "contact": args.contact or "",
        "customer_id": args.customer_id or "",
    }
    where = "--contact" if args.contact else "--customer-id"
    entries = parse_row(row, where, config.default_region, config.accept_vanity_numbers)
    with _store(args) as store:
        removed = sum(store.remove(e.channel, e.contact, e.customer_id) for e in entries)
    who = args.contact or args.customer_id
    if not removed:
        print(
            f"campaign-consent: no {args.channel} entry for {who} in {store.path}", file=sys.stderr
        )
        return 1
    print(f"removed {removed} entr{'y' if removed == 1 else 'ies'} for {who} from {store.path}")
    return 0


def _history(args: argparse.Namespace) -> int:
    config = pipeline()
    row = {"channel": args.channel, "contact": args.contact, "customer_id": ""}
    entries = parse_row(row, "--contact", config.default_region, config.accept_vanity_numbers)
    with _store(args) as store:
        found = [
            message
            for entry in entries
            for message in store.history(entry.channel, entry.contact, _since(args.days))
        ]
    writer = csv.DictWriter(sys.stdout, MESSAGE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(found, key=lambda message: message["sent_at"]))
    print(
        f"{len(found)} message(s) to {args.contact} in the last {args.days} days in {store.path}",
        file=sys.stderr,
    )
    return 0


def _prune(args: argparse.Namespace) -> int:
    with _store(args) as store:
        removed = store.prune(before=_since(args.older_than))
    print(f"pruned {removed} message(s) older than {args.older_than} days from {store.path}")
    return 0


def _import_history(args: argparse.Namespace) -> int:
    messages = list(read_history(args.file))  # every row checked before any is stored
    with _store(args) as store:
        added = store.import_messages(messages)
    known = len(messages) - added
    print(f"imported {added} messages from {args.file} into {store.path} ({known} already there)")
    return 0


def read_history(path: str) -> Iterator[tuple[str, str, str, str, str, str]]:
    """The messages of a history CSV (the columns :data:`MESSAGE_COLUMNS`; ``customer_id``
    and ``date`` may be left out), contacts normalised as the suppression file's; raises
    :class:`SuppressionFileError` naming the file and the line."""
    config = pipeline()
    columns = channel_columns()
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in HISTORY_REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise SuppressionFileError(
                f"history file {path} line 1: no column {', '.join(missing)}; the header must "
                f"name {', '.join(HISTORY_REQUIRED)}"
            )
        for row in reader:
            where = f"history file {path} line {reader.line_num}"
            channel = (row["channel"] or "").strip().casefold()
            if channel not in columns:
                raise SuppressionFileError(
                    f"{where}: unknown channel {row['channel']!r}; use {', '.join(columns)}"
                )
            contact = {"channel": channel, "contact": (row["contact"] or "").strip()}
            (entry,) = parse_row({**contact, "customer_id": ""}, where, config.default_region,
                                 config.accept_vanity_numbers)  # fmt: skip
            sent_at = _moment(row["sent_at"], where)
            campaign = (row["campaign"] or "").strip()
            if not campaign:
                raise SuppressionFileError(f"{where}: empty campaign")
            date = (row.get("date") or "").strip() or sent_at[:10]
            customer_id = (row.get("customer_id") or "").strip()
            yield (channel, entry.contact, customer_id, campaign, date, sent_at)


def _moment(text: str | None, where: str) -> str:
    """*text*, an ISO 8601 time (UTC when it names no zone), as the store writes times."""
    try:
        moment = datetime.datetime.fromisoformat((text or "").strip())
    except ValueError:
        raise SuppressionFileError(
            f"{where}: sent_at {text!r} is not an ISO 8601 time (2026-11-24T10:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return timestamp(moment)


if __name__ == "__main__":
    sys.exit(main())
