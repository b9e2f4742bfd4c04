"""Next-token loss on packed rows, LR schedules, AdamW with decay mask and clipping, gradient accumulation."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tolerances import assert_close_to_scale, rounding_tol

from jaxfin.config.schema import ModelConfig, ObjectiveConfig, OptimizerConfig
from jaxfin.model import forward, param_shapes
from jaxfin.model.loss import next_token_loss_sum
from jaxfin.train.optimizer import decay_mask, make_optimizer, make_schedule
from jaxfin.train.step import make_train_step

# ---------------------------------------------------------------- loss


def oracle_loss_sum(logits, batch):
    """Loop: pair (t, t+1) counts iff seg[t] != 0, seg[t+1] == seg[t] and loss_mask[t+1] == 1; float64 NLL."""
    logits = np.asarray(logits, np.float64)
    tokens, seg, mask = (np.asarray(batch[k]) for k in ("tokens", "segment_ids", "loss_mask"))
    total, count = 0.0, 0
    for b in range(tokens.shape[0]):
        for t in range(tokens.shape[1] - 1):
            if seg[b, t] != 0 and seg[b, t + 1] == seg[b, t] and mask[b, t + 1] == 1:
                row = logits[b, t]
                logz = row.max() + math.log(np.exp(row - row.max()).sum())
                total += logz - row[tokens[b, t + 1]]
                count += 1
    return total, count


def _loss_batch():
    # row 0: three documents + padding, with a masked-out "prompt" inside doc 2
    # row 1: one long document then padding, first target masked
    seg = np.array([[1, 1, 1, 2, 2, 2, 2, 3, 3, 0], [1, 1, 1, 1, 1, 1, 0, 0, 0, 0]], np.int32)
    pos = np.array([[0, 1, 2, 0, 1, 2, 3, 0, 1, 0], [0, 1, 2, 3, 4, 5, 0, 0, 0, 0]], np.int32)
    mask = (seg != 0).astype(np.int32)
    mask[0, 3:5] = 0
    mask[1, 1] = 0
    rng = np.random.default_rng(0)
    tokens = np.where(seg != 0, rng.integers(1, 11, seg.shape), 0).astype(np.int32)
    batch = {"tokens": tokens, "segment_ids": seg, "positions": pos, "loss_mask": mask}
    logits = (3 * rng.standard_normal((2, 10, 11))).astype(np.float32)
    return logits, batch


_loss_fn = jax.jit(next_token_loss_sum)


def _loss(logits, batch):
    total, count = _loss_fn(jnp.asarray(logits), {k: jnp.asarray(v) for k, v in batch.items()})
    return float(total), float(count)


def test_next_token_loss_sum_matches_loop_oracle():
    logits, batch = _loss_batch()
    total, count = _loss(logits, batch)
    want_total, want_count = oracle_loss_sum(logits, batch)
    # row 0: doc 1 (0,1),(1,2); doc 2 (4,5),(5,6) [(3,4) has a masked target]; doc 3 (7,8)
    # row 1: (1,2),(2,3),(3,4),(4,5) [(0,1) has a masked target]
    assert want_count == 2 + 2 + 1 + 4
    assert count == want_count
    # float32: each NLL is a logsumexp over V logits then a subtraction (depth 2), off by rounding relative to the
    # largest logit (an NLL that cancels small keeps that error); `count` of them summed
    tol = float(rounding_tol(np.float32, logits.shape[-1], depth=2) * count * np.abs(logits).max())  # ~4e-4 of ~26
    assert total == pytest.approx(want_total, abs=tol)


@pytest.mark.parametrize("t", [2, 6, 8, 9], ids=["end-doc1", "end-doc2", "end-doc3", "padding"])
def test_logits_at_a_document_end_do_not_matter(t):
    logits, batch = _loss_batch()
    base = _loss(logits, batch)
    changed = logits.copy()
    changed[0, t] = np.random.default_rng(t).standard_normal(changed.shape[-1]) * 50
    assert _loss(changed, batch) == base


def test_logits_inside_a_document_do_matter():
    logits, batch = _loss_batch()
    base = _loss(logits, batch)
    changed = logits.copy()
    changed[0, 5] += 10 * np.eye(11)[batch["tokens"][0, 6]]  # make the right next token far likelier
    total, count = _loss(changed, batch)
    assert count == base[1] and total < base[0] - 1


# ---------------------------------------------------------------- schedules
# A schedule value is ~10 float32 scalar ops on lr (no reduction), cancelling at most lr/lo = 10x near the floor:
# a few tens of eps relative at worst (measured: 5 eps), within rel=1e-5 (84 eps).


def _values(ocfg, total):
    sched = make_schedule(ocfg, total)
    return np.asarray(jax.jit(jax.vmap(sched))(jnp.arange(total + 6)), np.float64)


def _warm(lr, warm, k):
    return lr / warm + (lr - lr / warm) * k / (warm - 1)


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_schedule_values(kind):
    lr, warm, total, ratio = 2e-3, 10, 110, 0.1
    ocfg = OptimizerConfig(lr=lr, schedule=kind, warmup_steps=warm, min_lr_ratio=ratio)
    vals = _values(ocfg, total)
    lo, T = lr * ratio, total - warm

    def decay(t):
        if kind == "cosine":
            return lo + (lr - lo) * (1 + math.cos(math.pi * t / T)) / 2
        return lr + (lo - lr) * t / T

    expected = {0: lr / warm, 4: _warm(lr, warm, 4), warm - 1: lr, warm: lr}
    for step in (warm + 17, warm + T // 2, total - 1, total):
        expected[step] = decay(step - warm)
    expected[total + 5] = lo  # stays at the floor after the end
    # optax evaluates the schedule in float32: a few ops, no cancellation (values stay >= min_lr > 0), so a few u of
    # each value; rel 1e-5 = 170u. One step off moves a value by >= 1e-3 relative here.
    for step, want in expected.items():
        assert vals[step] == pytest.approx(want, rel=1e-5), (kind, step)
    assert vals[0] > 0
    assert np.all(np.diff(vals[:warm]) > 0) and np.all(np.diff(vals[warm : total + 1]) < 0)


def test_warmup_ratio_when_warmup_steps_is_minus_one():
    lr, total = 1e-3, 200
    ocfg = OptimizerConfig(lr=lr, schedule="cosine", warmup_steps=-1, warmup_ratio=0.1, min_lr_ratio=0.0)
    vals = _values(ocfg, total)
    warm = 20  # float32 schedule values: rel 1e-5 = 170u, as in test_schedule_values
    assert vals[0] == pytest.approx(lr / warm, rel=1e-5)
    assert vals[10] == pytest.approx(_warm(lr, warm, 10), rel=1e-5)
    assert vals[warm - 1] == pytest.approx(lr, rel=1e-5)
    assert vals[warm] == pytest.approx(lr, rel=1e-5)
    assert vals[warm + 90] == pytest.approx(lr * (1 + math.cos(math.pi * 0.5)) / 2, rel=1e-5)
    # cos(pi) in float32 is -1 up to an ulp: at most ~eps*lr/2 (an off-by-one step would give lr*(pi/T)^2/4 ~ 8e-8)
    assert vals[total] == pytest.approx(0.0, abs=2 * float(np.finfo(np.float32).eps) * lr)


def test_no_warmup_and_constant():
    vals = _values(OptimizerConfig(lr=1e-3, schedule="cosine", warmup_steps=0, min_lr_ratio=0.5), 50)
    assert vals[0] == pytest.approx(1e-3, rel=1e-6)  # lr rounded to float32 (<= eps/2) times cos(0) = 1
    assert vals[25] == pytest.approx(0.5e-3 + 0.5e-3 * (1 + math.cos(math.pi * 0.5)) / 2, rel=1e-5)
    vals = _values(OptimizerConfig(lr=1e-3, schedule="constant", warmup_steps=5), 50)
    assert vals[0] == pytest.approx(1e-3 / 5, rel=1e-5)
    np.testing.assert_allclose(vals[4:], 1e-3, rtol=1e-6)  # lr itself, rounded to float32 (<= eps/2)


# ---------------------------------------------------------------- optimizer

SMALL = ModelConfig(vocab_size=13, hidden_size=8, intermediate_size=12, num_layers=2, num_heads=2, num_kv_heads=1)


def _np_params(cfg, seed=0, scale=0.5):
    rng = np.random.default_rng(seed)
    leaves, tdef = jax.tree.flatten_with_path(param_shapes(cfg), is_leaf=lambda x: isinstance(x, tuple))
    out = []
    for path, shape in leaves:
        base = 1.0 if path[-1].key == "scale" else 0.0
        out.append(jnp.asarray(base + scale * rng.standard_normal(shape), jnp.float32))
    return jax.tree.unflatten(tdef, out)


def _path_str(path):
    return "/".join(p.key for p in path)


def test_decay_mask_excludes_exactly_scales_and_biases():
    import dataclasses

    params = _np_params(dataclasses.replace(SMALL, attention_bias=True))
    mask = decay_mask(params)
    got = {_path_str(p): m for p, m in jax.tree.leaves_with_path(mask)}
    no_decay = {
        "layers/input_layernorm/scale",
        "layers/post_attention_layernorm/scale",
        "norm/scale",
        "layers/self_attn/q_proj/bias",
        "layers/self_attn/k_proj/bias",
        "layers/self_attn/v_proj/bias",
    }
    assert no_decay <= set(got)
    for path, m in got.items():
        assert m is (path not in no_decay), path
    assert got["embed_tokens/embedding"] is True and got["lm_head/kernel"] is True


_STEPS: dict = {}


def _one_update(ocfg, params, grads, total_steps=10):
    """One optimizer step from a fresh state (jitted once per optimizer config)."""
    key = (repr(ocfg), total_steps)
    if key not in _STEPS:
        opt = make_optimizer(ocfg, total_steps)

        def step(params, grads):
            updates, _ = opt.update(grads, opt.init(params), params)
            return optax.apply_updates(params, updates)

        _STEPS[key] = jax.jit(step)
    return _STEPS[key](params, grads)


# a small pytree with the model's path names: decayed kernels/embeddings, undecayed scales and biases
TREE_SHAPES = {
    "embed_tokens": {"embedding": (5, 3)},
    "layers": {
        "input_layernorm": {"scale": (2, 3)},
        "self_attn": {"q_proj": {"kernel": (2, 3, 2, 2), "bias": (2, 2, 2)}},
    },
    "norm": {"scale": (3,)},
}


def _tree(seed=0, scale=0.5):
    rng = np.random.default_rng(seed)
    leaves, tdef = jax.tree.flatten_with_path(TREE_SHAPES, is_leaf=lambda x: isinstance(x, tuple))
    out = []
    for path, shape in leaves:
        base = 1.0 if path[-1].key == "scale" else 0.0
        out.append(jnp.asarray(base + scale * rng.standard_normal(shape), jnp.float32))
    return jax.tree.unflatten(tdef, out)


def test_weight_decay_on_zero_gradients():
    lr, wd = 0.1, 0.5
    ocfg = OptimizerConfig(lr=lr, schedule="constant", warmup_steps=0, weight_decay=wd, clip_norm=1.0)
    params = _tree()
    zeros = jax.tree.map(jnp.zeros_like, params)
    new = _one_update(ocfg, params, zeros)
    for (path, w), w_new in zip(jax.tree.leaves_with_path(params), jax.tree.leaves(new)):
        w, w_new = np.asarray(w, np.float64), np.asarray(w_new, np.float64)
        if path[-1].key in ("scale", "bias"):
            np.testing.assert_array_equal(w_new, w, err_msg=_path_str(path))
        else:
            # elementwise, no reduction: three float32 roundings of each entry (<= 3 eps/2 of it)
            np.testing.assert_allclose(
                w_new, w - lr * wd * w, rtol=4 * np.finfo(np.float32).eps, err_msg=_path_str(path)
            )


def _numpy_adamw_first_step(w, g, lr, b1, b2, eps, wd, decay):
    m = (1 - b1) * g
    v = (1 - b2) * g * g
    m_hat = m / (1 - b1)
    v_hat = v / (1 - b2)
    return w - lr * (m_hat / (np.sqrt(v_hat) + eps) + (wd * w if decay else 0.0))


def test_clipping_then_adamw_matches_numpy():
    # eps comparable to the clipped gradients, so that Adam's first step depends on the gradient scale
    lr, b1, b2, eps, wd = 0.05, 0.9, 0.95, 0.05, 0.1
    params = _tree(seed=1)
    rng = np.random.default_rng(2)
    raw = jax.tree.map(lambda p: rng.standard_normal(p.shape), params)
    norm = math.sqrt(sum(float((g**2).sum()) for g in jax.tree.leaves(raw)))
    grads = jax.tree.map(lambda g: jnp.asarray(g * 10.0 / norm, jnp.float32), raw)  # global norm exactly 10
    gnorm = math.sqrt(sum(float((np.asarray(g, np.float64) ** 2).sum()) for g in jax.tree.leaves(grads)))
    # entries rounded to float32 (<= eps/2 each), summed in float64
    assert gnorm == pytest.approx(10.0, rel=float(np.finfo(np.float32).eps))

    def expected(scale):
        return jax.tree.map_with_path(
            lambda path, w, g: _numpy_adamw_first_step(
                np.asarray(w, np.float64),
                np.asarray(g, np.float64) * scale,
                lr,
                b1,
                b2,
                eps,
                wd,
                decay=path[-1].key not in ("scale", "bias"),
            ),
            params,
            grads,
        )

    base = dict(lr=lr, schedule="constant", warmup_steps=0, b1=b1, b2=b2, eps=eps, weight_decay=wd)
    # float32: the global norm over n entries, then ~10 elementwise roundings of a step of size <= 1, times lr
    # (absolute, depth 2); w + update rounds relative to w
    n = sum(g.size for g in jax.tree.leaves(grads))
    tol = dict(rtol=4 * np.finfo(np.float32).eps, atol=lr * rounding_tol(np.float32, n, depth=2))  # atol ~5e-7
    clipped = _one_update(OptimizerConfig(**base, clip_norm=1.0), params, grads)
    for (path, got), want in zip(jax.tree.leaves_with_path(clipped), jax.tree.leaves(expected(0.1))):
        np.testing.assert_allclose(np.asarray(got), want, **tol, err_msg=_path_str(path))
    # clip_norm = 0 is off: the raw gradients are used, which gives a visibly different update
    unclipped = _one_update(OptimizerConfig(**base, clip_norm=0.0), params, grads)
    for (path, got), want in zip(jax.tree.leaves_with_path(unclipped), jax.tree.leaves(expected(1.0))):
        np.testing.assert_allclose(np.asarray(got), want, **tol, err_msg=_path_str(path))
    diff = max(
        float(np.abs(np.asarray(a) - np.asarray(b)).max())
        for a, b in zip(jax.tree.leaves(clipped), jax.tree.leaves(unclipped))
    )
    assert diff > 1e-3
    # a gradient below the clip norm is left alone
    small = jax.tree.map(lambda g: g * 0.05, grads)  # global norm 0.5 < 1
    got = _one_update(OptimizerConfig(**base, clip_norm=1.0), params, small)
    for a, want in zip(jax.tree.leaves(got), jax.tree.leaves(expected(0.05))):
        np.testing.assert_allclose(np.asarray(a), want, **tol)


# ---------------------------------------------------------------- gradient accumulation


def _accum_batch(seq=12):
    """8 rows with very different target counts: micro-batches of 2 rows hold 22, 1, 9 and 17 targets."""
    rng = np.random.default_rng(3)
    lengths = [
        [12],  # rows 0-1: one full document each
        [12],
        [2],  # rows 2-3: mostly padding
        [1],
        [3, 3],  # rows 4-5: several documents
        [4, 2, 2],
        [6, 6],
        [5, 5, 2],
    ]
    tokens = np.zeros((8, seq), np.int32)
    seg = np.zeros((8, seq), np.int32)
    pos = np.zeros((8, seq), np.int32)
    for r, docs in enumerate(lengths):
        i = 0
        for d, n in enumerate(docs, 1):
            tokens[r, i : i + n] = rng.integers(1, SMALL.vocab_size, n)
            seg[r, i : i + n] = d
            pos[r, i : i + n] = np.arange(n)
            i += n
    mask = (seg != 0).astype(np.int32)
    mask[6, :3] = 0  # an SFT-style prompt
    return {"tokens": tokens, "segment_ids": seg, "positions": pos, "loss_mask": mask}


def test_gradient_accumulation_is_token_weighted_and_matches_one_batch():
    params = _np_params(SMALL, seed=4)
    ocfg = OptimizerConfig(lr=1e-2, schedule="constant", warmup_steps=0, weight_decay=0.1, clip_norm=1.0)
    opt = make_optimizer(ocfg, 10)
    sched = make_schedule(ocfg, 10)
    batch = {k: jnp.asarray(v) for k, v in _accum_batch().items()}
    state = {"params": params, "opt_state": opt.init(params), "step": jnp.int32(0), "rng": jax.random.key(0)}

    objective = ObjectiveConfig()
    s1, m1 = jax.jit(make_train_step(SMALL, objective, opt, sched, micro_batches=1))(state, batch)
    s4, m4 = jax.jit(make_train_step(SMALL, objective, opt, sched, micro_batches=4))(state, batch)

    # oracle: one direct forward of the whole batch, NLL and target count by the loop rule, in float64
    logits = jax.jit(lambda p: forward(p, SMALL, batch["tokens"], batch["segment_ids"], batch["positions"]))(params)
    total, count = oracle_loss_sum(logits, batch)
    per_micro = [
        oracle_loss_sum(np.asarray(logits)[2 * i : 2 * i + 2], {k: v[2 * i : 2 * i + 2] for k, v in batch.items()})
        for i in range(4)
    ]
    assert [c for _, c in per_micro] == [22, 1, 9, 17]
    mean_of_means = np.mean([t / c for t, c in per_micro])
    token_mean = total / count
    assert abs(mean_of_means - token_mean) > 1e-3 * token_mean  # the test can tell the two apart

    assert float(m1["target_tokens"]) == count and float(m4["target_tokens"]) == count
    # three float32 programs (micro-batched, one batch, the oracle's forward): depth ~4L+2 reductions of up to B*S
    # terms (weight gradients sum over tokens), relative to the max-abs of the logits (loss) / gradients (its norm)
    tol = float(
        rounding_tol(np.float32, batch["tokens"].size, depth=4 * SMALL.num_layers + 2)
    )  # ~7e-5, gap above: >1e-3
    loss_tol = tol * float(np.abs(np.asarray(logits)).max())
    assert float(m4["loss"]) == pytest.approx(token_mean, abs=loss_tol)
    assert float(m4["loss"]) == pytest.approx(float(m1["loss"]), abs=loss_tol)
    assert float(m4["grad_norm"]) == pytest.approx(float(m1["grad_norm"]), rel=tol)
    assert int(s4["step"]) == 1 and int(s1["step"]) == 1
    # Adam's first step is ~lr*sign(g), blind to the gradients' rounding (measured 4e-7 of a leaf's max-abs; its
    # smallest |g| is 7e-5 of it): only w + update rounds, so the two agree to about an ulp of w
    for (path, a), b in zip(jax.tree.leaves_with_path(s1["params"]), jax.tree.leaves(s4["params"])):
        assert_close_to_scale(b, a, 2 * np.finfo(np.float32).eps, err_msg=_path_str(path))
    # and the step did move the parameters
    moved = max(
        float(np.abs(np.asarray(a) - np.asarray(b)).max())
        for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(s4["params"]))
    )
    assert moved > 1e-3
