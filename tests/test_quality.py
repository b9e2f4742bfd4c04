"""Model-scored quality filtering: the hashed n-gram classifier against sklearn, keep_top / threshold selection in
`jaxfin data prepare` against an independent ranking of the scores, the cache key, and the LLM judge's parser and
end-to-end run on a tiny random model (which answers junk)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import sentencepiece as spm
from conftest import REPO, tiny_hf_llama

from jaxfin.cli import main
from jaxfin.data.cache import TokenCache
from jaxfin.data.quality import QualityModel, analyze, parse_judgement, read_texts, select, train_quality, vectorizer

TOK = REPO / "demo_data" / "tokenizer.model"
FIN = "revenue earnings dividend inflation interest rate bond yield equity liquidity credit loan deposit margin capital balance sheet treasury federal reserve monetary policy quarter guidance forecast".split()  # noqa: E501, SIM905
JUNK = "click here subscribe cookie privacy login menu share tweet follow home about contact newsletter banner advertisement sign up free offer download app".split()  # noqa: E501, SIM905
COMMON = "the a of and to in is for on with as by that this".split()  # noqa: SIM905


def synthetic(words: list[str], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(words + COMMON) for _ in range(rng.randint(20, 60))) for _ in range(n)]


def write_jsonl(path, texts):
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """(folder, positive file, negative file) of a classifier."""
    d = tmp_path_factory.mktemp("quality")
    pos = write_jsonl(d / "pos.jsonl", synthetic(FIN, 200, 1))
    neg = write_jsonl(d / "neg.jsonl", synthetic(JUNK, 200, 2))
    train_quality(read_texts(str(pos)), read_texts(str(neg)), d / "clf", n_features=2**18)
    return d / "clf", pos, neg


def test_features_are_word_ngrams_with_cjk_characters_as_words():
    assert analyze("GDP rose 2.5% in 2024", (1, 2)) == [
        "gdp", "rose", "0", "0", "in", "0000", "gdp rose", "rose 0", "0 0", "0 in", "in 0000",
    ]  # fmt: skip
    assert analyze("利率上升 rates", (1, 2)) == ["利", "率", "上", "升", "rates", "利 率", "率 上", "上 升", "升 rates"]


def test_classifier_separates_and_scores_equal_sklearn(classifier, tmp_path, capsys):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    _, pos, neg = classifier
    out = tmp_path / "clf"
    args = ["data", "train-quality", str(pos), str(neg), "--out", str(out), "--features", "2**18", "--ngrams", "1,2"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    meta = json.loads((out / "meta.json").read_text())
    assert meta["dev"]["accuracy"] > 0.9 and meta["dev"]["auc"] > 0.95 and meta["dev"]["examples"] == 40
    assert f"accuracy {meta['dev']['accuracy']:.4f}" in printed
    assert not any(f.suffix in (".pkl", ".pickle", ".joblib") for f in out.iterdir())
    # the same fit, made here with sklearn directly (deterministic lbfgs on the same split), predicts what the
    # saved npz + json score
    texts = [json.loads(x)["text"] for f in (pos, neg) for x in f.read_text().splitlines()]
    labels = np.r_[np.ones(200, int), np.zeros(200, int)]
    tr, _ = train_test_split(np.arange(400), test_size=0.1, stratify=labels, random_state=0)
    x = vectorizer(2**18, (1, 2)).transform(texts)
    clf = LogisticRegression(max_iter=1000).fit(x[tr], labels[tr])
    fresh = synthetic(FIN + JUNK, 30, 3) + ["", "利率 revenue"]
    model = QualityModel.load(out)
    want = clf.predict_proba(vectorizer(2**18, (1, 2)).transform(fresh))[:, 1]
    np.testing.assert_allclose(model.score(fresh), want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(model.score(texts), clf.predict_proba(x)[:, 1], rtol=1e-10, atol=1e-12)


def test_select_keep_top_rounds_half_up_and_breaks_ties_by_order():
    scores = np.array([0.5, 0.9, 0.5, 0.5, 0.1])
    mask, cutoff = select(scores, 0.6, None)  # 0.6 * 5 = 3
    assert mask.tolist() == [True, True, True, False, False] and cutoff == 0.5
    assert select(scores, 0.5, None)[0].sum() == 3  # 2.5 rounds up
    assert select(scores, 0.32, None)[0].tolist() == [True, True, False, False, False]  # 1.6 -> 2
    mask, cutoff = select(scores, 0.0, 0.5)
    assert mask.tolist() == [True, True, True, True, False] and cutoff == 0.5


def _prepare(capsys, src, out, *filters):
    args = ["data", "prepare", f"mix={src}", "--tokenizer", str(TOK), "--out", str(out), "--json"]
    assert main([*args, *(x for f in filters for x in ("--filter", f))]) == 0
    return json.loads(capsys.readouterr().out)["mix"]


def test_keep_top_caches_exactly_the_best_documents(classifier, tmp_path, capsys):
    out = classifier[0]
    texts = synthetic(FIN + JUNK, 40, 7) + ["too short"]
    src = write_jsonl(tmp_path / "mix.jsonl", texts)
    flt = [f"quality_model.path={out}", "quality_model.keep_top=0.32", "min_chars=20"]
    rep = _prepare(capsys, src, tmp_path / "cache", *flt)
    k = int(np.floor(0.32 * 40 + 0.5))  # 13: round half up of 12.8
    scores = QualityModel.load(out).score(texts[:40])
    best = sorted(np.argsort(-scores, kind="stable")[:k])  # the oracle: rank the 40 scored documents here
    assert rep["quality"]["scored"] == 40 and rep["quality"]["kept"] == k == rep["kept"]
    assert rep["dropped"] == {"min_chars": 1, "quality_model": 40 - k}
    assert rep["quality"]["cutoff"] == pytest.approx(scores[best].min()) and rep["quality"]["docs_per_s"] > 0
    cache = TokenCache(rep["cache"])
    sp = spm.SentencePieceProcessor(model_file=str(TOK))
    assert [cache.doc(i).tolist() for i in range(len(cache))] == [
        [sp.bos_id(), *sp.encode(texts[i]), sp.eos_id()] for i in best
    ]
    lines = [json.loads(x) for x in (cache.path / "quality_scores.jsonl").read_text().splitlines()]
    assert [x["loc"] for x in lines] == [f"{src}:{i}" for i in range(1, 41)]
    assert [x["kept"] for x in lines] == [i in best for i in range(40)]
    np.testing.assert_allclose([x["score"] for x in lines], scores, rtol=1e-12)
    # the same inputs reuse the cache (with its quality report); another model is another cache
    again = _prepare(capsys, src, tmp_path / "cache", *flt)
    assert again["reused"] and again["cache"] == rep["cache"] and again["quality"] == rep["quality"]
    other = tmp_path / "clf2"
    assert main(["data", "train-quality", str(classifier[1]), str(classifier[2]), "--out", str(other),
                 "--features", "2**18", "--ngrams", "1"]) == 0  # fmt: skip
    capsys.readouterr()
    flt2 = [f"quality_model.path={other}", "quality_model.keep_top=0.32", "min_chars=20"]
    rebuilt = _prepare(capsys, src, tmp_path / "cache", *flt2)
    assert not rebuilt["reused"] and rebuilt["cache"] != rep["cache"]


def test_threshold_keeps_every_document_at_or_above_it(classifier, tmp_path, capsys):
    out = classifier[0]
    texts = synthetic(FIN + JUNK, 30, 11)
    src = write_jsonl(tmp_path / "mix.jsonl", texts)
    rep = _prepare(capsys, src, tmp_path / "cache", f"quality_model.path={out}", "quality_model.threshold=0.5")
    scores = QualityModel.load(out).score(texts)
    assert 0 < (scores >= 0.5).sum() < 30  # the mix has both kinds
    assert rep["kept"] == rep["sequences"] == int((scores >= 0.5).sum()) and rep["quality"]["cutoff"] == 0.5
    assert rep["dropped"] == {"quality_model": int((scores < 0.5).sum())}


def test_bad_quality_settings_are_refused(classifier, tmp_path, capsys):
    src = write_jsonl(tmp_path / "mix.jsonl", synthetic(FIN, 5, 1))
    both = [f"quality_model.path={classifier[0]}", "quality_model.keep_top=0.3", "quality_model.threshold=0.5"]
    assert main(["data", "prepare", str(src), "--tokenizer", str(TOK), "--out", str(tmp_path / "c"),
                 *(x for f in both for x in ("--filter", f))]) == 2  # fmt: skip
    assert "exactly one of keep_top" in capsys.readouterr().err
    missing = [f"quality_model.path={tmp_path / 'nope'}", "quality_model.keep_top=0.3"]
    assert main(["data", "prepare", str(src), "--tokenizer", str(TOK), "--out", str(tmp_path / "c"),
                 *(x for f in missing for x in ("--filter", f))]) == 2  # fmt: skip
    assert "no classifier folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    "answer, want",
    [
        ('{"score": 4, "justification": "A clear earnings summary."}', (4, "A clear earnings summary.", True)),
        ('Sure! ```json\n{"justification": "thin", "score": "2"}\n``` done', (2, "thin", True)),
        ('{"score": 9} but really Score: 3', (3, '{"score": 9} but really Score: 3', True)),
        ("The extract is fine. Financial score = 5/5", (5, "The extract is fine. Financial score = 5/5", True)),
        ("I would give it 4 points", (4, "I would give it 4 points", True)),
        ('{"score": 4.0, "justification": ["list"]}', (4, '["list"]', True)),
        ("no digits at all {broken json", (0, "", False)),
        ("values 7, 2024 and 0.5 only", (0, "", False)),
        ("", (0, "", False)),
    ],
)
def test_parse_judgement(answer, want):
    assert parse_judgement(answer) == want


def test_judge_runs_end_to_end_and_saves_scores(tmp_path, capsys):
    hf = tiny_hf_llama(max_position_embeddings=2048)
    model_dir = tmp_path / "judge"
    hf.save_pretrained(model_dir)
    texts = synthetic(FIN + JUNK, 5, 5)
    src = write_jsonl(tmp_path / "mix.jsonl", texts)
    flt = [f"quality_model.path={model_dir}", "quality_model.kind=judge", "quality_model.threshold=0",
           f"quality_model.judge.tokenizer={TOK}", "quality_model.judge.max_new_tokens=8",
           "quality_model.judge.batch_size=4", "quality_model.judge.max_chars=200"]  # fmt: skip
    rep = _prepare(capsys, src, tmp_path / "cache", *flt)
    q = rep["quality"]
    assert q["kind"] == "judge" and q["scored"] == q["kept"] == 5 and rep["sequences"] == 5
    assert 0 <= q["unparsed"] <= 5 and q["docs_per_s"] > 0
    lines = [json.loads(x) for x in (tmp_path / "cache").glob("mix-*/quality_scores.jsonl").__next__().open()]
    assert len(lines) == 5 and all(set(x) == {"loc", "score", "kept", "justification"} for x in lines)
    assert all(x["score"] in (0, 1, 2, 3, 4, 5) for x in lines)
    assert sum(x["score"] == 0 for x in lines) == q["unparsed"]
