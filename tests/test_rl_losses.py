"""jaxfin/rl/losses.py against TRL's own code (TRL 1.12.0), in float64: GRPO's loss, gradient and logged clip/KL
metrics through the real `GRPOTrainer._compute_loss` (called with a fake `self`), GRPO's advantages, and PPO's KL
estimators, per-token rewards, GAE and minibatch loss as blocks of `PPOTrainer.train` cut out of its source by text
markers and executed (a TRL change that moves a marker fails loudly); `masked_whiten` against TRL's function.
Everything is float64 on both sides, so the bound is float64 rounding of O(1) values: 1e-12 absolute."""

from __future__ import annotations

import inspect
import os
import textwrap
import types
from collections import defaultdict

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from trl.experimental.ppo import ppo_trainer as trl_ppo  # noqa: E402
from trl.trainer.grpo_trainer import GRPOTrainer  # noqa: E402
from trl.trainer.utils import nanstd  # noqa: E402

from jaxfin.rl import losses  # noqa: E402

TOL = 1e-12  # float64 on both sides; measured differences are <= ~1e-15
LENGTHS = (7, 3, 1, 5, 2, 7)  # completion lengths of B = 6 rows, T = 7: full, short, a single token
T = 7


@pytest.fixture(autouse=True)
def _x64():
    """float64 for this file's tests only, restored after each (nothing leaks into other test files): JAX's x64 as
    a context; torch's default dtype float64, so TRL's integer true divisions (nanstd's and masked_var's Bessel
    count / (count - 1)) are float64 too instead of float32."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with jax.enable_x64(True):
            yield
    finally:
        torch.set_default_dtype(before)


def _close(actual, expected, tol=TOL, what=""):
    a = np.asarray(actual.detach() if isinstance(actual, torch.Tensor) else actual, np.float64)
    e = np.asarray(expected.detach() if isinstance(expected, torch.Tensor) else expected, np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    diff = float(np.max(np.abs(a - e))) if a.size else 0.0
    assert diff <= tol, f"{what}: max |jaxfin - TRL| = {diff:.3e} > {tol:.1e}"
    return diff


def _mask(lengths=LENGTHS, t=T):
    return (np.arange(t)[None, :] < np.asarray(lengths)[:, None]).astype(np.float64)


def _block(fn, start: str, end: str) -> str:
    """The dedented source lines of `fn` from the first line starting (after indentation) with `start` through the
    first line after it starting with `end`; asserts both markers exist, so a TRL that moved them fails here."""
    lines = inspect.getsource(fn).splitlines()
    first = next((i for i, x in enumerate(lines) if x.strip().startswith(start)), None)
    assert first is not None, f"marker {start!r} not found in {fn.__qualname__} (TRL changed?)"
    last = next((i for i in range(first, len(lines)) if lines[i].strip().startswith(end)), None)
    assert last is not None, f"marker {end!r} not found after {start!r} in {fn.__qualname__} (TRL changed?)"
    return textwrap.dedent("\n".join(lines[first : last + 1]))


def _run(code: str, **names) -> dict:
    ns = {"torch": torch, "masked_mean": trl_ppo.masked_mean, "masked_whiten": trl_ppo.masked_whiten, **names}
    exec(compile(code, "<trl block>", "exec"), ns)
    return ns


PPO_TRAIN = trl_ppo.PPOTrainer.train
KL_BLOCK = _block(PPO_TRAIN, "logr = ref_logprobs - logprobs", "kl = -logr if args.kl_estimator")
REWARDS_BLOCK = _block(PPO_TRAIN, "logr = ref_logprobs - logprobs", "rewards[actual_start, actual_end] += scores")
GAE_BLOCK = _block(PPO_TRAIN, "lastgaelam = 0", "returns = advantages + values")
LOSS_BLOCK = _block(PPO_TRAIN, "vpredclipped = torch.clamp(", "loss = pg_loss + args.vf_coef * vf_loss")
PG_CLIPFRAC_BLOCK = _block(PPO_TRAIN, "pg_clipfrac = masked_mean(", ")")
APPROXKL_BLOCK = _block(PPO_TRAIN, "approxkl = 0.5 *", "approxkl = 0.5 *")
ADV_BLOCK = _block(
    GRPOTrainer._generate_and_score_completions,
    "mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)",
    "advantages = advantages / (std_rewards + 1e-4)",
)


def test_blocks_are_the_expected_trl_code():
    """The cut-out blocks hold the statements the tests rely on (a guard against a marker matching elsewhere)."""
    assert 'kl = -logr if args.kl_estimator == "k1" else (logr.exp() - 1) - logr' in KL_BLOCK
    assert "non_score_reward = -args.kl_coef * kl" in REWARDS_BLOCK
    assert "delta = rewards[:, t] + args.gamma * nextvalues - values[:, t]" in GAE_BLOCK
    assert "pg_loss = masked_mean(pg_loss_max, ~padding_mask[micro_batch_inds])" in LOSS_BLOCK
    assert "(pg_losses2 > pg_losses).float()" in PG_CLIPFRAC_BLOCK
    assert "std_rewards = nanstd(rewards.view(-1, num_generations), dim=1)" in ADV_BLOCK


# ---------------------------------------------------------------------------------------------------------------
# GRPO: TRL's real GRPOTrainer._compute_loss with a fake self


class _Accelerator:
    """One process: gather is the identity, a sum-reduce over one process too."""

    num_processes = 1

    def gather(self, x):
        return x

    def reduce(self, x, reduction="sum"):
        assert reduction == "sum"
        return x


def _grpo_data(seed=0):
    rng = np.random.default_rng(seed)
    b = len(LENGTHS)
    logp = -rng.uniform(0.05, 3.0, (b, T))  # padding entries hold values too: the mask must drop them
    return {
        "logp": logp,
        "old": logp + 0.35 * rng.standard_normal((b, T)),  # ratios well outside [1 - eps, 1 + eps_high]
        "ref": logp + 0.3 * rng.standard_normal((b, T)),
        "adv": np.array([-1.3, 0.7, 0.4, -1.1, 0.9, 0.6]),  # signs chosen so both clip sides occur
        "mask": _mask(),
        "entropy": rng.uniform(0.0, 2.0, (b, T)),
    }


def _trl_grpo(d, *, loss_type, beta, eps, eps_high, old_given):
    """TRL's loss, d loss / d logp and logged metrics for one micro-batch (gradient accumulation 1, one process)."""
    logp = torch.tensor(d["logp"], dtype=torch.float64, requires_grad=True)
    entropies = torch.tensor(d["entropy"], dtype=torch.float64)
    mask = torch.tensor(d["mask"], dtype=torch.float64)
    b = mask.shape[0]

    def per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep, **kwargs):
        assert logits_to_keep == T and kwargs["compute_entropy"] and not kwargs["compute_aux_loss"]
        return logp, entropies, None

    fake = types.SimpleNamespace(  # exactly what _compute_loss reads on this path
        _get_per_token_logps_and_entropies=per_token_logps_and_entropies,
        aux_loss_enabled=False,
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        beta=beta,
        args=types.SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        loss_type=loss_type,
        epsilon_low=eps,
        epsilon_high=eps_high,
        use_vllm=False,
        model=types.SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1,
        max_completion_length=T,
        accelerator=_Accelerator(),
        _entropy_bonus_enabled=False,
        _metrics=defaultdict(lambda: defaultdict(list)),
    )
    inputs = {
        "prompt_ids": torch.zeros((b, 3), dtype=torch.long),
        "prompt_mask": torch.ones((b, 3), dtype=torch.long),
        "completion_ids": torch.zeros((b, T), dtype=torch.long),
        "completion_mask": mask,
        "advantages": torch.tensor(d["adv"], dtype=torch.float64),
        "ref_per_token_logps": torch.tensor(d["ref"], dtype=torch.float64),
        "num_items_in_batch": mask.sum(),
    }
    if old_given:
        inputs["old_per_token_logps"] = torch.tensor(d["old"], dtype=torch.float64)
    loss = GRPOTrainer._compute_loss(fake, None, inputs)
    loss.backward()
    return loss.detach().numpy(), logp.grad.numpy(), {k: v[-1] for k, v in fake._metrics["train"].items()}


