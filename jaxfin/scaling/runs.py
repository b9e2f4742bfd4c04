"""Pilot runs for scaling-law fits: `jaxfin scaling sweep` writes (and optionally runs) a grid of small runs,
`jaxfin scaling collect` turns finished runs into the RUNS.csv that `jaxfin scaling fit` reads.

sweep: for each size NAME (a model shape), token budget D and optional domain ratio r it writes
`DIR/<NAME>-D<D>[-r<r>]/config.yaml`: the base config (with its key=value overrides) plus the model shape,
`train.steps = ceil(D / (batch_size * seq_len))` and `output_dir` = that folder; for a ratio sweep the single
curriculum stage gets weight r (split evenly) over the `domain: true` sources and 1 - r over the `domain: false`
ones. `DIR/sweep.json` records the grid and, per run, N (non-embedding and total), D, r and the command.

collect: one CSV row per finished run. Columns, in this order (optional ones only when some run has them):
  run           the run's folder name
  params        N: non-embedding parameters = all parameters minus the token embedding and the LM head (the
                vocabulary matrices; counted once when tied). This is the N the fitter uses: at pilot scale the
                vocabulary matrices dominate the total and bend the fit (Kaplan et al. 2020 count N this way).
  params_total  every parameter, embeddings included
  tokens        D: non-padding tokens actually trained on, exact, from the final checkpoint's data-iterator
                state (`checkpoints/<step>/meta`: the per-source token counts the loop keeps; exact for a
                single-process run, which pilot runs are). Without a readable checkpoint it falls back to
                steps * batch_size * seq_len * packing efficiency (the plan's sources' efficiencies weighted by
                the run's mixture, from data_plan.json).
  loss          the final dev loss: `dev_loss` of the last metrics.jsonl record (token mean over all dev sets)
  steps         optimizer steps run (the last logged step)
  ratio         only for runs whose sources mix `domain: true` and `domain: false` data: the requested domain
                share of the mixture (single stage: its weights, or the sources' own weights without stages;
                several stages: the planned cumulative data intensity from data_plan.json)
  data_intensity  the realised domain token share over the run (the last record's `data_intensity`)
  domain_loss   plain (unweighted) mean of `dev_loss/<name>` over the dev sets with `domain: true`
  general_loss  the same over the dev sets with `domain: false`
  dev_loss/<name>  each dev set's final loss
A cell is empty where a run lacks an optional value. A run is finished when its metrics.jsonl reaches
train.steps (or its last checkpoint records an early stop by train.patience); unfinished runs are refused, or
skipped with --allow-partial.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import sys
from pathlib import Path

import yaml

SWEEP_JSON = "sweep.json"
BASE_COLUMNS = ["run", "params", "params_total", "tokens", "loss", "steps"]


# ------------------------------------------------------------------------------------------------ counting
def param_counts(model_cfg) -> tuple[int, int]:
    """(non-embedding, total) parameter counts of a ModelConfig, from the model's own `param_shapes`."""
    from jaxfin.model.params import param_count, param_shapes

    shapes = param_shapes(model_cfg)
    total = param_count(model_cfg)
    vocab = math.prod(shapes["embed_tokens"]["embedding"])
    if "lm_head" in shapes:
        vocab += math.prod(shapes["lm_head"]["kernel"])
    return total - vocab, total


# ------------------------------------------------------------------------------------------------ sweep
def parse_size(text: str) -> tuple[str, dict]:
    """`NAME:hidden_size=64,num_layers=2,...` -> (NAME, {model key: value})."""
    name, sep, spec = text.partition(":")
    if not sep or not name or not spec:
        raise ValueError(f"--size '{text}' must look like NAME:hidden_size=64,num_layers=2,... (model keys)")
    if "/" in name or name.startswith("."):
        raise ValueError(f"--size '{text}': the name '{name}' is used as a folder name; avoid '/' and a leading '.'")
    shape = {}
    for item in spec.split(","):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--size '{text}': '{item}' must look like key=value (e.g. hidden_size=64)")
        shape[key.strip().removeprefix("model.")] = yaml.safe_load(value)
    return name, shape


