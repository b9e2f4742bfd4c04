"""`jaxfin scaling fit|plan|intensity` (and `sweep`, `collect` from jaxfin.scaling.runs when present)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

SCALING_HELP = """\
Scaling laws for planning model size, token budget and domain mix from small pilot runs.

Chinchilla (Hoffmann et al. 2022):  L(N, D) = E + A/N^alpha + B/D^beta
  fit (Approach 3): log L = LSE(a - alpha log N, b - beta log D, e), A=e^a, B=e^b, E=e^e; summed Huber
  (delta 1e-3) of log residuals, L-BFGS in float64 from a 4500-point grid of starts, best kept.
  compute-optimal at C = 6 N D:  G = (alpha A / (beta B))^(1/(alpha+beta)),
  N_opt = G (C/6)^a,  D_opt = (C/6)^b / G,  a = beta/(alpha+beta),  b = alpha/(alpha+beta).
  Approach 2 (isoFLOP runs: same 6 N D within 1%): parabola of L in log N per slice -> N_opt(C);
  N_opt ~ C^a2, D_opt ~ C^b2.
D-CPT (Que et al. 2024), domain ratio r of the CPT tokens, fitted to domain and general loss separately:
  L(N, D, r) = E + A/N^alpha + B r^eta / D^beta + C / (r + eps)^gamma
Data intensity of a staged CPT plan: per stage domain/stage tokens, cumulative domain/all tokens,
  e.g. general x1 then domain x2 tokens -> x2 / (x1 + x2).
