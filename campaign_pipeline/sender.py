"""Sending one channel's pending recipients: rate-limited, concurrent, retried, ledgered.

For each recipient a sending thread takes a token from the channel's bucket, claims the
ledger row, sends, and records the answer. Nothing slow sits between the token and the
request, so a provider with the same bucket never sees a burst it did not allow; only a
last look at what a wait may have changed: a stop, the deadline, quiet hours. A 429
waits as the provider says and tries again without using up an attempt; a transient
failure goes to a delay queue so that the thread sends to others meanwhile.
"""

from __future__ import annotations

import base64
import contextlib
import heapq
import itertools
import json
import logging
import queue
import re
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields, replace
from typing import Protocol
from urllib.parse import quote, quote_plus

import requests
from urllib3.exceptions import ProtocolError

from .exceptions import (
    BucketLockedError,
    CampaignError,
    ChannelStoppedError,
    MessageError,
    NotSentError,
    PermanentError,
    SendingInterruptedError,
    TemplateError,
)
from .ledger import Ledger, Status
from .providers import Kind, Outcome, Provider, Request
from .ratelimit import BURST_MARGIN, Throttle, account_throttle  # noqa: F401 (sender.* names)
from .templates import MessageTemplate
from .transport import BAD_URL_ERRORS, Session

log = logging.getLogger("campaign_pipeline.sender")
# What ChannelSender.send_stats counts: requests sent again, and 429 answers.
SEND_STATS = ("retries", "rate_limited")

MAX_RATE_LIMITED_TRIES = 20
# The kinds of outcome that settle a ledger row for good, and the state each leaves it in;
# any other kind puts the row back to pending.
TERMINAL: dict[Kind, Status] = {
    Kind.SENT: Status.SENT,
    Kind.FAILED: Status.FAILED,
    Kind.UNKNOWN: Status.UNKNOWN,
}


@dataclass
class Settings:
    """The part of a provider section that shapes sending."""

    rate_per_second: float
    burst: int
    concurrency: int
    timeout_seconds: float
    retry_attempts: int
    retry_delay_seconds: float
    retry_unanswered: bool = False
    batch_size: int = 1

    @classmethod
    def from_config(cls, section) -> Settings:
        """Take the sending settings from a provider's ``luigi.Config`` section."""
        values = {f.name: getattr(section, f.name, f.default) for f in fields(cls)}
        return cls(**values)


def unanswered(exc: requests.RequestException) -> bool:
    """Whether the request left and no answer came: a read timeout, or the connection
    dropped while waiting. The provider may have taken the message. (A refused or timed-out
    connection sent nothing.)"""
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return True
    cause = exc.args[0] if exc.args else None
    return isinstance(exc, requests.ConnectionError) and isinstance(cause, ProtocolError)


def batched(rows: Iterable[dict], size: int) -> Iterator[list[dict]]:
    """Group *rows* into lists of at most *size*."""
    batch: list[dict] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class Admission(Protocol):
    """A rule every pending row passes just before it is sent (quiet hours, frequency cap).

    :meth:`admit` gets pending rows in file order, a page at a time, and returns those that
    may be sent now; it records what became of the others itself (skipped in the ledger
    with a reason, or left pending for later). :meth:`settle` hears how each admitted
    row's request ended (``sent``, ``failed``, ``unknown`` or back to ``pending``), so that
    whatever it reserved for a row can be confirmed or released.
    """

    def admit(self, rows: list[dict]) -> list[dict]: ...

    def settle(self, rows: list[dict], status: Status) -> None: ...


ADMISSION_PAGE = 1000  # pending rows an Admission sees at once


def admitted(rows: Iterable[dict], rules: list[Admission]) -> Iterator[dict]:
    """*rows* that pass every rule in *rules*, asked a page at a time, in order."""
    if not rules:
        yield from rows
        return
    page: list[dict] = []
    for row in itertools.chain(rows, [None]):
        if row is not None:
            page.append(row)
            if len(page) < ADMISSION_PAGE:
                continue
        for rule in rules:
            page = rule.admit(page) if page else page
        yield from page
        page = []


class _NoLongerAdmittedError(Exception):
    """Raised just before a request leaves when an admission rule no longer admits some of
    its rows (quiet hours began while it waited); those rows are deferred already, *rows*
    are the others, to be sent without them."""

    def __init__(self, rows: list[dict]):
        super().__init__(f"{len(rows)} row(s) still admitted")
        self.rows = rows


