"""SendGrid v3 as the sandbox plays it: ``POST /v3/mail/send`` and the suppression lists.

Bearer token (``EMAIL_API_TOKEN``), JSON body, one message per personalization, ``202`` with
an ``X-Message-Id``; headers (an object of strings, none of those SendGrid sets itself) and
the ``asm`` block are checked as SendGrid does and recorded with each message; ``bounce*@``
addresses are refused as invalid, as SendGrid's own test addresses are, and so is a domain
not in ASCII (an internationalised one must come IDNA-encoded, ``xn--``).

The suppression lists, seeded from the configuration (``--suppressed-email``): ``GET
/v3/suppression/{bounces,blocks,spam_reports,invalid_emails,unsubscribes}`` pages them with
``limit`` (1 to 500) and ``offset``, ``GET /v3/asm/groups/{id}/suppressions`` answers a
group's addresses, and ``DELETE`` of ``.../{email}`` takes an address off, as SendGrid's
own. A message to a listed address is accepted (``202``) and dropped, as SendGrid does: it
counts as ``dropped``, not ``accepted``. An entry of ``removed_while_read`` leaves its list
just after the list's first page is answered, as a DELETE at SendGrid during the pipeline's
read would: the later pages shift back by one.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from .bucket import ChannelLimit
from .endpoint import Endpoint, Message, RejectedError, Reply, bearer_ok, load_json

if TYPE_CHECKING:
    from .config import ErrorRule

ROUGH_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
LIST_ROUTE = re.compile(r"/v3/suppression/(?P<list>[a-z_]+)(?:/(?P<email>[^/]+))?")
GROUP_ROUTE = re.compile(r"/v3/asm/groups/(?P<group>\d+)/suppressions(?:/(?P<email>[^/]+))?")
MAX_PAGE = 500  # SendGrid's largest limit
# An error rule's field naming the personalization of each recipient it matches.
EACH = "personalizations.*."
RULE_MESSAGE = "sandbox error rule"

# SendGrid's suppression lists the sandbox serves (GET /v3/suppression/<list>), besides the
# unsubscribe groups ("group-<id>": GET /v3/asm/groups/<id>/suppressions).
SUPPRESSION_LISTS = ("bounces", "blocks", "spam_reports", "invalid_emails", "unsubscribes")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass
class SuppressedEmail:
    """An address on one of the fake SendGrid's suppression lists, since *created* (Unix
    seconds; 0: when the sandbox started)."""

    list: str
    email: str
    created: int = 0

    @classmethod
    def parse(cls, text: str) -> SuppressedEmail:
        """``LIST:ADDRESS[:YYYY-MM-DD]``, e.g. ``bounces:ann@example.com:2026-11-20``;
        LIST is one of :data:`SUPPRESSION_LISTS` or ``group-<id>``."""
        name, _, rest = text.partition(":")
        email, _, day = rest.partition(":")
        if name not in SUPPRESSION_LISTS and not re.fullmatch(r"group-\d+", name):
            known = ", ".join(SUPPRESSION_LISTS)
            raise ValueError(f"unknown list {name!r}: use {known} or group-<id>")
        if "@" not in email or (day and not _DATE.fullmatch(day)):
            raise ValueError(f"{text!r} is not LIST:ADDRESS[:YYYY-MM-DD]")
        created = 0
        if day:
            moment = datetime.datetime.fromisoformat(day).replace(tzinfo=datetime.UTC)
            created = int(moment.timestamp())
        return cls(name, email, created)


def sendgrid_error(status: int, message: str, path: str | None = None, **headers: str) -> Reply:
    return sendgrid_errors(status, [(path, message)], **headers)


def sendgrid_errors(status: int, errors: list[tuple[str | None, str]], **headers: str) -> Reply:
    """SendGrid's answer naming several errors at once, (field, message) each: it checks
    the whole request and names every fault, each personalization's with its position."""
    body = {"errors": [{"field": path, "message": message} for path, message in errors]}
    return Reply(status, body, headers)


