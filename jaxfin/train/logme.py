"""Layer selection by LogME (You et al. 2021, "LogME: Practical Assessment of Pre-trained Models for Transfer
Learning", ICML): which layers' hidden states already carry a classification task's labels, so that partial
training (`train.trainable: ["@logme:K"]`, `jaxfin select-layers`) updates the K layers that matter most.

Features. Each example of a multiple-choice task (jaxfin/eval/tasks.py; the context tokens the task scores, its
prompt with any few-shot examples, and the index of the gold answer among `choices` as the class label) is one
segment of a packed row; one forward (`jaxfin.model.llama.layer_outputs`, the decoder's own layer scan) gives
the output of every decoder layer 0..L-1, mean-pooled over that example's tokens (padding and the other segments
of the row never count), in float32: features [L, N, D]. The embedding output is not a candidate (it is not a
layer `layers[i]` could train), and no final norm is applied.

LogME of features F [N, D] and labels: for each class c, y = 1[label == c] (one-vs-rest), the evidence of the
Bayesian linear model y = F w + noise, w ~ N(0, 1/alpha I), noise ~ N(0, 1/beta I),

    L(alpha, beta) = N/2 log beta + D/2 log alpha - N/2 log 2pi - beta/2 ||F m - y||^2 - alpha/2 m'm - 1/2 log|A|
    A = alpha I + beta F'F,  m = beta A^-1 F'y,

maximised over (alpha, beta) by the paper's fixed point (gamma = sum beta s_i^2 / (alpha + beta s_i^2),
alpha = gamma / m'm, beta = (N - gamma) / ||F m - y||^2) on the SVD F = U S V' (one SVD per layer, every term a
sum over the singular values). LogME = the mean over the classes present of max L / N, in float64 numpy; higher
is better, and `rank_layers` sorts the layers by it. log|A| counts the D - rank(F) eigenvalues equal to alpha
(so D cancels out of L), and no epsilon is added to the denominators. The iteration runs on the noise variance
1/beta, with L evaluated as the equal Gaussian marginal of y: with N <= D (a 4096-wide model, 500 examples) y is
often fitted without noise and the maximum is the limit beta -> infinity, where the form above divides by zero.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxfin.config.errors import ConfigError
from jaxfin.config.schema import Config
from jaxfin.eval.tasks import build_requests, load_task, validate_task
from jaxfin.model import Model
from jaxfin.model.llama import layer_outputs

MIN_ROW = 32  # shortest packed row (a power of two)


# ---------------------------------------------------------------------------------------------- LogME


def logme(features, labels, *, tol: float = 1e-12, max_iter: int = 10_000) -> float:
    """LogME of features [N, D] for integer class labels [N] (see the module docstring); float64 throughout."""
    f = np.asarray(features, np.float64)
    y = np.asarray(labels)
    if f.ndim != 2 or y.shape != (f.shape[0],):
        raise ValueError(f"logme: features must be [N, D] and labels [N]; got {f.shape} and {y.shape}")
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(f"logme: the labels hold {len(classes)} class(es); LogME needs at least 2")
    n = f.shape[0]
    u, s = _left_svd(f)
    keep = s > s.max(initial=0.0) * max(f.shape) * np.finfo(np.float64).eps  # F's numerical rank
    if not keep.any():
        raise ValueError("logme: the features are all zero")
    u, sigma = u[:, keep], s[keep] ** 2
    onehot = (y[:, None] == classes[None, :]).astype(np.float64)  # [N, C]
    x2 = (u.T @ onehot) ** 2  # squared coordinates of each y_c in F's column space
    outside = np.maximum(onehot.sum(0) - x2.sum(0), 0.0)  # ||y_c||^2 beyond it
    ev = [_max_evidence(sigma, x2[:, c], outside[c], n, tol, max_iter) for c in range(len(classes))]
    out = float(np.mean(ev)) / n
    if not np.isfinite(out):
        raise ValueError("logme: the evidence is not finite (degenerate features: constant or exactly fitting)")
    return out


def _left_svd(f):
    """U [N, k] and the singular values [k] of F's thin SVD (k = min(N, D)), through a QR first: LAPACK's SVD of a
    500 x 4096 matrix directly takes ~10x longer than the QR of the long side plus the SVD of the small R."""
    n, d = f.shape
    if n < d:  # F' = Q R, so F = R' Q' and F's left singular vectors are R''s
        u, s, _ = np.linalg.svd(np.linalg.qr(f.T, mode="r").T)
        return u, s
    q, r = np.linalg.qr(f)  # F = Q R: F's left singular vectors are Q times R's
    u, s, _ = np.linalg.svd(r)
    return q @ u, s


def _max_evidence(sigma, x2, outside: float, n: int, tol: float, max_iter: int) -> float:
    """The paper's fixed point for one target: alpha = gamma / m'm, 1/beta = ||F m - y||^2 / (N - gamma), from
    alpha = beta = 1 until the evidence stops rising. Kept as the noise variance v = 1/beta, so a noise-free fit
    (N <= D: beta growing without bound, the maximum a limit) converges instead of overflowing; N - gamma is
    summed as the t / (sigma + t) it is (t = alpha / beta), without cancellation."""
    alpha, v = 1.0, 1.0
    k = len(sigma)
    ev = evidence(sigma, x2, outside, n, alpha, v)
    for _ in range(max_iter):
        t = alpha * v
        gamma = float(np.sum(sigma / (sigma + t)))
        rest = float(np.sum(t / (sigma + t))) + (n - k)  # N - gamma
        mm = float(np.sum(sigma * x2 / (sigma + t) ** 2))  # m'm
        res = float(np.sum(x2 * (t / (sigma + t)) ** 2)) + outside  # ||F m - y||^2
        if mm <= 0 or rest <= 0:
            break
        alpha, v = gamma / mm, res / rest
        prev, ev = ev, evidence(sigma, x2, outside, n, alpha, v)
        if abs(ev - prev) <= tol * max(1.0, abs(ev)):
            break
    return ev


def evidence(sigma, x2, outside: float, n: int, alpha: float, v: float) -> float:
    """The log evidence L(alpha, beta = 1/v) of the module docstring, from F's squared singular values `sigma`
    and y's squared coordinates `x2` on them (`outside`: what is left of ||y||^2). The same value written as the
    Gaussian marginal y ~ N(0, F F' / alpha + v I), which stays finite at v = 0; D does not appear (its terms
    cancel)."""
    c = sigma / alpha + v  # the marginal covariance's eigenvalues on F's column space
    quad = float(np.sum(x2 / c))
    logdet = float(np.sum(np.log(c)))
    if n > len(sigma):  # directions F does not span: variance v
        quad += outside / v if outside > 0 else 0.0
        logdet += (n - len(sigma)) * np.log(v)
    return -0.5 * (n * np.log(2 * np.pi) + logdet + quad)


def rank_features(features, labels) -> list[dict]:
    """features [L, N, D] (one [N, D] per layer) -> [{"layer": i, "logme": value}], best first."""
    scores = [{"layer": i, "logme": logme(f, labels)} for i, f in enumerate(features)]
    return sorted(scores, key=lambda r: -r["logme"])


def top_layers(ranking: list[dict], k: int) -> list[int]:
    """The K best layers of a ranking, in layer order."""
    if not 1 <= k <= len(ranking):
        raise ValueError(f"top K: K must be between 1 and the number of layers ({len(ranking)}); got {k}")
    return sorted(r["layer"] for r in ranking[:k])


def layers_pattern(layers: list[int]) -> str:
    """The train.trainable pattern of these layers: `layers[1,3]`."""
    return f"layers[{','.join(map(str, layers))}]"


# ---------------------------------------------------------------------------------------------- features


def segment_means(h, segment_ids, k: int):
    """Mean of h [B, S, D] over the tokens of each segment 1..k of every row -> [B, k, D] float32 (zeros for a
    segment a row does not have); padding (segment 0) and the other segments are left out."""
    member = (segment_ids[..., None] == jnp.arange(1, k + 1)).astype(jnp.float32)  # [B, S, k]
    sums = jnp.einsum("bsk,bsd->bkd", member, h.astype(jnp.float32))
    counts = member.sum(1)[..., None]
    return sums / jnp.maximum(counts, 1.0)


def task_examples(task, tokenizer, limit: int | None, max_length: int) -> tuple[list[list[int]], np.ndarray]:
    """(token ids of each example's context, as the task scores it; its gold choice index) of a multiple-choice
    task (a YAML path, built-in name or dict), through the task loader. Contexts keep their last `max_length`
    tokens (the task's own max_length wins)."""
    d = load_task(task)
    if d.get("type", "multiple_choice") != "multiple_choice":
        raise ValueError(f"{d['_where']}: LogME needs class labels: a multiple_choice task, not '{d['type']}'")
    t = validate_task(d)
    items = build_requests(t, tokenizer, limit)
    if len(items) < 2:
        raise ValueError(f"{t['_where']}: LogME needs at least 2 examples; the task has {len(items)}")
    keep = t["max_length"] or max_length
    return [it["requests"][0][0][-keep:] for it in items], np.array([it["gold"] for it in items])


def _pack(lengths: list[int], row_len: int) -> list[list[int]]:
    """Examples in order, each row filled until the next one does not fit (so the rows keep the task order)."""
    rows: list[list[int]] = [[]]
    used = 0
    for i, n in enumerate(lengths):
        if used + n > row_len and rows[-1]:
            rows.append([])
            used = 0
        rows[-1].append(i)
        used += n
    return rows


def layer_features(model: Model, task, *, tokenizer=None, limit: int | None = 500, batch_size: int = 8):
    """(features [L, N, D] float32: each layer's output mean-pooled over each example's tokens, labels [N]) of
    a multiple-choice task; `batch_size` packed rows per forward (the last batch padded, so it compiles once)."""
    from jaxfin.eval.generate import device_params

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    cfg = model.config
    tok = tokenizer or _model_tokenizer(model)
    seqs, labels = task_examples(task, tok, limit, cfg.max_position_embeddings)
    row_len = MIN_ROW
    while row_len < max(map(len, seqs)):
        row_len *= 2
    rows = _pack([len(s) for s in seqs], row_len)
    k = max(map(len, rows))
    fn = jax.jit(
        lambda p, t, s, pos: layer_outputs(p, cfg, t, s, pos, reduce=lambda h: segment_means(h, s, k))
    )  # [L, B, k, D]
    params = device_params(model.params)
    feats = np.zeros((cfg.num_layers, len(seqs), cfg.hidden_size), np.float32)
    for b0 in range(0, len(rows), batch_size):
        tok_ids, seg, pos = (np.zeros((batch_size, row_len), np.int32) for _ in range(3))
        where = []  # (example, row in batch, segment - 1)
        for r, row in enumerate(rows[b0 : b0 + batch_size]):
            o = 0
            for j, i in enumerate(row):
                n = len(seqs[i])
                tok_ids[r, o : o + n], seg[r, o : o + n], pos[r, o : o + n] = seqs[i], j + 1, np.arange(n)
                where.append((i, r, j))
                o += n
        out = np.asarray(fn(params, jnp.asarray(tok_ids), jnp.asarray(seg), jnp.asarray(pos)), np.float32)
        for i, r, j in where:
            feats[:, i] = out[:, r, j]
    return feats, labels


def _model_tokenizer(model: Model):
    from jaxfin.data.tokenizer import load_tokenizer

    if not model.tokenizer_dir:
        raise ValueError("the model has no tokenizer files: pass a tokenizer (--tokenizer)")
    return load_tokenizer(model.tokenizer_dir)


def rank_layers(model: Model, task, limit: int | None = 500, batch_size: int = 8, *, tokenizer=None) -> list[dict]:
    """[{"layer": i, "logme": value}] for every decoder layer of `model` on a multiple-choice task (a YAML path,
    a built-in name or a dict; its first `limit` examples, None = all), best first. `tokenizer`: default the
    model's own (model.tokenizer_dir)."""
    feats, labels = layer_features(model, task, tokenizer=tokenizer, limit=limit, batch_size=batch_size)
    return rank_features(feats, labels)


# ---------------------------------------------------------------------------------------------- the trainer


def resolve_trainable(cfg: Config, params: dict | None, tokenizer, out_dir: Path) -> tuple[Config, dict | None]:
    """The run config with every `@logme:K` of train.trainable replaced by `layers[i,j,...]` of the K best layers,
    ranked on logme.task from the run's initial params (`params`; None = the model initialised from train.seed,
    which is then returned so the run starts from exactly those weights). The ranking is written to
    OUT_DIR/logme.json and read back when it is there (a resumed run keeps its layers)."""
    from jaxfin.model.init import init_params
    from jaxfin.parallel.distributed import is_main
    from jaxfin.train.trainable import logme_k

    ks = [logme_k(p, cfg.model) for p in cfg.train.trainable]
    if all(k is None for k in ks):
        return cfg, params
    lc = cfg.logme
    if not lc.task:
        raise ConfigError(
            "train.trainable: '@logme:K' ranks layers on a classification task: set logme.task (a multiple-choice "
            "task YAML or a built-in name: fpb, fiqa_sa, fomc)"
        )
    if lc.limit < 0 or lc.batch_size < 1:
        raise ConfigError(
            f"logme.limit must be >= 0 (0 = all) and logme.batch_size >= 1; got {lc.limit} and {lc.batch_size}"
        )
    path = Path(out_dir) / "logme.json"
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e}); delete it to rank the layers again") from None
        if saved.get("task") != lc.task:
            raise ConfigError(
                f"{path} ranks the layers on task '{saved.get('task')}' but logme.task is '{lc.task}': delete it "
                f"to rank again (the run's layers would change)"
            )
        ranking, how = saved["ranking"], f"read from {path}"
    else:
        if params is None:
            params = init_params(cfg.model, jax.random.key(cfg.train.seed))
        ranking = rank_layers(Model(cfg.model, params), lc.task, lc.limit or None, lc.batch_size, tokenizer=tokenizer)
        if is_main():  # atomically: another process of the run may be looking for it
            tmp = path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps({"task": lc.task, "limit": lc.limit, "ranking": ranking}, indent=2) + "\n")
            tmp.replace(path)
        how = f"written to {path}"
    patterns = []
    for p, k in zip(cfg.train.trainable, ks, strict=True):
        patterns.append(p if k is None else layers_pattern(top_layers(ranking, k)))
        if k is not None and is_main():
            print(f"{p.strip()}: training {patterns[-1]}, the {k} best layers by LogME on {lc.task} "
                  f"(ranking {how})", flush=True)  # fmt: skip
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, trainable=patterns)), params


