r"""Per-tensor merge methods of ``jaxfin merge`` (mergekit semantics).

One entry point, :func:`merge_tensor`, merges *one* tensor (the same parameter from every input model).
The math is written once against an array module ``xp`` (``numpy`` or ``jax.numpy``):

* ``backend="numpy"``: plain numpy on the host, float32;
* ``backend="jax"``: the same code traced with ``jax.numpy`` and ``jax.jit``-compiled once per
  (method, static options, tensor shapes); every per-tensor number (weights, densities, ``t``,
  ``lambda``, RNG keys) is a *traced* argument, so gradients over layers do not recompile.

Both backends return the same numbers (up to float32 summation order): the top-k masks are
deterministic (ties broken by the lower flat index) and DARE's random masks come from a counter-based
hash of ``(seed, tensor name, model index, element index)`` that numpy and XLA evaluate identically.

Notation: base ``b``; inputs ``θ_i`` with ``weight`` ``w_i``; task vectors ``δ_i = θ_i − b``; ``τ_i`` the
trimmed task vector; ``λ`` = ``lambda``; ``N`` = number of non-base models.

| method | merged tensor | defaults |
| --- | --- | --- |
| `linear` | `Σ w_i θ_i / Σ w_i` | normalize=true |
| `task_arithmetic` | `b + λ·Σ w_i δ_i` | normalize=false, λ=1 |
| `ties` | `b + λ·Σ m_i w_i τ_i / Σ m_i w_i`; `τ_i` = top `density_i` of `δ_i` by \|δ\| | normalize=true |
| `dare_linear` | `b + λ·Σ w_i τ_i`; `τ_i = δ_i⊙M_i·‖δ_i‖₁/‖δ_i⊙M_i‖₁`, `M_i ~ Bernoulli(density_i)` | rescale=true |
| `dare_ties` | DARE `τ_i`, merged as in `ties` | normalize=false, rescale=true |
| `breadcrumbs` | `b + λ·Σ w_i τ_i`; `τ_i = δ_i` without its top `gamma_i`, keeping `density_i` by \|δ\| | gamma=0.01 |
| `breadcrumbs_ties` | breadcrumbs `τ_i`, merged as in `ties` | normalize=false |
| `slerp` | `sin((1−t)Ω)/sin Ω·b + sin(tΩ)/sin Ω·θ`, `cos Ω = b·θ/(‖b‖‖θ‖)`; lerp if \|cos Ω\| > 0.9995 | t required |
| `model_stock` | `t·mean_i θ_i + (1−t)·b`, `t = N·c/(1+(N−1)·c)`, `c` = mean cos(δ_i, δ_j), i<j | filter_wise=false |
| `passthrough` | `θ` (× `scale` when given); exactly one input | |

TIES election: `m_i = [sgn(w_i τ_i) = s]` with `s = +1 if Σ_j w_j τ_j ≥ 0 else −1` (0 counts as +);
``sgn(0) = 0``, so a trimmed (zero) entry never agrees and never counts in the divisor; a zero divisor
becomes 1. ``normalize`` without election divides by ``Σ w_i`` (not when ``|Σ w_i| < 1e-8``). ``lambda``
multiplies the merged task vector after normalisation (all task-vector methods). ``rescale`` (DARE's
default, available to every trim): ``true``/``"l1"`` keeps each ``‖τ_i‖₁ = ‖δ_i‖₁`` (current mergekit),
``"inverse_density"`` multiplies by ``1/density_i`` (the DARE paper, and mergekit before its RescaleNorm),
``"l2"``/``"linf"`` match those norms. ``density ≥ 1`` leaves ``δ_i`` untouched.

Where jaxfin differs from mergekit (all deliberate):

* the math runs in float32 whatever the input/output dtype (mergekit computes in the merge ``dtype``);
* equal magnitudes at the top-k boundary: the lower flat index is kept (mergekit: unspecified order);
* a magnitude trim with ``int(density·n) = 0`` gives a zero task vector (mergekit asserts);
* breadcrumbs with ``int(gamma·n) = 0`` (``gamma: 0``, or a tensor under 100 entries at the default 0.01)
  is a plain top-``density`` trim; mergekit's ``indices[n_bot:-0]`` is empty and drops the whole task vector;
* DARE masks come from a counter-based hash of ``(seed, name, model index, element index)``: reproducible
  and backend-independent (mergekit: ``torch.bernoulli`` on the global RNG); ``P(keep) = ⌊density·2³²⌋/2³²``;
* ``linear`` with ``normalize`` and ``Σ w_i = 0`` is an error (mergekit returns inf/nan); shape mismatches are
  errors (mergekit slices embeddings / skips the tensor: jaxfin's engine aligns vocabularies first);
* extensions (the papers' variants): ``rescale: inverse_density | l2 | linf``, ``consensus: count``,
  ``weighted_election: false``, whole-model thresholds (``magnitude_threshold`` / ``outlier_threshold`` per
  model, see :func:`magnitude_threshold`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "METHODS",
    "MergeError",
    "merge_tensor",
    "magnitude_threshold",
    "breadcrumbs_thresholds",
    "abs_sample",
    "method_defaults",
]

DOT_THRESHOLD = 0.9995  # mergekit's slerp: |cos| above this -> linear interpolation
SLERP_EPS = 1e-8  # mergekit's slerp: vectors with a smaller norm are not normalised
RESCALE_EPS = 1e-7  # mergekit's rescaled_masked_tensor: skip the rescale below this norm
COS_EPS = 1e-6  # mergekit's model_stock: clamp of the norm product
DIVISOR_EPS = 1e-8  # mergekit's GTA: |Σ w| below this is not divided by


class MergeError(ValueError):
    """A merge that cannot be done as asked (a user error: bad method, parameters or inputs)."""


@dataclasses.dataclass(frozen=True)
class _Gta:
    """A generalized-task-arithmetic method as mergekit registers it."""

    consensus: str | None  # "sum" | None
    sparsify: str | None  # "magnitude" | "random" | "magnitude_outliers" | None
    normalize: bool
    rescale: bool


_GTA = {
    "task_arithmetic": _Gta(None, None, False, False),
    "ties": _Gta("sum", "magnitude", True, False),
    "dare_ties": _Gta("sum", "random", False, True),
    "dare_linear": _Gta(None, "random", False, True),
    "breadcrumbs": _Gta(None, "magnitude_outliers", False, False),
    "breadcrumbs_ties": _Gta("sum", "magnitude_outliers", False, False),
}
METHODS = ("linear", *_GTA, "slerp", "model_stock", "passthrough")
_RESCALES = ("l1", "l2", "linf", "inverse_density")


def method_defaults(method: str) -> dict[str, Any]:
    """The global parameters of ``method`` with mergekit's defaults (``t`` for slerp is required)."""
    if method == "linear":
        return {"normalize": True}
    if method in _GTA:
        g = _GTA[method]
        return {"normalize": g.normalize, "rescale": g.rescale, "lambda": 1.0, "int8_mask": False}
    if method == "slerp":
        return {}
    if method == "model_stock":
        return {"filter_wise": False}
    if method == "passthrough":
        return {}
    raise MergeError(f"unknown merge method {method!r}; known: {', '.join(METHODS)}")


