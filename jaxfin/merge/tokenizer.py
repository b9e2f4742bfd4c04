"""Vocabulary handling for merges, as mergekit does it (mergekit/tokenizer/build.py and embed.py).

The output vocabulary is the base model's (`base`; the base is `base_model`, else the first model), one model's
(a model path), or the `union`: the base tokenizer plus, in YAML order, every other model's tokens it lacks
(added tokens last). Each model's tokens are matched to the output vocabulary by token string (ids at or past the
model's config `vocab_size` are ignored). Every embedding-shaped tensor (`embed_tokens`, `lm_head`) of every
input is then permuted into the output vocabulary before merging: a model that has the token keeps its own row;
a model that lacks it gets a default row, which is
  - the row of the only model that has the token, when exactly one has it;
  - the base model's row, when the base has it;
  - the mean of the rows of the models that have it, otherwise;
  - zeros, when no model has it (rows added by `pad_to_multiple_of` too).
So a token that only one model knows comes out as that model's row for merges that return the input when all
inputs agree (linear with normalised weights, task arithmetic, TIES, SLERP, ...).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np

from jaxfin.merge.config import MergeConfigError, MergePlan

log = logging.getLogger(__name__)


@dataclasses.dataclass
class VocabPlan:
    tokenizer: object  # the output transformers tokenizer
    size: int  # output rows (len(vocab), padded to pad_to_multiple_of)
    perms: dict[str, np.ndarray]  # model ref -> int64 [size]: the model's row for each output id, -1 if absent
    base: str  # the model whose rows fill in (mergekit's base_model, or the first model)
    copy_from: Path | None  # tokenizer files copied as they are (base / model source), else save_pretrained


def _load_tokenizer(path: Path):
    import transformers

    return transformers.AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)


def _vocab_size(path: Path) -> int | None:
    f = Path(path) / "config.json"
    if f.is_file():
        return json.loads(f.read_text()).get("vocab_size")
    return None


def build_vocab(plan: MergePlan) -> VocabPlan | None:
    """The output vocabulary and each model's permutation into it; None without a tokenizer source."""
    source = plan.tokenizer_source
    if source is None:
        return None
    models = plan.referenced_models()
    base = plan.base_model or models[0]
    toks: dict[str, object] = {}
    for m in models:
        try:
            toks[m] = _load_tokenizer(plan.paths[m])
        except (OSError, ValueError) as e:
            if m == base:
                raise MergeConfigError(f"tokenizer_source {source}: cannot load the tokenizer of {m}: {e}") from None
            log.warning("cannot load the tokenizer of %s (%s); assuming the same as %s", m, e, base)
    copy_from = None
    if source == "base":
        out, copy_from = _load_tokenizer(plan.paths[base]), plan.paths[base]
    elif source == "union":
        out = _union(base, toks, plan)
    else:
        if source not in plan.paths:
            raise MergeConfigError(f"{plan.where}: tokenizer_source '{source}' is not base, union or a model folder")
        out, copy_from = _load_tokenizer(plan.paths[source]), plan.paths[source]
    vocab_out = out.get_vocab()
    size = len(vocab_out)
    if plan.pad_to_multiple_of and size % plan.pad_to_multiple_of:
        size += plan.pad_to_multiple_of - size % plan.pad_to_multiple_of
    perms = {}
    for m in models:
        vocab = (toks.get(m) or toks[base]).get_vocab()
        limit = _vocab_size(plan.paths[m]) or len(vocab)
        p = np.full(size, -1, np.int64)
        for tok, new in vocab_out.items():
            old = vocab.get(tok)
            if old is not None and old < limit:
                p[new] = old
        perms[m] = p
    return VocabPlan(out, size, perms, base, copy_from)


