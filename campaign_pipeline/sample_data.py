"""Deterministic, realistic customer files for the demo, the tests and the benchmark.

    python -m campaign_pipeline.sample_data --rows 300 --seed 7 > data/sample/customers.csv
    python -m campaign_pipeline.sample_data --large --rows 1000000 --out /tmp/customers.csv
    python -m campaign_pipeline.sample_data --history C0000027,C0000032 < customers.csv

(``--history`` writes, for ``campaign-consent import-history``, two messages on every channel
to each customer named, sent on the two days before today by an earlier campaign, so that
``make run``'s frequency cap has someone to cap.)

(``data/sample/customers.csv`` then has one row added by hand, ``C0000301``: C0000005 under a
second id, her contacts written another way, so that ``make run`` shows one message per person.)

Clean rows are valid by construction. With ``dirty`` on, about one row in twelve carries a
problem the loader must catch (bad contacts, duplicates, odd case and whitespace, unknown
segments) or one the sandbox provider refuses for good (Twilio's magic test numbers,
``bounce*`` addresses, ``unregistered*`` device tokens).
"""

from __future__ import annotations

import argparse
import base64
import csv
import datetime
import random
import string
import sys
from collections.abc import Iterator

import numpy as np

COLUMNS = ("customer_id", "first_name", "last_name", "segment", "email", "phone", "device_token")
FIRST = [
    "Ada",
    "Ben",
    "Chloe",
    "Dev",
    "Elena",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jonas",
    "Kemi",
    "Liam",
    "Maya",
    "Noor",
    "Omar",
    "Priya",
]
LAST = [
    "Okafor",
    "Smith",
    "Garcia",
    "Chen",
    "Novak",
    "Silva",
    "Haddad",
    "Kim",
    "Rossi",
    "Patel",
    "Murphy",
    "Dubois",
    "Ito",
]
SEGMENTS = ("premium", "regular", "new")
AREA_CODES = ("212", "312", "415", "617", "206", "512", "303", "404")
DOMAINS = ("example.com", "example.org", "mail.example.net")
TOKEN_CHARS = string.ascii_letters + string.digits + "-_"


def customers(rows: int, seed: int = 7, dirty: bool = True) -> Iterator[dict[str, str]]:
    """Yield *rows* customer records (dictionaries keyed by :data:`COLUMNS`)."""
    rng = random.Random(seed)
    for n in range(1, rows + 1):
        row = clean_customer(rng, n)
        if dirty and n % 12 == 0 and n > 12:
            row = _spoil(rng, row, n)
        yield row


def clean_customer(rng: random.Random, n: int) -> dict[str, str]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    return {
        "customer_id": f"C{n:07d}",
        "first_name": first,
        "last_name": last,
        "segment": rng.choices(SEGMENTS, weights=(2, 5, 3))[0],
        "email": f"{first}.{last}.{n}@{rng.choice(DOMAINS)}".lower(),
        "phone": f"+1{rng.choice(AREA_CODES)}{rng.randint(200, 999)}{rng.randint(0, 9999):04d}",
        "device_token": token(rng),
    }


def token(rng: random.Random) -> str:
    """An FCM-shaped registration token: 22-character id, colon, 140-character secret."""
    head = "".join(rng.choices(TOKEN_CHARS, k=22))
    return f"{head}:APA91b{''.join(rng.choices(TOKEN_CHARS, k=134))}"


