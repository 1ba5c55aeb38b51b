"""The campaign's Luigi tasks: load the customers once, then send on three channels at once.

    luigi --module campaign_pipeline RunCampaign [--date 2026-11-25] [--campaign NAME]

Everything a run writes lives in ``{[campaign] output_dir}/{campaign}/{date}/``.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import itertools
import json
import logging
import os
import re
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import luigi
import luigi.format
import pyarrow.parquet as pq

from . import failures, notify, reporting, safecsv, segments, settings_check, termination
from .config import (
    DateParameter,
    NamedParseErrors,
    input_file,
    schedule,
)
from .config import consent as consent_config
from .config import pipeline as campaign_config
from .consent import (
    ConsentStore,
    Suppressions,
    file_digest,
    gate,
    match_key,
    quiet,
    read_suppressions,
)
from .consent.cap import FrequencyCap
from .consent.store import listed_reason
from .exceptions import (
    ChannelStoppedError,
    ListUnavailableError,
    PermanentError,
    RecipientsDeferredError,
    RecipientsPendingError,
    SendingInterruptedError,
    SettingsError,
    SuppressionFileError,
)
from .inputs import CustomerFile, CustomerFileWait
from .ledger import MESSAGED_BEFORE, RESULT_COLUMNS, Ledger, Status, describe_skips
from .preview import preview
from .progress import ProgressReporter, rate_limit, steady_span
from .providers.lists import ListReader, ProviderList
from .reporting import figures, timings
from .sender import ChannelSender, Settings, redactor
from .templates import MessageTemplate, check_renders
from .termination import stop_on_sigterm

log = logging.getLogger("campaign_pipeline")

# Marks the previews this luigi run wrote (worker processes forked from it share it).
_THIS_RUN = f"{os.getpid()}-{uuid.uuid4().hex}"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def run_dir(campaign: str, date: datetime.date) -> Path:
    """The folder holding everything of one campaign's run on one date."""
    if not _SAFE_NAME.match(campaign):
        raise SettingsError(f"campaign name {campaign!r} must be letters, digits, '.', '_' or '-'")
    return Path(campaign_config().output_dir) / campaign / date.isoformat()


class CampaignTask(NamedParseErrors, luigi.Task):
    """Parameters every task of a campaign run shares."""

    date = DateParameter(
        default=datetime.date.today(), description="The date to run for, YYYY-MM-DD; default today"
    )
    campaign = luigi.Parameter(
        default="demo",
        config_path={"section": "campaign", "name": "name"},
        description="Campaign name; default [campaign] name",
    )
    dry_run = luigi.BoolParameter(
        default=False, description="Validate, render and build every request; send nothing"
    )

    def deps(self) -> list[luigi.Task]:
        """What luigi runs before this task. A guard: a dry run requires only dry runs, so
        nothing in its task graph can reach the sending path."""
        required = super().deps()
        if self.dry_run:
            real = [t for t in required if isinstance(t, CampaignTask) and not t.dry_run]
            if real:
                raise RuntimeError(f"dry run {self} requires real runs, which send: {real}")
        return required

    def run_dir(self) -> Path:
        """The run folder; a dry run keeps to a ``dry-run`` folder inside it."""
        folder = run_dir(self.campaign, self.date)
        return folder / "dry-run" if self.dry_run else folder

    @property
    def worker_timeout(self) -> float | None:
        """luigi's backstop for ``[campaign] timeout_seconds``, which the task keeps itself.

        The task stops at timeout_seconds (campaign_pipeline.termination); luigi terminates
        its process only if it is still running a grace period later, time enough for the
        requests in flight to be answered (twice the longest provider timeout) and more.
        """
        seconds = campaign_config().timeout_seconds
        if not (seconds and campaign_config.timeout_seconds.allowed.allows(seconds)):
            return None  # none, or a bad value that run() names
        from .channels import registered

        longest = max(channel.config().timeout_seconds for channel in registered())
        return seconds + 2 * longest + 30

    @property
    def retry_count(self) -> int | None:
        """luigi's retry_count: permanent failures never count towards disabling the task."""
        return failures.retry_count(self)

    def link_report(self) -> None:
        """Point the visualiser at the run folder's report (luigi's tracking URL).

        luigi sends the URL in an ``add_task`` call without the task's retry policy, and
        luigid then applies its own ``retry_count`` to the task's next failure: while
        permanent failures are being discounted (a ``retry_count`` of the task's own, see
        :func:`failures.retry_count`) that would disable the task one retry early, so the
        link waits for a run without them."""
        if self.retry_count is None:
            self.set_tracking_url(reporting.report_url(self.run_dir()))


@CampaignTask.event_handler(luigi.Event.START)
def _start_deadline(_task: CampaignTask) -> None:
    seconds = campaign_config().timeout_seconds
    if campaign_config.timeout_seconds.allowed.allows(seconds):  # else run() names it
        termination.start_deadline(seconds)


@CampaignTask.event_handler(luigi.Event.PROCESSING_TIME)  # run() returned
@CampaignTask.event_handler(luigi.Event.FAILURE)  # run() raised
def _end_deadline(_task: CampaignTask, *_details) -> None:
    termination.end_deadline()