# ---------------------------------------------------------------------------------------------- CLI


def add_select_layers_parser(sub) -> None:
    p = sub.add_parser(
        "select-layers",
        help="rank a model's layers by LogME on a classification task (for train.trainable)",
        description="Compute LogME (You et al. 2021: the evidence of a Bayesian linear model) of each decoder "
        "layer's mean-pooled hidden states against the labels of a multiple-choice task (each example's prompt "
        "is the text, the index of its gold answer the class), print the layers best first, the top K and the "
        'train.trainable pattern that trains them. `train.trainable: ["@logme:K"]` with logme.task does the '
        "same inside `jaxfin train`.",
    )
    p.add_argument("model", help="a training run dir, a jaxfin checkpoint or a Hugging Face dir")
    p.add_argument("--task", required=True, help="a multiple-choice task YAML or a built-in name (fpb, fiqa_sa, fomc)")
    p.add_argument("--top", type=int, default=4, metavar="K", help="how many layers to choose (default 4)")
    p.add_argument("--limit", type=int, default=500, metavar="N", help="the task's first N examples (0 = all)")
    p.add_argument("--batch-size", type=int, default=8, metavar="B", help="packed rows per forward (default 8)")
    p.add_argument("--tokenizer", default=None, help="tokenizer file or dir (default: the model's own)")
    p.add_argument("--json", action="store_true", help="print the ranking and the choice as JSON")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    from jaxfin.data.tokenizer import load_tokenizer
    from jaxfin.store import load_model

    model = load_model(args.model)
    if not 1 <= args.top <= model.config.num_layers:
        raise ValueError(f"--top {args.top}: K must be between 1 and the number of layers ({model.config.num_layers})")
    tok = load_tokenizer(args.tokenizer) if args.tokenizer else None
    feats, labels = layer_features(model, args.task, tokenizer=tok, limit=args.limit or None,
                                   batch_size=args.batch_size)  # fmt: skip
    ranking = rank_features(feats, labels)
    chosen = top_layers(ranking, args.top)
    pattern = layers_pattern(chosen)
    if args.json:
        print(json.dumps({"task": args.task, "n": len(labels), "classes": len(np.unique(labels)),
                          "ranking": ranking, "top": chosen, "pattern": pattern}, indent=2))  # fmt: skip
        return 0
    print(f"LogME of each layer's mean-pooled hidden states on {args.task} ({len(labels)} examples, "
          f"{len(np.unique(labels))} classes), best first:")  # fmt: skip
    print(f"{'rank':>4}  {'layer':>5}  {'LogME':>10}")
    for i, r in enumerate(ranking, 1):
        print(f"{i:>4}  {r['layer']:>5}  {r['logme']:>10.4f}")
    print(f"top {args.top} layers: {', '.join(map(str, chosen))}")
    print(f'train.trainable: ["{pattern}"]  (or ["@logme:{args.top}"] with logme.task: {args.task})')
    return 0
