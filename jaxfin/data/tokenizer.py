"""Tokenizers: a SentencePiece `.model` file or a Hugging Face tokenizer folder, behind one small interface."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Tokenizer:
    encode: Callable[[str], list[int]]  # text -> ids, without BOS/EOS (the packer adds them by policy)
    decode: Callable[[list[int]], str]
    vocab_size: int
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    path: Path  # the file or folder it came from; exported next to the model


def _sentencepiece(path: Path) -> Tokenizer:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(path))

    def ids(i):
        return i if i >= 0 else None

    return Tokenizer(
        encode=lambda t: sp.encode(t),
        decode=lambda ids_: sp.decode(list(ids_)),
        vocab_size=sp.get_piece_size(),
        bos_id=ids(sp.bos_id()),
        eos_id=ids(sp.eos_id()),
        pad_id=ids(sp.pad_id()),
        path=path,
    )


def _hf(path: Path) -> Tokenizer:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    return Tokenizer(
        encode=lambda t: tok.encode(t, add_special_tokens=False),
        decode=lambda ids_: tok.decode(list(ids_)),
        vocab_size=len(tok),
        bos_id=tok.bos_token_id,
        eos_id=tok.eos_token_id,
        pad_id=tok.pad_token_id,
        path=path,
    )


def load_tokenizer(path: str | Path) -> Tokenizer:
    """`path`: a `.model` SentencePiece file, a folder with HF tokenizer files, or a folder with tokenizer.model."""
    path = Path(path)
    if path.is_file() and path.suffix == ".model":
        return _sentencepiece(path)
    if path.is_dir():
        if (path / "tokenizer.json").exists() or (path / "tokenizer_config.json").exists():
            return _hf(path)
        if (path / "tokenizer.model").exists():
            return _sentencepiece(path / "tokenizer.model")
    raise FileNotFoundError(
        f"no tokenizer at '{path}': expected a SentencePiece .model file or a folder with tokenizer.json "
        f"/ tokenizer_config.json / tokenizer.model"
    )