@CampaignTask.event_handler(luigi.Event.FAILURE)
def _on_failure(task: CampaignTask, exception: BaseException) -> None:
    if isinstance(exception, RecipientsDeferredError):
        failures.end_without_retry(task)  # a retry before the window opens defers them again
        return  # not a failure to mail: the exit code (15) and its one line tell cron
    permanent = isinstance(exception, PermanentError)
    if permanent:
        failures.give_up(task, exception)  # end the run now: a retry would fail the same way
    notify.failed(task, f"{type(exception).__name__}: {exception}", permanent=permanent)


@CampaignTask.event_handler(luigi.Event.BROKEN_TASK)
def _on_broken(_task: CampaignTask, exception: BaseException) -> None:
    """requires() raised while luigi scheduled the task: luigi never runs it, and with
    keep_alive the worker would idle for max_keep_alive_idle_duration (6 min) beside the task
    that needs it. A setting it cannot parse (named on its own line) is the same for every
    date of the run, so nothing in this run can mend it: the run ends (exit scheduling_error).
    Anything else may concern one date of a backfill, whose other dates still run."""
    if isinstance(exception, SettingsError):
        failures.end_run()


@CampaignTask.event_handler(luigi.Event.TIMEOUT)
@CampaignTask.event_handler(luigi.Event.PROCESS_FAILURE)
def _on_process_end(task: CampaignTask, message: str) -> None:
    notify.failed(task, message)


# The report's task timings (reporting.timings), and the report rewritten whenever a task
# ends, from the files as they are then: the last report matches them even when a task
# failed and others went on. luigi calls a class's handlers of one event in no set order:
# recording an end and rewriting the report share one handler, so the report lists it.


@CampaignTask.event_handler(luigi.Event.START)
def _record_start(task: CampaignTask) -> None:
    _record(task, "start")


@CampaignTask.event_handler(luigi.Event.SUCCESS)
def _record_success(task: CampaignTask) -> None:
    _record(task, "success")
    if task.task_family not in figures.WRAPPERS:  # CampaignReport wrote it; wrappers do nothing
        _rewrite_report(task)


@CampaignTask.event_handler(luigi.Event.FAILURE)
def _record_failure(task: CampaignTask, exception: BaseException) -> None:
    _record(task, "failure", type(exception).__name__, notify.one_line(exception))
    _rewrite_report(task)


@CampaignTask.event_handler(luigi.Event.TIMEOUT)
def _record_timeout(task: CampaignTask, message: str) -> None:
    """luigi terminated the task's process (worker_timeout): in luigi's worker process."""
    _record(task, "failure", "Timeout", notify.one_line(message))
    _rewrite_report(task)


@CampaignTask.event_handler(luigi.Event.PROCESS_FAILURE)
def _record_crash(task: CampaignTask, message: str) -> None:
    """The task's process died (killed, out of memory): in luigi's worker process."""
    _record(task, "failure", "ProcessFailure", notify.one_line(message))
    _rewrite_report(task)


def _record(task: CampaignTask, event: str, error: str = "", message: str = "") -> None:
    try:
        timings.record(task.run_dir(), task.task_family, task.task_id, event, error, message)
    except Exception as exc:  # a bad campaign name, an unwritable folder: run() says so
        log.warning("could not record %s of %s in the task log: %s", event, task.task_family, exc)


def _rewrite_report(task: CampaignTask) -> None:
    """Rewrite the run folder's report after *task* ended, best-effort: a failure itself is
    what the operator must hear about, never an error of its report."""
    try:
        if settings_check.parse_problems(settings_check.package_classes()):
            log.warning("report not rewritten: a setting cannot be read (named above)")
            return
        reporting.write(task.run_dir(), dry_run=task.dry_run)
    except Exception as exc:
        log.warning("could not rewrite the report after %s: %s", task.task_family, exc)