class _Holding:
    """The last admission rule of a sender: holds each admitted row until it is settled, so
    that rows never sent (the channel stopped) are settled too when the run ends."""

    def __init__(self, sender: ChannelSender):
        self.sender = sender

    def admit(self, rows: list[dict]) -> list[dict]:
        self.sender._hold(rows)
        return rows

    def settle(self, rows: list[dict], status: Status) -> None:
        """Nothing held elsewhere: the sender's own bookkeeping."""


# Credentials made from a secret that no list holds, as a proxy's page may echo them: a
# signed JWT (a service account's grant), with or without its signature, whose first segment
# is base64url JSON (so it starts "eyJ" or "eyA"), and the value of a form's assertion=.
JWT_SHAPE = re.compile(r"ey[JA][A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]*)*")
ASSERTION = re.compile(r"(assertion=)[^&\s\"'<>]+", re.IGNORECASE)


def _masked_jwt(found: re.Match) -> str:
    """A JWT-shaped match masked when its header is JSON, as a JWT's is; kept otherwise (an
    address such as keyJones1.smith@...), the rest of it searched again."""
    header, _, rest = found.group(0).partition(".")
    with contextlib.suppress(ValueError):  # binascii.Error and UnicodeDecodeError too
        decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
        if isinstance(decoded, dict):
            return "***"
    return f"{header}.{JWT_SHAPE.sub(_masked_jwt, rest)}"


def redactor(secrets: list[str]) -> Callable[[str], str]:
    """Return a function that masks every secret in a text, in each form it can take there:
    as it is, escaped (as a ``repr`` shows it), URL-encoded, and any two of them as HTTP
    Basic auth carries them (Base64 of ``user:password``); and every signed JWT and
    ``assertion=`` value, whoever made them."""
    values = [s for s in secrets if s]
    forms = set()
    for value in values:
        forms |= {
            value,
            value.encode("unicode_escape").decode("ascii"),
            repr(value)[1:-1],
            repr(value.encode())[2:-1],
            quote(value, safe=""),
            quote_plus(value),
        }
    for user, password in itertools.permutations(values, 2):
        for encoding in ("latin-1", "utf-8"):  # requests uses Latin-1
            with contextlib.suppress(UnicodeEncodeError):
                forms.add(base64.b64encode(f"{user}:{password}".encode(encoding)).decode())
    longest_first = sorted(forms, key=len, reverse=True)  # no form leaves part of a longer one

    def redact(text: str) -> str:
        for form in longest_first:
            text = text.replace(form, "***")
        return ASSERTION.sub(r"\1***", JWT_SHAPE.sub(_masked_jwt, text))

    return redact


