"""Scaling laws: fit Chinchilla (Hoffmann et al. 2022) and D-CPT (Que et al. 2024) laws to pilot runs, plan model
size, token budget and domain ratio, and plot the fits. Command line: `jaxfin scaling fit|plan|intensity`."""

from jaxfin.scaling.chinchilla import ChinchillaFit, bootstrap_chinchilla, fit_approach2, fit_chinchilla, read_runs
from jaxfin.scaling.dcpt import DcptFit, fit_dcpt
from jaxfin.scaling.planner import (
    compute_optimal,
    data_intensity,
    isoflop_table,
    max_ratio_for_general_rise,
    min_ratio_for_domain_target,
)

__all__ = [
    "ChinchillaFit",
    "DcptFit",
    "bootstrap_chinchilla",
    "compute_optimal",
    "data_intensity",
    "fit_approach2",
    "fit_chinchilla",
    "fit_dcpt",
    "isoflop_table",
    "max_ratio_for_general_rise",
    "min_ratio_for_domain_target",
    "read_runs",
]
