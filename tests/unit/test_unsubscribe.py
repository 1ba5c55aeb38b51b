"""Unsubscribe links and headers, the email provider's use of them, the sandbox's checks of
SendGrid's headers and asm block; SMS encodings, segments and the opt-out line."""

from __future__ import annotations

import json

import pytest

from campaign_pipeline import smstext
from campaign_pipeline.exceptions import InvalidSecretError, MissingSecretError, SettingsError
from campaign_pipeline.sandbox import SandboxConfig
from campaign_pipeline.sandbox.endpoint import RejectedError
from campaign_pipeline.sandbox.sendgrid import EmailEndpoint
from campaign_pipeline.unsubscribe import (
    Unsubscribe,
    unsubscribe_token,
    verify_unsubscribe_token,
)

from .answers import UNSUBSCRIBE_KEY_ENV, email_provider, sms_provider

KEY = "k" * 40
URL = "https://shop.example/u/{campaign}/{customer_id}?t={token}"
CONTEXT = {"campaign": "spring", "customer_id": "C7", "first_name": "Ann"}
PARTS = {"subject.txt": "Hi", "body.txt": "Text", "body.html": "<p>Html</p>"}


# -- tokens ------------------------------------------------------------------------------------


def test_a_token_verifies_for_its_customer_and_campaign_under_its_key_only():
    token = unsubscribe_token(KEY, "C7", "spring")

    assert len(token) == 43 and token.replace("-", "").replace("_", "").isalnum()
    assert verify_unsubscribe_token(KEY, "C7", "spring", token)
    assert not verify_unsubscribe_token("x" * 40, "C7", "spring", token)
    assert not verify_unsubscribe_token(KEY, "C8", "spring", token)
    assert not verify_unsubscribe_token(KEY, "C7", "summer", token)
    assert not verify_unsubscribe_token(KEY, "C7", "spring", token[:-1] + "A")
    assert not verify_unsubscribe_token(KEY, "C7", "spring", "")


def test_values_that_would_join_alike_sign_differently():
    assert unsubscribe_token(KEY, "b", "a-") != unsubscribe_token(KEY, "-b", "a")


# -- links and headers -------------------------------------------------------------------------


