"""PNG plots of fitted scaling laws (matplotlib, Agg backend: no display needed on clusters)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jaxfin.scaling.chinchilla import ChinchillaFit
from jaxfin.scaling.dcpt import DcptFit


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out_dir: Path, name: str) -> str:
    path = out_dir / name
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return str(path)


def plot_chinchilla(fit: ChinchillaFit, runs: dict, out_dir, computes=None) -> list[str]:
    """Loss vs N (one fitted curve per D) and vs D (one per N), isoFLOP curves and the compute-optimal frontier."""
    plt, out_dir = _pyplot(), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n, d, loss = runs["params"], runs["tokens"], runs["loss"]
    paths = []
    for x, other, xlabel, name in ((n, d, "parameters N", "loss_vs_N.png"), (d, n, "tokens D", "loss_vs_D.png")):
        fig, ax = plt.subplots(figsize=(6, 4))
        sc = ax.scatter(x, loss, c=np.log10(other), s=14, cmap="viridis")
        grid = np.geomspace(x.min() / 2, x.max() * 2, 100)
        for o in np.unique(other):
            pred = fit.predict(grid, o) if x is n else fit.predict(o, grid)
            ax.plot(grid, pred, lw=0.8, color=sc.cmap(sc.norm(np.log10(o))))
        ax.set(xscale="log", xlabel=xlabel, ylabel="loss", title="Chinchilla fit")
        fig.colorbar(sc, label="log10 " + ("D" if x is n else "N"))
        paths.append(_save(fig, out_dir, name))
    c_runs = 6 * n * d
    computes = computes or list(np.geomspace(c_runs.min(), c_runs.max() * 100, 5))
    fig, ax = plt.subplots(figsize=(6, 4))
    for c in computes:
        n_opt, _ = fit.optimal(c)
        ns = np.geomspace(n_opt / 30, n_opt * 30, 100)
        ax.plot(ns, fit.predict(ns, c / (6 * ns)), label=f"C={c:.1e}")
        ax.plot([n_opt], [fit.predict(n_opt, c / (6 * n_opt))], "k.", ms=8)
    ax.set(xscale="log", xlabel="parameters N", ylabel="predicted loss", title="isoFLOP curves (• = N_opt)")
    ax.legend(fontsize=7)
    paths.append(_save(fig, out_dir, "isoflop.png"))
    cs = np.geomspace(min(computes) / 10, max(computes) * 10, 100)
    opt = np.array([fit.optimal(c) for c in cs])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(cs, opt[:, 0], label="N_opt")
    ax.plot(cs, opt[:, 1], label="D_opt")
    ax.set(
        xscale="log", yscale="log", xlabel="compute C (FLOPs)", title=f"frontier: N ∝ C^{fit.a:.3f}, D ∝ C^{fit.b:.3f}"
    )
    ax.legend()
    paths.append(_save(fig, out_dir, "frontier.png"))
    return paths


def plot_dcpt(fits: dict[str, DcptFit], runs: dict, out_dir, n: float | None = None, d: float | None = None):
    """Domain and general loss vs ratio r at one (N, D) (default: the runs' largest), fitted curves and the runs."""
    plt, out_dir = _pyplot(), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n = n or float(runs["params"].max())
    d = d or float(runs["tokens"].max())
    rs = np.linspace(0, 1, 201)
    fig, ax = plt.subplots(figsize=(6, 4))
    for which, fit in fits.items():
        line = ax.plot(rs, fit.predict(n, d, rs), label=f"{which} (fit)")[0]
        sel = (runs["params"] == n) & (runs["tokens"] == d)
        col = f"{which}_loss"
        if col in runs and sel.any():
            ax.scatter(runs["ratio"][sel], runs[col][sel], color=line.get_color(), s=14)
    ax.set(xlabel="domain ratio r", ylabel="loss", title=f"D-CPT law at N={n:.2g}, D={d:.2g}")
    ax.legend()
    return [_save(fig, out_dir, "loss_vs_ratio.png")]
