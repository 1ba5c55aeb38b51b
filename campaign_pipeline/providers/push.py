"""Push notifications through FCM HTTP v1 ``POST /v1/projects/{project_id}/messages:send``."""

from __future__ import annotations

import requests

from ..config import push_api
from ..exceptions import PermanentError
from . import Provider, Request, json_body

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
        self.token = self.secret(config.token_env, "push_api", "token_env", "preview-token")
        self.fields = list(config.data)

    def check(self) -> None:
        super().check()
        if not self.project_id:
            raise PermanentError("[push_api] project_id is not set")

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
        return Request(
            url=f"{self.base_url}/v1/projects/{self.project_id}/messages:send",
            headers={"Authorization": f"Bearer {self.token}"},
            json={"message": message},
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
