"""Template checks before sending, and a render error that is one customer's alone
(tests/test_fresh_clone.py has which uses count as guarded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from campaign_pipeline import channels
from campaign_pipeline.exceptions import MessageError, TemplateError
from campaign_pipeline.templates import MessageTemplate


def template(root: Path, channel: str = "sms", **parts: str) -> MessageTemplate:
    """A template folder ``root/channel/t`` with *parts* (``body_txt`` is ``body.txt``)."""
    folder = root / channel / "t"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in parts.items():
        (folder / name.replace("_", ".")).write_text(text)
    return MessageTemplate(str(root), channel, "t", channels.named(channel).parts)


def test_the_check_names_every_unknown_variable_and_what_is_available(tmp_path):
    body = template(tmp_path, body_txt="{{ points }} {{ first_name }} {{ segment }}")

    with pytest.raises(TemplateError) as refused:
        body.check({"segment", "campaign"})

    assert str(refused.value) == (
        f"template {tmp_path / 'sms' / 't'} uses first_name, points, which no customer has "
        "(available: campaign, segment; for an optional column write {{ first_name | "
        'default("...") }})'
    )


def test_a_fallback_in_one_part_does_not_cover_another(tmp_path):
    push = template(
        tmp_path,
        "push",
        title_txt='Hi {{ first_name | default("there") }}',
        body_txt="{{ first_name }}, sale",
    )

    with pytest.raises(TemplateError, match="a fallback in one place does not cover the others"):
        push.check({"segment"})
    assert push.optional == {"first_name"} and push.variables == {"first_name"}


def test_a_guarded_variable_renders_its_default_when_the_column_is_absent(tmp_path):
    body = template(tmp_path, body_txt='Hi {{ first_name | default("there") }}!  \n')

    body.check(set())

    assert body.render({})["body.txt"] == "Hi there!", "rendered parts are stripped"
    assert body.render({"first_name": "Ann"})["body.txt"] == "Hi Ann!"


def test_a_render_error_names_the_part_and_line_and_is_that_customers_alone(tmp_path):
    body = template(tmp_path, body_txt="Hi {{ first_name }},\n{{ 100 // points }} points off")
    body.check({"first_name", "points"})

    with pytest.raises(MessageError) as refused:
        body.render({"first_name": "Ann", "points": 0})

    assert str(refused.value) == (
        "template sms/t/body.txt line 2: ZeroDivisionError: integer division or modulo by zero"
    )
    assert body.render({"first_name": "Bob", "points": 4}) == {"body.txt": "Hi Bob,\n25 points off"}


def test_html_is_escaped_in_body_html_only(tmp_path):
    email = template(
        tmp_path,
        "email",
        subject_txt="For {{ name }}",
        body_txt="Hi {{ name }}",
        body_html="<p>Hi {{ name }}</p>",
    )

    parts = email.render({"name": "<b>Ann</b> & co"})

    assert parts == {
        "subject.txt": "For <b>Ann</b> & co",
        "body.txt": "Hi <b>Ann</b> & co",
        "body.html": "<p>Hi &lt;b&gt;Ann&lt;/b&gt; &amp; co</p>",
    }


@pytest.mark.parametrize(
    "channel, parts, message",
    [
        ("sms", {}, "template part missing: {folder}/body.txt"),
        ("push", {"title_txt": "t"}, "template part missing: {folder}/body.txt"),
        ("email", {"subject_txt": "s"}, "email template {folder}: needs body.txt or body.html"),
        ("sms", {"body_txt": "Hi {{ name"}, "template {folder}/body.txt line 1: unexpected end"),
    ],
)
def test_a_template_that_cannot_work_fails_naming_its_file(tmp_path, channel, parts, message):
    folder = tmp_path / channel / "t"

    with pytest.raises(TemplateError) as refused:
        template(tmp_path, channel, **parts)

    assert str(refused.value).startswith(message.format(folder=folder))


def test_a_missing_template_folder_is_named(tmp_path):
    with pytest.raises(TemplateError, match=r"^sms template 'spring': no folder .*/sms/spring$"):
        MessageTemplate(str(tmp_path), "sms", "spring", channels.named("sms").parts)
