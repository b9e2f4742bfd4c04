"""Chinchilla scaling law, fitted as in Hoffmann et al. 2022 (Approach 3, and Approach 2 on isoFLOP slices).

    L(N, D) = E + A / N^α + B / D^β

Approach 3 fits, in log space with A = e^a, B = e^b, E = e^e,

    log L_pred = LSE(a − α log N,  b − β log D,  e)

by minimising the *summed* Huber loss (δ = 1e-3) of log L_pred − log L_obs with L-BFGS in float64, from every
point of the grid α, β ∈ {0, 0.5, …, 2}, e ∈ {−1, −0.5, …, 1}, a, b ∈ {0, 5, …, 25} (4500 starts), keeping the
best. All starts run together: one batched numpy objective with an analytic gradient, one batched L-BFGS.

Compute-optimal allocation for C ≈ 6·N·D (Hoffmann eq. 4):

    G = (αA / (βB))^(1/(α+β)),  N_opt = G·(C/6)^a,  D_opt = G⁻¹·(C/6)^b,  a = β/(α+β),  b = α/(α+β)
"""

from __future__ import annotations

import csv
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HUBER_DELTA = 1e-3
GRID = {
    "a": np.arange(0.0, 25.01, 5.0),
    "b": np.arange(0.0, 25.01, 5.0),
    "e": np.arange(-1.0, 1.01, 0.5),
    "alpha": np.arange(0.0, 2.01, 0.5),
    "beta": np.arange(0.0, 2.01, 0.5),
}
THETA = ("a", "b", "e", "alpha", "beta")  # column order of the parameter vector θ


# ----------------------------------------------------------------------------------------------------------- input
def read_runs(path: str | Path, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Read a runs CSV into float64 columns; bad input raises ValueError naming file, line and column.

    `ratio` may be 0 (no domain data) but must lie in [0, 1]; every other value must be a positive number. Optional
    columns that are absent are left out of the result; an empty cell in one becomes NaN (that run is skipped by the
    law that needs it)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such runs file")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in required if c not in header]
        if missing:
            raise ValueError(f"{path}:1: missing column(s) {', '.join(missing)} (header has: {', '.join(header)})")
        cols = [c for c in (*required, *optional) if c in header]
        out: dict[str, list[float]] = {c: [] for c in cols}
        for lineno, row in enumerate(reader, start=2):
            row = {(k or "").strip(): v for k, v in row.items()}
            for c in cols:
                out[c].append(_parse_cell(path, lineno, c, row.get(c), c in optional))
    return {c: np.asarray(v, dtype=np.float64) for c, v in out.items()}


def _parse_cell(path: Path, lineno: int, col: str, text: str | None, optional: bool) -> float:
    """One CSV cell as a float, validated for its column."""
    text = (text or "").strip()
    if not text:
        if optional:
            return math.nan
        raise ValueError(f"{path}:{lineno}: column '{col}' is empty")
    try:
        v = float(text)
    except ValueError:
        raise ValueError(f"{path}:{lineno}: column '{col}': {text!r} is not a number") from None
    if not math.isfinite(v):
        raise ValueError(f"{path}:{lineno}: column '{col}': {text!r} is not finite")
    if col == "ratio":
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{path}:{lineno}: column 'ratio': {v} is outside [0, 1]")
    elif v <= 0:
        raise ValueError(f"{path}:{lineno}: column '{col}': {v} must be positive")
    return v


def check_rows(path: str | Path, n: int, n_params: int, what: str) -> None:
    """A fit needs more runs than free parameters, or it is not a fit."""
    if n <= n_params:
        raise ValueError(f"{path}: {n} usable row(s) for {what}; need at least {n_params + 1}")


# ------------------------------------------------------------------------------------------------------- objective
def huber(r: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    """Huber loss: quadratic within ±δ, linear outside, so outlier runs do not dominate the fit."""
    ar = np.abs(r)
    return np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))