def test_the_link_fills_in_the_customer_url_encoded_and_a_verifiable_token():
    paths = Unsubscribe(URL, "", KEY)

    url, mailto = paths.links("A/1 &x", "spring")

    assert url.startswith("https://shop.example/u/spring/A%2F1%20%26x?t=")
    assert verify_unsubscribe_token(KEY, "A/1 &x", "spring", url.rpartition("=")[2])
    assert mailto == ""
    assert paths.headers("A/1 &x", "spring") == {
        "List-Unsubscribe": f"<{url}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def test_a_mailto_alone_has_no_one_click_header_and_both_share_one_header():
    only_mail = Unsubscribe("", "leave@shop.example", "")
    both = Unsubscribe(URL, "mailto:leave@shop.example?subject={customer_id}", KEY)

    assert only_mail.headers("C7", "spring") == {"List-Unsubscribe": "<mailto:leave@shop.example>"}
    assert not only_mail.needs_key
    header = both.headers("C7", "spring")["List-Unsubscribe"]
    assert header.startswith("<https://shop.example/u/spring/C7?t=")
    assert header.endswith(", <mailto:leave@shop.example?subject=C7>")
    assert both.link("C7", "spring").startswith("https://")
    assert only_mail.link("C7", "spring") == "mailto:leave@shop.example"
    assert Unsubscribe().headers("C7", "spring") == {} and Unsubscribe().link("C7", "x") == ""


@pytest.mark.parametrize(
    "url, mailto, problem",
    [
        ("http://shop.example/u/{campaign}/{customer_id}/{token}", "", "must be an https:// URL"),
        ("https://shop.example/u?id={customer_id}", "", "lacks {campaign}, {token}"),
        ("https://shop.example/{campaign}/{customer_id}/{tokn}", "", "unknown placeholder {tokn}"),
        ("https://shop.example/{campaign/{customer_id}", "", "unsubscribe_url = "),
        ("", "u+{email}@shop.example", "unsubscribe_mailto: unknown placeholder {email}"),
        ("", "unsubscribe", "unsubscribe_mailto = 'unsubscribe': not an email address"),
        ("", "mailto:?subject={customer_id}", "must have an @-sign"),
        ("", "u@shop.example,x@evil.example", "it holds an angle bracket or a comma"),
        ("https://shop.example/{campaign}/{customer_id}/{token}\r\nBcc: x@evil.example", "",
         "holds a space, a line break or a control character"),
        ("", "u@shop.example>\r\nBcc: x@evil.example", "holds a space, a line break"),
        ("", "u{}@shop.example", "not an email address (cannot fill in a placeholder"),
    ],
)  # fmt: skip
def test_a_link_the_endpoint_could_not_verify_is_a_problem(url, mailto, problem):
    problems = Unsubscribe(url, mailto, KEY).problems()

    assert len(problems) == 1 and problem in problems[0]


# -- the email provider ------------------------------------------------------------------------


def unsubscribing(monkeypatch, **settings):
    """The email provider with unsubscribe links, sending to a local sandbox's address (a
    link to a reserved example domain is refused when sending to a real SendGrid)."""
    values = {
        "base_url": "http://127.0.0.1:9",
        "unsubscribe_url": URL,
        "transactional": False,
        **settings,
    }
    return email_provider(monkeypatch, **values)


def test_each_personalization_carries_its_own_headers_and_the_request_the_asm_block(monkeypatch):
    email = unsubscribing(monkeypatch, asm_group_id=7)
    email.check()
    key = email.secrets[UNSUBSCRIBE_KEY_ENV]

    contexts = [email.template_context({**CONTEXT, "customer_id": f"C{n}"}) for n in range(3)]
    requests = [email.request(f"c{n}@shop.example", PARTS, c) for n, c in enumerate(contexts)]
    batch = email.combine(requests).json

    assert batch["asm"] == {"group_id": 7}
    for n, personalization in enumerate(batch["personalizations"]):
        link = personalization["headers"]["List-Unsubscribe"].strip("<>")
        assert f"/u/spring/C{n}?t=" in link
        assert verify_unsubscribe_token(key, f"C{n}", "spring", link.rpartition("=")[2])
        assert personalization["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_the_template_context_gets_the_link_the_headers_carry(monkeypatch):
    email = unsubscribing(monkeypatch)

    context = email.template_context(CONTEXT)
    request = email.request("ann@shop.example", PARTS, context)

    assert email.template_variables == ("unsubscribe_url",)
    header = request.json["personalizations"][0]["headers"]["List-Unsubscribe"]
    assert header == f"<{context['unsubscribe_url']}>"
    assert CONTEXT.get("unsubscribe_url") is None  # the customer's own context is left alone


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"unsubscribe_url": ""}, "unsubscribe_url, unsubscribe_mailto and asm_group_id are all"),
        ({"unsubscribe_key_env": ""}, "unsubscribe_key_env is empty"),
        ({"asm_group_id": -1}, "asm_group_id must be a SendGrid group id"),
        ({"base_url": "https://api.sendgrid.com", "unsubscribe_url": URL.replace("ple", "")}, ""),
        (
            {"base_url": "https://api.sendgrid.com"},
            "point at shop.example, a reserved example domain, while sending to https://api.sendgrid.com",
        ),
    ],
)  # fmt: skip
def test_the_checks_want_a_way_out_a_key_and_a_real_endpoint(monkeypatch, settings, message):
    email = unsubscribing(monkeypatch, **settings)

    if not message:
        email.check()  # a real domain, a real provider: fine
        return
    with pytest.raises(SettingsError, match=message):
        email.check()


def test_without_a_way_out_only_a_transactional_email_or_an_asm_group_passes(monkeypatch):
    unsubscribing(monkeypatch, unsubscribe_url="", transactional=True).check()
    asm_only = unsubscribing(monkeypatch, unsubscribe_url="", asm_group_id=3)
    asm_only.check()

    request = asm_only.request("a@shop.example", PARTS, asm_only.template_context(CONTEXT))

    assert "headers" not in request.json["personalizations"][0]
    assert request.json["asm"] == {"group_id": 3}


