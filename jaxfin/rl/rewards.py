"""Rewards for RL on completions: verifiable rules (exact, numeric, choice, format) and Python callables by import
path, each a function of (prompt records, completion texts) -> one float per completion, or NaN where it cannot
score (TRL's None); `score` runs the configured ones (a reward model among them) and combines them with their weights.

Rules, with the gold answer in the prompt record's `answer` field (or `answer_field`):
    exact    the answer line (first non-empty line, without a leading "Answer:") equals the gold string after
             TAT-QA's answer normalisation (case, punctuation, articles, number forms) -> 1 else 0
    numeric  the answer line's number, with its scale word or % ("1.2 million", "12%", "(134)"), equals the gold
             number within a relative `tolerance` (default 1e-4 of the gold, at least 1e-9 absolute) -> 1 else 0; a
             bare number also counts as a percentage of a percent gold (TAT-QA: "12" for "12%"); no number -> 0
    choice   the label (of `choices`, or the record's `choices`) that occurs first in the completion, longest
             first at a tie, equals the gold label (case-insensitive) -> 1; another or none -> 0
    format   the completion matches the regular expression `pattern` (re.search, DOTALL) -> 1 else 0
    callable `function: package.module:name`, called as TRL calls reward functions:
             name(prompts=[...], completions=[...], **{field: [...] for every record field}) -> list[float | None]
A reward model (`type: model`) is scored on the devices by jaxfin/rl/reward_model.py.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Sequence

import numpy as np

from jaxfin.config.choices import REWARD_TYPES
from jaxfin.config.schema import Config, RewardConfig
from jaxfin.eval.gen_tasks import normalize_answer, to_number
from jaxfin.rl.reward_model import RewardModel


def answer_line(text: str) -> str:
    line = next((x.strip() for x in text.splitlines() if x.strip()), "")
    return re.sub(r"^answer\s*:\s*", "", line, flags=re.I)


def exact_reward(completion: str, gold: str) -> float:
    return float(normalize_answer(answer_line(completion)) == normalize_answer(str(gold)))


def numeric_reward(completion: str, gold, tolerance: float = 1e-4) -> float:
    gold_text = str(gold)
    want = to_number(gold_text)
    if want is None:
        return float("nan")  # the record has no numeric answer: not scorable by this rule
    got = to_number(answer_line(completion))
    if got is None:
        return 0.0
    close = lambda x: abs(x - want) <= max(tolerance * abs(want), 1e-9)  # noqa: E731
    bare = "%" not in answer_line(completion) and "percent" not in answer_line(completion).lower()
    percent_gold = "%" in gold_text or "percent" in gold_text.lower()
    return float(close(got) or (bare and percent_gold and close(round(got / 100, 6))))


def first_choice(completion: str, choices: Sequence[str]) -> str | None:
    """The choice that occurs first in the text (case-insensitive; the longest of those starting at one place)."""
    low = completion.lower()
    hits = [(low.find(c.lower()), -len(c), c) for c in choices if c and c.lower() in low]
    return min(hits)[2] if hits else None


def choice_reward(completion: str, gold: str, choices: Sequence[str]) -> float:
    got = first_choice(completion, choices)
    return float(got is not None and got.lower() == str(gold).lower())


def format_reward(completion: str, pattern: str) -> float:
    return float(re.search(pattern, completion, flags=re.DOTALL) is not None)


def load_callable(path: str) -> Callable:
    """`package.module:name` -> the function (a clear message when either part is missing)."""
    module, _, name = path.partition(":")
    if not module or not name:
        raise ValueError(f"reward function '{path}' must be written package.module:function")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"reward function '{path}' cannot be loaded: {e}") from None
    if not callable(fn):
        raise ValueError(f"reward function '{path}' is not callable")
    return fn


def rule_scores(reward, records: Sequence[dict], completions: Sequence[str]) -> np.ndarray:
    """[N] float64 scores of one configured reward (a RewardConfig) for N (record, completion) pairs."""
    kind = reward.type
    if kind == "callable":
        fn = load_callable(reward.function)
        fields = {k: [r.get(k) for r in records] for k in dict.fromkeys(k for r in records for k in r)}
        fields.pop("prompt", None)
        out = fn(prompts=[r.get("prompt") for r in records], completions=list(completions), **fields)
        if len(out) != len(completions):
            raise ValueError(f"reward function '{reward.function}' returned {len(out)} values for "
                             f"{len(completions)} completions")  # fmt: skip
        return np.array([math.nan if v is None else float(v) for v in out], np.float64)
    if kind == "format":
        return np.array([format_reward(c, reward.pattern) for c in completions], np.float64)
    out = []
    for rec, text in zip(records, completions):
        gold = rec.get(reward.answer_field)
        if gold is None:
            out.append(math.nan)  # nothing to compare with: unscorable, not wrong
        elif kind == "exact":
            out.append(exact_reward(text, gold))
        elif kind == "numeric":
            out.append(numeric_reward(text, gold, reward.tolerance))
        elif kind == "choice":
            out.append(choice_reward(text, gold, reward.choices or rec.get("choices") or []))
        else:
            raise ValueError(f"unknown reward type '{kind}' (use one of: {', '.join(REWARD_TYPES)})")
    return np.array(out, np.float64)


def combine(per_reward: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """[N] total reward from [N, K] per-reward scores: the weighted sum over the rewards that could score (NaN
    skipped, TRL's nansum); NaN where none could."""
    w = np.asarray(weights, np.float64)
    total = np.nansum(per_reward * w, axis=1)
    return np.where(np.isnan(per_reward).all(axis=1), np.nan, total)


def rewards_of(cfg: Config) -> list[RewardConfig]:
    """The configured rewards, `objective.reward_model` included."""
    o = cfg.objective
    extra = [RewardConfig(type="model", path=o.reward_model, name="reward_model")] if o.reward_model else []
    return [*o.rewards, *extra]


_REWARD_MODELS: dict = {}


def score(cfg: Config, records: list[dict], prompts: list, texts: list[str]) -> tuple[np.ndarray, dict[str, float]]:
    """(total reward [N], {rewards/<name>: mean}) of N completions of these records (`prompts`: the prompts as
    sampled from, for a reward model)."""
    rws = rewards_of(cfg)

    def one(rw):
        if rw.type != "model":
            return rule_scores(rw, records, texts)
        if rw.path not in _REWARD_MODELS:
            _REWARD_MODELS[rw.path] = RewardModel(rw.path)
        return _REWARD_MODELS[rw.path].score(prompts, texts)

    per = np.stack([one(rw) for rw in rws], axis=1)
    means = {f"rewards/{rw.name or rw.type}": nanmean(per[:, k]) for k, rw in enumerate(rws)}
    return combine(per, [rw.weight for rw in rws]), means


def nanmean(x: np.ndarray) -> float:
    """The mean over the scored values (NaN where none is)."""
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")
