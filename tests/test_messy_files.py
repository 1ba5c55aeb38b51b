"""A real messy customer file through the CLI: the bad rows are quarantined, the rest sent."""

from __future__ import annotations

import csv

from conftest import TOKEN


def line(cid: str, name: str = "Ann", phone: str = "") -> str:
    """A row with contacts of its own (customers sharing one would be sent once)."""
    phone = phone or f"+1212555{int(cid[1:]):04d}"
    return f"{cid},{name},premium,{cid.lower()}@example.com,{phone},{TOKEN}{cid}\n"


MESSY = (
    "customer_id,first_name,segment,email,phone,device_token\n"
    + line("C1")
    + line("C2", phone="2125550lOO")  # l and O typed for 1 and 0
    + line("C3", phone="+1 212 555 0109 ext. 12")
    + line("C4", name="%campaign_html% and %campaign_text%")  # the pipeline's old tags
    + line("C5", name="x" * 200_000)  # larger than the csv module's field limit
    + line("C6", name="Nul\x00")
    + line("C7", name='"Two\nlines"')  # one spreadsheet row over two lines of the file
    + line("C8", name='"Unclosed')  # left out alone, not C9 and C10 up to C10's quote
    + line("C9")
    + line("C10", name='"Closed"')
    + line("C11")
)


def test_a_messy_file_is_loaded_quarantined_and_sent(campaign):
    campaign.customers_path.write_text(MESSY, encoding="utf-8")
    campaign.start_sandbox()
    campaign.configure(email_api={"batch_size": 10})

    done = campaign.run()

    assert done.returncode == 0, done.stderr[-3000:]
    with (campaign.folder / "rejected.csv").open(newline="") as handle:
        rejected = {int(r["row"]): (r["reason"], r["detail"]) for r in csv.DictReader(handle)}
    assert rejected == {
        6: ("field_too_large", "field first_name has 200,000 characters; at most 131,072 are read"),
        7: (
            "control_character",
            "field first_name contains control character U+0000 at position 4",
        ),
        9: (
            "unbalanced_quote",
            f"customer file {campaign.customers_path}, line 10, field first_name: a quote opens "
            "and does not close on its line; this row is left out and the lines after it are "
            "read as rows of their own (close or remove the quote)",
        ),
    }
    sent = ["C1", "C2", "C3", "C4", "C7", "C9", "C10", "C11"]
    rows = campaign.results("push")
    assert [(r["customer_id"], r["status"]) for r in rows] == [(c, "sent") for c in sent]
    # C7's name over two lines would put a line break into the email's subject, a header
    email = {r["customer_id"]: r for r in campaign.results("email")}
    assert email.pop("C7")["error"].startswith("not sent: subject.txt rendered with a line break")
    assert {c: r["status"] for c, r in email.items()} == {c: "sent" for c in sent if c != "C7"}
    sms = {r["customer_id"]: r for r in campaign.results("sms")}
    assert {c: r["status"] for c, r in sms.items()} == {
        "C1": "sent", "C2": "skipped", "C3": "skipped", "C4": "sent", "C7": "sent", "C9": "sent",
        "C10": "sent", "C11": "sent",
    }  # fmt: skip
    assert sms["C2"]["error"].startswith("invalid: phone '2125550lOO' contains letters")
    assert "has an extension (12)" in sms["C3"]["error"]
    assert campaign.accepted("sms") == {f"+1212555{n:04d}": 1 for n in (1, 4, 7, 9, 10, 11)}
    # The lines after the stray quote are rows as they stand: C10's name is its own.
    (c10,) = [
        r["request"] for r in campaign.sandbox.accepted() if r["recipient"] == "c10@example.com"
    ]
    assert c10["subject"] == "Closed, your spring offer is here"
    # One batched email request; C4 reads the literal text, not another body substituted.
    assert campaign.requests("email") == 1
    (c4,) = [
        r["request"] for r in campaign.sandbox.accepted() if r["recipient"] == "c4@example.com"
    ]
    assert c4["subject"] == "%campaign_html% and %campaign_text%, your spring offer is here"
    text = {c["type"]: c["value"] for c in c4["content"]}
    assert text["text/plain"].startswith("Hi %campaign_html% and %campaign_text%,\n")
    assert "<p>Hi %campaign_html% and %campaign_text%,</p>" in text["text/html"]
