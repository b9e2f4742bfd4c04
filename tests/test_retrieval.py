"""Retrieval (jaxfin/retrieval): the tokenizer (words, CJK bigrams), BM25 scores equal to the formula computed here
in numpy on the same tokens (English and Chinese corpora, the right passage first), passage ids (file:line#chunk)
and chunk offsets, the `jaxfin index build / search` round trip, and the agents' use of an index."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from jaxfin.retrieval import build_index, chunk_spans, load_index, tokenize

EN = [
    "The rating code of Velmora Bank is KT4 after the upgrade.",
    "Apple reported record quarterly revenue driven by services.",
    "The central bank raised interest rates by 25 basis points.",
    "Velmora Bank opened three branches in the north.",
    "Interest coverage of the issuer fell from 4.1x to 2.3x.",
    "Credit card delinquencies rose for the third quarter.",
]
ZH = [
    "平安银行的评级代码是AA。",
    "招商银行发布了年度报告，净利润增长。",
    "央行宣布降准零点五个百分点。",
    "信用卡逾期率连续三个季度上升。",
]


def _bm25(corpus_tokens: list[list[str]], query_tokens: list[str], k1=1.5, b=0.75) -> np.ndarray:
    """BM25 as Lucene (>= 8) scores it: idf ln(1 + (N - df + 0.5) / (df + 0.5)) times tf / (tf + k1 (1 - b + b
    dl / avgdl)), without Okapi's constant (k1 + 1) factor (ranking unchanged); each distinct query term once."""
    n = len(corpus_tokens)
    avgdl = sum(map(len, corpus_tokens)) / n
    out = np.zeros(n)
    for term in set(query_tokens):
        df = sum(term in doc for doc in corpus_tokens)
        if not df:
            continue
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        for i, doc in enumerate(corpus_tokens):
            tf = doc.count(term)
            out[i] += idf * tf / (tf + k1 * (1 - b + b * len(doc) / avgdl))
    return out


def _write_jsonl(path, texts):
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")


def test_tokenize_words_stopwords_and_cjk_bigrams():
    assert tokenize("The Rating code of Velmora-Bank is KT4.") == ["rating", "code", "velmora", "bank", "kt4"]
    assert tokenize("平安银行AA评级") == ["平安", "安银", "银行", "aa", "评级"]
    assert tokenize("一") == ["一"]  # a lone CJK character stays a unigram


@pytest.mark.parametrize(
    "corpus,query,best",
    [(EN, "What is the rating code of Velmora Bank?", 0), (EN, "interest coverage of the issuer", 4),
     (ZH, "平安银行的评级是多少？", 0), (ZH, "信用卡逾期", 3)],
)  # fmt: skip
def test_bm25_scores_match_the_formula(tmp_path, corpus, query, best):
    _write_jsonl(tmp_path / "c.jsonl", corpus)
    build_index([str(tmp_path / "c.jsonl")], tmp_path / "idx", log=lambda m: None)
    index = load_index(tmp_path / "idx")
    want = _bm25([tokenize(t) for t in corpus], tokenize(query))
    np.testing.assert_allclose(index.scores(query), want, rtol=1e-5, atol=1e-6)
    hits = index.search(query, 2)
    assert hits[0]["id"] == f"{tmp_path / 'c.jsonl'}:{best + 1}#0" and hits[0]["text"] == corpus[best]
    assert int(np.argmax(want)) == best and all(h["score"] < hits[0]["score"] for h in hits[1:])
    assert index.search("zzzz qqqq", 3) == []  # no query token in the index: nothing, not arbitrary passages


def test_chunk_spans_cover_the_text_within_the_limit():
    text = " ".join(f"word{i:03d}" for i in range(120))  # 959 characters
    spans = chunk_spans(text, 100, 20)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(b - a <= 100 for a, b in spans)
    assert all(a2 < b1 and b1 - a2 <= 20 for (_, b1), (a2, _) in zip(spans, spans[1:]))  # overlapping, by <= 20
    assert all(text[a] != " " and (a == 0 or text[a - 1] == " ") for a, _ in spans)  # starts at words
    assert chunk_spans("短文本", 100, 20) == [(0, 3)]


