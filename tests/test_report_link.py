"""The visualiser links every task of a run to its report, and the report server serves it."""

from __future__ import annotations

import subprocess
import threading
import urllib.request

import pytest
from conftest import DATE, REPO, TASKS
from test_operations import luigid, task_list  # noqa: F401 - luigid: config/luigid.cfg

from campaign_pipeline.reporting.server import make_server

LINKED = (*TASKS.values(), "CampaignReport", "RunCampaign")


@pytest.fixture
def report_server(campaign):
    """A report server of the campaign's output folder, on a free loopback port: its URL."""
    server = make_server(campaign.root / "runs", "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def central_run(campaign, port: int, *args: str) -> subprocess.CompletedProcess:
    scheduler = ["--scheduler-host", "127.0.0.1", "--scheduler-port", str(port)]
    command = [a for a in campaign.command(*args, *scheduler) if a != "--local-scheduler"]
    return subprocess.run(command, cwd=REPO, env=campaign.env(), capture_output=True, text=True,
                          timeout=90)  # fmt: skip


def tracking_urls(port: int) -> dict[str, str | None]:
    """Each done task's tracking URL as luigid gives it to the visualiser."""
    return {task["name"]: task["tracking_url"] for task in task_list(port, "DONE").values()}


def fetch(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return answer.status, answer.headers["Content-Type"], answer.read().decode()


@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry-run"])
def test_each_task_links_its_report_and_the_report_server_serves_it(
    campaign,
    luigid,  # noqa: F811 - the fixture
    report_server,
    dry_run,
):
    campaign.write_customers(rows=10)
    campaign.start_sandbox()
    campaign.configure(report={"base_url": report_server})

    done = central_run(campaign, luigid, *(["--dry-run"] if dry_run else []))

    assert done.returncode == 0, done.stderr[-3000:]
    folder = campaign.folder / "dry-run" if dry_run else campaign.folder
    path = f"/test/{DATE}/dry-run/report.html" if dry_run else f"/test/{DATE}/report.html"
    urls = tracking_urls(luigid)
    assert {name: urls.get(name) for name in LINKED} == dict.fromkeys(LINKED, report_server + path)
    status, content_type, page = fetch(report_server + path)
    assert (status, content_type) == (200, "text/html; charset=utf-8")
    assert page == (folder / "report.html").read_text()
    assert page.lstrip().lower().startswith("<!doctype html>") and DATE in page
