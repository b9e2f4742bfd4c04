"""Data intensity across a recipe's stages (issue 21, point 1): the runner carries each stage's tokens by domain
level to the stages that start from its model, logs and reports the cumulative intensity (x2/(x1+x2) after general
x1 then finance x2, (x2+x3)/(x1+x2+x3) after private x3), and `jaxfin scaling intensity --recipe` gives the same
numbers as `--stage TOKENS:RATIO` on the same plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from jaxfin.cli import main
from jaxfin.config import ConfigError, load_config
from jaxfin.recipe import read_state, run_recipe

REPO = Path(__file__).resolve().parents[1]


def _sources(tmp_path: Path) -> dict[str, str]:
    """Three small corpora from the demo data: general, finance and a 'private' one (disjoint lines)."""
    lines = (REPO / "demo_data/finance_train.jsonl").read_text().splitlines()
    out = {}
    for i, name in enumerate(("general", "finance", "private")):
        p = tmp_path / f"{name}.jsonl"
        p.write_text("\n".join(lines[i * 60 : (i + 1) * 60]) + "\n")
        out[name] = str(p)
    return out


def _recipe(small_config: Path, tmp_path: Path) -> Path:
    src = _sources(tmp_path)
    steps = {"train.steps": 3, "train.dev_every": 0, "checkpoint.every": 0}
    recipe = {
        "output_dir": str(tmp_path / "out"),
        "config": str(small_config),
        "stages": [
            {"name": "x1", "set": {**steps, "data.sources": [{"path": src["general"], "domain": 0}]}},
            {"name": "x2", "set": {**steps, "data.sources": [  # a finance stage with some general replay
                {"path": src["finance"], "domain": 1, "weight": 3}, {"path": src["general"], "domain": False}]}},
            {"name": "side", "from": "x1", "set": {**steps, "data.sources": [src["finance"]]}},  # another branch
            {"name": "x3", "from": "x2", "set": {**steps, "data.sources": [{"path": src["private"], "domain": 2}]}},
        ],
    }  # fmt: skip
    path = tmp_path / "brain.yaml"
    path.write_text(yaml.safe_dump({"recipe": recipe}, sort_keys=False))
    return path


def _last_record(stage_dir: Path) -> dict:
    return [json.loads(line) for line in (stage_dir / "metrics.jsonl").read_text().splitlines()][-1]


def test_cumulative_intensity_is_carried_along_the_chain_of_stages(small_config, tmp_path, capsys):
    path = _recipe(small_config, tmp_path)
    out = tmp_path / "out"
    run_recipe(path)
    st = {n: r["summary"] for n, r in read_state(out)["stages"].items()}
    tok = {n: {int(k): v for k, v in s["tokens_by_level"].items()} for n, s in st.items()}
    assert set(tok["x1"]) == {0} and set(tok["x2"]) == {0, 1} and set(tok["x3"]) == {2}
    assert all(v > 0 for t in tok.values() for v in t.values())

    # The oracle: the seed's formulas over the stages' own token counts.
    x1, x2_dom, x2_gen, x3 = tok["x1"][0], tok["x2"][1], tok["x2"][0], tok["x3"][2]
    after_x2 = x2_dom / (x1 + x2_gen + x2_dom)
    after_x3 = (x2_dom + x3) / (x1 + x2_gen + x2_dom + x3)
    assert st["x1"]["cumulative_intensity"] == 0.0
    assert st["x2"]["cumulative_intensity"] == pytest.approx(after_x2, abs=1e-12)
    assert st["x3"]["cumulative_intensity"] == pytest.approx(after_x3, abs=1e-12)
    assert st["x3"]["cumulative_intensity/level2"] == pytest.approx(x3 / (x1 + x2_gen + x2_dom + x3), abs=1e-12)
    # the side branch descends from x1 only: x2's tokens are not counted in it
    side = tok["side"][1]
    assert st["side"]["cumulative_intensity"] == pytest.approx(side / (x1 + side), abs=1e-12)
    assert (st["x2"]["after"], st["x3"]["after"], st["side"]["after"]) == ("x1", "x2", "x1")

    # Each stage's trainer logged the same cumulative number (it was handed the earlier stages' counts).
    for name in ("x2", "x3", "side"):
        assert _last_record(out / name)["cumulative_intensity"] == pytest.approx(
            st[name]["cumulative_intensity"], abs=1e-9
        )
    assert "cumulative_intensity" not in _last_record(out / "x1")  # nothing before it, one level: the run's own
    assert yaml.safe_load((out / "x3" / "config.yaml").read_text())["data"]["prior_tokens"] == {
        "0": x1 + x2_gen, "1": x2_dom}  # fmt: skip

    # `jaxfin scaling intensity` on the same plan, by --recipe and by --stage, agrees.
    capsys.readouterr()
    assert main(["scaling", "intensity", "--recipe", str(out), "--json"]) == 0
    by_recipe = json.loads(capsys.readouterr().out)["stages"]
    assert [r["name"] for r in by_recipe] == ["x1", "x2", "x3"]
    stages = [f"{x1}:0", f"{x2_dom + x2_gen}:{x2_dom / (x2_dom + x2_gen)!r}", f"{x3}:1"]
    assert main(["scaling", "intensity", *(a for s in stages for a in ("--stage", s)), "--json"]) == 0
    by_stage = json.loads(capsys.readouterr().out)["stages"]
    for a, b, mine in zip(by_recipe, by_stage, (0.0, after_x2, after_x3)):
        assert a["cumulative_intensity"] == pytest.approx(b["cumulative_intensity"], abs=1e-12)
        assert a["cumulative_intensity"] == pytest.approx(mine, abs=1e-12)
    assert main(["scaling", "intensity", "--recipe", str(out), "--until", "side", "--json"]) == 0
    assert [r["name"] for r in json.loads(capsys.readouterr().out)["stages"]] == ["x1", "side"]

    # The status line and report show it.
    assert main(["recipe", "status", str(out)]) == 0
    assert f"intensity {after_x3:.3f}" in capsys.readouterr().out


def test_domain_levels_are_checked(small_config):
    cfg = load_config(small_config, ["data.sources=[{path: a.jsonl, domain: 2}, {path: b.jsonl, domain: false}]"])
    assert [s.domain for s in cfg.data.sources] == [2, 0]
    with pytest.raises(ConfigError, match=r"data.sources\[0\].domain"):
        load_config(small_config, ["data.sources=[{path: a.jsonl, domain: high}]"])
    with pytest.raises(ConfigError, match="prior_tokens"):
        load_config(small_config, ["data.prior_tokens={finance: 3}"])


def test_index_and_agents_stages(small_config, tmp_path):
    """An index stage over documents and an agents stage whose role uses an earlier stage's LoRA adapter and the
    index: the answers file lists the passages, and the stage scores the answers against the questions' `answer`."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "cards.txt").write_text("The annual fee of the Aurora card is 2,400 dollars.\n")
    (docs / "rules.txt").write_text("Large cash transactions are reported within 5 business days.\n")
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"question": "What is the annual fee of the Aurora card?", "answer": "2,400",
                                     "category": "cards"}) + "\n")  # fmt: skip
    recipe = {
        "output_dir": str(tmp_path / "out"), "config": str(small_config),
        "stages": [
            {"name": "base", "set": {"train.steps": 2, "train.dev_every": 0}},
            {"name": "lora", "set": {"train.steps": 2, "train.dev_every": 0, "model.lora.rank": 4,
                                     "export_peft": "adapter"}},
            {"name": "idx", "index": {"docs": [str(docs)], "chunk_chars": 200, "overlap": 20}},
            {"name": "agents", "agents": {
                "model": "base", "retrieval": {"index": "idx", "k": 1},
                "roles": [{"name": "cards", "system": "Card desk.", "adapter": "lora"}],
                "questions_file": str(questions), "generation": {"max_new_tokens": 4}}},
        ],
    }  # fmt: skip
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"recipe": recipe}, sort_keys=False))
    summaries = {s["stage"]: s for s in run_recipe(path)}
    (row,) = [json.loads(x) for x in (tmp_path / "out/agents/agents.jsonl").read_text().splitlines()]
    assert [p["id"] for p in row["passages"]["cards"]] == [f"{docs / 'cards.txt'}:1#0"]
    got = summaries["agents"]
    assert got["questions"] == 1 and got["retrieval_recall"] == 1.0  # the fact's passage was retrieved
    assert got["role_accuracy"] == float("2,400" in row["answers"]["cards"].replace(" ", ""))
    bad = dict(recipe, stages=recipe["stages"][:3] + [{"name": "agents", "agents": dict(
        recipe["stages"][3]["agents"], retrieval={"index": "base", "k": 1})}])  # fmt: skip
    path.write_text(yaml.safe_dump({"recipe": bad}, sort_keys=False))
    with pytest.raises(ConfigError, match="index 'base' is a train stage"):
        run_recipe(path)


