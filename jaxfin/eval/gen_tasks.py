"""Generative finance tasks: the model writes an answer (jaxfin/eval/generate.py), we parse it and score it.

`run_generative_task(model, tokenizer, task, *, batch_size=8, limit=None)` ->
`{"task": name, "protocol": "generative", "metrics": {...}, "n": count, "examples": [one record per example]}`.
Every generation is greedy (`generate_answers`: jaxfin's batched KV-cache generator, `generate_full`); the
multiple-choice tasks' generative protocol (jaxfin/eval/tasks.py) uses the same function.

Task YAML (configs/eval/tasks/ner.yaml, tatqa.yaml, edtsum.yaml, finqa.yaml, convfinqa.yaml)::

    name: ner
    type: generative
    metric: ner_f1 | tatqa | rouge | finqa   # which reader, prompt, parser and metric
    data_dir: null                      # default: $JAXFIN_SHARED_DATA, else <repo>/../shared/data
    data: {path: finance_ner_alvarado/FIN3_test.conll.txt}     # relative to data_dir (or absolute)
    few_shot: 0                         # solved examples put before each prompt (the same ones for every example)
    few_shot_split: {path: ...}         # where they come from (default: the evaluated file's examples past limit)
    seed: 1234                          # few-shot sampling seed
    max_new_tokens: 64
    stop: ["\\n\\n"]                    # stop strings (the generation is cut before the first)
    chat_template: null                 # null = plain prompt after BOS; tokenizer | llama3 | chatml = a user turn
    max_length: null                    # prompt + generation tokens (default: the model's context); longer prompts
                                        # lose tokens on the left (after BOS), as the harness does
    limit: null                         # the first N examples only (run_generative_task's `limit` wins)
    description: null                   # the instruction put first (default: the metric's own)
    # rouge and finqa only (JSONL, or a JSON list, of records):
    fields: {text: document}            # canonical field -> the file's column (default: the same name)
    prompt: "Text: {text}\\nSummary:"   # str.format template over the fields and columns (default: the metric's)
    use_stemmer: false                  # rouge only: Porter stemming in rouge-score (FinBen's EDTSUM: false)

**Finance NER** (`metric: ner_f1`; Salinas Alvarado et al. 2015, CoNLL, IO tags PER/ORG/LOC/MISC). An entity is a
maximal run of tokens with the same I-TYPE tag (IO tags cannot separate two adjacent entities of one type); its text
is the tokens joined by spaces. The model is asked for one entity per line, `type: text`, with the types person,
organization, location, miscellaneous (or `none`). Score: entity-level micro F1 over (type, normalised text) pairs
(`ner_f1`), counted as multisets per sentence; also precision and recall.

**TAT-QA** (`metric: tatqa`; Zhu et al. 2021, a table plus paragraphs from a financial report). The prompt gives the
table (cells joined by ` | `), the paragraphs and the question, and asks for one line: the answer (several spans
separated by `; `), then the scale word if there is one (thousand, million, billion, percent). The parser
(`parse_tatqa_answer`) takes the first line, reads a trailing scale word (or a `%` after a number as percent) as
the predicted scale, and splits spans at `;`. Scoring follows the official evaluator (`tatqa_em_f1`): numbers are
multiplied by their scale before they are compared, so the answer `1.2` with scale `million` equals `1,200,000`, and
a wrong scale is a wrong answer; exact match and a DROP-style bag-of-tokens F1 (F1 = EM for arithmetic and count
questions).

**Summarisation** (`metric: rouge`, e.g. EDTSUM; fields `text`, `answer`). ROUGE-1, ROUGE-2 and ROUGE-L F-measures
by Google's `rouge-score` (`RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False)`, as FinBen scores
EDTSUM through Hugging Face `evaluate`'s rouge, whose default is no stemming), averaged over examples (a plain mean;
`evaluate` reports the bootstrap `mid`, an estimate of the same mean).

**FinQA / ConvFinQA** (`metric: finqa`; fields `question`, `context`, `answer`; the official FinQA layout with `qa`,
`pre_text`, `table`, `post_text` is read as is). Execution accuracy of the numeric answer (`exe_acc`), the rule of
czyssrs/FinQA `code/evaluate/evaluate.py`: numbers are read by its `str_to_num` (commas dropped; '12.5%' = 0.125)
and compared after `round(x, 5)` (its only tolerance), 'yes' / 'no' answers as words. The prediction is the
generation's first line: 'yes' / 'no', else the whole line as a number, else its first number
(`parse_numeric_answer`); `unparsed` is the share of generations without one. For ConvFinQA the record's question
holds the conversation so far (the earlier turns with their gold answers) and `answer` the last turn's.
"""

