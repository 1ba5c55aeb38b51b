"""The preflight of every run: each setting this package owns is known, readable and usable.

luigi ignores a key or a section that no parameter reads, so ``target_segment = premium`` or
``[SendSMSCampaign]`` would silently leave the default audience in place; and values such as
``concurrency = 0`` would hang a channel. :func:`check` runs at the start of ``LoadSegments``
and of each channel task, before anything is sent, and raises one
:class:`~campaign_pipeline.config.SettingsError` (a PermanentError: the run ends at once,
exit 30) whose message has one line per problem, naming the section, the key and what is
allowed.

The sections and keys come from the package's own luigi classes (their parameters and
``config_path``), never from a hand-kept list. luigi's own sections (``[core]``,
``[worker]``, ``[scheduler]``, ``[retcode]``, ``[email]``, ``[smtp]``, ...) are left alone,
and so is any other section, unless its name is close to one of ours.
"""

from __future__ import annotations

import difflib
import logging
import os
import tempfile
import urllib.parse
from collections.abc import Iterable
from pathlib import Path

import luigi
import luigi.cmdline_parser
import phonenumbers
from luigi.task_register import Register, TaskClassException

from .config import Bounded, email_api, input_file, pipeline, report
from .exceptions import SettingsError
from .providers import PROVIDER_URL_ENV
from .unsubscribe import Unsubscribe

log = logging.getLogger("campaign_pipeline")

PACKAGE = __name__.split(".")[0]
KINDS = [  # what a value must look like, by parameter type (subclasses first)
    (luigi.DateParameter, "a date YYYY-MM-DD"),
    (luigi.BoolParameter, "true or false"),
    (luigi.IntParameter, "a whole number"),
    (luigi.FloatParameter, "a number"),
    (luigi.ListParameter, 'a JSON list such as ["premium", "new"]'),
]


def check(task: luigi.Task) -> None:
    """Raise a SettingsError naming every problem of the settings that *task*'s run uses.

    *task* is a CampaignTask: its date fills ``input_path`` and its run folder must be
    writable.
    """
    config = luigi.configuration.get_config()
    unreadable = parse_problems(package_classes())
    problems = unknown_keys(config) + unreadable
    if not unreadable:  # the values can be read: check what they mean
        problems += value_problems(task)
    if problems:
        for problem in problems:
            log.error("setting: %s", problem)
        raise SettingsError("\n".join(problems))


def package_classes() -> list[type]:
    """The luigi Config and Task classes of this package that luigi reads a section for.

    A class that others of the package extend (CampaignTask, ChannelTask, the providers'
    base) is never instantiated itself, so luigi never reads a section named after it.
    """
    ours = [cls for cls in _registered() if cls.__module__.split(".")[0] == PACKAGE]
    return [cls for cls in ours if not any(o is not cls and issubclass(o, cls) for o in ours)]


def _registered() -> list[type]:
    classes = []
    for name in Register.task_names():
        try:
            classes.append(Register.get_task_cls(name))
        except TaskClassException:  # two classes of that name: not one of ours
            continue
    return classes


def sections(classes: Iterable[type]) -> dict[str, dict[str, luigi.Parameter]]:
    """Each section the *classes* read, with each key and the parameter that reads it."""
    found: dict[str, dict[str, luigi.Parameter]] = {}
    for cls in classes:
        own = found.setdefault(cls.get_task_family(), {})
        for name, param in cls.get_params():
            own[name] = param
            if path := param._config_path:  # e.g. pipeline.output_dir <- [campaign] output_dir
                found.setdefault(path["section"], {})[path["name"]] = param
    return found


def unknown_keys(config) -> list[str]:
    """A line for each key in one of our sections that no parameter reads, and for each
    section whose name is close to one of ours but is not it."""
    if not hasattr(config, "sections"):  # luigi's TOML parser: nothing to compare
        return []
    ours = sections(package_classes())
    bases = {cls.get_task_family() for cls in _registered() if cls.__module__.startswith(PACKAGE)}
    bases -= set(ours)
    luigis = set(sections(c for c in _registered() if not c.__module__.startswith(PACKAGE)))
    defaults = set(config.defaults())
    problems = []
    for section in config.sections():
        if section in ours:
            keys = {k.replace("-", "_") for k in config.options(section)} - defaults
            unknown = sorted(keys - set(ours[section]))
            problems += [_unknown_key(section, key, ours[section]) for key in unknown]
        elif section in bases:
            problems.append(
                f"[{section}]: no task reads this section (it names a base class); "
                f"set its keys in the sections of the tasks, e.g. [{_leaf(section)}]"
            )
        elif section not in luigis and (match := closest(section, [*ours, *luigis])) in ours:
            problems.append(
                f"[{section}]: unknown section, luigi would ignore it; did you mean [{match}]?"
            )
    return problems


def _unknown_key(section: str, key: str, known: dict) -> str:
    match = closest(key, known)
    hint = f"did you mean {match}?" if match else f"known keys: {', '.join(sorted(known))}"
    return f"[{section}] {key}: unknown key, luigi would ignore it; {hint}"


