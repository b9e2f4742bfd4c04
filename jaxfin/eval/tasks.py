"""Finance tasks scored by log-likelihood (lm-evaluation-harness conventions) or by generation (FinBen
conventions), and the task dispatcher.

`run_task(model, tokenizer, task, batch_size=8, limit=None)` evaluates one task and returns
`{"task": name, "protocol": "loglik" | "generative", "metrics": {...}, "n": count, "examples": [...],
"per_class": {...}}`.
`task` is a YAML path, a built-in name (`fpb`, `fiqa_sa`, `fomc`, or any other `configs/eval/tasks/NAME.yaml`) or a
dict. A name or path followed by `/generative` (`fpb/generative`) runs a multiple-choice task by the generative
protocol, and its result is named `NAME/generative`; `/loglik` (`fpb/loglik`) forces the log-likelihood one
(the default). Listing both `fpb` and `fpb/generative` in an eval config gives both numbers, each labelled.
`type: generative` tasks go to `jaxfin.eval.gen_tasks.run_generative_task` (same arguments, same result shape; the
task dict is passed as loaded, with `_where` = its file for error messages);
`type: multiple_choice` (the default) are scored here.

Task YAML (multiple_choice)::

    name: fpb                          # required
    type: multiple_choice              # default
    data_dir: null                     # default: $JAXFIN_SHARED_DATA, else <repo>/../shared/data
    data:                              # required
      path: financial_phrasebank/gtfintechlab_allagree_test_seed5768.csv   # relative to data_dir (or absolute)
      format: csv                      # csv | jsonl (default: from the suffix)
      fields:                          # optional: template field -> source column, or {field, regex}
        text: sentence
        source: {field: context, regex: 'sentiment of this (\\w+)\\?'}   # group 1 of a re.search (DOTALL)
    description: ""                    # text put before everything (few-shot examples included)
    prompt: "Text: {text}\\nAnswer:"   # required; Python str.format over the example's fields ({{ }} = a brace)
    choices: [negative, neutral, positive]   # required: a list of strings, or the name of a list-valued field
    answer: label_text                 # required: the field holding the gold (a choice string or a 0-based index)
    label_map: {0: positive}           # optional: raw answer value -> choice string (or index)
    target_delimiter: " "              # between the prompt and the choice
    fewshot_delimiter: "\\n\\n"        # between few-shot examples and before the evaluated prompt
    few_shot: 0                        # number of solved examples put before each prompt
    few_shot_split: null               # null = the same file minus the evaluated example; or a data mapping
    seed: 1234                         # few-shot sampling seed
    limit: null                        # evaluate the first N examples only (run_task's `limit` wins)
    add_bos: true                      # put the tokenizer's BOS first (Llama models are trained with it)
    max_length: null                   # tokens per request (default: the model's max_position_embeddings)
    protocol: loglik                   # loglik | generative (a `/generative` suffix on the name sets it)
    max_new_tokens: 10                 # generative protocol: tokens generated per example at most
    stop: ["\\n"]                      # generative protocol: the generation is cut before the first stop string
    chat_template: null                # generative protocol: null = plain prompt after BOS; tokenizer | llama3 |
                                       # chatml = the context as one user turn

Scoring. For each example the context is
`description + shot_1 + fewshot_delimiter + ... + shot_k + fewshot_delimiter + prompt`, where a shot is
`prompt + target_delimiter + gold choice`; each choice's continuation is `target_delimiter + choice`. Tokenisation
follows the harness's `_encode_pair`: trailing whitespace of the context moves to the continuation, the
whole string `context + continuation` is encoded once, the first `len(encode(context))` tokens are the context and
the rest the continuation (whole-then-split; if the split leaves no continuation token, the two parts are encoded
separately). With `add_bos` the BOS id is put first (without it, an empty context becomes [BOS or EOS], as the
harness's prefix token). A request longer than `max_length + 1` tokens loses tokens on
the left, as in the harness. A choice's log-likelihood is the sum over its continuation tokens of
log p(token | everything before it); `is_greedy` says whether all of those tokens are the argmax.
Metrics: see `jaxfin.eval.metrics` (acc, acc_norm by characters of the choice, macro and weighted F1 of the acc
prediction).

Generative protocol (FinBen / PIXIU: The-FinAI/PIXIU `src/tasks/flare.py`, class `Classification`). The same
context as above (few-shot shots included) is the prompt, [BOS] first with `add_bos`; it is generated greedily by
`jaxfin.eval.gen_tasks.generate_answers` (left-truncated to `max_length` minus `max_new_tokens`). The prediction is
the first choice, in the order of `choices`, whose lower-cased string occurs in the stripped, lower-cased
generation; none = missing. Metrics (`jaxfin.eval.metrics.generative_classification_metrics`): acc (missing =
wrong), missing (their share), f1_weighted and f1_macro (scikit-learn over the gold classes only, as PIXIU does:
a missing prediction costs its gold class recall), mcc (missing mapped to a class of its own, -1), and truncated
(prompts cut on the left).

Few-shot examples are drawn per evaluated example with `random.Random(f"{seed}:{index}")` (deterministic, and
independent of `limit` and of the batch size) from the few-shot pool: the same file without the evaluated row, or
`few_shot_split`; a pool row whose rendered prompt equals the evaluated example's prompt is never used.

Batching: every (example, choice) request is one segment of a packed row (segment ids and per-segment positions,
so attention never crosses requests); rows have one length per task (a power of two >= the longest request, at
least 32), `batch_size` rows go through one jitted forward, and the last batch is padded with empty rows, so a task
compiles once.

Data notes: FPB `label` ints are 0=positive 1=negative 2=neutral (gtfintechlab), so fpb.yaml uses `label_text`;
FiQA-SA targets are FinGPT's 3-class binning of the score (< -0.1 negative, [-0.1, 0.1) neutral, >= 0.1
positive) already applied in the file; FOMC `label` ints are 0=dovish 1=hawkish 2=neutral.
"""