from __future__ import annotations

import json
import math
import random
import re
import string
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from jaxfin.eval.generate import GenerationConfig, generate_full
from jaxfin.eval.task_base import TaskError, default_data_dir, read_rows

# ----------------------------------------------------------------------------------------------------------------
# TAT-QA metric (semantics of the official NExTplusplus/TAT-QA tatqa_metric.py / tatqa_utils.py)

SCALES = ("", "thousand", "million", "billion", "percent")
_NUM_JUNK = set("'\"\\$€£¥%(),[]")  # characters ignored when reading a number
_PUNCT = set(string.punctuation)


def scale_to_num(scale: str) -> float:
    """The multiplier of a scale word: hundred 100, thousand 1e3, million 1e6, billion 1e9, percent 0.01, else 1
    (the first of these names found in the lower-cased text)."""
    s = scale.lower()
    for name, mult in (("hundred", 100), ("thousand", 1000), ("million", 1000000), ("billion", 1000000000)):
        if name in s:
            return mult
    return 0.01 if "percent" in s else 1


def _clean_num(text: str) -> str:
    return "".join(ch for ch in str(text) if ch not in _NUM_JUNK)


def _first_number(text: str) -> int | float | None:
    """The first number in the text after dropping currency signs, commas, brackets and %; int unless it has a '.'."""
    m = re.search(r"([+-]?\d+(\.\d+)?)|([+-]?\.\d+)", _clean_num(text))
    if m is None or not m.group(1):
        return None
    return float(m.group(1)) if "." in m.group(1) else int(m.group(1))


def is_number(text: str) -> bool:
    """True when the text's first word (cleaned of $, %, commas, brackets ...) is a float and any second word is a
    scale word: '$1,496.5', '(134)', '12%', '3 million' are numbers; '3 apples' and 'nan' are not."""
    words = " ".join(_clean_num(w) for w in text.split()).split()
    if not words:
        return False
    try:
        num = float(words[0])
    except ValueError:
        return False
    if np.isnan(num):
        return False
    return not (len(words) >= 2 and scale_to_num(words[1]) == 1)


def to_number(text: str) -> float | None:
    """The value of a number string, rounded to 4 decimals: '(134)' -> -134, '12%' -> 0.12, '1.5 million' ->
    1500000; the scale is the first `<number><letters>` group's; None without a number."""
    num = _first_number(text)
    if num is None:
        return None
    m = re.search(r"[\d.]+\s?[a-zA-Z]+", text)
    mult = scale_to_num(m.group(0)) if m else 1
    sign = -1 if re.search(r"\([\d.\s]+\)", text.strip()) else 1
    pct = 0.01 if re.search(r"[\d.\s]+%", text.strip()) else 1
    return round(num * mult * sign * pct, 4)


def normalize_answer(text: str) -> str:
    """Per space-separated token: lower-case, drop punctuation (unless the token is a number), write numbers as
    str(to_number(token)), drop articles; then join the non-empty tokens with single spaces."""
    parts = []
    for token in text.split(" "):
        t = token.lower()
        if not is_number(t):
            t = "".join(ch for ch in t if ch not in _PUNCT)
        if is_number(t):
            t = str(to_number(t))
        t = " ".join(re.sub(r"\b(a|an|the)\b", " ", t).split())
        if t.strip():
            parts.append(t)
    return " ".join(parts).strip()


def answer_string(answers: list, scale: str) -> str:
    """One comparable string for an answer (a list of spans) and its scale, as the official `get_answer_str`: the
    spans sorted; a number becomes '%.4f' of its value times the scale (a number written with '%' keeps its own
    value: '12%' -> '0.1200'); a non-number gets ' <scale>' appended; the spans joined with spaces."""
    out = []
    for ans in sorted(str(a) for a in answers):
        if is_number(ans):
            num = to_number(ans)
            if num is None:
                out.append(f"{ans} {scale}" if scale else ans)
            elif "%" in ans:
                out.append(f"{num:.4f}")
            else:
                out.append(f"{round(num, 2) * scale_to_num(scale):.4f}")
        else:
            out.append(f"{ans} {scale}" if scale else ans)
    return " ".join(out)