# --------------------------------------------------------------------------------------------------
# static configuration (hashable: the jit cache key) and the per-call dynamic numbers
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Cfg:
    method: str
    normalize: bool = False
    consensus: str | None = None  # "sum" | "count" | None
    weighted_election: bool = True
    sparsify: str | None = None
    rescale: str | None = None  # None | "l1" | "l2" | "linf" | "inverse_density"
    thresholds: bool = False  # whole-model magnitude thresholds given instead of per-tensor top-k
    upper: bool = False  # breadcrumbs: whole-model outlier threshold given
    filter_wise: bool = False
    scale: bool = False  # passthrough with a scale


def _as_bool(v: Any, key: str, name: str) -> bool:
    if isinstance(v, bool | np.bool_):
        return bool(v)
    if isinstance(v, int | float) and v in (0, 1):
        return bool(v)
    raise MergeError(f"{name}: parameter {key!r} must be true or false, got {v!r}")


def _as_float(v: Any, key: str, where: str, allow_inf: bool = False) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise MergeError(f"{where}: parameter {key!r} must be a number, got {v!r}") from None
    if math.isnan(f) or (math.isinf(f) and not allow_inf):
        raise MergeError(f"{where}: parameter {key!r} must be finite, got {v!r}")
    return f


def _rescale_mode(v: Any, name: str) -> str | None:
    if v is None or v is False:
        return None
    if v is True:
        return "l1"
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return "l1" if v.lower() == "true" else None
    if isinstance(v, str) and v in _RESCALES:
        return v
    raise MergeError(f"{name}: parameter 'rescale' must be true, false or one of {_RESCALES}, got {v!r}")


