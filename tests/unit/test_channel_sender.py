"""The sender against a provider of the test's own: a small Provider subclass sending to a
real HTTP server on 127.0.0.1 whose answers each test scripts. Threads, the delay queue,
429 waits, a stop, renewed credentials, unanswered requests and refused batches; retry
delays and timeouts are small, never patched out."""

from __future__ import annotations

import datetime
import itertools
import json
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import luigi
import pytest
import requests

from campaign_pipeline.consent.quiet import QuietHours, demo_window, parse_window
from campaign_pipeline.exceptions import ChannelStoppedError, SendingInterruptedError
from campaign_pipeline.ledger import FAILED as FAILED_ROW
from campaign_pipeline.ledger import PENDING, Ledger
from campaign_pipeline.ledger import SENT as SENT_ROW
from campaign_pipeline.ledger import UNKNOWN as UNKNOWN_ROW
from campaign_pipeline.providers import Blame, Outcome, Provider, Request, json_body
from campaign_pipeline.providers.errors import FAILED, RENEW, RETRY, SENT, STOP, UNKNOWN
from campaign_pipeline.sender import ChannelSender, Settings
from campaign_pipeline.templates import MessageTemplate

TOKEN_ENV = "UNIT_FAKE_TOKEN"
UNAVAILABLE = (503, {"error": {"code": "UNAVAILABLE", "message": "try later"}}, {})
NO_ANSWER = (0, {}, {})  # the server reads the request and answers nothing


# -- the provider's side: a server on 127.0.0.1 answering as the test says ----------------------


@dataclass
class Seen:
    recipients: tuple[str, ...]
    token: str
    at: float  # time.monotonic() when the request arrived

    @property
    def recipient(self) -> str:
        return " ".join(self.recipients)


class ScriptedServer:
    """Answers each recipient's requests from its script, in order, then 200 with an id;
    refuses the tokens :attr:`refused` picks with 401 ``EXPIRED``, and a batch holding one of
    the :attr:`bad` recipients with 400 (naming its index if :attr:`blame`). Records every
    request."""

    def __init__(self) -> None:
        self.script: dict[str, list[tuple[int, dict, dict]]] = {}
        self.forever: dict[str, tuple[int, dict, dict]] = {}
        self.refused = lambda _token: False
        self.bad: set[str] = set()
        self.blame = True
        self.released = threading.Event()  # requests given NO_ANSWER wait for it
        self.arrived = lambda _recipients: None  # called as each request arrives
        self.seen: list[Seen] = []
        self.in_flight = self.most_in_flight = 0
        self.barrier: threading.Barrier | None = None
        self.barrier_broken = False
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.scripted = self
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.005}
        )

    def answer(self, recipient: str, *answers: tuple[int, dict, dict]) -> None:
        self.script.setdefault(recipient, []).extend(answers)

    def hold_first(self, requests: int) -> None:
        """Hold the first *requests* requests until that many are in flight at once."""
        self.barrier = threading.Barrier(requests, timeout=5)

    def requests_for(self, recipient: str) -> list[Seen]:
        return [seen for seen in self.seen if recipient in seen.recipients]

    def take(self, recipients: list[str], token: str) -> tuple[tuple[int, dict, dict], bool]:
        """The answer to one request, and whether to hold it at the barrier."""
        self.arrived(tuple(recipients))
        with self._lock:
            self.seen.append(Seen(tuple(recipients), token, time.monotonic()))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            hold = self.barrier is not None and len(self.seen) <= self.barrier.parties
            if self.refused(token):
                return (401, {"error": {"code": "EXPIRED", "message": "token expired"}}, {}), hold
            if bad := [n for n, recipient in enumerate(recipients) if recipient in self.bad]:
                error = {"code": "BAD_ADDRESS", "message": f"{recipients[bad[0]]} is not valid"}
                if self.blame and len(recipients) > 1:
                    error["index"] = bad[0]
                return (400, {"error": error}, {}), hold
            recipient = recipients[0] if len(recipients) == 1 else None  # scripts: singles
            if self.script.get(recipient):
                return self.script[recipient].pop(0), hold
            if recipient in self.forever:
                return self.forever[recipient], hold
            return (200, {"id": f"msg-{len(self.seen)}"}, {}), hold

    def done(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.released.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a provider's API

    def do_POST(self) -> None:
        scripted: ScriptedServer = self.server.scripted
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        (status, answer, headers), hold = scripted.take(body["to"], token)
        try:
            if status == NO_ANSWER[0]:
                scripted.released.wait()
                self.close_connection = True
                return
            if hold:
                try:
                    scripted.barrier.wait()
                except threading.BrokenBarrierError:
                    scripted.barrier_broken = True
            data = json.dumps(answer).encode()
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        finally:
            scripted.done()

    def log_message(self, format, *args) -> None:
        pass


# -- the client's side: a provider of the test's own ---------------------------------------------


class Tokens(requests.auth.AuthBase):
    """Access tokens that can be renewed, applied as the request leaves."""

    def __init__(self, first: str):
        self.minted = [first]

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.minted[-1]}"
        return request

    def renew(self) -> None:
        self.minted.append("renewed-" + secrets.token_hex(8))