class LoadSegments(CampaignTask):
    """Validate the customer file; keep the good rows, quarantine the bad ones.

    Complete while the file is the one it loaded: an edited file is loaded again, and the
    channels then follow it (see :meth:`ChannelTask.complete`).
    """

    def requires(self):
        try:
            path = self.input_path()
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

    def complete(self):
        if not super().complete():
            return False
        try:
            current = self.inputs()
        except segments.InputError:
            return False  # run() names the problem
        return current is None or current == self.loaded_inputs()

    def input_path(self) -> str:
        return input_file(campaign_config().input_path, self.date)

    def inputs(self) -> dict | None:
        """What a load depends on: the file's content and the settings that shape it.

        None when the file is gone: nothing newer can be loaded, so what was loaded stands.
        Raises :class:`segments.InputError` when the file cannot be read.
        """
        try:
            path = self.input_path()
        except SettingsError:
            return None  # run() names the setting
        if not os.path.isfile(path):
            return None
        config = campaign_config()
        return {
            "sha256": segments.file_digest(path),
            "segments": [s.casefold() for s in config.segments],
            "default_region": config.default_region,
            "accept_vanity_numbers": config.accept_vanity_numbers,
        }

    def loaded_inputs(self) -> dict | None:
        """The :meth:`inputs` of the load that wrote the outputs."""
        try:
            with self.output()["summary"].open("r") as handle:
                return json.load(handle).get("inputs")
        except (OSError, ValueError):
            return None

    def run(self):
        settings_check.check(self)
        config = campaign_config()
        path = self.input()["file"].path
        inputs = self.inputs()  # before reading: a file edited meanwhile is loaded again later
        loaded = segments.load(
            path, list(config.segments), config.default_region, config.accept_vanity_numbers
        )
        outputs = self.output()
        with outputs["customers"].open("w") as handle:
            loaded.customers.to_parquet(handle, index=False)
        with outputs["rejected"].open("w") as handle:
            rows = loaded.rejected.to_dict("records")
            safecsv.write_rows(handle, segments.REJECTED_COLUMNS, rows)
        summary = {"file": path, **loaded.summary(), "inputs": inputs}
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
    """Send one channel's message to the targeted customers, at most once each.

    One subclass per channel, made by :func:`campaign_pipeline.channels.register` from the
    channel's declaration, which sets the class attributes below.
    """

    channel = ""
    provider_class: type = type(None)
    config_class: type = type(None)
    parts: tuple = ()  # the template's parts (templates.Parts)

    target_segments = luigi.ListParameter(
        default=["premium", "regular", "new"],
        description="The segments this channel sends to (JSON list)",
    )
    # no default: a forgotten template must stop the run, not send the demo's text
    template = luigi.Parameter(
        default="",
        description="Template folder under [campaign] templates_dir/<channel>/ (required)",
    )
    # Part of the task id: an off channel is another task with another output (its off
    # marker), so a channel switched on later the same date is not complete and sends
    enabled = luigi.BoolParameter(
        default=True,
        parsing=luigi.BoolParameter.EXPLICIT_PARSING,
        description="false: the channel is off for this campaign: it needs no template and no "
        "credentials and sends nothing (an empty target_segments is off too)",
    )
    # How a run treats the unknown rows, not what the task produces: no part of its id (as
    # gokart's rerun), so a run with the flag resumes the same task and its ledger
    resend_unknown = luigi.BoolParameter(
        default=False,
        significant=False,
        description="Send again to recipients whose request was in flight when a run died",
    )

    def requires(self):
        return LoadSegments(date=self.date, campaign=self.campaign, dry_run=self.dry_run)

    def output(self):
        if self.off_reason():
            return self.off_marker()
        return self.sent_output()

    def sent_output(self, folder: Path | None = None) -> luigi.LocalTarget:
        """The output of the channel on: its result file, or a dry run's preview."""
        name = f"{self.channel}_preview.json" if self.dry_run else f"{self.channel}_results.csv"
        return luigi.LocalTarget((folder or self.run_dir()) / name)

    def off_marker(self, folder: Path | None = None) -> luigi.LocalTarget:
        """The output of the channel off: a note of why, for the summary and the report."""
        return luigi.LocalTarget((folder or self.run_dir()) / f"{self.channel}_off.json")

    def off_reason(self) -> str:
        """Why the channel is off for this campaign, as its settings say; "" when it is on."""
        if not self.enabled:
            return f"[{self.task_family}] enabled = false"
        if not self.target_segments:
            return f"[{self.task_family}] target_segments = []"
        return ""

    def reported_off(self, folder: Path | None = None) -> str:
        """Why the summary and the report of the run folder *folder* (default: the task's)
        call the channel off, or "": its settings say so, or the folder has no output of
        the channel on but the off marker of a run that was told so on its command line (a
        flag the summary's process does not see)."""
        if reason := self.off_reason():
            return reason
        if self.sent_output(folder).exists():
            return ""
        try:
            with self.off_marker(folder).open("r") as handle:
                return str(json.load(handle).get("off", ""))
        except (OSError, ValueError):
            return ""

    def complete(self):
        """The output exists and was made from the current customer file and targeting; when
        either changed, the channel runs again and sends the difference.

        A dry run's preview is complete only in the luigi run that wrote it: every dry run
        renders it again, so it always shows the current templates, settings and file
        (comparing all they depend on would miss something one day; a preview is cheap)."""
        if self.dry_run:
            return self._preview_of_this_run()
        if self.off_reason():
            return self.output().exists()
        if not self.output().exists():
            return False
        try:
            current = self.requires().inputs()
            if current is None or not os.path.exists(self._ledger_path()):
                return True  # nothing to compare with: running again could only repeat sends
            return self._recorded() == self._selection(current)
        except (segments.InputError, SuppressionFileError):
            return False  # run() names the problem

    def _preview_of_this_run(self) -> bool:
        """Whether this process (or the luigi process that forked it) wrote the preview."""
        try:
            with self.output().open("r") as handle:
                return json.load(handle).get("written_by") == _THIS_RUN
        except (OSError, ValueError):
            return False

    def _selection(self, loaded: dict | None) -> str:
        """The inputs a channel's recipients follow, as recorded in its ledger or preview:
        the loaded file, the targeting, the suppression file's content, the dedupe setting,
        the frequency cap and whether quiet hours apply. Not the consent store: a complete
        channel does not follow it (its own lessons would make it run again), a resumed one
        applies what it learned since (see :meth:`_follow_store`)."""
        targets = sorted({s.casefold() for s in self.target_segments})
        settings = consent_config()
        selection = {
            **(loaded or {}),
            "target_segments": targets,
            "suppressions": file_digest(settings.suppressions),
            "dedupe_contacts": settings.dedupe_contacts,
        }
        if settings.frequency_cap:  # a changed cap decides again for the recipients it capped
            selection["frequency_cap"] = [settings.frequency_cap, settings.frequency_window_days]
        if self.quiet_window() is not None:  # an invalid timezone then skips its customer
            selection["quiet_hours"] = True
        return json.dumps(selection, sort_keys=True)

    def quiet_window(self) -> quiet.Window | None:
        """``[consent] quiet_hours`` when this channel observes them, else None."""
        settings = consent_config()
        if self.channel not in settings.quiet_hours_channels:
            return None
        try:
            return quiet.parse_window(settings.quiet_hours)
        except ValueError:
            return None  # settings_check names it before anything is sent

    def _recorded(self) -> str | None:
        """The selection the ledger's recipients follow, as recorded in it."""
        try:
            return Ledger.recorded_selection(self._ledger_path())
        except (OSError, ValueError):
            return None

    def _ledger_path(self) -> str:
        return str(self.run_dir() / f"{self.channel}_ledger.sqlite")

    def run(self):
        settings_check.check(self)
        self.link_report()
        if reason := self.off_reason():
            self._write_off(reason)
            return
        config = self.config_class()
        provider = self.provider_class(config, preview=self.dry_run)
        provider.check()
        folder = campaign_config().templates_dir
        template = MessageTemplate(folder, self.channel, self.template, self.parts)
        fields = set(pq.read_schema(self.customers_path()).names) | {"campaign", "date"}
        template.check(fields | set(provider.template_variables))
        provider.check_template(template)
        if unknown := sorted(set(provider.fields) - fields):
            raise SettingsError(f"[{config.get_task_family()}] asks for unknown field(s) {unknown}")
        self._check_renders(provider, template)
        suppressions = self._file_suppressions()
        self._applies, self._scope = provider.list_applies, provider.list_scope()
        if self.dry_run:
            self._write_preview(provider, template, suppressions, self._provider_lists(provider))
            return

        ledger = Ledger(self._ledger_path())
        store = ConsentStore(consent_config().store)
        try:
            self._send(provider, template, ledger, config, suppressions, store)
            self._write_results(ledger)
        finally:
            ledger.close()
            store.close()

    def _check_renders(self, provider, template: MessageTemplate) -> None:
        """Render and build the messages of the first targeted customers before anything
        is sent: a template that fails for each of them stops the task (TemplateError),
        every recipient left pending for the fixed rerun rather than failed for good."""
        column = provider.contact_field
        rows = (
            c for c in self._customers(column) if c["targeted"] and c["status"] == Status.PENDING
        )
        check_renders(
            lambda row: provider.build(template, row["recipient"], row["context"]),
            rows,
            f"{self.channel} template {template.folder}",
        )

    def _file_suppressions(self) -> Suppressions:
        """The suppression file's entries for this channel; a malformed file fails the task
        (SuppressionFileError, permanent) before anything is sent."""
        config = campaign_config()
        found = read_suppressions(
            consent_config().suppressions,
            self.channel,
            config.default_region,
            config.accept_vanity_numbers,
        )
        log.info("%s: %d suppression(s) in the suppression file", self.channel, len(found))
        return found

    def _provider_lists(self, provider) -> list[ProviderList]:
        """The provider's own suppression lists (SendGrid's), read before anything is sent;
        a dry run reads them too (GET requests only) unless its credentials stand in for
        unset variables. Raises ChannelStoppedError or ListUnavailableError (lists.py)."""
        unset = [name for name in provider.stand_ins if name in provider.env_keys.values()]
        if self.dry_run and unset:  # the provider's credentials, not the unsubscribe key
            if provider.sync_key and getattr(self.config_class(), provider.sync_key, False):
                log.warning(
                    "%s: dry run without $%s: %s's suppression lists not read; the preview "
                    "skips only what the consent store holds of them",
                    self.channel,
                    ", $".join(unset),
                    provider.name,
                )
            return []
        timeout = self.config_class().timeout_seconds
        reader = ListReader(provider, timeout, redactor(provider.masked()))
        lists = provider.suppression_lists(reader)
        for found in lists:
            log.info("%s: %s: %d entries", self.channel, found.source, len(found.entries))
        return lists

    def _mirror(self, lists: list[ProviderList], store: ConsentStore) -> None:
        """Make the store's copy of each provider list the list as read (see
        ConsentStore.mirror): an address the provider no longer lists is sent again."""
        if not lists:
            return
        partial = [found.source for found in lists if not found.complete]
        for source in partial:
            log.warning(
                "%s: %s changed while it was read, twice: its new entries are added to the "
                "consent store, and every entry it held is kept until a read is complete",
                self.channel,
                source,
            )
        changes = store.mirror(
            self.channel,
            {found.source: [(e.contact, e.date, e.code) for e in found.entries] for found in lists},
            partial,
        )
        log.info(
            "%s: provider lists mirrored in %s: %s",
            self.channel,
            store.path,
            "; ".join(
                f"{source} +{added} -{removed}" for source, (added, removed) in changes.items()
            ),
        )

    def _learner(self, store: ConsentStore, column: str, learned: list):
        """What the sender calls when a provider refuses a contact for good (a STOP reply,
        a retired token, an invalid address): remember it, for the campaigns to come."""

        def learn(row: dict, outcome) -> None:
            key = match_key(column, row["recipient"])
            if store.learn(self.channel, key, self.campaign, outcome.code):
                learned.append(key)

        return learn

    def _cap(self, store: ConsentStore | None, ledger: Ledger | None, column: str) -> FrequencyCap:
        """The frequency cap of this channel (``[consent] frequency_cap``; 0 caps nobody
        but still records each message in the store)."""
        settings = consent_config()
        return FrequencyCap(
            store,
            ledger,
            self.channel,
            column,
            self.campaign,
            self.date.isoformat(),
            settings.frequency_cap,
            settings.frequency_window_days,
        )

    def customers_path(self) -> str:
        return self.input()["customers"].path

    def _send(self, provider, template, ledger, config, suppressions, store) -> None:
        unknown = ledger.recover(self.resend_unknown)
        if unknown:
            log.warning("%s: %d request(s) were in flight when a run died", self.channel, unknown)
        column = provider.contact_field
        self._follow_customers(ledger, column, suppressions, store)
        try:  # after the ledger holds the recipients: they stay pending if this fails
            self._mirror(self._provider_lists(provider), store)
        except (ChannelStoppedError, ListUnavailableError) as exc:
            waiting = ledger.counts().get(Status.PENDING, 0)
            raise type(exc)(
                f"{self.channel} channel stopped: {exc}. {waiting} recipient(s) stay pending "
                "for the next run"
            ) from None
        # the lists changed the store: the ledger follows (a no-op when nothing changed)
        changed = f"{provider.name}'s suppression lists changed the consent store"
        self._follow_customers(ledger, column, suppressions, store, changed)
        learned: list[str] = []
        sender = ChannelSender(
            provider,
            template,
            ledger,
            Settings.from_config(config),
            on_refused=self._learner(store, column, learned),
            admission=[*self._admission(ledger), cap := self._cap(store, ledger, column)],
            max_wait=consent_config().max_wait_minutes * 60,
        )
        baseline = ledger.counts()
        progress = ProgressReporter(
            self,
            baseline,
            lambda: sender.snapshot() + Counter({Status.SKIPPED: cap.skipped}),
            log_every=campaign_config().progress_log_seconds,
            limit=rate_limit(config.rate_per_second, batch := getattr(config, "batch_size", 1)),
            burst=config.burst * batch,
            min_span=steady_span(config.rate_per_second),
            name=self.channel,
            deferred=sender.deferred,
        )
        try:
            with progress, stop_on_sigterm(sender):
                sender.run()
        except (
            ChannelStoppedError,
            SendingInterruptedError,
        ) as exc:  # the message is masked already
            waiting = ledger.counts().get(Status.PENDING, 0)
            raise type(exc)(
                f"{self.channel} channel stopped: {exc}. {waiting} recipient(s) stay pending "
                f"for the next run{self._deferral_note(sender)}"
            ) from None
        finally:
            self._note_send_stats(ledger, sender)
            if learned:
                log.info(
                    "%s: %d contact(s) refused for good by the provider, suppressed from now on "
                    "in %s",
                    self.channel,
                    len(learned),
                    store.path,
                )
        waiting = ledger.counts().get(Status.PENDING, 0)
        deferred, opens, shown = sender.deferred()
        if sender.gave_up_waiting and deferred and deferred >= waiting:
            raise RecipientsDeferredError(
                f"{self.channel}: {deferred} deferred until {shown} ({quiet.utc_text(opens)}) "
                f"by quiet hours, later than [consent] max_wait_minutes = "
                f"{consent_config().max_wait_minutes:g} allows to wait; they stay pending, and "
                "the next run once their window is open sends them"
            )
        if waiting:
            raise RecipientsPendingError(
                f"{self.channel}: {waiting} recipient(s) still failing transiently after "
                f"{config.retry_attempts} attempt(s); the next run retries exactly those. "
                f"Last error: {sender.last_transient_error}"
            )

    @staticmethod
    def _note_send_stats(ledger: Ledger, sender: ChannelSender) -> None:
        """Add this run's 429 answers and requests sent again to the ledger's ``send_stats``
        note, the date's total over its runs, for the report."""
        try:
            noted = json.loads(ledger.noted(SEND_STATS_NOTE) or "{}")
        except ValueError:
            noted = {}
        stats = sender.send_stats()
        total = {key: int(noted.get(key, 0)) + stats.get(key, 0) for key in stats}
        ledger.note(SEND_STATS_NOTE, json.dumps(total))

    def _admission(self, ledger: Ledger) -> list:
        """The rules every pending row passes just before it is sent: quiet hours first."""
        window = self.quiet_window()
        if window is None:
            return []
        return [quiet.QuietHours(window, consent_config().default_timezone, ledger)]

    @staticmethod
    def _deferral_note(sender: ChannelSender) -> str:
        """``, 12 of them deferred by quiet hours; the next window opens ...`` or ""."""
        count, opens, shown = sender.deferred()
        if not count:
            return ""
        return (
            f", {count} of them deferred by quiet hours (their windows had not opened); the "
            f"next window opens {shown} ({quiet.utc_text(opens)})"
        )

    def _follow_customers(
        self,
        ledger: Ledger,
        column: str,
        suppressions: Suppressions,
        store: ConsentStore,
        changed: str = "",
    ) -> None:
        """Bring the ledger in line with the loaded file, the current targeting and the
        suppressions, unless a resumed run finds it there already; then only what the
        consent store learned since is applied (:meth:`_follow_store`). *changed* says what
        changed them during this run (the log says so rather than warn)."""
        rekeyed = ledger.key_contacts(functools.partial(match_key, column))
        selection = self._selection(self.requires().loaded_inputs())
        previous = ledger.selection()
        if previous == selection and not rekeyed and self._follow_store(ledger, store):
            return
        learned, mark = store.barred(self.channel, applies=self._applies)
        entries = itertools.chain(suppressions.barred(), learned)
        dedupe = consent_config().dedupe_contacts
        history = self._history(store) if previous is None else None
        marked = []

        def decide(db: sqlite3.Connection) -> None:
            gate.decide(db, entries, dedupe)
            if history is not None:  # in the same transaction: never pending for a moment
                reason = MESSAGED_BEFORE.format(store=store.path)
                marked.append(gate.unknown_from_history(db, history, reason, dedupe))

        changes = ledger.follow(
            self._customers(column),
            selection,
            decide=decide,
            notes={STORE_MARK: json.dumps([*mark, self._scope])},
        )
        if marked and marked[0]:
            log.warning(
                "%s: the ledger %s is new, but the consent store %s records messages of this "
                "campaign and date: %d recipient(s) marked unknown, not resent (--resend-unknown "
                "sends them again)",
                self.channel,
                ledger.path,
                store.path,
                marked[0],
            )
        described = ", ".join(f"{n:,} {name.replace('_', ' ')}" for name, n in changes.items())
        if changed and any(changes.values()):
            log.info("%s: %s; unsent recipients follow: %s", self.channel, changed, described)
        elif previous is not None and any(changes.values()):
            log.warning(
                "%s: the customer file or the targeting changed since the last run; "
                "unsent recipients follow it: %s",
                self.channel,
                described,
            )

    def _history(self, store: ConsentStore) -> Callable[[list[str]], dict[str, set[str]]] | None:
        """For a new ledger: the lookup of the store's messages of this campaign, date and
        channel by contact (ConsentStore.messaged), when it holds any; a ledger lost since
        they were sent knew what became of them. None with ``--resend-unknown``, which sends
        to whoever may have been messaged."""
        date = self.date.isoformat()
        if not store.has_messages(self.channel, self.campaign, date):
            return None
        if self.resend_unknown:
            log.warning(
                "%s: the ledger is new, but the consent store %s records messages of this "
                "campaign and date; --resend-unknown: they are sent again",
                self.channel,
                store.path,
            )
            return None
        return functools.partial(store.messaged, self.channel, self.campaign, date)

    def _follow_store(self, ledger: Ledger, store: ConsentStore) -> bool:
        """Apply the store's entries added since the ledger last looked; False when the
        recipients must be checked again in full (an entry was removed, the ledger has no
        record of the store, or other entries apply now: another SendGrid group)."""
        try:
            seen_count, seen_last, scope = json.loads(ledger.noted(STORE_MARK) or "")
        except ValueError:  # none, or one of a version that did not record the scope
            return False
        if scope != self._scope:  # entries the ledger left aside apply now, or no longer
            return False
        learned, mark = store.barred(self.channel, after=seen_last, applies=self._applies)
        if mark == [seen_count, seen_last]:
            return True
        if store.kept(self.channel, seen_last) < seen_count:  # an entry left: check everyone
            return False
        notes = {STORE_MARK: json.dumps([*mark, self._scope])}
        applied = ledger.amend(lambda db: gate.bar_new(db, learned), notes)
        if applied and learned:
            log.info(
                "%s: %d consent store entr%s added since the last run applied",
                self.channel,
                len(learned),
                "y" if len(learned) == 1 else "ies",
            )
        return applied

    def _customers(self, contact: str) -> Iterator[dict]:
        """Every customer of the loaded file, in file order; the targeted ones with their
        recipient row (``contact`` its :func:`match_key`), skipped when unusable."""
        segments_wanted = {s.casefold() for s in self.target_segments}
        error_column = segments.error_column(contact)
        context_extra = {"campaign": self.campaign, "date": self.date.isoformat()}
        # a customer whose timezone is not a zone cannot be timed: skipped where quiet hours
        # apply (the loader kept the reason beside the column, as for contacts)
        zone_error = segments.error_column("timezone") if self.quiet_window() else None
        # LoadSegments writes empty strings, never nulls; a batch at a time: the whole file
        # as a frame, or 1M dicts, would take GBs
        customers = pq.ParquetFile(self.customers_path())
        for batch in customers.iter_batches(batch_size=10_000):
            for customer in batch.to_pylist():
                if customer["segment"] not in segments_wanted:
                    # their contact still counts: a suppression of their id bars it
                    key = "" if customer[error_column] else match_key(contact, customer[contact])
                    yield {"customer_id": customer["customer_id"], "targeted": False,
                           "contact": key}  # fmt: skip
                    continue
                # (a file without a timezone column has no timezone_error either)
                error = customer[error_column] or (zone_error and customer.get(zone_error)) or ""
                yield {
                    "customer_id": customer["customer_id"],
                    "targeted": True,
                    "segment": customer["segment"],
                    "recipient": customer[contact],
                    "status": Status.SKIPPED if error else Status.PENDING,
                    "error": error,
                    "context": {**customer, **context_extra},
                    "contact": match_key(contact, customer[contact]),
                }

    def _gated_customers(
        self, column: str, suppressions: Suppressions, store: ConsentStore | None, lists: list
    ) -> Iterator[dict]:
        """:meth:`_customers` through the consent gate, for a dry run: its decisions are
        made in a scratch SQLite table, then joined to a second reading of the file. The
        provider's *lists* count as the real run will have mirrored them, after the store."""
        learned = store.barred(self.channel, applies=self._applies)[0] if store else []
        listed = [
            (gate.CONTACT, entry.contact, listed_reason(found.source, entry.date))
            for found in lists
            for entry in found.entries
        ]
        with contextlib.closing(sqlite3.connect("")) as scratch:  # a temporary file
            scratch.execute(gate.SCRATCH_SCHEMA)
            scratch.executemany(
                "INSERT INTO current VALUES (?, ?, ?, ?, ?)",
                (
                    (c["customer_id"], c["targeted"], c.get("status", ""), c.get("error", ""),
                     c.get("contact", ""))
                    for c in self._customers(column)
                ),
            )  # fmt: skip
            entries = itertools.chain(suppressions.barred(), learned, listed)
            gate.decide(scratch, entries, consent_config().dedupe_contacts, history=False)
            decisions = scratch.execute("SELECT status, error FROM current ORDER BY rowid")
            for customer, (status, error) in zip(self._customers(column), decisions, strict=True):
                if customer["targeted"]:
                    customer.update(status=Status(status), error=error)
                yield customer

    def _write_preview(
        self, provider, template, suppressions: Suppressions, lists: list[ProviderList]
    ) -> None:
        path = consent_config().store
        column = provider.contact_field
        # a dry run reads the store (suppressions, message history), never creates or writes it
        exists = os.path.exists(path)
        with ConsentStore(path, readonly=True) if exists else contextlib.nullcontext() as store:
            customers = self._gated_customers(column, suppressions, store, lists)
            recipients = (c for c in customers if c["targeted"])
            tally = None
            if (window := self.quiet_window()) is not None:
                resolver = quiet.Resolver(window, consent_config().default_timezone)
                tally = quiet.PreviewTally(resolver, time.time())
                recipients = tally.rows(recipients)
            recipients = self._cap(store, None, column).preview(recipients)
            keep = campaign_config().preview_requests
            batch_size = getattr(self.config_class(), "batch_size", None)  # email's batching
            document = preview(provider, template, recipients, keep, batch_size)
        if tally is not None:
            document["counts"]["quiet_hours"] = tally.counts()
        document.update(campaign=self.campaign, date=self.date.isoformat(), dry_run=True)
        document["inputs"] = self._selection(self.requires().loaded_inputs())
        document["written_by"] = _THIS_RUN
        document.update(unmet_past(self.date, self.campaign))
        with self.output().open("w") as handle:
            json.dump(document, handle, indent=2, ensure_ascii=False)
        counts = document["counts"]["by_status"]
        message = "dry run: " + " · ".join(f"{counts[s]:,} {s}" for s in sorted(counts))
        if skips := describe_skips(document["counts"]["skipped_by_reason"]):
            message += f" (skipped: {skips})"
        if tally is not None and (deferred := quiet.describe_preview(tally.counts())):
            message += f"; {deferred}"
        self.set_status_message(message)
        self.set_progress_percentage(100)
        log.info("%s %s -> %s", self.channel, message, self.output().path)
        if "depends_on_past" in document:
            log.warning("%s: %s", self.channel, document["depends_on_past"]["note"])

    def _write_off(self, reason: str) -> None:
        """The channel is off: no template, credentials or recipients are read, nothing is
        sent; its marker says why (and, for a dry run, which luigi run wrote it)."""
        marker = {"channel": self.channel, "off": reason, "written_by": _THIS_RUN}
        with self.output().open("w") as handle:
            json.dump(marker, handle, indent=2)
        self.set_status_message(f"off ({reason}): nothing sent")
        self.set_progress_percentage(100)
        log.info("%s: off (%s): nothing sent -> %s", self.channel, reason, self.output().path)

    def _write_results(self, ledger: Ledger) -> None:
        with self.output().open("w") as handle:
            safecsv.write_rows(handle, RESULT_COLUMNS, ledger.rows())
        counts = ledger.counts()
        message = " · ".join(f"{counts[s]:,} {s}" for s in sorted(counts))
        if skips := describe_skips(ledger.skipped()):
            message += f" (skipped: {skips})"
        if waited := ledger.waited():
            message += f"; {waited:,} deferred by quiet hours, sent once their window opened"
        self.set_status_message(message)
        self.set_progress_percentage(100)
        log.info("%s results: %s -> %s", self.channel, message, self.output().path)


