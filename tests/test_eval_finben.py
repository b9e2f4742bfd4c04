"""FinBen-style evaluation (issue 23): the two protocols and their labels, PIXIU's generative classification
scoring, ROUGE for summarisation, FinQA / ConvFinQA execution accuracy, configs/eval/finben.yaml."""

import json

import numpy as np
import pytest
from conftest import REPO, tiny_hf_llama

from jaxfin.eval.gen_tasks import (
    finqa_match,
    parse_numeric_answer,
    read_jsonl_records,
    rouge_per_example,
    run_generative_task,
    str_to_num,
)
from jaxfin.eval.generate import Generation
from jaxfin.eval.metrics import first_label_match, generative_classification_metrics
from jaxfin.eval.tasks import TaskError, build_requests, load_task, run_task, validate_task

SP_MODEL = REPO / "demo_data/tokenizer.model"
FPB = ["negative", "neutral", "positive"]


# ---------------------------------------------------------------------------------------------------------------
# PIXIU's generative classification (The-FinAI/PIXIU src/tasks/flare.py, Classification)


def _pixiu_oracle(generations, choices, golds):
    """PIXIU's process_results + aggregations transcribed: the first choice in list order found in the lower-cased
    generation, else "missing"; sklearn F1 over labels=set(golds); MCC with every non-gold label as -1."""
    from sklearn.metrics import f1_score, matthews_corrcoef

    preds = []
    for g in generations:
        text = g.strip().lower()
        preds.append(next((c.lower() for c in choices if c.lower() in text), "missing"))
    golds = [g.lower() for g in golds]
    labels = list(set(golds))
    ids = {label: i for i, label in enumerate(labels)}
    return {
        "acc": float(np.mean([p == g for p, g in zip(preds, golds)])),
        "missing": float(np.mean([p == "missing" for p in preds])),
        "f1_weighted": f1_score(golds, preds, average="weighted", labels=labels),
        "f1_macro": f1_score(golds, preds, average="macro", labels=labels),
        "mcc": matthews_corrcoef([ids[g] for g in golds], [ids.get(p, -1) for p in preds]),
    }


def test_first_label_match_follows_pixiu():
    assert first_label_match(" Positive.", FPB) == "positive"  # case-insensitive, stripped
    # the first choice IN LIST ORDER that occurs anywhere, not the earliest in the text
    assert first_label_match("positive, not negative", FPB) == "negative"
    assert first_label_match("The sentiment is NEUTRAL", FPB) == "neutral"
    assert first_label_match("I cannot tell", FPB) is None
    assert first_label_match("", FPB) is None
    assert first_label_match("hawkishly dovish", ["dovish", "hawkish", "neutral"]) == "dovish"  # substring match


def test_generative_classification_metrics_by_hand():
    # gold: pos, pos, neg, neu; predictions: pos, missing, neg, pos
    gold = ["positive", "positive", "negative", "neutral"]
    pred = ["positive", None, "negative", "positive"]
    m = generative_classification_metrics(gold, pred)
    assert m["n"] == 4 and m["acc"] == 0.5 and m["missing"] == 0.25
    # per gold class: positive P=1/2 R=1/2 F=1/2; negative F=1; neutral P=0 (never predicted) R=0 F=0
    assert m["f1_macro"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert m["f1_weighted"] == pytest.approx((2 * 0.5 + 1 * 1 + 1 * 0) / 4)
    # MCC (Gorodkin's R_K) from the confusion matrix, classes [negative, neutral, positive, missing]
    c = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1], [0, 0, 0, 0]], float)  # rows gold, cols pred
    t, p, s, k = c.sum(1), c.sum(0), c.sum(), np.trace(c)
    mcc = (k * s - t @ p) / np.sqrt((s**2 - p @ p) * (s**2 - t @ t))
    assert m["mcc"] == pytest.approx(mcc)


