"""`jaxfin merge MERGE.yaml OUT_DIR`: a mergekit YAML, merged tensor by tensor into a Hugging Face folder; `jaxfin moe
MOE.yaml OUT_DIR`: a mergekit-moe YAML assembled into a Mixtral folder (jaxfin/merge/moe.py)."""

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


def run_moe_cli(args) -> int:
    from jaxfin.merge.moe import assemble_moe, load_moe_config

    allow = args.i_understand_this_is_not_useful_without_training
    if args.print_plan:
        plan = load_moe_config(args.config, allow_all_same=allow)
        print(json.dumps({"base_model": plan.base_model, "experts": [e.source_model for e in plan.experts],
                          "gate_mode": plan.gate_mode, "experts_per_token": plan.experts_per_token,
                          "dtype": plan.dtype, "non_expert": plan.non_expert}, indent=2))  # fmt: skip
        return 0
    summary = assemble_moe(
        args.config, args.out_dir, seed=args.seed, layout=args.layout, max_shard_size=args.max_shard_size,
        hidden_dtype=args.hidden_dtype, allow_all_same=allow,
    )  # fmt: skip
    print(json.dumps(summary))
    return 0


def add_moe_parser(sub) -> None:
    p = sub.add_parser(
        "moe",
        help="assemble a Mixtral mixture of experts from dense models (a mergekit-moe YAML)",
        description="Build a Mixtral folder in OUT_DIR from a mergekit-moe YAML: base_model, experts [{source_model, "
        "positive_prompts, negative_prompts, noise_scale, residual_scale}], gate_mode hidden | hidden_avg | "
        "cheap_embed | random | uniform_random, or jaxfin's hidden_normed (gates from the router's own post-norm "
        "input); experts_per_token, dtype, and jaxfin's non_expert: base (mergekit) | average (Branch-Train-MiX). "
        "Each expert's MLP becomes an expert; the other tensors are the base's or the experts' mean. Prints a JSON "
        "summary.",
    )
    p.add_argument("config", help="mergekit-moe YAML file")
    p.add_argument("out_dir", help="output folder (a Hugging Face MixtralForCausalLM)")
    p.add_argument("--seed", type=int, default=0, help="seed of random gates and expert noise_scale (default 0)")
    p.add_argument("--layout", choices=["per_expert", "fused"], default="per_expert",
                   help="expert tensors as block_sparse_moe.experts.{e}.w1/w2/w3 (default) or fused "
                   "mlp.experts.gate_up_proj / down_proj (what mergekit 0.1.5 writes)")  # fmt: skip
    p.add_argument("--hidden-dtype", choices=["float32", "bfloat16"], default="float32",
                   help="dtype of the base model's forward for the hidden gate modes (bfloat16: as mergekit-moe, "
                   "whose gates then carry bfloat16 rounding)")  # fmt: skip
    p.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard, e.g. 5GB, 500MB (default 5GB)")
    p.add_argument("--i-understand-this-is-not-useful-without-training", action="store_true",
                   help="allow every expert to be the same model (as mergekit-moe's flag)")  # fmt: skip
    p.add_argument("--print-plan", action="store_true", help="print the parsed config and exit")
    p.set_defaults(func=run_moe_cli)