from __future__ import annotations

import json
import random
import re
import string
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from jaxfin.eval.gen_tasks import generate_answers, run_generative_task
from jaxfin.eval.metrics import (
    MISSING,
    argmax_first,
    first_label_match,
    generative_classification_metrics,
    multiple_choice_metrics,
    per_class_f1,
)
from jaxfin.eval.task_base import REPO, TaskError, default_data_dir, read_rows

BUILTIN_DIR = REPO / "configs" / "eval" / "tasks"
BUILTIN = ("fpb", "fiqa_sa", "fomc")

KEYS = {
    "name", "type", "data_dir", "data", "description", "prompt", "choices", "answer", "label_map",
    "target_delimiter", "fewshot_delimiter", "few_shot", "few_shot_split", "seed", "limit", "add_bos", "max_length",
    "protocol", "max_new_tokens", "stop", "chat_template",
}  # fmt: skip
PROTOCOLS = ("loglik", "generative")
DATA_KEYS = {"path", "format", "fields"}


# ----------------------------------------------------------------------------------------------------------------
# Task definition


def load_task(task: str | Path | Mapping) -> dict:
    """A task dict from a YAML path, a built-in name or a dict (copied). Only reads; validation is separate."""
    import yaml

    if isinstance(task, Mapping):
        d = dict(task)
        d.setdefault("_where", f"task '{d.get('name', '?')}'")
        return d
    text = str(task)
    path = Path(text)
    for protocol in PROTOCOLS:
        suffix = f"/{protocol}"
        if text.endswith(suffix) and not path.exists() and len(text) > len(suffix):
            d = load_task(text[: -len(suffix)])
            if d.get("type", "multiple_choice") == "multiple_choice":
                d["protocol"] = protocol
                if protocol == "generative":
                    d["name"] = f"{d.get('name', text[: -len(suffix)])}{suffix}"
            elif protocol != "generative":
                raise TaskError(f"{d['_where']}: a generative task has no '{protocol}' protocol")
            return d
    if text in BUILTIN or (not path.exists() and (BUILTIN_DIR / f"{text}.yaml").is_file()):
        path = BUILTIN_DIR / f"{text}.yaml"  # a built-in name
    if not path.is_file():
        names = ", ".join(sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))) or ", ".join(BUILTIN)
        raise TaskError(f"no task '{text}': not a YAML file and not a built-in task ({names})")
    try:
        d = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise TaskError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(d, dict):
        raise TaskError(f"{path}: a task file must be a mapping of keys (name, data, prompt, choices, answer, ...)")
    d["_where"] = str(path)
    return d


