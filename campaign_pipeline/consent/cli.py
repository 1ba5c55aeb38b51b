"""``campaign-consent``: what the consent store holds, and changes to it by hand.

    campaign-consent list [--channel sms]
    campaign-consent export [--channel sms] [--output FILE]
    campaign-consent import FILE
    campaign-consent remove --channel sms (--contact '(212) 555-0100' | --customer-id C42)
    campaign-consent history --contact '(212) 555-0100' [--channel sms] [--days 30]
    campaign-consent prune --older-than 90

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

from ..config import consent, pipeline
from ..exceptions import CampaignError
from .cap import timestamp, utc_now
from .store import IMPORTED, MESSAGE_COLUMNS, ConsentStore, Stored
from .suppressions import ALL, channel_columns, parse_row, read_entries

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
    return parser


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


if __name__ == "__main__":
    sys.exit(main())
