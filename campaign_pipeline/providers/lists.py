"""A provider's own suppression lists, read before a channel sends.

Some providers keep lists of their own of who must not be messaged (SendGrid: bounces,
blocks, spam reports, invalid addresses, unsubscribes) and silently drop a message to them
after accepting it. A provider with such lists reads them in
:meth:`~campaign_pipeline.providers.Provider.suppression_lists` through a :class:`ListReader`,
and the channel task mirrors them in the consent store before it decides who is sent.

The reader sends one GET at a time and reads an error answer as the provider's error table
reads a send's (:meth:`Provider.interpret`), before anything is sent:

- refused credentials (401, 403), a wrong endpoint, a request the provider cannot take (a
  4xx) or an answer not in the provider's format stop the channel:
  :class:`ChannelStoppedError`, one line naming the keys to check;
- a server error, a timeout or a connection failure is transient:
  :class:`ListUnavailableError`, and luigi's retry reads the lists again;
- a 429 waits as the provider says (at most :data:`MAX_WAIT` seconds, :data:`MAX_TRIES`
  times) and asks again.

Every text it raises is masked by the *redact* function it is given.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import requests

from ..exceptions import ChannelStoppedError, ListUnavailableError
from ..transport import BAD_URL_ERRORS
from . import Kind, retry_after

if TYPE_CHECKING:
    from . import Provider

log = logging.getLogger("campaign_pipeline")
MAX_TRIES = 3  # answers 429 in a row before the list counts as unavailable
MAX_WAIT = 60.0  # seconds a 429 may make the reader wait
MAX_SECONDS = 600.0  # all lists of one channel, read within this time or not at all


@dataclass(frozen=True)
class Listed:
    """One entry of a provider's list: a contact (as the store compares it), the date it
    was listed (``YYYY-MM-DD``) and the provider's code for it, if any."""

    contact: str
    date: str
    code: str = ""


@dataclass(frozen=True)
class ProviderList:
    """A provider's list as read: *source* names it in a skipped recipient's reason
    (``suppressed: sendgrid bounces 2026-11-20``) and in the consent store. *complete* is
    False when the read may have missed an entry (the list changed while it was paged): its
    entries are then added to the store, and none the read did not see is removed."""

    source: str
    entries: tuple[Listed, ...]
    complete: bool = True


class ListReader:
    """Reads the pages of one provider's lists, for :meth:`Provider.suppression_lists`."""

    def __init__(
        self,
        provider: Provider,
        timeout: float,
        redact: Callable[[str], str],
        session: requests.Session | None = None,
        max_seconds: float = MAX_SECONDS,
    ):
        self.provider = provider
        self.timeout = timeout
        self.redact = redact
        self.session = session or requests.Session()
        self.deadline = time.monotonic() + max_seconds
        self.max_seconds = max_seconds
        self.requests = 0

    def get(self, what: str, url: str, params: dict | None, headers: dict, check: str = "") -> Any:
        """The JSON answer to ``GET url?params`` for the list *what* (its name in errors);
        *check* names the config keys to look at when the provider refuses the request."""
        for attempt in range(1, MAX_TRIES + 1):
            if time.monotonic() > self.deadline:
                raise ListUnavailableError(
                    f"{self._where(what)} took more than {self.max_seconds:g} s; nothing was sent"
                )
            response = self._send(what, url, params, headers)
            if response.status_code != 429 or attempt == MAX_TRIES:
                return self.read(what, response, check)
            wait = min(retry_after(response) or 1.0, MAX_WAIT)
            log.info("%s: rate limited (429); asking again in %.1f s", self._where(what), wait)
            time.sleep(wait)
        raise AssertionError("unreachable")  # the last attempt returned or raised

    def _send(self, what: str, url: str, params: dict | None, headers: dict) -> requests.Response:
        provider = self.provider
        try:
            self.requests += 1
            return self.session.get(url, params=params, headers=headers, timeout=self.timeout)
        except BAD_URL_ERRORS as exc:
            problem = f"bad base_url: {exc}; {provider.hint('base_url')}"
            raise ChannelStoppedError(self.redact(f"{problem} ({self._where(what)})")) from None
        except requests.RequestException as exc:
            problem = f"{type(exc).__name__}: {exc} ({self._where(what)}); nothing was sent"
            raise ListUnavailableError(self.redact(problem)) from None
        except Exception as exc:  # the request cannot even be made (a header it cannot carry)
            raise ChannelStoppedError(
                self.redact(
                    f"cannot send {provider.channel} requests ({type(exc).__name__}: {exc}; "
                    f"{self._where(what)}); nothing was sent: {provider.hint('')} and the "
                    f"other [{provider.section}] settings"
                )
            ) from None

    def read(self, what: str, response: requests.Response, check: str = "") -> Any:
        """The JSON of a 200 answer; for any other, the error it means, read as the
        provider's error table reads a send's answer (see the module)."""
        provider, status = self.provider, response.status_code
        if status == 200:
            try:
                return response.json()
            except ValueError:
                kind = response.headers.get("Content-Type") or "no Content-Type"
                raise ChannelStoppedError(
                    self.redact(
                        f"{provider.channel} provider answered 200 with a body that is not "
                        f"{provider.name}'s JSON ({kind}; {self._where(what)}); "
                        f"{provider.hint('base_url')}"
                    )
                ) from None
        outcome = provider.interpret(response)
        error = f"{outcome.error.rstrip('.')} ({self._where(what)})"
        if outcome.kind in (Kind.RETRY, Kind.RATE_LIMITED):
            raise ListUnavailableError(self.redact(f"{error}; nothing was sent"))
        if outcome.kind in (Kind.STOP, Kind.RENEW):
            if check and f"] {check}" not in error:  # say, a group that does not exist
                error += f"; or check [{provider.section}] {check}"
            if status == 403 and provider.sync_key:  # a key made for sending alone
                _, message = provider.error_of(response)
                error = (
                    f"{provider.channel} provider answered 403: {message.rstrip('.')}; "
                    f"{provider.hint('')} (the key needs read access to suppressions), or set "
                    f"[{provider.section}] {provider.sync_key} = false ({self._where(what)})"
                )
            raise ChannelStoppedError(self.redact(error))
        # a refusal of the request itself (a bad limit, a group that does not exist)
        raise ChannelStoppedError(self.redact(f"{error}; {provider.hint(check or 'base_url')}"))

    def _where(self, what: str) -> str:
        return f"reading {self.provider.name}'s {what} list before sending"
