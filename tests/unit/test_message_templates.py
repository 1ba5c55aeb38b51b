"""Template checks before sending, and a render error that is one customer's alone
(tests/test_fresh_clone.py has which uses count as guarded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from campaign_pipeline import channels
from campaign_pipeline.exceptions import MessageError, TemplateError
from campaign_pipeline.templates import SAMPLE_ROWS, MessageTemplate, check_renders, line_break


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


# A template that cannot work for anyone is refused before anything is sent (issue 18).


def test_a_template_not_in_utf8_is_named_with_the_byte_and_its_offset(tmp_path):
    folder = tmp_path / "sms" / "t"
    folder.mkdir(parents=True)
    (folder / "body.txt").write_bytes("Offre spéciale {{ first_name }}".encode("latin-1"))

    with pytest.raises(TemplateError) as refused:
        MessageTemplate(str(tmp_path), "sms", "t", channels.named("sms").parts)

    assert str(refused.value) == (
        f"template {folder / 'body.txt'} is not UTF-8: byte 0xe9 at offset 8; save it as UTF-8"
    )


@pytest.mark.parametrize(
    "footer, message",
    [
        (None, "template {folder}/body.txt includes 'footer.txt', which is not in {folder}"),
        (b"Bye \xff", "template {folder}/footer.txt is not UTF-8: byte 0xff at offset 4"),
        (b"Bye {{ x", "template {folder}/footer.txt line 1: unexpected end of template"),
    ],
)
def test_an_include_that_cannot_load_is_named_before_rendering(tmp_path, footer, message):
    folder = tmp_path / "sms" / "t"
    folder.mkdir(parents=True)
    if footer is not None:
        (folder / "footer.txt").write_bytes(footer)

    with pytest.raises(TemplateError) as refused:
        template(tmp_path, body_txt='Hi {% include "footer.txt" %}')

    assert str(refused.value).startswith(message.format(folder=folder))


def test_an_include_gone_while_sending_is_a_template_error_not_the_customers(tmp_path):
    (tmp_path / "sms" / "t").mkdir(parents=True)
    (tmp_path / "sms" / "t" / "footer.txt").write_text("Bye")
    body = template(tmp_path, body_txt='Hi {% include "footer.txt" %}')
    (tmp_path / "sms" / "t" / "footer.txt").unlink()

    with pytest.raises(TemplateError, match="footer.txt"):
        body.render({})


@pytest.mark.parametrize(
    "subject, line",
    [
        ("Your offer\nis here", 1),
        ("{{ first_name }}, your offer\r\nBcc: x@example.com", 1),
        ("{% if first_name %}\nHi {{ first_name }}{% endif %}, offer", 1),
        ("{# a note #}\nYour offer,\n{{ first_name }}", 1),
        ("\n\n{{ first_name }}, your\noffer", 3),
    ],
)
def test_a_subject_template_spanning_lines_is_refused(tmp_path, subject, line):
    email = template(tmp_path, "email", subject_txt=subject, body_txt="b")
    path = tmp_path / "email" / "t" / "subject.txt"

    with pytest.raises(TemplateError) as refused:
        email.check_one_line("subject.txt")

    assert str(refused.value) == (
        f"template {path} line {line}: a line break in subject.txt, which is a header of one "
        "line; write it on one line"
    )


def test_a_subject_on_one_line_passes_whatever_surrounds_it(tmp_path):
    email = template(tmp_path, "email", subject_txt="\n {{ first_name }}, offer \n\n", body_txt="b")

    email.check_one_line("subject.txt")  # no error
    assert email.render({"first_name": "Ann"})["subject.txt"] == "Ann, offer"


def test_a_template_failing_for_every_sampled_customer_is_a_template_error():
    rows = [{"n": n} for n in range(SAMPLE_ROWS + 10)]
    built = []

    def fails(row):
        built.append(row["n"])
        raise MessageError("template sms/t/body.txt line 1: UndefinedError: no attribute 'x'")

    with pytest.raises(TemplateError) as refused:
        check_renders(fails, rows, "sms template t")

    assert built == list(range(SAMPLE_ROWS))
    assert str(refused.value) == (
        f"sms template t fails for each of the first {SAMPLE_ROWS} customer(s), so for everyone "
        "(template sms/t/body.txt line 1: UndefinedError: no attribute 'x'); nothing was sent: "
        "fix it and rerun"
    )


def test_one_customer_rendered_is_enough_the_others_failures_are_their_own():
    def build(row):
        if row["n"] < 3:
            raise MessageError("ZeroDivisionError")

    check_renders(build, ({"n": n} for n in range(10)), "sms template t")  # no error
    check_renders(build, [], "sms template t")  # nobody to send to: nothing to prove


@pytest.mark.parametrize(
    "text, refused",
    [
        ("Ann", False),
        ("Ann\tLee", False),
        ("Ann\r\nBcc: x@example.com", True),
        ("Ann\nLee", True),
        ("Ann\u2028Lee", True),
        ("Ann\x85Lee", True),
        ("Ann\x00", True),
    ],
)
def test_line_break_finds_what_a_header_cannot_hold(text, refused):
    assert line_break(text) is refused
