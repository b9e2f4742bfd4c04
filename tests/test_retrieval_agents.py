"""Retrieval turns a wrong answer into a right one on a fact only in the documents: a tiny model trained here,
through the stack's own trainer, on a synthetic reading task (the answer is in a context passage, with random
entity -> code assignments per example, so it can only come from the context) answers a held-out question right
when `jaxfin agents` retrieves the one indexed document that holds the fact, and wrong without it; the answer JSON
lists that document's passage."""

from __future__ import annotations

import json
import random

import pytest

from jaxfin.config import load_config
from jaxfin.eval.agents import RAG_TEMPLATE, load_agents_config, run_agents
from jaxfin.retrieval import build_index
from tests.conftest import REPO

TOKENIZER = REPO / "demo_data/tokenizer.model"
SYSTEM = "You are a credit-rating analyst."
FACT = "The rating code of {entity} is {code}."
QUESTION = "What is the rating code of {entity}?"
MAX_PASSAGES = 1  # passages per training example (and k at test time)
NUM_CODES = 8  # the codes a fact can carry: few, so that copying one from the context is quick to learn on a CPU


def _words() -> list[str]:
    """Whole-word pieces of the demo tokenizer (one token each), to build entities and codes from."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(TOKENIZER))
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    words = sorted({p[1:] for p in pieces if p.startswith("\u2581") and p[1:].isalpha() and p[1:].islower()})
    return [w for w in words if len(w) >= 4 and w not in {"rating", "code", "what", "question", "answer"}]


def _example(rng: random.Random, words: list[str]) -> str:
    """One reading example in exactly the agents' prompt shape (RAG_TEMPLATE), followed by the answer."""
    n = rng.randint(1, MAX_PASSAGES)
    entities = [" ".join(rng.sample(words[NUM_CODES:], 2)) for _ in range(n)]
    codes = rng.sample(words[:NUM_CODES], n)
    lines = [f"[{i + 1}] (source: docs/{rng.choice(words)}.txt:1#0) " + FACT.format(entity=e, code=c)
             for i, (e, c) in enumerate(zip(entities, codes))]  # fmt: skip
    j = rng.randrange(n)
    prompt = RAG_TEMPLATE.format(system=SYSTEM, context="\n".join(lines), question=QUESTION.format(entity=entities[j]))
    return f"{prompt} {codes[j]}"


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    """(run dir of the trained reading model, words, rng) — trained by jaxfin.train.train from a YAML config."""
    from jaxfin.train import train

    tmp = tmp_path_factory.mktemp("reader")
    rng, words = random.Random(0), _words()
    rows = [json.dumps({"text": _example(rng, words)}) for _ in range(4000)]
    (tmp / "train.jsonl").write_text("\n".join(rows) + "\n")
    (tmp / "train.yaml").write_text(f"""
output_dir: {tmp / "run"}
tokenizer: {TOKENIZER}
model: {{family: llama, vocab_size: 1024, hidden_size: 64, intermediate_size: 192, num_layers: 2, num_heads: 4,
        num_kv_heads: 2, max_position_embeddings: 256, bos_token_id: 2, eos_token_id: 3, pad_token_id: 0,
        compute_dtype: float32}}
data: {{sources: [{{name: reading, path: {tmp / "train.jsonl"}}}], seq_len: 128, cache_dir: {tmp / "cache"}}}
optimizer: {{lr: 5.0e-3, warmup_steps: 20, schedule: cosine, weight_decay: 0.0}}
train: {{steps: 300, seed: 0, batch_size: 16, log_every: 25, dev_every: 0}}
checkpoint: {{every: 0, keep: 1, async_save: false}}
""")
    train(load_config(tmp / "train.yaml"))
    return tmp / "run", words, rng


@pytest.mark.slow
@pytest.mark.xfail(strict=False, reason="the copy task does not train in a CPU budget yet (issue 21 point 3 open): "
                   "with 8 codes and one passage, 1000 steps (hidden 64, 2 layers, batch 16 x 128, 110 s) still answer "
                   "junk ('docsw'); 600 steps at hidden 128 with free codes: 0/32 in distribution")  # fmt: skip
def test_retrieval_turns_a_wrong_answer_into_a_right_one(reader, tmp_path):
    run_dir, words, rng = reader
    # The held-out fact: a fresh entity (never in training), written only in one indexed document among
    # distractors. Its code is one the model does not give without the document (asked first, closed book), so
    # that "wrong without retrieval" is not luck either way.
    entity = "harbor " + rng.choice(words[NUM_CODES:])
    closed = _ask(run_dir, tmp_path / "closed", entity, index=None)["answers"]["closed_book"].strip()
    code = next(c for c in words[:NUM_CODES] if c != closed)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "filing.txt").write_text(FACT.format(entity=entity, code=code) + "\n")
    for i in range(5):
        other = FACT.format(entity=" ".join(rng.sample(words[NUM_CODES:], 2)), code=rng.choice(words[:NUM_CODES]))
        (docs / f"other{i}.txt").write_text(f"{other} Coverage and liquidity were reviewed.\n")
    build_index([str(docs)], tmp_path / "idx", log=lambda m: None)

    got = _ask(run_dir, tmp_path, entity, index=tmp_path / "idx")
    assert got["passages"]["closed_book"] == []
    assert got["answers"]["closed_book"].strip() == closed != code  # without the document: wrong
    assert got["answers"]["reader"].strip() == code  # with it: right
    used = got["passages"]["reader"]
    assert used[0]["id"] == f"{docs / 'filing.txt'}:1#0" and entity in used[0]["text"] and len(used) == MAX_PASSAGES
    assert json.loads((tmp_path / "out.jsonl").read_text()) == got


def _ask(run_dir, tmp_path, entity: str, index) -> dict:
    """The agents' record for the question about `entity`: a role that retrieves (when there is an index) and a
    closed-book role."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    roles = [{"name": "closed_book", "system": SYSTEM, "retrieval_k": 0}]
    if index is not None:
        roles.insert(0, {"name": "reader", "system": SYSTEM})
    cfg_path = tmp_path / "agents.yaml"
    cfg_path.write_text(json.dumps({
        "model": str(run_dir), "tokenizer": str(TOKENIZER), "roles": roles,
        **({"retrieval": {"index": str(index), "k": MAX_PASSAGES}} if index is not None else {}),
        "questions": [QUESTION.format(entity=entity)], "output": str(tmp_path / "out.jsonl"),
        "generation": {"max_new_tokens": 4, "stop": ["\n", "."]},
    }))  # fmt: skip
    (got,) = run_agents(load_agents_config(cfg_path), log=lambda m: None)
    return got