# The consent store's state (count and last id of the channel's entries) the ledger's rows
# were last checked against, in its meta table.
STORE_MARK = "consent_store"
# The sender's counts of 429 answers and of requests sent again, summed over the date's runs
# in the ledger's meta table, for the report.
SEND_STATS_NOTE = "send_stats"


class CampaignReport(CampaignTask):
    """Write the run folder's report.html and report.json once every channel is done.

    Complete while the report was made from the channels' current result files (a dry run:
    previews, which only the luigi run that wrote them counts as complete), and said the
    run was complete: a channel run again, or a report written for a failure, is reported
    again.
    """

    def requires(self):
        from .channels import registered  # the registry makes the channel tasks: it imports us

        return [
            channel.task(date=self.date, campaign=self.campaign, dry_run=self.dry_run)
            for channel in registered()
        ]

    def output(self):
        folder = self.run_dir()
        return {
            "html": luigi.LocalTarget(folder / reporting.REPORT_HTML),
            "json": luigi.LocalTarget(folder / reporting.REPORT_JSON),
        }

    def complete(self):
        if not super().complete() or not all(task.complete() for task in self.requires()):
            return False
        try:
            with self.output()["json"].open("r") as handle:
                written = json.load(handle)
        except (OSError, ValueError):
            return False
        if written.get("status", {}).get("state") != "complete":
            return False
        # a channel switched off, or on again, after its output was made: reported again
        channels = written.get("channels", {})
        shown_off = {name for name, part in channels.items() if part.get("state") == "off"}
        if shown_off != {task.channel for task in self.requires() if task.reported_off()}:
            return False
        return written.get("inputs") == figures.inputs(self.run_dir(), self.dry_run)

    def run(self):
        self.link_report()
        page = reporting.write(self.run_dir(), dry_run=self.dry_run)
        self.set_status_message(f"report: {page}")
        self.set_progress_percentage(100)
        log.info("report: %s", page)


