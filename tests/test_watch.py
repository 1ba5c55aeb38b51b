"""Seeing what a run does: progress on the console, previews that follow every change."""

from __future__ import annotations

import re
from collections import Counter

from conftest import unlimited

from campaign_pipeline.sandbox import ChannelLimit

PROGRESS = re.compile(
    r"sms progress: (?P<sent>[\d,]+) / (?P<total>[\d,]+) sent · (?P<failed>[\d,]+) failed"
    r"(?: · (?P<rate>[\d.,]+)/s \(limit (?P<limit>[^)]*)\))?(?: · ETA (?P<eta>[^(\n]+))?"
    r"(?P<done> \(done\))?$",
    re.MULTILINE,
)


def test_a_sending_channel_logs_its_progress_with_rate_and_eta(campaign):
    """The console is never silent while a channel sends: progress lines every
    [campaign] progress_log_seconds, the last one with the figures of the results file."""
    campaign.start_sandbox(limits={**unlimited(), "sms": ChannelLimit(8, 3)})
    campaign.configure(
        campaign={"progress_log_seconds": 0.5},
        sms_api={"rate_per_second": 8, "burst": 3},
    )
    campaign.write_customers(rows=24)
    done = campaign.run(task="SendSmsCampaign")
    assert done.returncode == 0, done.stderr[-3000:]

    lines = [m.groupdict() for m in PROGRESS.finditer(done.stderr)]
    assert len(lines) >= 3, done.stderr[-3000:]
    total = int(lines[0]["total"])
    assert total > 0 and all(int(line["total"]) == total for line in lines)
    sending = lines[1:-1]
    assert any(line["rate"] and line["eta"] for line in sending), sending
    assert all(line["limit"] == "8/s" for line in lines if line["rate"])
    last = lines[-1]
    assert last["done"], lines
    results = Counter(row["status"] for row in campaign.results("sms"))
    assert int(last["sent"]) == results["sent"] == total - results["failed"]
    assert int(last["failed"]) == results["failed"]
