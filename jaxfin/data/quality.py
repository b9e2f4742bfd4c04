"""Model-scored document quality: a hashed n-gram classifier and an LLM judge, both `score(texts) -> np.ndarray`.

Classifier (`jaxfin data train-quality POS NEG --out DIR`): logistic regression (scikit-learn) on hashed word
n-grams, where every CJK character counts as a word, so Chinese and Japanese text gets character n-grams. Text is
lowercased and every digit read as 0 (a year or an amount is a number, not a new word). The folder holds no
pickle, only data that is safe to load from anywhere:
    model.npz   coef float64 [n_features] and intercept float64 [1] (np.load with allow_pickle=False)
    meta.json   {"kind": "classifier", "version", "hashing": {n_features, ngrams}, "dev": {accuracy, auc, ...}, ...}
and `QualityModel.load(DIR).score(texts)` recomputes sklearn's HashingVectorizer features with the stored settings
and returns sigmoid(X coef + intercept) = P(positive), equal to the fitted model's predict_proba.

LLM judge (`quality_model.kind: judge`): any model `jaxfin.load_model` reads, asked for JSON {"score": 1-5,
"justification": ...} about each document's value for training a financial model, with batched KV-cache greedy
generation (jaxfin.eval.generate). The FinDAP paper (Ke et al. 2025) and its repository as we could search them
(SalesforceAIResearch/FinDap: training code only) do not give a quality-judging prompt, so JUDGE_PROMPT is the
FineWeb-Edu additive 5-point prompt (Penedo et al. 2024) adapted to finance, asking for JSON. `parse_judgement`
reads the first JSON object with a score 1-5, else "score: N", else the first lone digit 1-5; anything else is
score 0 and counted as unparsed.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import xxhash

from jaxfin.data import DataError

VERSION = 1
META = "meta.json"
WEIGHTS = "model.npz"
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003134f"  # as filters.py
_TOKEN = re.compile(f"[0-9a-z\u00c0-\u024f]+|[{_CJK}]")
_DIGIT = re.compile("[0-9]")


# ---------------------------------------------------------------- features


def analyze(text: str, ngrams: tuple[int, ...] = (1, 2)) -> list[str]:
    """The hashed features of a text: word n-grams for each n in `ngrams`, a CJK character being one word."""
    words = _TOKEN.findall(_DIGIT.sub("0", text.lower()))
    out = []
    for n in ngrams:
        out += words if n == 1 else [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
    return out


def vectorizer(n_features: int, ngrams: tuple[int, ...]):
    """sklearn's HashingVectorizer over `analyze`: stateless, so the stored settings rebuild it exactly."""
    from functools import partial

    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(
        analyzer=partial(analyze, ngrams=tuple(ngrams)), n_features=n_features, alternate_sign=False, norm="l2"
    )


def parse_ngrams(spec: str) -> tuple[int, ...]:
    """ "1,2" -> (1, 2)."""
    try:
        ns = tuple(sorted({int(x) for x in spec.split(",") if x.strip()}))
    except ValueError:
        ns = ()
    if not ns or ns[0] < 1:
        raise ValueError(f"--ngrams must be positive integers separated by commas, e.g. 1,2; got '{spec}'")
    return ns


def parse_features(spec: str) -> int:
    """ "1048576" or "2**20" -> 1048576."""
    m = re.fullmatch(r"\s*(\d+)\s*(?:\*\*\s*(\d+))?\s*", spec)
    n = (int(m[1]) ** int(m[2]) if m[2] else int(m[1])) if m else 0
    if not 16 <= n <= 2**28:
        raise ValueError(f"--features must be a number from 16 to 2**28, e.g. 2**20; got '{spec}'")
    return n


# ---------------------------------------------------------------- the classifier


class QualityModel:
    """A trained classifier folder; `score(texts)` = P(positive) per text."""

    def __init__(self, coef: np.ndarray, intercept: float, n_features: int, ngrams: tuple[int, ...], meta: dict):
        self.coef, self.intercept, self.meta = coef, intercept, meta
        self.vec = vectorizer(n_features, ngrams)

    @classmethod
    def load(cls, path: str | Path) -> QualityModel:
        path = Path(path)
        if not (path / META).is_file() or not (path / WEIGHTS).is_file():
            raise DataError(f"{path} is not a quality classifier folder (no {META} / {WEIGHTS}); make one with "
                            "`jaxfin data train-quality POS NEG --out DIR`")  # fmt: skip
        meta = json.loads((path / META).read_text())
        if meta.get("kind") != "classifier" or meta.get("version") != VERSION:
            raise DataError(f"{path / META}: not a version {VERSION} quality classifier (kind {meta.get('kind')!r})")
        with np.load(path / WEIGHTS, allow_pickle=False) as w:
            coef, intercept = np.asarray(w["coef"], np.float64), float(w["intercept"][0])
        h = meta["hashing"]
        if coef.shape != (h["n_features"],):
            raise DataError(f"{path / WEIGHTS}: coef has shape {coef.shape}, {META} says {h['n_features']} features")
        return cls(coef, intercept, h["n_features"], tuple(h["ngrams"]), meta)

    def score(self, texts: list[str]) -> np.ndarray:
        if not len(texts):
            return np.zeros(0)
        logits = self.vec.transform(texts) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-logits))


