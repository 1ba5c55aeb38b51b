"""No warning noise: the commands of the Makefile start without one (issue 19, item 9)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from campaign_pipeline.testing import REPO

MODULES = sorted(
    set(re.findall(r"python -m (campaign_pipeline[\w.]*)", (REPO / "Makefile").read_text()))
)


@pytest.mark.e2e
@pytest.mark.parametrize("module", MODULES)
def test_every_python_dash_m_of_the_makefile_starts_without_a_warning(module):
    """``python -m pkg.module`` of a module its package imports first makes runpy print a
    RuntimeWarning on every ``make run``; ``-W error`` turns any warning into a failure."""
    result = subprocess.run(
        [sys.executable, "-W", "error", "-m", module, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr


def test_the_makefile_runs_modules_with_python_dash_m():
    """The test above has something to check."""
    assert "campaign_pipeline.reporting.server" in MODULES
