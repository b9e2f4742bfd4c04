"""Mixture-of-experts MLP (Mixtral): a router picks `experts_per_token` of `num_experts` SwiGLU experts per token.

Params of one layer (declared in the MIXTRAL table of params.py; stacked on [L] in the pytree):

    mlp/router/kernel                     [D, E]
    mlp/experts/{gate,up}_proj/kernel     [E, D, F]
    mlp/experts/down_proj/kernel          [E, F, D]

Routing is HF Mixtral's: logits = x W_router, p = softmax(logits) in float32, the top k of p, renormalised over
the k (`norm_topk_prob`; else p's own values). Dispatch is dropless, every (token, expert) assignment computed:

- `ragged`: sort the T*k assignments by expert, one grouped matmul per projection over the sorted rows
  (`jax.lax.ragged_dot`, group sizes = tokens per expert), unsort, weight and sum the k outputs (Levanter's and
  MaxText's `sparse_matmul` scheme). FLOPs = those of the k active experts on GPU/TPU, whose compilers have a
  grouped GEMM; XLA:CPU expands ragged_dot into a masked dot over every group (E times the FLOPs).
- `padded`: each expert's assignments gathered into a window of C rows, C the largest group's size rounded up to
  one of a few capacities (`capacities`: steps of 1/8 of the balanced share T*k/E up to twice it, then three per
  doubling up to T*k, so it never drops), then one batched matmul per projection over the [E, C, D] windows with
  the experts' own [E, D, F] weights. FLOPs = E*C/(T*k) times the active experts' (the largest group's share
  over the balanced one, plus at most 1/8; up to E when one expert takes everything). A lax.switch picks the
  window size at run time; its custom VJP recomputes the chosen branch's forward, so every remat policy keeps
  the output (MOE_SAVED). The fast path on CPU, where XLA runs a batched matmul over E windows about as fast as
  one GEMM of the same FLOPs (while per-block expert weights, MegaBlocks' layout, ran at half that).
- `auto` (default): ragged on GPU/TPU, padded on CPU (the platform compiled for, parallel/mesh.py).
- `dense`: every expert on every token, combined by the (mostly zero) routing weights: E/k times the FLOPs; the
  simple oracle the tests compare the grouped paths against.
- expert parallelism (a mesh with `expert` > 1, parallel/rules.py): the experts are split over the `expert` axis
  and so are the tokens; inside `shard_map` each device sorts its assignments by destination device, exchanges them
  with one all-to-all, runs its local experts on what it received as above, and sends the outputs back with a
  second all-to-all. The exchange buffers hold every assignment a device could send (worst case, no capacity
  factor), so nothing is dropped whatever the routing.

Router statistics per layer (over non-padding tokens): load share of each expert, mean router probability, the
load-balancing loss E * sum_e f_e p_e (Switch Transformer eq. 4-6, as HF's `load_balancing_loss_func`: f_e =
assignments to e per token), the router z-loss mean(logsumexp(logits)^2) (ST-MoE), router entropy, and dropped
assignments (0: dropless).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name
from jax.sharding import PartitionSpec as P

from jaxfin.config.schema import ModelConfig
from jaxfin.parallel.rules import RULES

EXPERT_AXIS = "expert"
MOE_SAVED = "moe_padded_experts"  # the checkpoint_name every remat policy saves (model/llama.py)


def route(cfg: ModelConfig, router_kernel, x):
    """x [T, D] -> (router logits [T, E] float32, top-k expert ids [T, k], their weights [T, k] float32)."""
    logits = (x @ router_kernel.astype(x.dtype)).astype(jnp.promote_types(x.dtype, jnp.float32))
    probs = jax.nn.softmax(logits, axis=-1)
    top_p, top_i = jax.lax.top_k(probs, cfg.experts_per_token)
    if cfg.norm_topk_prob:
        top_p = top_p / jnp.sum(top_p, axis=-1, keepdims=True)
    return logits, top_i, top_p


def _lora(p, cfg: ModelConfig, x, key, matmul):
    """The LoRA term (alpha/r) * (dropout(x) A) B of an expert projection, or 0 without adapters."""
    if "lora_a" not in p:
        return 0.0
    rate = cfg.lora.dropout
    if key is not None and rate > 0:
        keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
        x = jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)
    return (cfg.lora.alpha / cfg.lora.rank) * matmul(matmul(x, p["lora_a"]), p["lora_b"])


def _swiglu(experts: dict, cfg: ModelConfig, x, matmul, keys, fuse_gate_up: bool = False):
    """down(silu(gate(x)) * up(x)) with `matmul(x, w)` applying each expert's weights to its rows. fuse_gate_up:
    one matmul with the gate and up kernels side by side (one wider GEMM: faster for small ones on CPU, for a copy
    of both kernels per call)."""

    def proj(name, x, key, y=None):
        p = experts[name]
        return (matmul(x, p["kernel"]) if y is None else y) + _lora(p, cfg, x, key, matmul)

    gate = up = None
    if fuse_gate_up:
        both = jnp.concatenate([experts["gate_proj"]["kernel"], experts["up_proj"]["kernel"]], axis=-1)
        gate, up = jnp.split(matmul(x, both), 2, axis=-1)
    h = jax.nn.silu(proj("gate_proj", x, keys[0], gate)) * proj("up_proj", x, keys[1], up)
    return proj("down_proj", h, keys[2])


def _cast(experts: dict, dtype) -> dict:
    return jax.tree.map(lambda w: w.astype(dtype), experts)


def dispatch(cfg: ModelConfig) -> str:
    """The concrete dispatch for cfg.moe_dispatch ("auto" resolved for the platform compiled for)."""
    if cfg.moe_dispatch != "auto":
        return cfg.moe_dispatch
    from jaxfin.parallel.mesh import target_platform

    return "padded" if target_platform() == "cpu" else "ragged"


def grouped_experts(experts: dict, cfg: ModelConfig, x, top_i, keys, num_groups: int | None = None,
                    kernel: str = "ragged", balanced: int | None = None):  # fmt: skip
    """Dropless grouped matmuls over the assignments (`kernel` ragged or padded). x [T, D], top_i [T, k] (ids >=
    num_groups are padding: skipped). balanced: assignments per group under perfect balance (padded's smallest
    capacity; default T*k / groups). Returns (per-assignment outputs [T, k, D] in assignment order, assignments
    computed)."""
    if kernel == "padded":
        return padded_experts(experts, cfg, x, top_i, keys, num_groups, balanced)
    t, k = top_i.shape
    e = num_groups or cfg.num_experts
    ids = top_i.reshape(-1)
    order = jnp.argsort(ids, stable=True)  # assignment rows grouped by expert, padding last
    rows = x[order // k]
    sizes = jnp.bincount(ids, length=e).astype(jnp.int32)  # ids >= e are not counted: their rows come out 0
    out = _swiglu(experts, cfg, rows, lambda x, w: jax.lax.ragged_dot(x, w, sizes), keys)
    back = jnp.zeros_like(out).at[order].set(out)  # unsort
    return back.reshape(t, k, -1), jnp.sum(sizes)


def ragged_experts(experts: dict, cfg: ModelConfig, x, top_i, keys, num_groups: int | None = None):
    return grouped_experts(experts, cfg, x, top_i, keys, num_groups, "ragged")


def capacities(assignments: int, balanced: int) -> tuple[int, ...]:
    """The window sizes `padded` may pick, from the balanced share up to every assignment (so never dropping):
    steps of balanced/8 up to twice the balanced share (where the largest group is in practice: a window at most
    balanced/8 above it), then three per doubling (at most 2^(1/3) = 1.26x it), all rounded up to multiples of 8."""
    b = max(balanced, 1)
    out = [b * (1 + i / 8) for i in range(9)]
    c = 2 * b * 2 ** (1 / 3)
    while c < assignments:
        out.append(c)
        c *= 2 ** (1 / 3)
    return tuple(sorted({min(-(-int(w) // 8) * 8, assignments) for w in out} | {assignments}))


def padded_experts(experts: dict, cfg: ModelConfig, x, top_i, keys, num_groups: int | None = None,
                   balanced: int | None = None):  # fmt: skip
    """Each expert's assignments in one window of C rows, C the smallest of `capacities` >= the largest group, and
    one batched matmul per projection over the [E, C, D] windows (see the module docstring)."""
    t, k = top_i.shape
    e = num_groups or cfg.num_experts
    a = t * k
    ids = top_i.reshape(-1)
    hot = jax.nn.one_hot(ids, e, dtype=jnp.int32)  # [a, E]; padding ids (>= e): a zero row, not counted
    sizes = jnp.sum(hot, axis=0)
    rank = jnp.sum(jnp.cumsum(hot, axis=0) * hot, axis=-1) - 1  # each assignment's row in its expert's window
    caps = capacities(a, balanced or a // e)
    level = jnp.minimum(jnp.searchsorted(jnp.asarray(caps), jnp.max(sizes)), len(caps) - 1)
    routing = (ids, rank, sizes)  # ranks by a cumulative count: 4x faster than argsort on CPU
    out = checkpoint_name(_padded_switch(cfg, caps)(experts, x, routing, level, keys), MOE_SAVED)
    return out.reshape(t, k, -1), jnp.sum(sizes)


def _windowed(cfg: ModelConfig, c: int, experts: dict, x, routing, keys):
    """The padded experts with windows of c rows (>= every group): x [T, D] -> outputs [T*k, D], assignment
    order."""
    ids, rank, sizes = routing
    t, a, e = x.shape[0], ids.shape[0], sizes.shape[0]
    expert = jnp.where(ids < e, ids, e)  # padding ids: out of range, dropped
    token = jnp.full((e, c), t, jnp.int32).at[expert, rank].set(jnp.arange(a) // (a // t), mode="drop")  # t: empty
    xw = x.at[token].get(mode="fill", fill_value=0)  # [E, c, D]
    y = _swiglu(experts, cfg, xw, lambda x, w: jnp.einsum("ecd,edf->ecf", x, w), keys, fuse_gate_up=True)
    row = jnp.where(ids < e, ids * c + rank, e * c)  # padding ids: out of range, 0
    return y.reshape(e * c, -1).at[row].get(mode="fill", fill_value=0)


def _padded_switch(cfg: ModelConfig, caps: tuple[int, ...]):
    """lax.switch over the capacities, with a custom VJP: the backward recomputes the chosen branch's forward
    rather than letting switch's own autodiff hand every branch's residuals out of the switch (each branch zeros
    for the others': many times the activations)."""
    branches = [partial(_windowed, cfg, c) for c in caps]

    @jax.custom_vjp
    def run(experts, x, routing, level, keys):
        return jax.lax.switch(level, branches, experts, x, routing, keys)

    def fwd(experts, x, routing, level, keys):
        return run(experts, x, routing, level, keys), (experts, x, routing, level, keys)

    def bwd(res, g):
        experts, x, routing, level, keys = res

        def grad(branch):
            return lambda ex, x: jax.vjp(lambda ex, x: branch(ex, x, routing, keys), ex, x)[1](g)

        d_experts, d_x = jax.lax.switch(level, [grad(b) for b in branches], experts, x)
        return d_experts, d_x, None, None, None

    run.defvjp(fwd, bwd)
    return run


def dense_experts(experts: dict, cfg: ModelConfig, x, top_i, keys):
    """Every expert on every token (the oracle for the ragged path): per-assignment outputs [T, k, D]."""

    def each(x, w):  # x [T, ...] or [E, T, ...] -> [E, T, ...]
        spec = "td,edf->etf" if x.ndim == 2 else "etd,edf->etf"
        return jnp.einsum(spec, x, w)

    out = _swiglu(experts, cfg, x, each, keys)  # [E, T, D]
    t = jnp.arange(x.shape[0])[:, None]
    return out[top_i, t], jnp.int32(top_i.size)


def _expert_mesh_size() -> int:
    mesh = jax.sharding.get_abstract_mesh()
    return 0 if mesh.empty or EXPERT_AXIS not in mesh.axis_names else mesh.shape[EXPERT_AXIS]


def _exchange(experts: dict, x, top_i, *, cfg: ModelConfig, keys, ep: int):
    """Per device inside shard_map: x [T, D] this device's tokens, top_i [T, k] global expert ids; experts hold
    this device's E/ep experts. Returns (outputs [T, k, D], assignments computed here for others)."""
    t, k = top_i.shape
    local = cfg.num_experts // ep
    a = t * k
    ids = top_i.reshape(-1)
    dest = ids // local
    order = jnp.argsort(ids, stable=True)  # by destination device, then by its local expert
    counts = jnp.bincount(dest, length=ep)
    starts = jnp.cumsum(counts) - counts
    slot = jnp.arange(a)
    src = jnp.clip(starts[:, None] + slot[None, :], 0, a - 1)  # [ep, a]: sorted position of each buffer slot
    filled = slot[None, :] < counts[:, None]
    send_x = jnp.where(filled[..., None], x[order[src] // k], 0)  # [ep, a, D]
    send_id = jnp.where(filled, ids[order[src]] % local, local)  # padding slots: id `local` (skipped)
    recv_x = jax.lax.all_to_all(send_x, EXPERT_AXIS, 0, 0, tiled=True)
    recv_id = jax.lax.all_to_all(send_id, EXPERT_AXIS, 0, 0, tiled=True)
    out, done = grouped_experts(experts, cfg, recv_x.reshape(ep * a, -1), recv_id.reshape(-1, 1), keys, local,
                                dispatch(cfg) if cfg.moe_dispatch != "dense" else "ragged", a // local)  # fmt: skip
    if "tensor" in jax.sharding.get_abstract_mesh().axis_names:
        out = jax.lax.psum(out, "tensor")  # each tensor shard computed a partial sum over its slice of F
    back = jax.lax.all_to_all(out.reshape(ep, a, -1), EXPERT_AXIS, 0, 0, tiled=True)  # [ep, a, D], as sent
    pos = jnp.zeros((a,), jnp.int32).at[order].set(jnp.arange(a))  # sorted position of each assignment
    mine = back[dest, pos - starts[dest]]  # [a, D], assignment order
    return mine.reshape(t, k, -1), jax.lax.psum(done, EXPERT_AXIS)


def parallel_experts(experts: dict, cfg: ModelConfig, x, top_i, keys):
    """Expert parallelism over the mesh's `expert` axis (see the module docstring)."""
    ep = _expert_mesh_size()
    if cfg.num_experts % ep:
        from jaxfin.config.errors import ConfigError

        raise ConfigError(f"model.num_experts={cfg.num_experts} is not divisible by mesh.expert={ep}")
    batch = RULES["batch"]
    tokens = P(batch, None)
    # expert weights split over experts and their MLP width over tensor (fsdp shards are gathered at entry);
    # LoRA: A of gate/up and B of down keep their whole dims, the others follow the kernel's F split
    col, row, whole = P(EXPERT_AXIS, None, "tensor"), P(EXPERT_AXIS, "tensor", None), P(EXPERT_AXIS, None, None)
    layout = {"kernel": (col, row), "lora_a": (whole, row), "lora_b": (col, whole)}
    specs = {name: {leaf: layout[leaf][name == "down_proj"] for leaf in p} for name, p in experts.items()}
    fn = jax.shard_map(partial(_exchange, cfg=cfg, ep=ep, keys=keys), in_specs=(specs, tokens, tokens),
                       out_specs=(P(batch, None, None), P()), check_vma=False)  # fmt: skip
    return fn(experts, x, top_i)


def moe_mlp(cfg: ModelConfig, m: dict, x, valid=None, keys=(None, None, None)):
    """The MoE block on x [B, S, D] (compute dtype). valid [B, S] (non-padding tokens, for the statistics) or None.
    keys: LoRA dropout keys of gate/up/down. Returns (y [B, S, D], this layer's router statistics)."""
    b, s, d = x.shape
    xt = x.reshape(-1, d)
    logits, top_i, top_w = route(cfg, m["router"]["kernel"], xt)
    experts = _cast(m["experts"], x.dtype)
    kind = dispatch(cfg)
    if _expert_mesh_size() > 1:
        out, done = parallel_experts(experts, cfg, xt, top_i, keys)
    elif kind == "dense":
        out, done = dense_experts(experts, cfg, xt, top_i, keys)
    else:
        out, done = grouped_experts(experts, cfg, xt, top_i, keys, kernel=kind)
    y = jnp.einsum("tkd,tk->td", out, top_w.astype(out.dtype))
    mask = jnp.ones((b * s,), jnp.float32) if valid is None else valid.reshape(-1).astype(jnp.float32)
    return y.reshape(b, s, d).astype(x.dtype), router_stats(cfg, logits, top_i, mask, done)


def router_stats(cfg: ModelConfig, logits, top_i, mask, done) -> dict:
    """One layer's statistics over the tokens where mask is 1 (float32 scalars and [E] vectors)."""
    e = cfg.num_experts
    n = jnp.maximum(jnp.sum(mask), 1.0)
    probs = jax.nn.softmax(logits, axis=-1)
    per_token = jnp.sum(jax.nn.one_hot(top_i, e, dtype=jnp.float32), axis=1)  # [T, E]: 1 where routed
    f = jnp.sum(per_token * mask[:, None], axis=0) / n  # assignments per token, sums to k
    p = jnp.sum(probs * mask[:, None], axis=0) / n
    lse = jax.nn.logsumexp(logits, axis=-1)
    entropy = -jnp.sum(probs * jnp.log(jnp.maximum(probs, 1e-30)), axis=-1)
    return {
        "load": f / cfg.experts_per_token,  # share of the assignments each expert got (1/E when balanced)
        "aux_loss": e * jnp.sum(f * p),
        "z_loss": jnp.sum(lse * lse * mask) / n,
        "entropy": jnp.sum(entropy * mask) / n,
        "dropped": (top_i.size - done).astype(jnp.float32),
    }


def router_loss(cfg: ModelConfig, stats: dict):
    """The auxiliary loss added to the training objective: both terms averaged over layers, with config weights."""
    if not stats:
        return 0.0
    return cfg.router_aux_loss_coef * jnp.mean(stats["aux_loss"]) + cfg.router_z_loss_coef * jnp.mean(stats["z_loss"])


def router_metrics(stats: dict) -> dict:
    """Scalar metrics from the per-layer statistics [L, ...]: layer means, and per layer the entropy, dropped
    assignments and each expert's load share (`moe/layer3/load/e5`)."""
    if not stats:
        return {}
    out = {f"moe/{k}": jnp.mean(stats[k]) for k in ("aux_loss", "z_loss", "entropy")}
    out["moe/dropped"] = jnp.sum(stats["dropped"])
    out["moe/load_max"] = jnp.mean(jnp.max(stats["load"], axis=-1))  # 1/E when balanced
    layers, experts = stats["load"].shape
    for i in range(layers):
        out[f"moe/layer{i}/entropy"] = stats["entropy"][i]
        out[f"moe/layer{i}/dropped"] = stats["dropped"][i]
        for j in range(experts):
            out[f"moe/layer{i}/load/e{j}"] = stats["load"][i, j]
    return out


def active_params(cfg: ModelConfig, total: int) -> int:
    """Parameters a token passes through: all but the (E - k) experts it is not routed to."""
    if not cfg.num_experts:
        return total
    per_expert = 3 * cfg.hidden_size * cfg.intermediate_size * cfg.num_layers
    return total - (cfg.num_experts - cfg.experts_per_token) * per_expert
