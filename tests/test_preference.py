"""Preference losses against TRL's formulas written out in numpy, and per-pair log-probs / reward scores of packed
rows against the same model run on each sequence alone."""

from __future__ import annotations

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tolerances import assert_close_to_scale, rounding_tol

from jaxfin.config.schema import ModelConfig
from jaxfin.data.cache import build_cache
from jaxfin.data.loader import SourceRows
from jaxfin.model import forward, init_params, scores
from jaxfin.train import preference as pref

# ------------------------------------------------------------------------------------------- numpy oracle


def _logsig(x):
    return -np.logaddexp(0.0, -x)


def trl_dpo(pc, pr, rc, rr, lc, lr, valid, loss, beta, eps, alpha):
    """TRL DPOTrainer.dpo_loss + concatenated_forward (ipo: average log-probs), in float64; rpo-style NLL per
    pair normalised by the chosen length. Returns (sum of losses, count, metric sums) over valid pairs."""
    nll = -pc / np.maximum(lc, 1)
    if loss == "ipo":
        pc, pr = pc / np.maximum(lc, 1), pr / np.maximum(lr, 1)
        rc, rr = rc / np.maximum(lc, 1), rr / np.maximum(lr, 1)
    logits = (pc - pr) - (rc - rr)
    if loss == "sigmoid":
        losses = -_logsig(beta * logits) * (1 - eps) - _logsig(-beta * logits) * eps
    elif loss == "robust":
        losses = (-_logsig(beta * logits) * (1 - eps) + _logsig(-beta * logits) * eps) / (1 - 2 * eps)
    elif loss == "hinge":
        losses = np.maximum(0.0, 1 - beta * logits)
    else:
        losses = (logits - 1 / (2 * beta)) ** 2
    losses = losses + alpha * nll
    chosen_rewards, rejected_rewards = beta * (pc - rc), beta * (pr - rr)
    v = valid.astype(bool)
    metrics = {
        "rewards/chosen": chosen_rewards[v].sum(),
        "rewards/rejected": rejected_rewards[v].sum(),
        "rewards/accuracy": (chosen_rewards > rejected_rewards)[v].sum(),
        "rewards/margin": (chosen_rewards - rejected_rewards)[v].sum(),
        "nll": nll[v].sum(),
    }
    return losses[v].sum(), v.sum(), metrics


def _random_pairs(seed, b=3, p=6):
    rng = np.random.default_rng(seed)
    lc = rng.integers(1, 40, (b, p)).astype(np.float64)
    lr = rng.integers(1, 40, (b, p)).astype(np.float64)
    valid = rng.random((b, p)) > 0.3
    lc[~valid] = 0  # empty slots, as pair_logps gives them
    lr[~valid] = 0
    pc = -lc * rng.uniform(0.5, 3.0, (b, p))
    pr = -lr * rng.uniform(0.5, 3.0, (b, p))
    rc = pc + rng.normal(0, 4, (b, p)) * (lc > 0)
    rr = pr + rng.normal(0, 4, (b, p)) * (lr > 0)
    return pc, pr, rc, rr, lc, lr, valid


def _as_jnp(**kw):
    return {k: jnp.asarray(v, jnp.float32) if v.dtype != bool else jnp.asarray(v) for k, v in kw.items()}


CASES = [(loss, beta, eps) for loss in ("sigmoid", "robust") for beta in (0.1, 0.5) for eps in (0.0, 0.2)]
CASES += [(loss, beta, 0.0) for loss in ("hinge", "ipo") for beta in (0.1, 1.0)]


