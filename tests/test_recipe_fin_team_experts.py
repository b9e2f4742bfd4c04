"""configs/recipes/fin_team_experts.yaml as shipped, end to end on ../shared/data (one run, about 8 minutes on 2
cores; its own file so pytest-xdist runs it beside the rest): branching (three experts from one base), MLP-only
expert CPT, the moe stage naming stages, router-only training, the report's checks (the README quotes them),
and resume."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxfin import load_model
from jaxfin.recipe import run_recipe
from tests.conftest import REPO, shared_data

RECIPE = "configs/recipes/fin_team_experts.yaml"
EXPERTS = ("macro", "micro", "quant")


def _flat(tree, prefix=()) -> dict:
    out = {}
    for k, v in tree.items():
        out.update(_flat(v, (*prefix, k)) if isinstance(v, dict) else {"/".join((*prefix, k)): np.asarray(v)})
    return out


@pytest.mark.slow
def test_fin_team_experts_recipe(monkeypatch, tmp_path):
    shared_data()  # fails clearly when the shared data is missing
    monkeypatch.chdir(REPO)  # the recipe names ../shared/data and demo_data/ relative to the repo
    overrides = [f"output_dir={tmp_path / 'out'}", f"data.cache_dir={tmp_path / 'cache'}"]
    summaries = {s["stage"]: s for s in run_recipe(RECIPE, overrides)}
    assert list(summaries) == ["base", "chat_tokens", *EXPERTS, "moe", "moe_router", "moe_sft", "eval"]
    out = tmp_path / "out"

    base = _flat(load_model(out / "chat_tokens").params)  # the base with the ChatML tokens
    experts = {e: _flat(load_model(out / e / "hf").params) for e in EXPERTS}
    for e, p in experts.items():  # each expert: the base with new MLPs (trainable layers/mlp)
        assert p.keys() == base.keys()
        for k in base:
            assert np.array_equal(p[k], base[k]) != k.startswith("layers/mlp/"), (e, k)
    moe = _flat(load_model(out / "moe").params)
    for i, e in enumerate(EXPERTS):  # expert i of every layer = that stage's MLP
        for proj in ("gate_proj", "up_proj", "down_proj"):
            np.testing.assert_array_equal(moe[f"layers/mlp/experts/{proj}/kernel"][:, i],
                                          experts[e][f"layers/mlp/{proj}/kernel"])  # fmt: skip
    assert moe["layers/mlp/router/kernel"].shape[-1] == 3
    routed = _flat(load_model(out / "moe_router" / "hf").params)
    for k in moe:  # the router stage trained the routers and nothing else
        assert np.array_equal(routed[k], moe[k]) != (k == "layers/mlp/router/kernel"), k
    sft = _flat(load_model(out / "moe_sft" / "hf").params)
    assert not np.array_equal(sft["layers/self_attn/q_proj/kernel"], routed["layers/self_attn/q_proj/kernel"])

    report = json.loads((out / "eval" / "eval.json").read_text())
    assert [m["name"] for m in report["models"]] == ["base", *EXPERTS, "moe", "moe_router", "moe_sft"]
    assert [report["models"][i]["path"] for i in (0, 1)] == [str(out / "chat_tokens"), str(out / "macro" / "hf")]
    checks = summaries["eval"]["checks"]
    assert len(checks) == 3 + 3 * 3  # each expert on its set; each of the three MoE models on each expert's set
    for c in checks:  # the checks are what eval.json says
        assert c["loss"] == report["text"][c["model"]][c["set"]]["loss"]
        assert c["ok"] == (c["loss"] <= report["text"][c["against"]][c["set"]]["loss"])
    # the claims: each expert has the lowest loss on its own domain among the dense models, and the final MoE
    # (after instruction tuning) is at least as good as each expert on that expert's domain
    failed = [c for c in checks if not c["ok"] and c["model"] in (*EXPERTS, "moe_sft")]
    assert not failed, failed
    md = (out / "report.md").read_text()
    for name in ("moe_router", "macro_dev", "quant_dev", "fomc acc", "expert best on its own set"):
        assert name in md, name

    built = {f: f.stat().st_mtime_ns for f in (out / "moe").iterdir()}
    again = run_recipe(RECIPE, overrides)  # resumes: nothing is redone
    assert [s.get("steps") for s in again] == [300, None, 150, 150, 150, None, 60, 100, None]
    assert {f: f.stat().st_mtime_ns for f in (out / "moe").iterdir()} == built
    assert json.loads((out / "eval" / "eval.json").read_text()) == report
