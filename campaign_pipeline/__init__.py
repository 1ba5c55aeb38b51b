"""campaign_pipeline: multi-channel marketing campaigns as a Luigi workflow.

    luigi --module campaign_pipeline RunCampaign [--date 2026-11-25] [--campaign NAME]

The tasks are imported here so that ``--module campaign_pipeline`` finds them, after the
package's own defaults (defaults.cfg) are put under luigi's configuration files.
"""

from . import defaults

defaults.install()

from .channels import EMAIL, PUSH, SMS  # noqa: E402  (registering makes the channel tasks)
from .tasks import (  # noqa: E402  (after the defaults: a task class may read the config)
    CustomerFile,
    DailyCampaign,
    LoadSegments,
    RunCampaign,
)

SendEmailCampaign = EMAIL.task
SendSmsCampaign = SMS.task
SendPushNotification = PUSH.task

__all__ = [
    "CustomerFile",
    "DailyCampaign",
    "LoadSegments",
    "RunCampaign",
    "SendEmailCampaign",
    "SendPushNotification",
    "SendSmsCampaign",
]