def _union(base: str, toks: dict[str, object], plan: MergePlan):
    """mergekit's build_union_tokenizer: the base tokenizer plus every other model's missing tokens."""
    res = _load_tokenizer(plan.paths[base])  # a fresh copy to add to
    base_vocab = res.get_vocab()
    order = [base] + [m for m in toks if m != base]
    added: dict[str, object] = {}
    new_tokens: list[str] = []
    for m in order:
        tok = toks[m]
        limit = _vocab_size(plan.paths[m]) or len(tok.get_vocab())
        specials = {info.content for info in tok.added_tokens_decoder.values()}
        for t, i in sorted(tok.get_vocab().items(), key=lambda kv: kv[1]):
            if i < limit and t not in specials and t not in base_vocab and t not in new_tokens:
                new_tokens.append(t)
        for i, info in tok.added_tokens_decoder.items():
            if i < limit and info.content not in added:
                added[info.content] = info
    res.add_tokens(new_tokens)
    for info in added.values():
        if info.content not in res.get_vocab():
            res.add_tokens([info], special_tokens=info.special)
    return res


def permute_rows(tensors: dict[str, np.ndarray], vocab: VocabPlan) -> dict[str, np.ndarray]:
    """Each model's embedding-shaped tensor [rows, H] -> [vocab.size, H] in the output vocabulary (module doc)."""
    models = list(tensors)
    if vocab.base in tensors and models[0] != vocab.base:
        models.remove(vocab.base)
        models.insert(0, vocab.base)
    widths = {m: t.shape[1] for m, t in tensors.items()}
    if len(set(widths.values())) > 1:
        raise MergeConfigError(f"embedding widths differ: {widths}")
    present = np.stack([(vocab.perms[m] >= 0) & (vocab.perms[m] < tensors[m].shape[0]) for m in models])
    count = present.sum(0)
    rows = {m: np.clip(vocab.perms[m], 0, tensors[m].shape[0] - 1) for m in models}
    h = widths[models[0]]
    default = np.zeros((vocab.size, h), np.float32)
    total = np.zeros((vocab.size, h), np.float32)
    for k, m in enumerate(models):
        total += np.where(present[k][:, None], tensors[m][rows[m]].astype(np.float32), 0.0)
    multi = count > 1
    default[multi] = total[multi] / count[multi][:, None]
    default[count == 1] = total[count == 1]  # the only donor's row
    if vocab.base in tensors:
        k = models.index(vocab.base)
        has_base = present[k] & multi
        default[has_base] = tensors[vocab.base][rows[vocab.base][has_base]].astype(np.float32)
    del total
    out = {}
    for k, m in enumerate(models):
        out[m] = np.where(present[k][:, None], tensors[m][rows[m]].astype(np.float32), default)
    return {m: out[m] for m in tensors}


def save_tokenizer(vocab: VocabPlan | None, plan: MergePlan, out_dir: Path) -> list[str]:
    """Write the output tokenizer: the built one, or (no tokenizer source) the donor's files as they are."""
    from jaxfin.hf.tokenizer import copy_tokenizer_files, has_tokenizer_files

    if plan.chat_template:
        tok = vocab.tokenizer if vocab else _load_tokenizer(plan.paths[plan.donor()])
        tok.chat_template = _chat_template(plan)
        return list(tok.save_pretrained(str(out_dir)))
    if vocab is None or vocab.copy_from is not None:
        src = vocab.copy_from if vocab else plan.paths[plan.donor()]
        if not has_tokenizer_files(src):
            log.warning("%s has no tokenizer files; the merged model has none either", src)
            return []
        return copy_tokenizer_files(src, out_dir)
    return [Path(f).name for f in vocab.tokenizer.save_pretrained(str(out_dir))]


def _chat_template(plan: MergePlan) -> str:
    t = plan.chat_template
    if t == "auto":  # the most common template among the inputs, as mergekit does
        found = []
        for m in plan.referenced_models():
            try:
                tpl = _load_tokenizer(plan.paths[m]).chat_template
            except (OSError, ValueError):
                continue
            if isinstance(tpl, dict):
                tpl = tpl.get("default")
            if tpl:
                found.append(tpl.strip())
        if not found:
            raise MergeConfigError(f"{plan.where}: chat_template auto, but no input model has a chat template")
        return Counter(found).most_common(1)[0][0]
    if "{" not in t:
        raise MergeConfigError(
            f"{plan.where}: chat_template '{t}': give 'auto' or a Jinja template (named templates are not bundled)"
        )
    return t
