"""The sandbox's Google OAuth2 token endpoint: service-account keys in, access tokens out.

It does what ``https://oauth2.googleapis.com/token`` does for a service account: it takes a
JWT-bearer grant (RFC 7523) signed with the account's private key, checks the signature with
the public half of a key it was told to trust, the audience, the times and the scope, and
issues a Bearer access token that FCM then takes until it expires. Errors have Google's
shape (``{"error": "invalid_grant", "error_description": ...}``).

:func:`new_key` writes a test service-account key whose ``token_uri`` is the sandbox's, so
the pipeline's real ``google-auth`` path runs against it.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

TOKEN_PATH = "/token"
# google-auth signs every grant for Google's own endpoint, whatever the key's token_uri says
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_SCOPES = {
    "https://www.googleapis.com/auth/firebase.messaging",
    "https://www.googleapis.com/auth/cloud-platform",
}
MAX_GRANT_SECONDS = 3600  # Google refuses assertions valid for longer
CLOCK_SKEW = 300


@dataclass(frozen=True)
class TrustedKey:
    key_id: str
    public_key: rsa.RSAPublicKey


class GrantRefusedError(Exception):
    def __init__(self, error: str, description: str, status: int = 400):
        super().__init__(description)
        self.answer = (status, {"error": error, "error_description": description})


class TokenIssuer:
    """The token endpoint, and the access tokens it issued with their expiry."""

    def __init__(self, lifetime: float):
        self.lifetime = lifetime
        self.trusted: dict[str, TrustedKey] = {}  # client_email -> key
        self.issued: dict[str, float] = {}  # access token -> expiry (time.time())
        self.count = 0
        self.echoed: list[str] = []  # the assertions of the requests echo() quoted
        self.lock = threading.Lock()

    def trust(self, info: dict) -> None:
        """Accept grants signed with the private key of the service-account key *info*."""
        private = serialization.load_pem_private_key(info["private_key"].encode(), None)
        key = TrustedKey(str(info.get("private_key_id") or ""), private.public_key())
        with self.lock:
            self.trusted[info["client_email"]] = key

    def grant(self, content_type: str, body: bytes) -> tuple[int, dict]:
        """Answer one token request: (HTTP status, JSON body)."""
        try:
            if content_type != "application/x-www-form-urlencoded":
                raise GrantRefusedError("invalid_request", "Expected a form-encoded body.")
            pairs = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
            form = {key: values[0] for key, values in pairs.items()}
            if form.get("grant_type") != JWT_BEARER:
                raise GrantRefusedError(
                    "unsupported_grant_type", f"Invalid grant_type: {form.get('grant_type')}"
                )
            self._verify(form.get("assertion", ""))
        except GrantRefusedError as refused:
            return refused.answer
        return 200, self._issue()

    def echo(self, body: bytes) -> str:
        """The page of a proxy or firewall that blocked the token request *body*, quoting
        it: the signed assertion in it is a credential the client must never pass on."""
        text = body.decode("utf-8", errors="replace")
        with self.lock:
            self.echoed += parse_qs(text).get("assertion", [])
        return (
            "<!doctype html><html><head><title>Request blocked</title></head><body>"
            "<h1>Request blocked</h1><p>The request was blocked by the security policy.</p>"
            f"<pre>POST {TOKEN_PATH}\n{html.escape(text)}</pre></body></html>"
        )

    def valid(self, token: str) -> bool:
        """Whether *token* was issued here and has not expired."""
        with self.lock:
            expiry = self.issued.get(token)
        return expiry is not None and time.time() < expiry

    def _issue(self) -> dict:
        token = "ya29.sandbox-" + secrets.token_urlsafe(32)
        now = time.time()
        with self.lock:
            self.issued = {t: e for t, e in self.issued.items() if e > now}  # forget expired
            self.issued[token] = now + self.lifetime
            self.count += 1
        return {"access_token": token, "expires_in": self.lifetime, "token_type": "Bearer"}

    def _verify(self, assertion: str) -> None:
        header, claims, signed, signature = _split(assertion)
        if header.get("alg") != "RS256":
            raise GrantRefusedError("invalid_grant", "Invalid JWT: unsupported algorithm.")
        with self.lock:
            key = self.trusted.get(str(claims.get("iss")))
        if key is None:
            raise GrantRefusedError("invalid_grant", "Invalid grant: account not found")
        if header.get("kid") not in (None, key.key_id):
            raise GrantRefusedError("invalid_grant", "Invalid JWT Signature.")
        try:
            key.public_key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
        except InvalidSignature:
            raise GrantRefusedError("invalid_grant", "Invalid JWT Signature.") from None
        _check_claims(claims)


def _check_claims(claims: dict) -> None:
    if claims.get("aud") != GOOGLE_TOKEN_URI:
        raise GrantRefusedError(
            "invalid_grant", f"Invalid JWT: Failed audience check. Expected {GOOGLE_TOKEN_URI}"
        )
    now = time.time()
    issued, expires = claims.get("iat"), claims.get("exp")
    if (
        not isinstance(issued, (int, float))
        or not isinstance(expires, (int, float))
        or issued > now + CLOCK_SKEW
        or expires < now - CLOCK_SKEW
        or expires - issued > MAX_GRANT_SECONDS
    ):
        raise GrantRefusedError(
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
            "timeframe. Check your iat and exp values in the JWT claim.",
        )
    if not FCM_SCOPES & set(str(claims.get("scope") or "").split()):
        raise GrantRefusedError(
            "invalid_scope", "Invalid OAuth scope or ID token audience provided."
        )


def _split(assertion: str) -> tuple[dict, dict, bytes, bytes]:
    """A compact JWS: header and claims decoded, the signed bytes and the signature."""
    parts = assertion.split(".")
    if len(parts) != 3:
        raise GrantRefusedError("invalid_grant", "Invalid JWT: not a signed JWT.")
    try:
        header, claims = (json.loads(_unb64(part)) for part in parts[:2])
        signature = _unb64(parts[2])
    except (ValueError, binascii.Error):
        raise GrantRefusedError("invalid_grant", "Invalid JWT: cannot be decoded.") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise GrantRefusedError("invalid_grant", "Invalid JWT: cannot be decoded.")
    return header, claims, f"{parts[0]}.{parts[1]}".encode(), signature


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def new_key(token_uri: str, project_id: str = "demo-project") -> dict[str, Any]:
    """A new service-account key, shaped like those the Google Cloud console makes, whose
    ``token_uri`` is *token_uri* (the sandbox's own token endpoint)."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    email = f"campaign-sandbox@{project_id}.iam.gserviceaccount.com"
    return {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": email,
        "client_id": str(secrets.randbelow(10**21)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{email}",
        "universe_domain": "googleapis.com",
    }