def test_index_cli_round_trip_and_source_ids(tmp_path, monkeypatch, capsys):
    from jaxfin.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "docs/sub").mkdir(parents=True)
    lines = [json.dumps({"body": "Velmora Bank rating code KT4."}), "", "{bad json", json.dumps({"body": "Apple."})]
    (tmp_path / "docs/facts.jsonl").write_text("\n".join(lines) + "\n")
    long_text = "\n".join(f"Paragraph {i} about liquidity ratios and capital buffers." for i in range(6))
    (tmp_path / "docs/sub/memo.md").write_text(long_text)
    (tmp_path / "docs/sub/image.bin").write_bytes(b"\x00\x01")  # unknown format inside a folder: skipped
    assert main(["index", "build", "docs", "--out", "idx", "--chunk-chars", "120", "--overlap", "0",
                 "--field", "body"]) == 0  # fmt: skip
    meta = json.loads(capsys.readouterr().out)
    assert (meta["documents"], meta["files"], meta["skipped_files"], meta["dropped_records"]) == (3, 2, 1, 1)
    passages = [json.loads(x) for x in (tmp_path / "idx/passages.jsonl").read_text().splitlines()]
    ids = [p["id"] for p in passages]
    assert ids[:2] == ["docs/facts.jsonl:1#0", "docs/facts.jsonl:4#0"]  # the JSON line of each record
    memo = [p for p in passages if p["doc"] == "docs/sub/memo.md:1"]
    assert [p["id"] for p in memo] == [f"docs/sub/memo.md:1#{k}" for k in range(len(memo))] and len(memo) > 2
    assert all(long_text[p["start"] :].startswith(p["text"]) for p in memo)  # start = the chunk's offset
    assert "".join(p["text"] + "\n" for p in memo).strip() == long_text  # no overlap: the chunks are the text
    assert meta["passages"] == len(passages)

    assert main(["index", "search", "idx", "Paragraph 3 liquidity", "-k", "2"]) == 0
    hits = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(hits) == 2 and "Paragraph 3 " in hits[0]["text"] and hits[0]["id"].startswith("docs/sub/memo.md:1#")
    assert main(["index", "search", "nowhere", "x"]) == 2
    assert "not an index folder" in capsys.readouterr().err
    assert main(["index", "build", "missing.txt", "--out", "idx2"]) == 2
    assert "missing.txt" in capsys.readouterr().err


@pytest.fixture(scope="module")
def random_model_dir(tmp_path_factory):
    import jax

    import jaxfin
    from jaxfin.config.schema import ModelConfig
    from jaxfin.model import Model, init_params
    from tests.conftest import REPO

    cfg = ModelConfig(vocab_size=1024, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4,
                      num_kv_heads=2, max_position_embeddings=512, bos_token_id=2, eos_token_id=3,
                      compute_dtype="float32")  # fmt: skip
    d = tmp_path_factory.mktemp("rag_model")
    jaxfin.save_model(Model(cfg, init_params(cfg, jax.random.key(1)), str(REPO / "demo_data/tokenizer.model")), d)
    return d


def test_agents_put_the_retrieved_passages_into_the_role_prompt(random_model_dir, tmp_path, monkeypatch):
    """Each retrieving role's answer is exactly what the model generates for the prompt written out here (system,
    numbered passages with source ids, question); a role with retrieval_k 0 gets the plain prompt."""
    import jaxfin
    from jaxfin.data.tokenizer import load_tokenizer
    from jaxfin.eval.agents import load_agents_config, run_agents
    from jaxfin.eval.generate import GenerationConfig, generate

    monkeypatch.chdir(tmp_path)
    (tmp_path / "docs").mkdir()
    _write_jsonl(tmp_path / "docs/facts.jsonl", EN)
    build_index(["docs"], "idx", log=lambda m: None)
    (tmp_path / "a.yaml").write_text(
        "model: " + str(random_model_dir) + "\nretrieval: {index: idx, k: 2}\ngeneration: {max_new_tokens: 6}\n"
        "roles:\n  - {name: rag, system: You are A.}\n  - {name: plain, system: You are B., retrieval_k: 0}\n"
        "questions: ['What is the rating code of Velmora Bank?']\noutput: out.jsonl\n"
    )
    cfg = load_agents_config(tmp_path / "a.yaml")
    (rec,) = run_agents(cfg, log=lambda m: None)
    assert [p["id"] for p in rec["passages"]["rag"]] == ["docs/facts.jsonl:1#0", "docs/facts.jsonl:4#0"]
    assert rec["passages"]["plain"] == []
    q = cfg.questions[0]
    context = f"[1] (source: docs/facts.jsonl:1#0) {EN[0]}\n[2] (source: docs/facts.jsonl:4#0) {EN[3]}"
    prompts = [f"You are A.\n\n{context}\n\nQuestion: {q}\nAnswer:", f"You are B.\n\nQuestion: {q}\nAnswer:"]
    model = jaxfin.load_model(random_model_dir)
    want = generate(model, load_tokenizer(model.tokenizer_dir), prompts, GenerationConfig(max_new_tokens=6))
    assert [rec["answers"]["rag"], rec["answers"]["plain"]] == want
    assert json.loads((tmp_path / "out.jsonl").read_text()) == rec
