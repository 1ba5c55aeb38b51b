"""The campaign's Luigi tasks: load the customers once, then send on three channels at once.

    luigi --module campaign_pipeline RunCampaign [--date 2026-11-25] [--campaign NAME]

Everything a run writes lives in ``{[campaign] output_dir}/{campaign}/{date}/``.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import math
import re
import signal
import threading
from pathlib import Path

import luigi
import luigi.format
import pandas as pd
import pyarrow.parquet as pq

from . import failures, notify, safecsv, segments, settings_check
from . import ledger as states
from .config import (
    DateParameter,
    NamedParseErrors,
    SettingsError,
    email_api,
    input_file,
    push_api,
    schedule,
    sms_api,
)
from .config import pipeline as campaign_config
from .exceptions import PermanentError
from .inputs import CustomerFile, CustomerFileWait
from .ledger import RESULT_COLUMNS, Ledger
from .preview import preview
from .progress import ProgressReporter
from .providers.email import EmailProvider
from .providers.push import PushProvider
from .providers.sms import SmsProvider
from .sender import ChannelSender, ChannelStopped, Settings
from .templates import MessageTemplate

log = logging.getLogger("campaign_pipeline")

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def run_dir(campaign: str, date: datetime.date) -> Path:
    """The folder holding everything of one campaign's run on one date."""
    if not _SAFE_NAME.match(campaign):
        raise ValueError(f"campaign name {campaign!r} must be letters, digits, '.', '_' or '-'")
    return Path(campaign_config().output_dir) / campaign / date.isoformat()


class CampaignTask(NamedParseErrors, luigi.Task):
    """Parameters every task of a campaign run shares."""

    date = DateParameter(default=datetime.date.today())
    campaign = luigi.Parameter(default="demo", config_path={"section": "campaign", "name": "name"})
    dry_run = luigi.BoolParameter(
        default=False, description="Validate, render and build every request; send nothing"
    )

    def run_dir(self) -> Path:
        """The run folder; a dry run keeps to a ``dry-run`` folder inside it."""
        folder = run_dir(self.campaign, self.date)
        return folder / "dry-run" if self.dry_run else folder

    @property
    def worker_timeout(self) -> float | None:
        """``[campaign] timeout_seconds``: luigi terminates a task that runs longer."""
        seconds = campaign_config().timeout_seconds
        return seconds if 0 < seconds < math.inf else None  # a bad value: run() names it

    @property
    def retry_count(self) -> int | None:
        """luigi's retry_count: permanent failures never count towards disabling the task."""
        return failures.retry_count(self)


@CampaignTask.event_handler(luigi.Event.FAILURE)
def _on_failure(task: CampaignTask, exception: BaseException) -> None:
    permanent = isinstance(exception, PermanentError)
    if permanent:
        failures.give_up(task, exception)  # end the run now: a retry would fail the same way
    notify.failed(task, f"{type(exception).__name__}: {exception}", permanent=permanent)


@CampaignTask.event_handler(luigi.Event.TIMEOUT)
@CampaignTask.event_handler(luigi.Event.PROCESS_FAILURE)
def _on_process_end(task: CampaignTask, message: str) -> None:
    notify.failed(task, message)