class RunCampaign(CampaignTask, luigi.WrapperTask):
    """The whole campaign: every channel for one date, and its report (CampaignReport
    requires the channels).

    With ``[schedule] depends_on_past`` a real run requires the previous date's campaign. A
    dry run does not: it would send. Its previews say whether that date is complete.
    """

    def requires(self):
        announce_files()
        report = CampaignReport(date=self.date, campaign=self.campaign, dry_run=self.dry_run)
        previous = previous_date(self.date)
        if previous and not self.dry_run:
            return [report, RunCampaign(date=previous, campaign=self.campaign)]
        return [report]

    def run(self):
        """Nothing to do once the report is written: link the visualiser to it."""
        self.link_report()


@functools.cache  # once per run: luigi asks for requires() again and again
def announce_files() -> None:
    """Log the files and folders this run uses, each resolved (relative paths in a config
    file are relative to its folder), so that a run by hand and one from cron can be
    compared."""
    try:
        campaign, consent = campaign_config(), consent_config()
    except SettingsError:
        return  # a value that cannot be read: the settings check names it, exit 30
    files = {
        "customer file": campaign.input_path,
        "run folders": campaign.output_dir,
        "templates": campaign.templates_dir,
        "suppressions": consent.suppressions or "(none)",
        "consent store": consent.store,
        "logs of campaign-run": campaign.log_dir,
    }
    log.info("files: %s", "; ".join(f"{what} {path}" for what, path in files.items()))


