"""Llama-family decoder (Llama 2/3/3.1/3.2, Mistral, Qwen2, Mixtral) as pure functions over one parameter pytree.

Its parameters are declared once, in the LLAMA table of jaxfin/model/params.py; in short (HF-aligned names;
per-layer weights stacked on a leading layer axis, so scanning or looping over layers never changes the checkpoint
layout; kernels are [in, out], attention heads kept as their own axis):

    embed_tokens/embedding                 [V, D]
    layers/input_layernorm/scale           [L, D]
    layers/self_attn/{q,k,v}_proj/kernel   [L, D, H, Dh]     (H = num_heads for q, num_kv_heads for k, v)
    layers/self_attn/{q,k,v}_proj/bias     [L, H, Dh]        (Qwen2 only)
    layers/self_attn/o_proj/kernel         [L, Hq, Dh, D]
    layers/post_attention_layernorm/scale  [L, D]
    layers/mlp/{gate,up}_proj/kernel       [L, D, F]
    layers/mlp/down_proj/kernel            [L, F, D]
    layers/mlp/router/kernel               [L, D, E]         (Mixtral, instead of the dense MLP: jaxfin/model/moe.py)
    layers/mlp/experts/{gate,up}_proj/kernel  [L, E, D, F]
    layers/mlp/experts/down_proj/kernel    [L, E, F, D]
    norm/scale                             [D]
    lm_head/kernel                         [D, V]            (absent when embeddings are tied)
    score/kernel                           [D, N]            (instead of lm_head when num_labels = N > 0)
    value_head/kernel                      [D, 1]            (beside the LM head when value_head: PPO's critic)

With LoRA (model.lora.rank = r > 0) each target projection's kernel gets two adapter leaves beside it
(jaxfin/model/lora.py): `lora_a` = the kernel's layer and input dims + [r], `lora_b` = [L, r] + its output dims,
e.g. q_proj/lora_a [L, D, r], q_proj/lora_b [L, r, H, Dh], o_proj/lora_a [L, Hq, Dh, r], o_proj/lora_b [L, r, D].
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from jaxfin.config.schema import ModelConfig
from jaxfin.kernels import attention
from jaxfin.model.config import compute_dtype
from jaxfin.model.moe import MOE_SAVED, moe_mlp
from jaxfin.parallel.rules import constrain

# Activation layouts (logical names; jaxfin/parallel/rules.py maps them to mesh axes).
HIDDEN = ("batch", "seq", "act_embed")
HEADS = ("batch", "seq", "heads", "head_dim")
KV_HEADS = ("batch", "seq", "kv_heads", "head_dim")
MLP = ("batch", "seq", "mlp")
LOGITS = ("batch", "seq", "vocab")

# Names of the projection outputs that `remat: save_projections` keeps for the backward pass.
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
# Every policy also keeps the padded experts' outputs (moe.py: their backward recomputes their forward anyway, so
# remat's recomputation of them would be a third forward); absent from dense models and other dispatches.
_SAVED = jax.checkpoint_policies.save_only_these_names(MOE_SAVED)
REMAT_POLICIES = {
    "full": _SAVED,
    "save_matmuls": jax.checkpoint_policies.save_from_both_policies(jax.checkpoint_policies.checkpoint_dots, _SAVED),
    "save_projections": jax.checkpoint_policies.save_only_these_names(*PROJECTIONS, MOE_SAVED),
}


def rms_norm(x, scale, eps):
    """As HF: normalise in float32 (or wider), cast back, then multiply by the weight."""
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    xf = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return scale.astype(x.dtype) * xf.astype(x.dtype)


def rope_frequencies(cfg: ModelConfig) -> jnp.ndarray:
    """Inverse frequencies [Dh/2], with Llama 3.1's `llama3` scaling when configured."""
    dh = cfg.head_size
    inv = 1.0 / (cfg.rope_theta ** (jnp.arange(0, dh, 2, dtype=jnp.float32) / dh))
    rs = cfg.rope_scaling
    if rs.type == "llama3":
        low_wavelen = rs.original_max_position_embeddings / rs.low_freq_factor
        high_wavelen = rs.original_max_position_embeddings / rs.high_freq_factor
        wavelen = 2 * math.pi / inv
        smooth = (rs.original_max_position_embeddings / wavelen - rs.low_freq_factor) / (
            rs.high_freq_factor - rs.low_freq_factor
        )
        smoothed = (1 - smooth) * inv / rs.factor + smooth * inv
        inv = jnp.where(wavelen > low_wavelen, inv / rs.factor, inv)
        is_medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        inv = jnp.where(is_medium, smoothed, inv)
    return inv


def rope_tables(positions, inv_freq):
    """cos and sin [B, S, 1, Dh] (float32) for these positions: computed once per forward, shared by all layers."""
    freqs = positions[..., None].astype(jnp.float32) * inv_freq  # [B, S, Dh/2]
    angles = jnp.concatenate([freqs, freqs], -1)[:, :, None, :]
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x, cos, sin):
    """HF's rotate-half RoPE. x [B, S, H, Dh]; cos, sin from rope_tables."""
    x1, x2 = jnp.split(x, 2, axis=-1)
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    acc = jnp.promote_types(x.dtype, jnp.float32)
    return (x.astype(acc) * cos + rotated.astype(acc) * sin).astype(x.dtype)


