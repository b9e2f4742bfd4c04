"""Ahead-of-time compilation of the train step for a target that need not be present (`jaxfin compile`)."""

from jaxfin.compile.aot import compile_report, max_batch
from jaxfin.compile.targets import CHIPS, Chip, Target, parse_target

__all__ = ["CHIPS", "Chip", "Target", "compile_report", "max_batch", "parse_target"]
