"""A fresh clone, any customer file with the five required columns, any working folder: the
two commands work without anything beside the repository."""

from __future__ import annotations

import configparser
import csv
import datetime
import json
import os
import shutil
import subprocess
import sys
from collections import Counter

import jinja2
import pytest
from conftest import CHANNELS, REPO, SPECS, free_port

from campaign_pipeline import channels, defaults
from campaign_pipeline.exceptions import TemplateError
from campaign_pipeline.templates import MessageTemplate

SHARED_SPECS = REPO.parent / "shared" / "provider-specs"
FIVE = ["customer_id", "segment", "email", "phone", "device_token"]
ALL = ["premium", "regular", "new"]
TASKS = ("SendEmailCampaign", "SendSmsCampaign", "SendPushNotification")


# -- the contract tests run from the committed subset of the providers' specs ---------------


def test_contract_tests_read_the_committed_spec_subset():
    assert SPECS == REPO / "tests" / "specs"
    lists = ("bounces", "blocks", "spam_reports", "invalid_emails", "unsubscribes")
    for channel, paths in {
        "email": [
            "/v3/mail/send",
            *[f"/v3/suppression/{name}" for name in lists],  # read before sending
            "/v3/asm/groups/{group_id}/suppressions",
        ],
        "sms": ["/2010-04-01/Accounts/{AccountSid}/Messages.json"],
        "push": ["/v1/projects/{project_id}/messages:send"],
    }.items():
        spec = json.loads((SPECS / f"{channel}.json").read_text())
        assert list(spec["paths"]) == paths
        text = json.dumps(spec)
        assert '"summary"' not in text and '"x-' not in text


