"""A campaign's workspace for real runs: files, config override, credentials, sandbox, CLI.

Everything runs for real: ``luigi --module campaign_pipeline`` in a subprocess, against a
sandbox provider (:mod:`campaign_pipeline.sandbox`) on 127.0.0.1, with a config override
file named by ``LUIGI_CONFIG_PATH`` and layered on the repository's own ``luigi.cfg`` (luigi
reads that one from the folder it runs in, :data:`REPO`).
"""

from __future__ import annotations

import configparser
import csv
import json
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import sample_data
from ..channels import registered
from ..sandbox import (
    ChannelLimit,
    Endpoint,
    Sandbox,
    SandboxConfig,
    credential_vars,
    demo_credentials,
)
from ..sandbox.config import registered_endpoints

REPO = Path(__file__).resolve().parents[2]
LUIGI = str(Path(sys.executable).parent / "luigi")
DATE = "2026-11-25"
CHANNELS = tuple(channel.name for channel in registered())
TASKS = {channel.name: channel.task_name for channel in registered()}
# What start_sandbox sets for each provider: the sandbox's address, no client-side limit to
# speak of, short timeouts and retry delays, so that failures and retries take little time.
FAST_PROVIDER = {
    "rate_per_second": 1000,
    "burst": 100,
    "timeout_seconds": 5,
    "retry_attempts": 2,
    "retry_delay_seconds": 0.2,
}


def new_credentials(endpoints: Sequence[type[Endpoint]] = ()) -> dict[str, str]:
    """Random values of the credential variables the sandbox's *endpoints* require, and
    of the client's own secrets (an unsubscribe key): a test that finds one of these in an
    output found a leak."""
    endpoints = tuple(endpoints) or registered_endpoints()
    required = set(credential_vars(endpoints))
    required.update(name for endpoint in endpoints for name in endpoint.client_vars)
    return {name: value for name, value in demo_credentials(endpoints).items() if name in required}


def unlimited(channels: Sequence[str] = CHANNELS) -> dict[str, ChannelLimit | None]:
    """Sandbox limits that never answer 429."""
    return {channel: None for channel in channels}


