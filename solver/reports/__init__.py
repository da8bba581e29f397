"""Reports: documents and tables built from simulator results (no simulation here)."""

from .churn import MEAN_FIELDS, aggregate_churn, sustainable_load

__all__ = ["MEAN_FIELDS", "aggregate_churn", "sustainable_load"]
