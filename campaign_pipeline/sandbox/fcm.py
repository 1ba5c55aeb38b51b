"""FCM HTTP v1 as the sandbox plays it: ``POST /v1/projects/{project_id}/messages:send``.

Bearer token: the static ``PUSH_API_TOKEN``, or an access token that the sandbox's OAuth2
token endpoint (:mod:`.oauth`) issued and that has not expired. ``unregistered*`` and
``invalid*`` device tokens are refused as FCM refuses stale and malformed ones.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import Any

from .bucket import ChannelLimit
from .endpoint import (
    Endpoint,
    Message,
    RejectedError,
    Reply,
    bearer_ok,
    bearer_token,
    load_json,
    retry_after,
)

FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
FCM_MESSAGE_KEYS = {
    "name", "token", "topic", "condition", "data", "notification",
    "android", "apns", "webpush", "fcm_options", "fcmOptions",
}  # fmt: skip


# google.rpc status names of the HTTP statuses FCM answers with.
FCM_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}


def fcm_error(status: int, state: str, message: str, code: str | None, **headers: str) -> Reply:
    error: dict[str, Any] = {"code": status, "message": message, "status": state}
    if code:
        error["details"] = [{"@type": FCM_ERROR_TYPE, "errorCode": code}]
    return Reply(status, {"error": error}, headers)


def invalid_argument(message: str) -> RejectedError:
    return RejectedError(fcm_error(400, "INVALID_ARGUMENT", message, "INVALID_ARGUMENT"))


class PushEndpoint(Endpoint):
    channel = "push"
    provider = "FCM v1"
    route = re.compile(r"/v1/projects/(?P<project_id>[^/]+)/messages:send")
    content_type = "application/json"
    limit = ChannelLimit(2, 10)
    credential_vars = ("PUSH_API_TOKEN",)
    credentials_note = (
        "or the access tokens its token endpoint (POST /token) issued to a --service-account key"
    )

    def authorized(self, headers: Any, params: dict[str, str]) -> bool:
        """The static token, or an access token the token endpoint issued and not expired."""
        return bearer_ok(headers, self.credential("PUSH_API_TOKEN")) or self.tokens.valid(
            bearer_token(headers)
        )

    def extra_stats(self) -> dict[str, Any]:
        return {"tokens_issued": self.tokens.count}

    def unauthorized(self) -> Reply:
        message = "Request had invalid authentication credentials."
        return fcm_error(401, "UNAUTHENTICATED", message, None)

    def rate_limited(self, wait: float, burst: int) -> Reply:
        message = "Quota exceeded for quota metric 'Send requests'."
        headers = {"Retry-After": retry_after(wait)}
        return fcm_error(429, "RESOURCE_EXHAUSTED", message, "QUOTA_EXCEEDED", **headers)

    def unavailable(self) -> Reply:
        return fcm_error(503, "UNAVAILABLE", "The service is currently unavailable.", "UNAVAILABLE")

    def error(self, status: int, code: str) -> Reply:
        headers = {"Retry-After": "1"} if status == 429 or status >= 500 else {}
        state = FCM_STATUS.get(status, "UNKNOWN")
        return fcm_error(status, state, f"sandbox error rule: {code}", code or None, **headers)

    def unsupported_media(self) -> Reply:
        message = "Invalid Content-Type: expected application/json."
        return fcm_error(415, "INVALID_ARGUMENT", message, "INVALID_ARGUMENT")

    def recipients(self, body: bytes) -> list[str]:
        data = load_json(body)
        message = data.get("message") if isinstance(data, dict) else None
        token = message.get("token") if isinstance(message, dict) else None
        return [token] if isinstance(token, str) and token else []

    def parse(self, body: bytes, params: dict[str, str]) -> list[Message]:
        data = load_json(body)
        if not isinstance(data, dict) or not isinstance(data.get("message"), dict):
            raise invalid_argument("Invalid JSON payload received.")
        unknown = set(data) - {"message", "validate_only", "validateOnly"}
        message = data["message"]
        unknown |= {f"message.{key}" for key in set(message) - FCM_MESSAGE_KEYS}
        if unknown:
            name = sorted(unknown)[0]
            raise invalid_argument(f'Invalid JSON payload received. Unknown name "{name}".')
        token = message.get("token")
        if not isinstance(token, str) or not token:
            raise invalid_argument("Recipient of the message is not set.")
        check_notification(message.get("notification"))
        data_values = check_data(message.get("data"))
        if data.get("validate_only") or data.get("validateOnly"):
            return []  # FCM validates such a request without sending anything
        return [
            Message(token, data_values.get("campaign"), data_values.get("customer_id"), message)
        ]

    def check_permanent(self, messages: list[Message]) -> None:
        for m in messages:
            if (
                m.recipient.startswith("unregistered")
                or m.recipient in self.config.unregistered_tokens
            ):
                message = "Requested entity was not found."
                raise RejectedError(fcm_error(404, "NOT_FOUND", message, "UNREGISTERED"))
            if m.recipient.startswith("invalid"):
                raise invalid_argument(
                    "The registration token is not a valid FCM registration token"
                )

    def respond(self, messages: list[Message], params: dict[str, str]) -> tuple[Reply, str]:
        project = params["project_id"]
        if not messages:
            return Reply(200, {"name": f"projects/{project}/messages/fake_message_id"}), ""
        # The recorded id is the whole name, which is what a client keeps as the message id.
        name = f"projects/{project}/messages/0:{time.time_ns() // 1000}{secrets.token_hex(8)}"
        return Reply(200, {"name": name}), name


def check_notification(notification: Any) -> None:
    if notification is None:
        return
    if not isinstance(notification, dict):
        raise invalid_argument("Invalid value at 'message.notification' (type.googleapis.com).")
    for key in ("title", "body", "image"):
        value = notification.get(key)
        if value is not None and not isinstance(value, str):
            raise invalid_argument(
                f"Invalid value at 'message.notification.{key}' (TYPE_STRING), {value!r}"
            )


def check_data(data: Any) -> dict[str, str]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise invalid_argument("Invalid value at 'message.data' (type.googleapis.com).")
    for i, value in enumerate(data.values()):
        if not isinstance(value, str):
            raise invalid_argument(
                f"Invalid value at 'message.data[{i}].value' (TYPE_STRING), {json.dumps(value)}"
            )
    return data