def matmul(x, w, contract: int = 1):
    """Contract the last `contract` dims of x with the first of w, as one 2-D matmul over all tokens: XLA:CPU runs
    a [B, S, D] x [D, F] dot about 1.8x slower than the same [B*S, D] x [D, F] one (GPUs and TPUs don't mind)."""
    lead, k = x.shape[: x.ndim - contract], w.shape[:contract]
    y = x.reshape(-1, math.prod(k)) @ w.reshape(math.prod(k), -1)
    return y.reshape(*lead, *w.shape[contract:])


def _dense(x, p, dtype, cfg: ModelConfig, key=None, contract: int = 1):
    """x W (+ bias) (+ (alpha/r) * (dropout(x) A) B when p has LoRA adapters). `key`: dropout key or None (none)."""
    y = matmul(x, p["kernel"].astype(dtype), contract)
    if "bias" in p:
        y = y + p["bias"].astype(dtype)
    if "lora_a" in p:
        rate = cfg.lora.dropout
        if key is not None and rate > 0:
            keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
            x = jnp.where(keep, x / (1.0 - rate), 0).astype(dtype)
        low = matmul(x, p["lora_a"].astype(dtype), contract)
        y = y + (cfg.lora.alpha / cfg.lora.rank) * matmul(low, p["lora_b"].astype(dtype))
    return y


def _proj(x, p, dtype, name, layout, cfg: ModelConfig, key=None):
    return checkpoint_name(constrain(_dense(x, p, dtype, cfg, key), layout), name)


def mlp_block(cfg: ModelConfig, m: dict, x, valid=None, key=lambda i: None):
    """The MLP of one layer: SwiGLU, or the mixture of experts (moe.py) when the config has experts. `valid` [B, S]:
    non-padding tokens (router statistics only). Returns (output, router statistics or {})."""
    if cfg.num_experts:
        return moe_mlp(cfg, m, x, valid, (key(4), key(5), key(6)))
    dtype = x.dtype
    gate = checkpoint_name(constrain(_dense(x, m["gate_proj"], dtype, cfg, key(4)), MLP), "gate_proj")
    up = checkpoint_name(constrain(_dense(x, m["up_proj"], dtype, cfg, key(5)), MLP), "up_proj")
    return checkpoint_name(_dense(jax.nn.silu(gate) * up, m["down_proj"], dtype, cfg, key(6)), "down_proj"), {}


def decoder_layer(cfg: ModelConfig, lp: dict, h, segment_ids, rope, dropout_key=None):
    """One pre-norm block: h + attn(norm(h)), then + mlp(norm(h)). `dropout_key`: this layer's LoRA dropout key
    (None = no dropout). Returns (h, router statistics or {})."""
    dtype = h.dtype

    def key(i):  # an independent dropout mask per projection, as PEFT draws one per adapted module
        return None if dropout_key is None else jax.random.fold_in(dropout_key, i)

    x = rms_norm(h, lp["input_layernorm"]["scale"], cfg.rms_norm_eps)
    a = lp["self_attn"]
    q = apply_rope(_proj(x, a["q_proj"], dtype, "q_proj", HEADS, cfg, key(0)), *rope)
    k = apply_rope(_proj(x, a["k_proj"], dtype, "k_proj", KV_HEADS, cfg, key(1)), *rope)
    v = _proj(x, a["v_proj"], dtype, "v_proj", KV_HEADS, cfg, key(2))
    o = attention(q, k, v, segment_ids=segment_ids, causal=True, backend=cfg.attention_backend)
    o = _dense(constrain(o, HEADS), a["o_proj"], dtype, cfg, key(3), contract=2)
    h = constrain(h + checkpoint_name(o, "o_proj"), HIDDEN)
    x = rms_norm(h, lp["post_attention_layernorm"]["scale"], cfg.rms_norm_eps)
    valid = None if segment_ids is None else segment_ids != 0
    out, stats = mlp_block(cfg, lp["mlp"], x, valid, key)
    return constrain(h + out, HIDDEN), stats


def decoder(params: dict, cfg: ModelConfig, tokens, segment_ids=None, positions=None, *, dropout_rng=None):
    """(final normed hidden states [B, S, D] in the compute dtype, router statistics stacked over layers [L, ...]
    ({} for a dense model)). `dropout_rng`: a key for LoRA dropout (training); None = no dropout (evaluation), as
    does a model without LoRA or with lora.dropout 0."""
    h, stats, _ = _layers(params, cfg, tokens, segment_ids, positions, dropout_rng, None)
    return rms_norm(h, params["norm"]["scale"], cfg.rms_norm_eps), stats