def _bag_f1(pred: set, gold: set) -> float:
    inter = len(pred & gold)
    p = inter / len(pred) if pred else 1.0
    r = inter / len(gold) if gold else 1.0
    return 0.0 if p == 0 and r == 0 else 2 * p * r / (p + r)


def em_f1(predicted: str, gold: str) -> tuple[float, float]:
    """DROP-style (exact match, F1) of two answer strings: EM when the normalised strings are equal; F1 over the
    bags (sets) of normalised tokens, rounded to 2 decimals. (The official code aligns lists of spans with the
    Hungarian algorithm; answer strings are always one span here, so that is one pair.)"""
    p, g = normalize_answer(predicted), normalize_answer(gold)
    return float(p == g), round(_bag_f1(set(p.split()), set(g.split())), 2)


def tatqa_em_f1(prediction: str | list[str], pred_scale: str, gold: Mapping) -> tuple[float, float]:
    """(exact match, F1) of one prediction against a TAT-QA question (`answer`, `answer_type`, `scale`), as the
    official evaluator: the gold answer (spans, or one number) and the prediction are turned into scaled answer
    strings (`answer_string`); a lone unscaled number prediction also counts as a ratio ('0.2222' matches 22.22
    percent); the best (EM, F1) over those strings is kept; F1 = EM for arithmetic and count answers. An empty
    prediction scores 0."""
    preds = [prediction] if isinstance(prediction, str) else list(prediction)
    if not preds or not any(str(p).strip() for p in preds):
        return 0.0, 0.0
    kind, ans = gold["answer_type"], gold["answer"]
    if kind in ("span", "multi-span"):
        golds = list(ans)
    elif kind == "count":
        golds = [str(int(ans))]
    else:
        golds = [str(ans)]
    if not golds:
        return 0.0, 0.0
    gold_str = answer_string(golds, gold["scale"])
    candidates = [answer_string(preds, pred_scale)]
    if len(preds) == 1 and not pred_scale and "%" not in preds[0] and is_number(preds[0]):
        num = to_number(preds[0])
        if num is not None:
            candidates.append(f"{num:.4f}")
    em, f1 = max(em_f1(c, gold_str) for c in candidates)
    return em, (em if kind in ("arithmetic", "count") else f1)


_SCALE_RE = re.compile(r"\s*\b(thousands?|millions?|billions?|percent(?:age)?)\s*\.?$", re.I)


def parse_tatqa_answer(text: str) -> tuple[list[str], str]:
    """(spans, scale) from a generation: the first non-empty line (after an optional 'Answer:'), a trailing scale
    word (thousand, million, billion, percent; plural allowed) taken off as the scale unless an earlier span ends in
    the same word ('$417 million; $146 million' has no scale), a number ending in '%' read as percent (the '%'
    removed), spans split at ';'."""
    line = next((x.strip() for x in text.splitlines() if x.strip()), "")
    line = re.sub(r"^answer\s*:\s*", "", line, flags=re.I)
    scale = ""
    m = _SCALE_RE.search(line)
    if m and re.search(rf"\b{m.group(1)}\b", line[: m.start()].rpartition(";")[0], re.I):
        m = None  # 'a million; b million': the word belongs to every span, it is not a scale for the whole answer
    if m:
        word = m.group(1).lower()
        scale = next(s for s in SCALES[1:] if word.startswith(s))
        line = line[: m.start()]
    spans = [s.strip() for s in line.split(";") if s.strip()]
    if not scale and len(spans) == 1 and re.fullmatch(r"[-+$(]*[\d,.]+\)?\s*%", spans[0]):
        scale, spans = "percent", [spans[0].replace("%", "").strip()]
    return spans, scale


# ----------------------------------------------------------------------------------------------------------------
# NER metric


NER_TYPES = {"PER": "person", "ORG": "organization", "LOC": "location", "MISC": "miscellaneous"}
_TYPE_ALIASES = {
    "person": "person", "per": "person", "people": "person",
    "organization": "organization", "organisation": "organization", "org": "organization", "company": "organization",
    "location": "location", "loc": "location", "place": "location",
    "miscellaneous": "miscellaneous", "misc": "miscellaneous",
}  # fmt: skip


def normalize_entity(text: str) -> str:
    """Lower-case, single spaces, no space before , . ; : ) and after (, and no surrounding punctuation or quotes."""
    t = " ".join(text.lower().split())
    t = re.sub(r"\s+([,.;:)])", r"\1", t)
    t = re.sub(r"\(\s+", "(", t)
    return t.strip(" \t\"'`.,;:")


