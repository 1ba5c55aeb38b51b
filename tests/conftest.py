"""Fixtures: a real sandbox provider on 127.0.0.1 and real ``luigi`` CLI runs against it.

Each test gets its own sandbox (port 0) and a workspace folder holding its customer file,
its run folders and a ``LUIGI_CONFIG_PATH`` override layered on the repository's own
``luigi.cfg``, with small rate limits and retry delays.
"""

from __future__ import annotations

import configparser
import csv
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from campaign_pipeline import sample_data
from campaign_pipeline.sandbox import ChannelLimit, Sandbox, SandboxConfig

REPO = Path(__file__).resolve().parent.parent
LUIGI = str(Path(sys.executable).parent / "luigi")
DATE = "2026-11-25"
CHANNELS = ("email", "sms", "push")
TASKS = {"email": "SendEmailCampaign", "sms": "SendSmsCampaign", "push": "SendPushNotification"}
RETCODE = {"missing_data": 20, "task_failed": 30}
TOKEN = "dGVzdHRva2Vu:APA91b" + "Q" * 60
# A customer file with a bit of everything the loader must catch: a BOM, odd header case and
# whitespace, an extra column, a duplicate id, a missing id, an unknown segment, odd case and
# spaces in values, bad contacts, a row with too many fields, and a blank line.
EDGE_CASE_CSV = (
    "\ufeff Customer_ID ,First_Name,SEGMENT,Email,Phone,Device_Token,notes\n"
    f"A1,Ann,premium,ann@example.com,+12125550100,{TOKEN},x\n"
    f"A1,Dup,premium,dup@example.com,+12125550101,{TOKEN},x\n"
    f",NoId,regular,noid@example.com,+12125550102,{TOKEN},x\n"
    f"A2,Vip,VIP,vip@example.com,+12125550103,{TOKEN},x\n"
    f"A3,Bob,  Regular , BOB@Example.COM ,(212) 555-0104,{TOKEN},x\n"
    "A4,Bad,new,not-an-email,555-12,short,x\n"
    f"A5,Extra,new,a5@example.com,+12125550105,{TOKEN},x,surplus\n"
    "\n"
    f"A6,Last,new,a6@example.com,2125550106,{TOKEN},x\n"
)


@pytest.fixture(scope="session")
def credentials() -> dict[str, str]:
    """Random credentials: a test that finds one of these in an output found a leak."""
    return {
        "EMAIL_API_TOKEN": "email-" + secrets.token_hex(16),
        "SMS_API_ACCOUNT_SID": "AC" + secrets.token_hex(16),
        "SMS_API_AUTH_TOKEN": "smsauth-" + secrets.token_hex(16),
        "PUSH_API_TOKEN": "push-" + secrets.token_hex(16),
    }


def unlimited() -> dict[str, ChannelLimit | None]:
    return {channel: None for channel in CHANNELS}


