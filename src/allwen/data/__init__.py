"""Datasets in their native layouts, audit, splits, preprocessing and synthetic cells."""

from allwen.data.sources import SOURCES, DataSourceError, binary_view, cnmc_subject, detect_source, load_source
from allwen.data.table import ImageTable

__all__ = ["SOURCES", "DataSourceError", "ImageTable", "binary_view", "cnmc_subject", "detect_source", "load_source"]
