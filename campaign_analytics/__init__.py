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

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from .errors import (
    BackendError,
    CampaignAnalyticsError,
    ParameterError,
    ReportError,
    SourceError,
    TableError,
)

if TYPE_CHECKING:
    from .charts import use_notebook_renderer
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

# Public name -> the module that defines it. Modules are imported on first use, so a job
# that only loads files never pays for Ibis, SciPy or plotly.
_HOMES: dict[str, str] = {
    "use_notebook_renderer": "charts",
    "FlattenLimits": "flatten",
    "items": "items",
    **dict.fromkeys(["campaigns", "compare_versions", "engagement", "summary", "time_to_delivery"], "metrics"),
    **dict.fromkeys(["SimulationTruth", "simulate"], "simulate"),
    **dict.fromkeys(
        ["LoadSummary", "events_dataset", "ingest", "load", "read_events", "read_loads", "read_rejected",
         "read_skipped", "vacuum"],
        "store",
    ),
    "TRIGGERS": "triggers",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        # Importing a submodule binds it on the package; where a public function has the
        # submodule's name (items, simulate), the function keeps that name.
        if isinstance(value, types.ModuleType) and _HOMES.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

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