def _numbers(text: str, flag: str, lo: float, hi: float | None) -> list[tuple[str, float]]:
    """Comma-separated numbers -> [(as spelled, value)]; refuse bad, out-of-range and repeated values."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"{flag}: '{part}' is not a number (give e.g. {flag} 2e5,4e5)") from None
        if not (value > lo and (hi is None or value < hi)):
            rng = f"in ({lo:g}, {hi:g})" if hi is not None else f"> {lo:g}"
            raise ValueError(f"{flag}: {part} must be {rng}")
        if any(value == v for _, v in out):
            raise ValueError(f"{flag}: {part} is given twice")
        out.append((part, int(value) if value.is_integer() else value))
    return out


def _ratio_weights(data: dict, r: float) -> dict[str, float]:
    """Stage weights giving the domain sources r (evenly) and the general ones 1 - r (evenly)."""
    from jaxfin.config.schema import SourceConfig
    from jaxfin.data.loader import named

    sources = named([SourceConfig(**s) for s in data["sources"]], "data.sources")
    dom = [s.name for s in sources if s.domain]  # any level >= 1
    gen = [s.name for s in sources if not s.domain]
    if not dom or not gen:
        raise ValueError(
            "--ratio needs a base config with both domain sources (`domain: true`, the default) and general ones "
            f"(`domain: false`) in data.sources; it has {len(dom)} domain and {len(gen)} general"
        )
    if len(data.get("stages") or []) > 1:
        raise ValueError(f"--ratio sets a single stage's weights; the base config has {len(data['stages'])} stages")
    return {**{n: r / len(dom) for n in dom}, **{n: (1 - r) / len(gen) for n in gen}}


def plan_sweep(
    base: str, out: str, sizes: list[str], tokens: str, ratios: str | None, overrides: list[str]
) -> list[dict]:
    """Write every run's config.yaml and DIR/sweep.json; return the runs (name, dir, N, D, r, steps, command)."""
    from jaxfin.config import config_from_dict, load_config, to_dict

    if not sizes:
        raise ValueError("give at least one --size NAME:hidden_size=...,num_layers=...")
    cfg = load_config(base, overrides)
    shapes = dict(parse_size(s) for s in sizes)
    if len(shapes) != len(sizes):
        raise ValueError("two --size options have the same NAME")
    budgets = _numbers(tokens, "--tokens", 0, None)
    rs = _numbers(ratios, "--ratio", 0, 1) if ratios else [None]
    rows_tokens = cfg.train.batch_size * cfg.data.seq_len
    root = Path(out)
    runs = []
    for (size, shape), (d_text, d), rr in itertools.product(shapes.items(), budgets, rs):
        name = f"{size}-D{d_text}" + (f"-r{rr[0]}" if rr else "")
        run_dir = root / name
        data = to_dict(cfg)
        data["model"].update(shape)
        data["train"]["steps"] = math.ceil(d / rows_tokens)
        data["output_dir"] = str(run_dir)
        if rr:
            data["data"]["stages"] = [{"tokens": 0, "weights": _ratio_weights(data["data"], rr[1])}]
        run_cfg = config_from_dict(data, f"--size {size}")  # validates the shape (unknown keys, head sizes, ...)
        params, params_total = param_counts(run_cfg.model)
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(run_cfg), sort_keys=False))
        runs.append({
            "name": name, "dir": str(run_dir), "size": size, "params": params, "params_total": params_total,
            "tokens": d, "steps": run_cfg.train.steps, "tokens_planned": run_cfg.train.steps * rows_tokens,
            "ratio": rr[1] if rr else None, "command": f"python -m jaxfin.launch {run_dir / 'config.yaml'}",
        })  # fmt: skip
    sweep = {
        "base": str(base),
        "overrides": list(overrides),
        "sizes": shapes,
        "tokens": [d for _, d in budgets],
        "ratios": [r[1] for r in rs if r],
        "params_counted": "params = non-embedding (all minus token embedding and LM head); params_total = all",
        "runs": runs,
    }
    (root / SWEEP_JSON).write_text(json.dumps(sweep, indent=2) + "\n")
    return runs


