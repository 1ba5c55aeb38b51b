"""Dry runs: every request built exactly as it would be sent, none sent.

The preview holds the first requests in full, one per recipient with its rendered message
(credentials shown as the names of their environment variables); for a channel that sends
several recipients per request (email), the first batch as it goes on the wire; the
recipients not sent to and why; counts per status and per segment; and, for a provider
that bills by size (SMS), each shown message's ``encoding`` and ``message_segments`` and
the campaign's total by encoding. It keeps no ledger,
so a later real run starts from scratch.
"""

from __future__ import annotations

import base64
import json
from collections import Counter, defaultdict
from collections.abc import Iterable

import requests

from .consent.store import source_kind
from .exceptions import MessageError
from .ledger import Status, skip_kind
from .providers import Provider, Request
from .templates import MessageTemplate

WOULD_SEND = "would_send"


def preview(
    provider: Provider,
    template: MessageTemplate,
    recipients: Iterable[dict],
    keep: int,
    batch_size: int | None = None,
) -> dict:
    """Render and build the request of every recipient; return the preview document.

    With a *batch_size* (the provider batches), the document's ``batches`` holds the first
    request exactly as the sender would make it of the first *batch_size* pending recipients.
    """
    session = requests.Session()
    first_rows: list[Request] = []  # the built requests of the first batch's recipients
    pending_seen = 0
    by_status: Counter = Counter()
    by_segment: dict[str, Counter] = defaultdict(Counter)
    skipped: Counter = Counter()
    sources: Counter = Counter()  # the suppressed, by where their entry comes from
    shown: list[dict] = []
    not_sent: list[dict] = []
    billed: Counter = Counter()  # the messages' segments, by encoding
    for row in recipients:
        status, reason = row["status"], row["error"]
        if status == Status.PENDING:
            pending_seen += 1
            try:
                request = provider.build(template, row["recipient"], row["context"])
                status = WOULD_SEND
            except MessageError as exc:
                status, reason = Status.FAILED, f"not sent: {exc}"
            if status == WOULD_SEND and batch_size and pending_seen <= batch_size:
                first_rows.append(request)
        by_status[status] += 1
        if status == Status.SKIPPED:
            skipped[skip_kind(reason)] += 1
            if skip_kind(reason) == "suppressed":
                sources[source_kind(reason)] += 1
        by_segment[row["segment"]][status] += 1
        entry = {"customer_id": row["customer_id"], "segment": row["segment"]}
        cost = provider.cost(request) if status == WOULD_SEND else {}
        if "message_segments" in cost:
            billed[cost.get("encoding", "")] += cost["message_segments"]
        if status == WOULD_SEND and len(shown) < keep:
            shown.append({**entry, **cost, **describe(request, provider, session)})
        elif status != WOULD_SEND and len(not_sent) < keep:
            not_sent.append({**entry, "status": status, "reason": reason})
    document = {
        "channel": provider.channel,
        "counts": {
            "by_status": dict(by_status),
            "skipped_by_reason": dict(skipped),
            "suppressed_by_source": dict(sources),
            "by_segment": {segment: dict(c) for segment, c in sorted(by_segment.items())},
        },
        "requests": shown,
        "not_sent": not_sent,
    }
    if billed:  # what the provider will bill, known before sending
        document["counts"]["message_segments"] = {
            "total": sum(billed.values()),
            "by_encoding": dict(sorted(billed.items())),
        }
    if batch_size:
        batch = [provider.combine(provider.with_first(first_rows))] if first_rows else []
        document["batch_size"] = batch_size
        document["batches"] = [describe(request, provider, session) for request in batch]
    return document


def describe(request: Request, provider: Provider, session: requests.Session) -> dict:
    """One request as it goes on the wire, credentials replaced by their variable names."""
    prepared = request.prepare(session)
    headers = dict(prepared.headers)
    if headers.get("Authorization", "").startswith("Basic "):
        user_password = base64.b64decode(headers["Authorization"][6:]).decode()
        headers["Authorization"] = f"Basic base64({user_password})"
    body = request.json if request.json is not None else request.data
    shown = {"method": prepared.method, "url": prepared.url, "headers": headers, "body": body}
    text = json.dumps(shown)
    for name, value in provider.secrets.items():
        text = text.replace(value, f"<${name}>")
    return json.loads(text)
