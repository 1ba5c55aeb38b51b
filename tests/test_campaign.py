"""The whole campaign through the luigi CLI against the sandbox: fan-out, rates, reruns."""

from __future__ import annotations

import json
import re
from collections import Counter

import pandas as pd
from conftest import CHANNELS, TASKS

from campaign_pipeline.sandbox import ChannelLimit

CONTACT = {"email": "email", "sms": "phone", "push": "device_token"}


def unguard(cell: str) -> str:
    """The value behind a cell that the formula guard prefixed with a quote."""
    return cell[1:] if cell[:2] in ("'=", "'+", "'-", "'@") else cell


TARGETS = {"email": ["premium", "regular", "new"], "sms": ["premium", "new"], "push": ["premium"]}


def targeted(campaign, channel: str) -> pd.DataFrame:
    customers = pd.read_parquet(campaign.folder / "segments.parquet")
    return customers[customers["segment"].isin(TARGETS[channel])]


def test_six_tasks_complete_and_results_account_for_every_customer(campaign):
    campaign.write_customers(rows=120, dirty=True, seed=11)
    campaign.start_sandbox()
    campaign.configure(**{TASKS[c]: {"target_segments": TARGETS[c]} for c in CHANNELS})

    done = campaign.run()

    assert done.returncode == 0, done.stderr[-3000:]
    assert "6 ran successfully" in done.stderr
    for task in ("LoadSegments", "CampaignReport", "RunCampaign", *TASKS.values()):
        # (luigi's summary lists five tasks of a kind: the scheduler's log names each)
        assert re.search(rf"task   {task}_test_\w+   has status   DONE", done.stderr), task
    for channel in CHANNELS:
        rows = campaign.results(channel)
        expected = targeted(campaign, channel)
        assert sorted(r["customer_id"] for r in rows) == sorted(expected["customer_id"])
        accepted = campaign.accepted(channel)
        sent = [r for r in rows if r["status"] == "sent"]
        assert len(sent) == sum(accepted.values()), "every accepted message is a 'sent' row"
        assert all(accepted[unguard(r["recipient"])] == 1 for r in sent)
        assert all(r["provider_message_id"] for r in sent)
        assert {r["status"] for r in rows} <= {"sent", "failed", "skipped"}
        assert all(r["sent_at"].endswith("+00:00") for r in sent)


def test_channels_run_concurrently_at_the_provider_rate_with_no_429(campaign):
    """A strict provider with the configured bucket: zero 429, rate within 5 %."""
    campaign.write_customers(rows=260, dirty=False, seed=5)
    limits = {
        "email": ChannelLimit(40, 10),
        "sms": ChannelLimit(30, 10),
        "push": ChannelLimit(30, 8),
    }
    campaign.start_sandbox(limits=limits, latency_ms=20, latency_jitter=0.5)
    campaign.configure(**{TASKS[c]: {"target_segments": TARGETS["email"]} for c in CHANNELS})
    for channel, limit in limits.items():
        api = {"rate_per_second": limit.rate_per_second, "burst": limit.burst, "concurrency": 4}
        campaign.configure(**{f"{channel}_api": api})

    done = campaign.run()

    assert done.returncode == 0, done.stderr[-3000:]
    spans = {}
    for channel, limit in limits.items():
        assert campaign.sandbox.stats()[channel]["rate_limited"] == 0
        times = sorted(
            r["received_at"] for r in campaign.sandbox.accepted() if r["channel"] == channel
        )
        assert len(times) == 260
        first = limit.burst - 2  # the client keeps two tokens of its burst in reserve
        rate = (len(times) - 1 - first) / (times[-1] - times[first])
        assert abs(rate / limit.rate_per_second - 1) <= 0.05, (channel, rate)
        spans[channel] = (times[0], times[-1])
    starts, ends = zip(*spans.values(), strict=True)
    assert max(starts) < min(ends), f"the channels did not overlap in time: {spans}"


