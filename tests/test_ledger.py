"""The ledger's transactions, on a real SQLite file."""

from __future__ import annotations

import pytest

from campaign_pipeline.ledger import IN_FLIGHT, PENDING, SENT, Ledger


def row(customer_id: str, **extra) -> dict:
    return {"customer_id": customer_id, "segment": "new", "recipient": f"{customer_id}@x.org",
            "status": PENDING, **extra}  # fmt: skip


@pytest.fixture
def ledger(tmp_path):
    opened = Ledger(str(tmp_path / "email_ledger.sqlite"))
    yield opened
    opened.close()


def test_a_failed_statement_rolls_back_and_leaves_the_connection_usable(ledger):
    broken = [row("A1"), row("A2"), {"customer_id": "A3"}]  # no segment: fails mid-insert

    with pytest.raises(KeyError):
        ledger.add(broken)

    assert ledger.counts() == {}, "the rows before the error are rolled back too"
    assert ledger.add([row("A1"), row("A2")]) == 2
    assert ledger.claim(["A1"])
    ledger.finish(["A1"], SENT, "id-1")
    assert ledger.counts() == {SENT: 1, PENDING: 1}


def test_a_claim_of_rows_not_all_pending_claims_none(ledger):
    ledger.add([row("A1"), row("A2")])
    assert ledger.claim(["A1"])

    assert not ledger.claim(["A2", "A1"]), "A1 is in flight already"

    assert ledger.counts() == {IN_FLIGHT: 1, PENDING: 1}
    assert ledger.claim(["A2"])