def layer_outputs(params: dict, cfg: ModelConfig, tokens, segment_ids=None, positions=None, *, reduce=None):
    """Each decoder layer's output, stacked [L, ...]: reduce(h) of the hidden states h [B, S, D] (compute dtype)
    after layers 0..L-1, emitted by the same layer scan as `decoder` (no dropout). The embedding output is not
    included, and no final norm is applied: entry L-1 is what `decoder` normalises. `reduce` (default: h itself)
    runs inside the scan, so e.g. pooling keeps [L, B, D] instead of [L, B, S, D] in memory."""
    return _layers(params, cfg, tokens, segment_ids, positions, None, reduce or (lambda h: h))[2]


def _layers(params: dict, cfg: ModelConfig, tokens, segment_ids, positions, dropout_rng, emit):
    """Embedding, then the layers: (last layer's output [B, S, D], router statistics [L, ...], emit(h) of every
    layer's output stacked [L, ...] or None without `emit`)."""
    b, s = tokens.shape
    if positions is None:
        positions = jnp.broadcast_to(jnp.arange(s), (b, s))
    dtype = compute_dtype(cfg)
    rope = rope_tables(positions, rope_frequencies(cfg))
    h = constrain(jnp.take(params["embed_tokens"]["embedding"], tokens, axis=0).astype(dtype), HIDDEN)

    keys = None  # per-layer dropout keys, scanned with the layer weights
    if dropout_rng is not None and cfg.lora.rank > 0 and cfg.lora.dropout > 0:
        keys = jax.random.split(dropout_rng, cfg.num_layers)

    def layer(h, xs):
        lp, key = xs
        h, stats = decoder_layer(cfg, lp, h, segment_ids, rope, key)
        return h, (stats, None if emit is None else emit(h))

    if cfg.remat != "none":
        layer = jax.checkpoint(layer, policy=REMAT_POLICIES[cfg.remat], prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
        h, (stats, emitted) = jax.lax.scan(layer, h, (params["layers"], keys))
    else:
        per_layer = []
        for i in range(cfg.num_layers):
            lp = jax.tree.map(lambda w, i=i: w[i], params["layers"])
            h, out = layer(h, (lp, None if keys is None else keys[i]))
            per_layer.append(out)
        stats, emitted = jax.tree.map(lambda *xs: jnp.stack(xs), *per_layer)
    return h, stats, emitted


def hidden_states(params: dict, cfg: ModelConfig, tokens, segment_ids=None, positions=None, *, dropout_rng=None):
    """Final normed hidden states [B, S, D] in the compute dtype (see `decoder`)."""
    return decoder(params, cfg, tokens, segment_ids, positions, dropout_rng=dropout_rng)[0]


def output_kernel(params: dict, cfg: ModelConfig):
    """[D, V] LM head (the transposed embedding when tied)."""
    return params["embed_tokens"]["embedding"].T if cfg.tie_embeddings else params["lm_head"]["kernel"]


def scores(params: dict, cfg: ModelConfig, tokens, segment_ids=None, positions=None, *, dropout_rng=None):
    """Score-head outputs [B, S, num_labels] in float32 (float64 with float64 compute) at every position (a reward
    model reads each sequence's last token, as transformers' LlamaForSequenceClassification does)."""
    h = hidden_states(params, cfg, tokens, segment_ids, positions, dropout_rng=dropout_rng)
    return matmul(h, params["score"]["kernel"].astype(h.dtype)).astype(jnp.promote_types(h.dtype, jnp.float32))


def forward(params: dict, cfg: ModelConfig, tokens, segment_ids=None, positions=None, *, dropout_rng=None,
            router_stats: bool = False):  # fmt: skip
    """Logits [B, S, V] in float32 (float64 with float64 compute). segment_ids/positions come from the packed
    batch (None = one document); dropout_rng: LoRA dropout key for training (None = no dropout). With
    `router_stats`: (logits, the router statistics of a mixture of experts, [L, ...] per key; {} when dense)."""
    h, stats = decoder(params, cfg, tokens, segment_ids, positions, dropout_rng=dropout_rng)
    logits = _lm_head(params, cfg, h)
    return (logits, stats) if router_stats else logits


def _lm_head(params: dict, cfg: ModelConfig, h):
    logits = matmul(h, output_kernel(params, cfg).astype(h.dtype))
    return constrain(logits, LOGITS).astype(jnp.promote_types(h.dtype, jnp.float32))


def forward_with_values(params: dict, cfg: ModelConfig, tokens, segment_ids=None, positions=None, *,
                        dropout_rng=None):  # fmt: skip
    """(logits [B, S, V], values [B, S]) from one decoder pass: the LM head and PPO's value head
    (`value_head/kernel`, model.value_head) on the same final hidden states; float32 like `forward`."""
    h, _ = decoder(params, cfg, tokens, segment_ids, positions, dropout_rng=dropout_rng)
    values = matmul(h, params["value_head"]["kernel"].astype(h.dtype))[..., 0]
    return _lm_head(params, cfg, h), values.astype(jnp.promote_types(h.dtype, jnp.float32))
