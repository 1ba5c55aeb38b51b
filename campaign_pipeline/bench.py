"""``make bench``: throughput at the providers' limits, and a million customers.

    campaign-bench [--quick] [--rows 1000000] [--json var/bench/results.json]

Every figure comes from real runs of the ``luigi`` CLI against the sandbox provider on
127.0.0.1, on data generated with a fixed seed. It prints a table of figures with the ratio
that matters and its target, and writes the same as JSON. ``--quick`` scales everything down
(about a minute) to check that the benchmark itself works.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import sample_data
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
    """5. a big email channel, no limits; 6. its no-op rerun; 7. resuming it half sent."""
    run = bench.campaign("million", customers, limits=unlimited(), keep_messages=False)
    sandbox = run.sandbox
    # the loop itself, no limit
    run.configure(email_api={"rate_per_second": "1000000", "burst": "1000"})
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
    figures.append(resume(run, sandbox))
    run.close()
    return figures


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
    args, command = parser.parse_known_args(argv)
    if args.measure:
        return measure(Path(args.measure), [c for c in command if c != "--"])
    if args.load_segments:
        load_segments_child(args.load_segments)
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
