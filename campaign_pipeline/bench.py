"""``make bench``: throughput at the providers' limits, and a million customers.

    campaign-bench [--quick] [--rows 1000000] [--json var/bench/results.json]

Every figure comes from real runs of the ``luigi`` CLI against the sandbox provider on
127.0.0.1, on data generated with a fixed seed. It prints a table of figures with the ratio
that matters and its target, and writes the same as JSON. ``--quick`` scales everything down
(about a minute) to check that the benchmark itself works.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import multiprocessing
import os
import platform
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from . import sample_data
from .consent import ConsentStore
from .sandbox import ChannelLimit, Sandbox, default_limits
from .testing import CHANNELS, REPO, TASKS, Campaign, kill_group, new_credentials, unlimited

# Segments of the generated customers are 20 % premium, 50 % regular, 30 % new: these targets
# give each channel about the same sending time at the default limits (email 10/s on all,
# SMS 5/s on half, push 2/s on a fifth).
ALL = ["premium", "regular", "new"]
TARGETS = {"email": ALL, "sms": ["premium", "new"], "push": ["premium"]}  # others: ALL


@dataclass
class Figure:
    name: str
    value: float
    unit: str
    ratio: float | None = None  # the figure that matters, against the target
    target: str = ""
    met: bool | None = None
    note: str = ""


class Bench:
    """Generated customers and, per run, a workspace (:class:`Campaign`) with its own config
    override and sandbox, all under *root*."""

    def __init__(self, root: Path):
        self.root = root
        self.credentials = new_credentials()

    def campaign(self, name: str, customers: Path, **sandbox_options) -> Campaign:
        """The workspace of the run *name* on *customers*, its sandbox started with
        *sandbox_options*: every provider points at it, one luigi retry, each channel's
        target segments."""
        campaign = Campaign(self.root / name, self.credentials, name=name, customers_path=customers)
        campaign.serve(**sandbox_options)
        campaign.configure(
            scheduler={"retry_count": "1"},
            rate_limits={"bucket_dir": str(self.root / "rate-limits")},  # one for every run
            **{TASKS[c]: {"target_segments": json.dumps(TARGETS.get(c, ALL))} for c in CHANNELS},
        )
        return campaign

    def run(self, campaign: Campaign, task: str = "RunCampaign") -> dict:
        """Run luigi in a wrapper that reports wall time and the peak RSS of its processes."""
        report = self.root / "measure.json"
        wrapper = [sys.executable, "-m", "campaign_pipeline.bench", "--measure", str(report), "--"]
        subprocess.run(
            [*wrapper, *campaign.command(task=task)],
            cwd=REPO,
            env=campaign.env(),
            stdout=subprocess.DEVNULL,
            stderr=(self.root / "luigi.log").open("a"),
            check=False,
        )
        result = json.loads(report.read_text())
        if result["code"] != 0:
            raise RuntimeError(f"{task} failed (exit {result['code']}); see {self.root}/luigi.log")
        return result


def measure(report: Path, command: list[str]) -> int:
    """Run *command*; write its exit code, wall time and the largest RSS of its processes."""
    started = time.monotonic()
    code = subprocess.run(command, check=False).returncode
    wall = time.monotonic() - started
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    report.write_text(json.dumps({"code": code, "wall": wall, "peak_rss_mb": peak_kb / 1024}))
    return 0


def sustained_rate(times: list[float]) -> float:
    """Messages per second in the second half of the sending, as the provider saw them
    arrive: by then the initial burst, which drains at the pace of the threads, is spent."""
    times = sorted(times)
    middle = times[0] + (times[-1] - times[0]) / 2
    late = [t for t in times if t >= middle]
    return (len(late) - 1) / (late[-1] - late[0])


def equal_time_customers(path: Path, seconds: float) -> None:
    """Customers whose segments give each channel the same sending time at the default
    limits: push (premium) 2/s, SMS (premium, new) 5/s, email (everyone) 10/s, each after
    its burst less the two tokens the client keeps back."""
    premium, new = int(2 * seconds + 8), int(3 * seconds + 10)
    rows = int(10 * seconds + 48)
    customers = list(sample_data.customers(rows, seed=11, dirty=False))
    for n, customer in enumerate(customers):
        customer["segment"] = (
            "premium" if n < premium else "new" if n < premium + new else "regular"
        )
    with path.open("w") as handle:
        sample_data.write(handle, iter(customers))


def send_rate_and_fan_out(bench: Bench, seconds: float) -> list[Figure]:
    """1. each channel at its default limit; 2. all three together vs the slowest alone."""
    customers = bench.root / "rate.csv"
    equal_time_customers(customers, seconds)
    limits = {"limits": default_limits(), "latency_ms": 250, "latency_jitter": 0.5}
    unbatched = {"email_api": {"batch_size": "1"}}

    run = bench.campaign("rate", customers, **limits)
    run.configure(**unbatched)
    together = bench.run(run)
    run.close()
    sandbox = run.sandbox
    figures, spans = [], {}
    for channel, limit in default_limits().items():
        times = [r["received_at"] for r in sandbox.accepted() if r["channel"] == channel]
        spans[channel] = max(times) - min(times)
        rate = sustained_rate(times)
        refused = sandbox.stats()[channel]["rate_limited"]
        figures.append(
            Figure(
                f"{channel} send rate, {len(times)} messages",
                round(rate, 2),
                "msg/s",
                round(rate / limit.rate_per_second, 3),
                ">= 0.97 of the limit, 0 x 429",
                rate / limit.rate_per_second >= 0.97 and refused == 0,
                f"limit {limit.rate_per_second:g}/s burst {limit.burst}; {refused} x 429",
            )
        )

    slowest = max(spans, key=spans.get)
    run = bench.campaign("alone", customers, **limits)
    run.configure(**unbatched)
    alone = bench.run(run, TASKS[slowest])
    run.close()
    ratio = together["wall"] / alone["wall"]
    figures.append(
        Figure(
            "fan-out: 3 channels together vs the slowest alone",
            round(together["wall"], 1),
            "s",
            round(ratio, 3),
            "<= 1.05",
            ratio <= 1.05,
            f"{slowest} alone {alone['wall']:.1f} s; each run includes LoadSegments",
        )
    )
    return figures


def email_batching(bench: Bench, requests: int, unbatched: float) -> Figure:
    """3. messages/s at 10 requests/s with 100 recipients per request."""
    rows = 100 * requests
    customers = bench.root / "batch.csv"
    with customers.open("w") as handle:
        sample_data.write(handle, sample_data.customers(rows, seed=12, dirty=False))
    run = bench.campaign(
        "batch",
        customers,
        limits={**unlimited(), "email": ChannelLimit(10, 50)},
        latency_ms=250,
        latency_jitter=0.5,
    )
    run.configure(email_api={"batch_size": "100"})
    bench.run(run, task="SendEmailCampaign")
    run.close()
    sandbox = run.sandbox
    rate = sustained_rate([r["received_at"] for r in sandbox.accepted()])
    ratio = rate / unbatched
    refused = sandbox.stats()["email"]["rate_limited"]
    return Figure(
        f"email batched x100, {rows:,} messages",
        round(rate, 1),
        "msg/s",
        ratio=round(ratio, 1),
        target=">= 50 x unbatched",
        met=ratio >= 50,
        note=f"unbatched {unbatched:.2f} msg/s; {refused} x 429",
    )


def load_segments(_bench: Bench, customers: Path) -> list[Figure]:
    """4. LoadSegments' loader on a large file, in a fresh process for a clean peak RSS."""
    out = subprocess.run(
        [sys.executable, "-m", "campaign_pipeline.bench", "--load-segments", str(customers)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    rows = result["rows"]
    return [
        Figure(
            f"LoadSegments, {rows:,} rows (2 % dirty)",
            round(result["wall"], 1),
            "s",
            round(result["wall"] / result["pyarrow_wall"], 1),
            "<= 30 s at 1M rows",
            result["wall"] <= 30 if rows >= 1_000_000 else None,
            f"ratio to pandas.read_csv(engine='pyarrow') {result['pyarrow_wall']:.1f} s; "
            f"identical to one-by-one: {result['identical']}",
        ),
        Figure(
            "LoadSegments peak RSS",
            round(result["peak_rss_mb"]),
            "MB",
            None,
            "<= 1,536 MB",
            result["peak_rss_mb"] <= 1536,
            "this process + its pool",
        ),
    ]


def load_segments_child(path: str) -> None:
    """The body of measure 4, run as ``--load-segments PATH``."""
    import pandas as pd

    from . import segments
    from .testing.reference import load_one_by_one

    started = time.monotonic()
    fast = segments.load(path, ["premium", "regular", "new"], "US")
    wall = time.monotonic() - started
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    pool = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.monotonic()
    pd.read_csv(path, engine="pyarrow", dtype=str)
    pyarrow_wall = time.monotonic() - started
    slow = load_one_by_one(path, ["premium", "regular", "new"], "US")
    identical = (
        fast.customers.equals(slow.customers)
        and fast.rejected.equals(slow.rejected)
        and fast.summary() == slow.summary()
    )
    print(
        json.dumps(
            {
                "rows": fast.records_read,
                "wall": wall,
                "pyarrow_wall": pyarrow_wall,
                "peak_rss_mb": (own + pool) / 1024,
                "identical": identical,
            }
        )
    )


def million(bench: Bench, customers: Path) -> list[Figure]:
    """5. a big email channel, no limits; 6. its no-op rerun; 11. its report; 7. resuming
    it half sent."""
    run = bench.campaign("million", customers, limits=unlimited(), keep_messages=False)
    sandbox = run.sandbox
    run.configure(email_api=UNLIMITED_EMAIL)
    loaded = bench.run(run, task="LoadSegments")  # on its own: its RSS is not the loop's
    done = bench.run(run, task="SendEmailCampaign")
    stats = sandbox.stats()["email"]
    span = stats["last_request_at"] - stats["first_request_at"]
    per_second = stats["accepted"] / span
    figures = [
        Figure(
            f"send loop, {stats['accepted']:,} recipients (email x100)",
            round(per_second),
            "recipients/s",
            None,
            "",
            None,
            f"{stats['requests']:,} requests in {span:.0f} s; the task took {done['wall']:.0f} s;"
            f" LoadSegments before it {loaded['wall']:.0f} s, {loaded['peak_rss_mb']:.0f} MB",
        ),
        Figure(
            "send loop peak RSS",
            round(done["peak_rss_mb"]),
            "MB",
            None,
            "<= 1,024 MB",
            done["peak_rss_mb"] <= 1024,
            "largest process of the luigi run of the channel task",
        ),
    ]
    before = stats["requests"]
    rerun = bench.run(run, task="SendEmailCampaign")
    sent = sandbox.stats()["email"]["requests"] - before
    figures.append(
        Figure(
            "no-op rerun of the completed campaign",
            round(rerun["wall"], 2),
            "s",
            None,
            "<= 5 s, 0 requests",
            rerun["wall"] <= 5 and sent == 0,
            f"{sent} requests",
        )
    )
    figures += report_of(run)  # before resume(), which puts half of the ledger back
    figures.append(resume(run, sandbox))
    run.close()
    return figures


def report_of(run: Campaign) -> list[Figure]:
    """11. ``reporting.write()`` of the big channel's run folder (its ledger, as sent by
    figure 5), in a fresh process with the run's configuration, for a clean peak RSS."""
    out = subprocess.run(
        [sys.executable, "-m", "campaign_pipeline.bench", "--report", str(run.folder)],
        cwd=REPO,
        env=run.env(),
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    rows, wall = result["records_read"], result["wall"]
    size_mb = (result["html_bytes"] + result["json_bytes"]) / 1e6
    return [
        Figure(
            f"report of a {rows:,}-customer campaign",
            round(wall, 2),
            "s",
            round(wall / 10, 3),
            "< 10 s at 1M customers",
            wall < 10 if rows >= 1_000_000 else None,
            f"reporting.write() of {result['targeted']:,} email recipients read from "
            f"{result['source']}; peak RSS {result['peak_rss_mb']:.0f} MB",
        ),
        Figure(
            "report size, report.html + report.json",
            round(size_mb, 3),
            "MB",
            round(size_mb / 5, 3),
            "< 5 MB",
            size_mb < 5,
            f"report.html {result['html_bytes'] / 1e3:,.0f} kB, "
            f"report.json {result['json_bytes'] / 1e3:,.0f} kB",
        ),
    ]


def report_child(folder: str) -> None:
    """The body of measure 11, run as ``--report FOLDER``: only the write is timed."""
    from . import reporting

    started = time.monotonic()
    html = reporting.write(Path(folder))
    wall = time.monotonic() - started
    document = html.with_name(reporting.REPORT_JSON)
    report = json.loads(document.read_text())
    print(
        json.dumps(
            {
                "wall": wall,
                "records_read": report["customer_file"]["records_read"],
                "targeted": report["channels"]["email"]["targeted"],
                "source": report["channels"]["email"]["source"],
                "html_bytes": html.stat().st_size,
                "json_bytes": document.stat().st_size,
                "peak_rss_mb": _own_peak_rss_mb(),
            }
        )
    )


def _own_peak_rss_mb() -> float:
    """This process's peak RSS since it started (VmHWM). Not getrusage's ru_maxrss, which
    Linux carries over an exec from the forking parent: it gave the bench's own 904 MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def resume(run: Campaign, sandbox: Sandbox) -> Figure:
    """7. Put half of the ledger back to pending and time the first new request."""
    folder = run.folder
    (folder / "email_results.csv").unlink()
    with sqlite3.connect(folder / "email_ledger.sqlite") as db:
        db.execute(
            "UPDATE deliveries SET status = 'pending'"
            " WHERE seq > (SELECT MAX(seq) / 2 FROM deliveries) AND status = 'sent'"
        )
    before = sandbox.stats()["email"]["requests"]
    started = time.time()
    running = run.start(task="SendEmailCampaign")
    while sandbox.stats()["email"]["requests"] == before and running.poll() is None:
        time.sleep(0.005)
    stats = sandbox.stats()["email"]
    waited = stats["last_request_at"] - started if stats["requests"] > before else float("nan")
    kill_group(running)  # the rest would only repeat figure 5
    return Figure(
        "resume: first new request, half of the ledger sent",
        round(waited, 2),
        "s",
        None,
        "",
        None,
        "from the luigi command's start, its imports included",
    )


# The channel's loop itself: no limit, the client's own limit lifted (figures 5 and 9).
UNLIMITED_EMAIL = {"rate_per_second": "1000000", "burst": "1000"}
NO_CONSENT = {"suppressions": "", "dedupe_contacts": "false"}
HISTORY_DAYS = 30
CAMPAIGN_RATE = 7_000  # messages/s a campaign writing to the store sends: figure 5's loop
CAP = {"frequency_cap": "3", "frequency_window_days": "7"}
# What the frequency cap asks and writes, in the consent store's messages table: messages to
# a contact since a time, and one row per message admitted.
WINDOW_COUNT = "SELECT COUNT(*) FROM messages WHERE channel = ? AND contact = ? AND sent_at >= ?"
RESERVE = (
    "INSERT INTO messages (channel, contact, customer_id, campaign, date, sent_at)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)


def at_scale(bench: Bench, customers: Path, suppressions: int, history: int) -> list[Figure]:
    """9. The million-recipient email channel with consent at scale (a suppression file of
    *suppressions* entries, dedupe, a frequency cap over *history* stored messages of 30
    days) against the same channel without consent; 10. the store read while two
    campaigns write to it."""
    plain = bench.campaign("plain", customers, limits=unlimited(), keep_messages=False)
    plain.configure(email_api=UNLIMITED_EMAIL, consent=NO_CONSENT)
    bench.run(plain, task="LoadSegments")
    without = bench.run(plain, task="SendEmailCampaign")
    plain.close()

    run = bench.campaign("consent", customers, limits=unlimited(), keep_messages=False)
    bench.run(run, task="LoadSegments")
    emails = pq.read_table(
        run.folder / "segments.parquet",
        columns=["customer_id", "email"],
        filters=[("email_error", "=", "")],  # the usable addresses
    )
    path = run.root / "suppressions.csv"
    matching = suppression_file(path, emails, suppressions)
    store = run.root / "consent.sqlite"
    seed_history(store, emails, history)
    run.configure(
        email_api=UNLIMITED_EMAIL,
        consent={"suppressions": str(path), "dedupe_contacts": "true", **CAP},
    )
    consented = bench.run(run, task="SendEmailCampaign")
    sent = run.sandbox.stats()["email"]["accepted"]
    run.close()

    ratio = consented["wall"] / without["wall"]
    extra = consented["peak_rss_mb"] - without["peak_rss_mb"]
    cap = f"a cap of {CAP['frequency_cap']} in {CAP['frequency_window_days']} days"
    setting = f"{suppressions:,} suppressions ({matching:,} of them customers), dedupe, {cap}"
    return [
        Figure(
            "consent at scale: the channel's time vs no consent",
            round(consented["wall"], 1),
            "s",
            round(ratio, 3),
            "<= 1.20",
            ratio <= 1.20,
            f"{setting}; {history:,} stored messages of {HISTORY_DAYS} days; {sent:,} sent; "
            f"without consent {without['wall']:.1f} s (each a luigi run of the channel task)",
        ),
        Figure(
            "consent at scale: peak RSS vs no consent",
            round(extra),
            "MB more",
            None,
            "<= +200 MB",
            extra <= 200,
            f"{consented['peak_rss_mb']:.0f} MB with consent, {without['peak_rss_mb']:.0f} MB "
            "without",
        ),
        store_under_writes(store, 4 if history < 1_000_000 else 20),
    ]


def suppression_file(path: Path, customers, entries: int) -> int:
    """Write a suppression file of *entries* rows: a tenth of them customers of the file
    (every tenth such row by customer id, the others their address in capitals), the rest
    addresses no customer has, as an opt-out list gathered over years holds. Returns how
    many name customers."""
    ids = customers.column("customer_id").to_pylist()
    emails = customers.column("email").to_pylist()
    step = max(1, len(ids) // max(1, entries // 10))
    matching = 0
    with path.open("w") as handle:
        handle.write("channel,contact,customer_id\n")
        for n in range(0, len(ids), step):
            if matching >= entries // 10 or not emails[n]:
                continue
            matching += 1
            row = f"all,,{ids[n]}" if matching % 10 == 0 else f"email,{emails[n].upper()},"
            handle.write(row + "\n")
        for n in range(entries - matching):
            handle.write(f"all,gone.{n}@example.org,\n")
    return matching


def seed_history(store: Path, customers, rows: int) -> None:
    """*rows* messages of the last 30 days in the store's ``messages`` table, to the file's
    customers at random, as the frequency cap keeps them. Written directly: the cap's own
    code creates the same table (CREATE ... IF NOT EXISTS)."""
    rng = np.random.default_rng(9)
    ids = customers.column("customer_id").to_numpy(zero_copy_only=False)
    emails = customers.column("email").to_numpy(zero_copy_only=False)
    picks = rng.integers(0, len(ids), rows)
    ages = rng.uniform(0, HISTORY_DAYS * 86400, rows)
    now = datetime.datetime.now(datetime.UTC)

    def messages():
        for pick, age in zip(picks.tolist(), ages.tolist(), strict=True):
            sent = now - datetime.timedelta(seconds=age)
            day = sent.date().isoformat()
            stamp = sent.isoformat(timespec="milliseconds")
            yield "email", emails[pick].casefold(), ids[pick], f"history-{day}", day, stamp

    with contextlib.closing(sqlite3.connect(store)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, channel TEXT NOT NULL,"
            " contact TEXT NOT NULL, customer_id TEXT NOT NULL, campaign TEXT NOT NULL,"
            " date TEXT NOT NULL, sent_at TEXT NOT NULL)"
        )
        with db:
            db.executemany(RESERVE, (m for m in messages() if m[1]))
        db.execute(
            "CREATE INDEX IF NOT EXISTS messages_by_contact ON messages (channel, contact, sent_at)"
        )


def store_under_writes(store: Path, seconds: float) -> Figure:
    """10. What ``campaign-consent list`` waits for (open the store, list every entry, one
    frequency-cap count) while two campaigns write to the same store: each reserves its
    recipients a page of 1,000 messages per transaction, 7,000 a second, and learns a
    refusal now and then."""
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    written = context.Value("l", 0)
    writers = [
        context.Process(target=campaign_writes, args=(str(store), n, stop, written)) for n in (1, 2)
    ]
    for writer in writers:
        writer.start()
    while written.value == 0:  # started: the imports of a spawned process take a while
        if not all(writer.is_alive() for writer in writers):
            raise RuntimeError("a writer of the consent store benchmark died; see its stderr")
        time.sleep(0.01)
    latencies = []
    started = time.monotonic()
    with contextlib.closing(sqlite3.connect(store, timeout=30)) as cap:
        while time.monotonic() - started < seconds:
            began = time.perf_counter()
            with ConsentStore(str(store)) as opened:  # as campaign-consent list does
                listed = len(list(opened.entries()))
            cap.execute(WINDOW_COUNT, ("email", "gone.1@example.org", "2000-01-01")).fetchone()
            latencies.append(time.perf_counter() - began)
            time.sleep(0.02)
    stop.set()
    for writer in writers:
        writer.join(timeout=60)
    span = time.monotonic() - started
    worst, typical = max(latencies) * 1000, statistics.median(latencies) * 1000
    return Figure(
        "consent store: worst read while 2 campaigns write",
        round(worst, 1),
        "ms",
        None,
        "<= 500 ms",
        worst <= 500,
        f"{len(latencies):,} reads of {listed:,} entries and a cap count, median "
        f"{typical:.1f} ms; the writers stored {written.value / span:,.0f} messages/s",
    )


def campaign_writes(store: str, n: int, stop, written) -> None:
    """One campaign's writes to the store, until *stop* (run in a process of its own): a
    page of 1,000 messages at a time, at the pace of a send loop with no limit."""
    db = sqlite3.connect(store, timeout=30, isolation_level="IMMEDIATE")
    with ConsentStore(store) as opened, contextlib.closing(db):
        page = 0
        started = time.monotonic()
        while not stop.wait(max(0.0, started + page * 1000 / CAMPAIGN_RATE - time.monotonic())):
            page += 1
            now = datetime.datetime.now(datetime.UTC)
            rows = [
                ("email", f"w{n}.{page}.{i}@example.org", f"W{n}-{page}-{i}", f"writer{n}",
                 now.date().isoformat(), now.isoformat(timespec="milliseconds"))
                for i in range(1000)
            ]  # fmt: skip
            with db:  # BEGIN ... COMMIT
                db.executemany(RESERVE, rows)
            if page % 10 == 0:
                opened.learn("email", f"w{n}.{page}@example.org", f"writer{n}", "400")
            with written.get_lock():
                written.value += len(rows)


def bucket_cost(bench: Bench, takes: int) -> Figure:
    """8. What taking a token costs: the bucket every process shares (a file under flock)
    against a bucket kept in one process."""
    from .ratelimit import FileStateStore, Throttle

    def per_take(store: FileStateStore | None) -> float:
        throttle = Throttle(1_000_000, 1000, store)  # a limit it never reaches: no waiting
        started = time.perf_counter()
        for _ in range(takes):
            throttle.take()
        return (time.perf_counter() - started) / takes * 1e6

    alone = per_take(None)
    shared = per_take(FileStateStore(bench.root / "cost.bucket"))
    return Figure(
        "token bucket: one take, shared by processes",
        round(shared, 1),
        "us",
        round(shared / alone, 1),
        "",
        None,
        f"{alone:.1f} us with the bucket in one process; {takes:,} takes each",
    )


def table(figures: list[Figure]) -> str:
    lines = [f"{'figure':<52}{'value':>12} {'unit':<13}{'ratio':>8}  {'target':<32}ok"]
    for f in figures:
        ratio = "" if f.ratio is None else f"{f.ratio:g}"
        ok = {True: "yes", False: "NO", None: "-"}[f.met]
        lines.append(f"{f.name:<52}{f.value:>12,} {f.unit:<13}{ratio:>8}  {f.target:<32}{ok}")
        if f.note:
            lines.append(f"{'':<4}{f.note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="campaign-bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: about a minute")
    parser.add_argument("--rows", type=int, help="rows of the big file (default 1,000,000)")
    parser.add_argument("--json", default="var/bench/results.json")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--load-segments", help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args, command = parser.parse_known_args(argv)
    if args.measure:
        return measure(Path(args.measure), [c for c in command if c != "--"])
    if args.load_segments:
        load_segments_child(args.load_segments)
        return 0
    if args.report:
        report_child(args.report)
        return 0

    rows = args.rows or (50_000 if args.quick else 1_000_000)
    seconds = 12 if args.quick else 60
    with tempfile.TemporaryDirectory(prefix="campaign-bench-") as tmp:
        bench = Bench(Path(tmp))
        started = time.monotonic()
        figures = send_rate_and_fan_out(bench, seconds)
        figures.append(email_batching(bench, 60 if args.quick else 300, figures[0].value))
        big = bench.root / "big.csv"
        sample_data.write_large(big, rows, seed=7, dirty=0.02)
        figures += load_segments(bench, big)
        figures += million(bench, big)
        figures += at_scale(
            bench, big, 5_000 if args.quick else 100_000, 150_000 if args.quick else 3_000_000
        )
        figures.append(bucket_cost(bench, 20_000 if args.quick else 100_000))
        elapsed = time.monotonic() - started
    print(table(figures))
    print(
        f"\n{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"bench took {elapsed:.0f} s"
    )
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"figures": [asdict(f) for f in figures], "seconds": elapsed}, indent=2)
    )
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
