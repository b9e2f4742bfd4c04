"""`jaxfin recipe status DIR_OR_RECIPE [key=value ...]`: each stage of a recipe, its state and headline metrics;
`jaxfin findings`: the seed systems' findings reproduced in miniature (jaxfin/recipe/findings.py)."""

from __future__ import annotations

import json
from pathlib import Path


def run_status(args) -> int:
    from jaxfin.recipe.plan import is_recipe, load_recipe
    from jaxfin.recipe.report import status_rows, status_table
    from jaxfin.recipe.run import STATE, read_state

    target = Path(args.target)
    planned = None
    if target.is_file() and is_recipe(target):
        out, planned = load_recipe(target, args.overrides)
    elif (target / STATE).is_file():
        out = target
    else:
        raise FileNotFoundError(f"{target}: neither a recipe file nor a recipe output dir (no {STATE} in it)")
    rows = status_rows(out, read_state(out), planned)
    print(json.dumps(rows, indent=2) if args.json else status_table(rows))
    return 0


def add_recipe_parser(sub) -> None:
    p = sub.add_parser("recipe", help="a recipe's stages: state and headline metrics",
                       description="Run a recipe with `jaxfin train RECIPE.yaml` (or python -m jaxfin.launch); this "
                       "command reports on one.")  # fmt: skip
    actions = p.add_subparsers(dest="action", required=True)
    s = actions.add_parser("status", help="each stage: done, running, stopped, partial, pending or changed",
                           description="List a recipe's stages with their state (done, running, stopped, partial, "
                           "pending; given the recipe file also `changed`: done under other inputs, so the next run "
                           "reruns it) and headline metrics (training: steps and dev loss; eval: checks and "
                           "bits/byte per model and text set).")  # fmt: skip
    s.add_argument("target", help="the recipe's output dir, or the recipe YAML (its output_dir)")
    s.add_argument("overrides", nargs="*", help="with a recipe file: the key=value overrides of the run")
    s.add_argument("--json", action="store_true", help="print the rows as JSON")
    s.set_defaults(func=run_status)


def run_findings_cli(args) -> int:
    from jaxfin.recipe.findings import run_findings, table, update_readme

    report = run_findings(args.out, args.claims, args.seeds, args.overrides)
    print(table(report))
    if args.readme:
        update_readme(args.readme, report)
        print(f"updated the findings table in {args.readme}")
    return 0 if all(c["holds"] for c in report["claims"]) or not args.strict else 1


def add_findings_parser(sub) -> None:
    from jaxfin.recipe.findings import CLAIMS

    claims = "; ".join(f"{k}: {v[1]}" for k, v in CLAIMS.items())
    p = sub.add_parser("findings", help="reproduce the seed systems' findings in miniature (CPU, ../shared/data)",
                       description="Run the miniature recipes and their ablations (Llama-3-SEC with and without "
                       "replay and its TIES merge; FinDAP joint vs sequential CPT+IT and DPO; vocabulary expansion "
                       "with an embeddings-only or full first stage) for each seed, and write OUT/findings.json "
                       "and findings.md: each claim, its numbers per seed, mean and spread, and whether the "
                       f"direction holds. Claims: {claims}.")  # fmt: skip
    p.add_argument("--out", default="runs/findings", help="output dir (default runs/findings); reruns resume")
    p.add_argument("--claims", default="".join(CLAIMS), help=f"which claims (default {''.join(CLAIMS)})")
    p.add_argument("--seeds", type=int, default=3, help="seeds per arm (default 3)")
    p.add_argument("--readme", help="also replace the findings table in this README (between its markers)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a claim does not hold")
    p.add_argument("overrides", nargs="*", help="key=value for every training stage, e.g. train.steps=10")
    p.set_defaults(func=run_findings_cli)