"""


def add_scaling_parser(subparsers) -> argparse.ArgumentParser:
    """Add `scaling` with subcommands fit, plan, intensity (+ sweep, collect when jaxfin.scaling.runs exists)."""
    p = subparsers.add_parser(
        "scaling",
        help="fit scaling laws, plan N / D / domain ratio",
        description=SCALING_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="scaling_command", required=True)
    _add_fit(sub)
    _add_plan(sub)
    _add_intensity(sub)
    try:
        from jaxfin.scaling.runs import add_collect_parser, add_sweep_parser
    except ImportError:
        pass
    else:
        add_sweep_parser(sub)
        add_collect_parser(sub)
    return p


def _add_fit(sub) -> None:
    p = sub.add_parser(
        "fit",
        help="fit a law to RUNS.csv",
        description="Fit a scaling law to RUNS.csv. Chinchilla needs columns params, tokens, loss; dcpt needs params, "
        "tokens, ratio and domain_loss and/or general_loss. Write the JSON (--json or --output) to use it with "
        "`jaxfin scaling plan`.",
    )
    p.add_argument("runs", metavar="RUNS.csv")
    p.add_argument("--law", choices=["chinchilla", "dcpt"], default="chinchilla")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--output", "-o", help="also write the JSON to this file (input of `scaling plan`)")
    p.add_argument("--bootstrap", type=int, default=0, metavar="K", help="K bootstrap refits over rows -> intervals")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--compute", type=float, help="FLOPs C for N_opt, D_opt, tokens/param (and their intervals)")
    p.add_argument("--approach2", action="store_true", help="require Approach 2 (isoFLOP slices); automatic if found")
    p.add_argument("--epsilon", type=float, default=0.01, help="dcpt: eps in C/(r+eps)^gamma")
    p.add_argument("--plot", metavar="DIR", help="write PNG plots into DIR")
    p.set_defaults(func=run_fit)


def _add_plan(sub) -> None:
    p = sub.add_parser(
        "plan",
        help="plan from a fit JSON: N_opt, D_opt, isoFLOP table, domain ratio",
        description="Chinchilla fit: N_opt, D_opt, tokens/param at --compute (with intervals if the fit was "
        "bootstrapped) and an isoFLOP table. D-CPT fit: at --params N and --tokens D, the largest ratio whose "
        "general-loss rise stays <= --max-general-rise (vs r=0 or --baseline-general-loss) and/or the smallest "
        "ratio reaching --domain-target.",
    )
    p.add_argument("fit", metavar="FIT.json")
    p.add_argument("--compute", type=float, help="FLOPs C (chinchilla)")
    p.add_argument("--points", type=int, default=21, help="rows of the isoFLOP table")
    p.add_argument("--params", type=float, help="N (dcpt)")
    p.add_argument("--tokens", type=float, help="D, CPT tokens (dcpt)")
    p.add_argument("--max-general-rise", type=float, metavar="T", help="dcpt: allowed general-loss rise")
    p.add_argument("--baseline-general-loss", type=float, help="dcpt: compare with this instead of r=0")
    p.add_argument("--domain-target", type=float, metavar="L", help="dcpt: domain loss to reach")
    p.add_argument("--json", action="store_true")
    p.add_argument("--plot", metavar="DIR", help="write PNG plots into DIR (chinchilla)")
    p.set_defaults(func=run_plan)


def _add_intensity(sub) -> None:
    p = sub.add_parser(
        "intensity",
        help="data intensity of a staged CPT plan",
        description="Per stage: domain tokens / stage tokens; cumulative: domain tokens / all tokens so far.",
    )
    p.add_argument("--stage", action="append", metavar="TOKENS:RATIO", help="e.g. 10B:0 then 2B:1")
    p.add_argument("--recipe", metavar="OUTPUT_DIR", help="instead of --stage: the training stages a recipe ran "
                   "(its recipe_state.json), following the chain of stages the last one (or --until) starts from; "
                   "the ratio of a stage = its tokens at domain level >= 1 over all its tokens")  # fmt: skip
    p.add_argument("--until", metavar="STAGE", help="with --recipe: the stage whose chain is shown")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_intensity)


# ------------------------------------------------------------------------------------------------------------ fit
def _emit(result: dict, as_json: bool, text: str, output: str | None = None) -> None:
    if output:
        Path(output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2) if as_json else text)


def run_fit(args) -> int:
    if args.bootstrap < 0:
        raise ValueError("--bootstrap must be >= 0")
    result = _fit_dcpt(args) if args.law == "dcpt" else _fit_chinchilla(args)
    _emit(result, args.json, _fit_text(result), args.output)
    return 0


def _fit_chinchilla(args) -> dict:
    from jaxfin.scaling.chinchilla import (
        bootstrap_chinchilla,
        bootstrap_intervals,
        check_rows,
        fit_approach2,
        fit_chinchilla,
        isoflop_groups,
        read_runs,
    )
    from jaxfin.scaling.planner import compute_optimal

    runs = read_runs(args.runs, ("params", "tokens", "loss"))
    n, d, loss = runs["params"], runs["tokens"], runs["loss"]
    check_rows(args.runs, len(n), 5, "a Chinchilla fit")
    fit = fit_chinchilla(n, d, loss)
    result = fit.to_dict()
    samples = None
    if args.bootstrap:
        samples = bootstrap_chinchilla(n, d, loss, fit, args.bootstrap, args.seed)
        result["intervals"] = bootstrap_intervals(samples, args.compute)
        result["bootstrap"] = {"k": args.bootstrap, "seed": args.seed, "columns": ["log_A", "log_B", "log_E", "alpha",
                               "beta"], "samples": samples.tolist()}  # fmt: skip
    if args.compute:
        result["compute_optimal"] = compute_optimal(fit, args.compute, samples)
    if args.approach2 or len(isoflop_groups(n, d)) >= 2:
        try:
            result["approach2"] = fit_approach2(n, d, loss)
        except ValueError as e:
            if args.approach2:
                raise ValueError(f"{args.runs}: {e}") from None
    if args.plot:
        from jaxfin.scaling.plots import plot_chinchilla

        result["plots"] = plot_chinchilla(fit, runs, args.plot, [args.compute] if args.compute else None)
    return result


def _fit_dcpt(args) -> dict:
    from jaxfin.scaling.chinchilla import check_rows, read_runs
    from jaxfin.scaling.dcpt import fit_dcpt

    runs = read_runs(args.runs, ("params", "tokens", "ratio"), ("domain_loss", "general_loss"))
    present = [w for w in ("domain", "general") if f"{w}_loss" in runs]
    if not present:
        raise ValueError(f"{args.runs}:1: dcpt needs a domain_loss and/or general_loss column")
    result, fits = {"law": "dcpt", "epsilon": args.epsilon}, {}
    for which in present:
        ok = np.isfinite(runs[f"{which}_loss"])
        check_rows(args.runs, int(ok.sum()), 8, f"the D-CPT {which}-loss fit")
        cols = (runs["params"][ok], runs["tokens"][ok], runs["ratio"][ok], runs[f"{which}_loss"][ok])
        fits[which] = fit_dcpt(*cols, epsilon=args.epsilon)
        result[which] = fits[which].to_dict()
    if args.plot:
        from jaxfin.scaling.plots import plot_dcpt

        result["plots"] = plot_dcpt(fits, runs, args.plot)
    return result


def _g(v) -> str:
    return "-" if v is None else f"{v:.4g}"


def _fit_text(r: dict) -> str:
    if r["law"] == "dcpt":
        lines = ["D-CPT law: L = E + A/N^alpha + B r^eta / D^beta + C/(r+eps)^gamma"]
        for which in ("domain", "general"):
            if which in r:
                f = r[which]
                keys = ("E", "A", "B", "C", "alpha", "beta", "gamma", "eta", "loss")
                lines.append(f"  {which:8s} " + "  ".join(f"{k}={_g(f[k])}" for k in keys))
        return "\n".join(lines)
    lines = [f"Chinchilla fit on {r['n_runs']} runs: L = {r['E']:.4g} + {r['A']:.4g}/N^{r['alpha']:.4g} + "
             f"{r['B']:.4g}/D^{r['beta']:.4g}   (Huber objective {r['loss']:.4g})",
             f"  N_opt = G (C/6)^a, D_opt = (C/6)^b / G:  G={r['G']:.4g}  a={r['a']:.4g}  b={r['b']:.4g}"]  # fmt: skip
    for k, iv in r.get("intervals", {}).items():
        lines.append(f"  {k:17s} median {_g(iv['median'])}  95% [{_g(iv['low'])}, {_g(iv['high'])}]")
    if "compute_optimal" in r:
        lines.append(_optimal_text(r["compute_optimal"]))
    if "approach2" in r:
        a2 = r["approach2"]
        lines.append(f"  Approach 2 ({len(a2['slices'])} isoFLOP slices): N_opt ~ C^{a2['a2']:.4g}, "
                     f"D_opt ~ C^{a2['b2']:.4g}")  # fmt: skip
    return "\n".join(lines)


def _optimal_text(o: dict) -> str:
    s = (f"  at C={o['compute']:.3g}: N_opt={o['N_opt']:.4g}  D_opt={o['D_opt']:.4g}  "
         f"tokens/param={o['tokens_per_param']:.3g}  loss={o['loss_opt']:.4g}")  # fmt: skip
    for k, iv in o.get("intervals", {}).items():
        s += f"\n    {k:17s} 95% [{_g(iv['low'])}, {_g(iv['high'])}]"
    return s


# ----------------------------------------------------------------------------------------------------------- plan
def _load_fit(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such fit file (write one with `jaxfin scaling fit ... --output FIT.json`)")
    try:
        fit = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(fit, dict) or fit.get("law") not in ("chinchilla", "dcpt"):
        raise ValueError(f'{p}: not a `jaxfin scaling fit` result (needs "law": chinchilla or dcpt)')
    return fit


def run_plan(args) -> int:
    fit = _load_fit(args.fit)
    result = _plan_dcpt(args, fit) if fit["law"] == "dcpt" else _plan_chinchilla(args, fit)
    _emit(result, args.json, result.pop("_text"))
    return 0


def _plan_chinchilla(args, fit: dict) -> dict:
    from jaxfin.scaling.chinchilla import ChinchillaFit
    from jaxfin.scaling.planner import compute_optimal, isoflop_table

    if args.compute is None:
        raise ValueError("plan with a Chinchilla fit needs --compute C (FLOPs)")
    law = ChinchillaFit.from_dict(fit)
    samples = np.asarray(fit["bootstrap"]["samples"]) if "bootstrap" in fit else None
    result = compute_optimal(law, args.compute, samples)
    result["isoflop"] = isoflop_table(law, args.compute, args.points)
    if args.plot:
        from jaxfin.scaling.plots import plot_chinchilla

        empty = {"params": np.array([result["N_opt"]]), "tokens": np.array([result["D_opt"]]),
                 "loss": np.array([result["loss_opt"]])}  # fmt: skip
        result["plots"] = plot_chinchilla(law, empty, args.plot, [args.compute])
    rows = [f"  {'N':>12s} {'D':>12s} {'loss':>9s}"]
    rows += [f"  {r['N']:12.4g} {r['D']:12.4g} {r['loss']:9.5f}{'  <- min' if r['min'] else ''}" for r in
             result["isoflop"]]  # fmt: skip
    result["_text"] = _optimal_text(result).lstrip() + "\n isoFLOP table (D = C/(6N)):\n" + "\n".join(rows)
    return result


def _plan_dcpt(args, fit: dict) -> dict:
    from jaxfin.scaling.dcpt import DcptFit
    from jaxfin.scaling.planner import max_ratio_for_general_rise, min_ratio_for_domain_target

    if args.params is None or args.tokens is None:
        raise ValueError("plan with a D-CPT fit needs --params N and --tokens D")
    if args.max_general_rise is None and args.domain_target is None:
        raise ValueError("plan with a D-CPT fit needs --max-general-rise T and/or --domain-target L")
    result, text = {"params": args.params, "tokens": args.tokens}, [f"at N={args.params:.4g}, D={args.tokens:.4g}:"]
    if args.max_general_rise is not None:
        if "general" not in fit:
            raise ValueError(f"{args.fit}: no general-loss fit (general_loss column) for --max-general-rise")
        g = DcptFit.from_dict(fit["general"])
        r = max_ratio_for_general_rise(g, args.params, args.tokens, args.max_general_rise, args.baseline_general_loss)
        result["general"] = r
        text.append(f"  largest r with general-loss rise <= {args.max_general_rise:g} "
                    f"(baseline {r['baseline_general_loss']:.4g}): {_g(r['ratio'])}")  # fmt: skip
    if args.domain_target is not None:
        if "domain" not in fit:
            raise ValueError(f"{args.fit}: no domain-loss fit (domain_loss column) for --domain-target")
        r = min_ratio_for_domain_target(DcptFit.from_dict(fit["domain"]), args.params, args.tokens, args.domain_target)
        result["domain"] = r
        text.append(f"  smallest r with domain loss <= {args.domain_target:g}: {_g(r['ratio'])}"
                    + ("" if r["ratio"] is not None else " (unreachable for r in [0, 1])"))  # fmt: skip
    result["_text"] = "\n".join(text)
    return result


# ------------------------------------------------------------------------------------------------------ intensity
def run_intensity(args) -> int:
    from jaxfin.scaling.planner import data_intensity, parse_stage

    if bool(args.stage) == bool(args.recipe):
        raise ValueError("give --stage TOKENS:RATIO (one per stage) or --recipe OUTPUT_DIR")
    names = None
    if args.recipe:
        names, stages = recipe_chain(Path(args.recipe), args.until)
    else:
        stages = [parse_stage(s) for s in args.stage]
    rows = data_intensity(stages)
    if names:
        rows = [{"name": n, **r} for n, r in zip(names, rows)]
    lines = [f"{'stage':>5s} {'tokens':>10s} {'domain':>10s} {'stage int.':>10s} {'cumulative':>10s}"]
    lines += [f"{r['stage']:5d} {r['tokens']:10.4g} {r['domain_tokens']:10.4g} {r['stage_intensity']:10.4f} "
              f"{r['cumulative_intensity']:10.4f}" + (f"  {r['name']}" if names else "") for r in rows]  # fmt: skip
    _emit({"stages": rows}, args.json, "\n".join(lines))
    return 0


def recipe_chain(out: Path, until: str | None = None) -> tuple[list[str], list[tuple[float, float]]]:
    """The training stages of a recipe run (OUTPUT_DIR/recipe_state.json) that `until` (default: the last
    training stage with token counts) descends from, first first, as (names, [(tokens, domain ratio)])."""
    f = out / "recipe_state.json"
    if not f.is_file():
        raise FileNotFoundError(f"{f}: not found (is {out} a recipe's output_dir?)")
    state = json.loads(f.read_text())
    done = {n: r["summary"] for n, r in state["stages"].items() if "tokens_by_level" in (r.get("summary") or {})}
    order = [p["name"] for p in state.get("plan", []) if p["name"] in done]
    if until is None:
        if not order:
            raise ValueError(f"{f}: no training stage has token counts yet")
        until = order[-1]
    if until not in done:
        raise ValueError(f"{f}: stage '{until}' is not a finished training stage (those: {', '.join(order)})")
    names, name = [], until
    while name:
        names.insert(0, name)
        name = done[name].get("after")
    stages = []
    for n in names:
        counts = {int(k): v for k, v in done[n]["tokens_by_level"].items()}
        tokens = sum(counts.values())
        stages.append((float(tokens), sum(v for k, v in counts.items() if k >= 1) / max(tokens, 1)))
    return names, stages
