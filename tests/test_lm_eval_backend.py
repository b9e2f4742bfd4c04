"""The `jaxfin` lm-evaluation-harness model (jaxfin/eval/harness.py) against lm-eval's own `hf` backend on the same
tiny random Llama (an HF folder with the demo tokenizer exported beside it): per-example log-likelihoods on the FPB
task YAML (configs/eval/lm_eval/fpb_lm.yaml, the shared data) to 1e-4 and acc / acc_norm identical, rolling
log-likelihoods over several windows, and greedy `generate_until` text with an `until` string."""

import json
import os

import numpy as np
import pytest

from tests.conftest import REPO, shared_data, tiny_hf_llama

pytest.importorskip("lm_eval")

TOKENIZER = REPO / "demo_data/tokenizer.model"
INCLUDE = REPO / "configs/eval/lm_eval"
TOL = 1e-4  # float32 on both sides: summed log-probs of a few tokens over a 2-layer model


@pytest.fixture(scope="module")
def backends(tmp_path_factory):
    """(hf LM, jaxfin LM) on one HF dir: a tiny random Llama, weights scaled x8 (peaked, varied next-token
    distributions, as tests/test_generate.py), with the demo SentencePiece tokenizer exported as an HF tokenizer."""
    import torch
    from lm_eval.models.huggingface import HFLM

    import jaxfin
    from jaxfin.eval.harness import JaxfinLM
    from jaxfin.hf.tokenizer import export_tokenizer

    os.environ["JAXFIN_SHARED_DATA"] = str(shared_data())  # the task YAMLs' loader reads it (fails if missing)
    hf = tiny_hf_llama(max_position_embeddings=512)
    with torch.no_grad():
        for p in hf.parameters():
            if p.ndim > 1:
                p.mul_(8.0)
    d = tmp_path_factory.mktemp("lm_eval") / "tiny"
    hf.save_pretrained(d)
    export_tokenizer(TOKENIZER, d, jaxfin.load_model(d).config)
    ref = HFLM(pretrained=str(d), dtype="float32", device="cpu", batch_size=8)
    ours = JaxfinLM(pretrained=str(d), batch_size=4, dtype="float32")
    return ref, ours


def _samples(lm, limit):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    out = simple_evaluate(model=lm, tasks=["fpb_lm"], task_manager=TaskManager(include_path=str(INCLUDE)),
                          limit=limit, log_samples=True, num_fewshot=0, bootstrap_iters=0)  # fmt: skip
    return out["results"]["fpb_lm"], sorted(out["samples"]["fpb_lm"], key=lambda s: s["doc_id"])


@pytest.mark.slow
def test_fpb_loglikelihoods_and_accuracy_equal_hf_backend(backends):
    ref, ours = backends
    want_metrics, want = _samples(ref, 40)
    got_metrics, got = _samples(ours, 40)
    assert len(want) == len(got) == 40
    diffs = []
    for a, b in zip(want, got):
        assert a["doc_id"] == b["doc_id"] and a["arguments"] == b["arguments"]  # the same prompts and choices
        la = np.array([r[0][0] for r in a["resps"]])
        lb = np.array([r[0][0] for r in b["resps"]])
        diffs.append(np.abs(la - lb).max())
        assert [r[0][1] for r in a["resps"]] == [r[0][1] for r in b["resps"]]  # is_greedy
        assert a["acc"] == b["acc"] and a["acc_norm"] == b["acc_norm"]
        fa = np.array([r[0] for r in a["filtered_resps"]])
        fb = np.array([r[0] for r in b["filtered_resps"]])
        np.testing.assert_allclose(fb, fa, rtol=0, atol=TOL)
    print(f"fpb_lm: max |jaxfin - hf| per-choice log-likelihood {max(diffs):.2e} over {len(got)} examples")
    assert max(diffs) < TOL, max(diffs)
    # the comparison is not vacuous: choices are told apart, and by different margins across examples
    spread = [np.ptp([r[0][0] for r in s["resps"]]) for s in want]
    assert min(spread) > 1e-3 and np.std(spread) > 1e-2
    for k in ("acc,none", "acc_norm,none"):
        assert got_metrics[k] == want_metrics[k], (k, got_metrics[k], want_metrics[k])