def run_sweep(args) -> int:
    runs = plan_sweep(args.base, args.out, args.size, args.tokens, args.ratio, args.overrides)
    print(f"wrote {len(runs)} run configs and {Path(args.out) / SWEEP_JSON}")
    for r in runs:
        print(f"{r['command']}    # N={r['params']:,} (total {r['params_total']:,}), D={r['tokens']:g}, "
              f"steps={r['steps']}" + (f", r={r['ratio']:g}" if r["ratio"] is not None else ""))  # fmt: skip
    if not args.run:
        return 0
    from jaxfin.config import load_config
    from jaxfin.train import train

    for i, r in enumerate(runs, 1):
        status = run_status(Path(r["dir"]))
        if status["finished"]:
            print(f"[{i}/{len(runs)}] {r['name']}: already finished, skipped", flush=True)
            continue
        print(f"[{i}/{len(runs)}] {r['name']}: training", flush=True)
        train(load_config(Path(r["dir"]) / "config.yaml"))
    return 0


def add_sweep_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "sweep",
        help="write (and optionally run) a grid of small pilot runs: sizes x token budgets [x domain ratios]",
        description="For each --size, --tokens budget D and optional --ratio r, write DIR/<size>-D<D>[-r<r>]/"
        "config.yaml: BASE (with key=value overrides) plus the model shape, train.steps = ceil(D / (batch_size * "
        "seq_len)) and output_dir = that folder. With --ratio the base needs domain (`domain: true`) and general "
        "(`domain: false`) sources; one stage then gives the domain sources r and the general ones 1 - r, split "
        "evenly. Writes DIR/sweep.json (the grid; each run's N, non-embedding and total, D, r and command) and "
        "prints the commands; --run trains them one after another, skipping finished runs and resuming a "
        "killed one. Then: jaxfin scaling collect DIR --out RUNS.csv.",
    )
    p.add_argument("base", metavar="BASE.yaml", help="base config (data, tokenizer, optimizer, batch, ...)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides applied to BASE")
    p.add_argument("--out", required=True, metavar="DIR", help="sweep folder (one subfolder per run)")
    p.add_argument(
        "--size", action="append", default=[], required=True, metavar="NAME:key=value,...",
        help="a model shape (model.* keys), e.g. s1:hidden_size=64,num_layers=2,intermediate_size=172,"
        "num_heads=4,num_kv_heads=2; repeat for each size",
    )  # fmt: skip
    p.add_argument("--tokens", required=True, metavar="D,D,...", help="token budgets, e.g. 2e5,4e5,8e5")
    p.add_argument("--ratio", metavar="r,r,...", help="domain shares in (0, 1), e.g. 0.25,0.5,0.75")
    p.add_argument("--run", action="store_true", help="train the runs now, in this process, one after another")
    p.set_defaults(func=run_sweep)
    _trailing_overrides(p)
    return p


def _trailing_overrides(p: argparse.ArgumentParser) -> None:
    """Accept key=value overrides after the options too (argparse alone takes them only right after BASE)."""
    parse = p.parse_known_args

    def parse_known_args(args=None, namespace=None):
        ns, extras = parse(args, namespace)
        late = [a for a in extras if "=" in a and not a.startswith("-")]
        if late:
            ns.overrides = [*(ns.overrides or []), *late]
        return ns, [a for a in extras if a not in late]

    p.parse_known_args = parse_known_args