@pytest.mark.parametrize("loss,beta,eps", CASES)
@pytest.mark.parametrize("alpha", [0.0, 1.0])
@pytest.mark.parametrize("reference_free", [False, True])
def test_dpo_losses_match_trl_formulas(loss, beta, eps, alpha, reference_free):
    pc, pr, rc, rr, lc, lr, valid = _random_pairs(CASES.index((loss, beta, eps)))
    if reference_free:
        rc, rr = np.zeros_like(rc), np.zeros_like(rr)
    policy = _as_jnp(chosen_logps=pc, rejected_logps=pr, chosen_len=lc, rejected_len=lr, valid=valid)
    ref = None if reference_free else _as_jnp(chosen_logps=rc, rejected_logps=rr)
    cfg = SimpleNamespace(loss=loss, beta=beta, label_smoothing=eps, nll_weight=alpha)
    total, n, metrics = pref.dpo_loss(policy, ref, cfg)
    want, want_n, want_metrics = trl_dpo(pc, pr, rc, rr, lc, lr, valid, loss, beta, eps, alpha)
    assert int(n) == want_n
    # float32: each pair's inputs (<= M) rounded and combined by up to 3 subtractions (depth 4), through a loss of
    # slope <= 1 (beta <= 1; ipo's length-normalised inputs are far below M); n pairs summed. Absolute, relative to M:
    # a sum that cancels keeps the inputs' error (~1e-3; beta off by 1% or smoothing by 0.01 moves a sum by > 4x that)
    atol = float(rounding_tol(np.float32, want_n, depth=4) * max(np.abs(x).max() for x in (pc, pr, rc, rr)))
    np.testing.assert_allclose(float(total), want, rtol=0, atol=atol)
    for k, v in want_metrics.items():
        np.testing.assert_allclose(float(metrics[k]), v, rtol=0, atol=atol, err_msg=k)
    # invalid slots get no gradient and no NaN, whatever their (empty) lengths
    logps = {k: policy[k] for k in ("chosen_logps", "rejected_logps")}
    g = jax.grad(lambda lp: pref.dpo_loss({**policy, **lp}, ref, cfg)[0])(logps)
    for k in logps:
        assert np.isfinite(g[k]).all() and (np.asarray(g[k])[~valid] == 0).all()


def test_dpo_gradient_matches_formula():
    """d loss / d π_c for sigmoid DPO = −β(1−ε)σ(−βΔ) + βεσ(βΔ) (− α / |chosen| from the NLL term)."""
    pc, pr, rc, rr, lc, lr, valid = _random_pairs(7)
    beta, eps, alpha = 0.3, 0.1, 0.5
    policy = _as_jnp(chosen_logps=pc, rejected_logps=pr, chosen_len=lc, rejected_len=lr, valid=valid)
    cfg = SimpleNamespace(loss="sigmoid", beta=beta, label_smoothing=eps, nll_weight=alpha)
    ref = _as_jnp(chosen_logps=rc, rejected_logps=rr)
    g = jax.grad(lambda lp: pref.dpo_loss({**policy, **lp}, ref, cfg)[0])({"chosen_logps": policy["chosen_logps"]})
    z = beta * ((pc - pr) - (rc - rr))
    sig = 1 / (1 + np.exp(-z))
    want = (-beta * (1 - eps) * (1 - sig) + beta * eps * sig - alpha / np.maximum(lc, 1)) * valid
    # float32: z carries ~4 roundings of inputs <= M, which sigma' <= 1/4 passes on as beta^2 M / 4; the rest are a
    # few roundings of terms <= beta + alpha
    m = max(np.abs(x).max() for x in (pc, pr, rc, rr))
    atol = float(rounding_tol(np.float32, 1, depth=4) * (beta**2 * m / 4 + beta + alpha))  # ~8e-6
    np.testing.assert_allclose(np.asarray(g["chosen_logps"]), want, rtol=0, atol=atol)


def test_bad_settings_refused():
    policy = _as_jnp(**dict(zip(("chosen_logps", "rejected_logps", "chosen_len", "rejected_len"),
                                _random_pairs(0)[:2] + _random_pairs(0)[4:6])), valid=_random_pairs(0)[6])  # fmt: skip
    for bad, match in (({"loss": "kto"}, "objective.loss"), ({"label_smoothing": 0.5}, "label_smoothing"),
                       ({"beta": 0.0}, "beta")):  # fmt: skip
        cfg = SimpleNamespace(**{"loss": "robust", "beta": 0.1, "label_smoothing": 0.0, "nll_weight": 0.0, **bad})
        with pytest.raises(ValueError, match=match):
            pref.dpo_loss(policy, None, cfg)