def test_a_short_key_is_refused_naming_its_variable_never_its_value(monkeypatch):
    email = unsubscribing(monkeypatch, unsubscribe_key="short-key")

    with pytest.raises(InvalidSecretError, match=UNSUBSCRIBE_KEY_ENV) as raised:
        email.check()
    assert "short-key" not in str(raised.value)


def test_the_key_is_masked_but_neither_a_sendgrid_credential_nor_part_of_the_account(monkeypatch):
    email = unsubscribing(monkeypatch)
    key = email.secrets[UNSUBSCRIBE_KEY_ENV]

    assert key in email.masked()
    assert key not in email.account()
    assert UNSUBSCRIBE_KEY_ENV not in email.hint("credentials")


def test_a_preview_without_the_key_builds_its_links_with_a_stand_in(monkeypatch):
    monkeypatch.delenv("UNIT_NO_SUCH_KEY", raising=False)
    email = unsubscribing(monkeypatch, preview=True, unsubscribe_key_env="UNIT_NO_SUCH_KEY")

    email.check()

    assert email.template_context(CONTEXT)["unsubscribe_url"].startswith("https://shop.example/")
    with pytest.raises(MissingSecretError, match="UNIT_NO_SUCH_KEY"):
        unsubscribing(monkeypatch, unsubscribe_key_env="UNIT_NO_SUCH_KEY")


# -- the sandbox's SendGrid --------------------------------------------------------------------


def sendgrid() -> EmailEndpoint:
    return EmailEndpoint(SandboxConfig(credentials={"EMAIL_API_TOKEN": "t"}), None)


def mail(personalization: dict | None = None, **top) -> bytes:
    body = {
        "personalizations": [{"to": [{"email": "a@shop.example"}], **(personalization or {})}],
        "from": {"email": "shop@shop.example"},
        "subject": "Hi",
        "content": [{"type": "text/plain", "value": "Text"}],
        **top,
    }
    return json.dumps(body).encode()


def test_the_sandbox_records_each_messages_headers_and_asm():
    headers = {"List-Unsubscribe": "<https://shop.example/u>", "X-Campaign": "spring"}

    [message] = sendgrid().parse(mail({"headers": headers}, asm={"group_id": 4}), {})

    assert message.request["headers"] == headers
    assert message.request["asm"] == {"group_id": 4}


@pytest.mark.parametrize(
    "body, field",
    [
        (mail({"headers": {"List-Unsubscribe": 5}}), "personalizations.0.headers.List-Unsubscribe"),
        (mail({"headers": ["List-Unsubscribe"]}), "personalizations.0.headers"),
        (mail({"headers": {"Subject": "x"}}), "personalizations.0.headers.Subject"),
        (mail({"headers": {"x-sg-id": "1"}}), "personalizations.0.headers.x-sg-id"),
        (mail({"headers": {"X-A": "a\r\nBcc: b@x.example"}}), "personalizations.0.headers.X-A"),
        (mail({"headers": {"Bad Name": "x"}}), "personalizations.0.headers.Bad Name"),
        (mail(headers={"To": "x"}), "headers.To"),
        (mail(asm={"group_id": "4"}), "asm"),
        (mail(asm={}), "asm"),
        (mail(asm={"group_id": 4, "groups_to_display": list(range(26))}), "asm.groups_to_display"),
    ],
)
def test_the_sandbox_refuses_headers_and_asm_as_sendgrid_does(body, field):
    with pytest.raises(RejectedError) as refused:
        sendgrid().parse(body, {})

    assert refused.value.reply.status == 400
    assert refused.value.reply.body["errors"][0]["field"] == field


# -- SMS: encodings, segments, the opt-out line ------------------------------------------------


@pytest.mark.parametrize(
    "text, encoding, segments",
    [
        ("a" * 160, "GSM-7", 1),
        ("a" * 161, "GSM-7", 2),
        ("a" * 306, "GSM-7", 2),
        ("a" * 307, "GSM-7", 3),
        ("€" * 80, "GSM-7", 1),  # an extension character counts twice
        ("€" * 81, "GSM-7", 2),
        ("é" * 160, "GSM-7", 1),  # é is in the GSM table, ê is not
        ("ê" * 70, "UCS-2", 1),
        ("ê" * 71, "UCS-2", 2),
        ("🌸" * 35, "UCS-2", 1),  # two UTF-16 units each
        ("🌸" * 36, "UCS-2", 2),
    ],
)
def test_encoding_and_segments_follow_the_gsm_tables(text, encoding, segments):
    assert (smstext.encoding(text), smstext.segments(text)) == (encoding, segments)


