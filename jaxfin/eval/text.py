"""Raw-text loss, token perplexity and bits per byte of one model on one text set.

What is counted (the lm-evaluation-harness "rolling log-likelihood" convention):

* each document is tokenized on its own as ``[BOS] + tokens(text)`` (EOS, or else nothing, stands in when the
  tokenizer has no BOS); every token after the first is a target, so the score is the log-likelihood of the whole
  text given a beginning-of-document, and no EOS is scored (it has no bytes);
* a document longer than ``seq_len`` is scored in windows of ``seq_len`` tokens that overlap by one token: the
  last token of one window is the first (context only) token of the next, so every target is scored exactly once,
  with at most ``seq_len - 1`` tokens of context;
* windows are packed into rows with segment ids (attention never crosses a document or window) and scored with
  the trainer's loss (``jaxfin.model.loss``);
* ``bytes`` = UTF-8 bytes of exactly the documents' text as read from the source (no BOS/EOS, no separators);
  ``bits_per_byte`` = total NLL in nats / ln 2 / bytes. It does not depend on the tokenizer, so models with
  different vocabularies (e.g. after vocabulary expansion) compare; ``loss`` (nats per target token) and
  ``ppl`` = exp(loss) do not.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import jax
import numpy as np

from jaxfin.config.schema import SourceConfig
from jaxfin.data import DataError
from jaxfin.data.binpack import gather_row, plan_rows
from jaxfin.data.sources import SourceReport, check_bad_fraction, read_source


def read_texts(ts, max_docs: int = 0) -> list[str]:
    """The first `max_docs` (0 = all) documents' text of a text set (TextSet or SourceConfig-like)."""
    src = SourceConfig(name=ts.name, path=ts.path, format=ts.format, kind="text", fields=dict(ts.fields),
                       records=list(getattr(ts, "records", [])))  # fmt: skip
    report = SourceReport(ts.name)
    texts = []
    for doc in read_source(src, report):
        texts.append(doc.data["text"])
        if max_docs and len(texts) >= max_docs:
            break
    if not max_docs:
        check_bad_fraction(report, 0.01)
    if not texts:
        raise DataError(f"text set '{ts.name}': no documents found in {ts.path}")
    return texts


class _Docs:
    """The two things binpack.gather_row needs from a token cache."""

    mask = None

    def __init__(self, docs: list[np.ndarray]):
        self.docs = docs

    def doc(self, d: int) -> np.ndarray:
        return self.docs[d]


def encode_documents(texts: list[str], tok) -> list[np.ndarray]:
    """Each text -> [BOS] + its tokens (EOS when there is no BOS; nothing when there is neither)."""
    first = tok.bos_id if tok.bos_id is not None else tok.eos_id
    prefix = [] if first is None else [first]
    return [np.asarray(prefix + list(ids), np.int32) for ids in tok.encode_batch(texts)]


def windows(lengths: list[int], seq_len: int):
    """(doc, start, stop) pieces of at most seq_len tokens overlapping by one: each target (token 1..n-1) once."""
    for d, n in enumerate(lengths):
        start = 0
        while start < n - 1:
            stop = min(start + seq_len, n)
            yield d, start, stop
            start = stop - 1


def packed_batches(docs: list[np.ndarray], seq_len: int, batch_size: int, pad_to: int = 0):
    """[pad_to or batch_size, seq_len] batches (tokens, segment_ids, positions, loss_mask) of batch_size packed rows
    each; padding rows (up to pad_to: a multiple of the mesh's batch axes) have no targets."""
    cache = _Docs(docs)
    plans = list(plan_rows(windows([len(d) for d in docs], seq_len), seq_len, "best_fit", window=10_000))
    rows = [gather_row(p, cache, seq_len) for p in plans]
    width = max(pad_to, batch_size)
    for i in range(0, len(rows), batch_size):
        part = rows[i : i + batch_size]
        part += [{k: np.zeros_like(v) for k, v in part[0].items()}] * (width - len(part))
        yield {k: np.stack([r[k] for r in part]) for k in part[0]}, len(rows)


_FNS: dict[str, object] = {}


def _loss_fn(cfg):
    """The jitted (params, batch) -> (nll sum, target count), one per model config (not per call: a second model
    or text set of the same architecture reuses the compiled function)."""
    key = repr(cfg)
    if key not in _FNS:
        from jaxfin.model import forward
        from jaxfin.model.loss import next_token_loss_sum

        def f(params, batch):
            logits = forward(params, cfg, batch["tokens"], batch["segment_ids"], batch["positions"])
            return next_token_loss_sum(logits, batch)

        _FNS[key] = jax.jit(f)
    return _FNS[key]


def text_metrics(
    model,
    tok,
    texts: list[str],
    *,
    seq_len: int = 1024,
    batch_size: int = 8,
    log: Callable[[str], None] | None = None,
    label: str = "",
) -> dict:
    """{loss, ppl, bits_per_byte, tokens, bytes, documents} of `model` on `texts` (see the module docstring)."""
    docs = encode_documents(texts, tok)
    top = max((int(d.max()) for d in docs if len(d)), default=0)
    if top >= model.config.vocab_size:
        raise DataError(
            f"{label or 'text'}: the tokenizer produced id {top}, but the model's vocabulary has "
            f'{model.config.vocab_size} entries; evaluate with the model\'s own tokenizer (tokenizer: "")'
        )
    seq_len = min(seq_len, max(16, -(-max(len(d) for d in docs) // 16) * 16))  # short sets: shorter rows
    from jaxfin.eval.generate import device_params
    from jaxfin.eval.sharding import on_mesh, padded_rows, params_mesh, put_rows

    f = _loss_fn(model.config)
    params = device_params(model.params)
    mesh = params_mesh(params)  # params laid out on a mesh (jaxfin.eval.sharding.shard_model): rows split over it
    nll, count = 0.0, 0.0
    t0 = last = time.time()
    for i, (batch, n_rows) in enumerate(packed_batches(docs, seq_len, batch_size, padded_rows(mesh, batch_size))):
        with on_mesh(mesh):
            s, c = f(params, {k: put_rows(mesh, v) for k, v in batch.items()})
        nll += float(s)
        count += float(c)
        done = min((i + 1) * batch_size, n_rows)
        if log and (time.time() - last > 10 or done == n_rows) and n_rows > batch_size:
            last = time.time()
            log(f"  {label}: {done}/{n_rows} rows, {count / max(last - t0, 1e-9):,.0f} tokens/s")
    expected = sum(max(len(d) - 1, 0) for d in docs)
    if int(count) != expected:  # every target exactly once: a packing bug would show here
        raise AssertionError(f"scored {int(count)} targets, expected {expected}")
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    loss = nll / max(count, 1)
    return {
        "loss": loss,
        "ppl": math.exp(loss) if loss < 700 else math.inf,
        "bits_per_byte": nll / math.log(2) / max(n_bytes, 1),
        "tokens": int(count),
        "bytes": n_bytes,
        "documents": len(texts),
        "nll_nats": nll,
    }
