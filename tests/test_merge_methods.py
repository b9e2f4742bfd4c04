"""Per-tensor merge methods against oracles written out independently in numpy (float64), hand-checked cases,
and properties (TIES with one model = task arithmetic, SLERP endpoints, model stock t=1, DARE statistics, ...)."""

import math

import numpy as np
import pytest
from tolerances import assert_close_to_scale, rounding_tol

from jaxfin.merge.methods import (
    METHODS,
    MergeError,
    abs_sample,
    breadcrumbs_thresholds,
    magnitude_threshold,
    merge_tensor,
)

RNG = np.random.default_rng(1234)
# An entry-by-entry merge of <= 3 float32 tensors takes <= 6 chained roundings (θ−b, ×w, Σ, ÷Σw, ×λ, +b), each <= u
# of the terms' size: rounding_tol(3 terms, depth 6) = 125u bounds even that worst case (18u), relative to max-abs.
ELEMENTWISE = rounding_tol(np.float32, 3, depth=6)


def rand(*shape, scale=1.0):
    return (RNG.normal(size=shape) * scale).astype(np.float32)


def f64(x):
    return np.asarray(x, dtype=np.float64)


# ---------------------------------------------------------------- independent oracles (float64, plain numpy)


def oracle_topk_keep(delta, density):
    """Keep the int(density·n) largest |δ|; among equal magnitudes the lower flat index first."""
    flat = f64(delta).ravel()
    if density >= 1:
        return np.ones(flat.size, bool).reshape(np.shape(delta))
    k = int(density * flat.size)
    order = np.argsort(-np.abs(flat), kind="stable")
    keep = np.zeros(flat.size, bool)
    keep[order[:k]] = True
    return keep.reshape(np.shape(delta))


def oracle_breadcrumbs_keep(delta, density, gamma):
    flat = f64(delta).ravel()
    n = flat.size
    if density >= 1:
        return np.ones(n, bool).reshape(np.shape(delta))
    order = np.argsort(-np.abs(flat), kind="stable")  # largest first
    target, n_top = int(density * n), int(gamma * n)
    n_top = min(n_top, n - target)
    keep = np.zeros(n, bool)
    keep[order[n_top : n_top + target]] = True
    return keep.reshape(np.shape(delta))


def oracle_ties_merge(deltas, weights, normalize, lam=1.0):
    """Elect per element the sign of Σ w_i δ_i (>= 0 -> +), mean/sum of the agreeing w_i δ_i."""
    out = np.zeros(deltas[0].shape)
    for idx in np.ndindex(out.shape):
        wd = [w * f64(d)[idx] for d, w in zip(deltas, weights)]
        s = 1.0 if sum(wd) >= 0 else -1.0
        agree = [j for j, v in enumerate(wd) if np.sign(v) == s]
        num = sum(wd[j] for j in agree)
        den = sum(weights[j] for j in agree)
        out[idx] = num / (den if den != 0 else 1.0) if normalize else num
    return lam * out


def oracle_slerp(t, a, b):
    a, b = f64(a).ravel(), f64(b).ravel()
    cos = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    if abs(cos) > 0.9995:
        return (1 - t) * a + t * b
    om = math.acos(cos)
    return math.sin((1 - t) * om) / math.sin(om) * a + math.sin(t * om) / math.sin(om) * b


def mp(*weights, **kw):
    return [
        {"weight": w, **{k: (v[i] if isinstance(v, list) else v) for k, v in kw.items()}} for i, w in enumerate(weights)
    ]


# ---------------------------------------------------------------- linear / task arithmetic


