"""Templates that cannot work for anyone stop the channel before anything is sent, every
recipient left pending for the fixed rerun; a header is one line, whatever a template or a
customer's data puts into it (issue 18)."""

from __future__ import annotations

import csv
import shutil

import pytest
from conftest import REPO, RETCODE, TASKS

ALL = ["premium", "regular", "new"]


def templates(tmp_path):
    """A copy of the shipped templates, to break."""
    folder = tmp_path / "templates"
    shutil.copytree(REPO / "config" / "templates", folder)
    return folder


def use(campaign, folder) -> None:
    campaign.configure(
        campaign={"templates_dir": str(folder)},
        SendEmailCampaign={"target_segments": ALL},
    )


def lines_naming(stderr: str, text: str) -> list[str]:
    return [line for line in stderr.splitlines() if text in line]


def method_on_a_text(email) -> str:
    (email / "subject.txt").write_text("{{ first_name.titlecase() }}, your spring offer")
    return "UndefinedError: 'str object' has no attribute 'titlecase'"


def missing_include(email) -> str:
    (email / "body.txt").write_text('Hi {{ first_name }}\n{% include "footer.txt" %}')
    return f"template {email / 'body.txt'} includes 'footer.txt', which is not in {email}"


def not_utf8(email) -> str:
    (email / "subject.txt").write_bytes("Offre spéciale pour {{ first_name }}".encode("cp1252"))
    return f"template {email / 'subject.txt'} is not UTF-8: byte 0xe9 at offset 8"


def subject_on_two_lines(email) -> str:
    (email / "subject.txt").write_text("Your spring offer,\n{{ first_name }}\n")
    return (
        f"template {email / 'subject.txt'} line 1: a line break in subject.txt, which is a "
        "header of one line"
    )


@pytest.mark.parametrize(
    "breaks", [method_on_a_text, missing_include, not_utf8, subject_on_two_lines]
)
def test_a_template_that_fails_for_everyone_stops_before_sending_and_the_rerun_sends_all(
    campaign, tmp_path, breaks
):
    campaign.write_customers(rows=12)
    campaign.start_sandbox()
    folder = templates(tmp_path)
    use(campaign, folder)
    email = folder / "email" / "spring_sale"
    shipped = {p.name: p.read_bytes() for p in email.iterdir()}
    message = breaks(email)

    done = campaign.run(task=TASKS["email"])

    assert done.returncode == RETCODE["task_failed"], done.stderr[-3000:]
    assert lines_naming(done.stderr, message), done.stderr[-3000:]
    assert "failed for good (not retried; fix the cause and rerun)" in done.stderr
    assert campaign.requests("email") == 0
    assert not (campaign.folder / "email_results.csv").exists()

    for name, data in shipped.items():  # the fix
        (email / name).write_bytes(data)
    (email / "footer.txt").unlink(missing_ok=True)
    fixed = campaign.run(task=TASKS["email"])

    assert fixed.returncode == 0, fixed.stderr[-3000:]
    assert [r["status"] for r in campaign.results("email")] == ["sent"] * 12
    assert set(campaign.accepted("email").values()) == {1}


def test_a_dry_run_names_a_template_that_fails_for_everyone(campaign, tmp_path):
    campaign.write_customers(rows=5)
    campaign.start_sandbox()
    folder = templates(tmp_path)
    use(campaign, folder)
    message = method_on_a_text(folder / "email" / "spring_sale")

    done = campaign.run("--dry-run", task=TASKS["email"])

    assert done.returncode == RETCODE["task_failed"], done.stderr[-3000:]
    assert lines_naming(done.stderr, message)
    assert lines_naming(done.stderr, "fails for each of the first 5 customer(s), so for everyone")


def test_a_customer_value_that_would_inject_a_header_fails_that_recipient_alone(campaign):
    customers = campaign.write_customers(rows=6)
    injected = {customers[1]["customer_id"]: "Ann\r\nBcc: everyone@example.net",
                customers[4]["customer_id"]: "Bob\u2028Cc: boss@example.net"}  # fmt: skip
    for customer in customers:
        customer["first_name"] = injected.get(customer["customer_id"], customer["first_name"])
    with campaign.customers_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(customers[0]))
        writer.writeheader()
        writer.writerows(customers)
    campaign.start_sandbox()
    campaign.configure(SendEmailCampaign={"target_segments": ALL})

    done = campaign.run(task=TASKS["email"])

    assert done.returncode == 0, done.stderr[-3000:]
    results = {r["customer_id"]: r for r in campaign.results("email")}
    for customer_id in injected:
        failed = results.pop(customer_id)
        assert failed["status"] == "failed"
        assert "subject.txt rendered with a line break" in failed["error"]
        assert "Bcc" not in failed["error"] and "Cc:" not in failed["error"]
    assert {r["status"] for r in results.values()} == {"sent"}
    subjects = [
        r["request"]["subject"] for r in campaign.sandbox.accepted() if r["channel"] == "email"
    ]
    assert len(subjects) == 4
    assert not any("\n" in s or "\r" in s or "\u2028" in s for s in subjects)