class EmailEndpoint(Endpoint):
    channel = "email"
    provider = "SendGrid v3"
    route = re.compile(r"/v3/mail/send")
    content_type = "application/json"
    limit = ChannelLimit(10, 50)
    credential_vars = ("EMAIL_API_TOKEN",)
    client_vars = ("UNSUBSCRIBE_KEY",)  # signs the unsubscribe links; SendGrid never sees it

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # list name ("bounces", "group-42") -> address (case-folded) -> its entry
        self.lists: dict[str, dict[str, dict]] = {name: {} for name in SUPPRESSION_LISTS}
        started = int(time.time())
        for seeded in self.config.suppressed_emails:
            entry = {"created": seeded.created or started, "email": seeded.email}
            if seeded.list in ("bounces", "blocks"):
                entry |= {"reason": "sandbox seeded entry", "status": "5.1.1"}
            self.lists.setdefault(seeded.list, {})[seeded.email.casefold()] = entry
        # list -> addresses taken off it once its first page is answered
        self.removals: dict[str, list[str]] = {}
        for removed in self.config.removed_while_read:
            self.removals.setdefault(removed.list, []).append(removed.email.casefold())
        self.pages: dict[str, int] = {}  # list -> pages answered
        self.dropped = 0
        self._lists_lock = threading.Lock()

    def authorized(self, headers: Any, params: dict[str, str]) -> bool:
        return bearer_ok(headers, self.credential("EMAIL_API_TOKEN"))

    def serves(self, method: str, path: str) -> bool:
        return method in ("GET", "DELETE") and bool(
            LIST_ROUTE.fullmatch(path) or GROUP_ROUTE.fullmatch(path)
        )

    def answer(self, method: str, path: str, query: dict[str, str]) -> Reply:
        """A suppression list's page (GET), or an address taken off it (DELETE)."""
        if found := GROUP_ROUTE.fullmatch(path):
            name, email, paged = f"group-{found['group']}", found["email"], False
        else:
            found = LIST_ROUTE.fullmatch(path)
            name, email, paged = found["list"], found["email"], True
            if name not in SUPPRESSION_LISTS:
                return sendgrid_error(404, "resource not found")
        if method == "DELETE":
            with self._lists_lock:
                self.lists.get(name, {}).pop(unquote(email or "").casefold(), None)
            return Reply(204)
        if email is not None:
            return sendgrid_error(404, "resource not found")
        limit, offset = MAX_PAGE, 0
        if paged:
            try:
                limit, offset = int(query.get("limit", MAX_PAGE)), int(query.get("offset", 0))
            except ValueError:
                return sendgrid_error(400, "limit and offset must be integers", "limit")
            if not 1 <= limit <= MAX_PAGE or offset < 0:
                message = f"limit must be 1 to {MAX_PAGE}, offset 0 or more"
                return sendgrid_error(400, message, "limit")
        with self._lists_lock:
            entries = list(self.lists.get(name, {}).values())
            self.pages[name] = self.pages.get(name, 0) + 1
            for email in self.removals.pop(name, []) if paged and offset == 0 else []:
                self.lists[name].pop(email, None)  # between this page and the next
        if not paged:  # a group's list: its addresses, all at once
            return Reply(200, [entry["email"] for entry in entries])
        return Reply(200, entries[offset : offset + limit])

    def suppressed(self, email: str) -> bool:
        """Whether SendGrid would drop a message to *email* (any list but a group's)."""
        key = email.casefold()
        with self._lists_lock:
            return any(key in self.lists[name] for name in SUPPRESSION_LISTS)

    def extra_stats(self) -> dict[str, Any]:
        with self._lists_lock:
            return {"dropped": self.dropped, "suppression_pages": dict(self.pages)}

    def unauthorized(self) -> Reply:
        message = "The provided authorization grant is invalid, expired, or revoked"
        return sendgrid_error(401, message)

    def rate_limited(self, wait: float, burst: int) -> Reply:
        headers = {
            "X-RateLimit-Limit": str(burst),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(math.ceil(time.time() + wait)),
        }
        return sendgrid_error(429, "too many requests", **headers)

    def unavailable(self) -> Reply:
        return sendgrid_error(503, "service unavailable")

    def error(self, status: int, code: str) -> Reply:
        """SendGrid has no codes: *code* is the field the error names, e.g. ``from.email``."""
        if status == 429:
            return self.rate_limited(1.0, 0)
        return sendgrid_error(status, f"{RULE_MESSAGE}: {status}", code or None)

    def refusal(self, matched: list[tuple[int, ErrorRule]]) -> Reply:
        """A rule whose field starts ``personalizations.*.`` names the personalization of the
        recipient it matched (``personalizations.*.subject`` -> ``personalizations.2.subject``);
        when the first rule matched is one, the answer names every recipient such a rule of
        the same status matched, each with its own field, as SendGrid names all it found."""
        first = matched[0][1]
        if not first.code.startswith(EACH):
            return super().refusal(matched)
        message = f"{RULE_MESSAGE}: {first.status}"
        errors = [
            (f"personalizations.{index}.{rule.code.removeprefix(EACH)}", message)
            for index, rule in matched
            if rule.code.startswith(EACH) and rule.status == first.status
        ]
        return sendgrid_errors(first.status, errors)

    def unsupported_media(self) -> Reply:
        return sendgrid_error(415, "Content-Type should be application/json.")

    def recipients(self, body: bytes) -> list[str]:
        data = load_json(body)
        found = []
        if isinstance(data, dict) and isinstance(data.get("personalizations"), list):
            for p in data["personalizations"]:
                with contextlib.suppress(KeyError, IndexError, TypeError):
                    found.append(str(p["to"][0]["email"]))
        return found

    def parse(self, body: bytes, params: dict[str, str]) -> list[Message]:
        data = load_json(body)
        if not isinstance(data, dict):
            raise RejectedError(sendgrid_error(400, "Bad Request"))
        check_sender(data)
        check_content(data)
        check_headers(data.get("headers"), "headers")
        check_asm(data.get("asm"))
        top_args = check_custom_args(data.get("custom_args"), "custom_args")
        people = data.get("personalizations")
        if not isinstance(people, list) or not people or len(people) > 1000:
            message = (
                "The personalizations field is required and must have at least one "
                "personalization, and at most 1000."
            )
            raise RejectedError(sendgrid_error(400, message, "personalizations"))
        return [self.message(data, p, i, top_args) for i, p in enumerate(people)]

    def message(self, data: dict, p: Any, i: int, top_args: dict) -> Message:
        path = f"personalizations.{i}"
        if not isinstance(p, dict):
            raise RejectedError(sendgrid_error(400, "Invalid type. Expected: object.", path))
        check_to(p.get("to"), path)
        subject = p.get("subject", data.get("subject"))
        if not isinstance(subject, str) or not subject:
            message = (
                "The subject is required. You can get around this requirement if you use a "
                "template with a subject defined or if every personalization has a subject "
                "defined."
            )
            raise RejectedError(sendgrid_error(400, message, "subject"))
        args = {**top_args, **check_custom_args(p.get("custom_args"), f"{path}.custom_args")}
        headers = {
            **check_headers(data.get("headers"), "headers"),
            **check_headers(p.get("headers"), f"{path}.headers"),
        }
        tags = check_substitutions(p.get("substitutions"), f"{path}.substitutions")
        content = [{**c, "value": substitute(c["value"], tags)} for c in data["content"]]
        subject = substitute(subject, tags)
        request = {**p, "from": data["from"], "subject": subject, "content": content}
        if headers:  # what the recipient's mail client sees: the request's and its own
            request["headers"] = headers
        if "asm" in data:
            request["asm"] = data["asm"]
        return Message(p["to"][0]["email"], args.get("campaign"), args.get("customer_id"), request)

    def check_permanent(self, messages: list[Message]) -> None:
        refused = [
            (f"personalizations.{i}.to.{j}.email", "Does not contain a valid address.")
            for i, m in enumerate(messages)
            for j, to in enumerate(m.request["to"])
            if to["email"].lower().startswith("bounce")
        ]
        if refused:
            raise RejectedError(sendgrid_errors(400, refused))

    def respond(self, messages: list[Message], params: dict[str, str]) -> tuple[Reply, str]:
        dropped = [m for m in messages if self.suppressed(m.recipient)]
        if dropped:  # accepted, then dropped: SendGrid never delivers to a listed address
            with self._lists_lock:
                self.dropped += len(dropped)
        message_id = secrets.token_urlsafe(16)  # 22 url-safe characters, like SendGrid's
        return Reply(202, None, {"X-Message-Id": message_id}), message_id