def test_linear_golden_and_identical_models():
    xs = [rand(4, 6) for _ in range(3)]
    w = [0.2, 0.5, 0.7]
    got = merge_tensor("linear", xs, None, mp(*w), {})
    want = sum(wi * f64(x) for wi, x in zip(w, xs)) / sum(w)
    assert_close_to_scale(got, want, ELEMENTWISE)
    got = merge_tensor("linear", xs, None, mp(*w), {"normalize": False})
    assert_close_to_scale(got, sum(wi * f64(x) for wi, x in zip(w, xs)), ELEMENTWISE)
    x = rand(5, 3)
    # same-sign terms, no cancellation: 4 roundings relative to each entry (1e-6 = 17u)
    np.testing.assert_allclose(merge_tensor("linear", [x, x, x], None, mp(1, 2, 3), {}), x, rtol=1e-6)
    assert got.dtype == np.float32


def test_linear_bf16_inputs_give_float32():
    import ml_dtypes

    x = rand(3, 4).astype(ml_dtypes.bfloat16)
    got = merge_tensor("linear", [x], None, mp(1.0), {})
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, x.astype(np.float32))


@pytest.mark.parametrize("normalize", [False, True])
def test_task_arithmetic_golden(normalize):
    b = rand(3, 5)
    xs = [rand(3, 5) for _ in range(2)]
    w, lam = [0.6, -0.3], 0.8
    got = merge_tensor("task_arithmetic", xs, b, mp(*w), {"lambda": lam, "normalize": normalize})
    tv = sum(wi * (f64(x) - f64(b)) for wi, x in zip(w, xs))
    if normalize:
        tv = tv / sum(w)
    assert_close_to_scale(got, f64(b) + lam * tv, ELEMENTWISE)


# ---------------------------------------------------------------- TIES


def test_ties_hand_checked_election_zero_counts_as_plus():
    b = np.zeros(6, np.float32)
    d1 = np.array([1.0, -2.0, 0.5, 3.0, 0.0, -1.0], np.float32)
    d2 = np.array([-3.0, 1.0, 0.5, -3.0, 0.0, 1.0], np.float32)
    # equal weights: sums -2, -1, 1, 0(+), 0(+, nobody agrees), 0(+)
    got = merge_tensor("ties", [d1, d2], b, mp(1.0, 1.0), {})
    np.testing.assert_array_equal(got, [-3.0, -2.0, 0.5, 3.0, 0.0, 1.0])
    # weights 2, 1: weighted sums -1, -3, 1.5, 3, 0, -1 -> weighted mean over the agreeing models
    got = merge_tensor("ties", [d1, d2], b, mp(2.0, 1.0), {})
    np.testing.assert_array_equal(got, [-3.0, -2.0, 0.5, 3.0, 0.0, -1.0])
    # normalize false: the sum of the agreeing weighted deltas; lambda scales the result
    got = merge_tensor("ties", [d1, d2], b, mp(2.0, 1.0), {"normalize": False, "lambda": 0.5})
    np.testing.assert_array_equal(got, 0.5 * np.array([-3.0, -4.0, 1.5, 6.0, 0.0, -2.0]))
    # agreeing weights that sum to 0 (w = 1, -1): mergekit reads the zero divisor as 1
    one = np.ones(1, np.float32)
    np.testing.assert_array_equal(merge_tensor("ties", [one, -one], b[:1], mp(1.0, -1.0), {}), [2.0])


def test_ties_trim_ties_in_magnitude_go_to_lower_index():
    b = np.zeros(6, np.float32)
    d = np.array([1.0, -2.0, 0.5, 3.0, 0.0, -1.0], np.float32)  # |d| = 1 at index 0 and 5: keep index 0
    got = merge_tensor("ties", [d], b, mp(1.0, density=0.5), {})
    np.testing.assert_array_equal(got, [1.0, -2.0, 0.0, 3.0, 0.0, 0.0])


@pytest.mark.parametrize("normalize", [True, False])
def test_ties_golden_random(normalize):
    b = rand(4, 7)
    xs = [b + rand(4, 7, scale=0.1) for _ in range(3)]
    w, dens, lam = [0.5, 1.0, 0.3], [0.5, 0.3, 0.8], 1.3
    got = merge_tensor("ties", xs, b, mp(*w, density=dens), {"normalize": normalize, "lambda": lam})
    trimmed = []
    for x, d in zip(xs, dens):
        delta = f64(x) - f64(b)
        trimmed.append(np.where(oracle_topk_keep(delta, d), delta, 0.0))
    want = f64(b) + oracle_ties_merge(trimmed, w, normalize, lam)
    assert_close_to_scale(got, want, ELEMENTWISE)