def _keys(seed: int, name: str, i: int) -> tuple[int, int]:
    """Two uint32 keys for model ``i``'s DARE mask of tensor ``name``: stable across runs and hosts."""
    h = hashlib.blake2b(f"jaxfin-dare\0{int(seed)}\0{name}\0{i}".encode(), digest_size=8).digest()
    return int.from_bytes(h[:4], "little"), int.from_bytes(h[4:], "little")


def _plan(method, tensors, base, model_params, params, seed, name):
    """Validate the call and split it into a static ``_Cfg`` and dynamic numbers (python scalars)."""
    where = f"tensor {name!r}" if name else "merge"
    if method not in METHODS:
        raise MergeError(f"unknown merge method {method!r}; known: {', '.join(METHODS)}")
    n = len(tensors)
    if len(model_params) != n:
        raise MergeError(f"{where}: {n} input tensors but {len(model_params)} model parameter sets")
    if method in ("linear", "passthrough") and tensors:
        base = None  # not an input of these methods
    shapes = [tuple(t.shape) for t in tensors] + ([tuple(base.shape)] if base is not None else [])
    if len(set(shapes)) > 1:
        raise MergeError(
            f"{where}: shape mismatch between inputs: "
            + ", ".join(f"model {i}: {s}" for i, s in enumerate(tuple(t.shape) for t in tensors))
            + (f", base: {tuple(base.shape)}" if base is not None else "")
            + " (vocabulary rows must be aligned before merging)"
        )
    p = {**method_defaults(method), **dict(params)}
    dyn: dict[str, Any] = {}

    if method == "passthrough":
        if n + (base is not None and n == 0) != 1:
            raise MergeError(f"{where}: passthrough takes exactly one input tensor, got {n}")
        scale = model_params[0].get("scale") if n else None
        if scale is not None:
            dyn["scale"] = _as_float(scale, "scale", where)
        return _Cfg(method, scale=scale is not None), dyn

    if method == "linear":
        if n == 0:
            raise MergeError(f"{where}: linear needs at least one input tensor")
        w = [_weight(mp, i, where) for i, mp in enumerate(model_params)]
        normalize = _as_bool(p["normalize"], "normalize", where)
        if normalize and sum(w) == 0:
            raise MergeError(f"{where}: linear with normalize: the weights sum to 0 ({w})")
        dyn["weight"] = w
        return _Cfg(method, normalize=normalize), dyn

    if base is None and n > 0:
        raise MergeError(f"{where}: {method} needs a base_model tensor (task vectors are θ − base)")
    if base is None:
        raise MergeError(f"{where}: {method} got no input tensors and no base tensor")

    if method == "slerp":
        if n > 1:
            raise MergeError(
                f"{where}: slerp interpolates between base_model and exactly one other model, got {n} others"
            )
        if "t" not in p:
            raise MergeError(f"{where}: slerp needs the parameter 't'")
        dyn["t"] = _as_float(p["t"], "t", where)
        dyn["dot_threshold"] = _as_float(p.get("dot_threshold", DOT_THRESHOLD), "dot_threshold", where)
        dyn["eps"] = _as_float(p.get("eps", SLERP_EPS), "eps", where)
        return _Cfg(method), dyn

    if method == "model_stock":
        if n == 1:
            raise MergeError(f"{where}: model_stock needs at least two models besides the base, got one")
        return _Cfg(method, filter_wise=_as_bool(p["filter_wise"], "filter_wise", where)), dyn

    # generalized task arithmetic
    g = _GTA[method]
    consensus = g.consensus
    if consensus is not None and "consensus" in p:
        consensus = p["consensus"]
        if consensus not in ("sum", "count"):
            raise MergeError(f"{where}: parameter 'consensus' must be 'sum' or 'count', got {consensus!r}")
    cfg = _Cfg(
        method,
        normalize=_as_bool(p["normalize"], "normalize", where),
        consensus=consensus,
        weighted_election=_as_bool(p.get("weighted_election", True), "weighted_election", where),
        sparsify=g.sparsify,
        rescale=_rescale_mode(p["rescale"], where) if g.sparsify else None,
    )
    _as_bool(p.get("int8_mask", False), "int8_mask", where)  # only a storage dtype in mergekit
    dyn["lambda"] = _as_float(p["lambda"], "lambda", where)
    dyn["weight"] = [_weight(mp, i, where) for i, mp in enumerate(model_params)]
    if g.sparsify is None:
        return cfg, dyn

    size = int(np.prod(base.shape, dtype=np.int64))
    dens = []
    for i, mp in enumerate(model_params):
        d = _as_float(_get(mp, "density", 1.0), "density", f"{where}, model {i}")
        if d < 0:
            raise MergeError(f"{where}, model {i}: density must be >= 0, got {d}")
        dens.append(d)
    dyn["keep_all"] = [d >= 1 for d in dens]
    dyn["inv_density"] = [1.0 if d >= 1 or d <= 0 else 1.0 / d for d in dens]
    has_thr = ["magnitude_threshold" in mp for mp in model_params]
    if g.sparsify == "random":
        # keep element j iff hash(j) < density·2³²  (P = density up to 2⁻³²)
        dyn["u32_threshold"] = [min(int(d * 2.0**32), 2**32 - 1) for d in dens]
        dyn["key"] = [_keys(seed, name, i) for i in range(n)]
        if size >= 2**32:
            raise MergeError(f"{where}: DARE supports tensors below 2^32 elements, got {size}")
    elif any(has_thr):
        if not all(has_thr):
            raise MergeError(f"{where}: 'magnitude_threshold' must be given for every model or none")
        lo = [_as_float(mp["magnitude_threshold"], "magnitude_threshold", where, True) for mp in model_params]
        dyn["lower"] = lo
        cfg = dataclasses.replace(cfg, thresholds=True)
        if g.sparsify == "magnitude_outliers":
            has_up = ["outlier_threshold" in mp for mp in model_params]
            if any(has_up) and not all(has_up):
                raise MergeError(f"{where}: 'outlier_threshold' must be given for every model or none")
            if all(has_up):
                dyn["upper"] = [
                    _as_float(mp["outlier_threshold"], "outlier_threshold", where, True) for mp in model_params
                ]
                cfg = dataclasses.replace(cfg, upper=True)
    else:
        ks, tops = [], []
        for i, (mp, d) in enumerate(zip(model_params, dens, strict=True)):
            target = min(int(d * size), size)
            n_top = 0
            if g.sparsify == "magnitude_outliers":
                gamma = _as_float(_get(mp, "gamma", 0.01), "gamma", f"{where}, model {i}")
                if not 0 <= gamma <= 1:
                    raise MergeError(f"{where}, model {i}: gamma must be in [0, 1], got {gamma}")
                n_top = int(gamma * size)
                n_bot = size - target - n_top
                if n_bot < 0:  # mergekit: remove fewer outliers to reach the density
                    n_top += n_bot
            ks.append(target + n_top)  # keep the (target + n_top) largest ...
            tops.append(n_top)  # ... minus the n_top largest
        dyn["k"] = ks
        dyn["k_top"] = tops
    return cfg, dyn


