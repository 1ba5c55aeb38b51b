"""Bad input, bad templates and missing secrets: clear errors, and nothing sent."""

from __future__ import annotations

import json
import shutil

from conftest import CHANNELS, EDGE_CASE_CSV, REPO, RETCODE, TASKS, free_port

HEADER = "customer_id,first_name,segment,email,phone,device_token\n"


def assert_nothing_sent(campaign) -> None:
    assert all(campaign.requests(c) == 0 for c in CHANNELS)


def test_missing_file_is_missing_data_and_sends_nothing(campaign):
    campaign.start_sandbox()

    done = campaign.run()

    assert done.returncode == RETCODE["missing_data"]
    assert f"CustomerFile(path={campaign.customers_path})" in done.stderr
    assert "missing external dependencies" in done.stderr
    assert_nothing_sent(campaign)


def test_empty_file_fails_naming_the_file(campaign):
    campaign.customers_path.write_bytes(b"")
    campaign.start_sandbox()

    done = campaign.run()

    assert done.returncode == RETCODE["task_failed"]
    assert f"customer file {campaign.customers_path}: the file is empty" in done.stderr
    assert_nothing_sent(campaign)


def test_file_that_is_not_utf8_fails_naming_the_file(campaign):
    campaign.customers_path.write_bytes((HEADER + "C1,Zoë,new,z@example.com,,\n").encode("latin-1"))
    campaign.start_sandbox()

    done = campaign.run()

    assert done.returncode == RETCODE["task_failed"]
    assert f"customer file {campaign.customers_path}: not valid UTF-8" in done.stderr
    assert_nothing_sent(campaign)


def test_missing_columns_fail_naming_them(campaign):
    campaign.customers_path.write_text("customer_id,segment,email\nC1,new,a@example.com\n")
    campaign.start_sandbox()

    done = campaign.run()

    assert done.returncode == RETCODE["task_failed"]
    assert "missing required column(s) phone, device_token" in done.stderr
    assert str(campaign.customers_path) in done.stderr
    assert_nothing_sent(campaign)


def test_bad_rows_are_quarantined_and_bad_contacts_only_skip_their_channel(campaign):
    campaign.customers_path.write_bytes(EDGE_CASE_CSV.encode())
    campaign.start_sandbox()
    campaign.configure(
        **{TASKS[c]: {"target_segments": ["premium", "regular", "new"]} for c in CHANNELS}
    )

    done = campaign.run()

    assert done.returncode == 0, done.stderr[-3000:]
    rejected = (campaign.folder / "rejected.csv").read_text().splitlines()
    assert [line.split(",")[:2] for line in rejected[1:]] == [
        ["3", "duplicate_customer_id"],
        ["4", "missing_customer_id"],
        ["5", "unknown_segment"],
        ["8", "malformed_row"],
    ]
    assert "customer_id already seen on row 2" in rejected[1]
    assert "expected 7 fields, found 8" in rejected[4]
    summary = json.loads((campaign.folder / "load_summary.json").read_text())
    assert (summary["records_read"], summary["valid"], summary["rejected"]) == (8, 4, 4)

    results = {c: {r["customer_id"]: r for r in campaign.results(c)} for c in CHANNELS}
    for channel in CHANNELS:
        assert sorted(results[channel]) == ["A1", "A3", "A4", "A6"]
    assert results["email"]["A3"]["recipient"] == "BOB@example.com"
    assert results["sms"]["A3"]["recipient"] == "+12125550104"
    assert results["sms"]["A6"]["recipient"] == "+12125550106"  # default region US
    for channel, field in (("email", "email"), ("sms", "phone"), ("push", "device token")):
        row = results[channel]["A4"]
        assert row["status"] == "skipped" and row["attempts"] == "0"
        assert row["error"].startswith("invalid:") and field in row["error"]
    assert all(results[c][cid]["status"] == "sent" for c in CHANNELS for cid in ("A1", "A3", "A6"))
    assert {c: campaign.requests(c) for c in CHANNELS} == {c: 3 for c in CHANNELS}


def test_missing_secret_fails_its_channel_before_sending(campaign):
    campaign.write_customers(rows=10)
    campaign.start_sandbox()
    env = campaign.env()
    del env["PUSH_API_TOKEN"]

    done = campaign.run(env=env)

    assert done.returncode == RETCODE["task_failed"]
    assert "environment variable PUSH_API_TOKEN is not set" in done.stderr
    assert campaign.requests("push") == 0


def test_missing_template_fails_before_sending(campaign):
    campaign.write_customers(rows=10)
    campaign.start_sandbox()

    done = campaign.run("--SendSmsCampaign-template", "no_such_template")

    assert done.returncode == RETCODE["task_failed"]
    assert "sms template 'no_such_template': no folder" in done.stderr
    assert campaign.requests("sms") == 0


def test_template_errors_fail_before_sending(campaign, tmp_path):
    templates = tmp_path / "templates"
    shutil.copytree(REPO / "config" / "templates", templates)
    (templates / "email" / "spring_sale" / "body.txt").write_text(
        "Hi {{ first_name }}{% if segment == 'premium' %}, {{ loyalty_points }} points{% endif %}"
    )
    (templates / "push" / "spring_sale" / "title.txt").write_text("{% if %}")
    campaign.write_customers(rows=10)
    campaign.start_sandbox()
    campaign.configure(campaign={"templates_dir": str(templates)})

    done = campaign.run()

    assert done.returncode == RETCODE["task_failed"]
    assert "uses loyalty_points, which no customer has" in done.stderr
    assert "title.txt line 1" in done.stderr
    assert campaign.requests("email") == 0 and campaign.requests("push") == 0
    assert {r["status"] for r in campaign.results("sms")} == {"sent"}, "SMS is unaffected"


def test_no_secret_in_logs_results_ledgers_or_errors(campaign):
    campaign.write_customers(rows=20, dirty=True)
    campaign.start_sandbox(fail_first=1)
    # SMS goes to a closed port: the connection errors quote the URL, AccountSid included.
    campaign.configure(sms_api={"base_url": f"http://127.0.0.1:{free_port()}"})
    wrong_email_token = "wrong-email-token-" + "f" * 16

    done = campaign.run(env=campaign.env(EMAIL_API_TOKEN=wrong_email_token))

    assert done.returncode == RETCODE["task_failed"]
    assert "ConnectionError" in done.stderr and "/Accounts/***/Messages.json" in done.stderr
    secrets = [*campaign.credentials.values(), wrong_email_token]
    outputs = [done.stdout.encode(), done.stderr.encode()]
    outputs += [p.read_bytes() for p in campaign.root.rglob("*") if p.is_file()]
    assert len(outputs) > 8
    for secret in secrets:
        assert not any(secret.encode() in blob for blob in outputs), "a secret leaked"