def test_ties_density_one_single_model_is_task_arithmetic():
    b, x = rand(6, 6), rand(6, 6)
    for w, normalize in [(1.0, True), (0.7, False)]:
        ties = merge_tensor("ties", [x], b, mp(w, density=1.0), {"normalize": normalize, "lambda": 0.9})
        ta = merge_tensor("task_arithmetic", [x], b, mp(w), {"lambda": 0.9})
        assert_close_to_scale(ties, ta, ELEMENTWISE)


def test_ties_election_variants():
    b = np.zeros(3, np.float32)
    d1 = np.array([1.0, 1.0, 1.0], np.float32)
    d2 = np.array([-2.0, -2.0, -0.5], np.float32)
    w = mp(3.0, 1.0)
    # weighted sum: 3-2=1 (+), 3-2 (+), 3-0.5 (+) -> only model 1 agrees
    np.testing.assert_array_equal(merge_tensor("ties", [d1, d2], b, w, {}), [1.0, 1.0, 1.0])
    # the paper's unweighted election: 1-2=-1 (-), -1 (-), 0.5 (+)
    got = merge_tensor("ties", [d1, d2], b, w, {"weighted_election": False})
    np.testing.assert_array_equal(got, [-2.0, -2.0, 1.0])
    # count of signs: 1-1 = 0 -> +
    np.testing.assert_array_equal(merge_tensor("ties", [d1, d2], b, w, {"consensus": "count"}), [1.0, 1.0, 1.0])
    # int8_mask only changes mergekit's mask storage dtype
    np.testing.assert_array_equal(
        merge_tensor("ties", [d1, d2], b, w, {"int8_mask": True}), merge_tensor("ties", [d1, d2], b, w, {})
    )


def test_ties_rescale_l1_on_magnitude_trim():
    b = np.zeros(8, np.float32)
    d = rand(8)
    got = merge_tensor("ties", [d], b, mp(1.0, density=0.5), {"rescale": True})
    keep = oracle_topk_keep(d, 0.5)
    want = np.where(keep, f64(d), 0) * np.abs(f64(d)).sum() / np.abs(f64(d))[keep].sum()
    # kept entries times a ratio of two float32 sums of 8 |d|: no cancellation, so relative to each entry
    np.testing.assert_allclose(got, want, rtol=rounding_tol(np.float32, d.size, depth=3))


# ---------------------------------------------------------------- DARE


def test_dare_density_one_is_task_arithmetic():
    b = rand(5, 9)
    xs = [rand(5, 9) for _ in range(2)]
    for m in ("dare_linear", "dare_ties"):
        got = merge_tensor(m, xs, b, mp(0.4, 0.6, density=1.0), {"lambda": 1.1}, seed=3, name="x")
        if m == "dare_linear":
            want = merge_tensor("task_arithmetic", xs, b, mp(0.4, 0.6), {"lambda": 1.1})
            assert_close_to_scale(got, want, ELEMENTWISE)
        else:
            deltas = [f64(x) - f64(b) for x in xs]
            assert_close_to_scale(got, f64(b) + oracle_ties_merge(deltas, [0.4, 0.6], False, 1.1), ELEMENTWISE)


