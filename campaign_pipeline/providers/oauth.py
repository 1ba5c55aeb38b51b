"""FCM's OAuth2 access tokens, minted from a service-account key file by ``google-auth``.

FCM HTTP v1 takes a Bearer access token that Google issues for a service account and that
expires after an hour, so a campaign longer than that needs new ones while it sends.
``google-auth`` signs the JWT-bearer grant, asks the key file's ``token_uri`` and says when
a token is about to expire (3 min 45 s before); this module only decides what its failures
mean to a channel: a refused key stops it, an unreachable token endpoint is transient.

No error ever quotes the token endpoint's answer: a proxy or firewall page may echo the
request, and the request holds the signed assertion, a credential good for an hour. An
error says what the answer was (its status, content type and length, the OAuth2 error code).
"""

from __future__ import annotations

import collections
import json
import os
import re
import threading
from collections.abc import Mapping
from pathlib import Path

import google.auth.exceptions
import google.auth.transport
import google.auth.transport.requests
import requests
from google.oauth2 import service_account
from urllib3.util import parse_url

from ..exceptions import (
    KeyFileError,
    MissingSecretError,
    TokenRefusedError,
    TokenUnavailableError,
)

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
KEY_FIELDS = ("client_email", "private_key", "token_uri")
RECENT_TOKENS = 4  # tokens a request in flight may still carry after a refresh
# what of an answer an error may name: a media type, an OAuth2 error code (RFC 6749 5.2)
MEDIA_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]{1,64}/[A-Za-z0-9!#$&^_.+-]{1,64}")
ERROR_CODE = re.compile(r"[a-z_]{1,64}")


def read_key_file(env_name: str, section: str, key: str) -> dict:
    """The service-account key named by the environment variable *env_name*, checked.

    Every error names the variable and the file, never a value from inside it.
    """
    path = os.environ.get(env_name, "")
    if not path:
        raise MissingSecretError(
            f"environment variable {env_name} is not set (named by [{section}] {key}); "
            "export it as the path of the service account's JSON key file"
        )
    where = f"environment variable {env_name} (named by [{section}] {key}) is {path!r}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeyFileError(f"{where}, which does not exist") from None
    except IsADirectoryError:
        raise KeyFileError(f"{where}, which is a folder, not a key file") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise KeyFileError(f"{where}, which cannot be read: {reason}") from None
    try:
        info = json.loads(text)
    except ValueError as exc:
        raise KeyFileError(
            f"{where}, which is not JSON (line {exc.lineno}, column {exc.colno}): "
            "not a service-account key file"
        ) from None
    _check_key(info, where)
    return info


def _check_key(info: object, where: str) -> None:
    if not isinstance(info, dict) or info.get("type") != "service_account":
        kind = info.get("type") if isinstance(info, dict) else None
        held = f"a {kind!r} credential" if kind else "no credential type"
        raise KeyFileError(
            f"{where}, which holds {held}, not a service account's key; create a JSON key "
            "for the service account (Google Cloud console, IAM, Service accounts, Keys)"
        )
    missing = [field for field in KEY_FIELDS if not isinstance(info.get(field), str)]
    if missing:
        raise KeyFileError(f"{where}, a service-account key without {', '.join(missing)}")
    url = parse_url(info["token_uri"])
    if url.scheme not in ("http", "https") or not url.host:
        raise KeyFileError(f"{where}, whose token_uri is not an http(s) URL")


class _NotOAuthError(Exception):
    """The token endpoint answered with something other than a JSON object: a proxy's or a
    firewall's page, say. Its message describes the answer, never quotes it."""

    def __init__(self, answer: str, status: int):
        super().__init__(answer)
        self.status = status


class _TokenRequest(google.auth.transport.requests.Request):
    """google-auth's transport with the channel's timeout (its own default is 120 s), which
    keeps a description of the last answer and refuses one that is not OAuth2's JSON before
    google-auth would put it in an exception's text."""

    def __init__(self, timeout: float):
        super().__init__(requests.Session())
        self.timeout = timeout
        self.answer = ""  # the last answer, described

    def __call__(self, url, method="GET", body=None, headers=None, timeout=None, **kwargs):
        response = super().__call__(url, method, body, headers, timeout or self.timeout, **kwargs)
        self.answer = describe(response.status, response.headers, response.data)
        if not isinstance(_json(response.data), dict):
            raise _NotOAuthError(f"{self.answer}, not an OAuth2 answer", response.status)
        return response


def describe(status: int, headers: Mapping[str, str], data: bytes | None) -> str:
    """An answer of the token endpoint as an error may name it: status, content type,
    length, and the OAuth2 error code if it has one; never a byte of what it says."""
    media = str(headers.get("Content-Type") or "").split(";")[0].strip()
    media = media if MEDIA_TYPE.fullmatch(media) else "no readable Content-Type"
    answer = f"HTTP {status}, {media}, {len(data or b'')} bytes"
    body = _json(data)
    code = body.get("error") if isinstance(body, dict) else None
    if isinstance(code, str) and ERROR_CODE.fullmatch(code):
        answer += f", error {code}"
    return answer


def _json(data: bytes | str | None) -> object:
    try:
        return json.loads(data or b"")
    except ValueError:  # UnicodeDecodeError included
        return None


class ServiceAccountTokens(requests.auth.AuthBase):
    """Bearer access tokens for FCM from a service-account key, as a ``requests`` auth.

    Every request gets a token that is not about to expire: ``google-auth`` mints a new one
    when the current one has less than its refresh margin left. :meth:`renew` mints one at
    once, for a token the provider refused. Thread-safe: the sending threads share one.
    """

    def __init__(self, info: dict, env_name: str, timeout: float):
        self.env_name = env_name
        self.project_id = str(info.get("project_id") or "")
        try:
            self.credentials = service_account.Credentials.from_service_account_info(
                info, scopes=[FCM_SCOPE]
            )
        except (ValueError, TypeError, google.auth.exceptions.GoogleAuthError):
            # the message of the key parser could quote the file; this one names it only
            raise KeyFileError(
                f"the service-account key in ${env_name} has a private_key that cannot be "
                "read (a damaged or edited file?)"
            ) from None
        self._request = _TokenRequest(timeout)
        self._lock = threading.Lock()
        self._recent: collections.deque[str] = collections.deque(maxlen=RECENT_TOKENS)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.current()}"
        return request

    def current(self) -> str:
        """A token with time left, minted when the one held is about to expire."""
        with self._lock:
            if not self.credentials.valid:
                self._refresh()
            return self.credentials.token

    def renew(self) -> bool:
        """Mint a new token now: the provider refused the one it got."""
        with self._lock:
            self._refresh()
        return True

    def recent(self) -> list[str]:
        """The tokens minted last, to mask in every text that leaves the channel."""
        with self._lock:
            return list(self._recent)

    def _refresh(self) -> None:
        self._request.answer = ""
        try:
            self.credentials.refresh(self._request)
        except _NotOAuthError as exc:
            if exc.status in google.auth.transport.DEFAULT_RETRYABLE_STATUS_CODES:
                raise TokenUnavailableError(f"the token endpoint failed ({exc})") from None
            raise TokenRefusedError(
                f"the token endpoint answered {exc}: a proxy or firewall in the way? check "
                f"the token_uri of the key in ${self.env_name}"
            ) from None
        except google.auth.exceptions.RefreshError as exc:  # its text may quote the answer
            answer = self._request.answer or "no answer"
            if getattr(exc, "retryable", False):
                raise TokenUnavailableError(f"the token endpoint failed ({answer})") from None
            raise TokenRefusedError(
                f"the token endpoint refused the service-account key ({answer}); "
                f"check ${self.env_name}: the key may be deleted or disabled"
            ) from None
        except google.auth.exceptions.TransportError as exc:
            raise TokenUnavailableError(f"cannot reach the token endpoint: {_first(exc)}") from None
        self._recent.append(self.credentials.token)


def _first(exc: Exception) -> str:
    """The message of google-auth's TransportError: requests' error (it names the URL)."""
    return str(exc.args[0]) if exc.args else type(exc).__name__