class FakeProvider(Provider):
    """JSON ``{"to": [...], "text": [...]}`` in; ``{"id"}`` or ``{"error": {"code", "message",
    "index"}}`` out. The error table has no row for it, so an error means what its HTTP status
    says, except that ``EXPIRED`` asks for new credentials. With *batches*, any requests
    travel together."""

    channel = "fake"
    section = "fake_api"
    name = "Fake"
    contact_field = "phone"

    def __init__(self, base_url: str, renewable: bool = False, batches: bool = False):
        super().__init__(base_url)
        self.token = self.secret(TOKEN_ENV, self.section, "token_env", "")
        self.tokens = Tokens(self.token) if renewable else None
        self.batches = batches

    def request(self, recipient: str, parts: dict[str, str], _context: dict[str, str]) -> Request:
        body = {"to": [recipient], "text": [parts["body.txt"]]}
        url = f"{self.base_url}/send"
        if self.tokens is not None:
            return Request(url=url, headers={}, json=body, fresh_auth=self.tokens)
        return Request(url=url, headers={"Authorization": f"Bearer {self.token}"}, json=body)

    def batch_key(self, _request: Request) -> object | None:
        return "all" if self.batches else None

    def combine(self, requests: list[Request]) -> Request:
        body = {key: [v for r in requests for v in r.json[key]] for key in ("to", "text")}
        return replace(requests[0], json=body)

    def blamed(self, response: requests.Response) -> list[Blame]:
        error = json_body(response).get("error") or {}
        return [Blame(error["index"], error["message"])] if "index" in error else []

    def renew(self) -> bool:
        if self.tokens is None:
            return False
        self.tokens.renew()
        return True

    def masked(self) -> list[str]:
        return [*super().masked(), *(self.tokens.minted if self.tokens else [])]

    def interpret(self, response: requests.Response) -> Outcome:
        outcome = super().interpret(response)
        if outcome.kind == STOP and self.error_of(response)[0] == "EXPIRED":
            return replace(outcome, kind=RENEW)
        return outcome

    def speaks(self, response: requests.Response) -> bool:
        return isinstance(json_body(response).get("error"), dict)

    def message_id(self, response: requests.Response) -> str:
        return str(json_body(response).get("id", ""))

    def error_of(self, response: requests.Response) -> tuple[str, str]:
        error = json_body(response).get("error") or {}
        return str(error.get("code", "")), str(error.get("message", ""))


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def server():
    with ScriptedServer() as started:
        yield started


@pytest.fixture
def token(monkeypatch, tmp_path) -> str:
    """The fake provider's credential; the token buckets in this test's own folder."""
    value = "fake-" + secrets.token_hex(16)
    monkeypatch.setenv(TOKEN_ENV, value)
    config = luigi.configuration.get_config()
    before = config.get("rate_limits", "bucket_dir", "")
    config.set("rate_limits", "bucket_dir", str(tmp_path / "buckets"))
    yield value
    config.set("rate_limits", "bucket_dir", before)


@pytest.fixture
def ledger(tmp_path):
    opened = Ledger(str(tmp_path / "fake_ledger.sqlite"))
    yield opened
    opened.close()