def _get(mp: Mapping[str, Any], key: str, default: Any) -> Any:
    v = mp.get(key)
    return default if v is None else v


def _weight(mp: Mapping[str, Any], i: int, where: str) -> float:
    if "weight" not in mp or mp["weight"] is None:
        raise MergeError(f"{where}, model {i}: the parameter 'weight' is required")
    return _as_float(mp["weight"], "weight", f"{where}, model {i}")


# --------------------------------------------------------------------------------------------------
# the math, written once for xp = numpy | jax.numpy
# --------------------------------------------------------------------------------------------------


def _is_np(xp) -> bool:
    return xp is np


def _cond(xp, pred, f_true, f_false):
    if _is_np(xp):
        return f_true() if bool(pred) else f_false()
    import jax

    return jax.lax.cond(pred, f_true, f_false)


def _kth_largest_jax(a, k):
    """The ``k``-th largest value of the non-negative float32 1-D array ``a`` (``k ≥ 1``, traced), exactly.

    A bisection over the float32 bit pattern (monotone for ``a ≥ 0``): 31 counting passes, which XLA runs
    far faster than a sort of a large tensor (a 16.7M-entry sort takes ~50 s on a CPU)."""
    import jax
    import jax.numpy as jnp

    bits = jax.lax.bitcast_convert_type(a, jnp.int32)

    def step(i, res):
        cand = res | jnp.left_shift(jnp.int32(1), 30 - i)
        return jnp.where(jnp.sum(bits >= cand, dtype=jnp.int32) >= k, cand, res)

    res = jax.lax.fori_loop(0, 31, step, jnp.int32(0))
    return jax.lax.bitcast_convert_type(res, jnp.float32)