def test_dare_kept_fraction_l1_norm_and_determinism():
    n = 200_000
    b = np.zeros(n, np.float32)
    x = rand(n) + np.float32(0.01) * np.sign(rand(n))  # no exact zeros
    for p in (0.1, 0.5, 0.9):
        got = merge_tensor("dare_linear", [x], b, mp(1.0, density=p), {}, seed=7, name="layers.0.w")
        kept = got != 0
        assert abs(kept.mean() - p) < 5 * math.sqrt(p * (1 - p) / n)
        # mergekit's rescale: each task vector keeps its L1 norm exactly (up to the two float32 L1 sums of the factor,
        # positive terms; numpy sums pairwise in 8 lanes of 128-blocks: <= 16 + log2 n additions deep)
        l1_tol = rounding_tol(np.float32, 16 + math.log2(n), depth=2)
        np.testing.assert_allclose(np.abs(f64(got)).sum(), np.abs(f64(x)).sum(), rtol=l1_tol)
        factor = np.abs(f64(x)).sum() / np.abs(f64(x))[kept].sum()
        np.testing.assert_allclose(got[kept], f64(x)[kept] * factor, rtol=l1_tol)
        # the paper's 1/p: L1 preserved in expectation only
        inv = merge_tensor(
            "dare_linear", [x], b, mp(1.0, density=p), {"rescale": "inverse_density"}, seed=7, name="layers.0.w"
        )
        np.testing.assert_array_equal(inv != 0, kept)  # same mask
        np.testing.assert_allclose(inv[kept], f64(x)[kept] / p, rtol=1e-6)  # x·float32(1/p): 2 roundings (1e-6 = 17u)
        assert abs(np.abs(f64(inv)).sum() / np.abs(f64(x)).sum() - 1) < 0.05
        # no rescale: kept entries untouched
        raw = merge_tensor("dare_linear", [x], b, mp(1.0, density=p), {"rescale": False}, seed=7, name="layers.0.w")
        np.testing.assert_array_equal(raw[kept], x[kept])
        np.testing.assert_array_equal(raw[~kept], 0)
    a1 = merge_tensor("dare_linear", [x], b, mp(1.0, density=0.5), {}, seed=7, name="a")
    a2 = merge_tensor("dare_linear", [x], b, mp(1.0, density=0.5), {}, seed=7, name="a")
    a3 = merge_tensor("dare_linear", [x], b, mp(1.0, density=0.5), {}, seed=7, name="b")
    a4 = merge_tensor("dare_linear", [x], b, mp(1.0, density=0.5), {}, seed=8, name="a")
    np.testing.assert_array_equal(a1, a2)
    for other in (a3, a4):  # different name / seed: an independent mask (agreement ~ 1/2)
        assert abs(((a1 != 0) == (other != 0)).mean() - 0.5) < 0.01


def test_dare_masks_of_two_models_are_independent():
    n = 100_000
    b = np.zeros(n, np.float32)
    x = np.ones(n, np.float32)
    got = merge_tensor("dare_linear", [x, x], b, mp(1.0, 2.0, density=0.3), {"rescale": False}, name="t")
    # entries: 0 (none kept), 1 (only model 0), 2 (only model 1), 3 (both): P(both) = 0.09
    assert abs((got == 3).mean() - 0.09) < 0.005
    assert abs((got == 1).mean() - 0.21) < 0.007


def test_dare_ties_golden_given_masks():
    n = 64
    b = rand(n)
    xs = [b + rand(n) for _ in range(3)]
    w = [0.5, 0.3, 0.9]
    dens = [0.5, 0.6, 0.4]
    got = merge_tensor("dare_ties", xs, b, mp(*w, density=dens), {"rescale": "inverse_density"}, seed=1, name="q")
    # recover each model's mask from single-model runs (same seed, name and model index)
    deltas = []
    for i, (x, d) in enumerate(zip(xs, dens)):
        solo = merge_tensor(
            "dare_linear",
            [x if j == i else b for j in range(3)],
            b,
            mp(1, 1, 1, density=[d] * 3),
            {"rescale": False},
            seed=1,
            name="q",
        )
        keep = solo != f64(b)
        deltas.append(np.where(keep, (f64(x) - f64(b)) / d, 0.0))
    assert_close_to_scale(got, f64(b) + oracle_ties_merge(deltas, w, False), ELEMENTWISE)