def free_port() -> int:
    """A loopback port nothing listens on (bound and released at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL a process started with ``start_new_session`` and everything it started."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def cfg_value(value: object) -> str:
    """A setting as luigi.cfg spells it: lists as JSON, the rest as text."""
    return json.dumps(value) if isinstance(value, (list, tuple)) else str(value)


class Campaign:
    """One workspace: customer file, config override, sandboxes, luigi runs, results.

    *credentials* (default: new random ones) are the variables every run gets and every
    sandbox accepts; *endpoints* the sandbox endpoint classes its sandboxes serve (default:
    the three providers). Call :meth:`close` at the end: it stops the sandboxes.
    """

    def __init__(
        self,
        root: Path,
        credentials: Mapping[str, str] | None = None,
        endpoints: Sequence[type[Endpoint]] | None = None,
        name: str = "test",
        customers_path: Path | None = None,
    ):
        self.root = root
        self.endpoints = tuple(endpoints or registered_endpoints())
        self.credentials = dict(
            new_credentials(self.endpoints) if credentials is None else credentials
        )
        self.name = name
        self.sandbox: Sandbox | None = None
        self.sandboxes: list[Sandbox] = []
        self.customers_path = customers_path or root / "customers.csv"
        self.config_path = root / "override.cfg"
        self.folder = root / "runs" / name / DATE
        self.settings: dict[str, dict[str, object]] = {}

    # -- the sandbox -----------------------------------------------------------------------

    def serve(self, credentials: Mapping[str, str] | None = None, **options: Any) -> Sandbox:
        """Start a sandbox accepting the campaign's credentials (and *credentials* besides,
        e.g. a Twilio API key), configured by *options* (:class:`SandboxConfig` fields), and
        point the campaign at it: every provider's base URL, the campaign's name, customer
        file and output folder."""
        env = {**self.credentials, **(credentials or {})}
        config = SandboxConfig.from_env(env, self.endpoints, **options)
        self.sandbox = Sandbox(config, self.endpoints).start()
        self.sandboxes.append(self.sandbox)
        self.configure(
            campaign={
                "name": self.name,
                "input_path": str(self.customers_path),
                "output_dir": str(self.root / "runs"),
            },
            rate_limits={"bucket_dir": str(self.root / "rate-limits")},
            # no quiet hours: the shipped 21:00-08:00 would make a test's outcome depend on
            # the hour it runs at; the tests of quiet hours set a window of their own
            consent={"store": str(self.root / "consent.sqlite"), "quiet_hours": ""},
            **{f"{channel}_api": {"base_url": self.sandbox.base_url} for channel in self.channels},
            # the shipped templates, which the package names for no channel (the demo's
            # config/demo.cfg does)
            **{
                channel.task.get_task_family(): {"template": "spring_sale"}
                for channel in registered()
            },
        )
        return self.sandbox

    def start_sandbox(
        self, credentials: Mapping[str, str] | None = None, **options: Any
    ) -> Sandbox:
        """:meth:`serve` for a test: no sandbox limits unless *options* set them, one luigi
        retry a second later, and fast providers (:data:`FAST_PROVIDER`, email unbatched)."""
        options.setdefault("limits", unlimited(self.channels))
        sandbox = self.serve(credentials, **options)
        providers = {f"{channel}_api": dict(FAST_PROVIDER) for channel in self.channels}
        if "email_api" in providers:
            providers["email_api"]["batch_size"] = 1  # batching has tests of its own
        self.configure(
            # luigi's own run lock is keyed by the command line in one folder for the machine:
            # two tests running the same command at once would take each other's
            core={"lock_pid_dir": str(self.root / "luigi-pids")},
            scheduler={"retry_count": 1, "retry_delay": 1},
            worker={
                "wait_interval": 0.1,
                "wait_jitter": 0.1,
                "max_keep_alive_idle_duration": "PT3S",
            },
            **providers,
        )
        return sandbox

    @property
    def channels(self) -> list[str]:
        """The channels of the sandbox endpoints served."""
        return [endpoint.channel for endpoint in self.endpoints]

    def close(self) -> None:
        """Stop every sandbox this campaign started."""
        for sandbox in self.sandboxes:
            sandbox.stop()

    # -- files -----------------------------------------------------------------------------

    def configure(self, **sections: dict[str, object]) -> None:
        """Merge settings into the override file (section names as in luigi.cfg)."""
        for section, values in sections.items():
            self.settings.setdefault(section, {}).update(values)
        parser = configparser.ConfigParser(interpolation=None)
        parser.optionxform = str  # luigi task sections are case-sensitive
        for section, values in self.settings.items():
            parser[section] = {key: cfg_value(value) for key, value in values.items()}
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        with self.config_path.open("w") as handle:
            parser.write(handle)

    def write_customers(self, rows: int = 60, dirty: bool = False, seed: int = 3) -> list[dict]:
        """A generated customer file of *rows* rows (with *dirty*: some invalid ones)."""
        customers = list(sample_data.customers(rows, seed=seed, dirty=dirty))
        with self.customers_path.open("w", newline="") as handle:
            sample_data.write(handle, iter(customers))
        return customers

    # -- luigi runs ------------------------------------------------------------------------

    def env(self, **overrides: str) -> dict[str, str]:
        """This environment without its LUIGI* variables, plus the credentials and the
        override file."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("LUIGI")}
        env.update(self.credentials)
        env["LUIGI_CONFIG_PATH"] = str(self.config_path)
        env.update(overrides)
        return env

    def command(
        self,
        *args: str,
        task: str = "RunCampaign",
        date: str = DATE,
        module: str = "campaign_pipeline",
    ) -> list[str]:
        """The luigi command line; *module* may be one that registers channels of its own."""
        flags = ["--local-scheduler", "--no-lock", "--date", date]
        return [LUIGI, "--module", module, task, *flags, *args]

    def run(
        self,
        *args: str,
        env: dict | None = None,
        timeout: float = 120,
        cwd: Path | str = REPO,
        **kw: str,
    ) -> subprocess.CompletedProcess:
        """Run the campaign through the luigi CLI; return the CompletedProcess."""
        return subprocess.run(
            self.command(*args, **kw),
            cwd=cwd,
            env=env or self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, *args: str, task: str = "RunCampaign") -> subprocess.Popen:
        """Start the campaign in its own process group, so that kill_group stops all of it."""
        return subprocess.Popen(
            self.command(*args, task=task),
            cwd=REPO,
            env=self.env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    # -- results ---------------------------------------------------------------------------

    def results(self, channel: str) -> list[dict]:
        with (self.folder / f"{channel}_results.csv").open(newline="") as handle:
            return list(csv.DictReader(handle))

    def accepted(self, channel: str) -> Counter:
        """How many times the sandbox accepted a message for each recipient of *channel*."""
        return Counter(r["recipient"] for r in self.sandbox.accepted() if r["channel"] == channel)

    def requests(self, channel: str) -> int:
        return self.sandbox.stats()[channel]["requests"]