def conll_entities(tokens: list[str], tags: list[str]) -> list[tuple[str, str]]:
    """(type, text) of each entity of an IO- (or BIO-) tagged sentence: a maximal run of one type (a B- tag starts a
    new one); text = the tokens joined by spaces; type = person | organization | location | miscellaneous."""
    out, cur, cur_type = [], [], None
    for tok, tag in zip(tokens, tags):
        kind = tag[2:] if tag[:2] in ("I-", "B-") else None
        if kind != cur_type or tag.startswith("B-"):
            if cur_type:
                out.append((NER_TYPES.get(cur_type, cur_type.lower()), " ".join(cur)))
            cur, cur_type = [], kind
        if kind:
            cur.append(tok)
    if cur_type:
        out.append((NER_TYPES.get(cur_type, cur_type.lower()), " ".join(cur)))
    return out


def parse_entities(text: str) -> list[tuple[str, str]]:
    """(type, normalised text) pairs from the lines `type: text` of a generation; unknown types, 'none' and lines
    without a colon are ignored."""
    out = []
    for line in text.splitlines():
        line = line.strip().lstrip("-*• ").strip()
        if ":" not in line:
            continue
        kind, _, ent = line.partition(":")
        kind = _TYPE_ALIASES.get(kind.strip().lower())
        ent = normalize_entity(ent)
        if kind and ent and ent != "none":
            out.append((kind, ent))
    return out


def ner_f1(predicted: list[list[tuple[str, str]]], gold: list[list[tuple[str, str]]]) -> dict:
    """Entity-level micro precision, recall and F1 over sentences: per sentence the true positives are the size of
    the multiset intersection of predicted and gold (type, normalised text) pairs; precision = TP / #predicted,
    recall = TP / #gold (0 when there are none), F1 their harmonic mean (0 when both are 0)."""
    tp = n_pred = n_gold = 0
    for p, g in zip(predicted, gold, strict=True):
        p = Counter((t, normalize_entity(x)) for t, x in p)
        g = Counter((t, normalize_entity(x)) for t, x in g)
        tp += sum((p & g).values())
        n_pred += sum(p.values())
        n_gold += sum(g.values())
    prec = tp / n_pred if n_pred else 0.0
    rec = tp / n_gold if n_gold else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {"ner_f1": f1, "precision": prec, "recall": rec, "tp": tp, "predicted": n_pred, "gold": n_gold}


# ----------------------------------------------------------------------------------------------------------------
# FinQA / ConvFinQA execution accuracy (czyssrs/FinQA code/evaluate/evaluate.py)


def str_to_num(text: str) -> float | None:
    """The official FinQA `str_to_num`: commas removed, then float(text); failing that, a text with '%' is the
    float without the '%' divided by 100, a 'const_N' is N ('const_m1' is -1); None where the official returns
    'n/a'."""
    text = str(text).replace(",", "")
    try:
        return float(text)
    except ValueError:
        pass
    if "%" in text:
        try:
            return float(text.replace("%", "")) / 100.0
        except ValueError:
            return None
    if "const" in text:
        text = text.replace("const_", "")
        try:
            return float("-1" if text == "m1" else text)
        except ValueError:
            return None
    return None


_NUM_RE = re.compile(r"[-+]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)\s*%?")


def parse_numeric_answer(text: str) -> float | str | None:
    """The answer in a generation: its first non-empty line (an 'Answer:' prefix dropped); 'yes' / 'no' when the
    line starts with one; else the whole line (without '$' and a final '.') read by `str_to_num`; else the first
    number in the line (a '%' right after it kept: '12.5%' -> 0.125); None when there is none."""
    line = next((x.strip() for x in str(text).splitlines() if x.strip()), "")
    line = re.sub(r"^answer\s*:\s*", "", line, flags=re.I).strip()
    word = re.match(r"(yes|no)\b", line, re.I)
    if word:
        return word.group(1).lower()
    whole = str_to_num(line.replace("$", "").strip().rstrip(".").strip())
    if whole is not None and math.isfinite(whole):
        return whole
    m = _NUM_RE.search(line)
    return str_to_num(m.group(0).replace(" ", "")) if m else None


