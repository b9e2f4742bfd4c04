"""Multiple-choice log-likelihood finance tasks (FPB, FiQA-SA, FOMC): parity of every choice's log-likelihood with
transformers, metric math against formulas written out here, few-shot sampling, task-file errors, dispatch."""

import csv
import json
from fractions import Fraction

import numpy as np
import pytest
import yaml
from conftest import REPO, shared_data, tiny_hf_llama
from tolerances import rounding_tol

from jaxfin.eval.metrics import f1_scores, multiple_choice_metrics, per_class_f1
from jaxfin.eval.tasks import TaskError, build_requests, load_task, run_task, validate_task

SP_MODEL = REPO / "demo_data/tokenizer.model"


@pytest.fixture(scope="module")
def hf_pair(tmp_path_factory):
    """A tiny random HF Llama (vocab 1024, bos 2, eos 3), the same weights loaded by jaxfin, and the demo tokenizer."""

    import jaxfin
    from jaxfin.data.tokenizer import load_tokenizer

    hf = tiny_hf_llama(max_position_embeddings=1024)
    path = tmp_path_factory.mktemp("hf") / "tiny"
    hf.save_pretrained(path)
    return hf, jaxfin.load_model(path), load_tokenizer(SP_MODEL)


def _rows(rel):
    path = shared_data() / rel
    if path.suffix == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _oracle_prompt(task, row):
    """The prompt written out from the raw row, independently of the task's field mapping."""
    tmpl = yaml.safe_load((REPO / f"configs/eval/tasks/{task}.yaml").read_text())["prompt"]
    if task == "fiqa_sa":  # FinGPT's own prompt is in the file: ours must be it, without the trailing space
        return row["context"].rstrip()
    return tmpl.format(text=row["sentence"])


GOLD = {
    "fpb": lambda r: ["negative", "neutral", "positive"].index(r["label_text"]),
    "fiqa_sa": lambda r: ["negative", "neutral", "positive"].index(r["target"]),
    "fomc": lambda r: int(r["label"]),  # 0 dovish, 1 hawkish, 2 neutral = the order of fomc.yaml's choices
}
FILES = {
    "fpb": ("financial_phrasebank/gtfintechlab_allagree_test_seed5768.csv",
            "financial_phrasebank/gtfintechlab_allagree_train_seed5768.csv"),
    "fiqa_sa": ("fiqa_sa/fiqa_test.jsonl", "fiqa_sa/fiqa_test.jsonl"),
    "fomc": ("fomc_hawkish_dovish/lab_manual_combine_test_seed5768.csv",
             "fomc_hawkish_dovish/lab_manual_combine_train_seed5768.csv"),
}  # fmt: skip


def _metrics_oracle(lls, choices, gold):
    """acc / acc_norm / F1 from a confusion matrix, written out."""
    pred = [int(np.argmax(ll)) for ll in lls]
    pred_norm = [int(np.argmax([v / len(c) for v, c in zip(ll, ch)])) for ll, ch in zip(lls, choices)]
    g = [ch[i] for ch, i in zip(choices, gold)]
    p = [ch[i] for ch, i in zip(choices, pred)]
    labels = sorted(set(g) | set(p))
    cm = np.array([[sum(1 for a, b in zip(g, p) if a == x and b == y) for y in labels] for x in labels], float)
    tp, pred_tot, gold_tot = np.diag(cm), cm.sum(0), cm.sum(1)
    prec = np.divide(tp, pred_tot, out=np.zeros_like(tp), where=pred_tot > 0)
    rec = np.divide(tp, gold_tot, out=np.zeros_like(tp), where=gold_tot > 0)
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros_like(tp), where=prec + rec > 0)
    return {
        "acc": np.mean([a == b for a, b in zip(pred, gold)]),
        "acc_norm": np.mean([a == b for a, b in zip(pred_norm, gold)]),
        "f1_macro": f1.mean(),
        "f1_weighted": (f1 * gold_tot).sum() / gold_tot.sum(),
    }