def _spoil(rng: random.Random, row: dict[str, str], n: int) -> dict[str, str]:
    problem = (n // 12) % 12
    if problem == 0:
        row["email"] = row["email"].replace("@", "@@")
    elif problem == 1:
        row["phone"] = "555-01" + str(n % 10)
    elif problem == 2:
        row["customer_id"] = f"C{n - 1:07d}"  # a duplicate of the row before
    elif problem == 3:
        row["segment"] = "  " + row["segment"].upper() + " "
        row["email"] = " " + row["email"].upper()
    elif problem == 4:
        row["segment"] = "vip"
    elif problem == 5:
        row["phone"] = f"({rng.choice(AREA_CODES)}) 555-{rng.randint(1000, 9999)}"  # no +1
    elif problem == 6:
        row["device_token"] = "not-a-token"
    elif problem == 7:
        row["customer_id"] = ""
    elif problem == 8:
        row["phone"] = rng.choice(("+15005550001", "+15005550004", "+15005550009"))
    elif problem == 9:
        row["email"] = f"bounce.{n}@example.com"
    elif problem == 10:
        row["device_token"] = "unregistered" + token(rng)[12:]
    else:
        row["email"] = ""
        row["phone"] = ""
    return row


def write(handle, rows: Iterator[dict[str, str]]) -> None:
    writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)


def write_large(path, rows: int, seed: int = 7, dirty: float = 0.02) -> None:
    """Write *rows* customers to *path* (a file name, or an open text handle) quickly.

    The benchmark's file: the same columns and kinds of values as :func:`customers`, built with
    numpy so that a million rows take seconds, and the same for the same *seed*. A *dirty*
    fraction of the rows (chosen at random, never the first) carries one of the problems of
    ``_spoil``, each kind about equally often.
    """
    rng = np.random.default_rng(seed)
    columns = _large_columns(rng, rows)
    _spoil_large(rng, columns, round(dirty * (rows - 1)) if rows > 1 else 0)
    if hasattr(path, "write"):
        _write_columns(path, columns)
        return
    with open(path, "w", encoding="utf-8", newline="") as handle:
        _write_columns(handle, columns)


def _large_columns(rng: np.random.Generator, rows: int) -> dict[str, np.ndarray]:
    numbers = np.arange(1, rows + 1)
    first = np.array(FIRST, dtype=object)[rng.integers(0, len(FIRST), rows)]
    last = np.array(LAST, dtype=object)[rng.integers(0, len(LAST), rows)]
    domains = np.array(DOMAINS, dtype=object)[rng.integers(0, len(DOMAINS), rows)]
    emails = [
        f"{f}.{la}.{n}@{d}".lower()
        for f, la, n, d in zip(first, last, numbers.tolist(), domains, strict=True)
    ]
    return {
        "customer_id": np.array([f"C{n:07d}" for n in numbers.tolist()], dtype=object),
        "first_name": first,
        "last_name": last,
        "segment": rng.choice(np.array(SEGMENTS, dtype=object), rows, p=(0.2, 0.5, 0.3)),
        "email": np.array(emails, dtype=object),
        "phone": _large_phones(rng, rows),
        "device_token": _large_tokens(rng, rows),
    }


def _large_phones(rng: np.random.Generator, rows: int) -> np.ndarray:
    """US numbers as ``clean_customer`` makes them; a third written the way people type them."""
    area = np.array(AREA_CODES, dtype=object)[rng.integers(0, len(AREA_CODES), rows)]
    exchange = rng.integers(200, 1000, rows).tolist()
    line = rng.integers(0, 10000, rows).tolist()
    style = rng.choice(3, rows, p=(0.67, 0.22, 0.11)).tolist()
    layouts = ("+1{}{}{:04d}", "({}) {}-{:04d}", "{}-{}-{:04d}")
    phones = [
        layouts[s].format(a, e, n) for s, a, e, n in zip(style, area, exchange, line, strict=True)
    ]
    return np.array(phones, dtype=object)


def _large_tokens(rng: np.random.Generator, rows: int) -> np.ndarray:
    """FCM-shaped tokens like :func:`token`: URL-safe base64 of random bytes, 160 per row."""
    text = base64.urlsafe_b64encode(rng.bytes(rows * 120)).decode("ascii")
    tokens = [
        f"{text[i : i + 22]}:APA91b{text[i + 22 : i + 156]}" for i in range(0, rows * 160, 160)
    ]
    return np.array(tokens, dtype=object)


