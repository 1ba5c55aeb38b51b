"""SMS through Twilio ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``."""

from __future__ import annotations

import re

import requests

from ..config import secret, sms_api
from . import FAILED, RATE_LIMITED, RETRY, STOP, Provider, Request, by_status, json_body

ACCOUNT_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")
MESSAGING_SERVICE_SID = re.compile(r"^MG[0-9a-fA-F]{32}$")
MAX_BODY = 1600  # Twilio refuses longer bodies with 21617

# Twilio error codes (https://www.twilio.com/docs/api/errors) and what they mean here.
ERRORS = {
    "20003": STOP,  # authentication failed
    "20005": STOP,  # account not active
    "20429": RATE_LIMITED,  # too many requests: never processed
    "21211": FAILED,  # invalid To number
    "21408": FAILED,  # region not enabled for this account
    "21602": FAILED,  # body missing
    "21610": FAILED,  # recipient replied STOP
    "21612": FAILED,  # cannot route to this number
    "21614": FAILED,  # not a mobile number
    "21617": FAILED,  # body over 1600 characters
    "30001": RETRY,  # queue overflow
}


class SmsProvider(Provider):
    channel = "sms"
    contact_field = "phone"
    success_status = 201

    def __init__(self, config: sms_api):
        super().__init__(config.base_url)
        self.account_sid = secret(config.account_sid_env, "sms_api", "account_sid_env")
        self.auth_token = secret(config.auth_token_env, "sms_api", "auth_token_env")
        self.from_number = config.from_number
        self.messaging_service_sid = config.messaging_service_sid
        self.secrets = [self.account_sid, self.auth_token]
        self.credentials_hint = (
            f"${config.account_sid_env} and ${config.auth_token_env} "
            "([sms_api] account_sid_env, auth_token_env)"
        )

    def check(self) -> None:
        if not ACCOUNT_SID.match(self.account_sid):
            raise ValueError(
                "the Twilio AccountSid (named by [sms_api] account_sid_env) "
                "does not look like AC followed by 32 hex digits"
            )
        if self.messaging_service_sid:
            if not MESSAGING_SERVICE_SID.match(self.messaging_service_sid):
                raise ValueError("[sms_api] messaging_service_sid must be MG + 32 hex digits")
        elif not self.from_number:
            raise ValueError("[sms_api] needs from_number or messaging_service_sid")

    def request(self, recipient: str, parts: dict[str, str], meta: dict[str, str]) -> Request:
        body = parts["body.txt"]
        if not body or len(body) > MAX_BODY:
            raise ValueError(f"SMS body has {len(body)} characters; Twilio takes 1 to {MAX_BODY}")
        form = {"To": recipient, "Body": body}
        if self.messaging_service_sid:
            form["MessagingServiceSid"] = self.messaging_service_sid
        else:
            form["From"] = self.from_number
        return Request(
            url=f"{self.base_url}/2010-04-01/Accounts/{self.account_sid}/Messages.json",
            headers={},
            data=form,
            auth=(self.account_sid, self.auth_token),
        )

    def message_id(self, response: requests.Response) -> str:
        return str(json_body(response).get("sid", ""))

    def error_of(self, response: requests.Response) -> tuple[str, str]:
        body = json_body(response)
        return str(body.get("code") or ""), str(body.get("message") or response.reason or "")

    def classify(self, status: int, code: str) -> str:
        if code in ERRORS:
            return ERRORS[code]
        if code.startswith("30"):
            return FAILED  # 30xxx are delivery failures for that handset
        return by_status(status)
