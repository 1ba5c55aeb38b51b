"""Living with it from cron: a quiet `campaign-run daily`, the scheduler check, `make clean`,
re-enabling a disabled task, and the sandbox's --help."""

from __future__ import annotations

import fcntl
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
from conftest import DATE, REPO, RETCODE, free_port
from test_operations import luigid  # noqa: F401

from campaign_pipeline import runner, sandbox

BIN = Path(sys.executable).parent


@pytest.mark.e2e
def test_sandbox_help_explains_every_option_and_the_command():
    shown = subprocess.run([str(BIN / "campaign-sandbox"), "--help"], capture_output=True,
                           text=True, timeout=30, cwd=REPO)  # fmt: skip

    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())
    for action in sandbox.option_parser()._actions:
        assert action.help, f"{action.option_strings} has no help text"
        assert action.option_strings[-1] in text
        first_words = " ".join(action.help.split()[:4]).replace("%%", "%")
        assert first_words in text, f"the help of {action.option_strings[-1]} is not shown"
    assert "[-- COMMAND [ARG ...]]" in text
    assert 'everything after a lone "--" is a command to run' in text
    assert "exits with the command's code" in text


def campaign_run(campaign, *args: str, port: int | None = None):
    """`campaign-run ...` as the cron entry runs it: no terminal, this test's config and logs."""
    command = [str(BIN / "campaign-run"), "--scheduler-port", str(port or free_port()),
               "--log-dir", str(campaign.root / "log"), *args]  # fmt: skip
    return subprocess.run(command, cwd=REPO, env=campaign.env(), capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def log_text(campaign) -> tuple[Path, str]:
    (log,) = (campaign.root / "log").glob("campaign-*.log")
    return log, log.read_text()


def test_a_daily_run_that_succeeds_prints_nothing_and_logs_everything(campaign):
    campaign.write_customers(rows=10)
    campaign.start_sandbox()

    done = campaign_run(campaign, "daily", "--date", DATE)

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (done.stdout, done.stderr) == ("", "")
    log, text = log_text(campaign)
    assert "on local scheduler (no luigid answered)" in text
    assert "This progress looks :)" in text
    assert f"=== exit 0 (success); log: {log}" in text
    assert campaign.sandbox.stats()["email"]["accepted"] == 10


def test_a_failed_daily_run_prints_a_short_summary(campaign):
    campaign.write_customers(rows=10)
    campaign.start_sandbox()
    campaign.configure(SendSmsCampaign={"template": "no_such_template"})

    done = campaign_run(campaign, "daily", "--date", DATE)

    assert done.returncode == RETCODE["task_failed"]
    log, text = log_text(campaign)
    lines = done.stdout.splitlines()
    assert lines[0] == (f"campaign-run: DailyCampaign --date {DATE} --campaign test on local "
                        "scheduler (no luigid answered) failed")  # fmt: skip
    assert lines[1].startswith("  SendSmsCampaign(date=2026-11-25, campaign=test")
    assert lines[1].endswith(
        "failed: TemplateError: sms template 'no_such_template': "
        f"no folder {REPO}/config/templates/sms/no_such_template"  # luigi.cfg's, resolved
    )
    assert lines[2:] == [f"=== exit 30 (task_failed); log: {log}"]
    assert "Traceback" in text and "Traceback" not in done.stdout


@pytest.fixture
def web_server():
    """A plain HTTP server that is not luigid (Python's file server), on a free loopback port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_web_server_on_the_scheduler_port_is_not_taken_for_luigid(campaign, web_server):
    campaign.write_customers(rows=10)
    campaign.start_sandbox()

    done = campaign_run(campaign, "--verbose", "daily", "--date", DATE, port=web_server)

    assert done.returncode == 0, done.stdout[-3000:]
    notice = done.stdout.splitlines()[0]
    assert notice.startswith(f"campaign-run: http://127.0.0.1:{web_server} is not luigid (HTTP 404")
    assert notice.endswith("); using the local scheduler") and "SimpleHTTP" in notice
    log, text = log_text(campaign)
    assert notice in text and "on local scheduler" in text
    # --verbose echoes what the log has (a terminal would too)
    assert "This progress looks :)" in done.stdout
    assert done.stdout.endswith(f"=== exit 0 (success); log: {log}\n")
    assert campaign.sandbox.stats()["push"]["accepted"] > 0

    ping = subprocess.run([str(BIN / "campaign-run"), "--scheduler-port", str(web_server), "ping"],
                          capture_output=True, text=True, timeout=30, cwd=REPO)  # fmt: skip
    assert ping.returncode == 1
    assert f"no luigid at http://127.0.0.1:{web_server}: HTTP 404" in ping.stdout


def test_only_luigid_itself_counts_as_the_central_scheduler(luigid):  # noqa: F811
    assert runner.ask_scheduler("127.0.0.1", luigid) == ""
    where, flags, notice = runner.choose_scheduler("127.0.0.1", luigid)
    assert where == f"central scheduler http://127.0.0.1:{luigid}" and notice == ""
    assert flags == ["--scheduler-host", "127.0.0.1", "--scheduler-port", str(luigid)]
    ping = subprocess.run([str(BIN / "campaign-run"), "--scheduler-port", str(luigid), "ping"],
                          capture_output=True, text=True, timeout=30, cwd=REPO)  # fmt: skip
    assert (ping.returncode, ping.stdout) == (0, "")

    assert runner.ask_scheduler("127.0.0.1", free_port()) == runner.NOTHING_LISTENS
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        port = silent.getsockname()[1]
        answer = runner.ask_scheduler("127.0.0.1", port, timeout=0.5)
    assert answer.startswith("no HTTP answer"), answer
    assert runner.choose_scheduler("127.0.0.1", port)[1] == ["--local-scheduler"]


REBUILT = [".venv/bin/python", ".pytest_cache/x", ".ruff_cache/x", "x.egg-info/PKG-INFO",
           "var/prism/node_modules/x", "var/bench/results.json", "var/test-artifacts/x.png",
           "var/sandbox-messages.jsonl", "campaign_pipeline/__pycache__/x.pyc"]  # fmt: skip
DATA = ["var/campaigns/demo/2026-11-25/email_ledger.sqlite", "var/campaigns/demo/.run.lock",
        "var/luigid/state.pickle", "var/log/campaign-2026-11-25.log"]  # fmt: skip


def make_in(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """The repository's Makefile run in *folder*, a stand-in for a clone, without a terminal."""
    env = {**os.environ, "LOG_DIR": "var/log", "LUIGID_DIR": "var/luigid"}
    return subprocess.run(["make", "-s", "-C", str(folder), "-f", str(REPO / "Makefile"), *args],
                          env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


@pytest.mark.e2e
def test_make_clean_keeps_campaign_data_and_clean_data_names_it_and_asks(tmp_path):
    for name in REBUILT + DATA:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    dry = subprocess.run(["make", "-n", "clean"], cwd=REPO, capture_output=True, text=True)
    assert (
        "rm -rf" in dry.stdout and "var/campaigns" not in dry.stdout.split("campaign data kept")[0]
    )

    cleaned = make_in(tmp_path, "clean")

    assert cleaned.returncode == 0, cleaned.stderr
    assert [n for n in REBUILT if (tmp_path / n).exists()] == []
    assert all((tmp_path / name).exists() for name in DATA)
    assert "make clean-data deletes it" in cleaned.stdout

    refused = make_in(tmp_path, "clean-data")  # no terminal to ask, no CONFIRM=yes

    assert refused.returncode == 2
    assert all((tmp_path / name).exists() for name in DATA)
    for folder in ("var/campaigns", "var/luigid", "var/log"):
        assert f"  {folder} (" in refused.stdout
    assert "a rerun of a date sends to everyone again" in refused.stdout
    assert "nothing deleted: run make clean-data CONFIRM=yes to delete them" in refused.stdout

    with (tmp_path / "var/campaigns/demo/.run.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as campaign-run holds it
        busy = make_in(tmp_path, "clean-data", "CONFIRM=yes")
    assert busy.returncode == 2
    assert "a run of campaign demo is in progress" in busy.stdout
    assert all((tmp_path / name).exists() for name in DATA)

    deleted = make_in(tmp_path, "clean-data", "CONFIRM=yes")

    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    assert "deleted: var/campaigns var/luigid var/log" in deleted.stdout
    assert not any((tmp_path / name).exists() for name in DATA)


def rpc(port: int, method: str, **data) -> dict:
    """luigid's RPC as the README's curl commands call it: GET /api/METHOD?data=JSON."""
    url = f"http://127.0.0.1:{port}/api/{method}?data={json.dumps(data, separators=(',', ':'))}"
    with urllib.request.urlopen(url.replace(" ", "%20"), timeout=5) as answer:
        return json.load(answer)["response"]


def demo_sms_task_id() -> str:
    """The id of the demo's SMS task of 2026-11-25, as the demo's configuration makes it."""
    code = (
        "import datetime, campaign_pipeline as c; "
        "print(c.SendSmsCampaign(date=datetime.date(2026, 11, 25), campaign='demo').task_id)"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUIGI")}
    env["LUIGI_CONFIG_PATH"] = str(REPO / "config" / "demo.cfg")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60, check=True)  # fmt: skip
    return done.stdout.strip()


def test_a_task_luigid_disabled_is_re_enabled_as_the_readme_says(luigid):  # noqa: F811
    task_id = demo_sms_task_id()
    for _ in range(2):  # [scheduler] retry_count = 2 failures within disable_window
        rpc(luigid, "add_task", task_id=task_id, status="FAILED", worker="cron-test",
            family="SendSmsCampaign", runnable=True)  # fmt: skip
    disabled = rpc(luigid, "task_list", status="DISABLED", upstream_status="")
    assert list(disabled) == [task_id]

    answer = rpc(luigid, "re_enable_task", task_id=task_id)

    assert answer["status"] == "FAILED"
    assert rpc(luigid, "task_list", status="DISABLED", upstream_status="") == {}
    readme = (REPO / "README.md").read_text()
    assert (
        f'curl -g \'http://127.0.0.1:8082/api/re_enable_task?data={{"task_id":"{task_id}"}}\''
        in readme
    )


def test_the_cron_entry_calls_the_installed_campaign_run_not_make():
    lines = (REPO / "config" / "crontab.example").read_text().splitlines()
    (entry,) = [line for line in lines if line[:1].isdigit()]
    assert entry.endswith("&& .venv/bin/campaign-run daily")
    assert "make" not in entry


def test_the_summary_names_a_task_luigid_disabled():
    """luigi's own words for a disabled task (luigi/execution_summary.py), as a run prints them."""
    failures = runner.Failures()
    output = """2026-11-25 06:00:01,000 INFO luigi-interface: Done scheduling tasks
===== Luigi Execution Summary =====

Scheduled 3 tasks of which:
* 1 complete ones were encountered:
    - 1 LoadSegments(date=2026-11-25, campaign=demo, dry_run=False)
* 2 were left pending, among these:
    * 1 was not granted run permission by the scheduler:
        - 1 SendSmsCampaign(date=2026-11-25, campaign=demo, dry_run=False)
    * 1 had failed dependencies:
        - 1 RunCampaign(date=2026-11-25, campaign=demo, dry_run=False)

===== Luigi Execution Summary =====
"""
    for line in output.splitlines(keepends=True):
        failures.feed(line)

    assert failures.summary() == [
        "SendSmsCampaign(date=2026-11-25, campaign=demo, dry_run=False) was not run: luigid "
        "has disabled it (README: re-enabling a disabled task)"
    ]