class LoadSegments(CampaignTask):
    """Validate the customer file; keep the good rows, quarantine the bad ones."""

    def requires(self):
        try:
            path = input_file(campaign_config().input_path, self.date)
        except SettingsError:
            return {}  # nothing to wait for: run() reports the setting
        return {"wait": CustomerFileWait(path), "file": CustomerFile(path)}

    def output(self):
        folder = self.run_dir()
        return {
            "customers": luigi.LocalTarget(folder / "segments.parquet", format=luigi.format.Nop),
            "rejected": luigi.LocalTarget(folder / "rejected.csv"),
            "summary": luigi.LocalTarget(folder / "load_summary.json"),
        }

    def run(self):
        settings_check.check(self)
        config = campaign_config()
        path = self.input()["file"].path
        loaded = segments.load(path, list(config.segments), config.default_region)
        outputs = self.output()
        with outputs["customers"].open("w") as handle:
            loaded.customers.to_parquet(handle, index=False)
        with outputs["rejected"].open("w") as handle:
            rows = loaded.rejected.to_dict("records")
            safecsv.write_rows(handle, segments.REJECTED_COLUMNS, rows)
        summary = {"file": path, **loaded.summary()}
        with outputs["summary"].open("w") as handle:
            json.dump(summary, handle, indent=2)
        message = (
            f"{summary['records_read']:,} read · {summary['valid']:,} valid · "
            f"{summary['rejected']:,} rejected"
        )
        self.set_status_message(message)
        self.set_progress_percentage(100)
        log.info("LoadSegments %s: %s (%s)", path, message, summary["rejected_by_reason"])


class ChannelTask(CampaignTask):
    """Send one channel's message to the targeted customers, at most once each."""

    channel = ""
    provider_class: type = type(None)
    config_class: type = type(None)

    target_segments = luigi.ListParameter(default=["premium", "regular", "new"])
    template = luigi.Parameter(default="spring_sale")
    resend_unknown = luigi.BoolParameter(
        default=False,
        description="Send again to recipients whose request was in flight when a run died",
    )

    def requires(self):
        return LoadSegments(date=self.date, campaign=self.campaign, dry_run=self.dry_run)

    def output(self):
        name = f"{self.channel}_preview.json" if self.dry_run else f"{self.channel}_results.csv"
        return luigi.LocalTarget(self.run_dir() / name)

    def run(self):
        settings_check.check(self)
        config = self.config_class()
        provider = self.provider_class(config, preview=self.dry_run)
        try:
            provider.check()
        except ValueError as exc:  # a setting or credential the provider cannot work with
            raise SettingsError(str(exc)) from None
        template = MessageTemplate(campaign_config().templates_dir, self.channel, self.template)
        fields = set(pq.read_schema(self.customers_path()).names) | {"campaign", "date"}
        template.check(fields)
        if unknown := sorted(set(provider.fields) - fields):
            raise SettingsError(f"[{config.get_task_family()}] asks for unknown field(s) {unknown}")
        if self.dry_run:
            self._write_preview(provider, template)
            return

        ledger = Ledger(str(self.run_dir() / f"{self.channel}_ledger.sqlite"))
        try:
            self._send(provider, template, ledger, config)
            self._write_results(ledger)
        finally:
            ledger.close()

    def customers_path(self) -> str:
        return self.input()["customers"].path

    def _send(self, provider, template, ledger, config) -> None:
        unknown = ledger.recover(self.resend_unknown)
        if unknown:
            log.warning("%s: %d request(s) were in flight when a run died", self.channel, unknown)
        selection = json.dumps(sorted(s.casefold() for s in self.target_segments))
        if not ledger.loaded(selection):  # a resumed run has them all already
            ledger.add(self._recipients(provider.contact_field))
            ledger.mark_loaded(selection)
        sender = ChannelSender(
            provider,
            template,
            ledger,
            Settings.from_config(config),
        )
        baseline = ledger.counts()
        try:
            with ProgressReporter(self, baseline, sender.snapshot), stop_on_sigterm(sender):
                sender.run()
        except ChannelStopped as exc:
            raise RuntimeError(f"{self.channel} channel stopped: {exc}") from None
        waiting = ledger.counts().get(states.PENDING, 0)
        if waiting:
            raise RuntimeError(
                f"{self.channel}: {waiting} recipient(s) still failing transiently after "
                f"{config.retry_attempts} attempt(s); the next run retries exactly those. "
                f"Last error: {sender.last_transient_error}"
            )

    def _recipients(self, contact: str):
        segments_wanted = {s.casefold() for s in self.target_segments}
        error_column = segments.ERROR_COLUMN[self.channel]
        context_extra = {"campaign": self.campaign, "date": self.date.isoformat()}
        # LoadSegments writes empty strings, never nulls: no fillna copy of a 1M-row frame
        customers = pd.read_parquet(self.customers_path(), dtype_backend="pyarrow")
        wanted = customers[customers["segment"].isin(segments_wanted)]
        for start in range(0, len(wanted), 10_000):  # a chunk at a time: 1M dicts need GBs
            for customer in wanted.iloc[start : start + 10_000].to_dict("records"):
                error = customer[error_column]
                yield {
                    "customer_id": customer["customer_id"],
                    "segment": customer["segment"],
                    "recipient": customer[contact],
                    "status": states.SKIPPED if error else states.PENDING,
                    "error": error,
                    "context": {**customer, **context_extra},
                }

    def _write_preview(self, provider, template) -> None:
        recipients = self._recipients(provider.contact_field)
        document = preview(provider, template, recipients, campaign_config().preview_requests)
        document.update(campaign=self.campaign, date=self.date.isoformat(), dry_run=True)
        with self.output().open("w") as handle:
            json.dump(document, handle, indent=2, ensure_ascii=False)
        counts = document["counts"]["by_status"]
        message = "dry run: " + " · ".join(f"{counts[s]:,} {s}" for s in sorted(counts))
        self.set_status_message(message)
        self.set_progress_percentage(100)
        log.info("%s %s -> %s", self.channel, message, self.output().path)

    def _write_results(self, ledger: Ledger) -> None:
        with self.output().open("w") as handle:
            safecsv.write_rows(handle, RESULT_COLUMNS, ledger.rows())
        counts = ledger.counts()
        message = " · ".join(f"{counts[s]:,} {s}" for s in sorted(counts))
        self.set_status_message(message)
        self.set_progress_percentage(100)
        log.info("%s results: %s -> %s", self.channel, message, self.output().path)