class Campaign:
    """One test's workspace: customer file, config override, luigi runs, results."""

    def __init__(self, root: Path, credentials: dict[str, str], sandbox_factory):
        self.root = root
        self.credentials = credentials
        self._sandbox_factory = sandbox_factory
        self.sandbox: Sandbox | None = None
        self.customers_path = root / "customers.csv"
        self.config_path = root / "override.cfg"
        self.folder = root / "runs" / "test" / DATE
        self.settings: dict[str, dict[str, object]] = {}

    def start_sandbox(self, credentials=None, **options) -> Sandbox:
        """*credentials*: variables the sandbox accepts besides the campaign's."""
        options.setdefault("limits", unlimited())
        self.sandbox = self._sandbox_factory(credentials, **options)
        url = self.sandbox.base_url
        fast = {
            "base_url": url,
            "rate_per_second": 1000,
            "burst": 100,
            "timeout_seconds": 5,
            "retry_attempts": 2,
            "retry_delay_seconds": 0.2,
        }
        self.configure(
            scheduler={"retry_count": 1, "retry_delay": 1},
            worker={
                "wait_interval": 0.1,
                "wait_jitter": 0.1,
                "max_keep_alive_idle_duration": "PT3S",
            },
            campaign={
                "name": "test",
                "input_path": str(self.customers_path),
                "output_dir": str(self.root / "runs"),
            },
            rate_limits={"bucket_dir": str(self.root / "rate-limits")},
            email_api={**fast, "batch_size": 1},  # batching has tests of its own
            sms_api=fast,
            push_api=fast,
        )
        return self.sandbox

    def configure(self, **sections: dict[str, object]) -> None:
        """Merge settings into the override file (section names as in luigi.cfg)."""
        for section, values in sections.items():
            self.settings.setdefault(section, {}).update(values)
        parser = configparser.ConfigParser(interpolation=None)
        parser.optionxform = str  # luigi task sections are case-sensitive
        for section, values in self.settings.items():
            parser[section] = {key: _cfg_value(value) for key, value in values.items()}
        with self.config_path.open("w") as handle:
            parser.write(handle)

    def write_customers(self, rows: int = 60, dirty: bool = False, seed: int = 3) -> list[dict]:
        customers = list(sample_data.customers(rows, seed=seed, dirty=dirty))
        with self.customers_path.open("w", newline="") as handle:
            sample_data.write(handle, iter(customers))
        return customers

    def env(self, **overrides: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LUIGI")}
        env.update(self.credentials)
        env["LUIGI_CONFIG_PATH"] = str(self.config_path)
        env.update(overrides)
        return env

    def command(self, *args: str, task: str = "RunCampaign", date: str = DATE) -> list[str]:
        flags = ["--local-scheduler", "--no-lock", "--date", date]
        return [LUIGI, "--module", "campaign_pipeline", task, *flags, *args]

    def run(self, *args: str, env: dict | None = None, timeout: float = 120, cwd=REPO, **kw):
        """Run the campaign through the luigi CLI; return the CompletedProcess."""
        return subprocess.run(
            self.command(*args, **kw),
            cwd=cwd,
            env=env or self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, *args: str) -> subprocess.Popen:
        """Start the campaign in its own process group, so a test can SIGKILL all of it."""
        return subprocess.Popen(
            self.command(*args),
            cwd=REPO,
            env=self.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def results(self, channel: str) -> list[dict]:
        with (self.folder / f"{channel}_results.csv").open(newline="") as handle:
            return list(csv.DictReader(handle))

    def accepted(self, channel: str) -> Counter:
        """How many times the sandbox accepted a message for each recipient of *channel*."""
        return Counter(r["recipient"] for r in self.sandbox.accepted() if r["channel"] == channel)

    def requests(self, channel: str) -> int:
        return self.sandbox.stats()[channel]["requests"]


def _cfg_value(value: object) -> str:
    return json.dumps(value) if isinstance(value, (list, tuple)) else str(value)


@pytest.fixture
def campaign(tmp_path, credentials):
    started: list[Sandbox] = []

    def factory(credentials_besides=None, **options) -> Sandbox:
        config = SandboxConfig.from_env({**credentials, **(credentials_besides or {})}, **options)
        started.append(Sandbox(config).start())
        return started[-1]

    yield Campaign(tmp_path, credentials, factory)
    for sandbox in started:
        sandbox.stop()


def free_port() -> int:
    """A loopback port nothing listens on (bound and released at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition, timeout: float, what: str) -> None:
    """Poll *condition* until it holds; fail the test after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def kill_group(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


PRISM_VERSION = "5.16.0"
PRISM_DIR = REPO / "var" / "prism"
# The operations the pipeline calls, cut from the providers' official OpenAPI descriptions by
# tests/specs/make_subset.py and committed there. PROVIDER_SPECS names a folder holding the
# full official files instead (as in ../shared/provider-specs), to test against those.
FULL_SPECS = os.environ.get("PROVIDER_SPECS")
SPECS = Path(FULL_SPECS) if FULL_SPECS else REPO / "tests" / "specs"
SPEC_FILES = {
    "email": "tsg_mail_v3.json",
    "sms": "twilio_api_v2010.json",
    "push": "fcm_v1_messages_send.yaml",
} if FULL_SPECS else {c: f"{c}.json" for c in ("email", "sms", "push")}  # fmt: skip


def install_prism() -> Path:
    """Stoplight Prism from the npm registry, pinned, in a git-ignored folder."""
    binary = PRISM_DIR / "node_modules" / ".bin" / "prism"
    if binary.exists():
        return binary
    npm = shutil.which("npm")
    if not npm:
        pytest.fail("contract tests need Node.js and npm to install @stoplight/prism-cli")
    done = subprocess.run(
        [npm, "install", "--prefix", str(PRISM_DIR), "--no-audit", "--no-fund",
         f"@stoplight/prism-cli@{PRISM_VERSION}"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if done.returncode != 0 or not binary.exists():
        pytest.fail(f"could not install @stoplight/prism-cli@{PRISM_VERSION}:\n{done.stderr}")
    return binary


class PrismServer:
    """`prism mock SPEC` on a free loopback port; its log tells what it validated."""

    def __init__(self, binary: Path, spec: Path, log: Path):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.process = subprocess.Popen(
            [str(binary), "mock", str(spec), "-h", "127.0.0.1", "-p", str(self.port)],
            stdout=log.open("w"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for(lambda: "Prism is listening" in log.read_text(), 60, f"Prism on {spec.name}")

    def mark(self) -> int:
        return len(self.log.read_text())

    def report_since(self, mark: int) -> tuple[int, list[str]]:
        """(requests that passed validation, error lines) logged after *mark*."""
        text = self.log.read_text()[mark:]
        passed = text.count("The request passed the validation rules")
        errors = [line for line in text.splitlines() if "✖" in line]
        return passed, errors

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture(scope="session")
def prism(tmp_path_factory):
    if not SPECS.is_dir():
        pytest.fail(f"the providers' OpenAPI specs are missing: {SPECS}")
    binary = install_prism()
    logs = tmp_path_factory.mktemp("prism")
    servers = {c: PrismServer(binary, SPECS / f, logs / f"{c}.log") for c, f in SPEC_FILES.items()}
    yield servers
    for server in servers.values():
        server.stop()
