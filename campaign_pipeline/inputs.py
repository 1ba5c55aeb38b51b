"""The customer file as luigi sees it: an input made outside the pipeline, and the wait for it.

``LoadSegments`` requires both tasks. :class:`CustomerFile` is luigi's usual external
dependency: while the file is missing the run ends with ``missing_data`` (exit 20).
:class:`CustomerFileWait` makes that happen at once (or after ``[campaign]
wait_for_input_minutes``) rather than after ``[worker] max_keep_alive_idle_duration``.
"""

from __future__ import annotations

import logging
import os
import time

import luigi

from .config import pipeline as campaign_config

log = logging.getLogger("campaign_pipeline")


def _missing(path: str) -> bool:
    """True when nothing is at *path*. A path that is there but cannot be read (a folder, no
    permission, a parent that is a file) is not missing: LoadSegments names the problem."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return False


class CustomerFile(luigi.ExternalTask):
    """The customer CSV, produced outside this pipeline."""

    path = luigi.Parameter(description="The customer CSV")

    def output(self):
        return luigi.LocalTarget(self.path)

    def complete(self) -> bool:
        return not _missing(self.path)


class CustomerFileWait(luigi.ExternalTask):
    """The wait for the customer file: complete once the file is there.

    It waits up to ``[campaign] wait_for_input_minutes`` for a file that arrives late, saying
    so in the log. A file still missing then makes the task ``disabled``: luigi counts
    nothing that needs the file as pending any more, so a ``keep_alive`` worker ends the run
    at once with ``missing_data`` (the CustomerFile beside it is the missing dependency)
    instead of idling. This is a worker's disable, which the next run overrides. (Disabling
    CustomerFile itself would not do: luigi's summary would then call everything that needs
    it ``not_run``, exit 25, rather than a missing dependency.)
    """

    path = luigi.Parameter(description="The customer CSV")
    POLL_SECONDS = 1.0
    _present: bool | None = None

    def complete(self) -> bool:
        if self._present is None:  # once per run: luigi asks for complete() and disabled
            self._present = self._wait()
        return self._present

    @property
    def disabled(self) -> bool:
        return not self.complete()

    def _wait(self) -> bool:
        minutes = campaign_config().wait_for_input_minutes
        if not campaign_config.wait_for_input_minutes.allowed.allows(minutes):
            minutes = 0.0  # no wait of years: LoadSegments' settings check names the value
        if not _missing(self.path):
            return True
        if minutes:
            log.info(
                "waiting up to %g minute(s) for the customer file %s "
                "([campaign] wait_for_input_minutes)",
                minutes,
                self.path,
            )
            deadline = time.monotonic() + minutes * 60
            while _missing(self.path):
                if time.monotonic() >= deadline:
                    break
                time.sleep(min(self.POLL_SECONDS, max(0.0, deadline - time.monotonic())))
            else:
                log.info("customer file %s arrived", self.path)
                return True
        waited = f" after waiting {minutes:g} minute(s)" if minutes else ""
        log.error(
            "customer file %s does not exist%s; nothing sent (missing_data). "
            "[campaign] wait_for_input_minutes sets how long a run waits for it",
            self.path,
            waited,
        )
        return False
