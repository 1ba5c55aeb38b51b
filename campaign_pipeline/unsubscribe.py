"""Unsubscribe links that cannot be forged, and the headers that carry them (RFC 8058).

Every marketing email carries ``List-Unsubscribe`` (RFC 2369) with an https link and/or a
``mailto:`` address, and, with the https link, ``List-Unsubscribe-Post:
List-Unsubscribe=One-Click`` (RFC 8058): Gmail and Yahoo then show an unsubscribe button that
POSTs to the link without opening it in a browser.

The link is ``[email_api] unsubscribe_url`` with ``{customer_id}``, ``{campaign}``,
``{contact}`` (the address the email was sent to) and ``{token}`` filled in. The token is
``<key id>.<HMAC-SHA256>``, under a key only the sender and the web endpoint hold, of the
campaign, the customer id and the contact when the link carries it: anyone can read a link,
nobody can make one for another customer or address. The key id names the key that signed
it, so that a key can be rotated while the links already sent keep working: the endpoint
checks a token with :class:`UnsubscribeKeys` (the current key and the older ones still
listed) or :func:`verify_unsubscribe_token`. A token of an earlier version has no key id
(43 characters, no dot) and signs the campaign and the customer id alone; it is checked
against every key of the ring.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import string
from collections.abc import Mapping
from urllib.parse import quote, unquote, urlsplit

from email_validator import EmailNotValidError, validate_email

from .config import email_api, secret
from .exceptions import InvalidSecretError, SettingsError

PLACEHOLDERS = ("customer_id", "campaign", "contact", "token")
REQUIRED = ("customer_id", "campaign", "token")  # of unsubscribe_url
MIN_KEY_LENGTH = 32  # characters of the key: shorter random keys can be guessed
KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,16}")  # url-safe, and no dot: the token's separator
# The signed text of a token with a key id starts with this; one without starts with a digit
# (the campaign's length), so that no text is signed for both kinds.
_SIGNED = "unsubscribe-v2"
# RFC 2606 and 6761 names: a link there reaches nobody's unsubscribe endpoint
EXAMPLE_DOMAINS = ("example.com", "example.net", "example.org")
EXAMPLE_SUFFIXES = (".example", ".test", ".invalid", ".localhost", "localhost")


def unsubscribe_token(
    key: str | bytes, customer_id: str, campaign: str, contact: str = "", key_id: str = ""
) -> str:
    """The token of *customer_id*'s link in *campaign* (to *contact*, "" when the link does
    not carry it), signed by *key* whose id is *key_id*: ``<key_id>.<43 url-safe
    characters>``, the HMAC-SHA256 under *key* of ``unsubscribe-v2:<key_id>:<length of
    campaign>:<campaign>:<length of customer_id>:<customer_id>:<contact>`` (UTF-8).

    Without *key_id*, the token of the previous version: the HMAC of ``<length of
    campaign>:<campaign>:<customer_id>``, no contact. The lengths make the text unambiguous:
    no other values (an id holding the separator, say) sign the same text."""
    key = key.encode() if isinstance(key, str) else key
    return _signed(hmac.new(key, digestmod=hashlib.sha256), customer_id, campaign, contact, key_id)


def _signed(keyed: hmac.HMAC, customer_id: str, campaign: str, contact: str, key_id: str) -> str:
    """:func:`unsubscribe_token` with an HMAC already keyed (copied, never changed)."""
    mac = keyed.copy()
    if not key_id:
        mac.update(f"{len(campaign)}:{campaign}:{customer_id}".encode())
        return _text(mac)
    text = f"{_SIGNED}:{key_id}:{len(campaign)}:{campaign}:{len(customer_id)}:{customer_id}:"
    mac.update(f"{text}{contact}".encode())
    return f"{key_id}.{_text(mac)}"


def _text(mac: hmac.HMAC) -> str:
    return base64.urlsafe_b64encode(mac.digest())[:43].decode()


class UnsubscribeKeys:
    """The keys an unsubscribe endpoint accepts: the current one (*key*, whose id is
    *key_id*), which signs the links, and *older* ones (id -> key), still accepted while
    listed so that the links sent before a rotation keep working (CAN-SPAM: at least 30
    days after the last email they signed)."""

    def __init__(self, key: str, key_id: str, older: Mapping[str, str] | None = None):
        self.key_id = key_id
        self._keys = {**(older or {}), key_id: key}

    @classmethod
    def from_settings(cls, config=None) -> UnsubscribeKeys:
        """The keys ``[email_api]`` names (*config*, an :class:`~.config.email_api`; the
        luigi configuration's when None), read from their environment variables. Raises
        :class:`SettingsError` or a secret's error naming the key or the variable."""
        config = email_api() if config is None else config
        if problem := key_id_problem(config.unsubscribe_key_id):
            raise SettingsError(problem)
        older = {}
        for key_id, env_name in old_key_envs(config.unsubscribe_old_key_envs):
            older[key_id] = secret(env_name, "email_api", "unsubscribe_old_key_envs")
            check_key(older[key_id], env_name, "unsubscribe_old_key_envs")
        key = secret(config.unsubscribe_key_env, "email_api", "unsubscribe_key_env")
        check_key(key, config.unsubscribe_key_env)
        return cls(key, config.unsubscribe_key_id, older)

    def sign(self, customer_id: str, campaign: str, contact: str = "") -> str:
        """The token of a link, under the current key."""
        return unsubscribe_token(self._keys[self.key_id], customer_id, campaign, contact,
                                 self.key_id)  # fmt: skip

    def verify(self, customer_id: str, campaign: str, token: str, contact: str = "") -> bool:
        """Whether *token* is one this pipeline put in the link of *customer_id* for
        *campaign* (and to *contact*, when the link carries it), under a key of the ring.
        A token without a key id is checked against each key. The comparisons take the same
        time whatever the token, so they leak nothing."""
        token = str(token)
        key_id, dot, _ = token.partition(".")
        if not dot:  # a link of the previous version: the campaign and the customer alone
            return any(
                [
                    _same(unsubscribe_token(k, customer_id, campaign), token)
                    for k in self._keys.values()
                ]
            )
        key = self._keys.get(key_id)
        if key is None:
            return False
        return _same(unsubscribe_token(key, customer_id, campaign, contact, key_id), token)


def _same(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode())


def verify_unsubscribe_token(
    key: str | UnsubscribeKeys, customer_id: str, campaign: str, token: str, contact: str = ""
) -> bool:
    """Whether *token* is the one this pipeline put in *customer_id*'s link for *campaign*
    (to *contact*, as the link gives it, when it carries ``{contact}``): what the web
    endpoint behind ``unsubscribe_url`` checks before it unsubscribes anyone. *key* is the
    :class:`UnsubscribeKeys` of the endpoint, or one key, which then takes any key id."""
    if not isinstance(key, UnsubscribeKeys):  # one key: whatever id the token names
        key = UnsubscribeKeys(key, str(token).partition(".")[0])
    return key.verify(customer_id, campaign, token, contact)


def key_id_problem(key_id: str) -> str:
    """What is wrong with ``unsubscribe_key_id`` *key_id*, or ""."""
    if KEY_ID.fullmatch(key_id):
        return ""
    return (
        f"[email_api] unsubscribe_key_id = {key_id!r}: must be 1 to 16 of A-Z a-z 0-9 _ - "
        "(it is written in every unsubscribe token, before a dot)"
    )


def old_key_envs(text: str) -> list[tuple[str, str]]:
    """The (key id, variable name) pairs of ``unsubscribe_old_key_envs``: ``ID:VARIABLE``
    separated by commas, e.g. ``1:UNSUBSCRIBE_KEY_1, 0:UNSUBSCRIBE_KEY_0``. Raises
    :class:`SettingsError` naming the key."""
    found = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key_id, colon, env_name = (p.strip() for p in part.partition(":"))
        if not colon or not KEY_ID.fullmatch(key_id) or not re.fullmatch(r"\w+", env_name):
            raise SettingsError(
                f"[email_api] unsubscribe_old_key_envs: {part!r} is not ID:VARIABLE (a key id "
                "of 1 to 16 of A-Z a-z 0-9 _ -, a colon, the name of the variable holding that "
                "key), e.g. 1:UNSUBSCRIBE_KEY_1"
            )
        if key_id in (k for k, _ in found):
            raise SettingsError(f"[email_api] unsubscribe_old_key_envs: key id {key_id} twice")
        found.append((key_id, env_name))
    return found


def placeholders(template: str) -> list[str]:
    """The ``{name}`` fields of *template*; raises ValueError on a lone brace."""
    return [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]


class Unsubscribe:
    """The unsubscribe paths of one campaign's emails, as ``[email_api]`` configures them:
    *url* an https URL template, *mailto* an address or ``mailto:`` URI template, *key* the
    HMAC key when either uses ``{token}``."""

    def __init__(self, url: str = "", mailto: str = "", key: str = "", key_id: str = "1"):
        self.url, self.mailto, self.key, self.key_id = url, mailto, key, key_id
        # keyed once: each token then copies it (hmac.digest would key it again, and
        # release the GIL for a few microseconds, which the sending threads pay for)
        self._keyed = hmac.new(key.encode(), digestmod=hashlib.sha256)
        try:
            self._fields = {t: set(placeholders(t)) for t in (url, mailto) if t}
        except ValueError:
            self._fields = {}  # problems() names the template
        self.needs_key = any("token" in fields for fields in self._fields.values())
        # the links of the last customer asked for: a message's template and its headers
        # ask for the same customer one after the other (one tuple: threads may share it)
        self._last: tuple = ((), ("", ""))

    def fields(self, template: str) -> set[str]:
        """The placeholders of *template*, one of the configured ones."""
        return self._fields.get(template, set())

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
                    "placeholders are {customer_id}, {campaign}, {contact} and {token}"
                )
        if self.url and not found:
            parts = urlsplit(self.url)
            if parts.scheme != "https" or not parts.hostname:
                found.append(
                    f"[email_api] unsubscribe_url = {self.url!r}: must be an https:// URL "
                    "(RFC 8058: one-click unsubscribe works over HTTPS only)"
                )
            missing = [p for p in REQUIRED if p not in placeholders(self.url)]
            if missing:
                found.append(
                    f"[email_api] unsubscribe_url lacks {', '.join('{' + m + '}' for m in missing)}"
                    ": the link must carry the customer, the campaign and the token that "
                    "signs both, or the endpoint cannot tell a real link from a forged one"
                )
        if self.needs_key and (problem := key_id_problem(self.key_id)):
            found.append(problem)
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

    def links(self, customer_id: str, campaign: str, contact: str = "") -> tuple[str, str]:
        """(the https link, the mailto: URI) of one customer's email to *contact*, "" for
        one not configured."""
        asked, found = self._last
        if asked == (customer_id, campaign, contact):
            return found
        found = self._links(str(customer_id), campaign, contact)
        self._last = ((customer_id, campaign, contact), found)
        return found

    def _links(self, customer_id: str, campaign: str, contact: str) -> tuple[str, str]:
        if not (self.url or self.mailto):
            return "", ""
        values = {
            "customer_id": quote(customer_id, safe=""),
            "campaign": quote(campaign),
            "contact": quote(contact, safe="@"),
        }
        url, mailto = (self._filled(t, values, customer_id, campaign, contact)
                       for t in (self.url, self.mailto))  # fmt: skip
        if mailto and not mailto.startswith("mailto:"):
            mailto = f"mailto:{mailto}"
        return url, mailto

    def _filled(self, template: str, values: dict, customer_id: str, campaign: str,
                contact: str) -> str:  # fmt: skip
        """*template* filled in; its token signs the contact when it carries it."""
        if not template:
            return ""
        fields = self._fields[template]
        if "token" in fields:
            signed = contact if "contact" in fields else ""
            values = {**values, "token": _signed(self._keyed, customer_id, campaign, signed,
                                                 self.key_id)}  # fmt: skip
        return template.format(**values)

    def headers(self, customer_id: str, campaign: str, contact: str = "") -> dict[str, str]:
        """The RFC 2369/8058 headers of one customer's email; {} when none is configured."""
        url, mailto = self.links(customer_id, campaign, contact)
        if not (url or mailto):
            return {}
        headers = {"List-Unsubscribe": ", ".join(f"<{link}>" for link in (url, mailto) if link)}
        if url:  # one-click needs the https link (RFC 8058 section 3.1)
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        return headers

    def link(self, customer_id: str, campaign: str, contact: str = "") -> str:
        """What ``{{ unsubscribe_url }}`` shows in a template: the https link, else the
        mailto: URI, else ""."""
        url, mailto = self.links(customer_id, campaign, contact)
        return url or mailto


def check_key(key: str, env_name: str, setting: str = "unsubscribe_key_env") -> None:
    """Refuse a key too short to be secret, naming its variable (never its value)."""
    if len(key) < MIN_KEY_LENGTH:
        raise InvalidSecretError(
            f"environment variable {env_name} (named by [email_api] {setting}) has "
            f"{len(key)} characters; the unsubscribe key needs {MIN_KEY_LENGTH} or more random "
            "ones, e.g. python -c 'import secrets; print(secrets.token_hex(32))'"
        )