def customers(ledger: Ledger, count: int, points: dict[str, int] | None = None) -> None:
    """Recipients r0, r1, ... each with 10 points unless *points* says otherwise."""
    rows = [
        {
            "customer_id": f"C{n}",
            "targeted": True,
            "segment": "new",
            "recipient": f"r{n}",
            "status": PENDING,
            "context": {"first_name": f"Name{n}", "points": (points or {}).get(f"r{n}", 10)},
        }
        for n in range(count)
    ]
    ledger.follow(rows, "v1")


def sender_for(
    tmp_path,
    provider: Provider,
    ledger: Ledger,
    admission: list | None = None,
    max_wait: float | None = None,
    **settings,
) -> ChannelSender:
    """A sender of the ledger's pending rows (through the *admission* rules), with an SMS
    template of its own and fast *settings* unless given."""
    folder = tmp_path / "templates" / "sms" / "t"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "body.txt").write_text("Hi {{ first_name }}, {{ 100 // points }}% off")
    template = MessageTemplate(str(tmp_path / "templates"), "sms", "t", (("body.txt",),))
    values = {
        "rate_per_second": 1000.0,
        "burst": 100,
        "concurrency": 1,
        "timeout_seconds": 5.0,
        "retry_attempts": 2,
        "retry_delay_seconds": 0.05,
        **settings,
    }
    return ChannelSender(
        provider, template, ledger, Settings(**values), admission=admission, max_wait=max_wait
    )


def send(
    tmp_path, provider: Provider, ledger: Ledger, admission: list | None = None, **settings
) -> ChannelSender:
    """Run :func:`sender_for` to the end; return it (its counts, stop reason)."""
    sender = sender_for(tmp_path, provider, ledger, admission, **settings)
    sender.run()
    return sender


def statuses(ledger: Ledger) -> dict[str, tuple[str, int]]:
    """recipient -> (status, attempts)"""
    return {row["recipient"]: (row["status"], row["attempts"]) for row in ledger.rows()}


# -- the tests -----------------------------------------------------------------------------------


def test_every_row_is_sent_once_by_as_many_threads_as_configured(tmp_path, server, token, ledger):
    customers(ledger, 12)
    server.hold_first(4)  # answers none of the first four until all four are in flight

    sender = send(tmp_path, FakeProvider(server.base_url), ledger, concurrency=4)

    assert not server.barrier_broken, "four requests were in flight at once"
    assert server.most_in_flight == 4, "never more than the four threads"
    assert sender.counts == Counter({SENT: 12})
    assert Counter(seen.recipient for seen in server.seen) == {f"r{n}": 1 for n in range(12)}
    ids = [row["provider_message_id"] for row in ledger.rows()]
    assert all(row["status"] == SENT_ROW for row in ledger.rows())
    assert len(set(ids)) == 12 and all(ids)
    assert {seen.token for seen in server.seen} == {token}


@pytest.mark.usefixtures("token")
def test_a_transient_failure_waits_in_the_delay_queue_while_others_are_sent(
    tmp_path, server, ledger
):
    customers(ledger, 3)
    server.answer("r0", UNAVAILABLE)

    sender = send(tmp_path, FakeProvider(server.base_url), ledger, retry_delay_seconds=0.1)

    first, again = server.requests_for("r0")
    assert again.at - first.at >= 0.1, "sent again after the delay"
    order = [seen.recipient for seen in server.seen]
    assert order.index("r1") < order.index("r0", 1), "the one thread sent to r1 meanwhile"
    assert statuses(ledger) == {"r0": (SENT_ROW, 2), "r1": (SENT_ROW, 1), "r2": (SENT_ROW, 1)}
    assert sender.counts == Counter({SENT: 3, RETRY: 1})
    assert sender.send_stats() == {"retries": 1, "rate_limited": 0}, "r0 sent again once"


