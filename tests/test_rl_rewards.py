"""jaxfin/rl/rewards.py against independent oracles: hand-worked expected values for the rules (normalisation,
numbers with scale words, percent and brackets, first-occurring choices, regular expressions), a callable loaded by
import path and called as TRL calls reward functions, `combine`'s NaN handling against TRL's own lines, and the
format rule against TRL's `think_format_reward`."""

from __future__ import annotations

import importlib
import inspect
import math
import textwrap

import numpy as np
import pytest
import torch
from trl.rewards import think_format_reward
from trl.trainer.grpo_trainer import GRPOTrainer

from jaxfin.config.schema import RewardConfig
from jaxfin.rl import rewards as R

# ---------------------------------------------------------------------------------------------------------------
# a reward function for `type: callable`, loaded as tests.test_rl_rewards:<name>

CALLS: list[dict] = []
NOT_CALLABLE = 3


def length_reward(prompts, completions, **fields):
    """len(completion) / 10, None (unscorable) where the record's `answer` is None; records its arguments."""
    CALLS.append({"prompts": prompts, "completions": completions, **fields})
    return [None if a is None else len(c) / 10 for c, a in zip(completions, fields["answer"])]


def short_reward(prompts, completions, **fields):
    return [1.0]  # one value whatever the number of completions


# ---------------------------------------------------------------------------------------------------------------
# exact


@pytest.mark.parametrize(
    ("completion", "gold", "want"),
    [
        ("The Apple.", "apple", 1.0),  # case, punctuation, article
        ("Answer: the apple\nmore text on later lines", "Apple", 1.0),  # the answer line only, "Answer:" dropped
        ("\n\n   An Apple  \n", "apple", 1.0),  # the first non-empty line
        ("apples", "apple", 0.0),
        ("$1,000", "1000", 1.0),  # number forms
        ("1,000.50", "1000.5", 1.0),
        ("1001", "1000", 0.0),
        ("Answer: yes\nno", "no", 0.0),  # a later line is not the answer
        ("", "apple", 0.0),
    ],
)
def test_exact_reward(completion, gold, want):
    assert R.exact_reward(completion, gold) == want


# ---------------------------------------------------------------------------------------------------------------
# numeric


@pytest.mark.parametrize(
    ("completion", "gold", "want"),
    [
        ("1.2 million", "1200000", 1.0),  # scale word
        ("Answer: 1.2 million", "1,200,000", 1.0),
        ("1.2 billion", "1.2 million", 0.0),  # a wrong scale is a wrong number
        ("1.2", "1.2 million", 0.0),
        ("12%", "0.12", 1.0),  # % divides by 100
        ("12 percent", "12%", 1.0),
        ("12", "12%", 1.0),  # a bare number counts as the percentage of a percent gold (TAT-QA)
        ("0.12", "12%", 1.0),  # ... and as the fraction
        ("12", "0.12", 0.0),  # but not when the gold is no percent
        ("1200%", "12%", 0.0),  # nor an answer written with % (its value is 12, not 0.12)
        ("12%", "12", 0.0),  # nor a percent answer for a plain gold
        ("(134)", "-134", 1.0),  # accounting brackets are negative
        ("-134", "(134)", 1.0),
        ("134", "(134)", 0.0),
        ("$1,496.5", "1496.5", 1.0),
        ("135", "134", 0.0),  # a wrong number
        ("3", "3.0003", 1.0),  # inside the relative tolerance 1e-4 x 3.0003
        ("3", "3.0004", 0.0),  # just outside
        ("no idea", "134", 0.0),  # no number: 0, scorable
        ("", "134", 0.0),
    ],
)
def test_numeric_reward(completion, gold, want):
    assert R.numeric_reward(completion, gold) == want


def test_numeric_reward_gold_without_number_is_nan_and_tolerance_is_relative():
    assert math.isnan(R.numeric_reward("5", "n/a"))
    assert math.isnan(R.numeric_reward("no idea", "not applicable"))
    assert R.numeric_reward("1010", "1000", tolerance=0.02) == 1.0
    assert R.numeric_reward("1030", "1000", tolerance=0.02) == 0.0
    assert R.numeric_reward("0", "0") == 1.0  # the absolute floor 1e-9 lets a zero gold match


# ---------------------------------------------------------------------------------------------------------------
# choice