# ---------------------------------------------------------------- breadcrumbs


def test_breadcrumbs_hand_checked():
    b = np.zeros(10, np.float32)
    d = np.array([0.1, -0.9, 0.5, 0.3, -1.0, 0.2, 0.8, -0.4, 0.6, 0.7], np.float32)
    # density 0.5, gamma 0.2: drop the 2 largest (|1.0|, |0.9|) and the 3 smallest (0.1, 0.2, 0.3)
    got = merge_tensor("breadcrumbs", [d], b, mp(1.0, density=0.5, gamma=0.2), {})
    np.testing.assert_array_equal(got, np.array([0, 0, 0.5, 0, 0, 0, 0.8, -0.4, 0.6, 0.7], np.float32))
    # density 0.9, gamma 0.2: only 1 outlier can go (mergekit keeps density exactly)
    got = merge_tensor("breadcrumbs", [d], b, mp(1.0, density=0.9, gamma=0.2), {})
    np.testing.assert_array_equal(got, np.where(np.abs(d) == 1.0, 0, d))


def test_breadcrumbs_gamma_zero_is_magnitude_pruning_and_golden():
    b = rand(6, 8)
    xs = [b + rand(6, 8) for _ in range(2)]
    for d in (0.25, 0.6):
        got = merge_tensor("breadcrumbs", xs[:1], b, mp(1.0, density=d, gamma=0.0), {})
        ties = merge_tensor("ties", xs[:1], b, mp(1.0, density=d), {})
        np.testing.assert_array_equal(got, ties)
        delta = f64(xs[0]) - f64(b)
        assert_close_to_scale(got, f64(b) + np.where(oracle_topk_keep(delta, d), delta, 0), ELEMENTWISE)
    w, dens, gam = [0.7, 0.4], [0.5, 0.4], [0.1, 0.05]
    trimmed = [
        np.where(oracle_breadcrumbs_keep(f64(x) - f64(b), dd, g), f64(x) - f64(b), 0) for x, dd, g in zip(xs, dens, gam)
    ]
    got = merge_tensor("breadcrumbs", xs, b, mp(*w, density=dens, gamma=gam), {"lambda": 0.5})
    assert_close_to_scale(got, f64(b) + 0.5 * (w[0] * trimmed[0] + w[1] * trimmed[1]), ELEMENTWISE)
    got = merge_tensor("breadcrumbs_ties", xs, b, mp(*w, density=dens, gamma=gam), {})
    assert_close_to_scale(got, f64(b) + oracle_ties_merge(trimmed, w, False), ELEMENTWISE)


# ---------------------------------------------------------------- whole-model thresholds (the papers' top-k)


def test_whole_model_threshold_matches_global_topk():
    b1, b2 = rand(40), rand(7, 9)
    x1, x2 = b1 + rand(40), b2 + rand(7, 9, scale=3.0)
    d1, d2 = f64(x1) - f64(b1), f64(x2) - f64(b2)
    allabs = np.concatenate([np.abs(d1), np.abs(d2).ravel()])
    thr = magnitude_threshold(allabs, 0.3)
    assert thr == np.sort(allabs.astype(np.float32))[::-1][int(0.3 * allabs.size) - 1]
    g1 = merge_tensor("ties", [x1], b1, [{"weight": 1.0, "density": 0.3, "magnitude_threshold": thr}], {})
    g2 = merge_tensor("ties", [x2], b2, [{"weight": 1.0, "density": 0.3, "magnitude_threshold": thr}], {})
    kept = np.concatenate([(g1 != b1), (g2 != b2).ravel()])
    assert kept.sum() == int(0.3 * allabs.size)
    order = np.argsort(-allabs)
    np.testing.assert_array_equal(np.sort(np.flatnonzero(kept)), np.sort(order[: int(0.3 * allabs.size)]))
    assert magnitude_threshold(allabs, 1.0) == 0.0 and magnitude_threshold(allabs, 0.0) == math.inf
    # breadcrumbs: drop the global top 10% and keep 50%
    lo, hi = breadcrumbs_thresholds(allabs, 0.5, 0.1)
    mps = [{"weight": 1.0, "density": 0.5, "magnitude_threshold": lo, "outlier_threshold": hi}]
    h1 = merge_tensor("breadcrumbs", [x1], b1, mps, {})
    h2 = merge_tensor("breadcrumbs", [x2], b2, mps, {})
    kept = np.concatenate([(h1 != b1), (h2 != b2).ravel()])
    n, nt, nk = allabs.size, int(0.1 * allabs.size), int(0.5 * allabs.size)
    np.testing.assert_array_equal(np.sort(np.flatnonzero(kept)), np.sort(order[nt : nt + nk]))
    # a deterministic uniform sample
    s = abs_sample(allabs, 0.5, name="m")
    np.testing.assert_array_equal(s, abs_sample(allabs, 0.5, name="m"))
    assert 0.3 * n < s.size < 0.7 * n and np.isin(s, allabs.astype(np.float32)).all()