def lse_objective(features: np.ndarray, offsets: np.ndarray, y: np.ndarray, weights: np.ndarray, delta: float):
    """Return fg(θ, idx) for a log-sum-exp law: log L_pred = LSE_k(F_k θ + o_k); loss Σ_i w_i·Huber(pred_i − y_i).

    features (K, n, P), offsets (K, n) (−inf switches a term off for a row), y = log L_obs (n,), weights (n,) or one
    row per start (S, n) — bootstrap resamples are multinomial row weights, so they batch like extra starts. fg takes
    θ of shape (s, P) and the indices idx of those starts, and returns (f (s,), ∇f (s, P))."""

    k, n, p = features.shape
    flat = features.reshape(k * n, p)  # matmuls on the flattened design are BLAS calls

    def fg(theta: np.ndarray, idx: np.ndarray):
        u = (theta @ flat.T).reshape(-1, k, n) + offsets[None]
        m = u.max(axis=1, keepdims=True)
        ex = np.exp(u - m)
        tot = ex.sum(axis=1, keepdims=True)
        pred = (m + np.log(tot))[:, 0]
        r = pred - y[None]
        w = weights[idx] if weights.ndim == 2 else weights[None]
        f = (w * huber(r, delta)).sum(axis=1)
        coef = (w * np.clip(r, -delta, delta))[:, None, :] * (ex / tot)
        return f, coef.reshape(-1, k * n) @ flat

    return fg


def chinchilla_design(n: np.ndarray, d: np.ndarray):
    """Features/offsets of the three Chinchilla terms for θ = (a, b, e, α, β)."""
    z, o = np.zeros_like(n), np.ones_like(n)
    feats = np.stack(
        [
            np.stack([o, z, z, -np.log(n), z], axis=1),
            np.stack([z, o, z, z, -np.log(d)], axis=1),
            np.stack([z, z, o, z, z], axis=1),
        ]
    )
    return feats, np.zeros(feats.shape[:2])


# ---------------------------------------------------------------------------------------------------------- L-BFGS
def lbfgs_batched(
    fg,
    x0: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    max_iter: int = 1000,
    history: int = 10,
    ftol: float = 1e-10,
    prune_every: int = 20,
    prune_factor: float = 1.5,
):
    """Minimise many independent problems at once with L-BFGS (two-loop recursion, Armijo backtracking).

    Every start keeps its own curvature pairs, step and stopping state; converged starts leave the batch, so the cost
    falls as the grid converges. A start stops when one step lowers f by less than ftol·|f| or no step lowers it.
    Every prune_every iterations, a start still running with f > prune_factor × the best f of its group (starts with
    the same objective; default all) is stopped: on a Huber (nearly L1) objective some starts crawl along kinks for
    thousands of steps in basins far worse than the best, and only the best start per group is kept anyway.
    Returns (x (S, P), f (S,), iterations used)."""
    x = np.array(x0, dtype=np.float64)
    n_starts = x.shape[0]
    f, g = fg(x, np.arange(n_starts))
    gamma = 1.0 / np.maximum(np.linalg.norm(g, axis=1), 1e-300)  # first step: unit length along −∇f
    pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    active = np.isfinite(f) & (np.abs(g).max(axis=1) > 0)
    groups = np.zeros(n_starts, dtype=np.int64) if groups is None else np.asarray(groups)
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 - `it` is reported
        if it % prune_every == 0:
            best = np.full(groups.max() + 1, np.inf)
            np.minimum.at(best, groups, np.where(np.isfinite(f), f, np.inf))
            active &= f <= prune_factor * best[groups]
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        d = -_two_loop(g[idx], [(s[idx], y[idx], r[idx]) for s, y, r in pairs], gamma[idx])
        slope = (g[idx] * d).sum(axis=1)
        bad = ~(slope < 0)
        d[bad] = -g[idx][bad] * gamma[idx][bad, None]
        slope[bad] = (g[idx][bad] * d[bad]).sum(axis=1)
        ok, x_new, f_new, g_new = _backtrack(fg, idx, x[idx], f[idx], d, slope)
        active[idx[~ok]] = False
        ia = idx[ok]
        s_full, y_full, rho_full = np.zeros_like(x), np.zeros_like(x), np.zeros(n_starts)
        s, y = x_new[ok] - x[ia], g_new[ok] - g[ia]
        sy = (s * y).sum(axis=1)
        good = sy > 1e-300
        s_full[ia], y_full[ia] = s, y
        rho_full[ia] = np.where(good, 1.0 / np.where(good, sy, 1.0), 0.0)  # ρ = 0 disables a pair
        gamma[ia] = np.where(good, sy / np.maximum((y * y).sum(axis=1), 1e-300), gamma[ia])
        pairs = [*pairs, (s_full, y_full, rho_full)][-history:]
        drop = f[ia] - f_new[ok]
        x[ia], f[ia], g[ia] = x_new[ok], f_new[ok], g_new[ok]
        active[ia[drop <= ftol * np.maximum(np.abs(f[ia]), 1e-300)]] = False
    return x, f, it