# ------------------------------------------------------------------------------------------------ collect
def _records(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    recs = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                recs.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a kill
                continue
    return recs


def _last_meta(run_dir: Path) -> dict | None:
    """The JSON meta of the newest committed checkpoint (data-iterator state, dev-loss bookkeeping)."""
    ckpts = run_dir / "checkpoints"
    steps = sorted((int(p.name) for p in ckpts.iterdir() if p.name.isdigit()), reverse=True) if ckpts.is_dir() else []
    for step in steps:
        path = ckpts / str(step) / "meta" / "metadata"
        if (ckpts / str(step) / "commit_success.txt").exists() and path.is_file():
            try:
                return json.loads(path.read_text())
            except json.JSONDecodeError:
                continue
    return None


def run_status(run_dir: Path) -> dict:
    """{finished, steps (last logged step), records, meta, cfg} of one run folder."""
    from jaxfin.config import load_config

    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{run_dir}: no config.yaml here; give a run folder or a sweep folder")
    cfg = load_config(cfg_path)
    recs = _records(run_dir)
    last = max((r.get("step", 0) for r in recs), default=0)
    meta = _last_meta(run_dir) if recs else None
    early = bool(cfg.train.patience and meta and meta.get("step") == last and
                 meta.get("dev_bad_evals", 0) >= cfg.train.patience)  # fmt: skip
    return {"finished": last >= cfg.train.steps or early, "steps": last, "records": recs, "meta": meta, "cfg": cfg}


def _requested_ratio(cfg, run_dir: Path) -> float | None:
    from jaxfin.data.loader import named, stage_weights

    sources = named(cfg.data.sources, "data.sources")
    domain = {s.name: bool(s.domain) for s in sources}
    if len(set(domain.values())) < 2:
        return None
    stages = stage_weights(cfg.data, sources)
    if len(stages) == 1:
        w = stages[0][1]
        total = sum(w.get(n, 0.0) for n in domain)
        return sum(w.get(n, 0.0) for n, d in domain.items() if d) / total if total else None
    plan = run_dir / "data_plan.json"
    return json.loads(plan.read_text())["stages"][-1]["cumulative"] if plan.is_file() else None


def _tokens_from_plan(cfg, run_dir: Path, steps: int) -> int:
    plan_path = run_dir / "data_plan.json"
    nominal = steps * cfg.train.batch_size * cfg.data.seq_len
    if not plan_path.is_file():
        return nominal
    plan = json.loads(plan_path.read_text())
    eff = {s["name"]: s.get("packing_efficiency", 1.0) for s in plan["sources"]}
    probs = plan["stages"][-1]["probs"] if plan.get("stages") else {n: 1 / len(eff) for n in eff}
    return round(nominal * sum(p * eff.get(n, 1.0) for n, p in probs.items()))


def collect_row(run_dir: Path, allow_partial: bool = False) -> dict | None:
    """One CSV row (see the module docstring), or None for an unfinished run with allow_partial."""
    from jaxfin.data.loader import named

    st = run_status(run_dir)
    cfg, recs = st["cfg"], st["records"]
    if not st["finished"]:
        if allow_partial:
            print(f"skipped {run_dir}: unfinished (step {st['steps']} of {cfg.train.steps})", file=sys.stderr)
            return None
        raise ValueError(
            f"run {run_dir} is unfinished: metrics.jsonl reaches step {st['steps']} of train.steps="
            f"{cfg.train.steps}; finish it (rerun its command or `jaxfin scaling sweep ... --run`) or pass "
            "--allow-partial to skip it"
        )
    last = max(recs, key=lambda r: r.get("step", 0))
    if "dev_loss" not in last:
        raise ValueError(
            f"run {run_dir}: the last metrics.jsonl record (step {last.get('step')}) has no dev_loss; pilot runs "
            "need data.dev sets and an evaluation at the last step"
        )
    params, params_total = param_counts(cfg.model)
    meta = st["meta"]
    if meta and meta.get("step") == st["steps"] and meta.get("data", {}).get("tokens"):
        tokens = int(sum(meta["data"]["tokens"].values()))
    else:
        tokens = _tokens_from_plan(cfg, run_dir, st["steps"])
    row = {"run": run_dir.name, "params": params, "params_total": params_total, "tokens": tokens,
           "loss": last["dev_loss"], "steps": st["steps"]}  # fmt: skip
    ratio = _requested_ratio(cfg, run_dir)
    if ratio is not None:
        row["ratio"] = ratio
        if "data_intensity" in last:
            row["data_intensity"] = last["data_intensity"]
    devs = named(cfg.data.dev, "data.dev")
    for col, flag in (("domain_loss", True), ("general_loss", False)):
        vals = [last[f"dev_loss/{s.name}"] for s in devs if bool(s.domain) == flag and f"dev_loss/{s.name}" in last]
        if vals:
            row[col] = sum(vals) / len(vals)
    for s in devs:
        if f"dev_loss/{s.name}" in last:
            row[f"dev_loss/{s.name}"] = last[f"dev_loss/{s.name}"]
    return row


def expand_run_dirs(paths: list[str]) -> list[Path]:
    """Run folders; a sweep folder (with sweep.json) stands for its runs, in grid order."""
    out = []
    for p in map(Path, paths):
        if (p / SWEEP_JSON).is_file():
            sweep = json.loads((p / SWEEP_JSON).read_text())
            out += [p / r["name"] for r in sweep["runs"]]  # relative to where the sweep folder is now
        elif (p / "config.yaml").is_file():
            out.append(p)
        elif not p.exists():
            raise FileNotFoundError(f"{p}: no such run or sweep folder")
        else:
            raise FileNotFoundError(f"{p}: neither a run folder (config.yaml) nor a sweep folder ({SWEEP_JSON})")
    return out


def collect(paths: list[str], out: str | None, allow_partial: bool = False) -> list[dict]:
    """Rows for the given run / sweep folders, written as CSV to `out` (stdout when None)."""
    rows = [r for r in (collect_row(d, allow_partial) for d in expand_run_dirs(paths)) if r is not None]
    if not rows:
        raise ValueError("no finished runs to collect")
    cols = list(BASE_COLUMNS)
    for opt in ("ratio", "data_intensity", "domain_loss", "general_loss"):
        if any(opt in r for r in rows):
            cols.append(opt)
    cols += sorted({k for r in rows for k in r if k.startswith("dev_loss/")})
    if out is None:
        _write_csv(sys.stdout, cols, rows)
    else:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w", newline="") as f:
            _write_csv(f, cols, rows)
    return rows


def _write_csv(f, cols: list[str], rows: list[dict]) -> None:
    w = csv.DictWriter(f, fieldnames=cols, restval="", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)


def run_collect(args) -> int:
    rows = collect(args.runs, args.out, args.allow_partial)
    if args.out:
        print(f"wrote {len(rows)} runs to {args.out}", file=sys.stderr)
    return 0


def add_collect_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "collect",
        help="build RUNS.csv (params, tokens, loss[, ratio]) from finished pilot runs",
        description="One CSV row per finished run: run, params (N without the embedding and LM head; what `fit` "
        "uses), params_total, tokens (non-padding tokens trained on, exact from the final checkpoint), loss (final "
        "dev_loss), steps, then ratio and data_intensity (runs mixing domain and general sources), domain_loss / "
        "general_loss (plain mean of the final dev_loss/<name> over dev sets with domain true / false) and each "
        "dev_loss/<name>. See jaxfin/scaling/runs.py for the exact definitions.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders, or a sweep folder for all its runs")
    p.add_argument("--out", metavar="RUNS.csv", help="CSV file to write (default: stdout)")
    p.add_argument("--allow-partial", action="store_true", help="skip unfinished runs instead of refusing")
    p.set_defaults(func=run_collect)
    return p