def validate_task(d: dict) -> dict:
    """A complete multiple-choice task dict (defaults filled), or TaskError naming the bad key."""
    where = d.get("_where", "task")

    def bad(key, msg):
        raise TaskError(f"{where}: key '{key}': {msg}")

    unknown = set(d) - KEYS - {"_where"}
    if unknown:
        k = sorted(unknown)[0]
        bad(k, f"unknown key (known keys: {', '.join(sorted(KEYS))})")
    for key in ("name", "data", "prompt", "choices", "answer"):
        if key not in d or d[key] is None:
            bad(key, "missing (required)")
    t = dict(
        type="multiple_choice", data_dir=None, description="", label_map=None, target_delimiter=" ",
        fewshot_delimiter="\n\n", few_shot=0, few_shot_split=None, seed=1234, limit=None, add_bos=True,
        max_length=None, protocol="loglik", max_new_tokens=10, stop=["\n"], chat_template=None,
    )  # fmt: skip
    t.update({k: v for k, v in d.items() if v is not None or k not in t})
    t["_where"] = where
    if not isinstance(t["name"], str) or not t["name"]:
        bad("name", "must be a non-empty string")
    if t["type"] != "multiple_choice":
        bad("type", f"'{t['type']}' is not handled here (multiple_choice or generative)")
    t["data"] = _validate_data(t["data"], "data", where)
    if t["few_shot_split"] is not None:
        t["few_shot_split"] = _validate_data(t["few_shot_split"], "few_shot_split", where)
    for key in ("prompt", "description", "target_delimiter", "fewshot_delimiter"):
        if not isinstance(t[key], str):
            bad(key, f"must be a string, got {type(t[key]).__name__}")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(t["prompt"]) if f is not None]
    except ValueError as e:
        bad("prompt", f"not a valid template: {e}")
    if any(f == "" or f.isdigit() for f in fields):
        bad("prompt", "use named fields like {text}, not {} or {0} (write {{ }} for a literal brace)")
    c = t["choices"]
    if isinstance(c, list):
        if len(c) < 2 or not all(isinstance(x, str) for x in c):
            bad("choices", "must be a list of at least two strings, or the name of a list-valued field")
        if len(set(c)) != len(c):
            bad("choices", "has duplicates")
    elif not isinstance(c, str):
        bad("choices", "must be a list of strings or a field name")
    if not isinstance(t["answer"], str):
        bad("answer", "must be the name of the field holding the gold label or index")
    if t["label_map"] is not None and not isinstance(t["label_map"], dict):
        bad("label_map", "must be a mapping raw answer -> choice")
    for key in ("few_shot", "seed"):
        if not isinstance(t[key], int) or isinstance(t[key], bool) or t[key] < 0:
            bad(key, f"must be a non-negative integer, got {t[key]!r}")
    for key in ("limit", "max_length"):
        if t[key] is not None and (not isinstance(t[key], int) or isinstance(t[key], bool) or t[key] < 1):
            bad(key, f"must be a positive integer or null, got {t[key]!r}")
    if not isinstance(t["add_bos"], bool):
        bad("add_bos", "must be true or false")
    if t["protocol"] not in PROTOCOLS:
        bad("protocol", f"must be one of {', '.join(PROTOCOLS)}, got {t['protocol']!r}")
    mnt = t["max_new_tokens"]
    if not isinstance(mnt, int) or isinstance(mnt, bool) or mnt < 1:
        bad("max_new_tokens", f"must be a positive integer, got {mnt!r}")
    if isinstance(t["stop"], str):
        t["stop"] = [t["stop"]]
    if not isinstance(t["stop"], list) or not all(isinstance(x, str) and x for x in t["stop"]):
        bad("stop", "must be a list of non-empty strings")
    if t["chat_template"] is not None and t["chat_template"] not in ("tokenizer", "llama3", "chatml"):
        bad("chat_template", f"must be null, tokenizer, llama3 or chatml, got {t['chat_template']!r}")
    if t["data_dir"] is not None and not isinstance(t["data_dir"], str):
        bad("data_dir", "must be a path string")
    return t


