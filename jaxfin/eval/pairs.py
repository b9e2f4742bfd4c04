"""Held-out preference accuracy: on (prompt, chosen, rejected) pairs, how often a model gives the chosen
completion a higher log-probability than the rejected one (`accuracy`: summed over the completion's tokens, its
EOS included; `accuracy_norm`: per token, which discounts length). Reference-free, so an SFT model and the DPO
model trained from it are measured alike (DPO's own rewards/accuracy compares against the reference and is 0 for
the reference itself). Pairs render as the preference trainer renders them (jaxfin.data.render, kind pairs);
a pair longer than seq_len keeps its last seq_len tokens, completion first."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxfin.data.render import render

_FNS: dict = {}


def _logp_fn(cfg):
    """The jitted (params, tokens, segment_ids, positions, mask) -> (per-row target log-prob sums, counts)."""
    key = repr(cfg)
    if key not in _FNS:
        from jaxfin.model import forward

        def f(params, tokens, seg, pos, mask):
            logits = forward(params, cfg, tokens, seg, pos).astype(jnp.float32)
            logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
            target = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
            w = mask[:, 1:].astype(jnp.float32)
            return jnp.sum(target * w, axis=-1), jnp.sum(w, axis=-1)

        _FNS[key] = jax.jit(f)
    return _FNS[key]


def sequence_logps(model, seqs: list[tuple[list[int], list[int]]], seq_len: int, batch_size: int):
    """(sums, counts) of the masked target tokens' log-probs of each (tokens, mask) sequence, one per row (left
    truncated to seq_len, right padded to the longest, a multiple of 16)."""
    from jaxfin.eval.generate import device_params
    from jaxfin.eval.sharding import on_mesh, padded_rows, params_mesh, put_rows

    width = min(seq_len, -(-max(len(t) for t, _ in seqs) // 16) * 16)
    f, params = _logp_fn(model.config), device_params(model.params)
    mesh = params_mesh(params)  # on a mesh: rows split over its batch axes, padded to a multiple of them
    rows = padded_rows(mesh, batch_size)
    sums, counts = [], []
    for i in range(0, len(seqs), batch_size):
        chunk = seqs[i : i + batch_size]
        n = len(chunk)
        tokens, seg, mask = (np.zeros((rows, width), np.int32) for _ in range(3))
        for r, (t, m) in enumerate(chunk):
            t, m = t[-width:], m[-width:]
            tokens[r, : len(t)], seg[r, : len(t)], mask[r, : len(t)] = t, 1, m
        pos = np.broadcast_to(np.arange(width, dtype=np.int32), (rows, width))
        with on_mesh(mesh):
            s, c = f(params, *(put_rows(mesh, a) for a in (tokens, seg, pos, mask)))
        sums.append(np.asarray(s)[:n])
        counts.append(np.asarray(c)[:n])
    return np.concatenate(sums).astype(np.float64), np.concatenate(counts)


def pair_metrics(model, tok, pairs: list[dict], *, seq_len: int = 1024, batch_size: int = 8) -> dict:
    """{accuracy, accuracy_norm, margin (mean summed log-prob of chosen minus rejected), pairs} over the pairs
    whose both completions keep at least one target token."""
    seqs = [s for p in pairs for s in render("pairs", p, tok)]  # chosen, rejected, chosen, ...
    top = max(max(t) for t, _ in seqs)
    if top >= model.config.vocab_size:
        raise ValueError(f"the tokenizer produced id {top}, but the model's vocabulary has {model.config.vocab_size}")
    sums, counts = sequence_logps(model, seqs, seq_len, batch_size)
    c, r, lc, lr = sums[0::2], sums[1::2], counts[0::2], counts[1::2]
    ok = (lc > 0) & (lr > 0)
    c, r, lc, lr = c[ok], r[ok], lc[ok], lr[ok]
    return {
        "accuracy": float(np.mean(c > r)),
        "accuracy_norm": float(np.mean(c / lc > r / lr)),
        "margin": float(np.mean(c - r)),
        "pairs": int(ok.sum()),
    }