@pytest.mark.usefixtures("token")
def test_a_recipient_still_failing_after_its_attempts_stays_pending(tmp_path, server, ledger):
    customers(ledger, 3)
    server.forever["r1"] = UNAVAILABLE

    sender = send(tmp_path, FakeProvider(server.base_url), ledger, retry_attempts=2)

    assert len(server.requests_for("r1")) == 2
    assert statuses(ledger)["r1"] == (PENDING, 2)
    error = {row["recipient"]: row["error"] for row in ledger.rows()}["r1"]
    assert error == "fake provider answered 503 UNAVAILABLE: try later"
    assert sender.last_transient_error == error
    assert sender.counts == Counter({SENT: 2, RETRY: 2, "exhausted": 1})


@pytest.mark.usefixtures("token")
def test_a_429_waits_as_told_and_does_not_use_an_attempt(tmp_path, server, ledger):
    customers(ledger, 2)
    busy = (429, {"error": {"code": "RATE", "message": "slow down"}}, {"Retry-After": "0.05"})
    server.answer("r0", busy, busy)

    sender = send(tmp_path, FakeProvider(server.base_url), ledger, retry_attempts=1)

    tries = server.requests_for("r0")
    assert len(tries) == 3, "one attempt allowed, two 429 did not use it"
    assert all(b.at - a.at >= 0.05 for a, b in itertools.pairwise(tries)), "waited as told"
    assert statuses(ledger) == {"r0": (SENT_ROW, 3), "r1": (SENT_ROW, 1)}
    assert sender.counts == Counter({SENT: 2})
    assert sender.send_stats() == {"retries": 2, "rate_limited": 2}


def test_a_stop_answer_stops_the_channel_and_leaves_the_rest_pending(
    tmp_path, server, token, ledger
):
    customers(ledger, 5)
    echo = {"error": {"code": "AUTH", "message": f"bad token {token}"}}  # echoes the credential
    server.answer("r1", (401, echo, {}))

    with pytest.raises(ChannelStoppedError) as stopped:
        send(tmp_path, FakeProvider(server.base_url), ledger)

    assert str(stopped.value) == (
        f"fake provider answered 401 AUTH: bad token ***; check ${TOKEN_ENV} ([fake_api] token_env)"
    )
    assert [seen.recipient for seen in server.seen] == ["r0", "r1"], "nothing after the stop"
    assert statuses(ledger) == {
        "r0": (SENT_ROW, 1),
        "r1": (PENDING, 1),
        **{f"r{n}": (PENDING, 0) for n in range(2, 5)},
    }


def test_an_expired_token_is_renewed_once_and_the_message_goes(tmp_path, server, token, ledger):
    customers(ledger, 3)
    server.refused = lambda sent: sent == token
    provider = FakeProvider(server.base_url, renewable=True)

    sender = send(tmp_path, provider, ledger)

    renewed = provider.tokens.minted[1]
    assert [seen.token for seen in server.seen] == [token, renewed, renewed, renewed]
    assert statuses(ledger) == {"r0": (SENT_ROW, 2), "r1": (SENT_ROW, 1), "r2": (SENT_ROW, 1)}
    assert sender.counts == Counter({SENT: 3})


@pytest.mark.usefixtures("token")
def test_a_token_refused_again_after_renewal_stops_the_channel(tmp_path, server, ledger):
    customers(ledger, 3)
    server.refused = lambda _token: True
    provider = FakeProvider(server.base_url, renewable=True)

    with pytest.raises(ChannelStoppedError, match=r"\(also with a new access token\)"):
        send(tmp_path, provider, ledger)

    assert len(server.seen) == 2 and len(provider.tokens.minted) == 2
    assert {status for status, _ in statuses(ledger).values()} == {PENDING}


def test_an_expired_static_token_stops_the_channel_at_once(tmp_path, server, token, ledger):
    customers(ledger, 3)
    server.refused = lambda sent: sent == token

    with pytest.raises(ChannelStoppedError) as stopped:
        send(tmp_path, FakeProvider(server.base_url), ledger)

    assert str(stopped.value).endswith(f"; check ${TOKEN_ENV} ([fake_api] token_env)")
    assert len(server.seen) == 1
    assert {status for status, _ in statuses(ledger).values()} == {PENDING}


