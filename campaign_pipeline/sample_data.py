"""Deterministic, realistic customer files for the demo, the tests and the benchmark.

    python -m campaign_pipeline.sample_data --rows 300 --seed 7 > data/sample/customers.csv

Clean rows are valid by construction. With ``dirty`` on, about one row in twelve carries a
problem the loader must catch (bad contacts, duplicates, odd case and whitespace, unknown
segments) or one the sandbox provider refuses for good (Twilio's magic test numbers,
``bounce*`` addresses, ``unregistered*`` device tokens).
"""

from __future__ import annotations

import argparse
import csv
import random
import string
import sys
from collections.abc import Iterator

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--clean", action="store_true", help="no dirty rows")
    args = parser.parse_args(argv)
    write(sys.stdout, customers(args.rows, args.seed, dirty=not args.clean))
    return 0


if __name__ == "__main__":
    sys.exit(main())
