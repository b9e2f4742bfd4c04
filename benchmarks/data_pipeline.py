"""Data pipeline throughput on this machine, printed as JSON: tokenization and cache -> pack -> batch.

    python benchmarks/data_pipeline.py [--data ../shared/data] [--seq-len 2048] [--batch 8]

1. Tokenization (tokens/s, and per core): a fast Hugging Face tokenizer (a 32K byte-level BPE trained here on
   a slice of the corpus, shaped like Llama 3's) and the demo SentencePiece model, each with 1 and with all
   cores, each in a fresh process (the Rust thread pool is sized once per process).
2. Cache -> pack -> batch (tokens/s): the finance corpus tokenized into a token cache, then best-fit row
   planning and gathering into [batch, seq_len] batches, as the loader does.
Targets (issue 3): >= 300k tokens/s/core tokenizing with a fast HF tokenizer; >= 1M tokens/s from the cache.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = ("beige_book_2014_2020.jsonl", "reuters21578_macro_acq.jsonl", "fed_speeches_2004_2005.jsonl")


def _texts(data: Path) -> list[str]:
    out = []
    for name in CORPUS:
        with (data / "finance_corpus_en" / name).open() as f:
            out += [json.loads(line)["text"] for line in f if line.strip()]
    return out


def train_bpe(texts: list[str], out: Path) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=32000, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts[: len(texts) // 4], trainer)
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>").save_pretrained(out)
    return out


def tokenize_once(tokenizer: str, data: Path, threads: int) -> dict:
    """Runs in its own process (see main)."""
    from jaxfin.data.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer, threads=threads)
    texts = _texts(data)
    tok.encode_batch(texts[:64])  # warm up
    t0 = time.perf_counter()
    n = sum(len(x) for i in range(0, len(texts), 512) for x in tok.encode_batch(texts[i : i + 512]))
    dt = time.perf_counter() - t0
    mb = sum(len(t.encode()) for t in texts) / 1e6
    return {"threads": threads, "tokens": n, "seconds": round(dt, 3), "tokens_per_s": n / dt, "MB_per_s": mb / dt}


def pack_bench(data: Path, tokenizer: str, seq_len: int, batch: int, work: Path) -> dict:
    import numpy as np

    from jaxfin.data.binpack import efficiency, gather_row, plan_rows, split_pieces
    from jaxfin.data.cache import build_cache
    from jaxfin.data.render import sequences
    from jaxfin.data.sources import Document
    from jaxfin.data.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer)
    docs = [Document("corpus", "", "text", {"text": t}) for t in _texts(data)]
    cache = build_cache(sequences(docs, "text", tok), tok.vocab_size, work / "cache", meta=dict)
    t0 = time.perf_counter()
    order = np.random.default_rng(0).permutation(len(cache))
    plans = list(plan_rows(split_pieces(cache.doc_lengths(), seq_len, order), seq_len, "best_fit", 1000))
    plan_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tokens = 0
    for i in range(0, len(plans) - batch + 1, batch):
        rows = [gather_row(p, cache, seq_len) for p in plans[i : i + batch]]
        out = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
        tokens += int((out["segment_ids"] != 0).sum())
    gather_s = time.perf_counter() - t0
    return {
        "cache_tokens": cache.num_tokens,
        "rows": len(plans),
        "packing_efficiency": efficiency(plans, seq_len),
        "plan_tokens_per_s": cache.num_tokens / plan_s,
        "gather_batch_tokens_per_s": tokens / gather_s,
        "end_to_end_tokens_per_s": tokens / (plan_s + gather_s),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=os.environ.get("JAXFIN_SHARED_DATA", str(REPO.parent / "shared" / "data")))
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--_tokenize", nargs=2, metavar=("TOKENIZER", "THREADS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    data = Path(args.data)
    if args._tokenize:
        print(json.dumps(tokenize_once(args._tokenize[0], data, int(args._tokenize[1]))))
        return
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bpe = str(train_bpe(_texts(data), work / "bpe32k"))
        result = {"benchmark": "data_pipeline", "cores": cores, "tokenize": {}}
        for name, tok in (("hf_bpe32k", bpe), ("sentencepiece_demo", str(REPO / "demo_data" / "tokenizer.model"))):
            runs = []
            for threads in sorted({1, cores}):
                cmd = [sys.executable, __file__, "--data", str(data), "--_tokenize", tok, str(threads)]
                r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                r["tokens_per_s_per_core"] = r["tokens_per_s"] / threads
                runs.append(r)
            result["tokenize"][name] = runs
        result["cache_pack_batch"] = {"tokenizer": "hf_bpe32k", "seq_len": args.seq_len, "batch": args.batch}
        result["cache_pack_batch"] |= pack_bench(data, bpe, args.seq_len, args.batch, work)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