class ChannelSender:
    """Sends every pending ledger row of one channel through one provider."""

    def __init__(
        self,
        provider: Provider,
        template: MessageTemplate,
        ledger: Ledger,
        settings: Settings,
        on_refused: Callable[[dict, Outcome], None] | None = None,
        admission: list[Admission] | None = None,
        max_wait: float | None = None,
    ):
        self.provider = provider
        # seconds the channel may wait, in all, for quiet hours' windows to open (None: as
        # long as it takes); rows whose window opens later stay deferred (see gave_up_waiting)
        self.max_wait = max_wait
        self.gave_up_waiting = False
        self._wait_ends: float | None = None  # by time.monotonic, set when run() starts
        # asked before each row is sent, told how it ended (quiet hours, frequency cap)
        self.admission = admission or []
        # called with a row and the answer when the provider refused its contact for good
        # (an outcome marked suppress): the task remembers it in the consent store
        self.on_refused = on_refused
        self.template = template
        self.ledger = ledger
        self.settings = settings
        self._masking: tuple[tuple[str, ...], Callable[[str], str]] = ((), redactor([]))
        self._stopped = threading.Event()
        self.throttle = account_throttle(
            provider, settings.rate_per_second, settings.burst, stopped=self._stopped
        )
        self.counts: Counter = Counter()
        # requests sent again and 429 answers (SEND_STATS), for the report
        self._stats: Counter = Counter()
        self.stop_reason = ""
        self._stop_error: type[CampaignError] = ChannelStoppedError
        self.last_transient_error = ""
        self._work: queue.Queue = queue.Queue(maxsize=settings.concurrency * 2)
        self._delayed: list[tuple[float, int, dict]] = []
        self._last_window: float | None = None  # the last window deferred rows were sent at
        self._active = 0
        self._changed = threading.Condition()
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._held: dict[str, dict] = {}  # admitted rows not yet settled, by customer id

    def redact(self, text: str) -> str:
        """*text* with every credential masked, those minted while sending included."""
        values = tuple(self.provider.masked())
        if values != self._masking[0]:
            self._masking = (values, redactor(list(values)))
        return self._masking[1](text)

    # -- the dispatcher (the task's thread) ------------------------------------------------

    def run(self) -> Counter:
        """Send until no pending row is left or the channel is stopped; return the counts."""
        threads = [
            threading.Thread(target=self._worker, name=f"{self.provider.channel}-{n}", daemon=True)
            for n in range(self.settings.concurrency)
        ]
        for thread in threads:
            thread.start()
        self._wait_ends = None if self.max_wait is None else time.monotonic() + self.max_wait
        try:
            self._dispatch(self.ledger.pending())
            while (due := self._wait_for_window()) is not None:
                self._dispatch(due)
        finally:
            for _ in threads:
                self._work.put(None)
            for thread in threads:
                thread.join()
            for session in self._sessions:
                session.close()
            # admitted, and still pending: retries used up, the channel stopped, or never
            # handed out (the rest of an admitted page when the channel stopped)
            self._settle(list(self._held.values()), Status.PENDING)
        if self.stop_reason:
            raise self._stop_error(self.stop_reason)
        return self.counts

    def _dispatch(self, rows: Iterable[dict]) -> None:
        """Hand *rows* that pass the admission rules to the sending threads; wait until
        every request is answered (retries included)."""
        rules = [*self.admission, _Holding(self)] if self.admission else []
        for batch in batched(admitted(rows, rules), self.settings.batch_size):
            if self._stopped.is_set():
                break
            self._release_due()
            if batch := self._recheck(batch):
                self._submit({"rows": batch, "tries": 0})
        self._drain()

    def _recheck(self, rows: list[dict]) -> list[dict]:
        """*rows* that the rules which can change their mind (quiet hours: a window may
        close while a page is sent) still admit; what the other rules reserved for the
        rows dropped is released."""
        for rule in self.admission:
            recheck = getattr(rule, "recheck", None)
            if recheck is None or not rows:
                continue
            kept = recheck(rows)
            if len(kept) < len(rows):
                ids = {id(row) for row in kept}
                self._settle([row for row in rows if id(row) not in ids], Status.PENDING)
            rows = kept
        return rows

    def _wait_for_window(self) -> Iterator[dict] | None:
        """Wait for the next window of deferred rows to open (quiet hours) and return the
        rows it lets through, in the order the windows open; None when no row is deferred,
        the channel is stopped, or the next window opens after ``max_wait`` (counted from the
        start of :meth:`run`): those rows stay deferred. The wait ends at once on stop()."""
        rules = [rule for rule in self.admission if hasattr(rule, "next_open")]
        while rules and not self._stopped.is_set():
            # (when, now) by each rule's own clock, which its deferrals were decided by
            opens = [
                (moment, rule.clock()) for rule in rules if (moment := rule.next_open()) is not None
            ]
            if not opens:
                return None
            moment, now = min(opens)
            wait = moment - now
            if wait <= 0 and moment == self._last_window:
                self._last_window = None  # deferred again to the same moment: never spin
                self._stopped.wait(1.0)
            elif wait <= 0:
                self._last_window = moment
                return itertools.chain.from_iterable(rule.due() for rule in rules)
            elif self._wait_ends is not None and time.monotonic() + wait > self._wait_ends:
                self.gave_up_waiting = True  # waiting cannot reach the window: stop now
                return None
            else:
                self._stopped.wait(min(wait, 60.0))  # a clock set forward is seen in a minute
        return None

    def deferred(self) -> tuple[int, float | None, str]:
        """(rows deferred, when the next window opens, that moment in the recipients' zone),
        from the rules that defer (quiet hours); (0, None, "") when none is."""
        found = [rule.waiting() for rule in self.admission if hasattr(rule, "waiting")]
        found = [f for f in found if f[0]]
        if not found:
            return 0, None, ""
        first = min(found, key=lambda f: f[1] if f[1] is not None else float("inf"))
        return sum(f[0] for f in found), first[1], first[2]

    def _submit(self, item: dict) -> None:
        with self._changed:
            self._active += 1
        self._work.put(item)

    def _release_due(self) -> None:
        now = time.monotonic()
        due = []
        with self._changed:
            while self._delayed and self._delayed[0][0] <= now:
                due.append(heapq.heappop(self._delayed)[2])
        for item in due:  # a retry may come after a window has closed
            item["rows"] = self._recheck(item["rows"])
            if item["rows"]:
                self._submit(item)

    def _drain(self) -> None:
        while not self._stopped.is_set():
            with self._changed:
                if not self._delayed and self._active == 0:
                    return
                wait = self._delayed[0][0] - time.monotonic() if self._delayed else None
                if wait is None or wait > 0:
                    self._changed.wait(wait)
            self._release_due()

    # -- the sending threads ---------------------------------------------------------------

    def _worker(self) -> None:
        while (item := self._work.get()) is not None:
            try:
                if not self._stopped.is_set():
                    self._deliver(item)
            except Exception as exc:  # a bug must stop the channel, not hang it
                self._stop(self._unexpected("internal error", exc), SendingInterruptedError)
            finally:
                with self._changed:
                    self._active -= 1
                    self._changed.notify_all()

    def _deliver(self, item: dict) -> None:
        """Send one work item: one recipient, or a batch of them (email)."""
        singles = self._together(self._build(item["rows"]), item["tries"])
        if not singles:
            return
        # a retry of a transient failure is a request sent again; so is every request after
        # the first of this item (a 429 waited out, renewed credentials): see _send_once
        self._local.again = item["tries"] > 0
        rows = [row for row, _ in singles]
        request = self.provider.combine([request for _, request in singles])
        try:
            outcome = self._send_admitted(rows, request)
            if outcome.kind == Kind.RENEW:
                outcome = self._renewed(rows, request, outcome)
        except _NoLongerAdmittedError as held:  # nothing left; the rows dropped are deferred
            if held.rows:  # the rest of a batch goes without them
                self._schedule({"rows": held.rows, "tries": item["tries"]})
            return
        if outcome.kind == Kind.RATE_LIMITED:
            outcome = Outcome(Kind.RETRY, error=outcome.error, retry_after=outcome.retry_after)
        if outcome.kind == Kind.FAILED and len(rows) > 1:
            self._split(rows, item["tries"], outcome)
            return
        if outcome.kind == Kind.RETRY:
            self._retry_later({"rows": rows, "tries": item["tries"]}, outcome)
        elif outcome.kind == Kind.STOP:
            self._stop(outcome.error)
        self._count(outcome.kind, len(rows))

    def _build(self, rows: list[dict]) -> list[tuple[dict, Request]]:
        """Render and build each row's own request; fail, unsent, the rows that cannot be.

        A MessageError is that customer's data meeting the template (the template proved
        at start that it compiles, knows every variable and renders for real customers),
        so it fails that recipient alone; see :meth:`MessageTemplate.render`. A
        TemplateError (an included file gone since) fails everyone alike: it stops the
        channel, every unsent recipient left pending for the fixed rerun."""
        built = []
        for row in rows:
            try:
                request = self.provider.build(self.template, row["recipient"], row["context"])
                built.append((row, request))
            except TemplateError as exc:
                self._stop(self.redact(str(exc)))
                return []
            except MessageError as exc:
                self.ledger.fail_pending(row["customer_id"], self.redact(f"not sent: {exc}"))
                self._settle([row], Status.FAILED)
                self._count(Kind.FAILED)
        return built

    def _together(self, singles: list[tuple[dict, Request]], tries: int) -> list:
        """Keep the requests that can travel with the first; send the others on their own."""
        if len(singles) < 2:
            return singles
        kept = {id(k) for k in self.provider.with_first([request for _, request in singles])}
        together = []
        for row, request in singles:  # by identity: two requests may be equal
            if id(request) in kept:
                together.append((row, request))
            else:
                self._schedule({"rows": [row], "tries": tries})
        return together

    def _split(self, rows: list[dict], tries: int, outcome: Outcome) -> None:
        """A batch was refused as a whole for some of its recipients: nothing of it was
        taken. Fail each recipient the provider named, with its own errors, and send the
        others again; without a name, halve the batch until each bad recipient stands alone."""
        named = {b.index: b for b in outcome.blamed if 0 <= b.index < len(rows)}
        if named:
            for index, blame in named.items():
                bad = rows[index]
                self.ledger.fail_pending(bad["customer_id"], blame.error)
                self._settle([bad], Status.FAILED)
                self._refused(bad, outcome.of(blame))
                self._count(Kind.FAILED)
            parts = [[row for index, row in enumerate(rows) if index not in named]]
        else:
            half = len(rows) // 2
            parts = [rows[:half], rows[half:]]
        for part in parts:
            if part:
                self._schedule({"rows": part, "tries": tries})

    def _renewed(self, rows: list[dict], request: Request, refused: Outcome) -> Outcome:
        """The provider refused the credentials as expired: renew them and send once more.
        A second refusal, or credentials that cannot be renewed, stop the channel."""
        try:
            renewed = self.provider.renew()
        except CampaignError as exc:
            return self._no_credentials(exc)
        if renewed:
            log.info(
                "%s: the provider refused the access token; sending with a new one",
                self.provider.channel,
            )
            outcome = self._send_admitted(rows, request)
            if outcome.kind != Kind.RENEW:
                return outcome
            refused = replace(outcome, error=f"{outcome.error} (also with a new access token)")
        return replace(refused, kind=Kind.STOP)

    def _no_credentials(self, exc: CampaignError) -> Outcome:
        """No credentials to send with: a refusal stops the channel, anything else is
        transient. Nothing was claimed, so the recipients stay pending either way."""
        kind = Kind.STOP if isinstance(exc, PermanentError) else Kind.RETRY
        return Outcome(kind, error=self.redact(str(exc)))

    def _send_admitted(self, rows: list[dict], request: Request) -> Outcome:
        """Send, and after a 429 wait as the provider says (Retry-After, up to 300 s) and
        send again, :data:`MAX_RATE_LIMITED_TRIES` times at most. A stop (SIGTERM, the
        deadline) ends the wait at once: the next try then sends nothing."""
        for tries in range(1, MAX_RATE_LIMITED_TRIES + 1):
            outcome = self._send_once(rows, request)
            if outcome.kind != Kind.RATE_LIMITED or tries == MAX_RATE_LIMITED_TRIES:
                return outcome
            wait = outcome.retry_after if outcome.retry_after is not None else 1.0
            log.info(
                "%s: provider rate limit (429); waiting %.1fs before sending again",
                self.provider.channel,
                wait,
            )
            self._stopped.wait(wait)
        return outcome

    def _send_once(self, rows: list[dict], request: Request) -> Outcome:
        if self._stopped.is_set():
            return Outcome(Kind.STOP, error=self.stop_reason)
        ids = [row["customer_id"] for row in rows]
        session = self._session()
        try:  # before the claim: what fails here fails alike for every request
            prepared = request.prepare(session)
        except Exception as exc:
            return Outcome(Kind.STOP, error=self._unsendable(exc))
        try:
            self.throttle.take()
        except BucketLockedError as exc:  # a frozen process holds the bucket, or stopped
            self._stop(str(exc), BucketLockedError)
            return Outcome(Kind.STOP, error=self.stop_reason)
        try:  # after the wait for the rate limit, which may outlast an access token
            prepared = request.authorize(prepared)
        except CampaignError as exc:
            return self._no_credentials(exc)
        except Exception as exc:
            return Outcome(Kind.STOP, error=self._unsendable(exc))
        # the waits above (a token, a 429, new credentials) may have outlasted a stop, the
        # deadline or the window: ask again just before the request leaves
        if self._stopped.is_set():
            return Outcome(Kind.STOP, error=self.stop_reason)
        if len(kept := self._recheck(rows)) < len(rows):
            raise _NoLongerAdmittedError(kept)
        if not self.ledger.claim(ids):
            raise RuntimeError(f"ledger rows {ids[:3]}... were not pending; not sent")
        if getattr(self._local, "again", False):
            self._note("retries")
        self._local.again = True
        outcome = self._post(session, prepared)
        if outcome.kind == Kind.RATE_LIMITED:
            self._note("rate_limited")
        if outcome.kind == Kind.FAILED and len(ids) > 1:
            status = Status.PENDING  # refused as a whole: nobody in it got the message
        else:
            status = TERMINAL.get(outcome.kind, Status.PENDING)
        self.ledger.finish(ids, status, outcome.message_id, outcome.error)
        if status != Status.PENDING:  # pending rows are sent again, or settled at the end
            self._settle(rows, status)
        if status == Status.FAILED:
            self._refused(rows[0], outcome)
        return outcome

    def _refused(self, row: dict, outcome: Outcome) -> None:
        """Tell the task about a contact the provider refused for good."""
        if outcome.suppress and self.on_refused is not None:
            self.on_refused(row, outcome)

    def _post(self, session: Session, prepared: requests.PreparedRequest) -> Outcome:
        """Send one claimed request and say what became of it; its error text is masked
        here, once, for the ledger, the logs and every message built from it."""
        try:
            response = session.transmit(prepared, timeout=self.settings.timeout_seconds)
        except NotSentError as exc:
            return Outcome(Kind.STOP, error=self._unsendable(exc.__cause__))
        except BAD_URL_ERRORS as exc:
            error = f"bad base_url: {exc}; check [{self.provider.section}] base_url"
            return Outcome(Kind.STOP, error=self.redact(error))
        except requests.RequestException as exc:
            unsure = unanswered(exc) and not self.settings.retry_unanswered
            kind = Kind.UNKNOWN if unsure else Kind.RETRY
            return Outcome(kind, error=self.redact(f"{type(exc).__name__}: {exc}"))
        except Exception as exc:  # after the first byte left: it may have been delivered
            return self._unsure(self._unexpected("unexpected error while sending", exc))
        try:
            outcome = self.provider.interpret(response)
        except Exception as exc:  # the provider answered: it may have taken the message
            what = f"cannot read the answer {response.status_code}"
            return self._unsure(self._unexpected(what, exc))
        return outcome.masked(self.redact)

    def _unsendable(self, exc: BaseException) -> str:
        """The stop reason for a request that cannot be sent at all: nothing left."""
        section = self.provider.section
        return self.redact(
            f"cannot send {self.provider.channel} requests ({type(exc).__name__}: {exc}); "
            f"nothing was sent: {self.provider.hint('')} and the other [{section}] settings"
        )

    def _unsure(self, reason: str) -> Outcome:
        """Record the request unknown (the provider may have it) and stop the channel: an
        error that is not the provider's answer would likely meet every request."""
        self._stop(reason, SendingInterruptedError)
        return Outcome(Kind.UNKNOWN, error=reason)

    def _unexpected(self, what: str, exc: Exception) -> str:
        """Log an unexpected error with its traceback, masked; return it as one line."""
        trace = "".join(traceback.format_exception(exc))
        log.error("%s: %s\n%s", self.provider.channel, what, self.redact(trace))
        return self.redact(f"{what}: {type(exc).__name__}: {exc}")

    def _session(self) -> Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = Session()
            with self._changed:
                self._sessions.append(session)
        return session

    def _retry_later(self, item: dict, outcome: Outcome) -> None:
        self.last_transient_error = outcome.error
        item["tries"] += 1
        if item["tries"] >= self.settings.retry_attempts:
            self._count("exhausted", len(item["rows"]))
            self._settle(item["rows"], Status.PENDING)
            return
        self._schedule(item, max(self.settings.retry_delay_seconds, outcome.retry_after or 0.0))

    def _schedule(self, item: dict, delay: float = 0.0) -> None:
        """Queue *item* for the dispatcher to hand out again; a sending thread must not put
        to the bounded work queue itself, or all of them could block on it at once."""
        with self._changed:
            heapq.heappush(self._delayed, (time.monotonic() + delay, id(item), item))
            self._changed.notify_all()

    def _stop(self, reason: str, error: type[CampaignError] = ChannelStoppedError) -> None:
        with self._changed:
            if not self.stop_reason:
                self.stop_reason, self._stop_error = reason, error
            self._stopped.set()
            self._changed.notify_all()

    def _count(self, kind: str, recipients: int = 1) -> None:
        with self._changed:
            self.counts[kind] += recipients

    def _note(self, stat: str) -> None:
        with self._changed:
            self._stats[stat] += 1

    def send_stats(self) -> dict[str, int]:
        """This run's requests sent again (``retries``: a transient failure retried, a 429
        waited out, renewed credentials) and 429 answers (``rate_limited``)."""
        with self._changed:
            return {key: self._stats[key] for key in SEND_STATS}

    def _hold(self, rows: list[dict]) -> None:
        with self._changed:
            for row in rows:
                self._held[row["customer_id"]] = row

    def _settle(self, rows: list[dict], status: Status) -> None:
        """Tell the admission rules how the requests of *rows* ended for good (sent, failed,
        unknown, or left pending by this run)."""
        if not self.admission:
            return
        with self._changed:
            rows = [row for row in rows if self._held.pop(row["customer_id"], None) is not None]
        if rows:
            for rule in self.admission:
                rule.settle(rows, status)

    def snapshot(self) -> Counter:
        """The outcomes so far in this run, by kind (sent, failed, retry, ...)."""
        with self._changed:
            return Counter(self.counts)

    def stop(self, reason: str) -> None:
        """Send nothing more; requests already in flight finish and are recorded."""
        self._stop(reason, SendingInterruptedError)