@pytest.mark.parametrize("few_shot", [0, 2])
@pytest.mark.parametrize("task", ["fpb", "fiqa_sa", "fomc"])
def test_loglikelihoods_match_transformers(hf_pair, task, few_shot):
    """Every choice's summed log-likelihood equals the one transformers gives for [BOS] + context + choice, tokenised
    whole-then-split as lm-evaluation-harness does (within float32 rounding); gold, prediction, metrics follow."""
    import sentencepiece as spm
    import torch

    hf, model, tok = hf_pair
    sp = spm.SentencePieceProcessor(model_file=str(SP_MODEL))
    test_rows, pool_rows = (_rows(f) for f in FILES[task])
    res = run_task(model, tok, {**load_task(task), "few_shot": few_shot}, batch_size=4, limit=10)
    assert res["task"] == task and res["n"] == 10 and len(res["examples"]) == 10

    tol_max = 0.0
    for i, ex in enumerate(res["examples"]):
        row = test_rows[i]
        assert len(ex["few_shot_ids"]) == few_shot
        if FILES[task][0] == FILES[task][1]:
            assert i not in ex["few_shot_ids"]
        shots = "".join(
            _oracle_prompt(task, pool_rows[j]) + " " + ex["choices"][GOLD[task](pool_rows[j])] + "\n\n"
            for j in ex["few_shot_ids"]
        )
        context = shots + _oracle_prompt(task, row)
        assert ex["context"] == context
        assert ex["gold"] == GOLD[task](row)
        seqs, starts = [], []
        for choice in ex["choices"]:
            whole = sp.encode(context + " " + choice)
            starts.append(1 + len(sp.encode(context)))
            seqs.append([2] + whole)
        width = max(map(len, seqs))  # right padding: a causal model's earlier positions do not see it
        with torch.no_grad():
            logits = hf(torch.tensor([q + [0] * (width - len(q)) for q in seqs])).logits.double()
        logp = torch.log_softmax(logits, -1)
        # float32, two programs (jaxfin, torch): per target, depth ~4L+2 reductions of up to max(width, V) terms
        # (attention over the sequence, softmax over V), relative to max(max|logit|, 1) (a logsumexp's error is
        # absolute); summed over the continuation's targets: ~1e-3 (attention across packed requests moves one by 0.01+)
        per_target = rounding_tol(
            np.float32, max(width, hf.config.vocab_size), depth=4 * hf.config.num_hidden_layers + 2
        )
        per_target *= max(1.0, float(logits.abs().max()))
        for r, (ids, a, ll) in enumerate(zip(seqs, starts, ex["loglikelihoods"])):
            want = sum(logp[r, t - 1, ids[t]].item() for t in range(a, len(ids)))
            tol = float(per_target * (len(ids) - a))
            tol_max = max(tol_max, tol)
            assert abs(ll - want) < tol, (task, few_shot, i, ex["choices"][r], ll, want, tol)
        assert ex["prediction"] == int(np.argmax(ex["loglikelihoods"]))

    if task == "fiqa_sa" and few_shot == 0:  # one row per forward instead of four: the same numbers
        again = run_task(model, tok, task, batch_size=1, limit=3)
        for a, b in zip(again["examples"], res["examples"]):
            assert a["loglikelihoods"] == pytest.approx(b["loglikelihoods"], abs=tol_max)  # as above, both float32

    want = _metrics_oracle(
        [e["loglikelihoods"] for e in res["examples"]], [e["choices"] for e in res["examples"]],
        [e["gold"] for e in res["examples"]],
    )  # fmt: skip
    for k, v in want.items():  # float64 arithmetic on the same log-likelihoods: float64 rounding only
        assert res["metrics"][k] == pytest.approx(v, abs=1e-12), k


