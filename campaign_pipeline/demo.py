"""`make demo`: a live campaign to watch in the Luigi visualiser, in one command.

    python -m campaign_pipeline.demo [--rows 1000] [--rate 8] [--latency-ms 150]

It generates a customer file (as ``python -m campaign_pipeline.sample_data`` does), starts
the sandbox provider with latency, a ``luigid`` of its own and a report server (the
visualiser's report links) on 127.0.0.1, prints their addresses, runs the campaign
``demo-live`` through that luigid, and stops what it started at the end, also on Ctrl-C.
Everything it writes is under its folder (``var/demo``), which it empties first: it never
touches ``make run``'s campaign or ``make scheduler``'s luigid and report server.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from . import sample_data
from .channels import registered
from .consent.quiet import demo_window
from .providers import PROVIDER_URL_ENV
from .report import summarise
from .reporting.server import make_server
from .sandbox import ChannelLimit, Sandbox, SandboxConfig, demo_credentials
from .sandbox import describe as describe_sandbox
from .sandbox.config import registered_endpoints
from .sandbox.sendgrid import SuppressedEmail

CAMPAIGN = "demo-live"
BIN = Path(sys.executable).parent
LUIGID_CONFIG = Path(__file__).resolve().parent.parent / "config" / "luigid.cfg"
DEMO_ZONE = "America/Denver"  # quiet hours end soon there: a few sample customers wait
EMAIL_BATCH = 10  # small batches, so that email too takes a while to watch


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m campaign_pipeline.demo", description=__doc__)
    parser.add_argument("--rows", type=int, default=1000, help="customers to generate")
    parser.add_argument(
        "--rate", type=float, default=8.0, help="recipients per second per channel (the limit)"
    )
    parser.add_argument("--latency-ms", type=float, default=150.0, help="the sandbox's latency")
    parser.add_argument("--scheduler-port", type=int, default=8083, help="the demo's luigid")
    parser.add_argument("--folder", default="var/demo", help="emptied first, then all it writes")
    parser.add_argument(
        "--quiet-seconds",
        type=float,
        default=20.0,
        help="quiet hours end this long after the start in Mountain time, so that its "
        "customers' SMS and push are deferred until then; 0: no quiet hours",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    folder = Path(args.folder).resolve()
    shutil.rmtree(folder, ignore_errors=True)  # the demo's own: a fresh campaign to watch
    (folder / "luigid").mkdir(parents=True)
    customers = folder / "customers.csv"
    rows = list(sample_data.customers(args.rows, seed=7, dirty=True))
    if rows:
        rows.append({**rows[0], "customer_id": "D0000001"})  # one person under a second id
    with customers.open("w", newline="") as handle:
        sample_data.write(handle, iter(rows))
    print(
        f"demo: {args.rows:,} customers in {customers} "
        f"(python -m campaign_pipeline.sample_data --rows {args.rows} > FILE makes such a file)",
        flush=True,
    )
    credentials = demo_credentials(registered_endpoints())
    with contextlib.ExitStack() as stack:
        sandbox = start_sandbox(args, credentials, consent_seeds(rows))
        stack.callback(lambda: print(describe_sandbox(sandbox.stats()), flush=True))
        stack.callback(sandbox.stop)
        luigid = start_luigid(folder / "luigid", args.scheduler_port)
        stack.callback(stop, luigid, "luigid")
        url = f"http://127.0.0.1:{args.scheduler_port}"
        if not answers(f"{url}/static/visualiser/index.html", wait=20):
            print(f"demo: luigid did not start; see {folder / 'luigid' / 'luigid.out'}")
            return 1
        print(f"demo: visualiser: {url}/static/visualiser/index.html", flush=True)
        reports = serve_reports(folder / "campaigns")
        stack.callback(stop_serving, reports)
        reports_url = f"http://127.0.0.1:{reports.server_address[1]}"
        print(f"demo: reports (the visualiser's links): {reports_url}/", flush=True)
        command = luigi_command(args, folder, customers, reports_url)
        env = {**os.environ, **credentials, PROVIDER_URL_ENV: sandbox.base_url}
        code = run_campaign(command, env)
        print(f"demo: campaign {CAMPAIGN} ended with exit {code}; run folders in {folder}")
        run = folder / "campaigns" / CAMPAIGN / datetime.date.today().isoformat()
        if run.exists():
            print(summarise(run, str(folder / "consent.sqlite")), flush=True)
        return code


def consent_seeds(rows: list[dict]) -> dict:
    """Sandbox options that make the demo show each consent path on its own customers: two
    addresses on SendGrid's lists, a number that replied STOP, a retired device token."""
    lists = zip(("bounces", "unsubscribes"), rows[1:3], strict=False)  # clean: before row 24
    premium = [row for row in rows[3:20] if row["segment"] == "premium"]  # SMS's and push's
    return {
        "suppressed_emails": [SuppressedEmail(name, row["email"]) for name, row in lists],
        "opted_out": [row["phone"] for row in premium[:1]],
        "unregistered_tokens": [row["device_token"] for row in premium[1:2]],
    }