def _top_mask(xp, a, k):
    """Bool mask of the ``k`` largest entries of the non-negative 1-D array ``a``; ties go to the lower index.

    Exactly ``min(k, n)`` entries are kept, and ``top(k1) ⊆ top(k2)`` for ``k1 ≤ k2`` (one total order)."""
    n = a.shape[0]
    if _is_np(xp):
        k = int(min(max(int(k), 0), n))
        if k == 0:
            return np.zeros(n, dtype=bool)
        v = np.partition(a, n - k)[n - k]
        gt = a > v
        eq = a == v
        need = k - int(np.count_nonzero(gt))
        if np.count_nonzero(eq) > need:
            idx = np.flatnonzero(eq)[need:]
            eq[idx] = False
        return gt | eq
    import jax

    k = xp.clip(k, 0, n)
    v = _kth_largest_jax(a, xp.maximum(k, 1))
    gt = a > v
    eq = a == v
    need = k - xp.sum(gt, dtype=xp.int32)
    keep = jax.lax.cond(
        xp.sum(eq, dtype=xp.int32) > need,
        lambda: gt | (eq & (xp.cumsum(eq, dtype=xp.int32) <= need)),
        lambda: gt | eq,
    )
    return keep & (k > 0)


def _mix32(xp, x):
    """A bijective 32-bit integer hash (C. Wellons' ``lowbias32``); wraps modulo 2³² in numpy and XLA."""
    u = xp.uint32
    x = x ^ (x >> u(16))
    x = x * u(0x7FEB352D)
    x = x ^ (x >> u(15))
    x = x * u(0x846CA68B)
    return x ^ (x >> u(16))


def _uniform_u32(xp, n, k1, k2):
    """``n`` hash-uniform uint32 values from a counter and two uint32 keys (identical in numpy and XLA)."""
    u = xp.uint32
    i = xp.arange(n, dtype=u)
    with np.errstate(over="ignore"):
        return _mix32(xp, _mix32(xp, i * u(0x9E3779B9) + k1) ^ k2)


def _norm_stat(xp, x, kind):
    if kind == "l1":
        return xp.sum(xp.abs(x))
    if kind == "l2":
        return xp.sqrt(xp.sum(x * x))
    return xp.max(xp.abs(x))  # linf


def _sparsify(xp, cfg: _Cfg, d, i, dyn):
    """Trim the task vector ``d`` of model ``i`` (mergekit's sparsify + rescaled_masked_tensor)."""
    if _is_np(xp) and dyn["keep_all"][i]:
        return d
    flat = d.reshape(-1)
    a = xp.abs(flat)
    if cfg.sparsify == "random":
        k1, k2 = dyn["key"][i]
        keep = _uniform_u32(xp, flat.shape[0], k1, k2) < dyn["u32_threshold"][i]
    elif cfg.thresholds:
        keep = a >= dyn["lower"][i]
        if cfg.upper:
            keep = keep & (a <= dyn["upper"][i])
    else:
        keep = _top_mask(xp, a, dyn["k"][i])
        if cfg.sparsify == "magnitude_outliers":
            keep = keep & ~_top_mask(xp, a, dyn["k_top"][i])
    masked = xp.where(keep, flat, xp.zeros((), flat.dtype))
    if cfg.rescale == "inverse_density":
        masked = masked * dyn["inv_density"][i]
    elif cfg.rescale is not None:
        before = _norm_stat(xp, flat, cfg.rescale)
        after = _norm_stat(xp, masked, cfg.rescale)
        ok = (before >= RESCALE_EPS) & (after >= RESCALE_EPS)
        factor = xp.where(ok, before / xp.where(ok, after, 1.0), 1.0).astype(flat.dtype)
        masked = masked * factor
    out = xp.where(dyn["keep_all"][i], flat, masked)  # density >= 1: untouched (mergekit)
    return out.reshape(d.shape)