@pytest.mark.usefixtures("token")
def test_a_customer_the_template_fails_for_fails_alone_unsent(tmp_path, server, ledger):
    customers(ledger, 3, points={"r1": 0})

    sender = send(tmp_path, FakeProvider(server.base_url), ledger)

    assert [seen.recipient for seen in server.seen] == ["r0", "r2"]
    errors = {row["recipient"]: row["error"] for row in ledger.rows()}
    assert errors["r1"] == (
        "not sent: template sms/t/body.txt line 1: ZeroDivisionError: integer division or "
        "modulo by zero"
    )
    assert statuses(ledger)["r1"] == (FAILED, 0)
    assert sender.counts == Counter({SENT: 2, FAILED: 1})


@pytest.mark.usefixtures("token")
def test_a_template_error_for_everyone_stops_the_channel_and_fails_nobody(tmp_path, server, ledger):
    """An included file gone after the check fails every customer alike: the channel stops
    with its rows pending for the fixed rerun, none failed for good."""
    customers(ledger, 4)
    folder = tmp_path / "templates" / "sms" / "t"
    folder.mkdir(parents=True)
    (folder / "body.txt").write_text('Hi {{ first_name }} {% include "footer.txt" %}')
    (folder / "footer.txt").write_text("Reply STOP to opt out")
    template = MessageTemplate(str(tmp_path / "templates"), "sms", "t", (("body.txt",),))
    (folder / "footer.txt").unlink()
    settings = Settings(1000.0, 100, 2, 5.0, 2, 0.05)

    with pytest.raises(ChannelStoppedError, match=r"template .*/body.txt: TemplateNotFound"):
        ChannelSender(FakeProvider(server.base_url), template, ledger, settings).run()

    assert server.seen == []
    assert statuses(ledger) == {f"r{n}": (PENDING, 0) for n in range(4)}


@pytest.mark.usefixtures("token")
def test_a_request_left_unanswered_is_sent_again_when_retry_unanswered_says_so(
    tmp_path, server, ledger
):
    customers(ledger, 2)
    server.answer("r0", NO_ANSWER)

    sender = send(
        tmp_path,
        FakeProvider(server.base_url),
        ledger,
        timeout_seconds=0.2,
        retry_unanswered=True,
    )

    assert len(server.requests_for("r0")) == 2
    assert statuses(ledger) == {"r0": (SENT_ROW, 2), "r1": (SENT_ROW, 1)}
    assert sender.last_transient_error.startswith("ReadTimeout: ")


@pytest.mark.usefixtures("token")
def test_a_request_left_unanswered_is_unknown_and_never_sent_twice_by_default(
    tmp_path, server, ledger
):
    customers(ledger, 2)
    server.answer("r0", NO_ANSWER)

    sender = send(tmp_path, FakeProvider(server.base_url), ledger, timeout_seconds=0.2)

    assert len(server.requests_for("r0")) == 1, "it may have arrived: never twice"
    assert statuses(ledger) == {"r0": (UNKNOWN_ROW, 1), "r1": (SENT_ROW, 1)}
    assert sender.counts == Counter({SENT: 1, UNKNOWN: 1})


@pytest.mark.usefixtures("token")
def test_a_refused_batch_fails_the_recipient_it_names_and_sends_the_others_once(
    tmp_path, server, ledger
):
    customers(ledger, 4)
    server.bad = {"r2"}

    sender = send(tmp_path, FakeProvider(server.base_url, batches=True), ledger, batch_size=4)

    assert [seen.recipients for seen in server.seen] == [
        ("r0", "r1", "r2", "r3"),
        ("r0", "r1", "r3"),
    ]
    assert statuses(ledger) == {
        "r0": (SENT_ROW, 2),  # the refused batch took nothing: its rows went back to pending
        "r1": (SENT_ROW, 2),
        "r2": (FAILED_ROW, 1),
        "r3": (SENT_ROW, 2),
    }
    errors = {row["recipient"]: row["error"] for row in ledger.rows()}
    assert errors["r2"] == "fake provider answered 400 BAD_ADDRESS: r2 is not valid"
    assert sender.counts == Counter({SENT: 3, FAILED: 1})


