"""Unsubscribe links that cannot be forged, and the headers that carry them (RFC 8058).

Every marketing email carries ``List-Unsubscribe`` (RFC 2369) with an https link and/or a
``mailto:`` address, and, with the https link, ``List-Unsubscribe-Post:
List-Unsubscribe=One-Click`` (RFC 8058): Gmail and Yahoo then show an unsubscribe button that
POSTs to the link without opening it in a browser.

The link is ``[email_api] unsubscribe_url`` with ``{customer_id}``, ``{campaign}`` and
``{token}`` filled in. The token is an HMAC-SHA256, under a key only the sender and the web
endpoint hold, of the campaign and the customer id: anyone can read a link, nobody can make
one for another customer. The endpoint checks it with :func:`verify_unsubscribe_token`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import string
from urllib.parse import quote, unquote, urlsplit

from email_validator import EmailNotValidError, validate_email

from .exceptions import InvalidSecretError

PLACEHOLDERS = ("customer_id", "campaign", "token")
MIN_KEY_LENGTH = 32  # characters of the key: shorter random keys can be guessed
# RFC 2606 and 6761 names: a link there reaches nobody's unsubscribe endpoint
EXAMPLE_DOMAINS = ("example.com", "example.net", "example.org")
EXAMPLE_SUFFIXES = (".example", ".test", ".invalid", ".localhost", "localhost")


def unsubscribe_token(key: str | bytes, customer_id: str, campaign: str) -> str:
    """The token of *customer_id*'s link in *campaign*: 43 url-safe characters, the
    HMAC-SHA256 under *key* of ``<length of campaign>:<campaign>:<customer_id>`` (UTF-8).

    The length makes the text unambiguous: no other pair of values (an id holding the
    separator, say) signs the same text."""
    key = key.encode() if isinstance(key, str) else key
    return _signed(hmac.new(key, digestmod=hashlib.sha256), customer_id, campaign)


def _signed(keyed: hmac.HMAC, customer_id: str, campaign: str) -> str:
    """:func:`unsubscribe_token` with an HMAC already keyed (copied, never changed)."""
    mac = keyed.copy()
    mac.update(f"{len(campaign)}:{campaign}:{customer_id}".encode())
    return base64.urlsafe_b64encode(mac.digest())[:43].decode()


def verify_unsubscribe_token(key: str, customer_id: str, campaign: str, token: str) -> bool:
    """Whether *token* is the one this pipeline put in *customer_id*'s link for *campaign*:
    what the web endpoint behind ``unsubscribe_url`` checks before it unsubscribes anyone.
    The comparison takes the same time whatever the token, so it leaks nothing."""
    expected = unsubscribe_token(key, customer_id, campaign)
    return hmac.compare_digest(expected.encode(), str(token).encode())


def placeholders(template: str) -> list[str]:
    """The ``{name}`` fields of *template*; raises ValueError on a lone brace."""
    return [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]


class Unsubscribe:
    """The unsubscribe paths of one campaign's emails, as ``[email_api]`` configures them:
    *url* an https URL template, *mailto* an address or ``mailto:`` URI template, *key* the
    HMAC key when either uses ``{token}``."""

    def __init__(self, url: str = "", mailto: str = "", key: str = ""):
        self.url, self.mailto, self.key = url, mailto, key
        # keyed once: each token then copies it (hmac.digest would key it again, and
        # release the GIL for a few microseconds, which the sending threads pay for)
        self._keyed = hmac.new(key.encode(), digestmod=hashlib.sha256)
        try:
            self.needs_key = any("token" in placeholders(t) for t in (url, mailto) if t)
        except ValueError:
            self.needs_key = False  # problems() names the template
        # the links of the last customer asked for: a message's template and its headers
        # ask for the same customer one after the other (one tuple: threads may share it)
        self._last: tuple = ((), ("", ""))

    def problems(self) -> list[str]:
        """What is wrong with the configured paths, one line each, naming the key."""
        found = []
        for name, template in (("unsubscribe_url", self.url), ("unsubscribe_mailto", self.mailto)):
            if not template:
                continue
            if any(c.isspace() or not c.isprintable() for c in template):
                found.append(
                    f"[email_api] {name} = {template!r}: holds a space, a line break or a "
                    "control character; it is sent in the List-Unsubscribe header, one line"
                )
                continue
            try:
                fields = placeholders(template)
            except ValueError as exc:
                found.append(f"[email_api] {name} = {template!r}: {exc}")
                continue
            if unknown := sorted(set(fields) - set(PLACEHOLDERS) - {""}):
                found.append(
                    f"[email_api] {name}: unknown placeholder {{{unknown[0]}}}; the "
                    "placeholders are {customer_id}, {campaign} and {token}"
                )
        if self.url and not found:
            parts = urlsplit(self.url)
            if parts.scheme != "https" or not parts.hostname:
                found.append(
                    f"[email_api] unsubscribe_url = {self.url!r}: must be an https:// URL "
                    "(RFC 8058: one-click unsubscribe works over HTTPS only)"
                )
            missing = [p for p in PLACEHOLDERS if p not in placeholders(self.url)]
            if missing:
                found.append(
                    f"[email_api] unsubscribe_url lacks {', '.join('{' + m + '}' for m in missing)}"
                    ": the link must carry the customer, the campaign and the token that "
                    "signs both, or the endpoint cannot tell a real link from a forged one"
                )
        if self.mailto and not found:
            found += self._mailto_problems()
        return found

    def _mailto_problems(self) -> list[str]:
        if not (why := self._mailto_flaw()):
            return []
        return [
            f"[email_api] unsubscribe_mailto = {self.mailto!r}: not an email address ({why}); "
            "write one, e.g. unsubscribe@your-domain.com, or mailto:unsubscribe@your-domain.com"
            "?subject=unsubscribe-{customer_id}"
        ]

    def _mailto_flaw(self) -> str:
        """Why ``unsubscribe_mailto``, its placeholders filled in, is not an address or a
        ``mailto:`` URI of one, or "". It goes inside <...> in List-Unsubscribe, so no
        angle bracket or comma either."""
        try:
            sample = self.mailto.format(**{name: "x" for name in PLACEHOLDERS})
        except (IndexError, KeyError, ValueError) as exc:  # "{}": a placeholder without a name
            return f"cannot fill in a placeholder: {exc}"
        if any(c in "<>," for c in sample):
            return "it holds an angle bracket or a comma"
        address = unquote(sample.removeprefix("mailto:").partition("?")[0])
        try:
            validate_email(
                address, check_deliverability=False, globally_deliverable=False,
                test_environment=True,
            )  # fmt: skip
        except EmailNotValidError as exc:
            return str(exc)
        return ""

    def example_domain(self) -> str:
        """The reserved example domain a configured path points at, or ""."""
        hosts = [urlsplit(self.url).hostname or ""] if self.url else []
        if self.mailto:
            hosts.append(self.mailto.removeprefix("mailto:").split("?")[0].rpartition("@")[2])
        for host in (h.lower().rstrip(".") for h in hosts):
            if host.endswith(EXAMPLE_SUFFIXES) or any(
                host == d or host.endswith("." + d) for d in EXAMPLE_DOMAINS
            ):
                return host
        return ""

    def links(self, customer_id: str, campaign: str) -> tuple[str, str]:
        """(the https link, the mailto: URI) of one customer, "" for one not configured."""
        asked, found = self._last
        if asked == (customer_id, campaign):
            return found
        found = self._links(str(customer_id), campaign)
        self._last = ((customer_id, campaign), found)
        return found

    def _links(self, customer_id: str, campaign: str) -> tuple[str, str]:
        if not (self.url or self.mailto):
            return "", ""
        values = {"customer_id": quote(customer_id, safe=""), "campaign": quote(campaign)}
        if self.needs_key:
            values["token"] = _signed(self._keyed, customer_id, campaign)
        url = self.url.format(**values) if self.url else ""
        mailto = ""
        if self.mailto:
            mailto = self.mailto.format(**values)
            mailto = mailto if mailto.startswith("mailto:") else f"mailto:{mailto}"
        return url, mailto

    def headers(self, customer_id: str, campaign: str) -> dict[str, str]:
        """The RFC 2369/8058 headers of one customer's email; {} when none is configured."""
        url, mailto = self.links(customer_id, campaign)
        if not (url or mailto):
            return {}
        headers = {"List-Unsubscribe": ", ".join(f"<{link}>" for link in (url, mailto) if link)}
        if url:  # one-click needs the https link (RFC 8058 section 3.1)
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        return headers

    def link(self, customer_id: str, campaign: str) -> str:
        """What ``{{ unsubscribe_url }}`` shows in a template: the https link, else the
        mailto: URI, else ""."""
        url, mailto = self.links(customer_id, campaign)
        return url or mailto


def check_key(key: str, env_name: str) -> None:
    """Refuse a key too short to be secret, naming its variable (never its value)."""
    if len(key) < MIN_KEY_LENGTH:
        raise InvalidSecretError(
            f"environment variable {env_name} (named by [email_api] unsubscribe_key_env) has "
            f"{len(key)} characters; the unsubscribe key needs {MIN_KEY_LENGTH} or more random "
            "ones, e.g. python -c 'import secrets; print(secrets.token_hex(32))'"
        )
