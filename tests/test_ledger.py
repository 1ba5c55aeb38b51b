"""The ledger's transactions, on a real SQLite file."""

from __future__ import annotations

import pytest

from campaign_pipeline.ledger import IN_FLIGHT, PENDING, SENT, Ledger


def row(customer_id: str, **extra) -> dict:
    return {"customer_id": customer_id, "targeted": True, "segment": "new",
            "recipient": f"{customer_id}@x.org", "status": PENDING, **extra}  # fmt: skip


@pytest.fixture
def ledger(tmp_path):
    opened = Ledger(str(tmp_path / "email_ledger.sqlite"))
    yield opened
    opened.close()


def test_a_failed_statement_rolls_back_and_leaves_the_connection_usable(ledger):
    broken = [row("A1"), row("A2"), {"customer_id": "A3", "targeted": True}]  # no segment

    with pytest.raises(KeyError):
        ledger.follow(broken, "v1")

    assert ledger.counts() == {}, "the rows before the error are rolled back too"
    assert ledger.selection() is None
    assert ledger.follow([row("A1"), row("A2")], "v1")["added"] == 2
    assert ledger.claim(["A1"])
    ledger.finish(["A1"], SENT, "id-1")
    assert ledger.counts() == {SENT: 1, PENDING: 1}


def test_a_claim_of_rows_not_all_pending_claims_none(ledger):
    ledger.follow([row("A1"), row("A2")], "v1")
    assert ledger.claim(["A1"])

    assert not ledger.claim(["A2", "A1"]), "A1 is in flight already"

    assert ledger.counts() == {IN_FLIGHT: 1, PENDING: 1}
    assert ledger.claim(["A2"])


def test_follow_changes_only_what_was_never_sent(tmp_path):
    ledger = Ledger(str(tmp_path / "ledger.sqlite"))
    first = [target(cid, f"+1{n}") for n, cid in enumerate(["S", "F", "U", "P", "K", "Q"])]
    assert ledger.follow(first, "v1") == {
        "updated": 0,
        "no_longer_targeted": 0,
        "no_longer_in_file": 0,
        "added": 6,
    }
    for cid, status in {"S": "sent", "F": "failed", "U": "unknown", "K": "skipped"}.items():
        ledger._db.execute("UPDATE deliveries SET status = ? WHERE customer_id = ?", (status, cid))

    # Every contact changes; Q leaves the targeting, P and K stay, N is new; S, F, U leave.
    current = [target(cid, "+19") for cid in ["P", "K", "N"]]
    changes = ledger.follow([*current, {"customer_id": "Q", "targeted": False}], "v2")

    assert changes == {"updated": 2, "no_longer_targeted": 1, "no_longer_in_file": 0, "added": 1}
    assert ledger.selection() == "v2"
    rows = {r["customer_id"]: (r["status"], r["recipient"], r["error"]) for r in ledger.rows()}
    assert rows == {
        "S": ("sent", "+10", ""),
        "F": ("failed", "+11", ""),
        "U": ("unknown", "+12", ""),
        "P": ("pending", "+19", ""),
        "K": ("pending", "+19", ""),
        "Q": ("skipped", "+15", "segment no longer targeted"),
        "N": ("pending", "+19", ""),
    }
    assert ledger.follow(current, "v3")["no_longer_in_file"] == 1  # Q, now gone altogether
    ledger.close()
    assert Ledger.recorded_selection(str(tmp_path / "ledger.sqlite")) == "v3"


def target(cid: str, phone: str) -> dict:
    return {
        "customer_id": cid,
        "targeted": True,
        "segment": "premium",
        "recipient": phone,
        "status": "pending",
        "context": {"customer_id": cid},
    }
