"""Every row of the provider error table, produced on demand by the sandbox and handled."""

from __future__ import annotations

import re
import sqlite3

import pytest
from conftest import CHANNELS, REPO, RETCODE, TASKS

from campaign_pipeline.providers.errors import (
    ERROR_TABLE,
    FAILED,
    RATE_LIMITED,
    RENEW,
    RETRY,
    STOP,
    ErrorRow,
)
from campaign_pipeline.sandbox import ErrorRule

HEADER = "customer_id,first_name,segment,email,phone,device_token\n"


def recipient(channel: str, n: int) -> str:
    return {
        "email": f"row{n}@example.com",
        "sms": f"+1212555{n:04d}",
        "push": f"rowtoken{n:04d}" + "x" * 40,
    }[channel]


def customer_line(channel: str, n: int) -> str:
    contact = recipient(channel, n)
    email = contact if channel == "email" else f"c{n}@example.com"
    phone = contact if channel == "sms" else "+12125559999"
    token = contact if channel == "push" else ""
    return f"R{n},Row,premium,{email},{phone},{token}\n"


def code_for(row: ErrorRow) -> str:
    return row.code.replace("xxx", "003")  # one code of the 30xxx range


def sandbox_rule(row: ErrorRow, n: int) -> ErrorRule:
    clears = row.action in (RETRY, RATE_LIMITED)  # transient: the next request goes through
    pattern = re.escape(recipient(row.channel, n))
    return ErrorRule(row.channel, pattern, row.status, code_for(row), times=1 if clears else 0)


@pytest.mark.parametrize("channel", CHANNELS)
def test_every_recipient_level_row(campaign, channel):
    rows = [r for r in ERROR_TABLE if r.channel == channel and r.action not in (STOP, RENEW)]
    campaign.customers_path.write_text(
        HEADER + "".join(customer_line(channel, n) for n in range(len(rows)))
    )
    campaign.start_sandbox(error_rules=[sandbox_rule(row, n) for n, row in enumerate(rows)])

    done = campaign.run(task=TASKS[channel])

    assert done.returncode == 0, done.stderr[-3000:]
    results = {r["customer_id"]: r for r in campaign.results(channel)}
    for n, row in enumerate(rows):
        result = results[f"R{n}"]
        if row.action == FAILED:
            expected = f"{channel} provider answered {row.status}"
            if row.code:
                expected += f" {code_for(row)}"
            assert (result["status"], result["attempts"]) == ("failed", "1"), row
            assert result["error"].startswith(expected), (row, result["error"])
        else:  # cleared after one transient answer
            assert (result["status"], result["attempts"]) == ("sent", "2"), row
    assert sum(campaign.accepted(channel).values()) == sum(r.action != FAILED for r in rows)


# With a static token nothing can be renewed: a "renew" answer stops the channel too.
STOP_ROWS = [r for r in ERROR_TABLE if r.action in (STOP, RENEW)]
# The key naming the credentials each channel uses out of the box.
CREDENTIALS = {"email": "token_env", "sms": "account_sid_env", "push": "token_env"}


@pytest.mark.parametrize("row", STOP_ROWS, ids=lambda r: f"{r.channel}-{r.status}-{r.code}")
def test_every_channel_level_row_stops_the_channel(campaign, row):
    lines = [customer_line(row.channel, n) for n in range(2)]
    campaign.customers_path.write_text(HEADER + "".join(lines))
    campaign.start_sandbox(error_rules=[ErrorRule(row.channel, ".", row.status, row.code)])
    campaign.configure(**{f"{row.channel}_api": {"concurrency": 1}})

    done = campaign.run(task=TASKS[row.channel])

    assert done.returncode == RETCODE["task_failed"]
    expected = f"{row.channel} channel stopped: {row.channel} provider answered {row.status}"
    assert expected in done.stderr
    key = row.check.split(",")[0].replace("credentials", CREDENTIALS[row.channel])
    assert f"[{row.channel}_api] {key}" in done.stderr, "names the key to check"
    assert "2 recipient(s) stay pending" in done.stderr
    assert campaign.requests(row.channel) == 1, "stopped at the first answer"
    ledger = campaign.folder / f"{row.channel}_ledger.sqlite"
    with sqlite3.connect(ledger) as db:
        statuses = [status for (status,) in db.execute("SELECT status FROM deliveries")]
    assert statuses == ["pending", "pending"], "nobody failed for a channel-level answer"


def test_the_readme_documents_exactly_the_table_in_the_code():
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Provider errors", 1)[1].split("\n## ", 1)[0]
    cells = [
        tuple(cell.strip().strip("`") for cell in line.strip().strip("|").split("|"))
        for line in section.splitlines()
        if line.startswith("|")
    ]
    documented = [row for row in cells if row[0] in CHANNELS]
    in_code = [
        (
            row.channel,
            str(row.status),
            row.code or "-",
            row.action,
            row.meaning,
            row.check or "-",
            "yes" if row.suppress else "-",
        )
        for row in ERROR_TABLE
    ]
    assert documented == in_code