def _two_loop(g: np.ndarray, pairs, gamma: np.ndarray) -> np.ndarray:
    """H·g for the L-BFGS inverse-Hessian estimate (Nocedal & Wright alg. 7.4), batched over starts."""
    q = g.copy()
    alphas = []
    for s, y, rho in reversed(pairs):
        a = rho * (s * q).sum(axis=1)
        q -= a[:, None] * y
        alphas.append(a)
    r = gamma[:, None] * q
    for (s, y, rho), a in zip(pairs, reversed(alphas)):
        b = rho * (y * r).sum(axis=1)
        r += (a - b)[:, None] * s
    return r


def _backtrack(fg, idx, x, f, d, slope, c1: float = 1e-4, max_halvings: int = 40):
    """Armijo backtracking from t = 1; returns (accepted?, x_new, f_new, g_new) per start."""
    t = np.ones(len(idx))
    ok = np.zeros(len(idx), dtype=bool)
    x_new, f_new, g_new = x.copy(), f.copy(), np.zeros_like(x)
    pending = np.arange(len(idx))
    for _ in range(max_halvings):
        xt = x[pending] + t[pending, None] * d[pending]
        with np.errstate(over="ignore", invalid="ignore"):
            ft, gt = fg(xt, idx[pending])
        acc = np.isfinite(ft) & (ft <= f[pending] + c1 * t[pending] * slope[pending]) & (ft < f[pending])
        p = pending[acc]
        ok[p], x_new[p], f_new[p], g_new[p] = True, xt[acc], ft[acc], gt[acc]
        pending = pending[~acc]
        if pending.size == 0:
            break
        t[pending] *= 0.5
    return ok, x_new, f_new, g_new


def grid_starts(grid: dict[str, np.ndarray], names: tuple[str, ...]) -> np.ndarray:
    """Cartesian product of the grid, columns in the order `names`."""
    return np.array(list(itertools.product(*(grid[k] for k in names))), dtype=np.float64)


