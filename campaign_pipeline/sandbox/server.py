"""The sandbox's HTTP server: its endpoints served on 127.0.0.1 from a daemon thread.

:class:`Sandbox` routes each request to the endpoint whose route matches, applies the
channel's token bucket, the configured faults and error rules, counts what it answered per
channel and keeps (or records to a JSONL file) every accepted message. ``POST /token`` is
Google's OAuth2 token endpoint (:mod:`.oauth`); ``GET /_stats`` the per-channel counters.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import re
import socket
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .bucket import TokenBucket
from .config import (
    ENDPOINTS,
    ErrorRule,
    MissingCredentialsError,
    SandboxConfig,
    default_limits,
    missing_credentials,
)
from .endpoint import Endpoint, Message, RejectedError, Reply, echoed, media_type
from .oauth import TOKEN_PATH, TokenIssuer, new_key


class Sandbox:
    """Fake provider endpoints served on 127.0.0.1 from a daemon thread.

    *endpoints* are the endpoint classes to serve (default: :data:`~.config.ENDPOINTS`, the
    three providers); the counters, limits and statistics are kept per channel of theirs.
    """

    def __init__(self, config: SandboxConfig, endpoints: Sequence[type[Endpoint]] | None = None):
        endpoints = ENDPOINTS if endpoints is None else tuple(endpoints)
        if missing := missing_credentials(config.credentials, endpoints):
            raise MissingCredentialsError(missing)
        self.config = config
        self.port = config.port
        self.base_url = ""
        self.tokens = TokenIssuer(config.token_lifetime)
        self.endpoints = [endpoint(config, self.tokens) for endpoint in endpoints]
        self.channels = [endpoint.channel for endpoint in self.endpoints]
        limits = default_limits(endpoints) if config.limits is None else config.limits
        self.buckets = {
            channel: TokenBucket(limit.rate_per_second, limit.burst)
            for channel, limit in limits.items()
            if limit is not None
        }
        self.lock = threading.Lock()
        self.random = random.Random(config.seed)
        self.stopping = threading.Event()
        self.seen: dict[tuple[str, str], int] = {}
        self.rule_hits: dict[tuple[int, str], int] = {}
        self.records: list[dict] = []
        self.counters = {
            c: {"requests": 0, "accepted": 0, "rate_limited": 0} for c in self.channels
        }
        self.statuses: dict[str, dict[str, int]] = {c: {} for c in self.channels}
        self.others: dict[str, dict[str, int]] = {c: {} for c in self.channels}
        self.record_file: Any = None
        self.server: SandboxServer | None = None
        self.thread: threading.Thread | None = None

    def start(self) -> Sandbox:
        if self.config.record_path:
            self.record_file = open(self.config.record_path, "a", encoding="utf-8")  # noqa: SIM115
        self.server = SandboxServer(("127.0.0.1", self.config.port), SandboxHandler, self)
        self.port = self.server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.05},  # so stop() returns quickly
            name="campaign-sandbox",
            daemon=True,
        )
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()  # wakes hanging and sleeping requests
        if self.server is not None:
            self.server.shutdown()
            self.server.close_connections()
            self.server.server_close()
            self.server = None
        with self.lock:
            if self.record_file is not None:
                self.record_file.close()
                self.record_file = None

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self) -> dict:
        """Per channel: requests, accepted messages, 429s, answers by status, and what the
        endpoint counts of its own (push: the access tokens issued)."""
        with self.lock:
            stats = {
                c: {**self.counters[c], "statuses": dict(self.statuses[c])} for c in self.channels
            }
            for c in self.channels:  # the provider's other routes (SendGrid's lists)
                stats[c]["other_requests"] = sum(self.others[c].values())
                stats[c]["other_statuses"] = dict(self.others[c])
        for endpoint in self.endpoints:
            stats[endpoint.channel].update(endpoint.extra_stats())
        return stats

    def trust(self, key: dict) -> None:
        """Issue access tokens to the service account of *key* (a parsed key file)."""
        self.tokens.trust(key)

    def new_service_account(self, project_id: str = "demo-project") -> dict:
        """A new test service-account key for this sandbox's token endpoint, trusted."""
        key = new_key(self.base_url + TOKEN_PATH, project_id)
        self.trust(key)
        return key

    def accepted(self) -> list[dict]:
        with self.lock:
            return list(self.records)

    def handle(self, method: str, target: str, headers: Any, body: bytes) -> Reply:
        path = urlsplit(target).path
        if method == "GET" and path == "/_stats":
            return Reply(200, self.stats())
        if method == "POST" and path == TOKEN_PATH:
            if status := self.config.token_echo_status:
                page = self.tokens.echo(body)
                return Reply(status, page, {"Content-Type": "text/html; charset=utf-8"})
            return Reply(*self.tokens.grant(media_type(headers), body))
        for endpoint in self.endpoints:
            if endpoint.serves(method, path):
                reply = self.decide_other(endpoint, method, target, headers)
                if self.config.echo_credentials and reply.status >= 400:
                    reply = echoed(reply, f"{method} {path} {headers.get('Authorization')}")
                with self.lock:  # no latency: it plays the send route's
                    statuses = self.others[endpoint.channel]
                    statuses[str(reply.status)] = statuses.get(str(reply.status), 0) + 1
                return reply
        for endpoint in self.endpoints:
            params = endpoint.match(method, path)
            if params is not None:
                arrived = time.time()
                reply = self.decide(endpoint, params, headers, body)
                if self.config.echo_credentials and reply.status >= 400:
                    reply = echoed(reply, f"{method} {path} {headers.get('Authorization')}")
                self.count(endpoint.channel, reply.status, arrived)
                self.stopping.wait(self.latency())
                return reply
        return Reply(404, {"error": "not found"})

    def decide(self, endpoint: Endpoint, params: dict, headers: Any, body: bytes) -> Reply:
        if not endpoint.authorized(headers, params):
            return endpoint.unauthorized()
        bucket = self.buckets.get(endpoint.channel)
        wait = bucket.take() if bucket else 0.0
        if wait:
            return endpoint.rate_limited(wait, bucket.capacity)
        fault = self.fault(endpoint, body)
        if fault == "hang":
            self.stopping.wait(self.config.hang_seconds)
        if fault:
            return endpoint.unavailable()
        if matched := self.matching_rules(endpoint, body):
            return endpoint.refusal(matched)
        try:
            messages = endpoint.messages(headers, body, params)
        except RejectedError as rejected:
            return rejected.reply
        reply, message_id = endpoint.respond(messages, params)
        self.accept(endpoint.channel, messages, message_id)
        return reply

    def decide_other(self, endpoint: Endpoint, method: str, target: str, headers: Any) -> Reply:
        """A request to a provider's other route: its credentials, then the error rules
        whose REGEX starts with ``/`` or ``^/`` (matched against the path, not a recipient);
        no token bucket (SendGrid limits those routes apart from mail/send)."""
        if not endpoint.authorized(headers, {}):
            return endpoint.unauthorized()
        url = urlsplit(target)
        for rule in self.config.error_rules:
            if rule.channel == endpoint.channel and rule.pattern.lstrip("^").startswith("/"):
                if not re.search(rule.pattern, url.path):
                    continue
                with self.lock:
                    key = (id(rule), url.path)
                    self.rule_hits[key] = hits = self.rule_hits.get(key, 0) + 1
                if not rule.times or hits <= rule.times:
                    return endpoint.error(rule.status, rule.code)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        return endpoint.answer(method, url.path, query)

    def fault(self, endpoint: Endpoint, body: bytes) -> str | None:
        """'hang', 'fail' or None; a request fails while any recipient has faults left."""
        config = self.config
        with self.lock:
            keys = [(endpoint.channel, r) for r in endpoint.recipients(body)]
            done = min((self.seen.get(key, 0) for key in keys), default=math.inf)
            for key in keys:
                self.seen[key] = self.seen.get(key, 0) + 1
            hang = config.hang_rate > 0 and self.random.random() < config.hang_rate
            fail = config.error_rate > 0 and self.random.random() < config.error_rate
        if done < config.hang_first or hang:
            return "hang"
        if done < config.fail_first or fail:
            return "fail"
        return None

    def matching_rules(self, endpoint: Endpoint, body: bytes) -> list[tuple[int, ErrorRule]]:
        """(position, rule) of each of the request's recipients an error rule still applies
        to, with the first such rule; a rule with TIMES counts each request it matched a
        recipient of."""
        rules = [r for r in self.config.error_rules if r.channel == endpoint.channel]
        matched = []
        for index, recipient in enumerate(endpoint.recipients(body) if rules else []):
            for rule in rules:
                if not re.search(rule.pattern, recipient):
                    continue
                with self.lock:
                    key = (id(rule), recipient)
                    self.rule_hits[key] = hits = self.rule_hits.get(key, 0) + 1
                if not rule.times or hits <= rule.times:
                    matched.append((index, rule))
                    break
        return matched

    def latency(self) -> float:
        seconds = self.config.latency_ms / 1000
        jitter = self.config.latency_jitter
        if seconds <= 0 or jitter <= 0:
            return max(seconds, 0.0)
        with self.lock:
            return seconds * self.random.uniform(1 - jitter, 1 + jitter)

    def accept(self, channel: str, messages: list[Message], message_id: str) -> None:
        with self.lock:
            for m in messages:
                record = {
                    "channel": channel,
                    "received_at": time.time(),
                    "message_id": message_id,
                    "recipient": m.recipient,
                    "campaign": m.campaign,
                    "customer_id": m.customer_id,
                    "request": m.request,
                }
                if self.config.keep_messages:
                    self.records.append(record)
                self.counters[channel]["accepted"] += 1
                if self.record_file is not None:
                    self.record_file.write(json.dumps(record) + "\n")
                    self.record_file.flush()

    def count(self, channel: str, status: int, arrived: float) -> None:
        with self.lock:
            counters = self.counters[channel]
            counters["requests"] += 1
            counters.setdefault("first_request_at", arrived)
            counters["last_request_at"] = arrived
            if status == 429:
                self.counters[channel]["rate_limited"] += 1
            statuses = self.statuses[channel]
            statuses[str(status)] = statuses.get(str(status), 0) + 1


class SandboxServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 drops the SYNs of a burst of new connections,
    # which a client then sees as a connect timeout; real providers accept them.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type, sandbox: Sandbox):
        self.sandbox = sandbox
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def close_connections(self) -> None:
        # Keep-alive handler threads would otherwise keep serving after stop().
        with self.connections_lock:
            for connection in self.connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up mid-answer are expected (timeouts, stop())


class SandboxHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # without it keep-alive throughput collapses
    server_version = "campaign-sandbox"
    sys_version = ""
    server: SandboxServer

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no per-request output; headers carry credentials

    def do_GET(self) -> None:
        self.dispatch("GET")

    def do_POST(self) -> None:
        self.dispatch("POST")

    def do_DELETE(self) -> None:
        self.dispatch("DELETE")

    def dispatch(self, method: str) -> None:
        body = self.read_body()
        if body is None:
            self.close_connection = True
            self.send(Reply(400, {"error": "bad Content-Length"}))
            return
        self.send(self.server.sandbox.handle(method, self.path, self.headers, body))

    def read_body(self) -> bytes | None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self.read_chunked()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return None
        return self.rfile.read(length) if length > 0 else b""

    def read_chunked(self) -> bytes:
        chunks = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    def send(self, reply: Reply) -> None:
        if isinstance(reply.body, str):  # a page, its Content-Type among reply.headers
            payload = reply.body.encode()
        else:
            payload = b"" if reply.body is None else json.dumps(reply.body).encode()
        self.send_response(reply.status)
        if reply.body is not None and not isinstance(reply.body, str):
            self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)