def previous_date(date: datetime.date) -> datetime.date | None:
    """The date whose campaign *date*'s requires under ``depends_on_past``, or None."""
    settings = schedule()
    previous = date - datetime.timedelta(days=1)
    if settings.depends_on_past and previous >= settings.start_date:
        return previous
    return None


def unmet_past(date: datetime.date, campaign: str) -> dict:
    """What a dry run of *date* did not run: the previous date's campaign, if not complete.

    ``{}`` when nothing is missing, else ``{"depends_on_past": {...}}`` for the preview.
    """
    previous = previous_date(date)
    if previous is None or RunCampaign(date=previous, campaign=campaign).complete():
        return {}
    note = (
        f"[schedule] depends_on_past: the campaign of {previous} is not complete; a real run "
        f"of {date} runs it first (and any earlier date not complete, back to start_date "
        f"{schedule().start_date}). This dry run ran none of them and sent nothing."
    )
    past = {"previous_date": previous.isoformat(), "complete": False, "note": note}
    return {"depends_on_past": past}


class DailyCampaign(CampaignTask, luigi.WrapperTask):
    """What ``make daily`` runs: the date's campaign and, with ``[schedule] catchup``, every
    date missed since the last complete one (never before ``start_date``)."""

    def requires(self):
        return [
            RunCampaign(date=d, campaign=self.campaign, dry_run=self.dry_run) for d in self.dates()
        ]

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
