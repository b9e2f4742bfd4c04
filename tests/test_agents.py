"""`jaxfin agents`: k role answers then one summary per question, each exactly what the generation API gives for
the prompt written out here by hand (greedy decoding is deterministic), and the CLI end to end."""

from __future__ import annotations

import json

import jax
import pytest

from jaxfin.config.schema import ModelConfig
from jaxfin.data.tokenizer import load_tokenizer
from jaxfin.eval.agents import load_agents_config, run_agents
from jaxfin.eval.generate import GenerationConfig, generate
from jaxfin.model import Model, init_params
from tests.conftest import REPO

TOKENIZER = REPO / "demo_data/tokenizer.model"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    cfg = ModelConfig(vocab_size=1024, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                      num_kv_heads=2, max_position_embeddings=512, bos_token_id=2, eos_token_id=3,
                      compute_dtype="float32")  # fmt: skip
    d = tmp_path_factory.mktemp("agents_model")
    Model(cfg, init_params(cfg, jax.random.key(0)), str(TOKENIZER)).save(d, format="hf")
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

    gen = GenerationConfig(max_new_tokens=12)
    q = cfg.questions[1]
    role = cfg.roles[2]
    want = generate(model, tok, [f"{role.system}\n\nQuestion: {q}\nAnswer:"], gen, batch_size=8)[0]
    assert got[1]["answers"]["regulation"] == want
    lines = "\n".join(f"{name}: {text.strip()}" for name, text in got[1]["answers"].items())
    summary_prompt = f"{cfg.summary.system}\n\nQuestion: {q}\n\nThe experts answered:\n{lines}\n\nFinal answer:"
    assert got[1]["summary"] == generate(model, tok, [summary_prompt], gen, batch_size=8)[0]
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