def finqa_match(pred: float | str | None, gold) -> float:
    """1.0 when the prediction equals the gold answer as the official evaluator compares execution results: numbers
    rounded to 5 decimals (`round(x, 5)`, the evaluator's only tolerance) and then equal; 'yes' / 'no' answers
    equal as words. A string gold is read with `str_to_num` ('$' dropped), so '12.5%' is 0.125, as the official
    evaluator reads percent constants; a prediction of None (no number) is wrong."""
    if pred is None:
        return 0.0
    if isinstance(gold, str):
        g = gold.strip().lower()
        if g in ("yes", "no"):
            return float(pred == g)
        gold = str_to_num(g.replace("$", "").strip())
        if gold is None:
            return 0.0
    if isinstance(pred, str) or isinstance(gold, bool):
        return 0.0
    return float(round(float(pred), 5) == round(float(gold), 5))


# ----------------------------------------------------------------------------------------------------------------
# ROUGE (summarisation)

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def rouge_per_example(predictions: list[str], references: list[str], *, use_stemmer: bool = False) -> list[dict]:
    """{rouge1, rouge2, rougeL} F-measures of each (prediction, reference) pair by Google's `rouge-score`
    (`RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=...)`, its default tokenizer: lower-cased, non
    alphanumerics as spaces). use_stemmer defaults to False: FinBen/PIXIU's EDTSUM scores with Hugging Face
    `evaluate.load("rouge")`, whose default is use_stemmer=False."""
    try:
        from rouge_score import rouge_scorer
    except ImportError:
        raise ImportError("ROUGE tasks need rouge-score: pip install rouge-score==0.1.2") from None
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)
    out = []
    for pred, ref in zip(predictions, references, strict=True):
        sc = scorer.score(ref, pred)  # (target, prediction)
        out.append({k: float(sc[k].fmeasure) for k in ROUGE_TYPES})
    return out


# ----------------------------------------------------------------------------------------------------------------
# Data


def read_conll(path: str | Path) -> list[dict]:
    """Sentences of a CoNLL file (`token POS chunk NER` per line, blank lines between sentences, -DOCSTART-
    skipped): {"id": "<file>:<first line>", "tokens", "tags"}."""

    path = Path(path)
    if not path.is_file():
        raise TaskError(f"data file not found: {path} (set data_dir or $JAXFIN_SHARED_DATA)")
    out, toks, tags, start = [], [], [], 0
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines() + [""], 1):
        parts = line.split()
        if not parts or parts[0] == "-DOCSTART-":
            if toks:
                out.append({"id": f"{path.name}:{start}", "tokens": toks, "tags": tags})
            toks, tags = [], []
            continue
        if len(parts) < 2:
            raise TaskError(f"{path}:{n}: expected 'token ... NER-tag', got '{line}'")
        if not toks:
            start = n
        toks.append(parts[0])
        tags.append(parts[-1])
    return out


def read_tatqa(path: str | Path) -> list[dict]:
    """One record per question of a TAT-QA json file: {"id" (question uid), "table", "paragraphs", "question",
    "answer", "answer_type", "answer_from", "scale"}."""

    path = Path(path)
    if not path.is_file():
        raise TaskError(f"data file not found: {path} (set data_dir or $JAXFIN_SHARED_DATA)")
    try:
        contexts = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise TaskError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    out = []
    for c in contexts:
        paragraphs = [p["text"] for p in sorted(c["paragraphs"], key=lambda p: p["order"])]
        for q in sorted(c["questions"], key=lambda q: q["order"]):
            out.append({
                "id": q["uid"], "table": c["table"]["table"], "paragraphs": paragraphs, "question": q["question"],
                "answer": q["answer"], "answer_type": q["answer_type"], "answer_from": q.get("answer_from", ""),
                "scale": q["scale"],
            })  # fmt: skip
    return out