@pytest.mark.parametrize(
    "text, added",
    [
        ("Sale today", True),
        ("Sale today. Reply STOP to end", False),
        ("Sale today, text stop", False),
        ("Text QUIT or Cancel", False),
        ("Unstoppable prices, endless fun", True),  # keywords inside words do not count
        ("STOPALL works too", False),
        ("Unsubscribe anytime", False),
    ],
)
def test_the_opt_out_line_is_added_only_when_no_keyword_is_a_word(text, added):
    result = smstext.with_opt_out(text, "Reply STOP to opt out")

    assert result == (f"{text} Reply STOP to opt out" if added else text)


def test_a_text_of_several_lines_gets_the_line_on_a_line_of_its_own():
    assert smstext.with_opt_out("Hi\nSale", "Reply STOP") == "Hi\nSale\nReply STOP"
    assert smstext.with_opt_out("Sale", "") == "Sale"


def test_the_sms_provider_appends_the_line_within_twilios_1600_characters(monkeypatch):
    sms = sms_provider(monkeypatch, opt_out_text="Reply STOP to opt out")
    fits = "x" * (1600 - len(" Reply STOP to opt out"))

    request = sms.request("+12125550100", {"body.txt": "Hi Ann"}, CONTEXT)

    assert request.data["Body"] == "Hi Ann Reply STOP to opt out"
    assert sms.cost(request) == {"encoding": "GSM-7", "message_segments": 1}
    assert len(sms.request("+12125550100", {"body.txt": fits}, CONTEXT).data["Body"]) == 1600
    with pytest.raises(ValueError, match="1601 characters with the opt-out text"):
        sms.request("+12125550100", {"body.txt": fits + "x"}, CONTEXT)


def test_the_preview_counts_segments_by_encoding(monkeypatch):
    from campaign_pipeline.preview import preview

    sms = sms_provider(monkeypatch, opt_out_text="Reply STOP")

    class Template:
        def render(self, context):
            return {"body.txt": context["text"]}

    rows = [
        {"status": "pending", "error": "", "customer_id": str(n), "segment": "new",
         "recipient": "+12125550100", "context": {**CONTEXT, "text": text}}
        for n, text in enumerate(["Hi", "ê" * 100, "a" * 200])
    ]  # fmt: skip

    document = preview(sms, Template(), rows, keep=1)

    assert document["counts"]["message_segments"] == {
        "total": 1 + 2 + 2,
        "by_encoding": {"GSM-7": 3, "UCS-2": 2},
    }
    assert document["requests"][0]["encoding"] == "GSM-7"
    assert document["requests"][0]["message_segments"] == 1


def test_an_opt_out_text_that_names_no_keyword_is_refused(monkeypatch):
    sms_provider(monkeypatch, opt_out_text="Reply STOP to opt out").check()
    sms_provider(monkeypatch, opt_out_text="").check()  # never appended: nothing to check

    with pytest.raises(SettingsError, match=r"\[sms_api\] opt_out_text = 'Text us' names no"):
        sms_provider(monkeypatch, opt_out_text="Text us").check()


def test_a_marketing_template_that_hides_the_link_is_warned_about(monkeypatch, tmp_path, caplog):
    from campaign_pipeline.templates import MessageTemplate

    for name, body in (("shows", "Bye: {{ unsubscribe_url }}"), ("hides", "Hi")):
        (tmp_path / "email" / name).mkdir(parents=True)
        (tmp_path / "email" / name / "subject.txt").write_text("Hi")
        (tmp_path / "email" / name / "body.txt").write_text(body)
    parts = (("subject.txt",), ("body.txt", "body.html"))
    shows, hides = (MessageTemplate(str(tmp_path), "email", n, parts) for n in ("shows", "hides"))

    unsubscribing(monkeypatch).check_template(shows)
    unsubscribing(monkeypatch, transactional=True).check_template(hides)
    assert caplog.records == []
    unsubscribing(monkeypatch).check_template(hides)

    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "does not show {{ unsubscribe_url }}" in caplog.records[0].getMessage()