def test_first_choice_and_choice_reward():
    labels = ["positive", "negative", "neutral"]
    text = "The outlook is negative, not positive."
    assert R.first_choice(text, labels) == "negative"  # first occurring wins, not the first listed
    assert R.first_choice("Positive overall; negative risks", labels) == "positive"
    assert R.choice_reward(text, "negative", labels) == 1.0
    assert R.choice_reward(text, "positive", labels) == 0.0
    assert R.choice_reward("NEGATIVE", "Negative", labels) == 1.0  # case-insensitive on both sides
    assert R.first_choice("I cannot tell", labels) is None
    assert R.choice_reward("I cannot tell", "neutral", labels) == 0.0
    # two labels starting at one place: the longest ("AA" in "AA."), whatever the order of the list
    assert R.first_choice("AA.", ["A", "AA"]) == "AA"
    assert R.first_choice("AA.", ["AA", "A"]) == "AA"
    assert R.choice_reward("AA.", "A", ["A", "AA"]) == 0.0
    assert R.first_choice("A, then AA", ["AA", "A"]) == "A"  # an earlier shorter one still wins


# ---------------------------------------------------------------------------------------------------------------
# format


def test_format_reward_is_a_dotall_search():
    pattern = r"<answer>.*</answer>"
    assert R.format_reward("reasoning... <answer>\n42\n</answer> done", pattern) == 1.0  # "." crosses lines
    assert R.format_reward("<answer>42", pattern) == 0.0
    assert R.format_reward("text before <answer>42</answer>", pattern) == 1.0  # search, not match
    assert R.format_reward("text before <answer>42</answer>", r"^<answer>") == 0.0


def test_format_reward_equals_trl_think_format_reward():
    """TRL's `think_format_reward` is its pattern under re.match(DOTALL | MULTILINE); the same pattern anchored by
    ^ gives the same answers under jaxfin's re.search(DOTALL)."""
    pattern = r"^<think>(?!.*<think>)(.*?)</think>.*$"
    texts = [
        "<think>\nThis is my reasoning.\n</think>\nThis is my answer.",
        "<think>\nThis is my reasoning.\nThis is my answer.",
        "<think>a</think><think>b</think>",
        "preamble\n<think>a</think>answer",
        "<think></think>",
    ]
    theirs = think_format_reward([[{"content": t}] for t in texts])
    assert [R.format_reward(t, pattern) for t in texts] == theirs
    assert theirs == [1.0, 0.0, 0.0, 0.0, 1.0]


# ---------------------------------------------------------------------------------------------------------------
# callable, and rule_scores over records


def test_callable_by_import_path_is_called_as_trl_calls_reward_functions():
    # pytest imports this file as `test_rl_rewards`; the loader may import it again as `tests.test_rl_rewards`, a
    # second module object: read the calls from the one the loader uses
    calls = importlib.import_module("tests.test_rl_rewards").CALLS
    calls.clear()
    records = [
        {"prompt": "p1", "answer": "a", "source": "s1"},
        {"prompt": "p2", "answer": None, "source": "s2"},
        {"prompt": "p3", "answer": "c"},  # a field missing from one record is passed as None
    ]
    completions = ["abcd", "xy", "abcdefghij"]
    cfg = RewardConfig(type="callable", function="tests.test_rl_rewards:length_reward")
    out = R.rule_scores(cfg, records, completions)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [0.4, np.nan, 1.0])  # None -> NaN
    assert calls == [{"prompts": ["p1", "p2", "p3"], "completions": completions, "answer": ["a", None, "c"],
                      "source": ["s1", "s2", None]}]  # fmt: skip


def test_callable_with_a_wrong_count_raises():
    cfg = RewardConfig(type="callable", function="tests.test_rl_rewards:short_reward")
    with pytest.raises(ValueError, match=r"returned 1 values for 2 completions"):
        R.rule_scores(cfg, [{"prompt": "p"}, {"prompt": "q"}], ["a", "b"])


@pytest.mark.parametrize(
    ("path", "match"),
    [
        ("tests.test_rl_rewards:no_such_function", "cannot be loaded"),
        ("tests.no_such_module_here:length_reward", "cannot be loaded"),
        ("tests.test_rl_rewards", "package.module:function"),
        (":length_reward", "package.module:function"),
        ("tests.test_rl_rewards:NOT_CALLABLE", "not callable"),
    ],
)
def test_bad_callable_path_raises_value_error_naming_it(path, match):
    with pytest.raises(ValueError, match=match) as err:
        R.load_callable(path)
    assert path in str(err.value)