def _leaf(base: str) -> str:
    cls = Register.get_task_cls(base)
    return next(c.get_task_family() for c in package_classes() if issubclass(c, cls))


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known name that *name* is a misspelling of (same letters in another case, or
    close by difflib), or None."""
    known = list(known)
    same = [k for k in known if k.casefold() == name.casefold()]
    close = difflib.get_close_matches(name.casefold(), [k.casefold() for k in known], 1, 0.75)
    if same:
        return same[0]
    return next((k for k in known if close and k.casefold() == close[0]), None)


def parse_problems(classes: Iterable[type]) -> list[str]:
    """A line for each value in the sections of *classes* that its parameter cannot parse."""
    config = luigi.configuration.get_config()
    problems = []
    for section, keys in sections(classes).items():
        for key, param in keys.items():
            flag = _flag_value(section, key)
            if flag is None and not config.has_option(section, key):
                continue
            try:
                param.parse(config.get(section, key) if flag is None else flag)
            except Exception as exc:  # a parse error, or a bad ${VAR} or % interpolation
                where = f"[{section}] {key}"
                if flag is not None:
                    where = f"--{section}-{key}".replace("_", "-") + f" {flag!r}"
                problems.append(f"{where}: cannot read the value ({exc}); write {_kind(param)}")
    return problems


def _flag_value(section: str, key: str) -> str | None:
    """The value given on the luigi command line for *key* of *section*, if any (luigi
    parses it only when the section's class is built, and then names no key)."""
    parser = luigi.cmdline_parser.CmdlineParser.get_instance()
    return getattr(getattr(parser, "known_args", None), f"{section}_{key}", None)


def _kind(param: luigi.Parameter) -> str:
    return next((text for kind, text in KINDS if isinstance(param, kind)), "a text")


def value_problems(task: luigi.Task) -> list[str]:
    """A line for each setting whose value parses but cannot work."""
    campaign = pipeline()
    problems = range_problems()
    problems += _report_problems(report().base_url)
    problems += _url_credential_problems()
    problems += _unsubscribe_problems()
    problems += _campaign_problems(campaign, task)
    problems += _quiet_hours_problems()
    problems += _targeting_problems(campaign.segments, task)
    problems += _template_problems(task)
    problems += _all_off_problems(task)
    problems += _output_problems(task.run_dir())
    return problems


def range_problems() -> list[str]:
    """A line for each numeric setting outside the :class:`~.config.Range` its parameter
    declares (``allowed=``): of this package's sections and of every channel's provider
    section (a channel another module registers too)."""
    from .channels import registered  # the registry imports tasks, which import this module

    classes = [c for c in package_classes() if issubclass(c, luigi.Config)]
    classes += [c.config for c in registered() if c.config not in classes]
    problems = []
    for cls in classes:
        bounded = [(n, p) for n, p in cls.get_params() if isinstance(p, Bounded)]
        values = cls() if bounded else None
        for name, param in bounded:
            value = getattr(values, name)
            if not param.allowed.allows(value):
                where = param._config_path or {"section": cls.get_task_family(), "name": name}
                problems.append(
                    f"[{where['section']}] {where['name']} = {value}: must be {param.allowed}"
                )
    return problems


def _unsubscribe_problems() -> list[str]:
    """``[email_api]``'s unsubscribe paths, as the email provider checks them: a way out
    that cannot work is the campaign's problem, so no channel sends while it stands."""
    config = email_api()
    url, mailto = config.unsubscribe_url.strip(), config.unsubscribe_mailto.strip()
    return Unsubscribe(url, mailto, key_id=config.unsubscribe_key_id).problems()


def _campaign_problems(campaign: pipeline, task: luigi.Task) -> list[str]:
    problems = []
    region = campaign.default_region
    if region not in phonenumbers.SUPPORTED_REGIONS:
        match = closest(region, phonenumbers.SUPPORTED_REGIONS)
        hint = f"did you mean {match}?" if match else "e.g. US, GB, DE, FR, IN"
        problems.append(
            f"[campaign] default_region = {region}: not a region phonenumbers knows; "
            f"write a two-letter ISO 3166 code in capitals, {hint}"
        )
    segments = list(campaign.segments)
    if not segments or not all(isinstance(s, str) and s.strip() for s in segments):
        problems.append(
            f"[campaign] segments = {segments}: must be a non-empty JSON list of segment "
            'names, e.g. ["premium", "regular", "new"]'
        )
    try:
        input_file(campaign.input_path, task.date)
    except SettingsError as exc:
        problems.append(str(exc))
    return problems


def _report_problems(base_url: str) -> list[str]:
    """``[report] base_url`` is empty or an http(s) URL with a host: the visualiser links to it."""
    if not base_url:
        return []
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme in ("http", "https") and parts.hostname:
        return []
    shown = _without_userinfo(base_url) or base_url
    return [
        f"[report] base_url = {shown}: must be an http:// or https:// URL serving "
        "[campaign] output_dir, e.g. http://127.0.0.1:8084, or empty for file:// links"
    ]


def _url_credential_problems() -> list[str]:
    """A base_url with ``user:password@`` is refused: requests would send them in place of
    the provider's credentials, and every log and link would show them. The line names the
    key and shows the URL without them."""
    from .channels import registered  # the registry imports tasks, which import this module

    urls = {f"[{c.config.get_task_family()}] base_url": c.config().base_url for c in registered()}
    urls["[report] base_url"] = report().base_url
    urls[f"${PROVIDER_URL_ENV}"] = os.environ.get(PROVIDER_URL_ENV, "")
    return [
        f"{key} = {shown}: must not hold a user or password (...@ before the host): requests "
        "would send them in place of the credentials from the environment, and logs would "
        "show them; remove them"
        for key, url in urls.items()
        if (shown := _without_userinfo(url))
    ]


def _without_userinfo(url: str) -> str:
    """*url* with what is before ``@`` in its host part masked; empty when there is none."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # no URL at all: the provider's own check names it
        return ""
    if "@" not in parts.netloc:
        return ""
    return urllib.parse.urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def _quiet_hours_problems() -> list[str]:
    """``[consent] quiet_hours`` must be a window, ``quiet_hours_channels`` name registered
    channels, ``default_timezone`` an IANA zone."""
    from .channels import registered
    from .config import consent
    from .consent.quiet import parse_window
    from .segments.timezones import zone_problem

    settings = consent()
    problems = []
    try:
        parse_window(settings.quiet_hours)
    except ValueError as exc:
        problems.append(f"[consent] quiet_hours = {settings.quiet_hours}: {exc}")
    names = [channel.name for channel in registered()]
    channels = settings.quiet_hours_channels
    if isinstance(channels, str) or not all(isinstance(c, str) for c in channels):
        problems.append(
            f"[consent] quiet_hours_channels = {channels}: must be a JSON list of channel "
            f'names, e.g. ["sms", "push"]'
        )
        channels = ()
    for name in channels:
        if name not in names:
            match = closest(name, names)
            hint = f"did you mean {match}?" if match else f"the channels are {', '.join(names)}"
            problems.append(f"[consent] quiet_hours_channels: {name!r} is not a channel; {hint}")
    if problem := zone_problem(settings.default_timezone):
        problems.append(f"[consent] default_timezone = {settings.default_timezone}: {problem}")
    return problems


def _targeting_problems(segments: Iterable[str], task: luigi.Task) -> list[str]:
    """Every channel's ``target_segments`` must name segments of ``[campaign] segments``.

    All channels are checked whichever task runs: a campaign is all of them.
    """
    allowed = {str(s).casefold(): str(s) for s in segments}
    problems = []
    for channel in _channel_tasks(task):
        cls = type(channel)
        for value in channel.target_segments:
            if str(value).casefold() not in allowed:
                match = closest(str(value), allowed.values())
                hint = f"; did you mean {match}?" if match else ""
                problems.append(
                    f"[{cls.get_task_family()}] target_segments: {value!r} is not one of "
                    f"[campaign] segments ({', '.join(allowed.values())}){hint}"
                )
    return problems


def _channel_tasks(task: luigi.Task) -> list[luigi.Task]:
    """The campaign's channel tasks as this run builds them: *task* itself when it is one,
    the others with its campaign's parameters (a campaign is all its channels)."""
    from .tasks import CampaignTask, ChannelTask  # tasks imports this module

    shared = {name: getattr(task, name) for name, _ in CampaignTask.get_params()}
    return [
        task if type(task) is cls else cls(**shared)
        for cls in package_classes()
        if issubclass(cls, ChannelTask)
    ]


def _template_problems(task: luigi.Task) -> list[str]:
    """Every channel that is on names its template: the package ships none as a default, so
    that a campaign that forgot one stops instead of sending another campaign's text."""
    problems = []
    for channel in _channel_tasks(task):
        cls = type(channel)
        if not channel.template.strip() and not channel.off_reason():
            problems.append(
                f"[{cls.get_task_family()}] template is not set: name a template folder "
                f"under [campaign] templates_dir/{cls.channel}/, e.g. template = spring_sale"
            )
    return problems


def _all_off_problems(task: luigi.Task) -> list[str]:
    """A campaign with every channel off would send nothing and end as a success: a run
    that cron reports as fine while nobody got a message."""
    channels = _channel_tasks(task)
    reasons = [channel.off_reason() for channel in channels]
    if not all(reasons):
        return []
    return [f"every channel is off ({'; '.join(reasons)}): this campaign would send nothing; "
            "switch one on"]  # fmt: skip


def _output_problems(folder: Path) -> list[str]:
    """The run folder must exist or be creatable, and take a new file."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return [f"[campaign] output_dir: cannot write the run folder {folder}: {_why(folder, exc)}"]
    return []


def _why(folder: Path, exc: OSError) -> str:
    existing = next((p for p in [folder, *folder.parents] if p.exists()), None)
    if existing is not None and not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if isinstance(exc, PermissionError):
        return f"no permission to write in {existing}" if existing else "no permission"
    return exc.strerror or str(exc)