def _gta(xp, cfg: _Cfg, xs, base, dyn):
    """Generalized task arithmetic (mergekit's GTATask): task_arithmetic, ties, dare_*, breadcrumbs*.

    ``δ_i = θ_i − b``; ``τ_i = trim(δ_i)`` (none | top-k | DARE | breadcrumbs, then ``rescale``);
    without election: ``Δ = Σ w_i τ_i`` (``/ Σ w_i`` when ``normalize``);
    with election: ``s = sgn⁺(Σ_j w_j τ_j)``, ``m_i = [sgn(w_i τ_i) = s]``, ``Δ = Σ m_i w_i τ_i``
    (``/ Σ m_i w_i`` when ``normalize``, a zero divisor read as 1); result ``b + λ·Δ``.
    ``weighted_election: false`` elects on ``Σ_j τ_j`` and compares ``sgn(τ_i)`` (the TIES paper);
    ``consensus: count`` elects on ``Σ_j sgn(·)`` instead of the sum."""
    w = dyn["weight"]
    deltas = [x - base for x in xs]
    if not deltas:
        return base
    if cfg.sparsify is not None:
        deltas = [_sparsify(xp, cfg, d, i, dyn) for i, d in enumerate(deltas)]
    wd = [d * w[i] for i, d in enumerate(deltas)]
    if cfg.consensus is not None:
        voters = wd if cfg.weighted_election else deltas
        if cfg.consensus == "sum":
            elect = functools.reduce(lambda a, b: a + b, voters)
        else:  # count
            elect = functools.reduce(lambda a, b: a + b, [xp.sign(v) for v in voters])
        majority = xp.where(elect >= 0, xp.float32(1), xp.float32(-1))  # 0 counts as +
        masks = [(xp.sign(v) == majority).astype(base.dtype) for v in voters]
        mixed = functools.reduce(lambda a, b: a + b, [x * m for x, m in zip(wd, masks, strict=True)])
        if cfg.normalize:
            divisor = functools.reduce(lambda a, b: a + b, [m * w[i] for i, m in enumerate(masks)])
            divisor = xp.where(divisor == 0, 1.0, divisor).astype(base.dtype)
            mixed = mixed / divisor
    else:
        mixed = functools.reduce(lambda a, b: a + b, wd)
        if cfg.normalize:
            wsum = functools.reduce(lambda a, b: a + b, w)
            mixed = mixed / xp.where(xp.abs(wsum) < DIVISOR_EPS, 1.0, wsum).astype(base.dtype)
    return base + mixed * dyn["lambda"]


def _slerp(xp, xs, base, dyn):
    """SLERP on the flattened tensors, ``b`` at ``t = 0`` and ``θ`` at ``t = 1`` (mergekit's slerp).

    ``u = v/‖v‖`` (``v`` itself when ``‖v‖ ≤ eps``), ``d = u_b·u_θ``; when ``|d| > dot_threshold``
    (0.9995): ``(1−t)·b + t·θ``; else ``Ω = arccos d``,
    ``sin(Ω − tΩ)/sin Ω · b + sin(tΩ)/sin Ω · θ`` (the unnormalised tensors, so norms interpolate too)."""
    if not xs:
        return base
    v0, v1 = base, xs[0]
    t, eps = dyn["t"], dyn["eps"]
    n0 = xp.sqrt(xp.sum(v0 * v0))
    n1 = xp.sqrt(xp.sum(v1 * v1))
    u0 = v0 / xp.where(n0 > eps, n0, 1.0)  # mergekit: not normalised when the norm <= eps
    u1 = v1 / xp.where(n1 > eps, n1, 1.0)
    dot = xp.sum(u0 * u1)

    def lerp():
        return (1 - t) * v0 + t * v1

    def sph():
        theta0 = xp.arccos(xp.clip(dot, -1.0, 1.0))
        sin0 = xp.sin(theta0)
        theta_t = theta0 * t
        s0 = xp.sin(theta0 - theta_t) / sin0
        s1 = xp.sin(theta_t) / sin0
        return (s0 * v0 + s1 * v1).astype(v0.dtype)

    return _cond(xp, xp.abs(dot) > dyn["dot_threshold"], lerp, sph)


def _model_stock(xp, cfg: _Cfg, xs, base, dyn):
    """Model stock (mergekit's reading of the paper for N ≥ 2 fine-tuned models).

    ``c`` = mean over pairs ``i < j`` of ``clip(δ_i·δ_j / max(‖δ_i‖‖δ_j‖, 1e-6), −1, 1)`` over the flattened
    tensor (one ``c`` per row — last axis — when ``filter_wise``); ``t = N·c / (1 + (N−1)·c)``;
    result ``t·(Σ θ_i / N) + (1−t)·b``. Weights are not used."""
    if not xs:
        return base
    shape = base.shape
    if cfg.filter_wise:
        w0 = base.reshape(1, -1) if base.ndim <= 1 else base
        ws = [x.reshape(w0.shape) for x in xs]
    else:
        w0 = base.reshape(-1)
        ws = [x.reshape(-1) for x in xs]
    offs = [w - w0 for w in ws]
    norms = [xp.sqrt(xp.sum(o * o, axis=-1)) for o in offs]
    cos = []
    for i in range(len(offs)):
        for j in range(i + 1, len(offs)):
            c = xp.sum(offs[i] * offs[j], axis=-1) / xp.maximum(norms[i] * norms[j], COS_EPS)
            cos.append(xp.clip(c, -1.0, 1.0))
    c = (functools.reduce(lambda a, b: a + b, cos) / len(cos))[..., None]
    n = len(ws)
    t = n * c / (1 + (n - 1) * c)
    avg = functools.reduce(lambda a, b: a + b, ws) / n
    return (t * avg + (1 - t) * w0).astype(base.dtype).reshape(shape)