def folder_digest(path: str | Path) -> str:
    """Content hash of a classifier folder's files (part of the token-cache key: a retrained model rebuilds)."""
    h = xxhash.xxh3_128()
    for name in (META, WEIGHTS):
        h.update(name.encode() + b"\0" + (Path(path) / name).read_bytes())
    return h.hexdigest()


def read_texts(path: str, fields: dict[str, str] | None = None, max_bad_fraction: float = 0.01) -> list[str]:
    """Every text of one source (any format jaxfin.data.sources reads), bad records counted and limited as in
    `jaxfin data prepare`."""
    from jaxfin.config.schema import SourceConfig
    from jaxfin.data.sources import read_sources

    docs, _ = read_sources([SourceConfig(path=path, fields=dict(fields or {}))], max_bad_fraction=max_bad_fraction)
    return [d.text_for_filters() for d in docs]


def train_quality(
    pos: list[str],
    neg: list[str],
    out: str | Path,
    *,
    n_features: int = 2**20,
    ngrams: tuple[int, ...] = (1, 2),
    dev_fraction: float = 0.1,
    seed: int = 0,
    c: float = 1.0,
) -> dict:
    """Fit logistic regression on positive vs negative texts, measure it on a held-out stratified dev split, and
    write `out`/model.npz + meta.json. Returns the meta (with dev accuracy and AUC)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, roc_auc_score
    from sklearn.model_selection import train_test_split

    if len(pos) < 2 or len(neg) < 2:
        raise DataError(f"train-quality needs at least 2 positive and 2 negative documents; got {len(pos)}, {len(neg)}")
    if not 0 < dev_fraction < 1:
        raise ValueError(f"--dev-fraction must be between 0 and 1, got {dev_fraction}")
    texts, labels = pos + neg, np.r_[np.ones(len(pos), int), np.zeros(len(neg), int)]
    tr, dev = train_test_split(np.arange(len(texts)), test_size=dev_fraction, stratify=labels, random_state=seed)
    vec = vectorizer(n_features, ngrams)
    x = vec.transform(texts)
    t0 = time.time()
    clf = LogisticRegression(C=c, max_iter=1000).fit(x[tr], labels[tr])
    seconds = time.time() - t0
    p = clf.predict_proba(x[dev])[:, 1]
    meta = {
        "kind": "classifier",
        "version": VERSION,
        "hashing": {"n_features": n_features, "ngrams": list(ngrams), "lowercase": True, "digits": "0", "norm": "l2"},
        "train": {
            "positive": len(pos),
            "negative": len(neg),
            "examples": len(tr),
            "C": c,
            "seconds": round(seconds, 2),
        },
        "dev": {
            "examples": len(dev),
            "accuracy": float(accuracy_score(labels[dev], p >= 0.5)),
            "auc": float(roc_auc_score(labels[dev], p)) if len(set(labels[dev])) == 2 else None,
        },
        "seed": seed,
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    coef, intercept = clf.coef_[0].astype(np.float64), clf.intercept_.astype(np.float64)
    np.savez_compressed(out / WEIGHTS, coef=coef, intercept=intercept)
    (out / META).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


# ---------------------------------------------------------------- the LLM judge

JUDGE_PROMPT = """Below is an extract from a document. Evaluate whether it has high value for training a language \
model to understand finance (economics, markets, banking, accounting, corporate filings, monetary policy), using the \
additive 5-point scoring system described below. Points are accumulated based on the satisfaction of each criterion:

- Add 1 point if the extract provides some basic information relevant to finance, even if it includes irrelevant \
content such as advertisements, navigation text or promotional material.
- Add another point if the extract addresses elements of finance but is disorganised, shallow or mixed with \
unrelated content.
- Award a third point if the extract is coherent and introduces key financial concepts, facts or figures in a way \
useful for learning about finance.
- Grant a fourth point if the extract is highly relevant and informative for finance professionals, with a clear \
and consistent writing style, like a good analyst report, filing, textbook section or central bank statement.
- Bestow a fifth point if the extract is outstanding in its financial value: precise, substantive and well written \
throughout, with reasoning or data that would teach an expert something.

The extract:
<extract>
{text}
</extract>

