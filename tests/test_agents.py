"""`jaxfin agents`: k role answers then one summary per question, each exactly what greedy decoding by hand with
transformers gives (the exported HF model, the prompts written out here), and the CLI end to end."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from tolerances import rounding_tol

import jaxfin
from jaxfin.config.schema import ModelConfig
from jaxfin.data.tokenizer import load_tokenizer
from jaxfin.eval.agents import load_agents_config, run_agents
from jaxfin.model import Model, init_params
from tests.conftest import REPO

TOKENIZER = REPO / "demo_data/tokenizer.model"


BOS, EOS = 2, 3


def _greedy_by_hand(model_dir, prompts: list[str], max_new: int) -> tuple[list[str], float, int]:
    """Independent greedy decoding: transformers' forward of the HF folder over the whole sequence at every step
    (no KV cache, no padding), argmax of the last position's logits, until EOS or `max_new` tokens; BOS +
    sentencepiece ids in, sentencepiece text out (EOS dropped). Also returns the smallest top-1 minus top-2 logit
    gap seen, relative to max(1, max |logit|), and the longest sequence fed."""
    import sentencepiece as spm
    import torch
    import transformers

    hf = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    sp = spm.SentencePieceProcessor(model_file=str(TOKENIZER))
    texts, gap, longest = [], float("inf"), 0
    for prompt in prompts:
        ids, new = [BOS, *sp.encode(prompt)], []
        while len(new) < max_new and EOS not in new:
            with torch.no_grad():
                logits = hf(torch.tensor([ids + new])).logits[0, -1].double()
            top2 = torch.topk(logits, 2).values
            gap = min(gap, float(top2[0] - top2[1]) / max(1.0, float(logits.abs().max())))
            longest = max(longest, len(ids) + len(new))
            new.append(int(torch.argmax(logits)))
        texts.append(sp.decode([t for t in new if t != EOS]))
    return texts, gap, longest


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    cfg = ModelConfig(vocab_size=1024, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                      num_kv_heads=2, max_position_embeddings=512, bos_token_id=2, eos_token_id=3,
                      compute_dtype="float32")  # fmt: skip
    d = tmp_path_factory.mktemp("agents_model")
    jaxfin.save_model(Model(cfg, init_params(cfg, jax.random.key(0)), str(TOKENIZER)), d, format="hf")
    return d


def test_roles_then_summary(model_dir, tmp_path):
    import jaxfin

    cfg_path = tmp_path / "agents.yaml"
    cfg_path.write_text(
        (REPO / "configs/agents/finance_brain.yaml").read_text()
        .replace("model: runs/demo/hf", f"model: {model_dir}")
        .replace("output: runs/agents/finance_brain.jsonl", f"output: {tmp_path / 'out.jsonl'}")
    )  # fmt: skip
    cfg = load_agents_config(cfg_path, ["generation.max_new_tokens=12", "generation.stop=[]"])
    model, tok = jaxfin.load_model(model_dir), load_tokenizer(TOKENIZER)
    got = run_agents(cfg, model, tok, log=lambda m: None)
    assert len(got) == 2 and [list(r["answers"]) for r in got] == [["credit_card", "credit_rating", "regulation"]] * 2

    roles = [(q, r) for q in cfg.questions for r in cfg.roles]
    want, gap1, n1 = _greedy_by_hand(model_dir, [f"{r.system}\n\nQuestion: {q}\nAnswer:" for q, r in roles], 12)
    summaries = []
    for i, q in enumerate(cfg.questions):
        lines = "\n".join(f"{r.name}: {text.strip()}" for r, text in zip(cfg.roles, want[3 * i : 3 * i + 3]))
        summaries.append(f"{cfg.summary.system}\n\nQuestion: {q}\n\nThe experts answered:\n{lines}\n\nFinal answer:")
    want_summaries, gap2, n2 = _greedy_by_hand(model_dir, summaries, 12)
    # Equal argmax needs every step's top-2 gap above the two programs' logit difference (jaxfin's KV-cache decode vs
    # a full torch forward, float32): depth 4L+2 reductions of <= max(sequence, F) terms, relative to
    # max(1, max |logit|); here sequences of <= 180 tokens: bound ~1.1e-4, smallest gap measured 1.1e-3
    assert min(gap1, gap2) > rounding_tol(np.float32, max(n1, n2, 64), depth=4 * 2 + 2)
    assert [got[i // 3]["answers"][r.name] for i, (_, r) in enumerate(roles)] == want
    assert [r["summary"] for r in got] == want_summaries
    assert len(set(want + want_summaries)) > 1  # the prompts reach the model: not one text for all
    written = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert written == got


def test_agents_cli(model_dir, tmp_path, capsys):
    from jaxfin.cli import main

    cfg_path = tmp_path / "a.yaml"
    cfg_path.write_text(f"model: {model_dir}\ntokenizer: {TOKENIZER}\nroles: [{{name: a, system: You are A.}}]\n"
                        f"questions: ['What is EPS?']\noutput: {tmp_path / 'o.jsonl'}\n"
                        "generation: {max_new_tokens: 4}\n")  # fmt: skip
    assert main(["agents", str(cfg_path)]) == 0
    rec = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert rec["question"] == "What is EPS?" and set(rec) == {"question", "answers", "summary"}
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"model: {model_dir}\nroles: []\n")
    assert main(["agents", str(bad)]) == 2
    assert "roles" in capsys.readouterr().err


def test_unknown_override_key_names_the_closest_one():
    from jaxfin.config import ConfigError

    with pytest.raises(ConfigError, match="generation.max_new_tokens"):
        load_agents_config(REPO / "configs/agents/finance_brain.yaml", ["generation.max_new_token=12"])


def test_roles_with_their_own_model_and_retrieved_passages(model_dir, tmp_path):
    """A role with retrieval gets the index's best passages, with their source ids, in its prompt (the prompt
    written out here) and lists them in `passages`; a role with retrieval_k 0 and its own model gets the plain
    prompt through that model. Each answer equals `generate` of that model on the hand-written prompt."""
    from jaxfin.eval.generate import GenerationConfig, generate
    from jaxfin.retrieval import Index, build_index

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs/a.txt").write_text("The rating code of Velmora Bank is KT4.\n")
    (tmp_path / "docs/b.txt").write_text("Velmora Bank opened three branches.\n")
    (tmp_path / "docs/c.txt").write_text("Interest coverage fell to 2.3x.\n")
    build_index([str(tmp_path / "docs")], tmp_path / "idx", log=lambda m: None)
    cfg_cls = ModelConfig(vocab_size=1024, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                          num_kv_heads=2, max_position_embeddings=512, compute_dtype="float32")  # fmt: skip
    other = tmp_path / "other_model"
    jaxfin.save_model(Model(cfg_cls, init_params(cfg_cls, jax.random.key(1)), str(TOKENIZER)), other, format="hf")
    q = "What is the rating code of Velmora Bank?"
    cfg_path = tmp_path / "a.yaml"
    cfg_path.write_text(json.dumps({
        "model": str(model_dir), "tokenizer": str(TOKENIZER), "retrieval": {"index": str(tmp_path / "idx"), "k": 2},
        "roles": [{"name": "reader", "system": "You are A."},
                  {"name": "closed", "system": "You are B.", "model": str(other), "retrieval_k": 0}],
        "questions": [q], "output": "", "generation": {"max_new_tokens": 5, "stop": []},
    }))  # fmt: skip
    cfg = load_agents_config(cfg_path)
    (got,) = run_agents(cfg, log=lambda m: None)
    hits = Index.load(tmp_path / "idx").search(q, 2)
    assert hits[0]["id"] == f"{tmp_path / 'docs/a.txt'}:1#0" and got["passages"] == {"reader": hits, "closed": []}
    context = "\n".join(f"[{n}] (source: {h['id']}) {h['text']}" for n, h in enumerate(hits, 1))
    tok, gen = load_tokenizer(TOKENIZER), GenerationConfig(max_new_tokens=5, stop=[])
    want_a = generate(jaxfin.load_model(model_dir), tok, [f"You are A.\n\n{context}\n\nQuestion: {q}\nAnswer:"], gen)
    want_b = generate(jaxfin.load_model(other), tok, [f"You are B.\n\nQuestion: {q}\nAnswer:"], gen)
    assert got["answers"] == {"reader": want_a[0], "closed": want_b[0]}
    assert want_b != generate(jaxfin.load_model(model_dir), tok, [f"You are B.\n\nQuestion: {q}\nAnswer:"], gen)
