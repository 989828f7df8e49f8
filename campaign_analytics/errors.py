"""Exceptions raised by campaign_analytics.

Every error says what was wrong and what to do about it. The command line maps
them to exit code 2 and a one-line message.
"""

from __future__ import annotations

__all__ = [
    "CampaignAnalyticsError",
    "SourceError",
    "TableError",
    "ParameterError",
    "BackendError",
    "ReportError",
]


class CampaignAnalyticsError(Exception):
    """Base class of every error this package raises on purpose."""


class SourceError(CampaignAnalyticsError):
    """A payload source cannot be used: missing file, unreadable directory, no match."""


class TableError(CampaignAnalyticsError):
    """A table path cannot be used: not a Delta table, or not an events table."""


class ParameterError(CampaignAnalyticsError, ValueError):
    """An argument has a value the function cannot work with."""


class BackendError(CampaignAnalyticsError):
    """A query engine is not available or not configured."""


class ReportError(CampaignAnalyticsError):
    """A notebook of the report failed to execute."""