# ---------------------------------------------------------------- SLERP


def test_slerp_endpoints_golden_and_parallel_fallback():
    a, b = rand(6, 5), rand(6, 5)
    assert_close_to_scale(merge_tensor("slerp", [b], a, mp(1.0), {"t": 0.0}), a, ELEMENTWISE)
    assert_close_to_scale(merge_tensor("slerp", [b], a, mp(1.0), {"t": 1.0}), b, ELEMENTWISE)
    # the coefficients: two norms and a dot (float32 sums of 30 terms) through arccos / sin, of condition ~1/sin Ω,
    # near 1 for random a, b (|cos| < 0.7 but at 3.8 sd); then an entry-wise mix
    slerp_tol = rounding_tol(np.float32, a.size, depth=6)
    for t in (0.25, 0.5, 0.8):
        got = merge_tensor("slerp", [b], a, [{}], {"t": t})
        assert_close_to_scale(got.ravel(), oracle_slerp(t, a, b), slerp_tol)
        # the norm follows the arc, not the chord (the point of slerp): equal norms stay equal
    u = a / np.linalg.norm(a)
    v = rand(6, 5)
    v = v - (v.ravel() @ u.ravel()) * u
    v = v / np.linalg.norm(v)
    got = merge_tensor("slerp", [v.astype(np.float32)], u.astype(np.float32), [{}], {"t": 0.5})
    assert_close_to_scale(got, (u + v) / math.sqrt(2), slerp_tol)
    # nearly parallel (cos > 0.9995) and anti-parallel: linear interpolation of the raw tensors
    near = (2 * a + rand(6, 5, scale=1e-3)).astype(np.float32)
    for other in (near, (-3 * a).astype(np.float32)):
        got = merge_tensor("slerp", [other], a, [{}], {"t": 0.3})
        assert_close_to_scale(got, 0.7 * f64(a) + 0.3 * f64(other), ELEMENTWISE)


# ---------------------------------------------------------------- model stock