def test_reward_loss_matches_bradley_terry():
    rng = np.random.default_rng(1)
    c, r = rng.normal(0, 2, (4, 5)), rng.normal(0, 2, (4, 5))
    valid = rng.random((4, 5)) > 0.3
    total, n, m = jax.jit(pref.reward_loss)(jnp.asarray(c, jnp.float32), jnp.asarray(r, jnp.float32), valid)
    want = np.log1p(np.exp(-(c - r)))[valid].sum()  # −log σ(s_c − s_r)
    assert int(n) == valid.sum()
    # float32: scores (<= M) rounded, one subtraction, softplus (slope <= 1) rounded: depth 3; n pairs summed;
    # absolute, relative to M (~4e-5)
    atol = float(rounding_tol(np.float32, int(valid.sum()), depth=3) * max(np.abs(c).max(), np.abs(r).max()))
    np.testing.assert_allclose(float(total), want, rtol=0, atol=atol)
    np.testing.assert_allclose(float(m["rewards/accuracy"]), (c > r)[valid].sum())  # a count: exact
    np.testing.assert_allclose(float(m["rewards/margin"]), (c - r)[valid].sum(), rtol=0, atol=atol)
    np.testing.assert_allclose(float(m["rewards/chosen"]), c[valid].sum(), rtol=0, atol=atol)


# ------------------------------------------------------------------------------------------- packed vs alone