def _validate_data(v, key: str, where: str) -> dict:
    if isinstance(v, str):
        v = {"path": v}
    if not isinstance(v, dict):
        raise TaskError(f"{where}: key '{key}': must be a mapping with 'path' (and 'format', 'fields')")
    unknown = set(v) - DATA_KEYS
    if unknown:
        raise TaskError(f"{where}: key '{key}.{sorted(unknown)[0]}': unknown (known: path, format, fields)")
    if not isinstance(v.get("path"), str) or not v["path"]:
        raise TaskError(f"{where}: key '{key}.path': missing (the data file, relative to data_dir)")
    fmt = v.get("format") or {".csv": "csv", ".jsonl": "jsonl"}.get(Path(v["path"]).suffix)
    if fmt not in ("csv", "jsonl"):
        raise TaskError(f"{where}: key '{key}.format': must be csv or jsonl, got {fmt!r}")
    fields = v.get("fields") or {}
    if not isinstance(fields, dict):
        raise TaskError(f"{where}: key '{key}.fields': must be a mapping field -> column (or {{field, regex}})")
    for name, spec in fields.items():
        if isinstance(spec, dict):
            if set(spec) - {"field", "regex"} or not isinstance(spec.get("field"), str):
                raise TaskError(f"{where}: key '{key}.fields.{name}': expected {{field: COLUMN, regex: PATTERN}}")
            if "regex" in spec:
                try:
                    if re.compile(spec["regex"], re.DOTALL).groups < 1:
                        raise TaskError(f"{where}: key '{key}.fields.{name}.regex': needs one capture group")
                except re.error as e:
                    raise TaskError(f"{where}: key '{key}.fields.{name}.regex': {e}") from None
        elif not isinstance(spec, str):
            raise TaskError(f"{where}: key '{key}.fields.{name}': must be a column name or {{field, regex}}")
    return {"path": v["path"], "format": fmt, "fields": fields}


# ----------------------------------------------------------------------------------------------------------------
# Data


def _read_rows(path: Path, fmt: str) -> list[tuple[int, dict]]:
    """[(line number, row)]; a malformed line raises TaskError with file:line."""
    rows = read_rows(path, fmt)
    for i, row in rows:
        if not isinstance(row, dict):
            raise TaskError(f"{path}:{i}: a JSONL line must be an object")
    return rows


def _examples(task: dict, data: dict) -> list[dict]:
    """Rows with the mapped fields added; each has `_where` (file:line)."""
    root = Path(task["data_dir"]) if task["data_dir"] else default_data_dir()
    path = Path(data["path"]) if Path(data["path"]).is_absolute() else root / data["path"]
    out = []
    for line, row in _read_rows(path, data["format"]):
        ex = dict(row)
        where = f"{path}:{line}"
        for name, spec in data["fields"].items():
            col, rx = (spec, None) if isinstance(spec, str) else (spec["field"], spec.get("regex"))
            if col not in row:
                raise TaskError(f"{where}: column '{col}' (data.fields.{name}) not in the row ({', '.join(row)})")
            val = row[col]
            if rx is not None:
                m = re.search(rx, str(val), re.DOTALL)
                if not m:
                    raise TaskError(f"{where}: data.fields.{name}.regex {rx!r} does not match column '{col}'")
                val = m.group(1)
            ex[name] = val
        ex["_where"] = where
        out.append(ex)
    return out


def _render(task: dict, ex: dict) -> str:
    try:
        return task["prompt"].format_map(ex)
    except KeyError as e:
        fields = ", ".join(k for k in ex if not k.startswith("_"))
        raise TaskError(f"{ex['_where']}: key 'prompt': field {e} not in the example (fields: {fields})") from None


def _choices(task: dict, ex: dict) -> list[str]:
    c = task["choices"]
    if isinstance(c, list):
        return c
    v = ex.get(c)
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except json.JSONDecodeError:
            v = None
    if not isinstance(v, list) or len(v) < 2:
        raise TaskError(f"{ex['_where']}: key 'choices': field '{c}' is not a list of at least two choices")
    return [str(x) for x in v]