def test_generative_classification_metrics_match_pixiu_with_sklearn():
    rng = np.random.default_rng(0)
    pieces = ["positive", "Negative!", "neutral outlook", "no idea", "", "positive or negative", "NEUTRAL"]
    for trial in range(30):
        n = int(rng.integers(1, 25))
        gens = [str(rng.choice(pieces)) for _ in range(n)]
        golds = [FPB[i] for i in rng.integers(0, 2 if trial % 4 == 0 else 3, n)]  # some runs: a class never gold
        preds = [first_label_match(g, FPB) for g in gens]
        ours = generative_classification_metrics(golds, preds)
        want = _pixiu_oracle(gens, FPB, golds)
        for k, v in want.items():
            assert ours[k] == pytest.approx(v, abs=1e-12), (trial, k)
    all_missing = generative_classification_metrics(["positive", "negative"], [None, None])
    assert all_missing["acc"] == 0 and all_missing["missing"] == 1 and all_missing["f1_macro"] == 0


# ---------------------------------------------------------------------------------------------------------------
# ROUGE


def test_rouge_by_hand_and_against_rouge_score():
    from rouge_score import rouge_scorer

    pred, ref = "The cat sat", "the cat ran away"
    (r,) = rouge_per_example([pred], [ref])
    # unigrams: 2 shared (the, cat), P = 2/3, R = 2/4 -> F = 4/7; bigrams: 1 shared (the cat), P = 1/2, R = 1/3 -> 2/5;
    # LCS "the cat" = 2 -> ROUGE-L F = 4/7
    assert r["rouge1"] == pytest.approx(4 / 7) and r["rouge2"] == pytest.approx(2 / 5)
    assert r["rougeL"] == pytest.approx(4 / 7)
    # stemming (off by default, as FinBen's EDTSUM): "rates rose" vs "rate rising"
    assert rouge_per_example(["rates rose"], ["rate rising"])[0]["rouge1"] == 0
    assert rouge_per_example(["rates rising"], ["rate rises"], use_stemmer=True)[0]["rouge1"] == pytest.approx(1)
    pairs = [("profit fell 5% in Q3", "Q3 profit down 5%"), ("", "something"), ("a b c d", "d c b a")]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)
    for (p, g), ours in zip(pairs, rouge_per_example([p for p, _ in pairs], [g for _, g in pairs])):
        want = scorer.score(g, p)
        assert ours == pytest.approx({k: want[k].fmeasure for k in ("rouge1", "rouge2", "rougeL")})


def _fake_generate(texts_by_prompt_suffix):
    """A stand-in for generate_full: the canned generation of the prompt that ends with a known suffix."""

    def fake(model, tokenizer, prompts, cfg, *, batch_size, chat_template):
        out = []
        for p in prompts:
            text = tokenizer.decode(p) if not isinstance(p, str) else p
            hit = [g for k, g in texts_by_prompt_suffix.items() if k in text]
            assert hit, text
            out.append(Generation(text=hit[0], tokens=[], prompt_tokens=list(p), finish_reason="stop"))
        return out

    return fake


class _Cfg:
    max_position_embeddings = 4096


class _Model:
    config = _Cfg()


class _CharTok:
    bos_id, eos_id = 1, 2

    def encode(self, s):
        return [ord(c) for c in s]

    def decode(self, ids):
        return "".join(chr(i) for i in ids if i > 2)


def test_rouge_task_on_a_jsonl_file(tmp_path, monkeypatch):
    path = tmp_path / "sum.jsonl"
    rows = [{"doc": "Shares of Acme rose after earnings.", "summary": "Acme shares rise"},
            {"doc": "The central bank held rates.", "summary": "rates held"}]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    gens = {"Acme rose": "Acme shares rose", "held rates": "bank holds rates"}
    monkeypatch.setattr("jaxfin.eval.gen_tasks.generate_full", _fake_generate(gens))
    task = {"name": "sum", "type": "generative", "metric": "rouge", "data": {"path": str(path)},
            "fields": {"text": "doc", "answer": "summary"}}  # fmt: skip
    r = run_task(_Model(), _CharTok(), task)
    assert r["protocol"] == "generative" and r["n"] == 2
    per = rouge_per_example(["Acme shares rose", "bank holds rates"], ["Acme shares rise", "rates held"])
    for k in ("rouge1", "rouge2", "rougeL"):
        assert r["metrics"][k] == pytest.approx(np.mean([x[k] for x in per]))
    assert r["metrics"]["rouge1"] == pytest.approx((2 / 3 + 2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2)) / 2)
    with pytest.raises(TaskError, match=r"sum.jsonl:1: column 'text' \(fields.text\)"):
        read_jsonl_records(path, {"answer": "summary"}, ("text", "answer"))  # text column missing -> names it
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x"}\n')
    with pytest.raises(TaskError, match="column 'answer'"):
        read_jsonl_records(bad, {}, ("text", "answer"))


