"""campaign_pipeline: multi-channel marketing campaigns as a Luigi workflow.

    luigi --module campaign_pipeline RunCampaign [--date 2026-11-25] [--campaign NAME]

The tasks are imported here so that ``--module campaign_pipeline`` finds them.
"""

from .tasks import (
    CustomerFile,
    DailyCampaign,
    LoadSegments,
    RunCampaign,
    SendEmailCampaign,
    SendPushNotification,
    SendSmsCampaign,
)

__all__ = [
    "CustomerFile",
    "DailyCampaign",
    "LoadSegments",
    "RunCampaign",
    "SendEmailCampaign",
    "SendPushNotification",
    "SendSmsCampaign",
]