def read_jsonl_records(path: str | Path, fields: Mapping[str, str], canonical: tuple[str, ...]) -> list[dict]:
    """Records of a JSONL file (or a JSON list): each row with the canonical fields added from their columns
    (`fields`: canonical name -> column) and an "id" (the row's `id`, else file:line). A row in the official FinQA
    layout (a `qa` object, `pre_text`, `table`, `post_text`) gives question = qa.question, answer = qa.exe_ans and
    context = the pre-text, the table rows (cells joined by ' | ') and the post-text, unless mapped otherwise; in
    the official ConvFinQA layout (`annotation.dialogue_break`, `annotation.exe_ans_list`) the question is the
    earlier turns with their gold answers ('Q: ...\\nA: ...') then the last turn, and the answer the last turn's."""
    path = Path(path)
    rows = read_rows(path, "json" if path.suffix == ".json" else "jsonl")
    out = []
    for i, row in rows:
        where = f"{path}:{i}"
        if not isinstance(row, dict):
            raise TaskError(f"{where}: a record must be an object")
        row = dict(row)
        ann = row.get("annotation")
        if isinstance(ann, dict) and ann.get("dialogue_break") and ann.get("exe_ans_list"):  # official ConvFinQA
            turns, answers = ann["dialogue_break"], ann["exe_ans_list"]
            history = "".join(f"Q: {q}\nA: {a}\n" for q, a in zip(turns[:-1], answers[:-1]))
            row.setdefault("question", history + f"Q: {turns[-1]}")
            row.setdefault("answer", answers[-1])
        if isinstance(row.get("qa"), dict):  # the official FinQA layout
            row.setdefault("question", row["qa"].get("question", ""))
            row.setdefault("answer", row["qa"].get("exe_ans", row["qa"].get("answer")))
        if isinstance(row.get("qa"), dict) or isinstance(ann, dict):  # FinQA / ConvFinQA: report text and table
            table = "\n".join(" | ".join(str(c) for c in r) for r in row.get("table") or [])
            row.setdefault("context", "\n".join(
                x for x in (" ".join(row.get("pre_text") or []), table, " ".join(row.get("post_text") or [])) if x
            ))  # fmt: skip
        ex = {k: v for k, v in row.items()}
        for name in canonical:
            col = fields.get(name, name)
            if col not in row:
                raise TaskError(f"{where}: column '{col}' (fields.{name}) not in the record ({', '.join(row)})")
            ex[name] = row[col]
        ex["id"] = str(row.get("id", where))
        out.append(ex)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Prompts


NER_INSTRUCTION = (
    "List the named entities in the sentence, one per line as 'type: entity', where type is person, organization "
    "or location (miscellaneous for anything else). Write 'none' if there are none."
)
TATQA_INSTRUCTION = (
    "Answer the question using the table and the text from a financial report. Reply on one line with the answer "
    "only (separate several answers with '; '), followed by its scale if it has one: thousand, million, billion "
    "or percent."
)


def ner_prompt(ex: dict) -> str:
    return f"Sentence: {' '.join(ex['tokens'])}\nEntities:\n"


def ner_answer(ex: dict) -> str:
    ents = conll_entities(ex["tokens"], ex["tags"])
    return "\n".join(f"{t}: {x}" for t, x in ents) if ents else "none"


def tatqa_prompt(ex: dict) -> str:
    table = "\n".join(" | ".join(cell.strip() for cell in row) for row in ex["table"])
    paragraphs = "\n".join(ex["paragraphs"])
    return f"Table:\n{table}\n\nText:\n{paragraphs}\n\nQuestion: {ex['question']}\nAnswer:"


def tatqa_answer(ex: dict) -> str:
    ans = ex["answer"]
    spans = [str(a) for a in ans] if isinstance(ans, list) else [str(ans)]
    return " " + "; ".join(spans) + (f" {ex['scale']}" if ex["scale"] else "")


NUMERIC_INSTRUCTION = (
    "Answer the question using the financial report (text and table). Reply with the numeric answer only (or yes "
    "or no)."
)
SUMMARY_INSTRUCTION = "Summarize the text."


def _jsonl_spec(task: dict, default_prompt: str, canonical: tuple[str, ...]):
    """(read, prompt_fn, answer_fn) for a task over a JSONL (or JSON list) file: `fields` maps the canonical names
    (`canonical`, e.g. text and answer) to the file's columns (default: the same name); `prompt` is a str.format
    template over the mapped fields and the row's columns."""
    fields = {k: k for k in canonical} | dict(task.get("fields") or {})
    template = task.get("prompt") or default_prompt

    def read(path):
        return read_jsonl_records(path, fields, canonical)

    def prompt_fn(ex):
        try:
            return template.format_map(ex)
        except KeyError as e:
            raise TaskError(f"{ex['id']}: key 'prompt': field {e} not in the example ({', '.join(ex)})") from None

    return read, prompt_fn, lambda ex: " " + str(ex["answer"])


