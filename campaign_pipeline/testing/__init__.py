"""Helpers to run campaign_pipeline for real in tests and benchmarks (as ``gokart.testing``).

:mod:`.harness` holds :class:`Campaign`, one workspace folder with its customer file, a
``LUIGI_CONFIG_PATH`` override layered on the repository's ``luigi.cfg``, credentials, sandbox
providers on 127.0.0.1 and ``luigi`` CLI runs against them. ``tests/conftest.py`` and
``campaign-bench`` both build on it. :mod:`.reference` holds the one-by-one loader that
``segments.load`` must match::

    from campaign_pipeline.testing import Campaign

    campaign = Campaign(tmp_path)
    campaign.write_customers(rows=20)
    campaign.start_sandbox()
    done = campaign.run()            # luigi --module campaign_pipeline RunCampaign ...
    rows = campaign.results("email")
    campaign.close()                 # stops its sandboxes
"""

from __future__ import annotations

from .harness import (
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

__all__ = [
    "CHANNELS",
    "DATE",
    "LUIGI",
    "REPO",
    "TASKS",
    "Campaign",
    "free_port",
    "kill_group",
    "new_credentials",
    "unlimited",
]
