"""Email through SendGrid v3 ``POST /v3/mail/send`` (``202`` with ``X-Message-Id``)."""

from __future__ import annotations

import datetime
import logging
import re
import secrets
from typing import Any
from urllib.parse import urlsplit

import requests

from ..config import email_api
from ..consent import match_key
from ..exceptions import ChannelStoppedError, MessageError, SettingsError
from ..segments import ascii_address
from ..templates import MessageTemplate, line_break
from ..unsubscribe import Unsubscribe, check_key, old_key_envs
from . import Blame, Provider, Request, json_body
from .lists import Listed, ListReader, ProviderList

log = logging.getLogger("campaign_pipeline")

# A batch shares one content template whose tags each personalization fills in. SendGrid
# replaces a tag wherever it occurs, in a subject or in another tag's value too, so a tag
# must be text no customer can write: each request's tags carry a random nonce.
TAGS = {"text/plain": "campaign_text", "text/html": "campaign_html"}
_TAG_LENGTH = len("%campaign_html_%") + 24  # the nonce is 12 random bytes in hex
MAX_SUBSTITUTIONS = 10_000  # bytes per personalization, SendGrid's limit
_PERSONALIZATION = re.compile(r"^personalizations\.(\d+)\b")
_ADDRESS = re.compile(r"^personalizations\.\d+\.to\.\d+\.email$")

# SendGrid's suppression lists (GET /v3/suppression/<path>, paged with limit and offset):
# their paths and their names in a skipped recipient's reason, "sendgrid <name> <date>".
SUPPRESSION_LISTS = (
    ("bounces", "bounces"),
    ("blocks", "blocks"),
    ("spam_reports", "spam reports"),
    ("invalid_emails", "invalid emails"),
    ("unsubscribes", "global unsubscribes"),
)
LIST_SOURCE = "sendgrid"
MAX_PAGES = 2000  # per list: a million entries at 500 a page
_GROUP_SOURCE = re.compile(rf"^{LIST_SOURCE} group (\d+) unsubscribes$")


def group_source(group_id: int) -> str:
    """The source of an unsubscribe group's entries in the consent store."""
    return f"{LIST_SOURCE} group {group_id} unsubscribes"


def utc_today() -> str:
    return datetime.datetime.now(datetime.UTC).date().isoformat()


def listed_date(created: Any, fallback: str) -> str:
    """The UTC date of SendGrid's ``created`` (Unix seconds), else *fallback*."""
    if isinstance(created, bool) or not isinstance(created, (int, float)):
        return fallback
    try:
        return datetime.datetime.fromtimestamp(created, datetime.UTC).date().isoformat()
    except (OverflowError, OSError, ValueError):
        return fallback


def parse_entries(page: list, today: str) -> list[Listed]:
    """The entries of one page of a suppression list: objects with ``email``, ``created``
    and, for bounces and blocks, ``status`` (the code kept); or, for an unsubscribe group,
    plain addresses. An entry without an address is left out; an address is keyed as every
    contact is (:func:`~campaign_pipeline.consent.match_key`), whatever form SendGrid keeps."""
    found = []
    for item in page:
        if isinstance(item, str):
            email, created, code = item, None, ""
        elif isinstance(item, dict) and isinstance(item.get("email"), str):
            email, created = item["email"], item.get("created", item.get("created_at"))
            code = item.get("status") if isinstance(item.get("status"), str) else ""
        else:
            continue
        if email := email.strip():
            found.append(Listed(match_key("email", email), listed_date(created, today), code))
    return found


def _identity(item: Any) -> tuple:
    """What tells one entry of a list page from another: its address and date."""
    if isinstance(item, dict):
        return (str(item.get("email")).casefold(), item.get("created"))
    return (str(item).casefold(), None)


def batch_tags() -> dict[str, str]:
    """The substitution tag of each content type for one batched request."""
    nonce = secrets.token_hex(12)
    return {kind: f"%{name}_{nonce}%" for kind, name in TAGS.items()}


