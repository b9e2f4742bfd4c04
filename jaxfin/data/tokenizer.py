"""Tokenizers: a SentencePiece `.model` file or a Hugging Face tokenizer folder, behind one small interface.

Both libraries tokenize a batch on several native threads (SentencePiece's thread pool, the Rust `tokenizers`
Rayon pool), so `encode_batch` is the fast path: no Python multiprocessing and no pickling of texts.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Tokenizer:
    encode: Callable[[str], list[int]]  # text -> ids, without BOS/EOS (the packer adds them by policy)
    encode_batch: Callable[[list[str]], list[list[int]]]  # the same for many texts, on `threads` threads
    decode: Callable[[list[int]], str]
    vocab_size: int
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    path: Path  # the file or folder it came from; exported next to the model
    fingerprint: str  # hash of the tokenizer files: part of every token-cache key
    hf: object = None  # the transformers tokenizer, when it is one (for its chat template)


def _fingerprint(files: list[Path]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for f in sorted(files):
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def _sentencepiece(path: Path, threads: int) -> Tokenizer:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(path))

    def ids(i):
        return i if i >= 0 else None

    return Tokenizer(
        encode=lambda t: sp.encode(t),
        encode_batch=lambda ts: sp.encode(list(ts), num_threads=threads),
        decode=lambda ids_: sp.decode(list(ids_)),
        vocab_size=sp.get_piece_size(),
        bos_id=ids(sp.bos_id()),
        eos_id=ids(sp.eos_id()),
        pad_id=ids(sp.pad_id()),
        path=path,
        fingerprint=_fingerprint([path]),
    )


HF_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "chat_template.jinja",
)


def _hf(path: Path, threads: int) -> Tokenizer:
    os.environ.setdefault("RAYON_NUM_THREADS", str(threads))  # read once, when the Rust pool starts
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    fast = getattr(tok, "backend_tokenizer", None)

    def encode_batch(texts):
        if fast is not None:
            return [e.ids for e in fast.encode_batch(list(texts), add_special_tokens=False)]
        return [tok.encode(t, add_special_tokens=False) for t in texts]

    return Tokenizer(
        encode=lambda t: tok.encode(t, add_special_tokens=False),
        encode_batch=encode_batch,
        decode=lambda ids_: tok.decode(list(ids_)),
        vocab_size=len(tok),
        bos_id=tok.bos_token_id,
        eos_id=tok.eos_token_id,
        pad_id=tok.pad_token_id,
        path=path,
        fingerprint=_fingerprint([path / f for f in HF_FILES if (path / f).is_file()]),
        hf=tok,
    )


def load_tokenizer(path: str | Path, threads: int | None = None) -> Tokenizer:
    """`path`: a `.model` SentencePiece file, a folder with HF tokenizer files, or a folder with tokenizer.model.

    `threads`: native threads for `encode_batch` (default: all cores).
    """
    path = Path(path)
    threads = threads or os.cpu_count() or 1
    if path.is_file() and path.suffix == ".model":
        return _sentencepiece(path, threads)
    if path.is_dir():
        if (path / "tokenizer.json").exists() or (path / "tokenizer_config.json").exists():
            return _hf(path, threads)
        if (path / "tokenizer.model").exists():
            return _sentencepiece(path / "tokenizer.model", threads)
    raise FileNotFoundError(
        f"no tokenizer at '{path}': expected a SentencePiece .model file or a folder with tokenizer.json "
        f"/ tokenizer_config.json / tokenizer.model"
    )