def test_load_callable_returns_the_function():
    fn = R.load_callable("tests.test_rl_rewards:length_reward")
    assert fn.__name__ == "length_reward" and fn(prompts=["p"], completions=["abc"], answer=["x"]) == [0.3]


def test_rule_scores_per_rule_and_missing_gold_is_nan():
    records = [
        {"answer": "1.2 million", "label": "negative", "choices": ["up", "down"]},
        {"answer": "12%", "label": None, "choices": ["up", "down"]},
        {"label": "positive", "choices": ["up", "down"]},  # no answer
    ]
    completions = ["Answer: 1200000", "12", "it goes down, then up"]
    num = R.rule_scores(RewardConfig(type="numeric"), records, completions)
    np.testing.assert_array_equal(num, [1.0, 1.0, np.nan])
    ex = R.rule_scores(RewardConfig(type="exact"), records, completions)
    np.testing.assert_array_equal(ex, [0.0, 0.0, np.nan])  # "1200000" is not the string "1.2 million"
    labels = ["positive", "negative"]
    ch = R.rule_scores(RewardConfig(type="choice", answer_field="label", choices=labels), records,
                       ["negative!", "positive", "positive and negative"])  # fmt: skip
    np.testing.assert_array_equal(ch, [1.0, np.nan, 1.0])
    # choices [] -> the record's own `choices`: "down" occurs first
    own_cfg = RewardConfig(type="choice", answer_field="answer")
    own = R.rule_scores(own_cfg, [{"answer": "down", "choices": ["up", "down"]}], ["it goes down, then up"])
    np.testing.assert_array_equal(own, [1.0])
    fmt = R.rule_scores(RewardConfig(type="format", pattern=r"^Answer:"), records, completions)
    np.testing.assert_array_equal(fmt, [1.0, 0.0, 0.0])  # format needs no gold: never NaN
    with pytest.raises(ValueError, match="unknown reward type"):
        R.rule_scores(RewardConfig(type="bleu"), records, completions)


# ---------------------------------------------------------------------------------------------------------------
# combine


def _trl_combine(per_reward: np.ndarray, weights) -> np.ndarray:
    """TRL's own lines of `_generate_and_score_completions` (sum_then_normalize): a row whose rewards are all None
    (NaN) is unscorable and NaN; otherwise the weighted nansum."""
    lines = inspect.getsource(GRPOTrainer._generate_and_score_completions).splitlines()
    start = next((i for i, x in enumerate(lines) if x.strip().startswith("unscorable_mask = torch.isnan(")), None)
    assert start is not None, "marker 'unscorable_mask = torch.isnan(' not found (TRL changed?)"
    end = next(
        (i for i in range(start, len(lines)) if lines[i].strip() == "rewards[unscorable_mask] = torch.nan"), None
    )
    assert end is not None, "marker 'rewards[unscorable_mask] = torch.nan' not found (TRL changed?)"
    code = textwrap.dedent("\n".join(lines[start : end + 1]))
    assert ".nansum(dim=1)" in code
    self = type("S", (), {"multi_objective_aggregation": "sum_then_normalize",
                          "reward_weights": torch.tensor(weights, dtype=torch.float64)})()  # fmt: skip
    ns = {"torch": torch, "self": self, "device": "cpu", "rewards_per_func": torch.tensor(per_reward)}
    exec(compile(code, "<trl block>", "exec"), ns)
    return ns["rewards"].numpy()


def test_combine_weighted_nansum_and_all_nan_rows():
    nan = np.nan
    per = np.array([[1.0, 0.0, 0.5], [nan, 1.0, 1.0], [nan, nan, nan], [0.0, nan, nan], [1.0, 1.0, 1.0]])
    w = [2.0, 0.5, -1.0]
    out = R.combine(per, w)
    want = np.array([2.0 - 0.5, 0.5 - 1.0, nan, 0.0, 2.0 + 0.5 - 1.0])  # worked by hand
    np.testing.assert_array_equal(out, want)
    np.testing.assert_array_equal(out, _trl_combine(per, w))
    assert out[3] == 0.0 and not np.isnan(out[3])  # scorable with a 0 reward is 0, not NaN