@pytest.mark.skipif(
    not SHARED_SPECS.is_dir(),
    reason=f"no official provider specs at {SHARED_SPECS} to compare the committed subset with",
)
@pytest.mark.e2e
def test_committed_spec_subset_is_what_the_script_makes_from_the_official_specs():
    done = subprocess.run(
        [sys.executable, str(REPO / "tests" / "specs" / "make_subset.py"), "--check"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


# -- the shipped templates render on a file with only the required columns -----------------


def test_demo_campaign_sends_on_all_channels_from_a_five_column_file(campaign):
    customers = campaign.write_customers(rows=10)
    with campaign.customers_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, FIVE, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(customers)
    campaign.start_sandbox()
    campaign.configure(
        **{task: {"target_segments": ALL}
           for task in ("SendEmailCampaign", "SendSmsCampaign", "SendPushNotification")}
    )  # fmt: skip

    done = campaign.run()

    assert done.returncode == 0, done.stderr[-3000:]
    for channel in CHANNELS:
        rows = campaign.results(channel)
        assert [r["status"] for r in rows] == ["sent"] * 10, (channel, rows[:2])
        assert campaign.requests(channel) == 10
    messages = [m for m in campaign.sandbox.accepted() if m["channel"] == "email"]
    assert "Hi there," in json.dumps(messages[0])


def template(tmp_path, text: str) -> MessageTemplate:
    folder = tmp_path / "sms" / "t"
    folder.mkdir(parents=True)
    (folder / "body.txt").write_text(text)
    return MessageTemplate(str(tmp_path), "sms", "t", channels.named("sms").parts)


@pytest.mark.parametrize(
    "text",
    [
        '{{ first_name | default("there") }} {{ segment }}',
        '{{ first_name | d("there", true) }} {{ segment }}',
        "{% if first_name is defined %}hi{% endif %} {{ segment }}",
        '{% for s in [segment] %}{{ s }} {{ first_name|default("x") }}{% endfor %}',
    ],
)
def test_a_variable_guarded_by_default_or_defined_is_optional(tmp_path, text):
    body = template(tmp_path, text)

    body.check({"segment"})

    assert "new" in body.render({"segment": "new"})["body.txt"]


@pytest.mark.parametrize(
    "text",
    [
        '{{ first_name | default("there") }}, {{ first_name }}',  # guarded once, not twice
        '{{ first_name | upper | default("x") }}',  # upper runs on the undefined name first
        "{% if first_name is defined %}{{ segment }}{% endif %}{{ first_name }}",
    ],
)
def test_a_variable_used_unguarded_anywhere_must_be_a_column(tmp_path, text):
    body = template(tmp_path, text)

    with pytest.raises(TemplateError, match="uses first_name, which no customer has"):
        body.check({"segment"})
    with pytest.raises(jinja2.UndefinedError):
        body.env.get_template("body.txt").render(segment="new")


def test_shipped_templates_check_on_the_five_required_columns():
    for channel in channels.registered():
        folder = str(REPO / "config" / "templates")
        shipped = MessageTemplate(folder, channel.name, "spring_sale", channel.parts)
        shipped.check({*FIVE, "campaign", "date"})
        parts = shipped.render(dict.fromkeys([*FIVE, "campaign", "date"], "x"))
        assert all(parts.values())


# -- the package's defaults apply wherever luigi runs ---------------------------------------


def no_luigi_config(campaign, **extra: str) -> dict[str, str]:
    env = campaign.env(**extra)
    if "LUIGI_CONFIG_PATH" not in extra:
        del env["LUIGI_CONFIG_PATH"]
    return env


def push_task(target_segments: list[str]) -> str:
    """The id of the demo's push task of 2026-11-25 with *target_segments* and the template
    the package leaves unnamed."""
    push = channels.PUSH.task(
        date=datetime.date(2026, 11, 25),
        campaign="demo",
        target_segments=target_segments,
        template="",
    )
    return push.task_id


def test_a_run_from_another_folder_keeps_the_package_defaults(campaign, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    # the run folder on the command line: the failure's report is not left in the checkout
    output = ("--pipeline-output-dir", str(tmp_path / "runs"))
    done = campaign.run(*output, cwd=elsewhere, env=no_luigi_config(campaign))

    # [retcode]: exit 30, the settings error of the templates the package does not name;
    # defaults.cfg's relative paths are the checkout's, not the folder's
    assert done.returncode == 30, done.stderr[-3000:]
    assert "[SendEmailCampaign] template is not set" in done.stderr
    assert f"customer file {REPO / 'data' / 'sample' / 'customers.csv'};" in done.stderr
    assert list(elsewhere.iterdir()) == []
    assert " INFO luigi-interface: " in done.stderr and "DEBUG" not in done.stderr
    assert "Running Worker with 3 processes" in done.stderr
    # luigi's summary shortens the channel tasks to (...): their ids show their parameters
    assert f"task   {push_task(['premium'])}   has status" in done.stderr
    sms = channels.SMS.task(
        date=datetime.date(2026, 11, 25),
        campaign="demo",
        target_segments=["premium", "new"],
        template="",
    )
    assert f"task   {sms.task_id}   has status" in done.stderr


def test_a_run_that_names_no_template_stops_naming_the_key(campaign):
    """Neither the package nor the checkout's luigi.cfg names a template (the demo's is in
    config/demo.cfg): a campaign that forgot one stops before sending, naming the key,
    instead of sending the demo's spring_sale to real customers."""
    campaign.write_customers(rows=5)
    campaign.start_sandbox()
    for task in ("SendEmailCampaign", "SendPushNotification"):
        campaign.settings[task].pop("template")  # the harness names the shipped one
    campaign.configure()

    done = campaign.run()  # in the checkout, which luigi.cfg is read from

    assert done.returncode == 30, done.stderr[-3000:]
    missing = [line for line in done.stderr.splitlines() if "template is not set" in line]
    assert any("[SendEmailCampaign] template is not set" in line for line in missing)
    assert any("[SendPushNotification] template is not set" in line for line in missing)
    assert not any("[SendSmsCampaign]" in line for line in missing)
    assert campaign.sandbox.accepted() == []


def test_the_folder_luigi_cfg_and_luigi_config_path_still_override_key_by_key(campaign, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "luigi.cfg").write_text("[core]\nworkers = 2\n[retcode]\nmissing_data = 21\n")
    override = tmp_path / "override-elsewhere.cfg"
    override.write_text(
        '[retcode]\nmissing_data = 22\n[SendPushNotification]\ntarget_segments = ["new"]\n'
        "[campaign]\ninput_path = missing.csv\n"  # relative to this file's folder
        "output_dir = runs\n"  # not the checkout's var/campaigns
    )

    done = campaign.run(
        cwd=elsewhere, env=no_luigi_config(campaign, LUIGI_CONFIG_PATH=str(override))
    )

    assert done.returncode == 22, done.stderr[-3000:]
    assert f"customer file {tmp_path / 'missing.csv'} does not exist" in done.stderr
    assert "Running Worker with 2 processes" in done.stderr
    assert f"task   {push_task(['new'])}   has status" in done.stderr
    assert " INFO luigi-interface: " in done.stderr and "DEBUG" not in done.stderr


def read_cfg(path) -> dict[tuple[str, str], str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str
    parser.read(path)
    return {(s, k): v for s in parser.sections() for k, v in parser[s].items()}


def test_the_packaged_defaults_are_the_values_of_the_shipped_luigi_cfg():
    """Two copies of the defaults: a key changed or added in one must be in the other."""
    packaged = read_cfg(REPO / "campaign_pipeline" / "defaults.cfg")
    shipped = read_cfg(REPO / "luigi.cfg")
    shipped.pop(("campaign", "templates_dir"))  # packaged: defaults.PACKAGE_PATHS
    shipped.pop(("consent", "suppressions"))  # the same

    assert packaged == shipped


# -- paths do not depend on the folder luigi runs in ----------------------------------------


def test_relative_paths_are_relative_to_the_config_file_not_the_current_folder(campaign, tmp_path):
    """A cron job started in one folder and a run by hand from another, reading the same
    config file, use the same customer file, run folders and consent store."""
    campaign.write_customers(rows=8)
    campaign.start_sandbox()
    assert campaign.config_path.parent == campaign.root
    campaign.configure(
        campaign={"input_path": "customers.csv", "output_dir": "runs"},
        consent={"store": "consent.sqlite"},
        **{task: {"template": "spring_sale"} for task in TASKS},  # luigi.cfg is not read there
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    first = campaign.run(cwd=elsewhere)

    assert first.returncode == 0, first.stderr[-3000:]
    files = [line for line in first.stderr.splitlines() if " files: " in line]
    assert len(files) == 1, files  # once per run
    assert f"customer file {campaign.customers_path};" in files[0]
    assert f"run folders {campaign.root / 'runs'};" in files[0]
    assert f"consent store {campaign.root / 'consent.sqlite'};" in files[0]
    assert list(elsewhere.iterdir()) == []  # nothing written where luigi ran
    sent = {channel: campaign.accepted(channel) for channel in CHANNELS}
    assert sum(map(len, sent.values())) > 0

    again = campaign.run(cwd=REPO)  # the same campaign from the checkout: nothing new

    assert again.returncode == 0, again.stderr[-3000:]
    assert {channel: campaign.accepted(channel) for channel in CHANNELS} == sent


def test_a_run_never_uses_the_lock_folder_every_user_shares(campaign, tmp_path):
    """luigi's default pid-lock folder ($TMPDIR/luigi) is one for every user: once another
    user made it (0700), this user's runs died in a PermissionError traceback. Here it is
    a file, which fails the same way for any user, root included."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    (temp / "luigi").write_text("another user's folder\n")
    campaign.write_customers(rows=4)
    campaign.start_sandbox()
    campaign.settings["core"].pop("lock_pid_dir")
    campaign.configure()
    command = [arg for arg in campaign.command() if arg != "--no-lock"]

    done = subprocess.run(command, cwd=REPO, env=campaign.env(TMPDIR=str(temp)),
                          capture_output=True, text=True, timeout=120)  # fmt: skip

    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert (temp / f"luigi-{os.getuid()}").is_dir()


def test_a_lock_folder_set_to_where_luigi_cannot_write_is_named_first(campaign, tmp_path):
    """A [core] lock_pid_dir of the user's that luigi cannot use: luigi takes its lock before
    it reads a task and dies in a traceback (exit 40), so the setting is named before that."""
    (tmp_path / "a-file").write_text("not a folder\n")
    campaign.write_customers(rows=4)
    campaign.start_sandbox()
    campaign.configure(core={"lock_pid_dir": str(tmp_path / "a-file" / "locks")})
    command = [arg for arg in campaign.command() if arg != "--no-lock"]

    done = subprocess.run(command, cwd=REPO, env=campaign.env(), capture_output=True,
                          text=True, timeout=120)  # fmt: skip

    assert done.returncode == 40, done.stderr[-3000:]
    first = done.stderr.splitlines()[0]
    assert first == (
        f"setting: [core] lock_pid_dir: {tmp_path}/a-file/locks: its parent {tmp_path}/a-file "
        "is not a folder; luigi cannot take its run lock there and will stop (exit 40): name "
        f"a folder this user can write, or remove the key for {defaults.LOCK_PID_DIR}"
    )
    assert campaign.sandbox.stats()["email"]["requests"] == 0


def test_the_lock_folder_check_says_which_folder_is_wrong(tmp_path):
    (tmp_path / "file").write_text("x")
    assert defaults.lock_dir_problem(tmp_path) == ""
    assert defaults.lock_dir_problem(tmp_path / "new") == "", "luigi makes it"
    assert defaults.lock_dir_problem(tmp_path / "file") == f"{tmp_path}/file: it is not a folder"
    assert defaults.lock_dir_problem(tmp_path / "no" / "new") == (
        f"{tmp_path}/no/new: its parent {tmp_path}/no does not exist"
    )


# -- one configuration for every demo command -----------------------------------------------


def clone_of_the_repository(folder) -> None:
    """The files the make targets read; setup.cfg and pyproject.toml with their times, so that
    make finds the installed venv up to date."""
    folder.mkdir()
    for name in ("Makefile", "luigi.cfg", "setup.cfg", "pyproject.toml"):
        shutil.copy2(REPO / name, folder / name)
    shutil.copytree(REPO / "config", folder / "config", ignore=shutil.ignore_patterns("*.tmp"))
    shutil.copytree(REPO / "data" / "sample", folder / "data" / "sample")


def sandbox_messages(clone) -> Counter:
    path = clone / "var" / "sandbox-messages.jsonl"
    return Counter(json.loads(line)["channel"] for line in path.read_text().splitlines())


@pytest.mark.e2e
def test_an_edit_of_the_demo_config_counts_at_once_and_the_days_window_stays(tmp_path):
    """var/demo.cfg was written once per date, so an edit of config/demo.cfg (a cap, the
    suppression file) after the day's first demo command was ignored until the next day."""
    clone = tmp_path / "clone"
    clone_of_the_repository(clone)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUIGI")}
    command = ["make", "-s", "-o", f"{sys.prefix}/.installed", "-C", str(clone), "demo-config",
               f"VENV={sys.prefix}"]  # fmt: skip
    written = clone / "var" / "demo.cfg"

    def demo_config() -> str:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        return written.read_text()

    first = demo_config()
    demo = clone / "config" / "demo.cfg"
    demo.write_text(demo.read_text().replace("frequency_cap = 2", "frequency_cap = 1"))
    second = demo_config()

    assert "frequency_cap = 2" in first and "frequency_cap = 1" in second
    window = [line for line in first.splitlines() if line.startswith("quiet_hours = ")]
    assert len(window) == 1 and window[0] != "quiet_hours = 21:00-08:00"
    assert window[0] in second.splitlines(), "the day's window is kept"


@pytest.mark.e2e
def test_make_run_then_daily_and_preview_on_the_same_date_agree_and_send_nothing_new(tmp_path):
    """make daily and make preview read the demo's configuration as make run does: the same
    suppression file, cap and templates (they used to read luigi.cfg alone, so a daily run
    after make run sent the 16 messages make run had skipped, one to a suppressed number)."""
    clone = tmp_path / "clone"
    clone_of_the_repository(clone)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LUIGI") and k != "LOG_DIR"}
    env["SCHEDULER_PORT"] = str(free_port())  # no luigid: the local scheduler
    common = [f"VENV={sys.prefix}", f"SANDBOX_PORT={free_port()}", "DEMO_QUIET_SECONDS=1"]

    # -o: the venv counts as installed whatever the copies' times, so that make never
    # reinstalls this checkout's venv from the copy (which is deleted after the test)
    stamp = ["-o", f"{sys.prefix}/.installed"]

    def make(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["make", "-s", *stamp, "-C", str(clone), *args, *common], env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=300)  # fmt: skip

    run = make("run")

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    sent = sandbox_messages(clone)
    assert sent["email"] > 0 and sent["sms"] > 0, sent
    recorded = (clone / "var" / "sandbox-messages.jsonl").read_text()
    assert "+14043793701" not in recorded  # data/sample/suppressions.csv's number
    assert "grace.haddad.6@example.com" not in recorded.lower()  # and its address
    email = next(line for line in run.stdout.splitlines() if line.startswith("email "))
    assert email.split()[1] == str(sent["email"])

    daily = make("daily", "SANDBOX=1")

    assert daily.returncode == 0, daily.stdout[-3000:] + daily.stderr[-3000:]
    assert sandbox_messages(clone) == sent  # nothing new
    preview = make("preview")

    assert preview.returncode == 0, preview.stdout[-3000:] + preview.stderr[-3000:]
    would = next(line for line in preview.stdout.splitlines() if line.startswith("email "))
    assert would.split()[1] == str(sent["email"]), would
    assert sandbox_messages(clone) == sent
    assert (clone / "var" / "consent.sqlite").exists()  # the clone's own store, not REPO's
