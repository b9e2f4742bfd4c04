"""Partial training: which parameters (or which layers of the stacked layer weights) the optimizer updates.

`train.trainable` is a list of patterns over '/'-joined parameter paths (jaxfin/model/llama.py lists them:
`embed_tokens/embedding`, `layers/self_attn/q_proj/kernel`, `layers/mlp/down_proj/lora_a`, `norm/scale`, ...):

- a glob (fnmatch: `*` matches any characters *including* '/', `?` one character, `[abc]` a set):
  `lm_head/kernel`, `layers/mlp/*`, `*/lora_*`, `*_proj/kernel`. A pattern also matches every parameter under a
  path it matches, so `embed_tokens` and `layers/mlp` work as module names.
- a layer selection, for the stacked layer weights [L, ...]: `layers[SEL]` or `layers[SEL]/GLOB`, where SEL is a
  Python slice (`-4:` the top four layers, `:2` the bottom two, `::2` every other) or a list of indices (`0,3`,
  `-1`), and GLOB (default `*`) is matched against the path below `layers/`. `layers[-4:]/*` trains the top four
  layers; `layers[0,3]/mlp/*` the MLPs of layers 0 and 3. Only those layers of each stacked leaf are trained.
- a shortcut: `@embeddings` (embed_tokens + the output head: lm_head, or score for a reward model; with tied
  embeddings the one matrix), `@head` (lm_head or score), `@top:K` (= `layers[-K:]`), `@bottom:K` (= `layers[:K]`),
  `@norms` (every norm scale), `@lora` (every LoRA adapter), `@router` (a mixture of experts' routers: train
  the gates of an assembled MoE first, Branch-Train-MiX style), `@all` (everything), `@logme:K` (the K layers
  whose mean-pooled hidden states best predict the labels of the classification task `logme.task`, by LogME
  on the run's initial weights; jaxfin/train/logme.py. `jaxfin train` resolves it to `layers[i,j,...]` before
  the selection is made and keeps the ranking in OUTPUT_DIR/logme.json; `selection` itself refuses it).

The patterns' union is trained. [] (the default) trains everything, or only the LoRA adapters when
model.lora.rank > 0 (plus the score head of a reward model, which starts untrained). A pattern that matches no
parameter is an error naming it.

A selection is a pytree like the params with one value per leaf: None (frozen), True (the whole leaf) or a sorted
tuple of layer indices (those slices of a stacked leaf). `select_trainable` wraps an optax optimizer so that it
keeps state only for the trainable values (a [k, ...] slice for k selected layers) and returns zero updates for
the rest: clipping, weight decay and Adam moments see only what is trained.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from fnmatch import fnmatchcase
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from jaxfin.config.errors import ConfigError
from jaxfin.config.schema import ModelConfig

SHORTCUTS = ("@embeddings", "@head", "@top:K", "@bottom:K", "@norms", "@lora", "@router", "@all", "@logme:K")
_LAYERS = re.compile(r"layers\[([^\]]*)\](?:/(.*))?")
_SHORT = re.compile(r"@(top|bottom):(\d+)")
_LOGME = re.compile(r"@logme:(\d+)")


# ---------------------------------------------------------------------------------------------- paths


def flatten(tree: dict) -> dict[str, Any]:
    """Nested dict -> {'a/b/c': leaf}, keyed by the paths the patterns match, in jax's (sorted) leaf order whatever
    order the tree was built in (leaves: arrays, ShapeDtypeStructs, shape tuples, selection values). The inverse is
    `traverse_util.unflatten_dict(flat, sep="/")`."""
    return dict(sorted(traverse_util.flatten_dict(tree, sep="/").items()))


def _shape(x) -> tuple[int, ...]:
    return tuple(x) if isinstance(x, tuple) else tuple(x.shape)


# ---------------------------------------------------------------------------------------------- patterns


def _glob_matches(glob: str, path: str) -> bool:
    """The glob matches the path or one of its parent paths."""
    parts = path.split("/")
    return any(fnmatchcase("/".join(parts[:i]), glob) for i in range(len(parts), 0, -1))


def _layer_indices(sel: str, n: int, pattern: str) -> tuple[int, ...]:
    try:
        if ":" in sel:
            bits = sel.split(":")
            if len(bits) > 3:
                raise ValueError
            idx = list(range(n)[slice(*(int(b) if b.strip() else None for b in bits))])
        else:
            idx = [int(b) for b in sel.split(",")]
    except ValueError:
        raise ConfigError(
            f"train.trainable: pattern '{pattern}': '[{sel}]' is not a layer selection; use a Python slice "
            f"(layers[-4:]) or a list of indices (layers[0,3])"
        ) from None
    for i in idx:
        if not -n <= i < n:
            raise ConfigError(f"train.trainable: pattern '{pattern}' selects layer {i}, but the model has {n} layers")
    if not idx:
        raise ConfigError(f"train.trainable: pattern '{pattern}' selects no layer (the model has {n} layers)")
    return tuple(sorted({i % n for i in idx}))


def _check_k(pattern: str, k: int, cfg: ModelConfig) -> int:
    if not 1 <= k <= cfg.num_layers:
        raise ConfigError(
            f"train.trainable: '{pattern}': K must be between 1 and the number of layers ({cfg.num_layers})"
        )
    return k


def logme_k(pattern: str, cfg: ModelConfig) -> int | None:
    """K of a `@logme:K` pattern (checked against the model's layers), None for any other pattern."""
    m = _LOGME.fullmatch(pattern.strip())
    return None if m is None else _check_k(pattern, int(m.group(1)), cfg)


def _expand(pattern: str, cfg: ModelConfig) -> list[str]:
    """Shortcuts -> plain patterns."""
    if not pattern.startswith("@"):
        return [pattern]
    m = _SHORT.fullmatch(pattern)
    if m:
        k = _check_k(pattern, int(m.group(2)), cfg)
        return [f"layers[-{k}:]" if m.group(1) == "top" else f"layers[:{k}]"]
    if logme_k(pattern, cfg) is not None:  # needs weights and a task: only the trainer resolves it
        raise ConfigError(
            f"train.trainable: '{pattern}' ranks the layers by LogME on logme.task from the model's weights, which "
            f"only `jaxfin train` does; here give the layers themselves: `jaxfin select-layers MODEL --task TASK "
            f"--top K` prints the pattern (layers[i,j,...])"
        )
    table = {
        "@embeddings": ["embed_tokens", "lm_head", "score"],
        "@head": ["lm_head", "score"],
        "@norms": ["*/scale"],
        "@lora": ["*/lora_a", "*/lora_b"],
        "@router": ["layers/mlp/router"],
        "@all": ["*"],
    }
    if pattern not in table:
        raise ConfigError(f"train.trainable: unknown shortcut '{pattern}'; shortcuts: {', '.join(SHORTCUTS)}")
    return table[pattern]


def _match(pattern: str, paths: list[str], cfg: ModelConfig) -> dict[str, bool | tuple[int, ...]]:
    """{path: True or layer indices} for the parameters one pattern selects."""
    out: dict[str, bool | tuple[int, ...]] = {}
    for p in _expand(pattern.strip(), cfg):
        m = _LAYERS.fullmatch(p)
        if m:
            idx = _layer_indices(m.group(1), cfg.num_layers, pattern)
            glob = m.group(2) or "*"
            for path in paths:
                if path.startswith("layers/") and _glob_matches(glob, path[len("layers/") :]):
                    out[path] = _union(out.get(path), idx, cfg.num_layers)
        else:
            for path in paths:
                if _glob_matches(p, path):
                    out[path] = True
    return out


def _union(a, b, n: int):
    if a is True or b is True:
        return True
    idx = tuple(sorted(set(a or ()) | set(b or ())))
    return True if len(idx) == n else idx  # every layer = the whole leaf


def default_patterns(cfg: ModelConfig) -> list[str]:
    """What [] means: everything, or the LoRA adapters (+ a reward model's score head, PPO's value head) when LoRA
    is on."""
    if cfg.lora.rank > 0:
        return ["@lora", *(["score"] if cfg.num_labels else []), *(["value_head"] if cfg.value_head else [])]
    return ["@all"]


def selection(params, patterns: list[str], cfg: ModelConfig) -> dict:
    """Per parameter leaf: None (frozen), True (trained) or a sorted tuple of trained layer indices.

    `params`: the params, their ShapeDtypeStructs or `param_shapes(cfg)`; `patterns`: train.trainable ([] = the
    default, see `default_patterns`). Raises ConfigError for a pattern that matches nothing."""
    flat = flatten(params)
    paths = list(flat)
    chosen: dict[str, bool | tuple[int, ...]] = {}
    for pattern in patterns or default_patterns(cfg):
        hit = _match(pattern, paths, cfg)
        if not hit:
            examples = ", ".join(paths[:2] + [p for p in paths if p.startswith("layers/")][:2])
            raise ConfigError(
                f"train.trainable: pattern '{pattern}' matches no parameter of this model (paths look like "
                f"{examples}; layer selections: layers[-4:]/*; shortcuts: {', '.join(SHORTCUTS)})"
            )
        for path, v in hit.items():
            chosen[path] = _union(chosen.get(path), v, cfg.num_layers)
    return traverse_util.unflatten_dict({p: chosen.get(p) for p in paths}, sep="/")


def is_everything(sel: dict) -> bool:
    return all(v is True for v in flatten(sel).values())


# ---------------------------------------------------------------------------------------------- optimizer


def _contiguous(idx: tuple[int, ...]) -> bool:
    return idx == tuple(range(idx[0], idx[-1] + 1))


def _take(x, idx):
    if idx is True:
        return x
    if _contiguous(idx):  # a static slice
        return x[idx[0] : idx[-1] + 1]
    return jnp.take(x, np.asarray(idx), axis=0)


def _set_layers(x, y, idx: tuple[int, ...]):
    """x with its layers idx (along axis 0) replaced by y [len(idx), ...]."""
    if _contiguous(idx):
        return jax.lax.dynamic_update_slice_in_dim(x, y, idx[0], axis=0)
    return x.at[np.asarray(idx)].set(y)


def _place(template, u, idx):
    """A full-leaf update: u where trained, -0.0 elsewhere (p + -0.0 == p bit-for-bit, -0.0 and NaN-free)."""
    if idx is True:
        return u
    return _set_layers(jnp.full(template.shape, -0.0, u.dtype), u, idx)


def trainable_part(tree: dict, sel: dict) -> dict:
    """The trainable values of a params-like tree, as a tree with the same paths (frozen leaves left out, a stacked
    leaf with a layer selection sliced to [k, ...])."""
    flat, s = flatten(tree), flatten(sel)
    return traverse_util.unflatten_dict({p: _take(flat[p], v) for p, v in s.items() if v is not None}, sep="/")


def _full_updates(updates: dict, part: dict, sel: dict) -> dict:
    flat, got, s = flatten(updates), flatten(part), flatten(sel)
    return traverse_util.unflatten_dict(
        {
            p: (jnp.full(flat[p].shape, -0.0, flat[p].dtype) if v is None else _place(flat[p], got[p], v))
            for p, v in s.items()
        },
        sep="/",
    )


def with_trainable(params: dict, part: dict, sel: dict) -> dict:
    """Params with their trainable part replaced by `part` (a tree like `trainable_part(params, sel)`).

    Differentiating `loss(with_trainable(params, part, sel))` with respect to `part` only builds gradients (and
    gradient-accumulation buffers) for what is trained; the frozen weights are constants to XLA."""
    flat, got, s = flatten(params), flatten(part), flatten(sel)

    def one(x, v, y):
        if v is None:
            return x
        if v is True:
            return y
        return _set_layers(x, y.astype(x.dtype), v)

    return traverse_util.unflatten_dict({p: one(flat[p], v, got.get(p)) for p, v in s.items()}, sep="/")


def apply_part_updates(params: dict, updates: dict, sel: dict) -> dict:
    """optax.apply_updates for updates shaped like the trainable part (from `optimizer.inner.update`)."""
    return with_trainable(params, optax.apply_updates(trainable_part(params, sel), updates), sel)


class SelectTrainable(NamedTuple):
    """An optax GradientTransformation (init, update) over the full params whose `inner` optimizer only ever sees
    the trainable part. Its state *is* the inner state of that part, so its leaf paths end in the param paths
    (`like_params` lays it out like the params; a [k, ...] layer slice gets the stacked leaf's spec)."""

    init: Callable
    update: Callable
    inner: optax.GradientTransformation  # the same state, updated with gradients of the trainable part only
    selection: dict


def select_trainable(inner: optax.GradientTransformation, sel: dict) -> SelectTrainable:
    """Wrap `inner` so that only the selection is optimised: state only for the trainable values, zero updates
    (-0.0) for frozen leaves and unselected layers."""

    def init(params):
        return inner.init(trainable_part(params, sel))

    def update(updates, state, params=None):
        part_params = None if params is None else trainable_part(params, sel)
        new, state = inner.update(trainable_part(updates, sel), state, part_params)
        return _full_updates(updates, new, sel), state

    return SelectTrainable(init, update, inner, sel)


def stop_frozen_gradients(params: dict, sel: dict) -> dict:
    """Params with stop_gradient on what is frozen (unselected layers of a stacked leaf too): call it on the params
    inside the loss function, and XLA skips the frozen weights' gradient matmuls; their gradients are exact zeros
    (so a grad-norm metric measures only what is trained)."""
    flat, s = flatten(params), flatten(sel)

    def one(x, v):
        if v is True:
            return x
        if v is None:
            return jax.lax.stop_gradient(x)
        mask = np.zeros((x.shape[0],) + (1,) * (x.ndim - 1), bool)
        mask[list(v)] = True
        return jnp.where(mask, x, jax.lax.stop_gradient(x))

    return traverse_util.unflatten_dict({p: one(flat[p], s[p]) for p in s}, sep="/")


# ---------------------------------------------------------------------------------------------- reporting


def _abstract(params):
    return jax.tree.map(
        lambda x: x if hasattr(x, "dtype") else jax.ShapeDtypeStruct(_shape(x), jnp.float32),
        params,
        is_leaf=lambda x: isinstance(x, tuple),
    )


def tree_bytes(tree) -> int:
    return sum(int(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def optimizer_state_bytes(optimizer: optax.GradientTransformation, params) -> int:
    """Bytes of optimizer.init(params), computed abstractly (nothing allocated)."""
    return tree_bytes(jax.eval_shape(optimizer.init, _abstract(params)))


def count_params(params, sel: dict) -> tuple[int, int]:
    """(trainable, frozen) parameter counts under the selection."""
    flat, s = flatten(params), flatten(sel)
    trained = total = 0
    for p, x in flat.items():
        shape = _shape(x)
        n = int(np.prod(shape))
        total += n
        v = s[p]
        trained += n if v is True else 0 if v is None else n // shape[0] * len(v)
    return trained, total - trained


def trainable_summary(params, sel: dict, optimizer: optax.GradientTransformation) -> dict:
    """Numbers for the log: trainable / frozen parameter counts, the optimizer state's bytes with this selection
    and if everything were trained (`optimizer.inner` for a SelectTrainable), and the bytes saved."""
    trained, frozen = count_params(params, sel)
    mine = optimizer_state_bytes(optimizer, params)
    full = optimizer_state_bytes(getattr(optimizer, "inner", optimizer), params)
    return {
        "trainable_params": trained,
        "frozen_params": frozen,
        "opt_state_bytes": mine,
        "opt_state_bytes_all": full,
        "opt_state_bytes_saved": full - mine,
    }


def _mib(n: int) -> str:
    return f"{n / 2**20:,.2f} MiB"


def describe(sel: dict, limit: int = 12) -> list[str]:
    """What is trained, one line per leaf ('path' or 'path [layers 2,3]'), at most `limit` lines."""
    lines = [
        p if v is True else f"{p} [layers {','.join(map(str, v))}]" for p, v in flatten(sel).items() if v is not None
    ]
    return lines if len(lines) <= limit else lines[:limit] + [f"... and {len(lines) - limit} more"]


def trainable_report(params, sel: dict, optimizer: optax.GradientTransformation) -> str:
    """A few lines for the run log: what is trained, the counts, and the optimizer memory saved."""
    s = trainable_summary(params, sel, optimizer)
    total = s["trainable_params"] + s["frozen_params"]
    head = (
        f"trainable: {s['trainable_params']:,} of {total:,} parameters "
        f"({100 * s['trainable_params'] / max(total, 1):.2f}%), frozen: {s['frozen_params']:,}"
    )
    mem = f"optimizer state: {_mib(s['opt_state_bytes'])} (training everything: {_mib(s['opt_state_bytes_all'])}"
    if s["opt_state_bytes_saved"] > 0:
        saved = s["opt_state_bytes_saved"]
        mem += f"; saved {_mib(saved)}, {100 * saved / s['opt_state_bytes_all']:.1f}%"
    mem += ")"
    if is_everything(sel):
        return f"{head}\n{mem}"
    return "\n".join([head, *("  " + line for line in describe(sel)), mem])
