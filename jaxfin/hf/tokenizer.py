"""Tokenizer files next to a model: copied as they are, or a SentencePiece `.model` converted for HF.

`tokenizer_dir` (on a Model) is an HF tokenizer dir, a dir holding `tokenizer.model`, or a `.model` file.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

from jaxfin.config.schema import ModelConfig

HF_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)
CHAT_TEMPLATES_DIR = "additional_chat_templates"
SPIECE = "▁"  # SentencePiece's escaped space


def has_tokenizer_files(path: str | Path) -> bool:
    path = Path(path)
    return any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))


def _is_hf_tokenizer(path: Path) -> bool:
    return (path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file()


def _spm_file(src: Path) -> Path | None:
    """The SentencePiece model behind `src` (a .model file, or a dir with exactly one), else None."""
    if src.is_file():
        return src if src.suffix == ".model" else None
    if (src / "tokenizer.model").is_file():
        return src / "tokenizer.model"
    found = sorted(src.glob("*.model"))
    return found[0] if len(found) == 1 else None


def _copy(f: Path, dst: Path) -> None:
    if f.resolve() == dst.resolve():
        return
    if f.is_dir():
        shutil.copytree(f, dst, dirs_exist_ok=True)
    else:
        shutil.copyfile(f, dst)


def _no_tokenizer(src: Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"no tokenizer at '{src}': expected a SentencePiece .model file or a dir with tokenizer.json / "
        f"tokenizer_config.json / tokenizer.model"
    )


def copy_tokenizer_files(src: str | Path, out_dir: str | Path) -> list[str]:
    """Copy tokenizer files as they are (a lone `.model` becomes `tokenizer.model`); returns their names."""
    src, out_dir = Path(src), Path(out_dir)
    if src.is_dir() and _is_hf_tokenizer(src):
        names = [f for f in (*HF_TOKENIZER_FILES, CHAT_TEMPLATES_DIR) if (src / f).exists()]
        for name in names:
            _copy(src / name, out_dir / name)
        return names
    spm = _spm_file(src)
    if spm is None:
        raise _no_tokenizer(src)
    _copy(spm, out_dir / "tokenizer.model")
    return ["tokenizer.model"]


def export_tokenizer(src: str | Path, out_dir: str | Path, cfg: ModelConfig) -> list[str]:
    """Write an HF tokenizer that AutoTokenizer.from_pretrained(out_dir) loads; returns the file names.

    An HF tokenizer dir is copied; a SentencePiece model is converted to a fast tokenizer (tokenizer.json)
    that encodes like SentencePiece, and kept as tokenizer.model for tools that read it directly.
    """
    src, out_dir = Path(src), Path(out_dir)
    if src.is_dir() and _is_hf_tokenizer(src):
        return copy_tokenizer_files(src, out_dir)
    spm = _spm_file(src)
    if spm is None:
        raise _no_tokenizer(src)
    spm_to_hf(spm, cfg).save_pretrained(str(out_dir))
    # transformers 5 names its own class here; the generic name loads in transformers 4 and 5 alike
    config_file = out_dir / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_file.write_text(json.dumps(config, indent=2) + "\n")
    _copy(spm, out_dir / "tokenizer.model")
    return ["tokenizer.json", "tokenizer_config.json", "tokenizer.model"]


def _load_proto(path: Path):
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString(path.read_bytes())
    return proto


def _bpe_merges(pieces: list[tuple[str, float]], mergeable: set[str]) -> list[tuple[str, str]]:
    """SentencePiece BPE merges the pair whose result scores highest: a ranked merge list for `tokenizers`."""
    vocab = {p: i for i, (p, _) in enumerate(pieces)}
    merges = []
    for piece, score in pieces:
        if piece not in mergeable:
            continue
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in mergeable and right in mergeable:
                merges.append((score, vocab[left], vocab[right], left, right))
    merges.sort(key=lambda m: (-m[0], m[1], m[2]))
    return [(m[3], m[4]) for m in merges]


def _normalizer(proto):
    """Mirror SentencePiece's normalizer: charsmap, whitespace clean-up, dummy prefix, space escaping."""
    from tokenizers import Regex, normalizers

    ns = proto.normalizer_spec
    steps = []
    if ns.precompiled_charsmap:
        steps.append(normalizers.Precompiled(ns.precompiled_charsmap))
    if ns.remove_extra_whitespaces:
        steps += [normalizers.Strip(left=True, right=True), normalizers.Replace(Regex(" {2,}"), " ")]
    if ns.add_dummy_prefix:
        steps.append(normalizers.Prepend(" "))
    if ns.escape_whitespaces:
        steps.append(normalizers.Replace(" ", SPIECE))
    return normalizers.Sequence(steps)