def _instances(kind, args):
    from lm_eval.api.instance import Instance

    return [Instance(request_type=kind, doc={}, arguments=a, idx=0) for a in args]


def test_loglikelihood_rolling_equals_hf_backend(backends, monkeypatch):
    """Documents of ~20 to ~300 tokens with a 64-token window: one to several disjoint windows each."""
    ref, ours = backends
    lines = (REPO / "demo_data/finance_train.jsonl").read_text().splitlines()
    texts = [json.loads(x)["text"] for x in lines[:4]]
    texts = [texts[0][:40], texts[1], texts[2]]
    monkeypatch.setattr(ref, "_max_length", 64)
    monkeypatch.setattr(ours, "_max_length", 64)
    n_tokens = [len(ours.tok_encode(t)) for t in texts]
    assert min(n_tokens) < 64 < max(n_tokens) and max(n_tokens) > 2 * 64, n_tokens
    want = ref.loglikelihood_rolling(_instances("loglikelihood_rolling", [(t,) for t in texts]), disable_tqdm=True)
    got = ours.loglikelihood_rolling(_instances("loglikelihood_rolling", [(t,) for t in texts]), disable_tqdm=True)
    print(f"rolling: max |jaxfin - hf| {np.abs(np.subtract(got, want)).max():.2e} over {n_tokens} tokens ({want})")
    # sums over up to ~300 tokens of a peaked model (|log-likelihood| in the thousands): 1e-4, or 1e-7 relative
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=TOL)


def test_generate_until_equals_hf_backend(backends, monkeypatch):
    """Greedy text equal to the hf backend's (one prompt per batch there: no padding), prompts of different lengths
    in one batch here; then an `until` string taken from the middle of one generation cuts both backends' text at
    the same place."""
    ref, ours = backends
    monkeypatch.setattr(ref, "batch_size_per_gpu", 1)
    prompts = ["Revenue rose", "The central bank held rates steady and signalled", "Net interest margin"]
    kw = {"until": [], "max_gen_toks": 12, "do_sample": False}
    want = ref.generate_until(_instances("generate_until", [(p, dict(kw)) for p in prompts]), disable_tqdm=True)
    got = ours.generate_until(_instances("generate_until", [(p, dict(kw)) for p in prompts]), disable_tqdm=True)
    assert got == want and all(len(t) > 5 for t in want), (got, want)
    full = want[1]
    until = full[len(full) // 2 : len(full) // 2 + 2]
    kw = {"until": [until], "max_gen_toks": 12, "do_sample": False}
    want = ref.generate_until(_instances("generate_until", [(p, dict(kw)) for p in prompts]), disable_tqdm=True)
    got = ours.generate_until(_instances("generate_until", [(p, dict(kw)) for p in prompts]), disable_tqdm=True)
    assert got == want and got[1] == full[: full.index(until)], (got, want, until)


def test_jaxfin_eval_runs_lm_eval_tasks_by_name(backends, tmp_path):
    """`jaxfin eval` with an `lm_eval` section: the report's fpb_lm accuracy (protocol loglik) equals the hf
    backend's on the same examples; an unknown key in the section is refused naming the right one."""
    from jaxfin.config import ConfigError
    from jaxfin.eval.config import load_eval_config
    from jaxfin.eval.run import evaluate

    ref, ours = backends
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(
        f"models: [{{name: tiny, path: {ours.pretrained}}}]\n"
        f"lm_eval: {{tasks: [fpb_lm], include_path: {INCLUDE}, limit: 6}}\noutput_dir: {tmp_path / 'out'}\n"
    )
    report = evaluate(load_eval_config(cfg), log=lambda s: None)
    r = report["tasks"]["tiny"]["fpb_lm"]
    want, _ = _samples(ref, 6)
    assert r["protocol"] == "loglik" and r["n"] == 6
    assert r["metrics"]["acc"] == want["acc,none"] and r["metrics"]["acc_norm"] == want["acc_norm,none"]
    assert "fpb_lm" in (tmp_path / "out/eval.md").read_text()
    cfg.write_text(f"models: [{ours.pretrained}]\nlm_eval: {{taks: [fpb_lm]}}\n")
    with pytest.raises(ConfigError, match="did you mean 'lm_eval.tasks'"):
        load_eval_config(cfg)