def test_model_stock_golden_identical_and_orthogonal():
    b = rand(4, 6)
    xs = [b + rand(4, 6) for _ in range(3)]
    got = merge_tensor("model_stock", xs, b, mp(1, 1, 1), {})
    offs = [(f64(x) - f64(b)).ravel() for x in xs]
    cos = np.mean(
        [offs[i] @ offs[j] / np.linalg.norm(offs[i]) / np.linalg.norm(offs[j]) for i, j in [(0, 1), (0, 2), (1, 2)]]
    )
    t = 3 * cos / (1 + 2 * cos)
    # each cos from float32 norms and a dot of 24 terms; t = 3c/(1+2c) multiplies c's error by dt/dc = 3/(1+2c)^2
    want = t * np.mean([f64(x) for x in xs], 0) + (1 - t) * f64(b)
    assert_close_to_scale(got, want, rounding_tol(np.float32, b.size, depth=3) * (1 + 3 / (1 + 2 * cos) ** 2))
    # filter_wise: one t per row
    got = merge_tensor("model_stock", xs[:2], b, mp(1, 1), {"filter_wise": True})
    for r in range(4):
        o0, o1 = f64(xs[0][r]) - f64(b[r]), f64(xs[1][r]) - f64(b[r])
        c = o0 @ o1 / np.linalg.norm(o0) / np.linalg.norm(o1)
        tr = 2 * c / (1 + c)
        want = tr * (f64(xs[0][r]) + f64(xs[1][r])) / 2 + (1 - tr) * f64(b[r])
        assert_close_to_scale(got[r], want, rounding_tol(np.float32, o0.size, depth=3) * (1 + 2 / (1 + c) ** 2))
    # identical task vectors: cos = 1 -> t = 1 -> the (common) fine-tuned model
    x = b + rand(4, 6)
    got = merge_tensor("model_stock", [x, x, x], b, mp(1, 1, 1), {})
    assert_close_to_scale(got, x, rounding_tol(np.float32, b.size, depth=2))  # c = 1 up to its 24-term sums
    # orthogonal task vectors: cos = 0 -> t = 0 -> the base
    e0, e1 = np.zeros((4, 6), np.float32), np.zeros((4, 6), np.float32)
    e0[0, 0], e1[1, 1] = 1.0, 2.0
    assert_close_to_scale(merge_tensor("model_stock", [b + e0, b + e1], b, mp(1, 1), {}), b, ELEMENTWISE)


# ---------------------------------------------------------------- passthrough, errors


def test_passthrough():
    x = rand(3, 3)
    np.testing.assert_array_equal(merge_tensor("passthrough", [x], None, [{}], {}), x)
    # x 0.5 is exact in float32; rtol 1e-7 (< 1 ulp) leaves room only for that
    np.testing.assert_allclose(merge_tensor("passthrough", [x], None, [{"scale": 0.5}], {}), 0.5 * f64(x), rtol=1e-7)
    with pytest.raises(MergeError, match="exactly one"):
        merge_tensor("passthrough", [x, x], None, [{}, {}], {})


def test_errors_name_the_tensor():
    b, x = rand(3, 4), rand(3, 4)
    with pytest.raises(MergeError, match="unknown merge method 'tie'"):
        merge_tensor("tie", [x], b, mp(1.0), {})
    for m in ("task_arithmetic", "ties", "dare_ties", "breadcrumbs", "slerp", "model_stock"):
        with pytest.raises(MergeError, match="base"):
            merge_tensor(m, [x, x], None, mp(1.0, 1.0), {"t": 0.5}, name="model.layers.3.mlp.up_proj.weight")
    with pytest.raises(MergeError, match=r"model\.embed_tokens\.weight.*shape mismatch.*\(5, 4\)"):
        merge_tensor("ties", [x, rand(5, 4)], b, mp(1.0, 1.0), {}, name="model.embed_tokens.weight")
    with pytest.raises(MergeError, match="exactly one other"):
        merge_tensor("slerp", [x, x], b, mp(1.0, 1.0), {"t": 0.5}, name="w")
    with pytest.raises(MergeError, match="'t'"):
        merge_tensor("slerp", [x], b, mp(1.0), {}, name="w")
    with pytest.raises(MergeError, match="'weight' is required"):
        merge_tensor("ties", [x], b, [{"density": 0.5}], {}, name="w")
    with pytest.raises(MergeError, match="at least two"):
        merge_tensor("model_stock", [x], b, mp(1.0), {}, name="w")
    with pytest.raises(MergeError, match="sum to 0"):
        merge_tensor("linear", [x, x], None, mp(1.0, -1.0), {}, name="w")
    with pytest.raises(MergeError, match="rescale"):
        merge_tensor("dare_ties", [x], b, mp(1.0, density=0.5), {"rescale": "l3"}, name="w")
    with pytest.raises(MergeError, match="backend"):
        merge_tensor("linear", [x], None, mp(1.0), {}, backend="torch")
    # the base model alone: task-vector methods return it
    np.testing.assert_array_equal(merge_tensor("ties", [], b, [], {}), b)


