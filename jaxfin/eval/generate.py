"""Batched KV-cache generation for the one parameter pytree: greedy, temperature, top-k, top-p, stop strings.

A batch of prompts is left-padded to a bucketed length P (powers of two, at least 16) and the batch to
`batch_size` rows, so one compiled program serves every batch of a run (no recompiles per prompt). The cache holds
keys and values per layer, [L, B, S_max, Hkv, Dh] each (GQA: only the kv heads), S_max = P + max_new_tokens.
Row b's prompt occupies columns [pad_b, P); its token at column c has RoPE position c - pad_b, and no query ever
attends to a column < pad_b, so the padding changes nothing (tests check the logits against a full forward pass).

    prefill:  the whole padded prompt through every layer, k/v written to columns [0, P), attention by the model's
              attention backend (the padding as segment 0, as in a packed training batch); logits at column P-1
    decode:   lax.while_loop: one token per row at column P+i, its k/v written there, until every row has stopped
              (EOS / an end-of-turn token) or max_new_tokens

Stop strings (text, not token ids) are looked for while decoding: the loop runs in pieces of STOP_CHECK_EVERY
tokens, the host decodes each running row's text between pieces, a row whose text holds a stop string is marked
done there (it generates nothing more) and the batch ends as soon as every row is done; the text is cut before the
first stop string, the tokens after the one that completed it (as transformers' stop strings do).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from jaxfin.kernels.attention import attention
from jaxfin.model.config import compute_dtype
from jaxfin.model.llama import apply_rope, matmul, mlp_block, output_kernel, rms_norm, rope_frequencies, rope_tables
from jaxfin.parallel.rules import constrain

NEG = -1e30  # a finite "minus infinity": fully masked rows (left padding) stay NaN-free
CACHE_AXES = ("layers", "batch", "seq", "kv_heads", "head_dim")  # logical axes of a KV cache [L, B, S, Hkv, Dh]


@dataclass
class GenerationConfig:
    """max_new_tokens: tokens generated per prompt at most; temperature 0 = greedy (argmax); top_k 0 = off;
    top_p 1.0 = off (nucleus: the smallest set of most likely tokens whose probability reaches top_p);
    stop: strings that end a generation (the text is cut before the first); seed: the sampling PRNG seed."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int = 0

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass
class Generation:
    """One prompt's result: the text (cut before a stop string), the generated token ids (up to and including an
    EOS, or the token that completed a stop string) and why it ended: "eos", "stop" (a stop string) or "length"."""

    text: str
    tokens: list[int]
    prompt_tokens: list[int]
    finish_reason: str


# --------------------------------------------------------------------------------------------- sampling


def filter_logits(logits, top_k=0, top_p=1.0):
    """Logits [..., V] (float32) with every token outside the top-k and outside the nucleus set to NEG. top_k (0 =
    off) and top_p (1 = off) may be traced scalars: one compiled program serves every setting.

    top-p keeps the smallest set of most likely tokens whose probability reaches top_p (the most likely token
    always stays), as transformers' TopPLogitsWarper does; it applies after top-k (on the renormalised top-k).
    Both are thresholds on the logit value, so tokens tied with the last kept one are kept too."""
    logits = logits.astype(jnp.float32)
    v = logits.shape[-1]
    desc = -jnp.sort(-logits, axis=-1)
    k = jnp.where(top_k > 0, jnp.minimum(top_k, v), v)
    kth = jax.lax.dynamic_slice_in_dim(desc, k - 1, 1, axis=-1)
    desc = jnp.where(desc < kth, NEG, desc)
    probs = jax.nn.softmax(desc, -1)
    before = jnp.cumsum(probs, -1) - probs  # mass of the strictly more likely tokens
    keep = (before < top_p) | (top_p >= 1.0)
    cutoff = jnp.min(jnp.where(keep, desc, jnp.inf), axis=-1, keepdims=True)
    return jnp.where((logits < kth) | (logits < cutoff), NEG, logits)


