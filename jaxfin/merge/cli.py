"""`jaxfin merge MERGE.yaml OUT_DIR`: a mergekit YAML, merged tensor by tensor into a Hugging Face folder."""

from __future__ import annotations

import json


def run_merge_cli(args) -> int:
    from jaxfin.merge.config import load_merge_config
    from jaxfin.merge.engine import run_merge

    plan = load_merge_config(args.config)
    if args.print_plan:
        print(json.dumps({"merge_method": plan.merge_method, "models": plan.referenced_models(),
                          "base_model": plan.base_model, "tokenizer_source": plan.tokenizer_source,
                          "dtype": plan.dtype, "out_dtype": plan.out_dtype}, indent=2))  # fmt: skip
        return 0
    summary = run_merge(
        plan, args.out_dir, max_shard_size=args.max_shard_size, seed=args.seed, device=args.device,
        out_format=args.format,
    )  # fmt: skip
    print(json.dumps(summary))
    return 0


def add_merge_parser(sub) -> None:
    p = sub.add_parser(
        "merge",
        help="merge models from a mergekit YAML (streaming, tensor by tensor)",
        description="Merge the models a mergekit YAML names (local Hugging Face folders or jaxfin checkpoints) into "
        "OUT_DIR, one tensor at a time: linear, task_arithmetic, ties, dare_linear, dare_ties, breadcrumbs, "
        "breadcrumbs_ties, slerp, model_stock, passthrough; parameters as scalars, layer gradients or "
        "{filter, value} lists; slices with layer_range; tokenizer_source base | union | a model. Prints a JSON "
        "summary.",
    )
    p.add_argument("config", help="mergekit YAML file")
    p.add_argument("out_dir", help="output folder (a Hugging Face model, or a jaxfin checkpoint with --format jaxfin)")
    p.add_argument("--format", choices=["hf", "jaxfin"], default="hf", help="output format (default hf)")
    p.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard, e.g. 5GB, 500MB (default 5GB)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random methods (DARE)")
    p.add_argument("--device", action="store_true", help="run the per-tensor math on the default JAX device")
    p.add_argument("--print-plan", action="store_true", help="print the parsed config and exit")
    p.set_defaults(func=run_merge_cli)