def _spoil_large(rng: np.random.Generator, columns: dict[str, np.ndarray], count: int) -> None:
    """Give *count* random rows (not the first) one problem each, the kinds in equal shares."""
    rows = len(columns["customer_id"])
    chosen = np.sort(rng.choice(np.arange(1, rows), size=count, replace=False))
    kinds = rng.permutation(np.arange(count) % 12)
    for index, kind in zip(chosen.tolist(), kinds.tolist(), strict=True):
        row = {name: values[index] for name, values in columns.items()}
        row = _spoil_kind(rng, row, index + 1, kind, columns["customer_id"][index - 1])
        for name, value in row.items():
            columns[name][index] = value


def _spoil_kind(
    rng: np.random.Generator, row: dict[str, str], n: int, kind: int, previous_id: str
) -> dict[str, str]:
    """The problems of :func:`_spoil`, picked by *kind* rather than by row number."""
    if kind == 0:
        row["email"] = row["email"].replace("@", "@@")
    elif kind == 1:
        row["phone"] = "555-01" + str(n % 10)
    elif kind == 2:
        row["customer_id"] = previous_id
    elif kind == 3:
        row["segment"] = "  " + row["segment"].upper() + " "
        row["email"] = " " + row["email"].upper()
    elif kind == 4:
        row["segment"] = "vip"
    elif kind == 5:
        row["phone"] = (
            f"({AREA_CODES[rng.integers(len(AREA_CODES))]}) 555-{rng.integers(1000, 10000)}"
        )
    elif kind == 6:
        row["device_token"] = "not-a-token"
    elif kind == 7:
        row["customer_id"] = ""
    elif kind == 8:
        row["phone"] = ("+15005550001", "+15005550004", "+15005550009")[rng.integers(3)]
    elif kind == 9:
        row["email"] = f"bounce.{n}@example.com"
    elif kind == 10:
        row["device_token"] = "unregistered" + row["device_token"][12:]
    else:
        row["email"] = ""
        row["phone"] = ""
    return row


def _write_columns(handle, columns: dict[str, np.ndarray]) -> None:
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(zip(*(columns[name] for name in COLUMNS), strict=True))


HISTORY_CAMPAIGN = "autumn_newsletter"


def history(customers_file, ids: list[str], days: int = 2) -> Iterator[dict[str, str]]:
    """Messages sent to the customers *ids* of *customers_file* on every channel, one on each
    of the *days* days before today at 10:00 UTC (see ``campaign-consent import-history``)."""
    from .consent.suppressions import channel_columns

    wanted = set(ids)
    today = datetime.datetime.now(datetime.UTC).date()
    for customer in csv.DictReader(customers_file):
        if customer["customer_id"] not in wanted:
            continue
        for channel, column in channel_columns().items():
            for back in range(1, days + 1):
                day = today - datetime.timedelta(days=back)
                yield {
                    "channel": channel,
                    "contact": customer.get(column, ""),
                    "customer_id": customer["customer_id"],
                    "campaign": HISTORY_CAMPAIGN,
                    "date": day.isoformat(),
                    "sent_at": f"{day.isoformat()}T10:00:00Z",
                }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--clean", action="store_true", help="no dirty rows")
    parser.add_argument("--large", action="store_true", help="the fast generator, 2%% dirty")
    parser.add_argument("--out", help="write here rather than to standard output (with --large)")
    parser.add_argument(
        "--history", metavar="IDS", help="earlier messages to these customers (comma-separated)"
    )
    args = parser.parse_args(argv)
    if args.history:
        columns = ("channel", "contact", "customer_id", "campaign", "date", "sent_at")
        writer = csv.DictWriter(sys.stdout, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(history(sys.stdin, args.history.split(",")))
        return 0
    if args.large:
        write_large(args.out or sys.stdout, args.rows, args.seed, 0.0 if args.clean else 0.02)
    else:
        write(sys.stdout, customers(args.rows, args.seed, dirty=not args.clean))
    return 0


if __name__ == "__main__":
    sys.exit(main())