SEQ, VOCAB = 48, 64


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    """Rows of packed pairs (random tokens) from SourceRows, and each pair's two sequences on their own."""
    rng = np.random.default_rng(0)
    seqs = []
    for _ in range(14):
        prompt = [1, *rng.integers(3, VOCAB, int(rng.integers(0, 9)))]
        for _ in range(2):
            comp = [*rng.integers(3, VOCAB, int(rng.integers(1, 8))), 2]
            seqs.append((prompt + comp, [0] * len(prompt) + [1] * len(comp)))
    prompt = [1, *rng.integers(3, VOCAB, 30)]  # one overlong pair (89 tokens), truncated to fit a row
    seqs.append((prompt + [*rng.integers(3, VOCAB, 20), 2], [0] * 31 + [1] * 21))
    seqs.append((prompt + [*rng.integers(3, VOCAB, 5), 2], [0] * 31 + [1] * 6))
    cache = build_cache(seqs, VOCAB, tmp_path_factory.mktemp("pairs") / "c", meta=dict)
    src = SourceRows("p", cache, SEQ, seed=0, method="best_fit", window=100, pairs=True)
    assert src.pairs.truncated == 1
    rows = [src.row(k) for k in range(src.rows_in_epoch())]
    rows.append({k: np.zeros_like(v) for k, v in rows[0].items()})  # a padding row (as dev batches have)
    batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    alone = []  # (row, pair slot, side, tokens, mask) of every sequence, cut out of the packed rows
    for b in range(len(rows)):
        seg = batch["segment_ids"][b]
        for s in range(1, int(seg.max()) + 1):
            at = seg == s
            alone.append((b, (s - 1) // 2, (s - 1) % 2, batch["tokens"][b][at], batch["loss_mask"][b][at]))
    assert sum(1 for a in alone if a[2] == 0) == 15
    return batch, alone


@pytest.fixture(scope="module")
def model_cfg():
    return ModelConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                       num_kv_heads=2, max_position_embeddings=64, compute_dtype="float32", num_labels=1)  # fmt: skip


def _alone_padded(alone):
    """Every sequence alone in its own row, right-padded: causal attention makes the padding invisible."""
    toks = np.zeros((len(alone), SEQ), np.int32)
    for i, (*_, t, _m) in enumerate(alone):
        toks[i, : len(t)] = t
    return jnp.asarray(toks)


def test_pair_logps_equal_each_sequence_alone(packed, model_cfg):
    batch, alone = packed
    cfg = ModelConfig(**{**model_cfg.__dict__, "num_labels": 0})
    params = init_params(cfg, jax.random.key(0))
    jb = {k: jnp.asarray(v) for k, v in batch.items()}
    got = jax.jit(lambda p, b: pref.pair_logps(forward(p, cfg, b["tokens"], b["segment_ids"], b["positions"]), b))(
        params, jb
    )
    assert got["chosen_logps"].shape == (len(batch["tokens"]), SEQ // 2)
    logits = jax.jit(lambda p, t: forward(p, cfg, t))(params, _alone_padded(alone))
    logp = np.asarray(jax.nn.log_softmax(logits, -1), np.float64)
    want = {k: np.zeros(got[k].shape) for k in ("chosen_logps", "rejected_logps", "chosen_len", "rejected_len")}
    for i, (b, k, side, t, m) in enumerate(alone):
        tgt = np.flatnonzero(m[1:]) + 1  # positions whose token is a target (the first token never is)
        name = ("chosen", "rejected")[side]
        want[f"{name}_logps"][b, k] = logp[i, tgt - 1, t[tgt]].sum()
        want[f"{name}_len"][b, k] = len(tgt)
    # float32, two programs (packed with segment ids / each alone): per target, the logits' rounding (depth ~4L+2 of
    # up to SEQ*D terms, relative to max|logit|) plus a logsumexp over V (relative to max|logp|), summed over <= k
    # targets: ~3e-3 here, while attention across documents moves a sum by 0.05-0.15 (lengths are counts: exact)
    logits_tol = rounding_tol(np.float32, SEQ * cfg.hidden_size, depth=4 * cfg.num_layers + 2) * np.abs(logits).max()
    lse_tol = rounding_tol(np.float32, VOCAB, depth=2) * np.abs(logp).max()
    atol = float(max(want["chosen_len"].max(), want["rejected_len"].max()) * (logits_tol + lse_tol))
    for k, v in want.items():
        np.testing.assert_allclose(np.asarray(got[k]), v, rtol=0, atol=atol, err_msg=k)
    np.testing.assert_array_equal(np.asarray(got["valid"]), (want["chosen_len"] > 0) & (want["rejected_len"] > 0))
    assert int(np.asarray(got["valid"]).sum()) == 15


def test_reward_scores_at_last_token_equal_each_sequence_alone(packed, model_cfg):
    batch, alone = packed
    params = init_params(model_cfg, jax.random.key(1))
    jb = {k: jnp.asarray(v) for k, v in batch.items()}

    def at_last(p, b):
        s = scores(p, model_cfg, b["tokens"], b["segment_ids"], b["positions"])[..., 0]
        return pref.reward_scores_at_last_token(s, b)

    chosen, rejected, valid = jax.jit(at_last)(params, jb)
    solo = np.asarray(jax.jit(lambda p, t: scores(p, model_cfg, t))(params, _alone_padded(alone))[..., 0])
    want = np.zeros((2, *chosen.shape))
    has = np.zeros((2, *chosen.shape), bool)
    for i, (b, k, side, t, _m) in enumerate(alone):
        want[side, b, k] = solo[i, len(t) - 1]
        has[side, b, k] = True
    # float32, two programs: depth ~4L+2 reductions of up to SEQ*D terms, relative to the scores' max-abs (~3e-5;
    # attention across documents moves a score by ~0.03)
    tol = rounding_tol(np.float32, SEQ * model_cfg.hidden_size, depth=4 * model_cfg.num_layers + 2)
    assert_close_to_scale(np.asarray(chosen), want[0], tol)
    assert_close_to_scale(np.asarray(rejected), want[1], tol)
    np.testing.assert_array_equal(np.asarray(valid), has[0] & has[1])


def test_segment_sums():
    rng = np.random.default_rng(2)
    seg = np.sort(rng.integers(0, 5, (3, 10)), axis=1)[:, ::-1].copy()  # padding (0) at the end
    vals = rng.normal(size=(3, 10))
    got = np.asarray(pref.segment_sums(jnp.asarray(vals), jnp.asarray(seg), 11))
    want = np.zeros((3, 11))
    for b in range(3):
        np.add.at(want[b], seg[b], vals[b])
    assert_close_to_scale(got, want, rounding_tol(np.float32, 10))  # float32 sums of <= 10 values (rounded inputs)
