"""`jaxfin findings` reduced to two claims, one seed and a few steps per stage (issue 20, point 4): the files it
writes, each claim's numbers recomputed from the eval reports it left, its verdict from those numbers, and the
README table rewritten between its markers."""

from __future__ import annotations

import json
import statistics

import pytest

from jaxfin.cli import main
from jaxfin.recipe.findings import README_END, README_START, run_findings, update_readme
from tests.conftest import REPO, shared_data

STEPS = ["train.steps=4", "train.dev_every=2", "train.dev_batches=1", "checkpoint.every=0"]


def _bpb(report: dict, model: str, domain: bool) -> float:
    sets = [s for s in report["text_sets"] if s["domain"] == domain]
    return statistics.fmean(report["text"][model][s["name"]]["bits_per_byte"] for s in sets)


@pytest.mark.slow
def test_reduced_findings_on_two_claims(tmp_path, monkeypatch):
    shared_data()
    monkeypatch.chdir(REPO)  # the recipes name ../shared/data and configs/ relative to the repo
    out = tmp_path / "findings"
    report = run_findings(out, "af", seeds=1, overrides=[*STEPS, f"data.cache_dir={tmp_path / 'cache'}"])
    assert json.loads((out / "findings.json").read_text()) == report
    assert "| a | CPT lowers finance bits/byte |" in (out / "findings.md").read_text()
    a, f = report["claims"]
    ev = json.loads((out / "sec" / "eval_seed0_replay0.05" / "eval.json").read_text())
    change = _bpb(ev, "cpt", True) - _bpb(ev, "instruct", True)
    assert a["measured"]["domain_bpb_change"]["per_seed"] == [pytest.approx(change, abs=1e-12)]
    assert a["holds"] == (change < 0)
    expand = json.loads((out / "vocab" / "expand" / "vocab_expand.json").read_text())["tokens_per_char"]
    assert f["measured"]["tokens_per_char"] == {"before": expand["before"], "after": expand["after"]}
    lost = {}
    for arm in ("embeddings", "full"):
        e = json.loads((out / "vocab" / f"eval_seed0_{arm}" / "eval.json").read_text())
        lost[arm] = _bpb(e, "stage1", False) - _bpb(e, "base", False)
    got = f["measured"]["embeddings_minus_full"]["per_seed"][0]
    assert got == pytest.approx(lost["embeddings"] - lost["full"], abs=1e-12)
    assert f["holds"] == (expand["after"] < expand["before"] and got < 0)
    assert [c["verdict"] for c in report["claims"]] == ["yes" if c["holds"] else "no" for c in report["claims"]]

    def no_training(*a, **k):
        raise AssertionError("a finished arm ran again")

    monkeypatch.setattr("jaxfin.recipe.run.run_recipe", no_training)  # a rerun reads every arm back
    again = run_findings(out, "af", seeds=1, overrides=[*STEPS, f"data.cache_dir={tmp_path / 'cache'}"])
    assert again["claims"] == report["claims"]
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{README_START}\nTHE-OLD-TABLE\n{README_END}\n\nafter\n")
    update_readme(readme, report)
    text = readme.read_text()
    assert "THE-OLD-TABLE" not in text and text.endswith("\n\nafter\n") and "| f | vocabulary expansion" in text


def test_findings_refuses_unknown_claims(capsys):
    assert main(["findings", "--claims", "az"]) == 2
    assert "unknown ['z']" in capsys.readouterr().err
