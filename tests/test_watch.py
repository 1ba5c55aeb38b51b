"""Seeing what a run does: progress on the console, previews that follow every change."""

from __future__ import annotations

import contextlib
import csv
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from conftest import CHANNELS, DATE, REPO, free_port, unlimited, wait_for
from test_operations import task_list

from campaign_pipeline.sandbox import ChannelLimit, substitute

pytestmark = pytest.mark.e2e  # every test here runs luigi or make demo

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
    campaign.write_customers(rows=60)  # sending lasts long enough to measure a rate
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
    # Each request has tags of its own (a nonce), so compare what each recipient receives.
    wire = [
        {k: v for k, v in r["request"].items() if k != "substitutions"}
        for r in received
        if r["message_id"] == first_id
    ]
    assert delivered(batch) == wire


def delivered(batch: dict) -> list[dict]:
    """What each recipient of *batch* receives once SendGrid has substituted the tags."""
    messages = []
    for p in batch["personalizations"]:
        tags = p["substitutions"]
        content = [{**c, "value": substitute(c["value"], tags)} for c in batch["content"]]
        fields = {k: v for k, v in p.items() if k != "substitutions"}
        subject = substitute(p["subject"], tags)
        messages.append({**fields, "from": batch["from"], "subject": subject, "content": content})
    return messages


def first_to(batch: dict) -> str:
    return batch["personalizations"][0]["to"][0]["email"]


def demo(tmp_path, rows: int, rate: int) -> tuple[list[str], int]:
    port = free_port()
    # quiet hours that end soon: a customer in Mountain time waits a few seconds at most
    args = [f"DEMO_ROWS={rows}", f"DEMO_RATE={rate}", f"DEMO_PORT={port}", "DEMO_QUIET_SECONDS=5"]
    return ["make", "--no-print-directory", "demo", *args, f"DEMO_DIR={tmp_path}"], port


def luigid_answers(port: int) -> bool:
    url = f"http://127.0.0.1:{port}/static/visualiser/index.html"
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def processes_using(folder: Path) -> list[str]:
    """The command lines of live processes that name *folder* (the demo's luigi, luigid)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if str(folder) in text and "make" not in text.split(" ")[0]:
                found.append(text)
    return found


def test_make_demo_runs_a_live_campaign_through_its_own_luigid_and_stops_it(tmp_path):
    """`make demo` (DEMO_ROWS small here): the visualiser's address first, the campaign
    demo-live through a luigid of its own, then nothing of it left running."""
    command, port = demo(tmp_path, rows=10, rate=100)
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    url = f"visualiser: http://127.0.0.1:{port}/static/visualiser/index.html"
    assert url in done.stdout
    assert "python -m campaign_pipeline.sample_data" in done.stdout
    assert "luigid stopped" in done.stdout
    assert "Informed scheduler that task   SendEmailCampaign_demo_live" in done.stderr
    run = tmp_path / "campaigns" / "demo-live" / datetime.date.today().isoformat()
    for channel in CHANNELS:
        rows = list(csv.DictReader((run / f"{channel}_results.csv").read_text().splitlines()))
        assert rows and {r["status"] for r in rows} <= {"sent", "failed", "skipped"}
    assert not luigid_answers(port)
    assert processes_using(tmp_path) == []


def test_ctrl_c_stops_make_demo_and_everything_it_started(tmp_path):
    command, port = demo(tmp_path, rows=600, rate=20)
    running = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    ledger = tmp_path / "campaigns" / "demo-live" / datetime.date.today().isoformat()
    wait_for(lambda: (ledger / "sms_ledger.sqlite").exists(), 30, "the demo sending")
    assert luigid_answers(port)

    os.killpg(running.pid, signal.SIGINT)  # what Ctrl-C in a terminal does

    assert running.wait(timeout=40) != 0
    assert not luigid_answers(port)
    assert processes_using(tmp_path) == []


REPORTS_LINE = re.compile(r"demo: reports \(the visualiser's links\): (http://127\.0\.0\.1:\d+)/")


def tracking_links(port: int) -> list[str]:
    """The tracking URLs luigid gives the visualiser for the demo's running and done tasks."""
    tasks = [t for status in ("RUNNING", "DONE") for t in task_list(port, status).values()]
    return [t["tracking_url"] for t in tasks if t.get("tracking_url")]


def test_make_demo_serves_the_reports_its_visualiser_links_to_then_stops_serving(tmp_path):
    folder = tmp_path / "demo"  # emptied by the demo: its output goes next to it
    command, port = demo(folder, rows=300, rate=50)
    output = tmp_path / "demo.out"
    with output.open("w") as out:
        running = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.DEVNULL,
                                   start_new_session=True)  # fmt: skip
    try:
        wait_for(lambda: REPORTS_LINE.search(output.read_text()), 60, "the reports' address")
        reports = REPORTS_LINE.search(output.read_text())[1]
        with urllib.request.urlopen(reports + "/", timeout=5) as answer:
            assert answer.status == 200  # served while the campaign runs
        wait_for(lambda: tracking_links(port), 60, "a task linking its report")
        links = tracking_links(port)
        assert running.wait(timeout=120) == 0, output.read_text()[-3000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(running.pid, signal.SIGKILL)
    today = datetime.date.today().isoformat()
    assert set(links) == {f"{reports}/demo-live/{today}/report.html"}
    assert (folder / "campaigns" / "demo-live" / today / "report.html").is_file()
    assert "demo: report server stopped" in output.read_text()
    with pytest.raises(OSError):  # nothing listens any more
        urllib.request.urlopen(reports + "/", timeout=2)
    assert processes_using(folder) == []
