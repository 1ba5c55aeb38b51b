"""``campaign-sandbox``: the sandbox on the command line, optionally around a command.

Its options, per-channel flags (``--<channel>-rate``, ``--<channel>-burst``) and the
credential variables it requires all derive from the endpoint classes it serves.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from .bucket import ChannelLimit
from .config import (
    ENDPOINTS,
    ErrorRule,
    MissingCredentialsError,
    SandboxConfig,
    registered_endpoints,
)
from .endpoint import Endpoint
from .sendgrid import SuppressedEmail
from .server import Sandbox

COMMAND_HELP = """\
-- COMMAND [ARG ...]
  everything after a lone "--" is a command to run once the sandbox listens, e.g.
  campaign-sandbox --demo-credentials -- luigi --module campaign_pipeline RunCampaign
  --local-scheduler. The command gets SANDBOX_BASE_URL (the sandbox's http://127.0.0.1:PORT)
  and the credentials in its environment; SIGINT/SIGTERM are passed on to it. The sandbox
  stops when the command exits, prints what it saw and exits with the command's code.
  Without a command the sandbox serves until SIGINT or SIGTERM.
"""


def epilog(endpoints: Sequence[type[Endpoint]]) -> str:
    """The help after the options: the command, and the credentials of each channel."""
    lines = [
        COMMAND_HELP,
        "credentials:",
        "  the sandbox accepts only the credentials in these environment variables (all of",
        "  the required ones must be set), or those that --demo-credentials makes up:",
    ]
    for endpoint in endpoints:
        text = " and ".join(endpoint.credential_vars) or "none"
        if endpoint.credentials_note:
            text += "; " + endpoint.credentials_note
        if endpoint.client_vars:
            names = " and ".join(endpoint.client_vars)
            text += f"; --demo-credentials also makes up {names} for the pipeline's client"
        lines += textwrap.wrap(
            text, width=92, initial_indent=f"    {endpoint.channel:<7}", subsequent_indent=" " * 11
        )
    return "\n".join(lines) + "\n"


def parse_args(
    argv: list[str], endpoints: Sequence[type[Endpoint]] = ENDPOINTS
) -> tuple[argparse.Namespace, list[str]]:
    """The sandbox's options, and the command after a lone ``--`` (empty when none).

    The command is split off here rather than left to argparse, so that its own options
    (``luigi --module ...``) are never taken for the sandbox's.
    """
    options, command = argv, []
    if "--" in argv:
        split = argv.index("--")
        options, command = argv[:split], argv[split + 1 :]
    return option_parser(endpoints).parse_args(options), command


def option_parser(endpoints: Sequence[type[Endpoint]] = ENDPOINTS) -> argparse.ArgumentParser:
    """``campaign-sandbox``'s options, each with its help text (``--help``)."""
    channels = ", ".join(e.channel for e in endpoints)
    providers = ", ".join(f"{e.channel} ({e.provider or e.__name__})" for e in endpoints)
    parser = argparse.ArgumentParser(
        prog="campaign-sandbox",
        usage="%(prog)s [OPTION ...] [-- COMMAND [ARG ...]]",
        description=f"Local sandbox of the {providers} providers, on 127.0.0.1.",
        epilog=epilog(endpoints),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add(
        "--port",
        type=int,
        default=8765,
        help="port on 127.0.0.1; 0 picks a free one (default: %(default)s)",
    )
    add(
        "--latency-ms",
        type=float,
        default=0,
        metavar="MS",
        help="added to every answer, in milliseconds (default: %(default)s)",
    )
    add(
        "--latency-jitter",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="latency varies by up to this fraction either way, e.g. 0.5 for ±50%% "
        "(default: %(default)s)",
    )
    add(
        "--error-rate",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="share of requests answered 503 at random (default: %(default)s)",
    )
    add(
        "--hang-rate",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="share of requests that hang for --hang-seconds, then are answered 503 "
        "(default: %(default)s)",
    )
    add(
        "--hang-seconds",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long a hanging request hangs (default: %(default)s)",
    )
    add(
        "--fail-first",
        type=int,
        default=0,
        metavar="N",
        help="answer 503 to the first N requests for each recipient (default: %(default)s)",
    )
    add(
        "--hang-first",
        type=int,
        default=0,
        metavar="N",
        help="hang the first N requests for each recipient, as --hang-rate does "
        "(default: %(default)s)",
    )
    add("--record", metavar="PATH", help="append every accepted message to this JSONL file")
    add(
        "--seed",
        type=int,
        default=0,
        help="seed of the random faults and jitter, for repeatable runs (default: %(default)s)",
    )
    add("--no-rate-limit", action="store_true", help="no token bucket: never answer 429")
    add(
        "--error-rule",
        action="append",
        default=[],
        type=ErrorRule.parse,
        metavar="CHANNEL:REGEX:STATUS[:CODE[:TIMES]]",
        help=f"answer requests for recipients matching REGEX on CHANNEL ({channels}) "
        "with this provider error: HTTP STATUS, the provider's CODE (Twilio's number, FCM's "
        "errorCode, the field SendGrid names: personalizations.*.FIELD names each matching "
        "recipient's own, all in one answer), only the first TIMES times per recipient "
        "when given; a REGEX starting with / (or ^/) matches the path of a request to a provider's "
        "other routes instead (email:/v3/suppression/bounces:503); repeatable",
    )
    add(
        "--suppressed-email",
        action="append",
        default=[],
        type=suppressed_email,
        metavar="LIST:ADDRESS[:YYYY-MM-DD]",
        help="put ADDRESS on SendGrid's suppression LIST (bounces, blocks, spam_reports, "
        "invalid_emails, unsubscribes, or group-ID for an unsubscribe group), listed on that "
        "date (default: now); the sandbox serves the lists' GET endpoints and drops mail to "
        "them after accepting it, as SendGrid does; repeatable",
    )
    add(
        "--removed-while-read",
        action="append",
        default=[],
        type=suppressed_email,
        metavar="LIST:ADDRESS",
        help="take ADDRESS off LIST just after the list's first page is answered, as someone "
        "deleting it at SendGrid while the pipeline reads the list; repeatable",
    )
    add(
        "--opted-out",
        action="append",
        default=[],
        metavar="NUMBER",
        help="an E.164 number that replied STOP: Twilio answers 21610 for it; repeatable",
    )
    add(
        "--unregistered-token",
        action="append",
        default=[],
        metavar="TOKEN",
        help="a device token FCM answers UNREGISTERED (404) for, as it does for tokens "
        "starting with 'unregistered'; repeatable",
    )
    add(
        "--echo-credentials",
        action="store_true",
        help="error answers quote the request's path and Authorization header, as a "
        "careless provider might (to test the client's masking)",
    )
    add(
        "--service-account",
        action="append",
        default=[],
        metavar="PATH",
        help="issue FCM access tokens to the service-account key file PATH; when PATH does "
        "not exist, write a new test key there whose token_uri is this sandbox's; repeatable",
    )
    add(
        "--token-lifetime",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="how long an access token lasts (default: %(default)s, as Google's)",
    )
    add(
        "--token-echo-status",
        type=int,
        default=0,
        metavar="STATUS",
        help="the token endpoint answers every request with STATUS and an HTML page quoting "
        "the request, as a proxy or WAF might (to test that no assertion leaks)",
    )
    add(
        "--demo-credentials",
        action="store_true",
        help="make up random credentials and pass them to COMMAND in the usual variables",
    )
    for endpoint in endpoints:
        channel, limit = endpoint.channel, endpoint.limit
        add(
            f"--{channel}-rate",
            type=float,
            default=limit.rate_per_second if limit else None,
            metavar="PER_S",
            help=f"{channel}: requests per second the token bucket allows; above it, "
            "429 (default: %(default)s)",
        )
        add(
            f"--{channel}-burst",
            type=int,
            default=limit.burst if limit else None,
            metavar="N",
            help=f"{channel}: the token bucket's size (default: %(default)s)",
        )
    return parser


def suppressed_email(text: str) -> SuppressedEmail:
    """``--suppressed-email``'s value, or argparse's one-line error saying what is wrong."""
    try:
        return SuppressedEmail.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def config_from(
    args: argparse.Namespace,
    env: Mapping[str, str],
    endpoints: Sequence[type[Endpoint]] = ENDPOINTS,
) -> SandboxConfig:
    """The configuration of the options *args*, accepting the credentials in *env*."""
    limits: dict[str, ChannelLimit | None] = {}
    for endpoint in endpoints:
        rate = getattr(args, f"{endpoint.channel}_rate")
        burst = getattr(args, f"{endpoint.channel}_burst")
        unlimited = args.no_rate_limit or rate is None or burst is None
        limits[endpoint.channel] = None if unlimited else ChannelLimit(rate, burst)
    return SandboxConfig.from_env(
        env,
        endpoints,
        port=args.port,
        limits=limits,
        latency_ms=args.latency_ms,
        latency_jitter=args.latency_jitter,
        error_rate=args.error_rate,
        hang_rate=args.hang_rate,
        hang_seconds=args.hang_seconds,
        fail_first=args.fail_first,
        hang_first=args.hang_first,
        record_path=args.record,
        seed=args.seed,
        error_rules=args.error_rule,
        echo_credentials=args.echo_credentials,
        token_lifetime=args.token_lifetime,
        token_echo_status=args.token_echo_status,
        suppressed_emails=args.suppressed_email,
        removed_while_read=args.removed_while_read,
        opted_out=args.opted_out,
        unregistered_tokens=args.unregistered_token,
    )


def on_signals(handler: Any) -> dict[int, Any]:
    """Install handler for SIGINT/SIGTERM; return the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}


def serve_until_signal() -> int:
    stop = threading.Event()
    previous = on_signals(lambda _signum, _frame: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def run_command(command: list[str], base_url: str) -> int:
    try:
        child = subprocess.Popen(command, env={**os.environ, "SANDBOX_BASE_URL": base_url})
    except OSError as error:
        print(f"campaign-sandbox: cannot run {command[0]}: {error}", file=sys.stderr)
        return 127
    previous = on_signals(lambda signum, _frame: child.send_signal(signum))
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code  # killed by signal N: shell convention 128+N


def demo_credentials(endpoints: Sequence[type[Endpoint]] = ENDPOINTS) -> dict[str, str]:
    """Fresh random credentials of the right shapes for every variable of *endpoints*
    (the optional ones too), so a demo never touches real ones."""
    values: dict[str, str] = {}
    for endpoint in endpoints:
        values.update(endpoint.demo_credentials())
    return values


def main(argv: list[str] | None = None, endpoints: Sequence[type[Endpoint]] = ()) -> int:
    endpoints = tuple(endpoints) or registered_endpoints()
    args, command = parse_args(sys.argv[1:] if argv is None else argv, endpoints)
    if args.demo_credentials:
        os.environ.update(demo_credentials(endpoints))
    try:
        config = config_from(args, os.environ, endpoints)
    except MissingCredentialsError as error:
        print(f"campaign-sandbox: {error}", file=sys.stderr)
        return 2
    sandbox = Sandbox(config, endpoints)
    try:
        sandbox.start()
    except OSError as error:
        print(f"campaign-sandbox: cannot listen on port {args.port}: {error}", file=sys.stderr)
        return 1
    print(f"sandbox provider listening on {sandbox.base_url}", flush=True)
    if problem := service_accounts(sandbox, args.service_account):
        print(f"campaign-sandbox: {problem}", file=sys.stderr)
        sandbox.stop()
        return 2
    try:
        return run_command(command, sandbox.base_url) if command else serve_until_signal()
    finally:
        sandbox.stop()
        print(describe(sandbox.stats()), flush=True)


def service_accounts(sandbox: Sandbox, paths: list[str]) -> str:
    """Trust the key file at each of *paths*, writing a new one where none is; return what
    went wrong, or ""."""
    for path in paths:
        try:
            if os.path.exists(path):
                with open(path, encoding="utf-8") as handle:
                    sandbox.trust(json.load(handle))
                continue
            key = sandbox.new_service_account()
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                json.dump(key, handle, indent=2)
            print(f"wrote a test service-account key to {path}", flush=True)
        except (OSError, ValueError, KeyError, TypeError) as error:
            return f"--service-account {path}: not a service-account key file ({error})"
    return ""


def describe(stats: dict) -> str:
    """One line per channel of what the sandbox saw, for the end of a demo run."""
    lines = ["sandbox provider saw:"]
    for channel, seen in stats.items():
        lines.append(
            f"  {channel:<6}{seen['requests']:>7,} requests{seen['accepted']:>7,} accepted"
            f"{seen['rate_limited']:>5,} rate-limited (429)"
        )
    if tokens := sum(seen.get("tokens_issued", 0) for seen in stats.values()):
        lines.append(f"  oauth {tokens:>7,} access tokens issued")
    return "\n".join(lines)
