"""Vocabulary expansion: add tokens to a model's Hugging Face tokenizer and grow the embedding and LM head to match.

New rows start as the mean of the old rows of the pieces the old tokenizer splits the new string into (`mean`,
default), or as the mean of all old rows plus small seeded Gaussian noise (`mean_noise`). Old rows are copied
unchanged, so inputs made only of old tokens give the same logits over the old vocabulary as before.

Tokens come from a list file or are mined from a corpus: either its most frequent CJK characters (the ranges of
jaxfin.data.filters: ideographs, kana, hangul) that are not already single tokens of the old tokenizer
(XuanYuan-style: whole characters, not BPE pieces), or a SentencePiece BPE model is trained on the corpus, the
corpus is tokenized with it, and its most frequent pieces that are not already single tokens are kept. Tokens per
character on a report corpus are measured before and after.

SentencePiece-style tokenizers whose normalizer prepends the "▁" word marker (Llama 2, and the HF export of a
SentencePiece `.model`) would put that marker in front of every added token and of every piece of text after
one; for those the prefix moves to a `Metaspace(prepend_scheme="first")` pre-tokenizer, as transformers does for
Llama with `legacy=False`. Old text tokenizes as before except that a text starting with whitespace, or the text
right after a special token, gets no extra "▁".
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from jaxfin.data.filters import CJK_CHAR  # the project's one definition of a CJK character

SPIECE = "▁"
INITS = ("mean", "mean_noise")
REPORT_FILE = "vocab_expand.json"


def read_token_file(path: str | Path) -> list[str]:
    """One token per line (UTF-8); whitespace-only lines are ignored. The line's text is the token as written
    (only the line break is removed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tokens file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e})") from None
    return [line for line in lines if line.strip()]


def read_corpus(path: str | Path, field: str = "text") -> list[str]:
    """Texts of a corpus: a `.jsonl` file (the `field` of each record) or a plain text file (one text per line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"corpus file not found: {path}")
    texts = []
    with path.open(encoding="utf-8") as f:
        if path.suffix == ".jsonl":
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{i}: not a JSON line ({e.msg})") from None
                if not isinstance(rec, dict) or not isinstance(rec.get(field), str):
                    raise ValueError(f"{path}:{i}: no string field '{field}' (choose another with --field)")
                texts.append(rec[field])
        else:
            texts = [line.rstrip("\n") for line in f if line.strip()]
    if not texts:
        raise ValueError(f"corpus {path} has no text")
    return texts


def read_corpora(paths: str | Path | list, field: str = "text") -> list[str]:
    """The texts of one corpus or of several (a list of paths), in order."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise ValueError("no corpus given")
    return [t for p in paths for t in read_corpus(p, field)]


def tokens_per_char(tok, texts: list[str]) -> float:
    """Tokens (no special tokens) per character over all `texts`."""
    ids = tok.backend_tokenizer.encode_batch(list(texts), add_special_tokens=False)
    return sum(len(e.ids) for e in ids) / max(1, sum(len(t) for t in texts))


def old_pieces(tok, s: str) -> list[int]:
    """The ids the old tokenizer splits `s` into, without special tokens and without a lone leading "▁" that only
    a dummy-prefix normalizer put there."""
    ids = tok.encode(s, add_special_tokens=False)
    if len(ids) > 1 and not s[:1].isspace() and tok.convert_ids_to_tokens(ids[0]) == SPIECE:
        ids = ids[1:]
    return ids


def is_old_token(tok, vocab: dict, s: str) -> bool:
    """`s` is already a token: a key of the vocabulary, or the old tokenizer encodes it as one token."""
    return s in vocab or len(old_pieces(tok, s)) == 1