def _gold(task: dict, ex: dict, choices: list[str]) -> int:
    key = task["answer"]
    if key not in ex:
        raise TaskError(f"{ex['_where']}: key 'answer': field '{key}' not in the example")
    v = ex[key]
    lm = task["label_map"]
    if lm is not None:
        hit = [t for k, t in lm.items() if k == v or str(k) == str(v).strip()]
        if not hit:
            raise TaskError(f"{ex['_where']}: key 'label_map': no entry for answer {v!r}")
        v = hit[0]
    if isinstance(v, str) and v in choices:
        return choices.index(v)
    if isinstance(v, str) and v.strip() in choices:
        return choices.index(v.strip())
    if isinstance(v, int) and not isinstance(v, bool) or isinstance(v, str) and v.strip().isdigit():
        i = int(v)
        if 0 <= i < len(choices):
            return i
        raise TaskError(f"{ex['_where']}: key 'answer': index {i} out of range for {len(choices)} choices")
    raise TaskError(f"{ex['_where']}: key 'answer': {v!r} is neither one of the choices {choices} nor an index")


def _shots(task: dict, index: int, prompt: str, pool: list[dict], same_file: bool) -> list[int]:
    """Indices into `pool` of the few-shot examples for evaluated example `index` (deterministic by seed)."""
    k = task["few_shot"]
    if k == 0:
        return []
    cands = [j for j in range(len(pool)) if not (same_file and j == index) and pool[j]["_prompt"] != prompt]
    if len(cands) < k:
        raise TaskError(f"{task['_where']}: key 'few_shot': {k} shots asked, the pool has only {len(cands)}")
    return random.Random(f"{task['seed']}:{index}").sample(cands, k)


# ----------------------------------------------------------------------------------------------------------------
# Tokenisation and scoring


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-evaluation-harness `_encode_pair`: whole-then-split, trailing context whitespace moved to the
    continuation."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tokenizer.encode(context + continuation)
    ctx = tokenizer.encode(context)
    cont = whole[len(ctx) :]
    if not cont:  # the context's tokens swallowed the continuation: encode the parts separately
        return ctx, tokenizer.encode(continuation)
    return whole[: len(ctx)], cont


def _bucket(n: int, cap: int) -> int:
    b = 32
    while b < n:
        b *= 2
    return min(b, max(cap, n))


_FNS: dict[str, object] = {}
LOGIT_CHUNK = 128  # positions per LM-head chunk


