"""Email through SendGrid v3 ``POST /v3/mail/send`` (``202`` with ``X-Message-Id``)."""

from __future__ import annotations

import requests

from ..config import email_api, secret
from . import FAILED, RATE_LIMITED, RETRY, STOP, Provider, Request, json_body

# SendGrid answers with HTTP statuses only; its error bodies carry no code of their own.
ERRORS = {
    400: FAILED,  # a bad address or body: that recipient only
    401: STOP,  # the API key is wrong or revoked
    403: STOP,  # the key lacks mail.send, or the sender is not verified
    413: FAILED,  # the message is too large
    429: RATE_LIMITED,
    500: RETRY,
    502: RETRY,
    503: RETRY,
    504: RETRY,
}


class EmailProvider(Provider):
    channel = "email"
    contact_field = "email"
    success_status = 202

    def __init__(self, config: email_api):
        super().__init__(config.base_url)
        self.from_email = config.from_email
        self.from_name = config.from_name
        self.token = secret(config.token_env, "email_api", "token_env")
        self.secrets = [self.token]
        self.credentials_hint = f"the token in ${config.token_env} ([email_api] token_env)"

    def check(self) -> None:
        if not self.from_email:
            raise ValueError("[email_api] from_email is not set: SendGrid needs a verified sender")

    def request(self, recipient: str, parts: dict[str, str], meta: dict[str, str]) -> Request:
        if not parts["subject.txt"]:
            raise ValueError("the email subject rendered empty")
        sender = {"email": self.from_email}
        if self.from_name:
            sender["name"] = self.from_name
        content = [
            {"type": kind, "value": parts[part]}
            for part, kind in (("body.txt", "text/plain"), ("body.html", "text/html"))
            if parts.get(part)
        ]
        body = {
            "personalizations": [{"to": [{"email": recipient}], "custom_args": dict(meta)}],
            "from": sender,
            "subject": parts["subject.txt"],
            "content": content,
        }
        return Request(
            url=f"{self.base_url}/v3/mail/send",
            headers={"Authorization": f"Bearer {self.token}"},
            json=body,
        )

    def message_id(self, response: requests.Response) -> str:
        return response.headers.get("X-Message-Id", "")

    def error_of(self, response: requests.Response) -> tuple[str, str]:
        errors = json_body(response).get("errors") or []
        messages = [
            f"{e.get('field')}: {e.get('message')}" if e.get("field") else str(e.get("message"))
            for e in errors
            if isinstance(e, dict)
        ]
        return "", "; ".join(messages) or response.reason or ""

    def classify(self, status: int, code: str) -> str:
        return ERRORS.get(status, RETRY if status >= 500 else FAILED)