def check_sender(data: dict) -> None:
    sender = data.get("from")
    if not isinstance(sender, dict) or not isinstance(sender.get("email"), str):
        message = (
            "The from object must be provided for every email send. It is an object that "
            "requires the email parameter, but may also contain a name parameter."
        )
        raise RejectedError(sendgrid_error(400, message, "from.email"))
    if not ROUGH_EMAIL.fullmatch(sender["email"]):
        raise RejectedError(sendgrid_error(400, "Does not contain a valid address.", "from.email"))


def check_content(data: dict) -> None:
    content = data.get("content")
    if not isinstance(content, list) or not content:
        message = (
            "Unless a valid template_id is provided, the content parameter is required. "
            "There must be at least one defined content block."
        )
        raise RejectedError(sendgrid_error(400, message, "content"))
    for i, block in enumerate(content):
        ok = isinstance(block, dict) and isinstance(block.get("type"), str)
        if not ok or not isinstance(block.get("value"), str) or not block["value"]:
            message = "The content value must be a string at least one character in length."
            raise RejectedError(sendgrid_error(400, message, f"content.{i}.value"))
    types = [block["type"] for block in content]
    if "text/plain" in types and types[0] != "text/plain":
        message = "If present, text/plain must be first, followed by text/html."
        raise RejectedError(sendgrid_error(400, message, "content.0.type"))


