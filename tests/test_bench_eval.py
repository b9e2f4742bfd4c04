"""`jaxfin bench eval` end to end on a tiny random Llama (an HF folder with the demo tokenizer): both sides score the
same FPB examples (lm-eval `simple_evaluate`, model "jaxfin" vs "hf") and generate the same number of greedy tokens
(generate_full vs transformers' generate), the first generated tokens agree, and every reported ratio is the ratio
of the reported times."""

import json
import math
import os

import pytest

from tests.conftest import REPO, shared_data, tiny_hf_llama

pytest.importorskip("lm_eval")

LIMIT, PROMPTS, NEW, ROUNDS, BATCH = 4, 3, 6, 2, 2


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    """A tiny random Llama, weights scaled x8 (peaked next-token distributions: greedy has no near-ties), with the
    demo SentencePiece tokenizer exported as an HF tokenizer."""
    import torch

    import jaxfin
    from jaxfin.hf.tokenizer import export_tokenizer

    hf = tiny_hf_llama(max_position_embeddings=512)
    with torch.no_grad():
        for p in hf.parameters():
            if p.ndim > 1:
                p.mul_(8.0)
    d = tmp_path_factory.mktemp("bench_eval") / "tiny"
    hf.save_pretrained(d)
    export_tokenizer(REPO / "demo_data/tokenizer.model", d, jaxfin.load_model(d).config)
    return d


@pytest.mark.slow
def test_bench_eval_both_sides_do_the_same_work_and_ratios_are_the_times_ratios(hf_dir, tmp_path, capsys, monkeypatch):
    from jaxfin.cli import main

    monkeypatch.setenv("JAXFIN_SHARED_DATA", str(shared_data()))
    out = tmp_path / "bench.json"
    rc = main(["bench", "eval", str(hf_dir), "--limit", str(LIMIT), "--gen-prompts", str(PROMPTS), "--max-new-tokens",
               str(NEW), "--batch-size", str(BATCH), "--rounds", str(ROUNDS), "--json", "--out", str(out)])  # fmt: skip
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert r == json.loads(out.read_text())
    ll, g = r["loglik"], r["generate"]
    j, h = ll["jaxfin"], ll["hf"]
    # the same work: the same examples and requests (3 choices each), and the same accuracy on the same weights
    assert j["examples"] == h["examples"] == LIMIT and j["requests"] == h["requests"] == 3 * LIMIT
    assert ll["same_work"] and ll["acc_equal"] and j["acc"] == h["acc"]
    # every row generated exactly NEW tokens on both sides (no EOS stop), and greedy agrees on the same weights
    for side in (g["jaxfin"], g["transformers"]):
        assert side["tokens"] == PROMPTS * NEW and side["rows"] == PROMPTS and side["new_tokens_per_row"] == NEW
    assert g["same_work"] and g["first_tokens_agree"] and len(g["agree_prefix"]) == PROMPTS
    # the ratios are the reported times' ratios (same work per round: examples/s and tokens/s ratios = time ratios)
    rounds = r["rounds"]
    assert len(rounds) == ROUNDS
    for x in rounds:
        assert math.isclose(x["loglik_ratio"], x["hf_loglik_s"] / x["jaxfin_loglik_s"], rel_tol=1e-9)
        assert math.isclose(x["generate_ratio"], x["transformers_generate_s"] / x["jaxfin_generate_s"], rel_tol=1e-9)
    for key, res in (("loglik_ratio", ll), ("generate_ratio", g)):
        per = sorted(x[key] for x in rounds)
        assert math.isclose(res["ratio"], (per[0] + per[1]) / 2, rel_tol=1e-9)  # the median of two rounds
        assert res["ratio_min"] == per[0] and res["ratio_max"] == per[-1]
        assert res["target"] == 2.0 and res["target_met"] == (res["ratio"] >= 2.0)
    # each side's rate is its work over its median time
    assert math.isclose(j["examples_per_s"], LIMIT / j["s"]) and math.isclose(h["examples_per_s"], LIMIT / h["s"])
    assert math.isclose(g["jaxfin"]["tokens_per_s"], PROMPTS * NEW / g["jaxfin"]["s"])
    assert j["model_s"] <= j["s"] and h["model_s"] <= h["s"]
    assert r["torch"]["threads"] == r["host_cpus"] and r["versions"]["lm_eval"]
    assert len(r["load_average_1m"]) == 2 and r["device"] == "cpu"


def test_bench_eval_help_lists_the_command(capsys):
    from jaxfin.cli import main

    with pytest.raises(SystemExit) as e:
        main(["bench", "eval", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "lm-eval" in text and "--limit" in text and "--rounds" in text and "tokens/s" in text
    assert os.path.isfile(REPO / "jaxfin/bench/torch_eval.py")