@pytest.mark.usefixtures("token")
def test_a_refused_batch_naming_nobody_is_halved_until_the_bad_one_is_alone(
    tmp_path, server, ledger
):
    customers(ledger, 4)
    server.bad, server.blame = {"r2"}, False

    sender = send(tmp_path, FakeProvider(server.base_url, batches=True), ledger, batch_size=4)

    assert sorted(seen.recipients for seen in server.seen) == [
        ("r0", "r1"),
        ("r0", "r1", "r2", "r3"),
        ("r2",),
        ("r2", "r3"),
        ("r3",),
    ]
    assert {r: status for r, (status, _) in statuses(ledger).items()} == {
        "r0": SENT_ROW,
        "r1": SENT_ROW,
        "r2": FAILED_ROW,
        "r3": SENT_ROW,
    }
    assert sender.counts == Counter({SENT: 3, FAILED: 1})


class Recorded:
    """An admission rule that admits all but :attr:`refused` and records how each admitted
    row was settled."""

    def __init__(self, refused: frozenset = frozenset()):
        self.refused = refused
        self.admitted: list[str] = []
        self.settled: dict[str, list[str]] = {}

    def admit(self, rows: list[dict]) -> list[dict]:
        kept = [row for row in rows if row["recipient"] not in self.refused]
        self.admitted += [row["recipient"] for row in kept]
        return kept

    def settle(self, rows: list[dict], status) -> None:
        for row in rows:
            self.settled.setdefault(row["recipient"], []).append(str(status))


@pytest.mark.usefixtures("token")
def test_each_admitted_row_is_settled_once_with_how_its_request_ended(tmp_path, server, ledger):
    customers(ledger, 6, points={"r1": 0})  # r1's template fails
    server.forever["r2"] = UNAVAILABLE  # r2 still failing after its attempts: left pending
    server.answer("r3", UNAVAILABLE)  # r3 back to pending once, then sent: settled once, sent
    server.answer("r4", NO_ANSWER)  # r4 unknown
    rule = Recorded(refused=frozenset({"r5"}))

    send(tmp_path, FakeProvider(server.base_url), ledger, admission=[rule],
         timeout_seconds=0.2, retry_unanswered=False)  # fmt: skip

    assert rule.admitted == ["r0", "r1", "r2", "r3", "r4"]
    assert rule.settled == {
        "r0": ["sent"],
        "r1": ["failed"],
        "r2": ["pending"],
        "r3": ["sent"],
        "r4": ["unknown"],
    }
    assert "r5" not in [seen.recipient for seen in server.seen]


@pytest.mark.usefixtures("token")
def test_rows_admitted_but_never_sent_because_the_channel_stopped_are_settled_pending(
    tmp_path, server, ledger
):
    customers(ledger, 5)
    server.answer("r1", (401, {"error": {"code": "AUTH", "message": "no"}}, {}))
    rule = Recorded()

    with pytest.raises(ChannelStoppedError):
        send(tmp_path, FakeProvider(server.base_url), ledger, admission=[rule])

    assert rule.admitted == [f"r{n}" for n in range(5)], "one page, admitted at once"
    assert rule.settled == {"r0": ["sent"], **{f"r{n}": ["pending"] for n in range(1, 5)}}
    assert {r: status for r, (status, _) in statuses(ledger).items()} == {
        "r0": SENT_ROW,
        **{f"r{n}": PENDING for n in range(1, 5)},
    }


@pytest.mark.usefixtures("token")
def test_a_batch_refused_for_one_recipient_settles_it_failed_and_the_others_sent(
    tmp_path, server, ledger
):
    customers(ledger, 4)
    server.bad = {"r2"}
    rule = Recorded()

    send(tmp_path, FakeProvider(server.base_url, batches=True), ledger, admission=[rule],
         batch_size=4)  # fmt: skip

    assert rule.settled == {"r0": ["sent"], "r1": ["sent"], "r2": ["failed"], "r3": ["sent"]}


# -- quiet hours: rows deferred until their window opens -------------------------------------


def quiet_for(ledger: Ledger, seconds: float) -> QuietHours:
    """Quiet hours (in UTC, every row's default zone) that end *seconds* from now."""
    return QuietHours(parse_window(demo_window("UTC", seconds)), "UTC", ledger)