def check_to(to: Any, path: str) -> None:
    if not isinstance(to, list) or not to:
        message = (
            "The to array is required for all personalization objects, and must have at "
            "least one email object with a valid email address."
        )
        raise RejectedError(sendgrid_error(400, message, f"{path}.to"))
    for j, entry in enumerate(to):
        email = entry.get("email") if isinstance(entry, dict) else None
        valid = isinstance(email, str) and ROUGH_EMAIL.fullmatch(email)
        # an internationalised domain must come IDNA-encoded (xn--), as SendGrid lists it
        if not valid or not email.rpartition("@")[2].isascii():
            message = "Does not contain a valid address."
            raise RejectedError(sendgrid_error(400, message, f"{path}.to.{j}.email"))
        if not isinstance(entry.get("name", ""), str):
            message = "Invalid type. Expected: string."
            raise RejectedError(sendgrid_error(400, message, f"{path}.to.{j}.name"))


# Headers SendGrid sets itself and refuses from a request (its v3 mail/send reference).
RESERVED_HEADERS = frozenset(
    name.lower()
    for name in (
        "x-sg-id", "x-sg-eid", "received", "dkim-signature", "Content-Type",
        "Content-Transfer-Encoding", "To", "From", "Subject", "Reply-To", "CC", "BCC",
    )
)  # fmt: skip
HEADER_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322: printable ASCII but the colon


def check_headers(headers: Any, path: str) -> dict:
    """An object of header names to string values, none reserved, no line breaks."""
    if headers is None:
        return {}
    if not isinstance(headers, dict):
        raise RejectedError(sendgrid_error(400, "Invalid type. Expected: object.", path))
    for name, value in headers.items():
        if not isinstance(value, str):
            given = type(value).__name__
            message = f"Invalid type. Expected: string, given: {given}."
            raise RejectedError(sendgrid_error(400, message, f"{path}.{name}"))
        if name.lower() in RESERVED_HEADERS:
            message = f"The header {name} is reserved and cannot be set in headers."
            raise RejectedError(sendgrid_error(400, message, f"{path}.{name}"))
        if not HEADER_NAME.fullmatch(name) or "\r" in value or "\n" in value:
            message = "Header names and values must be printable text without line breaks."
            raise RejectedError(sendgrid_error(400, message, f"{path}.{name}"))
    return headers


def check_asm(asm: Any) -> None:
    """``{"group_id": N}`` with an integer group, and at most 25 groups to display."""
    if asm is None:
        return
    group = asm.get("group_id") if isinstance(asm, dict) else None
    if not isinstance(group, int) or isinstance(group, bool):
        raise RejectedError(sendgrid_error(400, "The asm group_id must be an integer.", "asm"))
    shown = asm.get("groups_to_display", [])
    if not isinstance(shown, list) or len(shown) > 25:
        message = "The groups_to_display must be an array of at most 25 group ids."
        raise RejectedError(sendgrid_error(400, message, "asm.groups_to_display"))


def check_substitutions(tags: Any, path: str) -> dict:
    if tags is None:
        return {}
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise RejectedError(sendgrid_error(400, "Invalid type. Expected: object of strings.", path))
    return tags


def substitute(text: str, tags: dict[str, str]) -> str:
    """Replace each tag in turn, as SendGrid does: a value holding a tag replaced later has
    that tag replaced too. The message stored is the one the recipient would read."""
    for tag, value in tags.items():
        text = text.replace(tag, value)
    return text


def check_custom_args(args: Any, path: str) -> dict:
    if args is None:
        return {}
    if not isinstance(args, dict):
        raise RejectedError(sendgrid_error(400, "Invalid type. Expected: object.", path))
    for key, value in args.items():
        if not isinstance(value, str):
            given = type(value).__name__
            message = f"Invalid type. Expected: string, given: {given}."
            raise RejectedError(sendgrid_error(400, message, f"{path}.{key}"))
    return args
