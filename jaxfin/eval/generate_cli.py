"""`jaxfin generate MODEL --prompts FILE`: batched KV-cache generation for prompts from a file, as JSON lines."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from jaxfin.config.choices import CHAT_TEMPLATES


def read_prompts(path: str | Path) -> list:
    """Prompts from a file: `.jsonl` -> each line's `prompt` (a string) or `messages` (a list of {role, content});
    any other file -> one prompt per non-empty line (use `\\n` for a newline inside a prompt)."""
    from jaxfin.data import DataError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no prompts file at {path}")
    prompts = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if path.suffix != ".jsonl":
            prompts.append(line.replace("\\n", "\n"))
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: not valid JSON ({e.msg})") from None
        if isinstance(row, dict) and isinstance(row.get("prompt"), str):
            prompts.append(row["prompt"])
        elif isinstance(row, dict) and isinstance(row.get("messages"), list):
            prompts.append(row["messages"])
        else:
            raise DataError(f"{path}:{n}: expected an object with a 'prompt' string or a 'messages' list")
    if not prompts:
        raise DataError(f"{path}: no prompts")
    return prompts


def parse_mesh(items: list[str]):
    """`--mesh data=1 fsdp=-1` (or mesh.fsdp=-1) -> the training MeshConfig; unset axes keep its defaults."""
    import dataclasses

    from jaxfin.config import ConfigError, MeshConfig

    sizes = {}
    names = [f.name for f in dataclasses.fields(MeshConfig)]
    for item in items:
        key, _, value = item.partition("=")
        key = key.strip().removeprefix("mesh.")
        if key not in names or not value.strip().lstrip("-").isdigit():
            raise ConfigError(f"--mesh '{item}': expected AXIS=SIZE with AXIS one of {', '.join(names)} (e.g. fsdp=8)")
        sizes[key] = int(value)
    return MeshConfig(**sizes)


def run_generate_cli(args) -> int:
    import jaxfin
    from jaxfin.data.tokenizer import load_tokenizer
    from jaxfin.eval.generate import GenerationConfig, generate_full
    from jaxfin.eval.sharding import eval_mesh, shard_model

    mesh = eval_mesh(parse_mesh(args.mesh))  # before loading anything: a bad mesh fails at once
    prompts = read_prompts(args.prompts)
    if (args.chat_template is None) and any(not isinstance(p, str) for p in prompts):
        raise ValueError(
            f"{args.prompts}: prompts given as 'messages' need --chat-template (tokenizer, llama3, chatml)"
        )
    model = shard_model(jaxfin.load_model(args.model, mesh), mesh)
    tok_path = args.tokenizer or model.tokenizer_dir
    if not tok_path:
        raise FileNotFoundError(f"no tokenizer files in {args.model}; pass --tokenizer PATH")
    tok = load_tokenizer(tok_path)
    cfg = GenerationConfig(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        stop=[x.replace("\\n", "\n").replace("\\t", "\t") for x in args.stop], seed=args.seed,
    )  # fmt: skip
    gens = generate_full(model, tok, prompts, cfg, batch_size=args.batch_size, chat_template=args.chat_template)
    lines = [
        json.dumps({"prompt": p, "text": g.text, "tokens": g.tokens, "finish_reason": g.finish_reason},
                   ensure_ascii=False) + "\n"
        for p, g in zip(prompts, gens)
    ]  # fmt: skip
    if args.out:
        Path(args.out).write_text("".join(lines), encoding="utf-8")
    else:
        sys.stdout.write("".join(lines))
    return 0


def add_generate_parser(sub) -> None:
    p = sub.add_parser(
        "generate",
        help="generate text for prompts from a file (batched KV-cache decoding)",
        description="Generate a completion for every prompt in FILE with MODEL (a jaxfin checkpoint, a training run "
        "dir or a Hugging Face folder): batched, jitted KV-cache decoding, greedy by default. Writes one JSON line "
        "per prompt: prompt, text (cut before a stop string), tokens, finish_reason (eos | stop | length).",
    )
    p.add_argument("model", help="jaxfin checkpoint dir, training run dir or Hugging Face dir")
    p.add_argument("--prompts", required=True, metavar="FILE",
                   help="one prompt per line, or .jsonl with a 'prompt' or 'messages' field per line")  # fmt: skip
    p.add_argument("--tokenizer", help="tokenizer (.model file or HF folder); default: the model folder's")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=0, help="0 = off")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass; 1 = off")
    p.add_argument("--stop", nargs="+", action="extend", default=[], metavar="S",
                   help="stop strings (the text is cut before the first); \\n, \\t = newline, tab")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--chat-template", choices=CHAT_TEMPLATES, default=None,
                   help="render each prompt as a user turn (or the messages) with this chat template")  # fmt: skip
    p.add_argument("--mesh", nargs="+", action="extend", default=[], metavar="AXIS=N",
                   help="device mesh as training's `mesh` (data, fsdp, tensor, expert; -1 = the remaining devices), "
                   "e.g. --mesh data=1 fsdp=-1 to split the weights; default: every device on data")  # fmt: skip
    p.add_argument("--out", metavar="FILE.jsonl", help="write here instead of stdout")
    p.set_defaults(func=run_generate_cli)