def _scorer(cfg):
    """jitted (params, tokens, segment_ids, positions, targets) -> (target log-prob, target is argmax), [B, L].

    The same computation as `jaxfin.model.forward` (final hidden states times the LM head, float32 logits), but
    the [B, L, V] logits are made LOGIT_CHUNK positions at a time, so a 128K vocabulary never needs them whole."""
    key = repr(cfg)
    if key not in _FNS:
        import jax
        import jax.numpy as jnp

        from jaxfin.model import hidden_states, output_kernel
        from jaxfin.model.llama import matmul

        def score(params, tokens, segment_ids, positions, targets):
            h = hidden_states(params, cfg, tokens, segment_ids, positions)  # [B, L, D]
            w = output_kernel(params, cfg).astype(h.dtype)
            b, s, d = h.shape
            c = LOGIT_CHUNK if s % LOGIT_CHUNK == 0 else s

            def chunk(xs):
                hc, tc = xs  # [B, c, D], [B, c]
                logits = matmul(hc, w).astype(jnp.float32)
                logp = jax.nn.log_softmax(logits, axis=-1)
                return jnp.take_along_axis(logp, tc[..., None], axis=-1)[..., 0], jnp.argmax(logits, -1) == tc

            hs = h.reshape(b, s // c, c, d).swapaxes(0, 1)
            ts = targets.reshape(b, s // c, c).swapaxes(0, 1)
            lp, greedy = jax.lax.map(chunk, (hs, ts))
            return lp.swapaxes(0, 1).reshape(b, s), greedy.swapaxes(0, 1).reshape(b, s)

        _FNS[key] = jax.jit(score)
    return _FNS[key]


def _pack(lengths: list[int], row_len: int) -> list[list[int]]:
    """First-fit decreasing: rows of request indices whose lengths sum to <= row_len."""
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, f in enumerate(free):
            if f >= lengths[i]:
                rows[r].append(i)
                free[r] -= lengths[i]
                break
        else:
            rows.append([i])
            free.append(row_len - lengths[i])
    return rows


def score_requests(model, requests: list[tuple[list[int], list[int]]], *, batch_size: int = 8, max_length: int):
    """[(context ids, continuation ids)] -> [(summed log-likelihood, all tokens greedy)], one forward per
    `batch_size` packed rows."""
    from jaxfin.eval.generate import device_params
    from jaxfin.eval.sharding import on_mesh, padded_rows, params_mesh, put_rows

    params = device_params(model.params)
    mesh = params_mesh(params)  # on a mesh: rows split over its batch axes, padded to a multiple of them
    n_rows = padded_rows(mesh, batch_size)
    seqs, n_conts = [], []
    for ctx, cont in requests:
        full = (ctx + cont)[-(max_length + 1) :]
        seqs.append(full)
        n_conts.append(min(len(cont), len(full) - 1))
    lengths = [len(s) - 1 for s in seqs]  # model inputs: all but the last token
    row_len = _bucket(max(lengths), max_length)
    rows = _pack(lengths, row_len)
    fn = _scorer(model.config)
    pending = []  # dispatch every batch before reading any result back: the host packs while the device computes
    for b0 in range(0, len(rows), batch_size):
        chunk = rows[b0 : b0 + batch_size]
        tok = np.zeros((n_rows, row_len), np.int32)
        seg = np.zeros((n_rows, row_len), np.int32)
        pos = np.zeros((n_rows, row_len), np.int32)
        tgt = np.zeros((n_rows, row_len), np.int32)
        spans = []
        for r, row in enumerate(chunk):
            o = 0
            for s, i in enumerate(row, 1):
                n = lengths[i]
                tok[r, o : o + n] = seqs[i][:-1]
                tgt[r, o : o + n] = seqs[i][1:]
                seg[r, o : o + n] = s
                pos[r, o : o + n] = np.arange(n)
                spans.append((i, r, o + n - n_conts[i], o + n))
                o += n
        with on_mesh(mesh):
            pending.append((fn(params, *(put_rows(mesh, a) for a in (tok, seg, pos, tgt))), spans))
    out: list[tuple[float, bool]] = [(0.0, True)] * len(requests)
    for (lp, greedy), spans in pending:
        lp, greedy = np.asarray(lp, np.float64), np.asarray(greedy)
        for i, r, a, b in spans:
            out[i] = (float(lp[r, a:b].sum()), bool(greedy[r, a:b].all()))
    return out


# ----------------------------------------------------------------------------------------------------------------
# Entry points


def run_task(model, tokenizer, task: str | Path | Mapping, *, batch_size: int = 8, limit: int | None = None) -> dict:
    """Evaluate one task; see the module docstring for the task format and the result."""
    d = load_task(task)
    if d.get("type", "multiple_choice") == "generative":
        d.pop("protocol", None)  # `ner/generative`: generative already
        return run_generative_task(model, tokenizer, d, batch_size=batch_size, limit=limit)
    t = validate_task(d)
    if t["protocol"] == "generative":
        return run_multiple_choice_generative(model, tokenizer, t, batch_size=batch_size, limit=limit)
    return run_multiple_choice(model, tokenizer, t, batch_size=batch_size, limit=limit)


def build_contexts(task: dict, limit: int | None = None) -> list[dict]:
    """The evaluated examples with their context (description, few-shot shots, prompt), choices, gold and few-shot
    indices."""
    exs = _examples(task, task["data"])
    for ex in exs:
        ex["_prompt"] = _render(task, ex)
    same = task["few_shot_split"] is None
    pool = exs if same else _examples(task, task["few_shot_split"])
    if not same:
        for ex in pool:
            ex["_prompt"] = _render(task, ex)
    n = limit if limit is not None else task["limit"]
    evaluated = exs[:n] if n is not None else exs
    items = []
    for i, ex in enumerate(evaluated):
        choices = _choices(task, ex)
        gold = _gold(task, ex, choices)
        shot_ids = _shots(task, i, ex["_prompt"], pool, same)
        parts = []
        for j in shot_ids:
            sc = _choices(task, pool[j])
            parts.append(pool[j]["_prompt"] + task["target_delimiter"] + sc[_gold(task, pool[j], sc)])
        context = task["description"] + "".join(p + task["fewshot_delimiter"] for p in parts) + ex["_prompt"]
        items.append(
            {"index": i, "where": ex["_where"], "context": context, "choices": choices, "gold": gold,
             "few_shot_ids": shot_ids}
        )  # fmt: skip
    return items


def build_requests(task: dict, tokenizer, limit: int | None = None) -> list[dict]:
    """The evaluated examples with their context, choices, gold, few-shot indices and token requests."""
    bos = [tokenizer.bos_id] if task["add_bos"] and tokenizer.bos_id is not None else []
    items = build_contexts(task, limit)
    for it in items:
        context, reqs = it["context"], []
        for c in it["choices"]:
            ctx, cont = encode_pair(tokenizer, context, task["target_delimiter"] + c)
            ctx = bos + ctx
            if not ctx:  # nothing to condition on (add_bos false, empty context): the harness's prefix token
                ctx = [tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eos_id]
            reqs.append((ctx, cont))
        it["requests"] = reqs
    return items


def run_multiple_choice(model, tokenizer, task: dict, *, batch_size: int = 8, limit: int | None = None) -> dict:
    """Score a validated multiple-choice task (see `validate_task`)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    items = build_requests(task, tokenizer, limit)
    flat = [r for it in items for r in it["requests"]]
    max_length = task["max_length"] or model.config.max_position_embeddings
    scores = score_requests(model, flat, batch_size=batch_size, max_length=max_length) if flat else []
    examples, k = [], 0
    for it in items:
        m = len(it["choices"])
        got, k = scores[k : k + m], k + m
        ll = [s for s, _ in got]
        pred = argmax_first(ll)
        pred_norm = argmax_first([v / max(len(c), 1) for v, c in zip(ll, it["choices"], strict=True)])
        examples.append(
            {"index": it["index"], "where": it["where"], "context": it["context"], "choices": it["choices"],
             "loglikelihoods": ll, "is_greedy": [g for _, g in got], "prediction": pred,
             "prediction_norm": pred_norm, "gold": it["gold"], "few_shot_ids": it["few_shot_ids"]}
        )  # fmt: skip
    metrics = multiple_choice_metrics(
        [e["loglikelihoods"] for e in examples], [e["choices"] for e in examples], [e["gold"] for e in examples]
    )
    n = metrics.pop("n")
    per_class = per_class_f1(
        [e["choices"][e["gold"]] for e in examples], [e["choices"][e["prediction"]] for e in examples]
    )
    return {"task": task["name"], "protocol": "loglik", "metrics": metrics, "n": n, "examples": examples,
            "per_class": per_class}  # fmt: skip


def run_multiple_choice_generative(model, tokenizer, task: dict, *, batch_size: int = 8, limit: int | None = None):
    """A validated multiple-choice task by the generative protocol (see the module docstring)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    items = build_contexts(task, limit)
    gens, truncated = generate_answers(
        model, tokenizer, [it["context"] for it in items], max_new_tokens=task["max_new_tokens"], stop=task["stop"],
        seed=task["seed"], batch_size=batch_size, chat_template=task["chat_template"], max_length=task["max_length"],
        add_bos=task["add_bos"],
    )  # fmt: skip
    examples = []
    for it, g, cut in zip(items, gens, truncated, strict=True):
        pred = first_label_match(g.text, it["choices"])
        examples.append(
            {"index": it["index"], "where": it["where"], "context": it["context"], "choices": it["choices"],
             "generation": g.text, "prediction": MISSING if pred is None else pred,
             "gold": it["choices"][it["gold"]], "missing": pred is None, "truncated": cut,
             "few_shot_ids": it["few_shot_ids"]}
        )  # fmt: skip
    golds = [e["gold"] for e in examples]
    metrics = generative_classification_metrics(golds, [None if e["missing"] else e["prediction"] for e in examples])
    n = metrics.pop("n")
    metrics["truncated"] = int(sum(truncated))
    per_class = per_class_f1(golds, [e["prediction"] for e in examples])
    return {"task": task["name"], "protocol": "generative", "metrics": metrics, "n": n, "examples": examples,
            "per_class": per_class}  # fmt: skip