def _core(xp, cfg: _Cfg, xs, base, dyn):
    """The merge of one tensor: ``xs`` a tuple of float32 arrays, ``base`` one or None, ``dyn`` numbers.

    linear: ``Σ w_i θ_i`` (``/ Σ w_i`` when ``normalize``); passthrough: ``θ`` (``· scale``)."""
    m = cfg.method
    if m == "linear":
        w = dyn["weight"]
        res = functools.reduce(lambda a, b: a + b, [x * w[i] for i, x in enumerate(xs)])
        if cfg.normalize:
            res = res / functools.reduce(lambda a, b: a + b, w)
        return res.astype(xp.float32)
    if m == "passthrough":
        x = xs[0] if xs else base
        return x * dyn["scale"] if cfg.scale else x
    if m == "slerp":
        return _slerp(xp, xs, base, dyn)
    if m == "model_stock":
        return _model_stock(xp, cfg, xs, base, dyn)
    return _gta(xp, cfg, xs, base, dyn).astype(xp.float32)


def _np_dyn(dyn):
    out = {}
    for k, v in dyn.items():
        if k == "key":
            out[k] = [(np.uint32(a), np.uint32(b)) for a, b in v]
        elif k == "u32_threshold":
            out[k] = [np.uint32(x) for x in v]
        elif k in ("k", "k_top", "keep_all"):
            out[k] = v
        elif isinstance(v, list):
            out[k] = [np.float32(x) for x in v]
        else:
            out[k] = np.float32(v)
    return out


def _jax_dyn(dyn):
    import jax.numpy as jnp

    out = {}
    for k, v in dyn.items():
        if k in ("key", "u32_threshold"):  # key: [N, 2]
            out[k] = jnp.asarray(v, dtype=jnp.uint32)
        elif k in ("k", "k_top"):
            out[k] = jnp.asarray(v, dtype=jnp.int32)
        elif k == "keep_all":
            out[k] = jnp.asarray(v, dtype=bool)
        else:
            out[k] = jnp.asarray(v, dtype=jnp.float32)
    return out


@functools.cache
def _jitted(cfg: _Cfg):
    import jax
    import jax.numpy as jnp

    def f(xs, base, dyn):
        return _core(jnp, cfg, xs, base, dyn)

    return jax.jit(f)


def merge_tensor(
    method: str,
    tensors: Sequence[Any],
    base: Any | None,
    model_params: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    *,
    seed: int = 0,
    name: str = "",
    backend: str = "numpy",
):
    """Merge one tensor with ``method`` and return it in float32.

    Args:
      method: one of :data:`METHODS` (mergekit's ``merge_method``).
      tensors: the same tensor from each input model, in YAML order. For the task-vector methods,
        ``slerp`` and ``model_stock`` these are the models *other than* ``base_model`` (a ``models`` entry
        equal to the base is left out, as mergekit skips it). For ``linear`` every ``models`` entry
        (``base`` is ignored); for ``passthrough`` the single source tensor.
      base: the base model's tensor; required by the task-vector methods, ``slerp`` (its first endpoint,
        ``t = 0``) and ``model_stock``.
      model_params: per input tensor, its resolved scalar parameters for this tensor (``weight``,
        ``density``, ``gamma``, ``scale``; ``magnitude_threshold`` / ``outlier_threshold`` for the
        whole-model trim, see :func:`magnitude_threshold`).
      params: resolved global parameters (``normalize``, ``lambda``, ``rescale``, ``int8_mask``, ``t``,
        ``filter_wise``; jaxfin's extras ``consensus`` ("sum" | "count"), ``weighted_election``,
        ``dot_threshold``, ``eps``). Missing ones take mergekit's per-method defaults
        (:func:`method_defaults`); unknown keys are ignored.
      seed, name: the DARE masks are a function of ``(seed, name, model index, element index)`` only.
      backend: ``"numpy"`` (host, returns ``np.ndarray``) or ``"jax"`` (``jax.jit`` per method options and
        shape, on JAX's default device; returns a ``jax.Array``).

    Raises:
      MergeError: unknown method, missing base or ``weight``, wrong number of inputs, shape mismatch (the
        message names ``name``), bad parameter values.
    """
    if backend not in ("numpy", "jax"):
        raise MergeError(f"unknown backend {backend!r}; use 'numpy' or 'jax'")
    cfg, dyn = _plan(method, list(tensors), base, list(model_params), params, seed, name)
    if backend == "numpy":
        xs = tuple(np.asarray(t).astype(np.float32, copy=False) for t in tensors)
        b = None if base is None else np.asarray(base).astype(np.float32, copy=False)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.asarray(_core(np, cfg, xs, b, _np_dyn(dyn)), dtype=np.float32)
    import jax.numpy as jnp

    if cfg.sparsify is not None and cfg.sparsify != "random" and math.prod(base.shape) >= 2**31:
        raise MergeError(f"tensor {name!r}: the jax backend trims tensors below 2^31 elements only")
    xs = tuple(jnp.asarray(t, dtype=jnp.float32) for t in tensors)
    b = None if base is None else jnp.asarray(base, dtype=jnp.float32)
    return _jitted(cfg)(xs, b, _jax_dyn(dyn))


