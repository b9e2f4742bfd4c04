"""The shipped demo_data/ must be exactly what the documented generator produces, and must be usable."""

import json
from pathlib import Path

import pytest

from jaxfin.data import demo_corpus as dc

DEMO_DATA = Path(__file__).resolve().parents[1] / "demo_data"


def _texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text(encoding="ascii").splitlines()]


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo_data")
    dc.write_demo_data(out, train_tokenizer=False)  # shipped defaults; tokenizer is checked separately
    return out


@pytest.mark.parametrize("name", [dc.TRAIN_FILE, dc.DEV_FILE])
def test_shipped_jsonl_is_reproducible(regenerated: Path, name: str) -> None:
    # Proves the committed data came from the documented generator with its default arguments.
    assert (regenerated / name).read_bytes() == (DEMO_DATA / name).read_bytes()


def test_generation_is_deterministic_and_seed_dependent() -> None:
    assert dc.generate_documents(20, 7) == dc.generate_documents(20, 7)
    assert dc.generate_documents(20, 7) != dc.generate_documents(20, 8)


def test_train_dev_disjoint() -> None:
    train, dev = _texts(DEMO_DATA / dc.TRAIN_FILE), _texts(DEMO_DATA / dc.DEV_FILE)
    assert len(train) == dc.DEFAULT_N_TRAIN and len(dev) == dc.DEFAULT_N_DEV
    assert len(set(train)) == len(train)
    assert not set(train) & set(dev)


def test_documents_within_spec() -> None:
    for text in _texts(DEMO_DATA / dc.DEV_FILE):
        assert dc.MIN_WORDS <= len(text.split()) <= dc.MAX_WORDS
        assert text.isascii() and "{" not in text and ".." not in text


def test_shipped_tokenizer() -> None:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(DEMO_DATA / dc.TOKENIZER_FILE))
    assert sp.vocab_size() == dc.DEFAULT_VOCAB
    assert (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2, 3)
    assert (sp.id_to_piece(0), sp.id_to_piece(2), sp.id_to_piece(3)) == ("<pad>", "<s>", "</s>")
    for text in _texts(DEMO_DATA / dc.DEV_FILE)[:10]:
        ids = sp.encode(text)
        assert sp.unk_id() not in ids
        assert sp.decode(ids) == text


def test_many_document_types() -> None:
    typed = dc.generate_typed_documents(400, 0)
    assert [t for t, _ in typed] and {t for t, _ in typed} <= set(dc.DOC_TYPES)
    assert len(dc.DOC_TYPES) >= 15
    assert len({t for t, _ in typed}) == len(dc.DOC_TYPES)  # every type shows up in a few hundred draws
    assert [text for _, text in typed] == dc.generate_documents(400, 0)
    # Phrasing varies within a type, not just the slot values: mask names/numbers in each first body sentence
    # and count the distinct sentence skeletons that remain.
    skeletons = {_skeleton(text.split("\n\n")[1].split(". ")[0]) for _, text in typed}
    assert len(skeletons) >= 2 * len(dc.DOC_TYPES)


def _skeleton(sentence: str) -> str:
    return " ".join("X" if w[0].isupper() or w[0].isdigit() or w[0] in "$-(" else w for w in sentence.split())
