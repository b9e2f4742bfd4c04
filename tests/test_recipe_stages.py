"""Recipe stages (issue 20, point 1): merge stages whose models are earlier stages or the recipe's base, stages
starting from a stage's dev-best model by default, input hashes that rerun a changed stage and the stages that
read it and nothing else, and `jaxfin recipe status`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file

from jaxfin.cli import main
from jaxfin.config import ConfigError
from jaxfin.recipe import load_recipe, read_state, run_recipe
from jaxfin.recipe import run as recipe_run
from jaxfin.recipe.report import status_rows


def _write(tmp_path: Path, recipe: dict, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"recipe": recipe}, sort_keys=False))
    return path


def _linear(a, b, **extra) -> dict:
    return {"merge_method": "linear", "dtype": "float32",
            "models": [{"model": a, "parameters": {"weight": 0.5}}, {"model": b, "parameters": {"weight": 0.5}}],
            **extra}  # fmt: skip


def _branching(small_config, tmp_path, lr_b=1e-3) -> dict:
    """a -> b, a -> c, merge(b, c)."""
    return {
        "output_dir": str(tmp_path / "out"),
        "config": str(small_config),
        "stages": [
            {"name": "a", "set": {"train.steps": 2}},
            {"name": "b", "from": "a", "set": {"train.steps": 2, "optimizer.lr": lr_b}},
            {"name": "c", "from": "a", "set": {"train.steps": 3}},
            {"name": "m", "merge": _linear({"stage": "b"}, {"stage": "c"})},
        ],
    }


@pytest.fixture
def fake_stages(monkeypatch):
    """Stages that only record that they ran (and leave an output dir): the rerun logic without training."""
    calls: list[str] = []

    def run_stage(st, models, stage_out):
        calls.append(st["name"])
        if st.get("fail"):
            raise RuntimeError("killed")
        stage_out.mkdir(parents=True, exist_ok=True)
        (stage_out / "made_by").write_text(st["hash"])
        return {"steps": 1, "stop_reason": "steps"} if st["kind"] == "train" else {}

    monkeypatch.setattr(recipe_run, "_run_stage", run_stage)
    return calls


def test_rerun_skips_done_stages_and_reruns_a_changed_one_with_its_readers(small_config, tmp_path, fake_stages):
    path = _write(tmp_path, _branching(small_config, tmp_path))
    out = tmp_path / "out"
    run_recipe(path)
    assert fake_stages == ["a", "b", "c", "m"]
    assert {n: s["state"] for n, s in read_state(out)["stages"].items()} == dict.fromkeys("abcm", "done")
    fake_stages.clear()
    again = run_recipe(path)
    assert fake_stages == [] and [s["stage"] for s in again] == ["a", "b", "c", "m"]  # nothing redone
    old_b = (out / "b" / "made_by").read_text()
    path = _write(tmp_path, _branching(small_config, tmp_path, lr_b=2e-3))  # b changes: b and the merge rerun
    rows = {r["stage"]: r["state"] for r in status_rows(out, read_state(out), load_recipe(path)[1])}
    assert rows == {"a": "done", "b": "changed", "c": "done", "m": "changed"}
    run_recipe(path)
    assert fake_stages == ["b", "m"]
    assert (out / "b.stale" / "made_by").read_text() == old_b != (out / "b" / "made_by").read_text()
    fake_stages.clear()
    run_recipe(path, ["train.steps=4"])  # an override reaches every training stage: all rerun
    assert fake_stages == ["a", "b", "c", "m"]


def test_a_killed_stage_is_resumed_and_status_says_so(small_config, tmp_path, fake_stages, monkeypatch, capsys):
    path = _write(tmp_path, _branching(small_config, tmp_path))
    out = tmp_path / "out"
    real_load = recipe_run.load_recipe

    def failing_c(*a, **k):
        o, stages = real_load(*a, **k)
        return o, [dict(s, fail=s["name"] == "c") for s in stages]

    monkeypatch.setattr(recipe_run, "load_recipe", failing_c)
    with pytest.raises(RuntimeError, match="killed"):
        run_recipe(path)
    capsys.readouterr()
    assert main(["recipe", "status", str(out), "--json"]) == 0
    rows = {r["stage"]: r["state"] for r in json.loads(capsys.readouterr().out)}
    assert rows == {"a": "done", "b": "done", "c": "running", "m": "pending"}
    monkeypatch.setattr(recipe_run, "load_recipe", real_load)
    fake_stages.clear()
    run_recipe(path)
    assert fake_stages == ["c", "m"]
    capsys.readouterr()
    assert main(["recipe", "status", str(path)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["stage", "kind", "state", "seconds", "headline"]
    assert [line.split()[:3] for line in table[1:]] == [["a", "train", "done"], ["b", "train", "done"],
                                                        ["c", "train", "done"], ["m", "merge", "done"]]  # fmt: skip
    assert "1 steps (steps)" in table[1]


@pytest.mark.parametrize(
    "stage, message",
    [
        ({"name": "m", "merge": _linear({"stage": "nope"}, {"stage": "a"})}, r"stage 'nope' is not an earlier stage"),
        ({"name": "m", "merge": _linear({"base": True}, {"stage": "a"})}, r"needs the recipe's `base`"),
        ({"name": "m", "merge": _linear({"stage": "a", "checkpoint": "first"}, "a")}, r"checkpoint 'first'"),
        (
            {"name": "m", "merge": {"merge_method": "ties", "models": [{"model": "a"}], "sliced": 1}},
            r"\(m\)\.merge: unknown key\(s\) \['sliced'\]",
        ),
        ({"name": "m", "merge": "../merges/none.yaml"}, r"no merge YAML at .*none\.yaml"),
        ({"name": "b", "from_checkpoint": "dev", "set": {}}, r"\(b\)\.from_checkpoint: 'dev' is not one of best"),
    ],
)
def test_stage_mistakes_are_named_before_anything_runs(small_config, tmp_path, stage, message):
    recipe = {"config": str(small_config), "stages": [{"name": "a", "set": {"train.steps": 1}}, stage]}
    with pytest.raises(ConfigError, match=message):
        load_recipe(_write(tmp_path, recipe))


def _tensors(folder: Path) -> dict[str, np.ndarray]:
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def test_merge_and_eval_stages_read_best_and_latest_models(small_config, tmp_path, monkeypatch):
    """Real training from the recipe's base: `cpt` keeps a dev-best model (best/), `next` starts from it by
    default, `last` from cpt's final export (from_checkpoint: latest); the merge (a YAML file beside the recipe,
    naming {stage: next} and {base: true}) equals 0.5 * each model's tensors; the eval stage scores cpt and the
    merge; status shows every stage done with its headline."""
    from jaxfin.config import load_config
    from jaxfin.train import train

    monkeypatch.chdir(tmp_path)
    base = tmp_path / "base_hf"
    train(load_config(small_config, [f"output_dir={tmp_path / 'base_run'}", "train.steps=2", f"export_hf={base}"]))
    dev = yaml.safe_load(small_config.read_text())["data"]["dev"][0]
    (tmp_path / "merges").mkdir()
    (tmp_path / "merges" / "half.yaml").write_text(yaml.safe_dump(_linear({"stage": "next"}, {"base": True})))
    (tmp_path / "recipes").mkdir()
    run = {"train.steps": 4, "train.dev_every": 2, "export_hf": "hf"}
    out = tmp_path / "out"
    path = _write(tmp_path / "recipes", {
        "output_dir": str(out), "config": str(small_config), "base": str(base),
        "stages": [
            {"name": "cpt", "set": run},
            {"name": "next", "set": run},
            {"name": "last", "from": "cpt", "from_checkpoint": "latest", "set": run},
            {"name": "half", "merge": "../merges/half.yaml"},
            {"name": "eval", "eval": {"models": ["cpt", "half"], "text": [{"name": "dev", "path": dev}],
                                      "max_docs": 5, "seq_len": 32}},
        ],
    })  # fmt: skip
    summaries = {s["stage"]: s for s in run_recipe(path)}
    init = {n: yaml.safe_load((out / n / "config.yaml").read_text())["init_from"] for n in ("cpt", "next", "last")}
    assert init == {"cpt": str(base), "next": str(out / "cpt" / "best"), "last": str(out / "cpt" / "hf")}
    assert json.loads((out / "cpt" / "best" / "best.json").read_text())["metric"] == "dev_loss"
    a, b, merged = _tensors(out / "next" / "best"), _tensors(base), _tensors(out / "half")
    assert set(merged) == set(a) == set(b)
    for name in merged:
        np.testing.assert_allclose(merged[name], 0.5 * a[name] + 0.5 * b[name], rtol=1e-6, atol=1e-7, err_msg=name)
    report = json.loads((out / "eval" / "eval.json").read_text())
    assert [m["path"] for m in report["models"]] == [str(out / "cpt" / "best"), str(out / "half")]
    bpb = summaries["eval"]["bits_per_byte"]
    assert bpb == {m: {"dev": report["text"][m]["dev"]["bits_per_byte"]} for m in ("cpt", "half")}
    assert "![losses and bits per byte](report.png)" in (out / "report.md").read_text()
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the per-stage chart
    rows = status_rows(out, read_state(out))
    assert [r["state"] for r in rows] == ["done"] * 5
    assert (
        rows[0]["headline"].startswith("4 steps (steps), dev_loss_first")
        and "half bits/byte dev" in rows[4]["headline"]
    )


def test_recipe_variables_fill_the_stages_and_the_merge_file(tmp_path):
    """llama3_sec_70b.yaml: `${var}`s in the stages, recipe.base and the merge YAML file; `vars.X=V` on the
    command line changes them (and the hashes of the stages they reach, nothing else); unknown names refused."""
    from tests.conftest import REPO

    instruct, pretrained = tmp_path / "instruct", tmp_path / "pretrained"
    instruct.mkdir(), pretrained.mkdir()
    recipe = REPO / "configs/recipes/llama3_sec_70b.yaml"
    where = [f"vars.instruct={instruct}", f"vars.pretrained={pretrained}"]
    _, stages = load_recipe(recipe, where)
    cpt, merged = stages
    assert cpt["start"] == {"path": str(instruct)}
    assert [(s.name, s.weight, s.domain) for s in cpt["config"].data.sources] == [
        ("sec", 0.95, True), ("replay", 0.05, False)]  # fmt: skip
    c = cpt["config"]
    tokens = c.train.steps * c.train.batch_size * c.data.seq_len
    assert 19.9e9 < tokens < 20.1e9  # the 20B tokens the comment promises
    assert merged["refs"] == [
        {"path": str(pretrained)},
        {"stage": "cpt", "checkpoint": "best"},
        {"path": str(instruct)},
    ]
    _, again = load_recipe(recipe, [*where, "vars.replay=0"])
    assert again[0]["config"].data.sources[1].weight == 0
    assert [s["hash"] != t["hash"] for s, t in zip(stages, again)] == [True, True]
    with pytest.raises(ConfigError, match=r"no variable 'replay_share' \(recipe.vars: instruct, pretrained"):
        load_recipe(recipe, [*where, "vars.replay_share=0"])
    with pytest.raises(ConfigError, match=r"recipe.base '/models/Meta-Llama-3-70B-Instruct' is not a model folder"):
        load_recipe(recipe)
    bad = _write(tmp_path, {"vars": {"a": 1}, "stages": [{"name": "x", "set": {"train.steps": "${b}"}}]})
    with pytest.raises(ConfigError, match=r"'\$\{b\}' is not a variable of recipe.vars \(a\)"):
        load_recipe(bad)


def test_llama3_sec_miniature_merges_its_own_stages(monkeypatch):
    from tests.conftest import REPO, shared_data

    shared_data()
    monkeypatch.chdir(REPO)  # the recipe names ../shared/data and configs/ relative to the repo
    _, stages = load_recipe(REPO / "configs/recipes/llama3_sec.yaml", ["vars.replay=0"])
    st = {s["name"]: s for s in stages}
    assert [s["stage"] for s in st["merged"]["refs"]] == ["chat_tokens", "cpt", "instruct"]  # the vocabularies agree
    assert st["cpt"]["start"] == {"stage": "instruct", "checkpoint": "best"}
    assert {s.name: s.weight for s in st["cpt"]["config"].data.sources}["replay"] == 0
    assert st["merged"]["merge"]["merge_method"] == "ties"


def test_a_finished_build_is_kept_and_a_killed_one_redone(tmp_path):
    """A build stage killed after its rename (before the state file says so) is not built again; one killed
    before it leaves only NAME.partial, which the next build replaces."""
    stage_out = tmp_path / "merged"
    calls = []

    def build(d):
        calls.append(d)
        d.mkdir()
        (d / "model.safetensors").write_text("x")
        return {"tensors": 1}

    (tmp_path / "merged.partial").mkdir()
    (tmp_path / "merged.partial" / "half").write_text("killed")
    assert recipe_run._build_once(stage_out, build) == {"tensors": 1}
    assert (stage_out / "model.safetensors").is_file() and not (stage_out / "half").exists()
    assert recipe_run._build_once(stage_out, build) == {} and len(calls) == 1
