"""Email through SendGrid v3 ``POST /v3/mail/send`` (``202`` with ``X-Message-Id``)."""

from __future__ import annotations

import re
import secrets

import requests

from ..config import email_api
from ..exceptions import MessageError, SettingsError
from . import Provider, Request, json_body

# A batch shares one content template whose tags each personalization fills in. SendGrid
# replaces a tag wherever it occurs, in a subject or in another tag's value too, so a tag
# must be text no customer can write: each request's tags carry a random nonce.
TAGS = {"text/plain": "campaign_text", "text/html": "campaign_html"}
_TAG_LENGTH = len("%campaign_html_%") + 24  # the nonce is 12 random bytes in hex
MAX_SUBSTITUTIONS = 10_000  # bytes per personalization, SendGrid's limit
_PERSONALIZATION = re.compile(r"^personalizations\.(\d+)\b")
_ADDRESS = re.compile(r"^personalizations\.\d+\.to\.\d+\.email$")


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

    def __init__(self, config: email_api, preview: bool = False):
        super().__init__(config.base_url, preview)
        self.from_email = config.from_email
        self.from_name = config.from_name
        self.token = self.secret(config.token_env, "email_api", "token_env", "preview-token")
        self.fields = list(config.custom_args)

    def check(self) -> None:
        super().check()
        if not self.from_email:
            raise SettingsError(
                "[email_api] from_email is not set: SendGrid needs a verified sender"
            )

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
        personalization: dict = {"to": [{"email": recipient}]}
        if self.fields:
            personalization["custom_args"] = self.picked(context)
        body = {
            "personalizations": [personalization],
            "from": sender,
            "subject": parts["subject.txt"],
            "content": content,
        }
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
        return Request(url=requests[0].url, headers=requests[0].headers, json=merged)

    def culprit(self, response: requests.Response) -> int | None:
        for error in json_body(response).get("errors") or []:
            field = error.get("field") if isinstance(error, dict) else None
            if found := _PERSONALIZATION.match(str(field or "")):
                return int(found.group(1))
        return None

    def blames_contact(self, response: requests.Response, code: str) -> bool:  # noqa: ARG002 - the hook's
        """A 400 about a recipient's address (``personalizations.N.to.M.email``), not about
        the rest of the message."""
        errors = json_body(response).get("errors") or []
        fields = [str(e.get("field") or "") for e in errors if isinstance(e, dict)]
        return any(_ADDRESS.match(field) for field in fields)

    def message_id(self, response: requests.Response) -> str:
        return response.headers.get("X-Message-Id", "")

    def speaks(self, response: requests.Response) -> bool:
        return isinstance(json_body(response).get("errors"), list)

    def error_of(self, response: requests.Response) -> tuple[str, str]:
        """SendGrid has no error codes; "from" stands for an error about the sender (field
        ``from`` or ``from.email``), which no recipient causes."""
        errors = [e for e in json_body(response).get("errors") or [] if isinstance(e, dict)]
        fields = [str(e.get("field") or "") for e in errors]
        code = "from" if any(f == "from" or f.startswith("from.") for f in fields) else ""
        messages = [
            f"{field}: {e.get('message')}" if field else str(e.get("message"))
            for field, e in zip(fields, errors, strict=True)
        ]
        return code, "; ".join(messages) or response.reason or ""