# ---------------------------------------------------------------------------------------------------------------
# FinQA / ConvFinQA (czyssrs/FinQA code/evaluate/evaluate.py)


def test_str_to_num_is_the_official_rule():
    assert str_to_num("1,234.5") == 1234.5  # commas dropped
    assert str_to_num("12.5%") == pytest.approx(0.125)  # '%' -> / 100
    assert str_to_num("const_100") == 100 and str_to_num("const_m1") == -1  # program constants
    assert str_to_num("abc") is None and str_to_num("$5") is None  # 'n/a' ('$' is stripped by the caller)


def test_finqa_match_rounds_to_5_decimals():
    # official: round(executed result, 5) == exe_ans
    assert finqa_match(0.1446411, 0.14464) == 1.0
    assert finqa_match(0.14465, 0.14464) == 0.0
    assert finqa_match(94.0, 94) == 1.0
    assert finqa_match(str_to_num("14.464%"), 0.14464) == 1.0  # a percent answer read as a ratio
    assert finqa_match(14.464, 0.14464) == 0.0  # ... and no other percent reconciliation
    assert finqa_match("yes", "yes") == 1.0 and finqa_match("no", "Yes") == 0.0 and finqa_match(1.0, "yes") == 0.0
    assert finqa_match(0.125, "12.5%") == 1.0 and finqa_match(1500.0, "$1,500") == 1.0  # string golds
    assert finqa_match(None, 3.0) == 0.0


def test_parse_numeric_answer():
    assert parse_numeric_answer(" Answer: $1,234.50\nmore") == 1234.5
    assert parse_numeric_answer("The change was 12.5% overall.") == pytest.approx(0.125)
    assert parse_numeric_answer("-3.2") == -3.2
    assert parse_numeric_answer("Yes, it increased") == "yes"
    assert parse_numeric_answer("no idea") == "no"
    assert parse_numeric_answer("unknown") is None and parse_numeric_answer("") is None


def test_finqa_and_convfinqa_official_layouts(tmp_path, monkeypatch):
    finqa = [{"id": "q1", "pre_text": ["Revenue grew."], "post_text": ["End."], "table": [["", "2019"], ["rev", "5"]],
              "qa": {"question": "what was revenue?", "exe_ans": 5.0, "program": "add(5, const_0)"}}]  # fmt: skip
    (tmp_path / "finqa.json").write_text(json.dumps(finqa))
    (rec,) = read_jsonl_records(tmp_path / "finqa.json", {}, ("question", "context", "answer"))
    assert rec["question"] == "what was revenue?" and rec["answer"] == 5.0 and rec["id"] == "q1"
    assert rec["context"] == "Revenue grew.\n | 2019\nrev | 5\nEnd."
    conv = [{"id": "c1", "pre_text": [], "post_text": [], "table": [["a", "1"]],
             "annotation": {"dialogue_break": ["what is a?", "and doubled?"], "exe_ans_list": [1.0, 2.0]}}]  # fmt: skip
    (tmp_path / "conv.json").write_text(json.dumps(conv))
    (c,) = read_jsonl_records(tmp_path / "conv.json", {}, ("question", "context", "answer"))
    assert c["question"] == "Q: what is a?\nA: 1.0\nQ: and doubled?" and c["answer"] == 2.0
    # a run over a JSONL of {question, context, answer}: one right, one wrong, one without a number
    rows = [{"question": "q1?", "context": "c", "answer": 0.5}, {"question": "q2?", "context": "c", "answer": "7"},
            {"question": "q3?", "context": "c", "answer": 3}]  # fmt: skip
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr("jaxfin.eval.gen_tasks.generate_full", _fake_generate({"q1?": " 50%", "q2?": " 7.1",
                                                                               "q3?": " n/a"}))  # fmt: skip
    r = run_generative_task(_Model(), _CharTok(), {"name": "finqa", "metric": "finqa", "type": "generative",
                                                   "data": {"path": str(tmp_path / "qa.jsonl")}})  # fmt: skip
    assert r["metrics"]["exe_acc"] == pytest.approx(1 / 3) and r["metrics"]["unparsed"] == pytest.approx(1 / 3)
    assert [e["correct"] for e in r["examples"]] == [1.0, 0.0, 0.0]