@pytest.mark.usefixtures("token")
def test_deferred_rows_are_sent_once_their_window_opens(tmp_path, server, ledger):
    customers(ledger, 3)
    rule = quiet_for(ledger, 2)
    opens = rule.resolver.verdict(("UTC",), time.time()).until
    started = time.monotonic() - time.time()  # monotonic = wall clock + started

    sender = send(tmp_path, FakeProvider(server.base_url), ledger, admission=[rule])

    assert sender.counts == Counter({SENT: 3})
    assert all(seen.at - started >= opens for seen in server.seen)
    assert all(row["deferred_until"] and row["status"] == SENT_ROW for row in ledger.rows())
    assert sender.deferred() == (0, None, "")


@pytest.mark.usefixtures("token")
def test_a_stop_ends_the_wait_for_a_window_at_once(tmp_path, server, ledger):
    customers(ledger, 2)
    rule = quiet_for(ledger, 600)
    sender = sender_for(tmp_path, FakeProvider(server.base_url), ledger, admission=[rule])
    raised: list[Exception] = []

    def run() -> None:
        try:
            sender.run()
        except SendingInterruptedError as exc:
            raised.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 5
    while sender.deferred()[0] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sender.deferred()[0] == 2

    stopped_at = time.monotonic()
    sender.stop("terminated")
    thread.join(5)

    assert time.monotonic() - stopped_at < 1 and not thread.is_alive()
    assert [str(exc) for exc in raised] == ["terminated"]
    assert server.seen == []
    rows = list(ledger.rows())
    assert {row["status"] for row in rows} == {PENDING}
    assert all(row["error"].startswith("deferred: quiet hours until ") for row in rows)


@pytest.mark.usefixtures("token")
def test_a_window_opening_after_max_wait_ends_the_sending_at_once_the_rows_deferred(
    tmp_path, server, ledger
):
    """``[consent] max_wait_minutes``: the channel does not wait for a window it cannot reach
    within it (a customer in Guam, hours away); those rows stay pending, deferred."""
    customers(ledger, 2)
    rule = quiet_for(ledger, 3600)
    provider = FakeProvider(server.base_url)
    sender = sender_for(tmp_path, provider, ledger, admission=[rule], max_wait=60)
    done = threading.Thread(target=sender.run)
    started = time.monotonic()
    done.start()
    done.join(10)

    assert not done.is_alive() and time.monotonic() - started < 10  # the window is an hour off
    assert sender.gave_up_waiting and sender.deferred()[0] == 2
    assert server.seen == []
    rows = list(ledger.rows())
    assert {row["status"] for row in rows} == {PENDING}
    assert all(row["deferred_until"] for row in rows)


class ShiftedClock:
    """The wall clock moved by :attr:`shift`, which a test sets to put "now" where it wants
    (at the start of quiet hours) at the moment it chooses; waits still take real time."""

    def __init__(self) -> None:
        self.shift = 0.0

    def __call__(self) -> float:
        return time.time() + self.shift

    def move_to(self, moment: float) -> None:
        self.shift = moment - time.time()


def quiet_soon(ledger: Ledger, clock: ShiftedClock, seconds: float) -> tuple[QuietHours, float]:
    """Quiet hours (UTC) that begin an hour from now and last *seconds*; the rule, the start."""
    start = round(time.time()) + 3600
    window = "-".join(
        datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%H:%M:%S")
        for t in (start, start + seconds)
    )
    return QuietHours(parse_window(window), "UTC", ledger, clock=clock), start