def _spm_tokenizer(proto, where: Path):
    """A `tokenizers.Tokenizer` equivalent to the SentencePiece model (unigram or BPE)."""
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE, Unigram

    ts = proto.trainer_spec
    if ts.treat_whitespace_as_suffix:
        raise ValueError(f"{where}: SentencePiece models with treat_whitespace_as_suffix are not supported")
    pieces = [(p.piece, p.score) for p in proto.pieces]
    if ts.model_type == ts.UNIGRAM:
        model = Unigram(pieces, unk_id=ts.unk_id, byte_fallback=ts.byte_fallback)
    elif ts.model_type == ts.BPE:
        normal = {p.piece for p in proto.pieces if p.type == p.NORMAL}
        vocab = {p: i for i, (p, _) in enumerate(pieces)}
        unk = proto.pieces[ts.unk_id].piece
        model = BPE(vocab, _bpe_merges(pieces, normal), unk_token=unk, fuse_unk=True, byte_fallback=ts.byte_fallback)
    else:
        raise ValueError(f"{where}: only unigram and BPE SentencePiece models can be converted")
    tok = Tokenizer(model)
    tok.normalizer = _normalizer(proto)
    if ts.split_by_whitespace:  # pieces never span a word boundary, so splitting there changes nothing but speed
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPIECE, prepend_scheme="never", split=True)
    steps = [decoders.Replace(SPIECE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if proto.normalizer_spec.add_dummy_prefix:
        steps.append(decoders.Strip(content=" ", left=1))
    tok.decoder = decoders.Sequence(steps)
    # control and unknown pieces are special tokens; user-defined pieces always match as they are
    added = [
        AddedToken(p.piece, normalized=False, special=p.type != p.USER_DEFINED)
        for p in proto.pieces
        if p.type in (p.CONTROL, p.UNKNOWN, p.USER_DEFINED)
    ]
    tok.add_tokens(added)
    return tok


def _special_ids(proto, cfg: ModelConfig, where: Path) -> dict[str, int]:
    """bos/eos/pad/unk ids: the tokenizer's own, checked against the model config."""
    ts = proto.trainer_spec
    ids = {"bos": ts.bos_id, "eos": ts.eos_id, "pad": ts.pad_id, "unk": ts.unk_id}
    for name in ("bos", "eos", "pad"):
        mine = getattr(cfg, f"{name}_token_id")
        if mine >= 0 and ids[name] >= 0 and mine != ids[name]:
            warnings.warn(
                f"{where}: the tokenizer's {name} id is {ids[name]} but model.{name}_token_id is {mine}; "
                f"the exported tokenizer uses the tokenizer's",
                stacklevel=3,
            )
    return {k: v for k, v in ids.items() if 0 <= v < len(proto.pieces)}


def spm_to_hf(path: str | Path, cfg: ModelConfig):
    """SentencePiece `.model` -> transformers fast tokenizer (adds BOS like Llama's when there is one)."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    path = Path(path)
    proto = _load_proto(path)
    tok = _spm_tokenizer(proto, path)
    ids = _special_ids(proto, cfg, path)
    names = {k: proto.pieces[i].piece for k, i in ids.items()}
    if "bos" in names:
        bos = names["bos"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, ids["bos"])]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        **{f"{k}_token": v for k, v in names.items()},
        add_bos_token="bos" in names,
        add_eos_token=False,
        clean_up_tokenization_spaces=False,
        model_max_length=cfg.max_position_embeddings,
    )