def move_dummy_prefix(tok) -> bool:
    """If the normalizer prepends the word marker (SentencePiece style), move that to a Metaspace pre-tokenizer
    that prepends only at the start of the text, so added tokens match anywhere. Returns whether it changed."""
    from tokenizers import Tokenizer

    backend = tok.backend_tokenizer
    spec = json.loads(backend.to_str())
    norm = spec.get("normalizer")
    if not norm:
        return False
    steps = norm["normalizers"] if norm["type"] == "Sequence" else [norm]
    kept = [s for s in steps if s["type"] != "Prepend"]
    if len(kept) == len(steps):
        return False
    spec["normalizer"] = None if not kept else kept[0] if len(kept) == 1 else {"type": "Sequence", "normalizers": kept}
    pre = spec.get("pre_tokenizer")
    meta = {"type": "Metaspace", "replacement": SPIECE, "prepend_scheme": "first", "split": False}
    if pre is None:
        spec["pre_tokenizer"] = meta
    else:
        found = [p for p in (pre["pretokenizers"] if pre["type"] == "Sequence" else [pre]) if p["type"] == "Metaspace"]
        if not found:
            raise ValueError(
                "the tokenizer prepends a word marker in its normalizer and has a pre-tokenizer without Metaspace; "
                "added tokens would not match inside words, so it is not expanded"
            )
        found[0]["prepend_scheme"] = "first"
    new = Tokenizer.from_str(json.dumps(spec))
    backend.normalizer = new.normalizer
    backend.pre_tokenizer = new.pre_tokenizer
    return True


def mine_tokens(
    texts: list[str], tok, num: int, *, log: Callable[[str], None] = print, threads: int | None = None
) -> list[tuple[str, int]]:
    """Train a SentencePiece BPE model on `texts`, tokenize `texts` with it and return its `num` most frequent
    pieces (with their counts) that are not single tokens of `tok`. The leading "▁" word marker is removed (the
    counts of "▁x" and "x" add up); pieces with a marker inside, control and byte pieces are dropped."""
    import sentencepiece as spm

    if num < 1:
        raise ValueError(f"--num must be at least 1, got {num}")
    lines = [line for t in texts for line in t.splitlines() if line.strip()]
    chars = len({c for line in lines for c in line})
    vocab_size = max(2 * num, chars + num) + 8
    threads = threads or os.cpu_count() or 1
    log(f"vocab expand: mining: training a SentencePiece BPE model ({vocab_size} pieces) on {len(lines)} lines")
    with tempfile.TemporaryDirectory() as d:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_prefix=os.path.join(d, "mined"),
            model_type="bpe",
            vocab_size=vocab_size,
            hard_vocab_limit=False,
            character_coverage=0.9995,
            byte_fallback=False,
            input_sentence_size=2_000_000,
            shuffle_input_sentence=True,
            max_sentence_length=1 << 16,
            num_threads=threads,
            minloglevel=2,
        )
        sp = spm.SentencePieceProcessor(model_file=os.path.join(d, "mined.model"))
    log("vocab expand: mining: counting pieces")
    counts: Counter = Counter()
    for ids in sp.encode(lines, num_threads=threads):
        counts.update(ids)
    merged: Counter = Counter()
    for i, n in counts.items():
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i):
            continue
        piece = sp.id_to_piece(i).removeprefix(SPIECE)
        if piece and SPIECE not in piece and piece.strip():
            merged[piece] += n
    vocab = tok.get_vocab()
    ranked = sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))
    out = []
    for piece, n in ranked:
        if not is_old_token(tok, vocab, piece):
            out.append((piece, n))
            if len(out) == num:
                break
    if len(out) < num:
        log(f"vocab expand: mining: only {len(out)} new pieces found (asked for {num})")
    return out


def mine_chars(
    texts: list[str], tok, num: int, *, log: Callable[[str], None] = print
) -> tuple[list[tuple[str, int]], int]:
    """The `num` most frequent CJK characters of `texts` (ties by code point) that are not single tokens of `tok`,
    with their counts, and how many distinct CJK characters of `texts` already are single tokens."""
    if num < 1:
        raise ValueError(f"--num must be at least 1, got {num}")
    counts = Counter(c for t in texts for c in CJK_CHAR.findall(t))
    vocab = tok.get_vocab()
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    new = [(c, n) for c, n in ranked if not is_old_token(tok, vocab, c)]
    already = len(ranked) - len(new)
    log(f"vocab expand: {len(ranked)} distinct CJK characters, {already} already single tokens")
    if len(new) < num:
        log(f"vocab expand: only {len(new)} new characters in the corpus (asked for {num})")
    return new[:num], already


_mine_chars = mine_chars  # expand_vocab's keyword argument of the same name hides it there