def _spec(task: dict):
    """(read, instruction, prompt_fn, answer_fn, default stop, default max_new_tokens) of the task's metric."""
    metric = task["metric"]
    if metric == "ner_f1":
        return read_conll, NER_INSTRUCTION, ner_prompt, ner_answer, ["\n\n"], 64
    if metric == "tatqa":
        return read_tatqa, TATQA_INSTRUCTION, tatqa_prompt, tatqa_answer, ["\n"], 32
    if metric == "rouge":
        read, prompt_fn, answer_fn = _jsonl_spec(task, "Text: {text}\nSummary:", ("text", "answer"))
        return read, SUMMARY_INSTRUCTION, prompt_fn, answer_fn, ["\n\n"], 64
    read, prompt_fn, answer_fn = _jsonl_spec(
        task, "{context}\n\nQuestion: {question}\nAnswer:", ("question", "context", "answer")
    )
    return read, NUMERIC_INSTRUCTION, prompt_fn, answer_fn, ["\n"], 16


METRICS = ("ner_f1", "tatqa", "rouge", "finqa")
KEYS = {
    "name", "type", "metric", "data_dir", "data", "few_shot", "few_shot_split", "seed", "max_new_tokens", "stop",
    "chat_template", "max_length", "limit", "description", "fields", "prompt", "use_stemmer", "_where",
}  # fmt: skip


def _data_path(task: dict, data) -> Path:

    if not isinstance(data, Mapping) or "path" not in data:
        raise TaskError(f"task '{task.get('name')}': key 'data' must be a mapping with a 'path'")
    root = Path(task.get("data_dir") or default_data_dir())
    path = Path(data["path"])
    return path if path.is_absolute() else root / path


def _check(task: dict) -> None:

    where = task.get("_where", f"task '{task.get('name', '?')}'")
    unknown = set(task) - KEYS
    if unknown:
        raise TaskError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(KEYS))})")
    if task.get("metric") not in METRICS:
        raise TaskError(f"{where}: key 'metric' must be one of {', '.join(METRICS)}; got {task.get('metric')!r}")
    if "data" not in task:
        raise TaskError(f"{where}: key 'data' is required")
    if task.get("fields") is not None and not isinstance(task["fields"], Mapping):
        raise TaskError(f"{where}: key 'fields' must be a mapping name -> column")
    if task.get("prompt") is not None and not isinstance(task["prompt"], str):
        raise TaskError(f"{where}: key 'prompt' must be a string template")


# ----------------------------------------------------------------------------------------------------------------
# Runner


def generate_answers(model, tokenizer, texts: list[str], *, max_new_tokens: int, stop: list[str], seed: int = 0,
                     batch_size: int = 8, chat_template: str | None = None, max_length: int | None = None,
                     add_bos: bool = True):  # fmt: skip
    """Greedy generations for prompt strings -> (generations, truncated flags). Without a chat template a prompt is
    [BOS] + its tokens, cut on the left (after BOS) to `max_length` (default: the model's context) minus
    `max_new_tokens`; prompts are generated sorted by length (similar lengths share a bucket)."""
    budget = int(max_length or model.config.max_position_embeddings) - max_new_tokens
    bos = [tokenizer.bos_id] if add_bos and tokenizer.bos_id is not None else []
    prompts, truncated = [], []
    for text in texts:
        if chat_template:  # a chat turn: rendered by generate; no truncation
            prompts.append(text)
            truncated.append(False)
            continue
        ids = tokenizer.encode(text)
        cut = len(bos) + len(ids) > budget
        prompts.append(bos + (ids[len(ids) - (budget - len(bos)) :] if cut else ids))
        truncated.append(cut)
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, stop=list(stop), seed=seed)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    gens = [None] * len(prompts)
    for i, g in zip(order, generate_full(model, tokenizer, [prompts[i] for i in order], cfg, batch_size=batch_size,
                                         chat_template=chat_template)):  # fmt: skip
        gens[i] = g
    return gens, truncated


