"""The shipped recipes (configs/recipes/) run end to end on ../shared/data, a few steps per stage, and each stage
does what the recipe says: vocabulary grown, only the embeddings and LM head trained in the first CPT stage, the
DPO stage on a precomputed reference, Hugging Face exports that transformers loads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from jaxfin import load_model
from jaxfin.recipe import load_recipe, run_recipe
from tests.conftest import REPO, shared_data


@pytest.fixture
def in_repo(monkeypatch):
    shared_data()  # fails clearly when the shared data is missing
    monkeypatch.chdir(REPO)  # the recipes name ../shared/data and demo_data/ relative to the repo


def _overrides(tmp_path):
    return [f"output_dir={tmp_path / 'out'}", f"data.cache_dir={tmp_path / 'cache'}", "train.steps=3",
            "train.dev_batches=1", "checkpoint.every=0"]  # fmt: skip


VOCAB_STAGES = ["base", "expand", "stage1", "stage2", "chat_tokens", "sft1", "sft2", "reward", "eval"]


def _share(sources, keep, of=lambda s: True) -> float:
    """Weight of the sources `keep` selects among those `of` selects."""
    return sum(s.weight for s in sources if of(s) and keep(s)) / sum(s.weight for s in sources if of(s))


def _general(source) -> bool:
    return not source.domain


def _chat(source) -> bool:
    return source.kind == "chat"


def test_vocab_expanded_follows_the_seed_design(in_repo):
    """Characters (not pieces) added; stage 1 on the sources' own weights (no curriculum: the natural mix, checked
    against token counts in the run below), stage 2 zh:en 3:1, both SFT stages general:finance 4:1 by examples
    (the first with pre-training text, 4:1 in each half), a reward model on pairs disjoint from its dev pairs."""
    _, stages = load_recipe("configs/recipes/vocab_expanded.yaml")
    st = {s["name"]: s for s in stages}
    assert list(st) == VOCAB_STAGES
    assert st["expand"]["vocab_expand"]["num"] == 7000 and "mine_chars" in st["expand"]["vocab_expand"]
    s1, s2, sft1, sft2, rm = (st[n]["config"] for n in ("stage1", "stage2", "sft1", "sft2", "reward"))
    assert s1.train.trainable == ["@embeddings"] and s2.train.trainable == []
    assert (s1.data.mix_by, s1.data.stages) == ("tokens", [])  # draws rows in proportion to the sources' weights
    zh = {s.name for s in s2.data.sources if "zh_corpus" in s.path}
    domain = {s.name for s in s2.data.sources if s.domain}
    for stage in s2.data.stages:
        w = stage.weights
        assert sum(w[n] for n in zh) / sum(w.values()) == pytest.approx(0.75)
    assert [sum(g.weights[n] for n in domain) / sum(g.weights.values()) for g in s2.data.stages] == [0.5, 0.75]
    for cfg in (sft1, sft2):
        assert cfg.data.mix_by == "examples"
        assert _share(cfg.data.sources, _general) == pytest.approx(0.8)
    assert _share(sft1.data.sources, _chat) == pytest.approx(0.5)
    assert _share(sft1.data.sources, _general, _chat) == pytest.approx(0.8)
    assert _share(sft1.data.sources, _general, lambda s: not _chat(s)) == pytest.approx(0.8)
    assert {s.kind for s in sft2.data.sources} == {"chat"}
    gsm = [next(s.records for s in c.data.sources if "gsm8k_train" in s.path) for c in (sft1, sft2)]
    assert gsm[0][1] == gsm[1][0]  # the two SFT stages see different GSM8K problems
    assert (rm.objective.type, rm.model.num_labels) == ("reward", 1)
    (train,), (dev,) = rm.data.sources, rm.data.dev
    assert train.kind == dev.kind == "pairs" and train.path == dev.path
    assert train.records[1] <= dev.records[0]  # disjoint splits of one file
    assert (rm.checkpoint.best_metric, rm.checkpoint.best_mode) == ("dev_rewards/accuracy", "max")
    assert st["reward"]["start"] == {"stage": "sft2", "checkpoint": "best"}


@pytest.mark.slow
def test_vocab_expanded_recipe(in_repo, tmp_path):
    import transformers

    overrides = [*_overrides(tmp_path), "train.dev_every=3", "eval_stages.max_docs=2"]
    summaries = {s["stage"]: s for s in run_recipe("configs/recipes/vocab_expanded.yaml", overrides)}
    assert list(summaries) == VOCAB_STAGES
    out = tmp_path / "out"
    report = json.loads((out / "expand" / "vocab_expand.json").read_text())
    assert report["added"] > 5000 and all(len(c) == 1 for c, _ in report["added_tokens"])  # characters
    assert report["tokens_per_char"]["after"] < 0.6 * report["tokens_per_char"]["before"]
    expanded, stage1 = load_model(out / "expand"), load_model(out / "stage1")
    assert expanded.config.vocab_size >= 1024 + report["added"]
    before, after = expanded.params, stage1.params
    for name in ("embed_tokens", "lm_head"):  # trained in stage 1 ...
        (a,), (b,) = before[name].values(), after[name].values()
        assert not np.array_equal(np.asarray(a), np.asarray(b)), name
    for path, a in _leaves(before["layers"]):  # ... and nothing else
        assert np.array_equal(np.asarray(a), np.asarray(_get(after["layers"], path))), path
    plan = json.loads((out / "stage1" / "data_plan.json").read_text())  # stage 1: rows drawn as the tokens lie
    tokens = {s["name"]: s["tokens"] for s in plan["sources"]}
    natural = {n: t / sum(tokens.values()) for n, t in tokens.items()}
    assert plan["stages"][0]["probs"] == pytest.approx(natural, abs=0.01)
    hf = transformers.AutoModelForCausalLM.from_pretrained(out / "stage2" / "hf")
    assert hf.config.vocab_size == expanded.config.vocab_size
    assert all(summaries[n]["steps"] == 3 for n in ("stage2", "sft1", "sft2", "reward"))
    recs = [json.loads(x) for x in (out / "reward" / "metrics.jsonl").read_text().splitlines()]
    assert 0 <= recs[-1]["dev_rewards/accuracy"] <= 1  # held-out pairwise accuracy
    rm = transformers.AutoModelForSequenceClassification.from_pretrained(out / "reward" / "hf")
    assert rm.config.num_labels == 1
    evals = json.loads((out / "eval" / "eval.json").read_text())
    assert set(evals["text"]) == {"base", "stage1", "stage2", "sft2"}


def _shares(sources) -> dict[str, float]:
    """Shares of the weights: CPT vs IT (by kind), and domain vs general within each."""
    w = {k: sum(s.weight for s in sources if (s.kind == "chat") == (k == "it")) for k in ("cpt", "it")}
    out = {"cpt": w["cpt"] / (w["cpt"] + w["it"])}
    for k in ("cpt", "it"):
        out[f"{k}_domain"] = sum(s.weight for s in sources if (s.kind == "chat") == (k == "it") and s.domain) / w[k]
    return out


def test_llama_fin_follows_findaps_data_design(in_repo):
    """CPT 50/50 domain/general, IT 20/80, joint 50/50 by examples in both groups; group 2 = group 1's sources +
    the domain books and exercises; warm-up 10% then 50%; DPO's dev pairs disjoint from its training pairs, its
    best model and early stop on held-out preference accuracy."""
    _, stages = load_recipe("configs/recipes/llama_fin.yaml")
    st = {s["name"]: s for s in stages}
    g1, g2, dpo = (st[n]["config"] for n in ("group1", "group2", "dpo"))
    for g in (g1, g2):
        assert g.data.mix_by == "examples"
        assert _shares(g.data.sources) == pytest.approx({"cpt": 0.5, "cpt_domain": 0.5, "it_domain": 0.2})
    first = {s.path for s in g1.data.sources}
    added = [s for s in g2.data.sources if s.path not in first]
    assert first < {s.path for s in g2.data.sources} and len(added) == 2 and all(s.domain for s in added)
    assert {s.kind for s in added} == {"text", "chat"}  # books and exercises
    assert (g1.optimizer.warmup_ratio, g2.optimizer.warmup_ratio) == (0.1, 0.5)
    assert st["group2"]["start"] == {"stage": "group1", "checkpoint": "best"}
    assert st["dpo"]["start"] == {"stage": "group2", "checkpoint": "best"}
    assert (dpo.objective.type, dpo.objective.beta, dpo.objective.nll_weight) == ("dpo", 0.1, 1.0)
    (train,), (dev,) = dpo.data.sources, dpo.data.dev
    assert train.path == dev.path and train.records == [0, 2000] and dev.records == [2000, None]
    assert (dpo.checkpoint.best_metric, dpo.checkpoint.best_mode) == ("dev_rewards/accuracy", "max")
    assert dpo.train.patience > 0 and dpo.train.dev_every > 0


@pytest.mark.slow
def test_llama_fin_recipe(in_repo, tmp_path):
    import transformers

    overrides = [*_overrides(tmp_path), "train.dev_every=3"]  # one dev evaluation: each stage keeps a best/
    summaries = {s["stage"]: s for s in run_recipe("configs/recipes/llama_fin.yaml", overrides)}
    assert list(summaries) == ["base", "chat_tokens", "group1", "group2", "dpo"]
    out = tmp_path / "out"
    init = {n: yaml.safe_load((out / n / "config.yaml").read_text())["init_from"] for n in ("group2", "dpo")}
    assert init == {"group2": str(out / "group1" / "best"), "dpo": str(out / "group2" / "best")}  # dev-best models
    assert (out / "dpo" / "reference_logps.npz").is_file()
    recs = [json.loads(x) for x in (out / "dpo" / "metrics.jsonl").read_text().splitlines()]
    assert recs[-1]["step"] == 3 and recs[-1]["pairs"] > 0 and "rewards/accuracy" in recs[-1]
    assert "dev_rewards/accuracy" in recs[-1]  # held-out preference accuracy
    best = json.loads((out / "dpo" / "best" / "best.json").read_text())
    assert best["metric"] == "dev_rewards/accuracy" and best["value"] == recs[-1]["dev_rewards/accuracy"]
    tok = transformers.AutoTokenizer.from_pretrained(out / "dpo" / "hf")
    assert len(tok.encode("<|im_start|>", add_special_tokens=False)) == 1
    transformers.AutoModelForCausalLM.from_pretrained(out / "dpo" / "hf")


def _leaves(tree, prefix=()):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _leaves(v, (*prefix, k))
        else:
            yield (*prefix, k), v


def _get(tree, path):
    for k in path:
        tree = tree[k]
    return tree


@pytest.mark.parametrize(
    "spec,message",
    [
        ("[--tokens, t.txt]", "must be a mapping of expand options"),  # the command-line form
        ("{tokens: t.txt, mine: c.jsonl}", "exactly one of 'tokens'"),
        ("{mine_chars: c.jsonl, mine: c.jsonl}", "exactly one of 'tokens'"),
        ("{tokns: t.txt}", "unknown key 'tokns'"),
    ],
)
def test_vocab_expand_stage_is_a_mapping_of_expand_options(tmp_path, spec, message):
    from jaxfin.config import ConfigError

    (tmp_path / "t.txt").write_text("EBITDA\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"recipe:\n  base: {tmp_path}\n  stages:\n    - name: expand\n      vocab_expand: {spec}\n")
    with pytest.raises(ConfigError, match=message) as e:
        load_recipe(recipe)
    assert "recipe.stages[0] (expand).vocab_expand" in str(e.value)


def test_vocab_expand_stage_reads_its_token_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.txt").write_text("EBITDA\nnet interest margin\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"recipe:\n  base: {tmp_path}\n  stages:\n    - name: expand\n      vocab_expand: {{tokens: t.txt, seed: 3}}\n"
    )
    _, stages = load_recipe(recipe)
    assert stages[0]["vocab_expand"] == {"tokens": ["EBITDA", "net interest margin"], "seed": 3}


_TRAIN = "    - name: base\n      set: {train.steps: 1}\n"


@pytest.mark.parametrize(
    "stage,message",
    [
        ("    - name: x\n      from: nowhere\n      set: {}\n", r"\(x\)\.from: 'nowhere' must name an earlier stage"),
        ("    - name: x\n      set: {}\n      moe: {base_model: base}\n", r"\(x\): a stage is one of"),
        (
            "    - name: x\n      moe: {base_model: base, gate_mode: random, experts_per_token: 1,\n"
            "            experts: [{source_model: bse}]}\n",
            r"\(x\)\.moe: model 'bse' is neither an earlier stage \(base\) nor a folder",
        ),
        (
            "    - name: x\n      moe: {base_model: base, gate_mode: hiden, experts: [{source_model: base}]}\n",
            r"\(x\)\.moe\.gate_mode: unknown gate_mode 'hiden'",
        ),
        (
            "    - name: x\n      eval: {models: [base, nope], tasks: [fpb]}\n",
            r"\(x\)\.eval\.models: model 'nope' is neither an earlier stage",
        ),
        ("    - name: x\n      eval: {models: [base], tasks: [fpb], max_doc: 3}\n", r"max_doc"),
        (
            "    - name: x\n      eval: {models: [base], text: [{name: t, path: demo_data/finance_dev.jsonl}]}\n"
            "      report: {experts: {base: dev}}\n",
            r"\(x\)\.report\.experts: 'base: dev' needs",
        ),
        ("    - name: x\n      set: {}\n      report: {}\n", r"'report' belongs to an eval stage"),
    ],
)
def test_recipe_stage_mistakes_name_the_stage_and_key(in_repo, tmp_path, stage, message):
    from jaxfin.config import ConfigError

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"recipe:\n  config: {REPO / 'configs/tiny.yaml'}\n  stages:\n{_TRAIN}{stage}")
    with pytest.raises(ConfigError, match=message):
        load_recipe(recipe)


def test_recipe_eval_stage_overrides_are_checked_against_the_eval_config(in_repo):
    from jaxfin.config import ConfigError

    recipe = "configs/recipes/fin_team_experts.yaml"
    (eval_stage,) = [s for s in load_recipe(recipe, ["eval_stages.max_docs=7"])[1] if s["kind"] == "eval"]
    assert eval_stage["eval"].max_docs == 7
    with pytest.raises(ConfigError, match=r"unknown config key 'max_doc'.*after 'eval_stages\.'"):
        load_recipe(recipe, ["eval_stages.max_doc=7"])


@pytest.mark.slow
def test_llama3_sec_recipe(in_repo, tmp_path):
    """The Llama-3-SEC miniature end to end, a few steps per stage: the CPT starts from the instruct model's
    dev-best one, the TIES merge loads in transformers, and the eval scores instruct, cpt and merged on the domain
    and general sets and the four finance tasks (TAT-QA among them); the chart is written."""
    import transformers

    overrides = [*_overrides(tmp_path), "train.dev_every=3", "eval_stages.max_docs=5", "eval_stages.task_limit=3"]
    summaries = {s["stage"]: s for s in run_recipe("configs/recipes/llama3_sec.yaml", overrides)}
    assert list(summaries) == ["pretrained", "chat_tokens", "instruct", "cpt", "merged", "eval"]
    out = tmp_path / "out"
    assert yaml.safe_load((out / "cpt" / "config.yaml").read_text())["init_from"] == str(out / "instruct" / "best")
    transformers.AutoModelForCausalLM.from_pretrained(out / "merged")
    report = json.loads((out / "eval" / "eval.json").read_text())
    assert [m["name"] for m in report["models"]] == ["instruct", "cpt", "merged"]
    assert set(report["tasks"]["merged"]) == {"fpb", "fiqa_sa", "fomc", "tatqa"}
    assert {s["name"]: s["domain"] for s in report["text_sets"]} == {
        "xbrl_dev": True, "fpb_news": True, "wikitext": False, "books_dev": False}  # fmt: skip
    assert (out / "report.png").is_file() and "tatqa" in (out / "report.md").read_text()
