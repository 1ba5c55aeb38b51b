"""Fixtures: a real sandbox provider on 127.0.0.1 and real ``luigi`` CLI runs against it.

Each test gets its own workspace (:class:`campaign_pipeline.testing.Campaign`): a folder
holding its customer file, its run folders and a ``LUIGI_CONFIG_PATH`` override layered on the
repository's own ``luigi.cfg``, with small rate limits and retry delays, and its own sandbox
(port 0).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from campaign_pipeline.testing import (
    CHANNELS,
    DATE,
    LUIGI,
    REPO,
    TASKS,
    Campaign,
    free_port,
    kill_group,
    new_credentials,
    unlimited,
)

__all__ = ["CHANNELS", "DATE", "LUIGI", "REPO", "TASKS", "Campaign", "kill_group", "unlimited"]

RETCODE = {"missing_data": 20, "task_failed": 30}
TOKEN = "dGVzdHRva2Vu:APA91b" + "Q" * 60
# A customer file with a bit of everything the loader must catch: a BOM, odd header case and
# whitespace, an extra column, a duplicate id, a missing id, an unknown segment, odd case and
# spaces in values, bad contacts, a row with too many fields, and a blank line. Each row has a
# contact of its own: customers sharing one are one person, sent once (see Consent).
EDGE_CASE_CSV = (
    "\ufeff Customer_ID ,First_Name,SEGMENT,Email,Phone,Device_Token,notes\n"
    f"A1,Ann,premium,ann@example.com,+12125550100,{TOKEN}1,x\n"
    f"A1,Dup,premium,dup@example.com,+12125550101,{TOKEN}2,x\n"
    f",NoId,regular,noid@example.com,+12125550102,{TOKEN}3,x\n"
    f"A2,Vip,VIP,vip@example.com,+12125550103,{TOKEN}4,x\n"
    f"A3,Bob,  Regular , BOB@Example.COM ,(212) 555-0104,{TOKEN}5,x\n"
    "A4,Bad,new,not-an-email,555-12,short,x\n"
    f"A5,Extra,new,a5@example.com,+12125550105,{TOKEN}6,x,surplus\n"
    "\n"
    f"A6,Last,new,a6@example.com,2125550106,{TOKEN}7,x\n"
)


# Fixtures that run the luigi CLI, luigid or another program: a test using one is end to end.
E2E_FIXTURES = {"campaign", "luigid", "quick_luigid", "prism"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``e2e`` every test that uses an end-to-end fixture (its fixture closure, so
    through other fixtures too); a test that starts a process itself says so with
    ``@pytest.mark.e2e``. ``make test-fast`` runs the others: ``-m 'not e2e'``."""
    for item in items:
        if E2E_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def credentials() -> dict[str, str]:
    """Random credentials: a test that finds one of these in an output found a leak."""
    return new_credentials()


@pytest.fixture
def campaign(tmp_path, credentials):
    workspace = Campaign(tmp_path, credentials)
    yield workspace
    workspace.close()


def wait_for(condition, timeout: float, what: str) -> None:
    """Poll *condition* until it holds; fail the test after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


PRISM_VERSION = "5.16.0"
PRISM_DIR = REPO / "var" / "prism"
# The operations the pipeline calls, cut from the providers' official OpenAPI descriptions by
# tests/specs/make_subset.py and committed there. PROVIDER_SPECS names a folder holding the
# full official files instead (as in ../shared/provider-specs), to test against those.
FULL_SPECS = os.environ.get("PROVIDER_SPECS")
SPECS = Path(FULL_SPECS) if FULL_SPECS else REPO / "tests" / "specs"
# The email channel reads SendGrid's suppression lists before it sends (mail/send and the
# lists share its base URL): the committed email subset holds both; the full official files
# keep them apart, so there "email_lists" is a Prism of its own (test it with a dry run, which
# reads the lists and sends nothing) and mail/send is tested without the sync.
SPEC_FILES = {
    "email": "tsg_mail_v3.json",
    "email_lists": "tsg_suppressions_v3.json",
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
        with log.open("w") as output:  # Prism keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [str(binary), "mock", str(spec), "-h", "127.0.0.1", "-p", str(self.port)],
                stdout=output, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_for(lambda: "Prism is listening" in log.read_text(), 60, f"Prism on {spec.name}")

    def mark(self) -> int:
        return len(self.log.read_text())

    def report_since(self, mark: int, route: str = "") -> tuple[int, list[str]]:
        """(requests that passed validation, error lines) logged after *mark*; with *route*
        (a regex of ``method path``, e.g. ``^post /v3/mail/send$``), those of that route."""
        text = self.log.read_text()[mark:]
        errors = [line for line in text.splitlines() if "✖" in line]
        passed = self.passed_since(mark, text)
        return sum(n for r, n in passed.items() if re.search(route, r)), errors

    def passed_since(self, mark: int, text: str | None = None) -> Counter:
        """The requests that passed validation after *mark*, by route (``get /v3/...``)."""
        text = self.log.read_text()[mark:] if text is None else text
        passed, route = Counter(), ""
        for line in text.splitlines():
            if found := PRISM_REQUEST.search(line):
                route = f"{found['method']} {found['path']}"
            elif "The request passed the validation rules" in line:
                passed[route] += 1
        return passed

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


PRISM_REQUEST = re.compile(r"\[HTTP SERVER\] (?P<method>[a-z]+) (?P<path>\S+) .*Request received")


@pytest.fixture(scope="session")
def prism(tmp_path_factory):
    if not SPECS.is_dir():
        pytest.fail(f"the providers' OpenAPI specs are missing: {SPECS}")
    binary = install_prism()
    logs = tmp_path_factory.mktemp("prism")
    servers = {c: PrismServer(binary, SPECS / f, logs / f"{c}.log") for c, f in SPEC_FILES.items()}
    servers.setdefault("email_lists", servers["email"])
    yield servers
    for server in set(servers.values()):
        server.stop()