After examining the extract, answer with only a JSON object: {{"score": <total points, 1 to 5>, \
"justification": "<up to 50 words>"}}
"""

_SCORE_WORD = re.compile(r"score\W{0,3}([1-5])(?![0-9])", re.IGNORECASE)
_LONE_DIGIT = re.compile(r"(?<![0-9.])([1-5])(?![0-9])")


def parse_judgement(text: str) -> tuple[int, str, bool]:
    """(score 1-5, justification, parsed) from a judge's answer; (0, "", False) when no score can be found.

    In order: the first JSON object whose "score" is a whole number 1-5 (a number or a numeric string); then
    "score: N" / "Score = N" anywhere; then the first digit 1-5 standing alone."""
    decoder = json.JSONDecoder()
    for m in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text, m.start())
        except ValueError:
            continue
        score = _whole_score(obj.get("score")) if isinstance(obj, dict) else None
        if score is not None:
            why = obj.get("justification", "")
            return score, why if isinstance(why, str) else json.dumps(why), True
    for pattern in (_SCORE_WORD, _LONE_DIGIT):
        m = pattern.search(text)
        if m:
            return int(m[1]), text.strip()[:500], True
    return 0, "", False


def _whole_score(v) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, str):
        try:
            v = float(v.strip())
        except ValueError:
            return None
    if isinstance(v, (int, float)) and float(v).is_integer() and 1 <= v <= 5:
        return int(v)
    return None


def judge_fingerprint(path: str | Path, cfg) -> str:
    """The judge's part of the token-cache key: its files (names, sizes, modification times, cheap for a big
    model), the prompt and the generation settings."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"quality_model.path: no model folder at '{path}'")
    h = xxhash.xxh3_128()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    h.update(JUDGE_PROMPT.encode() + json.dumps(cfg, sort_keys=True).encode())
    return h.hexdigest()


# The LLM judge itself (a model and generation) lives in jaxfin/eval/judge.py, a layer above the data pipeline;
# importing it registers it here (the trainer and `jaxfin data prepare` do).
SCORERS: dict = {}  # kind -> factory(path, cfg) -> an object with judge(texts) -> (scores, justifications)


# ---------------------------------------------------------------- one entry point for prepare


def scorer(cfg):
    """The scorer a `filters.quality_model` config names: QualityModel or Judge (loaded now)."""
    if cfg.kind == "classifier":
        return QualityModel.load(cfg.path)
    if cfg.kind == "judge":
        if "judge" not in SCORERS:
            raise DataError("filters.quality_model.kind judge needs the LLM judge: import jaxfin.eval.judge (jaxfin "
                            "train and jaxfin data prepare do)")  # fmt: skip
        return SCORERS["judge"](cfg.path, cfg.judge)
    raise DataError(f"filters.quality_model.kind must be classifier or judge, got '{cfg.kind}'")


def fingerprint(cfg) -> str:
    """What of the quality model goes into the token-cache key (its content, not its path)."""
    import dataclasses

    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "path"}
    if cfg.kind == "classifier":
        if not Path(cfg.path).is_dir():
            raise DataError(f"filters.quality_model.path: no classifier folder at '{cfg.path}'")
        content = folder_digest(cfg.path)
    else:
        content = judge_fingerprint(cfg.path, settings["judge"])
    return xxhash.xxh3_128(json.dumps({"content": content, **settings}, sort_keys=True).encode()).hexdigest()


def check_config(cfg) -> None:
    """keep_top or threshold, exactly one, before any reading."""
    if cfg.kind not in ("classifier", "judge"):
        raise DataError(f"filters.quality_model.kind must be classifier or judge, got '{cfg.kind}'")
    if (cfg.keep_top > 0) == (cfg.threshold is not None):
        raise DataError("filters.quality_model: set exactly one of keep_top (a fraction, e.g. 0.32) and threshold "
                        f"(keep score >= it); got keep_top {cfg.keep_top}, threshold {cfg.threshold}")  # fmt: skip
    if not 0 <= cfg.keep_top <= 1:
        raise DataError(f"filters.quality_model.keep_top must be in (0, 1], got {cfg.keep_top}")


def select(scores: np.ndarray, keep_top: float, threshold: float | None) -> tuple[np.ndarray, float | None]:
    """(kept mask, cutoff). keep_top f keeps the floor(f * n + 0.5) highest scores (round half up), ties broken
    by order (the earlier document first); the cutoff is the lowest kept score. threshold t keeps score >= t."""
    n = len(scores)
    if threshold is not None:
        return scores >= threshold, threshold
    k = min(n, int(np.floor(keep_top * n + 0.5)))
    mask = np.zeros(n, bool)
    mask[np.argsort(-scores, kind="stable")[:k]] = True
    return mask, (float(scores[mask].min()) if k else None)
