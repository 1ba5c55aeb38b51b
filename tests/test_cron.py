"""Living with it from cron: a quiet `campaign-run daily`, the scheduler check, `make clean`,
re-enabling a disabled task, and the sandbox's --help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import REPO

from campaign_pipeline import sandbox

BIN = Path(sys.executable).parent


def test_sandbox_help_explains_every_option_and_the_command():
    shown = subprocess.run([str(BIN / "campaign-sandbox"), "--help"], capture_output=True,
                           text=True, timeout=30, cwd=REPO)  # fmt: skip

    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())
    for action in sandbox.option_parser()._actions:
        assert action.help, f"{action.option_strings} has no help text"
        assert action.option_strings[-1] in text
        first_words = " ".join(action.help.split()[:4]).replace("%%", "%")
        assert first_words in text, f"the help of {action.option_strings[-1]} is not shown"
    assert "[-- COMMAND [ARG ...]]" in text
    assert 'everything after a lone "--" is a command to run' in text
    assert "exits with the command's code" in text