def test_finance_brain_recipe_plan():
    """configs/recipes/finance_brain.yaml: general (0) -> finance (1) -> private (2) stages in one chain, the
    credit-rating fine-tune on LogME-selected layers, one adapter per role, the index and the agents using them."""
    from jaxfin.recipe import load_recipe

    _, stages = load_recipe(REPO / "configs/recipes/finance_brain.yaml")
    by = {s["name"]: s for s in stages}
    levels = {n: sorted({src.domain for src in by[n]["config"].data.sources}) for n in ("x1", "x2", "x3", "x4")}
    assert levels == {"x1": [0], "x2": [0, 1], "x3": [0, 1, 2], "x4": [2]}
    assert [by[n]["start"]["stage"] for n in ("x2", "x3", "x4")] == ["x1", "x2", "x3"]
    assert by["x3"]["config"].data.sources[0].format == "html"
    x4 = by["x4"]["config"]
    assert x4.train.trainable == ["@logme:2"] and x4.logme.task.endswith("credit_rating_train.yaml")
    roles = {r["name"]: r for r in by["agents"]["agents"]["roles"]}
    for name, role in roles.items():
        assert role["adapter"] == f"role_{name}" and by[f"role_{name}"]["config"].export_peft
        assert by[f"role_{name}"]["config"].model.lora.rank > 0
    assert by["agents"]["agents"]["retrieval"]["index"] == "index" and by["index"]["kind"] == "index"
    questions = [json.loads(x) for x in (REPO / "demo_data/bank_private/questions.jsonl").read_text().splitlines()]
    assert {q["category"] for q in questions} == set(roles)