def run_generative_task(model, tokenizer, task: Mapping, *, batch_size: int = 8, limit: int | None = None) -> dict:
    """Generate an answer for each example of a `type: generative` task (greedy), parse it and score it; see the
    module docstring. Examples: {"id", "prompt_tokens", "truncated", "generation", "prediction", "gold", and the
    per-example scores}."""
    task = dict(task)
    _check(task)
    metric = task["metric"]
    read, instruction, prompt_fn, answer_fn, stop, max_new = _spec(task)
    exs = read(_data_path(task, task["data"]))
    n = limit if limit is not None else task.get("limit")
    evaluated = exs[:n] if n is not None else exs

    k = int(task.get("few_shot") or 0)
    shots = ""
    if k:
        split = task.get("few_shot_split")
        pool = read(_data_path(task, split)) if split else exs[len(evaluated) :] or exs
        if metric == "ner_f1":  # examples with entities show the format best
            pool = [e for e in pool if any(t != "O" for t in e["tags"])] or pool
        rng = random.Random(int(task.get("seed", 1234)))
        chosen = rng.sample(pool, min(k, len(pool)))
        shots = "".join(prompt_fn(e) + answer_fn(e) + "\n\n" for e in chosen)
    head = (task.get("description") or instruction) + "\n\n" + shots

    max_new = int(task.get("max_new_tokens") or max_new)
    gens, truncated = generate_answers(
        model, tokenizer, [head + prompt_fn(ex) for ex in evaluated], max_new_tokens=max_new,
        stop=list(task.get("stop", stop)), seed=int(task.get("seed", 0)), batch_size=batch_size,
        chat_template=task.get("chat_template"), max_length=task.get("max_length"),
    )  # fmt: skip

    records = []
    if metric == "ner_f1":
        preds = [parse_entities(g.text) for g in gens]
        golds = [conll_entities(e["tokens"], e["tags"]) for e in evaluated]
        metrics = ner_f1(preds, golds)
        for ex, g, p, gold, cut in zip(evaluated, gens, preds, golds, truncated):
            m = ner_f1([p], [gold])
            records.append({"id": ex["id"], "prompt_tokens": len(g.prompt_tokens), "truncated": cut,
                            "generation": g.text, "prediction": [list(x) for x in p],
                            "gold": [list(x) for x in gold], "tp": m["tp"]})  # fmt: skip
    elif metric == "tatqa":
        ems, f1s = [], []
        for ex, g, cut in zip(evaluated, gens, truncated):
            spans, scale = parse_tatqa_answer(g.text)
            em, f1 = tatqa_em_f1(spans, scale, ex)
            ems.append(em)
            f1s.append(f1)
            records.append({"id": ex["id"], "prompt_tokens": len(g.prompt_tokens), "truncated": cut,
                            "generation": g.text, "prediction": spans, "pred_scale": scale, "gold": ex["answer"],
                            "gold_scale": ex["scale"], "answer_type": ex["answer_type"],
                            "em": em, "f1": f1})  # fmt: skip
        metrics = {"exact_match": float(np.mean(ems)) if ems else 0.0, "f1": float(np.mean(f1s)) if f1s else 0.0}
    elif metric == "rouge":
        per = rouge_per_example([g.text for g in gens], [str(e["answer"]) for e in evaluated],
                                use_stemmer=bool(task.get("use_stemmer", False)))  # fmt: skip
        metrics = {k: float(np.mean([r[k] for r in per])) if per else 0.0 for k in ROUGE_TYPES}
        for ex, g, r, cut in zip(evaluated, gens, per, truncated):
            records.append({"id": ex["id"], "prompt_tokens": len(g.prompt_tokens), "truncated": cut,
                            "generation": g.text, "gold": ex["answer"], **r})  # fmt: skip
    else:  # finqa
        hits = []
        for ex, g, cut in zip(evaluated, gens, truncated):
            pred = parse_numeric_answer(g.text)
            ok = finqa_match(pred, ex["answer"])
            hits.append(ok)
            records.append({"id": ex["id"], "prompt_tokens": len(g.prompt_tokens), "truncated": cut,
                            "generation": g.text, "prediction": pred, "gold": ex["answer"],
                            "correct": ok})  # fmt: skip
        metrics = {
            "exe_acc": float(np.mean(hits)) if hits else 0.0,
            "unparsed": float(np.mean([r["prediction"] is None for r in records])) if records else 0.0,
        }
    metrics["truncated"] = int(sum(truncated))
    return {"task": task.get("name", metric), "protocol": "generative", "metrics": metrics, "n": len(records),
            "examples": records}  # fmt: skip


__all__ = [
    "run_generative_task", "generate_answers", "tatqa_em_f1", "parse_tatqa_answer", "answer_string",
    "normalize_answer", "to_number", "is_number", "scale_to_num", "em_f1", "ner_f1", "parse_entities",
    "conll_entities", "normalize_entity", "read_conll", "read_tatqa", "read_jsonl_records", "rouge_per_example",
    "str_to_num", "parse_numeric_answer", "finqa_match",
]  # fmt: skip