# ---------------------------------------------------------------------------------------------------------------
# Protocol selection and labels


def test_protocol_suffix_and_key():
    d = load_task("fpb/generative")
    assert d["name"] == "fpb/generative" and d["protocol"] == "generative"
    t = validate_task(d)
    assert t["max_new_tokens"] == 10 and t["stop"] == ["\n"]
    assert load_task("fpb/loglik")["name"] == "fpb" and validate_task(load_task("fpb"))["protocol"] == "loglik"
    assert load_task(str(REPO / "configs/eval/tasks/fomc.yaml") + "/generative")["name"] == "fomc/generative"
    assert load_task("ner/generative")["name"] == "ner"  # generative already
    with pytest.raises(TaskError, match="no 'loglik' protocol"):
        load_task("ner/loglik")
    with pytest.raises(TaskError, match="key 'protocol'"):
        validate_task({**load_task("fpb"), "protocol": "sampled"})
    with pytest.raises(TaskError, match="key 'max_new_tokens'"):
        validate_task({**load_task("fpb"), "max_new_tokens": 0})


def test_report_shows_the_protocol():
    from jaxfin.eval.report import markdown

    tasks = {"fpb": {"protocol": "loglik", "metrics": {"acc": 0.5}, "n": 4},
             "fpb/generative": {"protocol": "generative", "metrics": {"acc": 0.25}, "n": 4}}  # fmt: skip
    report = {"text_sets": [], "models": [{"name": "m"}], "text": {"m": {}}, "tasks": {"m": tasks}}
    md = markdown(report)
    assert "| model | task | protocol | metric | value | n |" in md
    assert "| m | fpb | loglik | acc | 0.5000 | 4 |" in md and "| m | fpb/generative | generative | acc |" in md


def test_finben_config_loads_and_its_tasks_resolve():
    from jaxfin.eval.config import load_eval_config

    cfg = load_eval_config(REPO / "configs/eval/finben.yaml")
    assert cfg.tasks == ["fpb", "fpb/generative", "fiqa_sa", "fiqa_sa/generative", "fomc", "fomc/generative", "ner",
                         "tatqa"]  # fmt: skip
    for name in cfg.tasks:
        d = load_task(name)
        if d.get("type", "multiple_choice") == "multiple_choice":
            validate_task(d)
    for name in ("edtsum", "finqa", "convfinqa"):  # configured for when the data arrives
        assert load_task(name)["type"] == "generative"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import jaxfin
    from jaxfin.data.tokenizer import load_tokenizer

    path = tmp_path_factory.mktemp("hf") / "tiny"
    tiny_hf_llama(max_position_embeddings=512).save_pretrained(path)
    return jaxfin.load_model(path), load_tokenizer(SP_MODEL)


def test_fpb_generative_end_to_end(tiny):
    """16 FPB sentences through the generative protocol on a tiny random model: the prompt is the loglik context,
    the generations are the greedy generator's own, and the metrics are PIXIU's over those generations."""
    from jaxfin.eval.generate import GenerationConfig, generate_full

    model, tok = tiny
    r = run_task(model, tok, "fpb/generative", batch_size=8, limit=16)
    assert r["task"] == "fpb/generative" and r["protocol"] == "generative" and r["n"] == 16
    loglik_items = build_requests(validate_task(load_task("fpb")), tok, limit=16)
    assert [e["context"] for e in r["examples"]] == [it["context"] for it in loglik_items]
    prompts = [[tok.bos_id] + tok.encode(e["context"]) for e in r["examples"]]
    direct = generate_full(model, tok, prompts, GenerationConfig(max_new_tokens=10, stop=["\n"], seed=1234),
                           batch_size=8)  # fmt: skip
    assert [e["generation"] for e in r["examples"]] == [g.text for g in direct]
    want = _pixiu_oracle([e["generation"] for e in r["examples"]], FPB, [e["gold"] for e in r["examples"]])
    for k, v in want.items():
        assert r["metrics"][k] == pytest.approx(v, abs=1e-12)
    assert all(e["prediction"] == (first_label_match(e["generation"], FPB) or "missing") for e in r["examples"])
