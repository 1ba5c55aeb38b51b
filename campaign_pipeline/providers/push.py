"""Push notifications through FCM HTTP v1 ``POST /v1/projects/{project_id}/messages:send``.

Two ways to authenticate: a service-account key file (``[push_api] service_account_env``),
from which access tokens are minted and renewed as they expire (:mod:`.oauth`), as Firebase
users do in production; or one static access token (``token_env``) minted elsewhere.
"""

from __future__ import annotations

import logging

import requests

from ..config import push_api
from ..exceptions import MissingSecretError, SettingsError
from . import Provider, Request, json_body
from .oauth import ServiceAccountTokens, read_key_file

log = logging.getLogger("campaign_pipeline")
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"


class PushProvider(Provider):
    channel = "push"
    section = "push_api"
    name = "FCM"
    contact_field = "device_token"
    success_status = 200

    def __init__(self, config: push_api, preview: bool = False):
        super().__init__(config.base_url, preview)
        self.project_id = config.project_id
        self.tokens: ServiceAccountTokens | None = None
        self.token = ""
        if config.service_account_env:
            self._use_key_file(config.service_account_env, config.timeout_seconds)
        else:
            self.token = self.secret(config.token_env, "push_api", "token_env", "preview-token")
        self.fields = list(config.data)

    def _use_key_file(self, env_name: str, timeout: float) -> None:
        self.env_keys["service_account_env"] = env_name
        try:
            info = read_key_file(env_name, "push_api", "service_account_env")
        except MissingSecretError:
            if not self.preview:
                raise
            self.token = f"<access token minted from ${env_name}>"
            return
        self.project_id = self.project_id or str(info.get("project_id") or "")
        if self.preview:  # a dry run reads the key but asks Google for nothing
            self.token = f"<access token minted from ${env_name}>"
        else:
            self.tokens = ServiceAccountTokens(info, env_name, timeout)

    def check(self) -> None:
        super().check()
        if not self.project_id:
            raise SettingsError(
                "[push_api] project_id is not set (with a service-account key, empty takes "
                "the key file's project_id)"
            )
        if self.tokens is not None:
            self.tokens.current()  # a key the token endpoint refuses fails before sending
            log.info(
                "push: access tokens for %s, minted from the key in $%s",
                self.tokens.credentials.service_account_email,
                self.tokens.env_name,
            )

    def renew(self) -> bool:
        return self.tokens is not None and self.tokens.renew()

    def masked(self) -> list[str]:
        minted = self.tokens.recent() if self.tokens is not None else []
        return [*super().masked(), *minted]

    def account(self) -> str:
        # FCM's quota is the project's; its OAuth access token changes every hour
        return self.project_id

    def request(self, recipient: str, parts: dict[str, str], context: dict[str, str]) -> Request:
        message: dict = {
            "token": recipient,
            "notification": {"title": parts["title.txt"], "body": parts["body.txt"]},
        }
        if self.fields:
            message["data"] = self.picked(context)
        url = f"{self.base_url}/v1/projects/{self.project_id}/messages:send"
        if self.tokens is not None:  # a token with time left, as the request leaves
            return Request(url=url, headers={}, json={"message": message}, fresh_auth=self.tokens)
        headers = {"Authorization": f"Bearer {self.token}"}
        return Request(url=url, headers=headers, json={"message": message})

    def blames_contact(self, response: requests.Response, code: str) -> bool:
        """UNREGISTERED always; INVALID_ARGUMENT only when it is about the registration token
        (its message, or a BadRequest field violation on ``message.token``), not the message."""
        if code != "INVALID_ARGUMENT":
            return True
        error = json_body(response).get("error") or {}
        if not isinstance(error, dict):
            return False
        if "registration token" in str(error.get("message") or "").casefold():
            return True
        return any(
            isinstance(v, dict) and v.get("field") == "message.token"
            for d in error.get("details") or []
            if isinstance(d, dict)
            for v in d.get("fieldViolations") or []
        )

    def message_id(self, response: requests.Response) -> str:
        return str(json_body(response).get("name", ""))

    def speaks(self, response: requests.Response) -> bool:
        return isinstance(json_body(response).get("error"), dict)

    def error_of(self, response: requests.Response) -> tuple[str, str]:
        error = json_body(response).get("error") or {}
        if not isinstance(error, dict):
            return "", response.reason or ""
        code = next(
            (
                d.get("errorCode", "")
                for d in error.get("details") or []
                if isinstance(d, dict) and d.get("@type") == FCM_ERROR_TYPE
            ),
            "",
        )
        return code or str(error.get("status") or ""), str(error.get("message") or "")