def _jax_grpo(d, *, loss_type, beta, eps, eps_high, old_given):
    def mean_loss(logp):
        loss, count, metrics = losses.grpo_loss(
            logp, jnp.asarray(d["old"]) if old_given else None, jnp.asarray(d["adv"]), jnp.asarray(d["mask"]),
            loss_type=loss_type, epsilon=eps, epsilon_high=eps_high, beta=beta, ref_logp=jnp.asarray(d["ref"]),
            max_completion_length=T,
        )  # fmt: skip
        return loss / count, {k: v / count for k, v in metrics.items()}

    (loss, metrics), grad = jax.value_and_grad(mean_loss, has_aux=True)(jnp.asarray(d["logp"]))
    assert loss.dtype == jnp.float64
    return np.asarray(loss), np.asarray(grad), {k: float(v) for k, v in metrics.items()}


@pytest.mark.parametrize("old_given", [True, False], ids=["old_logps", "on_policy"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("eps_high", [None, 0.28], ids=["symmetric", "eps_high"])
@pytest.mark.parametrize("loss_type", losses.LOSS_TYPES)
def test_grpo_loss_gradient_and_metrics_equal_trl(loss_type, eps_high, beta, old_given):
    """Loss (loss_sum / count of one micro-batch), d loss / d logp (a stop_gradient in the wrong place, or the KL
    ratio upside down, shows here) and the clip/KL metrics TRL logs, for every loss_type; KL is TRL's k3.
    old_logps absent: TRL uses per_token_logps.detach(), jaxfin old_logp=None."""
    d = _grpo_data()
    kw = dict(loss_type=loss_type, beta=beta, eps=0.2, old_given=old_given)
    t_loss, t_grad, t_metrics = _trl_grpo(d, eps_high=0.2 if eps_high is None else eps_high, **kw)
    j_loss, j_grad, j_metrics = _jax_grpo(d, eps_high=eps_high, **kw)
    _close(j_loss, t_loss, what="loss")
    _close(j_grad, t_grad, what="d loss / d logp")
    assert np.all(j_grad[d["mask"] == 0] == 0), "padding got a gradient"
    pairs = {
        "clip_low": "clip_ratio/low_mean",
        "clip_high": "clip_ratio/high_mean",
        "clip_frac": "clip_ratio/region_mean",
    }
    if beta:
        pairs["kl"] = "kl"
    else:
        assert "kl" not in j_metrics and "kl" not in t_metrics
    for mine, theirs in pairs.items():
        _close(j_metrics[mine], t_metrics[theirs], what=mine)
    if old_given:  # the data exercise both clip sides, so the clip metrics above compare non-trivial values
        assert t_metrics["clip_ratio/low_mean"] > 0 and t_metrics["clip_ratio/high_mean"] > 0
    else:
        assert j_metrics["clip_frac"] == 0.0


def test_grpo_loss_types_differ_and_reject_bad_arguments():
    """On ragged rows grpo, bnpo and dr_grpo give three different micro-batch losses (so the parity above tells
    them apart); dapo equals bnpo on one micro-batch and differs in its count (the tokens, so accumulation over
    micro-batches weighs tokens, not micro-batches). Unknown names and dr_grpo without its constant raise."""
    d = _grpo_data()
    args = (jnp.asarray(d["logp"]), jnp.asarray(d["old"]), jnp.asarray(d["adv"]), jnp.asarray(d["mask"]))
    out = {lt: losses.grpo_loss(*args, loss_type=lt, max_completion_length=T)[:2] for lt in losses.LOSS_TYPES}
    means = {lt: float(loss / count) for lt, (loss, count) in out.items()}
    assert len({round(means[lt], 9) for lt in ("grpo", "bnpo", "dr_grpo")}) == 3
    assert abs(means["dapo"] - means["bnpo"]) < TOL
    counts = {lt: float(count) for lt, (_, count) in out.items()}
    assert counts == {"grpo": len(LENGTHS), "bnpo": 1.0, "dr_grpo": len(LENGTHS), "dapo": float(sum(LENGTHS))}
    with pytest.raises(ValueError, match="loss_type"):
        losses.grpo_loss(*args, loss_type="cispo")
    with pytest.raises(ValueError, match="max_completion_length"):
        losses.grpo_loss(*args, loss_type="dr_grpo")


# ---------------------------------------------------------------------------------------------------------------
# GRPO advantages: TRL's inline arithmetic of _generate_and_score_completions (sum_then_normalize), executed


def _trl_advantages(rewards: np.ndarray, num_generations: int, scale: str) -> np.ndarray:
    """The lines of `_generate_and_score_completions` from the group mean through the division: group mean by
    torch.nanmean, std by TRL's `nanstd` (Bessel) per group ("group"; "none" only for logging) or over the batch
    ("batch"), advantages = rewards - group mean, divided by std + 1e-4 unless "none"."""
    ns = _run(
        ADV_BLOCK,
        nanstd=nanstd,
        self=types.SimpleNamespace(scale_rewards=scale),
        num_generations=num_generations,
        rewards=torch.tensor(rewards, dtype=torch.float64),
    )
    return ns["advantages"].numpy()


@pytest.mark.parametrize("scale", losses.SCALE_REWARDS)
def test_group_advantages_equal_trl(scale):
    """4 prompts x G = 4, the third group's rewards all equal (std 0: advantage 0, not a division by 0)."""
    rng = np.random.default_rng(1)
    rewards = rng.uniform(-1, 2, 16)
    rewards[8:12] = 0.5
    rewards[12:16] = [1.0, 0.0, 0.0, 1.0]
    mine = np.asarray(losses.group_advantages(jnp.asarray(rewards), 4, scale))
    _close(mine, _trl_advantages(rewards, 4, scale), what=f"advantages ({scale})")
    assert np.all(mine[8:12] == 0)
    if scale == "none":
        _close(mine, rewards - np.repeat(rewards.reshape(4, 4).mean(1), 4), what="centred only")
    with pytest.raises(ValueError, match="scale_rewards"):
        losses.group_advantages(jnp.asarray(rewards), 4, "max")


# ---------------------------------------------------------------------------------------------------------------
# PPO: blocks of PPOTrainer.train, executed on our tensors


def _ppo_args(**kw):
    base = dict(kl_estimator="k1", kl_coef=0.05, gamma=1.0, lam=0.95, cliprange=0.2, cliprange_value=0.2, vf_coef=0.1)
    return types.SimpleNamespace(**{**base, **kw})


def _t(x):
    return torch.tensor(np.asarray(x), dtype=torch.float64)


@pytest.mark.parametrize("estimator", losses.KL_ESTIMATORS)
def test_kl_estimators_equal_trl(estimator):
    rng = np.random.default_rng(2)
    logp = -rng.uniform(0.05, 3.0, (4, 9))
    ref = logp + 0.5 * rng.standard_normal((4, 9))
    ns = _run(KL_BLOCK, args=_ppo_args(kl_estimator=estimator), logprobs=_t(logp), ref_logprobs=_t(ref))
    mine = np.asarray(losses.kl_estimate(jnp.asarray(logp), jnp.asarray(ref), estimator))
    _close(mine, ns["kl"], what=estimator)
    if estimator == "k3":
        assert np.all(mine >= 0)
    else:
        assert np.any(mine < 0)  # k1 is unbiased but can be negative
    with pytest.raises(ValueError, match="KL estimator"):
        losses.kl_estimate(jnp.asarray(logp), jnp.asarray(ref), "k2")


def _ppo_rollout(seed=3):
    rng = np.random.default_rng(seed)
    b = len(LENGTHS)
    logp = -rng.uniform(0.05, 3.0, (b, T))
    return {
        "logp": logp,
        "ref": logp + 0.4 * rng.standard_normal((b, T)),
        "scores": rng.standard_normal(b),
        "mask": _mask(),
        "lengths": np.asarray(LENGTHS),
    }


@pytest.mark.parametrize("estimator", losses.KL_ESTIMATORS)
def test_ppo_rewards_non_score_part_equals_trl_and_score_lands_on_last_token(estimator):
    """TRL's step 4 on logprobs filled with INVALID_LOGPROB past the end (as TRL fills them): jaxfin's non-score
    reward -kl_coef x KL is TRL's `non_score_reward` everywhere (0 past the end). The score placement differs on
    purpose: jaxfin puts it on the last completion token, TRL one past it (`sequence_lengths_p1`, the last index
    when the row is full) — both are asserted, so a change on either side shows."""
    r = _ppo_rollout()
    mask = r["mask"]
    padding_mask = torch.tensor(mask == 0)
    ns = _run(
        REWARDS_BLOCK,
        args=_ppo_args(kl_estimator=estimator, kl_coef=0.07),
        logprobs=torch.masked_fill(_t(r["logp"]), padding_mask, trl_ppo.INVALID_LOGPROB),
        ref_logprobs=torch.masked_fill(_t(r["ref"]), padding_mask, trl_ppo.INVALID_LOGPROB),
        scores=_t(r["scores"]),
        sequence_lengths=torch.tensor(r["lengths"] - 1),  # TRL: the index of the last completion token
        sequence_lengths_p1=torch.tensor(r["lengths"]),
    )
    rewards, non_score = losses.ppo_rewards(
        jnp.asarray(r["scores"]), jnp.asarray(r["logp"]), jnp.asarray(r["ref"]), jnp.asarray(mask),
        kl_coef=0.07, kl_estimator=estimator,
    )  # fmt: skip
    _close(non_score, ns["non_score_reward"], what="non-score reward")
    assert np.all(np.asarray(non_score)[mask == 0] == 0)
    rows = np.arange(len(LENGTHS))
    want = np.zeros_like(mask)
    want[rows, r["lengths"] - 1] = r["scores"]  # the last index where mask is 1
    _close(np.asarray(rewards) - np.asarray(non_score), want, what="score on the last completion token")
    trl_at = np.where(r["lengths"] < T, r["lengths"], r["lengths"] - 1)
    trl_want = np.zeros_like(mask)
    trl_want[rows, trl_at] = r["scores"]
    _close(ns["rewards"] - ns["non_score_reward"], trl_want, what="TRL's score one past the end")


def _gae_reference(rewards, values, gamma, lam):
    """Plain float64 Python loop: A_t = r_t + gamma V_{t+1} - V_t + gamma lam A_{t+1}, V_T = A_T = 0."""
    b, t_len = len(rewards), len(rewards[0])
    adv = [[0.0] * t_len for _ in range(b)]
    for i in range(b):
        nxt_a = nxt_v = 0.0
        for t in reversed(range(t_len)):
            r, v = float(rewards[i][t]), float(values[i][t])
            nxt_a = r + gamma * nxt_v - v + gamma * lam * nxt_a
            adv[i][t], nxt_v = nxt_a, v
    adv = np.array(adv, np.float64)
    return adv, adv + np.asarray(values, np.float64)


@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 0.95), (0.9, 0.8)])
def test_gae_equals_trl_and_a_float64_loop(gamma, lam):
    rng = np.random.default_rng(4)
    mask = _mask()
    rewards = rng.standard_normal(mask.shape) * mask  # reward and value 0 past each row's end
    values = rng.standard_normal(mask.shape) * mask
    ns = _run(GAE_BLOCK, args=_ppo_args(gamma=gamma, lam=lam), rewards=_t(rewards), values=_t(values),
              responses=torch.zeros(mask.shape, dtype=torch.long))  # fmt: skip
    adv, ret = losses.gae(jnp.asarray(rewards), jnp.asarray(values), gamma, lam)
    ref_adv, ref_ret = _gae_reference(rewards.tolist(), values.tolist(), gamma, lam)
    _close(adv, ns["advantages"], what="advantages vs TRL")
    _close(ret, ns["returns"], what="returns vs TRL")
    _close(adv, ref_adv, what="advantages vs loop")
    _close(ret, ref_ret, what="returns vs loop")
    _close(ns["advantages"], ref_adv, what="TRL vs loop")
    assert np.all(np.asarray(adv)[mask == 0] == 0)


