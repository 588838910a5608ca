"""Accuracy results from evaluation harnesses (lmms-eval) in the accuracy long format.

``fastvlm-bench accuracy import PATH...`` (:mod:`bench.accuracy.command`) reads lmms-eval results
JSON with :func:`import_results` and writes ``results/accuracy.csv``.
"""
from .lmms_import import (ImportReport, LmmsResultsError, MappingError, import_results, load_mapping, merge_into,
                          primary_metric)

__all__ = ["ImportReport", "LmmsResultsError", "MappingError", "import_results", "load_mapping", "merge_into",
           "primary_metric"]
