"""SFT through the trainer: the first logged loss of a chat run equals the loss transformers computes on the same
conversations, rendered by transformers' own chat template with its assistant mask (`{% generation %}`), one
conversation at a time: rendering, assistant-only targets, packing with cross-document masking and the token-mean
normalisation all checked at once against an independent implementation."""

from __future__ import annotations

import json

import numpy as np

from jaxfin.config import load_config
from jaxfin.data.tokenizer import load_tokenizer
from jaxfin.train import train
from jaxfin.train.data_stream import DataStream
from tests.conftest import shared_data, tiny_hf_llama
from tests.test_render import hf_tok  # noqa: F401 - the ChatML byte-level BPE fixture
from tests.tolerances import rounding_tol


def test_sft_loss_is_transformers_loss_on_assistant_tokens(small_config, hf_tok, tmp_path):  # noqa: F811
    import torch

    lines = (shared_data() / "instructions" / "gsm8k_train.jsonl").read_text().splitlines()[:120]
    records = [json.loads(x) for x in lines]
    (tmp_path / "sft.jsonl").write_text("\n".join(lines) + "\n")
    hf_tokenizer = hf_tok.hf
    oracle = {}  # token tuple -> transformers' assistant mask
    for r in records:
        messages = [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["output"]}]
        enc = hf_tokenizer.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        oracle[tuple(enc["input_ids"])] = np.asarray(enc["assistant_masks"])

    hf = tiny_hf_llama(vocab_size=len(hf_tokenizer), max_position_embeddings=512, rope_theta=10000.0, bos_token_id=0,
                       eos_token_id=1)  # fmt: skip
    hf.save_pretrained(tmp_path / "hf_in")
    out = tmp_path / "run"
    source = f"{{name: gsm8k, path: {tmp_path / 'sft.jsonl'}, kind: chat, chat_template: tokenizer}}"
    cfg = load_config(
        small_config,
        [f"output_dir={out}", f"init_from={tmp_path / 'hf_in'}", f"tokenizer={hf_tok.path}", f"data.sources=[{source}]",
         "data.dev=[]", "data.seq_len=512", "data.filters.max_chars=700", "optimizer.lr=0", "train.steps=1",
         "checkpoint.every=0"],
    )  # fmt: skip
    train(cfg)
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])

    batch = DataStream(cfg.data, cfg.train, cfg.objective.type, load_tokenizer(cfg.tokenizer)).loader.batch(0)
    nll, count, docs = 0.0, 0, 0
    for r in range(cfg.train.batch_size):
        for s in set(batch["segment_ids"][r].tolist()) - {0}:
            doc = batch["tokens"][r][batch["segment_ids"][r] == s]
            mask = oracle[tuple(doc.tolist())]  # a KeyError here: the trainer's tokens differ from transformers'
            with torch.no_grad():
                logp = torch.log_softmax(hf(torch.tensor(doc[None].astype(np.int64))).logits[0].double(), -1)
            target = torch.tensor(mask[1:].astype(bool))
            tok_logp = logp[torch.arange(len(doc) - 1), torch.tensor(doc[1:].astype(np.int64))]
            nll -= tok_logp[target].sum().item()
            count += int(target.sum())
            docs += 1
    assert docs > cfg.train.batch_size  # some rows pack several conversations
    assert first["target_tokens"] == count
    # The trainer's loss is a float32 sum of `count` NLLs of one sign (the oracle's is float64): lam sqrt(n) u of it;
    # each token's own forward rounding averages out. Near-uniform logits of a fresh model make a misaligned mask
    # cost little, so no looser than this.
    rel = float(rounding_tol(np.float32, count)) / 2
    assert abs(first["loss"] - nll / count) <= rel * (nll / count), (first["loss"], nll / count, rel)