def test_rerun_of_a_completed_campaign_sends_nothing(campaign):
    campaign.write_customers(rows=40)
    campaign.start_sandbox()
    assert campaign.run().returncode == 0
    requests_before = {c: campaign.requests(c) for c in CHANNELS}
    results_before = {c: campaign.results(c) for c in CHANNELS}

    again = campaign.run()

    assert again.returncode == 0
    assert "complete ones were encountered" in again.stderr
    assert "ran successfully" not in again.stderr
    assert {c: campaign.requests(c) for c in CHANNELS} == requests_before
    assert {c: campaign.results(c) for c in CHANNELS} == results_before


def test_result_cells_cannot_run_as_spreadsheet_formulas(campaign):
    campaign.customers_path.write_text(
        "customer_id,first_name,segment,email,phone,device_token\n"
        '"=HYPERLINK(""http://x.example/"",""y"")",Ann,premium,a@example.com,+12125550100,\n'
        "@SUM(A1),Bo,premium,b@example.com,+12125550101,\n"
        "-2+3,Cy,vip,c@example.com,+12125550102,\n"
    )
    campaign.start_sandbox()

    done = campaign.run()

    assert done.returncode == 0, done.stderr[-3000:]
    ids = [r["customer_id"] for r in campaign.results("email")]
    assert ids == ['\'=HYPERLINK("http://x.example/","y")', "'@SUM(A1)"]
    assert [r["recipient"] for r in campaign.results("sms")] == ["+12125550100", "+12125550101"]
    rejected = (campaign.folder / "rejected.csv").read_text()
    assert "'-2+3" in rejected and "\n-2+3" not in rejected


def test_dry_run_builds_every_request_sends_none_and_leaves_the_real_run_untouched(campaign):
    campaign.write_customers(rows=60, dirty=True, seed=9)
    campaign.start_sandbox()
    campaign.configure(**{TASKS[c]: {"target_segments": TARGETS[c]} for c in CHANNELS})
    env = {k: v for k, v in campaign.env().items() if k not in campaign.credentials}

    dry = campaign.run("--dry-run", env=env)

    assert dry.returncode == 0, dry.stderr[-3000:]
    assert all(campaign.requests(c) == 0 for c in CHANNELS)
    assert sorted(p.name for p in campaign.folder.iterdir()) == ["dry-run"]
    previews = {}
    for channel in CHANNELS:
        previews[channel] = json.loads(
            (campaign.folder / "dry-run" / f"{channel}_preview.json").read_text()
        )
        counts = previews[channel]["counts"]
        assert sum(counts["by_status"].values()) == len(targeted_in(campaign, channel))
        assert sum(sum(c.values()) for c in counts["by_segment"].values()) == sum(
            counts["by_status"].values()
        )
        assert len(previews[channel]["requests"]) == min(20, counts["by_status"]["would_send"])
    email = previews["email"]["requests"][0]
    assert email["headers"]["Authorization"] == "Bearer <$EMAIL_API_TOKEN>"
    assert email["body"]["personalizations"][0]["custom_args"]["campaign"] == "test"
    sms = previews["sms"]["requests"][0]
    assert "/Accounts/<$SMS_API_ACCOUNT_SID>/" in sms["url"]
    assert sms["headers"]["Authorization"] == (
        "Basic base64(<$SMS_API_ACCOUNT_SID>:<$SMS_API_AUTH_TOKEN>)"
    )

    real = campaign.run()

    assert real.returncode == 0, real.stderr[-3000:]
    for channel in CHANNELS:
        statuses = Counter(r["status"] for r in campaign.results(channel))
        would = previews[channel]["counts"]["by_status"]
        assert statuses["sent"] + statuses["failed"] == would["would_send"]
        assert statuses["skipped"] == would.get("skipped", 0)


def targeted_in(campaign, channel: str) -> pd.DataFrame:
    customers = pd.read_parquet(campaign.folder / "dry-run" / "segments.parquet")
    return customers[customers["segment"].isin(TARGETS[channel])]
