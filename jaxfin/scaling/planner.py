"""Planning from fitted laws: compute-optimal N and D, isoFLOP tables, domain ratios, data intensity.

- Compute-optimal (Chinchilla, C ≈ 6·N·D): N_opt = G·(C/6)^(β/(α+β)), D_opt = G⁻¹·(C/6)^(α/(α+β)).
- IsoFLOP table: for fixed C, L(N, C/(6N)) over N around N_opt; its minimum is the compute-optimal size.
- Domain ratio (D-CPT): the largest r with L_general(N, D, r) − baseline ≤ T (baseline L_general(N, D, 0) unless
  given) and the smallest r with L_domain(N, D, r) ≤ target; both by a scan of r ∈ [0, 1] refined by bisection, so
  they hold for any sign of the fitted exponents (the answer is the boundary of the feasible set nearest the goal).
- Data intensity of a staged CPT plan (stage i: T_i tokens, domain share r_i): per stage r_i, and cumulative
  Σ_{j≤i} r_j·T_j / Σ_{j≤i} T_j — for general then domain stages of x1 and x2 tokens, x2 / (x1 + x2).
"""

from __future__ import annotations

import math
import re

import numpy as np

from jaxfin.scaling.chinchilla import ChinchillaFit, bootstrap_intervals
from jaxfin.scaling.dcpt import DcptFit

SCAN_POINTS = 4001


def compute_optimal(fit: ChinchillaFit, compute: float, samples: np.ndarray | None = None) -> dict:
    """N_opt, D_opt and tokens per parameter at C FLOPs, with bootstrap intervals when θ samples are given."""
    if compute <= 0:
        raise ValueError(f"--compute must be positive, got {compute}")
    n_opt, d_opt = fit.optimal(compute)
    out = {"compute": compute, "N_opt": n_opt, "D_opt": d_opt, "tokens_per_param": d_opt / n_opt}
    out["loss_opt"] = float(fit.predict(n_opt, d_opt))
    if samples is not None and len(samples):
        ivs = bootstrap_intervals(samples, compute)
        out["intervals"] = {k: ivs[k] for k in ("N_opt", "D_opt", "tokens_per_param")}
    return out


def isoflop_table(fit: ChinchillaFit, compute: float, points: int = 21, span: float = 10.0) -> list[dict]:
    """Predicted loss at C FLOPs for N log-spaced over [N_opt/span, N_opt·span], D = C/(6N); the row of least loss
    is marked `min` (on the table's grid; the exact optimum is N_opt itself)."""
    n_opt, _ = fit.optimal(compute)
    ns = np.geomspace(n_opt / span, n_opt * span, points)
    ds = compute / (6.0 * ns)
    losses = fit.predict(ns, ds)
    best = int(np.argmin(losses))
    return [
        {"N": float(n), "D": float(d), "loss": float(v), "min": i == best}
        for i, (n, d, v) in enumerate(zip(ns, ds, losses))
    ]


def _boundary(ok: np.ndarray, rs: np.ndarray, pred, largest: bool) -> float | None:
    """The largest (or smallest) feasible r on the scan, refined by bisection against its infeasible neighbour."""
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return None
    i = idx[-1] if largest else idx[0]
    j = i + 1 if largest else i - 1
    if j < 0 or j >= len(rs):
        return float(rs[i])
    good, bad = rs[i], rs[j]
    for _ in range(60):
        mid = 0.5 * (good + bad)
        good, bad = (mid, bad) if pred(mid) else (good, mid)
    return float(good)


def max_ratio_for_general_rise(
    general: DcptFit, n: float, d: float, max_rise: float, baseline: float | None = None
) -> dict:
    """Largest r ∈ [0, 1] with L_general(N, D, r) − baseline ≤ T; baseline defaults to L_general(N, D, 0)."""
    base = float(general.predict(n, d, 0.0)) if baseline is None else float(baseline)
    rs = np.linspace(0.0, 1.0, SCAN_POINTS)
    feasible = lambda r: float(general.predict(n, d, r)) - base <= max_rise
    r = _boundary(general.predict(n, d, rs) - base <= max_rise, rs, feasible, largest=True)
    out = {"max_general_rise": max_rise, "baseline_general_loss": base, "ratio": r}
    if r is not None:
        out["general_loss"] = float(general.predict(n, d, r))
    return out


def min_ratio_for_domain_target(domain: DcptFit, n: float, d: float, target: float) -> dict:
    """Smallest r ∈ [0, 1] with L_domain(N, D, r) ≤ target (None if even the best r ∈ [0, 1] misses it)."""
    rs = np.linspace(0.0, 1.0, SCAN_POINTS)
    feasible = lambda r: float(domain.predict(n, d, r)) <= target
    r = _boundary(domain.predict(n, d, rs) <= target, rs, feasible, largest=False)
    out = {"domain_target": target, "ratio": r}
    if r is not None:
        out["domain_loss"] = float(domain.predict(n, d, r))
    return out


_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


def parse_count(text: str) -> float:
    """'2.5e9', '2.5B', '300M', '1T' -> float; why: token budgets are written with suffixes in plans."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmbgt]?)\s*", text, flags=re.IGNORECASE)
    if not m:
        raise ValueError(f"{text!r} is not a token count (e.g. 2e9, 2B, 300M)")
    return float(m.group(1)) * _SUFFIX[m.group(2).lower()]


def parse_stage(text: str) -> tuple[float, float]:
    """'TOKENS:RATIO' (e.g. '10B:0.3') -> (tokens, domain ratio in [0, 1])."""
    if text.count(":") != 1:
        raise ValueError(f"--stage {text!r} must look like TOKENS:RATIO, e.g. 10B:0.3")
    tok, ratio = text.split(":")
    tokens = parse_count(tok)
    try:
        r = float(ratio)
    except ValueError:
        raise ValueError(f"--stage {text!r}: ratio {ratio!r} is not a number") from None
    if tokens <= 0 or not 0.0 <= r <= 1.0 or not math.isfinite(r):
        raise ValueError(f"--stage {text!r}: need tokens > 0 and 0 <= ratio <= 1")
    return tokens, r


def data_intensity(stages: list[tuple[float, float]]) -> list[dict]:
    """Per stage: domain tokens / stage tokens, and cumulative domain tokens / all tokens so far."""
    out, tot, dom = [], 0.0, 0.0
    for i, (tokens, ratio) in enumerate(stages, start=1):
        tot += tokens
        dom += tokens * ratio
        out.append(
            {
                "stage": i, "tokens": tokens, "domain_tokens": tokens * ratio, "stage_intensity": ratio,
                "cumulative_tokens": tot, "cumulative_domain_tokens": dom, "cumulative_intensity": dom / tot,
            }
        )  # fmt: skip
    return out
