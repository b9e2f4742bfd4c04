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