@pytest.mark.parametrize("shift_mean", [True, False])
def test_masked_whiten_equals_trl(shift_mean):
    rng = np.random.default_rng(5)
    mask = _mask()
    x = 3.0 + 2.0 * rng.standard_normal(mask.shape)
    mine = losses.masked_whiten(jnp.asarray(x), jnp.asarray(mask), shift_mean=shift_mean)
    theirs = trl_ppo.masked_whiten(_t(x), torch.tensor(mask > 0), shift_mean=shift_mean)
    _close(mine, theirs, what="masked_whiten")
    valid = np.asarray(mine)[mask > 0]
    assert abs(valid.mean() - (0.0 if shift_mean else float((x * mask).sum() / mask.sum()))) < 1e-12


def test_ppo_loss_and_gradient_equal_trl():
    """TRL's minibatch loss block (value clip, policy clip, masked means) plus its pg_clipfrac line, on inputs
    filled past the end as TRL fills them (logprobs INVALID_LOGPROB, values 0). TRL masks the value loss with
    `padding_mask_p1` (one more token) and the policy loss with `padding_mask`; jaxfin uses one mask for both, so
    here both are ~mask. Gradients w.r.t. the new log-probs and values compared too."""
    rng = np.random.default_rng(6)
    mask = _mask()
    shape = mask.shape
    logp = -rng.uniform(0.05, 3.0, shape)
    old_logp = logp + 0.3 * rng.standard_normal(shape)
    adv = rng.standard_normal(shape)
    old_values = rng.standard_normal(shape)
    values = old_values + 0.4 * rng.standard_normal(shape)
    returns = rng.standard_normal(shape)
    args = _ppo_args(cliprange=0.2, cliprange_value=0.2, vf_coef=0.1)

    padding_mask = torch.tensor(mask == 0)
    lp_t, v_t = _t(logp).requires_grad_(), _t(values).requires_grad_()
    names = dict(
        args=args,
        padding_mask=padding_mask,
        padding_mask_p1=padding_mask,  # jaxfin: one mask for policy and value loss
        micro_batch_inds=torch.arange(shape[0]),
        new_logprobs=torch.masked_fill(lp_t, padding_mask, trl_ppo.INVALID_LOGPROB),
        mb_logprobs=torch.masked_fill(_t(old_logp), padding_mask, trl_ppo.INVALID_LOGPROB),
        vpred=torch.masked_fill(v_t, padding_mask, 0),
        mb_values=torch.masked_fill(_t(old_values), padding_mask, 0),
        mb_advantage=torch.masked_fill(_t(adv), padding_mask, 0),
        mb_return=_t(returns),
    )
    ns = _run(LOSS_BLOCK, **names)
    ns["loss"].backward()
    with torch.no_grad():
        exec(compile(PG_CLIPFRAC_BLOCK + "\n" + APPROXKL_BLOCK, "<trl block>", "exec"), ns)

    def total(lp, v):
        loss, count, metrics = losses.ppo_loss(
            lp, jnp.asarray(old_logp), jnp.asarray(adv), v, jnp.asarray(old_values), jnp.asarray(returns),
            jnp.asarray(mask), cliprange=0.2, cliprange_value=0.2, vf_coef=0.1,
        )  # fmt: skip
        assert float(count) == 1.0
        return loss, metrics

    (loss, metrics), (g_lp, g_v) = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(
        jnp.asarray(logp), jnp.asarray(values)
    )
    _close(loss, ns["loss"], what="loss")
    _close(metrics["pg_loss"], ns["pg_loss"], what="pg_loss")
    _close(metrics["vf_loss"], ns["vf_loss"], what="vf_loss")
    # TRL's clip fractions are float32 (`.float()` of the comparison, a bool mask): a float32 rounding of <= 1
    _close(metrics["clip_frac"], ns["pg_clipfrac"], tol=2.0**-24, what="clip_frac")
    _close(metrics["vf_clip_frac"], ns["vf_clipfrac"], tol=2.0**-24, what="vf_clip_frac")
    _close(g_lp, lp_t.grad, what="d loss / d logp")
    _close(g_v, v_t.grad, what="d loss / d values")
    # TRL's approxkl is an unmasked mean over all B x T entries (padding contributes 0 there); jaxfin's is the mask
    # mean, so TRL's = jaxfin's x the fraction of real tokens.
    _close(metrics["approx_kl"] * mask.mean(), ns["approxkl"], what="approx_kl (x token fraction)")
    for k in ("clip_frac", "vf_clip_frac"):  # the data clip on both losses, so those comparisons are non-trivial
        assert 0 < float(metrics[k]) < 1, k