def test_metric_math_by_hand():
    """acc vs acc_norm differ when a long choice wins per character; a class never predicted gets F1 0 and still
    counts in the macro mean; weighted F1 weighs by gold support; no binary F1 anywhere."""
    ab = ["a", "bbbbbbbb"]  # lengths 1 and 8
    m = multiple_choice_metrics([[-2.0, -8.0]], [ab], [1])
    assert m["acc"] == 0.0 and m["acc_norm"] == 1.0  # -2 > -8, but -8/8 = -1 > -2/1

    # gold A A A B B C, pred A A B B B A: A p=2/3 r=2/3 f1=2/3; B p=2/3 r=1 f1=4/5; C never predicted: 0
    gold = ["A", "A", "A", "B", "B", "C"]
    pred = ["A", "A", "B", "B", "B", "A"]
    per = per_class_f1(gold, pred)
    assert per["C"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert per["A"]["f1"] == pytest.approx(2 / 3) and per["B"]["f1"] == pytest.approx(4 / 5)
    macro, weighted = f1_scores(gold, pred)
    assert macro == pytest.approx(float((Fraction(2, 3) + Fraction(4, 5)) / 3))
    assert weighted == pytest.approx(float((3 * Fraction(2, 3) + 2 * Fraction(4, 5)) / 6))
    binary_f1_of_label_1 = per["B"]["f1"]  # what f1_score(average="binary") would report on 0/1/2 codes
    assert macro != pytest.approx(binary_f1_of_label_1)

    # the same through multiple_choice_metrics: choices A, B, C with log-likelihoods that pick `pred`
    ch = ["A", "B", "C"]
    lls = [[0.0 if c == p else -1.0 for c in ch] for p in pred]
    m = multiple_choice_metrics(lls, [ch] * 6, [ch.index(g) for g in gold])
    assert m["acc"] == pytest.approx(4 / 6)
    assert (m["f1_macro"], m["f1_weighted"]) == pytest.approx((macro, weighted))
    assert set(m) == {"acc", "acc_norm", "f1_macro", "f1_weighted", "n"}


def test_metric_math_random_against_confusion_matrix():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n, k = int(rng.integers(1, 30)), int(rng.integers(2, 5))
        choices = [["neg", "neutral", "positive!", "x"][:k]] * n
        lls = rng.normal(size=(n, k)).tolist()
        gold = rng.integers(0, k, n).tolist()
        got, want = multiple_choice_metrics(lls, choices, gold), _metrics_oracle(lls, choices, gold)
        for key, v in want.items():
            assert got[key] == pytest.approx(v, abs=1e-12), key


def test_few_shot_sampling_deterministic_and_excludes_the_example(tmp_path):
    class Tok:  # build_requests only needs encode and bos_id here
        bos_id = 2

        @staticmethod
        def encode(s):
            return [ord(c) % 1000 for c in s]

    t = validate_task({**load_task("fiqa_sa"), "few_shot": 5})
    a = build_requests(t, Tok())
    assert len(a) == 235
    assert all(len(set(it["few_shot_ids"])) == 5 and it["index"] not in it["few_shot_ids"] for it in a)
    assert [it["few_shot_ids"] for it in a] == [it["few_shot_ids"] for it in build_requests(t, Tok())]
    assert [it["few_shot_ids"] for it in a[:7]] == [it["few_shot_ids"] for it in build_requests(t, Tok(), limit=7)]
    b = build_requests({**t, "seed": 7}, Tok())
    assert [it["few_shot_ids"] for it in a] != [it["few_shot_ids"] for it in b]

    # a duplicate of the evaluated text elsewhere in the pool is not used as a shot either
    rows = [{"t": "same", "y": "up"}, {"t": "same", "y": "up"}, {"t": "other", "y": "down"}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dup = validate_task(
        {"name": "dup", "data": {"path": str(tmp_path / "d.jsonl")}, "prompt": "{t}:", "choices": ["up", "down"],
         "answer": "y", "few_shot": 1, "seed": 3}
    )  # fmt: skip
    for s in range(20):
        got = build_requests({**dup, "seed": s}, Tok())
        assert got[0]["few_shot_ids"] == [2] and got[1]["few_shot_ids"] == [2]
    with pytest.raises(TaskError, match="few_shot"):
        build_requests({**dup, "few_shot": 2}, Tok())


def test_label_map_and_index_answers():
    """FPB's int labels through a label map (gtfintechlab: 0 positive, 1 negative, 2 neutral) give the same golds as
    its label_text column; FOMC's int labels are indices into its choices."""

    class Tok:
        bos_id = None
        encode = staticmethod(lambda s: [1] * len(s))

    fpb = validate_task(load_task("fpb"))
    by_text = [it["gold"] for it in build_requests(fpb, Tok(), limit=60)]
    mapped = {**fpb, "answer": "label", "label_map": {0: "positive", 1: "negative", 2: "neutral"}}
    assert [it["gold"] for it in build_requests(mapped, Tok(), limit=60)] == by_text
    assert set(by_text) == {0, 1, 2}
    rows = _rows(FILES["fomc"][0])[:60]
    fomc = build_requests(validate_task(load_task("fomc")), Tok(), limit=60)
    assert [it["choices"][it["gold"]] for it in fomc] == [r["label_text"] for r in rows]


@pytest.mark.parametrize(
    "edit, key",
    [
        ({"answer": None}, "answer"),
        ({"promt": "x"}, "promt"),
        ({"few_shot": -1}, "few_shot"),
        ({"choices": ["only"]}, "choices"),
        ({"type": "ranking"}, "type"),
        (
            {"data": {"path": "x.csv", "fields": {"text": {"field": "a", "regex": "no group"}}}},
            "data.fields.text.regex",
        ),
        ({"data": {"path": "x.txt"}}, "data.format"),
        ({"prompt": "{0}"}, "prompt"),
    ],
)
def test_malformed_task_yaml_names_the_key(tmp_path, edit, key):
    d = yaml.safe_load((REPO / "configs/eval/tasks/fpb.yaml").read_text())
    d.update(edit)
    d = {k: v for k, v in d.items() if v is not None or k != "answer"}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(d))
    with pytest.raises(TaskError, match=f"{path}: key '{key}'"):
        run_task(None, None, str(path))


def test_bad_field_and_label_name_the_place(tmp_path):
    class Tok:
        bos_id = None
        encode = staticmethod(lambda s: [1] * len(s))

    (tmp_path / "d.csv").write_text("sentence,label\nhello,up\nbye,sideways\n")
    t = {"name": "t", "data": {"path": str(tmp_path / "d.csv")}, "prompt": "{txt}", "choices": ["up", "down"],
         "answer": "label"}  # fmt: skip
    with pytest.raises(TaskError, match=r"d.csv:2: key 'prompt': field 'txt'"):
        build_requests(validate_task(t), Tok())
    with pytest.raises(TaskError, match=r"d.csv:3: key 'answer': 'sideways'"):
        build_requests(validate_task({**t, "prompt": "{sentence}"}), Tok())

    class Tok2:
        bos_id, eos_id = None, 3
        encode = staticmethod(lambda s: [ord(c) for c in s])

    empty = validate_task({**t, "prompt": "", "target_delimiter": "", "add_bos": False, "answer": "sentence",
                           "choices": ["hello", "bye"]})  # fmt: skip
    assert build_requests(empty, Tok2())[0]["requests"][0] == ([3], [ord(c) for c in "hello"])
    with pytest.raises(TaskError, match="no task 'nosuchtask'"):
        load_task("nosuchtask")


def test_generative_tasks_are_dispatched(monkeypatch):
    seen = {}

    def fake(model, tokenizer, task, *, batch_size, limit):
        seen.update(task=task, batch_size=batch_size, limit=limit)
        return {"task": task["name"], "metrics": {}, "n": 0, "examples": []}

    monkeypatch.setattr("jaxfin.eval.tasks.run_generative_task", fake)
    out = run_task("M", "T", {"name": "ner", "type": "generative", "data": "x"}, batch_size=3, limit=5)
    assert out["task"] == "ner" and seen["batch_size"] == 3 and seen["limit"] == 5
    assert seen["task"]["type"] == "generative" and seen["task"]["data"] == "x"


def test_f1_and_accuracy_match_sklearn():
    """The metric math against scikit-learn itself (a test dependency only), on random 3-class labels including
    runs where a class is never predicted or never gold."""
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    rng = np.random.default_rng(0)
    names = ["negative", "neutral", "positive"]
    for trial in range(40):
        n = int(rng.integers(1, 30))
        gold = rng.integers(0, 3, n)
        pred = rng.integers(0, 2 if trial % 3 == 0 else 3, n)  # every third run never predicts "positive"
        g, p = [names[i] for i in gold], [names[i] for i in pred]
        macro, weighted = f1_scores(g, p)
        assert macro == pytest.approx(f1_score(g, p, average="macro", zero_division=0))
        assert weighted == pytest.approx(f1_score(g, p, average="weighted", zero_division=0))
        labels = sorted(set(g) | set(p))
        prec, rec, f1, sup = precision_recall_fscore_support(g, p, labels=labels, zero_division=0)
        ours = per_class_f1(g, p)
        for i, c in enumerate(labels):
            assert (ours[c]["precision"], ours[c]["recall"], ours[c]["f1"]) == pytest.approx((prec[i], rec[i], f1[i]))
            assert ours[c]["support"] == sup[i]
        ll = rng.normal(size=(n, 3))
        m = multiple_choice_metrics(ll.tolist(), [names] * n, gold.tolist())
        assert m["acc"] == pytest.approx(accuracy_score(gold, ll.argmax(1)))
        assert m["f1_macro"] == pytest.approx(f1_score(gold, ll.argmax(1), average="macro", zero_division=0))
