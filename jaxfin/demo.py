"""The demo pipeline (`make demo`): CPT a tiny Llama on the project's own finance corpus, on CPU, in minutes.

1. trains `configs/tiny.yaml` (corpus and SentencePiece tokenizer in demo_data/, written by
   `python -m tools.demo_corpus`) from scratch, printing progress and dev loss;
2. prints the first and last dev loss and saves the loss curve as a PNG;
3. exports a Hugging Face folder, loads it with `transformers` and generates a few tokens.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path


def plot_losses(metrics_path: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [json.loads(line) for line in metrics_path.read_text().splitlines()]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r["step"] for r in recs], [r["loss"] for r in recs], label="train loss")
    dev = [r for r in recs if "dev_loss" in r]
    ax.plot([r["step"] for r in dev], [r["dev_loss"] for r in dev], "o-", label="dev loss")
    ax.set(xlabel="step", ylabel="loss (nats/token)", title="jaxfin demo: tiny Llama CPT on finance text")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def check_with_transformers(hf_dir: Path, prompt: str, new_tokens: int = 20) -> tuple[str, float]:
    """Greedy generation by transformers from the export, and max |logits diff| vs jaxfin on the result."""
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import jaxfin

    tok = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    ids = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=new_tokens, do_sample=False)
        hf_logits = model(out).logits.numpy()
    ours = np.asarray(jaxfin.load_model(hf_dir).logits(out.numpy()))
    return tok.decode(out[0], skip_special_tokens=True), float(np.abs(ours - hf_logits).max())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jaxfin.demo", description=__doc__.split("\n")[0])
    p.add_argument("--config", default="configs/tiny.yaml")
    p.add_argument("--out", default="runs/demo", help="run directory (replaced)")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    args = p.parse_args(argv)

    from jaxfin.config import load_config
    from jaxfin.train import train

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    cfg = load_config(args.config, [f"output_dir={out}", f"export_hf={out / 'hf'}", *args.overrides])
    t0 = time.time()
    summary = train(cfg)
    first, last = summary["dev_loss_first"], summary["dev_loss_last"]
    print(f"\ndev loss: first {first:.4f} -> last {last:.4f}  ({time.time() - t0:.0f} s of training)")
    png = out / "loss_curve.png"
    plot_losses(out / "metrics.jsonl", png)
    print(f"loss curve: {png}")
    prompt = "The Federal Reserve"
    text, diff = check_with_transformers(out / "hf", prompt)
    print(f"transformers loaded {out / 'hf'} and generated: {text!r}")
    print(f"jaxfin vs transformers logits on that text: max |diff| = {diff:.2e}")
    if not last < first - 0.5:
        print("demo FAILED: the dev loss did not fall clearly", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