def start_sandbox(
    args: argparse.Namespace, credentials: dict[str, str], seeds: dict | None = None
) -> Sandbox:
    """The sandbox on a free port, with latency, limiting each channel to the demo's rate,
    with *seeds* (:class:`SandboxConfig` fields: suppression lists, opted-out numbers...)."""
    limits = {
        channel.name: ChannelLimit(args.rate / batch_of(channel), 5) for channel in registered()
    }
    endpoints = registered_endpoints()
    config = SandboxConfig.from_env(
        credentials,
        endpoints,
        port=0,
        limits=limits,
        latency_ms=args.latency_ms,
        latency_jitter=0.3,
        seed=7,
        **(seeds or {}),
    )
    sandbox = Sandbox(config, endpoints).start()
    print(f"demo: sandbox provider on {sandbox.base_url}, {args.latency_ms:g} ms latency")
    return sandbox


def start_luigid(folder: Path, port: int) -> subprocess.Popen:
    """luigid on 127.0.0.1:*port*, its state and log in *folder*, in a session of its own so
    that a Ctrl-C reaches the demo, which stops it."""
    command = [str(BIN / "luigid"), "--address", "127.0.0.1", "--port", str(port)]
    command += ["--logdir", str(folder), "--state-path", str(folder / "state.pickle")]
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(LUIGID_CONFIG)}
    with (folder / "luigid.out").open("ab") as log:
        return subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def serve_reports(root: Path):
    """The report server of *root* on a free port of 127.0.0.1, in a thread of the demo."""
    root.mkdir(parents=True, exist_ok=True)
    server = make_server(root, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, name="reports", daemon=True).start()
    return server


def stop_serving(server) -> None:
    server.shutdown()
    server.server_close()
    print("demo: report server stopped", flush=True)


def answers(url: str, wait: float) -> bool:
    """True once *url* answers 200 (luigid is up), trying for up to *wait* seconds."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    return False


def luigi_command(
    args: argparse.Namespace, folder: Path, customers: Path, reports_url: str = ""
) -> list:
    """RunCampaign through the demo's luigid, its provider settings forced to the sandbox's
    (the base URLs by $CAMPAIGN_PROVIDER_URL), its report links to *reports_url*."""
    today = datetime.date.today().isoformat()
    command = [str(BIN / "luigi"), "--module", "campaign_pipeline", "RunCampaign"]
    command += ["--campaign", CAMPAIGN, "--date", today, "--no-lock"]
    command += ["--scheduler-host", "127.0.0.1", "--scheduler-port", str(args.scheduler_port)]
    command += ["--pipeline-input-path", str(customers)]
    command += ["--pipeline-output-dir", str(folder / "campaigns")]
    command += ["--rate-limits-bucket-dir", str(folder / "rate-limits")]
    # never the shipped 21:00-08:00, which would make a demo at the wrong hour wait a night
    quiet = demo_window(DEMO_ZONE, args.quiet_seconds) if args.quiet_seconds > 0 else ""
    command += ["--consent-quiet-hours", quiet]
    command += ["--consent-store", str(folder / "consent.sqlite")]  # not make run's
    command += ["--report-base-url", reports_url]  # the demo's server, not make scheduler's
    for channel in registered():
        flag = "--" + channel.config.get_task_family().replace("_", "-")
        if batch_of(channel) > 1:
            command += [f"{flag}-batch-size", str(batch_of(channel))]
        rate = args.rate / batch_of(channel)  # the provider's limit counts requests
        command += [f"{flag}-burst", "5", f"{flag}-rate-per-second", str(rate)]
    return command


def batch_of(channel) -> int:
    """Recipients per request in the demo: EMAIL_BATCH where the provider batches."""
    batches = any(name == "batch_size" for name, _ in channel.config.get_params())
    return EMAIL_BATCH if batches else 1


def run_campaign(command: list[str], env: dict[str, str]) -> int:
    """Run luigi; on Ctrl-C (or SIGTERM) stop it and its task processes, then return."""
    luigi = subprocess.Popen(command, env=env, start_new_session=True)
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return luigi.wait()
    except KeyboardInterrupt:
        print("demo: stopping the campaign", flush=True)
        stop(luigi, "the campaign", group=True)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def stop(process: subprocess.Popen, name: str, group: bool = False) -> None:
    """SIGTERM *process* (with *group*: its whole process group, luigi's task processes
    included, and wait for all of them), SIGKILL what is left after 15 seconds."""
    if process.poll() is None or group:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM) if group else process.terminate()
        if not gone(process, group, wait=15):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL) if group else process.kill()
            gone(process, group, wait=5)
    print(f"demo: {name} stopped", flush=True)


def gone(process: subprocess.Popen, group: bool, wait: float) -> bool:
    """Whether *process* (with *group*: every process of its group) ended within *wait* s."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        process.poll()  # reaps it once it ended
        try:
            if group:
                os.killpg(process.pid, 0)  # raises once no process of the group is left
            elif process.returncode is not None:
                return True
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


if __name__ == "__main__":
    sys.exit(main())
