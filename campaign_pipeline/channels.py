"""The channels a campaign sends through: each declared once, in one table.

A :class:`Channel` says what makes one: its provider (the wire format, and the customer
column it sends to), its config section, its template parts and the sandbox endpoint that
fakes the provider. :func:`register` adds a channel and makes its luigi task
(``SendEmailCampaign``). Everything that goes over "the channels" reads :func:`registered`:
``RunCampaign``, the report, the masking of failure mail, the settings check, the sandbox,
the bench and the tests. Adding a channel is a provider module, a config class, a template
folder, a sandbox endpoint and one :func:`register` call (see tests/test_channels.py).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import luigi

from .config import email_api, push_api, sms_api
from .providers import Provider
from .providers.email import EmailProvider
from .providers.push import PushProvider
from .providers.sms import SmsProvider
from .templates import Parts


@dataclass(frozen=True)
class Channel:
    name: str  # in file names (email_results.csv) and flags
    task_name: str  # the luigi task that sends it
    provider: type[Provider]
    config: type[luigi.Config]  # the provider's section, e.g. [email_api]
    parts: Parts  # template files, in groups of which one must exist
    sandbox: str | type = ""  # the sandbox endpoint: a class, or "module:Class"
    summary: str = ""  # the task's docstring

    @property
    def task(self) -> type:
        """The luigi task class sending this channel, made by :func:`register`."""
        return _tasks[self.name]

    @property
    def contact(self) -> str:
        """The customer column this channel sends to."""
        return self.provider.contact_field

    def credential_variables(self) -> list[str]:
        """The environment variables holding this channel's credentials, as configured:
        the values of its section's ``*_env`` keys."""
        # each key read on its own (as luigi reads it: flag, file, default), not the whole
        # section: a failure's text is masked even when another key of it cannot be read
        family = self.config.get_task_family()
        params = [(name, p) for name, p in self.config.get_params() if name.endswith("_env")]
        values = [param._get_value(family, name) for name, param in params]
        return [value for value in values if isinstance(value, str) and value]

    def sandbox_endpoint(self) -> type:
        """The sandbox's endpoint class for this channel."""
        if isinstance(self.sandbox, type):
            return self.sandbox
        module, _, name = self.sandbox.partition(":")
        return getattr(importlib.import_module(module), name)


_channels: dict[str, Channel] = {}
_tasks: dict[str, type] = {}


def register(channel: Channel) -> Channel:
    """Add *channel* (or replace the one of its name) and make its luigi task class."""
    from .tasks import ChannelTask  # tasks read the registry when they run, not on import

    task = type(
        channel.task_name,
        (ChannelTask,),
        {
            "__doc__": channel.summary or f"Send the campaign's {channel.name} messages.",
            "__module__": channel.provider.__module__,
            "channel": channel.name,
            "provider_class": channel.provider,
            "config_class": channel.config,
            "parts": channel.parts,
        },
    )
    _tasks[channel.name] = task
    _channels[channel.name] = channel
    return channel


def registered() -> list[Channel]:
    """The channels, in the order they were registered."""
    return list(_channels.values())


def named(name: str) -> Channel:
    """The channel called *name*."""
    try:
        return _channels[name]
    except KeyError:
        known = ", ".join(_channels)
        raise KeyError(f"no channel named {name!r}; the channels are {known}") from None


EMAIL = register(
    Channel(
        "email",
        "SendEmailCampaign",
        EmailProvider,
        email_api,
        parts=(("subject.txt",), ("body.txt", "body.html")),
        sandbox="campaign_pipeline.sandbox.sendgrid:EmailEndpoint",
        summary="Send the email campaign through SendGrid v3 mail/send, in batches.",
    )
)
SMS = register(
    Channel(
        "sms",
        "SendSmsCampaign",
        SmsProvider,
        sms_api,
        parts=(("body.txt",),),
        sandbox="campaign_pipeline.sandbox.twilio:SmsEndpoint",
        summary="Send the SMS campaign through Twilio's Messages API.",
    )
)
PUSH = register(
    Channel(
        "push",
        "SendPushNotification",
        PushProvider,
        push_api,
        parts=(("title.txt",), ("body.txt",)),
        sandbox="campaign_pipeline.sandbox.fcm:PushEndpoint",
        summary="Send the push notification through FCM HTTP v1.",
    )
)
