"""`jaxfin data prepare` on real shared data: report, reuse of the cache, filters, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
from conftest import REPO, shared_data

from jaxfin.cli import main
from jaxfin.data.cache import TokenCache

TOK = REPO / "demo_data" / "tokenizer.model"


def _lines(path: Path) -> list[str]:
    return [x for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def _prepare(capsys, *args) -> dict:
    assert main(["data", "prepare", *args, "--tokenizer", str(TOK), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_report_tokens_and_reuse(tmp_path, capsys):
    data = shared_data()
    beige = data / "finance_corpus_en" / "beige_book_2014_2020.jsonl"
    fomc = data / "fomc_minutes_text" / "minutes"
    out = tmp_path / "cache"
    rep = _prepare(capsys, f"beige={beige}", f"fomc={fomc}", "--out", str(out))
    assert set(rep) == {"beige", "fomc"}
    assert rep["beige"]["read"] == len(_lines(beige))
    assert rep["fomc"]["read"] == len(list(fomc.glob("*.txt")))
    assert not rep["beige"]["reused"]
    # the cache holds exactly the kept documents, tokenized as sentencepiece does, with BOS and EOS
    cache = TokenCache(rep["beige"]["cache"])
    assert len(cache) == rep["beige"]["kept"] == rep["beige"]["sequences"]
    sp = spm.SentencePieceProcessor(model_file=str(TOK))
    first = json.loads(_lines(beige)[0])["text"]
    assert cache.doc(0).tolist() == [sp.bos_id(), *sp.encode(first), sp.eos_id()]
    assert rep["beige"]["tokens"] == cache.num_tokens == int(np.diff(np.asarray(cache.offsets)).sum())

    again = _prepare(capsys, f"beige={beige}", f"fomc={fomc}", "--out", str(out))
    assert again["beige"]["reused"] and again["beige"]["cache"] == rep["beige"]["cache"]
    assert again["beige"]["tokens"] == rep["beige"]["tokens"]
    # a copy of the same content under another name still hits the cache (the key hashes contents)
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(beige.read_bytes())
    assert _prepare(capsys, f"beige={copy}", "--out", str(out))["beige"]["reused"]
    # another filter setting is another cache
    other = _prepare(capsys, f"beige={beige}", "--out", str(out), "--filter", "min_chars=2000")
    assert not other["beige"]["reused"] and other["beige"]["cache"] != rep["beige"]["cache"]


def test_keyword_filter_separates_finance_from_fiction(tmp_path, capsys):
    data = shared_data()
    beige = data / "finance_corpus_en" / "beige_book_2014_2020.jsonl"
    shakespeare = data / "general_text_tinyshakespeare" / "tinyshakespeare.txt"
    lines = shakespeare.read_text(encoding="utf-8").split("\n\n")[:300]  # speeches as documents
    speeches = tmp_path / "speeches.jsonl"
    speeches.write_text("".join(json.dumps({"text": t}) + "\n" for t in lines if t.strip()))
    rep = _prepare(
        capsys, f"beige={beige}", f"plays={speeches}", "--out", str(tmp_path / "c"),
        "--filter", "keywords=[@finance_en]", "--filter", "min_keyword_hits=3",
    )  # fmt: skip
    assert rep["beige"]["kept"] / rep["beige"]["read"] > 0.9
    assert rep["plays"]["kept"] / rep["plays"]["read"] < 0.1
    assert sum(rep["plays"]["dropped"].values()) == rep["plays"]["read"] - rep["plays"]["kept"]


def test_bad_input_is_counted_then_refused_past_the_limit(tmp_path, capsys):
    real = _lines(shared_data() / "finance_corpus_en" / "fed_speeches_2004_2005.jsonl")
    bad = tmp_path / "speeches.jsonl"
    corrupt = {5: '{"text": "cut off', 9: '{"body": "no text field"}', 14: '{"text": ""}'}
    bad.write_text("".join((corrupt.get(i, line)) + "\n" for i, line in enumerate(real, 1)))
    rep = _prepare(capsys, f"speeches={bad}", "--out", str(tmp_path / "c"), "--max-bad-fraction", "0.05")
    r = rep["speeches"]
    assert r["read"] == len(real) and r["kept"] == len(real) - 3
    assert r["dropped"] == {"malformed_json": 1, "missing_field": 1, "empty": 1}
    locs = {reason: [e["loc"] for e in ex] for reason, ex in r["examples"].items()}
    assert locs["malformed_json"] == [f"{bad}:5"] and locs["missing_field"] == [f"{bad}:9"]
    # with a stricter limit the same file is refused: exit 2, a message naming the reasons, no traceback
    p = subprocess.run(
        [sys.executable, "-m", "jaxfin.cli", "data", "prepare", str(bad), "--tokenizer", str(TOK),
         "--out", str(tmp_path / "c2"), "--max-bad-fraction", "0.001"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "malformed_json" in p.stderr and f"{bad}:5" in p.stderr


def test_prepare_refuses_missing_source(tmp_path, capsys):
    assert main(["data", "prepare", str(tmp_path / "nope.jsonl"), "--tokenizer", str(TOK), "--out", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["parquet", "hf_disk"])
def test_other_formats_give_the_same_tokens(tmp_path, capsys, fmt):
    import datasets

    src = shared_data() / "finance_corpus_en" / "fed_speeches_2004_2005.jsonl"
    ds = datasets.Dataset.from_list([json.loads(x) for x in _lines(src)])
    path = tmp_path / ("speeches.parquet" if fmt == "parquet" else "speeches_disk")
    ds.to_parquet(str(path)) if fmt == "parquet" else ds.save_to_disk(str(path))
    a = _prepare(capsys, f"j={src}", f"o={path}", "--out", str(tmp_path / "c"))
    ca, co = TokenCache(a["j"]["cache"]), TokenCache(a["o"]["cache"])
    assert np.array_equal(np.asarray(ca.tokens), np.asarray(co.tokens))


def test_wikitext_file_is_one_general_document(tmp_path, capsys):
    """A .txt file is one document (WikiText-2 valid as a general-domain dev set): BOS + text + EOS."""
    wiki = shared_data() / "wikitext2_general" / "wikitext2_valid.txt"
    rep = _prepare(capsys, f"wiki={wiki}", "--out", str(tmp_path / "c"))["wiki"]
    sp = spm.SentencePieceProcessor(model_file=str(TOK))
    assert rep["read"] == rep["kept"] == 1
    assert rep["tokens"] == len(sp.encode(wiki.read_text(encoding="utf-8"))) + 2