# ------------------------------------------------------------------------------------------------------------- fit
@dataclass(frozen=True)
class ChinchillaFit:
    """Fitted L(N, D) = E + A/N^α + B/D^β; log_A etc. are the fit-space parameters (a, b, e of Hoffmann eq. 10)."""

    log_A: float
    log_B: float
    log_E: float
    alpha: float
    beta: float
    loss: float = math.nan
    n_runs: int = 0

    @classmethod
    def from_theta(cls, theta, loss: float = math.nan, n_runs: int = 0) -> ChinchillaFit:
        return cls(*(float(v) for v in theta), loss=float(loss), n_runs=n_runs)

    @classmethod
    def from_dict(cls, d: dict) -> ChinchillaFit:
        """From a fit JSON (`jaxfin scaling fit --json`): A, B, E, alpha, beta."""
        return cls(math.log(d["A"]), math.log(d["B"]), math.log(d["E"]), d["alpha"], d["beta"], d.get("loss", 0.0))

    @property
    def theta(self) -> np.ndarray:
        return np.array([self.log_A, self.log_B, self.log_E, self.alpha, self.beta])

    A = property(lambda self: math.exp(self.log_A))
    B = property(lambda self: math.exp(self.log_B))
    E = property(lambda self: math.exp(self.log_E))
    a = property(lambda self: self.beta / (self.alpha + self.beta), doc="N_opt ∝ C^a, a = β/(α+β)")
    b = property(lambda self: self.alpha / (self.alpha + self.beta), doc="D_opt ∝ C^b, b = α/(α+β)")

    @property
    def G(self) -> float:
        """G = (αA/(βB))^(1/(α+β)), computed in log space so huge A, B do not overflow."""
        return math.exp((math.log(self.alpha / self.beta) + self.log_A - self.log_B) / (self.alpha + self.beta))

    def predict(self, n, d):
        """L(N, D) = E + A/N^α + B/D^β."""
        n, d = np.asarray(n, np.float64), np.asarray(d, np.float64)
        return self.E + np.exp(self.log_A - self.alpha * np.log(n)) + np.exp(self.log_B - self.beta * np.log(d))

    def optimal(self, compute: float) -> tuple[float, float]:
        """(N_opt, D_opt) for C FLOPs: N_opt = G·(C/6)^a, D_opt = G⁻¹·(C/6)^b."""
        c6 = compute / 6.0
        return self.G * c6**self.a, c6**self.b / self.G

    def to_dict(self) -> dict:
        return {
            "law": "chinchilla",
            "E": self.E, "A": self.A, "B": self.B, "alpha": self.alpha, "beta": self.beta,
            "a": self.a, "b": self.b, "G": self.G, "loss": self.loss,
            "log_A": self.log_A, "log_B": self.log_B, "log_E": self.log_E, "n_runs": self.n_runs,
        }  # fmt: skip


def fit_chinchilla(n, d, loss, *, delta: float = HUBER_DELTA, grid: dict | None = None) -> ChinchillaFit:
    """Approach 3: best of L-BFGS runs from every grid start (see module docstring)."""
    n, d, loss = (np.asarray(v, np.float64) for v in (n, d, loss))
    feats, offs = chinchilla_design(n, d)
    fg = lse_objective(feats, offs, np.log(loss), np.ones_like(loss), delta)
    x, f, _ = lbfgs_batched(fg, grid_starts(grid or GRID, THETA))
    best = int(np.nanargmin(np.where(np.isfinite(f), f, np.inf)))
    return ChinchillaFit.from_theta(x[best], f[best], len(n))


def bootstrap_chinchilla(n, d, loss, fit: ChinchillaFit, k: int, seed: int, delta: float = HUBER_DELTA) -> np.ndarray:
    """K refits on rows resampled with replacement; returns θ samples (K, 5).

    Each resample is a vector of multinomial row counts used as Huber weights, so all K refits run in one batch.
    Starts: the full-data optimum plus a small grid around it (α, β ± 0.1, e ± 0.2) — the full 4500-start grid per
    resample would cost K× the main fit for little gain once the basin is known."""
    n, d, loss = (np.asarray(v, np.float64) for v in (n, d, loss))
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, len(n), len(n)), minlength=len(n)) for _ in range(k)])
    base = fit.theta
    shifts = np.array(
        [[0, 0, 0, 0, 0], [0, 0, 0, 0.1, 0.1], [0, 0, 0, -0.1, -0.1], [0, 0, 0.2, 0, 0], [0, 0, -0.2, 0, 0]]
    )
    starts = np.tile(base[None] + shifts, (k, 1))
    weights = np.repeat(counts.astype(np.float64), len(shifts), axis=0)
    feats, offs = chinchilla_design(n, d)
    fg = lse_objective(feats, offs, np.log(loss), weights, delta)
    x, f, _ = lbfgs_batched(fg, starts, groups=np.repeat(np.arange(k), len(shifts)))
    f = np.where(np.isfinite(f), f, np.inf).reshape(k, len(shifts))
    return x.reshape(k, len(shifts), -1)[np.arange(k), f.argmin(axis=1)]


