"""D-CPT law (Que et al. 2024): loss of domain continual pre-training as a function of size, tokens and mixture.

    L(N, D, r) = E + A / N^α + B·r^η / D^β + C / (r + ε)^γ

N parameters, D CPT tokens, r the domain share of those tokens (0 = all general, 1 = all domain). The same form is
fitted separately to the domain loss and to the general loss. ε is a fixed constant (default 0.01) that keeps the
last term finite at r = 0; the r^η term is taken as 0 at r = 0 (η > 0 in every law of the paper).

Fit, as for Chinchilla: log L_pred = LSE(a − α log N, b + η log r − β log D, c − γ log(r + ε), e) with A = e^a,
B = e^b, C = e^c, E = e^e; summed Huber loss (δ = 1e-3) of log residuals; batched L-BFGS in float64 from every point
of a grid (4374 starts; 8 parameters make a full 0.5-step grid impractical, so it is coarser but spans the same
ranges as Hoffmann's, plus negative γ so a general loss that *rises* with r is reachable from a start):

    α, β ∈ {0.2, 0.6, 1.0}   γ ∈ {−0.2, 0.2, 0.6}   η ∈ {0.2, 0.6, 1.0}
    a, b ∈ {0, 8, 16}        c ∈ {−4, −2, 0}        e ∈ {−0.5, 0.5}
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from jaxfin.scaling.chinchilla import HUBER_DELTA, grid_starts, lbfgs_batched, lse_objective

DEFAULT_EPSILON = 0.01
THETA = ("a", "b", "c", "e", "alpha", "beta", "gamma", "eta")
GRID = {
    "alpha": np.array([0.2, 0.6, 1.0]),
    "beta": np.array([0.2, 0.6, 1.0]),
    "gamma": np.array([-0.2, 0.2, 0.6]),
    "eta": np.array([0.2, 0.6, 1.0]),
    "a": np.array([0.0, 8.0, 16.0]),
    "b": np.array([0.0, 8.0, 16.0]),
    "c": np.array([-4.0, -2.0, 0.0]),
    "e": np.array([-0.5, 0.5]),
}


@dataclass(frozen=True)
class DcptFit:
    """Fitted D-CPT law for one loss (domain or general)."""

    E: float
    A: float
    B: float
    C: float
    alpha: float
    beta: float
    gamma: float
    eta: float
    epsilon: float = DEFAULT_EPSILON
    loss: float = math.nan
    n_runs: int = 0

    @classmethod
    def from_theta(cls, theta, epsilon: float, loss: float = math.nan, n_runs: int = 0) -> DcptFit:
        a, b, c, e, alpha, beta, gamma, eta = (float(v) for v in theta)
        return cls(math.exp(e), math.exp(a), math.exp(b), math.exp(c), alpha, beta, gamma, eta, epsilon, loss, n_runs)

    @classmethod
    def from_dict(cls, d: dict) -> DcptFit:
        keys = ("E", "A", "B", "C", "alpha", "beta", "gamma", "eta", "epsilon")
        return cls(*(float(d[k]) for k in keys), loss=float(d.get("loss", math.nan)))

    def predict(self, n, d, r):
        """L(N, D, r) = E + A/N^α + B·r^η/D^β + C/(r+ε)^γ, with the r^η term 0 at r = 0."""
        n, d, r = (np.asarray(v, np.float64) for v in (n, d, r))
        safe_r = np.where(r > 0, r, 1.0)
        mix = np.where(r > 0, self.B * safe_r**self.eta / d**self.beta, 0.0)
        return self.E + self.A / n**self.alpha + mix + self.C / (r + self.epsilon) ** self.gamma

    def to_dict(self) -> dict:
        return asdict(self)


def dcpt_design(n: np.ndarray, d: np.ndarray, r: np.ndarray, epsilon: float):
    """Features/offsets of the four D-CPT terms for θ = (a, b, c, e, α, β, γ, η); rows with r = 0 drop the r^η term."""
    z, o = np.zeros_like(n), np.ones_like(n)
    pos = r > 0
    log_r = np.where(pos, np.log(np.where(pos, r, 1.0)), 0.0)
    feats = np.stack(
        [
            np.stack([o, z, z, z, -np.log(n), z, z, z], axis=1),
            np.stack([z, o, z, z, z, -np.log(d), z, log_r], axis=1),
            np.stack([z, z, o, z, z, z, -np.log(r + epsilon), z], axis=1),
            np.stack([z, z, z, o, z, z, z, z], axis=1),
        ]
    )
    offs = np.zeros(feats.shape[:2])
    offs[1, ~pos] = -np.inf
    return feats, offs


def fit_dcpt(n, d, r, loss, *, epsilon: float = DEFAULT_EPSILON, delta: float = HUBER_DELTA, grid=None) -> DcptFit:
    """Best of the batched L-BFGS runs from every grid start (see module docstring)."""
    n, d, r, loss = (np.asarray(v, np.float64) for v in (n, d, r, loss))
    feats, offs = dcpt_design(n, d, r, epsilon)
    fg = lse_objective(feats, offs, np.log(loss), np.ones_like(loss), delta)
    x, f, _ = lbfgs_batched(fg, grid_starts(grid or GRID, THETA))
    best = int(np.argmin(np.where(np.isfinite(f), f, np.inf)))
    return DcptFit.from_theta(x[best], epsilon, float(f[best]), len(n))
