"""DPO with `objective.reference: precomputed`: the reference model's log-probs for every pair the run will see,
computed in one pass before training and cached, so training holds one model instead of two.

The loader is a pure function of the step, so the table is indexed by (step, row): `ref_logps[step, row, 0|1, k]`
is the reference log-prob of the chosen (0) / rejected (1) completion of pair k of that row. It is cached in
OUTPUT_DIR/reference_logps.npz under a key of everything it depends on (data plan, steps, batch, and the initial
model's weights, not its path: a model overwritten in place is a new reference), so a resumed run reuses it and a
changed run recomputes it. The trainer calls `precompute` before restoring a checkpoint, so a resumed run that
lost its table rebuilds it from the initial model, never from the trained one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import xxhash

from jaxfin.config.schema import ModelConfig, TrainConfig
from jaxfin.model.batch import BATCH_KEYS
from jaxfin.parallel import global_batch, process_rows, replicated
from jaxfin.parallel.distributed import barrier, is_main
from jaxfin.train.state import abstract_state, batch_spec
from jaxfin.train.step import reference_logps

CACHE = "reference_logps.npz"


def _stack(ref: dict) -> jnp.ndarray:
    return jnp.stack([ref["chosen_logps"], ref["rejected_logps"]], axis=1)  # [B, 2, P]


def _compile(model: ModelConfig, mesh, state, rows: int, seq_len: int):
    fn = jax.jit(lambda p, b: _stack(reference_logps(p, model, b)), out_shardings=replicated(mesh))
    with jax.set_mesh(mesh):
        return fn.lower(abstract_state(state["params"]), batch_spec(mesh, rows, seq_len)).compile()


def weights_fingerprint(params, mesh) -> list:
    """Per leaf: shape, dtype, and the float32 sum and sum of squares (7 significant digits), reduced on the
    devices where the weights live, so no host ever holds the model."""
    leaves = jax.tree.leaves(params)
    sums = jax.jit(
        lambda ls: [
            jnp.stack([jnp.sum(x.astype(jnp.float32)), jnp.sum(jnp.square(x.astype(jnp.float32)))]) for x in ls
        ],
        out_shardings=replicated(mesh),
    )(leaves)
    return [[list(x.shape), str(x.dtype), [float(f"{v:.7g}") for v in np.asarray(s)]] for x, s in zip(leaves, sums)]


def _trim(tables: list[np.ndarray]) -> np.ndarray:
    """Stack per-batch [B, 2, S//2] tables cut to the most pairs any row holds (the rest are empty slots)."""
    used = max((int(np.flatnonzero(np.abs(t).sum((0, 1)))[-1]) + 1 for t in tables if np.abs(t).sum()), default=1)
    return np.stack([t[:, :, :used] for t in tables])


def precompute(model: ModelConfig, t: TrainConfig, data, mesh, state, out: Path) -> tuple[np.ndarray, dict]:
    """(train table [steps, B, 2, P], {dev set: [batch][rows, 2, P]}) of the model `state` holds, for the run's
    DataStream `data` and train settings `t`, from the cache when it is current."""
    seq_len = data.seq_len
    chunk = t.batch_size // t.micro_batches
    key = xxhash.xxh3_64_hexdigest(
        json.dumps([data.fingerprint, t.steps, t.batch_size, chunk, weights_fingerprint(state["params"], mesh),
                    t.seed, t.dev_batches]).encode()
    )  # fmt: skip
    path = out / CACHE
    if path.is_file():
        with np.load(path) as z:
            if str(z["key"]) == key:
                dev = {name: list(z[f"dev/{name}"]) for name in data.dev}
                return z["train"], dev
    t0 = time.time()
    fn = _compile(model, mesh, state, t.batch_size, seq_len)
    tables = []
    for step, batch in enumerate(data.loader.iterate(0, t.steps, threads=data.threads)):
        local = {k: batch[k] for k in BATCH_KEYS}
        tables.append(np.asarray(fn(state["params"], global_batch(mesh, local, t.batch_size))))
        if is_main() and (step + 1) % 50 == 0:
            print(f"reference log-probs: {step + 1}/{t.steps} batches", flush=True)
    train = _trim(tables)
    dev = {}
    if data.dev:
        fn = _compile(model, mesh, state, chunk, seq_len)
        lo, hi = process_rows(mesh, chunk)
        for name, batches in data.dev_batches(chunk, t.dev_batches * t.batch_size).items():
            dev[name] = [
                np.asarray(fn(state["params"], global_batch(mesh, {k: b[k][lo:hi] for k in BATCH_KEYS}, chunk)))
                for b in batches
            ]
    if is_main():
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, key=key, train=train, **{f"dev/{n}": np.stack(v) for n, v in dev.items()})
        tmp.rename(path)
        print(f"reference log-probs for {t.steps} batches in {time.time() - t0:.1f} s -> {path}", flush=True)
    barrier("jaxfin-reference-ready")
    return train, dev