def interval(values) -> dict:
    """2.5 / 50 / 97.5 percentiles: a 95% bootstrap percentile interval and its median."""
    lo, med, hi = np.percentile(np.asarray(values, np.float64), [2.5, 50.0, 97.5])
    return {"low": float(lo), "median": float(med), "high": float(hi)}


def bootstrap_intervals(samples: np.ndarray, compute: float | None = None) -> dict:
    """Intervals of every parameter and derived quantity over θ samples; N_opt/D_opt/tokens-per-param need C."""
    fits = [ChinchillaFit.from_theta(t) for t in samples]
    out = {key: interval([getattr(f, key) for f in fits]) for key in ("E", "A", "B", "alpha", "beta", "a", "b", "G")}
    if compute is not None:
        opt = np.array([f.optimal(compute) for f in fits])
        out["N_opt"], out["D_opt"] = interval(opt[:, 0]), interval(opt[:, 1])
        out["tokens_per_param"] = interval(opt[:, 1] / opt[:, 0])
    return out


# ------------------------------------------------------------------------------------------------------ Approach 2
def isoflop_groups(n, d, rtol: float = 0.01, min_runs: int = 3) -> list[np.ndarray]:
    """Indices of runs sharing C = 6·N·D within rtol (relative to the group's smallest C), ≥ min_runs distinct N."""
    c = 6.0 * np.asarray(n, np.float64) * np.asarray(d, np.float64)
    order = np.argsort(c)
    groups, cur = [], [order[0]] if len(order) else []
    for i in order[1:]:
        if c[i] <= c[cur[0]] * (1 + rtol):
            cur.append(i)
        else:
            groups.append(np.array(cur))
            cur = [i]
    if cur:
        groups.append(np.array(cur))
    return [g for g in groups if len(np.unique(np.asarray(n)[g])) >= min_runs]


def fit_approach2(n, d, loss) -> dict:
    """Approach 2: per isoFLOP slice, a parabola L ≈ p0 + p1·log N + p2·(log N)² whose vertex is N_opt(C); then
    log N_opt = a2·log C + k and log D_opt = b2·log C + k′ by least squares. Needs ≥ 2 slices with a minimum."""
    n, d, loss = (np.asarray(v, np.float64) for v in (n, d, loss))
    slices = []
    for g in isoflop_groups(n, d):
        c = float(np.mean(6.0 * n[g] * d[g]))
        p2, p1, _ = np.polyfit(np.log(n[g]), loss[g], 2)
        if p2 <= 0:
            continue  # no minimum in this slice: its runs do not bracket N_opt
        n_opt = math.exp(-p1 / (2 * p2))
        slices.append({"C": c, "N_opt": n_opt, "D_opt": c / (6 * n_opt), "runs": len(g)})
    if len(slices) < 2:
        raise ValueError(
            f"Approach 2 needs at least 2 isoFLOP slices (runs sharing 6·N·D within 1%, ≥3 sizes each, "
            f"bracketing the minimum); found {len(slices)}"
        )
    lc = np.log([s["C"] for s in slices])
    a2 = float(np.polyfit(lc, np.log([s["N_opt"] for s in slices]), 1)[0])
    b2 = float(np.polyfit(lc, np.log([s["D_opt"] for s in slices]), 1)[0])
    return {"a2": a2, "b2": b2, "slices": slices}
