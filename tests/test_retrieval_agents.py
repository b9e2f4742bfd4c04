"""Retrieval turns a wrong answer into a right one on a fact only in the documents: a tiny model trained here,
through the stack's own trainer, on a synthetic reading task (the answer is in a context passage, with random
entity -> code assignments per example, so it can only come from the context) answers held-out questions right
when `jaxfin agents` retrieves the one indexed document that holds each fact, and wrong without it; the answer
JSON lists that document's passage.

What makes copying learnable in ~400 CPU steps (measured; the text-kind version with untied embeddings stayed at
junk after 1000 steps): the loss is on the answer only (a `completion` source), the embeddings are tied (copying
a token is then an identity map through attention), and entity and source-id lengths vary, so that the model
looks the code up instead of learning its offset from the end (fixed lengths: 56% on held-out source paths)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from jaxfin.config import load_config
from jaxfin.eval.agents import RAG_TEMPLATE, AgentsConfig, format_context, load_agents_config, run_agents
from jaxfin.retrieval import build_index
from tests.conftest import REPO

TOKENIZER = REPO / "demo_data/tokenizer.model"
SYSTEM = "You are a credit-rating analyst."
FACT = "The rating code of {entity} is {code}."
QUESTION = "What is the rating code of {entity}?"
MAX_PASSAGES = 1  # passages per training example (and k at test time)
NUM_CODES = 8  # the codes a fact can carry: few, so that copying one from the context is quick to learn on a CPU
HELD_OUT = 8  # held-out questions, each about its own document


def _words() -> list[str]:
    """Whole-word pieces of the demo tokenizer (one token each), to build entities and codes from."""
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(TOKENIZER))
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    words = sorted({p[1:] for p in pieces if p.startswith("\u2581") and p[1:].isalpha() and p[1:].islower()})
    return [w for w in words if len(w) >= 4 and w not in {"rating", "code", "what", "question", "answer"}]


def _example(rng: random.Random, words: list[str]) -> dict:
    """One reading example: a prompt in exactly the agents' shape (RAG_TEMPLATE, CONTEXT_TEMPLATE) and its answer."""
    n = rng.randint(1, MAX_PASSAGES)
    entities = [" ".join(rng.sample(words[NUM_CODES:], rng.randint(1, 3))) for _ in range(n)]
    codes = rng.sample(words[:NUM_CODES], n)
    ids = [f"{rng.choice(['docs', 'data/bank', '/tmp/x/docs'])}/{'_'.join(rng.sample(words, rng.randint(1, 3)))}.txt:"
           f"{rng.randint(1, 99)}#0" for _ in range(n)]  # fmt: skip
    context = format_context(AgentsConfig(), [{"id": i, "text": FACT.format(entity=e, code=c), "score": 0.0}
                                              for i, e, c in zip(ids, entities, codes)])  # fmt: skip
    j = rng.randrange(n)
    prompt = RAG_TEMPLATE.format(system=SYSTEM, context=context, question=QUESTION.format(entity=entities[j]))
    return {"prompt": prompt, "completion": f" {codes[j]}"}


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    """(run dir of the trained reading model, words, rng) — trained by jaxfin.train.train from a YAML config."""
    from jaxfin.train import train

    tmp = tmp_path_factory.mktemp("reader")
    rng, words = random.Random(0), _words()
    rows = [json.dumps(_example(rng, words)) for _ in range(8000)]
    (tmp / "train.jsonl").write_text("\n".join(rows) + "\n")
    (tmp / "train.yaml").write_text(f"""
output_dir: {tmp / "run"}
tokenizer: {TOKENIZER}
model: {{family: llama, vocab_size: 1024, hidden_size: 64, intermediate_size: 192, num_layers: 2, num_heads: 4,
        num_kv_heads: 2, max_position_embeddings: 256, bos_token_id: 2, eos_token_id: 3, pad_token_id: 0,
        compute_dtype: float32, tie_embeddings: true}}
data: {{sources: [{{name: reading, path: {tmp / "train.jsonl"}, kind: completion}}], seq_len: 128,
       cache_dir: {tmp / "cache"}}}
optimizer: {{lr: 5.0e-3, warmup_steps: 20, schedule: cosine, weight_decay: 0.0}}
train: {{steps: 400, seed: 0, batch_size: 32, log_every: 50, dev_every: 0}}
checkpoint: {{every: 0, keep: 1, async_save: false}}
""")
    train(load_config(tmp / "train.yaml"))
    return tmp / "run", words, rng


@pytest.mark.slow
def test_retrieval_turns_a_wrong_answer_into_a_right_one(reader, tmp_path, monkeypatch):
    run_dir, words, rng = reader
    monkeypatch.chdir(tmp_path)  # passage ids are then short relative paths, like the training prompts' (a long
    # temp-dir path would be a prompt shape the tiny model never saw: measured, it then misreads some codes)
    # Held-out facts: fresh entities (never in training), each written only in its own indexed document among
    # distractors. Each code is one the model does not give without the document (asked first, closed book), so
    # that "wrong without retrieval" is not luck either way; several questions, so that "right with it" is not.
    entities = [f"harbor {w}" for w in rng.sample(words[NUM_CODES:], HELD_OUT)]
    closed = [r["answers"]["closed_book"].strip() for r in _ask(run_dir, tmp_path / "closed", entities, index=None)]
    codes = [rng.choice([c for c in words[:NUM_CODES] if c != a]) for a in closed]
    docs = Path("docs")
    docs.mkdir()
    for i, (entity, code) in enumerate(zip(entities, codes)):
        (docs / f"filing{i}.txt").write_text(FACT.format(entity=entity, code=code) + "\n")
    for i in range(5):
        other = FACT.format(entity=" ".join(rng.sample(words[NUM_CODES:], 2)), code=rng.choice(words[:NUM_CODES]))
        (docs / f"other{i}.txt").write_text(f"{other} Coverage and liquidity were reviewed.\n")
    build_index([str(docs)], "idx", log=lambda m: None)

    got = _ask(run_dir, tmp_path, entities, index=tmp_path / "idx")
    for i, (rec, entity, code, was) in enumerate(zip(got, entities, codes, closed)):
        assert rec["passages"]["closed_book"] == []
        assert rec["answers"]["closed_book"].strip() == was != code  # without the document: wrong
        assert rec["answers"]["reader"].strip() == code, (entity, rec)  # with it: right
        used = rec["passages"]["reader"]
        assert len(used) == MAX_PASSAGES and used[0]["id"] == f"{docs / f'filing{i}.txt'}:1#0"
        assert entity in used[0]["text"]
    assert [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()] == got


def _ask(run_dir, tmp_path, entities: list[str], index) -> list[dict]:
    """The agents' records for the questions about `entities`: a role that retrieves (when there is an index) and
    a closed-book role."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    roles = [{"name": "closed_book", "system": SYSTEM, "retrieval_k": 0}]
    if index is not None:
        roles.insert(0, {"name": "reader", "system": SYSTEM})
    cfg_path = tmp_path / "agents.yaml"
    cfg_path.write_text(json.dumps({
        "model": str(run_dir), "tokenizer": str(TOKENIZER), "roles": roles,
        **({"retrieval": {"index": str(index), "k": MAX_PASSAGES}} if index is not None else {}),
        "questions": [QUESTION.format(entity=e) for e in entities], "output": str(tmp_path / "out.jsonl"),
        "generation": {"max_new_tokens": 4, "stop": ["\n", "."]},
    }))  # fmt: skip
    return run_agents(load_agents_config(cfg_path), log=lambda m: None)
