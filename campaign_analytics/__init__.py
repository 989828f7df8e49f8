"""campaign_analytics: CometChat campaign webhook events → an analysis-ready Delta Lake table,
with time-to-delivery and engagement metrics.

Examples
--------
>>> import tempfile, campaign_analytics as ca
>>> table = tempfile.mkdtemp() + "/events"
>>> summary = ca.ingest("data/sample", table)
>>> summary.balanced
True
"""

from __future__ import annotations

from .charts import use_notebook_renderer
from .errors import (
    BackendError,
    CampaignAnalyticsError,
    ParameterError,
    ReportError,
    SourceError,
    TableError,
)
from .flatten import FlattenLimits
from .items import items
from .metrics import campaigns, compare_versions, engagement, summary, time_to_delivery
from .simulate import SimulationTruth, simulate
from .store import (
    LoadSummary,
    events_dataset,
    ingest,
    load,
    read_events,
    read_loads,
    read_rejected,
    read_skipped,
    vacuum,
)
from .triggers import TRIGGERS

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "CampaignAnalyticsError",
    "FlattenLimits",
    "LoadSummary",
    "ParameterError",
    "ReportError",
    "SimulationTruth",
    "SourceError",
    "TRIGGERS",
    "TableError",
    "campaigns",
    "compare_versions",
    "engagement",
    "events_dataset",
    "ingest",
    "items",
    "load",
    "read_events",
    "read_loads",
    "read_rejected",
    "read_skipped",
    "simulate",
    "summary",
    "time_to_delivery",
    "use_notebook_renderer",
    "vacuum",
]
