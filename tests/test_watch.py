"""Seeing what a run does: progress on the console, previews that follow every change."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from conftest import CHANNELS, DATE, REPO, unlimited

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


def preview(campaign, channel: str) -> dict:
    return json.loads((campaign.folder / "dry-run" / f"{channel}_preview.json").read_text())


def test_every_preview_shows_the_current_templates_and_settings(campaign):
    """Edit a template and a setting between two dry runs: the second preview shows both;
    the dry run still exits 0 and campaign-report --dry-run summarises it."""
    templates = campaign.root / "templates"
    shutil.copytree(REPO / "config" / "templates", templates)
    campaign.start_sandbox()
    campaign.configure(campaign={"templates_dir": str(templates)})
    campaign.write_customers(rows=10)
    first = campaign.run("--dry-run")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Spring prices" not in json.dumps(preview(campaign, "sms"))

    (templates / "sms" / "spring_sale" / "body.txt").write_text("Spring prices for {{ segment }}")
    campaign.configure(email_api={"from_name": "Edited Sender"})
    again = campaign.run("--dry-run")

    assert again.returncode == 0, again.stderr[-3000:]
    bodies = [r["body"]["Body"] for r in preview(campaign, "sms")["requests"]]
    assert bodies and all(body.startswith("Spring prices for ") for body in bodies), bodies
    senders = [r["body"]["from"] for r in preview(campaign, "email")["requests"]]
    assert senders and all(s.get("name") == "Edited Sender" for s in senders), senders
    assert all(campaign.requests(c) == 0 for c in CHANNELS)
    report = subprocess.run(
        [str(Path(sys.executable).parent / "campaign-report"), "--dry-run", "--date", DATE],
        cwd=REPO, env=campaign.env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    assert "would_send" in report.stdout, report.stdout


def test_the_email_preview_shows_the_batch_the_provider_receives(campaign):
    """The preview's batch is the request the sandbox then receives from a real run: the
    personalizations with their substitutions, the shared content template."""
    campaign.start_sandbox()
    campaign.configure(email_api={"batch_size": 3, "concurrency": 1})
    campaign.write_customers(rows=10)
    dry = campaign.run("--dry-run", task="SendEmailCampaign")
    assert dry.returncode == 0, dry.stderr[-3000:]
    shown = preview(campaign, "email")
    assert shown["batch_size"] == 3 and len(shown["batches"]) == 1
    batch = shown["batches"][0]["body"]
    assert len(batch["personalizations"]) == 3
    assert all(p["substitutions"] for p in batch["personalizations"])
    # one rendered message per sample recipient, as before
    first = shown["requests"][0]["body"]
    assert first["personalizations"][0]["to"] == batch["personalizations"][0]["to"]

    real = campaign.run(task="SendEmailCampaign")
    assert real.returncode == 0, real.stderr[-3000:]
    received = campaign.sandbox.accepted()
    first_id = next(r["message_id"] for r in received if r["recipient"] == first_to(batch))
    personalizations = [
        {k: v for k, v in r["request"].items() if k not in ("from", "content")}
        for r in received
        if r["message_id"] == first_id
    ]
    one = next(r["request"] for r in received if r["message_id"] == first_id)
    wire = {"personalizations": personalizations, "from": one["from"], "content": one["content"]}
    assert batch == wire


def first_to(batch: dict) -> str:
    return batch["personalizations"][0]["to"][0]["email"]
