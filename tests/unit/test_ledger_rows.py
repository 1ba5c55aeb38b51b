"""The ledger's claim, finish, recover and follow on a real SQLite file in ``tmp_path``
(tests/test_ledger.py has the rollback, the all-or-none claim and follow's changes)."""

from __future__ import annotations

import pytest

from campaign_pipeline.exceptions import LedgerBusyError
from campaign_pipeline.ledger import (
    FAILED,
    IN_FLIGHT,
    IN_FLIGHT_AT_CRASH,
    PENDING,
    SENT,
    SKIPPED,
    UNKNOWN,
    Ledger,
)


def customer(cid: str, recipient: str = "", status: str = PENDING, error: str = "") -> dict:
    return {
        "customer_id": cid,
        "targeted": True,
        "segment": "new",
        "recipient": recipient or f"{cid}@example.com",
        "status": status,
        "error": error,
        "context": {"customer_id": cid},
    }


@pytest.fixture
def path(tmp_path) -> str:
    return str(tmp_path / "email_ledger.sqlite")


@pytest.fixture
def ledger(path):
    opened = Ledger(path)
    opened.follow([customer(cid) for cid in ("A", "B", "C", "D")], "v1")
    yield opened
    opened.close()


def rows(ledger: Ledger) -> dict[str, dict]:
    return {row["customer_id"]: row for row in ledger.rows()}


def test_a_claim_counts_the_attempt_and_a_finish_records_the_answer(ledger):
    assert ledger.claim(["A", "B"])
    claimed = rows(ledger)
    ledger.finish(["A", "B"], SENT, "msg-1")

    assert [claimed[c]["status"] for c in "AB"] == [IN_FLIGHT, IN_FLIGHT]
    assert [claimed[c]["attempts"] for c in "ABC"] == [1, 1, 0]
    assert claimed["A"]["sent_at"] and not claimed["C"]["sent_at"]
    done = rows(ledger)
    assert [(done[c]["status"], done[c]["provider_message_id"]) for c in "AB"] == [
        (SENT, "msg-1"),
        (SENT, "msg-1"),
    ]
    assert ledger.counts() == {SENT: 2, PENDING: 2}


def test_finish_changes_only_rows_in_flight(ledger):
    ledger.claim(["A"])
    ledger.finish(["A"], FAILED, error="bad address")

    ledger.finish(["A", "B"], SENT, "late")  # A is settled, B was never claimed

    assert {c: (r["status"], r["error"]) for c, r in rows(ledger).items() if c in "AB"} == {
        "A": (FAILED, "bad address"),
        "B": (PENDING, ""),
    }


def test_a_row_finished_pending_is_sent_again_with_its_attempt_counted(ledger):
    ledger.claim(["A"])
    ledger.finish(["A"], PENDING, error="provider answered 503")

    assert [row["customer_id"] for row in ledger.pending()] == ["A", "B", "C", "D"]
    assert ledger.claim(["A"])
    assert rows(ledger)["A"]["attempts"] == 2


def test_a_claim_of_a_settled_row_is_refused(ledger):
    ledger.claim(["A"])
    ledger.finish(["A"], SENT, "msg-1")

    assert not ledger.claim(["A"])
    assert not ledger.claim(["nobody"])
    assert rows(ledger)["A"]["attempts"] == 1


def test_pending_pages_through_rows_claimed_while_it_reads(ledger):
    seen = []
    for row in ledger.pending(page=1):
        seen.append(row["customer_id"])
        assert ledger.claim([row["customer_id"]]), "each row is yielded once"

    assert seen == ["A", "B", "C", "D"]
    assert ledger.counts() == {IN_FLIGHT: 4}
    assert next(iter(ledger.pending()), None) is None


def test_pending_rows_carry_their_context(ledger):
    first = next(iter(ledger.pending()))

    assert first == {
        "customer_id": "A",
        "segment": "new",
        "recipient": "A@example.com",
        "attempts": 0,
        "context": {"customer_id": "A"},
    }


def test_rows_left_in_flight_by_a_dead_run_are_unknown_not_resent(path, ledger):
    ledger.claim(["A", "B"])
    ledger.finish(["B"], SENT, "msg-1")
    ledger.close()  # the run dies with A in flight

    reopened = Ledger(path)
    found = reopened.recover(resend_unknown=False)

    assert found == 1
    recovered = rows(reopened)
    assert (recovered["A"]["status"], recovered["A"]["error"]) == (UNKNOWN, IN_FLIGHT_AT_CRASH)
    assert recovered["B"]["status"] == SENT
    assert [row["customer_id"] for row in reopened.pending()] == ["C", "D"]
    assert reopened.recover(resend_unknown=False) == 0, "nothing is in flight any more"
    reopened.close()


def test_resend_unknown_makes_every_unknown_row_pending_again(path, ledger):
    ledger.claim(["A", "B"])
    ledger.finish(["B"], UNKNOWN, error="ReadTimeout")  # no answer: it may have arrived
    ledger.close()

    reopened = Ledger(path)
    found = reopened.recover(resend_unknown=True)

    assert found == 1, "only A was in flight"
    assert [row["customer_id"] for row in reopened.pending()] == ["A", "B", "C", "D"]
    reopened.close()


def test_fail_pending_fails_an_unsent_row_only(ledger):
    ledger.claim(["B"])

    ledger.fail_pending("A", "not sent: template error")
    ledger.fail_pending("B", "not sent: template error")

    failed = rows(ledger)
    assert (failed["A"]["status"], failed["A"]["error"]) == (FAILED, "not sent: template error")
    assert failed["A"]["attempts"] == 0 and failed["A"]["sent_at"]
    assert failed["B"]["status"] == IN_FLIGHT


def test_a_second_run_of_the_channel_cannot_open_the_ledger(path, ledger):
    with pytest.raises(LedgerBusyError, match="is in use by another run of this channel"):
        Ledger(path)

    ledger.close()
    Ledger(path).close()  # free once the first one is closed


def test_follow_leaves_rows_in_flight_alone_and_changes_nothing_twice(ledger):
    ledger.claim(["A"])
    moved = [customer("A", "new-a@example.com"), customer("B", "new-b@example.com")]

    first = ledger.follow([*moved, customer("C"), customer("D")], "v2")
    again = ledger.follow([*moved, customer("C"), customer("D")], "v2")

    assert first["updated"] == 1, "B only: A is in flight with its old address"
    assert again == {"updated": 0, "no_longer_targeted": 0, "no_longer_in_file": 0, "added": 0}
    current = rows(ledger)
    assert (current["A"]["status"], current["A"]["recipient"]) == (IN_FLIGHT, "A@example.com")
    assert current["B"]["recipient"] == "new-b@example.com"


def test_a_contact_that_cannot_be_used_is_skipped_with_its_reason(ledger):
    changes = ledger.follow(
        [customer("A", status=SKIPPED, error="invalid email"), customer("B"), customer("C")],
        "v2",
    )

    skipped = rows(ledger)
    assert changes["updated"] == 1 and changes["no_longer_in_file"] == 1  # A, and D
    assert (skipped["A"]["status"], skipped["A"]["error"]) == (SKIPPED, "invalid email")
    assert skipped["D"]["status"] == SKIPPED
    assert [row["customer_id"] for row in ledger.pending()] == ["B", "C"]
    assert ledger.selection() == "v2"


def test_a_file_that_is_no_ledger_has_no_recorded_selection(tmp_path):
    assert Ledger.recorded_selection(str(tmp_path / "missing.sqlite")) is None
