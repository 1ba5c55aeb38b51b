"""The recipients of a run follow the current customer file and the current targeting.

Each test makes a first run, changes the file or the targeting, and runs again through the
luigi CLI: unsent recipients follow the change, and nobody is sent twice.
"""

from __future__ import annotations

import json

from conftest import CHANNELS, RETCODE, TASKS

from campaign_pipeline.sandbox import ErrorRule

HEADER = "customer_id,first_name,segment,email,phone,device_token\n"
TOKEN = "tok:" + "T" * 40


def customer(cid: str, segment: str, phone: str) -> str:
    return f"{cid},N{cid},{segment},{cid.lower()}@example.com,{phone},{TOKEN}{cid}\n"


def write(campaign, *rows: str) -> None:
    campaign.customers_path.write_text(HEADER + "".join(rows))


def outcome(campaign, channel: str) -> dict[str, tuple[str, str, str]]:
    return {
        r["customer_id"]: (r["status"], r["recipient"], r["error"])
        for r in campaign.results(channel)
    }


def test_a_partial_run_then_an_edited_file_and_narrower_targeting(campaign):
    write(
        campaign,
        customer("P1", "premium", "+12125550101"),
        customer("P2", "premium", "+12125550102"),
        customer("P3", "premium", "+12125550103"),
        customer("N4", "new", "+12125550104"),
    )
    # P2, P3 and N4 get two 503s each: the first run leaves them pending.
    rule = ErrorRule("sms", r"^\+1212555010[234]$", 503, times=2)
    campaign.start_sandbox(error_rules=[rule])
    campaign.configure(SendSmsCampaign={"target_segments": ["premium", "new"]})

    first = campaign.run()

    assert first.returncode == RETCODE["task_failed"]
    assert campaign.accepted("sms") == {"+12125550101": 1}

    # P2 unsubscribed, P3 changed number, P5 joined; SMS now targets premium only.
    write(
        campaign,
        customer("P1", "premium", "+12125550101"),
        customer("P3", "premium", "+12125550133"),
        customer("N4", "new", "+12125550104"),
        customer("P5", "premium", "+12125550105"),
    )
    campaign.configure(SendSmsCampaign={"target_segments": ["premium"]})

    second = campaign.run()

    assert second.returncode == 0, second.stderr[-3000:]
    assert "customer file or the targeting changed" in second.stderr
    assert campaign.accepted("sms") == {
        "+12125550101": 1,
        "+12125550133": 1,
        "+12125550105": 1,
    }, "nobody twice, nobody dropped, the new number and the new customer"
    results = outcome(campaign, "sms")
    assert results == {
        "P1": ("sent", "+12125550101", ""),
        "P2": ("skipped", "+12125550102", "no longer in the customer file"),
        "P3": ("sent", "+12125550133", ""),
        "N4": ("skipped", "+12125550104", "segment no longer targeted"),
        "P5": ("sent", "+12125550105", ""),
    }
    # Email and push sent everyone in the first run: P2's message stays on record as sent.
    assert outcome(campaign, "email")["P2"][0] == "sent"
    assert set(outcome(campaign, "push")) == {"P1", "P2", "P3", "P5"}
    for channel in ("email", "push"):
        assert set(campaign.accepted(channel).values()) == {1}


def test_a_completed_channel_sends_the_difference_when_the_file_changes(campaign):
    rows = [customer(f"P{n}", "premium", f"+1212555010{n}") for n in range(1, 4)]
    write(campaign, *rows)
    campaign.start_sandbox()
    assert campaign.run().returncode == 0

    # P1 leaves after being sent, P4 joins, P2's first name changes.
    write(
        campaign,
        rows[1].replace("NP2", "Renamed"),
        rows[2],
        customer("P4", "premium", "+12125550104"),
    )

    again = campaign.run()

    assert again.returncode == 0, again.stderr[-3000:]
    assert "ran successfully" in again.stderr, "the changed file is not 'complete'"
    for channel in CHANNELS:
        assert set(campaign.accepted(channel).values()) == {1}, channel
        assert len(campaign.accepted(channel)) == 4, channel
        statuses = {cid: status for cid, (status, _, _) in outcome(campaign, channel).items()}
        assert statuses == {"P1": "sent", "P2": "sent", "P3": "sent", "P4": "sent"}

    unchanged = campaign.run()

    assert unchanged.returncode == 0
    assert "ran successfully" not in unchanged.stderr
    assert all(len(campaign.accepted(c)) == 4 for c in CHANNELS)


def test_widening_the_targeting_after_completion_sends_the_added_segment(campaign):
    write(
        campaign,
        customer("P1", "premium", "+12125550101"),
        customer("R2", "regular", "+12125550102"),
    )
    campaign.start_sandbox()
    assert campaign.run().returncode == 0
    assert list(campaign.accepted("push")) == [f"{TOKEN}P1"]

    campaign.configure(**{TASKS["push"]: {"target_segments": ["premium", "regular"]}})
    again = campaign.run()

    assert again.returncode == 0, again.stderr[-3000:]
    assert campaign.accepted("push") == {f"{TOKEN}P1": 1, f"{TOKEN}R2": 1}
    assert [r["status"] for r in campaign.results("push")] == ["sent", "sent"]


def test_a_dry_run_previews_the_current_file(campaign):
    write(campaign, customer("P1", "premium", "+12125550101"))
    campaign.start_sandbox()
    assert campaign.run("--dry-run").returncode == 0
    write(
        campaign,
        customer("P1", "premium", "+12125550101"),
        customer("P2", "premium", "+12125550102"),
    )

    again = campaign.run("--dry-run")

    assert again.returncode == 0, again.stderr[-3000:]
    preview = json.loads((campaign.folder / "dry-run" / "sms_preview.json").read_text())
    assert preview["counts"]["by_status"] == {"would_send": 2}
    assert all(campaign.requests(c) == 0 for c in CHANNELS)