def _grow(
    old: np.ndarray, rows: int, new_ids: dict[int, list[int]], init: str, used: int, rng, noise_scale: float
) -> np.ndarray:
    """[V, D] -> [rows, D]: old rows copied; each new id's row from `init`; other added rows (padding) the mean
    of the old tokenizer's rows. `used`: how many leading rows belong to the old tokenizer's tokens."""
    base = old[:used].astype(np.float64)
    mean_all = base.mean(axis=0)
    out = np.empty((rows, old.shape[1]), np.float64)
    out[: old.shape[0]] = old
    out[old.shape[0] :] = mean_all
    if init == "mean_noise":
        std = base.std(axis=0)
    for r, pieces in sorted(new_ids.items()):
        if init == "mean" and pieces:
            out[r] = base[pieces].mean(axis=0)
        elif init == "mean_noise":
            out[r] = mean_all + rng.standard_normal(old.shape[1]) * std * noise_scale
        else:  # the old tokenizer gives no pieces for this string
            out[r] = mean_all
    return out.astype(old.dtype)


def expand_vocab(
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    tokens: list[str] | None = None,
    mine: str | Path | None = None,
    mine_chars: str | Path | list | None = None,
    num: int | None = None,
    init: str = "mean",
    seed: int = 0,
    noise_scale: float = 0.02,
    report_corpus: str | Path | None = None,
    field: str = "text",
    pad_to_multiple: int = 1,
    log: Callable[[str], None] = print,
) -> dict:
    """Expand the vocabulary of the model at `model_dir` (HF dir or jaxfin checkpoint) with `tokens`, `num`
    pieces mined from the corpus `mine`, or the `num` most frequent new CJK characters of `mine_chars` (a corpus
    or a list of them), and write the model and tokenizer as an HF dir at `out_dir`. Returns the report, also
    written to `out_dir/vocab_expand.json`."""
    import jax.numpy as jnp
    from transformers import AutoTokenizer

    from jaxfin.hf.tokenizer import export_tokenizer
    from jaxfin.model import Model
    from jaxfin.store import load_model, save_model

    corpus = mine if mine is not None else mine_chars
    if sum(x is not None for x in (tokens, mine, mine_chars)) != 1:
        raise ValueError("give exactly one token source: a tokens list, a corpus to mine pieces or characters from")
    if corpus is not None and not num:
        raise ValueError("mining needs the number of tokens to add (--num N)")
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got '{init}'")
    if pad_to_multiple < 1:
        raise ValueError(f"--pad-to-multiple must be at least 1, got {pad_to_multiple}")
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ValueError(f"output directory {out_dir} exists and is not empty; choose a new one")
    mine_texts = read_corpora(corpus, field) if corpus is not None else None
    report_texts = read_corpora(report_corpus, field) if report_corpus is not None else mine_texts

    log(f"vocab expand: loading {model_dir}")
    model = load_model(model_dir)
    cfg = model.config
    if not model.tokenizer_dir:
        raise FileNotFoundError(f"{model_dir}: no tokenizer files next to the model")
    with tempfile.TemporaryDirectory() as tmp:
        old_dir, new_dir = Path(tmp, "old"), Path(tmp, "new")
        old_dir.mkdir()
        export_tokenizer(model.tokenizer_dir, old_dir, cfg)
        old_tok = AutoTokenizer.from_pretrained(str(old_dir), local_files_only=True, trust_remote_code=False)
        if getattr(old_tok, "backend_tokenizer", None) is None:
            raise ValueError(f"{model_dir}: the tokenizer is not a fast (tokenizers) tokenizer")
        n_old = len(old_tok)
        if n_old > cfg.vocab_size:
            raise ValueError(f"{model_dir}: the tokenizer has {n_old} tokens but the model only {cfg.vocab_size} rows")
        vocab = old_tok.get_vocab()

        mined_counts = chars_already = None
        if corpus is not None:
            if mine is not None:
                mined = mine_tokens(mine_texts, old_tok, num, log=log)
            else:
                mined, chars_already = _mine_chars(mine_texts, old_tok, num, log=log)
            tokens, mined_counts = [t for t, _ in mined], dict(mined)
        seen, todo, duplicates, existing = set(), [], 0, []
        for t in tokens:
            if t in seen:
                duplicates += 1
                continue
            seen.add(t)
            (existing if is_old_token(old_tok, vocab, t) else todo).append(t)
        log(f"vocab expand: {len(todo)} new tokens, {len(existing)} already tokens, {duplicates} duplicates")

        new_tok = AutoTokenizer.from_pretrained(str(old_dir), local_files_only=True, trust_remote_code=False)
        rewritten = move_dummy_prefix(new_tok)
        added = new_tok.add_tokens(todo)
        if added != len(todo):
            raise ValueError(f"the tokenizer took {added} of {len(todo)} new tokens")
        new_ids = {new_tok.convert_tokens_to_ids(t): old_pieces(old_tok, t) for t in todo}
        rows = max(cfg.vocab_size, -(-len(new_tok) // pad_to_multiple) * pad_to_multiple)
        reused = sorted(r for r in new_ids if r < cfg.vocab_size)
        if reused:
            log(f"vocab expand: {len(reused)} new tokens reuse unused model rows {reused[0]}..{reused[-1]}")

        rng = np.random.default_rng(seed)
        params = dict(model.params)
        emb = np.asarray(params["embed_tokens"]["embedding"])
        grown = _grow(emb, rows, new_ids, init, n_old, rng, noise_scale)
        params["embed_tokens"] = {**params["embed_tokens"], "embedding": jnp.asarray(grown)}
        if "lm_head" in params and not cfg.tie_embeddings:
            head = np.asarray(params["lm_head"]["kernel"]).T
            grown = _grow(head, rows, new_ids, init, n_old, rng, noise_scale)
            params["lm_head"] = {**params["lm_head"], "kernel": jnp.asarray(grown.T)}
        new_cfg = dataclasses.replace(cfg, vocab_size=rows)

        new_dir.mkdir()
        new_tok.save_pretrained(str(new_dir))
        tc = new_dir / "tokenizer_config.json"
        if tc.is_file():  # transformers 5 names its own class; the generic name loads in transformers 4 and 5
            conf = json.loads(tc.read_text())
            if conf.get("tokenizer_class") == "TokenizersBackend":
                conf["tokenizer_class"] = "PreTrainedTokenizerFast"
                tc.write_text(json.dumps(conf, indent=2, ensure_ascii=False) + "\n")
        log(f"vocab expand: writing {out_dir} (vocab {cfg.vocab_size} -> {rows})")
        save_model(Model(new_cfg, params, str(new_dir), hf_extra=model.hf_extra), out_dir, format="hf")

    report = {
        "model": str(model_dir),
        "source": _source(tokens, mine, mine_chars, num),
        "init": init,
        "seed": seed,
        "noise_scale": noise_scale if init == "mean_noise" else None,
        "added": len(todo),
        "skipped": len(existing) + duplicates,
        "skipped_existing": len(existing),
        "skipped_duplicates": duplicates,
        "tokenizer_size": {"before": n_old, "after": len(new_tok)},
        "vocab_size": {"before": cfg.vocab_size, "after": rows},
        "dummy_prefix_moved": rewritten,
        "added_tokens": todo if mined_counts is None else [[t, mined_counts[t]] for t in todo],
    }
    if chars_already is not None:
        report["chars_already_tokens"] = chars_already
    if report_texts is not None:
        log("vocab expand: measuring tokens per character")
        before, after = tokens_per_char(old_tok, report_texts), tokens_per_char(new_tok, report_texts)
        report["report_corpus"] = _names(report_corpus if report_corpus is not None else corpus)
        report["tokens_per_char"] = {"before": round(before, 6), "after": round(after, 6)}
        reduction = 1 - after / before if before else 0.0
        report["tokens_per_char_reduction"] = round(reduction, 6)
        log(f"vocab expand: tokens per character {before:.4f} -> {after:.4f} ({reduction:.1%} fewer)")
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return report


def _names(paths) -> str | list[str]:
    return str(paths) if isinstance(paths, (str, Path)) else [str(p) for p in paths]


def _source(tokens, mine, mine_chars, num) -> dict:
    if mine is not None:
        return {"mined_from": str(mine), "num": num}
    if mine_chars is not None:
        return {"chars_mined_from": _names(mine_chars), "num": num}
    return {"tokens": len(tokens)}