# --------------------------------------------------------------------------------------------------
# whole-model statistics (the TIES / breadcrumbs papers' global top-k)
# --------------------------------------------------------------------------------------------------


def magnitude_threshold(abs_values: Any, density: float) -> float:
    """The magnitude above which a fraction ``density`` of ``abs_values`` lies (the TIES paper's top-k).

    The papers trim each task vector to its top-``density`` entries over the *whole model*, which a
    per-tensor call cannot see. The engine does it in two passes:

    1. for each model ``i``, stream its tensors, and collect ``|θ_i − base|`` for every tensor the
       method merges: all of them (exact) or a uniform sample (:func:`abs_sample` with the same
       ``fraction`` for every tensor); then ``thr_i = magnitude_threshold(concat(samples), density_i)``;
    2. call :func:`merge_tensor` with ``model_params[i]["magnitude_threshold"] = thr_i``: the trim keeps
       ``|δ| ≥ thr_i`` instead of the per-tensor top-k (for breadcrumbs see
       :func:`breadcrumbs_thresholds`).

    Returns the ``k``-th largest value, ``k = int(density·n)``; 0.0 when ``density >= 1`` (keep all) and
    ``inf`` when ``k == 0`` (keep nothing). Entries tied with the threshold are all kept.
    """
    a = np.asarray(abs_values, dtype=np.float32).reshape(-1)
    if density >= 1:
        return 0.0
    k = int(density * a.size)
    if k <= 0:
        return math.inf
    return float(np.partition(a, a.size - k)[a.size - k])


def breadcrumbs_thresholds(abs_values: Any, density: float, gamma: float) -> tuple[float, float]:
    """``(lower, upper)`` whole-model thresholds for breadcrumbs: keep ``lower ≤ |δ| ≤ upper``.

    ``upper`` drops the largest ``gamma`` fraction (``inf`` when none is dropped) and ``lower`` leaves
    ``density`` of the entries (mergekit's rule: fewer outliers are dropped when ``density + gamma > 1``).
    Pass them as ``model_params[i]["magnitude_threshold"]`` and ``["outlier_threshold"]``."""
    a = np.sort(np.asarray(abs_values, dtype=np.float32).reshape(-1))
    n = a.size
    if density >= 1:
        return 0.0, math.inf
    target = int(density * n)
    n_top = int(gamma * n)
    n_top = min(n_top, n - target)
    upper = math.inf if n_top <= 0 else float(np.nextafter(a[n - n_top], np.float32(-np.inf)))
    lower = math.inf if target <= 0 else float(a[n - n_top - target])
    return lower, upper


def abs_sample(delta: Any, fraction: float, *, seed: int = 0, name: str = "") -> np.ndarray:
    """A deterministic uniform sample (each entry with probability ``fraction``) of ``|delta|``, for
    :func:`magnitude_threshold` on models too large to hold all task-vector magnitudes."""
    flat = np.abs(np.asarray(delta, dtype=np.float32).reshape(-1))
    if fraction >= 1:
        return flat
    k1, k2 = _keys(seed, "sample\0" + name, 0)
    u = _uniform_u32(np, flat.size, np.uint32(k1), np.uint32(k2))
    return flat[u < np.uint32(min(int(fraction * 2.0**32), 2**32 - 1))]