# ---------------------------------------------------------------- the jax path equals the numpy path


@pytest.mark.parametrize("method", METHODS)
def test_jax_backend_equals_numpy(method):
    b = rand(8, 12)
    xs = [b + rand(8, 12, scale=0.2) for _ in range(3)]
    params = {"t": 0.35, "lambda": 0.9}
    if method == "slerp":
        xs = xs[:1]
    if method == "passthrough":
        xs, b = xs[:1], None
    m = mp(*[0.3, 0.5, 0.4][: len(xs)], density=[0.4, 0.7, 0.5][: len(xs)], gamma=0.05)
    want = merge_tensor(method, xs, b, m, params, seed=5, name="w")
    got = merge_tensor(method, xs, b, m, params, seed=5, name="w", backend="jax")
    # float32 both, XLA vs numpy order (and FMA): whole-tensor sums of 96 terms (L1 rescale, norms, cos) only scale the
    # deltas (0.2 of b), through factors of condition <= 3 (model_stock's dt/dc at c ~ 0)
    tol = rounding_tol(np.float32, xs[0].size, depth=2)
    assert_close_to_scale(np.asarray(got), want, tol)
    if method in ("dare_ties", "breadcrumbs"):  # new per-tensor numbers reuse the compiled program
        m2 = mp(0.1, 0.2, 0.9, density=[0.9, 0.2, 0.3], gamma=0.1)
        want = merge_tensor(method, xs, b, m2, {"lambda": 1.2}, seed=6, name="v")
        got = merge_tensor(method, xs, b, m2, {"lambda": 1.2}, seed=6, name="v", backend="jax")
        assert_close_to_scale(np.asarray(got), want, tol)


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_trims_with_many_equal_magnitudes(backend):
    """Heavy ties in |δ| (values in {±1, ±2, 0}): exactly int(density·n) kept, the lower indices first."""
    r = np.random.default_rng(3)
    b = np.zeros((9, 11), np.float32)
    d = r.choice(np.array([-2.0, -1.0, 0.0, 1.0, 2.0], np.float32), size=(9, 11))
    for density in (0.0, 0.05, 0.3, 0.77, 1.0):
        got = np.asarray(merge_tensor("ties", [d], b, mp(1.0, density=density), {}, backend=backend))
        np.testing.assert_array_equal(got, np.where(oracle_topk_keep(d, density), d, 0))
        got = np.asarray(merge_tensor("breadcrumbs", [d], b, mp(1.0, density=density, gamma=0.1), {}, backend=backend))
        np.testing.assert_array_equal(got, np.where(oracle_breadcrumbs_keep(d, density, 0.1), d, 0))


@pytest.mark.parametrize("backend", ["numpy", "jax"])
def test_whole_model_thresholds_edge_values(backend):
    b = np.zeros(20, np.float32)
    d = rand(20)
    # k = 0 -> threshold inf -> nothing kept; gamma 0 -> upper inf -> no outlier dropped
    assert magnitude_threshold(np.abs(d), 0.01) == math.inf
    got = merge_tensor(
        "ties", [d], b, [{"weight": 1, "density": 0.01, "magnitude_threshold": math.inf}], {}, backend=backend
    )
    np.testing.assert_array_equal(np.asarray(got), 0)
    lo, hi = breadcrumbs_thresholds(np.abs(d), 0.5, 0.0)
    assert hi == math.inf
    mps = [{"weight": 1, "density": 0.5, "magnitude_threshold": lo, "outlier_threshold": hi}]
    got = merge_tensor("breadcrumbs", [d], b, mps, {}, backend=backend)
    np.testing.assert_array_equal(np.asarray(got), np.where(oracle_topk_keep(d, 0.5), d, 0))