def sample(logits, key, temperature=0.0, top_k=0, top_p=1.0, *, greedy: bool | None = None):
    """int32 token ids [...] from logits [..., V]: argmax when greedy (default: temperature == 0, which then must be
    a Python number), else a draw from softmax(filter_logits(logits / temperature, top_k, top_p))."""
    if greedy if greedy is not None else temperature == 0:
        return jnp.argmax(logits, -1).astype(jnp.int32)
    scaled = logits.astype(jnp.float32) / temperature
    # the filter sorts the vocabulary: skipped (at run time) when neither top-k nor top-p is on
    on = (jnp.asarray(top_k) > 0) | (jnp.asarray(top_p) < 1.0)
    scaled = jax.lax.cond(on, lambda x: filter_logits(x, top_k, top_p), lambda x: x, scaled)
    return jax.random.categorical(key, scaled, -1).astype(jnp.int32)


# --------------------------------------------------------------------------------------------- the model with a cache


def _proj(x, p, dtype, contract: int = 1):
    y = matmul(x, p["kernel"].astype(dtype), contract)
    return y + p["bias"].astype(dtype) if "bias" in p else y


def _cached_attention(q, k_cache, v_cache, q_cols, pad):
    """q [B, T, Hq, Dh] at cache columns q_cols [T]; caches [B, S, Hkv, Dh]; a key column c is visible to a query at
    column t of row b when pad[b] <= c <= t."""
    b, t, hq, d = q.shape
    s, hkv = k_cache.shape[1], k_cache.shape[2]
    qg = q.reshape(b, t, hkv, hq // hkv, d)
    scores = jnp.einsum("btkgd,bskd->bkgts", qg, k_cache, preferred_element_type=jnp.float32) * d**-0.5
    cols = jnp.arange(s)
    visible = (cols[None, None, :] <= q_cols[None, :, None]) & (cols[None, None, :] >= pad[:, None, None])
    scores = jnp.where(visible[:, None, None], scores, NEG)
    probs = jax.nn.softmax(scores, -1)
    out = jnp.einsum("bkgts,bskd->btkgd", probs.astype(v_cache.dtype), v_cache, preferred_element_type=jnp.float32)
    return out.reshape(b, t, hq, d).astype(q.dtype)


def forward_cached(params, cfg, tokens, start, pad, k_cache, v_cache):
    """Run tokens [B, T] at cache columns start..start+T-1 through the model, writing their keys and values into the
    caches [L, B, S, Hkv, Dh]. pad [B]: the left padding of each row. Returns (logits [B, T, V] float32, caches).
    The prefill (start 0) attends through `jaxfin.kernels.attention` with model.attention_backend, as training
    does (a flash kernel where there is one); a decode step attends over the cache."""
    b, t = tokens.shape
    dtype = compute_dtype(cfg)
    prefill = isinstance(start, int) and start == 0  # the whole prompt at once, into an empty cache
    cols = start + jnp.arange(t)
    segments = (cols[None, :] >= pad[:, None]).astype(jnp.int32)
    positions = jnp.maximum(cols[None, :] - pad[:, None], 0)
    rope = rope_tables(positions, rope_frequencies(cfg))
    h = jnp.take(params["embed_tokens"]["embedding"], tokens, axis=0).astype(dtype)

    def layer(carry, xs):
        h, k_cache, v_cache = carry
        lp, i = xs
        x = rms_norm(h, lp["input_layernorm"]["scale"], cfg.rms_norm_eps)
        a = lp["self_attn"]
        q = apply_rope(_proj(x, a["q_proj"], dtype), *rope)
        k = apply_rope(_proj(x, a["k_proj"], dtype), *rope)
        v = _proj(x, a["v_proj"], dtype)
        # only the new columns are written, into the carried cache (updated in place, not copied per step)
        k_cache = jax.lax.dynamic_update_slice(k_cache, k[None].astype(k_cache.dtype), (i, 0, start, 0, 0))
        v_cache = jax.lax.dynamic_update_slice(v_cache, v[None].astype(v_cache.dtype), (i, 0, start, 0, 0))
        if prefill:  # the prompts alone: the model's own attention (its backend; the left padding is segment 0)
            o = attention(q, k, v, segment_ids=segments, causal=True, backend=cfg.attention_backend)
        else:
            o = _cached_attention(q, k_cache[i], v_cache[i], cols, pad)
        h = h + _proj(o, a["o_proj"], dtype, contract=2)
        x = rms_norm(h, lp["post_attention_layernorm"]["scale"], cfg.rms_norm_eps)
        h = h + mlp_block(cfg, lp["mlp"], x)[0]
        return (h, k_cache, v_cache), None

    layers = (params["layers"], jnp.arange(cfg.num_layers))
    (h, k_cache, v_cache), _ = jax.lax.scan(layer, (h, k_cache, v_cache), layers)
    h = rms_norm(h, params["norm"]["scale"], cfg.rms_norm_eps)
    logits = matmul(h, output_kernel(params, cfg).astype(h.dtype)).astype(jnp.float32)
    return logits, (k_cache, v_cache)


def _prefill(params, tokens, pad, key, eos, temperature, top_k, top_p, *, cfg, max_new, greedy, keep_logits):
    """The prompts through the model and the first token sampled: the decode state (i = 1, generated [B, max_new],
    lengths [B], done [B], caches, logits [B, max_new, V] | None)."""
    b, p = tokens.shape
    dtype = compute_dtype(cfg)
    shape = (cfg.num_layers, b, p + max_new, cfg.num_kv_heads, cfg.head_size)
    # on a mesh (traced under jax.set_mesh): the cache rows split like the batch, the kv heads like the k/v kernels
    caches = tuple(constrain(jnp.zeros(shape, dtype), CACHE_AXES) for _ in range(2))
    fill = jnp.maximum(eos[0], 0)
    logits, caches = forward_cached(params, cfg, tokens, 0, pad, *caches)
    last = logits[:, -1]
    first = sample(last, jax.random.fold_in(key, 0), temperature, top_k, top_p, greedy=greedy)
    out = jnp.full((b, max_new), fill, jnp.int32).at[:, 0].set(first)
    done = pad >= p  # filler rows (no prompt) that only keep the batch shape fixed
    done = done | jnp.isin(first, eos)
    lengths = jnp.ones((b,), jnp.int32)
    all_logits = jnp.zeros((b, max_new, last.shape[-1]), jnp.float32).at[:, 0].set(last) if keep_logits else None
    return jnp.int32(1), out, lengths, done, caches, all_logits


def _continue(params, state, pad, key, eos, temperature, top_k, top_p, until, *, cfg, max_new, greedy,
              keep_logits):  # fmt: skip
    """Decode from `state` one token per row at a time until token index `until` (at most max_new) or until every
    row is done; a row that is done generates nothing more (its slots stay filled with eos[0])."""
    p = state[4][0].shape[2] - max_new  # the padded prompt length, from the cache
    fill = jnp.maximum(eos[0], 0)
    until = jnp.minimum(until, max_new)

    def cond(state):
        i, _, _, done, *_ = state
        return (i < until) & ~jnp.all(done)

    def body(state):
        i, out, lengths, done, caches, all_logits = state
        prev = jax.lax.dynamic_index_in_dim(out, i - 1, 1, keepdims=True)
        logits, caches = forward_cached(params, cfg, prev, p + i - 1, pad, *caches)
        pick = sample(logits[:, 0], jax.random.fold_in(key, i), temperature, top_k, top_p, greedy=greedy)
        tok = jnp.where(done, fill, pick)
        out = jax.lax.dynamic_update_index_in_dim(out, tok, i, 1)
        lengths = lengths + (~done).astype(jnp.int32)
        if keep_logits:
            all_logits = jax.lax.dynamic_update_index_in_dim(all_logits, logits[:, 0], i, 1)
        done = done | jnp.isin(tok, eos)
        return i + 1, out, lengths, done, caches, all_logits

    return jax.lax.while_loop(cond, body, state)


def _decode(params, tokens, pad, key, eos, temperature, top_k, top_p, *, cfg, max_new, greedy, keep_logits):
    """tokens [B, P] left-padded prompts -> (generated [B, max_new] (EOS-padded after a row stops), number of
    generated tokens per row [B], logits [B, max_new, V] of each generated position or None)."""
    static = dict(cfg=cfg, max_new=max_new, greedy=greedy, keep_logits=keep_logits)
    knobs = (eos, temperature, top_k, top_p)
    state = _prefill(params, tokens, pad, key, *knobs, **static)
    _, out, lengths, _, _, all_logits = _continue(params, state, pad, key, *knobs, max_new, **static)
    return out, lengths, all_logits


_COMPILED: dict = {}


def decode_fn(cfg, max_new: int, greedy: bool, keep_logits: bool = False):
    """The jitted `(params, tokens [B, P], pad [B], key, eos [E] int32, temperature, top_k, top_p) -> (generated
    [B, max_new], lengths [B], logits [B, max_new, V] | None)`, one per model config, max_new_tokens and greedy or
    not; the sampling settings and stop ids are arguments, so jit compiles once per (B, P, E) shape only. Use -1
    as an EOS id that never matches; rows stop at any of `eos`, and are filled with eos[0] after."""
    k = (repr(cfg), max_new, greedy, keep_logits)
    if k not in _COMPILED:
        _COMPILED[k] = jax.jit(functools.partial(_decode, cfg=cfg, max_new=max_new, greedy=greedy,
                                                 keep_logits=keep_logits))  # fmt: skip
    return _COMPILED[k]


def chunked_decode_fns(cfg, max_new: int, greedy: bool):
    """(prefill, continue_): the same decoding as `decode_fn` in pieces, so the host can look at the text between
    pieces (stop strings) and end rows early. `prefill(params, tokens, pad, key, eos, temperature, top_k, top_p)
    -> state`; `continue_(params, state, pad, key, eos, temperature, top_k, top_p, until) -> state`, state = (i,
    generated, lengths, done, caches, None); the caches stay on the devices (donated from piece to piece)."""
    k = ("chunked", repr(cfg), max_new, greedy)
    if k not in _COMPILED:
        static = dict(cfg=cfg, max_new=max_new, greedy=greedy, keep_logits=False)
        _COMPILED[k] = (jax.jit(functools.partial(_prefill, **static)),
                        jax.jit(functools.partial(_continue, **static), donate_argnums=1))  # fmt: skip
    return _COMPILED[k]


def bucket(n: int, minimum: int = 16) -> int:
    """The padded length for n tokens: the next power of two, at least `minimum`."""
    return max(minimum, 1 << max(0, math.ceil(math.log2(max(n, 1)))))


def left_pad(prompts: list[list[int]], length: int, rows: int, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(tokens [rows, length] int32, pad [rows] int32): each prompt right-aligned after pad[b] filler tokens; rows
    past the prompts are filler (pad = length: they keep the batch shape fixed and generate nothing)."""
    tokens = np.full((rows, length), pad_id, np.int32)
    pad = np.full((rows,), length, np.int32)
    for i, ids in enumerate(prompts):
        tokens[i, length - len(ids) :] = ids
        pad[i] = length - len(ids)
    return tokens, pad


# --------------------------------------------------------------------------------------------- prompts and the API


def plain_params(model):
    """The params without LoRA leaves (adapters merged into their kernels) and the matching config."""
    from jaxfin.model.lora import has_adapters, merge_adapters

    if has_adapters(model.params):
        return merge_adapters(model.params, model.config)
    return model.params, model.config


def device_params(params):
    """`params` with its numpy leaves (a host copy, as training's periodic evaluation passes) put on the default
    device once, so jitted calls over many batches do not copy every weight from the host on each call; device
    arrays are left as they are."""
    return jax.tree.map(lambda a: jnp.asarray(a) if isinstance(a, np.ndarray) else a, params)


GENERATION_PROMPTS = {
    "llama3": "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "chatml": "<|im_start|>assistant\n",
}
END_OF_TURN = {"llama3": ["<|eot_id|>"], "chatml": ["<|im_end|>"]}


def render_prompt(prompt, tokenizer, chat_template: str | None = None) -> list[int]:
    """Token ids of one prompt: a list of ids as is; a string or a list of messages ({role, content}) rendered with
    a chat template and its generation prompt ("tokenizer": the HF tokenizer's own; "llama3"; "chatml"); a string
    without a template -> BOS + text."""
    from jaxfin.data.render import chatml_segments, check_template_tokens, llama3_segments, tokenizer_segments

    if isinstance(prompt, (list, tuple)) and (not prompt or isinstance(prompt[0], (int, np.integer))):
        return [int(t) for t in prompt]
    if chat_template is None:
        if not isinstance(prompt, str):
            raise ValueError("a prompt given as messages needs a chat template (tokenizer, llama3 or chatml)")
        return ([tokenizer.bos_id] if tokenizer.bos_id is not None else []) + tokenizer.encode(prompt)
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if chat_template == "tokenizer":
        hf = tokenizer.hf
        if hf is None or not getattr(hf, "chat_template", None):
            tokenizer_segments(messages, hf)  # raises the data module's clear message
        text = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tokenizer.encode(text)
    if chat_template not in GENERATION_PROMPTS:
        raise ValueError(f"chat_template must be tokenizer, llama3 or chatml; got '{chat_template}'")
    check_template_tokens(chat_template, tokenizer)
    segs = (llama3_segments if chat_template == "llama3" else chatml_segments)(messages)
    texts = [t for t, _ in segs] + [GENERATION_PROMPTS[chat_template]]
    return [i for ids in tokenizer.encode_batch(texts) for i in ids]


def stop_token_ids(model, tokenizer, chat_template: str | None = None) -> tuple[int, ...]:
    """Token ids that end a generation: the tokenizer's and model's EOS (an HF eos list included) and the chat
    template's end-of-turn token."""
    ids = []
    if tokenizer is not None and tokenizer.eos_id is not None:
        ids.append(tokenizer.eos_id)
    if model.config.eos_token_id >= 0:
        ids.append(model.config.eos_token_id)
    extra = ((model.hf_extra or {}).get("config") or {}).get("eos_token_id")
    if isinstance(extra, list):
        ids += extra
    specials = END_OF_TURN.get(chat_template or "", [])
    if chat_template == "tokenizer" and tokenizer is not None and tokenizer.hf is not None:
        specials = [t for t in ("<|eot_id|>", "<|im_end|>", "<|end|>") if t in tokenizer.hf.get_vocab()]
    for s in specials:
        enc = tokenizer.encode(s)
        if len(enc) == 1:
            ids.append(enc[0])
    return tuple(dict.fromkeys(int(i) for i in ids))


def generate_full(model, tokenizer, prompts, cfg: GenerationConfig | None = None, *, batch_size: int = 8,
                  chat_template: str | None = None) -> list[Generation]:  # fmt: skip
    """Like `generate`, but one Generation (text, token ids, prompt ids, finish reason) per prompt. A model whose
    params lie on a mesh (`jaxfin.eval.sharding.shard_model`) generates there: each batch's rows split over the
    mesh's batch axes (padded with filler rows to a multiple of them), the weights as they are laid out."""
    from jaxfin.eval.sharding import on_mesh, padded_rows, params_mesh, put_rows

    cfg = cfg or GenerationConfig()
    params, mcfg = plain_params(model)
    params = device_params(params)
    mesh = params_mesh(params)
    rows = padded_rows(mesh, batch_size)
    ids = [render_prompt(p, tokenizer, chat_template) for p in prompts]
    for i, x in enumerate(ids):
        if not x:
            raise ValueError(f"prompt {i} is empty")
    eos = stop_token_ids(model, tokenizer, chat_template)
    eos_arr = np.asarray(eos or (-1,), np.int32)
    knobs = (eos_arr, np.float32(cfg.temperature or 1.0), np.int32(cfg.top_k), np.float32(cfg.top_p))
    stops = [s for s in cfg.stop if s]
    if stops and tokenizer is None:
        raise ValueError("stop strings need a tokenizer (to read the generated text)")
    limit = mcfg.max_position_embeddings
    key = jax.random.PRNGKey(cfg.seed)
    results: list[Generation] = []
    for start in range(0, len(ids), batch_size):
        chunk = ids[start : start + batch_size]
        length = bucket(max(len(x) for x in chunk))
        if max(len(x) for x in chunk) + cfg.max_new_tokens > limit:
            raise ValueError(
                f"a prompt of {max(len(x) for x in chunk)} tokens + max_new_tokens {cfg.max_new_tokens} exceeds the "
                f"model's context ({limit} positions)"
            )
        tokens, pad = left_pad(chunk, length, rows)
        args = (params, put_rows(mesh, tokens), put_rows(mesh, pad), jax.random.fold_in(key, start), *knobs)
        with on_mesh(mesh):
            if stops:
                out, lengths, stopped = _decode_with_stops(mcfg, cfg, args, len(chunk), eos, tokenizer, stops)
            else:
                fn = decode_fn(mcfg, cfg.max_new_tokens, cfg.temperature == 0)
                out, lengths = (np.asarray(a) for a in fn(*args)[:2])
                stopped = {}
        for r, prompt_ids in enumerate(chunk):
            gen = out[r, : stopped.get(r, lengths[r])].tolist()
            reason = "eos" if gen and gen[-1] in eos else "length"
            text = tokenizer.decode([t for t in gen if t not in eos]) if tokenizer is not None else ""
            cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
            if cut >= 0:
                text, reason = text[:cut], "stop"
            results.append(Generation(text, gen, prompt_ids, reason))
    return results


STOP_CHECK_EVERY = 8  # with stop strings: tokens decoded between two looks at the text


def _decode_with_stops(mcfg, cfg: GenerationConfig, args, n_rows: int, eos, tokenizer, stops):
    """Decode in pieces of STOP_CHECK_EVERY tokens; after each, every running row whose text now holds a stop
    string is marked done (it generates nothing more, and the batch ends as soon as all rows are done). Returns
    (generated [B, max_new], lengths [B], {row: tokens up to the one that completed its first stop string})."""
    prefill, continue_ = chunked_decode_fns(mcfg, cfg.max_new_tokens, cfg.temperature == 0)
    params, tokens, pad, key, *knobs = args
    state = prefill(*args)
    stopped: dict[int, int] = {}
    ended: set[int] = set()  # rows already looked at after they ended (EOS or a stop string)
    while True:
        i, out, lengths, done = (np.asarray(a) for a in state[:4])
        done = done.copy()
        for r in set(range(n_rows)) - ended:
            body = [t for t in out[r, : lengths[r]].tolist() if t not in eos]
            if any(s in tokenizer.decode(body) for s in stops):
                stopped[r] = next(n for n in range(1, len(body) + 1)
                                  if any(s in tokenizer.decode(body[:n]) for s in stops))  # fmt: skip
                done[r] = True
            if done[r]:
                ended.add(r)
        if int(i) >= cfg.max_new_tokens or done.all():
            return out, lengths, stopped
        state = (*state[:3], jax.device_put(done, state[3].sharding), *state[4:])  # laid out as it was
        state = continue_(params, state, pad, key, *knobs, np.int32(int(i) + STOP_CHECK_EVERY))


def generate(model, tokenizer, prompts, cfg: GenerationConfig | None = None, *, batch_size: int = 8,
             chat_template: str | None = None) -> list[str]:  # fmt: skip
    """Generated texts, one per prompt (cut before the first stop string; EOS not included).

    model: a `jaxfin.Model` (LoRA adapters are merged first); tokenizer: `jaxfin.data.tokenizer.load_tokenizer`'s;
    prompts: strings (BOS + text, or rendered with `chat_template` as one user turn), lists of messages (with a
    chat template) or lists of token ids (used as they are). Batches of `batch_size` rows, each compiled once per
    prompt-length bucket. The token ids: `generate_full`."""
    return [g.text for g in generate_full(model, tokenizer, prompts, cfg, batch_size=batch_size,
                                          chat_template=chat_template)]  # fmt: skip


__all__ = ["GenerationConfig", "Generation", "generate", "generate_full", "filter_logits", "sample", "forward_cached"]