@pytest.mark.usefixtures("token")
def test_quiet_hours_that_begin_during_a_429_wait_defer_the_row_until_they_end(
    tmp_path, server, ledger
):
    customers(ledger, 2)
    clock = ShiftedClock()
    rule, start = quiet_soon(ledger, clock, seconds=1)
    busy = (429, {"error": {"code": "RATE", "message": "slow down"}}, {"Retry-After": "0.2"})
    server.answer("r0", busy)
    arrivals: list[tuple[tuple[str, ...], float]] = []

    def arrived(recipients):
        if not arrivals:
            clock.move_to(start)  # the window begins while r0 waits out its 429
        arrivals.append((recipients, clock()))

    server.arrived = arrived

    sender = send(tmp_path, FakeProvider(server.base_url), ledger, admission=[rule])

    assert [recipients for recipients, _ in arrivals] == [("r0",), ("r0",), ("r1",)]
    assert all(at >= start + 1 for _, at in arrivals[1:]), "nothing left inside the window"
    rows = {row["recipient"]: row for row in ledger.rows()}
    assert {r: (row["status"], row["attempts"]) for r, row in rows.items()} == {
        "r0": (SENT_ROW, 2),
        "r1": (SENT_ROW, 1),
    }
    assert all(row["deferred_until"] for row in rows.values()), "deferred, then sent"
    assert sender.counts == Counter({SENT: 2})


@pytest.mark.usefixtures("token")
def test_quiet_hours_that_begin_during_the_wait_for_a_token_defer_the_row(tmp_path, server, ledger):
    customers(ledger, 2)
    clock = ShiftedClock()
    rule, start = quiet_soon(ledger, clock, seconds=1)
    arrivals: list[tuple[tuple[str, ...], float]] = []

    def arrived(recipients):
        if not arrivals:
            clock.move_to(start)  # the window begins while r1 waits for its token
        arrivals.append((recipients, clock()))

    server.arrived = arrived

    # one token at a time (burst 3 less the client's margin of 2), one every 0.3 s
    send(tmp_path, FakeProvider(server.base_url), ledger, admission=[rule],
         rate_per_second=1 / 0.3, burst=3)  # fmt: skip

    assert [recipients for recipients, _ in arrivals] == [("r0",), ("r1",)]
    assert arrivals[1][1] >= start + 1, "r1 was sent once the window ended, not inside it"
    assert statuses(ledger) == {"r0": (SENT_ROW, 1), "r1": (SENT_ROW, 1)}


@pytest.mark.usefixtures("token")
def test_nothing_leaves_after_a_stop_that_came_during_the_wait_for_a_token(
    tmp_path, server, ledger
):
    customers(ledger, 2)
    sender: list[ChannelSender] = []
    # the stop comes 0.3 s into the other thread's one-second wait for its token
    stop = threading.Timer(0.3, lambda: sender[0].stop("terminated"))

    def arrived(_recipients):
        if stop.ident is None:  # the first request: start the timer, once
            stop.start()

    server.arrived = arrived
    # two threads, one token at a time: the second waits a second for its own
    provider = FakeProvider(server.base_url)
    sender.append(sender_for(tmp_path, provider, ledger, rate_per_second=1.0, burst=3,
                             concurrency=2))  # fmt: skip

    with pytest.raises(SendingInterruptedError, match="^terminated$"):
        sender[0].run()

    assert len(server.seen) == 1, "the request that waited for a token stayed"
    assert not stop.is_alive()
    assert sorted(status for status, _ in statuses(ledger).values()) == [PENDING, SENT_ROW]
    assert sorted(attempts for _, attempts in statuses(ledger).values()) == [0, 1]


@pytest.mark.usefixtures("token")
def test_a_stop_ends_the_wait_for_a_429s_retry_after_at_once(tmp_path, server, ledger):
    """SIGTERM or the deadline while a 429's Retry-After (up to 300 s) is waited out: the
    sender stops at once, the recipient pending and not sent again."""
    customers(ledger, 1)
    busy = (429, {"error": {"code": "RATE", "message": "slow down"}}, {"Retry-After": "60"})
    server.answer("r0", busy)
    sender: list[ChannelSender] = []
    stop = threading.Timer(0.2, lambda: sender[0].stop("terminated"))
    server.arrived = lambda _recipients: stop.start()
    sender.append(sender_for(tmp_path, FakeProvider(server.base_url), ledger))
    began = time.monotonic()

    with pytest.raises(SendingInterruptedError, match="^terminated$"):
        sender[0].run()

    assert time.monotonic() - began < 10, "the stop did not wait out the 60 s"
    assert len(server.seen) == 1
    assert statuses(ledger) == {"r0": (PENDING, 1)}