@contextlib.contextmanager
def stop_on_sigterm(sender: ChannelSender):
    """On SIGTERM (luigi's worker_timeout), stop sending but record what is in flight."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        sender.stop(f"terminated by signal {signum} (worker_timeout or an operator)")

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class SendEmailCampaign(ChannelTask):
    channel = "email"
    provider_class = EmailProvider
    config_class = email_api


class SendSmsCampaign(ChannelTask):
    channel = "sms"
    provider_class = SmsProvider
    config_class = sms_api


class SendPushNotification(ChannelTask):
    channel = "push"
    provider_class = PushProvider
    config_class = push_api


class RunCampaign(CampaignTask, luigi.WrapperTask):
    """The whole campaign: every channel for one date."""

    def requires(self):
        channels = [
            task(date=self.date, campaign=self.campaign, dry_run=self.dry_run)
            for task in (SendEmailCampaign, SendSmsCampaign, SendPushNotification)
        ]
        settings = schedule()
        previous = self.date - datetime.timedelta(days=1)
        if settings.depends_on_past and previous >= settings.start_date:
            return [*channels, RunCampaign(date=previous, campaign=self.campaign)]  # a real run
        return channels


class DailyCampaign(CampaignTask, luigi.WrapperTask):
    """What ``make daily`` runs: the date's campaign and, with ``[schedule] catchup``, every
    date missed since the last complete one (never before ``start_date``)."""

    def requires(self):
        return [RunCampaign(date=d, campaign=self.campaign) for d in self.dates()]

    def dates(self) -> list[datetime.date]:
        settings = schedule()
        if not settings.catchup:
            return [self.date]
        day, missed = self.date - datetime.timedelta(days=1), []
        while (
            day >= settings.start_date
            and not RunCampaign(date=day, campaign=self.campaign).complete()
        ):
            missed.append(day)
            day -= datetime.timedelta(days=1)
        return [*reversed(missed), self.date]