class EmailProvider(Provider):
    channel = "email"
    section = "email_api"
    name = "SendGrid"
    contact_field = "email"
    success_status = 202
    template_variables = ("unsubscribe_url",)
    sync_key = "sync_suppressions"
    header_parts = ("subject.txt",)

    def __init__(self, config: email_api, preview: bool = False):
        super().__init__(config.base_url, preview)
        self.from_email = config.from_email
        self.from_name = config.from_name
        self.token = self.secret(config.token_env, "email_api", "token_env", "preview-token")
        self.fields = list(config.custom_args)
        self.transactional = config.transactional
        self.asm_group_id = config.asm_group_id
        self.sync = config.sync_suppressions
        self.page_size = config.suppression_page_size
        paths = Unsubscribe(config.unsubscribe_url.strip(), config.unsubscribe_mailto.strip())
        self.key_env, key = config.unsubscribe_key_env, ""
        if not paths.problems() and paths.needs_key and self.key_env:
            stand_in = "preview-unsubscribe-key-" + "0" * 32
            key = self.secret(self.key_env, "email_api", "unsubscribe_key_env", stand_in)
            # masked as every secret, but no credential of SendGrid's: not in its hints
            del self.env_keys["unsubscribe_key_env"]
        self.unsubscribe = Unsubscribe(paths.url, paths.mailto, key, config.unsubscribe_key_id)
        self.old_key_envs = config.unsubscribe_old_key_envs

    def check(self) -> None:
        super().check()
        if not self.from_email:
            raise SettingsError(
                "[email_api] from_email is not set: SendGrid needs a verified sender"
            )
        for key in ("from_email", "from_name"):
            if line_break(getattr(self, key)):
                raise SettingsError(
                    f"[email_api] {key}: holds a line break or a control character; it is "
                    "sent in a header, which is one line"
                )
        self.check_unsubscribe()

    def check_unsubscribe(self) -> None:
        """A marketing email must offer a way out (CAN-SPAM, Gmail's and Yahoo's bulk-sender
        rules), and its links must be ones the endpoint can verify."""
        paths = self.unsubscribe
        if problems := paths.problems():
            raise SettingsError("; ".join(problems))
        if self.asm_group_id < 0:
            raise SettingsError("[email_api] asm_group_id must be a SendGrid group id, or 0: none")
        if not (paths.url or paths.mailto or self.asm_group_id or self.transactional):
            raise SettingsError(
                "[email_api] unsubscribe_url, unsubscribe_mailto and asm_group_id are all "
                "unset: a marketing email needs an unsubscribe path (set one, or "
                "transactional = true for receipts and the like)"
            )
        if paths.needs_key:
            if not self.key_env:
                raise SettingsError(
                    "[email_api] unsubscribe_key_env is empty, but the unsubscribe links use "
                    "{token}: name the variable holding the key that signs them"
                )
            check_key(self.unsubscribe.key, self.key_env)
            if paths.key_id in dict(old_key_envs(self.old_key_envs)):
                raise SettingsError(
                    f"[email_api] unsubscribe_key_id = {paths.key_id} is also an id of "
                    "unsubscribe_old_key_envs: give the current key an id of its own"
                )
            if paths.url and "contact" not in paths.fields(paths.url):
                log.warning(
                    "[email_api] unsubscribe_url has no {contact}: an unsubscribe through it "
                    "names the customer id alone, not the address the email went to"
                )
        host = paths.example_domain()
        local = (urlsplit(self.base_url).hostname or "") in ("127.0.0.1", "localhost", "::1")
        if host and not local:
            raise SettingsError(
                f"[email_api] unsubscribe links point at {host}, a reserved example domain, "
                f"while sending to {self.configured_url}: set unsubscribe_url (or "
                "unsubscribe_mailto) to your own unsubscribe endpoint"
            )

    def suppression_lists(self, reader: ListReader) -> list[ProviderList]:
        """SendGrid's five suppression lists, page by page, and with ``asm_group_id`` the
        group's unsubscribes: SendGrid accepts a message to any of them and then drops it,
        so the campaign would count as sent what nobody receives."""
        if not self.sync:
            log.info("email: [email_api] sync_suppressions = false: SendGrid's lists not read")
            return []
        found = [self._paged(reader, path, name) for path, name in SUPPRESSION_LISTS]
        if self.asm_group_id:
            found.append(self._group(reader))
        return found

    def list_applies(self, source: str) -> bool:
        """An unsubscribe group's list applies only to messages sent in that group."""
        group = _GROUP_SOURCE.match(source)
        return group is None or int(group.group(1)) == self.asm_group_id

    def list_scope(self) -> str:
        return f"group {self.asm_group_id}" if self.asm_group_id else ""

    def _paged(self, reader: ListReader, path: str, name: str) -> ProviderList:
        """Every entry of one list, read again once if it changed while it was paged (see
        :meth:`_pages`); changing again, the entries of both reads, not complete."""
        entries, complete = self._pages(reader, path, name)
        if not complete:
            log.info("email: SendGrid's %s list changed while it was read; reading it again", name)
            again, complete = self._pages(reader, path, name)
            entries = again if complete else entries + again
        unique: dict[str, Listed] = {}  # the overlaps' entries came twice
        for entry in entries:
            unique.setdefault(entry.contact, entry)
        return ProviderList(f"{LIST_SOURCE} {name}", tuple(unique.values()), complete)

    def _pages(self, reader: ListReader, path: str, name: str) -> tuple[list[Listed], bool]:
        """Every page of one list: ``limit`` entries from ``offset``; a page shorter than
        ``limit`` is the last (SendGrid gives no total). The pages overlap by one entry: a
        page that does not start with the last entry of the one before means the list
        changed in between (an entry before it was removed, so that one the read never saw
        may have moved back across the boundary), and the read is not complete. With
        ``suppression_page_size = 1`` nothing overlaps and no read is complete."""
        url, today = f"{self.base_url}/v3/suppression/{path}", utc_today()
        entries: list[Listed] = []
        step, complete, last = max(self.page_size - 1, 1), self.page_size > 1, None
        for page in range(MAX_PAGES):
            params = {"limit": self.page_size, "offset": page * step}
            answer = self._array(reader.get(name, url, params, self._list_headers()), name)
            if page and self.page_size > 1 and (not answer or _identity(answer[0]) != last):
                complete = False
            entries += parse_entries(answer, today)
            last = _identity(answer[-1]) if answer else None
            if len(answer) < self.page_size:
                return entries, complete
        raise ChannelStoppedError(
            f"email: SendGrid's {name} list has more than {MAX_PAGES * self.page_size:,} "
            f"entries ({MAX_PAGES:,} pages of [email_api] suppression_page_size = "
            f"{self.page_size}); nothing was sent: raise suppression_page_size (at most 500) "
            "or clean the list up at SendGrid"
        )

    def _group(self, reader: ListReader) -> ProviderList:
        """The unsubscribe group's addresses (one answer: SendGrid does not page it)."""
        name = f"group {self.asm_group_id} unsubscribes"
        url = f"{self.base_url}/v3/asm/groups/{self.asm_group_id}/suppressions"
        answer = reader.get(name, url, None, self._list_headers(), check="asm_group_id")
        entries = parse_entries(self._array(answer, name), utc_today())
        return ProviderList(group_source(self.asm_group_id), tuple(entries))

    def _list_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}

    def _array(self, answer: Any, name: str) -> list:
        if not isinstance(answer, list):
            raise ChannelStoppedError(
                f"email: SendGrid's answer for its {name} list is not a list of entries; "
                f"nothing was sent: {self.hint('base_url')}"
            )
        return answer

    def check_template(self, template: MessageTemplate) -> None:
        """CAN-SPAM wants the way out in the message itself, where a reader sees it: the
        List-Unsubscribe header shows only in some mail clients."""
        super().check_template(template)
        shown = "unsubscribe_url" in template.variables | template.optional
        if not (shown or self.transactional or self.asm_group_id):
            log.warning(
                "email template %s does not show {{ unsubscribe_url }}: a marketing email "
                "should say in its body how to unsubscribe (CAN-SPAM)",
                template.folder,
            )

    def account(self) -> str:
        return self.token  # SendGrid's limit is the API key's, whatever signs the links

    def template_context(self, context: dict[str, str]) -> dict[str, str]:
        contact = ascii_address(context.get(self.contact_field) or "")
        link = self.unsubscribe.link(context["customer_id"], context["campaign"], contact)
        return {**context, "unsubscribe_url": link}

    def request(self, recipient: str, parts: dict[str, str], context: dict[str, str]) -> Request:
        if not parts["subject.txt"]:
            raise MessageError("the email subject rendered empty")
        sender = {"email": self.from_email}
        if self.from_name:
            sender["name"] = self.from_name
        content = [
            {"type": kind, "value": parts[part]}
            for part, kind in (("body.txt", "text/plain"), ("body.html", "text/html"))
            if parts.get(part)
        ]
        # the domain in ASCII: SendGrid refuses an internationalised one (the loader keeps
        # the Unicode form, which the result file shows)
        address = ascii_address(recipient)
        personalization: dict = {"to": [{"email": address}]}
        if self.fields:
            personalization["custom_args"] = self.picked(context)
        # per recipient: each link is the customer's own, so it cannot be a substitution of
        # a shared header
        customer, campaign = context["customer_id"], context["campaign"]
        if headers := self.unsubscribe.headers(customer, campaign, address):
            personalization["headers"] = headers
        body = {
            "personalizations": [personalization],
            "from": sender,
            "subject": parts["subject.txt"],
            "content": content,
        }
        if self.asm_group_id:
            body["asm"] = {"group_id": self.asm_group_id}
        return Request(
            url=f"{self.base_url}/v3/mail/send",
            headers={"Authorization": f"Bearer {self.token}"},
            json=body,
        )

    def batch_key(self, request: Request) -> object | None:
        content = request.json["content"]
        size = sum(len(c["value"].encode()) + _TAG_LENGTH for c in content)
        return tuple(c["type"] for c in content) if size <= MAX_SUBSTITUTIONS else None

    def combine(self, requests: list[Request]) -> Request:
        """Up to 1000 recipients in one request, each personalization with its own subject
        and its rendered bodies as substitutions of one shared content template."""
        if len(requests) == 1:
            return requests[0]
        first = requests[0].json
        tags = batch_tags()
        personalizations = []
        for request in requests:
            body = request.json
            personalizations.append(
                {
                    **body["personalizations"][0],
                    "subject": body["subject"],
                    "substitutions": {tags[c["type"]]: c["value"] for c in body["content"]},
                }
            )
        merged = {
            "personalizations": personalizations,
            "from": first["from"],
            "content": [{"type": c["type"], "value": tags[c["type"]]} for c in first["content"]],
        }
        if "asm" in first:  # the same group for the whole run
            merged["asm"] = first["asm"]
        return Request(url=requests[0].url, headers=requests[0].headers, json=merged)

    def blamed(self, response: requests.Response) -> list[Blame]:
        """Each personalization the errors name (``personalizations.N...``), with its own
        errors; its contact is refused only by an error about its address
        (``personalizations.N.to.M.email``), not by one about its subject, say."""
        named: dict[int, list[str]] = {}
        contact: set[int] = set()
        for field, message in _errors(response):
            if found := _PERSONALIZATION.match(field):
                index = int(found.group(1))
                named.setdefault(index, []).append(f"{field}: {message}")
                if _ADDRESS.match(field):
                    contact.add(index)
        return [Blame(i, "; ".join(texts), i in contact) for i, texts in named.items()]

    def blames_contact(self, response: requests.Response, code: str) -> bool:  # noqa: ARG002 - the hook's
        """A 400 about a recipient's address (``personalizations.N.to.M.email``), not about
        the rest of the message."""
        return any(_ADDRESS.match(field) for field, _ in _errors(response))

    def message_id(self, response: requests.Response) -> str:
        return response.headers.get("X-Message-Id", "")

    def speaks(self, response: requests.Response) -> bool:
        return isinstance(json_body(response).get("errors"), list)

    def error_of(self, response: requests.Response) -> tuple[str, str]:
        """SendGrid has no error codes; "from" stands for an error about the sender (field
        ``from`` or ``from.email``), which no recipient causes."""
        errors = _errors(response)
        code = "from" if any(f == "from" or f.startswith("from.") for f, _ in errors) else ""
        messages = [f"{field}: {message}" if field else message for field, message in errors]
        return code, "; ".join(messages) or response.reason or ""


def _errors(response: requests.Response) -> list[tuple[str, str]]:
    """(field, message) of each error of a SendGrid error answer; "" for a field not named."""
    errors = [e for e in json_body(response).get("errors") or [] if isinstance(e, dict)]
    return [(str(e.get("field") or ""), str(e.get("message"))) for e in errors]
